/*
 * dmcrypt-setup NAME DEV SECTOR_SIZE HEXKEY: what
 *
 *   dmsetup create NAME --table "0 SECTORS crypt aes-xts-plain64 HEXKEY 0 \
 *       DEV 0" (+ " 2 sector_size:4096 iv_large_sectors" for 4096)
 *
 * does, for the test guest, which has no dmsetup and no udev: a dm-crypt
 * mapping of all of DEV in plain mode (no header), through the
 * device-mapper ioctls.  Prints the mapped device's node (/dev/dm-N).
 * Static, so it runs in the busybox initramfs.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <fcntl.h>
#include <linux/dm-ioctl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define BUF_SIZE 16384

static union {
    struct dm_ioctl io;
    char bytes[BUF_SIZE];
} buf;

static void die(const char *what)
{
    fprintf(stderr, "dmcrypt-setup: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* A fresh request for device NAME with @extra bytes of payload */
static struct dm_ioctl *request(const char *name, size_t extra)
{
    memset(&buf, 0, sizeof(buf));
    buf.io.version[0] = DM_VERSION_MAJOR;
    buf.io.version[1] = 0;
    buf.io.version[2] = 0;
    buf.io.data_size = sizeof(buf.io) + extra;
    buf.io.data_start = sizeof(buf.io);
    snprintf(buf.io.name, sizeof(buf.io.name), "%s", name);
    return &buf.io;
}

int main(int argc, char **argv)
{
    struct dm_target_spec *spec;
    uint64_t bytes;
    char *params;
    unsigned ss;
    int ctl, dev;

    if (argc != 5) {
        fprintf(stderr, "usage: dmcrypt-setup NAME DEV SECTOR_SIZE HEXKEY\n");
        return 2;
    }
    ss = strtoul(argv[3], NULL, 0);
    if ((ss != 512 && ss != 4096) || strlen(argv[4]) != 128) {
        fprintf(stderr, "dmcrypt-setup: sector size 512 or 4096, key of "
                "64 bytes in hex\n");
        return 2;
    }
    dev = open(argv[2], O_RDONLY);
    if (dev < 0 || ioctl(dev, BLKGETSIZE64, &bytes) < 0) {
        die(argv[2]);
    }
    close(dev);
    ctl = open("/dev/mapper/control", O_RDWR);
    if (ctl < 0) {
        die("/dev/mapper/control");
    }

    if (ioctl(ctl, DM_DEV_CREATE, request(argv[1], 0)) < 0) {
        die("DM_DEV_CREATE");
    }

    request(argv[1], sizeof(*spec) + 512);
    buf.io.target_count = 1;
    spec = (struct dm_target_spec *)(buf.bytes + sizeof(buf.io));
    spec->sector_start = 0;
    spec->length = bytes / 512;
    snprintf(spec->target_type, sizeof(spec->target_type), "crypt");
    params = (char *)(spec + 1);
    snprintf(params, 512, "aes-xts-plain64 %s 0 %s 0%s", argv[4], argv[2],
             ss == 4096 ? " 2 sector_size:4096 iv_large_sectors" : "");
    spec->next = 0;
    if (ioctl(ctl, DM_TABLE_LOAD, &buf.io) < 0) {
        die("DM_TABLE_LOAD");
    }

    /* DM_DEV_SUSPEND without DM_SUSPEND_FLAG resumes: the table goes live */
    if (ioctl(ctl, DM_DEV_SUSPEND, request(argv[1], 0)) < 0) {
        die("DM_DEV_SUSPEND (resume)");
    }
    printf("/dev/dm-%u\n", minor(buf.io.dev));
    return 0;
}
