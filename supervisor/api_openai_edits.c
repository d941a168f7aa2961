/* api_openai_edits.c: POST /v1/images/edits, OpenAI's multipart form turned into a /v1/jobs img2img or
 * inpainting job whose mask is OpenAI's (alpha 0 = edit; the image's own alpha without a mask), which the
 * worker reads by its mask_mode. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "png_info.h"

/* Strength when the request gives none: a masked edit repaints its area from noise, as OpenAI's do; an
 * unmasked one keeps the image's layout (A1111's default denoising strength). docs/api.md. */
#define STRENGTH_MASKED 1.0
#define STRENGTH_UNMASKED 0.75

/* The form's text fields, by the JSON type /v1/images/generations (or the job) wants them in. */
static const char *const int_fields[] = {"n", "steps", "seed", "output_compression", "partial_images", NULL};
static const char *const num_fields[] = {"guidance_scale", NULL};
static const char *const bool_fields[] = {"stream", NULL};
/* OpenAI edit fields with no effect here beyond their check (input_fidelity: gpt-image-1's "keep the
 * input's details" knob, which strength covers) */
static const char *const edit_only[] = {"input_fidelity", NULL};

static int in_list(const char *k, size_t kl, const char *const *l)
{
    for (int i = 0; l[i]; i++)
        if (strlen(l[i]) == kl && !memcmp(k, l[i], kl)) return 1;
    return 0;
}

static int oom(sdw_api_error *e)
{
    return sdw_api_error_set(e, 500, "internal", NULL, "out of memory");
}

/* A form value as the JSON type its field has; text that does not parse stays a string, so the
 * translator's type check names the field. NULL when the text is not UTF-8. */
static json_t *form_value(const char *k, size_t kl, const char *v, size_t vl)
{
    char buf[64];
    if (vl < sizeof buf && (in_list(k, kl, int_fields) || in_list(k, kl, num_fields))) {
        memcpy(buf, v, vl);
        buf[vl] = '\0';
        char *end;
        errno = 0;
        if (in_list(k, kl, int_fields)) {
            long long x = strtoll(buf, &end, 10);
            if (vl && !errno && !*end && buf[0] != ' ') return json_integer(x);
        } else {
            double x = strtod(buf, &end);
            if (vl && !errno && !*end && buf[0] != ' ') return json_real(x);
        }
    }
    if (in_list(k, kl, bool_fields)) {
        if (vl == 4 && !memcmp(v, "true", 4)) return json_true();
        if (vl == 5 && !memcmp(v, "false", 5)) return json_false();
    }
    return json_stringn(v, vl);
}

static int is_png(const sdw_mp_part *p)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    return p->len >= 8 && !memcmp(p->data, sig, 8);
}

/* The form's fields: image (also "image[]", one only) and mask as file parts, the rest into gen as JSON
 * for the generations translator, strength and mask_blur into job. */
static int read_fields(const sdw_mp_part *parts, int n, json_t *gen, json_t *job, const sdw_mp_part **img,
                       const sdw_mp_part **mask, sdw_api_error *e)
{
    *img = *mask = NULL;
    for (int i = 0; i < n; i++) {
        const sdw_mp_part *p = &parts[i];
        char k[48];
        if (p->name_len >= sizeof k || memchr(p->name, '\0', p->name_len))
            return sdw_api_error_set(e, 400, "unknown_parameter", NULL,
                                     "Unrecognized request argument supplied (a form field name over 47 "
                                     "bytes)");
        memcpy(k, p->name, p->name_len);
        k[p->name_len] = '\0';
        for (int j = 0; j < i; j++)
            if (parts[j].name_len == p->name_len && !memcmp(parts[j].name, p->name, p->name_len) &&
                strcmp(k, "image[]"))
                return sdw_api_error_set(e, 400, "invalid_value", k, "%s is given more than once", k);
        if (!strcmp(k, "image") || !strcmp(k, "image[]")) {
            if (*img)
                return sdw_api_error_set(e, 400, "unsupported_value", "image",
                                         "one image only: the engine edits a single image");
            *img = p;
            continue;
        }
        if (!strcmp(k, "mask")) {
            *mask = p;
            continue;
        }
        json_t *v = form_value(p->name, p->name_len, p->data, p->len);
        if (!v) return sdw_api_error_set(e, 400, "invalid_value", k, "%s is not valid UTF-8 text", k);
        if (!strcmp(k, "strength") || !strcmp(k, "mask_blur")) {
            /* the job's own fields: numbers where they parse, else the string for its type error */
            json_t *num = NULL;
            if (json_is_string(v) && p->len && p->len < 32) {
                char buf[32], *end;
                memcpy(buf, p->data, p->len);
                buf[p->len] = '\0';
                errno = 0;
                if (!strcmp(k, "strength")) {
                    double x = strtod(buf, &end);
                    if (!errno && !*end && buf[0] != ' ') num = json_real(x);
                } else {
                    long long x = strtoll(buf, &end, 10);
                    if (!errno && !*end && buf[0] != ' ') num = json_integer(x);
                }
            }
            int rc = json_object_set_new(job, k, num ? num : json_incref(v));
            json_decref(v);
            if (rc) return oom(e);
            continue;
        }
        if (in_list(k, strlen(k), edit_only)) {
            json_decref(v);
            continue;
        }
        if (json_object_set_new(gen, k, v)) return oom(e);
    }
    if (!*img || !(*img)->len)
        return sdw_api_error_set(e, 400, "missing_field", "image", "image is required (a PNG file part)");
    json_t *pr = json_object_get(gen, "prompt");
    if (!pr || (json_is_string(pr) && !json_string_length(pr)))
        return sdw_api_error_set(e, 400, "missing_field", "prompt", "prompt is required");
    return 0;
}

/* The size an edit gets without "size": the image's, scaled down into the limits (aspect kept), in
 * multiples of 8, at least 64. */
static void default_size(const sdw_srv *s, int iw, int ih, int *w, int *h)
{
    double f = 1.0;
    if (iw > s->limits.max_width) f = (double)s->limits.max_width / iw;
    if (ih * f > s->limits.max_height) f = (double)s->limits.max_height / ih;
    *w = (int)(iw * f) / 8 * 8;
    *h = (int)(ih * f) / 8 * 8;
    if (*w < 64) *w = 64;
    if (*h < 64) *h = 64;
}

/* Builds the job's JSON body from the form; 0, or -1 with e. */
static int build_job(sdw_srv *s, const sdw_mp_part *parts, int n, json_t *job, void *opts, int *stream,
                     const sdw_mp_part **image, const sdw_mp_part **mask_out, int *mask_mode,
                     sdw_api_error *e)
{
    const sdw_mp_part *img, *mask;
    json_t *gen = json_object();
    if (!gen) return oom(e);
    int rc = read_fields(parts, n, gen, job, &img, &mask, e);
    /* n, size, response_format, model...: generations' own reader, so batches (n > 1 there, and every image
     * in sdw_openai_images_done) reach edits with no change here */
    if (rc == 0) rc = sdw_openai_translate(s, gen, job, opts, stream, e);
    json_decref(gen);
    if (rc != 0) return -1;

    /* the supervisor decodes no pixels (docs/architecture.md): it walks the chunks (a cut-off file is the
     * client's 400 at once) and leaves the mask's alpha to the worker (mask_mode) */
    char err[200];
    int iw, ih, ia, mw, mh, ma;
    if (!is_png(img)) return sdw_api_error_set(e, 400, "invalid_image", "image", "image must be a PNG file");
    if (sdw_png_info((const uint8_t *)img->data, img->len, &iw, &ih, &ia, err, sizeof err) != 0)
        return sdw_api_error_set(e, 400, "invalid_image", "image", "image is %s", err);
    const sdw_mp_part *use = NULL;
    if (mask && mask->len) {
        if (!is_png(mask))
            return sdw_api_error_set(e, 400, "invalid_image", "mask", "mask must be a PNG file");
        if (sdw_png_info((const uint8_t *)mask->data, mask->len, &mw, &mh, &ma, err, sizeof err) != 0)
            return sdw_api_error_set(e, 400, "invalid_image", "mask", "mask is %s", err);
        if (mw != iw || mh != ih)
            return sdw_api_error_set(e, 400, "invalid_image_size", "mask",
                                     "mask is %dx%d but image is %dx%d; they must be the same size", mw, mh,
                                     iw, ih);
        use = mask;
        *mask_mode = SDW_MASK_MODE_ALPHA0;
    } else if (ia) {
        /* OpenAI: without a mask, the image's transparent pixels are the area to edit */
        use = img;
        *mask_mode = SDW_MASK_MODE_IMAGE_ALPHA;
    }
    if (rc == 0 && !json_object_get(job, "width")) {
        int w, h;
        default_size(s, iw, ih, &w, &h);
        if (json_object_set_new(job, "width", json_integer(w)) ||
            json_object_set_new(job, "height", json_integer(h)))
            rc = oom(e);
    }
    *image = img;
    *mask_out = use;
    if (rc == 0 && !json_object_get(job, "strength") &&
        json_object_set_new(job, "strength", json_real(use ? STRENGTH_MASKED : STRENGTH_UNMASKED)))
        rc = oom(e);
    return rc;
}

/* The worker decodes the pixels: a mask or image it cannot use (corrupt data, a mask that marks nothing)
 * fails the job with invalid_request, which is the client's 400 naming the part. */
static json_t *edit_done(sdw_srv *s, h2o_req_t *req, sdw_job *job, void *ud, int *status)
{
    if (job->status != SDW_JST_ERROR || strcmp(job->err_code, "invalid_request"))
        return sdw_openai_images_done(s, req, job, ud, status);
    const char *m = job->err_message;
    const char *param = !strncmp(m, "mask", 4) ? "mask" : !strncmp(m, "init_image", 10) ? "image" : NULL;
    *status = 400;
    return json_pack("{s:{s:o,s:s,s:o,s:s}}", "error", "message", sdw_json_str(m), "type",
                     "invalid_request_error", "param", sdw_json_str(param), "code", "invalid_image");
}

void sdw_openai_edit(sdw_srv *s, h2o_req_t *req)
{
    sdw_api_error e;
    sdw_mp_part parts[SDW_OPENAI_FORM_PARTS];
    int n = 0, stream = 0;
    void *opts = sdw_openai_opts_new(req);
    json_t *job = json_object();
    int rc = !job ? oom(&e) : sdw_openai_form_read(s, req, parts, &n, &e);
    int mask_mode = SDW_MASK_MODE_LUMA;
    const sdw_mp_part *img = NULL, *mask = NULL;
    if (rc == 0) rc = build_job(s, parts, n, job, opts, &stream, &img, &mask, &mask_mode, &e);
    char *body = rc == 0 ? json_dumps(job, JSON_COMPACT) : NULL;
    json_decref(job);
    if (rc == 0 && !body) rc = oom(&e);
    sdw_gen_request jr;
    sdw_gen_request_init(&jr);
    if (rc == 0) {
        /* the images skip the JSON: base64 and a JSON string of megabytes cost the event loop seconds, and
         * build_job has checked what the validator checks of them (a PNG, its sides, the mask's size) */
        rc = sdw_validate_job_request(body, strlen(body), &s->limits, &jr, &e);
        if (rc != 0) {
            if (!strcmp(e.field, "width") || !strcmp(e.field, "height"))
                snprintf(e.field, sizeof e.field, "size");
        } else {
            jr.init_image = malloc(img->len);
            jr.mask = mask ? malloc(mask->len) : NULL;
            if (!jr.init_image || (mask && !jr.mask)) {
                rc = oom(&e);
            } else {
                memcpy(jr.init_image, img->data, img->len);
                jr.init_image_len = img->len;
                if (mask) {
                    memcpy(jr.mask, mask->data, mask->len);
                    jr.mask_len = mask->len;
                }
                jr.mask_mode = mask_mode;
            }
        }
    }
    free(body);
    sdw_job *j = NULL;
    if (rc == 0) rc = sdw_api_submit(s, req, &jr, &j, &e);
    sdw_gen_request_free(&jr);
    if (rc != 0) {
        sdw_api_send_error(s, req, SDW_SHAPE_OPENAI, &e);
        return;
    }
    if (stream)
        sdw_hold_sse(s, req, j, sdw_openai_images_stream_done, opts);
    else
        sdw_hold_json(s, req, j, edit_done, opts);
}

int sdw_openai_form_read(sdw_srv *s, h2o_req_t *req, sdw_mp_part *parts, int *n, sdw_api_error *e)
{
    size_t ctlen;
    const char *ct = sdw_http_header(req, "content-type", &ctlen);
    char boundary[SDW_MP_BOUNDARY_MAX + 1], err[200];
    *n = 0;
    if (req->entity.len > s->limits.max_body_bytes)
        return sdw_api_error_set(
            e, 413, "body_too_large", NULL,
            "the request body is %zu bytes; at most %zu are accepted (limits.max_body_bytes)",
            req->entity.len, s->limits.max_body_bytes);
    if (sdw_multipart_boundary(ct, ctlen, boundary, err, sizeof err) != 0)
        return sdw_api_error_set(e, ct ? 400 : 415, "invalid_multipart", NULL, "%s", err);
    if (sdw_multipart_parse(req->entity.base ? req->entity.base : "", req->entity.len, boundary, parts,
                            SDW_OPENAI_FORM_PARTS, n, err, sizeof err) != 0)
        return sdw_api_error_set(e, 400, "invalid_multipart", NULL, "%s", err);
    return 0;
}
