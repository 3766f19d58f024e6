/*
 * Compaction of softdev's log-structured images (slog.h): the live
 * records of segments at the end of the image, and of mostly dead ones,
 * are copied as MOVE records into free segments below them; a checkpoint
 * then frees the segments they left, which go back to the node below.
 * Records no map entry refers to (softdev-cas's unreferenced chunks) are
 * not copied: this is their garbage collection.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/memalign.h"
#include "softdev/softdev.h"
#include "slog.h"
#include "trace/trace-block_softdev.h"

typedef struct SlogLive {
    uint64_t cluster;
    uint64_t entry;
} SlogLive;

static gint slog_live_cmp(gconstpointer a, gconstpointer b)
{
    uint64_t x = ((const SlogLive *)a)->entry & ((1ull << 44) - 1);
    uint64_t y = ((const SlogLive *)b)->entry & ((1ull << 44) - 1);

    return x < y ? -1 : x > y;
}

/*
 * Copy the records @live[0..n) (read from the log) to the head as MOVE
 * records; they take effect where the map still refers to the originals.
 * A record several clusters share (adjacent in @live) is copied once, for
 * the first; the others follow in MOVE REF records.
 */
static int coroutine_fn GRAPH_RDLOCK
slog_co_move(Slog *s, const SlogLive *live, size_t n, uint8_t *in,
             uint64_t *moved)
{
    const uint32_t max_pairs = s->h.max_payload / SLOG_REF_PAIR;
    uint64_t first = slog_entry_offset(live[0].entry);
    uint64_t span = slog_entry_offset(live[n - 1].entry) +
                    slog_entry_size(live[n - 1].entry) - first;
    uint64_t dst = 0;       /* where live[i - 1]'s record went */
    SlogBatch b;
    size_t i = 0;
    int ret;

    ret = bdrv_co_pread(s->file, first, span, in, 0);
    if (ret < 0) {
        return ret;
    }
    while (i < n) {
        uint8_t *out = softdev_bounce_get(s->bs, SLOG_BATCH_CAP);

        if (!out) {
            return -ENOMEM;
        }
        slog_batch_begin(s, &b, out, SLOG_BATCH_CAP);
        while (i < n) {
            const uint8_t *rec_buf = in + slog_entry_offset(live[i].entry) -
                                     first;
            SlogRecord rec;
            const char *why;
            uint32_t k = 0;
            uint8_t *p;

            if (dst && live[i].entry == live[i - 1].entry) {
                /* The clusters sharing the record just copied */
                while (i + k < n && k < max_pairs &&
                       live[i + k].entry == live[i].entry) {
                    k++;
                }
                p = slog_batch_reserve(s, &b, k * SLOG_REF_PAIR);
                if (!p) {
                    break;
                }
                for (uint32_t j = 0; j < k; j++) {
                    slog_ref_set(p + SLOG_RECORD_HEADER, j, live[i + j].cluster,
                                 dst);
                }
                rec = (SlogRecord) {
                    .type = SLOG_REC_REF, .flags = SLOG_REC_MOVE,
                    .cluster = live[i].cluster, .count = k,
                    .payload_len = k * SLOG_REF_PAIR, .src = live[i].entry,
                };
                slog_batch_add(s, &b, &rec);
                *moved += rec.size;
                i += k;
                continue;
            }
            dst = 0;
            if (slog_record_decode(rec_buf, slog_entry_size(live[i].entry),
                                   &s->h, &rec, &why) < 0 ||
                rec.type != SLOG_REC_DATA) {
                i++;
                continue;       /* qemu-img check reports it */
            }
            p = slog_batch_reserve(s, &b, rec.payload_len);
            if (!p) {
                break;
            }
            memcpy(p + SLOG_RECORD_HEADER, rec_buf + SLOG_RECORD_HEADER,
                   rec.payload_len);
            rec.flags |= SLOG_REC_MOVE;
            rec.cluster = live[i].cluster;
            rec.src = live[i].entry;
            dst = slog_batch_add(s, &b, &rec);
            *moved += rec.size;
            i++;
        }
        ret = slog_co_batch_submit(s, &b);
        softdev_bounce_put(s->bs, out, SLOG_BATCH_CAP);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

int coroutine_fn GRAPH_RDLOCK
slog_co_compact(Slog *s, uint64_t *moved, uint64_t *reclaimed, Error **errp)
{
    g_autoptr(GArray) live = g_array_new(false, false, sizeof(SlogLive));
    g_autofree uint8_t *victim = NULL;
    uint64_t before, nb_victims = 0, lo, room = 0, head_room;
    uint8_t *in = NULL;
    size_t i;
    int ret;

    *moved = *reclaimed = 0;
    if (s->state != SLOG_STATE_WRITABLE) {
        error_setg(errp, "The image is not writable");
        return -EACCES;
    }
    /* First what is dead already becomes free */
    before = s->released;
    ret = slog_co_checkpoint(s, false);
    if (ret < 0) {
        goto fail;
    }

    ret = slog_co_write_begin(s);
    if (ret < 0) {
        goto fail;
    }
    /* The log goes on in the lowest free segment, so the head can move */
    if (s->nb_free > s->free_next &&
        s->free_list[s->free_next] < s->head_seg) {
        ret = slog_co_switch_head(s);
        if (ret < 0) {
            slog_co_write_end(s);
            goto fail;
        }
    }
    /*
     * From the end down, a segment is a victim if the free segments at
     * the bottom (the log fills them lowest first) can take its records
     * below it: moving them lets the end of the image be cut off and
     * packs half-dead segments together.
     */
    victim = g_malloc0(s->nb_segments);
    lo = s->free_next;
    head_room = s->head_off + s->h.max_record < s->h.segment_size ?
                s->h.segment_size - s->head_off - s->h.max_record : 0;
    for (uint64_t seg = s->nb_segments; seg-- > 0;) {
        SlogSegment *sg = &s->segs[seg];

        if (sg->state != SLOG_SEG_FULL) {
            continue;
        }
        /* The head's segment is the first the copies go to */
        if (head_room && s->head_seg < seg) {
            room += head_room;
            head_room = 0;
        }
        while (room < sg->live && lo < s->nb_free && s->free_list[lo] < seg) {
            room += s->h.segment_size - s->h.max_record;
            lo++;
        }
        if (room < sg->live) {
            break;
        }
        room -= sg->live;
        victim[seg] = 1;
        nb_victims++;
    }
    for (uint64_t c = 0; nb_victims && c < s->h.nb_clusters; c++) {
        uint64_t e = s->map[c];

        if (slog_entry_valid(e) &&
            victim[slog_segment_of(&s->h, slog_entry_offset(e))]) {
            SlogLive l = { .cluster = c, .entry = e };

            g_array_append_val(live, l);
        }
    }
    g_array_sort(live, slog_live_cmp);
    in = qemu_try_blockalign(s->file->bs, s->h.segment_size);
    ret = in ? 0 : -ENOMEM;
    /* One segment's records at a time */
    for (i = 0; ret == 0 && i < live->len;) {
        const SlogLive *l = &g_array_index(live, SlogLive, i);
        uint64_t seg = slog_segment_of(&s->h, slog_entry_offset(l->entry));
        size_t n = 1;

        while (i + n < live->len &&
               slog_segment_of(&s->h, slog_entry_offset(l[n].entry)) == seg) {
            n++;
        }
        ret = slog_co_move(s, l, n, in, moved);
        i += n;
    }
    qemu_vfree(in);
    slog_co_write_end(s);
    if (ret < 0) {
        goto fail;
    }
    ret = slog_co_checkpoint(s, false);
    if (ret < 0) {
        goto fail;
    }
    *reclaimed = s->released - before;
    trace_softdev_slog_compact(s->bs, nb_victims, *moved, *reclaimed);
    return 0;

fail:
    error_setg_errno(errp, -ret, "Compaction failed");
    return ret;
}
