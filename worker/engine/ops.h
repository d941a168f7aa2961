/* ops.h: the neural-network primitives every model in the engine is built from.
 * Plain float32, row-major, NCHW for images; GEMM-heavy ones call OpenBLAS. */
#ifndef SDE_OPS_H
#define SDE_OPS_H

#include <stddef.h>

/** y[n][out] = x[n][in] * W^T + b, with W stored [out][in] (PyTorch Linear). b may be NULL. */
void sde_linear(const float *x, int n, int in, const float *w, const float *b, int out, float *y);
/** In-place LayerNorm over the last dim of x[n][dim]; g, b may be NULL. */
void sde_layernorm(float *x, int n, int dim, const float *g, const float *b, float eps);
/** In-place GroupNorm of x[c][hw] (one image), optional fused SiLU afterwards. */
void sde_groupnorm(float *x, int c, int hw, int groups, const float *g, const float *b, float eps, int silu);
/** Bytes of scratch sde_conv2d() needs for this shape (0 for 1x1 stride-1 convs). */
size_t sde_conv2d_scratch(int cin, int h, int w, int k, int stride, int pad);
/** 2-D convolution of one image x[cin][h][w] with wt[cout][cin][k][k] (+ b) into y[cout][oh][ow].
 * scratch holds at least sde_conv2d_scratch() bytes. */
void sde_conv2d(const float *x, int cin, int h, int w, const float *wt, const float *b, int cout, int k, int stride,
                int pad, float *y, float *scratch);
/** Elementwise activations, in place. gelu is the exact erf form; gelu_tanh the tanh approximation. */
void sde_silu(float *x, size_t n);
void sde_gelu(float *x, size_t n);
void sde_gelu_tanh(float *x, size_t n);
void sde_quick_gelu(float *x, size_t n);
/** In-place softmax over each row of x[rows][cols]. */
void sde_softmax_rows(float *x, int rows, int cols);
/** Multi-head scaled-dot-product attention, one head at a time so only one [nq][nk] score matrix exists.
 * q[nq][heads*hd], k,v[nk][heads*hd] (row strides given), out[nq][heads*hd]. scratch: nq*nk floats
 * plus nq*hd*3 + nk*hd*2 floats (see sde_attention_scratch). causal masks keys after the query index. */
size_t sde_attention_scratch(int nq, int nk, int hd);
void sde_attention(const float *q, int q_stride, const float *k, int k_stride, const float *v, int v_stride,
                   int nq, int nk, int heads, int hd, int causal, float *out, int out_stride, float *scratch);
/** Nearest-neighbour 2x upsample of x[c][h][w] into y[c][2h][2w]. */
void sde_upsample2x(const float *x, int c, int h, int w, float *y);
/** y[c][hw] <-> yt[hw][c] transposes. */
void sde_transpose(const float *x, int rows, int cols, float *y);
/** Sets the number of BLAS threads (0 leaves the default). */
void sde_set_threads(int n);

#endif
