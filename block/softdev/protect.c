/*
 * softdev-protect: a write blocker for a range of the disk (a boot
 * sector, a partition table, a partition).  Writes that touch the range
 * fail with EPERM (action=fail) or go through (action=alert); either way
 * each one raises a SOFTDEV_ALERT, at most one a second per node (the
 * next one says how many it stood for).  Reads and everything outside the
 * range pass unchanged, so softdev-insert can put it above a running
 * guest's disk.
 *
 * It is also the smallest soft device written with only WRITE in mind,
 * and relies on the core's safe defaults: a write-zeroes reaches co_pre as
 * a WRITE of zeroes (SOFTDEV_ZEROES_AS_WRITE), and discards are dropped
 * (SOFTDEV_DISCARD_DROP), so neither can change the range behind its back.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/module.h"
#include "qemu/option.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "softdev/softdev.h"

/* QAPI schema of the options (scripts/softdev-drivers.py adds it)
 *
 * ##
 * # @SoftdevProtectAction:
 * #
 * # What softdev-protect does with a write to its range.
 * #
 * # @fail: the write fails with EPERM and nothing is written
 * #
 * # @alert: the write goes through
 * #
 * # Since: 10.0 (softdev)
 * ##
 * { 'enum': 'SoftdevProtectAction',
 *   'data': [ 'fail', 'alert' ] }
 *
 * ##
 * # @SoftdevProtectOptions:
 * #
 * # Options of the softdev-protect soft device, a write blocker for a
 * # range of its child.  Every write that touches the range raises a
 * # SOFTDEV_ALERT (at most one a second; the next one counts the
 * # writes it stands for).  Write-zeroes count as writes; discards are
 * # dropped everywhere (they only free space).
 * #
 * # @offset: first byte of the range (default: 0)
 * #
 * # @length: bytes in the range (default: up to the end of the disk)
 * #
 * # @action: what a write to the range does (default: fail)
 * #
 * # Since: 10.0 (softdev)
 * ##
 * { 'struct': 'SoftdevProtectOptions',
 *   'data': { '*offset': 'uint64',
 *             '*length': 'uint64',
 *             '*action': 'SoftdevProtectAction' } }
 */

typedef struct SoftdevProtect {
    uint64_t start, end;        /* the range; end is exclusive */
    SoftdevProtectAction action;

    QemuMutex lock;             /* the alert rate limit */
    int64_t last_alert_ns;      /* QEMU_CLOCK_REALTIME, 0: never */
    uint64_t unreported;        /* writes to the range since that alert */
} SoftdevProtect;

static QemuOptsList softdev_protect_opts = {
    .name = "softdev-protect",
    .head = QTAILQ_HEAD_INITIALIZER(softdev_protect_opts.head),
    .desc = {
        {
            .name = "offset",
            .type = QEMU_OPT_SIZE,
            .help = "first byte of the protected range (default: 0)",
        },
        {
            .name = "length",
            .type = QEMU_OPT_SIZE,
            .help = "bytes in the range (default: to the end of the disk)",
        },
        {
            .name = "action",
            .type = QEMU_OPT_STRING,
            .help = "fail (default) or alert",
        },
        { /* end of list */ }
    },
};

static int softdev_protect_open(BlockDriverState *bs, QemuOpts *opts,
                                QDict *options, Error **errp)
{
    SoftdevProtect *p = softdev_opaque(bs);
    const char *action = qemu_opt_get(opts, "action");
    uint64_t length = qemu_opt_get_size(opts, "length", 0);
    int ret;

    p->start = qemu_opt_get_size(opts, "offset", 0);
    if (!qemu_opt_get(opts, "length")) {
        p->end = UINT64_MAX;
    } else if (!length || length > UINT64_MAX - p->start) {
        error_setg(errp, "softdev-protect: length must be 1 to %" PRIu64
                   " bytes with offset %" PRIu64 ", not %" PRIu64,
                   UINT64_MAX - p->start, p->start, length);
        return -EINVAL;
    } else {
        p->end = p->start + length;
    }
    ret = !action ? SOFTDEV_PROTECT_ACTION_FAIL :
          qapi_enum_parse(&SoftdevProtectAction_lookup, action, -1, NULL);
    if (ret < 0) {
        error_setg(errp, "softdev-protect: action must be 'fail' or "
                   "'alert', not '%s'", action);
        return -EINVAL;
    }
    p->action = ret;
    qemu_mutex_init(&p->lock);
    return 0;
}

static void softdev_protect_close(BlockDriverState *bs)
{
    SoftdevProtect *p = softdev_opaque(bs);

    qemu_mutex_destroy(&p->lock);
}

/* Alert for a write to the range, unless one went out less than 1 s ago */
static void softdev_protect_alert(BlockDriverState *bs, SoftdevRequest *req)
{
    SoftdevProtect *p = softdev_opaque(bs);
    int64_t now = get_clock();
    g_autofree char *suffix = NULL;
    uint64_t more;

    qemu_mutex_lock(&p->lock);
    if (p->last_alert_ns && now - p->last_alert_ns < NANOSECONDS_PER_SECOND) {
        p->unreported++;
        qemu_mutex_unlock(&p->lock);
        return;
    }
    more = p->unreported;
    p->unreported = 0;
    p->last_alert_ns = now;
    qemu_mutex_unlock(&p->lock);

    suffix = more ? g_strdup_printf(" (and %" PRIu64 " more since the "
                                    "last alert)", more) : NULL;
    softdev_alert(bs, p->action == SOFTDEV_PROTECT_ACTION_FAIL ?
                  SOFTDEV_SEVERITY_WARNING : SOFTDEV_SEVERITY_INFO,
                  req->offset, req->bytes, NULL,
                  "write to the protected range %s%s",
                  p->action == SOFTDEV_PROTECT_ACTION_FAIL ? "refused" :
                  "let through", suffix ?: "");
}

static int coroutine_fn GRAPH_RDLOCK
softdev_protect_co_pre(BlockDriverState *bs, SoftdevRequest *req)
{
    SoftdevProtect *p = softdev_opaque(bs);

    /* Write-zeroes arrive as WRITEs, discards never (the defaults) */
    if (req->op != SOFTDEV_OP_WRITE ||
        req->offset >= p->end || req->offset + req->bytes <= p->start) {
        return SOFTDEV_FORWARD;
    }
    softdev_protect_alert(bs, req);
    return p->action == SOFTDEV_PROTECT_ACTION_FAIL ? -EPERM :
                                                      SOFTDEV_FORWARD;
}

static SoftdevDriver softdev_protect = {
    .name               = "softdev-protect",
    .content_preserving = true,
    .state_size         = sizeof(SoftdevProtect),
    .opts               = &softdev_protect_opts,
    .open               = softdev_protect_open,
    .close              = softdev_protect_close,
    .co_pre             = softdev_protect_co_pre,
};

static void softdev_protect_init(void)
{
    softdev_register(&softdev_protect);
}

block_init(softdev_protect_init);
