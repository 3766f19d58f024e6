/*
 * softdev-xor: the smallest transform soft device.  Every byte stored on
 * the child is the guest's byte XOR a one-byte key, so the child holds
 * (weakly) scrambled data.  A teaching example of a soft device that
 * changes content, in the core's "around" shape: it calls the layer below
 * itself, writes through the core's bounce buffer, and decodes reads in
 * place.  It is not encryption; see softdev-crypt for that.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/iov.h"
#include "qemu/module.h"
#include "qemu/option.h"
#include "softdev/softdev.h"

/* Bounce buffers are at most this large, whatever the request size. */
#define SOFTDEV_XOR_CHUNK   (1 * MiB)

typedef struct SoftdevXor {
    uint8_t key;
} SoftdevXor;

static QemuOptsList softdev_xor_opts = {
    .name = "softdev-xor",
    .head = QTAILQ_HEAD_INITIALIZER(softdev_xor_opts.head),
    .desc = {
        {
            .name = "key",
            .type = QEMU_OPT_NUMBER,
            .help = "byte (0-255) to XOR the data with",
        },
        { /* end of list */ }
    },
};

static const char *const softdev_xor_strong_opts[] = { "key", NULL };

static void softdev_xor_buf(uint8_t *buf, size_t len, uint8_t key)
{
    uint64_t k64 = 0x0101010101010101ULL * key;
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        uint64_t v;

        memcpy(&v, buf + i, 8);
        v ^= k64;
        memcpy(buf + i, &v, 8);
    }
    for (; i < len; i++) {
        buf[i] ^= key;
    }
}

/* SoftdevFillFn: the guest's data (or zeroes) XOR the key */
static int softdev_xor_fill(BlockDriverState *bs, SoftdevRequest *req,
                            int64_t done, uint8_t *buf, size_t len)
{
    SoftdevXor *x = softdev_opaque(bs);

    if (req->qiov) {
        qemu_iovec_to_buf(req->qiov, req->qiov_offset + done, buf, len);
        softdev_xor_buf(buf, len, x->key);
    } else {
        memset(buf, x->key, len);
    }
    return 0;
}

/* Decode what a READ left in the guest's buffer, in place */
static void softdev_xor_qiov(SoftdevRequest *req, uint8_t key)
{
    size_t offset = req->qiov_offset, left = req->bytes;
    int i;

    for (i = 0; i < req->qiov->niov && left; i++) {
        size_t len = req->qiov->iov[i].iov_len;

        if (offset >= len) {
            offset -= len;
            continue;
        }
        len = MIN(len - offset, left);
        softdev_xor_buf((uint8_t *)req->qiov->iov[i].iov_base + offset, len,
                        key);
        left -= len;
        offset = 0;
    }
}

static int coroutine_fn GRAPH_RDLOCK
softdev_xor_co_request(BlockDriverState *bs, SoftdevRequest *req,
                       SoftdevNextFn *next)
{
    SoftdevXor *x = softdev_opaque(bs);
    int ret;

    switch (req->op) {
    case SOFTDEV_OP_READ:
        ret = next(bs, req);
        if (ret >= 0) {
            softdev_xor_qiov(req, x->key);
        }
        return ret;
    case SOFTDEV_OP_WRITE:
        return softdev_co_write_bounced(bs, req, next, SOFTDEV_XOR_CHUNK,
                                        softdev_xor_fill);
    case SOFTDEV_OP_WRITE_ZEROES:
        /* Zeroes are stored as key bytes, unless the key is zero. */
        if (!x->key) {
            return next(bs, req);
        }
        if (req->flags & BDRV_REQ_NO_FALLBACK) {
            return -ENOTSUP;    /* there is no fast way to write them */
        }
        return softdev_co_write_bounced(bs, req, next, SOFTDEV_XOR_CHUNK,
                                        softdev_xor_fill);
    default:
        /* Flush passes (discards pass unseen: SOFTDEV_DISCARD_PASS) */
        return next(bs, req);
    }
}

static int softdev_xor_open(BlockDriverState *bs, QemuOpts *opts,
                            QDict *options, Error **errp)
{
    SoftdevXor *x = softdev_opaque(bs);
    uint64_t key = qemu_opt_get_number(opts, "key", 0);

    if (!qemu_opt_get(opts, "key")) {
        error_setg(errp, "softdev-xor needs a 'key' (0-255)");
        return -EINVAL;
    }
    if (key > UINT8_MAX) {
        error_setg(errp, "softdev-xor: key must be 0-255, not %" PRIu64, key);
        return -EINVAL;
    }
    x->key = key;
    return 0;
}

static SoftdevDriver softdev_xor = {
    .name                   = "softdev-xor",
    .content_preserving     = false,
    .state_size             = sizeof(SoftdevXor),
    .opts                   = &softdev_xor_opts,
    .strong_runtime_opts    = softdev_xor_strong_opts,
    .open                   = softdev_xor_open,
    .co_request             = softdev_xor_co_request,
    /* Zeroes are stored as key bytes; discarded data is undefined */
    .zeroes                 = SOFTDEV_ZEROES_SEEN,
    .discard                = SOFTDEV_DISCARD_PASS,
};

static void softdev_xor_init(void)
{
    softdev_register(&softdev_xor);
}

block_init(softdev_xor_init);
