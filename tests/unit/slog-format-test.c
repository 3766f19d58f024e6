/*
 * Unit tests of softdev's log-structured image format
 * (block/softdev/slog-format.c, docs/specs/softdev-compress.rst): CRC-32C
 * against known vectors and a bitwise reference, header, slot and record
 * round trips with the spec's byte layout, every check that rejects a
 * field, and the bounds of map entries.
 *
 * The file includes slog-format.c to reach its static portable CRC, which
 * a machine with SSE4.2 never runs through slog_crc32c().
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <stdlib.h>

#include "block/softdev/slog-format.c"
#include "tests/unit/unit-check.h"
#include "tests/unit/slog-equal.h"

#define MAGIC   "SDCOMPR"       /* and a NUL: softdev-compress's */
#define MiB     (1u << 20)
#define KiB     (1u << 10)

/* Deterministic data, so that a failure reproduces */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint8_t rng_byte(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state >> 32;
}

static void rng_fill(uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = rng_byte();
    }
}

/* CRC-32C one bit at a time, straight from the definition */
static uint32_t ref_crc32c(const uint8_t *p, size_t len)
{
    uint32_t crc = 0xffffffff;

    while (len--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) {
            crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78 : crc >> 1;
        }
    }
    return ~crc;
}

static void test_crc32c(void)
{
    static const uint8_t iscsi_inc[32] = {
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
        16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
    };
    const char *digits = "123456789";
    uint8_t buf[1024 + 8];
    uint8_t zeroes[32], ones[32], dec[32];
    bool all_split, all_len, all_soft, all_hw;
    uint32_t crc;

    memset(zeroes, 0, sizeof(zeroes));
    memset(ones, 0xff, sizeof(ones));
    for (int i = 0; i < 32; i++) {
        dec[i] = 31 - i;
    }
    CHECK(slog_crc32c(0, digits, 9) == 0xe3069283);
    CHECK(slog_crc32c(0, zeroes, 32) == 0x8a9136aa);
    CHECK(slog_crc32c(0, ones, 32) == 0x62a8ab43);
    /* RFC 3720 (iSCSI), B.4 */
    CHECK(slog_crc32c(0, iscsi_inc, 32) == 0x46dd794e);
    CHECK(slog_crc32c(0, dec, 32) == 0x113fdb5c);
    CHECK(slog_crc32c(0, buf, 0) == 0);
    CHECK(ref_crc32c((const uint8_t *)digits, 9) == 0xe3069283);

    /* In two pieces, split anywhere, the same as at once */
    all_split = true;
    for (size_t i = 0; i <= 9; i++) {
        crc = slog_crc32c(0, digits, i);
        all_split &= slog_crc32c(crc, digits + i, 9 - i) == 0xe3069283;
    }
    CHECK(all_split);
    /* In many pieces of random lengths, crossing the 8-byte steps */
    rng_fill(buf, 1024);
    crc = 0;
    for (size_t pos = 0, n; pos < 1024; pos += n) {
        n = rng_byte() % 37;
        n = n > 1024 - pos ? 1024 - pos : n;
        crc = slog_crc32c(crc, buf + pos, n);
    }
    CHECK(crc == slog_crc32c(0, buf, 1024));
    CHECK(crc == ref_crc32c(buf, 1024));

    /*
     * Each path against the reference, at every length up to 200 and
     * every alignment, so both the 8-byte steps and the tail count.
     */
    all_len = all_soft = all_hw = true;
    for (size_t len = 0; len <= 200; len++) {
        for (size_t align = 0; align < 8; align++) {
            uint8_t *p = buf + align;
            uint32_t want;

            rng_fill(p, len);
            want = ref_crc32c(p, len);
            all_len &= slog_crc32c(0, p, len) == want;
            all_soft &= ~slog_crc32c_soft(~0u, p, len) == want;
#if defined(__x86_64__)
            if (__builtin_cpu_supports("sse4.2")) {
                all_hw &= ~slog_crc32c_sse42(~0u, p, len) == want;
            }
#endif
        }
    }
    CHECK(all_len);
    CHECK(all_soft);
    CHECK(all_hw);
}

/* 4 MiB, 64 KiB clusters, 1 MiB segments: what most tests use */
static void good_header(SlogHeader *h)
{
    const char *why = NULL;

    if (slog_header_init(h, MAGIC, 4 * MiB, 64 * KiB, MiB, 3, &why) < 0) {
        fprintf(stderr, "slog_header_init: %s\n", why);
        abort();
    }
}

/* Encode @h (with a right CRC) and decode it: the result, and *@why */
static int header_reencode(const SlogHeader *h, const char **why)
{
    uint8_t buf[SLOG_HEADER_SIZE];
    SlogHeader out;

    *why = NULL;
    slog_header_encode(h, buf);
    return slog_header_decode(buf, sizeof(buf), MAGIC, &out, why);
}

/*
 * Rejected with @ret, and *@why (read after the call that set it) saying
 * so with @word in it
 */
static bool rejects(int got, const char *const *why, int ret,
                    const char *word)
{
    if (got != ret || !*why || !strstr(*why, word)) {
        fprintf(stderr, "  got %d (%s), want %d (\"%s\")\n", got,
                *why ? *why : "no reason", ret, word);
        return false;
    }
    return true;
}

/* The same for @call, with *why cleared first so that it cannot be stale */
#define REJECTS(call, ret, word) \
    (why = NULL, rejects((call), &why, (ret), (word)))

/* The byte layout of docs/specs/softdev-compress.rst, and a round trip */
static void test_header_round_trip(void)
{
    uint8_t buf[SLOG_HEADER_SIZE + 16];
    SlogHeader h, out;
    const char *why = NULL;
    bool rest_zero = true;

    good_header(&h);
    CHECK(h.nb_clusters == 64);
    CHECK(h.map_size == 4096);
    CHECK(h.map_offset[0] == 12288 && h.map_offset[1] == 16384);
    CHECK(h.data_offset == 20480);
    CHECK(h.max_record == 66048);
    CHECK(h.version == 1 && h.header_size == 4096);
    CHECK(h.algorithm == SLOG_ALG_ZSTD && h.level == 3);

    memset(buf, 0xee, sizeof(buf));
    slog_header_encode(&h, buf);
    CHECK(!memcmp(buf, "SDCOMPR", 8));
    CHECK(slog_ld32(buf + 8) == 1 && slog_ld32(buf + 12) == 4096);
    CHECK(slog_ld64(buf + 16) == 0 && slog_ld64(buf + 24) == 0);
    CHECK(slog_ld64(buf + 32) == 4 * MiB);
    CHECK(slog_ld32(buf + 40) == 64 * KiB && slog_ld32(buf + 44) == MiB);
    CHECK(slog_ld64(buf + 48) == 12288 && slog_ld64(buf + 56) == 16384);
    CHECK(slog_ld64(buf + 64) == 4096 && slog_ld64(buf + 72) == 20480);
    CHECK(slog_ld32(buf + 80) == 1 && slog_ld32(buf + 84) == 3);
    CHECK(slog_ld32(buf + 124) == ref_crc32c(buf, 124));
    /* Reserved, and the rest of the 4 KiB after the CRC */
    for (size_t i = 88; i < SLOG_HEADER_SIZE; i++) {
        rest_zero &= (i >= 124 && i < 128) || buf[i] == 0;
    }
    CHECK(rest_zero);
    /* The whole 4 KiB is written, and nothing after it */
    CHECK(buf[SLOG_HEADER_SIZE] == 0xee);

    CHECK(slog_header_decode(buf, SLOG_HEADER_SIZE, MAGIC, &out, &why) == 0);
    CHECK(slog_header_equal(&h, &out));
    /* The 128 bytes the CRC covers are all decode needs */
    CHECK(slog_header_decode(buf, SLOG_HEADER_BYTES, MAGIC, &out, &why) == 0);
    CHECK(slog_header_equal(&h, &out));
    CHECK(slog_header_decode(buf, SLOG_HEADER_BYTES - 1, MAGIC, &out,
                             &why) == -EINVAL);

    /* Negative levels and the extremes of the geometry survive too */
    CHECK(slog_header_init(&h, MAGIC, 128 * MiB, MiB, 16 * MiB, -7,
                           &why) == 0);
    slog_header_encode(&h, buf);
    CHECK(slog_header_decode(buf, SLOG_HEADER_SIZE, MAGIC, &out, &why) == 0);
    CHECK(slog_header_equal(&h, &out) && out.level == -7);
    CHECK(slog_header_init(&h, MAGIC, 4 * KiB, 4 * KiB, MiB, 22, &why) == 0);
    slog_header_encode(&h, buf);
    CHECK(slog_header_decode(buf, SLOG_HEADER_SIZE, MAGIC, &out, &why) == 0);
    CHECK(slog_header_equal(&h, &out) && out.nb_clusters == 1);
    /* 2^31 clusters, the most there may be: a 16 GiB map */
    CHECK(slog_header_init(&h, MAGIC, (1ull << 31) * 4096, 4 * KiB, MiB, 1,
                           &why) == 0);
    CHECK(h.nb_clusters == 1ull << 31 && h.map_size == 16ull << 30);
    slog_header_encode(&h, buf);
    CHECK(slog_header_decode(buf, SLOG_HEADER_SIZE, MAGIC, &out, &why) == 0);
    CHECK(slog_header_equal(&h, &out));
}

/* Patch a 32-bit field of an encoded header and make its CRC right */
static void patch32(uint8_t *buf, size_t off, uint32_t v)
{
    slog_st32(buf + off, v);
    slog_st32(buf + 124, ref_crc32c(buf, 124));
}

static void test_header_rejects(void)
{
    uint8_t buf[SLOG_HEADER_SIZE], bad[SLOG_HEADER_SIZE];
    SlogHeader good, h, out;
    const char *why = NULL;
    bool all;

    good_header(&good);
    slog_header_encode(&good, buf);

    /* Magic: another format's, or garbage */
    CHECK(REJECTS(slog_header_decode(buf, sizeof(buf), "SDOTHER", &out,
                                     &why), -EINVAL, "magic"));
    memcpy(bad, buf, sizeof(bad));
    bad[7] = 'X';
    CHECK(REJECTS(slog_header_decode(bad, sizeof(bad), MAGIC, &out, &why),
                  -EINVAL, "magic"));

    /* CRC: any byte it covers, the reserved ones too, and itself */
    all = true;
    for (size_t i = 8; i < SLOG_HEADER_BYTES; i++) {
        memcpy(bad, buf, sizeof(bad));
        bad[i] ^= 0x10;
        why = NULL;
        all &= slog_header_decode(bad, sizeof(bad), MAGIC, &out, &why) ==
               -EINVAL && strstr(why, "checksum");
    }
    CHECK(all);

    /* Patched bytes with a right CRC: the field checks themselves */
    memcpy(bad, buf, sizeof(bad));
    patch32(bad, 8, 2);
    CHECK(REJECTS(slog_header_decode(bad, sizeof(bad), MAGIC, &out, &why),
                  -ENOTSUP, "version"));
    memcpy(bad, buf, sizeof(bad));
    patch32(bad, 20, 1u << 31);         /* bit 63 of incompat_features */
    CHECK(REJECTS(slog_header_decode(bad, sizeof(bad), MAGIC, &out, &why),
                  -ENOTSUP, "incompatible"));
    memcpy(bad, buf, sizeof(bad));
    patch32(bad, 40, 3 * 4096);
    CHECK(REJECTS(slog_header_decode(bad, sizeof(bad), MAGIC, &out, &why),
                  -EINVAL, "cluster size"));

    /* The rest through the struct and slog_header_encode() */
    h = good;
    h.version = 2;
    CHECK(REJECTS(header_reencode(&h, &why), -ENOTSUP, "version"));
    h = good;
    h.version = 0;
    CHECK(REJECTS(header_reencode(&h, &why), -ENOTSUP, "version"));
    h = good;
    h.incompat_features = 1;
    CHECK(REJECTS(header_reencode(&h, &why), -ENOTSUP, "incompatible"));
    /* Unknown compatible features are ignored */
    h = good;
    h.compat_features = ~0ull;
    CHECK(header_reencode(&h, &why) == 0);
    h = good;
    h.header_size = 512;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "header size"));

    h = good;
    h.cluster_size = 48 * KiB;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "cluster size"));
    h = good;
    h.cluster_size = 2 * KiB;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "cluster size"));
    h = good;
    h.cluster_size = 2 * MiB;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "cluster size"));
    h = good;
    h.cluster_size = 0;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "cluster size"));

    h = good;
    h.segment_size = 512 * KiB;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "segment size"));
    h = good;
    h.segment_size = 32 * MiB;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "segment size"));
    h = good;
    h.segment_size = 3 * MiB;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "segment size"));
    /*
     * Four records of a raw 256 KiB cluster are 2 KiB more than 1 MiB;
     * 128 KiB clusters fit.  Both have 4096 bytes of map at 4 MiB.
     */
    h = good;
    h.cluster_size = 256 * KiB;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "four clusters"));
    h = good;
    h.cluster_size = 128 * KiB;
    CHECK(header_reencode(&h, &why) == 0);
    CHECK(REJECTS(slog_header_init(&h, MAGIC, 4 * MiB, MiB, 4 * MiB, 3,
                                   &why), -EINVAL, "four clusters"));
    CHECK(slog_header_init(&h, MAGIC, 8 * MiB, MiB, 8 * MiB, 3, &why) == 0);

    h = good;
    h.virtual_size = 0;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "non-zero multiple"));
    h.map_size = 0;                     /* as an empty disk's map would be */
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "non-zero multiple"));
    h = good;
    h.virtual_size = 4 * MiB + 4096;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "non-zero multiple"));
    h = good;
    h.virtual_size = ((1ull << 31) + 1) * (64 * KiB);
    CHECK(REJECTS(header_reencode(&h, &why), -EFBIG, "too large"));
    CHECK(REJECTS(slog_header_init(&h, MAGIC, ((1ull << 31) + 1) * 4096,
                                   4096, MiB, 3, &why), -EFBIG,
                  "too large"));
    CHECK(REJECTS(slog_header_init(&h, MAGIC, UINT64_MAX & ~0xffffull,
                                   64 * KiB, MiB, 3, &why), -EFBIG,
                  "too large"));

    h = good;
    h.map_size = 8192;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "map size"));
    h = good;
    h.map_size = 0;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "map size"));
    h = good;
    h.virtual_size = 64 * MiB;          /* 8 KiB of map for 1024 clusters */
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "map size"));

    h = good;
    h.map_offset[0] = 8192;             /* over the slots */
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "map area"));
    h = good;
    h.map_offset[0] = 12288 + 512;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "map area"));
    h = good;
    h.map_offset[1] = SLOG_MAX_FILE;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "map area"));
    h = good;
    h.map_offset[1] = UINT64_MAX & ~4095ull;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "map area"));
    h = good;
    h.map_offset[1] = h.map_offset[0];
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "overlap"));
    /* 8 KiB maps 4 KiB apart overlap by half */
    CHECK(slog_header_init(&h, MAGIC, 64 * MiB, 64 * KiB, MiB, 3, &why) == 0);
    h.map_offset[1] = h.map_offset[0] + 4096;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "overlap"));
    /* In the other order, they are fine */
    h = good;
    h.map_offset[0] = 16384;
    h.map_offset[1] = 12288;
    CHECK(header_reencode(&h, &why) == 0);

    h = good;
    h.data_offset = 16384;              /* in map area 1 */
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "data area"));
    h = good;
    h.data_offset = 20480 + 512;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "data area"));
    h = good;
    h.data_offset = SLOG_MAX_FILE / 2 + 4096;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "data area"));
    h = good;
    h.data_offset = 1ull << 40;         /* a gap is allowed */
    CHECK(header_reencode(&h, &why) == 0);

    h = good;
    h.algorithm = 3;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "algorithm"));
    h = good;
    h.algorithm = SLOG_ALG_SHA256;      /* with a level, and no hash area */
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "no level"));
    h.level = 0;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "map size"));
    h = good;
    h.algorithm = 0;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "algorithm"));
    h = good;
    h.level = -8;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "level"));
    h = good;
    h.level = 23;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "level"));
    h = good;
    h.level = 0;                        /* zstd's "default": not in the spec */
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "level"));
    h = good;
    h.level = INT32_MIN;
    CHECK(REJECTS(header_reencode(&h, &why), -EINVAL, "level"));
    h = good;
    h.level = SLOG_MAX_LEVEL;
    CHECK(header_reencode(&h, &why) == 0);
    h.level = SLOG_MIN_LEVEL;
    CHECK(header_reencode(&h, &why) == 0);
}

static int slot_reencode(const SlogSlot *slot, const SlogHeader *h,
                         const char **why)
{
    uint8_t buf[SLOG_SLOT_BYTES];
    SlogSlot out;

    *why = NULL;
    slog_slot_encode(slot, buf);
    return slog_slot_decode(buf, sizeof(buf), h, &out, why);
}

static void test_slot(void)
{
    const SlogSlot good = {
        .generation = 7, .epoch = 3, .map_area = 1, .next_seq = 1000,
        .head_segment = 2, .head_offset = 3 * 4096, .nb_segments = 5,
        .flags = SLOG_SLOT_CLEAN,
    };
    uint8_t buf[SLOG_SLOT_BYTES + 16], bad[SLOG_SLOT_BYTES];
    SlogHeader h;
    SlogSlot slot, out;
    const char *why = NULL;
    uint64_t max_segments;
    bool all;

    good_header(&h);
    max_segments = (SLOG_MAX_FILE - h.data_offset) / h.segment_size;
    memset(buf, 0xee, sizeof(buf));
    slog_slot_encode(&good, buf);
    CHECK(slog_ld32(buf) == 0x50434453 && !memcmp(buf, "SDCP", 4));
    CHECK(slog_ld32(buf + 4) == ref_crc32c(buf + 8, 120));
    CHECK(slog_ld64(buf + 8) == 7 && slog_ld32(buf + 16) == 3);
    CHECK(slog_ld32(buf + 20) == 1 && slog_ld64(buf + 24) == 1000);
    CHECK(slog_ld64(buf + 32) == 2 && slog_ld64(buf + 40) == 3 * 4096);
    CHECK(slog_ld64(buf + 48) == 5 && slog_ld32(buf + 56) == 1);
    all = true;
    for (size_t i = 60; i < SLOG_SLOT_BYTES; i++) {
        all &= buf[i] == 0;
    }
    CHECK(all);
    CHECK(buf[SLOG_SLOT_BYTES] == 0xee);
    CHECK(slog_slot_decode(buf, SLOG_SLOT_BYTES, &h, &out, &why) == 0);
    CHECK(slog_slot_equal(&good, &out));

    /* No checkpoint there: -ENOENT, not corruption */
    memcpy(bad, buf, sizeof(bad));
    bad[0] ^= 1;
    CHECK(REJECTS(slog_slot_decode(bad, sizeof(bad), &h, &out, &why),
                  -ENOENT, "no checkpoint"));
    memset(bad, 0, sizeof(bad));
    CHECK(REJECTS(slog_slot_decode(bad, sizeof(bad), &h, &out, &why),
                  -ENOENT, "no checkpoint"));
    CHECK(REJECTS(slog_slot_decode(buf, SLOG_SLOT_BYTES - 1, &h, &out, &why),
                  -ENOENT, "no checkpoint"));

    /* Any byte from the CRC on */
    all = true;
    for (size_t i = 4; i < SLOG_SLOT_BYTES; i++) {
        memcpy(bad, buf, sizeof(bad));
        bad[i] ^= 0x80;
        why = NULL;
        all &= slog_slot_decode(bad, sizeof(bad), &h, &out, &why) ==
               -EINVAL && strstr(why, "checksum");
    }
    CHECK(all);

    slot = good;
    slot.map_area = 2;
    CHECK(REJECTS(slot_reencode(&slot, &h, &why), -EINVAL, "bounds"));
    slot = good;
    slot.head_segment = slot.nb_segments;
    CHECK(REJECTS(slot_reencode(&slot, &h, &why), -EINVAL, "bounds"));
    slot.head_segment = slot.nb_segments - 1;
    CHECK(slot_reencode(&slot, &h, &why) == 0);
    slot = good;
    slot.nb_segments = 0;
    slot.head_segment = 0;
    CHECK(REJECTS(slot_reencode(&slot, &h, &why), -EINVAL, "bounds"));
    slot = good;
    slot.head_offset = 100;
    CHECK(REJECTS(slot_reencode(&slot, &h, &why), -EINVAL, "bounds"));
    slot.head_offset = 4096 + 256;      /* records are 512-byte aligned */
    CHECK(REJECTS(slot_reencode(&slot, &h, &why), -EINVAL, "bounds"));
    slot = good;
    slot.head_offset = h.segment_size;
    CHECK(REJECTS(slot_reencode(&slot, &h, &why), -EINVAL, "bounds"));
    slot.head_offset = h.segment_size - SLOG_SECTOR;
    CHECK(slot_reencode(&slot, &h, &why) == 0);
    slot = good;
    slot.nb_segments = max_segments + 1;
    CHECK(REJECTS(slot_reencode(&slot, &h, &why), -EINVAL, "bounds"));
    slot.nb_segments = max_segments;
    CHECK(slot_reencode(&slot, &h, &why) == 0);
    slot = good;
    slot.next_seq = UINT64_MAX / 2 + 1;
    CHECK(REJECTS(slot_reencode(&slot, &h, &why), -EINVAL, "bounds"));
    slot = good;
    slot.epoch = UINT32_MAX;
    CHECK(REJECTS(slot_reencode(&slot, &h, &why), -EINVAL, "bounds"));
}

/*
 * Encode @rec with a random payload into @buf (filled with 0xee first, to
 * see the padding zeroed), decode it from @avail bytes: the result.
 */
static int record_try(const SlogHeader *h, SlogRecord *rec, uint8_t *buf,
                      size_t avail, SlogRecord *out, const char **why)
{
    memset(buf, 0xee, slog_record_size(rec->payload_len) + SLOG_SECTOR);
    rng_fill(buf + SLOG_RECORD_HEADER, rec->payload_len);
    rec->size = slog_record_size(rec->payload_len);
    slog_record_encode(rec, buf);
    *why = NULL;
    return slog_record_decode(buf, avail, h, out, why);
}

/* Round trip of @rec: decodes to the same, padding zeroed, layout */
static bool record_round_trip(const SlogHeader *h, SlogRecord rec,
                              uint8_t *buf)
{
    SlogRecord out;
    const char *why;
    uint32_t size = slog_record_size(rec.payload_len);
    bool ok;

    ok = record_try(h, &rec, buf, size, &out, &why) == 0 &&
         slog_record_equal(&rec, &out) && out.size == size;
    ok &= slog_ld32(buf) == 0x43524453 && !memcmp(buf, "SDRC", 4);
    ok &= slog_ld32(buf + 4) == ref_crc32c(buf + 8, 40 + rec.payload_len);
    ok &= slog_ld64(buf + 8) == rec.seq && slog_ld32(buf + 16) == rec.epoch;
    ok &= buf[20] == rec.type && buf[21] == rec.flags;
    ok &= (buf[22] | buf[23] << 8) == rec.encoding;
    ok &= slog_ld64(buf + 24) == rec.cluster &&
          slog_ld32(buf + 32) == rec.count;
    ok &= slog_ld32(buf + 36) == rec.payload_len &&
          slog_ld64(buf + 40) == rec.src;
    for (uint32_t i = SLOG_RECORD_HEADER + rec.payload_len; i < size; i++) {
        ok &= buf[i] == 0;
    }
    /* Nothing written past the record */
    ok &= buf[size] == 0xee;
    /* More bytes readable than the record needs change nothing */
    ok &= slog_record_decode(buf, size + SLOG_SECTOR, h, &out, &why) == 0 &&
          slog_record_equal(&rec, &out);
    return ok;
}

static void test_record(void)
{
    const SlogRecord pad = { .seq = 5, .epoch = 2, .type = SLOG_REC_PAD };
    const SlogRecord raw = {
        .seq = 6, .epoch = 2, .type = SLOG_REC_DATA,
        .encoding = SLOG_ENC_RAW, .cluster = 63, .count = 1,
        .payload_len = 64 * KiB,
    };
    const SlogRecord zstd = {
        .seq = 7, .epoch = 2, .type = SLOG_REC_DATA,
        .encoding = SLOG_ENC_ZSTD, .cluster = 1, .count = 1,
        .payload_len = 1000,
    };
    const SlogRecord zero = {
        .seq = 8, .epoch = 2, .type = SLOG_REC_ZERO, .cluster = 10,
        .count = 54,
    };
    uint8_t *buf = malloc(slog_record_size(64 * KiB + 1) + SLOG_SECTOR);
    SlogRecord rec, out;
    SlogHeader h;
    const char *why = NULL;
    bool all;

    good_header(&h);
    CHECK(slog_record_size(0) == 512 && slog_record_size(464) == 512);
    CHECK(slog_record_size(465) == 1024);
    CHECK(slog_record_size(64 * KiB) == 66048);

    CHECK(record_round_trip(&h, pad, buf));
    CHECK(record_round_trip(&h, raw, buf));
    CHECK(record_round_trip(&h, zstd, buf));
    rec = zstd;
    rec.payload_len = 64 * KiB;         /* a frame as large as the cluster */
    CHECK(record_round_trip(&h, rec, buf));
    rec = zstd;
    rec.flags = SLOG_REC_MOVE;
    rec.src = slog_entry_make(h.data_offset + 4096, 1536);
    CHECK(record_round_trip(&h, rec, buf));
    rec = raw;
    rec.flags = SLOG_REC_MOVE;
    rec.src = slog_entry_make(h.data_offset, 66048);
    CHECK(record_round_trip(&h, rec, buf));
    CHECK(record_round_trip(&h, zero, buf));
    rec = zero;
    rec.cluster = 0;
    rec.count = 64;                     /* the whole disk */
    CHECK(record_round_trip(&h, rec, buf));
    rec = zero;
    rec.cluster = 63;
    rec.count = 1;
    CHECK(record_round_trip(&h, rec, buf));

    /* Not a record, or not all of it readable */
    memset(buf, 0, SLOG_SECTOR);
    CHECK(REJECTS(slog_record_decode(buf, SLOG_SECTOR, &h, &out, &why),
                  -EINVAL, "no record"));
    rec = pad;
    CHECK(REJECTS(record_try(&h, &rec, buf, SLOG_RECORD_HEADER - 1, &out,
                             &why), -EINVAL, "no record"));
    rec = pad;
    CHECK(REJECTS(record_try(&h, &rec, buf, SLOG_SECTOR - 1, &out, &why),
                  -EINVAL, "runs past"));
    rec = zstd;                         /* 1536 bytes with its padding */
    CHECK(REJECTS(record_try(&h, &rec, buf, 1535, &out, &why),
                  -EINVAL, "runs past"));
    rec = zstd;
    CHECK(REJECTS(record_try(&h, &rec, buf, SLOG_RECORD_HEADER + 1000, &out,
                             &why), -EINVAL, "runs past"));
    rec = raw;
    CHECK(REJECTS(record_try(&h, &rec, buf, 66047, &out, &why),
                  -EINVAL, "runs past"));
    rec = zstd;
    rec.payload_len = 64 * KiB + 1;
    CHECK(REJECTS(record_try(&h, &rec, buf, slog_record_size(64 * KiB + 1),
                             &out, &why), -EINVAL, "longer than"));

    /* Every single byte of header and payload is under the CRC */
    rec = zstd;
    CHECK(record_try(&h, &rec, buf, 1536, &out, &why) == 0);
    all = true;
    for (size_t i = 8; i < SLOG_RECORD_HEADER + 1000; i++) {
        buf[i] ^= 1;
        why = NULL;
        all &= slog_record_decode(buf, 1536, &h, &out, &why) == -EINVAL;
        all &= i < SLOG_RECORD_HEADER || (why && strstr(why, "checksum"));
        buf[i] ^= 1;
    }
    CHECK(all);
    /* ...and so is the CRC itself */
    buf[5] ^= 0x40;
    CHECK(REJECTS(slog_record_decode(buf, 1536, &h, &out, &why),
                  -EINVAL, "checksum"));

    /* Fields that do not fit their type, with a right CRC */
    rec = raw;
    rec.payload_len = 1000;
    CHECK(REJECTS(record_try(&h, &rec, buf, 1536, &out, &why), -EINVAL,
                  "malformed data"));
    rec = raw;
    rec.payload_len = 64 * KiB - 512;
    CHECK(REJECTS(record_try(&h, &rec, buf, 66048, &out, &why),
                  -EINVAL, "malformed data"));
    rec = zstd;
    rec.payload_len = 0;
    CHECK(REJECTS(record_try(&h, &rec, buf, 512, &out, &why), -EINVAL,
                  "malformed data"));
    rec = zstd;
    rec.cluster = 64;
    CHECK(REJECTS(record_try(&h, &rec, buf, 1536, &out, &why), -EINVAL,
                  "malformed data"));
    rec = zstd;
    rec.count = 2;
    CHECK(REJECTS(record_try(&h, &rec, buf, 1536, &out, &why), -EINVAL,
                  "malformed data"));
    rec = zstd;
    rec.encoding = 2;
    CHECK(REJECTS(record_try(&h, &rec, buf, 1536, &out, &why), -EINVAL,
                  "malformed data"));
    rec = zstd;
    rec.flags = 2;
    CHECK(REJECTS(record_try(&h, &rec, buf, 1536, &out, &why), -EINVAL,
                  "malformed data"));
    rec = zstd;
    rec.flags = SLOG_REC_MOVE;
    rec.src = 0;
    CHECK(REJECTS(record_try(&h, &rec, buf, 1536, &out, &why), -EINVAL,
                  "malformed move"));
    rec.src = SLOG_ENTRY_BAD;
    CHECK(REJECTS(record_try(&h, &rec, buf, 1536, &out, &why), -EINVAL,
                  "malformed move"));

    rec = zero;
    rec.count = 55;                     /* one past the last cluster */
    CHECK(REJECTS(record_try(&h, &rec, buf, 512, &out, &why), -EINVAL,
                  "malformed zero"));
    rec = zero;
    rec.count = 0;
    CHECK(REJECTS(record_try(&h, &rec, buf, 512, &out, &why), -EINVAL,
                  "malformed zero"));
    rec = zero;
    rec.cluster = 64;
    rec.count = 1;
    CHECK(REJECTS(record_try(&h, &rec, buf, 512, &out, &why), -EINVAL,
                  "malformed zero"));
    rec = zero;
    rec.cluster = UINT64_MAX;           /* cluster + count wraps to 0 */
    rec.count = 1;
    CHECK(REJECTS(record_try(&h, &rec, buf, 512, &out, &why), -EINVAL,
                  "malformed zero"));
    rec = zero;
    rec.count = UINT32_MAX;
    CHECK(REJECTS(record_try(&h, &rec, buf, 512, &out, &why), -EINVAL,
                  "malformed zero"));
    rec = zero;
    rec.payload_len = 8;
    CHECK(REJECTS(record_try(&h, &rec, buf, 512, &out, &why), -EINVAL,
                  "malformed zero"));
    rec = zero;
    rec.flags = SLOG_REC_MOVE;
    CHECK(REJECTS(record_try(&h, &rec, buf, 512, &out, &why), -EINVAL,
                  "malformed zero"));

    rec = pad;
    rec.payload_len = 16;
    CHECK(REJECTS(record_try(&h, &rec, buf, 512, &out, &why), -EINVAL,
                  "malformed pad"));
    rec = pad;
    rec.flags = SLOG_REC_MOVE;
    CHECK(REJECTS(record_try(&h, &rec, buf, 512, &out, &why), -EINVAL,
                  "malformed pad"));

    all = true;
    for (unsigned t = 0; t < 256; t++) {
        if (t >= SLOG_REC_PAD && t <= SLOG_REC_REF) {
            continue;
        }
        rec = pad;
        rec.type = t;
        all &= record_try(&h, &rec, buf, 512, &out, &why) == -EINVAL &&
               strstr(why, "unknown record type");
    }
    CHECK(all);
    free(buf);
}

static void test_entry(void)
{
    SlogHeader h;
    uint64_t d, seg, e;

    good_header(&h);
    d = h.data_offset;
    seg = h.segment_size;

    e = slog_entry_make(d + 3 * 512, 1536);
    CHECK(e == ((d / 512 + 3) | 3ull << 44));
    CHECK(slog_entry_offset(e) == d + 1536 && slog_entry_size(e) == 1536);
    CHECK(slog_entry_make(0, 0) == 0);
    /* The largest of both fields stay apart */
    e = slog_entry_make(SLOG_MAX_FILE - 512, ((1u << 20) - 1) * 512);
    CHECK(slog_entry_offset(e) == SLOG_MAX_FILE - 512);
    CHECK(slog_entry_size(e) == ((1u << 20) - 1) * 512);
    CHECK(slog_segment_of(&h, d + seg + 5) == 1);
    CHECK(slog_segment_of(&h, d + seg - 1) == 0);
    CHECK(slog_segment_offset(&h, 2) == d + 2 * seg);

    /* Inside the data area */
    CHECK(slog_entry_check(&h, 2, slog_entry_make(d, 512)));
    CHECK(slog_entry_check(&h, 2, slog_entry_make(d + seg - 512, 512)));
    CHECK(slog_entry_check(&h, 2, slog_entry_make(d, h.max_record)));
    CHECK(slog_entry_check(&h, 2, slog_entry_make(d + 2 * seg - h.max_record,
                                                  h.max_record)));
    CHECK(slog_entry_check(&h, 2, slog_entry_make(d + seg, 512)));
    /* Before it */
    CHECK(!slog_entry_check(&h, 2, slog_entry_make(d - 512, 512)));
    CHECK(!slog_entry_check(&h, 2, slog_entry_make(d - 512, 1024)));
    CHECK(!slog_entry_check(&h, 2, slog_entry_make(0, 512)));
    CHECK(!slog_entry_check(&h, 2, slog_entry_make(h.map_offset[1], 512)));
    /* Past the segments there are */
    CHECK(!slog_entry_check(&h, 2, slog_entry_make(d + 2 * seg, 512)));
    CHECK(slog_entry_check(&h, 3, slog_entry_make(d + 2 * seg, 512)));
    CHECK(!slog_entry_check(&h, 0, slog_entry_make(d, 512)));
    CHECK(!slog_entry_check(&h, 2, slog_entry_make(SLOG_MAX_FILE - 512,
                                                   512)));
    /* Across the end of a segment */
    CHECK(!slog_entry_check(&h, 2, slog_entry_make(d + seg - 512, 1024)));
    CHECK(!slog_entry_check(&h, 2, slog_entry_make(d + seg - 512,
                                                   h.max_record)));
    /* Of no size, or larger than a raw cluster's record */
    CHECK(!slog_entry_check(&h, 2, slog_entry_make(d, 0)));
    CHECK(!slog_entry_check(&h, 2, slog_entry_make(d, h.max_record + 512)));
    CHECK(!slog_entry_check(&h, 2, slog_entry_make(d, 1u << 28)));
    CHECK(!slog_entry_check(&h, 2, SLOG_ENTRY_BAD));
}

/* Encode a REF record of @rec->count pairs from @pairs into @buf */
static int ref_try(const SlogHeader *h, SlogRecord *rec,
                   const uint64_t (*pairs)[2], uint8_t *buf, SlogRecord *out,
                   const char **why)
{
    rec->payload_len = rec->count * SLOG_REF_PAIR;
    memset(buf, 0xee, slog_record_size(rec->payload_len));
    for (uint32_t i = 0; i < rec->count; i++) {
        slog_ref_set(buf + SLOG_RECORD_HEADER, i, pairs[i][0], pairs[i][1]);
    }
    rec->size = slog_record_size(rec->payload_len);
    slog_record_encode(rec, buf);
    *why = NULL;
    return slog_record_decode(buf, rec->size, h, out, why);
}

/* softdev-cas's images: SHA-256, a hash beside each map entry, REF records */
static void test_cas(void)
{
    const char *cas_magic = "SDCAS\0\0";
    uint8_t *buf = malloc(slog_record_size(64 * KiB + 32) + SLOG_SECTOR);
    uint8_t hbuf[SLOG_HEADER_SIZE];
    SlogHeader h, z, out;
    SlogRecord rec, got;
    const char *why = NULL;
    uint64_t e1, e2;
    uint64_t pairs[3][2];

    CHECK(slog_header_init_cas(&h, cas_magic, 4 * MiB, 4 * KiB, MiB,
                               &why) == 0);
    CHECK(h.algorithm == SLOG_ALG_SHA256 && h.level == 0);
    CHECK(h.extra_size == 32 && h.max_payload == 4096 + 32);
    CHECK(h.max_record == 4608);
    /* 1024 entries of 8 bytes, then 1024 hashes of 32 */
    CHECK(h.map_entries_size == 8192 && h.map_size == 8192 + 32768);
    CHECK(h.map_offset[1] >= h.map_offset[0] + h.map_size);
    CHECK(h.data_offset >= h.map_offset[1] + h.map_size);
    slog_header_encode(&h, hbuf);
    CHECK(slog_header_decode(hbuf, sizeof(hbuf), cas_magic, &out, &why) == 0);
    CHECK(slog_header_equal(&h, &out));
    CHECK(REJECTS(slog_header_decode(hbuf, sizeof(hbuf), MAGIC, &out, &why),
                  -EINVAL, "magic"));
    /* Less than a block of entries: a whole block, and its hashes */
    CHECK(slog_header_init_cas(&z, cas_magic, 64 * KiB, 4 * KiB, MiB,
                               &why) == 0);
    CHECK(z.map_entries_size == 4096 && z.map_size == 4096 + 512 * 32);
    /* 64 KiB chunks: the hash fits in the record's padding */
    CHECK(slog_header_init_cas(&z, cas_magic, 4 * MiB, 64 * KiB, MiB,
                               &why) == 0);
    CHECK(z.max_record == 66048);
    CHECK(REJECTS(slog_header_init_cas(&z, cas_magic, 4 * MiB, 256 * KiB,
                                       MiB, &why), -EINVAL, "four"));
    z = h;
    z.level = 1;
    slog_header_encode(&z, hbuf);
    CHECK(REJECTS(slog_header_decode(hbuf, sizeof(hbuf), cas_magic, &out,
                                     &why), -EINVAL, "no level"));
    z = h;
    z.map_size -= 4096;
    slog_header_encode(&z, hbuf);
    CHECK(REJECTS(slog_header_decode(hbuf, sizeof(hbuf), cas_magic, &out,
                                     &why), -EINVAL, "map size"));

    /* A chunk: its hash and the data raw, nothing else */
    rec = (SlogRecord) {
        .seq = 9, .epoch = 3, .type = SLOG_REC_DATA,
        .encoding = SLOG_ENC_RAW, .cluster = 5, .count = 1,
        .payload_len = 4096 + 32,
    };
    CHECK(record_round_trip(&h, rec, buf));
    rec.payload_len = 4096;
    CHECK(REJECTS(record_try(&h, &rec, buf, 4608, &got, &why), -EINVAL,
                  "malformed data"));
    rec.payload_len = 4096 + 32;
    rec.encoding = SLOG_ENC_ZSTD;
    CHECK(REJECTS(record_try(&h, &rec, buf, 4608, &got, &why), -EINVAL,
                  "malformed data"));
    rec.encoding = SLOG_ENC_RAW;
    rec.payload_len = 4096 + 33;
    CHECK(REJECTS(record_try(&h, &rec, buf, 5120, &got, &why), -EINVAL,
                  "longer than a cluster"));

    /* REF records: pairs of cluster and the entry of the chunk */
    e1 = slog_entry_make(h.data_offset, 4608);
    e2 = slog_entry_make(h.data_offset + 4608, 4608);
    pairs[0][0] = 0;
    pairs[0][1] = e1;
    pairs[1][0] = 1023;
    pairs[1][1] = e2;
    pairs[2][0] = 7;
    pairs[2][1] = e1;
    rec = (SlogRecord) {
        .seq = 10, .epoch = 3, .type = SLOG_REC_REF, .cluster = 0,
        .count = 3,
    };
    CHECK(ref_try(&h, &rec, pairs, buf, &got, &why) == 0);
    CHECK(slog_record_equal(&rec, &got) && got.size == 512);
    CHECK(slog_ref_cluster(buf + SLOG_RECORD_HEADER, 1) == 1023 &&
          slog_ref_entry(buf + SLOG_RECORD_HEADER, 1) == e2 &&
          slog_ref_entry(buf + SLOG_RECORD_HEADER, 2) == e1);
    /* Compaction's: only where the cluster still has the original */
    rec.flags = SLOG_REC_MOVE;
    rec.src = e2;
    CHECK(ref_try(&h, &rec, pairs, buf, &got, &why) == 0 && got.src == e2);
    rec.src = 0;
    CHECK(REJECTS(ref_try(&h, &rec, pairs, buf, &got, &why), -EINVAL,
                  "malformed move"));
    rec.flags = 0;
    pairs[1][0] = 1024;                 /* past the disk */
    CHECK(REJECTS(ref_try(&h, &rec, pairs, buf, &got, &why), -EINVAL,
                  "malformed ref"));
    pairs[1][0] = 1023;
    pairs[2][1] = 0;                    /* a chunk that is zeroes */
    CHECK(REJECTS(ref_try(&h, &rec, pairs, buf, &got, &why), -EINVAL,
                  "malformed ref"));
    pairs[2][1] = SLOG_ENTRY_BAD;
    CHECK(REJECTS(ref_try(&h, &rec, pairs, buf, &got, &why), -EINVAL,
                  "malformed ref"));
    pairs[2][1] = e1;
    rec.count = 0;
    CHECK(REJECTS(ref_try(&h, &rec, pairs, buf, &got, &why), -EINVAL,
                  "malformed ref"));
    rec.count = 3;
    rec.cluster = 4096;
    CHECK(REJECTS(ref_try(&h, &rec, pairs, buf, &got, &why), -EINVAL,
                  "malformed ref"));
    rec.cluster = 0;
    /* A payload that is not whole pairs */
    CHECK(ref_try(&h, &rec, pairs, buf, &got, &why) == 0);
    slog_st32(buf + 36, 40);
    slog_st32(buf + 4, slog_crc32c(0, buf + 8, 40 + 40));
    CHECK(REJECTS(slog_record_decode(buf, 512, &h, &got, &why), -EINVAL,
                  "malformed ref"));
    /* No REF records in a compressed image */
    good_header(&z);
    rec = (SlogRecord) {
        .seq = 10, .epoch = 3, .type = SLOG_REC_REF, .cluster = 0,
        .count = 1,
    };
    pairs[0][1] = slog_entry_make(z.data_offset, 512);
    CHECK(REJECTS(ref_try(&z, &rec, pairs, buf, &got, &why), -EINVAL,
                  "malformed ref"));
    /* A chunk record's entry may be as large as a chunk with its hash */
    CHECK(slog_entry_check(&h, 1, slog_entry_make(h.data_offset, 4608)));
    CHECK(!slog_entry_check(&h, 1, slog_entry_make(h.data_offset, 5120)));
    free(buf);
}

int main(void)
{
    test_crc32c();
    test_header_round_trip();
    test_header_rejects();
    test_slot();
    test_record();
    test_entry();
    test_cas();
    return UNIT_CHECK_DONE("slog-format-test");
}
