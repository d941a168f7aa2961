/* preview.h: live previews while sampling: the denoised latent mapped to RGB by a fixed linear
 * approximation (no VAE), upscaled to at most 256 px on the long side, as PNG. */
#ifndef SDE_PREVIEW_H
#define SDE_PREVIEW_H

#include <stddef.h>
#include <stdint.h>

/** Longest side of a preview image in pixels. */
#define SDE_PREVIEW_MAX 256

/** PNG of latent[4][lh][lw] (scaled latent, as the sampler sees it) by the SD 1.x/2.x latent->RGB matrix
 * (sdxl != 0: the SDXL one), nearest-upscaled by the largest integer factor that keeps the long side
 * <= SDE_PREVIEW_MAX. *png is malloc'd. Returns 0, or -1 with err. */
int sde_preview_png(const float *latent, int lh, int lw, int sdxl, uint8_t **png, size_t *len, int *w, int *h,
                    char *err, size_t errlen);

/** PNG of a decoded image rgb[3][H][W] in [0, 1] (clamped here), shrunk by area averaging so the long side
 * is <= SDE_PREVIEW_MAX (kept as is when it already is). *png is malloc'd. Returns 0, or -1 with err. */
int sde_preview_png_rgb(const float *rgb, int H, int W, uint8_t **png, size_t *len, int *w, int *h, char *err,
                        size_t errlen);

#endif
