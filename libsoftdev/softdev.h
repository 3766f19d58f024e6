/*
 * libsoftdev: write a soft block device for QEMU's softdev-tap driver as
 * a struct of callbacks (in the spirit of nbdkit's plugin API); the
 * library speaks the tap protocol (docs/specs/softdev-tap.rst).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SOFTDEV_H
#define SOFTDEV_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Version of struct softdev_device.  Fields are only ever appended:
 * version 1 ends with max_inflight, version 2 adds flags.  The library
 * reads a field only from devices that declare the version that brought
 * it, so a device built against an older header keeps working with newer
 * libraries (libsoftdev.so.1 serves versions 1 and 2).
 */
#define SOFTDEV_API_VERSION         2

/* What libsoftdev.so exports (it is built with -fvisibility=hidden) */
#if defined(__GNUC__) && !defined(SOFTDEV_API)
#define SOFTDEV_API                 __attribute__((visibility("default")))
#elif !defined(SOFTDEV_API)
#define SOFTDEV_API
#endif

/*
 * Callback results, the same convention as QEMU's in-process soft devices
 * (block/softdev/core.c): SOFTDEV_DONE (0: the device completed the
 * request), SOFTDEV_FORWARD (1: let QEMU send the request to the node
 * below unchanged; see softdev_forward_to() to move it) or a negative
 * errno in -4095..-1 (completes the request with that error).  Anything
 * else is a device bug: it is reported on stderr and the request
 * completes with -EIO.
 */
#define SOFTDEV_DONE                0
#define SOFTDEV_FORWARD             1

/* Request flags passed to write and write_zeroes (as on the wire) */
#define SOFTDEV_FUA                 (1u << 0)   /* make it durable first */
#define SOFTDEV_MAY_UNMAP           (1u << 1)   /* write_zeroes only */

/*
 * Thread model (one client connection is served at a time):
 *
 * SOFTDEV_THREAD_SERIALIZE (the default, 0): the callbacks run one at a
 *   time, in the order the requests arrived, in the thread that called
 *   softdev_main() (or softdev_serve()).  That thread also takes the
 *   requests in: over a unix socket from rings in shared memory, where
 *   each reply is posted as soon as its callback returns, with no system
 *   call while both sides are busy; otherwise it reads every request the
 *   client has sent, runs them, and sends their replies together (about
 *   two system calls per batch).  No thread switch either way.  A callback
 *   waiting in softdev_lower_*() reads the socket itself until its answer
 *   comes.  The device needs no locks.
 * SOFTDEV_THREAD_PARALLEL: a reader thread (the caller) queues requests
 *   for a pool of SOFTDEV_PARALLEL_WORKERS threads, which run callbacks
 *   concurrently; they complete in any order, and the device must protect
 *   its own state.  Each worker sends the replies it gathered when it
 *   runs out of queued requests.
 *
 * In both, replies are sent at once after a callback that took longer
 * than 50 microseconds (a slow device gains nothing from batching), and
 * callbacks may block on the node below.  When the client disconnects,
 * waiting softdev_lower_*() calls return -EIO, requests not yet started
 * are dropped, and the server waits for running callbacks to return
 * before it accepts the next connection.  open and close run in the
 * thread that called softdev_main().
 *
 * Replays: QEMU (on-disconnect=queue) sends the requests that were
 * outstanding when a connection dropped again on the next connection,
 * with the same handles, flagged as replays (softdev_req_is_replay()).
 * A device sees a request at least once, so every callback must be
 * idempotent; a stateful device (a log, versions) uses the flag to
 * recognise a request it may have seen.
 */
#define SOFTDEV_THREAD_SERIALIZE    0
#define SOFTDEV_THREAD_PARALLEL     1
#define SOFTDEV_PARALLEL_WORKERS    4

/* One request being served; valid only during its callback */
struct softdev_req;

/*
 * Data buffers: over a unix socket QEMU offers a shared-memory data path,
 * which libsoftdev accepts (unless --no-shm): then the @buf of read and
 * write is the request's slot in memory shared with QEMU, so data is
 * never copied; otherwise it is a buffer of the library.  Either way it
 * is valid only during the callback, a read callback must fill all @len
 * bytes (the buffer's previous content is undefined), and a write
 * callback must not keep a pointer to @buf.
 */

/*
 * The device.  A NULL callback forwards that request unchanged, so a
 * device with no callbacks is a passthrough.  What changes data cannot
 * bypass a write callback:
 *
 * - write_zeroes NULL, write set: write-zeroes arrive as calls of write
 *   with a buffer of zeroes (QEMU writes zeroed buffers instead);
 * - discard NULL, write set: discards complete without effect (they are
 *   advisory) unless flags has SOFTDEV_DISCARD_PASSES, which forwards
 *   them unchanged;
 * - write NULL: write_zeroes and discard, if NULL, forward too.
 *
 * A flush without a flush callback goes to the node below.  FUA is
 * accepted with write or write_zeroes; LOWER whenever QEMU offers it
 * (there is a node below).  A FORWARD without a node below is answered
 * by the library: FLUSH and DISCARD succeed, READ and WRITE fail with
 * -EIO, WRITE_ZEROES with -ENOTSUP (QEMU then writes zeroes as WRITEs).
 * On the wire these are the FLUSH, DISCARD and ZEROES feature bits the
 * library accepts (docs/specs/softdev-tap.rst).
 */
struct softdev_device {
    int api_version;            /* SOFTDEV_API_VERSION */
    const char *name;           /* for messages */
    /*
     * Size in bytes; 0 = the size of the node below.  Read at each
     * handshake, so open may set it in a non-const device struct.
     */
    uint64_t size;
    uint32_t max_data;          /* largest data part; 0 = 1 MiB;
                                   64 KiB to 16 MiB */
    int thread_model;           /* SOFTDEV_THREAD_* */

    /* argv[0] is the program name; NULL result = failure */
    void *(*open)(int argc, char **argv);
    void (*close)(void *h);

    /* Fill @buf with @len bytes from @off (len <= negotiated max_data) */
    int (*read)(void *h, struct softdev_req *r, void *buf, uint32_t len,
                uint64_t off);
    /* @flags: SOFTDEV_FUA */
    int (*write)(void *h, struct softdev_req *r, const void *buf,
                 uint32_t len, uint64_t off, uint32_t flags);
    int (*flush)(void *h, struct softdev_req *r);
    /* @len: at most 2^31 */
    int (*discard)(void *h, struct softdev_req *r, uint32_t len,
                   uint64_t off);
    /* @flags: SOFTDEV_FUA | SOFTDEV_MAY_UNMAP */
    int (*write_zeroes)(void *h, struct softdev_req *r, uint32_t len,
                        uint64_t off, uint32_t flags);

    /*
     * Most requests QEMU may have outstanding at the device at once;
     * 0 = QEMU's own limit (its max-inflight option).  A device that
     * must bound what it queues sets it; QEMU then waits for replies
     * before it sends more.
     */
    uint32_t max_inflight;

    /* Version 2 */

    uint32_t flags;             /* SOFTDEV_NO_WRITE_DATA, ..._EARLY_*,
                                   SOFTDEV_READ_BELOW,
                                   SOFTDEV_DISCARD_PASSES */
};

/*
 * flags: the write callback never reads @buf: it decides by offset and
 * length alone (forward, move, delay, fail, log where).  QEMU then skips
 * copying the guest's data into shared memory, and @buf holds
 * unspecified bytes.  Replacement data from softdev_forward_to() still
 * works.  A device without a write callback gets this without asking.
 */
#define SOFTDEV_NO_WRITE_DATA       (1u << 0)

/*
 * flags: when the read callback forwards a read unchanged (returns
 * SOFTDEV_FORWARD without softdev_forward_to()), QEMU may answer it with
 * data it read below when it sent the request, before the callback ran.
 * True unless the device changes the node below in a way such a read
 * must see (e.g. writes below in the read callback, or in another
 * callback for data that a read it forwards may cover).  QEMU then starts
 * the read below at once, and the round trip to the device overlaps it.
 */
#define SOFTDEV_EARLY_READ          (1u << 1)

/*
 * flags: the write callback forwards every write unchanged (returns
 * SOFTDEV_FORWARD without softdev_forward_to()) or fails it; it may
 * look, log, delay and fail, but not complete, move or change a write.
 * QEMU may then write below at once, while the callback runs, and
 * completes the write when both are done (with the callback's error, if
 * any: the data may then be written).  Not for a device that must act
 * before the data lands (e.g. save the old data first).  A callback that
 * breaks the promise gets its write failed with -EIO.
 */
#define SOFTDEV_EARLY_WRITE         (1u << 2)

/*
 * flags: the read callback transforms the node below's data (decrypt,
 * XOR, decompress in place): it is called with @buf holding the node
 * below's data at @off, and fills @buf with what the read returns.  Over
 * a unix socket with shared memory QEMU reads below before it sends the
 * request and puts the data in the request's slot (no LOWER_REQUEST, no
 * copy); otherwise the library reads it first with softdev_lower_read(),
 * whose failure fails the read.  As for SOFTDEV_EARLY_READ, only for a
 * device that does nothing below that such a read must see.
 */
#define SOFTDEV_READ_BELOW          (1u << 3)

/*
 * flags: a device with a write callback but no discard callback lets
 * discards pass to the node below unchanged, instead of dropping them:
 * for a device whose data may be lost where the guest discards (a
 * discarded range reads back undefined anyway), e.g. one that encodes
 * writes.  Not for a device that must see every change (a write
 * blocker, a log).
 */
#define SOFTDEV_DISCARD_PASSES      (1u << 4)

/*
 * I/O on the node below, callable from a callback: each sends
 * LOWER_REQUESTs (split into pieces of at most max_data bytes) and blocks
 * until the node below has answered.  They return 0 or -errno; -EIO when
 * the connection is lost; -EINVAL when there is no node below or the range
 * is beyond its end.
 */
SOFTDEV_API int softdev_lower_read(struct softdev_req *r, void *buf,
                                   uint32_t len, uint64_t off);
SOFTDEV_API int softdev_lower_write(struct softdev_req *r, const void *buf,
                                    uint32_t len, uint64_t off,
                                    uint32_t flags);
SOFTDEV_API int softdev_lower_flush(struct softdev_req *r);
SOFTDEV_API int softdev_lower_discard(struct softdev_req *r, uint32_t len,
                                      uint64_t off);
SOFTDEV_API int softdev_lower_write_zeroes(struct softdev_req *r,
                                           uint32_t len, uint64_t off,
                                           uint32_t flags);

/* Size in bytes of the node below, 0 if there is none (or it is empty) */
SOFTDEV_API uint64_t softdev_lower_size(struct softdev_req *r);

/*
 * Forward the request to the node below at @off instead of its own
 * offset; for a WRITE, @data (the request's length, copied now) replaces
 * the guest's data unless it is NULL.  The copy goes into the write
 * callback's @buf (which may be @data itself), so @buf holds the
 * replacement afterwards.  Returns SOFTDEV_FORWARD (-EINVAL for data with
 * a request that is not a WRITE) so that a callback can end with:
 *     return softdev_forward_to(r, off, d);
 */
SOFTDEV_API int softdev_forward_to(struct softdev_req *r, uint64_t off,
                                   const void *data);

/*
 * The request's own data: the @buf its read or write callback got (its
 * slot in shared memory, or its part of the receive buffer), writable,
 * and the device's to change until it answers.  A device that
 * transforms writes can encode in place and forward with
 *     return softdev_forward_to(r, off, softdev_req_data(r));
 * which copies nothing.  NULL for requests without data.
 */
SOFTDEV_API void *softdev_req_data(struct softdev_req *r);

/*
 * Whether the request is a replay: QEMU sent it on an earlier connection
 * too, and the device may or may not have run it then.
 */
SOFTDEV_API int softdev_req_is_replay(struct softdev_req *r);

/*
 * Print "NAME: message" on stderr.  NAME is the name of the device that
 * the calling thread serves (in softdev_main(), softdev_serve() and the
 * workers they start), "softdev" in other threads: each thread keeps its
 * own, so servers of different devices in one process do not mix them.
 */
SOFTDEV_API void softdev_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/*
 * Why softdev_serve() failed; allocated by the library, owned and freed
 * (softdev_err_free()) by the caller.
 */
struct softdev_err {
    int code;                   /* errno value; EPROTO: protocol error */
    char *message;              /* for a person, without the device name */
};

SOFTDEV_API void softdev_err_free(struct softdev_err *err);

/*
 * Options of softdev_serve().  @size is sizeof(struct
 * softdev_server_options) as the caller knows it: fields are only ever
 * appended, and the library reads only those that fit in @size (the
 * rest take their defaults), so a caller built against an older header
 * keeps working.  SOFTDEV_SERVER_OPTIONS_INIT gives the defaults, which
 * are also what a NULL options pointer means.
 */
struct softdev_server_options {
    uint32_t size;              /* sizeof(struct softdev_server_options) */
    uint32_t flags;             /* SOFTDEV_SERVER_NO_* */
    /*
     * The longest the reading thread busy-polls for requests before it
     * sleeps in read(); 0 = never.  The window adapts to the load, as
     * QEMU's IOThreads do: it grows while requests keep coming within
     * it and falls to nothing once they stop, so an idle device costs
     * no CPU.  While polling the thread yields the CPU to anything else
     * that wants it.  Default SOFTDEV_POLL_NS_DEFAULT.
     */
    uint64_t poll_ns;
    /*
     * Called once, in the thread that found it, when the connection
     * fails, before the client sees the connection end: so that a
     * message is out before the client can react (NULL: nothing).  @err
     * is the one softdev_serve() hands back, not yet the caller's.
     */
    void (*on_failure)(const struct softdev_err *err, void *opaque);
    void *opaque;
};

/* flags: decline the shared-memory data path (and with it the rings) */
#define SOFTDEV_SERVER_NO_SHM       (1u << 0)
/*
 * flags: decline the rings: shared memory for the data only, REQUESTs
 * and REPLYs as socket messages
 */
#define SOFTDEV_SERVER_NO_RING      (1u << 1)

/* The default of softdev_server_options.poll_ns (--poll-us 100) */
#define SOFTDEV_POLL_NS_DEFAULT     100000

#define SOFTDEV_SERVER_OPTIONS_INIT \
    { .size = sizeof(struct softdev_server_options), \
      .poll_ns = SOFTDEV_POLL_NS_DEFAULT }


/*
 * Serve one connected socket with @opts (NULL: defaults): handshake, then
 * requests until the client disconnects.  Does not close @fd and prints
 * nothing about the connection's failure.  Returns 0 when the client
 * went away, or a negative errno after a handshake failure or a protocol
 * error (-EPROTO), with *@errp set if @errp is not NULL (it may stay NULL
 * when the library is out of memory, or when the client hung up during
 * the handshake).  @opts->on_failure reports the failure as it happens.
 * Thread-safe for different connections.
 */
SOFTDEV_API int softdev_serve(const struct softdev_device *dev, void *handle,
                              int fd,
                              const struct softdev_server_options *opts,
                              struct softdev_err **errp);

/*
 * softdev_serve() with the default options, reporting a failure on
 * stderr ("NAME: protocol error: ...; dropping the connection", or
 * "NAME: MESSAGE" for other failures).  Returns
 * 0 when the client went away, -1 after a failure.
 */
SOFTDEV_API int softdev_serve_fd(const struct softdev_device *dev,
                                 void *handle, int fd);

/*
 * A complete main(): parses
 *   --unix PATH       listen there (mode 0600), serve one client at a time
 *                     and accept the next one after it disconnects;
 *                     SIGTERM and SIGINT (with any listener, and --fd)
 *                     end the connection once the callbacks under way
 *                     returned, call dev->close(), remove the socket
 *                     and return 0; a second signal exits at once
 *   --tcp HOST:PORT   the same on TCP (HOST empty: every address; [::1]
 *                     for IPv6; PORT 0: any, printed on stderr); no
 *                     shared memory there
 *   --vsock CID:PORT  the same on vsock (CID empty or -1: any), for a
 *                     device in another VM
 *   --fd N            serve the connected socket N once, then exit
 *   --allow-uid UID[,UID...]
 *                     unix sockets: serve only processes of these users
 *                     (SO_PEERCRED); others are refused with a message
 *   --no-shm          decline the shared-memory data path
 *                     (SOFTDEV_SERVER_NO_SHM)
 *   --no-ring         shared memory for the data only: requests and
 *                     replies as socket messages (SOFTDEV_SERVER_NO_RING)
 *   --poll-us N       busy-poll the request ring (or the socket) for
 *                     up to N microseconds, 0 to 1000000, before
 *                     sleeping in read; adaptive (default 100; poll_ns)
 *   --help, -h        print the usage and return 0
 *   --                the rest are device arguments
 * and passes the other arguments to dev->open().  It builds a struct
 * softdev_server_options from them and calls softdev_serve() for each
 * client.  Returns the exit status: 0, 1 (the device or the connection
 * of --fd failed) or 2 (bad usage).
 */
SOFTDEV_API int softdev_main(const struct softdev_device *dev, int argc,
                             char **argv);

/*
 * Loadable devices: softdev-run DEVICE.so [options] [ARGS...] loads a
 * device built as a shared object and calls softdev_main() for it.  The
 * object exports
 *     const struct softdev_device *softdev_device_get(void);
 * which SOFTDEV_DEVICE(variable) defines.  Build it with
 *     cc -shared -fPIC $(pkg-config --cflags softdev) dev.c -o dev.so
 * and without -lsoftdev: softdev-run provides the library's functions
 * (like nbdkit to its plugins).  The same source may also have a main()
 * calling softdev_main(), to build a program of its own.
 */
#define SOFTDEV_DEVICE_SYMBOL       "softdev_device_get"
typedef const struct softdev_device *(*softdev_device_get_fn)(void);

#ifdef __cplusplus
#define SOFTDEV_EXTERN_C            extern "C"
#else
#define SOFTDEV_EXTERN_C
#endif
#define SOFTDEV_DEVICE(dev) \
    SOFTDEV_EXTERN_C SOFTDEV_API \
    const struct softdev_device *softdev_device_get(void); \
    SOFTDEV_EXTERN_C SOFTDEV_API \
    const struct softdev_device *softdev_device_get(void) \
    { \
        return &(dev); \
    }

#ifdef __cplusplus
}
#endif

#endif /* SOFTDEV_H */
