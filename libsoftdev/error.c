/*
 * libsoftdev errors: softdev_error() for messages about the device, and
 * struct softdev_err, the failure softdev_serve() hands its caller.
 *
 * The name softdev_error() prints is per thread: the threads serving a
 * device set it, so no state is shared between servers.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server-internal.h"

static __thread const char *error_name;

/* Name softdev_error() prints in this thread; returns the previous one */
const char *softdev_error_name_set(const char *name)
{
    const char *old = error_name;

    error_name = name;
    return old;
}

void softdev_error(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s\n", error_name ? error_name : "softdev", msg);
}

/* A new error with errno value @code; NULL when out of memory */
struct softdev_err *softdev_err_new(int code, const char *fmt, ...)
{
    struct softdev_err *err;
    va_list ap;
    int len;

    va_start(ap, fmt);
    len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    /* One allocation: the message follows the struct */
    err = malloc(sizeof(*err) + (len < 0 ? 0 : len) + 1);
    if (!err) {
        return NULL;
    }
    err->code = code;
    err->message = (char *)(err + 1);
    err->message[0] = '\0';
    va_start(ap, fmt);
    vsnprintf(err->message, len < 0 ? 1 : len + 1, fmt, ap);
    va_end(ap);
    return err;
}

void softdev_err_free(struct softdev_err *err)
{
    free(err);
}

/*
 * Print @err as softdev_serve_fd() and softdev_main() report it (an
 * on_failure function of struct softdev_server_options)
 */
void softdev_err_report(const struct softdev_err *err, void *opaque)
{
    (void)opaque;
    if (!err) {
        softdev_error("connection failed: out of memory");
    } else if (err->code == EPROTO) {
        softdev_error("protocol error: %s; dropping the connection",
                      err->message);
    } else {
        softdev_error("%s", err->message);
    }
}

uint64_t softdev_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}
