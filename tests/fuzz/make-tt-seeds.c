/*
 * make-tt-seeds OUTDIR: write the seed corpus of fuzz-tt, the beginnings
 * of softdev-timetravel journals as block/softdev/tt-journal.c lays them
 * out, encoded by tt-format.c itself:
 *
 *   fresh      a new journal, both header copies
 *   history    base copies, writes, zeroes, discards, marks, flushes
 *   revert     a committed revert and one cut short before its commit
 *   unclean    a journal that was not closed, ending in a torn record
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "block/softdev/tt-format.h"

#define NODE_SIZE   (64ull << 20)

static uint8_t buf[1 << 20];
static size_t used;
static TtHeader h;
static uint64_t pos, seq = 1, now = 1000000000;

static void add(uint8_t type, uint8_t flags, uint64_t off, uint64_t len,
                uint64_t aux, const char *name)
{
    TtRecord r = {
        .type = type, .flags = flags, .seq = seq++, .time = now += 1000,
        .pos = pos, .offset = off, .length = len, .aux = aux,
    };
    uint8_t *p = buf + TT_RING_OFFSET + pos;

    if (name) {
        r.data_len = strlen(name);
        memcpy(p + TT_REC_HEADER, name, r.data_len);
    } else if (type == TT_REC_DATA ||
               (type == TT_REC_BASE && !(flags & TT_FLAG_ZERO))) {
        r.data_len = len;
        memset(p + TT_REC_HEADER, (int)(seq & 0xff), len);
        r.flags |= TT_FLAG_CRC;
        r.data_crc = tt_crc32c(0, p + TT_REC_HEADER, len);
    }
    if (type == TT_REC_FLUSH) {
        r.offset = pos;
    }
    tt_record_encode(&r, p);
    pos += tt_record_size(&r);
    used = TT_RING_OFFSET + pos;
}

static void save(const char *dir, const char *name, bool clean)
{
    char path[4096];
    FILE *f;

    h.flags = clean ? TT_HDR_CLEAN : 0;
    h.head = pos;
    h.next_seq = seq;
    h.generation++;
    tt_header_encode(&h, buf + TT_HEADER_OFFSET(h.generation % 2));
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, used, f) != used || fclose(f)) {
        perror(path);
        exit(1);
    }
}

static void reset(void)
{
    const char *why;

    memset(buf, 0, sizeof(buf));
    if (tt_header_init(&h, NODE_SIZE, now, &why) < 0) {
        fprintf(stderr, "%s\n", why);
        exit(1);
    }
    pos = 0;
    seq = 1;
    used = TT_RING_OFFSET;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make-tt-seeds OUTDIR\n");
        return 2;
    }
    if (mkdir(argv[1], 0755) < 0 && errno != EEXIST) {
        perror(argv[1]);
        return 1;
    }
    reset();
    save(argv[1], "fresh", true);
    save(argv[1], "fresh", true);

    reset();
    add(TT_REC_BASE, 0, 0, 8192, 0, NULL);
    add(TT_REC_DATA, 0, 0, 4096, 0, NULL);
    add(TT_REC_MARK, 0, 0, 0, 0, "m1");
    add(TT_REC_BASE, TT_FLAG_ZERO, 65536, 65536, 0, NULL);
    add(TT_REC_ZERO, 0, 65536, 4096, 0, NULL);
    add(TT_REC_DISCARD, 0, 69632, 8192, 0, NULL);
    add(TT_REC_FLUSH, 0, 0, 0, seq - 1, NULL);
    add(TT_REC_DATA, 0, 512, 1024, 0, NULL);
    add(TT_REC_MARK, 0, 0, 0, 0, "second mark");
    save(argv[1], "history", true);

    add(TT_REC_FLUSH, 0, 0, 0, seq - 1, NULL);
    add(TT_REC_DATA, TT_FLAG_TXN, 0, 4096, 0, NULL);
    add(TT_REC_ZERO, TT_FLAG_TXN, 65536, 4096, 0, NULL);
    add(TT_REC_COMMIT, 0, 0, 0, 0, NULL);
    add(TT_REC_DATA, TT_FLAG_TXN, 0, 4096, 0, NULL);
    add(TT_REC_DATA, 0, 4096, 4096, 0, NULL);
    save(argv[1], "revert", true);

    add(TT_REC_DATA, 0, 8192, 4096, 0, NULL);
    buf[TT_RING_OFFSET + pos - 100] ^= 0xff;    /* torn payload */
    add(TT_REC_DATA, 0, 8192, 512, 0, NULL);
    buf[TT_RING_OFFSET + pos - 1024 + 20] ^= 0xff;  /* torn header */
    save(argv[1], "unclean", false);
    return 0;
}
