/*
 * softdev-timetravel's journal: appending records in batches, and the
 * header (tt-replay.c opens it).
 * docs/specs/softdev-timetravel.rst describes the format.
 *
 * Appending: a record gets its log position and sequence number at once,
 * in order; small records are copied into the open batch, which is
 * written when no other batch is being written (so records that arrive
 * meanwhile share one write), large ones are written from the request's
 * buffer.  written_pos is the end of the prefix of the log that is in the
 * journal: a change reaches the disk only once its records are in that
 * prefix, so the journal always knows of every change the disk may hold.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/iov.h"
#include "qemu/memalign.h"
#include "timetravel.h"

#define TT_BATCH_CAP            (1 * MiB)
/* Records up to this size are copied into batches */
#define TT_BATCH_RECORD_MAX     (64 * KiB + TT_REC_HEADER)

static void tt_write_done(SoftdevTimetravel *s, TtWrite *w, int ret)
{
    TtWrite *it;

    w->state = TT_WRITE_DONE;
    w->ret = ret;
    if (ret < 0 && s->state == TT_STATE_WRITABLE) {
        s->state = TT_STATE_FAILED;
        softdev_alert(s->bs, SOFTDEV_SEVERITY_CRITICAL, -1, -1, NULL,
                      "journal write failed (%s): history stops, writes "
                      "fail", strerror(-ret));
    }
    while ((it = QTAILQ_FIRST(&s->writes)) && it->state == TT_WRITE_DONE) {
        QTAILQ_REMOVE(&s->writes, it, next);
        s->written_pos = it->covers;
        qemu_vfree(it->buf);
        g_free(it->hdr);
        if (it->qiov.nalloc) {
            qemu_iovec_destroy(&it->qiov);
        }
        g_free(it);
    }
    if (QTAILQ_EMPTY(&s->writes)) {
        s->written_pos = s->idx.next_pos;
    }
    qemu_co_queue_restart_all(&s->progress);
}

static void coroutine_fn GRAPH_RDLOCK
tt_co_write_batch(SoftdevTimetravel *s, TtWrite *b)
{
    int ret;

    if (s->batch == b) {
        s->batch = NULL;
    }
    b->state = TT_WRITE_WRITING;
    s->batches_writing++;
    ret = bdrv_co_pwrite(s->journal, tt_phys(s, b->start), b->end - b->start,
                         b->buf, 0);
    s->batches_writing--;
    tt_write_done(s, b, ret);
}

int coroutine_fn GRAPH_RDLOCK tt_co_wait_written(SoftdevTimetravel *s,
                                                 uint64_t end)
{
    while (s->written_pos < end && s->state != TT_STATE_FAILED) {
        TtWrite *w;

        /* A batch before @end that nobody writes: write it */
        QTAILQ_FOREACH(w, &s->writes, next) {
            if (w->start >= end) {
                w = NULL;
                break;
            }
            if (w->state == TT_WRITE_OPEN &&
                (w != s->batch || !s->batches_writing)) {
                break;
            }
        }
        if (w) {
            tt_co_write_batch(s, w);
        } else {
            qemu_co_queue_wait(&s->progress, NULL);
        }
    }
    return s->state == TT_STATE_FAILED ? -EIO : 0;
}

uint64_t tt_room_for(SoftdevTimetravel *s, uint64_t data_len)
{
    /* the record, and a pad before it at worst (smaller than the record) */
    return 2 * (TT_REC_HEADER + ROUND_UP(data_len, TT_SECTOR));
}

static uint32_t tt_qiov_crc(QEMUIOVector *qiov, size_t offset, size_t len)
{
    uint32_t crc = 0;

    for (int i = 0; i < qiov->niov && len; i++) {
        size_t n;

        if (offset >= qiov->iov[i].iov_len) {
            offset -= qiov->iov[i].iov_len;
            continue;
        }
        n = MIN(len, qiov->iov[i].iov_len - offset);
        crc = tt_crc32c(crc, (uint8_t *)qiov->iov[i].iov_base + offset, n);
        offset = 0;
        len -= n;
    }
    return crc;
}

/* Give @r its place in the log; a pad first if the ring ends before */
static void tt_place(SoftdevTimetravel *s, TtRecord *r);

static void tt_batch_add(SoftdevTimetravel *s, TtRecord *r,
                         QEMUIOVector *qiov, size_t qiov_offset)
{
    uint64_t size = tt_record_size(r);
    TtWrite *b = s->batch;
    uint8_t *p;

    if (r->type == TT_REC_PAD) {
        size = TT_REC_HEADER;   /* only its header is written */
    }
    if (!b || b->end != r->pos || b->end - b->start + size > b->cap) {
        b = g_new0(TtWrite, 1);
        b->state = TT_WRITE_OPEN;
        b->start = b->end = b->covers = r->pos;
        b->cap = TT_BATCH_CAP;
        b->buf = qemu_memalign(4096, b->cap);
        QTAILQ_INSERT_TAIL(&s->writes, b, next);
        s->batch = b;
    }
    p = b->buf + (r->pos - b->start);
    tt_record_encode(r, p);
    if (r->data_len) {
        qemu_iovec_to_buf(qiov, qiov_offset, p + TT_REC_HEADER, r->data_len);
        memset(p + TT_REC_HEADER + r->data_len, 0,
               size - TT_REC_HEADER - r->data_len);
    }
    b->end += size;
    b->covers = r->pos + tt_record_size(r);
    if (r->type == TT_REC_PAD) {
        /* The ring ends: what follows goes in another write */
        s->batch = NULL;
    }
}

static void tt_place(SoftdevTimetravel *s, TtRecord *r)
{
    uint64_t size = tt_record_size(r);
    uint64_t room = s->h.ring_size - s->idx.next_pos % s->h.ring_size;
    uint64_t now;

    if (r->type != TT_REC_PAD && size > room) {
        TtRecord pad = { .type = TT_REC_PAD, .length = room };

        tt_place(s, &pad);
        tt_batch_add(s, &pad, NULL, 0);
    }
    now = MAX(tt_now(), s->idx.last_time);   /* after the pad's */
    r->seq = s->idx.next_seq++;
    r->pos = s->idx.next_pos;
    r->time = now;
    s->idx.last_time = now;
    s->idx.next_pos += tt_record_size(r);
    s->dirty = true;
}

uint64_t coroutine_fn GRAPH_RDLOCK
tt_co_append(SoftdevTimetravel *s, TtRecord *r, QEMUIOVector *qiov,
             size_t qiov_offset)
{
    uint64_t size = tt_record_size(r);
    TtWrite *w;
    int ret;

    assert(s->state != TT_STATE_READ_ONLY);
    if (r->data_len && (r->type == TT_REC_BASE ||
                        (r->type == TT_REC_DATA &&
                         size <= TT_BATCH_RECORD_MAX))) {
        r->flags |= TT_FLAG_CRC;
        r->data_crc = tt_qiov_crc(qiov, qiov_offset, r->data_len);
    }
    tt_place(s, r);
    if (r->type == TT_REC_MARK) {
        char name[TT_MAX_NAME + 1];

        qemu_iovec_to_buf(qiov, qiov_offset, name, r->data_len);
        name[r->data_len] = 0;
        tt_index_record(&s->idx, r, name, &(const char *){ NULL });
    } else {
        tt_index_record(&s->idx, r, NULL, &(const char *){ NULL });
    }
    s->logged_bytes += r->data_len;
    if (size <= TT_BATCH_RECORD_MAX) {
        tt_batch_add(s, r, qiov, qiov_offset);
        return r->pos + size;
    }

    /* Large: from the caller's buffer, now; the open batch goes before */
    s->batch = NULL;
    w = g_new0(TtWrite, 1);
    w->state = TT_WRITE_WRITING;
    w->start = r->pos;
    w->end = w->covers = r->pos + size;
    w->hdr = g_malloc(TT_REC_HEADER);
    tt_record_encode(r, w->hdr);
    qemu_iovec_init(&w->qiov, qiov->niov + 2);
    qemu_iovec_add(&w->qiov, w->hdr, TT_REC_HEADER);
    qemu_iovec_concat(&w->qiov, qiov, qiov_offset, r->data_len);
    assert(r->data_len % TT_SECTOR == 0);
    QTAILQ_INSERT_TAIL(&s->writes, w, next);
    ret = bdrv_co_pwritev(s->journal, tt_phys(s, w->start), size, &w->qiov,
                          0);
    tt_write_done(s, w, ret);
    return r->pos + size;
}

int coroutine_fn GRAPH_RDLOCK tt_co_sync(SoftdevTimetravel *s)
{
    int ret = tt_co_wait_written(s, s->idx.next_pos);

    if (ret < 0) {
        return ret;
    }
    return bdrv_co_flush(s->journal->bs);
}

int coroutine_fn GRAPH_RDLOCK
tt_co_read_payload(SoftdevTimetravel *s, uint64_t pos, uint64_t len,
                   QEMUIOVector *qiov, size_t qiov_offset)
{
    return bdrv_co_preadv_part(s->journal, tt_phys(s, pos), len, qiov,
                               qiov_offset, 0);
}

int coroutine_mixed_fn GRAPH_RDLOCK tt_write_header(SoftdevTimetravel *s)
{
    g_autofree uint8_t *buf = g_malloc0(TT_HEADER_SIZE);
    int ret;

    s->h.generation++;
    tt_header_encode(&s->h, buf);
    ret = bdrv_pwrite(s->journal, TT_HEADER_OFFSET(s->h.generation % 2),
                      TT_HEADER_SIZE, buf, 0);
    if (ret >= 0) {
        ret = bdrv_flush(s->journal->bs);
    }
    return ret < 0 ? ret : 0;
}
