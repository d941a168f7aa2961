/* numfmt.h: printf-free number formatting for the per-request hot path (access log, /health), where
 * vfprintf showed up in profiles of the GET /health benchmark. */
#ifndef SDW_NUMFMT_H
#define SDW_NUMFMT_H

#include <stddef.h>
#include <stdint.h>

/** Writes v in decimal and a NUL into buf (at least 21 bytes); returns the length. */
size_t sdw_fmt_u64(char *buf, uint64_t v);
/** Writes x >= 0 rounded to `decimals` (0..6) places ("12.5" for 12.49 and 1), NUL-terminated, into buf
 * (at least 32 bytes); negative or non-finite x is written as 0. Returns the length. */
size_t sdw_fmt_fixed(char *buf, double x, int decimals);

#endif
