/*
 * make-slog-seeds OUTDIR: write the seed corpus of fuzz-slog, small
 * softdev-compress images as block/softdev/slog.c lays them out, encoded
 * by slog-format.c itself:
 *
 *   fresh           as qemu-img create leaves it
 *   fresh-short     its first 8320 bytes (the rest reads as zeroes)
 *   log             records after the checkpoint, up to a pad record
 *   log-short       the same in small records only
 *   mapped          a closed image whose map points at records
 *   small-clusters  4 KiB clusters, a map and a log
 *   bad-entries     entries slog_entry_check() rejects, a corrupt slot,
 *                   a stale record ending the log
 *
 * The disks are 4 MiB with 64 KiB clusters or 1 MiB with 4 KiB ones, the
 * segments 1 MiB: each map area is one block and the data area starts at
 * 20 KiB.  Files end where the last record does.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "block/softdev/slog-format.h"

#define MAGIC       "SDCOMPR"       /* and a NUL: softdev-compress's */
#define CAS_MAGIC   "SDCAS\0\0"      /* softdev-cas's */
#define MAX_IMAGE   (256u << 10)    /* no seed needs more */

typedef struct Image {
    SlogHeader h;
    uint8_t buf[MAX_IMAGE];
    size_t len;                     /* the file's length */
    uint64_t log;                   /* where the next record goes */
    uint64_t seq;
    uint32_t epoch;
} Image;

static void die(const char *what)
{
    fprintf(stderr, "make-slog-seeds: %s\n", what);
    exit(1);
}

static uint8_t *at(Image *img, uint64_t off, size_t len)
{
    if (off > MAX_IMAGE || len > MAX_IMAGE - off) {
        die("seed image too large");
    }
    if (off + len > img->len) {
        img->len = off + len;
    }
    return img->buf + off;
}

/* A fresh image of header @h, as slog_co_format() writes it */
static void image_start(Image *img)
{
    SlogSlot slot = {
        .generation = 1, .epoch = 1, .map_area = 0, .next_seq = 1,
        .head_segment = 0, .head_offset = 0, .nb_segments = 1,
        .flags = SLOG_SLOT_CLEAN,
    };

    slog_header_encode(&img->h, at(img, 0, SLOG_HEADER_SIZE));
    slog_slot_encode(&slot, at(img, SLOG_SLOT_OFFSET(0), SLOG_SLOT_BYTES));
    at(img, 0, img->h.data_offset);
    img->log = img->h.data_offset;
    img->seq = 1;
    img->epoch = 1;
}

/* softdev-compress */
static void image_init(Image *img, uint64_t virtual_size,
                       uint32_t cluster_size, int32_t level)
{
    const char *why;

    memset(img, 0, sizeof(*img));
    if (slog_header_init(&img->h, MAGIC, virtual_size, cluster_size,
                         SLOG_MIN_SEGMENT, level, &why) < 0) {
        die(why);
    }
    image_start(img);
}

/* softdev-cas: @cluster_size chunks */
static void image_init_cas(Image *img, uint64_t virtual_size,
                           uint32_t cluster_size)
{
    const char *why;

    memset(img, 0, sizeof(*img));
    if (slog_header_init_cas(&img->h, CAS_MAGIC, virtual_size, cluster_size,
                             SLOG_MIN_SEGMENT, &why) < 0) {
        die(why);
    }
    image_start(img);
}

static void put_slot(Image *img, int i, uint64_t generation, uint32_t map_area,
                     uint32_t flags)
{
    SlogSlot slot = {
        .generation = generation,
        .epoch = img->epoch,
        .map_area = map_area,
        .next_seq = img->seq,
        .head_segment = slog_segment_of(&img->h, img->log),
        .head_offset = (img->log - img->h.data_offset) % img->h.segment_size,
        .nb_segments = slog_segment_of(&img->h, img->log) + 1,
        .flags = flags,
    };

    slog_slot_encode(&slot, at(img, SLOG_SLOT_OFFSET(i), SLOG_SLOT_BYTES));
}

static void put_entry(Image *img, uint32_t area, uint64_t cluster, uint64_t e)
{
    slog_st64(at(img, img->h.map_offset[area] + cluster * 8, 8), e);
}


/* Append @rec with @payload (rec->payload_len bytes); its map entry */
static uint64_t append(Image *img, SlogRecord *rec, const uint8_t *payload)
{
    uint64_t off = img->log;
    uint8_t *p;

    rec->seq = img->seq++;
    rec->epoch = img->epoch;
    rec->size = slog_record_size(rec->payload_len);
    p = at(img, off, rec->size);
    if (rec->payload_len) {
        memcpy(p + SLOG_RECORD_HEADER, payload, rec->payload_len);
    }
    slog_record_encode(rec, p);
    img->log += rec->size;
    return slog_entry_make(off, rec->size);
}

static uint64_t append_raw(Image *img, uint64_t cluster, uint8_t fill)
{
    uint32_t cs = img->h.cluster_size;
    uint8_t *data = malloc(cs);
    SlogRecord rec = {
        .type = SLOG_REC_DATA, .encoding = SLOG_ENC_RAW, .cluster = cluster,
        .count = 1, .payload_len = cs,
    };
    uint64_t e;

    if (!data) {
        die("out of memory");
    }
    /* Not all one byte, or it would have been compressed */
    for (uint32_t i = 0; i < cs; i++) {
        data[i] = fill ^ (uint8_t)(i * 7 + (i >> 9));
    }
    e = append(img, &rec, data);
    free(data);
    return e;
}

/*
 * A real zstd frame for a cluster of @fill bytes: a single-segment frame
 * with its content size and one RLE block (RFC 8878), 11 bytes.
 */
static uint32_t zstd_rle(uint8_t *out, uint32_t size, uint8_t fill)
{
    uint32_t block = 1 | 1 << 1 | size << 3;    /* last, RLE, its size */

    if (size < 256 || size - 256 > 0xffff || size > (128u << 10)) {
        die("cluster size out of reach of the RLE frame");
    }
    slog_st32(out, 0xfd2fb528);                 /* the frame magic */
    out[4] = 1 << 6 | 1 << 5;   /* 2-byte content size, single segment */
    out[5] = (size - 256) & 0xff;
    out[6] = (size - 256) >> 8;
    out[7] = block;
    out[8] = block >> 8;
    out[9] = block >> 16;
    out[10] = fill;
    return 11;
}

static uint64_t append_zstd(Image *img, uint64_t cluster, uint8_t fill,
                            uint64_t src)
{
    uint8_t frame[16];
    SlogRecord rec = {
        .type = SLOG_REC_DATA, .encoding = SLOG_ENC_ZSTD, .cluster = cluster,
        .count = 1, .flags = src ? SLOG_REC_MOVE : 0, .src = src,
    };

    rec.payload_len = zstd_rle(frame, img->h.cluster_size, fill);
    return append(img, &rec, frame);
}

static void append_zero(Image *img, uint64_t cluster, uint32_t count)
{
    SlogRecord rec = {
        .type = SLOG_REC_ZERO, .cluster = cluster, .count = count,
    };

    append(img, &rec, NULL);
}

static void append_pad(Image *img)
{
    SlogRecord rec = { .type = SLOG_REC_PAD };

    append(img, &rec, NULL);
}

/* The hash a map area keeps beside @cluster's entry */
static void put_hash(Image *img, uint32_t area, uint64_t cluster,
                     const uint8_t *hash)
{
    memcpy(at(img, img->h.map_offset[area] + img->h.map_entries_size +
              cluster * SLOG_HASH_SIZE, SLOG_HASH_SIZE), hash, SLOG_HASH_SIZE);
}

/* A chunk record: a (made-up: the parser does not hash) hash, the data */
static uint64_t append_chunk(Image *img, uint64_t cluster, uint8_t fill,
                             uint64_t src, uint8_t *hash)
{
    uint32_t len = img->h.max_payload;
    uint8_t *payload = malloc(len);
    SlogRecord rec = {
        .type = SLOG_REC_DATA, .encoding = SLOG_ENC_RAW, .cluster = cluster,
        .count = 1, .payload_len = len, .flags = src ? SLOG_REC_MOVE : 0,
        .src = src,
    };
    uint64_t e;

    if (!payload) {
        die("out of memory");
    }
    memset(payload, fill, len);
    for (uint32_t i = 0; i < SLOG_HASH_SIZE; i++) {
        payload[i] = hash[i] = fill * 31 + i;
    }
    e = append(img, &rec, payload);
    free(payload);
    return e;
}

/* A REF record: clusters @cl[0..n) refer to the chunks @ents[0..n) */
static void append_ref(Image *img, const uint64_t *cl, const uint64_t *ents,
                       uint32_t n, uint64_t src)
{
    uint8_t payload[16 * 16];
    SlogRecord rec = {
        .type = SLOG_REC_REF, .cluster = cl[0], .count = n,
        .payload_len = n * SLOG_REF_PAIR, .flags = src ? SLOG_REC_MOVE : 0,
        .src = src,
    };

    for (uint32_t i = 0; i < n; i++) {
        slog_ref_set(payload, i, cl[i], ents[i]);
    }
    append(img, &rec, payload);
}

static void image_write(const Image *img, const char *dir, const char *name)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f || fwrite(img->buf, 1, img->len, f) != img->len || fclose(f)) {
        perror(path);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    static Image img;
    uint64_t e0, e1, e5;

    if (argc != 2) {
        fprintf(stderr, "usage: make-slog-seeds OUTDIR\n");
        return 2;
    }
    if (mkdir(argv[1], 0777) < 0 && errno != EEXIST) {
        perror(argv[1]);
        return 1;
    }

    image_init(&img, 4 << 20, 64 << 10, 3);
    image_write(&img, argv[1], "fresh");

    /*
     * softdev-cas: chunks shared through REF records in the log, and a
     * checkpoint whose map area has the hashes beside the entries.
     */
    {
        uint8_t h0[SLOG_HASH_SIZE], h1[SLOG_HASH_SIZE];
        uint64_t cl[3] = { 1, 2, 9 }, ents[3], c0, c1;

        image_init_cas(&img, 1 << 20, 4 << 10);
        image_write(&img, argv[1], "cas-fresh");
        img.epoch = 2;
        put_slot(&img, 1, 2, 0, 0);
        c0 = append_chunk(&img, 0, 0x10, 0, h0);
        c1 = append_chunk(&img, 3, 0x20, 0, h1);
        ents[0] = c0;
        ents[1] = c1;
        ents[2] = c0;
        append_ref(&img, cl, ents, 3, 0);
        append_zero(&img, 2, 1);
        c1 = append_chunk(&img, 3, 0x20, c1, h1);       /* compaction's */
        cl[0] = 1;
        ents[0] = c1;
        append_ref(&img, cl, ents, 1, c0);
        image_write(&img, argv[1], "cas-log");
        put_entry(&img, 1, 0, c0);
        put_hash(&img, 1, 0, h0);
        put_entry(&img, 1, 3, c1);
        put_hash(&img, 1, 3, h1);
        put_entry(&img, 1, 9, c0);
        put_hash(&img, 1, 9, h0);
        put_slot(&img, 0, 3, 1, SLOG_SLOT_CLEAN);
        image_write(&img, argv[1], "cas-mapped");
    }
    /*
     * The same without the zeroes after the slots, which the fuzz target
     * reads anyway: mutations land in the header and slots.
     */
    img.len = SLOG_SLOT_OFFSET(1) + SLOG_SLOT_BYTES;
    image_write(&img, argv[1], "fresh-short");

    /* The same log in small records only: 4 KiB clusters, no raw data */
    image_init(&img, 1 << 20, 4 << 10, 1);
    img.epoch = 2;
    put_slot(&img, 1, 2, 1, 0);
    e1 = append_zstd(&img, 7, 0x11, 0);
    append_zero(&img, 0, 4);
    append_zstd(&img, 7, 0x12, e1);
    append_zero(&img, 255, 1);
    append_pad(&img);
    image_write(&img, argv[1], "log-short");

    /*
     * Opened read-write (a checkpoint of epoch 2 in slot 1), written to
     * and not closed: the log runs from the head to a pad record.
     */
    image_init(&img, 4 << 20, 64 << 10, 3);
    img.epoch = 2;
    put_slot(&img, 1, 2, 0, 0);
    e1 = append_zstd(&img, 1, 0x11, 0);
    append_raw(&img, 0, 0x22);
    append_zero(&img, 2, 3);
    append_zstd(&img, 1, 0x33, e1);     /* compaction's copy */
    append_zero(&img, 63, 1);
    append_pad(&img);
    image_write(&img, argv[1], "log");

    /* The same closed: a checkpoint in slot 0 with its map in area 1 */
    image_init(&img, 4 << 20, 64 << 10, 3);
    img.epoch = 2;
    put_slot(&img, 1, 2, 0, 0);
    e0 = append_raw(&img, 0, 0x22);
    e1 = append_zstd(&img, 1, 0x11, 0);
    e1 = append_zstd(&img, 1, 0x33, e1);
    e5 = append_zstd(&img, 5, 0x55, 0);
    append_zero(&img, 5, 1);
    e5 = append_zstd(&img, 5, 0x66, 0);
    put_entry(&img, 1, 0, e0);
    put_entry(&img, 1, 1, e1);
    put_entry(&img, 1, 5, e5);
    put_slot(&img, 0, 3, 1, SLOG_SLOT_CLEAN);
    image_write(&img, argv[1], "mapped");

    /*
     * 4 KiB clusters, level 19: records of epoch 1 in the map of the
     * checkpoint of epoch 2, then more log after it.
     */
    image_init(&img, 1 << 20, 4 << 10, 19);
    e0 = append_raw(&img, 0, 0x01);
    e1 = append_raw(&img, 255, 0x02);
    e5 = append_zstd(&img, 128, 0x03, 0);
    put_entry(&img, 1, 0, e0);
    put_entry(&img, 1, 255, e1);
    put_entry(&img, 1, 128, e5);
    img.epoch = 2;
    put_slot(&img, 1, 2, 1, 0);
    for (int i = 0; i < 8; i++) {
        append_raw(&img, 16 + i, 0x40 + i);
    }
    append_zero(&img, 0, 256);
    append_zstd(&img, 255, 0x04, e1);
    image_write(&img, argv[1], "small-clusters");

    /*
     * Slot 1 newer but corrupt, so slot 0 counts; its map has entries
     * that must be found bad, next to a good one and one past the disk;
     * the log ends at a record of an older epoch.
     */
    image_init(&img, 4 << 20, 64 << 10, -7);
    e0 = append_raw(&img, 3, 0x77);
    img.epoch = 2;
    put_slot(&img, 0, 4, 1, 0);
    put_slot(&img, 1, 5, 0, 0);
    at(&img, SLOG_SLOT_OFFSET(1), SLOG_SLOT_BYTES)[100] ^= 1;
    put_entry(&img, 1, 3, e0);
    put_entry(&img, 1, 4, slog_entry_make(img.h.data_offset - SLOG_SECTOR,
                                          SLOG_SECTOR));
    put_entry(&img, 1, 6, slog_entry_make(img.h.data_offset, 0));
    put_entry(&img, 1, 7, slog_entry_make(img.h.data_offset,
                                          img.h.max_record + SLOG_SECTOR));
    put_entry(&img, 1, 8, slog_entry_make(img.h.data_offset +
                                          img.h.segment_size, SLOG_SECTOR));
    put_entry(&img, 1, 9, slog_entry_make(img.h.data_offset +
                                          img.h.segment_size - SLOG_SECTOR,
                                          2 * SLOG_SECTOR));
    put_entry(&img, 1, 10, slog_entry_make(img.h.data_offset + SLOG_SECTOR,
                                           SLOG_SECTOR));
    put_entry(&img, 1, 100, e0);        /* past the 64 clusters */
    append_zstd(&img, 3, 0x78, 0);
    /* Left from before the checkpoint: replay must stop there */
    img.epoch = 1;
    append_zero(&img, 3, 1);
    image_write(&img, argv[1], "bad-entries");
    return 0;
}
