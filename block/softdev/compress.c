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

typedef struct SoftdevCompress {
    Slog log;
    int level;
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
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

static const SlogOps softdev_compress_slog_ops;

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
                    &softdev_compress_slog_ops, !bdrv_is_read_only(bs), errp);
    bdrv_graph_rdunlock_main_loop();
    if (ret < 0) {
        return ret;
    }
    if (!level_set) {
        c->level = c->log.h.level;
    }
    c->cctx = ZSTD_createCCtx();
    c->dctx = ZSTD_createDCtx();
    if (!c->cctx || !c->dctx) {
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
}

/* SlogOps: cluster @cl's record @rec_buf (entry @e) into @out */
static int softdev_compress_decode(BlockDriverState *bs, uint64_t cl,
                                   uint64_t e, const uint8_t *rec_buf,
                                   uint8_t *out, bool check)
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
                while (cl + zeroes < end) {
                    src = slog_request_cluster(&c->log, req, cl + zeroes);
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

static const SlogOps softdev_compress_slog_ops = {
    .unit = "cluster",
    .decode = softdev_compress_decode,
    .co_log = softdev_compress_co_log,
};

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

static int softdev_compress_probe(const uint8_t *buf, int buf_size,
                                  const char *filename)
{
    return buf_size >= 8 && !memcmp(buf, SOFTDEV_COMPRESS_MAGIC, 8) ? 100 : 0;
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
    .refresh_limits         = slog_dev_refresh_limits,
    .getlength              = slog_dev_getlength,
    .query                  = softdev_compress_query,
    .co_request             = slog_dev_co_request,
    .zeroes                 = SOFTDEV_ZEROES_SEEN,
    .discard                = SOFTDEV_DISCARD_SEEN,
    .owns_layout            = true,
    .probe                  = softdev_compress_probe,
    .create_opts            = &softdev_compress_create_opts,
    .co_create              = softdev_compress_co_create,
    .co_check               = slog_dev_co_check,
    .amend_opts             = &softdev_compress_amend_opts,
    .co_amend               = softdev_compress_co_amend,
    .co_get_info            = slog_dev_co_get_info,
    .get_specific_info      = softdev_compress_get_specific_info,
    .co_compact             = slog_dev_co_compact,
};

static void softdev_compress_init(void)
{
    softdev_register(&softdev_compress);
}

block_init(softdev_compress_init);
