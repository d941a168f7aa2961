/* ops.c: the neural-network primitives of ops.h: GEMM-shaped work goes to OpenBLAS, the elementwise and
 * normalisation loops are written so gcc vectorises them (cloned for AVX2+FMA where the CPU has it). */
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

/* FP exceptions are never trapped here; saying so lets gcc if-convert the clamps and selects in the
 * elementwise loops below and vectorise them. Results are unchanged. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

/* Hot elementwise loops get an x86-64-v3 (AVX2+FMA) clone picked at load time by CPU features (not by
 * CPU model, so AMD parts qualify too); the baseline build is plain x86-64. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define SDE_HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SDE_HOT
#endif

/* Lanes of the manual partial sums below: written as independent accumulators so the loops vectorise
 * without -ffast-math (which would also change rounding elsewhere). */
#define LANES 16

/* ---------------------------------------------------------------------------------------------------- */
/* Vectorisable transcendental helpers. */

/* exp(x) for float x, within ~2 ulp: Cody-Waite range reduction and the Cephes expf polynomial.
 * Branch-free so loops calling it vectorise; underflows to exactly 0 below -87.3 and saturates at 88.7. */
static inline __attribute__((always_inline)) float fast_expf(float x)
{
    float xc = x > 88.7f ? 88.7f : x;
    xc = xc < -87.3f ? -87.3f : xc;
    float t = xc * 1.44269504088896341f;
    float n = (t + 12582912.0f) - 12582912.0f; /* round to nearest integer */
    float r = xc - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t ni = (int32_t)n;
    int32_t bits = (ni + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float res = p * scale;
    return x < -87.3f ? 0.0f : res;
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

/* ---------------------------------------------------------------------------------------------------- */
/* Elementwise activations. */

SDE_HOT void sde_silu(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = silu_1(x[i]);
}

SDE_HOT void sde_gelu(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = gelu_1(x[i]);
}

SDE_HOT void sde_gelu_tanh(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
        /* 0.5*(1 + tanh(u)) = sigmoid(2u): no cancellation in the negative tail */
        x[i] = v / (1.0f + fast_expf(-2.0f * u));
    }
}

SDE_HOT void sde_quick_gelu(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = v / (1.0f + fast_expf(-1.702f * v));
    }
}

SDE_HOT void sde_geglu(const float *x, int n, int inner, float *y)
{
    for (int r = 0; r < n; r++) {
        const float *a = x + (size_t)r * 2 * inner;
        const float *g = a + inner;
        float *o = y + (size_t)r * inner;
        for (int i = 0; i < inner; i++)
            o[i] = a[i] * gelu_1(g[i]);
    }
}

SDE_HOT void sde_add(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

/* ---------------------------------------------------------------------------------------------------- */
/* Reductions. */

SDE_HOT static float row_max(const float *x, int n)
{
    float m[LANES];
    int i = 0;
    for (int j = 0; j < LANES; j++)
        m[j] = -INFINITY;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++)
            m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    float r = -INFINITY;
    for (int j = 0; j < LANES; j++)
        r = m[j] > r ? m[j] : r;
    for (; i < n; i++)
        r = x[i] > r ? x[i] : r;
    return r;
}

/* Sum of x[0..n) in float lanes, folded into double every block so long planes keep precision. */
SDE_HOT static double sum_f(const float *x, size_t n)
{
    double total = 0.0;
    size_t i = 0;
    while (i < n) {
        size_t end = n - i > 4096 ? i + 4096 : n;
        float s[LANES] = {0};
        for (; i + LANES <= end; i += LANES)
            for (int j = 0; j < LANES; j++)
                s[j] += x[i + j];
        float r = 0.0f;
        for (; i < end; i++)
            r += x[i];
        for (int j = 0; j < LANES; j++)
            r += s[j];
        total += r;
    }
    return total;
}

/* Sum of (x - m)^2, same scheme. */
SDE_HOT static double sumsq_dev(const float *x, size_t n, float m)
{
    double total = 0.0;
    size_t i = 0;
    while (i < n) {
        size_t end = n - i > 4096 ? i + 4096 : n;
        float s[LANES] = {0};
        for (; i + LANES <= end; i += LANES)
            for (int j = 0; j < LANES; j++) {
                float d = x[i + j] - m;
                s[j] += d * d;
            }
        float r = 0.0f;
        for (; i < end; i++) {
            float d = x[i] - m;
            r += d * d;
        }
        for (int j = 0; j < LANES; j++)
            r += s[j];
        total += r;
    }
    return total;
}

/* exp(x - m) in place, returning the sum. */
SDE_HOT static float exp_sum(float *x, int n, float m)
{
    float s[LANES] = {0};
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            float e = fast_expf(x[i + j] - m);
            x[i + j] = e;
            s[j] += e;
        }
    float r = 0.0f;
    for (; i < n; i++) {
        float e = fast_expf(x[i] - m);
        x[i] = e;
        r += e;
    }
    for (int j = 0; j < LANES; j++)
        r += s[j];
    return r;
}

SDE_HOT static void scale_inplace(float *x, size_t n, float s)
{
    for (size_t i = 0; i < n; i++)
        x[i] *= s;
}

void sde_softmax_rows(float *x, int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * cols;
        float m = row_max(row, cols);
        float s = exp_sum(row, cols, m);
        scale_inplace(row, cols, 1.0f / s);
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* Normalisation. */

SDE_HOT static void affine_row(const float *x, float *y, size_t n, float sc, float sh, int silu)
{
    if (silu)
        for (size_t i = 0; i < n; i++)
            y[i] = silu_1(x[i] * sc + sh);
    else
        for (size_t i = 0; i < n; i++)
            y[i] = x[i] * sc + sh;
}

SDE_HOT static void ln_apply(float *x, int n, float mean, float rstd, const float *g, const float *b)
{
    for (int i = 0; i < n; i++) {
        float v = (x[i] - mean) * rstd;
        if (g)
            v *= g[i];
        if (b)
            v += b[i];
        x[i] = v;
    }
}

void sde_layernorm(float *x, int n, int dim, const float *g, const float *b, float eps)
{
    for (int r = 0; r < n; r++) {
        float *row = x + (size_t)r * dim;
        float mean = (float)(sum_f(row, dim) / dim);
        float var = (float)(sumsq_dev(row, dim, mean) / dim);
        ln_apply(row, dim, mean, 1.0f / sqrtf(var + eps), g, b);
    }
}

/* Mean and 1/std of one group: channels [c0, c0+cpg) of hw floats each, cstride apart. */
static void group_stats(const float *x, int c0, int cpg, int hw, size_t cstride, float eps, float *mean,
                        float *rstd)
{
    double s = 0.0;
    for (int c = c0; c < c0 + cpg; c++)
        s += sum_f(x + (size_t)c * cstride, hw);
    double nel = (double)cpg * hw;
    float m = (float)(s / nel);
    double v = 0.0;
    for (int c = c0; c < c0 + cpg; c++)
        v += sumsq_dev(x + (size_t)c * cstride, hw, m);
    *mean = m;
    *rstd = (float)(1.0 / sqrt(v / nel + eps));
}

void sde_groupnorm_coeffs(const float *x, int c, int hw, size_t cstride, int groups, const float *g, const float *b,
                          float eps, float *scale, float *shift)
{
    int cpg = c / groups;
    for (int grp = 0; grp < groups; grp++) {
        float mean, rstd;
        group_stats(x, grp * cpg, cpg, hw, cstride, eps, &mean, &rstd);
        for (int ch = grp * cpg; ch < (grp + 1) * cpg; ch++) {
            float sc = rstd * (g ? g[ch] : 1.0f);
            scale[ch] = sc;
            shift[ch] = (b ? b[ch] : 0.0f) - mean * sc;
        }
    }
}

void sde_groupnorm(float *x, int c, int hw, int groups, const float *g, const float *b, float eps, int silu)
{
    int cpg = c / groups;
    for (int grp = 0; grp < groups; grp++) {
        float mean, rstd;
        group_stats(x, grp * cpg, cpg, hw, (size_t)hw, eps, &mean, &rstd);
        for (int ch = grp * cpg; ch < (grp + 1) * cpg; ch++) {
            float sc = rstd * (g ? g[ch] : 1.0f);
            float sh = (b ? b[ch] : 0.0f) - mean * sc;
            float *p = x + (size_t)ch * hw;
            affine_row(p, p, hw, sc, sh, silu);
        }
    }
}

void sde_affine_act(const float *x, size_t x_cstride, int c, int hw, const float *scale, const float *shift, int silu,
                    float *y, size_t y_cstride)
{
    for (int ch = 0; ch < c; ch++)
        affine_row(x + (size_t)ch * x_cstride, y + (size_t)ch * y_cstride, hw, scale[ch], shift[ch], silu);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Linear, transpose, upsample. */

void sde_linear(const float *x, int n, int in, const float *w, const float *b, int out, float *y)
{
    float beta = 0.0f;
    if (b) {
        for (int r = 0; r < n; r++)
            memcpy(y + (size_t)r * out, b, sizeof(float) * out);
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in, beta, y, out);
}

void sde_transpose(const float *x, int rows, int cols, float *y)
{
    /* 32x32 blocks keep both the reads and the writes within a few cache lines */
    const int B = 32;
    for (int r0 = 0; r0 < rows; r0 += B)
        for (int c0 = 0; c0 < cols; c0 += B) {
            int r1 = r0 + B < rows ? r0 + B : rows, c1 = c0 + B < cols ? c0 + B : cols;
            for (int r = r0; r < r1; r++)
                for (int c = c0; c < c1; c++)
                    y[(size_t)c * rows + r] = x[(size_t)r * cols + c];
        }
}

void sde_upsample2x(const float *x, int c, int h, int w, float *y)
{
    for (int ch = 0; ch < c; ch++)
        for (int r = 0; r < h; r++) {
            const float *src = x + ((size_t)ch * h + r) * w;
            float *d0 = y + ((size_t)ch * 2 * h + 2 * r) * 2 * w;
            for (int i = 0; i < w; i++)
                d0[2 * i] = d0[2 * i + 1] = src[i];
            memcpy(d0 + 2 * w, d0, sizeof(float) * 2 * w);
        }
}

/* ---------------------------------------------------------------------------------------------------- */
/* A tiny fork-join pool for our own loops (attention heads, Winograd transforms): OpenBLAS threads only
 * its GEMMs. At most SDE_PAR_MAX threads including the caller; per-thread scratch is sized for that many,
 * so scratch sizes never depend on the thread setting. Work items are claimed from a shared counter; each
 * item's result is computed exactly as in a serial run, so results do not depend on the thread count. */

typedef void (*par_fn)(void *ctx, int item, int thread);

static struct {
    pthread_mutex_t mu, call_mu;
    pthread_cond_t work, done;
    int nthreads;  /* 0 until configured */
    int nhelpers;  /* helper threads started */
    unsigned long gen;
    par_fn fn;
    void *ctx;
    int n, next, busy;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          0, 0, 0, NULL, NULL, 0, 0, 0};

/* A helper joins a job only while items are left, and the caller waits only for helpers that joined: a
 * helper the scheduler does not run in time (a busy machine) costs nothing, the caller does its share. */
static void *pool_helper(void *arg)
{
    const int tid = (int)(intptr_t)arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (pool.gen == seen)
            pthread_cond_wait(&pool.work, &pool.mu);
        seen = pool.gen;
        if (tid >= pool.nthreads || pool.next >= pool.n)
            continue;
        pool.busy++;
        while (pool.next < pool.n) {
            int i = pool.next++;
            par_fn fn = pool.fn;
            void *ctx = pool.ctx;
            pthread_mutex_unlock(&pool.mu);
            fn(ctx, i, tid);
            pthread_mutex_lock(&pool.mu);
        }
        if (--pool.busy == 0)
            pthread_cond_signal(&pool.done);
    }
    return NULL;
}

/* Threads to use for n (<= SDE_PAR_MAX); starts helpers the first time. Returns 1 if none can be had. */
static int pool_configure(int n)
{
    if (n > SDE_PAR_MAX)
        n = SDE_PAR_MAX;
    if (n < 1)
        n = 1;
    pthread_mutex_lock(&pool.mu);
    while (pool.nhelpers < n - 1) {
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, 256 * 1024);
        int rc = pthread_create(&t, &at, pool_helper, (void *)(intptr_t)(pool.nhelpers + 1));
        pthread_attr_destroy(&at);
        if (rc)
            break;
        pool.nhelpers++;
    }
    pool.nthreads = pool.nhelpers + 1 < n ? pool.nhelpers + 1 : n;
    pthread_mutex_unlock(&pool.mu);
    return pool.nthreads;
}

/* Runs fn(ctx, i, thread) for i in [0, n). Serial when one thread is configured, for a single item, or
 * when another call is already running (nested or concurrent use). */
static void par_for(int n, par_fn fn, void *ctx)
{
    if (!pool.nthreads) { /* default: the CPUs there are, capped */
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        pool_configure(cpus > 0 ? (int)cpus : 1);
    }
    if (pool.nthreads < 2 || n < 2 || pthread_mutex_trylock(&pool.call_mu)) {
        for (int i = 0; i < n; i++)
            fn(ctx, i, 0);
        return;
    }
    pthread_mutex_lock(&pool.mu);
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n = n;
    pool.next = 0;
    pool.gen++;
    pthread_cond_broadcast(&pool.work);
    while (pool.next < n) {
        int i = pool.next++;
        pthread_mutex_unlock(&pool.mu);
        fn(ctx, i, 0);
        pthread_mutex_lock(&pool.mu);
    }
    while (pool.busy > 0)
        pthread_cond_wait(&pool.done, &pool.mu);
    pthread_mutex_unlock(&pool.mu);
    pthread_mutex_unlock(&pool.call_mu);
}

void sde_set_threads(int n)
{
    if (n > 0) {
        openblas_set_num_threads(n);
        pool_configure(n);
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* Attention. */

/* Queries per block of the BLAS path: the score block stays within ~4 MB unless nq is small. */
static int attn_block(int nq, int nk)
{
    int blk = (1 << 20) / (nk > 0 ? nk : 1);
    if (blk < 16)
        blk = 16;
    return blk < nq ? blk : nq;
}

/* The fused path: a flash-attention style AVX2 kernel for the UNet's long sequences with small heads,
 * where BLAS spends more time packing and zeroing than multiplying (K = head_dim = 40). Per head, K and V
 * are packed once; then for blocks of FA_QB queries and chunks of FA_KC keys: scores into an L1-sized
 * buffer, an online-softmax update, and P*V accumulated into an [FA_QB][hd] output block. */
#define FA_MR 6   /* query rows per micro-tile */
#define FA_QB 24  /* query rows per block: 4 micro-tiles share each K/V chunk from L2 */
#define FA_KC 256 /* keys per chunk */
#define FA_MAX_HD 160

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
    return nkp * hd + (size_t)nk * hd + (size_t)FA_QB * hd + (size_t)FA_QB * FA_KC + (size_t)FA_QB * hd + 2 * FA_QB + 16;
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

/* exp(x) of 8 lanes, same scheme and accuracy as fast_expf (0 below -87.3). */
FA_TARGET static inline __m256 fa_exp(__m256 x)
{
    const __m256 lo = _mm256_set1_ps(-87.3f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lo);
    x = _mm256_min_ps(x, _mm256_set1_ps(88.7f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
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

/* One head. ws holds attn_fused_floats(nk, hd) floats. */
static void attn_head_fused(const float *q, int qs, const float *k, int ks, const float *v, int vs, int nq, int nk,
                            int hd, float scale, float *out, int os, float *ws)
{
    const int nkp = (nk + 15) & ~15;
    float *kp = (float *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    float *vp = kp + (size_t)nkp * hd, *qp = vp + (size_t)nk * hd, *S = qp + (size_t)FA_QB * hd;
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
    for (int j = 0; j < nk; j++)
        memcpy(vp + (size_t)j * hd, v + (size_t)j * vs, sizeof(float) * hd);
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
                fa_qk(qp + (size_t)mt * hd, hd, kp + (size_t)j0 * hd, kc, Sm);
                /* online softmax: rescale what has been accumulated when the running max grows */
                fa_softmax_tile(Sm, kc, kv, mrow + mt, lrow + mt, O + (size_t)mt * hd, hd);
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
    attn_head_fused(j->q + h * j->hd, j->qs, j->k + h * j->hd, j->ks, j->v + h * j->hd, j->vs, j->nq, j->nk, j->hd,
                    j->scale, j->out + h * j->hd, j->os, j->ws + (size_t)thread * j->ws_floats);
#else
    (void)j, (void)h, (void)thread;
#endif
}

void sde_attention(const float *q, int q_stride, const float *k, int k_stride, const float *v, int v_stride, int nq,
                   int nk, int heads, int hd, int causal, float *out, int out_stride, float *scratch)
{
    const float scale = 1.0f / sqrtf((float)hd);
#if defined(__x86_64__) && defined(__GNUC__)
    if (attn_fused_ok(nq, nk, hd, causal)) {
        attn_job job = {q, q_stride, k, k_stride, v, v_stride, nq, nk, hd, scale, out, out_stride, scratch,
                        attn_fused_floats(nk, hd)};
        par_for(heads, attn_head_item, &job); /* heads are independent: one per thread */
        return;
    }
#endif
    const int blk = attn_block(nq, nk);
    float *inv = scratch + (size_t)blk * nk;
    for (int h = 0; h < heads; h++) {
        for (int q0 = 0; q0 < nq; q0 += blk) {
            int nb = nq - q0 < blk ? nq - q0 : blk;
            /* keys any query of a causal block can see: up to its last query */
            int kn = causal ? (q0 + nb < nk ? q0 + nb : nk) : nk;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, kn, hd, scale, q + (size_t)q0 * q_stride + h * hd,
                        q_stride, k + h * hd, k_stride, 0.0f, scratch, kn);
            for (int i = 0; i < nb; i++) {
                float *row = scratch + (size_t)i * kn;
                int valid = causal ? (q0 + i + 1 < kn ? q0 + i + 1 : kn) : kn;
                float m = row_max(row, valid);
                inv[i] = 1.0f / exp_sum(row, valid, m);
                if (valid < kn)
                    memset(row + valid, 0, sizeof(float) * (kn - valid));
            }
            float *o = out + (size_t)q0 * out_stride + h * hd;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, hd, kn, 1.0f, scratch, kn, v + h * hd, v_stride,
                        0.0f, o, out_stride);
            /* normalise the [nb][hd] output rather than the [nb][kn] probabilities: a far smaller pass */
            for (int i = 0; i < nb; i++)
                scale_inplace(o + (size_t)i * out_stride, hd, inv[i]);
        }
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* Convolution: im2col + one SGEMM per tile, the tile being the whole batch when its columns fit the
 * scratch budget (one big GEMM, weights streamed once), else bands of output rows of one image. */

int sde_conv_out_h(const sde_conv_desc *d)
{
    int vh = d->upsample ? 2 * d->h : d->h;
    return (vh + d->pad_t + d->pad_b - d->k) / d->stride + 1;
}

int sde_conv_out_w(const sde_conv_desc *d)
{
    int vw = d->upsample ? 2 * d->w : d->w;
    return (vw + d->pad_l + d->pad_r - d->k) / d->stride + 1;
}

static int conv_pointwise(const sde_conv_desc *d)
{
    return d->k == 1 && d->stride == 1 && !d->upsample && !d->pad_t && !d->pad_b && !d->pad_l && !d->pad_r;
}

enum { PLAN_DIRECT, PLAN_POINTWISE_TILED, PLAN_BATCH, PLAN_ROWS, PLAN_WINO_BATCH, PLAN_WINO_ROWS };

typedef struct {
    int mode;
    int tile;      /* columns (pointwise tiled), output rows (PLAN_ROWS) or tile rows (PLAN_WINO_ROWS) */
    int cb;        /* output channels per weight-transform block (Winograd) */
    size_t floats; /* scratch needed */
} conv_plan;

/* Stored input rows [lo, hi) that output rows [r0, r1) read. */
static void conv_in_rows(const sde_conv_desc *d, int r0, int r1, int *lo, int *hi)
{
    int vh = d->upsample ? 2 * d->h : d->h;
    int v0 = r0 * d->stride - d->pad_t, v1 = (r1 - 1) * d->stride - d->pad_t + d->k;
    v0 = v0 < 0 ? 0 : v0;
    v1 = v1 > vh ? vh : v1;
    if (v0 >= v1) {
        *lo = *hi = 0;
        return;
    }
    *lo = d->upsample ? v0 / 2 : v0;
    *hi = d->upsample ? (v1 + 1) / 2 : v1;
}

static size_t conv_rows_floats(const sde_conv_desc *d, int tr, int ow)
{
    size_t kk = (size_t)d->cin * d->k * d->k;
    size_t f = kk * tr * ow;
    if (d->in_scale) {
        int span = (tr - 1) * d->stride + d->k;
        int rows = d->upsample ? span / 2 + 1 : span;
        rows = rows > d->h ? d->h : rows;
        f += (size_t)d->cin * rows * d->w;
    }
    return f;
}

/* Winograd F(4x4, 3x3) for stride-1, pad-1 3x3 convolutions: 4x fewer multiplies than im2col. Per 6x6
 * input tile d and 3x3 kernel g the 4x4 output is A^T [(G g G^T) . (B^T d B)] A (Lavin & Gray's
 * matrices, interpolation points 0, +-1, +-2); over all channels the elementwise product becomes 36 GEMMs
 * U[xi][cout][cin] x V[xi][cin][tiles]. Weights are transformed per call, a block of output channels at
 * a time (no second copy of the model is kept); tiles are grouped in bands of tile rows. In fp32 the
 * transforms cost a few 1e-7 of relative precision, far below the f16-weight noise of real checkpoints. */
#define WG_T 36 /* 6x6 transformed tile */

/* Distance between the 36 planes of V, M and U: n floats plus one cache line, so the 36 streams the
 * transforms read and write do not all land in the same cache sets (n is often a multiple of 4 KB). */
static size_t wg_stride(size_t n)
{
    return n + 16;
}

static int wino_ok(const sde_conv_desc *d)
{
    if (d->k != 3 || d->stride != 1 || d->pad_t != 1 || d->pad_b != 1 || d->pad_l != 1 || d->pad_r != 1)
        return 0;
    int oh = sde_conv_out_h(d), ow = sde_conv_out_w(d);
    size_t tiles = (size_t)d->batch * ((oh + 3) / 4) * ((ow + 3) / 4);
    /* small GEMMs (few tiles) or few channels: the transforms would cost more than they save */
    return d->cin >= 16 && d->cout >= 16 && oh >= 8 && ow >= 8 && tiles >= 64;
}

/* Floats of one band of tr tile rows holding nt tiles, for a block of cb output channels: V and M, the
 * 4-phase input rows, alignment slack. */
static size_t wino_band_floats(const sde_conv_desc *d, int tr, int tw, size_t nt, int cb)
{
    return WG_T * (wg_stride((size_t)d->cin * nt) + wg_stride((size_t)cb * nt)) + (size_t)d->cin * (4 * tr + 2) * 4 * (tw + 1) + 32;
}

/* U[xi][o - o0][c] = (G g G^T)[xi] for kernels g = wt[o][c], o in [o0, o0+cb); planes wg_stride(cb*cin)
 * apart. One output channel at a time through tmp ([36][cin]) so every write to U is contiguous. */
static void wino_weights(const sde_conv_desc *d, int o0, int cb, float *U, float *tmp, int oa, int ob)
{
    const size_t plane = wg_stride((size_t)cb * d->cin);
    const int cin = d->cin;
    for (int o = oa; o < ob; o++) {
        for (int c = 0; c < cin; c++) {
            const float *g = d->wt + ((size_t)o * cin + c) * 9;
            float t[6][3]; /* G g */
            for (int j = 0; j < 3; j++) {
                float g0 = g[j], g1 = g[3 + j], g2 = g[6 + j];
                t[0][j] = g0 * 0.25f;
                t[1][j] = -(g0 + g1 + g2) * (1.0f / 6);
                t[2][j] = -(g0 - g1 + g2) * (1.0f / 6);
                t[3][j] = g0 * (1.0f / 24) + g1 * (1.0f / 12) + g2 * (1.0f / 6);
                t[4][j] = g0 * (1.0f / 24) - g1 * (1.0f / 12) + g2 * (1.0f / 6);
                t[5][j] = g2;
            }
            for (int i = 0; i < 6; i++) { /* (G g) G^T */
                float g0 = t[i][0], g1 = t[i][1], g2 = t[i][2];
                float *u = tmp + (size_t)(6 * i) * cin + c;
                u[0] = g0 * 0.25f;
                u[cin] = -(g0 + g1 + g2) * (1.0f / 6);
                u[2 * cin] = -(g0 - g1 + g2) * (1.0f / 6);
                u[3 * cin] = g0 * (1.0f / 24) + g1 * (1.0f / 12) + g2 * (1.0f / 6);
                u[4 * cin] = g0 * (1.0f / 24) - g1 * (1.0f / 12) + g2 * (1.0f / 6);
                u[5 * cin] = g2;
            }
        }
        for (int xi = 0; xi < WG_T; xi++)
            memcpy(U + xi * plane + (size_t)(o - o0) * cin, tmp + (size_t)xi * cin, sizeof(float) * cin);
    }
}

/* Input rows of image b for tile rows [tr0, tr1): padded rows 4*tr0 .. 4*tr1+1 (padded row pr = virtual
 * row pr-1, zero outside), each split into 4 column phases Q_m[k] = P[4k+m] (P[u] = transformed virtual
 * column u-1, zero outside), stored at band + ((c*rows + pr - 4*tr0)*4 + m) * (tw+1). */
SDE_HOT static void wino_band(const sde_conv_desc *d, int b, int tr0, int tr1, int tw, float *band, float *tmp, int c0,
                               int c1)
{
    const int vh = d->upsample ? 2 * d->h : d->h, vw = d->upsample ? 2 * d->w : d->w, rows = 4 * (tr1 - tr0) + 2;
    const size_t ph = (size_t)tw + 1;
    const float *xb = d->x + (size_t)b * d->x_bstride;
    for (int c = c0; c < c1; c++) {
        const float sc = d->in_scale ? d->in_scale[(size_t)b * d->cin + c] : 1.0f;
        const float sh = d->in_scale ? d->in_shift[(size_t)b * d->cin + c] : 0.0f;
        for (int r = 0; r < rows; r++) {
            float *q = band + ((size_t)c * rows + r) * 4 * ph;
            int vr = 4 * tr0 + r - 1;
            if (vr < 0 || vr >= vh) {
                memset(q, 0, sizeof(float) * 4 * ph);
                continue;
            }
            const float *src = xb + (size_t)c * d->x_cstride + (size_t)(d->upsample ? vr / 2 : vr) * d->w;
            /* the padded virtual row P (4*(tw+1) floats) in tmp, built from the stored row transformed once */
            float *P = tmp, *row = tmp + 4 * ph;
            if (d->in_scale)
                affine_row(src, row, d->w, sc, sh, d->in_silu);
            else
                memcpy(row, src, sizeof(float) * d->w);
            P[0] = 0.0f;
            if (d->upsample)
                for (int k = 0; k < d->w; k++)
                    P[1 + 2 * k] = P[2 + 2 * k] = row[k];
            else
                memcpy(P + 1, row, sizeof(float) * d->w);
            for (size_t u = (size_t)vw + 1; u < 4 * ph; u++)
                P[u] = 0.0f;
            for (int m = 0; m < 4; m++) {
                float *qm = q + m * ph;
                for (size_t k = 0; k < ph; k++)
                    qm[k] = P[4 * k + m];
            }
        }
    }
}

/* o_k[t] = (B^T d)[k] for the 6-vectors d = (d0..d5)[t]: one 1-D input transform per t. restrict lets
 * gcc vectorise over t. */
static inline __attribute__((always_inline)) void wg_bt6(const float *restrict d0, const float *restrict d1,
    const float *restrict d2, const float *restrict d3, const float *restrict d4, const float *restrict d5,
    float *restrict o0, float *restrict o1, float *restrict o2, float *restrict o3, float *restrict o4,
    float *restrict o5, int n)
{
    for (int t = 0; t < n; t++) {
        float a0 = d0[t], a1 = d1[t], a2 = d2[t], a3 = d3[t], a4 = d4[t], a5 = d5[t];
        o0[t] = 4.0f * a0 - 5.0f * a2 + a4;
        o1[t] = -4.0f * (a1 + a2) + a3 + a4;
        o2[t] = 4.0f * (a1 - a2) - a3 + a4;
        o3[t] = -2.0f * (a1 - a3) - a2 + a4;
        o4[t] = 2.0f * (a1 - a3) - a2 + a4;
        o5[t] = 4.0f * a1 - 5.0f * a3 + a5;
    }
}

/* o_a[t] = (A^T m)[a], a = 0..3, for the 6-vectors m = (m0..m5)[t], plus bias. */
static inline __attribute__((always_inline)) void wg_at6(const float *restrict m0, const float *restrict m1,
    const float *restrict m2, const float *restrict m3, const float *restrict m4, const float *restrict m5,
    float *restrict o0, float *restrict o1, float *restrict o2, float *restrict o3, float bias, int n)
{
    for (int t = 0; t < n; t++) {
        float a = m1[t] + m2[t], b = m1[t] - m2[t], c = m3[t] + m4[t], e = m3[t] - m4[t];
        o0[t] = m0[t] + a + c + bias;
        o1[t] = b + 2.0f * e + bias;
        o2[t] = a + 4.0f * c + bias;
        o3[t] = b + 8.0f * e + m5[t] + bias;
    }
}

/* V[xi][c][col0 + (ty-tr0)*tw + tx] = (B^T d B)[xi] for the tiles of tile rows [tr0, tr1); tmp holds
 * 36 rows of tw floats (the row pass of the transform). */
SDE_HOT static void wino_input(const sde_conv_desc *d, int tr0, int tr1, int tw, const float *band, float *V, size_t nt,
                               size_t col0, float *tmp, int c0, int c1)
{
    const int rows = 4 * (tr1 - tr0) + 2;
    const size_t ph = (size_t)tw + 1, xs = wg_stride((size_t)d->cin * nt);
    for (int c = c0; c < c1; c++)
        for (int ty = tr0; ty < tr1; ty++) {
            /* pass 1, per tile row i: the 6 columns P[4tx .. 4tx+5] -> d B (B^T applied to the row) */
            for (int i = 0; i < 6; i++) {
                const float *q = band + ((size_t)c * rows + 4 * (ty - tr0) + i) * 4 * ph;
                const float *q0 = q, *q1 = q + ph, *q2 = q + 2 * ph, *q3 = q + 3 * ph;
                float *w = tmp + (size_t)(6 * i) * tw;
                wg_bt6(q0, q1, q2, q3, q0 + 1, q1 + 1, w, w + tw, w + 2 * tw, w + 3 * tw, w + 4 * tw, w + 5 * tw, tw);
            }
            /* pass 2, per column j: combine the 6 rows with B^T */
            float *v = V + (size_t)c * nt + col0 + (size_t)(ty - tr0) * tw;
            for (int j = 0; j < 6; j++) {
                const float *r0 = tmp + (size_t)j * tw, *r1 = r0 + 6 * (size_t)tw, *r2 = r1 + 6 * (size_t)tw,
                            *r3 = r2 + 6 * (size_t)tw, *r4 = r3 + 6 * (size_t)tw, *r5 = r4 + 6 * (size_t)tw;
                float *v0 = v + (size_t)j * xs;
                wg_bt6(r0, r1, r2, r3, r4, r5, v0, v0 + 6 * xs, v0 + 12 * xs, v0 + 18 * xs, v0 + 24 * xs, v0 + 30 * xs,
                       tw);
            }
        }
}

/* y = A^T m A (+ bias, + y when accumulating) for output channels [o0, o0+cb) of image b's tile rows
 * [tr0, tr1), whose M columns start at col0. tmp holds 24 rows of tw floats. */
SDE_HOT static void wino_output(const sde_conv_desc *d, int b, int o0, int cb, int tr0, int tr1, int tw,
                                const float *M, size_t nt, size_t col0, float *tmp, int oa, int ob)
{
    const int oh = sde_conv_out_h(d), ow = sde_conv_out_w(d);
    const size_t xs = wg_stride((size_t)cb * nt);
    for (int o = oa; o < ob; o++) {
        const float bv = (d->bias ? d->bias[o] : 0.0f) + (d->bias_b ? d->bias_b[(size_t)b * d->cout + o] : 0.0f);
        float *yo = d->y + (size_t)b * d->y_bstride + (size_t)o * d->y_cstride;
        for (int ty = tr0; ty < tr1; ty++) {
            const float *m = M + (size_t)(o - o0) * nt + col0 + (size_t)(ty - tr0) * tw;
            /* pass 1, per column j: A^T over the 6 rows -> s[a][j], a = 0..3 */
            for (int j = 0; j < 6; j++) {
                const float *m0 = m + (size_t)j * xs, *m1 = m0 + 6 * xs, *m2 = m1 + 6 * xs, *m3 = m2 + 6 * xs,
                            *m4 = m3 + 6 * xs, *m5 = m4 + 6 * xs;
                float *s0 = tmp + (size_t)j * tw;
                wg_at6(m0, m1, m2, m3, m4, m5, s0, s0 + 6 * (size_t)tw, s0 + 12 * (size_t)tw, s0 + 18 * (size_t)tw,
                       0.0f, tw);
            }
            /* pass 2, per output row a: A^T over the 6 columns, written interleaved (4 columns per tile) */
            for (int a = 0; a < 4; a++) {
                int oy = 4 * ty + a;
                if (oy >= oh)
                    break;
                const float *t0 = tmp + (size_t)(6 * a) * tw, *t1 = t0 + tw, *t2 = t1 + tw, *t3 = t2 + tw,
                            *t4 = t3 + tw, *t5 = t4 + tw;
                float *row = yo + (size_t)oy * ow;
                int full = ow / 4;
                for (int tx = 0; tx < full; tx++) {
                    float p = t1[tx] + t2[tx], q = t1[tx] - t2[tx], r = t3[tx] + t4[tx], e = t3[tx] - t4[tx];
                    float y0 = t0[tx] + p + r + bv, y1 = q + 2.0f * e + bv, y2 = p + 4.0f * r + bv,
                          y3 = q + 8.0f * e + t5[tx] + bv;
                    float *dst = row + 4 * tx;
                    if (d->accumulate)
                        dst[0] += y0, dst[1] += y1, dst[2] += y2, dst[3] += y3;
                    else
                        dst[0] = y0, dst[1] = y1, dst[2] = y2, dst[3] = y3;
                }
                if (full < tw) { /* the last, partial tile column */
                    int tx = full;
                    float p = t1[tx] + t2[tx], q = t1[tx] - t2[tx], r = t3[tx] + t4[tx], e = t3[tx] - t4[tx];
                    float yv[4] = {t0[tx] + p + r + bv, q + 2.0f * e + bv, p + 4.0f * r + bv, q + 8.0f * e + t5[tx] + bv};
                    for (int k = 0; 4 * tx + k < ow; k++)
                        row[4 * tx + k] = d->accumulate ? row[4 * tx + k] + yv[k] : yv[k];
                }
            }
        }
    }
}

/* Floats of the per-call temporary rows: a stored input row, the 36 rows of the input transform, or the
 * [36][cin] weight-transform staging, whichever is largest. */
static size_t wino_tmp_floats(const sde_conv_desc *d, int tw)
{
    size_t a = (size_t)36 * tw + d->w + 4, b = (size_t)36 * d->cin;
    return (a > b ? a : b) + 16;
}

/* The per-thread pieces of one Winograd band, split over chunks of (output) channels. */
typedef struct {
    const sde_conv_desc *d;
    int stage; /* 0: weights, 1: band + input transform, 2: output transform */
    int b, b1, tr0, tr1, tw, th, o0, nb, cb, batch_mode, chunks;
    float *U, *V, *M, *band, *tmp;
    size_t nt, tmp_floats;
} wino_job;

static void wino_item(void *ctx, int item, int thread)
{
    const wino_job *j = ctx;
    const sde_conv_desc *d = j->d;
    float *tmp = j->tmp + (size_t)thread * j->tmp_floats;
    const int n = j->stage == 1 ? d->cin : j->nb;
    const int lo = (int)((long)n * item / j->chunks), hi = (int)((long)n * (item + 1) / j->chunks);
    if (lo >= hi)
        return;
    if (j->stage == 0) {
        wino_weights(d, j->o0, j->nb, j->U, tmp, j->o0 + lo, j->o0 + hi);
    } else if (j->stage == 1) {
        for (int b = j->b; b < j->b1; b++) {
            wino_band(d, b, j->tr0, j->tr1, j->tw, j->band, tmp, lo, hi);
            wino_input(d, j->tr0, j->tr1, j->tw, j->band, j->V, j->nt, j->batch_mode ? (size_t)b * j->th * j->tw : 0,
                       tmp, lo, hi);
        }
    } else {
        for (int b = j->b; b < j->b1; b++)
            wino_output(d, b, j->o0, j->nb, j->tr0, j->tr1, j->tw, j->M, j->nt,
                        j->batch_mode ? (size_t)b * j->th * j->tw : 0, tmp, j->o0 + lo, j->o0 + hi);
    }
}

static void wino_stage(wino_job *j, int stage)
{
    j->stage = stage;
    int n = stage == 1 ? j->d->cin : j->nb;
    j->chunks = n < 4 * SDE_PAR_MAX ? n : 4 * SDE_PAR_MAX;
    par_for(j->chunks, wino_item, j);
}

static void wino_run(const sde_conv_desc *d, const conv_plan *p, float *scratch)
{
    const int oh = sde_conv_out_h(d), ow = sde_conv_out_w(d), th = (oh + 3) / 4, tw = (ow + 3) / 4;
    const int cb = p->cb, batch_mode = p->mode == PLAN_WINO_BATCH, tr = batch_mode ? th : p->tile;
    const size_t nt = batch_mode ? (size_t)d->batch * th * tw : (size_t)tr * tw;
    const size_t us = wg_stride((size_t)cb * d->cin), vs = wg_stride((size_t)d->cin * nt), ms = wg_stride((size_t)cb * nt);
    wino_job j = {.d = d, .tw = tw, .th = th, .cb = cb, .batch_mode = batch_mode, .nt = nt,
                  .tmp_floats = wino_tmp_floats(d, tw)};
    j.U = scratch;
    j.tmp = j.U + WG_T * us;
    j.V = (float *)(((uintptr_t)(j.tmp + SDE_PAR_MAX * j.tmp_floats) + 63) & ~(uintptr_t)63);
    j.M = j.V + WG_T * vs;
    j.band = j.M + WG_T * ms;
    if (cb == d->cout) { /* all output channels at once: transform the weights once for every band */
        j.o0 = 0;
        j.nb = cb;
        wino_stage(&j, 0);
    }
    for (int b0 = 0; b0 < d->batch; b0 += batch_mode ? d->batch : 1) {
        j.b = b0;
        j.b1 = batch_mode ? d->batch : b0 + 1;
        for (int tr0 = 0; tr0 < th; tr0 += tr) {
            j.tr0 = tr0;
            j.tr1 = tr0 + tr < th ? tr0 + tr : th;
            size_t n = batch_mode ? nt : (size_t)(j.tr1 - tr0) * tw;
            wino_stage(&j, 1);
            for (int o0 = 0; o0 < d->cout; o0 += cb) {
                j.o0 = o0;
                j.nb = d->cout - o0 < cb ? d->cout - o0 : cb;
                if (cb != d->cout)
                    wino_stage(&j, 0);
                const size_t ub = wg_stride((size_t)j.nb * d->cin);
                for (int xi = 0; xi < WG_T; xi++)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, j.nb, (int)n, d->cin, 1.0f, j.U + xi * ub,
                                d->cin, j.V + xi * vs, (int)nt, 0.0f, j.M + xi * wg_stride((size_t)j.nb * nt), (int)nt);
                wino_stage(&j, 2);
            }
        }
    }
}

static conv_plan conv_make_plan(const sde_conv_desc *d, size_t budget)
{
    conv_plan p = {PLAN_DIRECT, 0, 0, 0};
    size_t bf = budget / sizeof(float);
    int oh = sde_conv_out_h(d), ow = sde_conv_out_w(d);
    if (conv_pointwise(d)) {
        int inplace = d->y == d->x;
        if (!d->in_scale && !inplace)
            return p;
        size_t per_col = (d->in_scale ? (size_t)d->cin : 0) + (inplace ? (size_t)d->cout : 0);
        size_t hw = (size_t)d->h * d->w, nc = bf / per_col;
        if (nc < 64)
            nc = 64;
        if (nc > hw)
            nc = hw;
        p.mode = PLAN_POINTWISE_TILED;
        p.tile = (int)nc;
        p.floats = nc * per_col;
        return p;
    }
    size_t kk = (size_t)d->cin * d->k * d->k, ohw = (size_t)oh * ow;
    int y_packed = d->y_bstride == ohw && d->y_cstride == (size_t)d->batch * ohw;
    if (wino_ok(d)) {
        size_t th = (size_t)(oh + 3) / 4, tw = (size_t)(ow + 3) / 4;
        /* weights for all output channels if they take at most a third of the budget, else blocks of
         * output channels (multiples of 16, re-transformed per band) */
        size_t per_o = (size_t)WG_T * d->cin;
        int cb = d->cout;
        if (per_o * cb > bf / 3) {
            cb = (int)(bf / 3 / per_o) / 16 * 16;
            cb = cb < 16 ? 16 : cb;
        }
        size_t fixed = WG_T * wg_stride((size_t)cb * d->cin) + SDE_PAR_MAX * wino_tmp_floats(d, (int)tw) + 16;
        size_t fb = fixed + wino_band_floats(d, (int)th, (int)tw, d->batch * th * tw, cb);
        if (fb <= bf) {
            p.mode = PLAN_WINO_BATCH;
            p.tile = (int)th;
            p.cb = cb;
            p.floats = fb;
            return p;
        }
        int tr = (int)th;
        while (tr > 1 && fixed + wino_band_floats(d, tr, (int)tw, (size_t)tr * tw, cb) > bf)
            tr--;
        /* re-transforming blocked weights for many bands would cost more than Winograd saves */
        if (fixed + wino_band_floats(d, tr, (int)tw, (size_t)tr * tw, cb) <= bf && (cb == d->cout || tr * 4 >= (int)th)) {
            p.mode = PLAN_WINO_ROWS;
            p.tile = tr;
            p.cb = cb;
            p.floats = fixed + wino_band_floats(d, tr, (int)tw, (size_t)tr * tw, cb);
            return p;
        }
    }
    size_t fb = kk * d->batch * ohw + (d->in_scale ? (size_t)d->cin * d->h * d->w : 0);
    if (y_packed && fb <= bf) {
        p.mode = PLAN_BATCH;
        p.floats = fb;
        return p;
    }
    int tr = oh;
    while (tr > 1 && conv_rows_floats(d, tr, ow) > bf) {
        int nt = (int)((double)tr * bf / conv_rows_floats(d, tr, ow));
        tr = nt < tr ? (nt > 0 ? nt : 1) : tr - 1;
    }
    p.mode = PLAN_ROWS;
    p.tile = tr;
    p.floats = conv_rows_floats(d, tr, ow);
    return p;
}

size_t sde_conv2d_ex_scratch(const sde_conv_desc *d, size_t budget)
{
    return conv_make_plan(d, budget).floats * sizeof(float);
}

/* Prepares ncols output columns of image b (rows ldy apart) for a beta=1 GEMM; returns beta. */
static float conv_prep_out(const sde_conv_desc *d, int b, float *y, size_t ldy, size_t ncols)
{
    if (!d->bias && !d->bias_b)
        return d->accumulate ? 1.0f : 0.0f;
    for (int c = 0; c < d->cout; c++) {
        float bv = (d->bias ? d->bias[c] : 0.0f) + (d->bias_b ? d->bias_b[(size_t)b * d->cout + c] : 0.0f);
        float *row = y + (size_t)c * ldy;
        if (d->accumulate)
            for (size_t i = 0; i < ncols; i++)
                row[i] += bv;
        else
            for (size_t i = 0; i < ncols; i++)
                row[i] = bv;
    }
    return 1.0f;
}

/* Rows (c, ky, kx) of the column matrix for output rows [r0, r1): src holds stored input rows from lo on,
 * channel planes scs floats apart, rows d->w floats apart. */
static void conv_im2col(const sde_conv_desc *d, const float *src, size_t scs, int lo, int r0, int r1, int ow,
                        float *col, size_t ldc)
{
    const int k = d->k, s = d->stride, up = d->upsample, w = d->w;
    const int vh = up ? 2 * d->h : d->h, vw = up ? 2 * d->w : d->w;
    for (int c = 0; c < d->cin; c++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *base = col + ((size_t)(c * k + ky) * k + kx) * ldc;
                int off = kx - d->pad_l; /* input column = ox*s + off */
                int ox_lo = off >= 0 ? 0 : (-off + s - 1) / s;
                int ox_hi = vw - 1 - off < 0 ? 0 : (vw - 1 - off) / s + 1;
                ox_hi = ox_hi > ow ? ow : ox_hi;
                ox_lo = ox_lo > ox_hi ? ox_hi : ox_lo;
                for (int oy = r0; oy < r1; oy++) {
                    float *dst = base + (size_t)(oy - r0) * ow;
                    int vy = oy * s - d->pad_t + ky;
                    if (vy < 0 || vy >= vh) {
                        memset(dst, 0, sizeof(float) * ow);
                        continue;
                    }
                    const float *srow = src + (size_t)c * scs + (size_t)((up ? vy >> 1 : vy) - lo) * w;
                    for (int ox = 0; ox < ox_lo; ox++)
                        dst[ox] = 0.0f;
                    for (int ox = ox_hi; ox < ow; ox++)
                        dst[ox] = 0.0f;
                    if (!up && s == 1)
                        memcpy(dst + ox_lo, srow + ox_lo + off, sizeof(float) * (ox_hi - ox_lo));
                    else if (!up)
                        for (int ox = ox_lo; ox < ox_hi; ox++)
                            dst[ox] = srow[ox * s + off];
                    else
                        for (int ox = ox_lo; ox < ox_hi; ox++)
                            dst[ox] = srow[(ox * s + off) >> 1];
                }
            }
}

/* Applies image b's input transform to stored rows [lo, hi) into band[cin][(hi-lo)*w]. */
static void conv_band(const sde_conv_desc *d, int b, int lo, int hi, float *band)
{
    const float *xb = d->x + (size_t)b * d->x_bstride;
    size_t n = (size_t)(hi - lo) * d->w;
    for (int c = 0; c < d->cin; c++)
        affine_row(xb + (size_t)c * d->x_cstride + (size_t)lo * d->w, band + (size_t)c * n, n,
                   d->in_scale[(size_t)b * d->cin + c], d->in_shift[(size_t)b * d->cin + c], d->in_silu);
}

static void conv_pointwise_tiled(const sde_conv_desc *d, int nc, float *scratch)
{
    const int inplace = d->y == d->x;
    const size_t hw = (size_t)d->h * d->w;
    float *tin = scratch, *tout = scratch + (d->in_scale ? (size_t)d->cin * nc : 0);
    for (int b = 0; b < d->batch; b++) {
        const float *xb = d->x + (size_t)b * d->x_bstride;
        float *yb = d->y + (size_t)b * d->y_bstride;
        for (size_t p0 = 0; p0 < hw; p0 += nc) {
            size_t n = hw - p0 < (size_t)nc ? hw - p0 : (size_t)nc;
            const float *src = xb + p0;
            size_t lds = d->x_cstride;
            if (d->in_scale) {
                for (int c = 0; c < d->cin; c++)
                    affine_row(xb + (size_t)c * d->x_cstride + p0, tin + (size_t)c * n, n,
                               d->in_scale[(size_t)b * d->cin + c], d->in_shift[(size_t)b * d->cin + c], d->in_silu);
                src = tin;
                lds = n;
            }
            if (!inplace) {
                float beta = conv_prep_out(d, b, yb + p0, d->y_cstride, n);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->cout, (int)n, d->cin, 1.0f, d->wt, d->cin,
                            src, (int)lds, beta, yb + p0, (int)d->y_cstride);
                continue;
            }
            /* in place: every channel of these columns has been read once the GEMM is done */
            float beta = conv_prep_out(d, b, tout, n, n);
            if (d->accumulate) /* tout holds bias only: add the old values while copying back */
                beta = (d->bias || d->bias_b) ? 1.0f : 0.0f;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->cout, (int)n, d->cin, 1.0f, d->wt, d->cin, src,
                        (int)lds, beta, tout, (int)n);
            for (int c = 0; c < d->cout; c++) {
                float *dst = yb + (size_t)c * d->y_cstride + p0;
                if (d->accumulate)
                    sde_add(dst, tout + (size_t)c * n, n);
                else
                    memcpy(dst, tout + (size_t)c * n, sizeof(float) * n);
            }
        }
    }
}

void sde_conv2d_ex(const sde_conv_desc *d, float *scratch, size_t scratch_bytes)
{
    conv_plan p = conv_make_plan(d, scratch_bytes);
    const int oh = sde_conv_out_h(d), ow = sde_conv_out_w(d);
    const size_t ohw = (size_t)oh * ow, hw = (size_t)d->h * d->w;
    const int K = d->cin * d->k * d->k;
    if (p.mode == PLAN_DIRECT) {
        int x_packed = d->x_bstride == hw && d->x_cstride == (size_t)d->batch * hw;
        int y_packed = d->y_bstride == hw && d->y_cstride == (size_t)d->batch * hw;
        int nb = x_packed && y_packed ? 1 : d->batch;
        size_t n = x_packed && y_packed ? hw * d->batch : hw;
        for (int b = 0; b < nb; b++) {
            float *yb = d->y + (size_t)b * d->y_bstride;
            float beta = 1.0f;
            if (nb == 1 && d->batch > 1) {
                for (int i = 0; i < d->batch; i++)
                    beta = conv_prep_out(d, i, yb + i * hw, d->y_cstride, hw);
            } else {
                beta = conv_prep_out(d, b, yb, d->y_cstride, n);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->cout, (int)n, d->cin, 1.0f, d->wt, d->cin,
                        d->x + (size_t)b * d->x_bstride, (int)d->x_cstride, beta, yb, (int)d->y_cstride);
        }
        return;
    }
    if (p.mode == PLAN_POINTWISE_TILED) {
        conv_pointwise_tiled(d, p.tile, scratch);
        return;
    }
    if (p.mode == PLAN_WINO_BATCH || p.mode == PLAN_WINO_ROWS) {
        wino_run(d, &p, scratch);
        return;
    }
    if (p.mode == PLAN_BATCH) {
        float *col = scratch, *band = scratch + (size_t)K * d->batch * ohw;
        size_t ldc = (size_t)d->batch * ohw;
        float beta = 0.0f;
        for (int b = 0; b < d->batch; b++) {
            const float *src = d->x + (size_t)b * d->x_bstride;
            size_t scs = d->x_cstride;
            if (d->in_scale) {
                conv_band(d, b, 0, d->h, band);
                src = band;
                scs = hw;
            }
            conv_im2col(d, src, scs, 0, 0, oh, ow, col + (size_t)b * ohw, ldc);
            beta = conv_prep_out(d, b, d->y + (size_t)b * ohw, d->y_cstride, ohw);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->cout, (int)ldc, K, 1.0f, d->wt, K, col, (int)ldc,
                    beta, d->y, (int)d->y_cstride);
        return;
    }
    const int tr = p.tile;
    float *col = scratch, *band = scratch + (size_t)K * tr * ow;
    for (int b = 0; b < d->batch; b++) {
        for (int r0 = 0; r0 < oh; r0 += tr) {
            int r1 = r0 + tr < oh ? r0 + tr : oh;
            size_t nc = (size_t)(r1 - r0) * ow;
            int lo = 0, hi = 0;
            const float *src = d->x + (size_t)b * d->x_bstride;
            size_t scs = d->x_cstride;
            int base = 0;
            if (d->in_scale) {
                conv_in_rows(d, r0, r1, &lo, &hi);
                conv_band(d, b, lo, hi, band);
                src = band;
                scs = (size_t)(hi - lo) * d->w;
                base = lo;
            }
            conv_im2col(d, src, scs, base, r0, r1, ow, col, nc);
            float *yt = d->y + (size_t)b * d->y_bstride + (size_t)r0 * ow;
            float beta = conv_prep_out(d, b, yt, d->y_cstride, nc);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->cout, (int)nc, K, 1.0f, d->wt, K, col, (int)nc,
                        beta, yt, (int)d->y_cstride);
        }
    }
}

size_t sde_conv2d_scratch(int cin, int h, int w, int k, int stride, int pad)
{
    if (k == 1 && stride == 1 && pad == 0)
        return 0;
    size_t oh = (size_t)(h + 2 * pad - k) / stride + 1, ow = (size_t)(w + 2 * pad - k) / stride + 1;
    return (size_t)cin * k * k * oh * ow * sizeof(float);
}

void sde_conv2d(const float *x, int cin, int h, int w, const float *wt, const float *b, int cout, int k, int stride,
                int pad, float *y, float *scratch)
{
    int oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1;
    sde_conv_desc d = {.x = x, .batch = 1, .cin = cin, .h = h, .w = w, .x_cstride = (size_t)h * w,
                       .x_bstride = (size_t)cin * h * w, .wt = wt, .bias = b, .cout = cout, .k = k, .stride = stride,
                       .pad_t = pad, .pad_b = pad, .pad_l = pad, .pad_r = pad, .y = y,
                       .y_cstride = (size_t)oh * ow, .y_bstride = (size_t)cout * oh * ow};
    sde_conv2d_ex(&d, scratch, sde_conv2d_scratch(cin, h, w, k, stride, pad));
}
