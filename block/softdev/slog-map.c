/*
 * The map of softdev's log-structured images (slog.h): what records do to
 * it and to the live bytes of segments, and its areas on the node below,
 * read at open and written by checkpoints (with the extra bytes beside
 * each entry of images with shared records).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/bitmap.h"
#include "qemu/bswap.h"
#include "softdev/softdev.h"
#include "slog.h"

#define SLOG_IO_CHUNK           (1 * MiB)

/*
 * @delta: +1 when a map entry starts referring to @e, -1 when it stops.
 * A shared record's bytes are live while any entry refers to it.
 */
static void slog_account(Slog *s, uint64_t e, int delta, const uint8_t *extra)
{
    SlogSegment *seg;
    int64_t size = slog_entry_size(e);

    if (!slog_entry_valid(e)) {
        return;
    }
    s->mapped += delta;
    if (s->ops->ref && s->ops->ref(s, e, delta, extra) != (delta > 0)) {
        return;
    }
    seg = &s->segs[slog_segment_of(&s->h, slog_entry_offset(e))];
    seg->live += delta * size;
    s->live_bytes += delta * size;
}

static void slog_map_set(Slog *s, uint64_t cluster, uint64_t e,
                         const uint8_t *extra)
{
    uint64_t blk = cluster * 8 / SLOG_MAP_BLOCK;
    uint64_t old = s->map[cluster];

    /* The new reference first: a shared record never drops to none */
    s->map[cluster] = e;
    slog_account(s, e, +1, extra);
    slog_account(s, old, -1, NULL);
    set_bit(blk, s->dirty[0]);
    set_bit(blk, s->dirty[1]);
}

void slog_apply(Slog *s, const SlogUpdate *u)
{
    uint64_t e = u->entry;

    switch (u->type) {
    case SLOG_REC_REF:
        /* A pair read from the log may point anywhere */
        if (!slog_entry_check(&s->h, s->nb_segments, e)) {
            e = SLOG_ENTRY_BAD;
            s->bad++;
        }
        /* fall through */
    case SLOG_REC_DATA:
        if (!(u->flags & SLOG_REC_MOVE) || s->map[u->cluster] == u->src) {
            slog_map_set(s, u->cluster, e, u->extra);
        }
        break;
    case SLOG_REC_ZERO:
        for (uint64_t c = u->cluster; c < u->cluster + u->count; c++) {
            if (s->map[c]) {
                slog_map_set(s, c, 0, NULL);
            }
        }
        break;
    default:
        break;
    }
}

/*
 * Write the map blocks area @area lacks, and the extra bytes of their
 * entries; 0 or -errno
 */
int coroutine_mixed_fn GRAPH_RDLOCK
slog_map_write(Slog *s, unsigned area)
{
    const uint32_t per_blk = SLOG_MAP_BLOCK / 8;
    const uint64_t per_chunk = SLOG_IO_CHUNK / (per_blk * (8 + s->h.extra_size));
    const uint64_t base = s->h.map_offset[area];
    g_autofree uint8_t *buf = g_malloc(SLOG_IO_CHUNK);
    uint64_t blk = find_first_bit(s->dirty[area], s->nb_map_blocks);

    while (blk < s->nb_map_blocks) {
        uint64_t end = find_next_zero_bit(s->dirty[area], s->nb_map_blocks,
                                          blk);
        uint64_t n = MIN(end - blk, per_chunk);
        uint64_t first = blk * per_blk;
        uint8_t *extra = buf + n * SLOG_MAP_BLOCK;
        int ret;

        for (uint64_t i = 0; i < n * per_blk; i++) {
            uint64_t e = s->map[first + i];

            e = e == SLOG_ENTRY_BAD ? 0 : e;
            stq_le_p(buf + i * 8, e);
            if (!s->h.extra_size) {
                continue;
            }
            if (e) {
                s->ops->get_extra(s, e, extra + i * s->h.extra_size);
            } else {
                memset(extra + i * s->h.extra_size, 0, s->h.extra_size);
            }
        }
        ret = bdrv_pwrite(s->file, base + blk * SLOG_MAP_BLOCK,
                          n * SLOG_MAP_BLOCK, buf, 0);
        if (ret == 0 && s->h.extra_size) {
            ret = bdrv_pwrite(s->file, base + s->h.map_entries_size +
                              first * s->h.extra_size,
                              n * per_blk * s->h.extra_size, extra, 0);
        }
        if (ret < 0) {
            return ret;
        }
        bitmap_clear(s->dirty[area], blk, n);
        blk = find_next_bit(s->dirty[area], s->nb_map_blocks, blk + n);
    }
    return 0;
}

/* Read map area @area into s->map (and its extra bytes); 0 or -errno */
int coroutine_mixed_fn GRAPH_RDLOCK
slog_map_read(Slog *s, unsigned area)
{
    const uint64_t base = s->h.map_offset[area];
    const uint32_t xs = s->h.extra_size;
    g_autofree uint8_t *extra = NULL;
    uint64_t extra_first = 0, extra_end = 0;

    for (uint64_t off = 0; off < s->h.map_entries_size; off += SLOG_IO_CHUNK) {
        uint64_t n = MIN(SLOG_IO_CHUNK, s->h.map_entries_size - off);
        int ret = bdrv_pread(s->file, base + off, n,
                             (uint8_t *)s->map + off, 0);

        if (ret < 0) {
            return ret;
        }
    }
    if (xs) {
        extra = g_malloc(SLOG_IO_CHUNK);
    }
    for (uint64_t c = 0; c < s->h.map_entries_size / 8; c++) {
        uint64_t e = le64_to_cpu(s->map[c]);

        if (e && (c >= s->h.nb_clusters ||
                  !slog_entry_check(&s->h, s->slot.nb_segments, e))) {
            e = c < s->h.nb_clusters ? SLOG_ENTRY_BAD : 0;
            s->bad++;
        }
        s->map[c] = e;
        if (xs && c >= extra_end) {
            uint64_t n = MIN(SLOG_IO_CHUNK / xs, s->h.map_entries_size / 8 - c);
            int ret = bdrv_pread(s->file, base + s->h.map_entries_size +
                                 c * xs, n * xs, extra, 0);

            if (ret < 0) {
                return ret;
            }
            extra_first = c;
            extra_end = c + n;
        }
        slog_account(s, e, +1, xs ? extra + (c - extra_first) * xs : NULL);
    }
    return 0;
}
