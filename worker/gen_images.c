/* gen_images.c: the request's PNG inputs (init image, mask) decoded into the engine's pixel buffers, for
 * the worker process and the generate CLI. */
#include "gen_images.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mask_png.h"
#include "png_io.h"

int sdw_gen_images_decode(const sdw_gen_request *r, sde_gen_params *p, sdw_gen_images *img,
                          const char **field, char *err, size_t errlen)
{
    memset(img, 0, sizeof *img);
    *field = NULL;
    char e[256];
    if (r->init_image && r->init_image_len) {
        if (sde_png_decode(r->init_image, r->init_image_len, &img->init_rgb, &p->init_w, &p->init_h, e,
                           sizeof e)) {
            *field = "init_image";
            snprintf(err, errlen, "init_image: not a readable PNG: %s", e);
            return -1;
        }
        p->init_rgb = img->init_rgb;
        p->strength = (float)r->strength;
    }
    if (r->mask && r->mask_len) {
        if (r->mask_mode < SDW_MASK_MODE_LUMA || r->mask_mode > SDW_MASK_MODE_A1111) {
            *field = "mask";
            snprintf(err, errlen, "mask_mode %d is not one of 0..3", r->mask_mode);
            sdw_gen_images_free(img);
            return -1;
        }
        int rc;
        size_t n_repaint = 1;
        if (r->mask_mode == SDW_MASK_MODE_LUMA && !r->mask_invert) {
            rc = sde_png_decode(r->mask, r->mask_len, &img->mask_rgb, &p->mask_w, &p->mask_h, e, sizeof e);
        } else {
            /* the surfaces' conventions: alpha, or inverted; what comes out is white = repaint */
            static const sde_mask_mode modes[] = {SDE_MASK_LUMA, SDE_MASK_ALPHA0, SDE_MASK_ALPHA0,
                                                  SDE_MASK_A1111};
            int alpha;
            rc = sde_mask_png_decode(r->mask, r->mask_len, modes[r->mask_mode], r->mask_invert,
                                     &img->mask_rgb, &p->mask_w, &p->mask_h, &n_repaint, &alpha, e, sizeof e);
        }
        if (rc) {
            *field = "mask";
            snprintf(err, errlen, "mask: not a readable PNG: %s", e);
            sdw_gen_images_free(img);
            return -1;
        }
        if (!n_repaint && r->mask_mode == SDW_MASK_MODE_ALPHA0) {
            *field = "mask";
            snprintf(err, errlen, "mask: it marks nothing to edit (edit where its alpha is 0: transparent)");
            sdw_gen_images_free(img);
            return -1;
        }
        if (!n_repaint && r->mask_mode == SDW_MASK_MODE_IMAGE_ALPHA) {
            /* an image with alpha but nothing transparent: an edit of the whole image */
            free(img->mask_rgb);
            img->mask_rgb = NULL;
            p->mask_w = p->mask_h = 0;
        }
        p->mask = img->mask_rgb;
    }
    p->mask_blur = r->mask_blur;
    if (r->lora_dir && *r->lora_dir) p->lora_dir = r->lora_dir;
    if (r->loras && *r->loras) {
        /* "NAME:WEIGHT\n" lines, as the supervisor writes them */
        if (!(img->names = strdup(r->loras))) {
            *field = "loras";
            snprintf(err, errlen, "out of memory");
            sdw_gen_images_free(img);
            return -1;
        }
        int n = 0;
        for (char *line = img->names, *next; line && *line; line = next) {
            next = strchr(line, '\n');
            if (next) *next++ = 0;
            char *colon = strrchr(line, ':'), *end = NULL;
            if (colon) *colon = 0;
            float w = colon ? strtof(colon + 1, &end) : 1.f;
            if (n == (int)(sizeof img->loras / sizeof *img->loras) || (colon && (!*(colon + 1) || *end))) {
                *field = "loras";
                snprintf(err, errlen, "loras: bad entry \"%s\" (at most 8 NAME:WEIGHT lines)", line);
                sdw_gen_images_free(img);
                return -1;
            }
            img->loras[n].name = line;
            img->loras[n++].weight = w;
        }
        p->loras = img->loras;
        p->n_loras = n;
    }
    return 0;
}

void sdw_gen_images_free(sdw_gen_images *img)
{
    free(img->init_rgb);
    free(img->mask_rgb);
    free(img->names);
    img->init_rgb = img->mask_rgb = NULL;
    img->names = NULL;
}
