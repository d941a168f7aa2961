/* unet.c: the LDM openaimodel UNet (SD 1.x / 2.x / tiny) as a flat list of blocks over activations in a
 * batch-interleaved [C][B*H*W] layout, so every convolution and projection is one GEMM over the batch. */
#include "unet.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "weights.h"

#define P "model.diffusion_model."
#define MAX_BLOCKS 64
#define MAX_SKIPS 32
/* Scratch a convolution may use for its im2col columns: enough for a whole 512x512 level-0 conv of one
 * image (960 input channels x 9 x 4096 columns = 141 MB), tiled above that. */
#define CONV_BUDGET ((size_t)160 << 20)
/* Tokens per feed-forward chunk: keeps the [rows][2*inner] GEGLU input at ~20 MB instead of ~170 MB. */
#define FF_ROWS 2048

typedef struct {
    const float *gn1_g, *gn1_b, *conv1_w, *conv1_b, *emb_w, *emb_b;
    const float *gn2_g, *gn2_b, *conv2_w, *conv2_b, *skip_w, *skip_b;
} res_w;

typedef struct {
    const float *ln1_g, *ln1_b, *q1, *k1, *v1, *o1_w, *o1_b;
    const float *ln2_g, *ln2_b, *q2, *k2, *v2, *o2_w, *o2_b;
    const float *ln3_g, *ln3_b, *ff1_w, *ff1_b, *ff2_w, *ff2_b;
} tblock_w;

typedef struct {
    const float *gn_g, *gn_b, *pin_w, *pin_b, *pout_w, *pout_b;
    tblock_w *tb; /* transformer_depth blocks */
} st_w;

typedef enum { BLK_RES, BLK_ST, BLK_DOWN, BLK_UP } blk_kind;

/* One step of the network. Down-path blocks that end a group push their output as a skip; the first
 * block of an up-path group concatenates the newest skip to its input first. */
typedef struct {
    blk_kind kind;
    int level;      /* resolution: latent size / 2^level (of the input) */
    int cin, cout;  /* cin includes a concatenated skip */
    int push, pop;
    int heads, hd;  /* BLK_ST */
    res_w r;
    st_w s;
    const float *cw, *cb; /* BLK_DOWN / BLK_UP conv */
} unet_block;

struct sde_unet {
    sde_unet_config cfg;
    int temb;      /* time embedding width: 4 * model_channels */
    int ff_inner;  /* GEGLU inner width per channel count: ff_mult (4) */
    const float *te0_w, *te0_b, *te2_w, *te2_b, *in_w, *in_b, *out_gn_g, *out_gn_b, *out_w, *out_b;
    unet_block blk[MAX_BLOCKS];
    int nblk;
    int skip_ch[MAX_SKIPS], skip_level[MAX_SKIPS], nskip;

    /* activations (sde_unet_reserve) */
    int rb, rh, rw, rctx; /* reserved batch, latent size, context length */
    int force_resize;     /* every upsample through the explicit resize (sde_unet_force_resize) */
    float *arena;
    float *skip[MAX_SKIPS];
    float *bufA, *bufB, *h1;             /* [C][N] activations */
    float *tx, *tt, *tq, *tk, *tv;        /* transformer [N][C] buffers */
    float *ck, *cv;                       /* cross-attention keys/values [B*n_ctx][C] */
    float *ffh, *ffg;                     /* feed-forward chunk buffers */
    float *attn_scr, *conv_scr;
    size_t conv_scr_bytes;
    float *gsc, *gsh;                     /* GroupNorm coefficients [B][Cmax] */
    float *emb, *emb_silu, *embp, *tsin; /* time embedding [B][temb], per-block projection [B][Cmax] */
};

/* ---------------------------------------------------------------------------------------------------- */
/* Config inference. */

/* Parses a positive decimal metadata value; 0 when absent, -1 when malformed. */
static int meta_int(const sde_ckpt *c, const char *key)
{
    const char *s = sde_ckpt_meta(c, key);
    if (!s)
        return 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v <= 0 || v > 65536)
        return -1;
    return (int)v;
}

int sde_unet_config_infer(const sde_ckpt *c, sde_unet_config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    const sde_tensor *t = sde_wfind(c, P "input_blocks.0.0.weight");
    if (!t || t->ndim != 4)
        return sde_fail(err, errlen, "%s: no UNet (tensor " P "input_blocks.0.0.weight %s)",
                    c ? sde_ckpt_path(c) : "?", t ? "is not a 4-d conv weight" : "missing");
    cfg->model_channels = (int)t->shape[0];
    cfg->in_channels = (int)t->shape[1];
    t = sde_wfind(c, P "out.2.weight");
    if (!t || t->ndim != 4)
        return sde_fail(err, errlen, "%s: tensor " P "out.2.weight missing or not a conv weight", sde_ckpt_path(c));
    cfg->out_channels = (int)t->shape[0];
    /* res blocks per level: input_blocks 1..nrb are level 0's, nrb+1 is its downsample (if any) */
    int nrb = 0;
    while (nrb < 16 && sde_wfind(c, P "input_blocks.%d.0.in_layers.2.weight", nrb + 1))
        nrb++;
    if (nrb == 0)
        return sde_fail(err, errlen, "%s: tensor " P "input_blocks.1.0.in_layers.2.weight missing", sde_ckpt_path(c));
    cfg->num_res_blocks = nrb;
    int levels = 1;
    while (levels < 4 && sde_wfind(c, P "input_blocks.%d.0.op.weight", levels * (nrb + 1)))
        levels++;
    cfg->n_levels = levels;
    cfg->transformer_depth = 0;
    for (int l = 0; l < levels; l++) {
        int idx = 1 + l * (nrb + 1);
        t = sde_wfind(c, P "input_blocks.%d.0.out_layers.3.weight", idx);
        if (!t || t->ndim < 1 || t->shape[0] % cfg->model_channels)
            return sde_fail(err, errlen, "%s: tensor " P "input_blocks.%d.0.out_layers.3.weight missing or not a multiple "
                        "of model_channels %d", sde_ckpt_path(c), idx, cfg->model_channels);
        cfg->channel_mult[l] = (int)(t->shape[0] / cfg->model_channels);
        cfg->attn_levels[l] = sde_wfind(c, P "input_blocks.%d.1.transformer_blocks.0.attn1.to_q.weight", idx) != NULL;
    }
    /* context width, projection kind and depth from the middle block's transformer (always present in
     * LDM configs), else from the first level that has one */
    char st[64] = "middle_block.1";
    if (!sde_wfind(c, P "%s.transformer_blocks.0.attn2.to_k.weight", st))
        for (int l = 0; l < levels; l++)
            if (cfg->attn_levels[l]) {
                snprintf(st, sizeof st, "input_blocks.%d.1", 1 + l * (nrb + 1));
                break;
            }
    t = sde_wfind(c, P "%s.transformer_blocks.0.attn2.to_k.weight", st);
    if (t && t->ndim == 2) {
        cfg->context_dim = (int)t->shape[1];
        const sde_tensor *pin = sde_wfind(c, P "%s.proj_in.weight", st);
        cfg->linear_proj = pin && pin->ndim == 2;
        while (cfg->transformer_depth < 16 &&
               sde_wfind(c, P "%s.transformer_blocks.%d.attn1.to_q.weight", st, cfg->transformer_depth))
            cfg->transformer_depth++;
    }
    int nhc = meta_int(c, "sdw.unet.num_head_channels");
    if (nhc < 0)
        return sde_fail(err, errlen, "%s: metadata sdw.unet.num_head_channels is not a positive integer",
                    sde_ckpt_path(c));
    if (nhc > 0) {
        cfg->num_heads = -1;
        cfg->head_dim = nhc;
    } else if (cfg->context_dim == 768) {
        cfg->num_heads = 8;
        cfg->head_dim = -1;
    } else {
        cfg->num_heads = -1;
        cfg->head_dim = 64;
    }
    int groups = meta_int(c, "sdw.groups");
    if (groups < 0)
        return sde_fail(err, errlen, "%s: metadata sdw.groups is not a positive integer", sde_ckpt_path(c));
    cfg->groups = groups ? groups : (cfg->model_channels < 32 ? cfg->model_channels : 32);
    return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Weights. */

static void load_res(sde_wloader *L, res_w *r, const char *pre, int cin, int cout, int temb)
{
    r->gn1_g = sde_wload(L, cin, 0, 0, 0, P "%s.in_layers.0.weight", pre);
    r->gn1_b = sde_wload(L, cin, 0, 0, 0, P "%s.in_layers.0.bias", pre);
    r->conv1_w = sde_wload(L, cout, cin, 3, 3, P "%s.in_layers.2.weight", pre);
    r->conv1_b = sde_wload(L, cout, 0, 0, 0, P "%s.in_layers.2.bias", pre);
    r->emb_w = sde_wload(L, cout, temb, 0, 0, P "%s.emb_layers.1.weight", pre);
    r->emb_b = sde_wload(L, cout, 0, 0, 0, P "%s.emb_layers.1.bias", pre);
    r->gn2_g = sde_wload(L, cout, 0, 0, 0, P "%s.out_layers.0.weight", pre);
    r->gn2_b = sde_wload(L, cout, 0, 0, 0, P "%s.out_layers.0.bias", pre);
    r->conv2_w = sde_wload(L, cout, cout, 3, 3, P "%s.out_layers.3.weight", pre);
    r->conv2_b = sde_wload(L, cout, 0, 0, 0, P "%s.out_layers.3.bias", pre);
    if (cin != cout) {
        r->skip_w = sde_wload(L, cout, cin, 0, 0, P "%s.skip_connection.weight", pre);
        r->skip_b = sde_wload(L, cout, 0, 0, 0, P "%s.skip_connection.bias", pre);
    }
}

static void load_st(sde_wloader *L, st_w *s, const char *pre, int ch, const sde_unet_config *cfg, int inner)
{
    s->gn_g = sde_wload(L, ch, 0, 0, 0, P "%s.norm.weight", pre);
    s->gn_b = sde_wload(L, ch, 0, 0, 0, P "%s.norm.bias", pre);
    /* [C][C] matches both a Linear and a 1x1 conv ([C][C][1][1]) */
    s->pin_w = sde_wload(L, ch, ch, 0, 0, P "%s.proj_in.weight", pre);
    s->pin_b = sde_wload(L, ch, 0, 0, 0, P "%s.proj_in.bias", pre);
    s->pout_w = sde_wload(L, ch, ch, 0, 0, P "%s.proj_out.weight", pre);
    s->pout_b = sde_wload(L, ch, 0, 0, 0, P "%s.proj_out.bias", pre);
    if (L->failed)
        return;
    s->tb = calloc((size_t)cfg->transformer_depth, sizeof *s->tb);
    if (!s->tb) {
        L->failed = 1;
        sde_fail(L->err, L->errlen, "out of memory");
        return;
    }
    const int ctx = cfg->context_dim;
    for (int d = 0; d < cfg->transformer_depth; d++) {
        tblock_w *b = &s->tb[d];
        char q[128];
        snprintf(q, sizeof q, "%s.transformer_blocks.%d", pre, d);
        b->ln1_g = sde_wload(L, ch, 0, 0, 0, P "%s.norm1.weight", q);
        b->ln1_b = sde_wload(L, ch, 0, 0, 0, P "%s.norm1.bias", q);
        b->q1 = sde_wload(L, ch, ch, 0, 0, P "%s.attn1.to_q.weight", q);
        b->k1 = sde_wload(L, ch, ch, 0, 0, P "%s.attn1.to_k.weight", q);
        b->v1 = sde_wload(L, ch, ch, 0, 0, P "%s.attn1.to_v.weight", q);
        b->o1_w = sde_wload(L, ch, ch, 0, 0, P "%s.attn1.to_out.0.weight", q);
        b->o1_b = sde_wload(L, ch, 0, 0, 0, P "%s.attn1.to_out.0.bias", q);
        b->ln2_g = sde_wload(L, ch, 0, 0, 0, P "%s.norm2.weight", q);
        b->ln2_b = sde_wload(L, ch, 0, 0, 0, P "%s.norm2.bias", q);
        b->q2 = sde_wload(L, ch, ch, 0, 0, P "%s.attn2.to_q.weight", q);
        b->k2 = sde_wload(L, ch, ctx, 0, 0, P "%s.attn2.to_k.weight", q);
        b->v2 = sde_wload(L, ch, ctx, 0, 0, P "%s.attn2.to_v.weight", q);
        b->o2_w = sde_wload(L, ch, ch, 0, 0, P "%s.attn2.to_out.0.weight", q);
        b->o2_b = sde_wload(L, ch, 0, 0, 0, P "%s.attn2.to_out.0.bias", q);
        b->ln3_g = sde_wload(L, ch, 0, 0, 0, P "%s.norm3.weight", q);
        b->ln3_b = sde_wload(L, ch, 0, 0, 0, P "%s.norm3.bias", q);
        b->ff1_w = sde_wload(L, 2 * inner, ch, 0, 0, P "%s.ff.net.0.proj.weight", q);
        b->ff1_b = sde_wload(L, 2 * inner, 0, 0, 0, P "%s.ff.net.0.proj.bias", q);
        b->ff2_w = sde_wload(L, ch, inner, 0, 0, P "%s.ff.net.2.weight", q);
        b->ff2_b = sde_wload(L, ch, 0, 0, 0, P "%s.ff.net.2.bias", q);
    }
}

void sde_unet_free(sde_unet *u)
{
    if (!u)
        return;
    for (int i = 0; i < u->nblk; i++)
        free(u->blk[i].s.tb);
    free(u->arena);
    free(u);
}

static unet_block *add_block(sde_unet *u, blk_kind kind, int level, int cin, int cout)
{
    if (u->nblk == MAX_BLOCKS)
        return NULL;
    unet_block *b = &u->blk[u->nblk++];
    memset(b, 0, sizeof *b);
    b->kind = kind;
    b->level = level;
    b->cin = cin;
    b->cout = cout;
    return b;
}

static int add_st(sde_unet *u, sde_wloader *L, const char *pre, int level, int ch)
{
    const sde_unet_config *cfg = &u->cfg;
    unet_block *b = add_block(u, BLK_ST, level, ch, ch);
    if (!b)
        return sde_fail(L->err, L->errlen, "UNet has too many blocks");
    b->hd = cfg->head_dim > 0 ? cfg->head_dim : ch / cfg->num_heads;
    b->heads = cfg->head_dim > 0 ? ch / cfg->head_dim : cfg->num_heads;
    if (b->hd <= 0 || b->heads * b->hd != ch)
        return sde_fail(L->err, L->errlen, "%s: " P "%s: %d channels do not split into attention heads (head_dim %d, "
                    "heads %d)", sde_ckpt_path(L->c), pre, ch, cfg->head_dim, cfg->num_heads);
    load_st(L, &b->s, pre, ch, cfg, u->ff_inner * ch);
    return L->failed ? -1 : 0;
}

int sde_unet_build(sde_ckpt *c, const sde_unet_config *cfg, sde_unet **out, char *err, size_t errlen)
{
    *out = NULL;
    if (cfg->n_levels < 1 || cfg->n_levels > 4 || cfg->num_res_blocks < 1 || cfg->model_channels < 1 ||
        cfg->groups < 1 || cfg->in_channels < 1 || cfg->out_channels < 1)
        return sde_fail(err, errlen, "%s: invalid UNet config", sde_ckpt_path(c));
    sde_unet *u = calloc(1, sizeof *u);
    if (!u)
        return sde_fail(err, errlen, "out of memory");
    u->cfg = *cfg;
    u->temb = 4 * cfg->model_channels;
    u->ff_inner = 4;
    sde_wloader L = {.c = c, .err = err, .errlen = errlen};
    const int mc = cfg->model_channels, nrb = cfg->num_res_blocks, temb = u->temb;
    char pre[96];
    int any_attn = 0;
    for (int l = 0; l < cfg->n_levels; l++)
        any_attn |= cfg->attn_levels[l];
    const sde_tensor *mid_st = sde_ckpt_find(c, P "middle_block.1.norm.weight");
    if ((any_attn || mid_st) && (cfg->context_dim < 1 || cfg->transformer_depth < 1)) {
        sde_unet_free(u);
        return sde_fail(err, errlen, "%s: invalid UNet config (attention without a context width)", sde_ckpt_path(c));
    }
    /* every GroupNorm'd width must split into the groups */
    for (int l = 0; l < cfg->n_levels; l++)
        if ((mc * cfg->channel_mult[l]) % cfg->groups || cfg->channel_mult[l] < 1) {
            sde_unet_free(u);
            return sde_fail(err, errlen, "%s: UNet channels %d do not divide into %d GroupNorm groups",
                        sde_ckpt_path(c), mc * cfg->channel_mult[l], cfg->groups);
        }
    u->te0_w = sde_wload(&L, temb, mc, 0, 0, P "time_embed.0.weight");
    u->te0_b = sde_wload(&L, temb, 0, 0, 0, P "time_embed.0.bias");
    u->te2_w = sde_wload(&L, temb, temb, 0, 0, P "time_embed.2.weight");
    u->te2_b = sde_wload(&L, temb, 0, 0, 0, P "time_embed.2.bias");
    u->in_w = sde_wload(&L, mc, cfg->in_channels, 3, 3, P "input_blocks.0.0.weight");
    u->in_b = sde_wload(&L, mc, 0, 0, 0, P "input_blocks.0.0.bias");

    /* down path */
    int ch = mc, idx = 1;
    u->skip_ch[u->nskip] = mc;
    u->skip_level[u->nskip++] = 0;
    for (int l = 0; l < cfg->n_levels && !L.failed; l++) {
        for (int r = 0; r < nrb && !L.failed; r++, idx++) {
            int co = mc * cfg->channel_mult[l];
            unet_block *b = add_block(u, BLK_RES, l, ch, co);
            snprintf(pre, sizeof pre, "input_blocks.%d.0", idx);
            load_res(&L, &b->r, pre, ch, co, temb);
            ch = co;
            if (cfg->attn_levels[l]) {
                snprintf(pre, sizeof pre, "input_blocks.%d.1", idx);
                if (add_st(u, &L, pre, l, ch))
                    break;
            }
            u->blk[u->nblk - 1].push = 1;
            u->skip_ch[u->nskip] = ch;
            u->skip_level[u->nskip++] = l;
        }
        if (l < cfg->n_levels - 1 && !L.failed) {
            unet_block *b = add_block(u, BLK_DOWN, l, ch, ch);
            b->cw = sde_wload(&L, ch, ch, 3, 3, P "input_blocks.%d.0.op.weight", idx);
            b->cb = sde_wload(&L, ch, 0, 0, 0, P "input_blocks.%d.0.op.bias", idx);
            b->push = 1;
            u->skip_ch[u->nskip] = ch;
            u->skip_level[u->nskip++] = l + 1;
            idx++;
        }
    }
    /* middle */
    const int lm = cfg->n_levels - 1;
    if (!L.failed) {
        load_res(&L, &add_block(u, BLK_RES, lm, ch, ch)->r, "middle_block.0", ch, ch, temb);
        if (mid_st) {
            if (!add_st(u, &L, "middle_block.1", lm, ch))
                load_res(&L, &add_block(u, BLK_RES, lm, ch, ch)->r, "middle_block.2", ch, ch, temb);
        } else {
            load_res(&L, &add_block(u, BLK_RES, lm, ch, ch)->r, "middle_block.1", ch, ch, temb);
        }
    }
    /* up path */
    int ns = u->nskip;
    idx = 0;
    for (int l = cfg->n_levels - 1; l >= 0 && !L.failed; l--) {
        for (int r = 0; r <= nrb && !L.failed; r++, idx++) {
            int sk = u->skip_ch[--ns], co = mc * cfg->channel_mult[l];
            if ((ch + sk) % cfg->groups) {
                L.failed = 1;
                sde_fail(err, errlen, "%s: UNet channels %d do not divide into %d GroupNorm groups", sde_ckpt_path(c),
                     ch + sk, cfg->groups);
                break;
            }
            unet_block *b = add_block(u, BLK_RES, l, ch + sk, co);
            b->pop = 1;
            snprintf(pre, sizeof pre, "output_blocks.%d.0", idx);
            load_res(&L, &b->r, pre, ch + sk, co, temb);
            ch = co;
            int sub = 1;
            if (cfg->attn_levels[l]) {
                snprintf(pre, sizeof pre, "output_blocks.%d.1", idx);
                if (add_st(u, &L, pre, l, ch))
                    break;
                sub = 2;
            }
            if (l > 0 && r == nrb) {
                unet_block *ub = add_block(u, BLK_UP, l, ch, ch);
                ub->cw = sde_wload(&L, ch, ch, 3, 3, P "output_blocks.%d.%d.conv.weight", idx, sub);
                ub->cb = sde_wload(&L, ch, 0, 0, 0, P "output_blocks.%d.%d.conv.bias", idx, sub);
            }
        }
    }
    u->out_gn_g = sde_wload(&L, ch, 0, 0, 0, P "out.0.weight");
    u->out_gn_b = sde_wload(&L, ch, 0, 0, 0, P "out.0.bias");
    u->out_w = sde_wload(&L, cfg->out_channels, ch, 3, 3, P "out.2.weight");
    u->out_b = sde_wload(&L, cfg->out_channels, 0, 0, 0, P "out.2.bias");
    if (L.failed) {
        sde_unet_free(u);
        return -1;
    }
    *out = u;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Activations. */

/* Conv descriptors shared by reserve (scratch sizing) and forward. Activations are [C][B][h*w]. */
static sde_conv_desc conv3(const float *x, int batch, int cin, int h, int w, const float *wt, const float *b,
                           int cout, int stride, float *y)
{
    sde_conv_desc d = {.x = x, .batch = batch, .cin = cin, .h = h, .w = w, .x_cstride = (size_t)batch * h * w,
                       .x_bstride = (size_t)h * w, .wt = wt, .bias = b, .cout = cout, .k = 3, .stride = stride,
                       .pad_t = 1, .pad_b = 1, .pad_l = 1, .pad_r = 1, .y = y};
    int oh = sde_conv_out_h(&d), ow = sde_conv_out_w(&d);
    d.y_cstride = (size_t)batch * oh * ow;
    d.y_bstride = (size_t)oh * ow;
    return d;
}

static int lvl_h(int h, int level)
{
    for (int i = 0; i < level; i++)
        h = (h + 1) / 2; /* stride-2, pad-1, k-3 convs round up */
    return h;
}

/* y[p][oh][ow] = x[p][floor(oy*ih/oh)][floor(ox*iw/ow)] for n planes: PyTorch's F.interpolate(size=(oh, ow),
 * mode="nearest"), which diffusers' UNet2DConditionModel uses to meet a skip of odd size (its scale in/out
 * gives the same indices as this exact integer form for the out = 2*in and 2*in - 1 sizes met here). */
static void nearest_resize(const float *x, int n, int ih, int iw, int oh, int ow, float *y)
{
    for (int p = 0; p < n; p++) {
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

static size_t conv_need(const sde_conv_desc *d)
{
    return sde_conv2d_ex_scratch(d, CONV_BUDGET);
}

int sde_unet_reserve(sde_unet *u, int batch, int h, int w, int n_ctx, char *err, size_t errlen)
{
    const sde_unet_config *cfg = &u->cfg;
    if (batch == 0) { /* releases the activations */
        free(u->arena);
        u->arena = NULL;
        u->rb = u->rh = u->rw = u->rctx = 0;
        return 0;
    }
    if (batch < 0 || batch > 64 || h < 1 || w < 1 || n_ctx < 1 || h > 1024 || w > 1024 || n_ctx > 4096)
        return sde_fail(err, errlen, "UNet: bad reservation %d x %dx%d, %d context tokens", batch, h, w, n_ctx);
    /* every size is recomputed per forward, so a reservation covers all smaller shapes: keep it */
    if (u->arena && batch <= u->rb && h <= u->rh && w <= u->rw && n_ctx <= u->rctx)
        return 0;
    free(u->arena);
    u->arena = NULL;
    u->rb = u->rh = u->rw = u->rctx = 0;
    size_t n_act = 0, n_h1 = 0, n_tok = 0, n_ctxkv = 0, n_ffh = 0, n_ffg = 0, n_attn = 0, n_conv = 0, cmax = 0;
    size_t n_skip[MAX_SKIPS];
    for (int i = 0; i < u->nskip; i++) {
        int lh = lvl_h(h, u->skip_level[i]), lw = lvl_h(w, u->skip_level[i]);
        n_skip[i] = (size_t)u->skip_ch[i] * batch * lh * lw;
    }
    /* the first and last convolutions */
    sde_conv_desc d = conv3(NULL, batch, cfg->in_channels, h, w, NULL, NULL, cfg->model_channels, 1, NULL);
    d.x_cstride = (size_t)h * w; /* caller's [B][C][H][W] input */
    d.x_bstride = (size_t)cfg->in_channels * h * w;
    n_conv = conv_need(&d);
    for (int i = 0; i < u->nblk; i++) {
        const unet_block *b = &u->blk[i];
        int lh = lvl_h(h, b->level), lw = lvl_h(w, b->level);
        size_t n = (size_t)batch * lh * lw;
        cmax = (size_t)b->cin > cmax ? (size_t)b->cin : cmax;
        cmax = (size_t)b->cout > cmax ? (size_t)b->cout : cmax;
        size_t a = (size_t)(b->cin > b->cout ? b->cin : b->cout) * n;
        n_act = a > n_act ? a : n_act;
        size_t need = 0;
        if (b->kind == BLK_RES) {
            n_h1 = b->cout * n > n_h1 ? b->cout * n : n_h1;
            sde_conv_desc c1 = conv3(NULL, batch, b->cin, lh, lw, NULL, NULL, b->cout, 1, NULL);
            sde_conv_desc c2 = conv3(NULL, batch, b->cout, lh, lw, NULL, NULL, b->cout, 1, NULL);
            c1.in_scale = c1.in_shift = c2.in_scale = c2.in_shift = u->te0_w; /* any non-NULL: transform on */
            need = conv_need(&c1);
            need = conv_need(&c2) > need ? conv_need(&c2) : need;
        } else if (b->kind == BLK_DOWN) {
            sde_conv_desc c1 = conv3(NULL, batch, b->cin, lh, lw, NULL, NULL, b->cout, 2, NULL);
            need = conv_need(&c1);
        } else if (b->kind == BLK_UP) {
            sde_conv_desc c1 = conv3(NULL, batch, b->cin, lh, lw, NULL, NULL, b->cout, 1, NULL);
            c1.upsample = 1;
            c1.y_cstride = (size_t)batch * 4 * lh * lw;
            c1.y_bstride = (size_t)4 * lh * lw;
            need = conv_need(&c1);
            /* the resize path convolves a stored th x tw input (th = 2*lh or 2*lh - 1, likewise tw); its plan
             * is sized for both the odd target and a forced one at exactly 2x */
            int th = lvl_h(h, b->level - 1), tw = lvl_h(w, b->level - 1);
            sde_conv_desc c2 = conv3(NULL, batch, b->cin, th, tw, NULL, NULL, b->cout, 1, NULL);
            sde_conv_desc c3 = conv3(NULL, batch, b->cin, 2 * lh, 2 * lw, NULL, NULL, b->cout, 1, NULL);
            need = conv_need(&c2) > need ? conv_need(&c2) : need;
            need = conv_need(&c3) > need ? conv_need(&c3) : need;
            /* the upsampled input and output land in the activation buffers */
            size_t up = (size_t)(b->cin > b->cout ? b->cin : b->cout) * 4 * n;
            n_act = up > n_act ? up : n_act;
        } else {
            size_t tok = (size_t)b->cout * n;
            n_tok = tok > n_tok ? tok : n_tok;
            size_t kv = (size_t)b->cout * batch * n_ctx;
            n_ctxkv = kv > n_ctxkv ? kv : n_ctxkv;
            size_t rows = n < FF_ROWS ? n : FF_ROWS, inner = (size_t)u->ff_inner * b->cout;
            n_ffh = rows * 2 * inner > n_ffh ? rows * 2 * inner : n_ffh;
            n_ffg = rows * inner > n_ffg ? rows * inner : n_ffg;
            size_t hw = (size_t)lh * lw, s1 = sde_attention_scratch((int)hw, (int)hw, b->hd),
                   s2 = sde_attention_scratch((int)hw, n_ctx, b->hd);
            s1 = s2 > s1 ? s2 : s1;
            n_attn = s1 > n_attn ? s1 : n_attn;
        }
        n_conv = need > n_conv ? need : n_conv;
    }
    int lo_h = h, lo_w = w; /* output conv runs at level 0 into the caller's [B][C][H][W] */
    d = conv3(NULL, batch, cfg->model_channels * cfg->channel_mult[0], lo_h, lo_w, NULL, NULL, cfg->out_channels, 1,
              NULL);
    d.in_scale = d.in_shift = u->te0_w;
    d.y_cstride = (size_t)lo_h * lo_w;
    d.y_bstride = (size_t)cfg->out_channels * lo_h * lo_w;
    n_conv = conv_need(&d) > n_conv ? conv_need(&d) : n_conv;

    /* one arena; every piece rounded to 16 floats so each starts cache-line aligned */
#define R16(n) (((n) + 15) & ~(size_t)15)
    size_t total = 0;
    for (int i = 0; i < u->nskip; i++)
        total += R16(n_skip[i]);
    size_t n_conv_f = (n_conv + sizeof(float) - 1) / sizeof(float), n_attn_f = n_attn / sizeof(float) + 1;
    total += 2 * R16(n_act) + R16(n_h1) + 5 * R16(n_tok) + 2 * R16(n_ctxkv) + R16(n_ffh) + R16(n_ffg) +
             R16(n_attn_f) + R16(n_conv_f) + 3 * R16((size_t)batch * cmax) + 2 * R16((size_t)batch * u->temb) +
             R16((size_t)batch * cfg->model_channels);
    u->arena = aligned_alloc(64, total * sizeof(float));
    if (!u->arena)
        return sde_fail(err, errlen, "UNet: cannot allocate %.0f MB of activations for %d x %dx%d",
                    total * 4.0 / 1048576.0, batch, h, w);
    float *p = u->arena;
#define TAKE(dst, n)                                                                                              \
    do {                                                                                                          \
        (dst) = p;                                                                                                \
        p += R16(n);                                                                                              \
    } while (0)
    for (int i = 0; i < u->nskip; i++)
        TAKE(u->skip[i], n_skip[i]);
    TAKE(u->bufA, n_act);
    TAKE(u->bufB, n_act);
    TAKE(u->h1, n_h1);
    TAKE(u->tx, n_tok);
    TAKE(u->tt, n_tok);
    TAKE(u->tq, n_tok);
    TAKE(u->tk, n_tok);
    TAKE(u->tv, n_tok);
    TAKE(u->ck, n_ctxkv);
    TAKE(u->cv, n_ctxkv);
    TAKE(u->ffh, n_ffh);
    TAKE(u->ffg, n_ffg);
    TAKE(u->attn_scr, n_attn_f);
    TAKE(u->conv_scr, n_conv_f);
    TAKE(u->gsc, (size_t)batch * cmax);
    TAKE(u->gsh, (size_t)batch * cmax);
    TAKE(u->embp, (size_t)batch * cmax);
    TAKE(u->emb, (size_t)batch * u->temb);
    TAKE(u->emb_silu, (size_t)batch * u->temb);
    TAKE(u->tsin, (size_t)batch * cfg->model_channels);
#undef TAKE
#undef R16
    u->conv_scr_bytes = n_conv_f * sizeof(float);
    u->rb = batch;
    u->rh = h;
    u->rw = w;
    u->rctx = n_ctx;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Forward. */

/* GroupNorm coefficients of every image of x [C][B][hw] into u->gsc/gsh ([B][C]). */
static void gn_coeffs(sde_unet *u, const float *x, int c, int batch, size_t hw, const float *g, const float *b,
                      float eps)
{
    for (int i = 0; i < batch; i++)
        sde_groupnorm_coeffs(x + i * hw, c, (int)hw, (size_t)batch * hw, u->cfg.groups, g, b, eps,
                             u->gsc + (size_t)i * c, u->gsh + (size_t)i * c);
}

static void run_conv(sde_unet *u, sde_conv_desc *d)
{
    sde_conv2d_ex(d, u->conv_scr, u->conv_scr_bytes);
}

/* ResBlock: out = skip(x) + conv2(GN+SiLU(conv1(GN+SiLU(x)) + emb)). */
static void res_block(sde_unet *u, const unet_block *blk, const float *x, float *out, int batch, int h, int w)
{
    const res_w *r = &blk->r;
    const size_t hw = (size_t)h * w, n = (size_t)batch * hw;
    /* the per-image time-embedding projection becomes a second conv1 bias */
    sde_linear(u->emb_silu, batch, u->temb, r->emb_w, r->emb_b, blk->cout, u->embp);
    gn_coeffs(u, x, blk->cin, batch, hw, r->gn1_g, r->gn1_b, 1e-5f);
    sde_conv_desc d = conv3(x, batch, blk->cin, h, w, r->conv1_w, r->conv1_b, blk->cout, 1, u->h1);
    d.in_scale = u->gsc;
    d.in_shift = u->gsh;
    d.in_silu = 1;
    d.bias_b = u->embp;
    run_conv(u, &d);
    if (r->skip_w) {
        sde_conv_desc s = {.x = x, .batch = batch, .cin = blk->cin, .h = h, .w = w, .x_cstride = n,
                           .x_bstride = hw, .wt = r->skip_w, .bias = r->skip_b, .cout = blk->cout, .k = 1,
                           .stride = 1, .y = out, .y_cstride = n, .y_bstride = hw};
        run_conv(u, &s);
    } else {
        memcpy(out, x, sizeof(float) * blk->cout * n);
    }
    gn_coeffs(u, u->h1, blk->cout, batch, hw, r->gn2_g, r->gn2_b, 1e-5f);
    d = conv3(u->h1, batch, blk->cout, h, w, r->conv2_w, r->conv2_b, blk->cout, 1, out);
    d.in_scale = u->gsc;
    d.in_shift = u->gsh;
    d.in_silu = 1;
    d.accumulate = 1;
    run_conv(u, &d);
}

/* y[n][out] += x[n][in] W^T + b */
static void linear_acc(const float *x, int n, int in, const float *w, const float *b, int out, float *y)
{
    if (b)
        for (int r = 0; r < n; r++)
            sde_add(y + (size_t)r * out, b, out);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in, 1.0f, y, out);
}

static void layernorm_copy(const float *x, float *y, size_t n, int c, const float *g, const float *b)
{
    memcpy(y, x, sizeof(float) * n * c);
    sde_layernorm(y, (int)n, c, g, b, 1e-5f);
}

/* SpatialTransformer, in place on x [C][B][hw]. */
static void spatial_transformer(sde_unet *u, const unet_block *blk, float *x, int batch, int h, int w,
                                const float *context, int n_ctx)
{
    const st_w *s = &blk->s;
    const int C = blk->cout, hd = blk->hd, heads = blk->heads, ctxd = u->cfg.context_dim;
    const size_t hw = (size_t)h * w, n = (size_t)batch * hw;
    const int inner = u->ff_inner * C;
    /* GroupNorm (eps 1e-6, no SiLU) into tt as [C][N], then tokens tx[N][C] = tt^T Win^T + b */
    gn_coeffs(u, x, C, batch, hw, s->gn_g, s->gn_b, 1e-6f);
    for (int i = 0; i < batch; i++)
        sde_affine_act(x + i * hw, n, C, (int)hw, u->gsc + (size_t)i * C, u->gsh + (size_t)i * C, 0, u->tt + i * hw,
                       n);
    for (size_t r = 0; r < n; r++)
        memcpy(u->tx + r * C, s->pin_b, sizeof(float) * C);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, (int)n, C, C, 1.0f, u->tt, (int)n, s->pin_w, C, 1.0f, u->tx, C);
    for (int dpt = 0; dpt < u->cfg.transformer_depth; dpt++) {
        const tblock_w *b = &s->tb[dpt];
        /* self-attention */
        layernorm_copy(u->tx, u->tt, n, C, b->ln1_g, b->ln1_b);
        sde_linear(u->tt, (int)n, C, b->q1, NULL, C, u->tq);
        sde_linear(u->tt, (int)n, C, b->k1, NULL, C, u->tk);
        sde_linear(u->tt, (int)n, C, b->v1, NULL, C, u->tv);
        for (int i = 0; i < batch; i++) {
            size_t o = (size_t)i * hw * C;
            sde_attention(u->tq + o, C, u->tk + o, C, u->tv + o, C, (int)hw, (int)hw, heads, hd, 0, u->tt + o, C,
                          u->attn_scr);
        }
        linear_acc(u->tt, (int)n, C, b->o1_w, b->o1_b, C, u->tx);
        /* cross-attention over the text context */
        layernorm_copy(u->tx, u->tt, n, C, b->ln2_g, b->ln2_b);
        sde_linear(u->tt, (int)n, C, b->q2, NULL, C, u->tq);
        sde_linear(context, batch * n_ctx, ctxd, b->k2, NULL, C, u->ck);
        sde_linear(context, batch * n_ctx, ctxd, b->v2, NULL, C, u->cv);
        for (int i = 0; i < batch; i++) {
            size_t o = (size_t)i * hw * C, oc = (size_t)i * n_ctx * C;
            sde_attention(u->tq + o, C, u->ck + oc, C, u->cv + oc, C, (int)hw, n_ctx, heads, hd, 0, u->tt + o, C,
                          u->attn_scr);
        }
        linear_acc(u->tt, (int)n, C, b->o2_w, b->o2_b, C, u->tx);
        /* GEGLU feed-forward, a chunk of tokens at a time */
        layernorm_copy(u->tx, u->tt, n, C, b->ln3_g, b->ln3_b);
        for (size_t r0 = 0; r0 < n; r0 += FF_ROWS) {
            int rows = (int)(n - r0 < FF_ROWS ? n - r0 : FF_ROWS);
            sde_linear(u->tt + r0 * C, rows, C, b->ff1_w, b->ff1_b, 2 * inner, u->ffh);
            sde_geglu(u->ffh, rows, inner, u->ffg);
            linear_acc(u->ffg, rows, inner, b->ff2_w, b->ff2_b, C, u->tx + r0 * C);
        }
    }
    /* x[C][N] += Wout tx^T + b (the residual is x itself) */
    for (int c = 0; c < C; c++) {
        float bv = s->pout_b[c], *row = x + (size_t)c * n;
        for (size_t i = 0; i < n; i++)
            row[i] += bv;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, C, (int)n, C, 1.0f, s->pout_w, C, u->tx, C, 1.0f, x, (int)n);
}

/* Sinusoidal timestep features [cos | sin] computed in float like torch and ggml, then the MLP. */
static void time_embedding(sde_unet *u, const float *t, int batch)
{
    const int mc = u->cfg.model_channels, half = mc / 2;
    for (int b = 0; b < batch; b++) {
        float *e = u->tsin + (size_t)b * mc;
        for (int i = 0; i < half; i++) {
            float freq = expf(-logf(10000.0f) * (float)i / (float)half);
            float arg = t[b] * freq;
            e[i] = (float)cos((double)arg);
            e[half + i] = (float)sin((double)arg);
        }
        if (mc % 2)
            e[mc - 1] = 0.0f;
    }
    sde_linear(u->tsin, batch, mc, u->te0_w, u->te0_b, u->temb, u->emb_silu);
    sde_silu(u->emb_silu, (size_t)batch * u->temb);
    sde_linear(u->emb_silu, batch, u->temb, u->te2_w, u->te2_b, u->temb, u->emb);
    memcpy(u->emb_silu, u->emb, sizeof(float) * batch * u->temb);
    sde_silu(u->emb_silu, (size_t)batch * u->temb);
}

void sde_unet_forward(sde_unet *u, const float *x, int batch, int h, int w, const float *timesteps,
                      const float *context, int n_ctx, float *out)
{
    const sde_unet_config *cfg = &u->cfg;
    if (!u->arena || batch < 1 || batch > u->rb || h < 1 || w < 1 || h > u->rh || w > u->rw || n_ctx > u->rctx ||
        n_ctx < 1) {
        /* not reserved for this shape: NaN says so loudly without touching memory we do not own */
        size_t nout = (size_t)(batch > 0 ? batch : 0) * cfg->out_channels * (h > 0 ? h : 0) * (w > 0 ? w : 0);
        for (size_t i = 0; i < nout; i++)
            out[i] = NAN;
        return;
    }
    time_embedding(u, timesteps, batch);
    /* conv_in from the caller's [B][C][H][W] straight into skip 0 */
    sde_conv_desc d = conv3(x, batch, cfg->in_channels, h, w, u->in_w, u->in_b, cfg->model_channels, 1, u->skip[0]);
    d.x_cstride = (size_t)h * w;
    d.x_bstride = (size_t)cfg->in_channels * h * w;
    run_conv(u, &d);
    int si = 1, ns = u->nskip;
    float *cur = u->skip[0];
    float *spare = u->bufB;
    for (int i = 0; i < u->nblk; i++) {
        const unet_block *b = &u->blk[i];
        int lh = lvl_h(h, b->level), lw = lvl_h(w, b->level);
        size_t n = (size_t)batch * lh * lw;
        /* where this block's output goes: the next skip slot on the way down, else the free buffer */
        int down = si < u->nskip && (b->push || (i + 1 < u->nblk && u->blk[i + 1].kind == BLK_ST && u->blk[i + 1].push));
        if (b->kind == BLK_ST) {
            spatial_transformer(u, b, cur, batch, lh, lw, context, n_ctx);
            if (b->push)
                si++;
            continue;
        }
        float *dst = down ? u->skip[si] : (cur == u->bufA ? u->bufB : u->bufA);
        if (b->kind == BLK_RES) {
            if (b->pop) {
                /* concatenate [cur; skip] along channels: cur already sits at the front of its buffer
                 * unless it is a skip slot (the middle block's input), then copy it over */
                const float *sk = u->skip[--ns];
                int cs = u->skip_ch[ns], ch = b->cin - cs;
                float *cat = (cur == u->bufA || cur == u->bufB) ? cur : spare;
                if (cat != cur)
                    memcpy(cat, cur, sizeof(float) * ch * n);
                memcpy(cat + (size_t)ch * n, sk, sizeof(float) * cs * n);
                cur = cat;
                dst = cat == u->bufA ? u->bufB : u->bufA;
            }
            res_block(u, b, cur, dst, batch, lh, lw);
        } else if (b->kind == BLK_DOWN) {
            d = conv3(cur, batch, b->cin, lh, lw, b->cw, b->cb, b->cout, 2, dst);
            run_conv(u, &d);
        } else { /* BLK_UP: nearest-resize to the size of the skip it meets next, then conv3x3 */
            int th = lvl_h(h, b->level - 1), tw = lvl_h(w, b->level - 1);
            if (th == 2 * lh && tw == 2 * lw && !u->force_resize) {
                /* exactly 2x: the upsample is folded into the conv's input reads */
                d = conv3(cur, batch, b->cin, lh, lw, b->cw, b->cb, b->cout, 1, dst);
                d.upsample = 1;
                d.y_cstride = (size_t)batch * th * tw;
                d.y_bstride = (size_t)th * tw;
                run_conv(u, &d);
            } else {
                /* an odd side one level up (2*lh - 1): resize into the free buffer, convolve back into
                 * cur's, whose input is dead by then; both hold an upsampled activation (reserve) */
                nearest_resize(cur, b->cin * batch, lh, lw, th, tw, dst);
                d = conv3(dst, batch, b->cin, th, tw, b->cw, b->cb, b->cout, 1, cur);
                run_conv(u, &d);
                dst = cur;
            }
        }
        if (down && b->push)
            si++;
        cur = dst;
    }
    /* GroupNorm + SiLU fused into the output conv, written as [B][C][H][W] */
    const int c0 = cfg->model_channels * cfg->channel_mult[0];
    gn_coeffs(u, cur, c0, batch, (size_t)h * w, u->out_gn_g, u->out_gn_b, 1e-5f);
    d = conv3(cur, batch, c0, h, w, u->out_w, u->out_b, cfg->out_channels, 1, out);
    d.in_scale = u->gsc;
    d.in_shift = u->gsh;
    d.in_silu = 1;
    d.y_cstride = (size_t)h * w;
    d.y_bstride = (size_t)cfg->out_channels * h * w;
    run_conv(u, &d);
}

void sde_unet_force_resize(sde_unet *u, int on)
{
    u->force_resize = on != 0;
}

/* ---------------------------------------------------------------------------------------------------- */

double sde_unet_flops(const sde_unet *u, int h, int w, int n_ctx)
{
    const sde_unet_config *cfg = &u->cfg;
    double m = (double)cfg->model_channels * cfg->in_channels * 9 * h * w;
    m += (double)cfg->model_channels * u->temb + (double)u->temb * u->temb;
    for (int i = 0; i < u->nblk; i++) {
        const unet_block *b = &u->blk[i];
        double hw = (double)lvl_h(h, b->level) * lvl_h(w, b->level), C = b->cout;
        switch (b->kind) {
        case BLK_RES:
            m += hw * 9 * (b->cin * C + C * C) + (b->cin != b->cout ? hw * b->cin * C : 0) + u->temb * C;
            break;
        case BLK_DOWN:
            m += hw / 4 * 9 * b->cin * C;
            break;
        case BLK_UP:
            m += (double)lvl_h(h, b->level - 1) * lvl_h(w, b->level - 1) * 9 * b->cin * C;
            break;
        case BLK_ST: {
            double inner = (double)u->ff_inner * C, ctxd = cfg->context_dim;
            double per = hw * C * C * 4 /* q k v out (self) */ + hw * hw * C * 2 /* QK^T, PV */
                         + hw * C * C * 2 + n_ctx * ctxd * C * 2 + hw * n_ctx * C * 2 /* cross */
                         + hw * C * inner * 3 /* GEGLU ff */;
            m += 2 * hw * C * C + cfg->transformer_depth * per;
            break;
        }
        }
    }
    m += (double)cfg->model_channels * cfg->channel_mult[0] * cfg->out_channels * 9 * h * w;
    return m;
}
