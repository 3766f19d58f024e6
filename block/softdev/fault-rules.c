/*
 * softdev-fault's rules (fault.h): matching requests, deciding whether a
 * rule fires, and what it does to the data.  The device is fault.c.
 *
 * softdev-fault: a disk that fails the way real ones do, on purpose.
 * Rules pick requests (by operation, byte range, probability with a seed,
 * after the N-th match, for N requests, in a time window) and do one thing
 * to them: fail them with an errno, delay them, corrupt the data a read
 * returns (bit flips), or tear a write (only a prefix or some sectors
 * reach the child; the guest gets an error or success as the rule says).
 * Rules come with the node ("rules" in -blockdev JSON) and are replaced
 * at runtime (softdev-fault-set, softdev-fault-clear); query-softdevs
 * counts, per rule, the requests it matched and the faults it injected.
 *
 * Content preserving while no rule fires: softdev-insert puts it above a
 * running guest's disk.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/clone-visitor.h"
#include "qapi/qapi-visit-block-core.h"
#include "qemu/cutils.h"
#include "qemu/iov.h"
#include "qemu/timer.h"
#include "softdev/softdev.h"
#include "fault.h"


static const struct {
    const char *name;
    int value;
} softdev_fault_errnos[] = {
    { "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EROFS", EROFS },
    { "ETIMEDOUT", ETIMEDOUT }, { "EPERM", EPERM }, { "EINVAL", EINVAL },
    { "ENOMEM", ENOMEM }, { "EAGAIN", EAGAIN }, { "ECANCELED", ECANCELED },
    { "ENOMEDIUM", ENOMEDIUM }, { "EBUSY", EBUSY },
};

uint64_t fault_seed(uint64_t seed)
{
    return seed ? seed : 0x9e3779b97f4a7c15ull;
}

uint64_t fault_rand(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dull;
}

static double fault_rand_unit(uint64_t *state)
{
    return (fault_rand(state) >> 11) * (1.0 / (1ull << 53));
}

int fault_errno_parse(const char *name, Error **errp)
{
    for (size_t i = 0; i < ARRAY_SIZE(softdev_fault_errnos); i++) {
        if (!strcmp(softdev_fault_errnos[i].name, name)) {
            return softdev_fault_errnos[i].value;
        }
    }
    error_setg(errp, "unknown errno '%s' (EIO, ENOSPC, EROFS, ETIMEDOUT, "
               "EPERM, EINVAL, ENOMEM, EAGAIN, ECANCELED, ENOMEDIUM, EBUSY)",
               name);
    return 0;
}

/*
 * Whether @action can do anything to a request of @op: corrupt changes
 * the data reads return, tear cuts the data of writes
 */
static bool fault_action_applies(SoftdevFaultAction action, SoftdevOp op)
{
    switch (action) {
    case SOFTDEV_FAULT_ACTION_CORRUPT:
        return op == SOFTDEV_OP_READ;
    case SOFTDEV_FAULT_ACTION_TEAR:
        return op == SOFTDEV_OP_WRITE;
    default:
        return true;
    }
}

FaultRules *fault_rules_new(SoftdevFaultRuleList *list, Error **errp)
{
    g_autoptr(FaultRules) rules = g_new0(FaultRules, 1);
    SoftdevFaultRuleList *l;
    size_t n = 0;

    for (l = list; l; l = l->next) {
        n++;
    }
    rules->rules = g_new0(FaultRule, MAX(n, 1));
    rules->set_ns = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    for (l = list; l; l = l->next, rules->nb++) {
        SoftdevFaultRule *q = l->value;
        FaultRule *r = &rules->rules[rules->nb];

        r->def = QAPI_CLONE(SoftdevFaultRule, q);
        r->rng = fault_seed(q->has_seed ? q->seed : 1);
        r->err = EIO;
        if (q->has_probability &&
            !(q->probability >= 0 && q->probability <= 1)) {
            error_setg(errp, "rule %zu: probability must be from 0 to 1",
                       rules->nb);
            return NULL;
        }
        if (q->q_errno) {   /* QAPI's name for the member 'errno' */
            r->err = fault_errno_parse(q->q_errno, errp);
            if (!r->err) {
                error_prepend(errp, "rule %zu: ", rules->nb);
                return NULL;
            }
        }
        if (q->has_delay_max_ns &&
            q->delay_max_ns < (q->has_delay_ns ? q->delay_ns : 1000000)) {
            error_setg(errp, "rule %zu: delay-max-ns is less than delay-ns",
                       rules->nb);
            return NULL;
        }
        if (q->has_tear_bytes && q->tear_bytes % 512) {
            error_setg(errp, "rule %zu: tear-bytes must be a multiple of 512",
                       rules->nb);
            return NULL;
        }
        if (q->has_stop_ms && q->has_start_ms && q->stop_ms < q->start_ms) {
            error_setg(errp, "rule %zu: stop-ms is before start-ms",
                       rules->nb);
            return NULL;
        }
        if (q->has_op && !fault_action_applies(q->action, q->op)) {
            error_setg(errp, "rule %zu: %s applies to %s only", rules->nb,
                       SoftdevFaultAction_str(q->action),
                       q->action == SOFTDEV_FAULT_ACTION_CORRUPT ? "reads" :
                       "writes");
            return NULL;
        }
    }
    return g_steal_pointer(&rules);
}

void fault_rules_free(FaultRules *rules)
{
    if (!rules) {
        return;
    }
    for (size_t i = 0; i < rules->nb; i++) {
        qapi_free_SoftdevFaultRule(rules->rules[i].def);
    }
    g_free(rules->rules);
    g_free(rules);
}

/*
 * Whether @r's op, range and window fit @req, and its action can act on
 * it (a corrupt rule without an op matches reads only)
 */
static bool fault_matches(const FaultRules *rules, const FaultRule *r,
                          const SoftdevRequest *req, int64_t now)
{
    const SoftdevFaultRule *q = r->def;
    uint64_t start = q->has_offset ? q->offset : 0;
    uint64_t end = q->has_length ? start + q->length : UINT64_MAX;
    int64_t ms = (now - rules->set_ns) / SCALE_MS;

    if ((q->has_op && q->op != req->op) ||
        !fault_action_applies(q->action, req->op)) {
        return false;
    }
    if (req->op != SOFTDEV_OP_FLUSH &&
        ((uint64_t)req->offset >= end ||
         (uint64_t)(req->offset + req->bytes) <= start)) {
        return false;
    }
    if ((q->has_start_ms && ms < (int64_t)q->start_ms) ||
        (q->has_stop_ms && ms > (int64_t)q->stop_ms)) {
        return false;
    }
    return true;
}

FaultRule *fault_pick(FaultRules *rules, const SoftdevRequest *req)
{
    int64_t now;

    if (!rules) {
        return NULL;
    }
    now = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    for (size_t i = 0; i < rules->nb; i++) {
        FaultRule *r = &rules->rules[i];
        const SoftdevFaultRule *q = r->def;

        if (!fault_matches(rules, r, req, now)) {
            continue;
        }
        /* The first rule that matches decides */
        r->matched++;
        if (r->matched <= (q->has_after ? q->after : 0) ||
            (q->has_count && r->fired >= q->count)) {
            return NULL;
        }
        if (q->has_probability && fault_rand_unit(&r->rng) >= q->probability) {
            return NULL;
        }
        r->fired++;
        return r;
    }
    return NULL;
}

uint64_t fault_delay_ns(FaultRule *r)
{
    const SoftdevFaultRule *q = r->def;
    uint64_t lo = q->has_delay_ns ? q->delay_ns : 1000000;

    if (!q->has_delay_max_ns || q->delay_max_ns == lo) {
        return lo;
    }
    return lo + fault_rand(&r->rng) % (q->delay_max_ns - lo + 1);
}

void fault_corrupt(FaultRule *r, QEMUIOVector *qiov, size_t offset,
                   size_t bytes)
{
    uint32_t flips = r->def->has_flip_bits ? r->def->flip_bits : 1;

    for (uint32_t i = 0; i < flips && bytes; i++) {
        size_t bit = fault_rand(&r->rng) % (bytes * 8);
        uint8_t byte;

        qemu_iovec_to_buf(qiov, offset + bit / 8, &byte, 1);
        byte ^= 1u << (bit % 8);
        qemu_iovec_from_buf(qiov, offset + bit / 8, &byte, 1);
    }
}
