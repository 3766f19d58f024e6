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
                           bool has_tear, bool tear, Error **errp)
{
    BlockDriverState *bs = fault_find(node_name, errp);
    g_autoptr(SoftdevPowercut) res = g_new0(SoftdevPowercut, 1);
    SoftdevFault *s;
    AioContext *old_ctx;
    int ret;

    if (!bs) {
        return NULL;
    }
    s = softdev_opaque(bs);
    bdrv_ref(bs);
    bdrv_drained_begin(bs);
    old_ctx = bdrv_co_enter(bs);
    WITH_GRAPH_RDLOCK_GUARD() {
        qemu_co_rwlock_wrlock(&s->cache.lock);
        ret = fault_cache_co_cut(bs, &s->cache,
                                 has_keep ? keep : SOFTDEV_POWERCUT_KEEP_NONE,
                                 has_seed ? seed : 1, has_tear && tear, res,
                                 errp);
        qemu_co_rwlock_unlock(&s->cache.lock);
    }
    bdrv_co_leave(bs, old_ctx);
    /* Whatever the cut could write, the power is gone */
    if (action == SOFTDEV_POWERCUT_ACTION_CONTINUE) {
        fault_set_power(s, FAULT_POWER_OFF);
    } else if (runstate_check(RUN_STATE_RUNNING)) {
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
    g_autoptr(SoftdevCrashStates) res = NULL;
    g_autoptr(GPtrArray) states = NULL;
    g_autofree int64_t *offset = NULL, *bytes = NULL;
    FaultCrashWindow w = { 0 };
    FaultCachedWrite *cw;
    SoftdevFault *s;
    AioContext *old_ctx;
    bool exhaustive;
    int64_t size;
    int ret;

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
    old_ctx = bdrv_co_enter(bs);
    WITH_GRAPH_RDLOCK_GUARD() {
        size = bdrv_co_getlength(bs);
    }
    /* No write-back meanwhile: the window and the disk belong together */
    qemu_co_rwlock_wrlock(&s->cache.lock);
    offset = g_new(int64_t, s->cache.nb + 1);
    bytes = g_new(int64_t, s->cache.nb + 1);
    QTAILQ_FOREACH(cw, &s->cache.writes, next) {
        offset[w.nb] = cw->offset;
        bytes[w.nb++] = cw->bytes;
    }
    w.offset = offset;
    w.bytes = bytes;
    states = fault_crash_enumerate(&w, has_max_subsets ? max_subsets : 64,
                                   has_seed ? seed : 1, &exhaustive);
    if (size < 0) {
        error_setg_errno(errp, -size, "cannot get the size of '%s'",
                         node_name);
        ret = size;
    } else {
        ret = fault_crash_write(file, &s->cache, size, states, exhaustive,
                                errp);
    }
    qemu_co_rwlock_unlock(&s->cache.lock);
    bdrv_co_leave(bs, old_ctx);
    bdrv_co_unref(bs);
    if (ret < 0) {
        return NULL;
    }
    res = g_new0(SoftdevCrashStates, 1);
    res->writes = w.nb;
    res->prefixes = w.nb + 1;
    res->subsets = states->len - res->prefixes;
    res->exhaustive = exhaustive;
    return g_steal_pointer(&res);
}
