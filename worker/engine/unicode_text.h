/* unicode_text.h: the Unicode the CLIP tokenizer needs, from libutf8proc: lenient UTF-8 decoding with NFC,
 * the regex classes \p{L} / \p{N} / \s by general category, and Python-style lower-casing. */
#ifndef SDE_UNICODE_TEXT_H
#define SDE_UNICODE_TEXT_H

#include <stddef.h>
#include <stdint.h>

/** Code point classes, as the CLIP pre-tokenizer regex sees them (\p{L}, \p{N}, \s, anything else). */
enum { SDE_UNI_OTHER = 0, SDE_UNI_LETTER, SDE_UNI_NUMBER, SDE_UNI_SPACE };

/** Marker for a byte that is not part of valid UTF-8: the value is SDE_UNI_RAW | byte. It classifies as
 * "other" and encodes back to the same single byte, so any input survives a decode/encode round trip. */
#define SDE_UNI_RAW 0x110000u

/** Decodes len bytes of text into NFC code points: each run of valid UTF-8 is normalised, each byte that is
 * not valid UTF-8 becomes SDE_UNI_RAW | byte. *out is malloc'd, *n its length. Returns 0, or -1 when out of
 * memory. */
int sde_uni_decode_nfc(const char *text, size_t len, uint32_t **out, size_t *n);
/** Writes cp as UTF-8 (a SDE_UNI_RAW marker as its one byte) to out, which has room for 4; returns the count.
 */
int sde_uni_encode(uint32_t cp, uint8_t *out);
/** SDE_UNI_LETTER / NUMBER / SPACE / OTHER for cp. */
int sde_uni_class(uint32_t cp);
/** Full lower-case mapping of cp into out (1 or 2 code points, the count is returned), like Python's
 * str.lower() without its context rules (final sigma is the caller's business). */
int sde_uni_lower(uint32_t cp, uint32_t out[2]);
/** Whether the capital sigma at cp[i] lower-cases to final sigma (U+03C2) by Python's Final_Sigma rule:
 * a cased letter before it and none after it, skipping case-ignorable characters both ways. */
int sde_uni_final_sigma(const uint32_t *cp, size_t n, size_t i);

#endif
