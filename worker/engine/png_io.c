/* png_io.c: PNG encode/decode in memory through libpng, whose errors longjmp back here and become -1 with a
 * message. Text chunks are written, never read back: the service has no use for them (tests read them). */
#include "png_io.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Largest ancillary chunk (e.g. an ICC profile) sde_png_decode lets libpng allocate. */
#define PNG_CHUNK_MAX (16u << 20)

/* State shared with the libpng callbacks. */
typedef struct {
    char msg[200];     /* libpng's error message, for err */
    char warn[120];    /* its latest warning */
    const uint8_t *in; /* decode: the input and how much has been consumed */
    size_t in_len, in_pos;
    uint8_t *out; /* encode: the growing output */
    size_t out_len, out_cap;
} png_ctx;

static void png_err(char *err, size_t errlen, const char *fmt, const char *detail)
{
    if (err && errlen) snprintf(err, errlen, fmt, detail);
}

static void on_error(png_structp png, png_const_charp msg)
{
    png_ctx *c = png_get_error_ptr(png);
    /* libpng often explains an error in the warning just before it ("Image width exceeds user limit") */
    if (c->warn[0])
        snprintf(c->msg, sizeof c->msg, "%s (%s)", msg ? msg : "libpng error", c->warn);
    else
        snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "libpng error");
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg)
{
    /* not printed: a bad ancillary chunk is skipped and is not the caller's business; kept for on_error */
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->warn, sizeof c->warn, "%s", msg ? msg : "");
}

static void on_write(png_structp png, png_bytep data, size_t n)
{
    png_ctx *c = png_get_io_ptr(png);
    if (n > c->out_cap - c->out_len) {
        size_t cap = c->out_cap ? c->out_cap : 65536;
        while (cap - c->out_len < n) {
            if (cap > SIZE_MAX / 2) png_error(png, "PNG output too large");
            cap *= 2;
        }
        uint8_t *nb = realloc(c->out, cap);
        if (!nb) png_error(png, "out of memory");
        c->out = nb;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, n);
    c->out_len += n;
}

static void on_flush(png_structp png)
{
    (void)png;
}

static void on_read(png_structp png, png_bytep data, size_t n)
{
    png_ctx *c = png_get_io_ptr(png);
    if (n > c->in_len - c->in_pos) png_error(png, "truncated PNG data");
    memcpy(data, c->in + c->in_pos, n);
    c->in_pos += n;
}

/* ---- text -----------------------------------------------------------------------------------------------
 */

/* Checks PNG keyword rules (1-79 printable characters, no leading, trailing or double spaces); ASCII only,
 * so the keyword reads the same in Latin-1 and UTF-8. */
static int key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n < 1 || n > 79 || k[0] == ' ' || k[n - 1] == ' ') return 0;
    for (size_t i = 0; i < n; i++) {
        if (k[i] < 0x20 || k[i] > 0x7e || (k[i] == ' ' && k[i + 1] == ' ')) return 0;
    }
    return 1;
}

/* Strict UTF-8 check; *latin1 is set when every code point is below U+0100. */
static int utf8_ok(const char *s, int *latin1)
{
    const uint8_t *p = (const uint8_t *)s;
    *latin1 = 1;
    while (*p) {
        uint32_t cp;
        int n;
        if (p[0] < 0x80) {
            p++;
            continue;
        } else if (p[0] >= 0xC2 && p[0] <= 0xDF) {
            n = 1, cp = p[0] & 0x1Fu;
        } else if (p[0] >= 0xE0 && p[0] <= 0xEF) {
            n = 2, cp = p[0] & 0x0Fu;
        } else if (p[0] >= 0xF0 && p[0] <= 0xF4) {
            n = 3, cp = p[0] & 0x07u;
        } else {
            return 0;
        }
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[i] & 0x3Fu);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        if (cp > 0xFF) *latin1 = 0;
        p += n + 1;
    }
    return 1;
}

/* UTF-8 with only code points below U+0100 to Latin-1, in place-sized output (never longer). */
static void utf8_to_latin1(const char *s, char *out)
{
    const uint8_t *p = (const uint8_t *)s;
    while (*p) {
        if (*p < 0x80) {
            *out++ = (char)*p++;
        } else {
            *out++ = (char)(((p[0] & 0x03u) << 6) | (p[1] & 0x3Fu));
            p += 2;
        }
    }
    *out = '\0';
}

/* ---- encode ---------------------------------------------------------------------------------------------
 */

int sde_png_encode(const uint8_t *rgb, int w, int h, const char *const *text, uint8_t **out, size_t *len,
                   char *err, size_t errlen)
{
    *out = NULL;
    *len = 0;
    if (!rgb || w < 1 || h < 1 || w > SDE_PNG_MAX_DIM || h > SDE_PNG_MAX_DIM) {
        char d[64];
        snprintf(d, sizeof d, "%dx%d", w, h);
        png_err(err, errlen, rgb ? "png encode: bad image size %s" : "png encode: no pixels (%s)", d);
        return -1;
    }
    /* Everything that needs freeing is allocated before setjmp, so the error path sees stable pointers. */
    size_t ntext = 0;
    while (text && text[2 * ntext]) {
        if (!text[2 * ntext + 1]) { /* a NULL value would also end the list: refuse rather than guess */
            png_err(err, errlen, "png encode: text key \"%.100s\" has no value", text[2 * ntext]);
            return -1;
        }
        ntext++;
    }
    png_text *chunks = calloc(ntext ? ntext : 1, sizeof *chunks);
    char **latin = calloc(ntext ? ntext : 1, sizeof *latin);
    png_bytep *rows = malloc((size_t)h * sizeof *rows);
    /* on the heap: libpng's callbacks change it between setjmp and a possible longjmp */
    png_ctx *ctx = calloc(1, sizeof *ctx);
    int rc = (chunks && latin && rows && ctx) ? 0 : -1;
    if (rc) png_err(err, errlen, "png encode: %s", "out of memory");
    for (size_t i = 0; i < ntext && !rc; i++) {
        const char *k = text[2 * i], *v = text[2 * i + 1];
        int is_latin1;
        if (!key_ok(k)) {
            png_err(err, errlen, "png encode: text key \"%.100s\" is not 1-79 printable ASCII characters", k);
            rc = -1;
        } else if (!utf8_ok(v, &is_latin1)) {
            png_err(err, errlen, "png encode: text value for \"%s\" is not UTF-8", k);
            rc = -1;
        } else if (is_latin1) {
            if (!(latin[i] = malloc(strlen(v) + 1))) {
                png_err(err, errlen, "png encode: %s", "out of memory");
                rc = -1;
                break;
            }
            utf8_to_latin1(v, latin[i]);
            chunks[i].compression = PNG_TEXT_COMPRESSION_NONE;
            chunks[i].key = (png_charp)k;
            chunks[i].text = latin[i];
            chunks[i].text_length = strlen(latin[i]);
        } else {
            chunks[i].compression = PNG_ITXT_COMPRESSION_NONE;
            chunks[i].key = (png_charp)k;
            chunks[i].text = (png_charp)v;
            chunks[i].itxt_length = strlen(v);
            chunks[i].lang = (png_charp) "";
            chunks[i].lang_key = (png_charp) "";
        }
    }
    png_structp png = NULL;
    png_infop info = NULL;
    if (!rc) {
        png = png_create_write_struct(PNG_LIBPNG_VER_STRING, ctx, on_error, on_warning);
        info = png ? png_create_info_struct(png) : NULL;
        if (!info) {
            png_err(err, errlen, "png encode: %s", "out of memory");
            rc = -1;
        }
    }
    if (!rc) {
        if (setjmp(png_jmpbuf(png))) {
            png_err(err, errlen, "png encode: %s", ctx->msg);
            rc = -1;
        } else {
            for (int y = 0; y < h; y++)
                rows[y] = (png_bytep)(rgb + (size_t)y * (size_t)w * 3);
            png_set_write_fn(png, ctx, on_write, on_flush);
            png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                         PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
            if (ntext) png_set_text(png, info, chunks, (int)ntext);
            png_write_info(png, info);
            png_write_image(png, rows);
            png_write_end(png, NULL);
        }
    }
    if (png) png_destroy_write_struct(&png, info ? &info : NULL);
    for (size_t i = 0; latin && i < ntext; i++)
        free(latin[i]);
    free(latin);
    free(chunks);
    free(rows);
    if (rc || !ctx) {
        if (ctx) free(ctx->out);
        free(ctx);
        return -1;
    }
    *out = ctx->out;
    *len = ctx->out_len;
    free(ctx);
    return 0;
}

/* ---- decode ---------------------------------------------------------------------------------------------
 */

int sde_png_decode(const uint8_t *buf, size_t len, uint8_t **rgb, int *w, int *h, char *err, size_t errlen)
{
    *rgb = NULL;
    *w = *h = 0;
    if (!buf || len < 8 || png_sig_cmp(buf, 0, 8)) {
        png_err(err, errlen, "png decode: %s", "not a PNG (bad signature)");
        return -1;
    }
    /* on the heap: libpng's callbacks change it between setjmp and a possible longjmp */
    png_ctx *ctx = calloc(1, sizeof *ctx);
    png_structp png = ctx ? png_create_read_struct(PNG_LIBPNG_VER_STRING, ctx, on_error, on_warning) : NULL;
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        if (png) png_destroy_read_struct(&png, NULL, NULL);
        free(ctx);
        png_err(err, errlen, "png decode: %s", "out of memory");
        return -1;
    }
    ctx->in = buf;
    ctx->in_len = len;
    /* Set inside the protected region and freed on the error path: volatile so longjmp keeps their values. */
    uint8_t *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    int rc = 0;
    png_uint_32 pw = 0, ph = 0;
    if (setjmp(png_jmpbuf(png))) {
        png_err(err, errlen, "png decode: %s", ctx->msg);
        rc = -1;
    } else {
        png_set_read_fn(png, ctx, on_read);
        png_set_user_limits(png, SDE_PNG_MAX_DIM, SDE_PNG_MAX_DIM);
        /* Only pixels are wanted here: skip text and unknown chunks unread, and cap what any other chunk may
         * allocate, so a tiny file claiming a huge chunk costs nothing. */
        static const png_byte text_chunks[] = {'t', 'E',  'X', 't', '\0', 'z', 'T', 'X',
                                               't', '\0', 'i', 'T', 'X',  't', '\0'};
        png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, 0);
        png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, text_chunks, 3);
        png_set_chunk_malloc_max(png, PNG_CHUNK_MAX);
        png_read_info(png, info);
        pw = png_get_image_width(png, info);
        ph = png_get_image_height(png, info);
        if ((uint64_t)pw * ph > SDE_PNG_MAX_PIXELS) png_error(png, "image has more than 2^26 pixels");
        png_set_expand(png); /* palette -> RGB, grey < 8 bits -> 8, tRNS -> alpha */
#ifdef PNG_READ_SCALE_16_TO_8_SUPPORTED
        png_set_scale_16(png);
#else
        png_set_strip_16(png);
#endif
        png_set_gray_to_rgb(png);
        png_set_strip_alpha(png);
        png_set_interlace_handling(png);
        png_read_update_info(png, info);
        if (png_get_rowbytes(png, info) != (size_t)pw * 3)
            png_error(png, "unexpected row size after conversion to RGB");
        pixels = malloc((size_t)pw * ph * 3);
        rows = malloc((size_t)ph * sizeof(png_bytep));
        if (!pixels || !rows) png_error(png, "out of memory");
        for (png_uint_32 y = 0; y < ph; y++)
            rows[y] = pixels + (size_t)y * pw * 3;
        png_read_image(png, rows);
        png_read_end(png, NULL); /* checks the rest through IEND, so a cut-off file is an error */
    }
    png_destroy_read_struct(&png, &info, NULL);
    free(ctx);
    free(rows);
    if (rc) {
        free(pixels);
        return -1;
    }
    *rgb = pixels;
    *w = (int)pw;
    *h = (int)ph;
    return 0;
}
