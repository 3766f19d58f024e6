/*
 * softdev-timetravel's extent maps (tt-extents.h).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "tt-extents.h"
#include "tt-format.h"

static gint tt_key_cmp(gconstpointer a, gconstpointer b, gpointer opaque)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    (void)opaque;
    return x < y ? -1 : x > y;
}

void tt_extents_init(TtExtents *m)
{
    m->tree = g_tree_new_full(tt_key_cmp, NULL, NULL, g_free);
    m->count = 0;
}

void tt_extents_destroy(TtExtents *m)
{
    if (m->tree) {
        g_tree_destroy(m->tree);
        m->tree = NULL;
    }
}

static void tt_insert(TtExtents *m, uint64_t start, uint64_t len,
                      TtExtKind kind, uint64_t loc)
{
    TtExtent *e = g_new(TtExtent, 1);

    *e = (TtExtent) { .start = start, .len = len, .kind = kind, .loc = loc };
    g_tree_insert(m->tree, &e->start, e);
    m->count++;
}

/* The extent containing @offset, or the first one after it, or NULL */
static GTreeNode *tt_at_or_after(TtExtents *m, uint64_t offset)
{
    GTreeNode *n = g_tree_upper_bound(m->tree, &offset);   /* start > off */
    GTreeNode *prev = n ? g_tree_node_previous(n) : g_tree_node_last(m->tree);

    if (prev) {
        TtExtent *e = g_tree_node_value(prev);

        if (e->start + e->len > offset) {
            return prev;
        }
    }
    return n;
}

/* Split the extent containing @offset so that one starts there */
static void tt_split(TtExtents *m, uint64_t offset)
{
    GTreeNode *n = tt_at_or_after(m, offset);
    TtExtent *e = n ? g_tree_node_value(n) : NULL;
    uint64_t cut;

    if (!e || e->start >= offset) {
        return;
    }
    cut = offset - e->start;
    tt_insert(m, offset, e->len - cut, e->kind,
              e->kind == TT_EXT_JOURNAL ? e->loc + cut : 0);
    e->len = cut;
}

void tt_extents_set(TtExtents *m, uint64_t start, uint64_t len,
                    TtExtKind kind, uint64_t loc)
{
    GTreeNode *n;

    if (!len) {
        return;
    }
    tt_split(m, start);
    tt_split(m, start + len);
    while ((n = tt_at_or_after(m, start))) {
        TtExtent *e = g_tree_node_value(n);

        uint64_t key = e->start;

        if (key >= start + len) {
            break;
        }
        g_tree_remove(m->tree, &key);     /* frees e */
        m->count--;
    }
    if (kind != TT_EXT_DISK) {
        tt_insert(m, start, len, kind, loc);
    }
}

void tt_extents_fill(TtExtents *m, uint64_t start, uint64_t len,
                     TtExtKind kind, uint64_t loc)
{
    uint64_t end = start + len, at = start;

    if (kind == TT_EXT_DISK) {
        return;                 /* the disk is what no extent covers */
    }
    while (at < end) {
        TtExtent e;

        tt_extents_lookup(m, at, end - at, &e);
        if (e.kind == TT_EXT_DISK) {
            tt_insert(m, at, e.len, kind,
                      kind == TT_EXT_JOURNAL ? loc + (at - start) : 0);
        }
        at += e.len;
    }
}

void tt_extents_lookup(TtExtents *m, uint64_t offset, uint64_t max,
                       TtExtent *out)
{
    GTreeNode *n = tt_at_or_after(m, offset);
    TtExtent *e = n ? g_tree_node_value(n) : NULL;

    if (!e || e->start > offset) {
        uint64_t gap = e ? e->start - offset : max;

        *out = (TtExtent) { .start = offset, .len = MIN(gap, max),
                            .kind = TT_EXT_DISK };
        return;
    }
    *out = (TtExtent) {
        .start = offset,
        .len = MIN(e->start + e->len - offset, max),
        .kind = e->kind,
        .loc = e->kind == TT_EXT_JOURNAL ? e->loc + (offset - e->start) : 0,
    };
}

void tt_extents_foreach(TtExtents *m, uint64_t start, uint64_t len,
                        void (*fn)(const TtExtent *e, void *opaque),
                        void *opaque)
{
    uint64_t end = start + len;
    GTreeNode *n = tt_at_or_after(m, start);

    for (; n; n = g_tree_node_next(n)) {
        const TtExtent *e = g_tree_node_value(n);
        uint64_t s = MAX(e->start, start);
        uint64_t t = MIN(e->start + e->len, end);
        TtExtent c;

        if (e->start >= end) {
            break;
        }
        c = (TtExtent) { .start = s, .len = t - s, .kind = e->kind,
                         .loc = e->kind == TT_EXT_JOURNAL ?
                                e->loc + (s - e->start) : 0 };
        fn(&c, opaque);
    }
}

void tt_index_map(const TtIndex *idx, uint64_t seq, TtExtents *map)
{
    tt_extents_init(map);
    for (size_t i = 0; i < idx->nb_recs && idx->recs[i].seq <= seq; i++) {
        const TtRec *r = &idx->recs[i];

        if (r->type == TT_REC_DATA) {
            tt_extents_set(map, r->offset, r->length, TT_EXT_JOURNAL,
                           r->data_pos);
        } else if (tt_is_change(r->type)) {
            tt_extents_set(map, r->offset, r->length, TT_EXT_ZERO, 0);
        }
    }
    /* What no change up to @seq says: the oldest point's content */
    for (size_t i = 0; i < idx->nb_recs; i++) {
        const TtRec *r = &idx->recs[i];

        if (r->type == TT_REC_BASE) {
            tt_extents_fill(map, r->offset, r->length,
                            (r->flags & TT_FLAG_ZERO) ? TT_EXT_ZERO :
                            TT_EXT_JOURNAL, r->data_pos);
        }
    }
}
