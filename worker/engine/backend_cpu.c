/* backend_cpu.c: the CPU backend: the seam's ops mapped onto ops.h's kernels (OpenBLAS, AVX2), buffers in
 * host RAM, weights used in place in the mmap'd checkpoint (F16/BF16 widened per op). Every op runs
 * synchronously. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sys/mman.h>
#include <unistd.h>

#include "backend.h"
#include "dtype_convert.h"
#include "ops.h"
#include "weights.h"

struct sde_buf {
    float *p;
};

static float *P(sde_ten t)
{
    return t.buf ? t.buf->p + t.off : NULL;
}

/* P() for conv_scratch(), which may be given sizing placeholders: distinct, never dereferenced addresses. */
static float *P_sizing(sde_ten t)
{
    return t.buf == SDE_BUF_SIZING ? (float *)(uintptr_t)(64 + t.off * sizeof(float)) : P(t);
}

#ifdef MADV_POPULATE_READ
#define CPU_MADV_POPULATE_READ MADV_POPULATE_READ
#else
#define CPU_MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif

static sde_buf *cpu_alloc(sde_backend *be, size_t bytes, char *err, size_t errlen)
{
    (void)be;
    sde_buf *b = malloc(sizeof *b);
    if (b) b->p = sde_mem_alloc(bytes);
    if (!b || !b->p) {
        free(b);
        sde_fail(err, errlen, "cannot allocate %.0f MB", bytes / 1048576.0);
        return NULL;
    }
    return b;
}

static void cpu_free(sde_backend *be, sde_buf *b)
{
    (void)be;
    if (b) sde_mem_free(b->p);
    free(b);
}

static const float *cpu_upload(sde_backend *be, const float *host, size_t n)
{
    (void)be, (void)n;
    return host;
}

static const sde_weight *cpu_upload_weight(sde_backend *be, const sde_weight *w)
{
    (void)be;
    /* The weight stays where it is (for a checkpoint's 16-bit matrices, the mapped file), but its pages are
     * entered into the page table now rather than by a fault per few pages in the first step that reads
     * them (no step-time change showed within this machine's noise). Advice only: older kernels lack it. */
    const long pg = sysconf(_SC_PAGESIZE);
    if (w->n && pg > 0) {
        const size_t bytes = w->n * (w->type == SDE_W_F32 ? 4 : 2);
        const uintptr_t a = (uintptr_t)w->data & ~(uintptr_t)(pg - 1);
        (void)madvise((void *)a, (uintptr_t)w->data + bytes - a, CPU_MADV_POPULATE_READ);
    }
    return w;
}

static void cpu_write(sde_backend *be, sde_ten dst, const float *host, size_t n)
{
    (void)be;
    memcpy(P(dst), host, sizeof(float) * n);
}

static void cpu_read(sde_backend *be, float *host, sde_ten src, size_t n)
{
    (void)be;
    memcpy(host, P(src), sizeof(float) * n);
}

static void cpu_sync(sde_backend *be)
{
    (void)be;
}

static void cpu_linear(sde_backend *be, sde_ten xt, int n, int in, const sde_weight *wh, const float *b,
                       int out, sde_ten yt, int flags)
{
    (void)be;
    /* F16/BF16 weights go to the GEMM as stored: the bf16 path packs them directly, fp32 widens them */
    const void *w = wh->data;
    const int wt = (int)wh->type;
    const float *x = P(xt);
    float *y = P(yt);
    const int acc = flags & SDE_LIN_ACC, xcm = flags & SDE_LIN_X_CM;
    float beta = acc ? 1.0f : 0.0f;
    /* the bias goes with the product: the bf16 GEMM adds it as y is stored, float32 adds it into y first */
    if (flags & SDE_LIN_Y_CM) { /* y[out][n] = W x^T: bias along rows of y */
        sde_gemm_tb(0, xcm ? 0 : 1, out, n, in, w, wt, in, x, SDE_GEMM_F32, xcm ? n : in, b, NULL, beta, y,
                    n);
        return;
    }
    sde_gemm_tb(xcm ? 1 : 0, 1, n, out, in, x, SDE_GEMM_F32, xcm ? n : in, w, wt, in, NULL, b, beta, y, out);
}

static sde_conv_desc conv_desc(const sde_be_conv *c, float *(*P)(sde_ten))
{
    return (sde_conv_desc){.x = P(c->x),
                           .batch = c->batch,
                           .cin = c->cin,
                           .h = c->h,
                           .w = c->w,
                           .x_cstride = c->x_cstride,
                           .x_bstride = c->x_bstride,
                           .in_scale = P(c->in_scale),
                           .in_shift = P(c->in_shift),
                           .in_silu = c->in_silu,
                           .upsample = c->upsample,
                           .wt = NULL, /* filled by cpu_conv from the handle */
                           .bias = c->bias,
                           .bias_b = P(c->bias_b),
                           .cout = c->cout,
                           .k = c->k,
                           .stride = c->stride,
                           .pad_t = c->pad_t,
                           .pad_b = c->pad_b,
                           .pad_l = c->pad_l,
                           .pad_r = c->pad_r,
                           .y = P(c->y),
                           .y_cstride = c->y_cstride,
                           .y_bstride = c->y_bstride,
                           .accumulate = c->accumulate};
}

static size_t cpu_conv_scratch(sde_backend *be, const sde_be_conv *c, size_t budget)
{
    (void)be;
    sde_conv_desc d = conv_desc(c, P_sizing);
    return sde_conv2d_ex_scratch(&d, budget);
}

static void cpu_conv(sde_backend *be, const sde_be_conv *c, sde_ten scratch, size_t scratch_bytes)
{
    (void)be;
    sde_conv_desc d = conv_desc(c, P);
    /* F16/BF16 go to the kernel as they are: Winograd widens them inside its per-call weight transform */
    if (c->wt->type == SDE_W_F32) {
        d.wt = c->wt->data;
    } else {
        d.wt16 = c->wt->data;
        d.wt16_bf16 = c->wt->type == SDE_W_BF16;
    }
    sde_conv2d_ex(&d, P(scratch), scratch_bytes);
}

static size_t cpu_attention_scratch(sde_backend *be, int nq, int nk, int hd)
{
    (void)be;
    return sde_attention_scratch(nq, nk, hd);
}

static void cpu_attention(sde_backend *be, sde_ten q, int q_stride, sde_ten k, int k_stride, sde_ten v,
                          int v_stride, int nq, int nk, int heads, int hd, int causal, sde_ten out,
                          int out_stride, sde_ten scratch)
{
    (void)be;
    sde_attention(P(q), q_stride, P(k), k_stride, P(v), v_stride, nq, nk, heads, hd, causal, P(out),
                  out_stride, P(scratch));
}

static void cpu_gn_coeffs(sde_backend *be, sde_ten xt, int c, int batch, size_t hw, int groups,
                          const float *g, const float *b, float eps, sde_ten scale, sde_ten shift)
{
    (void)be;
    const float *x = P(xt);
    float *sc = P(scale), *sh = P(shift);
    for (int i = 0; i < batch; i++)
        sde_groupnorm_coeffs(x + i * hw, c, (int)hw, (size_t)batch * hw, groups, g, b, eps,
                             sc + (size_t)i * c, sh + (size_t)i * c);
}

static void cpu_gn_apply(sde_backend *be, sde_ten xt, int c, int batch, size_t hw, sde_ten scale,
                         sde_ten shift, int silu, sde_ten yt)
{
    (void)be;
    const float *x = P(xt), *sc = P(scale), *sh = P(shift);
    float *y = P(yt);
    const size_t n = (size_t)batch * hw;
    for (int i = 0; i < batch; i++)
        sde_affine_act(x + i * hw, n, c, (int)hw, sc + (size_t)i * c, sh + (size_t)i * c, silu, y + i * hw,
                       n);
}

static void cpu_layernorm(sde_backend *be, sde_ten xt, int n, int dim, const float *g, const float *b,
                          float eps, sde_ten yt)
{
    (void)be;
    sde_layernorm_to(P(xt), n, dim, g, b, eps, P(yt));
}

static void cpu_geglu(sde_backend *be, sde_ten x, int n, int inner, sde_ten y)
{
    (void)be;
    sde_geglu(P(x), n, inner, P(y));
}

static void cpu_act(sde_backend *be, sde_ten x, size_t n, int kind)
{
    (void)be;
    if (kind == SDE_ACT_SILU)
        sde_silu(P(x), n);
    else if (kind == SDE_ACT_GELU)
        sde_gelu(P(x), n);
    else if (kind == SDE_ACT_RELU)
        sde_relu(P(x), n);
    else
        sde_quick_gelu(P(x), n);
}

static void cpu_add(sde_backend *be, sde_ten y, sde_ten x, size_t n)
{
    (void)be;
    sde_add(P(y), P(x), n);
}

static void cpu_embed(sde_backend *be, const sde_weight *table, const int32_t *ids, int n, int dim,
                      const float *pos, sde_ten yt)
{
    (void)be;
    const size_t es = table->type == SDE_W_F32 ? 4 : 2;
    const sde_dtype dt = table->type == SDE_W_F32   ? SDE_DT_F32
                         : table->type == SDE_W_F16 ? SDE_DT_F16
                                                    : SDE_DT_BF16;
    for (int t = 0; t < n; t++) {
        const float *pe = pos + (size_t)t * dim;
        float *y = P(yt) + (size_t)t * dim;
        /* only the looked-up rows are widened, straight into y */
        sde_cvt_to_f32(dt, (const char *)table->data + (size_t)ids[t] * dim * es, (size_t)dim, y);
        for (int i = 0; i < dim; i++)
            y[i] += pe[i];
    }
}

static void cpu_copy(sde_backend *be, sde_ten dst, sde_ten src, size_t n)
{
    (void)be;
    sde_copy(P(dst), P(src), n);
}

/* The exact integer form of PyTorch's F.interpolate(size=, mode="nearest") for the out = 2*in and 2*in - 1
 * sizes the UNet meets (diffusers' scale in/out gives the same indices there). */
static void cpu_resize_nearest(sde_backend *be, sde_ten xt, int planes, int ih, int iw, int oh, int ow,
                               sde_ten yt)
{
    (void)be;
    const float *x = P(xt);
    float *y = P(yt);
    for (int p = 0; p < planes; p++) {
        const float *xp = x + (size_t)p * ih * iw;
        float *yp = y + (size_t)p * oh * ow;
        for (int oy = 0; oy < oh; oy++) {
            const float *src = xp + (size_t)((int64_t)oy * ih / oh) * iw;
            float *dst = yp + (size_t)oy * ow;
            for (int ox = 0; ox < ow; ox++)
                dst[ox] = src[(int64_t)ox * iw / ow];
        }
    }
}

static sde_backend cpu = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_upload,
    .upload_weight = cpu_upload_weight,
    .write = cpu_write,
    .read = cpu_read,
    .sync = cpu_sync,
    .linear = cpu_linear,
    .conv_scratch = cpu_conv_scratch,
    .conv = cpu_conv,
    .attention_scratch = cpu_attention_scratch,
    .attention = cpu_attention,
    .gn_coeffs = cpu_gn_coeffs,
    .gn_apply = cpu_gn_apply,
    .layernorm = cpu_layernorm,
    .geglu = cpu_geglu,
    .act = cpu_act,
    .add = cpu_add,
    .embed = cpu_embed,
    .copy = cpu_copy,
    .resize_nearest = cpu_resize_nearest,
};

sde_backend *sde_backend_cpu(void)
{
    return &cpu;
}
