/* pool.c: the worker pool on the supervisor's h2o evloop: fork+exec one pinned worker per device, speak
 * frames over a socketpair without ever blocking, reap, respawn with capped backoff, and end every job
 * exactly once. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "frame.h"
#include "log.h"
#include "pool.h"

extern char **environ;

/* A worker that closed its socket gets this long to exit on its own (so its exit code, e.g. 2, is seen)
 * before it is killed. */
#define POOL_EOF_GRACE_MS 5000

typedef enum { KILL_NONE = 0, KILL_TIMEOUT, KILL_PROTOCOL, KILL_DISCONNECTED } kill_reason;

typedef struct {
    sdw_pool *pool;
    int index;
    sdw_device_config dev;
    cpu_set_t cpus;
    int pin;     /* cpus is meant: dev.cpus was not "" */
    int threads; /* OPENBLAS_NUM_THREADS for this worker */

    sdw_worker_state state;
    pid_t pid; /* 0: no process */
    h2o_socket_t *sock;
    sdw_frame_reader *reader;
    msgpack_sbuffer out;  /* frames queued while a write is in flight */
    msgpack_sbuffer wbuf; /* the bytes h2o_socket_write is sending */
    int writing;
    int hello_seen;
    kill_reason killed;
    char kill_msg[320];
    char last_error[512]; /* the worker's last error frame outside a job, e.g. model_load_failed */

    int has_job;
    uint64_t job;
    int job_started, cancel_sent;

    char arch[16], prediction[8], model_hash[32], model_name[128];
    double load_s;
    uint64_t ready_at; /* h2o_now() when it became READY, 0 before */
    int restarts;
    uint64_t jobs_served;
    int backoff_ms;

    /* restart backoff or disconnect grace: never both, so one timeout whose length is set before each link */
    h2o_timeout_t tmo;
    h2o_timeout_entry_t tmo_entry;
    h2o_timeout_entry_t job_entry; /* on pool->job_tmo */
} pool_slot;

struct sdw_pool {
    h2o_loop_t *loop;
    sdw_pool_events ev;
    void *ud;
    char *engine_path, *model_path, *tokenizer_path, *prediction;
    int log_level, log_json;
    int backoff_min_ms, backoff_max_ms, job_timeout_s;
    pool_slot *slots;
    int n;

    h2o_timeout_t job_tmo; /* job_timeout_s: no frame from a BUSY worker for that long */
    h2o_timeout_t kill_tmo;
    h2o_timeout_entry_t kill_entry;
    h2o_timeout_t defer_tmo; /* 0 ms: runs done outside whatever pool call noticed the last exit */
    h2o_timeout_entry_t done_entry;

    int starting; /* inside sdw_pool_start: the caller has no pool pointer yet, so no callbacks */
    int shutting_down, done_scheduled;
    void (*done)(void *ud);
    void *done_ud;
};

static const char *const state_names[] = {"loading", "ready", "busy", "restarting", "failed", "stopped"};

const char *sdw_pool_state_name(sdw_worker_state st)
{
    return (unsigned)st < sizeof state_names / sizeof *state_names ? state_names[st] : "?";
}

/* ---- configuration checks ---- */

/* Parses "0-3,6" into set; -1 with err for anything else, or a CPU this process may not run on (a worker
 * could not use it either, and a silently narrower pinning is worse than a clear refusal). */
static int parse_cpus(const char *list, const char *devname, cpu_set_t *set, char *err, size_t errlen)
{
    cpu_set_t allowed;
    CPU_ZERO(set);
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) {
        snprintf(err, errlen, "device %s: sched_getaffinity: %s", devname, strerror(errno));
        return -1;
    }
    const char *p = list;
    for (;;) {
        char *end;
        if (*p < '0' || *p > '9') goto bad;
        long a = strtol(p, &end, 10), b = a;
        p = end;
        if (*p == '-') {
            p++;
            if (*p < '0' || *p > '9') goto bad;
            b = strtol(p, &end, 10);
            p = end;
        }
        if (a > b || b >= CPU_SETSIZE) goto bad;
        for (long c = a; c <= b; c++) {
            if (!CPU_ISSET(c, &allowed)) {
                snprintf(err, errlen, "device %s: CPU %ld in cpus '%s' is not available to this process",
                         devname, c, list);
                return -1;
            }
            CPU_SET(c, set);
        }
        if (*p == '\0') return 0;
        if (*p++ != ',') goto bad;
    }
bad:
    snprintf(err, errlen, "device %s: cannot parse cpus '%s' (want a list like 0-3,6)", devname, list);
    return -1;
}

/* ---- small helpers ---- */

static void emit_state(pool_slot *s)
{
    if (s->pool->ev.worker_state && !s->pool->starting)
        s->pool->ev.worker_state(s->pool->ud, s->index, s->state);
}

static void set_state(pool_slot *s, sdw_worker_state st)
{
    if (s->state == st) return;
    s->state = st;
    emit_state(s);
}

static void arm_slot_timer(pool_slot *s, uint64_t ms)
{
    h2o_timeout_unlink(&s->tmo_entry);
    s->tmo.timeout = ms; /* safe: no entry is linked to this timeout now */
    h2o_timeout_link(s->pool->loop, &s->tmo, &s->tmo_entry);
}

static void touch_job_timer(pool_slot *s)
{
    h2o_timeout_unlink(&s->job_entry);
    if (s->has_job && s->pool->job_timeout_s > 0)
        h2o_timeout_link(s->pool->loop, &s->pool->job_tmo, &s->job_entry);
}

/* Drops the connection (the process, if any, is reaped separately). Queued bytes go with it. */
static void close_conn(pool_slot *s)
{
    if (s->sock) {
        h2o_socket_close(s->sock);
        s->sock = NULL;
    }
    sdw_frame_reader_free(s->reader);
    s->reader = NULL;
    s->out.size = 0;
    s->wbuf.size = 0;
    s->writing = 0;
}

static void kill_worker(pool_slot *s, kill_reason why, const char *msg)
{
    if (s->pid <= 0 || s->killed) return;
    s->killed = why;
    snprintf(s->kill_msg, sizeof s->kill_msg, "%s", msg);
    kill(s->pid, SIGKILL);
    close_conn(s);
    h2o_timeout_unlink(&s->job_entry);
    h2o_timeout_unlink(&s->tmo_entry);
}

static void on_write(h2o_socket_t *sock, const char *err);

static void flush(pool_slot *s)
{
    if (!s->sock || s->writing || s->out.size == 0) return;
    msgpack_sbuffer t = s->wbuf;
    s->wbuf = s->out;
    s->out = t;
    s->out.size = 0;
    s->writing = 1;
    h2o_iovec_t iov = h2o_iovec_init(s->wbuf.data, s->wbuf.size);
    h2o_socket_write(s->sock, &iov, 1, on_write);
}

/* The worker closed its end: normal on its way out, so only a worker that then stays alive is worth a
 * warning. */
static void conn_lost(pool_slot *s, const char *why)
{
    sdw_log(SDW_LOG_DEBUG, "worker_disconnected", "slot=%d device=%s pid=%d reason=\"%s\"", s->index,
             s->dev.name, (int)s->pid, why);
    close_conn(s);
    if (s->pid > 0 && !s->killed) arm_slot_timer(s, POOL_EOF_GRACE_MS);
}

static void on_write(h2o_socket_t *sock, const char *err)
{
    pool_slot *s = sock->data;
    s->writing = 0;
    s->wbuf.size = 0;
    if (err) {
        conn_lost(s, err);
        return;
    }
    flush(s);
}

static void protocol_violation(pool_slot *s, const char *what)
{
    char msg[320];
    snprintf(msg, sizeof msg, "protocol violation: %s", what);
    char slot[16], pid[16];
    snprintf(slot, sizeof slot, "%d", s->index);
    snprintf(pid, sizeof pid, "%d", (int)s->pid);
    sdw_log(SDW_LOG_ERROR, "worker_protocol_error", "slot=%s device=%s pid=%s error=%s", slot, s->dev.name, pid, what);
    kill_worker(s, KILL_PROTOCOL, msg);
}

/* A job ended with the worker's own answer: the slot is READY again before the job layer hears of it, so it
 * can hand this slot its next job from inside job_done. */
static void finish_job(pool_slot *s, const sdw_job_outcome *o)
{
    uint64_t job = s->job;
    s->has_job = 0;
    s->jobs_served++;
    h2o_timeout_unlink(&s->job_entry);
    s->state = SDW_WS_READY;
    if (s->pool->ev.job_done) s->pool->ev.job_done(s->pool->ud, job, o);
    if (s->state == SDW_WS_READY) emit_state(s);
}

static int busy_with(const pool_slot *s, uint64_t job)
{
    return s->state == SDW_WS_BUSY && s->has_job && s->job == job;
}

static void handle_frame(pool_slot *s, const sdw_frame *f)
{
    sdw_pool *p = s->pool;
    char what[200], num[16];
    snprintf(num, sizeof num, "%d", s->index);
    if (s->has_job && f->type != SDW_FRAME_HELLO && f->type != SDW_FRAME_READY) touch_job_timer(s);
    switch (f->type) {
    case SDW_FRAME_HELLO:
        if (s->hello_seen) {
            protocol_violation(s, "a second hello");
            return;
        }
        s->hello_seen = 1;
        if (f->u.hello.pid != s->pid)
            sdw_log(SDW_LOG_WARN, "worker_pid_mismatch", "slot=%d pid=%d hello_pid=%lld", s->index,
                     (int)s->pid, (long long)f->u.hello.pid);
        sdw_log(SDW_LOG_DEBUG, "worker_hello", "slot=%s device=%s state=%s", num, s->dev.name, f->u.hello.state);
        return;
    case SDW_FRAME_READY:
        if (!s->hello_seen || s->state != SDW_WS_LOADING) {
            snprintf(what, sizeof what, "ready while %s%s", sdw_pool_state_name(s->state),
                     s->hello_seen ? "" : " and before hello");
            protocol_violation(s, what);
            return;
        }
        snprintf(s->arch, sizeof s->arch, "%s", f->u.ready.arch);
        snprintf(s->prediction, sizeof s->prediction, "%s", f->u.ready.prediction);
        snprintf(s->model_hash, sizeof s->model_hash, "%s", f->u.ready.model_hash);
        snprintf(s->model_name, sizeof s->model_name, "%s", f->u.ready.model_name);
        s->load_s = f->u.ready.load_s;
        s->ready_at = h2o_now(p->loop);
        s->last_error[0] = '\0';
        char load[32];
        snprintf(load, sizeof load, "%.2f", s->load_s);
        sdw_log(SDW_LOG_INFO, "worker_ready", "slot=%s device=%s arch=%s prediction=%s model=%s hash=%s load_s=%s", num, s->dev.name, s->arch, s->prediction, s->model_name, s->model_hash, load);
        set_state(s, SDW_WS_READY);
        return;
    case SDW_FRAME_STARTED:
    case SDW_FRAME_PROGRESS:
    case SDW_FRAME_RESULT:
    case SDW_FRAME_CANCELLED:
        break;
    case SDW_FRAME_ERROR:
        if (!f->has_job) {
            snprintf(s->last_error, sizeof s->last_error, "%s: %s", f->u.error.code, f->u.error.message);
            sdw_log(SDW_LOG_ERROR, "worker_error", "slot=%s device=%s code=%s message=%s", num, s->dev.name, f->u.error.code, f->u.error.message);
            return;
        }
        break;
    case SDW_FRAME_PONG:
        return;
    default:
        snprintf(what, sizeof what, "the worker sent a '%s' frame", sdw_frame_type_name(f->type));
        protocol_violation(s, what);
        return;
    }
    /* the rest belong to the job this worker runs, and only to it */
    if (!busy_with(s, f->job)) {
        if (s->has_job)
            snprintf(what, sizeof what, "%s frame for job %llu while running job %llu",
                     sdw_frame_type_name(f->type), (unsigned long long)f->job, (unsigned long long)s->job);
        else
            snprintf(what, sizeof what, "%s frame for job %llu while %s", sdw_frame_type_name(f->type),
                     (unsigned long long)f->job, sdw_pool_state_name(s->state));
        protocol_violation(s, what);
        return;
    }
    sdw_job_outcome o = {0};
    switch (f->type) {
    case SDW_FRAME_STARTED:
        if (!s->job_started) {
            s->job_started = 1;
            if (p->ev.job_started) p->ev.job_started(p->ud, s->job, s->index);
        }
        return;
    case SDW_FRAME_PROGRESS:
        if (p->ev.job_progress)
            p->ev.job_progress(p->ud, s->job, f->u.progress.step, f->u.progress.total, f->u.progress.elapsed);
        return;
    case SDW_FRAME_RESULT:
        o.end = SDW_JOB_COMPLETE;
        o.png = f->u.result.png;
        o.png_len = f->u.result.png_len;
        o.width = f->u.result.width;
        o.height = f->u.result.height;
        o.t_encode = f->u.result.t_encode;
        o.t_sample = f->u.result.t_sample;
        o.t_decode = f->u.result.t_decode;
        o.t_total = f->u.result.t_total;
        break;
    case SDW_FRAME_ERROR:
        o.end = SDW_JOB_ERROR;
        o.code = f->u.error.code;
        o.message = f->u.error.message;
        break;
    default: /* cancelled */
        o.end = SDW_JOB_CANCELLED;
        break;
    }
    finish_job(s, &o);
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    pool_slot *s = sock->data;
    if (err) {
        conn_lost(s, err);
        return;
    }
    for (;;) {
        size_t n = sdw_frame_reader_feed(s->reader, sock->input->bytes, sock->input->size);
        h2o_buffer_consume(&sock->input, n);
        sdw_frame f;
        char ferr[256];
        int rc;
        while ((rc = sdw_frame_reader_next(s->reader, &f, ferr, sizeof ferr)) == 1) {
            handle_frame(s, &f);
            sdw_frame_free(&f);
            if (s->sock != sock) /* killed, or the job layer shut the pool down from a callback */
                return;
        }
        if (rc < 0) {
            char what[300];
            snprintf(what, sizeof what, "malformed frame: %s", ferr);
            protocol_violation(s, what);
            return;
        }
        if (sock->input->size == 0) return;
    }
}

/* ---- processes ---- */

static void child_exec(const pool_slot *s, int fd, pid_t parent, char *const argv[], char *const envp[])
    __attribute__((noreturn));
static void child_exec(const pool_slot *s, int fd, pid_t parent, char *const argv[], char *const envp[])
{
    /* fd 3 by contract; dup2 clears close-on-exec, and fd == 3 needs it cleared by hand */
    if (fd == 3 ? fcntl(3, F_SETFD, 0) != 0 : dup2(fd, 3) != 3) _exit(127);
#ifdef SYS_close_range
    syscall(SYS_close_range, 4U, ~0U, 0U); /* nothing else of the supervisor's leaks into a worker */
#endif
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(0);
    if (s->pin && sched_setaffinity(0, sizeof s->cpus, &s->cpus) != 0) {
        dprintf(2, "sd-worker: device %s: sched_setaffinity(%s): %s\n", s->dev.name, s->dev.cpus,
                strerror(errno));
        _exit(2);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL); /* fails harmlessly for KILL, STOP and libc's own */
    execve(s->pool->engine_path, argv, envp);
    dprintf(2, "sd-worker: cannot run %s: %s\n", s->pool->engine_path, strerror(errno));
    _exit(127);
}

static int env_is(const char *e, const char *name)
{
    size_t n = strlen(name);
    return !strncmp(e, name, n) && e[n] == '=';
}

static void slot_restart_later(pool_slot *s);

/* A spawn that failed (descriptors, memory, fork) is a step of the crash loop: without this the
 * ready_at of the last good worker would reset the backoff to its minimum on every retry. */
static void spawn_failed(pool_slot *s)
{
    s->ready_at = 0;
    slot_restart_later(s);
}

/* Starts the slot's worker. On a failure to fork the slot waits out a backoff like after a crash. */
static void spawn(pool_slot *s)
{
    sdw_pool *p = s->pool;
    static const char *const ours[] = {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
                                       "SDW_LOG_LEVEL", "SDW_LOG_JSON"};
    char threads[16], e_blas[48], e_omp[48], e_level[32], e_json[32];
    snprintf(threads, sizeof threads, "%d", s->threads);
    snprintf(e_blas, sizeof e_blas, "OPENBLAS_NUM_THREADS=%d", s->threads);
    snprintf(e_omp, sizeof e_omp, "OMP_NUM_THREADS=%d", s->threads);
    snprintf(e_level, sizeof e_level, "SDW_LOG_LEVEL=%s",
             p->log_level <= SDW_LOG_DEBUG  ? "debug"
             : p->log_level == SDW_LOG_INFO ? "info"
             : p->log_level == SDW_LOG_WARN ? "warn"
                                            : "error");
    snprintf(e_json, sizeof e_json, "SDW_LOG_JSON=%d", p->log_json ? 1 : 0);

    /* argv and envp are built before fork: the child only does async-signal-safe work */
    const char *argv[20];
    int a = 0;
    argv[a++] = "sd-worker-engine";
    argv[a++] = "worker";
    argv[a++] = "--fd";
    argv[a++] = "3";
    argv[a++] = "--model";
    argv[a++] = p->model_path;
    if (p->tokenizer_path && *p->tokenizer_path) {
        argv[a++] = "--tokenizer";
        argv[a++] = p->tokenizer_path;
    }
    if (p->prediction && *p->prediction) {
        argv[a++] = "--prediction";
        argv[a++] = p->prediction;
    }
    argv[a++] = "--threads";
    argv[a++] = threads;
    argv[a++] = "--device";
    argv[a++] = s->dev.name;
    argv[a] = NULL;
    size_t nenv = 0;
    while (environ && environ[nenv])
        nenv++;
    const char **envp = malloc((nenv + 6) * sizeof *envp);
    int sv[2] = {-1, -1};
    if (!envp || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        sdw_log(SDW_LOG_ERROR, "worker_spawn_failed", "slot=%d device=%s error=\"%s\"", s->index,
                 s->dev.name, envp ? strerror(errno) : "out of memory");
        free(envp);
        spawn_failed(s);
        return;
    }
    size_t e = 0;
    for (size_t i = 0; i < nenv; i++) {
        int skip = 0;
        for (size_t k = 0; k < sizeof ours / sizeof *ours; k++)
            skip |= env_is(environ[i], ours[k]);
        if (!skip) envp[e++] = environ[i];
    }
    envp[e++] = e_blas;
    envp[e++] = e_omp;
    envp[e++] = e_level;
    envp[e++] = e_json;
    envp[e] = NULL;

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) child_exec(s, sv[1], parent, (char *const *)argv, (char *const *)envp);
    int fork_errno = errno;
    free(envp);
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        sdw_log(SDW_LOG_ERROR, "worker_spawn_failed", "slot=%d device=%s error=\"fork: %s\"", s->index,
                 s->dev.name, strerror(fork_errno));
        spawn_failed(s);
        return;
    }
    s->pid = pid;
    s->killed = KILL_NONE;
    s->hello_seen = 0;
    s->ready_at = 0;
    s->arch[0] = s->prediction[0] = s->model_hash[0] = s->model_name[0] = '\0';
    s->load_s = 0;
    s->reader = sdw_frame_reader_new(SDW_FRAME_MAX_RESULT);
    s->sock = h2o_evloop_socket_create(p->loop, sv[0], 0);
    s->sock->data = s;
    h2o_socket_read_start(s->sock, on_read);
    if (!s->reader) kill_worker(s, KILL_PROTOCOL, "out of memory for the frame reader");
    sdw_log(SDW_LOG_INFO, "worker_spawn", "slot=%d device=%s pid=%d cpus=%s threads=%d restarts=%d",
             s->index, s->dev.name, (int)pid, s->pin ? s->dev.cpus : "any", s->threads, s->restarts);
}

static void on_slot_timer(h2o_timeout_entry_t *entry)
{
    pool_slot *s = H2O_STRUCT_FROM_MEMBER(pool_slot, tmo_entry, entry);
    if (s->pid > 0) { /* disconnect grace ran out */
        sdw_log(SDW_LOG_WARN, "worker_kill", "slot=%d pid=%d reason=\"closed its socket but did not exit\"",
                 s->index, (int)s->pid);
        kill_worker(s, KILL_DISCONNECTED, "closed its socket but did not exit");
        return;
    }
    if (s->state == SDW_WS_RESTARTING && !s->pool->shutting_down) {
        s->restarts++;
        set_state(s, SDW_WS_LOADING);
        spawn(s);
    }
}

static void slot_restart_later(pool_slot *s)
{
    sdw_pool *p = s->pool;
    uint64_t now = h2o_now(p->loop);
    /* a worker that stayed ready longer than the longest backoff is out of its crash loop: start over */
    if (s->ready_at && now - s->ready_at >= (uint64_t)p->backoff_max_ms) s->backoff_ms = p->backoff_min_ms;
    int delay = s->backoff_ms;
    s->backoff_ms = s->backoff_ms > p->backoff_max_ms / 2 ? p->backoff_max_ms : s->backoff_ms * 2;
    if (s->backoff_ms < 1) s->backoff_ms = 1;
    set_state(s, SDW_WS_RESTARTING);
    if (s->state == SDW_WS_RESTARTING) /* the callback may have shut the pool down */
        arm_slot_timer(s, (uint64_t)delay);
}

static void on_job_timeout(h2o_timeout_entry_t *entry)
{
    pool_slot *s = H2O_STRUCT_FROM_MEMBER(pool_slot, job_entry, entry);
    char msg[128];
    snprintf(msg, sizeof msg, "no frame for %d s while running job %llu", s->pool->job_timeout_s,
             (unsigned long long)s->job);
    sdw_log(SDW_LOG_ERROR, "worker_timeout", "slot=%d device=%s pid=%d job=%llu timeout_s=%d", s->index,
             s->dev.name, (int)s->pid, (unsigned long long)s->job, s->pool->job_timeout_s);
    kill_worker(s, KILL_TIMEOUT, msg);
}

static void on_done(h2o_timeout_entry_t *entry)
{
    sdw_pool *p = H2O_STRUCT_FROM_MEMBER(sdw_pool, done_entry, entry);
    if (p->done) p->done(p->done_ud);
}

static void maybe_done(sdw_pool *p)
{
    if (!p->shutting_down || p->done_scheduled) return;
    for (int i = 0; i < p->n; i++)
        if (p->slots[i].pid > 0) return;
    p->done_scheduled = 1;
    h2o_timeout_unlink(&p->kill_entry);
    h2o_timeout_link(p->loop, &p->defer_tmo, &p->done_entry);
}

static void on_kill_deadline(h2o_timeout_entry_t *entry)
{
    sdw_pool *p = H2O_STRUCT_FROM_MEMBER(sdw_pool, kill_entry, entry);
    for (int i = 0; i < p->n; i++) {
        pool_slot *s = &p->slots[i];
        if (s->pid > 0) {
            sdw_log(SDW_LOG_WARN, "worker_kill",
                     "slot=%d pid=%d reason=\"still running at the shutdown deadline\"", s->index,
                     (int)s->pid);
            kill(s->pid, SIGKILL);
        }
    }
}

/* Frames a worker wrote just before exiting may still sit unread when SIGCHLD wins the race with the read
 * callback. Its fatal error (model_load_failed before exit 2) is the one worth having; the rest are dropped,
 * since the process is gone and its job ends as a crash either way. */
static void read_last_words(pool_slot *s)
{
    if (!s->sock || !s->reader) return;
    int fd = h2o_socket_get_fd(s->sock);
    char buf[16384];
    size_t budget = (size_t)1 << 20; /* a bounded look, not a drain of whatever a dying worker produced */
    const char *data = s->sock->input->bytes;
    size_t len = s->sock->input->size;
    for (;;) {
        while (len > 0) {
            size_t n = sdw_frame_reader_feed(s->reader, data, len);
            data += n;
            len -= n;
            sdw_frame f;
            char ferr[256];
            int rc;
            while ((rc = sdw_frame_reader_next(s->reader, &f, ferr, sizeof ferr)) == 1) {
                if (f.type == SDW_FRAME_ERROR && !f.has_job) {
                    snprintf(s->last_error, sizeof s->last_error, "%s: %s", f.u.error.code,
                             f.u.error.message);
                    sdw_log(SDW_LOG_ERROR, "worker_error", "device=%s code=%s message=%s", s->dev.name, f.u.error.code, f.u.error.message);
                }
                sdw_frame_free(&f);
            }
            if (rc < 0) return;
        }
        if (budget == 0) return;
        ssize_t got = recv(fd, buf, sizeof buf < budget ? sizeof buf : budget, MSG_DONTWAIT);
        if (got <= 0) return;
        budget -= (size_t)got;
        data = buf;
        len = (size_t)got;
    }
}

static void slot_exited(pool_slot *s, int status)
{
    sdw_pool *p = s->pool;
    char how[96];
    if (WIFEXITED(status))
        snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(how, sizeof how, "was killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(how, sizeof how, "ended with wait status 0x%x", status);
    pid_t pid = s->pid;
    char slotnum[16], pidnum[16];
    snprintf(slotnum, sizeof slotnum, "%d", s->index);
    snprintf(pidnum, sizeof pidnum, "%d", (int)pid);
    s->pid = 0;
    if (!s->killed) read_last_words(s);
    close_conn(s);
    h2o_timeout_unlink(&s->tmo_entry);
    h2o_timeout_unlink(&s->job_entry);
    int had_job = s->has_job;
    uint64_t job = s->job;
    s->has_job = 0;
    kill_reason killed = s->killed;
    s->killed = KILL_NONE;

    if (p->shutting_down) {
        sdw_log(SDW_LOG_INFO, "worker_stopped", "slot=%s device=%s pid=%s how=%s", slotnum, s->dev.name, pidnum, how);
        set_state(s, SDW_WS_STOPPED);
    } else if (!killed && WIFEXITED(status) && WEXITSTATUS(status) == 2) {
        sdw_log(SDW_LOG_ERROR, "worker_failed", "slot=%s device=%s pid=%s error=%s action=%s", slotnum, s->dev.name, pidnum, s->last_error[0] ? s->last_error : "exit status 2 (fatal config or model error)", "not restarted");
        set_state(s, SDW_WS_FAILED);
    } else {
        char backoff[16];
        snprintf(backoff, sizeof backoff, "%d", s->backoff_ms);
        sdw_log(SDW_LOG_WARN, "worker_exit", "slot=%s device=%s pid=%s how=%s reason=%s restart_in_ms=%s", slotnum, s->dev.name, pidnum, how, killed ? s->kill_msg : "", backoff);
        slot_restart_later(s);
    }
    if (had_job && p->ev.job_done) {
        char msg[512];
        sdw_job_outcome o = {.end = SDW_JOB_ERROR};
        if (killed == KILL_TIMEOUT) {
            o.code = "worker_timeout";
            snprintf(msg, sizeof msg, "the worker on %s sent %s and was killed", s->dev.name, s->kill_msg);
        } else if (killed) {
            o.code = "worker_crashed";
            snprintf(msg, sizeof msg, "the worker on %s was killed after a %s", s->dev.name, s->kill_msg);
        } else if (p->shutting_down) {
            o.code = "shutting_down";
            snprintf(msg, sizeof msg, "the service shut down while the job ran (the worker on %s %s)",
                     s->dev.name, how);
        } else {
            o.code = "worker_crashed";
            snprintf(msg, sizeof msg, "the worker on %s %s while running the job", s->dev.name, how);
        }
        o.message = msg;
        p->ev.job_done(p->ud, job, &o);
    }
    maybe_done(p);
}

/* ---- public ---- */

int sdw_pool_start(h2o_loop_t *loop, const sdw_config *cfg, const char *engine_path,
                   const sdw_pool_events *ev, void *ud, sdw_pool **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!cfg->devices || cfg->n_devices < 1) {
        snprintf(err, errlen, "no devices configured: the pool needs at least one");
        return -1;
    }
    if (!cfg->model_path || !*cfg->model_path) {
        snprintf(err, errlen, "no model_path configured");
        return -1;
    }
    if (!engine_path || access(engine_path, X_OK) != 0) {
        snprintf(err, errlen, "worker program %s is not executable: %s", engine_path ? engine_path : "(none)",
                 strerror(engine_path ? errno : EINVAL));
        return -1;
    }
    sdw_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->slots = calloc((size_t)cfg->n_devices, sizeof *p->slots))) {
        free(p);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->n = cfg->n_devices;
    for (int i = 0; i < p->n; i++) {
        pool_slot *s = &p->slots[i];
        const sdw_device_config *d = &cfg->devices[i];
        s->pool = p;
        s->index = i;
        s->dev = *d;
        s->dev.name[sizeof s->dev.name - 1] = '\0';
        s->dev.cpus[sizeof s->dev.cpus - 1] = '\0';
        if (d->kind == SDW_DEV_CUDA) {
            snprintf(err, errlen,
                     "device %s: kind cuda needs a GPU backend and this build has none (use kind cpu)",
                     s->dev.name);
            goto fail;
        }
        if (d->kind != SDW_DEV_CPU) {
            snprintf(err, errlen, "device %s: unknown device kind %d", s->dev.name, (int)d->kind);
            goto fail;
        }
        if (d->threads < 0) {
            snprintf(err, errlen, "device %s: threads must be 0 (one per CPU) or more, not %d", s->dev.name,
                     d->threads);
            goto fail;
        }
        s->pin = s->dev.cpus[0] != '\0';
        if (s->pin && parse_cpus(s->dev.cpus, s->dev.name, &s->cpus, err, errlen)) goto fail;
        if (d->threads > 0) {
            s->threads = d->threads;
        } else {
            /* one BLAS thread per CPU the worker may use: its pinning, or everything we may use */
            cpu_set_t all;
            s->threads = s->pin ? CPU_COUNT(&s->cpus)
                         : sched_getaffinity(0, sizeof all, &all) == 0 && CPU_COUNT(&all) > 0
                             ? CPU_COUNT(&all)
                             : 1;
        }
    }
    p->loop = loop;
    if (ev) p->ev = *ev;
    p->ud = ud;
    p->engine_path = strdup(engine_path);
    p->model_path = strdup(cfg->model_path);
    p->tokenizer_path = strdup(cfg->tokenizer_path ? cfg->tokenizer_path : "");
    p->prediction = strdup(cfg->prediction ? cfg->prediction : "");
    if (!p->engine_path || !p->model_path || !p->tokenizer_path || !p->prediction) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    p->log_level = cfg->log_level;
    p->log_json = cfg->log_json;
    p->backoff_min_ms = cfg->restart_backoff_min_ms > 0 ? cfg->restart_backoff_min_ms : 1;
    p->backoff_max_ms =
        cfg->restart_backoff_max_ms > p->backoff_min_ms ? cfg->restart_backoff_max_ms : p->backoff_min_ms;
    p->job_timeout_s = cfg->job_timeout_s;
    /* a worker that dies while we write to it must cost us an EPIPE, not the whole supervisor */
    signal(SIGPIPE, SIG_IGN);
    h2o_timeout_init(loop, &p->job_tmo, (uint64_t)(p->job_timeout_s > 0 ? p->job_timeout_s : 1) * 1000);
    h2o_timeout_init(loop, &p->kill_tmo, 0);
    h2o_timeout_init(loop, &p->defer_tmo, 0);
    p->kill_entry.cb = on_kill_deadline;
    p->done_entry.cb = on_done;
    for (int i = 0; i < p->n; i++) {
        pool_slot *s = &p->slots[i];
        h2o_timeout_init(loop, &s->tmo, 0);
        s->tmo_entry.cb = on_slot_timer;
        s->job_entry.cb = on_job_timeout;
        msgpack_sbuffer_init(&s->out);
        msgpack_sbuffer_init(&s->wbuf);
        s->backoff_ms = p->backoff_min_ms;
        s->state = SDW_WS_LOADING; /* set, not announced: the caller has no pool pointer yet */
    }
    p->starting = 1;
    for (int i = 0; i < p->n; i++)
        spawn(&p->slots[i]);
    p->starting = 0;
    *out = p;
    return 0;
fail:
    free(p->engine_path);
    free(p->model_path);
    free(p->tokenizer_path);
    free(p->prediction);
    free(p->slots);
    free(p);
    return -1;
}

void sdw_pool_reap(sdw_pool *p)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        pool_slot *s = NULL;
        for (int i = 0; i < p->n && !s; i++)
            if (p->slots[i].pid == pid) s = &p->slots[i];
        if (s)
            slot_exited(s, status);
        else
            sdw_log(SDW_LOG_DEBUG, "child_reaped", "pid=%d status=0x%x", (int)pid, status);
    }
}

int sdw_pool_size(const sdw_pool *p)
{
    return p->n;
}

static const pool_slot *slot_at(const sdw_pool *p, int slot)
{
    return slot >= 0 && slot < p->n ? &p->slots[slot] : NULL;
}

sdw_worker_state sdw_pool_state(const sdw_pool *p, int slot)
{
    const pool_slot *s = slot_at(p, slot);
    return s ? s->state : SDW_WS_STOPPED;
}

const char *sdw_pool_device_name(const sdw_pool *p, int slot)
{
    const pool_slot *s = slot_at(p, slot);
    return s ? s->dev.name : "";
}

int sdw_pool_restarts(const sdw_pool *p, int slot)
{
    const pool_slot *s = slot_at(p, slot);
    return s ? s->restarts : 0;
}

uint64_t sdw_pool_jobs_served(const sdw_pool *p, int slot)
{
    const pool_slot *s = slot_at(p, slot);
    return s ? s->jobs_served : 0;
}

const char *sdw_pool_model_arch(const sdw_pool *p, int slot)
{
    const pool_slot *s = slot_at(p, slot);
    return s ? s->arch : "";
}

const char *sdw_pool_model_name(const sdw_pool *p, int slot)
{
    const pool_slot *s = slot_at(p, slot);
    return s ? s->model_name : "";
}

const char *sdw_pool_model_hash(const sdw_pool *p, int slot)
{
    const pool_slot *s = slot_at(p, slot);
    return s ? s->model_hash : "";
}

const char *sdw_pool_model_prediction(const sdw_pool *p, int slot)
{
    const pool_slot *s = slot_at(p, slot);
    return s ? s->prediction : "";
}

const char *sdw_pool_last_error(const sdw_pool *p, int slot)
{
    const pool_slot *s = slot_at(p, slot);
    return s ? s->last_error : "";
}

int sdw_pool_pid(const sdw_pool *p, int slot)
{
    const pool_slot *s = slot_at(p, slot);
    return s ? (int)s->pid : 0;
}

int sdw_pool_idle_slot(const sdw_pool *p)
{
    if (p->shutting_down) return -1;
    for (int i = 0; i < p->n; i++)
        if (p->slots[i].state == SDW_WS_READY && p->slots[i].sock) return i;
    return -1;
}

int sdw_pool_can_ever_serve(const sdw_pool *p)
{
    if (p->shutting_down) return 0;
    for (int i = 0; i < p->n; i++)
        if (p->slots[i].state != SDW_WS_FAILED && p->slots[i].state != SDW_WS_STOPPED) return 1;
    return 0;
}

int sdw_pool_submit(sdw_pool *p, int slot, uint64_t job, const sdw_gen_request *req)
{
    if (slot < 0 || slot >= p->n || p->shutting_down) return -1;
    pool_slot *s = &p->slots[slot];
    if (s->state != SDW_WS_READY || !s->sock || s->has_job) return -1;
    if (sdw_frame_job(&s->out, job, req) != 0) {
        sdw_log(SDW_LOG_ERROR, "job_encode_failed", "slot=%d job=%llu", slot, (unsigned long long)job);
        return -1;
    }
    s->has_job = 1;
    s->job = job;
    s->job_started = 0;
    s->cancel_sent = 0;
    touch_job_timer(s);
    flush(s);
    set_state(s, SDW_WS_BUSY);
    return 0;
}

void sdw_pool_cancel(sdw_pool *p, uint64_t job)
{
    for (int i = 0; i < p->n; i++) {
        pool_slot *s = &p->slots[i];
        if (busy_with(s, job) && s->sock && !s->cancel_sent && !s->killed) {
            if (sdw_frame_cancel(&s->out, job) == 0) {
                s->cancel_sent = 1;
                flush(s);
            }
            return;
        }
    }
}

void sdw_pool_shutdown(sdw_pool *p, int kill_after_ms, void (*done)(void *ud), void *ud)
{
    if (p->shutting_down) return;
    p->shutting_down = 1;
    p->done = done;
    p->done_ud = ud;
    int alive = 0;
    for (int i = 0; i < p->n; i++) {
        pool_slot *s = &p->slots[i];
        h2o_timeout_unlink(&s->tmo_entry);
        if (s->pid > 0) {
            alive++;
            if (s->sock && !s->killed && sdw_frame_shutdown(&s->out) == 0) flush(s);
            kill(s->pid, SIGTERM);
        } else {
            set_state(s, SDW_WS_STOPPED);
        }
    }
    if (alive) {
        sdw_log(SDW_LOG_INFO, "pool_shutdown", "workers=%d kill_after_ms=%d", alive, kill_after_ms);
        p->kill_tmo.timeout = (uint64_t)(kill_after_ms > 0 ? kill_after_ms : 0);
        h2o_timeout_link(p->loop, &p->kill_tmo, &p->kill_entry);
    }
    maybe_done(p);
}

void sdw_pool_free(sdw_pool *p)
{
    if (!p) return;
    for (int i = 0; i < p->n; i++) {
        pool_slot *s = &p->slots[i];
        close_conn(s);
        if (s->pid > 0) { /* freed without a finished shutdown: do not leave a worker behind */
            kill(s->pid, SIGKILL);
            waitpid(s->pid, NULL, 0);
        }
        h2o_timeout_unlink(&s->tmo_entry);
        h2o_timeout_unlink(&s->job_entry);
        h2o_timeout_dispose(p->loop, &s->tmo);
        msgpack_sbuffer_destroy(&s->out);
        msgpack_sbuffer_destroy(&s->wbuf);
    }
    h2o_timeout_unlink(&p->kill_entry);
    h2o_timeout_unlink(&p->done_entry);
    h2o_timeout_dispose(p->loop, &p->job_tmo);
    h2o_timeout_dispose(p->loop, &p->kill_tmo);
    h2o_timeout_dispose(p->loop, &p->defer_tmo);
    free(p->engine_path);
    free(p->model_path);
    free(p->tokenizer_path);
    free(p->prediction);
    free(p->slots);
    free(p);
}
