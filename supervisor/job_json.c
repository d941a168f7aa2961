/* job_json.c: how a job is shown: the GET /v1/jobs/{id} document and the SSE event payloads
 * (queued, started, progress, and the terminal complete/error/cancelled built once per job). */
#include <stdio.h>
#include <string.h>

#include "srv.h"

/* Seeds are at most 2^63-1 (validate.c and the random draw in jobs.c keep them there), so they fit
 * jansson's signed integers. */
static json_t *seed_json(uint64_t seed)
{
    return json_integer((json_int_t)seed);
}

/* Adds sse_url and status_url; 0, or -1 when out of memory. */
static int add_urls(json_t *o, const sdw_job *job)
{
    char u[160];
    snprintf(u, sizeof u, "/v1/jobs/%s/stream", job->id);
    int rc = json_object_set_new(o, "sse_url", json_string(u));
    snprintf(u, sizeof u, "/v1/jobs/%s", job->id);
    return rc | json_object_set_new(o, "status_url", json_string(u));
}

json_t *sdw_job_json_timings(const sdw_job *job)
{
    json_t *t = json_object();
    if (!t) return NULL;
    int rc = 0;
    if (job->t_dispatched > 0)
        rc |= json_object_set_new(t, "queued_s", sdw_json_num(job->t_dispatched - job->t_created));
    if (job->status == SDW_JST_COMPLETE) {
        rc |= json_object_set_new(t, "encode_s", sdw_json_num(job->w_encode));
        rc |= json_object_set_new(t, "sample_s", sdw_json_num(job->w_sample));
        rc |= json_object_set_new(t, "decode_s", sdw_json_num(job->w_decode));
        rc |= json_object_set_new(t, "worker_s", sdw_json_num(job->w_total));
    }
    if (job->t_ended > 0)
        rc |= json_object_set_new(t, "total_s", sdw_json_num(job->t_ended - job->t_created));
    if (rc) {
        json_decref(t);
        return NULL;
    }
    return t;
}

/* 0 = the model's native size, not known until a worker takes the job */
static json_t *size_json(int px)
{
    return px > 0 ? json_integer(px) : json_null();
}

/* SDXL's micro-conditioning, in the params only when the request set it (as the request spelled it) */
static int add_sdxl_params(json_t *params, const sdw_gen_request *r)
{
    if (!params) return -1;
    if ((r->orig_width || r->orig_height) &&
        json_object_set_new(params, "original_size", json_pack("[i,i]", r->orig_width, r->orig_height)))
        return -1;
    if ((r->crop_top || r->crop_left) &&
        json_object_set_new(params, "crops_coords_top_left", json_pack("[i,i]", r->crop_top, r->crop_left)))
        return -1;
    if ((r->target_width || r->target_height) &&
        json_object_set_new(params, "target_size", json_pack("[i,i]", r->target_width, r->target_height)))
        return -1;
    return 0;
}

/* What a complete job ran in ("fp32" | "bf16", the worker's word: bf16 only where the CPU has it); null
 * before the job completes. */
static json_t *precision_json(const sdw_job *job)
{
    return job->status == SDW_JST_COMPLETE ? sdw_json_str(sdw_precision_name(job->out_precision))
                                           : json_null();
}

/* The images of a complete job (an empty list before): index, seed, url, width, height, and with_png the
 * base64 PNG of every image but the first (which the complete event carries as its top-level image). */
static json_t *images_json(const sdw_job *job, int with_png)
{
    json_t *a = json_array();
    for (int i = 0; a && job->status == SDW_JST_COMPLETE && i < job->n_images; i++) {
        char url[180];
        snprintf(url, sizeof url, "/v1/jobs/%s/image?index=%d", job->id, i);
        json_t *e = json_pack("{s:i,s:o,s:s,s:i,s:i}", "index", i, "seed", seed_json(job->images[i].seed),
                              "url", url, "width", job->out_width, "height", job->out_height);
        if (e && with_png && i > 0 &&
            json_object_set_new(e, "image", sdw_json_base64(job->images[i].png, job->images[i].png_len))) {
            json_decref(e);
            e = NULL;
        }
        if (!e || json_array_append_new(a, e)) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

json_t *sdw_job_json(sdw_srv *s, const sdw_job *job)
{
    sdw_slot_info wi;
    const char *device = job->status == SDW_JST_RUNNING && job->slot >= 0 && s->pool &&
                                 sdw_pool_slot_info(s->pool, job->slot, &wi) == 0
                             ? wi.device
                             : NULL;
    json_t *error = job->status == SDW_JST_ERROR ? json_pack("{s:o,s:o}", "code", sdw_json_str(job->err_code),
                                                             "message", sdw_json_str(job->err_message))
                                                 : json_null();
    char image[160];
    snprintf(image, sizeof image, "/v1/jobs/%s/image", job->id);
    json_t *o = json_pack(
        "{s:s,s:s,s:i,s:i,s:i,s:o,s:o,s:b,s:b,"
        "s:{s:o,s:o,s:i,s:o,s:o,s:o,s:o,s:s,s:s},s:o,s:o}",
        "job_id", job->id, "status", sdw_job_status_name(job->status), "position", job->position, "step",
        job->step, "total", job->total, "seed", seed_json(job->req.seed), "device", sdw_json_str(device),
        "cancel_requested", job->cancel_requested, "retried", job->retried, "params", "prompt",
        sdw_json_str(job->req.prompt), "negative_prompt", sdw_json_str(job->req.negative_prompt), "steps",
        job->req.steps, "guidance_scale", sdw_json_num(job->req.cfg_scale), "seed", seed_json(job->req.seed),
        "width", size_json(job->req.width), "height", size_json(job->req.height), "sampler",
        sdw_sampler_name(job->req.sampler), "schedule", sdw_schedule_name(job->req.schedule), "timings",
        sdw_job_json_timings(job), "error", error);
    if (o && (add_urls(o, job) ||
              json_object_set_new(o, "image_url",
                                  job->status == SDW_JST_COMPLETE ? json_string(image) : json_null()) ||
              json_object_set_new(json_object_get(o, "params"), "n", json_integer(job->req.n)) ||
              json_object_set_new(json_object_get(o, "params"), "precision",
                                  sdw_json_str(sdw_precision_name(job->req.precision))) ||
              json_object_set_new(o, "precision", precision_json(job)) ||
              json_object_set_new(o, "images", images_json(job, 0)) ||
              add_sdxl_params(json_object_get(o, "params"), &job->req))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The SSE frame around a payload: "event: NAME\ndata: JSON\n\n". */
static sdw_rcbuf *event(const char *name, json_t *data)
{
    char head[48];
    snprintf(head, sizeof head, "event: %s\ndata: ", name);
    return sdw_json_to_rcbuf(data, head, "\n\n");
}

int sdw_job_has_step_preview(const sdw_job *job)
{
    return job->preview && job->preview_step == job->step && job->step > 0;
}

sdw_rcbuf *sdw_job_sse_event(sdw_srv *s, const sdw_job *job, sdw_job_event ev)
{
    switch (ev) {
    case SDW_JEV_QUEUED:
        return event("queued", json_pack("{s:s,s:i}", "job_id", job->id, "position", job->position));
    case SDW_JEV_STARTED: {
        sdw_slot_info wi;
        return event("started",
                     json_pack("{s:s,s:o,s:i,s:b}", "job_id", job->id, "device",
                               sdw_json_str(job->slot >= 0 && s->pool &&
                                                    sdw_pool_slot_info(s->pool, job->slot, &wi) == 0
                                                ? wi.device
                                                : NULL),
                               "total", job->total, "retried", job->retried));
    }
    case SDW_JEV_PROGRESS: {
        json_t *o = json_pack("{s:i,s:i,s:o}", "step", job->step, "total", job->total, "elapsed_s",
                              sdw_json_num(job->last_elapsed));
        /* the live preview made at this very step, if any (a late reader mid-way gets none) */
        if (o && sdw_job_has_step_preview(job) &&
            json_object_set_new(o, "preview", sdw_json_base64(job->preview, job->preview_len))) {
            json_decref(o);
            o = NULL;
        }
        return event("progress", o);
    }
    default:
        return NULL;
    }
}

sdw_rcbuf *sdw_job_sse_terminal(sdw_job *job)
{
    if (!job->terminal_sse) {
        switch (job->status) {
        case SDW_JST_COMPLETE:
            job->terminal_sse =
                event("complete", json_pack("{s:s,s:o,s:s,s:o,s:i,s:i,s:o,s:o,s:o}", "job_id", job->id,
                                            "image", sdw_json_base64(job->png, job->png_len), "format", "png",
                                            "seed", seed_json(job->req.seed), "width", job->out_width,
                                            "height", job->out_height, "timings", sdw_job_json_timings(job),
                                            "images", images_json(job, 1), "precision", precision_json(job)));
            break;
        case SDW_JST_ERROR:
            job->terminal_sse = event("error", json_pack("{s:s,s:o,s:o}", "job_id", job->id, "code",
                                                         sdw_json_str(job->err_code), "message",
                                                         sdw_json_str(job->err_message)));
            break;
        case SDW_JST_CANCELLED:
            job->terminal_sse = event("cancelled", json_pack("{s:s}", "job_id", job->id));
            break;
        default:
            return NULL;
        }
        if (!job->terminal_sse) return NULL;
    }
    return sdw_rcbuf_retain(job->terminal_sse);
}

sdw_rcbuf *sdw_job_sse_submitted(const sdw_job *job)
{
    json_t *o = json_pack("{s:s,s:i,s:o}", "job_id", job->id, "position", job->position, "seed",
                          seed_json(job->req.seed));
    if (o && add_urls(o, job)) {
        json_decref(o);
        o = NULL;
    }
    return event("queued", o);
}
