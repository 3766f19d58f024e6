/*
 * Unit test of softdev-crypt's AES-256-XTS (block/softdev/crypt-xts.c):
 * IEEE 1619 vector 10 (XTS-AES-256, data unit 0xff, 512 bytes) for every
 * implementation this CPU runs, in place and not; the implementations
 * against each other; many units in one call against one call per unit;
 * every implementation against OpenSSL's aes-256-xts and, where the
 * kernel offers AF_ALG, against the kernel's xts(aes), which is what
 * dm-crypt's aes-xts-plain64 uses, for 512- and 4096-byte units and
 * tweaks about 2^64.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <linux/if_alg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "block/softdev/crypt-xts.h"
#include "unit-check.h"

#ifndef SOL_ALG
#define SOL_ALG 279
#endif

static const uint8_t key10[64] = {
    /* Key1: digits of e; Key2: digits of pi */
    0x27, 0x18, 0x28, 0x18, 0x28, 0x45, 0x90, 0x45,
    0x23, 0x53, 0x60, 0x28, 0x74, 0x71, 0x35, 0x26,
    0x62, 0x49, 0x77, 0x57, 0x24, 0x70, 0x93, 0x69,
    0x99, 0x59, 0x57, 0x49, 0x66, 0x96, 0x76, 0x27,
    0x31, 0x41, 0x59, 0x26, 0x53, 0x58, 0x97, 0x93,
    0x23, 0x84, 0x62, 0x64, 0x33, 0x83, 0x27, 0x95,
    0x02, 0x88, 0x41, 0x97, 0x16, 0x93, 0x99, 0x37,
    0x51, 0x05, 0x82, 0x09, 0x74, 0x94, 0x45, 0x92,
};

static const uint8_t ctx10[512] = {
    0x1c, 0x3b, 0x3a, 0x10, 0x2f, 0x77, 0x03, 0x86,
    0xe4, 0x83, 0x6c, 0x99, 0xe3, 0x70, 0xcf, 0x9b,
    0xea, 0x00, 0x80, 0x3f, 0x5e, 0x48, 0x23, 0x57,
    0xa4, 0xae, 0x12, 0xd4, 0x14, 0xa3, 0xe6, 0x3b,
    0x5d, 0x31, 0xe2, 0x76, 0xf8, 0xfe, 0x4a, 0x8d,
    0x66, 0xb3, 0x17, 0xf9, 0xac, 0x68, 0x3f, 0x44,
    0x68, 0x0a, 0x86, 0xac, 0x35, 0xad, 0xfc, 0x33,
    0x45, 0xbe, 0xfe, 0xcb, 0x4b, 0xb1, 0x88, 0xfd,
    0x57, 0x76, 0x92, 0x6c, 0x49, 0xa3, 0x09, 0x5e,
    0xb1, 0x08, 0xfd, 0x10, 0x98, 0xba, 0xec, 0x70,
    0xaa, 0xa6, 0x69, 0x99, 0xa7, 0x2a, 0x82, 0xf2,
    0x7d, 0x84, 0x8b, 0x21, 0xd4, 0xa7, 0x41, 0xb0,
    0xc5, 0xcd, 0x4d, 0x5f, 0xff, 0x9d, 0xac, 0x89,
    0xae, 0xba, 0x12, 0x29, 0x61, 0xd0, 0x3a, 0x75,
    0x71, 0x23, 0xe9, 0x87, 0x0f, 0x8a, 0xcf, 0x10,
    0x00, 0x02, 0x08, 0x87, 0x89, 0x14, 0x29, 0xca,
    0x2a, 0x3e, 0x7a, 0x7d, 0x7d, 0xf7, 0xb1, 0x03,
    0x55, 0x16, 0x5c, 0x8b, 0x9a, 0x6d, 0x0a, 0x7d,
    0xe8, 0xb0, 0x62, 0xc4, 0x50, 0x0d, 0xc4, 0xcd,
    0x12, 0x0c, 0x0f, 0x74, 0x18, 0xda, 0xe3, 0xd0,
    0xb5, 0x78, 0x1c, 0x34, 0x80, 0x3f, 0xa7, 0x54,
    0x21, 0xc7, 0x90, 0xdf, 0xe1, 0xde, 0x18, 0x34,
    0xf2, 0x80, 0xd7, 0x66, 0x7b, 0x32, 0x7f, 0x6c,
    0x8c, 0xd7, 0x55, 0x7e, 0x12, 0xac, 0x3a, 0x0f,
    0x93, 0xec, 0x05, 0xc5, 0x2e, 0x04, 0x93, 0xef,
    0x31, 0xa1, 0x2d, 0x3d, 0x92, 0x60, 0xf7, 0x9a,
    0x28, 0x9d, 0x6a, 0x37, 0x9b, 0xc7, 0x0c, 0x50,
    0x84, 0x14, 0x73, 0xd1, 0xa8, 0xcc, 0x81, 0xec,
    0x58, 0x3e, 0x96, 0x45, 0xe0, 0x7b, 0x8d, 0x96,
    0x70, 0x65, 0x5b, 0xa5, 0xbb, 0xcf, 0xec, 0xc6,
    0xdc, 0x39, 0x66, 0x38, 0x0a, 0xd8, 0xfe, 0xcb,
    0x17, 0xb6, 0xba, 0x02, 0x46, 0x9a, 0x02, 0x0a,
    0x84, 0xe1, 0x8e, 0x8f, 0x84, 0x25, 0x20, 0x70,
    0xc1, 0x3e, 0x9f, 0x1f, 0x28, 0x9b, 0xe5, 0x4f,
    0xbc, 0x48, 0x14, 0x57, 0x77, 0x8f, 0x61, 0x60,
    0x15, 0xe1, 0x32, 0x7a, 0x02, 0xb1, 0x40, 0xf1,
    0x50, 0x5e, 0xb3, 0x09, 0x32, 0x6d, 0x68, 0x37,
    0x8f, 0x83, 0x74, 0x59, 0x5c, 0x84, 0x9d, 0x84,
    0xf4, 0xc3, 0x33, 0xec, 0x44, 0x23, 0x88, 0x51,
    0x43, 0xcb, 0x47, 0xbd, 0x71, 0xc5, 0xed, 0xae,
    0x9b, 0xe6, 0x9a, 0x2f, 0xfe, 0xce, 0xb1, 0xbe,
    0xc9, 0xde, 0x24, 0x4f, 0xbe, 0x15, 0x99, 0x2b,
    0x11, 0xb7, 0x7c, 0x04, 0x0f, 0x12, 0xbd, 0x8f,
    0x6a, 0x97, 0x5a, 0x44, 0xa0, 0xf9, 0x0c, 0x29,
    0xa9, 0xab, 0xc3, 0xd4, 0xd8, 0x93, 0x92, 0x72,
    0x84, 0xc5, 0x87, 0x54, 0xcc, 0xe2, 0x94, 0x52,
    0x9f, 0x86, 0x14, 0xdc, 0xd2, 0xab, 0xa9, 0x91,
    0x92, 0x5f, 0xed, 0xc4, 0xae, 0x74, 0xff, 0xac,
    0x6e, 0x33, 0x3b, 0x93, 0xeb, 0x4a, 0xff, 0x04,
    0x79, 0xda, 0x9a, 0x41, 0x0e, 0x44, 0x50, 0xe0,
    0xdd, 0x7a, 0xe4, 0xc6, 0xe2, 0x91, 0x09, 0x00,
    0x57, 0x5d, 0xa4, 0x01, 0xfc, 0x07, 0x05, 0x9f,
    0x64, 0x5e, 0x8b, 0x7e, 0x9b, 0xfd, 0xef, 0x33,
    0x94, 0x30, 0x54, 0xff, 0x84, 0x01, 0x14, 0x93,
    0xc2, 0x7b, 0x34, 0x29, 0xea, 0xed, 0xb4, 0xed,
    0x53, 0x76, 0x44, 0x1a, 0x77, 0xed, 0x43, 0x85,
    0x1a, 0xd7, 0x7f, 0x16, 0xf5, 0x41, 0xdf, 0xd2,
    0x69, 0xd5, 0x0d, 0x6a, 0x5f, 0x14, 0xfb, 0x0a,
    0xab, 0x1c, 0xbb, 0x4c, 0x15, 0x50, 0xbe, 0x97,
    0xf7, 0xab, 0x40, 0x66, 0x19, 0x3c, 0x4c, 0xaa,
    0x77, 0x3d, 0xad, 0x38, 0x01, 0x4b, 0xd2, 0x09,
    0x2f, 0xa7, 0x55, 0xc8, 0x24, 0xbb, 0x5e, 0x54,
    0xc4, 0xf3, 0x6f, 0xfd, 0xa9, 0xfc, 0xea, 0x70,
    0xb9, 0xc6, 0xe6, 0x93, 0xe1, 0x48, 0xc1, 0x51,
};

static const SoftdevXtsImpl impls[] = { SOFTDEV_XTS_AESNI, SOFTDEV_XTS_VAES };

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
    size_t i;

    for (i = 0; i < len; i++) {
        seed = seed * 1103515245 + 12345;
        buf[i] = seed >> 16;
    }
}

static void test_vector10(SoftdevXtsImpl impl)
{
    SoftdevXts x;
    uint8_t pt[512], buf[512];
    int i;

    for (i = 0; i < 512; i++) {
        pt[i] = i;
    }
    CHECK(softdev_xts_setkey(&x, key10, impl));
    softdev_xts_encrypt(&x, 0xff, 512, pt, buf, 512);
    CHECK(!memcmp(buf, ctx10, 512));
    softdev_xts_decrypt(&x, 0xff, 512, buf, buf, 512);
    CHECK(!memcmp(buf, pt, 512));
    memcpy(buf, pt, 512);
    softdev_xts_encrypt(&x, 0xff, 512, buf, buf, 512);
    CHECK(!memcmp(buf, ctx10, 512));
    /* The same sector as two 256-byte units is not the same thing */
    softdev_xts_encrypt(&x, 0xff, 256, pt, buf, 512);
    CHECK(memcmp(buf, ctx10, 512) != 0);
    CHECK(!memcmp(buf, ctx10, 256));
    softdev_xts_wipe(&x);
    CHECK(x.impl == SOFTDEV_XTS_NONE);
}

/* Many units in one call, against one call per unit and the other impl */
static void test_units(SoftdevXtsImpl impl, SoftdevXtsImpl ref_impl)
{
    static const size_t units[] = { 16, 48, 512, 528, 4096 };
    static const uint64_t tweaks[] = { 0, 7, UINT64_MAX - 3 };
    size_t len = 19 * 4096;
    uint8_t *pt = malloc(len), *a = malloc(len), *b = malloc(len);
    uint8_t key[64];
    SoftdevXts x, ref;
    size_t u, t, k;

    fill(key, sizeof(key), 1);
    fill(pt, len, 2);
    CHECK(softdev_xts_setkey(&x, key, impl));
    CHECK(softdev_xts_setkey(&ref, key, ref_impl));
    for (u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
        size_t unit = units[u], n = len / unit * unit;

        for (t = 0; t < sizeof(tweaks) / sizeof(tweaks[0]); t++) {
            softdev_xts_encrypt(&x, tweaks[t], unit, pt, a, n);
            for (k = 0; k < n; k += unit) {
                softdev_xts_encrypt(&ref, tweaks[t] + k / unit, unit,
                                    pt + k, b + k, unit);
            }
            CHECK(!memcmp(a, b, n));
            softdev_xts_decrypt(&ref, tweaks[t], unit, a, b, n);
            CHECK(!memcmp(b, pt, n));
            softdev_xts_decrypt(&x, tweaks[t], unit, a, a, n);
            CHECK(!memcmp(a, pt, n));
        }
    }
    free(pt);
    free(a);
    free(b);
}

/*
 * A reference AES-256-XTS: one data unit of @len bytes with tweak @tweak,
 * under the key of @ctx; false if it failed
 */
typedef bool RefXts(const void *ctx, bool enc, uint64_t tweak,
                    const uint8_t *in, uint8_t *out, size_t len);

/* RefXts through the kernel's xts(aes): @ctx is the bound AF_ALG socket */
static bool kernel_xts(const void *ctx, bool enc, uint64_t tweak,
                       const uint8_t *in, uint8_t *out, size_t len)
{
    int tfm = *(const int *)ctx;
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(uint32_t)) +
                 CMSG_SPACE(sizeof(struct af_alg_iv) + 16)];
    } ctl;
    struct iovec iov = { (void *)in, len };
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
    };
    struct cmsghdr *c;
    struct af_alg_iv *iv;
    int op = accept(tfm, NULL, 0);
    size_t got = 0;
    bool ok;

    if (op < 0) {
        return false;
    }
    memset(&ctl, 0, sizeof(ctl));
    c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_ALG;
    c->cmsg_type = ALG_SET_OP;
    c->cmsg_len = CMSG_LEN(sizeof(uint32_t));
    *(uint32_t *)CMSG_DATA(c) = enc ? ALG_OP_ENCRYPT : ALG_OP_DECRYPT;
    c = CMSG_NXTHDR(&msg, c);
    c->cmsg_level = SOL_ALG;
    c->cmsg_type = ALG_SET_IV;
    c->cmsg_len = CMSG_LEN(sizeof(struct af_alg_iv) + 16);
    iv = (struct af_alg_iv *)CMSG_DATA(c);
    iv->ivlen = 16;
    memset(iv->iv, 0, 16);
    memcpy(iv->iv, &tweak, 8);          /* plain64: little endian */
    ok = sendmsg(op, &msg, 0) == (ssize_t)len;
    while (ok && got < len) {
        ssize_t n = read(op, out + got, len - got);
        ok = n > 0;
        got += ok ? n : 0;
    }
    close(op);
    return ok;
}

/* RefXts through OpenSSL's aes-256-xts: @ctx is the key */
static bool openssl_xts(const void *key, bool enc, uint64_t tweak,
                        const uint8_t *in, uint8_t *out, size_t len)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    uint8_t iv[16] = { 0 };
    int n = 0;
    bool ok;

    memcpy(iv, &tweak, 8);
    ok = ctx && EVP_CipherInit_ex(ctx, EVP_aes_256_xts(), NULL, key, iv,
                                  enc) == 1 &&
         EVP_CipherUpdate(ctx, out, &n, in, len) == 1 && n == (int)len;
    EVP_CIPHER_CTX_free(ctx);
    return ok;
}

static const size_t ref_units[] = { 512, 4096 };
static const uint64_t ref_tweaks[] = { 0, 1, 0x123456789, UINT64_MAX };

/* @impl against @ref (whose key is @key) both ways, both unit sizes */
static void test_against(SoftdevXtsImpl impl, const uint8_t *key,
                         RefXts *ref, const void *ctx, unsigned seed)
{
    uint8_t pt[4096], mine[4096], theirs[4096];
    size_t u, t;
    SoftdevXts x;

    CHECK(softdev_xts_setkey(&x, key, impl));
    for (u = 0; u < 2; u++) {
        for (t = 0; t < sizeof(ref_tweaks) / sizeof(ref_tweaks[0]); t++) {
            size_t n = ref_units[u];

            fill(pt, n, seed + t);
            softdev_xts_encrypt(&x, ref_tweaks[t], n, pt, mine, n);
            CHECK(ref(ctx, true, ref_tweaks[t], pt, theirs, n));
            CHECK(!memcmp(mine, theirs, n));
            CHECK(ref(ctx, false, ref_tweaks[t], mine, theirs, n));
            CHECK(!memcmp(pt, theirs, n));
        }
    }
}

static void test_openssl(SoftdevXtsImpl impl)
{
    uint8_t key[64];

    fill(key, sizeof(key), 5);
    test_against(impl, key, openssl_xts, key, 6);
}

static void test_kernel(SoftdevXtsImpl impl)
{
    struct sockaddr_alg sa = {
        .salg_family = AF_ALG, .salg_type = "skcipher",
        .salg_name = "xts(aes)",
    };
    int tfm = socket(AF_ALG, SOCK_SEQPACKET, 0);
    uint8_t key[64];

    if (tfm < 0 || bind(tfm, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        printf("crypt-xts-test: no AF_ALG xts(aes) here (%s): kernel "
               "cross-check skipped\n", strerror(errno));
        if (tfm >= 0) {
            close(tfm);
        }
        return;
    }
    fill(key, sizeof(key), 3);
    CHECK(setsockopt(tfm, SOL_ALG, ALG_SET_KEY, key, sizeof(key)) == 0);
    test_against(impl, key, kernel_xts, &tfm, 4);
    close(tfm);
}

int main(void)
{
    SoftdevXtsImpl best = softdev_xts_best();
    SoftdevXts x;
    size_t i;

    CHECK(!softdev_xts_setkey(&x, key10, SOFTDEV_XTS_NONE));
    if (best == SOFTDEV_XTS_NONE) {
        printf("crypt-xts-test: no AES instructions on this CPU: skipped "
               "(softdev-crypt uses QEMU's crypto layer)\n");
        return UNIT_CHECK_DONE("crypt-xts-test");
    }
    for (i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
        if (impls[i] > best) {
            CHECK(!softdev_xts_setkey(&x, key10, impls[i]));
            printf("crypt-xts-test: %s: not on this CPU\n",
                   softdev_xts_impl_name(impls[i]));
            continue;
        }
        test_vector10(impls[i]);
        test_units(impls[i], SOFTDEV_XTS_AESNI);
        test_openssl(impls[i]);
        test_kernel(impls[i]);
        printf("crypt-xts-test: %s: checked\n",
               softdev_xts_impl_name(impls[i]));
    }
    return UNIT_CHECK_DONE("crypt-xts-test");
}
