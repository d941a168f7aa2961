/* unet.h: the Stable Diffusion UNet (SD 1.x / 2.x / XL / tiny configurations), weights from a checkpoint.
 * Config is inferred from tensor shapes; forward runs a batch (cond+uncond) in one call. */
#ifndef SDE_UNET_H
#define SDE_UNET_H

#include "backend.h"
#include "checkpoint.h"

typedef struct {
    int in_channels;       /* 4 */
    int out_channels;      /* 4 */
    int model_channels;    /* 320 for SD 1.x/2.x */
    int n_levels;          /* len(channel_mult): 4 */
    int channel_mult[4];   /* {1,2,4,4} */
    int num_res_blocks;    /* per level: 2 */
    int attn_levels[4];    /* 1 where a level has transformer blocks: {1,1,1,0} */
    int num_heads;         /* SD 1.x: 8; -1 when head_dim is fixed instead */
    int head_dim;          /* SD 2.x: 64; -1 when num_heads is fixed instead */
    int context_dim;       /* 768 (SD 1.x), 1024 (SD 2.x) */
    int linear_proj;       /* proj_in/proj_out are Linear (SD 2.x) rather than 1x1 conv */
    int transformer_depth; /* the middle block's (or first level's) depth: 1, SDXL 10 */
    int level_depth[4];    /* blocks per transformer at each level, 0 = transformer_depth: SDXL {0,2,10} */
    int adm_in_channels;   /* width of the class/size vector y into label_emb (SDXL 2816), 0 = none */
    int groups;            /* GroupNorm groups: 32 */
} sde_unet_config;

typedef struct sde_unet sde_unet;

/** Infers the config from tensor shapes under model.diffusion_model.* (heads: metadata key
 * "sdw.unet.num_head_channels" if present, else 8 heads when context_dim is 768, else 64 per head). */
int sde_unet_config_infer(const sde_ckpt *c, sde_unet_config *cfg, char *err, size_t errlen);
/** Resolves every weight; errors name the missing/mismatched tensor. */
int sde_unet_build(sde_ckpt *c, const sde_unet_config *cfg, sde_unet **out, char *err, size_t errlen);
/** sde_unet_build() on backend be (its buffers and weights live there). */
int sde_unet_build_on(sde_backend *be, sde_ckpt *c, const sde_unet_config *cfg, sde_unet **out, char *err,
                      size_t errlen);
void sde_unet_free(sde_unet *u);
/** Runs u on be from now on (sde_unet_free included).
 * Buffers and weights stay valid only when be shares them with the backend it was built on (a profiling
 * wrapper around it, backend_profile.h); switch before freeing that wrapper. */
void sde_unet_use_backend(sde_unet *u, sde_backend *be);
/** Allocates activations for up to batch images of h x w latents (any size 1..1024) and n_ctx context tokens.
 * Call before sampling; forward never allocates. A reservation that already covers the shape is kept; batch 0
 * releases the activations (do that before the VAE decode to lower the peak). */
int sde_unet_reserve(sde_unet *u, int batch, int h, int w, int n_ctx, char *err, size_t errlen);
/** Sets the SDXL vector y[b][adm_in_channels] the next forwards add through label_emb to the time
 * embedding (copied; batch <= the reserved batch). Ignored by UNets without label_emb. */
void sde_unet_set_y(sde_unet *u, const float *y, int batch);
/** out[b][4][h][w] = UNet(x[b][4][h][w], t[b], context[b][n_ctx][context_dim]). As in diffusers'
 * UNet2DConditionModel, a stride-2 downsample of an odd side rounds up and each upsample is a nearest resize
 * to the size of the skip connection it is concatenated with (exactly 2x unless that side is odd). */
void sde_unet_forward(sde_unet *u, const float *x, int batch, int h, int w, const float *timesteps,
                      const float *context, int n_ctx, float *out);
/** Test switch: on != 0 sends every upsample, exactly-2x ones included, through the explicit nearest resize
 * + convolution used for odd sizes instead of the fused 2x path; the two give the same numbers. */
void sde_unet_force_resize(sde_unet *u, int on);
/** Bytes of activations sde_unet_reserve() would allocate for this shape (SIZE_MAX when out of memory),
 * for choosing how many images run through one forward. */
size_t sde_unet_activation_bytes(const sde_unet *u, int batch, int h, int w, int n_ctx);
/** Multiply-adds of one forward for one image of this size (for GFLOP/s reports). */
double sde_unet_flops(const sde_unet *u, int h, int w, int n_ctx);

#endif
