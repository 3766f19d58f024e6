/*
 * softdev-tap: hands every request to a soft-device process over the tap
 * protocol (docs/specs/softdev-tap.rst), which completes it, forwards it
 * to the node below (possibly moved or with other data), or does its own
 * I/O on the node below first.  The process may also be a device of its
 * own, with no node below.
 *
 * Data path: over a unix socket the data lies in a shared memfd (one
 * slot per request), and requests and replies travel through two rings
 * in it; a peer sends a KICK message only when the other one said it
 * waits for one (the process once per batch of replies), so under load
 * QEMU makes about one system call per batch, and none in an iothread
 * that polls the reply ring (io_poll).  Busy-waiting in the main loop,
 * which cannot poll, was measured and made things worse (it takes the
 * CPU from the process on small machines, and splits batches).
 * Without rings (vsock, TCP, a device that declines them), requests are
 * encoded into a send buffer that a bottom half flushes once per
 * event-loop turn, and replies are parsed from large reads, so one
 * system call carries many messages.  A device may also say that it does
 * not read write data (no copy into the slot), that reads it forwards
 * unchanged may start below at once (early reads), and that it forwards
 * every write unchanged or fails it (early writes: the write starts below
 * at once too).
 *
 * Crash containment: a lost connection (EOF, malformed message, a request
 * past its timeout) is torn down in the node's AioContext and
 * on-disconnect decides what becomes of the requests: queue keeps them
 * and replays them after a reconnection, fail fails them, passthrough
 * sends them to the node below.  A connector thread reaches the process
 * again (blocking connect and handshake stay out of the event loop).
 *
 * Locking: s->lock protects the connection state and the request list;
 * requests may come from several AioContexts.  Coroutines are woken after
 * the lock is dropped.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/mman.h>
#include <sys/timerfd.h>
#include "block/aio.h"
#include "block/qdict.h"
#include "qapi/error.h"
#include "qapi/qapi-visit-sockets.h"
#include "qapi/qobject-input-visitor.h"
#include "qemu/coroutine.h"
#include "qemu/defer-call.h"
#include "qemu/error-report.h"
#include "qemu/iov.h"
#include "qemu/main-loop.h"
#include "qemu/memalign.h"
#include "qemu/memfd.h"
#include "qemu/module.h"
#include "qemu/option.h"
#include "qemu/sockets.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "qobject/qdict.h"
#include "softdev/softdev.h"
#include "libsoftdev/protocol/tap-protocol.h"
#include "trace.h"

#define SOFTDEV_TAP_CLIENT_MAX_DATA (1 * MiB)
#define SOFTDEV_TAP_HELLO_SECS      10
#define SOFTDEV_TAP_READ_CHUNK      (256 * KiB)
#define SOFTDEV_TAP_FIRST_RETRY_MS  10

/* One request of the guest, from co_pre until its outcome is known */
typedef struct SoftdevTap SoftdevTap;

typedef struct SoftdevTapReq {
    SoftdevTap *s;
    uint64_t handle;
    SoftdevRequest *req;
    Coroutine *co;
    int64_t deadline_ms;        /* QEMU_CLOCK_REALTIME; 0: none */
    bool timed_out;
    bool sent;                  /* at the process on this connection */
    bool replay;                /* was sent on an earlier connection */
    bool waiting;               /* the coroutine yielded */
    bool early;                 /* co_pre does the I/O below meanwhile */
    bool reading;               /* that I/O is under way */
    bool answer_late;           /* answered by a process without early I/O */
    bool done;
    int outcome;                /* SOFTDEV_DONE, SOFTDEV_CONTINUE, -errno */
    uint32_t slot;
    uint64_t fwd_offset;
    void *bounce;               /* replacement data of a FORWARDed write */
    QTAILQ_ENTRY(SoftdevTapReq) next;
    struct SoftdevTapReq *wake_next;
} SoftdevTapReq;

/* Data replacing a forwarded write, from co_pre until co_post */
typedef struct SoftdevTapBounce {
    QEMUIOVector qiov;
    void *buf;
} SoftdevTapBounce;

/* A byte buffer with a consumed prefix */
typedef struct SoftdevTapBuf {
    uint8_t *data;
    size_t off, len, cap;
} SoftdevTapBuf;

/* The result of a connection attempt */
typedef struct SoftdevTapConn {
    int fd;
    uint64_t features;
    uint32_t max_data;
    uint32_t max_inflight;
    uint64_t size;
    uint8_t *shm;
    size_t shm_size;
    uint8_t *ring;              /* control block; NULL: no rings */
    uint32_t ring_entries;
} SoftdevTapConn;

typedef struct SoftdevTapAlert SoftdevTapAlert;

struct SoftdevTap {
    BlockDriverState *bs;

    /* Configuration, fixed after open */
    SocketAddress *saddr;
    SoftdevTapOnDisconnect on_disconnect;
    uint32_t timeout_ms;        /* 0: none */
    uint32_t reconnect_max_ms;  /* 0: never reconnect */
    uint32_t want_inflight;
    int64_t peer_uid;           /* -1: any */
    bool has_lower;
    uint64_t lower_size;
    uint64_t size;              /* of the device, fixed by the first hello */
    uint32_t first_max_data;    /* the limits the block layer saw */

    QemuMutex lock;             /* everything below */
    AioContext *ctx;
    QEMUBH *send_bh;
    bool send_scheduled;        /* send_bh will run */
    unsigned waking;            /* nested softdev_tap_unlock() turns */
    bool turn_sent;             /* the turn sent its first message */
    bool kick_check;            /* the turn published requests */
    bool pump_pending;          /* requests wait for room that came */
    uint32_t sent_reading;      /* sent requests with early I/O under way */
    bool cli_idle;              /* we set our idle word in the ring */
    QEMUBH *attach_bh;          /* a reconnection is ready */
    int watchdog_fd;            /* timerfd; -1 until open */
    bool watchdog_on;           /* its handler is in s->ctx */
    bool watchdog_armed;
    SoftdevTapConn conn;        /* conn.fd < 0: not connected */
    bool connected;
    bool handlers_set;
    bool want_write;
    const char *drop_reason;    /* set when we shut the socket down */
    uint64_t generation;        /* of the connection */
    uint32_t *free_slots;
    uint32_t nfree;
    uint32_t sent_count;
    uint64_t next_handle;
    QTAILQ_HEAD(, SoftdevTapReq) reqs;      /* handle order */
    SoftdevTapReq *next_unsent;             /* unsent ones are a suffix */
    uint32_t outstanding;
    uint32_t req_prod, rep_cons;            /* ring indices */
    SoftdevTapReq *wake_list;
    SoftdevTapBuf sbuf, rbuf;
    unsigned lower_inflight;

    /* The connector thread */
    QemuThread thread;
    QemuCond cond;
    bool want_connect;
    bool closing;
    int connecting_fd;

    /* Statistics and alerts */
    uint64_t disconnects, reconnects, replayed, timeouts;
    QEMUBH *alert_bh;           /* in the main loop */
    QSIMPLEQ_HEAD(, SoftdevTapAlert) alerts;
};

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

/* Our SoftdevOp and the wire's ops have the same numbers. */
QEMU_BUILD_BUG_ON((int)SOFTDEV_OP_READ != SOFTDEV_TAP_OP_READ ||
                  (int)SOFTDEV_OP_WRITE != SOFTDEV_TAP_OP_WRITE ||
                  (int)SOFTDEV_OP_WRITE_ZEROES != SOFTDEV_TAP_OP_WRITE_ZEROES ||
                  (int)SOFTDEV_OP_DISCARD != SOFTDEV_TAP_OP_DISCARD ||
                  (int)SOFTDEV_OP_FLUSH != SOFTDEV_TAP_OP_FLUSH);

/* -- buffers ------------------------------------------------------------ */

/* Room for @n more bytes at the end; returns where they go */
static uint8_t *softdev_tap_buf_reserve(SoftdevTapBuf *b, size_t n)
{
    if (b->off && b->off == b->len) {
        b->off = b->len = 0;
    }
    if (b->len + n > b->cap) {
        if (b->off) {
            memmove(b->data, b->data + b->off, b->len - b->off);
            b->len -= b->off;
            b->off = 0;
        }
        if (b->len + n > b->cap) {
            b->cap = MAX(b->len + n, MAX(b->cap * 2, 64 * KiB));
            b->data = g_realloc(b->data, b->cap);
        }
    }
    return b->data + b->len;
}

static void softdev_tap_buf_reset(SoftdevTapBuf *b)
{
    b->off = b->len = 0;
    if (b->cap > 4 * MiB) {
        g_free(b->data);
        b->data = NULL;
        b->cap = 0;
    }
}

/* -- alerts (emitted from the main loop) ------------------------------- */

struct SoftdevTapAlert {
    SoftdevSeverity severity;
    char *msg;
    QSIMPLEQ_ENTRY(SoftdevTapAlert) next;
};

static void softdev_tap_alert_bh(void *opaque)
{
    SoftdevTap *s = opaque;
    QSIMPLEQ_HEAD(, SoftdevTapAlert) list;
    SoftdevTapAlert *a;

    qemu_mutex_lock(&s->lock);
    QSIMPLEQ_INIT(&list);
    QSIMPLEQ_CONCAT(&list, &s->alerts);
    qemu_mutex_unlock(&s->lock);
    while ((a = QSIMPLEQ_FIRST(&list))) {
        QSIMPLEQ_REMOVE_HEAD(&list, next);
        softdev_alert(s->bs, a->severity, -1, -1, NULL, "%s", a->msg);
        g_free(a->msg);
        g_free(a);
    }
}

/* Queue a SOFTDEV_ALERT; callable from any thread.  Locked. */
static void G_GNUC_PRINTF(3, 4)
softdev_tap_alert(SoftdevTap *s, SoftdevSeverity severity,
                  const char *fmt, ...)
{
    SoftdevTapAlert *a = g_new(SoftdevTapAlert, 1);
    va_list ap;

    va_start(ap, fmt);
    a->msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    a->severity = severity;
    QSIMPLEQ_INSERT_TAIL(&s->alerts, a, next);
    qemu_bh_schedule(s->alert_bh);
}

/* -- requests ----------------------------------------------------------- */

/* Decide @tr's outcome and queue its coroutine for waking.  Locked. */
static void softdev_tap_complete(SoftdevTap *s, SoftdevTapReq *tr,
                                 int outcome)
{
    if (s->next_unsent == tr) {
        s->next_unsent = QTAILQ_NEXT(tr, next);
    }
    QTAILQ_REMOVE(&s->reqs, tr, next);
    s->outstanding--;
    if (tr->sent) {
        s->sent_count--;
        s->sent_reading -= tr->reading;
        if (s->conn.shm) {
            s->free_slots[s->nfree++] = tr->slot;
        }
        tr->sent = false;
        /* Room at the process: softdev_tap_unlock() sends the next one */
        if (s->next_unsent) {
            s->pump_pending = true;
        }
    }
    tr->done = true;
    tr->outcome = outcome;
    if (tr->waiting) {
        tr->waiting = false;
        tr->wake_next = s->wake_list;
        s->wake_list = tr;
    }
}

static void softdev_tap_flush(SoftdevTap *s);
static void softdev_tap_ring_notify(SoftdevTap *s);
static void softdev_tap_pump(SoftdevTap *s);
static void softdev_tap_reap(SoftdevTap *s);

/*
 * Drop the lock and wake the coroutines whose requests completed.
 *
 * In s->ctx this is a "turn": the woken requests go on to the node below,
 * whose completions often start new requests for us before the turn ends
 * (a guest's or qemu-img's next request).  Those wait in the send buffer
 * but for the first one, which goes at once so that the process has work
 * while we queue the rest; the rest go together when the turn ends, with
 * no BH (scheduling one from here would also write the AioContext's event
 * notifier, and the next iteration read it: two system calls per batch).
 */
static void softdev_tap_unlock(SoftdevTap *s)
{
    bool turn = qemu_get_current_aio_context() == s->ctx;

    for (;;) {
        SoftdevTapReq *tr;

        if (s->pump_pending) {
            s->pump_pending = false;
            softdev_tap_pump(s);
        }
        tr = s->wake_list;
        s->wake_list = NULL;
        if (!tr) {
            break;
        }
        s->waking += turn;
        qemu_mutex_unlock(&s->lock);
        /*
         * The woken requests go on to the node below: let it submit them
         * together (one io_uring_enter or io_submit for the batch), as a
         * device model does for the requests of one notification.
         */
        defer_call_begin();
        while (tr) {
            SoftdevTapReq *next = tr->wake_next;
            Coroutine *co = tr->co;

            /* @tr lives on the coroutine's stack: read it before waking. */
            aio_co_wake(co);
            tr = next;
        }
        defer_call_end();
        qemu_mutex_lock(&s->lock);
        if (turn && --s->waking == 0) {
            s->turn_sent = false;
            if (s->kick_check) {
                softdev_tap_ring_notify(s);
            }
            softdev_tap_flush(s);       /* may complete more: loop */
        }
    }
    qemu_mutex_unlock(&s->lock);
}

/*
 * Have the watchdog look at the oldest request in time.  Locked.
 *
 * The watchdog is a timerfd, not a QEMUTimer: a QEMUTimer's deadline
 * becomes the timeout of every sleep of the event loop, and the kernel
 * then starts and cancels a timer for each ppoll (one per batch of
 * requests); in a VM each costs an exit.  The timerfd is set once per
 * arming.
 */
static void softdev_tap_arm_watchdog(SoftdevTap *s)
{
    SoftdevTapReq *tr = QTAILQ_FIRST(&s->reqs);

    if (!s->watchdog_armed && tr && tr->deadline_ms && s->watchdog_on) {
        /*
         * A little late is fine: a tenth of the timeout.  A request that
         * is already late (it waits for the teardown) is looked at again
         * after that much time, not at once.
         */
        int64_t now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
        int64_t ms = MAX(tr->deadline_ms - now, 0) +
                     MAX(s->timeout_ms / 10, 10);
        struct itimerspec its = {
            .it_value = { .tv_sec = ms / 1000,
                          .tv_nsec = (ms % 1000) * SCALE_MS },
        };

        s->watchdog_armed = true;
        if (timerfd_settime(s->watchdog_fd, 0, &its, NULL) < 0) {
            /* Cannot happen with these arguments; never lose a timeout */
            error_report("softdev-tap '%s': cannot arm the watchdog: %s",
                         bdrv_get_node_name(s->bs), strerror(errno));
            s->watchdog_armed = false;
        }
    }
}

/* Stop the watchdog of s->ctx (before the node leaves it).  Locked. */
static void softdev_tap_stop_watchdog(SoftdevTap *s)
{
    static const struct itimerspec off;

    if (s->watchdog_on) {
        aio_set_fd_handler(s->ctx, s->watchdog_fd, NULL, NULL, NULL, NULL,
                           NULL);
        timerfd_settime(s->watchdog_fd, 0, &off, NULL);
        s->watchdog_on = false;
        s->watchdog_armed = false;
    }
}

/* @req as the wire describes it (without flags and slot) */
static SoftdevTapRequest softdev_tap_wire(const SoftdevRequest *req)
{
    SoftdevTapRequest wire = { .op = req->op };

    if (req->op != SOFTDEV_OP_FLUSH) {
        wire.offset = req->offset;
        wire.bytes = req->bytes;
    }
    return wire;
}

/* Where shared-memory slot @slot starts */
static uint8_t *softdev_tap_slot(SoftdevTap *s, uint32_t slot)
{
    return s->conn.shm + (size_t)slot * s->conn.max_data;
}

/* What a request gets while the process is away, except with queue */
static int softdev_tap_policy_outcome(SoftdevTap *s)
{
    if (s->on_disconnect == SOFTDEV_TAP_ON_DISCONNECT_PASSTHROUGH &&
        s->has_lower) {
        return SOFTDEV_CONTINUE;
    }
    return -EIO;
}

/*
 * Get queued messages going.  The first message of an event-loop turn is
 * sent at once, so that the process works on it while we queue the rest
 * (otherwise all requests would travel in lockstep, and each side would
 * wait while the other works); the others go out together from the send
 * BH at the end of the turn.  Locked.
 */
static void softdev_tap_kick(SoftdevTap *s)
{
    if (s->waking && s->connected) {
        /* In a turn (softdev_tap_unlock), which sends the rest. */
        if (!s->turn_sent) {
            s->turn_sent = true;
            softdev_tap_flush(s);
        }
        return;
    }
    if (s->send_scheduled) {
        return;
    }
    s->send_scheduled = true;
    if (qemu_get_current_aio_context() == s->ctx) {
        softdev_tap_flush(s);
    }
    qemu_bh_schedule(s->send_bh);
}

/*
 * Requests were published in the request ring: KICK the process if it
 * sleeps.  Locked.
 */
static void softdev_tap_ring_notify(SoftdevTap *s)
{
    s->kick_check = false;
    if (s->connected && s->conn.ring &&
        softdev_tap_ring_need_kick(s->conn.ring, SOFTDEV_TAP_RING_DEV_IDLE)) {
        /* The message is tiny: send it now */
        s->sbuf.len += softdev_tap_encode_kick(
            softdev_tap_buf_reserve(&s->sbuf, SOFTDEV_TAP_HDR_SIZE));
        softdev_tap_flush(s);
    }
    if (s->connected && s->conn.ring && !s->cli_idle &&
        s->sent_count > s->sent_reading) {
        /* A request waits for its reply alone: ask for a KICK */
        softdev_tap_reap(s);
    }
}

/*
 * Send unsent requests, in order, while the process has room.  Locked;
 * the messages go to the send buffer, flushed by the send BH.
 */
static void softdev_tap_pump(SoftdevTap *s)
{
    bool shm = s->conn.shm != NULL;
    bool queued = false, published = false;

    while (s->connected && s->next_unsent &&
           s->sent_count < s->conn.max_inflight) {
        SoftdevTapReq *tr = s->next_unsent;
        SoftdevRequest *req = tr->req;
        SoftdevTapRequest wire = softdev_tap_wire(req);
        bool write = req->op == SOFTDEV_OP_WRITE;
        uint8_t *p;
        size_t len;

        if ((req->flags & BDRV_REQ_FUA) &&
            (s->conn.features & SOFTDEV_TAP_F_FUA)) {
            wire.req_flags |= SOFTDEV_TAP_REQ_FUA;
        }
        if (req->op == SOFTDEV_OP_WRITE_ZEROES &&
            (req->flags & BDRV_REQ_MAY_UNMAP)) {
            wire.req_flags |= SOFTDEV_TAP_REQ_MAY_UNMAP;
        }
        if (shm) {
            assert(s->nfree);
            tr->slot = wire.slot = s->free_slots[--s->nfree];
            if (write &&
                !(s->conn.features & SOFTDEV_TAP_F_NO_WRITE_DATA)) {
                qemu_iovec_to_buf(req->qiov, req->qiov_offset,
                                  softdev_tap_slot(s, tr->slot), req->bytes);
            }
        }
        if (s->conn.ring) {
            softdev_tap_encode_request(
                softdev_tap_ring_entry(s->conn.ring, s->conn.ring_entries,
                                       SOFTDEV_TAP_RING_REQUESTS,
                                       s->req_prod++),
                SOFTDEV_TAP_REQUEST, tr->handle,
                tr->replay ? SOFTDEV_TAP_FLAG_REPLAY : 0, true, &wire);
            goto sent;
        }
        p = softdev_tap_buf_reserve(&s->sbuf, SOFTDEV_TAP_HDR_SIZE +
                                    SOFTDEV_TAP_REQUEST_SIZE +
                                    (write && !shm ? req->bytes : 0));
        len = softdev_tap_encode_request(p, SOFTDEV_TAP_REQUEST, tr->handle,
                                         tr->replay ?
                                         SOFTDEV_TAP_FLAG_REPLAY : 0,
                                         shm, &wire);
        if (write && !shm) {
            qemu_iovec_to_buf(req->qiov, req->qiov_offset, p + len,
                              req->bytes);
            len += req->bytes;
        }
        s->sbuf.len += len;
        queued = true;
sent:
        tr->sent = true;
        s->sent_count++;
        s->sent_reading += tr->reading;
        s->next_unsent = QTAILQ_NEXT(tr, next);
        published = true;
    }
    if (published && s->conn.ring) {
        softdev_tap_ring_set_prod(s->conn.ring, SOFTDEV_TAP_RING_REQ_PROD,
                                  s->req_prod);
        /*
         * A polling process sees the entries now.  Whether a sleeping one
         * needs a KICK takes a full barrier, which waits for the ring's
         * cache lines: in a turn, ask once when it ends.
         */
        if (s->waking) {
            s->kick_check = true;
        } else {
            softdev_tap_ring_notify(s);
        }
    }
    if (queued && s->send_bh) {
        softdev_tap_kick(s);
    }
}

/* -- the connection, in the node's AioContext --------------------------- */

static void softdev_tap_read_ready(void *opaque);
static void softdev_tap_write_ready(void *opaque);

/*
 * Adaptive polling (an AioContext with poll-max-ns, e.g. an iothread):
 * replies are waiting on the socket.  Cheaper than sleeping and being
 * woken, which costs two context switches per batch.
 */
static bool softdev_tap_poll(void *opaque)
{
    SoftdevTap *s = opaque;
    char c;

    if (s->conn.ring) {
        /* No system call: a look at the reply ring's producer index */
        return softdev_tap_ring_avail(s->conn.ring, SOFTDEV_TAP_RING_REP_PROD,
                                      s->rep_cons, s->conn.ring_entries);
    }
    return recv(s->conn.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 1;
}

static void softdev_tap_poll_ready(void *opaque);

static void softdev_tap_set_handlers(SoftdevTap *s)
{
    aio_set_fd_handler(s->ctx, s->conn.fd, softdev_tap_read_ready,
                       s->want_write ? softdev_tap_write_ready : NULL,
                       softdev_tap_poll, softdev_tap_poll_ready, s);
    s->handlers_set = true;
}

static void softdev_tap_clear_handlers(SoftdevTap *s)
{
    if (s->handlers_set) {
        aio_set_fd_handler(s->ctx, s->conn.fd, NULL, NULL, NULL, NULL, NULL);
        s->handlers_set = false;
    }
}

static void softdev_tap_conn_free(SoftdevTapConn *c)
{
    if (c->shm) {
        munmap(c->shm, c->shm_size);
    }
    if (c->fd >= 0) {
        close(c->fd);
    }
    *c = (SoftdevTapConn) { .fd = -1 };
}

/*
 * The connection is gone: tear it down and apply on-disconnect.  Locked,
 * in s->ctx.
 */
static void softdev_tap_teardown(SoftdevTap *s, const char *why)
{
    SoftdevTapReq *tr, *next;
    const char *policy;

    if (!s->connected) {
        return;
    }
    if (s->drop_reason) {
        why = s->drop_reason;
        s->drop_reason = NULL;
    }
    s->connected = false;
    s->disconnects++;
    softdev_tap_clear_handlers(s);
    softdev_tap_conn_free(&s->conn);
    softdev_tap_buf_reset(&s->sbuf);
    softdev_tap_buf_reset(&s->rbuf);
    s->want_write = false;
    trace_softdev_tap_disconnect(s->bs, why);

    QTAILQ_FOREACH_SAFE(tr, &s->reqs, next, next) {
        if (s->on_disconnect == SOFTDEV_TAP_ON_DISCONNECT_QUEUE) {
            if (tr->sent) {
                tr->sent = false;
                tr->replay = true;
            }
        } else {
            softdev_tap_complete(s, tr, softdev_tap_policy_outcome(s));
        }
    }
    s->sent_count = s->sent_reading = 0;
    s->nfree = 0;
    s->next_unsent = QTAILQ_FIRST(&s->reqs);

    policy = s->on_disconnect == SOFTDEV_TAP_ON_DISCONNECT_QUEUE ?
             "wait for it" :
             s->on_disconnect == SOFTDEV_TAP_ON_DISCONNECT_FAIL ? "fail" :
             "pass through";
    softdev_tap_alert(s, SOFTDEV_SEVERITY_WARNING,
                      "soft-device process disconnected: %s; requests %s%s",
                      why, policy, s->reconnect_max_ms ?
                      ", reconnecting" : "");
    if (s->reconnect_max_ms && !s->closing) {
        s->want_connect = true;
        qemu_cond_broadcast(&s->cond);
    }
}

/*
 * Ask for the connection to be dropped from any thread: the socket is
 * shut down and the read handler in s->ctx tears it down.  Locked.
 */
static void softdev_tap_drop(SoftdevTap *s, const char *why)
{
    if (s->connected && !s->drop_reason) {
        s->drop_reason = why;
        shutdown(s->conn.fd, SHUT_RDWR);
    }
}

/* Write out the send buffer as far as the socket takes it.  Locked. */
static void softdev_tap_flush(SoftdevTap *s)
{
    SoftdevTapBuf *b = &s->sbuf;
    bool want_write = false;

    while (s->connected && b->off < b->len) {
        ssize_t n = send(s->conn.fd, b->data + b->off, b->len - b->off,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            want_write = true;
            break;
        }
        if (n <= 0) {
            softdev_tap_teardown(s, "cannot send to the process");
            return;
        }
        b->off += n;
    }
    if (s->connected && want_write != s->want_write) {
        s->want_write = want_write;
        softdev_tap_set_handlers(s);
    }
}

static void softdev_tap_send_bh(void *opaque)
{
    SoftdevTap *s = opaque;

    qemu_mutex_lock(&s->lock);
    s->send_scheduled = false;
    softdev_tap_flush(s);
    softdev_tap_unlock(s);
}

static void softdev_tap_write_ready(void *opaque)
{
    softdev_tap_send_bh(opaque);
}

typedef struct SoftdevTapLower {
    SoftdevTap *s;
    uint64_t handle;
    uint64_t generation;
    SoftdevTapRequest req;
    void *buf;
} SoftdevTapLower;

/* Serve one LOWER_REQUEST on the node below and answer it. */
static void coroutine_fn softdev_tap_co_lower(void *opaque)
{
    SoftdevTapLower *l = opaque;
    SoftdevTap *s = l->s;
    BlockDriverState *bs = s->bs;
    SoftdevTapReply rep = { 0 };
    BdrvRequestFlags flags = 0;
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
    qemu_mutex_lock(&s->lock);
    /* The results of a dead connection's lower requests are dropped. */
    if (s->connected && s->generation == l->generation) {
        uint8_t *p = softdev_tap_buf_reserve(&s->sbuf, SOFTDEV_TAP_HDR_SIZE +
                                             SOFTDEV_TAP_LOWER_REPLY_SIZE +
                                             rep.bytes);
        size_t len = softdev_tap_encode_reply(p, SOFTDEV_TAP_LOWER_REPLY,
                                              l->handle, false, &rep);

        memcpy(p + len, l->buf, rep.bytes);
        s->sbuf.len += len + rep.bytes;
        if (s->send_bh) {
            softdev_tap_kick(s);
        }
    }
    if (--s->lower_inflight == 0) {
        qemu_cond_broadcast(&s->cond);
    }
    softdev_tap_unlock(s);      /* the kick may have dropped the connection */
    qemu_vfree(l->buf);
    g_free(l);
    bdrv_dec_in_flight(bs);
}

/* A REPLY: returns an error message or NULL.  Locked. */
static const char *softdev_tap_got_reply(SoftdevTap *s,
                                         const SoftdevTapHeader *hdr,
                                         const uint8_t *payload)
{
    SoftdevTapRequest wire;
    SoftdevTapReply rep;
    const char *err = NULL;
    SoftdevTapReq *tr;
    const uint8_t *data;
    SoftdevRequest *req;

    QTAILQ_FOREACH(tr, &s->reqs, next) {
        if (tr->handle == hdr->handle && tr->sent) {
            break;
        }
    }
    if (!tr) {
        return "reply to a request that is not outstanding";
    }
    req = tr->req;
    wire = softdev_tap_wire(req);
    if (softdev_tap_decode_reply(hdr, payload, &wire, s->has_lower,
                                 s->conn.shm != NULL, &rep, &err) < 0) {
        return err;
    }
    /* After a replay the process may not be the one that promised */
    tr->answer_late = !(s->conn.features &
                        softdev_tap_op_early_feature(req->op));
    if (req->op == SOFTDEV_OP_WRITE &&
        (s->conn.features & SOFTDEV_TAP_F_EARLY_WRITE) &&
        !softdev_tap_early_write_kept(&rep, req->offset)) {
        /* We may have written it below already */
        return "a WRITE completed, moved or changed despite early writes";
    }
    data = s->conn.shm ? softdev_tap_slot(s, tr->slot) :
                         payload + SOFTDEV_TAP_REPLY_SIZE;
    if (rep.action == SOFTDEV_TAP_FORWARD) {
        if (rep.offset > s->lower_size ||
            wire.bytes > s->lower_size - rep.offset) {
            return "forward beyond the end of the node below";
        }
        if (rep.bytes) {
            tr->bounce = qemu_blockalign(s->bs, rep.bytes);
            memcpy(tr->bounce, data, rep.bytes);
        }
        tr->fwd_offset = rep.offset;
        softdev_tap_complete(s, tr, SOFTDEV_CONTINUE);
    } else if (rep.bytes && tr->early) {
        /* The early read still writes the buffer: copy after it ended */
        tr->bounce = qemu_blockalign(s->bs, rep.bytes);
        memcpy(tr->bounce, data, rep.bytes);
        softdev_tap_complete(s, tr, SOFTDEV_DONE);
    } else {
        if (rep.bytes) {
            qemu_iovec_from_buf(req->qiov, req->qiov_offset, data, rep.bytes);
        }
        softdev_tap_complete(s, tr, rep.result < 0 ? rep.result :
                                    SOFTDEV_DONE);
    }
    return NULL;
}

/* A LOWER_REQUEST: returns an error message or NULL.  Locked. */
static const char *softdev_tap_got_lower(SoftdevTap *s,
                                         const SoftdevTapHeader *hdr,
                                         const uint8_t *payload)
{
    SoftdevTapLower *l;
    const char *err = NULL;

    if (!(s->conn.features & SOFTDEV_TAP_F_LOWER)) {
        return "lower request without SOFTDEV_TAP_F_LOWER";
    }
    l = g_new0(SoftdevTapLower, 1);
    if (softdev_tap_decode_request(hdr, payload, s->lower_size,
                                   s->conn.max_data, 0, &l->req,
                                   &err) < 0) {
        g_free(l);
        return err;
    }
    l->s = s;
    l->handle = hdr->handle;
    l->generation = s->generation;
    l->buf = qemu_blockalign(s->bs, MAX(l->req.bytes, 1));
    if (l->req.op == SOFTDEV_TAP_OP_WRITE) {
        memcpy(l->buf, payload + SOFTDEV_TAP_REQUEST_SIZE, l->req.bytes);
    }
    s->lower_inflight++;
    bdrv_inc_in_flight(s->bs);
    aio_co_schedule(s->ctx, qemu_coroutine_create(softdev_tap_co_lower, l));
    return NULL;
}

/* Parse every complete message in the receive buffer.  Locked. */
static const char *softdev_tap_parse(SoftdevTap *s)
{
    SoftdevTapBuf *b = &s->rbuf;
    uint32_t max = s->conn.max_data + SOFTDEV_TAP_REQUEST_SIZE;

    while (s->connected && b->len - b->off >= SOFTDEV_TAP_HDR_SIZE) {
        const uint8_t *p = b->data + b->off;
        SoftdevTapHeader hdr;
        const char *err = NULL;

        if (softdev_tap_decode_header(p, max, &hdr, &err) < 0) {
            return err;
        }
        if (b->len - b->off < SOFTDEV_TAP_HDR_SIZE + hdr.length) {
            /* Make room for the rest of it */
            softdev_tap_buf_reserve(b, SOFTDEV_TAP_HDR_SIZE + hdr.length -
                                    (b->len - b->off));
            break;
        }
        p += SOFTDEV_TAP_HDR_SIZE;
        if (hdr.type == SOFTDEV_TAP_REPLY && !s->conn.ring) {
            err = softdev_tap_got_reply(s, &hdr, p);
        } else if (hdr.type == SOFTDEV_TAP_KICK && s->conn.ring) {
            /*
             * The process cleared our idle word; softdev_tap_read_ready()
             * looks at the ring next.
             */
            s->cli_idle = false;
        } else if (hdr.type == SOFTDEV_TAP_LOWER_REQUEST) {
            err = softdev_tap_got_lower(s, &hdr, p);
        } else {
            err = "unexpected message type";
        }
        if (err) {
            return err;
        }
        b->off += SOFTDEV_TAP_HDR_SIZE + hdr.length;
    }
    return NULL;
}

/* Report a protocol error and drop the connection.  Locked. */
static void softdev_tap_protocol_error(SoftdevTap *s, const char *err)
{
    if (!s->drop_reason) {
        error_report("softdev-tap '%s': protocol error: %s",
                     bdrv_get_node_name(s->bs), err);
    }
    softdev_tap_teardown(s, err);
}

/*
 * Take the replies waiting in the reply ring, until it stays empty after
 * we said that we want a KICK for the next one.  We want none while each
 * request at the process has its early read or write under way: the end
 * of that I/O wakes us, and co_pre looks at the ring then, which saves
 * the process a system call and us a wake-up per batch.  Locked.
 */
static const char *softdev_tap_take_reply(void *opaque,
                                          const SoftdevTapHeader *hdr,
                                          const uint8_t *fixed)
{
    return softdev_tap_got_reply(opaque, hdr, fixed);
}

static void softdev_tap_reap(SoftdevTap *s)
{
    const char *err = NULL;

    while (s->connected && s->conn.ring) {
        uint8_t *ring = s->conn.ring;
        int64_t n = softdev_tap_ring_avail(ring, SOFTDEV_TAP_RING_REP_PROD,
                                           s->rep_cons,
                                           s->conn.ring_entries);

        if (n < 0) {
            softdev_tap_protocol_error(s, "reply ring index out of range");
            return;
        }
        if (n == 0) {
            if (s->sent_count == s->sent_reading) {
                if (s->cli_idle) {
                    softdev_tap_ring_busy(ring, SOFTDEV_TAP_RING_CLI_IDLE);
                    s->cli_idle = false;
                }
                return;
            }
            if (s->cli_idle) {
                return;     /* still set, or a KICK is on its way */
            }
            if (softdev_tap_ring_may_sleep(ring, SOFTDEV_TAP_RING_CLI_IDLE,
                                           SOFTDEV_TAP_RING_REP_PROD,
                                           s->rep_cons)) {
                s->cli_idle = true;
                return;
            }
            continue;
        }
        if (softdev_tap_ring_take(ring, s->conn.ring_entries,
                                  SOFTDEV_TAP_RING_REPLIES, &s->rep_cons,
                                  softdev_tap_take_reply, s, &err) < 0) {
            softdev_tap_protocol_error(s, err);
            return;
        }
    }
}

/* Adaptive polling saw something */
static void softdev_tap_poll_ready(void *opaque)
{
    SoftdevTap *s = opaque;

    if (!s->conn.ring) {
        softdev_tap_read_ready(opaque);
        return;
    }
    qemu_mutex_lock(&s->lock);
    softdev_tap_reap(s);
    softdev_tap_unlock(s);
}

static void softdev_tap_read_ready(void *opaque)
{
    SoftdevTap *s = opaque;
    SoftdevTapBuf *b = &s->rbuf;
    size_t total = 0;
    const char *err;

    qemu_mutex_lock(&s->lock);
    while (s->connected && total < SOFTDEV_TAP_READ_CHUNK) {
        uint8_t *p = softdev_tap_buf_reserve(b, 64 * KiB);
        size_t room = b->cap - b->len;
        ssize_t n = recv(s->conn.fd, p, room, MSG_DONTWAIT);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        }
        if (n <= 0) {
            softdev_tap_teardown(s, n ? "connection lost" :
                                 "the process closed the connection");
            break;
        }
        b->len += n;
        total += n;
        err = softdev_tap_parse(s);
        if (err) {
            softdev_tap_protocol_error(s, err);
            break;
        }
        if ((size_t)n < room) {
            break;      /* the socket is drained: save a system call */
        }
    }
    softdev_tap_reap(s);
    softdev_tap_unlock(s);
}

/* -- timeouts ----------------------------------------------------------- */

/*
 * The watchdog: requests that waited longer than the timeout.  The list is
 * in arrival order, so the oldest deadlines come first.  A sent request
 * that is too old means the process hangs: the connection is dropped.
 * With queue the request itself fails (the others are replayed later);
 * otherwise on-disconnect applies to all of them at the teardown.  Runs in
 * s->ctx.
 */
static void softdev_tap_watchdog(void *opaque)
{
    SoftdevTap *s = opaque;
    int64_t now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    SoftdevTapReq *tr, *next;
    uint64_t expirations;

    /* Empty the timerfd (EAGAIN if another turn did) */
    if (read(s->watchdog_fd, &expirations, sizeof(expirations)) < 0 &&
        errno != EAGAIN) {
        error_report("softdev-tap '%s': watchdog: %s",
                     bdrv_get_node_name(s->bs), strerror(errno));
    }
    qemu_mutex_lock(&s->lock);
    QTAILQ_FOREACH_SAFE(tr, &s->reqs, next, next) {
        if (tr->deadline_ms > now) {
            break;
        }
        if (!tr->timed_out) {
            tr->timed_out = true;
            s->timeouts++;
            softdev_tap_alert(s, SOFTDEV_SEVERITY_WARNING,
                              "%s request at offset %" PRId64 " waited "
                              "longer than %u s", SoftdevOp_str(tr->req->op),
                              tr->req->offset, s->timeout_ms / 1000);
        }
        if (tr->sent) {
            softdev_tap_drop(s, "a request timed out");
        }
        if (s->on_disconnect == SOFTDEV_TAP_ON_DISCONNECT_QUEUE ||
            !tr->sent) {
            softdev_tap_complete(s, tr, -EIO);
        }
    }
    s->watchdog_armed = false;
    softdev_tap_arm_watchdog(s);
    softdev_tap_unlock(s);
}

/* Let the watchdog run in s->ctx.  Locked (or not yet shared). */
static void softdev_tap_start_watchdog(SoftdevTap *s)
{
    aio_set_fd_handler(s->ctx, s->watchdog_fd, softdev_tap_watchdog, NULL,
                       NULL, NULL, s);
    s->watchdog_on = true;
}

/* -- requests from the block layer --------------------------------------- */

static int coroutine_fn GRAPH_RDLOCK
softdev_tap_co_pre(BlockDriverState *bs, SoftdevRequest *req)
{
    SoftdevTap *s = softdev_opaque(bs);
    SoftdevTapReq tr = {
        .s = s, .req = req, .co = qemu_coroutine_self(),
        .fwd_offset = UINT64_MAX,
    };
    uint64_t gate = softdev_tap_op_feature(req->op);
    int early_ret = 0;
    bool wait;

    qemu_mutex_lock(&s->lock);
    if (!s->connected && s->on_disconnect != SOFTDEV_TAP_ON_DISCONNECT_QUEUE) {
        qemu_mutex_unlock(&s->lock);
        return softdev_tap_policy_outcome(s);
    }
    if (s->connected && gate && !(s->conn.features & gate)) {
        /* The process did not ask for it (while queued: decided later). */
        qemu_mutex_unlock(&s->lock);
        return SOFTDEV_CONTINUE;
    }
    tr.handle = ++s->next_handle;
    QTAILQ_INSERT_TAIL(&s->reqs, &tr, next);
    s->outstanding++;
    if (!s->next_unsent) {
        s->next_unsent = &tr;
    }
    if (s->timeout_ms) {
        /* start_ns is QEMU_CLOCK_REALTIME (get_clock()): no second read */
        tr.deadline_ms = req->start_ns / SCALE_MS + s->timeout_ms;
        softdev_tap_arm_watchdog(s);
    }
    /*
     * The process promised that a READ it forwards unchanged may get
     * data read as soon as it was sent (SOFTDEV_TAP_F_EARLY_READ), or
     * that it forwards every WRITE unchanged or fails it
     * (SOFTDEV_TAP_F_EARLY_WRITE): if the request goes now, do its I/O
     * below while the process decides, so that the answer overlaps with
     * the I/O instead of preceding it.  The I/O is ours (no coroutine of
     * its own); a reply that comes meanwhile is only recorded, and found
     * when the I/O is over, with no wake-up.
     */
    tr.reading = s->connected &&
                 (s->conn.features &
                  softdev_tap_op_early_feature(req->op));
    softdev_tap_pump(s);
    /*
     * Sending may have dropped the connection and completed other
     * requests (and this one): softdev_tap_unlock() wakes them, after we
     * yielded (aio_co_wake from a coroutine defers the wake-up).
     */
    wait = !tr.done;
    tr.early = tr.reading = tr.reading && wait && tr.sent;
    tr.waiting = wait && !tr.early; /* a waker may clear it once unlocked */
    softdev_tap_unlock(s);
    if (tr.early) {
        early_ret = softdev_co_forward(bs, req);
        qemu_mutex_lock(&s->lock);
        if (tr.sent) {
            s->sent_reading--;
        }
        tr.reading = false;
        if (!tr.done) {
            /* Its reply may be in the ring, with no KICK: look */
            softdev_tap_reap(s);
        }
        wait = !tr.done;
        tr.waiting = wait;
        softdev_tap_unlock(s);
    }
    if (wait) {
        qemu_coroutine_yield();
    }
    assert(tr.done);
    if (tr.early) {
        if (tr.outcome == SOFTDEV_CONTINUE && s->has_lower && !tr.bounce &&
            !tr.answer_late &&
            (tr.fwd_offset == UINT64_MAX || tr.fwd_offset == req->offset)) {
            /* Forwarded unchanged: the early I/O is the answer */
            return early_ret < 0 ? early_ret : SOFTDEV_DONE;
        }
        /*
         * Otherwise the process's answer stands, as for any request: a
         * failure, its own data for a read (copied now that the early
         * read is over), a read elsewhere.  So does the answer of a
         * process that replaced the one that promised early I/O (a
         * replay): it may have changed the node below before it
         * forwarded a read, and may move or change a write (an early
         * write stays where it went; forwarded unchanged, it is simply
         * written again).
         */
        if (tr.bounce && tr.outcome == SOFTDEV_DONE) {
            qemu_iovec_from_buf(req->qiov, req->qiov_offset, tr.bounce,
                                req->bytes);
            qemu_vfree(tr.bounce);
            tr.bounce = NULL;
        }
    }

    if (tr.outcome == SOFTDEV_CONTINUE && s->has_lower) {
        if (tr.fwd_offset != UINT64_MAX) {
            req->offset = tr.fwd_offset;
        }
        if (tr.bounce) {
            SoftdevTapBounce *b = g_new(SoftdevTapBounce, 1);

            b->buf = tr.bounce;
            qemu_iovec_init_buf(&b->qiov, b->buf, req->bytes);
            req->qiov = &b->qiov;
            req->qiov_offset = 0;
            req->opaque = b;
        }
        return SOFTDEV_CONTINUE;
    }
    qemu_vfree(tr.bounce);
    return tr.outcome == SOFTDEV_CONTINUE ? -EIO : tr.outcome;
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

/* -- connecting ---------------------------------------------------------- */

static int softdev_tap_write_all(int fd, const void *buf, size_t len,
                                 int scm_fd)
{
    const uint8_t *p = buf;

    while (len) {
        struct iovec iov = { .iov_base = (void *)p, .iov_len = len };
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } u;
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n;

        if (scm_fd >= 0) {
            struct cmsghdr *cmsg;

            memset(&u, 0, sizeof(u));
            msg.msg_control = u.buf;
            msg.msg_controllen = sizeof(u.buf);
            cmsg = CMSG_FIRSTHDR(&msg);
            cmsg->cmsg_level = SOL_SOCKET;
            cmsg->cmsg_type = SCM_RIGHTS;
            cmsg->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(cmsg), &scm_fd, sizeof(int));
        }
        n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        scm_fd = -1;            /* sent with the first byte */
        p += n;
        len -= n;
    }
    return 0;
}

/* 0, or -errno (-ECONNRESET for EOF) */
static int softdev_tap_read_all(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len) {
        ssize_t n = read(fd, p, len);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n == 0) {
            return -ECONNRESET;
        }
        if (n < 0) {
            return -errno;
        }
        p += n;
        len -= n;
    }
    return 0;
}

/*
 * Connect to the process and shake hands, blocking (at open, or in the
 * connector thread).  Fills @c; on failure @c is empty.
 */
static int softdev_tap_connect(SoftdevTap *s, SoftdevTapConn *c,
                               Error **errp)
{
    uint8_t buf[SOFTDEV_TAP_HDR_SIZE + SOFTDEV_TAP_HELLO_SIZE];
    struct timeval tv = { .tv_sec = SOFTDEV_TAP_HELLO_SECS };
    bool unix_socket = s->saddr->type == SOCKET_ADDRESS_TYPE_UNIX;
    SoftdevTapHello hello = {
        .version = SOFTDEV_TAP_VERSION,
        .device_class = SOFTDEV_TAP_CLASS_BLOCK,
        .features = SOFTDEV_TAP_F_FLUSH | SOFTDEV_TAP_F_DISCARD |
                    SOFTDEV_TAP_F_ZEROES | SOFTDEV_TAP_F_FUA |
                    (s->has_lower ? SOFTDEV_TAP_F_LOWER : 0) |
                    (unix_socket ? SOFTDEV_TAP_F_SHM | SOFTDEV_TAP_F_RING :
                                   0) |
                    (s->has_lower ? SOFTDEV_TAP_F_EARLY_READ |
                                    SOFTDEV_TAP_F_EARLY_WRITE : 0) |
                    SOFTDEV_TAP_F_NO_WRITE_DATA,
        .size = s->lower_size,
        .max_data = SOFTDEV_TAP_CLIENT_MAX_DATA,
        .max_inflight = s->want_inflight,
    };
    SoftdevTapHello reply;
    SoftdevTapHeader hdr;
    const char *err = NULL;
    int memfd = -1;
    size_t len;
    int ret = -EIO, r;

    *c = (SoftdevTapConn) { .fd = -1 };
    c->fd = socket_connect(s->saddr, errp);
    if (c->fd < 0) {
        error_prepend(errp, "softdev-tap: cannot reach the soft-device "
                      "process: ");
        return -EIO;
    }
    qemu_mutex_lock(&s->lock);
    s->connecting_fd = c->fd;
    if (s->closing) {
        /* close() may have looked before connecting_fd was set */
        qemu_mutex_unlock(&s->lock);
        error_setg(errp, "softdev-tap: the node is closing");
        goto out;
    }
    qemu_mutex_unlock(&s->lock);
    qemu_socket_set_block(c->fd);
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));

    if (unix_socket && s->peer_uid >= 0) {
        struct ucred cred;
        socklen_t clen = sizeof(cred);

        if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0) {
            error_setg_errno(errp, errno, "softdev-tap: cannot get the "
                             "process's credentials");
            goto out;
        }
        if (cred.uid != s->peer_uid) {
            error_setg(errp, "softdev-tap: the soft-device process runs as "
                       "uid %u, not peer-uid %" PRId64, (unsigned)cred.uid,
                       s->peer_uid);
            goto out;
        }
    }

    len = softdev_tap_encode_hello(buf, false, &hello);
    if (softdev_tap_write_all(c->fd, buf, len, -1) < 0) {
        error_setg_errno(errp, errno, "softdev-tap handshake: cannot send "
                         "HELLO");
        goto out;
    }
    r = softdev_tap_read_all(c->fd, buf, SOFTDEV_TAP_HDR_SIZE);
    if (r == -ECONNRESET) {
        error_setg(errp, "softdev-tap handshake: the soft-device process "
                   "closed the connection (its log says why)");
        goto out;
    } else if (r < 0) {
        error_setg_errno(errp, -r, "softdev-tap handshake: no answer from "
                         "the soft-device process");
        goto out;
    }
    if (softdev_tap_decode_header(buf, SOFTDEV_TAP_HANDSHAKE_MAX, &hdr,
                                  &err) == 0 &&
        hdr.length == SOFTDEV_TAP_HELLO_REPLY_SIZE &&
        softdev_tap_read_all(c->fd, buf + SOFTDEV_TAP_HDR_SIZE,
                             hdr.length) < 0) {
        error_setg(errp, "softdev-tap handshake: truncated answer");
        goto out;
    }
    if (err || softdev_tap_decode_hello(&hdr, buf + SOFTDEV_TAP_HDR_SIZE,
                                        true, &hello, &reply, &err) < 0) {
        error_setg(errp, "softdev-tap handshake: %s", err);
        goto out;
    }
    if (!reply.size && !s->has_lower) {
        error_setg(errp, "softdev-tap: there is no node below, so the soft "
                   "device must give its size");
        goto out;
    }
    c->features = reply.features;
    c->max_data = reply.max_data;
    c->max_inflight = reply.max_inflight;
    c->size = reply.size ? reply.size : s->lower_size;

    if ((c->features & SOFTDEV_TAP_F_RING) &&
        !(c->features & SOFTDEV_TAP_F_SHM)) {
        error_setg(errp, "softdev-tap handshake: the soft device accepted "
                   "rings without shared memory");
        goto out;
    }
    if (c->features & SOFTDEV_TAP_F_SHM) {
        SoftdevTapShm shm = {
            .slots = c->max_inflight, .slot_size = c->max_data,
        };

        if (c->features & SOFTDEV_TAP_F_RING) {
            shm.ring_entries = softdev_tap_ring_entries(shm.slots);
        }
        c->shm_size = softdev_tap_shm_size(&shm);
        /* Sealed: the process can rely on the size staying (no SIGBUS) */
        memfd = qemu_memfd_create("softdev-tap", c->shm_size, false, 0,
                                  F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL,
                                  errp);
        if (memfd < 0) {
            error_prepend(errp, "softdev-tap: shared memory: ");
            goto out;
        }
        c->shm = mmap(NULL, c->shm_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                      memfd, 0);
        if (c->shm == MAP_FAILED) {
            c->shm = NULL;
            error_setg_errno(errp, errno, "softdev-tap: cannot map shared "
                             "memory");
            goto out;
        }
        if (shm.ring_entries) {
            c->ring = c->shm + (size_t)shm.slots * shm.slot_size;
            c->ring_entries = shm.ring_entries;
            /* Until we poll, we want to be told about replies */
            *softdev_tap_ring_word(c->ring, SOFTDEV_TAP_RING_CLI_IDLE) = 1;
        }
        len = softdev_tap_encode_shm(buf, &shm);
        if (softdev_tap_write_all(c->fd, buf, len, memfd) < 0) {
            error_setg_errno(errp, errno, "softdev-tap: cannot send the "
                             "shared memory");
            goto out;
        }
    }
    tv.tv_sec = 0;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    qemu_socket_set_nonblock(c->fd);
    ret = 0;

out:
    if (memfd >= 0) {
        close(memfd);
    }
    qemu_mutex_lock(&s->lock);
    s->connecting_fd = -1;
    qemu_mutex_unlock(&s->lock);
    if (ret < 0) {
        softdev_tap_conn_free(c);
    }
    return ret;
}

/*
 * Make @c the connection: requests that were waiting are sent (again).
 * Locked.  Returns an error message if @c does not fit this node.
 */
static const char *softdev_tap_install(SoftdevTap *s, SoftdevTapConn *c)
{
    SoftdevTapReq *tr, *next;
    uint64_t replayed = 0;
    uint32_t i;

    if (c->size != s->size) {
        return "the soft device's size changed";
    }
    if (c->max_data < s->first_max_data) {
        return "the soft device lowered max_data";
    }
    s->conn = *c;
    s->generation++;
    s->connected = true;
    g_free(s->free_slots);
    s->free_slots = g_new(uint32_t, c->max_inflight);
    for (i = 0; i < c->max_inflight; i++) {
        s->free_slots[i] = c->max_inflight - 1 - i;
    }
    s->nfree = c->shm ? c->max_inflight : 0;
    s->sent_count = s->sent_reading = 0;
    s->cli_idle = c->ring != NULL;     /* the handshake set the word */
    s->req_prod = s->rep_cons = 0;
    s->next_unsent = QTAILQ_FIRST(&s->reqs);

    /* A request whose op the new process does not want goes below. */
    QTAILQ_FOREACH_SAFE(tr, &s->reqs, next, next) {
        uint64_t gate = softdev_tap_op_feature(tr->req->op);

        if (gate && !(c->features & gate)) {
            softdev_tap_complete(s, tr, SOFTDEV_CONTINUE);
        } else if (tr->replay) {
            replayed++;
        }
    }
    s->replayed += replayed;
    trace_softdev_tap_connect(s->bs, s->generation, c->features, c->max_data,
                              c->max_inflight, c->shm != NULL,
                              c->ring != NULL, replayed);
    return NULL;
}

static void softdev_tap_attach_bh(void *opaque)
{
    SoftdevTap *s = opaque;

    qemu_mutex_lock(&s->lock);
    if (s->connected && !s->handlers_set) {
        softdev_tap_set_handlers(s);
        softdev_tap_pump(s);
    }
    softdev_tap_unlock(s);
}

static void *softdev_tap_connector(void *opaque)
{
    SoftdevTap *s = opaque;
    uint32_t delay_ms = SOFTDEV_TAP_FIRST_RETRY_MS;
    unsigned attempts = 0;

    qemu_mutex_lock(&s->lock);
    for (;;) {
        SoftdevTapConn c;
        Error *local_err = NULL;
        const char *bad;
        int ret;

        while (!s->closing && !s->want_connect) {
            qemu_cond_wait(&s->cond, &s->lock);
        }
        /* Old lower requests finish before the new HELLO (spec). */
        while (!s->closing && s->lower_inflight) {
            qemu_cond_wait(&s->cond, &s->lock);
        }
        if (s->closing) {
            break;
        }
        qemu_mutex_unlock(&s->lock);
        ret = softdev_tap_connect(s, &c, &local_err);
        qemu_mutex_lock(&s->lock);
        attempts++;
        if (ret == 0 && !s->closing) {
            bad = softdev_tap_install(s, &c);
            if (!bad) {
                s->want_connect = false;
                s->reconnects++;
                softdev_tap_alert(s, SOFTDEV_SEVERITY_INFO,
                                  "soft-device process reconnected after "
                                  "%u attempt(s); %" PRIu32 " request(s) "
                                  "waiting", attempts, s->outstanding);
                attempts = 0;
                delay_ms = SOFTDEV_TAP_FIRST_RETRY_MS;
                if (s->attach_bh) {
                    qemu_bh_schedule(s->attach_bh);
                }
                continue;
            }
            softdev_tap_conn_free(&c);
            error_setg(&local_err, "softdev-tap: refusing the soft-device "
                       "process: %s", bad);
        } else if (ret == 0) {
            softdev_tap_conn_free(&c);
        }
        if (attempts == 1 && local_err) {
            softdev_tap_alert(s, SOFTDEV_SEVERITY_WARNING, "%s; retrying",
                              error_get_pretty(local_err));
        }
        error_free(local_err);
        if (!s->closing) {
            qemu_cond_timedwait(&s->cond, &s->lock, delay_ms);
            delay_ms = MIN(delay_ms * 2, s->reconnect_max_ms);
        }
    }
    qemu_mutex_unlock(&s->lock);
    return NULL;
}

/* -- open and close ------------------------------------------------------ */

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

static int softdev_tap_parse_opts(SoftdevTap *s, QemuOpts *opts,
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
    s->on_disconnect = ret;
    v = qemu_opt_get_number(opts, "max-inflight", 64);
    if (v < 1 || v > SOFTDEV_TAP_MAX_INFLIGHT) {
        error_setg(errp, "softdev-tap: max-inflight must be 1-1024");
        return -EINVAL;
    }
    s->want_inflight = v;
    v = qemu_opt_get_number(opts, "timeout", 30);
    if (v > 24 * 3600) {
        error_setg(errp, "softdev-tap: timeout must be at most 86400 s");
        return -EINVAL;
    }
    s->timeout_ms = v * 1000;
    v = qemu_opt_get_number(opts, "reconnect-delay", 1);
    if (v > 3600) {
        error_setg(errp, "softdev-tap: reconnect-delay must be at most "
                   "3600 s");
        return -EINVAL;
    }
    s->reconnect_max_ms = MAX(v * 1000, v ? SOFTDEV_TAP_FIRST_RETRY_MS : 0);


    if (s->on_disconnect == SOFTDEV_TAP_ON_DISCONNECT_QUEUE && !v) {
        error_setg(errp, "softdev-tap: on-disconnect=queue needs "
                   "reconnect-delay > 0");
        return -EINVAL;
    }
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

static int softdev_tap_open(BlockDriverState *bs, QemuOpts *opts,
                            QDict *options, Error **errp)
{
    SoftdevTap *s = softdev_opaque(bs);
    SoftdevTapConn c;
    int ret;

    s->bs = bs;
    s->connecting_fd = -1;
    s->conn.fd = -1;
    s->watchdog_fd = -1;
    qemu_mutex_init(&s->lock);
    qemu_cond_init(&s->cond);
    QTAILQ_INIT(&s->reqs);
    QSIMPLEQ_INIT(&s->alerts);
    s->alert_bh = aio_bh_new(qemu_get_aio_context(), softdev_tap_alert_bh, s);

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
    qemu_mutex_lock(&s->lock);
    softdev_tap_install(s, &c);
    qemu_mutex_unlock(&s->lock);

    s->ctx = bdrv_get_aio_context(bs);
    s->send_bh = aio_bh_new(s->ctx, softdev_tap_send_bh, s);
    s->attach_bh = aio_bh_new(s->ctx, softdev_tap_attach_bh, s);
    softdev_tap_start_watchdog(s);
    softdev_tap_set_handlers(s);
    qemu_thread_create(&s->thread, "softdev-tap", softdev_tap_connector, s,
                       QEMU_THREAD_JOINABLE);
    trace_softdev_tap_open(bs, s->conn.features, s->conn.max_data);
    return 0;

fail:
    if (s->watchdog_fd >= 0) {
        close(s->watchdog_fd);
    }
    qemu_bh_delete(s->alert_bh);
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

    assert(QTAILQ_EMPTY(&s->reqs) && !s->lower_inflight);
    softdev_tap_clear_handlers(s);
    s->connected = false;
    softdev_tap_conn_free(&s->conn);
    qemu_bh_delete(s->send_bh);
    qemu_bh_delete(s->attach_bh);
    softdev_tap_stop_watchdog(s);
    close(s->watchdog_fd);
    g_free(s->sbuf.data);
    g_free(s->rbuf.data);
    g_free(s->free_slots);
    softdev_tap_alert_bh(s);        /* what is still pending */
    qemu_bh_delete(s->alert_bh);
    qapi_free_SocketAddress(s->saddr);
    qemu_cond_destroy(&s->cond);
    qemu_mutex_destroy(&s->lock);
}

static void softdev_tap_detach_aio_context(BlockDriverState *bs)
{
    SoftdevTap *s = softdev_opaque(bs);

    qemu_mutex_lock(&s->lock);
    softdev_tap_clear_handlers(s);
    qemu_bh_delete(s->send_bh);
    s->send_bh = NULL;
    s->send_scheduled = false;
    qemu_bh_delete(s->attach_bh);
    s->attach_bh = NULL;
    softdev_tap_stop_watchdog(s);
    qemu_mutex_unlock(&s->lock);
}

static void softdev_tap_attach_aio_context(BlockDriverState *bs,
                                           AioContext *ctx)
{
    SoftdevTap *s = softdev_opaque(bs);

    qemu_mutex_lock(&s->lock);
    s->ctx = ctx;
    s->send_bh = aio_bh_new(ctx, softdev_tap_send_bh, s);
    s->attach_bh = aio_bh_new(ctx, softdev_tap_attach_bh, s);
    softdev_tap_start_watchdog(s);
    softdev_tap_arm_watchdog(s);
    if (s->connected) {
        softdev_tap_set_handlers(s);
        if (s->sbuf.off < s->sbuf.len) {
            s->send_scheduled = true;
            qemu_bh_schedule(s->send_bh);
        }
    }
    qemu_mutex_unlock(&s->lock);
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

    qemu_mutex_lock(&s->lock);
    ti->connected = s->connected;
    ti->disconnects = s->disconnects;
    ti->reconnects = s->reconnects;
    ti->replayed = s->replayed;
    ti->timeouts = s->timeouts;
    ti->outstanding = s->outstanding;
    ti->features = s->conn.features;
    ti->shm = s->conn.shm != NULL;
    ti->ring = s->conn.ring != NULL;
    ti->max_inflight = s->conn.max_inflight;
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
    .co_pre             = softdev_tap_co_pre,
    .co_post            = softdev_tap_co_post,
    .query              = softdev_tap_query,
};

static void softdev_tap_init(void)
{
    softdev_register(&softdev_tap);
}

block_init(softdev_tap_init);
