/*
 * A new device with no node below: the data lives in memory and is lost
 * when the process ends.
 * Usage: ramdisk --unix PATH [size=]SIZE [threads=serialize|parallel]
 * (SIZE in bytes, or with a K, M or G suffix; default 64M; requests run in
 * parallel by default, or one at a time with threads=serialize).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "softdev.h"

static struct softdev_device ramdisk;

static void *ramdisk_open(int argc, char **argv)
{
    const char *arg = "64M";
    unsigned long long size;
    char *end;
    int i;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "threads=serialize")) {
            ramdisk.thread_model = SOFTDEV_THREAD_SERIALIZE;
        } else if (!strcmp(argv[i], "threads=parallel")) {
            ramdisk.thread_model = SOFTDEV_THREAD_PARALLEL;
        } else if (i == 1 || !strncmp(argv[i], "size=", 5)) {
            arg = argv[i];
        } else {
            goto usage;
        }
    }
    if (!strncmp(arg, "size=", 5)) {
        arg += 5;
    }
    size = strtoull(arg, &end, 0);
    switch (*end) {
    case 'G': case 'g':
        size <<= 10;
        /* fall through */
    case 'M': case 'm':
        size <<= 10;
        /* fall through */
    case 'K': case 'k':
        size <<= 10;
        end++;
        break;
    }
    if (*end || !size) {
        goto usage;
    }
    ramdisk.size = size;        /* read by the library at each handshake */
    return calloc(1, size);

usage:
    softdev_error("usage: %s --unix PATH [size=]SIZE "
                  "[threads=serialize|parallel]", argv[0]);
    return NULL;
}

static void ramdisk_close(void *h)
{
    free(h);
}

static int ramdisk_read(void *h, struct softdev_req *r, void *buf,
                        uint32_t len, uint64_t off)
{
    (void)r;
    memcpy(buf, (char *)h + off, len);
    return SOFTDEV_DONE;
}

static int ramdisk_write(void *h, struct softdev_req *r, const void *buf,
                         uint32_t len, uint64_t off, uint32_t flags)
{
    (void)r;
    (void)flags;                /* nothing is more durable than RAM here */
    memcpy((char *)h + off, buf, len);
    return SOFTDEV_DONE;
}

static int ramdisk_flush(void *h, struct softdev_req *r)
{
    (void)h;
    (void)r;
    return SOFTDEV_DONE;
}

static int ramdisk_discard(void *h, struct softdev_req *r, uint32_t len,
                           uint64_t off)
{
    (void)h;
    (void)r;
    (void)len;
    (void)off;
    /* Declined; with no node below the library answers -ENOTSUP */
    return SOFTDEV_FORWARD;
}

static int ramdisk_write_zeroes(void *h, struct softdev_req *r, uint32_t len,
                                uint64_t off, uint32_t flags)
{
    (void)r;
    (void)flags;
    memset((char *)h + off, 0, len);
    return SOFTDEV_DONE;
}

/* Requests for different ranges may run at the same time */
static struct softdev_device ramdisk = {
    .api_version = SOFTDEV_API_VERSION,
    .name = "ramdisk",
    .thread_model = SOFTDEV_THREAD_PARALLEL,
    .open = ramdisk_open,
    .close = ramdisk_close,
    .read = ramdisk_read,
    .write = ramdisk_write,
    .flush = ramdisk_flush,
    .discard = ramdisk_discard,
    .write_zeroes = ramdisk_write_zeroes,
};

/* For softdev-run ramdisk.so */
SOFTDEV_DEVICE(ramdisk)

int main(int argc, char **argv)
{
    return softdev_main(&ramdisk, argc, argv);
}
