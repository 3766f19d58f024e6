/*
 * softdev block core: what a soft device implements and what the core
 * gives it.  A soft device is a block driver whose requests pass through
 * the core (block/softdev/core.c), which counts them, measures their
 * latency, calls the soft device's hooks and forwards to the child.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SOFTDEV_SOFTDEV_H
#define SOFTDEV_SOFTDEV_H

#include "block/block-io.h"
#include "block/block_int.h"
#include "qemu/units.h"
#include "qapi/qapi-types-softdev.h"

/* One request as a soft device sees it. */
typedef struct SoftdevRequest {
    SoftdevOp op;
    int64_t offset;             /* unused for flush */
    int64_t bytes;              /* unused for flush */
    QEMUIOVector *qiov;         /* read and write only */
    size_t qiov_offset;
    BdrvRequestFlags flags;
    int64_t start_ns;           /* QEMU_CLOCK_REALTIME, set by the core */
} SoftdevRequest;

/*
 * Return values of SoftdevDriver.co_pre besides -errno.  They are the
 * same names and numbers as libsoftdev's callback results, so a device
 * moves between in-process and a soft-device process unchanged.
 */
enum {
    SOFTDEV_DONE = 0,           /* the soft device completed it itself */
    SOFTDEV_FORWARD = 1,        /* go on and forward the request */
};

/*
 * The layer below, as the core hands it to SoftdevDriver.co_request:
 * runs @req (the soft device's own, with its offsets and buffers) on the
 * node below and returns 0 or -errno.  Without a node below it completes
 * FLUSH and fails the other requests with -ENOTSUP.
 */
typedef int coroutine_fn GRAPH_RDLOCK_PTR
SoftdevNextFn(BlockDriverState *bs, SoftdevRequest *req);

/*
 * What a soft device's hooks see of WRITE_ZEROES (SoftdevDriver.zeroes).
 * The default is the safe one: a soft device written with only WRITE in
 * mind still sees every change of data, as an nbdkit plugin without
 * .zero does.
 */
typedef enum SoftdevZeroes {
    /*
     * The hooks never see WRITE_ZEROES: the block layer writes zeroed
     * buffers instead, which reach them as WRITEs (a caller that asked
     * for no fallback gets -ENOTSUP and writes the zeroes itself).
     */
    SOFTDEV_ZEROES_AS_WRITE = 0,
    /* The hooks get WRITE_ZEROES and handle them. */
    SOFTDEV_ZEROES_SEEN,
} SoftdevZeroes;

/* What a soft device's hooks see of DISCARD (SoftdevDriver.discard) */
typedef enum SoftdevDiscard {
    /*
     * The default: a discard completes at once without effect (a discard
     * is advisory), so it cannot change data behind the soft device.
     */
    SOFTDEV_DISCARD_DROP = 0,
    /* Discards go to the node below unseen: they may pass. */
    SOFTDEV_DISCARD_PASS,
    /* The hooks get DISCARD and handle them. */
    SOFTDEV_DISCARD_SEEN,
} SoftdevDiscard;

typedef struct SoftdevDriver SoftdevDriver;

struct SoftdevDriver {
    /* "softdev-<noun>", also the BlockdevDriver name */
    const char *name;

    /*
     * True if the soft device keeps its child's content unchanged, so
     * that softdev-insert may put it above a node holding data.  Only
     * such a soft device is a filter.
     */
    bool content_preserving;

    /*
     * If set, the name of a bool option in @opts with which a node
     * overrides @content_preserving (softdev-tap asks its user).  Such a
     * node passes its users' permissions through like a filter does.
     */
    const char *content_preserving_opt;

    /* Size of the soft device's state, see softdev_opaque() */
    size_t state_size;

    /*
     * The node below ("file") may be left out: the soft device is then a
     * new device of its own.  softdev_co_forward() without a node below
     * completes FLUSH and fails the other requests with -ENOTSUP.
     */
    bool lower_optional;

    /* Driver options; the core absorbs them from the node's options. */
    QemuOptsList *opts;

    /* Options that change what the guest sees (for json: filenames) */
    const char *const *strong_runtime_opts;

    /* What the hooks see of WRITE_ZEROES and DISCARD (the defaults: none) */
    SoftdevZeroes zeroes;
    SoftdevDiscard discard;

    /*
     * Called after the child is open; undo everything on failure.
     * @options holds what @opts did not absorb (nested options such as
     * "server.path"); take what you use out of it.
     */
    int (*open)(BlockDriverState *bs, QemuOpts *opts, QDict *options,
                Error **errp);
    void (*close)(BlockDriverState *bs);

    /* Adjust bs->bl after the core inherited the child's limits. */
    void (*refresh_limits)(BlockDriverState *bs, Error **errp);

    /* The node's size, if not the node below's; required without one. */
    int64_t (*getlength)(BlockDriverState *bs);

    /* The node moves to another AioContext (as BlockDriver's hooks). */
    void (*detach_aio_context)(BlockDriverState *bs);
    void (*attach_aio_context)(BlockDriverState *bs, AioContext *ctx);

    /*
     * A soft device handles requests in one of two shapes; the core
     * counts, times, traces and alerts for both.  The hooks see
     * WRITE_ZEROES and DISCARD only as @zeroes and @discard say.
     *
     * Watching (co_pre and/or co_post): co_pre runs before a request and
     * returns SOFTDEV_FORWARD to have the core forward it to the node
     * below, SOFTDEV_DONE if the soft device completed it, or -errno to
     * fail it; co_post sees every request's result (including failed
     * ones) and returns the result the guest gets.
     *
     * Around (co_request): the soft device runs the whole request and
     * calls @next, the layer below, as often as it likes with requests of
     * its own (other offsets, its own buffers: a transform, a log, a
     * process that answers later).  Returns 0 or -errno.  A soft device
     * with co_request has no co_pre and no co_post.
     */
    int coroutine_fn GRAPH_RDLOCK_PTR (*co_pre)(BlockDriverState *bs,
                                                SoftdevRequest *req);
    int coroutine_fn GRAPH_RDLOCK_PTR (*co_post)(BlockDriverState *bs,
                                                 SoftdevRequest *req,
                                                 int ret,
                                                 int64_t latency_ns);
    int coroutine_fn GRAPH_RDLOCK_PTR (*co_request)(BlockDriverState *bs,
                                                    SoftdevRequest *req,
                                                    SoftdevNextFn *next);

    /*
     * blockdev-reopen.  Options in @mutable_opts may change; the others
     * must stay as they are (the block layer says "Cannot change the
     * option 'x'").  reopen_prepare gets the new values of the mutable
     * options (an option left out has its default), checks them and
     * returns in *@state what reopen_commit needs to apply them, without
     * changing anything yet; reopen_abort drops @state.  Requests are
     * drained meanwhile.  Without reopen_prepare, a node reopens (e.g.
     * read-only, another node below) with its options unchanged.
     */
    const char *const *mutable_opts;
    int (*reopen_prepare)(BlockDriverState *bs, QemuOpts *opts,
                          void **state, Error **errp);
    void (*reopen_commit)(BlockDriverState *bs, void *state);
    void (*reopen_abort)(BlockDriverState *bs, void *state);

    /* Fill the driver-specific part of a query-softdevs entry. */
    void (*query)(BlockDriverState *bs, SoftdevInfo *info);

    /*
     * softdev-remove asks before it takes a content-preserving node out:
     * true, with @errp set, if it may not go now (others depend on it).
     */
    bool (*busy)(BlockDriverState *bs, Error **errp);

    /*
     * True while the node holds writes its child does not have yet (a
     * write cache): it then keeps write permission on the node below
     * when its users let theirs go, so that it can still write them
     * back (at a flush, at close).
     */
    bool (*holds_writes)(BlockDriverState *bs);

    /*
     * A soft device that owns its child's layout: an image format of its
     * own (softdev-compress), which the block layer treats as a format
     * driver and qemu-img creates, checks, amends and describes
     * (block/softdev/format.c).  Opens from an image with "-f NAME".
     */
    bool owns_layout;
    /* Recognise an image by its first bytes (a score, as bdrv_probe) */
    int (*probe)(const uint8_t *buf, int buf_size, const char *filename);
    /*
     * qemu-img create: the core creates the file with the protocol's
     * options of @create_opts and calls co_create with it open read-write
     * and empty, to write a fresh image.
     */
    QemuOptsList *create_opts;
    int coroutine_fn (*co_create)(BlockBackend *blk, QemuOpts *opts,
                                  Error **errp);
    /* qemu-img check [-r], as BlockDriver.bdrv_co_check (any soft device) */
    int coroutine_fn GRAPH_RDLOCK_PTR (*co_check)(BlockDriverState *bs,
                                                  BdrvCheckResult *res,
                                                  BdrvCheckMode fix);
    /* qemu-img amend -o ... (in a coroutine) */
    QemuOptsList *amend_opts;
    int coroutine_fn GRAPH_RDLOCK_PTR (*co_amend)(BlockDriverState *bs,
                                                  QemuOpts *opts, bool force,
                                                  Error **errp);
    /* qemu-img info: the cluster size, and the format specific part */
    int coroutine_fn GRAPH_RDLOCK_PTR (*co_get_info)(BlockDriverState *bs,
                                                     BlockDriverInfo *bdi);
    ImageInfoSpecific *GRAPH_RDLOCK_PTR (*get_specific_info)(
        BlockDriverState *bs, Error **errp);
    /* softdev-compact: reclaim the space of dead data, online */
    int coroutine_fn GRAPH_RDLOCK_PTR (*co_compact)(BlockDriverState *bs,
                                                    SoftdevCompactResult *res,
                                                    Error **errp);

    /* Private to the core: the BlockDriver made from this description. */
    BlockDriver bdrv;
};

/* Register a soft device; call from a block_init() function. */
void softdev_register(SoftdevDriver *sd);

/*
 * A content-preserving node passes its users' permissions to the node
 * below, so it may write there only as they do.  A soft device that writes
 * below on its own (softdev-timetravel's revert) holds write permission
 * there meanwhile: @hold true takes it (an error if another user of the
 * node below does not share writes), false gives it back.  Main loop,
 * graph read-locked; 0 or -errno.
 */
int GRAPH_RDLOCK softdev_hold_write_below(BlockDriverState *bs, bool hold,
                                          Error **errp);

/* The soft device behind @bs, or NULL if @bs is not a soft device. */
SoftdevDriver *softdev_driver(BlockDriverState *bs);

/* The soft device registered as @name, or NULL. */
SoftdevDriver *softdev_find_driver(const char *name);

/* Whether this node keeps its child's content (see content_preserving) */
bool softdev_is_content_preserving(BlockDriverState *bs);

/* The soft device's own state (SoftdevDriver.state_size bytes). */
void *softdev_opaque(BlockDriverState *bs);

/*
 * Run @req on the node below (what SOFTDEV_FORWARD does, and the @next of
 * co_request); see SoftdevNextFn.
 */
int coroutine_fn GRAPH_RDLOCK
softdev_co_forward(BlockDriverState *bs, SoftdevRequest *req);

/*
 * A bounce buffer of at least @size bytes, page-aligned, or NULL if
 * memory is short; give it back with softdev_bounce_put() and the same
 * @size.  Buffers up to 1 MiB are kept for reuse by the node, so a
 * request does not map and fault in a fresh buffer.  Any thread.
 */
void *softdev_bounce_get(BlockDriverState *bs, size_t size);
void softdev_bounce_put(BlockDriverState *bs, void *buf, size_t size);

/*
 * What a transforming soft device stores for bytes [@done, @done + @len)
 * of @req (a WRITE, or a WRITE_ZEROES without data): fill @buf with them.
 * Returns 0 or -errno.
 */
typedef int SoftdevFillFn(BlockDriverState *bs, SoftdevRequest *req,
                          int64_t done, uint8_t *buf, size_t len);

/*
 * Write @req below as the bytes @fill makes of it, through one bounce
 * buffer of at most @chunk bytes (a multiple of the device's sector),
 * chunk by chunk as WRITEs at @req's offsets; the caller's buffer is
 * left alone.  For co_request; returns 0 or -errno.
 */
int coroutine_fn GRAPH_RDLOCK
softdev_co_write_bounced(BlockDriverState *bs, SoftdevRequest *req,
                         SoftdevNextFn *next, size_t chunk,
                         SoftdevFillFn *fill);

/*
 * Emit a SOFTDEV_ALERT event for @bs.  @offset and @length are left out
 * of the event when negative, @path when NULL.  Callable from any thread:
 * outside the main loop the event is queued and sent from it, in order.
 */
void G_GNUC_PRINTF(6, 7)
softdev_alert(BlockDriverState *bs, SoftdevSeverity severity,
              int64_t offset, int64_t length, const char *path,
              const char *fmt, ...);

/*
 * The program has QMP (block/softdev/qmp.c is linked in and says so):
 * alerts are SOFTDEV_ALERT events only.  Without, those of severity
 * warning and critical are also printed on stderr.
 */
void softdev_set_qmp(void);

/* @options as a QDict, the way blockdev-add sees them */
QDict *softdev_options_qdict(BlockdevOptions *options);

/*
 * Putting a soft device above a node in use, as softdev-insert and the
 * Xen disks do (block/softdev/layer.c).  softdev_layer_check(): the
 * driver must be a soft device with a free node-name, and with
 * @need_preserving keep its child's content (it goes above data others
 * wrote).  softdev_layer_inherit(): the users of @below must not notice
 * it, so it is read-only if @below is (or @read_only), and passes
 * discards if @below unmaps.
 */
bool softdev_layer_check(BlockdevOptions *options, bool need_preserving,
                         Error **errp);
void softdev_layer_inherit(BlockdevOptions *options, BlockDriverState *below,
                           bool read_only);

/* Fill the BlockDriver of a soft device that owns its layout (format.c) */
void softdev_format_init(SoftdevDriver *sd, BlockDriver *drv);

/* Fill a query-softdevs entry for @bs (the core's part and the driver's). */
SoftdevInfo *softdev_query_node(BlockDriverState *bs);

/*
 * What a subsystem knows of soft-device nodes (e.g. the Xen disk they
 * serve), added to their query-softdevs entries.  One hook; the graph is
 * read-locked when it runs.
 */
typedef void SoftdevQueryHook(BlockDriverState *bs, SoftdevInfo *info);
void softdev_set_query_hook(SoftdevQueryHook *hook);

#endif /* SOFTDEV_SOFTDEV_H */
