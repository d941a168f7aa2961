/* api_openai.c: the OpenAI Images API subset: POST /v1/images/generations (held until the job ends, or
 * streamed), /v1/images/variations (not yet), GET /v1/models[/{id}]; /edits is api_openai_edits.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "frame.h"
#include "multipart.h"

typedef struct {
    int url; /* response_format "url" */
    char quality[16];
    int partial_images; /* stream: how many partial_image events at most (0..3) */
    int partials_sent;
    int partial_step; /* the step of the last preview sent */
} gen_opts;

/* Names OpenAI clients send by default; they all mean the model the workers serve. */
static int model_known(sdw_srv *s, const char *m)
{
    static const char *const aliases[] = {"dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", NULL};
    if (!strcmp(m, sdw_api_model_name(s))) return 1;
    for (int i = 0; aliases[i]; i++)
        if (!strcmp(m, aliases[i])) return 1;
    return 0;
}

static int bad(sdw_api_error *e, const char *field, const char *fmt, const char *arg)
{
    return sdw_api_error_set(e, 400, "invalid_value", field, fmt, arg);
}

static int str_in(json_t *v, const char *const *allowed)
{
    if (!json_is_string(v)) return 0;
    for (int i = 0; allowed[i]; i++)
        if (!strcmp(json_string_value(v), allowed[i])) return 1;
    return 0;
}

/* Turns the OpenAI body into a POST /v1/jobs body so one validator checks every surface alike. */
static int translate(sdw_srv *s, json_t *in, json_t *out, gen_opts *o, int *stream, sdw_api_error *e)
{
    /* n: a batch of n images (seeds seed, seed+1, ...), checked against limits.max_batch as a job's n;
     * precision: the job's "fp32" | "bf16" (an sd-worker extension like steps and sampler) */
    static const char *const passthrough[] = {"prompt",   "negative_prompt", "steps", "seed",      "sampler",
                                              "schedule", "guidance_scale",  "n",     "precision", NULL};
    static const char *const formats[] = {"b64_json", "url", NULL};
    static const char *const qualities[] = {"auto", "standard", "hd", "low", "medium", "high", NULL};
    static const char *const styles[] = {"vivid", "natural", NULL};
    static const char *const backgrounds[] = {"auto", "opaque", NULL};
    static const char *const moderations[] = {"auto", "low", NULL};
    const char *k;
    json_t *v;
    json_object_foreach(in, k, v)
    {
        int pass = 0;
        for (int i = 0; passthrough[i]; i++)
            pass |= !strcmp(k, passthrough[i]);
        if (pass) {
            if (json_object_set(out, k, v))
                return sdw_api_error_set(e, 500, "internal", NULL, "out of memory");
            continue;
        }
        if (json_is_null(v)) continue;
        if (!strcmp(k, "model")) {
            if (!json_is_string(v) || !model_known(s, json_string_value(v)))
                return sdw_api_error_set(e, 400, "model_not_found", "model",
                                         "unknown model; GET /v1/models lists the one served (%s)",
                                         sdw_api_model_name(s));
        } else if (!strcmp(k, "size")) {
            const char *sz = json_is_string(v) ? json_string_value(v) : "";
            int w = 0, h = 0, used = 0;
            if (!strcmp(sz, "auto")) continue;
            if (sscanf(sz, "%dx%d%n", &w, &h, &used) != 2 || (size_t)used != strlen(sz))
                return bad(e, "size", "size must be \"WIDTHxHEIGHT\" (e.g. \"512x512\") or \"auto\"%s", "");
            if (json_object_set_new(out, "width", json_integer(w)) ||
                json_object_set_new(out, "height", json_integer(h)))
                return sdw_api_error_set(e, 500, "internal", NULL, "out of memory");
        } else if (!strcmp(k, "response_format")) {
            if (!str_in(v, formats))
                return bad(e, "response_format", "response_format must be \"b64_json\" or \"url\"%s", "");
            o->url = !strcmp(json_string_value(v), "url");
        } else if (!strcmp(k, "quality")) {
            if (!str_in(v, qualities))
                return bad(e, "quality", "quality must be one of auto, standard, hd, low, medium, high%s",
                           "");
            snprintf(o->quality, sizeof o->quality, "%s", json_string_value(v));
        } else if (!strcmp(k, "style")) {
            if (!str_in(v, styles)) return bad(e, "style", "style must be \"vivid\" or \"natural\"%s", "");
        } else if (!strcmp(k, "background")) {
            if (!str_in(v, backgrounds))
                return bad(e, "background", "background must be \"auto\" or \"opaque\" (no transparency)%s",
                           "");
        } else if (!strcmp(k, "moderation")) {
            if (!str_in(v, moderations))
                return bad(e, "moderation", "moderation must be \"auto\" or \"low\"%s", "");
        } else if (!strcmp(k, "output_format")) {
            if (!json_is_string(v) || strcmp(json_string_value(v), "png"))
                return bad(e, "output_format", "output_format must be \"png\"%s", "");
        } else if (!strcmp(k, "output_compression")) {
            if (!json_is_integer(v))
                return bad(e, "output_compression", "output_compression must be an integer%s", "");
        } else if (!strcmp(k, "user")) {
            if (!json_is_string(v)) return bad(e, "user", "user must be a string%s", "");
        } else if (!strcmp(k, "stream")) {
            if (!json_is_boolean(v)) return bad(e, "stream", "stream must be true or false%s", "");
            *stream = json_is_true(v);
        } else if (!strcmp(k, "partial_images")) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 3)
                return bad(e, "partial_images", "partial_images must be an integer from 0 to 3%s", "");
            o->partial_images = (int)json_integer_value(v);
        } else {
            return sdw_api_error_set(e, 400, "unknown_parameter", k,
                                     "Unrecognized request argument supplied: %.64s", k);
        }
    }
    if (o->quality[0] && !json_object_get(out, "steps")) {
        /* quality picks the step count unless steps says otherwise: more steps, more detail */
        int steps = !strcmp(o->quality, "low")                                 ? 10
                    : !strcmp(o->quality, "hd") || !strcmp(o->quality, "high") ? 40
                                                                               : 20;
        if (steps > s->limits.max_steps) steps = s->limits.max_steps;
        if (json_object_set_new(out, "steps", json_integer(steps)))
            return sdw_api_error_set(e, 500, "internal", NULL, "out of memory");
    }
    if (*stream && o->partial_images > 0) {
        /* previews spread over the run, so that partial_images of them come before the end: 20 steps and
         * 2 partials preview every 7 steps (7, 14) */
        json_t *st = json_object_get(out, "steps");
        int steps = json_is_integer(st) && json_integer_value(st) > 0 && json_integer_value(st) <= 150
                        ? (int)json_integer_value(st)
                        : 20;
        int every = (steps + o->partial_images) / (o->partial_images + 1);
        if (every < s->limits.preview_every_min) every = s->limits.preview_every_min;
        if (every < 1) every = 1;
        if (json_object_set_new(out, "preview_every", json_integer(every)))
            return sdw_api_error_set(e, 500, "internal", NULL, "out of memory");
    }
    return 0;
}

static json_t *job_error_json(const sdw_job *job, int *status)
{
    const char *code = job->status == SDW_JST_CANCELLED ? "cancelled" : job->err_code;
    const char *msg = job->status == SDW_JST_CANCELLED ? "the job was cancelled" : job->err_message;
    *status = job->status == SDW_JST_CANCELLED ? 409 : !strcmp(code, "shutting_down") ? 503 : 500;
    return json_pack("{s:{s:o,s:s,s:n,s:o}}", "error", "message", sdw_json_str(msg), "type",
                     *status == 409 ? "invalid_request_error" : "server_error", "param", "code",
                     sdw_json_str(code));
}

/* Image i of the job: its PNG in base64, or with response_format url where to fetch it. */
static json_t *image_item(sdw_srv *s, h2o_req_t *req, const sdw_job *job, const gen_opts *o, int i)
{
    (void)s;
    const sdw_job_image *im = &job->images[i];
    if (!o->url) return json_pack("{s:o}", "b64_json", sdw_json_base64(im->png, im->png_len));
    h2o_iovec_t base = sdw_api_base_url(req);
    char url[512], idx[24] = ""; /* image 0 keeps the plain URL single-image clients know */
    if (i > 0) snprintf(idx, sizeof idx, "?index=%d", i);
    snprintf(url, sizeof url, "%.*s/v1/jobs/%s/image%s", (int)(base.len > 300 ? 300 : base.len), base.base,
             job->id, idx);
    return json_pack("{s:s}", "url", url);
}

static json_t *gen_done(sdw_srv *s, h2o_req_t *req, sdw_job *job, void *ud, int *status)
{
    const gen_opts *o = ud;
    if (job->status != SDW_JST_COMPLETE) return job_error_json(job, status);
    char size[32];
    snprintf(size, sizeof size, "%dx%d", job->out_width, job->out_height);
    *status = 200;
    json_t *data = json_array();
    for (int i = 0; data && i < job->n_images; i++)
        if (json_array_append_new(data, image_item(s, req, job, o, i))) {
            json_decref(data);
            data = NULL;
        }
    return json_pack("{s:I,s:o,s:s,s:s,s:s}", "created", (json_int_t)time(NULL), "data", data,
                     "output_format", "png", "size", size, "quality", o->quality[0] ? o->quality : "auto");
}

static sdw_rcbuf *gen_stream_done(sdw_srv *s, h2o_req_t *req, sdw_job *job, void *ud)
{
    (void)s;
    (void)req;
    const gen_opts *o = ud;
    if (job->status != SDW_JST_COMPLETE) {
        int st;
        json_t *err = job_error_json(job, &st);
        if (err && json_object_set_new(err, "type", json_string("error"))) {
            json_decref(err);
            err = NULL;
        }
        return sdw_json_to_rcbuf(err, "event: error\ndata: ", "\n\n");
    }
    char size[32];
    snprintf(size, sizeof size, "%dx%d", job->out_width, job->out_height);
    /* one completed event per image of a batch, in index order, sent together */
    sdw_rcbuf *ev[SDW_FRAME_MAX_IMAGES] = {0};
    size_t total = 0;
    int n = job->n_images < SDW_FRAME_MAX_IMAGES ? job->n_images : SDW_FRAME_MAX_IMAGES, ok = 1;
    for (int i = 0; ok && i < n; i++) {
        const sdw_job_image *im = &job->images[i];
        json_t *j = json_pack("{s:s,s:o,s:I,s:s,s:s,s:s,s:s,s:{s:i,s:i,s:i,s:{s:i,s:i}}}", "type",
                              "image_generation.completed", "b64_json", sdw_json_base64(im->png, im->png_len),
                              "created_at", (json_int_t)time(NULL), "size", size, "quality",
                              o->quality[0] ? o->quality : "auto", "background", "opaque", "output_format",
                              "png", "usage", "input_tokens", 0, "output_tokens", 0, "total_tokens", 0,
                              "input_tokens_details", "image_tokens", 0, "text_tokens", 0);
        ev[i] = sdw_json_to_rcbuf(j, "event: image_generation.completed\ndata: ", "\n\n");
        ok = ev[i] != NULL;
        total += ok ? ev[i]->len : 0;
    }
    sdw_rcbuf *all = ok && n == 1 ? sdw_rcbuf_retain(ev[0]) : ok ? sdw_rcbuf_new(total) : NULL;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if (all && n > 1 && ev[i]) {
            memcpy(all->data + off, ev[i]->data, ev[i]->len);
            off += ev[i]->len;
        }
        sdw_rcbuf_release(ev[i]);
    }
    return all;
}

/* An image_generation.partial_image event from the job's latest live preview, when there is one not yet
 * sent, partial_images allow another, and the job is not at its last step (the image itself comes next). */
static sdw_rcbuf *gen_stream_partial(sdw_srv *s, h2o_req_t *req, sdw_job *job, void *ud)
{
    (void)s;
    (void)req;
    gen_opts *o = ud;
    if (!job->preview || job->preview_step <= o->partial_step || o->partials_sent >= o->partial_images ||
        job->preview_step >= job->total)
        return NULL;
    char size[32];
    snprintf(size, sizeof size, "%dx%d", job->req.width, job->req.height);
    json_t *ev =
        json_pack("{s:s,s:o,s:i,s:I,s:s,s:s,s:s,s:s}", "type", "image_generation.partial_image", "b64_json",
                  sdw_json_base64(job->preview, job->preview_len), "partial_image_index", o->partials_sent,
                  "created_at", (json_int_t)time(NULL), "size", size, "quality",
                  o->quality[0] ? o->quality : "auto", "background", "opaque", "output_format", "png");
    if (!ev) return NULL;
    o->partials_sent++;
    o->partial_step = job->preview_step;
    return sdw_json_to_rcbuf(ev, "event: image_generation.partial_image\ndata: ", "\n\n");
}

static void fail(sdw_srv *s, h2o_req_t *req, const sdw_api_error *e)
{
    sdw_api_send_error(s, req, SDW_SHAPE_OPENAI, e);
}

static void handle_generate(sdw_srv *s, h2o_req_t *req)
{
    sdw_api_error e;
    size_t ctlen;
    const char *ct = sdw_http_header(req, "content-type", &ctlen);
    if (sdw_validate_content_type(ct, ctlen, &e) != 0) {
        fail(s, req, &e);
        return;
    }
    json_t *in = sdw_api_read_object(s, req, &e);
    if (!in) {
        fail(s, req, &e);
        return;
    }
    gen_opts *o = h2o_mem_alloc_pool(&req->pool, sizeof *o);
    memset(o, 0, sizeof *o);
    int stream = 0;
    json_t *out = json_object();
    int rc = out ? translate(s, in, out, o, &stream, &e)
                 : sdw_api_error_set(&e, 500, "internal", NULL, "out of memory");
    json_decref(in);
    char *body = rc == 0 ? json_dumps(out, JSON_COMPACT) : NULL;
    json_decref(out);
    if (rc != 0 || !body) {
        if (rc == 0) sdw_api_error_set(&e, 500, "internal", NULL, "out of memory");
        fail(s, req, &e);
        return;
    }
    sdw_gen_request jr;
    sdw_validate_limits lim = sdw_srv_job_limits(s);
    rc = sdw_validate_job_request(body, strlen(body), &lim, &jr, &e);
    free(body);
    if (rc != 0) {
        if (!strcmp(e.field, "width") || !strcmp(e.field, "height"))
            snprintf(e.field, sizeof e.field, "size");
        fail(s, req, &e);
        return;
    }
    sdw_job *job;
    rc = sdw_api_submit(s, req, &jr, &job, &e);
    sdw_gen_request_free(&jr);
    if (rc != 0) {
        fail(s, req, &e);
        return;
    }
    if (stream)
        sdw_hold_sse_partials(s, req, job, gen_stream_done, o->partial_images ? gen_stream_partial : NULL, o);
    else
        sdw_hold_json(s, req, job, gen_done, o);
}

/* Variations (no prompt, an image to vary) have no engine counterpart yet: the form is read and checked as
 * OpenAI would, so a client learns of a mistake in its upload, then 501. Edits: api_openai_edits.c. */
static void handle_variation(sdw_srv *s, h2o_req_t *req)
{
    sdw_api_error e;
    sdw_mp_part parts[SDW_OPENAI_FORM_PARTS];
    int n = 0;
    if (sdw_openai_form_read(s, req, parts, &n, &e) != 0) {
        fail(s, req, &e);
        return;
    }
    const sdw_mp_part *img = sdw_multipart_find(parts, n, "image");
    if (!img || !img->len) {
        sdw_api_error_set(&e, 400, "missing_field", "image", "image is required (a PNG file part)");
        fail(s, req, &e);
        return;
    }
    sdw_api_error_set(&e, 501, "not_implemented", NULL,
                      "image variations are not supported; /v1/images/edits with a prompt is");
    fail(s, req, &e);
}

static json_t *model_json(sdw_srv *s)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", sdw_api_model_name(s), "object", "model", "created",
                     (json_int_t)(time(NULL) - (time_t)(sdw_srv_now() - s->started_at)), "owned_by",
                     "sd-worker");
}

static int is(h2o_req_t *req, const char *m)
{
    return h2o_memis(req->method.base, req->method.len, m, strlen(m));
}

static void method_error(sdw_srv *s, h2o_req_t *req, const char *allow)
{
    sdw_api_error e;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow, strlen(allow));
    sdw_api_error_set(&e, 405, "method_not_allowed", NULL, "allowed: %s", allow);
    fail(s, req, &e);
}

int sdw_openai_dispatch(sdw_srv *s, h2o_req_t *req)
{
    h2o_iovec_t p = req->path_normalized;
    sdw_api_error e;
    if (h2o_memis(p.base, p.len, H2O_STRLIT("/v1/images/generations"))) {
        if (!is(req, "POST"))
            method_error(s, req, "POST");
        else
            handle_generate(s, req);
        return 1;
    }
    int edit = h2o_memis(p.base, p.len, H2O_STRLIT("/v1/images/edits"));
    if (edit || h2o_memis(p.base, p.len, H2O_STRLIT("/v1/images/variations"))) {
        if (!is(req, "POST"))
            method_error(s, req, "POST");
        else if (edit)
            sdw_openai_edit(s, req);
        else
            handle_variation(s, req);
        return 1;
    }
    if (h2o_memis(p.base, p.len, H2O_STRLIT("/v1/models"))) {
        if (!is(req, "GET") && !is(req, "HEAD"))
            method_error(s, req, "GET, HEAD");
        else
            sdw_http_send_json(s, req, 200,
                               json_pack("{s:s,s:[o]}", "object", "list", "data", model_json(s)));
        return 1;
    }
    static const char pfx[] = "/v1/models/";
    if (p.len > sizeof pfx - 1 && !memcmp(p.base, pfx, sizeof pfx - 1)) {
        const char *id = p.base + sizeof pfx - 1;
        size_t il = p.len - (sizeof pfx - 1);
        const char *name = sdw_api_model_name(s);
        if (!is(req, "GET") && !is(req, "HEAD"))
            method_error(s, req, "GET, HEAD");
        else if (il == strlen(name) && !memcmp(id, name, il))
            sdw_http_send_json(s, req, 200, model_json(s));
        else {
            sdw_api_error_set(&e, 404, "model_not_found", "model", "The model '%.*s' does not exist",
                              (int)(il > 80 ? 80 : il), id);
            fail(s, req, &e);
        }
        return 1;
    }
    if (p.len >= 10 && !memcmp(p.base, "/v1/images", 10)) {
        sdw_api_error_set(&e, 404, "not_found", NULL, "no such resource");
        fail(s, req, &e);
        return 1;
    }
    return 0;
}

/* ---- what /v1/images/edits shares (api_openai_edits.c) ---- */

void *sdw_openai_opts_new(h2o_req_t *req)
{
    gen_opts *o = h2o_mem_alloc_pool(&req->pool, sizeof *o);
    memset(o, 0, sizeof *o);
    return o;
}

int sdw_openai_translate(sdw_srv *s, json_t *in, json_t *out, void *opts, int *stream, sdw_api_error *e)
{
    return translate(s, in, out, opts, stream, e);
}

json_t *sdw_openai_images_done(sdw_srv *s, h2o_req_t *req, sdw_job *job, void *ud, int *status)
{
    return gen_done(s, req, job, ud, status);
}

sdw_rcbuf *sdw_openai_images_stream_done(sdw_srv *s, h2o_req_t *req, sdw_job *job, void *ud)
{
    return gen_stream_done(s, req, job, ud);
}
