/* mkmodel.c: the tiny random SD-1.x-shaped checkpoint writer: builds the tensor list with the same LDM
 * names as a real SD 1.5 file, then writes a safetensors header and Philox-drawn F32 data. */
#include "mkmodel.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "philox.h"
#include "tokenizer.h"

/* How a tensor's values are drawn. */
typedef enum { MK_WEIGHT, MK_BIAS, MK_NORM_W, MK_NORM_B, MK_EMB, MK_SCHED } mk_kind;

typedef struct {
    char name[160];
    mk_kind kind;
    int ndim;
    int64_t shape[4];
    float std; /* MK_EMB only */
} mk_tensor;

typedef struct {
    mk_tensor *t;
    int n, cap;
    int oom;
} mk_list;

static mk_tensor *mk_add(mk_list *l, mk_kind kind, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                         const char *fmt, ...) __attribute__((format(printf, 8, 9)));

static mk_tensor *mk_add(mk_list *l, mk_kind kind, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                         const char *fmt, ...)
{
    static mk_tensor dummy;
    if (l->oom) return &dummy;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 256;
        mk_tensor *t = realloc(l->t, (size_t)cap * sizeof *t);
        if (!t) {
            l->oom = 1;
            return &dummy;
        }
        l->t = t;
        l->cap = cap;
    }
    mk_tensor *t = &l->t[l->n++];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->kind = kind;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->shape[2] = d2;
    t->shape[3] = d3;
    return t;
}

static void mk_linear(mk_list *l, const char *p, const char *m, int64_t out, int64_t in, int bias)
{
    mk_add(l, MK_WEIGHT, 2, out, in, 0, 0, "%s%s.weight", p, m);
    if (bias) mk_add(l, MK_BIAS, 1, out, 0, 0, 0, "%s%s.bias", p, m);
}

static void mk_conv(mk_list *l, const char *p, const char *m, int64_t out, int64_t in, int k)
{
    mk_add(l, MK_WEIGHT, 4, out, in, k, k, "%s%s.weight", p, m);
    mk_add(l, MK_BIAS, 1, out, 0, 0, 0, "%s%s.bias", p, m);
}

static void mk_norm(mk_list *l, const char *p, const char *m, int64_t c)
{
    mk_add(l, MK_NORM_W, 1, c, 0, 0, 0, "%s%s.weight", p, m);
    mk_add(l, MK_NORM_B, 1, c, 0, 0, 0, "%s%s.bias", p, m);
}

/* ---- UNet (openaimodel names) ---- */

typedef struct {
    int mc, n_levels, mult[4], nres, attn[4], ctx;
    int in_ch; /* conv_in's input channels: 4, or 9 for an inpainting UNet */
} mk_unet_shape;

static void mk_unet_res(mk_list *l, const char *p, int64_t in, int64_t out, int64_t temb)
{
    mk_norm(l, p, "in_layers.0", in);
    mk_conv(l, p, "in_layers.2", out, in, 3);
    mk_linear(l, p, "emb_layers.1", out, temb, 1);
    mk_norm(l, p, "out_layers.0", out);
    mk_conv(l, p, "out_layers.3", out, out, 3);
    if (in != out) mk_conv(l, p, "skip_connection", out, in, 1);
}

/* SpatialTransformer, depth 1, 1x1 conv proj_in/proj_out and GEGLU feed-forward as in SD 1.x. */
static void mk_unet_st(mk_list *l, const char *p, int64_t c, int64_t ctx)
{
    char q[200];
    mk_norm(l, p, "norm", c);
    mk_conv(l, p, "proj_in", c, c, 1);
    snprintf(q, sizeof q, "%stransformer_blocks.0.", p);
    mk_linear(l, q, "attn1.to_q", c, c, 0);
    mk_linear(l, q, "attn1.to_k", c, c, 0);
    mk_linear(l, q, "attn1.to_v", c, c, 0);
    mk_linear(l, q, "attn1.to_out.0", c, c, 1);
    mk_linear(l, q, "ff.net.0.proj", c * 8, c, 1);
    mk_linear(l, q, "ff.net.2", c, c * 4, 1);
    mk_linear(l, q, "attn2.to_q", c, c, 0);
    mk_linear(l, q, "attn2.to_k", c, ctx, 0);
    mk_linear(l, q, "attn2.to_v", c, ctx, 0);
    mk_linear(l, q, "attn2.to_out.0", c, c, 1);
    mk_norm(l, q, "norm1", c);
    mk_norm(l, q, "norm2", c);
    mk_norm(l, q, "norm3", c);
    mk_conv(l, p, "proj_out", c, c, 1);
}

static void mk_unet(mk_list *l, const mk_unet_shape *s)
{
    const char *P = "model.diffusion_model.";
    char p[200];
    const int64_t temb = 4 * s->mc;
    int64_t chans[32];
    int nch = 0, blk = 1;
    mk_linear(l, P, "time_embed.0", temb, s->mc, 1);
    mk_linear(l, P, "time_embed.2", temb, temb, 1);
    mk_conv(l, P, "input_blocks.0.0", s->mc, s->in_ch, 3);
    chans[nch++] = s->mc;
    int64_t ch = s->mc;
    for (int lv = 0; lv < s->n_levels; lv++) {
        for (int r = 0; r < s->nres; r++) {
            int64_t out = (int64_t)s->mult[lv] * s->mc;
            snprintf(p, sizeof p, "%sinput_blocks.%d.0.", P, blk);
            mk_unet_res(l, p, ch, out, temb);
            ch = out;
            if (s->attn[lv]) {
                snprintf(p, sizeof p, "%sinput_blocks.%d.1.", P, blk);
                mk_unet_st(l, p, ch, s->ctx);
            }
            chans[nch++] = ch;
            blk++;
        }
        if (lv < s->n_levels - 1) {
            snprintf(p, sizeof p, "%sinput_blocks.%d.0.", P, blk);
            mk_conv(l, p, "op", ch, ch, 3);
            chans[nch++] = ch;
            blk++;
        }
    }
    snprintf(p, sizeof p, "%smiddle_block.0.", P);
    mk_unet_res(l, p, ch, ch, temb);
    snprintf(p, sizeof p, "%smiddle_block.1.", P);
    mk_unet_st(l, p, ch, s->ctx);
    snprintf(p, sizeof p, "%smiddle_block.2.", P);
    mk_unet_res(l, p, ch, ch, temb);
    blk = 0;
    for (int lv = s->n_levels - 1; lv >= 0; lv--) {
        for (int r = 0; r <= s->nres; r++) {
            int64_t skip = chans[--nch], out = (int64_t)s->mult[lv] * s->mc;
            snprintf(p, sizeof p, "%soutput_blocks.%d.0.", P, blk);
            mk_unet_res(l, p, ch + skip, out, temb);
            ch = out;
            int sub = 1;
            if (s->attn[lv]) {
                snprintf(p, sizeof p, "%soutput_blocks.%d.1.", P, blk);
                mk_unet_st(l, p, ch, s->ctx);
                sub = 2;
            }
            if (lv > 0 && r == s->nres) {
                snprintf(p, sizeof p, "%soutput_blocks.%d.%d.", P, blk, sub);
                mk_conv(l, p, "conv", ch, ch, 3);
            }
            blk++;
        }
    }
    mk_norm(l, P, "out.0", ch);
    mk_conv(l, P, "out.2", 4, ch, 3);
}

/* ---- VAE (ldm.modules.diffusionmodules.model names) ---- */

static void mk_vae_res(mk_list *l, const char *p, int64_t in, int64_t out)
{
    mk_norm(l, p, "norm1", in);
    mk_conv(l, p, "conv1", out, in, 3);
    mk_norm(l, p, "norm2", out);
    mk_conv(l, p, "conv2", out, out, 3);
    if (in != out) mk_conv(l, p, "nin_shortcut", out, in, 1);
}

static void mk_vae_attn(mk_list *l, const char *p, int64_t c)
{
    mk_norm(l, p, "norm", c);
    mk_conv(l, p, "q", c, c, 1);
    mk_conv(l, p, "k", c, c, 1);
    mk_conv(l, p, "v", c, c, 1);
    mk_conv(l, p, "proj_out", c, c, 1);
}

static void mk_vae(mk_list *l, int64_t ch, const int mult[4], int nres, int64_t z)
{
    const char *E = "first_stage_model.encoder.", *D = "first_stage_model.decoder.";
    char p[200];
    mk_conv(l, E, "conv_in", ch, 3, 3);
    int64_t c = ch;
    for (int lv = 0; lv < 4; lv++) {
        for (int b = 0; b < nres; b++) {
            snprintf(p, sizeof p, "%sdown.%d.block.%d.", E, lv, b);
            mk_vae_res(l, p, c, ch * mult[lv]);
            c = ch * mult[lv];
        }
        if (lv < 3) {
            snprintf(p, sizeof p, "%sdown.%d.downsample.", E, lv);
            mk_conv(l, p, "conv", c, c, 3);
        }
    }
    snprintf(p, sizeof p, "%smid.block_1.", E);
    mk_vae_res(l, p, c, c);
    snprintf(p, sizeof p, "%smid.attn_1.", E);
    mk_vae_attn(l, p, c);
    snprintf(p, sizeof p, "%smid.block_2.", E);
    mk_vae_res(l, p, c, c);
    mk_norm(l, E, "norm_out", c);
    mk_conv(l, E, "conv_out", 2 * z, c, 3);
    mk_conv(l, "first_stage_model.", "quant_conv", 2 * z, 2 * z, 1);
    mk_conv(l, "first_stage_model.", "post_quant_conv", z, z, 1);

    c = ch * mult[3];
    mk_conv(l, D, "conv_in", c, z, 3);
    snprintf(p, sizeof p, "%smid.block_1.", D);
    mk_vae_res(l, p, c, c);
    snprintf(p, sizeof p, "%smid.attn_1.", D);
    mk_vae_attn(l, p, c);
    snprintf(p, sizeof p, "%smid.block_2.", D);
    mk_vae_res(l, p, c, c);
    for (int lv = 3; lv >= 0; lv--) {
        for (int b = 0; b <= nres; b++) {
            snprintf(p, sizeof p, "%sup.%d.block.%d.", D, lv, b);
            mk_vae_res(l, p, c, ch * mult[lv]);
            c = ch * mult[lv];
        }
        if (lv > 0) {
            snprintf(p, sizeof p, "%sup.%d.upsample.", D, lv);
            mk_conv(l, p, "conv", c, c, 3);
        }
    }
    mk_norm(l, D, "norm_out", c);
    mk_conv(l, D, "conv_out", 3, c, 3);
}

/* ---- CLIP text model (HF CLIPTextModel names) ---- */

static void mk_clip(mk_list *l, int64_t d, int layers, int64_t vocab)
{
    const char *T = "cond_stage_model.transformer.text_model.";
    char p[200];
    mk_add(l, MK_EMB, 2, vocab, d, 0, 0, "%sembeddings.token_embedding.weight", T)->std = 0.02f;
    mk_add(l, MK_EMB, 2, 77, d, 0, 0, "%sembeddings.position_embedding.weight", T)->std = 0.01f;
    for (int i = 0; i < layers; i++) {
        snprintf(p, sizeof p, "%sencoder.layers.%d.", T, i);
        mk_norm(l, p, "layer_norm1", d);
        mk_linear(l, p, "self_attn.q_proj", d, d, 1);
        mk_linear(l, p, "self_attn.k_proj", d, d, 1);
        mk_linear(l, p, "self_attn.v_proj", d, d, 1);
        mk_linear(l, p, "self_attn.out_proj", d, d, 1);
        mk_norm(l, p, "layer_norm2", d);
        mk_linear(l, p, "mlp.fc1", 4 * d, d, 1);
        mk_linear(l, p, "mlp.fc2", d, 4 * d, 1);
    }
    mk_norm(l, T, "final_layer_norm", d);
}

/* ---- writing ---- */

typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} mk_buf;

static void buf_put(mk_buf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void buf_puts(mk_buf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

static void buf_printf(mk_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(mk_buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) buf_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A JSON string literal; UTF-8 passes through, control characters are escaped. */
static void buf_json_str(mk_buf *b, const char *s, size_t n)
{
    buf_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            buf_put(b, e, 2);
        } else if (c < 0x20) {
            buf_printf(b, "\\u%04x", c);
        } else {
            buf_put(b, (const char *)&c, 1);
        }
    }
    buf_put(b, "\"", 1);
}

static int64_t mk_numel(const mk_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

/* Fills v with the tensor's values. Weights N(0, 1/fan_in) keep each layer's output variance near its
 * input's, so activations neither vanish nor blow up through the random network and images have texture. */
static void mk_fill(const mk_tensor *t, sde_philox *rng, float *v, int64_t n)
{
    switch (t->kind) {
    case MK_WEIGHT: {
        double fan_in = (double)n / (double)t->shape[0];
        float sd = (float)(1.0 / sqrt(fan_in));
        sde_philox_randn(rng, v, (size_t)n);
        for (int64_t i = 0; i < n; i++)
            v[i] *= sd;
        break;
    }
    case MK_BIAS:
    case MK_EMB: {
        float sd = t->kind == MK_BIAS ? 0.02f : t->std;
        sde_philox_randn(rng, v, (size_t)n);
        for (int64_t i = 0; i < n; i++)
            v[i] *= sd;
        break;
    }
    case MK_NORM_W:
        for (int64_t i = 0; i < n; i++)
            v[i] = 1.f;
        break;
    case MK_NORM_B:
        memset(v, 0, (size_t)n * sizeof *v);
        break;
    case MK_SCHED: {
        /* SD's "scaled linear" DDPM schedule, alphas_cumprod in double then stored as float */
        double prod = 1.0, s0 = sqrt(0.00085), s1 = sqrt(0.012);
        for (int64_t i = 0; i < n; i++) {
            double s = s0 + (s1 - s0) * (double)i / (double)(n - 1);
            prod *= 1.0 - s * s;
            v[i] = (float)prod;
        }
        break;
    }
    }
}

static int mkmodel_tiny(const char *path, uint64_t seed, int in_ch, char *err, size_t errlen)
{
    if (!path || !*path) {
        snprintf(err, errlen, "mkmodel: no output path");
        return -1;
    }
    mk_list l = {0};
    const mk_unet_shape us = {.mc = SDE_TINY_MODEL_CHANNELS,
                              .n_levels = 2,
                              .mult = {1, 2},
                              .nres = 1,
                              .attn = {1, 1},
                              .ctx = SDE_TINY_CONTEXT,
                              .in_ch = in_ch};
    const int vae_mult[4] = {1, 1, 2, 2};
    mk_unet(&l, &us);
    mk_vae(&l, SDE_TINY_VAE_CH, vae_mult, 1, 4);
    mk_clip(&l, SDE_TINY_CONTEXT, SDE_TINY_TEXT_LAYERS, SDE_TINY_VOCAB);
    mk_add(&l, MK_SCHED, 1, 1000, 0, 0, 0, "alphas_cumprod");

    char *vocab = NULL, *merges = NULL, *part = NULL;
    size_t vocab_len = 0, merges_len = 0;
    mk_buf h = {0};
    float *v = NULL;
    FILE *f = NULL;
    int rc = -1;
    if (l.oom) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto out;
    }
    if (sde_tok_bytelevel_files(&vocab, &vocab_len, &merges, &merges_len)) {
        snprintf(err, errlen, "%s: cannot build the byte-level tokenizer files", path);
        goto out;
    }

    /* header: tensors in list order, offsets contiguous; F32 everywhere */
    int64_t off = 0, maxn = 0;
    buf_puts(&h, "{\"__metadata__\":{");
    static const char *const kv[][2] = {
        {"format", "pt"},
        {"sdw.preset", "tiny"},
        {"sdw.prediction", "eps"},
        {"sdw.unet.num_head_channels", "16"},
        {"sdw.groups", "8"},
        {"sdw.text.num_heads", "2"},
        {"sdw.text.act", "quick_gelu"},
    };
    for (size_t i = 0; i < sizeof kv / sizeof *kv; i++) {
        buf_json_str(&h, kv[i][0], strlen(kv[i][0]));
        buf_puts(&h, ":");
        buf_json_str(&h, kv[i][1], strlen(kv[i][1]));
        buf_puts(&h, ",");
    }
    buf_printf(&h, "\"sdw.seed\":\"%llu\",", (unsigned long long)seed);
    buf_puts(&h, "\"sdw.tokenizer.vocab_json\":");
    buf_json_str(&h, vocab, vocab_len);
    buf_puts(&h, ",\"sdw.tokenizer.merges\":");
    buf_json_str(&h, merges, merges_len);
    buf_puts(&h, "}");
    for (int i = 0; i < l.n; i++) {
        const mk_tensor *t = &l.t[i];
        int64_t n = mk_numel(t);
        buf_puts(&h, ",");
        buf_json_str(&h, t->name, strlen(t->name));
        buf_puts(&h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++)
            buf_printf(&h, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        buf_printf(&h, "],\"data_offsets\":[%lld,%lld]}", (long long)off, (long long)(off + 4 * n));
        off += 4 * n;
        if (n > maxn) maxn = n;
    }
    buf_puts(&h, "}");
    while (!h.oom && h.len % 8) /* pad so the data block, and every F32 tensor, is 8-byte aligned */
        buf_puts(&h, " ");
    v = malloc((size_t)maxn * sizeof *v);
    size_t plen = strlen(path) + 6;
    part = malloc(plen);
    if (h.oom || !v || !part) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto out;
    }
    snprintf(part, plen, "%s.part", path);
    f = fopen(part, "wb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot create: %s", part, strerror(errno));
        goto out;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h.s, 1, h.len, f) == h.len;
    sde_philox rng;
    sde_philox_init(&rng, seed);
    for (int i = 0; ok && i < l.n; i++) {
        int64_t n = mk_numel(&l.t[i]);
        mk_fill(&l.t[i], &rng, v, n);
        /* safetensors is little-endian, like every platform this builds on */
        ok = fwrite(v, sizeof *v, (size_t)n, f) == (size_t)n;
    }
    if (fclose(f) != 0) ok = 0;
    f = NULL;
    if (!ok) {
        snprintf(err, errlen, "%s: write failed: %s", part, strerror(errno));
        remove(part);
        goto out;
    }
    if (rename(part, path) != 0) {
        snprintf(err, errlen, "%s: cannot rename %s into place: %s", path, part, strerror(errno));
        remove(part);
        goto out;
    }
    rc = 0;
out:
    if (f) {
        fclose(f);
        remove(part);
    }
    free(part);
    free(v);
    free(h.s);
    free(vocab);
    free(merges);
    free(l.t);
    return rc;
}

int sde_mkmodel_tiny(const char *path, uint64_t seed, char *err, size_t errlen)
{
    return mkmodel_tiny(path, seed, 4, err, errlen);
}

int sde_mkmodel_tiny_inpaint(const char *path, uint64_t seed, char *err, size_t errlen)
{
    return mkmodel_tiny(path, seed, 9, err, errlen);
}
