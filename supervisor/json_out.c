/* json_out.c: jansson values for answers and SSE payloads, and their dumping into rcbufs (see json_out.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <h2o/string_.h>

#include "json_out.h"

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4, min = 0x10000;
    else
        return 0;
    if (n < len) return 0;
    unsigned cp = c & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

json_t *sdw_json_str(const char *s)
{
    if (!s) return json_null();
    json_t *v = json_string(s);
    if (v) return v;
    /* rare: jansson refused the bytes (or memory ran out); rebuild with U+FFFD for each bad byte */
    size_t n = strlen(s);
    if (n > ((size_t)-1 - 1) / 3) return NULL;
    char *o = malloc(3 * n + 1);
    if (!o) return NULL;
    const unsigned char *p = (const unsigned char *)s;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_len(p + i, n - i);
        if (l) {
            memcpy(o + k, p + i, l);
            k += l, i += l;
        } else {
            memcpy(o + k, "\xEF\xBF\xBD", 3);
            k += 3, i++;
        }
    }
    v = json_stringn_nocheck(o, k);
    free(o);
    return v;
}

json_t *sdw_json_num(double v)
{
    if (!isfinite(v)) return json_null();
    /* timings are wanted to the microsecond; beyond 2^53 / 1e6 rounding would only lose precision */
    if (fabs(v) < 9e9) v = round(v * 1e6) / 1e6;
    return json_real(v);
}

json_t *sdw_json_base64(const void *data, size_t len)
{
    if (len > ((size_t)-1 - 4) / 4 * 3) return NULL;
    char *b = malloc(h2o_base64_encode_capacity(len));
    if (!b) return NULL;
    size_t n = h2o_base64_encode(b, data, len, 0);
    json_t *v = json_stringn_nocheck(b, n); /* base64 is ASCII */
    free(b);
    return v;
}

sdw_rcbuf *sdw_json_to_rcbuf(json_t *v, const char *prefix, const char *suffix)
{
    if (!v) return NULL;
    size_t pl = prefix ? strlen(prefix) : 0, sl = suffix ? strlen(suffix) : 0;
    /* measured first and dumped straight into the buffer: a complete event holds a whole PNG */
    size_t n = json_dumpb(v, NULL, 0, SDW_JSON_DUMP_FLAGS);
    sdw_rcbuf *b = n ? sdw_rcbuf_new(pl + n + sl) : NULL;
    if (b) {
        if (pl) memcpy(b->data, prefix, pl);
        if (json_dumpb(v, b->data + pl, n, SDW_JSON_DUMP_FLAGS) != n) {
            sdw_rcbuf_release(b);
            b = NULL;
        } else if (sl) {
            memcpy(b->data + pl + n, suffix, sl);
        }
    }
    json_decref(v);
    return b;
}
