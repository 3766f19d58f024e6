/*
 * softdev-crypt: the child holds the disk encrypted with AES-256-XTS,
 * sector by sector, byte for byte as dm-crypt's aes-xts-plain64 in plain
 * mode (no header): an image written here opens with the Linux kernel's
 * dm-crypt and the other way round.  Sector n's tweak is n plus the
 * iv-offset, with sector-size 4096 counted in 4096-byte sectors
 * (dm-crypt's iv_large_sectors).  The key comes only from a QEMU secret
 * object.  Discards are dropped and write-zeroes are written as encrypted
 * zeroes, as dm-crypt does by default.  There is no integrity: a changed
 * ciphertext reads as other plaintext, as with dm-crypt.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "crypto/cipher.h"
#include "crypto/secret_common.h"
#include "qemu/iov.h"
#include "qemu/module.h"
#include "qemu/option.h"
#include "qemu/thread.h"
#include "softdev/softdev.h"
#include "crypt-xts.h"

/* QAPI schema of the options (scripts/softdev-drivers.py adds it)
 *
 * ##
 * # @SoftdevCryptImpl:
 * #
 * # The AES-XTS implementation of a softdev-crypt node.
 * #
 * # @auto: the fastest this CPU runs
 * #
 * # @vaes-avx2: softdev's own, with VAES on 256-bit vectors
 * #
 * # @aesni: softdev's own, with AES-NI
 * #
 * # @qcrypto: QEMU's crypto layer (gnutls or nettle)
 * #
 * # Since: 10.0 (softdev)
 * ##
 * { 'enum': 'SoftdevCryptImpl',
 *   'data': [ 'auto', 'vaes-avx2', 'aesni', 'qcrypto' ] }
 *
 * ##
 * # @SoftdevCryptOptions:
 * #
 * # Options of the softdev-crypt soft device: its child holds the disk
 * # encrypted with AES-256-XTS as dm-crypt's aes-xts-plain64 does in
 * # plain mode, with no header (dm-crypt table: "crypt aes-xts-plain64
 * # KEY IV-OFFSET DEV 0", plus "2 sector_size:4096 iv_large_sectors" for
 * # 4096-byte sectors).
 * #
 * # @key-secret: ID of a secret object holding the 64-byte XTS key
 * #     (data key, then tweak key), raw or base64 as the secret's
 * #     format says
 * #
 * # @sector-size: bytes in an encryption sector, 512 or 4096 (default:
 * #     512).  Requests are aligned to it, and the child's size must
 * #     be a multiple of it.  With 4096, sector numbers (the tweaks)
 * #     count 4096-byte sectors, as dm-crypt's iv_large_sectors.
 * #
 * # @iv-offset: added to the sector number before it becomes the tweak,
 * #     in 512-byte sectors as dm-crypt's iv_offset; a multiple of
 * #     sector-size / 512 (default: 0)
 * #
 * # @x-impl: the implementation of AES-XTS (default: auto)
 * #
 * # Features:
 * #
 * # @unstable: Member @x-impl is for tests and benchmarks.
 * #
 * # Since: 10.0 (softdev)
 * ##
 * { 'struct': 'SoftdevCryptOptions',
 *   'data': { 'key-secret': 'str',
 *             '*sector-size': 'uint32',
 *             '*iv-offset': 'uint64',
 *             '*x-impl': { 'type': 'SoftdevCryptImpl',
 *                          'features': [ 'unstable' ] } } }
 */

/* Writes are encrypted into bounce buffers of at most this size. */
#define SOFTDEV_CRYPT_CHUNK     (1 * MiB)
#define SOFTDEV_CRYPT_MAX_SECTOR 4096

typedef struct SoftdevCrypt {
    uint32_t sector_size;
    uint64_t iv_offset;             /* in 512-byte sectors */
    SoftdevCryptImpl impl;          /* never SOFTDEV_CRYPT_IMPL_AUTO */
    SoftdevXts xts;                 /* softdev's own implementations */
    QCryptoCipher *cipher;          /* SOFTDEV_CRYPT_IMPL_QCRYPTO */
    QemuMutex cipher_lock;          /* @cipher keeps the IV: one user */
} SoftdevCrypt;

static QemuOptsList softdev_crypt_opts = {
    .name = "softdev-crypt",
    .head = QTAILQ_HEAD_INITIALIZER(softdev_crypt_opts.head),
    .desc = {
        {
            .name = "key-secret",
            .type = QEMU_OPT_STRING,
            .help = "ID of the secret object holding the 64-byte key",
        },
        {
            .name = "sector-size",
            .type = QEMU_OPT_NUMBER,
            .help = "encryption sector: 512 (default) or 4096 bytes",
        },
        {
            .name = "iv-offset",
            .type = QEMU_OPT_NUMBER,
            .help = "added to sector numbers, in 512-byte sectors",
        },
        {
            .name = "x-impl",
            .type = QEMU_OPT_STRING,
            .help = "auto (default), vaes-avx2, aesni or qcrypto",
        },
        { /* end of list */ }
    },
};

static const char *const softdev_crypt_strong_opts[] = {
    "key-secret", "sector-size", "iv-offset", NULL
};

/* The tweak of the sector at byte @offset of the disk */
static uint64_t softdev_crypt_tweak(SoftdevCrypt *c, uint64_t offset)
{
    return offset / c->sector_size + c->iv_offset / (c->sector_size / 512);
}

/*
 * En- or decrypt @len bytes (whole sectors) from @in to @out, the first
 * sector with tweak @tweak.  0 or -EIO.
 */
static int softdev_crypt_buf(SoftdevCrypt *c, bool enc, uint64_t tweak,
                             const uint8_t *in, uint8_t *out, size_t len)
{
    size_t done;
    int ret = 0;

    if (c->impl != SOFTDEV_CRYPT_IMPL_QCRYPTO) {
        if (enc) {
            softdev_xts_encrypt(&c->xts, tweak, c->sector_size, in, out, len);
        } else {
            softdev_xts_decrypt(&c->xts, tweak, c->sector_size, in, out, len);
        }
        return 0;
    }
    qemu_mutex_lock(&c->cipher_lock);
    for (done = 0; done < len && !ret; done += c->sector_size, tweak++) {
        uint8_t iv[16] = { 0 };

        stq_le_p(iv, tweak);        /* plain64 */
        ret = qcrypto_cipher_setiv(c->cipher, iv, sizeof(iv), NULL);
        if (!ret) {
            ret = (enc ? qcrypto_cipher_encrypt : qcrypto_cipher_decrypt)
                  (c->cipher, in + done, out + done, c->sector_size, NULL);
        }
    }
    qemu_mutex_unlock(&c->cipher_lock);
    return ret < 0 ? -EIO : 0;
}

/*
 * En- or decrypt the @bytes (whole sectors) of @qiov from @qiov_offset,
 * tweaks from @tweak: into @out if it is given, else in place.  Runs of
 * sectors within one element go at once; a sector that spans elements
 * goes through a sector of its own.
 */
static int softdev_crypt_qiov(SoftdevCrypt *c, bool enc, uint64_t tweak,
                              QEMUIOVector *qiov, size_t qiov_offset,
                              size_t bytes, uint8_t *out)
{
    size_t ss = c->sector_size, pos = qiov_offset, end = qiov_offset + bytes;
    size_t base = 0;                /* qiov offset of element i */
    int i = 0, ret = 0;

    while (pos < end && !ret) {
        size_t n;

        while (base + qiov->iov[i].iov_len <= pos) {
            base += qiov->iov[i++].iov_len;
        }
        n = MIN(base + qiov->iov[i].iov_len, end) - pos;
        n -= n % ss;
        if (n) {
            uint8_t *p = (uint8_t *)qiov->iov[i].iov_base + (pos - base);

            ret = softdev_crypt_buf(c, enc, tweak, p, out ?: p, n);
        } else {
            uint8_t sector[SOFTDEV_CRYPT_MAX_SECTOR];

            n = ss;
            qemu_iovec_to_buf(qiov, pos, sector, n);
            ret = softdev_crypt_buf(c, enc, tweak, sector, out ?: sector, n);
            if (!out) {
                qemu_iovec_from_buf(qiov, pos, sector, n);
            }
        }
        pos += n;
        tweak += n / ss;
        out = out ? out + n : NULL;
    }
    return ret;
}

/* SoftdevFillFn: the guest's data, encrypted */
static int softdev_crypt_fill(BlockDriverState *bs, SoftdevRequest *req,
                              int64_t done, uint8_t *buf, size_t len)
{
    SoftdevCrypt *c = softdev_opaque(bs);

    return softdev_crypt_qiov(c, true,
                              softdev_crypt_tweak(c, req->offset + done),
                              req->qiov, req->qiov_offset + done, len, buf);
}

static int coroutine_fn GRAPH_RDLOCK
softdev_crypt_co_request(BlockDriverState *bs, SoftdevRequest *req,
                         SoftdevNextFn *next)
{
    SoftdevCrypt *c = softdev_opaque(bs);
    int ret;

    switch (req->op) {
    case SOFTDEV_OP_READ:
        /* Ciphertext into the caller's buffer, decrypted there */
        ret = next(bs, req);
        if (ret >= 0) {
            ret = softdev_crypt_qiov(c, false,
                                     softdev_crypt_tweak(c, req->offset),
                                     req->qiov, req->qiov_offset, req->bytes,
                                     NULL);
        }
        return ret;
    case SOFTDEV_OP_WRITE:
        return softdev_co_write_bounced(bs, req, next, SOFTDEV_CRYPT_CHUNK,
                                        softdev_crypt_fill);
    default:
        /*
         * Flush passes.  Write-zeroes come as WRITEs of zeroes and
         * discards are dropped (the core's defaults).
         */
        return next(bs, req);
    }
}

static void softdev_crypt_refresh_limits(BlockDriverState *bs, Error **errp)
{
    SoftdevCrypt *c = softdev_opaque(bs);

    bs->bl.request_alignment = MAX(bs->bl.request_alignment, c->sector_size);
}

/* Key from the secret @id into c->xts or c->cipher, as c->impl says */
static int softdev_crypt_set_key(SoftdevCrypt *c, const char *id,
                                 SoftdevCryptImpl asked, Error **errp)
{
    uint8_t *key = NULL;
    size_t len = 0;
    int ret = -EINVAL;

    if (qcrypto_secret_lookup(id, &key, &len, errp) < 0) {
        return -EINVAL;
    }
    if (len != SOFTDEV_XTS_KEY_SIZE) {
        error_setg(errp, "softdev-crypt: secret '%s' holds %zu bytes: the "
                   "key must be %d bytes for aes-xts-256 (a data key and "
                   "a tweak key of 32 bytes each)", id, len,
                   SOFTDEV_XTS_KEY_SIZE);
        goto out;
    }
    if (asked == SOFTDEV_CRYPT_IMPL_AUTO) {
        SoftdevXtsImpl best = softdev_xts_best();

        asked = best == SOFTDEV_XTS_VAES ? SOFTDEV_CRYPT_IMPL_VAES_AVX2 :
                best == SOFTDEV_XTS_AESNI ? SOFTDEV_CRYPT_IMPL_AESNI :
                SOFTDEV_CRYPT_IMPL_QCRYPTO;
    }
    c->impl = asked;
    if (asked == SOFTDEV_CRYPT_IMPL_QCRYPTO) {
        c->cipher = qcrypto_cipher_new(QCRYPTO_CIPHER_ALGO_AES_256,
                                       QCRYPTO_CIPHER_MODE_XTS, key, len,
                                       errp);
        ret = c->cipher ? 0 : -ENOTSUP;
    } else if (!softdev_xts_setkey(&c->xts, key,
                                   asked == SOFTDEV_CRYPT_IMPL_AESNI ?
                                   SOFTDEV_XTS_AESNI : SOFTDEV_XTS_VAES)) {
        error_setg(errp, "softdev-crypt: this CPU cannot run x-impl=%s",
                   SoftdevCryptImpl_str(asked));
        ret = -ENOTSUP;
    } else {
        ret = 0;
    }
out:
    memset(key, 0, len);
    g_free(key);
    return ret;
}

static int softdev_crypt_open(BlockDriverState *bs, QemuOpts *opts,
                              QDict *options, Error **errp)
{
    SoftdevCrypt *c = softdev_opaque(bs);
    const char *secret = qemu_opt_get(opts, "key-secret");
    const char *impl = qemu_opt_get(opts, "x-impl");
    uint64_t ss = qemu_opt_get_number(opts, "sector-size", 512);
    int64_t size;
    int asked, ret;

    if (!secret) {
        error_setg(errp, "softdev-crypt needs 'key-secret', the ID of a "
                   "secret object holding the key");
        return -EINVAL;
    }
    if (ss != 512 && ss != 4096) {
        error_setg(errp, "softdev-crypt: sector-size must be 512 or 4096, "
                   "not %" PRIu64, ss);
        return -EINVAL;
    }
    c->sector_size = ss;
    c->iv_offset = qemu_opt_get_number(opts, "iv-offset", 0);
    if (c->iv_offset % (ss / 512)) {
        error_setg(errp, "softdev-crypt: iv-offset (%" PRIu64 ") must be a "
                   "multiple of %" PRIu64 " with sector-size %" PRIu64
                   " (it counts 512-byte sectors)", c->iv_offset, ss / 512,
                   ss);
        return -EINVAL;
    }
    asked = impl ? qapi_enum_parse(&SoftdevCryptImpl_lookup, impl, -1, NULL)
                 : SOFTDEV_CRYPT_IMPL_AUTO;
    if (asked < 0) {
        error_setg(errp, "softdev-crypt: x-impl must be auto, vaes-avx2, "
                   "aesni or qcrypto, not '%s'", impl);
        return -EINVAL;
    }

    bdrv_graph_rdlock_main_loop();
    size = bdrv_getlength(bs->file->bs);
    bdrv_graph_rdunlock_main_loop();
    if (size < 0) {
        error_setg_errno(errp, -size, "softdev-crypt: cannot get the size "
                         "of '%s'", bs->file->bs->filename);
        return size;
    }
    if (size % ss) {
        error_setg(errp, "softdev-crypt: the size of '%s' (%" PRId64
                   " bytes) is not a multiple of sector-size %" PRIu64,
                   bs->file->bs->filename, size, ss);
        return -EINVAL;
    }

    ret = softdev_crypt_set_key(c, secret, asked, errp);
    if (ret < 0) {
        softdev_xts_wipe(&c->xts);
        return ret;
    }
    qemu_mutex_init(&c->cipher_lock);
    return 0;
}

static void softdev_crypt_close(BlockDriverState *bs)
{
    SoftdevCrypt *c = softdev_opaque(bs);

    softdev_xts_wipe(&c->xts);
    qcrypto_cipher_free(c->cipher);
    qemu_mutex_destroy(&c->cipher_lock);
}

static void softdev_crypt_query(BlockDriverState *bs, SoftdevInfo *info)
{
    SoftdevCrypt *c = softdev_opaque(bs);
    SoftdevCryptInfo *ci = &info->u.softdev_crypt;

    ci->impl = c->impl;
    ci->sector_size = c->sector_size;
    ci->iv_offset = c->iv_offset;
}

static SoftdevDriver softdev_crypt = {
    .name                   = "softdev-crypt",
    .content_preserving     = false,
    .state_size             = sizeof(SoftdevCrypt),
    .opts                   = &softdev_crypt_opts,
    .strong_runtime_opts    = softdev_crypt_strong_opts,
    .open                   = softdev_crypt_open,
    .close                  = softdev_crypt_close,
    .refresh_limits         = softdev_crypt_refresh_limits,
    .query                  = softdev_crypt_query,
    .co_request             = softdev_crypt_co_request,
    /* zeroes are encrypted zeroes; discards are dropped (as dm-crypt) */
    .zeroes                 = SOFTDEV_ZEROES_AS_WRITE,
    .discard                = SOFTDEV_DISCARD_DROP,
};

static void softdev_crypt_init(void)
{
    softdev_register(&softdev_crypt);
}

block_init(softdev_crypt_init);
