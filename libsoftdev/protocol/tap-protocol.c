/*
 * softdev tap protocol v1: validating decoders and encoders for the wire
 * format of docs/specs/softdev-tap.rst.  No I/O and no allocation: every
 * function works on caller buffers, so a fuzzer can drive the decoders.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <string.h>

#include "libsoftdev/protocol/tap-protocol.h"

static uint16_t ld16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t ld64(const uint8_t *p)
{
    return (uint64_t)ld32(p) | (uint64_t)ld32(p + 4) << 32;
}

static void st16(uint8_t *p, uint16_t v)
{
    p[0] = v;
    p[1] = v >> 8;
}

static void st32(uint8_t *p, uint32_t v)
{
    st16(p, v);
    st16(p + 2, v >> 16);
}

static void st64(uint8_t *p, uint64_t v)
{
    st32(p, v);
    st32(p + 4, v >> 32);
}

#define FAIL(msg) do { *err = (msg); return -1; } while (0)

/* Fixed payload size of @type, -1 if unknown */
static int fixed_size(uint16_t type)
{
    switch (type) {
    case SOFTDEV_TAP_KICK:
        return 0;
    case SOFTDEV_TAP_HELLO:
        return SOFTDEV_TAP_HELLO_SIZE;
    case SOFTDEV_TAP_HELLO_REPLY:
        return SOFTDEV_TAP_HELLO_REPLY_SIZE;
    case SOFTDEV_TAP_SHM_SETUP:
        return SOFTDEV_TAP_SHM_SETUP_SIZE;
    case SOFTDEV_TAP_REQUEST:
    case SOFTDEV_TAP_LOWER_REQUEST:
        return SOFTDEV_TAP_REQUEST_SIZE;
    case SOFTDEV_TAP_REPLY:
        return SOFTDEV_TAP_REPLY_SIZE;
    case SOFTDEV_TAP_LOWER_REPLY:
        return SOFTDEV_TAP_LOWER_REPLY_SIZE;
    default:
        return -1;
    }
}

int softdev_tap_decode_header(const uint8_t buf[SOFTDEV_TAP_HDR_SIZE],
                              uint32_t max_payload, SoftdevTapHeader *hdr,
                              const char **err)
{
    int fixed;

    if (ld32(buf) != SOFTDEV_TAP_MAGIC) {
        FAIL("bad magic");
    }
    hdr->type = ld16(buf + 4);
    hdr->flags = ld16(buf + 6);
    hdr->handle = ld64(buf + 8);
    hdr->length = ld32(buf + 16);
    fixed = fixed_size(hdr->type);
    if (fixed < 0) {
        FAIL("unknown message type");
    }
    if (ld32(buf + 20) ||
        (hdr->flags & ~(hdr->type == SOFTDEV_TAP_REQUEST ?
                        SOFTDEV_TAP_FLAG_REPLAY : 0))) {
        FAIL("reserved header bits set");
    }
    if (hdr->length < (uint32_t)fixed) {
        FAIL("message shorter than its fixed part");
    }
    if (hdr->type == SOFTDEV_TAP_KICK && (hdr->length || hdr->handle)) {
        FAIL("malformed KICK");
    }
    if (hdr->length > max_payload) {
        FAIL("message longer than the negotiated maximum");
    }
    return 0;
}

int softdev_tap_decode_hello(const SoftdevTapHeader *hdr, const uint8_t *buf,
                             bool reply, const SoftdevTapHello *client,
                             SoftdevTapHello *hello, const char **err)
{
    uint16_t want = reply ? SOFTDEV_TAP_HELLO_REPLY : SOFTDEV_TAP_HELLO;
    uint32_t size = reply ? SOFTDEV_TAP_HELLO_REPLY_SIZE :
                            SOFTDEV_TAP_HELLO_SIZE;

    if (hdr->type != want) {
        FAIL("expected a handshake message");
    }
    if (hdr->length != size || hdr->handle) {
        FAIL("malformed handshake message");
    }
    hello->version = ld32(buf);
    hello->device_class = ld32(buf + 4);
    hello->features = ld64(buf + 8);
    hello->size = ld64(buf + 16);
    hello->max_data = ld32(buf + 24);
    hello->max_inflight = ld32(buf + 28);
    if (!reply && ld64(buf + 32)) {
        FAIL("reserved handshake fields set");
    }
    if (hello->version != SOFTDEV_TAP_VERSION) {
        FAIL("unsupported protocol version");
    }
    if (hello->device_class != SOFTDEV_TAP_CLASS_BLOCK) {
        FAIL("unsupported device class");
    }
    if (hello->max_data < SOFTDEV_TAP_MIN_DATA ||
        hello->max_data > SOFTDEV_TAP_MAX_DATA) {
        FAIL("max_data out of range (64 KiB to 16 MiB)");
    }
    if (hello->max_inflight > SOFTDEV_TAP_MAX_INFLIGHT ||
        (!reply && !hello->max_inflight)) {
        FAIL("max_inflight out of range");
    }
    if (reply) {
        if (hello->device_class != client->device_class) {
            FAIL("device class differs from the client's");
        }
        if (hello->features & ~client->features) {
            FAIL("device accepted a feature that was not offered");
        }
        if (hello->max_data > client->max_data) {
            FAIL("device raised max_data");
        }
        if (hello->max_inflight > client->max_inflight) {
            FAIL("device raised max_inflight");
        }
        if (!hello->max_inflight) {
            hello->max_inflight = client->max_inflight;
        }
    }
    return 0;
}

int softdev_tap_decode_shm(const SoftdevTapHeader *hdr, const uint8_t *buf,
                           const SoftdevTapHello *agreed, SoftdevTapShm *shm,
                           const char **err)
{
    if (hdr->type != SOFTDEV_TAP_SHM_SETUP) {
        FAIL("expected SHM_SETUP");
    }
    if (hdr->length != SOFTDEV_TAP_SHM_SETUP_SIZE || hdr->handle) {
        FAIL("malformed SHM_SETUP");
    }
    shm->slots = ld32(buf);
    shm->slot_size = ld32(buf + 4);
    shm->ring_entries = ld32(buf + 8);
    if (ld32(buf + 12)) {
        FAIL("reserved SHM_SETUP field set");
    }
    if (!(agreed->features & SOFTDEV_TAP_F_SHM)) {
        FAIL("SHM_SETUP without SOFTDEV_TAP_F_SHM");
    }
    if (shm->slots != agreed->max_inflight ||
        shm->slot_size != agreed->max_data) {
        FAIL("SHM_SETUP geometry differs from the handshake");
    }
    if (!(agreed->features & SOFTDEV_TAP_F_RING) != !shm->ring_entries) {
        FAIL(shm->ring_entries ? "reserved SHM_SETUP field set" :
             "SHM_SETUP without rings for SOFTDEV_TAP_F_RING");
    }
    if (shm->ring_entries &&
        (shm->ring_entries & (shm->ring_entries - 1) ||
         shm->ring_entries < shm->slots ||
         shm->ring_entries > SOFTDEV_TAP_MAX_INFLIGHT)) {
        FAIL("ring_entries is not a power of two from slots to 1024");
    }
    return 0;
}

int softdev_tap_decode_ring_entry(const uint8_t *entry, uint16_t type,
                                  SoftdevTapHeader *hdr, const char **err)
{
    if (softdev_tap_decode_header(entry, SOFTDEV_TAP_REQUEST_SIZE, hdr,
                                  err) < 0) {
        return -1;
    }
    /* max_payload is the fixed part: the entry carries no data */
    if (hdr->type != type) {
        FAIL(type == SOFTDEV_TAP_REQUEST ? "ring entry is not a REQUEST" :
             "ring entry is not a REPLY");
    }
    return 0;
}

int64_t softdev_tap_ring_take(uint8_t *ctl, uint32_t entries,
                              enum SoftdevTapRing ring, uint32_t *cons,
                              SoftdevTapRingFn *fn, void *opaque,
                              const char **err)
{
    bool requests = ring == SOFTDEV_TAP_RING_REQUESTS;
    uint16_t type = requests ? SOFTDEV_TAP_REQUEST : SOFTDEV_TAP_REPLY;
    int64_t n = softdev_tap_ring_avail(ctl, requests ?
                                       SOFTDEV_TAP_RING_REQ_PROD :
                                       SOFTDEV_TAP_RING_REP_PROD,
                                       *cons, entries);
    int64_t i;

    if (n < 0) {
        FAIL(requests ? "request ring index out of range" :
             "reply ring index out of range");
    }
    for (i = 0; i < n; i++) {
        uint8_t entry[SOFTDEV_TAP_RING_MSG_SIZE];
        SoftdevTapHeader hdr;
        const char *msg;

        memcpy(entry, softdev_tap_ring_entry(ctl, entries, ring, *cons),
               sizeof(entry));
        (*cons)++;
        if (softdev_tap_decode_ring_entry(entry, type, &hdr, err) < 0) {
            return -1;
        }
        msg = fn(opaque, &hdr, entry + SOFTDEV_TAP_HDR_SIZE);
        if (msg) {
            FAIL(msg);
        }
    }
    return n;
}

int softdev_tap_decode_request(const SoftdevTapHeader *hdr,
                               const uint8_t *buf, uint64_t size,
                               uint32_t max_data, uint32_t slots,
                               SoftdevTapRequest *req, const char **err)
{
    bool in_slot = slots && hdr->type == SOFTDEV_TAP_REQUEST;
    uint64_t data;

    if (hdr->type != SOFTDEV_TAP_REQUEST &&
        hdr->type != SOFTDEV_TAP_LOWER_REQUEST) {
        FAIL("expected a request");
    }
    req->op = ld16(buf);
    req->req_flags = ld16(buf + 2);
    req->slot = ld32(buf + 4);
    req->offset = ld64(buf + 8);
    req->bytes = ld64(buf + 16);
    data = hdr->length - SOFTDEV_TAP_REQUEST_SIZE;
    if (in_slot ? req->slot >= slots : req->slot != 0) {
        FAIL(in_slot ? "request slot out of range" :
             "reserved request field set");
    }
    if (req->op >= SOFTDEV_TAP_OP__MAX) {
        FAIL("unknown request op");
    }
    if (req->req_flags & ~SOFTDEV_TAP_REQ_ALL) {
        FAIL("unknown request flags");
    }
    if ((req->req_flags & SOFTDEV_TAP_REQ_BELOW) &&
        (req->op != SOFTDEV_TAP_OP_READ || !in_slot)) {
        FAIL("BELOW only on a READ whose data lies in its slot");
    }
    switch (req->op) {
    case SOFTDEV_TAP_OP_READ:
    case SOFTDEV_TAP_OP_WRITE:
        if (req->bytes < 1 || req->bytes > max_data) {
            FAIL("read/write length out of range");
        }
        break;
    case SOFTDEV_TAP_OP_FLUSH:
        if (req->offset || req->bytes || req->req_flags) {
            FAIL("flush with offset, length or flags");
        }
        break;
    default:
        if (req->bytes > (1ull << 31)) {
            FAIL("request length out of range");
        }
        break;
    }
    if (req->offset > size || req->bytes > size - req->offset) {
        FAIL("request beyond the end of the device");
    }
    if (data != (req->op == SOFTDEV_TAP_OP_WRITE && !in_slot ?
                 req->bytes : 0)) {
        FAIL("request data does not match its length");
    }
    return 0;
}

int softdev_tap_decode_reply(const SoftdevTapHeader *hdr, const uint8_t *buf,
                             const SoftdevTapRequest *req, bool has_lower,
                             bool shm, SoftdevTapReply *reply,
                             const char **err)
{
    bool lower = hdr->type == SOFTDEV_TAP_LOWER_REPLY;
    bool in_slot = shm && !lower;
    uint32_t fixed = lower ? SOFTDEV_TAP_LOWER_REPLY_SIZE :
                             SOFTDEV_TAP_REPLY_SIZE;
    uint64_t want_data = 0;

    if (hdr->type != SOFTDEV_TAP_REPLY && !lower) {
        FAIL("expected a reply");
    }
    reply->result = (int32_t)ld32(buf);
    if (lower) {
        reply->action = SOFTDEV_TAP_COMPLETE;
        reply->offset = 0;
        reply->bytes = ld64(buf + 8);
        if (ld32(buf + 4)) {
            FAIL("reserved reply field set");
        }
    } else {
        reply->action = ld32(buf + 4);
        reply->offset = ld64(buf + 8);
        reply->bytes = ld64(buf + 16);
    }
    if (reply->result > 0 || reply->result < -4095) {
        FAIL("reply result is not 0 or -errno");
    }
    if (hdr->length - fixed != (in_slot ? 0 : reply->bytes)) {
        FAIL("reply data does not match its length");
    }
    switch (reply->action) {
    case SOFTDEV_TAP_COMPLETE:
        if (req->op == SOFTDEV_TAP_OP_READ && reply->result == 0) {
            want_data = req->bytes;
        }
        if (!lower && reply->offset) {
            FAIL("completion with an offset");
        }
        break;
    case SOFTDEV_TAP_FORWARD:
        if (!has_lower) {
            FAIL("forward without a node below");
        }
        if (reply->result) {
            FAIL("forward with a result");
        }
        if (req->op == SOFTDEV_TAP_OP_WRITE && reply->bytes) {
            want_data = req->bytes;
        }
        break;
    default:
        FAIL("unknown reply action");
    }
    if (reply->bytes != want_data) {
        FAIL("reply data does not match the request");
    }
    return 0;
}

size_t softdev_tap_encode_header(uint8_t *buf, uint16_t type,
                                 uint64_t handle, uint32_t length)
{
    st32(buf, SOFTDEV_TAP_MAGIC);
    st16(buf + 4, type);
    st16(buf + 6, 0);
    st64(buf + 8, handle);
    st32(buf + 16, length);
    st32(buf + 20, 0);
    return SOFTDEV_TAP_HDR_SIZE;
}

size_t softdev_tap_encode_hello(uint8_t *buf, bool reply,
                                const SoftdevTapHello *hello)
{
    uint32_t size = reply ? SOFTDEV_TAP_HELLO_REPLY_SIZE :
                            SOFTDEV_TAP_HELLO_SIZE;
    uint8_t *p = buf + softdev_tap_encode_header(
        buf, reply ? SOFTDEV_TAP_HELLO_REPLY : SOFTDEV_TAP_HELLO, 0, size);

    memset(p, 0, size);
    st32(p, hello->version);
    st32(p + 4, hello->device_class);
    st64(p + 8, hello->features);
    st64(p + 16, hello->size);
    st32(p + 24, hello->max_data);
    st32(p + 28, hello->max_inflight);
    return SOFTDEV_TAP_HDR_SIZE + size;
}

size_t softdev_tap_encode_shm(uint8_t *buf, const SoftdevTapShm *shm)
{
    uint8_t *p = buf + softdev_tap_encode_header(
        buf, SOFTDEV_TAP_SHM_SETUP, 0, SOFTDEV_TAP_SHM_SETUP_SIZE);

    st32(p, shm->slots);
    st32(p + 4, shm->slot_size);
    st32(p + 8, shm->ring_entries);
    st32(p + 12, 0);
    return SOFTDEV_TAP_HDR_SIZE + SOFTDEV_TAP_SHM_SETUP_SIZE;
}

size_t softdev_tap_encode_kick(uint8_t *buf)
{
    return softdev_tap_encode_header(buf, SOFTDEV_TAP_KICK, 0, 0);
}

size_t softdev_tap_encode_request(uint8_t *buf, uint16_t type,
                                  uint64_t handle, uint16_t flags, bool shm,
                                  const SoftdevTapRequest *req)
{
    bool in_slot = shm && type == SOFTDEV_TAP_REQUEST;
    uint64_t data = req->op == SOFTDEV_TAP_OP_WRITE && !in_slot ?
                    req->bytes : 0;
    uint8_t *p = buf + softdev_tap_encode_header(
        buf, type, handle, SOFTDEV_TAP_REQUEST_SIZE + data);

    st16(buf + 6, flags);
    st16(p, req->op);
    st16(p + 2, req->req_flags);
    st32(p + 4, in_slot ? req->slot : 0);
    st64(p + 8, req->offset);
    st64(p + 16, req->bytes);
    return SOFTDEV_TAP_HDR_SIZE + SOFTDEV_TAP_REQUEST_SIZE;
}

size_t softdev_tap_encode_reply(uint8_t *buf, uint16_t type, uint64_t handle,
                                bool shm, const SoftdevTapReply *reply)
{
    bool lower = type == SOFTDEV_TAP_LOWER_REPLY;
    uint32_t fixed = lower ? SOFTDEV_TAP_LOWER_REPLY_SIZE :
                             SOFTDEV_TAP_REPLY_SIZE;
    uint8_t *p = buf + softdev_tap_encode_header(
        buf, type, handle, fixed + (shm && !lower ? 0 : reply->bytes));

    st32(p, (uint32_t)reply->result);
    if (lower) {
        st32(p + 4, 0);
        st64(p + 8, reply->bytes);
    } else {
        st32(p + 4, reply->action);
        st64(p + 8, reply->offset);
        st64(p + 16, reply->bytes);
    }
    return SOFTDEV_TAP_HDR_SIZE + fixed;
}
