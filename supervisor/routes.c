/* routes.c: the HTTP API: path/method routing, CORS preflight, /health, /ready, /metrics and the
 * /v1/jobs resource (submit, status, stream, image, cancel). Responses are JSON; see docs/api.md. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "log.h"
#include "lora_list.h"
#include "srv.h"

typedef struct {
    h2o_handler_t super;
    sdw_srv *srv;
} route_handler;

/* ---- routing ---- */

static int seg_eq(const char *p, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len == n && !memcmp(p, lit, n);
}

sdw_route sdw_route_match(const char *path, size_t len, const char **id, size_t *idlen)
{
    *id = NULL;
    *idlen = 0;
    if (seg_eq(path, len, "/health")) return SDW_ROUTE_HEALTH;
    if (seg_eq(path, len, "/ready")) return SDW_ROUTE_READY;
    if (seg_eq(path, len, "/metrics")) return SDW_ROUTE_METRICS;
    if (seg_eq(path, len, "/v1/jobs")) return SDW_ROUTE_JOBS;
    if (seg_eq(path, len, "/v1/loras")) return SDW_ROUTE_LORAS;
    static const char pfx[] = "/v1/jobs/";
    size_t pl = sizeof pfx - 1;
    if (len <= pl || memcmp(path, pfx, pl)) return SDW_ROUTE_NONE;
    const char *rest = path + pl;
    size_t rl = len - pl;
    const char *slash = memchr(rest, '/', rl);
    size_t il = slash ? (size_t)(slash - rest) : rl;
    if (il == 0) return SDW_ROUTE_NONE;
    *id = rest;
    *idlen = il;
    if (!slash) return SDW_ROUTE_JOB;
    const char *tail = slash;
    size_t tl = rl - il;
    if (seg_eq(tail, tl, "/stream")) return SDW_ROUTE_JOB_STREAM;
    if (seg_eq(tail, tl, "/image")) return SDW_ROUTE_JOB_IMAGE;
    if (seg_eq(tail, tl, "/preview")) return SDW_ROUTE_JOB_PREVIEW;
    *id = NULL;
    *idlen = 0;
    return SDW_ROUTE_NONE;
}

const char *sdw_route_pattern(sdw_route r)
{
    switch (r) {
    case SDW_ROUTE_HEALTH:
        return "/health";
    case SDW_ROUTE_READY:
        return "/ready";
    case SDW_ROUTE_METRICS:
        return "/metrics";
    case SDW_ROUTE_JOBS:
        return "/v1/jobs";
    case SDW_ROUTE_JOB:
        return "/v1/jobs/{id}";
    case SDW_ROUTE_JOB_STREAM:
        return "/v1/jobs/{id}/stream";
    case SDW_ROUTE_JOB_IMAGE:
        return "/v1/jobs/{id}/image";
    case SDW_ROUTE_JOB_PREVIEW:
        return "/v1/jobs/{id}/preview";
    case SDW_ROUTE_LORAS:
        return "/v1/loras";
    case SDW_ROUTE_NONE:
        break;
    }
    return "other";
}

static const char *allowed_methods(sdw_route r)
{
    switch (r) {
    case SDW_ROUTE_JOBS:
        return "POST, OPTIONS";
    case SDW_ROUTE_JOB:
        return "GET, HEAD, DELETE, OPTIONS";
    case SDW_ROUTE_JOB_STREAM:
        return "GET, OPTIONS";
    case SDW_ROUTE_NONE:
        return "GET, HEAD, POST, OPTIONS"; /* the other surfaces check their own */
    default:
        return "GET, HEAD, OPTIONS";
    }
}

static int method_is(h2o_req_t *req, const char *m)
{
    return h2o_memis(req->method.base, req->method.len, m, strlen(m));
}

static int method_allowed(h2o_req_t *req, sdw_route r)
{
    const char *list = allowed_methods(r);
    size_t ml = req->method.len;
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == ml && !memcmp(p, req->method.base, ml)) return 1;
        if (!e) break;
        p = e + 2;
    }
    return 0;
}

/* ---- small handlers ---- */

static void handle_preflight(sdw_srv *s, h2o_req_t *req, sdw_route r)
{
    sdw_http_prepare(s, req, 204, NULL);
    const char *allow = allowed_methods(r);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow, strlen(allow));
    size_t olen, hlen;
    if (sdw_http_header(req, "origin", &olen) && sdw_http_origin_allowed(s, req)) {
        sdw_http_add_header(req, "access-control-allow-methods", allow);
        const char *hdrs = sdw_http_header(req, "access-control-request-headers", &hlen);
        if (hdrs) {
            h2o_iovec_t v = h2o_strdup(&req->pool, hdrs, hlen);
            h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-allow-headers"),
                                  0, NULL, v.base, v.len);
        } else {
            sdw_http_add_header(req, "access-control-allow-headers",
                                "Content-Type, Accept, Last-Event-ID, Authorization");
        }
        sdw_http_add_header(req, "access-control-max-age", "600");
    }
    req->res.content_length = 0;
    static h2o_generator_t gen = {NULL, NULL};
    h2o_start_response(req, &gen);
    h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
}

/* A load error fit for a one-line reason: its first line, cut at a word with "..." past max-1 bytes. */
static void shorten(char *out, size_t max, const char *msg)
{
    size_t n = strcspn(msg, "\n");
    if (n < max) {
        snprintf(out, max, "%.*s", (int)n, msg);
        return;
    }
    size_t cut = max > 4 ? max - 4 : 0;
    while (cut > max / 2 && msg[cut] != ' ')
        cut--;
    snprintf(out, max, "%.*s...", (int)cut, msg);
}

/* Seconds every worker has been failed without a break, or -1 while one is not (liveness: a pod whose
 * workers cannot come back should be restarted, which only the orchestrator can do). */
static double all_failed_s(const sdw_srv *s)
{
    int n = s->pool ? sdw_pool_size(s->pool) : 0, live = 0;
    double least = -1;
    for (int i = 0; i < n; i++) {
        sdw_slot_info wi;
        if (sdw_pool_slot_info(s->pool, i, &wi) != 0 || wi.retired) continue;
        live++;
        if (wi.state != SDW_WS_FAILED) return -1;
        if (least < 0 || wi.failed_s < least) least = wi.failed_s;
    }
    return live ? least : -1;
}

static void handle_health(sdw_srv *s, h2o_req_t *req)
{
    int limit = s->cfg->health_fail_after_s;
    double failed = limit > 0 ? all_failed_s(s) : -1;
    if (failed >= limit && limit > 0) {
        sdw_http_send_json(s, req, 503,
                           json_pack("{s:s,s:s,s:f}", "status", "failed", "reason",
                                     "every worker has failed for longer than workers.health_fail_after_s",
                                     "failed_s", round(failed * 10) / 10));
        return;
    }
    /* the probe path: one document kept for the process (the event loop is single-threaded), only its
     * uptime updated, so a probe costs no allocation beyond the dump */
    static json_t *doc, *uptime;
    if (!doc) {
        uptime = json_real(0);
        doc = json_pack("{s:s,s:o,s:s}", "status", "ok", "uptime_s", uptime, "version", SDW_VERSION);
    }
    if (doc)
        json_real_set(uptime, round((sdw_srv_now() - s->started_at) * 1e3) / 1e3); /* ms are plenty here */
    sdw_http_send_json(s, req, 200, json_incref(doc));
}

static void handle_ready(sdw_srv *s, h2o_req_t *req)
{
    int ready = 0, busy = 0, loading = 0;
    sdw_srv_worker_counts(s, &ready, &busy, &loading);
    int can_serve = s->phase == SDW_SRV_RUNNING && ready + busy > 0;
    int n = s->pool ? sdw_pool_size(s->pool) : 0;
    json_t *workers = json_array();
    char first_error[160] = "";
    for (int i = 0; workers && i < n; i++) {
        sdw_slot_info wi;
        if (sdw_pool_slot_info(s->pool, i, &wi) != 0 || wi.retired) continue;
        if (!first_error[0] && wi.state == SDW_WS_FAILED && wi.last_error[0])
            shorten(first_error, sizeof first_error, wi.last_error);
        json_t *w = json_pack("{s:o,s:s,s:i,s:I,s:o,s:o,s:o,s:o}", "device", sdw_json_str(wi.device), "state",
                              sdw_pool_state_name(wi.state), "restarts", wi.restarts, "jobs_served",
                              (json_int_t)wi.jobs_served, "model", sdw_json_str(wi.arch[0] ? wi.arch : NULL),
                              "arch", sdw_json_str(wi.arch[0] ? wi.arch : NULL), "native_size",
                              wi.native_size > 0 ? json_integer(wi.native_size) : json_null(), "bf16",
                              /* known from the worker's ready frame, like arch */
                              wi.arch[0] ? json_boolean(wi.bf16) : json_null());
        /* a GPU worker's device memory, as it last reported (at ready and after each job); absent for CPUs */
        if (w && wi.has_vram &&
            (json_object_set_new(w, "vram_free_bytes", json_integer((json_int_t)wi.vram_free_bytes)) ||
             json_object_set_new(w, "vram_total_bytes", json_integer((json_int_t)wi.vram_total_bytes)))) {
            json_decref(w);
            w = NULL;
        }
        if (json_array_append_new(workers, w)) {
            json_decref(workers);
            workers = NULL;
        }
    }
    int native = sdw_srv_native_size(s);
    json_t *o = json_pack("{s:b,s:o,s:o,s:{s:i,s:i,s:i}}", "ready", can_serve, "native_size",
                          native > 0 ? json_integer(native) : json_null(), "workers", workers, "queue",
                          "queued", sdw_jobs_queued(s->jobs), "running", sdw_jobs_running(s->jobs),
                          "capacity", s->cfg->queue_capacity);
    if (o && !can_serve) {
        char reason[224];
        if (s->phase != SDW_SRV_RUNNING)
            snprintf(reason, sizeof reason, "shutting down");
        else if (!s->pool || !sdw_pool_can_ever_serve(s->pool))
            snprintf(reason, sizeof reason, "no worker can serve: %s",
                     first_error[0] ? first_error : "every worker failed");
        else
            snprintf(reason, sizeof reason, "no worker ready yet (%d loading, %d restarting)", loading,
                     n - ready - busy - loading);
        if (json_object_set_new(o, "reason", json_string(reason))) {
            json_decref(o);
            o = NULL;
        }
    }
    sdw_http_send_json(s, req, can_serve ? 200 : 503, o);
}

static void handle_metrics(sdw_srv *s, h2o_req_t *req)
{
    int n = s->pool ? sdw_pool_size(s->pool) : 0;
    sdw_metrics_worker *ws = h2o_mem_alloc_pool(&req->pool, sizeof *ws * (size_t)(n > 0 ? n : 1));
    sdw_slot_info *wi = h2o_mem_alloc_pool(&req->pool, sizeof *wi * (size_t)(n > 0 ? n : 1));
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (sdw_pool_slot_info(s->pool, i, &wi[m]) != 0 || wi[m].retired || wi[m].retiring)
            continue; /* a reload's outgoing workers would repeat their device's labels */
        ws[m].device = wi[m].device;
        ws[m].state = sdw_pool_state_name(wi[m].state);
        ws[m].restarts = wi[m].restarts;
        ws[m].jobs_served = wi[m].jobs_served;
        ws[m].has_vram = wi[m].has_vram;
        ws[m].vram_free_bytes = wi[m].vram_free_bytes;
        ws[m].vram_total_bytes = wi[m].vram_total_bytes;
        m++;
    }
    n = m;
    size_t len = 0;
    char *text = sdw_metrics_render(s->metrics, sdw_jobs_queued(s->jobs), sdw_jobs_running(s->jobs), ws, n,
                                    sdw_srv_now() - s->started_at, &len);
    if (!text) {
        sdw_http_errorf(s, req, 500, "internal", NULL, "could not render the metrics");
        return;
    }
    sdw_http_send(s, req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

/* GET /v1/loras: what a job's "loras" may name */
static void handle_loras(sdw_srv *s, h2o_req_t *req)
{
    sdw_lora_entry *list;
    size_t n;
    char err[512];
    if (sdw_lora_list(s->limits.lora_dir, &list, &n, err, sizeof err) != 0) {
        sdw_http_errorf(s, req, 500, "internal", NULL, "%s", err);
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; data && i < n; i++)
        if (json_array_append_new(data, json_pack("{s:s,s:I}", "name", list[i].name, "size_bytes",
                                                  (json_int_t)list[i].size_bytes))) {
            json_decref(data);
            data = NULL;
        }
    sdw_lora_list_free(list, n);
    sdw_http_send_json(s, req, 200, json_pack("{s:o}", "data", data));
}

/* ---- jobs ---- */

static int accepts_event_stream(h2o_req_t *req)
{
    size_t len;
    const char *a = sdw_http_header(req, "accept", &len);
    static const char want[] = "text/event-stream";
    for (size_t i = 0; a && i + sizeof want - 1 <= len; i++)
        if (!strncasecmp(a + i, want, sizeof want - 1)) return 1;
    return 0;
}

static void reject(sdw_srv *s, h2o_req_t *req, const sdw_api_error *e, const char *reason)
{
    sdw_metrics_job_rejected(s->metrics, reason);
    sdw_http_send_error(s, req, e);
}

static void handle_submit(sdw_srv *s, h2o_req_t *req)
{
    sdw_api_error e;
    if (s->phase != SDW_SRV_RUNNING) {
        sdw_api_error_set(&e, 503, "shutting_down", NULL,
                          "the service is shutting down and takes no new jobs");
        reject(s, req, &e, "shutting_down");
        return;
    }
    if (!sdw_pool_can_ever_serve(s->pool)) {
        sdw_api_error_set(&e, 503, "unavailable", NULL,
                          "no worker can serve: every worker failed (see the service log)");
        reject(s, req, &e, "unavailable");
        return;
    }
    size_t ctlen;
    const char *ct = sdw_http_header(req, "content-type", &ctlen);
    if (sdw_validate_content_type(ct, ctlen, &e) != 0) {
        reject(s, req, &e, "invalid");
        return;
    }
    sdw_gen_request jr;
    sdw_validate_limits lim = sdw_srv_job_limits(s);
    if (sdw_validate_job_request(req->entity.base, req->entity.len, &lim, &jr, &e) != 0) {
        reject(s, req, &e, "invalid");
        return;
    }
    sdw_job *job;
    int rc = sdw_api_submit(s, req, &jr, &job, &e); /* counts its own rejections */
    sdw_gen_request_free(&jr);
    if (rc != 0) {
        sdw_http_send_error(s, req, &e);
        return;
    }
    if (accepts_event_stream(req)) {
        sdw_sse_start(s, req, job, sdw_job_sse_submitted(job));
        return;
    }
    char loc[160];
    snprintf(loc, sizeof loc, "/v1/jobs/%s", job->id);
    sdw_http_add_header(req, "location", loc);
    char sse[160];
    snprintf(sse, sizeof sse, "/v1/jobs/%s/stream", job->id);
    sdw_http_send_json(s, req, 202,
                       json_pack("{s:s,s:s,s:s,s:i,s:s,s:I}", "job_id", job->id, "sse_url", sse, "status_url",
                                 loc, "queue_position", job->position, "status",
                                 sdw_job_status_name(job->status), "seed", (json_int_t)job->req.seed));
}

/* Resolves {id}; answers 404/410 itself and returns NULL when there is no job to work on. */
static sdw_job *find_job(sdw_srv *s, h2o_req_t *req, const char *id, size_t idlen)
{
    sdw_job *job;
    switch (sdw_jobs_find(s->jobs, id, idlen, &job)) {
    case SDW_JOBS_FOUND:
        return job;
    case SDW_JOBS_GONE:
        sdw_http_errorf(s, req, 410, "gone", NULL,
                        "job %.*s ended more than %d s ago and its result was discarded",
                        (int)(idlen > 80 ? 80 : idlen), id, s->cfg->result_ttl_s);
        return NULL;
    case SDW_JOBS_UNKNOWN:
        break;
    }
    sdw_http_errorf(s, req, 404, "not_found", NULL, "no job with id '%.*s'", (int)(idlen > 80 ? 80 : idlen),
                    id);
    return NULL;
}

/* The image index of GET /v1/jobs/{id}/image?index=I (0 without one); -1 after answering 400 for a value
 * that is not a decimal integer 0..999. Other query parameters are ignored. */
static int image_index(sdw_srv *s, h2o_req_t *req)
{
    if (req->query_at == SIZE_MAX) return 0;
    const char *q = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *pe = amp ? amp : end;
        if (pe - q >= 6 && !memcmp(q, "index=", 6)) {
            const char *v = q + 6;
            int idx = 0, digits = 0;
            for (; v < pe && *v >= '0' && *v <= '9' && digits < 4; v++, digits++)
                idx = idx * 10 + (*v - '0');
            if (!digits || v != pe || idx > 999) {
                sdw_http_errorf(s, req, 400, "invalid_type", "index",
                                "index must be an integer 0..999, got '%.*s'",
                                (int)(pe - q - 6 > 40 ? 40 : pe - q - 6), q + 6);
                return -1;
            }
            return idx;
        }
        q = pe + 1;
    }
    return 0;
}

static void send_job(sdw_srv *s, h2o_req_t *req, int status, const sdw_job *job)
{
    sdw_http_send_json(s, req, status, sdw_job_json(s, job));
}

static void handle_job(sdw_srv *s, h2o_req_t *req, sdw_route r, const char *id, size_t idlen)
{
    sdw_job *job = find_job(s, req, id, idlen);
    if (!job) return;
    if (r == SDW_ROUTE_JOB_STREAM) {
        sdw_sse_start(s, req, job, NULL);
        return;
    }
    if (r == SDW_ROUTE_JOB_IMAGE) {
        if (job->status != SDW_JST_COMPLETE) {
            sdw_http_errorf(s, req, 409, "not_complete", NULL,
                            "job %s is %s; the image exists once it is complete", job->id,
                            sdw_job_status_name(job->status));
            return;
        }
        int idx = image_index(s, req);
        if (idx < 0) return;
        if (idx >= job->n_images) {
            sdw_http_errorf(s, req, 404, "not_found", "index", "job %s has %d image(s); index %d is not one",
                            job->id, job->n_images, idx);
            return;
        }
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                       H2O_STRLIT("private, max-age=60"));
        sdw_http_send(s, req, 200, "image/png", (const char *)job->images[idx].png, job->images[idx].png_len);
        return;
    }
    if (r == SDW_ROUTE_JOB_PREVIEW) {
        /* the latest live preview while the job runs; a poller's alternative to the event stream */
        if (!job->preview) {
            sdw_http_errorf(s, req, 404, "no_preview", NULL, "job %s has no preview %s", job->id,
                            job->status == SDW_JST_RUNNING ? "yet" : "(it is not running)");
            return;
        }
        char step[16];
        snprintf(step, sizeof step, "%d", job->preview_step);
        sdw_http_add_header(req, "x-preview-step", step);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
        sdw_http_send(s, req, 200, "image/png", (const char *)job->preview, job->preview_len);
        return;
    }
    if (method_is(req, "DELETE")) {
        int rc = sdw_jobs_cancel(s->jobs, job, sdw_srv_now());
        /* 202 while the worker has yet to reach its next step boundary */
        send_job(s, req, rc == 1 && job->status == SDW_JST_RUNNING ? 202 : 200, job);
        return;
    }
    send_job(s, req, 200, job);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    sdw_srv *s = ((route_handler *)self)->srv;
    const char *id;
    size_t idlen;
    sdw_route r = sdw_route_match(req->path_normalized.base, req->path_normalized.len, &id, &idlen);
    int preflight = method_is(req, "OPTIONS");
    int page = h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/")) ||
               h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/index.html"));
    /* probes, CORS preflights (browsers send them without credentials) and the page itself need no key */
    int open = preflight || page || r == SDW_ROUTE_HEALTH || r == SDW_ROUTE_READY ||
               (r == SDW_ROUTE_METRICS && !s->cfg->metrics_needs_key);
    if (sdw_api_gate(s, req, !open) != 0) return 0;
    if (r == SDW_ROUTE_NONE && !preflight &&
        (sdw_webui_dispatch(s, req) || sdw_openai_dispatch(s, req) || sdw_a1111_dispatch(s, req)))
        return 0;
    if (r == SDW_ROUTE_NONE && preflight &&
        sdw_api_shape(req->path_normalized.base, req->path_normalized.len)) {
        handle_preflight(s, req, r);
        return 0;
    }
    if (r == SDW_ROUTE_NONE || (r == SDW_ROUTE_METRICS && !s->cfg->metrics)) {
        sdw_http_errorf(s, req, 404, "not_found", NULL, "no such resource: %.*s",
                        (int)(req->path_normalized.len > 100 ? 100 : req->path_normalized.len),
                        req->path_normalized.base);
        return 0;
    }
    if (method_is(req, "OPTIONS")) {
        handle_preflight(s, req, r);
        return 0;
    }
    if (!method_allowed(req, r)) {
        const char *allow = allowed_methods(r);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow, strlen(allow));
        sdw_http_errorf(s, req, 405, "method_not_allowed", NULL, "%.*s is not allowed on %s; allowed: %s",
                        (int)(req->method.len > 16 ? 16 : req->method.len), req->method.base,
                        sdw_route_pattern(r), allow);
        return 0;
    }
    switch (r) {
    case SDW_ROUTE_HEALTH:
        handle_health(s, req);
        break;
    case SDW_ROUTE_READY:
        handle_ready(s, req);
        break;
    case SDW_ROUTE_METRICS:
        handle_metrics(s, req);
        break;
    case SDW_ROUTE_JOBS:
        handle_submit(s, req);
        break;
    case SDW_ROUTE_LORAS:
        handle_loras(s, req);
        break;
    default:
        handle_job(s, req, r, id, idlen);
        break;
    }
    return 0;
}

void sdw_routes_register(sdw_srv *s, h2o_pathconf_t *pathconf)
{
    route_handler *h = (route_handler *)h2o_create_handler(pathconf, sizeof *h);
    h->super.on_req = on_req;
    h->srv = s;
}
