/*
 * softdev-timetravel's journal format and history index (tt-format.h,
 * docs/specs/softdev-timetravel.rst).  Plain C and GLib without QEMU:
 * the fuzz target and the unit tests link it alone (with slog-format.c
 * for the CRC).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <string.h>
#include <glib.h>

#include "tt-format.h"
#include "slog-format.h"

uint32_t tt_crc32c(uint32_t crc, const void *buf, size_t len)
{
    return slog_crc32c(crc, buf, len);
}

static void put32(uint8_t *p, uint32_t v)
{
    v = htole32(v);
    memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
    v = htole64(v);
    memcpy(p, &v, 8);
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return le32toh(v);
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
    return le64toh(v);
}

/*
 * Header layout (little endian): magic[8] version@8 header_size@12
 * generation@16 journal_size@24 ring_size@32 tail@40 tail_seq@48 head@56
 * next_seq@64 horizon_seq@72 horizon_time@80 format_time@88 flags@96
 * reserved@100 dropped_records@104 dropped_marks@112, zeroes to @156,
 * crc@156 over bytes [0, 156).
 */
#define TT_HDR_CRC_AT   (TT_HEADER_BYTES - 4)

int tt_header_init(TtHeader *h, uint64_t journal_size, uint64_t now,
                   const char **why)
{
    uint64_t ring;

    if (journal_size < TT_RING_OFFSET + TT_MIN_RING) {
        *why = "the journal node is smaller than 48 MiB and 8 KiB";
        return -EINVAL;
    }
    ring = (journal_size - TT_RING_OFFSET) & ~(uint64_t)(TT_RING_ALIGN - 1);
    *h = (TtHeader) {
        .version = TT_VERSION,
        .generation = 1,
        .journal_size = TT_RING_OFFSET + ring,
        .ring_size = ring,
        .tail = 0,
        .tail_seq = 1,
        .head = 0,
        .next_seq = 1,
        .horizon_seq = 0,
        .horizon_time = now,
        .format_time = now,
        .flags = TT_HDR_CLEAN,
    };
    return 0;
}

void tt_header_encode(const TtHeader *h, uint8_t *buf)
{
    memset(buf, 0, TT_HEADER_BYTES);
    memcpy(buf, TT_MAGIC, 8);
    put32(buf + 8, h->version);
    put32(buf + 12, TT_HEADER_SIZE);
    put64(buf + 16, h->generation);
    put64(buf + 24, h->journal_size);
    put64(buf + 32, h->ring_size);
    put64(buf + 40, h->tail);
    put64(buf + 48, h->tail_seq);
    put64(buf + 56, h->head);
    put64(buf + 64, h->next_seq);
    put64(buf + 72, h->horizon_seq);
    put64(buf + 80, h->horizon_time);
    put64(buf + 88, h->format_time);
    put32(buf + 96, h->flags);
    put64(buf + 104, h->dropped_records);
    put64(buf + 112, h->dropped_marks);
    put32(buf + TT_HDR_CRC_AT, tt_crc32c(0, buf, TT_HDR_CRC_AT));
}

static bool all_zero(const uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i]) {
            return false;
        }
    }
    return true;
}

int tt_header_decode(const uint8_t *buf, size_t len, uint64_t node_size,
                     TtHeader *h, const char **why)
{
    if (len < TT_HEADER_BYTES) {
        *why = "short header";
        return -EINVAL;
    }
    if (all_zero(buf, TT_HEADER_BYTES)) {
        *why = "no journal header";
        return -ENOENT;
    }
    if (memcmp(buf, TT_MAGIC, 8)) {
        *why = "not a softdev-timetravel journal (bad magic)";
        return -EINVAL;
    }
    if (get32(buf + TT_HDR_CRC_AT) != tt_crc32c(0, buf, TT_HDR_CRC_AT)) {
        *why = "header checksum mismatch";
        return -EINVAL;
    }
    *h = (TtHeader) {
        .version = get32(buf + 8),
        .generation = get64(buf + 16),
        .journal_size = get64(buf + 24),
        .ring_size = get64(buf + 32),
        .tail = get64(buf + 40),
        .tail_seq = get64(buf + 48),
        .head = get64(buf + 56),
        .next_seq = get64(buf + 64),
        .horizon_seq = get64(buf + 72),
        .horizon_time = get64(buf + 80),
        .format_time = get64(buf + 88),
        .flags = get32(buf + 96),
        .dropped_records = get64(buf + 104),
        .dropped_marks = get64(buf + 112),
    };
    if (h->version != TT_VERSION) {
        *why = "unsupported journal version";
        return -EINVAL;
    }
    if (get32(buf + 12) != TT_HEADER_SIZE) {
        *why = "bad header size";
        return -EINVAL;
    }
    if (h->flags & ~TT_HDR_CLEAN) {
        *why = "unknown header flags";
        return -EINVAL;
    }
    if (h->ring_size < TT_MIN_RING || h->ring_size % TT_RING_ALIGN ||
        h->ring_size > (1ull << 60) ||
        h->journal_size != TT_RING_OFFSET + h->ring_size) {
        *why = "bad ring size";
        return -EINVAL;
    }
    if (h->journal_size > node_size) {
        *why = "the journal is larger than its node";
        return -EINVAL;
    }
    /* head and next_seq only count in a clean journal */
    if (h->tail % TT_SECTOR || h->tail > (1ull << 62) ||
        ((h->flags & TT_HDR_CLEAN) &&
         (h->head % TT_SECTOR || h->head < h->tail ||
          h->head - h->tail > h->ring_size))) {
        *why = "bad tail or head";
        return -EINVAL;
    }
    if (h->tail_seq == 0 || h->horizon_seq >= h->tail_seq ||
        h->tail_seq > (1ull << 62) ||
        ((h->flags & TT_HDR_CLEAN) &&
         (h->next_seq < h->tail_seq || h->next_seq > (1ull << 62)))) {
        *why = "bad sequence numbers";
        return -EINVAL;
    }
    return 0;
}

/*
 * Record header layout: magic@0 type@4 flags@5 reserved@6 seq@8 time@16
 * pos@24 offset@32 length@40 aux@48 data_len@56 data_crc@60
 * reserved@64 crc@68 over bytes [0, 68); zeroes to the end of the sector.
 */
#define TT_REC_CRC_AT   (TT_REC_BYTES - 4)

void tt_record_encode(const TtRecord *r, uint8_t *buf)
{
    memset(buf, 0, TT_REC_HEADER);
    put32(buf, TT_REC_MAGIC);
    buf[4] = r->type;
    buf[5] = r->flags;
    put64(buf + 8, r->seq);
    put64(buf + 16, r->time);
    put64(buf + 24, r->pos);
    put64(buf + 32, r->offset);
    put64(buf + 40, r->length);
    put64(buf + 48, r->aux);
    put32(buf + 56, r->data_len);
    put32(buf + 60, r->data_crc);
    put32(buf + TT_REC_CRC_AT, tt_crc32c(0, buf, TT_REC_CRC_AT));
}

int tt_record_decode(const uint8_t *buf, const TtHeader *h,
                     uint64_t disk_size, uint64_t pos, uint64_t seq,
                     TtRecord *r, const char **why)
{
    uint64_t room = h->ring_size - pos % h->ring_size;
    uint8_t allowed;

    if (get32(buf) != TT_REC_MAGIC ||
        get32(buf + TT_REC_CRC_AT) != tt_crc32c(0, buf, TT_REC_CRC_AT)) {
        *why = "no record";
        return -ENOENT;
    }
    *r = (TtRecord) {
        .type = buf[4],
        .flags = buf[5],
        .seq = get64(buf + 8),
        .time = get64(buf + 16),
        .pos = get64(buf + 24),
        .offset = get64(buf + 32),
        .length = get64(buf + 40),
        .aux = get64(buf + 48),
        .data_len = get32(buf + 56),
        .data_crc = get32(buf + 60),
    };
    if (r->pos != pos || r->seq != seq) {
        /* Left from an earlier lap, or never written in this one */
        *why = "a record of an earlier lap of the ring";
        return -ENOENT;
    }
    switch (r->type) {
    case TT_REC_PAD:
        allowed = 0;
        if (r->length < TT_SECTOR || r->length % TT_SECTOR ||
            r->length > room || r->data_len) {
            *why = "a pad record of bad length";
            return -EINVAL;
        }
        break;
    case TT_REC_DATA:
        allowed = TT_FLAG_TXN | TT_FLAG_CRC;
        break;
    case TT_REC_ZERO:
    case TT_REC_DISCARD:
        allowed = TT_FLAG_TXN;
        break;
    case TT_REC_BASE:
        allowed = TT_FLAG_ZERO | TT_FLAG_CRC;
        break;
    case TT_REC_MARK:
        allowed = 0;
        if (r->data_len == 0 || r->data_len > TT_MAX_NAME) {
            *why = "a mark name of bad length";
            return -EINVAL;
        }
        break;
    case TT_REC_FLUSH:
    case TT_REC_COMMIT:
        allowed = 0;
        break;
    default:
        *why = "unknown record type";
        return -EINVAL;
    }
    if (r->flags & ~allowed) {
        *why = "bad record flags";
        return -EINVAL;
    }
    if (tt_is_change(r->type) || r->type == TT_REC_BASE) {
        bool payload = r->type == TT_REC_DATA ||
                       (r->type == TT_REC_BASE &&
                        !(r->flags & TT_FLAG_ZERO));

        if (r->length == 0 || r->length > TT_MAX_DATA ||
            r->offset % TT_SECTOR || r->length % TT_SECTOR ||
            r->offset > disk_size || r->length > disk_size - r->offset) {
            *why = "a record outside the disk";
            return -EINVAL;
        }
        if (r->data_len != (payload ? r->length : 0)) {
            *why = "a payload of the wrong size";
            return -EINVAL;
        }
        if (r->type == TT_REC_BASE && r->aux >= r->seq) {
            *why = "a base record for a later horizon than itself";
            return -EINVAL;
        }
    } else if (r->type == TT_REC_MARK || r->type == TT_REC_FLUSH ||
               r->type == TT_REC_COMMIT) {
        if ((r->type == TT_REC_FLUSH ? r->offset % TT_SECTOR ||
             r->offset > r->pos : r->offset != 0) || r->length ||
            (r->type == TT_REC_MARK ? 0 : r->data_len)) {
            *why = "bad fields in a mark, flush or commit record";
            return -EINVAL;
        }
        if (r->type == TT_REC_FLUSH && r->aux >= r->seq) {
            *why = "a flush record for a later record than itself";
            return -EINVAL;
        }
    }
    if (r->type != TT_REC_PAD && tt_record_size(r) > room) {
        *why = "a record that crosses the end of the ring";
        return -EINVAL;
    }
    return 0;
}

void tt_index_init(TtIndex *idx, uint64_t tail, uint64_t tail_seq,
                   uint64_t horizon_seq)
{
    *idx = (TtIndex) {
        .next_seq = tail_seq,
        .next_pos = tail,
        .flushed_seq = tail_seq - 1,
        .flushed_pos = tail,
        .horizon_seq = horizon_seq,
        .txn = TT_TXN_NONE,
    };
}

void tt_index_free(TtIndex *idx)
{
    for (size_t i = 0; i < idx->nb_marks; i++) {
        g_free(idx->marks[i].name);
    }
    g_free(idx->marks);
    g_free(idx->recs);
    memset(idx, 0, sizeof(*idx));
}

TtMark *tt_index_find_mark(TtIndex *idx, const char *name)
{
    for (size_t i = 0; i < idx->nb_marks; i++) {
        if (!strcmp(idx->marks[i].name, name)) {
            return &idx->marks[i];
        }
    }
    return NULL;
}

static void tt_index_push(TtIndex *idx, const TtRecord *r)
{
    if (idx->nb_recs == idx->recs_alloc) {
        idx->recs_alloc = MAX(1024, idx->recs_alloc * 2);
        idx->recs = g_renew(TtRec, idx->recs, idx->recs_alloc);
    }
    idx->recs[idx->nb_recs++] = (TtRec) {
        .seq = r->seq, .time = r->time, .offset = r->offset,
        .length = r->length, .data_pos = r->pos + TT_REC_HEADER,
        .type = r->type, .flags = r->flags,
    };
}

int tt_index_record(TtIndex *idx, const TtRecord *r, const char *name,
                    const char **why)
{
    bool txn = r->flags & TT_FLAG_TXN;

    if (r->time < idx->last_time) {
        *why = "a record older than the one before it";
        return -EINVAL;
    }
    if (idx->txn == TT_TXN_OPEN && !txn && r->type != TT_REC_COMMIT &&
        r->type != TT_REC_PAD) {
        /* The revert stopped before its commit: it never happened */
        tt_index_abort_txn(idx);
    }
    switch (r->type) {
    case TT_REC_PAD:
    case TT_REC_FLUSH:
        if (r->type == TT_REC_FLUSH && r->aux > idx->flushed_seq) {
            if (r->offset < idx->flushed_pos) {
                *why = "a flush record before the one it follows";
                return -EINVAL;
            }
            idx->flushed_seq = r->aux;
            idx->flushed_pos = r->offset;
        }
        break;
    case TT_REC_COMMIT:
        if (idx->txn != TT_TXN_OPEN) {
            *why = "a commit record without a transaction";
            return -EINVAL;
        }
        idx->txn = TT_TXN_NONE;
        idx->commit_seq = r->seq;
        idx->commit_pos = r->pos;
        break;
    case TT_REC_MARK:
        if (strlen(name) != r->data_len) {
            *why = "a mark name with a NUL";
            return -EINVAL;
        }
        if (tt_index_find_mark(idx, name)) {
            *why = "two marks of the same name";
            return -EINVAL;
        }
        if (idx->nb_marks == idx->marks_alloc) {
            idx->marks_alloc = MAX(16, idx->marks_alloc * 2);
            idx->marks = g_renew(TtMark, idx->marks, idx->marks_alloc);
        }
        idx->marks[idx->nb_marks++] = (TtMark) {
            .name = g_strdup(name), .seq = r->seq, .time = r->time,
            .pos = r->pos,
        };
        break;
    default:
        if (r->type == TT_REC_BASE && r->aux != idx->horizon_seq) {
            /*
             * Only the base copies for the oldest point count: an earlier
             * one's went stale when compaction moved it (it copied what
             * it needs anew); a later one's are an unfinished
             * compaction's
             */
            break;
        }
        if (txn && idx->txn == TT_TXN_NONE) {
            idx->txn = TT_TXN_OPEN;
            idx->txn_recs = idx->nb_recs;
            idx->txn_pos = r->pos;
            idx->txn_seq = r->seq;
        }
        tt_index_push(idx, r);
        break;
    }
    idx->last_time = r->time;
    return 0;
}

void tt_index_count_base(TtIndex *idx, const TtRecord *r)
{
    assert(r->type == TT_REC_BASE && r->aux == idx->horizon_seq);
    tt_index_push(idx, r);
}

int tt_index_add(TtIndex *idx, const TtRecord *r, const char *name,
                 const char **why)
{
    int ret = tt_index_record(idx, r, name, why);

    if (ret == 0) {
        idx->next_seq = r->seq + 1;
        idx->next_pos = r->pos + tt_record_size(r);
    }
    return ret;
}

void tt_index_abort_txn(TtIndex *idx)
{
    if (idx->txn == TT_TXN_OPEN) {
        idx->nb_recs = idx->txn_recs;
        idx->txn = TT_TXN_NONE;
    }
}

void tt_index_end_replay(TtIndex *idx)
{
    if (idx->txn == TT_TXN_OPEN) {
        idx->nb_recs = idx->txn_recs;
        idx->next_pos = idx->txn_pos;
        idx->next_seq = idx->txn_seq;
        idx->txn = TT_TXN_NONE;
    }
}

uint64_t tt_index_seq_at(const TtIndex *idx, uint64_t time,
                         uint64_t horizon_seq)
{
    size_t lo = 0, hi = idx->nb_recs;
    uint64_t best = horizon_seq;

    /* Records' times never fall: the last one at or before @time */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (idx->recs[mid].time <= time) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo) {
        best = MAX(best, idx->recs[lo - 1].seq);
    }
    for (size_t i = 0; i < idx->nb_marks; i++) {
        if (idx->marks[i].time <= time && idx->marks[i].seq > best) {
            best = idx->marks[i].seq;
        }
    }
    return best;
}

size_t tt_index_after(const TtIndex *idx, uint64_t seq)
{
    size_t lo = 0, hi = idx->nb_recs;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (idx->recs[mid].seq <= seq) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

void tt_index_drop(TtIndex *idx, size_t n, uint64_t seq, size_t *marks)
{
    size_t keep = 0;

    /* The records before @n, and the base copies for the old horizon */
    for (size_t i = n; i < idx->nb_recs; i++) {
        if (idx->recs[i].type != TT_REC_BASE) {
            idx->recs[keep++] = idx->recs[i];
        }
    }
    idx->nb_recs = keep;
    keep = 0;
    if (idx->txn == TT_TXN_OPEN) {
        idx->txn_recs -= MIN(n, idx->txn_recs);
    }
    for (size_t i = 0; i < idx->nb_marks; i++) {
        if (idx->marks[i].seq <= seq) {
            g_free(idx->marks[i].name);
        } else {
            idx->marks[keep++] = idx->marks[i];
        }
    }
    *marks = idx->nb_marks - keep;
    idx->nb_marks = keep;
}
