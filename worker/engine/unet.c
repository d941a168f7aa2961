/* unet.c: the LDM openaimodel UNet (SD 1.x / 2.x / XL / tiny) as a flat list of blocks over activations in a
 * batch-interleaved [C][B*H*W] layout, so every convolution and projection is one GEMM over the batch. */
#include "unet.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_profile.h"
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
    const float *gn1_g, *gn1_b, *conv1_b, *emb_b, *gn2_g, *gn2_b, *conv2_b, *skip_b;
    const sde_weight *conv1_w, *emb_w, *conv2_w, *skip_w;
} res_w;

typedef struct {
    const float *ln1_g, *ln1_b, *o1_b, *ln2_g, *ln2_b, *o2_b, *ln3_g, *ln3_b, *ff1_b, *ff2_b;
    const sde_weight *q1, *k1, *v1, *o1_w, *q2, *k2, *v2, *o2_w, *ff1_w, *ff2_w;
} tblock_w;

typedef struct {
    const float *gn_g, *gn_b, *pin_b, *pout_b;
    const sde_weight *pin_w, *pout_w;
    tblock_w *tb; /* transformer_depth blocks */
} st_w;

typedef enum { BLK_RES, BLK_ST, BLK_DOWN, BLK_UP } blk_kind;

/* One step of the network. Down-path blocks that end a group push their output as a skip; the first
 * block of an up-path group concatenates the newest skip to its input first. */
typedef struct {
    blk_kind kind;
    int level;     /* resolution: latent size / 2^level (of the input) */
    int cin, cout; /* cin includes a concatenated skip */
    int push, pop;
    int heads, hd; /* BLK_ST */
    int depth;     /* BLK_ST: transformer blocks */
    res_w r;
    st_w s;
    const sde_weight *cw; /* BLK_DOWN / BLK_UP conv */
    const float *cb;
} unet_block;

/* Buffers of a reservation: the skips, then one slot each in a single backend arena, in this order. */
enum {
    S_A = MAX_SKIPS, /* the two ping-pong activations [C][N] */
    S_B,
    S_H1, /* a ResBlock's inner activation [C][N] */
    S_TX,
    S_TT,
    S_TQ,
    S_TK,
    S_TV, /* transformer tokens [N][C] */
    S_CK,
    S_CV, /* cross-attention keys/values [B*n_ctx][C] */
    S_FFH,
    S_FFG, /* feed-forward chunk */
    S_ATTN,
    S_CONV, /* op scratch */
    S_GSC,
    S_GSH,
    S_EMBP, /* GroupNorm coefficients, per-block time projection [B][Cmax] */
    S_EMB,
    S_EMBS,
    S_TSIN, /* time embedding [B][temb], its SiLU, sinusoids [B][mc] */
    S_Y,
    S_YH, /* SDXL: the vector y [B][adm], its label_emb hidden [B][temb] */
    S_X,
    S_CTX,
    S_OUT, /* the caller's input, context and output, copied in and out */
    N_SLOTS
};

/* One block of a forward at one shape: the buffers it reads and writes and the convolutions it runs. */
typedef struct {
    const unet_block *b;
    int h, w;          /* input size */
    sde_ten in, out;   /* BLK_ST works in place (out == in) */
    sde_ten head_from; /* BLK_RES pop: cur moves into `in` first (absent: it is already there) */
    sde_ten skip;      /* BLK_RES pop: the skip appended after the head in `in` */
    int head_ch, skip_ch;
    int resize, th, tw;     /* BLK_UP to th x tw through the explicit resize into out, conv back into in */
    sde_be_conv c1, c2, cs; /* RES: conv1, conv2, skip; DOWN/UP: c1 */
} unet_step;

/* Everything a forward at one shape does, built by one function for both the reservation (sizes) and the
 * forward (buffers), so the two cannot disagree. */
typedef struct {
    int batch, h, w, n_ctx, force_resize; /* the shape planned; batch 0: none */
    sde_ten slot[N_SLOTS];
    size_t need[N_SLOTS]; /* floats per slot */
    int cmax;
    sde_be_conv conv_in, conv_out;
    unet_step step[MAX_BLOCKS];
    int nstep;
} unet_plan;

struct sde_unet {
    sde_unet_config cfg;
    sde_backend *be;
    int temb;     /* time embedding width: 4 * model_channels */
    int ff_inner; /* GEGLU inner width per channel count: ff_mult (4) */
    const float *te0_b, *te2_b, *in_b, *out_gn_g, *out_gn_b, *out_b;
    const sde_weight *te0_w, *te2_w, *in_w, *out_w;
    const float *le0_b, *le2_b; /* label_emb.0.{0,2}: y -> time embedding (SDXL) */
    const sde_weight *le0_w, *le2_w;
    float *y_host; /* [rb][adm]: set by sde_unet_set_y, zero until then */
    unet_block blk[MAX_BLOCKS];
    int nblk;
    int skip_ch[MAX_SKIPS], skip_level[MAX_SKIPS], nskip;

    /* activations (sde_unet_reserve) */
    int rb, rh, rw, rctx; /* reserved batch, latent size, context length */
    int force_resize;     /* every upsample through the explicit resize (sde_unet_force_resize) */
    sde_buf *arena;
    size_t slot_off[N_SLOTS]; /* floats from the arena's start */
    size_t conv_scr_bytes;
    float *tsin_host; /* [rb][mc]: sinusoids computed on the host, then written */
    unet_plan plan;   /* for the last shape planned */
};

/* ---------------------------------------------------------------------------------------------------- */
/* Config inference. */

/* Parses a positive decimal metadata value; 0 when absent, -1 when malformed. */
static int meta_int(const sde_ckpt *c, const char *key)
{
    const char *s = sde_ckpt_meta(c, key);
    if (!s) return 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v <= 0 || v > 65536) return -1;
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
        return sde_fail(err, errlen, "%s: tensor " P "out.2.weight missing or not a conv weight",
                        sde_ckpt_path(c));
    cfg->out_channels = (int)t->shape[0];
    /* res blocks per level: input_blocks 1..nrb are level 0's, nrb+1 is its downsample (if any) */
    int nrb = 0;
    while (nrb < 16 && sde_wfind(c, P "input_blocks.%d.0.in_layers.2.weight", nrb + 1))
        nrb++;
    if (nrb == 0)
        return sde_fail(err, errlen, "%s: tensor " P "input_blocks.1.0.in_layers.2.weight missing",
                        sde_ckpt_path(c));
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
            return sde_fail(err, errlen,
                            "%s: tensor " P "input_blocks.%d.0.out_layers.3.weight missing or not a multiple "
                            "of model_channels %d",
                            sde_ckpt_path(c), idx, cfg->model_channels);
        cfg->channel_mult[l] = (int)(t->shape[0] / cfg->model_channels);
        while (cfg->level_depth[l] < 16 &&
               sde_wfind(c, P "input_blocks.%d.1.transformer_blocks.%d.attn1.to_q.weight", idx,
                         cfg->level_depth[l]))
            cfg->level_depth[l]++;
        cfg->attn_levels[l] = cfg->level_depth[l] > 0;
    }
    t = sde_wfind(c, P "label_emb.0.0.weight");
    if (t) {
        if (t->ndim != 2 || t->shape[1] < 1 || t->shape[1] > 65536)
            return sde_fail(err, errlen, "%s: tensor " P "label_emb.0.0.weight is not a Linear weight",
                            sde_ckpt_path(c));
        cfg->adm_in_channels = (int)t->shape[1];
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
    r->conv1_w = sde_wload_weight(L, cout, cin, 3, 3, P "%s.in_layers.2.weight", pre);
    r->conv1_b = sde_wload(L, cout, 0, 0, 0, P "%s.in_layers.2.bias", pre);
    r->emb_w = sde_wload_weight(L, cout, temb, 0, 0, P "%s.emb_layers.1.weight", pre);
    r->emb_b = sde_wload(L, cout, 0, 0, 0, P "%s.emb_layers.1.bias", pre);
    r->gn2_g = sde_wload(L, cout, 0, 0, 0, P "%s.out_layers.0.weight", pre);
    r->gn2_b = sde_wload(L, cout, 0, 0, 0, P "%s.out_layers.0.bias", pre);
    r->conv2_w = sde_wload_weight(L, cout, cout, 3, 3, P "%s.out_layers.3.weight", pre);
    r->conv2_b = sde_wload(L, cout, 0, 0, 0, P "%s.out_layers.3.bias", pre);
    if (cin != cout) {
        r->skip_w = sde_wload_weight(L, cout, cin, 0, 0, P "%s.skip_connection.weight", pre);
        r->skip_b = sde_wload(L, cout, 0, 0, 0, P "%s.skip_connection.bias", pre);
    }
}

static void load_st(sde_wloader *L, st_w *s, const char *pre, int ch, const sde_unet_config *cfg, int inner,
                    int depth)
{
    s->gn_g = sde_wload(L, ch, 0, 0, 0, P "%s.norm.weight", pre);
    s->gn_b = sde_wload(L, ch, 0, 0, 0, P "%s.norm.bias", pre);
    /* [C][C] matches both a Linear and a 1x1 conv ([C][C][1][1]) */
    s->pin_w = sde_wload_weight(L, ch, ch, 0, 0, P "%s.proj_in.weight", pre);
    s->pin_b = sde_wload(L, ch, 0, 0, 0, P "%s.proj_in.bias", pre);
    s->pout_w = sde_wload_weight(L, ch, ch, 0, 0, P "%s.proj_out.weight", pre);
    s->pout_b = sde_wload(L, ch, 0, 0, 0, P "%s.proj_out.bias", pre);
    if (L->failed) return;
    s->tb = calloc((size_t)depth, sizeof *s->tb);
    if (!s->tb) {
        L->failed = 1;
        sde_fail(L->err, L->errlen, "out of memory");
        return;
    }
    const int ctx = cfg->context_dim;
    for (int d = 0; d < depth; d++) {
        tblock_w *b = &s->tb[d];
        char q[128];
        snprintf(q, sizeof q, "%s.transformer_blocks.%d", pre, d);
        b->ln1_g = sde_wload(L, ch, 0, 0, 0, P "%s.norm1.weight", q);
        b->ln1_b = sde_wload(L, ch, 0, 0, 0, P "%s.norm1.bias", q);
        b->q1 = sde_wload_weight(L, ch, ch, 0, 0, P "%s.attn1.to_q.weight", q);
        b->k1 = sde_wload_weight(L, ch, ch, 0, 0, P "%s.attn1.to_k.weight", q);
        b->v1 = sde_wload_weight(L, ch, ch, 0, 0, P "%s.attn1.to_v.weight", q);
        b->o1_w = sde_wload_weight(L, ch, ch, 0, 0, P "%s.attn1.to_out.0.weight", q);
        b->o1_b = sde_wload(L, ch, 0, 0, 0, P "%s.attn1.to_out.0.bias", q);
        b->ln2_g = sde_wload(L, ch, 0, 0, 0, P "%s.norm2.weight", q);
        b->ln2_b = sde_wload(L, ch, 0, 0, 0, P "%s.norm2.bias", q);
        b->q2 = sde_wload_weight(L, ch, ch, 0, 0, P "%s.attn2.to_q.weight", q);
        b->k2 = sde_wload_weight(L, ch, ctx, 0, 0, P "%s.attn2.to_k.weight", q);
        b->v2 = sde_wload_weight(L, ch, ctx, 0, 0, P "%s.attn2.to_v.weight", q);
        b->o2_w = sde_wload_weight(L, ch, ch, 0, 0, P "%s.attn2.to_out.0.weight", q);
        b->o2_b = sde_wload(L, ch, 0, 0, 0, P "%s.attn2.to_out.0.bias", q);
        b->ln3_g = sde_wload(L, ch, 0, 0, 0, P "%s.norm3.weight", q);
        b->ln3_b = sde_wload(L, ch, 0, 0, 0, P "%s.norm3.bias", q);
        b->ff1_w = sde_wload_weight(L, 2 * inner, ch, 0, 0, P "%s.ff.net.0.proj.weight", q);
        b->ff1_b = sde_wload(L, 2 * inner, 0, 0, 0, P "%s.ff.net.0.proj.bias", q);
        b->ff2_w = sde_wload_weight(L, ch, inner, 0, 0, P "%s.ff.net.2.weight", q);
        b->ff2_b = sde_wload(L, ch, 0, 0, 0, P "%s.ff.net.2.bias", q);
    }
}

void sde_unet_free(sde_unet *u)
{
    if (!u) return;
    for (int i = 0; i < u->nblk; i++)
        free(u->blk[i].s.tb);
    sde_unet_reserve(u, 0, 0, 0, 0, NULL, 0);
    free(u);
}

static unet_block *add_block(sde_unet *u, blk_kind kind, int level, int cin, int cout)
{
    if (u->nblk == MAX_BLOCKS) return NULL;
    unet_block *b = &u->blk[u->nblk++];
    memset(b, 0, sizeof *b);
    b->kind = kind;
    b->level = level;
    b->cin = cin;
    b->cout = cout;
    return b;
}

static int add_st(sde_unet *u, sde_wloader *L, const char *pre, int level, int ch, int depth)
{
    const sde_unet_config *cfg = &u->cfg;
    unet_block *b = add_block(u, BLK_ST, level, ch, ch);
    if (!b) return sde_fail(L->err, L->errlen, "UNet has too many blocks");
    b->depth = depth > 0 ? depth : cfg->transformer_depth;
    b->hd = cfg->head_dim > 0 ? cfg->head_dim : ch / cfg->num_heads;
    b->heads = cfg->head_dim > 0 ? ch / cfg->head_dim : cfg->num_heads;
    if (b->hd <= 0 || b->heads * b->hd != ch)
        return sde_fail(L->err, L->errlen,
                        "%s: " P "%s: %d channels do not split into attention heads (head_dim %d, "
                        "heads %d)",
                        sde_ckpt_path(L->c), pre, ch, cfg->head_dim, cfg->num_heads);
    load_st(L, &b->s, pre, ch, cfg, u->ff_inner * ch, b->depth);
    return L->failed ? -1 : 0;
}

int sde_unet_build(sde_ckpt *c, const sde_unet_config *cfg, sde_unet **out, char *err, size_t errlen)
{
    return sde_unet_build_on(sde_backend_cpu(), c, cfg, out, err, errlen);
}

int sde_unet_build_on(sde_backend *be, sde_ckpt *c, const sde_unet_config *cfg, sde_unet **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    if (cfg->n_levels < 1 || cfg->n_levels > 4 || cfg->num_res_blocks < 1 || cfg->model_channels < 1 ||
        cfg->groups < 1 || cfg->in_channels < 1 || cfg->out_channels < 1)
        return sde_fail(err, errlen, "%s: invalid UNet config", sde_ckpt_path(c));
    sde_unet *u = calloc(1, sizeof *u);
    if (!u) return sde_fail(err, errlen, "out of memory");
    u->cfg = *cfg;
    u->be = be;
    u->temb = 4 * cfg->model_channels;
    u->ff_inner = 4;
    sde_wloader L = {.c = c, .err = err, .errlen = errlen, .be = u->be};
    const int mc = cfg->model_channels, nrb = cfg->num_res_blocks, temb = u->temb;
    char pre[96];
    int any_attn = 0;
    for (int l = 0; l < cfg->n_levels; l++)
        any_attn |= cfg->attn_levels[l];
    const sde_tensor *mid_st = sde_ckpt_find(c, P "middle_block.1.norm.weight");
    if ((any_attn || mid_st) && (cfg->context_dim < 1 || cfg->transformer_depth < 1)) {
        sde_unet_free(u);
        return sde_fail(err, errlen, "%s: invalid UNet config (attention without a context width)",
                        sde_ckpt_path(c));
    }
    /* every GroupNorm'd width must split into the groups */
    for (int l = 0; l < cfg->n_levels; l++)
        if ((mc * cfg->channel_mult[l]) % cfg->groups || cfg->channel_mult[l] < 1) {
            sde_unet_free(u);
            return sde_fail(err, errlen, "%s: UNet channels %d do not divide into %d GroupNorm groups",
                            sde_ckpt_path(c), mc * cfg->channel_mult[l], cfg->groups);
        }
    u->te0_w = sde_wload_weight(&L, temb, mc, 0, 0, P "time_embed.0.weight");
    u->te0_b = sde_wload(&L, temb, 0, 0, 0, P "time_embed.0.bias");
    u->te2_w = sde_wload_weight(&L, temb, temb, 0, 0, P "time_embed.2.weight");
    u->te2_b = sde_wload(&L, temb, 0, 0, 0, P "time_embed.2.bias");
    if (cfg->adm_in_channels > 0) {
        u->le0_w = sde_wload_weight(&L, temb, cfg->adm_in_channels, 0, 0, P "label_emb.0.0.weight");
        u->le0_b = sde_wload(&L, temb, 0, 0, 0, P "label_emb.0.0.bias");
        u->le2_w = sde_wload_weight(&L, temb, temb, 0, 0, P "label_emb.0.2.weight");
        u->le2_b = sde_wload(&L, temb, 0, 0, 0, P "label_emb.0.2.bias");
    }
    u->in_w = sde_wload_weight(&L, mc, cfg->in_channels, 3, 3, P "input_blocks.0.0.weight");
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
                if (add_st(u, &L, pre, l, ch, cfg->level_depth[l])) break;
            }
            u->blk[u->nblk - 1].push = 1;
            u->skip_ch[u->nskip] = ch;
            u->skip_level[u->nskip++] = l;
        }
        if (l < cfg->n_levels - 1 && !L.failed) {
            unet_block *b = add_block(u, BLK_DOWN, l, ch, ch);
            b->cw = sde_wload_weight(&L, ch, ch, 3, 3, P "input_blocks.%d.0.op.weight", idx);
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
            if (!add_st(u, &L, "middle_block.1", lm, ch, cfg->transformer_depth))
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
                sde_fail(err, errlen, "%s: UNet channels %d do not divide into %d GroupNorm groups",
                         sde_ckpt_path(c), ch + sk, cfg->groups);
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
                if (add_st(u, &L, pre, l, ch, cfg->level_depth[l])) break;
                sub = 2;
            }
            if (l > 0 && r == nrb) {
                unet_block *ub = add_block(u, BLK_UP, l, ch, ch);
                ub->cw = sde_wload_weight(&L, ch, ch, 3, 3, P "output_blocks.%d.%d.conv.weight", idx, sub);
                ub->cb = sde_wload(&L, ch, 0, 0, 0, P "output_blocks.%d.%d.conv.bias", idx, sub);
            }
        }
    }
    u->out_gn_g = sde_wload(&L, ch, 0, 0, 0, P "out.0.weight");
    u->out_gn_b = sde_wload(&L, ch, 0, 0, 0, P "out.0.bias");
    u->out_w = sde_wload_weight(&L, cfg->out_channels, ch, 3, 3, P "out.2.weight");
    u->out_b = sde_wload(&L, cfg->out_channels, 0, 0, 0, P "out.2.bias");
    if (L.failed) {
        sde_unet_free(u);
        return -1;
    }
    *out = u;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* The plan: buffers, shapes and scratch of every block at one shape. */

static int lvl_h(int h, int level)
{
    for (int i = 0; i < level; i++)
        h = (h + 1) / 2; /* stride-2, pad-1, k-3 convs round up */
    return h;
}

/* A 3x3 pad-1 convolution between activations in the [C][B][h*w] layout. */
static sde_be_conv conv3(sde_ten x, int batch, int cin, int h, int w, const sde_weight *wt, const float *b,
                         int cout, int stride, sde_ten y)
{
    sde_be_conv d = {.x = x,
                     .batch = batch,
                     .cin = cin,
                     .h = h,
                     .w = w,
                     .x_cstride = (size_t)batch * h * w,
                     .x_bstride = (size_t)h * w,
                     .wt = wt,
                     .bias = b,
                     .cout = cout,
                     .k = 3,
                     .stride = stride,
                     .pad_t = 1,
                     .pad_b = 1,
                     .pad_l = 1,
                     .pad_r = 1,
                     .y = y};
    int oh = sde_be_conv_out_h(&d), ow = sde_be_conv_out_w(&d);
    d.y_cstride = (size_t)batch * oh * ow;
    d.y_bstride = (size_t)oh * ow;
    return d;
}

/* The same with the input GroupNorm+SiLU fused in (coefficients in gsc/gsh). */
static sde_be_conv conv3_gn(const unet_plan *p, sde_ten x, int cin, int h, int w, const sde_weight *wt,
                            const float *b, int cout, sde_ten y)
{
    sde_be_conv d = conv3(x, p->batch, cin, h, w, wt, b, cout, 1, y);
    d.in_scale = p->slot[S_GSC];
    d.in_shift = p->slot[S_GSH];
    d.in_silu = 1;
    return d;
}

static void need(unet_plan *p, int slot, size_t n)
{
    p->need[slot] = n > p->need[slot] ? n : p->need[slot];
}

static void need_conv(const sde_unet *u, unet_plan *p, const sde_be_conv *d)
{
    need(p, S_CONV, u->be->conv_scratch(u->be, d, CONV_BUDGET));
}

/* Plans a forward of batch images of h x w latents and n_ctx tokens. With an arena, slots are its pieces at
 * u->slot_off; without, every slot is a distinct SDE_BUF_SIZING placeholder and only the sizes (p->need)
 * count. */
static void plan_build(const sde_unet *u, int batch, int h, int w, int n_ctx, sde_buf *arena, unet_plan *p)
{
    const sde_unet_config *cfg = &u->cfg;
    memset(p, 0, sizeof *p);
    p->batch = batch, p->h = h, p->w = w, p->n_ctx = n_ctx, p->force_resize = u->force_resize;
    for (int i = 0; i < N_SLOTS; i++)
        p->slot[i] = arena ? (sde_ten){arena, u->slot_off[i]} : (sde_ten){SDE_BUF_SIZING, (size_t)i << 24};
    need(p, S_ATTN, 1);
    for (int i = 0; i < u->nskip; i++)
        need(p, i, (size_t)u->skip_ch[i] * batch * lvl_h(h, u->skip_level[i]) * lvl_h(w, u->skip_level[i]));
    /* conv_in from the caller's [B][C][H][W] straight into skip 0 */
    p->conv_in = conv3(p->slot[S_X], batch, cfg->in_channels, h, w, u->in_w, u->in_b, cfg->model_channels, 1,
                       p->slot[0]);
    p->conv_in.x_cstride = (size_t)h * w;
    p->conv_in.x_bstride = (size_t)cfg->in_channels * h * w;
    need_conv(u, p, &p->conv_in);
    int si = 1, ns = u->nskip, cur = 0;
    for (int i = 0; i < u->nblk; i++) {
        const unet_block *b = &u->blk[i];
        unet_step *s = &p->step[p->nstep++];
        const int lh = lvl_h(h, b->level), lw = lvl_h(w, b->level);
        const size_t n = (size_t)batch * lh * lw;
        s->b = b, s->h = lh, s->w = lw;
        p->cmax = b->cin > p->cmax ? b->cin : p->cmax;
        p->cmax = b->cout > p->cmax ? b->cout : p->cmax;
        need(p, S_A, (size_t)(b->cin > b->cout ? b->cin : b->cout) * n);
        need(p, S_B, (size_t)(b->cin > b->cout ? b->cin : b->cout) * n);
        /* where this block's output goes: the next skip slot on the way down, else the free buffer */
        int down = si < u->nskip &&
                   (b->push || (i + 1 < u->nblk && u->blk[i + 1].kind == BLK_ST && u->blk[i + 1].push));
        if (b->kind == BLK_ST) {
            s->in = s->out = p->slot[cur];
            size_t tok = (size_t)b->cout * n, rows = n < FF_ROWS ? n : FF_ROWS,
                   inner = (size_t)u->ff_inner * b->cout;
            for (int t = S_TX; t <= S_TV; t++)
                need(p, t, tok);
            need(p, S_CK, (size_t)b->cout * batch * n_ctx);
            need(p, S_CV, (size_t)b->cout * batch * n_ctx);
            need(p, S_FFH, rows * 2 * inner);
            need(p, S_FFG, rows * inner);
            size_t hw = (size_t)lh * lw, a1 = u->be->attention_scratch(u->be, (int)hw, (int)hw, b->hd),
                   a2 = u->be->attention_scratch(u->be, (int)hw, n_ctx, b->hd);
            need(p, S_ATTN, (a2 > a1 ? a2 : a1) / sizeof(float) + 1);
            if (b->push) si++;
            continue;
        }
        int dst = down ? si : (cur == S_A ? S_B : S_A);
        if (b->kind == BLK_RES) {
            if (b->pop) {
                /* concatenate [cur; skip] along channels: cur already sits at the front of its buffer
                 * unless it is a skip slot (the middle block's input), then it moves to S_B */
                --ns;
                s->skip_ch = u->skip_ch[ns];
                s->head_ch = b->cin - s->skip_ch;
                s->skip = p->slot[ns];
                int cat = (cur == S_A || cur == S_B) ? cur : S_B;
                if (cat != cur) s->head_from = p->slot[cur];
                cur = cat;
                dst = cat == S_A ? S_B : S_A;
            }
            s->in = p->slot[cur], s->out = p->slot[dst];
            const res_w *r = &b->r;
            need(p, S_H1, (size_t)b->cout * n);
            s->c1 = conv3_gn(p, s->in, b->cin, lh, lw, r->conv1_w, r->conv1_b, b->cout, p->slot[S_H1]);
            s->c1.bias_b = p->slot[S_EMBP]; /* the per-image time-embedding projection: a second bias */
            s->c2 = conv3_gn(p, p->slot[S_H1], b->cout, lh, lw, r->conv2_w, r->conv2_b, b->cout, s->out);
            s->c2.accumulate = 1;
            s->cs = (sde_be_conv){.x = s->in,
                                  .batch = batch,
                                  .cin = b->cin,
                                  .h = lh,
                                  .w = lw,
                                  .x_cstride = n,
                                  .x_bstride = (size_t)lh * lw,
                                  .wt = r->skip_w,
                                  .bias = r->skip_b,
                                  .cout = b->cout,
                                  .k = 1,
                                  .stride = 1,
                                  .y = s->out,
                                  .y_cstride = n,
                                  .y_bstride = (size_t)lh * lw};
            need_conv(u, p, &s->c1);
            need_conv(u, p, &s->c2);
            if (r->skip_w) need_conv(u, p, &s->cs);
        } else if (b->kind == BLK_DOWN) {
            s->in = p->slot[cur], s->out = p->slot[dst];
            s->c1 = conv3(s->in, batch, b->cin, lh, lw, b->cw, b->cb, b->cout, 2, s->out);
            need_conv(u, p, &s->c1);
        } else { /* BLK_UP: nearest-resize to the size of the skip it meets next, then conv3x3 */
            s->th = lvl_h(h, b->level - 1), s->tw = lvl_h(w, b->level - 1);
            s->resize = !(s->th == 2 * lh && s->tw == 2 * lw && !u->force_resize);
            s->in = p->slot[cur], s->out = p->slot[dst];
            /* the upsampled input and output land in the activation buffers */
            need(p, S_A, (size_t)(b->cin > b->cout ? b->cin : b->cout) * 4 * n);
            need(p, S_B, (size_t)(b->cin > b->cout ? b->cin : b->cout) * 4 * n);
            /* exactly 2x: the upsample is folded into the conv's input reads */
            sde_be_conv fused = conv3(s->in, batch, b->cin, lh, lw, b->cw, b->cb, b->cout, 1, s->out);
            fused.upsample = 1;
            fused.y_cstride = (size_t)batch * 4 * lh * lw;
            fused.y_bstride = (size_t)4 * lh * lw;
            /* else an odd side one level up (2*lh - 1): resize into the free buffer, convolve back into
             * cur's, whose input is dead by then */
            sde_be_conv odd = conv3(s->out, batch, b->cin, s->th, s->tw, b->cw, b->cb, b->cout, 1, s->in);
            /* the scratch covers both ways and a forced resize at exactly 2x, whichever this shape takes */
            sde_be_conv even = conv3(s->out, batch, b->cin, 2 * lh, 2 * lw, b->cw, b->cb, b->cout, 1, s->in);
            need_conv(u, p, &fused);
            need_conv(u, p, &odd);
            need_conv(u, p, &even);
            s->c1 = s->resize ? odd : fused;
            if (s->resize) dst = cur;
        }
        if (down && b->push) si++;
        cur = dst;
    }
    /* GroupNorm + SiLU fused into the output conv, written as [B][C][H][W] */
    const int c0 = cfg->model_channels * cfg->channel_mult[0];
    p->conv_out = conv3_gn(p, p->slot[cur], c0, h, w, u->out_w, u->out_b, cfg->out_channels, p->slot[S_OUT]);
    p->conv_out.y_cstride = (size_t)h * w;
    p->conv_out.y_bstride = (size_t)cfg->out_channels * h * w;
    need_conv(u, p, &p->conv_out);
    p->need[S_CONV] = (p->need[S_CONV] + sizeof(float) - 1) / sizeof(float); /* bytes so far: now floats */
    need(p, S_GSC, (size_t)batch * p->cmax);
    need(p, S_GSH, (size_t)batch * p->cmax);
    need(p, S_EMBP, (size_t)batch * p->cmax);
    need(p, S_EMB, (size_t)batch * u->temb);
    need(p, S_EMBS, (size_t)batch * u->temb);
    need(p, S_TSIN, (size_t)batch * cfg->model_channels);
    need(p, S_Y, (size_t)batch * cfg->adm_in_channels);
    need(p, S_YH, cfg->adm_in_channels ? (size_t)batch * u->temb : 0);
    need(p, S_X, (size_t)batch * cfg->in_channels * h * w);
    need(p, S_CTX, (size_t)batch * n_ctx * cfg->context_dim);
    need(p, S_OUT, (size_t)batch * cfg->out_channels * h * w);
}

int sde_unet_reserve(sde_unet *u, int batch, int h, int w, int n_ctx, char *err, size_t errlen)
{
    if (batch == 0) { /* releases the activations */
        u->be->free(u->be, u->arena);
        u->arena = NULL;
        free(u->tsin_host);
        u->tsin_host = NULL;
        free(u->y_host);
        u->y_host = NULL;
        u->rb = u->rh = u->rw = u->rctx = 0;
        u->plan.batch = 0;
        return 0;
    }
    if (batch < 0 || batch > 64 || h < 1 || w < 1 || n_ctx < 1 || h > 1024 || w > 1024 || n_ctx > 4096)
        return sde_fail(err, errlen, "UNet: bad reservation %d x %dx%d, %d context tokens", batch, h, w,
                        n_ctx);
    /* every size is recomputed per forward, so a reservation covers all smaller shapes: keep it */
    if (u->arena && batch <= u->rb && h <= u->rh && w <= u->rw && n_ctx <= u->rctx) return 0;
    sde_unet_reserve(u, 0, 0, 0, 0, err, errlen);
    unet_plan *p = &u->plan;
    plan_build(u, batch, h, w, n_ctx, NULL, p);
    /* one arena; every piece rounded to 16 floats so each starts cache-line aligned */
    size_t total = 0;
    for (int i = 0; i < N_SLOTS; i++) {
        if (i == u->nskip && i < MAX_SKIPS) i = MAX_SKIPS;
        u->slot_off[i] = total;
        total += (p->need[i] + 15) & ~(size_t)15;
    }
    char why[128];
    u->arena = u->be->alloc(u->be, total * sizeof(float), why, sizeof why);
    u->tsin_host = malloc(sizeof(float) * batch * u->cfg.model_channels);
    u->y_host = calloc((size_t)batch * u->cfg.adm_in_channels + 1, sizeof(float));
    if (!u->arena || !u->tsin_host || !u->y_host) {
        sde_unet_reserve(u, 0, 0, 0, 0, err, errlen);
        return sde_fail(err, errlen, "UNet: cannot allocate %.0f MB of activations for %d x %dx%d",
                        total * 4.0 / 1048576.0, batch, h, w);
    }
    u->conv_scr_bytes = p->need[S_CONV] * sizeof(float);
    plan_build(u, batch, h, w, n_ctx, u->arena, p);
    u->rb = batch;
    u->rh = h;
    u->rw = w;
    u->rctx = n_ctx;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Forward. */

static void run_conv(const sde_unet *u, const sde_be_conv *d)
{
    u->be->conv(u->be, d, u->plan.slot[S_CONV], u->conv_scr_bytes);
}

/* Sinusoidal timestep features [cos | sin] computed in float like torch and ggml, then the MLP. */
static void time_embedding(sde_unet *u, const unet_plan *p, const float *t)
{
    sde_backend *be = u->be;
    const int mc = u->cfg.model_channels, half = mc / 2, batch = p->batch;
    for (int b = 0; b < batch; b++) {
        float *e = u->tsin_host + (size_t)b * mc;
        for (int i = 0; i < half; i++) {
            float freq = expf(-logf(10000.0f) * (float)i / (float)half);
            float arg = t[b] * freq;
            e[i] = (float)cos((double)arg);
            e[half + i] = (float)sin((double)arg);
        }
        if (mc % 2) e[mc - 1] = 0.0f;
    }
    be->write(be, p->slot[S_TSIN], u->tsin_host, (size_t)batch * mc);
    be->linear(be, p->slot[S_TSIN], batch, mc, u->te0_w, u->te0_b, u->temb, p->slot[S_EMBS], 0);
    be->act(be, p->slot[S_EMBS], (size_t)batch * u->temb, SDE_ACT_SILU);
    be->linear(be, p->slot[S_EMBS], batch, u->temb, u->te2_w, u->te2_b, u->temb, p->slot[S_EMB], 0);
    if (u->cfg.adm_in_channels > 0) { /* SDXL: emb += label_emb(y), y = pooled text | size features */
        const int adm = u->cfg.adm_in_channels;
        be->write(be, p->slot[S_Y], u->y_host, (size_t)batch * adm);
        be->linear(be, p->slot[S_Y], batch, adm, u->le0_w, u->le0_b, u->temb, p->slot[S_YH], 0);
        be->act(be, p->slot[S_YH], (size_t)batch * u->temb, SDE_ACT_SILU);
        be->linear(be, p->slot[S_YH], batch, u->temb, u->le2_w, u->le2_b, u->temb, p->slot[S_EMB],
                   SDE_LIN_ACC);
    }
    be->copy(be, p->slot[S_EMBS], p->slot[S_EMB], (size_t)batch * u->temb);
    be->act(be, p->slot[S_EMBS], (size_t)batch * u->temb, SDE_ACT_SILU);
}

/* ResBlock: out = skip(x) + conv2(GN+SiLU(conv1(GN+SiLU(x)) + emb)), after the skip concatenation. */
static void res_block(sde_unet *u, const unet_plan *p, const unet_step *s)
{
    sde_backend *be = u->be;
    const unet_block *blk = s->b;
    const res_w *r = &blk->r;
    const size_t hw = (size_t)s->h * s->w, n = (size_t)p->batch * hw;
    if (blk->pop) {
        if (s->head_from.buf) be->copy(be, s->in, s->head_from, (size_t)s->head_ch * n);
        be->copy(be, sde_ten_at(s->in, (size_t)s->head_ch * n), s->skip, (size_t)s->skip_ch * n);
    }
    be->linear(be, p->slot[S_EMBS], p->batch, u->temb, r->emb_w, r->emb_b, blk->cout, p->slot[S_EMBP], 0);
    be->gn_coeffs(be, s->in, blk->cin, p->batch, hw, u->cfg.groups, r->gn1_g, r->gn1_b, 1e-5f, p->slot[S_GSC],
                  p->slot[S_GSH]);
    run_conv(u, &s->c1);
    if (r->skip_w)
        run_conv(u, &s->cs);
    else
        be->copy(be, s->out, s->in, (size_t)blk->cout * n);
    be->gn_coeffs(be, p->slot[S_H1], blk->cout, p->batch, hw, u->cfg.groups, r->gn2_g, r->gn2_b, 1e-5f,
                  p->slot[S_GSC], p->slot[S_GSH]);
    run_conv(u, &s->c2);
}

/* SpatialTransformer, in place on x [C][B][hw]. */
static void spatial_transformer(sde_unet *u, const unet_plan *p, const unet_step *st)
{
    sde_backend *be = u->be;
    const st_w *s = &st->b->s;
    const int C = st->b->cout, hd = st->b->hd, heads = st->b->heads, ctxd = u->cfg.context_dim;
    const int batch = p->batch, n_ctx = p->n_ctx, inner = u->ff_inner * C;
    const size_t hw = (size_t)st->h * st->w, n = (size_t)batch * hw;
    const sde_ten x = st->in, tx = p->slot[S_TX], tt = p->slot[S_TT], tq = p->slot[S_TQ], tk = p->slot[S_TK],
                  tv = p->slot[S_TV], ck = p->slot[S_CK], cv = p->slot[S_CV], ctx = p->slot[S_CTX],
                  scr = p->slot[S_ATTN];
    /* GroupNorm (eps 1e-6, no SiLU) into tt as [C][N], then tokens tx[N][C] = tt^T Win^T + b */
    be->gn_coeffs(be, x, C, batch, hw, u->cfg.groups, s->gn_g, s->gn_b, 1e-6f, p->slot[S_GSC],
                  p->slot[S_GSH]);
    be->gn_apply(be, x, C, batch, hw, p->slot[S_GSC], p->slot[S_GSH], 0, tt);
    be->linear(be, tt, (int)n, C, s->pin_w, s->pin_b, C, tx, SDE_LIN_X_CM);
    for (int dpt = 0; dpt < st->b->depth; dpt++) {
        const tblock_w *b = &s->tb[dpt];
        /* self-attention */
        be->layernorm(be, tx, (int)n, C, b->ln1_g, b->ln1_b, 1e-5f, tt);
        be->linear(be, tt, (int)n, C, b->q1, NULL, C, tq, 0);
        be->linear(be, tt, (int)n, C, b->k1, NULL, C, tk, 0);
        be->linear(be, tt, (int)n, C, b->v1, NULL, C, tv, 0);
        for (int i = 0; i < batch; i++) {
            size_t o = (size_t)i * hw * C;
            be->attention(be, sde_ten_at(tq, o), C, sde_ten_at(tk, o), C, sde_ten_at(tv, o), C, (int)hw,
                          (int)hw, heads, hd, 0, sde_ten_at(tt, o), C, scr);
        }
        be->linear(be, tt, (int)n, C, b->o1_w, b->o1_b, C, tx, SDE_LIN_ACC);
        /* cross-attention over the text context */
        be->layernorm(be, tx, (int)n, C, b->ln2_g, b->ln2_b, 1e-5f, tt);
        be->linear(be, tt, (int)n, C, b->q2, NULL, C, tq, 0);
        be->linear(be, ctx, batch * n_ctx, ctxd, b->k2, NULL, C, ck, 0);
        be->linear(be, ctx, batch * n_ctx, ctxd, b->v2, NULL, C, cv, 0);
        for (int i = 0; i < batch; i++) {
            size_t o = (size_t)i * hw * C, oc = (size_t)i * n_ctx * C;
            be->attention(be, sde_ten_at(tq, o), C, sde_ten_at(ck, oc), C, sde_ten_at(cv, oc), C, (int)hw,
                          n_ctx, heads, hd, 0, sde_ten_at(tt, o), C, scr);
        }
        be->linear(be, tt, (int)n, C, b->o2_w, b->o2_b, C, tx, SDE_LIN_ACC);
        /* GEGLU feed-forward, a chunk of tokens at a time */
        be->layernorm(be, tx, (int)n, C, b->ln3_g, b->ln3_b, 1e-5f, tt);
        for (size_t r0 = 0; r0 < n; r0 += FF_ROWS) {
            int rows = (int)(n - r0 < FF_ROWS ? n - r0 : FF_ROWS);
            be->linear(be, sde_ten_at(tt, r0 * C), rows, C, b->ff1_w, b->ff1_b, 2 * inner, p->slot[S_FFH], 0);
            be->geglu(be, p->slot[S_FFH], rows, inner, p->slot[S_FFG]);
            be->linear(be, p->slot[S_FFG], rows, inner, b->ff2_w, b->ff2_b, C, sde_ten_at(tx, r0 * C),
                       SDE_LIN_ACC);
        }
    }
    /* x[C][N] += Wout tx^T + b (the residual is x itself) */
    be->linear(be, tx, (int)n, C, s->pout_w, s->pout_b, C, x, SDE_LIN_Y_CM | SDE_LIN_ACC);
}

/* Nearest-2x (or to the odd skip size) upsample and its 3x3 conv. */
static void upsample_block(sde_unet *u, const unet_plan *p, const unet_step *s)
{
    if (s->resize)
        u->be->resize_nearest(u->be, s->in, s->b->cin * p->batch, s->h, s->w, s->th, s->tw, s->out);
    run_conv(u, &s->c1);
}

static void run_step(sde_unet *u, const unet_plan *p, const unet_step *s)
{
    sde_prof_unet_block(u->be, s->b->level, s->b->push, s->b->pop);
    switch (s->b->kind) {
    case BLK_RES:
        res_block(u, p, s);
        break;
    case BLK_ST:
        spatial_transformer(u, p, s);
        break;
    case BLK_DOWN:
        run_conv(u, &s->c1);
        break;
    case BLK_UP:
        upsample_block(u, p, s);
        break;
    }
}

void sde_unet_forward(sde_unet *u, const float *x, int batch, int h, int w, const float *timesteps,
                      const float *context, int n_ctx, float *out)
{
    const sde_unet_config *cfg = &u->cfg;
    sde_backend *be = u->be;
    if (!u->arena || batch < 1 || batch > u->rb || h < 1 || w < 1 || h > u->rh || w > u->rw ||
        n_ctx > u->rctx || n_ctx < 1) {
        /* not reserved for this shape: NaN says so loudly without touching memory we do not own */
        size_t nout = (size_t)(batch > 0 ? batch : 0) * cfg->out_channels * (h > 0 ? h : 0) * (w > 0 ? w : 0);
        for (size_t i = 0; i < nout; i++)
            out[i] = NAN;
        return;
    }
    unet_plan *p = &u->plan;
    if (p->batch != batch || p->h != h || p->w != w || p->n_ctx != n_ctx ||
        p->force_resize != u->force_resize)
        plan_build(u, batch, h, w, n_ctx, u->arena, p); /* a smaller shape inside the reservation */
    sde_prof_section(be, "unet.in", -1);
    time_embedding(u, p, timesteps);
    be->write(be, p->slot[S_X], x, (size_t)batch * cfg->in_channels * h * w);
    if (context) /* a UNet without transformers may be given none */
        be->write(be, p->slot[S_CTX], context, (size_t)batch * n_ctx * cfg->context_dim);
    run_conv(u, &p->conv_in);
    for (int i = 0; i < p->nstep; i++)
        run_step(u, p, &p->step[i]);
    sde_prof_section(be, "unet.out", -1);
    be->gn_coeffs(be, p->conv_out.x, p->conv_out.cin, batch, (size_t)h * w, cfg->groups, u->out_gn_g,
                  u->out_gn_b, 1e-5f, p->slot[S_GSC], p->slot[S_GSH]);
    run_conv(u, &p->conv_out);
    be->read(be, out, p->slot[S_OUT], (size_t)batch * cfg->out_channels * h * w);
    sde_prof_section(be, NULL, 0);
}

void sde_unet_set_y(sde_unet *u, const float *y, int batch)
{
    if (!u->y_host || u->cfg.adm_in_channels < 1 || batch < 1 || batch > u->rb) return;
    memcpy(u->y_host, y, sizeof(float) * (size_t)batch * u->cfg.adm_in_channels);
}

void sde_unet_force_resize(sde_unet *u, int on)
{
    u->force_resize = on != 0;
}

size_t sde_unet_activation_bytes(const sde_unet *u, int batch, int h, int w, int n_ctx)
{
    unet_plan *p = malloc(sizeof *p);
    if (!p) return SIZE_MAX;
    plan_build(u, batch, h, w, n_ctx, NULL, p);
    size_t total = 0; /* the same sum sde_unet_reserve() allocates */
    for (int i = 0; i < N_SLOTS; i++) {
        if (i == u->nskip && i < MAX_SKIPS) i = MAX_SKIPS;
        total += (p->need[i] + 15) & ~(size_t)15;
    }
    free(p);
    return total * sizeof(float);
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
            double per = hw * C * C * 4 /* q k v out (self) */ + hw * hw * C * 2      /* QK^T, PV */
                         + hw * C * C * 2 + n_ctx * ctxd * C * 2 + hw * n_ctx * C * 2 /* cross */
                         + hw * C * inner * 3 /* GEGLU ff */;
            m += 2 * hw * C * C + b->depth * per;
            break;
        }
        }
    }
    m += (double)cfg->model_channels * cfg->channel_mult[0] * cfg->out_channels * 9 * h * w;
    return m;
}

void sde_unet_use_backend(sde_unet *u, sde_backend *be)
{
    u->be = be;
}
