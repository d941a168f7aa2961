/* validate_images.c: the image inputs of POST /v1/jobs (init_image, mask as base64 PNG) and their
 * parameters (strength, mask_blur): decoded, sized and range-checked before a job is queued. */
#include "validate_images.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* the engine's own limit (png_io.h): a larger side is refused here rather than after queueing */
#define IMG_MAX_DIM 16384

static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

/* Standard or URL-safe base64, padding optional, whitespace skipped. 0 with *out malloc'd, -1 if malformed.
 */
static int b64_decode(const char *s, size_t n, uint8_t **out, size_t *outlen)
{
    uint8_t *b = malloc(n / 4 * 3 + 3);
    if (!b) return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int v = b64_val(c);
        if (v < 0 || pad) {
            free(b);
            return -1;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            b[o++] = (uint8_t)(acc >> bits);
        }
    }
    if (bits >= 6 || pad > 2) {
        free(b);
        return -1;
    }
    *out = b;
    *outlen = o;
    return 0;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads field key of root as a base64 PNG into *buf, *len and its IHDR size. 1 absent, 0 read, -1 with e. */
static int get_png(json_t *root, const char *key, uint8_t **buf, size_t *len, int *w, int *h,
                   sdw_api_error *e)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 1;
    if (!json_is_string(v))
        return sdw_api_error_set(e, 400, "invalid_type", key, "%s must be a base64 PNG string", key);
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    const char *comma = n > 5 && !strncmp(s, "data:", 5) ? memchr(s, ',', n) : NULL;
    if (comma) {
        n -= (size_t)(comma + 1 - s);
        s = comma + 1;
    }
    if (b64_decode(s, n, buf, len))
        return sdw_api_error_set(e, 400, "invalid_image", key, "%s is not valid base64", key);
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const uint8_t *p = *buf;
    if (*len < 33 || memcmp(p, sig, 8) || be32(p + 8) != 13 || memcmp(p + 12, "IHDR", 4))
        return sdw_api_error_set(e, 400, "invalid_image", key, "%s is not a PNG image", key);
    uint32_t pw = be32(p + 16), ph = be32(p + 20);
    if (pw < 1 || ph < 1 || pw > IMG_MAX_DIM || ph > IMG_MAX_DIM)
        return sdw_api_error_set(e, 400, "invalid_image", key, "%s is %ux%u; sides must be 1..%d", key, pw,
                                 ph, IMG_MAX_DIM);
    *w = (int)pw;
    *h = (int)ph;
    return 0;
}

int sdw_validate_images(json_t *root, sdw_gen_request *r, sdw_api_error *e)
{
    int iw = 0, ih = 0, mw = 0, mh = 0;
    int hi = get_png(root, "init_image", &r->init_image, &r->init_image_len, &iw, &ih, e);
    if (hi < 0) return -1;
    int hm = get_png(root, "mask", &r->mask, &r->mask_len, &mw, &mh, e);
    if (hm < 0) return -1;
    if (hm == 0 && hi != 0)
        return sdw_api_error_set(e, 400, "missing_field", "mask", "mask needs an init_image");
    if (hm == 0 && (mw != iw || mh != ih))
        return sdw_api_error_set(e, 400, "out_of_range", "mask", "mask is %dx%d but init_image is %dx%d", mw,
                                 mh, iw, ih);
    json_t *v = json_object_get(root, "strength");
    if (v && !json_is_null(v)) {
        if (!json_is_number(v))
            return sdw_api_error_set(e, 400, "invalid_type", "strength", "strength must be a number");
        double s = json_number_value(v);
        if (!isfinite(s) || !(s > 0 && s <= 1))
            return sdw_api_error_set(e, 400, "out_of_range", "strength",
                                     "strength is %g; it must be in (0, 1]", s);
        r->strength = s;
    }
    v = json_object_get(root, "mask_blur");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v))
            return sdw_api_error_set(e, 400, "invalid_type", "mask_blur", "mask_blur must be an integer");
        json_int_t b = json_integer_value(v);
        if (b < 0 || b > 64)
            return sdw_api_error_set(e, 400, "out_of_range", "mask_blur",
                                     "mask_blur is %lld; it must be 0..64 pixels", (long long)b);
        r->mask_blur = (int)b;
    }
    return 0;
}
