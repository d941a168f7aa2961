/* vae.c: the KL-f8 autoencoder of Stable Diffusion (LDM ldm.modules.diffusionmodules.model Encoder/Decoder).
 * Activations are allocated per call and freed as soon as the next stage has consumed them; convolutions
 * tile their im2col over output rows, so memory is a few activations plus a bounded scratch. */
#include "vae.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_profile.h"
#include "weights.h"

#define P "first_stage_model."
/* Scratch per convolution: 160 MB lets the Winograd weights of the 512-channel convolutions (36 x 512 x 512
 * floats, 38 MB, at most a third of it) be transformed once per call rather than once per band of rows,
 * and keeps the tiles far from the activations' size. */
#define VAE_CONV_BUDGET ((size_t)160 << 20)
#define MAX_LEVELS 4
#define MAX_RES 4

typedef struct {
    const float *n1_g, *n1_b, *c1_b, *n2_g, *n2_b, *c2_b, *sk_b;
    const sde_weight *c1_w, *c2_w, *sk_w;
    int cin, cout;
} vres;

typedef struct {
    const float *n_g, *n_b, *q_b, *k_b, *v_b, *o_b;
    const sde_weight *q_w, *k_w, *v_w, *o_w;
} vattn;

typedef struct {
    const sde_weight *conv_in_w;
    const float *conv_in_b;
    vres mid1, mid2;
    vattn attn;
    vres lv[MAX_LEVELS][MAX_RES + 1];
    const sde_weight *samp_w[MAX_LEVELS]; /* upsample / downsample conv per level */
    const float *samp_b[MAX_LEVELS];
    const float *norm_g, *norm_b, *conv_out_b;
    const sde_weight *conv_out_w;
    const sde_weight *quant_w; /* post_quant_conv (decoder) / quant_conv (encoder) */
    const float *quant_b;
} vcoder;

struct sde_vae {
    sde_vae_config cfg;
    sde_backend *be;
    vcoder dec, enc;
    int has_enc;
};

/* ---------------------------------------------------------------------------------------------------- */
/* Weights. */

static void load_res(sde_wloader *L, vres *r, const char *pre, int cin, int cout)
{
    r->cin = cin;
    r->cout = cout;
    r->n1_g = sde_wload(L, cin, 0, 0, 0, P "%s.norm1.weight", pre);
    r->n1_b = sde_wload(L, cin, 0, 0, 0, P "%s.norm1.bias", pre);
    r->c1_w = sde_wload_weight(L, cout, cin, 3, 3, P "%s.conv1.weight", pre);
    r->c1_b = sde_wload(L, cout, 0, 0, 0, P "%s.conv1.bias", pre);
    r->n2_g = sde_wload(L, cout, 0, 0, 0, P "%s.norm2.weight", pre);
    r->n2_b = sde_wload(L, cout, 0, 0, 0, P "%s.norm2.bias", pre);
    r->c2_w = sde_wload_weight(L, cout, cout, 3, 3, P "%s.conv2.weight", pre);
    r->c2_b = sde_wload(L, cout, 0, 0, 0, P "%s.conv2.bias", pre);
    if (cin != cout) {
        r->sk_w = sde_wload_weight(L, cout, cin, 0, 0, P "%s.nin_shortcut.weight", pre);
        r->sk_b = sde_wload(L, cout, 0, 0, 0, P "%s.nin_shortcut.bias", pre);
    }
}

static void load_attn(sde_wloader *L, vattn *a, const char *pre, int c)
{
    a->n_g = sde_wload(L, c, 0, 0, 0, P "%s.norm.weight", pre);
    a->n_b = sde_wload(L, c, 0, 0, 0, P "%s.norm.bias", pre);
    a->q_w = sde_wload_weight(L, c, c, 0, 0, P "%s.q.weight", pre);
    a->q_b = sde_wload(L, c, 0, 0, 0, P "%s.q.bias", pre);
    a->k_w = sde_wload_weight(L, c, c, 0, 0, P "%s.k.weight", pre);
    a->k_b = sde_wload(L, c, 0, 0, 0, P "%s.k.bias", pre);
    a->v_w = sde_wload_weight(L, c, c, 0, 0, P "%s.v.weight", pre);
    a->v_b = sde_wload(L, c, 0, 0, 0, P "%s.v.bias", pre);
    a->o_w = sde_wload_weight(L, c, c, 0, 0, P "%s.proj_out.weight", pre);
    a->o_b = sde_wload(L, c, 0, 0, 0, P "%s.proj_out.bias", pre);
}

static int count_blocks(const sde_ckpt *c, const char *coder, const char *lvname, int l)
{
    int n = 0;
    while (n <= MAX_RES && sde_wfind(c, P "%s.%s.%d.block.%d.conv1.weight", coder, lvname, l, n))
        n++;
    return n;
}

/* Infers ch, ch_mult, levels, res blocks and z from the decoder's (and encoder's) tensor shapes. */
static int vae_infer(const sde_ckpt *c, sde_vae_config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    const sde_tensor *t = sde_wfind(c, P "decoder.conv_in.weight");
    if (!t || t->ndim != 4)
        return sde_fail(err, errlen, "%s: no VAE decoder (tensor " P "decoder.conv_in.weight %s)",
                        sde_ckpt_path(c), t ? "is not a conv weight" : "missing");
    cfg->z_channels = (int)t->shape[1];
    int levels = 0;
    while (levels < MAX_LEVELS && sde_wfind(c, P "decoder.up.%d.block.0.conv1.weight", levels))
        levels++;
    if (levels == 0 || sde_wfind(c, P "decoder.up.%d.block.0.conv1.weight", levels))
        return sde_fail(err, errlen, "%s: VAE decoder has %s up levels (" P "decoder.up.N)", sde_ckpt_path(c),
                        levels ? "more than 4" : "no");
    cfg->n_levels = levels;
    int nb = count_blocks(c, "decoder", "up", 0);
    if (nb < 2 || nb > MAX_RES + 1)
        return sde_fail(err, errlen, "%s: VAE decoder up.0 has %d res blocks", sde_ckpt_path(c), nb);
    cfg->num_res_blocks = nb - 1;
    /* ch from the encoder's conv_in when present; a decoder-only file has ch_mult[0] = 1 in every SD VAE */
    const sde_tensor *e = sde_wfind(c, P "encoder.conv_in.weight");
    const sde_tensor *o = sde_wfind(c, P "decoder.conv_out.weight");
    if (!o || o->ndim != 4)
        return sde_fail(err, errlen, "%s: tensor " P "decoder.conv_out.weight missing or not a conv",
                        sde_ckpt_path(c));
    cfg->ch = e && e->ndim == 4 ? (int)e->shape[0] : (int)o->shape[1];
    for (int l = 0; l < levels; l++) {
        t = sde_wfind(c, P "decoder.up.%d.block.0.conv1.weight", l);
        if (t->ndim != 4 || t->shape[0] % cfg->ch)
            return sde_fail(err, errlen,
                            "%s: tensor " P "decoder.up.%d.block.0.conv1.weight: %lld channels are not a "
                            "multiple of ch %d",
                            sde_ckpt_path(c), l, (long long)t->shape[0], cfg->ch);
        cfg->ch_mult[l] = (int)(t->shape[0] / cfg->ch);
    }
    const char *g = sde_ckpt_meta(c, "sdw.groups");
    if (g) {
        char *end;
        long v = strtol(g, &end, 10);
        if (end == g || *end || v < 1 || v > 4096)
            return sde_fail(err, errlen, "%s: metadata sdw.groups is not a positive integer",
                            sde_ckpt_path(c));
        cfg->groups = (int)v;
    } else {
        cfg->groups = cfg->ch < 32 ? cfg->ch : 32;
    }
    for (int l = 0; l < levels; l++)
        if ((cfg->ch * cfg->ch_mult[l]) % cfg->groups)
            return sde_fail(err, errlen, "%s: VAE channels %d do not divide into %d GroupNorm groups",
                            sde_ckpt_path(c), cfg->ch * cfg->ch_mult[l], cfg->groups);
    return 0;
}

int sde_vae_build(sde_ckpt *c, sde_vae **out, char *err, size_t errlen)
{
    return sde_vae_build_on(sde_backend_cpu(), c, out, err, errlen);
}

int sde_vae_build_on(sde_backend *be, sde_ckpt *c, sde_vae **out, char *err, size_t errlen)
{
    *out = NULL;
    sde_vae *v = calloc(1, sizeof *v);
    if (!v) return sde_fail(err, errlen, "out of memory");
    if (vae_infer(c, &v->cfg, err, errlen)) {
        free(v);
        return -1;
    }
    const sde_vae_config *cfg = &v->cfg;
    const int ch = cfg->ch, z = cfg->z_channels, nl = cfg->n_levels, nrb = cfg->num_res_blocks;
    v->be = be;
    sde_wloader L = {.c = c, .err = err, .errlen = errlen, .be = v->be};
    char pre[96];
    /* decoder */
    vcoder *d = &v->dec;
    int bi = ch * cfg->ch_mult[nl - 1];
    d->quant_w = sde_wload_weight(&L, z, z, 0, 0, P "post_quant_conv.weight");
    d->quant_b = sde_wload(&L, z, 0, 0, 0, P "post_quant_conv.bias");
    d->conv_in_w = sde_wload_weight(&L, bi, z, 3, 3, P "decoder.conv_in.weight");
    d->conv_in_b = sde_wload(&L, bi, 0, 0, 0, P "decoder.conv_in.bias");
    load_res(&L, &d->mid1, "decoder.mid.block_1", bi, bi);
    load_attn(&L, &d->attn, "decoder.mid.attn_1", bi);
    load_res(&L, &d->mid2, "decoder.mid.block_2", bi, bi);
    for (int l = nl - 1; l >= 0; l--) {
        int bo = ch * cfg->ch_mult[l];
        for (int r = 0; r <= nrb; r++) {
            snprintf(pre, sizeof pre, "decoder.up.%d.block.%d", l, r);
            load_res(&L, &d->lv[l][r], pre, bi, bo);
            bi = bo;
        }
        if (l > 0) {
            d->samp_w[l] = sde_wload_weight(&L, bi, bi, 3, 3, P "decoder.up.%d.upsample.conv.weight", l);
            d->samp_b[l] = sde_wload(&L, bi, 0, 0, 0, P "decoder.up.%d.upsample.conv.bias", l);
        }
    }
    d->norm_g = sde_wload(&L, bi, 0, 0, 0, P "decoder.norm_out.weight");
    d->norm_b = sde_wload(&L, bi, 0, 0, 0, P "decoder.norm_out.bias");
    d->conv_out_w = sde_wload_weight(&L, 3, bi, 3, 3, P "decoder.conv_out.weight");
    d->conv_out_b = sde_wload(&L, 3, 0, 0, 0, P "decoder.conv_out.bias");
    /* encoder, when the file has one */
    if (!L.failed && sde_ckpt_find(c, P "encoder.conv_in.weight")) {
        vcoder *e = &v->enc;
        v->has_enc = 1;
        e->conv_in_w = sde_wload_weight(&L, ch, 3, 3, 3, P "encoder.conv_in.weight");
        e->conv_in_b = sde_wload(&L, ch, 0, 0, 0, P "encoder.conv_in.bias");
        bi = ch;
        for (int l = 0; l < nl; l++) {
            int bo = ch * cfg->ch_mult[l];
            for (int r = 0; r < nrb; r++) {
                snprintf(pre, sizeof pre, "encoder.down.%d.block.%d", l, r);
                load_res(&L, &e->lv[l][r], pre, bi, bo);
                bi = bo;
            }
            if (l < nl - 1) {
                e->samp_w[l] =
                    sde_wload_weight(&L, bi, bi, 3, 3, P "encoder.down.%d.downsample.conv.weight", l);
                e->samp_b[l] = sde_wload(&L, bi, 0, 0, 0, P "encoder.down.%d.downsample.conv.bias", l);
            }
        }
        load_res(&L, &e->mid1, "encoder.mid.block_1", bi, bi);
        load_attn(&L, &e->attn, "encoder.mid.attn_1", bi);
        load_res(&L, &e->mid2, "encoder.mid.block_2", bi, bi);
        e->norm_g = sde_wload(&L, bi, 0, 0, 0, P "encoder.norm_out.weight");
        e->norm_b = sde_wload(&L, bi, 0, 0, 0, P "encoder.norm_out.bias");
        e->conv_out_w = sde_wload_weight(&L, 2 * z, bi, 3, 3, P "encoder.conv_out.weight");
        e->conv_out_b = sde_wload(&L, 2 * z, 0, 0, 0, P "encoder.conv_out.bias");
        e->quant_w = sde_wload_weight(&L, 2 * z, 2 * z, 0, 0, P "quant_conv.weight");
        e->quant_b = sde_wload(&L, 2 * z, 0, 0, 0, P "quant_conv.bias");
    }
    if (L.failed) {
        free(v);
        return -1;
    }
    *out = v;
    return 0;
}

void sde_vae_free(sde_vae *v)
{
    free(v);
}

const sde_vae_config *sde_vae_get_config(const sde_vae *v)
{
    return &v->cfg;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Running. */

#define VRUN_LIVE 32
#define VRUN_KEPT 4

/* Per-call working state: the scratch shared by every convolution and the GroupNorm coefficients. */
typedef struct {
    const sde_vae *v;
    sde_backend *be;
    sde_ten scratch;
    size_t scratch_bytes;
    sde_ten gsc, gsh; /* [max channels] */
    char *err;
    size_t errlen;
    int oom;
    /* activations in use (buffer, floats), and the last ones released, kept for an allocation of the same
     * size: the levels allocate the same sizes over and over, and a fresh buffer costs page faults */
    struct {
        sde_buf *buf;
        size_t n;
    } live[VRUN_LIVE], kept[VRUN_KEPT];
    int n_live, n_kept;
} vrun;

/* Releases the kept buffers. */
static void act_flush(vrun *R)
{
    for (int i = 0; i < R->n_kept; i++)
        R->be->free(R->be, R->kept[i].buf);
    R->n_kept = 0;
}

/* An activation of n floats in its own backend buffer, so each is released as soon as it is consumed. A
 * released buffer of exactly n floats is taken again; otherwise the kept ones are released first, so the
 * peak is what it would be without keeping any. */
static sde_ten act_alloc(vrun *R, size_t n)
{
    char why[128];
    sde_ten t = {NULL, 0};
    for (int i = 0; i < R->n_kept; i++)
        if (R->kept[i].n == n) {
            t.buf = R->kept[i].buf;
            R->kept[i] = R->kept[--R->n_kept];
            break;
        }
    if (!t.buf) {
        act_flush(R);
        t.buf = R->be->alloc(R->be, n * sizeof(float), why, sizeof why);
    }
    if (!t.buf && !R->oom) {
        R->oom = 1;
        sde_fail(R->err, R->errlen, "VAE: out of memory allocating %.0f MB", n * 4.0 / 1048576.0);
    }
    if (t.buf && R->n_live < VRUN_LIVE) {
        R->live[R->n_live].buf = t.buf;
        R->live[R->n_live++].n = n;
    }
    return t;
}

static void act_free(vrun *R, sde_ten t)
{
    if (!t.buf) return;
    for (int i = 0; i < R->n_live; i++)
        if (R->live[i].buf == t.buf) {
            if (R->n_kept == VRUN_KEPT) { /* the oldest kept one goes */
                R->be->free(R->be, R->kept[0].buf);
                memmove(R->kept, R->kept + 1, sizeof R->kept[0] * (VRUN_KEPT - 1));
                R->n_kept--;
            }
            R->kept[R->n_kept++] = R->live[i];
            R->live[i] = R->live[--R->n_live];
            return;
        }
    R->be->free(R->be, t.buf); /* not tracked (the table was full): released at once */
}

/* A single-image conv descriptor: x [cin][h][w] -> y [cout][oh][ow]. */
static sde_be_conv conv_desc(sde_ten x, int cin, int h, int w, const sde_weight *wt, const float *b, int cout,
                             int k, int stride, int pad, sde_ten y)
{
    sde_be_conv d = {.x = x,
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
                     .y = y};
    int oh = sde_be_conv_out_h(&d), ow = sde_be_conv_out_w(&d);
    d.y_cstride = (size_t)oh * ow;
    d.y_bstride = (size_t)cout * oh * ow;
    return d;
}

static void run_conv(vrun *R, const sde_be_conv *d)
{
    R->be->conv(R->be, d, R->scratch, R->scratch_bytes);
}

static void set_gn(vrun *R, sde_be_conv *d, sde_ten x, int c, int hw, const float *g, const float *b)
{
    R->be->gn_coeffs(R->be, x, c, 1, (size_t)hw, R->v->cfg.groups, g, b, 1e-6f, R->gsc, R->gsh);
    d->in_scale = R->gsc;
    d->in_shift = R->gsh;
    d->in_silu = 1;
}

/* ResnetBlock: returns x + conv2(GN+SiLU(conv1(GN+SiLU(x)))) (x through nin_shortcut when the width
 * changes). Consumes x: the result reuses x's buffer when it is not wider, else x is freed. An absent
 * result means out of memory. */
static sde_ten res_run(vrun *R, const vres *r, sde_ten x, int h, int w)
{
    const int hw = h * w;
    sde_ten h1 = act_alloc(R, (size_t)r->cout * hw);
    if (!h1.buf) {
        act_free(R, x);
        return h1;
    }
    sde_be_conv d = conv_desc(x, r->cin, h, w, r->c1_w, r->c1_b, r->cout, 3, 1, 1, h1);
    set_gn(R, &d, x, r->cin, hw, r->n1_g, r->n1_b);
    run_conv(R, &d);
    sde_ten out = x;
    if (r->sk_w) {
        if (r->cout > r->cin) {
            out = act_alloc(R, (size_t)r->cout * hw);
            if (!out.buf) {
                act_free(R, x), act_free(R, h1);
                return out;
            }
        }
        /* 1x1 shortcut; in place when narrowing (every column is read before it is overwritten) */
        sde_be_conv s = conv_desc(x, r->cin, h, w, r->sk_w, r->sk_b, r->cout, 1, 1, 0, out);
        run_conv(R, &s);
        if (out.buf != x.buf) act_free(R, x);
    }
    d = conv_desc(h1, r->cout, h, w, r->c2_w, r->c2_b, r->cout, 3, 1, 1, out);
    set_gn(R, &d, h1, r->cout, hw, r->n2_g, r->n2_b);
    d.accumulate = 1;
    run_conv(R, &d);
    act_free(R, h1);
    return out;
}

/* AttnBlock: x += proj_out(softmax(q k^T / sqrt(C)) v) with q, k, v 1x1 convs of GroupNorm(x); one head.
 * Computed in token layout [hw][C] so the attention is two GEMMs per query block. */
static int attn_run(vrun *R, const vattn *a, sde_ten x, int c, int h, int w)
{
    sde_backend *be = R->be;
    const int hw = h * w;
    sde_ten xn = act_alloc(R, (size_t)c * hw), q = act_alloc(R, (size_t)c * hw),
            k = act_alloc(R, (size_t)c * hw);
    sde_ten vv = act_alloc(R, (size_t)c * hw),
            sc = act_alloc(R, be->attention_scratch(be, hw, hw, c) / sizeof(float));
    if (!R->oom) {
        be->gn_coeffs(be, x, c, 1, (size_t)hw, R->v->cfg.groups, a->n_g, a->n_b, 1e-6f, R->gsc, R->gsh);
        be->gn_apply(be, x, c, 1, (size_t)hw, R->gsc, R->gsh, 0, xn);
        /* tokens [hw][C] = xn^T W^T + b, for q, k and v */
        be->linear(be, xn, hw, c, a->q_w, a->q_b, c, q, SDE_LIN_X_CM);
        be->linear(be, xn, hw, c, a->k_w, a->k_b, c, k, SDE_LIN_X_CM);
        be->linear(be, xn, hw, c, a->v_w, a->v_b, c, vv, SDE_LIN_X_CM);
        be->attention(be, q, c, k, c, vv, c, hw, hw, 1, c, 0, xn, c,
                      sc); /* xn now holds the [hw][C] output */
        be->linear(be, xn, hw, c, a->o_w, a->o_b, c, x, SDE_LIN_Y_CM | SDE_LIN_ACC);
    }
    act_free(R, xn), act_free(R, q), act_free(R, k), act_free(R, vv), act_free(R, sc);
    return R->oom ? -1 : 0;
}

/* Scratch for every convolution of a run at full resolution H x W: what the widest conv at that size plans
 * within the tile budget, or one output row of it if that is larger (very wide images). Pages are only
 * touched as far as tiles need. */
static size_t vae_scratch_bytes(sde_backend *be, int H, int W, int cmax)
{
    const sde_ten x = {SDE_BUF_SIZING, 0}, y = {SDE_BUF_SIZING, 1};
    sde_be_conv d = conv_desc(x, cmax, H, W, NULL, NULL, cmax, 3, 1, 1, y);
    d.in_scale = d.in_shift = x; /* the fused-GroupNorm band counts too (sizing only) */
    size_t row = be->conv_scratch(be, &d, 1);
    /* what that conv takes within the budget: small images do not reserve the whole budget */
    size_t fit = be->conv_scratch(be, &d, VAE_CONV_BUDGET);
    fit = fit < VAE_CONV_BUDGET ? fit : VAE_CONV_BUDGET;
    return row > fit ? row : fit;
}

static void vrun_free(vrun *R)
{
    act_free(R, R->scratch);
    act_free(R, R->gsc);
    act_free(R, R->gsh);
    act_flush(R);
}

static int vrun_init(vrun *R, const sde_vae *v, int h, int w, char *err, size_t errlen)
{
    memset(R, 0, sizeof *R);
    R->v = v;
    R->be = v->be;
    R->err = err;
    R->errlen = errlen;
    int cmax = 0;
    for (int l = 0; l < v->cfg.n_levels; l++)
        cmax = 2 * v->cfg.ch * v->cfg.ch_mult[l] > cmax ? 2 * v->cfg.ch * v->cfg.ch_mult[l] : cmax;
    R->scratch_bytes = vae_scratch_bytes(R->be, h, w, cmax);
    R->scratch = act_alloc(R, (R->scratch_bytes + sizeof(float) - 1) / sizeof(float));
    R->gsc = act_alloc(R, (size_t)cmax);
    R->gsh = act_alloc(R, (size_t)cmax);
    if (R->oom) {
        vrun_free(R);
        return sde_fail(err, errlen, "VAE: out of memory allocating %.0f MB of scratch",
                        R->scratch_bytes / 1048576.0);
    }
    return 0;
}

int sde_vae_decode(sde_vae *v, const float *z, int h, int w, float *rgb, int (*cancel)(void *), void *ud,
                   char *err, size_t errlen)
{
    const sde_vae_config *cfg = &v->cfg;
    if (h < 1 || w < 1 || h > 1024 || w > 1024)
        return sde_fail(err, errlen, "VAE: bad latent size %dx%d", h, w);
    vrun R;
    if (vrun_init(&R, v, 8 * h, 8 * w, err, errlen)) return -1;
    sde_backend *be = R.be;
    sde_prof_section(be, "vae.dec.in", -1);
    const vcoder *d = &v->dec;
    const int zc = cfg->z_channels;
    int rc = -1, c = cfg->ch * cfg->ch_mult[cfg->n_levels - 1];
    /* post_quant_conv (1x1) then conv_in */
    sde_ten zin = act_alloc(&R, (size_t)zc * h * w), zq = act_alloc(&R, (size_t)zc * h * w),
            x = act_alloc(&R, (size_t)c * h * w);
    if (R.oom) {
        act_free(&R, zin), act_free(&R, zq), act_free(&R, x);
        goto out;
    }
    be->write(be, zin, z, (size_t)zc * h * w);
    sde_be_conv cd = conv_desc(zin, zc, h, w, d->quant_w, d->quant_b, zc, 1, 1, 0, zq);
    run_conv(&R, &cd);
    cd = conv_desc(zq, zc, h, w, d->conv_in_w, d->conv_in_b, c, 3, 1, 1, x);
    run_conv(&R, &cd);
    act_free(&R, zin), act_free(&R, zq);
#define CHECK_CANCEL()                                                                                       \
    do {                                                                                                     \
        if (cancel && cancel(ud)) {                                                                          \
            act_free(&R, x);                                                                                 \
            rc = 1;                                                                                          \
            goto out;                                                                                        \
        }                                                                                                    \
    } while (0)
    sde_prof_section(be, "vae.dec.mid", -1);
    if (!(x = res_run(&R, &d->mid1, x, h, w)).buf) goto out;
    CHECK_CANCEL();
    if (attn_run(&R, &d->attn, x, c, h, w)) {
        act_free(&R, x);
        goto out;
    }
    CHECK_CANCEL();
    if (!(x = res_run(&R, &d->mid2, x, h, w)).buf) goto out;
    for (int l = cfg->n_levels - 1; l >= 0; l--) {
        sde_prof_section(be, "vae.dec.up", l);
        for (int r = 0; r <= cfg->num_res_blocks; r++) {
            CHECK_CANCEL();
            if (!(x = res_run(&R, &d->lv[l][r], x, h, w)).buf) goto out;
            c = d->lv[l][r].cout;
        }
        if (l > 0) {
            /* nearest 2x folded into the conv's im2col: the upsampled tensor never exists */
            CHECK_CANCEL();
            sde_ten y = act_alloc(&R, (size_t)c * 4 * h * w);
            if (!y.buf) {
                act_free(&R, x);
                goto out;
            }
            cd = conv_desc(x, c, h, w, d->samp_w[l], d->samp_b[l], c, 3, 1, 1, y);
            cd.upsample = 1;
            cd.y_cstride = (size_t)4 * h * w;
            cd.y_bstride = (size_t)c * 4 * h * w;
            run_conv(&R, &cd);
            act_free(&R, x);
            x = y;
            h *= 2;
            w *= 2;
        }
    }
    sde_prof_section(be, "vae.dec.out", -1);
    CHECK_CANCEL();
    sde_ten img = act_alloc(&R, (size_t)3 * h * w);
    if (!img.buf) {
        act_free(&R, x);
        goto out;
    }
    cd = conv_desc(x, c, h, w, d->conv_out_w, d->conv_out_b, 3, 3, 1, 1, img);
    set_gn(&R, &cd, x, c, h * w, d->norm_g, d->norm_b);
    run_conv(&R, &cd);
    act_free(&R, x);
    be->read(be, rgb, img, (size_t)3 * h * w);
    act_free(&R, img);
    rc = 0;
out:
    vrun_free(&R);
    sde_prof_section(be, NULL, 0);
    return rc;
#undef CHECK_CANCEL
}

/* out gets the first nch of the 2*z quant_conv channels: z for the mean alone, 2*z for mean ‖ logvar. */
static int vae_encode_ch(sde_vae *v, const float *rgb, int H, int W, float *mean, int nch, char *err,
                         size_t errlen)
{
    const sde_vae_config *cfg = &v->cfg;
    if (!v->has_enc)
        return sde_fail(err, errlen, "VAE: the checkpoint has no encoder (first_stage_model.encoder.*)");
    const int f = 1 << (cfg->n_levels - 1);
    if (H < f || W < f || H % 8 || W % 8 || H > 8192 || W > 8192)
        return sde_fail(err, errlen, "VAE: image size %dx%d is not a positive multiple of 8", W, H);
    vrun R;
    if (vrun_init(&R, v, H, W, err, errlen)) return -1;
    sde_backend *be = R.be;
    sde_prof_section(be, "vae.enc.in", -1);
    const vcoder *e = &v->enc;
    int rc = -1, c = cfg->ch, h = H, w = W;
    sde_ten img = act_alloc(&R, (size_t)3 * h * w), x = act_alloc(&R, (size_t)c * h * w);
    if (R.oom) {
        act_free(&R, img), act_free(&R, x);
        goto out;
    }
    be->write(be, img, rgb, (size_t)3 * h * w);
    sde_be_conv cd = conv_desc(img, 3, h, w, e->conv_in_w, e->conv_in_b, c, 3, 1, 1, x);
    run_conv(&R, &cd);
    act_free(&R, img);
    for (int l = 0; l < cfg->n_levels; l++) {
        sde_prof_section(be, "vae.enc.down", l);
        for (int r = 0; r < cfg->num_res_blocks; r++) {
            if (!(x = res_run(&R, &e->lv[l][r], x, h, w)).buf) goto out;
            c = e->lv[l][r].cout;
        }
        if (l < cfg->n_levels - 1) {
            /* pad (0,1,0,1) then 3x3 stride 2, as LDM's Downsample */
            sde_be_conv dd = conv_desc(x, c, h, w, e->samp_w[l], e->samp_b[l], c, 3, 2, 0, (sde_ten){0});
            dd.pad_b = dd.pad_r = 1;
            int oh = sde_be_conv_out_h(&dd), ow = sde_be_conv_out_w(&dd);
            sde_ten y = act_alloc(&R, (size_t)c * oh * ow);
            if (!y.buf) {
                act_free(&R, x);
                goto out;
            }
            dd.y = y;
            dd.y_cstride = (size_t)oh * ow;
            dd.y_bstride = (size_t)c * oh * ow;
            run_conv(&R, &dd);
            act_free(&R, x);
            x = y;
            h = oh;
            w = ow;
        }
    }
    sde_prof_section(be, "vae.enc.mid", -1);
    if (!(x = res_run(&R, &e->mid1, x, h, w)).buf) goto out;
    if (attn_run(&R, &e->attn, x, c, h, w)) {
        act_free(&R, x);
        goto out;
    }
    if (!(x = res_run(&R, &e->mid2, x, h, w)).buf) goto out;
    sde_prof_section(be, "vae.enc.out", -1);
    const int zc = cfg->z_channels;
    sde_ten moments = act_alloc(&R, (size_t)2 * zc * h * w), q = act_alloc(&R, (size_t)2 * zc * h * w);
    if (R.oom) {
        act_free(&R, x), act_free(&R, moments), act_free(&R, q);
        goto out;
    }
    cd = conv_desc(x, c, h, w, e->conv_out_w, e->conv_out_b, 2 * zc, 3, 1, 1, moments);
    set_gn(&R, &cd, x, c, h * w, e->norm_g, e->norm_b);
    run_conv(&R, &cd);
    act_free(&R, x);
    cd = conv_desc(moments, 2 * zc, h, w, e->quant_w, e->quant_b, 2 * zc, 1, 1, 0, q);
    run_conv(&R, &cd);
    be->read(be, mean, q, (size_t)nch * h * w); /* the first z channels are the mean, the rest log-variance */
    act_free(&R, moments), act_free(&R, q);
    rc = 0;
out:
    vrun_free(&R);
    sde_prof_section(be, NULL, 0);
    return rc;
}

int sde_vae_encode(sde_vae *v, const float *rgb, int H, int W, float *mean, char *err, size_t errlen)
{
    return vae_encode_ch(v, rgb, H, W, mean, v->cfg.z_channels, err, errlen);
}

int sde_vae_encode_moments(sde_vae *v, const float *rgb, int H, int W, float *moments, char *err,
                           size_t errlen)
{
    return vae_encode_ch(v, rgb, H, W, moments, 2 * v->cfg.z_channels, err, errlen);
}

void sde_vae_use_backend(sde_vae *v, sde_backend *be)
{
    v->be = be;
}
