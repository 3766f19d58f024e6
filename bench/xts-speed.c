/*
 * xts-speed [IMPL [MIB]]: the raw speed of softdev-crypt's AES-256-XTS
 * (block/softdev/crypt-xts.c) on one core, as 'openssl speed' measures
 * its own: encrypt, then decrypt, a 1 MiB buffer of 512-byte sectors in
 * place, over and over for MIB MiB (default 2048) each, and print MB/s
 * (10^6 bytes a second) per direction.  IMPL is aesni or vaes-avx2;
 * without it, the one softdev-crypt chooses on this CPU.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block/softdev/crypt-xts.h"

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    SoftdevXtsImpl impl = softdev_xts_best();
    size_t len = 1 << 20, mib = argc > 2 ? strtoul(argv[2], NULL, 0) : 2048;
    uint8_t key[SOFTDEV_XTS_KEY_SIZE];
    uint8_t *buf = malloc(len);
    SoftdevXts x;
    int dir;

    if (argc > 1) {
        impl = !strcmp(argv[1], "aesni") ? SOFTDEV_XTS_AESNI :
               !strcmp(argv[1], "vaes-avx2") ? SOFTDEV_XTS_VAES :
               SOFTDEV_XTS_NONE;
    }
    for (size_t i = 0; i < sizeof(key); i++) {
        key[i] = i * 7 + 1;
    }
    memset(buf, 0xa5, len);
    if (!buf || !mib || !softdev_xts_setkey(&x, key, impl)) {
        fprintf(stderr, "xts-speed: %s cannot run here\n",
                argc > 1 ? argv[1] : "softdev-crypt's cipher");
        return 1;
    }
    for (dir = 0; dir < 2; dir++) {
        double t0 = now(), t;

        for (size_t i = 0; i < mib; i++) {
            if (dir == 0) {
                softdev_xts_encrypt(&x, i * 2048, 512, buf, buf, len);
            } else {
                softdev_xts_decrypt(&x, i * 2048, 512, buf, buf, len);
            }
        }
        t = now() - t0;
        printf("%s %s %.0f MB/s\n", softdev_xts_impl_name(impl),
               dir ? "decrypt" : "encrypt", mib * (double)len / t / 1e6);
    }
    return 0;
}
