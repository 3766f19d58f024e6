/*
 * libsoftdev connection: its state and life (set up, failed, closed,
 * freed), reading the socket into the receive buffer, and the handshake
 * (HELLO, SHM_SETUP) that picks the transport for the requests: the
 * rings (ring.c) or the byte stream (stream.c).  A failure is recorded
 * once, as a struct softdev_err for the caller of softdev_serve().
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server-internal.h"

/*
 * Set up @c to serve @dev on @fd (-1: c->input feeds it, see
 * ConnInputFn).  0, or -1 with c->err set.
 */
int conn_init(Conn *c, const struct softdev_device *dev, void *handle,
              int fd, const struct softdev_server_options *opts)
{
    struct softdev_server_options o = SOFTDEV_SERVER_OPTIONS_INIT;

    /* Only the fields the caller knows about */
    if (opts) {
        memcpy(&o, opts, opts->size < sizeof(o) ? opts->size : sizeof(o));
    }
    *c = (Conn) {
        .dev = dev, .handle = handle, .fd = fd, .shm_fd = -1,
        .parallel = dev->thread_model == SOFTDEV_THREAD_PARALLEL,
        .no_shm = o.flags & SOFTDEV_SERVER_NO_SHM,
        .no_ring = o.flags & SOFTDEV_SERVER_NO_RING,
        .poll_max_ns = o.poll_ns,
        .on_failure = o.on_failure,
        .opaque = o.opaque,
        .ops = &stream_transport,
        .rcap = HANDSHAKE_BUF,
        .rwant = SOFTDEV_TAP_HDR_SIZE,
    };
    pthread_mutex_init(&c->send_lock, NULL);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->work_cond, NULL);
    if (dev->api_version < 1 || dev->api_version > SOFTDEV_API_VERSION) {
        conn_error(c, EINVAL, "device api_version %d, libsoftdev knows 1 "
                   "to %d", dev->api_version, SOFTDEV_API_VERSION);
        return -1;
    }
    c->rbuf = malloc(c->rcap);
    if (!c->rbuf) {
        conn_error(c, ENOMEM, "out of memory");
        return -1;
    }
    return 0;
}

/* Free what @c holds (not c->err, which goes to the caller) */
void conn_destroy(Conn *c)
{
    while (c->all_reqs) {
        struct softdev_req *r = c->all_reqs;
        c->all_reqs = r->all;
        free(r->buf);
        free(r);
    }
    free(c->hash);
    free(c->slot_busy);
    free(c->rbuf);
    if (c->shm) {
        munmap(c->shm, c->shm_size);
    }
    if (c->shm_fd >= 0) {
        close(c->shm_fd);
    }
    pthread_cond_destroy(&c->work_cond);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->send_lock);
}

bool conn_closed(Conn *c)
{
    return __atomic_load_n(&c->closed, __ATOMIC_ACQUIRE);
}

/* Drop the connection: wake workers and waiters; they see -EIO */
void conn_close(Conn *c)
{
    Waiter *w;

    pthread_mutex_lock(&c->lock);
    if (!c->closed) {
        __atomic_store_n(&c->closed, true, __ATOMIC_RELEASE);
        for (w = c->waiters; w; w = w->next) {
            w->done = true;
            w->result = -EIO;
            pthread_cond_signal(&w->cond);
        }
        c->waiters = NULL;
        pthread_cond_broadcast(&c->work_cond);
        if (c->fd >= 0) {
            shutdown(c->fd, SHUT_RDWR);
        }
    }
    pthread_mutex_unlock(&c->lock);
}

/*
 * The connection failed (@code: errno value, EPROTO for a protocol
 * error): record why, unless it was closed or failed before, and drop it
 */
void conn_error(Conn *c, int code, const char *fmt, ...)
{
    char msg[1024];
    bool first = false;
    va_list ap;

    pthread_mutex_lock(&c->lock);
    if (!c->closed && !c->err) {
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        c->err = softdev_err_new(code, "%s", msg);
        if (!c->err) {
            c->err = softdev_err_new(ENOMEM, "out of memory");
        }
        first = true;
    }
    pthread_mutex_unlock(&c->lock);
    /* Before conn_close() shuts the socket down: the client sees it */
    if (first && c->on_failure) {
        c->on_failure(c->err, c->opaque);
    }
    conn_close(c);
}

/* Take the file descriptors of a received SCM_RIGHTS message */
static const char *got_fds(Conn *c, struct msghdr *msg)
{
    const char *err = NULL;
    struct cmsghdr *cm;

    if (msg->msg_flags & MSG_CTRUNC) {
        err = "too many file descriptors";
    }
    for (cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
        int n, i, *fds = (int *)CMSG_DATA(cm);
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, fds + i, sizeof(fd));
            if (c->phase == PHASE_SHM && c->shm_fd < 0 && !err) {
                c->shm_fd = fd;
            } else {
                err = c->phase == PHASE_SHM ?
                      "more than one file descriptor with SHM_SETUP" :
                      "file descriptor with a message other than SHM_SETUP";
                close(fd);
            }
        }
    }
    return err;
}

/*
 * Busy-poll (--poll-us) up to c->poll_ns for a request or a message; n as
 * read(), -2: ring work.
 */
static ssize_t poll_for_input(Conn *c)
{
    /*
     * Under load the next batch comes within microseconds, and being
     * woken costs far more than that on some machines.  With rings, the
     * requests are in memory; the socket (LOWER_REPLYs) is looked at
     * every 16th turn, or every turn while a callback waits for the node
     * below.  Each turn yields the CPU: where threads outnumber CPUs (the
     * client's, its I/O workers', ours), polling must not take the CPU
     * from the work it waits for; on an idle CPU the yield returns at
     * once.
     */
    uint64_t end = softdev_now_ns() + c->poll_ns;
    unsigned turn = 0;
    ssize_t n = -1;

    errno = EAGAIN;
    do {
        if (c->ring &&
            softdev_tap_ring_avail(c->ring, SOFTDEV_TAP_RING_REQ_PROD,
                                   c->req_cons, c->ring_entries)) {
            return -2;
        }
        if (!c->ring || ++turn % 16 == 0 ||
            __atomic_load_n(&c->waiters, __ATOMIC_ACQUIRE)) {
            n = recv(c->fd, c->rbuf + c->rend, c->rcap - c->rend,
                     MSG_DONTWAIT);
        }
        if (n < 0 && errno == EAGAIN) {
            sched_yield();
        }
    } while (n < 0 && errno == EAGAIN && softdev_now_ns() < end);
    return n;
}

/*
 * The poll window after a sleep of @slept_ns, from @cur and the most the
 * options allow (@max), as QEMU's aio_poll() adapts its own: input that
 * came soon after we gave up polling says that a longer window would
 * have caught it; long sleeps say that the load stopped, and polling
 * would only burn CPU.
 */
uint64_t conn_poll_window(uint64_t cur, uint64_t max, uint64_t slept_ns)
{
    if (slept_ns > max) {
        /* Halve: one late wake-up of a loaded machine is no idle device */
        cur /= POLL_GROW;
        return cur < POLL_START_NS ? 0 : cur;
    }
    if (cur < max) {
        cur = cur ? cur * POLL_GROW : POLL_START_NS;
    }
    return cur < max ? cur : max;
}

/* One read of the socket into the buffer; n as read(), -2: ring work */
static ssize_t read_some(Conn *c)
{
    ssize_t n;

    if (c->fd < 0) {
        n = c->input(c->input_opaque, c->rbuf + c->rend, c->rcap - c->rend);
        return n < 0 ? 0 : n ? n : -2;
    }
    if (c->family == AF_UNIX && c->phase != PHASE_RUN) {
        /* The handshake is where SHM_SETUP brings its memfd */
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(4 * sizeof(int))];
        } ctl;
        struct iovec iov = { c->rbuf + c->rend, c->rcap - c->rend };
        struct msghdr msg = {
            .msg_iov = &iov, .msg_iovlen = 1,
            .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
        };
        n = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC);
        if (n >= 0 && (msg.msg_controllen || msg.msg_flags)) {
            const char *err = got_fds(c, &msg);
            if (err) {
                conn_error(c, EPROTO, "%s", err);
                return -3;
            }
        }
        return n;
    }
    n = -1;
    errno = EAGAIN;
    if (c->poll_ns) {
        n = poll_for_input(c);
    }
    if (n == -1 && errno == EAGAIN) {
        uint64_t start;

        if (c->ring &&
            !softdev_tap_ring_may_sleep(c->ring, SOFTDEV_TAP_RING_DEV_IDLE,
                                        SOFTDEV_TAP_RING_REQ_PROD,
                                        c->req_cons)) {
            return -2;
        }
        /* Until a KICK (or a LOWER_REPLY, or EOF) */
        start = c->poll_max_ns ? softdev_now_ns() : 0;
        n = read(c->fd, c->rbuf + c->rend, c->rcap - c->rend);
        if (c->ring) {
            softdev_tap_ring_busy(c->ring, SOFTDEV_TAP_RING_DEV_IDLE);
        }
        if (c->poll_max_ns) {
            c->poll_ns = conn_poll_window(c->poll_ns, c->poll_max_ns,
                                          softdev_now_ns() - start);
        }
    }
    return n;
}

/*
 * Read what the client sent into the receive buffer.  1: got some (or
 * the request ring has some); 0: EOF; -1: I/O error (errno); -2:
 * protocol error (connection failed).
 */
int conn_fill(Conn *c)
{
    size_t pending = c->rend - c->rstart;
    ssize_t n;

    if (!pending) {
        c->rstart = c->rend = 0;
    } else if (c->rstart + c->rwant > c->rcap ||
               c->rcap - c->rend < READ_ROOM / 4) {
        memmove(c->rbuf, c->rbuf + c->rstart, pending);
        c->rstart = 0;
        c->rend = pending;
    }
    do {
        n = read_some(c);
    } while (n == -1 && errno == EINTR);
    if (n == -2) {
        return 1;
    }
    if (n == -3) {
        return -2;
    }
    if (n > 0) {
        c->rend += n;
        return 1;
    }
    return n == 0 ? 0 : -1;
}

/* Set up the connection for requests after the handshake */
static void start_run(Conn *c)
{
    size_t cap = SOFTDEV_TAP_HDR_SIZE + SOFTDEV_TAP_REQUEST_SIZE +
                 c->max_data + READ_ROOM;
    uint8_t *nbuf = c->rbuf;

    c->hash_bits = 4;
    while ((1u << c->hash_bits) < 2 * c->max_inflight) {
        c->hash_bits++;
    }
    c->hash = calloc(1u << c->hash_bits, sizeof(*c->hash));
    if (cap > c->rcap) {
        nbuf = realloc(c->rbuf, cap);
    }
    if (c->shm) {
        c->slot_busy = calloc(c->max_inflight, 1);
    }
    if (!c->hash || !nbuf || (c->shm && !c->slot_busy)) {
        conn_error(c, ENOMEM, "out of memory");
        return;
    }
    if (cap > c->rcap) {
        c->rbuf = nbuf;
        c->rcap = cap;
    }
    c->ops = c->ring ? &ring_transport : &stream_transport;
    c->phase = PHASE_RUN;
}

/* The features the device asks for, before the client's offer */
static uint64_t device_features(Conn *c)
{
    const struct softdev_device *d = c->dev;
    uint64_t feat = SOFTDEV_TAP_F_LOWER;

    feat |= d->flush ? SOFTDEV_TAP_F_FLUSH : 0;
    /*
     * Safe by default: a device with a write callback gets write-zeroes
     * as WRITEs of zeroes (QEMU writes zeroed buffers when it lacks
     * ZEROES) and its discards are dropped (QEMU completes them without
     * effect when it lacks DISCARD), unless it handles them or lets
     * discards pass.  A device without one forwards them.
     */
    feat |= d->write_zeroes || !d->write ? SOFTDEV_TAP_F_ZEROES : 0;
    feat |= d->discard || !d->write ||
            (d->api_version >= 2 && (d->flags & SOFTDEV_DISCARD_PASSES)) ?
            SOFTDEV_TAP_F_DISCARD : 0;
    feat |= d->write || d->write_zeroes ? SOFTDEV_TAP_F_FUA : 0;
    if (c->family == AF_UNIX && !c->no_shm) {
        feat |= SOFTDEV_TAP_F_SHM;
        if (!c->no_ring) {
            feat |= SOFTDEV_TAP_F_RING;
        }
    }
    if (!d->write || (d->api_version >= 2 &&
                      (d->flags & SOFTDEV_NO_WRITE_DATA))) {
        feat |= SOFTDEV_TAP_F_NO_WRITE_DATA;
    }
    if (d->api_version >= 2 && (d->flags & SOFTDEV_EARLY_READ)) {
        feat |= SOFTDEV_TAP_F_EARLY_READ;
    }
    if (d->api_version >= 2 && (d->flags & SOFTDEV_EARLY_WRITE)) {
        feat |= SOFTDEV_TAP_F_EARLY_WRITE;
    }
    if (d->api_version >= 2 && (d->flags & SOFTDEV_READ_BELOW)) {
        feat |= SOFTDEV_TAP_F_READ_BELOW;
    }
    return feat;
}

static const char *got_hello(Conn *c, const SoftdevTapHeader *h,
                             const uint8_t *payload)
{
    const struct softdev_device *d = c->dev;
    uint8_t out[SOFTDEV_TAP_HDR_SIZE + SOFTDEV_TAP_HELLO_REPLY_SIZE];
    uint32_t want_max = d->max_data ? d->max_data : DEFAULT_MAX_DATA;
    SoftdevTapHello hello, reply = { 0 };
    struct iovec iov = { out, sizeof(out) };
    const char *err;

    if (softdev_tap_decode_hello(h, payload, false, NULL, &hello, &err) < 0) {
        return err;
    }
    if (!d->size && !(hello.features & SOFTDEV_TAP_F_LOWER)) {
        conn_error(c, EINVAL, "the device has no size and there is no node "
                   "below to take it from");
        return NULL;
    }
    if (want_max < SOFTDEV_TAP_MIN_DATA || want_max > SOFTDEV_TAP_MAX_DATA) {
        conn_error(c, EINVAL, "device max_data %u is not within %u..%u",
                   want_max, SOFTDEV_TAP_MIN_DATA, SOFTDEV_TAP_MAX_DATA);
        return NULL;
    }
    /* Bits we do not know are ignored: we accept only our own */
    c->features = device_features(c) & hello.features;
    if (!(c->features & SOFTDEV_TAP_F_SHM)) {
        /* Both need the slots */
        c->features &= ~(SOFTDEV_TAP_F_RING | SOFTDEV_TAP_F_READ_BELOW);
    }
    c->has_lower = hello.features & SOFTDEV_TAP_F_LOWER;
    c->lower_size = c->has_lower ? hello.size : 0;
    c->size = d->size ? d->size : c->lower_size;
    c->max_data = want_max < hello.max_data ? want_max : hello.max_data;
    c->max_inflight = hello.max_inflight;
    if (d->max_inflight && d->max_inflight < hello.max_inflight) {
        c->max_inflight = d->max_inflight;
    }

    reply.version = SOFTDEV_TAP_VERSION;
    reply.device_class = hello.device_class;
    reply.features = c->features;
    reply.size = d->size;
    reply.max_data = c->max_data;
    reply.max_inflight = c->max_inflight < hello.max_inflight ?
                         c->max_inflight : 0;
    softdev_tap_encode_hello(out, true, &reply);
    if (stream_send(c, &iov, 1, true) < 0) {
        return NULL;                /* closed: the handshake sees it */
    }
    c->agreed = reply;
    c->agreed.max_inflight = c->max_inflight;
    if (c->features & SOFTDEV_TAP_F_SHM) {
        c->phase = PHASE_SHM;
    } else {
        start_run(c);
    }
    return NULL;
}

static const char *got_shm(Conn *c, const SoftdevTapHeader *h,
                           const uint8_t *payload)
{
    SoftdevTapShm shm;
    const char *err;
    struct stat st;
    uint64_t len;
    void *p;

    if (softdev_tap_decode_shm(h, payload, &c->agreed, &shm, &err) < 0) {
        return err;
    }
    if (c->shm_fd < 0) {
        return "SHM_SETUP without a file descriptor";
    }
    len = softdev_tap_shm_size(&shm);
    if (fstat(c->shm_fd, &st) < 0) {
        conn_error(c, errno, "fstat of the shared memory: %s",
                   strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        return "shared memory is not a memfd";
    }
    if ((uint64_t)st.st_size < len || len > SIZE_MAX) {
        return "shared memory is smaller than its slots and rings";
    }
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, c->shm_fd, 0);
    if (p == MAP_FAILED) {
        conn_error(c, errno, "cannot map the shared memory (%llu bytes): %s",
                   (unsigned long long)len, strerror(errno));
        return NULL;
    }
    close(c->shm_fd);
    c->shm_fd = -1;
    c->shm = p;
    c->shm_size = len;
    if (shm.ring_entries) {
        c->ring = c->shm + (size_t)shm.slots * shm.slot_size;
        c->ring_entries = shm.ring_entries;
    }
    start_run(c);
    return NULL;
}

/* Handshake messages: HELLO, then SHM_SETUP if shared memory was agreed */
static const char *got_handshake(void *opaque, const SoftdevTapHeader *h,
                                 const uint8_t *payload)
{
    Conn *c = opaque;

    return c->phase == PHASE_HELLO ? got_hello(c, h, payload) :
                                     got_shm(c, h, payload);
}

/* Queue the REQUESTs of @t for running; wake idle workers once */
static void conn_queue(Conn *c, Taken *t)
{
    pthread_mutex_lock(&c->lock);
    if (c->queue_tail) {
        c->queue_tail->next = t->head;
    } else {
        c->queue_head = t->head;
    }
    c->queue_tail = t->tail;
    if (c->idle > 1 && t->count > 1) {
        pthread_cond_broadcast(&c->work_cond);
    } else if (c->idle) {
        pthread_cond_signal(&c->work_cond);
    }
    pthread_mutex_unlock(&c->lock);
}

/*
 * Take in every complete message received: handshake messages here, then
 * what the transport brings.  0, or -1 when the connection failed.
 */
int conn_parse(Conn *c)
{
    Taken t = { .c = c };
    const char *err = NULL;

    if (c->phase == PHASE_HELLO) {
        err = stream_frames(c, PHASE_HELLO, got_handshake, c);
    }
    if (!err && c->phase == PHASE_SHM) {
        err = stream_frames(c, PHASE_SHM, got_handshake, c);
    }
    if (!err && c->phase == PHASE_RUN) {
        err = c->ops->take(c, &t);
    }
    if (t.head) {
        conn_queue(c, &t);
    }
    if (err) {
        conn_error(c, EPROTO, "%s", err);
    }
    return c->err ? -1 : 0;
}

/* Read and parse until the handshake is complete; 0 or -1 */
int conn_handshake(Conn *c)
{
    struct timeval tv = { .tv_sec = HANDSHAKE_TIMEOUT };
    int ret = 0;

    if (c->fd >= 0) {
        setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }
    while (c->phase != PHASE_RUN) {
        int n = conn_fill(c);
        if (n == 0) {
            conn_error(c, ECONNRESET, "client closed the connection during "
                       "the handshake");
        } else if (n == -1) {
            conn_error(c, errno == EAGAIN || errno == EWOULDBLOCK ?
                       ETIMEDOUT : errno, "handshake failed: %s",
                       errno == EAGAIN || errno == EWOULDBLOCK ?
                       (c->phase == PHASE_HELLO ? "no HELLO in time" :
                        "no SHM_SETUP in time") : strerror(errno));
        }
        if (n <= 0 || conn_parse(c) < 0 || conn_closed(c)) {
            ret = -1;
            break;
        }
    }
    tv.tv_sec = 0;
    if (c->fd >= 0) {
        setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }
    return ret;
}
