/* ops_attention.c: multi-head scaled-dot-product attention: a fused flash-style AVX2 kernel for long
 * sequences with small heads, blocked BLAS with an exact softmax for the rest. */
#include "ops.h"
#include "ops_internal.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------------- */
/* Attention. */

/* Queries per block of the BLAS path: the score block stays within ~4 MB unless nq is small. */
static int attn_block(int nq, int nk)
{
    int blk = (1 << 20) / (nk > 0 ? nk : 1);
    if (blk < 16) blk = 16;
    return blk < nq ? blk : nq;
}

/* The fused path: a flash-attention style AVX2 kernel for the UNet's long sequences with small heads,
 * where BLAS spends more time packing and zeroing than multiplying (K = head_dim = 40). Per head, K and V
 * are packed once; then for blocks of FA_QB queries and chunks of FA_KC keys: scores into an L1-sized
 * buffer, an online-softmax update, and P*V accumulated into an [FA_QB][hd] output block. */

static int attn_fused_ok(int nq, int nk, int hd, int causal)
{
#if defined(__x86_64__) && defined(__GNUC__)
    static int cpu = -1;
    if (cpu < 0) {
        __builtin_cpu_init();
        cpu = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cpu && !causal && hd % 8 == 0 && hd <= FA_MAX_HD && (size_t)nq * nk >= 65536;
#else
    (void)nq, (void)nk, (void)hd, (void)causal;
    return 0;
#endif
}

static size_t attn_fused_floats(int nk, int hd)
{
    size_t nkp = ((size_t)nk + 15) & ~(size_t)15;
    /* packed K and V, packed Q block, score block, output block, running max and sum; +16 for alignment */
    /* V twice over: fa_pv512_pairs reads each row as [V[j] V[j]] */
    return nkp * hd + 2 * (size_t)nk * hd + (size_t)FA_QB * hd + (size_t)FA_QB * FA_KC + (size_t)FA_QB * hd +
           2 * FA_QB + 16;
}

size_t sde_attention_scratch(int nq, int nk, int hd)
{
    int blk = attn_block(nq, nk);
    /* the BLAS path: the score block, then one 1/sum per query of the block */
    size_t f = (size_t)blk * nk + blk;
    if (hd % 8 == 0 && hd <= FA_MAX_HD && (size_t)nq * nk >= 65536) {
        size_t ff = SDE_PAR_MAX * attn_fused_floats(nk, hd); /* one workspace per thread */
        f = ff > f ? ff : f;
    }
    return f * sizeof(float);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define FA_TARGET __attribute__((target("avx2,fma")))

/* S[FA_MR][FA_KC] = Q[FA_MR][hd] * K^T for kc keys (a multiple of 16) of the panel-packed K
 * (panels of 16 keys: [panel][hd][16]). */
FA_TARGET static void fa_qk(const float *qp, int hd, const float *kp, int kc, float *S)
{
    for (int jj = 0; jj < kc; jj += 16) {
        const float *b = kp + (size_t)(jj / 16) * hd * 16;
        __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
        __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
        for (int d = 0; d < hd; d++) {
            __m256 b0 = _mm256_load_ps(b + d * 16), b1 = _mm256_load_ps(b + d * 16 + 8), a;
            a = _mm256_broadcast_ss(qp + d);
            c00 = _mm256_fmadd_ps(a, b0, c00), c01 = _mm256_fmadd_ps(a, b1, c01);
            a = _mm256_broadcast_ss(qp + hd + d);
            c10 = _mm256_fmadd_ps(a, b0, c10), c11 = _mm256_fmadd_ps(a, b1, c11);
            a = _mm256_broadcast_ss(qp + 2 * hd + d);
            c20 = _mm256_fmadd_ps(a, b0, c20), c21 = _mm256_fmadd_ps(a, b1, c21);
            a = _mm256_broadcast_ss(qp + 3 * hd + d);
            c30 = _mm256_fmadd_ps(a, b0, c30), c31 = _mm256_fmadd_ps(a, b1, c31);
            a = _mm256_broadcast_ss(qp + 4 * hd + d);
            c40 = _mm256_fmadd_ps(a, b0, c40), c41 = _mm256_fmadd_ps(a, b1, c41);
            a = _mm256_broadcast_ss(qp + 5 * hd + d);
            c50 = _mm256_fmadd_ps(a, b0, c50), c51 = _mm256_fmadd_ps(a, b1, c51);
        }
        float *s = S + jj;
        _mm256_store_ps(s, c00), _mm256_store_ps(s + 8, c01);
        _mm256_store_ps(s + FA_KC, c10), _mm256_store_ps(s + FA_KC + 8, c11);
        _mm256_store_ps(s + 2 * FA_KC, c20), _mm256_store_ps(s + 2 * FA_KC + 8, c21);
        _mm256_store_ps(s + 3 * FA_KC, c30), _mm256_store_ps(s + 3 * FA_KC + 8, c31);
        _mm256_store_ps(s + 4 * FA_KC, c40), _mm256_store_ps(s + 4 * FA_KC + 8, c41);
        _mm256_store_ps(s + 5 * FA_KC, c50), _mm256_store_ps(s + 5 * FA_KC + 8, c51);
    }
}

/* O[FA_MR][hd] += P[FA_MR][kv] * V[kv][hd] (V packed [key][hd], rows 32-byte aligned). */
FA_TARGET static void fa_pv(const float *P, const float *vp, int kv, int hd, float *O)
{
    int dc = 0;
    for (; dc + 16 <= hd; dc += 16) {
        __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
        __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
        const float *b = vp + dc;
        for (int j = 0; j < kv; j++, b += hd) {
            __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8), a;
            a = _mm256_broadcast_ss(P + j);
            c00 = _mm256_fmadd_ps(a, b0, c00), c01 = _mm256_fmadd_ps(a, b1, c01);
            a = _mm256_broadcast_ss(P + FA_KC + j);
            c10 = _mm256_fmadd_ps(a, b0, c10), c11 = _mm256_fmadd_ps(a, b1, c11);
            a = _mm256_broadcast_ss(P + 2 * FA_KC + j);
            c20 = _mm256_fmadd_ps(a, b0, c20), c21 = _mm256_fmadd_ps(a, b1, c21);
            a = _mm256_broadcast_ss(P + 3 * FA_KC + j);
            c30 = _mm256_fmadd_ps(a, b0, c30), c31 = _mm256_fmadd_ps(a, b1, c31);
            a = _mm256_broadcast_ss(P + 4 * FA_KC + j);
            c40 = _mm256_fmadd_ps(a, b0, c40), c41 = _mm256_fmadd_ps(a, b1, c41);
            a = _mm256_broadcast_ss(P + 5 * FA_KC + j);
            c50 = _mm256_fmadd_ps(a, b0, c50), c51 = _mm256_fmadd_ps(a, b1, c51);
        }
        __m256 acc[FA_MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
        for (int r = 0; r < FA_MR; r++) {
            float *o = O + (size_t)r * hd + dc;
            _mm256_store_ps(o, _mm256_add_ps(_mm256_load_ps(o), acc[r][0]));
            _mm256_store_ps(o + 8, _mm256_add_ps(_mm256_load_ps(o + 8), acc[r][1]));
        }
    }
    if (dc < hd) { /* one 8-wide column block left (hd = 40, 56, ...) */
        __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0;
        const float *b = vp + dc;
        for (int j = 0; j < kv; j++, b += hd) {
            __m256 b0 = _mm256_load_ps(b);
            c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(P + j), b0, c0);
            c1 = _mm256_fmadd_ps(_mm256_broadcast_ss(P + FA_KC + j), b0, c1);
            c2 = _mm256_fmadd_ps(_mm256_broadcast_ss(P + 2 * FA_KC + j), b0, c2);
            c3 = _mm256_fmadd_ps(_mm256_broadcast_ss(P + 3 * FA_KC + j), b0, c3);
            c4 = _mm256_fmadd_ps(_mm256_broadcast_ss(P + 4 * FA_KC + j), b0, c4);
            c5 = _mm256_fmadd_ps(_mm256_broadcast_ss(P + 5 * FA_KC + j), b0, c5);
        }
        __m256 acc[FA_MR] = {c0, c1, c2, c3, c4, c5};
        for (int r = 0; r < FA_MR; r++) {
            float *o = O + (size_t)r * hd + dc;
            _mm256_store_ps(o, _mm256_add_ps(_mm256_load_ps(o), acc[r]));
        }
    }
}

/* fa_qk and fa_pv on AVX-512 where the CPU has it: 16 lanes per register, the same products summed in
 * the same order per element, so the results are the AVX2 kernels' bit for bit; fewer instructions per
 * multiply-add (this project's Zen 4 machines run the pair ~1.4x faster, as our float32 GEMM kernel). */
#define FA512_TARGET __attribute__((target("avx512f,avx2,fma")))

FA512_TARGET static void fa_qk512(const float *qp, int hd, const float *kp, int kc, float *S)
{
    int jj = 0;
    for (; jj + 32 <= kc; jj += 32) { /* two panels: 12 accumulators */
        const float *b0p = kp + (size_t)(jj / 16) * hd * 16, *b1p = b0p + (size_t)hd * 16;
        __m512 c[FA_MR][2];
        for (int r = 0; r < FA_MR; r++)
            c[r][0] = c[r][1] = _mm512_setzero_ps();
        for (int d = 0; d < hd; d++) {
            const __m512 b0 = _mm512_loadu_ps(b0p + d * 16), b1 = _mm512_loadu_ps(b1p + d * 16);
#pragma GCC unroll 6
            for (int r = 0; r < FA_MR; r++) {
                const __m512 a = _mm512_set1_ps(qp[r * hd + d]);
                c[r][0] = _mm512_fmadd_ps(a, b0, c[r][0]);
                c[r][1] = _mm512_fmadd_ps(a, b1, c[r][1]);
            }
        }
        for (int r = 0; r < FA_MR; r++) {
            _mm512_storeu_ps(S + (size_t)r * FA_KC + jj, c[r][0]);
            _mm512_storeu_ps(S + (size_t)r * FA_KC + jj + 16, c[r][1]);
        }
    }
    for (; jj < kc; jj += 16) {
        const float *bp = kp + (size_t)(jj / 16) * hd * 16;
        __m512 c[FA_MR];
        for (int r = 0; r < FA_MR; r++)
            c[r] = _mm512_setzero_ps();
        for (int d = 0; d < hd; d++) {
            const __m512 b = _mm512_loadu_ps(bp + d * 16);
#pragma GCC unroll 6
            for (int r = 0; r < FA_MR; r++)
                c[r] = _mm512_fmadd_ps(_mm512_set1_ps(qp[r * hd + d]), b, c[r]);
        }
        for (int r = 0; r < FA_MR; r++)
            _mm512_storeu_ps(S + (size_t)r * FA_KC + jj, c[r]);
    }
}

FA512_TARGET static void fa_pv512(const float *P, const float *vp, int kv, int hd, float *O)
{
    /* up to 48 columns (three vectors, 18 accumulators) at a time: hd = 40 in one pass, where passes of
     * 32 left the last 8 columns a pass of their own with 6 accumulators, too few to cover the FMA latency */
    for (int dc = 0; dc < hd; dc += 48) {
        const int nd = hd - dc < 48 ? hd - dc : 48;
        const __mmask16 m0 = nd >= 16 ? 0xffff : (__mmask16)((1u << nd) - 1);
        const __mmask16 m1 = nd >= 32 ? 0xffff : nd <= 16 ? 0 : (__mmask16)((1u << (nd - 16)) - 1);
        const __mmask16 m2 = nd >= 48 ? 0xffff : nd <= 32 ? 0 : (__mmask16)((1u << (nd - 32)) - 1);
        __m512 c[FA_MR][3];
        for (int r = 0; r < FA_MR; r++)
            c[r][0] = c[r][1] = c[r][2] = _mm512_setzero_ps();
        const float *b = vp + dc;
        for (int j = 0; j < kv; j++, b += hd) {
            const __m512 b0 = _mm512_maskz_loadu_ps(m0, b), b1 = _mm512_maskz_loadu_ps(m1, b + 16),
                         b2 = _mm512_maskz_loadu_ps(m2, b + 32);
#pragma GCC unroll 6
            for (int r = 0; r < FA_MR; r++) {
                const __m512 a = _mm512_set1_ps(P[r * FA_KC + j]);
                c[r][0] = _mm512_fmadd_ps(a, b0, c[r][0]);
                if (m1) c[r][1] = _mm512_fmadd_ps(a, b1, c[r][1]);
                if (m2) c[r][2] = _mm512_fmadd_ps(a, b2, c[r][2]);
            }
        }
        for (int r = 0; r < FA_MR; r++) {
            float *o = O + (size_t)r * hd + dc;
            _mm512_mask_storeu_ps(o, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, o), c[r][0]));
            if (m1)
                _mm512_mask_storeu_ps(o + 16, m1, _mm512_add_ps(_mm512_maskz_loadu_ps(m1, o + 16), c[r][1]));
            if (m2)
                _mm512_mask_storeu_ps(o + 32, m2, _mm512_add_ps(_mm512_maskz_loadu_ps(m2, o + 32), c[r][2]));
        }
    }
}

/* fa_pv512 for a head width of 8 mod 16 (SD 1.5's 40): rows taken two at a time, so a pair's 2 hd outputs
 * are whole vectors (5 for hd 40) where one row's were 2.5 (three vectors, the last half empty: a sixth of
 * the multiply-adds wasted). The vector that straddles the two rows takes its first lanes' P from the first
 * row (a blend of the two broadcasts). vp2 holds each V row twice, [V[j] V[j]], so vector i of a pair reads
 * vp2 + 16 i. Each output is summed over the keys in the same order as fa_pv512: the same bits. */
#define PV_PAIRS_MAX_NV 7
FA512_TARGET static inline __attribute__((always_inline)) void
fa_pv512_pairs_hd(const float *P, const float *vp2, int kv, int hd, float *O)
{
    const int nv = hd / 8;
    __mmask16 first[PV_PAIRS_MAX_NV];
    for (int i = 0; i < nv; i++) {
        const int lo = hd - 16 * i;
        first[i] = lo >= 16 ? 0xffff : lo <= 0 ? 0 : (__mmask16)((1u << lo) - 1);
    }
    __m512 c[FA_MR / 2][PV_PAIRS_MAX_NV];
    for (int q = 0; q < FA_MR / 2; q++)
        for (int i = 0; i < nv; i++)
            c[q][i] = _mm512_setzero_ps();
    const float *b = vp2;
    for (int j = 0; j < kv; j++, b += 2 * hd) {
        __m512 v[PV_PAIRS_MAX_NV];
        for (int i = 0; i < nv; i++) {
            v[i] = _mm512_loadu_ps(b + 16 * i);
            __asm__("" : "+v"(v[i])); /* one load per vector, not one folded into each of its 3 FMAs */
        }
        for (int q = 0; q < FA_MR / 2; q++) {
            const __m512 a0 = _mm512_set1_ps(P[2 * q * FA_KC + j]),
                         a1 = _mm512_set1_ps(P[(2 * q + 1) * FA_KC + j]);
            for (int i = 0; i < nv; i++) {
                const __m512 a = first[i] == 0xffff ? a0
                                 : !first[i]        ? a1
                                                    : _mm512_mask_blend_ps(first[i], a1, a0);
                c[q][i] = _mm512_fmadd_ps(a, v[i], c[q][i]);
            }
        }
    }
    for (int q = 0; q < FA_MR / 2; q++) {
        float *o = O + (size_t)2 * q * hd;
        for (int i = 0; i < nv; i++)
            _mm512_storeu_ps(o + 16 * i, _mm512_add_ps(_mm512_loadu_ps(o + 16 * i), c[q][i]));
    }
}

/* The head widths of 8 mod 16 up to 56, each compiled with its width known. */
FA512_TARGET static void fa_pv512_pairs(const float *P, const float *vp2, int kv, int hd, float *O)
{
    switch (hd) {
    case 40:
        fa_pv512_pairs_hd(P, vp2, kv, 40, O);
        break;
    case 24:
        fa_pv512_pairs_hd(P, vp2, kv, 24, O);
        break;
    case 56:
        fa_pv512_pairs_hd(P, vp2, kv, 56, O);
        break;
    default:
        fa_pv512_pairs_hd(P, vp2, kv, 8, O);
        break;
    }
}

/* Whether fa_pv512_pairs serves this head width. */
static int pv_pairs(int hd)
{
    return hd % 16 == 8 && hd <= 56;
}

/* exp(x) of 8 lanes, same scheme and accuracy as fast_expf (0 below -87.3). */
FA_TARGET static inline __m256 fa_exp(__m256 x)
{
    const __m256 lo = _mm256_set1_ps(SDE_EXP_LO);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lo);
    x = _mm256_min_ps(x, _mm256_set1_ps(SDE_EXP_HI));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(SDE_EXP_LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(SDE_EXP_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-SDE_EXP_LN2_LO), r);
    __m256 p = _mm256_set1_ps(SDE_EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SDE_EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SDE_EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SDE_EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SDE_EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SDE_EXP_P5));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

FA_TARGET static inline float fa_hmax(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

FA_TARGET static inline float fa_hsum(__m256 v)
{
    __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    m = _mm_add_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* Online-softmax update of one micro-tile: scores of keys [kv, kc) are padding and become 0; each row's
 * running max/sum are updated, its scores replaced by exp(s - max), and its output row rescaled. */
FA_TARGET static void fa_softmax_tile(float *Sm, int kc, int kv, float *mrow, float *lrow, float *O, int hd)
{
    for (int r = 0; r < FA_MR; r++) {
        float *row = Sm + (size_t)r * FA_KC;
        for (int j = kv; j < kc; j++)
            row[j] = -INFINITY;
        __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0;
        for (int j = 0; j < kc; j += 16) {
            m0 = _mm256_max_ps(m0, _mm256_load_ps(row + j));
            m1 = _mm256_max_ps(m1, _mm256_load_ps(row + j + 8));
        }
        float mx = fa_hmax(_mm256_max_ps(m0, m1)), m_old = mrow[r];
        float m_new = mx > m_old ? mx : m_old;
        __m256 mv = _mm256_set1_ps(m_new), s0 = _mm256_setzero_ps(), s1 = s0;
        for (int j = 0; j < kc; j += 16) {
            __m256 e0 = fa_exp(_mm256_sub_ps(_mm256_load_ps(row + j), mv));
            __m256 e1 = fa_exp(_mm256_sub_ps(_mm256_load_ps(row + j + 8), mv));
            _mm256_store_ps(row + j, e0);
            _mm256_store_ps(row + j + 8, e1);
            s0 = _mm256_add_ps(s0, e0);
            s1 = _mm256_add_ps(s1, e1);
        }
        float corr = m_old == -INFINITY ? 0.0f : fast_expf(m_old - m_new);
        lrow[r] = lrow[r] * corr + fa_hsum(_mm256_add_ps(s0, s1));
        mrow[r] = m_new;
        if (corr != 1.0f) {
            __m256 cv = _mm256_set1_ps(corr);
            float *o = O + (size_t)r * hd;
            for (int d = 0; d < hd; d += 8)
                _mm256_store_ps(o + d, _mm256_mul_ps(_mm256_load_ps(o + d), cv));
        }
    }
}

/* fa_exp on 16 lanes: the same operations lane by lane, so the same bits. */
FA512_TARGET static inline __m512 fa_exp512(__m512 x)
{
    const __m512 lo = _mm512_set1_ps(SDE_EXP_LO);
    const __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_max_ps(x, lo);
    x = _mm512_min_ps(x, _mm512_set1_ps(SDE_EXP_HI));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(SDE_EXP_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(SDE_EXP_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-SDE_EXP_LN2_LO), r);
    __m512 p = _mm512_set1_ps(SDE_EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SDE_EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SDE_EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SDE_EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SDE_EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SDE_EXP_P5));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mul_ps((__mmask16)~under, p, _mm512_castsi512_ps(e));
}

/* fa_softmax_tile on 16 lanes: lanes 0-7 of the one accumulator are the AVX2 kernel's first, lanes 8-15
 * its second, and the two halves are added and reduced as it does, so the results are the same bits.
 * (Unaligned loads: the score rows are 32-byte aligned, not always 64.) */
FA512_TARGET static void fa_softmax_tile512(float *Sm, int kc, int kv, float *mrow, float *lrow, float *O,
                                            int hd)
{
    for (int r = 0; r < FA_MR; r++) {
        float *row = Sm + (size_t)r * FA_KC;
        for (int j = kv; j < kc; j++)
            row[j] = -INFINITY;
        __m512 m = _mm512_set1_ps(-INFINITY);
        for (int j = 0; j < kc; j += 16)
            m = _mm512_max_ps(m, _mm512_loadu_ps(row + j));
        float mx = _mm512_reduce_max_ps(m), m_old = mrow[r];
        float m_new = mx > m_old ? mx : m_old;
        __m512 mv = _mm512_set1_ps(m_new), acc = _mm512_setzero_ps();
        for (int j = 0; j < kc; j += 16) {
            __m512 e = fa_exp512(_mm512_sub_ps(_mm512_loadu_ps(row + j), mv));
            _mm512_storeu_ps(row + j, e);
            acc = _mm512_add_ps(acc, e);
        }
        float corr = m_old == -INFINITY ? 0.0f : fast_expf(m_old - m_new);
        __m256 half = _mm256_add_ps(_mm512_castps512_ps256(acc),
                                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
        lrow[r] = lrow[r] * corr + fa_hsum(half);
        mrow[r] = m_new;
        if (corr != 1.0f) {
            __m256 cv = _mm256_set1_ps(corr);
            float *o = O + (size_t)r * hd;
            for (int d = 0; d < hd; d += 8)
                _mm256_store_ps(o + d, _mm256_mul_ps(_mm256_load_ps(o + d), cv));
        }
    }
}

/* One head. ws holds attn_fused_floats(nk, hd) floats. */
static void attn_head_fused(const float *q, int qs, const float *k, int ks, const float *v, int vs, int nq,
                            int nk, int hd, float scale, float *out, int os, float *ws)
{
#ifdef SDE_HAVE_BF16_KERNEL
    if (sde_get_bf16()) {
        sde_attn_head_bf16(q, qs, k, ks, v, vs, nq, nk, hd, scale, out, os, ws);
        return;
    }
#endif
    const int nkp = (nk + 15) & ~15, wide = sde_cpu_has_avx512();
    float *kp = (float *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    float *vp = kp + (size_t)nkp * hd, *qp = vp + (size_t)2 * nk * hd, *S = qp + (size_t)FA_QB * hd;
    float *O = S + (size_t)FA_QB * FA_KC, *mrow = O + (size_t)FA_QB * hd, *lrow = mrow + FA_QB;
    /* K into panels of 16 keys [panel][d][16] (zero keys pad the last panel), V into [key][hd] */
    for (int p = 0; p < nkp / 16; p++)
        for (int t = 0; t < 16; t++) {
            int j = p * 16 + t;
            float *dst = kp + (size_t)p * hd * 16 + t;
            if (j < nk)
                for (int d = 0; d < hd; d++)
                    dst[d * 16] = k[(size_t)j * ks + d];
            else
                for (int d = 0; d < hd; d++)
                    dst[d * 16] = 0.0f;
        }
    const int pairs = wide && pv_pairs(hd); /* V rows twice over for fa_pv512_pairs */
    for (int j = 0; j < nk; j++) {
        memcpy(vp + (size_t)j * hd * (pairs ? 2 : 1), v + (size_t)j * vs, sizeof(float) * hd);
        if (pairs) memcpy(vp + (size_t)j * hd * 2 + hd, v + (size_t)j * vs, sizeof(float) * hd);
    }
    for (int q0 = 0; q0 < nq; q0 += FA_QB) {
        const int nb = nq - q0 < FA_QB ? nq - q0 : FA_QB;
        const int nbp = (nb + FA_MR - 1) / FA_MR * FA_MR;
        for (int r = 0; r < nbp; r++) {
            float *dst = qp + (size_t)r * hd;
            if (r < nb)
                for (int d = 0; d < hd; d++)
                    dst[d] = q[(size_t)(q0 + r) * qs + d] * scale;
            else
                memset(dst, 0, sizeof(float) * hd);
            mrow[r] = -INFINITY;
            lrow[r] = 0.0f;
        }
        memset(O, 0, sizeof(float) * nbp * hd);
        for (int j0 = 0; j0 < nkp; j0 += FA_KC) {
            const int kc = nkp - j0 < FA_KC ? nkp - j0 : FA_KC, kv = nk - j0 < kc ? nk - j0 : kc;
            for (int mt = 0; mt < nbp; mt += FA_MR) {
                float *Sm = S + (size_t)mt * FA_KC;
                if (wide)
                    fa_qk512(qp + (size_t)mt * hd, hd, kp + (size_t)j0 * hd, kc, Sm);
                else
                    fa_qk(qp + (size_t)mt * hd, hd, kp + (size_t)j0 * hd, kc, Sm);
                /* online softmax: rescale what has been accumulated when the running max grows */
                if (wide)
                    fa_softmax_tile512(Sm, kc, kv, mrow + mt, lrow + mt, O + (size_t)mt * hd, hd);
                else
                    fa_softmax_tile(Sm, kc, kv, mrow + mt, lrow + mt, O + (size_t)mt * hd, hd);
                if (pairs)
                    fa_pv512_pairs(Sm, vp + (size_t)j0 * hd * 2, kv, hd, O + (size_t)mt * hd);
                else if (wide)
                    fa_pv512(Sm, vp + (size_t)j0 * hd, kv, hd, O + (size_t)mt * hd);
                else
                    fa_pv(Sm, vp + (size_t)j0 * hd, kv, hd, O + (size_t)mt * hd);
            }
        }
        for (int r = 0; r < nb; r++) {
            float inv = 1.0f / lrow[r], *o = out + (size_t)(q0 + r) * os;
            for (int d = 0; d < hd; d++)
                o[d] = O[(size_t)r * hd + d] * inv;
        }
    }
}
#endif

typedef struct {
    const float *q;
    int qs;
    const float *k;
    int ks;
    const float *v;
    int vs, nq, nk, hd;
    float scale;
    float *out;
    int os;
    float *ws;
    size_t ws_floats;
} attn_job;

static void attn_head_item(void *ctx, int h, int thread)
{
    const attn_job *j = ctx;
#if defined(__x86_64__) && defined(__GNUC__)
    attn_head_fused(j->q + h * j->hd, j->qs, j->k + h * j->hd, j->ks, j->v + h * j->hd, j->vs, j->nq, j->nk,
                    j->hd, j->scale, j->out + h * j->hd, j->os, j->ws + (size_t)thread * j->ws_floats);
#else
    (void)j, (void)h, (void)thread;
#endif
}

void sde_attention(const float *q, int q_stride, const float *k, int k_stride, const float *v, int v_stride,
                   int nq, int nk, int heads, int hd, int causal, float *out, int out_stride, float *scratch)
{
    const float scale = 1.0f / sqrtf((float)hd);
#if defined(__x86_64__) && defined(__GNUC__)
    if (attn_fused_ok(nq, nk, hd, causal)) {
        attn_job job = {q,  q_stride, k,     k_stride, v,          v_stride, nq,
                        nk, hd,       scale, out,      out_stride, scratch,  attn_fused_floats(nk, hd)};
        sde_par_for(heads, attn_head_item, &job); /* heads are independent: one per thread */
        return;
    }
#endif
    const int blk = attn_block(nq, nk), bf16 = sde_get_bf16();
    float *inv = scratch + (size_t)blk * nk;
    for (int h = 0; h < heads; h++) {
        for (int q0 = 0; q0 < nq; q0 += blk) {
            int nb = nq - q0 < blk ? nq - q0 : blk;
            /* keys any query of a causal block can see: up to its last query */
            int kn = causal ? (q0 + nb < nk ? q0 + nb : nk) : nk;
            if (bf16) { /* the bf16 GEMM has no alpha: scale the scores after */
                sde_gemm(0, 1, nb, kn, hd, q + (size_t)q0 * q_stride + h * hd, q_stride, k + h * hd, k_stride,
                         0.0f, scratch, kn);
                sde_scale_inplace(scratch, (size_t)nb * kn, scale);
            } else {
                sde_sgemm(0, 1, nb, kn, hd, scale, q + (size_t)q0 * q_stride + h * hd, q_stride, k + h * hd,
                          k_stride, 0.0f, scratch, kn);
            }
            for (int i = 0; i < nb; i++) {
                float *row = scratch + (size_t)i * kn;
                int valid = causal ? (q0 + i + 1 < kn ? q0 + i + 1 : kn) : kn;
                float m = sde_row_max(row, valid);
                inv[i] = 1.0f / sde_exp_sum(row, valid, m);
                if (valid < kn) memset(row + valid, 0, sizeof(float) * (kn - valid));
            }
            float *o = out + (size_t)q0 * out_stride + h * hd;
            sde_gemm(0, 0, nb, hd, kn, scratch, kn, v + h * hd, v_stride, 0.0f, o, out_stride);
            /* normalise the [nb][hd] output rather than the [nb][kn] probabilities: a far smaller pass */
            for (int i = 0; i < nb; i++)
                sde_scale_inplace(o + (size_t)i * out_stride, hd, inv[i]);
        }
    }
}
