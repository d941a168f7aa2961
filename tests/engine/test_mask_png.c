/* test_mask_png.c: inpainting masks in the HTTP surfaces' conventions (worker/engine/mask_png.c): OpenAI's
 * alpha 0 = edit, A1111's RGBA alpha and inversion, luminance otherwise, every PNG kind, bad input refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <png.h>

#include "mask_png.h"

typedef struct {
    uint8_t *buf;
    size_t len, cap;
} membuf;

static void mem_write(png_structp png, png_bytep d, png_size_t n)
{
    membuf *m = png_get_io_ptr(png);
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->buf = realloc(m->buf, m->cap);
        assert_non_null(m->buf);
    }
    memcpy(m->buf + m->len, d, n);
    m->len += n;
}

static void mem_flush(png_structp png)
{
    (void)png;
}

/* A PNG of w x h from pixel data already in the file's layout (channels, depth); palette and trns optional.
 */
static membuf make_png(int w, int h, int ct, int depth, int interlace, const uint8_t *data,
                       const png_color *pal, int npal, const uint8_t *trns, int ntrns)
{
    membuf m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    assert_non_null(info);
    if (setjmp(png_jmpbuf(png))) fail_msg("libpng failed writing the test input");
    png_set_write_fn(png, &m, mem_write, mem_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, ct,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(png, info, pal, npal);
    if (trns) png_set_tRNS(png, info, trns, ntrns, NULL);
    png_write_info(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    png_bytep *rows = malloc((size_t)h * sizeof *rows);
    for (int y = 0; y < h; y++)
        rows[y] = (png_bytep)(data + (size_t)y * rowbytes);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    return m;
}

/* What sde_mask_png_decode made, one value a pixel (checking R = G = B). */
typedef struct {
    uint8_t *v;
    int width, height, has_alpha;
    size_t n_repaint;
} mask_out;

static void convert_ok(const membuf *in, sde_mask_mode mode, int invert, mask_out *out)
{
    char err[200] = "";
    uint8_t *rgb;
    if (sde_mask_png_decode(in->buf, in->len, mode, invert, &rgb, &out->width, &out->height, &out->n_repaint,
                            &out->has_alpha, err, sizeof err) != 0)
        fail_msg("convert: %s", err);
    size_t n = (size_t)out->width * out->height;
    out->v = malloc(n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(rgb[3 * i], rgb[3 * i + 1]);
        assert_int_equal(rgb[3 * i], rgb[3 * i + 2]);
        assert_true(rgb[3 * i] == 0 || rgb[3 * i] == 255);
        out->v[i] = rgb[3 * i];
    }
    free(rgb);
}

static void test_openai_alpha(void **state)
{
    (void)state;
    /* 4 x 1 RGBA: alpha 0 (edit), 1, 254, 255; the colour does not count where there is alpha */
    const uint8_t px[] = {255, 255, 255, 0, 0, 0, 0, 1, 255, 255, 255, 254, 0, 0, 0, 255};
    membuf in = make_png(4, 1, PNG_COLOR_TYPE_RGB_ALPHA, 8, 0, px, NULL, 0, NULL, 0);
    mask_out m;
    convert_ok(&in, SDE_MASK_ALPHA0, 0, &m);
    assert_int_equal(m.width, 4);
    assert_int_equal(m.height, 1);
    assert_true(m.has_alpha);
    assert_int_equal(m.n_repaint, 1);
    uint8_t *g = m.v;
    assert_memory_equal(g, ((uint8_t[]){255, 0, 0, 0}), 4);
    free(g);
    free(in.buf);
}

static void test_luminance_without_alpha(void **state)
{
    (void)state;
    /* PIL's L rounds at 127.5: grey 127 keeps, 128 repaints; pure green (L 149.7) repaints, red (76) not */
    const uint8_t px[] = {127, 127, 127, 128, 128, 128, 0, 255, 0, 255, 0, 0, 255, 255, 255};
    membuf in = make_png(5, 1, PNG_COLOR_TYPE_RGB, 8, 0, px, NULL, 0, NULL, 0);
    for (int mode = 0; mode < 2; mode++) {
        mask_out m;
        convert_ok(&in, (sde_mask_mode)(mode + 1), 0, &m);
        assert_false(m.has_alpha);
        uint8_t *g = m.v;
        assert_memory_equal(g, ((uint8_t[]){0, 255, 255, 0, 255}), 5);
        free(g);
    }
    free(in.buf);
}

static void test_palette_trns_and_grey_alpha(void **state)
{
    (void)state;
    /* palette index 1 is transparent through tRNS: OpenAI edits there */
    const png_color pal[2] = {{10, 10, 10}, {10, 10, 10}};
    const uint8_t trns[2] = {255, 0};
    const uint8_t idx[] = {0, 1, 1, 0};
    membuf in = make_png(2, 2, PNG_COLOR_TYPE_PALETTE, 8, 0, idx, pal, 2, trns, 2);
    mask_out m;
    convert_ok(&in, SDE_MASK_ALPHA0, 0, &m);
    assert_true(m.has_alpha);
    uint8_t *g = m.v;
    assert_memory_equal(g, ((uint8_t[]){0, 255, 255, 0}), 4);
    free(g);
    free(in.buf);
    /* grey + alpha: PIL's "LA", which A1111 reads by luminance, OpenAI by alpha */
    const uint8_t la[] = {255, 255, 0, 0};
    in = make_png(2, 1, PNG_COLOR_TYPE_GRAY_ALPHA, 8, 0, la, NULL, 0, NULL, 0);
    convert_ok(&in, SDE_MASK_A1111, 0, &m);
    g = m.v;
    assert_memory_equal(g, ((uint8_t[]){255, 0}), 2);
    free(g);
    convert_ok(&in, SDE_MASK_ALPHA0, 0, &m);
    g = m.v;
    assert_memory_equal(g, ((uint8_t[]){0, 255}), 2);
    free(g);
    free(in.buf);
}

static void test_a1111_rgba_and_invert(void **state)
{
    (void)state;
    /* RGBA with alpha not all 255: alpha > 128 repaints, whatever the colour */
    const uint8_t px[] = {0, 0, 0, 129, 255, 255, 255, 128, 0, 0, 0, 255};
    membuf in = make_png(3, 1, PNG_COLOR_TYPE_RGB_ALPHA, 8, 0, px, NULL, 0, NULL, 0);
    mask_out m;
    convert_ok(&in, SDE_MASK_A1111, 0, &m);
    uint8_t *g = m.v;
    assert_memory_equal(g, ((uint8_t[]){255, 0, 255}), 3);
    free(g);
    convert_ok(&in, SDE_MASK_A1111, 1, &m);
    assert_int_equal(m.n_repaint, 1);
    g = m.v;
    assert_memory_equal(g, ((uint8_t[]){0, 255, 0}), 3);
    free(g);
    free(in.buf);
    /* RGBA all opaque: luminance, as PIL's convert("L") */
    const uint8_t op[] = {0, 0, 0, 255, 255, 255, 255, 255};
    in = make_png(2, 1, PNG_COLOR_TYPE_RGB_ALPHA, 8, 0, op, NULL, 0, NULL, 0);
    convert_ok(&in, SDE_MASK_A1111, 0, &m);
    g = m.v;
    assert_memory_equal(g, ((uint8_t[]){0, 255}), 2);
    free(g);
    free(in.buf);
}

static void test_interlaced_16bit(void **state)
{
    (void)state;
    /* 16-bit RGBA, Adam7: the same result as the plain file */
    enum { W = 13, H = 11 };
    uint8_t *p16 = calloc(W * H, 8), *p8 = calloc(W * H, 4);
    for (int i = 0; i < W * H; i++) {
        uint8_t a = (i * 7) % 3 ? 0xff : 0;
        for (int c = 0; c < 3; c++)
            p16[i * 8 + c * 2] = p8[i * 4 + c] = (uint8_t)(i * 5 + c);
        p16[i * 8 + 6] = p16[i * 8 + 7] = p8[i * 4 + 3] = a;
    }
    membuf a = make_png(W, H, PNG_COLOR_TYPE_RGB_ALPHA, 16, 1, p16, NULL, 0, NULL, 0);
    membuf b = make_png(W, H, PNG_COLOR_TYPE_RGB_ALPHA, 8, 0, p8, NULL, 0, NULL, 0);
    mask_out ma, mb;
    convert_ok(&a, SDE_MASK_ALPHA0, 0, &ma);
    convert_ok(&b, SDE_MASK_ALPHA0, 0, &mb);
    assert_true(ma.n_repaint > 0);
    assert_int_equal(ma.n_repaint, mb.n_repaint);
    uint8_t *ga = ma.v, *gb = mb.v;
    assert_memory_equal(ga, gb, W * H);
    for (int i = 0; i < W * H; i++)
        assert_int_equal(ga[i], p8[i * 4 + 3] ? 0 : 255);
    free(ga);
    free(gb);
    free(a.buf);
    free(b.buf);
    free(p16);
    free(p8);
}

/* PNG's chunk CRC (ISO 3309), to forge a header */
static uint32_t crc32_png(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xffffffffu;
}

static void expect_fail(const uint8_t *buf, size_t len, const char *what)
{
    uint8_t *rgb = (uint8_t *)"x";
    int w, h, a;
    size_t n;
    char err[200] = "";
    assert_int_equal(sde_mask_png_decode(buf, len, SDE_MASK_ALPHA0, 0, &rgb, &w, &h, &n, &a, err, sizeof err),
                     -1);
    assert_null(rgb);
    if (!strstr(err, what)) fail_msg("error '%s' lacks '%s'", err, what);
}

static void test_refuses_bad_input(void **state)
{
    (void)state;
    expect_fail((const uint8_t *)"GIF89a....", 10, "not a PNG");
    expect_fail(NULL, 0, "not a PNG");
    const uint8_t px[64 * 3] = {0};
    membuf in = make_png(8, 8, PNG_COLOR_TYPE_RGB, 8, 0, px, NULL, 0, NULL, 0);
    for (size_t cut = 8; cut < in.len; cut += 7)
        expect_fail(in.buf, cut, "not a readable PNG");
    in.buf[in.len - 20] ^= 0x55; /* a changed byte in IDAT: its CRC no longer matches */
    expect_fail(in.buf, in.len, "not a readable PNG");
    free(in.buf);
    /* a header claiming 16384 x 16384, over SDE_PNG_MAX_PIXELS (the IDAT is never read) */
    uint8_t *big = calloc(5000, 1);
    membuf b = make_png(5000, 1, PNG_COLOR_TYPE_GRAY, 1, 0, big, NULL, 0, NULL, 0);
    b.buf[16] = 0, b.buf[17] = 0, b.buf[18] = 0x40, b.buf[19] = 0; /* width 16384 */
    b.buf[20] = 0, b.buf[21] = 0, b.buf[22] = 0x40, b.buf[23] = 0; /* height 16384 */
    uint32_t crc = crc32_png(b.buf + 12, 17);
    b.buf[29] = (uint8_t)(crc >> 24), b.buf[30] = (uint8_t)(crc >> 16), b.buf[31] = (uint8_t)(crc >> 8),
    b.buf[32] = (uint8_t)crc;
    expect_fail(b.buf, b.len, "2^26");
    free(b.buf);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openai_alpha),
        cmocka_unit_test(test_luminance_without_alpha),
        cmocka_unit_test(test_palette_trns_and_grey_alpha),
        cmocka_unit_test(test_a1111_rgba_and_invert),
        cmocka_unit_test(test_interlaced_16bit),
        cmocka_unit_test(test_refuses_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
