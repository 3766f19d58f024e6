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
    void *opaque;               /* the soft device's, from co_pre to co_post */
} SoftdevRequest;

/* Return values of SoftdevDriver.co_pre besides -errno */
enum {
    SOFTDEV_CONTINUE = 0,       /* go on and forward the request */
    SOFTDEV_DONE = 1,           /* the soft device completed it itself */
};

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
     * Before a request: return SOFTDEV_CONTINUE to have it forwarded to
     * the child, SOFTDEV_DONE if the soft device completed it, or -errno
     * to fail it.  May change @req (offset, data) before forwarding.
     */
    int coroutine_fn GRAPH_RDLOCK_PTR (*co_pre)(BlockDriverState *bs,
                                                SoftdevRequest *req);

    /*
     * After a request, with its result: return the result the guest
     * sees.  Called for every request, including failed ones.
     */
    int coroutine_fn GRAPH_RDLOCK_PTR (*co_post)(BlockDriverState *bs,
                                                 SoftdevRequest *req,
                                                 int ret,
                                                 int64_t latency_ns);

    /* Fill the driver-specific part of a query-softdevs entry. */
    void (*query)(BlockDriverState *bs, SoftdevInfo *info);

    /* Private to the core: the BlockDriver made from this description. */
    BlockDriver bdrv;
};

/* Register a soft device; call from a block_init() function. */
void softdev_register(SoftdevDriver *sd);

/* The soft device behind @bs, or NULL if @bs is not a soft device. */
SoftdevDriver *softdev_driver(BlockDriverState *bs);

/* The soft device registered as @name, or NULL. */
SoftdevDriver *softdev_find_driver(const char *name);

/* Whether this node keeps its child's content (see content_preserving) */
bool softdev_is_content_preserving(BlockDriverState *bs);

/* The soft device's own state (SoftdevDriver.state_size bytes). */
void *softdev_opaque(BlockDriverState *bs);

/* Forward @req unchanged to the child (the default action). */
int coroutine_fn GRAPH_RDLOCK
softdev_co_forward(BlockDriverState *bs, SoftdevRequest *req);

/*
 * Emit a SOFTDEV_ALERT event for @bs.  @offset and @length are left out
 * of the event when negative, @path when NULL.
 */
void G_GNUC_PRINTF(6, 7)
softdev_alert(BlockDriverState *bs, SoftdevSeverity severity,
              int64_t offset, int64_t length, const char *path,
              const char *fmt, ...);

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
