/* png_info.h: what the supervisor may know of an uploaded PNG without decoding it (it never links libpng:
 * pixels are the worker's): its size, whether it has alpha, and that its chunks are whole. */
#ifndef SDW_PNG_INFO_H
#define SDW_PNG_INFO_H

#include <stddef.h>
#include <stdint.h>

/** Walks png's chunks without inflating anything: the signature, IHDR first (sides 1..16384), every chunk
 * inside the buffer, at least one IDAT, IEND. Fills the size and whether it has alpha (an alpha colour type
 * or a tRNS chunk). 0, or -1 with err (not a PNG, cut off, malformed). CRCs and pixel data are left to the
 * worker's decoder. */
int sdw_png_info(const uint8_t *png, size_t len, int *w, int *h, int *has_alpha, char *err, size_t errlen);

#endif
