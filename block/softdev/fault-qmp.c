/*
 * The QMP commands of softdev-fault (qapi/softdev.json):
 * softdev-fault-set and softdev-fault-clear.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-softdev.h"
#include "block/block_int.h"
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
