/*
 * libsoftdev transport through the rings (SOFTDEV_TAP_F_RING): REQUESTs
 * are taken from the request ring in the shared memory, and each REPLY
 * is posted in the reply ring as soon as its callback returns.  The
 * client, if it sleeps, is KICKed when a thread publishes (it has no
 * more queued requests, or a callback was slow), once for what a batch
 * gave.  KICKs and LOWER_* messages travel on the socket (stream.c).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#define _GNU_SOURCE
#include <stdlib.h>

#include "server-internal.h"

/*
 * TransportOps.post: a REPLY goes into the reply ring, where the client
 * sees it at once if it polls; a LOWER_REQUEST is a socket message.
 */
static void ring_post(Conn *c, Out *o, const TransportMsg *m)
{
    if (m->type != SOFTDEV_TAP_REPLY) {
        stream_transport.post(c, o, m);
        return;
    }
    /*
     * The client may reuse the handle and slot once it sees the reply:
     * forget them first.  m->r is not used after this.
     */
    pthread_mutex_lock(&c->lock);
    conn_release(c, m->r);
    m->r->next = c->free_reqs;
    c->free_reqs = m->r;
    pthread_mutex_unlock(&c->lock);

    pthread_mutex_lock(&c->send_lock);
    if (!conn_closed(c)) {
        uint8_t *entry = softdev_tap_ring_entry(c->ring, c->ring_entries,
                                                SOFTDEV_TAP_RING_REPLIES,
                                                c->rep_prod++);

        softdev_tap_encode_reply(entry, SOFTDEV_TAP_REPLY, m->handle, true,
                                 m->rep);
        __atomic_store_n(softdev_tap_ring_word(c->ring,
                                               SOFTDEV_TAP_RING_REP_PROD),
                         c->rep_prod, __ATOMIC_RELEASE);
        __atomic_store_n(&c->unkicked, true, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&c->send_lock);
}

/*
 * TransportOps.publish: KICK the client if replies were posted since we
 * last looked and it waits for one; then send @o's socket messages.
 */
static void ring_publish(Conn *c, Out *o)
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

        stream_send(c, &iov, 1, o->reader);
    }
    out_flush(c, o);
}

/* A socket message beside the rings: KICK, LOWER_REPLY */
static const char *ring_socket_msg(void *opaque, const SoftdevTapHeader *h,
                                   const uint8_t *payload)
{
    if (h->type == SOFTDEV_TAP_KICK) {
        return NULL;                /* the ring is looked at anyway */
    }
    if (h->type == SOFTDEV_TAP_REQUEST) {
        return "unexpected message type from the client";
    }
    return conn_run_msg(opaque, h, payload);
}

/* TransportOps.take: the socket's messages, then the request ring */
static const char *ring_take(Conn *c, Taken *t)
{
    const char *err = stream_frames(c, PHASE_RUN, ring_socket_msg, t);

    if (!err && !conn_closed(c)) {
        softdev_tap_ring_take(c->ring, c->ring_entries,
                              SOFTDEV_TAP_RING_REQUESTS, &c->req_cons,
                              conn_take_request, t, &err);
    }
    return err;
}

const TransportOps ring_transport = {
    .post = ring_post,
    .publish = ring_publish,
    .take = ring_take,
};
