/*
 * softdev-cas: a content-addressable disk (docs/specs/softdev-cas.rst).
 * Each guest chunk is stored once under its SHA-256 in a chunk store on
 * the node below: a write of a chunk the store already holds only adds a
 * reference to it.  The store is softdev's log engine (slog.c) with
 * shared records: the block map says which record each chunk of the disk
 * is, an index finds a record by hash and counts the chunks that refer to
 * it, and a chunk nothing refers to any more is garbage that compaction
 * (softdev-compact, qemu-img check -r, qemu-img amend -o compact=on)
 * collects.  Crash consistent as softdev-compress.  verify=on checks
 * every chunk read against its hash.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/module.h"
#include "qemu/option.h"
#include "crypto/hash.h"
#include "system/block-backend.h"
#include "softdev/softdev.h"
#include "slog.h"
#include "cas-index.h"

/* QAPI schema of the options (scripts/softdev-drivers.py adds it)
 *
 * ##
 * # @SoftdevCasOptions:
 * #
 * # Options of the softdev-cas soft device, whose child holds a
 * # content-addressed chunk store (create one with "qemu-img create -f
 * # softdev-cas").
 * #
 * # @verify: check every chunk read against its SHA-256; a mismatch
 * #     fails the read with EIO and raises a SOFTDEV_ALERT (default:
 * #     false; the record checksum is always checked)
 * #
 * # Since: 10.0 (softdev)
 * ##
 * { 'struct': 'SoftdevCasOptions',
 *   'data': { '*verify': 'bool' } }
 */

#define SOFTDEV_CAS_MAGIC       "SDCAS\0\0"   /* and a NUL: 8 bytes */
#define SOFTDEV_CAS_MIN_CHUNK   (4 * KiB)
#define SOFTDEV_CAS_MAX_CHUNK   (64 * KiB)

QEMU_BUILD_BUG_ON(CAS_HASH_SIZE != SLOG_HASH_SIZE);

typedef struct SoftdevCas {
    Slog log;
    bool verify;
    CasIndex index;             /* the stored chunks, by hash and place */
    uint64_t live_chunks;       /* chunks with references */
    uint64_t dedup_hits;        /* chunk writes the store already had */
    uint64_t verify_failures;
} SoftdevCas;

static QemuOptsList softdev_cas_opts = {
    .name = "cas-opts",
    .head = QTAILQ_HEAD_INITIALIZER(softdev_cas_opts.head),
    .desc = {
        {
            .name = "verify",
            .type = QEMU_OPT_BOOL,
            .help = "check every chunk read against its SHA-256 "
                    "(default off)",
        },
        { /* end of list */ }
    },
};

static int cas_sha256(const uint8_t *data, size_t len, uint8_t *out)
{
    struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
    size_t out_len = SLOG_HASH_SIZE;

    return qcrypto_hash_bytesv(QCRYPTO_HASH_ALGO_SHA256, &iov, 1, &out,
                               &out_len, NULL) < 0 ? -EIO : 0;
}

/*
 * A new chunk record at @e holding @hash.  Only a corrupt map refers to
 * where the log writes a new record (past its head): the chunks that did
 * now get the new record.
 */
static void cas_chunk_new(SoftdevCas *c, uint64_t e, const uint8_t *hash)
{
    cas_index_set_hash(&c->index, cas_index_get(&c->index, e), hash);
}

/* SlogOps: the index keeps the references */
static uint64_t cas_ref(Slog *s, uint64_t e, int delta, const uint8_t *extra)
{
    SoftdevCas *c = container_of(s, SoftdevCas, log);
    CasChunk *ch = cas_index_by_entry(&c->index, e);

    if (!ch) {
        assert(delta > 0);
        ch = cas_index_get(&c->index, e);
    }
    if (ch->state != CAS_CHUNK_HASHED && extra) {
        cas_index_set_hash(&c->index, ch, extra);
    }
    if (delta > 0 && ch->refs++ == 0) {
        c->live_chunks++;
    } else if (delta < 0 && --ch->refs == 0) {
        c->live_chunks--;
    }
    return ch->refs;
}

static void cas_get_extra(Slog *s, uint64_t e, uint8_t *extra)
{
    SoftdevCas *c = container_of(s, SoftdevCas, log);
    CasChunk *ch = cas_index_by_entry(&c->index, e);

    if (ch && ch->state == CAS_CHUNK_HASHED) {
        memcpy(extra, ch->hash, SLOG_HASH_SIZE);
    } else {
        memset(extra, 0, SLOG_HASH_SIZE);
    }
}

/* The segments of chunks without references may be reused now */
static void cas_checkpointed(Slog *s)
{
    SoftdevCas *c = container_of(s, SoftdevCas, log);

    cas_index_drop_unreferenced(&c->index);
}

static const SlogOps cas_slog_ops;

static void softdev_cas_free(SoftdevCas *c)
{
    bdrv_graph_rdlock_main_loop();
    slog_close(&c->log);
    bdrv_graph_rdunlock_main_loop();
    cas_index_destroy(&c->index);
}

static int softdev_cas_open(BlockDriverState *bs, QemuOpts *opts,
                            QDict *options, Error **errp)
{
    SoftdevCas *c = softdev_opaque(bs);
    int ret;

    if (!qcrypto_hash_supports(QCRYPTO_HASH_ALGO_SHA256)) {
        error_setg(errp, "softdev-cas: this QEMU has no SHA-256");
        return -ENOTSUP;
    }
    c->verify = qemu_opt_get_bool(opts, "verify", false);
    cas_index_init(&c->index);
    bdrv_graph_rdlock_main_loop();
    ret = slog_open(&c->log, bs, bs->file, SOFTDEV_CAS_MAGIC, &cas_slog_ops,
                    !bdrv_is_read_only(bs), errp);
    bdrv_graph_rdunlock_main_loop();
    if (ret < 0) {
        cas_index_destroy(&c->index);
        return ret;
    }
    /* FUA becomes a flush after the write (the log's order matters) */
    bs->supported_write_flags = 0;
    bs->supported_zero_flags = BDRV_REQ_MAY_UNMAP;
    return 0;
}

static void softdev_cas_close(BlockDriverState *bs)
{
    softdev_cas_free(softdev_opaque(bs));
}

/*
 * SlogOps: chunk @cl's record @rec_buf (entry @e) into @out.  Its
 * checksum always; with verify=on, or for qemu-img check, its data against
 * its hash and the index's.
 */
static int softdev_cas_decode(BlockDriverState *bs, uint64_t cl, uint64_t e,
                              const uint8_t *rec_buf, uint8_t *out,
                              bool check)
{
    SoftdevCas *c = softdev_opaque(bs);
    uint32_t cs = c->log.h.cluster_size;
    const uint8_t *payload = rec_buf + SLOG_RECORD_HEADER;
    uint8_t hash[SLOG_HASH_SIZE];
    const char *why;
    SlogRecord rec;
    CasChunk *ch;

    if (slog_record_decode(rec_buf, slog_entry_size(e), &c->log.h, &rec,
                           &why) < 0) {
        goto bad;
    }
    why = "not a chunk record";
    if (rec.type != SLOG_REC_DATA || rec.size != slog_entry_size(e)) {
        goto bad;
    }
    if (c->verify || check) {
        ch = cas_index_by_entry(&c->index, e);
        why = "its data does not match its SHA-256";
        if (cas_sha256(payload + SLOG_HASH_SIZE, cs, hash) < 0 ||
            memcmp(hash, payload, SLOG_HASH_SIZE) || !ch ||
            ch->state != CAS_CHUNK_HASHED ||
            memcmp(hash, ch->hash, SLOG_HASH_SIZE)) {
            c->verify_failures += !check;
            goto bad;
        }
    }
    memcpy(out, payload + SLOG_HASH_SIZE, cs);
    return 0;

bad:
    softdev_alert(bs, SOFTDEV_SEVERITY_CRITICAL, cl * cs, cs, NULL,
                  "chunk %" PRIu64 " is corrupt: %s", cl, why);
    return -EIO;
}

/* What a chunk of a write is to the store */
typedef enum CasKind {
    CAS_ZERO,                   /* reads as zeroes: a ZERO record */
    CAS_HIT,                    /* the store has it: a REF pair */
    CAS_NEW,                    /* a DATA record */
} CasKind;

/*
 * A write's chunks in flight to the log: runs of zero chunks and of hits
 * are gathered into one ZERO or REF record each.
 */
typedef struct CasWrite {
    SoftdevCas *c;
    SlogBatch b;
    CasKind run_kind;
    uint64_t run_first;         /* cluster of the run's first chunk */
    uint32_t run_len;
    uint64_t *run_ents;         /* CAS_HIT: the entries they refer to */
    uint32_t max_pairs;
} CasWrite;

/* Append the pending run as one record; false if the batch is full */
static bool cas_flush_run(CasWrite *w)
{
    Slog *log = &w->c->log;
    SlogRecord rec = { .cluster = w->run_first, .count = w->run_len };
    uint8_t *p;

    if (!w->run_len) {
        return true;
    }
    if (w->run_kind == CAS_ZERO) {
        rec.type = SLOG_REC_ZERO;
    } else {
        rec.type = SLOG_REC_REF;
        rec.payload_len = w->run_len * SLOG_REF_PAIR;
    }
    p = slog_batch_reserve(log, &w->b, rec.payload_len);
    if (!p) {
        return false;
    }
    for (uint32_t i = 0; rec.type == SLOG_REC_REF && i < w->run_len; i++) {
        slog_ref_set(p + SLOG_RECORD_HEADER, i, w->run_first + i,
                     w->run_ents[i]);
    }
    slog_batch_add(log, &w->b, &rec);
    w->run_len = 0;
    return true;
}

/*
 * Chunk @cl is @kind (@ents: the entry of a hit): extend the run, or
 * start one.  False if the batch is full (submit, then call again).
 */
static bool cas_run_add(CasWrite *w, uint64_t cl, CasKind kind, uint64_t ent)
{
    if (w->run_len && (w->run_kind != kind ||
                       (kind == CAS_HIT && w->run_len == w->max_pairs) ||
                       w->run_len == UINT32_MAX)) {
        if (!cas_flush_run(w)) {
            return false;
        }
    }
    if (!w->run_len) {
        w->run_kind = kind;
        w->run_first = cl;
    }
    if (kind == CAS_HIT) {
        w->run_ents[w->run_len] = ent;
    }
    w->run_len++;
    return true;
}

/* Append chunk @cl's new data @src, under @hash; false if full */
static bool cas_add_new(CasWrite *w, uint64_t cl, const uint8_t *src,
                        const uint8_t *hash)
{
    SoftdevCas *c = w->c;
    uint32_t cs = c->log.h.cluster_size;
    SlogRecord rec = {
        .type = SLOG_REC_DATA, .cluster = cl, .count = 1,
        .encoding = SLOG_ENC_RAW, .payload_len = c->log.h.max_payload,
    };
    uint8_t *p;

    if (!cas_flush_run(w)) {
        return false;
    }
    p = slog_batch_reserve(&c->log, &w->b, rec.payload_len);
    if (!p) {
        return false;
    }
    memcpy(p + SLOG_RECORD_HEADER, hash, SLOG_HASH_SIZE);
    memcpy(p + SLOG_RECORD_HEADER + SLOG_HASH_SIZE, src, cs);
    /* In the index now: a write of the same data meanwhile refers to it */
    cas_chunk_new(c, slog_batch_add(&c->log, &w->b, &rec), hash);
    return true;
}

/*
 * Write chunks [@cl, @end) of @req (data, or zeroes without @req->qiov)
 * to the log, in batches.
 */
static int coroutine_fn GRAPH_RDLOCK
softdev_cas_co_log(BlockDriverState *bs, SoftdevRequest *req, uint64_t cl,
                   uint64_t end)
{
    SoftdevCas *c = softdev_opaque(bs);
    uint32_t cs = c->log.h.cluster_size;
    CasWrite w = {
        .c = c,
        .max_pairs = c->log.h.max_payload / SLOG_REF_PAIR,
    };
    uint8_t hash[SLOG_HASH_SIZE];
    int ret;

    w.run_ents = g_new(uint64_t, w.max_pairs);
    ret = slog_co_write_begin(&c->log);
    if (ret < 0) {
        g_free(w.run_ents);
        return ret;
    }
    while (ret == 0 && (cl < end || w.run_len)) {
        uint8_t *out = softdev_bounce_get(bs, SLOG_BATCH_CAP);
        bool full = false;

        if (!out) {
            ret = -ENOMEM;
            break;
        }
        /* From here to the submit nothing yields: the log is ours */
        slog_batch_begin(&c->log, &w.b, out, SLOG_BATCH_CAP);
        while (!full && cl < end) {
            /* A chunk that did not fit is looked at again after the yield */
            const uint8_t *src = NULL;
            CasChunk *hit = NULL;
            CasKind kind = CAS_ZERO;

            if (req->qiov) {
                src = slog_request_cluster(&c->log, req, cl);
                if (!buffer_is_zero(src, cs)) {
                    if (cas_sha256(src, cs, hash) < 0) {
                        ret = -EIO;
                        break;
                    }
                    hit = cas_index_by_hash(&c->index, hash);
                    kind = hit ? CAS_HIT : CAS_NEW;
                }
            }
            if (kind == CAS_NEW) {
                full = !cas_add_new(&w, cl, src, hash);
            } else {
                full = !cas_run_add(&w, cl, kind, hit ? hit->entry : 0);
                c->dedup_hits += kind == CAS_HIT && !full;
            }
            if (!full) {
                cl++;
            }
        }
        if (ret == 0) {
            if (!full) {
                cas_flush_run(&w);  /* if it does not fit: in the next */
            }
            ret = slog_co_batch_submit(&c->log, &w.b);
        } else {
            slog_co_batch_submit(&c->log, &w.b);
        }
        softdev_bounce_put(bs, out, SLOG_BATCH_CAP);
    }
    slog_co_write_end(&c->log);
    g_free(w.run_ents);
    return ret;
}

static const SlogOps cas_slog_ops = {
    .unit = "chunk",
    .decode = softdev_cas_decode,
    .co_log = softdev_cas_co_log,
    .ref = cas_ref,
    .get_extra = cas_get_extra,
    .checkpointed = cas_checkpointed,
};

static void softdev_cas_fill(SoftdevCas *c, SoftdevCasInfo *i)
{
    Slog *log = &c->log;
    uint32_t cs = log->h.cluster_size;

    i->chunk_size = cs;
    i->segment_size = log->h.segment_size;
    i->verify = c->verify;
    i->clean = log->slot.flags & SLOG_SLOT_CLEAN;
    i->logical_bytes = log->mapped * cs;
    i->unique_chunks = c->live_chunks;
    i->stored_bytes = log->live_bytes;
    i->dedup_ratio = c->live_chunks ?
        (double)log->mapped / c->live_chunks : 1;
    i->index_entries = c->index.count;
    i->index_bytes = cas_index_bytes(&c->index) + log->h.map_entries_size;
    i->image_bytes = slog_file_end(log);
    i->free_bytes = slog_free_bytes(log);
    i->dedup_hits = c->dedup_hits;
    i->bad_chunks = log->bad;
    i->verify_failures = c->verify_failures;
    i->checkpoints = log->checkpoints;
    i->replayed_records = log->replayed;
}

static void softdev_cas_query(BlockDriverState *bs, SoftdevInfo *info)
{
    softdev_cas_fill(softdev_opaque(bs), &info->u.softdev_cas);
}

static ImageInfoSpecific *
softdev_cas_get_specific_info(BlockDriverState *bs, Error **errp)
{
    ImageInfoSpecific *spec = g_new0(ImageInfoSpecific, 1);

    spec->type = IMAGE_INFO_SPECIFIC_KIND_SOFTDEV_CAS;
    spec->u.softdev_cas.data = g_new0(SoftdevCasInfo, 1);
    softdev_cas_fill(softdev_opaque(bs), spec->u.softdev_cas.data);
    return spec;
}

static int softdev_cas_probe(const uint8_t *buf, int buf_size,
                             const char *filename)
{
    return buf_size >= 8 && !memcmp(buf, SOFTDEV_CAS_MAGIC, 8) ? 100 : 0;
}

static QemuOptsList softdev_cas_create_opts = {
    .name = "cas-create-opts",
    .head = QTAILQ_HEAD_INITIALIZER(softdev_cas_create_opts.head),
    .desc = {
        {
            .name = BLOCK_OPT_SIZE,
            .type = QEMU_OPT_SIZE,
            .help = "Virtual disk size (rounded up to whole chunks)",
        },
        {
            .name = "chunk-size",
            .type = QEMU_OPT_SIZE,
            .help = "deduplication unit: 4k to 64k, a power of two "
                    "(default 64k)",
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
softdev_cas_co_create(BlockBackend *blk, QemuOpts *opts, Error **errp)
{
    uint64_t cs = qemu_opt_get_size(opts, "chunk-size", 64 * KiB);
    uint64_t seg = qemu_opt_get_size(opts, "segment-size",
                                     SLOG_DEFAULT_SEGMENT);
    uint64_t size;
    SlogHeader h;
    const char *why;

    if (cs < SOFTDEV_CAS_MIN_CHUNK || cs > SOFTDEV_CAS_MAX_CHUNK ||
        !is_power_of_2(cs)) {
        error_setg(errp, "softdev-cas: chunk-size must be a power of two "
                   "from 4k to 64k, not %" PRIu64, cs);
        return -EINVAL;
    }
    /* Whole chunks: the block layer's alignment for writes */
    size = ROUND_UP(qemu_opt_get_size(opts, BLOCK_OPT_SIZE, 0), cs);
    if (seg > UINT32_MAX ||
        slog_header_init_cas(&h, SOFTDEV_CAS_MAGIC, size, cs, seg,
                             &why) < 0) {
        error_setg(errp, "softdev-cas: %s",
                   seg > UINT32_MAX ? "segment size too large" : why);
        return -EINVAL;
    }
    return slog_co_format(blk, &h, errp);
}

static QemuOptsList softdev_cas_amend_opts = {
    .name = "cas-amend-opts",
    .head = QTAILQ_HEAD_INITIALIZER(softdev_cas_amend_opts.head),
    .desc = {
        {
            .name = "compact",
            .type = QEMU_OPT_BOOL,
            .help = "collect unreferenced chunks and reclaim their space "
                    "(default off)",
        },
        { /* end of list */ }
    },
};

static int coroutine_fn GRAPH_RDLOCK
softdev_cas_co_amend(BlockDriverState *bs, QemuOpts *opts, bool force,
                     Error **errp)
{
    SoftdevCas *c = softdev_opaque(bs);
    uint64_t moved, reclaimed;

    if (qemu_opt_get_bool(opts, "compact", false)) {
        return slog_co_compact(&c->log, &moved, &reclaimed, errp);
    }
    return 0;
}

static SoftdevDriver softdev_cas = {
    .name                   = "softdev-cas",
    .content_preserving     = false,
    .state_size             = sizeof(SoftdevCas),
    .opts                   = &softdev_cas_opts,
    .open                   = softdev_cas_open,
    .close                  = softdev_cas_close,
    .refresh_limits         = slog_dev_refresh_limits,
    .getlength              = slog_dev_getlength,
    .query                  = softdev_cas_query,
    .co_request             = slog_dev_co_request,
    .zeroes                 = SOFTDEV_ZEROES_SEEN,
    .discard                = SOFTDEV_DISCARD_SEEN,
    .owns_layout            = true,
    .probe                  = softdev_cas_probe,
    .create_opts            = &softdev_cas_create_opts,
    .co_create              = softdev_cas_co_create,
    .co_check               = slog_dev_co_check,
    .amend_opts             = &softdev_cas_amend_opts,
    .co_amend               = softdev_cas_co_amend,
    .co_get_info            = slog_dev_co_get_info,
    .get_specific_info      = softdev_cas_get_specific_info,
    .co_compact             = slog_dev_co_compact,
};

static void softdev_cas_init(void)
{
    softdev_register(&softdev_cas);
}

block_init(softdev_cas_init);
