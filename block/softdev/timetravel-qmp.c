/*
 * The QMP commands of softdev-timetravel (qapi/softdev.json):
 * softdev-timetravel-mark, -list and -revert.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-softdev.h"
#include "block/block_int.h"
#include "timetravel.h"

static SoftdevTimetravelPoint *tt_point(const char *name, uint64_t seq,
                                        uint64_t time)
{
    SoftdevTimetravelPoint *p = g_new0(SoftdevTimetravelPoint, 1);

    p->name = g_strdup(name);
    p->seq = seq;
    p->time = time;
    return p;
}

SoftdevTimetravelPoint * coroutine_fn
qmp_softdev_timetravel_mark(const char *node_name, const char *name,
                            Error **errp)
{
    SoftdevTimetravel *s = tt_find(node_name, errp);
    uint64_t seq = 0, time = 0;
    AioContext *old_ctx;
    int ret;

    if (!s) {
        return NULL;
    }
    bdrv_ref(s->bs);
    old_ctx = bdrv_co_enter(s->bs);
    bdrv_inc_in_flight(s->bs);
    WITH_GRAPH_RDLOCK_GUARD() {
        ret = tt_co_mark(s, name, &seq, &time, errp);
    }
    bdrv_dec_in_flight(s->bs);
    bdrv_co_leave(s->bs, old_ctx);
    bdrv_co_unref(s->bs);
    return ret < 0 ? NULL : tt_point(name, seq, time);
}

SoftdevTimetravelHistory *qmp_softdev_timetravel_list(const char *node_name,
                                                      Error **errp)
{
    SoftdevTimetravel *s = tt_find(node_name, errp);
    SoftdevTimetravelHistory *h;
    SoftdevTimetravelPointList **tail;

    if (!s) {
        return NULL;
    }
    h = g_new0(SoftdevTimetravelHistory, 1);
    tail = &h->marks;
    for (size_t i = 0; i < s->idx.nb_marks; i++) {
        const TtMark *m = &s->idx.marks[i];

        QAPI_LIST_APPEND(tail, tt_point(m->name, m->seq, m->time));
    }
    h->oldest = tt_point(NULL, s->h.horizon_seq, s->h.horizon_time);
    h->newest = tt_point(NULL, s->idx.next_seq - 1, s->idx.last_time ?
                         s->idx.last_time : s->h.horizon_time);
    h->journal_size = s->h.ring_size;
    h->journal_used = tt_used(s);
    h->max_size = s->max_size;
    h->max_age = s->max_age_ns / NANOSECONDS_PER_SECOND;
    h->dropped_records = s->h.dropped_records;
    h->dropped_marks = s->h.dropped_marks;
    h->history_dropped = s->h.dropped_records || s->h.dropped_marks;
    return h;
}

SoftdevTimetravelPoint * coroutine_fn
qmp_softdev_timetravel_revert(const char *node_name, const char *mark,
                              bool has_time, int64_t time, Error **errp)
{
    SoftdevTimetravel *s = tt_find(node_name, errp);
    uint64_t seq, at;
    AioContext *old_ctx;
    int ret;

    if (!s) {
        return NULL;
    }
    if (tt_resolve_point(s, mark, has_time, time, &seq, &at, errp) < 0) {
        return NULL;
    }
    bdrv_ref(s->bs);
    bdrv_drained_begin(s->bs);
    WITH_GRAPH_RDLOCK_GUARD() {
        /* It writes the disk itself, whoever else uses the node */
        ret = softdev_hold_write_below(s->bs, true, errp);
    }
    if (ret < 0) {
        error_prepend(errp, "cannot revert: ");
        goto out;
    }
    old_ctx = bdrv_co_enter(s->bs);
    WITH_GRAPH_RDLOCK_GUARD() {
        qemu_co_rwlock_wrlock(&s->lock);
        ret = tt_co_revert(s, seq, errp);
        qemu_co_rwlock_unlock(&s->lock);
    }
    bdrv_co_leave(s->bs, old_ctx);
    WITH_GRAPH_RDLOCK_GUARD() {
        softdev_hold_write_below(s->bs, false, NULL);
    }
out:
    bdrv_drained_end(s->bs);
    bdrv_co_unref(s->bs);
    return ret < 0 ? NULL : tt_point(mark, seq, at);
}
