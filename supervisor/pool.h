/* pool.h: the worker pool: one worker process per configured device, fork+exec'd and pinned,
 * spoken to in msgpack frames over a socketpair, reaped and respawned with capped backoff. */
#ifndef SDW_POOL_H
#define SDW_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <h2o.h>
#include "config.h"
#include "gen_request.h"

typedef enum {
    SDW_WS_LOADING = 0, /* process started, model loading */
    SDW_WS_READY,       /* idle, can take a job */
    SDW_WS_BUSY,        /* running a job */
    SDW_WS_RESTARTING,  /* died; waiting out the backoff before respawn */
    SDW_WS_FAILED,      /* exited 2 (model cannot load): retried with backoff, stays FAILED until one loads */
    SDW_WS_STOPPED      /* shut down */
} sdw_worker_state;

/* REQUEUE: the worker went away before it started the job; nothing ran, so the job may run elsewhere. */
typedef enum { SDW_JOB_COMPLETE = 0, SDW_JOB_ERROR, SDW_JOB_CANCELLED, SDW_JOB_REQUEUE } sdw_job_end;

/** How a job ended on a worker. png/code/message point into pool memory valid only during the callback. */
typedef struct {
    sdw_job_end end;
    const uint8_t *png; /* COMPLETE: image index of count (the last one; job_image had the others) */
    size_t png_len;
    int width, height;
    int index, count; /* which image of the job's batch png is, of how many (0 of 1 for a single image) */
    uint64_t seed;    /* png's seed */
    double t_encode, t_sample, t_decode, t_total; /* seconds, as the worker measured */
    int precision;    /* COMPLETE: the SDW_PRECISION_* the job ran in, as the worker reported it */
    const char *code; /* ERROR: "worker_crashed", "worker_timeout", "invalid_request", "engine_error", ... */
    const char *message; /* ERROR: human-readable */
} sdw_job_outcome;

/** Callbacks into the job layer; all run on the event loop thread. */
typedef struct {
    /** A worker changed state (READY means it can take a job now). */
    void (*worker_state)(void *ud, int slot, sdw_worker_state st);
    /** The worker accepted job and began. */
    void (*job_started)(void *ud, uint64_t job, int slot);
    /** One sampling step finished. */
    void (*job_progress)(void *ud, uint64_t job, int step, int total, double elapsed_s);
    /** The job ended (exactly once per submitted job, also when the worker crashed or timed out). */
    void (*job_done)(void *ud, uint64_t job, const sdw_job_outcome *o);
    /** Optional: the job's public id for logs and messages (NULL: the pool writes the number in hex). */
    const char *(*job_name)(void *ud, uint64_t job);
    /** Optional: a live preview image (PNG bytes, valid only during the call) made at step; called right
     * before that step's job_progress. */
    void (*job_preview)(void *ud, uint64_t job, int step, const uint8_t *png, size_t len);
    /** Optional: an image of a batch before its last one (end COMPLETE, png, index < count - 1); the last
     * comes with job_done. The pool checks they arrive in order, all with the same count. */
    void (*job_image)(void *ud, uint64_t job, const sdw_job_outcome *o);
} sdw_pool_events;

/** A copy of what the pool knows about one slot; strings are copies too, so it outlives pool calls. */
typedef struct {
    sdw_worker_state state;
    int pid; /* 0 while the slot has no process */
    int restarts;
    uint64_t jobs_served;
    int retiring;    /* replaced by a reload: finishing its job, then it stops */
    int retired;     /* stopped after a reload; listings skip it */
    double failed_s; /* seconds the slot has been FAILED without a break, 0 when not FAILED */
    char device[32];
    char arch[16], prediction[8], model_hash[32], model_name[128]; /* from ready; "" before */
    int native_size; /* from ready: the model's native image side in pixels, 0 before */
    int bf16;        /* from ready: 1 when the worker runs bf16 jobs in bf16 (AVX512-BF16), 0 before */
    int has_vram;    /* a GPU worker reported its device's memory: at ready and at the end of each job */
    uint64_t vram_free_bytes, vram_total_bytes; /* as last reported (with has_vram; 0 otherwise) */
    char last_error[512]; /* the last error outside a job ("model_load_failed: ..."), "" if none */
} sdw_slot_info;

typedef struct sdw_pool sdw_pool;

/** 0 when this build can run a worker on d, else -1 with err: kind cuda needs a supervisor built with
 * -DSDW_CUDA=ON (the SDW_CUDA=1 compile definition). */
int sdw_pool_device_supported(const sdw_device_config *d, char *err, size_t errlen);
/** Starts one worker per cfg->devices entry from engine_path ("sd-worker-engine"): a cpu device's pinned to
 * its cpus, a cuda device's with CUDA_VISIBLE_DEVICES=<gpu> and --backend cuda. Refuses kind cuda when the
 * build has no GPU backend (sdw_pool_device_supported). 0 or -1 with err. */
int sdw_pool_start(h2o_loop_t *loop, const sdw_config *cfg, const char *engine_path,
                   const sdw_pool_events *ev, void *ud, sdw_pool **out, char *err, size_t errlen);
/** Call on SIGCHLD (the server's signalfd): reaps with waitpid(-1, WNOHANG) until empty. */
void sdw_pool_reap(sdw_pool *p);
/** Slots in the table: a reload adds slots (or reuses retired ones); retired slots stay, marked as such. */
int sdw_pool_size(const sdw_pool *p);
/** Fills *out for slot; 0, or -1 (out zeroed, state STOPPED) for a slot outside the table. */
int sdw_pool_slot_info(const sdw_pool *p, int slot, sdw_slot_info *out);
const char *sdw_pool_state_name(sdw_worker_state st);
/** A READY slot that can take a job (the newest configuration's first), or -1. */
int sdw_pool_idle_slot(const sdw_pool *p);
/** 1 unless every worker is FAILED (its model does not load; retried with backoff) or STOPPED. */
int sdw_pool_can_ever_serve(const sdw_pool *p);
/** Sends job (what to make: req, already validated, with its seed) to a READY slot; 0, or -1 if the slot
 * cannot take it or req does not encode (a sampler or schedule outside the names table). */
int sdw_pool_submit(sdw_pool *p, int slot, uint64_t job, const sdw_gen_request *req);
/** Asks the worker running job to stop at its next step boundary (job_done then reports CANCELLED). */
void sdw_pool_cancel(sdw_pool *p, uint64_t job);
/** Applies a new configuration without dropping a job: checks cfg's devices (-1 with err and nothing
 * changed when one cannot run), then starts a new worker per device with the new settings; the old workers
 * keep serving until a new one is ready, finish their running job, then stop. */
int sdw_pool_reload(sdw_pool *p, const sdw_config *cfg, char *err, size_t errlen);
/** Stops all workers: TERM now, KILL after kill_after_ms; calls done once every worker is reaped. */
void sdw_pool_shutdown(sdw_pool *p, int kill_after_ms, void (*done)(void *ud), void *ud);
/** Frees the pool (after shutdown completed). */
void sdw_pool_free(sdw_pool *p);

#endif
