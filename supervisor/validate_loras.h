/* validate_loras.h: the LoRAs of POST /v1/jobs (the "loras" list and <lora:NAME:W> prompt tags): each name a
 * plain file in model.lora_dir, checked before a job is queued. */
#ifndef SDW_VALIDATE_LORAS_H
#define SDW_VALIDATE_LORAS_H

#include <jansson.h>

#include "gen_request.h"
#include "validate.h"

/** Reads "loras" ([{"name", "weight"}], at most 8 with the prompt's tags) into r->loras and checks every name
 * of the list and of the prompt's tags: no '/', '..', ':' or control characters, an existing regular file
 * NAME.safetensors in lora_dir. Sets r->lora_dir when any LoRA is named. 0, or -1 with e a 400 naming
 * "loras" or "prompt". */
int sdw_validate_loras(json_t *root, const char *lora_dir, sdw_gen_request *r, sdw_api_error *e);

#endif
