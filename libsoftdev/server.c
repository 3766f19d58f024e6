/*
 * libsoftdev server: serves a struct softdev_device over the tap protocol
 * (docs/specs/softdev-tap.rst).  A reader decodes the socket with
 * tap-protocol.c plus the connection-state rules, workers run callbacks,
 * and softdev_main() listens on a unix socket.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "softdev/tap-protocol.h"
#include "softdev.h"

#define DEFAULT_MAX_DATA    (1u << 20)
#define MAX_RANGE           (1u << 31)
#define MAX_ERRNO           4095
#define HANDSHAKE_TIMEOUT   10

typedef struct Conn Conn;

struct softdev_req {
    Conn *conn;
    uint64_t handle;
    SoftdevTapRequest req;
    uint8_t *data;                  /* WRITE data */
    bool fwd_moved;
    uint64_t fwd_offset;
    uint8_t *fwd_data;              /* copy made by softdev_forward_to */
    struct softdev_req *next_queue; /* work queue, arrival order */
    struct softdev_req *next_out;   /* outstanding REQUESTs */
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

struct Conn {
    const struct softdev_device *dev;
    void *handle;
    int fd;
    uint64_t features;
    uint64_t size;
    uint64_t lower_size;
    uint32_t max_data;

    pthread_mutex_t send_lock;      /* one message at a time on the wire */
    pthread_mutex_t lock;           /* everything below */
    pthread_cond_t work_cond;
    bool closed;
    struct softdev_req *queue_head, *queue_tail;
    struct softdev_req *outstanding;
    Waiter *waiters;
    uint64_t next_lower_handle;
};

static const struct softdev_device *current_dev;

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

/* -- connection state -------------------------------------------------- */

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

static void req_free(struct softdev_req *r)
{
    free(r->data);
    free(r->fwd_data);
    free(r);
}

/* Called with c->lock held */
static struct softdev_req *find_outstanding(Conn *c, uint64_t handle,
                                            bool unlink)
{
    struct softdev_req **p;

    for (p = &c->outstanding; *p; p = &(*p)->next_out) {
        if ((*p)->handle == handle) {
            struct softdev_req *r = *p;
            if (unlink) {
                *p = r->next_out;
            }
            return r;
        }
    }
    return NULL;
}

/* -- socket I/O -------------------------------------------------------- */

/* 1: got @len bytes; 0: EOF before the first byte; -1: error/short */
static int read_full(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    size_t got = 0;

    while (got < len) {
        ssize_t n = read(fd, p + got, len - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n == 0 && got == 0 ? 0 : -1;
        }
        got += n;
    }
    return 1;
}

/*
 * Send header + fixed part (@hdr, @hlen) and @dlen bytes of @data as one
 * message; dropped if the connection is closed.  0 or -1.
 */
static int conn_send(Conn *c, const uint8_t *hdr, size_t hlen,
                     const void *data, size_t dlen)
{
    struct iovec iov[2] = {
        { .iov_base = (void *)hdr, .iov_len = hlen },
        { .iov_base = (void *)data, .iov_len = dlen },
    };
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = dlen ? 2 : 1 };
    int ret = 0;

    pthread_mutex_lock(&c->send_lock);
    if (__atomic_load_n(&c->closed, __ATOMIC_ACQUIRE)) {
        ret = -1;
        goto out;
    }
    while (msg.msg_iovlen) {
        ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
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
    if (ret < 0 && !__atomic_load_n(&c->closed, __ATOMIC_ACQUIRE)) {
        softdev_error("send failed: %s", strerror(errno));
        conn_close(c);
    }
    return ret;
}

/* -- lower requests ---------------------------------------------------- */

static int lower_one(struct softdev_req *r, uint16_t op, uint64_t off,
                     uint64_t len, const void *wdata, void *rbuf,
                     uint32_t flags)
{
    Conn *c = r->conn;
    uint8_t hdr[SOFTDEV_TAP_HDR_SIZE + SOFTDEV_TAP_REQUEST_SIZE];
    Waiter w = {
        .req = { .op = op, .req_flags = flags, .offset = off, .bytes = len },
        .buf = rbuf,
    };
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
    pthread_mutex_unlock(&c->lock);

    softdev_tap_encode_request(hdr, SOFTDEV_TAP_LOWER_REQUEST, w.handle,
                               &w.req);
    conn_send(c, hdr, sizeof(hdr), wdata,
              op == SOFTDEV_TAP_OP_WRITE ? len : 0);

    /* On a failed send, conn_close() has completed us with -EIO */
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

int softdev_forward_to(struct softdev_req *r, uint64_t off, const void *data)
{
    r->fwd_moved = true;
    r->fwd_offset = off;
    if (data) {
        if (r->req.op != SOFTDEV_TAP_OP_WRITE) {
            softdev_error("forward with data of a non-write request");
            return -EINVAL;
        }
        free(r->fwd_data);
        r->fwd_data = malloc(r->req.bytes);
        if (!r->fwd_data) {
            return -ENOMEM;
        }
        memcpy(r->fwd_data, data, r->req.bytes);
    }
    return SOFTDEV_FORWARD;
}

/* -- running requests -------------------------------------------------- */

static const char *const op_names[] = {
    "READ", "WRITE", "WRITE_ZEROES", "DISCARD", "FLUSH",
};

static int call_device(Conn *c, struct softdev_req *r, void *buf)
{
    const struct softdev_device *d = c->dev;
    const SoftdevTapRequest *q = &r->req;

    switch (q->op) {
    case SOFTDEV_TAP_OP_READ:
        return d->read ? d->read(c->handle, r, buf, q->bytes, q->offset) :
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

static void run_request(Conn *c, struct softdev_req *r)
{
    const SoftdevTapRequest *q = &r->req;
    const char *op = op_names[q->op];
    uint8_t hdr[SOFTDEV_TAP_HDR_SIZE + SOFTDEV_TAP_REPLY_SIZE];
    SoftdevTapReply rep = { 0 };
    const void *data = NULL;
    void *buf = NULL;
    int rc;

    if (q->op == SOFTDEV_TAP_OP_READ) {
        buf = calloc(1, q->bytes);
        if (!buf) {
            rc = -ENOMEM;
            goto reply;
        }
    }
    rc = call_device(c, r, buf);

    if (rc == SOFTDEV_FORWARD) {
        uint64_t off = r->fwd_moved ? r->fwd_offset : q->offset;
        if (!c->lower_size) {
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
                data = r->fwd_data;
            }
        }
    } else if (rc == 0) {
        if (q->op == SOFTDEV_TAP_OP_READ) {
            rep.bytes = q->bytes;
            data = buf;
        }
    } else if (rc < 0 && rc >= -MAX_ERRNO) {
        /* complete with -errno */
    } else {
        softdev_error("%s callback returned %d; completing with -EIO", op, rc);
        rc = -EIO;
    }

reply:
    if (rep.action != SOFTDEV_TAP_FORWARD) {
        rep.result = rc;
    }
    /*
     * Forget the handle before the client can see the reply and reuse it
     * for a new request.
     */
    pthread_mutex_lock(&c->lock);
    find_outstanding(c, r->handle, true);
    pthread_mutex_unlock(&c->lock);
    softdev_tap_encode_reply(hdr, SOFTDEV_TAP_REPLY, r->handle, &rep);
    conn_send(c, hdr, sizeof(hdr), data, rep.bytes);
    free(buf);
    req_free(r);
}

static void *worker(void *opaque)
{
    Conn *c = opaque;
    struct softdev_req *r;

    for (;;) {
        pthread_mutex_lock(&c->lock);
        while (!c->closed && !c->queue_head) {
            pthread_cond_wait(&c->work_cond, &c->lock);
        }
        if (c->closed) {
            /* unstarted requests: the client sends them again */
            pthread_mutex_unlock(&c->lock);
            return NULL;
        }
        r = c->queue_head;
        c->queue_head = r->next_queue;
        if (!c->queue_head) {
            c->queue_tail = NULL;
        }
        pthread_mutex_unlock(&c->lock);
        run_request(c, r);
    }
}

/* -- reading ----------------------------------------------------------- */

/* Handle one REQUEST; returns an error message or NULL */
static const char *got_request(Conn *c, const SoftdevTapHeader *h,
                               uint8_t *payload)
{
    static const uint64_t gate[] = {
        [SOFTDEV_TAP_OP_WRITE_ZEROES] = SOFTDEV_TAP_F_ZEROES,
        [SOFTDEV_TAP_OP_DISCARD] = SOFTDEV_TAP_F_DISCARD,
        [SOFTDEV_TAP_OP_FLUSH] = SOFTDEV_TAP_F_FLUSH,
    };
    struct softdev_req *r;
    const char *err = NULL;
    SoftdevTapRequest q;

    if (softdev_tap_decode_request(h, payload, c->size, c->max_data, &q,
                                   &err) < 0) {
        return err;
    }
    if (gate[q.op] && !(c->features & gate[q.op])) {
        return "request for an op whose feature was not negotiated";
    }
    if ((q.req_flags & SOFTDEV_TAP_REQ_FUA) &&
        !(c->features & SOFTDEV_TAP_F_FUA)) {
        return "FUA but SOFTDEV_TAP_F_FUA was not negotiated";
    }
    r = calloc(1, sizeof(*r));
    if (!r) {
        return "out of memory";
    }
    r->conn = c;
    r->handle = h->handle;
    r->req = q;
    if (q.op == SOFTDEV_TAP_OP_WRITE) {
        r->data = malloc(q.bytes);
        if (!r->data) {
            free(r);
            return "out of memory";
        }
        memcpy(r->data, payload + SOFTDEV_TAP_REQUEST_SIZE, q.bytes);
    }
    pthread_mutex_lock(&c->lock);
    if (find_outstanding(c, h->handle, false)) {
        pthread_mutex_unlock(&c->lock);
        req_free(r);
        return "REQUEST handle is already outstanding";
    }
    r->next_out = c->outstanding;
    c->outstanding = r;
    if (c->queue_tail) {
        c->queue_tail->next_queue = r;
    } else {
        c->queue_head = r;
    }
    c->queue_tail = r;
    pthread_cond_signal(&c->work_cond);
    pthread_mutex_unlock(&c->lock);
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
    } else if (softdev_tap_decode_reply(h, payload, &w->req, false, &rep,
                                        &err) == 0) {
        if (rep.bytes) {
            memcpy(w->buf, payload + SOFTDEV_TAP_LOWER_REPLY_SIZE,
                   rep.bytes);
        }
        *p = w->next;
        w->result = rep.result;
        w->done = true;
        pthread_cond_signal(&w->cond);
    }
    pthread_mutex_unlock(&c->lock);
    return err;
}

/*
 * Read one message into *@payload (malloc'ed).  1: got one; 0: clean EOF;
 * -1: error (*@err set, or NULL for an I/O error).
 */
static int read_msg(Conn *c, uint32_t max_payload, SoftdevTapHeader *h,
                    uint8_t **payload, const char **err)
{
    uint8_t hdr[SOFTDEV_TAP_HDR_SIZE];
    int ret;

    *payload = NULL;
    *err = NULL;
    ret = read_full(c->fd, hdr, sizeof(hdr));
    if (ret <= 0) {
        return ret;
    }
    if (softdev_tap_decode_header(hdr, max_payload, h, err) < 0) {
        return -1;
    }
    *payload = malloc(h->length ? h->length : 1);
    if (!*payload) {
        *err = "out of memory";
        return -1;
    }
    if (read_full(c->fd, *payload, h->length) != 1) {
        free(*payload);
        *payload = NULL;
        return -1;
    }
    return 1;
}

static int handshake(Conn *c)
{
    const struct softdev_device *d = c->dev;
    struct timeval tv = { .tv_sec = HANDSHAKE_TIMEOUT };
    uint8_t out[SOFTDEV_TAP_HDR_SIZE + SOFTDEV_TAP_HELLO_REPLY_SIZE];
    uint32_t want_max = d->max_data ? d->max_data : DEFAULT_MAX_DATA;
    SoftdevTapHello hello, reply = { 0 };
    SoftdevTapHeader h;
    uint8_t *payload;
    const char *err;
    uint64_t feat = 0;
    int ret;

    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ret = read_msg(c, SOFTDEV_TAP_HANDSHAKE_MAX, &h, &payload, &err);
    if (ret == 0) {
        softdev_error("client closed the connection before HELLO");
        return -1;
    }
    if (ret < 0) {
        softdev_error("handshake failed: %s",
                      err ? err : errno == EAGAIN ? "no HELLO in time" :
                      "read error");
        return -1;
    }
    ret = softdev_tap_decode_hello(&h, payload, false, 0, 0, &hello, &err);
    free(payload);
    if (ret < 0) {
        softdev_error("protocol error: %s; dropping the connection", err);
        return -1;
    }
    if (!d->size && !hello.size) {
        softdev_error("the device has no size and there is no node below "
                      "to take it from");
        return -1;
    }
    if (want_max < SOFTDEV_TAP_MIN_DATA) {
        softdev_error("max_data %u is below %u", want_max,
                      SOFTDEV_TAP_MIN_DATA);
        return -1;
    }
    feat |= d->flush ? SOFTDEV_TAP_F_FLUSH : 0;
    feat |= d->discard ? SOFTDEV_TAP_F_DISCARD : 0;
    feat |= d->write_zeroes ? SOFTDEV_TAP_F_ZEROES : 0;
    feat |= d->write || d->write_zeroes ? SOFTDEV_TAP_F_FUA : 0;
    feat |= SOFTDEV_TAP_F_LOWER;
    c->features = feat & hello.features;
    c->lower_size = hello.size;
    c->size = d->size ? d->size : hello.size;
    c->max_data = want_max < hello.max_data ? want_max : hello.max_data;

    reply.version = SOFTDEV_TAP_VERSION;
    reply.device_class = hello.device_class;
    reply.features = c->features;
    reply.size = d->size;
    reply.max_data = c->max_data;
    softdev_tap_encode_hello(out, true, &reply);
    if (conn_send(c, out, sizeof(out), NULL, 0) < 0) {
        return -1;
    }
    tv.tv_sec = 0;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return 0;
}

int softdev_serve_fd(const struct softdev_device *dev, void *handle, int fd)
{
    Conn c = { .dev = dev, .handle = handle, .fd = fd };
    pthread_t workers[SOFTDEV_PARALLEL_WORKERS];
    int nworkers = dev->thread_model == SOFTDEV_THREAD_PARALLEL ?
                   SOFTDEV_PARALLEL_WORKERS : 1;
    int started = 0, ret = 0, i;

    current_dev = dev;
    if (dev->api_version != SOFTDEV_API_VERSION) {
        softdev_error("device api_version %d, libsoftdev knows %d",
                      dev->api_version, SOFTDEV_API_VERSION);
        return -1;
    }
    pthread_mutex_init(&c.send_lock, NULL);
    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.work_cond, NULL);
    if (handshake(&c) < 0) {
        ret = -1;
        goto out;
    }
    for (i = 0; i < nworkers; i++) {
        if (pthread_create(&workers[i], NULL, worker, &c) != 0) {
            softdev_error("cannot start a worker thread");
            break;
        }
        started++;
    }
    if (!started) {
        ret = -1;
        goto out;
    }

    /* This thread is the reader */
    for (;;) {
        uint32_t max = c.max_data + SOFTDEV_TAP_REQUEST_SIZE;
        SoftdevTapHeader h;
        uint8_t *payload;
        const char *err;
        int n = read_msg(&c, max, &h, &payload, &err);

        if (n == 0 || (n < 0 && !err)) {
            break;          /* the client went away */
        }
        if (n > 0) {
            if (h.type == SOFTDEV_TAP_REQUEST) {
                err = got_request(&c, &h, payload);
            } else if (h.type == SOFTDEV_TAP_LOWER_REPLY) {
                err = got_lower_reply(&c, &h, payload);
            } else {
                err = "unexpected message type from the client";
            }
            free(payload);
        }
        if (err) {
            softdev_error("protocol error: %s; dropping the connection",
                          err);
            ret = -1;
            break;
        }
    }
    conn_close(&c);
    for (i = 0; i < started; i++) {
        pthread_join(workers[i], NULL);
    }

out:
    conn_close(&c);
    while (c.outstanding) {
        struct softdev_req *r = c.outstanding;
        c.outstanding = r->next_out;
        req_free(r);
    }
    pthread_cond_destroy(&c.work_cond);
    pthread_mutex_destroy(&c.lock);
    pthread_mutex_destroy(&c.send_lock);
    return ret;
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
    struct stat st;
    mode_t old;
    int fd, ret;

    if (strlen(path) >= sizeof(addr.sun_path)) {
        softdev_error("socket path too long: %s", path);
        return -1;
    }
    strcpy(addr.sun_path, path);
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        /* Replace a stale socket, not a live one */
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
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
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) {
        softdev_error("socket: %s", strerror(errno));
        return -1;
    }
    old = umask(0177);
    ret = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
    umask(old);
    if (ret < 0 || chmod(path, 0600) < 0 || listen(fd, 4) < 0) {
        softdev_error("cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void usage(const char *prog)
{
    fprintf(stderr, "usage: %s (--unix PATH | --fd N) [DEVICE ARGS...]\n",
            prog);
}

int softdev_main(const struct softdev_device *dev, int argc, char **argv)
{
    const char *path = NULL;
    char **args;
    struct sigaction sa = { .sa_handler = on_signal };
    int nargs = 1, fd = -1, lfd, i;
    void *h;

    current_dev = dev;
    args = calloc(argc + 1, sizeof(*args));
    if (!args) {
        return 1;
    }
    args[0] = argv[0];
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--unix") && i + 1 < argc) {
            path = argv[++i];
        } else if (!strcmp(argv[i], "--fd") && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 0 || v > INT_MAX) {
                usage(argv[0]);
                free(args);
                return 2;
            }
            fd = v;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(argv[0]);
            free(args);
            return 0;
        } else {
            args[nargs++] = argv[i];
        }
    }
    if (!path == (fd < 0)) {
        usage(argv[0]);
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
        int ret = softdev_serve_fd(dev, h, fd);
        close(fd);
        if (dev->close) {
            dev->close(h);
        }
        return ret < 0 ? 1 : 0;
    }

    lfd = listen_unix(path);
    if (lfd < 0) {
        if (dev->close) {
            dev->close(h);
        }
        return 1;
    }
    socket_path = path;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    for (;;) {
        int cfd = accept(lfd, NULL, NULL);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            softdev_error("accept: %s", strerror(errno));
            break;
        }
        softdev_serve_fd(dev, h, cfd);
        close(cfd);
    }
    close(lfd);
    unlink(path);
    if (dev->close) {
        dev->close(h);
    }
    return 1;
}
