/*
 * softdev-compress: a disk stored compressed in an image format of its
 * own (docs/specs/softdev-compress.rst).  Each guest cluster is one zstd
 * frame, or raw if it does not compress, appended to a log on the node
 * below; a map says where each cluster's newest copy is.  Crash
 * consistent: a write acknowledged before a completed flush survives any
 * crash.  Zeroed and discarded clusters take no space; compaction
 * (softdev-compact, qemu-img check -r, qemu-img amend -o compact=on)
 * reclaims what overwritten data took.  The log engine is slog.c.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <zstd.h>
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/iov.h"
#include "qemu/memalign.h"
#include "qemu/module.h"
#include "qemu/option.h"
#include "system/block-backend.h"
#include "softdev/softdev.h"
#include "slog.h"

/* QAPI schema of the options (scripts/softdev-drivers.py adds it)
 *
 * ##
 * # @SoftdevCompressOptions:
 * #
 * # Options of the softdev-compress soft device, whose child holds an
 * # image of its own format (create one with "qemu-img create -f
 * # softdev-compress").
 * #
 * # @level: the zstd level new writes are compressed with, from -7
 * #     (fastest) to 22 (default: the level the image was created with,
 * #     normally 1)
 * #
 * # Since: 10.0 (softdev)
 * ##
 * { 'struct': 'SoftdevCompressOptions',
 *   'data': { '*level': 'int' } }
 */

#define SOFTDEV_COMPRESS_MAGIC  "SDCOMPR"   /* and a NUL: 8 bytes */
#define SOFTDEV_COMPRESS_RUN    64          /* clusters read at once */

typedef struct SoftdevCompress {
    Slog log;
    int level;
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    uint8_t *cluster_buf;       /* gathering, decompressing: no yield */
} SoftdevCompress;

static QemuOptsList softdev_compress_opts = {
    .name = "softdev-compress",
    .head = QTAILQ_HEAD_INITIALIZER(softdev_compress_opts.head),
    .desc = {
        {
            .name = "level",
            .type = QEMU_OPT_NUMBER,
            .help = "zstd level of new writes (default: the image's)",
        },
        { /* end of list */ }
    },
};

static bool softdev_compress_level_ok(int64_t level, Error **errp)
{
    if (level < SLOG_MIN_LEVEL || level > SLOG_MAX_LEVEL || !level) {
        error_setg(errp, "softdev-compress: level must be from %d to %d "
                   "and not 0, not %" PRId64, SLOG_MIN_LEVEL, SLOG_MAX_LEVEL,
                   level);
        return false;
    }
    return true;
}

static int softdev_compress_open(BlockDriverState *bs, QemuOpts *opts,
                                 QDict *options, Error **errp)
{
    SoftdevCompress *c = softdev_opaque(bs);
    bool level_set = qemu_opt_find(opts, "level");
    int ret;

    c->level = qemu_opt_get_number(opts, "level", 1);
    if (level_set && !softdev_compress_level_ok(c->level, errp)) {
        return -EINVAL;
    }
    bdrv_graph_rdlock_main_loop();
    ret = slog_open(&c->log, bs, bs->file, SOFTDEV_COMPRESS_MAGIC,
                    !bdrv_is_read_only(bs), errp);
    bdrv_graph_rdunlock_main_loop();
    if (ret < 0) {
        return ret;
    }
    if (!level_set) {
        c->level = c->log.h.level;
    }
    c->cctx = ZSTD_createCCtx();
    c->dctx = ZSTD_createDCtx();
    c->cluster_buf = qemu_try_blockalign(bs->file->bs, c->log.h.cluster_size);
    if (!c->cctx || !c->dctx || !c->cluster_buf) {
        error_setg(errp, "softdev-compress: out of memory");
        ret = -ENOMEM;
        goto fail;
    }
    /* FUA becomes a flush after the write (the log's order matters) */
    bs->supported_write_flags = 0;
    bs->supported_zero_flags = BDRV_REQ_MAY_UNMAP;
    return 0;

fail:
    ZSTD_freeCCtx(c->cctx);
    ZSTD_freeDCtx(c->dctx);
    qemu_vfree(c->cluster_buf);
    bdrv_graph_rdlock_main_loop();
    c->log.state = SLOG_STATE_READ_ONLY;
    slog_close(&c->log);
    bdrv_graph_rdunlock_main_loop();
    return ret;
}

static void softdev_compress_close(BlockDriverState *bs)
{
    SoftdevCompress *c = softdev_opaque(bs);

    bdrv_graph_rdlock_main_loop();
    slog_close(&c->log);
    bdrv_graph_rdunlock_main_loop();
    ZSTD_freeCCtx(c->cctx);
    ZSTD_freeDCtx(c->dctx);
    qemu_vfree(c->cluster_buf);
}

static void softdev_compress_refresh_limits(BlockDriverState *bs,
                                            Error **errp)
{
    SoftdevCompress *c = softdev_opaque(bs);
    uint32_t cs = c->log.h.cluster_size;

    /* The block layer reads, merges and writes partial clusters for us */
    bs->bl.request_alignment = cs;
    bs->bl.pdiscard_alignment = cs;
    bs->bl.pwrite_zeroes_alignment = cs;
    bs->bl.max_transfer = QEMU_ALIGN_DOWN(BDRV_REQUEST_MAX_BYTES, cs);
}

static int64_t softdev_compress_getlength(BlockDriverState *bs)
{
    SoftdevCompress *c = softdev_opaque(bs);

    return c->log.h.virtual_size;
}

/*
 * Decode cluster @cl's record @rec_buf (map entry @e) into @out (a whole
 * cluster): 0, or -EIO with an alert.
 */
static int softdev_compress_decode(BlockDriverState *bs, uint64_t cl,
                                   uint64_t e, const uint8_t *rec_buf,
                                   uint8_t *out)
{
    SoftdevCompress *c = softdev_opaque(bs);
    uint32_t cs = c->log.h.cluster_size;
    const uint8_t *payload = rec_buf + SLOG_RECORD_HEADER;
    const char *why;
    SlogRecord rec;
    size_t n;

    if (slog_record_decode(rec_buf, slog_entry_size(e), &c->log.h, &rec,
                           &why) < 0) {
        goto bad;
    }
    why = "record of another cluster";
    if (rec.type != SLOG_REC_DATA || rec.cluster != cl ||
        rec.size != slog_entry_size(e)) {
        goto bad;
    }
    if (rec.encoding == SLOG_ENC_RAW) {
        memcpy(out, payload, cs);
        return 0;
    }
    n = ZSTD_decompressDCtx(c->dctx, out, cs, payload, rec.payload_len);
    if (ZSTD_isError(n) || n != cs) {
        why = ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short zstd frame";
        goto bad;
    }
    return 0;

bad:
    softdev_alert(bs, SOFTDEV_SEVERITY_CRITICAL, cl * cs, cs, NULL,
                  "cluster %" PRIu64 " is corrupt: %s", cl, why);
    return -EIO;
}

/* The bytes of cluster @cl that @req covers: [*skip, *skip + *len) */
static size_t softdev_compress_part(SoftdevCompress *c, SoftdevRequest *req,
                                    uint64_t cl, uint32_t *skip,
                                    uint32_t *len)
{
    uint32_t cs = c->log.h.cluster_size;
    uint64_t start = MAX(cl * cs, (uint64_t)req->offset);
    uint64_t end = MIN((cl + 1) * cs, (uint64_t)(req->offset + req->bytes));

    *skip = start - cl * cs;
    *len = end - start;
    return req->qiov_offset + (start - req->offset);
}

/* @len bytes at @offset of @qiov if they are in one piece of it, or NULL */
static uint8_t *softdev_compress_iov_ptr(QEMUIOVector *qiov, size_t offset,
                                         size_t len)
{
    for (int i = 0; i < qiov->niov; i++) {
        if (offset < qiov->iov[i].iov_len) {
            return offset + len <= qiov->iov[i].iov_len ?
                   (uint8_t *)qiov->iov[i].iov_base + offset : NULL;
        }
        offset -= qiov->iov[i].iov_len;
    }
    return NULL;
}

/*
 * Read @n clusters from @cl whose records follow each other in the image
 * (entries @ents) with one read below.
 */
static int coroutine_fn GRAPH_RDLOCK
softdev_compress_co_read_run(BlockDriverState *bs, SoftdevRequest *req,
                             uint64_t cl, const uint64_t *ents, unsigned n,
                             uint64_t span)
{
    SoftdevCompress *c = softdev_opaque(bs);
    uint8_t *buf = softdev_bounce_get(bs, span);
    uint64_t pos = 0;
    int ret;

    if (!buf) {
        return -ENOMEM;
    }
    ret = bdrv_co_pread(bs->file, slog_entry_offset(ents[0]), span, buf, 0);
    for (unsigned i = 0; ret == 0 && i < n; i++) {
        uint32_t skip, len;
        size_t qoff = softdev_compress_part(c, req, cl + i, &skip, &len);
        /* Straight into the caller's buffer where the whole cluster fits */
        uint8_t *dst = len == c->log.h.cluster_size ?
            softdev_compress_iov_ptr(req->qiov, qoff, len) : NULL;

        ret = softdev_compress_decode(bs, cl + i, ents[i], buf + pos,
                                      dst ?: c->cluster_buf);
        if (ret == 0 && !dst) {
            qemu_iovec_from_buf(req->qiov, qoff, c->cluster_buf + skip, len);
        }
        pos += slog_entry_size(ents[i]);
    }
    softdev_bounce_put(bs, buf, span);
    return ret;
}

static int coroutine_fn GRAPH_RDLOCK
softdev_compress_co_read(BlockDriverState *bs, SoftdevRequest *req)
{
    SoftdevCompress *c = softdev_opaque(bs);
    Slog *log = &c->log;
    uint32_t cs = log->h.cluster_size;
    uint64_t cl = req->offset / cs;
    uint64_t last = (req->offset + req->bytes - 1) / cs;
    uint64_t ents[SOFTDEV_COMPRESS_RUN];
    int ret = 0;

    slog_co_read_begin(log);
    while (ret == 0 && cl <= last) {
        uint64_t e = log->map[cl], span;
        uint32_t skip, len;
        unsigned n = 1;

        if (!e) {
            size_t qoff = softdev_compress_part(c, req, cl, &skip, &len);

            qemu_iovec_memset(req->qiov, qoff, 0, len);
            cl++;
            continue;
        }
        if (e == SLOG_ENTRY_BAD) {
            softdev_alert(bs, SOFTDEV_SEVERITY_CRITICAL, cl * cs, cs, NULL,
                          "cluster %" PRIu64 " has an invalid map entry",
                          cl);
            ret = -EIO;
            break;
        }
        /* Taken now: the map may change while the read below waits */
        ents[0] = e;
        span = slog_entry_size(e);
        while (n < SOFTDEV_COMPRESS_RUN && cl + n <= last) {
            uint64_t next = log->map[cl + n];

            if (!next || next == SLOG_ENTRY_BAD ||
                slog_entry_offset(next) != slog_entry_offset(e) + span ||
                span + slog_entry_size(next) > SLOG_BATCH_CAP) {
                break;
            }
            ents[n++] = next;
            span += slog_entry_size(next);
        }
        ret = softdev_compress_co_read_run(bs, req, cl, ents, n, span);
        cl += n;
    }
    slog_co_read_end(log);
    return ret;
}

/*
 * Append cluster @cl's data @src to @b: compressed if that saves a
 * sector, else raw.  Returns false if the batch is full.
 */
static bool softdev_compress_add(SoftdevCompress *c, SlogBatch *b,
                                 uint64_t cl, const uint8_t *src)
{
    uint32_t cs = c->log.h.cluster_size;
    uint8_t *p = slog_batch_reserve(&c->log, b, cs);
    SlogRecord rec = {
        .type = SLOG_REC_DATA, .cluster = cl, .count = 1,
        .encoding = SLOG_ENC_ZSTD,
    };
    size_t n;

    if (!p) {
        return false;
    }
    n = ZSTD_compressCCtx(c->cctx, p + SLOG_RECORD_HEADER, cs, src, cs,
                          c->level);
    if (ZSTD_isError(n) || slog_record_size(n) >= slog_record_size(cs)) {
        memcpy(p + SLOG_RECORD_HEADER, src, cs);
        rec.encoding = SLOG_ENC_RAW;
        n = cs;
    }
    rec.payload_len = n;
    slog_batch_add(&c->log, b, &rec);
    return true;
}

/* Append a record zeroing @count clusters from @cl; false if full */
static bool softdev_compress_add_zero(SoftdevCompress *c, SlogBatch *b,
                                      uint64_t cl, uint64_t count)
{
    SlogRecord rec = { .type = SLOG_REC_ZERO, .cluster = cl, .count = count };

    if (!slog_batch_reserve(&c->log, b, 0)) {
        return false;
    }
    slog_batch_add(&c->log, b, &rec);
    return true;
}

/*
 * Write clusters [@cl, @end) of @req (data, or zeroes without @req->qiov)
 * to the log, in batches.
 */
static int coroutine_fn GRAPH_RDLOCK
softdev_compress_co_log(BlockDriverState *bs, SoftdevRequest *req,
                        uint64_t cl, uint64_t end)
{
    SoftdevCompress *c = softdev_opaque(bs);
    uint32_t cs = c->log.h.cluster_size;
    SlogBatch b;
    int ret;

    ret = slog_co_write_begin(&c->log);
    if (ret < 0) {
        return ret;
    }
    while (ret == 0 && cl < end) {
        uint8_t *out = softdev_bounce_get(bs, SLOG_BATCH_CAP);

        if (!out) {
            ret = -ENOMEM;
            break;
        }
        /* From here to the submit nothing yields: the log is ours */
        slog_batch_begin(&c->log, &b, out, SLOG_BATCH_CAP);
        while (cl < end) {
            uint64_t zeroes = 0;
            const uint8_t *src = NULL;

            if (req->qiov) {
                size_t off = req->qiov_offset + (cl * cs - req->offset);

                while (cl + zeroes < end) {
                    src = softdev_compress_iov_ptr(req->qiov,
                                                   off + zeroes * cs, cs);
                    if (!src) {
                        qemu_iovec_to_buf(req->qiov, off + zeroes * cs,
                                          c->cluster_buf, cs);
                        src = c->cluster_buf;
                    }
                    if (!buffer_is_zero(src, cs)) {
                        break;
                    }
                    zeroes++;
                }
            } else {
                zeroes = MIN(end - cl, UINT32_MAX);
            }
            if (zeroes) {
                if (!softdev_compress_add_zero(c, &b, cl, zeroes)) {
                    break;
                }
                cl += zeroes;
                continue;
            }
            if (!softdev_compress_add(c, &b, cl, src)) {
                break;
            }
            cl++;
        }
        ret = slog_co_batch_submit(&c->log, &b);
        softdev_bounce_put(bs, out, SLOG_BATCH_CAP);
    }
    slog_co_write_end(&c->log);
    return ret;
}

static int coroutine_fn GRAPH_RDLOCK
softdev_compress_co_request(BlockDriverState *bs, SoftdevRequest *req,
                            SoftdevNextFn *next)
{
    SoftdevCompress *c = softdev_opaque(bs);
    uint32_t cs = c->log.h.cluster_size;
    uint64_t first, end;

    switch (req->op) {
    case SOFTDEV_OP_READ:
        return softdev_compress_co_read(bs, req);
    case SOFTDEV_OP_WRITE:
    case SOFTDEV_OP_WRITE_ZEROES:
        if (req->offset % cs || req->bytes % cs) {
            /* The block layer aligns them; zeroes fall back to writes */
            return req->op == SOFTDEV_OP_WRITE ? -EINVAL : -ENOTSUP;
        }
        return softdev_compress_co_log(bs, req, req->offset / cs,
                                       (req->offset + req->bytes) / cs);
    case SOFTDEV_OP_DISCARD:
        /* Only whole clusters; a discard is advisory */
        first = DIV_ROUND_UP(req->offset, cs);
        end = (req->offset + req->bytes) / cs;
        if (req->offset + req->bytes == c->log.h.virtual_size) {
            end = c->log.h.nb_clusters;
        }
        return first < end ?
            softdev_compress_co_log(bs, req, first, end) : 0;
    case SOFTDEV_OP_FLUSH:
        /* Acknowledged writes are in the log below, in order */
        return next(bs, req);
    default:
        g_assert_not_reached();
    }
}

static void softdev_compress_fill(SoftdevCompress *c, SoftdevCompressInfo *i)
{
    Slog *log = &c->log;
    uint64_t compressed = 0;

    for (uint64_t cl = 0; cl < log->h.nb_clusters; cl++) {
        uint64_t e = log->map[cl];

        if (e && e != SLOG_ENTRY_BAD &&
            slog_entry_size(e) < log->h.max_record) {
            compressed++;
        }
    }
    i->cluster_size = log->h.cluster_size;
    i->segment_size = log->h.segment_size;
    i->level = c->level;
    i->clean = log->slot.flags & SLOG_SLOT_CLEAN;
    i->logical_bytes = log->mapped * log->h.cluster_size;
    i->stored_bytes = log->live_bytes;
    i->compression_ratio = log->live_bytes ?
        (double)i->logical_bytes / log->live_bytes : 1;
    i->compressed_clusters = compressed;
    i->image_bytes = slog_file_end(log);
    i->free_bytes = slog_free_bytes(log);
    i->fragmentation = log->mapped ?
        100.0 * slog_fragmented(log) / log->mapped : 0;
    i->bad_clusters = log->bad;
    i->checkpoints = log->checkpoints;
    i->replayed_records = log->replayed;
}

static void softdev_compress_query(BlockDriverState *bs, SoftdevInfo *info)
{
    softdev_compress_fill(softdev_opaque(bs), &info->u.softdev_compress);
}

static ImageInfoSpecific *
softdev_compress_get_specific_info(BlockDriverState *bs, Error **errp)
{
    ImageInfoSpecific *spec = g_new0(ImageInfoSpecific, 1);

    spec->type = IMAGE_INFO_SPECIFIC_KIND_SOFTDEV_COMPRESS;
    spec->u.softdev_compress.data = g_new0(SoftdevCompressInfo, 1);
    softdev_compress_fill(softdev_opaque(bs), spec->u.softdev_compress.data);
    return spec;
}

static int coroutine_fn
softdev_compress_co_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    SoftdevCompress *c = softdev_opaque(bs);

    bdi->cluster_size = c->log.h.cluster_size;
    bdi->is_dirty = !(c->log.slot.flags & SLOG_SLOT_CLEAN);
    return 0;
}

static int softdev_compress_probe(const uint8_t *buf, int buf_size,
                                  const char *filename)
{
    return buf_size >= 8 && !memcmp(buf, SOFTDEV_COMPRESS_MAGIC, 8) ? 100 : 0;
}

static int coroutine_fn GRAPH_RDLOCK
softdev_compress_co_compact(BlockDriverState *bs, SoftdevCompactResult *res,
                            Error **errp)
{
    SoftdevCompress *c = softdev_opaque(bs);

    return slog_co_compact(&c->log, &res->moved_bytes, &res->reclaimed_bytes,
                           errp);
}

/* qemu-img check: every cluster's record must decode */
static int coroutine_fn GRAPH_RDLOCK
softdev_compress_co_check(BlockDriverState *bs, BdrvCheckResult *res,
                          BdrvCheckMode fix)
{
    SoftdevCompress *c = softdev_opaque(bs);
    Slog *log = &c->log;
    uint8_t *buf = qemu_try_blockalign(bs->file->bs, log->h.max_record);
    g_autoptr(GArray) corrupt = g_array_new(false, false, sizeof(uint64_t));
    int ret = 0;

    if (!buf) {
        return -ENOMEM;
    }
    slog_co_read_begin(log);
    for (uint64_t cl = 0; cl < log->h.nb_clusters; cl++) {
        uint64_t e = log->map[cl];

        if (!e) {
            continue;
        }
        res->bfi.allocated_clusters++;
        if (e != SLOG_ENTRY_BAD) {
            if (slog_entry_size(e) < log->h.max_record) {
                res->bfi.compressed_clusters++;
            }
            ret = slog_co_read_record(log, e, buf);
            if (ret < 0) {
                res->check_errors++;
                continue;
            }
            if (softdev_compress_decode(bs, cl, e, buf, c->cluster_buf) == 0) {
                continue;
            }
        }
        fprintf(stderr, "ERROR cluster %" PRIu64 ": %s\n", cl,
                e == SLOG_ENTRY_BAD ? "invalid map entry" :
                "record does not decode");
        g_array_append_val(corrupt, cl);
    }
    slog_co_read_end(log);
    qemu_vfree(buf);
    res->corruptions = corrupt->len;
    res->bfi.total_clusters = log->h.nb_clusters;
    res->bfi.fragmented_clusters = slog_fragmented(log);

    if ((fix & BDRV_FIX_ERRORS) && corrupt->len) {
        /* What is lost is lost: such a cluster reads as zeroes now. */
        for (guint i = 0; i < corrupt->len; i++) {
            uint64_t cl = g_array_index(corrupt, uint64_t, i);
            SoftdevRequest req = { .op = SOFTDEV_OP_WRITE_ZEROES };

            if (softdev_compress_co_log(bs, &req, cl, cl + 1) == 0) {
                res->corruptions--;
                res->corruptions_fixed++;
            }
        }
    }
    if (fix && log->state == SLOG_STATE_WRITABLE) {
        uint64_t moved, reclaimed;
        Error *err = NULL;

        if (slog_co_compact(log, &moved, &reclaimed, &err) < 0) {
            error_report_err(err);
            res->check_errors++;
        }
    }
    res->image_end_offset = slog_file_end(log);
    return 0;
}

static QemuOptsList softdev_compress_create_opts = {
    .name = "compress-create-opts",
    .head = QTAILQ_HEAD_INITIALIZER(softdev_compress_create_opts.head),
    .desc = {
        {
            .name = BLOCK_OPT_SIZE,
            .type = QEMU_OPT_SIZE,
            .help = "Virtual disk size (rounded up to whole clusters)",
        },
        {
            .name = "cluster-size",
            .type = QEMU_OPT_SIZE,
            .help = "compression unit: 4k to 1M, a power of two "
                    "(default 64k)",
        },
        {
            .name = "level",
            .type = QEMU_OPT_NUMBER,
            .help = "default zstd level, -7 to 22 (default 1)",
        },
        {
            .name = "segment-size",
            .type = QEMU_OPT_SIZE,
            .help = "log segment: 1M to 16M, a power of two (default 4M)",
        },
        { /* end of list */ }
    },
};

static int coroutine_fn
softdev_compress_co_create(BlockBackend *blk, QemuOpts *opts, Error **errp)
{
    uint64_t cs = qemu_opt_get_size(opts, "cluster-size", 64 * KiB);
    /* Whole clusters: the block layer's alignment for writes */
    uint64_t size = cs && cs <= UINT32_MAX ?
        ROUND_UP(qemu_opt_get_size(opts, BLOCK_OPT_SIZE, 0), cs) : 0;
    uint64_t seg = qemu_opt_get_size(opts, "segment-size",
                                     SLOG_DEFAULT_SEGMENT);
    int64_t level = qemu_opt_get_number(opts, "level", 1);
    SlogHeader h;
    const char *why;

    if (!softdev_compress_level_ok(level, errp)) {
        return -EINVAL;
    }
    if (cs > UINT32_MAX || seg > UINT32_MAX ||
        slog_header_init(&h, SOFTDEV_COMPRESS_MAGIC, size, cs, seg, level,
                         &why) < 0) {
        error_setg(errp, "softdev-compress: %s",
                   cs > UINT32_MAX || seg > UINT32_MAX ?
                   "cluster or segment size too large" : why);
        return -EINVAL;
    }
    return slog_co_format(blk, &h, errp);
}

static QemuOptsList softdev_compress_amend_opts = {
    .name = "compress-amend-opts",
    .head = QTAILQ_HEAD_INITIALIZER(softdev_compress_amend_opts.head),
    .desc = {
        {
            .name = "level",
            .type = QEMU_OPT_NUMBER,
            .help = "default zstd level of the image, -7 to 22",
        },
        {
            .name = "compact",
            .type = QEMU_OPT_BOOL,
            .help = "reclaim the space of dead data (default off)",
        },
        { /* end of list */ }
    },
};

static int coroutine_fn GRAPH_RDLOCK
softdev_compress_co_amend(BlockDriverState *bs, QemuOpts *opts, bool force,
                          Error **errp)
{
    SoftdevCompress *c = softdev_opaque(bs);
    uint64_t moved, reclaimed;
    int ret;

    if (qemu_opt_find(opts, "level")) {
        int64_t level = qemu_opt_get_number(opts, "level", 1);

        if (!softdev_compress_level_ok(level, errp)) {
            return -EINVAL;
        }
        c->log.h.level = level;
        c->level = level;
        ret = slog_co_write_header(&c->log);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Could not write the header");
            return ret;
        }
    }
    if (qemu_opt_get_bool(opts, "compact", false)) {
        return slog_co_compact(&c->log, &moved, &reclaimed, errp);
    }
    return 0;
}

static SoftdevDriver softdev_compress = {
    .name                   = "softdev-compress",
    .content_preserving     = false,
    .state_size             = sizeof(SoftdevCompress),
    .opts                   = &softdev_compress_opts,
    .open                   = softdev_compress_open,
    .close                  = softdev_compress_close,
    .refresh_limits         = softdev_compress_refresh_limits,
    .getlength              = softdev_compress_getlength,
    .query                  = softdev_compress_query,
    .co_request             = softdev_compress_co_request,
    .zeroes                 = SOFTDEV_ZEROES_SEEN,
    .discard                = SOFTDEV_DISCARD_SEEN,
    .owns_layout            = true,
    .probe                  = softdev_compress_probe,
    .create_opts            = &softdev_compress_create_opts,
    .co_create              = softdev_compress_co_create,
    .co_check               = softdev_compress_co_check,
    .amend_opts             = &softdev_compress_amend_opts,
    .co_amend               = softdev_compress_co_amend,
    .co_get_info            = softdev_compress_co_get_info,
    .get_specific_info      = softdev_compress_get_specific_info,
    .co_compact             = softdev_compress_co_compact,
};

static void softdev_compress_init(void)
{
    softdev_register(&softdev_compress);
}

block_init(softdev_compress_init);
