/*
 * tap-vectors: cross-language checks of the tap wire format.  'emit'
 * prints canonical messages encoded by libsoftdev as "NAME HEX" lines;
 * 'check' reads such lines (from the Python package) and decodes each with
 * libsoftdev, printing "NAME OK" or "NAME ERR message".
 *
 * The canonical set (tests/unit/test_tap_interop.py has the same):
 *
 *   hello               HELLO, features FLUSH|LOWER|SHM, lower_size 1 GiB,
 *                       max_data 1 MiB, max_inflight 64
 *   hello_reply         HELLO_REPLY, features FLUSH|LOWER|SHM, size 1 GiB,
 *                       max_data 1 MiB, max_inflight 16
 *   hello_reply_default HELLO_REPLY as above with max_inflight 0 (decodes
 *                       to the client's 64)
 *   shm_setup           SHM_SETUP, slots 16, slot_size 1 MiB
 *   request_write       REQUEST handle 7 WRITE FUA offset 4096 bytes 8,
 *                       data "ABCDEFGH"
 *   request_write_replay  the same with header flag REPLAY
 *   request_read        REQUEST handle 8 READ offset 512 bytes 8
 *   request_write_shm   REQUEST handle 9 WRITE FUA slot 3 offset 4096
 *                       bytes 8, no data (it is in the slot)
 *   request_read_shm    REQUEST handle 10 READ slot 5 offset 512 bytes 8
 *   reply_read          REPLY handle 8 COMPLETE 0, data "ABCDEFGH"
 *   reply_forward_write REPLY handle 7 FORWARD offset 8192, data "ABCDEFGH"
 *   reply_error         REPLY handle 7 COMPLETE -5 (EIO)
 *   reply_read_shm      REPLY handle 10 COMPLETE 0 bytes 8, no data
 *   reply_forward_write_shm  REPLY handle 9 FORWARD offset 8192 bytes 8,
 *                       no data
 *   lower_request_read  LOWER_REQUEST handle 1 READ offset 512 bytes 8
 *   lower_reply_read    LOWER_REPLY handle 1 result 0, data "ABCDEFGH"
 *
 * A name containing "shm" is decoded with the shared-memory data path
 * negotiated (16 slots); a name containing "replay" must carry the REPLAY
 * header flag, every other one no flag.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libsoftdev/protocol/tap-protocol.h"

#define DATA "ABCDEFGH"
#define MAXP (SOFTDEV_TAP_MIN_DATA + SOFTDEV_TAP_REPLY_SIZE)
#define SIZE (1ull << 30)

static uint8_t buf[SOFTDEV_TAP_HDR_SIZE + MAXP];

/* The canonical messages, both sides must agree on */
static const SoftdevTapHello hello = {
    .version = 1, .device_class = SOFTDEV_TAP_CLASS_BLOCK,
    .features = SOFTDEV_TAP_F_FLUSH | SOFTDEV_TAP_F_LOWER | SOFTDEV_TAP_F_SHM,
    .size = SIZE, .max_data = 1u << 20, .max_inflight = 64,
};
static const SoftdevTapHello hello_reply = {
    .version = 1, .device_class = SOFTDEV_TAP_CLASS_BLOCK,
    .features = SOFTDEV_TAP_F_FLUSH | SOFTDEV_TAP_F_LOWER | SOFTDEV_TAP_F_SHM,
    .size = SIZE, .max_data = 1u << 20, .max_inflight = 16,
};
static const SoftdevTapShm shm = { .slots = 16, .slot_size = 1u << 20 };
static const SoftdevTapRequest write_req = {
    .op = SOFTDEV_TAP_OP_WRITE, .req_flags = SOFTDEV_TAP_REQ_FUA,
    .offset = 4096, .bytes = 8,
};
static const SoftdevTapRequest read_req = {
    .op = SOFTDEV_TAP_OP_READ, .offset = 512, .bytes = 8,
};
static const SoftdevTapRequest write_req_shm = {
    .op = SOFTDEV_TAP_OP_WRITE, .req_flags = SOFTDEV_TAP_REQ_FUA, .slot = 3,
    .offset = 4096, .bytes = 8,
};
static const SoftdevTapRequest read_req_shm = {
    .op = SOFTDEV_TAP_OP_READ, .slot = 5, .offset = 512, .bytes = 8,
};

static void emit(const char *name, size_t len)
{
    size_t i;

    printf("%s ", name);
    for (i = 0; i < len; i++) {
        printf("%02x", buf[i]);
    }
    printf("\n");
}

/* Encode a reply and append its inline data, if any */
static size_t reply(uint16_t type, uint64_t handle, bool in_slot,
                    SoftdevTapReply rep)
{
    size_t n = softdev_tap_encode_reply(buf, type, handle, in_slot, &rep);

    if (rep.bytes && !in_slot) {
        memcpy(buf + n, DATA, rep.bytes);
        n += rep.bytes;
    }
    return n;
}

static void do_emit(void)
{
    SoftdevTapHello h;
    size_t n;

    emit("hello", softdev_tap_encode_hello(buf, false, &hello));
    emit("hello_reply", softdev_tap_encode_hello(buf, true, &hello_reply));
    h = hello_reply;
    h.max_inflight = 0;
    emit("hello_reply_default", softdev_tap_encode_hello(buf, true, &h));
    emit("shm_setup", softdev_tap_encode_shm(buf, &shm));

    n = softdev_tap_encode_request(buf, SOFTDEV_TAP_REQUEST, 7, 0, false,
                                   &write_req);
    memcpy(buf + n, DATA, 8);
    emit("request_write", n + 8);
    n = softdev_tap_encode_request(buf, SOFTDEV_TAP_REQUEST, 7,
                                   SOFTDEV_TAP_FLAG_REPLAY, false,
                                   &write_req);
    memcpy(buf + n, DATA, 8);
    emit("request_write_replay", n + 8);
    emit("request_read", softdev_tap_encode_request(
         buf, SOFTDEV_TAP_REQUEST, 8, 0, false, &read_req));
    emit("request_write_shm", softdev_tap_encode_request(
         buf, SOFTDEV_TAP_REQUEST, 9, 0, true, &write_req_shm));
    emit("request_read_shm", softdev_tap_encode_request(
         buf, SOFTDEV_TAP_REQUEST, 10, 0, true, &read_req_shm));

    emit("reply_read", reply(SOFTDEV_TAP_REPLY, 8, false,
         (SoftdevTapReply){ 0, SOFTDEV_TAP_COMPLETE, 0, 8 }));
    emit("reply_forward_write", reply(SOFTDEV_TAP_REPLY, 7, false,
         (SoftdevTapReply){ 0, SOFTDEV_TAP_FORWARD, 8192, 8 }));
    emit("reply_error", reply(SOFTDEV_TAP_REPLY, 7, false,
         (SoftdevTapReply){ -5, SOFTDEV_TAP_COMPLETE, 0, 0 }));
    emit("reply_read_shm", reply(SOFTDEV_TAP_REPLY, 10, true,
         (SoftdevTapReply){ 0, SOFTDEV_TAP_COMPLETE, 0, 8 }));
    emit("reply_forward_write_shm", reply(SOFTDEV_TAP_REPLY, 9, true,
         (SoftdevTapReply){ 0, SOFTDEV_TAP_FORWARD, 8192, 8 }));

    emit("lower_request_read", softdev_tap_encode_request(
         buf, SOFTDEV_TAP_LOWER_REQUEST, 1, 0, false, &read_req));
    emit("lower_reply_read", reply(SOFTDEV_TAP_LOWER_REPLY, 1, false,
         (SoftdevTapReply){ 0, 0, 0, 8 }));
}

#define FAIL(msg) do { *err = (msg); return -1; } while (0)

/* The request a reply named @name answers */
static const SoftdevTapRequest *answered(const char *name, bool in_slot)
{
    if (strstr(name, "write") || strstr(name, "error")) {
        return in_slot ? &write_req_shm : &write_req;
    }
    return in_slot ? &read_req_shm : &read_req;
}

/* Decode one message of the canonical set by its name */
static int check(const char *name, size_t len, const char **err)
{
    SoftdevTapHeader h;
    SoftdevTapHello he, want;
    SoftdevTapShm sh;
    SoftdevTapRequest rq;
    SoftdevTapReply rp;
    const uint8_t *p = buf + SOFTDEV_TAP_HDR_SIZE;
    bool in_slot = strstr(name, "shm") != NULL;
    uint16_t flags = strstr(name, "replay") ? SOFTDEV_TAP_FLAG_REPLAY : 0;

    if (len < SOFTDEV_TAP_HDR_SIZE) {
        FAIL("short");
    }
    if (softdev_tap_decode_header(buf, MAXP, &h, err) < 0) {
        return -1;
    }
    if (len != SOFTDEV_TAP_HDR_SIZE + h.length) {
        FAIL("length does not match the header");
    }
    if (h.flags != flags) {
        FAIL("header flags differ from the canonical message");
    }
    switch (h.type) {
    case SOFTDEV_TAP_HELLO:
    case SOFTDEV_TAP_HELLO_REPLY:
        if (softdev_tap_decode_hello(&h, p, h.type == SOFTDEV_TAP_HELLO_REPLY,
                                     &hello, &he, err) < 0) {
            return -1;
        }
        want = h.type == SOFTDEV_TAP_HELLO ? hello : hello_reply;
        if (strstr(name, "default")) {
            want.max_inflight = hello.max_inflight;
        }
        if (memcmp(&he, &want, sizeof(he))) {
            FAIL("fields differ from the canonical hello");
        }
        return 0;
    case SOFTDEV_TAP_SHM_SETUP:
        if (softdev_tap_decode_shm(&h, p, &hello_reply, &sh, err) < 0) {
            return -1;
        }
        if (memcmp(&sh, &shm, sizeof(sh))) {
            FAIL("fields differ from the canonical shm_setup");
        }
        return 0;
    case SOFTDEV_TAP_REQUEST:
    case SOFTDEV_TAP_LOWER_REQUEST:
        if (softdev_tap_decode_request(&h, p, SIZE, hello.max_data,
                                       in_slot ? shm.slots : 0, &rq,
                                       err) < 0) {
            return -1;
        }
        if (memcmp(&rq, strstr(name, "write") ?
                   (in_slot ? &write_req_shm : &write_req) :
                   (in_slot ? &read_req_shm : &read_req), sizeof(rq))) {
            FAIL("fields differ from the canonical request");
        }
        if (h.length > SOFTDEV_TAP_REQUEST_SIZE &&
            memcmp(p + SOFTDEV_TAP_REQUEST_SIZE, DATA, 8)) {
            FAIL("data differs from the canonical request");
        }
        return 0;
    default:
        if (softdev_tap_decode_reply(&h, p, answered(name, in_slot), true,
                                     in_slot, &rp, err) < 0) {
            return -1;
        }
        if (h.length > (h.type == SOFTDEV_TAP_REPLY ?
                        SOFTDEV_TAP_REPLY_SIZE :
                        SOFTDEV_TAP_LOWER_REPLY_SIZE) &&
            memcmp(buf + len - rp.bytes, DATA, 8)) {
            FAIL("data differs from the canonical reply");
        }
        return 0;
    }
}

static void do_check(void)
{
    char *line = NULL;
    size_t cap = 0;

    while (getline(&line, &cap, stdin) > 0) {
        char *name = strtok(line, " \n");
        char *hex = strtok(NULL, " \n");
        const char *err = NULL;
        size_t len, i;

        if (!name || !hex) {
            continue;
        }
        len = strlen(hex) / 2;
        if (len > sizeof(buf)) {
            printf("%s ERR too long\n", name);
            continue;
        }
        for (i = 0; i < len; i++) {
            sscanf(hex + 2 * i, "%2hhx", &buf[i]);
        }
        if (check(name, len, &err) < 0) {
            printf("%s ERR %s\n", name, err);
        } else {
            printf("%s OK\n", name);
        }
    }
    free(line);
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "emit")) {
        do_emit();
    } else if (argc == 2 && !strcmp(argv[1], "check")) {
        do_check();
    } else {
        fprintf(stderr, "usage: tap-vectors emit|check\n");
        return 2;
    }
    return 0;
}
