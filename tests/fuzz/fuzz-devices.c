/*
 * What the device-side fuzz targets share: the two devices they serve
 * (one answering itself, one working through the node below) and the
 * parsing of the input's handshake messages.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz-devices.h"

static unsigned sink;                       /* keeps data reads alive */

static int fz_read(void *h, struct softdev_req *r, void *buf, uint32_t len,
                   uint64_t off)
{
    (void)h;
    if (off & 1) {
        return softdev_lower_read(r, buf, len, off);
    }
    memset(buf, (int)(off >> 9), len);      /* every byte is ours */
    return off & 2 ? SOFTDEV_FORWARD : SOFTDEV_DONE;
}

static int fz_write(void *h, struct softdev_req *r, const void *buf,
                    uint32_t len, uint64_t off, uint32_t flags)
{
    const uint8_t *p = buf;
    uint32_t i;

    (void)h;
    for (i = 0; i < len; i++) {
        sink += p[i];                       /* every byte is readable */
    }
    if (off & 1) {
        return softdev_lower_write(r, buf, len, off, flags);
    }
    if (off & 2) {
        uint8_t *copy = malloc(len);
        int ret;
        if (!copy) {
            return -ENOMEM;
        }
        memset(copy, 0xa5, len);
        ret = softdev_forward_to(r, off ^ 4096, copy);
        free(copy);
        return ret;
    }
    return off & 4 ? -EIO : SOFTDEV_DONE;
}

static int fz_flush(void *h, struct softdev_req *r)
{
    (void)h;
    return softdev_req_is_replay(r) ? softdev_lower_flush(r) : SOFTDEV_DONE;
}

static int fz_discard(void *h, struct softdev_req *r, uint32_t len,
                      uint64_t off)
{
    (void)h;
    return off & 1 ? softdev_lower_discard(r, len, off) : SOFTDEV_FORWARD;
}

static int fz_zeroes(void *h, struct softdev_req *r, uint32_t len,
                     uint64_t off, uint32_t flags)
{
    (void)h;
    if (off & 1) {
        return softdev_lower_write_zeroes(r, len, off, flags);
    }
    return len & 1 ? 12345 : SOFTDEV_DONE;  /* a device bug: -EIO */
}

static int fz_lower_read(void *h, struct softdev_req *r, void *buf,
                         uint32_t len, uint64_t off)
{
    int ret = softdev_lower_read(r, buf, len, off);
    (void)h;
    if (ret == 0 && softdev_lower_size(r) > off + len) {
        ((uint8_t *)buf)[0] ^= 1;
    }
    return ret;
}

static int fz_lower_write(void *h, struct softdev_req *r, const void *buf,
                          uint32_t len, uint64_t off, uint32_t flags)
{
    (void)h;
    if (softdev_req_is_replay(r)) {
        return softdev_forward_to(r, off, buf);
    }
    return softdev_lower_write(r, buf, len, off, flags);
}

struct softdev_device fuzz_dev_self = {
    .api_version = SOFTDEV_API_VERSION,
    .name = "fuzz",
    .max_inflight = 16,                     /* tap-vectors' shm_setup */
    .read = fz_read,
    .write = fz_write,
    .flush = fz_flush,
    .discard = fz_discard,
    .write_zeroes = fz_zeroes,
};

struct softdev_device fuzz_dev_lower = {
    .api_version = SOFTDEV_API_VERSION,
    .name = "fuzz-lower",
    .max_inflight = 16,
    .max_data = 65536,
    .read = fz_lower_read,
    .write = fz_lower_write,
};

/* Length of the first message if it is a well-formed HELLO, else 0 */
size_t fuzz_hello_length(const uint8_t *p, size_t size)
{
    SoftdevTapHeader h;
    const char *err;

    if (size < SOFTDEV_TAP_HDR_SIZE ||
        softdev_tap_decode_header(p, SOFTDEV_TAP_HANDSHAKE_MAX, &h,
                                  &err) < 0 ||
        h.type != SOFTDEV_TAP_HELLO ||
        size < SOFTDEV_TAP_HDR_SIZE + h.length) {
        return 0;
    }
    return SOFTDEV_TAP_HDR_SIZE + h.length;
}

uint32_t fuzz_ld32(const uint8_t *p)
{
    return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

/*
 * Length of the message at @p if it is a well-formed SHM_SETUP whose
 * rings fit in the memfd, else 0; *ctl is the control block's offset and
 * *entries the ring size.
 */
size_t fuzz_ring_setup_length(const uint8_t *p, size_t size, size_t *ctl,
                                uint32_t *entries)
{
    SoftdevTapHeader h;
    const char *err;
    uint64_t slots, slot_size;

    if (size < SOFTDEV_TAP_HDR_SIZE ||
        softdev_tap_decode_header(p, SOFTDEV_TAP_HANDSHAKE_MAX, &h,
                                  &err) < 0 ||
        h.type != SOFTDEV_TAP_SHM_SETUP || h.length < 12 ||
        size < SOFTDEV_TAP_HDR_SIZE + h.length) {
        return 0;
    }
    slots = fuzz_ld32(p + SOFTDEV_TAP_HDR_SIZE);
    slot_size = fuzz_ld32(p + SOFTDEV_TAP_HDR_SIZE + 4);
    *entries = fuzz_ld32(p + SOFTDEV_TAP_HDR_SIZE + 8);
    *ctl = slots * slot_size;
    if (!*entries || (*entries & (*entries - 1)) || *entries > 1024 ||
        *ctl + SOFTDEV_TAP_RING_CTL_SIZE +
        2ull * *entries * SOFTDEV_TAP_RING_ENTRY > SHM_SIZE) {
        return 0;
    }
    return SOFTDEV_TAP_HDR_SIZE + h.length;
}
