/* srv.h: the supervisor service's shared state and the internal interfaces between its parts: routes,
 * HTTP response helpers, SSE streams, job JSON, access log, and the lifecycle in server.c. */
#ifndef SDW_SRV_H
#define SDW_SRV_H

#include <stddef.h>
#include <stdint.h>

#include <h2o.h>

#include "config.h"
#include "jobs.h"
#include "json_out.h"
#include "metrics.h"
#include "pool.h"
#include "validate.h"

/** Seconds between SSE keepalive comments on an otherwise quiet stream. */
#define SDW_SSE_KEEPALIVE_MS 15000
/** Expired job ids that still answer 410 Gone. */
#define SDW_TOMBSTONES 4096

typedef enum {
    SDW_SRV_RUNNING = 0, /* serving */
    SDW_SRV_DRAINING,    /* first signal: listener closed, running jobs may finish within the grace period */
    SDW_SRV_STOPPING,    /* jobs ended, workers being stopped, streams flushing */
    SDW_SRV_DONE         /* leave the loop */
} sdw_srv_phase;

typedef struct sdw_srv {
    const sdw_config *cfg;
    h2o_globalconf_t globalconf;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_loop_t *loop;
    h2o_socket_t *listener;
    h2o_socket_t *sigsock;
    char listen_addr[128]; /* "127.0.0.1:8080", "[::1]:8080" */

    sdw_pool *pool;
    sdw_jobs *jobs;
    sdw_metrics *metrics;
    sdw_validate_limits limits;
    double started_at; /* monotonic seconds */

    sdw_srv_phase phase;
    int forced;         /* a second signal came */
    int pool_stopping;  /* sdw_pool_shutdown called */
    int pool_stopped;   /* its done callback ran */
    int notified_ready; /* READY=1 sent */
    char notified_status[160];

    int n_readers;           /* live SSE streams */
    sdw_rcbuf *keepalive_ev; /* ": keepalive\n\n", shared by every stream */

    h2o_timeout_t sweep_timeout; /* 1 s: TTL expiry */
    h2o_timeout_entry_t sweep_entry;
    h2o_timeout_t keepalive_timeout; /* SDW_SSE_KEEPALIVE_MS, one entry per stream */
    h2o_timeout_t grace_timeout;     /* shutdown_grace_s */
    h2o_timeout_entry_t grace_entry;
    h2o_timeout_t flush_timeout; /* bound on waiting for streams to flush at exit */
    h2o_timeout_entry_t flush_entry;
    h2o_timeout_t watchdog_timeout; /* half of WATCHDOG_USEC */
    h2o_timeout_entry_t watchdog_entry;
    h2o_timeout_entry_t drain_check_entry; /* on ctx.zero_timeout: re-check the drain outside callbacks */

    int n_conns, max_conns; /* open client connections; limits.max_connections within RLIMIT_NOFILE */
    int accept_paused;      /* EMFILE/ENFILE: the listener sleeps until accept_pause_entry fires */
    int at_max_logged, pause_logged; /* warned once for the current streak */
    h2o_timeout_t accept_pause_timeout;
    h2o_timeout_entry_t accept_pause_entry;
} sdw_srv;

/** Monotonic clock in seconds (the jobs' clock). */
double sdw_srv_now(void);

/* ---- server.c: lifecycle hooks the other parts call ---- */

/** A job event happened (metrics, sd_notify status, drain progress); wired as the jobs' on_event. */
void sdw_srv_on_job_event(sdw_srv *s, sdw_job *job, sdw_job_event ev);
/** An SSE stream ended (disposed); lets the shutdown finish once every stream has flushed. */
void sdw_srv_stream_closed(sdw_srv *s);
/** Serving capacity: workers READY, BUSY and LOADING counted into the out parameters (any may be NULL). */
void sdw_srv_worker_counts(const sdw_srv *s, int *ready, int *busy, int *loading);
/** The native image side (pixels) of the model the workers serve: the first ready or busy worker of the
 * newest configuration that reported one, else of a retiring one; 0 while none has (docs/api.md). */
int sdw_srv_native_size(const sdw_srv *s);
/** s->limits with default_size set to sdw_srv_native_size(): the limits a new job is checked against. */
sdw_validate_limits sdw_srv_job_limits(const sdw_srv *s);

/* ---- accept.c ---- */

/** Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force (-1: unknown). */
int sdw_accept_raise_nofile(void);
/** Sets s->max_conns from limits.max_connections and nofile, keeping descriptors for workers and logs. */
void sdw_accept_init(sdw_srv *s, int nofile);
/** Starts accepting on s->listener (bound, not yet reading). */
void sdw_accept_start(sdw_srv *s);
/** Stops accepting and closes the listener (shutdown). */
void sdw_accept_close(sdw_srv *s);

/* ---- framing.c ---- */

/** 1 when the raw HTTP/1 request head (request line, headers, blank line, as received) frames its body
 * ambiguously (RFC 9112 6.3): Content-Length with Transfer-Encoding, two different Content-Lengths, more
 * than one Transfer-Encoding, Transfer-Encoding in HTTP/1.0 (http10 set), obs-fold in either header; why (a
 * sentence) and field (the header's name) are then set. 0 otherwise. */
int sdw_framing_check(const char *head, size_t len, int http10, char *why, size_t whylen, const char **field);
/** Registers, before the routes, the handler that answers such requests 400 and closes the connection. */
void sdw_framing_register(sdw_srv *s, h2o_pathconf_t *pathconf);

/* ---- h2_limit.c ---- */

/** Registers, before the routes, the handler that sends GOAWAY to an HTTP/2 connection past its stream
 * budget. */
void sdw_h2_limit_register(h2o_pathconf_t *pathconf);

/* ---- reload.c ---- */

/** SIGHUP: re-reads s->cfg->file; if valid, applies it (new workers, old ones retire when idle), else logs
 * file:line:col and keeps running as before. */
void sdw_srv_reload(sdw_srv *s);
/** Frees the configuration the last reload installed (at exit). */
void sdw_srv_reload_free(void);

/* ---- routes.c ---- */

typedef enum {
    SDW_ROUTE_NONE = 0,
    SDW_ROUTE_HEALTH,
    SDW_ROUTE_READY,
    SDW_ROUTE_METRICS,
    SDW_ROUTE_JOBS,        /* /v1/jobs */
    SDW_ROUTE_JOB,         /* /v1/jobs/{id} */
    SDW_ROUTE_JOB_STREAM,  /* /v1/jobs/{id}/stream */
    SDW_ROUTE_JOB_IMAGE,   /* /v1/jobs/{id}/image */
    SDW_ROUTE_JOB_PREVIEW, /* /v1/jobs/{id}/preview */
    SDW_ROUTE_LORAS        /* /v1/loras */
} sdw_route;

/** Classifies a normalised path; id and idlen receive the {id} segment for job routes. */
sdw_route sdw_route_match(const char *path, size_t len, const char **id, size_t *idlen);
/** The pattern a route is counted under in metrics and logs ("/v1/jobs/{id}/stream"; "other" for NONE). */
const char *sdw_route_pattern(sdw_route r);
/** Registers the request handler on pathconf. */
void sdw_routes_register(sdw_srv *s, h2o_pathconf_t *pathconf);

/* ---- http_util.c ---- */

/** Sets status and reason, the CORS headers for the request's Origin, and the content type. */
void sdw_http_prepare(sdw_srv *s, h2o_req_t *req, int status, const char *content_type);
/** Sends a complete response body (copied); HEAD requests get the headers only. */
void sdw_http_send(sdw_srv *s, h2o_req_t *req, int status, const char *content_type, const char *body,
                   size_t len);
/** Sends body (its reference is taken) as the JSON answer plus a newline; NULL, or a failed dump, sends a
 * 500 "out of memory" error instead. */
void sdw_http_send_json(sdw_srv *s, h2o_req_t *req, int status, json_t *body);
/** Sends {"error":{"code","message","field"}} with e's status. */
void sdw_http_send_error(sdw_srv *s, h2o_req_t *req, const sdw_api_error *e);
/** Builds and sends an error in one call (field NULL when not about one field). */
void sdw_http_errorf(sdw_srv *s, h2o_req_t *req, int status, const char *code, const char *field,
                     const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/** Adds a response header (name lower-case, value copied into the request pool). */
void sdw_http_add_header(h2o_req_t *req, const char *name, const char *value);
/** The first value of a request header (name lower-case), or NULL; *len set. */
const char *sdw_http_header(h2o_req_t *req, const char *name, size_t *len);
/** 1 if the request's Origin may use the API (CORS); 1 also when there is no Origin. */
int sdw_http_origin_allowed(sdw_srv *s, h2o_req_t *req);

/* ---- job_json.c ---- */

/** The job document of GET /v1/jobs/{id}, or NULL when out of memory. */
json_t *sdw_job_json(sdw_srv *s, const sdw_job *job);
/** The job's timings object ({"queued_s",...}; fields not yet known are omitted), or NULL when out of memory.
 */
json_t *sdw_job_json_timings(const sdw_job *job);
/** 1 when the job holds a live preview made at its current step (the progress event then carries it). */
int sdw_job_has_step_preview(const sdw_job *job);
/** The SSE event for the job's current non-terminal state ev (QUEUED, STARTED, PROGRESS), as a new rcbuf. */
sdw_rcbuf *sdw_job_sse_event(sdw_srv *s, const sdw_job *job, sdw_job_event ev);
/** The job's terminal SSE event (complete/error/cancelled), built once and kept on the job; returns a new
 * reference, or NULL without memory. */
sdw_rcbuf *sdw_job_sse_terminal(sdw_job *job);
/** The first event of a POST with Accept: text/event-stream: queued with the job id, urls and seed. */
sdw_rcbuf *sdw_job_sse_submitted(const sdw_job *job);

/* ---- sse.c ---- */

/** Answers req with the job's event stream: its current state first, then every event until the
 * terminal one, then the response ends. first (may be NULL) is sent before the current state. */
void sdw_sse_start(sdw_srv *s, h2o_req_t *req, sdw_job *job, sdw_rcbuf *first);

/* ---- access_log.c ---- */

/** Registers the access logger (one sdw_log line and one metrics count per request) on pathconf. */
void sdw_access_log_register(sdw_srv *s, h2o_pathconf_t *pathconf);

#endif
