/*
 * softdev-timetravel-view: a read-only node showing the disk below a
 * softdev-timetravel node as it was at a mark or a time
 * (docs/specs/softdev-timetravel.rst).  Made with blockdev-add, it can
 * back another guest device or be exported over NBD.
 *
 * A view keeps an extent map of where its point differs from the disk
 * as it is: runs of journal payload, or of zeroes.  Reads look it up in
 * O(log n); the rest is read from the disk below, holding the range
 * against writes.  When a write saves a block's content before its
 * first change, the view learns that the block is now in the journal.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/module.h"
#include "qemu/option.h"
#include "timetravel.h"

/* QAPI schema of the options (scripts/softdev-drivers.py adds it)
 *
 * ##
 * # @SoftdevTimetravelViewOptions:
 * #
 * # Options of the softdev-timetravel-view soft device: the disk of a
 * # softdev-timetravel node as it was at a point of its history.  The
 * # node must be read-only.  Give one of @mark and @time.
 * #
 * # @timetravel: node name of the softdev-timetravel node
 * #
 * # @mark: the mark to show
 * #
 * # @time: the time to show, in nanoseconds since the Unix epoch, or,
 * #     if negative, that many nanoseconds before the view is opened
 * #
 * # Since: 10.0 (softdev)
 * ##
 * { 'struct': 'SoftdevTimetravelViewOptions',
 *   'data': { 'timetravel': 'str', '*mark': 'str', '*time': 'int' } }
 */

typedef struct SoftdevTimetravelView {
    SoftdevTimetravel *tt;
    TtView view;
} SoftdevTimetravelView;

static QemuOptsList softdev_timetravel_view_opts = {
    .name = "softdev-timetravel-view",
    .head = QTAILQ_HEAD_INITIALIZER(softdev_timetravel_view_opts.head),
    .desc = {
        {
            .name = "timetravel",
            .type = QEMU_OPT_STRING,
            .help = "node name of the softdev-timetravel node",
        },
        {
            .name = "mark",
            .type = QEMU_OPT_STRING,
            .help = "the mark to show",
        },
        {
            .name = "time",
            .type = QEMU_OPT_STRING,
            .help = "the time to show (ns since the epoch; negative: "
                    "before now)",
        },
        { /* end of list */ }
    },
};

void tt_views_add_base(SoftdevTimetravel *s, uint64_t start, uint64_t len,
                       TtExtKind kind, uint64_t loc)
{
    TtView *v;

    QLIST_FOREACH(v, &s->views, next) {
        if (v->state == TT_VIEW_VALID) {
            tt_extents_fill(&v->map, start, len, kind, loc);
        }
    }
}

void tt_views_rebuild(SoftdevTimetravel *s)
{
    TtView *v;

    QLIST_FOREACH(v, &s->views, next) {
        if (v->state != TT_VIEW_VALID) {
            continue;
        }
        tt_extents_destroy(&v->map);
        if (v->seq < s->h.horizon_seq) {
            v->state = TT_VIEW_EXPIRED;
            tt_extents_init(&v->map);
            softdev_alert(v->bs, SOFTDEV_SEVERITY_WARNING, -1, -1, NULL,
                          "the journal of '%s' filled up and its history "
                          "up to this view's point was dropped: the view's "
                          "reads fail", s->bs->node_name);
            continue;
        }
        tt_index_map(&s->idx, v->seq, &v->map);
    }
}

uint64_t tt_views_oldest(SoftdevTimetravel *s)
{
    uint64_t oldest = UINT64_MAX;
    TtView *v;

    QLIST_FOREACH(v, &s->views, next) {
        if (v->state == TT_VIEW_VALID) {
            oldest = MIN(oldest, v->seq);
        }
    }
    return oldest;
}

int tt_view_attach(SoftdevTimetravel *s, TtView *v, Error **errp)
{
    tt_index_map(&s->idx, v->seq, &v->map);
    v->state = TT_VIEW_VALID;
    QLIST_INSERT_HEAD(&s->views, v, next);
    bdrv_ref(s->bs);
    return 0;
}

void tt_view_detach(SoftdevTimetravel *s, TtView *v)
{
    QLIST_REMOVE(v, next);
    tt_extents_destroy(&v->map);
    bdrv_unref(s->bs);
}

static int softdev_timetravel_view_open(BlockDriverState *bs, QemuOpts *opts,
                                        QDict *options, Error **errp)
{
    SoftdevTimetravelView *vs = softdev_opaque(bs);
    const char *name = qemu_opt_get(opts, "timetravel");
    const char *mark = qemu_opt_get(opts, "mark");
    const char *time_str = qemu_opt_get(opts, "time");
    int64_t time = 0;
    uint64_t seq, at;
    SoftdevTimetravel *s;

    if (bs->file) {
        error_setg(errp, "softdev-timetravel-view takes no 'file': it reads "
                   "through its 'timetravel' node");
        return -EINVAL;
    }
    if (!bdrv_is_read_only(bs)) {
        error_setg(errp, "a softdev-timetravel-view node is read-only: add "
                   "\"read-only\": true");
        return -EINVAL;
    }
    if (!name) {
        error_setg(errp, "softdev-timetravel-view needs 'timetravel', the "
                   "node name of a softdev-timetravel node");
        return -EINVAL;
    }
    if (time_str && qemu_strtoi64(time_str, NULL, 10, &time) < 0) {
        error_setg(errp, "'time' must be an integer (nanoseconds)");
        return -EINVAL;
    }
    s = tt_find(name, errp);
    if (!s) {
        return -ENOENT;
    }
    if (bdrv_get_aio_context(s->bs) != bdrv_get_aio_context(bs)) {
        error_setg(errp, "node '%s' runs in an I/O thread; a view needs to "
                   "run in the same one", name);
        return -EINVAL;
    }
    if (tt_resolve_point(s, mark, !!time_str, time, &seq, &at, errp) < 0) {
        return -EINVAL;
    }
    vs->tt = s;
    vs->view = (TtView) {
        .bs = bs, .mark = g_strdup(mark), .seq = seq, .time = at,
    };
    return tt_view_attach(s, &vs->view, errp);
}

static void softdev_timetravel_view_close(BlockDriverState *bs)
{
    SoftdevTimetravelView *vs = softdev_opaque(bs);

    tt_view_detach(vs->tt, &vs->view);
    g_free(vs->view.mark);
}

static int64_t softdev_timetravel_view_getlength(BlockDriverState *bs)
{
    SoftdevTimetravelView *vs = softdev_opaque(bs);

    return vs->tt->disk_size;
}

static void GRAPH_RDLOCK
softdev_timetravel_view_refresh_limits(BlockDriverState *bs, Error **errp)
{
    bs->bl.request_alignment = TT_SECTOR;
}

static int coroutine_fn GRAPH_RDLOCK
tt_view_co_read(SoftdevTimetravelView *vs, SoftdevRequest *req)
{
    SoftdevTimetravel *s = vs->tt;
    TtView *v = &vs->view;
    uint64_t at = req->offset, end = req->offset + req->bytes;
    size_t qoff = req->qiov_offset;
    TtRange range;
    int ret = 0;

    qemu_co_rwlock_rdlock(&s->lock);
    if (v->state != TT_VIEW_VALID) {
        qemu_co_rwlock_unlock(&s->lock);
        return -ESTALE;
    }
    /* The disk's part must not change while it is read */
    tt_co_range_lock(s, &range, QEMU_ALIGN_DOWN(at, TT_BLOCK),
                     MIN(ROUND_UP(end, TT_BLOCK), s->disk_size));
    while (at < end && ret >= 0) {
        TtExtent e;

        tt_extents_lookup(&v->map, at, end - at, &e);
        switch (e.kind) {
        case TT_EXT_ZERO:
            qemu_iovec_memset(req->qiov, qoff, 0, e.len);
            break;
        case TT_EXT_JOURNAL:
            ret = tt_co_wait_written(s, e.loc + e.len);
            if (ret >= 0) {
                ret = tt_co_read_payload(s, e.loc, e.len, req->qiov, qoff);
            }
            break;
        default:
            ret = bdrv_co_preadv_part(s->bs->file, at, e.len, req->qiov,
                                      qoff, 0);
            break;
        }
        at += e.len;
        qoff += e.len;
    }
    tt_co_range_unlock(s, &range);
    qemu_co_rwlock_unlock(&s->lock);
    return ret < 0 ? ret : 0;
}

static int coroutine_fn GRAPH_RDLOCK
softdev_timetravel_view_co_request(BlockDriverState *bs, SoftdevRequest *req,
                                   SoftdevNextFn *next)
{
    SoftdevTimetravelView *vs = softdev_opaque(bs);

    switch (req->op) {
    case SOFTDEV_OP_READ:
        return tt_view_co_read(vs, req);
    case SOFTDEV_OP_FLUSH:
        return 0;
    default:
        return -EROFS;
    }
}

static void softdev_timetravel_view_query(BlockDriverState *bs,
                                          SoftdevInfo *info)
{
    SoftdevTimetravelView *vs = softdev_opaque(bs);
    SoftdevTimetravelViewInfo *t = &info->u.softdev_timetravel_view;

    t->timetravel = g_strdup(vs->tt->bs->node_name);
    t->mark = g_strdup(vs->view.mark);
    t->seq = vs->view.seq;
    t->time = vs->view.time;
    t->expired = vs->view.state == TT_VIEW_EXPIRED;
    t->extents = vs->view.map.count;
}

static SoftdevDriver softdev_timetravel_view = {
    .name                   = "softdev-timetravel-view",
    .state_size             = sizeof(SoftdevTimetravelView),
    .lower_optional         = true,
    .opts                   = &softdev_timetravel_view_opts,
    .open                   = softdev_timetravel_view_open,
    .close                  = softdev_timetravel_view_close,
    .refresh_limits         = softdev_timetravel_view_refresh_limits,
    .getlength              = softdev_timetravel_view_getlength,
    .co_request             = softdev_timetravel_view_co_request,
    .query                  = softdev_timetravel_view_query,
};

static void softdev_timetravel_view_init(void)
{
    softdev_register(&softdev_timetravel_view);
}

block_init(softdev_timetravel_view_init);
