/* validate.c: POST /v1/jobs request checks: media type, body size, strict JSON (jansson), every field's
 * type and range. The first problem found is reported with the field it concerns. */
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "validate.h"
#include "validate_images.h"
#include "validate_loras.h"

static const char *const known_fields[] = {
    "prompt", "negative_prompt", "steps", "guidance_scale", "seed", "width", "height", "sampler", "schedule",
    "clip_skip", "init_image", "strength", "mask", "mask_blur", "loras", "preview_every", "decoder",
    /* SDXL micro-conditioning */
    "original_size", "crops_coords_top_left", "target_size", "n", "precision"};

#define N_OF(a) (sizeof(a) / sizeof *(a))

int sdw_api_error_set(sdw_api_error *e, int status, const char *code, const char *field, const char *fmt, ...)
{
    e->status = status;
    snprintf(e->code, sizeof e->code, "%s", code);
    snprintf(e->field, sizeof e->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

static int ci_eq(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    if (alen != blen) return 0;
    for (size_t i = 0; i < alen; i++)
        if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i])) return 0;
    return 1;
}

static void trim(const char **s, size_t *len)
{
    while (*len && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*len)--;
    }
    while (*len && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
        (*len)--;
}

int sdw_validate_content_type(const char *ct, size_t len, sdw_api_error *e)
{
    if (!ct || !len)
        return sdw_api_error_set(e, 415, "unsupported_media_type", NULL,
                                 "Content-Type is missing; send the body as application/json");
    const char *semi = memchr(ct, ';', len);
    const char *type = ct;
    size_t tlen = semi ? (size_t)(semi - ct) : len;
    trim(&type, &tlen);
    if (!ci_eq(type, tlen, "application/json"))
        return sdw_api_error_set(e, 415, "unsupported_media_type", NULL,
                                 "Content-Type '%.*s' is not supported; send application/json",
                                 (int)(len > 100 ? 100 : len), ct);
    /* parameters: only a charset other than UTF-8 matters (JSON is UTF-8, RFC 8259) */
    while (semi) {
        const char *p = semi + 1;
        const char *end = ct + len;
        semi = memchr(p, ';', (size_t)(end - p));
        size_t plen = semi ? (size_t)(semi - p) : (size_t)(end - p);
        const char *eq = memchr(p, '=', plen);
        if (!eq) continue;
        const char *name = p;
        size_t nlen = (size_t)(eq - p);
        const char *val = eq + 1;
        size_t vlen = plen - nlen - 1;
        trim(&name, &nlen);
        trim(&val, &vlen);
        if (vlen >= 2 && val[0] == '"' && val[vlen - 1] == '"') {
            val++;
            vlen -= 2;
        }
        if (ci_eq(name, nlen, "charset") && !ci_eq(val, vlen, "utf-8") && !ci_eq(val, vlen, "utf8"))
            return sdw_api_error_set(e, 415, "unsupported_media_type", NULL,
                                     "charset '%.*s' is not supported; JSON bodies must be UTF-8",
                                     (int)(vlen > 40 ? 40 : vlen), val);
    }
    return 0;
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number with a fraction";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "a value";
}

static int wrong_type(sdw_api_error *e, const char *field, const char *want, const json_t *v)
{
    return sdw_api_error_set(e, 400, "invalid_type", field, "%s must be %s, not %s", field, want,
                             json_kind(v));
}

/* A string field: no NUL, at most maxb bytes, non-blank when required. */
static int get_string(const json_t *v, const char *field, size_t maxb, int nonblank, const char **out,
                      size_t *olen, sdw_api_error *e)
{
    if (!json_is_string(v)) return wrong_type(e, field, "a string", v);
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (memchr(s, '\0', n))
        return sdw_api_error_set(e, 400, "invalid_value", field, "%s must not contain NUL characters", field);
    if (n > maxb)
        return sdw_api_error_set(e, 400, "out_of_range", field,
                                 "%s is %zu bytes long; at most %zu are accepted", field, n, maxb);
    if (nonblank) {
        size_t k = 0;
        while (k < n && isspace((unsigned char)s[k]))
            k++;
        if (k == n) return sdw_api_error_set(e, 400, "out_of_range", field, "%s must not be empty", field);
    }
    *out = s;
    *olen = n;
    return 0;
}

/* An integer field in lo..hi (step: required multiple, 1 for none). */
static int get_int(const json_t *v, const char *field, long long lo, long long hi, long long step, int *out,
                   sdw_api_error *e)
{
    if (!json_is_integer(v)) return wrong_type(e, field, "an integer", v);
    long long x = json_integer_value(v);
    if (x < lo || x > hi || x % step != 0) {
        if (step > 1)
            return sdw_api_error_set(e, 400, "out_of_range", field,
                                     "%s is %lld; it must be a multiple of %lld between %lld and %lld", field,
                                     x, step, lo, hi);
        return sdw_api_error_set(e, 400, "out_of_range", field,
                                 "%s is %lld; it must be between %lld and %lld", field, x, lo, hi);
    }
    *out = (int)x;
    return 0;
}

/* Seeds are 0..2^63-1: what jansson's signed integers hold (a longer literal is invalid JSON). */
static int get_seed(const json_t *v, uint64_t *out, sdw_api_error *e)
{
    if (!json_is_integer(v)) return wrong_type(e, "seed", "an integer", v);
    long long x = json_integer_value(v);
    if (x < 0)
        return sdw_api_error_set(e, 400, "out_of_range", "seed",
                                 "seed is %lld; it must be between 0 and %lld", x, (long long)INT64_MAX);
    *out = (uint64_t)x;
    return 0;
}

/* A name from a gen_names table (sampler, schedule): the message lists the table's canonical names. */
static int get_name(const json_t *v, sdw_names_kind kind, int *out, sdw_api_error *e)
{
    const char *field = sdw_names_kind_name(kind), *s = NULL;
    size_t n = 0;
    if (get_string(v, field, 64, 0, &s, &n, e) != 0) return -1;
    int x = sdw_names_parse(kind, s);
    if (x < 0) {
        char list[512];
        return sdw_api_error_set(e, 400, "invalid_value", field, "unknown %s '%.64s'; one of %s", field, s,
                                 sdw_names_list(kind, ", ", NULL, list, sizeof list));
    }
    *out = x;
    return 0;
}

/* SDXL's micro-conditioning pairs: [width, height] for the sizes, [top, left] for the crop (the order of
 * the names), integers in lo..SDW_SDXL_COND_MAX. */
static int get_pair(const json_t *v, const char *field, const char *shape, int lo, int *a, int *b,
                    sdw_api_error *e)
{
    if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_integer(json_array_get(v, 0)) ||
        !json_is_integer(json_array_get(v, 1)))
        return sdw_api_error_set(e, 400, "invalid_type", field, "%s must be an array of two integers %s",
                                 field, shape);
    long long x = json_integer_value(json_array_get(v, 0)), y = json_integer_value(json_array_get(v, 1));
    if (x < lo || x > SDW_SDXL_COND_MAX || y < lo || y > SDW_SDXL_COND_MAX)
        return sdw_api_error_set(e, 400, "out_of_range", field,
                                 "%s is [%lld, %lld]; each must be between %d and %d pixels", field, x, y, lo,
                                 SDW_SDXL_COND_MAX);
    *a = (int)x;
    *b = (int)y;
    return 0;
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static int check_fields(json_t *root, const sdw_validate_limits *lim, sdw_gen_request *r, sdw_api_error *e)
{
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        size_t i = 0;
        while (i < N_OF(known_fields) && strcmp(key, known_fields[i]))
            i++;
        if (i == N_OF(known_fields))
            return sdw_api_error_set(
                e, 400, "unknown_field", NULL,
                "unknown field '%.64s'; known fields: prompt, negative_prompt, steps, guidance_scale, "
                "seed, width, height, sampler, schedule, init_image, strength, mask, mask_blur, loras, "
                "preview_every, decoder, original_size, crops_coords_top_left, target_size, n, precision",
                key);
    }

    const char *s;
    size_t n;
    v = json_object_get(root, "prompt");
    if (!v || json_is_null(v))
        return sdw_api_error_set(e, 400, "missing_field", "prompt", "prompt is required");
    if (get_string(v, "prompt", SDW_PROMPT_MAX_BYTES, 1, &s, &n, e) != 0) return -1;
    if (!(r->prompt = dup_n(s, n))) return sdw_api_error_set(e, 500, "internal", NULL, "out of memory");

    s = "";
    n = 0;
    if ((v = json_object_get(root, "negative_prompt")) && !json_is_null(v) &&
        get_string(v, "negative_prompt", SDW_PROMPT_MAX_BYTES, 0, &s, &n, e) != 0)
        return -1;
    if (!(r->negative_prompt = dup_n(s, n)))
        return sdw_api_error_set(e, 500, "internal", NULL, "out of memory");

    if ((v = json_object_get(root, "steps")) && !json_is_null(v) &&
        get_int(v, "steps", 1, lim->max_steps, 1, &r->steps, e) != 0)
        return -1;

    /* 0 = the model's default; the worker checks it against the text encoder's depth (12 for CLIP ViT-L,
     * 24 for OpenCLIP ViT-H), so the API bound is the deepest encoder's */
    /* a batch: n images, seeds seed..seed+n-1 */
    if ((v = json_object_get(root, "n")) && !json_is_null(v) &&
        get_int(v, "n", 1, lim->max_batch > 0 ? lim->max_batch : 1, 1, &r->n, e) != 0)
        return -1;

    if ((v = json_object_get(root, "clip_skip")) && !json_is_null(v) &&
        get_int(v, "clip_skip", 0, 24, 1, &r->clip_skip, e) != 0)
        return -1;

    if ((v = json_object_get(root, "guidance_scale")) && !json_is_null(v)) {
        if (!json_is_number(v)) return wrong_type(e, "guidance_scale", "a number", v);
        double g = json_number_value(v);
        if (!isfinite(g) || g < 0 || g > 30)
            return sdw_api_error_set(e, 400, "out_of_range", "guidance_scale",
                                     "guidance_scale is %g; it must be between 0 and 30", g);
        r->cfg_scale = g;
    }

    if ((v = json_object_get(root, "seed")) && !json_is_null(v)) {
        if (get_seed(v, &r->seed, e) != 0) return -1;
        r->has_seed = 1;
    }

    if ((v = json_object_get(root, "width")) && !json_is_null(v) &&
        get_int(v, "width", 64, lim->max_width, 8, &r->width, e) != 0)
        return -1;
    if ((v = json_object_get(root, "height")) && !json_is_null(v) &&
        get_int(v, "height", 64, lim->max_height, 8, &r->height, e) != 0)
        return -1;

    /* previews cost a little per image; the server sets how often they may come */
    r->preview_every = lim->preview_every_default;
    if ((v = json_object_get(root, "preview_every")) && !json_is_null(v)) {
        if (get_int(v, "preview_every", 0, 150, 1, &r->preview_every, e) != 0) return -1;
        if (r->preview_every && r->preview_every < lim->preview_every_min)
            return sdw_api_error_set(e, 400, "out_of_range", "preview_every",
                                     "preview_every is %d; it must be 0 (no previews) or at least %d on this "
                                     "server",
                                     r->preview_every, lim->preview_every_min);
    }

    int x;
    if ((v = json_object_get(root, "sampler")) && !json_is_null(v)) {
        if (get_name(v, SDW_NAMES_SAMPLER, &x, e) != 0) return -1;
        r->sampler = (sdw_sampler)x;
    }
    if ((v = json_object_get(root, "schedule")) && !json_is_null(v)) {
        if (get_name(v, SDW_NAMES_SCHEDULE, &x, e) != 0) return -1;
        r->schedule = (sdw_schedule)x;
    }
    if ((v = json_object_get(root, "decoder")) && !json_is_null(v)) {
        if (!json_is_string(v)) return wrong_type(e, "decoder", "a string", v);
        if (!strcmp(json_string_value(v), "taesd")) {
            /* known here from the config: every worker loads the same model.preview_decoder */
            if (!lim->preview_decoder)
                return sdw_api_error_set(e, 400, "invalid_value", "decoder",
                                         "decoder 'taesd' needs a TAESD file on this server "
                                         "(model.preview_decoder); use 'vae'");
            r->decoder = SDW_DECODER_TAESD;
        } else if (strcmp(json_string_value(v), "vae")) {
            return sdw_api_error_set(e, 400, "invalid_value", "decoder",
                                     "decoder is '%.32s'; it must be 'vae' or 'taesd'", json_string_value(v));
        }
    }
    /* the arithmetic: the server's model.precision unless the job says; bf16 is opt-in (docs/api.md) */
    r->precision = lim->precision;
    if ((v = json_object_get(root, "precision")) && !json_is_null(v)) {
        if (!json_is_string(v)) return wrong_type(e, "precision", "a string", v);
        const char *name = json_string_value(v);
        if (strlen(name) != json_string_length(v) || (x = sdw_precision_parse(name)) < 0)
            return sdw_api_error_set(e, 400, "invalid_value", "precision",
                                     "precision is '%.32s'; it must be 'fp32' or 'bf16'", name);
        r->precision = x;
    }
    if ((v = json_object_get(root, "original_size")) && !json_is_null(v) &&
        get_pair(v, "original_size", "[width, height]", 1, &r->orig_width, &r->orig_height, e) != 0)
        return -1;
    if ((v = json_object_get(root, "crops_coords_top_left")) && !json_is_null(v) &&
        get_pair(v, "crops_coords_top_left", "[top, left]", 0, &r->crop_top, &r->crop_left, e) != 0)
        return -1;
    if ((v = json_object_get(root, "target_size")) && !json_is_null(v) &&
        get_pair(v, "target_size", "[width, height]", 1, &r->target_width, &r->target_height, e) != 0)
        return -1;
    if (sdw_validate_images(root, r, e) != 0) return -1;
    return sdw_validate_loras(root, lim->lora_dir, r, e);
}

int sdw_validate_job_request(const char *body, size_t len, const sdw_validate_limits *lim,
                             sdw_gen_request *out, sdw_api_error *e)
{
    sdw_gen_request_init(out);
    if (len > lim->max_body_bytes)
        return sdw_api_error_set(e, 413, "body_too_large", NULL,
                                 "request body is %zu bytes; at most %zu are accepted", len,
                                 lim->max_body_bytes);
    if (!body || len == 0)
        return sdw_api_error_set(e, 400, "invalid_json", NULL, "request body is empty; send a JSON object");

    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root)
        return sdw_api_error_set(e, 400, "invalid_json", NULL, "invalid JSON at line %d column %d: %s",
                                 jerr.line, jerr.column, jerr.text);
    if (!json_is_object(root)) {
        sdw_api_error_set(e, 400, "invalid_json", NULL, "the body must be a JSON object, not %s",
                          json_kind(root));
        json_decref(root);
        return -1;
    }

    sdw_gen_request r;
    sdw_gen_request_init(&r);
    r.width = r.height = lim->default_size; /* the served model's native size; 0: decided at dispatch */
    int rc = check_fields(root, lim, &r, e);
    json_decref(root);
    if (rc != 0) {
        sdw_gen_request_free(&r);
        return -1;
    }
    /* defaults may exceed small configured limits; report that as the field's range error */
    if (r.width > lim->max_width || r.height > lim->max_height || r.steps > lim->max_steps) {
        const char *f = r.steps > lim->max_steps ? "steps" : r.width > lim->max_width ? "width" : "height";
        sdw_api_error_set(e, 400, "out_of_range", f,
                          "the default %s exceeds this server's limit; give %s explicitly", f, f);
        sdw_gen_request_free(&r);
        return -1;
    }
    *out = r;
    return 0;
}
