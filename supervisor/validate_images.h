/* validate_images.h: the image inputs of POST /v1/jobs (init_image, mask as base64 PNG) and their
 * parameters (strength, mask_blur): decoded, sized and range-checked before a job is queued. */
#ifndef SDW_VALIDATE_IMAGES_H
#define SDW_VALIDATE_IMAGES_H

#include <jansson.h>

#include "gen_request.h"
#include "validate.h"

/** Reads init_image, strength, mask and mask_blur of root into r. Images are base64 PNG (a "data:image/png;
 * base64," prefix is allowed); the PNG signature and IHDR are checked here, pixel data in the worker. 0, or
 * -1 with e set to a 400 naming the field (undecodable, not a PNG, a mask whose size differs from the init
 * image's, a mask without an init image, strength outside (0, 1], mask_blur outside 0..64). */
int sdw_validate_images(json_t *root, sdw_gen_request *r, sdw_api_error *e);

#endif
