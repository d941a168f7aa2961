/* sdxl_cond.h: SDXL's conditioning: CLIP ViT-L and OpenCLIP ViT-bigG contexts side by side (2048 wide),
 * and the vector y = pooled bigG text | sinusoidal size/crop features that the UNet's label_emb reads. */
#ifndef SDE_SDXL_COND_H
#define SDE_SDXL_COND_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "clip.h"
#include "tokenizer.h"

/** Width of one size feature, of the pooled text and of y. */
#define SDE_SDXL_EMB 256
#define SDE_SDXL_POOLED 1280
#define SDE_SDXL_ADM (SDE_SDXL_POOLED + 6 * SDE_SDXL_EMB)

/** SDXL's micro-conditioning, in pixels, height first as the model was trained. */
typedef struct {
    int orig_h, orig_w;      /* original_size */
    int crop_top, crop_left; /* crops_coords_top_left */
    int target_h, target_w;  /* target_size */
} sde_sdxl_sizes;

typedef struct sde_sdxl_cond sde_sdxl_cond;

/** 1 when the tensors are SDXL's: a UNet with label_emb and a second (bigG) text encoder. */
int sde_sdxl_detect(const sde_ckpt *c);
/** Builds both text encoders and resolves the text projection. 0, or -1 with err. */
int sde_sdxl_cond_build(sde_ckpt *c, sde_sdxl_cond **out, char *err, size_t errlen);
/** sde_sdxl_cond_build() on backend be. */
int sde_sdxl_cond_build_on(sde_backend *be, sde_ckpt *c, sde_sdxl_cond **out, char *err, size_t errlen);
void sde_sdxl_cond_free(sde_sdxl_cond *s);
/** Runs both text encoders on be from now on (sde_clip_use_backend). */
void sde_sdxl_cond_use_backend(sde_sdxl_cond *s, sde_backend *be);
/** The CLIP ViT-L encoder (for vocabulary checks) and the parameters of both encoders. */
const sde_clip *sde_sdxl_clip_l(const sde_sdxl_cond *s);
int64_t sde_sdxl_params(const sde_sdxl_cond *s);
/** ctx[77][2048] and y[SDE_SDXL_ADM] for tokens ids (end-padded with eos). zero_ctx: the context is all
 * zeros (an empty negative prompt) while y still holds the pooled text. Never allocates. */
void sde_sdxl_encode(sde_sdxl_cond *s, const int32_t ids[SDE_TOK_CONTEXT], int32_t eos, int zero_ctx,
                     const sde_sdxl_sizes *sz, float *ctx, float *y);
/** out[256] = [cos(t f_0..127) | sin(t f_0..127)], f_i = 10000^(-i/128), in float like the reference. */
void sde_sdxl_size_embed(float t, float out[SDE_SDXL_EMB]);
/** y[SDE_SDXL_ADM] = pooled | e(orig h, w) | e(crop top, left) | e(target h, w). */
void sde_sdxl_adm(const float pooled[SDE_SDXL_POOLED], const sde_sdxl_sizes *sz, float *y);
/** out[dp] = h[d] projected by P: as h @ P with P [d][dp] (OpenCLIP), or as a Linear weight [dp][d]
 * (diffusers' text_projection.weight, i.e. P^T) when linear != 0. */
void sde_sdxl_project(const float *h, const float *p, int d, int dp, int linear, float *out);
/** SDXL's schedule as the reference computes it without a stored one: betas and their product in float. */
void sde_sdxl_alphas_f32(float ac[1000]);

#endif
