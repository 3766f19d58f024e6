/*
 * tap-vectors: cross-language checks of the tap wire format.  'emit'
 * prints canonical messages encoded by libsoftdev as "NAME HEX" lines;
 * 'check' reads such lines (from the Python package) and decodes each with
 * libsoftdev, printing "NAME OK" or "NAME ERR message".
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "softdev/tap-protocol.h"

#define DATA "ABCDEFGH"
#define MAXP (SOFTDEV_TAP_MIN_DATA + SOFTDEV_TAP_REPLY_SIZE)

static uint8_t buf[SOFTDEV_TAP_HDR_SIZE + MAXP];

/* The canonical messages, both sides must agree on */
static const SoftdevTapHello hello = {
    .version = 1, .device_class = SOFTDEV_TAP_CLASS_BLOCK,
    .features = SOFTDEV_TAP_F_FLUSH | SOFTDEV_TAP_F_LOWER,
    .size = 1ull << 30, .max_data = 1u << 20,
};
static const SoftdevTapRequest write_req = {
    SOFTDEV_TAP_OP_WRITE, SOFTDEV_TAP_REQ_FUA, 4096, 8
};
static const SoftdevTapRequest read_req = { SOFTDEV_TAP_OP_READ, 0, 512, 8 };

static void emit(const char *name, size_t len)
{
    size_t i;

    printf("%s ", name);
    for (i = 0; i < len; i++) {
        printf("%02x", buf[i]);
    }
    printf("\n");
}

static void do_emit(void)
{
    SoftdevTapReply rep;
    size_t n;

    emit("hello", softdev_tap_encode_hello(buf, false, &hello));
    emit("hello_reply", softdev_tap_encode_hello(buf, true, &hello));
    n = softdev_tap_encode_request(buf, SOFTDEV_TAP_REQUEST, 7, &write_req);
    memcpy(buf + n, DATA, 8);
    emit("request_write", n + 8);
    emit("request_read",
         softdev_tap_encode_request(buf, SOFTDEV_TAP_REQUEST, 8, &read_req));
    rep = (SoftdevTapReply){ 0, SOFTDEV_TAP_COMPLETE, 0, 8 };
    n = softdev_tap_encode_reply(buf, SOFTDEV_TAP_REPLY, 8, &rep);
    memcpy(buf + n, DATA, 8);
    emit("reply_read", n + 8);
    rep = (SoftdevTapReply){ 0, SOFTDEV_TAP_FORWARD, 8192, 8 };
    n = softdev_tap_encode_reply(buf, SOFTDEV_TAP_REPLY, 7, &rep);
    memcpy(buf + n, DATA, 8);
    emit("reply_forward_write", n + 8);
    rep = (SoftdevTapReply){ -5, SOFTDEV_TAP_COMPLETE, 0, 0 };
    emit("reply_error",
         softdev_tap_encode_reply(buf, SOFTDEV_TAP_REPLY, 7, &rep));
    emit("lower_request_read", softdev_tap_encode_request(
         buf, SOFTDEV_TAP_LOWER_REQUEST, 1, &read_req));
    rep = (SoftdevTapReply){ 0, 0, 0, 8 };
    n = softdev_tap_encode_reply(buf, SOFTDEV_TAP_LOWER_REPLY, 1, &rep);
    memcpy(buf + n, DATA, 8);
    emit("lower_reply_read", n + 8);
}

/* Decode one message of the canonical set by its name */
static int check(const char *name, size_t len, const char **err)
{
    SoftdevTapHeader h;
    SoftdevTapHello he;
    SoftdevTapRequest rq;
    SoftdevTapReply rp;
    const uint8_t *p = buf + SOFTDEV_TAP_HDR_SIZE;
    bool reply_to_write = strstr(name, "write") && strstr(name, "reply");

    if (len < SOFTDEV_TAP_HDR_SIZE ||
        softdev_tap_decode_header(buf, MAXP, &h, err) < 0) {
        *err = len < SOFTDEV_TAP_HDR_SIZE ? "short" : *err;
        return -1;
    }
    if (len != SOFTDEV_TAP_HDR_SIZE + h.length) {
        *err = "length does not match the header";
        return -1;
    }
    switch (h.type) {
    case SOFTDEV_TAP_HELLO:
    case SOFTDEV_TAP_HELLO_REPLY:
        if (softdev_tap_decode_hello(&h, p, h.type == SOFTDEV_TAP_HELLO_REPLY,
                                     hello.features, hello.max_data, &he,
                                     err) < 0) {
            return -1;
        }
        if (memcmp(&he, &hello, sizeof(he))) {
            *err = "fields differ from the canonical hello";
            return -1;
        }
        return 0;
    case SOFTDEV_TAP_REQUEST:
    case SOFTDEV_TAP_LOWER_REQUEST:
        if (softdev_tap_decode_request(&h, p, 1ull << 30, hello.max_data,
                                       &rq, err) < 0) {
            return -1;
        }
        if (memcmp(&rq, strstr(name, "write") ? &write_req : &read_req,
                   sizeof(rq))) {
            *err = "fields differ from the canonical request";
            return -1;
        }
        return 0;
    default:
        return softdev_tap_decode_reply(&h, p,
                                        reply_to_write ? &write_req :
                                        strstr(name, "error") ? &write_req :
                                        &read_req, true, &rp, err);
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
