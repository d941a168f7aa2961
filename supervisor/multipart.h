/* multipart.h: a small multipart/form-data reader (RFC 7578) for upload routes: finds the boundary in
 * Content-Type and splits a body held in memory into parts, pointing into the body without copying. */
#ifndef SDW_MULTIPART_H
#define SDW_MULTIPART_H

#include <stddef.h>

/** Longest boundary RFC 2046 allows. */
#define SDW_MP_BOUNDARY_MAX 70

/** One part; every pointer is into the body (or NULL with length 0 when absent). */
typedef struct {
    const char *name; /* Content-Disposition name="..." (quotes removed, escapes kept) */
    size_t name_len;
    const char *filename; /* filename="...", NULL for a plain field */
    size_t filename_len;
    const char *content_type; /* the part's Content-Type value, NULL when absent */
    size_t content_type_len;
    const char *data; /* the part's bytes */
    size_t len;
} sdw_mp_part;

/** Reads the boundary from a Content-Type value ("multipart/form-data; boundary=..."), quoted or not,
 * into out (NUL-terminated, at least SDW_MP_BOUNDARY_MAX + 1 bytes). 0, or -1 with err. */
int sdw_multipart_boundary(const char *ct, size_t len, char *out, char *err, size_t errlen);
/** Splits body into at most max parts (fills parts[0..*n-1]). Every part must be form-data with a name;
 * the body must end with the closing delimiter. 0, or -1 with err (*n then says how many were read). */
int sdw_multipart_parse(const char *body, size_t len, const char *boundary, sdw_mp_part *parts, int max,
                        int *n, char *err, size_t errlen);
/** The first part called name, or NULL. */
const sdw_mp_part *sdw_multipart_find(const sdw_mp_part *parts, int n, const char *name);

#endif
