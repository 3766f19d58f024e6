/*
 * softdev-tap: the connection to the soft-device process, as QEMU's
 * nbd/client-connection.c is to the NBD client.  Its state changes only
 * in softdev_tap_conn_set().  Connecting and the handshake block, so they
 * run at open (before the node is shared) or in the connector thread,
 * which hands a new connection to s->ctx to be installed; a lost
 * connection is torn down in s->ctx, where on-disconnect decides what
 * becomes of the requests: queue keeps them and replays them after a
 * reconnection, fail fails them, passthrough sends them to the node
 * below.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/mman.h>
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/memfd.h"
#include "qemu/sockets.h"
#include "tap-int.h"
#include "trace/trace-block_softdev.h"

#define SOFTDEV_TAP_HELLO_SECS      10

/* Locked */
void softdev_tap_conn_set(SoftdevTap *s, SoftdevTapConnState state)
{
    if (!softdev_tap_conn_legal(s->conn_state, state, softdev_tap_bug, s)) {
        return;
    }
    trace_softdev_tap_conn_state(s->bs,
                                 softdev_tap_conn_state_name(s->conn_state),
                                 softdev_tap_conn_state_name(state));
    s->conn_state = state;
}

/* Whether requests may be sent now */
bool softdev_tap_connected(SoftdevTap *s)
{
    return s->conn_state == SOFTDEV_TAP_CONN_CONNECTED;
}

void softdev_tap_conn_free(SoftdevTapConn *c)
{
    if (c->shm) {
        munmap(c->shm, c->shm_size);
    }
    if (c->fd >= 0) {
        close(c->fd);
    }
    *c = (SoftdevTapConn) { .fd = -1 };
}

/*
 * The connection is gone: tear it down and apply on-disconnect.  Locked,
 * in s->ctx.
 */
void softdev_tap_teardown(SoftdevTap *s, const char *why)
{
    bool queue = s->cfg.on_disconnect == SOFTDEV_TAP_ON_DISCONNECT_QUEUE;
    bool reconnect = s->cfg.reconnect_max_ms && !s->closing;
    SoftdevTapReq *tr, *next;
    const char *policy;

    if (s->conn_state != SOFTDEV_TAP_CONN_CONNECTED &&
        s->conn_state != SOFTDEV_TAP_CONN_DRAINING) {
        return;
    }
    if (s->drop_reason) {
        why = s->drop_reason;
        s->drop_reason = NULL;
    }
    s->disconnects++;
    if (s->ctx) {
        softdev_tap_clear_handlers(s);
    }
    softdev_tap_conn_free(&s->conn);
    softdev_tap_buf_reset(&s->sbuf);
    softdev_tap_buf_reset(&s->rbuf);
    s->want_write = false;
    s->transport = NULL;
    s->publish_pending = false;
    s->notify_deferred = false;
    softdev_tap_conn_set(s, reconnect ? SOFTDEV_TAP_CONN_CONNECTING :
                                        SOFTDEV_TAP_CONN_DISCONNECTED);
    trace_softdev_tap_disconnect(s->bs, why);

    QTAILQ_FOREACH_SAFE(tr, &s->reqs, next, next) {
        SoftdevTapReqState st = softdev_tap_req_on_disconnect(tr->state,
                                                              queue);

        if (st == SOFTDEV_TAP_REQ_DONE) {
            softdev_tap_decide_by_policy(s, tr);
        } else if (st != tr->state) {
            softdev_tap_req_set(s, tr, st);
        }
    }
    s->nfree = 0;
    s->next_unsent = QTAILQ_FIRST(&s->reqs);

    policy = queue ? "wait for it" :
             s->cfg.on_disconnect == SOFTDEV_TAP_ON_DISCONNECT_FAIL ? "fail" :
             "pass through";
    softdev_alert(s->bs, SOFTDEV_SEVERITY_WARNING, -1, -1, NULL,
                  "soft-device process disconnected: %s; requests %s%s",
                  why, policy, reconnect ? ", reconnecting" : "");
    qemu_cond_broadcast(&s->cond);
}

/*
 * Have the connection dropped: the socket is shut down and its read
 * handler in s->ctx tears it down.  Locked.
 */
void softdev_tap_drop(SoftdevTap *s, const char *why)
{
    if (s->conn_state == SOFTDEV_TAP_CONN_CONNECTED) {
        s->drop_reason = why;
        softdev_tap_conn_set(s, SOFTDEV_TAP_CONN_DRAINING);
        shutdown(s->conn.fd, SHUT_RDWR);
    }
}

/* Report a protocol error and drop the connection.  Locked. */
void softdev_tap_protocol_error(SoftdevTap *s, const char *err)
{
    if (!s->drop_reason) {
        error_report("softdev-tap '%s': protocol error: %s",
                     bdrv_get_node_name(s->bs), err);
    }
    softdev_tap_teardown(s, err);
}

/* -- connecting ---------------------------------------------------------- */

static int softdev_tap_write_all(int fd, const void *buf, size_t len,
                                 int scm_fd)
{
    const uint8_t *p = buf;

    while (len) {
        struct iovec iov = { .iov_base = (void *)p, .iov_len = len };
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } u;
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n;

        if (scm_fd >= 0) {
            struct cmsghdr *cmsg;

            memset(&u, 0, sizeof(u));
            msg.msg_control = u.buf;
            msg.msg_controllen = sizeof(u.buf);
            cmsg = CMSG_FIRSTHDR(&msg);
            cmsg->cmsg_level = SOL_SOCKET;
            cmsg->cmsg_type = SCM_RIGHTS;
            cmsg->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(cmsg), &scm_fd, sizeof(int));
        }
        n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        scm_fd = -1;            /* sent with the first byte */
        p += n;
        len -= n;
    }
    return 0;
}

/* 0, or -errno (-ECONNRESET for EOF) */
static int softdev_tap_read_all(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len) {
        ssize_t n = read(fd, p, len);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n == 0) {
            return -ECONNRESET;
        }
        if (n < 0) {
            return -errno;
        }
        p += n;
        len -= n;
    }
    return 0;
}

/*
 * Connect to the process and shake hands, blocking (at open, or in the
 * connector thread).  Fills @c; on failure @c is empty.
 */
int softdev_tap_connect(SoftdevTap *s, SoftdevTapConn *c,
                        Error **errp)
{
    uint8_t buf[SOFTDEV_TAP_HDR_SIZE + SOFTDEV_TAP_HELLO_SIZE];
    struct timeval tv = { .tv_sec = SOFTDEV_TAP_HELLO_SECS };
    bool unix_socket = s->saddr->type == SOCKET_ADDRESS_TYPE_UNIX;
    SoftdevTapHello hello = {
        .version = SOFTDEV_TAP_VERSION,
        .device_class = SOFTDEV_TAP_CLASS_BLOCK,
        .features = SOFTDEV_TAP_F_FLUSH | SOFTDEV_TAP_F_DISCARD |
                    SOFTDEV_TAP_F_ZEROES | SOFTDEV_TAP_F_FUA |
                    (s->has_lower ? SOFTDEV_TAP_F_LOWER : 0) |
                    (unix_socket ? SOFTDEV_TAP_F_SHM | SOFTDEV_TAP_F_RING :
                                   0) |
                    (s->has_lower ? SOFTDEV_TAP_F_EARLY_READ |
                                    SOFTDEV_TAP_F_EARLY_WRITE : 0) |
                    (s->has_lower && unix_socket ?
                     SOFTDEV_TAP_F_READ_BELOW : 0) |
                    SOFTDEV_TAP_F_NO_WRITE_DATA,
        .size = s->lower_size,
        .max_data = SOFTDEV_TAP_CLIENT_MAX_DATA,
        .max_inflight = s->want_inflight,
    };
    SoftdevTapHello reply;
    SoftdevTapHeader hdr;
    const char *err = NULL;
    int memfd = -1;
    size_t len;
    int ret = -EIO, r;

    *c = (SoftdevTapConn) { .fd = -1 };
    c->fd = socket_connect(s->saddr, errp);
    if (c->fd < 0) {
        error_prepend(errp, "softdev-tap: cannot reach the soft-device "
                      "process: ");
        return -EIO;
    }
    qemu_mutex_lock(&s->lock);
    s->connecting_fd = c->fd;
    if (s->closing) {
        /* close() may have looked before connecting_fd was set */
        qemu_mutex_unlock(&s->lock);
        error_setg(errp, "softdev-tap: the node is closing");
        goto out;
    }
    qemu_mutex_unlock(&s->lock);
    qemu_socket_set_block(c->fd);
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));

    if (unix_socket && s->peer_uid >= 0) {
        struct ucred cred;
        socklen_t clen = sizeof(cred);

        if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0) {
            error_setg_errno(errp, errno, "softdev-tap: cannot get the "
                             "process's credentials");
            goto out;
        }
        if (cred.uid != s->peer_uid) {
            error_setg(errp, "softdev-tap: the soft-device process runs as "
                       "uid %u, not peer-uid %" PRId64, (unsigned)cred.uid,
                       s->peer_uid);
            goto out;
        }
    }

    len = softdev_tap_encode_hello(buf, false, &hello);
    if (softdev_tap_write_all(c->fd, buf, len, -1) < 0) {
        error_setg_errno(errp, errno, "softdev-tap handshake: cannot send "
                         "HELLO");
        goto out;
    }
    r = softdev_tap_read_all(c->fd, buf, SOFTDEV_TAP_HDR_SIZE);
    if (r == -ECONNRESET) {
        error_setg(errp, "softdev-tap handshake: the soft-device process "
                   "closed the connection (its log says why)");
        goto out;
    } else if (r < 0) {
        error_setg_errno(errp, -r, "softdev-tap handshake: no answer from "
                         "the soft-device process");
        goto out;
    }
    if (softdev_tap_decode_header(buf, SOFTDEV_TAP_HANDSHAKE_MAX, &hdr,
                                  &err) == 0 &&
        hdr.length == SOFTDEV_TAP_HELLO_REPLY_SIZE &&
        softdev_tap_read_all(c->fd, buf + SOFTDEV_TAP_HDR_SIZE,
                             hdr.length) < 0) {
        error_setg(errp, "softdev-tap handshake: truncated answer");
        goto out;
    }
    if (err || softdev_tap_decode_hello(&hdr, buf + SOFTDEV_TAP_HDR_SIZE,
                                        true, &hello, &reply, &err) < 0) {
        error_setg(errp, "softdev-tap handshake: %s", err);
        goto out;
    }
    if (!reply.size && !s->has_lower) {
        error_setg(errp, "softdev-tap: there is no node below, so the soft "
                   "device must give its size");
        goto out;
    }
    c->features = reply.features;
    c->max_data = reply.max_data;
    c->max_inflight = reply.max_inflight;
    c->size = reply.size ? reply.size : s->lower_size;

    if ((c->features & (SOFTDEV_TAP_F_RING | SOFTDEV_TAP_F_READ_BELOW)) &&
        !(c->features & SOFTDEV_TAP_F_SHM)) {
        error_setg(errp, "softdev-tap handshake: the soft device accepted "
                   "%s without shared memory",
                   c->features & SOFTDEV_TAP_F_RING ? "rings" :
                   "reads with the data below");
        goto out;
    }
    if (c->features & SOFTDEV_TAP_F_SHM) {
        SoftdevTapShm shm = {
            .slots = c->max_inflight, .slot_size = c->max_data,
        };

        if (c->features & SOFTDEV_TAP_F_RING) {
            shm.ring_entries = softdev_tap_ring_entries(shm.slots);
        }
        c->shm_size = softdev_tap_shm_size(&shm);
        /* Sealed: the process can rely on the size staying (no SIGBUS) */
        memfd = qemu_memfd_create("softdev-tap", c->shm_size, false, 0,
                                  F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL,
                                  errp);
        if (memfd < 0) {
            error_prepend(errp, "softdev-tap: shared memory: ");
            goto out;
        }
        c->shm = mmap(NULL, c->shm_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                      memfd, 0);
        if (c->shm == MAP_FAILED) {
            c->shm = NULL;
            error_setg_errno(errp, errno, "softdev-tap: cannot map shared "
                             "memory");
            goto out;
        }
        if (shm.ring_entries) {
            c->ring = c->shm + (size_t)shm.slots * shm.slot_size;
            c->ring_entries = shm.ring_entries;
            /* Until we poll, we want to be told about replies */
            *softdev_tap_ring_word(c->ring, SOFTDEV_TAP_RING_CLI_IDLE) = 1;
        }
        len = softdev_tap_encode_shm(buf, &shm);
        if (softdev_tap_write_all(c->fd, buf, len, memfd) < 0) {
            error_setg_errno(errp, errno, "softdev-tap: cannot send the "
                             "shared memory");
            goto out;
        }
    }
    tv.tv_sec = 0;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    qemu_socket_set_nonblock(c->fd);
    ret = 0;

out:
    if (memfd >= 0) {
        close(memfd);
    }
    qemu_mutex_lock(&s->lock);
    s->connecting_fd = -1;
    qemu_mutex_unlock(&s->lock);
    if (ret < 0) {
        softdev_tap_conn_free(c);
    }
    return ret;
}

/* Whether @c fits this node: an error message or NULL */
const char *softdev_tap_conn_check(SoftdevTap *s, const SoftdevTapConn *c)
{
    if (c->size != s->size) {
        return "the soft device's size changed";
    }
    if (c->max_data < s->first_max_data) {
        return "the soft device lowered max_data";
    }
    return NULL;
}

/*
 * Make @c the connection: requests that were waiting are sent (again) by
 * the next pump.  Locked; in s->ctx, or at open.
 */
void softdev_tap_install(SoftdevTap *s, SoftdevTapConn *c)
{
    SoftdevTapReq *tr, *next;
    uint64_t replayed = 0;
    uint32_t i;

    s->conn = *c;
    *c = (SoftdevTapConn) { .fd = -1 };
    s->generation++;
    softdev_tap_conn_set(s, SOFTDEV_TAP_CONN_CONNECTED);
    s->transport = s->conn.ring ? &softdev_tap_ring : &softdev_tap_stream;
    g_free(s->free_slots);
    s->free_slots = g_new(uint32_t, s->conn.max_inflight);
    for (i = 0; i < s->conn.max_inflight; i++) {
        s->free_slots[i] = s->conn.max_inflight - 1 - i;
    }
    s->nfree = s->conn.shm ? s->conn.max_inflight : 0;
    assert(!s->early_at_process);
    s->cli_idle = s->conn.ring != NULL;     /* the handshake set the word */
    s->req_prod = s->rep_cons = 0;
    s->next_unsent = QTAILQ_FIRST(&s->reqs);

    /* A request whose op the new process does not want is decided now. */
    QTAILQ_FOREACH_SAFE(tr, &s->reqs, next, next) {
        uint64_t gate = softdev_tap_op_feature(tr->req->op);

        if (gate && !(s->conn.features & gate)) {
            softdev_tap_decide_unwanted(s, tr);
        } else if (tr->state == SOFTDEV_TAP_REQ_REPLAY) {
            replayed++;
        }
    }
    s->replayed += replayed;
    trace_softdev_tap_connect(s->bs, s->generation, s->conn.features,
                              s->conn.max_data, s->conn.max_inflight,
                              s->conn.shm != NULL, s->conn.ring != NULL,
                              replayed);
}

/* Install the connection the connector made, in s->ctx */
void softdev_tap_attach_bh(void *opaque)
{
    SoftdevTap *s = opaque;

    qemu_mutex_lock(&s->lock);
    if (s->pending.fd >= 0) {
        if (s->conn_state == SOFTDEV_TAP_CONN_CONNECTING) {
            s->reconnects++;
            softdev_tap_install(s, &s->pending);
            softdev_tap_set_handlers(s);
            softdev_tap_pump(s);
        } else {
            softdev_tap_conn_free(&s->pending);
        }
        qemu_cond_broadcast(&s->cond);
    }
    softdev_tap_unlock(s);
}

/*
 * The connector thread: while the node wants a connection, connect and
 * shake hands (blocking), backing off between attempts up to
 * reconnect-delay, and hand each new connection to s->ctx.
 */
void *softdev_tap_connector(void *opaque)
{
    SoftdevTap *s = opaque;
    uint32_t delay_ms = SOFTDEV_TAP_FIRST_RETRY_MS;
    unsigned attempts = 0;

    qemu_mutex_lock(&s->lock);
    for (;;) {
        SoftdevTapConn c;
        Error *local_err = NULL;
        const char *bad;
        int ret;

        /*
         * Old lower requests finish before the new HELLO (spec); a
         * connection handed over is installed first.
         */
        while (!s->closing &&
               (s->conn_state != SOFTDEV_TAP_CONN_CONNECTING ||
                s->pending.fd >= 0 || s->lower_inflight)) {
            qemu_cond_wait(&s->cond, &s->lock);
        }
        if (s->closing) {
            break;
        }
        qemu_mutex_unlock(&s->lock);
        ret = softdev_tap_connect(s, &c, &local_err);
        qemu_mutex_lock(&s->lock);
        attempts++;
        bad = ret < 0 || s->closing ? NULL : softdev_tap_conn_check(s, &c);
        if (ret == 0 && !bad && !s->closing) {
            softdev_alert(s->bs, SOFTDEV_SEVERITY_INFO, -1, -1, NULL,
                          "soft-device process reconnected after %u "
                          "attempt(s); %" PRIu32 " request(s) waiting",
                          attempts,
                          s->count[SOFTDEV_TAP_REQ_QUEUED] +
                          s->count[SOFTDEV_TAP_REQ_REPLAY]);
            s->pending = c;
            if (s->attach_bh) {
                qemu_bh_schedule(s->attach_bh);
            }
            attempts = 0;
            delay_ms = SOFTDEV_TAP_FIRST_RETRY_MS;
            continue;
        }
        if (ret == 0) {
            softdev_tap_conn_free(&c);
        }
        if (bad) {
            error_setg(&local_err, "softdev-tap: refusing the soft-device "
                       "process: %s", bad);
        }
        if (attempts == 1 && local_err) {
            softdev_alert(s->bs, SOFTDEV_SEVERITY_WARNING, -1, -1, NULL,
                          "%s; retrying", error_get_pretty(local_err));
        }
        error_free(local_err);
        if (!s->closing) {
            qemu_cond_timedwait(&s->cond, &s->lock, delay_ms);
            delay_ms = MIN(delay_ms * 2, MAX(s->cfg.reconnect_max_ms,
                                             SOFTDEV_TAP_FIRST_RETRY_MS));
        }
    }
    qemu_mutex_unlock(&s->lock);
    return NULL;
}
