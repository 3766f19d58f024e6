/*
 * libsoftdev I/O on the node below, from a callback: softdev_lower_*()
 * send LOWER_REQUESTs and wait for their LOWER_REPLYs (the serialize
 * model reads the socket itself meanwhile); softdev_forward_to() and
 * softdev_req_is_replay() describe the request being served.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "server-internal.h"

static int lower_one(struct softdev_req *r, uint16_t op, uint64_t off,
                     uint64_t len, const void *wdata, void *rbuf,
                     uint32_t flags)
{
    Conn *c = r->conn;
    Waiter w = {
        .req = { .op = op, .req_flags = flags, .offset = off, .bytes = len },
        .buf = rbuf,
    };
    TransportMsg m = {
        .type = SOFTDEV_TAP_LOWER_REQUEST, .req = &w.req, .data = wdata,
        .dlen = op == SOFTDEV_TAP_OP_WRITE ? len : 0,
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
    w.handle = m.handle = ++c->next_lower_handle;
    w.next = c->waiters;
    c->waiters = &w;
    out_release(c, r->out);
    pthread_mutex_unlock(&c->lock);

    /* Sent with the replies this thread gathered (or posted) so far */
    c->ops->post(c, r->out, &m);
    c->ops->publish(c, r->out);

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

void *softdev_req_data(struct softdev_req *r)
{
    return r->data;
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
        if (data != r->data) {
            memmove(r->data, data, r->req.bytes);
        }
        r->fwd_data = true;
    }
    return SOFTDEV_FORWARD;
}

/* Handle one LOWER_REPLY: wake its waiter; NULL or a protocol error */
const char *conn_lower_reply(Conn *c, const SoftdevTapHeader *h,
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
