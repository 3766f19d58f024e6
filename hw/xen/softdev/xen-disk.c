/*
 * softdev-xen-disk: soft devices above the disks of Xen guests.
 *
 * Under Xen, libxl makes QEMU serve a guest's "qdisk" disks at run time:
 * xen-block sees the backend appear in xenstore, opens a node for the
 * image (named "<vdev>-<format>", e.g. "xvda-raw") and realises a
 * xen-disk device on it, so none of them can be named on the command
 * line.  A softdev-xen-disk object, given to QEMU through the domain
 * config's device_model_args, says which soft devices go above which
 * disk; xen-block calls softdev_xen_block_attach() between opening the
 * node and giving it to the device, so the guest's frontend only ever
 * sees the disk through them.  Every qdisk disk is also remembered, so
 * that query-softdevs shows the Xen disk (domid, vdev, backend path)
 * that a soft device serves, including ones inserted live later.
 *
 *   -object '{"qom-type": "softdev-xen-disk", "id": "sd0",
 *             "vdev": "xvda",
 *             "chain": [ { "driver": "softdev-trace" } ] }'
 *
 * The soft devices are not owned by the monitor: the device holds the
 * top one, which holds the rest, so they go away with the device when
 * the disk is detached and xen-block can delete its own node.
 * softdev-remove takes one out while the guest runs.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "block/block_int.h"
#include "block/qdict.h"
#include "hw/xen/xen-backend.h"
#include "hw/xen/xen-bus.h"
#include "hw/xen/xen.h"
#include "qapi/clone-visitor.h"
#include "qapi/error.h"
#include "qapi/qapi-builtin-visit.h"
#include "qapi/qapi-types-softdev.h"
#include "qapi/qapi-visit-block-core.h"
#include "qapi/qapi-visit-softdev.h"
#include "qapi/qobject-input-visitor.h"
#include "qapi/qobject-output-visitor.h"
#include "qapi/visitor.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/module.h"
#include "qemu/queue.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "qobject/qstring.h"
#include "qom/object.h"
#include "qom/object_interfaces.h"
#include "softdev/softdev.h"
#include "softdev/xen.h"

#define TYPE_SOFTDEV_XEN_DISK "softdev-xen-disk"
OBJECT_DECLARE_SIMPLE_TYPE(SoftdevXenDiskObject, SOFTDEV_XEN_DISK)

/* Longest chain of nodes looked through for the Xen disk of a node */
#define SOFTDEV_XEN_MAX_DEPTH 64

struct SoftdevXenDiskObject {
    Object parent_obj;

    char *vdev;                 /* "*": every disk */
    bool has_domid;
    uint32_t domid;
    QList *chain;               /* of QDict, bottom first */
    bool complete;
    QTAILQ_ENTRY(SoftdevXenDiskObject) next;
};

/* A qdisk disk xen-block opened */
typedef struct SoftdevXenSeen {
    SoftdevXenDisk *disk;
    QTAILQ_ENTRY(SoftdevXenSeen) next;
} SoftdevXenSeen;

static QTAILQ_HEAD(, SoftdevXenDiskObject) softdev_xen_objects =
    QTAILQ_HEAD_INITIALIZER(softdev_xen_objects);
static QTAILQ_HEAD(, SoftdevXenSeen) softdev_xen_seen =
    QTAILQ_HEAD_INITIALIZER(softdev_xen_seen);
/* Top soft devices we hold until their device has them */
static GSList *softdev_xen_held;

/* -- configuration -------------------------------------------------------- */

/*
 * @layer (the arguments of blockdev-add without "file") as BlockdevOptions
 * above the node @file, or NULL with @errp set.  Values may be typed
 * (JSON) or strings (key=value syntax).
 */
static BlockdevOptions *softdev_xen_layer_options(QDict *layer,
                                                  const char *file,
                                                  Error **errp)
{
    g_autoptr(QDict) flat = qdict_clone_shallow(layer);
    BlockdevOptions *options = NULL;
    const char *driver;
    Visitor *v;

    driver = qdict_get_try_str(flat, "driver");
    if (!driver) {
        error_setg(errp, "'driver' must be given");
        return NULL;
    }
    if (!softdev_find_driver(driver)) {
        error_setg(errp, "driver '%s' is not a soft device", driver);
        return NULL;
    }
    if (qdict_haskey(flat, "file")) {
        error_setg(errp, "'file' is filled in: the node below");
        return NULL;
    }
    qdict_put_str(flat, "file", file);
    qdict_flatten(flat);
    v = qobject_input_visitor_new_flat_confused(flat, errp);
    if (!v) {
        return NULL;
    }
    visit_type_BlockdevOptions(v, NULL, &options, errp);
    visit_free(v);
    return options;
}

static void softdev_xen_disk_complete(UserCreatable *uc, Error **errp)
{
    SoftdevXenDiskObject *sx = SOFTDEV_XEN_DISK(uc);
    const QListEntry *e;
    int i = 0;

    if (!sx->vdev || !*sx->vdev) {
        error_setg(errp, "'vdev' must be given (e.g. \"xvda\", or \"*\")");
        return;
    }
    if (!sx->chain || qlist_empty(sx->chain)) {
        error_setg(errp, "'chain' must list at least one soft device");
        return;
    }
    /* Check every layer now: a typo shows at start, not at xl create. */
    QLIST_FOREACH_ENTRY(sx->chain, e) {
        QDict *layer = qobject_to(QDict, qlist_entry_obj(e));
        BlockdevOptions *options;

        if (!layer) {
            error_setg(errp, "chain[%d] must be an object with the "
                       "arguments of blockdev-add", i);
            return;
        }
        options = softdev_xen_layer_options(layer, "-", errp);
        if (!options) {
            error_prepend(errp, "chain[%d]: ", i);
            return;
        }
        qapi_free_BlockdevOptions(options);
        i++;
    }
    sx->complete = true;
    QTAILQ_INSERT_TAIL(&softdev_xen_objects, sx, next);
}

static bool softdev_xen_disk_check_unset(SoftdevXenDiskObject *sx,
                                         const char *name, Error **errp)
{
    if (sx->complete) {
        error_setg(errp, "'%s' cannot change once the object exists", name);
        return false;
    }
    return true;
}

static char *softdev_xen_disk_get_vdev(Object *obj, Error **errp)
{
    return g_strdup(SOFTDEV_XEN_DISK(obj)->vdev);
}

static void softdev_xen_disk_set_vdev(Object *obj, const char *value,
                                      Error **errp)
{
    SoftdevXenDiskObject *sx = SOFTDEV_XEN_DISK(obj);

    if (softdev_xen_disk_check_unset(sx, "vdev", errp)) {
        g_free(sx->vdev);
        sx->vdev = g_strdup(value);
    }
}

static void softdev_xen_disk_get_domid(Object *obj, Visitor *v,
                                       const char *name, void *opaque,
                                       Error **errp)
{
    SoftdevXenDiskObject *sx = SOFTDEV_XEN_DISK(obj);
    int64_t domid = sx->has_domid ? sx->domid : -1;

    visit_type_int64(v, name, &domid, errp);
}

static void softdev_xen_disk_set_domid(Object *obj, Visitor *v,
                                       const char *name, void *opaque,
                                       Error **errp)
{
    SoftdevXenDiskObject *sx = SOFTDEV_XEN_DISK(obj);
    uint32_t domid;

    if (!softdev_xen_disk_check_unset(sx, name, errp) ||
        !visit_type_uint32(v, name, &domid, errp)) {
        return;
    }
    if (domid >= DOMID_FIRST_RESERVED) {
        error_setg(errp, "'domid' %" PRIu32 " is not a guest's domain id",
                   domid);
        return;
    }
    sx->has_domid = true;
    sx->domid = domid;
}

static void softdev_xen_disk_set_chain(Object *obj, Visitor *v,
                                       const char *name, void *opaque,
                                       Error **errp)
{
    SoftdevXenDiskObject *sx = SOFTDEV_XEN_DISK(obj);
    anyList *list = NULL, *it;

    if (!softdev_xen_disk_check_unset(sx, name, errp) ||
        !visit_type_anyList(v, name, &list, errp)) {
        return;
    }
    qobject_unref(sx->chain);
    sx->chain = qlist_new();
    for (it = list; it; it = it->next) {
        qlist_append_obj(sx->chain, qobject_ref(it->value));
    }
    qapi_free_anyList(list);
}

static void softdev_xen_disk_finalize(Object *obj)
{
    SoftdevXenDiskObject *sx = SOFTDEV_XEN_DISK(obj);

    if (sx->complete) {
        QTAILQ_REMOVE(&softdev_xen_objects, sx, next);
    }
    g_free(sx->vdev);
    qobject_unref(sx->chain);
}

/* -- attaching ------------------------------------------------------------ */

static bool softdev_xen_disk_matches(SoftdevXenDiskObject *sx,
                                     uint32_t domid, const char *vdev)
{
    return (!sx->has_domid || sx->domid == domid) &&
           (!strcmp(sx->vdev, "*") || !strcmp(sx->vdev, vdev));
}

/* Remember the disk @disk->node (replacing an older disk of that node) */
static void softdev_xen_remember(SoftdevXenDisk *disk)
{
    SoftdevXenSeen *seen, *next;

    QTAILQ_FOREACH_SAFE(seen, &softdev_xen_seen, next, next) {
        if (!strcmp(seen->disk->node, disk->node) ||
            (seen->disk->domid == disk->domid &&
             !strcmp(seen->disk->vdev, disk->vdev))) {
            QTAILQ_REMOVE(&softdev_xen_seen, seen, next);
            qapi_free_SoftdevXenDisk(seen->disk);
            g_free(seen);
        }
    }
    seen = g_new0(SoftdevXenSeen, 1);
    seen->disk = disk;
    QTAILQ_INSERT_TAIL(&softdev_xen_seen, seen, next);
}

/*
 * Open soft device @layer above @below, read-only if @read_only.  Returns
 * a new reference, or NULL with @errp set.
 */
static BlockDriverState *softdev_xen_open_layer(QDict *layer,
                                                BlockDriverState *below,
                                                bool read_only,
                                                const char *default_name,
                                                Error **errp)
{
    g_autoptr(QDict) copy = qdict_clone_shallow(layer);
    BlockdevOptions *options;
    QDict *qdict;

    if (!qdict_haskey(copy, "node-name")) {
        qdict_put_str(copy, "node-name", default_name);
    }
    options = softdev_xen_layer_options(copy, bdrv_get_node_name(below),
                                        errp);
    if (!options) {
        return NULL;
    }
    /* Any soft device may sit above a Xen disk configured with it */
    if (!softdev_layer_check(options, false, errp)) {
        qapi_free_BlockdevOptions(options);
        return NULL;
    }
    /* The frontend must see the disk's own features (see softdev-insert) */
    softdev_layer_inherit(options, below, read_only);

    /* As blockdev-add does, but the monitor does not own the node. */
    qdict = softdev_options_qdict(options);
    qapi_free_BlockdevOptions(options);
    qdict_flatten(qdict);
    return bds_tree_init(qdict, errp);
}

char *softdev_xen_block_attach(XenBackendInstance *backend, QDict *opts,
                               const char *vdev, const char *node_name,
                               Error **errp)
{
    XenBus *xenbus = xen_backend_get_bus(backend);
    /* QEMU serves the backends of its own guest (-xen-domid) only */
    uint32_t domid = xen_domid;
    /*
     * xen-block makes only the protocol node of a read-only disk
     * read-only ("mode" r); the device finds out from its own node.
     */
    const char *mode = qdict_get_try_str(opts, "mode");
    bool read_only = mode && *mode != 'w';
    SoftdevXenDisk *disk;
    SoftdevXenDiskObject *sx;
    BlockDriverState *top;
    int n = 0;

    GLOBAL_STATE_CODE();

    top = bdrv_find_node(node_name);
    if (!top) {
        error_setg(errp, "node '%s' not found", node_name);
        return NULL;
    }

    disk = g_new0(SoftdevXenDisk, 1);
    disk->domid = domid;
    disk->vdev = g_strdup(vdev);
    disk->backend = g_strdup_printf("/local/domain/%u/backend/qdisk/%"
                                    PRIu32 "/%s",
                                    xenbus->backend_id, domid,
                                    xen_backend_get_name(backend));
    disk->node = g_strdup(node_name);
    softdev_xen_remember(disk);

    bdrv_ref(top);
    QTAILQ_FOREACH(sx, &softdev_xen_objects, next) {
        const QListEntry *e;

        if (!softdev_xen_disk_matches(sx, domid, vdev)) {
            continue;
        }
        QLIST_FOREACH_ENTRY(sx->chain, e) {
            QDict *layer = qobject_to(QDict, qlist_entry_obj(e));
            g_autofree char *name = g_strdup_printf("%s-softdev%d", vdev, n);
            BlockDriverState *bs;

            bs = softdev_xen_open_layer(layer, top, read_only, name, errp);
            if (!bs) {
                error_prepend(errp, "soft device %d of disk %s of domain %"
                              PRIu32 " (object '%s'): ", n, vdev, domid,
                              object_get_canonical_path_component(
                                  OBJECT(sx)));
                bdrv_unref(top);
                return NULL;
            }
            /* The new node holds the one below now. */
            bdrv_unref(top);
            top = bs;
            n++;
        }
    }
    if (!n) {
        bdrv_unref(top);
        return g_strdup(node_name);
    }
    info_report("softdev: disk %s of domain %" PRIu32 ": %d soft device%s "
                "above '%s', top '%s'", vdev, domid, n, n == 1 ? "" : "s",
                node_name, bdrv_get_node_name(top));
    softdev_xen_held = g_slist_prepend(softdev_xen_held, top);
    return g_strdup(bdrv_get_node_name(top));
}

void softdev_xen_block_release(const char *top)
{
    GSList *l;

    GLOBAL_STATE_CODE();

    for (l = softdev_xen_held; l; l = l->next) {
        BlockDriverState *bs = l->data;

        if (!strcmp(bdrv_get_node_name(bs), top)) {
            softdev_xen_held = g_slist_delete_link(softdev_xen_held, l);
            bdrv_unref(bs);
            return;
        }
    }
}

/* -- query-softdevs -------------------------------------------------------- */

/* The Xen disk whose node lies below soft device @bs (graph read-locked) */
static void softdev_xen_query(BlockDriverState *bs, SoftdevInfo *info)
{
    BlockDriverState *it = bs;
    int depth;

    for (depth = 0; it && depth < SOFTDEV_XEN_MAX_DEPTH; depth++) {
        SoftdevXenSeen *seen;

        QTAILQ_FOREACH(seen, &softdev_xen_seen, next) {
            if (!strcmp(it->node_name, seen->disk->node)) {
                info->xen = QAPI_CLONE(SoftdevXenDisk, seen->disk);
                return;
            }
        }
        it = it->file ? it->file->bs : NULL;
    }
}

static void softdev_xen_disk_class_init(ObjectClass *oc, void *data)
{
    UserCreatableClass *ucc = USER_CREATABLE_CLASS(oc);

    ucc->complete = softdev_xen_disk_complete;
    object_class_property_add_str(oc, "vdev", softdev_xen_disk_get_vdev,
                                  softdev_xen_disk_set_vdev);
    object_class_property_set_description(oc, "vdev",
        "the guest's name of the disk (xvda, ...), or * for every disk");
    object_class_property_add(oc, "domid", "uint32",
                              softdev_xen_disk_get_domid,
                              softdev_xen_disk_set_domid, NULL, NULL);
    object_class_property_set_description(oc, "domid",
        "only disks of this guest (default: every guest)");
    object_class_property_add(oc, "chain", "list",
                              NULL, softdev_xen_disk_set_chain, NULL, NULL);
    object_class_property_set_description(oc, "chain",
        "soft devices, bottom first: blockdev-add arguments without file");
}

static const TypeInfo softdev_xen_disk_info = {
    .name = TYPE_SOFTDEV_XEN_DISK,
    .parent = TYPE_OBJECT,
    .instance_size = sizeof(SoftdevXenDiskObject),
    .instance_finalize = softdev_xen_disk_finalize,
    .class_init = softdev_xen_disk_class_init,
    .interfaces = (InterfaceInfo[]) {
        { TYPE_USER_CREATABLE },
        { }
    },
};

static void softdev_xen_register_types(void)
{
    type_register_static(&softdev_xen_disk_info);
    softdev_set_query_hook(softdev_xen_query);
}

type_init(softdev_xen_register_types);
