/*
 * softdev-cas's index (block/softdev/cas-index.c) against a model: random
 * chunks added, hashed (from a small set of hashes, so that chunks share
 * them), referenced and dropped, through several resizes of the tables;
 * after every step each lookup by entry and by hash must agree with the
 * model, which keeps the rules of cas-index.h in plain arrays.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <stdlib.h>

#include "block/softdev/cas-index.c"
#include "tests/unit/unit-check.h"

#define ENTRIES     6000        /* possible map entries */
#define HASHES      700         /* possible hashes */
#define STEPS       60000

typedef struct Model {
    bool present[ENTRIES];
    int hash[ENTRIES];          /* -1: stray */
    uint32_t refs[ENTRIES];
    int newest[HASHES];         /* entry by_hash finds, -1 for none */
} Model;

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (rng_state >> 16) % n;
}

/* Map entries far apart and with low bits alike, as real ones are */
static uint64_t entry_of(int i)
{
    return ((uint64_t)(i + 1) * 9) | (9ull << 44);
}

static void hash_of(int h, uint8_t *out)
{
    memset(out, 0, CAS_HASH_SIZE);
    /* The same low bytes for a few: collisions in the table's slots */
    out[0] = h % 7;
    out[9] = h;
    out[10] = h >> 8;
}

static bool agrees(const CasIndex *idx, const Model *m)
{
    uint8_t hash[CAS_HASH_SIZE];
    uint32_t count = 0;
    bool ok = true;

    for (int i = 0; i < ENTRIES; i++) {
        CasChunk *ch = cas_index_by_entry(idx, entry_of(i));

        if (!m->present[i]) {
            ok &= ch == NULL;
            continue;
        }
        count++;
        ok &= ch && ch->entry == entry_of(i) && ch->refs == m->refs[i];
        if (ch && m->hash[i] >= 0) {
            hash_of(m->hash[i], hash);
            ok &= ch->state == CAS_CHUNK_HASHED &&
                  !memcmp(ch->hash, hash, CAS_HASH_SIZE);
        } else if (ch) {
            ok &= ch->state == CAS_CHUNK_STRAY;
        }
    }
    for (int h = 0; h < HASHES; h++) {
        CasChunk *ch;

        hash_of(h, hash);
        ch = cas_index_by_hash(idx, hash);
        ok &= m->newest[h] < 0 ? ch == NULL
                               : ch && ch->entry == entry_of(m->newest[h]);
    }
    return ok && count == idx->count;
}

static void model_unhash(Model *m, int i)
{
    if (m->hash[i] >= 0 && m->newest[m->hash[i]] == i) {
        m->newest[m->hash[i]] = -1;
    }
}

int main(void)
{
    static Model m;
    uint8_t hash[CAS_HASH_SIZE];
    CasIndex idx;
    bool all = true, grew = false;
    uint32_t max_count = 0;

    cas_index_init(&idx);
    memset(m.hash, 0xff, sizeof(m.hash));
    memset(m.newest, 0xff, sizeof(m.newest));
    CHECK(agrees(&idx, &m));

    for (int step = 0; step < STEPS; step++) {
        /* More chunks at first, then a churn where drops keep up */
        int i = rnd(step < STEPS / 3 ? ENTRIES : ENTRIES / 2 + rnd(ENTRIES / 2));
        int op = rnd(100);
        CasChunk *ch;

        if (op < 40) {                  /* get, and maybe hash */
            ch = cas_index_get(&idx, entry_of(i));
            if (!m.present[i]) {
                m.present[i] = true;
                m.hash[i] = -1;
                m.refs[i] = 0;
            }
            if (rnd(4)) {
                int h = rnd(HASHES);

                hash_of(h, hash);
                cas_index_set_hash(&idx, ch, hash);
                model_unhash(&m, i);
                m.hash[i] = h;
                m.newest[h] = i;
            }
        } else if (op < 75) {           /* a reference more or fewer */
            ch = cas_index_by_entry(&idx, entry_of(i));
            if (m.present[i]) {
                if (m.refs[i] && rnd(2)) {
                    ch->refs--;
                    m.refs[i]--;
                } else {
                    ch->refs++;
                    m.refs[i]++;
                }
            }
        } else if (op < 99) {           /* one loses all its references */
            ch = cas_index_by_entry(&idx, entry_of(i));
            if (m.present[i]) {
                ch->refs = 0;
                m.refs[i] = 0;
            }
        } else if (step > STEPS / 3) {  /* a checkpoint, after the growth */
            cas_index_drop_unreferenced(&idx);
            for (int j = 0; j < ENTRIES; j++) {
                if (m.present[j] && !m.refs[j]) {
                    model_unhash(&m, j);
                    m.present[j] = false;
                    m.hash[j] = -1;
                }
            }
        }
        if (idx.count > max_count) {
            max_count = idx.count;
        }
        grew |= idx.mask + 1 >= 4096;
        if (step % 97 == 0 || op >= 99 || step == STEPS / 3) {
            all &= agrees(&idx, &m);
        }
    }
    all &= agrees(&idx, &m);
    CHECK(all);
    CHECK(grew);
    /* The array reuses the places of dropped chunks */
    CHECK(idx.nb_chunks <= ENTRIES);
    printf("cas-index-test: up to %u chunks, %u table slots, %zu bytes\n",
           max_count, idx.mask + 1, cas_index_bytes(&idx));
    /* 48 bytes a chunk, two 4-byte slots at most 3/4 full */
    CHECK(sizeof(CasChunk) == 48);
    cas_index_destroy(&idx);
    return UNIT_CHECK_DONE("cas-index-test");
}
