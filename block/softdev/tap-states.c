/*
 * softdev-tap's state tables and rules; see tap-states.h.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <stdio.h>
#include <stdlib.h>
#include "tap-states.h"

#define BIT(x) (1u << (x))

/* Legal next states of each request state */
static const unsigned req_next[SOFTDEV_TAP_REQ__MAX] = {
    [SOFTDEV_TAP_REQ_NEW] = BIT(SOFTDEV_TAP_REQ_QUEUED) |
                            BIT(SOFTDEV_TAP_REQ_DONE),
    [SOFTDEV_TAP_REQ_QUEUED] = BIT(SOFTDEV_TAP_REQ_SENT) |
                               BIT(SOFTDEV_TAP_REQ_DONE),
    [SOFTDEV_TAP_REQ_REPLAY] = BIT(SOFTDEV_TAP_REQ_SENT) |
                               BIT(SOFTDEV_TAP_REQ_DONE),
    [SOFTDEV_TAP_REQ_SENT] = BIT(SOFTDEV_TAP_REQ_DONE) |
                             BIT(SOFTDEV_TAP_REQ_REPLAY) |
                             BIT(SOFTDEV_TAP_REQ_OVERDUE),
    [SOFTDEV_TAP_REQ_OVERDUE] = BIT(SOFTDEV_TAP_REQ_DONE) |
                                BIT(SOFTDEV_TAP_REQ_REPLAY),
    [SOFTDEV_TAP_REQ_DONE] = 0,
};

static const unsigned early_next[SOFTDEV_TAP_EARLY__MAX] = {
    [SOFTDEV_TAP_EARLY_NONE] = BIT(SOFTDEV_TAP_EARLY_RUNNING),
    [SOFTDEV_TAP_EARLY_RUNNING] = BIT(SOFTDEV_TAP_EARLY_FINISHED),
    [SOFTDEV_TAP_EARLY_FINISHED] = 0,
};

static const unsigned conn_next[SOFTDEV_TAP_CONN__MAX] = {
    [SOFTDEV_TAP_CONN_CONNECTING] = BIT(SOFTDEV_TAP_CONN_CONNECTED) |
                                    BIT(SOFTDEV_TAP_CONN_DISCONNECTED),
    [SOFTDEV_TAP_CONN_CONNECTED] = BIT(SOFTDEV_TAP_CONN_DRAINING) |
                                   BIT(SOFTDEV_TAP_CONN_CONNECTING) |
                                   BIT(SOFTDEV_TAP_CONN_DISCONNECTED),
    [SOFTDEV_TAP_CONN_DRAINING] = BIT(SOFTDEV_TAP_CONN_CONNECTING) |
                                  BIT(SOFTDEV_TAP_CONN_DISCONNECTED),
    [SOFTDEV_TAP_CONN_DISCONNECTED] = BIT(SOFTDEV_TAP_CONN_CONNECTING),
};

static const char *const req_names[SOFTDEV_TAP_REQ__MAX] = {
    [SOFTDEV_TAP_REQ_NEW] = "new",
    [SOFTDEV_TAP_REQ_QUEUED] = "queued",
    [SOFTDEV_TAP_REQ_REPLAY] = "replay",
    [SOFTDEV_TAP_REQ_SENT] = "sent",
    [SOFTDEV_TAP_REQ_OVERDUE] = "overdue",
    [SOFTDEV_TAP_REQ_DONE] = "done",
};

static const char *const early_names[SOFTDEV_TAP_EARLY__MAX] = {
    [SOFTDEV_TAP_EARLY_NONE] = "none",
    [SOFTDEV_TAP_EARLY_RUNNING] = "running",
    [SOFTDEV_TAP_EARLY_FINISHED] = "finished",
};

static const char *const conn_names[SOFTDEV_TAP_CONN__MAX] = {
    [SOFTDEV_TAP_CONN_CONNECTING] = "connecting",
    [SOFTDEV_TAP_CONN_CONNECTED] = "connected",
    [SOFTDEV_TAP_CONN_DRAINING] = "draining",
    [SOFTDEV_TAP_CONN_DISCONNECTED] = "disconnected",
};

static bool in_table(const unsigned *next, unsigned n, unsigned from,
                     unsigned to)
{
    return from < n && to < n && (next[from] & BIT(to));
}

bool softdev_tap_req_transition_ok(SoftdevTapReqState from,
                                   SoftdevTapReqState to)
{
    return in_table(req_next, SOFTDEV_TAP_REQ__MAX, from, to);
}

bool softdev_tap_early_transition_ok(SoftdevTapEarly from, SoftdevTapEarly to)
{
    return in_table(early_next, SOFTDEV_TAP_EARLY__MAX, from, to);
}

bool softdev_tap_conn_transition_ok(SoftdevTapConnState from,
                                    SoftdevTapConnState to)
{
    return in_table(conn_next, SOFTDEV_TAP_CONN__MAX, from, to);
}

const char *softdev_tap_req_state_name(SoftdevTapReqState st)
{
    return (unsigned)st < SOFTDEV_TAP_REQ__MAX ? req_names[st] : "invalid";
}

const char *softdev_tap_early_state_name(SoftdevTapEarly st)
{
    return (unsigned)st < SOFTDEV_TAP_EARLY__MAX ? early_names[st] : "invalid";
}

const char *softdev_tap_conn_state_name(SoftdevTapConnState st)
{
    return (unsigned)st < SOFTDEV_TAP_CONN__MAX ? conn_names[st] : "invalid";
}

static bool legal(bool ok, const char *machine, const char *from,
                  const char *to, SoftdevTapBugFn *bug, void *opaque)
{
    if (ok) {
        return true;
    }
    if (SOFTDEV_TAP_ASSERT_TRANSITIONS) {
        fprintf(stderr, "softdev-tap: illegal %s transition %s -> %s\n",
                machine, from, to);
        abort();
    }
    bug(opaque, machine, from, to);
    return false;
}

bool softdev_tap_req_legal(SoftdevTapReqState from, SoftdevTapReqState to,
                           SoftdevTapBugFn *bug, void *opaque)
{
    return legal(softdev_tap_req_transition_ok(from, to), "request",
                 softdev_tap_req_state_name(from),
                 softdev_tap_req_state_name(to), bug, opaque);
}

bool softdev_tap_early_legal(SoftdevTapEarly from, SoftdevTapEarly to,
                             SoftdevTapBugFn *bug, void *opaque)
{
    return legal(softdev_tap_early_transition_ok(from, to), "early I/O",
                 softdev_tap_early_state_name(from),
                 softdev_tap_early_state_name(to), bug, opaque);
}

bool softdev_tap_conn_legal(SoftdevTapConnState from, SoftdevTapConnState to,
                            SoftdevTapBugFn *bug, void *opaque)
{
    return legal(softdev_tap_conn_transition_ok(from, to), "connection",
                 softdev_tap_conn_state_name(from),
                 softdev_tap_conn_state_name(to), bug, opaque);
}

bool softdev_tap_req_at_process(SoftdevTapReqState st)
{
    return st == SOFTDEV_TAP_REQ_SENT || st == SOFTDEV_TAP_REQ_OVERDUE;
}

SoftdevTapReqState softdev_tap_req_on_disconnect(SoftdevTapReqState st,
                                                 bool queue)
{
    if (!queue) {
        return SOFTDEV_TAP_REQ_DONE;            /* on-disconnect decides */
    }
    return softdev_tap_req_at_process(st) ? SOFTDEV_TAP_REQ_REPLAY : st;
}

SoftdevTapReqState softdev_tap_req_on_timeout(SoftdevTapReqState st,
                                              bool queue, bool *drop)
{
    *drop = false;
    switch (st) {
    case SOFTDEV_TAP_REQ_SENT:
        /* The process hangs: drop it.  With queue only this one fails. */
        *drop = true;
        return queue ? SOFTDEV_TAP_REQ_DONE : SOFTDEV_TAP_REQ_OVERDUE;
    case SOFTDEV_TAP_REQ_OVERDUE:
        return st;                              /* the teardown decides */
    default:
        return SOFTDEV_TAP_REQ_DONE;            /* never sent: fails */
    }
}
