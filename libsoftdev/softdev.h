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

#define SOFTDEV_API_VERSION         1

/*
 * Callback results: 0 (done), SOFTDEV_FORWARD (let QEMU send the request
 * to the node below unchanged; see softdev_forward_to() to move it) or a
 * negative errno in -4095..-1 (completes the request with that error).
 * Anything else is a device bug: it is reported on stderr and the request
 * completes with -EIO.
 */
#define SOFTDEV_FORWARD             1

/* Request flags passed to write and write_zeroes (as on the wire) */
#define SOFTDEV_FUA                 (1u << 0)   /* make it durable first */
#define SOFTDEV_MAY_UNMAP           (1u << 1)   /* write_zeroes only */

/*
 * Thread model (one client connection is served at a time):
 *
 * SOFTDEV_THREAD_SERIALIZE (the default, 0): one worker thread runs the
 *   callbacks one at a time, in the order the requests arrived.  The
 *   device needs no locks.
 * SOFTDEV_THREAD_PARALLEL: a pool of SOFTDEV_PARALLEL_WORKERS threads runs
 *   callbacks concurrently; they complete in any order, and the device
 *   must protect its own state.
 *
 * In both, a separate reader thread decodes the socket and hands each
 * LOWER_REPLY to the callback waiting in softdev_lower_*(), so callbacks
 * may block on the node below.  When the client disconnects, waiting
 * softdev_lower_*() calls return -EIO, requests not yet started are
 * dropped (QEMU resends them after reconnecting, with the same handles,
 * so every callback must be idempotent), and the server waits for running
 * callbacks to return before it accepts the next connection.  open and
 * close run in the thread that called softdev_main().
 */
#define SOFTDEV_THREAD_SERIALIZE    0
#define SOFTDEV_THREAD_PARALLEL     1
#define SOFTDEV_PARALLEL_WORKERS    4

/* One request being served; valid only during its callback */
struct softdev_req;

/*
 * The device.  A NULL callback forwards that request unchanged, so a
 * device with no callbacks is a passthrough.  The library accepts feature
 * bits from what is set: flush -> FLUSH requests, discard -> DISCARD,
 * write_zeroes -> WRITE_ZEROES, write or write_zeroes -> FUA; LOWER is
 * accepted whenever QEMU offers it (there is a node below).  Requests
 * whose feature was not accepted never reach the device: QEMU runs them
 * on the node below itself (without one: FLUSH succeeds, DISCARD and
 * WRITE_ZEROES fail with -ENOTSUP).  A FORWARD without a node below is
 * answered the same way by the library (READ and WRITE: -EIO).
 */
struct softdev_device {
    int api_version;            /* SOFTDEV_API_VERSION */
    const char *name;           /* for messages */
    /*
     * Size in bytes; 0 = the size of the node below.  Read at each
     * handshake, so open may set it in a non-const device struct.
     */
    uint64_t size;
    uint32_t max_data;          /* largest data part; 0 = 1 MiB; >= 64K */
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
};

/*
 * I/O on the node below, callable from a callback: each sends
 * LOWER_REQUESTs (split into pieces of at most max_data bytes) and blocks
 * until the node below has answered.  They return 0 or -errno; -EIO when
 * the connection is lost; -EINVAL when there is no node below or the range
 * is beyond its end.
 */
int softdev_lower_read(struct softdev_req *r, void *buf, uint32_t len,
                       uint64_t off);
int softdev_lower_write(struct softdev_req *r, const void *buf, uint32_t len,
                        uint64_t off, uint32_t flags);
int softdev_lower_flush(struct softdev_req *r);
int softdev_lower_discard(struct softdev_req *r, uint32_t len, uint64_t off);
int softdev_lower_write_zeroes(struct softdev_req *r, uint32_t len,
                               uint64_t off, uint32_t flags);

/* Size in bytes of the node below, 0 if there is none */
uint64_t softdev_lower_size(struct softdev_req *r);

/*
 * Forward the request to the node below at @off instead of its own
 * offset; for a WRITE, @data (the request's length, copied now) replaces
 * the guest's data unless it is NULL.  Returns SOFTDEV_FORWARD (or -ENOMEM)
 * so that a callback can end with: return softdev_forward_to(r, off, d);
 */
int softdev_forward_to(struct softdev_req *r, uint64_t off, const void *data);

/* Print "NAME: message" on stderr */
void softdev_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/*
 * Serve one connected socket: handshake, then requests until the client
 * disconnects.  Does not close @fd.  Returns 0 when the client went away,
 * -1 after a handshake failure or a protocol error (reported on stderr).
 */
int softdev_serve_fd(const struct softdev_device *dev, void *handle, int fd);

/*
 * A complete main(): parses
 *   --unix PATH   listen there (mode 0600), serve one client at a time and
 *                 accept the next one after it disconnects; SIGTERM and
 *                 SIGINT remove the socket and exit
 *   --fd N        serve the connected socket N once, then exit
 * and passes the remaining arguments to dev->open().  Returns the exit
 * status.
 */
int softdev_main(const struct softdev_device *dev, int argc, char **argv);

#ifdef __cplusplus
}
#endif

#endif /* SOFTDEV_H */
