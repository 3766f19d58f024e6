/*
 * The log-structured image engine (slog.h): segments, log batches,
 * checkpoints and replay; the map is in slog-map.c, compaction in
 * slog-compact.c.  docs/specs/softdev-compress.rst
 * describes the format and why each step is in the order it is.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bitmap.h"
#include "qemu/error-report.h"
#include "qemu/memalign.h"
#include "system/block-backend.h"
#include "softdev/softdev.h"
#include "slog.h"
#include "trace/trace-block_softdev.h"

/* Log bytes after which a write runs a checkpoint (bounds replay time) */
#define SLOG_CHECKPOINT_LOG     (32 * MiB)

static void slog_segs_grow(Slog *s, uint64_t nb)
{
    if (nb > s->segs_alloc) {
        uint64_t n = MAX(nb, s->segs_alloc * 2);

        s->segs = g_renew(SlogSegment, s->segs, n);
        memset(s->segs + s->segs_alloc, 0,
               (n - s->segs_alloc) * sizeof(*s->segs));
        s->segs_alloc = n;
    }
}

/* The next segment the log fills: the free list's, then new ones */
static void slog_next_segment(Slog *s)
{
    s->segs[s->head_seg].state = SLOG_SEG_FULL;
    if (s->free_next < s->nb_free) {
        s->head_seg = s->free_list[s->free_next++];
    } else {
        s->head_seg = s->nb_segments++;
        slog_segs_grow(s, s->nb_segments);
    }
    s->segs[s->head_seg].state = SLOG_SEG_HEAD;
    s->head_off = 0;
}

/*
 * Freeze the free list: every segment but the head that holds no live
 * record, ascending.  Replay computes the same list from the map a
 * checkpoint stored, so it follows the log into the same segments.
 */
static void slog_freeze_free_list(Slog *s)
{
    s->nb_free = 0;
    s->free_next = 0;
    s->free_list = g_renew(uint64_t, s->free_list, MAX(s->nb_segments, 1));
    for (uint64_t i = 0; i < s->nb_segments; i++) {
        if (i == s->head_seg) {
            s->segs[i].state = SLOG_SEG_HEAD;
        } else if (!s->segs[i].live) {
            s->segs[i].state = SLOG_SEG_FREE;
            s->free_list[s->nb_free++] = i;
        } else {
            s->segs[i].state = SLOG_SEG_FULL;
        }
    }
}

uint64_t slog_file_end(Slog *s)
{
    return slog_segment_offset(&s->h, s->nb_segments);
}

uint64_t slog_free_bytes(Slog *s)
{
    return s->nb_segments * s->h.segment_size - s->live_bytes;
}

uint64_t slog_fragmented(Slog *s)
{
    uint64_t n = 0, prev_end = 0;

    for (uint64_t c = 0; c < s->h.nb_clusters; c++) {
        uint64_t e = s->map[c];

        if (!slog_entry_valid(e)) {
            continue;
        }
        if (prev_end && slog_entry_offset(e) != prev_end) {
            n++;
        }
        prev_end = slog_entry_offset(e) + slog_entry_size(e);
    }
    return n;
}

/* Batches */

void slog_batch_begin(Slog *s, SlogBatch *b, uint8_t *buf, size_t cap)
{
    *b = (SlogBatch) {
        .state = SLOG_BATCH_BUILDING,
        .buf = buf,
        .cap = cap,
        .offset = slog_segment_offset(&s->h, s->head_seg) + s->head_off,
        .first_seq = s->next_seq,
        .end_seq = s->next_seq,
    };
}

static void slog_batch_append(Slog *s, SlogBatch *b, SlogRecord *rec)
{
    rec->seq = s->next_seq++;
    rec->epoch = s->epoch;
    rec->size = slog_record_size(rec->payload_len);
    slog_record_encode(rec, b->buf + b->len);
    b->len += rec->size;
    s->head_off += rec->size;
    b->end_seq = s->next_seq;
}

uint8_t *slog_batch_reserve(Slog *s, SlogBatch *b, uint32_t max_payload)
{
    uint32_t need = slog_record_size(max_payload);

    assert(b->state == SLOG_BATCH_BUILDING && need <= s->h.max_record);
    /* Once the log has moved on to the next segment, the batch is closed */
    if (b->len && b->offset + b->len !=
        slog_segment_offset(&s->h, s->head_seg) + s->head_off) {
        return NULL;
    }
    /* Room for a pad record too, always */
    if (b->len + need + SLOG_SECTOR > b->cap) {
        assert(b->len);
        return NULL;
    }
    if (s->head_off + need > s->h.segment_size) {
        /* Close the segment: replay then knows to go on in the next. */
        if (s->head_off < s->h.segment_size) {
            SlogRecord pad = { .type = SLOG_REC_PAD };

            slog_batch_append(s, b, &pad);
        }
        slog_next_segment(s);
        if (b->len) {
            return NULL;
        }
        b->offset = slog_segment_offset(&s->h, s->head_seg);
    }
    return b->buf + b->len;
}

/*
 * Call @fn with what record @rec, stored at file offset @offset with
 * @payload, does to the map: one update, or one per pair of a REF record.
 */
static void slog_record_updates(Slog *s, const SlogRecord *rec,
                                uint64_t offset, const uint8_t *payload,
                                void (*fn)(Slog *s, const SlogUpdate *u,
                                           void *opaque),
                                void *opaque)
{
    SlogUpdate u = {
        .cluster = rec->cluster,
        .count = rec->count,
        .type = rec->type,
        .flags = rec->flags,
        .src = rec->src,
        .entry = slog_entry_make(offset, slog_record_size(rec->payload_len)),
        .extra = rec->type == SLOG_REC_DATA && s->h.extra_size ? payload
                                                               : NULL,
    };

    if (rec->type == SLOG_REC_PAD) {
        return;
    }
    if (rec->type != SLOG_REC_REF) {
        fn(s, &u, opaque);
        return;
    }
    for (uint32_t i = 0; i < rec->count; i++) {
        u.cluster = slog_ref_cluster(payload, i);
        u.entry = slog_ref_entry(payload, i);
        fn(s, &u, opaque);
    }
}

static void slog_batch_push(Slog *s, const SlogUpdate *u, void *opaque)
{
    SlogBatch *b = opaque;

    if (b->nb_updates == b->updates_alloc) {
        b->updates_alloc = MAX(16, b->updates_alloc * 2);
        b->updates = g_renew(SlogUpdate, b->updates, b->updates_alloc);
    }
    b->updates[b->nb_updates++] = *u;
}

uint64_t slog_batch_add(Slog *s, SlogBatch *b, SlogRecord *rec)
{
    uint64_t offset = b->offset + b->len;

    slog_batch_append(s, b, rec);
    slog_record_updates(s, rec, offset, b->buf + offset - b->offset +
                        SLOG_RECORD_HEADER, slog_batch_push, b);
    return slog_entry_make(offset, rec->size);
}

int coroutine_fn GRAPH_RDLOCK slog_co_batch_submit(Slog *s, SlogBatch *b)
{
    SlogBatch *first;
    int ret;

    assert(b->state == SLOG_BATCH_BUILDING);
    b->state = SLOG_BATCH_WRITING;
    QTAILQ_INSERT_TAIL(&s->inflight, b, next);
    ret = b->len ? bdrv_co_pwrite(s->file, b->offset, b->len, b->buf, 0) : 0;
    if (ret == -EINVAL &&
        b->offset + b->len > (uint64_t)bdrv_co_getlength(s->file->bs)) {
        /* A node below that cannot grow (an NBD export) is full */
        ret = -ENOSPC;
    }
    b->ret = ret;
    b->state = ret < 0 ? SLOG_BATCH_FAILED : SLOG_BATCH_WRITTEN;
    if (ret < 0 && s->state == SLOG_STATE_WRITABLE) {
        s->state = SLOG_STATE_FAILED;
        softdev_alert(s->bs, SOFTDEV_SEVERITY_CRITICAL, -1, -1, NULL,
                      "log write failed (%s%s): the image takes no more "
                      "writes until it is reopened", strerror(-ret),
                      ret == -ENOSPC ? ": the node below cannot grow" : "");
    }

    /* Apply, in sequence order, every batch whose turn has come. */
    while ((first = QTAILQ_FIRST(&s->inflight)) &&
           first->state != SLOG_BATCH_WRITING) {
        QTAILQ_REMOVE(&s->inflight, first, next);
        if (first->state == SLOG_BATCH_WRITTEN &&
            s->state == SLOG_STATE_WRITABLE) {
            for (unsigned i = 0; i < first->nb_updates; i++) {
                slog_apply(s, &first->updates[i]);
            }
            first->state = SLOG_BATCH_APPLIED;
            s->log_since_checkpoint += first->len;
        } else {
            /* After a hole in the log nothing may count as written. */
            first->state = SLOG_BATCH_FAILED;
            first->ret = first->ret < 0 ? first->ret : -EIO;
        }
    }
    qemu_co_queue_restart_all(&s->applied);
    while (b->state == SLOG_BATCH_WRITTEN) {
        qemu_co_queue_wait(&s->applied, NULL);
    }
    g_free(b->updates);
    b->updates = NULL;
    return b->state == SLOG_BATCH_APPLIED ? 0 : b->ret;
}

static int coroutine_mixed_fn GRAPH_RDLOCK
slog_checkpoint_locked(Slog *s, bool clean);

int coroutine_fn slog_co_write_begin(Slog *s)
{
    qemu_co_rwlock_rdlock(&s->lock);
    if (s->state != SLOG_STATE_WRITABLE) {
        qemu_co_rwlock_unlock(&s->lock);
        return s->state == SLOG_STATE_READ_ONLY ? -EACCES : -EIO;
    }
    return 0;
}

void coroutine_fn GRAPH_RDLOCK slog_co_write_end(Slog *s)
{
    qemu_co_rwlock_unlock(&s->lock);
    if (s->log_since_checkpoint >= SLOG_CHECKPOINT_LOG) {
        qemu_co_rwlock_wrlock(&s->lock);
        /* Another writer may have run it meanwhile */
        if (s->log_since_checkpoint >= SLOG_CHECKPOINT_LOG) {
            slog_checkpoint_locked(s, false);
        }
        qemu_co_rwlock_unlock(&s->lock);
    }
}

void coroutine_fn slog_co_read_begin(Slog *s)
{
    qemu_co_rwlock_rdlock(&s->lock);
}

void coroutine_fn slog_co_read_end(Slog *s)
{
    qemu_co_rwlock_unlock(&s->lock);
}

int coroutine_fn GRAPH_RDLOCK
slog_co_read_record(Slog *s, uint64_t e, uint8_t *buf)
{
    return bdrv_co_pread(s->file, slog_entry_offset(e), slog_entry_size(e),
                         buf, 0);
}

int coroutine_fn GRAPH_RDLOCK slog_co_write_header(Slog *s)
{
    uint8_t *buf = qemu_blockalign(s->file->bs, SLOG_HEADER_SIZE);
    int ret;

    slog_header_encode(&s->h, buf);
    ret = bdrv_co_pwrite(s->file, 0, SLOG_HEADER_SIZE, buf, 0);
    qemu_vfree(buf);
    return ret < 0 ? ret : bdrv_co_flush(s->file->bs);
}

/* Checkpoints */

/*
 * Give segments that died since the last checkpoint back to the node
 * below (they hold nothing the newest checkpoint needs any more), cut
 * free segments off the end, freeze the new free list.
 */
static void coroutine_mixed_fn GRAPH_RDLOCK
slog_release_segments(Slog *s, uint64_t keep)
{
    int64_t len;

    for (uint64_t i = 0; i < s->nb_segments; i++) {
        if (s->segs[i].state == SLOG_SEG_FULL && !s->segs[i].live &&
            i != s->head_seg) {
            s->released += s->h.segment_size;
        }
        if (i < keep && s->segs[i].state == SLOG_SEG_FULL &&
            !s->segs[i].live && i != s->head_seg) {
            /* Advisory: a failed discard leaves the old bytes there */
            bdrv_pdiscard(s->file, slog_segment_offset(&s->h, i),
                          s->h.segment_size);
        }
    }
    if (keep < s->nb_segments) {
        s->nb_segments = keep;
        len = bdrv_getlength(s->file->bs);
        if (len > (int64_t)slog_file_end(s)) {
            bdrv_truncate(s->file, slog_file_end(s), false, PREALLOC_MODE_OFF,
                          0, NULL);
        }
    }
    slog_freeze_free_list(s);
    if (s->ops->checkpointed) {
        s->ops->checkpointed(s);
    }
}

static int coroutine_mixed_fn GRAPH_RDLOCK
slog_checkpoint_locked(Slog *s, bool clean)
{
    uint8_t slot_buf[SLOG_SECTOR];
    SlogSlot slot = s->slot;
    unsigned area = s->slot.map_area;
    uint64_t keep;
    SlogSlot check;
    const char *why;
    int ret;

    assert(QTAILQ_EMPTY(&s->inflight));
    if (s->state != SLOG_STATE_WRITABLE) {
        return -EIO;
    }
    if (s->head_off >= s->h.segment_size) {
        /*
         * The head segment is exactly full: the slot names where the next
         * record goes, in the next segment (a slot's head offset is less
         * than the segment size)
         */
        slog_next_segment(s);
    }
    keep = s->nb_segments;
    while (keep > 0 && keep - 1 != s->head_seg && !s->segs[keep - 1].live) {
        keep--;
    }
    if (!bitmap_empty(s->dirty[area], s->nb_map_blocks)) {
        area ^= 1;
        ret = slog_map_write(s, area);
        if (ret < 0) {
            goto fail;
        }
        ret = bdrv_flush(s->file->bs);
        if (ret < 0) {
            goto fail;
        }
    }
    slot = (SlogSlot) {
        .generation = s->slot.generation + 1,
        .epoch = s->epoch,
        .map_area = area,
        .next_seq = s->next_seq,
        .head_segment = s->head_seg,
        .head_offset = s->head_off,
        .nb_segments = keep,
        .flags = clean ? SLOG_SLOT_CLEAN : 0,
    };
    memset(slot_buf, 0, sizeof(slot_buf));
    slog_slot_encode(&slot, slot_buf);
    /*
     * Never a slot that opening refuses: the next checkpoint's map would
     * go over the map of the only valid slot
     */
    if (slog_slot_decode(slot_buf, SLOG_SLOT_BYTES, &s->h, &check,
                         &why) < 0) {
        error_report("softdev: %s: refusing to write a bad checkpoint (%s)",
                     bdrv_get_node_name(s->bs), why);
        ret = -EIO;
        goto fail;
    }
    ret = bdrv_pwrite(s->file, SLOG_SLOT_OFFSET(s->slot_index ^ 1),
                      sizeof(slot_buf), slot_buf, 0);
    if (ret < 0) {
        goto fail;
    }
    ret = bdrv_flush(s->file->bs);
    if (ret < 0) {
        goto fail;
    }
    s->slot = slot;
    s->slot_index ^= 1;
    s->checkpoints++;
    s->log_since_checkpoint = 0;
    trace_softdev_slog_checkpoint(s->bs, slot.generation, area,
                                  slot.next_seq, keep);
    slog_release_segments(s, keep);
    return 0;

fail:
    if (area != s->slot.map_area) {
        /* Half written: what that area holds is unknown now */
        bitmap_set(s->dirty[area], 0, s->nb_map_blocks);
    }
    return ret;
}

int coroutine_fn GRAPH_RDLOCK slog_co_checkpoint(Slog *s, bool clean)
{
    int ret;

    qemu_co_rwlock_wrlock(&s->lock);
    ret = slog_checkpoint_locked(s, clean);
    qemu_co_rwlock_unlock(&s->lock);
    return ret;
}

/* Opening */

static void slog_replay_apply(Slog *s, const SlogUpdate *u, void *opaque)
{
    slog_apply(s, u);
}

/*
 * Replay the log after the checkpoint: records of its epoch in sequence
 * order, from its head through the segments it would have filled, up to
 * the first that is missing or corrupt.
 */
static int coroutine_mixed_fn GRAPH_RDLOCK slog_replay(Slog *s)
{
    g_autofree uint8_t *buf = g_try_malloc(s->h.segment_size);
    uint64_t max_segments = (SLOG_MAX_FILE - s->h.data_offset) /
                            s->h.segment_size;
    int64_t file_len = bdrv_getlength(s->file->bs);

    if (!buf) {
        return -ENOMEM;
    }
    if (file_len < 0) {
        return file_len;
    }
    for (;;) {
        uint64_t seg_off = slog_segment_offset(&s->h, s->head_seg);
        uint32_t len = s->h.segment_size - s->head_off;
        uint32_t pos = 0;
        int ret;

        if (seg_off + s->head_off >= (uint64_t)file_len) {
            return 0;           /* nothing was ever written there */
        }
        ret = bdrv_pread(s->file, seg_off + s->head_off, len, buf, 0);
        if (ret < 0) {
            return ret;
        }
        while (pos < len) {
            SlogRecord rec;
            const char *why;

            if (slog_record_decode(buf + pos, len - pos, &s->h, &rec,
                                   &why) < 0 ||
                rec.epoch != s->epoch || rec.seq != s->next_seq) {
                s->head_off += pos;
                return 0;
            }
            slog_record_updates(s, &rec, seg_off + s->head_off + pos,
                                buf + pos + SLOG_RECORD_HEADER,
                                slog_replay_apply, NULL);
            s->next_seq++;
            s->replayed++;
            pos += rec.size;
            if (rec.type == SLOG_REC_PAD) {
                break;
            }
        }
        if (s->nb_segments >= max_segments) {
            return -EFBIG;
        }
        slog_next_segment(s);
    }
}

int coroutine_mixed_fn GRAPH_RDLOCK
slog_open(Slog *s, BlockDriverState *bs, BdrvChild *file, const char *magic,
          const SlogOps *ops, bool writable, Error **errp)
{
    uint8_t *buf = qemu_blockalign(file->bs, SLOG_META_END);
    SlogSlot slots[2];
    int valid[2];
    const char *why = NULL;
    int ret;

    *s = (Slog) {
        .bs = bs, .file = file, .ops = ops,
        .state = SLOG_STATE_READ_ONLY,
    };
    QTAILQ_INIT(&s->inflight);
    qemu_co_queue_init(&s->applied);
    qemu_co_rwlock_init(&s->lock);

    ret = bdrv_pread(file, 0, SLOG_META_END, buf, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not read the image header");
        goto out;
    }
    ret = slog_header_decode(buf, SLOG_HEADER_SIZE, magic, &s->h, &why);
    if (ret < 0) {
        error_setg(errp, "Invalid image: %s", why);
        goto out;
    }
    if (!s->h.extra_size != !ops->ref) {
        error_setg(errp, "Invalid image: the header's algorithm is not this "
                   "format's");
        ret = -EINVAL;
        goto out;
    }
    for (int i = 0; i < 2; i++) {
        valid[i] = slog_slot_decode(buf + SLOG_SLOT_OFFSET(i), SLOG_SLOT_BYTES,
                                    &s->h, &slots[i], &why) == 0;
    }
    if (!valid[0] && !valid[1]) {
        error_setg(errp, "Invalid image: no valid checkpoint (%s)", why);
        ret = -EINVAL;
        goto out;
    }
    s->slot_index = !valid[0] ||
                    (valid[1] && slots[1].generation > slots[0].generation);
    s->slot = slots[s->slot_index];

    s->nb_map_blocks = s->h.map_entries_size / SLOG_MAP_BLOCK;
    s->map = g_try_malloc(s->h.map_entries_size);
    if (!s->map) {
        error_setg(errp, "Could not allocate %" PRIu64 " bytes for the map",
                   s->h.map_entries_size);
        ret = -ENOMEM;
        goto out;
    }
    s->cluster_buf = qemu_try_blockalign(file->bs, s->h.cluster_size);
    if (!s->cluster_buf) {
        error_setg(errp, "Could not allocate a cluster buffer");
        ret = -ENOMEM;
        goto out;
    }
    s->dirty[0] = bitmap_new(s->nb_map_blocks);
    s->dirty[1] = bitmap_new(s->nb_map_blocks);
    bitmap_set(s->dirty[s->slot.map_area ^ 1], 0, s->nb_map_blocks);
    s->nb_segments = s->slot.nb_segments;
    slog_segs_grow(s, s->nb_segments);
    ret = slog_map_read(s, s->slot.map_area);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not read the map");
        goto out;
    }
    s->head_seg = s->slot.head_segment;
    s->head_off = s->slot.head_offset;
    s->next_seq = s->slot.next_seq;
    s->epoch = s->slot.epoch;
    slog_freeze_free_list(s);
    ret = slog_replay(s);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not replay the log");
        goto out;
    }
    trace_softdev_slog_open(bs, s->slot.generation, s->replayed, s->bad);
    if (writable) {
        /*
         * A new epoch, so that records of the old one past where replay
         * stopped can never be taken for new ones.
         */
        if (s->epoch >= UINT32_MAX - 1) {
            error_setg(errp, "Invalid image: epoch counter exhausted");
            ret = -EINVAL;
            goto out;
        }
        s->epoch++;
        s->state = SLOG_STATE_WRITABLE;
        ret = slog_checkpoint_locked(s, false);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Could not write a checkpoint");
            goto out;
        }
    }
    ret = 0;
out:
    qemu_vfree(buf);
    if (ret < 0) {
        s->state = SLOG_STATE_READ_ONLY;
        slog_close(s);
    }
    return ret;
}

void coroutine_mixed_fn GRAPH_RDLOCK slog_close(Slog *s)
{
    if (s->state == SLOG_STATE_WRITABLE) {
        slog_checkpoint_locked(s, true);
    }
    g_free(s->map);
    g_free(s->dirty[0]);
    g_free(s->dirty[1]);
    g_free(s->segs);
    g_free(s->free_list);
    qemu_vfree(s->cluster_buf);
    s->cluster_buf = NULL;
    s->map = NULL;
    s->dirty[0] = s->dirty[1] = NULL;
    s->segs = NULL;
    s->free_list = NULL;
}

int coroutine_fn GRAPH_UNLOCKED
slog_co_format(BlockBackend *blk, const SlogHeader *h, Error **errp)
{
    g_autofree uint8_t *buf = g_malloc0(SLOG_META_END);
    SlogSlot slot = {
        .generation = 1, .epoch = 1, .map_area = 0, .next_seq = 1,
        .head_segment = 0, .head_offset = 0, .nb_segments = 1,
        .flags = SLOG_SLOT_CLEAN,
    };
    int ret;

    slog_header_encode(h, buf);
    slog_slot_encode(&slot, buf + SLOG_SLOT_OFFSET(0));
    ret = blk_co_truncate(blk, h->data_offset, true, PREALLOC_MODE_OFF, 0,
                          errp);
    if (ret < 0) {
        return ret;
    }
    ret = blk_co_pwrite(blk, 0, SLOG_META_END, buf, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not write the image header");
        return ret;
    }
    ret = blk_co_flush(blk);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not flush the new image");
    }
    return ret;
}

/* Close the head segment; the log goes on in the next one */
int coroutine_fn GRAPH_RDLOCK slog_co_switch_head(Slog *s)
{
    uint8_t *buf = softdev_bounce_get(s->bs, SLOG_SECTOR);
    SlogBatch b;
    int ret;

    if (!buf) {
        return -ENOMEM;
    }
    slog_batch_begin(s, &b, buf, SLOG_SECTOR);
    if (s->head_off < s->h.segment_size) {
        SlogRecord pad = { .type = SLOG_REC_PAD };

        slog_batch_append(s, &b, &pad);
    }
    slog_next_segment(s);
    ret = slog_co_batch_submit(s, &b);
    softdev_bounce_put(s->bs, buf, SLOG_SECTOR);
    return ret;
}
