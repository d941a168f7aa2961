/* engine_trace.h: an optional tap on the generate pipeline's intermediate tensors (text conditioning,
 * noise, each step's latents, the VAE input/output), for golden tests and debugging; costs nothing unset. */
#ifndef SDE_ENGINE_TRACE_H
#define SDE_ENGINE_TRACE_H

#include <stddef.h>

#include "sd_engine.h"

/** Receives one tensor of n floats. Names follow the peer's dump files: cond_crossattn, uncond_crossattn
 * ([77][dim]; uncond only with guidance > 1), SDXL's cond_vector, uncond_vector (y, [2816]), noise, x_T,
 * stepNN_x, stepNN_unet_in, stepNN_eps_cond, stepNN_eps_uncond, stepNN_eps_guided, stepNN_denoised (NN from
 * 01; [4][h/8][w/8]; eps_* are the raw UNet outputs, v for v models), x0, vae_in, vae_out ([3][H][W] in
 * [0,1]); over an init image init_latent, and for a 9-channel inpainting UNet concat ([5][h/8][w/8]: latent
 * mask, masked-image latent). Called on the generating thread; data is only valid during the call. */
typedef void (*sde_trace_fn)(void *ud, const char *name, const float *data, size_t n);

/** Installs (or, with fn NULL, removes) the tap for later sde_generate() calls on e. */
void sde_engine_set_trace(sde_engine *e, sde_trace_fn fn, void *ud);

#endif
