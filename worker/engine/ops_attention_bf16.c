/* ops_attention_bf16.c: the fused attention of ops_attention.c on the opt-in bf16 path: Q K^T and P V as
 * bf16 pairs through vdpbf16ps with float32 accumulation; the online softmax stays in float32. */
#include "ops.h"
#include "ops_internal.h"

#ifdef SDE_HAVE_BF16_KERNEL
#include <immintrin.h>

#define AB_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")))

/* S[FA_MR][kc] = Q[FA_MR][hd] K^T for kc keys (a multiple of 16). qb: rows of hd bf16 (hd/2 pairs);
 * kb: panels of 16 keys, [panel][hd/2][16] pairs. */
AB_TARGET static void fab_qk(const uint32_t *qb, int hd, const uint32_t *kb, int kc, float *S)
{
    const int hp = hd / 2;
    int jj = 0;
    for (; jj + 32 <= kc; jj += 32) { /* two panels: 12 independent accumulators */
        const uint32_t *b0p = kb + (size_t)(jj / 16) * hp * 16, *b1p = b0p + (size_t)hp * 16;
        __m512 c[FA_MR][2];
        for (int r = 0; r < FA_MR; r++)
            c[r][0] = c[r][1] = _mm512_setzero_ps();
        for (int p = 0; p < hp; p++) {
            const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b0p + p * 16);
            const __m512bh b1 = (__m512bh)_mm512_loadu_si512(b1p + p * 16);
#pragma GCC unroll 6
            for (int r = 0; r < FA_MR; r++) {
                const __m512bh a = (__m512bh)_mm512_set1_epi32((int)qb[(size_t)r * hp + p]);
                c[r][0] = _mm512_dpbf16_ps(c[r][0], a, b0);
                c[r][1] = _mm512_dpbf16_ps(c[r][1], a, b1);
            }
        }
        for (int r = 0; r < FA_MR; r++) {
            _mm512_storeu_ps(S + (size_t)r * FA_KC + jj, c[r][0]);
            _mm512_storeu_ps(S + (size_t)r * FA_KC + jj + 16, c[r][1]);
        }
    }
    for (; jj < kc; jj += 16) {
        const uint32_t *bp = kb + (size_t)(jj / 16) * hp * 16;
        __m512 c[FA_MR];
        for (int r = 0; r < FA_MR; r++)
            c[r] = _mm512_setzero_ps();
        for (int p = 0; p < hp; p++) {
            const __m512bh b = (__m512bh)_mm512_loadu_si512(bp + p * 16);
#pragma GCC unroll 6
            for (int r = 0; r < FA_MR; r++)
                c[r] = _mm512_dpbf16_ps(c[r], (__m512bh)_mm512_set1_epi32((int)qb[(size_t)r * hp + p]), b);
        }
        for (int r = 0; r < FA_MR; r++)
            _mm512_storeu_ps(S + (size_t)r * FA_KC + jj, c[r]);
    }
}

/* exp(x) of 16 lanes for x <= 0 (scores minus their running max), to about 4e-5 relative: the result is
 * rounded to bf16 (2^-9 relative) next, so fa_exp's float32-exact scheme would be wasted here. exp(x) =
 * 2^n 2^f with n = round(x log2 e), |f| <= 1/2, 2^f by its degree-4 Taylor polynomial, 2^n by vscalefps
 * (which gives 0 far below). Inputs are clamped at -104 (exp -> 0 as a float) so -inf cannot make NaN. */
AB_TARGET static inline __m512 fab_exp(__m512 x)
{
    const __m512 t = _mm512_mul_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(SDE_EXP_LOG2E));
    const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(t, n);
    __m512 p = _mm512_set1_ps(9.6181291e-3f);                 /* ln2^4 / 24 */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504109e-2f)); /* ln2^3 / 6 */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022651e-1f)); /* ln2^2 / 2 */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718e-1f)); /* ln2 */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* Online-softmax update of one micro-tile (as sde_fa_softmax_tile) that leaves each row's probabilities
 * as bf16 in place: row r's bf16 run starts where its floats did, so pairs of keys are dwords. Keys
 * [kv, kc) are padding (probability 0); kc is a multiple of 16. */
AB_TARGET static void fab_softmax_tile(float *Sm, int kc, int kv, float *mrow, float *lrow, float *O, int hd)
{
    for (int r = 0; r < FA_MR; r++) {
        float *row = Sm + (size_t)r * FA_KC;
        uint16_t *dst = (uint16_t *)row;
        __m512 m = _mm512_set1_ps(-INFINITY);
        for (int j = 0; j < kc; j += 16) {
            const int nv = kv - j;
            const __mmask16 k = nv >= 16 ? 0xffff : nv <= 0 ? 0 : (__mmask16)((1u << nv) - 1);
            m = _mm512_mask_max_ps(m, k, m, _mm512_loadu_ps(row + j));
        }
        const float mx = _mm512_reduce_max_ps(m), m_old = mrow[r], m_new = mx > m_old ? mx : m_old;
        const __m512 mv = _mm512_set1_ps(m_new);
        __m512 sum = _mm512_setzero_ps();
        for (int j = 0; j < kc; j += 16) { /* writes bytes [2j, 2j+32): never past the floats unread */
            const int nv = kv - j;
            const __mmask16 k = nv >= 16 ? 0xffff : nv <= 0 ? 0 : (__mmask16)((1u << nv) - 1);
            __m512 e = _mm512_maskz_mov_ps(k, fab_exp(_mm512_sub_ps(_mm512_loadu_ps(row + j), mv)));
            sum = _mm512_add_ps(sum, e);
            _mm256_storeu_si256((__m256i *)(dst + j), (__m256i)_mm512_cvtneps_pbh(e));
        }
        const float corr = m_old == -INFINITY ? 0.0f : fast_expf(m_old - m_new);
        lrow[r] = lrow[r] * corr + _mm512_reduce_add_ps(sum);
        mrow[r] = m_new;
        if (corr != 1.0f) {
            const __m512 cv = _mm512_set1_ps(corr);
            float *o = O + (size_t)r * hd;
            for (int d = 0; d < hd; d += 16) {
                const __mmask16 k = hd - d >= 16 ? 0xffff : (__mmask16)((1u << (hd - d)) - 1);
                _mm512_mask_storeu_ps(o + d, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, o + d), cv));
            }
        }
    }
}

/* O[FA_MR][hd] += P[FA_MR][kv] V[kv][hd]: P rows as bf16 pairs (dwords, FA_KC floats apart), vb as
 * [key pair][hd] pairs (zero past the last key). */
AB_TARGET static void fab_pv(const float *Sm, const uint32_t *vb, int kv, int hd, float *O)
{
    const int jp = (kv + 1) / 2;
    for (int dc = 0; dc < hd; dc += 48) { /* up to three vectors of 16 columns */
        const int nd = hd - dc < 48 ? hd - dc : 48;
        const __mmask16 m0 = nd >= 16 ? 0xffff : (__mmask16)((1u << nd) - 1);
        const __mmask16 m1 = nd >= 32 ? 0xffff : nd <= 16 ? 0 : (__mmask16)((1u << (nd - 16)) - 1);
        const __mmask16 m2 = nd >= 48 ? 0xffff : nd <= 32 ? 0 : (__mmask16)((1u << (nd - 32)) - 1);
        __m512 c[FA_MR][3];
        for (int r = 0; r < FA_MR; r++)
            c[r][0] = c[r][1] = c[r][2] = _mm512_setzero_ps();
        for (int p = 0; p < jp; p++) {
            const uint32_t *b = vb + (size_t)p * hd + dc;
            const __m512bh b0 = (__m512bh)_mm512_maskz_loadu_epi32(m0, b);
            const __m512bh b1 = (__m512bh)_mm512_maskz_loadu_epi32(m1, b + 16);
            const __m512bh b2 = (__m512bh)_mm512_maskz_loadu_epi32(m2, b + 32);
#pragma GCC unroll 6
            for (int r = 0; r < FA_MR; r++) {
                const __m512bh a =
                    (__m512bh)_mm512_set1_epi32((int)((const uint32_t *)(Sm + (size_t)r * FA_KC))[p]);
                c[r][0] = _mm512_dpbf16_ps(c[r][0], a, b0);
                if (m1) c[r][1] = _mm512_dpbf16_ps(c[r][1], a, b1);
                if (m2) c[r][2] = _mm512_dpbf16_ps(c[r][2], a, b2);
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

static inline uint32_t bf16_pair(float lo, float hi)
{
    uint32_t a, b;
    memcpy(&a, &lo, sizeof a);
    memcpy(&b, &hi, sizeof b);
    a = (a + 0x7fffu + ((a >> 16) & 1u)) >> 16;
    b = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
    return a | b << 16;
}

AB_TARGET void sde_attn_head_bf16(const float *q, int qs, const float *k, int ks, const float *v, int vs,
                                  int nq, int nk, int hd, float scale, float *out, int os, float *ws)
{
    /* the float32 path's workspace, reused: K pairs, V pairs, a Q block, scores, output, max and sum */
    const int nkp = (nk + 15) & ~15, hp = hd / 2;
    uint32_t *kb = (uint32_t *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    uint32_t *vb = kb + (size_t)nkp * hp;
    uint32_t *qb = vb + (size_t)(nkp / 2) * hd;
    float *S = (float *)(((uintptr_t)(qb + (size_t)FA_QB * hp) + 63) & ~(uintptr_t)63);
    float *O = S + (size_t)FA_QB * FA_KC, *mrow = O + (size_t)FA_QB * hd, *lrow = mrow + FA_QB;
    for (int p = 0; p < nkp / 16; p++)
        for (int t = 0; t < 16; t++) {
            const int j = p * 16 + t;
            uint32_t *dst = kb + (size_t)p * hp * 16 + t;
            for (int d = 0; d < hp; d++)
                dst[d * 16] =
                    j < nk ? bf16_pair(k[(size_t)j * ks + 2 * d], k[(size_t)j * ks + 2 * d + 1]) : 0;
        }
    for (int p = 0; p < nkp / 2; p++) {
        const int j0 = 2 * p, j1 = j0 + 1;
        for (int d = 0; d < hd; d++)
            vb[(size_t)p * hd + d] =
                bf16_pair(j0 < nk ? v[(size_t)j0 * vs + d] : 0.0f, j1 < nk ? v[(size_t)j1 * vs + d] : 0.0f);
    }
    for (int q0 = 0; q0 < nq; q0 += FA_QB) {
        const int nb = nq - q0 < FA_QB ? nq - q0 : FA_QB;
        const int nbp = (nb + FA_MR - 1) / FA_MR * FA_MR;
        for (int r = 0; r < nbp; r++) {
            for (int d = 0; d < hp; d++)
                qb[(size_t)r * hp + d] = r < nb ? bf16_pair(q[(size_t)(q0 + r) * qs + 2 * d] * scale,
                                                            q[(size_t)(q0 + r) * qs + 2 * d + 1] * scale)
                                                : 0;
            mrow[r] = -INFINITY;
            lrow[r] = 0.0f;
        }
        memset(O, 0, sizeof(float) * nbp * hd);
        for (int j0 = 0; j0 < nkp; j0 += FA_KC) {
            const int kc = nkp - j0 < FA_KC ? nkp - j0 : FA_KC, kv = nk - j0 < kc ? nk - j0 : kc;
            for (int mt = 0; mt < nbp; mt += FA_MR) {
                float *Sm = S + (size_t)mt * FA_KC;
                fab_qk(qb + (size_t)mt * hp, hd, kb + (size_t)j0 * hp, kc, Sm);
                fab_softmax_tile(Sm, kc, kv, mrow + mt, lrow + mt, O + (size_t)mt * hd, hd);
                fab_pv(Sm, vb + (size_t)(j0 / 2) * hd, kv, hd, O + (size_t)mt * hd);
            }
        }
        for (int r = 0; r < nb; r++) {
            const float inv = 1.0f / lrow[r];
            float *o = out + (size_t)(q0 + r) * os;
            for (int d = 0; d < hd; d++)
                o[d] = O[(size_t)r * hd + d] * inv;
        }
    }
}
#endif
