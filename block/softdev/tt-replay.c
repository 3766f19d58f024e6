/*
 * softdev-timetravel's journal: opening it (a new one on an empty node;
 * replay of the log into the history; recovery after a crash), closing
 * it, and qemu-img check.  docs/specs/softdev-timetravel.rst describes
 * the format and the recovery.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/memalign.h"
#include "timetravel.h"

/* The log is replayed in reads of this size */
#define TT_SCAN_CHUNK           (4 * MiB)

int coroutine_mixed_fn GRAPH_RDLOCK
tt_write_record_now(SoftdevTimetravel *s, TtRecord *r, const void *data)
{
    uint64_t size;
    g_autofree uint8_t *buf = NULL;

    if (r->data_len && r->type == TT_REC_BASE) {
        r->flags |= TT_FLAG_CRC;
        r->data_crc = tt_crc32c(0, data, r->data_len);
    }
    if (r->type != TT_REC_PAD &&
        tt_record_size(r) > s->h.ring_size - s->idx.next_pos %
        s->h.ring_size) {
        TtRecord pad = {
            .type = TT_REC_PAD,
            .length = s->h.ring_size - s->idx.next_pos % s->h.ring_size,
        };
        int ret = tt_write_record_now(s, &pad, NULL);

        if (ret < 0) {
            return ret;
        }
    }
    r->seq = s->idx.next_seq++;
    r->pos = s->idx.next_pos;
    if (!r->time) {     /* else the caller's, which must not fall */
        r->time = MAX(tt_now(), s->idx.last_time);
        s->idx.last_time = r->time;
    }
    size = r->type == TT_REC_PAD ? TT_REC_HEADER : tt_record_size(r);
    s->idx.next_pos += tt_record_size(r);
    buf = g_malloc0(size);
    tt_record_encode(r, buf);
    if (r->data_len) {
        memcpy(buf + TT_REC_HEADER, data, r->data_len);
    }
    return bdrv_pwrite(s->journal, tt_phys(s, r->pos), size, buf, 0);
}

/* 1 if the journal node is all zeroes (it may become a journal), else 0 */
static int coroutine_mixed_fn GRAPH_RDLOCK
tt_node_is_zero(SoftdevTimetravel *s, int64_t size)
{
    g_autofree uint8_t *buf = g_malloc(1 * MiB);
    int64_t off = 0;

    while (off < size) {
        int64_t pnum = 0;
        int64_t n = MIN(size - off, 1 * MiB);
        int ret = bdrv_block_status(s->journal->bs, off, n, &pnum, NULL, NULL);

        if (ret >= 0 && (ret & BDRV_BLOCK_ZERO) && pnum > 0) {
            off += pnum;
            continue;
        }
        if (ret >= 0 && pnum > 0) {
            n = MIN(pnum, n);
        }
        ret = bdrv_pread(s->journal, off, n, buf, 0);
        if (ret < 0) {
            return ret;
        }
        if (!buffer_is_zero(buf, n)) {
            return 0;
        }
        off += n;
    }
    return 1;
}

/* How a replay of the log ended */
typedef enum TtScanEnd {
    TT_SCAN_END,            /* no record follows: the end of the log */
    TT_SCAN_DAMAGED,        /* a record broken or contradicting the rest */
} TtScanEnd;

typedef struct TtScan {
    uint8_t *buf;
    uint64_t buf_pos, buf_len;      /* log positions buf holds */
    TtScanEnd end;
    uint64_t bad_pos;
    const char *why;
    uint64_t crc_errors;            /* with @verify */
} TtScan;

/* Make [@pos, @pos + @need) of the log readable in sc->buf */
static int coroutine_mixed_fn GRAPH_RDLOCK
tt_scan_load(SoftdevTimetravel *s, TtScan *sc, uint64_t pos, uint64_t need)
{
    uint64_t room = s->h.ring_size - pos % s->h.ring_size;
    int ret;

    if (pos >= sc->buf_pos && pos + need <= sc->buf_pos + sc->buf_len) {
        return 0;
    }
    sc->buf_pos = pos;
    sc->buf_len = MIN(room, TT_SCAN_CHUNK);
    ret = bdrv_pread(s->journal, tt_phys(s, pos), sc->buf_len, sc->buf, 0);
    if (ret < 0) {
        sc->buf_len = 0;
    }
    return ret;
}

/*
 * Replay the log from the tail into s->idx, up to @stop (a clean
 * journal's head) or its end.  With @verify, check the payload CRCs too.
 * 0 (sc says how it ended) or -errno on an I/O error.
 */
static int coroutine_mixed_fn GRAPH_RDLOCK
tt_scan(SoftdevTimetravel *s, TtScan *sc, uint64_t stop, bool verify)
{
    TtIndex *idx = &s->idx;

    sc->buf = qemu_memalign(4096, TT_SCAN_CHUNK);
    sc->buf_len = 0;
    sc->end = TT_SCAN_END;
    while (idx->next_pos < stop &&
           idx->next_pos - s->h.tail < s->h.ring_size) {
        uint64_t pos = idx->next_pos;
        uint64_t room = s->h.ring_size - pos % s->h.ring_size;
        char name[TT_MAX_NAME + 1] = "";
        TtRecord r;
        int ret = tt_scan_load(s, sc, pos, MIN(room, 2 * TT_SECTOR));

        if (ret < 0) {
            qemu_vfree(sc->buf);
            return ret;
        }
        ret = tt_record_decode(sc->buf + (pos - sc->buf_pos), &s->h,
                               s->disk_size, pos, idx->next_seq, &r,
                               &sc->why);
        if (ret == -ENOENT) {
            break;
        }
        if (ret == 0 && r.type == TT_REC_MARK) {
            memcpy(name, sc->buf + (pos - sc->buf_pos) + TT_REC_HEADER,
                   r.data_len);
            name[r.data_len] = 0;
        }
        if (ret == 0 && verify && (r.flags & TT_FLAG_CRC)) {
            g_autofree uint8_t *data = g_malloc(r.data_len);

            ret = bdrv_pread(s->journal, tt_phys(s, pos) + TT_REC_HEADER,
                             r.data_len, data, 0);
            if (ret < 0) {
                qemu_vfree(sc->buf);
                return ret;
            }
            if (tt_crc32c(0, data, r.data_len) != r.data_crc) {
                sc->why = "payload checksum mismatch";
                sc->crc_errors++;
                ret = -EINVAL;
            }
        }
        if (ret == 0) {
            ret = tt_index_add(idx, &r, name, &sc->why);
        }
        if (ret < 0) {
            sc->end = TT_SCAN_DAMAGED;
            sc->bad_pos = pos;
            break;
        }
    }
    tt_index_end_replay(idx);
    qemu_vfree(sc->buf);
    sc->buf = NULL;
    return 0;
}

static void tt_set_based(SoftdevTimetravel *s, uint64_t offset, uint64_t len)
{
    uint64_t first = offset / TT_BLOCK;
    uint64_t end = DIV_ROUND_UP(offset + len, TT_BLOCK);

    bitmap_set(s->based, first, end - first);
}

void tt_rebuild_based(SoftdevTimetravel *s)
{
    bitmap_zero(s->based, s->nb_blocks);
    for (size_t i = 0; i < s->idx.nb_recs; i++) {
        if (s->idx.recs[i].type == TT_REC_BASE) {
            tt_set_based(s, s->idx.recs[i].offset, s->idx.recs[i].length);
        }
    }
}

void tt_reset_history(SoftdevTimetravel *s)
{
    size_t marks;

    s->h.dropped_records += s->idx.nb_recs;
    tt_index_drop(&s->idx, s->idx.nb_recs, UINT64_MAX, &marks);
    s->h.dropped_marks += marks;
    s->h.tail = s->idx.next_pos;
    s->h.tail_seq = s->idx.next_seq;
    s->h.horizon_seq = s->idx.next_seq - 1;
    s->h.horizon_time = MAX(s->h.horizon_time, s->idx.last_time);
    s->idx.horizon_seq = s->h.horizon_seq;
    s->idx.flushed_seq = s->h.horizon_seq;
    s->idx.flushed_pos = s->h.tail;
    bitmap_zero(s->based, s->nb_blocks);
}

/*
 * After a crash: the records after the newest FLUSH may be torn or be
 * the journal's only trace of a change the disk did not get, or did.
 * Keep their base copies that check out, record the disk as it is now
 * wherever they may have changed it, and void them.  With @writable
 * false, only forget them (the disk is not written, nor the journal).
 */
static int coroutine_mixed_fn GRAPH_RDLOCK
tt_recover(SoftdevTimetravel *s, bool writable, Error **errp)
{
    TtIndex *idx = &s->idx;
    uint64_t S = idx->flushed_seq, p0 = idx->flushed_pos;
    uint64_t end_u = idx->next_pos;
    size_t k = tt_index_after(idx, S), n_u;
    g_autofree TtRec *u = NULL;
    g_autofree TtRec *bases = NULL;     /* of u, those that check out */
    g_autofree uint8_t *buf = g_malloc(TT_MAX_DATA);
    uint64_t need = 0, dropped_marks = 0, keep = 0, t0;
    size_t kept_marks = 0;
    int ret;

    if (end_u == p0) {
        return 0;
    }
    t0 = MAX(idx->last_time, 1);
    /*
     * A revert that committed after the last flush (it began with one):
     * finish writing it to the disk
     */
    if (k < idx->nb_recs && (idx->recs[k].flags & TT_FLAG_TXN) &&
        idx->commit_seq > idx->recs[k].seq) {
        if (writable) {
            ret = softdev_hold_write_below(s->bs, true, errp);
            if (ret < 0) {
                error_prepend(errp, "a revert that a crash interrupted must "
                              "be finished, which writes the disk: ");
                return ret;
            }
        }
        for (; k < idx->nb_recs && (idx->recs[k].flags & TT_FLAG_TXN); k++) {
            const TtRec *r = &idx->recs[k];

            if (!writable) {
                continue;
            }
            if (r->type == TT_REC_DATA) {
                ret = bdrv_pread(s->journal, tt_phys(s, r->data_pos),
                                 r->length, buf, 0);
                if (ret >= 0) {
                    ret = bdrv_pwrite(s->bs->file, r->offset, r->length, buf,
                                      0);
                }
            } else {
                ret = bdrv_pwrite_zeroes(s->bs->file, r->offset, r->length,
                                         0);
            }
            if (ret < 0) {
                error_setg_errno(errp, -ret, "cannot finish the revert that "
                                 "a crash interrupted");
                return ret;
            }
        }
        if (writable) {
            softdev_hold_write_below(s->bs, false, NULL);
            ret = bdrv_flush(s->bs->file->bs);
            if (ret < 0) {
                error_setg_errno(errp, -ret, "cannot flush the disk");
                return ret;
            }
        }
        S = idx->commit_seq;
        p0 = idx->commit_pos + TT_REC_HEADER;
        if (end_u == p0) {
            return 0;
        }
    }
    n_u = idx->nb_recs - k;
    u = g_memdup2(idx->recs + k, n_u * sizeof(TtRec));
    bases = g_new(TtRec, MAX(n_u, 1));
    /* What is left of the records after S: their base copies */
    idx->nb_recs = k;
    for (size_t i = 0; i < idx->nb_marks; i++) {
        if (idx->marks[i].seq > S) {
            g_free(idx->marks[i].name);
            dropped_marks++;
        } else {
            idx->marks[kept_marks++] = idx->marks[i];
        }
    }
    idx->nb_marks = kept_marks;
    s->recovered = n_u + dropped_marks;
    for (size_t i = 0; i < n_u; i++) {
        if (u[i].type != TT_REC_BASE) {
            continue;
        }
        if (u[i].flags & TT_FLAG_CRC) {
            TtRecord r;
            uint8_t hdr[TT_REC_HEADER];
            const char *why;

            ret = bdrv_pread(s->journal,
                             tt_phys(s, u[i].data_pos - TT_REC_HEADER),
                             TT_REC_HEADER, hdr, 0);
            if (ret >= 0) {
                ret = bdrv_pread(s->journal, tt_phys(s, u[i].data_pos),
                                 u[i].length, buf, 0);
            }
            if (ret < 0) {
                error_setg_errno(errp, -ret, "cannot read the journal");
                return ret;
            }
            if (tt_record_decode(hdr, &s->h, s->disk_size,
                                 u[i].data_pos - TT_REC_HEADER, u[i].seq, &r,
                                 &why) < 0 ||
                tt_crc32c(0, buf, u[i].length) != r.data_crc) {
                continue;   /* torn: its change never reached the disk */
            }
        }
        bases[keep++] = u[i];
        tt_set_based(s, u[i].offset, u[i].length);
        need += tt_room_for(s, u[i].length);
    }
    if (!writable) {
        /* Keep the good base copies where they are, in seq order */
        for (size_t i = 0; i < keep; i++) {
            idx->recs[idx->nb_recs++] = bases[i];
        }
        return 0;
    }
    for (size_t i = 0; i < n_u; i++) {
        if (tt_is_change(u[i].type)) {
            need += tt_room_for(s, u[i].length);
        }
    }

    /* Void [p0, end_u): pads of seq S+1.. there, written last */
    idx->next_seq = S + 1 + (p0 / s->h.ring_size != (end_u - 1) /
                             s->h.ring_size ? 2 : 1);
    if (end_u - s->h.tail + need + 4 * TT_REC_HEADER > s->h.ring_size) {
        /* No room to keep it: start afresh from the disk as it is */
        softdev_alert(s->bs, SOFTDEV_SEVERITY_WARNING, -1, -1, NULL,
                      "the journal has no room to recover the records of "
                      "the crash: history dropped");
        tt_reset_history(s);
        s->h.tail = s->idx.next_pos = end_u;
        return tt_write_header(s);
    }
    for (size_t i = 0; i < keep; i++) {
        TtRecord r = {
            .type = TT_REC_BASE, .flags = bases[i].flags & TT_FLAG_ZERO,
            .offset = bases[i].offset, .length = bases[i].length,
            .aux = s->h.horizon_seq,
            .data_len = (bases[i].flags & TT_FLAG_ZERO) ? 0 : bases[i].length,
        };

        if (r.data_len) {
            ret = bdrv_pread(s->journal, tt_phys(s, bases[i].data_pos),
                             r.data_len, buf, 0);
            if (ret < 0) {
                error_setg_errno(errp, -ret, "cannot read the journal");
                return ret;
            }
        }
        ret = tt_write_record_now(s, &r, buf);
        if (ret < 0) {
            goto fail;
        }
        tt_index_add(idx, &r, NULL, &(const char *){ NULL });
    }
    /* The disk as it is where a lost change may have reached it */
    for (size_t i = 0; i < n_u; i++) {
        uint64_t start, end;

        if (!tt_is_change(u[i].type)) {
            continue;
        }
        start = u[i].offset;
        end = start + u[i].length;
        if (find_next_bit(s->based, s->nb_blocks, start / TT_BLOCK) >=
            DIV_ROUND_UP(end, TT_BLOCK)) {
            continue;   /* nothing based: the change never reached it */
        }
        ret = bdrv_pread(s->bs->file, start, end - start, buf, 0);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "cannot read the disk");
            return ret;
        }
        {
            TtRecord r = {
                .type = TT_REC_DATA, .offset = start, .length = end - start,
                .data_len = end - start,
            };

            ret = tt_write_record_now(s, &r, buf);
            if (ret < 0) {
                goto fail;
            }
            tt_index_add(idx, &r, NULL, &(const char *){ NULL });
            s->resynced_bytes += r.length;
        }
    }
    ret = bdrv_flush(s->journal->bs);
    if (ret < 0) {
        goto fail;
    }
    /* Now the pads that void the records of the crash */
    {
        uint64_t next_pos = idx->next_pos, next_seq = idx->next_seq;

        idx->next_pos = p0;
        idx->next_seq = S + 1;
        while (idx->next_pos < end_u) {
            TtRecord pad = {
                .type = TT_REC_PAD,
                .length = MIN(end_u - idx->next_pos,
                              s->h.ring_size -
                              idx->next_pos % s->h.ring_size),
                .time = t0,     /* not after the records that follow */
            };

            ret = tt_write_record_now(s, &pad, NULL);
            if (ret < 0) {
                goto fail;
            }
        }
        idx->next_pos = next_pos;
        idx->next_seq = next_seq;
    }
    ret = bdrv_flush(s->journal->bs);
    if (ret < 0) {
        goto fail;
    }
    return 0;
fail:
    error_setg_errno(errp, -ret, "cannot write the journal");
    return ret;
}

/* Read both header copies: the valid one of the higher generation */
static int coroutine_mixed_fn GRAPH_RDLOCK
tt_read_header(SoftdevTimetravel *s, int64_t node_size, int *bad_copies,
               const char **why)
{
    g_autofree uint8_t *buf = g_malloc(2 * TT_HEADER_SIZE);
    int best = -1, empty = 0;
    TtHeader h[2];
    int ret = bdrv_pread(s->journal, 0, 2 * TT_HEADER_SIZE, buf, 0);

    if (ret < 0) {
        *why = "cannot read the journal header";
        return ret;
    }
    *bad_copies = 0;
    for (int i = 0; i < 2; i++) {
        const char *w;

        ret = tt_header_decode(buf + i * TT_HEADER_SIZE, TT_HEADER_SIZE,
                               node_size, &h[i], &w);
        if (ret == -ENOENT) {
            empty++;
            continue;
        }
        if (ret < 0) {
            (*bad_copies)++;
            *why = w;
            continue;
        }
        if (best < 0 || h[i].generation > h[best].generation) {
            best = i;
        }
    }
    if (best < 0) {
        return empty == 2 ? -ENOENT : -EINVAL;
    }
    s->h = h[best];
    return 0;
}

int coroutine_mixed_fn GRAPH_RDLOCK
tt_journal_open(SoftdevTimetravel *s, bool writable, Error **errp)
{
    int64_t node_size = bdrv_getlength(s->journal->bs);
    int64_t disk_size = bdrv_getlength(s->bs->file->bs);
    bool check = s->bs->open_flags & BDRV_O_CHECK;
    const char *why = NULL;
    int bad_copies;
    TtScan sc = { 0 };
    bool clean;
    int ret;

    if (node_size < 0 || disk_size < 0) {
        error_setg_errno(errp, -(node_size < 0 ? node_size : disk_size),
                         "cannot get the size of the journal or the disk");
        return node_size < 0 ? node_size : disk_size;
    }
    if ((uint64_t)disk_size > TT_MAX_DISK) {
        error_setg(errp, "the disk is too large for softdev-timetravel");
        return -EFBIG;
    }
    s->disk_size = disk_size;
    s->nb_blocks = DIV_ROUND_UP(disk_size, TT_BLOCK);
    s->based = bitmap_new(MAX(s->nb_blocks, 1));

    ret = tt_read_header(s, node_size, &bad_copies, &why);
    if (ret == -ENOENT) {
        /* Both copies blank: a new journal, if the node is all zeroes */
        ret = tt_node_is_zero(s, node_size);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "cannot read the journal node");
            return ret;
        }
        if (!ret) {
            error_setg(errp, "the journal node '%s' holds data that is not "
                       "a softdev-timetravel journal; give an empty (all "
                       "zeroes) node to start a new journal",
                       s->journal->bs->node_name);
            return -EINVAL;
        }
        if (!writable) {
            error_setg(errp, "the journal node '%s' is empty: open it "
                       "read-write once to start a journal",
                       s->journal->bs->node_name);
            return -EACCES;
        }
        if (tt_header_init(&s->h, node_size, tt_now(), &why) < 0) {
            error_setg(errp, "cannot start a journal on '%s': %s",
                       s->journal->bs->node_name, why);
            return -EINVAL;
        }
        s->h.generation = 0;
        ret = tt_write_header(s);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "cannot write the journal header");
            return ret;
        }
    } else if (ret < 0) {
        error_setg(errp, "'%s' is not a usable softdev-timetravel journal: "
                   "%s", s->journal->bs->node_name, why);
        return ret;
    }

    clean = s->h.flags & TT_HDR_CLEAN;
    tt_index_init(&s->idx, s->h.tail, s->h.tail_seq, s->h.horizon_seq);
    ret = tt_scan(s, &sc, clean ? s->h.head : UINT64_MAX, false);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "cannot read the journal");
        return ret;
    }
    if (!check && (sc.end == TT_SCAN_DAMAGED ||
                   (clean && (s->idx.next_pos != s->h.head ||
                              s->idx.next_seq != s->h.next_seq)))) {
        error_setg(errp, "the journal on '%s' is damaged at log position "
                   "%" PRIu64 " (%s); 'qemu-img check -r all' repairs it",
                   s->journal->bs->node_name,
                   sc.end == TT_SCAN_DAMAGED ? sc.bad_pos : s->idx.next_pos,
                   sc.end == TT_SCAN_DAMAGED ? sc.why : "the log ends early");
        return -EINVAL;
    }
    tt_rebuild_based(s);
    s->written_pos = s->idx.next_pos;
    s->synced_seq = s->flush_recorded = s->idx.flushed_seq;
    if (clean) {
        s->synced_seq = s->flush_recorded = s->idx.next_seq - 1;
    } else if (!check) {
        ret = tt_recover(s, writable, errp);
        if (ret < 0) {
            return ret;
        }
        if (s->recovered) {
            softdev_alert(s->bs, SOFTDEV_SEVERITY_WARNING, -1, -1, NULL,
                          "recovered after a crash: %" PRIu64 " records "
                          "after the last flush voided, %" PRIu64 " bytes "
                          "of the disk recorded as they are",
                          s->recovered, s->resynced_bytes);
        }
    }
    s->written_pos = s->idx.next_pos;
    s->state = writable ? TT_STATE_WRITABLE : TT_STATE_READ_ONLY;
    if (writable && !check) {
        /*
         * Everything so far is in the journal and on the disk: say so, so
         * that a crash recovery leaves it alone.  Until a clean close, a
         * reopen replays and recovers.
         */
        TtRecord f = {
            .type = TT_REC_FLUSH, .offset = s->idx.next_pos,
            .aux = s->idx.next_seq - 1,
        };

        if (s->idx.next_seq - 1 > s->idx.flushed_seq) {
            ret = tt_write_record_now(s, &f, NULL);
            if (ret >= 0) {
                ret = bdrv_flush(s->journal->bs);
            }
            if (ret < 0) {
                error_setg_errno(errp, -ret, "cannot write the journal");
                return ret;
            }
            tt_index_add(&s->idx, &f, NULL, &(const char *){ NULL });
            s->synced_seq = s->flush_recorded = f.aux;
        }
        s->written_pos = s->idx.next_pos;
        s->h.flags &= ~TT_HDR_CLEAN;
        ret = tt_write_header(s);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "cannot write the journal header");
            return ret;
        }
    }
    return 0;
}

void coroutine_mixed_fn GRAPH_RDLOCK tt_journal_close(SoftdevTimetravel *s)
{
    if (s->state == TT_STATE_WRITABLE && !(s->bs->open_flags & BDRV_O_CHECK)) {
        assert(QTAILQ_EMPTY(&s->writes));
        if (bdrv_flush(s->journal->bs) >= 0) {
            s->h.head = s->idx.next_pos;
            s->h.next_seq = s->idx.next_seq;
            s->h.flags |= TT_HDR_CLEAN;
            tt_write_header(s);
        }
    }
    tt_index_free(&s->idx);
    g_free(s->based);
    s->based = NULL;
}

int coroutine_fn GRAPH_RDLOCK
tt_co_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix)
{
    SoftdevTimetravel *s = softdev_opaque(bs);
    int64_t node_size = bdrv_co_getlength(s->journal->bs);
    bool clean = s->h.flags & TT_HDR_CLEAN;
    const char *why = NULL;
    TtScan sc = { 0 };
    TtHeader saved = s->h;
    int bad_copies = 0, ret;
    bool damaged;

    ret = tt_read_header(s, node_size, &bad_copies, &why);
    if (ret < 0) {
        res->check_errors++;
        return ret;
    }
    s->h = saved;
    tt_index_free(&s->idx);
    tt_index_init(&s->idx, s->h.tail, s->h.tail_seq, s->h.horizon_seq);
    ret = tt_scan(s, &sc, clean ? s->h.head : UINT64_MAX, true);
    if (ret < 0) {
        res->check_errors++;
        return ret;
    }
    damaged = sc.end == TT_SCAN_DAMAGED ||
              (clean && (s->idx.next_pos != s->h.head ||
                         s->idx.next_seq != s->h.next_seq));
    if (damaged) {
        fprintf(stderr, "ERROR journal record at log position %" PRIu64
                ": %s\n",
                sc.end == TT_SCAN_DAMAGED ? sc.bad_pos : s->idx.next_pos,
                sc.end == TT_SCAN_DAMAGED ? sc.why : "the log ends early");
        res->corruptions++;
    }
    if (bad_copies) {
        fprintf(stderr, "ERROR a journal header copy is damaged (%s)\n", why);
        res->corruptions += bad_copies;
    }
    res->image_end_offset = s->h.journal_size;
    if (!(fix & BDRV_FIX_ERRORS) || (!damaged && !bad_copies)) {
        return 0;
    }
    if (s->state != TT_STATE_WRITABLE) {
        return 0;
    }
    if (damaged) {
        /*
         * What follows the damage is lost, and with it what the disk
         * changed meanwhile: the history before it no longer tells the
         * past of those bytes.  The disk as it is becomes the oldest point.
         */
        g_autofree uint8_t *zero = g_malloc0(TT_REC_HEADER);

        /* The broken record must not be read as one again */
        ret = bdrv_co_pwrite(s->journal, tt_phys(s, s->idx.next_pos),
                             TT_REC_HEADER, zero, 0);
        if (ret < 0) {
            res->check_errors++;
            return ret;
        }
        tt_reset_history(s);
        fprintf(stderr, "Repaired: the history was dropped; the journal "
                "starts again from the disk as it is\n");
    }
    s->h.head = s->idx.next_pos;
    s->h.next_seq = s->idx.next_seq;
    s->h.flags |= TT_HDR_CLEAN;
    /* Both copies, so that neither is the damaged one */
    ret = tt_write_header(s);
    if (ret >= 0) {
        ret = tt_write_header(s);
    }
    if (ret < 0) {
        res->check_errors++;
        return ret;
    }
    res->corruptions_fixed = res->corruptions;
    res->corruptions = 0;
    return 0;
}
