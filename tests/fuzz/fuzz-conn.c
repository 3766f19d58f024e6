/*
 * libFuzzer target, device side, per input without threads or sockets:
 * the input (see fuzz-devices.h) is fed to a libsoftdev connection
 * through its input hook, in one thread, so the handshake, the stream and
 * ring transports' take, the connection-state rules, the callbacks, lower
 * requests (answered by LOWER_REPLYs later in the input) and the replies'
 * posting all run per input in microseconds.  What the device sends is
 * dropped.  The serialize model only: fuzz-device covers the parallel
 * one, real sockets and SCM_RIGHTS.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "libsoftdev/server-internal.h"
#include "tests/fuzz/fuzz-devices.h"

/* Bytes per piece of the stream by option bits 5-7; 0: what fits */
static const size_t chunk_sizes[8] = { 0, 1, 5, 24, 64, 512, 4096, 65536 };

/* The client's shared memory: one memfd for the process, reused */
static int shm_fd = -1;
static uint8_t *shm;

typedef struct Feed {
    Conn *c;
    const uint8_t *p;
    size_t left;
    size_t handshake;               /* bytes before the ring records */
    size_t chunk;
    bool ring;                      /* records drive the request ring */
    size_t ctl;                     /* control block offset */
    uint32_t entries, prod;
} Feed;

/* One ring record (see fuzz-devices.h); bytes of a KICK in @buf */
static ssize_t ring_record(Feed *f, uint8_t *buf, size_t room)
{
    uint8_t *ctl = shm + f->ctl;
    const uint8_t *rec = f->p;

    f->p += RING_RECORD;
    f->left -= RING_RECORD;
    if (rec[0] & 0x40) {
        __atomic_store_n(softdev_tap_ring_word(ctl,
                                               SOFTDEV_TAP_RING_REQ_PROD),
                         fuzz_ld32(rec + 1), __ATOMIC_RELEASE);
    } else {
        memcpy(softdev_tap_ring_entry(ctl, f->entries,
                                      SOFTDEV_TAP_RING_REQUESTS, f->prod),
               rec + 1, SOFTDEV_TAP_RING_MSG_SIZE);
        __atomic_store_n(softdev_tap_ring_word(ctl,
                                               SOFTDEV_TAP_RING_REQ_PROD),
                         ++f->prod, __ATOMIC_RELEASE);
    }
    if ((rec[0] & 0x80) && room >= SOFTDEV_TAP_HDR_SIZE) {
        return softdev_tap_encode_kick(buf);
    }
    return 0;
}

/* ConnInputFn: the next piece of the input */
static ssize_t feed_input(void *opaque, uint8_t *buf, size_t room)
{
    Feed *f = opaque;
    size_t n = f->left;

    if (f->ring && !f->handshake && f->c->ring && f->left >= RING_RECORD) {
        return ring_record(f, buf, room);
    }
    if (!f->left) {
        return -1;
    }
    if (f->handshake && n > f->handshake) {
        n = f->handshake;           /* the rest may be ring records */
    }
    if (f->chunk && n > f->chunk) {
        n = f->chunk;
    }
    if (n > room) {
        n = room;
    }
    memcpy(buf, f->p, n);
    f->p += n;
    f->left -= n;
    if (f->handshake) {
        f->handshake -= n;
    }
    return n;
}

/* Set up the ring parts of @f if the input asks for rings; 0 or -1 */
static int setup_ring(Feed *f)
{
    size_t first = fuzz_hello_length(f->p, f->left), second;

    if (!first) {
        return 0;
    }
    second = fuzz_ring_setup_length(f->p + first, f->left - first, &f->ctl,
                                    &f->entries);
    if (!second) {
        return 0;
    }
    if (!shm) {
        shm = mmap(NULL, SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
                   shm_fd, 0);
        if (shm == MAP_FAILED) {
            shm = NULL;
            return -1;
        }
    }
    /* A clean control block and rings: inputs do not see each other */
    memset(shm + f->ctl, 0, SOFTDEV_TAP_RING_CTL_SIZE +
           2ull * f->entries * SOFTDEV_TAP_RING_ENTRY);
    f->handshake = first + second;
    f->ring = true;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct softdev_server_options opts = SOFTDEV_SERVER_OPTIONS_INIT;
    struct softdev_device *dev;
    Feed f = { 0 };
    Out *o;
    Conn c;
    uint8_t opt;

    if (size < 1) {
        return 0;
    }
    opt = data[0];
    if (shm_fd < 0) {
        shm_fd = memfd_create("fuzz-shm", MFD_CLOEXEC);
        if (shm_fd < 0 || ftruncate(shm_fd, SHM_SIZE) < 0) {
            abort();
        }
    }
    dev = opt & OPT_LOWER ? &fuzz_dev_lower : &fuzz_dev_self;
    dev->thread_model = SOFTDEV_THREAD_SERIALIZE;
    dev->size = opt & OPT_SIZE ? 1ull << 30 : 0;
    f = (Feed) { .c = &c, .p = data + 1, .left = size - 1,
                 .chunk = chunk_sizes[opt >> 5] };
    if ((opt & OPT_SHM) && (opt & OPT_RING) && setup_ring(&f) < 0) {
        return 0;
    }
    o = calloc(1, sizeof(*o));
    if (!o || conn_init(&c, dev, dev, -1, &opts) < 0) {
        abort();
    }
    c.input = feed_input;
    c.input_opaque = &f;
    /* As a unix socket with the memfd passed beside SHM_SETUP */
    c.family = AF_UNIX;
    if (opt & OPT_SHM) {
        c.shm_fd = dup(shm_fd);
    }
    o->reader = true;
    if (conn_handshake(&c) == 0) {
        conn_serve_serial(&c, o);
    }
    conn_close(&c);
    out_discard(&c, o);
    free(o);
    conn_destroy(&c);
    softdev_err_free(c.err);
    return 0;
}
