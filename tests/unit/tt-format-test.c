/*
 * softdev-timetravel's journal format, history index and extent maps
 * (block/softdev/tt-format.c, tt-extents.c): round trips and every
 * rejection of the header and record decoders; the index's replay rules
 * (marks, transactions, times); and the extent map and the map of a
 * point against models that keep one value per 512-byte sector.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <stdlib.h>

#include "block/softdev/tt-format.c"
#include "block/softdev/tt-extents.c"
#include "tests/unit/unit-check.h"

#define NODE        (64ull << 20)
#define DISK        (1ull << 20)
#define SECTORS     (DISK / 512)

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (rng_state >> 16) % n;
}

static void test_header(void)
{
    TtHeader h, d;
    uint8_t buf[TT_HEADER_SIZE] = { 0 };
    const char *why;

    CHECK(tt_header_init(&h, TT_RING_OFFSET + TT_MIN_RING - 1, 5, &why) ==
          -EINVAL);
    CHECK(tt_header_init(&h, NODE + 1000, 5, &why) == 0);
    CHECK(h.ring_size == NODE - TT_RING_OFFSET);
    CHECK(tt_header_decode(buf, sizeof(buf), NODE, &d, &why) == -ENOENT);
    tt_header_encode(&h, buf);
    CHECK(tt_header_decode(buf, sizeof(buf), NODE + 1000, &d, &why) == 0);
    CHECK(!memcmp(&h, &d, sizeof(h)));
    CHECK(tt_header_decode(buf, sizeof(buf), NODE - 1, &d, &why) == -EINVAL);
    CHECK(tt_header_decode(buf, 100, NODE, &d, &why) == -EINVAL);
    buf[30] ^= 1;
    CHECK(tt_header_decode(buf, sizeof(buf), NODE, &d, &why) == -EINVAL &&
          !strcmp(why, "header checksum mismatch"));
    buf[0] = 'X';
    CHECK(tt_header_decode(buf, sizeof(buf), NODE, &d, &why) == -EINVAL);

    /* Fields out of bounds, with a good checksum */
    for (int i = 0; i < 6; i++) {
        TtHeader b = h;

        switch (i) {
        case 0: b.ring_size = TT_MIN_RING - 4096; break;
        case 1: b.ring_size += 512; break;
        case 2: b.tail = 512; b.head = 0; break;
        case 3: b.head = b.tail + b.ring_size + 512; break;
        case 4: b.tail_seq = 0; break;
        case 5: b.horizon_seq = b.tail_seq; break;
        }
        tt_header_encode(&b, buf);
        CHECK(tt_header_decode(buf, sizeof(buf), NODE, &d, &why) == -EINVAL);
    }
}

static void test_records(void)
{
    TtHeader h;
    const char *why;
    uint8_t buf[TT_REC_HEADER];
    TtRecord d;
    const TtRecord good[] = {
        { .type = TT_REC_DATA, .seq = 7, .time = 9, .pos = 4096,
          .offset = 8192, .length = 4096, .data_len = 4096,
          .flags = TT_FLAG_CRC, .data_crc = 0x1234 },
        { .type = TT_REC_ZERO, .seq = 7, .pos = 4096, .offset = 0,
          .length = 512, .flags = TT_FLAG_TXN },
        { .type = TT_REC_DISCARD, .seq = 7, .pos = 4096, .offset = 512,
          .length = DISK - 512 },
        { .type = TT_REC_BASE, .seq = 7, .pos = 4096, .length = 4096,
          .aux = 6, .flags = TT_FLAG_ZERO },
        { .type = TT_REC_MARK, .seq = 7, .pos = 4096, .data_len = 3 },
        { .type = TT_REC_FLUSH, .seq = 7, .pos = 4096, .offset = 1024,
          .aux = 6 },
        { .type = TT_REC_COMMIT, .seq = 7, .pos = 4096 },
        { .type = TT_REC_PAD, .seq = 7, .pos = 4096, .length = 8192 },
    };

    tt_header_init(&h, NODE, 1, &why);
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        tt_record_encode(&good[i], buf);
        CHECK(tt_record_decode(buf, &h, DISK, 4096, 7, &d, &why) == 0);
        CHECK(d.type == good[i].type && d.flags == good[i].flags &&
              d.seq == good[i].seq && d.time == good[i].time &&
              d.pos == good[i].pos && d.offset == good[i].offset &&
              d.length == good[i].length && d.aux == good[i].aux &&
              d.data_len == good[i].data_len &&
              d.data_crc == good[i].data_crc);
        /* Not the record expected there: the log ends */
        CHECK(tt_record_decode(buf, &h, DISK, 4608, 7, &d, &why) == -ENOENT);
        CHECK(tt_record_decode(buf, &h, DISK, 4096, 8, &d, &why) == -ENOENT);
    }
    buf[9] ^= 1;
    CHECK(tt_record_decode(buf, &h, DISK, 4096, 7, &d, &why) == -ENOENT);

    /* Broken records behind a good checksum */
    for (int i = 0; i < 14; i++) {
        TtRecord b = good[0];

        switch (i) {
        case 0: b.offset = DISK; break;
        case 1: b.length = 0; break;
        case 2: b.offset = 100; break;
        case 3: b.data_len = 512; break;
        case 4: b.type = 99; break;
        case 5: b.flags = TT_FLAG_ZERO; break;
        case 6: b = good[3]; b.aux = 7; break;
        case 7: b = good[4]; b.data_len = TT_MAX_NAME + 1; break;
        case 8: b = good[5]; b.aux = 7; break;
        case 9: b = good[5]; b.offset = 8192; break;
        case 10: b = good[7]; b.length = h.ring_size; break;
        case 11: b = good[6]; b.length = 4096; break;
        case 12: b.pos = h.ring_size - 512; break;
        case 13: b.length = TT_MAX_DATA + 512; b.data_len = b.length; break;
        }
        tt_record_encode(&b, buf);
        CHECK(tt_record_decode(buf, &h, DISK, b.pos, 7, &d, &why) == -EINVAL);
    }
}

static TtRecord rec(TtIndex *idx, uint8_t type, uint8_t flags, uint64_t off,
                    uint64_t len, uint64_t time)
{
    TtRecord r = {
        .type = type, .flags = flags, .seq = idx->next_seq,
        .pos = idx->next_pos, .time = time, .offset = off, .length = len,
        .data_len = type == TT_REC_DATA ? len : 0,
    };
    return r;
}

static void test_index(void)
{
    TtIndex idx;
    const char *why;
    TtRecord r;
    size_t marks;

    tt_index_init(&idx, 0, 1, 0);
    r = rec(&idx, TT_REC_BASE, TT_FLAG_ZERO, 0, 8192, 10);
    CHECK(tt_index_add(&idx, &r, NULL, &why) == 0);
    r = rec(&idx, TT_REC_DATA, 0, 0, 4096, 20);
    CHECK(tt_index_add(&idx, &r, NULL, &why) == 0);
    r = rec(&idx, TT_REC_MARK, 0, 0, 0, 30);
    r.data_len = 1;
    CHECK(tt_index_add(&idx, &r, "a", &why) == 0);
    r = rec(&idx, TT_REC_MARK, 0, 0, 0, 30);
    r.data_len = 1;
    CHECK(tt_index_add(&idx, &r, "a", &why) == -EINVAL);    /* twice */
    r = rec(&idx, TT_REC_DATA, 0, 0, 4096, 25);
    CHECK(tt_index_add(&idx, &r, NULL, &why) == -EINVAL);   /* older */
    r = rec(&idx, TT_REC_COMMIT, 0, 0, 0, 40);
    CHECK(tt_index_add(&idx, &r, NULL, &why) == -EINVAL);   /* no txn */

    /* A revert that commits counts; one that does not is forgotten */
    r = rec(&idx, TT_REC_DATA, TT_FLAG_TXN, 4096, 4096, 40);
    CHECK(tt_index_add(&idx, &r, NULL, &why) == 0);
    r = rec(&idx, TT_REC_COMMIT, 0, 0, 0, 40);
    CHECK(tt_index_add(&idx, &r, NULL, &why) == 0);
    CHECK(idx.nb_recs == 3 && idx.commit_seq == r.seq);
    r = rec(&idx, TT_REC_ZERO, TT_FLAG_TXN, 0, 4096, 50);
    CHECK(tt_index_add(&idx, &r, NULL, &why) == 0);
    r = rec(&idx, TT_REC_DATA, 0, 0, 512, 60);      /* no commit came */
    CHECK(tt_index_add(&idx, &r, NULL, &why) == 0);
    CHECK(idx.nb_recs == 4 && idx.recs[3].type == TT_REC_DATA);
    r = rec(&idx, TT_REC_ZERO, TT_FLAG_TXN, 0, 4096, 70);
    CHECK(tt_index_add(&idx, &r, NULL, &why) == 0);
    tt_index_end_replay(&idx);
    CHECK(idx.nb_recs == 4 && idx.next_pos == r.pos && idx.next_seq == r.seq);

    /* Points by time */
    CHECK(tt_index_seq_at(&idx, 5, 0) == 0);
    CHECK(tt_index_seq_at(&idx, 20, 0) == 2);
    CHECK(tt_index_seq_at(&idx, 30, 0) == 3);         /* the mark */
    CHECK(tt_index_seq_at(&idx, 1000, 0) == idx.recs[3].seq);
    CHECK(tt_index_after(&idx, 2) == 2);

    /* A base record for a later horizon (a compaction cut short) */
    r = rec(&idx, TT_REC_BASE, TT_FLAG_ZERO, 0, 4096, 80);
    r.aux = 1;
    marks = idx.nb_recs;
    CHECK(tt_index_add(&idx, &r, NULL, &why) == 0);
    CHECK(idx.nb_recs == marks && idx.next_seq == r.seq + 1);

    tt_index_drop(&idx, 2, 3, &marks);
    CHECK(marks == 1 && idx.nb_marks == 0 && idx.recs[0].seq > 3);
    tt_index_free(&idx);
}

/* The extent map against a map of sectors */
typedef struct Sector {
    TtExtKind kind;
    uint64_t loc;
} Sector;

static void model_check(TtExtents *m, const Sector *model)
{
    bool ok = true;

    for (uint64_t s = 0; s < SECTORS; ) {
        TtExtent e;

        tt_extents_lookup(m, s * 512, DISK - s * 512, &e);
        if (e.len == 0 || e.len % 512) {
            ok = false;
            break;
        }
        for (uint64_t i = 0; i < e.len / 512; i++) {
            const Sector *x = &model[s + i];

            if (x->kind != e.kind ||
                (e.kind == TT_EXT_JOURNAL && x->loc != e.loc + i * 512)) {
                ok = false;
            }
        }
        s += e.len / 512;
    }
    CHECK(ok);
}

static void test_extents(void)
{
    static Sector model[SECTORS];
    TtExtents m;

    tt_extents_init(&m);
    for (int step = 0; step < 20000; step++) {
        uint64_t s = rnd(SECTORS), n = 1 + rnd(MIN(SECTORS - s, 64));
        TtExtKind kind = rnd(3);
        uint64_t loc = (uint64_t)rnd(1 << 20) * 512;
        bool fill = rnd(2);

        if (fill) {
            tt_extents_fill(&m, s * 512, n * 512, kind, loc);
        } else {
            tt_extents_set(&m, s * 512, n * 512, kind, loc);
        }
        for (uint64_t i = 0; i < n; i++) {
            if (!fill || model[s + i].kind == TT_EXT_DISK) {
                if (!fill || kind != TT_EXT_DISK) {
                    model[s + i] = (Sector) {
                        kind, kind == TT_EXT_JOURNAL ? loc + i * 512 : 0 };
                }
            }
        }
        if (step % 1000 == 0) {
            model_check(&m, model);
        }
    }
    model_check(&m, model);
    tt_extents_destroy(&m);
}

/* The map of a point against replaying the history sector by sector */
static void test_point_maps(void)
{
    static Sector past[SECTORS];
    TtIndex idx;
    const char *why;
    uint64_t t = 1;

    tt_index_init(&idx, 0, 1, 0);
    for (int i = 0; i < 3000; i++) {
        uint64_t s = rnd(SECTORS - 64), n = 1 + rnd(64);
        uint8_t type = (uint8_t[]) { TT_REC_DATA, TT_REC_DATA, TT_REC_ZERO,
                                     TT_REC_DISCARD, TT_REC_BASE }[rnd(5)];
        TtRecord r = rec(&idx, type, 0, s * 512, n * 512, t++);

        if (type == TT_REC_BASE) {
            r.data_len = r.length;  /* overlaps are not for this model */
        }
        CHECK(tt_index_add(&idx, &r, NULL, &why) == 0);
    }
    for (int k = 0; k < 10; k++) {
        uint64_t cut = rnd(idx.next_seq);
        TtExtents m;

        memset(past, 0, sizeof(past));
        for (size_t i = 0; i < idx.nb_recs && idx.recs[i].seq <= cut; i++) {
            const TtRec *r = &idx.recs[i];

            for (uint64_t j = 0; j < r->length / 512 && tt_is_change(r->type);
                 j++) {
                past[r->offset / 512 + j] = r->type == TT_REC_DATA ?
                    (Sector) { TT_EXT_JOURNAL, r->data_pos + j * 512 } :
                    (Sector) { TT_EXT_ZERO, 0 };
            }
        }
        for (size_t i = 0; i < idx.nb_recs; i++) {
            const TtRec *r = &idx.recs[i];

            for (uint64_t j = 0; j < r->length / 512 &&
                 r->type == TT_REC_BASE; j++) {
                if (past[r->offset / 512 + j].kind == TT_EXT_DISK) {
                    past[r->offset / 512 + j] =
                        (Sector) { TT_EXT_JOURNAL, r->data_pos + j * 512 };
                }
            }
        }
        tt_index_map(&idx, cut, &m);
        model_check(&m, past);
        tt_extents_destroy(&m);
    }
    tt_index_free(&idx);
}

int main(void)
{
    test_header();
    test_records();
    test_index();
    test_extents();
    test_point_maps();
    return UNIT_CHECK_DONE("tt-format-test");
}
