/* preview.c: live previews while sampling: the denoised latent mapped to RGB by a fixed linear
 * approximation (no VAE), upscaled to at most 256 px on the long side, as PNG; or an image the TAESD
 * decoded, shrunk to that size. */
#include "preview.h"

#include <stdlib.h>

#include "png_io.h"
#include "weights.h"

/* Least-squares fits of decoded RGB (in [-1, 1]) on the 4 latent channels, the widely used factors of
 * the SD 1.x/2.x and SDXL VAEs: good enough to see composition and colour at a glance for free. */
static const float RGB_SD[4][3] = {{0.3512f, 0.2297f, 0.3227f},
                                   {0.3250f, 0.4974f, 0.2350f},
                                   {-0.2829f, 0.1762f, 0.2721f},
                                   {-0.2120f, -0.2616f, -0.7177f}};
static const float RGB_SDXL[4][3] = {{0.3920f, 0.4054f, 0.4549f},
                                     {-0.2634f, -0.0196f, 0.0653f},
                                     {0.0568f, 0.1687f, -0.0755f},
                                     {-0.3112f, -0.2359f, -0.2076f}};

int sde_preview_png(const float *latent, int lh, int lw, int sdxl, uint8_t **png, size_t *len, int *w, int *h,
                    char *err, size_t errlen)
{
    const float(*m)[3] = sdxl ? RGB_SDXL : RGB_SD;
    int longest = lh > lw ? lh : lw, k = longest >= SDE_PREVIEW_MAX ? 1 : SDE_PREVIEW_MAX / longest;
    int ow = lw * k, oh = lh * k;
    if (longest > SDE_PREVIEW_MAX) {
        /* a latent longer than the cap is subsampled instead */
        k = 0;
        ow = lw * SDE_PREVIEW_MAX / longest;
        oh = lh * SDE_PREVIEW_MAX / longest;
    }
    uint8_t *px = malloc((size_t)ow * oh * 3);
    if (!px) return sde_fail(err, errlen, "preview: out of memory");
    const size_t hw = (size_t)lh * lw;
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            int ly = k ? y / k : y * lh / oh, lx = k ? x / k : x * lw / ow;
            size_t i = (size_t)ly * lw + lx;
            for (int c = 0; c < 3; c++) {
                float v = 0.f;
                for (int ch = 0; ch < 4; ch++)
                    v += latent[ch * hw + i] * m[ch][c];
                v = (v + 1.f) * 127.5f + 0.5f;
                px[((size_t)y * ow + x) * 3 + c] = (uint8_t)(v < 0.f ? 0.f : v > 255.f ? 255.f : v);
            }
        }
    int rc = sde_png_encode(px, ow, oh, NULL, png, len, err, errlen);
    free(px);
    *w = ow;
    *h = oh;
    return rc;
}

int sde_preview_png_rgb(const float *rgb, int H, int W, uint8_t **png, size_t *len, int *w, int *h, char *err,
                        size_t errlen)
{
    const int longest = H > W ? H : W;
    int ow = W, oh = H;
    if (longest > SDE_PREVIEW_MAX) {
        ow = W * SDE_PREVIEW_MAX / longest;
        oh = H * SDE_PREVIEW_MAX / longest;
        ow = ow < 1 ? 1 : ow;
        oh = oh < 1 ? 1 : oh;
    }
    uint8_t *px = malloc((size_t)ow * oh * 3);
    if (!px) return sde_fail(err, errlen, "preview: out of memory");
    const size_t hw = (size_t)H * W;
    /* each output pixel averages the source rows [y0, y1) and columns [x0, x1) it covers */
    for (int y = 0; y < oh; y++) {
        const int y0 = (int)((long long)y * H / oh), y1 = (int)((long long)(y + 1) * H / oh);
        for (int x = 0; x < ow; x++) {
            const int x0 = (int)((long long)x * W / ow), x1 = (int)((long long)(x + 1) * W / ow);
            for (int c = 0; c < 3; c++) {
                float sum = 0.f;
                for (int sy = y0; sy < y1; sy++)
                    for (int sx = x0; sx < x1; sx++) {
                        float v = rgb[(size_t)c * hw + (size_t)sy * W + sx];
                        sum += v < 0.f ? 0.f : v > 1.f ? 1.f : v;
                    }
                px[((size_t)y * ow + x) * 3 + c] =
                    (uint8_t)(sum / (float)((y1 - y0) * (x1 - x0)) * 255.f + 0.5f);
            }
        }
    }
    int rc = sde_png_encode(px, ow, oh, NULL, png, len, err, errlen);
    free(px);
    *w = ow;
    *h = oh;
    return rc;
}
