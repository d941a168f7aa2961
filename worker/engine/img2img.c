/* img2img.c: the init-image workflows (img2img, inpainting with a 4- or 9-channel model): the init latent as
 * a VAE posterior sample, the schedule cut by strength, and the latent-space mask. docs/workflows.md. */
#include "img2img.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "philox.h"
#include "png_io.h"
#include "weights.h"

const char *sde_img2img_validate(const sde_gen_params *p, char *err, size_t errlen)
{
    if (!p->init_rgb) {
        snprintf(err, errlen, "mask needs an init image");
        return "mask";
    }
    if (p->init_w < 1 || p->init_h < 1 || p->init_w > SDE_PNG_MAX_DIM || p->init_h > SDE_PNG_MAX_DIM) {
        snprintf(err, errlen, "init image is %dx%d: sides must be 1..%d", p->init_w, p->init_h,
                 SDE_PNG_MAX_DIM);
        return "init_image";
    }
    if (!(p->strength > 0.f && p->strength <= 1.f)) {
        snprintf(err, errlen, "strength must be in (0, 1], got %g", (double)p->strength);
        return "strength";
    }
    if (p->mask && (p->mask_w != p->init_w || p->mask_h != p->init_h)) {
        snprintf(err, errlen, "mask is %dx%d but the init image is %dx%d", p->mask_w, p->mask_h, p->init_w,
                 p->init_h);
        return "mask";
    }
    if (p->mask_blur < 0 || p->mask_blur > 64) {
        snprintf(err, errlen, "mask_blur must be 0..64 pixels, got %d", p->mask_blur);
        return "mask_blur";
    }
    return NULL;
}

int sde_img2img_start(int steps, float strength)
{
    int t_enc = (int)((float)steps * strength);
    if (t_enc >= steps) t_enc = steps - 1;
    if (t_enc < 0) t_enc = 0;
    return steps - t_enc - 1;
}

/* Samples an 8-bit plane (stride 3 bytes) at (fy, fx) with bilinear weights; pixel centres at +0.5. */
static float bilinear(const uint8_t *rgb, int w, int h, int c, float fy, float fx)
{
    fy = fy < 0.f ? 0.f : fy > (float)(h - 1) ? (float)(h - 1) : fy;
    fx = fx < 0.f ? 0.f : fx > (float)(w - 1) ? (float)(w - 1) : fx;
    int y0 = (int)fy, x0 = (int)fx;
    int y1 = y0 + 1 < h ? y0 + 1 : y0, x1 = x0 + 1 < w ? x0 + 1 : x0;
    float ay = fy - (float)y0, ax = fx - (float)x0;
    float a = rgb[((size_t)y0 * w + x0) * 3 + c], b = rgb[((size_t)y0 * w + x1) * 3 + c];
    float d = rgb[((size_t)y1 * w + x0) * 3 + c], e = rgb[((size_t)y1 * w + x1) * 3 + c];
    return (a * (1.f - ax) + b * ax) * (1.f - ay) + (d * (1.f - ax) + e * ax) * ay;
}

/* Channel c of the image at output pixel (y, x) of a W x H resize, 0..255. */
static float sample_at(const uint8_t *rgb, int w, int h, int W, int H, int c, int y, int x)
{
    if (w == W && h == H) return rgb[((size_t)y * w + x) * 3 + c];
    float fy = ((float)y + 0.5f) * (float)h / (float)H - 0.5f;
    float fx = ((float)x + 0.5f) * (float)w / (float)W - 0.5f;
    return bilinear(rgb, w, h, c, fy, fx);
}

void sde_img2img_to_planar(const uint8_t *rgb, int w, int h, int W, int H, float *out)
{
    const size_t npx = (size_t)W * H;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                out[(size_t)c * npx + (size_t)y * W + x] =
                    sample_at(rgb, w, h, W, H, c, y, x) / 255.f * 2.f - 1.f;
}

/* The posterior sample with the noise randn(seed, offset): the peer's generator is seeded once per job and
 * each VAE encode draws the next offset. */
static int encode_at(sde_vae *v, const float *planar, int H, int W, uint64_t seed, uint32_t offset,
                     float scale, float *latent, char *err, size_t errlen)
{
    const size_t n = (size_t)4 * (H / 8) * (W / 8);
    float *mom = malloc(2 * n * sizeof(float)), *noise = malloc(n * sizeof(float));
    if (!mom || !noise) {
        free(mom);
        free(noise);
        return sde_fail(err, errlen, "out of memory for the init latent");
    }
    int rc = sde_vae_encode_moments(v, planar, H, W, mom, err, errlen);
    if (rc == 0) {
        sde_philox_randn_at(seed, offset, noise, n);
        for (size_t i = 0; i < n; i++) {
            float lv = mom[n + i];
            lv = lv < -30.f ? -30.f : lv > 20.f ? 20.f : lv;
            latent[i] = (mom[i] + expf(0.5f * lv) * noise[i]) * scale;
        }
    }
    free(mom);
    free(noise);
    return rc;
}

/* Two passes of a separable box blur of radius r on a W x H plane (a cheap near-Gaussian feather). */
static void box_blur(float *p, float *tmp, int W, int H, int r)
{
    for (int pass = 0; pass < 2; pass++) {
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                float s = 0.f;
                int k = 0;
                for (int d = -r; d <= r; d++) {
                    int xx = x + d;
                    if (xx >= 0 && xx < W) {
                        s += p[(size_t)y * W + xx];
                        k++;
                    }
                }
                tmp[(size_t)y * W + x] = s / (float)k;
            }
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                float s = 0.f;
                int k = 0;
                for (int d = -r; d <= r; d++) {
                    int yy = y + d;
                    if (yy >= 0 && yy < H) {
                        s += tmp[(size_t)yy * W + x];
                        k++;
                    }
                }
                p[(size_t)y * W + x] = s / (float)k;
            }
    }
}

int sde_img2img_encode(sde_vae *v, const float *planar, int H, int W, uint64_t seed, float scale,
                       float *latent, char *err, size_t errlen)
{
    /* the peer's posterior noise is the same randn(seed, offset 0) the sampler starts from */
    return encode_at(v, planar, H, W, seed, 0, scale, latent, err, errlen);
}

/* The W x H pixel mask, 0 or 1: luminance as PIL's convert("L"), then the peer's rounding. */
static void mask_pixels(const uint8_t *rgb, int w, int h, int W, int H, float *px)
{
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            float l = 0.299f * sample_at(rgb, w, h, W, H, 0, y, x) +
                      0.587f * sample_at(rgb, w, h, W, H, 1, y, x) +
                      0.114f * sample_at(rgb, w, h, W, H, 2, y, x);
            px[(size_t)y * W + x] = l / 255.f >= 0.5f ? 1.f : 0.f;
        }
}

int sde_img2img_mask(const uint8_t *rgb, int w, int h, int W, int H, int blur, float *m)
{
    const size_t npx = (size_t)W * H;
    float *px = malloc(npx * sizeof(float)), *tmp = blur > 0 ? malloc(npx * sizeof(float)) : NULL;
    if (!px || (blur > 0 && !tmp)) {
        free(px);
        free(tmp);
        return -1;
    }
    mask_pixels(rgb, w, h, W, H, px);
    if (blur > 0) box_blur(px, tmp, W, H, blur);
    const int lh = H / 8, lw = W / 8;
    for (int ly = 0; ly < lh; ly++)
        for (int lx = 0; lx < lw; lx++) {
            float mx = 0.f, sum = 0.f;
            for (int y = 8 * ly; y < 8 * ly + 8; y++)
                for (int x = 8 * lx; x < 8 * lx + 8; x++) {
                    float v = px[(size_t)y * W + x];
                    sum += v;
                    mx = v > mx ? v : mx;
                }
            m[(size_t)ly * lw + lx] = blur > 0 ? sum / 64.f : mx;
        }
    free(px);
    free(tmp);
    return 0;
}

int sde_img2img_inpaint_concat(sde_vae *v, const float *planar, const uint8_t *mask_rgb, int w, int h, int W,
                               int H, uint64_t seed, float scale, float *concat, float *dmask, char *err,
                               size_t errlen)
{
    const int lh = H / 8, lw = W / 8;
    const size_t hw = (size_t)lh * lw, npx = (size_t)W * H;
    float *lm = concat, *lat = concat + hw;
    int rc = 0;
    if (!planar || !mask_rgb) {
        for (size_t i = 0; i < hw; i++)
            lm[i] = 1.f;
    } else if (sde_img2img_mask(mask_rgb, w, h, W, H, 0, lm)) {
        return sde_fail(err, errlen, "out of memory for the mask");
    }
    if (!planar) {
        memset(lat, 0, 4 * hw * sizeof(float));
    } else {
        float *px = malloc(npx * sizeof(float)), *masked = malloc(3 * npx * sizeof(float));
        if (!px || !masked) {
            free(px);
            free(masked);
            return sde_fail(err, errlen, "out of memory for the masked image");
        }
        if (mask_rgb)
            mask_pixels(mask_rgb, w, h, W, H, px);
        else
            for (size_t i = 0; i < npx; i++)
                px[i] = 1.f;
        /* the peer greys repainted pixels: (1 - m)(img - 0.5) + 0.5 in [0, 1] is (1 - m) img in [-1, 1] */
        for (int c = 0; c < 3; c++)
            for (size_t i = 0; i < npx; i++)
                masked[(size_t)c * npx + i] = planar[(size_t)c * npx + i] * (1.f - px[i]);
        rc = encode_at(v, masked, H, W, seed, 1, scale, lat, err, errlen);
        free(px);
        free(masked);
    }
    if (dmask)
        for (int y = 0; y < lh; y++)
            for (int x = 0; x < lw; x++) {
                float mx = 0.f;
                for (int dy = -1; dy <= 1; dy++)
                    for (int dx = -1; dx <= 1; dx++) {
                        int yy = y + dy, xx = x + dx;
                        if (yy >= 0 && yy < lh && xx >= 0 && xx < lw && lm[(size_t)yy * lw + xx] > mx)
                            mx = lm[(size_t)yy * lw + xx];
                    }
                dmask[(size_t)y * lw + x] = mx;
            }
    return rc;
}
