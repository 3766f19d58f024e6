/*
 * softdev block core: bounce buffers.  Each soft-device node keeps freed
 * bounce buffers for reuse, in two size classes: a fresh large buffer is
 * mapped anew and faults in page by page, which can cost more than the
 * work done in it (in a nested VM, 3 ms per MiB: ten times softdev-crypt's
 * cipher).  The most a node keeps is 64 x 64 KiB + 16 x 1 MiB.  And the
 * write loop of every transforming soft device, through such a buffer.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/iov.h"
#include "qemu/lockable.h"
#include "qemu/memalign.h"
#include "softdev/softdev.h"
#include "bounce.h"

static const size_t softdev_bounce_size[SOFTDEV_BOUNCE_CLASSES] = {
    64 * KiB, 1 * MiB,
};
static const unsigned softdev_bounce_keep[SOFTDEV_BOUNCE_CLASSES] = {
    SOFTDEV_BOUNCE_KEEP_MAX, 16,
};

void softdev_bounce_pool_init(SoftdevBouncePool *p)
{
    memset(p, 0, sizeof(*p));
    qemu_mutex_init(&p->lock);
}

void softdev_bounce_pool_destroy(SoftdevBouncePool *p)
{
    int c;

    for (c = 0; c < SOFTDEV_BOUNCE_CLASSES; c++) {
        while (p->class[c].n) {
            qemu_vfree(p->class[c].free[--p->class[c].n]);
        }
    }
    qemu_mutex_destroy(&p->lock);
}

/* The size class of a bounce buffer of @size bytes, or -1: not kept */
static int softdev_bounce_class(size_t size)
{
    int c;

    for (c = 0; c < SOFTDEV_BOUNCE_CLASSES; c++) {
        if (size <= softdev_bounce_size[c]) {
            return c;
        }
    }
    return -1;
}

void *softdev_bounce_pool_get(SoftdevBouncePool *p, size_t size)
{
    int c = softdev_bounce_class(size);

    if (c >= 0) {
        WITH_QEMU_LOCK_GUARD(&p->lock) {
            if (p->class[c].n) {
                return p->class[c].free[--p->class[c].n];
            }
        }
        size = softdev_bounce_size[c];
    }
    /* Page alignment satisfies any node's memory alignment (O_DIRECT) */
    return qemu_try_memalign(qemu_real_host_page_size(), size);
}

void softdev_bounce_pool_put(SoftdevBouncePool *p, void *buf, size_t size)
{
    int c = softdev_bounce_class(size);

    if (buf && c >= 0) {
        WITH_QEMU_LOCK_GUARD(&p->lock) {
            if (p->class[c].n < softdev_bounce_keep[c]) {
                p->class[c].free[p->class[c].n++] = buf;
                return;
            }
        }
    }
    qemu_vfree(buf);
}

int coroutine_fn GRAPH_RDLOCK
softdev_co_write_bounced(BlockDriverState *bs, SoftdevRequest *req,
                         SoftdevNextFn *next, size_t chunk,
                         SoftdevFillFn *fill)
{
    size_t size = MIN(req->bytes, chunk), len;
    uint8_t *buf = softdev_bounce_get(bs, size);
    int64_t done;
    int ret = 0;

    if (!buf) {
        return -ENOMEM;
    }
    for (done = 0; done < req->bytes && ret >= 0; done += len) {
        QEMUIOVector qiov;
        SoftdevRequest w = {
            .op = SOFTDEV_OP_WRITE,
            .offset = req->offset + done,
            .qiov = &qiov,
            /* What is stored is not zeroes: nothing below may unmap */
            .flags = req->flags & ~BDRV_REQ_MAY_UNMAP,
        };

        len = MIN(req->bytes - done, chunk);
        ret = fill(bs, req, done, buf, len);
        if (ret >= 0) {
            w.bytes = len;
            qemu_iovec_init_buf(&qiov, buf, len);
            ret = next(bs, &w);
        }
    }
    softdev_bounce_put(bs, buf, size);
    return ret;
}
