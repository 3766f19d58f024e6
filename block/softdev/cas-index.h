/*
 * softdev-cas's index: the stored chunks (a record of the log each) with
 * their SHA-256 and reference counts, found by hash (to deduplicate a
 * write) and by map entry (to count references).  Chunks live in one
 * array; two open-addressed tables of 4-byte indices find them, so a
 * chunk costs its 48 bytes and a few bytes of table.  Without QEMU, so
 * that the unit test drives it against a model.  It aborts when it cannot
 * allocate, as g_malloc() does.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SOFTDEV_CAS_INDEX_H
#define SOFTDEV_CAS_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CAS_HASH_SIZE       32

typedef enum CasChunkState {
    CAS_CHUNK_FREE,             /* an unused place in the array */
    CAS_CHUNK_STRAY,            /* referred to, but its hash is unknown */
    CAS_CHUNK_HASHED,           /* its hash is known */
} CasChunkState;

typedef struct CasChunk {
    uint8_t hash[CAS_HASH_SIZE];
    uint64_t entry;             /* its map entry (where the record is) */
    uint32_t refs;              /* map entries that refer to it */
    uint32_t state;             /* CasChunkState */
} CasChunk;

typedef struct CasIndex {
    CasChunk *chunks;
    uint32_t nb_chunks;         /* places used in @chunks, free ones too */
    uint32_t alloc;
    uint32_t free_head;         /* a free place, or UINT32_MAX; the next
                                 * free one is in its @refs */
    uint32_t count;             /* chunks not free */
    uint32_t *by_entry;         /* chunk places, UINT32_MAX for none */
    uint32_t *by_hash;
    uint32_t mask;              /* table slots - 1 */
    uint32_t hashed;            /* entries of @by_hash */
} CasIndex;

void cas_index_init(CasIndex *idx);
void cas_index_destroy(CasIndex *idx);

/* The chunk at map entry @e, or NULL */
CasChunk *cas_index_by_entry(const CasIndex *idx, uint64_t e);
/* The newest chunk with @hash, or NULL */
CasChunk *cas_index_by_hash(const CasIndex *idx, const uint8_t *hash);
/*
 * The chunk at map entry @e, a new one (CAS_CHUNK_STRAY, no references)
 * if there is none.  Pointers to chunks are valid until the next call
 * that adds a chunk.
 */
CasChunk *cas_index_get(CasIndex *idx, uint64_t e);
/* @ch's hash becomes @hash, and @ch the newest chunk with it */
void cas_index_set_hash(CasIndex *idx, CasChunk *ch, const uint8_t *hash);
/* Drop every chunk without references */
void cas_index_drop_unreferenced(CasIndex *idx);
/* Bytes of memory the index takes */
size_t cas_index_bytes(const CasIndex *idx);

#endif /* SOFTDEV_CAS_INDEX_H */
