/* multipart.c: multipart/form-data parsing (see multipart.h). Bounded by the body it is given: it never
 * reads past len, allocates nothing, and refuses rather than guesses on anything malformed. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "multipart.h"

#define HEADER_LINE_MAX 1024
#define HEADERS_MAX 16

static int fail(char *err, size_t errlen, const char *msg)
{
    snprintf(err, errlen, "%s", msg);
    return -1;
}

static int bchar_ok(unsigned char c)
{
    /* RFC 2046 bcharsnospace plus space */
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("'()+_,-./:=? ", c)); /* strchr finds the terminator for c == 0 */
}

int sdw_multipart_boundary(const char *ct, size_t len, char *out, char *err, size_t errlen)
{
    static const char type[] = "multipart/form-data";
    if (!ct || len < sizeof type - 1 || strncasecmp(ct, type, sizeof type - 1) ||
        (len > sizeof type - 1 && !strchr("; \t", ct[sizeof type - 1])))
        return fail(err, errlen, "Content-Type must be multipart/form-data");
    size_t i = sizeof type - 1;
    while (i < len) {
        while (i < len && (ct[i] == ';' || ct[i] == ' ' || ct[i] == '\t'))
            i++;
        size_t k = i;
        while (i < len && ct[i] != '=' && ct[i] != ';')
            i++;
        size_t klen = i - k;
        if (i >= len || ct[i] != '=') {
            if (klen == 0) break;
            continue;
        }
        i++;
        const char *v = ct + i;
        size_t vlen;
        if (i < len && ct[i] == '"') {
            v++;
            i++;
            size_t s = i;
            while (i < len && ct[i] != '"')
                i++;
            if (i >= len) return fail(err, errlen, "unterminated quoted parameter in Content-Type");
            vlen = i - s;
            i++;
        } else {
            size_t s = i;
            while (i < len && ct[i] != ';' && ct[i] != ' ' && ct[i] != '\t')
                i++;
            vlen = i - s;
        }
        if (klen == 8 && !strncasecmp(ct + k, "boundary", 8)) {
            if (vlen == 0 || vlen > SDW_MP_BOUNDARY_MAX || v[vlen - 1] == ' ')
                return fail(err, errlen, "the multipart boundary must be 1 to 70 characters");
            for (size_t j = 0; j < vlen; j++)
                if (!bchar_ok((unsigned char)v[j]))
                    return fail(err, errlen,
                                "the multipart boundary has a character RFC 2046 does not allow");
            memcpy(out, v, vlen);
            out[vlen] = '\0';
            return 0;
        }
    }
    return fail(err, errlen, "Content-Type has no boundary parameter");
}

static const char *find(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
    return nlen <= hlen ? memmem(hay, hlen, needle, nlen) : NULL;
}

/* Value of param (name or filename) in a Content-Disposition value: quoted-string or token. Every
 * parameter is read whole, so a quoted value holding "; name=" cannot pass for another parameter. 0 (with
 * *out NULL when absent), or -1 for an unterminated quote. */
static int disp_param(const char *v, size_t vlen, const char *param, const char **out, size_t *olen)
{
    size_t pl = strlen(param);
    size_t i = 0;
    *out = NULL;
    *olen = 0;
    while (i < vlen && v[i] != ';') /* the disposition type */
        i++;
    while (i < vlen) {
        i++; /* the ';' */
        while (i < vlen && (v[i] == ' ' || v[i] == '\t'))
            i++;
        size_t k = i;
        while (i < vlen && v[i] != '=' && v[i] != ';')
            i++;
        size_t kl = i - k;
        while (kl && (v[k + kl - 1] == ' ' || v[k + kl - 1] == '\t'))
            kl--;
        const char *val = NULL;
        size_t vl = 0;
        if (i < vlen && v[i] == '=') {
            i++;
            while (i < vlen && (v[i] == ' ' || v[i] == '\t'))
                i++;
            if (i < vlen && v[i] == '"') {
                size_t st = ++i;
                while (i < vlen && v[i] != '"') {
                    if (v[i] == '\\' && i + 1 < vlen) i++;
                    i++;
                }
                if (i >= vlen) return -1;
                val = v + st;
                vl = i - st;
                i++;
            } else {
                size_t st = i;
                while (i < vlen && v[i] != ';' && v[i] != ' ' && v[i] != '\t')
                    i++;
                val = v + st;
                vl = i - st;
            }
            while (i < vlen && v[i] != ';') /* anything after the value up to the next parameter */
                i++;
        }
        if (val && !*out && kl == pl && !strncasecmp(v + k, param, pl)) {
            *out = val;
            *olen = vl;
        }
    }
    return 0;
}

/* Reads the header lines of one part from p (up to the blank line); *body gets where the data starts. */
static int part_headers(const char *p, const char *end, sdw_mp_part *part, const char **body, char *err,
                        size_t errlen)
{
    int seen_disp = 0;
    for (int lines = 0;; lines++) {
        if (lines > HEADERS_MAX) return fail(err, errlen, "a multipart part has too many header lines");
        const char *eol = find(p, (size_t)(end - p), "\r\n", 2);
        if (!eol) return fail(err, errlen, "a multipart part's headers do not end");
        size_t ll = (size_t)(eol - p);
        if (ll == 0) {
            *body = eol + 2;
            break;
        }
        if (ll > HEADER_LINE_MAX) return fail(err, errlen, "a multipart header line is too long");
        const char *colon = memchr(p, ':', ll);
        if (!colon) return fail(err, errlen, "a multipart header line has no colon");
        size_t nl = (size_t)(colon - p);
        const char *v = colon + 1;
        size_t vl = ll - nl - 1;
        while (vl && (*v == ' ' || *v == '\t'))
            v++, vl--;
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            vl--;
        if (nl == 19 && !strncasecmp(p, "content-disposition", 19)) {
            if (vl < 9 || strncasecmp(v, "form-data", 9) || (vl > 9 && v[9] != ';' && v[9] != ' '))
                return fail(err, errlen, "a multipart part is not form-data");
            if (disp_param(v, vl, "name", &part->name, &part->name_len) != 0 ||
                disp_param(v, vl, "filename", &part->filename, &part->filename_len) != 0)
                return fail(err, errlen, "a multipart Content-Disposition has an unterminated quote");
            seen_disp = 1;
        } else if (nl == 12 && !strncasecmp(p, "content-type", 12)) {
            part->content_type = v;
            part->content_type_len = vl;
        }
        p = eol + 2;
    }
    if (!seen_disp || !part->name)
        return fail(err, errlen, "a multipart part has no Content-Disposition name");
    return 0;
}

int sdw_multipart_parse(const char *body, size_t len, const char *boundary, sdw_mp_part *parts, int max,
                        int *n, char *err, size_t errlen)
{
    char delim[SDW_MP_BOUNDARY_MAX + 5];
    size_t bl = strlen(boundary);
    *n = 0;
    if (bl == 0 || bl > SDW_MP_BOUNDARY_MAX) return fail(err, errlen, "bad multipart boundary");
    /* "\r\n--boundary": a body that starts with the delimiter has no CRLF before it, so look for the rest */
    memcpy(delim, "\r\n--", 4);
    memcpy(delim + 4, boundary, bl);
    size_t dl = bl + 4;
    const char *end = body + len;
    const char *p;
    if (len >= dl - 2 && !memcmp(body, delim + 2, dl - 2))
        p = body + dl - 2;
    else {
        const char *d = find(body, len, delim, dl);
        if (!d) return fail(err, errlen, "the multipart body has no boundary line");
        p = d + dl;
    }
    for (;;) {
        /* after a delimiter: "--" ends the body, else optional whitespace and CRLF start a part */
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') return 0;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return fail(err, errlen, "a multipart boundary line is malformed");
        p += 2;
        if (*n >= max) return fail(err, errlen, "too many multipart parts");
        sdw_mp_part *part = &parts[*n];
        memset(part, 0, sizeof *part);
        const char *data;
        if (part_headers(p, end, part, &data, err, errlen) != 0) return -1;
        const char *d = find(data, (size_t)(end - data), delim, dl);
        if (!d) return fail(err, errlen, "the multipart body ends inside a part (no closing boundary)");
        part->data = data;
        part->len = (size_t)(d - data);
        (*n)++;
        p = d + dl;
    }
}

const sdw_mp_part *sdw_multipart_find(const sdw_mp_part *parts, int n, const char *name)
{
    size_t l = strlen(name);
    for (int i = 0; i < n; i++)
        if (parts[i].name_len == l && !memcmp(parts[i].name, name, l)) return &parts[i];
    return NULL;
}
