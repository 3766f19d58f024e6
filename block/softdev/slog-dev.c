/*
 * What the soft devices on softdev's log engine (softdev-compress,
 * softdev-cas) share: their request routing, reads of runs of records,
 * qemu-img check and its repair, and the callbacks that only need the
 * engine.  A device's state begins with its Slog, whose @ops say how the
 * device decodes a record and logs a write (slog.h).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/iov.h"
#include "qemu/memalign.h"
#include "softdev/softdev.h"
#include "slog.h"

#define SLOG_READ_RUN           64      /* clusters read at once */

static Slog *slog_of(BlockDriverState *bs)
{
    return softdev_opaque(bs);
}

void slog_dev_refresh_limits(BlockDriverState *bs, Error **errp)
{
    uint32_t cs = slog_of(bs)->h.cluster_size;

    /* The block layer reads, merges and writes partial clusters for us */
    bs->bl.request_alignment = cs;
    bs->bl.pdiscard_alignment = cs;
    bs->bl.pwrite_zeroes_alignment = cs;
    bs->bl.max_transfer = QEMU_ALIGN_DOWN(BDRV_REQUEST_MAX_BYTES, cs);
}

int64_t slog_dev_getlength(BlockDriverState *bs)
{
    return slog_of(bs)->h.virtual_size;
}

int coroutine_fn slog_dev_co_get_info(BlockDriverState *bs,
                                      BlockDriverInfo *bdi)
{
    Slog *s = slog_of(bs);

    bdi->cluster_size = s->h.cluster_size;
    bdi->is_dirty = !(s->slot.flags & SLOG_SLOT_CLEAN);
    return 0;
}

int coroutine_fn GRAPH_RDLOCK
slog_dev_co_compact(BlockDriverState *bs, SoftdevCompactResult *res,
                    Error **errp)
{
    return slog_co_compact(slog_of(bs), &res->moved_bytes,
                           &res->reclaimed_bytes, errp);
}

const uint8_t *slog_request_cluster(Slog *s, SoftdevRequest *req,
                                    uint64_t cl)
{
    uint32_t cs = s->h.cluster_size;
    size_t off = req->qiov_offset + (cl * cs - req->offset);
    const uint8_t *src = slog_iov_ptr(req->qiov, off, cs);

    if (!src) {
        qemu_iovec_to_buf(req->qiov, off, s->cluster_buf, cs);
        src = s->cluster_buf;
    }
    return src;
}

/*
 * Read @n clusters from @cl whose records follow each other in the image
 * (entries @ents) with one read below.
 */
static int coroutine_fn GRAPH_RDLOCK
slog_co_read_run(BlockDriverState *bs, SoftdevRequest *req, uint64_t cl,
                 const uint64_t *ents, unsigned n, uint64_t span)
{
    Slog *s = slog_of(bs);
    uint8_t *buf = softdev_bounce_get(bs, span);
    uint64_t pos = 0;
    int ret;

    if (!buf) {
        return -ENOMEM;
    }
    ret = bdrv_co_pread(s->file, slog_entry_offset(ents[0]), span, buf, 0);
    for (unsigned i = 0; ret == 0 && i < n; i++) {
        uint32_t skip, len;
        size_t qoff = slog_request_part(s, req, cl + i, &skip, &len);
        /* Straight into the caller's buffer where the whole cluster fits */
        uint8_t *dst = len == s->h.cluster_size ?
            slog_iov_ptr(req->qiov, qoff, len) : NULL;

        ret = s->ops->decode(bs, cl + i, ents[i], buf + pos,
                             dst ?: s->cluster_buf, false);
        if (ret == 0 && !dst) {
            qemu_iovec_from_buf(req->qiov, qoff, s->cluster_buf + skip, len);
        }
        pos += slog_entry_size(ents[i]);
    }
    softdev_bounce_put(bs, buf, span);
    return ret;
}

static int coroutine_fn GRAPH_RDLOCK
slog_co_read(BlockDriverState *bs, SoftdevRequest *req)
{
    Slog *s = slog_of(bs);
    uint32_t cs = s->h.cluster_size;
    uint64_t cl = req->offset / cs;
    uint64_t last = (req->offset + req->bytes - 1) / cs;
    uint64_t ents[SLOG_READ_RUN];
    int ret = 0;

    slog_co_read_begin(s);
    while (ret == 0 && cl <= last) {
        uint64_t e = s->map[cl], span;
        uint32_t skip, len;
        unsigned n = 1;

        if (!e) {
            size_t qoff = slog_request_part(s, req, cl, &skip, &len);

            qemu_iovec_memset(req->qiov, qoff, 0, len);
            cl++;
            continue;
        }
        if (e == SLOG_ENTRY_BAD) {
            softdev_alert(bs, SOFTDEV_SEVERITY_CRITICAL, cl * cs, cs, NULL,
                          "%s %" PRIu64 " has an invalid map entry",
                          s->ops->unit, cl);
            ret = -EIO;
            break;
        }
        /* Taken now: the map may change while the read below waits */
        ents[0] = e;
        span = slog_entry_size(e);
        while (n < SLOG_READ_RUN && cl + n <= last) {
            uint64_t next = s->map[cl + n];

            if (!slog_entry_valid(next) ||
                slog_entry_offset(next) != slog_entry_offset(e) + span ||
                span + slog_entry_size(next) > SLOG_BATCH_CAP) {
                break;
            }
            ents[n++] = next;
            span += slog_entry_size(next);
        }
        ret = slog_co_read_run(bs, req, cl, ents, n, span);
        cl += n;
    }
    slog_co_read_end(s);
    return ret;
}

int coroutine_fn GRAPH_RDLOCK
slog_dev_co_request(BlockDriverState *bs, SoftdevRequest *req,
                    SoftdevNextFn *next)
{
    Slog *s = slog_of(bs);
    uint32_t cs = s->h.cluster_size;
    uint64_t first, end;

    switch (req->op) {
    case SOFTDEV_OP_READ:
        return slog_co_read(bs, req);
    case SOFTDEV_OP_WRITE:
    case SOFTDEV_OP_WRITE_ZEROES:
        if (req->offset % cs || req->bytes % cs) {
            /* The block layer aligns them; zeroes fall back to writes */
            return req->op == SOFTDEV_OP_WRITE ? -EINVAL : -ENOTSUP;
        }
        return s->ops->co_log(bs, req, req->offset / cs,
                              (req->offset + req->bytes) / cs);
    case SOFTDEV_OP_DISCARD:
        /* Only whole clusters; a discard is advisory */
        first = DIV_ROUND_UP(req->offset, cs);
        end = (req->offset + req->bytes) / cs;
        if (req->offset + req->bytes == s->h.virtual_size) {
            end = s->h.nb_clusters;
        }
        return first < end ? s->ops->co_log(bs, req, first, end) : 0;
    case SOFTDEV_OP_FLUSH:
        /* Acknowledged writes are in the log below, in order */
        return next(bs, req);
    default:
        g_assert_not_reached();
    }
}

/*
 * qemu-img check: every cluster's record must decode (and pass the
 * device's own checks); a record several clusters share is read once.
 * Repair: a corrupt cluster reads as zeroes, then compaction.
 */
int coroutine_fn GRAPH_RDLOCK
slog_dev_co_check(BlockDriverState *bs, BdrvCheckResult *res,
                  BdrvCheckMode fix)
{
    Slog *s = slog_of(bs);
    uint8_t *buf = qemu_try_blockalign(bs->file->bs, s->h.max_record);
    g_autoptr(GArray) corrupt = g_array_new(false, false, sizeof(uint64_t));
    g_autoptr(GHashTable) seen = g_hash_table_new(g_int64_hash,
                                                  g_int64_equal);
    int ret = 0;

    if (!buf) {
        return -ENOMEM;
    }
    slog_co_read_begin(s);
    for (uint64_t cl = 0; cl < s->h.nb_clusters; cl++) {
        uint64_t *e = &s->map[cl];
        gpointer ok;

        if (!*e) {
            continue;
        }
        res->bfi.allocated_clusters++;
        if (*e != SLOG_ENTRY_BAD) {
            if (slog_entry_size(*e) < s->h.max_record) {
                res->bfi.compressed_clusters++;
            }
            if (!g_hash_table_lookup_extended(seen, e, NULL, &ok)) {
                ret = slog_co_read_record(s, *e, buf);
                if (ret < 0) {
                    res->check_errors++;
                    continue;
                }
                ok = GINT_TO_POINTER(s->ops->decode(bs, cl, *e, buf,
                                                    s->cluster_buf,
                                                    true) == 0);
                /* The map does not change while the lock is held */
                g_hash_table_insert(seen, e, ok);
            }
            if (ok) {
                continue;
            }
        }
        fprintf(stderr, "ERROR %s %" PRIu64 ": %s\n", s->ops->unit, cl,
                *e == SLOG_ENTRY_BAD ? "invalid map entry" :
                "record does not decode");
        g_array_append_val(corrupt, cl);
    }
    slog_co_read_end(s);
    qemu_vfree(buf);
    res->corruptions = corrupt->len;
    res->bfi.total_clusters = s->h.nb_clusters;
    res->bfi.fragmented_clusters = slog_fragmented(s);

    if ((fix & BDRV_FIX_ERRORS) && corrupt->len) {
        /* What is lost is lost: such a cluster reads as zeroes now. */
        for (guint i = 0; i < corrupt->len; i++) {
            uint64_t cl = g_array_index(corrupt, uint64_t, i);
            SoftdevRequest req = { .op = SOFTDEV_OP_WRITE_ZEROES };

            if (s->ops->co_log(bs, &req, cl, cl + 1) == 0) {
                res->corruptions--;
                res->corruptions_fixed++;
            }
        }
    }
    if (fix && s->state == SLOG_STATE_WRITABLE) {
        uint64_t moved, reclaimed;
        Error *err = NULL;

        /* softdev-cas: this collects its unreferenced chunks */
        if (slog_co_compact(s, &moved, &reclaimed, &err) < 0) {
            error_report_err(err);
            res->check_errors++;
        }
    }
    res->image_end_offset = slog_file_end(s);
    return 0;
}
