/* pool.c: the worker pool's protocol state on the supervisor's h2o evloop: frames over each worker's
 * socketpair without ever blocking, worker states, idle heartbeats, job dispatch, reloads, and every job
 * ended exactly once. Process control (spawn, reap, kill, backoff) is pool_proc.c. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "pool_int.h"

static const char *const state_names[] = {"loading", "ready", "busy", "restarting", "failed", "stopped"};

const char *sdw_pool_state_name(sdw_worker_state st)
{
    return (unsigned)st < sizeof state_names / sizeof *state_names ? state_names[st] : "?";
}

/* ---- small helpers ---- */

const char *pool_job_name(const sdw_pool *p, uint64_t job, char *buf, size_t len)
{
    const char *name = p->ev.job_name ? p->ev.job_name(p->ud, job) : NULL;
    if (name) return name;
    snprintf(buf, len, "%016llx", (unsigned long long)job);
    return buf;
}

static void emit_state(pool_slot *s)
{
    if (s->pool->ev.worker_state && !s->pool->starting)
        s->pool->ev.worker_state(s->pool->ud, s->index, s->state);
}

void pool_set_state(pool_slot *s, sdw_worker_state st)
{
    if (s->state == st) return;
    s->state = st;
    pool_beat_update(s);
    emit_state(s);
}

static void touch_job_timer(pool_slot *s)
{
    h2o_timeout_unlink(&s->job_entry);
    if (s->has_job && s->pool->job_timeout_s > 0)
        h2o_timeout_link(s->pool->loop, &s->pool->job_tmo, &s->job_entry);
}

/* Drops the connection (the process, if any, is reaped separately). Queued bytes go with it. */
void pool_close_conn(pool_slot *s)
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
    h2o_timeout_unlink(&s->beat_entry);
    s->ping_out = 0;
}

static void on_write(h2o_socket_t *sock, const char *err);

void pool_flush(pool_slot *s)
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
    pool_close_conn(s);
    if (s->pid > 0 && !s->killed) pool_arm_slot_timer(s, POOL_EOF_GRACE_MS);
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
    pool_flush(s);
}

static void protocol_violation(pool_slot *s, const char *what)
{
    char msg[320];
    snprintf(msg, sizeof msg, "protocol violation: %s", what);
    sdw_log(SDW_LOG_ERROR, "worker_protocol_error", "slot=%d device=%s pid=%d error=\"%s\"", s->index,
            s->dev.name, (int)s->pid, what);
    pool_kill(s, KILL_PROTOCOL, msg);
}

/* ---- idle heartbeat ---- */

/* A worker stopped (SIGSTOP, a debugger, a stuck page fault) while idle would otherwise stay READY and take
 * the next job into job_timeout_s of silence; a ping it cannot answer within one beat finds it first. */
static void on_beat(h2o_timeout_entry_t *entry)
{
    pool_slot *s = H2O_STRUCT_FROM_MEMBER(pool_slot, beat_entry, entry);
    sdw_pool *p = s->pool;
    if (!s->sock || s->killed) return;
    if (s->has_job) {
        /* a sound worker sends started as soon as it reads the job: one that has not within a beat stopped
         * before it began, so the job can go elsewhere now rather than after job_timeout_s */
        if (s->job_started) return;
        char msg[128];
        snprintf(msg, sizeof msg, "no started frame within %d ms of its job", p->heartbeat_ms);
        sdw_log(SDW_LOG_ERROR, "worker_unresponsive", "slot=%d device=%s pid=%d heartbeat_ms=%d busy=1",
                s->index, s->dev.name, (int)s->pid, p->heartbeat_ms);
        pool_kill(s, KILL_HEARTBEAT, msg);
        return;
    }
    if (s->state != SDW_WS_READY) return;
    if (s->ping_out) {
        char msg[128];
        snprintf(msg, sizeof msg, "no pong to a ping within %d ms while idle", p->heartbeat_ms);
        sdw_log(SDW_LOG_ERROR, "worker_unresponsive", "slot=%d device=%s pid=%d heartbeat_ms=%d busy=0",
                s->index, s->dev.name, (int)s->pid, p->heartbeat_ms);
        pool_kill(s, KILL_HEARTBEAT, msg);
        return;
    }
    if (sdw_frame_ping(&s->out) == 0) {
        s->ping_out = 1;
        pool_flush(s);
    }
    h2o_timeout_link(p->loop, &p->beat_tmo, &s->beat_entry);
}

/* The beat runs while a worker is idle (pings) and from a job's dispatch until its started frame. */
void pool_beat_update(pool_slot *s)
{
    sdw_pool *p = s->pool;
    int live = p->heartbeat_ms > 0 && s->sock && !s->killed && !p->shutting_down;
    int want = live && (s->has_job ? !s->job_started : s->state == SDW_WS_READY && !s->stop_sent);
    if (want == h2o_timeout_is_linked(&s->beat_entry)) return;
    if (want) {
        s->ping_out = 0;
        h2o_timeout_link(p->loop, &p->beat_tmo, &s->beat_entry);
    } else {
        h2o_timeout_unlink(&s->beat_entry);
    }
}

/* ---- reload: retiring the old generation ---- */

static int successor_serves(const sdw_pool *p)
{
    for (int i = 0; i < p->n; i++) {
        const pool_slot *s = p->slots[i];
        if (!s->retiring && (s->state == SDW_WS_READY || s->state == SDW_WS_BUSY)) return 1;
    }
    return 0;
}

/* An old worker keeps serving until a new one can, so a reload never leaves the service without capacity
 * (nor one whose new model does not load); one that runs a job finishes it first. */
void pool_retire_check(sdw_pool *p)
{
    if (p->shutting_down) return;
    int succ = successor_serves(p);
    for (int i = 0; i < p->n; i++) {
        pool_slot *s = p->slots[i];
        if (!s->retiring || s->retired) continue;
        if (s->pid <= 0) {
            h2o_timeout_unlink(&s->tmo_entry);
            s->retired = 1;
            pool_set_state(s, SDW_WS_STOPPED);
            continue;
        }
        if (s->has_job || s->stop_sent || s->killed) continue;
        if (s->state == SDW_WS_READY && !succ) continue;
        s->stop_sent = 1;
        pool_beat_update(s);
        sdw_log(SDW_LOG_INFO, "worker_retire", "slot=%d device=%s pid=%d state=%s", s->index, s->dev.name,
                (int)s->pid, sdw_pool_state_name(s->state));
        if (s->sock && sdw_frame_shutdown(&s->out) == 0) pool_flush(s);
        kill(s->pid, SIGTERM);
        pool_arm_slot_timer(s, POOL_EOF_GRACE_MS); /* one that ignores both is killed */
    }
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
    pool_beat_update(s);
    if (s->pool->ev.job_done) s->pool->ev.job_done(s->pool->ud, job, o);
    if (s->state == SDW_WS_READY) emit_state(s);
    if (s->retiring) pool_retire_check(s->pool);
}

/* A GPU worker's memory figures, from any frame that carries them (ready, and the frames ending a job). */
static void take_vram(pool_slot *s, const sdw_frame *f)
{
    if (!f->vram.has) return;
    s->has_vram = 1;
    s->vram_free = f->vram.free_bytes;
    s->vram_total = f->vram.total_bytes;
}

static int busy_with(const pool_slot *s, uint64_t job)
{
    return s->state == SDW_WS_BUSY && s->has_job && s->job == job;
}

static void handle_frame(pool_slot *s, const sdw_frame *f)
{
    sdw_pool *p = s->pool;
    char what[200], n1[24], n2[24];
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
        sdw_log(SDW_LOG_DEBUG, "worker_hello", "slot=%d device=%s state=%s", s->index, s->dev.name,
                f->u.hello.state);
        return;
    case SDW_FRAME_READY:
        /* a FAILED slot's retry loads while the slot stays FAILED */
        if (!s->hello_seen || (s->state != SDW_WS_LOADING && s->state != SDW_WS_FAILED)) {
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
        s->native_size = f->u.ready.native_size;
        s->bf16 = f->u.ready.bf16;
        take_vram(s, f);
        s->ready_at = h2o_now(p->loop);
        s->last_error[0] = '\0';
        s->failed_at = 0;
        if (s->has_vram)
            sdw_log(SDW_LOG_INFO, "worker_ready",
                    "slot=%d device=%s pid=%d arch=%s prediction=%s model=%s hash=%s load_s=%.2f bf16=%s "
                    "vram_free_bytes=%llu vram_total_bytes=%llu",
                    s->index, s->dev.name, (int)s->pid, s->arch, s->prediction, s->model_name, s->model_hash,
                    s->load_s, s->bf16 ? "true" : "false", (unsigned long long)s->vram_free,
                    (unsigned long long)s->vram_total);
        else
            sdw_log(SDW_LOG_INFO, "worker_ready",
                    "slot=%d device=%s pid=%d arch=%s prediction=%s model=%s hash=%s load_s=%.2f bf16=%s",
                    s->index, s->dev.name, (int)s->pid, s->arch, s->prediction, s->model_name, s->model_hash,
                    s->load_s, s->bf16 ? "true" : "false");
        pool_set_state(s, SDW_WS_READY);
        if (s->state == SDW_WS_READY && !s->retiring) pool_retire_check(p);
        return;
    case SDW_FRAME_STARTED:
    case SDW_FRAME_PROGRESS:
    case SDW_FRAME_RESULT:
    case SDW_FRAME_CANCELLED:
        break;
    case SDW_FRAME_ERROR:
        if (!f->has_job) {
            /* the worker cannot go on and exits right after: it gets no job meanwhile */
            s->leaving = 1;
            snprintf(s->last_error, sizeof s->last_error, "%s: %s", f->u.error.code, f->u.error.message);
            sdw_log(SDW_LOG_ERROR, "worker_error", "slot=%d device=%s pid=%d code=%s message=\"%s\"",
                    s->index, s->dev.name, (int)s->pid, f->u.error.code, f->u.error.message);
            return;
        }
        break;
    case SDW_FRAME_PONG:
        s->ping_out = 0;
        return;
    default:
        snprintf(what, sizeof what, "the worker sent a '%s' frame", sdw_frame_type_name(f->type));
        protocol_violation(s, what);
        return;
    }
    /* the rest belong to the job this worker runs, and only to it */
    if (!busy_with(s, f->job)) {
        if (s->has_job)
            snprintf(what, sizeof what, "%s frame for job %s while running job %s",
                     sdw_frame_type_name(f->type), pool_job_name(p, f->job, n1, sizeof n1),
                     pool_job_name(p, s->job, n2, sizeof n2));
        else
            snprintf(what, sizeof what, "%s frame for job %s while %s", sdw_frame_type_name(f->type),
                     pool_job_name(p, f->job, n1, sizeof n1), sdw_pool_state_name(s->state));
        protocol_violation(s, what);
        return;
    }
    sdw_job_outcome o = {0};
    take_vram(s, f); /* the frames that end a job may say how much GPU memory it left */
    switch (f->type) {
    case SDW_FRAME_STARTED:
        if (!s->job_started) {
            s->job_started = 1;
            pool_beat_update(s);
            if (p->ev.job_started) p->ev.job_started(p->ud, s->job, s->index);
        }
        return;
    case SDW_FRAME_PROGRESS:
        if (f->u.progress.preview_len && p->ev.job_preview)
            p->ev.job_preview(p->ud, s->job, f->u.progress.step, f->u.progress.preview,
                              f->u.progress.preview_len);
        if (p->ev.job_progress)
            p->ev.job_progress(p->ud, s->job, f->u.progress.step, f->u.progress.total, f->u.progress.elapsed);
        return;
    case SDW_FRAME_RESULT:
        /* a batch's images come one frame each, in order, all saying the same count */
        if (f->u.result.index != s->images_seen || (s->images_seen && f->u.result.count != s->images_count)) {
            snprintf(what, sizeof what, "result frame for image %d of %d, expected image %d of %d",
                     f->u.result.index, f->u.result.count, s->images_seen,
                     s->images_seen ? s->images_count : f->u.result.count);
            protocol_violation(s, what);
            return;
        }
        s->images_seen++;
        s->images_count = f->u.result.count;
        o.end = SDW_JOB_COMPLETE;
        o.png = f->u.result.png;
        o.png_len = f->u.result.png_len;
        o.width = f->u.result.width;
        o.height = f->u.result.height;
        o.index = f->u.result.index;
        o.count = f->u.result.count;
        o.seed = f->u.result.seed;
        o.t_encode = f->u.result.t_encode;
        o.t_sample = f->u.result.t_sample;
        o.t_decode = f->u.result.t_decode;
        o.t_total = f->u.result.t_total;
        o.precision = f->u.result.precision;
        if (o.index + 1 < o.count) {
            if (p->ev.job_image) p->ev.job_image(p->ud, s->job, &o);
            return;
        }
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

static void on_job_timeout(h2o_timeout_entry_t *entry)
{
    pool_slot *s = H2O_STRUCT_FROM_MEMBER(pool_slot, job_entry, entry);
    char msg[160], name[24];
    const char *job = pool_job_name(s->pool, s->job, name, sizeof name);
    snprintf(msg, sizeof msg, "no frame for %d s while running job %s", s->pool->job_timeout_s, job);
    sdw_log(SDW_LOG_ERROR, "worker_timeout", "slot=%d device=%s pid=%d job=%s timeout_s=%d", s->index,
            s->dev.name, (int)s->pid, job, s->pool->job_timeout_s);
    pool_kill(s, KILL_TIMEOUT, msg);
}

/* Frames a worker wrote just before exiting may still sit unread when SIGCHLD wins the race with the read
 * callback. Its fatal error (model_load_failed before exit 2) and whether its job started are worth having;
 * the rest are dropped,
 * since the process is gone and its job ends as a crash either way. */
void pool_read_last_words(pool_slot *s)
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
                /* a started frame still unread means the job did begin: it must not run twice */
                if (f.type == SDW_FRAME_STARTED && s->has_job && f.job == s->job) s->job_started = 1;
                if (f.type == SDW_FRAME_ERROR && !f.has_job) {
                    snprintf(s->last_error, sizeof s->last_error, "%s: %s", f.u.error.code,
                             f.u.error.message);
                    sdw_log(SDW_LOG_ERROR, "worker_error", "slot=%d device=%s pid=%d code=%s message=\"%s\"",
                            s->index, s->dev.name, (int)s->pid, f.u.error.code, f.u.error.message);
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

void pool_conn_open(pool_slot *s, int fd)
{
    s->reader = sdw_frame_reader_new(SDW_FRAME_MAX_RESULT);
    s->sock = h2o_evloop_socket_create(s->pool->loop, fd, 0);
    s->sock->data = s;
    h2o_socket_read_start(s->sock, on_read);
    if (!s->reader) pool_kill(s, KILL_PROTOCOL, "out of memory for the frame reader");
}

void pool_end_job_on_exit(pool_slot *s, int had_job, uint64_t job, int started, kill_reason killed,
                          const char *how)
{
    sdw_pool *p = s->pool;
    if (!had_job || !p->ev.job_done) return;
    char msg[512];
    sdw_job_outcome o = {.end = SDW_JOB_ERROR};
    if (!started && !p->shutting_down) {
        /* nothing of the job ran: another worker (or this one, respawned) can take it as if new */
        o.end = SDW_JOB_REQUEUE;
        o.code = "worker_crashed";
        snprintf(msg, sizeof msg, "the worker on %s %s before it started the job%s%s", s->dev.name,
                 killed ? "was killed" : how, killed ? " after " : "", killed ? s->kill_msg : "");
    } else if (killed == KILL_TIMEOUT) {
        o.code = "worker_timeout";
        snprintf(msg, sizeof msg, "the worker on %s sent %s and was killed", s->dev.name, s->kill_msg);
    } else if (killed) {
        o.code = "worker_crashed";
        snprintf(msg, sizeof msg, "the worker on %s was killed after a %s", s->dev.name, s->kill_msg);
    } else if (p->shutting_down) {
        o.code = "shutting_down";
        snprintf(msg, sizeof msg, "the service shut down while the job ran (the worker on %s %s)",
                 s->dev.name, how);
    } else if (!strncmp(s->last_error, "device_failed: ", 15)) {
        /* its GPU failed (exit 5): the job's own device_failed error may not have been read before the exit
         * was, but the error without a job always comes first and says the same */
        o.code = "device_failed";
        snprintf(msg, sizeof msg, "%s", s->last_error + 15);
    } else {
        o.code = "worker_crashed";
        int changed = !strncmp(s->last_error, "model_changed", 13);
        snprintf(msg, sizeof msg, "the worker on %s %s while running the job%s%.300s", s->dev.name, how,
                 changed ? ": " : "", changed ? s->last_error : "");
    }
    o.message = msg;
    p->ev.job_done(p->ud, job, &o);
}

/* ---- public ---- */

static void slot_init(sdw_pool *p, pool_slot *s, int index)
{
    s->pool = p;
    s->index = index;
    h2o_timeout_init(p->loop, &s->tmo, 0);
    s->tmo_entry.cb = pool_on_slot_timer;
    s->job_entry.cb = on_job_timeout;
    s->beat_entry.cb = on_beat;
    msgpack_sbuffer_init(&s->out);
    msgpack_sbuffer_init(&s->wbuf);
    s->backoff_ms = p->backoff_min_ms;
    s->state = SDW_WS_LOADING;
}

static void slot_free(sdw_pool *p, pool_slot *s)
{
    if (!s) return;
    pool_close_conn(s);
    if (s->pid > 0) { /* freed without a finished shutdown: do not leave a worker behind */
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
    }
    h2o_timeout_unlink(&s->tmo_entry);
    h2o_timeout_unlink(&s->job_entry);
    h2o_timeout_unlink(&s->beat_entry);
    h2o_timeout_dispose(p->loop, &s->tmo);
    msgpack_sbuffer_destroy(&s->out);
    msgpack_sbuffer_destroy(&s->wbuf);
    free(s);
}

/* What a pool takes from cfg besides its devices: checked and copied, so a reload can fail without harm. */
typedef struct {
    char *model_path, *tokenizer_path, *prediction, *taesd_path;
    pool_slot **slots;
    int n;
} pool_plan;

static void plan_free(pool_plan *pl)
{
    free(pl->model_path);
    free(pl->tokenizer_path);
    free(pl->prediction);
    free(pl->taesd_path);
    for (int i = 0; pl->slots && i < pl->n; i++)
        free(pl->slots[i]);
    free(pl->slots);
    memset(pl, 0, sizeof *pl);
}

static int plan_make(const sdw_config *cfg, pool_plan *pl, char *err, size_t errlen)
{
    memset(pl, 0, sizeof *pl);
    if (!cfg->devices || cfg->n_devices < 1) {
        snprintf(err, errlen, "no devices configured: the pool needs at least one");
        return -1;
    }
    if (!cfg->model_path || !*cfg->model_path) {
        snprintf(err, errlen, "no model_path configured");
        return -1;
    }
    pl->n = cfg->n_devices;
    pl->slots = calloc((size_t)pl->n, sizeof *pl->slots);
    pl->model_path = strdup(cfg->model_path);
    pl->tokenizer_path = strdup(cfg->tokenizer_path ? cfg->tokenizer_path : "");
    pl->prediction = strdup(cfg->prediction ? cfg->prediction : "");
    pl->taesd_path = strdup(cfg->preview_decoder ? cfg->preview_decoder : "");
    if (!pl->slots || !pl->model_path || !pl->tokenizer_path || !pl->prediction || !pl->taesd_path) goto oom;
    for (int i = 0; i < pl->n; i++) {
        if (!(pl->slots[i] = calloc(1, sizeof **pl->slots))) goto oom;
        if (pool_slot_configure(pl->slots[i], &cfg->devices[i], err, errlen) != 0) {
            plan_free(pl);
            return -1;
        }
    }
    return 0;
oom:
    plan_free(pl);
    snprintf(err, errlen, "out of memory");
    return -1;
}

static void pool_settings(sdw_pool *p, const sdw_config *cfg)
{
    p->log_level = cfg->log_level;
    p->log_json = cfg->log_json;
    p->backoff_min_ms = cfg->restart_backoff_min_ms > 0 ? cfg->restart_backoff_min_ms : 1;
    p->backoff_max_ms =
        cfg->restart_backoff_max_ms > p->backoff_min_ms ? cfg->restart_backoff_max_ms : p->backoff_min_ms;
}

int sdw_pool_start(h2o_loop_t *loop, const sdw_config *cfg, const char *engine_path,
                   const sdw_pool_events *ev, void *ud, sdw_pool **out, char *err, size_t errlen)
{
    *out = NULL;
    pool_plan pl;
    if (plan_make(cfg, &pl, err, errlen) != 0) return -1;
    if (!engine_path || access(engine_path, X_OK) != 0) {
        snprintf(err, errlen, "worker program %s is not executable: %s", engine_path ? engine_path : "(none)",
                 strerror(engine_path ? errno : EINVAL));
        plan_free(&pl);
        return -1;
    }
    sdw_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->engine_path = strdup(engine_path))) {
        free(p);
        plan_free(&pl);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->loop = loop;
    if (ev) p->ev = *ev;
    p->ud = ud;
    p->model_path = pl.model_path;
    p->tokenizer_path = pl.tokenizer_path;
    p->prediction = pl.prediction;
    p->taesd_path = pl.taesd_path;
    p->slots = pl.slots;
    p->n = pl.n;
    pool_settings(p, cfg);
    p->job_timeout_s = cfg->job_timeout_s;
    p->heartbeat_ms = cfg->heartbeat_ms;
    /* a worker that dies while we write to it must cost us an EPIPE, not the whole supervisor */
    signal(SIGPIPE, SIG_IGN);
    h2o_timeout_init(loop, &p->job_tmo, (uint64_t)(p->job_timeout_s > 0 ? p->job_timeout_s : 1) * 1000);
    h2o_timeout_init(loop, &p->beat_tmo, (uint64_t)(p->heartbeat_ms > 0 ? p->heartbeat_ms : 1));
    h2o_timeout_init(loop, &p->kill_tmo, 0);
    h2o_timeout_init(loop, &p->defer_tmo, 0);
    p->kill_entry.cb = pool_on_kill_deadline;
    p->done_entry.cb = pool_on_done;
    for (int i = 0; i < p->n; i++)
        slot_init(p, p->slots[i], i); /* LOADING set, not announced: the caller has no pool pointer yet */
    p->starting = 1;
    for (int i = 0; i < p->n; i++)
        pool_spawn(p->slots[i]);
    p->starting = 0;
    *out = p;
    return 0;
}

int sdw_pool_reload(sdw_pool *p, const sdw_config *cfg, char *err, size_t errlen)
{
    if (p->shutting_down) {
        snprintf(err, errlen, "the pool is shutting down");
        return -1;
    }
    pool_plan pl;
    if (plan_make(cfg, &pl, err, errlen) != 0) return -1;
    /* slots retired by an earlier reload are reused, so reloads do not grow the table without end */
    int reuse = 0;
    for (int i = 0; i < p->n; i++)
        reuse += p->slots[i]->retired && p->slots[i]->pid <= 0;
    int grow = pl.n > reuse ? pl.n - reuse : 0;
    pool_slot **t = grow ? realloc(p->slots, (size_t)(p->n + grow) * sizeof *t) : p->slots;
    if (!t) {
        plan_free(&pl);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->slots = t;
    free(p->model_path);
    free(p->tokenizer_path);
    free(p->prediction);
    free(p->taesd_path);
    p->model_path = pl.model_path;
    p->tokenizer_path = pl.tokenizer_path;
    p->prediction = pl.prediction;
    p->taesd_path = pl.taesd_path;
    pool_settings(p, cfg);
    int old_n = p->n;
    for (int i = 0; i < old_n; i++)
        if (!p->slots[i]->retired) p->slots[i]->retiring = 1;
    int fresh[pl.n];
    int k = 0;
    for (int i = 0; i < old_n && k < pl.n; i++) {
        pool_slot *old = p->slots[i];
        if (!old->retired || old->pid > 0) continue;
        slot_free(p, old);
        p->slots[i] = pl.slots[k];
        fresh[k++] = i;
    }
    for (; k < pl.n; k++) {
        p->slots[p->n] = pl.slots[k];
        fresh[k] = p->n++;
    }
    free(pl.slots);
    sdw_log(SDW_LOG_INFO, "pool_reload", "workers=%d model=%s slots=%d", pl.n, p->model_path, p->n);
    for (k = 0; k < pl.n; k++) {
        pool_slot *s = p->slots[fresh[k]];
        slot_init(p, s, fresh[k]);
        emit_state(s);
        pool_spawn(s);
    }
    pool_retire_check(p);
    return 0;
}

int sdw_pool_size(const sdw_pool *p)
{
    return p->n;
}

int sdw_pool_slot_info(const sdw_pool *p, int slot, sdw_slot_info *out)
{
    memset(out, 0, sizeof *out);
    out->state = SDW_WS_STOPPED;
    if (slot < 0 || slot >= p->n) return -1;
    const pool_slot *s = p->slots[slot];
    out->state = s->state;
    out->pid = (int)s->pid;
    out->restarts = s->restarts;
    out->jobs_served = s->jobs_served;
    out->retiring = s->retiring && !s->retired;
    out->retired = s->retired;
    if (s->state == SDW_WS_FAILED && s->failed_at)
        out->failed_s = (double)(h2o_now(p->loop) - s->failed_at) / 1000.0;
    snprintf(out->device, sizeof out->device, "%s", s->dev.name);
    snprintf(out->arch, sizeof out->arch, "%s", s->arch);
    snprintf(out->prediction, sizeof out->prediction, "%s", s->prediction);
    snprintf(out->model_hash, sizeof out->model_hash, "%s", s->model_hash);
    snprintf(out->model_name, sizeof out->model_name, "%s", s->model_name);
    out->native_size = s->native_size;
    out->bf16 = s->bf16;
    out->has_vram = s->has_vram;
    out->vram_free_bytes = s->has_vram ? s->vram_free : 0;
    out->vram_total_bytes = s->has_vram ? s->vram_total : 0;
    snprintf(out->last_error, sizeof out->last_error, "%s", s->last_error);
    return 0;
}

static int can_take(const pool_slot *s)
{
    return s->state == SDW_WS_READY && s->sock && !s->has_job && !s->stop_sent && !s->killed && !s->leaving;
}

int sdw_pool_idle_slot(const sdw_pool *p)
{
    if (p->shutting_down) return -1;
    for (int i = 0; i < p->n; i++) /* the new generation first: the old one is on its way out */
        if (!p->slots[i]->retiring && can_take(p->slots[i])) return i;
    for (int i = 0; i < p->n; i++)
        if (can_take(p->slots[i])) return i;
    return -1;
}

int sdw_pool_can_ever_serve(const sdw_pool *p)
{
    if (p->shutting_down) return 0;
    for (int i = 0; i < p->n; i++) {
        const pool_slot *s = p->slots[i];
        if (s->state != SDW_WS_FAILED && s->state != SDW_WS_STOPPED) return 1;
    }
    return 0;
}

int sdw_pool_submit(sdw_pool *p, int slot, uint64_t job, const sdw_gen_request *req)
{
    if (slot < 0 || slot >= p->n || p->shutting_down) return -1;
    pool_slot *s = p->slots[slot];
    if (!can_take(s)) return -1;
    if (sdw_frame_job(&s->out, job, req) != 0) {
        char name[24];
        sdw_log(SDW_LOG_ERROR, "job_encode_failed", "slot=%d job=%s", slot,
                pool_job_name(p, job, name, sizeof name));
        return -1;
    }
    s->has_job = 1;
    s->job = job;
    s->job_started = 0;
    s->cancel_sent = 0;
    s->images_seen = s->images_count = 0;
    h2o_timeout_unlink(&s->beat_entry); /* the idle beat becomes the job's start deadline, from now */
    touch_job_timer(s);
    pool_flush(s);
    pool_set_state(s, SDW_WS_BUSY);
    return 0;
}

void sdw_pool_cancel(sdw_pool *p, uint64_t job)
{
    for (int i = 0; i < p->n; i++) {
        pool_slot *s = p->slots[i];
        if (busy_with(s, job) && s->sock && !s->cancel_sent && !s->killed) {
            if (sdw_frame_cancel(&s->out, job) == 0) {
                s->cancel_sent = 1;
                pool_flush(s);
            }
            return;
        }
    }
}

void sdw_pool_free(sdw_pool *p)
{
    if (!p) return;
    for (int i = 0; i < p->n; i++)
        slot_free(p, p->slots[i]);
    h2o_timeout_unlink(&p->kill_entry);
    h2o_timeout_unlink(&p->done_entry);
    h2o_timeout_dispose(p->loop, &p->job_tmo);
    h2o_timeout_dispose(p->loop, &p->beat_tmo);
    h2o_timeout_dispose(p->loop, &p->kill_tmo);
    h2o_timeout_dispose(p->loop, &p->defer_tmo);
    free(p->engine_path);
    free(p->model_path);
    free(p->tokenizer_path);
    free(p->prediction);
    free(p->taesd_path);
    free(p->slots);
    free(p);
}
