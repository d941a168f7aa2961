/* vae.h: the Stable Diffusion VAE (KL-f8) decoder and encoder, weights from first_stage_model.*.
 * Works in bounded memory at any size (convolutions are tiled over rows). */
#ifndef SDE_VAE_H
#define SDE_VAE_H

#include "backend.h"
#include "checkpoint.h"

typedef struct {
    int ch;             /* 128 */
    int ch_mult[4];     /* {1,2,4,4} */
    int n_levels;       /* 4 */
    int num_res_blocks; /* 2 */
    int z_channels;     /* 4 */
    int groups;         /* 32 */
} sde_vae_config;

typedef struct sde_vae sde_vae;

/** Infers the config from tensor shapes under first_stage_model.* (GroupNorm groups: metadata "sdw.groups",
 * else min(32, ch)) and resolves every weight; the encoder is optional. Errors name the tensor. */
int sde_vae_build(sde_ckpt *c, sde_vae **out, char *err, size_t errlen);
/** sde_vae_build() on backend be. */
int sde_vae_build_on(sde_backend *be, sde_ckpt *c, sde_vae **out, char *err, size_t errlen);
void sde_vae_free(sde_vae *v);
/** Runs v on be from now on.
 * Buffers and weights stay valid only when be shares them with the backend it was built on (a profiling
 * wrapper around it, backend_profile.h); switch before freeing that wrapper. */
void sde_vae_use_backend(sde_vae *v, sde_backend *be);
/** The inferred configuration. */
const sde_vae_config *sde_vae_get_config(const sde_vae *v);
/** rgb[3][8h][8w] in about [-1,1] from z[4][h][w] (z already divided by the 0.18215 scale factor).
 * cancel (may be NULL) is polled between blocks; returns 0, 1 if cancelled, -1 on allocation failure. */
int sde_vae_decode(sde_vae *v, const float *z, int h, int w, float *rgb, int (*cancel)(void *), void *ud,
                   char *err, size_t errlen);
/** mean[4][H/8][W/8] of the posterior for rgb[3][H][W] in [-1,1] (not yet multiplied by 0.18215). */
int sde_vae_encode(sde_vae *v, const float *rgb, int H, int W, float *mean, char *err, size_t errlen);
/** Like sde_vae_encode, but moments[2*z][H/8][W/8] = mean then log-variance, for a posterior sample. */
int sde_vae_encode_moments(sde_vae *v, const float *rgb, int H, int W, float *moments, char *err,
                           size_t errlen);

#endif
