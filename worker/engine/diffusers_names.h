/* diffusers_names.h (internal to checkpoint.c): maps diffusers tensor names (UNet2DConditionModel,
 * AutoencoderKL, HF CLIPTextModel) to the single-file LDM names the engine looks tensors up by. */
#ifndef SDE_DIFFUSERS_NAMES_H
#define SDE_DIFFUSERS_NAMES_H

#include <stddef.h>

/** Block structure a UNet's diffusers names imply; LDM block indices depend on it. */
typedef struct {
    int n_levels;    /* number of down_blocks (== up_blocks) */
    int res_blocks;  /* resnets per down block (layers_per_block); up blocks have one more */
    int up_attn[16]; /* 1 where up_blocks.i has attentions (decides output_blocks.k.{1|2} of upsamplers) */
    int mid_attn;    /* mid_block has an attention (middle_block.1) */
} sde_dn_unet_layout;

/** Scans a UNet's diffusers names for its block structure. Returns 0, or -1 with err when a block
 * index is out of range (more than 16 levels or 64 resnets). */
int sde_dn_unet_layout_scan(const char *const *names, int n, sde_dn_unet_layout *L, char *err, size_t errlen);
/** Number of VAE decoder up_blocks named (decoder.up_blocks.i -> decoder.up.{n-1-i}). */
int sde_dn_vae_levels(const char *const *names, int n);

/** "down_blocks.0.resnets.0.norm1.weight" -> "model.diffusion_model.input_blocks.1.0.in_layers.0.weight".
 * Returns 0, or -1 when the name has no LDM equivalent (or the result would not fit in outlen). */
int sde_dn_unet_to_ldm(const sde_dn_unet_layout *L, const char *name, char *out, size_t outlen);
/** "decoder.up_blocks.0.resnets.0.conv1.weight" -> "first_stage_model.decoder.up.3.block.0.conv1.weight"
 * (vae_levels from sde_dn_vae_levels). Returns 0, or -1 when unknown. */
int sde_dn_vae_to_ldm(int vae_levels, const char *name, char *out, size_t outlen);
/** "text_model.X" -> "cond_stage_model.transformer.text_model.X". Returns 0, or -1 when unknown. */
int sde_dn_text_to_ldm(const char *name, char *out, size_t outlen);
/** SDXL's text_encoder_2 (CLIPTextModelWithProjection) -> conditioner.embedders.1.transformer.<name>, its
 * text_projection.weight (P^T, a Linear weight) included. Returns 0, or -1 when unknown. */
int sde_dn_text2_to_ldm(const char *name, char *out, size_t outlen);

#endif
