/*
 * softdev-timetravel inside: the device (timetravel.c), its journal
 * (tt-journal.c), its views (timetravel-view.c) and QMP
 * (timetravel-qmp.c) share this.  docs/specs/softdev-timetravel.rst has
 * the format and the rules that keep it crash consistent.
 *
 * One AioContext: a node's requests, its views' and its QMP commands run
 * in one thread.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SOFTDEV_TIMETRAVEL_H
#define SOFTDEV_TIMETRAVEL_H

#include "qemu/coroutine.h"
#include "qemu/queue.h"
#include "qemu/timer.h"
#include "block/block_int.h"
#include "softdev/softdev.h"
#include "tt-format.h"
#include "tt-extents.h"

typedef enum TtState {
    TT_STATE_READ_ONLY,
    TT_STATE_WRITABLE,
    /* A journal write failed: nothing more is written, writes fail */
    TT_STATE_FAILED,
} TtState;

typedef enum TtWriteState {
    TT_WRITE_OPEN,          /* a batch that records may still join */
    TT_WRITE_WRITING,
    TT_WRITE_DONE,
} TtWriteState;

/* One write of the log in flight: a batch of records, or one large one */
typedef struct TtWrite {
    TtWriteState state;
    uint64_t start, end;    /* log positions it writes */
    uint64_t covers;        /* the log up to here is in once it is done
                             * (beyond @end after a pad) */
    uint8_t *buf;           /* a batch's records */
    size_t cap;
    QEMUIOVector qiov;      /* a large record: its header and payload */
    uint8_t *hdr;
    int ret;
    QTAILQ_ENTRY(TtWrite) next;
} TtWrite;

/* Bytes of disk a request holds against others (tt_co_range_lock) */
typedef struct TtRange {
    uint64_t start, end;
    QLIST_ENTRY(TtRange) next;
} TtRange;

typedef enum TtViewState {
    TT_VIEW_VALID,
    TT_VIEW_EXPIRED,        /* retention dropped its point: reads fail */
} TtViewState;

/* A softdev-timetravel-view node, as its softdev-timetravel knows it */
typedef struct TtView {
    BlockDriverState *bs;
    char *mark;             /* NULL for a view at a time */
    uint64_t seq;           /* it shows the disk after record @seq */
    uint64_t time;
    TtViewState state;
    TtExtents map;          /* what differs from the disk below */
    QLIST_ENTRY(TtView) next;
} TtView;

typedef struct SoftdevTimetravel {
    BlockDriverState *bs;
    BdrvChild *journal;
    TtState state;
    TtHeader h;
    uint64_t disk_size;
    TtIndex idx;            /* the history; next_pos/next_seq: the log's */

    /* Blocks (TT_BLOCK) whose content at the horizon is in the journal */
    unsigned long *based;
    uint64_t nb_blocks;

    /* Appending */
    QTAILQ_HEAD(, TtWrite) writes;      /* in flight, in log order */
    TtWrite *batch;                     /* open, or NULL */
    unsigned batches_writing;
    uint64_t written_pos;   /* every record before it is in the journal */
    CoQueue progress;       /* waits for written_pos */
    uint64_t synced_seq;    /* records up to it are flushed with the disk */
    uint64_t flush_recorded;/* the newest FLUSH record's */
    bool dirty;             /* written since the header said clean */

    /* Requests hold it shared; compaction and revert exclusively */
    CoRwlock lock;
    QLIST_HEAD(, TtRange) ranges;
    CoQueue range_wait;

    /* Retention (options; blockdev-reopen changes them) */
    uint64_t max_age_ns;    /* 0: no limit */
    uint64_t max_size;      /* bytes of the ring kept in use at most */
    QEMUTimer *retention_timer;
    bool compacting;

    QLIST_HEAD(, TtView) views;

    /* Statistics */
    uint64_t logged_bytes;      /* payload written to the journal */
    uint64_t base_bytes;        /* of it, base copies */
    uint64_t compactions;
    uint64_t copied_bytes;      /* compaction's base copies */
    uint64_t recovered;         /* records voided by a crash recovery */
    uint64_t resynced_bytes;
    uint64_t reverts;
} SoftdevTimetravel;

static inline uint64_t tt_phys(SoftdevTimetravel *s, uint64_t pos)
{
    return TT_RING_OFFSET + pos % s->h.ring_size;
}

/* Bytes of the ring the history uses */
static inline uint64_t tt_used(SoftdevTimetravel *s)
{
    return s->idx.next_pos - s->h.tail;
}

static inline uint64_t tt_now(void)
{
    return qemu_clock_get_ns(QEMU_CLOCK_HOST);
}

/* tt-replay.c */
int coroutine_mixed_fn GRAPH_RDLOCK
tt_journal_open(SoftdevTimetravel *s, bool writable, Error **errp);
void coroutine_mixed_fn GRAPH_RDLOCK tt_journal_close(SoftdevTimetravel *s);
/* qemu-img check */
int coroutine_fn GRAPH_RDLOCK
tt_co_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix);
/* s->based from the base records of the history */
void tt_rebuild_based(SoftdevTimetravel *s);
/*
 * Drop the whole history in memory and in s->h (the caller writes the
 * header): the disk as it is now is the oldest point
 */
void tt_reset_history(SoftdevTimetravel *s);
/*
 * Synchronous append of the open path (recovery): @r with @data as its
 * payload at the log's end; r->time if set, else now.  0 or -errno.
 */
int coroutine_mixed_fn GRAPH_RDLOCK
tt_write_record_now(SoftdevTimetravel *s, TtRecord *r, const void *data);

/* tt-journal.c */
/* Rewrite the header (the other copy, next generation) from s->h */
int coroutine_mixed_fn GRAPH_RDLOCK tt_write_header(SoftdevTimetravel *s);
/*
 * Append @r (type, flags, offset, length, aux, data_len set; seq, time,
 * pos are filled in) with @data_len bytes of payload from @qiov at
 * @qiov_offset, or none.  Room must have been made (tt_co_make_room).
 * Returns the end of the record's log position: tt_co_wait_written()
 * with it before the disk is changed.
 */
uint64_t coroutine_fn GRAPH_RDLOCK
tt_co_append(SoftdevTimetravel *s, TtRecord *r, QEMUIOVector *qiov,
             size_t qiov_offset);
/* Wait until every record before @end is in the journal: 0 or -errno */
int coroutine_fn GRAPH_RDLOCK tt_co_wait_written(SoftdevTimetravel *s,
                                                 uint64_t end);
/* Write out what is appended, flush the journal: 0 or -errno */
int coroutine_fn GRAPH_RDLOCK tt_co_sync(SoftdevTimetravel *s);
/* Read @len bytes of payload at log position @pos */
int coroutine_fn GRAPH_RDLOCK
tt_co_read_payload(SoftdevTimetravel *s, uint64_t pos, uint64_t len,
                   QEMUIOVector *qiov, size_t qiov_offset);
/* Ring bytes a record of @data_len payload bytes takes, with padding */
uint64_t tt_room_for(SoftdevTimetravel *s, uint64_t data_len);
/* tt-history.c: maps of the past, retention, compaction, revert */
/*
 * Make room for @need more ring bytes: drop history as retention allows,
 * or all of it if it must.  With the lock held shared, which it may drop
 * and take again.  0 or -errno.
 */
int coroutine_fn GRAPH_RDLOCK tt_co_make_room(SoftdevTimetravel *s,
                                              uint64_t need);
/*
 * Drop history before point @horizon (or as retention says, if
 * @horizon is 0), copying what later points still need: with the lock
 * held exclusively.  0 or -errno.
 */
int coroutine_fn GRAPH_RDLOCK tt_co_compact(SoftdevTimetravel *s,
                                            uint64_t horizon, Error **errp);
void tt_retention_timer_cb(void *opaque);
/* The live disk back to point @seq, drained: 0 or -errno */
int coroutine_fn GRAPH_RDLOCK tt_co_revert(SoftdevTimetravel *s,
                                           uint64_t seq, Error **errp);

/* timetravel.c */
/* The softdev-timetravel node called @name, or NULL with @errp set */
SoftdevTimetravel *tt_find(const char *name, Error **errp);
/*
 * The point a view or revert of @s asks for: mark @mark, or the time
 * @time (ns since the Unix epoch; negative: that long before now).
 * 0 or -errno with @errp set.
 */
int tt_resolve_point(SoftdevTimetravel *s, const char *mark, bool has_time,
                     int64_t time, uint64_t *seq, uint64_t *at,
                     Error **errp);
/* Take bytes [@start, @end) of the disk against overlapping requests */
void coroutine_fn tt_co_range_lock(SoftdevTimetravel *s, TtRange *r,
                                   uint64_t start, uint64_t end);
void coroutine_fn tt_co_range_unlock(SoftdevTimetravel *s, TtRange *r);
/* New base records of [@start, +@len) at @loc: the views learn them */
void tt_views_add_base(SoftdevTimetravel *s, uint64_t start, uint64_t len,
                       TtExtKind kind, uint64_t loc);
/* After compaction: rebuild the views' maps, expire those now too old */
void tt_views_rebuild(SoftdevTimetravel *s);
/* The oldest point an open view needs, or UINT64_MAX */
uint64_t tt_views_oldest(SoftdevTimetravel *s);
int tt_view_attach(SoftdevTimetravel *s, TtView *v, Error **errp);
void tt_view_detach(SoftdevTimetravel *s, TtView *v);

/* QMP (timetravel-qmp.c calls these in the node's coroutine) */
int coroutine_fn GRAPH_RDLOCK tt_co_mark(SoftdevTimetravel *s,
                                         const char *name, uint64_t *seq,
                                         uint64_t *time, Error **errp);

#endif /* SOFTDEV_TIMETRAVEL_H */
