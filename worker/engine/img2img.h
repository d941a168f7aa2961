/* img2img.h: the init-image workflows (img2img, inpainting with a 4- or 9-channel model): the init latent as
 * a VAE posterior sample, the schedule cut by strength, and the latent-space mask. docs/workflows.md. */
#ifndef SDE_IMG2IMG_H
#define SDE_IMG2IMG_H

#include <stddef.h>
#include <stdint.h>

#include "sd_engine.h"
#include "vae.h"

/** Checks the init image, strength and mask of p: NULL, or the offending field's name with err filled. */
const char *sde_img2img_validate(const sde_gen_params *p, char *err, size_t errlen);

/** Index into the steps+1 sigmas where sampling over an init image starts, as the peer cuts the schedule:
 * t_enc = int(steps * strength), one less when that is all steps; start = steps - t_enc - 1. */
int sde_img2img_start(int steps, float strength);

/** Bilinear resize of 8-bit RGB (w x h) to planar float [3][H][W] in [-1, 1]; the same size copies exactly.
 */
void sde_img2img_to_planar(const uint8_t *rgb, int w, int h, int W, int H, float *out);

/** The init latent [4][H/8][W/8]: VAE posterior sample mean + exp(logvar/2) * randn(seed, offset 0), times
 * the latent scale. planar is [3][H][W] in [-1, 1]. Returns 0, or -1 with err. */
int sde_img2img_encode(sde_vae *v, const float *planar, int H, int W, uint64_t seed, float scale,
                       float *latent, char *err, size_t errlen);

/** Latent mask m[H/8][W/8] in [0, 1] (1 = repaint) from an RGB mask (w x h, luminance) brought to W x H.
 * blur 0: each pixel rounds to 0 or 1 and a latent cell is 1 when any of its 8x8 pixels is (the peer's
 * "nearest-max"); blur > 0: the pixel mask is box-blurred twice with that radius (a feathered edge) and a
 * cell takes the mean of its pixels. Returns 0, or -1 when out of memory. */
int sde_img2img_mask(const uint8_t *rgb, int w, int h, int W, int H, int blur, float *m);

/** The 5 extra input channels of a 9-channel inpainting UNet, concat[5][H/8][W/8] (the peer's order after the
 * noisy latent): the latent mask (nearest-max of the rounded pixel mask, 1 = repaint), then the latent of the
 * masked image, a VAE posterior sample of planar * (1 - pixel mask) with randn(seed, offset 1), times scale.
 * mask_rgb NULL: an all-repaint mask (the masked image is uniform grey). planar NULL (text-to-image): the
 * mask channel is 1 and the masked-image latent 0, no VAE run. dmask (if not NULL) gets the peer's blend
 * mask for such a model, the latent mask dilated by a 3x3 max-pool. Returns 0, or -1 with err. */
int sde_img2img_inpaint_concat(sde_vae *v, const float *planar, const uint8_t *mask_rgb, int w, int h, int W,
                               int H, uint64_t seed, float scale, float *concat, float *dmask, char *err,
                               size_t errlen);

#endif
