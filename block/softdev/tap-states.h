/*
 * softdev-tap's two state machines, as plain C (no QEMU headers) so that
 * a unit test drives them without a VM: where a request is
 * (SoftdevTapReqState), what its own early I/O does (SoftdevTapEarly),
 * and the connection (SoftdevTapConnState).  The tables say which
 * transitions are legal; the rules say what a request becomes on each
 * event.  tap-req.c and tap-conn.c change states only through them.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef BLOCK_SOFTDEV_TAP_STATES_H
#define BLOCK_SOFTDEV_TAP_STATES_H

#include <stdbool.h>

/*
 *   NEW --admit--> QUEUED --post--> SENT --answer--> DONE
 *    |               |               |  \--timeout (queue)--> DONE
 *    |               |               |--timeout--> OVERDUE --> DONE
 *    |               |               '--disconnect (queue)--> REPLAY
 *    |               '--policy, timeout, op not wanted--> DONE
 *    '--decided at once--> DONE          REPLAY --post--> SENT
 *                                        REPLAY --> DONE (as QUEUED)
 */
typedef enum SoftdevTapReqState {
    SOFTDEV_TAP_REQ_NEW,        /* not yet in the node's list */
    SOFTDEV_TAP_REQ_QUEUED,     /* waits to be sent */
    /* Was at a process that went away; waits to be sent again, flagged */
    SOFTDEV_TAP_REQ_REPLAY,
    SOFTDEV_TAP_REQ_SENT,       /* at the process, unanswered */
    /*
     * At the process past its timeout; the connection is being dropped
     * and on-disconnect will decide
     */
    SOFTDEV_TAP_REQ_OVERDUE,
    SOFTDEV_TAP_REQ_DONE,       /* decided, out of the list */
    SOFTDEV_TAP_REQ__MAX,
} SoftdevTapReqState;

/* NONE --> RUNNING --> FINISHED: the request's coroutine does its I/O */
typedef enum SoftdevTapEarly {
    SOFTDEV_TAP_EARLY_NONE,
    SOFTDEV_TAP_EARLY_RUNNING,
    SOFTDEV_TAP_EARLY_FINISHED,
    SOFTDEV_TAP_EARLY__MAX,
} SoftdevTapEarly;

/*
 *   CONNECTING --install--> CONNECTED --drop--> DRAINING
 *        ^                   |                   |
 *        '----teardown-------+-------------------'  (reconnecting)
 *   DISCONNECTED: teardown without reconnecting, or closing;
 *   reopen may start connecting again.
 */
typedef enum SoftdevTapConnState {
    SOFTDEV_TAP_CONN_CONNECTING,    /* no connection; the connector tries */
    SOFTDEV_TAP_CONN_CONNECTED,
    SOFTDEV_TAP_CONN_DRAINING,      /* socket shut down, teardown pending */
    SOFTDEV_TAP_CONN_DISCONNECTED,  /* no connection, no attempts */
    SOFTDEV_TAP_CONN__MAX,
} SoftdevTapConnState;

bool softdev_tap_req_transition_ok(SoftdevTapReqState from,
                                   SoftdevTapReqState to);
bool softdev_tap_early_transition_ok(SoftdevTapEarly from,
                                     SoftdevTapEarly to);
bool softdev_tap_conn_transition_ok(SoftdevTapConnState from,
                                    SoftdevTapConnState to);
const char *softdev_tap_req_state_name(SoftdevTapReqState st);
const char *softdev_tap_early_state_name(SoftdevTapEarly st);
const char *softdev_tap_conn_state_name(SoftdevTapConnState st);

/* Whether a request in @st is at the process (holds a slot) */
bool softdev_tap_req_at_process(SoftdevTapReqState st);

/* Rules: the state a request in @st takes on an event */

/* The connection went away; @queue: on-disconnect=queue */
SoftdevTapReqState softdev_tap_req_on_disconnect(SoftdevTapReqState st,
                                                 bool queue);

/*
 * Its deadline passed.  *@drop: the connection must be dropped (the
 * process holds it too long).  A request that becomes DONE fails with
 * -EIO.
 */
SoftdevTapReqState softdev_tap_req_on_timeout(SoftdevTapReqState st,
                                              bool queue, bool *drop);

/*
 * Checking a move: true if the table allows it.  An illegal move is a
 * bug: a debug build prints it and aborts; a release build calls @bug
 * (QEMU: a critical alert, and the connection is dropped so that
 * on-disconnect decides for the requests) and returns false, and the
 * caller leaves the state as it was.
 */
typedef void SoftdevTapBugFn(void *opaque, const char *machine,
                             const char *from, const char *to);

bool softdev_tap_req_legal(SoftdevTapReqState from, SoftdevTapReqState to,
                           SoftdevTapBugFn *bug, void *opaque);
bool softdev_tap_early_legal(SoftdevTapEarly from, SoftdevTapEarly to,
                             SoftdevTapBugFn *bug, void *opaque);
bool softdev_tap_conn_legal(SoftdevTapConnState from, SoftdevTapConnState to,
                            SoftdevTapBugFn *bug, void *opaque);

#ifndef SOFTDEV_TAP_ASSERT_TRANSITIONS
#ifdef __OPTIMIZE__
#define SOFTDEV_TAP_ASSERT_TRANSITIONS 0    /* release build */
#else
#define SOFTDEV_TAP_ASSERT_TRANSITIONS 1    /* debug build (-O0) */
#endif
#endif

#endif /* BLOCK_SOFTDEV_TAP_STATES_H */
