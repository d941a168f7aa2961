/* ops.h: the neural-network primitives every model in the engine is built from.
 * Plain float32, row-major, NCHW for images; GEMM-heavy ones call OpenBLAS. */
#ifndef SDE_OPS_H
#define SDE_OPS_H

#include <stddef.h>
#include <stdint.h>

/** y[n][out] = x[n][in] * W^T + b, with W stored [out][in] (PyTorch Linear). b may be NULL. */
void sde_linear(const float *x, int n, int in, const float *w, const float *b, int out, float *y);
/** In-place LayerNorm over the last dim of x[n][dim]; g, b may be NULL. */
void sde_layernorm(float *x, int n, int dim, const float *g, const float *b, float eps);
/** LayerNorm of x[n][dim] into y[n][dim] (which may be x). */
void sde_layernorm_to(const float *x, int n, int dim, const float *g, const float *b, float eps, float *y);
/** In-place GroupNorm of x[c][hw] (one image), optional fused SiLU afterwards. */
void sde_groupnorm(float *x, int c, int hw, int groups, const float *g, const float *b, float eps, int silu);
/** Bytes of scratch sde_conv2d() needs for this shape (0 for 1x1 stride-1 convs). */
size_t sde_conv2d_scratch(int cin, int h, int w, int k, int stride, int pad);
/** 2-D convolution of one image x[cin][h][w] with wt[cout][cin][k][k] (+ b) into y[cout][oh][ow].
 * scratch holds at least sde_conv2d_scratch() bytes. */
void sde_conv2d(const float *x, int cin, int h, int w, const float *wt, const float *b, int cout, int k,
                int stride, int pad, float *y, float *scratch);
/** Elementwise activations, in place. gelu is the exact erf form; gelu_tanh the tanh approximation. */
void sde_silu(float *x, size_t n);
void sde_gelu(float *x, size_t n);
void sde_gelu_tanh(float *x, size_t n);
void sde_quick_gelu(float *x, size_t n);
/** In-place max(x, 0). */
void sde_relu(float *x, size_t n);
/** In-place softmax over each row of x[rows][cols]. */
void sde_softmax_rows(float *x, int rows, int cols);
/** Multi-head scaled-dot-product attention, one head at a time and a block of queries at a time, so only
 * a [block][nk] score matrix exists (block = nq for short sequences such as CLIP's 77 tokens). Long
 * non-causal sequences with head_dim % 8 == 0 and <= 160 take a fused flash-attention style AVX2 kernel
 * (online softmax, heads spread over our threads). q[nq][heads*hd], k,v[nk][heads*hd] (row strides given),
 * out[nq][heads*hd]. causal masks keys after the query index. scratch holds at least
 * sde_attention_scratch() BYTES. */
size_t sde_attention_scratch(int nq, int nk, int hd);
void sde_attention(const float *q, int q_stride, const float *k, int k_stride, const float *v, int v_stride,
                   int nq, int nk, int heads, int hd, int causal, float *out, int out_stride, float *scratch);
/** Nearest-neighbour 2x upsample of x[c][h][w] into y[c][2h][2w]. */
void sde_upsample2x(const float *x, int c, int h, int w, float *y);
/** y[c][hw] <-> yt[hw][c] transposes. */
void sde_transpose(const float *x, int rows, int cols, float *y);
/** Most threads the engine's own loops (attention heads, Winograd transforms) use, the caller included. */
#define SDE_PAR_MAX 2
/** Sets the number of BLAS threads, and of our own loops up to SDE_PAR_MAX (0 leaves the defaults: all
 * CPUs for both). Call it from one thread, outside any running op. */
void sde_set_threads(int n);
/** 1 when this CPU has AVX512-BF16 (the bf16 GEMM kernels can run). */
int sde_cpu_has_bf16(void);
/** Turns the bf16 GEMM path of convolutions, linear layers and attention on (1) or off (0, float32, the
 * default) for the ops that follow; on only takes effect where sde_cpu_has_bf16(). One thread sets it,
 * outside any running op. */
void sde_set_bf16(int on);
/** 1 while the bf16 path is on. */
int sde_get_bf16(void);
/** 1 when sde_gemm_t() multiplies F16/BF16 operands as stored (our kernels: the bf16 path, or float32 on
 * AVX-512), 0 when it widens them to float32 for OpenBLAS first (then a caller with several products of
 * one weight widens it once itself). */
int sde_gemm_reads_16bit(void);
/** C[M][N] = op(A) op(B) (+ C when beta is 1): cblas_sgemm's row-major contract with alpha 1 (op = the
 * transpose when trans*). Float32: our AVX-512 kernel where the CPU has AVX-512 F/BW/VL (unless
 * SDW_FP32_GEMM=openblas), OpenBLAS otherwise or for other betas; while the bf16 path is on (sde_set_bf16)
 * and beta is 0 or 1, A and B rounded to bf16 (nearest even) and multiplied with float32 accumulation
 * (vdpbf16ps). Results do
 * not depend on the thread count. */
void sde_gemm(int transA, int transB, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc);
/** cblas_sgemm's row-major contract in float32 (alpha and beta as given) on OpenBLAS, spread over the
 * engine's threads; always float32, whatever sde_set_bf16() says. */
void sde_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);
/** count products C_i = A_i B_i (beta 0, no transposes) of float32 matrices that lie a_stride, b_stride and
 * c_stride floats apart: the same bits as count sde_gemm() calls, each product run whole on one thread
 * (for many small products, as a Winograd convolution's). */
void sde_gemm_batch(int count, int M, int N, int K, const float *A, size_t a_stride, int lda, const float *B,
                    size_t b_stride, int ldb, float *C, size_t c_stride, int ldc);
/** Element types of sde_gemm_t's operands (the values of backend.h's sde_wtype). */
enum { SDE_GEMM_F32 = 0, SDE_GEMM_F16 = 1, SDE_GEMM_BF16 = 2 };
/** sde_gemm() with A of element type at and B of type bt (SDE_GEMM_*; at most one of them not F32): our
 * kernels read stored F16/BF16 weights directly, OpenBLAS gets them widened first (sde_widen). */
void sde_gemm_t(int transA, int transB, int M, int N, int K, const void *A, int at, int lda, const void *B,
                int bt, int ldb, float beta, float *C, int ldc);
/** sde_gemm_t() plus a bias: bias_row[i] added to every element of row i of C, bias_col[j] to every
 * element of column j (either may be NULL). The bf16 path adds it as C is stored (with beta 0, C is then
 * written once); float32 adds it into C (beta C + bias) before the product. */
void sde_gemm_tb(int transA, int transB, int M, int N, int K, const void *A, int at, int lda, const void *B,
                 int bt, int ldb, const float *bias_row, const float *bias_col, float beta, float *C,
                 int ldc);

/* ---- Extensions for the UNet and the VAE: batched layouts, fused GroupNorm+SiLU, tiled convolutions. ----
 * Images may live in a batch-interleaved layout [C][B][HW] (channel c of image b at x + c*cstride +
 * b*bstride) so that one GEMM spans the whole batch. */

/** Per-channel coefficients of GroupNorm for one image whose channel planes are cstride floats apart:
 * normalised = x*scale[c] + shift[c]. Mean and variance are two-pass, accumulated in double. */
void sde_groupnorm_coeffs(const float *x, int c, int hw, size_t cstride, int groups, const float *g,
                          const float *b, float eps, float *scale, float *shift);
/** y = x*scale[c] + shift[c] (then SiLU if silu) over c planes of hw; x and y may be the same. */
void sde_affine_act(const float *x, size_t x_cstride, int c, int hw, const float *scale, const float *shift,
                    int silu, float *y, size_t y_cstride);
/** GEGLU: y[n][inner] = x[n][0..inner) * gelu(x[n][inner..2*inner)) with the exact erf GELU. */
void sde_geglu(const float *x, int n, int inner, float *y);
/** y[i] += x[i]. */
void sde_add(float *y, const float *x, size_t n);
/** y[0..n) = x[0..n), spread over the pool for large n; the ranges must not overlap. */
void sde_copy(float *y, const float *x, size_t n);

/** A 2-D convolution over a batch, with an optional per-(image, channel) affine (+SiLU) applied to the
 * input on the fly (fused GroupNorm+SiLU), an optional on-the-fly nearest-2x upsample of the input, and
 * asymmetric padding. Zero padding is applied after the input transform, as in PyTorch. */
typedef struct {
    const float *x;       /* input planes: channel c of image b at x + c*x_cstride + b*x_bstride */
    int batch, cin, h, w; /* h, w: stored input size (before the optional upsample) */
    size_t x_cstride, x_bstride;
    const float *in_scale; /* [batch][cin] or NULL: v = x*in_scale + in_shift ... */
    const float *in_shift; /* [batch][cin] (required with in_scale) */
    int in_silu;           /* ... then SiLU (only with in_scale) */
    int upsample;          /* read the input as if nearest-2x upsampled (2h x 2w) */
    const float *wt;       /* [cout][cin][k][k], or NULL when wt16 holds them */
    const uint16_t *wt16;  /* instead of wt: the same as F16 bits (BF16 when wt16_bf16), widened where read */
    int wt16_bf16;
    const float *bias;   /* [cout] or NULL */
    const float *bias_b; /* [batch][cout] or NULL: a second, per-image bias (UNet time embedding) */
    int cout, k, stride;
    int pad_t, pad_b, pad_l, pad_r;
    float *y; /* output planes: channel c of image b at y + c*y_cstride + b*y_bstride */
    size_t y_cstride, y_bstride;
    int accumulate; /* add into y instead of overwriting it */
} sde_conv_desc;

/** A 64-byte aligned buffer of bytes (NULL when out of memory), not zeroed; from 2 MB on it is mapped on its
 * own and advised for transparent huge pages, or is a freed one reused (ops_mem.c). Release it with
 * sde_mem_free(), never free(). */
void *sde_mem_alloc(size_t bytes);
/** Releases a buffer of sde_mem_alloc() (NULL is ignored); a mapped one is kept for reuse by a later
 * sde_mem_alloc() of a size it fits (ops_mem.c), up to a cap. */
void sde_mem_free(void *p);
/** Releases a buffer of sde_mem_alloc() for good (a scratch outgrown, whose size will not be asked again). */
void sde_mem_drop(void *p);
/** Maps bytes as sde_mem_alloc() would, faults every page in and keeps the mapping for reuse, so the next
 * sde_mem_alloc() of that size finds its pages in place. */
void sde_mem_prefault(size_t bytes);
/** Unmaps every buffer sde_mem_free() kept for reuse. */
void sde_mem_trim(void);
/** Bytes sde_mem_free() keeps mapped for reuse now. */
size_t sde_mem_cached(void);

/** src[0..n) F16 (BF16 when bf16) values as float32 in this thread's scratch, widened on the op pool; the
 * scratch grows to the largest n asked for and stays valid until the thread's next call. NULL when out of
 * memory. */
const float *sde_widen(const uint16_t *src, int bf16, size_t n);

/** Output height/width of a described convolution. */
int sde_conv_out_h(const sde_conv_desc *d);
int sde_conv_out_w(const sde_conv_desc *d);
/** Bytes of scratch sde_conv2d_ex() uses for d when allowed at most budget bytes (it tiles output rows to
 * fit; one output row is the minimum, so the result may exceed a tiny budget). */
size_t sde_conv2d_ex_scratch(const sde_conv_desc *d, size_t budget);
/** Runs d with scratch_bytes of scratch (use sde_conv2d_ex_scratch(d, budget) bytes): 1x1 convolutions are
 * one SGEMM, stride-1 pad-1 3x3 ones with >= 16 channels and >= 64 4x4 tiles use Winograd F(4x4,3x3) (or
 * F(6x6,3x3) for up to 256x256 channels where its tiles need 10% fewer multiplies),
 * the rest im2col + SGEMM. y must not overlap x, except for 1x1 stride-1 unpadded convolutions without
 * upsampling where y == x and cout <= cin. */
void sde_conv2d_ex(const sde_conv_desc *d, float *scratch, size_t scratch_bytes);

#endif
