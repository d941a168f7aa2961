/* lora_list.h: the LoRAs a server offers: the NAME.safetensors plain files of model.lora_dir, for
 * GET /v1/loras and GET /sdapi/v1/loras. */
#ifndef SDW_LORA_LIST_H
#define SDW_LORA_LIST_H

#include <stddef.h>

/** One LoRA file: name is what jobs name it by (the file name without ".safetensors"). */
typedef struct {
    char *name;
    long long size_bytes;
} sdw_lora_entry;

/** Lists dir's NAME.safetensors regular files (a symlink only when it resolves to a regular file inside
 * dir), sorted by name, skipping names a job could not use (leading '.', ':', control characters, over 200
 * bytes). A NULL, empty or missing dir is an empty list. 0 with *out (free with sdw_lora_list_free) and
 * *n, or -1 with err (the folder exists but cannot be read). */
int sdw_lora_list(const char *dir, sdw_lora_entry **out, size_t *n, char *err, size_t errlen);
/** Frees what sdw_lora_list gave. */
void sdw_lora_list_free(sdw_lora_entry *list, size_t n);

#endif
