/*
 * libsoftdev transport over the byte stream: messages on the socket.
 * Replies (and LOWER_REQUESTs) a thread posts are gathered and sent with
 * one sendmsg() when it publishes (it has nothing left to run, a batch is
 * full, or a callback was slow); the reading side parses every complete
 * message in its receive buffer.  ring.c uses the same socket for KICKs
 * and LOWER_* messages.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server-internal.h"

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
int stream_send(Conn *c, struct iovec *iov, int niov, bool reader)
{
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = niov };
    bool may_read = reader && c->phase == PHASE_RUN;
    int ret = 0;

    pthread_mutex_lock(&c->send_lock);
    if (conn_closed(c)) {
        ret = -1;
        goto out;
    }
    if (c->fd < 0) {
        goto out;                   /* fed by a test: nobody reads it */
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
            conn_error(c, errno, "send failed: %s", strerror(errno));
        }
        conn_close(c);
    }
    return ret;
}

/* Called with c->lock held: forget the handles of gathered replies */
void out_release(Conn *c, Out *o)
{
    for (; o->nreleased < o->ndone; o->nreleased++) {
        conn_release(c, o->done[o->nreleased]);
    }
}

/* Send what @o gathered and recycle its requests */
void out_flush(Conn *c, Out *o)
{
    int i;

    if (o->nmsg) {
        if (o->nreleased < o->ndone) {
            pthread_mutex_lock(&c->lock);
            out_release(c, o);
            pthread_mutex_unlock(&c->lock);
        }
        stream_send(c, o->iov, o->niov, o->reader);
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
}

/* Drop what @o gathered (the connection is gone) */
void out_discard(Conn *c, Out *o)
{
    o->nmsg = o->niov = 0;
    out_flush(c, o);
}

/* TransportOps.post: encode @m into @o; send the batch when it is full */
static void stream_post(Conn *c, Out *o, const TransportMsg *m)
{
    struct iovec *last = o->niov ? &o->iov[o->niov - 1] : NULL;
    uint8_t *msg;
    size_t len;

    if (o->nmsg == OUT_MSGS) {
        out_flush(c, o);
        last = NULL;
    }
    msg = o->msg[o->nmsg++];
    if (m->type == SOFTDEV_TAP_REPLY) {
        len = softdev_tap_encode_reply(msg, SOFTDEV_TAP_REPLY, m->handle,
                                       c->shm != NULL, m->rep);
    } else {
        len = softdev_tap_encode_request(msg, m->type, m->handle, 0, false,
                                         m->req);
    }
    if (last && (uint8_t *)last->iov_base + last->iov_len == msg) {
        last->iov_len += len;       /* headers are contiguous */
    } else {
        o->iov[o->niov++] = (struct iovec){ msg, len };
    }
    if (m->dlen) {
        o->iov[o->niov++] = (struct iovec){ (void *)m->data, m->dlen };
        o->data += m->dlen;
    }
    if (m->r) {
        o->done[o->ndone++] = m->r;
    }
    if (o->nmsg == OUT_MSGS || o->data >= OUT_BYTES) {
        out_flush(c, o);
    }
}

/* TransportOps.publish: send what @o gathered */
static void stream_publish(Conn *c, Out *o)
{
    out_flush(c, o);
}

/*
 * Give every complete message in the receive buffer to @fn while the
 * connection is in @phase (a handshake message moves it on).  Returns
 * NULL, or the protocol error of a malformed header or of @fn.
 */
const char *stream_frames(Conn *c, int phase, ConnMsgFn *fn, void *opaque)
{
    const char *err = NULL;

    while (!err && c->phase == phase && !conn_closed(c) &&
           c->rend - c->rstart >= SOFTDEV_TAP_HDR_SIZE) {
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
        c->rstart += len;
        err = fn(opaque, &h, p + SOFTDEV_TAP_HDR_SIZE);
    }
    if (c->rend - c->rstart < SOFTDEV_TAP_HDR_SIZE) {
        c->rwant = SOFTDEV_TAP_HDR_SIZE;
    }
    return err;
}

/* TransportOps.take: the socket's messages (no KICKs without rings) */
static const char *stream_take(Conn *c, Taken *t)
{
    return stream_frames(c, PHASE_RUN, conn_run_msg, t);
}

const TransportOps stream_transport = {
    .post = stream_post,
    .publish = stream_publish,
    .take = stream_take,
};
