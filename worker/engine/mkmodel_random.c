/* mkmodel_random.c: the random checkpoints and LoRA of mkmodel_random.h: a tensor table per preset, the
 * safetensors header, then each tensor's own seeded normal stream, in parallel chunks written with pwrite. */
#include "mkmodel_random.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- the tensor table */

/* How a tensor's values come about. */
typedef enum {
    RI_FANIN,    /* N(0, 1/fan_in), fan_in = the product of all dims but the first */
    RI_GAUSS,    /* N(0, sd^2) with the tensor's own sd (biases 0.02, embeddings, LoRA up) */
    RI_FILL,     /* every element = val (norm weights 1, norm biases 0, scalars) */
    RI_SYMFANIN, /* an RI_FANIN square matrix, then each off-diagonal pair (a, b) -> (a + b) / sqrt 2 */
    RI_IOTA,     /* I64 0, 1, 2, ... (position_ids) */
    RI_SCHED,    /* F32 [1000], DDPM schedule buffer number `which` */
} rinit;

typedef struct {
    int nd;
    int64_t d[4];
} rshape;
#define SH0 ((rshape){0, {0}})
#define SH1(a) ((rshape){1, {(a)}})
#define SH2(a, b) ((rshape){2, {(a), (b)}})
#define SH4(a, b, c, e) ((rshape){4, {(a), (b), (c), (e)}})

typedef struct {
    char name[128];
    rinit init;
    rshape shape;
    double param; /* RI_GAUSS: sd; RI_FILL: the value; RI_SCHED: buffer number */
    int esize;    /* bytes per element: 2 (F16), 4 (F32), 8 (I64) */
    int64_t count;
    uint64_t off; /* in the data section */
} rtensor;

typedef struct {
    rtensor *v;
    int n, cap;
    int nomem;
    int wsize; /* element size of weights: 2 or 4 */
} rtable;

static rtensor *rt_add(rtable *tb, rinit init, rshape s, double param, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static rtensor *rt_add(rtable *tb, rinit init, rshape s, double param, const char *fmt, ...)
{
    static rtensor scratch;
    if (tb->nomem) return &scratch;
    if (tb->n == tb->cap) {
        int cap = tb->cap ? tb->cap * 2 : 1024;
        rtensor *v = realloc(tb->v, (size_t)cap * sizeof *v);
        if (!v) {
            tb->nomem = 1;
            return &scratch;
        }
        tb->v = v;
        tb->cap = cap;
    }
    rtensor *t = &tb->v[tb->n++];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->init = init;
    t->shape = s;
    t->param = param;
    t->esize = init == RI_IOTA ? 8 : init == RI_SCHED ? 4 : tb->wsize;
    t->count = 1;
    for (int i = 0; i < s.nd; i++)
        t->count *= s.d[i];
    return t;
}

#define BIAS_SD 0.02

/* Weight [out, in] (+ bias [out]) of a Linear layer called m. */
static void rt_dense(rtable *tb, const char *m, int64_t out, int64_t in, int bias)
{
    rt_add(tb, RI_FANIN, SH2(out, in), 0, "%s.weight", m);
    if (bias) rt_add(tb, RI_GAUSS, SH1(out), BIAS_SD, "%s.bias", m);
}

/* Weight [out, in, k, k] and bias [out] of a convolution called m. */
static void rt_conv(rtable *tb, const char *m, int64_t out, int64_t in, int k)
{
    rt_add(tb, RI_FANIN, SH4(out, in, k, k), 0, "%s.weight", m);
    rt_add(tb, RI_GAUSS, SH1(out), BIAS_SD, "%s.bias", m);
}

/* GroupNorm / LayerNorm m over c channels: weight 1, bias 0. */
static void rt_norm(rtable *tb, const char *m, int64_t c)
{
    rt_add(tb, RI_FILL, SH1(c), 1.0, "%s.weight", m);
    rt_add(tb, RI_FILL, SH1(c), 0.0, "%s.bias", m);
}

/* name = pre "." leaf, in a caller's buffer of 128. */
#define JOIN(buf, pre, ...)                                                                                  \
    (snprintf(buf, sizeof buf, "%s.", pre),                                                                  \
     snprintf(buf + strlen(buf), sizeof buf - strlen(buf), __VA_ARGS__), buf)

/* ---------------------------------------------------------------- UNet (openaimodel, LDM/sgm names) */

typedef struct {
    const char *tag; /* the header's "arch" value; NULL for SD 1.5, whose header has none */
    int64_t context; /* cross-attention context width */
    int linear_proj; /* proj_in/proj_out are Linear [c, c] (else 1x1 convolutions) */
    int levels;      /* len(channel_mult) */
    int mult[4];     /* channel_mult, times 320 */
    int depth[4];    /* transformer blocks per attention at each level; 0: no attention there */
    int mid_depth;   /* transformer blocks in middle_block.1 */
    int64_t adm;     /* width of the label_emb input; 0: no label_emb */
    int schedule;    /* the file carries the 12 DDPM schedule buffers */
} runet;

static const runet UNET_SD15 = {NULL, 768, 0, 4, {1, 2, 4, 4}, {1, 1, 1, 0}, 1, 0, 1};
static const runet UNET_SD21 = {"sd21", 1024, 1, 4, {1, 2, 4, 4}, {1, 1, 1, 0}, 1, 0, 1};
static const runet UNET_SDXL = {"sdxl", 2048, 1, 3, {1, 2, 4, 0}, {0, 2, 10, 0}, 10, 2816, 0};

#define UNET_BASE 320
#define UNET_TEMB 1280

static void unet_resblock(rtable *tb, const char *pre, int64_t cin, int64_t cout)
{
    char b[128];
    rt_norm(tb, JOIN(b, pre, "in_layers.0"), cin);
    rt_conv(tb, JOIN(b, pre, "in_layers.2"), cout, cin, 3);
    rt_dense(tb, JOIN(b, pre, "emb_layers.1"), cout, UNET_TEMB, 1);
    rt_norm(tb, JOIN(b, pre, "out_layers.0"), cout);
    rt_conv(tb, JOIN(b, pre, "out_layers.3"), cout, cout, 3);
    if (cin != cout) rt_conv(tb, JOIN(b, pre, "skip_connection"), cout, cin, 1);
}

static void unet_proj(rtable *tb, const runet *u, const char *m, int64_t c)
{
    if (u->linear_proj)
        rt_dense(tb, m, c, c, 1);
    else
        rt_conv(tb, m, c, c, 1);
}

/* SpatialTransformer with `depth` BasicTransformerBlocks (GEGLU feed-forward 4c). */
static void unet_transformer(rtable *tb, const runet *u, const char *pre, int64_t c, int depth)
{
    char b[128];
    rt_norm(tb, JOIN(b, pre, "norm"), c);
    unet_proj(tb, u, JOIN(b, pre, "proj_in"), c);
    unet_proj(tb, u, JOIN(b, pre, "proj_out"), c);
    for (int d = 0; d < depth; d++) {
        static const char *const qkv[3] = {"to_q", "to_k", "to_v"};
        for (int a = 1; a <= 2; a++) {
            for (int k = 0; k < 3; k++) /* attn2's keys and values come from the text context */
                rt_dense(tb, JOIN(b, pre, "transformer_blocks.%d.attn%d.%s", d, a, qkv[k]), c,
                         a == 2 && k > 0 ? u->context : c, 0);
            rt_dense(tb, JOIN(b, pre, "transformer_blocks.%d.attn%d.to_out.0", d, a), c, c, 1);
        }
        rt_dense(tb, JOIN(b, pre, "transformer_blocks.%d.ff.net.0.proj", d), 8 * c, c, 1);
        rt_dense(tb, JOIN(b, pre, "transformer_blocks.%d.ff.net.2", d), c, 4 * c, 1);
        for (int k = 1; k <= 3; k++)
            rt_norm(tb, JOIN(b, pre, "transformer_blocks.%d.norm%d", d, k), c);
    }
}

/* in_ch: the stem's input channels, 4, or 9 for an inpainting UNet (noisy latent, mask, masked image) */
static void unet_build(rtable *tb, const runet *u, int64_t in_ch)
{
    const char *R = "model.diffusion_model";
    char b[128], blk[128];
    int64_t skips[16];
    int nskip = 0;

    rt_dense(tb, JOIN(b, R, "time_embed.0"), UNET_TEMB, UNET_BASE, 1);
    rt_dense(tb, JOIN(b, R, "time_embed.2"), UNET_TEMB, UNET_TEMB, 1);
    if (u->adm) {
        rt_dense(tb, JOIN(b, R, "label_emb.0.0"), UNET_TEMB, u->adm, 1);
        rt_dense(tb, JOIN(b, R, "label_emb.0.2"), UNET_TEMB, UNET_TEMB, 1);
    }

    /* encoder half: the stem, two resblocks per level (each followed by its attention where the level has
     * one) and a stride-2 conv between levels; every block's output is a skip for the decoder half */
    int64_t c = UNET_BASE;
    rt_conv(tb, JOIN(b, R, "input_blocks.0.0"), c, in_ch, 3);
    skips[nskip++] = c;
    int n = 1;
    for (int lv = 0; lv < u->levels; lv++) {
        int64_t width = (int64_t)u->mult[lv] * UNET_BASE;
        for (int r = 0; r < 2; r++, n++) {
            unet_resblock(tb, JOIN(blk, R, "input_blocks.%d.0", n), c, width);
            c = width;
            if (u->depth[lv]) unet_transformer(tb, u, JOIN(blk, R, "input_blocks.%d.1", n), c, u->depth[lv]);
            skips[nskip++] = c;
        }
        if (lv + 1 < u->levels) {
            rt_conv(tb, JOIN(b, R, "input_blocks.%d.0.op", n), c, c, 3);
            skips[nskip++] = c;
            n++;
        }
    }

    unet_resblock(tb, JOIN(blk, R, "middle_block.0"), c, c);
    unet_transformer(tb, u, JOIN(blk, R, "middle_block.1"), c, u->mid_depth);
    unet_resblock(tb, JOIN(blk, R, "middle_block.2"), c, c);

    /* decoder half: three resblocks per level on (input ++ skip), attention as above, an upsampling conv
     * after the third block of every level but the last */
    n = 0;
    for (int lv = u->levels - 1; lv >= 0; lv--) {
        int64_t width = (int64_t)u->mult[lv] * UNET_BASE;
        for (int r = 0; r < 3; r++, n++) {
            unet_resblock(tb, JOIN(blk, R, "output_blocks.%d.0", n), c + skips[--nskip], width);
            c = width;
            int sub = 1;
            if (u->depth[lv])
                unet_transformer(tb, u, JOIN(blk, R, "output_blocks.%d.%d", n, sub++), c, u->depth[lv]);
            if (r == 2 && lv > 0) rt_conv(tb, JOIN(b, R, "output_blocks.%d.%d.conv", n, sub), c, c, 3);
        }
    }
    rt_norm(tb, JOIN(b, R, "out.0"), c);
    rt_conv(tb, JOIN(b, R, "out.2"), 4, c, 3);
}

/* ---------------------------------------------------------------- VAE (the same for every preset) */

static void vae_resblock(rtable *tb, const char *pre, int64_t cin, int64_t cout)
{
    char b[128];
    rt_norm(tb, JOIN(b, pre, "norm1"), cin);
    rt_conv(tb, JOIN(b, pre, "conv1"), cout, cin, 3);
    rt_norm(tb, JOIN(b, pre, "norm2"), cout);
    rt_conv(tb, JOIN(b, pre, "conv2"), cout, cout, 3);
    if (cin != cout) rt_conv(tb, JOIN(b, pre, "nin_shortcut"), cout, cin, 1);
}

/* the middle of encoder or decoder: resblock, single-head attention of 1x1 convs, resblock */
static void vae_middle(rtable *tb, const char *pre, int64_t c)
{
    char b[128];
    static const char *const convs[4] = {"q", "k", "v", "proj_out"};
    vae_resblock(tb, JOIN(b, pre, "mid.block_1"), c, c);
    rt_norm(tb, JOIN(b, pre, "mid.attn_1.norm"), c);
    for (int i = 0; i < 4; i++)
        rt_conv(tb, JOIN(b, pre, "mid.attn_1.%s", convs[i]), c, c, 1);
    vae_resblock(tb, JOIN(b, pre, "mid.block_2"), c, c);
}

static void vae_build(rtable *tb)
{
    static const int64_t width[4] = {128, 256, 512, 512};
    const char *E = "first_stage_model.encoder", *D = "first_stage_model.decoder";
    char b[128];

    int64_t c = width[0];
    rt_conv(tb, JOIN(b, E, "conv_in"), c, 3, 3);
    for (int lv = 0; lv < 4; lv++) {
        for (int i = 0; i < 2; i++) {
            vae_resblock(tb, JOIN(b, E, "down.%d.block.%d", lv, i), c, width[lv]);
            c = width[lv];
        }
        if (lv < 3) rt_conv(tb, JOIN(b, E, "down.%d.downsample.conv", lv), c, c, 3);
    }
    vae_middle(tb, E, c);
    rt_norm(tb, JOIN(b, E, "norm_out"), c);
    rt_conv(tb, JOIN(b, E, "conv_out"), 8, c, 3); /* mean and logvar of 4 latent channels */

    rt_conv(tb, "first_stage_model.quant_conv", 8, 8, 1);
    rt_conv(tb, "first_stage_model.post_quant_conv", 4, 4, 1);

    c = width[3];
    rt_conv(tb, JOIN(b, D, "conv_in"), c, 4, 3);
    vae_middle(tb, D, c);
    for (int lv = 3; lv >= 0; lv--) {
        for (int i = 0; i < 3; i++) {
            vae_resblock(tb, JOIN(b, D, "up.%d.block.%d", lv, i), c, width[lv]);
            c = width[lv];
        }
        if (lv > 0) rt_conv(tb, JOIN(b, D, "up.%d.upsample.conv", lv), c, c, 3);
    }
    rt_norm(tb, JOIN(b, D, "norm_out"), c);
    rt_conv(tb, JOIN(b, D, "conv_out"), 3, c, 3);
}

/* ---------------------------------------------------------------- text encoders */

#define VOCAB 49408
#define CTX_LEN 77
#define TOKEN_SD 0.02
#define POSITION_SD 0.01

/* CLIP ViT-L/14 text model in HF transformers names under root (".text_model" included). */
static void clip_l_build(rtable *tb, const char *root)
{
    const int64_t w = 768;
    char b[128];
    static const char *const attn[4] = {"k_proj", "v_proj", "q_proj", "out_proj"};
    rt_add(tb, RI_GAUSS, SH2(VOCAB, w), TOKEN_SD, "%s.embeddings.token_embedding.weight", root);
    rt_add(tb, RI_GAUSS, SH2(CTX_LEN, w), POSITION_SD, "%s.embeddings.position_embedding.weight", root);
    rt_add(tb, RI_IOTA, SH2(1, CTX_LEN), 0, "%s.embeddings.position_ids", root);
    for (int l = 0; l < 12; l++) {
        for (int i = 0; i < 4; i++)
            rt_dense(tb, JOIN(b, root, "encoder.layers.%d.self_attn.%s", l, attn[i]), w, w, 1);
        rt_norm(tb, JOIN(b, root, "encoder.layers.%d.layer_norm1", l), w);
        rt_dense(tb, JOIN(b, root, "encoder.layers.%d.mlp.fc1", l), 4 * w, w, 1);
        rt_dense(tb, JOIN(b, root, "encoder.layers.%d.mlp.fc2", l), w, 4 * w, 1);
        rt_norm(tb, JOIN(b, root, "encoder.layers.%d.layer_norm2", l), w);
    }
    rt_norm(tb, JOIN(b, root, "final_layer_norm"), w);
}

/* OpenCLIP text tower (ViT-H/14 for SD 2.x, ViT-bigG/14 for SDXL) under root: fused q/k/v projections,
 * every resblock stored, text_projection [w, w] used as x @ P, a scalar logit_scale. */
static void openclip_build(rtable *tb, const char *root, int64_t w, int layers, double logit_scale,
                           int sym_proj)
{
    char b[128];
    rt_add(tb, RI_GAUSS, SH2(VOCAB, w), TOKEN_SD, "%s.token_embedding.weight", root);
    rt_add(tb, RI_GAUSS, SH2(CTX_LEN, w), POSITION_SD, "%s.positional_embedding", root);
    for (int l = 0; l < layers; l++) {
        rt_norm(tb, JOIN(b, root, "transformer.resblocks.%d.ln_1", l), w);
        rt_add(tb, RI_FANIN, SH2(3 * w, w), 0, "%s.transformer.resblocks.%d.attn.in_proj_weight", root, l);
        rt_add(tb, RI_GAUSS, SH1(3 * w), BIAS_SD, "%s.transformer.resblocks.%d.attn.in_proj_bias", root, l);
        rt_dense(tb, JOIN(b, root, "transformer.resblocks.%d.attn.out_proj", l), w, w, 1);
        rt_norm(tb, JOIN(b, root, "transformer.resblocks.%d.ln_2", l), w);
        rt_dense(tb, JOIN(b, root, "transformer.resblocks.%d.mlp.c_fc", l), 4 * w, w, 1);
        rt_dense(tb, JOIN(b, root, "transformer.resblocks.%d.mlp.c_proj", l), w, 4 * w, 1);
    }
    rt_norm(tb, JOIN(b, root, "ln_final"), w);
    rt_add(tb, sym_proj ? RI_SYMFANIN : RI_FANIN, SH2(w, w), 0, "%s.text_projection", root);
    rt_add(tb, RI_FILL, SH0, logit_scale, "%s.logit_scale", root);
}

/* ---------------------------------------------------------------- DDPM schedule buffers */

static const char *const SCHED_NAMES[12] = {
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
};
#define SCHED_T 1000

/* out[0..1000) = buffer `which` of LDM's register_schedule ("scaled linear" betas from 0.00085 to 0.012),
 * evaluated in double and stored as float. */
static void sched_values(int which, float *out)
{
    const double lo = sqrt(0.00085), hi = sqrt(0.012);
    double keep = 1.0; /* alphas_cumprod up to the previous step */
    for (int i = 0; i < SCHED_T; i++) {
        double root = lo + (hi - lo) * (double)i / (double)(SCHED_T - 1);
        double beta = root * root;
        double prev = keep;
        keep *= 1.0 - beta;
        double cum = keep;
        double post = beta * (1.0 - prev) / (1.0 - cum);
        double v;
        switch (which) {
        case 0:
            v = beta;
            break;
        case 1:
            v = cum;
            break;
        case 2:
            v = prev;
            break;
        case 3:
            v = sqrt(cum);
            break;
        case 4:
            v = sqrt(1.0 - cum);
            break;
        case 5:
            v = log(1.0 - cum);
            break;
        case 6:
            v = sqrt(1.0 / cum);
            break;
        case 7:
            v = sqrt(1.0 / cum - 1.0);
            break;
        case 8:
            v = post;
            break;
        case 9:
            v = log(post > 1e-20 ? post : 1e-20);
            break;
        case 10:
            v = beta * sqrt(prev) / (1.0 - cum);
            break;
        default:
            v = (1.0 - prev) * sqrt(1.0 - beta) / (1.0 - cum);
            break;
        }
        out[i] = (float)v;
    }
}

/* ---------------------------------------------------------------- LoRA (kohya-ss names) for SD 1.5 */

#define LORA_RANK 4
#define LORA_ALPHA 4.0

/* one LoRA module for a layer W [out, in]: lora_down [rank, in] ~ N(0, 1/in), lora_up [out, rank] ~
 * N(0, 0.5/rank) (4-D with 1x1 trailing dims for a 1x1 convolution) and a scalar alpha */
static void lora_module(rtable *tb, const char *m, int64_t out, int64_t in, int conv)
{
    rt_add(tb, RI_FANIN, conv ? SH4(LORA_RANK, in, 1, 1) : SH2(LORA_RANK, in), 0, "%s.lora_down.weight", m);
    rt_add(tb, RI_GAUSS, conv ? SH4(out, LORA_RANK, 1, 1) : SH2(out, LORA_RANK), sqrt(0.5 / LORA_RANK),
           "%s.lora_up.weight", m);
    rt_add(tb, RI_FILL, SH0, LORA_ALPHA, "%s.alpha", m);
}

/* the layers of one diffusers Transformer2DModel (depth 1) of the SD 1.5 UNet, called pre with '_' */
static void lora_transformer(rtable *tb, const char *pre, int64_t c)
{
    static const char *const lin[4] = {"to_q", "to_k", "to_v", "to_out_0"};
    char m[128];
    snprintf(m, sizeof m, "%s_proj_in", pre);
    lora_module(tb, m, c, c, !UNET_SD15.linear_proj);
    snprintf(m, sizeof m, "%s_proj_out", pre);
    lora_module(tb, m, c, c, !UNET_SD15.linear_proj);
    for (int a = 1; a <= 2; a++)
        for (int k = 0; k < 4; k++) {
            snprintf(m, sizeof m, "%s_transformer_blocks_0_attn%d_%s", pre, a, lin[k]);
            lora_module(tb, m, c, a == 2 && (k == 1 || k == 2) ? UNET_SD15.context : c, 0);
        }
    snprintf(m, sizeof m, "%s_transformer_blocks_0_ff_net_0_proj", pre);
    lora_module(tb, m, 8 * c, c, 0);
    snprintf(m, sizeof m, "%s_transformer_blocks_0_ff_net_2", pre);
    lora_module(tb, m, c, 4 * c, 0);
}

static void lora_sd15_build(rtable *tb)
{
    static const int64_t width[4] = {320, 640, 1280, 1280};
    char m[128];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) {
            snprintf(m, sizeof m, "lora_unet_down_blocks_%d_attentions_%d", i, j);
            lora_transformer(tb, m, width[i]);
        }
    lora_transformer(tb, "lora_unet_mid_block_attentions_0", width[3]);
    for (int i = 1; i < 4; i++) /* up_blocks.0 has no attention */
        for (int j = 0; j < 3; j++) {
            snprintf(m, sizeof m, "lora_unet_up_blocks_%d_attentions_%d", i, j);
            lora_transformer(tb, m, width[3 - i]);
        }
    for (int l = 0; l < 12; l++) {
        static const char *const proj[4] = {"q", "k", "v", "out"};
        for (int k = 0; k < 4; k++) {
            snprintf(m, sizeof m, "lora_te_text_model_encoder_layers_%d_self_attn_%s_proj", l, proj[k]);
            lora_module(tb, m, 768, 768, 0);
        }
        snprintf(m, sizeof m, "lora_te_text_model_encoder_layers_%d_mlp_fc1", l);
        lora_module(tb, m, 3072, 768, 0);
        snprintf(m, sizeof m, "lora_te_text_model_encoder_layers_%d_mlp_fc2", l);
        lora_module(tb, m, 768, 3072, 0);
    }
}

/* ---------------------------------------------------------------- TAESD (diffusers AutoencoderTiny) */

#define TAESD_CH 64
#define TAESD_OUT_SD 0.004

/* a Block of taesd.py: conv.0, conv.2, conv.4 (3x3, bias) with ReLUs between; in == out, so no skip */
static void taesd_block(rtable *tb, const char *coder, int i)
{
    char m[128];
    for (int k = 0; k < 3; k++) {
        snprintf(m, sizeof m, "%s.layers.%d.conv.%d", coder, i, 2 * k);
        rt_conv(tb, m, TAESD_CH, TAESD_CH, 3);
    }
}

/* Encoder: 0 conv(3, 64), 1 block, then 3 x (conv stride 2 without bias, 3 blocks), 14 conv(64, 4).
 * Decoder: 0 conv(4, 64), (1 ReLU), 2-4 blocks, (5 upsample), 6 conv without bias, 7-9, (10), 11, 12-14,
 * (15), 16, 17 block, 18 conv(64, 3). */
static void taesd_build(rtable *tb)
{
    rt_conv(tb, "encoder.layers.0", TAESD_CH, 3, 3);
    taesd_block(tb, "encoder", 1);
    for (int s = 0, i = 2; s < 3; s++) {
        rt_add(tb, RI_FANIN, SH4(TAESD_CH, TAESD_CH, 3, 3), 0, "encoder.layers.%d.weight", i++);
        for (int b = 0; b < 3; b++)
            taesd_block(tb, "encoder", i++);
    }
    rt_conv(tb, "encoder.layers.14", 4, TAESD_CH, 3);
    rt_conv(tb, "decoder.layers.0", TAESD_CH, 4, 3);
    static const int blocks[10] = {2, 3, 4, 7, 8, 9, 12, 13, 14, 17};
    for (int b = 0; b < 10; b++)
        taesd_block(tb, "decoder", blocks[b]);
    for (int i = 6; i <= 16; i += 5)
        rt_add(tb, RI_FANIN, SH4(TAESD_CH, TAESD_CH, 3, 3), 0, "decoder.layers.%d.weight", i);
    /* the RGB conv scaled down and biased to mid-grey, so that the random decoder's image is texture rather
     * than mostly clipped to 0 or 1 (its input grows through the residual blocks) */
    rt_add(tb, RI_GAUSS, SH4(3, TAESD_CH, 3, 3), TAESD_OUT_SD, "decoder.layers.18.weight");
    rt_add(tb, RI_FILL, SH1(3), 0.5, "decoder.layers.18.bias");
}

/* The CLIP text encoder layers of one kohya text encoder prefix (lora_te_, lora_te1_, lora_te2_). */
static void lora_clip(rtable *tb, const char *pre, int layers, int64_t d)
{
    char m[160];
    for (int l = 0; l < layers; l++) {
        static const char *const proj[4] = {"q", "k", "v", "out"};
        for (int k = 0; k < 4; k++) {
            snprintf(m, sizeof m, "%stext_model_encoder_layers_%d_self_attn_%s_proj", pre, l, proj[k]);
            lora_module(tb, m, d, d, 0);
        }
        snprintf(m, sizeof m, "%stext_model_encoder_layers_%d_mlp_fc1", pre, l);
        lora_module(tb, m, 4 * d, d, 0);
        snprintf(m, sizeof m, "%stext_model_encoder_layers_%d_mlp_fc2", pre, l);
        lora_module(tb, m, d, 4 * d, 0);
    }
}

/* SDXL, as kohya's SDXL trainer names it: the UNet's attention layers by their LDM blocks (Linear proj_in
 * / proj_out, every transformer block of each depth-2 / depth-10 stack), CLIP-L as lora_te1_, bigG as
 * lora_te2_ (HF layer names; the checkpoint's fused in_proj takes q/k/v as row blocks). */
static void lora_sdxl_build(rtable *tb)
{
    static const struct {
        const char *blk;
        int64_t c;
        int depth;
    } st[] = {
        {"input_blocks_4_1", 640, 2},    {"input_blocks_5_1", 640, 2},    {"input_blocks_7_1", 1280, 10},
        {"input_blocks_8_1", 1280, 10},  {"middle_block_1", 1280, 10},    {"output_blocks_0_1", 1280, 10},
        {"output_blocks_1_1", 1280, 10}, {"output_blocks_2_1", 1280, 10}, {"output_blocks_3_1", 640, 2},
        {"output_blocks_4_1", 640, 2},   {"output_blocks_5_1", 640, 2}};
    static const char *const lin[4] = {"to_q", "to_k", "to_v", "to_out_0"};
    char m[160];
    for (size_t i = 0; i < sizeof st / sizeof *st; i++) {
        const int64_t c = st[i].c;
        snprintf(m, sizeof m, "lora_unet_%s_proj_in", st[i].blk);
        lora_module(tb, m, c, c, 0);
        snprintf(m, sizeof m, "lora_unet_%s_proj_out", st[i].blk);
        lora_module(tb, m, c, c, 0);
        for (int d = 0; d < st[i].depth; d++) {
            for (int a = 1; a <= 2; a++)
                for (int k = 0; k < 4; k++) {
                    snprintf(m, sizeof m, "lora_unet_%s_transformer_blocks_%d_attn%d_%s", st[i].blk, d, a,
                             lin[k]);
                    lora_module(tb, m, c, a == 2 && (k == 1 || k == 2) ? UNET_SDXL.context : c, 0);
                }
            snprintf(m, sizeof m, "lora_unet_%s_transformer_blocks_%d_ff_net_0_proj", st[i].blk, d);
            lora_module(tb, m, 8 * c, c, 0);
            snprintf(m, sizeof m, "lora_unet_%s_transformer_blocks_%d_ff_net_2", st[i].blk, d);
            lora_module(tb, m, c, 4 * c, 0);
        }
    }
    lora_clip(tb, "lora_te1_", 12, 768);
    lora_clip(tb, "lora_te2_", 32, 1280);
}

/* ---------------------------------------------------------------- presets */

int sde_rand_preset_parse(const char *name, sde_rand_preset *out)
{
    static const struct {
        const char *name;
        sde_rand_preset p;
    } names[] = {{"sd15-random", SDE_RAND_SD15},          {"sd21-random", SDE_RAND_SD21},
                 {"sdxl-random", SDE_RAND_SDXL},          {"lora-sd15-random", SDE_RAND_LORA_SD15},
                 {"taesd-random", SDE_RAND_TAESD},        {"sd15-inpaint-random", SDE_RAND_SD15_INPAINT},
                 {"lora-sdxl-random", SDE_RAND_LORA_SDXL}};
    for (size_t i = 0; name && i < sizeof names / sizeof *names; i++)
        if (!strcmp(name, names[i].name)) {
            *out = names[i].p;
            return 0;
        }
    return -1;
}

/* File order: wider elements first (I64, then F32, then F16), by name (strcmp) within a width. */
static int rt_order(const void *a, const void *b)
{
    const rtensor *x = a, *y = b;
    if (x->esize != y->esize) return y->esize - x->esize;
    return strcmp(x->name, y->name);
}

/* Fills tb with preset p's tensors in file order, offsets set; returns the data size, or -1 without memory.
 */
static int64_t rt_build(rtable *tb, sde_rand_preset p, int f32)
{
    memset(tb, 0, sizeof *tb);
    tb->wsize = f32 ? 4 : 2;
    const runet *u = p == SDE_RAND_SD21 ? &UNET_SD21 : p == SDE_RAND_SDXL ? &UNET_SDXL : &UNET_SD15;
    if (p == SDE_RAND_LORA_SD15) {
        lora_sd15_build(tb);
    } else if (p == SDE_RAND_TAESD) {
        taesd_build(tb);
    } else if (p == SDE_RAND_LORA_SDXL) {
        lora_sdxl_build(tb);
    } else {
        if (p == SDE_RAND_SD15 || p == SDE_RAND_SD15_INPAINT) {
            clip_l_build(tb, "cond_stage_model.transformer.text_model");
        } else if (p == SDE_RAND_SD21) {
            openclip_build(tb, "cond_stage_model.model", 1024, 24, log(1.0 / 0.07), 0);
        } else {
            clip_l_build(tb, "conditioner.embedders.0.transformer.text_model");
            openclip_build(tb, "conditioner.embedders.1.model", 1280, 32, log(100.0), 1);
        }
        unet_build(tb, u, p == SDE_RAND_SD15_INPAINT ? 9 : 4);
        vae_build(tb);
        for (int i = 0; u->schedule && i < 12; i++)
            rt_add(tb, RI_SCHED, SH1(SCHED_T), i, "%s", SCHED_NAMES[i]);
    }
    if (tb->nomem) {
        free(tb->v);
        tb->v = NULL;
        return -1;
    }
    qsort(tb->v, (size_t)tb->n, sizeof *tb->v, rt_order);
    uint64_t off = 0;
    for (int i = 0; i < tb->n; i++) {
        tb->v[i].off = off;
        off += (uint64_t)tb->v[i].count * (uint64_t)tb->v[i].esize;
    }
    return (int64_t)off;
}

static const char *esize_dtype(int esize)
{
    return esize == 2 ? "F16" : esize == 4 ? "F32" : "I64";
}

int sde_mkmodel_random_list(sde_rand_preset p, int f32,
                            void (*fn)(void *ud, const char *name, const char *dtype, int ndim,
                                       const int64_t *shape),
                            void *ud)
{
    rtable tb;
    if (rt_build(&tb, p, f32) < 0) return -1;
    for (int i = 0; i < tb.n; i++)
        fn(ud, tb.v[i].name, esize_dtype(tb.v[i].esize), tb.v[i].shape.nd, tb.v[i].shape.d);
    free(tb.v);
    return tb.n;
}

/* ---------------------------------------------------------------- the header */

typedef struct {
    char *s;
    size_t len, cap;
    int nomem;
} rstr;

static void rs_printf(rstr *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rs_printf(rstr *r, const char *fmt, ...)
{
    for (;;) {
        if (r->nomem) return;
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(r->s ? r->s + r->len : NULL, r->s ? r->cap - r->len : 0, fmt, ap);
        va_end(ap);
        if (k >= 0 && r->s && (size_t)k < r->cap - r->len) {
            r->len += (size_t)k;
            return;
        }
        size_t cap = (r->cap + (size_t)(k > 0 ? k : 0)) * 2 + 4096;
        char *s = realloc(r->s, cap);
        if (!s) {
            r->nomem = 1;
            return;
        }
        r->s = s;
        r->cap = cap;
    }
}

/* The JSON header: metadata (kept as the specification's generator writes it), then every tensor in file
 * order, padded with spaces to a multiple of 8. */
static int rt_header(const rtable *tb, sde_rand_preset p, uint64_t seed, int f32, rstr *h)
{
    rs_printf(
        h,
        "{\"__metadata__\":{\"format\":\"pt\",\"generator\":\"mkrandsd\",\"seed\":\"%llu\",\"dtype\":\"%s\"",
        (unsigned long long)seed, f32 ? "F32" : "F16");
    if (p == SDE_RAND_LORA_SD15 || p == SDE_RAND_LORA_SDXL)
        rs_printf(h, ",\"lora_for\":\"%s\",\"rank\":\"%d\",\"alpha\":\"%g\"",
                  p == SDE_RAND_LORA_SDXL ? "sdxl" : "sd15", LORA_RANK, LORA_ALPHA);
    else if (p == SDE_RAND_TAESD)
        rs_printf(h, ",\"arch\":\"taesd\"");
    else
        rs_printf(h, ",\"jitter_norms\":\"0\"");
    const char *tag = p == SDE_RAND_SD21 ? UNET_SD21.tag : p == SDE_RAND_SDXL ? UNET_SDXL.tag : NULL;
    if (p == SDE_RAND_SD15_INPAINT) tag = "sd15-inpaint";
    if (tag) rs_printf(h, ",\"arch\":\"%s\"", tag);
    rs_printf(h, "}");
    for (int i = 0; i < tb->n; i++) {
        const rtensor *t = &tb->v[i];
        rs_printf(h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name, esize_dtype(t->esize));
        for (int d = 0; d < t->shape.nd; d++)
            rs_printf(h, d ? ",%lld" : "%lld", (long long)t->shape.d[d]);
        rs_printf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)t->off,
                  (unsigned long long)(t->off + (uint64_t)t->count * (uint64_t)t->esize));
    }
    rs_printf(h, "}");
    while (!h->nomem && h->len % 8)
        rs_printf(h, " ");
    return h->nomem ? -1 : 0;
}

/* ---------------------------------------------------------------- values */

/* Each tensor's normals come from its own counter-based stream: base = mix(seed ^ FNV-1a-64(name) + G), word
 * k (k = 1, 2, ...) = mix(base + k G) with splitmix64's G and finaliser, so any chunk can start anywhere. */
#define GOLDEN 0x9E3779B97F4A7C15ull

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t stream_base(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        h = (h ^ *c) * 0x100000001b3ull;
    return mix64((seed ^ h) + GOLDEN);
}

/* 53 random bits to the open interval (0, 1): (k + 1/2) / 2^53 */
static inline double open01(uint64_t w)
{
    return ((double)(w >> 11) + 0.5) * 0x1p-53;
}

/* out[i] = (float)(sd * z[first + i]) for i < n, where z is the stream's standard normal sequence: the
 * Box-Muller pair m takes words 2m+1 (radius) and 2m+2 (angle) and gives z[2m] = r cos, z[2m+1] = r sin. */
static void normals(uint64_t base, double sd, int64_t first, int64_t n, float *out)
{
    int64_t pair = first / 2, end = first + n;
    for (int64_t e = pair * 2; e < end; e += 2, pair++) {
        uint64_t k = (uint64_t)pair * 2 + 1;
        double r = sqrt(-2.0 * log(open01(mix64(base + k * GOLDEN))));
        double th = 6.283185307179586476925 * open01(mix64(base + (k + 1) * GOLDEN));
        double c = r * cos(th), s = r * sin(th);
        if (e >= first) out[e - first] = (float)(sd * c);
        if (e + 1 < end) out[e + 1 - first] = (float)(sd * s);
    }
}

/* IEEE binary16 nearest to f, ties to even (overflow to infinity; NaN stays NaN). */
static inline uint16_t to_half(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t mag = x & 0x7fffffffu;
    if (mag > 0x7f800000u) return sign | 0x7e00u;
    if (mag >= 0x477ff000u) /* at least 65520: rounds past the largest half */
        return sign | 0x7c00u;
    if (mag < 0x38800000u) { /* below 2^-14: a subnormal half counts units of 2^-24, exactly */
        float units = nearbyintf(fabsf(f) * 0x1p24f);
        return sign | (uint16_t)units;
    }
    uint32_t h = (mag >> 13) - (112u << 10); /* rebias 127 -> 15, keep 10 mantissa bits */
    uint32_t rest = mag & 0x1fffu;
    h += rest > 0x1000u || (rest == 0x1000u && (h & 1u));
    return sign | (uint16_t)h;
}

/* ---------------------------------------------------------------- parallel writer */

#define CHUNK (1 << 20) /* elements per work item (even, so Box-Muller pairs never straddle two) */

typedef struct {
    int ti;
    int64_t first, n;
} ritem;

typedef struct {
    const rtable *tb;
    uint64_t seed;
    int fd;
    uint64_t data_at; /* file offset of the data section */
    ritem *items;
    int nitems;
    atomic_int next;
    atomic_int failed;
    pthread_mutex_t lock;
    char *err;
    size_t errlen;
} rjob;

static void job_fail(rjob *j, const char *what, int e)
{
    pthread_mutex_lock(&j->lock);
    if (!atomic_exchange(&j->failed, 1)) snprintf(j->err, j->errlen, "%s: %s", what, strerror(e));
    pthread_mutex_unlock(&j->lock);
}

/* vals[0..it->n) for one work item */
static int item_values(rjob *j, const ritem *it, float *vals)
{
    const rtensor *t = &j->tb->v[it->ti];
    switch (t->init) {
    case RI_FANIN:
    case RI_GAUSS: {
        double sd = t->param;
        if (t->init == RI_FANIN) {
            int64_t fan_in = 1;
            for (int d = 1; d < t->shape.nd; d++)
                fan_in *= t->shape.d[d];
            sd = 1.0 / sqrt((double)fan_in);
        }
        normals(stream_base(j->seed, t->name), sd, it->first, it->n, vals);
        return 0;
    }
    case RI_SYMFANIN: {
        int64_t w = t->shape.d[0];
        normals(stream_base(j->seed, t->name), 1.0 / sqrt((double)t->shape.d[1]), 0, t->count, vals);
        for (int64_t a = 0; a < w; a++)
            for (int64_t b = a + 1; b < w; b++) {
                float v = (float)(((double)vals[a * w + b] + (double)vals[b * w + a]) / sqrt(2.0));
                vals[a * w + b] = vals[b * w + a] = v;
            }
        return 0;
    }
    case RI_FILL:
        for (int64_t i = 0; i < it->n; i++)
            vals[i] = (float)t->param;
        return 0;
    case RI_SCHED:
        sched_values((int)t->param, vals);
        return 0;
    case RI_IOTA:
        return 0; /* written from the index */
    }
    return 0;
}

static void *job_worker(void *arg)
{
    rjob *j = arg;
    size_t cap = CHUNK;
    float *vals = malloc(cap * sizeof *vals);
    uint8_t *bytes = malloc(cap * 8);
    if (!vals || !bytes) {
        job_fail(j, "out of memory", ENOMEM);
        goto out;
    }
    for (;;) {
        int k = atomic_fetch_add(&j->next, 1);
        if (k >= j->nitems || atomic_load(&j->failed)) break;
        const ritem *it = &j->items[k];
        const rtensor *t = &j->tb->v[it->ti];
        if ((size_t)it->n > cap) { /* a whole tensor in one item (the symmetric projection) */
            cap = (size_t)it->n;
            float *v2 = realloc(vals, cap * sizeof *vals);
            uint8_t *b2 = v2 ? realloc(bytes, cap * 8) : NULL;
            if (v2) vals = v2;
            if (b2) bytes = b2;
            if (!v2 || !b2) {
                job_fail(j, "out of memory", ENOMEM);
                break;
            }
        }
        item_values(j, it, vals);
        for (int64_t i = 0; i < it->n; i++) { /* little-endian, as safetensors stores it */
            if (t->esize == 8) {
                uint64_t v = (uint64_t)(it->first + i);
                for (int b = 0; b < 8; b++)
                    bytes[i * 8 + b] = (uint8_t)(v >> (8 * b));
            } else if (t->esize == 4) {
                uint32_t v;
                memcpy(&v, &vals[i], 4);
                for (int b = 0; b < 4; b++)
                    bytes[i * 4 + b] = (uint8_t)(v >> (8 * b));
            } else {
                uint16_t v = to_half(vals[i]);
                bytes[i * 2] = (uint8_t)v;
                bytes[i * 2 + 1] = (uint8_t)(v >> 8);
            }
        }
        size_t len = (size_t)it->n * (size_t)t->esize, done = 0;
        off_t at = (off_t)(j->data_at + t->off + (uint64_t)it->first * (uint64_t)t->esize);
        while (done < len) {
            ssize_t w = pwrite(j->fd, bytes + done, len - done, at + (off_t)done);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                job_fail(j, "write", w < 0 ? errno : EIO);
                goto out;
            }
            done += (size_t)w;
        }
    }
out:
    free(vals);
    free(bytes);
    return NULL;
}

static int default_threads(void)
{
    cpu_set_t set;
    int n = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
    if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : n;
}

int sde_mkmodel_random(const char *path, sde_rand_preset p, uint64_t seed, int f32, int threads,
                       uint64_t *bytes, char *err, size_t errlen)
{
    rtable tb;
    rstr h = {0};
    ritem *items = NULL;
    char part[4096];
    int fd = -1, rc = -1;
    snprintf(part, sizeof part, "%s.part", path);
    int64_t data = rt_build(&tb, p, f32);
    if (data < 0 || rt_header(&tb, p, seed, f32, &h)) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto done;
    }

    int nitems = 0, cap = tb.n + (int)(data / 2 / CHUNK) + 16;
    items = malloc((size_t)cap * sizeof *items);
    if (!items) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto done;
    }
    for (int i = 0; i < tb.n; i++) {
        const rtensor *t = &tb.v[i];
        int split = t->init == RI_FANIN || t->init == RI_GAUSS || t->init == RI_FILL;
        int64_t step = split ? CHUNK : t->count;
        for (int64_t a = 0; a < t->count; a += step) {
            if (nitems == cap) { /* cannot happen: cap counts every chunk */
                snprintf(err, errlen, "%s: internal error: work list overflow", path);
                goto done;
            }
            items[nitems++] = (ritem){i, a, t->count - a < step ? t->count - a : step};
        }
    }

    fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create: %s", part, strerror(errno));
        goto done;
    }
    uint8_t le[8];
    for (int b = 0; b < 8; b++)
        le[b] = (uint8_t)((uint64_t)h.len >> (8 * b));
    if (pwrite(fd, le, 8, 0) != 8 || pwrite(fd, h.s, h.len, 8) != (ssize_t)h.len) {
        snprintf(err, errlen, "%s: write: %s", part, strerror(errno));
        goto done;
    }

    char jerr[512] = "";
    rjob job = {.tb = &tb,
                .seed = seed,
                .fd = fd,
                .data_at = 8 + h.len,
                .items = items,
                .nitems = nitems,
                .err = jerr,
                .errlen = sizeof jerr};
    atomic_init(&job.next, 0);
    atomic_init(&job.failed, 0);
    pthread_mutex_init(&job.lock, NULL);
    if (threads <= 0) threads = default_threads();
    if (threads > nitems) threads = nitems > 0 ? nitems : 1;
    pthread_t tid[64];
    int started = 0; /* besides the calling thread */
    for (; started < threads - 1 && started < 64; started++)
        if (pthread_create(&tid[started], NULL, job_worker, &job)) break;
    job_worker(&job); /* the calling thread works too */
    for (int i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    pthread_mutex_destroy(&job.lock);
    if (atomic_load(&job.failed)) {
        snprintf(err, errlen, "%s: %s", part, jerr);
        goto done;
    }
    if (close(fd) != 0) {
        fd = -1;
        snprintf(err, errlen, "%s: close: %s", part, strerror(errno));
        goto done;
    }
    fd = -1;
    if (rename(part, path) != 0) {
        snprintf(err, errlen, "%s: cannot rename %s into place: %s", path, part, strerror(errno));
        goto done;
    }
    if (bytes) *bytes = 8 + h.len + (uint64_t)data;
    rc = 0;
done:
    if (fd >= 0) close(fd);
    if (rc) unlink(part);
    free(items);
    free(h.s);
    free(tb.v);
    return rc;
}
