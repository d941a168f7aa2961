/* mask_png.c: inpainting masks in the HTTP surfaces' conventions (see mask_png.h), with libpng: decoded to
 * RGBA row by row, judged pixel by pixel into two 0/255 planes (by alpha, by luminance), one kept. */
#include "mask_png.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "png_io.h"

/* a chunk other than the image data cannot make libpng allocate more than this */
#define CHUNK_MAX (1u << 20)

typedef struct {
    const uint8_t *in;
    size_t in_len, in_pos;
    char msg[160];
} ctx_t;

static void on_error(png_structp png, png_const_charp msg)
{
    ctx_t *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static void on_read(png_structp png, png_bytep data, png_size_t n)
{
    ctx_t *c = png_get_io_ptr(png);
    if (n > c->in_len - c->in_pos) png_error(png, "the PNG is cut off");
    memcpy(data, c->in + c->in_pos, n);
    c->in_pos += n;
}

static int fail(char *err, size_t errlen, const char *what, const char *msg)
{
    snprintf(err, errlen, "%s: %s", what, msg);
    return -1;
}

typedef struct {
    int w, h, has_alpha;
} dims;

/* Reads the PNG into two planes of 0/255: by alpha under mode, and by luminance. */
static int decode(ctx_t *c, sde_mask_mode mode, uint8_t **by_alpha, uint8_t **by_luma, int *alpha_used,
                  dims *out)
{
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        if (png) png_destroy_read_struct(&png, NULL, NULL);
        snprintf(c->msg, sizeof c->msg, "out of memory");
        return -1;
    }
    /* set inside the protected region and freed on the error path: volatile so longjmp keeps them */
    uint8_t *volatile rgba = NULL;
    uint8_t *volatile pa = NULL;
    uint8_t *volatile pl = NULL;
    png_bytep *volatile rows = NULL;
    volatile int rc = 0;
    if (setjmp(png_jmpbuf(png))) {
        rc = -1;
    } else {
        png_set_read_fn(png, c, on_read);
        png_set_user_limits(png, SDE_PNG_MAX_DIM, SDE_PNG_MAX_DIM);
        png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, 0);
        png_set_chunk_malloc_max(png, CHUNK_MAX);
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
        /* a fuzzer cannot forge CRCs: let it reach the pixel code (never in a real build) */
        png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
#endif
        png_read_info(png, info);
        png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
        if ((unsigned long long)w * h > SDE_PNG_MAX_PIXELS)
            png_error(png, "the image has more than 2^26 pixels");
        int ct = png_get_color_type(png, info);
        int trns = png_get_valid(png, info, PNG_INFO_tRNS) != 0;
        out->has_alpha = (ct & PNG_COLOR_MASK_ALPHA) || trns;
        /* A1111 looks at alpha only in PIL's mode "RGBA": an RGBA file, or RGB with tRNS */
        int a1_rgba = ct == PNG_COLOR_TYPE_RGB_ALPHA || (ct == PNG_COLOR_TYPE_RGB && trns);
        png_set_expand(png);
        png_set_strip_16(png);
        png_set_gray_to_rgb(png);
        if (!out->has_alpha) png_set_add_alpha(png, 0xff, PNG_FILLER_AFTER);
        int passes = png_set_interlace_handling(png);
        png_read_update_info(png, info);
        if (png_get_rowbytes(png, info) != (size_t)w * 4)
            png_error(png, "unexpected row size after expansion");
        size_t npx = (size_t)w * h;
        rgba = malloc(passes > 1 ? npx * 4 : (size_t)w * 4);
        pa = malloc(npx);
        pl = malloc(npx);
        if (!rgba || !pa || !pl) png_error(png, "out of memory");
        if (passes > 1) {
            /* interlaced: every pass adds to every row, so the whole image is needed */
            rows = malloc(h * sizeof(png_bytep));
            if (!rows) png_error(png, "out of memory");
            for (png_uint_32 y = 0; y < h; y++)
                rows[y] = rgba + (size_t)y * w * 4;
            png_read_image(png, rows);
        }
        int any_partial = 0;
        for (png_uint_32 y = 0; y < h; y++) {
            const uint8_t *row = rgba + (passes > 1 ? (size_t)y * w * 4 : 0);
            if (passes == 1) png_read_row(png, (png_bytep)row, NULL);
            for (png_uint_32 x = 0; x < w; x++) {
                const uint8_t *p = row + (size_t)x * 4;
                size_t i = (size_t)y * w + x;
                /* PIL's L = (299 R + 587 G + 114 B) / 1000; the engine repaints where L / 255 >= 0.5 */
                pl[i] = 299u * p[0] + 587u * p[1] + 114u * p[2] >= 127500u ? 255 : 0;
                pa[i] = mode == SDE_MASK_ALPHA0 ? (p[3] == 0 ? 255 : 0) : (p[3] > 128 ? 255 : 0);
                any_partial |= p[3] != 255;
            }
        }
        png_read_end(png, NULL); /* checks the rest through IEND, so a cut-off file is an error */
        *alpha_used = mode == SDE_MASK_ALPHA0  ? out->has_alpha
                      : mode == SDE_MASK_A1111 ? a1_rgba && any_partial
                                               : 0;
        out->w = (int)w;
        out->h = (int)h;
    }
    png_destroy_read_struct(&png, &info, NULL);
    free(rgba);
    free(rows);
    if (rc) {
        free(pa);
        free(pl);
        return -1;
    }
    *by_alpha = pa;
    *by_luma = pl;
    return 0;
}

int sde_mask_png_decode(const uint8_t *png, size_t len, sde_mask_mode mode, int invert, uint8_t **rgb, int *w,
                        int *h, size_t *n_repaint, int *has_alpha, char *err, size_t errlen)
{
    *rgb = NULL;
    *w = *h = *has_alpha = 0;
    *n_repaint = 0;
    if (!png || len < 8 || png_sig_cmp(png, 0, 8)) return fail(err, errlen, "not a PNG", "bad signature");
    ctx_t *c = calloc(1, sizeof *c); /* on the heap: libpng's callbacks change it across setjmp */
    if (!c) return fail(err, errlen, "mask", "out of memory");
    c->in = png;
    c->in_len = len;
    uint8_t *pa = NULL, *pl = NULL;
    int alpha_used = 0;
    dims d = {0};
    int rc = decode(c, mode, &pa, &pl, &alpha_used, &d);
    if (rc != 0) {
        fail(err, errlen, "not a readable PNG", c->msg);
        free(c);
        return -1;
    }
    free(c);
    uint8_t *plane = alpha_used ? pa : pl;
    size_t npx = (size_t)d.w * d.h;
    uint8_t *out = malloc(npx * 3);
    if (!out) {
        free(pa);
        free(pl);
        return fail(err, errlen, "mask", "out of memory");
    }
    for (size_t i = 0; i < npx; i++) {
        uint8_t v = invert ? (uint8_t)(255 - plane[i]) : plane[i];
        *n_repaint += v != 0;
        out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = v;
    }
    free(pa);
    free(pl);
    *rgb = out;
    *w = d.w;
    *h = d.h;
    *has_alpha = d.has_alpha;
    return 0;
}
