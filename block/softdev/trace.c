/*
 * softdev-trace: a content-preserving soft device that records every
 * request (start time, op, offset, length, latency, result and optionally
 * a CRC-32C of the data) to a binary trace file, docs/specs/softdev-trace.rst.
 * Records are buffered and written by a thread of the node's own, so the
 * request path never waits for the file; if the file falls more than
 * SOFTDEV_TRACE_MAX_QUEUED behind, records are dropped and counted.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "qemu/crc32c.h"
#include "qemu/cutils.h"
#include "qemu/iov.h"
#include "qemu/module.h"
#include "qemu/option.h"
#include "qemu/queue.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "softdev/softdev.h"
#include "trace/trace-block_softdev.h"

#define SOFTDEV_TRACE_MAGIC         "SDTRACE"     /* 8 bytes with the NUL */
#define SOFTDEV_TRACE_VERSION       1
#define SOFTDEV_TRACE_BUF_SIZE      (64 * KiB)
#define SOFTDEV_TRACE_MAX_QUEUED    (16 * MiB)
#define SOFTDEV_TRACE_FLUSH_MS      1000

#define SOFTDEV_TRACE_HDR_HASH      (1u << 0)

#define SOFTDEV_TRACE_REC_HASH      (1u << 0)
#define SOFTDEV_TRACE_REC_FUA       (1u << 1)
#define SOFTDEV_TRACE_REC_UNMAP     (1u << 2)

/* On-disk structures, little endian */
typedef struct QEMU_PACKED SoftdevTraceHeader {
    char magic[8];
    uint32_t version;
    uint32_t header_size;
    uint32_t record_size;
    uint32_t flags;
    uint64_t start_realtime_ns;     /* wall clock when the trace began */
    uint64_t start_monotonic_ns;    /* same instant, clock of the records */
    char node_name[32];
    uint64_t reserved;
} SoftdevTraceHeader;

typedef struct QEMU_PACKED SoftdevTraceRecord {
    uint64_t time_ns;               /* monotonic start of the request */
    uint64_t offset;
    uint64_t length;
    uint64_t latency_ns;
    int32_t result;                 /* 0 or -errno */
    uint16_t op;                    /* SoftdevOp */
    uint16_t flags;                 /* SOFTDEV_TRACE_REC_* */
    uint32_t crc32c;                /* of the data, if REC_HASH */
    uint32_t reserved;
} SoftdevTraceRecord;

QEMU_BUILD_BUG_ON(sizeof(SoftdevTraceHeader) != 80);
QEMU_BUILD_BUG_ON(sizeof(SoftdevTraceRecord) != 48);

typedef struct SoftdevTraceBuf {
    QSIMPLEQ_ENTRY(SoftdevTraceBuf) next;
    size_t used;
    uint8_t data[SOFTDEV_TRACE_BUF_SIZE];
} SoftdevTraceBuf;

typedef struct SoftdevTrace {
    char *path;
    bool hash;
    int fd;                         /* -1 without a trace file */
    SoftdevTraceHeader header;      /* written first by the writer thread */

    /* Shared with the writer thread, under @lock */
    QemuMutex lock;
    QemuCond cond;
    QemuThread thread;
    SoftdevTraceBuf *cur;
    QSIMPLEQ_HEAD(, SoftdevTraceBuf) full;
    size_t queued;
    bool stop;
    bool write_failed;
    bool alerted;
    uint64_t records;
    uint64_t dropped;
} SoftdevTrace;

static QemuOptsList softdev_trace_opts = {
    .name = "softdev-trace",
    .head = QTAILQ_HEAD_INITIALIZER(softdev_trace_opts.head),
    .desc = {
        {
            .name = "trace-file",
            .type = QEMU_OPT_STRING,
            .help = "binary trace file to create",
        },
        {
            .name = "hash",
            .type = QEMU_OPT_BOOL,
            .help = "record a CRC-32C of read and written data",
        },
        { /* end of list */ }
    },
};

/* Write all of @buf or fail; the writer thread is the only user of @fd. */
static int softdev_trace_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += n;
        len -= n;
    }
    return 0;
}

static void *softdev_trace_writer(void *opaque)
{
    SoftdevTrace *t = opaque;
    int hdr_ret = softdev_trace_write_all(t->fd, &t->header,
                                          sizeof(t->header));

    qemu_mutex_lock(&t->lock);
    if (hdr_ret < 0) {
        t->write_failed = true;
    }
    for (;;) {
        SoftdevTraceBuf *buf;

        while (!t->stop && QSIMPLEQ_EMPTY(&t->full)) {
            if (!qemu_cond_timedwait(&t->cond, &t->lock,
                                     SOFTDEV_TRACE_FLUSH_MS) &&
                t->cur && t->cur->used) {
                /* Idle for a while: let a partial buffer reach the file */
                QSIMPLEQ_INSERT_TAIL(&t->full, t->cur, next);
                t->queued += sizeof(*t->cur);
                t->cur = NULL;
            }
        }
        if (t->stop && t->cur) {
            QSIMPLEQ_INSERT_TAIL(&t->full, t->cur, next);
            t->queued += sizeof(*t->cur);
            t->cur = NULL;
        }
        buf = QSIMPLEQ_FIRST(&t->full);
        if (!buf) {
            break;      /* stopped and everything written */
        }
        QSIMPLEQ_REMOVE_HEAD(&t->full, next);

        qemu_mutex_unlock(&t->lock);
        int ret = t->write_failed ? -EIO :
                  softdev_trace_write_all(t->fd, buf->data, buf->used);
        qemu_mutex_lock(&t->lock);

        t->queued -= sizeof(*buf);
        if (ret < 0) {
            t->write_failed = true;
            t->dropped += buf->used / sizeof(SoftdevTraceRecord);
        } else {
            t->records += buf->used / sizeof(SoftdevTraceRecord);
        }
        g_free(buf);
    }
    qemu_mutex_unlock(&t->lock);
    return NULL;
}

static uint32_t softdev_trace_crc(QEMUIOVector *qiov, size_t offset,
                                  size_t bytes)
{
    uint32_t crc = 0xffffffff;
    int i;

    for (i = 0; i < qiov->niov && bytes; i++) {
        size_t len = qiov->iov[i].iov_len;

        if (offset >= len) {
            offset -= len;
            continue;
        }
        len = MIN(len - offset, bytes);
        crc = crc32c(crc, (uint8_t *)qiov->iov[i].iov_base + offset, len) ^
              0xffffffff;
        bytes -= len;
        offset = 0;
    }
    return crc ^ 0xffffffff;
}

static int coroutine_fn GRAPH_RDLOCK
softdev_trace_co_post(BlockDriverState *bs, SoftdevRequest *req, int ret,
                      int64_t latency_ns)
{
    SoftdevTrace *t = softdev_opaque(bs);
    SoftdevTraceRecord rec = {
        .time_ns = cpu_to_le64(req->start_ns),
        .latency_ns = cpu_to_le64(latency_ns),
        .result = cpu_to_le32(ret < 0 ? ret : 0),
        .op = cpu_to_le16(req->op),
    };
    uint16_t flags = 0;
    bool alert = false;

    if (t->fd < 0) {
        return ret;
    }
    if (req->op != SOFTDEV_OP_FLUSH) {
        rec.offset = cpu_to_le64(req->offset);
        rec.length = cpu_to_le64(req->bytes);
    }
    if (req->flags & BDRV_REQ_FUA) {
        flags |= SOFTDEV_TRACE_REC_FUA;
    }
    if (req->flags & BDRV_REQ_MAY_UNMAP) {
        flags |= SOFTDEV_TRACE_REC_UNMAP;
    }
    if (t->hash && req->qiov && ret >= 0) {
        rec.crc32c = cpu_to_le32(softdev_trace_crc(req->qiov,
                                                   req->qiov_offset,
                                                   req->bytes));
        flags |= SOFTDEV_TRACE_REC_HASH;
    }
    rec.flags = cpu_to_le16(flags);

    qemu_mutex_lock(&t->lock);
    if (t->write_failed) {
        t->dropped++;
        alert = !t->alerted;
        t->alerted = true;
    } else if (!t->cur && t->queued >= SOFTDEV_TRACE_MAX_QUEUED) {
        t->dropped++;
    } else {
        if (!t->cur) {
            t->cur = g_new(SoftdevTraceBuf, 1);
            t->cur->used = 0;
        }
        memcpy(t->cur->data + t->cur->used, &rec, sizeof(rec));
        t->cur->used += sizeof(rec);
        if (t->cur->used + sizeof(rec) > SOFTDEV_TRACE_BUF_SIZE) {
            QSIMPLEQ_INSERT_TAIL(&t->full, t->cur, next);
            t->queued += sizeof(*t->cur);
            t->cur = NULL;
            qemu_cond_signal(&t->cond);
        }
    }
    qemu_mutex_unlock(&t->lock);

    if (alert) {
        softdev_alert(bs, SOFTDEV_SEVERITY_WARNING, -1, -1, t->path,
                      "cannot write trace file, records are dropped");
    }
    return ret;
}

static int softdev_trace_open(BlockDriverState *bs, QemuOpts *opts,
                              QDict *options, Error **errp)
{
    SoftdevTrace *t = softdev_opaque(bs);
    const char *path = qemu_opt_get(opts, "trace-file");
    int flags;

    t->fd = -1;
    t->hash = qemu_opt_get_bool(opts, "hash", false);
    if (!path) {
        return 0;
    }
    if (!*path) {
        error_setg(errp, "trace-file must not be empty");
        return -EINVAL;
    }

    /*
     * O_NONBLOCK so that a FIFO without a reader fails at once instead of
     * blocking the main loop; writes happen in the writer thread, blocking.
     */
    t->fd = qemu_create(path, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NONBLOCK,
                        0600, errp);
    if (t->fd < 0) {
        error_prepend(errp, "softdev-trace: ");
        return -EINVAL;
    }
    flags = fcntl(t->fd, F_GETFL);
    if (flags < 0 || fcntl(t->fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
        error_setg_errno(errp, errno, "softdev-trace: cannot use '%s'", path);
        close(t->fd);
        t->fd = -1;
        return -EINVAL;
    }
    /*
     * All writes to the file, the header's too, happen in the writer
     * thread; a failure there shows as dropped records and an alert.
     */
    t->header = (SoftdevTraceHeader) {
        .magic = SOFTDEV_TRACE_MAGIC,
        .version = cpu_to_le32(SOFTDEV_TRACE_VERSION),
        .header_size = cpu_to_le32(sizeof(SoftdevTraceHeader)),
        .record_size = cpu_to_le32(sizeof(SoftdevTraceRecord)),
        .flags = cpu_to_le32(t->hash ? SOFTDEV_TRACE_HDR_HASH : 0),
        .start_realtime_ns = cpu_to_le64(qemu_clock_get_ns(QEMU_CLOCK_HOST)),
        .start_monotonic_ns = cpu_to_le64(get_clock()),
    };
    pstrcpy(t->header.node_name, sizeof(t->header.node_name), bs->node_name);

    t->path = g_strdup(path);
    qemu_mutex_init(&t->lock);
    qemu_cond_init(&t->cond);
    QSIMPLEQ_INIT(&t->full);
    qemu_thread_create(&t->thread, "softdev-trace", softdev_trace_writer, t,
                       QEMU_THREAD_JOINABLE);
    trace_softdev_trace_open(bs, path, t->hash);
    return 0;
}

static void softdev_trace_close(BlockDriverState *bs)
{
    SoftdevTrace *t = softdev_opaque(bs);

    if (t->fd < 0) {
        return;
    }
    qemu_mutex_lock(&t->lock);
    t->stop = true;
    qemu_cond_signal(&t->cond);
    qemu_mutex_unlock(&t->lock);
    qemu_thread_join(&t->thread);

    trace_softdev_trace_close(bs, t->records, t->dropped);
    /* EINVAL: the file cannot be synced (a pipe or device); fine. */
    if (fsync(t->fd) < 0 && errno != EINVAL) {
        warn_report("softdev-trace: syncing '%s' failed: %s", t->path,
                    strerror(errno));
    }
    if (close(t->fd) < 0) {
        warn_report("softdev-trace: closing '%s' failed: %s", t->path,
                    strerror(errno));
    }
    t->fd = -1;
    qemu_cond_destroy(&t->cond);
    qemu_mutex_destroy(&t->lock);
    g_free(t->path);
}

/*
 * blockdev-reopen may turn hashing on or off: each record says whether it
 * has a hash (the header only says how the trace began).
 */
static const char *const softdev_trace_mutable_opts[] = { "hash", NULL };

static int softdev_trace_reopen_prepare(BlockDriverState *bs, QemuOpts *opts,
                                        void **state, Error **errp)
{
    *state = GINT_TO_POINTER(qemu_opt_get_bool(opts, "hash", false));
    return 0;
}

static void softdev_trace_reopen_commit(BlockDriverState *bs, void *state)
{
    SoftdevTrace *t = softdev_opaque(bs);

    /* Requests are drained: no co_post reads it meanwhile */
    t->hash = GPOINTER_TO_INT(state);
}

static void softdev_trace_query(BlockDriverState *bs, SoftdevInfo *info)
{
    SoftdevTrace *t = softdev_opaque(bs);
    SoftdevTraceInfo *ti = &info->u.softdev_trace;

    ti->hash = t->hash;
    if (t->fd < 0) {
        return;
    }
    ti->trace_file = g_strdup(t->path);
    qemu_mutex_lock(&t->lock);
    ti->records = t->records;
    ti->dropped = t->dropped;
    qemu_mutex_unlock(&t->lock);
}

static SoftdevDriver softdev_trace = {
    .name               = "softdev-trace",
    .content_preserving = true,
    .state_size         = sizeof(SoftdevTrace),
    .opts               = &softdev_trace_opts,
    .open               = softdev_trace_open,
    .close              = softdev_trace_close,
    .co_post            = softdev_trace_co_post,
    /* A trace records every request as it is */
    .zeroes             = SOFTDEV_ZEROES_SEEN,
    .discard            = SOFTDEV_DISCARD_SEEN,
    .mutable_opts       = softdev_trace_mutable_opts,
    .reopen_prepare     = softdev_trace_reopen_prepare,
    .reopen_commit      = softdev_trace_reopen_commit,
    .query              = softdev_trace_query,
};

static void softdev_trace_init(void)
{
    softdev_register(&softdev_trace);
}

block_init(softdev_trace_init);
