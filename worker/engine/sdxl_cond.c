/* sdxl_cond.c: SDXL's two text encoders and its vector conditioning (see sdxl_cond.h), with the token,
 * layer and projection conventions of the sgm reference (single files) and diffusers (folders). */
#include "sdxl_cond.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weights.h"

/* single-file (sgm) names first, then the canonical names of a diffusers folder's text_encoder{,_2} */
#define L_SGM "conditioner.embedders.0.transformer.text_model."
#define L_DIFF "cond_stage_model.transformer.text_model."
#define G_SGM "conditioner.embedders.1.model."
#define G_DIFF "conditioner.embedders.1.transformer.text_model."
#define G_PROJ_SGM G_SGM "text_projection"
#define G_PROJ_DIFF "conditioner.embedders.1.transformer.text_projection.weight"

struct sde_sdxl_cond {
    sde_clip *l, *g;
    const float *proj; /* [1280][1280]: P (sgm) or P^T as a Linear weight (diffusers) */
    int proj_linear;
    int dl, dg;
    float *hl, *hg; /* [77][768], [77][1280] */
    float pooled_h[SDE_SDXL_POOLED], pooled[SDE_SDXL_POOLED];
};

int sde_sdxl_detect(const sde_ckpt *c)
{
    if (!sde_ckpt_find(c, "model.diffusion_model.label_emb.0.0.weight")) return 0;
    return sde_ckpt_find(c, G_SGM "token_embedding.weight") ||
           sde_ckpt_find(c, G_DIFF "embeddings.token_embedding.weight");
}

int sde_sdxl_cond_build(sde_ckpt *c, sde_sdxl_cond **out, char *err, size_t errlen)
{
    return sde_sdxl_cond_build_on(sde_backend_cpu(), c, out, err, errlen);
}

int sde_sdxl_cond_build_on(sde_backend *be, sde_ckpt *c, sde_sdxl_cond **out, char *err, size_t errlen)
{
    *out = NULL;
    sde_sdxl_cond *s = calloc(1, sizeof *s);
    if (!s) return sde_fail(err, errlen, "out of memory");
    /* both contexts are the penultimate layer's raw hidden state; ViT-L keeps OpenAI's quick GELU */
    sde_clip_spec ls = {.hf_prefix =
                            sde_ckpt_find(c, L_SGM "embeddings.token_embedding.weight") ? L_SGM : L_DIFF,
                        .skip = 1,
                        .gelu = 0};
    sde_clip_spec gs = {.hf_prefix = G_DIFF, .oc_prefix = G_SGM, .skip = 1, .pooled = 1, .gelu = 1};
    if (sde_clip_build_on(be, c, &ls, &s->l, err, errlen) ||
        sde_clip_build_on(be, c, &gs, &s->g, err, errlen))
        goto fail;
    s->dl = sde_clip_dim(s->l);
    s->dg = sde_clip_dim(s->g);
    if (s->dg != SDE_SDXL_POOLED) {
        sde_fail(err, errlen, "%s: the second text encoder is %d wide, SDXL's bigG is %d", sde_ckpt_path(c),
                 s->dg, SDE_SDXL_POOLED);
        goto fail;
    }
    const int64_t shp[2] = {SDE_SDXL_POOLED, SDE_SDXL_POOLED};
    s->proj_linear = sde_ckpt_find(c, G_PROJ_SGM) == NULL;
    s->proj = sde_ckpt_f32(c, s->proj_linear ? G_PROJ_DIFF : G_PROJ_SGM, 2, shp, err, errlen);
    s->hl = malloc(sizeof(float) * SDE_TOK_CONTEXT * (size_t)s->dl);
    s->hg = malloc(sizeof(float) * SDE_TOK_CONTEXT * (size_t)s->dg);
    if (!s->proj) goto fail;
    if (!s->hl || !s->hg) {
        sde_fail(err, errlen, "out of memory");
        goto fail;
    }
    *out = s;
    return 0;
fail:
    sde_sdxl_cond_free(s);
    return -1;
}

void sde_sdxl_cond_free(sde_sdxl_cond *s)
{
    if (!s) return;
    sde_clip_free(s->l);
    sde_clip_free(s->g);
    free(s->hl);
    free(s->hg);
    free(s);
}

const sde_clip *sde_sdxl_clip_l(const sde_sdxl_cond *s)
{
    return s->l;
}

int64_t sde_sdxl_params(const sde_sdxl_cond *s)
{
    return sde_clip_params(s->l) + sde_clip_params(s->g) + (int64_t)SDE_SDXL_POOLED * SDE_SDXL_POOLED;
}

void sde_sdxl_size_embed(float t, float out[SDE_SDXL_EMB])
{
    const int half = SDE_SDXL_EMB / 2;
    for (int i = 0; i < half; i++) {
        float arg = t * expf(-logf(10000.0f) * (float)i / (float)half);
        out[i] = (float)cos((double)arg);
        out[half + i] = (float)sin((double)arg);
    }
}

void sde_sdxl_adm(const float pooled[SDE_SDXL_POOLED], const sde_sdxl_sizes *sz, float *y)
{
    memcpy(y, pooled, sizeof(float) * SDE_SDXL_POOLED);
    const int v[6] = {sz->orig_h, sz->orig_w, sz->crop_top, sz->crop_left, sz->target_h, sz->target_w};
    for (int i = 0; i < 6; i++)
        sde_sdxl_size_embed((float)v[i], y + SDE_SDXL_POOLED + i * SDE_SDXL_EMB);
}

void sde_sdxl_project(const float *h, const float *p, int d, int dp, int linear, float *out)
{
    for (int j = 0; j < dp; j++) {
        double acc = 0.0;
        for (int i = 0; i < d; i++)
            acc += (double)h[i] * (linear ? p[(size_t)j * d + i] : p[(size_t)i * dp + j]);
        out[j] = (float)acc;
    }
}

void sde_sdxl_alphas_f32(float ac[1000])
{
    const float s0 = sqrtf(0.00085f), s1 = sqrtf(0.012f);
    float prod = 1.0f;
    for (int i = 0; i < 1000; i++) {
        float b = s0 + (s1 - s0) * ((float)i / 999.0f);
        prod *= 1.0f - b * b;
        ac[i] = prod;
    }
}

void sde_sdxl_encode(sde_sdxl_cond *s, const int32_t ids[SDE_TOK_CONTEXT], int32_t eos, int zero_ctx,
                     const sde_sdxl_sizes *sz, float *ctx, float *y)
{
    /* bigG sees the same tokens with everything after the first end token zeroed, and pools there */
    int32_t gid[SDE_TOK_CONTEXT];
    int at = -1;
    for (int t = 0; t < SDE_TOK_CONTEXT; t++) {
        gid[t] = at >= 0 ? 0 : ids[t];
        if (at < 0 && ids[t] == eos) at = t;
    }
    if (at < 0) at = SDE_TOK_CONTEXT - 1;
    sde_clip_encode_pooled(s->g, gid, s->hg, s->pooled_h, at);
    sde_sdxl_project(s->pooled_h, s->proj, s->dg, SDE_SDXL_POOLED, s->proj_linear, s->pooled);
    sde_sdxl_adm(s->pooled, sz, y);
    const int dim = s->dl + s->dg;
    if (zero_ctx) {
        memset(ctx, 0, sizeof(float) * SDE_TOK_CONTEXT * (size_t)dim);
        return;
    }
    sde_clip_encode(s->l, ids, s->hl);
    for (int t = 0; t < SDE_TOK_CONTEXT; t++) {
        memcpy(ctx + (size_t)t * dim, s->hl + (size_t)t * s->dl, sizeof(float) * (size_t)s->dl);
        memcpy(ctx + (size_t)t * dim + s->dl, s->hg + (size_t)t * s->dg, sizeof(float) * (size_t)s->dg);
    }
}

void sde_sdxl_cond_use_backend(sde_sdxl_cond *s, sde_backend *be)
{
    sde_clip_use_backend(s->l, be);
    sde_clip_use_backend(s->g, be);
}
