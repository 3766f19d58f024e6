/*
 * softdev-timetravel: continuous data protection
 * (docs/specs/softdev-timetravel.rst).  Every write, write-zeroes and
 * discard is recorded, with a sequence number and the time, in a journal
 * on a second child ("journal"), so that the disk can be seen as it was
 * at any past instant (softdev-timetravel-view nodes) and put back there
 * (softdev-timetravel-revert).  Before the first change of a block since
 * the oldest point, the block's content is saved as a base copy.  Reads
 * of the present go straight to the disk below.
 *
 * Content preserving: softdev-insert puts it above a running guest's
 * disk and softdev-remove takes it out again.
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
 * # @SoftdevTimetravelOptions:
 * #
 * # Options of the softdev-timetravel soft device (continuous data
 * # protection).
 * #
 * # @journal: the node that holds the journal.  An empty node (all
 * #     zeroes) becomes a new journal; a node holding anything else is
 * #     refused.
 * #
 * # @max-age: drop history older than this many seconds (default: 0,
 * #     keep it while there is room)
 * #
 * # @max-size: keep at most this many bytes of journal in use; older
 * #     history is dropped to stay below (default: three quarters of
 * #     the journal, the rest being room for compaction; at least 32
 * #     MiB)
 * #
 * # Since: 10.0 (softdev)
 * ##
 * { 'struct': 'SoftdevTimetravelOptions',
 *   'data': { 'journal': 'BlockdevRef', '*max-age': 'uint64',
 *             '*max-size': 'size' } }
 */

/*
 * The largest request: its base copy fits in one record, and what it
 * needs in the journal (about three times itself) far below max-size
 */
#define TT_MAX_REQUEST          (4 * MiB)
#define TT_RETENTION_MS         1000

static QemuOptsList softdev_timetravel_opts = {
    .name = "softdev-timetravel",
    .head = QTAILQ_HEAD_INITIALIZER(softdev_timetravel_opts.head),
    .desc = {
        {
            .name = "max-age",
            .type = QEMU_OPT_NUMBER,
            .help = "drop history older than this many seconds (0: keep)",
        },
        {
            .name = "max-size",
            .type = QEMU_OPT_SIZE,
            .help = "bytes of journal in use at most (default: all)",
        },
        { /* end of list */ }
    },
};

static const char *const tt_mutable_opts[] = { "max-age", "max-size", NULL };

typedef struct TtRetention {
    uint64_t max_age_ns, max_size;
} TtRetention;

static int tt_parse_retention(SoftdevTimetravel *s, QemuOpts *opts,
                              TtRetention *r, Error **errp)
{
    uint64_t age = qemu_opt_get_number(opts, "max-age", 0);

    if (age > UINT64_MAX / NANOSECONDS_PER_SECOND) {
        error_setg(errp, "max-age is too large");
        return -EINVAL;
    }
    r->max_age_ns = age * NANOSECONDS_PER_SECOND;
    r->max_size = qemu_opt_get_size(opts, "max-size",
                                    QEMU_ALIGN_DOWN(s->h.ring_size / 4 * 3,
                                                    TT_SECTOR));
    if (r->max_size > s->h.ring_size) {
        error_setg(errp, "max-size %" PRIu64 " is more than the journal's "
                   "%" PRIu64 " bytes", r->max_size, s->h.ring_size);
        return -EINVAL;
    }
    if (r->max_size < s->h.ring_size / 16 || r->max_size < TT_MIN_MAX_SIZE) {
        error_setg(errp, "max-size must be at least a sixteenth of the "
                   "journal and 32 MiB");
        return -EINVAL;
    }
    return 0;
}

void coroutine_fn tt_co_range_lock(SoftdevTimetravel *s, TtRange *r,
                                   uint64_t start, uint64_t end)
{
    TtRange *it;

    r->start = start;
    r->end = end;
retry:
    QLIST_FOREACH(it, &s->ranges, next) {
        if (it->start < end && start < it->end) {
            qemu_co_queue_wait(&s->range_wait, NULL);
            goto retry;
        }
    }
    QLIST_INSERT_HEAD(&s->ranges, r, next);
}

void coroutine_fn tt_co_range_unlock(SoftdevTimetravel *s, TtRange *r)
{
    QLIST_REMOVE(r, next);
    qemu_co_queue_restart_all(&s->range_wait);
}

/*
 * Save the content at the horizon of the blocks of [@start, @end) that
 * have none in the journal yet (zeroes as records without payload), and
 * tell the views.  *@rec_end: the end of the last record appended.
 */
static int coroutine_fn GRAPH_RDLOCK
tt_co_save_bases(SoftdevTimetravel *s, uint64_t start, uint64_t end,
                 uint64_t *rec_end)
{
    uint64_t blk = start / TT_BLOCK, end_blk = DIV_ROUND_UP(end, TT_BLOCK);

    while ((blk = find_next_zero_bit(s->based, end_blk, blk)) < end_blk) {
        uint64_t run = find_next_bit(s->based, end_blk, blk) - blk;
        uint64_t off = blk * TT_BLOCK;
        uint64_t len = MIN(run * TT_BLOCK, s->disk_size - off);
        int64_t pnum = 0;
        TtRecord r = {
            .type = TT_REC_BASE, .offset = off, .aux = s->h.horizon_seq,
        };
        int ret = bdrv_co_block_status(s->bs->file->bs, off, len, &pnum,
                                       NULL, NULL);
        uint64_t zlen = 0;

        if (ret >= 0 && (ret & BDRV_BLOCK_ZERO) && pnum > 0) {
            zlen = off + pnum >= s->disk_size ? s->disk_size - off :
                   QEMU_ALIGN_DOWN(MIN((uint64_t)pnum, len), TT_BLOCK);
        }
        if (zlen) {
            r.length = len = zlen;
            r.flags = TT_FLAG_ZERO;
            *rec_end = tt_co_append(s, &r, NULL, 0);
            tt_views_add_base(s, off, len, TT_EXT_ZERO, 0);
        } else {
            void *buf = softdev_bounce_get(s->bs, len);
            QEMUIOVector qiov;

            if (!buf) {
                return -ENOMEM;
            }
            qemu_iovec_init_buf(&qiov, buf, len);
            ret = bdrv_co_preadv(s->bs->file, off, len, &qiov, 0);
            if (ret < 0) {
                softdev_bounce_put(s->bs, buf, len);
                return ret;
            }
            r.length = r.data_len = len;
            *rec_end = tt_co_append(s, &r, &qiov, 0);
            /* large records are written by now; small ones copied */
            softdev_bounce_put(s->bs, buf, len);
            s->base_bytes += len;
            tt_views_add_base(s, off, len, TT_EXT_JOURNAL,
                              r.pos + TT_REC_HEADER);
        }
        bitmap_set(s->based, blk, DIV_ROUND_UP(len, TT_BLOCK));
        blk += DIV_ROUND_UP(len, TT_BLOCK);
    }
    return 0;
}

/* A write, write-zeroes or discard: journal it, then pass it below */
static int coroutine_fn GRAPH_RDLOCK
tt_co_change(SoftdevTimetravel *s, SoftdevRequest *req, SoftdevNextFn *next)
{
    uint64_t start = QEMU_ALIGN_DOWN(req->offset, TT_BLOCK);
    uint64_t end = MIN(ROUND_UP(req->offset + req->bytes, TT_BLOCK),
                       s->disk_size);
    uint64_t rec_end = 0;
    TtRecord r = {
        .offset = req->offset, .length = req->bytes,
    };
    TtRange range;
    int ret;

    if (s->state != TT_STATE_WRITABLE) {
        return s->state == TT_STATE_READ_ONLY ? -EROFS : -EIO;
    }
    if (req->offset % TT_SECTOR || req->bytes % TT_SECTOR) {
        return -EINVAL;     /* request_alignment says it cannot be */
    }
    switch (req->op) {
    case SOFTDEV_OP_WRITE:
        r.type = TT_REC_DATA;
        r.data_len = req->bytes;
        break;
    case SOFTDEV_OP_WRITE_ZEROES:
        r.type = TT_REC_ZERO;
        break;
    default:
        r.type = TT_REC_DISCARD;
        break;
    }

    qemu_co_rwlock_rdlock(&s->lock);
    /* a base copy, the record, and one pad at worst */
    ret = tt_co_make_room(s, tt_room_for(s, MAX(end - start, r.data_len)) +
                             TT_REC_HEADER + (end - start) + r.data_len);
    if (ret < 0) {
        goto out;
    }
    tt_co_range_lock(s, &range, start, end);
    ret = tt_co_save_bases(s, start, end, &rec_end);
    if (ret >= 0 && s->state == TT_STATE_WRITABLE) {
        rec_end = tt_co_append(s, &r, req->qiov, req->qiov_offset);
        ret = tt_co_wait_written(s, rec_end);
    } else if (ret >= 0) {
        ret = -EIO;
    }
    if (ret >= 0) {
        ret = next(s->bs, req);
    }
    tt_co_range_unlock(s, &range);
out:
    qemu_co_rwlock_unlock(&s->lock);
    return ret;
}

/*
 * Flush: the journal first, then the disk, then a FLUSH record that
 * tells a replay after a crash that everything up to here is safe.
 */
static int coroutine_fn GRAPH_RDLOCK
tt_co_flush(SoftdevTimetravel *s, SoftdevRequest *req, SoftdevNextFn *next)
{
    uint64_t seq, pos;
    int ret;

    if (s->state != TT_STATE_WRITABLE) {
        return s->state == TT_STATE_FAILED ? -EIO : next(s->bs, req);
    }
    qemu_co_rwlock_rdlock(&s->lock);
    seq = s->idx.next_seq - 1;
    pos = s->idx.next_pos;
    ret = tt_co_sync(s);
    if (ret >= 0) {
        ret = next(s->bs, req);
    }
    if (ret >= 0 && seq > s->flush_recorded) {
        ret = tt_co_make_room(s, tt_room_for(s, 0));
        if (ret >= 0) {
            TtRecord r = { .type = TT_REC_FLUSH, .offset = pos, .aux = seq };

            s->flush_recorded = MAX(s->flush_recorded, seq);
            s->synced_seq = MAX(s->synced_seq, seq);
            ret = tt_co_wait_written(s, tt_co_append(s, &r, NULL, 0));
        }
    }
    qemu_co_rwlock_unlock(&s->lock);
    return ret;
}

static int coroutine_fn GRAPH_RDLOCK
softdev_timetravel_co_request(BlockDriverState *bs, SoftdevRequest *req,
                              SoftdevNextFn *next)
{
    SoftdevTimetravel *s = softdev_opaque(bs);

    switch (req->op) {
    case SOFTDEV_OP_READ:
        return next(bs, req);
    case SOFTDEV_OP_FLUSH:
        return tt_co_flush(s, req, next);
    default:
        return tt_co_change(s, req, next);
    }
}

int coroutine_fn GRAPH_RDLOCK tt_co_mark(SoftdevTimetravel *s,
                                         const char *name, uint64_t *seq,
                                         uint64_t *time, Error **errp)
{
    size_t len = strlen(name);
    QEMUIOVector qiov;
    TtRecord r = { .type = TT_REC_MARK, .data_len = len };
    int ret;

    if (s->state != TT_STATE_WRITABLE) {
        error_setg(errp, "node '%s' %s", s->bs->node_name,
                   s->state == TT_STATE_READ_ONLY ? "is read-only" :
                   "has a failed journal");
        return -EACCES;
    }
    if (!len || len > TT_MAX_NAME) {
        error_setg(errp, "a mark's name has 1 to %u bytes", TT_MAX_NAME);
        return -EINVAL;
    }
    qemu_co_rwlock_rdlock(&s->lock);
    if (tt_index_find_mark(&s->idx, name)) {
        error_setg(errp, "node '%s' already has a mark '%s'",
                   s->bs->node_name, name);
        ret = -EEXIST;
        goto out;
    }
    ret = tt_co_make_room(s, tt_room_for(s, len));
    if (ret < 0) {
        error_setg_errno(errp, -ret, "no room in the journal");
        goto out;
    }
    qemu_iovec_init_buf(&qiov, (void *)name, len);
    ret = tt_co_wait_written(s, tt_co_append(s, &r, &qiov, 0));
    if (ret < 0) {
        error_setg_errno(errp, -ret, "cannot write the mark");
        goto out;
    }
    *seq = r.seq;
    *time = r.time;
out:
    qemu_co_rwlock_unlock(&s->lock);
    return ret;
}

SoftdevTimetravel *tt_find(const char *name, Error **errp)
{
    BlockDriverState *bs = bdrv_find_node(name);
    SoftdevDriver *sd = softdev_driver(bs);

    if (!bs) {
        error_setg(errp, "node '%s' not found", name);
        return NULL;
    }
    if (!sd || strcmp(sd->name, "softdev-timetravel")) {
        error_setg(errp, "node '%s' is not a softdev-timetravel node",
                   name);
        return NULL;
    }
    return softdev_opaque(bs);
}

int tt_resolve_point(SoftdevTimetravel *s, const char *mark, bool has_time,
                     int64_t time, uint64_t *seq, uint64_t *at,
                     Error **errp)
{
    uint64_t now = tt_now();

    if (!!mark == has_time) {
        error_setg(errp, "give one of 'mark' and 'time'");
        return -EINVAL;
    }
    if (mark) {
        TtMark *m = tt_index_find_mark(&s->idx, mark);

        if (!m) {
            error_setg(errp, "node '%s' has no mark '%s'%s",
                       s->bs->node_name, mark,
                       s->h.dropped_marks ? " (retention dropped the marks "
                       "older than the oldest point)" : "");
            return -ENOENT;
        }
        *seq = m->seq;
        *at = m->time;
        return 0;
    }
    if (time < 0) {
        /* That long before now */
        if ((uint64_t)-time > now) {
            error_setg(errp, "time %" PRId64 " is before 1970", time);
            return -EINVAL;
        }
        time = now + time;
    }
    if ((uint64_t)time > now) {
        error_setg(errp, "time %" PRId64 " is in the future", time);
        return -EINVAL;
    }
    if ((uint64_t)time < s->h.horizon_time) {
        error_setg(errp, "time %" PRId64 " is before the oldest point of "
                   "node '%s' (%" PRIu64 "): %s", time, s->bs->node_name,
                   s->h.horizon_time,
                   s->h.dropped_records ? "retention dropped that history" :
                   "the journal begins later");
        return -ERANGE;
    }
    *seq = tt_index_seq_at(&s->idx, time, s->h.horizon_seq);
    *at = time;
    return 0;
}

static void tt_retention_arm(SoftdevTimetravel *s)
{
    if (s->retention_timer) {
        timer_mod(s->retention_timer,
                  qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + TT_RETENTION_MS);
    }
}

static int softdev_timetravel_open(BlockDriverState *bs, QemuOpts *opts,
                                   QDict *options, Error **errp)
{
    SoftdevTimetravel *s = softdev_opaque(bs);
    TtRetention ret_opts;
    bool writable = !bdrv_is_read_only(bs);
    int ret;

    s->bs = bs;
    QTAILQ_INIT(&s->writes);
    QLIST_INIT(&s->ranges);
    QLIST_INIT(&s->views);
    qemu_co_queue_init(&s->progress);
    qemu_co_queue_init(&s->range_wait);
    qemu_co_rwlock_init(&s->lock);

    s->journal = bdrv_open_child(NULL, options, "journal", bs, &child_of_bds,
                                 BDRV_CHILD_METADATA, false, errp);
    if (!s->journal) {
        return -EINVAL;
    }
    bdrv_graph_rdlock_main_loop();
    ret = tt_journal_open(s, writable, errp);
    bdrv_graph_rdunlock_main_loop();
    if (ret < 0) {
        goto fail;
    }
    ret = tt_parse_retention(s, opts, &ret_opts, errp);
    if (ret < 0) {
        goto fail;
    }
    s->max_age_ns = ret_opts.max_age_ns;
    s->max_size = ret_opts.max_size;
    if (writable && !(bs->open_flags & BDRV_O_CHECK)) {
        s->retention_timer = aio_timer_new(bdrv_get_aio_context(bs),
                                           QEMU_CLOCK_REALTIME, SCALE_MS,
                                           tt_retention_timer_cb, s);
        tt_retention_arm(s);
    }
    return 0;

fail:
    bdrv_graph_rdlock_main_loop();
    tt_index_free(&s->idx);
    bdrv_graph_rdunlock_main_loop();
    g_free(s->based);
    bdrv_graph_wrlock();
    bdrv_unref_child(bs, s->journal);
    bdrv_graph_wrunlock();
    s->journal = NULL;
    return ret;
}

static void softdev_timetravel_close(BlockDriverState *bs)
{
    SoftdevTimetravel *s = softdev_opaque(bs);

    assert(QLIST_EMPTY(&s->views));
    if (s->retention_timer) {
        timer_free(s->retention_timer);
        s->retention_timer = NULL;
    }
    bdrv_graph_rdlock_main_loop();
    tt_journal_close(s);
    bdrv_graph_rdunlock_main_loop();
}

static void softdev_timetravel_detach_aio_context(BlockDriverState *bs)
{
    SoftdevTimetravel *s = softdev_opaque(bs);

    if (s->retention_timer) {
        timer_free(s->retention_timer);
        s->retention_timer = NULL;
    }
}

static void softdev_timetravel_attach_aio_context(BlockDriverState *bs,
                                                  AioContext *ctx)
{
    SoftdevTimetravel *s = softdev_opaque(bs);

    if (s->state == TT_STATE_WRITABLE &&
        !(bs->open_flags & BDRV_O_CHECK)) {
        s->retention_timer = aio_timer_new(ctx, QEMU_CLOCK_REALTIME,
                                           SCALE_MS, tt_retention_timer_cb,
                                           s);
        tt_retention_arm(s);
    }
}

static int softdev_timetravel_reopen_prepare(BlockDriverState *bs,
                                             QemuOpts *opts, void **state,
                                             Error **errp)
{
    SoftdevTimetravel *s = softdev_opaque(bs);
    TtRetention *r = g_new(TtRetention, 1);

    if (tt_parse_retention(s, opts, r, errp) < 0) {
        g_free(r);
        return -EINVAL;
    }
    *state = r;
    return 0;
}

static void softdev_timetravel_reopen_commit(BlockDriverState *bs,
                                             void *state)
{
    SoftdevTimetravel *s = softdev_opaque(bs);
    TtRetention *r = state;

    s->max_age_ns = r->max_age_ns;
    s->max_size = r->max_size;
    g_free(r);
    tt_retention_arm(s);
}

static void softdev_timetravel_reopen_abort(BlockDriverState *bs,
                                            void *state)
{
    g_free(state);
}

static void GRAPH_RDLOCK
softdev_timetravel_refresh_limits(BlockDriverState *bs, Error **errp)
{
    bs->bl.request_alignment = MAX(bs->bl.request_alignment, TT_SECTOR);
    bs->bl.max_transfer = MIN_NON_ZERO(bs->bl.max_transfer, TT_MAX_REQUEST);
    bs->bl.max_pwrite_zeroes = MIN_NON_ZERO(bs->bl.max_pwrite_zeroes,
                                            TT_MAX_REQUEST);
    bs->bl.max_pdiscard = MIN_NON_ZERO(bs->bl.max_pdiscard, TT_MAX_REQUEST);
}

static int64_t softdev_timetravel_getlength(BlockDriverState *bs)
{
    SoftdevTimetravel *s = softdev_opaque(bs);

    /* Fixed: a resize is not recorded, so it is refused */
    return s->disk_size;
}

static bool softdev_timetravel_busy(BlockDriverState *bs, Error **errp)
{
    SoftdevTimetravel *s = softdev_opaque(bs);
    TtView *v = QLIST_FIRST(&s->views);

    if (v) {
        error_setg(errp, "node '%s' has views open (such as '%s'): "
                   "blockdev-del them first", bs->node_name,
                   v->bs->node_name);
        return true;
    }
    return false;
}

static void softdev_timetravel_query(BlockDriverState *bs, SoftdevInfo *info)
{
    SoftdevTimetravel *s = softdev_opaque(bs);
    SoftdevTimetravelInfo *t = &info->u.softdev_timetravel;
    TtView *v;

    t->journal = g_strdup(s->journal->bs->node_name);
    t->journal_size = s->h.ring_size;
    t->journal_used = tt_used(s);
    t->max_size = s->max_size;
    t->max_age = s->max_age_ns / NANOSECONDS_PER_SECOND;
    t->records = s->idx.nb_recs;
    t->marks = s->idx.nb_marks;
    t->oldest_seq = s->h.horizon_seq;
    t->oldest_time = s->h.horizon_time;
    t->newest_seq = s->idx.next_seq - 1;
    t->logged_bytes = s->logged_bytes;
    t->base_bytes = s->base_bytes;
    t->compactions = s->compactions;
    t->copied_bytes = s->copied_bytes;
    t->dropped_records = s->h.dropped_records;
    t->dropped_marks = s->h.dropped_marks;
    t->recovered_records = s->recovered;
    t->reverts = s->reverts;
    t->failed = s->state == TT_STATE_FAILED;
    QLIST_FOREACH(v, &s->views, next) {
        t->views++;
    }
}

static SoftdevDriver softdev_timetravel = {
    .name                   = "softdev-timetravel",
    .content_preserving     = true,
    .state_size             = sizeof(SoftdevTimetravel),
    .opts                   = &softdev_timetravel_opts,
    .zeroes                 = SOFTDEV_ZEROES_SEEN,
    .discard                = SOFTDEV_DISCARD_SEEN,
    .open                   = softdev_timetravel_open,
    .close                  = softdev_timetravel_close,
    .refresh_limits         = softdev_timetravel_refresh_limits,
    .getlength              = softdev_timetravel_getlength,
    .detach_aio_context     = softdev_timetravel_detach_aio_context,
    .attach_aio_context     = softdev_timetravel_attach_aio_context,
    .co_request             = softdev_timetravel_co_request,
    .mutable_opts           = tt_mutable_opts,
    .reopen_prepare         = softdev_timetravel_reopen_prepare,
    .reopen_commit          = softdev_timetravel_reopen_commit,
    .reopen_abort           = softdev_timetravel_reopen_abort,
    .query                  = softdev_timetravel_query,
    .co_check               = tt_co_check,
    .busy                   = softdev_timetravel_busy,
};

static void softdev_timetravel_init(void)
{
    softdev_register(&softdev_timetravel);
}

block_init(softdev_timetravel_init);
