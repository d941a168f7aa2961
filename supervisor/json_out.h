/* json_out.h: answers and SSE payloads as jansson values dumped compactly, with the conventions the API
 * keeps: numbers to 6 decimals, invalid UTF-8 repaired rather than refused, base64 PNGs, SSE framing. */
#ifndef SDW_JSON_OUT_H
#define SDW_JSON_OUT_H

#include <stddef.h>

#include <jansson.h>

#include "rcbuf.h"

/** Flags for every dump: compact; 15 significant digits print a number rounded to 6 decimals exactly
 * (jansson's default 17 would show 0.1 as 0.10000000000000001). */
#define SDW_JSON_DUMP_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

/** A string value copied from s; bytes that are not valid UTF-8 (a worker's message may hold any) become
 * U+FFFD, since jansson refuses such strings. NULL s gives null. Returns NULL only when out of memory. */
json_t *sdw_json_str(const char *s);
/** A number rounded to 6 decimals; NaN and infinities give null. */
json_t *sdw_json_num(double v);
/** A string value holding the base64 (RFC 4648, padded) of data, encoded by libh2o. */
json_t *sdw_json_base64(const void *data, size_t len);
/** Dumps v (its reference is taken, even on failure) into a new rcbuf between prefix and suffix (NULL for
 * none), as an SSE event wants it. Returns NULL when v is NULL or memory ran out. */
sdw_rcbuf *sdw_json_to_rcbuf(json_t *v, const char *prefix, const char *suffix);

#endif
