/*
 * The on-disk format of softdev-timetravel's journal
 * (docs/specs/softdev-timetravel.rst) and the index of its history: two
 * header copies and a ring of records, each a 512-byte header sector and
 * its payload.  Parsing, encoding and the replay of records into the
 * index, without QEMU (plain C and GLib), so that the fuzz target and the
 * unit tests call it directly; tt-journal.c does the I/O.
 *
 * Every decoder checks each field against the header's bounds before the
 * value is used, and says in *@why what it rejected.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SOFTDEV_TT_FORMAT_H
#define SOFTDEV_TT_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TT_MAGIC                "SDTTJRN"       /* and a NUL: 8 bytes */
#define TT_VERSION              1u
#define TT_SECTOR               512u
#define TT_HEADER_SIZE          4096u
#define TT_HEADER_BYTES         160u            /* what its CRC covers */
#define TT_HEADER_OFFSET(i)     ((uint64_t)(i) * TT_HEADER_SIZE)
#define TT_RING_OFFSET          8192u           /* after the two headers */
#define TT_RING_ALIGN           4096u
#define TT_MIN_RING             (48u << 20)
#define TT_MIN_MAX_SIZE         (32u << 20)
#define TT_BLOCK                4096u           /* unit of base copies */
#define TT_REC_HEADER           TT_SECTOR
#define TT_REC_BYTES            72u             /* what its CRC covers */
#define TT_REC_MAGIC            0x43525454u     /* "TTRC" */
#define TT_MAX_DATA             (16u << 20)     /* payload of one record */
#define TT_MAX_NAME             127u            /* a mark's name */
#define TT_MAX_DISK             (1ull << 56)

#define TT_HDR_CLEAN            1u              /* closed: head is valid */

typedef enum TtRecType {
    /*
     * Skip @length bytes: the rest of the ring, or records a recovery
     * after a crash voided
     */
    TT_REC_PAD = 1,
    TT_REC_DATA = 2,        /* [offset, +length) became the payload */
    TT_REC_ZERO = 3,        /* [offset, +length) became zeroes */
    TT_REC_DISCARD = 4,     /* [offset, +length) was discarded (zeroes) */
    /*
     * [offset, +length) as it was at the oldest point (horizon @aux), saved
     * before its first change since: the payload, or zeroes with
     * TT_FLAG_ZERO
     */
    TT_REC_BASE = 5,
    TT_REC_MARK = 6,        /* a named point; the payload is the name */
    /*
     * The journal and the disk hold every record up to seq @aux; the next
     * one is at log position @offset
     */
    TT_REC_FLUSH = 7,
    TT_REC_COMMIT = 8,      /* the TT_FLAG_TXN records before it count */
} TtRecType;

#define TT_FLAG_TXN             1u      /* a revert's: void until COMMIT */
#define TT_FLAG_ZERO            2u      /* BASE: zeroes, no payload */
#define TT_FLAG_CRC             4u      /* data_crc is the payload's */

typedef struct TtHeader {
    uint32_t version;
    uint32_t flags;             /* TT_HDR_* */
    uint64_t generation;        /* the valid copy with the highest wins */
    uint64_t journal_size;      /* bytes of the node the journal uses */
    uint64_t ring_size;         /* bytes of the ring at TT_RING_OFFSET */
    uint64_t tail;              /* log position of the oldest record */
    uint64_t tail_seq;          /* its sequence number */
    uint64_t head;              /* TT_HDR_CLEAN: where the log ends */
    uint64_t next_seq;          /* TT_HDR_CLEAN: the next record's */
    uint64_t horizon_seq;       /* the oldest point one can go back to */
    uint64_t horizon_time;      /* its time (ns since the Unix epoch) */
    uint64_t format_time;
    uint64_t dropped_records;   /* history retention dropped so far */
    uint64_t dropped_marks;
} TtHeader;

/*
 * A record.  Log positions count bytes from the journal's beginning
 * without wrapping; byte p is at TT_RING_OFFSET + p % ring_size of the
 * node.  A record never crosses the end of the ring.
 */
typedef struct TtRecord {
    uint8_t type;               /* TtRecType */
    uint8_t flags;              /* TT_FLAG_* */
    uint64_t seq;               /* consecutive from 1 */
    uint64_t time;              /* ns since the Unix epoch, never falling */
    uint64_t pos;               /* its own log position */
    uint64_t offset, length;    /* of the disk (PAD: length is its size) */
    uint64_t aux;               /* BASE: horizon; FLUSH: synced seq */
    uint32_t data_len;          /* payload bytes after the header sector */
    uint32_t data_crc;          /* TT_FLAG_CRC: CRC-32C of the payload */
} TtRecord;

/* Bytes a record takes in the ring */
static inline uint64_t tt_record_size(const TtRecord *r)
{
    if (r->type == TT_REC_PAD) {
        return r->length;
    }
    return TT_REC_HEADER + (((uint64_t)r->data_len + TT_SECTOR - 1) &
                            ~(uint64_t)(TT_SECTOR - 1));
}

/* Whether a record of this type changes the disk */
static inline bool tt_is_change(uint8_t type)
{
    return type == TT_REC_DATA || type == TT_REC_ZERO ||
           type == TT_REC_DISCARD;
}

uint32_t tt_crc32c(uint32_t crc, const void *buf, size_t len);

/* A fresh header for a journal of @journal_size bytes: 0 or -EINVAL */
int tt_header_init(TtHeader *h, uint64_t journal_size, uint64_t now,
                   const char **why);
/* Encode into TT_HEADER_BYTES of @buf (the rest of the sector: zeroes) */
void tt_header_encode(const TtHeader *h, uint8_t *buf);
/* Decode and check: 0, -ENOENT (no journal: all zeroes) or -EINVAL */
int tt_header_decode(const uint8_t *buf, size_t len, uint64_t node_size,
                     TtHeader *h, const char **why);

/* Encode @r's header sector into @buf (TT_REC_HEADER bytes) */
void tt_record_encode(const TtRecord *r, uint8_t *buf);
/*
 * Decode the header sector @buf of the record expected at log position
 * @pos with sequence number @seq, and check its fields against @h and the
 * disk's @disk_size.  0; -ENOENT if it is not such a record (the log ends
 * there, or a record of an earlier lap of the ring is left); -EINVAL if
 * it is one but broken.
 */
int tt_record_decode(const uint8_t *buf, const TtHeader *h,
                     uint64_t disk_size, uint64_t pos, uint64_t seq,
                     TtRecord *r, const char **why);

/* The history, as replay builds it and the device keeps it */

/* A change or base record, in sequence order */
typedef struct TtRec {
    uint64_t seq;
    uint64_t time;
    uint64_t offset, length;
    uint64_t data_pos;          /* log position of the payload */
    uint8_t type, flags;
} TtRec;

typedef struct TtMark {
    char *name;
    uint64_t seq, time, pos;
} TtMark;

typedef enum TtTxnState {
    TT_TXN_NONE,                /* records count as they come */
    TT_TXN_OPEN,                /* TXN records wait for their COMMIT */
} TtTxnState;

typedef struct TtIndex {
    TtRec *recs;                /* [0, nb_recs) */
    size_t nb_recs, recs_alloc;
    TtMark *marks;              /* by seq */
    size_t nb_marks, marks_alloc;
    uint64_t next_seq;          /* of the next record */
    uint64_t next_pos;          /* log position after the last record */
    uint64_t last_time;
    uint64_t flushed_seq;       /* the newest FLUSH record's */
    uint64_t flushed_pos;       /* where the record after it is */
    uint64_t horizon_seq;       /* BASE records for another are void */
    uint64_t commit_seq, commit_pos;    /* the newest COMMIT record */
    /* Replay: where the open transaction began (its records are void) */
    TtTxnState txn;
    size_t txn_recs;            /* nb_recs when it began */
    uint64_t txn_pos, txn_seq;
} TtIndex;

void tt_index_init(TtIndex *idx, uint64_t tail, uint64_t tail_seq,
                   uint64_t horizon_seq);
void tt_index_free(TtIndex *idx);
/*
 * Replay: add record @r (decoded at idx->next_pos with idx->next_seq)
 * whose payload, for a MARK, is @name.  0, or -EINVAL with *@why if the
 * record contradicts the history (a duplicate mark, a COMMIT without a
 * transaction, ...).
 */
int tt_index_add(TtIndex *idx, const TtRecord *r, const char *name,
                 const char **why);
/*
 * Count base copy @r, appended earlier for the horizon that a compaction
 * has just made the index's (its time is older than the newest record's)
 */
void tt_index_count_base(TtIndex *idx, const TtRecord *r);
/*
 * The same for a record the device just placed in the log (it keeps
 * next_pos and next_seq itself); records come in sequence order.
 */
int tt_index_record(TtIndex *idx, const TtRecord *r, const char *name,
                    const char **why);
/*
 * End of replay: a transaction without its COMMIT is void; the log goes
 * on where it began.
 */
void tt_index_end_replay(TtIndex *idx);
/* A transaction that will not commit: forget its records */
void tt_index_abort_txn(TtIndex *idx);
/* The mark called @name, or NULL */
TtMark *tt_index_find_mark(TtIndex *idx, const char *name);
/*
 * The newest point not after @time: the sequence number of the last
 * record at or before it, or @horizon_seq if there is none.
 */
uint64_t tt_index_seq_at(const TtIndex *idx, uint64_t time,
                         uint64_t horizon_seq);
/* The first record with seq > @seq (nb_recs if none) */
size_t tt_index_after(const TtIndex *idx, uint64_t seq);
/*
 * Compaction moved the oldest point to @seq: drop the records before
 * index @n, every base copy (those of the new point come after) and the
 * marks with seq <= @seq
 */
void tt_index_drop(TtIndex *idx, size_t n, uint64_t seq, size_t *marks);

#endif /* SOFTDEV_TT_FORMAT_H */
