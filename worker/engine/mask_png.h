/* mask_png.h: inpainting masks in the conventions of the HTTP surfaces, decoded to what the engine reads
 * (8-bit RGB, white = repaint): OpenAI marks the area to edit with alpha 0, A1111 may use an RGBA alpha. */
#ifndef SDE_MASK_PNG_H
#define SDE_MASK_PNG_H

#include <stddef.h>
#include <stdint.h>

/** How a mask PNG says "repaint". */
typedef enum {
    /* luminance (PIL's convert("L")) rounded at 127.5: white = repaint, as sde_png_decode + the engine read
       it */
    SDE_MASK_LUMA = 0,
    /* OpenAI: a PNG with alpha (an alpha channel or tRNS) repaints where alpha is 0; one without alpha is
     * read by luminance */
    SDE_MASK_ALPHA0,
    /* A1111 (create_binary_mask): a PNG that PIL opens as "RGBA" (RGBA, or RGB with tRNS) whose alpha is not
     * all 255 repaints where alpha > 128; any other by luminance */
    SDE_MASK_A1111,
} sde_mask_mode;

/** Decodes png (any colour type and depth, interlaced or not; the limits of sde_png_decode) into *rgb: w x h
 * 8-bit RGB pixels of 0 (keep) or 255 (repaint) under mode, inverted when invert is set (A1111's
 * inpainting_mask_invert), malloc'd. *n_repaint counts the repaint pixels, *has_alpha says whether the file
 * has alpha. 0, or -1 with err (corrupt, cut off, too large, out of memory) and *rgb NULL. */
int sde_mask_png_decode(const uint8_t *png, size_t len, sde_mask_mode mode, int invert, uint8_t **rgb, int *w,
                        int *h, size_t *n_repaint, int *has_alpha, char *err, size_t errlen);

#endif
