/*
 * libsoftdev internals shared by the server's files (not installed):
 * the connection, its requests, and the transport interface that the
 * byte stream (stream.c) and the shared-memory rings (ring.c) implement.
 *
 *   conn.c      connection state, reading, handshake, errors
 *   requests.c  taking REQUESTs in, running callbacks, thread models,
 *               softdev_serve()
 *   lower.c     softdev_lower_*(), softdev_forward_to(), LOWER_REPLYs
 *   stream.c    transport: messages over the socket, batched sends
 *   ring.c      transport: REQUESTs and REPLYs in rings, KICKs
 *   main.c      softdev_main(): the command line, listeners, signals
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SOFTDEV_SERVER_INTERNAL_H
#define SOFTDEV_SERVER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "libsoftdev/protocol/tap-protocol.h"
#include "softdev.h"

#define DEFAULT_MAX_DATA    (1u << 20)
#define MAX_RANGE           (1u << 31)
#define MAX_ERRNO           4095
#define HANDSHAKE_TIMEOUT   10          /* seconds for HELLO, SHM_SETUP */
#define HANDSHAKE_BUF       8192
#define READ_ROOM           (256u << 10) /* buffer beyond the largest msg */
#define OUT_MSGS            64          /* messages gathered for a send */
#define OUT_BYTES           (1u << 20)  /* inline data gathered for a send */
#define SLOW_CALLBACK_NS    50000       /* send at once after a slower one */
#define MSG_BUF             (SOFTDEV_TAP_HDR_SIZE + SOFTDEV_TAP_REQUEST_SIZE)
#define POLL_START_NS       4000        /* the poll window, when it opens */
#define POLL_GROW           2           /* ...and how it grows, shrinks */

typedef struct Conn Conn;

/* Messages one thread gathers before sending them with one sendmsg() */
typedef struct Out {
    uint8_t msg[OUT_MSGS][MSG_BUF];         /* header and fixed part */
    struct iovec iov[2 * OUT_MSGS];
    struct softdev_req *done[OUT_MSGS];     /* recycled after the send */
    int nmsg, niov, ndone, nreleased;
    size_t data;
    bool now;                               /* publish before running more */
    bool reader;                            /* of the reading thread */
} Out;

struct softdev_req {
    Conn *conn;
    Out *out;                       /* of the thread running it */
    uint64_t handle;
    bool replay;
    SoftdevTapRequest req;
    uint8_t *data;                  /* READ/WRITE data: slot or buf */
    uint8_t *buf;                   /* inline data, kept for reuse */
    size_t buf_size;
    bool fwd_moved;
    bool fwd_data;                  /* data now holds replacement data */
    uint64_t fwd_offset;
    struct softdev_req *next;       /* work queue or free list */
    struct softdev_req *hnext;      /* outstanding handles */
    struct softdev_req *all;        /* every request of the connection */
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

/* REQUESTs taken in by one look at the transport, for the queue */
typedef struct Taken {
    Conn *c;
    struct softdev_req *head, *tail;
    int count;
} Taken;

/* One outgoing message for TransportOps.post */
typedef struct TransportMsg {
    uint16_t type;                  /* SOFTDEV_TAP_REPLY, _LOWER_REQUEST */
    uint64_t handle;
    struct softdev_req *r;          /* REPLY: the request, recycled */
    const SoftdevTapReply *rep;     /* REPLY */
    const SoftdevTapRequest *req;   /* LOWER_REQUEST */
    const void *data;               /* inline data, if any */
    size_t dlen;
} TransportMsg;

/*
 * How REQUESTs come in and REPLYs go out after the handshake: over the
 * socket (stream.c) or through the rings (ring.c).  LOWER_REQUESTs and
 * LOWER_REPLYs are socket messages with either.
 */
typedef struct TransportOps {
    /* Queue one message of a thread (may send when its batch is full) */
    void (*post)(Conn *c, Out *o, const TransportMsg *m);
    /* Make what @o posted visible to the client: send, or KICK if needed */
    void (*publish)(Conn *c, Out *o);
    /*
     * Take in what arrived (the receive buffer, the request ring), giving
     * each message to the connection's handler; REQUESTs go to @t.
     * Returns NULL or a protocol error.
     */
    const char *(*take)(Conn *c, Taken *t);
} TransportOps;

extern const TransportOps stream_transport;
extern const TransportOps ring_transport;

/*
 * Instead of a socket, for tests that feed a connection without threads
 * (tests/fuzz): returns bytes put in @buf (0: none now, look at the
 * rings), or -1 at the end of the input.  What the server sends is
 * dropped.
 */
typedef ssize_t ConnInputFn(void *opaque, uint8_t *buf, size_t room);

enum { PHASE_HELLO, PHASE_SHM, PHASE_RUN };

struct Conn {
    const struct softdev_device *dev;
    void *handle;
    int fd;                         /* -1: input from @input */
    int family;                     /* of the socket */
    bool parallel;
    bool no_shm, no_ring;
    uint64_t poll_max_ns;            /* --poll-us: 0, never poll */
    uint64_t poll_ns;                /* the adaptive window now */
    int phase;
    const TransportOps *ops;
    ConnInputFn *input;
    void *input_opaque;
    struct softdev_err *err;        /* the first failure, reported once */
    void (*on_failure)(const struct softdev_err *err, void *opaque);
    void *opaque;

    /* Negotiated */
    SoftdevTapHello agreed;         /* HELLO_REPLY, max_inflight resolved */
    uint64_t features;
    bool has_lower;                 /* F_LOWER offered: FORWARD is legal */
    uint64_t size;
    uint64_t lower_size;
    uint32_t max_data;
    uint32_t max_inflight;

    /* Shared memory */
    uint8_t *shm;
    size_t shm_size;
    int shm_fd;                     /* received, not yet mapped */
    uint8_t *slot_busy;

    /* Rings (SOFTDEV_TAP_F_RING), in the shared memory */
    uint8_t *ring;                  /* control block */
    uint32_t ring_entries;
    uint32_t req_cons;              /* the reading thread only */
    uint32_t rep_prod;              /* under send_lock */
    bool unkicked;                  /* replies posted since the last look
                                       at the client's idle word */

    /* Receive buffer: the reading thread only */
    uint8_t *rbuf;
    size_t rcap, rstart, rend, rwant;
    bool absorbed;                  /* absorb() took unparsed input */

    pthread_mutex_t send_lock;      /* one sendmsg() at a time */
    pthread_mutex_t lock;           /* everything below */
    pthread_cond_t work_cond;
    bool closed;
    int idle;                       /* workers waiting for work */
    struct softdev_req *queue_head, *queue_tail;
    struct softdev_req **hash;      /* outstanding REQUESTs by handle */
    unsigned hash_bits;
    uint32_t outstanding;
    struct softdev_req *free_reqs;
    struct softdev_req *all_reqs;
    Waiter *waiters;
    uint64_t next_lower_handle;
};

/* A message handler: NULL, or a protocol error */
typedef const char *ConnMsgFn(void *opaque, const SoftdevTapHeader *h,
                              const uint8_t *payload);

/* error.c */
struct softdev_err *softdev_err_new(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void softdev_err_report(const struct softdev_err *err, void *opaque);
const char *softdev_error_name_set(const char *name);
uint64_t softdev_now_ns(void);

/* conn.c */
int conn_init(Conn *c, const struct softdev_device *dev, void *handle,
              int fd, const struct softdev_server_options *opts);
void conn_destroy(Conn *c);
bool conn_closed(Conn *c);
void conn_close(Conn *c);
void conn_error(Conn *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int conn_fill(Conn *c);
int conn_parse(Conn *c);
int conn_handshake(Conn *c);
uint64_t conn_poll_window(uint64_t cur, uint64_t max, uint64_t slept_ns);

/* requests.c */
void conn_release(Conn *c, struct softdev_req *r);
const char *conn_take_request(void *opaque, const SoftdevTapHeader *h,
                              const uint8_t *payload);
const char *conn_run_msg(void *opaque, const SoftdevTapHeader *h,
                         const uint8_t *payload);
void conn_serve_serial(Conn *c, Out *o);
void conn_serve_parallel(Conn *c);

/* lower.c */
const char *conn_lower_reply(Conn *c, const SoftdevTapHeader *h,
                             const uint8_t *payload);

/* stream.c */
int stream_send(Conn *c, struct iovec *iov, int niov, bool reader);
void out_release(Conn *c, Out *o);
void out_flush(Conn *c, Out *o);
void out_discard(Conn *c, Out *o);
const char *stream_frames(Conn *c, int phase, ConnMsgFn *fn, void *opaque);

/* Whether @o or the reply ring holds what the client has not been shown */
static inline bool conn_unpublished(Conn *c, const Out *o)
{
    return o->nmsg || o->ndone ||
           (c->ring && __atomic_load_n(&c->unkicked, __ATOMIC_RELAXED));
}

#endif /* SOFTDEV_SERVER_INTERNAL_H */
