/* api_a1111_img2img.c: the img2img fields of POST /sdapi/v1/img2img (init_images, mask, denoising_strength,
 * mask_blur, inpainting_mask_invert, resize_mode, ...) as /v1/jobs fields; the rest is txt2img's. */
#include <stdint.h>
#include <string.h>

#include "api.h"

/* A1111's defaults where they differ from /v1/jobs (its denoising_strength, 0.75, is ours) */
#define A1_MASK_BLUR 4

static int oom(sdw_api_error *e)
{
    return sdw_api_error_set(e, 500, "internal", NULL, "out of memory");
}

static int is_int(json_t *v, json_int_t *x)
{
    if (json_is_integer(v)) {
        *x = json_integer_value(v);
        return 1;
    }
    if (json_is_boolean(v)) {
        *x = json_is_true(v);
        return 1;
    }
    return 0;
}

int sdw_a1111_img2img_translate(json_t *in, json_t *out, sdw_a1111_i2i *st, sdw_api_error *e)
{
    json_t *v;
    json_int_t x;
    memset(st, 0, sizeof *st);

    v = json_object_get(in, "init_images");
    if (!v || json_is_null(v) || (json_is_array(v) && json_array_size(v) == 0))
        return sdw_api_error_set(e, 400, "missing_field", "init_images",
                                 "init_images is required: an array with one base64 PNG");
    if (!json_is_array(v))
        return sdw_api_error_set(e, 400, "invalid_type", "init_images",
                                 "init_images must be an array of base64 PNG strings");
    if (json_array_size(v) > 1)
        return sdw_api_error_set(e, 400, "unsupported_value", "init_images",
                                 "one init image per request: batches are not supported yet");
    json_t *img = json_array_get(v, 0);
    if (!json_is_string(img))
        return sdw_api_error_set(e, 400, "invalid_type", "init_images",
                                 "init_images must be an array of base64 PNG strings");
    if (json_object_set(out, "init_image", img)) return oom(e);

    if ((v = json_object_get(in, "denoising_strength")) && !json_is_null(v) &&
        json_object_set(out, "strength", v))
        return oom(e);

    int invert = 0;
    if ((v = json_object_get(in, "inpainting_mask_invert")) && !json_is_null(v)) {
        if (!is_int(v, &x) || x < 0 || x > 1)
            return sdw_api_error_set(
                e, 400, "invalid_value", "inpainting_mask_invert",
                "inpainting_mask_invert must be 0 (white = repaint) or 1 (black = repaint)");
        invert = (int)x;
    }
    json_t *mask = json_object_get(in, "mask");
    if (mask && !json_is_null(mask)) {
        if (!json_is_string(mask))
            return sdw_api_error_set(e, 400, "invalid_type", "mask", "mask must be a base64 PNG string");
        /* A1111's RGBA alpha and inversion are the worker's to apply (mask_mode): it decodes pixels */
        if (json_object_set(out, "mask", mask)) return oom(e);
        st->mask = 1;
        st->invert = invert;
        /* A1111 blurs by 4 pixels unless told (mask_blur, else mask_blur_x and _y, which must agree) */
        json_t *b = json_object_get(in, "mask_blur");
        if (!b || json_is_null(b)) {
            json_t *bx = json_object_get(in, "mask_blur_x"), *by = json_object_get(in, "mask_blur_y");
            if (bx && by && !json_is_null(bx) && !json_is_null(by) && !json_equal(bx, by))
                return sdw_api_error_set(e, 400, "unsupported_value", "mask_blur_y",
                                         "mask_blur_x and mask_blur_y must be equal (one blur radius)");
            b = bx && !json_is_null(bx) ? bx : by;
        }
        if (b && !json_is_null(b) ? json_object_set(out, "mask_blur", b)
                                  : json_object_set_new(out, "mask_blur", json_integer(A1_MASK_BLUR)))
            return oom(e);
    }

    if ((v = json_object_get(in, "resize_mode")) && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 3)
            return sdw_api_error_set(e, 400, "invalid_value", "resize_mode",
                                     "resize_mode must be 0 (just resize), 1, 2 or 3");
        st->resize_mode = (int)json_integer_value(v);
    }
    /* these change A1111's image unless at their neutral value */
    if ((v = json_object_get(in, "initial_noise_multiplier")) && !json_is_null(v) &&
        !(json_is_number(v) && json_number_value(v) == 1))
        return sdw_api_error_set(e, 400, "unsupported_value", "initial_noise_multiplier",
                                 "initial_noise_multiplier is not supported; send 1 (or leave it out)");
    if ((v = json_object_get(in, "latent_mask")) && !json_is_null(v))
        return sdw_api_error_set(e, 400, "unsupported_value", "latent_mask",
                                 "latent_mask is not supported; send null (or leave it out)");

    /* A1111 echoes the request without its images unless include_init_images */
    v = json_object_get(in, "include_init_images");
    if (!json_is_true(v)) {
        if (json_object_get(in, "init_images") && json_object_set_new(in, "init_images", json_null()))
            return oom(e);
        if (json_object_get(in, "mask") && json_object_set_new(in, "mask", json_null())) return oom(e);
    }
    return 0;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int sdw_a1111_img2img_check(sdw_gen_request *r, const sdw_a1111_i2i *st, sdw_api_error *e)
{
    if (st->mask) {
        r->mask_mode = SDW_MASK_MODE_A1111;
        r->mask_invert = st->invert;
    }
    if (!st->resize_mode || !r->init_image || r->init_image_len < 24) return 0;
    /* the engine stretches the image to the size (mode 0); the crop and fill modes differ only when the
     * image's size is not the requested one */
    int iw = (int)be32(r->init_image + 16), ih = (int)be32(r->init_image + 20);
    if (iw == r->width && ih == r->height) return 0;
    return sdw_api_error_set(e, 400, "unsupported_value", "resize_mode",
                             "resize_mode %d is not supported for an init image of another size (%dx%d, "
                             "not %dx%d); 0 (just resize) is",
                             st->resize_mode, iw, ih, r->width, r->height);
}
