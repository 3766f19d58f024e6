/*
 * libFuzzer target, client side: the input is what a device sends to
 * QEMU, decoded as QEMU's softdev-tap driver does: HELLO_REPLY against
 * the HELLO it sent, then REPLYs to its outstanding REQUESTs (with or
 * without shared memory, with or without a node below) and
 * LOWER_REQUESTs, until the first message that breaks a rule.  Data parts
 * are copied where QEMU would put them, so a decoder that lets a wrong
 * length through shows up as a buffer overflow.
 *
 * Input: one option byte (bit 0: no node below; bit 1: offer SHM; bits
 * 2-4: max_data 64 KiB << (n % 5)), then the device's byte stream.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <stdlib.h>
#include <string.h>

#include "libsoftdev/protocol/tap-protocol.h"

#define NREQ        16
#define LOWER_SIZE  (1ull << 30)
#define MAX_SLOT    (1u << 20)      /* the largest max_data offered */

static uint8_t *slot_mem;

typedef struct Outstanding {
    bool busy;
    uint64_t handle;
    SoftdevTapRequest req;
} Outstanding;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const SoftdevTapRequest kinds[] = {
        { .op = SOFTDEV_TAP_OP_READ, .offset = 512, .bytes = 8 },
        { .op = SOFTDEV_TAP_OP_WRITE, .req_flags = SOFTDEV_TAP_REQ_FUA,
          .bytes = 8 },
        { .op = SOFTDEV_TAP_OP_READ, .offset = LOWER_SIZE - 65536,
          .bytes = 65536 },
        { .op = SOFTDEV_TAP_OP_WRITE, .offset = 4096, .bytes = 65536 },
        { .op = SOFTDEV_TAP_OP_FLUSH },
        { .op = SOFTDEV_TAP_OP_DISCARD, .bytes = 1u << 31 },
        { .op = SOFTDEV_TAP_OP_WRITE_ZEROES,
          .req_flags = SOFTDEV_TAP_REQ_MAY_UNMAP, .offset = 8192,
          .bytes = 100 },
    };
    SoftdevTapHello hello = {
        .version = SOFTDEV_TAP_VERSION,
        .device_class = SOFTDEV_TAP_CLASS_BLOCK,
        .features = SOFTDEV_TAP_F_ALL,
        .size = LOWER_SIZE,
        .max_inflight = NREQ,
    }, agreed;
    Outstanding out[NREQ];
    uint64_t lower_handles[NREQ];
    int nlower = 0;
    uint8_t *dest, *slots = NULL;
    const uint8_t *p;
    const char *err;
    SoftdevTapHeader h;
    SoftdevTapShm shm;
    uint8_t shm_msg[SOFTDEV_TAP_HDR_SIZE + SOFTDEV_TAP_SHM_SETUP_SIZE];
    bool has_lower, use_shm, use_ring;
    size_t pos = 1;
    int i;

    if (size < 1) {
        return 0;
    }
    has_lower = !(data[0] & 1);
    hello.max_data = SOFTDEV_TAP_MIN_DATA << ((data[0] >> 2) & 7) % 5;
    if (!has_lower) {
        hello.features &= ~SOFTDEV_TAP_F_LOWER;
        hello.size = 0;
    }
    if (!(data[0] & 2)) {
        hello.features &= ~(SOFTDEV_TAP_F_SHM | SOFTDEV_TAP_F_RING);
    }

    /* HELLO_REPLY */
    if (size - pos < SOFTDEV_TAP_HDR_SIZE ||
        softdev_tap_decode_header(data + pos, SOFTDEV_TAP_HANDSHAKE_MAX, &h,
                                  &err) < 0 ||
        size - pos - SOFTDEV_TAP_HDR_SIZE < h.length ||
        softdev_tap_decode_hello(&h, data + pos + SOFTDEV_TAP_HDR_SIZE,
                                 true, &hello, &agreed, &err) < 0) {
        return 0;
    }
    pos += SOFTDEV_TAP_HDR_SIZE + h.length;
    use_shm = agreed.features & SOFTDEV_TAP_F_SHM;
    use_ring = use_shm && (agreed.features & SOFTDEV_TAP_F_RING);
    if (use_shm) {
        /* What QEMU sends must pass the device's check */
        shm = (SoftdevTapShm){
            agreed.max_inflight, agreed.max_data,
            use_ring ? softdev_tap_ring_entries(agreed.max_inflight) : 0,
        };
        softdev_tap_encode_shm(shm_msg, &shm);
        if (softdev_tap_decode_header(shm_msg, SOFTDEV_TAP_HANDSHAKE_MAX,
                                      &h, &err) < 0 ||
            softdev_tap_decode_shm(&h, shm_msg + SOFTDEV_TAP_HDR_SIZE,
                                   &agreed, &shm, &err) < 0) {
            abort();
        }
        if (!slot_mem) {
            /* once, for the largest geometry: NREQ slots of 1 MiB */
            slot_mem = calloc(NREQ, MAX_SLOT);
            if (!slot_mem) {
                return 0;
            }
        }
        slots = slot_mem;
    }

    /* Requests outstanding at the device, as QEMU would have sent them */
    for (i = 0; i < NREQ; i++) {
        out[i].busy = (uint32_t)i < agreed.max_inflight;
        out[i].handle = 100 + i;
        out[i].req = kinds[i % (sizeof(kinds) / sizeof(kinds[0]))];
        out[i].req.slot = use_shm ? i : 0;
        if (out[i].req.bytes > agreed.max_data &&
            (out[i].req.op == SOFTDEV_TAP_OP_READ ||
             out[i].req.op == SOFTDEV_TAP_OP_WRITE)) {
            out[i].req.bytes = agreed.max_data;
        }
    }

    while (size - pos >= SOFTDEV_TAP_HDR_SIZE) {
        SoftdevTapRequest lreq;
        SoftdevTapReply rep;

        if (softdev_tap_decode_header(data + pos, agreed.max_data +
                                      SOFTDEV_TAP_REQUEST_SIZE, &h,
                                      &err) < 0 ||
            size - pos - SOFTDEV_TAP_HDR_SIZE < h.length) {
            break;
        }
        p = data + pos + SOFTDEV_TAP_HDR_SIZE;
        if (use_ring && h.type == SOFTDEV_TAP_REPLY) {
            /* With rings, a REPLY is a ring entry: decode it as QEMU does */
            uint8_t entry[SOFTDEV_TAP_RING_MSG_SIZE];

            if (size - pos < sizeof(entry)) {
                break;
            }
            memcpy(entry, data + pos, sizeof(entry));
            if (softdev_tap_decode_ring_entry(entry, SOFTDEV_TAP_REPLY, &h,
                                              &err) < 0) {
                break;
            }
        }
        pos += SOFTDEV_TAP_HDR_SIZE + h.length;
        if (h.type == SOFTDEV_TAP_REPLY) {
            for (i = 0; i < NREQ && !(out[i].busy &&
                                      out[i].handle == h.handle); i++) {
                /* search */
            }
            if (i == NREQ ||
                softdev_tap_decode_reply(&h, p, &out[i].req, has_lower,
                                         use_shm, &rep, &err) < 0) {
                break;
            }
            if (rep.action == SOFTDEV_TAP_FORWARD &&
                (rep.offset > hello.size ||
                 out[i].req.bytes > hello.size - rep.offset)) {
                break;          /* forwarded beyond the node below */
            }
            if (rep.bytes) {
                /* the data: in the slot, or after the fixed part */
                dest = malloc(rep.bytes);
                if (!dest) {
                    break;
                }
                memcpy(dest, use_shm ? slots + (size_t)out[i].req.slot *
                                       agreed.max_data :
                                       p + SOFTDEV_TAP_REPLY_SIZE,
                       rep.bytes);
                free(dest);
            }
            out[i].busy = false;
        } else if (h.type == SOFTDEV_TAP_LOWER_REQUEST) {
            int j;
            if (!(agreed.features & SOFTDEV_TAP_F_LOWER) ||
                softdev_tap_decode_request(&h, p, hello.size,
                                           agreed.max_data, 0, &lreq,
                                           &err) < 0) {
                break;
            }
            for (j = 0; j < nlower && lower_handles[j] != h.handle; j++) {
                /* search */
            }
            if (j < nlower) {
                break;          /* duplicate outstanding handle */
            }
            if (lreq.op == SOFTDEV_TAP_OP_WRITE) {
                dest = malloc(lreq.bytes);
                if (!dest) {
                    break;
                }
                memcpy(dest, p + SOFTDEV_TAP_REQUEST_SIZE, lreq.bytes);
                free(dest);
            }
            /* answered at once; the oldest handle is forgotten */
            if (nlower == NREQ) {
                memmove(lower_handles, lower_handles + 1,
                        sizeof(lower_handles[0]) * (NREQ - 1));
                nlower--;
            }
            lower_handles[nlower++] = h.handle;
        } else {
            if (h.type == SOFTDEV_TAP_SHM_SETUP) {
                /* never from a device; the decoder must cope anyway */
                softdev_tap_decode_shm(&h, p, &agreed, &shm, &err);
            }
            break;              /* not a device's message */
        }
    }
    return 0;
}
