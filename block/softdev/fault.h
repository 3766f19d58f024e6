/*
 * softdev-fault's rules (fault-rules.c), shared by the device (fault.c)
 * and its QMP commands (fault-qmp.c).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SOFTDEV_FAULT_H
#define SOFTDEV_FAULT_H

#include "qapi/qapi-types-block-core.h"
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
 * and window fit counts it as matched, and fires unless its after, count
 * or probability say no
 */
FaultRule *fault_pick(FaultRules *rules, const SoftdevRequest *req);
uint64_t fault_delay_ns(FaultRule *r);
/* Flip the rule's bits in [@offset, @offset + @bytes) of @qiov */
void fault_corrupt(FaultRule *r, QEMUIOVector *qiov, size_t offset,
                   size_t bytes);

/* fault.c, for fault-qmp.c: replace the node's rules (NULL: none) */
int fault_set_rules(BlockDriverState *bs, SoftdevFaultRuleList *list,
                    Error **errp);

#endif /* SOFTDEV_FAULT_H */
