/* server.c: the supervisor's lifecycle: h2o listener and evloop, worker pool and job registry wiring,
 * signals on a signalfd, sd_notify, TTL sweeps, and the drain-then-stop shutdown (see server.h). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "log.h"
#include "notify.h"
#include "server.h"
#include "srv.h"

/* How long workers get between SIGTERM and SIGKILL once the drain is over, and how long finished
 * streams may take to reach slow clients before the process exits anyway. */
#define SDW_KILL_AFTER_MS 3000
#define SDW_FLUSH_MS 5000

double sdw_srv_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void sdw_srv_worker_counts(const sdw_srv *s, int *ready, int *busy, int *loading)
{
    int r = 0, b = 0, l = 0;
    int n = s->pool ? sdw_pool_size(s->pool) : 0;
    for (int i = 0; i < n; i++) {
        sdw_slot_info wi;
        sdw_pool_slot_info(s->pool, i, &wi);
        sdw_worker_state st = wi.state;
        r += st == SDW_WS_READY;
        b += st == SDW_WS_BUSY;
        l += st == SDW_WS_LOADING;
    }
    if (ready) *ready = r;
    if (busy) *busy = b;
    if (loading) *loading = l;
}

int sdw_srv_native_size(const sdw_srv *s)
{
    int n = s->pool ? sdw_pool_size(s->pool) : 0, old = 0;
    for (int i = 0; i < n; i++) {
        sdw_slot_info wi;
        if (sdw_pool_slot_info(s->pool, i, &wi) != 0 || wi.retired || wi.native_size <= 0) continue;
        if (wi.state != SDW_WS_READY && wi.state != SDW_WS_BUSY) continue;
        if (!wi.retiring) return wi.native_size;
        if (!old) old = wi.native_size;
    }
    return old;
}

sdw_validate_limits sdw_srv_job_limits(const sdw_srv *s)
{
    sdw_validate_limits lim = s->limits;
    lim.default_size = sdw_srv_native_size(s);
    return lim;
}

/* STATUS= on every change, and READY=1 once we listen and a worker can take a job. */
static void update_notify(sdw_srv *s)
{
    int ready, busy, loading;
    sdw_srv_worker_counts(s, &ready, &busy, &loading);
    char status[sizeof s->notified_status];
    snprintf(status, sizeof status, "%d ready, %d busy, %d loading; %d queued, %d running%s", ready, busy,
             loading, s->jobs ? sdw_jobs_queued(s->jobs) : 0, s->jobs ? sdw_jobs_running(s->jobs) : 0,
             s->phase == SDW_SRV_RUNNING ? "" : "; shutting down");
    if (!s->notified_ready && s->phase == SDW_SRV_RUNNING && s->listener && ready + busy > 0) {
        s->notified_ready = 1;
        snprintf(s->notified_status, sizeof s->notified_status, "%s", status);
        sdw_notifyf("READY=1\nSTATUS=%s", status);
        sdw_log(SDW_LOG_INFO, "ready", "addr=%s", s->listen_addr);
        return;
    }
    if (strcmp(status, s->notified_status)) {
        snprintf(s->notified_status, sizeof s->notified_status, "%s", status);
        sdw_notifyf("STATUS=%s", status);
    }
}

/* ---- shutdown ---- */

static void finish(sdw_srv *s)
{
    s->phase = SDW_SRV_DONE;
}

static void on_pool_stopped(void *ud)
{
    sdw_srv *s = ud;
    s->pool_stopped = 1;
    sdw_log(SDW_LOG_INFO, "workers_stopped", "streams=%d", s->n_readers);
    if (s->n_readers == 0 || s->forced)
        finish(s);
    else
        h2o_timeout_link(s->loop, &s->flush_timeout, &s->flush_entry);
}

static void stop_workers(sdw_srv *s)
{
    if (h2o_timeout_is_linked(&s->grace_entry)) h2o_timeout_unlink(&s->grace_entry);
    sdw_jobs_end_all(s->jobs, 1, "shutting_down", "the service stopped before the job finished",
                     sdw_srv_now());
    s->phase = SDW_SRV_STOPPING;
    if (s->pool_stopping) return;
    s->pool_stopping = 1;
    update_notify(s);
    sdw_pool_shutdown(s->pool, s->forced ? 0 : SDW_KILL_AFTER_MS, on_pool_stopped, s);
}

static void on_grace_over(h2o_timeout_entry_t *e)
{
    sdw_srv *s = H2O_STRUCT_FROM_MEMBER(sdw_srv, grace_entry, e);
    sdw_log(SDW_LOG_WARN, "shutdown_grace_over", "running=%d", sdw_jobs_running(s->jobs));
    stop_workers(s);
}

static void on_flush_over(h2o_timeout_entry_t *e)
{
    sdw_srv *s = H2O_STRUCT_FROM_MEMBER(sdw_srv, flush_entry, e);
    sdw_log(SDW_LOG_WARN, "shutdown_flush_over", "streams=%d", s->n_readers);
    finish(s);
}

static void on_drain_check(h2o_timeout_entry_t *e)
{
    sdw_srv *s = H2O_STRUCT_FROM_MEMBER(sdw_srv, drain_check_entry, e);
    if (s->phase == SDW_SRV_DRAINING && sdw_jobs_running(s->jobs) == 0) stop_workers(s);
}

static void begin_shutdown(sdw_srv *s, int signo)
{
    char sig[16];
    snprintf(sig, sizeof sig, "%s", signo == SIGINT ? "SIGINT" : "SIGTERM");
    if (s->phase == SDW_SRV_RUNNING) {
        sdw_log(SDW_LOG_INFO, "shutdown", "signal=%s running=%d queued=%d grace_s=%d", sig,
                sdw_jobs_running(s->jobs), sdw_jobs_queued(s->jobs), s->cfg->shutdown_grace_s);
        s->phase = SDW_SRV_DRAINING;
        sdw_notify("STOPPING=1");
        sdw_accept_close(s);
        h2o_context_request_shutdown(&s->ctx);
        sdw_jobs_pause(s->jobs, 1);
        sdw_jobs_end_all(s->jobs, 0, "shutting_down", "the service is shutting down; the job had not started",
                         sdw_srv_now());
        if (sdw_jobs_running(s->jobs) == 0)
            stop_workers(s);
        else
            h2o_timeout_link(s->loop, &s->grace_timeout, &s->grace_entry);
        update_notify(s);
        return;
    }
    /* a second signal: stop now */
    sdw_log(SDW_LOG_WARN, "shutdown_forced", "signal=%s running=%d", sig, sdw_jobs_running(s->jobs));
    s->forced = 1;
    if (!s->pool_stopping)
        stop_workers(s);
    else
        finish(s);
}

void sdw_srv_stream_closed(sdw_srv *s)
{
    if (s->pool_stopped && s->n_readers == 0 && s->phase != SDW_SRV_DONE) finish(s);
}

/* ---- jobs <-> pool ---- */

void sdw_srv_on_job_event(sdw_srv *s, sdw_job *job, sdw_job_event ev)
{
    switch (ev) {
    case SDW_JEV_STARTED: {
        sdw_slot_info wi;
        sdw_log(SDW_LOG_INFO, "job_started", "job=%s device=%s queued_s=%.3f", job->id,
                job->slot >= 0 && s->pool && sdw_pool_slot_info(s->pool, job->slot, &wi) == 0 ? wi.device
                                                                                              : "?",
                job->t_dispatched > 0 ? job->t_dispatched - job->t_created : 0.0);
        break;
    }
    case SDW_JEV_PROGRESS:
        sdw_metrics_step(s->metrics, job->last_step_s);
        break;
    case SDW_JEV_END: {
        double d = job->t_ended - (job->t_dispatched > 0 ? job->t_dispatched : job->t_created);
        if (job->status == SDW_JST_COMPLETE) {
            sdw_metrics_job_completed(s->metrics, d);
            sdw_log(SDW_LOG_INFO, "job_complete", "job=%s seconds=%.3f images=%d bytes=%zu", job->id, d,
                    job->n_images, job->images_bytes);
        } else if (job->status == SDW_JST_ERROR) {
            sdw_metrics_job_failed(s->metrics, job->err_code);
            sdw_log(SDW_LOG_WARN, "job_error", "job=%s code=%s message=%s", job->id, job->err_code,
                    job->err_message);
        } else {
            sdw_metrics_job_cancelled(s->metrics);
            sdw_log(SDW_LOG_INFO, "job_cancelled", "job=%s", job->id);
        }
        if (s->phase == SDW_SRV_DRAINING && sdw_jobs_running(s->jobs) == 0 &&
            !h2o_timeout_is_linked(&s->drain_check_entry))
            /* not from inside the pool's callback: stopping the pool re-enters it */
            h2o_timeout_link(s->loop, &s->ctx.zero_timeout, &s->drain_check_entry);
        break;
    }
    default:
        break;
    }
    if (ev != SDW_JEV_PROGRESS) update_notify(s);
}

static int ops_idle_slot(void *ud)
{
    sdw_srv *s = ud;
    return s->pool && s->phase == SDW_SRV_RUNNING ? sdw_pool_idle_slot(s->pool) : -1;
}

static int ops_submit(void *ud, int slot, sdw_job *job)
{
    sdw_srv *s = ud;
    if (job->req.width <= 0 || job->req.height <= 0) {
        /* a size left to the model while no worker was ready: this worker's native size, within the limits
         * (512 from a worker too old to report one) */
        sdw_slot_info wi;
        sdw_pool_slot_info(s->pool, slot, &wi);
        int side = wi.native_size > 0 ? wi.native_size : 512;
        if (job->req.width <= 0) job->req.width = side < s->limits.max_width ? side : s->limits.max_width;
        if (job->req.height <= 0) job->req.height = side < s->limits.max_height ? side : s->limits.max_height;
    }
    return sdw_pool_submit(s->pool, slot, job->num, &job->req);
}

static void ops_cancel(void *ud, sdw_job *job)
{
    sdw_srv *s = ud;
    if (s->pool) sdw_pool_cancel(s->pool, job->num);
}

static void ops_event(void *ud, sdw_job *job, sdw_job_event ev)
{
    sdw_srv_on_job_event(ud, job, ev);
}

static void pool_worker_state(void *ud, int slot, sdw_worker_state st)
{
    sdw_srv *s = ud;
    if (!s->pool) return; /* a report from inside sdw_pool_start: nothing to act on yet */
    sdw_log(SDW_LOG_DEBUG, "worker_state", "slot=%d state=%s", slot, sdw_pool_state_name(st));
    if (st == SDW_WS_READY) sdw_jobs_dispatch(s->jobs, sdw_srv_now());
    if (s->phase == SDW_SRV_RUNNING && !sdw_pool_can_ever_serve(s->pool) && sdw_jobs_queued(s->jobs) > 0)
        sdw_jobs_end_all(s->jobs, 0, "unavailable", "no worker can serve: every worker failed",
                         sdw_srv_now());
    update_notify(s);
}

static void pool_job_started(void *ud, uint64_t job, int slot)
{
    sdw_srv *s = ud;
    sdw_jobs_started(s->jobs, job, slot, sdw_srv_now());
}

static void pool_job_progress(void *ud, uint64_t job, int step, int total, double elapsed_s)
{
    sdw_srv *s = ud;
    sdw_jobs_progress(s->jobs, job, step, total, elapsed_s, sdw_srv_now());
}

static void pool_job_preview(void *ud, uint64_t job, int step, const uint8_t *png, size_t len)
{
    sdw_srv *s = ud;
    sdw_jobs_preview(s->jobs, job, step, png, len);
}

static const char *pool_job_name(void *ud, uint64_t num)
{
    sdw_srv *s = ud;
    sdw_job *job = s->jobs ? sdw_jobs_get(s->jobs, num) : NULL;
    return job ? job->id : NULL;
}

static void pool_job_done(void *ud, uint64_t job, const sdw_job_outcome *o)
{
    sdw_srv *s = ud;
    sdw_jobs_done(s->jobs, job, o, sdw_srv_now());
}

static void pool_job_image(void *ud, uint64_t job, const sdw_job_outcome *o)
{
    sdw_srv *s = ud;
    sdw_jobs_image(s->jobs, job, o, sdw_srv_now());
}

/* ---- timers ---- */

static void on_sweep(h2o_timeout_entry_t *e)
{
    sdw_srv *s = H2O_STRUCT_FROM_MEMBER(sdw_srv, sweep_entry, e);
    int n = sdw_jobs_expire(s->jobs, sdw_srv_now());
    if (n) sdw_log(SDW_LOG_DEBUG, "jobs_expired", "count=%d", n);
    h2o_timeout_link(s->loop, &s->sweep_timeout, &s->sweep_entry);
}

static void on_watchdog(h2o_timeout_entry_t *e)
{
    sdw_srv *s = H2O_STRUCT_FROM_MEMBER(sdw_srv, watchdog_entry, e);
    sdw_notify("WATCHDOG=1");
    h2o_timeout_link(s->loop, &s->watchdog_timeout, &s->watchdog_entry);
}

/* ---- sockets ---- */

static void on_signal(h2o_socket_t *sock, const char *err)
{
    (void)err;
    sdw_srv *s = sock->data;
    int fd = h2o_socket_get_fd(sock);
    struct signalfd_siginfo si[8];
    int chld = 0;
    for (;;) {
        ssize_t n = read(fd, si, sizeof si);
        if (n <= 0) break;
        for (size_t i = 0; i < (size_t)n / sizeof *si; i++) {
            switch (si[i].ssi_signo) {
            case SIGCHLD:
                chld = 1;
                break;
            case SIGTERM:
            case SIGINT:
                begin_shutdown(s, (int)si[i].ssi_signo);
                break;
            case SIGHUP: {
                /* the configuration first, then the keys file it names (a bad one keeps the old keys) */
                sdw_srv_reload(s);
                char err[512];
                if (sdw_auth_init(s->cfg->api_keys_file, s->cfg->max_queued_per_key, err, sizeof err) != 0)
                    sdw_log(SDW_LOG_WARN, "keys_reload_failed", "reason=%s", err);
                else
                    sdw_log(SDW_LOG_INFO, "keys_reloaded", "keys=%d", sdw_auth_count());
                break;
            }
            }
        }
    }
    if (chld && s->pool) sdw_pool_reap(s->pool);
}

static int bind_listener(sdw_srv *s, char *err, size_t errlen)
{
    const sdw_config *cfg = s->cfg;
    char host[256];
    snprintf(host, sizeof host, "%s", cfg->listen_host ? cfg->listen_host : "");
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->listen_port);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(host[0] && strcmp(host, "*") ? host : NULL, port, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "listen address %s:%s: %s", host, port, gai_strerror(gai));
        return -1;
    }
    int fd = -1, saved = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0) break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on %s:%s: %s", host, port, strerror(saved));
        return -1;
    }
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    char nh[NI_MAXHOST], ns[NI_MAXSERV];
    if (getnameinfo((struct sockaddr *)&sa, sl, nh, sizeof nh, ns, sizeof ns,
                    NI_NUMERICHOST | NI_NUMERICSERV) == 0)
        snprintf(s->listen_addr, sizeof s->listen_addr,
                 sa.ss_family == AF_INET6 ? "[%.100s]:%.8s" : "%.100s:%.8s", nh, ns);
    else
        snprintf(s->listen_addr, sizeof s->listen_addr, "%.100s:%.8s", host, port);
    s->listener = h2o_evloop_socket_create(s->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    s->listener->data = s;
    return 0;
}

static int setup_signals(sdw_srv *s, char *err, size_t errlen)
{
    signal(SIGPIPE, SIG_IGN);
    /* blocked before any worker is forked; the pool restores the mask in the child before exec */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0) {
        snprintf(err, errlen, "sigprocmask: %s", strerror(errno));
        return -1;
    }
    int fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "signalfd: %s", strerror(errno));
        return -1;
    }
    s->sigsock = h2o_evloop_socket_create(s->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    s->sigsock->data = s;
    h2o_socket_read_start(s->sigsock, on_signal);
    return 0;
}

static void setup_h2o(sdw_srv *s)
{
    const sdw_config *cfg = s->cfg;
    h2o_globalconf_t *gc = &s->globalconf;
    h2o_config_init(gc);
    gc->server_name = h2o_iovec_init(H2O_STRLIT("sd-worker/" SDW_VERSION));
    /* h2o refuses larger bodies itself, with a plain-text 413, before our handler sees them; up to this
     * size the handler answers the JSON 413 of the API (see docs/api.md) */
    size_t cap = cfg->max_body_bytes;
    gc->max_request_entity_size = cap < ((size_t)1 << 40) ? cap * 4 + 65536 : cap;
    /* h2o 2.2's HTTP/1 has one timer for a connection waiting on a request: keep-alive idleness and
     * receiving the request share it, so it gets the shorter of the two settings */
    int t = cfg->idle_timeout_s < cfg->request_timeout_s ? cfg->idle_timeout_s : cfg->request_timeout_s;
    gc->http1.req_timeout = (uint64_t)(t > 0 ? t : 1) * 1000;
    gc->http2.idle_timeout = (uint64_t)(cfg->idle_timeout_s > 0 ? cfg->idle_timeout_s : 1) * 1000;
    /* libh2o 2.2.5 has no defence against HTTP/2 rapid reset (CVE-2023-44487): h2c stays off unless
     * server.http2 asks for it. h2o 2.2 gates both the prior-knowledge preface and Upgrade: h2c on this. */
    gc->http1.upgrade_to_http2 = cfg->http2;
    gc->http2.max_concurrent_requests_per_connection = 16;
    h2o_hostconf_t *host = h2o_config_register_host(gc, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    sdw_framing_register(s, path);
    sdw_h2_limit_register(path);
    sdw_routes_register(s, path);
    sdw_access_log_register(s, path);
    /* a request no path matches is answered by h2o itself, and what follows it would be parsed next */
    sdw_framing_register(s, &host->fallback_path);
    sdw_access_log_register(s, &host->fallback_path);
    s->loop = h2o_evloop_create();
    h2o_context_init(&s->ctx, s->loop, gc);
    s->accept_ctx.ctx = &s->ctx;
    s->accept_ctx.hosts = gc->hosts;
}

static void setup_timers(sdw_srv *s)
{
    h2o_timeout_init(s->loop, &s->sweep_timeout, 1000);
    s->sweep_entry.cb = on_sweep;
    h2o_timeout_link(s->loop, &s->sweep_timeout, &s->sweep_entry);
    h2o_timeout_init(s->loop, &s->keepalive_timeout, SDW_SSE_KEEPALIVE_MS);
    h2o_timeout_init(s->loop, &s->grace_timeout,
                     (uint64_t)(s->cfg->shutdown_grace_s > 0 ? s->cfg->shutdown_grace_s : 0) * 1000);
    s->grace_entry.cb = on_grace_over;
    h2o_timeout_init(s->loop, &s->flush_timeout, SDW_FLUSH_MS);
    s->flush_entry.cb = on_flush_over;
    s->drain_check_entry.cb = on_drain_check;
    uint64_t wd = sdw_notify_watchdog_usec();
    h2o_timeout_init(s->loop, &s->watchdog_timeout, wd ? (wd / 2000 ? wd / 2000 : 1) : 1000);
    s->watchdog_entry.cb = on_watchdog;
    if (wd) h2o_timeout_link(s->loop, &s->watchdog_timeout, &s->watchdog_entry);
}

static void teardown(sdw_srv *s)
{
    h2o_timeout_entry_t *entries[] = {&s->sweep_entry, &s->grace_entry, &s->flush_entry, &s->watchdog_entry,
                                      &s->drain_check_entry};
    for (size_t i = 0; i < sizeof entries / sizeof *entries; i++)
        if (h2o_timeout_is_linked(entries[i])) h2o_timeout_unlink(entries[i]);
    /* every job has ended by now; freeing them tells any still-subscribed stream to let go */
    sdw_jobs_free(s->jobs);
    s->jobs = NULL;
    if (s->pool && s->pool_stopped) sdw_pool_free(s->pool);
    s->pool = NULL;
    if (s->sigsock) h2o_socket_close(s->sigsock);
    sdw_metrics_free(s->metrics);
    s->metrics = NULL;
    /* the h2o context and connections die with the process: streams may still hold buffers in them */
}

int sdw_server_run(const sdw_config *cfg, const char *engine_path)
{
    static sdw_srv srv; /* lives as long as the process: h2o callbacks and timers point into it */
    sdw_srv *s = &srv;
    memset(s, 0, sizeof *s);
    s->cfg = cfg;
    s->started_at = sdw_srv_now();
    s->limits = (sdw_validate_limits){.max_width = cfg->max_width,
                                      .max_height = cfg->max_height,
                                      .max_steps = cfg->max_steps,
                                      .max_body_bytes = cfg->max_body_bytes,
                                      .lora_dir = cfg->lora_dir,
                                      .preview_every_default = cfg->preview_every_default,
                                      .preview_every_min = cfg->preview_every_min,
                                      .preview_decoder = cfg->preview_decoder,
                                      .max_batch = cfg->max_batch,
                                      .precision = cfg->precision};
    char err[512];
    /* before any descriptor is taken: workers inherit the raised limit too */
    int nofile = sdw_accept_raise_nofile();

    s->metrics = sdw_metrics_new();
    s->keepalive_ev = sdw_rcbuf_from(": keepalive\n\n", 13);
    sdw_jobs_config jc = {cfg->node_id, cfg->queue_capacity, cfg->result_ttl_s, cfg->retry_on_crash,
                          SDW_TOMBSTONES};
    static const sdw_jobs_ops ops = {ops_idle_slot, ops_submit, ops_cancel, ops_event};
    s->jobs = sdw_jobs_new(&jc, &ops, s);
    if (!s->metrics || !s->keepalive_ev || !s->jobs) {
        sdw_log(SDW_LOG_ERROR, "startup_failed", "reason=%s", "out of memory");
        return 1;
    }
    if (sdw_auth_init(cfg->api_keys_file, cfg->max_queued_per_key, err, sizeof err) != 0) {
        sdw_log(SDW_LOG_ERROR, "startup_failed", "reason=%s", err);
        return 1;
    }
    if (cfg->api_keys_file) sdw_log(SDW_LOG_INFO, "keys_loaded", "keys=%d", sdw_auth_count());
    setup_h2o(s);
    sdw_accept_init(s, nofile);
    if (setup_signals(s, err, sizeof err) != 0 || bind_listener(s, err, sizeof err) != 0) {
        sdw_log(SDW_LOG_ERROR, "startup_failed", "reason=%s", err);
        return 1;
    }
    sdw_accept_start(s);
    sdw_log(SDW_LOG_INFO, "listening", "addr=%s", s->listen_addr);
    setup_timers(s);

    static const sdw_pool_events pev = {pool_worker_state, pool_job_started, pool_job_progress, pool_job_done,
                                        pool_job_name,     pool_job_preview, pool_job_image};
    sdw_pool *pool = NULL;
    if (sdw_pool_start(s->loop, cfg, engine_path, &pev, s, &pool, err, sizeof err) != 0) {
        sdw_log(SDW_LOG_ERROR, "startup_failed", "reason=%s", err);
        return 1;
    }
    s->pool = pool;
    update_notify(s);

    while (s->phase != SDW_SRV_DONE) {
        if (h2o_evloop_run(s->loop, INT32_MAX) != 0 && errno != EINTR) {
            sdw_log(SDW_LOG_ERROR, "evloop_failed", "errno=%d", errno);
            break;
        }
    }
    teardown(s);
    sdw_rcbuf_release(s->keepalive_ev);
    sdw_auth_free();
    sdw_log(SDW_LOG_INFO, "stopped", "");
    s->cfg = cfg;
    sdw_srv_reload_free();
    return 0;
}
