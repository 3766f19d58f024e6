/*
 * memcpy-check SECONDS: for SECONDS, copy 40 KiB of a pattern with
 * glibc's memcpy(), alternately into fresh pages (which fault during the
 * copy) and into a reused buffer, and check every copy.  Prints
 * "MEMCPY-BAD ..." for the first few bad copies (where, how long, whether
 * zeroes) and "MEMCPY-CHECK copies=N bad=M" at the end; exits 1 if any
 * copy was bad.
 *
 * The Xen bed's self-check (test-xen-bed-fpu.py): glibc's memcpy keeps
 * the first 64 bytes in vector registers across the copy of the rest, so
 * a platform that loses vector state at a vCPU switch shows here as bad
 * first bytes, without any soft device involved.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define LEN     40960           /* a 44 KiB blkfront request, roughly */
#define SHOWN   5

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    double end = now() + (argc > 1 ? atof(argv[1]) : 10);
    uint8_t *src = aligned_alloc(64, LEN + 64);
    uint8_t *reuse = aligned_alloc(64, LEN + 64);
    unsigned long copies = 0, bad = 0;
    size_t i;

    if (!src || !reuse) {
        return 2;
    }
    for (i = 0; i < LEN + 64; i++) {
        src[i] = (uint8_t)(i * 131 + 7) | 1;    /* never zero */
    }
    for (; now() < end; copies++) {
        int fresh = copies % 2 == 0;
        size_t shift = copies * 8 % 64, off = 0, len = 0;
        uint8_t *map = NULL, *dst;
        int zero = 1;

        if (fresh) {
            map = mmap(NULL, LEN + 8192, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (map == MAP_FAILED) {
                perror("mmap");
                return 2;
            }
            dst = map + shift;
        } else {
            dst = reuse + shift;
            memset(dst, 0, LEN);
        }
        memcpy(dst, src, LEN);
        if (memcmp(dst, src, LEN)) {
            while (dst[off] == src[off]) {
                off++;
            }
            while (off + len < LEN && dst[off + len] != src[off + len]) {
                zero &= !dst[off + len];
                len++;
            }
            if (++bad <= SHOWN) {
                printf("MEMCPY-BAD %s off=%zu len=%zu zeroes=%d\n",
                       fresh ? "fresh" : "reused", off, len, zero);
                fflush(stdout);
            }
        }
        if (map) {
            munmap(map, LEN + 8192);
        }
    }
    printf("MEMCPY-CHECK copies=%lu bad=%lu\n", copies, bad);
    return bad ? 1 : 0;
}
