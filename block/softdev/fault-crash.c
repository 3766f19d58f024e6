/*
 * softdev-fault's crash states (fault.h): the disks a power cut could
 * leave, from a window of writes (those in the volatile cache), for
 * CrashMonkey/ALICE-style testing; softdev-fault-crash-states writes them
 * to a file (docs/specs/softdev-fault.rst) from which
 * scripts/softdev_crashstates.py makes the images.  That script
 * enumerates the same way, so the two agree state for state.
 *
 * A state is a set of the window's writes applied in order to the disk
 * below.  Every prefix is one (n + 1 of them); then other subsets: all
 * of them if there are at most max-subsets, else random ones (each write
 * in with probability 1/2, xorshift64* from the seed), up to max-subsets
 * distinct ones in 8 * max-subsets draws.  Two sets are one state if
 * every byte has the data of the same write (or of the disk) in both.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "block/block_int.h"
#include "fault.h"

#define FAULT_CRASH_MAGIC "SDCRASH1"
#define FAULT_CRASH_VERSION 1
#define FAULT_CRASH_EXHAUSTIVE 1u
/* The most writes for which every subset is tried */
#define FAULT_CRASH_ALL_MAX 20

typedef struct FcEnum {
    const FaultCrashWindow *w;
    int64_t *bounds;            /* the writes' ends, sorted, unique */
    uint32_t nb_bounds;
    int32_t *src;               /* per segment: the write whose data */
    GHashTable *seen;           /* the states' src, as GBytes */
    GPtrArray *states;
} FcEnum;

static int fc_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? -1 : x > y;
}

/* The segment that starts at @offset (a bound) */
static uint32_t fc_segment(const FcEnum *e, int64_t offset)
{
    int64_t *at = bsearch(&offset, e->bounds, e->nb_bounds, sizeof(int64_t),
                          fc_cmp_i64);

    assert(at);
    return at - e->bounds;
}

/* Add the state of the writes in @in, unless it is one already */
static bool fc_add(FcEnum *e, const bool *in)
{
    const FaultCrashWindow *w = e->w;
    uint32_t nb_seg = e->nb_bounds ? e->nb_bounds - 1 : 0;
    GBytes *key;
    GArray *state;

    for (uint32_t j = 0; j < nb_seg; j++) {
        e->src[j] = -1;
    }
    for (uint32_t i = 0; i < w->nb; i++) {
        int64_t end = w->offset[i] + w->bytes[i];

        if (!in[i]) {
            continue;
        }
        for (uint32_t j = fc_segment(e, w->offset[i]);
             j < nb_seg && e->bounds[j] < end; j++) {
            e->src[j] = i;
        }
    }
    key = g_bytes_new(e->src, nb_seg * sizeof(int32_t));
    if (g_hash_table_contains(e->seen, key)) {
        g_bytes_unref(key);
        return false;
    }
    g_hash_table_add(e->seen, key);
    state = g_array_new(false, false, sizeof(uint32_t));
    for (uint32_t i = 0; i < w->nb; i++) {
        if (in[i]) {
            g_array_append_val(state, i);
        }
    }
    g_ptr_array_add(e->states, state);
    return true;
}

GPtrArray *fault_crash_enumerate(const FaultCrashWindow *w,
                                 uint32_t max_subsets, uint64_t seed,
                                 bool *exhaustive)
{
    g_autofree bool *in = g_new0(bool, w->nb + 1);
    g_autofree int64_t *bounds = g_new(int64_t, 2 * w->nb + 1);
    g_autofree int32_t *src = g_new(int32_t, 2 * w->nb + 1);
    FcEnum e = {
        .w = w, .bounds = bounds, .src = src,
        .seen = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                      (GDestroyNotify)g_bytes_unref, NULL),
        .states = g_ptr_array_new_with_free_func(
                      (GDestroyNotify)g_array_unref),
    };
    uint32_t n = w->nb, u = 0;

    for (uint32_t i = 0; i < n; i++) {
        bounds[e.nb_bounds++] = w->offset[i];
        bounds[e.nb_bounds++] = w->offset[i] + w->bytes[i];
    }
    qsort(bounds, e.nb_bounds, sizeof(int64_t), fc_cmp_i64);
    for (uint32_t i = 0; i < e.nb_bounds; i++) {
        if (!u || bounds[u - 1] != bounds[i]) {
            bounds[u++] = bounds[i];
        }
    }
    e.nb_bounds = u;

    for (uint32_t k = 0; k <= n; k++) {
        for (uint32_t i = 0; i < n; i++) {
            in[i] = i < k;
        }
        fc_add(&e, in);
    }
    *exhaustive = n < FAULT_CRASH_ALL_MAX &&
                  (1ull << n) - (n + 1) <= max_subsets;
    if (*exhaustive) {
        for (uint64_t mask = 0; mask < (1ull << n); mask++) {
            if (!(mask & (mask + 1))) {
                continue;           /* a prefix */
            }
            for (uint32_t i = 0; i < n; i++) {
                in[i] = mask >> i & 1;
            }
            fc_add(&e, in);
        }
    } else {
        uint64_t rng = fault_seed(seed);
        uint32_t added = 0;

        for (uint64_t draw = 0;
             draw < 8ull * max_subsets && added < max_subsets; draw++) {
            for (uint32_t i = 0; i < n; i++) {
                in[i] = fault_rand(&rng) >> 63;
            }
            added += fc_add(&e, in);
        }
    }
    g_hash_table_destroy(e.seen);
    return e.states;
}

static bool fc_put(int fd, const void *buf, size_t len, Error **errp)
{
    if (qemu_write_full(fd, buf, len) != len) {
        error_setg_errno(errp, errno, "cannot write the crash states");
        return false;
    }
    return true;
}

static int fault_crash_write(const char *path, FaultCache *c,
                             int64_t disk_size, GPtrArray *states,
                             bool exhaustive, Error **errp)
{
    struct {
        char magic[8];
        uint32_t version, flags, nb_writes, nb_prefixes, nb_states, zero;
        uint64_t disk_size;
    } QEMU_PACKED hdr = {
        .version = cpu_to_le32(FAULT_CRASH_VERSION),
        .flags = cpu_to_le32(exhaustive ? FAULT_CRASH_EXHAUSTIVE : 0),
        .nb_writes = cpu_to_le32(c->nb),
        .nb_prefixes = cpu_to_le32(c->nb + 1),
        .nb_states = cpu_to_le32(states->len),
        .disk_size = cpu_to_le64(disk_size),
    };
    FaultCachedWrite *w;
    bool ok = true;
    int fd;

    memcpy(hdr.magic, FAULT_CRASH_MAGIC, sizeof(hdr.magic));
    fd = qemu_create(path, O_WRONLY | O_TRUNC | O_BINARY, 0600, errp);
    if (fd < 0) {
        return -EIO;
    }
    ok = fc_put(fd, &hdr, sizeof(hdr), errp);
    QTAILQ_FOREACH(w, &c->writes, next) {
        struct {
            uint8_t op, zero[7];
            uint64_t offset, bytes;
        } QEMU_PACKED rec = {
            .op = w->op == SOFTDEV_OP_WRITE ? 1 :
                  w->op == SOFTDEV_OP_WRITE_ZEROES ? 2 : 3,
            .offset = cpu_to_le64(w->offset),
            .bytes = cpu_to_le64(w->bytes),
        };

        ok = ok && fc_put(fd, &rec, sizeof(rec), errp) &&
             (!w->data || fc_put(fd, w->data, w->bytes, errp));
    }
    for (guint i = 0; ok && i < states->len; i++) {
        GArray *st = g_ptr_array_index(states, i);
        uint32_t nb = cpu_to_le32(st->len);

        ok = fc_put(fd, &nb, sizeof(nb), errp);
        for (guint j = 0; ok && j < st->len; j++) {
            uint32_t idx = cpu_to_le32(g_array_index(st, uint32_t, j));

            ok = fc_put(fd, &idx, sizeof(idx), errp);
        }
    }
    if (ok && qemu_fdatasync(fd) < 0) {
        error_setg_errno(errp, errno, "cannot write the crash states");
        ok = false;
    }
    qemu_close(fd);
    return ok ? 0 : -EIO;
}

SoftdevCrashStates * coroutine_fn GRAPH_RDLOCK
fault_co_crash_states(BlockDriverState *bs, FaultCache *c, const char *file,
                      uint32_t max_subsets, uint64_t seed, Error **errp)
{
    g_autoptr(SoftdevCrashStates) res = g_new0(SoftdevCrashStates, 1);
    g_autoptr(GPtrArray) states = NULL;
    g_autofree int64_t *offset = g_new(int64_t, c->nb + 1);
    g_autofree int64_t *bytes = g_new(int64_t, c->nb + 1);
    FaultCrashWindow w = { .offset = offset, .bytes = bytes };
    int64_t size = bdrv_co_getlength(bs);
    FaultCachedWrite *cw;
    bool exhaustive;

    if (size < 0) {
        error_setg_errno(errp, -size, "cannot get the size of the node");
        return NULL;
    }
    QTAILQ_FOREACH(cw, &c->writes, next) {
        offset[w.nb] = cw->offset;
        bytes[w.nb++] = cw->bytes;
    }
    states = fault_crash_enumerate(&w, max_subsets, seed, &exhaustive);
    if (fault_crash_write(file, c, size, states, exhaustive, errp) < 0) {
        return NULL;
    }
    res->writes = w.nb;
    res->prefixes = w.nb + 1;
    res->subsets = states->len - res->prefixes;
    res->exhaustive = exhaustive;
    return g_steal_pointer(&res);
}
