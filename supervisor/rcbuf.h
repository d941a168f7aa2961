/* rcbuf.h: reference-counted byte buffers, so one SSE event payload (e.g. a base64 PNG) can be in
 * flight to many readers at once and outlive the job that produced it. Single-threaded. */
#ifndef SDW_RCBUF_H
#define SDW_RCBUF_H

#include <stddef.h>

/** A buffer of len bytes at data; freed when the last reference is released. */
typedef struct sdw_rcbuf {
    unsigned refs;
    size_t len;
    char data[]; /* always NUL-terminated one past len */
} sdw_rcbuf;

/** A new buffer of len bytes (uninitialised, plus a terminating NUL) with one reference, or NULL. */
sdw_rcbuf *sdw_rcbuf_new(size_t len);
/** A new buffer holding a copy of data[0..len), one reference, or NULL. */
sdw_rcbuf *sdw_rcbuf_from(const void *data, size_t len);
/** Adds a reference; returns b. */
sdw_rcbuf *sdw_rcbuf_retain(sdw_rcbuf *b);
/** Drops a reference (NULL is fine); frees the buffer with the last one. */
void sdw_rcbuf_release(sdw_rcbuf *b);

#endif
