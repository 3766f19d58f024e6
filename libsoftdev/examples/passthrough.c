/*
 * The smallest soft device: every request is forwarded unchanged to the
 * node below.  Usage: passthrough --unix PATH
 *
 * Leaving out every callback would do the same, but then no device code
 * would run at all; this one has read and write callbacks that decide to
 * forward, so that it measures what a real device costs per request (the
 * benchmarks compare it with QEMU's in-process filters).  Its write
 * callback does not look at the data, and says so (SOFTDEV_NO_WRITE_DATA):
 * QEMU then does not copy what the guest writes into shared memory; it
 * leaves the node below alone (SOFTDEV_EARLY_READ): QEMU then starts each
 * read below while the read callback decides; and it forwards every
 * write as it is (SOFTDEV_EARLY_WRITE): QEMU then starts each write below
 * while the write callback decides.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "softdev.h"

static int passthrough_read(void *h, struct softdev_req *r, void *buf,
                            uint32_t len, uint64_t off)
{
    (void)h;
    (void)r;
    (void)buf;
    (void)len;
    (void)off;
    return SOFTDEV_FORWARD;
}

static int passthrough_write(void *h, struct softdev_req *r, const void *buf,
                             uint32_t len, uint64_t off, uint32_t flags)
{
    (void)h;
    (void)r;
    (void)buf;
    (void)len;
    (void)off;
    (void)flags;
    return SOFTDEV_FORWARD;
}

/*
 * With a write callback, write-zeroes and discards would otherwise reach
 * it as writes of zeroes and be dropped (softdev.h): pass them on too.
 */
static int passthrough_discard(void *h, struct softdev_req *r, uint32_t len,
                               uint64_t off)
{
    (void)h;
    (void)r;
    (void)len;
    (void)off;
    return SOFTDEV_FORWARD;
}

static int passthrough_write_zeroes(void *h, struct softdev_req *r,
                                    uint32_t len, uint64_t off,
                                    uint32_t flags)
{
    (void)h;
    (void)r;
    (void)len;
    (void)off;
    (void)flags;
    return SOFTDEV_FORWARD;
}

static const struct softdev_device passthrough = {
    .api_version = SOFTDEV_API_VERSION,
    .name = "passthrough",
    .read = passthrough_read,
    .write = passthrough_write,
    .discard = passthrough_discard,
    .write_zeroes = passthrough_write_zeroes,
    /*
     * It never looks at the data, never changes the node below, and
     * forwards writes unchanged
     */
    .flags = SOFTDEV_NO_WRITE_DATA | SOFTDEV_EARLY_READ | SOFTDEV_EARLY_WRITE,
};

/* For softdev-run passthrough.so */
SOFTDEV_DEVICE(passthrough)

int main(int argc, char **argv)
{
    return softdev_main(&passthrough, argc, argv);
}
