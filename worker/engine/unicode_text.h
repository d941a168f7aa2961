/* unicode_text.h: the Unicode the CLIP tokenizer needs: lenient UTF-8 decoding, letter/number/space classes
 * and lower-casing for the scripts listed in unicode_text.c; everything else is "other" and left as is. */
#ifndef SDE_UNICODE_TEXT_H
#define SDE_UNICODE_TEXT_H

#include <stddef.h>
#include <stdint.h>

/** Code point classes, as the CLIP pre-tokenizer regex sees them (\p{L}, \p{N}, \s, anything else). */
enum { SDE_UNI_OTHER = 0, SDE_UNI_LETTER, SDE_UNI_NUMBER, SDE_UNI_SPACE };

/** Marker for a byte that is not part of valid UTF-8: the value is SDE_UNI_RAW | byte. It classifies as
 * "other" and encodes back to the same single byte, so any input survives a decode/encode round trip. */
#define SDE_UNI_RAW 0x110000u

/** Decodes the code point at s (n >= 1 bytes available) and stores its byte length in *len. Overlong forms,
 * surrogates, values above U+10FFFF and truncated sequences give SDE_UNI_RAW | s[0] with *len = 1. */
uint32_t sde_uni_decode(const uint8_t *s, size_t n, int *len);
/** Writes cp as UTF-8 (a SDE_UNI_RAW marker as its one byte) to out, which has room for 4; returns the count. */
int sde_uni_encode(uint32_t cp, uint8_t *out);
/** SDE_UNI_LETTER / NUMBER / SPACE / OTHER for cp. */
int sde_uni_class(uint32_t cp);
/** Full lower-case mapping of cp into out (1 or 2 code points, the count is returned), like Python's
 * str.lower() without its context rules (final sigma is the caller's business). */
int sde_uni_lower(uint32_t cp, uint32_t out[2]);

/** Whether the capital sigma at cp[i] lower-cases to final sigma (U+03C2) by Python's Final_Sigma rule:
 * a cased letter before it and none after it, skipping case-ignorable marks and punctuation both ways.
 * "Cased" and "case-ignorable" are approximated: letters of the bicameral scripts above; combining marks,
 * modifier letters, apostrophes, periods, colons, zero-width and variation-selector characters. */
int sde_uni_final_sigma(const uint32_t *cp, size_t n, size_t i);

#endif
