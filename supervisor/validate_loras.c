/* validate_loras.c: the LoRAs of POST /v1/jobs (the "loras" list and <lora:NAME:W> prompt tags): each name a
 * plain file in model.lora_dir, checked before a job is queued. */
#include "validate_loras.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_LORAS 8

/* 0 when name (len bytes) is a plain LoRA file in dir, else -1 with e naming field. */
static int check_name(const char *dir, const char *name, size_t len, const char *field, sdw_api_error *e)
{
    if (!dir || !*dir)
        return sdw_api_error_set(e, 400, "invalid_value", field,
                                 "this server has no LoRA folder (model.lora_dir)");
    if (len == 0 || len > 200 || name[0] == '.')
        return sdw_api_error_set(e, 400, "invalid_value", field, "LoRA name '%.64s' is not a plain file name",
                                 len ? name : "");
    for (size_t i = 0; i < len; i++)
        if (name[i] == '/' || name[i] == ':' || (unsigned char)name[i] < 0x20 ||
            (i && name[i] == '.' && name[i - 1] == '.'))
            return sdw_api_error_set(e, 400, "invalid_value", field,
                                     "LoRA name '%.*s' is not a plain file name", (int)(len < 64 ? len : 64),
                                     name);
    char path[4300];
    int has_ext = len > 12 && !memcmp(name + len - 12, ".safetensors", 12);
    snprintf(path, sizeof path, "%s/%.*s%s", dir, (int)len, name, has_ext ? "" : ".safetensors");
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return sdw_api_error_set(e, 400, "invalid_value", field, "no LoRA named '%.*s'",
                                 (int)(len < 64 ? len : 64), name);
    return 0;
}

int sdw_validate_loras(json_t *root, const char *lora_dir, sdw_gen_request *r, sdw_api_error *e)
{
    int n = 0;
    /* the prompt's tags: the engine removes and applies them; here only their names are checked */
    for (const char *s = r->prompt ? strstr(r->prompt, "<lora:") : NULL; s; s = strstr(s + 1, "<lora:")) {
        const char *end = strchr(s, '>');
        if (!end) break;
        const char *name = s + 6, *colon = memchr(name, ':', (size_t)(end - name));
        if (++n > MAX_LORAS)
            return sdw_api_error_set(e, 400, "out_of_range", "prompt", "at most %d LoRAs per job", MAX_LORAS);
        if (check_name(lora_dir, name, (size_t)((colon ? colon : end) - name), "prompt", e)) return -1;
    }
    json_t *v = json_object_get(root, "loras");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v))
            return sdw_api_error_set(e, 400, "invalid_type", "loras",
                                     "loras must be an array of {name, weight}");
        size_t cap = json_array_size(v) * 240 + 1, o = 0;
        if (json_array_size(v) + (size_t)n > MAX_LORAS)
            return sdw_api_error_set(e, 400, "out_of_range", "loras", "at most %d LoRAs per job", MAX_LORAS);
        char *list = malloc(cap);
        if (!list) return sdw_api_error_set(e, 500, "internal", NULL, "out of memory");
        size_t i;
        json_t *it;
        json_array_foreach(v, i, it)
        {
            json_t *nm = json_is_object(it) ? json_object_get(it, "name") : NULL, *w = NULL;
            double weight = 1.0;
            const char *key;
            json_t *kv;
            int bad = !nm || !json_is_string(nm) || json_object_size(it) > 2;
            if (!bad && (w = json_object_get(it, "weight")) && !json_is_null(w)) {
                weight = json_is_number(w) ? json_number_value(w) : NAN;
                bad = !isfinite(weight) || weight <= -100 || weight >= 100;
            }
            if (!bad) json_object_foreach(it, key, kv) bad |= strcmp(key, "name") && strcmp(key, "weight");
            if (bad) {
                free(list);
                return sdw_api_error_set(
                    e, 400, "invalid_value", "loras",
                    "loras[%zu] must be {\"name\": string, \"weight\": number in (-100, 100)}", i);
            }
            if (check_name(lora_dir, json_string_value(nm), json_string_length(nm), "loras", e)) {
                free(list);
                return -1;
            }
            o += (size_t)snprintf(list + o, cap - o, "%s:%.9g\n", json_string_value(nm), weight);
            n++;
        }
        r->loras = list;
    }
    if (n && !(r->lora_dir = strdup(lora_dir)))
        return sdw_api_error_set(e, 500, "internal", NULL, "out of memory");
    return 0;
}
