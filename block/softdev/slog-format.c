/*
 * Parsing and encoding of softdev's log-structured image format
 * (slog-format.h, docs/specs/softdev-compress.rst).  Plain C without
 * QEMU: the fuzz target and the unit tests link it alone.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <string.h>

#include "slog-format.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

/* CRC-32C four bits at a time: the fallback without SSE4.2 */
static const uint32_t slog_crc32c_nibble[16] = {
    0x00000000, 0x105ec76f, 0x20bd8ede, 0x30e349b1,
    0x417b1dbc, 0x5125dad3, 0x61c69362, 0x7198540d,
    0x82f63b78, 0x92a8fc17, 0xa24bb5a6, 0xb21572c9,
    0xc38d26c4, 0xd3d3e1ab, 0xe330a81a, 0xf36e6f75,
};

static uint32_t slog_crc32c_soft(uint32_t crc, const uint8_t *p, size_t len)
{
    while (len--) {
        crc ^= *p++;
        crc = (crc >> 4) ^ slog_crc32c_nibble[crc & 15];
        crc = (crc >> 4) ^ slog_crc32c_nibble[crc & 15];
    }
    return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t slog_crc32c_sse42(uint32_t crc, const uint8_t *p, size_t len)
{
    uint64_t c = crc;

    for (; len >= 8; len -= 8, p += 8) {
        uint64_t v;

        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
    }
    crc = c;
    for (; len; len--) {
        crc = _mm_crc32_u8(crc, *p++);
    }
    return crc;
}
#endif

uint32_t slog_crc32c(uint32_t crc, const void *buf, size_t len)
{
    crc = ~crc;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2")) {
        return ~slog_crc32c_sse42(crc, buf, len);
    }
#endif
    return ~slog_crc32c_soft(crc, buf, len);
}

static bool is_pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

static uint64_t round_up(uint64_t v, uint64_t align)
{
    return (v + align - 1) / align * align;
}

/* Header layout (little-endian): see docs/specs/softdev-compress.rst */
enum {
    H_MAGIC = 0, H_VERSION = 8, H_HEADER_SIZE = 12, H_INCOMPAT = 16,
    H_COMPAT = 24, H_VIRTUAL_SIZE = 32, H_CLUSTER_SIZE = 40,
    H_SEGMENT_SIZE = 44, H_MAP0 = 48, H_MAP1 = 56, H_MAP_SIZE = 64,
    H_DATA_OFFSET = 72, H_ALGORITHM = 80, H_LEVEL = 84,
    H_CRC = SLOG_HEADER_BYTES - 4,
};

/* The derived fields, and the checks shared by init and decode */
static int slog_header_check(SlogHeader *h, const char **why)
{
    uint64_t map_end;

    if (!is_pow2(h->cluster_size) || h->cluster_size < SLOG_MIN_CLUSTER ||
        h->cluster_size > SLOG_MAX_CLUSTER) {
        *why = "cluster size must be a power of two from 4 KiB to 1 MiB";
        return -EINVAL;
    }
    if (!is_pow2(h->segment_size) || h->segment_size < SLOG_MIN_SEGMENT ||
        h->segment_size > SLOG_MAX_SEGMENT) {
        *why = "segment size must be a power of two from 1 to 16 MiB and "
               "hold four clusters";
        return -EINVAL;
    }
    if (!h->virtual_size || h->virtual_size % h->cluster_size) {
        *why = "virtual size must be a non-zero multiple of the cluster size";
        return -EINVAL;
    }
    h->nb_clusters = (h->virtual_size + h->cluster_size - 1) /
                     h->cluster_size;
    if (h->nb_clusters > SLOG_MAX_CLUSTERS) {
        *why = "virtual size is too large for the cluster size";
        return -EFBIG;
    }
    switch (h->algorithm) {
    case SLOG_ALG_ZSTD:
        if (h->level < SLOG_MIN_LEVEL || h->level > SLOG_MAX_LEVEL ||
            !h->level) {
            *why = "unknown compression level";
            return -EINVAL;
        }
        h->extra_size = 0;
        break;
    case SLOG_ALG_SHA256:
        if (h->level) {
            *why = "a content-addressed image has no level";
            return -EINVAL;
        }
        h->extra_size = SLOG_HASH_SIZE;
        break;
    default:
        *why = "unknown algorithm";
        return -EINVAL;
    }
    h->max_payload = h->cluster_size + h->extra_size;
    h->max_record = slog_record_size(h->max_payload);
    if (h->segment_size < 4 * (uint64_t)h->max_record) {
        *why = "segment size must be a power of two from 1 to 16 MiB and "
               "hold four clusters";
        return -EINVAL;
    }
    /* Per 512 entries: a 4096-byte block of entries, their extra bytes */
    h->map_entries_size = round_up(h->nb_clusters * 8, SLOG_MAP_BLOCK);
    if (h->map_size != h->map_entries_size / 8 * (8 + h->extra_size)) {
        *why = "map size does not match the virtual size";
        return -EINVAL;
    }
    map_end = 0;
    for (int i = 0; i < 2; i++) {
        uint64_t o = h->map_offset[i];

        if (o % SLOG_MAP_BLOCK || o < SLOG_META_END ||
            o > SLOG_MAX_FILE - h->map_size) {
            *why = "map area out of bounds";
            return -EINVAL;
        }
        if (o + h->map_size > map_end) {
            map_end = o + h->map_size;
        }
    }
    if (h->map_offset[0] < h->map_offset[1] + h->map_size &&
        h->map_offset[1] < h->map_offset[0] + h->map_size) {
        *why = "map areas overlap";
        return -EINVAL;
    }
    if (h->data_offset % SLOG_MAP_BLOCK || h->data_offset < map_end ||
        h->data_offset > SLOG_MAX_FILE / 2) {
        *why = "data area out of bounds";
        return -EINVAL;
    }
    return 0;
}

static int slog_header_init_alg(SlogHeader *h, const char *magic,
                                uint64_t virtual_size, uint32_t cluster_size,
                                uint32_t segment_size, uint32_t algorithm,
                                int32_t level, const char **why)
{
    uint64_t clusters, extra = algorithm == SLOG_ALG_SHA256 ?
                               SLOG_HASH_SIZE : 0;

    memset(h, 0, sizeof(*h));
    memcpy(h->magic, magic, sizeof(h->magic));
    h->version = SLOG_VERSION;
    h->header_size = SLOG_HEADER_SIZE;
    h->virtual_size = virtual_size;
    h->cluster_size = cluster_size;
    h->segment_size = segment_size;
    h->algorithm = algorithm;
    h->level = level;
    clusters = cluster_size ? (virtual_size + cluster_size - 1) /
                              cluster_size : 0;
    if (clusters > SLOG_MAX_CLUSTERS) {
        *why = "virtual size is too large for the cluster size";
        return -EFBIG;
    }
    h->map_size = round_up(clusters * 8, SLOG_MAP_BLOCK) / 8 * (8 + extra);
    h->map_offset[0] = SLOG_META_END;
    h->map_offset[1] = round_up(SLOG_META_END + h->map_size, SLOG_MAP_BLOCK);
    h->data_offset = round_up(h->map_offset[1] + h->map_size,
                              SLOG_MAP_BLOCK);
    return slog_header_check(h, why);
}

int slog_header_init(SlogHeader *h, const char *magic, uint64_t virtual_size,
                     uint32_t cluster_size, uint32_t segment_size,
                     int32_t level, const char **why)
{
    return slog_header_init_alg(h, magic, virtual_size, cluster_size,
                                segment_size, SLOG_ALG_ZSTD, level, why);
}

int slog_header_init_cas(SlogHeader *h, const char *magic,
                         uint64_t virtual_size, uint32_t cluster_size,
                         uint32_t segment_size, const char **why)
{
    return slog_header_init_alg(h, magic, virtual_size, cluster_size,
                                segment_size, SLOG_ALG_SHA256, 0, why);
}

void slog_header_encode(const SlogHeader *h, uint8_t *buf)
{
    memset(buf, 0, SLOG_HEADER_SIZE);
    memcpy(buf + H_MAGIC, h->magic, 8);
    slog_st32(buf + H_VERSION, h->version);
    slog_st32(buf + H_HEADER_SIZE, h->header_size);
    slog_st64(buf + H_INCOMPAT, h->incompat_features);
    slog_st64(buf + H_COMPAT, h->compat_features);
    slog_st64(buf + H_VIRTUAL_SIZE, h->virtual_size);
    slog_st32(buf + H_CLUSTER_SIZE, h->cluster_size);
    slog_st32(buf + H_SEGMENT_SIZE, h->segment_size);
    slog_st64(buf + H_MAP0, h->map_offset[0]);
    slog_st64(buf + H_MAP1, h->map_offset[1]);
    slog_st64(buf + H_MAP_SIZE, h->map_size);
    slog_st64(buf + H_DATA_OFFSET, h->data_offset);
    slog_st32(buf + H_ALGORITHM, h->algorithm);
    slog_st32(buf + H_LEVEL, (uint32_t)h->level);
    slog_st32(buf + H_CRC, slog_crc32c(0, buf, H_CRC));
}

int slog_header_decode(const uint8_t *buf, size_t len, const char *magic,
                       SlogHeader *h, const char **why)
{
    memset(h, 0, sizeof(*h));
    if (len < SLOG_HEADER_BYTES || memcmp(buf + H_MAGIC, magic, 8)) {
        *why = "not an image of this format (bad magic)";
        return -EINVAL;
    }
    if (slog_ld32(buf + H_CRC) != slog_crc32c(0, buf, H_CRC)) {
        *why = "image header is corrupt (checksum mismatch)";
        return -EINVAL;
    }
    memcpy(h->magic, buf + H_MAGIC, 8);
    h->version = slog_ld32(buf + H_VERSION);
    h->header_size = slog_ld32(buf + H_HEADER_SIZE);
    h->incompat_features = slog_ld64(buf + H_INCOMPAT);
    h->compat_features = slog_ld64(buf + H_COMPAT);
    h->virtual_size = slog_ld64(buf + H_VIRTUAL_SIZE);
    h->cluster_size = slog_ld32(buf + H_CLUSTER_SIZE);
    h->segment_size = slog_ld32(buf + H_SEGMENT_SIZE);
    h->map_offset[0] = slog_ld64(buf + H_MAP0);
    h->map_offset[1] = slog_ld64(buf + H_MAP1);
    h->map_size = slog_ld64(buf + H_MAP_SIZE);
    h->data_offset = slog_ld64(buf + H_DATA_OFFSET);
    h->algorithm = slog_ld32(buf + H_ALGORITHM);
    h->level = (int32_t)slog_ld32(buf + H_LEVEL);
    if (h->version != SLOG_VERSION) {
        *why = "unsupported format version";
        return -ENOTSUP;
    }
    if (h->incompat_features) {
        *why = "image uses unknown incompatible features";
        return -ENOTSUP;
    }
    if (h->header_size != SLOG_HEADER_SIZE) {
        *why = "unsupported header size";
        return -EINVAL;
    }
    return slog_header_check(h, why);
}

/* Slot layout */
enum {
    S_MAGIC = 0, S_CRC = 4, S_GENERATION = 8, S_EPOCH = 16, S_MAP_AREA = 20,
    S_NEXT_SEQ = 24, S_HEAD_SEGMENT = 32, S_HEAD_OFFSET = 40,
    S_NB_SEGMENTS = 48, S_FLAGS = 56,
};
#define SLOG_SLOT_MAGIC 0x50434453u     /* "SDCP" */

void slog_slot_encode(const SlogSlot *slot, uint8_t *buf)
{
    memset(buf, 0, SLOG_SLOT_BYTES);
    slog_st32(buf + S_MAGIC, SLOG_SLOT_MAGIC);
    slog_st64(buf + S_GENERATION, slot->generation);
    slog_st32(buf + S_EPOCH, slot->epoch);
    slog_st32(buf + S_MAP_AREA, slot->map_area);
    slog_st64(buf + S_NEXT_SEQ, slot->next_seq);
    slog_st64(buf + S_HEAD_SEGMENT, slot->head_segment);
    slog_st64(buf + S_HEAD_OFFSET, slot->head_offset);
    slog_st64(buf + S_NB_SEGMENTS, slot->nb_segments);
    slog_st32(buf + S_FLAGS, slot->flags);
    slog_st32(buf + S_CRC, slog_crc32c(0, buf + S_GENERATION,
                                       SLOG_SLOT_BYTES - S_GENERATION));
}

int slog_slot_decode(const uint8_t *buf, size_t len, const SlogHeader *h,
                     SlogSlot *slot, const char **why)
{
    uint64_t max_segments = (SLOG_MAX_FILE - h->data_offset) /
                            h->segment_size;

    memset(slot, 0, sizeof(*slot));
    if (len < SLOG_SLOT_BYTES || slog_ld32(buf + S_MAGIC) != SLOG_SLOT_MAGIC) {
        *why = "no checkpoint in the slot";
        return -ENOENT;
    }
    if (slog_ld32(buf + S_CRC) !=
        slog_crc32c(0, buf + S_GENERATION, SLOG_SLOT_BYTES - S_GENERATION)) {
        *why = "checkpoint slot is corrupt (checksum mismatch)";
        return -EINVAL;
    }
    slot->generation = slog_ld64(buf + S_GENERATION);
    slot->epoch = slog_ld32(buf + S_EPOCH);
    slot->map_area = slog_ld32(buf + S_MAP_AREA);
    slot->next_seq = slog_ld64(buf + S_NEXT_SEQ);
    slot->head_segment = slog_ld64(buf + S_HEAD_SEGMENT);
    slot->head_offset = slog_ld64(buf + S_HEAD_OFFSET);
    slot->nb_segments = slog_ld64(buf + S_NB_SEGMENTS);
    slot->flags = slog_ld32(buf + S_FLAGS);
    if (slot->map_area > 1 || slot->nb_segments > max_segments ||
        slot->head_segment >= slot->nb_segments ||
        slot->head_offset >= h->segment_size ||
        slot->head_offset % SLOG_SECTOR || slot->next_seq > UINT64_MAX / 2 ||
        slot->epoch == UINT32_MAX) {
        *why = "checkpoint slot has fields out of bounds";
        return -EINVAL;
    }
    return 0;
}

/* Record layout */
enum {
    R_MAGIC = 0, R_CRC = 4, R_SEQ = 8, R_EPOCH = 16, R_TYPE = 20,
    R_FLAGS = 21, R_ENCODING = 22, R_CLUSTER = 24, R_COUNT = 32,
    R_PAYLOAD_LEN = 36, R_SRC = 40,
};
#define SLOG_RECORD_MAGIC 0x43524453u   /* "SDRC" */

void slog_record_encode(const SlogRecord *rec, uint8_t *buf)
{
    uint32_t size = slog_record_size(rec->payload_len);

    slog_st32(buf + R_MAGIC, SLOG_RECORD_MAGIC);
    slog_st64(buf + R_SEQ, rec->seq);
    slog_st32(buf + R_EPOCH, rec->epoch);
    buf[R_TYPE] = rec->type;
    buf[R_FLAGS] = rec->flags;
    buf[R_ENCODING] = rec->encoding;
    buf[R_ENCODING + 1] = rec->encoding >> 8;
    slog_st64(buf + R_CLUSTER, rec->cluster);
    slog_st32(buf + R_COUNT, rec->count);
    slog_st32(buf + R_PAYLOAD_LEN, rec->payload_len);
    slog_st64(buf + R_SRC, rec->src);
    memset(buf + SLOG_RECORD_HEADER + rec->payload_len, 0,
           size - SLOG_RECORD_HEADER - rec->payload_len);
    slog_st32(buf + R_CRC, slog_crc32c(0, buf + R_SEQ,
                                       SLOG_RECORD_HEADER - R_SEQ +
                                       rec->payload_len));
}

int slog_record_decode(const uint8_t *buf, size_t avail, const SlogHeader *h,
                       SlogRecord *rec, const char **why)
{
    memset(rec, 0, sizeof(*rec));
    if (avail < SLOG_RECORD_HEADER ||
        slog_ld32(buf + R_MAGIC) != SLOG_RECORD_MAGIC) {
        *why = "no record";
        return -EINVAL;
    }
    rec->seq = slog_ld64(buf + R_SEQ);
    rec->epoch = slog_ld32(buf + R_EPOCH);
    rec->type = buf[R_TYPE];
    rec->flags = buf[R_FLAGS];
    rec->encoding = buf[R_ENCODING] | (buf[R_ENCODING + 1] << 8);
    rec->cluster = slog_ld64(buf + R_CLUSTER);
    rec->count = slog_ld32(buf + R_COUNT);
    rec->payload_len = slog_ld32(buf + R_PAYLOAD_LEN);
    rec->src = slog_ld64(buf + R_SRC);
    if (rec->payload_len > h->max_payload) {
        *why = "record payload longer than a cluster";
        return -EINVAL;
    }
    rec->size = slog_record_size(rec->payload_len);
    if (rec->size > avail) {
        *why = "record runs past the end of its segment";
        return -EINVAL;
    }
    if (slog_ld32(buf + R_CRC) !=
        slog_crc32c(0, buf + R_SEQ,
                    SLOG_RECORD_HEADER - R_SEQ + rec->payload_len)) {
        *why = "record is corrupt (checksum mismatch)";
        return -EINVAL;
    }
    switch (rec->type) {
    case SLOG_REC_PAD:
        if (rec->payload_len || rec->flags) {
            *why = "malformed pad record";
            return -EINVAL;
        }
        return 0;
    case SLOG_REC_DATA:
        if (rec->cluster >= h->nb_clusters || rec->count != 1 ||
            rec->flags & ~SLOG_REC_MOVE ||
            (h->algorithm == SLOG_ALG_ZSTD &&
             (rec->encoding > SLOG_ENC_ZSTD ||
              (rec->encoding == SLOG_ENC_RAW &&
               rec->payload_len != h->cluster_size) ||
              (rec->encoding == SLOG_ENC_ZSTD && !rec->payload_len))) ||
            (h->algorithm == SLOG_ALG_SHA256 &&
             (rec->encoding != SLOG_ENC_RAW ||
              rec->payload_len != h->max_payload))) {
            *why = "malformed data record";
            return -EINVAL;
        }
        break;
    case SLOG_REC_REF:
        if (h->algorithm != SLOG_ALG_SHA256 || rec->flags & ~SLOG_REC_MOVE ||
            rec->encoding || !rec->count ||
            rec->payload_len != rec->count * SLOG_REF_PAIR ||
            rec->cluster >= h->nb_clusters) {
            *why = "malformed ref record";
            return -EINVAL;
        }
        for (uint32_t i = 0; i < rec->count; i++) {
            const uint8_t *payload = buf + SLOG_RECORD_HEADER;
            uint64_t e = slog_ref_entry(payload, i);

            if (slog_ref_cluster(payload, i) >= h->nb_clusters || !e ||
                e == SLOG_ENTRY_BAD) {
                *why = "malformed ref record";
                return -EINVAL;
            }
        }
        break;
    case SLOG_REC_ZERO:
        if (rec->payload_len || rec->flags || !rec->count ||
            rec->cluster >= h->nb_clusters ||
            rec->count > h->nb_clusters - rec->cluster) {
            *why = "malformed zero record";
            return -EINVAL;
        }
        return 0;
    default:
        *why = "unknown record type";
        return -EINVAL;
    }
    if ((rec->flags & SLOG_REC_MOVE) && (!rec->src ||
                                         rec->src == SLOG_ENTRY_BAD)) {
        *why = "malformed move record";
        return -EINVAL;
    }
    return 0;
}

bool slog_entry_check(const SlogHeader *h, uint64_t nb_segments, uint64_t e)
{
    uint64_t off = slog_entry_offset(e);
    uint32_t size = slog_entry_size(e);
    uint64_t seg;

    if (size < slog_record_size(0) || size > h->max_record ||
        off < h->data_offset ||
        off - h->data_offset >= nb_segments * h->segment_size) {
        return false;
    }
    seg = slog_segment_of(h, off);
    return off + size <= slog_segment_offset(h, seg) + h->segment_size;
}
