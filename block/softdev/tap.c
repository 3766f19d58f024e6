/*
 * softdev-tap: hands every request to a soft-device process over the tap
 * protocol (docs/specs/softdev-tap.rst), which completes it, forwards it
 * to the node below (possibly moved or with other data), or does its own
 * I/O on the node below first.  The process may also be a device of its
 * own, with no node below.  It may say that it does not read write data
 * (no copy into shared memory), that reads it forwards unchanged may
 * start below at once (early reads), and that it forwards every write
 * unchanged or fails it (early writes).
 *
 * Crash containment: a lost connection (EOF, malformed message, a request
 * past its timeout) is torn down and on-disconnect decides what becomes
 * of the requests (queue, fail, passthrough); a connector thread reaches
 * the process again.
 *
 * This file: options, open and close, reopen, AioContexts, query.  See
 * tap-int.h for the other files and the two state machines.  Locking:
 * s->lock protects the connection and the requests, which may come from
 * several AioContexts; coroutines are woken after it is dropped.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/timerfd.h>
#include "block/qdict.h"
#include "qapi/error.h"
#include "qapi/qapi-visit-sockets.h"
#include "qapi/qobject-input-visitor.h"
#include "qemu/main-loop.h"
#include "qemu/memalign.h"
#include "qemu/module.h"
#include "qemu/option.h"
#include "qobject/qdict.h"
#include "tap-int.h"
#include "trace/trace-block_softdev.h"

static QemuOptsList softdev_tap_opts = {
    .name = "softdev-tap",
    .head = QTAILQ_HEAD_INITIALIZER(softdev_tap_opts.head),
    .desc = {
        {
            .name = "on-disconnect",
            .type = QEMU_OPT_STRING,
            .help = "queue, fail or passthrough",
        },
        {
            .name = "timeout",
            .type = QEMU_OPT_NUMBER,
            .help = "seconds a request may wait (0: none)",
        },
        {
            .name = "reconnect-delay",
            .type = QEMU_OPT_NUMBER,
            .help = "longest pause between reconnection attempts, "
                    "seconds (0: never reconnect)",
        },
        {
            .name = "peer-uid",
            .type = QEMU_OPT_NUMBER,
            .help = "only talk to a process of this user (unix sockets)",
        },
        {
            .name = "max-inflight",
            .type = QEMU_OPT_NUMBER,
            .help = "most requests outstanding at the process (1-1024)",
        },
        {
            .name = "content-preserving",
            .type = QEMU_OPT_BOOL,
            .help = "the process keeps the content of the node below",
        },
        { /* end of list */ }
    },
};

/* What blockdev-reopen may change */
static const char *const softdev_tap_mutable_opts[] = {
    "on-disconnect", "timeout", "reconnect-delay", NULL
};

static SocketAddress *softdev_tap_server(QDict *options, Error **errp)
{
    g_autoptr(QDict) addr = NULL;
    SocketAddress *saddr = NULL;
    Visitor *v;

    qdict_extract_subqdict(options, &addr, "server.");
    if (!qdict_size(addr)) {
        error_setg(errp, "softdev-tap needs 'server', the address of the "
                   "soft-device process");
        return NULL;
    }
    v = qobject_input_visitor_new_flat_confused(addr, errp);
    if (v) {
        visit_type_SocketAddress(v, NULL, &saddr, errp);
        visit_free(v);
    }
    return saddr;
}

/* The options that reopen may change, at open and at reopen */
static int softdev_tap_parse_config(QemuOpts *opts, SoftdevTapConfig *cfg,
                                    Error **errp)
{
    const char *policy = qemu_opt_get(opts, "on-disconnect");
    uint64_t v;
    int ret;

    ret = !policy ? SOFTDEV_TAP_ON_DISCONNECT_FAIL :
          qapi_enum_parse(&SoftdevTapOnDisconnect_lookup, policy, -1, NULL);
    if (ret < 0) {
        error_setg(errp, "softdev-tap: on-disconnect must be 'queue', "
                   "'fail' or 'passthrough', not '%s'", policy);
        return -EINVAL;
    }
    cfg->on_disconnect = ret;
    v = qemu_opt_get_number(opts, "timeout", 30);
    if (v > 24 * 3600) {
        /* (a negative number reads as a huge one) */
        error_setg(errp, "softdev-tap: timeout must be 0 (none) to 86400 "
                   "seconds, not '%s'", qemu_opt_get(opts, "timeout"));
        return -EINVAL;
    }
    cfg->timeout_ms = v * 1000;
    v = qemu_opt_get_number(opts, "reconnect-delay", 1);
    if (v > 3600) {
        error_setg(errp, "softdev-tap: reconnect-delay must be 0 (never) "
                   "to 3600 seconds, not '%s'",
                   qemu_opt_get(opts, "reconnect-delay"));
        return -EINVAL;
    }
    cfg->reconnect_max_ms = MAX(v * 1000, v ? SOFTDEV_TAP_FIRST_RETRY_MS : 0);
    if (cfg->on_disconnect == SOFTDEV_TAP_ON_DISCONNECT_QUEUE && !v) {
        error_setg(errp, "softdev-tap: on-disconnect=queue needs "
                   "reconnect-delay > 0");
        return -EINVAL;
    }
    return 0;
}

static int softdev_tap_parse_opts(SoftdevTap *s, QemuOpts *opts,
                                  Error **errp)
{
    uint64_t v;
    int ret;

    ret = softdev_tap_parse_config(opts, &s->cfg, errp);
    if (ret < 0) {
        return ret;
    }
    v = qemu_opt_get_number(opts, "max-inflight", 64);
    if (v < 1 || v > SOFTDEV_TAP_MAX_INFLIGHT) {
        error_setg(errp, "softdev-tap: max-inflight must be 1-1024");
        return -EINVAL;
    }
    s->want_inflight = v;
    s->peer_uid = -1;
    if (qemu_opt_get(opts, "peer-uid")) {
        v = qemu_opt_get_number(opts, "peer-uid", 0);
        if (v > UINT32_MAX - 1) {
            error_setg(errp, "softdev-tap: peer-uid out of range");
            return -EINVAL;
        }
        s->peer_uid = v;
    }
    return 0;
}

/* Start serving in @ctx.  Locked (or not yet shared). */
static void softdev_tap_attach(SoftdevTap *s, AioContext *ctx)
{
    s->ctx = ctx;
    s->send_bh = aio_bh_new(ctx, softdev_tap_send_bh, s);
    s->kick_bh = aio_bh_new(ctx, softdev_tap_kick_bh, s);
    if (s->notify_deferred) {
        qemu_bh_schedule(s->kick_bh);
    }
    s->attach_bh = aio_bh_new(ctx, softdev_tap_attach_bh, s);
    softdev_tap_watchdog_start(s);
    if (s->conn.fd >= 0) {
        softdev_tap_set_handlers(s);
        if (s->sbuf.off < s->sbuf.len) {
            s->send_scheduled = true;
            qemu_bh_schedule(s->send_bh);
        }
    }
    if (s->pending.fd >= 0) {
        qemu_bh_schedule(s->attach_bh);
    }
}

/* Stop serving in s->ctx.  Locked. */
static void softdev_tap_detach(SoftdevTap *s)
{
    if (s->conn.fd >= 0) {
        softdev_tap_clear_handlers(s);
    }
    qemu_bh_delete(s->send_bh);
    s->send_bh = NULL;
    s->send_scheduled = false;
    qemu_bh_delete(s->kick_bh);
    s->kick_bh = NULL;
    qemu_bh_delete(s->attach_bh);
    s->attach_bh = NULL;
    softdev_tap_watchdog_stop(s);
    s->ctx = NULL;
}

static int softdev_tap_open(BlockDriverState *bs, QemuOpts *opts,
                            QDict *options, Error **errp)
{
    SoftdevTap *s = softdev_opaque(bs);
    SoftdevTapConn c;
    const char *bad;
    int ret;

    s->bs = bs;
    s->connecting_fd = -1;
    s->conn.fd = -1;
    s->pending.fd = -1;
    s->watchdog_fd = -1;
    qemu_mutex_init(&s->lock);
    qemu_cond_init(&s->cond);
    QTAILQ_INIT(&s->reqs);

    ret = softdev_tap_parse_opts(s, opts, errp);
    if (ret < 0) {
        goto fail;
    }
    s->watchdog_fd = timerfd_create(CLOCK_MONOTONIC,
                                    TFD_NONBLOCK | TFD_CLOEXEC);
    if (s->watchdog_fd < 0) {
        ret = -errno;
        error_setg_errno(errp, errno, "softdev-tap: cannot create a timerfd");
        goto fail;
    }
    s->saddr = softdev_tap_server(options, errp);
    if (!s->saddr) {
        ret = -EINVAL;
        goto fail;
    }
    if (s->peer_uid >= 0 && s->saddr->type != SOCKET_ADDRESS_TYPE_UNIX) {
        error_setg(errp, "softdev-tap: peer-uid needs a unix socket");
        ret = -EINVAL;
        goto fail;
    }

    bdrv_graph_rdlock_main_loop();
    s->has_lower = bs->file != NULL;
    if (s->has_lower) {
        int64_t size = bdrv_getlength(bs->file->bs);

        if (size < 0) {
            bdrv_graph_rdunlock_main_loop();
            error_setg_errno(errp, -size, "softdev-tap: cannot get the size "
                             "of the node below");
            ret = size;
            goto fail;
        }
        s->lower_size = size;
    }
    bdrv_graph_rdunlock_main_loop();

    ret = softdev_tap_connect(s, &c, errp);
    if (ret < 0) {
        goto fail;
    }
    if (softdev_is_content_preserving(bs) && c.size != s->lower_size) {
        error_setg(errp, "softdev-tap: the soft device's size (%" PRIu64
                   ") differs from the node below (%" PRIu64 "), so it "
                   "cannot be content-preserving", c.size, s->lower_size);
        softdev_tap_conn_free(&c);
        ret = -EINVAL;
        goto fail;
    }
    s->size = c.size;
    s->first_max_data = c.max_data;
    bad = softdev_tap_conn_check(s, &c);
    assert(!bad);
    qemu_mutex_lock(&s->lock);
    softdev_tap_install(s, &c);
    softdev_tap_attach(s, bdrv_get_aio_context(bs));
    qemu_mutex_unlock(&s->lock);
    qemu_thread_create(&s->thread, "softdev-tap", softdev_tap_connector, s,
                       QEMU_THREAD_JOINABLE);
    trace_softdev_tap_open(bs, s->conn.features, s->conn.max_data);
    return 0;

fail:
    if (s->watchdog_fd >= 0) {
        close(s->watchdog_fd);
    }
    qapi_free_SocketAddress(s->saddr);
    qemu_cond_destroy(&s->cond);
    qemu_mutex_destroy(&s->lock);
    return ret;
}

static void softdev_tap_close(BlockDriverState *bs)
{
    SoftdevTap *s = softdev_opaque(bs);

    qemu_mutex_lock(&s->lock);
    s->closing = true;
    if (s->connecting_fd >= 0) {
        shutdown(s->connecting_fd, SHUT_RDWR);
    }
    qemu_cond_broadcast(&s->cond);
    qemu_mutex_unlock(&s->lock);
    qemu_thread_join(&s->thread);

    qemu_mutex_lock(&s->lock);
    assert(QTAILQ_EMPTY(&s->reqs) && !s->lower_inflight);
    softdev_tap_detach(s);
    if (s->conn_state != SOFTDEV_TAP_CONN_DISCONNECTED) {
        softdev_tap_conn_set(s, SOFTDEV_TAP_CONN_DISCONNECTED);
    }
    softdev_tap_conn_free(&s->conn);
    softdev_tap_conn_free(&s->pending);
    qemu_mutex_unlock(&s->lock);
    close(s->watchdog_fd);
    g_free(s->sbuf.data);
    g_free(s->rbuf.data);
    g_free(s->free_slots);
    qapi_free_SocketAddress(s->saddr);
    qemu_cond_destroy(&s->cond);
    qemu_mutex_destroy(&s->lock);
}

static void softdev_tap_detach_aio_context(BlockDriverState *bs)
{
    SoftdevTap *s = softdev_opaque(bs);

    qemu_mutex_lock(&s->lock);
    softdev_tap_detach(s);
    qemu_mutex_unlock(&s->lock);
}

static void softdev_tap_attach_aio_context(BlockDriverState *bs,
                                           AioContext *ctx)
{
    SoftdevTap *s = softdev_opaque(bs);

    qemu_mutex_lock(&s->lock);
    softdev_tap_attach(s, ctx);
    qemu_mutex_unlock(&s->lock);
}

static int softdev_tap_reopen_prepare(BlockDriverState *bs, QemuOpts *opts,
                                      void **state, Error **errp)
{
    g_autofree SoftdevTapConfig *cfg = g_new0(SoftdevTapConfig, 1);
    int ret = softdev_tap_parse_config(opts, cfg, errp);

    if (ret < 0) {
        return ret;
    }
    *state = g_steal_pointer(&cfg);
    return 0;
}

static void softdev_tap_reopen_commit(BlockDriverState *bs, void *state)
{
    SoftdevTap *s = softdev_opaque(bs);
    g_autofree SoftdevTapConfig *cfg = state;

    qemu_mutex_lock(&s->lock);
    s->cfg = *cfg;
    /* A node that had given up on its process may want it again */
    if (s->cfg.reconnect_max_ms &&
        s->conn_state == SOFTDEV_TAP_CONN_DISCONNECTED) {
        softdev_tap_conn_set(s, SOFTDEV_TAP_CONN_CONNECTING);
    }
    qemu_cond_broadcast(&s->cond);
    qemu_mutex_unlock(&s->lock);
}

static void softdev_tap_reopen_abort(BlockDriverState *bs, void *state)
{
    g_free(state);
}

static int64_t softdev_tap_getlength(BlockDriverState *bs)
{
    SoftdevTap *s = softdev_opaque(bs);

    return s->size;
}

static void softdev_tap_refresh_limits(BlockDriverState *bs, Error **errp)
{
    SoftdevTap *s = softdev_opaque(bs);

    bs->bl.max_transfer = MIN_NON_ZERO(bs->bl.max_transfer,
                                       s->first_max_data);
    bs->bl.max_pwrite_zeroes = MIN_NON_ZERO(bs->bl.max_pwrite_zeroes,
                                            1u << 30);
    bs->bl.max_pdiscard = MIN_NON_ZERO(bs->bl.max_pdiscard, 1u << 30);
}

static void softdev_tap_query(BlockDriverState *bs, SoftdevInfo *info)
{
    SoftdevTap *s = softdev_opaque(bs);
    SoftdevTapInfo *ti = &info->u.softdev_tap;
    int st;

    qemu_mutex_lock(&s->lock);
    ti->connected = s->conn_state == SOFTDEV_TAP_CONN_CONNECTED;
    ti->disconnects = s->disconnects;
    ti->reconnects = s->reconnects;
    ti->replayed = s->replayed;
    ti->timeouts = s->timeouts;
    ti->outstanding = 0;
    for (st = 0; st < SOFTDEV_TAP_REQ__MAX; st++) {
        ti->outstanding += s->count[st];
    }
    ti->features = s->conn.features;
    ti->shm = s->conn.shm != NULL;
    ti->ring = s->conn.ring != NULL;
    ti->max_inflight = s->conn.max_inflight;
    ti->kicks_sent = s->kicks_sent;
    ti->kicks_received = s->kicks_received;
    qemu_mutex_unlock(&s->lock);
}

static SoftdevDriver softdev_tap = {
    .name               = "softdev-tap",
    .content_preserving = false,
    .content_preserving_opt = "content-preserving",
    .lower_optional     = true,
    .state_size         = sizeof(SoftdevTap),
    .opts               = &softdev_tap_opts,
    .open               = softdev_tap_open,
    .close              = softdev_tap_close,
    .refresh_limits     = softdev_tap_refresh_limits,
    .getlength          = softdev_tap_getlength,
    .detach_aio_context = softdev_tap_detach_aio_context,
    .attach_aio_context = softdev_tap_attach_aio_context,
    .co_request         = softdev_tap_co_request,
    /* The process decides (softdev_tap_decide_unwanted()) */
    .zeroes             = SOFTDEV_ZEROES_SEEN,
    .discard            = SOFTDEV_DISCARD_SEEN,
    .mutable_opts       = softdev_tap_mutable_opts,
    .reopen_prepare     = softdev_tap_reopen_prepare,
    .reopen_commit      = softdev_tap_reopen_commit,
    .reopen_abort       = softdev_tap_reopen_abort,
    .query              = softdev_tap_query,
};

static void softdev_tap_init(void)
{
    softdev_register(&softdev_tap);
}

block_init(softdev_tap_init);
