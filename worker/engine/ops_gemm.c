/* ops_gemm.c: sde_gemm(), the one entry the ops call for GEMMs: our packed AVX-512 kernels (float32
 * vfmadd231ps, or the opt-in bf16 vdpbf16ps with float32 accumulation), or OpenBLAS on other CPUs. */
#include "ops.h"
#include "ops_internal.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "dtype_convert.h"

#ifdef SDE_HAVE_BF16_KERNEL
#include <immintrin.h>
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")))
#define F32_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
#endif

static int bf16_on;

int sde_cpu_has_avx512(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    static int on = -1;
    if (on < 0) {
        __builtin_cpu_init(); /* its AVX-512 checks include the OS saving the ZMM state (XCR0) */
        on = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl");
    }
    return on;
#else
    return 0;
#endif
}

int sde_cpu_has_bf16(void)
{
#ifdef SDE_HAVE_BF16_KERNEL
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

void sde_set_bf16(int on)
{
    bf16_on = on && sde_cpu_has_bf16();
}

int sde_get_bf16(void)
{
    return bf16_on;
}

#ifdef SDE_HAVE_BF16_KERNEL
/* 1 when float32 GEMMs run on our AVX-512 kernel rather than OpenBLAS: on a CPU with AVX-512 F/BW/VL,
 * unless SDW_FP32_GEMM=openblas. Decided once. */
static int f32_kernel(void)
{
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("SDW_FP32_GEMM");
        on = !(e && !strcmp(e, "openblas")) && sde_cpu_has_avx512();
    }
    return on;
}
#endif

/* float32 -> bf16 bits, round to nearest even (NaN stays NaN): what vcvtneps2bf16 does. */
static inline uint16_t bf16_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

#ifdef SDE_HAVE_BF16_KERNEL
/* 16 elements of type t at p (f32, f16 or bf16 bits) as bf16 bits, the first n of them (the rest 0). */
BF16_TARGET static inline __m256i ld16_bf16(const void *p, int t, int n)
{
    const __mmask16 m = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
    if (t == SDE_GEMM_BF16) return _mm256_maskz_loadu_epi16(m, p);
    if (t == SDE_GEMM_F16)
        return (__m256i)_mm512_cvtneps_pbh(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)));
    return (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, p));
}

/* Element i of a typed array as bf16 bits. */
static inline uint16_t el_bf16(const void *p, int t, size_t i)
{
    if (t == SDE_GEMM_BF16) return ((const uint16_t *)p)[i];
    if (t == SDE_GEMM_F16) return bf16_round(sde_cvt_half(((const uint16_t *)p)[i]));
    return bf16_round(((const float *)p)[i]);
}

static inline size_t tsize(int t)
{
    return t == SDE_GEMM_F32 ? 4 : 2;
}

/* Register tile: MR rows of A (broadcast pairs) by NR columns of B (two zmm of 16 pairs); 24 accumulators
 * (with 8 rows and 16, the bf16 SD 1.5 step was 2 % slower on Zen 5, whose two 512-bit pipes want more
 * independent sums in flight; float32 1 %).
 * KC: k values per packed block (the B panel, KC/2 x NR dwords = 32 KB, stays in L1 for a strip of A;
 * with 256, C was passed over twice for the linear layers' K = 320, and the 8192 x 2560 x 320 product ran
 * at 580 GFLOP/s on two Zen 5 threads instead of 890-920); NC: columns packed at once (a block of KC x NC
 * stays in L2 while every strip of A passes over it). */
#define MR 12
#define NR 32
#define KC 512
#define NC 256

/* C[0..mr)[0..nr) (+)= acc: the register tile stored, with C's old values when load, and a bias per
 * column (bcol) or per row (brow), given with the first K block, added as C is stored. */
F32_TARGET static inline __attribute__((always_inline)) void kern_store(__m512 acc[MR][2], float *c,
                                                                        size_t ldc, int mr, int nr, int load,
                                                                        const float *bcol, const float *brow)
{
    const __mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
    const __mmask16 m1 = nr >= 32 ? 0xffff : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
    const __m512 bc0 = bcol ? _mm512_maskz_loadu_ps(m0, bcol) : _mm512_setzero_ps();
    const __m512 bc1 = bcol ? _mm512_maskz_loadu_ps(m1, bcol + 16) : _mm512_setzero_ps();
    for (int i = 0; i < mr; i++) {
        float *cr = c + (size_t)i * ldc;
        __m512 v0 = acc[i][0], v1 = acc[i][1];
        if (load) {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, cr));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, cr + 16));
        }
        if (bcol) {
            v0 = _mm512_add_ps(v0, bc0);
            v1 = _mm512_add_ps(v1, bc1);
        } else if (brow) {
            v0 = _mm512_add_ps(v0, _mm512_set1_ps(brow[i]));
            v1 = _mm512_add_ps(v1, _mm512_set1_ps(brow[i]));
        }
        _mm512_mask_storeu_ps(cr, m0, v0);
        _mm512_mask_storeu_ps(cr + 16, m1, v1);
    }
}

/* C[0..mr)[0..nr) (+)= A[mr rows, lda apart][2*kp] . Bp[kp][NR pairs]; rows of A past mr repeat the last
 * one (computed, not stored). */
BF16_TARGET static void kern_12x32(int kp, const uint16_t *a, size_t lda, const uint32_t *bp, float *c,
                                   size_t ldc, int mr, int nr, int load, const float *bcol, const float *brow)
{
    __m512 acc[MR][2];
    const uint32_t *ar[MR];
    for (int i = 0; i < MR; i++) {
        acc[i][0] = _mm512_setzero_ps();
        acc[i][1] = _mm512_setzero_ps();
        ar[i] = (const uint32_t *)(a + (size_t)(i < mr ? i : mr - 1) * lda);
    }
    for (int p = 0; p < kp; p++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + (size_t)p * NR);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + (size_t)p * NR + 16);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            const __m512bh av = (__m512bh)_mm512_set1_epi32((int)ar[i][p]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], av, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], av, b1);
        }
    }
    kern_store(acc, c, ldc, mr, nr, load, bcol, brow);
}

/* The float32 twin: C (+)= A[mr rows, lda apart][kc] . Bp[kc][NR] with vfmadd231ps, k in order. */
F32_TARGET static void kern_f32_12x32(int kc, const float *a, size_t lda, const float *bp, float *c,
                                      size_t ldc, int mr, int nr, int load, const float *bcol,
                                      const float *brow)
{
    __m512 acc[MR][2];
    const float *ar[MR];
    for (int i = 0; i < MR; i++) {
        acc[i][0] = _mm512_setzero_ps();
        acc[i][1] = _mm512_setzero_ps();
        ar[i] = a + (size_t)(i < mr ? i : mr - 1) * lda;
    }
    for (int k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_loadu_ps(bp + (size_t)k * NR),
                     b1 = _mm512_loadu_ps(bp + (size_t)k * NR + 16);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            const __m512 av = _mm512_set1_ps(ar[i][k]);
            acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
        }
    }
    kern_store(acc, c, ldc, mr, nr, load, bcol, brow);
}

/* In-register transpose of 16 rows of 16 dwords: r[c] becomes column c. Unpacks make 4x4 blocks within
 * 128-bit lanes (r[4b+m] lane L = column 4L+m of rows 4b..4b+3); two lane shuffles gather the blocks. */
F32_TARGET static inline void tr16x16_epi32(__m512i r[16])
{
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int m = 0; m < 4; m++) {
        const __m512i a = _mm512_shuffle_i32x4(r[m], r[4 + m], 0x88),
                      bb = _mm512_shuffle_i32x4(r[m], r[4 + m], 0xdd),
                      c = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0x88),
                      d = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0xdd);
        t[m] = _mm512_shuffle_i32x4(a, c, 0x88);      /* column m */
        t[8 + m] = _mm512_shuffle_i32x4(a, c, 0xdd);  /* column 8+m */
        t[4 + m] = _mm512_shuffle_i32x4(bb, d, 0x88); /* column 4+m */
        t[12 + m] = _mm512_shuffle_i32x4(bb, d, 0xdd);
    }
    for (int i = 0; i < 16; i++)
        r[i] = t[i];
}

/* Packs panel q (columns [q*NR, q*NR+NR)) of B, all K rows, at bp: for each pair of rows p, NR dwords
 * (bf16 of row 2p in the low half, row 2p+1 in the high half; zero past K or N). */
BF16_TARGET static void pack_b_panel(const void *B, int bt, size_t ldb, int transB, int K, int N, int q,
                                     uint32_t *bp)
{
    const int kp = (K + 1) / 2, jq = q * NR, nq = N - jq < NR ? N - jq : NR;
    const size_t es = tsize(bt);
    const char *b = B;
    if (!transB) { /* B[k][j]: two rows of 16 columns at a time, interleaved by widening */
        for (int p = 0; p < kp; p++) {
            const int ka = 2 * p, kb = ka + 1;
            for (int h = 0; h < NR; h += 16) {
                const int nh = nq - h < 0 ? 0 : nq - h;
                __m512i lo = _mm512_cvtepu16_epi32(ld16_bf16(b + ((size_t)ka * ldb + jq + h) * es, bt, nh));
                __m512i hi =
                    kb < K ? _mm512_cvtepu16_epi32(ld16_bf16(b + ((size_t)kb * ldb + jq + h) * es, bt, nh))
                           : _mm512_setzero_si512();
                _mm512_storeu_si512(bp + (size_t)p * NR + h, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
            }
        }
        return;
    }
    /* B[k][j] = src[j][k]: each column's k run is contiguous, and a packed dword (a k pair of column j) is
     * dword p of that run: 16 columns x 16 pairs at a time, converted and transposed in registers */
    for (int h = 0; h < NR; h += 16)
        for (int p0 = 0; p0 < kp; p0 += 16) {
            __m512i r[16];
            for (int jj = 0; jj < 16; jj++) {
                if (h + jj >= nq) {
                    r[jj] = _mm512_setzero_si512();
                    continue;
                }
                const char *src = b + ((size_t)(jq + h + jj) * ldb + 2 * (size_t)p0) * es;
                const int n0 = K - 2 * p0, n1 = n0 - 16 > 0 ? n0 - 16 : 0;
                r[jj] = _mm512_inserti64x4(_mm512_castsi256_si512(ld16_bf16(src, bt, n0)),
                                           ld16_bf16(src + 16 * es, bt, n1), 1);
            }
            tr16x16_epi32(r);
            const int np = kp - p0 < 16 ? kp - p0 : 16;
            for (int t = 0; t < np; t++)
                _mm512_storeu_si512(bp + (size_t)(p0 + t) * NR + h, r[t]);
        }
}

/* Rows [r0, r1) and columns [k0, k0+kc) of A as bf16 at d (rows ldd apart, ldd even), with a zero after an
 * odd kc so pairs are whole. */
BF16_TARGET static void conv_a_block(const void *A, int at, size_t lda_src, int transA, int r0, int r1,
                                     int k0, int kc, uint16_t *d, size_t ldd)
{
    const size_t es = tsize(at);
    if (transA) {
        /* A[i][k] = src[k][i], 32 k x 16 rows at a time: rows k and k+1 of the source, 16 elements each,
         * rounded to bf16 and interleaved into dwords (a pair per row i), then the 16 x 16 dword
         * transpose leaves each row i's 32 bf16 in one vector. Element by element this ran at a third of
         * the speed of the same product untransposed (the UNet's proj_in, 8192 x 320 x 320). */
        for (int kb = 0; kb < kc; kb += 32) {
            const int np = (kc - kb < 32 ? kc - kb + 1 : 32) / 2; /* dwords: pairs, a zero after odd kc */
            const __mmask16 pm = np == 16 ? 0xffff : (__mmask16)((1u << np) - 1);
            for (int ib = r0; ib < r1; ib += 16) {
                const int ni = r1 - ib < 16 ? r1 - ib : 16;
                __m512i r[16];
                for (int p = 0; p < 16; p++) {
                    const int k = kb + 2 * p;
                    const char *src = (const char *)A + ((size_t)(k0 + k) * lda_src + ib) * es;
                    const __m512i lo =
                        k < kc ? _mm512_cvtepu16_epi32(ld16_bf16(src, at, ni)) : _mm512_setzero_si512();
                    const __m512i hi = k + 1 < kc
                                           ? _mm512_cvtepu16_epi32(ld16_bf16(src + lda_src * es, at, ni))
                                           : _mm512_setzero_si512();
                    r[p] = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
                }
                tr16x16_epi32(r);
                for (int c = 0; c < ni; c++)
                    _mm512_mask_storeu_epi32(d + (size_t)(ib + c - r0) * ldd + kb, pm, r[c]);
            }
        }
    } else {
        for (int i = r0; i < r1; i++) {
            const char *s = (const char *)A + ((size_t)i * lda_src + k0) * es;
            uint16_t *di = d + (size_t)(i - r0) * ldd;
            for (int k = 0; k < kc; k += 16)
                _mm256_storeu_si256((__m256i *)(di + k), ld16_bf16(s + (size_t)k * es, at, kc - k));
        }
    }
    if (kc & 1)
        for (int i = r0; i < r1; i++)
            d[(size_t)(i - r0) * ldd + kc] = 0;
}

/* 16 elements of type t at p as float32, the first n of them (the rest 0). */
F32_TARGET static inline __m512 ld16_f32(const void *p, int t, int n)
{
    const __mmask16 m = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
    if (t == SDE_GEMM_F32) return _mm512_maskz_loadu_ps(m, p);
    const __m256i h = _mm256_maskz_loadu_epi16(m, p);
    if (t == SDE_GEMM_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Element i of a typed array as float32. */
static inline float el_f32(const void *p, int t, size_t i)
{
    if (t == SDE_GEMM_F32) return ((const float *)p)[i];
    const uint16_t h = ((const uint16_t *)p)[i];
    if (t == SDE_GEMM_F16) return sde_cvt_half(h);
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* pack_b_panel's float32 twin: panel q of B as K rows of NR floats (zero past N). */
F32_TARGET static void pack_b_panel_f32(const void *B, int bt, size_t ldb, int transB, int K, int N, int q,
                                        float *bp)
{
    const int jq = q * NR, nq = N - jq < NR ? N - jq : NR;
    const size_t es = tsize(bt);
    const char *b = B;
    if (!transB) {
        for (int k = 0; k < K; k++)
            for (int h = 0; h < NR; h += 16)
                _mm512_storeu_ps(bp + (size_t)k * NR + h,
                                 ld16_f32(b + ((size_t)k * ldb + jq + h) * es, bt, nq - h < 0 ? 0 : nq - h));
        return;
    }
    /* B[k][j] = src[j][k]: 16 columns x 16 k at a time, transposed in registers */
    for (int h = 0; h < NR; h += 16)
        for (int k0 = 0; k0 < K; k0 += 16) {
            __m512i r[16];
            for (int jj = 0; jj < 16; jj++)
                r[jj] = h + jj < nq ? _mm512_castps_si512(
                                          ld16_f32(b + ((size_t)(jq + h + jj) * ldb + k0) * es, bt, K - k0))
                                    : _mm512_setzero_si512();
            tr16x16_epi32(r);
            const int nk = K - k0 < 16 ? K - k0 : 16;
            for (int t = 0; t < nk; t++)
                _mm512_storeu_si512(bp + (size_t)(k0 + t) * NR + h, r[t]);
        }
}

/* conv_a_block's float32 twin: rows [r0, r1) and columns [k0, k0+kc) of A as float32 at d. */
F32_TARGET static void conv_a_block_f32(const void *A, int at, size_t lda_src, int transA, int r0, int r1,
                                        int k0, int kc, float *d, size_t ldd)
{
    const size_t es = tsize(at);
    if (transA) { /* 16 k x 16 rows at a time through the in-register transpose */
        for (int kb = 0; kb < kc; kb += 16) {
            const int nk = kc - kb < 16 ? kc - kb : 16;
            const __mmask16 km = nk == 16 ? 0xffff : (__mmask16)((1u << nk) - 1);
            for (int ib = r0; ib < r1; ib += 16) {
                const int ni = r1 - ib < 16 ? r1 - ib : 16;
                __m512i r[16];
                for (int k = 0; k < 16; k++)
                    r[k] = k < nk
                               ? _mm512_castps_si512(ld16_f32(
                                     (const char *)A + ((size_t)(k0 + kb + k) * lda_src + ib) * es, at, ni))
                               : _mm512_setzero_si512();
                tr16x16_epi32(r);
                for (int c = 0; c < ni; c++)
                    _mm512_mask_storeu_ps(d + (size_t)(ib + c - r0) * ldd + kb, km,
                                          _mm512_castsi512_ps(r[c]));
            }
        }
        return;
    }
    for (int i = r0; i < r1; i++) {
        const char *src = (const char *)A + ((size_t)i * lda_src + k0) * es;
        float *di = d + (size_t)(i - r0) * ldd;
        for (int k = 0; k < kc; k += 16)
            _mm512_storeu_ps(di + k, ld16_f32(src + (size_t)k * es, at, kc - k));
    }
}

typedef struct {
    int M, N, K, transA, transB, beta1;
    int f32; /* float32 operands (kern_f32_12x32) instead of bf16 pairs (kern_12x32) */
    const void *A, *B;
    int at, bt;
    size_t lda_src, ldb;
    float *C;
    size_t ldc;
    void *bp;                         /* B packed: panel q at q * ku * NR dwords */
    const float *bias_row, *bias_col; /* added to C with the first K block, or NULL */
    int ku, kc, n_panels, nN, nM;     /* ku: K in packing units (pairs in bf16); kc: k per block */
    int a_block;                      /* A converted a block at a time as used (one block of columns) */
    int a_direct;                     /* float32 A as stored, read in place: no conversion, no A scratch */
} gemm_job;

/* Rows of A per block: a block of MC x KC bf16 (96 KB) stays in L2 while every panel of B passes.
 * Float32 goes 512 deep too (A blocks of 192 KB in L2, B panels of 64 KB): with 128, as bf16's bytes, C was
 * read and written again for every 128 of K, and the linear layers' products of K = 320 with 8192 x 2560
 * outputs (84 MB of C) ran at 275 GFLOP/s on two Zen 5 threads instead of 455-499. */
#define MC 96
#define KC_F32 512

/* Scratch: B packed (kept between calls); per thread, the item's rows of A in bf16 or float32, as blocks
 * [K block][row block][MC][kc]. */
static void *bbuf;
static size_t bbuf_n;
static void *abuf[SDE_PAR_MAX];
static size_t abuf_n[SDE_PAR_MAX];

static void pack_b_item(void *ctx, int item, int thread)
{
    (void)thread;
    const gemm_job *j = ctx;
    uint32_t *bq = (uint32_t *)j->bp + (size_t)item * j->ku * NR;
    if (j->f32)
        pack_b_panel_f32(j->B, j->bt, j->ldb, j->transB, j->K, j->N, item, (float *)bq);
    else
        pack_b_panel(j->B, j->bt, j->ldb, j->transB, j->K, j->N, item, bq);
}

/* Rows [r0, r1), columns [k0, k0+kc) of A into a block of ldd-element rows, as the job's kernel reads it. */
static void a_block(const gemm_job *j, int r0, int r1, int k0, int kc, void *d, int transA)
{
    if (j->f32)
        conv_a_block_f32(j->A, j->at, j->lda_src, transA, r0, r1, k0, kc, d, (size_t)j->kc);
    else
        conv_a_block(j->A, j->at, j->lda_src, transA, r0, r1, k0, kc, d, (size_t)j->kc);
}

static void gemm_item(void *ctx, int item, int thread)
{
    const gemm_job *j = ctx;
    const int in = item % j->nN, im = item / j->nN;
    const int p0 = (int)((long)j->n_panels * in / j->nN), p1 = (int)((long)j->n_panels * (in + 1) / j->nN);
    const int strips = (j->M + MR - 1) / MR;
    const int i0 = (int)((long)strips * im / j->nM) * MR, i1s = (int)((long)strips * (im + 1) / j->nM) * MR;
    const int i1 = i1s < j->M ? i1s : j->M;
    if (i0 >= i1) return;
    const int nic = (i1 - i0 + MC - 1) / MC, KB = j->kc;
    const size_t es = j->f32 ? sizeof(float) : sizeof(uint16_t), kstep = j->f32 ? 1 : 2;
    char *abig = abuf[thread];
    /* float32 A as stored is read in place (the kernel takes its rows lda apart); anything else is copied */
    const int a_direct = j->a_direct;
    const size_t lda_k = a_direct ? j->lda_src : (size_t)KB;
#define ABLK(pc, ic)                                                                                         \
    (a_direct     ? (char *)((const float *)j->A + (size_t)(ic)*j->lda_src + (pc))                           \
     : j->a_block ? abig                                                                                     \
                  : abig + ((size_t)((pc) / KB) * nic + (size_t)((ic)-i0) / MC) * MC * KB * es)
    /* A converted first, a whole row at a time: long contiguous reads (a 64 x 256 block read in place would
     * touch 64 rows of a weight matrix, each on its own page, for 512 bytes each). With one block of
     * columns per item each block of A is used once: it is converted just before, into one block that
     * stays in L2 (a 1280 x 23040 F16 weight was converted into 59-118 MB and read back). */
    if (a_direct || j->a_block) {
    } else if (j->transA) {
        for (int pc = 0; pc < j->K; pc += KB)
            for (int ic = i0; ic < i1; ic += MC)
                a_block(j, ic, i1 - ic < MC ? i1 : ic + MC, pc, j->K - pc < KB ? j->K - pc : KB, ABLK(pc, ic),
                        1);
    } else {
        for (int i = i0; i < i1; i++)
            for (int pc = 0; pc < j->K; pc += KB)
                a_block(j, i, i + 1, pc, j->K - pc < KB ? j->K - pc : KB,
                        ABLK(pc, i0 + (i - i0) / MC * MC) + (size_t)((i - i0) % MC) * KB * es, 0);
    }
    /* Each element's K blocks are summed in order either way. pc outermost keeps a kc x NC block of packed
     * B in L2 while every row block of A passes over it, but passes over the item's C once per K block;
     * when that C outgrows L2 (the linear layers' 512 x 10240 x 1280: 5 MB per item, 3 passes), each
     * MC x NC block of C is finished in L2 over all of K first. */
    const int c_first =
        j->K > KB && (size_t)(i1 - i0) * (size_t)(p1 - p0) * NR * sizeof(float) > ((size_t)1 << 20);
    for (int o1 = 0; o1 < (c_first ? p1 - p0 : j->K); o1 += c_first ? NC / NR : KB)
        for (int ic = i0; ic < i1; ic += MC)
            for (int o2 = 0; o2 < (c_first ? j->K : p1 - p0); o2 += c_first ? KB : NC / NR) {
                const int pc = c_first ? o2 : o1, qb = p0 + (c_first ? o1 : o2);
                const int qe = qb + NC / NR < p1 ? qb + NC / NR : p1, mc = i1 - ic < MC ? i1 - ic : MC;
                const int kc = j->K - pc < KB ? j->K - pc : KB, kp = (kc + 1) / 2, load = pc > 0 || j->beta1;
                if (j->a_block) a_block(j, ic, ic + mc, pc, kc, abig, j->transA);
                const char *a = ABLK(pc, ic);
                for (int q = qb; q < qe; q++) {
                    const int nr = j->N - q * NR < NR ? j->N - q * NR : NR;
                    const uint32_t *bq =
                        (const uint32_t *)j->bp + ((size_t)q * j->ku + (size_t)pc / kstep) * NR;
                    for (int s = 0; s < mc; s += MR) {
                        float *c = j->C + (size_t)(ic + s) * j->ldc + q * NR;
                        const int mr = mc - s < MR ? mc - s : MR;
                        const float *bcol = j->bias_col && !pc ? j->bias_col + q * NR : NULL,
                                    *brow = j->bias_row && !pc ? j->bias_row + ic + s : NULL;
                        if (j->f32)
                            kern_f32_12x32(kc, (const float *)a + (size_t)s * lda_k, lda_k, (const float *)bq,
                                           c, j->ldc, mr, nr, load, bcol, brow);
                        else
                            kern_12x32(kp, (const uint16_t *)a + (size_t)s * KB, (size_t)KB, bq, c, j->ldc,
                                       mr, nr, load, bcol, brow);
                    }
                }
            }
#undef ABLK
}

/* Scratch kept between calls, grown by at least half again: each new mapping's pages are zeroed by the
 * kernel as they are first written, and growing just to each larger product's size remapped the packed B
 * again and again through the first step (its first touches were a tenth of a one-step job's CPU time). */
static int grow(void **p, size_t *have, size_t bytes)
{
    if (*have >= bytes) return 0;
    if (bytes < *have + *have / 2) bytes = *have + *have / 2;
    sde_mem_drop(*p); /* outgrown: never asked for again */
    *have = 0;
    if (!(*p = sde_mem_alloc(bytes))) return -1;
    *have = bytes;
    return 0;
}

/* C (+)= op(A) op(B) (+ bias) on our packed kernels: bf16 pairs through vdpbf16ps, or (f32) float32
 * through vfmadd231ps. 0, or -1 when scratch cannot be had (the caller falls back to OpenBLAS). */
/* A product of at most SMALL_M rows in float32 (the time embedding's linear layers: 2 rows; the UNet's
 * conv_out: 4): packing a whole weight matrix for two rows cost more than the product (4 GFLOP/s), and
 * an 8-row tile did half its work for 4 (19 GFLOP/s); here B is read once, as stored. C (+)= op(A) op(B)
 * + bias, each element summed over k in order (transposed B: in 16 interleaved partial sums). */
#define SMALL_M 4
F32_TARGET static void gemm_small_m(int transA, int transB, int M, int N, int K, const void *A, int at,
                                    size_t lda, const void *B, int bt, size_t ldb, int beta1,
                                    const float *bias_row, const float *bias_col, float *C, size_t ldc)
{
    float a[SMALL_M][K];
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++)
            a[i][k] = el_f32(A, at, transA ? (size_t)k * lda + i : (size_t)i * lda + k);
    const size_t es = tsize(bt);
    /* B is read once: every row of C takes each vector of it as it comes */
    __m512 acc[SMALL_M];
    for (int j = 0; j < N; j += transB ? 1 : 16) {
        const int nj = N - j < 16 ? N - j : 16;
        const __mmask16 jm = nj == 16 ? 0xffff : (__mmask16)((1u << nj) - 1);
        for (int i = 0; i < M; i++)
            acc[i] = _mm512_setzero_ps();
        if (transB) { /* row j of B[N][K] against each row of A, 16 k at a time */
            const char *b = (const char *)B + (size_t)j * ldb * es;
            for (int k = 0; k < K; k += 16) {
                const __mmask16 km = K - k >= 16 ? 0xffff : (__mmask16)((1u << (K - k)) - 1);
                const __m512 bv = ld16_f32(b + (size_t)k * es, bt, K - k);
                for (int i = 0; i < M; i++)
                    acc[i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(km, a[i] + k), bv, acc[i]);
            }
            for (int i = 0; i < M; i++) {
                float *c = C + (size_t)i * ldc + j;
                *c = (beta1 ? *c : 0.0f) + _mm512_reduce_add_ps(acc[i]) + (bias_row ? bias_row[i] : 0.0f) +
                     (bias_col ? bias_col[j] : 0.0f);
            }
        } else { /* columns j..j+16: the sum over k of A[i][k] B[k][j..j+16) */
            for (int k = 0; k < K; k++) {
                const __m512 bv = ld16_f32((const char *)B + ((size_t)k * ldb + j) * es, bt, nj);
                for (int i = 0; i < M; i++)
                    acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(a[i][k]), bv, acc[i]);
            }
            for (int i = 0; i < M; i++) {
                float *c = C + (size_t)i * ldc + j;
                __m512 v = _mm512_add_ps(acc[i], _mm512_set1_ps(bias_row ? bias_row[i] : 0.0f));
                if (bias_col) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(jm, bias_col + j));
                if (beta1) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(jm, c));
                _mm512_mask_storeu_ps(c, jm, v);
            }
        }
    }
}

/* The job of one product: its operands and its packing's sizes (the caller sets the split, the buffer for
 * packed B, beta and the bias). */
static gemm_job job_make(int f32, int transA, int transB, int M, int N, int K, const void *A, int at, int lda,
                         const void *B, int bt, int ldb, float *C, int ldc)
{
    return (gemm_job){.M = M,
                      .N = N,
                      .K = K,
                      .transA = transA,
                      .transB = transB,
                      .f32 = f32,
                      .A = A,
                      .B = B,
                      .at = at,
                      .bt = bt,
                      .lda_src = (size_t)lda,
                      .ldb = (size_t)ldb,
                      .C = C,
                      .ldc = (size_t)ldc,
                      .ku = f32 ? K : (K + 1) / 2,
                      .kc = f32 ? KC_F32 : KC,
                      .n_panels = (N + NR - 1) / NR,
                      .a_direct = f32 && at == SDE_GEMM_F32 && !transA};
}

/* Once a job's split is chosen (nM x nN items, the largest with rows rows of A): whether A is converted a
 * block at a time, and every thread's A scratch grown to what an item converts. 0, or -1 without memory. */
static int job_split_done(gemm_job *j, int rows)
{
    j->a_block = !j->a_direct && (j->n_panels + j->nN - 1) / j->nN <= NC / NR;
    if (j->a_direct) return 0;
    const size_t blocks =
        j->a_block ? 1 : (size_t)(rows + MC - 1) / MC * (size_t)((j->K + j->kc - 1) / j->kc);
    const size_t bytes = blocks * MC * (size_t)j->kc * (j->f32 ? sizeof(float) : sizeof(uint16_t));
    for (int t = 0; t < SDE_PAR_MAX; t++)
        if (grow(&abuf[t], &abuf_n[t], bytes)) return -1;
    return 0;
}

static int gemm_packed(int f32, int transA, int transB, int M, int N, int K, const void *A, int at, int lda,
                       const void *B, int bt, int ldb, int beta1, const float *bias_row,
                       const float *bias_col, float *C, int ldc)
{
    gemm_job j = job_make(f32, transA, transB, M, N, K, A, at, lda, B, bt, ldb, C, ldc);
    const int ku = j.ku, n_panels = j.n_panels;
    if (grow(&bbuf, &bbuf_n, (size_t)n_panels * ku * NR * sizeof(uint32_t))) return -1;
    j.bp = bbuf;
    j.beta1 = beta1;
    j.bias_row = bias_row;
    j.bias_col = bias_col;
    sde_par_for(n_panels, pack_b_item, &j);
    /* 4 items (or fewer for small products): nM row ranges (of at least MC rows) by nN column ranges. Each
     * item converts its rows of A and reads its columns of packed B, so the split weighs the A rows
     * converted again (M nN) against the packed B read again (N nM, cheaper: already packed) */
    const int strips = (M + MR - 1) / MR, max_m = strips / (MC / MR) < 1 ? 1 : strips / (MC / MR);
    j.nM = 1;
    j.nN = n_panels < 4 ? n_panels : 4;
    double best = (double)M * j.nN + 0.5 * (double)N;
    for (int nm = 2; nm <= 4 && nm <= max_m; nm *= 2) {
        const int nn = 4 / nm < n_panels ? 4 / nm : n_panels;
        const double cost = (double)M * nn + 0.5 * (double)N * nm;
        /* the most items first, then the least work done twice */
        if (nm * nn > j.nM * j.nN || (nm * nn == j.nM * j.nN && cost < best))
            best = cost, j.nM = nm, j.nN = nn;
    }
    if (job_split_done(&j, (strips + j.nM - 1) / j.nM * MR)) return -1;
    sde_par_for(j.nN * j.nM, gemm_item, &j);
    return 0;
}

/* count products C_i = A_i B_i of float32 operands (sde_gemm_batch): each on one thread, its B packed
 * into that thread's own buffer, so a batch of small products (a Winograd convolution's 36 or 64) costs
 * one pass over the pool instead of two per product, and no product is split into thin items. */
static void *bbuf_t[SDE_PAR_MAX];
static size_t bbuf_t_n[SDE_PAR_MAX];

typedef struct {
    gemm_job j; /* the product's shape and operands of product 0 */
    size_t as, bs, cs;
} gemm_batch_job;

static void gemm_batch_item(void *ctx, int item, int thread)
{
    const gemm_batch_job *b = ctx;
    gemm_job j = b->j;
    j.A = (const float *)j.A + (size_t)item * b->as;
    j.B = (const float *)j.B + (size_t)item * b->bs;
    j.C += (size_t)item * b->cs;
    j.bp = bbuf_t[thread];
    for (int q = 0; q < j.n_panels; q++)
        pack_b_item(&j, q, thread);
    gemm_item(&j, 0, thread);
}

static int gemm_batch_packed(int f32, int count, int M, int N, int K, const float *A, size_t as, int lda,
                             const float *B, size_t bs, int ldb, float *C, size_t cs, int ldc)
{
    gemm_batch_job b = {.j = job_make(f32, 0, 0, M, N, K, A, SDE_GEMM_F32, lda, B, SDE_GEMM_F32, ldb, C, ldc),
                        .as = as,
                        .bs = bs,
                        .cs = cs};
    b.j.nM = b.j.nN = 1;
    if (job_split_done(&b.j, M)) return -1;
    for (int t = 0; t < SDE_PAR_MAX; t++)
        if (grow(&bbuf_t[t], &bbuf_t_n[t], (size_t)b.j.n_panels * b.j.ku * NR * sizeof(uint32_t))) return -1;
    sde_par_for(count, gemm_batch_item, &b);
    return 0;
}
#endif

/* Float32: OpenBLAS runs single-threaded (ops_pool.c) and a product is cut into column (or row) blocks
 * that our pool's threads multiply, so no BLAS thread spins in sched_yield while our own loops run (a
 * fifth of the CPU time of a step on 2 vCPUs went there). The blocking along K does not depend on the cut,
 * so each element should come out as in one whole call (not checked bit for bit; the goldens pass). */
typedef struct {
    int ta, tb, M, N, K, lda, ldb, ldc, items, by_cols;
    const float *A, *B;
    float alpha, beta, *C;
} sg_job;

static void sg_item(void *ctx, int item, int thread)
{
    (void)thread;
    const sg_job *j = ctx;
    const int n = j->by_cols ? j->N : j->M, q = j->by_cols ? 16 : 8;
    const int lo = (int)((long)(n / q) * item / j->items) * q,
              hi = item == j->items - 1 ? n : (int)((long)(n / q) * (item + 1) / j->items) * q;
    if (lo >= hi) return;
    const CBLAS_TRANSPOSE ta = j->ta ? CblasTrans : CblasNoTrans, tb = j->tb ? CblasTrans : CblasNoTrans;
    if (j->by_cols)
        cblas_sgemm(CblasRowMajor, ta, tb, j->M, hi - lo, j->K, j->alpha, j->A, j->lda,
                    j->B + (j->tb ? (size_t)lo * j->ldb : (size_t)lo), j->ldb, j->beta, j->C + lo, j->ldc);
    else
        cblas_sgemm(CblasRowMajor, ta, tb, hi - lo, j->N, j->K, j->alpha,
                    j->A + (j->ta ? (size_t)lo : (size_t)lo * j->lda), j->lda, j->B, j->ldb, j->beta,
                    j->C + (size_t)lo * j->ldc, j->ldc);
}

void sde_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    const double work = (double)M * N * K;
    sg_job j = {transA, transB, M, N, K, lda, ldb, ldc, 1, 1, A, B, alpha, beta, C};
    /* small products serially; big ones in 4 blocks so a thread the machine is slow to run costs less */
    j.items = !sde_par_blas_split() || work < 4e6 ? 1 : work < 1e8 ? 2 : 4;
    j.by_cols = N >= M ? N / 16 >= j.items : M / 8 < j.items; /* cut the longer side */
    if (j.by_cols ? N / 16 < j.items : M / 8 < j.items) j.items = 1;
    sde_par_for(j.items, sg_item, &j);
}

/* C = beta C + bias (per row and per column), what a product is then added to. */
static void bias_fill(int M, int N, const float *bias_row, const float *bias_col, float beta, float *C,
                      int ldc)
{
    for (int i = 0; i < M; i++) {
        float *row = C + (size_t)i * ldc;
        for (int c = 0; c < N; c++)
            row[c] = (beta == 0.0f ? 0.0f : beta * row[c]) + (bias_row ? bias_row[i] : 0.0f) +
                     (bias_col ? bias_col[c] : 0.0f);
    }
}

int sde_gemm_reads_16bit(void)
{
#ifdef SDE_HAVE_BF16_KERNEL
    return bf16_on || f32_kernel();
#else
    return 0;
#endif
}

void sde_gemm_tb(int transA, int transB, int M, int N, int K, const void *A, int at, int lda, const void *B,
                 int bt, int ldb, const float *bias_row, const float *bias_col, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
#ifdef SDE_HAVE_BF16_KERNEL
    if (!bf16_on && f32_kernel() && M <= SMALL_M && K > 0 && K <= 4096 && (beta == 0.0f || beta == 1.0f)) {
        gemm_small_m(transA, transB, M, N, K, A, at, (size_t)lda, B, bt, (size_t)ldb, beta == 1.0f, bias_row,
                     bias_col, C, (size_t)ldc);
        return;
    }
    if ((bf16_on || f32_kernel()) && K > 0 && (beta == 0.0f || beta == 1.0f) &&
        !gemm_packed(!bf16_on, transA, transB, M, N, K, A, at, lda, B, bt, ldb, beta == 1.0f, bias_row,
                     bias_col, C, ldc))
        return;
#endif
    /* OpenBLAS: the bias is added into C first; a stored F16/BF16 operand (a weight) is widened into this
     * thread's scratch */
    if (bias_row || bias_col) {
        bias_fill(M, N, bias_row, bias_col, beta, C, ldc);
        beta = 1.0f;
    }
    if (at != SDE_GEMM_F32 && bt != SDE_GEMM_F32) abort(); /* never called so: weights are one side */
    if (at != SDE_GEMM_F32 && !(A = sde_widen(A, at == SDE_GEMM_BF16, (size_t)(transA ? K : M) * lda)))
        abort();
    if (bt != SDE_GEMM_F32 && !(B = sde_widen(B, bt == SDE_GEMM_BF16, (size_t)(transB ? N : K) * ldb)))
        abort();
    sde_sgemm(transA, transB, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

void sde_gemm_t(int transA, int transB, int M, int N, int K, const void *A, int at, int lda, const void *B,
                int bt, int ldb, float beta, float *C, int ldc)
{
    sde_gemm_tb(transA, transB, M, N, K, A, at, lda, B, bt, ldb, NULL, NULL, beta, C, ldc);
}

void sde_gemm(int transA, int transB, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc)
{
    sde_gemm_t(transA, transB, M, N, K, A, SDE_GEMM_F32, lda, B, SDE_GEMM_F32, ldb, beta, C, ldc);
}

void sde_gemm_batch(int count, int M, int N, int K, const float *A, size_t a_stride, int lda, const float *B,
                    size_t b_stride, int ldb, float *C, size_t c_stride, int ldc)
{
    if (M <= 0 || N <= 0 || count <= 0) return;
#ifdef SDE_HAVE_BF16_KERNEL
    if ((bf16_on || f32_kernel()) && K > 0 && M > SMALL_M &&
        !gemm_batch_packed(!bf16_on, count, M, N, K, A, a_stride, lda, B, b_stride, ldb, C, c_stride, ldc))
        return;
#endif
    for (int i = 0; i < count; i++)
        sde_gemm(0, 0, M, N, K, A + (size_t)i * a_stride, lda, B + (size_t)i * b_stride, ldb, 0.0f,
                 C + (size_t)i * c_stride, ldc);
}
