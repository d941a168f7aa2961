/* png_text_reader.h: reads a text chunk back out of a PNG in memory through libpng's png_get_text, for the
 * tests that check what sde_png_encode wrote; the service itself never reads PNG metadata. */
#ifndef SDW_TEST_PNG_TEXT_READER_H
#define SDW_TEST_PNG_TEXT_READER_H

#include <png.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
} tpng_src;

static void tpng_on_read(png_structp png, png_bytep data, size_t n)
{
    tpng_src *s = png_get_io_ptr(png);
    if (n > s->len - s->pos) png_error(png, "truncated PNG data");
    memcpy(data, s->buf + s->pos, n);
    s->pos += n;
}

/* Silent: corrupt input is expected in these tests and reported through the return value. */
static void tpng_on_error(png_structp png, png_const_charp msg)
{
    (void)msg;
    png_longjmp(png, 1);
}

static void tpng_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* tEXt and zTXt hold Latin-1, iTXt UTF-8; callers compare against UTF-8. */
static char *tpng_latin1_to_utf8(const char *s, size_t n)
{
    char *o = malloc(2 * n + 1), *q = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        if (c < 0x80) {
            *q++ = (char)c;
        } else {
            *q++ = (char)(0xC0 | (c >> 6));
            *q++ = (char)(0x80 | (c & 0x3F));
        }
    }
    *q = '\0';
    return o;
}

/** Finds the first tEXt, zTXt or iTXt chunk named key (before or after the image data) and returns its text
 * as a malloc'd UTF-8 string in *value. libpng drops text chunks with a bad CRC. Returns 0 when found, 1 when
 * there is no such chunk, -1 when buf is not a readable PNG or memory ran out; *value is NULL unless 0. */
static int tpng_text_get(const uint8_t *buf, size_t len, const char *key, char **value)
{
    *value = NULL;
    if (!buf || !key || len < 8 || png_sig_cmp(buf, 0, 8)) return -1;
    tpng_src src = {buf, len, 0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, tpng_on_error, tpng_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_infop end = info ? png_create_info_struct(png) : NULL;
    if (!end) {
        png_destroy_read_struct(png ? &png : NULL, info ? &info : NULL, NULL);
        return -1;
    }
    /* changed between setjmp and a possible longjmp */
    png_bytep volatile row = NULL;
    volatile int rc = 1;
    if (setjmp(png_jmpbuf(png))) {
        rc = -1;
    } else {
        png_set_read_fn(png, &src, tpng_on_read);
        png_read_info(png, info);
        /* text after the image data only arrives once the rows are read, one reused row buffer at a time */
        int passes = png_set_interlace_handling(png);
        png_read_update_info(png, info);
        row = malloc(png_get_rowbytes(png, info));
        if (!row) png_error(png, "out of memory");
        png_uint_32 h = png_get_image_height(png, info);
        for (int p = 0; p < passes; p++)
            for (png_uint_32 y = 0; y < h; y++)
                png_read_row(png, row, NULL);
        png_read_end(png, end);
        png_infop where[2] = {info, end};
        for (int i = 0; i < 2 && rc == 1; i++) {
            png_textp t;
            int n = png_get_text(png, where[i], &t, NULL);
            for (int k = 0; k < n; k++) {
                if (strcmp(t[k].key, key)) continue;
                if (t[k].compression >= PNG_ITXT_COMPRESSION_NONE)
                    *value = strdup(t[k].text);
                else
                    *value = tpng_latin1_to_utf8(t[k].text, t[k].text_length);
                rc = *value ? 0 : -1;
                break;
            }
        }
    }
    free(row);
    png_destroy_read_struct(&png, &info, &end);
    return rc;
}

#endif
