/* edit_mask.h: turns the masks of the OpenAI and A1111 edit routes into the engine's convention (an 8-bit
 * grey PNG, white = repaint, black = keep): OpenAI marks the area to edit with alpha 0, A1111 may use alpha.
 */
#ifndef SDW_EDIT_MASK_H
#define SDW_EDIT_MASK_H

#include <stddef.h>
#include <stdint.h>

/** Largest mask (pixels) the supervisor decodes: it runs on the event loop, so a small file that inflates to
 * gigabytes must not get there. 4096 x 4096. */
#define SDW_EDIT_MASK_MAX_PIXELS (4096u * 4096u)

/** How a mask PNG says "repaint". */
typedef enum {
    /* OpenAI: a PNG with alpha (an alpha channel or tRNS) repaints where alpha is 0; one without alpha is
     * read by luminance as /v1/jobs reads it (white = repaint) */
    SDW_EDIT_MASK_OPENAI = 0,
    /* A1111 (create_binary_mask): an RGBA PNG whose alpha is not all 255 repaints where alpha > 128; any
     * other PNG by luminance (white = repaint) */
    SDW_EDIT_MASK_A1111,
} sdw_edit_mask_mode;

/** What sdw_edit_mask_convert found and made. */
typedef struct {
    uint8_t *png;   /* the engine's mask: 8-bit grey PNG, 255 = repaint, 0 = keep (malloc'd, caller frees) */
    size_t png_len; /* its size */
    int width;      /* of the input, as of the output */
    int height;     /* of the input, as of the output */
    int has_alpha;  /* the input has an alpha channel or a tRNS chunk */
    size_t n_repaint; /* pixels marked to repaint */
} sdw_edit_mask;

/** Decodes png (any PNG colour type and depth, interlaced or not, at most SDW_EDIT_MASK_MAX_PIXELS) and
 * writes the engine's mask for it under mode, inverted when invert is set (A1111's inpainting_mask_invert).
 * Luminance is PIL's convert("L") weights, rounded to 0 or 255 as the engine rounds. 0 with *out filled, or
 * -1 with err (not a PNG, corrupt, too large, out of memory) and out->png NULL. */
int sdw_edit_mask_convert(const uint8_t *png, size_t len, sdw_edit_mask_mode mode, int invert,
                          sdw_edit_mask *out, char *err, size_t errlen);

#endif
