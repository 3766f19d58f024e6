/*
 * softdev QMP commands: softdev-insert puts a content-preserving soft
 * device above a node in use, softdev-remove takes one out again, and
 * query-softdevs lists soft-device nodes with their users and statistics,
 * softdev-compact reclaims the space of dead data in an image.
 * Graph changes happen in drained sections under the graph write lock.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "block/block_int.h"
#include "block/export.h"
#include "hw/qdev-core.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/module.h"
#include "qapi/qapi-commands-block-core.h"
#include "qapi/qapi-commands-block-export.h"
#include "qapi/qapi-commands-softdev.h"
#include "qapi/qapi-visit-block-core.h"
#include "qobject/qdict.h"
#include "qapi/qobject-output-visitor.h"
#include "qom/object.h"
#include "system/block-backend.h"
#include "softdev/softdev.h"
#include "trace/trace-block_softdev.h"

/* Delete a node softdev-insert created; nothing uses it yet. */
static void softdev_insert_undo(const char *node_name)
{
    Error *local_err = NULL;

    qmp_blockdev_del(node_name, &local_err);
    if (local_err) {
        warn_report_err(local_err);
    }
}

void qmp_softdev_insert(BlockdevOptions *options, Error **errp)
{
    ERRP_GUARD();
    const char *drvname = BlockdevDriver_str(options->driver);
    g_autoptr(QDict) qdict = NULL;
    const char *file;
    BlockDriverState *target, *bs;
    int ret;

    GLOBAL_STATE_CODE();

    if (!softdev_layer_check(options, true, errp)) {
        return;
    }
    qdict = softdev_options_qdict(options);
    file = qdict_get_try_str(qdict, "file");
    if (!file) {
        error_setg(errp, "'file' must be the name of an existing node");
        return;
    }
    target = bdrv_find_node(file);
    if (!target) {
        error_setg(errp, "node '%s' not found", file);
        return;
    }
    softdev_layer_inherit(options, target, false);

    qmp_blockdev_add(options, errp);
    if (*errp) {
        return;
    }
    bs = bdrv_find_node(options->node_name);
    assert(bs);
    assert(softdev_is_content_preserving(bs));

    bdrv_ref(target);
    bdrv_drained_begin(target);
    bdrv_drained_begin(bs);
    bdrv_graph_wrlock();
    ret = bdrv_replace_node(target, bs, errp);
    bdrv_graph_wrunlock();
    bdrv_drained_end(bs);
    bdrv_drained_end(target);
    bdrv_unref(target);

    if (ret < 0) {
        error_prepend(errp, "cannot insert '%s' above '%s': ",
                      options->node_name, file);
        softdev_insert_undo(options->node_name);
        return;
    }
    trace_softdev_insert(bs, drvname, options->node_name, file);
}

static bool softdev_is_monitor_owned(BlockDriverState *bs)
{
    BlockDriverState *it;

    for (it = bdrv_next_monitor_owned(NULL); it;
         it = bdrv_next_monitor_owned(it)) {
        if (it == bs) {
            return true;
        }
    }
    return false;
}

void qmp_softdev_remove(const char *node_name, Error **errp)
{
    BlockDriverState *bs = bdrv_find_node(node_name);
    BlockDriverState *child;
    SoftdevDriver *sd;
    bool monitor_owned;
    int ret;

    GLOBAL_STATE_CODE();

    if (!bs) {
        error_setg(errp, "node '%s' not found", node_name);
        return;
    }
    sd = softdev_driver(bs);
    if (!sd) {
        error_setg(errp, "node '%s' is not a soft device (driver '%s')",
                   node_name, bdrv_get_format_name(bs) ?: "none");
        return;
    }
    if (!softdev_is_content_preserving(bs)) {
        error_setg(errp, "soft device '%s' changes the data it stores, so "
                   "its users cannot be switched to its child", node_name);
        return;
    }
    if (sd->busy && sd->busy(bs, errp)) {
        error_prepend(errp, "cannot remove '%s': ", node_name);
        return;
    }
    bdrv_graph_rdlock_main_loop();
    child = bs->file ? bs->file->bs : NULL;
    bdrv_graph_rdunlock_main_loop();
    if (!child) {
        error_setg(errp, "soft device '%s' has no child to take its place",
                   node_name);
        return;
    }
    monitor_owned = softdev_is_monitor_owned(bs);

    /*
     * Like bdrv_drop_filter(), which needs a filter: a content-preserving
     * softdev-tap node is not one to the block layer.
     */
    bdrv_ref(bs);
    bdrv_ref(child);
    bdrv_drained_begin(child);
    /* What the node holds in a write cache goes to the child first */
    bdrv_graph_rdlock_main_loop();
    ret = bdrv_flush(bs);
    bdrv_graph_rdunlock_main_loop();
    if (ret < 0) {
        error_setg_errno(errp, -ret, "cannot remove '%s': its flush failed",
                         node_name);
        bdrv_drained_end(child);
        bdrv_unref(child);
        bdrv_unref(bs);
        return;
    }
    bdrv_graph_wrlock();
    ret = bdrv_replace_node(bs, child, errp);
    bdrv_graph_wrunlock();
    bdrv_drained_end(child);
    bdrv_unref(child);
    if (ret < 0) {
        error_prepend(errp, "cannot remove '%s': ", node_name);
        bdrv_unref(bs);
        return;
    }
    if (!QLIST_EMPTY(&bs->parents)) {
        /* A user that may not be switched (a block job) keeps it alive. */
        error_setg(errp, "soft device '%s' is still used by %s; its other "
                   "users now use '%s'", node_name,
                   QLIST_FIRST(&bs->parents)->name, child->node_name);
        bdrv_unref(bs);
        return;
    }
    trace_softdev_remove(bs, node_name, child->node_name);
    bdrv_unref(bs);
    if (monitor_owned) {
        qmp_blockdev_del(node_name, errp);
    }
}

/* The id of the export that uses @blk, or NULL */
static char *softdev_export_id(BlockBackend *blk)
{
    g_autoptr(BlockExportInfoList) exports = qmp_query_block_exports(NULL);
    BlockExportInfoList *e;

    for (e = exports; e; e = e->next) {
        BlockExport *exp = blk_exp_find(e->value->id);

        if (exp && exp->blk == blk) {
            return g_strdup(e->value->id);
        }
    }
    return NULL;
}

/*
 * The id users gave the device: virtio-blk-pci attaches its backend
 * (which has no id) to the disk, so look up the QOM tree for the proxy.
 */
static char *softdev_device_name(DeviceState *dev)
{
    Object *obj;

    for (obj = OBJECT(dev); obj; obj = obj->parent) {
        DeviceState *d = (DeviceState *)object_dynamic_cast(obj, TYPE_DEVICE);

        if (d && d->id) {
            return g_strdup(d->id);
        }
    }
    return object_get_canonical_path(OBJECT(dev));
}

static SoftdevParentList *softdev_query_parents(BlockDriverState *bs)
{
    SoftdevParentList *head = NULL, **tail = &head;
    BlockBackend *blk;
    BdrvChild *c;

    GRAPH_RDLOCK_GUARD_MAINLOOP();

    for (blk = blk_all_next(NULL); blk; blk = blk_all_next(blk)) {
        SoftdevParent *p;
        DeviceState *dev;
        char *export_id;

        if (blk_bs(blk) != bs) {
            continue;
        }
        p = g_new0(SoftdevParent, 1);
        dev = blk_get_attached_dev(blk);
        export_id = dev ? NULL : softdev_export_id(blk);
        if (dev) {
            p->kind = SOFTDEV_PARENT_KIND_DEVICE;
            p->name = softdev_device_name(dev);
            p->qom_path = object_get_canonical_path(OBJECT(dev));
        } else if (export_id) {
            p->kind = SOFTDEV_PARENT_KIND_EXPORT;
            p->name = export_id;
        } else {
            p->kind = SOFTDEV_PARENT_KIND_BACKEND;
            p->name = g_strdup(blk_name(blk));
        }
        QAPI_LIST_APPEND(tail, p);
    }

    QLIST_FOREACH(c, &bs->parents, next_parent) {
        if (c->klass->parent_is_bds) {
            BlockDriverState *parent = c->opaque;
            SoftdevParent *p = g_new0(SoftdevParent, 1);

            p->kind = SOFTDEV_PARENT_KIND_NODE;
            p->name = g_strdup(parent->node_name);
            p->child = g_strdup(c->name);
            QAPI_LIST_APPEND(tail, p);
        }
    }
    return head;
}

SoftdevInfoList *qmp_query_softdevs(Error **errp)
{
    SoftdevInfoList *head = NULL, **tail = &head;
    BlockDriverState *bs;

    GLOBAL_STATE_CODE();

    for (bs = bdrv_next_all_states(NULL); bs; bs = bdrv_next_all_states(bs)) {
        SoftdevInfo *info;

        if (!softdev_driver(bs)) {
            continue;
        }
        info = softdev_query_node(bs);
        info->parents = softdev_query_parents(bs);
        QAPI_LIST_APPEND(tail, info);
    }
    return head;
}

SoftdevCompactResult * coroutine_fn qmp_softdev_compact(const char *node_name,
                                                      Error **errp)
{
    g_autoptr(SoftdevCompactResult) res = g_new0(SoftdevCompactResult, 1);
    BlockDriverState *bs = bdrv_find_node(node_name);
    SoftdevDriver *sd = softdev_driver(bs);
    AioContext *old_ctx;
    int ret;

    if (!bs) {
        error_setg(errp, "Node '%s' not found", node_name);
        return NULL;
    }
    if (!sd || !sd->co_compact) {
        error_setg(errp, "Node '%s' is not a soft device that compacts "
                   "(softdev-compress, softdev-cas)", node_name);
        return NULL;
    }
    bdrv_ref(bs);
    old_ctx = bdrv_co_enter(bs);
    bdrv_inc_in_flight(bs);
    WITH_GRAPH_RDLOCK_GUARD() {
        ret = sd->co_compact(bs, res, errp);
    }
    bdrv_dec_in_flight(bs);
    bdrv_co_leave(bs, old_ctx);
    bdrv_co_unref(bs);
    return ret < 0 ? NULL : g_steal_pointer(&res);
}

/* This file is linked into the programs that have QMP */
static void softdev_qmp_init(void)
{
    softdev_set_qmp();
}

block_init(softdev_qmp_init);
