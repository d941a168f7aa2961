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
    SDW_WS_FAILED,      /* exited 2 (fatal config/model error): never respawned */
    SDW_WS_STOPPED      /* shut down */
} sdw_worker_state;

typedef enum { SDW_JOB_COMPLETE = 0, SDW_JOB_ERROR, SDW_JOB_CANCELLED } sdw_job_end;

/** How a job ended on a worker. png/code/message point into pool memory valid only during the callback. */
typedef struct {
    sdw_job_end end;
    const uint8_t *png; /* COMPLETE */
    size_t png_len;
    int width, height;
    double t_encode, t_sample, t_decode, t_total; /* seconds, as the worker measured */
    const char *code;    /* ERROR: "worker_crashed", "worker_timeout", "invalid_request", "engine_error", ... */
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
} sdw_pool_events;

typedef struct sdw_pool sdw_pool;

/** Starts one worker per cfg->devices entry from engine_path ("sd-worker-engine"). Refuses kind cuda while
 * the build has no GPU backend. 0 or -1 with err. */
int sdw_pool_start(h2o_loop_t *loop, const sdw_config *cfg, const char *engine_path, const sdw_pool_events *ev,
                   void *ud, sdw_pool **out, char *err, size_t errlen);
/** Call on SIGCHLD (the server's signalfd): reaps with waitpid(-1, WNOHANG) until empty. */
void sdw_pool_reap(sdw_pool *p);
int sdw_pool_size(const sdw_pool *p);
sdw_worker_state sdw_pool_state(const sdw_pool *p, int slot);
const char *sdw_pool_state_name(sdw_worker_state st);
const char *sdw_pool_device_name(const sdw_pool *p, int slot);
int sdw_pool_restarts(const sdw_pool *p, int slot);
uint64_t sdw_pool_jobs_served(const sdw_pool *p, int slot);
/** Model info the worker reported when it became ready ("" before). */
const char *sdw_pool_model_arch(const sdw_pool *p, int slot);
/** More of what the worker reported in ready ("" before); added by the pool owner (s1). */
const char *sdw_pool_model_name(const sdw_pool *p, int slot);
const char *sdw_pool_model_hash(const sdw_pool *p, int slot);
const char *sdw_pool_model_prediction(const sdw_pool *p, int slot);
/** The slot's last error reported outside a job ("model_load_failed: ..." for a FAILED slot), "" if none. */
const char *sdw_pool_last_error(const sdw_pool *p, int slot);
/** The slot's worker process id, 0 while it has none. */
int sdw_pool_pid(const sdw_pool *p, int slot);
/** A READY slot, or -1. */
int sdw_pool_idle_slot(const sdw_pool *p);
/** 1 while some worker is or may become able to serve (not all FAILED/STOPPED). */
int sdw_pool_can_ever_serve(const sdw_pool *p);
/** Sends job (what to make: req, already validated, with its seed) to a READY slot; 0, or -1 if the slot
 * cannot take it or req does not encode (a sampler or schedule outside the names table). */
int sdw_pool_submit(sdw_pool *p, int slot, uint64_t job, const sdw_gen_request *req);
/** Asks the worker running job to stop at its next step boundary (job_done then reports CANCELLED). */
void sdw_pool_cancel(sdw_pool *p, uint64_t job);
/** Stops all workers: TERM now, KILL after kill_after_ms; calls done once every worker is reaped. */
void sdw_pool_shutdown(sdw_pool *p, int kill_after_ms, void (*done)(void *ud), void *ud);
/** Frees the pool (after shutdown completed). */
void sdw_pool_free(sdw_pool *p);

#endif
