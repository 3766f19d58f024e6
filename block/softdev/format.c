/*
 * The soft devices that own their child's layout (an image format of
 * their own, such as softdev-compress): what the core adds to their
 * BlockDriver so that the block layer sees a format driver, and qemu-img
 * creates, checks, amends and describes their images.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "block/block_int.h"
#include "qemu/coroutine.h"
#include "qemu/main-loop.h"
#include "qemu/option.h"
#include "qobject/qdict.h"
#include "system/block-backend.h"
#include "softdev/softdev.h"

static SoftdevDriver *softdev_format_of(BlockDriver *drv)
{
    return container_of(drv, SoftdevDriver, bdrv);
}

/*
 * qemu-img create: the protocol creates the file, the soft device writes
 * its image into it.
 */
static int coroutine_fn GRAPH_UNLOCKED
softdev_format_co_create_opts(BlockDriver *drv, const char *filename,
                              QemuOpts *opts, Error **errp)
{
    SoftdevDriver *sd = softdev_format_of(drv);
    g_autoptr(QDict) qdict = NULL;
    QemuOpts *own;
    BlockBackend *blk;
    int ret;

    /* The soft device's options are its own; the rest the protocol's */
    qdict = qemu_opts_to_qdict_filtered(opts, NULL, sd->create_opts, true);
    own = qemu_opts_from_qdict(sd->create_opts, qdict, errp);
    if (!own) {
        return -EINVAL;
    }
    ret = bdrv_co_create_file(filename, opts, errp);
    if (ret < 0) {
        qemu_opts_del(own);
        return ret;
    }
    blk = blk_co_new_open(filename, NULL, NULL,
                          BDRV_O_RDWR | BDRV_O_RESIZE | BDRV_O_PROTOCOL,
                          errp);
    if (!blk) {
        qemu_opts_del(own);
        return -EIO;
    }
    blk_set_allow_write_beyond_eof(blk, true);
    ret = sd->co_create(blk, own, errp);
    blk_co_unref(blk);
    qemu_opts_del(own);
    return ret;
}

typedef struct SoftdevAmendCo {
    BlockDriverState *bs;
    QemuOpts *opts;
    bool force;
    Error **errp;
    int ret;
} SoftdevAmendCo;

static void coroutine_fn softdev_format_amend_entry(void *opaque)
{
    SoftdevAmendCo *a = opaque;
    SoftdevDriver *sd = softdev_format_of(a->bs->drv);

    WITH_GRAPH_RDLOCK_GUARD() {
        a->ret = sd->co_amend(a->bs, a->opts, a->force, a->errp);
    }
    aio_wait_kick();
}

/* qemu-img amend runs outside coroutines; the soft device's hook in one */
static int GRAPH_RDLOCK
softdev_format_amend_options(BlockDriverState *bs, QemuOpts *opts,
                             BlockDriverAmendStatusCB *status_cb,
                             void *cb_opaque, bool force, Error **errp)
{
    SoftdevAmendCo a = {
        .bs = bs, .opts = opts, .force = force, .errp = errp,
        .ret = -EINPROGRESS,
    };

    if (qemu_in_coroutine()) {
        softdev_format_amend_entry(&a);
    } else {
        Coroutine *co = qemu_coroutine_create(softdev_format_amend_entry,
                                              &a);

        aio_co_enter(bdrv_get_aio_context(bs), co);
        BDRV_POLL_WHILE(bs, a.ret == -EINPROGRESS);
    }
    return a.ret;
}

void softdev_format_init(SoftdevDriver *sd, BlockDriver *drv)
{
    drv->is_format = true;
    drv->bdrv_probe = sd->probe;
    drv->create_opts = sd->create_opts;
    if (sd->co_create) {
        assert(sd->create_opts);
        drv->bdrv_co_create_opts = softdev_format_co_create_opts;
    }
    drv->bdrv_co_check = sd->co_check;
    drv->amend_opts = sd->amend_opts;
    if (sd->co_amend) {
        assert(sd->amend_opts);
        drv->bdrv_amend_options = softdev_format_amend_options;
    }
    drv->bdrv_co_get_info = sd->co_get_info;
    drv->bdrv_get_specific_info = sd->get_specific_info;
}
