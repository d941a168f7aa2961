/* worker_loop.c: `sd-worker-engine worker`, the process the supervisor fork+execs per device: hello, load the
 * model, ready, then one job at a time from frames on --fd, with a progress frame per step and cancel at step
 * boundaries. A GPU worker adds its device's free/total memory to ready and to each job's last frame. Exit 0
 * clean (shutdown, SIGTERM, supervisor gone), 2 fatal (bad options, model), 3 protocol error, 4 model file
 * changed (SIGBUS), 5 the GPU failed beyond recovery. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "frame.h"
#include "gen_engine.h"
#include "gen_images.h"
#include "log.h"
#include "sd_engine.h"

/* Exit statuses (docs/protocol.md); the supervisor restarts the worker after each, with backoff */
#define WORKER_EXIT_CLEAN 0
#define WORKER_EXIT_FATAL 2         /* slot "failed" until a retry loads: bad configuration or model */
#define WORKER_EXIT_PROTOCOL 3      /* the supervisor sent something we cannot follow */
#define WORKER_EXIT_MODEL_CHANGED 4 /* SIGBUS on the mmap'd model, whose file shrank under us */
#define WORKER_EXIT_DEVICE_FAILED 5 /* a sticky GPU error: only a new process (CUDA context) recovers */

/* A result buffer larger than this is given back after the frame went out instead of kept for the next job.
 */
#define WORKER_KEEP_OUT_BYTES ((size_t)8 << 20)

static volatile sig_atomic_t g_term;

/* The model is mmap'd: a file truncated or rewritten in place (not replaced by rename) faults on the next
 * page touched. Nothing can be saved from inside the fault, so say why in a fixed message and leave with the
 * status the supervisor reports as "the model file changed under the worker". */
static void on_sigbus(int sig)
{
    (void)sig;
    static const char msg[] = "level=error comp=worker event=model_changed error=\"SIGBUS reading the mmap'd "
                              "model: the file changed under the worker (replace models atomically: write "
                              "elsewhere, then mv)\"\n";
    ssize_t rc = write(2, msg, sizeof msg - 1);
    (void)rc;
    _exit(WORKER_EXIT_MODEL_CHANGED);
}

static pthread_t g_main_thread;

/* A process-directed signal goes to any thread that does not block it, and OpenBLAS starts its threads
 * before main() with TERM/INT unblocked. The main thread must be the one woken from its ppoll, so a signal
 * caught elsewhere is passed on to it (pthread_kill is async-signal-safe since POSIX.1-2008 TC1); there
 * it stays pending until the loop's ppoll lets it in. */
static void on_term(int sig)
{
    int saved = errno;
    g_term = 1;
    if (!pthread_equal(pthread_self(), g_main_thread)) pthread_kill(g_main_thread, sig);
    errno = saved;
}

typedef struct {
    int fd;
    const char *device;
    sdw_frame_reader *reader;
    msgpack_sbuffer out; /* every outgoing frame; reused, so a progress frame allocates nothing */
    char in[65536];
    size_t in_off, in_len;
    sigset_t waitmask; /* the mask during ppoll: TERM/INT deliverable only there, so no wake-up is lost */
    int stop;          /* shutdown frame, SIGTERM/SIGINT, or a protocol error: leave now */
    int gone;          /* EOF or EPIPE: the supervisor is not there any more */
    int exit_code;
    sde_engine *eng;
    int busy;
    uint64_t job;
    int cancel;
    uint8_t *preview; /* the live preview of step preview_step, until that step's progress frame takes it */
    size_t preview_len, preview_cap;
    int preview_step;
} worker;

static void usage(FILE *f)
{
    char predictions[64];
    sdw_names_list(SDW_NAMES_PREDICTION, "|", NULL, predictions, sizeof predictions);
    fprintf(
        f,
        "usage: sd-worker-engine worker --fd N --model PATH [--tokenizer PATH] [--prediction %s]\n"
        "                               [--threads N] [--device NAME] [--taesd PATH] [--backend cpu|cuda]\n"
        "\n"
        "The worker process the sd-worker supervisor starts, one per device. It speaks msgpack frames\n"
        "(docs/protocol.md) on the connected stream socket N and runs one generation at a time.\n"
        "--backend cuda runs the engine on the first GPU CUDA_VISIBLE_DEVICES leaves visible.\n"
        "Exit status: 0 clean stop, 2 bad options or the model failed to load (retried with backoff),\n"
        "3 protocol error, 4 the model file changed under it, 5 the GPU failed (all restarted).\n",
        predictions);
}

/* Waits until fd is ready for events or timeout_ms passes (-1: no limit). 1 ready, 0 timeout or a stop
 * signal. */
static int wait_fd(worker *w, short events, int timeout_ms)
{
    for (;;) {
        if (g_term) {
            w->stop = 1;
            return 0;
        }
        struct pollfd pfd = {.fd = w->fd, .events = events};
        struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
        int n = ppoll(&pfd, 1, timeout_ms < 0 ? NULL : &ts, &w->waitmask);
        if (n > 0) return 1;
        if (n == 0) return 0;
        if (errno != EINTR) {
            w->gone = 1;
            return 0;
        }
    }
}

/* Sends w->out whole (or gives up when the supervisor goes away or a stop signal comes) and empties it. */
static void send_out(worker *w)
{
    size_t off = 0;
    while (off < w->out.size && !w->gone) {
        ssize_t n = send(w->fd, w->out.data + off, w->out.size - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!wait_fd(w, POLLOUT, -1)) break;
        } else {
            w->gone = 1;
        }
    }
    msgpack_sbuffer_clear(&w->out);
}

/* Reads what the socket has, waiting up to wait_ms (-1: no limit) for something. 1 got bytes, 0 not. */
static int read_some(worker *w, int wait_ms)
{
    for (;;) {
        ssize_t n = recv(w->fd, w->in, sizeof w->in, MSG_DONTWAIT);
        if (n > 0) {
            w->in_off = 0;
            w->in_len = (size_t)n;
            return 1;
        }
        if (n == 0) {
            w->gone = 1;
            return 0;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            w->gone = 1;
            return 0;
        }
        if (wait_ms == 0 || !wait_fd(w, POLLIN, wait_ms)) return 0;
    }
}

/* The next frame from the supervisor: 1 with *f, 0 when none came within wait_ms or the worker must stop. */
static int next_frame(worker *w, sdw_frame *f, int wait_ms)
{
    char err[256];
    for (;;) {
        if (w->in_off < w->in_len)
            w->in_off += sdw_frame_reader_feed(w->reader, w->in + w->in_off, w->in_len - w->in_off);
        int rc = sdw_frame_reader_next(w->reader, f, err, sizeof err);
        if (rc == 1) return 1;
        if (rc < 0) {
            sdw_log(SDW_LOG_ERROR, "protocol_error", "device=%s error=%s", w->device, err);
            w->exit_code = WORKER_EXIT_PROTOCOL;
            w->stop = 1;
            return 0;
        }
        if (w->in_off < w->in_len) continue; /* the reader was full; next() has made room */
        if (w->stop || w->gone || !read_some(w, wait_ms)) return 0;
    }
}

static void protocol_violation(worker *w, const char *what)
{
    sdw_log(SDW_LOG_ERROR, "protocol_error", "device=%s error=%s", w->device, what);
    w->exit_code = WORKER_EXIT_PROTOCOL;
    w->stop = 1;
}

/* Handles what may arrive while a job runs: cancel (for this job), ping, shutdown. */
static void handle_during_job(worker *w, const sdw_frame *f)
{
    switch (f->type) {
    case SDW_FRAME_CANCEL:
        if (f->job == w->job) w->cancel = 1;
        break;
    case SDW_FRAME_PING:
        if (sdw_frame_pong(&w->out) == 0) send_out(w);
        break;
    case SDW_FRAME_SHUTDOWN:
        w->stop = 1;
        break;
    default: {
        char what[96];
        snprintf(what, sizeof what, "a '%s' frame while running job %016llx", sdw_frame_type_name(f->type),
                 (unsigned long long)w->job);
        protocol_violation(w, what);
    }
    }
}

static int want_out(const worker *w)
{
    return w->cancel || w->stop || w->gone;
}

/* Engine hook, between steps and stages: drain the socket without waiting. */
static int job_should_cancel(void *ud)
{
    worker *w = ud;
    sdw_frame f;
    if (g_term) w->stop = 1;
    while (!want_out(w) && next_frame(w, &f, 0) == 1) {
        handle_during_job(w, &f);
        sdw_frame_free(&f);
    }
    return want_out(w);
}

/* Engine hook when a live preview is made, right before that step's progress hook: keeps a copy for the
 * progress frame. The bytes are whatever image the engine's preview decoder made; they pass through. */
static void job_preview(void *ud, int step, int total, const uint8_t *png, size_t len, int pw, int ph)
{
    worker *w = ud;
    (void)total;
    (void)pw;
    (void)ph;
    w->preview_step = 0;
    if (len > w->preview_cap) {
        uint8_t *b = realloc(w->preview, len);
        if (!b) return; /* no preview this time: the job matters more */
        w->preview = b;
        w->preview_cap = len;
    }
    memcpy(w->preview, png, len);
    w->preview_len = len;
    w->preview_step = step;
}

/* Engine hook after every step. A preview too large for a progress frame is dropped, not the progress. */
static int job_progress(void *ud, int step, int total, double elapsed_s)
{
    worker *w = ud;
    int with = w->preview_step == step && w->preview_len > 0;
    w->preview_step = 0;
    if ((with && sdw_frame_progress_preview(&w->out, w->job, step, total, elapsed_s, w->preview,
                                            w->preview_len) == 0) ||
        sdw_frame_progress(&w->out, w->job, step, total, elapsed_s) == 0)
        send_out(w);
    return job_should_cancel(w);
}

/* The GPU's free and total memory now (v->has 0 on a CPU engine): for ready and the frame that ends a job. */
static void read_vram(const worker *w, sdw_frame_vram *v)
{
    size_t free_b = 0, total_b = 0;
    memset(v, 0, sizeof *v);
    if (w->eng && sde_engine_vram(w->eng, &free_b, &total_b) == 0) {
        v->has = 1;
        v->free_bytes = free_b;
        v->total_bytes = total_b;
    }
}

static void send_job_error(worker *w, const char *code, const char *message)
{
    sdw_log(SDW_LOG_WARN, "job_failed", "device=%s code=%s message=%s", w->device, code, message);
    sdw_frame_vram v;
    read_vram(w, &v);
    if (sdw_frame_error_vram(&w->out, 1, w->job, code, message, &v) == 0) send_out(w);
}

/* After a job: a GPU that failed beyond recovery (a sticky CUDA error) ends the job as device_failed and the
 * worker with WORKER_EXIT_DEVICE_FAILED, so that the supervisor starts a new process (a new CUDA context).
 * The error without a job goes first: the supervisor then hands this worker nothing more. 1 when it failed.
 * Out of memory for one job's buffers is not such a failure: that job alone ends with an error. */
static int device_failed(worker *w, const char *job)
{
    char why[512] = "";
    if (!sde_engine_broken(w->eng, why, sizeof why)) return 0;
    if (!why[0]) snprintf(why, sizeof why, "the GPU failed beyond recovery");
    sdw_log(SDW_LOG_ERROR, "device_failed", "device=%s job=%s error=%s", w->device, job, why);
    if (sdw_frame_error(&w->out, 0, 0, "device_failed", why) == 0) send_out(w);
    if (sdw_frame_error(&w->out, 1, w->job, "device_failed", why) == 0) send_out(w);
    w->exit_code = WORKER_EXIT_DEVICE_FAILED;
    w->stop = 1;
    return 1;
}

/* SDW_PROFILE=1: the engine's table of where the job's time went, one log line per row. */
static void log_profile(const worker *w, const char *job, const char *table)
{
    for (const char *p = table; p && *p;) {
        const char *nl = strchr(p, '\n');
        int n = nl ? (int)(nl - p) : (int)strlen(p);
        if (n > 0)
            sdw_log(SDW_LOG_INFO, "job_profile", "device=%s job=%s row=\"%.*s\"", w->device, job, n, p);
        p = nl ? nl + 1 : p + n;
    }
}

static void run_job(worker *w, const sdw_frame *jf)
{
    w->busy = 1;
    w->job = jf->job;
    w->cancel = 0;
    char job[24], steps[16], size[32];
    snprintf(job, sizeof job, "%llu", (unsigned long long)w->job);
    const sdw_gen_request *req = &jf->u.job;
    snprintf(steps, sizeof steps, "%d", req->steps);
    snprintf(size, sizeof size, "%dx%d", req->width, req->height);
    sdw_log(SDW_LOG_INFO, "job_start", "device=%s job=%s steps=%s size=%s sampler=%s schedule=%s", w->device,
            job, steps, size, sdw_sampler_name(req->sampler), sdw_schedule_name(req->schedule));
    if (sdw_frame_started(&w->out, w->job) == 0) send_out(w);
    char err[512];
    /* an unknown sampler or schedule name never gets here: the frame decoder refuses it */
    sde_gen_params p;
    sdw_gen_to_engine(req, &p);
    if (p.width <= 0 || p.height <= 0) { /* 0 = the model's native size (the supervisor normally fills it) */
        sde_model_info mi;
        sde_engine_info(w->eng, &mi);
        if (p.width <= 0) p.width = mi.default_size;
        if (p.height <= 0) p.height = mi.default_size;
    }
    p.progress = job_progress;
    p.should_cancel = job_should_cancel;
    p.ud = w;
    p.preview_every = req->preview_every;
    p.preview = req->preview_every > 0 ? job_preview : NULL;
    w->preview_step = 0;
    const char *field = NULL;
    sdw_gen_images img;
    if (sdw_gen_images_decode(req, &p, &img, &field, err, sizeof err) != 0) {
        send_job_error(w, "invalid_request", err);
        w->busy = 0;
        return;
    }
    if (sde_params_validate(&p, &field, err, sizeof err) != 0) {
        sdw_gen_images_free(&img);
        send_job_error(w, "invalid_request", err);
        w->busy = 0;
        return;
    }
    sde_result res;
    int rc = sde_generate(w->eng, &p, &res, err, sizeof err);
    sdw_gen_images_free(&img);
    if (w->stop || w->gone) {
        /* shutdown, SIGTERM or no supervisor: finish nothing */
        sde_result_free(&res);
        w->busy = 0;
        return;
    }
    /* whatever rc says: nothing the device made since it failed can be trusted */
    if (device_failed(w, job)) {
        sde_result_free(&res);
        w->busy = 0;
        return;
    }
    sdw_frame_vram vram;
    read_vram(w, &vram);
    if (rc == SDE_OK) {
        /* one result frame per image, in order: each stays under the frame limit however many there are */
        size_t bytes_all = 0;
        int sent = 0;
        for (int i = 0; i < res.n_images; i++) {
            const sde_image *im = &res.images[i];
            /* the job's last frame carries the GPU's memory after it */
            if (sdw_frame_result_vram(&w->out, w->job, i, res.n_images, im->png, im->png_len, res.width,
                                      res.height, im->seed, res.t_encode, res.t_sample, res.t_decode,
                                      res.t_total, (int)res.precision,
                                      i + 1 == res.n_images ? &vram : NULL)) {
                snprintf(err, sizeof err,
                         "the %zu-byte PNG of image %d does not fit in a %zu-byte result frame", im->png_len,
                         i, SDW_FRAME_MAX_RESULT);
                break;
            }
            bytes_all += im->png_len;
            send_out(w);
            sent++;
        }
        if (sent == res.n_images) {
            char job[24], bytes[24], te[24], ts[24], td[24], tt[24], nimg[12], tp[24];
            snprintf(job, sizeof job, "%llu", (unsigned long long)w->job);
            snprintf(bytes, sizeof bytes, "%zu", bytes_all);
            snprintf(te, sizeof te, "%.3f", res.t_encode);
            snprintf(ts, sizeof ts, "%.3f", res.t_sample);
            snprintf(td, sizeof td, "%.3f", res.t_decode);
            snprintf(tt, sizeof tt, "%.3f", res.t_total);
            snprintf(nimg, sizeof nimg, "%d", res.n_images);
            snprintf(tp, sizeof tp, "%.4f", res.t_preview);
            sdw_log(SDW_LOG_INFO, "job_done",
                    "device=%s job=%s images=%s png_bytes=%s encode_s=%s sample_s=%s decode_s=%s total_s=%s "
                    "preview_s=%s precision=%s",
                    w->device, job, nimg, bytes, te, ts, td, tt, tp,
                    res.precision == SDE_PREC_BF16 ? "bf16" : "fp32");
            log_profile(w, job, res.profile);
        } else {
            send_job_error(w, "engine_error", err);
        }
        if (w->out.alloc > WORKER_KEEP_OUT_BYTES) {
            msgpack_sbuffer_destroy(&w->out);
            msgpack_sbuffer_init(&w->out);
        }
    } else if (rc == SDE_CANCELLED) {
        char job[24];
        snprintf(job, sizeof job, "%llu", (unsigned long long)w->job);
        sdw_log(SDW_LOG_INFO, "job_cancelled", "device=%s job=%s", w->device, job);
        if (sdw_frame_cancelled_vram(&w->out, w->job, &vram) == 0) send_out(w);
    } else {
        send_job_error(w, "engine_error", err);
    }
    sde_result_free(&res);
    w->busy = 0;
}

/* The engine's warnings become log lines of this worker (the engine never writes to stderr itself). */
static void engine_warning(void *ud, const char *msg)
{
    const worker *w = ud;
    sdw_log(SDW_LOG_WARN, "engine_warning", "device=%s message=%s", w->device, msg);
}

static int parse_int_arg(const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static int log_level_from_env(void)
{
    const char *s = getenv("SDW_LOG_LEVEL");
    int lv = s ? sdw_log_level_parse(s) : -1;
    return lv >= 0 ? lv : SDW_LOG_INFO;
}

int sdw_cmd_worker(int argc, char **argv)
{
    const char *model = NULL, *tokenizer = NULL, *prediction = "auto", *device = "cpu", *taesd = NULL;
    const char *backend = NULL;
    int fd = -1, threads = 0;
    char bad[256] = "";
    enum { O_FD = 256, O_MODEL, O_TOKENIZER, O_PREDICTION, O_THREADS, O_DEVICE, O_TAESD, O_BACKEND };
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"fd", required_argument, NULL, O_FD},
        {"model", required_argument, NULL, O_MODEL},
        {"tokenizer", required_argument, NULL, O_TOKENIZER},
        {"prediction", required_argument, NULL, O_PREDICTION},
        {"threads", required_argument, NULL, O_THREADS},
        {"device", required_argument, NULL, O_DEVICE},
        {"taesd", required_argument, NULL, O_TAESD},
        {"backend", required_argument, NULL, O_BACKEND},
        {NULL, 0, NULL, 0},
    };
    /* bad options are not fatal here: once --fd is known they are reported in an error frame */
    opterr = 0;
    optind = 0;
    int c;
    while (!bad[0] && (c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return WORKER_EXIT_CLEAN;
        case O_FD:
            if (parse_int_arg(optarg, 0, INT_MAX, &fd))
                snprintf(bad, sizeof bad, "--fd '%s' is not a file descriptor number", optarg);
            break;
        case O_MODEL:
            model = optarg;
            break;
        case O_TOKENIZER:
            tokenizer = optarg;
            break;
        case O_PREDICTION:
            prediction = optarg;
            break;
        case O_THREADS:
            if (parse_int_arg(optarg, 0, 1024, &threads))
                snprintf(bad, sizeof bad, "--threads '%s' is not a number in 0..1024", optarg);
            break;
        case O_DEVICE:
            device = optarg;
            break;
        case O_TAESD:
            taesd = optarg;
            break;
        case O_BACKEND:
            backend = optarg; /* the engine refuses a name it has not built in, as model_load_failed */
            break;
        case ':':
            snprintf(bad, sizeof bad, "option '%s' needs a value", argv[optind - 1]);
            break;
        default:
            snprintf(bad, sizeof bad, "unknown option '%s'", argv[optind - 1]);
            break;
        }
    }
    if (!bad[0] && optind < argc) snprintf(bad, sizeof bad, "unexpected argument '%s'", argv[optind]);
    sde_load_opts opts = {.model_path = model,
                          .tokenizer_path = tokenizer,
                          .threads = threads,
                          .taesd_path = taesd,
                          .backend = backend,
                          .warm = 1}; /* the first job at the model's size finds its memory in place */
    if (!bad[0] && !model) snprintf(bad, sizeof bad, "--model PATH is required");
    if (!bad[0]) {
        int pr = sdw_prediction_parse(prediction);
        if (pr < 0) {
            char list[64];
            snprintf(bad, sizeof bad, "--prediction must be %s, not '%s'",
                     sdw_names_list(SDW_NAMES_PREDICTION, ", ", " or ", list, sizeof list), prediction);
        }
        opts.prediction = (sde_prediction)pr;
    }
    if (fd < 0 || fcntl(fd, F_GETFL) < 0) {
        fprintf(stderr, "sd-worker-engine worker: %s\n", fd < 0 ? "--fd N is required" : "--fd is not open");
        if (!bad[0]) usage(stderr);
        return WORKER_EXIT_FATAL;
    }
    const char *json = getenv("SDW_LOG_JSON");
    sdw_log_init(log_level_from_env(), json && !strcmp(json, "1"), "worker");

    worker *w = calloc(1, sizeof *w);
    if (!w) {
        fprintf(stderr, "sd-worker-engine worker: out of memory\n");
        return WORKER_EXIT_FATAL;
    }
    w->fd = fd;
    w->device = device;
    w->reader = sdw_frame_reader_new(SDW_FRAME_MAX_RESULT); /* job frames carry PNG inputs */
    msgpack_sbuffer_init(&w->out);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction bus;
    memset(&bus, 0, sizeof bus);
    bus.sa_handler = on_sigbus;
    sigaction(SIGBUS, &bus, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    g_main_thread = pthread_self();
    sa.sa_handler = on_term; /* no SA_RESTART: a blocked call returns EINTR and the loop sees the flag */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    sigset_t stopsigs;
    sigemptyset(&stopsigs);
    sigaddset(&stopsigs, SIGTERM);
    sigaddset(&stopsigs, SIGINT);
    sigprocmask(SIG_SETMASK, NULL, &w->waitmask);
    sigdelset(&w->waitmask, SIGTERM);
    sigdelset(&w->waitmask, SIGINT);

    if (!w->reader || sdw_frame_hello(&w->out, getpid(), device, "loading") != 0) {
        snprintf(bad, sizeof bad, "out of memory");
    } else {
        send_out(w);
    }
    if (bad[0]) {
        sdw_log(SDW_LOG_ERROR, "bad_arguments", "device=%s error=%s", device, bad);
        if (sdw_frame_error(&w->out, 0, 0, "bad_arguments", bad) == 0) send_out(w);
        w->exit_code = WORKER_EXIT_FATAL;
        goto out;
    }

    sdw_log(SDW_LOG_INFO, "model_loading", "device=%s model=%s backend=%s", device, model,
            backend && *backend ? backend : "cpu");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char err[1024];
    opts.warn = engine_warning;
    opts.warn_ud = w;
    if (sde_engine_load(&opts, &w->eng, err, sizeof err) != 0) {
        sdw_log(SDW_LOG_ERROR, "model_load_failed", "device=%s model=%s error=%s", device, model, err);
        if (sdw_frame_error(&w->out, 0, 0, "model_load_failed", err) == 0) send_out(w);
        w->exit_code = WORKER_EXIT_FATAL;
        goto out;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double load_s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    sde_model_info info;
    sde_engine_info(w->eng, &info);
    char params[24], secs[24];
    snprintf(params, sizeof params, "%lld", (long long)info.n_params);
    snprintf(secs, sizeof secs, "%.2f", load_s);
    sdw_log(SDW_LOG_INFO, "model_loaded",
            "device=%s arch=%s prediction=%s prediction_from=%s model=%s hash=%s params=%s load_s=%s", device,
            info.arch, info.prediction, info.prediction_source, info.model_name, info.model_hash, params,
            secs);
    /* from here SIGTERM/SIGINT arrive only inside ppoll, where the loop is ready to act on them */
    sigprocmask(SIG_BLOCK, &stopsigs, NULL);
    if (g_term) goto out;
    sdw_frame_vram vram;
    read_vram(w, &vram);
    if (sdw_frame_ready_vram(&w->out, info.arch, info.prediction, info.model_hash, info.model_name, load_s,
                             info.default_size, info.bf16, &vram) == 0)
        send_out(w);

    while (!w->stop && !w->gone) {
        sdw_frame f;
        if (next_frame(w, &f, -1) != 1) continue;
        switch (f.type) {
        case SDW_FRAME_JOB:
            run_job(w, &f);
            break;
        case SDW_FRAME_PING:
            if (sdw_frame_pong(&w->out) == 0) send_out(w);
            break;
        case SDW_FRAME_SHUTDOWN:
            w->stop = 1;
            break;
        case SDW_FRAME_CANCEL:
            break; /* its job already ended: the cancel crossed our answer */
        default: {
            char what[64];
            snprintf(what, sizeof what, "a '%s' frame from the supervisor", sdw_frame_type_name(f.type));
            protocol_violation(w, what);
        }
        }
        sdw_frame_free(&f);
    }
    sdw_log(SDW_LOG_INFO, "worker_exit", "device=%s reason=%s", device,
            w->exit_code == WORKER_EXIT_DEVICE_FAILED ? "device_failed"
            : w->exit_code                            ? "protocol_error"
            : w->gone                                 ? "supervisor_gone"
            : g_term                                  ? "signal"
                                                      : "shutdown");
out:;
    int code = w->exit_code;
    sde_engine_free(w->eng);
    sdw_frame_reader_free(w->reader);
    msgpack_sbuffer_destroy(&w->out);
    free(w->preview);
    free(w);
    return code;
}
