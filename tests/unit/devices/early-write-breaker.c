/*
 * A test device for SOFTDEV_EARLY_WRITE: it declares that it forwards
 * every write unchanged or fails it, then keeps that promise or breaks it
 * depending on where the write goes (by 4 KiB block):
 *   block 0: forwards it (kept)
 *   block 1: completes it itself (broken)
 *   block 2: forwards it elsewhere (broken)
 *   block 3: forwards it with other data (broken)
 *   block 4: fails it with -ENOSPC (kept)
 * libsoftdev must fail the broken ones with -EIO rather than send a reply
 * that the client could not honour.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <stddef.h>

#include "softdev.h"

static int breaker_write(void *h, struct softdev_req *r, const void *buf,
                         uint32_t len, uint64_t off, uint32_t flags)
{
    static const char other[4096];

    (void)h;
    (void)buf;
    (void)flags;
    switch (off / 4096) {
    case 1:
        return SOFTDEV_DONE;
    case 2:
        return softdev_forward_to(r, off + 65536, NULL);
    case 3:
        return len <= sizeof(other) ? softdev_forward_to(r, off, other) :
                                      -EINVAL;
    case 4:
        return -ENOSPC;
    default:
        return SOFTDEV_FORWARD;
    }
}

static const struct softdev_device breaker = {
    .api_version = SOFTDEV_API_VERSION,
    .name = "early-write-breaker",
    .write = breaker_write,
    .flags = SOFTDEV_NO_WRITE_DATA | SOFTDEV_EARLY_WRITE,
};

int main(int argc, char **argv)
{
    return softdev_main(&breaker, argc, argv);
}
