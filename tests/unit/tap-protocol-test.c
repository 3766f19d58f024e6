/*
 * Unit tests of the tap protocol decoders (libsoftdev/tap-protocol.c):
 * every message round-trips, every rule of docs/specs/softdev-tap.rst
 * is enforced with its own message, and random input only ever yields an
 * error (built with ASan/UBSan by 'make check').
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "softdev/tap-protocol.h"

static int passed, failed;

#define CHECK(cond) do { \
    if (cond) { \
        passed++; \
    } else { \
        failed++; \
        fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond); \
    } \
} while (0)

#define MAXP (SOFTDEV_TAP_MIN_DATA + SOFTDEV_TAP_REPLY_SIZE)

static uint8_t buf[SOFTDEV_TAP_HDR_SIZE + MAXP];

/* Decode the header in buf; return 0 or -1 and the error in *err */
static int hdr(SoftdevTapHeader *h, const char **err)
{
    return softdev_tap_decode_header(buf, MAXP, h, err);
}

static void test_header(void)
{
    SoftdevTapHeader h;
    const char *err = NULL;

    softdev_tap_encode_header(buf, SOFTDEV_TAP_REPLY, 0x1122334455667788ull,
                              SOFTDEV_TAP_REPLY_SIZE);
    CHECK(hdr(&h, &err) == 0);
    CHECK(h.type == SOFTDEV_TAP_REPLY && h.handle == 0x1122334455667788ull);
    /* Little endian on the wire, whatever the host */
    CHECK(buf[0] == 'S' && buf[1] == 'D' && buf[2] == 'T' && buf[3] == 'P');
    CHECK(buf[8] == 0x88 && buf[15] == 0x11);

    buf[0] = 'X';
    CHECK(hdr(&h, &err) < 0 && !strcmp(err, "bad magic"));
    softdev_tap_encode_header(buf, 99, 1, 24);
    CHECK(hdr(&h, &err) < 0 && !strcmp(err, "unknown message type"));
    softdev_tap_encode_header(buf, SOFTDEV_TAP_REPLY, 1, 8);
    CHECK(hdr(&h, &err) < 0 &&
          !strcmp(err, "message shorter than its fixed part"));
    softdev_tap_encode_header(buf, SOFTDEV_TAP_REPLY, 1, MAXP + 1);
    CHECK(hdr(&h, &err) < 0 &&
          !strcmp(err, "message longer than the negotiated maximum"));
    softdev_tap_encode_header(buf, SOFTDEV_TAP_REPLY, 1, 24);
    buf[6] = 1;
    CHECK(hdr(&h, &err) < 0 && !strcmp(err, "reserved header bits set"));
    softdev_tap_encode_header(buf, SOFTDEV_TAP_REPLY, 1, 24);
    buf[23] = 1;
    CHECK(hdr(&h, &err) < 0 && !strcmp(err, "reserved header bits set"));
}

static void test_hello(void)
{
    SoftdevTapHello in = {
        .version = 1, .device_class = SOFTDEV_TAP_CLASS_BLOCK,
        .features = SOFTDEV_TAP_F_FLUSH | SOFTDEV_TAP_F_LOWER,
        .size = 1 << 30, .max_data = 1 << 20,
    };
    SoftdevTapHello out;
    SoftdevTapHeader h;
    const char *err = NULL;
    uint8_t *p = buf + SOFTDEV_TAP_HDR_SIZE;

    CHECK(softdev_tap_encode_hello(buf, false, &in) == 64);
    CHECK(softdev_tap_decode_header(buf, SOFTDEV_TAP_HANDSHAKE_MAX, &h,
                                    &err) == 0);
    CHECK(softdev_tap_decode_hello(&h, p, false, 0, 0, &out, &err) == 0);
    CHECK(!memcmp(&in, &out, sizeof(in)));

    /* The reply may only accept offered features and lower max_data */
    softdev_tap_encode_hello(buf, true, &in);
    hdr(&h, &err);
    CHECK(softdev_tap_decode_hello(&h, p, true, in.features, in.max_data,
                                   &out, &err) == 0);
    CHECK(softdev_tap_decode_hello(&h, p, true, SOFTDEV_TAP_F_FLUSH,
                                   in.max_data, &out, &err) < 0 &&
          !strcmp(err, "device accepted a feature that was not offered"));
    CHECK(softdev_tap_decode_hello(&h, p, true, in.features, 65536, &out,
                                   &err) < 0 &&
          !strcmp(err, "device raised max_data"));
    CHECK(softdev_tap_decode_hello(&h, p, false, 0, 0, &out, &err) < 0 &&
          !strcmp(err, "expected a handshake message"));

    in.version = 2;
    softdev_tap_encode_hello(buf, false, &in);
    hdr(&h, &err);
    CHECK(softdev_tap_decode_hello(&h, p, false, 0, 0, &out, &err) < 0 &&
          !strcmp(err, "unsupported protocol version"));
    in.version = 1;
    in.device_class = SOFTDEV_TAP_CLASS_NET;
    softdev_tap_encode_hello(buf, false, &in);
    hdr(&h, &err);
    CHECK(softdev_tap_decode_hello(&h, p, false, 0, 0, &out, &err) < 0 &&
          !strcmp(err, "unsupported device class"));
    in.device_class = SOFTDEV_TAP_CLASS_BLOCK;
    in.max_data = 4096;
    softdev_tap_encode_hello(buf, false, &in);
    hdr(&h, &err);
    CHECK(softdev_tap_decode_hello(&h, p, false, 0, 0, &out, &err) < 0 &&
          !strcmp(err, "max_data below 65536"));
    in.max_data = 65536;
    in.features = SOFTDEV_TAP_F_SHM;
    softdev_tap_encode_hello(buf, false, &in);
    hdr(&h, &err);
    CHECK(softdev_tap_decode_hello(&h, p, false, 0, 0, &out, &err) < 0 &&
          !strcmp(err, "shared-memory transport is not defined yet"));
}

/* Encode @req as a REQUEST and decode it for a device of @size bytes */
static int roundtrip_request(SoftdevTapRequest req, uint64_t size,
                             SoftdevTapRequest *out, const char **err)
{
    SoftdevTapHeader h;

    softdev_tap_encode_request(buf, SOFTDEV_TAP_REQUEST, 7, &req);
    if (hdr(&h, err) < 0) {
        return -1;
    }
    return softdev_tap_decode_request(&h, buf + SOFTDEV_TAP_HDR_SIZE, size,
                                      SOFTDEV_TAP_MIN_DATA, out, err);
}

static void test_request(void)
{
    SoftdevTapRequest out;
    const char *err = NULL;
    const uint64_t size = 1 << 20;

    CHECK(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_WRITE,
          SOFTDEV_TAP_REQ_FUA, 4096, 512 }, size, &out, &err) == 0);
    CHECK(out.op == SOFTDEV_TAP_OP_WRITE && out.offset == 4096 &&
          out.bytes == 512 && out.req_flags == SOFTDEV_TAP_REQ_FUA);
    CHECK(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_FLUSH },
                            size, &out, &err) == 0);
    CHECK(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_DISCARD, 0,
          0, size }, size, &out, &err) == 0);

    CHECK(roundtrip_request((SoftdevTapRequest){ 9 }, size, &out, &err) < 0
          && !strcmp(err, "unknown request op"));
    CHECK(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_READ, 4, 0,
          512 }, size, &out, &err) < 0 &&
          !strcmp(err, "unknown request flags"));
    CHECK(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_READ, 0, 0,
          0 }, size, &out, &err) < 0 &&
          !strcmp(err, "read/write length out of range"));
    CHECK(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_READ, 0, 0,
          SOFTDEV_TAP_MIN_DATA + 1 }, 1ull << 40, &out, &err) < 0 &&
          !strcmp(err, "read/write length out of range"));
    CHECK(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_FLUSH, 0, 8,
          0 }, size, &out, &err) < 0 &&
          !strcmp(err, "flush with offset, length or flags"));
    CHECK(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_READ, 0,
          size - 511, 512 }, size, &out, &err) < 0 &&
          !strcmp(err, "request beyond the end of the device"));
    /* offset + bytes must not wrap around */
    CHECK(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_DISCARD, 0,
          UINT64_MAX - 10, 512 }, size, &out, &err) < 0 &&
          !strcmp(err, "request beyond the end of the device"));

    /* A READ must not carry data */
    {
        SoftdevTapRequest req = { SOFTDEV_TAP_OP_READ, 0, 0, 512 };
        SoftdevTapHeader h;

        softdev_tap_encode_request(buf, SOFTDEV_TAP_REQUEST, 1, &req);
        softdev_tap_encode_header(buf, SOFTDEV_TAP_REQUEST, 1,
                                  SOFTDEV_TAP_REQUEST_SIZE + 512);
        CHECK(hdr(&h, &err) == 0);
        CHECK(softdev_tap_decode_request(&h, buf + SOFTDEV_TAP_HDR_SIZE, size,
                                         SOFTDEV_TAP_MIN_DATA, &out,
                                         &err) < 0 &&
              !strcmp(err, "request data does not match its length"));
    }
}

/* Encode @rep as @type and decode it as the answer to @req */
static int roundtrip_reply(uint16_t type, SoftdevTapReply rep,
                           SoftdevTapRequest req, bool has_lower,
                           const char **err)
{
    SoftdevTapHeader h;
    SoftdevTapReply out;

    softdev_tap_encode_reply(buf, type, 3, &rep);
    if (hdr(&h, err) < 0) {
        return -1;
    }
    return softdev_tap_decode_reply(&h, buf + SOFTDEV_TAP_HDR_SIZE, &req,
                                    has_lower, &out, err);
}

static void test_reply(void)
{
    const SoftdevTapRequest rd = { SOFTDEV_TAP_OP_READ, 0, 0, 4096 };
    const SoftdevTapRequest wr = { SOFTDEV_TAP_OP_WRITE, 0, 0, 4096 };
    const char *err = NULL;

    CHECK(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
          SOFTDEV_TAP_COMPLETE, 0, 4096 }, rd, false, &err) == 0);
    CHECK(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ -5,
          SOFTDEV_TAP_COMPLETE, 0, 0 }, rd, false, &err) == 0);
    CHECK(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
          SOFTDEV_TAP_FORWARD, 8192, 4096 }, wr, true, &err) == 0);
    CHECK(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
          SOFTDEV_TAP_FORWARD, 8192, 0 }, rd, true, &err) == 0);
    CHECK(roundtrip_reply(SOFTDEV_TAP_LOWER_REPLY, (SoftdevTapReply){ 0,
          0, 0, 4096 }, rd, false, &err) == 0);

    CHECK(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
          SOFTDEV_TAP_COMPLETE, 0, 512 }, rd, false, &err) < 0 &&
          !strcmp(err, "reply data does not match the request"));
    CHECK(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
          SOFTDEV_TAP_COMPLETE, 0, 4096 }, wr, false, &err) < 0 &&
          !strcmp(err, "reply data does not match the request"));
    CHECK(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
          SOFTDEV_TAP_FORWARD, 0, 0 }, rd, false, &err) < 0 &&
          !strcmp(err, "forward without a node below"));
    CHECK(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ -5,
          SOFTDEV_TAP_FORWARD, 0, 0 }, rd, true, &err) < 0 &&
          !strcmp(err, "forward with a result"));
    CHECK(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0, 7, 0,
          0 }, wr, true, &err) < 0 && !strcmp(err, "unknown reply action"));
    CHECK(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 5,
          SOFTDEV_TAP_COMPLETE, 0, 0 }, wr, true, &err) < 0 &&
          !strcmp(err, "reply result is not 0 or -errno"));
    CHECK(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
          SOFTDEV_TAP_COMPLETE, 4096, 0 }, wr, true, &err) < 0 &&
          !strcmp(err, "completion with an offset"));
}

/* Random input must only ever be rejected or accepted, never crash. */
static void test_random(void)
{
    unsigned seed = 12345;
    int i, accepted = 0;

    for (i = 0; i < 200000; i++) {
        SoftdevTapHeader h;
        SoftdevTapRequest req = { SOFTDEV_TAP_OP_READ, 0, 0, 4096 };
        SoftdevTapRequest rq;
        SoftdevTapReply rep;
        SoftdevTapHello hello;
        const char *err;
        size_t j;

        for (j = 0; j < SOFTDEV_TAP_HDR_SIZE + 64; j++) {
            buf[j] = rand_r(&seed);
        }
        if (i & 1) {    /* a valid header with random contents after it */
            softdev_tap_encode_header(buf, (uint16_t[]){ 1, 2, 16, 17, 32,
                                      33 }[rand_r(&seed) % 6], 1,
                                      rand_r(&seed) % 80);
        }
        if (softdev_tap_decode_header(buf, 64, &h, &err) < 0) {
            continue;
        }
        switch (h.type) {
        case SOFTDEV_TAP_HELLO:
        case SOFTDEV_TAP_HELLO_REPLY:
            accepted += !softdev_tap_decode_hello(&h, buf + 24,
                h.type == SOFTDEV_TAP_HELLO_REPLY, ~0ull, 1 << 20, &hello,
                &err);
            break;
        case SOFTDEV_TAP_REQUEST:
        case SOFTDEV_TAP_LOWER_REQUEST:
            accepted += !softdev_tap_decode_request(&h, buf + 24, 1 << 20,
                                                    65536, &rq, &err);
            break;
        default:
            accepted += !softdev_tap_decode_reply(&h, buf + 24, &req, true,
                                                  &rep, &err);
            break;
        }
    }
    CHECK(accepted < 200000);
}

int main(void)
{
    test_header();
    test_hello();
    test_request();
    test_reply();
    test_random();
    printf("tap-protocol-test: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
