/* jobs.h: the job registry (hash by id), the FIFO queue with its capacity, dispatch to workers, retry
 * after a crash, result TTL and tombstones. No sockets and no clock: the server passes "now" and the
 * worker operations in, so the logic is tested on its own (tests/serving/test_jobs.c). */
#ifndef SDW_JOBS_H
#define SDW_JOBS_H

#include <stddef.h>
#include <stdint.h>

#include "pool.h"
#include "rcbuf.h"
#include "gen_request.h"
#include "validate.h"

typedef enum {
    SDW_JST_QUEUED = 0, /* waiting in the queue */
    SDW_JST_RUNNING,    /* handed to a worker (started or about to) */
    SDW_JST_COMPLETE,   /* image ready */
    SDW_JST_ERROR,      /* failed: err_code / err_message */
    SDW_JST_CANCELLED   /* cancelled by a client */
} sdw_job_status;

typedef enum {
    SDW_JEV_QUEUED,   /* the queue position changed (also the first one, and after a retry requeue) */
    SDW_JEV_STARTED,  /* the worker began */
    SDW_JEV_PROGRESS, /* one sampling step finished */
    SDW_JEV_END,      /* terminal (complete, error or cancelled): emitted exactly once */
    SDW_JEV_GONE      /* the job is being freed (TTL, shutdown): subscribers must drop their pointer now */
} sdw_job_event;

typedef struct sdw_job sdw_job;

/** A listener on one job (an SSE reader). Embed it; it is unlinked automatically before GONE returns. */
typedef struct sdw_job_sub {
    void (*fn)(void *ud, sdw_job *job, sdw_job_event ev);
    void *ud;
    struct sdw_job_sub *prev, *next;
    sdw_job *job; /* set while subscribed */
} sdw_job_sub;

/** One image of a job's batch. */
typedef struct {
    uint8_t *png;
    size_t png_len;
    uint64_t seed;
} sdw_job_image;

struct sdw_job {
    uint64_t num; /* the id the pool knows; its 16 hex digits end the public id */
    char id[80];  /* "<node_id>-<16 hex digits>" */
    sdw_job_status status;

    /* what to make (validated; has_seed is always 1: a random seed is drawn on submit) */
    sdw_gen_request req;

    int position; /* 1-based place in the queue while queued (1 = next), 0 otherwise */
    int slot;     /* worker slot while running, else -1 */
    int step, total;
    double last_elapsed;  /* worker-reported seconds at the last progress */
    double last_step_s;   /* duration of the last step */
    int retried;          /* requeued once after a worker crash */
    int requeued;         /* handed back by workers that died before starting it */
    int cancel_requested; /* DELETE while running: waiting for the worker's step boundary */

    double t_created, t_dispatched, t_started, t_ended; /* caller's clock (seconds); 0 = not yet */
    double w_encode, w_sample, w_decode, w_total;       /* seconds, as the worker measured */

    uint8_t *png; /* COMPLETE: image 0 (the same buffer as images[0].png) */
    size_t png_len;
    int out_width, out_height;
    int out_precision; /* COMPLETE: the SDW_PRECISION_* the job ran in (the worker's word), else fp32 */
    uint8_t *preview;  /* RUNNING: the latest live preview (PNG), made at step preview_step; NULL if none */
    size_t preview_len;
    int preview_step;
    sdw_job_image *images; /* [req.n]: the batch's images as they arrive (png NULL until then) */
    int n_images;          /* images kept so far; req.n once COMPLETE */
    size_t images_bytes;   /* their PNG bytes together */
    char err_code[48];     /* ERROR */
    char err_message[256]; /* ERROR */

    sdw_rcbuf *terminal_sse; /* the terminal SSE event, built once by the SSE layer; released with the job */

    /* internal */
    sdw_job_sub *subs;
    sdw_job *l_prev, *l_next; /* queue or ended list */
    sdw_job *h_next;          /* hash chain */
};

/** How the registry reaches workers and observers; every call is made on the caller's thread. */
typedef struct {
    /** A worker slot that can take a job now, or -1. */
    int (*idle_slot)(void *ud);
    /** Hands job to slot; 0, or -1 if the slot cannot take it (the job stays first in the queue). */
    int (*submit)(void *ud, int slot, sdw_job *job);
    /** Asks the worker running job to stop at its next step boundary. */
    void (*cancel)(void *ud, sdw_job *job);
    /** Optional: every event, before the job's subscribers hear it (metrics, logs, sd_notify). */
    void (*on_event)(void *ud, sdw_job *job, sdw_job_event ev);
} sdw_jobs_ops;

typedef struct {
    const char *node_id; /* id prefix */
    int capacity;        /* most queued (not running) jobs */
    double ttl_s;        /* how long an ended job and its result are kept */
    int retry_on_crash;  /* requeue once on worker_crashed / worker_timeout */
    int tombstones;      /* how many expired ids still answer 410 (oldest forgotten first) */
} sdw_jobs_config;

typedef struct sdw_jobs sdw_jobs;

typedef enum { SDW_JOBS_FOUND = 0, SDW_JOBS_GONE, SDW_JOBS_UNKNOWN } sdw_jobs_lookup;

/** A new registry (node_id is copied), or NULL without memory. */
sdw_jobs *sdw_jobs_new(const sdw_jobs_config *cfg, const sdw_jobs_ops *ops, void *ud);
/** Frees every job (subscribers hear GONE) and the registry. */
void sdw_jobs_free(sdw_jobs *J);

/** Registers and queues a job from req (it moves into the job; req is left empty, freshly initialised),
 * drawing a random seed when none was given, then dispatches. On failure req is untouched. 0 with *out, or -1
 * with e: 429 queue_full, 503 shutting_down (paused), 500 internal. */
int sdw_jobs_submit(sdw_jobs *J, sdw_gen_request *req, double now, sdw_job **out, sdw_api_error *e);
/** Looks up a public id: FOUND (*out set), GONE (expired, still remembered) or UNKNOWN. */
sdw_jobs_lookup sdw_jobs_find(sdw_jobs *J, const char *id, size_t len, sdw_job **out);
/** The job the pool calls num, or NULL. */
sdw_job *sdw_jobs_get(sdw_jobs *J, uint64_t num);

/** Hands queued jobs, oldest first, to idle workers until either runs out (no-op while paused). */
void sdw_jobs_dispatch(sdw_jobs *J, double now);
/** Cancels: a queued job ends now (returns 0), a running one is asked to stop (returns 1); an ended job is
 * left as it is (returns -1). */
int sdw_jobs_cancel(sdw_jobs *J, sdw_job *job, double now);

/** Pool callbacks, forwarded; unknown or already ended jobs are ignored. */
void sdw_jobs_started(sdw_jobs *J, uint64_t num, int slot, double now);
void sdw_jobs_progress(sdw_jobs *J, uint64_t num, int step, int total, double elapsed_s, double now);
void sdw_jobs_done(sdw_jobs *J, uint64_t num, const sdw_job_outcome *o, double now);
/** Keeps a copy of a running job's live preview made at step (its progress event follows and shows it);
 * the previous one is dropped, and the last one when the job ends. Out of memory: the job keeps none. */
void sdw_jobs_preview(sdw_jobs *J, uint64_t num, int step, const uint8_t *png, size_t len);
/** An image of a batch before its last (the pool's job_image): kept until the job completes. A count other
 * than the request's n, or no memory, ends the job as an error. */
void sdw_jobs_image(sdw_jobs *J, uint64_t num, const sdw_job_outcome *o, double now);

/** Frees ended jobs older than ttl_s (their ids become tombstones). Returns how many. */
int sdw_jobs_expire(sdw_jobs *J, double now);
/** Stops (1) or resumes (0) dispatch and new submissions (shutdown drain). */
void sdw_jobs_pause(sdw_jobs *J, int paused);
/** Ends queued jobs, and running ones too when include_running, as ERROR code/message (running ones are
 * also asked to stop). Returns how many ended. */
int sdw_jobs_end_all(sdw_jobs *J, int include_running, const char *code, const char *message, double now);

int sdw_jobs_queued(const sdw_jobs *J);
int sdw_jobs_running(const sdw_jobs *J);
/** Jobs held in the registry (queued, running and ended but not yet expired). */
int sdw_jobs_count(const sdw_jobs *J);
/** Seconds a client refused with 429 should wait: a running average of job durations over the running
 * jobs, at least 1. */
int sdw_jobs_retry_after(const sdw_jobs *J);

/** Starts delivering job's events to sub (sub->fn, sub->ud set by the caller). */
void sdw_job_subscribe(sdw_job *job, sdw_job_sub *sub);
/** Stops delivering; safe to call when not subscribed. */
void sdw_job_unsubscribe(sdw_job_sub *sub);
/** "queued", "running", "complete", "error", "cancelled". */
const char *sdw_job_status_name(sdw_job_status st);
/** 1 for complete, error and cancelled. */
int sdw_job_ended(const sdw_job *job);

#endif
