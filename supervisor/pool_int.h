/* pool_int.h: what the pool's two halves share: the slot table and the calls between process control
 * (pool_proc.c: spawn, reap, kill, backoff) and protocol state (pool.c: frames, jobs, worker states). */
#ifndef SDW_POOL_INT_H
#define SDW_POOL_INT_H

#include <sched.h>
#include <stdint.h>
#include <sys/types.h>

#include "frame.h"
#include "pool.h"

/* A worker that closed its socket gets this long to exit on its own (so its exit code, e.g. 2, is seen)
 * before it is killed. */
#define POOL_EOF_GRACE_MS 5000
/* Exit status the worker's SIGBUS handler uses: the mmap'd model file shrank under it. */
#define POOL_EXIT_MODEL_CHANGED 4
/* Exit status of a worker whose GPU failed beyond recovery (a sticky CUDA error): restarted like a crash,
 * since a new process gets a new CUDA context. */
#define POOL_EXIT_DEVICE_FAILED 5
/* Host threads of a cuda worker whose entry gives none: the GPU does the math, the CPU only host work. */
#define POOL_CUDA_THREADS 2

typedef enum { KILL_NONE = 0, KILL_TIMEOUT, KILL_PROTOCOL, KILL_DISCONNECTED, KILL_HEARTBEAT } kill_reason;

typedef struct pool_slot {
    sdw_pool *pool;
    int index;
    sdw_device_config dev;
    cpu_set_t cpus;
    int pin;       /* cpus is meant: dev.cpus was not "" */
    int threads;   /* OPENBLAS_NUM_THREADS for this worker */
    int retiring;  /* replaced by a reload: takes no respawn, stops once idle and a successor serves */
    int retired;   /* stopped for good after a reload; the slot may be reused */
    int stop_sent; /* a retiring worker was told to stop: it takes no more jobs */

    sdw_worker_state state;
    pid_t pid; /* 0: no process */
    h2o_socket_t *sock;
    sdw_frame_reader *reader;
    msgpack_sbuffer out;  /* frames queued while a write is in flight */
    msgpack_sbuffer wbuf; /* the bytes h2o_socket_write is sending */
    int writing;
    int hello_seen;
    int leaving; /* sent an error frame without a job: it exits right after, so it takes no job */
    kill_reason killed;
    char kill_msg[320];
    char last_error[512]; /* the worker's last error frame outside a job, e.g. model_load_failed */

    int has_job;
    uint64_t job;
    int job_started, cancel_sent;
    int images_seen, images_count; /* result frames of the running job so far, and the count they carry */

    char arch[16], prediction[8], model_hash[32], model_name[128];
    int native_size; /* from ready: the model's native image side, 0 before (or from an older worker) */
    int bf16;        /* from ready: bf16 jobs run in bf16 there, 0 before (or from an older worker) */
    int has_vram;    /* a GPU worker reported its device's memory (ready, then the end of each job) */
    uint64_t vram_free, vram_total; /* bytes, as last reported; meaningful only with has_vram */
    double load_s;
    uint64_t ready_at;  /* h2o_now() when it became READY, 0 before */
    uint64_t failed_at; /* h2o_now() when it became FAILED (kept while retries keep failing), 0 otherwise */
    int restarts;
    uint64_t jobs_served;
    int backoff_ms;
    int ping_out; /* a ping is unanswered */

    /* restart backoff or disconnect grace: never both, so one timeout whose length is set before each link */
    h2o_timeout_t tmo;
    h2o_timeout_entry_t tmo_entry;
    h2o_timeout_entry_t job_entry;  /* on pool->job_tmo */
    h2o_timeout_entry_t beat_entry; /* on pool->beat_tmo while READY */
} pool_slot;

struct sdw_pool {
    h2o_loop_t *loop;
    sdw_pool_events ev;
    void *ud;
    char *engine_path, *model_path, *tokenizer_path, *prediction;
    char *taesd_path; /* model.preview_decoder, "" = none */
    int log_level, log_json;
    int backoff_min_ms, backoff_max_ms, job_timeout_s, heartbeat_ms;
    pool_slot **slots; /* pointers: timeouts are linked into lists and must not move when the table grows */
    int n;

    h2o_timeout_t job_tmo;  /* job_timeout_s: no frame from a BUSY worker for that long */
    h2o_timeout_t beat_tmo; /* heartbeat_ms: ping an idle worker; no pong by the next beat kills it */
    h2o_timeout_t kill_tmo;
    h2o_timeout_entry_t kill_entry;
    h2o_timeout_t defer_tmo; /* 0 ms: runs done outside whatever pool call noticed the last exit */
    h2o_timeout_entry_t done_entry;

    int starting; /* inside sdw_pool_start: the caller has no pool pointer yet, so no callbacks */
    int shutting_down, done_scheduled;
    void (*done)(void *ud);
    void *done_ud;
};

/* ---- pool_proc.c ---- */

/** Parses "0-3,6" into set; -1 with err when malformed or naming a CPU this process may not use. */
int pool_parse_cpus(const char *list, const char *devname, cpu_set_t *set, char *err, size_t errlen);
/** Fills s's device, pinning and thread count from d; -1 with err for a device this build cannot run. */
int pool_slot_configure(pool_slot *s, const sdw_device_config *d, char *err, size_t errlen);
/** Starts the slot's worker (on failure the slot waits out a backoff). */
void pool_spawn(pool_slot *s);
/** SIGKILLs the worker and drops its connection; why and msg say what its job ends with. */
void pool_kill(pool_slot *s, kill_reason why, const char *msg);
/** Arms the slot's respawn after its backoff, which then doubles up to the cap. */
void pool_restart_later(pool_slot *s, sdw_worker_state st);
/** Arms the slot's single timer (backoff or disconnect grace). */
void pool_arm_slot_timer(pool_slot *s, uint64_t ms);
void pool_on_slot_timer(h2o_timeout_entry_t *entry);
void pool_on_kill_deadline(h2o_timeout_entry_t *entry);
void pool_on_done(h2o_timeout_entry_t *entry);
/** Schedules the shutdown's done callback once no worker process is left. */
void pool_maybe_done(sdw_pool *p);

/* ---- pool.c ---- */

void pool_set_state(pool_slot *s, sdw_worker_state st);
/** Takes fd (the supervisor's end of the socketpair) as the slot's connection. */
void pool_conn_open(pool_slot *s, int fd);
void pool_close_conn(pool_slot *s);
void pool_flush(pool_slot *s);
/** Reads what a worker wrote just before it exited (its fatal error frame). */
void pool_read_last_words(pool_slot *s);
/** The worker process is gone: end its job (or hand it back when it never started) as the exit says. */
void pool_end_job_on_exit(pool_slot *s, int had_job, uint64_t job, int started, kill_reason killed,
                          const char *how);
/** Starts or stops the idle heartbeat as the slot's state asks. */
void pool_beat_update(pool_slot *s);
/** Stops what a reload replaced once it is idle and something new serves (see sdw_pool_reload). */
void pool_retire_check(sdw_pool *p);
/** The public name of job for messages ("node-00000000000000ff"), through the pool owner. */
const char *pool_job_name(const sdw_pool *p, uint64_t job, char *buf, size_t len);

#endif
