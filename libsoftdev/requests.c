/*
 * libsoftdev requests: REQUESTs taken in (checked against the
 * connection's state: features, handles, slots, max_inflight), their
 * callbacks run in the thread model the device chose, and the REPLYs
 * handed to the transport.  softdev_serve() is here: one connection from
 * handshake to disconnect.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "server-internal.h"

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

/*
 * Forget an outstanding REQUEST (its reply is about to be sent); called
 * with c->lock held
 */
void conn_release(Conn *c, struct softdev_req *r)
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

/* A new outstanding request for @h, or an error message */
static const char *new_request(Conn *c, const SoftdevTapHeader *h,
                               const SoftdevTapRequest *q,
                               struct softdev_req **rp)
{
    struct softdev_req *r = NULL, **slot;
    const char *err = NULL;

    pthread_mutex_lock(&c->lock);
    if (c->outstanding >= c->max_inflight) {
        err = "more requests outstanding than max_inflight";
    } else if (find_outstanding(c, h->handle)) {
        err = "REQUEST handle is already outstanding";
    } else if (c->shm && c->slot_busy[q->slot]) {
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
    if (!err) {
        r->handle = h->handle;
        slot = hash_slot(c, h->handle);
        r->hnext = *slot;
        *slot = r;
        c->outstanding++;
        if (c->shm) {
            c->slot_busy[q->slot] = 1;
        }
    }
    pthread_mutex_unlock(&c->lock);
    *rp = r;
    return err;
}

/*
 * ConnMsgFn for one REQUEST (from the socket or a ring entry): check it,
 * and add it to the Taken list @opaque.
 */
const char *conn_take_request(void *opaque, const SoftdevTapHeader *h,
                              const uint8_t *payload)
{
    Taken *t = opaque;
    Conn *c = t->c;
    struct softdev_req *r;
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
    if ((q.req_flags & SOFTDEV_TAP_REQ_BELOW) &&
        !(c->features & SOFTDEV_TAP_F_READ_BELOW)) {
        return "BELOW but SOFTDEV_TAP_F_READ_BELOW was not negotiated";
    }
    err = new_request(c, h, &q, &r);
    if (err) {
        return err;
    }
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
    if (t->tail) {
        t->tail->next = r;
    } else {
        t->head = r;
    }
    t->tail = r;
    t->count++;
    return NULL;
}

/* ConnMsgFn for a socket message after the handshake */
const char *conn_run_msg(void *opaque, const SoftdevTapHeader *h,
                         const uint8_t *payload)
{
    Taken *t = opaque;

    if (h->type == SOFTDEV_TAP_REQUEST) {
        return conn_take_request(t, h, payload);
    }
    if (h->type == SOFTDEV_TAP_LOWER_REPLY) {
        return conn_lower_reply(t->c, h, payload);
    }
    return "unexpected message type from the client";
}

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
        if (!d->read) {
            return SOFTDEV_FORWARD;
        }
        if (d->api_version >= 2 && (d->flags & SOFTDEV_READ_BELOW) &&
            !(q->req_flags & SOFTDEV_TAP_REQ_BELOW)) {
            /* QEMU did not send the data below: read it as it would */
            int ret = softdev_lower_read(r, r->data, q->bytes, q->offset);

            if (ret < 0) {
                return ret;
            }
        }
        return d->read(c->handle, r, r->data, q->bytes, q->offset);
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

/* The REPLY for callback result @rc of @r */
static SoftdevTapReply make_reply(Conn *c, struct softdev_req *r, int rc)
{
    const SoftdevTapRequest *q = &r->req;
    const char *op = op_names[q->op];
    SoftdevTapReply rep = { 0 };

    if (rc == SOFTDEV_FORWARD) {
        uint64_t off = r->fwd_moved ? r->fwd_offset : q->offset;
        if (!c->has_lower) {
            /* Nothing below: do what the client does for declined ops */
            if (q->op == SOFTDEV_TAP_OP_FLUSH ||
                q->op == SOFTDEV_TAP_OP_DISCARD) {
                rc = SOFTDEV_DONE;
            } else if (q->op == SOFTDEV_TAP_OP_WRITE_ZEROES) {
                rc = -ENOTSUP;      /* QEMU then writes zeroed buffers */
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
    } else if (rc == SOFTDEV_DONE) {
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
    return rep;
}

/* Run @r's callback and post its REPLY with @o */
static void run_request(Conn *c, Out *o, struct softdev_req *r)
{
    bool timed = has_callback(c->dev, r->req.op);
    uint64_t t0 = timed ? softdev_now_ns() : 0;
    SoftdevTapReply rep;
    TransportMsg m = { .type = SOFTDEV_TAP_REPLY, .handle = r->handle,
                       .r = r, .rep = &rep, .data = r->data };

    r->out = o;
    rep = make_reply(c, r, call_device(c, r));
    if (timed && softdev_now_ns() - t0 > SLOW_CALLBACK_NS) {
        o->now = true;      /* batching would only delay this reply */
    }
    m.dlen = c->shm ? 0 : rep.bytes;
    c->ops->post(c, o, &m);
    if (o->now) {
        o->now = false;
        c->ops->publish(c, o);
    }
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

    softdev_error_name_set(c->dev->name);
    if (!o) {
        conn_error(c, ENOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_lock(&c->lock);
    for (;;) {
        out_release(c, o);
        if (c->closed) {
            /* unstarted requests: the client sends them again */
            break;
        }
        if ((r = dequeue(c))) {
            pthread_mutex_unlock(&c->lock);
            run_request(c, o, r);
            pthread_mutex_lock(&c->lock);
        } else if (conn_unpublished(c, o)) {
            pthread_mutex_unlock(&c->lock);
            c->ops->publish(c, o);
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

/* SOFTDEV_THREAD_SERIALIZE: read, run and reply in this thread */
void conn_serve_serial(Conn *c, Out *o)
{
    struct softdev_req *r;

    for (;;) {
        pthread_mutex_lock(&c->lock);
        r = conn_closed(c) ? NULL : dequeue(c);
        pthread_mutex_unlock(&c->lock);
        if (r) {
            run_request(c, o, r);
            continue;
        }
        if (conn_closed(c)) {
            break;
        }
        c->ops->publish(c, o);
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
void conn_serve_parallel(Conn *c)
{
    pthread_t workers[SOFTDEV_PARALLEL_WORKERS];
    int started = 0, i;

    for (i = 0; i < SOFTDEV_PARALLEL_WORKERS; i++) {
        if (pthread_create(&workers[i], NULL, worker, c) != 0) {
            break;
        }
        started++;
    }
    if (!started) {
        conn_error(c, EAGAIN, "cannot start a worker thread");
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

int softdev_serve(const struct softdev_device *dev, void *handle, int fd,
                  const struct softdev_server_options *opts,
                  struct softdev_err **errp)
{
    const char *old_name = softdev_error_name_set(dev->name);
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    Out *o = NULL;
    Conn c;
    int ret = 0;

    if (conn_init(&c, dev, handle, fd, opts) < 0) {
        ret = -ENOMEM;              /* if even c.err could not be made */
    } else {
        if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == 0) {
            c.family = ss.ss_family;
        }
        if (c.family == AF_INET || c.family == AF_INET6) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        o = calloc(1, sizeof(*o));
        if (!o) {
            conn_error(&c, ENOMEM, "out of memory");
        } else if (conn_handshake(&c) == 0) {
            o->reader = true;
            if (c.parallel) {
                conn_serve_parallel(&c);
            } else {
                conn_serve_serial(&c, o);
            }
        } else if (!c.err) {
            /* It hung up while we answered */
            c.err = softdev_err_new(ECONNRESET, "client closed the "
                                    "connection during the handshake");
            ret = -ECONNRESET;
        }
    }
    conn_close(&c);
    if (o) {
        out_discard(&c, o);
        free(o);
    }
    conn_destroy(&c);
    if (c.err) {
        ret = -c.err->code;
    }
    if (errp) {
        *errp = c.err;
    } else {
        softdev_err_free(c.err);
    }
    softdev_error_name_set(old_name);
    return ret;
}

int softdev_serve_fd(const struct softdev_device *dev, void *handle, int fd)
{
    struct softdev_server_options opts = SOFTDEV_SERVER_OPTIONS_INIT;
    struct softdev_err *err = NULL;
    int ret;

    opts.on_failure = softdev_err_report;
    ret = softdev_serve(dev, handle, fd, &opts, &err);
    softdev_err_free(err);
    return ret < 0 ? -1 : 0;
}
