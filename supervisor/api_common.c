/* api_common.c: the parts the OpenAI, AUTOMATIC1111 and web surfaces share with /v1/jobs: the request
 * gate, one submit path, error shapes, and responses held until their job ends (see api.h). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "auth.h"
#include "log.h"

#define ENV_KEY "SDW_KEY_NAME"

static int has_prefix(const char *p, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len >= n && !memcmp(p, lit, n);
}

sdw_err_shape sdw_api_shape(const char *path, size_t len)
{
    if (has_prefix(path, len, "/v1/images") || has_prefix(path, len, "/v1/models")) return SDW_SHAPE_OPENAI;
    if (has_prefix(path, len, "/sdapi/")) return SDW_SHAPE_A1111;
    return SDW_SHAPE_NATIVE;
}

const char *sdw_api_route_pattern(const char *path, size_t len)
{
    static const char *const known[] = {"/",
                                        "/index.html",
                                        "/v1/images/generations",
                                        "/v1/images/edits",
                                        "/v1/images/variations",
                                        "/v1/models",
                                        "/sdapi/v1/txt2img",
                                        "/sdapi/v1/img2img",
                                        "/sdapi/v1/progress",
                                        "/sdapi/v1/interrupt",
                                        "/sdapi/v1/skip",
                                        "/sdapi/v1/sd-models",
                                        "/sdapi/v1/samplers",
                                        "/sdapi/v1/schedulers",
                                        "/sdapi/v1/loras",
                                        "/sdapi/v1/options",
                                        NULL};
    for (int i = 0; known[i]; i++)
        if (h2o_memis(path, len, known[i], strlen(known[i]))) return known[i];
    if (has_prefix(path, len, "/v1/models/")) return "/v1/models/{id}";
    return "other";
}

/* OpenAI's SDKs pick their exception class from the status; type mirrors it for clients that read it. */
static const char *openai_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 429:
        return "rate_limit_error";
    }
    return status >= 500 ? "server_error" : "invalid_request_error";
}

void sdw_api_send_error(sdw_srv *s, h2o_req_t *req, sdw_err_shape shape, const sdw_api_error *e)
{
    const char *field = e->field[0] ? e->field : NULL;
    switch (shape) {
    case SDW_SHAPE_OPENAI:
        sdw_http_send_json(s, req, e->status,
                           json_pack("{s:{s:o,s:s,s:o,s:o}}", "error", "message", sdw_json_str(e->message),
                                     "type", openai_type(e->status), "param", sdw_json_str(field), "code",
                                     sdw_json_str(e->code)));
        return;
    case SDW_SHAPE_A1111:
        sdw_http_send_json(s, req, e->status,
                           json_pack("{s:o,s:o,s:s,s:o,s:o}", "error", sdw_json_str(e->code), "detail",
                                     sdw_json_str(e->message), "body", "", "errors", sdw_json_str(field),
                                     "field", sdw_json_str(field)));
        return;
    case SDW_SHAPE_NATIVE:
        break;
    }
    sdw_http_send_error(s, req, e);
}

static void gate_error(sdw_srv *s, h2o_req_t *req, int status, const char *code, const char *msg)
{
    sdw_api_error e;
    sdw_api_error_set(&e, status, code, NULL, "%s", msg);
    sdw_api_send_error(s, req, sdw_api_shape(req->path_normalized.base, req->path_normalized.len), &e);
}

static int listener_is_loopback(const sdw_config *cfg)
{
    const char *h = cfg->listen_host ? cfg->listen_host : "";
    return !strncmp(h, "127.", 4) || !strcmp(h, "::1") || !strcmp(h, "[::1]") || !strcasecmp(h, "localhost");
}

static int host_ok(sdw_srv *s, h2o_iovec_t a)
{
    /* no Host at all (HTTP/1.0 health checkers): h2o then names the host config, "default"; a page
     * rebinding a DNS name always sends its own name, which is never that */
    if (!a.len || h2o_memis(a.base, a.len, H2O_STRLIT("default")) || !listener_is_loopback(s->cfg)) return 1;
    char host[256];
    size_t n;
    if (a.base[0] == '[') {
        const char *e = memchr(a.base, ']', a.len);
        if (!e) return 0;
        n = (size_t)(e - a.base) + 1;
    } else {
        const char *c = memchr(a.base, ':', a.len);
        n = c ? (size_t)(c - a.base) : a.len;
    }
    if (n == 0 || n >= sizeof host) return 0;
    memcpy(host, a.base, n);
    host[n] = '\0';
    while (n > 1 && host[n - 1] == '.')
        host[--n] = '\0'; /* "localhost." is the same name */
    for (int i = 0; i < s->cfg->n_server_names; i++)
        if (!strcasecmp(host, s->cfg->server_names[i])) return 1;
    if (!strcasecmp(host, "localhost") || (n > 10 && !strcasecmp(host + n - 10, ".localhost"))) return 1;
    if (!strcmp(host, "[::1]")) return 1;
    struct in_addr a4;
    return inet_pton(AF_INET, host, &a4) == 1 && ((const unsigned char *)&a4)[0] == 127;
}

int sdw_api_gate(sdw_srv *s, h2o_req_t *req, int needs_key)
{
    if (!host_ok(s, req->input.authority)) {
        char msg[200];
        snprintf(
            msg, sizeof msg,
            "this service listens on loopback and does not answer for host '%.*s' (add it to server_names)",
            (int)(req->input.authority.len > 64 ? 64 : req->input.authority.len), req->input.authority.base);
        /* the host may hold anything: keep the message printable */
        for (char *p = msg; *p; p++)
            if ((unsigned char)*p < ' ' || (unsigned char)*p > '~') *p = '?';
        gate_error(s, req, 421, "misdirected_request", msg);
        return -1;
    }
    if (!needs_key || !sdw_auth_enabled()) return 0;
    size_t len;
    const char *authz = sdw_http_header(req, "authorization", &len);
    const char *name = sdw_auth_check(authz, len);
    if (!name) {
        sdw_http_add_header(req, "www-authenticate", authz ? "Bearer error=\"invalid_token\"" : "Bearer");
        gate_error(s, req, 401, authz ? "invalid_api_key" : "missing_api_key",
                   authz ? "the API key is not valid"
                         : "an API key is required: send Authorization: Bearer KEY");
        return -1;
    }
    h2o_iovec_t *slot = h2o_req_getenv(req, H2O_STRLIT(ENV_KEY), 1);
    *slot = h2o_strdup(&req->pool, name, strlen(name));
    return 0;
}

const char *sdw_api_key_name(h2o_req_t *req)
{
    h2o_iovec_t *v = h2o_req_getenv(req, H2O_STRLIT(ENV_KEY), 0);
    return v && v->base ? v->base : NULL;
}

int sdw_api_submit(sdw_srv *s, h2o_req_t *req, sdw_gen_request *jr, sdw_job **out, sdw_api_error *e)
{
    const char *key = sdw_api_key_name(req);
    const char *reason = "internal";
    if (s->phase != SDW_SRV_RUNNING) {
        sdw_api_error_set(e, 503, "shutting_down", NULL,
                          "the service is shutting down and takes no new jobs");
        reason = "shutting_down";
        goto fail;
    }
    if (!sdw_pool_can_ever_serve(s->pool)) {
        sdw_api_error_set(e, 503, "unavailable", NULL,
                          "no worker can serve: every worker failed (see the service log)");
        reason = "unavailable";
        goto fail;
    }
    if (!sdw_auth_may_queue(key)) {
        sdw_api_error_set(e, 429, "key_limit", NULL,
                          "the key '%s' has %d unfinished jobs, its limit; wait for one to end", key,
                          sdw_auth_queued(key));
        reason = "key_limit";
        goto retry;
    }
    if (sdw_jobs_submit(s->jobs, jr, sdw_srv_now(), out, e) != 0) {
        reason = e->status == 429 ? "queue_full" : e->status == 503 ? "shutting_down" : "internal";
        if (e->status == 429) goto retry;
        goto fail;
    }
    sdw_job *job = *out;
    sdw_auth_track(key, job);
    sdw_metrics_job_submitted(s->metrics);
    sdw_log(SDW_LOG_INFO, "job_queued", "job=%s steps=%d size=%dx%d sampler=%s position=%d key=%s", job->id,
            job->req.steps, job->req.width, job->req.height, sdw_sampler_name(job->req.sampler),
            job->position, key ? key : "-");
    return 0;
retry : {
    char ra[16];
    snprintf(ra, sizeof ra, "%d", sdw_jobs_retry_after(s->jobs));
    sdw_http_add_header(req, "retry-after", ra);
}
fail:
    sdw_metrics_job_rejected(s->metrics, reason);
    return -1;
}

/* ---- held responses ---- */

typedef struct {
    h2o_generator_t gen; /* first: h2o hands it back (SSE mode) */
    sdw_srv *srv;
    h2o_req_t *req; /* NULL once the response is over or h2o stopped it */
    sdw_job *job;   /* NULL once it ended or was freed */
    sdw_job_sub sub;
    sdw_hold_json_fn json_fn;
    sdw_hold_sse_fn sse_fn;
    sdw_hold_sse_fn partial_fn; /* optional: an event between start and end (a live preview) */
    int partial_due;            /* progress came: ask partial_fn once the send in flight is done */
    void *ud;
    h2o_timeout_entry_t keepalive;
    sdw_rcbuf *inflight;
    sdw_rcbuf *final; /* built at the end, sent once the send in flight returns */
    int sending;
    int final_sent;
} hold;

static void hold_dispose(void *p)
{
    hold *h = p;
    if (h->job && !sdw_job_ended(h->job)) {
        /* the client left before the answer: nobody will fetch this image */
        sdw_job *job = h->job;
        sdw_job_unsubscribe(&h->sub);
        h->job = NULL;
        sdw_jobs_cancel(h->srv->jobs, job, sdw_srv_now());
    }
    sdw_job_unsubscribe(&h->sub);
    if (h2o_timeout_is_linked(&h->keepalive)) h2o_timeout_unlink(&h->keepalive);
    sdw_rcbuf_release(h->inflight);
    sdw_rcbuf_release(h->final);
    h->srv->n_readers--;
    sdw_srv_stream_closed(h->srv);
}

static void sse_flush(hold *h)
{
    if (!h->req || h->sending || h->final_sent) return;
    if (!h->final && h->partial_due && h->job) {
        /* built only now, from the job's latest state: a slow reader gets the newest, not a backlog */
        h->partial_due = 0;
        sdw_rcbuf *b = h->partial_fn(h->srv, h->req, h->job, h->ud);
        if (!b) return;
        h->inflight = b;
        h->sending = 1;
        h2o_iovec_t v = h2o_iovec_init(b->data, b->len);
        h2o_send(h->req, &v, 1, H2O_SEND_STATE_IN_PROGRESS);
        return;
    }
    if (!h->final) return;
    h->inflight = h->final;
    h->final = NULL;
    h->sending = 1;
    h->final_sent = 1;
    if (h2o_timeout_is_linked(&h->keepalive)) h2o_timeout_unlink(&h->keepalive);
    h2o_iovec_t v = h2o_iovec_init(h->inflight->data, h->inflight->len);
    h2o_send(h->req, &v, 1, H2O_SEND_STATE_FINAL);
}

static void hold_on_event(void *ud, sdw_job *job, sdw_job_event ev)
{
    hold *h = ud;
    if (ev == SDW_JEV_GONE) {
        sdw_job_unsubscribe(&h->sub);
        h->job = NULL;
        if (h->req && h->json_fn) {
            h2o_req_t *req = h->req;
            h->req = NULL;
            sdw_http_errorf(h->srv, req, 503, "shutting_down", NULL, "the service stopped");
        } else if (h->req && !h->final_sent && !h->final) {
            static const char gone[] = "event: error\ndata: {\"error\":{\"message\":\"the service stopped\","
                                       "\"type\":\"server_error\"}}\n\n";
            h->final = sdw_rcbuf_from(gone, sizeof gone - 1);
            sse_flush(h);
        }
        return;
    }
    if (ev == SDW_JEV_PROGRESS && h->partial_fn) {
        h->partial_due = 1;
        sse_flush(h);
        return;
    }
    if (ev != SDW_JEV_END) return;
    sdw_job_unsubscribe(&h->sub);
    h->job = NULL;
    if (!h->req) return;
    if (h->json_fn) {
        int status = 200;
        json_t *body = h->json_fn(h->srv, h->req, job, h->ud, &status);
        h2o_req_t *req = h->req;
        h->req = NULL;
        sdw_http_send_json(h->srv, req, status, body);
        return;
    }
    h->final = h->sse_fn(h->srv, h->req, job, h->ud);
    if (!h->final) {
        static const char oom[] =
            "event: error\ndata: {\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\"}}\n\n";
        h->final = sdw_rcbuf_from(oom, sizeof oom - 1);
    }
    sse_flush(h);
}

static hold *hold_new(sdw_srv *s, h2o_req_t *req, sdw_job *job, void *ud)
{
    hold *h = h2o_mem_alloc_shared(&req->pool, sizeof *h, hold_dispose);
    memset(h, 0, sizeof *h);
    h->srv = s;
    h->req = req;
    h->job = job;
    h->ud = ud;
    h->sub.fn = hold_on_event;
    h->sub.ud = h;
    s->n_readers++;
    return h;
}

void sdw_hold_json(sdw_srv *s, h2o_req_t *req, sdw_job *job, sdw_hold_json_fn fn, void *ud)
{
    hold *h = hold_new(s, req, job, ud);
    h->json_fn = fn;
    if (sdw_job_ended(job)) {
        hold_on_event(h, job, SDW_JEV_END);
        return;
    }
    sdw_job_subscribe(job, &h->sub);
}

static void sse_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    hold *h = (hold *)gen;
    sdw_rcbuf_release(h->inflight);
    h->inflight = NULL;
    h->sending = 0;
    sse_flush(h);
    if (!h->final_sent && h->req && !h2o_timeout_is_linked(&h->keepalive))
        h2o_timeout_link(h->srv->loop, &h->srv->keepalive_timeout, &h->keepalive);
}

static void sse_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    hold *h = (hold *)gen;
    h->req = NULL;
    if (h2o_timeout_is_linked(&h->keepalive)) h2o_timeout_unlink(&h->keepalive);
}

static void sse_keepalive(h2o_timeout_entry_t *entry)
{
    hold *h = H2O_STRUCT_FROM_MEMBER(hold, keepalive, entry);
    if (!h->req || h->sending || h->final_sent) return;
    h->inflight = sdw_rcbuf_retain(h->srv->keepalive_ev);
    h->sending = 1;
    h2o_iovec_t v = h2o_iovec_init(h->inflight->data, h->inflight->len);
    h2o_send(h->req, &v, 1, H2O_SEND_STATE_IN_PROGRESS);
}

void sdw_hold_sse(sdw_srv *s, h2o_req_t *req, sdw_job *job, sdw_hold_sse_fn fn, void *ud)
{
    sdw_hold_sse_partials(s, req, job, fn, NULL, ud);
}

void sdw_hold_sse_partials(sdw_srv *s, h2o_req_t *req, sdw_job *job, sdw_hold_sse_fn fn,
                           sdw_hold_sse_fn partial_fn, void *ud)
{
    hold *h = hold_new(s, req, job, ud);
    h->sse_fn = fn;
    h->partial_fn = partial_fn;
    h->gen.proceed = sse_proceed;
    h->gen.stop = sse_stop;
    h->keepalive.cb = sse_keepalive;
    sdw_http_prepare(s, req, 200, "text/event-stream");
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    sdw_http_add_header(req, "x-accel-buffering", "no");
    h2o_start_response(req, &h->gen);
    h->sending = 1;
    h2o_send(req, NULL, 0, H2O_SEND_STATE_IN_PROGRESS);
    if (sdw_job_ended(job))
        hold_on_event(h, job, SDW_JEV_END);
    else
        sdw_job_subscribe(job, &h->sub);
}

/* ---- small shared facts ---- */

const char *sdw_api_model_name(sdw_srv *s)
{
    static char name[128];
    if (name[0]) return name;
    const char *p = s->cfg->model_path ? s->cfg->model_path : "model";
    const char *b = strrchr(p, '/');
    b = b ? b + 1 : p;
    snprintf(name, sizeof name, "%s", b);
    char *dot = strrchr(name, '.');
    if (dot && dot != name) *dot = '\0';
    return name;
}

h2o_iovec_t sdw_api_base_url(h2o_req_t *req)
{
    const h2o_url_scheme_t *sc = req->input.scheme ? req->input.scheme : &H2O_URL_SCHEME_HTTP;
    h2o_iovec_t name = sc->name;
    /* behind a TLS proxy the client's scheme is the proxy's word; it only shapes the caller's own link */
    size_t fl;
    const char *fwd = sdw_http_header(req, "x-forwarded-proto", &fl);
    if (fwd && h2o_memis(fwd, fl, H2O_STRLIT("https"))) name = h2o_iovec_init(H2O_STRLIT("https"));
    return h2o_concat(&req->pool, name, h2o_iovec_init(H2O_STRLIT("://")), req->input.authority);
}

json_t *sdw_api_read_object(sdw_srv *s, h2o_req_t *req, sdw_api_error *e)
{
    if (req->entity.len > s->limits.max_body_bytes) {
        sdw_api_error_set(e, 413, "body_too_large", NULL, "the request body is larger than %zu bytes",
                          s->limits.max_body_bytes);
        return NULL;
    }
    json_error_t je;
    json_t *in = json_loadb(req->entity.base ? req->entity.base : "", req->entity.len, 0, &je);
    if (!in || !json_is_object(in)) {
        json_decref(in);
        sdw_api_error_set(e, 400, "invalid_json", NULL, "the body must be a JSON object");
        return NULL;
    }
    return in;
}
