/*
 * softdev-tap internals, shared by its files:
 *   tap.c           options, open/close, reopen, AioContexts, query
 *   tap-req.c       request states, verdicts, on-disconnect, watchdog,
 *                   waking requests in batches
 *   tap-io.c        the request path (co_request), replies, lower requests
 *   tap-transport.c the two transports: messages on the socket (stream),
 *                   rings in shared memory (ring)
 *   tap-conn.c      connection state, connecting and the handshake, the
 *                   connector thread, teardown
 *
 * Two state machines carry the rules; each state changes in exactly one
 * function, which checks that the transition is legal:
 *   a request:     SoftdevTapReqState, softdev_tap_req_set()
 *                  (its own early I/O: SoftdevTapEarly,
 *                  softdev_tap_req_set_early())
 *   a connection:  SoftdevTapConnState, softdev_tap_conn_set()
 * An illegal transition is a bug: it asserts in debug builds; in release
 * builds the node raises an alert and drops the connection, so that
 * on-disconnect decides what happens to the requests.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef BLOCK_SOFTDEV_TAP_INT_H
#define BLOCK_SOFTDEV_TAP_INT_H

#include "block/aio.h"
#include "qemu/coroutine.h"
#include "qemu/queue.h"
#include "qemu/thread.h"
#include "softdev/softdev.h"
#include "libsoftdev/protocol/tap-protocol.h"
#include "tap-states.h"

#define SOFTDEV_TAP_CLIENT_MAX_DATA (1 * MiB)
#define SOFTDEV_TAP_FIRST_RETRY_MS  10

typedef struct SoftdevTap SoftdevTap;
typedef struct SoftdevTapReq SoftdevTapReq;

/*
 * What the process (or on-disconnect, or a timeout) decided for a request.
 * A COMPLETE read's data is in the guest's buffer, or in @bounce if the
 * answer came while an early read still wrote that buffer.
 */
typedef enum SoftdevTapVerdict {
    SOFTDEV_TAP_VERDICT_NONE,       /* not decided yet */
    SOFTDEV_TAP_VERDICT_COMPLETE,   /* @result, the data given */
    /* Run below at @fwd_offset, @bounce as a write's data if set */
    SOFTDEV_TAP_VERDICT_FORWARD,
    /*
     * Forwarded unchanged by a process that promised early I/O: the early
     * I/O's result, if it ran, is the answer
     */
    SOFTDEV_TAP_VERDICT_FORWARD_EARLY,
} SoftdevTapVerdict;

/* One request of the guest, on its coroutine's stack */
struct SoftdevTapReq {
    SoftdevTap *s;
    SoftdevRequest *req;
    uint64_t handle;
    SoftdevTapReqState state;
    SoftdevTapEarly early;
    int early_ret;              /* EARLY_FINISHED: its result */
    Coroutine *waiter;          /* set while the coroutine waits (yielded) */
    int64_t deadline_ms;        /* QEMU_CLOCK_REALTIME; 0: none */
    uint32_t slot;              /* shared-memory slot while at the process */

    SoftdevTapVerdict verdict;
    int result;                 /* COMPLETE: 0 or -errno */
    uint64_t fwd_offset;        /* FORWARD */
    void *bounce;               /* the process's data (tap-io.c) */
    size_t bounce_size;         /* for softdev_bounce_put() */

    QTAILQ_ENTRY(SoftdevTapReq) next;
    SoftdevTapReq *wake_next;
};

/* A byte buffer with a consumed prefix */
typedef struct SoftdevTapBuf {
    uint8_t *data;
    size_t off, len, cap;
} SoftdevTapBuf;

/* One connection to the process, as the handshake made it */
typedef struct SoftdevTapConn {
    int fd;
    uint64_t features;
    uint32_t max_data;
    uint32_t max_inflight;
    uint64_t size;
    uint8_t *shm;
    size_t shm_size;
    uint8_t *ring;              /* control block; NULL: no rings */
    uint32_t ring_entries;
} SoftdevTapConn;

/*
 * How REQUESTs reach the process and REPLYs come back: as messages on the
 * socket (stream), or through rings in shared memory (ring).  The same
 * three operations as libsoftdev's transports, plus @ready for adaptive
 * polling.  All are called locked, in s->ctx (post also from requests in
 * other threads).
 */
typedef struct SoftdevTapTransport {
    const char *name;
    /* Queue REQUEST @tr, described by @wire, for the process */
    void (*post)(SoftdevTap *s, SoftdevTapReq *tr,
                 const SoftdevTapRequest *wire);
    /* Make what was posted visible to the process; wake it if needed */
    void (*publish)(SoftdevTap *s);
    /* Take in what the process sent (REPLYs, LOWER_REQUESTs, KICKs) */
    void (*take)(SoftdevTap *s);
    /* Whether there is something to take, cheaply (io_poll) */
    bool (*ready)(SoftdevTap *s);
} SoftdevTapTransport;

extern const SoftdevTapTransport softdev_tap_stream;
extern const SoftdevTapTransport softdev_tap_ring;

/* Options that blockdev-reopen may change, and the others */
typedef struct SoftdevTapConfig {
    SoftdevTapOnDisconnect on_disconnect;
    uint32_t timeout_ms;        /* 0: none */
    uint32_t reconnect_max_ms;  /* 0: never reconnect */
} SoftdevTapConfig;

struct SoftdevTap {
    BlockDriverState *bs;

    /* Fixed after open */
    SocketAddress *saddr;
    uint32_t want_inflight;
    int64_t peer_uid;           /* -1: any */
    bool has_lower;
    uint64_t lower_size;
    uint64_t size;              /* of the device, fixed by the first hello */
    uint32_t first_max_data;    /* the limits the block layer saw */

    QemuMutex lock;             /* everything below */
    SoftdevTapConfig cfg;       /* changed by reopen (drained) */
    AioContext *ctx;            /* NULL while detached */

    /* The connection */
    SoftdevTapConnState conn_state;
    SoftdevTapConn conn;        /* fd >= 0 in CONNECTED and DRAINING */
    const SoftdevTapTransport *transport;
    const char *drop_reason;    /* DRAINING: why */
    uint64_t generation;        /* of the connection */
    SoftdevTapConn pending;     /* made by the connector, not installed */
    QEMUBH *attach_bh;          /* installs @pending in s->ctx */

    /* Requests */
    QTAILQ_HEAD(, SoftdevTapReq) reqs;      /* handle order */
    SoftdevTapReq *next_unsent;             /* unsent ones are a suffix */
    uint32_t count[SOFTDEV_TAP_REQ__MAX];   /* requests in each state */
    uint32_t early_at_process;  /* at the process with early I/O running */
    uint64_t next_handle;
    uint32_t *free_slots;
    uint32_t nfree;
    SoftdevTapReq *wake_list;
    unsigned lower_inflight;

    /* Batching in an event-loop turn of s->ctx (softdev_tap_unlock) */
    unsigned turn_depth;        /* nested wake-ups */
    bool turn_sent;             /* the turn sent its first message */
    bool publish_pending;       /* posted in the turn, publish at its end */
    bool notify_deferred;       /* posted outside a turn: defer_notify */
    bool pump_pending;          /* room came at the process */

    QEMUBH *kick_bh;            /* see softdev_tap_defer_notify() */

    /* Stream transport (and the socket for every connection) */
    QEMUBH *send_bh;
    bool send_scheduled;
    bool want_write;            /* the socket is full: write handler set */
    SoftdevTapBuf sbuf, rbuf;

    /* Ring transport */
    uint32_t req_prod, rep_cons;
    bool cli_idle;              /* our idle word is set: a KICK will come */

    /* The watchdog (a timerfd, see softdev_tap_watchdog_arm()) */
    int watchdog_fd;
    int64_t watchdog_at_ms;     /* armed for then; 0: not armed */

    /* The connector thread */
    QemuThread thread;
    QemuCond cond;
    int connecting_fd;
    bool closing;               /* the thread ends */

    /* Statistics */
    uint64_t disconnects, reconnects, replayed, timeouts;
    uint64_t kicks_sent, kicks_received;
};

/* tap-req.c */
void softdev_tap_req_set(SoftdevTap *s, SoftdevTapReq *tr,
                         SoftdevTapReqState state);
void softdev_tap_req_set_early(SoftdevTap *s, SoftdevTapReq *tr,
                               SoftdevTapEarly early);
void softdev_tap_decide(SoftdevTap *s, SoftdevTapReq *tr,
                        SoftdevTapVerdict verdict, int result,
                        uint64_t fwd_offset);
void softdev_tap_decide_unwanted(SoftdevTap *s, SoftdevTapReq *tr);
void softdev_tap_decide_by_policy(SoftdevTap *s, SoftdevTapReq *tr);
void softdev_tap_unlock(SoftdevTap *s);
void softdev_tap_defer_notify(SoftdevTap *s);
void softdev_tap_kick_bh(void *opaque);
void softdev_tap_watchdog_arm(SoftdevTap *s);
void softdev_tap_watchdog_start(SoftdevTap *s);
void softdev_tap_watchdog_stop(SoftdevTap *s);
void softdev_tap_bug(void *opaque, const char *machine, const char *from,
                     const char *to);

/* tap-io.c */
void softdev_tap_pump(SoftdevTap *s);
const char *softdev_tap_got_reply(SoftdevTap *s, const SoftdevTapHeader *hdr,
                                  const uint8_t *payload);
const char *softdev_tap_got_lower(SoftdevTap *s, const SoftdevTapHeader *hdr,
                                  const uint8_t *payload);
int coroutine_fn GRAPH_RDLOCK
softdev_tap_co_request(BlockDriverState *bs, SoftdevRequest *req,
                       SoftdevNextFn *next);

/* tap-transport.c */
uint8_t *softdev_tap_buf_reserve(SoftdevTapBuf *b, size_t n);
void softdev_tap_buf_reset(SoftdevTapBuf *b);
uint8_t *softdev_tap_slot(SoftdevTap *s, uint32_t slot);
void softdev_tap_flush(SoftdevTap *s);
void softdev_tap_send(SoftdevTap *s);
void softdev_tap_send_bh(void *opaque);
void softdev_tap_set_handlers(SoftdevTap *s);
void softdev_tap_clear_handlers(SoftdevTap *s);

/* tap-conn.c */
void softdev_tap_conn_set(SoftdevTap *s, SoftdevTapConnState state);
bool softdev_tap_connected(SoftdevTap *s);
int softdev_tap_connect(SoftdevTap *s, SoftdevTapConn *c, Error **errp);
const char *softdev_tap_conn_check(SoftdevTap *s, const SoftdevTapConn *c);
void softdev_tap_install(SoftdevTap *s, SoftdevTapConn *c);
void softdev_tap_conn_free(SoftdevTapConn *c);
void softdev_tap_teardown(SoftdevTap *s, const char *why);
void softdev_tap_drop(SoftdevTap *s, const char *why);
void softdev_tap_protocol_error(SoftdevTap *s, const char *err);
void softdev_tap_attach_bh(void *opaque);
void *softdev_tap_connector(void *opaque);

#endif /* BLOCK_SOFTDEV_TAP_INT_H */
