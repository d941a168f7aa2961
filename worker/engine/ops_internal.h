/* ops_internal.h: what the ops_*.c kernel files share and nothing outside them sees: the fork-join
 * pool, the AVX2 clone attribute and the softmax pieces the BLAS attention path reuses. */
#ifndef SDE_OPS_INTERNAL_H
#define SDE_OPS_INTERNAL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* FP exceptions are never trapped here; saying so lets gcc if-convert the clamps and selects in the
 * elementwise loops below and vectorise them. Results are unchanged. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

/* Hot elementwise loops get x86-64-v4 (AVX-512) and x86-64-v3 (AVX2+FMA) clones picked at load time by CPU
 * features (not by CPU model, so AMD parts qualify too); the baseline build is plain x86-64. Elementwise,
 * the clones compute the same expressions with more lanes at a time, and the images came out the same
 * bytes; the v4 clone took the GEGLU of an SD 1.5 512x512 step from about 65 to 40 ms on two Zen 5 threads
 * (erf's polynomial and exp are compute-bound). Reductions (SDE_HOT_SUM) keep the v3 clone only: there
 * GCC fused sumsq_dev's d*d and add in the v4 build and not in the v3 one, and GroupNorm's variance, one
 * rounding apart, moved an SD 1.5 image by up to 1/255; so every AVX2 or AVX-512 machine sums alike. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define SDE_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define SDE_HOT_SUM __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SDE_HOT
#define SDE_HOT_SUM
#endif

/* Lanes of the manual partial sums below: written as independent accumulators so the loops vectorise
 * without -ffast-math (which would also change rounding elsewhere). */
#define LANES 16
/* ---------------------------------------------------------------------------------------------------- */
/* Vectorisable transcendental helpers. */

/* The exp scheme every exp here uses (fast_expf, and the AVX2 and AVX-512 attention's vector twins):
 * clamps, Cody-Waite ln 2 in two parts, the Cephes expf polynomial P0..P5 (highest degree first). */
#define SDE_EXP_HI 88.7f
#define SDE_EXP_LO (-87.3f)
#define SDE_EXP_LOG2E 1.44269504088896341f
#define SDE_EXP_LN2_HI 0.693359375f
#define SDE_EXP_LN2_LO 2.12194440e-4f /* ln 2 = LN2_HI - LN2_LO */
#define SDE_EXP_P0 1.9875691500e-4f
#define SDE_EXP_P1 1.3981999507e-3f
#define SDE_EXP_P2 8.3334519073e-3f
#define SDE_EXP_P3 4.1665795894e-2f
#define SDE_EXP_P4 1.6666665459e-1f
#define SDE_EXP_P5 5.0000001201e-1f

/* exp(x) for float x, within ~2 ulp: Cody-Waite range reduction and the Cephes expf polynomial.
 * Branch-free so loops calling it vectorise; underflows to exactly 0 below -87.3 and saturates at 88.7. */
static inline __attribute__((always_inline)) float fast_expf(float x)
{
    float xc = x > SDE_EXP_HI ? SDE_EXP_HI : x;
    xc = xc < SDE_EXP_LO ? SDE_EXP_LO : xc;
    float t = xc * SDE_EXP_LOG2E;
    float n = (t + 12582912.0f) - 12582912.0f; /* round to nearest integer */
    float r = xc - n * SDE_EXP_LN2_HI;
    r = r + n * SDE_EXP_LN2_LO;
    float p = SDE_EXP_P0;
    p = p * r + SDE_EXP_P1;
    p = p * r + SDE_EXP_P2;
    p = p * r + SDE_EXP_P3;
    p = p * r + SDE_EXP_P4;
    p = p * r + SDE_EXP_P5;
    p = p * r * r + r + 1.0f;
    int32_t ni = (int32_t)n;
    int32_t bits = (ni + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float res = p * scale;
    return x < SDE_EXP_LO ? 0.0f : res;
}

/* erfc(z) for z >= 0 with fractional error < 1.2e-7 everywhere (Numerical Recipes' Chebyshev fit), so
 * GELU keeps full relative precision in its negative tail where 1 + erf(x) cancels. */
static inline __attribute__((always_inline)) float erfc_pos(float z)
{
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    return t * fast_expf(-z * z + p);
}

/* Exact-erf GELU: x * Phi(x), Phi(x) = erfc(-x/sqrt2)/2. */
static inline __attribute__((always_inline)) float gelu_1(float x)
{
    float z = fabsf(x) * 0.70710678118654752f;
    float e = 0.5f * erfc_pos(z);
    return x * (x >= 0.0f ? 1.0f - e : e);
}

static inline __attribute__((always_inline)) float silu_1(float x)
{
    return x / (1.0f + fast_expf(-x));
}

/* The fused attention's blocking (ops_attention.c, and its bf16 twin ops_attention_bf16.c). */
#define FA_MR 6   /* query rows per micro-tile */
#define FA_QB 24  /* query rows per block: 4 micro-tiles share each K/V chunk from L2 */
#define FA_KC 256 /* keys per chunk */
#define FA_MAX_HD 160

/* The bf16 kernels need gcc's AVX512-BF16 intrinsics; elsewhere only the float32 path exists. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SDE_HAVE_BF16_KERNEL 1
/** One head of the fused attention with bf16 products and float32 softmax and accumulation; ws as the
 * float32 path's workspace. */
void sde_attn_head_bf16(const float *q, int qs, const float *k, int ks, const float *v, int vs, int nq,
                        int nk, int hd, float scale, float *out, int os, float *ws);
#endif

/** 1 when the CPU (and OS) run AVX-512 F, BW and VL: the float32 GEMM kernel and the attention's
 * AVX-512 twins. Decided once. */
int sde_cpu_has_avx512(void);
/** The body of one parallel item: item in [0, n), thread in [0, SDE_PAR_MAX) indexes per-thread scratch. */
typedef void (*par_fn)(void *ctx, int item, int thread);
/** Runs fn(ctx, i, thread) for i in [0, n) on the pool (ops_pool.c); serial when nested or single-threaded.
 */
void sde_par_for(int n, par_fn fn, void *ctx);
/** 1 when the pool spreads GEMMs over single-threaded OpenBLAS calls (SDE_PAR_MAX threads or fewer were
 * asked for), 0 when OpenBLAS threads them itself; configures the default pool on first use. */
int sde_par_blas_split(void);
/** Largest element of x[0..n). */
float sde_row_max(const float *x, int n);
/** exp(x - m) in place over x[0..n), returning the sum. */
float sde_exp_sum(float *x, int n, float m);
/** x[i] *= s. */
void sde_scale_inplace(float *x, size_t n, float s);
/** y[i] = x[i]*sc + sh, then SiLU if silu; x and y may be the same. */
void sde_affine_row(const float *x, float *y, size_t n, float sc, float sh, int silu);

#endif
