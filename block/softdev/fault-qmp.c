/*
 * The QMP commands of softdev-fault (qapi/softdev.json):
 * softdev-fault-set, -clear, -powercut and -crash-states.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-softdev.h"
#include "block/block_int.h"
#include "system/runstate.h"
#include "fault.h"

static BlockDriverState *fault_find(const char *name, Error **errp)
{
    BlockDriverState *bs = bdrv_find_node(name);
    SoftdevDriver *sd = softdev_driver(bs);

    if (!bs) {
        error_setg(errp, "node '%s' not found", name);
        return NULL;
    }
    if (!sd || strcmp(sd->name, "softdev-fault")) {
        error_setg(errp, "node '%s' is not a softdev-fault node", name);
        return NULL;
    }
    return bs;
}

void qmp_softdev_fault_set(const char *node_name,
                           SoftdevFaultRuleList *rules, Error **errp)
{
    BlockDriverState *bs = fault_find(node_name, errp);

    if (bs) {
        fault_set_rules(bs, rules, errp);
    }
}

void qmp_softdev_fault_clear(const char *node_name, Error **errp)
{
    BlockDriverState *bs = fault_find(node_name, errp);

    if (bs) {
        fault_set_rules(bs, NULL, errp);
    }
}

SoftdevPowercut * coroutine_fn
qmp_softdev_fault_powercut(const char *node_name,
                           SoftdevPowercutAction action,
                           bool has_keep, SoftdevPowercutKeep keep,
                           bool has_seed, uint64_t seed,
                           bool has_tear, bool tear,
                           const char *crash_states,
                           bool has_max_subsets, uint32_t max_subsets,
                           Error **errp)
{
    BlockDriverState *bs = fault_find(node_name, errp);
    g_autoptr(SoftdevPowercut) res = g_new0(SoftdevPowercut, 1);
    SoftdevFault *s;
    AioContext *old_ctx;
    bool cut = false;
    int ret = -EIO;

    if (!bs) {
        return NULL;
    }
    s = softdev_opaque(bs);
    if (crash_states && s->cache.model != SOFTDEV_FAULT_CACHE_MODEL_VOLATILE) {
        error_setg(errp, "node '%s' has no volatile write cache "
                   "(cache-model)", node_name);
        return NULL;
    }
    bdrv_ref(bs);
    bdrv_drained_begin(bs);
    old_ctx = bdrv_co_enter(bs);
    WITH_GRAPH_RDLOCK_GUARD() {
        qemu_co_rwlock_wrlock(&s->cache.lock);
        if (crash_states) {
            /* What this cut could leave; with keep none it leaves the base */
            res->crash_states = fault_co_crash_states(
                bs, &s->cache, crash_states,
                has_max_subsets ? max_subsets : 64, has_seed ? seed : 1,
                errp);
        }
        if (!crash_states || res->crash_states) {
            cut = true;
            ret = fault_cache_co_cut(bs, &s->cache,
                                     has_keep ? keep :
                                     SOFTDEV_POWERCUT_KEEP_NONE,
                                     has_seed ? seed : 1, has_tear && tear,
                                     res, errp);
        }
        qemu_co_rwlock_unlock(&s->cache.lock);
    }
    bdrv_co_leave(bs, old_ctx);
    /* Whatever the cut could write, the power is gone */
    if (cut && action == SOFTDEV_POWERCUT_ACTION_CONTINUE) {
        fault_set_power(s, FAULT_POWER_OFF);
    } else if (cut && runstate_check(RUN_STATE_RUNNING)) {
        /* Requests fail until the VM has stopped (fault.c powers on) */
        fault_set_power(s, FAULT_POWER_OFF_UNTIL_STOP);
        qemu_system_vmstop_request_prepare();
        qemu_system_vmstop_request(RUN_STATE_PAUSED);
    }
    bdrv_drained_end(bs);
    bdrv_co_unref(bs);
    return ret < 0 ? NULL : g_steal_pointer(&res);
}

SoftdevCrashStates * coroutine_fn
qmp_softdev_fault_crash_states(const char *node_name, const char *file,
                               bool has_max_subsets, uint32_t max_subsets,
                               bool has_seed, uint64_t seed, Error **errp)
{
    BlockDriverState *bs = fault_find(node_name, errp);
    SoftdevCrashStates *res = NULL;
    SoftdevFault *s;
    AioContext *old_ctx;

    if (!bs) {
        return NULL;
    }
    s = softdev_opaque(bs);
    if (s->cache.model != SOFTDEV_FAULT_CACHE_MODEL_VOLATILE) {
        error_setg(errp, "node '%s' has no volatile write cache "
                   "(cache-model)", node_name);
        return NULL;
    }
    bdrv_ref(bs);
    bdrv_drained_begin(bs);
    old_ctx = bdrv_co_enter(bs);
    WITH_GRAPH_RDLOCK_GUARD() {
        qemu_co_rwlock_wrlock(&s->cache.lock);
        res = fault_co_crash_states(bs, &s->cache, file,
                                    has_max_subsets ? max_subsets : 64,
                                    has_seed ? seed : 1, errp);
        qemu_co_rwlock_unlock(&s->cache.lock);
    }
    bdrv_co_leave(bs, old_ctx);
    bdrv_drained_end(bs);
    bdrv_co_unref(bs);
    return res;
}
