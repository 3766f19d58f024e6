/*
 * softdev-tap: the socket and the two transports.  The socket carries the
 * handshake, LOWER_REQUESTs and their replies, and KICKs; REQUESTs and
 * REPLYs travel either on it too (stream: encoded into a send buffer
 * that goes out once per event-loop turn, replies parsed from large
 * reads) or through rings in shared memory (ring: a peer KICKs the other
 * only when it said that it sleeps, so under load there is no system call
 * per request, and none at all in an iothread that polls the reply ring).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/defer-call.h"
#include "qemu/main-loop.h"
#include "tap-int.h"
#include "trace/trace-block_softdev.h"

#define SOFTDEV_TAP_READ_CHUNK      (256 * KiB)

/* -- buffers ------------------------------------------------------------ */

/* Room for @n more bytes at the end; returns where they go */
uint8_t *softdev_tap_buf_reserve(SoftdevTapBuf *b, size_t n)
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

void softdev_tap_buf_reset(SoftdevTapBuf *b)
{
    b->off = b->len = 0;
    if (b->cap > 4 * MiB) {
        g_free(b->data);
        b->data = NULL;
        b->cap = 0;
    }
}

/* Where shared-memory slot @slot starts */
uint8_t *softdev_tap_slot(SoftdevTap *s, uint32_t slot)
{
    return s->conn.shm + (size_t)slot * s->conn.max_data;
}

/* -- the socket --------------------------------------------------------- */

static void softdev_tap_read_ready(void *opaque);
static void softdev_tap_write_ready(void *opaque);
static bool softdev_tap_poll(void *opaque);
static void softdev_tap_poll_ready(void *opaque);

void softdev_tap_set_handlers(SoftdevTap *s)
{
    aio_set_fd_handler(s->ctx, s->conn.fd, softdev_tap_read_ready,
                       s->want_write ? softdev_tap_write_ready : NULL,
                       softdev_tap_poll, softdev_tap_poll_ready, s);
}

void softdev_tap_clear_handlers(SoftdevTap *s)
{
    aio_set_fd_handler(s->ctx, s->conn.fd, NULL, NULL, NULL, NULL, NULL);
}

/* Write out the send buffer as far as the socket takes it.  Locked. */
void softdev_tap_flush(SoftdevTap *s)
{
    SoftdevTapBuf *b = &s->sbuf;
    bool want_write = false;

    while (s->conn_state == SOFTDEV_TAP_CONN_CONNECTED && b->off < b->len) {
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
    if (s->conn_state == SOFTDEV_TAP_CONN_CONNECTED &&
        want_write != s->want_write && s->ctx) {
        s->want_write = want_write;
        softdev_tap_set_handlers(s);
    }
}

/*
 * Get the send buffer going.  The first message of an event-loop turn is
 * sent at once, so that the process works on it while we queue the rest
 * (otherwise all requests would travel in lockstep, and each side would
 * wait while the other works); the others go out together when the turn
 * ends, or from the send BH.  Locked.
 */
void softdev_tap_send(SoftdevTap *s)
{
    if (!s->send_bh) {
        return;         /* detached: attach_aio_context sends */
    }
    if (s->turn_depth) {
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

void softdev_tap_send_bh(void *opaque)
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

/* Parse every complete message in the receive buffer.  Locked. */
static const char *softdev_tap_parse(SoftdevTap *s)
{
    SoftdevTapBuf *b = &s->rbuf;
    uint32_t max = s->conn.max_data + SOFTDEV_TAP_REQUEST_SIZE;
    bool ring = s->transport == &softdev_tap_ring;

    while (s->conn_state != SOFTDEV_TAP_CONN_CONNECTING &&
           s->conn_state != SOFTDEV_TAP_CONN_DISCONNECTED &&
           b->len - b->off >= SOFTDEV_TAP_HDR_SIZE) {
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
        if (hdr.type == SOFTDEV_TAP_REPLY && !ring) {
            err = softdev_tap_got_reply(s, &hdr, p);
        } else if (hdr.type == SOFTDEV_TAP_KICK && ring) {
            /* The process cleared our idle word: we look at the ring */
            s->cli_idle = false;
            s->kicks_received++;
            trace_softdev_tap_kick(s->bs, "received");
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

/* Read and parse what the socket has.  Locked. */
static void softdev_tap_read_socket(SoftdevTap *s)
{
    SoftdevTapBuf *b = &s->rbuf;
    size_t total = 0;
    const char *err;

    while ((s->conn_state == SOFTDEV_TAP_CONN_CONNECTED ||
            s->conn_state == SOFTDEV_TAP_CONN_DRAINING) &&
           total < SOFTDEV_TAP_READ_CHUNK) {
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
}

static void softdev_tap_read_ready(void *opaque)
{
    SoftdevTap *s = opaque;

    qemu_mutex_lock(&s->lock);
    softdev_tap_read_socket(s);
    if (s->transport) {
        s->transport->take(s);
    }
    softdev_tap_unlock(s);
}

/*
 * Adaptive polling (an AioContext with poll-max-ns, e.g. an iothread):
 * replies are waiting.  Cheaper than sleeping and being woken, which costs
 * two context switches per batch.
 */
static bool softdev_tap_poll(void *opaque)
{
    SoftdevTap *s = opaque;

    return s->transport && s->transport->ready(s);
}

static void softdev_tap_poll_ready(void *opaque)
{
    SoftdevTap *s = opaque;

    qemu_mutex_lock(&s->lock);
    if (s->transport == &softdev_tap_ring) {
        s->transport->take(s);      /* no system call */
    } else {
        softdev_tap_read_socket(s);
    }
    softdev_tap_unlock(s);
}

/* -- stream: REQUESTs and REPLYs as messages on the socket ---------------- */

static void softdev_tap_stream_post(SoftdevTap *s, SoftdevTapReq *tr,
                                    const SoftdevTapRequest *wire)
{
    SoftdevRequest *req = tr->req;
    bool shm = s->conn.shm != NULL;
    bool data = req->op == SOFTDEV_OP_WRITE && !shm;
    uint8_t *p = softdev_tap_buf_reserve(&s->sbuf, SOFTDEV_TAP_HDR_SIZE +
                                         SOFTDEV_TAP_REQUEST_SIZE +
                                         (data ? req->bytes : 0));
    uint16_t flags = tr->state == SOFTDEV_TAP_REQ_REPLAY ?
                     SOFTDEV_TAP_FLAG_REPLAY : 0;
    size_t len = softdev_tap_encode_request(p, SOFTDEV_TAP_REQUEST, tr->handle,
                                            flags, shm, wire);

    if (data) {
        qemu_iovec_to_buf(req->qiov, req->qiov_offset, p + len, req->bytes);
        len += req->bytes;
    }
    s->sbuf.len += len;
}

/* Replies come on the socket, which its handler reads: nothing else */
static void softdev_tap_stream_take(SoftdevTap *s)
{
}

static bool softdev_tap_stream_ready(SoftdevTap *s)
{
    char c;

    return recv(s->conn.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 1;
}

const SoftdevTapTransport softdev_tap_stream = {
    .name       = "stream",
    .post       = softdev_tap_stream_post,
    .publish    = softdev_tap_send,
    .take       = softdev_tap_stream_take,
    .ready      = softdev_tap_stream_ready,
};

/* -- ring: REQUESTs and REPLYs through rings in shared memory ------------- */

static void softdev_tap_rings_post(SoftdevTap *s, SoftdevTapReq *tr,
                                  const SoftdevTapRequest *wire)
{
    softdev_tap_encode_request(
        softdev_tap_ring_entry(s->conn.ring, s->conn.ring_entries,
                               SOFTDEV_TAP_RING_REQUESTS, s->req_prod++),
        SOFTDEV_TAP_REQUEST, tr->handle,
        tr->state == SOFTDEV_TAP_REQ_REPLAY ? SOFTDEV_TAP_FLAG_REPLAY : 0,
        true, wire);
}

static void softdev_tap_rings_reap(SoftdevTap *s);

/* Ask for a KICK if a request waits for its reply alone.  Locked. */
static void softdev_tap_rings_want_kick(SoftdevTap *s)
{
    if (s->conn_state == SOFTDEV_TAP_CONN_CONNECTED && !s->cli_idle &&
        s->count[SOFTDEV_TAP_REQ_SENT] + s->count[SOFTDEV_TAP_REQ_OVERDUE] >
        s->early_at_process) {
        softdev_tap_rings_reap(s);
    }
}

/*
 * A polling process sees the entries once the producer index moved.
 * Whether a sleeping one needs a KICK takes a full barrier, which waits
 * for the ring's cache lines, and the KICK wakes the process: ask once
 * for a batch of requests.  In a turn, when it ends; else when the
 * caller's defer_call section ends (a device model submits the requests
 * of one notification in one: virtio-blk, xen-block with requests in
 * flight; io_uring and linux-aio complete a batch in one); else from
 * kick_bh, once the event loop is done with what it handles now (see
 * softdev_tap_defer_notify()).  Asked per request, a process that shares
 * our CPU would be woken, and switched to, for each.  Locked.
 */
static void softdev_tap_rings_publish(SoftdevTap *s)
{
    softdev_tap_ring_set_prod(s->conn.ring, SOFTDEV_TAP_RING_REQ_PROD,
                              s->req_prod);
    if (s->turn_depth) {
        s->publish_pending = true;
        return;
    }
    s->notify_deferred = true;          /* softdev_tap_unlock() defers */
    softdev_tap_rings_want_kick(s);
}

/*
 * kick_bh, or at the end of a defer_call section (see
 * softdev_tap_defer_notify()): KICK the process if it sleeps.  It decides no request: the KICK goes out with a plain send()
 * if nothing waits in the send buffer, else behind what waits there
 * (whatever left that unsent, the write handler, the send BH or the
 * turn, sends it); a failed send shows as the connection's end to the
 * socket's read handler; one that does not fit is not needed (the
 * process has KICKs to read, and looks at the ring then).
 */
void softdev_tap_kick_bh(void *opaque)
{
    SoftdevTap *s = opaque;
    SoftdevTapBuf *b = &s->sbuf;

    qemu_mutex_lock(&s->lock);
    if (s->notify_deferred && s->transport == &softdev_tap_ring &&
        s->conn_state == SOFTDEV_TAP_CONN_CONNECTED &&
        softdev_tap_ring_need_kick(s->conn.ring, SOFTDEV_TAP_RING_DEV_IDLE)) {
        uint8_t *p = softdev_tap_buf_reserve(b, SOFTDEV_TAP_HDR_SIZE);
        size_t n = softdev_tap_encode_kick(p);

        s->kicks_sent++;
        trace_softdev_tap_kick(s->bs, "sent");
        if (b->off == b->len) {
            /* The message is tiny: send it now */
            (void)send(s->conn.fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        } else {
            b->len += n;
        }
    }
    s->notify_deferred = false;
    qemu_mutex_unlock(&s->lock);
}

/* Set while softdev_tap_defer_notify() calls defer_call() */
static __thread SoftdevTap *softdev_tap_deferring;

static void softdev_tap_notify_deferred(void *opaque)
{
    SoftdevTap *s = opaque;

    if (softdev_tap_deferring == s) {
        /*
         * Called at once: the caller is in no defer_call section.  Let
         * the event loop finish what it handles (a device model's burst
         * of requests) and KICK once, from kick_bh.
         */
        qemu_mutex_lock(&s->lock);
        if (s->kick_bh) {
            qemu_bh_schedule(s->kick_bh);
        }
        qemu_mutex_unlock(&s->lock);
        return;
    }
    softdev_tap_kick_bh(s);
}

/*
 * Have the process KICKed if it sleeps, once for a batch: when the
 * caller's defer_call section ends, else from kick_bh.  Not from kick_bh
 * always: a BH is scheduled, and run, for every batch, and costs
 * qemu-img bench 4 KiB reads 8 % next to the end of io_uring's
 * completion section.  Not at once without a section: xen-block opens
 * none for a guest's burst that comes when nothing is in flight (a
 * dd bs=1M: 24 requests), and a process that shares QEMU's CPU (dom0
 * under Xen) was then woken, and switched to, once per request.
 */
void softdev_tap_defer_notify(SoftdevTap *s)
{
    softdev_tap_deferring = s;
    defer_call(softdev_tap_notify_deferred, s);
    softdev_tap_deferring = NULL;
}

static const char *softdev_tap_take_reply(void *opaque,
                                          const SoftdevTapHeader *hdr,
                                          const uint8_t *fixed)
{
    return softdev_tap_got_reply(opaque, hdr, fixed);
}

/*
 * Take the replies waiting in the reply ring, until it stays empty after
 * we said that we want a KICK for the next one.  We want none while each
 * request at the process has its early I/O under way: the end of that
 * I/O wakes us, and the request looks at the ring then, which saves the
 * process a system call and us a wake-up per batch.  Locked.
 */
static void softdev_tap_rings_reap(SoftdevTap *s)
{
    const char *err = NULL;

    while (s->conn_state == SOFTDEV_TAP_CONN_CONNECTED ||
           s->conn_state == SOFTDEV_TAP_CONN_DRAINING) {
        uint8_t *ring = s->conn.ring;
        int64_t n = softdev_tap_ring_take(ring, s->conn.ring_entries,
                                          SOFTDEV_TAP_RING_REPLIES,
                                          &s->rep_cons,
                                          softdev_tap_take_reply, s, &err);
        uint32_t at_process;

        if (n < 0) {
            softdev_tap_protocol_error(s, err);
            return;
        }
        if (n > 0) {
            continue;
        }
        at_process = s->count[SOFTDEV_TAP_REQ_SENT] +
                     s->count[SOFTDEV_TAP_REQ_OVERDUE];
        if (at_process == s->early_at_process) {
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
    }
}

static bool softdev_tap_rings_ready(SoftdevTap *s)
{
    /* No system call: a look at the reply ring's producer index */
    return softdev_tap_ring_avail(s->conn.ring, SOFTDEV_TAP_RING_REP_PROD,
                                  s->rep_cons, s->conn.ring_entries) != 0;
}

const SoftdevTapTransport softdev_tap_ring = {
    .name       = "ring",
    .post       = softdev_tap_rings_post,
    .publish    = softdev_tap_rings_publish,
    .take       = softdev_tap_rings_reap,
    .ready      = softdev_tap_rings_ready,
};
