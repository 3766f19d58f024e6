/*
 * softdev-tap: hands every request to a soft-device process over the tap
 * protocol (docs/specs/softdev-tap.rst), which completes it, forwards it
 * to the node below (possibly moved or with other data), or does its own
 * I/O on the node below first.  If the process goes away or a request
 * waits longer than the timeout, requests fail or pass through, as
 * configured.  Limits: message transport only (no shared memory yet), no
 * reconnection, the device must have the size of the node below.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "block/qdict.h"
#include "io/channel-socket.h"
#include "qapi/error.h"
#include "qapi/qapi-visit-sockets.h"
#include "qapi/qobject-input-visitor.h"
#include "qemu/coroutine.h"
#include "qemu/error-report.h"
#include "qemu/iov.h"
#include "qemu/memalign.h"
#include "qemu/module.h"
#include "qemu/option.h"
#include "qemu/timer.h"
#include "qobject/qdict.h"
#include "softdev/softdev.h"
#include "softdev/tap-protocol.h"
#include "trace.h"

#define SOFTDEV_TAP_MAX_DATA    (1 * MiB)
#define SOFTDEV_TAP_FIXED_MAX   SOFTDEV_TAP_HELLO_SIZE
#define SOFTDEV_TAP_HELLO_SECS  10

/* One request outstanding at the process */
typedef struct SoftdevTapReq {
    uint64_t handle;
    BlockDriverState *bs;
    SoftdevRequest *req;
    Coroutine *co;
    bool waiting;               /* yielded, waiting for its reply */
    bool done;
    bool lost;                  /* the connection went away */
    SoftdevTapReply reply;
    void *bounce;               /* FORWARD data of a write */
    QTAILQ_ENTRY(SoftdevTapReq) next;
} SoftdevTapReq;

/* Data replacing a forwarded write, from co_pre until co_post */
typedef struct SoftdevTapBounce {
    QEMUIOVector qiov;
    void *buf;
} SoftdevTapBounce;

typedef struct SoftdevTap {
    QIOChannelSocket *sioc;
    QIOChannel *ioc;
    SoftdevTapOnDisconnect on_disconnect;
    uint32_t timeout_ms;        /* 0: none */
    uint32_t max_inflight;
    bool connected;
    uint64_t disconnects;
    uint64_t features;
    uint32_t max_data;
    uint64_t lower_size;
    uint64_t next_handle;

    CoMutex send_lock;
    bool receiving;             /* a request coroutine reads the socket */
    unsigned inflight;
    CoQueue slots;              /* waiting for inflight < max_inflight */
    QTAILQ_HEAD(, SoftdevTapReq) reqs;
} SoftdevTap;

static QemuOptsList softdev_tap_opts = {
    .name = "softdev-tap",
    .head = QTAILQ_HEAD_INITIALIZER(softdev_tap_opts.head),
    .desc = {
        {
            .name = "on-disconnect",
            .type = QEMU_OPT_STRING,
            .help = "fail or passthrough",
        },
        {
            .name = "timeout",
            .type = QEMU_OPT_NUMBER,
            .help = "seconds a request may wait for the process (0: none)",
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

static const uint64_t softdev_tap_op_feature[SOFTDEV_OP__MAX] = {
    [SOFTDEV_OP_FLUSH] = SOFTDEV_TAP_F_FLUSH,
    [SOFTDEV_OP_DISCARD] = SOFTDEV_TAP_F_DISCARD,
    [SOFTDEV_OP_WRITE_ZEROES] = SOFTDEV_TAP_F_ZEROES,
};

/* Our SoftdevOp and the wire's ops have the same numbers. */
QEMU_BUILD_BUG_ON((int)SOFTDEV_OP_READ != SOFTDEV_TAP_OP_READ ||
                  (int)SOFTDEV_OP_WRITE != SOFTDEV_TAP_OP_WRITE ||
                  (int)SOFTDEV_OP_WRITE_ZEROES != SOFTDEV_TAP_OP_WRITE_ZEROES ||
                  (int)SOFTDEV_OP_DISCARD != SOFTDEV_TAP_OP_DISCARD ||
                  (int)SOFTDEV_OP_FLUSH != SOFTDEV_TAP_OP_FLUSH);

/*
 * The connection is gone (or must go): every outstanding request learns
 * it, and on-disconnect decides what becomes of it.
 */
static void softdev_tap_disconnect(BlockDriverState *bs, const char *why)
{
    SoftdevTap *s = softdev_opaque(bs);
    SoftdevTapReq *tr, *next;

    if (!s->connected) {
        return;
    }
    s->connected = false;
    s->disconnects++;
    qio_channel_shutdown(s->ioc, QIO_CHANNEL_SHUTDOWN_BOTH, NULL);
    trace_softdev_tap_disconnect(bs, why);
    softdev_alert(bs, SOFTDEV_SEVERITY_WARNING, -1, -1, NULL,
                  "soft-device process disconnected: %s; requests %s", why,
                  s->on_disconnect == SOFTDEV_TAP_ON_DISCONNECT_FAIL ?
                  "fail" : "pass through");
    QTAILQ_FOREACH_SAFE(tr, &s->reqs, next, next) {
        QTAILQ_REMOVE(&s->reqs, tr, next);
        tr->done = tr->lost = true;
        if (tr->waiting) {
            tr->waiting = false;
            aio_co_wake(tr->co);
        }
    }
}

static SoftdevTapReq *softdev_tap_find(SoftdevTap *s, uint64_t handle)
{
    SoftdevTapReq *tr;

    QTAILQ_FOREACH(tr, &s->reqs, next) {
        if (tr->handle == handle) {
            return tr;
        }
    }
    return NULL;
}

/* Send header + fixed part in @msg, then @data (may be NULL) */
static int coroutine_fn softdev_tap_co_send(SoftdevTap *s, uint8_t *msg,
                                            size_t len, QEMUIOVector *data,
                                            size_t data_offset,
                                            size_t data_len)
{
    QEMUIOVector qiov;
    int ret;

    qemu_iovec_init(&qiov, 2 + (data ? data->niov : 0));
    qemu_iovec_add(&qiov, msg, len);
    if (data) {
        qemu_iovec_concat(&qiov, data, data_offset, data_len);
    }
    qemu_co_mutex_lock(&s->send_lock);
    ret = s->connected ?
          qio_channel_writev_all(s->ioc, qiov.iov, qiov.niov, NULL) : -1;
    qemu_co_mutex_unlock(&s->send_lock);
    qemu_iovec_destroy(&qiov);
    return ret;
}

typedef struct SoftdevTapLower {
    BlockDriverState *bs;
    uint64_t handle;
    SoftdevTapRequest req;
    void *buf;
} SoftdevTapLower;

/* Serve one LOWER_REQUEST on the node below and answer it. */
static void coroutine_fn softdev_tap_co_lower(void *opaque)
{
    SoftdevTapLower *l = opaque;
    BlockDriverState *bs = l->bs;
    SoftdevTap *s = softdev_opaque(bs);
    SoftdevTapReply rep = { 0 };
    BdrvRequestFlags flags = 0;
    uint8_t msg[SOFTDEV_TAP_HDR_SIZE + SOFTDEV_TAP_LOWER_REPLY_SIZE];
    QEMUIOVector data;
    size_t len;
    int ret;

    if (l->req.req_flags & SOFTDEV_TAP_REQ_FUA) {
        flags |= BDRV_REQ_FUA;
    }
    if (l->req.req_flags & SOFTDEV_TAP_REQ_MAY_UNMAP) {
        flags |= BDRV_REQ_MAY_UNMAP;
    }
    bdrv_graph_co_rdlock();
    switch (l->req.op) {
    case SOFTDEV_TAP_OP_READ:
        ret = bdrv_co_pread(bs->file, l->req.offset, l->req.bytes, l->buf, 0);
        break;
    case SOFTDEV_TAP_OP_WRITE:
        ret = bdrv_co_pwrite(bs->file, l->req.offset, l->req.bytes, l->buf,
                             flags);
        break;
    case SOFTDEV_TAP_OP_WRITE_ZEROES:
        ret = bdrv_co_pwrite_zeroes(bs->file, l->req.offset, l->req.bytes,
                                    flags);
        break;
    case SOFTDEV_TAP_OP_DISCARD:
        ret = bdrv_co_pdiscard(bs->file, l->req.offset, l->req.bytes);
        break;
    default:
        ret = bdrv_co_flush(bs->file->bs);
        break;
    }
    bdrv_graph_co_rdunlock();

    rep.result = ret < 0 ? ret : 0;
    if (l->req.op == SOFTDEV_TAP_OP_READ && ret >= 0) {
        rep.bytes = l->req.bytes;
    }
    len = softdev_tap_encode_reply(msg, SOFTDEV_TAP_LOWER_REPLY, l->handle,
                                   &rep);
    qemu_iovec_init_buf(&data, l->buf, rep.bytes);
    if (softdev_tap_co_send(s, msg, len, rep.bytes ? &data : NULL, 0,
                            rep.bytes) < 0) {
        softdev_tap_disconnect(bs, "cannot send a lower reply");
    }
    qemu_vfree(l->buf);
    g_free(l);
    bdrv_dec_in_flight(bs);
}

/*
 * Read one message from the process and act on it.  Only one request
 * coroutine at a time does this (s->receiving); the others wait to be
 * woken with their reply or to take over.
 */
static void coroutine_fn GRAPH_RDLOCK
softdev_tap_co_receive_one(BlockDriverState *bs)
{
    SoftdevTap *s = softdev_opaque(bs);
    uint8_t buf[SOFTDEV_TAP_HDR_SIZE + SOFTDEV_TAP_FIXED_MAX];
    uint8_t *fixed = buf + SOFTDEV_TAP_HDR_SIZE;
    SoftdevTapHeader hdr;
    SoftdevTapRequest wire;
    const char *err = NULL;
    SoftdevTapReq *tr;

    if (qio_channel_read_all(s->ioc, (char *)buf, SOFTDEV_TAP_HDR_SIZE,
                             NULL) < 0) {
        goto lost;
    }
    if (softdev_tap_decode_header(buf, s->max_data + SOFTDEV_TAP_FIXED_MAX,
                                  &hdr, &err) < 0) {
        goto protocol_error;
    }
    if (hdr.type == SOFTDEV_TAP_REPLY) {
        QEMUIOVector slice;
        int ret;

        if (qio_channel_read_all(s->ioc, (char *)fixed,
                                 SOFTDEV_TAP_REPLY_SIZE, NULL) < 0) {
            goto lost;
        }
        tr = softdev_tap_find(s, hdr.handle);
        if (!tr) {
            err = "reply to a request that is not outstanding";
            goto protocol_error;
        }
        wire = (SoftdevTapRequest) {
            .op = tr->req->op, .offset = tr->req->offset,
            .bytes = tr->req->bytes,
        };
        if (softdev_tap_decode_reply(&hdr, fixed, &wire, true, &tr->reply,
                                     &err) < 0) {
            goto protocol_error;
        }
        if (tr->reply.action == SOFTDEV_TAP_FORWARD &&
            (tr->reply.offset > s->lower_size ||
             tr->req->bytes > s->lower_size - tr->reply.offset)) {
            err = "forward beyond the end of the node below";
            goto protocol_error;
        }
        if (tr->reply.bytes) {
            if (tr->reply.action == SOFTDEV_TAP_COMPLETE) {
                /* Read data goes straight into the guest's buffer. */
                qemu_iovec_init(&slice, tr->req->qiov->niov);
                qemu_iovec_concat(&slice, tr->req->qiov,
                                  tr->req->qiov_offset, tr->reply.bytes);
            } else {
                tr->bounce = qemu_blockalign(bs, tr->reply.bytes);
                qemu_iovec_init(&slice, 1);
                qemu_iovec_add(&slice, tr->bounce, tr->reply.bytes);
            }
            ret = qio_channel_readv_all(s->ioc, slice.iov, slice.niov, NULL);
            qemu_iovec_destroy(&slice);
            if (ret < 0) {
                goto lost;
            }
        }
        QTAILQ_REMOVE(&s->reqs, tr, next);
        tr->done = true;
        if (tr->waiting) {
            tr->waiting = false;
            aio_co_wake(tr->co);
        }
    } else if (hdr.type == SOFTDEV_TAP_LOWER_REQUEST) {
        SoftdevTapLower *l;

        if (!(s->features & SOFTDEV_TAP_F_LOWER)) {
            err = "lower request without SOFTDEV_TAP_F_LOWER";
            goto protocol_error;
        }
        if (qio_channel_read_all(s->ioc, (char *)fixed,
                                 SOFTDEV_TAP_REQUEST_SIZE, NULL) < 0) {
            goto lost;
        }
        l = g_new0(SoftdevTapLower, 1);
        if (softdev_tap_decode_request(&hdr, fixed, s->lower_size,
                                       s->max_data, &l->req, &err) < 0) {
            g_free(l);
            goto protocol_error;
        }
        l->bs = bs;
        l->handle = hdr.handle;
        l->buf = qemu_blockalign(bs, MAX(l->req.bytes, 1));
        if (l->req.op == SOFTDEV_TAP_OP_WRITE &&
            qio_channel_read_all(s->ioc, l->buf, l->req.bytes,
                                 NULL) < 0) {
            qemu_vfree(l->buf);
            g_free(l);
            goto lost;
        }
        /* Run it beside us: we must go on reading for our own reply. */
        bdrv_inc_in_flight(bs);
        aio_co_enter(qemu_get_current_aio_context(),
                     qemu_coroutine_create(softdev_tap_co_lower, l));
    } else {
        err = "unexpected message type";
        goto protocol_error;
    }
    return;

lost:
    softdev_tap_disconnect(bs, "connection lost");
    return;

protocol_error:
    error_report("softdev-tap '%s': protocol error: %s", bs->node_name, err);
    softdev_tap_disconnect(bs, err);
}

/*
 * A request waited too long: the process counts as hung.  Runs in the
 * AioContext of the request's coroutine, as the request's own timer.
 */
static void softdev_tap_timeout(void *opaque)
{
    SoftdevTapReq *tr = opaque;

    if (!tr->done) {
        softdev_tap_disconnect(tr->bs, "request timed out");
    }
}

static int coroutine_fn GRAPH_RDLOCK
softdev_tap_co_pre(BlockDriverState *bs, SoftdevRequest *req)
{
    SoftdevTap *s = softdev_opaque(bs);
    uint8_t msg[SOFTDEV_TAP_HDR_SIZE + SOFTDEV_TAP_REQUEST_SIZE];
    SoftdevTapReq tr = {
        .bs = bs, .req = req, .co = qemu_coroutine_self(),
    };
    QEMUTimer *timer = NULL;
    SoftdevTapRequest wire = { .op = req->op };
    uint64_t gate = softdev_tap_op_feature[req->op];
    SoftdevTapReq *other;
    size_t len;

    if (gate && !(s->features & gate)) {
        return SOFTDEV_CONTINUE;        /* the process did not ask for it */
    }
    while (s->connected && s->inflight >= s->max_inflight) {
        qemu_co_queue_wait(&s->slots, NULL);
    }
    if (!s->connected) {
        goto lost;
    }

    if (req->op != SOFTDEV_OP_FLUSH) {
        wire.offset = req->offset;
        wire.bytes = req->bytes;
    }
    if ((req->flags & BDRV_REQ_FUA) && (s->features & SOFTDEV_TAP_F_FUA)) {
        wire.req_flags |= SOFTDEV_TAP_REQ_FUA;
    }
    if (req->flags & BDRV_REQ_MAY_UNMAP) {
        wire.req_flags |= SOFTDEV_TAP_REQ_MAY_UNMAP;
    }
    tr.handle = ++s->next_handle;
    QTAILQ_INSERT_TAIL(&s->reqs, &tr, next);
    s->inflight++;
    if (s->timeout_ms) {
        timer = aio_timer_new(qemu_get_current_aio_context(),
                              QEMU_CLOCK_REALTIME, SCALE_MS,
                              softdev_tap_timeout, &tr);
        timer_mod(timer, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) +
                  s->timeout_ms);
    }
    len = softdev_tap_encode_request(msg, SOFTDEV_TAP_REQUEST, tr.handle,
                                     &wire);
    if (softdev_tap_co_send(s, msg, len,
                            req->op == SOFTDEV_OP_WRITE ? req->qiov : NULL,
                            req->qiov_offset, req->bytes) < 0) {
        softdev_tap_disconnect(bs, "cannot send a request");
    }

    while (!tr.done) {
        if (s->receiving) {
            tr.waiting = true;
            qemu_coroutine_yield();
            continue;
        }
        s->receiving = true;
        softdev_tap_co_receive_one(bs);
        s->receiving = false;
        /* Hand the socket to another waiting request, if any. */
        QTAILQ_FOREACH(other, &s->reqs, next) {
            if (other->waiting) {
                other->waiting = false;
                aio_co_wake(other->co);
                break;
            }
        }
    }
    s->inflight--;
    qemu_co_queue_next(&s->slots);
    if (timer) {
        timer_free(timer);
    }

    if (tr.lost) {
        goto lost;
    }
    if (tr.reply.action == SOFTDEV_TAP_COMPLETE) {
        return tr.reply.result < 0 ? tr.reply.result : SOFTDEV_DONE;
    }
    req->offset = tr.reply.offset;
    if (tr.bounce) {
        SoftdevTapBounce *b = g_new(SoftdevTapBounce, 1);

        b->buf = tr.bounce;
        qemu_iovec_init_buf(&b->qiov, b->buf, req->bytes);
        req->qiov = &b->qiov;
        req->qiov_offset = 0;
        req->opaque = b;
    }
    return SOFTDEV_CONTINUE;

lost:
    qemu_vfree(tr.bounce);      /* the connection broke while reading it */
    return s->on_disconnect == SOFTDEV_TAP_ON_DISCONNECT_PASSTHROUGH ?
           SOFTDEV_CONTINUE : -EIO;
}

static int coroutine_fn GRAPH_RDLOCK
softdev_tap_co_post(BlockDriverState *bs, SoftdevRequest *req, int ret,
                    int64_t latency_ns)
{
    SoftdevTapBounce *b = req->opaque;

    if (b) {
        qemu_vfree(b->buf);
        g_free(b);
        req->opaque = NULL;
    }
    return ret;
}

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

/* Blocking handshake at open; the socket has a receive timeout. */
static int softdev_tap_handshake(BlockDriverState *bs, Error **errp)
{
    SoftdevTap *s = softdev_opaque(bs);
    uint8_t buf[SOFTDEV_TAP_HDR_SIZE + SOFTDEV_TAP_HELLO_SIZE];
    SoftdevTapHello hello = {
        .version = SOFTDEV_TAP_VERSION,
        .device_class = SOFTDEV_TAP_CLASS_BLOCK,
        .features = SOFTDEV_TAP_F_FLUSH | SOFTDEV_TAP_F_DISCARD |
                    SOFTDEV_TAP_F_ZEROES | SOFTDEV_TAP_F_FUA |
                    SOFTDEV_TAP_F_LOWER,
        .size = s->lower_size,
        .max_data = SOFTDEV_TAP_MAX_DATA,
    };
    SoftdevTapHello reply;
    SoftdevTapHeader hdr;
    const char *err;
    size_t len = softdev_tap_encode_hello(buf, false, &hello);

    if (qio_channel_write_all(s->ioc, (char *)buf, len, errp) < 0 ||
        qio_channel_read_all(s->ioc, (char *)buf, SOFTDEV_TAP_HDR_SIZE,
                             errp) < 0) {
        error_prepend(errp, "softdev-tap handshake: ");
        return -EIO;
    }
    if (softdev_tap_decode_header(buf, SOFTDEV_TAP_HANDSHAKE_MAX, &hdr,
                                  &err) < 0 ||
        (hdr.length == SOFTDEV_TAP_HELLO_REPLY_SIZE &&
         qio_channel_read_all(s->ioc, (char *)buf + SOFTDEV_TAP_HDR_SIZE,
                              hdr.length, errp) < 0) ||
        softdev_tap_decode_hello(&hdr, buf + SOFTDEV_TAP_HDR_SIZE, true,
                                 hello.features, hello.max_data, &reply,
                                 &err) < 0) {
        if (!*errp) {
            error_setg(errp, "softdev-tap handshake: %s", err);
        }
        return -EPROTO;
    }
    if (reply.size && reply.size != s->lower_size) {
        error_setg(errp, "softdev-tap: the soft device's size (%" PRIu64
                   ") differs from the node below (%" PRIu64 "), which is "
                   "not supported yet", reply.size, s->lower_size);
        return -ENOTSUP;
    }
    s->features = reply.features;
    s->max_data = reply.max_data;
    return 0;
}

static int softdev_tap_open(BlockDriverState *bs, QemuOpts *opts,
                            QDict *options, Error **errp)
{
    SoftdevTap *s = softdev_opaque(bs);
    g_autoptr(SocketAddress) saddr = NULL;
    const char *policy = qemu_opt_get(opts, "on-disconnect");
    struct timeval tv = { .tv_sec = SOFTDEV_TAP_HELLO_SECS };
    uint64_t max_inflight, timeout;
    int64_t size;
    int ret;

    ret = !policy ? SOFTDEV_TAP_ON_DISCONNECT_FAIL :
          qapi_enum_parse(&SoftdevTapOnDisconnect_lookup, policy, -1, NULL);
    if (ret < 0) {
        error_setg(errp, "softdev-tap: on-disconnect must be 'fail' or "
                   "'passthrough', not '%s'", policy);
        return -EINVAL;
    }
    s->on_disconnect = ret;
    max_inflight = qemu_opt_get_number(opts, "max-inflight", 64);
    if (max_inflight < 1 || max_inflight > 1024) {
        error_setg(errp, "softdev-tap: max-inflight must be 1-1024");
        return -EINVAL;
    }
    s->max_inflight = max_inflight;
    timeout = qemu_opt_get_number(opts, "timeout", 30);
    if (timeout > 24 * 3600) {
        error_setg(errp, "softdev-tap: timeout must be at most 86400 s");
        return -EINVAL;
    }
    s->timeout_ms = timeout * 1000;
    saddr = softdev_tap_server(options, errp);
    if (!saddr) {
        return -EINVAL;
    }

    bdrv_graph_rdlock_main_loop();
    size = bdrv_getlength(bs->file->bs);
    bdrv_graph_rdunlock_main_loop();
    if (size < 0) {
        error_setg_errno(errp, -size, "softdev-tap: cannot get the size of "
                         "the node below");
        return size;
    }
    s->lower_size = size;

    s->sioc = qio_channel_socket_new();
    if (qio_channel_socket_connect_sync(s->sioc, saddr, errp) < 0) {
        error_prepend(errp, "softdev-tap: cannot reach the soft-device "
                      "process: ");
        object_unref(OBJECT(s->sioc));
        return -EIO;
    }
    s->ioc = QIO_CHANNEL(s->sioc);
    setsockopt(s->sioc->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ret = softdev_tap_handshake(bs, errp);
    if (ret < 0) {
        object_unref(OBJECT(s->sioc));
        return ret;
    }
    tv.tv_sec = 0;
    setsockopt(s->sioc->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    qio_channel_set_blocking(s->ioc, false, NULL);
    qio_channel_set_follow_coroutine_ctx(s->ioc, true);

    qemu_co_mutex_init(&s->send_lock);
    qemu_co_queue_init(&s->slots);
    QTAILQ_INIT(&s->reqs);
    s->connected = true;
    trace_softdev_tap_open(bs, s->features, s->max_data);
    return 0;
}

static void softdev_tap_close(BlockDriverState *bs)
{
    SoftdevTap *s = softdev_opaque(bs);

    if (s->connected) {
        qio_channel_shutdown(s->ioc, QIO_CHANNEL_SHUTDOWN_BOTH, NULL);
    }
    object_unref(OBJECT(s->sioc));
}

static void softdev_tap_refresh_limits(BlockDriverState *bs, Error **errp)
{
    SoftdevTap *s = softdev_opaque(bs);

    bs->bl.max_transfer = MIN_NON_ZERO(bs->bl.max_transfer, s->max_data);
    bs->bl.max_pwrite_zeroes = MIN_NON_ZERO(bs->bl.max_pwrite_zeroes,
                                            1u << 30);
    bs->bl.max_pdiscard = MIN_NON_ZERO(bs->bl.max_pdiscard, 1u << 30);
}

static void softdev_tap_query(BlockDriverState *bs, SoftdevInfo *info)
{
    SoftdevTap *s = softdev_opaque(bs);
    SoftdevTapInfo *ti = &info->u.softdev_tap;

    ti->connected = s->connected;
    ti->disconnects = s->disconnects;
    ti->features = s->features;
}

static SoftdevDriver softdev_tap = {
    .name               = "softdev-tap",
    .content_preserving = false,
    .content_preserving_opt = "content-preserving",
    .state_size         = sizeof(SoftdevTap),
    .opts               = &softdev_tap_opts,
    .open               = softdev_tap_open,
    .close              = softdev_tap_close,
    .refresh_limits     = softdev_tap_refresh_limits,
    .co_pre             = softdev_tap_co_pre,
    .co_post            = softdev_tap_co_post,
    .query              = softdev_tap_query,
};

static void softdev_tap_init(void)
{
    softdev_register(&softdev_tap);
}

block_init(softdev_tap_init);
