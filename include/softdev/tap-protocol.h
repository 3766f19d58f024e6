/*
 * softdev tap protocol, version 1 (docs/specs/softdev-tap.rst): wire
 * constants, message layouts and validating decoders shared by QEMU's
 * softdev-tap driver and libsoftdev.  Plain C99, no QEMU headers, so the
 * decoders can be fuzzed and unit-tested on their own.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SOFTDEV_TAP_PROTOCOL_H
#define SOFTDEV_TAP_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SOFTDEV_TAP_MAGIC           0x50544453u     /* "SDTP" */
#define SOFTDEV_TAP_VERSION         1
#define SOFTDEV_TAP_HDR_SIZE        24
#define SOFTDEV_TAP_HANDSHAKE_MAX   4096            /* payload before HELLO */
#define SOFTDEV_TAP_MIN_DATA        65536           /* smallest max_data */
#define SOFTDEV_TAP_MAX_DATA        (16u << 20)     /* largest max_data */
#define SOFTDEV_TAP_MAX_INFLIGHT    1024

/* Header flags */
#define SOFTDEV_TAP_FLAG_REPLAY     (1u << 0)       /* REQUEST sent again */

enum SoftdevTapType {
    SOFTDEV_TAP_HELLO           = 1,
    SOFTDEV_TAP_HELLO_REPLY     = 2,
    SOFTDEV_TAP_SHM_SETUP       = 3,
    SOFTDEV_TAP_REQUEST         = 16,
    SOFTDEV_TAP_REPLY           = 17,
    SOFTDEV_TAP_LOWER_REQUEST   = 32,
    SOFTDEV_TAP_LOWER_REPLY     = 33,
};

/* Fixed payload sizes */
#define SOFTDEV_TAP_HELLO_SIZE          40
#define SOFTDEV_TAP_HELLO_REPLY_SIZE    32
#define SOFTDEV_TAP_REQUEST_SIZE        24
#define SOFTDEV_TAP_REPLY_SIZE          24
#define SOFTDEV_TAP_LOWER_REPLY_SIZE    16
#define SOFTDEV_TAP_SHM_SETUP_SIZE      16

enum SoftdevTapClass {
    SOFTDEV_TAP_CLASS_BLOCK     = 1,
    SOFTDEV_TAP_CLASS_NET       = 2,    /* reserved */
    SOFTDEV_TAP_CLASS_USB       = 3,    /* reserved */
};

enum SoftdevTapOp {
    SOFTDEV_TAP_OP_READ         = 0,
    SOFTDEV_TAP_OP_WRITE        = 1,
    SOFTDEV_TAP_OP_WRITE_ZEROES = 2,
    SOFTDEV_TAP_OP_DISCARD      = 3,
    SOFTDEV_TAP_OP_FLUSH        = 4,
    SOFTDEV_TAP_OP__MAX,
};

#define SOFTDEV_TAP_REQ_FUA         (1u << 0)
#define SOFTDEV_TAP_REQ_MAY_UNMAP   (1u << 1)
#define SOFTDEV_TAP_REQ_ALL         (SOFTDEV_TAP_REQ_FUA | \
                                     SOFTDEV_TAP_REQ_MAY_UNMAP)

#define SOFTDEV_TAP_F_FLUSH         (1ull << 0)
#define SOFTDEV_TAP_F_DISCARD       (1ull << 1)
#define SOFTDEV_TAP_F_ZEROES        (1ull << 2)
#define SOFTDEV_TAP_F_FUA           (1ull << 3)
#define SOFTDEV_TAP_F_LOWER         (1ull << 4)
#define SOFTDEV_TAP_F_SHM           (1ull << 5)
#define SOFTDEV_TAP_F_ALL           ((1ull << 6) - 1)   /* known bits */

enum SoftdevTapAction {
    SOFTDEV_TAP_COMPLETE        = 0,
    SOFTDEV_TAP_FORWARD         = 1,
};

/* Decoded messages, in host byte order */
typedef struct SoftdevTapHeader {
    uint16_t type;
    uint16_t flags;
    uint64_t handle;
    uint32_t length;
} SoftdevTapHeader;

typedef struct SoftdevTapHello {
    uint32_t version;
    uint32_t device_class;
    uint64_t features;
    uint64_t size;          /* HELLO: lower_size; HELLO_REPLY: size */
    uint32_t max_data;
    uint32_t max_inflight;  /* HELLO: client's; HELLO_REPLY: 0 or lower */
} SoftdevTapHello;

typedef struct SoftdevTapShm {
    uint32_t slots;         /* = negotiated max_inflight */
    uint32_t slot_size;     /* = negotiated max_data */
} SoftdevTapShm;

typedef struct SoftdevTapRequest {
    uint16_t op;
    uint16_t req_flags;
    uint32_t slot;          /* shared-memory slot; 0 without SHM */
    uint64_t offset;
    uint64_t bytes;
} SoftdevTapRequest;

typedef struct SoftdevTapReply {
    int32_t result;
    uint32_t action;        /* REPLY only */
    uint64_t offset;        /* REPLY only */
    uint64_t bytes;         /* data that follows (or lies in the slot) */
} SoftdevTapReply;

/*
 * Each decoder checks one received part against every rule of the spec
 * that it can see, and returns 0, or -1 with a static message in *err.
 * @buf holds exactly the bytes of that part.
 */

/*
 * @max_payload: SOFTDEV_TAP_HANDSHAKE_MAX before the handshake, else
 * max_data plus the largest fixed part.
 */
int softdev_tap_decode_header(const uint8_t buf[SOFTDEV_TAP_HDR_SIZE],
                              uint32_t max_payload, SoftdevTapHeader *hdr,
                              const char **err);

/*
 * HELLO (@reply false) or HELLO_REPLY (@reply true); for a reply,
 * @client is the HELLO the client sent.  Offered feature bits unknown to
 * the receiver are allowed; a HELLO_REPLY may accept only offered bits.
 * A decoded HELLO_REPLY has max_inflight resolved (never 0).
 */
int softdev_tap_decode_hello(const SoftdevTapHeader *hdr, const uint8_t *buf,
                             bool reply, const SoftdevTapHello *client,
                             SoftdevTapHello *hello, const char **err);

/* SHM_SETUP, checked against the negotiated HELLO_REPLY @agreed */
int softdev_tap_decode_shm(const SoftdevTapHeader *hdr, const uint8_t *buf,
                           const SoftdevTapHello *agreed, SoftdevTapShm *shm,
                           const char **err);

/*
 * REQUEST or LOWER_REQUEST: the fixed part; the data length is checked
 * against hdr->length too.  @size: size of the addressed device.
 * @slots: the number of shared-memory slots if SHM was negotiated, else
 * 0; with SHM a REQUEST's data lies in its slot, not in the message
 * (LOWER_REQUESTs always carry their data).
 */
int softdev_tap_decode_request(const SoftdevTapHeader *hdr,
                               const uint8_t *buf, uint64_t size,
                               uint32_t max_data, uint32_t slots,
                               SoftdevTapRequest *req, const char **err);

/*
 * REPLY to @req (@has_lower: a node below exists, so FORWARD is legal) or
 * LOWER_REPLY to @req (@has_lower ignored).  @shm: SHM was negotiated, so
 * a REPLY's data lies in the request's slot (a LOWER_REPLY's never does).
 */
int softdev_tap_decode_reply(const SoftdevTapHeader *hdr, const uint8_t *buf,
                             const SoftdevTapRequest *req, bool has_lower,
                             bool shm, SoftdevTapReply *reply,
                             const char **err);

/*
 * Encoders: write the header and fixed part into @buf and return the
 * number of bytes written (the data, if any, follows).
 */
size_t softdev_tap_encode_header(uint8_t *buf, uint16_t type,
                                 uint64_t handle, uint32_t length);
size_t softdev_tap_encode_hello(uint8_t *buf, bool reply,
                                const SoftdevTapHello *hello);
size_t softdev_tap_encode_shm(uint8_t *buf, const SoftdevTapShm *shm);
/* @flags: SOFTDEV_TAP_FLAG_*; @shm: the data goes in the slot */
size_t softdev_tap_encode_request(uint8_t *buf, uint16_t type,
                                  uint64_t handle, uint16_t flags, bool shm,
                                  const SoftdevTapRequest *req);
size_t softdev_tap_encode_reply(uint8_t *buf, uint16_t type, uint64_t handle,
                                bool shm, const SoftdevTapReply *reply);

#endif /* SOFTDEV_TAP_PROTOCOL_H */
