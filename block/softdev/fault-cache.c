/*
 * softdev-fault's volatile write cache (fault.h): with
 * cache-model=volatile, writes, write-zeroes and discards complete once
 * they are in memory, reads see them over the child's data, and a flush
 * writes them back in order before it flushes the child.  A full cache
 * writes back its oldest writes on its own, as drives do.  A power cut
 * (softdev-fault-powercut) drops what is still cached, or lets some of it
 * through.
 *
 * A discarded range reads as zeroes while its discard is cached (a
 * discard's data is undefined, so a guest may not rely on either).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/iov.h"
#include "block/block_int.h"
#include "fault.h"

/* What a cached write costs beside its data: its place in the list */
#define FAULT_CACHE_WRITE_COST 64

static uint64_t fc_cost(SoftdevOp op, int64_t bytes)
{
    return (op == SOFTDEV_OP_WRITE ? bytes : 0) + FAULT_CACHE_WRITE_COST;
}

void fault_cache_init(FaultCache *c, SoftdevFaultCacheModel model,
                      uint64_t size)
{
    c->model = model;
    c->size = size;
    QTAILQ_INIT(&c->writes);
    qemu_co_rwlock_init(&c->lock);
}

static void fc_remove(FaultCache *c, FaultCachedWrite *w)
{
    QTAILQ_REMOVE(&c->writes, w, next);
    c->nb--;
    c->bytes -= fc_cost(w->op, w->bytes);
    g_free(w->data);
    g_free(w);
}

uint64_t fault_cache_drop(FaultCache *c)
{
    uint64_t n = c->nb;

    while (!QTAILQ_EMPTY(&c->writes)) {
        fc_remove(c, QTAILQ_FIRST(&c->writes));
    }
    return n;
}

/* The first @bytes of cached write @w, written to the child */
static int coroutine_mixed_fn GRAPH_RDLOCK
fc_write_one(BlockDriverState *bs, FaultCachedWrite *w, int64_t bytes)
{
    switch (w->op) {
    case SOFTDEV_OP_WRITE:
        return bdrv_pwrite(bs->file, w->offset, bytes, w->data, 0);
    case SOFTDEV_OP_WRITE_ZEROES:
        return bdrv_pwrite_zeroes(bs->file, w->offset, bytes, w->flags);
    case SOFTDEV_OP_DISCARD:
        return bdrv_pdiscard(bs->file, w->offset, bytes);
    default:
        g_assert_not_reached();
    }
}

/*
 * Write back the oldest cached writes, up to and including @last (NULL:
 * while the cache holds more than @limit bytes), counting them in
 * *@count.  The caller holds the lock exclusively; writes cached
 * meanwhile queue behind.
 */
static int coroutine_mixed_fn GRAPH_RDLOCK
fc_write_back(BlockDriverState *bs, FaultCache *c, FaultCachedWrite *last,
              uint64_t limit, uint64_t *count)
{
    FaultCachedWrite *w;

    while ((w = QTAILQ_FIRST(&c->writes)) && (last || c->bytes > limit)) {
        bool done = w == last;
        int ret = fc_write_one(bs, w, w->bytes);

        if (ret < 0) {
            return ret;
        }
        (*count)++;
        fc_remove(c, w);
        if (done) {
            break;
        }
    }
    return 0;
}

int coroutine_mixed_fn GRAPH_RDLOCK
fault_cache_write_back_all(BlockDriverState *bs, FaultCache *c)
{
    return fc_write_back(bs, c, QTAILQ_LAST(&c->writes), 0, &c->written_back);
}

/* Cached writes over what the child returned for read @req, in order */
static void fc_overlay(FaultCache *c, SoftdevRequest *req)
{
    int64_t end = req->offset + req->bytes;
    FaultCachedWrite *w;

    QTAILQ_FOREACH(w, &c->writes, next) {
        int64_t from = MAX(w->offset, req->offset);
        int64_t to = MIN(w->offset + w->bytes, end);
        size_t at = req->qiov_offset + (from - req->offset);

        if (from >= to) {
            continue;
        }
        if (w->data) {
            qemu_iovec_from_buf(req->qiov, at, w->data + (from - w->offset),
                                to - from);
        } else {
            qemu_iovec_memset(req->qiov, at, 0, to - from);
        }
    }
}

/* Cache write, write-zeroes or discard @req, making room first */
static int coroutine_fn GRAPH_RDLOCK
fc_co_cache(BlockDriverState *bs, FaultCache *c, SoftdevRequest *req,
            SoftdevNextFn *next)
{
    uint64_t cost = fc_cost(req->op, req->bytes);
    FaultCachedWrite *w;
    int ret = 0;

    if (cost > c->size) {
        /* Larger than the cache: after all older writes, straight down */
        qemu_co_rwlock_wrlock(&c->lock);
        ret = fc_write_back(bs, c, NULL, 0, &c->destaged);
        if (ret == 0) {
            ret = next(bs, req);
        }
        qemu_co_rwlock_unlock(&c->lock);
        return ret;
    }
    if (c->bytes + cost > c->size) {
        qemu_co_rwlock_wrlock(&c->lock);
        ret = fc_write_back(bs, c, NULL, c->size - cost, &c->destaged);
        qemu_co_rwlock_unlock(&c->lock);
        if (ret < 0) {
            return ret;
        }
    }
    w = g_new0(FaultCachedWrite, 1);
    w->op = req->op;
    w->offset = req->offset;
    w->bytes = req->bytes;
    w->flags = req->flags & BDRV_REQ_MAY_UNMAP;
    if (req->op == SOFTDEV_OP_WRITE) {
        w->data = g_try_malloc(req->bytes);
        if (!w->data) {
            g_free(w);
            return -ENOMEM;
        }
        qemu_iovec_to_buf(req->qiov, req->qiov_offset, w->data, req->bytes);
    }
    QTAILQ_INSERT_TAIL(&c->writes, w, next);
    c->nb++;
    c->bytes += cost;
    return 0;
}

int coroutine_fn GRAPH_RDLOCK
fault_cache_co_request(BlockDriverState *bs, FaultCache *c,
                       SoftdevRequest *req, SoftdevNextFn *next)
{
    int ret;

    switch (req->op) {
    case SOFTDEV_OP_READ:
        /* No write-back meanwhile: it would move data under the read */
        qemu_co_rwlock_rdlock(&c->lock);
        ret = next(bs, req);
        if (ret == 0) {
            fc_overlay(c, req);
        }
        qemu_co_rwlock_unlock(&c->lock);
        return ret;
    case SOFTDEV_OP_WRITE:
    case SOFTDEV_OP_WRITE_ZEROES:
    case SOFTDEV_OP_DISCARD:
        return fc_co_cache(bs, c, req, next);
    case SOFTDEV_OP_FLUSH:
        /* What was cached when the flush came, then the child's cache */
        qemu_co_rwlock_wrlock(&c->lock);
        ret = fault_cache_write_back_all(bs, c);
        qemu_co_rwlock_unlock(&c->lock);
        return ret < 0 ? ret : next(bs, req);
    default:
        g_assert_not_reached();
    }
}

int coroutine_fn GRAPH_RDLOCK
fault_cache_co_cut(BlockDriverState *bs, FaultCache *c,
                   SoftdevPowercutKeep keep, uint64_t seed, bool tear,
                   SoftdevPowercut *res, Error **errp)
{
    uint64_t rng = fault_seed(seed);
    uint64_t n = c->nb, prefix = 0, i;
    g_autofree bool *kept = g_new0(bool, n + 1);
    uint64_t last = UINT64_MAX;
    FaultCachedWrite *w;
    int ret = 0;

    if (keep == SOFTDEV_POWERCUT_KEEP_PREFIX) {
        prefix = fault_rand(&rng) % (n + 1);
    }
    for (i = 0; i < n; i++) {
        kept[i] = keep == SOFTDEV_POWERCUT_KEEP_PREFIX ? i < prefix :
                  keep == SOFTDEV_POWERCUT_KEEP_SUBSET ?
                  fault_rand(&rng) >> 63 : false;
        if (kept[i]) {
            last = i;
            res->kept++;
        }
    }
    res->cached = n;
    res->lost = n - res->kept;
    i = 0;
    QTAILQ_FOREACH(w, &c->writes, next) {
        int64_t bytes = w->bytes;

        if (!kept[i]) {
            i++;
            continue;
        }
        if (tear && i == last) {
            /* Some whole sectors of it, never all */
            bytes = 512 * (fault_rand(&rng) % DIV_ROUND_UP(w->bytes, 512));
            res->has_torn_bytes = true;
            res->torn_bytes = bytes;
        }
        ret = bytes ? fc_write_one(bs, w, bytes) : 0;
        if (ret < 0) {
            error_setg_errno(errp, -ret, "cannot write the kept write at "
                             "%" PRId64 " (it and the later ones are lost)",
                             w->offset);
            break;
        }
        i++;
    }
    c->powercuts++;
    c->lost += res->lost;
    fault_cache_drop(c);
    return ret;
}
