/*
 * softdev on Xen: the hooks xen-block calls when libxl's qdisk backend
 * makes QEMU serve a disk to a Xen guest (hw/xen/softdev/xen-disk.c).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SOFTDEV_XEN_H
#define SOFTDEV_XEN_H

#include "hw/xen/xen-backend.h"

/*
 * A qdisk backend made node @node_name for the disk @vdev of the guest
 * named in @opts (the backend's xenstore keys).  Opens the soft devices
 * that softdev-xen-disk objects configure for the disk above it and
 * returns the name of the node the xen-block device should use (the top
 * soft device, or @node_name if there is none), to be passed to
 * softdev_xen_block_release() once the device was given it.  NULL with
 * @errp set if a soft device cannot be opened.
 */
char *softdev_xen_block_attach(XenBackendInstance *backend, QDict *opts,
                               const char *vdev, const char *node_name,
                               Error **errp);

/* The device holds @top now (or failed to): drop our reference to it. */
void softdev_xen_block_release(const char *top);

#endif
