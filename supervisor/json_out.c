/* json_out.c: the JSON writer behind every response body and SSE payload (see json_out.h). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <h2o/string_.h>

#include "json_out.h"

void sdw_jw_init(sdw_jw *w)
{
    memset(w, 0, sizeof *w);
}

void sdw_jw_free(sdw_jw *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}

static int reserve(sdw_jw *w, size_t extra)
{
    if (w->oom)
        return -1;
    if (w->len + extra + 1 <= w->cap)
        return 0;
    size_t cap = w->cap ? w->cap : 256;
    while (cap < w->len + extra + 1) {
        if (cap > ((size_t)-1) / 2) {
            w->oom = 1;
            return -1;
        }
        cap *= 2;
    }
    char *b = realloc(w->buf, cap);
    if (!b) {
        w->oom = 1;
        return -1;
    }
    w->buf = b;
    w->cap = cap;
    return 0;
}

static void put(sdw_jw *w, const char *s, size_t n)
{
    if (reserve(w, n) != 0)
        return;
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

static void putc_(sdw_jw *w, char c)
{
    put(w, &c, 1);
}

/* Comma before a value in a container that already has one; none right after a key. */
static void before_value(sdw_jw *w)
{
    if (w->after_key) {
        w->after_key = 0;
        return;
    }
    if (w->depth > 0 && w->depth <= SDW_JW_MAX_DEPTH) {
        if (w->has_items[w->depth - 1])
            putc_(w, ',');
        w->has_items[w->depth - 1] = 1;
    }
}

static void open_(sdw_jw *w, char c)
{
    before_value(w);
    putc_(w, c);
    w->depth++;
    if (w->depth <= SDW_JW_MAX_DEPTH)
        w->has_items[w->depth - 1] = 0;
}

static void close_(sdw_jw *w, char c)
{
    if (w->depth > 0)
        w->depth--;
    putc_(w, c);
}

void sdw_jw_obj_open(sdw_jw *w) { open_(w, '{'); }
void sdw_jw_obj_close(sdw_jw *w) { close_(w, '}'); }
void sdw_jw_arr_open(sdw_jw *w) { open_(w, '['); }
void sdw_jw_arr_close(sdw_jw *w) { close_(w, ']'); }

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    unsigned cp = c & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

static void put_escaped(sdw_jw *w, const char *s, size_t n)
{
    putc_(w, '"');
    const unsigned char *p = (const unsigned char *)s;
    size_t run = 0; /* bytes copied verbatim in one go */
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t l = c >= 0x20 && c != '"' && c != '\\' ? utf8_len(p + i, n - i) : 0;
        if (l) {
            i += l;
            run += l;
            continue;
        }
        put(w, s + i - run, run);
        run = 0;
        char esc[8];
        switch (c) {
        case '"': put(w, "\\\"", 2); break;
        case '\\': put(w, "\\\\", 2); break;
        case '\n': put(w, "\\n", 2); break;
        case '\r': put(w, "\\r", 2); break;
        case '\t': put(w, "\\t", 2); break;
        default:
            if (c < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", c);
                put(w, esc, 6);
            } else {
                put(w, "\xEF\xBF\xBD", 3); /* U+FFFD for a byte that is not valid UTF-8 */
            }
        }
        i++;
    }
    put(w, s + n - run, run);
    putc_(w, '"');
}

void sdw_jw_key(sdw_jw *w, const char *k)
{
    before_value(w);
    put_escaped(w, k, strlen(k));
    putc_(w, ':');
    w->after_key = 1;
}

void sdw_jw_strn(sdw_jw *w, const char *s, size_t n)
{
    before_value(w);
    put_escaped(w, s, n);
}

void sdw_jw_str(sdw_jw *w, const char *s)
{
    if (!s) {
        sdw_jw_null(w);
        return;
    }
    sdw_jw_strn(w, s, strlen(s));
}

void sdw_jw_int(sdw_jw *w, long long v)
{
    char b[32];
    int n = snprintf(b, sizeof b, "%lld", v);
    before_value(w);
    put(w, b, (size_t)n);
}

void sdw_jw_u64(sdw_jw *w, uint64_t v)
{
    char b[32];
    int n = snprintf(b, sizeof b, "%" PRIu64, v);
    before_value(w);
    put(w, b, (size_t)n);
}

void sdw_jw_num(sdw_jw *w, double v)
{
    if (!isfinite(v)) {
        sdw_jw_null(w);
        return;
    }
    char b[40];
    /* %.6f keeps timings readable; strip trailing zeros but keep one digit after the point */
    int n = snprintf(b, sizeof b, fabs(v) < 1e15 ? "%.6f" : "%.17g", v);
    if (memchr(b, '.', (size_t)n) && !memchr(b, 'e', (size_t)n)) {
        while (n > 1 && b[n - 1] == '0' && b[n - 2] != '.')
            n--;
    }
    before_value(w);
    put(w, b, (size_t)n);
}

void sdw_jw_bool(sdw_jw *w, int v)
{
    before_value(w);
    put(w, v ? "true" : "false", v ? 4 : 5);
}

void sdw_jw_null(sdw_jw *w)
{
    before_value(w);
    put(w, "null", 4);
}

void sdw_jw_base64(sdw_jw *w, const void *data, size_t len)
{
    before_value(w);
    /* h2o_base64_encode_capacity counts the NUL it writes; the closing quote then lands on it */
    if (reserve(w, h2o_base64_encode_capacity(len) + 1) != 0) return;
    w->buf[w->len++] = '"';
    w->len += h2o_base64_encode(w->buf + w->len, data, len, 0);
    w->buf[w->len++] = '"';
    w->buf[w->len] = '\0';
}

void sdw_jw_raw(sdw_jw *w, const char *s, size_t n)
{
    put(w, s, n);
}

sdw_rcbuf *sdw_jw_to_rcbuf(const sdw_jw *w)
{
    if (w->oom)
        return NULL;
    return sdw_rcbuf_from(w->buf ? w->buf : "", w->len);
}
