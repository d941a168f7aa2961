/* ops_elementwise.c: activations, reductions, softmax, LayerNorm/GroupNorm, transpose and upsample: loops
 * written so gcc vectorises them (cloned for AVX2+FMA where the CPU has it). */
#include "ops.h"
#include "ops_internal.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------------- */
/* Spreading a loop over the pool. At 2 threads these memory-bound loops were a fifth of a bf16 UNet step
 * when run on one thread; each element (row, channel plane) is computed by the same code either way, so
 * results do not depend on the split. */

typedef void (*range_fn)(void *ctx, size_t lo, size_t hi);

typedef struct {
    range_fn fn;
    void *ctx;
    size_t n, align;
    int items;
} par_range_job;

static void par_range_item(void *ctx, int item, int thread)
{
    (void)thread;
    const par_range_job *j = ctx;
    const size_t units = (j->n + j->align - 1) / j->align;
    size_t lo = units * item / j->items * j->align, hi = units * (item + 1) / j->items * j->align;
    if (hi > j->n) hi = j->n;
    if (lo < hi) j->fn(j->ctx, lo, hi);
}

/* fn over [0, n) in up to 4 items per thread of at least `grain` units each (costing about the same),
 * item boundaries on multiples of align (a cache line of floats for flat arrays, 1 for rows) */
static void par_range(size_t n, size_t grain, size_t align, range_fn fn, void *ctx)
{
    size_t items = grain ? n / grain : n;
    if (items > 4 * SDE_PAR_MAX) items = 4 * SDE_PAR_MAX;
    if (items < 2) {
        if (n) fn(ctx, 0, n);
        return;
    }
    par_range_job j = {fn, ctx, n, align, (int)items};
    sde_par_for((int)items, par_range_item, &j);
}

/* Floats per item below which a flat elementwise loop runs on one thread: 256 KB, so the pool's wake-up
 * (a few microseconds) is under a tenth of the work. */
#define PAR_FLOATS 65536

/* ---------------------------------------------------------------------------------------------------- */
/* Elementwise activations. */

SDE_HOT static void silu_range(void *ctx, size_t lo, size_t hi)
{
    float *x = ctx;
    for (size_t i = lo; i < hi; i++)
        x[i] = silu_1(x[i]);
}

SDE_HOT static void gelu_range(void *ctx, size_t lo, size_t hi)
{
    float *x = ctx;
    for (size_t i = lo; i < hi; i++)
        x[i] = gelu_1(x[i]);
}

SDE_HOT static void gelu_tanh_range(void *ctx, size_t lo, size_t hi)
{
    float *x = ctx;
    for (size_t i = lo; i < hi; i++) {
        float v = x[i];
        float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
        /* 0.5*(1 + tanh(u)) = sigmoid(2u): no cancellation in the negative tail */
        x[i] = v / (1.0f + fast_expf(-2.0f * u));
    }
}

SDE_HOT static void quick_gelu_range(void *ctx, size_t lo, size_t hi)
{
    float *x = ctx;
    for (size_t i = lo; i < hi; i++) {
        float v = x[i];
        x[i] = v / (1.0f + fast_expf(-1.702f * v));
    }
}

SDE_HOT static void relu_range(void *ctx, size_t lo, size_t hi)
{
    float *x = ctx;
    for (size_t i = lo; i < hi; i++)
        x[i] = x[i] > 0.f ? x[i] : 0.f;
}

void sde_silu(float *x, size_t n)
{
    par_range(n, PAR_FLOATS / 4, 16, silu_range, x);
}

void sde_gelu(float *x, size_t n)
{
    par_range(n, PAR_FLOATS / 8, 16, gelu_range, x);
}

void sde_gelu_tanh(float *x, size_t n)
{
    par_range(n, PAR_FLOATS / 4, 16, gelu_tanh_range, x);
}

void sde_quick_gelu(float *x, size_t n)
{
    par_range(n, PAR_FLOATS / 4, 16, quick_gelu_range, x);
}

void sde_relu(float *x, size_t n)
{
    par_range(n, PAR_FLOATS, 16, relu_range, x);
}

typedef struct {
    const float *x;
    float *y;
    int inner;
} geglu_job;

SDE_HOT static void geglu_rows(void *ctx, size_t r0, size_t r1)
{
    const geglu_job *j = ctx;
    const int inner = j->inner;
    for (size_t r = r0; r < r1; r++) {
        const float *a = j->x + r * 2 * inner;
        const float *g = a + inner;
        float *o = j->y + r * inner;
        for (int i = 0; i < inner; i++)
            o[i] = a[i] * gelu_1(g[i]);
    }
}

void sde_geglu(const float *x, int n, int inner, float *y)
{
    geglu_job j = {x, y, inner};
    par_range((size_t)n, inner > 0 ? PAR_FLOATS / 8 / (size_t)inner + 1 : 1, 1, geglu_rows, &j);
}

typedef struct {
    float *y;
    const float *x;
} add_job;

SDE_HOT static void add_range(void *ctx, size_t lo, size_t hi)
{
    const add_job *j = ctx;
    for (size_t i = lo; i < hi; i++)
        j->y[i] += j->x[i];
}

void sde_add(float *y, const float *x, size_t n)
{
    add_job j = {y, x};
    par_range(n, PAR_FLOATS, 16, add_range, &j);
}

static void copy_range(void *ctx, size_t lo, size_t hi)
{
    const add_job *j = ctx;
    memcpy(j->y + lo, j->x + lo, (hi - lo) * sizeof(float));
}

void sde_copy(float *y, const float *x, size_t n)
{
    add_job j = {y, x};
    par_range(n, 4 * PAR_FLOATS, 16, copy_range, &j);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Reductions. */

SDE_HOT_SUM float sde_row_max(const float *x, int n)
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
SDE_HOT_SUM static double sum_f(const float *x, size_t n)
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
SDE_HOT_SUM static double sumsq_dev(const float *x, size_t n, float m)
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
SDE_HOT_SUM float sde_exp_sum(float *x, int n, float m)
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

SDE_HOT void sde_scale_inplace(float *x, size_t n, float s)
{
    for (size_t i = 0; i < n; i++)
        x[i] *= s;
}

void sde_softmax_rows(float *x, int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * cols;
        float m = sde_row_max(row, cols);
        float s = sde_exp_sum(row, cols, m);
        sde_scale_inplace(row, cols, 1.0f / s);
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* Normalisation. */

SDE_HOT void sde_affine_row(const float *x, float *y, size_t n, float sc, float sh, int silu)
{
    if (silu)
        for (size_t i = 0; i < n; i++)
            y[i] = silu_1(x[i] * sc + sh);
    else
        for (size_t i = 0; i < n; i++)
            y[i] = x[i] * sc + sh;
}

SDE_HOT static void ln_apply(const float *x, float *y, int n, float mean, float rstd, const float *g,
                             const float *b)
{
    for (int i = 0; i < n; i++) {
        float v = (x[i] - mean) * rstd;
        if (g) v *= g[i];
        if (b) v += b[i];
        y[i] = v;
    }
}

typedef struct {
    const float *x, *g, *b;
    float *y, eps;
    int dim;
} ln_job;

static void ln_rows(void *ctx, size_t r0, size_t r1)
{
    const ln_job *j = ctx;
    for (size_t r = r0; r < r1; r++) {
        const float *row = j->x + r * j->dim;
        float mean = (float)(sum_f(row, j->dim) / j->dim);
        float var = (float)(sumsq_dev(row, j->dim, mean) / j->dim);
        ln_apply(row, j->y + r * j->dim, j->dim, mean, 1.0f / sqrtf(var + j->eps), j->g, j->b);
    }
}

void sde_layernorm_to(const float *x, int n, int dim, const float *g, const float *b, float eps, float *y)
{
    ln_job j = {x, g, b, y, eps, dim};
    par_range((size_t)n, dim > 0 ? PAR_FLOATS / 2 / (size_t)dim + 1 : 1, 1, ln_rows, &j);
}

void sde_layernorm(float *x, int n, int dim, const float *g, const float *b, float eps)
{
    sde_layernorm_to(x, n, dim, g, b, eps, x);
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

typedef struct {
    const float *x, *g, *b;
    int cpg, hw;
    size_t cstride;
    float eps, *scale, *shift;
} gn_job;

static void gn_coeffs_item(void *ctx, int grp, int thread)
{
    (void)thread;
    const gn_job *j = ctx;
    float mean, rstd;
    group_stats(j->x, grp * j->cpg, j->cpg, j->hw, j->cstride, j->eps, &mean, &rstd);
    for (int ch = grp * j->cpg; ch < (grp + 1) * j->cpg; ch++) {
        float sc = rstd * (j->g ? j->g[ch] : 1.0f);
        j->scale[ch] = sc;
        j->shift[ch] = (j->b ? j->b[ch] : 0.0f) - mean * sc;
    }
}

void sde_groupnorm_coeffs(const float *x, int c, int hw, size_t cstride, int groups, const float *g,
                          const float *b, float eps, float *scale, float *shift)
{
    /* memory-bound passes over the whole tensor: the groups are independent, one per pool item */
    gn_job j = {x, g, b, c / groups, hw, cstride, eps, scale, shift};
    sde_par_for(groups, gn_coeffs_item, &j);
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
            sde_affine_row(p, p, hw, sc, sh, silu);
        }
    }
}

typedef struct {
    const float *x, *scale, *shift;
    float *y;
    size_t x_cstride, y_cstride;
    int hw, silu;
} affine_job;

static void affine_planes(void *ctx, size_t c0, size_t c1)
{
    const affine_job *j = ctx;
    for (size_t ch = c0; ch < c1; ch++)
        sde_affine_row(j->x + ch * j->x_cstride, j->y + ch * j->y_cstride, j->hw, j->scale[ch], j->shift[ch],
                       j->silu);
}

void sde_affine_act(const float *x, size_t x_cstride, int c, int hw, const float *scale, const float *shift,
                    int silu, float *y, size_t y_cstride)
{
    affine_job j = {x, scale, shift, y, x_cstride, y_cstride, hw, silu};
    par_range((size_t)c, hw > 0 ? PAR_FLOATS / 4 / (size_t)hw + 1 : 1, 1, affine_planes, &j);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Transpose, upsample. */

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
