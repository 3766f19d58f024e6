/*
 * Tracing: appends one line per write (time, offset, length, FUA) to a
 * log, then forwards the write unchanged.  A write QEMU sends again after
 * a reconnection is logged again, marked 'replay': it may or may not have
 * reached the disk the first time.  A last line 'close' says that the
 * device was closed (also on SIGTERM or SIGINT).  Shows
 * softdev_req_is_replay(), max_inflight and close.
 *
 * Usage: logger --unix PATH [path=FILE] [max-inflight=N]
 * (FILE default softdev-writes.log, '-' for stderr; N bounds the requests
 * QEMU may have outstanding here, default QEMU's own limit)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "softdev.h"

static struct softdev_device logger;

static void *logger_open(int argc, char **argv)
{
    const char *path = "softdev-writes.log";
    FILE *f;
    int i;

    for (i = 1; i < argc; i++) {
        char *end;
        if (!strncmp(argv[i], "path=", 5)) {
            path = argv[i] + 5;
        } else if (!strncmp(argv[i], "max-inflight=", 13)) {
            unsigned long n = strtoul(argv[i] + 13, &end, 0);
            if (*end || n < 1 || n > 1024) {
                softdev_error("max-inflight must be 1 to 1024");
                return NULL;
            }
            logger.max_inflight = n;    /* read at each handshake */
        } else {
            softdev_error("usage: %s --unix PATH [path=FILE] "
                          "[max-inflight=N]", argv[0]);
            return NULL;
        }
    }
    if (!strcmp(path, "-")) {
        return stderr;
    }
    f = fopen(path, "a");
    if (!f) {
        softdev_error("cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    setvbuf(f, NULL, _IOLBF, 0);        /* one line at a time */
    return f;
}

/* Each line starts with the time, seconds.microseconds */
static void logger_stamp(FILE *f)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    fprintf(f, "%lld.%06ld ", (long long)ts.tv_sec, ts.tv_nsec / 1000);
}

/* Also on SIGTERM or SIGINT: softdev_main() closes the device then */
static void logger_close(void *h)
{
    logger_stamp(h);
    fprintf(h, "close\n");
    if (h != stderr) {
        fclose(h);
    }
}

static int logger_write(void *h, struct softdev_req *r, const void *buf,
                        uint32_t len, uint64_t off, uint32_t flags)
{
    (void)buf;
    logger_stamp(h);
    fprintf(h, "write %llu %u%s%s\n", (unsigned long long)off, len,
            flags & SOFTDEV_FUA ? " fua" : "",
            softdev_req_is_replay(r) ? " replay" : "");
    return SOFTDEV_FORWARD;
}

static struct softdev_device logger = {
    .api_version = SOFTDEV_API_VERSION,
    .name = "logger",
    .open = logger_open,
    .close = logger_close,
    .write = logger_write,
};

/* For softdev-run logger.so */
SOFTDEV_DEVICE(logger)

int main(int argc, char **argv)
{
    return softdev_main(&logger, argc, argv);
}
