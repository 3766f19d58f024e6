/*
 * The on-disk format of softdev's log-structured images (softdev-compress
 * and softdev-cas; docs/specs/softdev-compress.rst, softdev-cas.rst): a header, two checkpoint slots, two
 * map areas and a data area of segments filled by a log of records.  Only
 * parsing and encoding, without QEMU, so that a fuzzer and the unit tests
 * call it directly; block/softdev/slog.c does the I/O.
 *
 * Every parser checks each field against the header's bounds before the
 * value indexes anything, and says in *@why what it rejected.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SOFTDEV_SLOG_FORMAT_H
#define SOFTDEV_SLOG_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SLOG_VERSION            1
#define SLOG_SECTOR             512u
#define SLOG_HEADER_SIZE        4096u
#define SLOG_HEADER_BYTES       128u      /* what the header's CRC covers */
#define SLOG_SLOT_BYTES         128u
#define SLOG_SLOT_OFFSET(i)     (4096u + (i) * 4096u)
#define SLOG_META_END           12288u    /* header and two slots */
#define SLOG_MAP_BLOCK          4096u     /* map I/O unit: 512 entries */
#define SLOG_RECORD_HEADER      48u

#define SLOG_MIN_CLUSTER        4096u
#define SLOG_MAX_CLUSTER        (1u << 20)
#define SLOG_MIN_SEGMENT        (1u << 20)
#define SLOG_MAX_SEGMENT        (16u << 20)
#define SLOG_DEFAULT_SEGMENT    (4u << 20)
/* 2^31 clusters: 128 TiB at 64 KiB, a 16 GiB map */
#define SLOG_MAX_CLUSTERS       (1ull << 31)
/* Map entries count 512-byte units in 44 bits: 8 PiB */
#define SLOG_MAX_FILE           (1ull << 53)

/* Checkpoint slot flags */
#define SLOG_SLOT_CLEAN         1u        /* closed: no log after it */

/* Record types */
typedef enum SlogRecordType {
    SLOG_REC_PAD = 1,           /* the rest of the segment is unused */
    SLOG_REC_DATA = 2,          /* one cluster's data (payload) */
    SLOG_REC_ZERO = 3,          /* @count clusters read as zeroes */
    /*
     * Content-addressed images: @count (cluster, entry) pairs of 16 bytes
     * in the payload, each cluster now refers to the data record at entry
     */
    SLOG_REC_REF = 4,
} SlogRecordType;

/* DATA payload encodings */
typedef enum SlogEncoding {
    SLOG_ENC_RAW = 0,           /* the cluster as it is */
    SLOG_ENC_ZSTD = 1,          /* one zstd frame of the cluster */
} SlogEncoding;

#define SLOG_REC_MOVE           1u        /* flags: compaction's copy */

/*
 * The header's algorithm: what a data record's payload is.  zstd:
 * compressed (softdev-compress).  SHA-256: content-addressed
 * (softdev-cas): the payload is the cluster's SHA-256 and the cluster raw,
 * records may be shared by several clusters (REF records), and each map
 * area keeps the hash beside every map entry.
 */
#define SLOG_ALG_ZSTD           1u
#define SLOG_ALG_SHA256         2u
#define SLOG_HASH_SIZE          32u
#define SLOG_REF_PAIR           16u       /* a REF record's (cluster, entry) */
#define SLOG_MIN_LEVEL          (-7)
#define SLOG_MAX_LEVEL          22

typedef struct SlogHeader {
    char magic[8];
    uint32_t version;
    uint32_t header_size;
    uint64_t incompat_features;
    uint64_t compat_features;
    uint64_t virtual_size;
    uint32_t cluster_size;
    uint32_t segment_size;
    uint64_t map_offset[2];
    uint64_t map_size;          /* bytes of each map area */
    uint64_t data_offset;       /* segment 0 */
    uint32_t algorithm;
    int32_t level;              /* the default compression level */
    /* Derived, not stored */
    uint64_t nb_clusters;
    uint32_t extra_size;        /* bytes kept beside each map entry */
    uint32_t max_payload;       /* bytes of the largest payload */
    uint32_t max_record;        /* bytes of the largest record */
    uint64_t map_entries_size;  /* bytes of a map area's entries; the
                                 * extra bytes follow them */
} SlogHeader;

typedef struct SlogSlot {
    uint64_t generation;        /* the newest valid slot wins */
    uint32_t epoch;             /* records after it carry this epoch */
    uint32_t map_area;          /* 0 or 1 */
    uint64_t next_seq;          /* the first record after it */
    uint64_t head_segment;      /* where that record goes */
    uint64_t head_offset;       /* bytes into the segment */
    uint64_t nb_segments;
    uint32_t flags;
} SlogSlot;

typedef struct SlogRecord {
    uint64_t seq;
    uint32_t epoch;
    uint8_t type;               /* SlogRecordType */
    uint8_t flags;              /* SLOG_REC_MOVE */
    uint16_t encoding;          /* SlogEncoding (DATA) */
    uint64_t cluster;
    uint32_t count;             /* clusters (ZERO); 1 otherwise */
    uint32_t payload_len;
    uint64_t src;               /* MOVE: the map entry it replaces */
    uint32_t size;              /* bytes on disk, header to padding */
} SlogRecord;

/* Standard CRC-32C (Castagnoli) of @len bytes, continuing @crc (0 first) */
uint32_t slog_crc32c(uint32_t crc, const void *buf, size_t len);

/* Bytes a record with @payload_len bytes of payload takes on disk */
static inline uint32_t slog_record_size(uint32_t payload_len)
{
    return (SLOG_RECORD_HEADER + payload_len + SLOG_SECTOR - 1) &
           ~(SLOG_SECTOR - 1);
}

/*
 * A fresh header for an image of @virtual_size bytes (0 or -errno with
 * *@why).  The map areas follow the slots, the data area the maps.
 */
int slog_header_init(SlogHeader *h, const char *magic, uint64_t virtual_size,
                     uint32_t cluster_size, uint32_t segment_size,
                     int32_t level, const char **why);
/* The same for a content-addressed image (SLOG_ALG_SHA256) */
int slog_header_init_cas(SlogHeader *h, const char *magic,
                         uint64_t virtual_size, uint32_t cluster_size,
                         uint32_t segment_size, const char **why);
void slog_header_encode(const SlogHeader *h, uint8_t *buf);
/* Decode and check @buf (SLOG_HEADER_BYTES at least): 0, or -EINVAL etc. */
int slog_header_decode(const uint8_t *buf, size_t len, const char *magic,
                       SlogHeader *h, const char **why);

void slog_slot_encode(const SlogSlot *slot, uint8_t *buf);
int slog_slot_decode(const uint8_t *buf, size_t len, const SlogHeader *h,
                     SlogSlot *slot, const char **why);

/*
 * Encode @rec's header into @buf, whose payload (rec->payload_len bytes
 * after the header) is already in place; zeroes the padding and sets the
 * CRC over header and payload.
 */
void slog_record_encode(const SlogRecord *rec, uint8_t *buf);
/*
 * Decode the record at @buf, @avail bytes of which are readable, and
 * check it (magic, fields, size, CRC).  0, or -EINVAL with *@why.
 */
int slog_record_decode(const uint8_t *buf, size_t avail, const SlogHeader *h,
                       SlogRecord *rec, const char **why);

/*
 * Map entries: 0 is a cluster that reads as zeroes; otherwise bits 0-43
 * are the record's file offset and bits 44-63 its size, both in 512-byte
 * units.  SLOG_ENTRY_BAD is never stored: it marks an entry that failed
 * slog_entry_check() at open, whose cluster reads fail with EIO.
 */
#define SLOG_ENTRY_BAD          UINT64_MAX

static inline uint64_t slog_entry_make(uint64_t offset, uint32_t size)
{
    return (offset / SLOG_SECTOR) | ((uint64_t)(size / SLOG_SECTOR) << 44);
}

static inline uint64_t slog_entry_offset(uint64_t e)
{
    return (e & ((1ull << 44) - 1)) * SLOG_SECTOR;
}

static inline uint32_t slog_entry_size(uint64_t e)
{
    return (uint32_t)(e >> 44) * SLOG_SECTOR;
}

/* The segment holding byte @offset of the file (a data-area offset) */
static inline uint64_t slog_segment_of(const SlogHeader *h, uint64_t offset)
{
    return (offset - h->data_offset) / h->segment_size;
}

static inline uint64_t slog_segment_offset(const SlogHeader *h, uint64_t seg)
{
    return h->data_offset + seg * h->segment_size;
}

/*
 * Whether map entry @e (not 0) points at a whole record inside one of the
 * first @nb_segments segments.
 */
bool slog_entry_check(const SlogHeader *h, uint64_t nb_segments, uint64_t e);

/* Little-endian loads and stores (the format is little-endian) */
static inline uint32_t slog_ld32(const uint8_t *p)
{
    return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint64_t slog_ld64(const uint8_t *p)
{
    return slog_ld32(p) | ((uint64_t)slog_ld32(p + 4) << 32);
}

static inline void slog_st32(uint8_t *p, uint32_t v)
{
    p[0] = v;
    p[1] = v >> 8;
    p[2] = v >> 16;
    p[3] = v >> 24;
}

static inline void slog_st64(uint8_t *p, uint64_t v)
{
    slog_st32(p, v);
    slog_st32(p + 4, v >> 32);
}

/* Pair @i of a REF record's payload: the cluster and the entry it takes */
static inline uint64_t slog_ref_cluster(const uint8_t *payload, uint32_t i)
{
    return slog_ld64(payload + i * SLOG_REF_PAIR);
}

static inline uint64_t slog_ref_entry(const uint8_t *payload, uint32_t i)
{
    return slog_ld64(payload + i * SLOG_REF_PAIR + 8);
}

static inline void slog_ref_set(uint8_t *payload, uint32_t i, uint64_t cluster,
                                uint64_t entry)
{
    slog_st64(payload + i * SLOG_REF_PAIR, cluster);
    slog_st64(payload + i * SLOG_REF_PAIR + 8, entry);
}

#endif /* SOFTDEV_SLOG_FORMAT_H */
