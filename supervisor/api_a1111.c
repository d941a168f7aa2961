/* api_a1111.c: the AUTOMATIC1111 web UI API subset under /sdapi/v1: txt2img and img2img (held until the job
 * ends), progress and interrupt of the jobs it started, and the model, sampler, scheduler, LoRA and option
 * lists. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api.h"
#include "auth.h"
#include "lora_list.h"

/* Jobs txt2img started, oldest first: what /progress reports and /interrupt stops, like A1111's one
 * current task. */
typedef struct a1_job {
    sdw_job_sub sub;
    sdw_job *job;
    char key[SDW_AUTH_NAME_MAX + 1];
    struct a1_job *prev, *next;
} a1_job;

static a1_job *a1_head, *a1_tail;

typedef struct {
    json_t *params; /* the request as A1111 echoes it back */
    int send_images;
    int batch_size, n_iter; /* A1111's batch: batch_size * n_iter images, one job (default 1 each) */
} t2i_opts;

static void a1_on_event(void *ud, sdw_job *job, sdw_job_event ev)
{
    (void)job;
    a1_job *a = ud;
    if (ev != SDW_JEV_END && ev != SDW_JEV_GONE) return;
    sdw_job_unsubscribe(&a->sub);
    if (a->prev)
        a->prev->next = a->next;
    else
        a1_head = a->next;
    if (a->next)
        a->next->prev = a->prev;
    else
        a1_tail = a->prev;
    free(a);
}

static void a1_track(sdw_job *job, const char *key)
{
    a1_job *a = calloc(1, sizeof *a);
    if (!a) return; /* progress will not show it; the job itself is unaffected */
    a->job = job;
    snprintf(a->key, sizeof a->key, "%s", key ? key : "");
    a->sub.fn = a1_on_event;
    a->sub.ud = a;
    sdw_job_subscribe(job, &a->sub);
    a->prev = a1_tail;
    if (a1_tail)
        a1_tail->next = a;
    else
        a1_head = a;
    a1_tail = a;
}

/* The caller's current job: the oldest unfinished one started with the same key (any, without keys). */
static sdw_job *a1_current(h2o_req_t *req, int *count)
{
    const char *key = sdw_api_key_name(req);
    sdw_job *cur = NULL;
    int n = 0;
    for (a1_job *a = a1_head; a; a = a->next) {
        if (key && strcmp(a->key, key)) continue;
        if (!cur) cur = a->job;
        n++;
    }
    *count = n;
    return cur;
}

/* ---- names ---- */

static int parse_any(sdw_names_kind kind, const char *s, size_t n)
{
    for (int i = 0; i < sdw_names_count(kind); i++) {
        const sdw_name_row *r = sdw_names_row(kind, i);
        if ((strlen(r->display) == n && !strncasecmp(r->display, s, n)) ||
            (strlen(r->name) == n && !strncasecmp(r->name, s, n)))
            return i;
    }
    char buf[64];
    if (n >= sizeof buf) return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return sdw_names_parse(kind, buf);
}

/* "DPM++ 2M Karras" is how A1111 before 1.9 named a sampler with its schedule. */
static int parse_sampler(const char *s, int *sampler, int *schedule)
{
    size_t n = strlen(s);
    *schedule = -1;
    if ((*sampler = parse_any(SDW_NAMES_SAMPLER, s, n)) >= 0) return 0;
    const char *sp = strrchr(s, ' ');
    if (!sp) return -1;
    int sc = parse_any(SDW_NAMES_SCHEDULE, sp + 1, strlen(sp + 1));
    if (sc < 0 || (*sampler = parse_any(SDW_NAMES_SAMPLER, s, (size_t)(sp - s))) < 0) return -1;
    *schedule = sc;
    return 0;
}

/* ---- txt2img ---- */

static int is_noop(json_t *v, const char *k)
{
    if (json_is_null(v)) return 1;
    if (!strcmp(k, "restore_faces") || !strcmp(k, "tiling") || !strcmp(k, "enable_hr"))
        return json_is_false(v);
    if (!strcmp(k, "subseed_strength") || !strcmp(k, "s_min_uncond") || !strcmp(k, "s_churn") ||
        !strcmp(k, "s_tmin"))
        return json_is_number(v) && json_number_value(v) == 0;
    if (!strcmp(k, "s_noise")) return json_is_number(v) && json_number_value(v) == 1;
    if (!strcmp(k, "seed_resize_from_h") || !strcmp(k, "seed_resize_from_w"))
        return json_is_integer(v) && json_integer_value(v) <= 0;
    if (!strcmp(k, "styles") || !strcmp(k, "script_args")) return json_is_array(v) && json_array_size(v) == 0;
    if (!strcmp(k, "alwayson_scripts") || !strcmp(k, "override_settings"))
        return json_is_object(v) && json_object_size(v) == 0;
    if (!strcmp(k, "script_name") || !strcmp(k, "refiner_checkpoint"))
        return json_is_string(v) && !*json_string_value(v);
    return 0;
}

static int translate(json_t *in, json_t *out, t2i_opts *o, sdw_api_error *e)
{
    /* precision ("fp32" | "bf16"): sd-worker's own, not A1111's; checked (not ignored) as the job's field */
    static const char *const direct[] = {"prompt", "negative_prompt", "steps", "width",
                                         "height", "precision",       NULL};
    /* these change the image in A1111 unless at their neutral value (is_noop) */
    static const char *const neutral[] = {"restore_faces",
                                          "tiling",
                                          "enable_hr",
                                          "subseed_strength",
                                          "s_min_uncond",
                                          "s_churn",
                                          "s_tmin",
                                          "s_noise",
                                          "seed_resize_from_h",
                                          "seed_resize_from_w",
                                          "styles",
                                          "script_args",
                                          "alwayson_scripts",
                                          "override_settings",
                                          "script_name",
                                          "refiner_checkpoint",
                                          "eta",
                                          "s_tmax",
                                          NULL};
    int sampler = -1, schedule = -1;
    const char *k;
    json_t *v;
    json_object_foreach(in, k, v)
    {
        int hit = 0;
        for (int i = 0; direct[i]; i++)
            hit |= !strcmp(k, direct[i]);
        if (hit) {
            if (!json_is_null(v) && json_object_set(out, k, v))
                return sdw_api_error_set(e, 500, "internal", NULL, "out of memory");
            continue;
        }
        for (int i = 0; neutral[i]; i++)
            if (!strcmp(k, neutral[i])) {
                if (!is_noop(v, k))
                    return sdw_api_error_set(e, 400, "unsupported_value", k,
                                             "%s is not supported; send it at its default (or leave it out)",
                                             k);
                hit = 1;
            }
        if (hit) continue;
        if (!strcmp(k, "cfg_scale")) {
            if (!json_is_null(v) && json_object_set(out, "guidance_scale", v))
                return sdw_api_error_set(e, 500, "internal", NULL, "out of memory");
        } else if (!strcmp(k, "seed")) {
            if (json_is_integer(v) && json_integer_value(v) == -1) continue; /* A1111's "random" */
            if (!json_is_null(v) && json_object_set(out, "seed", v))
                return sdw_api_error_set(e, 500, "internal", NULL, "out of memory");
        } else if (!strcmp(k, "sampler_name") || !strcmp(k, "sampler_index")) {
            if (json_is_null(v)) continue;
            int sc;
            if (!json_is_string(v) || parse_sampler(json_string_value(v), &sampler, &sc) != 0)
                return sdw_api_error_set(e, 400, "invalid_value", k,
                                         "unknown sampler; GET /sdapi/v1/samplers lists the names");
            if (sc >= 0 && schedule < 0) schedule = sc;
        } else if (!strcmp(k, "scheduler")) {
            if (json_is_null(v) || (json_is_string(v) && !strcasecmp(json_string_value(v), "automatic")))
                continue;
            const char *s = json_is_string(v) ? json_string_value(v) : "";
            if ((schedule = parse_any(SDW_NAMES_SCHEDULE, s, strlen(s))) < 0)
                return sdw_api_error_set(e, 400, "invalid_value", "scheduler",
                                         "unknown scheduler; GET /sdapi/v1/schedulers lists the names");
        } else if (!strcmp(k, "batch_size") || !strcmp(k, "n_iter")) {
            if (json_is_null(v)) continue;
            if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 16)
                return sdw_api_error_set(e, 400, "out_of_range", k, "%s must be an integer from 1 to 16", k);
            *(!strcmp(k, "batch_size") ? &o->batch_size : &o->n_iter) = (int)json_integer_value(v);
        } else if (!strcmp(k, "send_images")) {
            o->send_images = !json_is_false(v);
        }
        /* anything else (save_images, do_not_save_*, comments, hr_* without enable_hr, sampler options of
         * other samplers, unknown keys) leaves A1111's image as it is: ignored, as A1111 ignores extras */
    }
    /* the batch is one job of batch_size * n_iter images with consecutive seeds, as A1111 seeds its batches
     * (limits.max_batch bounds the product: a 400 naming batch_size) */
    if (o->batch_size * o->n_iter > 1 &&
        json_object_set_new(out, "n", json_integer(o->batch_size * o->n_iter)))
        return sdw_api_error_set(e, 500, "internal", NULL, "out of memory");
    if (sampler >= 0 && json_object_set_new(out, "sampler", json_string(sdw_sampler_name(sampler))))
        return sdw_api_error_set(e, 500, "internal", NULL, "out of memory");
    if (schedule >= 0 && json_object_set_new(out, "schedule", json_string(sdw_schedule_name(schedule))))
        return sdw_api_error_set(e, 500, "internal", NULL, "out of memory");
    return 0;
}

static const char *a1_field(const char *ours)
{
    if (!strcmp(ours, "guidance_scale")) return "cfg_scale";
    if (!strcmp(ours, "sampler")) return "sampler_name";
    if (!strcmp(ours, "schedule")) return "scheduler";
    if (!strcmp(ours, "strength")) return "denoising_strength";
    if (!strcmp(ours, "init_image")) return "init_images";
    if (!strcmp(ours, "n")) return "batch_size";
    return ours;
}

static json_t *t2i_done(sdw_srv *s, h2o_req_t *req, sdw_job *job, void *ud, int *status)
{
    (void)req;
    t2i_opts *o = ud;
    if (job->status == SDW_JST_ERROR) {
        *status = 500;
        json_decref(o->params);
        o->params = NULL;
        return json_pack("{s:o,s:o,s:s,s:s}", "error", sdw_json_str(job->err_code), "detail",
                         sdw_json_str(job->err_message), "body", "", "errors", "");
    }
    const sdw_gen_request *r = &job->req;
    const char *sampler = sdw_names_display(SDW_NAMES_SAMPLER, r->sampler);
    const char *sched = sdw_names_display(SDW_NAMES_SCHEDULE, r->schedule);
    int w = job->out_width ? job->out_width : r->width, h = job->out_height ? job->out_height : r->height;
    /* one entry per image of the batch in the all_* lists, image i with seed + i */
    const int n = r->n > 1 ? r->n : 1;
    json_t *all_prompts = json_array(), *all_neg = json_array(), *all_seeds = json_array(),
           *infotexts = json_array();
    char infotext[SDW_PROMPT_MAX_BYTES * 2 + 512], i2i[112] = "";
    int m = 0;
    if (r->init_image) { /* as A1111 writes them, after the model */
        m = snprintf(i2i, sizeof i2i, ", Denoising strength: %g", r->strength);
        if (r->mask) m += snprintf(i2i + m, sizeof i2i - (size_t)m, ", Mask blur: %d", r->mask_blur);
    }
    /* as the worker's PNG parameters text has it: fp32 jobs say nothing */
    if (job->status == SDW_JST_COMPLETE && job->out_precision == SDW_PRECISION_BF16)
        snprintf(i2i + m, sizeof i2i - (size_t)m, ", Precision: bf16");
    for (int i = 0; i < n; i++) {
        snprintf(infotext, sizeof infotext,
                 "%s%s%s\nSteps: %d, Sampler: %s, Schedule type: %s, CFG scale: %g, Seed: %llu, Size: %dx%d, "
                 "Model: %s%s",
                 r->prompt, r->negative_prompt && *r->negative_prompt ? "\nNegative prompt: " : "",
                 r->negative_prompt && *r->negative_prompt ? r->negative_prompt : "", r->steps, sampler,
                 sched, r->cfg_scale, (unsigned long long)(r->seed + (uint64_t)i), w, h,
                 sdw_api_model_name(s), i2i);
        json_array_append_new(all_prompts, sdw_json_str(r->prompt));
        json_array_append_new(all_neg, sdw_json_str(r->negative_prompt ? r->negative_prompt : ""));
        json_array_append_new(all_seeds, json_integer((json_int_t)(r->seed + (uint64_t)i)));
        json_array_append_new(infotexts, sdw_json_str(infotext));
    }
    json_t *info =
        json_pack("{s:o,s:o,s:o,s:o,s:I,s:o,s:i,s:i,s:s,s:s,s:o,s:i,s:i,s:i,s:s,s:s,s:o,s:b}", "prompt",
                  sdw_json_str(r->prompt), "all_prompts", all_prompts, "negative_prompt",
                  sdw_json_str(r->negative_prompt ? r->negative_prompt : ""), "all_negative_prompts", all_neg,
                  "seed", (json_int_t)r->seed, "all_seeds", all_seeds, "width", w, "height", h,
                  "sampler_name", sampler, "scheduler", sched, "cfg_scale", sdw_json_num(r->cfg_scale),
                  "steps", r->steps, "batch_size", o->batch_size > 0 ? o->batch_size : 1, "n_iter",
                  o->n_iter > 0 ? o->n_iter : 1, "sd_model_name", sdw_api_model_name(s), "job_id", job->id,
                  "infotexts", infotexts, "interrupted", job->status == SDW_JST_CANCELLED);
    if (info && r->init_image) json_object_set_new(info, "denoising_strength", sdw_json_num(r->strength));
    char *info_s = info ? json_dumps(info, JSON_COMPACT) : NULL;
    json_decref(info);
    json_t *images = json_array();
    for (int i = 0; job->status == SDW_JST_COMPLETE && o->send_images && images && i < job->n_images; i++)
        json_array_append_new(images, sdw_json_base64(job->images[i].png, job->images[i].png_len));
    /* the echoed parameters say what ran, as A1111 fills its defaults in */
    json_t *p = o->params;
    if (p) {
        json_object_set_new(p, "seed", json_integer((json_int_t)r->seed));
        json_object_set_new(p, "steps", json_integer(r->steps));
        json_object_set_new(p, "cfg_scale", sdw_json_num(r->cfg_scale));
        json_object_set_new(p, "width", json_integer(r->width));
        json_object_set_new(p, "height", json_integer(r->height));
        json_object_set_new(p, "sampler_name", json_string(sampler));
        json_object_set_new(p, "scheduler", json_string(sched));
    }
    o->params = NULL;
    json_t *res = json_pack("{s:o,s:o,s:o}", "images", images, "parameters", p ? p : json_object(), "info",
                            sdw_json_str(info_s ? info_s : "{}"));
    free(info_s);
    *status = 200;
    return res;
}

static void fail(sdw_srv *s, h2o_req_t *req, const sdw_api_error *e)
{
    sdw_api_send_error(s, req, SDW_SHAPE_A1111, e);
}

static void params_dispose(void *p)
{
    t2i_opts *o = p;
    json_decref(o->params);
}

/* txt2img and img2img: the same fields and answer, img2img's own fields on top (api_a1111_img2img.c) */
static void handle_generate(sdw_srv *s, h2o_req_t *req, int img2img)
{
    sdw_api_error e;
    json_t *in = sdw_api_read_object(s, req, &e);
    if (!in) {
        fail(s, req, &e);
        return;
    }
    t2i_opts *o = h2o_mem_alloc_shared(&req->pool, sizeof *o, params_dispose);
    memset(o, 0, sizeof *o);
    o->send_images = 1;
    o->batch_size = o->n_iter = 1;
    json_t *out = json_pack("{s:i,s:i}", "width", 512, "height", 512);
    int rc = out ? translate(in, out, o, &e) : sdw_api_error_set(&e, 500, "internal", NULL, "out of memory");
    sdw_a1111_i2i i2i;
    if (rc == 0 && img2img) rc = sdw_a1111_img2img_translate(in, out, &i2i, &e);
    char *body = rc == 0 ? json_dumps(out, JSON_COMPACT) : NULL;
    json_decref(out);
    if (rc != 0 || !body) {
        json_decref(in);
        if (rc == 0) sdw_api_error_set(&e, 500, "internal", NULL, "out of memory");
        fail(s, req, &e);
        return;
    }
    sdw_gen_request jr;
    rc = sdw_validate_job_request(body, strlen(body), &s->limits, &jr, &e);
    free(body);
    if (rc == 0 && img2img && sdw_a1111_img2img_check(&jr, &i2i, &e) != 0) {
        sdw_gen_request_free(&jr);
        rc = -1;
    }
    if (rc != 0) {
        json_decref(in);
        char f[sizeof e.field];
        snprintf(f, sizeof f, "%s", a1_field(e.field));
        snprintf(e.field, sizeof e.field, "%s", f);
        fail(s, req, &e);
        return;
    }
    o->params = in;
    sdw_job *job;
    rc = sdw_api_submit(s, req, &jr, &job, &e);
    sdw_gen_request_free(&jr);
    if (rc != 0) {
        fail(s, req, &e);
        return;
    }
    a1_track(job, sdw_api_key_name(req));
    sdw_hold_json(s, req, job, t2i_done, o);
}

/* ---- the rest ---- */

/* 1 when the query string has name=true (or 1), as A1111's FastAPI bool parameters read it. */
static int query_true(h2o_req_t *req, const char *name)
{
    if (req->query_at == SIZE_MAX) return 0;
    const char *q = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    size_t n = strlen(name);
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *e = amp ? amp : end;
        if ((size_t)(e - q) > n && !memcmp(q, name, n) && q[n] == '=') {
            const char *v = q + n + 1;
            size_t vl = (size_t)(e - v);
            return (vl == 4 && !strncasecmp(v, "true", 4)) || (vl == 1 && *v == '1');
        }
        q = e + 1;
    }
    return 0;
}

static void handle_progress(sdw_srv *s, h2o_req_t *req)
{
    int count;
    sdw_job *j = a1_current(req, &count);
    double progress = 0, eta = 0;
    int step = 0, total = 0;
    char jobname[96] = "", stamp[32] = "0";
    if (j) {
        step = j->step;
        total = j->total ? j->total : j->req.steps;
        progress = total > 0 ? (double)step / total : 0;
        if (step > 0 && j->last_elapsed > 0) eta = j->last_elapsed / step * (total - step);
        snprintf(jobname, sizeof jobname, "task(%s)", j->id);
        time_t t = time(NULL) - (time_t)(sdw_srv_now() - j->t_created);
        strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", gmtime(&t));
    }
    /* A1111's live preview: the latest one (base64 PNG), unless the client asks to skip it */
    json_t *image = j && j->preview && !query_true(req, "skip_current_image")
                        ? sdw_json_base64(j->preview, j->preview_len)
                        : json_null();
    sdw_http_send_json(s, req, 200,
                       json_pack("{s:o,s:o,s:{s:b,s:b,s:b,s:s,s:i,s:s,s:i,s:i,s:i,s:o},s:o,s:n,s:o}",
                                 "progress", sdw_json_num(progress), "eta_relative", sdw_json_num(eta),
                                 "state", "skipped", 0, "interrupted", j && j->cancel_requested,
                                 "stopping_generation", 0, "job", jobname, "job_count", count,
                                 "job_timestamp", stamp, "job_no", 0, "sampling_step", step, "sampling_steps",
                                 total, "queue_position",
                                 j && j->position ? json_integer(j->position) : json_null(), "current_image",
                                 image, "textinfo", "current_task", j ? json_string(jobname) : json_null()));
}

static void handle_interrupt(sdw_srv *s, h2o_req_t *req)
{
    int count;
    sdw_job *j = a1_current(req, &count);
    if (j) sdw_jobs_cancel(s->jobs, j, sdw_srv_now());
    sdw_http_send_json(s, req, 200, json_object());
}

static json_t *samplers_json(void)
{
    json_t *a = json_array();
    for (int i = 0; a && i < sdw_names_count(SDW_NAMES_SAMPLER); i++) {
        const sdw_name_row *r = sdw_names_row(SDW_NAMES_SAMPLER, i);
        json_array_append_new(
            a, json_pack("{s:s,s:[s],s:{}}", "name", r->display, "aliases", r->name, "options"));
    }
    return a;
}

static json_t *schedulers_json(void)
{
    json_t *a = json_pack("[{s:s,s:s,s:n,s:i,s:b}]", "name", "automatic", "label", "Automatic", "aliases",
                          "default_rho", -1, "need_inner_model", 0);
    for (int i = 0; a && i < sdw_names_count(SDW_NAMES_SCHEDULE); i++) {
        const sdw_name_row *r = sdw_names_row(SDW_NAMES_SCHEDULE, i);
        json_array_append_new(a, json_pack("{s:s,s:s,s:n,s:i,s:b}", "name", r->name, "label", r->display,
                                           "aliases", "default_rho", -1, "need_inner_model", 0));
    }
    return a;
}

static json_t *options_json(sdw_srv *s)
{
    return json_pack("{s:s,s:n,s:s,s:s,s:i,s:i,s:s}", "sd_model_checkpoint", sdw_api_model_name(s),
                     "sd_checkpoint_hash", "samples_format", "png", "sd_vae", "Automatic",
                     "CLIP_stop_at_last_layers", 1, "eta_noise_seed_delta", 0, "sd_worker_version",
                     SDW_VERSION);
}

/* Options describe the fixed service: setting one to the value it has is fine, anything else is refused. */
static void handle_set_options(sdw_srv *s, h2o_req_t *req)
{
    sdw_api_error e;
    json_error_t je;
    json_t *in = json_loadb(req->entity.base ? req->entity.base : "", req->entity.len, 0, &je);
    json_t *cur = options_json(s);
    const char *k;
    json_t *v;
    int rc = 0;
    if (!in || !json_is_object(in))
        rc = sdw_api_error_set(&e, 400, "invalid_json", NULL, "the body must be a JSON object");
    else
        json_object_foreach(in, k, v)
        {
            if (!json_equal(v, json_object_get(cur, k))) {
                rc = sdw_api_error_set(&e, 400, "unsupported_value", k,
                                       "option %.32s cannot be changed on this service", k);
                break;
            }
        }
    json_decref(in);
    json_decref(cur);
    if (rc)
        fail(s, req, &e);
    else
        sdw_http_send_json(s, req, 200, json_object());
}

/* GET /sdapi/v1/loras: A1111's shape of the list GET /v1/loras gives */
static void handle_loras(sdw_srv *s, h2o_req_t *req)
{
    sdw_lora_entry *list;
    size_t n;
    char err[512];
    sdw_api_error e;
    if (sdw_lora_list(s->limits.lora_dir, &list, &n, err, sizeof err) != 0) {
        sdw_api_error_set(&e, 500, "internal", NULL, "%s", err);
        fail(s, req, &e);
        return;
    }
    json_t *out = json_array();
    for (size_t i = 0; out && i < n; i++) {
        char path[4400];
        snprintf(path, sizeof path, "%s/%s.safetensors", s->limits.lora_dir, list[i].name);
        if (json_array_append_new(out, json_pack("{s:s,s:s,s:s,s:{}}", "name", list[i].name, "alias",
                                                 list[i].name, "path", path, "metadata"))) {
            json_decref(out);
            out = NULL;
        }
    }
    sdw_lora_list_free(list, n);
    sdw_http_send_json(s, req, 200, out);
}

static int is(h2o_req_t *req, const char *m)
{
    return h2o_memis(req->method.base, req->method.len, m, strlen(m));
}

int sdw_a1111_dispatch(sdw_srv *s, h2o_req_t *req)
{
    static const char pfx[] = "/sdapi/v1/";
    h2o_iovec_t p = req->path_normalized;
    if (p.len < sizeof pfx - 1 || memcmp(p.base, pfx, sizeof pfx - 1)) return 0;
    char r[32];
    size_t rl = p.len - (sizeof pfx - 1);
    if (rl >= sizeof r) rl = sizeof r - 1;
    memcpy(r, p.base + sizeof pfx - 1, rl);
    r[rl] = '\0';
    int get = is(req, "GET") || is(req, "HEAD"), post = is(req, "POST");
    const char *allow = NULL;
    sdw_api_error e;
    if (!strcmp(r, "txt2img") || !strcmp(r, "img2img")) {
        if (post)
            handle_generate(s, req, r[0] == 'i');
        else
            allow = "POST";
    } else if (!strcmp(r, "progress")) {
        if (get)
            handle_progress(s, req);
        else
            allow = "GET";
    } else if (!strcmp(r, "interrupt") || !strcmp(r, "skip")) {
        if (post)
            handle_interrupt(s, req);
        else
            allow = "POST";
    } else if (!strcmp(r, "sd-models")) {
        if (get)
            sdw_http_send_json(s, req, 200,
                               json_pack("[{s:s,s:s,s:n,s:n,s:o,s:n}]", "title", sdw_api_model_name(s),
                                         "model_name", sdw_api_model_name(s), "hash", "sha256", "filename",
                                         sdw_json_str(s->cfg->model_path), "config"));
        else
            allow = "GET";
    } else if (!strcmp(r, "samplers")) {
        if (get)
            sdw_http_send_json(s, req, 200, samplers_json());
        else
            allow = "GET";
    } else if (!strcmp(r, "schedulers")) {
        if (get)
            sdw_http_send_json(s, req, 200, schedulers_json());
        else
            allow = "GET";
    } else if (!strcmp(r, "loras")) {
        if (get)
            handle_loras(s, req);
        else
            allow = "GET";
    } else if (!strcmp(r, "options")) {
        if (get)
            sdw_http_send_json(s, req, 200, options_json(s));
        else if (post)
            handle_set_options(s, req);
        else
            allow = "GET, POST";
    } else {
        sdw_api_error_set(&e, 404, "not_found", NULL,
                          "no such resource in this A1111 API subset (see docs/api.md)");
        fail(s, req, &e);
        return 1;
    }
    if (allow) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow, strlen(allow));
        sdw_api_error_set(&e, 405, "method_not_allowed", NULL, "allowed: %s", allow);
        fail(s, req, &e);
    }
    return 1;
}
