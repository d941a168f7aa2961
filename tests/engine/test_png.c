/* test_png.c: PNG encode/decode round trips, text chunks (tEXt for Latin-1, iTXt for the rest, zTXt and
 * trailing chunks from other writers), other colour types to RGB, and rejection of corrupt or truncated
 * input. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "png_io.h"
#include "png_text_reader.h"

static uint8_t *random_rgb(int w, int h, unsigned seed)
{
    uint8_t *p = malloc((size_t)w * h * 3);
    assert_non_null(p);
    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (uint8_t)(seed >> 16);
    }
    return p;
}

/* Finds chunk type+key in a PNG: returns the chunk's data and length (after the key's NUL), or NULL. */
static const uint8_t *find_chunk(const uint8_t *png, size_t len, const char *type, const char *key, size_t *n)
{
    size_t pos = 8;
    while (pos + 12 <= len) {
        uint32_t cl = (uint32_t)png[pos] << 24 | (uint32_t)png[pos + 1] << 16 | (uint32_t)png[pos + 2] << 8 |
                      png[pos + 3];
        const uint8_t *d = png + pos + 8;
        if (!memcmp(png + pos + 4, type, 4) &&
            (!key || (cl > strlen(key) && !strcmp((const char *)d, key)))) {
            size_t kl = key ? strlen(key) + 1 : 0;
            *n = cl - kl;
            return d + kl;
        }
        pos += 12 + cl;
    }
    return NULL;
}

static void test_roundtrip(void **state)
{
    (void)state;
    static const int sizes[][2] = {{1, 1}, {37, 23}, {64, 64}, {3, 200}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int w = sizes[s][0], h = sizes[s][1];
        uint8_t *rgb = random_rgb(w, h, (unsigned)s + 1), *png, *back;
        size_t len;
        char err[256] = "";
        assert_int_equal(sde_png_encode(rgb, w, h, NULL, &png, &len, err, sizeof err), 0);
        assert_non_null(png);
        assert_true(len > 8 && !memcmp(png, "\x89PNG\r\n\x1a\n", 8));
        int bw, bh;
        assert_int_equal(sde_png_decode(png, len, &back, &bw, &bh, err, sizeof err), 0);
        assert_int_equal(bw, w);
        assert_int_equal(bh, h);
        assert_memory_equal(back, rgb, (size_t)w * h * 3);
        free(back);
        free(png);
        free(rgb);
    }
}

static void test_text_chunks(void **state)
{
    (void)state;
    const char *params =
        "a photo of a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, "
        "Seed: 42, Size: 512x512, Model: randsd15";
    const char *latin = "caf\u00e9 na\u00efve \u00bd";
    const char *utf8 = "\u732b \U0001f431 \u03a9mega \u0416";
    const char *const text[] = {"parameters", params, "comment", latin, "prompt", utf8, "empty", "", NULL};
    uint8_t *rgb = random_rgb(8, 8, 9), *png;
    size_t len;
    char err[256];
    assert_int_equal(sde_png_encode(rgb, 8, 8, text, &png, &len, err, sizeof err), 0);

    /* Latin-1 values are tEXt with Latin-1 bytes; others iTXt with UTF-8 */
    size_t n;
    const uint8_t *d = find_chunk(png, len, "tEXt", "parameters", &n);
    assert_non_null(d);
    assert_int_equal(n, strlen(params));
    d = find_chunk(png, len, "tEXt", "comment", &n);
    assert_non_null(d);
    assert_int_equal(n, 12);
    assert_memory_equal(d, "caf\xe9 na\xefve \xbd", 12);
    assert_null(find_chunk(png, len, "tEXt", "prompt", &n));
    assert_non_null(find_chunk(png, len, "iTXt", "prompt", &n));
    /* text comes before the image data, as AUTOMATIC1111 (PIL) writes it */
    size_t idat_n;
    assert_true(find_chunk(png, len, "tEXt", "parameters", &n) < find_chunk(png, len, "IDAT", NULL, &idat_n));

    const char *const *kv = text;
    for (; *kv; kv += 2) {
        char *v = NULL;
        assert_int_equal(tpng_text_get(png, len, kv[0], &v), 0);
        assert_non_null(v);
        assert_string_equal(v, kv[1]);
        free(v);
    }
    char *v = (char *)&v;
    assert_int_equal(tpng_text_get(png, len, "Parameters", &v), 1); /* keys are case-sensitive */
    assert_null(v);
    assert_int_equal(tpng_text_get(png, len, "missing", &v), 1);
    assert_int_equal(tpng_text_get((const uint8_t *)"not a png at all", 16, "parameters", &v), -1);
    assert_null(v);
    /* the pixels are unaffected by the text */
    uint8_t *back;
    int w, h;
    assert_int_equal(sde_png_decode(png, len, &back, &w, &h, err, sizeof err), 0);
    assert_memory_equal(back, rgb, 8 * 8 * 3);
    free(back);
    free(png);
    free(rgb);
}

static void expect_encode_error(const char *const *text, int w, int h, const char *needle)
{
    uint8_t px[3 * 4 * 4] = {0};
    uint8_t *png = (uint8_t *)&png;
    size_t len = 99;
    char err[256] = "";
    assert_int_equal(sde_png_encode(px, w, h, text, &png, &len, err, sizeof err), -1);
    assert_null(png);
    assert_int_equal(len, 0);
    print_message("  -> %s\n", err);
    if (!strstr(err, needle)) fail_msg("error \"%s\" lacks \"%s\"", err, needle);
}

static void test_encode_errors(void **state)
{
    (void)state;
    const char *const k_empty[] = {"", "v", NULL};
    const char *const k_long[] = {
        "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", "v", NULL};
    const char *const k_space[] = {" lead", "v", NULL};
    const char *const k_double[] = {"a  b", "v", NULL};
    const char *const k_utf8[] = {"caf\u00e9", "v", NULL};
    const char *const v_bad[] = {"key", "bad \xff utf8", NULL};
    const char *const v_surrogate[] = {"key", "\xed\xa0\x80", NULL};
    const char *const v_null[] = {"key", NULL, NULL};
    expect_encode_error(k_empty, 4, 4, "key");
    expect_encode_error(k_long, 4, 4, "key");
    expect_encode_error(k_space, 4, 4, "key");
    expect_encode_error(k_double, 4, 4, "key");
    expect_encode_error(k_utf8, 4, 4, "key");
    expect_encode_error(v_bad, 4, 4, "not UTF-8");
    expect_encode_error(v_surrogate, 4, 4, "not UTF-8");
    expect_encode_error(v_null, 4, 4, "no value");
    expect_encode_error(NULL, 0, 4, "0x4");
    expect_encode_error(NULL, 4, -1, "4x-1");
    expect_encode_error(NULL, SDE_PNG_MAX_DIM + 1, 1, "size");
    uint8_t *png;
    size_t len;
    char err[256];
    assert_int_equal(sde_png_encode(NULL, 4, 4, NULL, &png, &len, err, sizeof err), -1);
    assert_null(png);
}

/* ---- PNGs written by libpng directly, in the forms other tools produce -------------------------------- */

typedef struct {
    uint8_t *buf;
    size_t len, cap;
} membuf;

static void mem_write(png_structp png, png_bytep d, size_t n)
{
    membuf *m = png_get_io_ptr(png);
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->buf = realloc(m->buf, m->cap);
    }
    memcpy(m->buf + m->len, d, n);
    m->len += n;
}

static void mem_flush(png_structp png)
{
    (void)png;
}

/* rows: packed samples as libpng expects for the colour type/bit depth (16-bit big-endian). */
static membuf write_png(int w, int h, int depth, int ctype, int interlace, uint8_t **rows,
                        const png_color *pal, int npal, const png_text *pre, int npre, const png_text *post,
                        int npost)
{
    membuf m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png), end = png_create_info_struct(png);
    assert_non_null(end);
    if (setjmp(png_jmpbuf(png))) fail_msg("libpng failed writing a test image");
    png_set_write_fn(png, &m, mem_write, mem_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, ctype, interlace,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(png, info, pal, npal);
    if (npre) png_set_text(png, info, pre, npre);
    png_write_info(png, info);
    png_write_image(png, rows);
    if (npost) png_set_text(png, end, post, npost);
    png_write_end(png, end);
    png_destroy_info_struct(png, &end);
    png_destroy_write_struct(&png, &info);
    return m;
}

static void decode_expect(const membuf *m, int w, int h, const uint8_t *want)
{
    uint8_t *rgb;
    int bw, bh;
    char err[256];
    if (sde_png_decode(m->buf, m->len, &rgb, &bw, &bh, err, sizeof err)) fail_msg("decode failed: %s", err);
    assert_int_equal(bw, w);
    assert_int_equal(bh, h);
    assert_memory_equal(rgb, want, (size_t)w * h * 3);
    free(rgb);
}

static void test_decode_other_formats(void **state)
{
    (void)state;
    enum { W = 5, H = 3 };
    uint8_t want[W * H * 3];
    uint8_t data[H][W * 8];
    uint8_t *rows[H] = {data[0], data[1], data[2]};
    membuf m;

    /* 8-bit grey */
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t g = (uint8_t)(y * 60 + x * 11);
            data[y][x] = g;
            memset(want + (y * W + x) * 3, g, 3);
        }
    m = write_png(W, H, 8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, rows, NULL, 0, NULL, 0, NULL, 0);
    decode_expect(&m, W, H, want);
    free(m.buf);

    /* 1-bit grey: 0 -> 0, 1 -> 255 */
    for (int y = 0; y < H; y++) {
        data[y][0] = 0;
        for (int x = 0; x < W; x++) {
            int bit = (x + y) & 1;
            data[y][0] |= (uint8_t)(bit << (7 - x));
            memset(want + (y * W + x) * 3, bit ? 255 : 0, 3);
        }
    }
    m = write_png(W, H, 1, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, rows, NULL, 0, NULL, 0, NULL, 0);
    decode_expect(&m, W, H, want);
    free(m.buf);

    /* palette */
    static const png_color pal[3] = {{255, 0, 0}, {0, 255, 0}, {10, 20, 30}};
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int i = (x + 2 * y) % 3;
            data[y][x] = (uint8_t)i;
            uint8_t *o = want + (y * W + x) * 3;
            o[0] = pal[i].red, o[1] = pal[i].green, o[2] = pal[i].blue;
        }
    m = write_png(W, H, 8, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE, rows, pal, 3, NULL, 0, NULL, 0);
    decode_expect(&m, W, H, want);
    free(m.buf);

    /* RGBA: alpha dropped, colour kept */
    uint8_t *rgb = random_rgb(W, H, 77);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            memcpy(&data[y][x * 4], rgb + (y * W + x) * 3, 3);
            data[y][x * 4 + 3] = (uint8_t)(x * 50);
        }
    m = write_png(W, H, 8, PNG_COLOR_TYPE_RGB_ALPHA, PNG_INTERLACE_NONE, rows, NULL, 0, NULL, 0, NULL, 0);
    decode_expect(&m, W, H, rgb);
    free(m.buf);

    /* grey + alpha */
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            data[y][x * 2] = (uint8_t)(x * 40 + y);
            data[y][x * 2 + 1] = 7;
            memset(want + (y * W + x) * 3, x * 40 + y, 3);
        }
    m = write_png(W, H, 8, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_INTERLACE_NONE, rows, NULL, 0, NULL, 0, NULL, 0);
    decode_expect(&m, W, H, want);
    free(m.buf);

    /* 16-bit RGB: v*257 scales back to exactly v */
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++) {
                uint8_t v = rgb[(y * W + x) * 3 + c];
                data[y][(x * 3 + c) * 2] = v; /* big-endian v*257 = bytes v, v */
                data[y][(x * 3 + c) * 2 + 1] = v;
            }
    m = write_png(W, H, 16, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, rows, NULL, 0, NULL, 0, NULL, 0);
    decode_expect(&m, W, H, rgb);
    free(m.buf);

    /* Adam7-interlaced RGB */
    for (int y = 0; y < H; y++)
        memcpy(data[y], rgb + y * W * 3, W * 3);
    m = write_png(W, H, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_ADAM7, rows, NULL, 0, NULL, 0, NULL, 0);
    decode_expect(&m, W, H, rgb);
    free(m.buf);
    free(rgb);
}

/* zTXt, compressed iTXt and text after the image data, as other writers produce them. */
static void test_text_from_other_writers(void **state)
{
    (void)state;
    uint8_t row[3] = {1, 2, 3}, *rows[1] = {row};
    png_text pre[2] = {0}, post[1] = {0};
    char long_text[3000];
    for (size_t i = 0; i < sizeof long_text - 1; i++)
        long_text[i] = (char)('a' + i % 26);
    long_text[sizeof long_text - 1] = '\0';
    pre[0].compression = PNG_TEXT_COMPRESSION_zTXt;
    pre[0].key = (png_charp) "ztext";
    pre[0].text = long_text;
    pre[0].text_length = strlen(long_text);
    pre[1].compression = PNG_ITXT_COMPRESSION_zTXt;
    pre[1].key = (png_charp) "itext";
    pre[1].text = (png_charp) "\u732b compressed \u03a9";
    pre[1].itxt_length = strlen(pre[1].text);
    pre[1].lang = (png_charp) "ja";
    pre[1].lang_key = (png_charp) "";
    post[0].compression = PNG_TEXT_COMPRESSION_NONE;
    post[0].key = (png_charp) "after";
    post[0].text = (png_charp) "written after IDAT";
    post[0].text_length = strlen(post[0].text);
    membuf m = write_png(1, 1, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, rows, NULL, 0, pre, 2, post, 1);
    size_t n;
    assert_non_null(find_chunk(m.buf, m.len, "zTXt", "ztext", &n));
    char *v;
    assert_int_equal(tpng_text_get(m.buf, m.len, "ztext", &v), 0);
    assert_string_equal(v, long_text);
    free(v);
    assert_int_equal(tpng_text_get(m.buf, m.len, "itext", &v), 0);
    assert_string_equal(v, pre[1].text);
    free(v);
    assert_int_equal(tpng_text_get(m.buf, m.len, "after", &v), 0);
    assert_string_equal(v, "written after IDAT");
    free(v);

    /* a text chunk with a bad CRC is ignored, the rest of the file still read */
    size_t at = (size_t)(find_chunk(m.buf, m.len, "tEXt", "after", &n) - m.buf);
    m.buf[at + 2] ^= 0x20;
    assert_int_equal(tpng_text_get(m.buf, m.len, "after", &v), 1);
    assert_null(v);
    free(m.buf);
}

static void test_corrupt_input(void **state)
{
    (void)state;
    uint8_t *rgb = random_rgb(16, 16, 5), *png, *out = (uint8_t *)&out;
    size_t len;
    char err[256];
    const char *const text[] = {"parameters", "steps 20", NULL};
    assert_int_equal(sde_png_encode(rgb, 16, 16, text, &png, &len, err, sizeof err), 0);
    int w = -5, h = -5;

    /* every truncation fails cleanly */
    for (size_t cut = 0; cut < len; cut++) {
        err[0] = '\0';
        out = (uint8_t *)&out;
        assert_int_equal(sde_png_decode(png, cut, &out, &w, &h, err, sizeof err), -1);
        assert_null(out);
        assert_true(err[0] != '\0');
        char *v = NULL;
        int r = tpng_text_get(png, cut, "parameters", &v);
        assert_true(r == -1 || r == 0 || r == 1);
        free(v);
    }
    assert_int_equal(sde_png_decode(png, len - 1, &out, &w, &h, err, sizeof err), -1);
    print_message("  cut by one byte -> %s\n", err);

    /* a flipped bit in the image data */
    uint8_t *bad = malloc(len);
    assert_non_null(bad);
    size_t n = 0;
    size_t idat = (size_t)(find_chunk(png, len, "IDAT", NULL, &n) - png);
    memcpy(bad, png, len);
    bad[idat + n / 2] ^= 0x10;
    assert_int_equal(sde_png_decode(bad, len, &out, &w, &h, err, sizeof err), -1);
    assert_null(out);
    print_message("  flipped IDAT bit -> %s\n", err);

    /* bad signature */
    memcpy(bad, png, len);
    bad[1] = 'X';
    assert_int_equal(sde_png_decode(bad, len, &out, &w, &h, err, sizeof err), -1);
    assert_non_null(strstr(err, "signature"));
    char *v = (char *)&v;
    assert_int_equal(tpng_text_get(bad, len, "parameters", &v), -1);
    assert_null(v);
    assert_int_equal(sde_png_decode(NULL, 0, &out, &w, &h, err, sizeof err), -1);

    /* a header claiming 20000 x 20000 pixels is refused before any allocation */
    memcpy(bad, png, len);
    const uint8_t dims[8] = {0, 0, 0x4e, 0x20, 0, 0, 0x4e, 0x20};
    memcpy(bad + 16, dims, 8);
    uLong crc = crc32(crc32(0L, Z_NULL, 0), bad + 12, 17);
    bad[29] = (uint8_t)(crc >> 24), bad[30] = (uint8_t)(crc >> 16), bad[31] = (uint8_t)(crc >> 8),
    bad[32] = (uint8_t)crc;
    assert_int_equal(sde_png_decode(bad, len, &out, &w, &h, err, sizeof err), -1);
    assert_null(out);
    print_message("  20000x20000 header -> %s\n", err);

    /* random garbage after a valid signature */
    srand(3);
    for (int iter = 0; iter < 300; iter++) {
        memcpy(bad, png, len);
        for (int k = 0; k < 4; k++)
            bad[8 + rand() % (int)(len - 8)] = (uint8_t)rand();
        out = NULL;
        if (sde_png_decode(bad, len, &out, &w, &h, err, sizeof err) == 0) {
            /* only possible when the damage hit something ancillary (e.g. the tEXt chunk) */
            assert_non_null(out);
            assert_int_equal(w, 16);
            free(out);
        } else {
            assert_null(out);
        }
        char *tv = NULL;
        if (tpng_text_get(bad, len, "parameters", &tv) == 0) free(tv);
    }
    free(bad);
    free(png);
    free(rgb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_text_chunks),
        cmocka_unit_test(test_encode_errors),
        cmocka_unit_test(test_decode_other_formats),
        cmocka_unit_test(test_text_from_other_writers),
        cmocka_unit_test(test_corrupt_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
