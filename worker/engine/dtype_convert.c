/* dtype_convert.c: element conversion to float32 for checkpoint loading, and back for LoRA merges. A 1 G-
 * parameter F16 model must convert in seconds: F16C does 8 halves per instruction; else a 256 KB table. */
#include "dtype_convert.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define SDE_CVT_X86 1
#endif

float sde_cvt_half(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | man << 13; /* inf / NaN, payload kept */
    } else if (exp) {
        bits = sign | (exp + 112) << 23 | man << 13;
    } else if (man) {
        /* Subnormal: shift the mantissa up to an implicit 1, lowering the exponent per step. */
        int e = 113;
        while (!(man & 0x400)) {
            man <<= 1;
            e--;
        }
        bits = sign | (uint32_t)e << 23 | (man & 0x3ff) << 13;
    } else {
        bits = sign;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* float -> IEEE half bits, rounded to nearest even; as F16C's vcvtps2ph (NaN: quiet, payload's top bits). */
static uint16_t half_of(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* 65520 and up round to infinity */
    if (ax >= 0x38800000u)                                   /* normal: rebias, round at bit 13 */
        return (uint16_t)(sign | ((ax - 0x38000000u + 0xfffu + ((ax >> 13) & 1)) >> 13));
    if (ax <= 0x33000000u) return (uint16_t)sign; /* at most half the smallest subnormal: zero */
    /* subnormal: the value in units of 2^-24 is mant * 2^(e - 126), e < 113 */
    const uint32_t mant = (ax & 0x7fffffu) | 0x800000u, s = 126 - (ax >> 23), rem = mant & ((1u << s) - 1),
                   halfway = 1u << (s - 1);
    uint32_t h = mant >> s;
    if (rem > halfway || (rem == halfway && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

static float half_table[65536];
static pthread_once_t half_once = PTHREAD_ONCE_INIT;
static void half_table_build(void)
{
    for (uint32_t i = 0; i < 65536; i++)
        half_table[i] = sde_cvt_half((uint16_t)i);
}

static void f16_portable(const uint8_t *s, size_t n, float *d)
{
    pthread_once(&half_once, half_table_build);
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        d[i] = half_table[h];
    }
}

#ifdef SDE_CVT_X86
__attribute__((target("f16c,avx"))) static void f16_f16c(const uint8_t *s, size_t n, float *d)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + 2 * i))));
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        d[i] = sde_cvt_half(h);
    }
}

__attribute__((target("f16c,avx"))) static void f32_to_f16_f16c(const float *s, size_t n, uint8_t *d)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(d + 2 * i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) {
        uint16_t h = half_of(s[i]);
        memcpy(d + 2 * i, &h, 2);
    }
}

/* cpuid rather than __builtin_cpu_supports("f16c"), which some clang versions do not know. */
static int have_f16c(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_F16C) || !(c & bit_AVX) || !(c & bit_OSXSAVE)) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    return (lo & 6) == 6; /* the OS saves XMM and YMM state */
}
#endif

static int force_portable;

void sde_cvt_force_portable(int on)
{
    __atomic_store_n(&force_portable, on, __ATOMIC_RELAXED);
}

/* Whether to use F16C: the CPU has it and tests have not forced the portable paths. */
static int use_f16c(void)
{
#ifdef SDE_CVT_X86
    static int hw = -1; /* cpuid once; relaxed atomics since every thread computes the same answer */
    int have = __atomic_load_n(&hw, __ATOMIC_RELAXED);
    if (have < 0) {
        have = have_f16c();
        __atomic_store_n(&hw, have, __ATOMIC_RELAXED);
    }
    return have && !__atomic_load_n(&force_portable, __ATOMIC_RELAXED);
#else
    return 0;
#endif
}

static void f16_to_f32(const uint8_t *s, size_t n, float *d)
{
#ifdef SDE_CVT_X86
    if (use_f16c()) {
        f16_f16c(s, n, d);
        return;
    }
#endif
    f16_portable(s, n, d);
}

int sde_cvt_to_f32(sde_dtype dt, const void *src, size_t n, float *dst)
{
    const uint8_t *s = src;
    switch (dt) {
    case SDE_DT_F32:
        memcpy(dst, s, n * 4);
        return 0;
    case SDE_DT_F16:
        f16_to_f32(s, n, dst);
        return 0;
    case SDE_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&dst[i], &bits, 4);
        }
        return 0;
    case SDE_DT_F64:
        for (size_t i = 0; i < n; i++) {
            double v;
            memcpy(&v, s + 8 * i, 8);
            dst[i] = (float)v;
        }
        return 0;
    default:
        return -1;
    }
}

int sde_cvt_from_f32(sde_dtype dt, const float *src, size_t n, void *dst)
{
    uint8_t *d = dst;
    switch (dt) {
    case SDE_DT_F32:
        memmove(d, src, n * 4);
        return 0;
    case SDE_DT_F16:
#ifdef SDE_CVT_X86
        if (use_f16c()) {
            f32_to_f16_f16c(src, n, d);
            return 0;
        }
#endif
        for (size_t i = 0; i < n; i++) {
            uint16_t h = half_of(src[i]);
            memcpy(d + 2 * i, &h, 2);
        }
        return 0;
    case SDE_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint32_t x;
            memcpy(&x, &src[i], 4);
            /* round at bit 16, ties to even; NaN made quiet so that rounding cannot turn it into infinity */
            uint16_t h = (x & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((x >> 16) | 0x40)
                                                         : (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
            memcpy(d + 2 * i, &h, 2);
        }
        return 0;
    default:
        return -1;
    }
}
