/*
 * Toy encryption (not secure): the node below holds every byte XORed with
 * a key; reads undo it.  The shape of a transforming device: reads get the
 * data below (SOFTDEV_READ_BELOW: from QEMU with the request, no round
 * trip of our own) and decode it in place; writes are encoded in place
 * (softdev_req_data()) and forwarded with the new data
 * (softdev_forward_to()), with no copy of their own; write-zeroes show
 * softdev_lower_write().  Usage: xor --unix PATH [key=]KEY (default 0x5a)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "softdev.h"

static unsigned char key = 0x5a;

static void *xor_open(int argc, char **argv)
{
    const char *arg = argc > 1 ? argv[1] : "0x5a";
    char *end;
    unsigned long v;

    if (!strncmp(arg, "key=", 4)) {
        arg += 4;
    }
    v = strtoul(arg, &end, 0);
    if (*end || v > 0xff || argc > 2) {
        softdev_error("usage: %s --unix PATH [key=]KEY (0 to 255)",
                      argv[0]);
        return NULL;
    }
    key = v;
    return &key;
}

/* dst = src ^ key, eight bytes at a time (@dst may be @src) */
static void xor_buf(unsigned char *dst, const unsigned char *src,
                    uint32_t len)
{
    uint64_t k64 = 0x0101010101010101ULL * key;
    uint32_t i = 0;

    for (; i + 8 <= len; i += 8) {
        uint64_t v;

        memcpy(&v, src + i, 8);
        v ^= k64;
        memcpy(dst + i, &v, 8);
    }
    for (; i < len; i++) {
        dst[i] = src[i] ^ key;
    }
}

static int xor_read(void *h, struct softdev_req *r, void *buf, uint32_t len,
                    uint64_t off)
{
    (void)h;
    (void)r;
    (void)off;
    xor_buf(buf, buf, len);         /* @buf holds the data below */
    return SOFTDEV_DONE;
}

static int xor_write(void *h, struct softdev_req *r, const void *buf,
                     uint32_t len, uint64_t off, uint32_t flags)
{
    unsigned char *data = softdev_req_data(r);     /* @buf, writable */

    (void)h;
    (void)flags;                    /* a forwarded write keeps its FUA */
    xor_buf(data, buf, len);        /* encoded in place: no copy */
    return softdev_forward_to(r, off, data);
}

static int xor_write_zeroes(void *h, struct softdev_req *r, uint32_t len,
                            uint64_t off, uint32_t flags)
{
    uint32_t chunk = len < (1u << 16) ? len : (1u << 16), pos, n;
    unsigned char *fill = malloc(chunk ? chunk : 1);
    int ret = 0;

    (void)h;
    if (!fill) {
        return -ENOMEM;
    }
    memset(fill, key, chunk);
    for (pos = 0; pos < len && ret == 0; pos += n) {
        n = len - pos < chunk ? len - pos : chunk;
        ret = softdev_lower_write(r, fill, n, off + pos,
                                  flags & SOFTDEV_FUA);
    }
    free(fill);
    return ret;
}

static const struct softdev_device xor_device = {
    .api_version = SOFTDEV_API_VERSION,
    .name = "xor",
    .open = xor_open,
    .read = xor_read,
    .write = xor_write,
    .write_zeroes = xor_write_zeroes,
    /* discarded data is undefined: discards may pass (XOR or not) */
    .flags = SOFTDEV_READ_BELOW | SOFTDEV_DISCARD_PASSES,
};

/* For softdev-run xor.so */
SOFTDEV_DEVICE(xor_device)

int main(int argc, char **argv)
{
    return softdev_main(&xor_device, argc, argv);
}
