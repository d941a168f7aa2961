/* ops_conv.c: the GEMM-shaped ops: linear layers, and 2-D convolutions by im2col + SGEMM or Winograd
 * F(4x4,3x3) or F(6x6,3x3), tiled to a scratch budget, with fused input GroupNorm+SiLU, upsample and bias. */
#include "dtype_convert.h"
#include "ops.h"
#include "ops_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------------- */
/* Linear. */

void sde_linear(const float *x, int n, int in, const float *w, const float *b, int out, float *y)
{
    float beta = 0.0f;
    if (b) {
        for (int r = 0; r < n; r++)
            memcpy(y + (size_t)r * out, b, sizeof(float) * out);
        beta = 1.0f;
    }
    sde_gemm(0, 1, n, out, in, x, in, w, in, beta, y, out);
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

enum {
    PLAN_DIRECT,
    PLAN_POINTWISE_TILED,
    PLAN_BATCH,
    PLAN_ROWS,
    PLAN_WINO_BATCH,
    PLAN_WINO_ROWS,
    PLAN_SMALL_COUT
};

typedef struct {
    int mode;
    int tile;      /* columns (pointwise tiled), output rows (PLAN_ROWS, PLAN_SMALL_COUT) or tile rows
                      (PLAN_WINO_ROWS) */
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

/* Winograd F(m x m, 3x3), m = 4 or 6, for stride-1, pad-1 3x3 convolutions: 9/(m+2)^2 x m^2 fewer
 * multiplies than im2col, 4x for m = 4 and 5.06x for m = 6. Per (m+2)x(m+2) input tile d and 3x3 kernel g
 * the m x m output is A^T [(G g G^T) . (B^T d B)] A (Lavin & Gray's matrices; interpolation points 0, +-1,
 * +-2 for m = 4 and 0, +-1, +-2, +-1/2 for m = 6); over all channels the elementwise product becomes
 * (m+2)^2 GEMMs U[xi][cout][cin] x V[xi][cin][tiles]. Weights are transformed per call, a block of output
 * channels at a time (no second copy of the model is kept); tiles are grouped in bands of tile rows. In
 * fp32 the transforms cost about 1e-7 (m = 4) and 1e-6 (m = 6) of relative precision, far below the
 * f16-weight noise of real checkpoints. */
/* Planes of a transformed tile. */
static int wg_t(int m)
{
    return (m + 2) * (m + 2);
}

/* Distance between the planes of V, M and U: n floats plus one cache line, so the 36 or 64 streams the
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

/* The output tile of a Winograd convolution: 6 where its multiplies per output, padding to whole tiles
 * included, are at least 10% fewer than with 4 (the larger transforms cost more per output), for up to
 * 256x256 channels: with more, 64 planes of transformed weights outgrow the scratch budget and are
 * transformed again per band, and F(6x6) measured slower (512 channels at 128x128: +2 to 5%; 128 at
 * 512x512 and 256 at 256x256: -1 to -10% and -5%, /tmp-style conv benchmark on 2 vCPUs). */
static int wino_m(const sde_conv_desc *d)
{
    if ((size_t)d->cin * d->cout > 256 * 256) return 4;
    const int oh = sde_conv_out_h(d), ow = sde_conv_out_w(d);
    const double c4 = 36.0 * ((oh + 3) / 4) * ((ow + 3) / 4), c6 = 64.0 * ((oh + 5) / 6) * ((ow + 5) / 6);
    return c6 < 0.9 * c4 ? 6 : 4;
}

/* Floats of one band of tr tile rows holding nt tiles, for a block of cb output channels: V and M, the
 * m-phase input rows, alignment slack. */
static size_t wino_band_floats(const sde_conv_desc *d, int tr, int tw, size_t nt, int cb)
{
    const int m = wino_m(d);
    return (size_t)wg_t(m) * (wg_stride((size_t)d->cin * nt) + wg_stride((size_t)cb * nt)) +
           (size_t)d->cin * (m * tr + 2) * m * (tw + 1) + 32;
}

/* u[xi][c] = (G g_c G^T)[xi] for the kernels g_c (c < n) given transposed, gt[k][c] = g_c[k]; planes of u
 * plane floats apart; F(4x4,3x3). Vectorised over c. */
static inline __attribute__((always_inline)) void wg_wt6(const float *restrict gt, int n, float *restrict u,
                                                         size_t plane)
{
    for (int c = 0; c < n; c++) {
        float t[6][3]; /* G g */
        for (int j = 0; j < 3; j++) {
            float g0 = gt[(size_t)j * n + c], g1 = gt[(size_t)(3 + j) * n + c],
                  g2 = gt[(size_t)(6 + j) * n + c];
            t[0][j] = g0 * 0.25f;
            t[1][j] = -(g0 + g1 + g2) * (1.0f / 6);
            t[2][j] = -(g0 - g1 + g2) * (1.0f / 6);
            t[3][j] = g0 * (1.0f / 24) + g1 * (1.0f / 12) + g2 * (1.0f / 6);
            t[4][j] = g0 * (1.0f / 24) - g1 * (1.0f / 12) + g2 * (1.0f / 6);
            t[5][j] = g2;
        }
        for (int i = 0; i < 6; i++) { /* (G g) G^T */
            float g0 = t[i][0], g1 = t[i][1], g2 = t[i][2];
            float *ui = u + (size_t)(6 * i) * plane + c;
            ui[0] = g0 * 0.25f;
            ui[plane] = -(g0 + g1 + g2) * (1.0f / 6);
            ui[2 * plane] = -(g0 - g1 + g2) * (1.0f / 6);
            ui[3 * plane] = g0 * (1.0f / 24) + g1 * (1.0f / 12) + g2 * (1.0f / 6);
            ui[4 * plane] = g0 * (1.0f / 24) - g1 * (1.0f / 12) + g2 * (1.0f / 6);
            ui[5 * plane] = g2;
        }
    }
}

/* The 8 rows of G for F(6x6,3x3) applied to (g0, g1, g2). */
#define WG_G8(o, g0, g1, g2, st)                                                                             \
    do {                                                                                                     \
        (o)[0] = (g0);                                                                                       \
        (o)[st] = -(2.0f / 9) * ((g0) + (g1) + (g2));                                                        \
        (o)[2 * (st)] = -(2.0f / 9) * ((g0) - (g1) + (g2));                                                  \
        (o)[3 * (st)] = (1.0f / 90) * (g0) + (1.0f / 45) * (g1) + (2.0f / 45) * (g2);                        \
        (o)[4 * (st)] = (1.0f / 90) * (g0) - (1.0f / 45) * (g1) + (2.0f / 45) * (g2);                        \
        (o)[5 * (st)] = (32.0f / 45) * (g0) + (16.0f / 45) * (g1) + (8.0f / 45) * (g2);                      \
        (o)[6 * (st)] = (32.0f / 45) * (g0) - (16.0f / 45) * (g1) + (8.0f / 45) * (g2);                      \
        (o)[7 * (st)] = (g2);                                                                                \
    } while (0)

/* wg_wt6 for F(6x6,3x3): 64 planes. */
static inline __attribute__((always_inline)) void wg_wt8(const float *restrict gt, int n, float *restrict u,
                                                         size_t plane)
{
    for (int c = 0; c < n; c++) {
        float t[3][8]; /* (G g) transposed: t[j][i] = (G g)[i][j] */
        for (int j = 0; j < 3; j++)
            WG_G8(t[j], gt[(size_t)j * n + c], gt[(size_t)(3 + j) * n + c], gt[(size_t)(6 + j) * n + c], 1);
        for (int i = 0; i < 8; i++) /* (G g) G^T, row i */
            WG_G8(u + (size_t)(8 * i) * plane + c, t[0][i], t[1][i], t[2][i], plane);
    }
}

/* U[xi][o - o0][c] = (G g G^T)[xi] for kernels g = wt[o][c], o in [o0, o0+cb); planes wg_stride(cb*cin)
 * apart. Per output channel its cin kernels are widened (F16/BF16) and transposed in tmp ([18][cin]) so
 * the transform runs over channels in vector lanes and writes each plane of U contiguously. */
SDE_HOT static void wino_weights(const sde_conv_desc *d, int o0, int cb, float *U, float *tmp, int oa, int ob)
{
    const size_t plane = wg_stride((size_t)cb * d->cin);
    const int cin = d->cin, m = wino_m(d);
    float *raw = tmp, *gt = tmp + (size_t)9 * cin;
    for (int o = oa; o < ob; o++) {
        const float *g = d->wt ? d->wt + (size_t)o * cin * 9 : raw;
        if (!d->wt)
            sde_cvt_to_f32(d->wt16_bf16 ? SDE_DT_BF16 : SDE_DT_F16, d->wt16 + (size_t)o * cin * 9,
                           (size_t)cin * 9, raw);
        for (int c = 0; c < cin; c++)
            for (int k = 0; k < 9; k++)
                gt[(size_t)k * cin + c] = g[(size_t)c * 9 + k];
        if (m == 6)
            wg_wt8(gt, cin, U + (size_t)(o - o0) * cin, plane);
        else
            wg_wt6(gt, cin, U + (size_t)(o - o0) * cin, plane);
    }
}

/* Input rows of image b for tile rows [tr0, tr1): padded rows m*tr0 .. m*tr1+1 (padded row pr = virtual
 * row pr-1, zero outside), each split into m column phases Q_p[k] = P[mk+p] (P[u] = transformed virtual
 * column u-1, zero outside), stored at band + ((c*rows + pr - m*tr0)*m + p) * (tw+1). */
SDE_HOT static void wino_band(const sde_conv_desc *d, int b, int tr0, int tr1, int tw, float *band,
                              float *tmp, int c0, int c1)
{
    const int m = wino_m(d), vh = d->upsample ? 2 * d->h : d->h, vw = d->upsample ? 2 * d->w : d->w,
              rows = m * (tr1 - tr0) + 2;
    const size_t ph = (size_t)tw + 1;
    const float *xb = d->x + (size_t)b * d->x_bstride;
    for (int c = c0; c < c1; c++) {
        const float sc = d->in_scale ? d->in_scale[(size_t)b * d->cin + c] : 1.0f;
        const float sh = d->in_scale ? d->in_shift[(size_t)b * d->cin + c] : 0.0f;
        for (int r = 0; r < rows; r++) {
            float *q = band + ((size_t)c * rows + r) * m * ph;
            int vr = m * tr0 + r - 1;
            if (vr < 0 || vr >= vh) {
                memset(q, 0, sizeof(float) * m * ph);
                continue;
            }
            const float *src = xb + (size_t)c * d->x_cstride + (size_t)(d->upsample ? vr / 2 : vr) * d->w;
            /* the padded virtual row P (m*(tw+1) floats) in tmp, built from the stored row transformed once
             */
            float *P = tmp, *row = tmp + m * ph;
            if (d->in_scale)
                sde_affine_row(src, row, d->w, sc, sh, d->in_silu);
            else
                memcpy(row, src, sizeof(float) * d->w);
            P[0] = 0.0f;
            if (d->upsample)
                for (int k = 0; k < d->w; k++)
                    P[1 + 2 * k] = P[2 + 2 * k] = row[k];
            else
                memcpy(P + 1, row, sizeof(float) * d->w);
            for (size_t u = (size_t)vw + 1; u < m * ph; u++)
                P[u] = 0.0f;
            for (int p = 0; p < m; p++) {
                float *qp = q + p * ph;
                for (size_t k = 0; k < ph; k++)
                    qp[k] = P[m * k + p];
            }
        }
    }
}

/* o_k[t] = (B^T d)[k] for the 6-vectors d = (d0..d5)[t]: one 1-D input transform per t (F(4x4,3x3)).
 * restrict lets gcc vectorise over t. */
static inline __attribute__((always_inline)) void
wg_bt6(const float *restrict d0, const float *restrict d1, const float *restrict d2, const float *restrict d3,
       const float *restrict d4, const float *restrict d5, float *restrict o0, float *restrict o1,
       float *restrict o2, float *restrict o3, float *restrict o4, float *restrict o5, int n)
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

/* The same for the 8-vectors d = (d0..d7)[t] of F(6x6,3x3). */
static inline __attribute__((always_inline)) void
wg_bt8(const float *restrict d0, const float *restrict d1, const float *restrict d2, const float *restrict d3,
       const float *restrict d4, const float *restrict d5, const float *restrict d6, const float *restrict d7,
       float *restrict o0, float *restrict o1, float *restrict o2, float *restrict o3, float *restrict o4,
       float *restrict o5, float *restrict o6, float *restrict o7, int n)
{
    for (int t = 0; t < n; t++) {
        float a0 = d0[t], a1 = d1[t], a2 = d2[t], a3 = d3[t], a4 = d4[t], a5 = d5[t], a6 = d6[t], a7 = d7[t];
        o0[t] = (a0 - a6) + 5.25f * (a4 - a2);
        o7[t] = (a7 - a1) + 5.25f * (a3 - a5);
        float u = a2 + a6 - 4.25f * a4, v = a1 + a5 - 4.25f * a3;
        o1[t] = u + v;
        o2[t] = u - v;
        u = a6 + 0.25f * a2 - 1.25f * a4;
        v = 0.5f * a1 - 2.5f * a3 + 2.0f * a5;
        o3[t] = u + v;
        o4[t] = u - v;
        u = a6 + 4.0f * a2 - 5.0f * a4;
        v = 2.0f * a1 - 2.5f * a3 + 0.5f * a5;
        o5[t] = u + v;
        o6[t] = u - v;
    }
}

/* o_a[t] = (A^T m)[a], a = 0..5, for the 8-vectors m = (m0..m7)[t] (F(6x6,3x3)). */
static inline __attribute__((always_inline)) void
wg_at8(const float *restrict m0, const float *restrict m1, const float *restrict m2, const float *restrict m3,
       const float *restrict m4, const float *restrict m5, const float *restrict m6, const float *restrict m7,
       float *restrict o0, float *restrict o1, float *restrict o2, float *restrict o3, float *restrict o4,
       float *restrict o5, int n)
{
    for (int t = 0; t < n; t++) {
        float p = m1[t] + m2[t], q = m1[t] - m2[t], r = m3[t] + m4[t], s = m3[t] - m4[t], u = m5[t] + m6[t],
              w = m5[t] - m6[t];
        o0[t] = m0[t] + p + r + u;
        o1[t] = q + 2.0f * s + 0.5f * w;
        o2[t] = p + 4.0f * r + 0.25f * u;
        o3[t] = q + 8.0f * s + 0.125f * w;
        o4[t] = p + 16.0f * r + 0.0625f * u;
        o5[t] = q + 32.0f * s + 0.03125f * w + m7[t];
    }
}

/* o_a[t] = (A^T m)[a], a = 0..3, for the 6-vectors m = (m0..m5)[t], plus bias (F(4x4,3x3)). */
static inline __attribute__((always_inline)) void
wg_at6(const float *restrict m0, const float *restrict m1, const float *restrict m2, const float *restrict m3,
       const float *restrict m4, const float *restrict m5, float *restrict o0, float *restrict o1,
       float *restrict o2, float *restrict o3, float bias, int n)
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
 * (m+2)^2 rows of tw floats (the row pass of the transform). */
SDE_HOT static void wino_input(const sde_conv_desc *d, int tr0, int tr1, int tw, const float *band, float *V,
                               size_t nt, size_t col0, float *tmp, int c0, int c1)
{
    const int m = wino_m(d), t = m + 2, rows = m * (tr1 - tr0) + 2;
    const size_t ph = (size_t)tw + 1, xs = wg_stride((size_t)d->cin * nt);
    for (int c = c0; c < c1; c++)
        for (int ty = tr0; ty < tr1; ty++) {
            /* pass 1, per tile row i: the t columns P[m tx .. m tx+t-1] -> d B (B^T applied to the row) */
            for (int i = 0; i < t; i++) {
                const float *q = band + ((size_t)c * rows + m * (ty - tr0) + i) * m * ph;
                float *w = tmp + (size_t)(t * i) * tw;
                if (m == 6) {
                    wg_bt8(q, q + ph, q + 2 * ph, q + 3 * ph, q + 4 * ph, q + 5 * ph, q + 1, q + ph + 1, w,
                           w + tw, w + 2 * tw, w + 3 * tw, w + 4 * tw, w + 5 * tw, w + 6 * tw, w + 7 * tw,
                           tw);
                } else {
                    const float *q0 = q, *q1 = q + ph, *q2 = q + 2 * ph, *q3 = q + 3 * ph;
                    wg_bt6(q0, q1, q2, q3, q0 + 1, q1 + 1, w, w + tw, w + 2 * tw, w + 3 * tw, w + 4 * tw,
                           w + 5 * tw, tw);
                }
            }
            /* pass 2, per column j: combine the t rows with B^T */
            float *v = V + (size_t)c * nt + col0 + (size_t)(ty - tr0) * tw;
            for (int j = 0; j < t; j++) {
                const float *r0 = tmp + (size_t)j * tw;
                float *v0 = v + (size_t)j * xs;
                if (m == 6) {
                    const size_t r8 = 8 * (size_t)tw, v8 = 8 * xs;
                    wg_bt8(r0, r0 + r8, r0 + 2 * r8, r0 + 3 * r8, r0 + 4 * r8, r0 + 5 * r8, r0 + 6 * r8,
                           r0 + 7 * r8, v0, v0 + v8, v0 + 2 * v8, v0 + 3 * v8, v0 + 4 * v8, v0 + 5 * v8,
                           v0 + 6 * v8, v0 + 7 * v8, tw);
                } else {
                    const float *r1 = r0 + 6 * (size_t)tw, *r2 = r1 + 6 * (size_t)tw,
                                *r3 = r2 + 6 * (size_t)tw, *r4 = r3 + 6 * (size_t)tw,
                                *r5 = r4 + 6 * (size_t)tw;
                    wg_bt6(r0, r1, r2, r3, r4, r5, v0, v0 + 6 * xs, v0 + 12 * xs, v0 + 18 * xs, v0 + 24 * xs,
                           v0 + 30 * xs, tw);
                }
            }
        }
}

/* One tile row ty of one output channel, F(4x4,3x3): m holds its transformed tiles (planes xs apart), yo
 * the channel's output plane; tmp holds 24 rows of tw floats. */
static inline __attribute__((always_inline)) void wino_out_row4(const sde_conv_desc *d, const float *m,
                                                                size_t xs, int ty, int tw, int oh, int ow,
                                                                float bv, float *yo, float *tmp)
{
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
        if (oy >= oh) break;
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
            float yv[4] = {t0[tx] + p + r + bv, q + 2.0f * e + bv, p + 4.0f * r + bv,
                           q + 8.0f * e + t5[tx] + bv};
            for (int k = 0; 4 * tx + k < ow; k++)
                row[4 * tx + k] = d->accumulate ? row[4 * tx + k] + yv[k] : yv[k];
        }
    }
}

/* The same for F(6x6,3x3); tmp holds 48 + 6 rows of tw floats. */
static inline __attribute__((always_inline)) void wino_out_row6(const sde_conv_desc *d, const float *m,
                                                                size_t xs, int ty, int tw, int oh, int ow,
                                                                float bv, float *yo, float *tmp)
{
    const size_t x8 = 8 * xs, t8 = 8 * (size_t)tw;
    float *yk = tmp + 48 * (size_t)tw; /* the 6 outputs of each tile of one output row, as 6 rows */
    /* pass 1, per column j: A^T over the 8 rows -> s[a][j] at tmp + (8a + j) tw, a = 0..5 */
    for (int j = 0; j < 8; j++) {
        const float *mj = m + (size_t)j * xs;
        float *s0 = tmp + (size_t)j * tw;
        wg_at8(mj, mj + x8, mj + 2 * x8, mj + 3 * x8, mj + 4 * x8, mj + 5 * x8, mj + 6 * x8, mj + 7 * x8, s0,
               s0 + t8, s0 + 2 * t8, s0 + 3 * t8, s0 + 4 * t8, s0 + 5 * t8, tw);
    }
    /* pass 2, per output row a: A^T over the 8 columns into 6 rows, then interleaved (6 per tile) */
    for (int a = 0; a < 6; a++) {
        int oy = 6 * ty + a;
        if (oy >= oh) break;
        const float *t0 = tmp + (size_t)(8 * a) * tw;
        wg_at8(t0, t0 + tw, t0 + 2 * tw, t0 + 3 * tw, t0 + 4 * tw, t0 + 5 * tw, t0 + 6 * tw, t0 + 7 * tw, yk,
               yk + tw, yk + 2 * tw, yk + 3 * tw, yk + 4 * tw, yk + 5 * tw, tw);
        float *row = yo + (size_t)oy * ow;
        for (int x = 0; x < tw; x++) /* the last tile column may be partial */
            for (int k = 0; k < 6 && 6 * x + k < ow; k++)
                row[6 * x + k] = (d->accumulate ? row[6 * x + k] : 0.0f) + yk[(size_t)k * tw + x] + bv;
    }
}

/* y = A^T m A (+ bias, + y when accumulating) for output channels [o0, o0+cb) of image b's tile rows
 * [tr0, tr1), whose M columns start at col0. */
SDE_HOT static void wino_output(const sde_conv_desc *d, int b, int o0, int cb, int tr0, int tr1, int tw,
                                const float *M, size_t nt, size_t col0, float *tmp, int oa, int ob)
{
    const int oh = sde_conv_out_h(d), ow = sde_conv_out_w(d), six = wino_m(d) == 6;
    const size_t xs = wg_stride((size_t)cb * nt);
    for (int o = oa; o < ob; o++) {
        const float bv =
            (d->bias ? d->bias[o] : 0.0f) + (d->bias_b ? d->bias_b[(size_t)b * d->cout + o] : 0.0f);
        float *yo = d->y + (size_t)b * d->y_bstride + (size_t)o * d->y_cstride;
        for (int ty = tr0; ty < tr1; ty++) {
            const float *m = M + (size_t)(o - o0) * nt + col0 + (size_t)(ty - tr0) * tw;
            if (six)
                wino_out_row6(d, m, xs, ty, tw, oh, ow, bv, yo, tmp);
            else
                wino_out_row4(d, m, xs, ty, tw, oh, ow, bv, yo, tmp);
        }
    }
}

/* Floats of the per-call temporary rows: a stored input row, the (m+2)^2 rows of the input transform (more
 * than the output transform's 24 or 54), or the [18][cin] weight-transform staging, whichever is largest. */
static size_t wino_tmp_floats(const sde_conv_desc *d, int tw)
{
    const int m = wino_m(d);
    size_t a = (size_t)wg_t(m) * tw + (size_t)m * (tw + 1) + d->w + 4, b = (size_t)18 * d->cin;
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
    if (lo >= hi) return;
    if (j->stage == 0) {
        wino_weights(d, j->o0, j->nb, j->U, tmp, j->o0 + lo, j->o0 + hi);
    } else if (j->stage == 1) {
        for (int b = j->b; b < j->b1; b++) {
            wino_band(d, b, j->tr0, j->tr1, j->tw, j->band, tmp, lo, hi);
            wino_input(d, j->tr0, j->tr1, j->tw, j->band, j->V, j->nt,
                       j->batch_mode ? (size_t)b * j->th * j->tw : 0, tmp, lo, hi);
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
    sde_par_for(j->chunks, wino_item, j);
}

static void wino_run(const sde_conv_desc *d, const conv_plan *p, float *scratch)
{
    const int m = wino_m(d), T = wg_t(m), oh = sde_conv_out_h(d), ow = sde_conv_out_w(d),
              th = (oh + m - 1) / m, tw = (ow + m - 1) / m;
    const int cb = p->cb, batch_mode = p->mode == PLAN_WINO_BATCH, tr = batch_mode ? th : p->tile;
    const size_t nt = batch_mode ? (size_t)d->batch * th * tw : (size_t)tr * tw;
    const size_t us = wg_stride((size_t)cb * d->cin), vs = wg_stride((size_t)d->cin * nt),
                 ms = wg_stride((size_t)cb * nt);
    wino_job j = {.d = d,
                  .tw = tw,
                  .th = th,
                  .cb = cb,
                  .batch_mode = batch_mode,
                  .nt = nt,
                  .tmp_floats = wino_tmp_floats(d, tw)};
    j.U = scratch;
    j.tmp = j.U + T * us;
    j.V = (float *)(((uintptr_t)(j.tmp + SDE_PAR_MAX * j.tmp_floats) + 63) & ~(uintptr_t)63);
    j.M = j.V + T * vs;
    j.band = j.M + T * ms;
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
                if (cb != d->cout) wino_stage(&j, 0);
                const size_t ub = wg_stride((size_t)j.nb * d->cin);
                sde_gemm_batch(T, j.nb, (int)n, d->cin, j.U, ub, d->cin, j.V, vs, (int)nt, j.M,
                               wg_stride((size_t)j.nb * nt), (int)nt);
                wino_stage(&j, 2);
            }
        }
    }
}

/* 3x3 convolutions to at most 4 channels (the UNet's conv_out: 320 -> 4; the VAE's: 128 -> 3) without
 * im2col: its column matrix is the input nine times over (94 MB for the UNet at 512x512, 1.2 GB for the
 * VAE, built in bands) for a product of a few rows, and building it cost 15 times the arithmetic (the
 * UNet's conv_out took 30 ms a step at 6 GFLOP/s). Here a band of input rows, with the GroupNorm+SiLU
 * applied and a zero border, stays in L2 while each output row sums its 9 cin taps. Each output is the
 * float32 sum in the order the im2col GEMM for so few rows (gemm_small_m) takes: k = (c, ky, kx) from 0,
 * one fused multiply-add each, then the bias; so the result is the same bits. In bf16 jobs too (these
 * products are too small to gain from bf16). AVX-512 only, as gemm_small_m. */
#define SC_MAX_COUT 4
#define SC_BAND_BYTES ((size_t)2 << 20)

static int small_cout_ok(const sde_conv_desc *d)
{
    return d->cout <= SC_MAX_COUT && d->k == 3 && d->stride == 1 && !d->upsample && d->pad_t == 1 &&
           d->pad_b == 1 && d->pad_l == 1 && d->pad_r == 1 && d->w >= 1 && d->h >= 1 &&
           sde_cpu_has_avx512() && sde_gemm_reads_16bit();
}

/* A band row's floats: the input row between one zero column on the left and at least one on the right,
 * padded to whole vectors of 16 for the last vector's reads at x + 2. */
static size_t sc_row_floats(const sde_conv_desc *d)
{
    return ((size_t)d->w + 15) / 16 * 16 + 16;
}

static size_t sc_band_floats(const sde_conv_desc *d, int rows)
{
    return (size_t)d->cin * (rows + 2) * sc_row_floats(d);
}

typedef struct {
    const sde_conv_desc *d;
    const float *wf; /* [cout][cin * 9] float32 */
    float *band;     /* per thread: sc_band_floats(d, rows) + 16 */
    int rows, bands;
} sc_job;

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))) static void sc_item(void *ctx, int item,
                                                                                  int thread)
{
    const sc_job *j = ctx;
    const sde_conv_desc *d = j->d;
    const int b = item / j->bands, r0 = item % j->bands * j->rows, W = d->w, H = d->h, cout = d->cout;
    const int r1 = r0 + j->rows < H ? r0 + j->rows : H, R = j->rows + 2, K = d->cin * 9;
    const size_t rf = sc_row_floats(d);
    float *band = (float *)(((uintptr_t)(j->band + (size_t)thread * (sc_band_floats(d, j->rows) + 16)) + 63) &
                            ~(uintptr_t)63);
    /* input rows r0-1 .. r1 (zero outside the image), transformed as conv_band does */
    const float *xb = d->x + (size_t)b * d->x_bstride;
    for (int c = 0; c < d->cin; c++)
        for (int i = 0; i < r1 - r0 + 2; i++) {
            float *dst = band + ((size_t)c * R + i) * rf;
            const int vy = r0 - 1 + i;
            memset(dst, 0, sizeof(float) * rf);
            if (vy < 0 || vy >= H) continue;
            const float *src = xb + (size_t)c * d->x_cstride + (size_t)vy * W;
            if (d->in_scale)
                sde_affine_row(src, dst + 1, (size_t)W, d->in_scale[(size_t)b * d->cin + c],
                               d->in_shift[(size_t)b * d->cin + c], d->in_silu);
            else
                memcpy(dst + 1, src, sizeof(float) * W);
        }
    float bv[SC_MAX_COUT];
    for (int o = 0; o < cout; o++)
        bv[o] = (d->bias ? d->bias[o] : 0.0f) + (d->bias_b ? d->bias_b[(size_t)b * cout + o] : 0.0f);
    const int biased = d->bias || d->bias_b;
    for (int oy = r0; oy < r1; oy++)
        for (int x0 = 0; x0 < W; x0 += 16) {
            const __mmask16 m = W - x0 >= 16 ? 0xffff : (__mmask16)((1u << (W - x0)) - 1);
            __m512 acc[SC_MAX_COUT];
            for (int o = 0; o < SC_MAX_COUT; o++)
                acc[o] = _mm512_setzero_ps();
            for (int c = 0; c < d->cin; c++) {
                const float *in = band + ((size_t)c * R + (oy - r0)) * rf + x0;
                const float *w = j->wf + (size_t)c * 9;
                for (int t = 0; t < 9; t++) {
                    const __m512 v = _mm512_loadu_ps(in + (size_t)(t / 3) * rf + t % 3);
                    for (int o = 0; o < cout; o++)
                        acc[o] = _mm512_fmadd_ps(_mm512_set1_ps(w[(size_t)o * K + t]), v, acc[o]);
                }
            }
            for (int o = 0; o < cout; o++) {
                float *y = d->y + (size_t)o * d->y_cstride + (size_t)b * d->y_bstride + (size_t)oy * W + x0;
                __m512 v = _mm512_add_ps(acc[o], _mm512_setzero_ps());
                if (biased) {
                    __m512 cv = _mm512_set1_ps(bv[o]);
                    if (d->accumulate) cv = _mm512_add_ps(_mm512_maskz_loadu_ps(m, y), cv);
                    v = _mm512_add_ps(v, cv);
                } else if (d->accumulate) {
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, y));
                }
                _mm512_mask_storeu_ps(y, m, v);
            }
        }
}
#else
static void sc_item(void *ctx, int item, int thread)
{
    (void)ctx, (void)item, (void)thread;
}
#endif

static void small_cout_run(const sde_conv_desc *d, const conv_plan *p, float *scratch)
{
    const int K = d->cin * 9;
    float *wf = scratch;
    if (d->wt)
        memcpy(wf, d->wt, sizeof(float) * d->cout * K);
    else
        sde_cvt_to_f32(d->wt16_bf16 ? SDE_DT_BF16 : SDE_DT_F16, d->wt16, (size_t)d->cout * K, wf);
    sc_job j = {.d = d, .wf = wf, .band = wf + (size_t)d->cout * K + 16, .rows = p->tile};
    j.bands = (d->h + j.rows - 1) / j.rows;
    sde_par_for(d->batch * j.bands, sc_item, &j);
}

static conv_plan conv_make_plan(const sde_conv_desc *d, size_t budget)
{
    conv_plan p = {PLAN_DIRECT, 0, 0, 0};
    size_t bf = budget / sizeof(float);
    int oh = sde_conv_out_h(d), ow = sde_conv_out_w(d);
    if (conv_pointwise(d)) {
        int inplace = d->y == d->x;
        if (!d->in_scale && !inplace) return p;
        size_t per_col = (d->in_scale ? (size_t)d->cin : 0) + (inplace ? (size_t)d->cout : 0);
        size_t hw = (size_t)d->h * d->w, nc = bf / per_col;
        if (nc < 64) nc = 64;
        if (nc > hw) nc = hw;
        p.mode = PLAN_POINTWISE_TILED;
        p.tile = (int)nc;
        p.floats = nc * per_col;
        return p;
    }
    if (small_cout_ok(d)) {
        const size_t row = (size_t)d->cin * sc_row_floats(d); /* one band row, all channels */
        int rows = (int)(SC_BAND_BYTES / sizeof(float) / row) - 2;
        rows = rows < 1 ? 1 : rows > d->h ? d->h : rows;
        const size_t fixed = (size_t)d->cout * d->cin * 9 + 16 + 16;
        /* within the budget (a reservation planned in another mode may have made it smaller) */
        while (rows > 1 && fixed + SDE_PAR_MAX * (sc_band_floats(d, rows) + 16) > bf)
            rows--;
        if (fixed + SDE_PAR_MAX * (sc_band_floats(d, rows) + 16) <= bf) {
            p.mode = PLAN_SMALL_COUT;
            p.tile = rows;
            p.floats = fixed + SDE_PAR_MAX * (sc_band_floats(d, rows) + 16);
            return p;
        }
    }
    size_t kk = (size_t)d->cin * d->k * d->k, ohw = (size_t)oh * ow;
    int y_packed = d->y_bstride == ohw && d->y_cstride == (size_t)d->batch * ohw;
    if (wino_ok(d)) {
        const int m = wino_m(d);
        const size_t T = (size_t)wg_t(m), th = (size_t)(oh + m - 1) / m, tw = (size_t)(ow + m - 1) / m;
        /* weights for all output channels if they take at most a third of the budget, else blocks of
         * output channels (multiples of 16, re-transformed per band) */
        size_t per_o = T * d->cin;
        int cb = d->cout;
        if (per_o * cb > bf / 3) {
            cb = (int)(bf / 3 / per_o) / 16 * 16;
            cb = cb < 16 ? 16 : cb;
            /* blocks of even size: 640 channels as 320 + 320, not 560 + 80 (an 80-row GEMM ran at half
             * the speed of the others) */
            const int nblk = (d->cout + cb - 1) / cb;
            cb = ((d->cout + nblk - 1) / nblk + 15) / 16 * 16;
        }
        size_t fixed = T * wg_stride((size_t)cb * d->cin) + SDE_PAR_MAX * wino_tmp_floats(d, (int)tw) + 16;
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
        if (fixed + wino_band_floats(d, tr, (int)tw, (size_t)tr * tw, cb) <= bf &&
            (cb == d->cout || tr * 4 >= (int)th)) {
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
    if (!d->bias && !d->bias_b) return d->accumulate ? 1.0f : 0.0f;
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
        sde_affine_row(xb + (size_t)c * d->x_cstride + (size_t)lo * d->w, band + (size_t)c * n, n,
                       d->in_scale[(size_t)b * d->cin + c], d->in_shift[(size_t)b * d->cin + c], d->in_silu);
}

/* y[cout][n] (+)= wt[cout][K] x B[K][n]: the weights as stored (float32, or F16/BF16 that our GEMM
 * kernels read directly; for OpenBLAS they have been widened into d->wt before). */
static void conv_gemm(const sde_conv_desc *d, int n, int K, const float *B, int ldb, float beta, float *C,
                      int ldc)
{
    if (d->wt)
        sde_gemm(0, 0, d->cout, n, K, d->wt, K, B, ldb, beta, C, ldc);
    else
        sde_gemm_t(0, 0, d->cout, n, K, d->wt16, d->wt16_bf16 ? SDE_GEMM_BF16 : SDE_GEMM_F16, K, B,
                   SDE_GEMM_F32, ldb, beta, C, ldc);
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
                    sde_affine_row(xb + (size_t)c * d->x_cstride + p0, tin + (size_t)c * n, n,
                                   d->in_scale[(size_t)b * d->cin + c], d->in_shift[(size_t)b * d->cin + c],
                                   d->in_silu);
                src = tin;
                lds = n;
            }
            if (!inplace) {
                float beta = conv_prep_out(d, b, yb + p0, d->y_cstride, n);
                conv_gemm(d, (int)n, d->cin, src, (int)lds, beta, yb + p0, (int)d->y_cstride);
                continue;
            }
            /* in place: every channel of these columns has been read once the GEMM is done */
            float beta = conv_prep_out(d, b, tout, n, n);
            if (d->accumulate) /* tout holds bias only: add the old values while copying back */
                beta = (d->bias || d->bias_b) ? 1.0f : 0.0f;
            conv_gemm(d, (int)n, d->cin, src, (int)lds, beta, tout, (int)n);
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
    sde_conv_desc wide;
    if (!d->wt && !sde_gemm_reads_16bit() && p.mode != PLAN_WINO_BATCH && p.mode != PLAN_WINO_ROWS) {
        /* OpenBLAS needs the whole float32 matrix: widen it once into this thread's scratch */
        wide = *d;
        if (!(wide.wt = sde_widen(d->wt16, d->wt16_bf16, (size_t)d->cout * d->cin * d->k * d->k))) abort();
        d = &wide;
    }
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
            conv_gemm(d, (int)n, d->cin, d->x + (size_t)b * d->x_bstride, (int)d->x_cstride, beta, yb,
                      (int)d->y_cstride);
        }
        return;
    }
    if (p.mode == PLAN_POINTWISE_TILED) {
        conv_pointwise_tiled(d, p.tile, scratch);
        return;
    }
    if (p.mode == PLAN_SMALL_COUT) {
        small_cout_run(d, &p, scratch);
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
        conv_gemm(d, (int)ldc, K, col, (int)ldc, beta, d->y, (int)d->y_cstride);
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
            conv_gemm(d, (int)nc, K, col, (int)nc, beta, yt, (int)d->y_cstride);
        }
    }
}

size_t sde_conv2d_scratch(int cin, int h, int w, int k, int stride, int pad)
{
    if (k == 1 && stride == 1 && pad == 0) return 0;
    size_t oh = (size_t)(h + 2 * pad - k) / stride + 1, ow = (size_t)(w + 2 * pad - k) / stride + 1;
    return (size_t)cin * k * k * oh * ow * sizeof(float);
}

void sde_conv2d(const float *x, int cin, int h, int w, const float *wt, const float *b, int cout, int k,
                int stride, int pad, float *y, float *scratch)
{
    int oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1;
    sde_conv_desc d = {.x = x,
                       .batch = 1,
                       .cin = cin,
                       .h = h,
                       .w = w,
                       .x_cstride = (size_t)h * w,
                       .x_bstride = (size_t)cin * h * w,
                       .wt = wt,
                       .bias = b,
                       .cout = cout,
                       .k = k,
                       .stride = stride,
                       .pad_t = pad,
                       .pad_b = pad,
                       .pad_l = pad,
                       .pad_r = pad,
                       .y = y,
                       .y_cstride = (size_t)oh * ow,
                       .y_bstride = (size_t)cout * oh * ow};
    sde_conv2d_ex(&d, scratch, sde_conv2d_scratch(cin, h, w, k, stride, pad));
}
