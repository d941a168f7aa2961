/* pool_proc.c: the pool's process control, kept apart from its protocol state as nginx keeps ngx_process.c
 * apart from the cycle: fork+exec a pinned worker, kill it, reap it, and respawn it with capped backoff. */
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

#include "log.h"
#include "pool_int.h"

extern char **environ;

/* Parses "0-3,6" into set; -1 with err for anything else, or a CPU this process may not run on (a worker
 * could not use it either, and a silently narrower pinning is worse than a clear refusal). */
int pool_parse_cpus(const char *list, const char *devname, cpu_set_t *set, char *err, size_t errlen)
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

int sdw_pool_device_supported(const sdw_device_config *d, char *err, size_t errlen)
{
    switch (d->kind) {
    case SDW_DEV_CPU:
        return 0;
    case SDW_DEV_CUDA:
#ifdef SDW_CUDA
        return 0;
#else
        snprintf(err, errlen,
                 "device %s: kind cuda needs a GPU backend and this build has none (use kind cpu, or an "
                 "sd-worker built with -DSDW_CUDA=ON: docs/gpu.md)",
                 d->name);
        return -1;
#endif
    }
    snprintf(err, errlen, "device %s: unknown device kind %d", d->name, (int)d->kind);
    return -1;
}

int pool_slot_configure(pool_slot *s, const sdw_device_config *d, char *err, size_t errlen)
{
    s->dev = *d;
    s->dev.name[sizeof s->dev.name - 1] = '\0';
    s->dev.cpus[sizeof s->dev.cpus - 1] = '\0';
    if (sdw_pool_device_supported(&s->dev, err, errlen)) return -1;
    if (d->threads < 0) {
        snprintf(err, errlen, "device %s: threads must be 0 (the default) or more, not %d", s->dev.name,
                 d->threads);
        return -1;
    }
    /* a cuda worker is pinned only when its entry lists cpus, as a cpu worker is */
    s->pin = s->dev.cpus[0] != '\0';
    if (s->pin && pool_parse_cpus(s->dev.cpus, s->dev.name, &s->cpus, err, errlen)) return -1;
    if (d->threads > 0) {
        s->threads = d->threads;
    } else if (d->kind == SDW_DEV_CUDA) {
        /* the GPU does the math; the CPU only does host work (latent arithmetic, PNG encoding, tokenizer) */
        s->threads =
            s->pin && CPU_COUNT(&s->cpus) < POOL_CUDA_THREADS ? CPU_COUNT(&s->cpus) : POOL_CUDA_THREADS;
    } else {
        /* one BLAS thread per CPU the worker may use: its pinning, or everything we may use */
        cpu_set_t all;
        s->threads = s->pin ? CPU_COUNT(&s->cpus)
                     : sched_getaffinity(0, sizeof all, &all) == 0 && CPU_COUNT(&all) > 0 ? CPU_COUNT(&all)
                                                                                          : 1;
    }
    return 0;
}

void pool_arm_slot_timer(pool_slot *s, uint64_t ms)
{
    h2o_timeout_unlink(&s->tmo_entry);
    s->tmo.timeout = ms; /* safe: no entry is linked to this timeout now */
    h2o_timeout_link(s->pool->loop, &s->tmo, &s->tmo_entry);
}

void pool_kill(pool_slot *s, kill_reason why, const char *msg)
{
    if (s->pid <= 0 || s->killed) return;
    s->killed = why;
    snprintf(s->kill_msg, sizeof s->kill_msg, "%s", msg);
    kill(s->pid, SIGKILL);
    pool_close_conn(s);
    h2o_timeout_unlink(&s->job_entry);
    h2o_timeout_unlink(&s->tmo_entry);
    h2o_timeout_unlink(&s->beat_entry);
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

/* A spawn that failed (descriptors, memory, fork) is a step of the crash loop: without clearing ready_at,
 * the last good worker's long uptime would reset the backoff to its minimum on every retry. */
static void spawn_failed(pool_slot *s)
{
    s->ready_at = 0;
    pool_restart_later(s, SDW_WS_RESTARTING);
}

void pool_spawn(pool_slot *s)
{
    sdw_pool *p = s->pool;
    static const char *const ours[] = {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
                                       "SDW_LOG_LEVEL", "SDW_LOG_JSON"};
    const int cuda = s->dev.kind == SDW_DEV_CUDA;
    char threads[16], e_blas[48], e_omp[48], e_level[32], e_json[32], e_gpu[48];
    snprintf(threads, sizeof threads, "%d", s->threads);
    /* a cuda worker sees its one GPU as device 0 */
    snprintf(e_gpu, sizeof e_gpu, "CUDA_VISIBLE_DEVICES=%d", s->dev.gpu);
    snprintf(e_blas, sizeof e_blas, "OPENBLAS_NUM_THREADS=%d", s->threads);
    snprintf(e_omp, sizeof e_omp, "OMP_NUM_THREADS=%d", s->threads);
    snprintf(e_level, sizeof e_level, "SDW_LOG_LEVEL=%s",
             p->log_level <= SDW_LOG_DEBUG  ? "debug"
             : p->log_level == SDW_LOG_INFO ? "info"
             : p->log_level == SDW_LOG_WARN ? "warn"
                                            : "error");
    snprintf(e_json, sizeof e_json, "SDW_LOG_JSON=%d", p->log_json ? 1 : 0);

    /* argv and envp are built before fork: the child only does async-signal-safe work */
    const char *argv[22];
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
    if (p->taesd_path && *p->taesd_path) {
        argv[a++] = "--taesd";
        argv[a++] = p->taesd_path;
    }
    argv[a++] = "--threads";
    argv[a++] = threads;
    argv[a++] = "--device";
    argv[a++] = s->dev.name;
    if (cuda) {
        argv[a++] = "--backend";
        argv[a++] = "cuda";
    }
    argv[a] = NULL;
    size_t nenv = 0;
    int has_order = 0; /* CUDA_DEVICE_ORDER set by the administrator is kept */
    while (environ && environ[nenv])
        has_order |= env_is(environ[nenv++], "CUDA_DEVICE_ORDER");
    const char **envp = malloc((nenv + 8) * sizeof *envp);
    int sv[2] = {-1, -1};
    if (!envp || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        sdw_log(SDW_LOG_ERROR, "worker_spawn_failed", "slot=%d device=%s error=\"%s\"", s->index, s->dev.name,
                envp ? strerror(errno) : "out of memory");
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
    if (cuda) {
        envp[e++] = e_gpu;
        /* gpu: N counts in PCI bus order, as nvidia-smi does (CUDA's own default puts the fastest first) */
        if (!has_order) envp[e++] = "CUDA_DEVICE_ORDER=PCI_BUS_ID";
    }
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
    s->ping_out = 0;
    s->arch[0] = s->prediction[0] = s->model_hash[0] = s->model_name[0] = '\0';
    s->native_size = 0;
    s->bf16 = 0;
    s->has_vram = 0;
    s->vram_free = s->vram_total = 0;
    s->leaving = 0;
    s->load_s = 0;
    pool_conn_open(s, sv[0]);
    sdw_log(SDW_LOG_INFO, "worker_spawn",
            "slot=%d device=%s pid=%d cpus=%s threads=%d restarts=%d backend=%s", s->index, s->dev.name,
            (int)pid, s->pin ? s->dev.cpus : "any", s->threads, s->restarts, cuda ? "cuda" : "cpu");
}

void pool_on_slot_timer(h2o_timeout_entry_t *entry)
{
    pool_slot *s = H2O_STRUCT_FROM_MEMBER(pool_slot, tmo_entry, entry);
    if (s->pid > 0) { /* disconnect grace, or a retiring worker's time to stop, ran out */
        const char *why = s->stop_sent ? "told to stop after a reload but did not exit"
                                       : "closed its socket but did not exit";
        sdw_log(SDW_LOG_WARN, "worker_kill", "slot=%d pid=%d reason=\"%s\"", s->index, (int)s->pid, why);
        pool_kill(s, KILL_DISCONNECTED, why);
        return;
    }
    if (s->pool->shutting_down || s->retiring) return;
    if (s->state == SDW_WS_RESTARTING || s->state == SDW_WS_FAILED) {
        s->restarts++;
        /* a failed slot stays FAILED while it retries: only a worker that loads is news */
        if (s->state == SDW_WS_RESTARTING) pool_set_state(s, SDW_WS_LOADING);
        pool_spawn(s);
    }
}

/* st is RESTARTING after a crash or FAILED after a load failure: both wait the same growing backoff, so a
 * model file that is fixed brings its workers back by itself. */
void pool_restart_later(pool_slot *s, sdw_worker_state st)
{
    sdw_pool *p = s->pool;
    uint64_t now = h2o_now(p->loop);
    /* a worker that stayed ready longer than the longest backoff is out of its crash loop: start over */
    if (s->ready_at && now - s->ready_at >= (uint64_t)p->backoff_max_ms) s->backoff_ms = p->backoff_min_ms;
    int delay = s->backoff_ms;
    s->backoff_ms = s->backoff_ms > p->backoff_max_ms / 2 ? p->backoff_max_ms : s->backoff_ms * 2;
    if (s->backoff_ms < 1) s->backoff_ms = 1;
    if (st == SDW_WS_FAILED && s->state != SDW_WS_FAILED) s->failed_at = now;
    pool_set_state(s, st);
    if (s->state == st && !p->shutting_down) /* the callback may have shut the pool down */
        pool_arm_slot_timer(s, (uint64_t)delay);
}

void pool_on_done(h2o_timeout_entry_t *entry)
{
    sdw_pool *p = H2O_STRUCT_FROM_MEMBER(sdw_pool, done_entry, entry);
    if (p->done) p->done(p->done_ud);
}

void pool_maybe_done(sdw_pool *p)
{
    if (!p->shutting_down || p->done_scheduled) return;
    for (int i = 0; i < p->n; i++)
        if (p->slots[i]->pid > 0) return;
    p->done_scheduled = 1;
    h2o_timeout_unlink(&p->kill_entry);
    h2o_timeout_link(p->loop, &p->defer_tmo, &p->done_entry);
}

void pool_on_kill_deadline(h2o_timeout_entry_t *entry)
{
    sdw_pool *p = H2O_STRUCT_FROM_MEMBER(sdw_pool, kill_entry, entry);
    for (int i = 0; i < p->n; i++) {
        pool_slot *s = p->slots[i];
        if (s->pid > 0) {
            sdw_log(SDW_LOG_WARN, "worker_kill",
                    "slot=%d pid=%d reason=\"still running at the shutdown deadline\"", s->index,
                    (int)s->pid);
            kill(s->pid, SIGKILL);
        }
    }
}

static void slot_exited(pool_slot *s, int status)
{
    sdw_pool *p = s->pool;
    char how[96];
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    if (code >= 0)
        snprintf(how, sizeof how, "exited with status %d", code);
    else if (sig)
        snprintf(how, sizeof how, "was killed by signal %d (%s)", sig, strsignal(sig));
    else
        snprintf(how, sizeof how, "ended with wait status 0x%x", status);
    int pid = (int)s->pid;
    s->pid = 0;
    s->has_vram = 0; /* what it reported was its own view of the GPU; the next worker reports again */
    if (!s->killed) pool_read_last_words(s);
    pool_close_conn(s);
    h2o_timeout_unlink(&s->tmo_entry);
    h2o_timeout_unlink(&s->job_entry);
    h2o_timeout_unlink(&s->beat_entry);
    int had_job = s->has_job, started = s->job_started;
    uint64_t job = s->job;
    s->has_job = 0;
    kill_reason killed = s->killed;
    s->killed = KILL_NONE;
    /* a truncated mmap'd model faults on the next page touched: the worker's SIGBUS handler exits 4, and an
     * engine without the handler dies of the signal itself */
    if (!killed && (sig == SIGBUS || code == POOL_EXIT_MODEL_CHANGED))
        snprintf(s->last_error, sizeof s->last_error,
                 "model_changed: the model file changed under the worker (it %s); replace model files "
                 "atomically: write the new file elsewhere, then mv it over the old one",
                 how);
    /* its error frame (device_failed: why) normally came first; restarted below like a crash */
    if (!killed && code == POOL_EXIT_DEVICE_FAILED && strncmp(s->last_error, "device_failed", 13))
        snprintf(s->last_error, sizeof s->last_error, "device_failed: the worker's GPU failed (it %s)", how);

    if (p->shutting_down || s->retiring) {
        sdw_log(SDW_LOG_INFO, "worker_stopped", "slot=%d device=%s pid=%d how=\"%s\" retired=%d", s->index,
                s->dev.name, pid, how, s->retiring);
        s->retired = s->retiring;
        pool_set_state(s, SDW_WS_STOPPED);
    } else if (!killed && code == 2) {
        sdw_log(SDW_LOG_ERROR, "worker_failed", "slot=%d device=%s pid=%d error=\"%s\" retry_in_ms=%d",
                s->index, s->dev.name, pid,
                s->last_error[0] ? s->last_error : "exit status 2 (fatal config or model error)",
                s->backoff_ms);
        pool_restart_later(s, SDW_WS_FAILED);
    } else {
        sdw_log(SDW_LOG_WARN, "worker_exit",
                "slot=%d device=%s pid=%d how=\"%s\" reason=\"%s\" restart_in_ms=%d", s->index, s->dev.name,
                pid, how, killed ? s->kill_msg : s->last_error, s->backoff_ms);
        /* a failed slot that crashes while it retries has still not served */
        pool_restart_later(s, s->state == SDW_WS_FAILED ? SDW_WS_FAILED : SDW_WS_RESTARTING);
    }
    pool_end_job_on_exit(s, had_job, job, started, killed, how);
    pool_maybe_done(p);
}

void sdw_pool_reap(sdw_pool *p)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        pool_slot *s = NULL;
        for (int i = 0; i < p->n && !s; i++)
            if (p->slots[i]->pid == pid) s = p->slots[i];
        if (s)
            slot_exited(s, status);
        else
            sdw_log(SDW_LOG_DEBUG, "child_reaped", "pid=%d status=0x%x", (int)pid, status);
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
        pool_slot *s = p->slots[i];
        h2o_timeout_unlink(&s->tmo_entry);
        h2o_timeout_unlink(&s->beat_entry);
        if (s->pid > 0) {
            alive++;
            if (s->sock && !s->killed && sdw_frame_shutdown(&s->out) == 0) pool_flush(s);
            kill(s->pid, SIGTERM);
        } else {
            pool_set_state(s, SDW_WS_STOPPED);
        }
    }
    if (alive) {
        sdw_log(SDW_LOG_INFO, "pool_shutdown", "workers=%d kill_after_ms=%d", alive, kill_after_ms);
        p->kill_tmo.timeout = (uint64_t)(kill_after_ms > 0 ? kill_after_ms : 0);
        h2o_timeout_link(p->loop, &p->kill_tmo, &p->kill_entry);
    }
    pool_maybe_done(p);
}
