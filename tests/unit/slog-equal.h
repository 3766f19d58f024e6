/*
 * Field-by-field equality of the decoded structs of slog-format.h
 * (derived fields included), for the round trips of the unit test and
 * the fuzz target.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SOFTDEV_SLOG_EQUAL_H
#define SOFTDEV_SLOG_EQUAL_H

#include <string.h>

#include "block/softdev/slog-format.h"

static inline bool slog_header_equal(const SlogHeader *a, const SlogHeader *b)
{
    return !memcmp(a->magic, b->magic, sizeof(a->magic)) &&
           a->version == b->version && a->header_size == b->header_size &&
           a->incompat_features == b->incompat_features &&
           a->compat_features == b->compat_features &&
           a->virtual_size == b->virtual_size &&
           a->cluster_size == b->cluster_size &&
           a->segment_size == b->segment_size &&
           a->map_offset[0] == b->map_offset[0] &&
           a->map_offset[1] == b->map_offset[1] &&
           a->map_size == b->map_size && a->data_offset == b->data_offset &&
           a->algorithm == b->algorithm && a->level == b->level &&
           a->nb_clusters == b->nb_clusters &&
           a->max_record == b->max_record;
}

static inline bool slog_slot_equal(const SlogSlot *a, const SlogSlot *b)
{
    return a->generation == b->generation && a->epoch == b->epoch &&
           a->map_area == b->map_area && a->next_seq == b->next_seq &&
           a->head_segment == b->head_segment &&
           a->head_offset == b->head_offset &&
           a->nb_segments == b->nb_segments && a->flags == b->flags;
}

static inline bool slog_record_equal(const SlogRecord *a, const SlogRecord *b)
{
    return a->seq == b->seq && a->epoch == b->epoch && a->type == b->type &&
           a->flags == b->flags && a->encoding == b->encoding &&
           a->cluster == b->cluster && a->count == b->count &&
           a->payload_len == b->payload_len && a->src == b->src &&
           a->size == b->size;
}

#endif /* SOFTDEV_SLOG_EQUAL_H */
