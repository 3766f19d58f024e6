/*
 * libsoftdev server: serves a struct softdev_device over the tap protocol
 * (docs/specs/softdev-tap.rst).
 *
 * Reading is buffered: one read() takes whatever the client has sent and
 * every complete message in it is parsed (tap-protocol.c plus the
 * connection-state rules).  Replies are gathered and sent with one
 * sendmsg() when there is nothing left to run, so under load one wake-up
 * and two system calls carry many requests.
 *
 * SOFTDEV_THREAD_SERIALIZE runs everything in the calling thread: read a
 * batch, run its callbacks in order, send the replies.  A callback that
 * waits for the node below (softdev_lower_*) reads the socket itself
 * until its LOWER_REPLY arrives, queueing the REQUESTs it finds.
 * SOFTDEV_THREAD_PARALLEL has a reader thread (the caller) and a pool of
 * workers; the reader queues each batch and wakes idle workers once.
 *
 * Over a unix socket the shared-memory data path is accepted when the
 * client offers it: the client's memfd is mapped and callbacks read and
 * write the request's slot directly.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "libsoftdev/protocol/tap-protocol.h"
#include "softdev.h"

#define DEFAULT_MAX_DATA    (1u << 20)
#define MAX_RANGE           (1u << 31)
#define MAX_ERRNO           4095
#define HANDSHAKE_TIMEOUT   10          /* seconds for HELLO, SHM_SETUP */
#define HANDSHAKE_BUF       8192
#define READ_ROOM           (256u << 10) /* buffer beyond the largest msg */
#define OUT_MSGS            64          /* messages gathered for a send */
#define OUT_BYTES           (1u << 20)  /* inline data gathered for a send */
#define SLOW_CALLBACK_NS    50000       /* send at once after a slower one */
#define MSG_BUF             (SOFTDEV_TAP_HDR_SIZE + SOFTDEV_TAP_REQUEST_SIZE)

typedef struct Conn Conn;

/* Messages one thread gathers before sending them with one sendmsg() */
typedef struct Out {
    uint8_t msg[OUT_MSGS][MSG_BUF];         /* header and fixed part */
    struct iovec iov[2 * OUT_MSGS];
    struct softdev_req *done[OUT_MSGS];     /* recycled after the send */
    int nmsg, niov, ndone, nreleased;
    size_t data;
    bool now;                               /* send before running more */
    bool reader;                            /* of the reading thread */
} Out;

struct softdev_req {
    Conn *conn;
    Out *out;                       /* of the thread running it */
    uint64_t handle;
    bool replay;
    SoftdevTapRequest req;
    uint8_t *data;                  /* READ/WRITE data: slot or buf */
    uint8_t *buf;                   /* inline data, kept for reuse */
    size_t buf_size;
    bool fwd_moved;
    bool fwd_data;                  /* data now holds replacement data */
    uint64_t fwd_offset;
    struct softdev_req *next;       /* work queue or free list */
    struct softdev_req *hnext;      /* outstanding handles */
    struct softdev_req *all;        /* every request of the connection */
};

/* A callback waiting in softdev_lower_*() for its LOWER_REPLY */
typedef struct Waiter {
    uint64_t handle;
    SoftdevTapRequest req;
    void *buf;                      /* READ destination */
    bool done;
    int result;
    pthread_cond_t cond;
    struct Waiter *next;
} Waiter;

enum { PHASE_HELLO, PHASE_SHM, PHASE_RUN };

struct Conn {
    const struct softdev_device *dev;
    void *handle;
    int fd;
    int family;                     /* of the socket */
    bool parallel;
    int phase;
    int result;                     /* of softdev_serve_fd() */

    /* Negotiated */
    SoftdevTapHello agreed;         /* HELLO_REPLY, max_inflight resolved */
    uint64_t features;
    bool has_lower;                 /* F_LOWER offered: FORWARD is legal */
    uint64_t size;
    uint64_t lower_size;
    uint32_t max_data;
    uint32_t max_inflight;

    /* Shared memory */
    uint8_t *shm;
    size_t shm_size;
    int shm_fd;                     /* received, not yet mapped */
    uint8_t *slot_busy;

    /* Rings (SOFTDEV_TAP_F_RING), in the shared memory */
    uint8_t *ring;                  /* control block */
    uint32_t ring_entries;
    uint32_t req_cons;              /* the reading thread only */
    uint32_t rep_prod;              /* under send_lock */
    bool unkicked;                  /* replies posted since the last look
                                       at the client's idle word */

    /* Receive buffer: the reading thread only */
    uint8_t *rbuf;
    size_t rcap, rstart, rend, rwant;
    bool absorbed;                  /* absorb() took unparsed input */

    pthread_mutex_t send_lock;      /* one sendmsg() at a time */
    pthread_mutex_t lock;           /* everything below */
    pthread_cond_t work_cond;
    bool closed;
    int idle;                       /* workers waiting for work */
    struct softdev_req *queue_head, *queue_tail;
    struct softdev_req **hash;      /* outstanding REQUESTs by handle */
    unsigned hash_bits;
    uint32_t outstanding;
    struct softdev_req *free_reqs;
    struct softdev_req *all_reqs;
    Waiter *waiters;
    uint64_t next_lower_handle;
};

static const struct softdev_device *current_dev;
static bool no_shm;                 /* --no-shm */
static bool no_ring;                /* --no-ring */
static uint64_t poll_ns;            /* --poll-us */

void softdev_error(const char *fmt, ...)
{
    const struct softdev_device *dev = current_dev;
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s\n", dev && dev->name ? dev->name : "softdev",
            msg);
}

/* In busy-wait loops: let a sibling hyperthread (or the host) run */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

/* -- connection state -------------------------------------------------- */

static bool conn_closed(Conn *c)
{
    return __atomic_load_n(&c->closed, __ATOMIC_ACQUIRE);
}

/* Drop the connection: wake workers and waiters; they see -EIO */
static void conn_close(Conn *c)
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
        shutdown(c->fd, SHUT_RDWR);
    }
    pthread_mutex_unlock(&c->lock);
}

/* A protocol error: report it and drop the connection */
static void conn_fail(Conn *c, const char *err)
{
    if (!conn_closed(c)) {
        softdev_error("protocol error: %s; dropping the connection", err);
    }
    c->result = -1;
    conn_close(c);
}

static struct softdev_req **hash_slot(Conn *c, uint64_t handle)
{
    return &c->hash[(handle * 0x9e3779b97f4a7c15ull) >> (64 - c->hash_bits)];
}

/* Called with c->lock held */
static struct softdev_req *find_outstanding(Conn *c, uint64_t handle)
{
    struct softdev_req *r;

    for (r = *hash_slot(c, handle); r && r->handle != handle; r = r->hnext) {
        /* search */
    }
    return r;
}

/* Forget an outstanding REQUEST (its reply is about to be sent) */
static void release(Conn *c, struct softdev_req *r)
{
    struct softdev_req **p;

    for (p = hash_slot(c, r->handle); *p; p = &(*p)->hnext) {
        if (*p == r) {
            *p = r->hnext;
            c->outstanding--;
            if (c->slot_busy) {
                c->slot_busy[r->req.slot] = 0;
            }
            return;
        }
    }
}

/* -- sending ----------------------------------------------------------- */

/*
 * The reading thread is blocked sending: take in what the client sends
 * meanwhile, so that a client which writes before it reads cannot block
 * us both.  The client has at most max_inflight requests outstanding, so
 * the buffer stays bounded.  >0: took some; 0: cannot take more; -1: EOF
 * or error (stop trying).
 */
static int absorb(Conn *c)
{
    size_t limit = (size_t)(c->max_inflight + 2) *
                   (SOFTDEV_TAP_HDR_SIZE + SOFTDEV_TAP_REQUEST_SIZE +
                    c->max_data) + READ_ROOM;
    ssize_t n;

    if (c->rend == c->rcap && c->rstart) {
        memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
        c->rend -= c->rstart;
        c->rstart = 0;
    }
    if (c->rend == c->rcap) {
        size_t cap = c->rcap * 2 < limit ? c->rcap * 2 : limit;
        uint8_t *nbuf;
        if (cap <= c->rcap || !(nbuf = realloc(c->rbuf, cap))) {
            return 0;
        }
        c->rbuf = nbuf;
        c->rcap = cap;
    }
    n = read(c->fd, c->rbuf + c->rend, c->rcap - c->rend);
    if (n > 0) {
        c->rend += n;
        c->absorbed = true;
        return 1;
    }
    return n < 0 && (errno == EINTR || errno == EAGAIN) ? 1 : -1;
}

/*
 * Send all of @iov; 0, or -1 (the connection is then closed).  @reader:
 * the caller is the thread that reads the socket.
 */
static int send_iov(Conn *c, struct iovec *iov, int niov, bool reader)
{
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = niov };
    bool may_read = reader && c->phase == PHASE_RUN;
    int ret = 0;

    pthread_mutex_lock(&c->send_lock);
    if (conn_closed(c)) {
        ret = -1;
        goto out;
    }
    while (msg.msg_iovlen) {
        ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL |
                            (may_read ? MSG_DONTWAIT : 0));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && may_read) {
            struct pollfd pfd = { .fd = c->fd, .events = POLLOUT | POLLIN };
            if (poll(&pfd, 1, -1) < 0 && errno != EINTR) {
                ret = -1;
                break;
            }
            if ((pfd.revents & POLLIN) && absorb(c) <= 0) {
                may_read = false;   /* full or EOF: just wait to send */
            }
            continue;
        }
        if (n < 0) {
            ret = -1;
            break;
        }
        while (msg.msg_iovlen && (size_t)n >= msg.msg_iov->iov_len) {
            n -= msg.msg_iov->iov_len;
            msg.msg_iov++;
            msg.msg_iovlen--;
        }
        if (msg.msg_iovlen) {
            msg.msg_iov->iov_base = (uint8_t *)msg.msg_iov->iov_base + n;
            msg.msg_iov->iov_len -= n;
        }
    }
out:
    pthread_mutex_unlock(&c->send_lock);
    if (ret < 0 && !conn_closed(c)) {
        if (errno != EPIPE && errno != ECONNRESET) {
            softdev_error("send failed: %s", strerror(errno));
        }
        conn_close(c);
    }
    return ret;
}

/* Called with c->lock held: forget the handles of gathered replies */
static void out_release(Conn *c, Out *o)
{
    for (; o->nreleased < o->ndone; o->nreleased++) {
        release(c, o->done[o->nreleased]);
    }
}

/* Send what @o gathered and recycle its requests */
static void out_flush(Conn *c, Out *o)
{
    int i;

    if (o->nmsg) {
        if (o->nreleased < o->ndone) {
            pthread_mutex_lock(&c->lock);
            out_release(c, o);
            pthread_mutex_unlock(&c->lock);
        }
        send_iov(c, o->iov, o->niov, o->reader);
    }
    if (o->ndone) {
        pthread_mutex_lock(&c->lock);
        out_release(c, o);
        for (i = 0; i < o->ndone; i++) {
            o->done[i]->next = c->free_reqs;
            c->free_reqs = o->done[i];
        }
        pthread_mutex_unlock(&c->lock);
    }
    o->nmsg = o->niov = o->ndone = o->nreleased = 0;
    o->data = 0;
    o->now = false;
}

static bool out_full(const Out *o)
{
    return o->nmsg == OUT_MSGS || o->data >= OUT_BYTES || o->now;
}

/*
 * Add the message whose header and fixed part (@len bytes) were encoded
 * in out_next(@o), followed by @dlen bytes of @data.  @r is recycled after
 * the send.  The caller sends when out_full().
 */
static void out_push(Out *o, size_t len, const void *data, size_t dlen,
                     struct softdev_req *r)
{
    uint8_t *m = o->msg[o->nmsg++];
    struct iovec *last = o->niov ? &o->iov[o->niov - 1] : NULL;

    if (last && (uint8_t *)last->iov_base + last->iov_len == m) {
        last->iov_len += len;       /* headers are contiguous */
    } else {
        o->iov[o->niov++] = (struct iovec){ m, len };
    }
    if (dlen) {
        o->iov[o->niov++] = (struct iovec){ (void *)data, dlen };
        o->data += dlen;
    }
    if (r) {
        o->done[o->ndone++] = r;
    }
}

static uint8_t *out_next(Conn *c, Out *o)
{
    if (o->nmsg == OUT_MSGS) {
        out_flush(c, o);
    }
    return o->msg[o->nmsg];
}

/* Drop what @o gathered (the connection is gone) */
static void out_discard(Conn *c, Out *o)
{
    o->nmsg = o->niov = 0;
    out_flush(c, o);
}

/* -- lower requests ---------------------------------------------------- */

static int conn_fill(Conn *c);
static int conn_parse(Conn *c);
static void ring_kick(Conn *c, bool reader);

static int lower_one(struct softdev_req *r, uint16_t op, uint64_t off,
                     uint64_t len, const void *wdata, void *rbuf,
                     uint32_t flags)
{
    Conn *c = r->conn;
    Waiter w = {
        .req = { .op = op, .req_flags = flags, .offset = off, .bytes = len },
        .buf = rbuf,
    };
    uint8_t *m;
    int ret;

    if (!(c->features & SOFTDEV_TAP_F_LOWER)) {
        softdev_error("lower request but there is no node below");
        return -EINVAL;
    }
    if (off > c->lower_size || len > c->lower_size - off) {
        softdev_error("lower request beyond the end of the node below");
        return -EINVAL;
    }
    pthread_cond_init(&w.cond, NULL);
    pthread_mutex_lock(&c->lock);
    if (c->closed) {
        pthread_mutex_unlock(&c->lock);
        pthread_cond_destroy(&w.cond);
        return -EIO;
    }
    w.handle = ++c->next_lower_handle;
    w.next = c->waiters;
    c->waiters = &w;
    out_release(c, r->out);
    pthread_mutex_unlock(&c->lock);

    /* Send it with the replies this thread gathered (or posted) so far */
    if (c->ring) {
        ring_kick(c, r->out->reader);
    }
    m = out_next(c, r->out);
    out_push(r->out, softdev_tap_encode_request(
                 m, SOFTDEV_TAP_LOWER_REQUEST, w.handle, 0, false, &w.req),
             wdata, op == SOFTDEV_TAP_OP_WRITE ? len : 0, NULL);
    out_flush(c, r->out);

    /* On a failed send, conn_close() has completed us with -EIO */
    if (!c->parallel) {
        /* We are the reader too: read until our reply is in */
        while (!__atomic_load_n(&w.done, __ATOMIC_ACQUIRE)) {
            if (!c->absorbed && conn_fill(c) <= 0) {
                conn_close(c);
                break;
            }
            c->absorbed = false;
            conn_parse(c);
        }
    }
    pthread_mutex_lock(&c->lock);
    while (!w.done) {
        pthread_cond_wait(&w.cond, &c->lock);
    }
    ret = w.result;
    pthread_mutex_unlock(&c->lock);
    pthread_cond_destroy(&w.cond);
    return ret;
}

/* Split [off, off + len) into pieces of at most @step bytes */
static int lower_chunked(struct softdev_req *r, uint16_t op, uint64_t off,
                         uint64_t len, const uint8_t *wdata, uint8_t *rbuf,
                         uint32_t flags, uint64_t step)
{
    uint64_t pos;
    int ret;

    for (pos = 0; pos < len; pos += step) {
        uint64_t n = len - pos < step ? len - pos : step;
        ret = lower_one(r, op, off + pos, n, wdata ? wdata + pos : NULL,
                        rbuf ? rbuf + pos : NULL, flags);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

int softdev_lower_read(struct softdev_req *r, void *buf, uint32_t len,
                       uint64_t off)
{
    return lower_chunked(r, SOFTDEV_TAP_OP_READ, off, len, NULL, buf, 0,
                         r->conn->max_data);
}

int softdev_lower_write(struct softdev_req *r, const void *buf, uint32_t len,
                        uint64_t off, uint32_t flags)
{
    return lower_chunked(r, SOFTDEV_TAP_OP_WRITE, off, len, buf, NULL,
                         flags & SOFTDEV_TAP_REQ_FUA, r->conn->max_data);
}

int softdev_lower_flush(struct softdev_req *r)
{
    return lower_one(r, SOFTDEV_TAP_OP_FLUSH, 0, 0, NULL, NULL, 0);
}

int softdev_lower_discard(struct softdev_req *r, uint32_t len, uint64_t off)
{
    return lower_chunked(r, SOFTDEV_TAP_OP_DISCARD, off, len, NULL, NULL, 0,
                         MAX_RANGE);
}

int softdev_lower_write_zeroes(struct softdev_req *r, uint32_t len,
                               uint64_t off, uint32_t flags)
{
    return lower_chunked(r, SOFTDEV_TAP_OP_WRITE_ZEROES, off, len, NULL,
                         NULL, flags & SOFTDEV_TAP_REQ_ALL, MAX_RANGE);
}

uint64_t softdev_lower_size(struct softdev_req *r)
{
    return r->conn->lower_size;
}

int softdev_req_is_replay(struct softdev_req *r)
{
    return r->replay;
}

int softdev_forward_to(struct softdev_req *r, uint64_t off, const void *data)
{
    r->fwd_moved = true;
    r->fwd_offset = off;
    if (data) {
        if (r->req.op != SOFTDEV_TAP_OP_WRITE) {
            softdev_error("forward with data of a non-write request");
            return -EINVAL;
        }
        /* Into the request's own buffer or slot, which may hold @data */
        memmove(r->data, data, r->req.bytes);
        r->fwd_data = true;
    }
    return SOFTDEV_FORWARD;
}

/* -- running requests -------------------------------------------------- */

static const char *const op_names[] = {
    "READ", "WRITE", "WRITE_ZEROES", "DISCARD", "FLUSH",
};

static bool has_callback(const struct softdev_device *d, uint16_t op)
{
    switch (op) {
    case SOFTDEV_TAP_OP_READ:
        return d->read;
    case SOFTDEV_TAP_OP_WRITE:
        return d->write;
    case SOFTDEV_TAP_OP_FLUSH:
        return d->flush;
    case SOFTDEV_TAP_OP_DISCARD:
        return d->discard;
    default:
        return d->write_zeroes;
    }
}

static int call_device(Conn *c, struct softdev_req *r)
{
    const struct softdev_device *d = c->dev;
    const SoftdevTapRequest *q = &r->req;

    switch (q->op) {
    case SOFTDEV_TAP_OP_READ:
        return d->read ? d->read(c->handle, r, r->data, q->bytes, q->offset) :
                         SOFTDEV_FORWARD;
    case SOFTDEV_TAP_OP_WRITE:
        return d->write ? d->write(c->handle, r, r->data, q->bytes,
                                   q->offset, q->req_flags) :
                          SOFTDEV_FORWARD;
    case SOFTDEV_TAP_OP_FLUSH:
        return d->flush ? d->flush(c->handle, r) : SOFTDEV_FORWARD;
    case SOFTDEV_TAP_OP_DISCARD:
        return d->discard ? d->discard(c->handle, r, q->bytes, q->offset) :
                            SOFTDEV_FORWARD;
    default:
        return d->write_zeroes ?
               d->write_zeroes(c->handle, r, q->bytes, q->offset,
                               q->req_flags) :
               SOFTDEV_FORWARD;
    }
}

/*
 * KICK the client if replies were posted since we last looked and it
 * waits for one.  Called when a thread runs out of queued requests (or
 * after a slow callback), so that the client, if it sleeps, is woken
 * once for what a batch of requests gave, not once per reply.  @reader:
 * we are the reading thread.
 */
static void ring_kick(Conn *c, bool reader)
{
    bool kick = false;

    pthread_mutex_lock(&c->send_lock);
    if (__atomic_load_n(&c->unkicked, __ATOMIC_RELAXED) && !conn_closed(c)) {
        __atomic_store_n(&c->unkicked, false, __ATOMIC_RELAXED);
        kick = softdev_tap_ring_publish(c->ring, SOFTDEV_TAP_RING_REP_PROD,
                                        c->rep_prod,
                                        SOFTDEV_TAP_RING_CLI_IDLE);
    }
    pthread_mutex_unlock(&c->send_lock);
    if (kick) {
        uint8_t m[SOFTDEV_TAP_HDR_SIZE];
        struct iovec iov = { m, softdev_tap_encode_kick(m) };

        send_iov(c, &iov, 1, reader);
    }
}

/*
 * Post the REPLY @rep of @r in the reply ring, where the client sees it
 * at once if it polls; ring_kick() wakes it if it sleeps.  @r is
 * recycled first.
 */
static void ring_reply(Conn *c, struct softdev_req *r,
                       const SoftdevTapReply *rep)
{
    uint64_t handle = r->handle;

    /*
     * The client may reuse the handle and slot once it sees the reply:
     * forget them first.  @r is not used after this.
     */
    pthread_mutex_lock(&c->lock);
    release(c, r);
    r->next = c->free_reqs;
    c->free_reqs = r;
    pthread_mutex_unlock(&c->lock);

    pthread_mutex_lock(&c->send_lock);
    if (!conn_closed(c)) {
        uint8_t *entry = softdev_tap_ring_entry(c->ring, c->ring_entries,
                                                SOFTDEV_TAP_RING_REPLIES,
                                                c->rep_prod++);

        softdev_tap_encode_reply(entry, SOFTDEV_TAP_REPLY, handle, true, rep);
        __atomic_store_n(softdev_tap_ring_word(c->ring,
                                               SOFTDEV_TAP_RING_REP_PROD),
                         c->rep_prod, __ATOMIC_RELEASE);
        __atomic_store_n(&c->unkicked, true, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&c->send_lock);
}

/* Run @r's callback and add its REPLY to @o (not sent yet) */
static void run_request(Conn *c, Out *o, struct softdev_req *r)
{
    const SoftdevTapRequest *q = &r->req;
    const char *op = op_names[q->op];
    bool timed = has_callback(c->dev, q->op);
    SoftdevTapReply rep = { 0 };
    uint64_t t0 = timed ? now_ns() : 0;
    bool inline_data = !c->shm;
    uint8_t *m;
    int rc;

    r->out = o;
    rc = call_device(c, r);
    if (timed && now_ns() - t0 > SLOW_CALLBACK_NS) {
        o->now = true;      /* batching would only delay this reply */
    }

    if (rc == SOFTDEV_FORWARD) {
        uint64_t off = r->fwd_moved ? r->fwd_offset : q->offset;
        if (!c->has_lower) {
            /* Nothing below: do what the client does for declined ops */
            if (q->op == SOFTDEV_TAP_OP_FLUSH) {
                rc = 0;
            } else if (q->op != SOFTDEV_TAP_OP_READ &&
                       q->op != SOFTDEV_TAP_OP_WRITE) {
                rc = -ENOTSUP;
            } else {
                softdev_error("cannot forward a %s: there is no node below",
                              op);
                rc = -EIO;
            }
        } else if (off > c->lower_size || q->bytes > c->lower_size - off) {
            softdev_error("%s forwarded beyond the end of the node below",
                          op);
            rc = -EIO;
        } else {
            rep.action = SOFTDEV_TAP_FORWARD;
            rep.offset = off;
            if (r->fwd_data) {
                rep.bytes = q->bytes;
            }
        }
    } else if (rc == 0) {
        if (q->op == SOFTDEV_TAP_OP_READ) {
            rep.bytes = q->bytes;
        }
    } else if (rc < 0 && rc >= -MAX_ERRNO) {
        /* complete with -errno */
    } else {
        softdev_error("%s callback returned %d; completing with -EIO", op, rc);
        rc = -EIO;
    }
    if (rep.action != SOFTDEV_TAP_FORWARD) {
        rep.result = rc;
    }
    if (q->op == SOFTDEV_TAP_OP_WRITE &&
        (c->features & SOFTDEV_TAP_F_EARLY_WRITE) &&
        !softdev_tap_early_write_kept(&rep, q->offset)) {
        /* The client may have written it below already */
        softdev_error("WRITE callback completed, moved or changed a write "
                      "although the device declared SOFTDEV_EARLY_WRITE; "
                      "failing it with -EIO");
        rep = (SoftdevTapReply) { .result = -EIO };
    }
    if (c->ring) {
        /* Posted at once: no system call, so nothing to gather for */
        ring_reply(c, r, &rep);
        if (o->now) {
            o->now = false;
            ring_kick(c, o->reader);
        }
        return;
    }
    m = out_next(c, o);
    out_push(o, softdev_tap_encode_reply(m, SOFTDEV_TAP_REPLY, r->handle,
                                         !inline_data, &rep),
             r->data, inline_data ? rep.bytes : 0, r);
}

/* Take the next queued request; called with c->lock held */
static struct softdev_req *dequeue(Conn *c)
{
    struct softdev_req *r = c->queue_head;

    if (r) {
        c->queue_head = r->next;
        if (!c->queue_head) {
            c->queue_tail = NULL;
        }
    }
    return r;
}

static void *worker(void *opaque)
{
    Conn *c = opaque;
    Out *o = calloc(1, sizeof(*o));
    struct softdev_req *r;

    if (!o) {
        softdev_error("out of memory");
        conn_close(c);
        return NULL;
    }
    pthread_mutex_lock(&c->lock);
    for (;;) {
        out_release(c, o);
        if (c->closed) {
            /* unstarted requests: the client sends them again */
            break;
        }
        if (out_full(o) || (o->nmsg && !c->queue_head)) {
            pthread_mutex_unlock(&c->lock);
            out_flush(c, o);
            pthread_mutex_lock(&c->lock);
        } else if ((r = dequeue(c))) {
            pthread_mutex_unlock(&c->lock);
            run_request(c, o, r);
            pthread_mutex_lock(&c->lock);
        } else if (c->ring &&
                   __atomic_load_n(&c->unkicked, __ATOMIC_RELAXED)) {
            pthread_mutex_unlock(&c->lock);
            ring_kick(c, false);
            pthread_mutex_lock(&c->lock);
        } else {
            c->idle++;
            pthread_cond_wait(&c->work_cond, &c->lock);
            c->idle--;
        }
    }
    pthread_mutex_unlock(&c->lock);
    out_discard(c, o);
    free(o);
    return NULL;
}

/* -- reading ----------------------------------------------------------- */

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
 * Read what the client sent into the receive buffer.  1: got some; 0:
 * EOF; -1: I/O error (errno); -2: protocol error (connection failed).
 */
static int conn_fill(Conn *c)
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
    for (;;) {
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
                    conn_fail(c, err);
                    return -2;
                }
            }
        } else {
            n = -1;
            errno = EAGAIN;
            if (poll_ns) {
                /*
                 * Busy-poll a while before sleeping: under load the next
                 * batch comes within microseconds, and being woken costs
                 * far more than that on some machines.  With rings, the
                 * requests are in memory; the socket (LOWER_REPLYs) is
                 * looked at every 64th turn, or every turn while a
                 * callback waits for the node below.
                 */
                uint64_t end = now_ns() + poll_ns;
                unsigned turn = 0;

                do {
                    if (c->ring &&
                        softdev_tap_ring_avail(c->ring,
                                               SOFTDEV_TAP_RING_REQ_PROD,
                                               c->req_cons,
                                               c->ring_entries)) {
                        return 1;
                    }
                    if (!c->ring || ++turn % 64 == 0 ||
                        __atomic_load_n(&c->waiters, __ATOMIC_ACQUIRE)) {
                        n = recv(c->fd, c->rbuf + c->rend,
                                 c->rcap - c->rend, MSG_DONTWAIT);
                    }
                    cpu_relax();
                } while (n < 0 && errno == EAGAIN && now_ns() < end);
            }
            if (n < 0 && errno == EAGAIN) {
                if (c->ring &&
                    !softdev_tap_ring_may_sleep(c->ring,
                                                SOFTDEV_TAP_RING_DEV_IDLE,
                                                SOFTDEV_TAP_RING_REQ_PROD,
                                                c->req_cons)) {
                    return 1;
                }
                /* Until a KICK (or a LOWER_REPLY, or EOF) */
                n = read(c->fd, c->rbuf + c->rend, c->rcap - c->rend);
                if (c->ring) {
                    softdev_tap_ring_busy(c->ring, SOFTDEV_TAP_RING_DEV_IDLE);
                }
            }
        }
        if (n >= 0 || errno != EINTR) {
            break;
        }
    }
    if (n > 0) {
        c->rend += n;
        return 1;
    }
    return n == 0 ? 0 : -1;
}

/* Set up the connection for requests after the handshake */
static const char *start_run(Conn *c)
{
    size_t cap = SOFTDEV_TAP_HDR_SIZE + SOFTDEV_TAP_REQUEST_SIZE +
                 c->max_data + READ_ROOM;
    uint8_t *nbuf;

    c->hash_bits = 4;
    while ((1u << c->hash_bits) < 2 * c->max_inflight) {
        c->hash_bits++;
    }
    c->hash = calloc(1u << c->hash_bits, sizeof(*c->hash));
    nbuf = realloc(c->rbuf, cap);
    if (!c->hash || !nbuf) {
        return "out of memory";
    }
    c->rbuf = nbuf;
    c->rcap = cap;
    if (c->shm) {
        c->slot_busy = calloc(c->max_inflight, 1);
        if (!c->slot_busy) {
            return "out of memory";
        }
    }
    c->phase = PHASE_RUN;
    return NULL;
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
    uint64_t feat = 0;

    if (softdev_tap_decode_hello(h, payload, false, NULL, &hello, &err) < 0) {
        return err;
    }
    if (!d->size && !(hello.features & SOFTDEV_TAP_F_LOWER)) {
        softdev_error("the device has no size and there is no node below "
                      "to take it from");
        return "";
    }
    if (want_max < SOFTDEV_TAP_MIN_DATA || want_max > SOFTDEV_TAP_MAX_DATA) {
        softdev_error("device max_data %u is not within %u..%u", want_max,
                      SOFTDEV_TAP_MIN_DATA, SOFTDEV_TAP_MAX_DATA);
        return "";
    }
    feat |= d->flush ? SOFTDEV_TAP_F_FLUSH : 0;
    feat |= d->discard ? SOFTDEV_TAP_F_DISCARD : 0;
    feat |= d->write_zeroes ? SOFTDEV_TAP_F_ZEROES : 0;
    feat |= d->write || d->write_zeroes ? SOFTDEV_TAP_F_FUA : 0;
    feat |= SOFTDEV_TAP_F_LOWER;
    if (c->family == AF_UNIX && !no_shm) {
        feat |= SOFTDEV_TAP_F_SHM;
        if (!no_ring) {
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
    /* Bits we do not know are ignored: we accept only our own */
    c->features = feat & hello.features;
    if (!(c->features & SOFTDEV_TAP_F_SHM)) {
        c->features &= ~SOFTDEV_TAP_F_RING;
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
    if (send_iov(c, &iov, 1, true) < 0) {
        return "";
    }
    c->agreed = reply;
    c->agreed.max_inflight = c->max_inflight;
    if (c->features & SOFTDEV_TAP_F_SHM) {
        c->phase = PHASE_SHM;
        return NULL;
    }
    return start_run(c);
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
        softdev_error("fstat of the shared memory: %s", strerror(errno));
        return "";
    }
    if (!S_ISREG(st.st_mode)) {
        return "shared memory is not a memfd";
    }
    if ((uint64_t)st.st_size < len || len > SIZE_MAX) {
        return "shared memory is smaller than its slots and rings";
    }
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, c->shm_fd, 0);
    if (p == MAP_FAILED) {
        softdev_error("cannot map the shared memory (%llu bytes): %s",
                      (unsigned long long)len, strerror(errno));
        return "";
    }
    close(c->shm_fd);
    c->shm_fd = -1;
    c->shm = p;
    c->shm_size = len;
    if (shm.ring_entries) {
        c->ring = c->shm + (size_t)shm.slots * shm.slot_size;
        c->ring_entries = shm.ring_entries;
    }
    return start_run(c);
}

/* Handle one REQUEST; returns an error message or NULL, and the request */
static const char *got_request(Conn *c, const SoftdevTapHeader *h,
                               const uint8_t *payload,
                               struct softdev_req **rp)
{
    struct softdev_req *r, **slot;
    const char *err = NULL;
    SoftdevTapRequest q;
    uint64_t gate;

    if (softdev_tap_decode_request(h, payload, c->size, c->max_data,
                                   c->shm ? c->max_inflight : 0, &q,
                                   &err) < 0) {
        return err;
    }
    gate = softdev_tap_op_feature(q.op);
    if (gate && !(c->features & gate)) {
        return "request for an op whose feature was not negotiated";
    }
    if ((q.req_flags & SOFTDEV_TAP_REQ_FUA) &&
        !(c->features & SOFTDEV_TAP_F_FUA)) {
        return "FUA but SOFTDEV_TAP_F_FUA was not negotiated";
    }

    pthread_mutex_lock(&c->lock);
    if (c->outstanding >= c->max_inflight) {
        err = "more requests outstanding than max_inflight";
    } else if (find_outstanding(c, h->handle)) {
        err = "REQUEST handle is already outstanding";
    } else if (c->shm && c->slot_busy[q.slot]) {
        err = "REQUEST slot is in use by an outstanding request";
    } else if ((r = c->free_reqs)) {
        c->free_reqs = r->next;
    } else if ((r = calloc(1, sizeof(*r)))) {
        r->conn = c;
        r->all = c->all_reqs;
        c->all_reqs = r;
    } else {
        err = "out of memory";
    }
    if (err) {
        pthread_mutex_unlock(&c->lock);
        return err;
    }
    r->handle = h->handle;
    slot = hash_slot(c, h->handle);
    r->hnext = *slot;
    *slot = r;
    c->outstanding++;
    if (c->shm) {
        c->slot_busy[q.slot] = 1;
    }
    pthread_mutex_unlock(&c->lock);

    r->req = q;
    r->replay = h->flags & SOFTDEV_TAP_FLAG_REPLAY;
    r->fwd_moved = r->fwd_data = false;
    r->next = NULL;
    r->data = NULL;
    if (c->shm) {
        r->data = c->shm + (size_t)q.slot * c->max_data;
    } else if (q.op == SOFTDEV_TAP_OP_READ || q.op == SOFTDEV_TAP_OP_WRITE) {
        if (r->buf_size < q.bytes) {
            /* Requests are outstanding, so this one stays ours */
            size_t size = (q.bytes + 65535) & ~(size_t)65535;
            uint8_t *nbuf = realloc(r->buf, size);
            if (!nbuf) {
                *rp = r;
                return "out of memory";
            }
            r->buf = nbuf;
            r->buf_size = size;
        }
        r->data = r->buf;
        if (q.op == SOFTDEV_TAP_OP_WRITE) {
            memcpy(r->buf, payload + SOFTDEV_TAP_REQUEST_SIZE, q.bytes);
        }
    }
    *rp = r;
    return NULL;
}

/* Handle one LOWER_REPLY; returns an error message or NULL */
static const char *got_lower_reply(Conn *c, const SoftdevTapHeader *h,
                                   const uint8_t *payload)
{
    const char *err = NULL;
    SoftdevTapReply rep;
    Waiter **p, *w;

    pthread_mutex_lock(&c->lock);
    for (p = &c->waiters; *p && (*p)->handle != h->handle; p = &(*p)->next) {
        /* search */
    }
    w = *p;
    if (!w) {
        err = "LOWER_REPLY to a handle that is not outstanding";
    } else if (softdev_tap_decode_reply(h, payload, &w->req, false, false,
                                        &rep, &err) == 0) {
        if (rep.bytes) {
            memcpy(w->buf, payload + SOFTDEV_TAP_LOWER_REPLY_SIZE,
                   rep.bytes);
        }
        *p = w->next;
        w->result = rep.result;
        __atomic_store_n(&w->done, true, __ATOMIC_RELEASE);
        pthread_cond_signal(&w->cond);
    }
    pthread_mutex_unlock(&c->lock);
    return err;
}

/* A list of REQUESTs taken in, for the workers' queue */
typedef struct Taken {
    Conn *c;
    struct softdev_req *head, *tail;
    int count;
} Taken;

static const char *take_request(void *opaque, const SoftdevTapHeader *h,
                                const uint8_t *fixed)
{
    Taken *t = opaque;
    struct softdev_req *r = NULL;
    const char *err = got_request(t->c, h, fixed, &r);

    if (!err) {
        if (t->tail) {
            t->tail->next = r;
        } else {
            t->head = r;
        }
        t->tail = r;
        t->count++;
    }
    return err;
}

/*
 * Parse every complete message in the receive buffer.  New REQUESTs are
 * queued and idle workers woken once.  0, or -1 after a protocol error
 * (the connection is failed).
 */
static int conn_parse(Conn *c)
{
    Taken t = { .c = c };
    const char *err = NULL;

    while (!err && c->rend - c->rstart >= SOFTDEV_TAP_HDR_SIZE) {
        uint32_t max = c->phase == PHASE_RUN ?
                       c->max_data + SOFTDEV_TAP_REQUEST_SIZE :
                       SOFTDEV_TAP_HANDSHAKE_MAX;
        const uint8_t *p = c->rbuf + c->rstart;
        SoftdevTapHeader h;
        size_t len;

        if (softdev_tap_decode_header(p, max, &h, &err) < 0) {
            break;
        }
        len = SOFTDEV_TAP_HDR_SIZE + h.length;
        if (c->rend - c->rstart < len) {
            c->rwant = len;
            break;
        }
        p += SOFTDEV_TAP_HDR_SIZE;
        c->rstart += len;
        if (c->phase == PHASE_HELLO) {
            err = got_hello(c, &h, p);
        } else if (c->phase == PHASE_SHM) {
            err = got_shm(c, &h, p);
        } else if (h.type == SOFTDEV_TAP_REQUEST && !c->ring) {
            err = take_request(&t, &h, p);
        } else if (h.type == SOFTDEV_TAP_LOWER_REPLY) {
            err = got_lower_reply(c, &h, p);
        } else if (h.type == SOFTDEV_TAP_KICK && c->ring) {
            /* the ring is looked at below */
        } else {
            err = "unexpected message type from the client";
        }
    }
    if (c->rend - c->rstart < SOFTDEV_TAP_HDR_SIZE) {
        c->rwant = SOFTDEV_TAP_HDR_SIZE;
    }
    if (!err && c->ring) {
        softdev_tap_ring_take(c->ring, c->ring_entries,
                              SOFTDEV_TAP_RING_REQUESTS, &c->req_cons,
                              take_request, &t, &err);
    }
    if (t.head) {
        pthread_mutex_lock(&c->lock);
        if (c->queue_tail) {
            c->queue_tail->next = t.head;
        } else {
            c->queue_head = t.head;
        }
        c->queue_tail = t.tail;
        if (c->idle > 1 && t.count > 1) {
            pthread_cond_broadcast(&c->work_cond);
        } else if (c->idle) {
            pthread_cond_signal(&c->work_cond);
        }
        pthread_mutex_unlock(&c->lock);
    }
    if (err) {
        if (*err) {
            conn_fail(c, err);
        } else {
            c->result = -1;         /* already reported */
            conn_close(c);
        }
        return -1;
    }
    return 0;
}

/* Read and parse until the handshake is complete; 0 or -1 */
static int handshake(Conn *c)
{
    struct timeval tv = { .tv_sec = HANDSHAKE_TIMEOUT };
    int ret = 0;

    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (c->phase != PHASE_RUN) {
        int n = conn_fill(c);
        if (n == 0) {
            softdev_error("client closed the connection during the "
                          "handshake");
        } else if (n == -1) {
            softdev_error("handshake failed: %s",
                          errno == EAGAIN || errno == EWOULDBLOCK ?
                          (c->phase == PHASE_HELLO ? "no HELLO in time" :
                           "no SHM_SETUP in time") : strerror(errno));
        }
        if (n <= 0 || conn_parse(c) < 0) {
            ret = -1;
            break;
        }
    }
    tv.tv_sec = 0;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return ret;
}

/* SOFTDEV_THREAD_SERIALIZE: read, run and reply in this thread */
static void serve_serial(Conn *c, Out *o)
{
    struct softdev_req *r;

    for (;;) {
        pthread_mutex_lock(&c->lock);
        r = conn_closed(c) ? NULL : dequeue(c);
        pthread_mutex_unlock(&c->lock);
        if (r) {
            run_request(c, o, r);
            if (out_full(o)) {
                out_flush(c, o);
            }
            continue;
        }
        if (conn_closed(c)) {
            break;
        }
        out_flush(c, o);
        if (c->ring) {
            ring_kick(c, true);
        }
        /* What the client sent while we were sending is parsed first */
        if (!c->absorbed && conn_fill(c) <= 0) {
            break;
        }
        c->absorbed = false;
        if (conn_parse(c) < 0) {
            break;
        }
    }
}

/* SOFTDEV_THREAD_PARALLEL: this thread reads, workers run callbacks */
static void serve_parallel(Conn *c)
{
    pthread_t workers[SOFTDEV_PARALLEL_WORKERS];
    int started = 0, i;

    for (i = 0; i < SOFTDEV_PARALLEL_WORKERS; i++) {
        if (pthread_create(&workers[i], NULL, worker, c) != 0) {
            softdev_error("cannot start a worker thread");
            break;
        }
        started++;
    }
    if (!started) {
        c->result = -1;
        return;
    }
    /* The reader never sends, so it never stops reading */
    while (!conn_closed(c)) {
        if (conn_fill(c) <= 0 || conn_parse(c) < 0) {
            break;
        }
    }
    conn_close(c);
    for (i = 0; i < started; i++) {
        pthread_join(workers[i], NULL);
    }
}

int softdev_serve_fd(const struct softdev_device *dev, void *handle, int fd)
{
    Conn c = {
        .dev = dev, .handle = handle, .fd = fd, .shm_fd = -1,
        .parallel = dev->thread_model == SOFTDEV_THREAD_PARALLEL,
    };
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    Out *o;

    current_dev = dev;
    if (dev->api_version < 1 || dev->api_version > SOFTDEV_API_VERSION) {
        softdev_error("device api_version %d, libsoftdev knows 1 to %d",
                      dev->api_version, SOFTDEV_API_VERSION);
        return -1;
    }
    if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == 0) {
        c.family = ss.ss_family;
    }
    if (c.family == AF_INET || c.family == AF_INET6) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    o = calloc(1, sizeof(*o));
    c.rcap = HANDSHAKE_BUF;
    c.rbuf = malloc(c.rcap);
    c.rwant = SOFTDEV_TAP_HDR_SIZE;
    if (!o || !c.rbuf) {
        softdev_error("out of memory");
        free(o);
        free(c.rbuf);
        return -1;
    }
    pthread_mutex_init(&c.send_lock, NULL);
    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.work_cond, NULL);

    o->reader = true;
    if (handshake(&c) == 0) {
        if (c.parallel) {
            serve_parallel(&c);
        } else {
            serve_serial(&c, o);
        }
    } else {
        c.result = -1;
    }

    conn_close(&c);
    out_discard(&c, o);
    free(o);
    while (c.all_reqs) {
        struct softdev_req *r = c.all_reqs;
        c.all_reqs = r->all;
        free(r->buf);
        free(r);
    }
    free(c.hash);
    free(c.slot_busy);
    free(c.rbuf);
    if (c.shm) {
        munmap(c.shm, c.shm_size);
    }
    if (c.shm_fd >= 0) {
        close(c.shm_fd);
    }
    pthread_cond_destroy(&c.work_cond);
    pthread_mutex_destroy(&c.lock);
    pthread_mutex_destroy(&c.send_lock);
    return c.result;
}

/* -- main -------------------------------------------------------------- */

static const char *socket_path;

static void on_signal(int sig)
{
    (void)sig;
    if (socket_path) {
        unlink(socket_path);
    }
    _exit(0);
}

static int listen_unix(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    char tmp[sizeof(addr.sun_path) + 32];
    struct stat st;
    mode_t old;
    int fd, ret, n;

    if (strlen(path) >= sizeof(addr.sun_path)) {
        softdev_error("socket path too long: %s", path);
        return -1;
    }
    strcpy(addr.sun_path, path);
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        /* Replace a stale socket, not a live one */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
            ret = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
            close(fd);
            if (ret == 0) {
                softdev_error("a server is already listening on %s", path);
                return -1;
            }
            unlink(path);
        }
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        softdev_error("socket: %s", strerror(errno));
        return -1;
    }
    /*
     * Listen under a temporary name and rename it into place, so that a
     * client which connects as soon as the socket exists never finds it
     * not listening yet.
     */
    n = snprintf(tmp, sizeof(tmp), "%s.%ld~", path, (long)getpid());
    if (n > 0 && (size_t)n < sizeof(addr.sun_path)) {
        strcpy(addr.sun_path, tmp);
        unlink(tmp);
    }
    old = umask(0177);
    ret = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
    umask(old);
    if (ret < 0 || chmod(addr.sun_path, 0600) < 0 || listen(fd, 4) < 0 ||
        (strcmp(addr.sun_path, path) && rename(addr.sun_path, path) < 0)) {
        softdev_error("cannot listen on %s: %s", path, strerror(errno));
        if (ret == 0) {
            unlink(addr.sun_path);
        }
        close(fd);
        return -1;
    }
    return fd;
}

/* Split "HOST:PORT" (HOST may be empty or [IPv6]) in place */
static int split_host_port(char *arg, char **host, char **port)
{
    char *colon = strrchr(arg, ':');

    if (!colon || !colon[1]) {
        return -1;
    }
    *colon = '\0';
    *port = colon + 1;
    *host = arg;
    if (arg[0] == '[' && colon > arg && colon[-1] == ']') {
        colon[-1] = '\0';
        *host = arg + 1;
    }
    if (!**host) {
        *host = NULL;
    }
    return 0;
}

static int listen_tcp(const char *spec)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE,
    };
    struct addrinfo *res, *ai;
    char *copy = strdup(spec), *host, *port;
    int fd = -1, ret, one = 1;

    if (!copy || split_host_port(copy, &host, &port) < 0) {
        softdev_error("--tcp wants HOST:PORT, not '%s'", spec);
        free(copy);
        return -1;
    }
    ret = getaddrinfo(host, port, &hints, &res);
    if (ret) {
        softdev_error("--tcp %s: %s", spec, gai_strerror(ret));
        free(copy);
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            listen(fd, 4) == 0) {
            break;
        }
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        softdev_error("cannot listen on %s: %s", spec, strerror(errno));
    } else if (!strcmp(port, "0")) {
        /* Tell where the kernel put us */
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        char h[NI_MAXHOST], p[NI_MAXSERV];
        if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 &&
            getnameinfo((struct sockaddr *)&ss, len, h, sizeof(h), p,
                        sizeof(p), NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
            softdev_error("listening on %s%s%s:%s", strchr(h, ':') ? "[" : "",
                          h, strchr(h, ':') ? "]" : "", p);
        }
    }
    freeaddrinfo(res);
    free(copy);
    return fd;
}

static int listen_vsock(const char *spec)
{
    struct sockaddr_vm addr = { .svm_family = AF_VSOCK };
    char *copy = strdup(spec), *host, *port, *end;
    unsigned long cid = VMADDR_CID_ANY, portnum;
    int fd;

    if (!copy || split_host_port(copy, &host, &port) < 0) {
        goto bad;
    }
    if (host && strcmp(host, "-1") && strcmp(host, "any")) {
        cid = strtoul(host, &end, 0);
        if (*end || cid > UINT32_MAX) {
            goto bad;
        }
    }
    portnum = strtoul(port, &end, 0);
    if (*end || portnum > UINT32_MAX) {
        goto bad;
    }
    free(copy);
    addr.svm_cid = cid;
    addr.svm_port = portnum;
    fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        softdev_error("vsock: %s", strerror(errno));
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(fd, 4) < 0) {
        softdev_error("cannot listen on vsock %s: %s", spec,
                      strerror(errno));
        close(fd);
        return -1;
    }
    return fd;

bad:
    softdev_error("--vsock wants CID:PORT (CID may be empty or -1 for "
                  "any), not '%s'", spec);
    free(copy);
    return -1;
}

/* --allow-uid */
static uid_t *allowed_uids;
static size_t n_allowed_uids;

static int parse_uids(const char *arg)
{
    const char *p = arg;

    do {
        char *end;
        unsigned long v = strtoul(p, &end, 10);
        uid_t *n;

        if (end == p || (*end && *end != ',') || v >= (uid_t)-1) {
            softdev_error("--allow-uid wants UID[,UID...], not '%s'", arg);
            return -1;
        }
        n = realloc(allowed_uids, (n_allowed_uids + 1) * sizeof(*n));
        if (!n) {
            return -1;
        }
        allowed_uids = n;
        allowed_uids[n_allowed_uids++] = v;
        p = *end ? end + 1 : end;
    } while (*p);
    return 0;
}

/* Whether the peer on unix socket @fd may talk to us (--allow-uid) */
static bool peer_allowed(int fd)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    size_t i;

    if (!n_allowed_uids) {
        return true;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        softdev_error("refusing a connection: cannot get the peer's "
                      "credentials: %s", strerror(errno));
        return false;
    }
    for (i = 0; i < n_allowed_uids; i++) {
        if (allowed_uids[i] == cred.uid) {
            return true;
        }
    }
    softdev_error("refusing a connection from uid %u (pid %d): not in "
                  "--allow-uid", (unsigned)cred.uid, (int)cred.pid);
    return false;
}

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s (--unix PATH | --tcp HOST:PORT | --vsock CID:PORT | "
            "--fd N)\n"
            "          [--allow-uid UID[,UID...]] [--no-shm] [--no-ring]\n"
            "          [--poll-us N] [DEVICE ARGS...]\n"
            "  --unix PATH    listen on a unix socket (mode 0600)\n"
            "  --tcp H:P      listen on TCP (HOST may be empty: any)\n"
            "  --vsock C:P    listen on vsock (CID may be empty: any)\n"
            "  --fd N         serve the connected socket N once\n"
            "  --allow-uid    unix sockets: only these users' processes\n"
            "  --no-shm       decline the shared-memory data path\n"
            "  --no-ring      shared memory for data only: requests and\n"
            "                 replies as socket messages\n"
            "  --poll-us N    busy-poll for requests N microseconds before\n"
            "                 sleeping (costs CPU, saves wake-ups under\n"
            "                 load; default 0)\n",
            prog);
}

int softdev_main(const struct softdev_device *dev, int argc, char **argv)
{
    const char *path = NULL, *tcp = NULL, *vsock = NULL;
    char **args;
    struct sigaction sa = { .sa_handler = on_signal };
    int nargs = 1, fd = -1, lfd = -1, nlisten, i, ret = 1;
    void *h;

    current_dev = dev;
    args = calloc(argc + 1, sizeof(*args));
    if (!args) {
        return 1;
    }
    args[0] = argv[0];
    for (i = 1; i < argc; i++) {
        bool has_val = i + 1 < argc;
        if (!strcmp(argv[i], "--unix") && has_val) {
            path = argv[++i];
        } else if (!strcmp(argv[i], "--tcp") && has_val) {
            tcp = argv[++i];
        } else if (!strcmp(argv[i], "--vsock") && has_val) {
            vsock = argv[++i];
        } else if (!strcmp(argv[i], "--allow-uid") && has_val) {
            if (parse_uids(argv[++i]) < 0) {
                free(args);
                return 2;
            }
        } else if (!strcmp(argv[i], "--no-shm")) {
            no_shm = true;
        } else if (!strcmp(argv[i], "--no-ring")) {
            no_ring = true;
        } else if (!strcmp(argv[i], "--poll-us") && has_val) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 0 || v > 1000000) {
                softdev_error("--poll-us takes 0 to 1000000");
                free(args);
                return 2;
            }
            poll_ns = (uint64_t)v * 1000;
        } else if (!strcmp(argv[i], "--fd") && has_val) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 0 || v > INT_MAX) {
                usage(stderr, argv[0]);
                free(args);
                return 2;
            }
            fd = v;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout, argv[0]);
            free(args);
            return 0;
        } else if (!strcmp(argv[i], "--")) {
            while (++i < argc) {
                args[nargs++] = argv[i];
            }
        } else {
            args[nargs++] = argv[i];
        }
    }
    nlisten = !!path + !!tcp + !!vsock + (fd >= 0);
    if (nlisten != 1) {
        if (nlisten > 1) {
            softdev_error("give one of --unix, --tcp, --vsock and --fd");
        }
        usage(stderr, argv[0]);
        free(args);
        return 2;
    }
    if (n_allowed_uids && (tcp || vsock)) {
        softdev_error("--allow-uid works on unix sockets only");
        free(args);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    h = dev->open ? dev->open(nargs, args) : (void *)dev;
    free(args);
    if (!h) {
        softdev_error("cannot open the device");
        return 1;
    }
    if (fd >= 0) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (n_allowed_uids &&
            (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
             ss.ss_family != AF_UNIX)) {
            softdev_error("--allow-uid: fd %d is not a unix socket", fd);
        } else if (peer_allowed(fd)) {
            ret = softdev_serve_fd(dev, h, fd) < 0 ? 1 : 0;
        }
        close(fd);
        goto out;
    }

    lfd = path ? listen_unix(path) : tcp ? listen_tcp(tcp) :
          listen_vsock(vsock);
    if (lfd < 0) {
        goto out;
    }
    socket_path = path;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            softdev_error("accept: %s", strerror(errno));
            break;
        }
        /* The old connection's callbacks have all returned by now */
        if (!path || peer_allowed(cfd)) {
            softdev_serve_fd(dev, h, cfd);
        }
        close(cfd);
    }
    close(lfd);
    if (path) {
        unlink(path);
    }
out:
    if (dev->close) {
        dev->close(h);
    }
    return ret;
}
