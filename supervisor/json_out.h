/* json_out.h: a small JSON writer for responses and SSE payloads. jansson parses requests, but its
 * integers are signed 64-bit and seeds run to 2^64-1, so output is written here (also base64 in place). */
#ifndef SDW_JSON_OUT_H
#define SDW_JSON_OUT_H

#include <stddef.h>
#include <stdint.h>

#include "rcbuf.h"

#define SDW_JW_MAX_DEPTH 16

/** A growing buffer with the comma/colon state of the value being written. */
typedef struct {
    char *buf;
    size_t len, cap;
    int oom;                            /* set once an allocation failed; the result is then unusable */
    int depth;                          /* open objects/arrays */
    unsigned char has_items[SDW_JW_MAX_DEPTH]; /* the container at each depth already holds a value */
    int after_key;                      /* a key was written; its value comes next (no comma) */
} sdw_jw;

/** Starts an empty writer. */
void sdw_jw_init(sdw_jw *w);
/** Frees the buffer. */
void sdw_jw_free(sdw_jw *w);
void sdw_jw_obj_open(sdw_jw *w);
void sdw_jw_obj_close(sdw_jw *w);
void sdw_jw_arr_open(sdw_jw *w);
void sdw_jw_arr_close(sdw_jw *w);
/** An object key (escaped). */
void sdw_jw_key(sdw_jw *w, const char *k);
/** A string value; invalid UTF-8 becomes U+FFFD, control characters are escaped. NULL writes null. */
void sdw_jw_str(sdw_jw *w, const char *s);
void sdw_jw_strn(sdw_jw *w, const char *s, size_t n);
void sdw_jw_int(sdw_jw *w, long long v);
void sdw_jw_u64(sdw_jw *w, uint64_t v);
/** A number with up to 6 significant decimals; NaN and infinities are written as null. */
void sdw_jw_num(sdw_jw *w, double v);
void sdw_jw_bool(sdw_jw *w, int v);
void sdw_jw_null(sdw_jw *w);
/** A string value holding the base64 (RFC 4648, padded) of data, encoded by libh2o in place. */
void sdw_jw_base64(sdw_jw *w, const void *data, size_t len);
/** Appends bytes verbatim, outside the JSON structure (SSE framing around a payload). */
void sdw_jw_raw(sdw_jw *w, const char *s, size_t n);
/** The text as a new rcbuf (one reference), or NULL after an allocation failure. */
sdw_rcbuf *sdw_jw_to_rcbuf(const sdw_jw *w);


/** Member shorthands: a key followed by its value, as in sdw_jw_key() then the value writer. */
static inline void sdw_jw_kstr(sdw_jw *w, const char *k, const char *v) { sdw_jw_key(w, k); sdw_jw_str(w, v); }
static inline void sdw_jw_kint(sdw_jw *w, const char *k, long long v) { sdw_jw_key(w, k); sdw_jw_int(w, v); }
static inline void sdw_jw_ku64(sdw_jw *w, const char *k, uint64_t v) { sdw_jw_key(w, k); sdw_jw_u64(w, v); }
static inline void sdw_jw_knum(sdw_jw *w, const char *k, double v) { sdw_jw_key(w, k); sdw_jw_num(w, v); }
static inline void sdw_jw_kbool(sdw_jw *w, const char *k, int v) { sdw_jw_key(w, k); sdw_jw_bool(w, v); }

#endif
