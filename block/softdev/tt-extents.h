/*
 * softdev-timetravel's extent maps: which bytes of the disk are where, as
 * a balanced tree of non-overlapping extents, each a run of journal
 * payload or of zeroes.  A byte no extent covers is "the disk below".
 * Lookups and updates are O(log n) in the number of extents.  Plain C
 * and GLib, for the unit test.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SOFTDEV_TT_EXTENTS_H
#define SOFTDEV_TT_EXTENTS_H

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

typedef enum TtExtKind {
    TT_EXT_DISK,                /* not in the map: the disk below */
    TT_EXT_JOURNAL,             /* journal payload at log position @loc */
    TT_EXT_ZERO,                /* zeroes */
} TtExtKind;

typedef struct TtExtent {
    uint64_t start, len;
    TtExtKind kind;
    uint64_t loc;               /* TT_EXT_JOURNAL: of byte @start */
} TtExtent;

typedef struct TtExtents {
    GTree *tree;                /* start -> TtExtent */
    uint64_t count;
} TtExtents;

void tt_extents_init(TtExtents *m);
void tt_extents_destroy(TtExtents *m);
/* Make [@start, @start + @len) @kind (at @loc), whatever it was */
void tt_extents_set(TtExtents *m, uint64_t start, uint64_t len,
                    TtExtKind kind, uint64_t loc);
/* The same, only where the map says TT_EXT_DISK */
void tt_extents_fill(TtExtents *m, uint64_t start, uint64_t len,
                     TtExtKind kind, uint64_t loc);
/*
 * What byte @offset is: *@e gets the extent from @offset on, clipped to
 * @max bytes and, for TT_EXT_DISK, to the next extent.
 */
void tt_extents_lookup(TtExtents *m, uint64_t offset, uint64_t max,
                       TtExtent *e);
/* Call @fn for each extent overlapping [@start, @start + @len), clipped */
void tt_extents_foreach(TtExtents *m, uint64_t start, uint64_t len,
                        void (*fn)(const TtExtent *e, void *opaque),
                        void *opaque);

struct TtIndex;
/*
 * The disk at point @seq of history @idx (tt-format.h), where it differs
 * from the disk below as it is: initialises @map
 */
void tt_index_map(const struct TtIndex *idx, uint64_t seq, TtExtents *map);

#endif /* SOFTDEV_TT_EXTENTS_H */
