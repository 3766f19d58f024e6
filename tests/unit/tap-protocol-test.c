/*
 * Unit tests of the tap protocol decoders (libsoftdev/protocol/tap-protocol.c):
 * every message round-trips, every rule of docs/specs/softdev-tap.rst
 * is enforced with its own message, and random input only ever yields an
 * error (built with ASan/UBSan by 'make check').
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libsoftdev/protocol/tap-protocol.h"

#include "tests/unit/unit-check.h"

/* err is the expected message */
#define CHECK_ERR(call, msg) CHECK((call) < 0 && err && !strcmp(err, (msg)))

#define MAXP (SOFTDEV_TAP_MIN_DATA + SOFTDEV_TAP_REPLY_SIZE)

static uint8_t buf[SOFTDEV_TAP_HDR_SIZE + MAXP];
static const uint8_t *const pl = buf + SOFTDEV_TAP_HDR_SIZE;

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
    CHECK(h.flags == 0 && h.length == SOFTDEV_TAP_REPLY_SIZE);
    /* Little endian on the wire, whatever the host */
    CHECK(buf[0] == 'S' && buf[1] == 'D' && buf[2] == 'T' && buf[3] == 'P');
    CHECK(buf[8] == 0x88 && buf[15] == 0x11);

    buf[0] = 'X';
    CHECK_ERR(hdr(&h, &err), "bad magic");
    softdev_tap_encode_header(buf, 99, 1, 24);
    CHECK_ERR(hdr(&h, &err), "unknown message type");
    softdev_tap_encode_header(buf, 0, 1, 24);
    CHECK_ERR(hdr(&h, &err), "unknown message type");
    softdev_tap_encode_header(buf, SOFTDEV_TAP_REPLY, 1, 8);
    CHECK_ERR(hdr(&h, &err), "message shorter than its fixed part");
    softdev_tap_encode_header(buf, SOFTDEV_TAP_SHM_SETUP, 0, 15);
    CHECK_ERR(hdr(&h, &err), "message shorter than its fixed part");
    softdev_tap_encode_header(buf, SOFTDEV_TAP_REPLY, 1, MAXP + 1);
    CHECK_ERR(hdr(&h, &err), "message longer than the negotiated maximum");
    softdev_tap_encode_header(buf, SOFTDEV_TAP_REPLY, 1, MAXP);
    CHECK(hdr(&h, &err) == 0);
    softdev_tap_encode_header(buf, SOFTDEV_TAP_REPLY, 1, 24);
    buf[23] = 1;
    CHECK_ERR(hdr(&h, &err), "reserved header bits set");

    /* REPLAY is the only flag, and only on a REQUEST */
    softdev_tap_encode_header(buf, SOFTDEV_TAP_REQUEST, 1, 24);
    buf[6] = SOFTDEV_TAP_FLAG_REPLAY;
    CHECK(hdr(&h, &err) == 0 && h.flags == SOFTDEV_TAP_FLAG_REPLAY);
    buf[6] = 2;
    CHECK_ERR(hdr(&h, &err), "reserved header bits set");
    buf[6] = 0;
    buf[7] = 0x80;
    CHECK_ERR(hdr(&h, &err), "reserved header bits set");
    {
        static const uint16_t others[] = {
            SOFTDEV_TAP_HELLO, SOFTDEV_TAP_HELLO_REPLY, SOFTDEV_TAP_SHM_SETUP,
            SOFTDEV_TAP_REPLY, SOFTDEV_TAP_LOWER_REQUEST,
            SOFTDEV_TAP_LOWER_REPLY,
        };
        size_t i;

        for (i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
            softdev_tap_encode_header(buf, others[i], 1, 40);
            CHECK(hdr(&h, &err) == 0);
            buf[6] = SOFTDEV_TAP_FLAG_REPLAY;
            CHECK_ERR(hdr(&h, &err), "reserved header bits set");
        }
    }
    /* The REQUEST encoder puts the flags in the header */
    {
        SoftdevTapRequest rq = { .op = SOFTDEV_TAP_OP_FLUSH };

        softdev_tap_encode_request(buf, SOFTDEV_TAP_REQUEST, 5,
                                   SOFTDEV_TAP_FLAG_REPLAY, false, &rq);
        CHECK(hdr(&h, &err) == 0 && h.flags == SOFTDEV_TAP_FLAG_REPLAY &&
              h.handle == 5);
    }
}

static const SoftdevTapHello base_hello = {
    .version = 1, .device_class = SOFTDEV_TAP_CLASS_BLOCK,
    .features = SOFTDEV_TAP_F_FLUSH | SOFTDEV_TAP_F_LOWER,
    .size = 1 << 30, .max_data = 1 << 20, .max_inflight = 64,
};

/* Encode @in as HELLO or HELLO_REPLY and decode it (against @client) */
static int roundtrip_hello(SoftdevTapHello in, bool reply,
                           const SoftdevTapHello *client,
                           SoftdevTapHello *out, const char **err)
{
    SoftdevTapHeader h;

    softdev_tap_encode_hello(buf, reply, &in);
    if (softdev_tap_decode_header(buf, SOFTDEV_TAP_HANDSHAKE_MAX, &h,
                                  err) < 0) {
        return -1;
    }
    return softdev_tap_decode_hello(&h, pl, reply, client, out, err);
}

static void test_hello(void)
{
    SoftdevTapHello in = base_hello, client = base_hello, out;
    SoftdevTapHeader h;
    const char *err = NULL;

    CHECK(softdev_tap_encode_hello(buf, false, &in) == 64);
    CHECK(buf[SOFTDEV_TAP_HDR_SIZE + 28] == 64);    /* max_inflight @28 */
    CHECK(roundtrip_hello(in, false, NULL, &out, &err) == 0);
    CHECK(!memcmp(&in, &out, sizeof(in)));
    CHECK(softdev_tap_encode_hello(buf, true, &in) == 56);
    CHECK(buf[SOFTDEV_TAP_HDR_SIZE + 28] == 64);

    /* A device ignores offered bits it does not know */
    in.features = SOFTDEV_TAP_F_ALL | 1ull << 6 | 1ull << 63;
    CHECK(roundtrip_hello(in, false, NULL, &out, &err) == 0);
    CHECK(out.features == in.features);
    in = base_hello;

    /* The reply may only accept offered features and lower the limits */
    CHECK(roundtrip_hello(in, true, &client, &out, &err) == 0);
    CHECK(!memcmp(&in, &out, sizeof(in)));
    client.features = SOFTDEV_TAP_F_FLUSH;
    CHECK_ERR(roundtrip_hello(in, true, &client, &out, &err),
              "device accepted a feature that was not offered");
    client.features = 1ull << 40 | in.features;
    in.features |= 1ull << 40;      /* offered, so it may be accepted */
    CHECK(roundtrip_hello(in, true, &client, &out, &err) == 0);
    in = client = base_hello;
    client.max_data = 65536;
    CHECK_ERR(roundtrip_hello(in, true, &client, &out, &err),
              "device raised max_data");
    client = base_hello;
    client.max_inflight = 63;
    CHECK_ERR(roundtrip_hello(in, true, &client, &out, &err),
              "device raised max_inflight");
    client = base_hello;
    client.device_class = 7;
    CHECK_ERR(roundtrip_hello(in, true, &client, &out, &err),
              "device class differs from the client's");
    client = base_hello;

    /* max_inflight 0 in a reply: the client's; a lower value sticks */
    in.max_inflight = 0;
    CHECK(roundtrip_hello(in, true, &client, &out, &err) == 0 &&
          out.max_inflight == 64);
    in.max_inflight = 1;
    CHECK(roundtrip_hello(in, true, &client, &out, &err) == 0 &&
          out.max_inflight == 1);
    /* A HELLO_REPLY is not a HELLO */
    softdev_tap_encode_hello(buf, true, &base_hello);
    CHECK(hdr(&h, &err) == 0);
    CHECK_ERR(softdev_tap_decode_hello(&h, pl, false, NULL, &out, &err),
              "expected a handshake message");
    in = base_hello;

    /* max_inflight bounds: 1..1024 in HELLO */
    in.max_inflight = 0;
    CHECK_ERR(roundtrip_hello(in, false, NULL, &out, &err),
              "max_inflight out of range");
    in.max_inflight = SOFTDEV_TAP_MAX_INFLIGHT + 1;
    CHECK_ERR(roundtrip_hello(in, false, NULL, &out, &err),
              "max_inflight out of range");
    client.max_inflight = SOFTDEV_TAP_MAX_INFLIGHT + 1;
    CHECK_ERR(roundtrip_hello(in, true, &client, &out, &err),
              "max_inflight out of range");
    client = base_hello;
    in.max_inflight = SOFTDEV_TAP_MAX_INFLIGHT;
    CHECK(roundtrip_hello(in, false, NULL, &out, &err) == 0);
    in.max_inflight = 1;
    CHECK(roundtrip_hello(in, false, NULL, &out, &err) == 0);
    in = base_hello;

    /* max_data bounds: 64 KiB..16 MiB */
    in.max_data = 4096;
    CHECK_ERR(roundtrip_hello(in, false, NULL, &out, &err),
              "max_data out of range (64 KiB to 16 MiB)");
    in.max_data = SOFTDEV_TAP_MIN_DATA - 1;
    CHECK_ERR(roundtrip_hello(in, false, NULL, &out, &err),
              "max_data out of range (64 KiB to 16 MiB)");
    in.max_data = SOFTDEV_TAP_MAX_DATA + 1;
    CHECK_ERR(roundtrip_hello(in, false, NULL, &out, &err),
              "max_data out of range (64 KiB to 16 MiB)");
    in.max_data = SOFTDEV_TAP_MAX_DATA;
    CHECK(roundtrip_hello(in, false, NULL, &out, &err) == 0);
    in.max_data = SOFTDEV_TAP_MIN_DATA;
    CHECK(roundtrip_hello(in, false, NULL, &out, &err) == 0);
    in = base_hello;

    in.version = 2;
    CHECK_ERR(roundtrip_hello(in, false, NULL, &out, &err),
              "unsupported protocol version");
    in.version = 1;
    in.device_class = SOFTDEV_TAP_CLASS_NET;
    CHECK_ERR(roundtrip_hello(in, false, NULL, &out, &err),
              "unsupported device class");
    in = base_hello;

    /* Reserved field, handle and length */
    softdev_tap_encode_hello(buf, false, &in);
    buf[SOFTDEV_TAP_HDR_SIZE + 39] = 1;
    CHECK(softdev_tap_decode_header(buf, SOFTDEV_TAP_HANDSHAKE_MAX, &h,
                                    &err) == 0);
    CHECK_ERR(softdev_tap_decode_hello(&h, pl, false, NULL, &out, &err),
              "reserved handshake fields set");
    softdev_tap_encode_hello(buf, false, &in);
    buf[8] = 1;
    hdr(&h, &err);
    CHECK_ERR(softdev_tap_decode_hello(&h, pl, false, NULL, &out, &err),
              "malformed handshake message");
    softdev_tap_encode_hello(buf, false, &in);
    softdev_tap_encode_header(buf, SOFTDEV_TAP_HELLO, 0, 48);
    hdr(&h, &err);
    CHECK_ERR(softdev_tap_decode_hello(&h, pl, false, NULL, &out, &err),
              "malformed handshake message");
    softdev_tap_encode_hello(buf, true, &in);
    softdev_tap_encode_header(buf, SOFTDEV_TAP_HELLO_REPLY, 0, 40);
    hdr(&h, &err);
    CHECK_ERR(softdev_tap_decode_hello(&h, pl, true, &client, &out, &err),
              "malformed handshake message");
}

static void test_shm(void)
{
    SoftdevTapHello agreed = base_hello;
    SoftdevTapShm in = { .slots = 64, .slot_size = 1 << 20 }, out;
    SoftdevTapHeader h;
    const char *err = NULL;

    agreed.features |= SOFTDEV_TAP_F_SHM;
    CHECK(softdev_tap_encode_shm(buf, &in) == 40);
    CHECK(hdr(&h, &err) == 0 && h.type == SOFTDEV_TAP_SHM_SETUP &&
          h.length == SOFTDEV_TAP_SHM_SETUP_SIZE && h.handle == 0);
    CHECK(softdev_tap_decode_shm(&h, pl, &agreed, &out, &err) == 0);
    CHECK(out.slots == 64 && out.slot_size == 1 << 20);

    agreed.features &= ~SOFTDEV_TAP_F_SHM;
    CHECK_ERR(softdev_tap_decode_shm(&h, pl, &agreed, &out, &err),
              "SHM_SETUP without SOFTDEV_TAP_F_SHM");
    agreed.features |= SOFTDEV_TAP_F_SHM;

    /* The geometry is the handshake's: slots = max_inflight, size = data */
    in.slots = 63;
    softdev_tap_encode_shm(buf, &in);
    hdr(&h, &err);
    CHECK_ERR(softdev_tap_decode_shm(&h, pl, &agreed, &out, &err),
              "SHM_SETUP geometry differs from the handshake");
    in.slots = 64;
    in.slot_size = 65536;
    softdev_tap_encode_shm(buf, &in);
    hdr(&h, &err);
    CHECK_ERR(softdev_tap_decode_shm(&h, pl, &agreed, &out, &err),
              "SHM_SETUP geometry differs from the handshake");
    in.slot_size = 1 << 20;

    softdev_tap_encode_shm(buf, &in);
    buf[SOFTDEV_TAP_HDR_SIZE + 12] = 1;
    hdr(&h, &err);
    CHECK_ERR(softdev_tap_decode_shm(&h, pl, &agreed, &out, &err),
              "reserved SHM_SETUP field set");
    softdev_tap_encode_shm(buf, &in);
    buf[8] = 3;
    hdr(&h, &err);
    CHECK_ERR(softdev_tap_decode_shm(&h, pl, &agreed, &out, &err),
              "malformed SHM_SETUP");
    softdev_tap_encode_shm(buf, &in);
    softdev_tap_encode_header(buf, SOFTDEV_TAP_SHM_SETUP, 0, 24);
    hdr(&h, &err);
    CHECK_ERR(softdev_tap_decode_shm(&h, pl, &agreed, &out, &err),
              "malformed SHM_SETUP");
    softdev_tap_encode_hello(buf, false, &base_hello);
    hdr(&h, &err);
    CHECK_ERR(softdev_tap_decode_shm(&h, pl, &agreed, &out, &err),
              "expected SHM_SETUP");
}

/*
 * Encode @req as @type (REQUEST unless given) with @slots shared-memory
 * slots (0: none) and decode it for a device of @size bytes.  The data of
 * a WRITE is whatever lies in buf.
 */
static int roundtrip_req(uint16_t type, SoftdevTapRequest req, uint64_t size,
                         uint32_t slots, SoftdevTapRequest *out,
                         const char **err)
{
    SoftdevTapHeader h;

    softdev_tap_encode_request(buf, type, 7, 0, slots != 0, &req);
    if (hdr(&h, err) < 0) {
        return -1;
    }
    return softdev_tap_decode_request(&h, pl, size, SOFTDEV_TAP_MIN_DATA,
                                      slots, out, err);
}

static int roundtrip_request(SoftdevTapRequest req, uint64_t size,
                             SoftdevTapRequest *out, const char **err)
{
    return roundtrip_req(SOFTDEV_TAP_REQUEST, req, size, 0, out, err);
}

/* Set the length field of the header in buf */
static void set_length(uint32_t len)
{
    buf[16] = len;
    buf[17] = len >> 8;
    buf[18] = len >> 16;
    buf[19] = len >> 24;
}

static void test_request(void)
{
    SoftdevTapRequest out;
    SoftdevTapHeader h;
    const char *err = NULL;
    const uint64_t size = 1 << 20;

    CHECK(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_WRITE,
          SOFTDEV_TAP_REQ_FUA, 0, 4096, 512 }, size, &out, &err) == 0);
    CHECK(out.op == SOFTDEV_TAP_OP_WRITE && out.offset == 4096 &&
          out.bytes == 512 && out.req_flags == SOFTDEV_TAP_REQ_FUA &&
          out.slot == 0);
    CHECK(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_FLUSH },
                            size, &out, &err) == 0);
    CHECK(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_DISCARD, 0,
          0, 0, size }, size, &out, &err) == 0);
    CHECK(roundtrip_request((SoftdevTapRequest){
          SOFTDEV_TAP_OP_WRITE_ZEROES,
          SOFTDEV_TAP_REQ_FUA | SOFTDEV_TAP_REQ_MAY_UNMAP, 0, 0,
          1ull << 31 }, 1ull << 40, &out, &err) == 0);
    CHECK(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_READ, 0, 0,
          0, SOFTDEV_TAP_MIN_DATA }, size, &out, &err) == 0);

    CHECK_ERR(roundtrip_request((SoftdevTapRequest){ 9 }, size, &out, &err),
              "unknown request op");
    CHECK_ERR(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_READ, 8,
              0, 0, 512 }, size, &out, &err), "unknown request flags");
    CHECK_ERR(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_READ, 0,
              0, 0, 0 }, size, &out, &err),
              "read/write length out of range");
    CHECK_ERR(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_READ, 0,
              0, 0, SOFTDEV_TAP_MIN_DATA + 1 }, 1ull << 40, &out, &err),
              "read/write length out of range");
    CHECK_ERR(roundtrip_request((SoftdevTapRequest){
              SOFTDEV_TAP_OP_WRITE_ZEROES, 0, 0, 0, (1ull << 31) + 1 },
              1ull << 40, &out, &err), "request length out of range");
    CHECK_ERR(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_FLUSH, 0,
              0, 8, 0 }, size, &out, &err),
              "flush with offset, length or flags");
    CHECK_ERR(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_FLUSH,
              SOFTDEV_TAP_REQ_FUA }, size, &out, &err),
              "flush with offset, length or flags");
    CHECK_ERR(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_READ, 0,
              0, size - 511, 512 }, size, &out, &err),
              "request beyond the end of the device");
    /* offset + bytes must not wrap around */
    CHECK_ERR(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_DISCARD,
              0, 0, UINT64_MAX - 10, 512 }, size, &out, &err),
              "request beyond the end of the device");

    /* A READ must not carry data */
    softdev_tap_encode_request(buf, SOFTDEV_TAP_REQUEST, 1, 0, false,
                               &(SoftdevTapRequest){ SOFTDEV_TAP_OP_READ, 0,
                                                     0, 0, 512 });
    set_length(SOFTDEV_TAP_REQUEST_SIZE + 512);
    CHECK(hdr(&h, &err) == 0);
    CHECK_ERR(softdev_tap_decode_request(&h, pl, size, SOFTDEV_TAP_MIN_DATA,
                                         0, &out, &err),
              "request data does not match its length");
    /* A WRITE without shared memory must carry its data */
    softdev_tap_encode_request(buf, SOFTDEV_TAP_REQUEST, 1, 0, false,
                               &(SoftdevTapRequest){ SOFTDEV_TAP_OP_WRITE, 0,
                                                     0, 0, 512 });
    set_length(SOFTDEV_TAP_REQUEST_SIZE + 511);
    CHECK(hdr(&h, &err) == 0);
    CHECK_ERR(softdev_tap_decode_request(&h, pl, size, SOFTDEV_TAP_MIN_DATA,
                                         0, &out, &err),
              "request data does not match its length");
    /* Without shared memory the slot field is reserved */
    softdev_tap_encode_request(buf, SOFTDEV_TAP_REQUEST, 1, 0, false,
                               &(SoftdevTapRequest){ SOFTDEV_TAP_OP_READ, 0,
                                                     0, 0, 512 });
    buf[SOFTDEV_TAP_HDR_SIZE + 4] = 1;
    CHECK(hdr(&h, &err) == 0);
    CHECK_ERR(softdev_tap_decode_request(&h, pl, size, SOFTDEV_TAP_MIN_DATA,
                                         0, &out, &err),
              "reserved request field set");
    /* The encoder without shm zeroes the slot field */
    CHECK(roundtrip_request((SoftdevTapRequest){ SOFTDEV_TAP_OP_READ, 0, 9,
          0, 512 }, size, &out, &err) == 0 && out.slot == 0);
}

static void test_request_shm(void)
{
    SoftdevTapRequest out;
    SoftdevTapHeader h;
    const char *err = NULL;
    const uint64_t size = 1 << 20;
    const uint32_t slots = 16;

    /* A WRITE's data lies in its slot: the message carries none */
    CHECK(roundtrip_req(SOFTDEV_TAP_REQUEST, (SoftdevTapRequest){
          SOFTDEV_TAP_OP_WRITE, 0, 15, 4096, SOFTDEV_TAP_MIN_DATA }, size,
          slots, &out, &err) == 0);
    CHECK(out.slot == 15 && out.bytes == SOFTDEV_TAP_MIN_DATA);
    CHECK(hdr(&h, &err) == 0 && h.length == SOFTDEV_TAP_REQUEST_SIZE);
    CHECK(roundtrip_req(SOFTDEV_TAP_REQUEST, (SoftdevTapRequest){
          SOFTDEV_TAP_OP_READ, 0, 0, 0, 512 }, size, slots, &out,
          &err) == 0 && out.slot == 0);
    CHECK(roundtrip_req(SOFTDEV_TAP_REQUEST, (SoftdevTapRequest){
          SOFTDEV_TAP_OP_FLUSH, 0, 3 }, size, slots, &out, &err) == 0 &&
          out.slot == 3);

    /* BELOW: a READ whose slot holds the data below (READ_BELOW) */
    CHECK(roundtrip_req(SOFTDEV_TAP_REQUEST, (SoftdevTapRequest){
          SOFTDEV_TAP_OP_READ, SOFTDEV_TAP_REQ_BELOW, 2, 0, 512 }, size,
          slots, &out, &err) == 0 && out.req_flags == SOFTDEV_TAP_REQ_BELOW);
    CHECK(hdr(&h, &err) == 0 && h.length == SOFTDEV_TAP_REQUEST_SIZE);
    CHECK_ERR(roundtrip_req(SOFTDEV_TAP_REQUEST, (SoftdevTapRequest){
              SOFTDEV_TAP_OP_WRITE, SOFTDEV_TAP_REQ_BELOW, 2, 0, 512 }, size,
              slots, &out, &err),
              "BELOW only on a READ whose data lies in its slot");
    CHECK_ERR(roundtrip_req(SOFTDEV_TAP_LOWER_REQUEST, (SoftdevTapRequest){
              SOFTDEV_TAP_OP_READ, SOFTDEV_TAP_REQ_BELOW, 0, 0, 512 }, size,
              slots, &out, &err),
              "BELOW only on a READ whose data lies in its slot");
    CHECK_ERR(roundtrip_req(SOFTDEV_TAP_REQUEST, (SoftdevTapRequest){
              SOFTDEV_TAP_OP_READ, SOFTDEV_TAP_REQ_BELOW, 0, 0, 512 }, size,
              0, &out, &err),
              "BELOW only on a READ whose data lies in its slot");

    /* Slot range */
    CHECK_ERR(roundtrip_req(SOFTDEV_TAP_REQUEST, (SoftdevTapRequest){
              SOFTDEV_TAP_OP_READ, 0, 16, 0, 512 }, size, slots, &out, &err),
              "request slot out of range");
    CHECK_ERR(roundtrip_req(SOFTDEV_TAP_REQUEST, (SoftdevTapRequest){
              SOFTDEV_TAP_OP_WRITE, 0, UINT32_MAX, 0, 512 }, size, slots,
              &out, &err), "request slot out of range");
    CHECK(roundtrip_req(SOFTDEV_TAP_REQUEST, (SoftdevTapRequest){
          SOFTDEV_TAP_OP_READ, 0, 0, 0, 512 }, size, 1, &out, &err) == 0);
    CHECK_ERR(roundtrip_req(SOFTDEV_TAP_REQUEST, (SoftdevTapRequest){
              SOFTDEV_TAP_OP_READ, 0, 1, 0, 512 }, size, 1, &out, &err),
              "request slot out of range");

    /* Inline data is forbidden with shared memory */
    softdev_tap_encode_request(buf, SOFTDEV_TAP_REQUEST, 1, 0, false,
                               &(SoftdevTapRequest){ SOFTDEV_TAP_OP_WRITE, 0,
                                                     0, 0, 512 });
    CHECK(hdr(&h, &err) == 0 &&
          h.length == SOFTDEV_TAP_REQUEST_SIZE + 512);
    CHECK_ERR(softdev_tap_decode_request(&h, pl, size, SOFTDEV_TAP_MIN_DATA,
                                         slots, &out, &err),
              "request data does not match its length");

    /* LOWER_REQUESTs always carry their data and have no slot */
    CHECK(roundtrip_req(SOFTDEV_TAP_LOWER_REQUEST, (SoftdevTapRequest){
          SOFTDEV_TAP_OP_WRITE, 0, 5, 0, 512 }, size, slots, &out,
          &err) == 0 && out.slot == 0);
    CHECK(hdr(&h, &err) == 0 &&
          h.length == SOFTDEV_TAP_REQUEST_SIZE + 512);
    softdev_tap_encode_request(buf, SOFTDEV_TAP_LOWER_REQUEST, 1, 0, true,
                               &(SoftdevTapRequest){ SOFTDEV_TAP_OP_READ, 0,
                                                     0, 0, 512 });
    buf[SOFTDEV_TAP_HDR_SIZE + 4] = 2;
    CHECK(hdr(&h, &err) == 0);
    CHECK_ERR(softdev_tap_decode_request(&h, pl, size, SOFTDEV_TAP_MIN_DATA,
                                         slots, &out, &err),
              "reserved request field set");
    softdev_tap_encode_request(buf, SOFTDEV_TAP_LOWER_REQUEST, 1, 0, true,
                               &(SoftdevTapRequest){ SOFTDEV_TAP_OP_WRITE, 0,
                                                     0, 0, 512 });
    set_length(SOFTDEV_TAP_REQUEST_SIZE);
    CHECK(hdr(&h, &err) == 0);
    CHECK_ERR(softdev_tap_decode_request(&h, pl, size, SOFTDEV_TAP_MIN_DATA,
                                         slots, &out, &err),
              "request data does not match its length");
}

/* Encode @rep as @type and decode it as the answer to @req */
static int roundtrip_reply_shm(uint16_t type, SoftdevTapReply rep,
                               SoftdevTapRequest req, bool has_lower,
                               bool shm, const char **err)
{
    SoftdevTapHeader h;
    SoftdevTapReply out;

    softdev_tap_encode_reply(buf, type, 3, shm, &rep);
    if (hdr(&h, err) < 0) {
        return -1;
    }
    return softdev_tap_decode_reply(&h, pl, &req, has_lower, shm, &out, err);
}

static int roundtrip_reply(uint16_t type, SoftdevTapReply rep,
                           SoftdevTapRequest req, bool has_lower,
                           const char **err)
{
    return roundtrip_reply_shm(type, rep, req, has_lower, false, err);
}

static void test_reply(void)
{
    const SoftdevTapRequest rd = { SOFTDEV_TAP_OP_READ, 0, 0, 0, 4096 };
    const SoftdevTapRequest wr = { SOFTDEV_TAP_OP_WRITE, 0, 0, 0, 4096 };
    const char *err = NULL;

    CHECK(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
          SOFTDEV_TAP_COMPLETE, 0, 4096 }, rd, false, &err) == 0);
    CHECK(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ -5,
          SOFTDEV_TAP_COMPLETE, 0, 0 }, rd, false, &err) == 0);
    CHECK(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ -4095,
          SOFTDEV_TAP_COMPLETE, 0, 0 }, wr, false, &err) == 0);
    CHECK(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
          SOFTDEV_TAP_FORWARD, 8192, 4096 }, wr, true, &err) == 0);
    CHECK(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
          SOFTDEV_TAP_FORWARD, 8192, 0 }, wr, true, &err) == 0);
    CHECK(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
          SOFTDEV_TAP_FORWARD, 8192, 0 }, rd, true, &err) == 0);
    CHECK(roundtrip_reply(SOFTDEV_TAP_LOWER_REPLY, (SoftdevTapReply){ 0,
          0, 0, 4096 }, rd, false, &err) == 0);
    CHECK(roundtrip_reply(SOFTDEV_TAP_LOWER_REPLY, (SoftdevTapReply){ -5,
          0, 0, 0 }, rd, false, &err) == 0);

    CHECK_ERR(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
              SOFTDEV_TAP_COMPLETE, 0, 512 }, rd, false, &err),
              "reply data does not match the request");
    CHECK_ERR(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ -5,
              SOFTDEV_TAP_COMPLETE, 0, 4096 }, rd, false, &err),
              "reply data does not match the request");
    CHECK_ERR(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
              SOFTDEV_TAP_COMPLETE, 0, 4096 }, wr, false, &err),
              "reply data does not match the request");
    CHECK_ERR(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
              SOFTDEV_TAP_FORWARD, 0, 512 }, wr, true, &err),
              "reply data does not match the request");
    CHECK_ERR(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
              SOFTDEV_TAP_FORWARD, 0, 4096 }, rd, true, &err),
              "reply data does not match the request");
    CHECK_ERR(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
              SOFTDEV_TAP_FORWARD, 0, 0 }, rd, false, &err),
              "forward without a node below");
    CHECK_ERR(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ -5,
              SOFTDEV_TAP_FORWARD, 0, 0 }, rd, true, &err),
              "forward with a result");
    CHECK_ERR(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0, 7,
              0, 0 }, wr, true, &err), "unknown reply action");
    CHECK_ERR(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 5,
              SOFTDEV_TAP_COMPLETE, 0, 0 }, wr, true, &err),
              "reply result is not 0 or -errno");
    CHECK_ERR(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ -4096,
              SOFTDEV_TAP_COMPLETE, 0, 0 }, wr, true, &err),
              "reply result is not 0 or -errno");
    CHECK_ERR(roundtrip_reply(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
              SOFTDEV_TAP_COMPLETE, 4096, 0 }, wr, true, &err),
              "completion with an offset");
    CHECK_ERR(roundtrip_reply(SOFTDEV_TAP_LOWER_REPLY, (SoftdevTapReply){ 0,
              0, 0, 512 }, rd, false, &err),
              "reply data does not match the request");

    /* The length must match the bytes field */
    {
        SoftdevTapHeader h;
        SoftdevTapReply out;

        softdev_tap_encode_reply(buf, SOFTDEV_TAP_REPLY, 3, false,
                                 &(SoftdevTapReply){ 0, 0, 0, 4096 });
        set_length(SOFTDEV_TAP_REPLY_SIZE + 4095);
        CHECK(hdr(&h, &err) == 0);
        CHECK_ERR(softdev_tap_decode_reply(&h, pl, &rd, false, false, &out,
                                           &err),
                  "reply data does not match its length");
        softdev_tap_encode_reply(buf, SOFTDEV_TAP_LOWER_REPLY, 3, false,
                                 &(SoftdevTapReply){ 0, 0, 0, 0 });
        buf[SOFTDEV_TAP_HDR_SIZE + 4] = 1;
        CHECK(hdr(&h, &err) == 0);
        CHECK_ERR(softdev_tap_decode_reply(&h, pl, &rd, false, false, &out,
                                           &err),
                  "reserved reply field set");
        softdev_tap_encode_request(buf, SOFTDEV_TAP_REQUEST, 3, 0, false,
                                   &rd);
        CHECK(hdr(&h, &err) == 0);
        CHECK_ERR(softdev_tap_decode_reply(&h, pl, &rd, false, false, &out,
                                           &err),
                  "expected a reply");
    }
}

static void test_reply_shm(void)
{
    const SoftdevTapRequest rd = { SOFTDEV_TAP_OP_READ, 0, 3, 0, 4096 };
    const SoftdevTapRequest wr = { SOFTDEV_TAP_OP_WRITE, 0, 3, 0, 4096 };
    SoftdevTapHeader h;
    SoftdevTapReply out;
    const char *err = NULL;

    /* COMPLETE READ: bytes keeps its meaning, the data is in the slot */
    CHECK(roundtrip_reply_shm(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
          SOFTDEV_TAP_COMPLETE, 0, 4096 }, rd, false, true, &err) == 0);
    CHECK(hdr(&h, &err) == 0 && h.length == SOFTDEV_TAP_REPLY_SIZE);
    CHECK(softdev_tap_decode_reply(&h, pl, &rd, false, true, &out,
                                   &err) == 0 && out.bytes == 4096);
    /* FORWARD of a WRITE with replacement data in the slot, or without */
    CHECK(roundtrip_reply_shm(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
          SOFTDEV_TAP_FORWARD, 512, 4096 }, wr, true, true, &err) == 0);
    CHECK(roundtrip_reply_shm(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
          SOFTDEV_TAP_FORWARD, 512, 0 }, wr, true, true, &err) == 0);
    CHECK(roundtrip_reply_shm(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ -5,
          SOFTDEV_TAP_COMPLETE, 0, 0 }, rd, false, true, &err) == 0);
    /* the bytes field is still checked */
    CHECK_ERR(roundtrip_reply_shm(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
              SOFTDEV_TAP_COMPLETE, 0, 512 }, rd, false, true, &err),
              "reply data does not match the request");
    CHECK_ERR(roundtrip_reply_shm(SOFTDEV_TAP_REPLY, (SoftdevTapReply){ 0,
              SOFTDEV_TAP_COMPLETE, 0, 4096 }, wr, false, true, &err),
              "reply data does not match the request");

    /* Inline data is forbidden with shared memory */
    softdev_tap_encode_reply(buf, SOFTDEV_TAP_REPLY, 3, false,
                             &(SoftdevTapReply){ 0, 0, 0, 4096 });
    CHECK(hdr(&h, &err) == 0);
    CHECK_ERR(softdev_tap_decode_reply(&h, pl, &rd, false, true, &out, &err),
              "reply data does not match its length");
    softdev_tap_encode_reply(buf, SOFTDEV_TAP_REPLY, 3, false,
                             &(SoftdevTapReply){ 0, SOFTDEV_TAP_FORWARD, 0,
                                                 4096 });
    CHECK(hdr(&h, &err) == 0);
    CHECK_ERR(softdev_tap_decode_reply(&h, pl, &wr, true, true, &out, &err),
              "reply data does not match its length");
    /* ...and required without it */
    softdev_tap_encode_reply(buf, SOFTDEV_TAP_REPLY, 3, true,
                             &(SoftdevTapReply){ 0, 0, 0, 4096 });
    CHECK(hdr(&h, &err) == 0);
    CHECK_ERR(softdev_tap_decode_reply(&h, pl, &rd, false, false, &out,
                                       &err),
              "reply data does not match its length");

    /* LOWER_REPLY always carries its data */
    CHECK(roundtrip_reply_shm(SOFTDEV_TAP_LOWER_REPLY, (SoftdevTapReply){ 0,
          0, 0, 4096 }, rd, false, true, &err) == 0);
    CHECK(hdr(&h, &err) == 0 &&
          h.length == SOFTDEV_TAP_LOWER_REPLY_SIZE + 4096);
    softdev_tap_encode_header(buf, SOFTDEV_TAP_LOWER_REPLY, 3,
                              SOFTDEV_TAP_LOWER_REPLY_SIZE);
    CHECK(hdr(&h, &err) == 0);
    CHECK_ERR(softdev_tap_decode_reply(&h, pl, &rd, false, true, &out, &err),
              "reply data does not match its length");
}

/* Random input must only ever be rejected or accepted, never crash. */
static void test_random(void)
{
    static const uint16_t types[] = { 1, 2, 3, 16, 17, 32, 33 };
    SoftdevTapHello client = base_hello, agreed = base_hello;
    unsigned seed = 12345;
    int i, accepted = 0;

    client.features = agreed.features = ~0ull;
    for (i = 0; i < 300000; i++) {
        SoftdevTapHeader h;
        SoftdevTapRequest req = { SOFTDEV_TAP_OP_READ, 0, 0, 0, 4096 };
        SoftdevTapRequest rq;
        SoftdevTapReply rep;
        SoftdevTapHello hello;
        SoftdevTapShm shm;
        const char *err;
        bool use_shm = i & 2;
        size_t j;

        for (j = 0; j < SOFTDEV_TAP_HDR_SIZE + 64; j++) {
            buf[j] = rand_r(&seed);
        }
        if (i & 1) {    /* a valid header with random contents after it */
            softdev_tap_encode_header(buf, types[rand_r(&seed) % 7],
                                      rand_r(&seed) % 4,
                                      rand_r(&seed) % 80);
            buf[6] = rand_r(&seed) % 4 == 0;
        }
        if (i & 4) {
            req.op = SOFTDEV_TAP_OP_WRITE;
        }
        if (softdev_tap_decode_header(buf, 64, &h, &err) < 0) {
            continue;
        }
        switch (h.type) {
        case SOFTDEV_TAP_HELLO:
        case SOFTDEV_TAP_HELLO_REPLY:
            accepted += !softdev_tap_decode_hello(&h, pl,
                h.type == SOFTDEV_TAP_HELLO_REPLY, &client, &hello, &err);
            break;
        case SOFTDEV_TAP_SHM_SETUP:
            agreed.max_inflight = rand_r(&seed) % 3;
            agreed.max_data = rand_r(&seed) % 3;
            accepted += !softdev_tap_decode_shm(&h, pl, &agreed, &shm, &err);
            break;
        case SOFTDEV_TAP_REQUEST:
        case SOFTDEV_TAP_LOWER_REQUEST:
            accepted += !softdev_tap_decode_request(&h, pl, 1 << 20, 65536,
                                                    use_shm ? 4 : 0, &rq,
                                                    &err);
            break;
        default:
            accepted += !softdev_tap_decode_reply(&h, pl, &req, i & 8,
                                                  use_shm, &rep, &err);
            break;
        }
    }
    CHECK(accepted < 300000);
}

int main(void)
{
    test_header();
    test_hello();
    test_shm();
    test_request();
    test_request_shm();
    test_reply();
    test_reply_shm();
    test_random();
    return UNIT_CHECK_DONE("tap-protocol-test");
}
