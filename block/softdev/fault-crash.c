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
 * The file lists only the subsets: prefix k is the first k writes.  A
 * window of n writes and s segments (between the writes' ends) costs
 * O(n * s) time for all the prefixes and as much per subset drawn, and
 * O(n + s) memory besides the subsets' lists.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "block/block_int.h"
#include "fault.h"

#define FAULT_CRASH_MAGIC "SDCRASH1"
#define FAULT_CRASH_VERSION 2
#define FAULT_CRASH_EXHAUSTIVE 1u
/* The most writes for which every subset is tried */
#define FAULT_CRASH_ALL_MAX 20

typedef struct FcKey {
    uint64_t h[2];
} FcKey;

typedef struct FcEnum {
    const FaultCrashWindow *w;
    int64_t *bounds;            /* the writes' ends, sorted, unique */
    uint32_t nb_bounds;
    int32_t *src;               /* per segment: the write whose data */
    FcKey key;                  /* of src, kept as src changes */
    GHashTable *seen;           /* the states' keys */
    GPtrArray *subsets;
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

/* splitmix64's finaliser */
static uint64_t fc_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/*
 * A state's key is the sum over segments of a hash of (segment, write):
 * 128 bits, so two states with different bytes share one with
 * negligible odds, updated in O(1) per segment a write covers
 */
static void fc_set(FcEnum *e, uint32_t j, int32_t v)
{
    uint64_t old = (uint64_t)j << 32 | (uint32_t)(e->src[j] + 1);
    uint64_t new = (uint64_t)j << 32 | (uint32_t)(v + 1);

    e->key.h[0] += fc_mix(new) - fc_mix(old);
    e->key.h[1] += fc_mix(new ^ 0x5bd1e9955bd1e995ull) -
                   fc_mix(old ^ 0x5bd1e9955bd1e995ull);
    e->src[j] = v;
}

/* Lay write @i over the state */
static void fc_apply(FcEnum *e, uint32_t i)
{
    const FaultCrashWindow *w = e->w;
    int64_t end = w->offset[i] + w->bytes[i];

    for (uint32_t j = fc_segment(e, w->offset[i]);
         j + 1 < e->nb_bounds && e->bounds[j] < end; j++) {
        fc_set(e, j, i);
    }
}

static void fc_reset(FcEnum *e)
{
    for (uint32_t j = 0; j + 1 < e->nb_bounds; j++) {
        fc_set(e, j, -1);
    }
}

static guint fc_key_hash(gconstpointer k)
{
    return ((const FcKey *)k)->h[0];
}

static gboolean fc_key_equal(gconstpointer a, gconstpointer b)
{
    return !memcmp(a, b, sizeof(FcKey));
}

/* Note the current state; false if it is one already */
static bool fc_seen(FcEnum *e)
{
    if (g_hash_table_contains(e->seen, &e->key)) {
        return false;
    }
    g_hash_table_add(e->seen, g_memdup2(&e->key, sizeof(e->key)));
    return true;
}

/* Add the subset of the writes in @in, unless it is a state already */
static bool fc_add_subset(FcEnum *e, const bool *in)
{
    GArray *state;

    fc_reset(e);
    for (uint32_t i = 0; i < e->w->nb; i++) {
        if (in[i]) {
            fc_apply(e, i);
        }
    }
    if (!fc_seen(e)) {
        return false;
    }
    state = g_array_new(false, false, sizeof(uint32_t));
    for (uint32_t i = 0; i < e->w->nb; i++) {
        if (in[i]) {
            g_array_append_val(state, i);
        }
    }
    g_ptr_array_add(e->subsets, state);
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
        .seen = g_hash_table_new_full(fc_key_hash, fc_key_equal, g_free,
                                      NULL),
        .subsets = g_ptr_array_new_with_free_func(
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
    for (uint32_t j = 0; j < u; j++) {
        src[j] = -1;
    }

    /*
     * The prefixes, each the one before and a write: all distinct (the
     * last write of each is the newest data of its bytes)
     */
    for (uint32_t k = 0; k <= n; k++) {
        fc_seen(&e);
        if (k < n) {
            fc_apply(&e, k);
        }
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
            fc_add_subset(&e, in);
        }
    } else {
        uint64_t rng = fault_seed(seed);
        uint32_t added = 0;

        for (uint64_t draw = 0;
             draw < 8ull * max_subsets && added < max_subsets; draw++) {
            for (uint32_t i = 0; i < n; i++) {
                in[i] = fault_rand(&rng) >> 63;
            }
            added += fc_add_subset(&e, in);
        }
    }
    g_hash_table_destroy(e.seen);
    return e.subsets;
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
                             int64_t disk_size, GPtrArray *subsets,
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
        .nb_states = cpu_to_le32(c->nb + 1 + subsets->len),
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
    for (guint i = 0; ok && i < subsets->len; i++) {
        GArray *st = g_ptr_array_index(subsets, i);
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
    g_autoptr(GPtrArray) subsets = NULL;
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
    subsets = fault_crash_enumerate(&w, max_subsets, seed, &exhaustive);
    if (fault_crash_write(file, c, size, subsets, exhaustive, errp) < 0) {
        return NULL;
    }
    res->writes = w.nb;
    res->prefixes = w.nb + 1;
    res->subsets = subsets->len;
    res->exhaustive = exhaustive;
    return g_steal_pointer(&res);
}
