/*
 * softdev: putting a soft device above a node that is in use, the policy
 * softdev-insert (QMP) and the Xen disks share: the node's users must
 * not notice the soft device, so it inherits read-only and discard, and
 * only a content-preserving soft device goes above data that others
 * already wrote.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-visit-block-core.h"
#include "qapi/qobject-output-visitor.h"
#include "qobject/qdict.h"
#include "softdev/softdev.h"

QDict *softdev_options_qdict(BlockdevOptions *options)
{
    QObject *obj = NULL;
    Visitor *v = qobject_output_visitor_new(&obj);

    visit_type_BlockdevOptions(v, NULL, &options, &error_abort);
    visit_complete(v, &obj);
    visit_free(v);
    return qobject_to(QDict, obj);
}

bool softdev_layer_check(BlockdevOptions *options, bool need_preserving,
                         Error **errp)
{
    const char *drvname = BlockdevDriver_str(options->driver);
    SoftdevDriver *sd = softdev_find_driver(drvname);

    GLOBAL_STATE_CODE();

    if (!sd) {
        error_setg(errp, "driver '%s' is not a soft device", drvname);
        return false;
    }
    if (!options->node_name) {
        error_setg(errp, "'node-name' must be specified");
        return false;
    }
    if (bdrv_find_node(options->node_name)) {
        error_setg(errp, "node name '%s' is already in use",
                   options->node_name);
        return false;
    }
    if (need_preserving && sd->content_preserving_opt) {
        g_autoptr(QDict) qdict = softdev_options_qdict(options);

        need_preserving = !qdict_get_try_bool(qdict,
                                              sd->content_preserving_opt,
                                              sd->content_preserving);
    } else if (need_preserving) {
        need_preserving = !sd->content_preserving;
    }
    if (!need_preserving) {
        return true;
    }
    if (sd->content_preserving_opt) {
        /* The user may know better: the device may say so */
        error_setg(errp, "soft device '%s' may change the data it stores, "
                   "so it cannot be inserted above a node that holds data "
                   "unless its '%s' option is true (the device stores "
                   "what it is given, as it is); else create it with "
                   "blockdev-add", drvname, sd->content_preserving_opt);
    } else {
        error_setg(errp, "soft device '%s' changes the data it stores, so it "
                   "cannot be inserted above a node that holds data; create "
                   "it with blockdev-add instead", drvname);
    }
    return false;
}

void softdev_layer_inherit(BlockdevOptions *options, BlockDriverState *below,
                           bool read_only)
{
    if (!options->has_read_only && (read_only || bdrv_is_read_only(below))) {
        options->has_read_only = true;
        options->read_only = true;
    }
    if (!options->has_discard && (below->open_flags & BDRV_O_UNMAP)) {
        options->has_discard = true;
        options->discard = BLOCKDEV_DISCARD_OPTIONS_UNMAP;
    }
}
