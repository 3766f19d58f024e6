/*
 * softdev-xor: the smallest transform soft device.  Every byte stored on
 * the child is the guest's byte XOR a one-byte key, so the child holds
 * (weakly) scrambled data.  A teaching example of a soft device that
 * changes content: writes go through a bounce buffer, reads are decoded
 * in place.  It is not encryption; see softdev-crypt for that.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/iov.h"
#include "qemu/memalign.h"
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

/* Write @bytes at @offset: from @qiov, or key bytes (zeroes) without one */
static int coroutine_fn GRAPH_RDLOCK
softdev_xor_co_write(BlockDriverState *bs, SoftdevRequest *req)
{
    SoftdevXor *x = softdev_opaque(bs);
    size_t chunk = MIN(req->bytes, SOFTDEV_XOR_CHUNK);
    uint8_t *buf = qemu_try_blockalign(bs->file->bs, chunk);
    BdrvRequestFlags flags = req->flags & ~BDRV_REQ_MAY_UNMAP;
    int64_t done;
    int ret = 0;

    if (!buf) {
        return -ENOMEM;
    }
    if (!req->qiov) {
        memset(buf, x->key, chunk);
    }
    for (done = 0; done < req->bytes && ret >= 0; done += chunk) {
        chunk = MIN(req->bytes - done, SOFTDEV_XOR_CHUNK);
        if (req->qiov) {
            qemu_iovec_to_buf(req->qiov, req->qiov_offset + done, buf, chunk);
            softdev_xor_buf(buf, chunk, x->key);
        }
        ret = bdrv_co_pwrite(bs->file, req->offset + done, chunk, buf, flags);
    }
    qemu_vfree(buf);
    return ret < 0 ? ret : SOFTDEV_DONE;
}

static int coroutine_fn GRAPH_RDLOCK
softdev_xor_co_pre(BlockDriverState *bs, SoftdevRequest *req)
{
    SoftdevXor *x = softdev_opaque(bs);

    switch (req->op) {
    case SOFTDEV_OP_WRITE:
        return softdev_xor_co_write(bs, req);
    case SOFTDEV_OP_WRITE_ZEROES:
        /* Zeroes are stored as key bytes, unless the key is zero. */
        if (!x->key) {
            return SOFTDEV_CONTINUE;
        }
        if (req->flags & BDRV_REQ_NO_FALLBACK) {
            return -ENOTSUP;    /* there is no fast way to write them */
        }
        return softdev_xor_co_write(bs, req);
    default:
        /* Reads are decoded after the fact; discard and flush pass. */
        return SOFTDEV_CONTINUE;
    }
}

static int coroutine_fn GRAPH_RDLOCK
softdev_xor_co_post(BlockDriverState *bs, SoftdevRequest *req, int ret,
                    int64_t latency_ns)
{
    SoftdevXor *x = softdev_opaque(bs);
    size_t offset = req->qiov_offset, left = req->bytes;
    int i;

    if (req->op != SOFTDEV_OP_READ || ret < 0) {
        return ret;
    }
    /* The guest's buffer now holds stored bytes: decode them in place. */
    for (i = 0; i < req->qiov->niov && left; i++) {
        size_t len = req->qiov->iov[i].iov_len;

        if (offset >= len) {
            offset -= len;
            continue;
        }
        len = MIN(len - offset, left);
        softdev_xor_buf((uint8_t *)req->qiov->iov[i].iov_base + offset, len,
                        x->key);
        left -= len;
        offset = 0;
    }
    return ret;
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
    .co_pre                 = softdev_xor_co_pre,
    .co_post                = softdev_xor_co_post,
};

static void softdev_xor_init(void)
{
    softdev_register(&softdev_xor);
}

block_init(softdev_xor_init);
