/*
 * softdev block core: turns a SoftdevDriver description into a QEMU block
 * driver.  Every request passes through softdev_co_request(), which calls
 * the soft device's hooks (co_pre/co_post around a forward to the child,
 * or co_request with the layer below as "next"), and keeps per-node
 * statistics (counts, bytes, errors, a latency histogram).  Alerts become
 * SOFTDEV_ALERT events; blockdev-reopen reaches the soft device's
 * mutable options.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-events-softdev.h"
#include "qobject/qdict.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/option.h"
#include "qemu/queue.h"
#include "qemu/stats64.h"
#include "qemu/timer.h"
#include "softdev/softdev.h"
#include "bounce.h"
#include "trace/trace-block_softdev.h"

/*
 * Latency histogram: values below 8 ns have a bucket each; above, each
 * power of two is split into 8 linear buckets, so a bucket is at most
 * 12.5% wide.  2^41 ns (36 minutes) and more share the last bucket.
 */
#define SOFTDEV_HIST_SUB_BITS   3
#define SOFTDEV_HIST_SUB        (1 << SOFTDEV_HIST_SUB_BITS)
#define SOFTDEV_HIST_MAX_EXP    40
#define SOFTDEV_HIST_BUCKETS \
    ((SOFTDEV_HIST_MAX_EXP - SOFTDEV_HIST_SUB_BITS + 2) * SOFTDEV_HIST_SUB)

typedef struct SoftdevOpCounters {
    Stat64 ops;
    Stat64 bytes;
    Stat64 errors;
    Stat64 total_ns;
    Stat64 max_ns;
    Stat64 hist[SOFTDEV_HIST_BUCKETS];
} SoftdevOpCounters;

/* An alert raised outside the main loop, until the main loop sends it */
typedef struct SoftdevAlert {
    SoftdevSeverity severity;
    int64_t offset, length;
    char *path;
    char *msg;
    QSIMPLEQ_ENTRY(SoftdevAlert) next;
} SoftdevAlert;

/* bs->opaque of every soft-device node */
typedef struct SoftdevState {
    SoftdevDriver *sd;
    void *opaque;               /* sd->state_size bytes */
    bool content_preserving;
    bool write_below;           /* softdev_hold_write_below() */
    Stat64 alerts;
    SoftdevOpCounters stats[SOFTDEV_OP__MAX];

    /* Alerts from other threads, sent by alert_bh in the main loop */
    QemuMutex alert_lock;
    QSIMPLEQ_HEAD(, SoftdevAlert) alert_queue;
    QEMUBH *alert_bh;

    SoftdevBouncePool bounce;   /* softdev_bounce_get() */
} SoftdevState;

static void softdev_alert_bh(void *opaque);

static unsigned softdev_hist_bucket(uint64_t ns)
{
    int exp;

    if (ns < SOFTDEV_HIST_SUB) {
        return ns;
    }
    exp = 63 - clz64(ns);
    if (exp > SOFTDEV_HIST_MAX_EXP) {
        return SOFTDEV_HIST_BUCKETS - 1;
    }
    return (exp - SOFTDEV_HIST_SUB_BITS + 1) * SOFTDEV_HIST_SUB +
           ((ns >> (exp - SOFTDEV_HIST_SUB_BITS)) & (SOFTDEV_HIST_SUB - 1));
}

/* Smallest value that falls into bucket @b */
static uint64_t softdev_hist_lower(unsigned b)
{
    unsigned exp;

    if (b < SOFTDEV_HIST_SUB) {
        return b;
    }
    exp = b / SOFTDEV_HIST_SUB + SOFTDEV_HIST_SUB_BITS - 1;
    return (1ULL << exp) +
           ((uint64_t)(b % SOFTDEV_HIST_SUB) << (exp - SOFTDEV_HIST_SUB_BITS));
}

/*
 * Value at percentile @pct of the histogram: the upper bound of the
 * bucket holding it, capped by the largest value seen.
 */
static uint64_t softdev_hist_percentile(const uint64_t *hist, uint64_t count,
                                        uint64_t max, unsigned pct)
{
    uint64_t rank, seen = 0;
    unsigned b;

    if (!count) {
        return 0;
    }
    rank = (count * pct + 99) / 100;
    for (b = 0; b < SOFTDEV_HIST_BUCKETS; b++) {
        seen += hist[b];
        if (seen >= rank) {
            uint64_t upper = b + 1 < SOFTDEV_HIST_BUCKETS ?
                             softdev_hist_lower(b + 1) - 1 : max;
            return MIN(upper, max);
        }
    }
    return max;
}

bool softdev_is_content_preserving(BlockDriverState *bs)
{
    SoftdevState *s = bs->opaque;

    return s->content_preserving;
}

void *softdev_opaque(BlockDriverState *bs)
{
    SoftdevState *s = bs->opaque;

    return s->opaque;
}

static void softdev_account(SoftdevState *s, const SoftdevRequest *req,
                            int ret, uint64_t latency_ns)
{
    SoftdevOpCounters *c = &s->stats[req->op];

    stat64_add(&c->ops, 1);
    if (req->op != SOFTDEV_OP_FLUSH) {
        stat64_add(&c->bytes, req->bytes);
    }
    /*
     * -ENOTSUP of a WRITE_ZEROES is no error: the block layer writes the
     * zeroes instead (counted as WRITEs), or its caller does.
     */
    if (ret < 0 && !(req->op == SOFTDEV_OP_WRITE_ZEROES && ret == -ENOTSUP)) {
        stat64_add(&c->errors, 1);
    }
    stat64_add(&c->total_ns, latency_ns);
    stat64_max(&c->max_ns, latency_ns);
    stat64_add(&c->hist[softdev_hist_bucket(latency_ns)], 1);
}

int coroutine_fn GRAPH_RDLOCK
softdev_co_forward(BlockDriverState *bs, SoftdevRequest *req)
{
    trace_softdev_forward(bs, SoftdevOp_str(req->op), req->offset,
                          req->bytes);
    if (!bs->file) {
        return req->op == SOFTDEV_OP_FLUSH ? 0 : -ENOTSUP;
    }
    switch (req->op) {
    case SOFTDEV_OP_READ:
        return bdrv_co_preadv_part(bs->file, req->offset, req->bytes,
                                   req->qiov, req->qiov_offset, req->flags);
    case SOFTDEV_OP_WRITE:
        return bdrv_co_pwritev_part(bs->file, req->offset, req->bytes,
                                    req->qiov, req->qiov_offset, req->flags);
    case SOFTDEV_OP_WRITE_ZEROES:
        return bdrv_co_pwrite_zeroes(bs->file, req->offset, req->bytes,
                                     req->flags);
    case SOFTDEV_OP_DISCARD:
        return bdrv_co_pdiscard(bs->file, req->offset, req->bytes);
    case SOFTDEV_OP_FLUSH:
        return bdrv_co_flush(bs->file->bs);
    default:
        g_assert_not_reached();
    }
}

void *softdev_bounce_get(BlockDriverState *bs, size_t size)
{
    SoftdevState *s = bs->opaque;

    return softdev_bounce_pool_get(&s->bounce, size);
}

void softdev_bounce_put(BlockDriverState *bs, void *buf, size_t size)
{
    SoftdevState *s = bs->opaque;

    softdev_bounce_pool_put(&s->bounce, buf, size);
}

/* The one path every request of every soft device takes. */
static int coroutine_fn GRAPH_RDLOCK
softdev_co_request(BlockDriverState *bs, SoftdevRequest *req)
{
    SoftdevState *s = bs->opaque;
    SoftdevDriver *sd = s->sd;
    int64_t latency;
    int ret = SOFTDEV_FORWARD;
    bool unseen = req->op == SOFTDEV_OP_DISCARD &&
                  sd->discard != SOFTDEV_DISCARD_SEEN;

    req->start_ns = get_clock();
    trace_softdev_request(bs, SoftdevOp_str(req->op), req->offset,
                          req->bytes);
    if (unseen) {
        /* Not for the hooks: dropped, or passed below */
        trace_softdev_discard_unseen(bs, req->offset, req->bytes,
                                     sd->discard == SOFTDEV_DISCARD_PASS);
        if (sd->discard == SOFTDEV_DISCARD_PASS) {
            ret = softdev_co_forward(bs, req);
        } else {
            ret = 0;
        }
    } else if (sd->co_request) {
        ret = sd->co_request(bs, req, softdev_co_forward);
    } else {
        if (sd->co_pre) {
            ret = sd->co_pre(bs, req);
        }
        if (ret == SOFTDEV_FORWARD) {
            ret = softdev_co_forward(bs, req);
        } else if (ret > 0) {
            /* A device bug: say so rather than report success */
            softdev_alert(bs, SOFTDEV_SEVERITY_CRITICAL, req->offset,
                          req->bytes, NULL, "co_pre returned %d", ret);
            ret = -EIO;
        }
    }
    latency = get_clock() - req->start_ns;
    if (sd->co_post && !unseen) {
        ret = sd->co_post(bs, req, ret, latency);
    }
    softdev_account(s, req, ret, latency);
    trace_softdev_complete(bs, SoftdevOp_str(req->op), req->offset,
                           req->bytes, ret, latency);
    return ret;
}

static int coroutine_fn GRAPH_RDLOCK
softdev_co_preadv_part(BlockDriverState *bs, int64_t offset, int64_t bytes,
                       QEMUIOVector *qiov, size_t qiov_offset,
                       BdrvRequestFlags flags)
{
    SoftdevRequest req = {
        .op = SOFTDEV_OP_READ, .offset = offset, .bytes = bytes,
        .qiov = qiov, .qiov_offset = qiov_offset, .flags = flags,
    };
    return softdev_co_request(bs, &req);
}

static int coroutine_fn GRAPH_RDLOCK
softdev_co_pwritev_part(BlockDriverState *bs, int64_t offset, int64_t bytes,
                        QEMUIOVector *qiov, size_t qiov_offset,
                        BdrvRequestFlags flags)
{
    SoftdevRequest req = {
        .op = SOFTDEV_OP_WRITE, .offset = offset, .bytes = bytes,
        .qiov = qiov, .qiov_offset = qiov_offset, .flags = flags,
    };
    return softdev_co_request(bs, &req);
}

static int coroutine_fn GRAPH_RDLOCK
softdev_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                         BdrvRequestFlags flags)
{
    SoftdevRequest req = {
        .op = SOFTDEV_OP_WRITE_ZEROES, .offset = offset, .bytes = bytes,
        .flags = flags,
    };
    return softdev_co_request(bs, &req);
}

static int coroutine_fn GRAPH_RDLOCK
softdev_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    SoftdevRequest req = {
        .op = SOFTDEV_OP_DISCARD, .offset = offset, .bytes = bytes,
    };
    return softdev_co_request(bs, &req);
}

static int coroutine_fn GRAPH_RDLOCK softdev_co_flush(BlockDriverState *bs)
{
    SoftdevRequest req = { .op = SOFTDEV_OP_FLUSH };

    return softdev_co_request(bs, &req);
}

/*
 * A content-preserving soft device passes its users' permissions through,
 * like a filter, even if the block layer does not see it as one
 * (softdev-tap): it can then sit above a node that others write to.
 */
static void softdev_child_perm(BlockDriverState *bs, BdrvChild *c,
                               BdrvChildRole role,
                               BlockReopenQueue *reopen_queue,
                               uint64_t perm, uint64_t shared,
                               uint64_t *nperm, uint64_t *nshared)
{
    SoftdevState *s = bs->opaque;

    bool below = role & BDRV_CHILD_PRIMARY;

    if (s->content_preserving && below) {
        /* the node below; not a journal or other metadata child */
        role = BDRV_CHILD_FILTERED | BDRV_CHILD_PRIMARY;
    }
    bdrv_default_perms(bs, c, role, reopen_queue, perm, shared, nperm,
                       nshared);
    if ((s->write_below ||
         (s->opaque && s->sd->holds_writes && s->sd->holds_writes(bs))) &&
        below) {
        uint64_t p, sh;

        /* WRITE while the node is (or after the reopen will be) writable */
        bdrv_default_perms(bs, c, BDRV_CHILD_METADATA, reopen_queue, 0,
                           BLK_PERM_ALL, &p, &sh);
        *nperm |= p & BLK_PERM_WRITE;
    }
}

int softdev_hold_write_below(BlockDriverState *bs, bool hold, Error **errp)
{
    SoftdevState *s = bs->opaque;
    int ret;

    GLOBAL_STATE_CODE();
    if (s->write_below == hold || !bs->file) {
        return 0;
    }
    s->write_below = hold;
    ret = bdrv_child_refresh_perms(bs, bs->file, errp);
    if (ret < 0) {
        s->write_below = !hold;
    }
    return ret;
}

static void GRAPH_RDLOCK
softdev_refresh_limits(BlockDriverState *bs, Error **errp)
{
    SoftdevState *s = bs->opaque;

    if (s->sd->refresh_limits && s->opaque) {
        s->sd->refresh_limits(bs, errp);
    }
}

static int64_t coroutine_fn GRAPH_RDLOCK
softdev_co_getlength(BlockDriverState *bs)
{
    SoftdevState *s = bs->opaque;

    if (s->sd->getlength && s->opaque) {
        return s->sd->getlength(bs);
    }
    return bs->file ? bdrv_co_getlength(bs->file->bs) : -ENOMEDIUM;
}

static int coroutine_fn GRAPH_RDLOCK
softdev_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                    PreallocMode prealloc, BdrvRequestFlags flags,
                    Error **errp)
{
    SoftdevState *s = bs->opaque;

    if (!bs->file || s->sd->getlength) {
        error_setg(errp, "%s: cannot resize a soft device of its own size",
                   s->sd->name);
        return -ENOTSUP;
    }
    return bdrv_co_truncate(bs->file, offset, exact, prealloc, flags, errp);
}

static void softdev_detach_aio_context(BlockDriverState *bs)
{
    SoftdevState *s = bs->opaque;

    if (s->sd->detach_aio_context && s->opaque) {
        s->sd->detach_aio_context(bs);
    }
}

static void softdev_attach_aio_context(BlockDriverState *bs, AioContext *ctx)
{
    SoftdevState *s = bs->opaque;

    if (s->sd->attach_aio_context && s->opaque) {
        s->sd->attach_aio_context(bs, ctx);
    }
}

/* Whether @options name a node below (the "file" child) */
static bool softdev_has_lower_opt(QDict *options)
{
    const QDictEntry *e;

    for (e = qdict_first(options); e; e = qdict_next(options, e)) {
        if (!strcmp(e->key, "file") || g_str_has_prefix(e->key, "file.")) {
            return true;
        }
    }
    return false;
}

static int softdev_open(BlockDriverState *bs, QDict *options, int flags,
                        Error **errp)
{
    SoftdevState *s = bs->opaque;
    SoftdevDriver *sd = container_of(bs->drv, SoftdevDriver, bdrv);
    QemuOpts *opts = NULL;
    int ret;

    GLOBAL_STATE_CODE();

    s->sd = sd;
    qemu_mutex_init(&s->alert_lock);
    QSIMPLEQ_INIT(&s->alert_queue);
    s->alert_bh = aio_bh_new(qemu_get_aio_context(), softdev_alert_bh, bs);
    softdev_bounce_pool_init(&s->bounce);
    if (sd->opts) {
        opts = qemu_opts_create(sd->opts, NULL, 0, &error_abort);
        if (!qemu_opts_absorb_qdict(opts, options, errp)) {
            ret = -EINVAL;
            goto out;
        }
    }
    /* Known before the child is attached: it decides our permissions. */
    s->content_preserving = sd->content_preserving_opt ?
        qemu_opt_get_bool(opts, sd->content_preserving_opt,
                          sd->content_preserving) :
        sd->content_preserving;

    if (sd->lower_optional && !softdev_has_lower_opt(options)) {
        if (s->content_preserving) {
            error_setg(errp, "%s: a content-preserving soft device needs a "
                       "node below ('file')", sd->name);
            ret = -EINVAL;
            goto out;
        }
        /* A device of its own: it handles FUA itself. */
        bs->supported_write_flags = BDRV_REQ_FUA;
        bs->supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP;
    } else {
        ret = bdrv_open_file_child(NULL, options, "file", bs, errp);
        if (ret < 0) {
            goto out;
        }
        bdrv_graph_rdlock_main_loop();
        bs->supported_write_flags = BDRV_REQ_WRITE_UNCHANGED |
            (BDRV_REQ_FUA & bs->file->bs->supported_write_flags);
        bs->supported_zero_flags = BDRV_REQ_WRITE_UNCHANGED |
            ((BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK) &
             bs->file->bs->supported_zero_flags);
        bdrv_graph_rdunlock_main_loop();
    }

    if (sd->zeroes == SOFTDEV_ZEROES_AS_WRITE) {
        bs->supported_zero_flags = 0;   /* the block layer writes them */
    }
    s->opaque = g_malloc0(MAX(sd->state_size, 1));
    if (sd->open) {
        ret = sd->open(bs, opts, options, errp);
        if (ret < 0) {
            g_free(s->opaque);
            s->opaque = NULL;
            goto out;
        }
    }
    trace_softdev_open(bs, sd->name, bs->node_name);
    ret = 0;
out:
    qemu_opts_del(opts);
    if (ret < 0) {
        softdev_alert_bh(bs);
        qemu_bh_delete(s->alert_bh);
        qemu_mutex_destroy(&s->alert_lock);
        softdev_bounce_pool_destroy(&s->bounce);
    }
    return ret;
}

/* What a reopen of a soft-device node carries from prepare to commit */
typedef struct SoftdevReopen {
    void *state;                /* the soft device's */
} SoftdevReopen;

/*
 * blockdev-reopen: the soft device sees the new values of its mutable
 * options; every other option is left in rs->options, where the block
 * layer checks that it did not change.
 */
static int softdev_reopen_prepare(BDRVReopenState *rs,
                                  BlockReopenQueue *queue, Error **errp)
{
    SoftdevState *s = rs->bs->opaque;
    SoftdevDriver *sd = s->sd;
    g_autoptr(QDict) mutable = qdict_new();
    SoftdevReopen *r;
    QemuOpts *opts;
    const char *const *name;
    void *state = NULL;
    int ret;

    GLOBAL_STATE_CODE();

    /* An image's log takes writes or not from when it was opened */
    if (sd->owns_layout &&
        !(rs->flags & BDRV_O_RDWR) != bdrv_is_read_only(rs->bs)) {
        error_setg(errp, "%s: node '%s' cannot switch between read-only "
                   "and read-write; open it again instead", sd->name,
                   bdrv_get_node_name(rs->bs));
        return -ENOTSUP;
    }
    if (!sd->reopen_prepare) {
        return 0;
    }
    for (name = sd->mutable_opts; name && *name; name++) {
        QObject *v = qdict_get(rs->options, *name);

        if (v) {
            qdict_put_obj(mutable, *name, qobject_ref(v));
            qdict_del(rs->options, *name);
        }
    }
    opts = qemu_opts_create(sd->opts, NULL, 0, &error_abort);
    if (!qemu_opts_absorb_qdict(opts, mutable, errp)) {
        qemu_opts_del(opts);
        return -EINVAL;
    }
    ret = sd->reopen_prepare(rs->bs, opts, &state, errp);
    qemu_opts_del(opts);
    if (ret < 0) {
        return ret;
    }
    r = g_new0(SoftdevReopen, 1);
    r->state = state;
    rs->opaque = r;
    return 0;
}

static void softdev_reopen_commit(BDRVReopenState *rs)
{
    SoftdevState *s = rs->bs->opaque;
    SoftdevReopen *r = rs->opaque;

    if (r) {
        s->sd->reopen_commit(rs->bs, r->state);
        g_free(r);
        rs->opaque = NULL;
    }
    trace_softdev_reopen(rs->bs, s->sd->name);
}

static void softdev_reopen_abort(BDRVReopenState *rs)
{
    SoftdevState *s = rs->bs->opaque;
    SoftdevReopen *r = rs->opaque;

    if (r) {
        if (s->sd->reopen_abort) {
            s->sd->reopen_abort(rs->bs, r->state);
        }
        g_free(r);
        rs->opaque = NULL;
    }
}

/* The soft device made into @drv, or NULL if @drv is not one. */
static SoftdevDriver *softdev_of(BlockDriver *drv)
{
    if (!drv || drv->bdrv_open != softdev_open) {
        return NULL;
    }
    return container_of(drv, SoftdevDriver, bdrv);
}

SoftdevDriver *softdev_driver(BlockDriverState *bs)
{
    return bs ? softdev_of(bs->drv) : NULL;
}

SoftdevDriver *softdev_find_driver(const char *name)
{
    return softdev_of(bdrv_find_format(name));
}

static void softdev_close(BlockDriverState *bs)
{
    SoftdevState *s = bs->opaque;

    trace_softdev_close(bs, s->sd->name);
    if (s->sd->close) {
        s->sd->close(bs);
    }
    g_free(s->opaque);
    s->opaque = NULL;
    softdev_alert_bh(bs);       /* what is still pending */
    qemu_bh_delete(s->alert_bh);
    qemu_mutex_destroy(&s->alert_lock);
    softdev_bounce_pool_destroy(&s->bounce);
}

void softdev_register(SoftdevDriver *sd)
{
    BlockDriver *drv = &sd->bdrv;

    /* A soft device needs its entry in QAPI's BlockdevDriver. */
    assert(g_str_has_prefix(sd->name, "softdev-"));
    /* One shape of request handling; reopen hooks come together */
    assert(!sd->co_request || (!sd->co_pre && !sd->co_post));
    assert(!sd->reopen_prepare || (sd->reopen_commit && sd->mutable_opts));
    assert(qapi_enum_parse(&BlockdevDriver_lookup, sd->name, -1, NULL) >= 0);
    *drv = (BlockDriver) {
        .format_name            = sd->name,
        .instance_size          = sizeof(SoftdevState),
        /* Only a content-preserving soft device is a filter. */
        .is_filter              = sd->content_preserving,

        .bdrv_open              = softdev_open,
        .bdrv_close             = softdev_close,
        .bdrv_child_perm        = softdev_child_perm,
        .bdrv_refresh_limits    = softdev_refresh_limits,
        .bdrv_reopen_prepare    = softdev_reopen_prepare,
        .bdrv_reopen_commit     = softdev_reopen_commit,
        .bdrv_reopen_abort      = softdev_reopen_abort,

        .bdrv_co_getlength      = softdev_co_getlength,
        .bdrv_co_truncate       = softdev_co_truncate,
        .bdrv_detach_aio_context = softdev_detach_aio_context,
        .bdrv_attach_aio_context = softdev_attach_aio_context,

        .bdrv_co_preadv_part    = softdev_co_preadv_part,
        .bdrv_co_pwritev_part   = softdev_co_pwritev_part,
        .bdrv_co_pwrite_zeroes  = softdev_co_pwrite_zeroes,
        .bdrv_co_pdiscard       = softdev_co_pdiscard,
        .bdrv_co_flush          = softdev_co_flush,

        .bdrv_co_check          = sd->co_check,

        .strong_runtime_opts    = sd->strong_runtime_opts,
        .mutable_opts           = sd->mutable_opts,
    };
    if (sd->zeroes == SOFTDEV_ZEROES_AS_WRITE) {
        /* The block layer's fallback: zeroed buffers, as WRITEs */
        drv->bdrv_co_pwrite_zeroes = NULL;
    }
    if (sd->owns_layout) {
        softdev_format_init(sd, drv);
    }
    bdrv_register(drv);
}

/* Whether the program has QMP, where SOFTDEV_ALERT events go */
static bool softdev_qmp;

void softdev_set_qmp(void)
{
    softdev_qmp = true;
}

static void softdev_alert_send(BlockDriverState *bs, SoftdevAlert *a)
{
    SoftdevState *s = bs->opaque;

    trace_softdev_alert(bs, SoftdevSeverity_str(a->severity), a->msg);
    /*
     * Without QMP (qemu-io, qemu-img, qemu-nbd) warnings and worse go to
     * stderr: "Input/output error" alone does not say why a request
     * failed.
     */
    if (!softdev_qmp && a->severity != SOFTDEV_SEVERITY_INFO) {
        warn_report("%s node '%s': %s", s->sd->name, bs->node_name, a->msg);
    }
    qapi_event_send_softdev_alert(bs->node_name, s->sd->name, a->severity,
                                  a->msg, a->offset >= 0, a->offset,
                                  a->length >= 0, a->length, a->path);
    g_free(a->path);
    g_free(a->msg);
    g_free(a);
}

/* Send the alerts other threads raised; in the main loop */
static void softdev_alert_bh(void *opaque)
{
    BlockDriverState *bs = opaque;
    SoftdevState *s = bs->opaque;
    QSIMPLEQ_HEAD(, SoftdevAlert) list = QSIMPLEQ_HEAD_INITIALIZER(list);
    SoftdevAlert *a;

    qemu_mutex_lock(&s->alert_lock);
    QSIMPLEQ_CONCAT(&list, &s->alert_queue);
    qemu_mutex_unlock(&s->alert_lock);
    while ((a = QSIMPLEQ_FIRST(&list))) {
        QSIMPLEQ_REMOVE_HEAD(&list, next);
        softdev_alert_send(bs, a);
    }
}

void softdev_alert(BlockDriverState *bs, SoftdevSeverity severity,
                   int64_t offset, int64_t length, const char *path,
                   const char *fmt, ...)
{
    SoftdevState *s = bs->opaque;
    SoftdevAlert *a = g_new0(SoftdevAlert, 1);
    va_list ap;

    va_start(ap, fmt);
    a->msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    a->severity = severity;
    a->offset = offset;
    a->length = length;
    a->path = g_strdup(path);

    stat64_add(&s->alerts, 1);
    if (bql_locked()) {
        softdev_alert_send(bs, a);
        return;
    }
    /* QMP events go out from the main loop, in the order raised */
    qemu_mutex_lock(&s->alert_lock);
    QSIMPLEQ_INSERT_TAIL(&s->alert_queue, a, next);
    qemu_mutex_unlock(&s->alert_lock);
    qemu_bh_schedule(s->alert_bh);
}

static SoftdevQueryHook *softdev_query_hook;

SoftdevInfo *softdev_query_node(BlockDriverState *bs)
{
    SoftdevState *s = bs->opaque;
    SoftdevInfo *info = g_new0(SoftdevInfo, 1);
    SoftdevOpStatsList **tail = &info->stats;
    BlockDriverState *child;
    int op;

    GLOBAL_STATE_CODE();
    GRAPH_RDLOCK_GUARD_MAINLOOP();

    info->node_name = g_strdup(bs->node_name);
    info->driver = qapi_enum_parse(&BlockdevDriver_lookup, s->sd->name, -1,
                                   &error_abort);
    child = bs->file ? bs->file->bs : NULL;
    if (child) {
        info->child = g_strdup(child->node_name);
    }
    info->content_preserving = s->content_preserving;
    info->alerts = stat64_get(&s->alerts);

    for (op = 0; op < SOFTDEV_OP__MAX; op++) {
        SoftdevOpCounters *c = &s->stats[op];
        SoftdevOpStats *st = g_new0(SoftdevOpStats, 1);
        g_autofree uint64_t *hist = g_new(uint64_t, SOFTDEV_HIST_BUCKETS);
        uint64_t count = 0;
        unsigned b;

        /* Snapshot the histogram so the percentiles agree with its sum. */
        for (b = 0; b < SOFTDEV_HIST_BUCKETS; b++) {
            hist[b] = stat64_get(&c->hist[b]);
            count += hist[b];
        }
        st->op = op;
        st->ops = stat64_get(&c->ops);
        st->bytes = stat64_get(&c->bytes);
        st->errors = stat64_get(&c->errors);
        st->total_ns = stat64_get(&c->total_ns);
        st->max_ns = stat64_get(&c->max_ns);
        st->p50_ns = softdev_hist_percentile(hist, count, st->max_ns, 50);
        st->p99_ns = softdev_hist_percentile(hist, count, st->max_ns, 99);
        QAPI_LIST_APPEND(tail, st);
    }

    if (s->sd->query && s->opaque) {
        s->sd->query(bs, info);
    }
    if (softdev_query_hook) {
        softdev_query_hook(bs, info);
    }
    return info;
}

void softdev_set_query_hook(SoftdevQueryHook *hook)
{
    softdev_query_hook = hook;
}
