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
    SOFTDEV_TAP_KICK            = 4,    /* with SOFTDEV_TAP_F_RING */
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
#define SOFTDEV_TAP_REQ_BELOW       (1u << 2)   /* READ: slot holds below */
#define SOFTDEV_TAP_REQ_ALL         (SOFTDEV_TAP_REQ_FUA | \
                                     SOFTDEV_TAP_REQ_MAY_UNMAP | \
                                     SOFTDEV_TAP_REQ_BELOW)

#define SOFTDEV_TAP_F_FLUSH         (1ull << 0)
#define SOFTDEV_TAP_F_DISCARD       (1ull << 1)
#define SOFTDEV_TAP_F_ZEROES        (1ull << 2)
#define SOFTDEV_TAP_F_FUA           (1ull << 3)
#define SOFTDEV_TAP_F_LOWER         (1ull << 4)
#define SOFTDEV_TAP_F_SHM           (1ull << 5)
#define SOFTDEV_TAP_F_RING          (1ull << 6)
#define SOFTDEV_TAP_F_NO_WRITE_DATA (1ull << 7)
#define SOFTDEV_TAP_F_EARLY_READ    (1ull << 8)
#define SOFTDEV_TAP_F_EARLY_WRITE   (1ull << 9)
#define SOFTDEV_TAP_F_READ_BELOW    (1ull << 10)
#define SOFTDEV_TAP_F_ALL           ((1ull << 11) - 1)  /* known bits */

/*
 * Rings (SOFTDEV_TAP_F_RING) lie in the shared memory after the slots: a
 * control block, then the request ring and the reply ring of
 * ring_entries entries each.  An entry holds one REQUEST or REPLY message
 * without data (header and fixed part).  Control block words (32 bits):
 */
#define SOFTDEV_TAP_RING_CTL_SIZE   4096
#define SOFTDEV_TAP_RING_ENTRY      64
#define SOFTDEV_TAP_RING_MSG_SIZE   (SOFTDEV_TAP_HDR_SIZE + \
                                     SOFTDEV_TAP_REQUEST_SIZE)
#define SOFTDEV_TAP_RING_REQ_PROD   0       /* written by the client */
#define SOFTDEV_TAP_RING_REP_PROD   64      /* written by the device */
#define SOFTDEV_TAP_RING_DEV_IDLE   128     /* 1: the device wants a KICK */
#define SOFTDEV_TAP_RING_CLI_IDLE   192     /* 1: the client wants a KICK */

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
    uint32_t ring_entries;  /* 0 without SOFTDEV_TAP_F_RING */
} SoftdevTapShm;

/* Bytes of shared memory @shm describes */
static inline uint64_t softdev_tap_shm_size(const SoftdevTapShm *shm)
{
    uint64_t size = (uint64_t)shm->slots * shm->slot_size;

    if (shm->ring_entries) {
        size += SOFTDEV_TAP_RING_CTL_SIZE +
                2 * (uint64_t)shm->ring_entries * SOFTDEV_TAP_RING_ENTRY;
    }
    return size;
}

/* The smallest valid ring_entries for @slots: a power of two */
static inline uint32_t softdev_tap_ring_entries(uint32_t slots)
{
    uint32_t n = 1;

    while (n < slots) {
        n <<= 1;
    }
    return n;
}

/*
 * Ring helpers, for both peers.  @ctl is the control block; indices run
 * freely and wrap at 2^32; entry i of a ring is at (i % ring_entries).
 * The shared memory is written by the peer at any time: read an entry
 * once, into private memory, before decoding it.
 */
static inline uint32_t *softdev_tap_ring_word(uint8_t *ctl, unsigned off)
{
    return (uint32_t *)(void *)(ctl + off);
}

enum SoftdevTapRing {
    SOFTDEV_TAP_RING_REQUESTS   = 0,
    SOFTDEV_TAP_RING_REPLIES    = 1,
};

/* Entry @index of ring @ring (after the control block @ctl) */
static inline uint8_t *softdev_tap_ring_entry(uint8_t *ctl, uint32_t entries,
                                              enum SoftdevTapRing ring,
                                              uint32_t index)
{
    return ctl + SOFTDEV_TAP_RING_CTL_SIZE +
           ((size_t)ring * entries + (index & (entries - 1))) *
           SOFTDEV_TAP_RING_ENTRY;
}

/* Producer: make entries up to @prod visible at @prod_off (no fence) */
static inline void softdev_tap_ring_set_prod(uint8_t *ctl, unsigned prod_off,
                                             uint32_t prod)
{
    __atomic_store_n(softdev_tap_ring_word(ctl, prod_off), prod,
                     __ATOMIC_RELEASE);
}

/*
 * Producer, after softdev_tap_ring_set_prod() and before it waits for
 * anything itself: whether the consumer (its idle word @idle_off) must be
 * sent a KICK.  The fence pairs with the one in
 * softdev_tap_ring_may_sleep(): either the producer sees the idle flag or
 * the consumer sees the entries.  A producer that publishes several
 * entries in a row may ask once, after the last one.
 */
static inline bool softdev_tap_ring_need_kick(uint8_t *ctl, unsigned idle_off)
{
    uint32_t *idle = softdev_tap_ring_word(ctl, idle_off);

    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return __atomic_load_n(idle, __ATOMIC_RELAXED) &&
           __atomic_exchange_n(idle, 0, __ATOMIC_ACQ_REL);
}

/* Both of the above */
static inline bool softdev_tap_ring_publish(uint8_t *ctl, unsigned prod_off,
                                            uint32_t prod, unsigned idle_off)
{
    softdev_tap_ring_set_prod(ctl, prod_off, prod);
    return softdev_tap_ring_need_kick(ctl, idle_off);
}

/*
 * Consumer: entries waiting after @cons, or -1 if the producer index is
 * not within @entries of it (a broken peer).
 */
static inline int64_t softdev_tap_ring_avail(uint8_t *ctl, unsigned prod_off,
                                             uint32_t cons, uint32_t entries)
{
    uint32_t n = __atomic_load_n(softdev_tap_ring_word(ctl, prod_off),
                                 __ATOMIC_ACQUIRE) - cons;

    return n > entries ? -1 : (int64_t)n;
}

/*
 * Consumer, before it waits for a KICK: set its idle word and look at the
 * ring once more.  True: nothing came, it may sleep until a KICK.  False:
 * entries came (the idle word is cleared again).
 */
static inline bool softdev_tap_ring_may_sleep(uint8_t *ctl, unsigned idle_off,
                                              unsigned prod_off, uint32_t cons)
{
    uint32_t *idle = softdev_tap_ring_word(ctl, idle_off);

    __atomic_store_n(idle, 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(softdev_tap_ring_word(ctl, prod_off),
                        __ATOMIC_ACQUIRE) != cons) {
        __atomic_store_n(idle, 0, __ATOMIC_RELAXED);
        return false;
    }
    return true;
}

/* Consumer, while it polls: no KICKs wanted */
static inline void softdev_tap_ring_busy(uint8_t *ctl, unsigned idle_off)
{
    __atomic_store_n(softdev_tap_ring_word(ctl, idle_off), 0,
                     __ATOMIC_RELAXED);
}

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
 * SOFTDEV_TAP_F_EARLY_WRITE: whether @rep, the REPLY to a WRITE at
 * @offset, keeps the promise (FORWARD unchanged, or an error)
 */
static inline bool softdev_tap_early_write_kept(const SoftdevTapReply *rep,
                                                uint64_t offset)
{
    return rep->action == SOFTDEV_TAP_FORWARD ?
           rep->offset == offset && !rep->bytes : rep->result < 0;
}

/*
 * The feature bit a peer must have accepted before REQUESTs of @op may be
 * sent (FLUSH, DISCARD, WRITE_ZEROES), or 0 for READ and WRITE, which
 * every device takes.  Without it the client never lets the request
 * change data unseen: FLUSH goes below, DISCARD completes without effect,
 * WRITE_ZEROES is written as WRITEs of zeroes (docs/specs/softdev-tap.rst).
 */
static inline uint64_t softdev_tap_op_feature(unsigned op)
{
    switch (op) {
    case SOFTDEV_TAP_OP_WRITE_ZEROES:
        return SOFTDEV_TAP_F_ZEROES;
    case SOFTDEV_TAP_OP_DISCARD:
        return SOFTDEV_TAP_F_DISCARD;
    case SOFTDEV_TAP_OP_FLUSH:
        return SOFTDEV_TAP_F_FLUSH;
    default:
        return 0;
    }
}

/* The feature bit that allows early I/O for @op (READ, WRITE), or 0 */
static inline uint64_t softdev_tap_op_early_feature(unsigned op)
{
    return op == SOFTDEV_TAP_OP_READ ? SOFTDEV_TAP_F_EARLY_READ :
           op == SOFTDEV_TAP_OP_WRITE ? SOFTDEV_TAP_F_EARLY_WRITE : 0;
}

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

/*
 * SHM_SETUP, checked against the negotiated HELLO_REPLY @agreed
 * (ring_entries: a power of two >= slots with SOFTDEV_TAP_F_RING, else 0)
 */
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
 * A ring entry (SOFTDEV_TAP_F_RING): its header, which must be a
 * @type (REQUEST or REPLY) message without data.  @entry is a private
 * copy of SOFTDEV_TAP_RING_MSG_SIZE bytes; the fixed part follows the
 * header and is decoded with softdev_tap_decode_request() or
 * softdev_tap_decode_reply() as for a message with SHM.
 */
int softdev_tap_decode_ring_entry(const uint8_t *entry, uint16_t type,
                                  SoftdevTapHeader *hdr, const char **err);

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
 * Consumer: take the entries waiting in ring @ring (requests or replies)
 * after *@cons.  Each is copied to private memory (the peer may change
 * the shared one under us), its header decoded as a @type message, and
 * passed to @fn with the fixed part that follows it.  *@cons advances
 * past every entry taken.  Returns the number of entries taken, or -1
 * with a static message in *@err: the producer index is out of range, an
 * entry is malformed, or @fn returned a message (a protocol error).
 */
typedef const char *SoftdevTapRingFn(void *opaque,
                                     const SoftdevTapHeader *hdr,
                                     const uint8_t *fixed);
int64_t softdev_tap_ring_take(uint8_t *ctl, uint32_t entries,
                              enum SoftdevTapRing ring, uint32_t *cons,
                              SoftdevTapRingFn *fn, void *opaque,
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
size_t softdev_tap_encode_kick(uint8_t *buf);
/* @flags: SOFTDEV_TAP_FLAG_*; @shm: the data goes in the slot */
size_t softdev_tap_encode_request(uint8_t *buf, uint16_t type,
                                  uint64_t handle, uint16_t flags, bool shm,
                                  const SoftdevTapRequest *req);
size_t softdev_tap_encode_reply(uint8_t *buf, uint16_t type, uint64_t handle,
                                bool shm, const SoftdevTapReply *reply);

#endif /* SOFTDEV_TAP_PROTOCOL_H */
