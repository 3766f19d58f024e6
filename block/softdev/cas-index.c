/*
 * softdev-cas's index (cas-index.h): an array of chunks and two tables of
 * their places, open-addressed with linear probing, at most 3/4 full;
 * removal shifts the entries after it back, so no tombstones pile up.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cas-index.h"

#define NONE                UINT32_MAX
#define MIN_SLOTS           64u

static void *cas_realloc(void *p, size_t n, size_t size)
{
    if (n && size > SIZE_MAX / n) {
        abort();
    }
    p = realloc(p, n * size > 0 ? n * size : 1);
    if (!p) {
        fprintf(stderr, "softdev-cas: out of memory for the index\n");
        abort();
    }
    return p;
}

static uint32_t slot_of_entry(const CasIndex *idx, uint64_t e)
{
    /* A 64-bit mix: map entries are offsets, far from uniform */
    e ^= e >> 33;
    e *= 0xff51afd7ed558ccdull;
    e ^= e >> 33;
    return (uint32_t)e & idx->mask;
}

static uint32_t slot_of_hash(const CasIndex *idx, const uint8_t *hash)
{
    uint32_t v;

    /* A SHA-256 is uniform already */
    memcpy(&v, hash, sizeof(v));
    return v & idx->mask;
}

static uint32_t home_of(const CasIndex *idx, const uint32_t *table,
                        uint32_t place)
{
    const CasChunk *ch = &idx->chunks[place];

    return table == idx->by_entry ? slot_of_entry(idx, ch->entry)
                                  : slot_of_hash(idx, ch->hash);
}

static void table_insert(CasIndex *idx, uint32_t *table, uint32_t home,
                         uint32_t place)
{
    uint32_t i = home;

    while (table[i] != NONE) {
        i = (i + 1) & idx->mask;
    }
    table[i] = place;
}

/* Remove slot @i of @table, shifting back what probed past it */
static void table_remove_slot(CasIndex *idx, uint32_t *table, uint32_t i)
{
    uint32_t j = i;

    for (;;) {
        uint32_t home;

        table[i] = NONE;
        do {
            j = (j + 1) & idx->mask;
            if (table[j] == NONE) {
                return;
            }
            home = home_of(idx, table, table[j]);
            /* Stays if its home lies cyclically in (i, j] */
        } while (i <= j ? (i < home && home <= j) : (i < home || home <= j));
        table[i] = table[j];
        i = j;
    }
}

static void tables_resize(CasIndex *idx, uint32_t slots)
{
    uint32_t *old_entry = idx->by_entry, *old_hash = idx->by_hash;
    uint32_t old_slots = old_entry ? idx->mask + 1 : 0;

    idx->mask = slots - 1;
    idx->by_entry = cas_realloc(NULL, slots, sizeof(uint32_t));
    idx->by_hash = cas_realloc(NULL, slots, sizeof(uint32_t));
    memset(idx->by_entry, 0xff, slots * sizeof(uint32_t));
    memset(idx->by_hash, 0xff, slots * sizeof(uint32_t));
    for (uint32_t i = 0; i < old_slots; i++) {
        if (old_entry[i] != NONE) {
            table_insert(idx, idx->by_entry,
                         slot_of_entry(idx, idx->chunks[old_entry[i]].entry),
                         old_entry[i]);
        }
        if (old_hash[i] != NONE) {
            table_insert(idx, idx->by_hash,
                         slot_of_hash(idx, idx->chunks[old_hash[i]].hash),
                         old_hash[i]);
        }
    }
    free(old_entry);
    free(old_hash);
}

void cas_index_init(CasIndex *idx)
{
    memset(idx, 0, sizeof(*idx));
    idx->free_head = NONE;
    tables_resize(idx, MIN_SLOTS);
}

void cas_index_destroy(CasIndex *idx)
{
    free(idx->chunks);
    free(idx->by_entry);
    free(idx->by_hash);
    memset(idx, 0, sizeof(*idx));
}

/* The slot of @table holding the chunk at @e (by_entry), or NONE */
static uint32_t find_entry_slot(const CasIndex *idx, uint64_t e)
{
    for (uint32_t i = slot_of_entry(idx, e);; i = (i + 1) & idx->mask) {
        uint32_t p = idx->by_entry[i];

        if (p == NONE || idx->chunks[p].entry == e) {
            return p == NONE ? NONE : i;
        }
    }
}

static uint32_t find_hash_slot(const CasIndex *idx, const uint8_t *hash)
{
    for (uint32_t i = slot_of_hash(idx, hash);; i = (i + 1) & idx->mask) {
        uint32_t p = idx->by_hash[i];

        if (p == NONE || !memcmp(idx->chunks[p].hash, hash, CAS_HASH_SIZE)) {
            return p == NONE ? NONE : i;
        }
    }
}

CasChunk *cas_index_by_entry(const CasIndex *idx, uint64_t e)
{
    uint32_t i = find_entry_slot(idx, e);

    return i == NONE ? NULL : &idx->chunks[idx->by_entry[i]];
}

CasChunk *cas_index_by_hash(const CasIndex *idx, const uint8_t *hash)
{
    uint32_t i = find_hash_slot(idx, hash);

    return i == NONE ? NULL : &idx->chunks[idx->by_hash[i]];
}

CasChunk *cas_index_get(CasIndex *idx, uint64_t e)
{
    CasChunk *ch = cas_index_by_entry(idx, e);
    uint32_t place;

    if (ch) {
        return ch;
    }
    if ((uint64_t)(idx->count + 1) * 4 > (uint64_t)(idx->mask + 1) * 3) {
        if (idx->mask + 1 > UINT32_MAX / 2) {
            abort();
        }
        tables_resize(idx, (idx->mask + 1) * 2);
    }
    if (idx->free_head != NONE) {
        place = idx->free_head;
        idx->free_head = idx->chunks[place].refs;
    } else {
        if (idx->nb_chunks == idx->alloc) {
            /* Grow by half: less slack than doubling for a big index */
            idx->alloc = idx->alloc < 64 ? 64 : idx->alloc + idx->alloc / 2;
            idx->chunks = cas_realloc(idx->chunks, idx->alloc,
                                      sizeof(CasChunk));
        }
        place = idx->nb_chunks++;
    }
    ch = &idx->chunks[place];
    memset(ch, 0, sizeof(*ch));
    ch->entry = e;
    ch->state = CAS_CHUNK_STRAY;
    idx->count++;
    table_insert(idx, idx->by_entry, slot_of_entry(idx, e), place);
    return ch;
}

/* Forget @ch in by_hash if it is the chunk found for its hash */
static void unhash(CasIndex *idx, CasChunk *ch)
{
    uint32_t i;

    if (ch->state != CAS_CHUNK_HASHED) {
        return;
    }
    i = find_hash_slot(idx, ch->hash);
    if (i != NONE && &idx->chunks[idx->by_hash[i]] == ch) {
        table_remove_slot(idx, idx->by_hash, i);
        idx->hashed--;
    }
}

void cas_index_set_hash(CasIndex *idx, CasChunk *ch, const uint8_t *hash)
{
    uint32_t place = ch - idx->chunks;
    uint32_t i;

    unhash(idx, ch);
    memcpy(ch->hash, hash, CAS_HASH_SIZE);
    ch->state = CAS_CHUNK_HASHED;
    i = find_hash_slot(idx, hash);
    if (i != NONE) {
        idx->by_hash[i] = place;        /* the newest with the hash */
    } else {
        table_insert(idx, idx->by_hash, slot_of_hash(idx, hash), place);
        idx->hashed++;
    }
}

void cas_index_drop_unreferenced(CasIndex *idx)
{
    for (uint32_t p = 0; p < idx->nb_chunks; p++) {
        CasChunk *ch = &idx->chunks[p];

        if (ch->state == CAS_CHUNK_FREE || ch->refs) {
            continue;
        }
        unhash(idx, ch);
        table_remove_slot(idx, idx->by_entry, find_entry_slot(idx, ch->entry));
        ch->state = CAS_CHUNK_FREE;
        ch->refs = idx->free_head;
        idx->free_head = p;
        idx->count--;
    }
}

size_t cas_index_bytes(const CasIndex *idx)
{
    return (size_t)idx->alloc * sizeof(CasChunk) +
           2 * (size_t)(idx->mask + 1) * sizeof(uint32_t);
}
