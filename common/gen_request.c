/* gen_request.c: the generation request's defaults, ownership (free and deep copy driven by the field
 * table) and the field table the job frame codec walks. */
#include <stdlib.h>
#include <string.h>

#include "gen_request.h"

#define F(key, kind, member, req)                                                                            \
    {                                                                                                        \
        key, kind, offsetof(sdw_gen_request, member), 0, SDW_NAMES__COUNT, req                               \
    }
#define F_NAME(key, member, table, req)                                                                      \
    {                                                                                                        \
        key, SDW_GF_NAME, offsetof(sdw_gen_request, member), 0, table, req                                   \
    }
#define F_BYTES(key, member, len_member)                                                                     \
    {                                                                                                        \
        key, SDW_GF_BYTES, offsetof(sdw_gen_request, member), offsetof(sdw_gen_request, len_member),         \
            SDW_NAMES__COUNT, 0                                                                              \
    }

/* Fields present since protocol version 1 are required; fields added later should be optional (required 0)
 * so their default from sdw_gen_request_init() is what an older sender means. */
static const sdw_gen_field fields[] = {
    F("prompt", SDW_GF_STR, prompt, 1),
    F("negative_prompt", SDW_GF_STR, negative_prompt, 1),
    F("steps", SDW_GF_INT, steps, 1),
    F("cfg_scale", SDW_GF_DOUBLE, cfg_scale, 1),
    F("seed", SDW_GF_U64, seed, 1),
    F("width", SDW_GF_INT, width, 1),
    F("height", SDW_GF_INT, height, 1),
    F_NAME("sampler", sampler, SDW_NAMES_SAMPLER, 1),
    F_NAME("schedule", schedule, SDW_NAMES_SCHEDULE, 1),
    F("clip_skip", SDW_GF_INT, clip_skip, 0),
    F_BYTES("init_image", init_image, init_image_len),
    F("strength", SDW_GF_DOUBLE, strength, 0),
    F_BYTES("mask", mask, mask_len),
    F("mask_blur", SDW_GF_INT, mask_blur, 0),
    F("mask_mode", SDW_GF_INT, mask_mode, 0),
    F("mask_invert", SDW_GF_BOOL, mask_invert, 0),
    F("loras", SDW_GF_STR, loras, 0),
    F("lora_dir", SDW_GF_STR, lora_dir, 0),
    F("preview_every", SDW_GF_INT, preview_every, 0),
    F("decoder", SDW_GF_INT, decoder, 0),
    F("orig_width", SDW_GF_INT, orig_width, 0),
    F("orig_height", SDW_GF_INT, orig_height, 0),
    F("crop_top", SDW_GF_INT, crop_top, 0),
    F("crop_left", SDW_GF_INT, crop_left, 0),
    F("target_width", SDW_GF_INT, target_width, 0),
    F("target_height", SDW_GF_INT, target_height, 0),
    F("n", SDW_GF_INT, n, 0),
    F("precision", SDW_GF_INT, precision, 0),
};

const sdw_gen_field *sdw_gen_request_fields(int *n)
{
    *n = (int)(sizeof fields / sizeof *fields);
    return fields;
}

void sdw_gen_request_init(sdw_gen_request *r)
{
    memset(r, 0, sizeof *r);
    r->steps = 20;
    r->cfg_scale = 7.5;
    r->sampler = SDW_SAMPLER_EULER;
    r->schedule = SDW_SCHEDULE_DISCRETE;
    r->strength = 0.75;
    r->n = 1;
}

static int owns_memory(const sdw_gen_field *f)
{
    return f->kind == SDW_GF_STR || f->kind == SDW_GF_BYTES;
}

void sdw_gen_request_free(sdw_gen_request *r)
{
    if (!r) return;
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
        if (owns_memory(&fields[i])) free(*(void **)((char *)r + fields[i].off));
    sdw_gen_request_init(r);
}

int sdw_gen_request_copy(sdw_gen_request *dst, const sdw_gen_request *src)
{
    *dst = *src;
    /* forget src's pointers first, so a failure half-way frees only what this copy allocated */
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
        if (owns_memory(&fields[i])) *(void **)((char *)dst + fields[i].off) = NULL;
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        const sdw_gen_field *f = &fields[i];
        if (!owns_memory(f)) continue;
        const void *from = *(void *const *)((const char *)src + f->off);
        if (!from) continue;
        size_t n =
            f->kind == SDW_GF_STR ? strlen(from) + 1 : *(const size_t *)((const char *)src + f->len_off);
        void *to = malloc(n ? n : 1);
        if (!to) {
            sdw_gen_request_free(dst);
            return -1;
        }
        memcpy(to, from, n);
        *(void **)((char *)dst + f->off) = to;
    }
    return 0;
}

const char *sdw_precision_name(int precision)
{
    return precision == SDW_PRECISION_FP32 ? "fp32" : precision == SDW_PRECISION_BF16 ? "bf16" : NULL;
}

int sdw_precision_parse(const char *name)
{
    if (!name) return -1;
    if (!strcmp(name, "fp32")) return SDW_PRECISION_FP32;
    if (!strcmp(name, "bf16")) return SDW_PRECISION_BF16;
    return -1;
}

int sdw_gen_request_set_str(char **dst, const char *s)
{
    char *d = NULL;
    if (s && !(d = strdup(s))) return -1;
    free(*dst);
    *dst = d;
    return 0;
}

/* the frame codec reads and writes NAME members as int */
_Static_assert(sizeof(sdw_sampler) == sizeof(int) && sizeof(sdw_schedule) == sizeof(int), "enum size");
