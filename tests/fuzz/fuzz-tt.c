/*
 * libFuzzer target for softdev-timetravel's journal format
 * (block/softdev/tt-format.c): the input is the beginning of a journal
 * node, the rest of which reads as zeroes.  It is opened as
 * block/softdev/tt-replay.c does: the header copy of the higher
 * generation, then the log from its tail into the history index, one
 * record after the other, up to the first that is not one.  Every record
 * that decodes must encode to the same bytes; the history must keep the
 * promises the device relies on (records in sequence order inside the
 * disk, marks unique); and the disk at each mark, and at the newest
 * point, must make an extent map whose extents lie inside the disk and
 * point inside the log.
 *
 * Each input is opened twice: as it is, then with every CRC made right
 * before its header or record is decoded, so that mutations get past the
 * CRCs to the field checks behind them.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/softdev/tt-format.h"
#include "block/softdev/tt-extents.h"

#define NODE_SIZE       (64ull << 20)   /* what the input pretends to be */
#define DISK_SIZE       (16ull << 20)
#define MAX_RECORDS     4096

static uint8_t *image;
static size_t image_len;

/* Bytes [@off, @off + @len) of the node: the input, then zeroes */
static void node_read(uint64_t off, void *buf, size_t len)
{
    memset(buf, 0, len);
    if (off < image_len) {
        memcpy(buf, image + off, MIN(len, image_len - off));
    }
}

static void node_fix_crc(uint64_t off, size_t crc_at)
{
    uint32_t crc;

    if (off + crc_at + 4 > image_len) {
        return;
    }
    crc = tt_crc32c(0, image + off, crc_at);
    memcpy(image + off + crc_at, &crc, 4);  /* little endian hosts */
}

static void check(bool cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz-tt: broken promise: %s\n", what);
        abort();
    }
}

static void check_extent(const TtExtent *e, void *opaque)
{
    const TtIndex *idx = opaque;

    check(e->start + e->len <= DISK_SIZE, "an extent outside the disk");
    check(e->kind != TT_EXT_JOURNAL || e->loc + e->len <= idx->next_pos,
          "an extent beyond the log");
}

/* Field by field: the structs have padding */
static bool rec_equal(const TtRecord *a, const TtRecord *b)
{
    return a->type == b->type && a->flags == b->flags && a->seq == b->seq &&
           a->time == b->time && a->pos == b->pos && a->offset == b->offset &&
           a->length == b->length && a->aux == b->aux &&
           a->data_len == b->data_len && a->data_crc == b->data_crc;
}

static void run(bool fix)
{
    uint8_t hdr[TT_HEADER_SIZE];
    TtHeader h[2], *best = NULL;
    TtIndex idx;
    const char *why;

    for (int i = 0; i < 2; i++) {
        if (fix) {
            node_fix_crc(TT_HEADER_OFFSET(i), TT_HEADER_BYTES - 4);
        }
        node_read(TT_HEADER_OFFSET(i), hdr, sizeof(hdr));
        if (tt_header_decode(hdr, sizeof(hdr), NODE_SIZE, &h[i], &why) == 0 &&
            (!best || h[i].generation > best->generation)) {
            uint8_t again[TT_HEADER_BYTES];
            TtHeader back;

            tt_header_encode(&h[i], again);
            check(tt_header_decode(again, sizeof(again), NODE_SIZE, &back,
                                   &why) == 0 &&
                  !memcmp(&back, &h[i], sizeof(back)),
                  "a header that does not encode to itself");
            best = &h[i];
        }
    }
    if (!best) {
        return;
    }
    tt_index_init(&idx, best->tail, best->tail_seq, best->horizon_seq);
    for (int n = 0; n < MAX_RECORDS; n++) {
        uint64_t pos = idx.next_pos;
        uint64_t phys = TT_RING_OFFSET + pos % best->ring_size;
        uint8_t rec[2 * TT_REC_HEADER], again[TT_REC_HEADER];
        char name[TT_MAX_NAME + 1] = "";
        TtRecord r, back;

        if ((best->flags & TT_HDR_CLEAN) && pos >= best->head) {
            break;
        }
        if (pos - best->tail >= best->ring_size) {
            break;
        }
        if (fix) {
            node_fix_crc(phys, TT_REC_BYTES - 4);
        }
        node_read(phys, rec, sizeof(rec));
        if (tt_record_decode(rec, best, DISK_SIZE, pos, idx.next_seq, &r,
                             &why) < 0) {
            break;
        }
        tt_record_encode(&r, again);
        check(tt_record_decode(again, best, DISK_SIZE, pos, idx.next_seq,
                               &back, &why) == 0 &&
              rec_equal(&back, &r), "a record that does not encode "
              "to itself");
        check(tt_record_size(&r) <= best->ring_size - pos % best->ring_size,
              "a record across the end of the ring");
        if (r.type == TT_REC_MARK) {
            memcpy(name, rec + TT_REC_HEADER, r.data_len);
            name[r.data_len] = 0;
        }
        if (tt_index_add(&idx, &r, name, &why) < 0) {
            break;
        }
    }
    tt_index_end_replay(&idx);

    for (size_t i = 0; i < idx.nb_recs; i++) {
        check(i == 0 || idx.recs[i].seq > idx.recs[i - 1].seq,
              "records out of order");
        check(idx.recs[i].offset + idx.recs[i].length <= DISK_SIZE,
              "a record outside the disk");
    }
    for (size_t i = 0; i <= idx.nb_marks; i++) {
        uint64_t seq = i < idx.nb_marks ? idx.marks[i].seq : UINT64_MAX;
        TtExtents map;
        TtExtent e;

        check(i == idx.nb_marks ||
              tt_index_find_mark(&idx, idx.marks[i].name) == &idx.marks[i],
              "two marks of a name");
        tt_index_map(&idx, seq, &map);
        tt_extents_foreach(&map, 0, DISK_SIZE, check_extent, &idx);
        for (uint64_t off = 0; off < DISK_SIZE; off += e.len) {
            tt_extents_lookup(&map, off, DISK_SIZE - off, &e);
            check(e.len > 0 && e.start == off, "a lookup that stands still");
        }
        tt_extents_destroy(&map);
    }
    tt_index_seq_at(&idx, idx.last_time / 2, best->horizon_seq);
    tt_index_free(&idx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20)) {
        return 0;
    }
    image = malloc(size ? size : 1);
    image_len = size;
    memcpy(image, data, size);
    run(false);
    run(true);
    free(image);
    return 0;
}
