/* backend.h: the seam between the models and the kernels: buffers a backend owns, and the small op set the
 * UNet, the VAE and the text encoders run through it. docs/backends.md has the contract. */
#ifndef SDE_BACKEND_H
#define SDE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

/** Memory a backend owns (host RAM on the CPU, VRAM on a GPU). Model code never dereferences it. */
typedef struct sde_buf sde_buf;

/** A placeholder buffer for sizing passes: tensors in it are only compared (x == y) and tested for presence,
 * never read or written; conv_scratch() must accept them. */
#define SDE_BUF_SIZING ((sde_buf *)(uintptr_t)64)

/** A float32 tensor in a backend buffer: buf plus an offset in floats. buf == NULL means "absent". */
typedef struct {
    sde_buf *buf;
    size_t off;
} sde_ten;

/** Element types a weight handle's data may have: a checkpoint's F16/BF16 matrices stay as stored in the
 * mapped file; everything else is float32. */
typedef enum { SDE_W_F32 = 0, SDE_W_F16, SDE_W_BF16 } sde_wtype;

/** A weight matrix as the ops read it: n elements of type at data. Its owner (the checkpoint) keeps the
 * handle at one address for the model's life but may switch data and type between jobs (a LoRA merge
 * points it at a private copy for one job, or edits a float32 mapping in place), so ops read data and type
 * at every call, and a backend holding a copy compares gen. */
typedef struct {
    const void *data;
    sde_wtype type;
    size_t n;
    unsigned gen; /* bumped by the owner whenever data, type or the values change (a LoRA edit in place) */
} sde_weight;

/** A 2-D convolution over a batch in the [C][B][HW]-style layouts of ops.h's sde_conv_desc, with its
 * fusions: an input affine (GroupNorm coefficients) + SiLU, a nearest-2x input upsample, a per-image
 * second bias and accumulation into y. Weights are backend weight handles (sde_backend.upload). */
typedef struct {
    sde_ten x;
    int batch, cin, h, w;
    size_t x_cstride, x_bstride;
    sde_ten in_scale, in_shift; /* [batch][cin] each, or absent */
    int in_silu, upsample;
    const sde_weight *wt; /* [cout][cin][k][k] */
    const float *bias;    /* [cout] or NULL */
    sde_ten bias_b;       /* [batch][cout] or absent */
    int cout, k, stride, pad_t, pad_b, pad_l, pad_r;
    sde_ten y;
    size_t y_cstride, y_bstride;
    int accumulate;
} sde_be_conv;

/** Output height and width of a described convolution (the same shape rule as ops.h's). */
static inline int sde_be_conv_out_h(const sde_be_conv *c)
{
    return ((c->upsample ? 2 * c->h : c->h) + c->pad_t + c->pad_b - c->k) / c->stride + 1;
}
static inline int sde_be_conv_out_w(const sde_be_conv *c)
{
    return ((c->upsample ? 2 * c->w : c->w) + c->pad_l + c->pad_r - c->k) / c->stride + 1;
}

/** Activations of sde_backend.act: SiLU, exact-erf GELU, CLIP's x*sigmoid(1.702x), and ReLU (TAESD). */
enum { SDE_ACT_SILU, SDE_ACT_GELU, SDE_ACT_QUICK_GELU, SDE_ACT_RELU };

/** Layouts of sde_backend.linear: x is [n][in] unless X_CM ([in][n]); y is [n][out] unless Y_CM ([out][n],
 * bias per out row); ACC adds into y instead of overwriting it. */
enum { SDE_LIN_X_CM = 1, SDE_LIN_Y_CM = 2, SDE_LIN_ACC = 4 };

/** A backend: every op is enqueued in order on the backend's one stream; results are visible to the host
 * only through read() (which synchronises). Sizes are in floats unless named bytes. */
typedef struct sde_backend sde_backend;
struct sde_backend {
    const char *name;
    /** Allocates bytes of device memory (64-byte aligned); NULL with err filled on failure. */
    sde_buf *(*alloc)(sde_backend *be, size_t bytes, char *err, size_t errlen);
    /** Releases a buffer from alloc (NULL is fine). */
    void (*free)(sde_backend *be, sde_buf *buf);
    /** A weight handle for n host floats that stay valid for the model's life (the mmap'd checkpoint);
     * the CPU keeps the pointer, a GPU copies once. NULL on failure. Pass it only to ops. */
    const float *(*upload)(sde_backend *be, const float *host, size_t n);
    /** A handle of this backend for the weight matrix w, which stays at its address for the model's life
     * (its data may be switched between jobs, see sde_weight); the CPU returns w itself. NULL on failure. */
    const sde_weight *(*upload_weight)(sde_backend *be, const sde_weight *w);
    /** dst[0..n) = host[0..n). */
    void (*write)(sde_backend *be, sde_ten dst, const float *host, size_t n);
    /** host[0..n) = src[0..n), after everything enqueued before it has finished. */
    void (*read)(sde_backend *be, float *host, sde_ten src, size_t n);
    /** Waits for all enqueued work. */
    void (*sync)(sde_backend *be);

    /** y = x W^T + b (W [out][in]) in the SDE_LIN_* layout given by flags; b may be NULL. */
    void (*linear)(sde_backend *be, sde_ten x, int n, int in, const sde_weight *w, const float *b, int out,
                   sde_ten y, int flags);
    /** Bytes of scratch conv() needs for c when allowed at most budget bytes (it tiles to fit). */
    size_t (*conv_scratch)(sde_backend *be, const sde_be_conv *c, size_t budget);
    /** Runs c with scratch_bytes of scratch. */
    void (*conv)(sde_backend *be, const sde_be_conv *c, sde_ten scratch, size_t scratch_bytes);
    /** Bytes of scratch attention() needs. */
    size_t (*attention_scratch)(sde_backend *be, int nq, int nk, int hd);
    /** out = softmax(q k^T / sqrt(hd)) v per head; rows of q, k, v, out are *_stride floats apart. */
    void (*attention)(sde_backend *be, sde_ten q, int q_stride, sde_ten k, int k_stride, sde_ten v,
                      int v_stride, int nq, int nk, int heads, int hd, int causal, sde_ten out,
                      int out_stride, sde_ten scratch);
    /** GroupNorm coefficients of batch images x [c][batch][hw] (channel planes batch*hw apart, images hw
     * apart): normalised = x*scale + shift, scale/shift [batch][c]. */
    void (*gn_coeffs)(sde_backend *be, sde_ten x, int c, int batch, size_t hw, int groups, const float *g,
                      const float *b, float eps, sde_ten scale, sde_ten shift);
    /** y = x*scale[c] + shift[c] (then SiLU if silu) for batch images in x's layout of gn_coeffs. */
    void (*gn_apply)(sde_backend *be, sde_ten x, int c, int batch, size_t hw, sde_ten scale, sde_ten shift,
                     int silu, sde_ten y);
    /** y = LayerNorm(x) over rows of dim (x == y allowed); g, b may be NULL. */
    void (*layernorm)(sde_backend *be, sde_ten x, int n, int dim, const float *g, const float *b, float eps,
                      sde_ten y);
    /** y[n][inner] = x[n][0..inner) * gelu(x[n][inner..2*inner)). */
    void (*geglu)(sde_backend *be, sde_ten x, int n, int inner, sde_ten y);
    /** In-place activation (SDE_ACT_*) over n floats. */
    void (*act)(sde_backend *be, sde_ten x, size_t n, int kind);
    /** y[i] += x[i] over n floats. */
    void (*add)(sde_backend *be, sde_ten y, sde_ten x, size_t n);
    /** y[t] = table[ids[t]] + pos[t] for n rows of dim (ids on the host, already inside the table). */
    void (*embed)(sde_backend *be, const sde_weight *table, const int32_t *ids, int n, int dim,
                  const float *pos, sde_ten y);
    /** dst[0..n) = src[0..n) (regions do not overlap). */
    void (*copy)(sde_backend *be, sde_ten dst, sde_ten src, size_t n);
    /** y[p][oh][ow] = x[p][oy*ih/oh][ox*iw/ow] for planes p: PyTorch's nearest interpolate to a size. */
    void (*resize_nearest)(sde_backend *be, sde_ten x, int planes, int ih, int iw, int oh, int ow, sde_ten y);

    /* Optional (NULL on the CPU, which cannot fail after allocation): */
    /** NULL while the device works; once an op has failed beyond recovery (a GPU fault), why, and every later
     * op does nothing. An allocation failure is not such a failure. */
    const char *(*failed)(sde_backend *be);
    /** Free and total bytes of the device's memory: 0, or -1 when unknown. */
    int (*vram)(sde_backend *be, size_t *free_bytes, size_t *total_bytes);
    /** Releases a backend from sde_backend_open() with everything uploaded to it. */
    void (*destroy)(sde_backend *be);
};

/** The CPU backend (ops.h on OpenBLAS); one shared instance, stateless. */
sde_backend *sde_backend_cpu(void);

/** The backend called name ("cpu"; NULL or "" is the default, the CPU; "cuda" in a -DSDW_CUDA=ON build: one
 * shared instance, made at the first call), or NULL when this build has none of that name or it cannot start.
 */
sde_backend *sde_backend_get(const char *name);

/** A backend of its own for one engine: the shared CPU one, or a new CUDA one (its own stream, and weights
 * freed with it). NULL with err filled when the build has no such backend or no device. */
sde_backend *sde_backend_open(const char *name, char *err, size_t errlen);
/** Releases a backend from sde_backend_open() (the CPU's is shared: nothing happens). NULL is fine. */
void sde_backend_close(sde_backend *be);

/** t advanced by off floats. */
static inline sde_ten sde_ten_at(sde_ten t, size_t off)
{
    t.off += off;
    return t;
}

#endif
