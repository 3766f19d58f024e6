/*
 * AES-256-XTS for softdev-crypt: IEEE 1619 XTS over whole data units
 * (sectors), each unit's tweak its 64-bit number in little endian, as
 * dm-crypt's aes-xts-plain64.  The implementations use the CPU's AES
 * instructions (AES-NI with PCLMULQDQ, or VAES with VPCLMULQDQ on 256-bit
 * vectors); without them
 * softdev_xts_setkey() fails and softdev-crypt uses QEMU's crypto layer.
 * Plain C with no QEMU headers, so unit tests and the benchmark build it
 * alone.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SOFTDEV_CRYPT_XTS_H
#define SOFTDEV_CRYPT_XTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SOFTDEV_XTS_KEY_SIZE    64      /* data key, then tweak key */
#define SOFTDEV_XTS_BLOCK       16

typedef enum SoftdevXtsImpl {
    SOFTDEV_XTS_NONE = 0,       /* no AES instructions: use another */
    SOFTDEV_XTS_AESNI,          /* AES-NI, 8 blocks in flight */
    SOFTDEV_XTS_VAES,           /* VAES + AVX2, 16 blocks in flight */
} SoftdevXtsImpl;

typedef struct SoftdevXts {
    /* Round keys: data encryption, data decryption, tweak encryption */
    uint8_t ek[15][16] __attribute__((aligned(32)));
    uint8_t dk[15][16] __attribute__((aligned(32)));
    uint8_t tk[15][16] __attribute__((aligned(32)));
    SoftdevXtsImpl impl;
} SoftdevXts;

/* The fastest implementation this CPU runs, or SOFTDEV_XTS_NONE */
SoftdevXtsImpl softdev_xts_best(void);

/* "aesni", "vaes-avx2" or "none" */
const char *softdev_xts_impl_name(SoftdevXtsImpl impl);

/*
 * Expand @key (SOFTDEV_XTS_KEY_SIZE bytes) for @impl.  False if this CPU
 * cannot run @impl (or it is SOFTDEV_XTS_NONE); @x is then wiped.
 */
bool softdev_xts_setkey(SoftdevXts *x, const uint8_t *key,
                        SoftdevXtsImpl impl);

/*
 * En- or decrypt @len bytes from @in to @out (they may be the same
 * buffer): consecutive data units of @unit bytes (a non-zero multiple of
 * SOFTDEV_XTS_BLOCK), the first with tweak number @tweak, the next with
 * @tweak + 1, and so on.  @len must be a multiple of @unit.
 */
void softdev_xts_encrypt(const SoftdevXts *x, uint64_t tweak, size_t unit,
                         const uint8_t *in, uint8_t *out, size_t len);
void softdev_xts_decrypt(const SoftdevXts *x, uint64_t tweak, size_t unit,
                         const uint8_t *in, uint8_t *out, size_t len);

/* Forget the key material */
void softdev_xts_wipe(SoftdevXts *x);

#endif /* SOFTDEV_CRYPT_XTS_H */
