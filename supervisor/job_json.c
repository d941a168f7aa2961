/* job_json.c: how a job is shown: the GET /v1/jobs/{id} document and the SSE event payloads
 * (queued, started, progress, and the terminal complete/error/cancelled built once per job). */
#include <stdio.h>
#include <string.h>

#include "srv.h"

static void urls(sdw_jw *w, const sdw_job *job)
{
    char u[160];
    snprintf(u, sizeof u, "/v1/jobs/%s/stream", job->id);
    sdw_jw_kstr(w, "sse_url", u);
    snprintf(u, sizeof u, "/v1/jobs/%s", job->id);
    sdw_jw_kstr(w, "status_url", u);
}

void sdw_job_json_timings(sdw_jw *w, const sdw_job *job)
{
    sdw_jw_obj_open(w);
    if (job->t_dispatched > 0) {
        sdw_jw_knum(w, "queued_s", job->t_dispatched - job->t_created);
    }
    if (job->status == SDW_JST_COMPLETE) {
        sdw_jw_knum(w, "encode_s", job->w_encode);
        sdw_jw_knum(w, "sample_s", job->w_sample);
        sdw_jw_knum(w, "decode_s", job->w_decode);
        sdw_jw_knum(w, "worker_s", job->w_total);
    }
    if (job->t_ended > 0) {
        sdw_jw_knum(w, "total_s", job->t_ended - job->t_created);
    }
    sdw_jw_obj_close(w);
}

void sdw_job_json(sdw_srv *s, sdw_jw *w, const sdw_job *job)
{
    sdw_jw_obj_open(w);
    sdw_jw_kstr(w, "job_id", job->id);
    sdw_jw_kstr(w, "status", sdw_job_status_name(job->status));
    sdw_jw_kint(w, "position", job->position);
    sdw_jw_kint(w, "step", job->step);
    sdw_jw_kint(w, "total", job->total);
    sdw_jw_ku64(w, "seed", job->req.seed);
    sdw_jw_key(w, "device");
    if (job->status == SDW_JST_RUNNING && job->slot >= 0 && s->pool)
        sdw_jw_str(w, sdw_pool_device_name(s->pool, job->slot));
    else
        sdw_jw_null(w);
    sdw_jw_kbool(w, "cancel_requested", job->cancel_requested);
    sdw_jw_kbool(w, "retried", job->retried);

    sdw_jw_key(w, "params");
    sdw_jw_obj_open(w);
    sdw_jw_kstr(w, "prompt", job->req.prompt);
    sdw_jw_kstr(w, "negative_prompt", job->req.negative_prompt);
    sdw_jw_kint(w, "steps", job->req.steps);
    sdw_jw_knum(w, "guidance_scale", job->req.cfg_scale);
    sdw_jw_ku64(w, "seed", job->req.seed);
    sdw_jw_kint(w, "width", job->req.width);
    sdw_jw_kint(w, "height", job->req.height);
    sdw_jw_kstr(w, "sampler", sdw_sampler_name(job->req.sampler));
    sdw_jw_kstr(w, "schedule", sdw_schedule_name(job->req.schedule));
    sdw_jw_obj_close(w);

    sdw_jw_key(w, "timings");
    sdw_job_json_timings(w, job);
    sdw_jw_key(w, "error");
    if (job->status == SDW_JST_ERROR) {
        sdw_jw_obj_open(w);
        sdw_jw_kstr(w, "code", job->err_code);
        sdw_jw_kstr(w, "message", job->err_message);
        sdw_jw_obj_close(w);
    } else {
        sdw_jw_null(w);
    }
    urls(w, job);
    sdw_jw_key(w, "image_url");
    if (job->status == SDW_JST_COMPLETE) {
        char u[160];
        snprintf(u, sizeof u, "/v1/jobs/%s/image", job->id);
        sdw_jw_str(w, u);
    } else {
        sdw_jw_null(w);
    }
    sdw_jw_obj_close(w);
}

static void event_head(sdw_jw *w, const char *name)
{
    sdw_jw_raw(w, "event: ", 7);
    sdw_jw_raw(w, name, strlen(name));
    sdw_jw_raw(w, "\ndata: ", 7);
}

static sdw_rcbuf *event_finish(sdw_jw *w)
{
    sdw_jw_raw(w, "\n\n", 2);
    sdw_rcbuf *b = sdw_jw_to_rcbuf(w);
    sdw_jw_free(w);
    return b;
}

sdw_rcbuf *sdw_job_sse_event(sdw_srv *s, const sdw_job *job, sdw_job_event ev)
{
    sdw_jw w;
    sdw_jw_init(&w);
    switch (ev) {
    case SDW_JEV_QUEUED:
        event_head(&w, "queued");
        sdw_jw_obj_open(&w);
        sdw_jw_kstr(&w, "job_id", job->id);
        sdw_jw_kint(&w, "position", job->position);
        sdw_jw_obj_close(&w);
        break;
    case SDW_JEV_STARTED:
        event_head(&w, "started");
        sdw_jw_obj_open(&w);
        sdw_jw_kstr(&w, "job_id", job->id);
        sdw_jw_kstr(&w, "device", job->slot >= 0 && s->pool ? sdw_pool_device_name(s->pool, job->slot) : NULL);
        sdw_jw_kint(&w, "total", job->total);
        sdw_jw_kbool(&w, "retried", job->retried);
        sdw_jw_obj_close(&w);
        break;
    case SDW_JEV_PROGRESS:
        event_head(&w, "progress");
        sdw_jw_obj_open(&w);
        sdw_jw_kint(&w, "step", job->step);
        sdw_jw_kint(&w, "total", job->total);
        sdw_jw_knum(&w, "elapsed_s", job->last_elapsed);
        sdw_jw_obj_close(&w);
        break;
    default:
        sdw_jw_free(&w);
        return NULL;
    }
    return event_finish(&w);
}

sdw_rcbuf *sdw_job_sse_terminal(sdw_job *job)
{
    if (!job->terminal_sse) {
        sdw_jw w;
        sdw_jw_init(&w);
        switch (job->status) {
        case SDW_JST_COMPLETE:
            event_head(&w, "complete");
            sdw_jw_obj_open(&w);
            sdw_jw_kstr(&w, "job_id", job->id);
            sdw_jw_key(&w, "image");
            sdw_jw_base64(&w, job->png, job->png_len);
            sdw_jw_kstr(&w, "format", "png");
            sdw_jw_ku64(&w, "seed", job->req.seed);
            sdw_jw_kint(&w, "width", job->out_width);
            sdw_jw_kint(&w, "height", job->out_height);
            sdw_jw_key(&w, "timings");
            sdw_job_json_timings(&w, job);
            sdw_jw_obj_close(&w);
            break;
        case SDW_JST_ERROR:
            event_head(&w, "error");
            sdw_jw_obj_open(&w);
            sdw_jw_kstr(&w, "job_id", job->id);
            sdw_jw_kstr(&w, "code", job->err_code);
            sdw_jw_kstr(&w, "message", job->err_message);
            sdw_jw_obj_close(&w);
            break;
        case SDW_JST_CANCELLED:
            event_head(&w, "cancelled");
            sdw_jw_obj_open(&w);
            sdw_jw_kstr(&w, "job_id", job->id);
            sdw_jw_obj_close(&w);
            break;
        default:
            sdw_jw_free(&w);
            return NULL;
        }
        job->terminal_sse = event_finish(&w);
        if (!job->terminal_sse)
            return NULL;
    }
    return sdw_rcbuf_retain(job->terminal_sse);
}

sdw_rcbuf *sdw_job_sse_submitted(const sdw_job *job)
{
    sdw_jw w;
    sdw_jw_init(&w);
    event_head(&w, "queued");
    sdw_jw_obj_open(&w);
    sdw_jw_kstr(&w, "job_id", job->id);
    sdw_jw_kint(&w, "position", job->position);
    sdw_jw_ku64(&w, "seed", job->req.seed);
    urls(&w, job);
    sdw_jw_obj_close(&w);
    return event_finish(&w);
}
