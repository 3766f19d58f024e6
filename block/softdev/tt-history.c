/*
 * softdev-timetravel's history: the disk at a past point as an extent
 * map, retention (compaction of the journal's oldest part) and revert.
 *
 * Compaction to a new oldest point H: the records up to H are dropped;
 * where a block changed after H, its content at H must stay in the
 * journal, so it is copied (from the journal, or from the disk) into
 * base records for H before the header moves the tail, which makes it
 * atomic.  Only base records for the current oldest point count, so the
 * copies replace every older one.  Requests wait meanwhile (the lock is held exclusively).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/memalign.h"
#include "timetravel.h"

/* The bytes records [@k, end) change, as extents (of any kind) */
static void tt_changed_after(SoftdevTimetravel *s, size_t k, bool blocks,
                             TtExtents *changed)
{
    tt_extents_init(changed);
    for (size_t i = k; i < s->idx.nb_recs; i++) {
        const TtRec *r = &s->idx.recs[i];
        uint64_t start = r->offset, end = r->offset + r->length;

        if (!tt_is_change(r->type)) {
            continue;
        }
        if (blocks) {
            start = QEMU_ALIGN_DOWN(start, TT_BLOCK);
            end = MIN(ROUND_UP(end, TT_BLOCK), s->disk_size);
        }
        tt_extents_set(changed, start, end - start, TT_EXT_ZERO, 0);
    }
}

/* The largest piece compaction and revert copy in one record */
#define TT_PIECE_MAX            (TT_MAX_DATA / 2)

/* A piece of the disk's past to write somewhere: where it is now */
typedef struct TtPiece {
    uint64_t offset, len;
    TtExtKind kind;
    uint64_t loc;
} TtPiece;

typedef struct TtPieces {
    GArray *pieces;
    TtExtents *map;
    uint64_t bytes;         /* of payload the pieces need */
} TtPieces;

/* Split @e (one extent of "changed") by what @map says, in pieces */
static void tt_collect(const TtExtent *e, void *opaque)
{
    TtPieces *p = opaque;
    uint64_t at = e->start, end = e->start + e->len;

    while (at < end) {
        TtExtent m;
        uint64_t len;

        tt_extents_lookup(p->map, at, MIN(end - at, TT_PIECE_MAX), &m);
        len = m.len;
        g_array_append_val(p->pieces, ((TtPiece) {
            .offset = at, .len = len, .kind = m.kind, .loc = m.loc,
        }));
        p->bytes += TT_REC_HEADER + (m.kind != TT_EXT_ZERO ? len : 0);
        at += len;
    }
}

static void tt_pieces(SoftdevTimetravel *s, uint64_t seq, size_t k,
                      bool blocks, TtExtents *map, TtPieces *p)
{
    TtExtents changed;

    tt_index_map(&s->idx, seq, map);
    tt_changed_after(s, k, blocks, &changed);
    *p = (TtPieces) {
        .pieces = g_array_new(false, false, sizeof(TtPiece)), .map = map,
    };
    tt_extents_foreach(&changed, 0, UINT64_MAX, tt_collect, p);
    tt_extents_destroy(&changed);
}

/* Read the piece's bytes (from the journal, or the disk) into @buf */
static int coroutine_fn GRAPH_RDLOCK
tt_co_read_piece(SoftdevTimetravel *s, const TtPiece *pc, void *buf)
{
    QEMUIOVector qiov;

    qemu_iovec_init_buf(&qiov, buf, pc->len);
    if (pc->kind == TT_EXT_JOURNAL) {
        return tt_co_read_payload(s, pc->loc, pc->len, &qiov, 0);
    }
    return bdrv_co_preadv(s->bs->file, pc->offset, pc->len, &qiov, 0);
}

/* The point just before the oldest record kept if @k is the first */
static void tt_first_kept(SoftdevTimetravel *s, size_t *k, uint64_t *seq,
                          uint64_t *pos)
{
    TtIndex *idx = &s->idx;

    /* A revert's records stay together */
    while (*k > 0 && *k < idx->nb_recs &&
           (idx->recs[*k].flags & TT_FLAG_TXN) &&
           (idx->recs[*k - 1].flags & TT_FLAG_TXN)) {
        (*k)++;
    }
    *seq = idx->next_seq;
    *pos = idx->next_pos;
    if (*k < idx->nb_recs) {
        *seq = idx->recs[*k].seq;
        *pos = idx->recs[*k].data_pos - TT_REC_HEADER;
    }
    for (size_t i = 0; i < idx->nb_marks; i++) {
        if (idx->marks[i].seq > (*k ? idx->recs[*k - 1].seq : 0) &&
            idx->marks[i].seq < *seq) {
            *seq = idx->marks[i].seq;
            *pos = idx->marks[i].pos;
            break;
        }
    }
}

/*
 * Drop the records before index @k (and marks before them), keeping the
 * content later points need.  -ENOSPC if the copies do not fit.
 */
static int coroutine_fn GRAPH_RDLOCK
tt_co_drop_before(SoftdevTimetravel *s, size_t k, Error **errp)
{
    TtIndex *idx = &s->idx;
    uint64_t first_seq, tail, horizon, horizon_time = s->h.horizon_time;
    g_autoptr(GArray) copies = g_array_new(false, false, sizeof(TtRecord));
    size_t marks;
    TtExtents map;
    TtPieces p;
    void *buf = NULL;
    int ret = 0;

    tt_first_kept(s, &k, &first_seq, &tail);
    horizon = first_seq - 1;
    if (horizon <= s->h.horizon_seq) {
        return 0;
    }
    tt_pieces(s, horizon, k, true, &map, &p);
    /* The copies go into the free part of the ring, a pad at worst first */
    if (tt_used(s) + p.bytes + TT_PIECE_MAX + TT_REC_HEADER >
        s->h.ring_size) {
        ret = -ENOSPC;
        goto out;
    }
    buf = qemu_memalign(4096, TT_PIECE_MAX);
    for (guint i = 0; i < p.pieces->len; i++) {
        TtPiece *pc = &g_array_index(p.pieces, TtPiece, i);
        TtRecord r = {
            .type = TT_REC_BASE, .offset = pc->offset, .length = pc->len,
            .aux = horizon,
        };
        QEMUIOVector qiov;

        if (pc->kind == TT_EXT_ZERO) {
            r.flags = TT_FLAG_ZERO;
            tt_co_append(s, &r, NULL, 0);
        } else {
            ret = tt_co_read_piece(s, pc, buf);
            if (ret < 0) {
                error_setg_errno(errp, -ret, "compaction cannot read");
                goto out;
            }
            r.data_len = pc->len;
            qemu_iovec_init_buf(&qiov, buf, pc->len);
            tt_co_append(s, &r, &qiov, 0);
            s->copied_bytes += pc->len;
        }
        g_array_append_val(copies, r);
    }
    ret = tt_co_sync(s);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "compaction cannot write the journal");
        goto out;
    }

    /* Commit: the header moves the tail */
    for (size_t i = 0; i < k; i++) {
        horizon_time = MAX(horizon_time, idx->recs[i].time);
    }
    for (size_t i = 0; i < idx->nb_marks; i++) {
        if (idx->marks[i].seq <= horizon) {
            horizon_time = MAX(horizon_time, idx->marks[i].time);
        }
    }
    s->h.tail = tail;
    s->h.tail_seq = first_seq;
    s->h.horizon_seq = horizon;
    s->h.horizon_time = horizon_time;
    s->h.dropped_records += k;
    tt_index_drop(idx, k, horizon, &marks);
    s->h.dropped_marks += marks;
    ret = tt_write_header(s);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "compaction cannot write the header");
        s->state = TT_STATE_FAILED;
        goto out;
    }
    idx->horizon_seq = horizon;
    if (idx->flushed_seq < horizon) {
        idx->flushed_seq = horizon;
        idx->flushed_pos = tail;
    }
    /* Its copies count now (they did not while the old horizon stood) */
    for (guint i = 0; i < copies->len; i++) {
        tt_index_count_base(idx, &g_array_index(copies, TtRecord, i));
    }
    tt_rebuild_based(s);
    s->compactions++;
    tt_views_rebuild(s);
out:
    qemu_vfree(buf);
    g_array_free(p.pieces, true);
    tt_extents_destroy(&map);
    return ret;
}

int coroutine_fn GRAPH_RDLOCK tt_co_compact(SoftdevTimetravel *s,
                                            uint64_t horizon, Error **errp)
{
    return tt_co_drop_before(s, tt_index_after(&s->idx, horizon), errp);
}

/* Drop all history: the disk as it is is the oldest point */
static int coroutine_fn GRAPH_RDLOCK tt_co_drop_all(SoftdevTimetravel *s)
{
    int ret = tt_co_sync(s);

    if (ret < 0) {
        return ret;
    }
    tt_reset_history(s);
    ret = tt_write_header(s);
    s->compactions++;
    tt_views_rebuild(s);
    return ret;
}

/*
 * Retention by size: drop the oldest history until no more than half
 * of max-size is in use, or everything if the copies do not fit.
 */
static int coroutine_fn GRAPH_RDLOCK tt_co_shrink(SoftdevTimetravel *s)
{
    TtIndex *idx = &s->idx;
    uint64_t target = s->max_size / 2;

    for (int attempt = 0; attempt < 3; attempt++, target /= 2) {
        size_t lo = 0, hi = idx->nb_recs;
        int ret;

        /* The first record with less than @target of log after it */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;

            if (idx->next_pos - idx->recs[mid].data_pos > target) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        ret = tt_co_drop_before(s, lo, NULL);
        if (ret != -ENOSPC) {
            return ret;
        }
    }
    softdev_alert(s->bs, SOFTDEV_SEVERITY_WARNING, -1, -1, NULL,
                  "journal full: all history dropped");
    return tt_co_drop_all(s);
}

int coroutine_fn GRAPH_RDLOCK tt_co_make_room(SoftdevTimetravel *s,
                                              uint64_t need)
{
    int ret = 0;

    if (tt_used(s) + need <= s->max_size) {
        return 0;
    }
    qemu_co_rwlock_unlock(&s->lock);
    qemu_co_rwlock_wrlock(&s->lock);
    while (ret >= 0 && s->state == TT_STATE_WRITABLE &&
           tt_used(s) + need > s->max_size) {
        uint64_t before = tt_used(s);

        if (!before) {
            ret = -ENOSPC;  /* cannot be: requests are far below max-size */
            break;
        }
        ret = tt_co_shrink(s);
        if (ret >= 0 && tt_used(s) >= before) {
            ret = tt_co_drop_all(s);
        }
    }
    qemu_co_rwlock_downgrade(&s->lock);
    return s->state == TT_STATE_WRITABLE ? ret : -EIO;
}

static void coroutine_fn tt_retention_co(void *opaque)
{
    SoftdevTimetravel *s = opaque;
    BlockDriverState *bs = s->bs;
    uint64_t horizon;

    bdrv_graph_co_rdlock();
    qemu_co_rwlock_wrlock(&s->lock);
    if (s->state == TT_STATE_WRITABLE && s->max_age_ns) {
        horizon = tt_index_seq_at(&s->idx, tt_now() - s->max_age_ns,
                                  s->h.horizon_seq);
        /* Open views keep their past */
        horizon = MIN(horizon, tt_views_oldest(s));
        tt_co_compact(s, horizon, NULL);
    }
    qemu_co_rwlock_unlock(&s->lock);
    bdrv_graph_co_rdunlock();
    s->compacting = false;
    if (s->retention_timer) {
        timer_mod(s->retention_timer,
                  qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + 1000);
    }
    bdrv_dec_in_flight(bs);
}

void tt_retention_timer_cb(void *opaque)
{
    SoftdevTimetravel *s = opaque;
    uint64_t now = tt_now();
    bool due = s->max_age_ns && s->idx.nb_recs &&
               s->idx.recs[0].time + s->max_age_ns < now &&
               tt_views_oldest(s) > s->h.horizon_seq;

    if (!due || s->compacting || s->state != TT_STATE_WRITABLE) {
        timer_mod(s->retention_timer,
                  qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + 1000);
        return;
    }
    s->compacting = true;
    bdrv_inc_in_flight(s->bs);
    aio_co_enter(bdrv_get_aio_context(s->bs),
                 qemu_coroutine_create(tt_retention_co, s));
}

int coroutine_fn GRAPH_RDLOCK tt_co_revert(SoftdevTimetravel *s,
                                           uint64_t seq, Error **errp)
{
    size_t k = tt_index_after(&s->idx, seq);
    TtExtents map;
    TtPieces p;
    void *buf = NULL;
    g_autoptr(GArray) recs = g_array_new(false, false, sizeof(TtRecord));
    TtRecord commit = { .type = TT_REC_COMMIT };
    uint64_t pos;
    int ret;

    if (s->state != TT_STATE_WRITABLE) {
        error_setg(errp, "node '%s' is %s", s->bs->node_name,
                   s->state == TT_STATE_READ_ONLY ? "read-only" :
                   "failed (its journal could not be written)");
        return -EACCES;
    }
    /*
     * First make what came before safe, so that a crash recovery finds
     * only this transaction after the last flush
     */
    ret = tt_co_sync(s);
    if (ret >= 0) {
        ret = bdrv_co_flush(s->bs->file->bs);
    }
    if (ret >= 0 && s->idx.next_seq - 1 > s->flush_recorded) {
        TtRecord f = {
            .type = TT_REC_FLUSH, .offset = s->idx.next_pos,
            .aux = s->idx.next_seq - 1,
        };

        s->flush_recorded = s->synced_seq = f.aux;
        ret = tt_co_wait_written(s, tt_co_append(s, &f, NULL, 0));
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "cannot flush before the revert");
        return ret;
    }
    tt_pieces(s, seq, k, false, &map, &p);
    if (!p.pieces->len) {
        goto out;       /* nothing changed since */
    }
    if (tt_used(s) + p.bytes + TT_PIECE_MAX + 3 * TT_REC_HEADER >
        s->h.ring_size) {
        error_setg(errp, "the journal has no room for this revert (it needs "
                   "%" PRIu64 " bytes); drop older history first",
                   p.bytes);
        ret = -ENOSPC;
        goto out;
    }

    /* The content of the point, as a transaction of changes */
    buf = qemu_memalign(4096, TT_PIECE_MAX);
    for (guint i = 0; i < p.pieces->len; i++) {
        TtPiece *pc = &g_array_index(p.pieces, TtPiece, i);
        TtRecord r = {
            .flags = TT_FLAG_TXN, .offset = pc->offset, .length = pc->len,
        };
        QEMUIOVector qiov;

        if (pc->kind == TT_EXT_DISK) {
            continue;   /* never based, so never changed since */
        }
        if (pc->kind == TT_EXT_ZERO) {
            r.type = TT_REC_ZERO;
            pos = tt_co_append(s, &r, NULL, 0);
        } else {
            ret = tt_co_read_piece(s, pc, buf);
            if (ret < 0) {
                error_setg_errno(errp, -ret, "cannot read the journal");
                goto out;   /* the records so far are void: no commit */
            }
            r.type = TT_REC_DATA;
            r.data_len = pc->len;
            qemu_iovec_init_buf(&qiov, buf, pc->len);
            pos = tt_co_append(s, &r, &qiov, 0);
        }
        g_array_append_val(recs, r);
        ret = tt_co_wait_written(s, pos);
        if (ret < 0) {
            goto fail_write;
        }
    }
    ret = tt_co_wait_written(s, tt_co_append(s, &commit, NULL, 0));
    if (ret >= 0) {
        ret = bdrv_co_flush(s->journal->bs);
    }
    if (ret < 0) {
        goto fail_write;
    }

    /* Committed: a crash from here on replays it.  Now the disk. */
    for (guint i = 0; i < recs->len; i++) {
        TtRecord *r = &g_array_index(recs, TtRecord, i);

        if (r->type == TT_REC_ZERO) {
            ret = bdrv_co_pwrite_zeroes(s->bs->file, r->offset, r->length, 0);
        } else {
            TtPiece pc = {
                .offset = r->offset, .len = r->length,
                .kind = TT_EXT_JOURNAL, .loc = r->pos + TT_REC_HEADER,
            };

            ret = tt_co_read_piece(s, &pc, buf);
            if (ret >= 0) {
                ret = bdrv_co_pwrite(s->bs->file, r->offset, r->length, buf,
                                     0);
            }
        }
        if (ret < 0) {
            error_setg_errno(errp, -ret, "the revert failed writing the "
                             "disk; reopening the node completes it");
            s->state = TT_STATE_FAILED;
            goto out;
        }
    }
    ret = bdrv_co_flush(s->bs->file->bs);
    if (ret >= 0) {
        TtRecord f = {
            .type = TT_REC_FLUSH, .offset = s->idx.next_pos,
            .aux = commit.seq,
        };

        ret = tt_co_wait_written(s, tt_co_append(s, &f, NULL, 0));
        s->flush_recorded = s->synced_seq = commit.seq;
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "cannot flush after the revert");
        goto out;
    }
    s->reverts++;
    goto out;

fail_write:
    error_setg_errno(errp, -ret, "cannot write the revert to the journal");
out:
    tt_index_abort_txn(&s->idx);    /* unless it committed */
    qemu_vfree(buf);
    g_array_free(p.pieces, true);
    tt_extents_destroy(&map);
    return ret;
}
