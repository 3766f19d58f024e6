/*
 * The device a newcomer writes first: it refuses writes to the first MiB
 * and has no other callback.  Write-zeroes must reach its write callback
 * (as data of zeroes) and discards must not reach the node below, so
 * that neither bypasses it; with the argument "discard=pass" it sets
 * SOFTDEV_DISCARD_PASSES and discards are forwarded unchanged.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <string.h>

#include "softdev.h"

static struct softdev_device blocker;

static void *blocker_open(int argc, char **argv)
{
    int i;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "discard=pass")) {
            blocker.flags |= SOFTDEV_DISCARD_PASSES;
        } else {
            softdev_error("unknown argument '%s'", argv[i]);
            return NULL;
        }
    }
    return &blocker;
}

static int blocker_write(void *h, struct softdev_req *r, const void *buf,
                         uint32_t len, uint64_t off, uint32_t flags)
{
    (void)h;
    (void)r;
    (void)buf;
    (void)len;
    (void)flags;
    return off < (1u << 20) ? -EPERM : SOFTDEV_FORWARD;
}

static struct softdev_device blocker = {
    .api_version = SOFTDEV_API_VERSION,
    .name = "write-blocker",
    .open = blocker_open,
    .write = blocker_write,
};

int main(int argc, char **argv)
{
    return softdev_main(&blocker, argc, argv);
}
