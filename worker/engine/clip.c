/* clip.c: the CLIP text transformer (pre-LayerNorm, causal self-attention, GELU MLP) over the weights
 * of either naming scheme; all activations are allocated at build time so encoding never allocates. */
#include "clip.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "weights.h"

#define HF_PFX "cond_stage_model.transformer.text_model."
#define OC_PFX "cond_stage_model.model."
#define CLIP_LN_EPS 1e-5f

typedef struct {
    const float *ln1_g, *ln1_b;
    const sde_weight *wq, *wk, *wv; /* OpenCLIP: wq/bq are the fused [3d][d] in_proj */
    const float *bq, *bk, *bv;
    const sde_weight *wo, *fc1_w, *fc2_w;
    const float *bo, *ln2_g, *ln2_b, *fc1_b, *fc2_b;
} clip_layer;

struct sde_clip {
    sde_clip_config cfg;
    char pfx[96];              /* tensor name prefix: ...text_model. (HF) or ...model. (OpenCLIP) */
    int ctx_layers;            /* the context is the hidden state after this many layers */
    int ctx_final_ln;          /* ... passed through the final LayerNorm (SD 1.x/2.x), or raw (SDXL) */
    const sde_weight *tok_emb; /* [vocab][dim] */
    const float *pos_emb;      /* [n_pos][dim] */
    clip_layer *layer;
    const float *lnf_g, *lnf_b;
    int64_t n_params;
    sde_backend *be;
    /* activations for one 77-token context, in backend buffers */
    sde_ten x, h, qkv, att, mlp, scratch;
};

static int clip_config(sde_ckpt *c, const char *hf, const char *oc, sde_clip_config *cfg, char *pfx,
                       size_t pfxlen, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    char name[256];
    const sde_tensor *te = hf ? sde_wfind(c, "%sembeddings.token_embedding.weight", hf) : NULL;
    if (!te && oc) {
        te = sde_wfind(c, "%stoken_embedding.weight", oc);
        cfg->openclip = te != NULL;
    }
    if (!te) {
        snprintf(err, errlen,
                 "%s: no text encoder: neither %sembeddings.token_embedding.weight nor "
                 "%stoken_embedding.weight is present",
                 sde_ckpt_path(c), hf ? hf : "", oc ? oc : "");
        return -1;
    }
    snprintf(pfx, pfxlen, "%s", cfg->openclip ? oc : hf);
    if (te->ndim != 2 || te->shape[0] < 2 || te->shape[1] < 1 || te->shape[0] > (1 << 24) ||
        te->shape[1] > 8192) {
        snprintf(err, errlen, "%s: tensor %s: unexpected shape for a token embedding", te->file, te->name);
        return -1;
    }
    cfg->vocab = (int)te->shape[0];
    cfg->dim = (int)te->shape[1];
    snprintf(name, sizeof name, "%s%s", pfx,
             cfg->openclip ? "positional_embedding" : "embeddings.position_embedding.weight");
    const sde_tensor *pe = sde_ckpt_find(c, name);
    if (!pe || pe->ndim != 2 || pe->shape[1] != cfg->dim || pe->shape[0] < SDE_TOK_CONTEXT ||
        pe->shape[0] > 4096) {
        snprintf(err, errlen, "%s: tensor %s: missing, or not [>=%d][%d]", sde_ckpt_path(c), name,
                 SDE_TOK_CONTEXT, cfg->dim);
        return -1;
    }
    cfg->n_pos = (int)pe->shape[0];
    int n = 0;
    for (;; n++) {
        if (cfg->openclip)
            snprintf(name, sizeof name, "%stransformer.resblocks.%d.ln_1.weight", pfx, n);
        else
            snprintf(name, sizeof name, "%sencoder.layers.%d.layer_norm1.weight", pfx, n);
        if (!sde_ckpt_find(c, name)) break;
    }
    /* SD 2.x conditions on the penultimate resblock of OpenCLIP; HF-form SD 2.x text encoders already
     * have the last layer removed, and SD 1.x uses the last layer. */
    cfg->layers = cfg->openclip ? n - 1 : n;
    cfg->loaded = n;
    cfg->full = n;
    if (cfg->layers < 1) {
        snprintf(err, errlen, "%s: text encoder has %d layers (%s)", sde_ckpt_path(c), n,
                 cfg->openclip ? "OpenCLIP needs at least 2" : "no encoder.layers.0");
        return -1;
    }
    if (cfg->openclip)
        snprintf(name, sizeof name, "%stransformer.resblocks.0.mlp.c_fc.weight", pfx);
    else
        snprintf(name, sizeof name, "%sencoder.layers.0.mlp.fc1.weight", pfx);
    const sde_tensor *fc = sde_ckpt_find(c, name);
    if (!fc || fc->ndim != 2 || fc->shape[1] != cfg->dim || fc->shape[0] < 1 || fc->shape[0] > 65536) {
        snprintf(err, errlen, "%s: tensor %s: missing, or not [ff][%d]", sde_ckpt_path(c), name, cfg->dim);
        return -1;
    }
    cfg->ff = (int)fc->shape[0];

    const char *mh = sde_ckpt_meta(c, "sdw.text.num_heads");
    if (mh) {
        char *end;
        long h = strtol(mh, &end, 10);
        if (*end || h < 1 || h > cfg->dim || cfg->dim % h) {
            snprintf(err, errlen, "%s: metadata sdw.text.num_heads=\"%s\" does not divide width %d",
                     sde_ckpt_path(c), mh, cfg->dim);
            return -1;
        }
        cfg->heads = (int)h;
    } else {
        if (cfg->dim % 64) {
            snprintf(err, errlen,
                     "%s: text width %d is not a multiple of 64; set metadata sdw.text.num_heads",
                     sde_ckpt_path(c), cfg->dim);
            return -1;
        }
        cfg->heads = cfg->dim / 64;
    }
    const int sd2 = cfg->openclip || cfg->dim == 1024;
    const char *act = sde_ckpt_meta(c, "sdw.text.act");
    if (act) {
        if (!strcmp(act, "quick_gelu")) {
            cfg->quick_gelu = 1;
        } else if (!strcmp(act, "gelu")) {
            cfg->quick_gelu = 0;
        } else {
            snprintf(err, errlen, "%s: metadata sdw.text.act=\"%s\": expected quick_gelu or gelu",
                     sde_ckpt_path(c), act);
            return -1;
        }
    } else {
        cfg->quick_gelu = !sd2; /* OpenAI CLIP (SD 1.x) uses quick_gelu, OpenCLIP ViT-H exact GELU */
    }
    cfg->pad_zero = sd2;
    if (sd2 && !cfg->openclip)
        cfg->full = n + 1; /* clip skip counts from OpenCLIP's last layer, which this file leaves out */
    return 0;
}

static int clip_resolve(sde_clip *m, sde_ckpt *c, char *err, size_t errlen)
{
    const sde_clip_config *g = &m->cfg;
    const int64_t d = g->dim, ff = g->ff;
    sde_wloader L = {.c = c, .err = err, .errlen = errlen, .be = m->be};
    const char *pf = m->pfx;
    if (g->openclip) {
        m->tok_emb = sde_wload_weight(&L, g->vocab, d, 0, 0, "%stoken_embedding.weight", pf);
        m->pos_emb = sde_wload(&L, g->n_pos, d, 0, 0, "%spositional_embedding", pf);
        for (int i = 0; i < g->loaded; i++) {
            clip_layer *y = &m->layer[i];
#define P "%stransformer.resblocks.%d."
            y->ln1_g = sde_wload(&L, d, 0, 0, 0, P "ln_1.weight", pf, i);
            y->ln1_b = sde_wload(&L, d, 0, 0, 0, P "ln_1.bias", pf, i);
            y->wq = sde_wload_weight(&L, 3 * d, d, 0, 0, P "attn.in_proj_weight", pf, i);
            y->bq = sde_wload(&L, 3 * d, 0, 0, 0, P "attn.in_proj_bias", pf, i);
            y->wo = sde_wload_weight(&L, d, d, 0, 0, P "attn.out_proj.weight", pf, i);
            y->bo = sde_wload(&L, d, 0, 0, 0, P "attn.out_proj.bias", pf, i);
            y->ln2_g = sde_wload(&L, d, 0, 0, 0, P "ln_2.weight", pf, i);
            y->ln2_b = sde_wload(&L, d, 0, 0, 0, P "ln_2.bias", pf, i);
            y->fc1_w = sde_wload_weight(&L, ff, d, 0, 0, P "mlp.c_fc.weight", pf, i);
            y->fc1_b = sde_wload(&L, ff, 0, 0, 0, P "mlp.c_fc.bias", pf, i);
            y->fc2_w = sde_wload_weight(&L, d, ff, 0, 0, P "mlp.c_proj.weight", pf, i);
            y->fc2_b = sde_wload(&L, d, 0, 0, 0, P "mlp.c_proj.bias", pf, i);
#undef P
        }
        m->lnf_g = sde_wload(&L, d, 0, 0, 0, "%sln_final.weight", pf);
        m->lnf_b = sde_wload(&L, d, 0, 0, 0, "%sln_final.bias", pf);
    } else {
        m->tok_emb = sde_wload_weight(&L, g->vocab, d, 0, 0, "%sembeddings.token_embedding.weight", pf);
        m->pos_emb = sde_wload(&L, g->n_pos, d, 0, 0, "%sembeddings.position_embedding.weight", pf);
        for (int i = 0; i < g->loaded; i++) {
            clip_layer *y = &m->layer[i];
#define P "%sencoder.layers.%d."
            y->ln1_g = sde_wload(&L, d, 0, 0, 0, P "layer_norm1.weight", pf, i);
            y->ln1_b = sde_wload(&L, d, 0, 0, 0, P "layer_norm1.bias", pf, i);
            y->wq = sde_wload_weight(&L, d, d, 0, 0, P "self_attn.q_proj.weight", pf, i);
            y->bq = sde_wload(&L, d, 0, 0, 0, P "self_attn.q_proj.bias", pf, i);
            y->wk = sde_wload_weight(&L, d, d, 0, 0, P "self_attn.k_proj.weight", pf, i);
            y->bk = sde_wload(&L, d, 0, 0, 0, P "self_attn.k_proj.bias", pf, i);
            y->wv = sde_wload_weight(&L, d, d, 0, 0, P "self_attn.v_proj.weight", pf, i);
            y->bv = sde_wload(&L, d, 0, 0, 0, P "self_attn.v_proj.bias", pf, i);
            y->wo = sde_wload_weight(&L, d, d, 0, 0, P "self_attn.out_proj.weight", pf, i);
            y->bo = sde_wload(&L, d, 0, 0, 0, P "self_attn.out_proj.bias", pf, i);
            y->ln2_g = sde_wload(&L, d, 0, 0, 0, P "layer_norm2.weight", pf, i);
            y->ln2_b = sde_wload(&L, d, 0, 0, 0, P "layer_norm2.bias", pf, i);
            y->fc1_w = sde_wload_weight(&L, ff, d, 0, 0, P "mlp.fc1.weight", pf, i);
            y->fc1_b = sde_wload(&L, ff, 0, 0, 0, P "mlp.fc1.bias", pf, i);
            y->fc2_w = sde_wload_weight(&L, d, ff, 0, 0, P "mlp.fc2.weight", pf, i);
            y->fc2_b = sde_wload(&L, d, 0, 0, 0, P "mlp.fc2.bias", pf, i);
#undef P
        }
        m->lnf_g = sde_wload(&L, d, 0, 0, 0, "%sfinal_layer_norm.weight", pf);
        m->lnf_b = sde_wload(&L, d, 0, 0, 0, "%sfinal_layer_norm.bias", pf);
    }
    m->n_params = L.params;
    return L.failed ? -1 : 0;
}

int sde_clip_build(sde_ckpt *c, sde_clip **out, char *err, size_t errlen)
{
    return sde_clip_build_spec(c, NULL, out, err, errlen);
}

int sde_clip_build_spec(sde_ckpt *c, const sde_clip_spec *sp, sde_clip **out, char *err, size_t errlen)
{
    return sde_clip_build_on(sde_backend_cpu(), c, sp, out, err, errlen);
}

int sde_clip_build_on(sde_backend *be, sde_ckpt *c, const sde_clip_spec *sp, sde_clip **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    sde_clip *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "text encoder: out of memory");
        return -1;
    }
    if (clip_config(c, sp ? sp->hf_prefix : HF_PFX, sp ? sp->oc_prefix : OC_PFX, &m->cfg, m->pfx,
                    sizeof m->pfx, err, errlen)) {
        free(m);
        return -1;
    }
    m->ctx_layers = m->cfg.layers;
    m->ctx_final_ln = 1;
    if (sp) { /* SDXL: the raw hidden state `skip` layers from the end, every layer kept for pooling */
        const int all = m->cfg.loaded;
        if (sp->skip < 0 || sp->skip >= all) {
            snprintf(err, errlen, "%s: text encoder %s has %d layers, cannot skip %d", sde_ckpt_path(c),
                     m->pfx, all, sp->skip);
            free(m);
            return -1;
        }
        m->ctx_layers = all - sp->skip;
        m->ctx_final_ln = 0;
        m->cfg.layers = m->ctx_layers; /* pooling runs on through every loaded layer */
        if (sp->gelu >= 0) m->cfg.quick_gelu = !sp->gelu;
    }
    const size_t T = SDE_TOK_CONTEXT, d = (size_t)m->cfg.dim, hd = d / (size_t)m->cfg.heads;
    m->be = be;
    char why[128];
    m->layer = calloc((size_t)m->cfg.loaded, sizeof *m->layer);
    m->x.buf = be->alloc(be, T * d * sizeof(float), why, sizeof why);
    m->h.buf = be->alloc(be, T * d * sizeof(float), why, sizeof why);
    m->qkv.buf = be->alloc(be, 3 * T * d * sizeof(float), why, sizeof why);
    m->att.buf = be->alloc(be, T * d * sizeof(float), why, sizeof why);
    m->mlp.buf = be->alloc(be, T * (size_t)m->cfg.ff * sizeof(float), why, sizeof why);
    m->scratch.buf = be->alloc(be, be->attention_scratch(be, (int)T, (int)T, (int)hd), why, sizeof why);
    if (!m->layer || !m->x.buf || !m->h.buf || !m->qkv.buf || !m->att.buf || !m->mlp.buf || !m->scratch.buf) {
        snprintf(err, errlen, "text encoder: out of memory");
        sde_clip_free(m);
        return -1;
    }
    if (clip_resolve(m, c, err, errlen)) {
        sde_clip_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

int sde_clip_skip_layers(const sde_clip *m, int clip_skip)
{
    if (clip_skip == 0) return m->cfg.layers;
    int run = m->cfg.full - clip_skip + 1;
    return clip_skip > 0 && run >= 1 && run <= m->cfg.loaded ? run : -1;
}

static void clip_run(sde_clip *m, const int32_t tokens[SDE_TOK_CONTEXT], int layers, float *out,
                     float *pooled, int pool_at);

void sde_clip_encode(sde_clip *m, const int32_t tokens[SDE_TOK_CONTEXT], float *out)
{
    sde_clip_encode_layers(m, tokens, m->cfg.layers, out);
}

void sde_clip_encode_layers(sde_clip *m, const int32_t tokens[SDE_TOK_CONTEXT], int layers, float *out)
{
    clip_run(m, tokens, layers, out, NULL, 0);
}

void sde_clip_encode_pooled(sde_clip *m, const int32_t tokens[SDE_TOK_CONTEXT], float *out, float *pooled,
                            int pool_at)
{
    clip_run(m, tokens, m->ctx_layers, out, pooled, pool_at);
}

/* The encoder up to `layers` (1..loaded, else the default) for the context, and on through every layer
 * when pooled is wanted: the context is the hidden state there, through the final LayerNorm (SD 1.x/2.x)
 * or raw (SDXL); pooled[dim] the final LayerNorm of the last layer's state at token pool_at. */
static void clip_run(sde_clip *m, const int32_t tokens[SDE_TOK_CONTEXT], int layers, float *out,
                     float *pooled, int pool_at)
{
    const sde_clip_config *g = &m->cfg;
    sde_backend *be = m->be;
    const int T = SDE_TOK_CONTEXT, d = g->dim, hd = d / g->heads;
    const size_t Td = (size_t)T * d;
    const int32_t pad = g->pad_zero ? 0 : g->vocab - 1;
    int32_t ids[SDE_TOK_CONTEXT];
    for (int t = 0; t < T; t++)
        ids[t] = tokens[t] >= 0 && tokens[t] < g->vocab ? tokens[t] : pad;
    be->embed(be, m->tok_emb, ids, T, d, m->pos_emb, m->x);
    if (layers < 1 || layers > g->loaded) layers = g->layers;
    const int run = pooled ? g->loaded : layers;
    for (int l = 0; l < run; l++) {
        const clip_layer *y = &m->layer[l];
        be->layernorm(be, m->x, T, d, y->ln1_g, y->ln1_b, CLIP_LN_EPS, m->h);
        sde_ten q = m->qkv, k, v;
        int stride;
        if (g->openclip) { /* one fused in_proj: rows [q | k | v] */
            be->linear(be, m->h, T, d, y->wq, y->bq, 3 * d, m->qkv, 0);
            k = sde_ten_at(q, (size_t)d);
            v = sde_ten_at(q, 2 * (size_t)d);
            stride = 3 * d;
        } else {
            k = sde_ten_at(q, Td);
            v = sde_ten_at(q, 2 * Td);
            be->linear(be, m->h, T, d, y->wq, y->bq, d, q, 0);
            be->linear(be, m->h, T, d, y->wk, y->bk, d, k, 0);
            be->linear(be, m->h, T, d, y->wv, y->bv, d, v, 0);
            stride = d;
        }
        be->attention(be, q, stride, k, stride, v, stride, T, T, g->heads, hd, 1, m->att, d, m->scratch);
        be->linear(be, m->att, T, d, y->wo, y->bo, d, m->h, 0);
        be->add(be, m->x, m->h, Td);

        be->layernorm(be, m->x, T, d, y->ln2_g, y->ln2_b, CLIP_LN_EPS, m->h);
        be->linear(be, m->h, T, d, y->fc1_w, y->fc1_b, g->ff, m->mlp, 0);
        be->act(be, m->mlp, (size_t)T * g->ff, g->quick_gelu ? SDE_ACT_QUICK_GELU : SDE_ACT_GELU);
        be->linear(be, m->mlp, T, g->ff, y->fc2_w, y->fc2_b, d, m->h, 0);
        be->add(be, m->x, m->h, Td);
        if (l + 1 == layers) {
            if (m->ctx_final_ln) {
                be->layernorm(be, m->x, T, d, m->lnf_g, m->lnf_b, CLIP_LN_EPS, m->h);
                be->read(be, out, m->h, Td);
            } else {
                be->read(be, out, m->x, Td);
            }
            if (!pooled) return;
        }
    }
    if (pooled) { /* the final LayerNorm of the one token pooled (the first end token) */
        pool_at = pool_at < 0 ? 0 : pool_at >= T ? T - 1 : pool_at;
        be->layernorm(be, sde_ten_at(m->x, (size_t)pool_at * d), 1, d, m->lnf_g, m->lnf_b, CLIP_LN_EPS, m->h);
        be->read(be, pooled, m->h, (size_t)d);
    }
}

int sde_clip_dim(const sde_clip *m)
{
    return m->cfg.dim;
}

int32_t sde_clip_pad_id(const sde_clip *m, int32_t eos_id)
{
    return m->cfg.pad_zero ? 0 : eos_id;
}

const sde_clip_config *sde_clip_get_config(const sde_clip *m)
{
    return &m->cfg;
}

int64_t sde_clip_params(const sde_clip *m)
{
    return m->n_params;
}

void sde_clip_free(sde_clip *m)
{
    if (!m) return;
    free(m->layer);
    if (m->be) {
        m->be->free(m->be, m->x.buf);
        m->be->free(m->be, m->h.buf);
        m->be->free(m->be, m->qkv.buf);
        m->be->free(m->be, m->att.buf);
        m->be->free(m->be, m->mlp.buf);
        m->be->free(m->be, m->scratch.buf);
    }
    free(m);
}

void sde_clip_use_backend(sde_clip *m, sde_backend *be)
{
    m->be = be;
}
