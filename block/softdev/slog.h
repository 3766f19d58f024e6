/*
 * The log-structured image engine of softdev's format-owning soft devices
 * (softdev-compress, softdev-cas): a map from guest clusters to records in a log of
 * segments on the node below, checkpoints, crash recovery, free-space
 * accounting and compaction.  The format is slog-format.h's; the soft
 * device decides what a record's payload is.
 *
 * Crash consistency: records are written in sequence-number order as the
 * log goes, a write is acknowledged (and enters the map) only once every
 * record before it is written, so a completed flush covers a prefix of
 * the log, which replay after a crash finds again.  A checkpoint writes
 * the map into the map area the newest checkpoint does not use, then the
 * other slot; segments whose records all died become free only then.
 *
 * One AioContext: the node's requests run in one thread.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SOFTDEV_SLOG_H
#define SOFTDEV_SLOG_H

#include "qemu/coroutine.h"
#include "qemu/queue.h"
#include "block/block_int.h"
#include "softdev/softdev.h"
#include "slog-format.h"

typedef enum SlogSegState {
    SLOG_SEG_FREE,          /* in the free list of the last checkpoint */
    SLOG_SEG_HEAD,          /* the log is filling it */
    SLOG_SEG_FULL,          /* filled; free at a checkpoint once dead */
} SlogSegState;

typedef struct SlogSegment {
    uint64_t live;          /* bytes of records the map refers to */
    uint8_t state;          /* SlogSegState */
} SlogSegment;

typedef enum SlogState {
    SLOG_STATE_READ_ONLY,
    SLOG_STATE_WRITABLE,
    /* A log write failed: the log has a hole, so nothing is written more */
    SLOG_STATE_FAILED,
} SlogState;

typedef enum SlogBatchState {
    SLOG_BATCH_BUILDING,
    SLOG_BATCH_WRITING,
    SLOG_BATCH_WRITTEN,     /* waits for the batches before it */
    SLOG_BATCH_APPLIED,     /* in the map; the write may complete */
    SLOG_BATCH_FAILED,
} SlogBatchState;

/* What a record does to the map once it is in the log */
typedef struct SlogUpdate {
    uint64_t cluster;
    uint64_t entry;         /* where the data record is (DATA, REF) */
    uint64_t src;           /* MOVE: applies only if the map still says so */
    /* DATA: its extra bytes (in the record, valid while it is applied) */
    const uint8_t *extra;
    uint32_t count;         /* ZERO: clusters */
    uint8_t type;           /* SlogRecordType; a REF record's pairs are one
                             * update each */
    uint8_t flags;          /* SLOG_REC_MOVE */
} SlogUpdate;

typedef struct Slog Slog;

/*
 * What a soft device on the engine tells it (slog_open()).  Its state
 * begins with its Slog, so that slog-dev.c's callbacks find it.
 */
typedef struct SlogOps {
    const char *unit;       /* what a cluster is called in messages */
    /*
     * Decode cluster @cl's record @rec_buf (map entry @e) into @out (a
     * whole cluster): 0, or -EIO with an alert.  @check: for qemu-img
     * check, which checks everything it can (a hash, say).
     */
    int (*decode)(BlockDriverState *bs, uint64_t cl, uint64_t e,
                  const uint8_t *rec_buf, uint8_t *out, bool check);
    /*
     * Log clusters [@cl, @end) of @req: its data, or zeroes without
     * @req->qiov (write-zeroes, discard).
     */
    int coroutine_fn GRAPH_RDLOCK (*co_log)(BlockDriverState *bs,
                                            SoftdevRequest *req,
                                            uint64_t cl, uint64_t end);

    /*
     * Images whose records can be shared (SLOG_ALG_SHA256: several
     * clusters refer to one record); NULL otherwise.  Map entry @e gains
     * (@delta 1) or loses (-1) a reference.  @extra is the record's extra
     * bytes where the engine has them (from the map area at open, from a
     * data record's payload), else NULL.  Returns the references @e has
     * now: the engine counts the record's bytes as live while it has any.
     */
    uint64_t (*ref)(Slog *s, uint64_t e, int delta, const uint8_t *extra);
    /* The extra bytes a checkpoint stores beside map entry @e */
    void (*get_extra)(Slog *s, uint64_t e, uint8_t *extra);
    /*
     * A checkpoint is durable and the free segments are frozen: records
     * without references are garbage now (their segment may be reused).
     */
    void (*checkpointed)(Slog *s);
} SlogOps;

/*
 * Records appended together, in one write at consecutive offsets inside
 * one segment.  Build with slog_batch_begin(), slog_batch_reserve() and
 * slog_batch_add(), then slog_co_batch_submit().
 */
typedef struct SlogBatch {
    SlogBatchState state;
    uint8_t *buf;
    size_t cap, len;
    uint64_t offset;        /* file offset of buf[0] */
    uint64_t first_seq, end_seq;
    SlogUpdate *updates;
    unsigned nb_updates, updates_alloc;
    int ret;
    QTAILQ_ENTRY(SlogBatch) next;
} SlogBatch;

struct Slog {
    BlockDriverState *bs;
    BdrvChild *file;
    const SlogOps *ops;     /* the soft device's */
    uint8_t *cluster_buf;   /* a cluster's bytes, used without yielding */
    SlogState state;
    SlogHeader h;
    SlogSlot slot;          /* the newest checkpoint */
    unsigned slot_index;    /* the slot holding it */

    uint64_t *map;          /* h.nb_clusters entries */
    uint64_t nb_map_blocks;
    unsigned long *dirty[2];/* map blocks area i lacks */

    uint64_t nb_segments;
    SlogSegment *segs;
    uint64_t segs_alloc;
    uint64_t *free_list;    /* ascending, frozen at the last checkpoint */
    uint64_t nb_free, free_next;
    uint64_t head_seg;
    uint32_t head_off;

    uint64_t next_seq;
    uint32_t epoch;
    QTAILQ_HEAD(, SlogBatch) inflight;  /* in sequence order */
    CoQueue applied;
    /* Requests hold it shared; checkpoints exclusively */
    CoRwlock lock;

    /* Statistics */
    uint64_t live_bytes;    /* sum of segs[].live */
    uint64_t mapped;        /* clusters with data */
    uint64_t bad;           /* entries that failed their check at open */
    uint64_t log_since_checkpoint;
    uint64_t checkpoints;
    uint64_t replayed;      /* records replayed at open */
    uint64_t released;      /* bytes of segments that became free */
};

/* A cluster's record size can only be known after compressing */
#define SLOG_BATCH_CAP      (1 * MiB + 64 * KiB)

int coroutine_mixed_fn GRAPH_RDLOCK
slog_open(Slog *s, BlockDriverState *bs, BdrvChild *file, const char *magic,
          const SlogOps *ops, bool writable, Error **errp);
/* Checkpoints (clean) if writable; then frees everything. */
void coroutine_mixed_fn GRAPH_RDLOCK slog_close(Slog *s);

/* Write a fresh image on @file (the format's create) */
int coroutine_fn GRAPH_UNLOCKED
slog_co_format(BlockBackend *blk, const SlogHeader *h, Error **errp);

/*
 * Writing: take the lock shared around building and submitting batches
 * (slog_co_write_begin/end), so that no checkpoint runs in between.
 * slog_co_write_end() may run a checkpoint that is due.
 */
int coroutine_fn slog_co_write_begin(Slog *s);
void coroutine_fn GRAPH_RDLOCK slog_co_write_end(Slog *s);

void slog_batch_begin(Slog *s, SlogBatch *b, uint8_t *buf, size_t cap);
/*
 * Room for a record with up to @max_payload bytes of payload, or NULL if
 * the batch is full (submit it and begin another).  The payload goes at
 * the returned pointer + SLOG_RECORD_HEADER.
 */
uint8_t *slog_batch_reserve(Slog *s, SlogBatch *b, uint32_t max_payload);
/*
 * Complete the reserved record with @rec (seq, epoch and size are set).
 * Returns the map entry of the record.
 */
uint64_t slog_batch_add(Slog *s, SlogBatch *b, SlogRecord *rec);
/*
 * Write @b, wait for the batches before it, apply it to the map.  0 or
 * -errno (then the node is SLOG_STATE_FAILED).  Frees the updates.
 */
int coroutine_fn GRAPH_RDLOCK slog_co_batch_submit(Slog *s, SlogBatch *b);

/* Whether map entry @e refers to a record */
static inline bool slog_entry_valid(uint64_t e)
{
    return e && e != SLOG_ENTRY_BAD;
}

/* Close the head segment (a pad record); the log goes on in the next */
int coroutine_fn GRAPH_RDLOCK slog_co_switch_head(Slog *s);

/* Reading: the lock shared, so no segment is reused meanwhile */
void coroutine_fn slog_co_read_begin(Slog *s);
void coroutine_fn slog_co_read_end(Slog *s);

/*
 * A checkpoint now (clean: and no record follows it).  Coroutine version
 * takes the lock exclusively.  0 or -errno.
 */
int coroutine_fn GRAPH_RDLOCK slog_co_checkpoint(Slog *s, bool clean);

/*
 * Compaction: move the live records of segments with dead space into
 * free segments (lowest first), checkpoint, give the free segments back
 * to the node below (discard) and truncate free segments at the end.
 * *@moved and *@reclaimed get bytes.  0 or -errno.
 */
int coroutine_fn GRAPH_RDLOCK
slog_co_compact(Slog *s, uint64_t *moved, uint64_t *reclaimed, Error **errp);

/* Rewrite the header from s->h (the default level changed) */
int coroutine_fn GRAPH_RDLOCK slog_co_write_header(Slog *s);

/* Bytes of the node below the data area of @s ends at */
uint64_t slog_file_end(Slog *s);
/* Bytes of the data area that no live record uses */
uint64_t slog_free_bytes(Slog *s);
/* Clusters whose record does not follow the previous cluster's */
uint64_t slog_fragmented(Slog *s);

/* The bytes of cluster @cl that @req covers: [*skip, *skip + *len) */
static inline size_t slog_request_part(Slog *s, SoftdevRequest *req,
                                       uint64_t cl, uint32_t *skip,
                                       uint32_t *len)
{
    uint32_t cs = s->h.cluster_size;
    uint64_t start = MAX(cl * cs, (uint64_t)req->offset);
    uint64_t end = MIN((cl + 1) * cs, (uint64_t)(req->offset + req->bytes));

    *skip = start - cl * cs;
    *len = end - start;
    return req->qiov_offset + (start - req->offset);
}

/* @len bytes at @offset of @qiov if they are in one piece of it, or NULL */
static inline uint8_t *slog_iov_ptr(QEMUIOVector *qiov, size_t offset,
                                    size_t len)
{
    for (int i = 0; i < qiov->niov; i++) {
        if (offset < qiov->iov[i].iov_len) {
            return offset + len <= qiov->iov[i].iov_len ?
                   (uint8_t *)qiov->iov[i].iov_base + offset : NULL;
        }
        offset -= qiov->iov[i].iov_len;
    }
    return NULL;
}

/*
 * Cluster @cl of write @req's data in one piece: in the request's buffer
 * where it is contiguous there, else gathered into s->cluster_buf (valid
 * until the caller yields)
 */
const uint8_t *slog_request_cluster(Slog *s, SoftdevRequest *req,
                                    uint64_t cl);

/* Read the raw record of map entry @e into @buf (slog_entry_size(e)) */
int coroutine_fn GRAPH_RDLOCK
slog_co_read_record(Slog *s, uint64_t e, uint8_t *buf);

/* Inside the engine: slog-map.c, for slog.c */
void slog_apply(Slog *s, const SlogUpdate *u);
/* Read map area @area into s->map (and its extra bytes); 0 or -errno */
int coroutine_mixed_fn GRAPH_RDLOCK slog_map_read(Slog *s, unsigned area);
/* Write the map blocks area @area lacks (and their extra bytes) */
int coroutine_mixed_fn GRAPH_RDLOCK slog_map_write(Slog *s, unsigned area);

/*
 * slog-dev.c: the SoftdevDriver callbacks of a soft device on the engine
 * (its state begins with its Slog)
 */
void slog_dev_refresh_limits(BlockDriverState *bs, Error **errp);
int64_t slog_dev_getlength(BlockDriverState *bs);
int coroutine_fn slog_dev_co_get_info(BlockDriverState *bs,
                                      BlockDriverInfo *bdi);
int coroutine_fn GRAPH_RDLOCK
slog_dev_co_compact(BlockDriverState *bs, SoftdevCompactResult *res,
                    Error **errp);
int coroutine_fn GRAPH_RDLOCK
slog_dev_co_request(BlockDriverState *bs, SoftdevRequest *req,
                    SoftdevNextFn *next);
int coroutine_fn GRAPH_RDLOCK
slog_dev_co_check(BlockDriverState *bs, BdrvCheckResult *res,
                  BdrvCheckMode fix);

#endif /* SOFTDEV_SLOG_H */
