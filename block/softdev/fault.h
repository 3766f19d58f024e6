/*
 * softdev-fault's rules (fault-rules.c), shared by the device (fault.c)
 * and its QMP commands (fault-qmp.c).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SOFTDEV_FAULT_H
#define SOFTDEV_FAULT_H

#include "qapi/qapi-types-block-core.h"
#include "qapi/qapi-types-softdev.h"
#include "qemu/coroutine.h"
#include "qemu/queue.h"
#include "system/runstate.h"
#include "softdev/softdev.h"

typedef struct FaultRule {
    SoftdevFaultRule *def;
    uint64_t rng;               /* its random numbers' state */
    int err;                    /* errno of fail and tear */
    uint64_t matched, fired;
} FaultRule;

typedef struct FaultRules {
    FaultRule *rules;
    size_t nb;
    int64_t set_ns;             /* QEMU_CLOCK_REALTIME when set */
} FaultRules;

/* Checked rules from @list (its errno names resolved), or NULL */
FaultRules *fault_rules_new(SoftdevFaultRuleList *list, Error **errp);
void fault_rules_free(FaultRules *rules);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FaultRules, fault_rules_free)
/* The errno called @name ("EIO"), or 0 with @errp set */
int fault_errno_parse(const char *name, Error **errp);
/*
 * The rule that fires on @req, or NULL: the first rule whose op, range
 * and window fit, and whose action can act on @req (corrupt: reads, tear:
 * writes), counts it as matched, and fires unless its after, count or
 * probability say no
 */
FaultRule *fault_pick(FaultRules *rules, const SoftdevRequest *req);
uint64_t fault_delay_ns(FaultRule *r);
/* Flip the rule's bits in [@offset, @offset + @bytes) of @qiov */
void fault_corrupt(FaultRule *r, QEMUIOVector *qiov, size_t offset,
                   size_t bytes);

/* xorshift64*: small, seedable, the same everywhere (0: a fixed seed) */
uint64_t fault_rand(uint64_t *state);
uint64_t fault_seed(uint64_t seed);

/* A write, write-zeroes or discard in the volatile cache (fault-cache.c) */
typedef struct FaultCachedWrite {
    SoftdevOp op;
    int64_t offset, bytes;
    BdrvRequestFlags flags;
    uint8_t *data;              /* write only */
    QTAILQ_ENTRY(FaultCachedWrite) next;
} FaultCachedWrite;

typedef struct FaultCache {
    SoftdevFaultCacheModel model;
    uint64_t size;              /* cache-size */
    /* Oldest first; what reads see over the child */
    QTAILQ_HEAD(, FaultCachedWrite) writes;
    uint64_t nb, bytes;
    /* Shared: reads; exclusive: writing back, power cuts */
    CoRwlock lock;
    uint64_t destaged, written_back, powercuts, lost;
} FaultCache;

void fault_cache_init(FaultCache *c, SoftdevFaultCacheModel model,
                      uint64_t size);
/* Drop what the cache holds (power lost): returns how many writes */
uint64_t fault_cache_drop(FaultCache *c);
/* A request on a node with a volatile cache: @next runs a request below */
int coroutine_fn GRAPH_RDLOCK
fault_cache_co_request(BlockDriverState *bs, FaultCache *c,
                       SoftdevRequest *req, SoftdevNextFn *next);
/* Write back every cached write through @bs->file (no rules), at close */
int coroutine_mixed_fn GRAPH_RDLOCK
fault_cache_write_back_all(BlockDriverState *bs, FaultCache *c);
/* The power cut of softdev-fault-powercut, with @c's lock held */
int coroutine_fn GRAPH_RDLOCK
fault_cache_co_cut(BlockDriverState *bs, FaultCache *c,
                   SoftdevPowercutKeep keep, uint64_t seed, bool tear,
                   SoftdevPowercut *res, Error **errp);

/* The crash states of a window of writes (fault-crash.c) */
typedef struct FaultCrashWindow {
    uint32_t nb;
    const int64_t *offset, *bytes;
} FaultCrashWindow;
/*
 * The crash states other than the n + 1 prefixes: a GPtrArray of GArray
 * of uint32_t (the writes applied, in order); *@exhaustive says whether
 * they and the prefixes are all the states there are
 */
GPtrArray *fault_crash_enumerate(const FaultCrashWindow *w,
                                 uint32_t max_subsets, uint64_t seed,
                                 bool *exhaustive);
/*
 * The crash states of @c's writes, written to @file
 * (docs/specs/softdev-fault.rst), with @c's lock held: how many, or NULL
 */
SoftdevCrashStates * coroutine_fn GRAPH_RDLOCK
fault_co_crash_states(BlockDriverState *bs, FaultCache *c, const char *file,
                      uint32_t max_subsets, uint64_t seed, Error **errp);

/* fault.c, for fault-qmp.c */
typedef enum FaultPower {
    FAULT_POWER_ON,
    FAULT_POWER_OFF,            /* cut, action continue: until clear */
    FAULT_POWER_OFF_UNTIL_STOP, /* cut, action stop: until the VM stops */
} FaultPower;

typedef struct SoftdevFault {
    BlockDriverState *bs;
    FaultRules *rules;          /* NULL: none; swapped while drained */
    FaultCache cache;
    FaultPower power;           /* off: every request fails with EIO */
    VMChangeStateEntry *vm_state;
} SoftdevFault;

/* The one place the power changes */
void fault_set_power(SoftdevFault *s, FaultPower power);
/* Replace the node's rules (NULL: none); also ends a power cut */
int fault_set_rules(BlockDriverState *bs, SoftdevFaultRuleList *list,
                    Error **errp);

#endif /* SOFTDEV_FAULT_H */
