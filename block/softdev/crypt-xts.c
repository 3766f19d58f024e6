/*
 * AES-256-XTS with the CPU's AES instructions, for softdev-crypt (see
 * crypt-xts.h).  Data units are whole multiples of the AES block, so
 * there is no ciphertext stealing.  The tweaks of up to eight units are
 * encrypted together, and each unit's blocks go through the rounds eight
 * (AES-NI) or sixteen (VAES, two per 256-bit register) at a time, which
 * keeps the AES units busy across their latency; each block's tweak
 * steps on by x^8 or x^16 with one carry-less multiplication, not through
 * a chain of doublings.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <assert.h>
#include <string.h>

#include "crypt-xts.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define SOFTDEV_XTS_X86 1
#include <immintrin.h>
#endif

#define XTS_ROUNDS      14          /* AES-256 */
#define XTS_UNITS       8           /* tweaks encrypted together */

const char *softdev_xts_impl_name(SoftdevXtsImpl impl)
{
    switch (impl) {
    case SOFTDEV_XTS_AESNI:
        return "aesni";
    case SOFTDEV_XTS_VAES:
        return "vaes-avx2";
    default:
        return "none";
    }
}

void softdev_xts_wipe(SoftdevXts *x)
{
    /* A store the compiler may not drop as dead */
    memset(x, 0, sizeof(*x));
    __asm__ __volatile__("" : : "r"(x) : "memory");
}

#ifdef SOFTDEV_XTS_X86

#define TGT_AES     __attribute__((target("aes,pclmul,sse4.1")))
#define TGT_VAES    \
    __attribute__((target("aes,pclmul,sse4.1,avx2,vaes,vpclmulqdq")))
#define INLINE      inline __attribute__((always_inline))
/* The blocks in flight must live in registers: unroll their loops */
#define UNROLL      _Pragma("GCC unroll 16")

SoftdevXtsImpl softdev_xts_best(void)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("aes") || !__builtin_cpu_supports("pclmul")) {
        return SOFTDEV_XTS_NONE;
    }
    if (__builtin_cpu_supports("vaes") && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("vpclmulqdq")) {
        return SOFTDEV_XTS_VAES;
    }
    return SOFTDEV_XTS_AESNI;
}

/* One step of the AES-256 key schedule (FIPS 197 5.2), for even words */
static INLINE TGT_AES __m128i expand_even(__m128i a, __m128i assist)
{
    a = _mm_xor_si128(a, _mm_slli_si128(a, 4));
    a = _mm_xor_si128(a, _mm_slli_si128(a, 8));
    return _mm_xor_si128(a, _mm_shuffle_epi32(assist, 0xff));
}

/* ... and for odd ones (SubWord without RotWord or Rcon) */
static INLINE TGT_AES __m128i expand_odd(__m128i b, __m128i assist)
{
    b = _mm_xor_si128(b, _mm_slli_si128(b, 4));
    b = _mm_xor_si128(b, _mm_slli_si128(b, 8));
    return _mm_xor_si128(b, _mm_shuffle_epi32(assist, 0xaa));
}

static TGT_AES void aes256_expand(const uint8_t *key, uint8_t rk[15][16])
{
    __m128i a = _mm_loadu_si128((const __m128i *)key);
    __m128i b = _mm_loadu_si128((const __m128i *)(key + 16));

    _mm_store_si128((__m128i *)rk[0], a);
    _mm_store_si128((__m128i *)rk[1], b);
    /* aeskeygenassist wants its round constant as an immediate */
#define EXPAND(i, rcon)                                                 \
    do {                                                                \
        a = expand_even(a, _mm_aeskeygenassist_si128(b, rcon));         \
        _mm_store_si128((__m128i *)rk[i], a);                           \
        if (i < XTS_ROUNDS) {                                           \
            b = expand_odd(b, _mm_aeskeygenassist_si128(a, 0));         \
            _mm_store_si128((__m128i *)rk[i + 1], b);                   \
        }                                                               \
    } while (0)
    EXPAND(2, 0x01);
    EXPAND(4, 0x02);
    EXPAND(6, 0x04);
    EXPAND(8, 0x08);
    EXPAND(10, 0x10);
    EXPAND(12, 0x20);
    EXPAND(14, 0x40);
#undef EXPAND
}

/* The equivalent inverse cipher's round keys (FIPS 197 5.3.5) */
static TGT_AES void aes256_invert(uint8_t ek[15][16], uint8_t dk[15][16])
{
    int i;

    _mm_store_si128((__m128i *)dk[0],
                    _mm_load_si128((const __m128i *)ek[XTS_ROUNDS]));
    for (i = 1; i < XTS_ROUNDS; i++) {
        _mm_store_si128((__m128i *)dk[i],
            _mm_aesimc_si128(_mm_load_si128(
                (const __m128i *)ek[XTS_ROUNDS - i])));
    }
    _mm_store_si128((__m128i *)dk[XTS_ROUNDS],
                    _mm_load_si128((const __m128i *)ek[0]));
}

bool softdev_xts_setkey(SoftdevXts *x, const uint8_t *key,
                        SoftdevXtsImpl impl)
{
    softdev_xts_wipe(x);
    if (impl == SOFTDEV_XTS_NONE || impl > softdev_xts_best()) {
        return false;
    }
    aes256_expand(key, x->ek);
    aes256_invert(x->ek, x->dk);
    aes256_expand(key + SOFTDEV_XTS_KEY_SIZE / 2, x->tk);
    x->impl = impl;
    return true;
}

/*
 * The next block's tweak: multiply by x in GF(2^128) (IEEE 1619 5.2).
 * Each 32-bit word is doubled; its top bit moves to the next word, and
 * the top bit of the last becomes the reduction 0x87 in the first.
 */
static INLINE TGT_AES __m128i mul_alpha(__m128i t)
{
    __m128i carry = _mm_shuffle_epi32(_mm_srai_epi32(t, 31), 0x93);

    carry = _mm_and_si128(carry, _mm_set_epi32(1, 1, 1, 0x87));
    return _mm_xor_si128(_mm_add_epi32(t, t), carry);
}

/*
 * Multiply by x^@k (1 <= @k <= 63): shift left by @k bits, and reduce
 * the @k bits shifted out with one carry-less multiplication by 0x87
 * (its product has fewer than 128 bits).  Each tweak steps on by itself,
 * so the tweaks of the blocks in flight are no chain of dependent
 * doublings.
 */
static INLINE TGT_AES __m128i mul_alpha_k(__m128i t, int k)
{
    __m128i shifted = _mm_or_si128(_mm_slli_epi64(t, k),
                                   _mm_srli_epi64(_mm_slli_si128(t, 8),
                                                  64 - k));
    __m128i out = _mm_srli_epi64(_mm_srli_si128(t, 8), 64 - k);

    return _mm_xor_si128(shifted,
                         _mm_clmulepi64_si128(out, _mm_set_epi64x(0, 0x87),
                                              0x00));
}

/*
 * The same in each 128-bit lane.
 */
static INLINE TGT_VAES __m256i mul_alpha_k_x2(__m256i t, int k)
{
    __m256i low_up = _mm256_bslli_epi128(t, 8);
    __m256i shifted = _mm256_or_si256(_mm256_slli_epi64(t, k),
                                      _mm256_srli_epi64(low_up, 64 - k));
    __m256i out = _mm256_srli_epi64(_mm256_bsrli_epi128(t, 8), 64 - k);

    return _mm256_xor_si256(shifted,
        _mm256_clmulepi64_epi128(out, _mm256_set_epi64x(0, 0x87, 0, 0x87),
                                 0x00));
}

/* The initial tweaks of @n <= XTS_UNITS units, numbered from @tweak */
static INLINE TGT_AES void tweaks(const SoftdevXts *x, uint64_t tweak,
                                  size_t n, __m128i *t)
{
    const __m128i *tk = (const __m128i *)x->tk;
    size_t j;
    int r;

    for (j = 0; j < n; j++) {
        t[j] = _mm_xor_si128(_mm_set_epi64x(0, (int64_t)(tweak + j)), tk[0]);
    }
    UNROLL
    for (r = 1; r < XTS_ROUNDS; r++) {
        for (j = 0; j < n; j++) {
            t[j] = _mm_aesenc_si128(t[j], tk[r]);
        }
    }
    for (j = 0; j < n; j++) {
        t[j] = _mm_aesenclast_si128(t[j], tk[XTS_ROUNDS]);
    }
}

/* One block; returns the next block's tweak */
static INLINE TGT_AES __m128i block(const __m128i *rk, bool enc, __m128i t,
                                    const uint8_t *in, uint8_t *out)
{
    __m128i b = _mm_loadu_si128((const __m128i *)in);
    int r;

    b = _mm_xor_si128(_mm_xor_si128(b, t), rk[0]);
    UNROLL
    for (r = 1; r < XTS_ROUNDS; r++) {
        b = enc ? _mm_aesenc_si128(b, rk[r]) : _mm_aesdec_si128(b, rk[r]);
    }
    b = enc ? _mm_aesenclast_si128(b, rk[XTS_ROUNDS]) :
              _mm_aesdeclast_si128(b, rk[XTS_ROUNDS]);
    _mm_storeu_si128((__m128i *)out, _mm_xor_si128(b, t));
    return mul_alpha(t);
}

/* One data unit of @len bytes with initial tweak @t, 8 blocks a turn */
static INLINE TGT_AES void unit_aesni(const __m128i *rk, bool enc, __m128i t,
                                      const uint8_t *in, uint8_t *out,
                                      size_t len)
{
    __m128i tw[8];
    size_t i = 0;
    int j, r;

    tw[0] = t;
    UNROLL
    for (j = 1; j < 8; j++) {
        tw[j] = mul_alpha_k(t, j);
    }
    for (; i + 8 * SOFTDEV_XTS_BLOCK <= len; i += 8 * SOFTDEV_XTS_BLOCK) {
        __m128i b[8];

        UNROLL
        for (j = 0; j < 8; j++) {
            b[j] = _mm_loadu_si128((const __m128i *)(in + i + 16 * j));
            b[j] = _mm_xor_si128(_mm_xor_si128(b[j], tw[j]), rk[0]);
        }
        UNROLL
        for (r = 1; r < XTS_ROUNDS; r++) {
            UNROLL
            for (j = 0; j < 8; j++) {
                b[j] = enc ? _mm_aesenc_si128(b[j], rk[r]) :
                             _mm_aesdec_si128(b[j], rk[r]);
            }
        }
        UNROLL
        for (j = 0; j < 8; j++) {
            b[j] = enc ? _mm_aesenclast_si128(b[j], rk[XTS_ROUNDS]) :
                         _mm_aesdeclast_si128(b[j], rk[XTS_ROUNDS]);
            _mm_storeu_si128((__m128i *)(out + i + 16 * j),
                             _mm_xor_si128(b[j], tw[j]));
            tw[j] = mul_alpha_k(tw[j], 8);          /* 8 blocks on */
        }
    }
    t = tw[0];
    for (; i < len; i += SOFTDEV_XTS_BLOCK) {
        t = block(rk, enc, t, in + i, out + i);
    }
}

static INLINE TGT_AES void xts_aesni(const SoftdevXts *x, bool enc,
                                     uint64_t tweak, size_t unit,
                                     const uint8_t *in, uint8_t *out,
                                     size_t len)
{
    const __m128i *rk = (const __m128i *)(enc ? x->ek : x->dk);

    while (len) {
        size_t n = len / unit < XTS_UNITS ? len / unit : XTS_UNITS, j;
        __m128i t[XTS_UNITS];

        tweaks(x, tweak, n, t);
        for (j = 0; j < n; j++) {
            unit_aesni(rk, enc, t[j], in, out, unit);
            in += unit;
            out += unit;
        }
        tweak += n;
        len -= n * unit;
    }
}

/* One data unit, 16 blocks a turn in eight 256-bit registers */
static INLINE TGT_VAES void unit_vaes(const __m128i *rk, const __m256i *rk2,
                                      bool enc, __m128i t,
                                      const uint8_t *in, uint8_t *out,
                                      size_t len)
{
    /* tw[j]: low lane block 2j's tweak, high lane block 2j+1's */
    __m256i tw[8];
    size_t i = 0;
    int j, r;

    tw[0] = _mm256_set_m128i(mul_alpha(t), t);
    UNROLL
    for (j = 1; j < 8; j++) {
        tw[j] = mul_alpha_k_x2(tw[0], 2 * j);
    }
    for (; i + 16 * SOFTDEV_XTS_BLOCK <= len; i += 16 * SOFTDEV_XTS_BLOCK) {
        __m256i b[8];

        UNROLL
        for (j = 0; j < 8; j++) {
            b[j] = _mm256_loadu_si256((const __m256i *)(in + i + 32 * j));
            b[j] = _mm256_xor_si256(_mm256_xor_si256(b[j], tw[j]), rk2[0]);
        }
        UNROLL
        for (r = 1; r < XTS_ROUNDS; r++) {
            UNROLL
            for (j = 0; j < 8; j++) {
                b[j] = enc ? _mm256_aesenc_epi128(b[j], rk2[r]) :
                             _mm256_aesdec_epi128(b[j], rk2[r]);
            }
        }
        UNROLL
        for (j = 0; j < 8; j++) {
            b[j] = enc ? _mm256_aesenclast_epi128(b[j], rk2[XTS_ROUNDS]) :
                         _mm256_aesdeclast_epi128(b[j], rk2[XTS_ROUNDS]);
            _mm256_storeu_si256((__m256i *)(out + i + 32 * j),
                                _mm256_xor_si256(b[j], tw[j]));
            tw[j] = mul_alpha_k_x2(tw[j], 16);      /* 16 blocks on */
        }
    }
    t = _mm256_castsi256_si128(tw[0]);
    for (; i < len; i += SOFTDEV_XTS_BLOCK) {
        t = block(rk, enc, t, in + i, out + i);
    }
}

static INLINE TGT_VAES void xts_vaes(const SoftdevXts *x, bool enc,
                                     uint64_t tweak, size_t unit,
                                     const uint8_t *in, uint8_t *out,
                                     size_t len)
{
    const __m128i *rk = (const __m128i *)(enc ? x->ek : x->dk);
    __m256i rk2[XTS_ROUNDS + 1];
    int r;

    UNROLL

    for (r = 0; r <= XTS_ROUNDS; r++) {
        rk2[r] = _mm256_broadcastsi128_si256(rk[r]);
    }
    while (len) {
        size_t n = len / unit < XTS_UNITS ? len / unit : XTS_UNITS, j;
        __m128i t[XTS_UNITS];

        tweaks(x, tweak, n, t);
        for (j = 0; j < n; j++) {
            unit_vaes(rk, rk2, enc, t[j], in, out, unit);
            in += unit;
            out += unit;
        }
        tweak += n;
        len -= n * unit;
    }
}

/* The entry points: direction and implementation fixed, so each inlines */
static TGT_AES void xts_aesni_enc(const SoftdevXts *x, uint64_t tweak,
                                  size_t unit, const uint8_t *in,
                                  uint8_t *out, size_t len)
{
    xts_aesni(x, true, tweak, unit, in, out, len);
}

static TGT_AES void xts_aesni_dec(const SoftdevXts *x, uint64_t tweak,
                                  size_t unit, const uint8_t *in,
                                  uint8_t *out, size_t len)
{
    xts_aesni(x, false, tweak, unit, in, out, len);
}

static TGT_VAES void xts_vaes_enc(const SoftdevXts *x, uint64_t tweak,
                                  size_t unit, const uint8_t *in,
                                  uint8_t *out, size_t len)
{
    xts_vaes(x, true, tweak, unit, in, out, len);
}

static TGT_VAES void xts_vaes_dec(const SoftdevXts *x, uint64_t tweak,
                                  size_t unit, const uint8_t *in,
                                  uint8_t *out, size_t len)
{
    xts_vaes(x, false, tweak, unit, in, out, len);
}

void softdev_xts_encrypt(const SoftdevXts *x, uint64_t tweak, size_t unit,
                         const uint8_t *in, uint8_t *out, size_t len)
{
    assert(unit && unit % SOFTDEV_XTS_BLOCK == 0 && len % unit == 0);
    if (x->impl == SOFTDEV_XTS_VAES) {
        xts_vaes_enc(x, tweak, unit, in, out, len);
    } else {
        assert(x->impl == SOFTDEV_XTS_AESNI);
        xts_aesni_enc(x, tweak, unit, in, out, len);
    }
}

void softdev_xts_decrypt(const SoftdevXts *x, uint64_t tweak, size_t unit,
                         const uint8_t *in, uint8_t *out, size_t len)
{
    assert(unit && unit % SOFTDEV_XTS_BLOCK == 0 && len % unit == 0);
    if (x->impl == SOFTDEV_XTS_VAES) {
        xts_vaes_dec(x, tweak, unit, in, out, len);
    } else {
        assert(x->impl == SOFTDEV_XTS_AESNI);
        xts_aesni_dec(x, tweak, unit, in, out, len);
    }
}

#else /* !SOFTDEV_XTS_X86 */

SoftdevXtsImpl softdev_xts_best(void)
{
    return SOFTDEV_XTS_NONE;
}

bool softdev_xts_setkey(SoftdevXts *x, const uint8_t *key,
                        SoftdevXtsImpl impl)
{
    softdev_xts_wipe(x);
    return false;
}

void softdev_xts_encrypt(const SoftdevXts *x, uint64_t tweak, size_t unit,
                         const uint8_t *in, uint8_t *out, size_t len)
{
    assert(!"softdev_xts_encrypt() without a key");
}

void softdev_xts_decrypt(const SoftdevXts *x, uint64_t tweak, size_t unit,
                         const uint8_t *in, uint8_t *out, size_t len)
{
    assert(!"softdev_xts_decrypt() without a key");
}

#endif /* SOFTDEV_XTS_X86 */
