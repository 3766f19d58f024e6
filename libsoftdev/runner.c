/*
 * softdev-run: serve a soft device built as a shared object.
 *
 *   softdev-run DEVICE.so (--unix PATH | --tcp HOST:PORT | --vsock CID:PORT
 *               | --fd N) [--allow-uid UID,...] [--no-shm] [--no-ring]
 *               [--poll-us N] [--] [ARGS...]
 *
 * loads DEVICE.so, calls its softdev_device_get() (SOFTDEV_DEVICE() in
 * softdev.h) and runs softdev_main() for the device it returns, with
 * DEVICE.so as the program name.  The runner is linked with libsoftdev and
 * exports its functions, so the object needs no -lsoftdev of its own.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "softdev.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: softdev-run DEVICE.so (--unix PATH | --tcp HOST:PORT | "
            "--vsock CID:PORT | --fd N)\n"
            "                   [--allow-uid UID[,UID...]] [--no-shm] "
            "[--no-ring]\n"
            "                   [--poll-us N] [--] [DEVICE ARGS...]\n"
            "DEVICE.so exports softdev_device_get() (see SOFTDEV_DEVICE in "
            "softdev.h).\n"
            "The options are softdev_main()'s: DEVICE.so --help lists "
            "them.\n");
}

int main(int argc, char **argv)
{
    const struct softdev_device *dev;
    softdev_device_get_fn get;
    const char *path;
    char *local = NULL;
    void *so;

    if (argc < 2 || argv[1][0] == '-') {
        if (argc >= 2 && (!strcmp(argv[1], "--help") ||
                          !strcmp(argv[1], "-h"))) {
            usage(stdout);
            return 0;
        }
        usage(stderr);
        return 2;
    }
    path = argv[1];
    /* A bare name that exists here means this file, not a library search */
    if (!strchr(path, '/') && access(path, F_OK) == 0) {
        local = malloc(strlen(path) + 3);
        if (!local) {
            fprintf(stderr, "softdev-run: out of memory\n");
            return 1;
        }
        strcpy(local, "./");
        strcat(local, path);
        path = local;
    }
    so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!so) {
        fprintf(stderr, "softdev-run: cannot load %s: %s\n", argv[1],
                dlerror());
        free(local);
        return 1;
    }
    free(local);
    *(void **)&get = dlsym(so, SOFTDEV_DEVICE_SYMBOL);
    if (!get) {
        fprintf(stderr, "softdev-run: %s has no %s() (define it with "
                "SOFTDEV_DEVICE(device) from softdev.h)\n", argv[1],
                SOFTDEV_DEVICE_SYMBOL);
        dlclose(so);
        return 1;
    }
    dev = get();
    if (!dev) {
        fprintf(stderr, "softdev-run: %s: %s() returned no device\n",
                argv[1], SOFTDEV_DEVICE_SYMBOL);
        dlclose(so);
        return 1;
    }
    if (dev->api_version < 1 || dev->api_version > SOFTDEV_API_VERSION) {
        fprintf(stderr, "softdev-run: %s: device api_version %d, this "
                "libsoftdev knows 1 to %d\n", argv[1], dev->api_version,
                SOFTDEV_API_VERSION);
        dlclose(so);
        return 1;
    }
    /* The device lives until exit: its threads and handle outlive main */
    return softdev_main(dev, argc - 1, argv + 1);
}
