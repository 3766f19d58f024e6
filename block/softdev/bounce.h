/*
 * softdev block core: the bounce buffers each soft-device node keeps for
 * reuse (block/softdev/bounce.c), behind softdev_bounce_get() and
 * softdev_bounce_put() of include/softdev/softdev.h.  Private to the core.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SOFTDEV_BOUNCE_H
#define SOFTDEV_BOUNCE_H

#include "qemu/thread.h"

#define SOFTDEV_BOUNCE_CLASSES  2       /* 64 KiB, 1 MiB */
#define SOFTDEV_BOUNCE_KEEP_MAX 64

typedef struct SoftdevBouncePool {
    QemuMutex lock;             /* any thread */
    struct {
        void *free[SOFTDEV_BOUNCE_KEEP_MAX];
        unsigned n;
    } class[SOFTDEV_BOUNCE_CLASSES];
} SoftdevBouncePool;

void softdev_bounce_pool_init(SoftdevBouncePool *p);
/* Frees the buffers kept; none may be out */
void softdev_bounce_pool_destroy(SoftdevBouncePool *p);
void *softdev_bounce_pool_get(SoftdevBouncePool *p, size_t size);
void softdev_bounce_pool_put(SoftdevBouncePool *p, void *buf, size_t size);

#endif /* SOFTDEV_BOUNCE_H */
