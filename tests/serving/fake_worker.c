/* fake_worker.c: a test double for sd-worker-engine's worker command: speaks the frame protocol with no
 * engine, and misbehaves on request (crash, hang, garbage, oversized or foreign frames) so pool tests can
 * provoke it.
 *
 *   sdw-fake-worker worker --fd N --model SPEC [--threads N] [--device NAME] [--backend NAME] [anything else
 * is accepted]
 *
 * SPEC is a comma-separated list: ok | load_fail (error model_load_failed, exit 2) | fail_while=PATH
 * (load_fail while PATH exists) | load_crash (exit 3 while loading) | load_ms=N | step_ms=N (default 5) |
 * native=N (the native size its ready reports, default 512) | ignore_term (ignore SIGTERM and shutdown) |
 * no_hello | vram=FREE/TOTAL (a GPU worker's memory in bytes, sent with ready and with the frame that ends
 * each job; each job leaves 1 MiB less free). A job's behaviour is its prompt: crash (exit 3),
 * abort (SIGABRT), exit0, hang (silent forever), garbage, oversize, badver, wrongjob, error (engine_error),
 * invalid (invalid_request), big (a 3 MB png after the steps), device_fail (one step, then what a worker
 * whose GPU failed does: error device_failed without and with the job, exit 5); anything else runs `steps`
 * steps, honours cancel at step boundaries and returns "FAKEPNG:<prompt>:<seed>" as the png.
 *
 * Its ready frame's model name describes how it was started: "threads=T omp=O cpus=LIST device=NAME fds=N",
 * and with --backend "threads=T omp=O backend=B cvd=CUDA_VISIBLE_DEVICES order=CUDA_DEVICE_ORDER ncpus=N
 * device=NAME cpus=LIST" ("-" for a variable that is not set). */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"

static int fd = -1;
static int ignore_term, step_ms = 5, native_size = 512;
static volatile sig_atomic_t got_term;
static sdw_frame_reader *reader;
static msgpack_sbuffer sb;
static sdw_frame_vram vram; /* vram=FREE/TOTAL, or has 0 */
static const char *backend; /* --backend, or NULL */

/* The GPU memory a job's last frame reports: 1 MiB less free after every job. */
static const sdw_frame_vram *job_vram(void)
{
    if (!vram.has) return NULL;
    vram.free_bytes = vram.free_bytes > (1u << 20) ? vram.free_bytes - (1u << 20) : 0;
    return &vram;
}

static void on_term(int sig)
{
    (void)sig;
    got_term = 1;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !(got_term && !ignore_term))
        ;
}

static void send_raw(const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) exit(0); /* supervisor gone */
        p += n;
        len -= (size_t)n;
    }
}

/* Sends what the last sdw_frame_* call appended to sb. */
static void send_sb(void)
{
    send_raw(sb.data, sb.size);
    msgpack_sbuffer_clear(&sb);
}

static char inbuf[65536];
static size_t in_off, in_len;

/* Reads what is there (waiting up to wait_ms, -1 = forever) and returns the next frame: 1, 0 none, exits on
 * EOF. */
static int next_frame(sdw_frame *f, int wait_ms)
{
    char err[256];
    for (;;) {
        if (in_off < in_len) in_off += sdw_frame_reader_feed(reader, inbuf + in_off, in_len - in_off);
        int rc = sdw_frame_reader_next(reader, f, err, sizeof err);
        if (rc < 0) {
            fprintf(stderr, "fake worker: bad frame from supervisor: %s\n", err);
            exit(3);
        }
        if (rc == 1) return 1;
        if (in_off < in_len) continue;
        if (got_term && !ignore_term) exit(0);
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int n = poll(&pfd, 1, wait_ms);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return 0;
        ssize_t got = read(fd, inbuf, sizeof inbuf);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) exit(0);
        in_off = 0;
        in_len = (size_t)got;
        wait_ms = 0;
    }
}

static void report_ready(const char *device)
{
    char cpus[256] = "";
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        size_t o = 0;
        for (int c = 0; c < CPU_SETSIZE && o + 8 < sizeof cpus; c++)
            if (CPU_ISSET(c, &set)) o += (size_t)snprintf(cpus + o, sizeof cpus - o, "%s%d", o ? "," : "", c);
    }
    const char *blas = getenv("OPENBLAS_NUM_THREADS"), *omp = getenv("OMP_NUM_THREADS");
    /* descriptors beyond 0-3 leaked from the supervisor (the one opendir holds is not counted) */
    int extra_fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.' && atoi(e->d_name) > 3 && atoi(e->d_name) != dirfd(d)) extra_fds++;
        closedir(d);
    }
    char name[512];
    if (backend) {
        const char *cvd = getenv("CUDA_VISIBLE_DEVICES"), *order = getenv("CUDA_DEVICE_ORDER");
        snprintf(name, sizeof name, "threads=%s omp=%s backend=%s cvd=%s order=%s ncpus=%d device=%s cpus=%s",
                 blas ? blas : "-", omp ? omp : "-", backend, cvd ? cvd : "-", order ? order : "-",
                 CPU_COUNT(&set), device, cpus);
    } else {
        snprintf(name, sizeof name, "threads=%s omp=%s cpus=%s device=%s fds=%d", blas ? blas : "-",
                 omp ? omp : "-", cpus, device, extra_fds);
    }
    /* "runs bf16" */
    sdw_frame_ready_vram(&sb, "fake", "eps", "fakehash01", name, 0.01, native_size, 1,
                         vram.has ? &vram : NULL);
    send_sb();
}

static void run_job(const sdw_frame *j)
{
    uint64_t job = j->job;
    const char *what = j->u.job.prompt;
    sdw_frame_started(&sb, job);
    send_sb();
    if (!strcmp(what, "crash")) exit(3);
    if (!strcmp(what, "abort")) abort();
    if (!strcmp(what, "exit0")) exit(0);
    if (!strcmp(what, "hang")) {
        for (;;)
            pause();
    }
    if (!strcmp(what, "garbage")) {
        send_raw("\xc1\xc1garbage", 9);
        sleep_ms(10000);
        exit(0);
    }
    if (!strcmp(what, "oversize")) {
        /* a result whose png declares 100 MB: the supervisor must refuse from the header */
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 4);
        msgpack_pack_str_with_body(&pk, "t", 1);
        msgpack_pack_str_with_body(&pk, "result", 6);
        msgpack_pack_str_with_body(&pk, "v", 1);
        msgpack_pack_uint8(&pk, 1);
        msgpack_pack_str_with_body(&pk, "job", 3);
        msgpack_pack_uint64(&pk, job);
        msgpack_pack_str_with_body(&pk, "png", 3);
        msgpack_pack_bin(&pk, 100u << 20);
        send_sb();
        sleep_ms(10000);
        exit(0);
    }
    if (!strcmp(what, "badver")) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 3);
        msgpack_pack_str_with_body(&pk, "t", 1);
        msgpack_pack_str_with_body(&pk, "cancelled", 9);
        msgpack_pack_str_with_body(&pk, "v", 1);
        msgpack_pack_uint8(&pk, 2);
        msgpack_pack_str_with_body(&pk, "job", 3);
        msgpack_pack_uint64(&pk, job);
        send_sb();
        sleep_ms(10000);
        exit(0);
    }
    if (!strcmp(what, "badindex")) { /* a batch's second image before its first */
        sdw_frame_result_at(&sb, job, 1, 2, (const uint8_t *)"FAKEPNG", 7, 64, 64, 1, 0, 0, 0, 0,
                            SDW_PRECISION_FP32);
        send_sb();
        sleep_ms(10000);
        exit(0);
    }
    if (!strcmp(what, "wrongjob")) {
        sdw_frame_cancelled(&sb, job + 1);
        send_sb();
        sleep_ms(10000);
        exit(0);
    }
    if (!strcmp(what, "error") || !strcmp(what, "invalid")) {
        int inv = !strcmp(what, "invalid");
        sdw_frame_error_vram(&sb, 1, job, inv ? "invalid_request" : "engine_error",
                             inv ? "steps: must be 1..150" : "fake engine failure", job_vram());
        send_sb();
        return;
    }
    if (!strncmp(what, "device_fail", 11)) {
        /* as worker_loop.c's device_failed(): the error without a job first, then the job's, then exit 5;
         * device_fail_nojob stops after the first (as when the exit is seen before the job's frame is read),
         * device_fail_silent sends neither */
        sdw_frame_progress(&sb, job, 1, j->u.job.steps, 0.001);
        if (strcmp(what, "device_fail_silent"))
            sdw_frame_error(&sb, 0, 0, "device_failed", "fake: an illegal memory access was encountered");
        if (!strcmp(what, "device_fail"))
            sdw_frame_error(&sb, 1, job, "device_failed", "fake: an illegal memory access was encountered");
        send_sb();
        exit(5);
    }
    for (int step = 1; step <= j->u.job.steps; step++) {
        sleep_ms(step_ms);
        /* the step boundary: look for cancel, ping, shutdown without waiting */
        sdw_frame f;
        while (next_frame(&f, 0) == 1) {
            sdw_frame_type t = f.type;
            uint64_t fj = f.job;
            sdw_frame_free(&f);
            if (t == SDW_FRAME_CANCEL && fj == job) {
                sdw_frame_cancelled_vram(&sb, job, job_vram());
                send_sb();
                return;
            }
            if (t == SDW_FRAME_PING) {
                sdw_frame_pong(&sb);
                send_sb();
            }
            if (t == SDW_FRAME_SHUTDOWN && !ignore_term) exit(0);
        }
        if (got_term && !ignore_term) exit(0);
        sdw_frame_progress(&sb, job, step, j->u.job.steps, step * step_ms / 1000.0);
        send_sb();
    }
    if (!strcmp(what, "big")) {
        /* 3 MB: many socket reads on the supervisor side, and more than any non-result frame may carry */
        size_t len = 3000000;
        uint8_t *png = malloc(len);
        for (size_t i = 0; i < len; i++)
            png[i] = (uint8_t)(i * 7 + (i >> 16));
        sdw_frame_result_vram(&sb, job, 0, 1, png, len, j->u.job.width, j->u.job.height, j->u.job.seed, 0, 0,
                              0, 0, SDW_PRECISION_FP32, job_vram());
        free(png);
        send_sb();
        return;
    }
    /* a batch: one result frame per image, seeds seed, seed+1, ... */
    const int count = j->u.job.n > 1 ? j->u.job.n : 1;
    for (int i = 0; i < count; i++) {
        char png[512];
        uint64_t seed = j->u.job.seed + (uint64_t)i;
        int n = snprintf(png, sizeof png, "FAKEPNG:%s:%llu", what, (unsigned long long)seed);
        sdw_frame_result_vram(&sb, job, i, count, (const uint8_t *)png, (size_t)n, j->u.job.width,
                              j->u.job.height, seed, 0.001, 0.002, 0.003, 0.006, j->u.job.precision,
                              i + 1 == count ? job_vram() : NULL);
        send_sb();
    }
}

int main(int argc, char **argv)
{
    const char *spec = "ok", *device = "?";
    if (argc < 2 || strcmp(argv[1], "worker") != 0) {
        fprintf(stderr, "usage: sdw-fake-worker worker --fd N --model SPEC ...\n");
        return 2;
    }
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--fd"))
            fd = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--model"))
            spec = argv[i + 1];
        else if (!strcmp(argv[i], "--device"))
            device = argv[i + 1];
        else if (!strcmp(argv[i], "--backend"))
            backend = argv[i + 1];
    }
    if (fd < 0) {
        fprintf(stderr, "fake worker: --fd is required\n");
        return 2;
    }
    int load_fail = strstr(spec, "load_fail") != NULL, load_crash = strstr(spec, "load_crash") != NULL;
    int no_hello = strstr(spec, "no_hello") != NULL, load_ms = 0;
    ignore_term = strstr(spec, "ignore_term") != NULL;
    const char *v;
    if ((v = strstr(spec, "load_ms="))) load_ms = atoi(v + 8);
    if ((v = strstr(spec, "fail_while="))) {
        char path[512];
        snprintf(path, sizeof path, "%.*s", (int)strcspn(v + 11, ","), v + 11);
        load_fail = access(path, F_OK) == 0;
    }
    if ((v = strstr(spec, "step_ms="))) step_ms = atoi(v + 8);
    if ((v = strstr(spec, "native="))) native_size = atoi(v + 7);
    if ((v = strstr(spec, "vram="))) {
        unsigned long long fr = 0, tot = 0;
        vram.has = sscanf(v + 5, "%llu/%llu", &fr, &tot) == 2;
        vram.free_bytes = fr;
        vram.total_bytes = tot;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = ignore_term ? SIG_IGN : on_term;
    sigaction(SIGTERM, &sa, NULL);
    reader = sdw_frame_reader_new(SDW_FRAME_MAX_SMALL);
    msgpack_sbuffer_init(&sb);

    if (!no_hello) {
        sdw_frame_hello(&sb, getpid(), device, "loading");
        send_sb();
    }
    if (load_crash) return 3;
    if (load_fail) {
        sdw_frame_error(&sb, 0, 0, "model_load_failed", "fake: cannot load the model");
        send_sb();
        return 2;
    }
    sleep_ms(load_ms);
    report_ready(device);
    for (;;) {
        sdw_frame f;
        if (next_frame(&f, -1) != 1) continue;
        switch (f.type) {
        case SDW_FRAME_JOB:
            run_job(&f);
            break;
        case SDW_FRAME_PING:
            sdw_frame_pong(&sb);
            send_sb();
            break;
        case SDW_FRAME_SHUTDOWN:
            if (!ignore_term) {
                sdw_frame_free(&f);
                return 0;
            }
            break;
        default:
            break; /* a cancel for a job already over */
        }
        sdw_frame_free(&f);
    }
}
