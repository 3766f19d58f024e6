/*
 * libFuzzer target, device side: the input is what a client sends to a
 * libsoftdev device, and goes through the whole of the library's
 * connection handling (softdev_serve_fd: buffered reading, the codec, the
 * connection-state rules, SHM_SETUP, queueing, callbacks, lower requests,
 * batched replies) over a socketpair.
 *
 * Input: see fuzz-devices.h.  Slow (a thread and a socketpair per input,
 * and waits for the device), but the only target that runs the
 * parallel model, real sockets and SCM_RIGHTS; fuzz-conn is the fast one.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/fuzz/fuzz-devices.h"

typedef struct Client {
    int fd;
    const uint8_t *data;
    size_t size;
    bool shm;
    bool ring;
} Client;

static void send_all(int fd, const uint8_t *p, size_t len, int passfd)
{
    char ctl[CMSG_SPACE(sizeof(int))];

    while (len) {
        struct iovec iov = { (void *)p, len };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n;

        if (passfd >= 0) {
            struct cmsghdr *cm;
            memset(ctl, 0, sizeof(ctl));
            msg.msg_control = ctl;
            msg.msg_controllen = sizeof(ctl);
            cm = CMSG_FIRSTHDR(&msg);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(cm), &passfd, sizeof(int));
        }
        n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return;                         /* the device hung up */
        }
        passfd = -1;
        p += n;
        len -= n;
    }
}

/* How many REQUESTs the input holds, as far as its headers go */
static unsigned count_requests(const uint8_t *p, size_t size)
{
    unsigned n = 0;

    while (size >= SOFTDEV_TAP_HDR_SIZE) {
        SoftdevTapHeader h;
        const char *err;
        if (softdev_tap_decode_header(p, SOFTDEV_TAP_MAX_DATA + 64, &h,
                                      &err) < 0 ||
            size - SOFTDEV_TAP_HDR_SIZE < h.length) {
            break;
        }
        n += h.type == SOFTDEV_TAP_REQUEST;
        p += SOFTDEV_TAP_HDR_SIZE + h.length;
        size -= SOFTDEV_TAP_HDR_SIZE + h.length;
    }
    return n;
}

/*
 * Read what the device sends, answer its LOWER_REQUESTs (READs with
 * zeroes; odd handles fail with -EIO) and count its REPLYs, until
 * @expected replies came, the device hung up, or it went quiet.
 */
static void serve_lower(int fd, unsigned expected)
{
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    unsigned replies = 0;

    while (buf && replies < expected) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        size_t pos = 0;
        ssize_t n;

        if (poll(&pfd, 1, 200) <= 0) {
            break;                          /* quiet: it waits for more */
        }
        if (len == cap) {
            uint8_t *nbuf = realloc(buf, cap * 2);
            if (!nbuf) {
                break;
            }
            buf = nbuf;
            cap *= 2;
        }
        n = read(fd, buf + len, cap - len);
        if (n <= 0) {
            break;
        }
        len += n;
        while (len - pos >= SOFTDEV_TAP_HDR_SIZE) {
            SoftdevTapHeader h;
            const char *err;
            const uint8_t *p = buf + pos;
            if (softdev_tap_decode_header(p, SOFTDEV_TAP_MAX_DATA + 64, &h,
                                          &err) < 0) {
                goto out;
            }
            if (len - pos - SOFTDEV_TAP_HDR_SIZE < h.length) {
                break;
            }
            pos += SOFTDEV_TAP_HDR_SIZE + h.length;
            replies += h.type == SOFTDEV_TAP_REPLY;
            if (h.type == SOFTDEV_TAP_LOWER_REQUEST) {
                uint8_t msg[SOFTDEV_TAP_HDR_SIZE +
                            SOFTDEV_TAP_LOWER_REPLY_SIZE];
                SoftdevTapReply rep = { 0 };
                uint8_t *zero = NULL;
                uint64_t bytes = fuzz_ld32(p + 24 + 16) |
                                 (uint64_t)fuzz_ld32(p + 24 + 20) << 32;
                if (h.handle & 1) {
                    rep.result = -EIO;
                } else if (p[24] == SOFTDEV_TAP_OP_READ &&
                           bytes <= SOFTDEV_TAP_MAX_DATA) {
                    rep.bytes = bytes;
                    zero = calloc(1, bytes ? bytes : 1);
                }
                softdev_tap_encode_reply(msg, SOFTDEV_TAP_LOWER_REPLY,
                                         h.handle, false, &rep);
                send_all(fd, msg, sizeof(msg), -1);
                if (zero) {
                    send_all(fd, zero, rep.bytes, -1);
                    free(zero);
                }
            }
        }
        memmove(buf, buf + pos, len - pos);
        len -= pos;
    }
out:
    free(buf);
}

/*
 * Drive the request ring at @ctl with the records at @p (see the top),
 * then give the device a moment to answer through the reply ring.
 * Returns how many bytes of @p were records.
 */
static size_t drive_ring(int fd, uint8_t *ctl, uint32_t entries,
                         const uint8_t *p, size_t size)
{
    static const uint8_t kick[SOFTDEV_TAP_HDR_SIZE] = {
        'S', 'D', 'T', 'P', SOFTDEV_TAP_KICK,
    };
    uint32_t *req_prod = softdev_tap_ring_word(ctl,
                                               SOFTDEV_TAP_RING_REQ_PROD);
    uint32_t prod = 0, posted = 0;
    size_t used = 0;
    int i;

    while (size - used >= RING_RECORD) {
        const uint8_t *rec = p + used;

        if (rec[0] & 0x40) {
            __atomic_store_n(req_prod, fuzz_ld32(rec + 1), __ATOMIC_RELEASE);
        } else {
            memcpy(softdev_tap_ring_entry(ctl, entries,
                                          SOFTDEV_TAP_RING_REQUESTS, prod),
                   rec + 1, SOFTDEV_TAP_RING_MSG_SIZE);
            __atomic_store_n(req_prod, ++prod, __ATOMIC_RELEASE);
            posted++;
        }
        if (rec[0] & 0x80) {
            send_all(fd, kick, sizeof(kick), -1);
        }
        used += RING_RECORD;
    }
    /* Up to 100 ms for the replies; the device may also hang up */
    for (i = 0; i < 200 && posted; i++) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        uint8_t buf[4096];

        if (__atomic_load_n(softdev_tap_ring_word(ctl,
                                                  SOFTDEV_TAP_RING_REP_PROD),
                            __ATOMIC_ACQUIRE) == posted) {
            break;
        }
        if (poll(&pfd, 1, 0) > 0 && read(fd, buf, sizeof(buf)) <= 0) {
            break;
        }
        usleep(500);
    }
    return used;
}

/* The client: send the input, play the node below, then hang up */
static void *client(void *opaque)
{
    Client *cl = opaque;
    static uint8_t sinkbuf[1 << 16];
    size_t first = cl->shm ? fuzz_hello_length(cl->data, cl->size) : 0;

    if (first) {
        /* Like QEMU: HELLO, wait for HELLO_REPLY, then the memfd */
        int mfd = memfd_create("fuzz-shm", MFD_CLOEXEC);
        send_all(cl->fd, cl->data, first, -1);
        if (mfd >= 0 && ftruncate(mfd, SHM_SIZE) == 0) {
            struct pollfd pfd = { .fd = cl->fd, .events = POLLIN };
            const uint8_t *rest = cl->data + first;
            size_t left = cl->size - first, second = 0, ctl = 0;
            uint32_t entries = 0;
            uint8_t *shm = MAP_FAILED;

            poll(&pfd, 1, 5000);
            if (cl->ring) {
                second = fuzz_ring_setup_length(rest, left, &ctl, &entries);
            }
            if (second) {
                shm = mmap(NULL, SHM_SIZE, PROT_READ | PROT_WRITE,
                           MAP_SHARED, mfd, 0);
            }
            if (shm != MAP_FAILED) {
                send_all(cl->fd, rest, second, mfd);
                rest += second;
                left -= second;
                second = drive_ring(cl->fd, shm + ctl, entries, rest, left);
                send_all(cl->fd, rest + second, left - second, -1);
                munmap(shm, SHM_SIZE);
            } else {
                send_all(cl->fd, rest, left, mfd);
            }
        }
        if (mfd >= 0) {
            close(mfd);
        }
    } else {
        send_all(cl->fd, cl->data, cl->size, -1);
    }
    serve_lower(cl->fd, count_requests(cl->data, cl->size));
    shutdown(cl->fd, SHUT_WR);
    while (read(cl->fd, sinkbuf, sizeof(sinkbuf)) > 0) {
        /* drain */
    }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct softdev_device *dev;
    pthread_t thread;
    Client cl;
    int sv[2];
    uint8_t opts;

    if (size < 1) {
        return 0;
    }
    opts = data[0];
    signal(SIGPIPE, SIG_IGN);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        return 0;
    }
    dev = opts & OPT_LOWER ? &fuzz_dev_lower : &fuzz_dev_self;
    dev->thread_model = opts & OPT_PARALLEL ? SOFTDEV_THREAD_PARALLEL :
                                              SOFTDEV_THREAD_SERIALIZE;
    dev->size = opts & OPT_SIZE ? 1ull << 30 : 0;
    cl = (Client){ sv[1], data + 1, size - 1, opts & OPT_SHM,
                   opts & OPT_RING };
    if (pthread_create(&thread, NULL, client, &cl) != 0) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    softdev_serve_fd(dev, dev, sv[0]);
    close(sv[0]);
    pthread_join(thread, NULL);
    close(sv[1]);
    return 0;
}
