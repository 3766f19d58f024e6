/*
 * What the device-side fuzz targets share (fuzz-devices.c).
 *
 * Input of both: one option byte, then the client's byte stream.
 *   bit 0  SOFTDEV_THREAD_PARALLEL (else SERIALIZE; fuzz-device only)
 *   bit 1  pass a memfd with what follows the first message (HELLO), as
 *          QEMU passes it with SHM_SETUP
 *   bit 2  a device that works through the node below (lower requests,
 *          forward with replacement data) instead of answering itself
 *   bit 3  the device has its own size (else: the node below's)
 *   bit 4  with bit 1: if the second message is an SHM_SETUP that gives
 *          rings, the rest of the input drives the request ring, as
 *          records of one control byte and a 48-byte entry: the entry
 *          goes into the ring and the producer index moves on (control
 *          bit 6: the producer index is set to the entry's first four
 *          bytes instead, a hostile index), then control bit 7 sends a
 *          KICK; a tail shorter than a record goes over the socket
 *   bits 5-7  fuzz-conn only: the size of the pieces the stream
 *          arrives in (see chunk_sizes there)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef FUZZ_DEVICES_H
#define FUZZ_DEVICES_H

#include <stddef.h>
#include <stdint.h>

#include "libsoftdev/protocol/tap-protocol.h"
#include "softdev.h"

#define OPT_PARALLEL    1
#define OPT_SHM         2
#define OPT_LOWER       4
#define OPT_SIZE        8
#define OPT_RING        16
#define RING_RECORD     (1 + SOFTDEV_TAP_RING_MSG_SIZE)
#define SHM_SIZE        (64u << 20)         /* sparse */

extern struct softdev_device fuzz_dev_self, fuzz_dev_lower;

size_t fuzz_hello_length(const uint8_t *p, size_t size);
uint32_t fuzz_ld32(const uint8_t *p);
size_t fuzz_ring_setup_length(const uint8_t *p, size_t size, size_t *ctl,
                              uint32_t *entries);

#endif /* FUZZ_DEVICES_H */
