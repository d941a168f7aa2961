/* gen_images.h: the request's PNG inputs (init image, mask) decoded into the engine's pixel buffers, for
 * the worker process and the generate CLI. */
#ifndef SDW_GEN_IMAGES_H
#define SDW_GEN_IMAGES_H

#include <stddef.h>
#include <stdint.h>

#include "gen_request.h"
#include "sd_engine.h"

/** The decoded pixels p points into; free with sdw_gen_images_free(). */
typedef struct {
    uint8_t *init_rgb, *mask_rgb;
    sde_lora_spec loras[8]; /* the request's LoRA list; names point into names */
    char *names;
} sdw_gen_images;

/** Decodes r's init_image and mask (PNG; an empty buffer counts as absent) and LoRA list and sets p's init,
 * mask, strength, mask_blur, lora_dir and loras. Returns 0, or -1 with *field ("init_image", "mask" or
 * "loras") and err set. */
int sdw_gen_images_decode(const sdw_gen_request *r, sde_gen_params *p, sdw_gen_images *img,
                          const char **field, char *err, size_t errlen);
/** Frees the pixels (p's pointers into them dangle afterwards). */
void sdw_gen_images_free(sdw_gen_images *img);

#endif
