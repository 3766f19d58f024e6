/*
 * softdev-tap: the request path.  softdev_tap_co_request() admits a
 * request, sends it, may do its I/O below early while the process
 * decides, waits for the verdict and carries it out through the core's
 * "next"; replies and the process's own requests on the node below
 * (LOWER_REQUESTs) come in here too.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/coroutine.h"
#include "qemu/iov.h"
#include "qemu/lockable.h"
#include "qemu/memalign.h"
#include "qemu/timer.h"
#include "tap-int.h"

/* Our SoftdevOp and the wire's ops have the same numbers. */
QEMU_BUILD_BUG_ON((int)SOFTDEV_OP_READ != SOFTDEV_TAP_OP_READ ||
                  (int)SOFTDEV_OP_WRITE != SOFTDEV_TAP_OP_WRITE ||
                  (int)SOFTDEV_OP_WRITE_ZEROES != SOFTDEV_TAP_OP_WRITE_ZEROES ||
                  (int)SOFTDEV_OP_DISCARD != SOFTDEV_TAP_OP_DISCARD ||
                  (int)SOFTDEV_OP_FLUSH != SOFTDEV_TAP_OP_FLUSH);

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

/*
 * Send unsent requests, in order, while the process has room, and make
 * them visible to it.  Locked.
 */
void softdev_tap_pump(SoftdevTap *s)
{
    bool posted = false;

    while (s->conn_state == SOFTDEV_TAP_CONN_CONNECTED && s->next_unsent &&
           s->count[SOFTDEV_TAP_REQ_SENT] + s->count[SOFTDEV_TAP_REQ_OVERDUE] <
           s->conn.max_inflight) {
        SoftdevTapReq *tr = s->next_unsent;
        SoftdevRequest *req = tr->req;
        SoftdevTapRequest wire = softdev_tap_wire(req);

        if ((req->flags & BDRV_REQ_FUA) &&
            (s->conn.features & SOFTDEV_TAP_F_FUA)) {
            wire.req_flags |= SOFTDEV_TAP_REQ_FUA;
        }
        if (req->op == SOFTDEV_OP_WRITE_ZEROES &&
            (req->flags & BDRV_REQ_MAY_UNMAP)) {
            wire.req_flags |= SOFTDEV_TAP_REQ_MAY_UNMAP;
        }
        if (req->op == SOFTDEV_OP_READ &&
            (s->conn.features & SOFTDEV_TAP_F_READ_BELOW) &&
            tr->early == SOFTDEV_TAP_EARLY_FINISHED && tr->early_ret >= 0) {
            /* The guest's buffer holds the data below: it goes along */
            wire.req_flags |= SOFTDEV_TAP_REQ_BELOW;
        }
        if (s->conn.shm) {
            assert(s->nfree);
            tr->slot = wire.slot = s->free_slots[--s->nfree];
            if ((req->op == SOFTDEV_OP_WRITE &&
                 !(s->conn.features & SOFTDEV_TAP_F_NO_WRITE_DATA)) ||
                (wire.req_flags & SOFTDEV_TAP_REQ_BELOW)) {
                qemu_iovec_to_buf(req->qiov, req->qiov_offset,
                                  softdev_tap_slot(s, tr->slot), req->bytes);
            }
        }
        s->transport->post(s, tr, &wire);
        softdev_tap_req_set(s, tr, SOFTDEV_TAP_REQ_SENT);
        posted = true;
    }
    if (posted) {
        s->transport->publish(s);
    }
}

/* The request at the process with @handle, or NULL.  Locked. */
static SoftdevTapReq *softdev_tap_find(SoftdevTap *s, uint64_t handle)
{
    SoftdevTapReq *tr;

    QTAILQ_FOREACH(tr, &s->reqs, next) {
        if (tr->handle == handle && softdev_tap_req_at_process(tr->state)) {
            return tr;
        }
    }
    return NULL;
}

/*
 * Bounce buffers, for a process's data that the request's coroutine uses
 * after the slot went back (a FORWARDed write's new data, a read's data
 * that came during its early read), from the core's pool.
 */

/* @tr's bounce buffer: a copy of @len bytes of @data.  Locked. */
static bool softdev_tap_bounce_get(SoftdevTap *s, SoftdevTapReq *tr,
                                   const uint8_t *data, size_t len)
{
    tr->bounce = softdev_bounce_get(s->bs, len);
    tr->bounce_size = len;
    if (tr->bounce) {
        memcpy(tr->bounce, data, len);
    }
    return tr->bounce;
}

/* Done with @tr's bounce buffer, if any */
static void softdev_tap_bounce_put(SoftdevTap *s, SoftdevTapReq *tr)
{
    softdev_bounce_put(s->bs, tr->bounce, tr->bounce_size);
    tr->bounce = NULL;
}

/* A REPLY: returns an error message or NULL.  Locked. */
const char *softdev_tap_got_reply(SoftdevTap *s, const SoftdevTapHeader *hdr,
                                  const uint8_t *payload)
{
    SoftdevTapReq *tr = softdev_tap_find(s, hdr->handle);
    const char *err = NULL;
    SoftdevTapRequest wire;
    SoftdevTapReply rep;
    SoftdevRequest *req;
    const uint8_t *data;
    bool promised;

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
    promised = s->conn.features & softdev_tap_op_early_feature(req->op);
    if (req->op == SOFTDEV_OP_WRITE &&
        (s->conn.features & SOFTDEV_TAP_F_EARLY_WRITE) &&
        !softdev_tap_early_write_kept(&rep, req->offset)) {
        /* We may have written it below already */
        return "a WRITE completed, moved or changed despite early writes";
    }
    data = s->conn.shm ? softdev_tap_slot(s, tr->slot) :
                         payload + SOFTDEV_TAP_REPLY_SIZE;
    if (rep.action == SOFTDEV_TAP_FORWARD) {
        bool unchanged = rep.offset == (uint64_t)req->offset && !rep.bytes;

        if (rep.offset > s->lower_size ||
            wire.bytes > s->lower_size - rep.offset) {
            return "forward beyond the end of the node below";
        }
        if (rep.bytes && !softdev_tap_bounce_get(s, tr, data, rep.bytes)) {
            softdev_tap_decide(s, tr, SOFTDEV_TAP_VERDICT_COMPLETE, -ENOMEM,
                               0);
            return NULL;
        }
        softdev_tap_decide(s, tr, unchanged && promised ?
                           SOFTDEV_TAP_VERDICT_FORWARD_EARLY :
                           SOFTDEV_TAP_VERDICT_FORWARD, 0, rep.offset);
        return NULL;
    }
    if (rep.bytes && tr->early == SOFTDEV_TAP_EARLY_RUNNING) {
        /* The early read still writes the buffer: copy after it ended */
        if (!softdev_tap_bounce_get(s, tr, data, rep.bytes)) {
            rep.result = -ENOMEM;
        }
    } else if (rep.bytes) {
        qemu_iovec_from_buf(req->qiov, req->qiov_offset, data, rep.bytes);
    }
    softdev_tap_decide(s, tr, SOFTDEV_TAP_VERDICT_COMPLETE, rep.result, 0);
    return NULL;
}

/* Carry out @tr's verdict (its coroutine, unlocked) */
static int coroutine_fn GRAPH_RDLOCK
softdev_tap_co_carry_out(BlockDriverState *bs, SoftdevTapReq *tr,
                         SoftdevNextFn *next)
{
    SoftdevRequest *req = tr->req;
    SoftdevRequest fwd;
    QEMUIOVector qiov;
    int ret;

    switch (tr->verdict) {
    case SOFTDEV_TAP_VERDICT_COMPLETE:
        if (tr->bounce && tr->result >= 0) {
            qemu_iovec_from_buf(req->qiov, req->qiov_offset, tr->bounce,
                                req->bytes);
        }
        softdev_tap_bounce_put(tr->s, tr);
        return tr->result;
    case SOFTDEV_TAP_VERDICT_FORWARD_EARLY:
        if (tr->early == SOFTDEV_TAP_EARLY_FINISHED) {
            return tr->early_ret;   /* forwarded unchanged: that was it */
        }
        /* fall through */
    case SOFTDEV_TAP_VERDICT_FORWARD:
        /*
         * Also after an early I/O whose process changed its answer (a
         * replay to a process without the promise may have changed the
         * node below before it forwarded a read; an early write stays
         * where it went and, forwarded unchanged, is simply written
         * again).
         */
        fwd = *req;
        fwd.offset = tr->fwd_offset;
        if (tr->bounce) {
            qemu_iovec_init_buf(&qiov, tr->bounce, req->bytes);
            fwd.qiov = &qiov;
            fwd.qiov_offset = 0;
        }
        ret = next(bs, &fwd);
        softdev_tap_bounce_put(tr->s, tr);
        return ret;
    default:
        g_assert_not_reached();
    }
}

/*
 * Admit @tr: decide it at once if the process cannot have it, else queue
 * and send it.  Locked.
 */
static void softdev_tap_admit(SoftdevTap *s, SoftdevTapReq *tr)
{
    SoftdevRequest *req = tr->req;
    bool conn = s->conn_state == SOFTDEV_TAP_CONN_CONNECTED ||
                s->conn_state == SOFTDEV_TAP_CONN_DRAINING;
    uint64_t gate = softdev_tap_op_feature(req->op);

    if (!conn && s->cfg.on_disconnect != SOFTDEV_TAP_ON_DISCONNECT_QUEUE) {
        softdev_tap_decide_by_policy(s, tr);
        return;
    }
    if (conn && gate && !(s->conn.features & gate)) {
        /* The process did not ask for it (while queued: decided later). */
        softdev_tap_decide_unwanted(s, tr);
        return;
    }
    tr->handle = ++s->next_handle;
    if (s->cfg.timeout_ms) {
        /* start_ns is QEMU_CLOCK_REALTIME (get_clock()): no second read */
        tr->deadline_ms = req->start_ns / SCALE_MS + s->cfg.timeout_ms;
    }
    softdev_tap_req_set(s, tr, SOFTDEV_TAP_REQ_QUEUED);
    softdev_tap_watchdog_arm(s);
    softdev_tap_pump(s);
    /*
     * The process promised that a READ it forwards unchanged may get data
     * read as soon as it was sent (SOFTDEV_TAP_F_EARLY_READ), or that it
     * forwards every WRITE unchanged or fails it
     * (SOFTDEV_TAP_F_EARLY_WRITE): if the request went now, do its I/O
     * below while the process decides, so that the answer overlaps with
     * the I/O instead of preceding it.
     */
    if (tr->state == SOFTDEV_TAP_REQ_SENT && s->has_lower &&
        tr->early == SOFTDEV_TAP_EARLY_NONE &&
        (s->conn.features & softdev_tap_op_early_feature(req->op))) {
        softdev_tap_req_set_early(s, tr, SOFTDEV_TAP_EARLY_RUNNING);
    }
}

/*
 * @tr's I/O below, done now as its early I/O (the state is RUNNING): the
 * lock is dropped for it.  Locked; returns locked.
 */
static void coroutine_fn GRAPH_RDLOCK
softdev_tap_co_early_io(SoftdevTap *s, SoftdevTapReq *tr, SoftdevNextFn *next)
{
    softdev_tap_unlock(s);
    tr->early_ret = next(s->bs, tr->req);
    qemu_mutex_lock(&s->lock);
    softdev_tap_req_set_early(s, tr, SOFTDEV_TAP_EARLY_FINISHED);
}

int coroutine_fn GRAPH_RDLOCK
softdev_tap_co_request(BlockDriverState *bs, SoftdevRequest *req,
                       SoftdevNextFn *next)
{
    SoftdevTap *s = softdev_opaque(bs);
    SoftdevTapReq tr = { .s = s, .req = req };
    bool wait;

    qemu_mutex_lock(&s->lock);
    if (req->op == SOFTDEV_OP_READ && s->has_lower &&
        softdev_tap_connected(s) &&
        (s->conn.features & SOFTDEV_TAP_F_READ_BELOW)) {
        /*
         * The process transforms what lies below (SOFTDEV_TAP_F_READ_BELOW):
         * read it first, and it goes along with the request, which saves
         * the process a LOWER_REQUEST and a round trip.  A failed read
         * fails the request here.
         */
        softdev_tap_req_set_early(s, &tr, SOFTDEV_TAP_EARLY_RUNNING);
        softdev_tap_co_early_io(s, &tr, next);
        if (tr.early_ret < 0) {
            qemu_mutex_unlock(&s->lock);
            return tr.early_ret;
        }
    }
    softdev_tap_admit(s, &tr);
    if (tr.early == SOFTDEV_TAP_EARLY_RUNNING) {
        /*
         * The I/O is ours (no coroutine of its own); a reply that comes
         * meanwhile is only recorded, and found here, with no wake-up.
         */
        softdev_tap_co_early_io(s, &tr, next);
        if (tr.state != SOFTDEV_TAP_REQ_DONE && s->transport) {
            /* Its reply may be in the ring, with no KICK: look */
            s->transport->take(s);
        }
    }
    /*
     * Sending may have dropped the connection and decided other requests
     * (and this one): softdev_tap_unlock() wakes them, after we yielded
     * (aio_co_wake from a coroutine defers the wake-up).
     */
    wait = tr.state != SOFTDEV_TAP_REQ_DONE;
    if (wait) {
        tr.waiter = qemu_coroutine_self();
    }
    softdev_tap_unlock(s);
    if (wait) {
        qemu_coroutine_yield();
    }
    assert(tr.state == SOFTDEV_TAP_REQ_DONE);
    return softdev_tap_co_carry_out(bs, &tr, next);
}

/* -- the process's requests on the node below ---------------------------- */

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
    QEMUIOVector qiov;
    SoftdevRequest req = {
        .op = l->req.op,
        .offset = l->req.offset,
        .bytes = l->req.bytes,
    };
    int ret;

    if (l->req.req_flags & SOFTDEV_TAP_REQ_FUA) {
        req.flags |= BDRV_REQ_FUA;
    }
    if (l->req.req_flags & SOFTDEV_TAP_REQ_MAY_UNMAP) {
        req.flags |= BDRV_REQ_MAY_UNMAP;
    }
    if (req.op == SOFTDEV_OP_READ || req.op == SOFTDEV_OP_WRITE) {
        qemu_iovec_init_buf(&qiov, l->buf, l->req.bytes);
        req.qiov = &qiov;
    }
    bdrv_graph_co_rdlock();
    ret = softdev_co_forward(bs, &req);
    bdrv_graph_co_rdunlock();

    rep.result = ret < 0 ? ret : 0;
    if (l->req.op == SOFTDEV_TAP_OP_READ && ret >= 0) {
        rep.bytes = l->req.bytes;
    }
    qemu_mutex_lock(&s->lock);
    /* The results of a dead connection's lower requests are dropped. */
    if (s->conn_state == SOFTDEV_TAP_CONN_CONNECTED &&
        s->generation == l->generation) {
        uint8_t *p = softdev_tap_buf_reserve(&s->sbuf, SOFTDEV_TAP_HDR_SIZE +
                                             SOFTDEV_TAP_LOWER_REPLY_SIZE +
                                             rep.bytes);
        size_t len = softdev_tap_encode_reply(p, SOFTDEV_TAP_LOWER_REPLY,
                                              l->handle, false, &rep);

        memcpy(p + len, l->buf, rep.bytes);
        s->sbuf.len += len + rep.bytes;
        softdev_tap_send(s);
    }
    if (--s->lower_inflight == 0) {
        qemu_cond_broadcast(&s->cond);
    }
    softdev_tap_unlock(s);      /* sending may have dropped the connection */
    qemu_vfree(l->buf);
    g_free(l);
    bdrv_dec_in_flight(bs);
}

/* A LOWER_REQUEST: returns an error message or NULL.  Locked. */
const char *softdev_tap_got_lower(SoftdevTap *s, const SoftdevTapHeader *hdr,
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
