/* test_ops.c: every primitive of ops.h against a naive double-precision reference written here, on
 * random inputs (convolutions with stride/padding/1x1/tiling/fusions, norms, attention, GEGLU, ...). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

/* Tolerances: the references accumulate in double, ours in float (OpenBLAS SGEMM, float lanes; Winograd
 * F(4x4,3x3) and F(6x6,3x3) add transform roundings with coefficients up to 8 and 32, ~1e-6 relative). A
 * float dot product of K terms of size ~1 has rounding error ~sqrt(K) * 6e-8 typically and K * 6e-8 at worst;
 * the largest K here is 1152 (a 128-channel 3x3 conv), so 1e-4 absolute on outputs of size ~10 leaves
 * ~10x headroom over the worst case while a wrong index, missing bias or off-by-one pad gives errors of
 * order 1. Elementwise functions are checked relative to libm double: our exp is within ~2 ulp, erfc
 * within 1.2e-7 relative, so 2e-6 relative (plus 1e-7 absolute near zero) is tight yet safe. */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static float frand(void) /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) / (double)(1 << 24) * 2.0 - 1.0);
}

static float *rand_buf(size_t n, float scale)
{
    float *p = malloc(n * sizeof *p);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = frand() * scale;
    return p;
}

static double max_abs_diff(const float *a, const double *b, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) /* NaN counts as a failure too */
            m = isnan(d) ? INFINITY : d;
    }
    return m;
}

/* ------------------------------------------------------------------------------------------------ */
/* Naive references. */

static void ref_linear(const float *x, int n, int in, const float *w, const float *b, int out, double *y)
{
    for (int r = 0; r < n; r++)
        for (int o = 0; o < out; o++) {
            double s = b ? b[o] : 0.0;
            for (int i = 0; i < in; i++)
                s += (double)x[r * in + i] * w[o * in + i];
            y[r * out + o] = s;
        }
}

static double silu_d(double v)
{
    return v / (1.0 + exp(-v));
}

static double gelu_d(double v)
{
    return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
}

/* conv of one image with arbitrary pads, optional upsample and input transform (scale/shift per channel). */
static void ref_conv(const float *x, int cin, int h, int w, const float *sc, const float *sh, int silu,
                     int up, const float *wt, const float *bias, int cout, int k, int s, int pt, int pb,
                     int pl, int pr, double *y, int *oh_out, int *ow_out)
{
    int vh = up ? 2 * h : h, vw = up ? 2 * w : w;
    int oh = (vh + pt + pb - k) / s + 1, ow = (vw + pl + pr - k) / s + 1;
    for (int o = 0; o < cout; o++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                double acc = bias ? bias[o] : 0.0;
                for (int c = 0; c < cin; c++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int vy = oy * s - pt + ky, vx = ox * s - pl + kx;
                            if (vy < 0 || vy >= vh || vx < 0 || vx >= vw) continue;
                            int iy = up ? vy / 2 : vy, ix = up ? vx / 2 : vx;
                            double v = x[(c * h + iy) * w + ix];
                            if (sc) {
                                v = v * sc[c] + sh[c];
                                if (silu) v = silu_d(v);
                            }
                            acc += v * wt[((o * cin + c) * k + ky) * k + kx];
                        }
                y[(o * oh + oy) * ow + ox] = acc;
            }
    *oh_out = oh;
    *ow_out = ow;
}

/* GroupNorm of one image [c][hw] in double. */
static void ref_groupnorm(const float *x, int c, int hw, int groups, const float *g, const float *b,
                          double eps, int silu, double *y)
{
    int cpg = c / groups;
    for (int grp = 0; grp < groups; grp++) {
        double s = 0, ss = 0;
        size_t n = (size_t)cpg * hw;
        for (int ch = grp * cpg; ch < (grp + 1) * cpg; ch++)
            for (int i = 0; i < hw; i++)
                s += x[ch * hw + i];
        double m = s / n;
        for (int ch = grp * cpg; ch < (grp + 1) * cpg; ch++)
            for (int i = 0; i < hw; i++)
                ss += (x[ch * hw + i] - m) * (x[ch * hw + i] - m);
        double rstd = 1.0 / sqrt(ss / n + eps);
        for (int ch = grp * cpg; ch < (grp + 1) * cpg; ch++)
            for (int i = 0; i < hw; i++) {
                double v = (x[ch * hw + i] - m) * rstd * (g ? g[ch] : 1.0) + (b ? b[ch] : 0.0);
                y[ch * hw + i] = silu ? silu_d(v) : v;
            }
    }
}

static void ref_attention(const float *q, int qs, const float *k, int ks, const float *v, int vs, int nq,
                          int nk, int heads, int hd, int causal, double *out, int os)
{
    double *p = malloc(sizeof(double) * nk);
    assert_non_null(p);
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < nq; i++) {
            double m = -INFINITY, sum = 0;
            int valid = causal ? (i + 1 < nk ? i + 1 : nk) : nk;
            for (int j = 0; j < valid; j++) {
                double d = 0;
                for (int e = 0; e < hd; e++)
                    d += (double)q[i * qs + h * hd + e] * k[j * ks + h * hd + e];
                p[j] = d / sqrt((double)hd);
                m = p[j] > m ? p[j] : m;
            }
            for (int j = 0; j < valid; j++)
                sum += p[j] = exp(p[j] - m);
            for (int e = 0; e < hd; e++) {
                double acc = 0;
                for (int j = 0; j < valid; j++)
                    acc += p[j] * v[j * vs + h * hd + e];
                out[i * os + h * hd + e] = acc / sum;
            }
        }
    free(p);
}

/* ------------------------------------------------------------------------------------------------ */

static void test_linear(void **state)
{
    (void)state;
    int n = 37, in = 300, out = 65;
    float *x = rand_buf((size_t)n * in, 1), *w = rand_buf((size_t)out * in, 0.1f), *b = rand_buf(out, 1);
    float *y = malloc(sizeof(float) * n * out);
    double *r = malloc(sizeof(double) * n * out);
    sde_linear(x, n, in, w, b, out, y);
    ref_linear(x, n, in, w, b, out, r);
    assert_true(max_abs_diff(y, r, (size_t)n * out) < 1e-4);
    sde_linear(x, n, in, w, NULL, out, y);
    ref_linear(x, n, in, w, NULL, out, r);
    assert_true(max_abs_diff(y, r, (size_t)n * out) < 1e-4);
    free(x), free(w), free(b), free(y), free(r);
}

static void test_layernorm(void **state)
{
    (void)state;
    int n = 9, dim = 768;
    float *x = rand_buf((size_t)n * dim, 3), *g = rand_buf(dim, 1), *b = rand_buf(dim, 1);
    for (int i = 0; i < n * dim; i++)
        x[i] += 5.0f; /* an offset mean: the variance must be computed about it, not as E[x^2]-m^2 in float */
    double *r = malloc(sizeof(double) * n * dim);
    for (int row = 0; row < n; row++) {
        double m = 0, v = 0;
        for (int i = 0; i < dim; i++)
            m += x[row * dim + i];
        m /= dim;
        for (int i = 0; i < dim; i++)
            v += (x[row * dim + i] - m) * (x[row * dim + i] - m);
        v /= dim;
        for (int i = 0; i < dim; i++)
            r[row * dim + i] = (x[row * dim + i] - m) / sqrt(v + 1e-5) * g[i] + b[i];
    }
    sde_layernorm(x, n, dim, g, b, 1e-5f);
    /* outputs ~|g|*3 sigma; float normalisation is good to a few 1e-7 relative */
    assert_true(max_abs_diff(x, r, (size_t)n * dim) < 2e-5);
    free(x), free(g), free(b), free(r);
}

static void test_groupnorm(void **state)
{
    (void)state;
    int c = 64, hw = 123, groups = 8;
    float *x = rand_buf((size_t)c * hw, 2), *g = rand_buf(c, 1), *b = rand_buf(c, 1);
    float *y = malloc(sizeof(float) * c * hw);
    double *r = malloc(sizeof(double) * c * hw);
    for (int silu = 0; silu <= 1; silu++) {
        memcpy(y, x, sizeof(float) * c * hw);
        sde_groupnorm(y, c, hw, groups, g, b, 1e-6f, silu);
        ref_groupnorm(x, c, hw, groups, g, b, 1e-6, silu, r);
        assert_true(max_abs_diff(y, r, (size_t)c * hw) < 2e-5);
    }
    /* the batched-layout path: two images interleaved as [c][2][hw], coefficients then affine+SiLU */
    float *xb = malloc(sizeof(float) * c * hw * 2), *x2 = rand_buf((size_t)c * hw, 1);
    for (int ch = 0; ch < c; ch++) {
        memcpy(xb + (size_t)ch * 2 * hw, x + (size_t)ch * hw, sizeof(float) * hw);
        memcpy(xb + (size_t)ch * 2 * hw + hw, x2 + (size_t)ch * hw, sizeof(float) * hw);
    }
    float sc[64], sh[64];
    float *out = malloc(sizeof(float) * c * hw);
    sde_groupnorm_coeffs(xb + hw, c, hw, (size_t)2 * hw, groups, g, b, 1e-6f, sc, sh);
    sde_affine_act(xb + hw, (size_t)2 * hw, c, hw, sc, sh, 1, out, hw);
    ref_groupnorm(x2, c, hw, groups, g, b, 1e-6, 1, r);
    assert_true(max_abs_diff(out, r, (size_t)c * hw) < 2e-5);
    free(x), free(g), free(b), free(y), free(r), free(xb), free(x2), free(out);
}

typedef struct {
    int cin, h, w, cout, k, s, pt, pb, pl, pr, up, transform, silu;
} conv_case;

/* Runs one case through sde_conv2d_ex for a batch of 2 in the interleaved [C][B][HW] layout, with the
 * given scratch budget, and compares every output with the reference. */
static void check_conv_ex(const conv_case *cc, size_t budget, int use_bias_b, int accumulate)
{
    const int B = 2;
    size_t hw = (size_t)cc->h * cc->w;
    float *x = rand_buf((size_t)cc->cin * B * hw, 1);
    float *wt = rand_buf((size_t)cc->cout * cc->cin * cc->k * cc->k, 0.2f), *bias = rand_buf(cc->cout, 1);
    float *bb = rand_buf((size_t)B * cc->cout, 1);
    float *sc = rand_buf((size_t)B * cc->cin, 1), *sh = rand_buf((size_t)B * cc->cin, 1);
    sde_conv_desc d = {.x = x,
                       .batch = B,
                       .cin = cc->cin,
                       .h = cc->h,
                       .w = cc->w,
                       .x_cstride = B * hw,
                       .x_bstride = hw,
                       .in_scale = cc->transform ? sc : NULL,
                       .in_shift = cc->transform ? sh : NULL,
                       .in_silu = cc->silu,
                       .upsample = cc->up,
                       .wt = wt,
                       .bias = bias,
                       .bias_b = use_bias_b ? bb : NULL,
                       .cout = cc->cout,
                       .k = cc->k,
                       .stride = cc->s,
                       .pad_t = cc->pt,
                       .pad_b = cc->pb,
                       .pad_l = cc->pl,
                       .pad_r = cc->pr,
                       .accumulate = accumulate};
    int oh = sde_conv_out_h(&d), ow = sde_conv_out_w(&d);
    size_t ohw = (size_t)oh * ow, ny = (size_t)cc->cout * B * ohw;
    float *y = rand_buf(ny, 1), *y0 = malloc(sizeof(float) * ny);
    memcpy(y0, y, sizeof(float) * ny);
    d.y = y;
    d.y_cstride = B * ohw;
    d.y_bstride = ohw;
    size_t sb = sde_conv2d_ex_scratch(&d, budget);
    float *scratch = sb ? malloc(sb) : NULL;
    sde_conv2d_ex(&d, scratch, sb);
    float *xi = malloc(sizeof(float) * cc->cin * hw);
    double *r = malloc(sizeof(double) * cc->cout * ohw);
    for (int b = 0; b < B; b++) {
        for (int c = 0; c < cc->cin; c++)
            memcpy(xi + c * hw, x + c * B * hw + b * hw, sizeof(float) * hw);
        int rh, rw;
        ref_conv(xi, cc->cin, cc->h, cc->w, cc->transform ? sc + b * cc->cin : NULL,
                 cc->transform ? sh + b * cc->cin : NULL, cc->silu, cc->up, wt, bias, cc->cout, cc->k, cc->s,
                 cc->pt, cc->pb, cc->pl, cc->pr, r, &rh, &rw);
        assert_int_equal(rh, oh);
        assert_int_equal(rw, ow);
        double worst = 0;
        for (int o = 0; o < cc->cout; o++)
            for (size_t i = 0; i < ohw; i++) {
                size_t at = o * B * ohw + b * ohw + i;
                double want =
                    r[o * ohw + i] + (use_bias_b ? bb[b * cc->cout + o] : 0) + (accumulate ? y0[at] : 0);
                double dd = fabs(y[at] - want);
                worst = dd > worst || isnan(dd) ? (isnan(dd) ? INFINITY : dd) : worst;
            }
        if (!(worst < 1e-4))
            fail_msg(
                "conv cin %d %dx%d cout %d k %d s %d pad %d,%d,%d,%d up %d tf %d budget %zu: max diff %g",
                cc->cin, cc->h, cc->w, cc->cout, cc->k, cc->s, cc->pt, cc->pb, cc->pl, cc->pr, cc->up,
                cc->transform, budget, worst);
    }
    free(x), free(wt), free(bias), free(bb), free(sc), free(sh), free(y), free(y0), free(scratch), free(xi),
        free(r);
}

static void test_conv2d_plain(void **state)
{
    (void)state;
    /* the one-image API: 3x3 pad 1, 3x3 stride 2 pad 1, 1x1, 5x5 pad 2 on a non-square image */
    const int shapes[][6] = {
        {5, 9, 7, 6, 3, 1}, {4, 11, 10, 3, 3, 2}, {16, 6, 5, 8, 1, 1}, {3, 8, 13, 4, 5, 1}};
    for (unsigned t = 0; t < sizeof shapes / sizeof *shapes; t++) {
        int cin = shapes[t][0], h = shapes[t][1], w = shapes[t][2], cout = shapes[t][3], k = shapes[t][4];
        int s = shapes[t][5], pad = k / 2;
        float *x = rand_buf((size_t)cin * h * w, 1), *wt = rand_buf((size_t)cout * cin * k * k, 0.3f);
        float *b = rand_buf(cout, 1);
        int oh = (h + 2 * pad - k) / s + 1, ow = (w + 2 * pad - k) / s + 1;
        float *y = malloc(sizeof(float) * cout * oh * ow);
        double *r = malloc(sizeof(double) * cout * oh * ow);
        size_t sb = sde_conv2d_scratch(cin, h, w, k, s, pad);
        if (k == 1) assert_int_equal(sb, 0); /* 1x1 stride-1 convolutions go straight to SGEMM */
        float *scratch = sb ? malloc(sb) : NULL;
        sde_conv2d(x, cin, h, w, wt, b, cout, k, s, pad, y, scratch);
        int rh, rw;
        ref_conv(x, cin, h, w, NULL, NULL, 0, 0, wt, b, cout, k, s, pad, pad, pad, pad, r, &rh, &rw);
        assert_int_equal(rh, oh);
        assert_int_equal(rw, ow);
        assert_true(max_abs_diff(y, r, (size_t)cout * oh * ow) < 1e-4);
        free(x), free(wt), free(b), free(y), free(r), free(scratch);
    }
}

static void test_conv2d_ex(void **state)
{
    (void)state;
    const conv_case cases[] = {
        {8, 9, 7, 6, 3, 1, 1, 1, 1, 1, 0, 0, 0},   /* 3x3 pad 1 */
        {8, 9, 7, 6, 3, 2, 1, 1, 1, 1, 0, 0, 0},   /* stride 2 pad 1 (UNet downsample) */
        {6, 8, 8, 5, 3, 2, 0, 1, 0, 1, 0, 0, 0},   /* asymmetric pad (VAE encoder downsample) */
        {5, 4, 6, 7, 3, 1, 1, 1, 1, 1, 1, 0, 0},   /* fused nearest-2x upsample */
        {8, 7, 9, 6, 3, 1, 1, 1, 1, 1, 0, 1, 1},   /* fused GroupNorm-style affine + SiLU */
        {8, 7, 9, 6, 3, 1, 1, 1, 1, 1, 1, 1, 0},   /* upsample + affine */
        {12, 5, 6, 9, 1, 1, 0, 0, 0, 0, 0, 0, 0},  /* 1x1 straight SGEMM over the whole batch */
        {12, 5, 6, 9, 1, 1, 0, 0, 0, 0, 0, 1, 1},  /* 1x1 with the input transform */
        {128, 6, 5, 4, 3, 1, 1, 1, 1, 1, 0, 1, 1}, /* K = 1152 */
        /* up to 4 output channels: no im2col (ops_conv.c's small-cout path), whole and partial vectors */
        {3, 9, 37, 1, 3, 1, 1, 1, 1, 1, 0, 0, 0},
        {40, 11, 33, 3, 3, 1, 1, 1, 1, 1, 0, 1, 1},
        {512, 7, 200, 2, 3, 1, 1, 1, 1, 1, 0, 1, 0}, /* bands of 2 rows */
        /* K over 1024 (several of the packed kernels' K blocks) through im2col, stride 1 and 2 */
        {160, 6, 7, 9, 3, 1, 1, 1, 1, 1, 0, 1, 1},
        {130, 9, 8, 7, 3, 2, 1, 1, 1, 1, 0, 0, 0},
        /* >= 16 channels, >= 8x8 and >= 64 tiles of 4x4: the Winograd path (whole batch with the big budget;
         * bands of tile rows and blocks of output channels with 64-512 KB; im2col with the two smallest
         * budgets). F(6x6,3x3) for these four (their 6x6 tiles need at least 10% fewer multiplies) ... */
        {16, 30, 22, 17, 3, 1, 1, 1, 1, 1, 0, 0, 0},
        {16, 29, 27, 40, 3, 1, 1, 1, 1, 1, 0, 1, 1}, /* odd sizes: partial tiles, GroupNorm+SiLU, 3 blocks */
        {16, 15, 13, 16, 3, 1, 1, 1, 1, 1, 1, 1, 1}, /* fused upsample + transform, 30x26 out */
        {32, 13, 9, 16, 3, 1, 1, 1, 1, 1, 1, 0, 0},  /* upsample, odd stored width */
        /* ... F(4x4,3x3) for 32x32 outputs (as many multiplies either way) */
        {16, 32, 32, 17, 3, 1, 1, 1, 1, 1, 0, 1, 1},
        {24, 16, 16, 16, 3, 1, 1, 1, 1, 1, 1, 0, 0}, /* upsample to 32x32 */
    };
    const size_t budgets[] = {(size_t)64 << 20, 1, 4096, 65536, 262144, 131072, 524288};
    for (unsigned t = 0; t < sizeof cases / sizeof *cases; t++)
        for (unsigned bi = 0; bi < sizeof budgets / sizeof *budgets; bi++)
            /* per-image bias and accumulate on some of the runs */
            check_conv_ex(&cases[t], budgets[bi], bi % 2, bi >= 2);
}

static void test_conv2d_inplace_1x1(void **state)
{
    (void)state;
    /* y == x with cout < cin (the VAE's nin_shortcut computed in place), column tiles smaller than hw */
    int cin = 10, cout = 6, h = 9, w = 11, hw = h * w;
    float *x = rand_buf((size_t)cin * hw, 1), *wt = rand_buf((size_t)cout * cin, 0.3f),
          *b = rand_buf(cout, 1);
    float *keep = malloc(sizeof(float) * cin * hw);
    memcpy(keep, x, sizeof(float) * cin * hw);
    double *r = malloc(sizeof(double) * cout * hw);
    int rh, rw;
    ref_conv(keep, cin, h, w, NULL, NULL, 0, 0, wt, b, cout, 1, 1, 0, 0, 0, 0, r, &rh, &rw);
    sde_conv_desc d = {.x = x,
                       .batch = 1,
                       .cin = cin,
                       .h = h,
                       .w = w,
                       .x_cstride = hw,
                       .x_bstride = (size_t)cin * hw,
                       .wt = wt,
                       .bias = b,
                       .cout = cout,
                       .k = 1,
                       .stride = 1,
                       .y = x,
                       .y_cstride = hw,
                       .y_bstride = (size_t)cin * hw};
    size_t sb = sde_conv2d_ex_scratch(&d, 64 * sizeof(float) * cout); /* 64-column tiles: two of them */
    float *scratch = malloc(sb);
    sde_conv2d_ex(&d, scratch, sb);
    assert_true(max_abs_diff(x, r, (size_t)cout * hw) < 1e-4);
    free(x), free(wt), free(b), free(keep), free(r), free(scratch);
}

static void test_activations(void **state)
{
    (void)state;
    enum { N = 4001 };
    float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++)
        x[i] = -20.0f + 40.0f * i / (N - 1); /* covers both saturated tails */
    double worst[4] = {0};
    for (int f = 0; f < 4; f++) {
        memcpy(y, x, sizeof(float) * N);
        if (f == 0)
            sde_silu(y, N);
        else if (f == 1)
            sde_gelu(y, N);
        else if (f == 2)
            sde_gelu_tanh(y, N);
        else
            sde_quick_gelu(y, N);
        for (int i = 0; i < N; i++) {
            double v = x[i], want;
            if (f == 0)
                want = silu_d(v);
            else if (f == 1)
                want = gelu_d(v);
            else if (f == 2)
                want = 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
            else
                want = v / (1.0 + exp(-1.702 * v));
            double err = fabs(y[i] - want) / (fabs(want) + 1e-7 / 2e-6);
            if (!(err <= worst[f])) worst[f] = isnan(err) ? INFINITY : err;
        }
    }
    for (int f = 0; f < 4; f++)
        if (!(worst[f] < 2e-6)) fail_msg("activation %d: max relative error %g", f, worst[f]);
    /* the exact GELU is not the tanh one: they differ by ~1e-4 around |x| = 2 */
    float a = 2.0f, c = 2.0f;
    sde_gelu(&a, 1);
    sde_gelu_tanh(&c, 1);
    assert_true(fabsf(a - c) > 1e-5f);
    free(x), free(y);
}

static void test_softmax(void **state)
{
    (void)state;
    int rows = 5, cols = 77;
    float *x = rand_buf((size_t)rows * cols, 30); /* wide range: needs the max subtraction */
    double *r = malloc(sizeof(double) * rows * cols);
    for (int i = 0; i < rows; i++) {
        double m = -INFINITY, s = 0;
        for (int j = 0; j < cols; j++)
            m = x[i * cols + j] > m ? x[i * cols + j] : m;
        for (int j = 0; j < cols; j++)
            s += r[i * cols + j] = exp(x[i * cols + j] - m);
        for (int j = 0; j < cols; j++)
            r[i * cols + j] /= s;
    }
    sde_softmax_rows(x, rows, cols);
    assert_true(max_abs_diff(x, r, (size_t)rows * cols) < 1e-6);
    x[0] = 1000.0f; /* one huge logit must not overflow */
    sde_softmax_rows(x, 1, cols);
    assert_true(fabsf(x[0] - 1.0f) < 1e-6f);
    free(x), free(r);
}

static void check_attention(int nq, int nk, int heads, int hd, int causal, int pad)
{
    int qs = heads * hd + pad, ks = heads * hd + 2 * pad, os = heads * hd + pad; /* strided rows */
    float *q = rand_buf((size_t)nq * qs, 1), *k = rand_buf((size_t)nk * ks, 1),
          *v = rand_buf((size_t)nk * ks, 1);
    float *out = calloc((size_t)nq * os, sizeof(float));
    double *r = calloc((size_t)nq * os, sizeof(double));
    float *scratch = malloc(sde_attention_scratch(nq, nk, hd));
    sde_attention(q, qs, k, ks, v, ks, nq, nk, heads, hd, causal, out, os, scratch);
    ref_attention(q, qs, k, ks, v, ks, nq, nk, heads, hd, causal, r, os);
    /* outputs are convex combinations of v (|v| < 1): 1e-5 is ~100 float ulps */
    double worst = 0;
    for (int i = 0; i < nq; i++)
        for (int e = 0; e < heads * hd; e++) {
            double d = fabs(out[i * os + e] - r[i * os + e]);
            worst = d > worst || isnan(d) ? (isnan(d) ? INFINITY : d) : worst;
        }
    if (!(worst < 1e-5))
        fail_msg("attention nq %d nk %d heads %d hd %d causal %d: max diff %g", nq, nk, heads, hd, causal,
                 worst);
    free(q), free(k), free(v), free(out), free(r), free(scratch);
}

static void test_attention(void **state)
{
    (void)state;
    check_attention(77, 77, 12, 64, 1, 0); /* CLIP-style causal self-attention */
    check_attention(77, 77, 1, 8, 0, 3);   /* single head, strided rows */
    check_attention(64, 77, 8, 40, 0, 0);  /* UNet cross-attention: queries != keys */
    check_attention(50, 30, 2, 16, 1, 1);  /* causal with nq > nk */
    /* long sequences with head_dim % 8 == 0 take the fused (flash-attention style) kernel where the CPU has
     * AVX2+FMA: partial query tiles (301 = 12*24 + 13), partial key panels and chunks (333, 600), several
     * key chunks so the online softmax rescales, strided rows, and the UNet's cross-attention shape */
    check_attention(301, 333, 2, 40, 0, 0);
    check_attention(150, 600, 3, 16, 0, 5);
    check_attention(1000, 77, 8, 40, 0, 0);
    check_attention(260, 520, 1, 80, 0, 2);
    /* head widths of 8 mod 16 take the row-pair P V kernel on AVX-512 (40 above; 8, 24, 56 here) */
    check_attention(300, 300, 1, 8, 0, 0);
    check_attention(300, 301, 2, 24, 0, 1);
    check_attention(260, 270, 1, 56, 0, 0);
    check_attention(256, 256, 1, 160, 0, 0);
    /* nk large enough that the queries are processed in several blocks (block = 2^20/nk = 16) */
    check_attention(40, 65536, 2, 4, 0, 0);
    check_attention(40, 65536, 1, 4, 1, 0);
}

/* Our own loops split attention heads and Winograd channel chunks over threads: every item is computed
 * exactly as in a serial run, so two threads must give bit-identical results (and pass the references). */
static void test_threads_bitwise(void **state)
{
    (void)state;
    const int B = 2, cin = 24, h = 30, w = 26, cout = 20, hw = h * w;
    float *x = rand_buf((size_t)cin * B * hw, 1), *wt = rand_buf((size_t)cout * cin * 9, 0.2f),
          *bias = rand_buf(cout, 1);
    float *sc = rand_buf((size_t)B * cin, 1), *sh = rand_buf((size_t)B * cin, 1);
    float *y1 = malloc(sizeof(float) * cout * B * hw), *y2 = malloc(sizeof(float) * cout * B * hw);
    sde_conv_desc d = {.x = x,
                       .batch = B,
                       .cin = cin,
                       .h = h,
                       .w = w,
                       .x_cstride = (size_t)B * hw,
                       .x_bstride = hw,
                       .in_scale = sc,
                       .in_shift = sh,
                       .in_silu = 1,
                       .wt = wt,
                       .bias = bias,
                       .cout = cout,
                       .k = 3,
                       .stride = 1,
                       .pad_t = 1,
                       .pad_b = 1,
                       .pad_l = 1,
                       .pad_r = 1,
                       .y = y1,
                       .y_cstride = (size_t)B * hw,
                       .y_bstride = hw};
    size_t sb = sde_conv2d_ex_scratch(&d, (size_t)64 << 20);
    float *scratch = malloc(sb);
    int nq = 500, nk = 700, heads = 4, hd = 40, C = heads * hd;
    float *q = rand_buf((size_t)nq * C, 1), *k = rand_buf((size_t)nk * C, 1),
          *v = rand_buf((size_t)nk * C, 1);
    float *o1 = malloc(sizeof(float) * nq * C), *o2 = malloc(sizeof(float) * nq * C);
    float *as = malloc(sde_attention_scratch(nq, nk, hd));
    sde_set_threads(1);
    sde_conv2d_ex(&d, scratch, sb);
    sde_attention(q, C, k, C, v, C, nq, nk, heads, hd, 0, o1, C, as);
    sde_set_threads(2);
    d.y = y2;
    sde_conv2d_ex(&d, scratch, sb);
    sde_attention(q, C, k, C, v, C, nq, nk, heads, hd, 0, o2, C, as);
    sde_set_threads(1);
    assert_memory_equal(y1, y2, sizeof(float) * cout * B * hw);
    assert_memory_equal(o1, o2, sizeof(float) * nq * C);
    free(x), free(wt), free(bias), free(sc), free(sh), free(y1), free(y2), free(scratch);
    free(q), free(k), free(v), free(o1), free(o2), free(as);
}

static void test_geglu_from_ops(void **state)
{
    (void)state;
    /* a GEGLU feed-forward built from ops: proj (Linear to 2*inner), geglu, out Linear */
    int n = 19, dim = 32, inner = 48;
    float *x = rand_buf((size_t)n * dim, 1), *w1 = rand_buf((size_t)2 * inner * dim, 0.3f);
    float *b1 = rand_buf(2 * inner, 1), *w2 = rand_buf((size_t)dim * inner, 0.2f), *b2 = rand_buf(dim, 1);
    float *h = malloc(sizeof(float) * n * 2 * inner), *g = malloc(sizeof(float) * n * inner);
    float *y = malloc(sizeof(float) * n * dim);
    sde_linear(x, n, dim, w1, b1, 2 * inner, h);
    sde_geglu(h, n, inner, g);
    sde_linear(g, n, inner, w2, b2, dim, y);
    double *rh = malloc(sizeof(double) * n * 2 * inner), *r = malloc(sizeof(double) * n * dim);
    ref_linear(x, n, dim, w1, b1, 2 * inner, rh);
    for (int i = 0; i < n; i++)
        for (int o = 0; o < dim; o++) {
            double s = b2[o];
            for (int j = 0; j < inner; j++) /* first half is the value, second half the gate */
                s += rh[i * 2 * inner + j] * gelu_d(rh[i * 2 * inner + inner + j]) * w2[o * inner + j];
            r[i * dim + o] = s;
        }
    assert_true(max_abs_diff(y, r, (size_t)n * dim) < 1e-4);
    free(x), free(w1), free(b1), free(w2), free(b2), free(h), free(g), free(y), free(rh), free(r);
}

static void test_upsample_transpose(void **state)
{
    (void)state;
    int c = 3, h = 4, w = 5;
    float *x = rand_buf((size_t)c * h * w, 1), *y = malloc(sizeof(float) * c * 4 * h * w);
    sde_upsample2x(x, c, h, w, y);
    for (int ch = 0; ch < c; ch++)
        for (int r = 0; r < 2 * h; r++)
            for (int col = 0; col < 2 * w; col++)
                assert_true(y[(ch * 2 * h + r) * 2 * w + col] == x[(ch * h + r / 2) * w + col / 2]);
    int rows = 37, cols = 70;
    float *m = rand_buf((size_t)rows * cols, 1), *t = malloc(sizeof(float) * rows * cols);
    float *back = malloc(sizeof(float) * rows * cols);
    sde_transpose(m, rows, cols, t);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            assert_true(t[j * rows + i] == m[i * cols + j]);
    sde_transpose(t, cols, rows, back);
    assert_memory_equal(back, m, sizeof(float) * rows * cols);
    float a[3] = {1, 2, 3}, bb[3] = {10, 20, 30};
    sde_add(a, bb, 3);
    assert_true(a[0] == 11 && a[1] == 22 && a[2] == 33);
    free(x), free(y), free(m), free(t), free(back);
}

int main(void)
{
    sde_set_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear),         cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_groupnorm),      cmocka_unit_test(test_conv2d_plain),
        cmocka_unit_test(test_conv2d_ex),      cmocka_unit_test(test_conv2d_inplace_1x1),
        cmocka_unit_test(test_activations),    cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_attention),      cmocka_unit_test(test_threads_bitwise),
        cmocka_unit_test(test_geglu_from_ops), cmocka_unit_test(test_upsample_transpose),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
