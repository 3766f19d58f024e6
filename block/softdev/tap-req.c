/*
 * softdev-tap: requests.  A request's state changes only in
 * softdev_tap_req_set() (where the counts, slots and the unsent suffix are
 * kept right), its verdict only in softdev_tap_decide(); on-disconnect,
 * timeouts and waking requests in batches live here too.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/timerfd.h>
#include "qemu/defer-call.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/memalign.h"
#include "qemu/timer.h"
#include "tap-int.h"
#include "trace/trace-block_softdev.h"

/*
 * An illegal transition is a bug of ours (tap-states.c stops a debug
 * build at it): tell the user and drop the connection, so that
 * on-disconnect decides for the requests, as after a crash of the
 * process.  Locked.
 */
void softdev_tap_bug(void *opaque, const char *machine, const char *from,
                     const char *to)
{
    SoftdevTap *s = opaque;

    error_report("softdev-tap '%s': illegal %s transition %s -> %s",
                 bdrv_get_node_name(s->bs), machine, from, to);
    softdev_alert(s->bs, SOFTDEV_SEVERITY_CRITICAL, -1, -1, NULL,
                  "internal error: illegal %s transition %s -> %s; "
                  "dropping the connection", machine, from, to);
    softdev_tap_drop(s, "internal error");
}

/* Locked */
void softdev_tap_req_set(SoftdevTap *s, SoftdevTapReq *tr,
                         SoftdevTapReqState state)
{
    SoftdevTapReqState old = tr->state;
    bool was_at = softdev_tap_req_at_process(old);
    bool at = softdev_tap_req_at_process(state);

    if (!softdev_tap_req_legal(old, state, softdev_tap_bug, s)) {
        return;
    }
    trace_softdev_tap_req_state(s->bs, tr->handle,
                                softdev_tap_req_state_name(old),
                                softdev_tap_req_state_name(state));
    tr->state = state;
    /* In the list (and counted) from QUEUED until DONE */
    if (old == SOFTDEV_TAP_REQ_NEW && state != SOFTDEV_TAP_REQ_DONE) {
        QTAILQ_INSERT_TAIL(&s->reqs, tr, next);
        if (!s->next_unsent) {
            s->next_unsent = tr;
        }
    } else if (old != SOFTDEV_TAP_REQ_NEW && state == SOFTDEV_TAP_REQ_DONE) {
        if (s->next_unsent == tr) {
            s->next_unsent = QTAILQ_NEXT(tr, next);
        }
        QTAILQ_REMOVE(&s->reqs, tr, next);
    }
    if (old != SOFTDEV_TAP_REQ_NEW) {
        s->count[old]--;
    }
    if (state != SOFTDEV_TAP_REQ_DONE) {
        s->count[state]++;
    }
    if (state == SOFTDEV_TAP_REQ_SENT && !was_at) {
        /* Sent in order: the unsent ones stay a suffix */
        assert(s->next_unsent == tr);
        s->next_unsent = QTAILQ_NEXT(tr, next);
    }
    if (was_at != at) {
        int d = at ? 1 : -1;

        if (tr->early == SOFTDEV_TAP_EARLY_RUNNING) {
            s->early_at_process += d;
        }
        if (!at && s->conn.shm && softdev_tap_connected(s)) {
            s->free_slots[s->nfree++] = tr->slot;
        }
        /* Room at the process: softdev_tap_unlock() sends the next one */
        if (!at && s->next_unsent) {
            s->pump_pending = true;
        }
    }
}

/* Locked (the coroutine of @tr) */
void softdev_tap_req_set_early(SoftdevTap *s, SoftdevTapReq *tr,
                               SoftdevTapEarly early)
{
    if (!softdev_tap_early_legal(tr->early, early, softdev_tap_bug, s)) {
        return;
    }
    if (softdev_tap_req_at_process(tr->state)) {
        s->early_at_process += early == SOFTDEV_TAP_EARLY_RUNNING ? 1 : -1;
    }
    tr->early = early;
}

/*
 * Decide @tr: record the verdict, take it off the list and queue its
 * coroutine for waking if it waits.  Locked.
 */
void softdev_tap_decide(SoftdevTap *s, SoftdevTapReq *tr,
                        SoftdevTapVerdict verdict, int result,
                        uint64_t fwd_offset)
{
    if (!softdev_tap_req_legal(tr->state, SOFTDEV_TAP_REQ_DONE,
                               softdev_tap_bug, s)) {
        return;     /* decided twice: the first verdict stands */
    }
    tr->verdict = verdict;
    tr->result = result;
    tr->fwd_offset = fwd_offset;
    softdev_tap_req_set(s, tr, SOFTDEV_TAP_REQ_DONE);
    if (tr->waiter) {
        tr->wake_next = s->wake_list;
        s->wake_list = tr;
    }
}

/*
 * Decide @tr, whose op needs a feature the process did not take
 * (softdev_tap_op_feature()): never let it change data unseen.  A
 * WRITE_ZEROES fails with -ENOTSUP, so that the block layer writes zeroed
 * buffers instead, as WRITEs the process sees; a DISCARD completes without
 * effect; a FLUSH, which changes no data, goes below.  Locked.
 */
void softdev_tap_decide_unwanted(SoftdevTap *s, SoftdevTapReq *tr)
{
    switch (tr->req->op) {
    case SOFTDEV_OP_WRITE_ZEROES:
        softdev_tap_decide(s, tr, SOFTDEV_TAP_VERDICT_COMPLETE, -ENOTSUP, 0);
        break;
    case SOFTDEV_OP_DISCARD:
        softdev_tap_decide(s, tr, SOFTDEV_TAP_VERDICT_COMPLETE, 0, 0);
        break;
    default:
        softdev_tap_decide(s, tr, SOFTDEV_TAP_VERDICT_FORWARD, 0,
                           tr->req->offset);
        break;
    }
}

/* Decide @tr as on-disconnect says for a missing process.  Locked. */
void softdev_tap_decide_by_policy(SoftdevTap *s, SoftdevTapReq *tr)
{
    if (s->cfg.on_disconnect == SOFTDEV_TAP_ON_DISCONNECT_PASSTHROUGH &&
        s->has_lower) {
        /* Unchanged: an early I/O that ran is the answer */
        softdev_tap_decide(s, tr, SOFTDEV_TAP_VERDICT_FORWARD_EARLY, 0,
                           tr->req->offset);
    } else {
        softdev_tap_decide(s, tr, SOFTDEV_TAP_VERDICT_COMPLETE, -EIO, 0);
    }
}

/*
 * Drop the lock and wake the coroutines whose requests were decided.
 *
 * In s->ctx this is a "turn": the woken requests go on to the node below,
 * whose completions often start new requests for us before the turn ends
 * (a guest's or qemu-img's next request).  Those wait in the send buffer
 * but for the first one, which goes at once so that the process has work
 * while we queue the rest; the rest go together when the turn ends, with
 * no BH (scheduling one from here would also write the AioContext's event
 * notifier, and the next iteration read it: two system calls per batch).
 */
void softdev_tap_unlock(SoftdevTap *s)
{
    bool notify;
    bool turn = s->ctx && qemu_get_current_aio_context() == s->ctx;

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
        s->turn_depth += turn;
        qemu_mutex_unlock(&s->lock);
        /*
         * The woken requests go on to the node below: let it submit them
         * together (one io_uring_enter or io_submit for the batch), as a
         * device model does for the requests of one notification.
         */
        defer_call_begin();
        while (tr) {
            SoftdevTapReq *next = tr->wake_next;
            Coroutine *co = tr->waiter;

            /* @tr lives on the coroutine's stack: read it before waking. */
            tr->waiter = NULL;
            aio_co_wake(co);
            tr = next;
        }
        defer_call_end();
        qemu_mutex_lock(&s->lock);
        if (turn && --s->turn_depth == 0) {
            s->turn_sent = false;
            if (s->publish_pending && softdev_tap_connected(s)) {
                s->publish_pending = false;
                s->transport->publish(s);
            }
            softdev_tap_flush(s);       /* may decide more: loop */
        }
    }
    notify = s->notify_deferred;
    qemu_mutex_unlock(&s->lock);
    if (notify) {
        softdev_tap_defer_notify(s);
    }
}

/* -- the watchdog ------------------------------------------------------- */

/*
 * Have the watchdog look at the oldest request in time.  Locked.
 *
 * The watchdog is a timerfd, not a QEMUTimer: a QEMUTimer's deadline
 * becomes the timeout of every sleep of the event loop, and the kernel
 * then starts and cancels a timer for each ppoll (one per batch of
 * requests); in a VM each costs an exit.  The timerfd is set once per
 * arming.
 */
void softdev_tap_watchdog_arm(SoftdevTap *s)
{
    SoftdevTapReq *tr = QTAILQ_FIRST(&s->reqs);
    struct itimerspec its = { 0 };
    int64_t now, ms;

    if (s->watchdog_at_ms || !tr || !tr->deadline_ms || !s->ctx) {
        return;
    }
    /*
     * A little late is fine: a tenth of the timeout.  A request that is
     * already late (it waits for the teardown) is looked at again after
     * that much time, not at once.
     */
    now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    ms = MAX(tr->deadline_ms - now, 0) + MAX(s->cfg.timeout_ms / 10, 10);
    its.it_value.tv_sec = ms / 1000;
    its.it_value.tv_nsec = (ms % 1000) * SCALE_MS;
    if (timerfd_settime(s->watchdog_fd, 0, &its, NULL) < 0) {
        /* Cannot happen with these arguments; never lose a timeout */
        error_report("softdev-tap '%s': cannot arm the watchdog: %s",
                     bdrv_get_node_name(s->bs), strerror(errno));
        return;
    }
    s->watchdog_at_ms = now + ms;
}

/*
 * Requests that waited longer than the timeout.  The list is in arrival
 * order, so the oldest deadlines come first.  Runs in s->ctx.
 */
static void softdev_tap_watchdog(void *opaque)
{
    SoftdevTap *s = opaque;
    int64_t now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    bool queue = s->cfg.on_disconnect == SOFTDEV_TAP_ON_DISCONNECT_QUEUE;
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
        SoftdevTapReqState st;
        bool drop;

        if (tr->deadline_ms > now) {
            break;
        }
        st = softdev_tap_req_on_timeout(tr->state, queue, &drop);
        if (st == tr->state) {
            continue;                   /* already handled */
        }
        s->timeouts++;
        softdev_alert(s->bs, SOFTDEV_SEVERITY_WARNING, tr->req->offset,
                      tr->req->bytes, NULL, "%s request at offset %" PRId64
                      " waited longer than %u s", SoftdevOp_str(tr->req->op),
                      tr->req->offset, s->cfg.timeout_ms / 1000);
        if (drop) {
            softdev_tap_drop(s, "a request timed out");
        }
        if (st == SOFTDEV_TAP_REQ_DONE) {
            softdev_tap_decide(s, tr, SOFTDEV_TAP_VERDICT_COMPLETE, -EIO, 0);
        } else {
            softdev_tap_req_set(s, tr, st);
        }
    }
    s->watchdog_at_ms = 0;
    softdev_tap_watchdog_arm(s);
    softdev_tap_unlock(s);
}

/* Let the watchdog run in s->ctx.  Locked (or not yet shared). */
void softdev_tap_watchdog_start(SoftdevTap *s)
{
    aio_set_fd_handler(s->ctx, s->watchdog_fd, softdev_tap_watchdog, NULL,
                       NULL, NULL, s);
    softdev_tap_watchdog_arm(s);
}

/* Stop the watchdog of s->ctx (before the node leaves it).  Locked. */
void softdev_tap_watchdog_stop(SoftdevTap *s)
{
    static const struct itimerspec off;

    aio_set_fd_handler(s->ctx, s->watchdog_fd, NULL, NULL, NULL, NULL, NULL);
    timerfd_settime(s->watchdog_fd, 0, &off, NULL);
    s->watchdog_at_ms = 0;
}
