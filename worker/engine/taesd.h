/* taesd.h: TAESD, madebyollin's tiny autoencoder, as a decoder only: a fast approximate stand-in for the
 * KL-f8 VAE decoder (previews, draft images), from a taesd / taesdxl safetensors file of its own. */
#ifndef SDE_TAESD_H
#define SDE_TAESD_H

#include <stddef.h>

#include "backend.h"

typedef struct sde_taesd sde_taesd;

/** Opens a TAESD file and resolves the decoder's weights. Two layouts, told apart by tensor names: diffusers'
 * AutoencoderTiny (`decoder.layers.N.*`, madebyollin/taesd's diffusion_pytorch_model.safetensors, the one
 * stable-diffusion.cpp's --taesd reads) and the taesd repository's decoder-only file (`N.*`, with N one
 * higher: its Sequential starts with a Clamp). Returns 0, or -1 with err naming the file and tensor. */
int sde_taesd_load(const char *path, sde_taesd **out, char *err, size_t errlen);
/** sde_taesd_load() on backend be. */
int sde_taesd_load_on(sde_backend *be, const char *path, sde_taesd **out, char *err, size_t errlen);
/** Releases the model and unmaps the file. NULL is fine. */
void sde_taesd_free(sde_taesd *t);
/** Latent channels the decoder takes (4 for SD 1.x/2.x and SDXL). */
int sde_taesd_latent_channels(const sde_taesd *t);
/** Parameters of the decoder. */
long long sde_taesd_params(const sde_taesd *t);
/** rgb[3][8h][8w], about [0, 1] and not clamped, from z[4][h][w]: the latent as the sampler sees it (NOT
 * divided by the VAE's scale factor: TAESD was trained on scaled latents, and the peer feeds them as they
 * are). cancel (may be NULL) is polled between blocks; returns 0, 1 if cancelled, -1 with err. */
int sde_taesd_decode(sde_taesd *t, const float *z, int h, int w, float *rgb, int (*cancel)(void *), void *ud,
                     char *err, size_t errlen);

#endif
