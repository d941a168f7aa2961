/* backend_cuda.cu: the CUDA backend of backend.h: buffers in VRAM, weights copied once as float32, GEMMs
 * through cuBLAS on TF32 tensor cores, our own kernels for the rest, one stream. */
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend.h"
#include "backend_cuda.h"
}

struct sde_buf {
    float *p;
    size_t bytes;
};

/* A device copy of a checkpoint's weight handle: pub.data is float32 VRAM. The handle's owner may switch
 * its data (or edit it) between jobs (sde_weight), so every op compares what the copy was made from. */
typedef struct cu_weight {
    sde_weight pub;
    const sde_weight *src;
    const void *src_data;
    sde_wtype src_type;
    unsigned src_gen;
    __half *h;   /* an FP16 copy of pub.data for SDW_CUDA_HALF=1, made at first use */
    int h_valid; /* 0 once pub.data was refilled */
    struct cu_weight *next;
} cu_weight;

/* A small float32 upload (biases, norms, tables): freed with the backend. */
typedef struct cu_upl {
    float *p;
    struct cu_upl *next;
} cu_upl;

typedef struct {
    sde_backend pub; /* first: the vtable the models hold */
    int device;
    cudaStream_t st;
    cublasHandle_t blas;
    int half;        /* SDW_CUDA_HALF=1: linear layers and gathered convolutions on FP16 operands */
    __half *ws;      /* the linear layers' FP16 inputs (SDW_CUDA_HALF=1), grown to the largest */
    size_t ws_cap;   /* in halves */
    double *gn_part; /* GroupNorm's partial sums: GN_PARTS doubles, twice */
    cu_weight *weights;
    cu_upl *uploads;
    void *stage; /* device staging for 16-bit weight uploads */
    size_t stage_bytes;
    int *ids; /* embed's token ids */
    int ids_cap;
    int broken;
    char why[256];
} cu_backend;

/* GroupNorm's partial sums per (image, group) and slice: room for 512 groups of 128 slices */
enum { GN_PARTS = 65536 };

static cu_backend *CB(sde_backend *be)
{
    return (cu_backend *)be;
}

static void cu_fail(cu_backend *B, const char *fmt, ...)
{
    if (B->broken) return;
    B->broken = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(B->why, sizeof B->why, fmt, ap);
    va_end(ap);
}

/* A launch error or an earlier asynchronous fault: sticky, the device is unusable from here. */
static int cu_check(cu_backend *B, const char *what)
{
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) cu_fail(B, "CUDA %s: %s", what, cudaGetErrorString(e));
    return B->broken;
}

static int blas_check(cu_backend *B, cublasStatus_t s, const char *what)
{
    if (s != CUBLAS_STATUS_SUCCESS) cu_fail(B, "cuBLAS %s: status %d", what, (int)s);
    return B->broken;
}

/* C = alpha op(A) op(B) + beta C on float32 column-major matrices, on the tensor cores in TF32 (inputs
 * rounded to 10 mantissa bits) with FP32 accumulation. cuBLAS was also
 * given CUBLAS_COMPUTE_32F_FAST_16F and _16BF on an H200: with float32 operands it ran the same kernels
 * (the same image bytes, the same times), so half precision would need half-precision operands. */
static cublasStatus_t gemm(cu_backend *B, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float *alpha, const float *a, int lda, const float *b, int ldb,
                           const float *beta, float *c, int ldc)
{
    return cublasGemmEx(B->blas, ta, tb, m, n, k, alpha, a, CUDA_R_32F, lda, b, CUDA_R_32F, ldb, beta, c,
                        CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT);
}

static cublasStatus_t gemm_batched(cu_backend *B, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                   int k, const float *alpha, const float *a, int lda, long long sa,
                                   const float *b, int ldb, long long sb, const float *beta, float *c,
                                   int ldc, long long sc, int count)
{
    return cublasGemmStridedBatchedEx(B->blas, ta, tb, m, n, k, alpha, a, CUDA_R_32F, lda, sa, b, CUDA_R_32F,
                                      ldb, sb, beta, c, CUDA_R_32F, ldc, sc, count,
                                      CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT);
}

static float *P(sde_ten t)
{
    return t.buf ? t.buf->p + t.off : NULL;
}

static unsigned nblocks(size_t n, unsigned per)
{
    size_t b = (n + per - 1) / per;
    return (unsigned)(b > 0x7fffffffu ? 0x7fffffffu : (b ? b : 1));
}

/* ---- kernels ---- */

__device__ static inline float silu_f(float v)
{
    return v / (1.0f + expf(-v));
}

__device__ static inline float gelu_f(float v)
{
    return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
}

__global__ static void k_widen_f16(const uint16_t *s, float *d, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        d[i] = __half2float(__ushort_as_half(s[i]));
}

__global__ static void k_widen_bf16(const uint16_t *s, float *d, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        d[i] = __uint_as_float((unsigned)s[i] << 16);
}

/* FP16 copies of float32 values, saturated at the largest finite half rather than overflowing to inf */
__global__ static void k_to_half(const float *s, __half *d, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        d[i] = __float2half_rn(fminf(fmaxf(s[i], -65504.0f), 65504.0f));
}

/* y[r][c] += b[per_row ? r : c] over a rows x cols matrix with row stride ld */
__global__ static void k_bias(float *y, int rows, int cols, size_t ld, const float *b, int per_row)
{
    size_t n = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int r = (int)(i / cols), c = (int)(i % cols);
        y[(size_t)r * ld + c] += b[per_row ? r : c];
    }
}

/* The convolution's input column block: col[kk][j] for kk = (ci, ky, kx) and output pixels g0 + j of the
 * flattened (image, pixel) range, through the fused input affine + SiLU and the nearest-2x upsample; zero
 * padding outside the (upsampled) input, as PyTorch pads after the transform. */
struct im2col_args {
    const float *x;
    size_t x_cstride, x_bstride;
    const float *sc, *sh;
    int silu, up;
    int cin, h, w, k, stride, pad_t, pad_l;
    int oh, ow;
    size_t g0;
    int np;
};

template <typename T> __device__ static inline T col_value(float v);
template <> __device__ inline float col_value<float>(float v)
{
    return v;
}
template <> __device__ inline __half col_value<__half>(float v)
{
    return __float2half_rn(fminf(fmaxf(v, -65504.0f), 65504.0f));
}

template <typename T> __global__ static void k_im2col(im2col_args a, T *col)
{
    const int kk2 = a.k * a.k;
    const size_t n = (size_t)a.cin * kk2 * a.np;
    const int H = a.up ? 2 * a.h : a.h, W = a.up ? 2 * a.w : a.w;
    const size_t ohw = (size_t)a.oh * a.ow;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const int j = (int)(i % a.np);
        const int kk = (int)(i / a.np);
        const int ci = kk / kk2, r = kk % kk2, ky = r / a.k, kx = r % a.k;
        const size_t g = a.g0 + j;
        const int b = (int)(g / ohw);
        const int p = (int)(g % ohw);
        const int oy = p / a.ow, ox = p % a.ow;
        const int iy = oy * a.stride - a.pad_t + ky, ix = ox * a.stride - a.pad_l + kx;
        float v = 0.0f;
        if (iy >= 0 && iy < H && ix >= 0 && ix < W) {
            const int sy = a.up ? iy >> 1 : iy, sx = a.up ? ix >> 1 : ix;
            v = a.x[(size_t)ci * a.x_cstride + (size_t)b * a.x_bstride + (size_t)sy * a.w + sx];
            if (a.sc) {
                v = v * a.sc[(size_t)b * a.cin + ci] + a.sh[(size_t)b * a.cin + ci];
                if (a.silu) v = silu_f(v);
            }
        }
        col[i] = col_value<T>(v);
    }
}

/* y[c][b][p] += bias[c] + bias_b[b][c] over the conv's output */
__global__ static void k_conv_bias(float *y, size_t y_cstride, size_t y_bstride, int cout, int batch, int ohw,
                                   const float *bias, const float *bias_b)
{
    size_t n = (size_t)cout * batch * ohw;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int p = (int)(i % ohw);
        size_t cb = i / ohw;
        int b = (int)(cb % batch), c = (int)(cb / batch);
        float add = (bias ? bias[c] : 0.0f) + (bias_b ? bias_b[(size_t)b * cout + c] : 0.0f);
        y[(size_t)c * y_cstride + (size_t)b * y_bstride + p] += add;
    }
}

/* softmax over rows of s (rows x nk, already scaled); causal masks key j > query (row % nq) */
__global__ static void k_softmax(float *s, int nk, int nq, int causal)
{
    const int row = blockIdx.x;
    float *r = s + (size_t)row * nk;
    const int lim = causal ? (row % nq) + 1 : nk;
    __shared__ float red[32];
    float m = -INFINITY;
    for (int j = threadIdx.x; j < lim; j += blockDim.x)
        m = fmaxf(m, r[j]);
    for (int o = 16; o; o >>= 1)
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = m;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < (blockDim.x >> 5) ? red[threadIdx.x] : -INFINITY;
        for (int o = 16; o; o >>= 1)
            v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
        if (threadIdx.x == 0) red[0] = v;
    }
    __syncthreads();
    m = red[0];
    __syncthreads();
    float sum = 0.0f;
    for (int j = threadIdx.x; j < lim; j += blockDim.x) {
        float e = expf(r[j] - m);
        r[j] = e;
        sum += e;
    }
    for (int o = 16; o; o >>= 1)
        sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = sum;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < (blockDim.x >> 5) ? red[threadIdx.x] : 0.0f;
        for (int o = 16; o; o >>= 1)
            v += __shfl_xor_sync(0xffffffffu, v, o);
        if (threadIdx.x == 0) red[0] = v;
    }
    __syncthreads();
    const float inv = 1.0f / red[0];
    for (int j = threadIdx.x; j < nk; j += blockDim.x)
        r[j] = j < lim ? r[j] * inv : 0.0f;
}

/* block-wide sum in double (blockDim.x a multiple of 32, at most 1024) */
__device__ static double block_sum(double v, double *red)
{
    for (int o = 16; o; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
        double t = threadIdx.x < (blockDim.x >> 5) ? red[threadIdx.x] : 0.0;
        for (int o = 16; o; o >>= 1)
            t += __shfl_xor_sync(0xffffffffu, t, o);
        if (threadIdx.x == 0) red[32] = t;
    }
    __syncthreads();
    double r = red[32];
    __syncthreads();
    return r;
}

/* GroupNorm statistics, one block per (image, group), two passes in double as the CPU does */
__global__ static void k_gn_coeffs(const float *x, int c, int batch, size_t hw, int groups, const float *g,
                                   const float *bb, float eps, float *scale, float *shift)
{
    __shared__ double red[33];
    const int img = blockIdx.x / groups, grp = blockIdx.x % groups;
    const int cg = c / groups;
    const size_t cstride = (size_t)batch * hw;
    const float *base = x + (size_t)img * hw + (size_t)grp * cg * cstride;
    const size_t n = (size_t)cg * hw;
    double s = 0.0;
    for (int j = 0; j < cg; j++)
        for (size_t p = threadIdx.x; p < hw; p += blockDim.x)
            s += base[(size_t)j * cstride + p];
    const double mean = block_sum(s, red) / (double)n;
    double q = 0.0;
    for (int j = 0; j < cg; j++)
        for (size_t p = threadIdx.x; p < hw; p += blockDim.x) {
            double d = base[(size_t)j * cstride + p] - mean;
            q += d * d;
        }
    const double var = block_sum(q, red) / (double)n;
    const float rstd = (float)(1.0 / sqrt(var + (double)eps));
    for (int j = threadIdx.x; j < cg; j += blockDim.x) {
        const int ch = grp * cg + j;
        const float sc = (g ? g[ch] : 1.0f) * rstd;
        scale[(size_t)img * c + ch] = sc;
        shift[(size_t)img * c + ch] = (bb ? bb[ch] : 0.0f) - (float)mean * sc;
    }
}

/* The same statistics spread over the whole GPU: each (image, group) is cut into `parts` slices (blockIdx.y),
 * each slice's sum, then its sum of squared deviations from the group mean, written to part[] and added in
 * slice order, so the result does not depend on scheduling. */
__global__ static void k_gn_sum(const float *x, int c, int batch, size_t hw, int groups, int parts,
                                double *part)
{
    __shared__ double red[33];
    const int img = blockIdx.x / groups, grp = blockIdx.x % groups;
    const int cg = c / groups;
    const size_t cstride = (size_t)batch * hw, n = (size_t)cg * hw;
    const float *base = x + (size_t)img * hw + (size_t)grp * cg * cstride;
    const size_t per = (n + parts - 1) / parts, i0 = blockIdx.y * per, i1 = i0 + per < n ? i0 + per : n;
    double s = 0.0;
    for (size_t i = i0 + threadIdx.x; i < i1; i += blockDim.x)
        s += base[(i / hw) * cstride + i % hw];
    s = block_sum(s, red);
    if (threadIdx.x == 0) part[(size_t)blockIdx.x * parts + blockIdx.y] = s;
}

__global__ static void k_gn_sq(const float *x, int c, int batch, size_t hw, int groups, int parts,
                               const double *part, double *part_sq)
{
    __shared__ double red[33];
    const int img = blockIdx.x / groups, grp = blockIdx.x % groups;
    const int cg = c / groups;
    const size_t cstride = (size_t)batch * hw, n = (size_t)cg * hw;
    const float *base = x + (size_t)img * hw + (size_t)grp * cg * cstride;
    double tot = 0.0;
    for (int j = 0; j < parts; j++)
        tot += part[(size_t)blockIdx.x * parts + j];
    const double mean = tot / (double)n;
    const size_t per = (n + parts - 1) / parts, i0 = blockIdx.y * per, i1 = i0 + per < n ? i0 + per : n;
    double q = 0.0;
    for (size_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
        double d = base[(i / hw) * cstride + i % hw] - mean;
        q += d * d;
    }
    q = block_sum(q, red);
    if (threadIdx.x == 0) part_sq[(size_t)blockIdx.x * parts + blockIdx.y] = q;
}

/* one thread per (image, channel) */
__global__ static void k_gn_finish(int c, int batch, size_t hw, int groups, int parts, const double *part,
                                   const double *part_sq, const float *g, const float *bb, float eps,
                                   float *scale, float *shift)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= batch * c) return;
    const int img = i / c, ch = i % c, cg = c / groups, bg = img * groups + ch / cg;
    const double n = (double)cg * (double)hw;
    double s = 0.0, q = 0.0;
    for (int j = 0; j < parts; j++) {
        s += part[(size_t)bg * parts + j];
        q += part_sq[(size_t)bg * parts + j];
    }
    const double mean = s / n, var = q / n;
    const float rstd = (float)(1.0 / sqrt(var + (double)eps));
    const float sc = (g ? g[ch] : 1.0f) * rstd;
    scale[i] = sc;
    shift[i] = (bb ? bb[ch] : 0.0f) - (float)mean * sc;
}

__global__ static void k_gn_apply(const float *x, int c, int batch, size_t hw, const float *sc,
                                  const float *sh, int silu, float *y)
{
    const size_t n = (size_t)c * batch * hw;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t cb = i / hw;
        const int img = (int)(cb % batch), ch = (int)(cb / batch);
        float v = x[i] * sc[(size_t)img * c + ch] + sh[(size_t)img * c + ch];
        y[i] = silu ? silu_f(v) : v;
    }
}

__global__ static void k_layernorm(const float *x, int dim, const float *g, const float *b, float eps,
                                   float *y)
{
    __shared__ double red[33];
    const float *r = x + (size_t)blockIdx.x * dim;
    float *o = y + (size_t)blockIdx.x * dim;
    double s = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        s += r[i];
    const double mean = block_sum(s, red) / dim;
    double q = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        double d = r[i] - mean;
        q += d * d;
    }
    const double var = block_sum(q, red) / dim;
    const float rstd = (float)(1.0 / sqrt(var + (double)eps)), m = (float)mean;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = (r[i] - m) * rstd;
        o[i] = v * (g ? g[i] : 1.0f) + (b ? b[i] : 0.0f);
    }
}

__global__ static void k_geglu(const float *x, int n, int inner, float *y)
{
    const size_t tot = (size_t)n * inner;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < tot;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / inner, c = i % inner;
        const float *row = x + r * 2 * inner;
        y[i] = row[c] * gelu_f(row[inner + c]);
    }
}

__global__ static void k_act(float *x, size_t n, int kind)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = x[i];
        if (kind == SDE_ACT_SILU)
            v = silu_f(v);
        else if (kind == SDE_ACT_GELU)
            v = gelu_f(v);
        else if (kind == SDE_ACT_RELU)
            v = v > 0.0f ? v : 0.0f;
        else
            v = v / (1.0f + expf(-1.702f * v));
        x[i] = v;
    }
}

__global__ static void k_add(float *y, const float *x, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

__global__ static void k_embed(const float *table, const int *ids, int n, int dim, const float *pos, float *y)
{
    const size_t tot = (size_t)n * dim;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < tot;
         i += (size_t)gridDim.x * blockDim.x) {
        const int t = (int)(i / dim), d = (int)(i % dim);
        y[i] = table[(size_t)ids[t] * dim + d] + pos[i];
    }
}

__global__ static void k_resize(const float *x, int planes, int ih, int iw, int oh, int ow, float *y)
{
    const size_t tot = (size_t)planes * oh * ow;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < tot;
         i += (size_t)gridDim.x * blockDim.x) {
        const int ox = (int)(i % ow);
        const size_t r = i / ow;
        const int oy = (int)(r % oh);
        const size_t p = r / oh;
        const int sy = (int)((int64_t)oy * ih / oh), sx = (int)((int64_t)ox * iw / ow);
        y[i] = x[(p * ih + sy) * iw + sx];
    }
}

#define GRID(n) nblocks((n), 256), 256, 0, B->st

/* ---- memory and host I/O ---- */

/* A host-to-device copy finished when it returns (the host memory may be the caller's). Pageable copies
 * go through our stream and a wait, so that no kernel queued later reads a half-written destination. */
static int h2d(cu_backend *B, void *dst, const void *src, size_t bytes)
{
    return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, B->st) != cudaSuccess ||
                   cudaStreamSynchronize(B->st) != cudaSuccess
               ? -1
               : 0;
}

static sde_buf *cu_alloc(sde_backend *be, size_t bytes, char *err, size_t errlen)
{
    cu_backend *B = CB(be);
    sde_buf *b = (sde_buf *)calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    cudaError_t e = cudaMalloc((void **)&b->p, bytes ? bytes : 64);
    if (e != cudaSuccess) {
        size_t fr = 0, tot = 0;
        cudaGetLastError(); /* an allocation failure is not sticky: clear it */
        cudaMemGetInfo(&fr, &tot);
        snprintf(err, errlen,
                 "out of GPU memory: cannot allocate %.0f MiB on CUDA device %d (%.0f MiB free of %.0f)",
                 bytes / 1048576.0, B->device, fr / 1048576.0, tot / 1048576.0);
        free(b);
        return NULL;
    }
    b->bytes = bytes;
    return b;
}

static void cu_free(sde_backend *be, sde_buf *b)
{
    if (!b) return;
    /* the stream may still be using it */
    cudaStreamSynchronize(CB(be)->st);
    cudaFree(b->p);
    free(b);
}

static const float *cu_upload(sde_backend *be, const float *host, size_t n)
{
    cu_backend *B = CB(be);
    cu_upl *u = (cu_upl *)calloc(1, sizeof *u);
    if (!u) return NULL;
    if (cudaMalloc((void **)&u->p, n ? n * sizeof(float) : 64) != cudaSuccess ||
        h2d(B, u->p, host, n * sizeof(float))) {
        cudaGetLastError();
        if (u->p) cudaFree(u->p);
        free(u);
        return NULL;
    }
    u->next = B->uploads;
    B->uploads = u;
    return u->p;
}

/* (Re)makes w's float32 device copy from its source's current data. */
static int weight_fill(cu_backend *B, cu_weight *w)
{
    const sde_weight *s = w->src;
    const size_t n = s->n;
    cudaStreamSynchronize(B->st); /* queued ops may still read the old values */
    if (!w->pub.data || w->pub.n != n) {
        if (w->pub.data) cudaFree((void *)w->pub.data);
        w->pub.data = NULL;
        float *p = NULL;
        if (cudaMalloc((void **)&p, n ? n * sizeof(float) : 64) != cudaSuccess) {
            cudaGetLastError();
            return -1;
        }
        w->pub.data = p;
        w->pub.n = n;
    }
    float *d = (float *)w->pub.data;
    if (s->type == SDE_W_F32) {
        if (h2d(B, d, s->data, n * sizeof(float))) return -1;
    } else {
        if (B->stage_bytes < n * 2) {
            cudaStreamSynchronize(B->st);
            cudaFree(B->stage);
            B->stage = NULL;
            B->stage_bytes = 0;
            if (cudaMalloc(&B->stage, n * 2) != cudaSuccess) {
                cudaGetLastError();
                return -1;
            }
            B->stage_bytes = n * 2;
        }
        if (h2d(B, B->stage, s->data, n * 2)) return -1;
        if (s->type == SDE_W_F16)
            k_widen_f16<<<GRID(n)>>>((const uint16_t *)B->stage, d, n);
        else
            k_widen_bf16<<<GRID(n)>>>((const uint16_t *)B->stage, d, n);
        if (cu_check(B, "weight widening")) return -1;
    }
    w->src_data = s->data;
    w->src_type = s->type;
    w->src_gen = s->gen;
    w->h_valid = 0;
    return 0;
}

static const sde_weight *cu_upload_weight(sde_backend *be, const sde_weight *src)
{
    cu_backend *B = CB(be);
    cu_weight *w = (cu_weight *)calloc(1, sizeof *w);
    if (!w) return NULL;
    w->src = src;
    w->pub.type = SDE_W_F32;
    if (weight_fill(B, w)) {
        cudaGetLastError();
        if (w->pub.data) cudaFree((void *)w->pub.data);
        free(w);
        return NULL;
    }
    w->next = B->weights;
    B->weights = w;
    return &w->pub;
}

/* The device float32 matrix of handle h, refreshed when its owner switched or edited the data. */
static const float *W(cu_backend *B, const sde_weight *h)
{
    cu_weight *w = (cu_weight *)h;
    const sde_weight *s = w->src;
    if (s->data != w->src_data || s->type != w->src_type || s->gen != w->src_gen || s->n != w->pub.n)
        if (weight_fill(B, w)) cu_fail(B, "cannot refresh a weight on the GPU (%zu values)", s->n);
    return (const float *)w->pub.data;
}

/* The FP16 copy of handle h (SDW_CUDA_HALF=1), NULL when it cannot be made (the caller then uses FP32). */
static const __half *W16(cu_backend *B, const sde_weight *h)
{
    const float *f = W(B, h);
    cu_weight *w = (cu_weight *)h;
    if (w->h_valid) return w->h;
    if (!w->h && cudaMalloc((void **)&w->h, w->pub.n * sizeof(__half)) != cudaSuccess) {
        cudaGetLastError();
        w->h = NULL;
        return NULL;
    }
    k_to_half<<<GRID(w->pub.n)>>>(f, w->h, w->pub.n);
    w->h_valid = 1;
    return w->h;
}

/* The linear layers' FP16 workspace holding n values, NULL when it cannot grow (FP32 is used then). */
static __half *ws_half(cu_backend *B, size_t n)
{
    if (n > B->ws_cap) {
        cudaStreamSynchronize(B->st);
        cudaFree(B->ws);
        B->ws_cap = 0;
        if (cudaMalloc((void **)&B->ws, n * sizeof(__half)) != cudaSuccess) {
            cudaGetLastError();
            B->ws = NULL;
            return NULL;
        }
        B->ws_cap = n;
    }
    return B->ws;
}

static cublasStatus_t gemm_half(cu_backend *B, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                int k, const float *alpha, const __half *a, int lda, const __half *b, int ldb,
                                const float *beta, float *c, int ldc)
{
    return cublasGemmEx(B->blas, ta, tb, m, n, k, alpha, a, CUDA_R_16F, lda, b, CUDA_R_16F, ldb, beta, c,
                        CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

static void cu_write(sde_backend *be, sde_ten dst, const float *host, size_t n)
{
    cu_backend *B = CB(be);
    if (B->broken) return;
    if (h2d(B, P(dst), host, n * sizeof(float))) cu_check(B, "write");
}

static void cu_read(sde_backend *be, float *host, sde_ten src, size_t n)
{
    cu_backend *B = CB(be);
    if (B->broken) {
        memset(host, 0, n * sizeof(float));
        return;
    }
    if (cudaMemcpyAsync(host, P(src), n * sizeof(float), cudaMemcpyDeviceToHost, B->st) != cudaSuccess ||
        cudaStreamSynchronize(B->st) != cudaSuccess) {
        cu_check(B, "read");
        memset(host, 0, n * sizeof(float));
    }
}

static void cu_sync(sde_backend *be)
{
    cu_backend *B = CB(be);
    if (cudaStreamSynchronize(B->st) != cudaSuccess) cu_check(B, "sync");
}

/* ---- GEMMs ---- */

/* Row-major thinking, column-major cuBLAS: every row-major M[r][c] with stride ld is the column-major
 * matrix M^T (c x r, leading dimension ld). */
static void cu_linear(sde_backend *be, sde_ten xt, int n, int in, const sde_weight *wh, const float *b,
                      int out, sde_ten yt, int flags)
{
    cu_backend *B = CB(be);
    if (B->broken) return;
    const float *w = W(B, wh), *x = P(xt);
    float *y = P(yt);
    const float one = 1.0f, beta = (flags & SDE_LIN_ACC) ? 1.0f : 0.0f;
    const int xcm = flags & SDE_LIN_X_CM;
    cublasStatus_t s;
    const __half *w16 = B->half ? W16(B, wh) : NULL;
    __half *x16 = w16 ? ws_half(B, (size_t)n * in) : NULL;
    if (x16) {
        /* the same products on FP16 copies of x and W, summed in FP32 */
        k_to_half<<<GRID((size_t)n * in)>>>(x, x16, (size_t)n * in);
        if (flags & SDE_LIN_Y_CM)
            s = gemm_half(B, xcm ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, n, out, in, &one, x16,
                          xcm ? n : in, w16, in, &beta, y, n);
        else
            s = gemm_half(B, CUBLAS_OP_T, xcm ? CUBLAS_OP_T : CUBLAS_OP_N, out, n, in, &one, w16, in, x16,
                          xcm ? n : in, &beta, y, out);
        if (blas_check(B, s, "linear")) return;
        if (b && (flags & SDE_LIN_Y_CM)) k_bias<<<GRID((size_t)out * n)>>>(y, out, n, n, b, 1);
        if (b && !(flags & SDE_LIN_Y_CM)) k_bias<<<GRID((size_t)out * n)>>>(y, n, out, out, b, 0);
    } else if (flags & SDE_LIN_Y_CM) {
        /* y[out][n] row-major = col-major (n x out) = x_rows(n x in) * W^T(in x out) */
        s = gemm(B, xcm ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, n, out, in, &one, x, xcm ? n : in, w, in,
                 &beta, y, n);
        if (blas_check(B, s, "linear")) return;
        if (b) k_bias<<<GRID((size_t)out * n)>>>(y, out, n, n, b, 1);
    } else {
        /* y[n][out] row-major = col-major (out x n) = W(out x in) * x^T(in x n) */
        s = gemm(B, CUBLAS_OP_T, xcm ? CUBLAS_OP_T : CUBLAS_OP_N, out, n, in, &one, w, in, x, xcm ? n : in,
                 &beta, y, out);
        if (blas_check(B, s, "linear")) return;
        if (b) k_bias<<<GRID((size_t)out * n)>>>(y, n, out, out, b, 0);
    }
    cu_check(B, "linear");
}

/* A convolution is one GEMM over every output pixel of the batch when y holds the images back to back in
 * each channel plane ([C][B][HW]), else one per image. */
static int conv_direct(const sde_be_conv *c)
{
    /* a 1x1 convolution reads x as its own column matrix, unless it writes where it reads */
    return c->k == 1 && c->stride == 1 && !c->pad_t && !c->pad_b && !c->pad_l && !c->pad_r && !c->upsample &&
           !c->in_scale.buf && (c->x.buf != c->y.buf || c->x.off != c->y.off);
}

static size_t conv_pixels(const sde_be_conv *c, int *per_image)
{
    const size_t ohw = (size_t)sde_be_conv_out_h(c) * sde_be_conv_out_w(c);
    const size_t hw = (size_t)c->h * c->w;
    int joint = c->y_bstride == ohw && c->y_cstride == (size_t)c->batch * ohw;
    if (conv_direct(c)) joint = joint && c->x_bstride == hw && c->x_cstride == (size_t)c->batch * hw;
    *per_image = !joint;
    return joint ? (size_t)c->batch * ohw : ohw;
}

static size_t cu_conv_scratch(sde_backend *be, const sde_be_conv *c, size_t budget)
{
    (void)be;
    if (conv_direct(c)) return 64;
    int per;
    const size_t np = conv_pixels(c, &per), K = (size_t)c->cin * c->k * c->k;
    const size_t row = (size_t)sde_be_conv_out_w(c);
    size_t fit = budget / (K * sizeof(float));
    if (fit < row) fit = row;
    if (fit > np) fit = np;
    return fit * K * sizeof(float);
}

static void cu_conv(sde_backend *be, const sde_be_conv *c, sde_ten scratch, size_t scratch_bytes)
{
    cu_backend *B = CB(be);
    if (B->broken) return;
    const float *w = W(B, c->wt);
    const int oh = sde_be_conv_out_h(c), ow = sde_be_conv_out_w(c);
    const size_t ohw = (size_t)oh * ow, K = (size_t)c->cin * c->k * c->k;
    int per;
    const size_t np = conv_pixels(c, &per);
    const float one = 1.0f, beta = c->accumulate ? 1.0f : 0.0f;
    float *y = P(c->y);
    if (conv_direct(c)) {
        /* y_b (col-major np x cout, ld y_cstride) = x_b (np x cin, ld x_cstride) * W^T (cin x cout) */
        for (int b = 0; b < (per ? c->batch : 1); b++) {
            cublasStatus_t s = gemm(B, CUBLAS_OP_N, CUBLAS_OP_N, (int)np, c->cout, c->cin, &one,
                                    P(c->x) + (size_t)b * c->x_bstride, (int)c->x_cstride, w, c->cin, &beta,
                                    y + (size_t)b * c->y_bstride, (int)c->y_cstride);
            if (blas_check(B, s, "conv 1x1")) return;
        }
    } else {
        /* SDW_CUDA_HALF=1: FP16 columns and weights (twice the pixels per chunk) */
        const __half *w16 = B->half ? W16(B, c->wt) : NULL;
        size_t chunk = scratch_bytes / (K * (w16 ? sizeof(__half) : sizeof(float)));
        if (chunk > np) chunk = np;
        if (chunk == 0) {
            cu_fail(B, "conv: %zu bytes of scratch is less than one output row", scratch_bytes);
            return;
        }
        float *col = P(scratch);
        im2col_args a;
        a.x = P(c->x);
        a.x_cstride = c->x_cstride;
        a.x_bstride = c->x_bstride;
        a.sc = P(c->in_scale);
        a.sh = P(c->in_shift);
        a.silu = c->in_silu;
        a.up = c->upsample;
        a.cin = c->cin;
        a.h = c->h;
        a.w = c->w;
        a.k = c->k;
        a.stride = c->stride;
        a.pad_t = c->pad_t;
        a.pad_l = c->pad_l;
        a.oh = oh;
        a.ow = ow;
        for (int b = 0; b < (per ? c->batch : 1); b++)
            for (size_t p0 = 0; p0 < np; p0 += chunk) {
                const size_t m = np - p0 < chunk ? np - p0 : chunk;
                a.g0 = (per ? (size_t)b * ohw : 0) + p0;
                a.np = (int)m;
                /* y (col-major m x cout, ld y_cstride) = col (m x K, ld m) * W^T (K x cout, ld K) */
                float *yb = per ? y + (size_t)b * c->y_bstride + p0 : y + p0;
                cublasStatus_t s;
                if (w16) {
                    k_im2col<__half><<<GRID(K * m)>>>(a, (__half *)col);
                    s = gemm_half(B, CUBLAS_OP_N, CUBLAS_OP_N, (int)m, c->cout, (int)K, &one,
                                  (const __half *)col, (int)m, w16, (int)K, &beta, yb, (int)c->y_cstride);
                } else {
                    k_im2col<float><<<GRID(K * m)>>>(a, col);
                    s = gemm(B, CUBLAS_OP_N, CUBLAS_OP_N, (int)m, c->cout, (int)K, &one, col, (int)m, w,
                             (int)K, &beta, yb, (int)c->y_cstride);
                }
                if (blas_check(B, s, "conv")) return;
            }
    }
    if (c->bias || c->bias_b.buf)
        k_conv_bias<<<GRID((size_t)c->cout * c->batch * ohw)>>>(y, c->y_cstride, c->y_bstride, c->cout,
                                                                c->batch, (int)ohw, c->bias, P(c->bias_b));
    cu_check(B, "conv");
}

/* ---- attention: S = QK^T/sqrt(d) per head into scratch, softmax, O = S V, a group of heads at a time ----
 */

/* a group of up to 64 heads per launch: SDXL's 20 heads of 1024 tokens go in one */
enum { ATT_SCRATCH_CAP = 256 << 20, ATT_MAX_GROUP = 64 };

static int att_group(int nq, int nk)
{
    const size_t per = (size_t)nq * nk * sizeof(float);
    size_t g = ATT_SCRATCH_CAP / per;
    return g < 1 ? 1 : g > ATT_MAX_GROUP ? ATT_MAX_GROUP : (int)g;
}

static size_t cu_attention_scratch(sde_backend *be, int nq, int nk, int hd)
{
    (void)be, (void)hd;
    return (size_t)att_group(nq, nk) * nq * nk * sizeof(float);
}

static void cu_attention(sde_backend *be, sde_ten qt, int q_stride, sde_ten kt, int k_stride, sde_ten vt,
                         int v_stride, int nq, int nk, int heads, int hd, int causal, sde_ten ot,
                         int out_stride, sde_ten scratch)
{
    cu_backend *B = CB(be);
    if (B->broken) return;
    const float *q = P(qt), *k = P(kt), *v = P(vt);
    float *o = P(ot), *s = P(scratch);
    const float scale = 1.0f / sqrtf((float)hd), one = 1.0f, zero = 0.0f;
    const int G = att_group(nq, nk);
    const long long sS = (long long)nq * nk;
    for (int h0 = 0; h0 < heads; h0 += G) {
        const int g = heads - h0 < G ? heads - h0 : G;
        /* S_h^T (col-major nk x nq) = K_h (nk x hd) * Q_h^T */
        cublasStatus_t st =
            gemm_batched(B, CUBLAS_OP_T, CUBLAS_OP_N, nk, nq, hd, &scale, k + (size_t)h0 * hd, k_stride, hd,
                         q + (size_t)h0 * hd, q_stride, hd, &zero, s, nk, sS, g);
        if (blas_check(B, st, "attention QK")) return;
        k_softmax<<<g * nq, 256, 0, B->st>>>(s, nk, nq, causal);
        /* O_h^T (col-major hd x nq, ld out_stride) = V_h^T (hd x nk) * P_h^T (nk x nq) */
        st = gemm_batched(B, CUBLAS_OP_N, CUBLAS_OP_N, hd, nq, nk, &one, v + (size_t)h0 * hd, v_stride, hd, s,
                          nk, sS, &zero, o + (size_t)h0 * hd, out_stride, hd, g);
        if (blas_check(B, st, "attention PV")) return;
    }
    cu_check(B, "attention");
}

/* ---- norms and element-wise ---- */

static void cu_gn_coeffs(sde_backend *be, sde_ten x, int c, int batch, size_t hw, int groups, const float *g,
                         const float *b, float eps, sde_ten scale, sde_ten shift)
{
    cu_backend *B = CB(be);
    if (B->broken) return;
    const int bg = batch * groups;
    const size_t n = (size_t)(c / groups) * hw;
    /* enough slices for a few blocks per multiprocessor, each at least 8K values */
    size_t parts = (size_t)(4 * 132 + bg - 1) / bg;
    if (parts > n / 8192) parts = n / 8192;
    if (parts > GN_PARTS / (size_t)bg) parts = GN_PARTS / (size_t)bg;
    if (parts <= 1) {
        k_gn_coeffs<<<bg, 512, 0, B->st>>>(P(x), c, batch, hw, groups, g, b, eps, P(scale), P(shift));
    } else {
        const dim3 grid((unsigned)bg, (unsigned)parts);
        k_gn_sum<<<grid, 256, 0, B->st>>>(P(x), c, batch, hw, groups, (int)parts, B->gn_part);
        k_gn_sq<<<grid, 256, 0, B->st>>>(P(x), c, batch, hw, groups, (int)parts, B->gn_part,
                                         B->gn_part + GN_PARTS);
        k_gn_finish<<<nblocks((size_t)batch * c, 256), 256, 0, B->st>>>(c, batch, hw, groups, (int)parts,
                                                                        B->gn_part, B->gn_part + GN_PARTS, g,
                                                                        b, eps, P(scale), P(shift));
    }
    cu_check(B, "group norm");
}

static void cu_gn_apply(sde_backend *be, sde_ten x, int c, int batch, size_t hw, sde_ten scale, sde_ten shift,
                        int silu, sde_ten y)
{
    cu_backend *B = CB(be);
    if (B->broken) return;
    k_gn_apply<<<GRID((size_t)c * batch * hw)>>>(P(x), c, batch, hw, P(scale), P(shift), silu, P(y));
    cu_check(B, "group norm apply");
}

static void cu_layernorm(sde_backend *be, sde_ten x, int n, int dim, const float *g, const float *b,
                         float eps, sde_ten y)
{
    cu_backend *B = CB(be);
    if (B->broken || n <= 0) return;
    k_layernorm<<<n, 256, 0, B->st>>>(P(x), dim, g, b, eps, P(y));
    cu_check(B, "layer norm");
}

static void cu_geglu(sde_backend *be, sde_ten x, int n, int inner, sde_ten y)
{
    cu_backend *B = CB(be);
    if (B->broken) return;
    k_geglu<<<GRID((size_t)n * inner)>>>(P(x), n, inner, P(y));
    cu_check(B, "geglu");
}

static void cu_act(sde_backend *be, sde_ten x, size_t n, int kind)
{
    cu_backend *B = CB(be);
    if (B->broken) return;
    k_act<<<GRID(n)>>>(P(x), n, kind);
    cu_check(B, "activation");
}

static void cu_add(sde_backend *be, sde_ten y, sde_ten x, size_t n)
{
    cu_backend *B = CB(be);
    if (B->broken) return;
    k_add<<<GRID(n)>>>(P(y), P(x), n);
    cu_check(B, "add");
}

static void cu_embed(sde_backend *be, const sde_weight *table, const int32_t *ids, int n, int dim,
                     const float *pos, sde_ten y)
{
    cu_backend *B = CB(be);
    if (B->broken) return;
    const float *t = W(B, table);
    if (n > B->ids_cap) {
        cudaStreamSynchronize(B->st);
        cudaFree(B->ids);
        B->ids = NULL;
        B->ids_cap = 0;
        if (cudaMalloc((void **)&B->ids, (size_t)n * sizeof(int)) != cudaSuccess) {
            cu_check(B, "embed ids");
            return;
        }
        B->ids_cap = n;
    }
    /* synchronous: ids may live on the caller's stack */
    if (h2d(B, B->ids, ids, (size_t)n * sizeof(int))) {
        cu_check(B, "embed ids");
        return;
    }
    k_embed<<<GRID((size_t)n * dim)>>>(t, B->ids, n, dim, pos, P(y));
    cu_check(B, "embed");
}

static void cu_copy(sde_backend *be, sde_ten dst, sde_ten src, size_t n)
{
    cu_backend *B = CB(be);
    if (B->broken) return;
    if (cudaMemcpyAsync(P(dst), P(src), n * sizeof(float), cudaMemcpyDeviceToDevice, B->st) != cudaSuccess)
        cu_check(B, "copy");
}

static void cu_resize_nearest(sde_backend *be, sde_ten x, int planes, int ih, int iw, int oh, int ow,
                              sde_ten y)
{
    cu_backend *B = CB(be);
    if (B->broken) return;
    k_resize<<<GRID((size_t)planes * oh * ow)>>>(P(x), planes, ih, iw, oh, ow, P(y));
    cu_check(B, "resize");
}

static const char *cu_failed(sde_backend *be)
{
    cu_backend *B = CB(be);
    if (!B->broken) cu_check(B, "device");
    return B->broken ? B->why : NULL;
}

static int cu_vram(sde_backend *be, size_t *free_bytes, size_t *total_bytes)
{
    (void)be;
    return cudaMemGetInfo(free_bytes, total_bytes) == cudaSuccess ? 0 : -1;
}

static void cu_destroy(sde_backend *be)
{
    cu_backend *B = CB(be);
    if (!B) return;
    cudaStreamSynchronize(B->st);
    for (cu_weight *w = B->weights, *nx; w; w = nx) {
        nx = w->next;
        cudaFree(w->h);
        cudaFree((void *)w->pub.data);
        free(w);
    }
    for (cu_upl *u = B->uploads, *nx; u; u = nx) {
        nx = u->next;
        cudaFree(u->p);
        free(u);
    }
    cudaFree(B->stage);
    cudaFree(B->ids);
    cudaFree(B->gn_part);
    cudaFree(B->ws);
    if (B->blas) cublasDestroy(B->blas);
    if (B->st) cudaStreamDestroy(B->st);
    free(B);
}

extern "C" sde_backend *sde_backend_cuda_open(char *err, size_t errlen)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1) {
        snprintf(err, errlen, "backend \"cuda\": no CUDA device is visible (%s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "none found; check CUDA_VISIBLE_DEVICES");
        cudaGetLastError();
        return NULL;
    }
    cu_backend *B = (cu_backend *)calloc(1, sizeof *B);
    if (!B) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    B->device = 0;
    const char *hf = getenv("SDW_CUDA_HALF");
    B->half = hf && !strcmp(hf, "1");
    if ((e = cudaSetDevice(0)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&B->st, cudaStreamNonBlocking))) {
        snprintf(err, errlen, "backend \"cuda\": %s", cudaGetErrorString(e));
        free(B);
        return NULL;
    }
    cublasStatus_t s = cublasCreate(&B->blas);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(B->blas, B->st);
    if (s != CUBLAS_STATUS_SUCCESS) {
        snprintf(err, errlen, "backend \"cuda\": cuBLAS initialisation failed (status %d)", (int)s);
        cu_destroy(&B->pub);
        return NULL;
    }
    if ((e = cudaMalloc((void **)&B->gn_part, 2 * GN_PARTS * sizeof(double))) != cudaSuccess) {
        snprintf(err, errlen, "backend \"cuda\": %s", cudaGetErrorString(e));
        cu_destroy(&B->pub);
        return NULL;
    }
    sde_backend *v = &B->pub;
    v->name = "cuda";
    v->alloc = cu_alloc;
    v->free = cu_free;
    v->upload = cu_upload;
    v->upload_weight = cu_upload_weight;
    v->write = cu_write;
    v->read = cu_read;
    v->sync = cu_sync;
    v->linear = cu_linear;
    v->conv_scratch = cu_conv_scratch;
    v->conv = cu_conv;
    v->attention_scratch = cu_attention_scratch;
    v->attention = cu_attention;
    v->gn_coeffs = cu_gn_coeffs;
    v->gn_apply = cu_gn_apply;
    v->layernorm = cu_layernorm;
    v->geglu = cu_geglu;
    v->act = cu_act;
    v->add = cu_add;
    v->embed = cu_embed;
    v->copy = cu_copy;
    v->resize_nearest = cu_resize_nearest;
    v->failed = cu_failed;
    v->vram = cu_vram;
    v->destroy = cu_destroy;
    return v;
}
