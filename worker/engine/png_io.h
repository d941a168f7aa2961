/* png_io.h: 8-bit RGB images to and from PNG in memory (libpng), with text chunks for generation metadata
 * (AUTOMATIC1111's "parameters" key), so results can be served, compared in tests and read back for img2img.
 */
#ifndef SDE_PNG_IO_H
#define SDE_PNG_IO_H

#include <stddef.h>
#include <stdint.h>

/** Largest width or height sde_png_decode accepts, and the largest pixel count, so a small hostile file
 * cannot make it allocate gigabytes. */
#define SDE_PNG_MAX_DIM 16384
#define SDE_PNG_MAX_PIXELS (1u << 26)

/** Encodes w x h 8-bit RGB pixels (rows top to bottom, 3 bytes a pixel, no padding) as a PNG in memory.
 * text: NULL, or key, value, key, value, ..., NULL; keys are 1-79 printable ASCII characters (no leading,
 * trailing or double spaces), values are UTF-8 and go in a tEXt chunk when they fit Latin-1, else in an iTXt
 * chunk, all before the image data. *out is malloc'd (the caller frees it), *len its size. Returns 0, or -1
 * with a message in err and *out NULL. */
int sde_png_encode(const uint8_t *rgb, int w, int h, const char *const *text, uint8_t **out, size_t *len,
                   char *err, size_t errlen);

/** Decodes any PNG (grey, palette, alpha, 16-bit, interlaced) to 8-bit RGB: palette and grey are expanded,
 * 16-bit samples scaled, alpha dropped (as PIL's convert("RGB") does), no gamma correction. *rgb is malloc'd
 * (w * h * 3 bytes). Returns 0, or -1 with a message in err for a corrupt, truncated or oversized file
 * (beyond SDE_PNG_MAX_DIM / SDE_PNG_MAX_PIXELS), leaving *rgb NULL. */
int sde_png_decode(const uint8_t *buf, size_t len, uint8_t **rgb, int *w, int *h, char *err, size_t errlen);

#endif
