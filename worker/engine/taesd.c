/* taesd.c: the TAESD decoder (madebyollin/taesd taesd.py Decoder, diffusers' AutoencoderTiny): tanh clamp,
 * a 3x3 conv, then three stages of residual ReLU blocks each followed by a nearest 2x upsample and a conv,
 * one more block and a 3x3 conv to RGB. No normalisation, no attention: a few hundred ms where the VAE takes
 * seconds. Runs through the backend as vae.c does, one buffer per live activation. */
#include "taesd.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "checkpoint.h"
#include "weights.h"

/* im2col scratch per convolution, as the VAE's: big GEMMs, bounded memory at any size */
#define TAESD_CONV_BUDGET ((size_t)32 << 20)
#define TAESD_STAGES 4   /* three upsampling stages of 3 blocks, then one block at full size */
#define TAESD_BLOCKS 10  /* 3 + 3 + 3 + 1 */
#define TAESD_CLAMP 3.0f /* latents pass tanh(z / 3) * 3 first */

typedef struct {
    const sde_weight *w[3];
    const float *b[3]; /* conv.0, conv.2, conv.4: 3x3 with bias */
} tblock;

struct sde_taesd {
    sde_ckpt *ck;
    sde_backend *be;
    int zc, ch;
    const sde_weight *in_w;
    const float *in_b; /* latent -> ch */
    tblock blk[TAESD_BLOCKS];
    const sde_weight *up_w[3]; /* the conv after each upsample, no bias */
    const sde_weight *out_w;
    const float *out_b;
    long long params;
};

/* Index of each layer in diffusers' decoder.layers (0 conv, 1 ReLU, 2-4 blocks, 5 upsample, 6 conv, ...,
 * 17 block, 18 conv); the decoder-only file of the taesd repository counts one more (0 is its Clamp). */
static const int BLOCK_AT[TAESD_BLOCKS] = {2, 3, 4, 7, 8, 9, 12, 13, 14, 17};
static const int UPCONV_AT[3] = {6, 11, 16};
#define CONV_IN_AT 0
#define CONV_OUT_AT 18

int sde_taesd_load(const char *path, sde_taesd **out, char *err, size_t errlen)
{
    return sde_taesd_load_on(sde_backend_cpu(), path, out, err, errlen);
}

int sde_taesd_load_on(sde_backend *be, const char *path, sde_taesd **out, char *err, size_t errlen)
{
    *out = NULL;
    sde_taesd *t = calloc(1, sizeof *t);
    if (!t) return sde_fail(err, errlen, "out of memory");
    if (sde_ckpt_open(path, &t->ck, err, errlen)) {
        free(t);
        return -1;
    }
    const char *pre;
    int shift;
    const sde_tensor *ci;
    if ((ci = sde_wfind(t->ck, "decoder.layers.%d.weight", CONV_IN_AT))) {
        pre = "decoder.layers.";
        shift = 0;
    } else if ((ci = sde_wfind(t->ck, "%d.weight", CONV_IN_AT + 1)) && !sde_wfind(t->ck, "0.weight")) {
        pre = "";
        shift = 1;
    } else {
        sde_fail(
            err, errlen,
            "%s: not a TAESD decoder (no tensor decoder.layers.0.weight as in diffusers' AutoencoderTiny, "
            "nor 1.weight as in taesd_decoder.safetensors)",
            path);
        sde_taesd_free(t);
        return -1;
    }
    if (ci->ndim != 4 || ci->shape[2] != 3 || ci->shape[3] != 3 || ci->shape[0] < 1 || ci->shape[0] > 1024 ||
        ci->shape[1] < 1 || ci->shape[1] > 64) {
        sde_fail(err, errlen, "%s: tensor %s%d.weight is not a 3x3 convolution from the latent", path, pre,
                 CONV_IN_AT + shift);
        sde_taesd_free(t);
        return -1;
    }
    t->ch = (int)ci->shape[0];
    t->zc = (int)ci->shape[1];
    t->be = be;
    const int ch = t->ch;
    sde_wloader L = {.c = t->ck, .err = err, .errlen = errlen, .be = t->be};
    t->in_w = sde_wload_weight(&L, ch, t->zc, 3, 3, "%s%d.weight", pre, CONV_IN_AT + shift);
    t->in_b = sde_wload(&L, ch, 0, 0, 0, "%s%d.bias", pre, CONV_IN_AT + shift);
    for (int i = 0; i < TAESD_BLOCKS; i++)
        for (int k = 0; k < 3; k++) {
            t->blk[i].w[k] =
                sde_wload_weight(&L, ch, ch, 3, 3, "%s%d.conv.%d.weight", pre, BLOCK_AT[i] + shift, 2 * k);
            t->blk[i].b[k] = sde_wload(&L, ch, 0, 0, 0, "%s%d.conv.%d.bias", pre, BLOCK_AT[i] + shift, 2 * k);
        }
    for (int i = 0; i < 3; i++)
        t->up_w[i] = sde_wload_weight(&L, ch, ch, 3, 3, "%s%d.weight", pre, UPCONV_AT[i] + shift);
    t->out_w = sde_wload_weight(&L, 3, ch, 3, 3, "%s%d.weight", pre, CONV_OUT_AT + shift);
    t->out_b = sde_wload(&L, 3, 0, 0, 0, "%s%d.bias", pre, CONV_OUT_AT + shift);
    if (L.failed) {
        sde_taesd_free(t);
        return -1;
    }
    t->params = (long long)L.params;
    *out = t;
    return 0;
}

void sde_taesd_free(sde_taesd *t)
{
    if (!t) return;
    sde_ckpt_free(t->ck);
    free(t);
}

int sde_taesd_latent_channels(const sde_taesd *t)
{
    return t->zc;
}

long long sde_taesd_params(const sde_taesd *t)
{
    return t->params;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Running. */

typedef struct {
    sde_backend *be;
    sde_ten scratch;
    size_t scratch_bytes;
    char *err;
    size_t errlen;
    int oom;
} trun;

static sde_ten act_alloc(trun *R, size_t n)
{
    char why[128];
    sde_ten t = {R->be->alloc(R->be, n * sizeof(float), why, sizeof why), 0};
    if (!t.buf && !R->oom) {
        R->oom = 1;
        sde_fail(R->err, R->errlen, "TAESD: out of memory allocating %.0f MB", n * 4.0 / 1048576.0);
    }
    return t;
}

static void act_free(trun *R, sde_ten t)
{
    R->be->free(R->be, t.buf);
}

/* x [cin][h][w] -> y [cout][h'][w'] by a 3x3 pad-1 convolution (h' = 2h with upsample). */
static void conv3(trun *R, sde_ten x, int cin, int h, int w, const sde_weight *wt, const float *b, int cout,
                  int up, int acc, sde_ten y)
{
    const int oh = up ? 2 * h : h, ow = up ? 2 * w : w;
    sde_be_conv d = {.x = x,
                     .batch = 1,
                     .cin = cin,
                     .h = h,
                     .w = w,
                     .x_cstride = (size_t)h * w,
                     .x_bstride = (size_t)cin * h * w,
                     .upsample = up,
                     .wt = wt,
                     .bias = b,
                     .cout = cout,
                     .k = 3,
                     .stride = 1,
                     .pad_t = 1,
                     .pad_b = 1,
                     .pad_l = 1,
                     .pad_r = 1,
                     .y = y,
                     .y_cstride = (size_t)oh * ow,
                     .y_bstride = (size_t)cout * oh * ow,
                     .accumulate = acc};
    R->be->conv(R->be, &d, R->scratch, R->scratch_bytes);
}

/* Block: x = relu(conv4(relu(conv2(relu(conv0(x))))) + x), in place in x; t1, t2 are [ch][h][w] temporaries
 * (the residual sum is the last convolution accumulating into x). */
static void block_run(trun *R, const sde_taesd *t, const tblock *b, sde_ten x, sde_ten t1, sde_ten t2, int h,
                      int w)
{
    const int ch = t->ch;
    const size_t n = (size_t)ch * h * w;
    conv3(R, x, ch, h, w, b->w[0], b->b[0], ch, 0, 0, t1);
    R->be->act(R->be, t1, n, SDE_ACT_RELU);
    conv3(R, t1, ch, h, w, b->w[1], b->b[1], ch, 0, 0, t2);
    R->be->act(R->be, t2, n, SDE_ACT_RELU);
    conv3(R, t2, ch, h, w, b->w[2], b->b[2], ch, 0, 1, x);
    R->be->act(R->be, x, n, SDE_ACT_RELU);
}

int sde_taesd_decode(sde_taesd *t, const float *z, int h, int w, float *rgb, int (*cancel)(void *), void *ud,
                     char *err, size_t errlen)
{
    if (h < 1 || w < 1 || h > 1024 || w > 1024)
        return sde_fail(err, errlen, "TAESD: bad latent size %dx%d", h, w);
    trun R = {.be = t->be, .err = err, .errlen = errlen};
    sde_backend *be = R.be;
    const int ch = t->ch, zc = t->zc, H = 8 * h, W = 8 * w;
    /* scratch for the widest convolution at full size (the upsampling conv into it reads half-size input) */
    {
        const sde_ten sx = {SDE_BUF_SIZING, 0}, sy = {SDE_BUF_SIZING, 1};
        sde_be_conv d = {.x = sx,
                         .batch = 1,
                         .cin = ch,
                         .h = H,
                         .w = W,
                         .cout = ch,
                         .k = 3,
                         .stride = 1,
                         .pad_t = 1,
                         .pad_b = 1,
                         .pad_l = 1,
                         .pad_r = 1,
                         .y = sy};
        size_t row = be->conv_scratch(be, &d, 1);
        R.scratch_bytes = row > TAESD_CONV_BUDGET ? row : TAESD_CONV_BUDGET;
    }
    int rc = -1;
    sde_ten x = {0}, t1 = {0}, t2 = {0}, zin = {0};
    R.scratch = act_alloc(&R, (R.scratch_bytes + sizeof(float) - 1) / sizeof(float));
    zin = act_alloc(&R, (size_t)zc * h * w);
    x = act_alloc(&R, (size_t)ch * h * w);
    if (R.oom) goto out;
    {
        /* the soft clamp on the host, where the latent is anyway */
        float *zt = malloc((size_t)zc * h * w * sizeof(float));
        if (!zt) {
            sde_fail(err, errlen, "TAESD: out of memory");
            goto out;
        }
        for (size_t i = 0; i < (size_t)zc * h * w; i++)
            zt[i] = tanhf(z[i] / TAESD_CLAMP) * TAESD_CLAMP;
        be->write(be, zin, zt, (size_t)zc * h * w);
        free(zt);
    }
    conv3(&R, zin, zc, h, w, t->in_w, t->in_b, ch, 0, 0, x);
    act_free(&R, zin);
    zin = (sde_ten){0};
    be->act(be, x, (size_t)ch * h * w, SDE_ACT_RELU);
    int bi = 0;
    for (int s = 0; s < TAESD_STAGES; s++) {
        const int nb = s < 3 ? 3 : 1;
        t1 = act_alloc(&R, (size_t)ch * h * w);
        t2 = act_alloc(&R, (size_t)ch * h * w);
        if (R.oom) goto out;
        for (int k = 0; k < nb; k++, bi++) {
            if (cancel && cancel(ud)) {
                rc = 1;
                goto out;
            }
            block_run(&R, t, &t->blk[bi], x, t1, t2, h, w);
        }
        act_free(&R, t1), act_free(&R, t2);
        t1 = t2 = (sde_ten){0};
        if (cancel && cancel(ud)) {
            rc = 1;
            goto out;
        }
        if (s < 3) {
            /* nearest 2x folded into the conv's im2col: the upsampled tensor never exists */
            sde_ten y = act_alloc(&R, (size_t)ch * 4 * h * w);
            if (!y.buf) goto out;
            conv3(&R, x, ch, h, w, t->up_w[s], NULL, ch, 1, 0, y);
            act_free(&R, x);
            x = y;
            h *= 2;
            w *= 2;
        }
    }
    {
        sde_ten img = act_alloc(&R, (size_t)3 * h * w);
        if (!img.buf) goto out;
        conv3(&R, x, ch, h, w, t->out_w, t->out_b, 3, 0, 0, img);
        be->read(be, rgb, img, (size_t)3 * h * w);
        act_free(&R, img);
    }
    rc = 0;
out:
    act_free(&R, zin), act_free(&R, x), act_free(&R, t1), act_free(&R, t2);
    act_free(&R, R.scratch);
    return rc;
}
