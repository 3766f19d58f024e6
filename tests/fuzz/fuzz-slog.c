/*
 * libFuzzer target for softdev's log-structured image format
 * (block/softdev/slog-format.c): the input is the beginning of an image
 * file, the rest of which reads as zeroes.  It is opened as
 * block/softdev/slog.c does: the header, the newest valid slot, the
 * entries of that slot's map area and the records they point to, then the
 * log from the slot's head.  Whatever decodes must encode to bytes that
 * decode to the same, and must keep the promises slog.c relies on when it
 * indexes its map and segments with the values.
 *
 * Each input is opened twice: as it is, then with every CRC made right
 * before its header, slot or record is decoded, so that mutations get
 * past the CRCs to the field checks behind them.  The parsers get copies
 * of exactly the length they are told, so reading past it is an ASan
 * error.  Without the free list of slog.c, a pad record sends the walk to
 * the next higher segment.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/softdev/slog-format.h"
#include "tests/unit/slog-equal.h"

#define MAGIC           "SDCOMPR"   /* and a NUL: softdev-compress's */
#define CAS_MAGIC       "SDCAS\0\0"  /* softdev-cas's */
#define MAX_WALK        16          /* segments the log walk visits */
/*
 * Record bytes the map entries may make us decode per input: thousands of
 * entries pointing at one big record would otherwise make inputs slow.
 */
#define MAP_BUDGET      (16u << 20)
/* The fields of the header and of a slot, before their reserved bytes */
#define HEADER_FIELDS   88u
#define SLOT_FIELDS     60u

#define PROPERTY(cond) do { \
    if (!(cond)) { \
        fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, \
                __LINE__, #cond); \
        abort(); \
    } \
} while (0)

typedef struct Image {
    const uint8_t *data;
    size_t size;
    bool fix_crcs;              /* make CRCs right before decoding */
    const char *magic;          /* softdev-compress's, or softdev-cas's */
} Image;

/*
 * Copy @len bytes of the image from @off to @buf: zeroes past the end of
 * the input, as a read past the end of a file gives.
 */
static void image_copy(const Image *img, uint64_t off, uint8_t *buf,
                       size_t len)
{
    size_t n = 0;

    if (off < img->size) {
        n = img->size - off < len ? img->size - off : len;
        memcpy(buf, img->data + off, n);
    }
    memset(buf + n, 0, len - n);
}

/* The same in a new buffer of exactly @len bytes */
static uint8_t *image_read(const Image *img, uint64_t off, size_t len)
{
    uint8_t *buf = malloc(len ? len : 1);

    if (!buf) {
        abort();
    }
    image_copy(img, off, buf, len);
    return buf;
}

/*
 * Make the CRCs of a header, a slot or a record right, where
 * docs/specs/softdev-compress.rst puts them
 */
static void fix_header_crc(uint8_t *buf)
{
    slog_st32(buf + 124, slog_crc32c(0, buf, 124));
}

static void fix_slot_crc(uint8_t *buf)
{
    slog_st32(buf + 4, slog_crc32c(0, buf + 8, SLOG_SLOT_BYTES - 8));
}

/* Only a payload that is all readable, or the CRC would read past @avail */
static void fix_record_crc(uint8_t *buf, size_t avail, const SlogHeader *h)
{
    uint32_t len;

    if (avail < SLOG_RECORD_HEADER) {
        return;
    }
    len = slog_ld32(buf + 36);
    if (len <= h->max_payload && len <= avail - SLOG_RECORD_HEADER) {
        slog_st32(buf + 4, slog_crc32c(0, buf + 8,
                                       SLOG_RECORD_HEADER - 8 + len));
    }
}

/* Segments a data area can have before it passes SLOG_MAX_FILE */
static uint64_t max_segments(const SlogHeader *h)
{
    return (SLOG_MAX_FILE - h->data_offset) / h->segment_size;
}

/*
 * What slog.c takes for granted in a header that decoded: the layout
 * fits, so map and segment offsets computed from it neither overlap nor
 * overflow.
 */
static void check_header(const Image *img, const uint8_t *in,
                         const SlogHeader *h)
{
    SlogHeader again, fresh;
    uint8_t *buf;
    const char *why = NULL;

    PROPERTY(h->cluster_size >= SLOG_MIN_CLUSTER &&
             h->cluster_size <= SLOG_MAX_CLUSTER &&
             !(h->cluster_size & (h->cluster_size - 1)));
    PROPERTY(h->segment_size >= SLOG_MIN_SEGMENT &&
             h->segment_size <= SLOG_MAX_SEGMENT &&
             !(h->segment_size & (h->segment_size - 1)));
    PROPERTY((h->algorithm == SLOG_ALG_ZSTD && !h->extra_size && h->level) ||
             (h->algorithm == SLOG_ALG_SHA256 &&
              h->extra_size == SLOG_HASH_SIZE && !h->level));
    PROPERTY(h->max_payload == h->cluster_size + h->extra_size);
    PROPERTY(h->max_record == slog_record_size(h->max_payload));
    PROPERTY(h->segment_size >= 4 * (uint64_t)h->max_record);
    PROPERTY(h->nb_clusters && h->nb_clusters <= SLOG_MAX_CLUSTERS &&
             h->nb_clusters * h->cluster_size == h->virtual_size);
    PROPERTY(h->map_entries_size >= h->nb_clusters * 8 &&
             h->map_entries_size % SLOG_MAP_BLOCK == 0);
    PROPERTY(h->map_size == h->map_entries_size / 8 * (8 + h->extra_size) &&
             h->map_size % SLOG_MAP_BLOCK == 0);
    for (int i = 0; i < 2; i++) {
        PROPERTY(h->map_offset[i] >= SLOG_META_END &&
                 h->map_offset[i] <= SLOG_MAX_FILE - h->map_size &&
                 h->data_offset >= h->map_offset[i] + h->map_size);
    }
    PROPERTY(h->map_offset[0] >= h->map_offset[1] + h->map_size ||
             h->map_offset[1] >= h->map_offset[0] + h->map_size);
    PROPERTY(h->data_offset <= SLOG_MAX_FILE / 2 && max_segments(h) > 0);

    buf = malloc(SLOG_HEADER_SIZE);
    if (!buf) {
        abort();
    }
    slog_header_encode(h, buf);
    PROPERTY(slog_header_decode(buf, SLOG_HEADER_BYTES, img->magic, &again,
                                &why) == 0);
    PROPERTY(slog_header_equal(h, &again));
    /* Only the reserved bytes (and so the CRC) may differ */
    PROPERTY(!memcmp(buf, in, HEADER_FIELDS));
    free(buf);

    /* Its parameters are valid, so a fresh image of them must be too */
    if (h->algorithm == SLOG_ALG_SHA256) {
        PROPERTY(slog_header_init_cas(&fresh, img->magic, h->virtual_size,
                                      h->cluster_size, h->segment_size,
                                      &why) == 0);
    } else {
        PROPERTY(slog_header_init(&fresh, img->magic, h->virtual_size,
                                  h->cluster_size, h->segment_size, h->level,
                                  &why) == 0);
    }
    PROPERTY(fresh.nb_clusters == h->nb_clusters &&
             fresh.map_size == h->map_size &&
             fresh.max_record == h->max_record);
}

/* Decode the slot at @in; true if it is valid */
static bool check_slot(const uint8_t *in, const SlogHeader *h,
                       SlogSlot *slot)
{
    SlogSlot again;
    uint8_t *buf;
    const char *why = NULL;
    int ret = slog_slot_decode(in, SLOG_SLOT_BYTES, h, slot, &why);

    if (ret < 0) {
        PROPERTY((ret == -ENOENT || ret == -EINVAL) && why);
        return false;
    }
    PROPERTY(slot->map_area <= 1);
    PROPERTY(slot->nb_segments <= max_segments(h) &&
             slot->head_segment < slot->nb_segments);
    PROPERTY(slot->head_offset < h->segment_size &&
             slot->head_offset % SLOG_SECTOR == 0);

    buf = malloc(SLOG_SLOT_BYTES);
    if (!buf) {
        abort();
    }
    slog_slot_encode(slot, buf);
    PROPERTY(slog_slot_decode(buf, SLOG_SLOT_BYTES, h, &again, &why) == 0);
    PROPERTY(slog_slot_equal(slot, &again));
    PROPERTY(!memcmp(buf, in, 4) &&
             !memcmp(buf + 8, in + 8, SLOT_FIELDS - 8));
    free(buf);
    return true;
}

/*
 * Decode the record at @in, @avail bytes of which are readable; true if
 * it is valid.  slog.c applies valid records to its map without further
 * checks, so their clusters must be inside the disk.
 */
static bool check_record(const uint8_t *in, size_t avail, const SlogHeader *h,
                         SlogRecord *rec)
{
    SlogRecord again;
    uint8_t *buf;
    const char *why = NULL;
    int ret = slog_record_decode(in, avail, h, rec, &why);

    if (ret < 0) {
        PROPERTY(ret == -EINVAL && why);
        return false;
    }
    PROPERTY(rec->payload_len <= h->max_payload);
    PROPERTY(rec->size == slog_record_size(rec->payload_len) &&
             rec->size <= avail && rec->size <= h->max_record);
    PROPERTY(rec->type == SLOG_REC_PAD || rec->type == SLOG_REC_DATA ||
             rec->type == SLOG_REC_ZERO ||
             (rec->type == SLOG_REC_REF && h->algorithm == SLOG_ALG_SHA256));
    PROPERTY(!(rec->flags & SLOG_REC_MOVE) ||
             (rec->src && rec->src != SLOG_ENTRY_BAD));
    switch (rec->type) {
    case SLOG_REC_PAD:
        PROPERTY(!rec->payload_len);
        break;
    case SLOG_REC_DATA:
        PROPERTY(rec->cluster < h->nb_clusters && rec->count == 1);
        if (h->algorithm == SLOG_ALG_SHA256) {
            PROPERTY(rec->encoding == SLOG_ENC_RAW &&
                     rec->payload_len == h->max_payload);
        } else {
            PROPERTY(rec->encoding == SLOG_ENC_ZSTD ||
                     (rec->encoding == SLOG_ENC_RAW &&
                      rec->payload_len == h->cluster_size));
        }
        break;
    case SLOG_REC_REF:
        /* Every pair names a cluster of the disk and a possible record */
        PROPERTY(rec->count && rec->payload_len == rec->count * 16);
        for (uint32_t i = 0; i < rec->count; i++) {
            uint64_t e = slog_ref_entry(in + SLOG_RECORD_HEADER, i);

            PROPERTY(slog_ref_cluster(in + SLOG_RECORD_HEADER, i) <
                     h->nb_clusters);
            PROPERTY(e && e != SLOG_ENTRY_BAD);
        }
        break;
    case SLOG_REC_ZERO:
        PROPERTY(rec->cluster < h->nb_clusters && rec->count &&
                 rec->count <= h->nb_clusters - rec->cluster);
        break;
    }

    /* Encode it again, into a buffer of exactly its size */
    buf = malloc(rec->size);
    if (!buf) {
        abort();
    }
    memset(buf, 0xa5, rec->size);
    memcpy(buf + SLOG_RECORD_HEADER, in + SLOG_RECORD_HEADER,
           rec->payload_len);
    slog_record_encode(rec, buf);
    PROPERTY(slog_record_decode(buf, rec->size, h, &again, &why) == 0);
    PROPERTY(slog_record_equal(rec, &again));
    /* The header has no reserved bytes: all but the padding is the same */
    PROPERTY(!memcmp(buf, in, SLOG_RECORD_HEADER + rec->payload_len));
    for (uint32_t i = SLOG_RECORD_HEADER + rec->payload_len; i < rec->size;
         i++) {
        PROPERTY(buf[i] == 0);
    }
    free(buf);
    return true;
}

/*
 * What slog.c relies on for an entry that passed slog_entry_check(): its
 * record lies in one of the first @nb_segments segments.
 */
static void check_entry(const SlogHeader *h, uint64_t nb_segments, uint64_t e)
{
    uint64_t off = slog_entry_offset(e);
    uint32_t size = slog_entry_size(e);
    uint64_t seg;

    PROPERTY(slog_entry_make(off, size) == e);
    PROPERTY(size >= SLOG_SECTOR && size <= h->max_record);
    PROPERTY(off >= h->data_offset);
    seg = slog_segment_of(h, off);
    PROPERTY(seg < nb_segments);
    PROPERTY(off - slog_segment_offset(h, seg) <= h->segment_size - size);
}

/* The map of @slot, and the records of the entries that pass the check */
static void check_map(const Image *img, const SlogHeader *h,
                      const SlogSlot *slot)
{
    uint64_t map = h->map_offset[slot->map_area];
    uint64_t budget = MAP_BUDGET;

    for (uint64_t c = 0; c < h->map_entries_size / 8; c++) {
        uint64_t off = map + c * 8;
        uint8_t raw[8], *buf;
        SlogRecord rec;
        uint32_t size;
        uint64_t e;

        if (off >= img->size) {
            break;              /* the rest of the map reads as zeroes */
        }
        image_copy(img, off, raw, sizeof(raw));
        e = slog_ld64(raw);
        /* slog.c drops entries past the disk's clusters */
        if (!e || c >= h->nb_clusters ||
            !slog_entry_check(h, slot->nb_segments, e)) {
            continue;
        }
        check_entry(h, slot->nb_segments, e);
        size = slog_entry_size(e);
        if (slog_entry_offset(e) >= img->size || size > budget) {
            continue;           /* zeroes, which hold no record */
        }
        budget -= size;
        buf = image_read(img, slog_entry_offset(e), size);
        if (img->fix_crcs) {
            fix_record_crc(buf, size, h);
        }
        check_record(buf, size, h, &rec);
        free(buf);
    }
}

/*
 * Replay as slog_replay() does: records of the slot's epoch in sequence,
 * from the head on, until one is missing, corrupt, of another epoch or
 * out of sequence, or the log leaves the input.
 */
static void walk_log(const Image *img, const SlogHeader *h,
                     const SlogSlot *slot)
{
    uint64_t seg = slot->head_segment;
    uint64_t head = slot->head_offset;
    uint64_t seq = slot->next_seq;

    for (int walked = 0; walked < MAX_WALK; walked++) {
        uint64_t start = slog_segment_offset(h, seg) + head;
        uint64_t len = h->segment_size - head;
        uint64_t pos = 0;
        bool next = false;
        uint8_t *buf;

        if (start >= img->size) {
            return;             /* nothing was ever written there */
        }
        /*
         * A record starting in the input ends within max_record bytes
         * after it: no need to read more of the segment than that.
         */
        if (len > img->size - start + h->max_record) {
            len = img->size - start + h->max_record;
        } else {
            next = true;        /* a full segment goes on in the next */
        }
        buf = image_read(img, start, len);
        while (pos < len) {
            SlogRecord rec;

            if (start + pos >= img->size) {
                next = false;   /* the end of the input */
                break;
            }
            if (img->fix_crcs) {
                fix_record_crc(buf + pos, len - pos, h);
            }
            if (!check_record(buf + pos, len - pos, h, &rec) ||
                rec.epoch != slot->epoch || rec.seq != seq) {
                next = false;
                break;
            }
            if (rec.type != SLOG_REC_PAD) {
                /* The entry replay gives the record's cluster */
                uint64_t e = slog_entry_make(start + pos, rec.size);

                PROPERTY(slog_entry_offset(e) == start + pos &&
                         slog_entry_size(e) == rec.size);
                PROPERTY(slog_entry_check(h, seg + 1, e));
                check_entry(h, seg + 1, e);
            }
            for (uint32_t i = 0; rec.type == SLOG_REC_REF && i < rec.count;
                 i++) {
                /* slog_apply() takes a pair's entry only if it checks */
                uint64_t e = slog_ref_entry(buf + pos + SLOG_RECORD_HEADER,
                                            i);

                if (slog_entry_check(h, seg + 1, e)) {
                    check_entry(h, seg + 1, e);
                }
            }
            seq++;
            pos += rec.size;
            if (rec.type == SLOG_REC_PAD) {
                next = true;
                break;
            }
        }
        free(buf);
        if (!next || seg + 1 >= max_segments(h)) {
            return;
        }
        seg++;
        head = 0;
    }
}

/* Open @img as slog_open() does, checking everything on the way */
static void open_image(const Image *img)
{
    SlogSlot slots[2];
    bool valid[2];
    SlogHeader h;
    const char *why = NULL;
    uint8_t *buf;
    int ret, i;

    /* slog_header_decode() needs SLOG_HEADER_BYTES, not the whole 4 KiB */
    buf = image_read(img, 0, SLOG_HEADER_BYTES);
    if (img->fix_crcs) {
        fix_header_crc(buf);
    }
    ret = slog_header_decode(buf, SLOG_HEADER_BYTES, img->magic, &h, &why);
    if (ret < 0) {
        PROPERTY((ret == -EINVAL || ret == -ENOTSUP || ret == -EFBIG) &&
                 why);
        free(buf);
        return;
    }
    check_header(img, buf, &h);
    free(buf);

    for (i = 0; i < 2; i++) {
        buf = image_read(img, SLOG_SLOT_OFFSET(i), SLOG_SLOT_BYTES);
        if (img->fix_crcs) {
            fix_slot_crc(buf);
        }
        valid[i] = check_slot(buf, &h, &slots[i]);
        free(buf);
    }
    if (!valid[0] && !valid[1]) {
        return;
    }
    /* The newest valid slot, as slog_open() picks it */
    i = !valid[0] || (valid[1] && slots[1].generation > slots[0].generation);

    check_map(img, &h, &slots[i]);
    walk_log(img, &h, &slots[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Image img = { .data = data, .size = data ? size : 0 };

    /* The magic picks the format, as probing does */
    img.magic = img.size >= 8 && !memcmp(data, CAS_MAGIC, 8) ? CAS_MAGIC
                                                            : MAGIC;

    open_image(&img);
    img.fix_crcs = true;
    open_image(&img);
    return 0;
}
