/* test_pool.c: the worker pool on a real h2o evloop with real child processes: the test-double worker
 * (tests/serving/fake_worker.c) for every failure mode, and the real sd-worker-engine worker when it can run.
 * Built twice: as test_pool against the supervisor library (kind cuda refused unless the build has CUDA), and
 * as test_pool_cuda, with the pool's sources compiled as a -DSDW_CUDA=ON build compiles them
 * (SDW_POOL_TEST_CUDA_ONLY: only the tests of cuda workers run), so that the cuda spawn path is tested on
 * machines without a GPU or a CUDA toolkit. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "frame.h"
#include "pool.h"

#ifndef SDW_FAKE_WORKER
#define SDW_FAKE_WORKER "sdw-fake-worker"
#endif
#ifndef SDW_ENGINE_PROGRAM
#define SDW_ENGINE_PROGRAM "sd-worker-engine"
#endif

#define MAXREC 512

typedef struct {
    uint64_t job;
    sdw_job_end end;
    char code[64];
    char message[512];
    char png_head[64];
    size_t png_len;
    uint32_t png_sum;
    int width, height;
    uint64_t at;
} done_rec;

static struct {
    h2o_loop_t *loop;
    sdw_pool *pool;
    h2o_socket_t *sigsock;
    sdw_device_config devs[4];
    sdw_config cfg;
    char cpu[16]; /* one CPU this process may run on, for pinning */
    done_rec done[MAXREC];
    int ndone;
    uint64_t started[MAXREC], started_at[MAXREC];
    int nstarted;
    int nprogress, last_step, last_total;
    struct {
        int slot;
        sdw_worker_state st;
        uint64_t at;
    } states[MAXREC];
    int nstates;
    uint64_t submitted[MAXREC];
    int nsubmitted;
    int shutdown_done;
    uint64_t shutdown_at;
    int idle_in_done[MAXREC]; /* sdw_pool_idle_slot() inside each job_done */
} T;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs the loop until cond holds or ms pass; evaluates to cond. */
#define RUN_UNTIL(cond, ms)                                                                                  \
    ({                                                                                                       \
        uint64_t end_ = now_ms() + (ms);                                                                     \
        while (!(cond) && now_ms() < end_)                                                                   \
            h2o_evloop_run(T.loop, 10);                                                                      \
        (cond);                                                                                              \
    })

/* What the pool reports on slot now; a temporary, so member arrays live to the end of the expression. */
static sdw_slot_info info(int slot)
{
    sdw_slot_info i;
    sdw_pool_slot_info(T.pool, slot, &i);
    return i;
}

static void ev_state(void *ud, int slot, sdw_worker_state st)
{
    (void)ud;
    if (T.nstates < MAXREC) {
        T.states[T.nstates].slot = slot;
        T.states[T.nstates].st = st;
        T.states[T.nstates].at = now_ms();
        T.nstates++;
    }
    assert_int_equal(info(slot).state, st);
}

static void ev_started(void *ud, uint64_t job, int slot)
{
    (void)ud;
    assert_int_equal(info(slot).state, SDW_WS_BUSY);
    T.started_at[T.nstarted % MAXREC] = now_ms();
    T.started[T.nstarted++ % MAXREC] = job;
}

static void ev_progress(void *ud, uint64_t job, int step, int total, double elapsed)
{
    (void)ud;
    (void)job;
    assert_true(elapsed >= 0);
    T.nprogress++;
    T.last_step = step;
    T.last_total = total;
}

static void ev_done(void *ud, uint64_t job, const sdw_job_outcome *o)
{
    (void)ud;
    assert_true(T.ndone < MAXREC);
    T.idle_in_done[T.ndone] = sdw_pool_idle_slot(T.pool);
    done_rec *r = &T.done[T.ndone++];
    r->job = job;
    r->end = o->end;
    r->at = now_ms();
    snprintf(r->code, sizeof r->code, "%s", o->code ? o->code : "");
    snprintf(r->message, sizeof r->message, "%s", o->message ? o->message : "");
    if (o->end == SDW_JOB_COMPLETE) {
        r->png_len = o->png_len;
        memcpy(r->png_head, o->png,
               o->png_len < sizeof r->png_head - 1 ? o->png_len : sizeof r->png_head - 1);
        for (size_t i = 0; i < o->png_len; i++)
            r->png_sum = r->png_sum * 31 + o->png[i];
        r->width = o->width;
        r->height = o->height;
    } else if (o->end == SDW_JOB_ERROR) {
        assert_non_null(o->code);
        assert_non_null(o->message);
    }
}

static const sdw_pool_events events = {ev_state, ev_started, ev_progress, ev_done, NULL, NULL, NULL};

static void on_sigchld(h2o_socket_t *sock, const char *err)
{
    assert_null(err);
    h2o_buffer_consume(&sock->input, sock->input->size);
    if (T.pool) sdw_pool_reap(T.pool);
}

static void on_shutdown_done(void *ud)
{
    assert_ptr_equal(ud, &T);
    T.shutdown_done++;
    T.shutdown_at = now_ms();
}

/* Fills T.cfg for n devices on the fake worker with model spec; the caller may adjust before pool_start(). */
static void setup_cfg(const char *spec, int n)
{
    memset(&T, 0, sizeof T);
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set)) {
            snprintf(T.cpu, sizeof T.cpu, "%d", c);
            break;
        }
    for (int i = 0; i < n; i++) {
        T.devs[i].kind = SDW_DEV_CPU;
        snprintf(T.devs[i].cpus, sizeof T.devs[i].cpus, "%s", T.cpu);
        snprintf(T.devs[i].name, sizeof T.devs[i].name, "cpu:%s/%d", T.cpu, i);
    }
    T.cfg.model_path = (char *)spec;
    T.cfg.tokenizer_path = "";
    T.cfg.prediction = "auto";
    T.cfg.devices = T.devs;
    T.cfg.n_devices = n;
    T.cfg.restart_backoff_min_ms = 50;
    T.cfg.restart_backoff_max_ms = 400;
    T.cfg.job_timeout_s = 30;
    T.cfg.log_level = 1;
}

static void pool_start(const char *engine)
{
    T.loop = h2o_evloop_create();
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    assert_int_equal(sigprocmask(SIG_BLOCK, &chld, NULL), 0);
    int sfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
    assert_true(sfd >= 0);
    T.sigsock = h2o_evloop_socket_create(T.loop, sfd, 0);
    h2o_socket_read_start(T.sigsock, on_sigchld);
    char err[512] = "";
    int rc = sdw_pool_start(T.loop, &T.cfg, engine, &events, &T, &T.pool, err, sizeof err);
    if (rc != 0) fail_msg("sdw_pool_start: %s", err);
    assert_int_equal(sdw_pool_size(T.pool), T.cfg.n_devices);
}

static void setup(const char *spec, int n)
{
    setup_cfg(spec, n);
    pool_start(SDW_FAKE_WORKER);
}

static int count_done(uint64_t job)
{
    int n = 0;
    for (int i = 0; i < T.ndone; i++)
        n += T.done[i].job == job;
    return n;
}

static const done_rec *done_for(uint64_t job)
{
    for (int i = 0; i < T.ndone; i++)
        if (T.done[i].job == job) return &T.done[i];
    return NULL;
}

/* Shuts the pool down (unless the test did), then checks the one invariant every test shares: each submitted
 * job ended exactly once, and nothing else ended. */
static void teardown(void)
{
    if (!T.shutdown_done && T.pool) {
        sdw_pool_shutdown(T.pool, 2000, on_shutdown_done, &T);
        assert_true(RUN_UNTIL(T.shutdown_done, 10000));
    }
    for (int i = 0; i < sdw_pool_size(T.pool); i++)
        assert_int_equal(info(i).pid, 0);
    h2o_evloop_run(T.loop, 0);
    assert_int_equal(T.shutdown_done, 1);
    sdw_pool_free(T.pool);
    T.pool = NULL;
    h2o_socket_close(T.sigsock);
    h2o_evloop_destroy(T.loop);
    for (int i = 0; i < T.nsubmitted; i++)
        if (count_done(T.submitted[i]) != 1)
            fail_msg("job %llu ended %d times", (unsigned long long)T.submitted[i],
                     count_done(T.submitted[i]));
    assert_int_equal(T.ndone, T.nsubmitted);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_UNBLOCK, &chld, NULL);
}

/* The tests' job: 64x48, cfg 7, euler; callers change what their case needs. */
static sdw_gen_request request(const char *prompt, int steps, uint64_t seed)
{
    return (sdw_gen_request){.prompt = (char *)prompt,
                             .negative_prompt = "",
                             .steps = steps,
                             .cfg_scale = 7.0,
                             .seed = seed,
                             .has_seed = 1,
                             .width = 64,
                             .height = 48,
                             .sampler = SDW_SAMPLER_EULER,
                             .schedule = SDW_SCHEDULE_DISCRETE};
}

static int submit_request(int slot, uint64_t job, const sdw_gen_request *jp)
{
    int rc = sdw_pool_submit(T.pool, slot, job, jp);
    if (rc == 0) T.submitted[T.nsubmitted++] = job;
    return rc;
}

static int submit(int slot, uint64_t job, const char *prompt, int steps)
{
    sdw_gen_request jp = request(prompt, steps, job * 10);
    return submit_request(slot, job, &jp);
}

static int saw_state(int slot, sdw_worker_state st)
{
    for (int i = 0; i < T.nstates; i++)
        if (T.states[i].slot == slot && T.states[i].st == st) return 1;
    return 0;
}

static void expect_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle)) fail_msg("\"%s\" does not contain \"%s\"", hay, needle);
}

/* ---- tests ---- */

static void test_job_completes(void **state)
{
    (void)state;
    /* a descriptor without close-on-exec must still not reach the worker */
    int devnull = open("/dev/null", O_RDONLY);
    int leak = fcntl(devnull, F_DUPFD, 10);
    close(devnull);
    assert_true(leak >= 10);
    setup("step_ms=2", 1);
    close(leak);
    assert_int_equal(info(0).state, SDW_WS_LOADING);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    assert_string_equal(info(0).arch, "fake");
    assert_string_equal(info(0).prediction, "eps");
    assert_string_equal(info(0).model_hash, "fakehash01");
    /* pinned to the configured CPU, threads 0 -> one per CPU in the set, exported to OpenBLAS and OpenMP */
    char want[96];
    snprintf(want, sizeof want, "threads=1 omp=1 cpus=%s device=cpu:%s/0 fds=0", T.cpu, T.cpu);
    assert_string_equal(info(0).model_name, want);
    assert_true(info(0).pid > 0);
    assert_int_equal(sdw_pool_idle_slot(T.pool), 0);
    assert_true(sdw_pool_can_ever_serve(T.pool));
    assert_string_equal(sdw_pool_state_name(SDW_WS_RESTARTING), "restarting");

    assert_int_equal(submit(0, 101, "a cat", 4), 0);
    assert_int_equal(info(0).state, SDW_WS_BUSY);
    assert_int_equal(submit(0, 102, "a dog", 4), -1); /* one job at a time */
    assert_int_equal(submit(1, 102, "a dog", 4), -1); /* no such slot */
    assert_int_equal(sdw_pool_idle_slot(T.pool), -1);
    assert_true(RUN_UNTIL(T.ndone == 1, 5000));
    const done_rec *r = done_for(101);
    assert_int_equal(r->end, SDW_JOB_COMPLETE);
    assert_string_equal(r->png_head, "FAKEPNG:a cat:1010");
    assert_int_equal(r->width, 64);
    assert_int_equal(r->height, 48);
    assert_int_equal(T.nstarted, 1);
    assert_int_equal(T.started[0], 101);
    assert_int_equal(T.nprogress, 4);
    assert_int_equal(T.last_step, 4);
    assert_int_equal(T.last_total, 4);
    assert_int_equal(info(0).state, SDW_WS_READY);
    assert_int_equal(info(0).jobs_served, 1);
    assert_true(saw_state(0, SDW_WS_BUSY));

    /* a 3 MB result crosses many socket reads and the reader's buffer growth */
    assert_int_equal(submit(0, 103, "big", 2), 0);
    assert_true(RUN_UNTIL(T.ndone == 2, 10000));
    r = done_for(103);
    assert_int_equal(r->end, SDW_JOB_COMPLETE);
    assert_int_equal(r->png_len, 3000000);
    uint32_t sum = 0;
    for (size_t i = 0; i < 3000000; i++)
        sum = sum * 31 + (uint8_t)(i * 7 + (i >> 16));
    assert_int_equal(r->png_sum, sum);
    assert_int_equal(info(0).restarts, 0);
    assert_int_equal(info(0).jobs_served, 2);
    teardown();
}

static void test_two_devices(void **state)
{
    (void)state;
    setup_cfg("step_ms=20", 3);
    T.devs[1].threads = 3;
    T.devs[1].cpus[0] = '\0'; /* unpinned */
    T.devs[2].cpus[0] = '\0'; /* unpinned, threads 0: one per CPU this process may use */
    pool_start(SDW_FAKE_WORKER);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY && info(1).state == SDW_WS_READY, 5000));
    expect_contains(info(1).model_name, "threads=3 omp=3 ");
    assert_true(RUN_UNTIL(info(2).state == SDW_WS_READY, 5000));
    cpu_set_t all;
    assert_int_equal(sched_getaffinity(0, sizeof all, &all), 0);
    char want[64];
    snprintf(want, sizeof want, "threads=%d omp=%d ", CPU_COUNT(&all), CPU_COUNT(&all));
    expect_contains(info(2).model_name, want);
    assert_string_equal(info(1).device, T.devs[1].name);
    int a = sdw_pool_idle_slot(T.pool);
    assert_int_equal(submit(a, 1, "one", 5), 0);
    int b = sdw_pool_idle_slot(T.pool);
    assert_true(b >= 0 && b != a);
    assert_int_equal(submit(b, 2, "two", 5), 0);
    assert_int_equal(sdw_pool_idle_slot(T.pool), 3 - a - b);
    assert_true(RUN_UNTIL(T.ndone == 2, 5000));
    assert_int_equal(done_for(1)->end, SDW_JOB_COMPLETE);
    assert_int_equal(done_for(2)->end, SDW_JOB_COMPLETE);
    /* both ran at once: each had started before the other finished */
    for (int i = 0; i < 2; i++)
        assert_true(T.started_at[i] <= done_for(1)->at && T.started_at[i] <= done_for(2)->at);
    teardown();
}

static void test_crash_is_reported_and_respawned(void **state)
{
    (void)state;
    setup("step_ms=2", 1);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    int pid1 = info(0).pid;
    assert_int_equal(submit(0, 7, "crash", 3), 0);
    assert_true(RUN_UNTIL(T.ndone == 1, 5000));
    assert_int_equal(T.done[0].end, SDW_JOB_ERROR);
    assert_string_equal(T.done[0].code, "worker_crashed");
    expect_contains(T.done[0].message, "exited with status 3");
    assert_true(saw_state(0, SDW_WS_RESTARTING));
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    assert_int_equal(info(0).restarts, 1);
    assert_true(info(0).pid != pid1);

    assert_int_equal(submit(0, 8, "abort", 3), 0);
    assert_true(RUN_UNTIL(T.ndone == 2, 5000));
    assert_string_equal(T.done[1].code, "worker_crashed");
    expect_contains(T.done[1].message, "killed by signal 6");

    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    assert_int_equal(submit(0, 9, "exit0", 3), 0); /* exit 0 unasked is still a crash for the job */
    assert_true(RUN_UNTIL(T.ndone == 3, 5000));
    expect_contains(T.done[2].message, "exited with status 0");

    /* an idle worker killed from outside comes back without any job_done */
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    kill(info(0).pid, SIGKILL);
    assert_true(RUN_UNTIL(info(0).restarts == 4 && info(0).state == SDW_WS_READY, 5000));
    assert_int_equal(T.ndone, 3);
    assert_int_equal(submit(0, 10, "fine", 3), 0);
    assert_true(RUN_UNTIL(T.ndone == 4, 5000));
    assert_int_equal(done_for(10)->end, SDW_JOB_COMPLETE);
    teardown();
}

static void test_backoff_doubles_and_caps(void **state)
{
    (void)state;
    setup_cfg("load_crash", 1);
    T.cfg.restart_backoff_min_ms = 100;
    T.cfg.restart_backoff_max_ms = 200;
    pool_start(SDW_FAKE_WORKER);
    assert_true(RUN_UNTIL(info(0).restarts >= 6, 10000));
    /* the gap from each RESTARTING to the LOADING of the respawn is the backoff: 100, then capped at 200
     * (uncapped it would reach 3200). h2o's clock may lag ours by a few ms, hence the slack below. */
    uint64_t gaps[8];
    int ng = 0;
    for (int i = 0; i + 1 < T.nstates && ng < 8; i++)
        if (T.states[i].st == SDW_WS_RESTARTING && T.states[i + 1].st == SDW_WS_LOADING)
            gaps[ng++] = T.states[i + 1].at - T.states[i].at;
    assert_true(ng >= 6);
    const int want[6] = {100, 200, 200, 200, 200, 200};
    for (int i = 0; i < 6; i++) {
        if (gaps[i] + 30 < (uint64_t)want[i])
            fail_msg("respawn %d came after %llu ms, before its %d ms backoff", i,
                     (unsigned long long)gaps[i], want[i]);
    }
    assert_true(gaps[5] < 1600);
    assert_false(saw_state(0, SDW_WS_FAILED));
    teardown();
}

/* Gap from the n-th RESTARTING of slot 0 to the LOADING that follows it, or -1. */
static int64_t respawn_gap(int n)
{
    for (int i = 0; i + 1 < T.nstates; i++)
        if (T.states[i].slot == 0 && T.states[i].st == SDW_WS_RESTARTING && n-- == 0) {
            for (int j = i + 1; j < T.nstates; j++)
                if (T.states[j].slot == 0 && T.states[j].st == SDW_WS_LOADING)
                    return (int64_t)(T.states[j].at - T.states[i].at);
            return -1;
        }
    return -1;
}

static void test_backoff_resets_after_a_stable_run(void **state)
{
    (void)state;
    setup_cfg("step_ms=1", 1);
    T.cfg.restart_backoff_min_ms = 20;
    T.cfg.restart_backoff_max_ms = 1000;
    pool_start(SDW_FAKE_WORKER);
    /* four quick crashes: 20, 40, 80, 160 ms; the next would wait 320 */
    for (int i = 0; i < 4; i++) {
        assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
        assert_int_equal(submit(0, 100 + (uint64_t)i, "crash", 1), 0);
        assert_true(RUN_UNTIL(T.ndone == i + 1, 5000));
    }
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    assert_true(respawn_gap(3) + 30 >= 160);
    /* ready for longer than restart_backoff_max_ms: the next crash is back to the minimum */
    RUN_UNTIL(0, 1100);
    assert_int_equal(submit(0, 200, "crash", 1), 0);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY && info(0).restarts == 5, 5000));
    int64_t gap = respawn_gap(4);
    if (gap < 0 || gap >= 250)
        fail_msg("respawn after a stable run took %lld ms; a reset backoff is 20 ms, an unreset one 320",
                 (long long)gap);
    teardown();
}

/* Out of descriptors, socketpair fails before any fork: those failed spawns must grow the backoff too, even
 * though the last worker had been ready for long (which alone would reset it to the minimum each time). */
static void test_backoff_grows_when_spawn_fails(void **state)
{
    (void)state;
    setup_cfg("step_ms=1", 1);
    T.cfg.restart_backoff_min_ms = 20;
    T.cfg.restart_backoff_max_ms = 1000;
    pool_start(SDW_FAKE_WORKER);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    RUN_UNTIL(0, 1100); /* a stable run: the crash below restarts at the minimum */
    struct rlimit was, tight;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &was), 0);
    tight = was;
    tight.rlim_cur = 3; /* stdio only: every new descriptor fails with EMFILE */
    assert_int_equal(submit(0, 300, "crash", 1), 0);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &tight), 0);
    assert_true(RUN_UNTIL(T.ndone == 1, 5000));
    /* 20, 40, 80, 160 ms: five failed spawns in about 620 ms (never growing, they would be 20 ms each) */
    RUN_UNTIL(0, 700);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &was), 0);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    int64_t g[4];
    for (int i = 0; i < 4; i++)
        g[i] = respawn_gap(i);
    if (g[1] + 10 < 40 || g[2] + 10 < 80 || g[3] + 10 < 160)
        fail_msg("respawn gaps after failed spawns %lld, %lld, %lld, %lld ms; want 20, 40, 80, 160",
                 (long long)g[0], (long long)g[1], (long long)g[2], (long long)g[3]);
    teardown();
}

/* Exit 2 (the model does not load) keeps the slot FAILED but retries it with the crash backoff, so a model
 * file that is put right brings the worker back without a restart of the service. */
static void test_exit_2_retries_until_the_model_loads(void **state)
{
    (void)state;
    char flag[256], spec[300];
    snprintf(flag, sizeof flag, "/tmp/sdw-test-pool-fail-%d", (int)getpid());
    FILE *f = fopen(flag, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(spec, sizeof spec, "fail_while=%s", flag);
    setup(spec, 1);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_FAILED, 5000));
    assert_string_equal(info(0).last_error, "model_load_failed: fake: cannot load the model");
    assert_true(RUN_UNTIL(info(0).restarts >= 3, 5000)); /* 50, 100, 200 ms */
    assert_int_equal(info(0).state, SDW_WS_FAILED);
    assert_true(info(0).failed_s > 0.1);
    assert_false(saw_state(0, SDW_WS_RESTARTING));
    assert_false(saw_state(0, SDW_WS_LOADING));
    assert_false(sdw_pool_can_ever_serve(T.pool));
    assert_int_equal(sdw_pool_idle_slot(T.pool), -1);
    assert_int_equal(submit(0, 1, "x", 1), -1);
    unlink(flag);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    assert_string_equal(info(0).last_error, "");
    assert_true(info(0).failed_s == 0);
    assert_true(sdw_pool_can_ever_serve(T.pool));
    assert_int_equal(submit(0, 2, "fine", 1), 0);
    assert_true(RUN_UNTIL(T.ndone == 1, 5000));
    assert_int_equal(T.done[0].end, SDW_JOB_COMPLETE);
    teardown();
    assert_int_equal(T.states[T.nstates - 1].st, SDW_WS_STOPPED);
}

/* A worker stopped while idle (SIGSTOP) misses a ping and is replaced before a job can wait on it. */
static void test_idle_heartbeat_replaces_a_stopped_worker(void **state)
{
    (void)state;
    setup_cfg("step_ms=2", 1);
    T.cfg.heartbeat_ms = 100;
    pool_start(SDW_FAKE_WORKER);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    RUN_UNTIL(0, 350); /* pings answered: nothing happens */
    assert_int_equal(info(0).restarts, 0);
    int pid1 = info(0).pid;
    assert_int_equal(kill(pid1, SIGSTOP), 0);
    uint64_t t0 = now_ms();
    assert_true(RUN_UNTIL(info(0).restarts == 1 && info(0).state == SDW_WS_READY, 5000));
    assert_true(now_ms() - t0 < 1500);
    assert_true(info(0).pid != pid1);
    assert_int_equal(submit(0, 1, "after", 2), 0);
    assert_true(RUN_UNTIL(T.ndone == 1, 5000));
    assert_int_equal(T.done[0].end, SDW_JOB_COMPLETE);
    teardown();
}

/* A job handed to a worker that dies before it starts the job is handed back, not failed. */
static void test_job_not_started_is_handed_back(void **state)
{
    (void)state;
    setup_cfg("step_ms=2", 1);
    T.cfg.job_timeout_s = 1;
    T.cfg.heartbeat_ms = 0;
    pool_start(SDW_FAKE_WORKER);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    assert_int_equal(kill(info(0).pid, SIGSTOP), 0);
    assert_int_equal(submit(0, 1, "never", 2), 0);
    assert_true(RUN_UNTIL(T.ndone == 1, 5000));
    assert_int_equal(T.done[0].end, SDW_JOB_REQUEUE);
    expect_contains(T.done[0].message, "before it started the job");
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    teardown();

    /* with the heartbeat on, the start deadline is one beat, not job_timeout_s */
    setup_cfg("step_ms=2", 1);
    T.cfg.job_timeout_s = 30;
    T.cfg.heartbeat_ms = 200;
    pool_start(SDW_FAKE_WORKER);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    assert_int_equal(submit(0, 1, "healthy", 150), 0); /* 300 ms, longer than a beat: not cut short */
    assert_true(RUN_UNTIL(T.ndone == 1, 5000));
    assert_int_equal(T.done[0].end, SDW_JOB_COMPLETE);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    assert_int_equal(kill(info(0).pid, SIGSTOP), 0);
    uint64_t t0 = now_ms();
    assert_int_equal(submit(0, 2, "never", 2), 0);
    assert_true(RUN_UNTIL(T.ndone == 2, 5000));
    assert_int_equal(T.done[1].end, SDW_JOB_REQUEUE);
    expect_contains(T.done[1].message, "no started frame within 200 ms");
    assert_true(now_ms() - t0 < 2000);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    assert_int_equal(info(0).restarts, 1);
    teardown();
}

/* A reload starts new workers with the new settings; the old one finishes its job, then retires, and keeps
 * serving until a new one is ready. A reload the pool cannot apply changes nothing. */
static void test_reload_retires_old_workers_after_their_job(void **state)
{
    (void)state;
    setup("step_ms=30", 1);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    int pid0 = info(0).pid;
    assert_int_equal(submit(0, 1, "long", 10), 0);
    assert_true(RUN_UNTIL(T.nstarted == 1, 5000));

    sdw_device_config bad = T.devs[0];
    snprintf(bad.cpus, sizeof bad.cpus, "0-");
    sdw_config badcfg = T.cfg;
    badcfg.devices = &bad;
    char err[256] = "";
    assert_int_equal(sdw_pool_reload(T.pool, &badcfg, err, sizeof err), -1);
    expect_contains(err, "cannot parse cpus '0-'");
    assert_int_equal(sdw_pool_size(T.pool), 1);
    assert_false(info(0).retiring);

    T.devs[0].threads = 3;
    T.cfg.model_path = "step_ms=2,load_ms=100";
    assert_int_equal(sdw_pool_reload(T.pool, &T.cfg, err, sizeof err), 0);
    assert_int_equal(sdw_pool_size(T.pool), 2);
    assert_true(info(0).retiring);
    assert_int_equal(info(0).state, SDW_WS_BUSY);
    assert_true(RUN_UNTIL(info(1).state == SDW_WS_READY, 5000));
    expect_contains(info(1).model_name, "threads=3 ");
    assert_int_equal(info(0).pid, pid0); /* still on its job */
    assert_true(RUN_UNTIL(T.ndone == 1, 5000));
    assert_int_equal(T.done[0].end, SDW_JOB_COMPLETE);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_STOPPED && info(0).pid == 0, 5000));
    assert_true(info(0).retired);
    assert_int_equal(info(0).restarts, 0);
    assert_int_equal(sdw_pool_idle_slot(T.pool), 1);
    assert_int_equal(submit(1, 2, "new", 2), 0);
    assert_true(RUN_UNTIL(T.ndone == 2, 5000));
    assert_int_equal(T.done[1].end, SDW_JOB_COMPLETE);

    /* the next reload reuses the retired slot: the table does not grow */
    T.devs[0].threads = 2;
    assert_int_equal(sdw_pool_reload(T.pool, &T.cfg, err, sizeof err), 0);
    assert_int_equal(sdw_pool_size(T.pool), 2);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY && info(1).state == SDW_WS_STOPPED, 5000));
    assert_false(info(0).retiring);
    assert_true(info(1).retired);
    teardown();
}

static void test_job_timeout(void **state)
{
    (void)state;
    setup_cfg("step_ms=2", 1);
    T.cfg.job_timeout_s = 1;
    pool_start(SDW_FAKE_WORKER);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    assert_int_equal(submit(0, 1, "quick", 3), 0);
    assert_true(RUN_UNTIL(T.ndone == 1, 5000));
    assert_int_equal(T.done[0].end, SDW_JOB_COMPLETE);
    uint64_t t0 = now_ms();
    assert_int_equal(submit(0, 2, "hang", 3), 0);
    assert_true(RUN_UNTIL(T.ndone == 2, 5000));
    assert_true(T.done[1].at - t0 >= 900); /* not before its time (h2o's clock may lag ours a little) */
    assert_string_equal(T.done[1].code, "worker_timeout");
    expect_contains(T.done[1].message, "no frame for 1 s");
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    assert_int_equal(info(0).restarts, 1);
    teardown();
}

static void test_job_timeout_is_per_frame(void **state)
{
    (void)state;
    setup_cfg("step_ms=200", 1);
    T.cfg.job_timeout_s = 1;
    pool_start(SDW_FAKE_WORKER);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    assert_int_equal(submit(0, 1, "steady", 8), 0); /* 1.6 s in all, a frame every 200 ms */
    assert_true(RUN_UNTIL(T.ndone == 1, 8000));
    assert_int_equal(T.done[0].end, SDW_JOB_COMPLETE);
    teardown();
}

static void test_protocol_violations_end_the_worker(void **state)
{
    (void)state;
    static const struct {
        const char *prompt, *msg;
    } cases[] = {
        {"garbage", "not a msgpack map (first byte 0xc1)"},
        {"oversize", "exceeds the 67108864-byte limit"},
        {"badver", "protocol version 2"},
        {"wrongjob", "cancelled frame for job 0000000000000005 while running job 0000000000000004"},
        {"badindex", "result frame for image 1 of 2, expected image 0 of 2"},
    };
    setup("step_ms=2", 1);
    for (int i = 0; i < 5; i++) {
        assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
        uint64_t job = 1 + (uint64_t)i;
        assert_int_equal(submit(0, job, cases[i].prompt, 2), 0);
        assert_true(RUN_UNTIL(count_done(job) == 1, 5000));
        const done_rec *r = done_for(job);
        assert_int_equal(r->end, SDW_JOB_ERROR);
        assert_string_equal(r->code, "worker_crashed");
        expect_contains(r->message, "protocol violation");
        expect_contains(r->message, cases[i].msg);
    }
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    assert_int_equal(info(0).restarts, 5);
    teardown();

    /* ready before hello */
    setup("no_hello", 1);
    assert_true(RUN_UNTIL(info(0).restarts >= 1, 5000));
    assert_false(saw_state(0, SDW_WS_READY));
    teardown();
}

static void test_worker_errors_keep_it(void **state)
{
    (void)state;
    setup("step_ms=2", 1);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    assert_int_equal(submit(0, 1, "error", 2), 0);
    assert_true(RUN_UNTIL(T.ndone == 1, 5000));
    assert_string_equal(T.done[0].code, "engine_error");
    assert_string_equal(T.done[0].message, "fake engine failure");
    assert_int_equal(info(0).state, SDW_WS_READY);
    assert_int_equal(submit(0, 2, "invalid", 2), 0);
    assert_true(RUN_UNTIL(T.ndone == 2, 5000));
    assert_string_equal(T.done[1].code, "invalid_request");
    assert_int_equal(info(0).restarts, 0);
    assert_int_equal(info(0).jobs_served, 2);
    teardown();
}

static void test_cancel_at_step_boundary(void **state)
{
    (void)state;
    setup("step_ms=20", 1);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    assert_int_equal(submit(0, 77, "long", 100), 0);
    assert_true(RUN_UNTIL(T.nprogress >= 2, 5000));
    sdw_pool_cancel(T.pool, 78); /* not running: nothing happens */
    sdw_pool_cancel(T.pool, 77);
    sdw_pool_cancel(T.pool, 77); /* twice is once */
    assert_true(RUN_UNTIL(T.ndone == 1, 5000));
    assert_int_equal(T.done[0].end, SDW_JOB_CANCELLED);
    assert_true(T.nprogress < 20);
    assert_int_equal(info(0).state, SDW_WS_READY);
    assert_int_equal(submit(0, 78, "after", 2), 0);
    assert_true(RUN_UNTIL(T.ndone == 2, 5000));
    assert_int_equal(done_for(78)->end, SDW_JOB_COMPLETE);
    teardown();
}

static void test_shutdown_ends_running_jobs(void **state)
{
    (void)state;
    setup("step_ms=20", 2);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY && info(1).state == SDW_WS_READY, 5000));
    assert_int_equal(submit(0, 5, "long", 1000), 0);
    assert_true(RUN_UNTIL(T.nstarted == 1, 5000));
    uint64_t t0 = now_ms();
    sdw_pool_shutdown(T.pool, 3000, on_shutdown_done, &T);
    assert_int_equal(submit(1, 6, "late", 1), -1);
    assert_int_equal(sdw_pool_idle_slot(T.pool), -1);
    assert_false(sdw_pool_can_ever_serve(T.pool));
    assert_true(RUN_UNTIL(T.shutdown_done, 5000));
    assert_true(T.shutdown_at - t0 < 2000); /* they left on TERM, no KILL needed */
    assert_int_equal(T.ndone, 1);
    assert_int_equal(T.done[0].end, SDW_JOB_ERROR);
    assert_string_equal(T.done[0].code, "shutting_down");
    assert_int_equal(info(0).state, SDW_WS_STOPPED);
    assert_int_equal(info(1).state, SDW_WS_STOPPED);
    teardown();
}

static void test_shutdown_kills_stubborn_workers(void **state)
{
    (void)state;
    setup("ignore_term", 1);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    uint64_t t0 = now_ms();
    sdw_pool_shutdown(T.pool, 300, on_shutdown_done, &T);
    assert_true(RUN_UNTIL(T.shutdown_done, 5000));
    assert_true(T.shutdown_at - t0 >= 285);
    assert_int_equal(info(0).state, SDW_WS_STOPPED);
    teardown();

    /* a slot waiting out its backoff stops at once and never respawns */
    setup_cfg("load_crash", 1);
    T.cfg.restart_backoff_min_ms = 5000;
    T.cfg.restart_backoff_max_ms = 5000;
    pool_start(SDW_FAKE_WORKER);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_RESTARTING, 5000));
    t0 = now_ms();
    sdw_pool_shutdown(T.pool, 300, on_shutdown_done, &T);
    assert_int_equal(T.shutdown_done, 0); /* done comes from the loop, not from inside shutdown */
    assert_true(RUN_UNTIL(T.shutdown_done, 5000));
    assert_true(T.shutdown_at - t0 < 200);
    RUN_UNTIL(0, 100);
    assert_int_equal(info(0).restarts, 0);
    teardown();
}

static void test_start_refuses_bad_config(void **state)
{
    (void)state;
    h2o_loop_t *loop = h2o_evloop_create();
    char err[512];
    sdw_pool *p = (sdw_pool *)&err; /* must be reset to NULL */
    setup_cfg("ok", 1);
    T.devs[0].kind = SDW_DEV_CUDA;
    snprintf(T.devs[0].name, sizeof T.devs[0].name, "cuda:0");
#ifndef SDW_CUDA
    /* a build without CUDA refuses kind cuda, and says what to do */
    assert_int_equal(sdw_pool_start(loop, &T.cfg, SDW_FAKE_WORKER, &events, NULL, &p, err, sizeof err), -1);
    assert_null(p);
    assert_string_equal(err,
                        "device cuda:0: kind cuda needs a GPU backend and this build has none (use kind cpu, "
                        "or an sd-worker built with -DSDW_CUDA=ON: docs/gpu.md)");
    assert_int_equal(sdw_pool_device_supported(&T.devs[0], err, sizeof err), -1);
    expect_contains(err, "kind cuda needs a GPU backend");
#else
    assert_int_equal(sdw_pool_device_supported(&T.devs[0], err, sizeof err), 0);
#endif
    T.devs[0].kind = SDW_DEV_CPU;
    assert_int_equal(sdw_pool_device_supported(&T.devs[0], err, sizeof err), 0);
    T.devs[0].kind = (sdw_device_kind)7;
    assert_int_equal(sdw_pool_device_supported(&T.devs[0], err, sizeof err), -1);
    expect_contains(err, "unknown device kind 7");

    static const struct {
        const char *cpus, *msg;
    } bad[] = {{"0-", "cannot parse cpus '0-'"}, {"a", "cannot parse"},
               {"1,", "cannot parse"},           {"3-1", "cannot parse"},
               {"0 1", "cannot parse"},          {"1023", "CPU 1023 in cpus '1023' is not available"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setup_cfg("ok", 1);
        snprintf(T.devs[0].cpus, sizeof T.devs[0].cpus, "%s", bad[i].cpus);
        assert_int_equal(sdw_pool_start(loop, &T.cfg, SDW_FAKE_WORKER, &events, NULL, &p, err, sizeof err),
                         -1);
        expect_contains(err, bad[i].msg);
    }
    setup_cfg("ok", 1);
    assert_int_equal(
        sdw_pool_start(loop, &T.cfg, "/nonexistent/sd-worker-engine", &events, NULL, &p, err, sizeof err),
        -1);
    expect_contains(err, "/nonexistent/sd-worker-engine is not executable");
    T.cfg.n_devices = 0;
    assert_int_equal(sdw_pool_start(loop, &T.cfg, SDW_FAKE_WORKER, &events, NULL, &p, err, sizeof err), -1);
    expect_contains(err, "no devices");
    setup_cfg("", 1);
    assert_int_equal(sdw_pool_start(loop, &T.cfg, SDW_FAKE_WORKER, &events, NULL, &p, err, sizeof err), -1);
    expect_contains(err, "no model_path");
    setup_cfg("ok", 1);
    T.devs[0].threads = -1;
    assert_int_equal(sdw_pool_start(loop, &T.cfg, SDW_FAKE_WORKER, &events, NULL, &p, err, sizeof err), -1);
    expect_contains(err, "threads must be 0");
    h2o_evloop_destroy(loop);
}

static void test_reaps_children_it_does_not_own(void **state)
{
    (void)state;
    setup("ok", 1);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    pid_t other = fork();
    if (other == 0) _exit(7);
    assert_true(RUN_UNTIL(kill(other, 0) == -1 && errno == ESRCH, 5000)); /* reaped, so gone */
    assert_int_equal(info(0).state, SDW_WS_READY);
    assert_int_equal(info(0).restarts, 0);
    teardown();
}

/* A GPU worker's memory: from its ready frame, then from the frame that ends each job (result, error,
 * cancelled); a worker that does not report it (a CPU worker) has none; a respawned worker starts without. */
static void test_vram_reported(void **state)
{
    (void)state;
    const uint64_t mib = 1u << 20, free0 = 8000000000ULL, total = 16000000000ULL;
    setup("step_ms=2,vram=8000000000/16000000000", 1);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    assert_true(info(0).has_vram);
    assert_true(info(0).vram_free_bytes == free0);
    assert_true(info(0).vram_total_bytes == total);
    assert_int_equal(submit(0, 1, "a cat", 2), 0);
    assert_true(RUN_UNTIL(T.ndone == 1, 5000));
    assert_int_equal(done_for(1)->end, SDW_JOB_COMPLETE);
    assert_true(info(0).vram_free_bytes == free0 - mib);
    assert_int_equal(submit(0, 2, "error", 2), 0);
    assert_true(RUN_UNTIL(T.ndone == 2, 5000));
    assert_true(info(0).vram_free_bytes == free0 - 2 * mib);
    assert_int_equal(submit(0, 3, "long", 150), 0);
    assert_true(RUN_UNTIL(T.nprogress > 3, 5000));
    sdw_pool_cancel(T.pool, 3);
    assert_true(RUN_UNTIL(T.ndone == 3, 5000));
    assert_int_equal(done_for(3)->end, SDW_JOB_CANCELLED);
    assert_true(info(0).vram_free_bytes == free0 - 3 * mib);
    assert_true(info(0).vram_total_bytes == total);
    /* a batch reports it once, with its last image */
    sdw_gen_request jp = request("batch", 1, 5);
    jp.height = 64;
    jp.n = 3;
    assert_int_equal(submit_request(0, 4, &jp), 0);
    assert_true(RUN_UNTIL(T.ndone == 4, 5000));
    assert_int_equal(done_for(4)->end, SDW_JOB_COMPLETE);
    assert_true(info(0).vram_free_bytes == free0 - 4 * mib);
    /* killed and respawned: nothing is known until its ready */
    kill(info(0).pid, SIGKILL);
    assert_true(RUN_UNTIL(info(0).state != SDW_WS_READY, 5000));
    assert_false(info(0).has_vram);
    assert_true(info(0).vram_free_bytes == 0 && info(0).vram_total_bytes == 0);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    assert_true(info(0).has_vram && info(0).vram_free_bytes == free0);
    teardown();

    setup("step_ms=2", 1); /* the fake without vram=: a CPU worker */
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    assert_false(info(0).has_vram);
    assert_int_equal(submit(0, 1, "a cat", 2), 0);
    assert_true(RUN_UNTIL(T.ndone == 1, 5000));
    assert_false(info(0).has_vram);
    teardown();
}

/* A worker whose GPU failed beyond recovery: error device_failed without a job (the slot then takes no job),
 * the job's error device_failed, exit 5; the pool restarts it like a crash (restarting, not failed). */
static void test_device_failed_restarts_the_worker(void **state)
{
    (void)state;
    setup_cfg("step_ms=2,vram=100/200", 1);
    T.cfg.restart_backoff_min_ms = 400; /* time enough to look at the slot while it waits to restart */
    T.cfg.restart_backoff_max_ms = 400;
    pool_start(SDW_FAKE_WORKER);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    int pid1 = info(0).pid;
    assert_int_equal(submit(0, 1, "device_fail", 3), 0);
    assert_true(RUN_UNTIL(T.ndone == 1, 5000));
    assert_int_equal(T.done[0].end, SDW_JOB_ERROR);
    assert_string_equal(T.done[0].code, "device_failed");
    assert_string_equal(T.done[0].message, "fake: an illegal memory access was encountered");
    assert_int_equal(T.idle_in_done[0], -1); /* the job layer could not hand it the next job */
    assert_int_equal(sdw_pool_idle_slot(T.pool), -1);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_RESTARTING, 5000));
    expect_contains(info(0).last_error, "device_failed: fake: an illegal memory access");
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    assert_int_equal(info(0).restarts, 1);
    assert_true(info(0).pid != pid1);
    assert_false(saw_state(0, SDW_WS_FAILED));
    assert_string_equal(info(0).last_error, "");
    assert_int_equal(submit(0, 2, "fine", 2), 0);
    assert_true(RUN_UNTIL(T.ndone == 2, 5000));
    assert_int_equal(done_for(2)->end, SDW_JOB_COMPLETE);

    /* the exit may be reaped before the job's own error frame is read: the error without a job says it all */
    assert_int_equal(submit(0, 3, "device_fail_nojob", 3), 0);
    assert_true(RUN_UNTIL(T.ndone == 3, 5000));
    assert_string_equal(done_for(3)->code, "device_failed");
    assert_string_equal(done_for(3)->message, "fake: an illegal memory access was encountered");
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY && info(0).restarts == 2, 5000));
    /* exit 5 with no word at all */
    assert_int_equal(submit(0, 4, "device_fail_silent", 3), 0);
    assert_true(RUN_UNTIL(T.ndone == 4, 5000));
    assert_string_equal(done_for(4)->code, "device_failed");
    assert_string_equal(done_for(4)->message, "the worker's GPU failed (it exited with status 5)");
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY && info(0).restarts == 3, 5000));
    assert_false(saw_state(0, SDW_WS_FAILED));
    teardown();
}

#ifdef SDW_CUDA
/* How a cuda worker is started, as a -DSDW_CUDA=ON build does it: --backend cuda, CUDA_VISIBLE_DEVICES=<gpu>
 * (replacing the supervisor's own), CUDA_DEVICE_ORDER=PCI_BUS_ID unless the environment sets one, not pinned
 * unless cpus is given, 2 threads by default (fewer when cpus lists fewer); two workers on one GPU. */
static void test_cuda_workers(void **state)
{
    (void)state;
    setenv("CUDA_VISIBLE_DEVICES", "7", 1);
    unsetenv("CUDA_DEVICE_ORDER");
    setup_cfg("step_ms=2,vram=1000000/2000000", 4);
    for (int i = 0; i < 3; i++) {
        T.devs[i].kind = SDW_DEV_CUDA;
        T.devs[i].cpus[0] = '\0';
    }
    T.devs[0].gpu = 1;
    snprintf(T.devs[0].name, sizeof T.devs[0].name, "cuda:1");
    T.devs[1].gpu = 1; /* the same GPU again, pinned to one CPU */
    snprintf(T.devs[1].cpus, sizeof T.devs[1].cpus, "%s", T.cpu);
    snprintf(T.devs[1].name, sizeof T.devs[1].name, "cuda:1#2");
    T.devs[2].gpu = 0;
    T.devs[2].threads = 5;
    snprintf(T.devs[2].name, sizeof T.devs[2].name, "cuda:0");
    pool_start(SDW_FAKE_WORKER);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY && info(1).state == SDW_WS_READY &&
                              info(2).state == SDW_WS_READY && info(3).state == SDW_WS_READY,
                          5000));
    cpu_set_t all;
    assert_int_equal(sched_getaffinity(0, sizeof all, &all), 0);
    char want[160];
    snprintf(want, sizeof want, "threads=2 omp=2 backend=cuda cvd=1 order=PCI_BUS_ID ncpus=%d device=cuda:1 ",
             CPU_COUNT(&all));
    expect_contains(info(0).model_name, want);
    snprintf(want, sizeof want,
             "threads=1 omp=1 backend=cuda cvd=1 order=PCI_BUS_ID ncpus=1 device=cuda:1#2 cpus=%s", T.cpu);
    assert_string_equal(info(1).model_name, want);
    expect_contains(info(2).model_name, "threads=5 omp=5 backend=cuda cvd=0 order=PCI_BUS_ID ");
    /* the cpu device beside them: no backend option, nothing CUDA */
    snprintf(want, sizeof want, "threads=1 omp=1 cpus=%s device=cpu:%s/3 fds=0", T.cpu, T.cpu);
    assert_string_equal(info(3).model_name, want);
    assert_string_equal(info(1).device, "cuda:1#2");
    assert_true(info(0).has_vram && info(0).vram_total_bytes == 2000000);
    /* both workers of GPU 1 take jobs at once */
    assert_int_equal(submit(0, 1, "one", 5), 0);
    assert_int_equal(submit(1, 2, "two", 5), 0);
    assert_true(RUN_UNTIL(T.ndone == 2, 5000));
    assert_int_equal(done_for(1)->end, SDW_JOB_COMPLETE);
    assert_int_equal(done_for(2)->end, SDW_JOB_COMPLETE);
    teardown();

    /* an administrator's CUDA_DEVICE_ORDER is kept */
    setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST", 1);
    setup_cfg("ok", 1);
    T.devs[0].kind = SDW_DEV_CUDA;
    T.devs[0].cpus[0] = '\0';
    T.devs[0].gpu = 3;
    snprintf(T.devs[0].name, sizeof T.devs[0].name, "cuda:3");
    pool_start(SDW_FAKE_WORKER);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    expect_contains(info(0).model_name, "backend=cuda cvd=3 order=FASTEST_FIRST ");
    assert_false(info(0).has_vram);
    teardown();
    unsetenv("CUDA_DEVICE_ORDER");
    unsetenv("CUDA_VISIBLE_DEVICES");
}
#endif

/* The real worker program end to end: a model that cannot load is a fatal error (exit 2, FAILED) and the
 * worker's message reaches the log; with the tiny model (when sd-worker-engine can make one) a job completes.
 */
static void test_real_worker(void **state)
{
    (void)state;
    const char *tmp = getenv("SDW_TMPDIR") ? getenv("SDW_TMPDIR") : "/tmp";
    char model[512];
    snprintf(model, sizeof model, "%s/test_pool-no-such-model.safetensors", tmp);
    setup_cfg(model, 1);
    pool_start(SDW_ENGINE_PROGRAM);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_FAILED, 20000));
    assert_int_equal(info(0).restarts, 0);
    expect_contains(info(0).last_error, "model_load_failed: ");
    expect_contains(info(0).last_error, "test_pool-no-such-model.safetensors");
    teardown();

    snprintf(model, sizeof model, "%s/test_pool-tiny.safetensors", tmp);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "'%s' mkmodel --preset tiny --output '%s' >/dev/null 2>&1", SDW_ENGINE_PROGRAM,
             model);
    if (system(cmd) != 0) {
        print_message("sd-worker-engine mkmodel --preset tiny failed: the real-worker job part is skipped\n");
        skip();
    }
    setup_cfg(model, 1);
    pool_start(SDW_ENGINE_PROGRAM);
    assert_true(RUN_UNTIL(info(0).state != SDW_WS_LOADING, 60000));
    assert_int_equal(info(0).state, SDW_WS_READY);
    assert_string_equal(info(0).arch, "tiny");
    assert_false(info(0).has_vram); /* a CPU engine reports no device memory */
    sdw_gen_request jp = request("a red cube", 4, 42);
    jp.cfg_scale = 5.0;
    jp.height = 64;
    assert_int_equal(submit_request(0, 1, &jp), 0);
    assert_true(RUN_UNTIL(T.ndone == 1, 60000));
    if (T.done[0].end != SDW_JOB_COMPLETE)
        fail_msg("real worker job ended %d: %s: %s", T.done[0].end, T.done[0].code, T.done[0].message);
    assert_memory_equal(T.done[0].png_head, "\x89PNG\r\n\x1a\n", 8);
    assert_int_equal(T.done[0].width, 64);
    assert_int_equal(T.nprogress, 4);
    /* parameters the engine rejects come back as invalid_request and keep the worker */
    jp.width = 65;
    assert_int_equal(submit_request(0, 2, &jp), 0);
    assert_true(RUN_UNTIL(T.ndone == 2, 60000));
    assert_string_equal(T.done[1].code, "invalid_request");
    jp.width = 64;
    /* a sampler outside the names table does not even encode: refused, the slot stays ready */
    jp.sampler = (sdw_sampler)SDW_SAMPLER__COUNT;
    assert_int_equal(sdw_pool_submit(T.pool, 0, 3, &jp), -1);
    assert_int_equal(info(0).state, SDW_WS_READY);
    jp.sampler = SDW_SAMPLER_EULER;
    jp.steps = 0;
    assert_int_equal(submit_request(0, 3, &jp), 0);
    assert_true(RUN_UNTIL(T.ndone == 3, 60000));
    assert_string_equal(T.done[2].code, "invalid_request");
    assert_int_equal(info(0).restarts, 0);
    /* cancel: many steps, cancelled after the first progress */
    jp.steps = 150;
    int before = T.nprogress;
    assert_int_equal(submit_request(0, 4, &jp), 0);
    assert_true(RUN_UNTIL(T.nprogress > before, 60000));
    sdw_pool_cancel(T.pool, 4);
    assert_true(RUN_UNTIL(T.ndone == 4, 60000));
    assert_int_equal(T.done[3].end, SDW_JOB_CANCELLED);
    assert_true(T.nprogress - before < 150);
    /* shutdown while a job runs: the worker finishes nothing and exits 0 at the next step boundary */
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_READY, 5000));
    before = T.nprogress;
    assert_int_equal(submit_request(0, 5, &jp), 0);
    assert_true(RUN_UNTIL(T.nprogress > before, 60000));
    uint64_t t0 = now_ms();
    sdw_pool_shutdown(T.pool, 10000, on_shutdown_done, &T);
    assert_true(RUN_UNTIL(T.shutdown_done, 15000));
    assert_true(T.shutdown_at - t0 < 5000);
    assert_string_equal(T.done[4].code, "shutting_down");
    expect_contains(T.done[4].message, "exited with status 0");
    teardown();

    /* options the worker cannot use are fatal too, with the reason */
    setup_cfg(model, 1);
    T.cfg.prediction = "sideways";
    pool_start(SDW_ENGINE_PROGRAM);
    assert_true(RUN_UNTIL(info(0).state == SDW_WS_FAILED, 20000));
    assert_string_equal(info(0).last_error,
                        "bad_arguments: --prediction must be auto, eps or v, not 'sideways'");
    teardown();
}

/* ---- the worker program driven by hand, for what the pool never does on purpose ---- */

static int make_tiny_model(char *path, size_t len)
{
    const char *tmp = getenv("SDW_TMPDIR") ? getenv("SDW_TMPDIR") : "/tmp";
    snprintf(path, len, "%s/test_pool-tiny.safetensors", tmp);
    struct stat st;
    if (stat(path, &st) == 0 && st.st_size > 0) return 0;
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "'%s' mkmodel --preset tiny --output '%s' >/dev/null 2>&1", SDW_ENGINE_PROGRAM,
             path);
    return system(cmd) == 0 ? 0 : -1;
}

static pid_t spawn_direct(const char *model, const char *extra_opt, const char *extra_val, int *fd)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(sv[1], 3);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (extra_opt)
            execl(SDW_ENGINE_PROGRAM, "sd-worker-engine", "worker", "--fd", "3", "--model", model, "--device",
                  "direct", extra_opt, extra_val, (char *)NULL);
        else
            execl(SDW_ENGINE_PROGRAM, "sd-worker-engine", "worker", "--fd", "3", "--model", model, "--device",
                  "direct", (char *)NULL);
        _exit(127);
    }
    close(sv[1]);
    *fd = sv[0];
    return pid;
}

/* Next frame from fd within ms: 1, or 0 on timeout/EOF. */
static int direct_frame(int fd, sdw_frame_reader *r, sdw_frame *f, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    char err[256];
    for (;;) {
        int rc = sdw_frame_reader_next(r, f, err, sizeof err);
        if (rc < 0) fail_msg("the worker sent a bad frame: %s", err);
        if (rc == 1) return 1;
        uint64_t now = now_ms();
        if (now >= end) return 0;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)(end - now)) <= 0) return 0;
        char buf[65536];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) return 0;
        size_t off = 0;
        while (off < (size_t)n) {
            off += sdw_frame_reader_feed(r, buf + off, (size_t)n - off);
            if (off < (size_t)n && sdw_frame_reader_next(r, f, err, sizeof err) != 0)
                fail_msg("the worker sent an oversized or bad frame");
        }
    }
}

/* Reads the next frame into *f (freeing what *f held) and checks its type. */
static int expect_frame(int fd, sdw_frame_reader *r, sdw_frame_type t, sdw_frame *f)
{
    sdw_frame_free(f);
    if (!direct_frame(fd, r, f, 20000)) fail_msg("no %s frame from the worker", sdw_frame_type_name(t));
    if (f->type != t)
        fail_msg("expected a %s frame, got %s", sdw_frame_type_name(t), sdw_frame_type_name(f->type));
    return 1;
}

static void send_bytes(int fd, const void *p, size_t n)
{
    assert_int_equal(write(fd, p, n), (ssize_t)n);
}

/* Exit status of pid within ms, or -1. */
static int wait_exit(pid_t pid, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    int st;
    while (now_ms() < end) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

/* A thread of pid other than its main one, or 0 when it has none. */
static pid_t other_thread(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d) return 0;
    pid_t tid = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int t = atoi(e->d_name);
        if (t > 0 && t != pid) {
            tid = t;
            break;
        }
    }
    closedir(d);
    return tid;
}

static pid_t direct_ready(const char *model, int *fd, sdw_frame_reader **r)
{
    pid_t pid = spawn_direct(model, NULL, NULL, fd);
    *r = sdw_frame_reader_new(SDW_FRAME_MAX_RESULT);
    sdw_frame f = {0};
    expect_frame(*fd, *r, SDW_FRAME_HELLO, &f);
    assert_int_equal(f.u.hello.pid, pid);
    assert_string_equal(f.u.hello.device, "direct");
    assert_string_equal(f.u.hello.state, "loading");
    sdw_frame_free(&f);
    expect_frame(*fd, *r, SDW_FRAME_READY, &f);
    assert_string_equal(f.u.ready.arch, "tiny");
    sdw_frame_free(&f);
    return pid;
}

/* Starts the worker with one option that keeps it from loading: a hello, then an error frame for no job
 * with the given code, then exit 2. The error's message goes to msg. */
static void direct_fails(const char *model, const char *opt, const char *val, const char *code, char *msg,
                         size_t msglen)
{
    int fd;
    pid_t pid = spawn_direct(model, opt, val, &fd);
    sdw_frame_reader *r = sdw_frame_reader_new(SDW_FRAME_MAX_RESULT);
    sdw_frame f = {0};
    expect_frame(fd, r, SDW_FRAME_HELLO, &f);
    expect_frame(fd, r, SDW_FRAME_ERROR, &f);
    assert_false(f.has_job);
    assert_string_equal(f.u.error.code, code);
    snprintf(msg, msglen, "%s", f.u.error.message);
    sdw_frame_free(&f);
    assert_int_equal(wait_exit(pid, 5000), 2);
    close(fd);
    sdw_frame_reader_free(r);
}

static void test_worker_program_contract(void **state)
{
    (void)state;
    char model[512];
    if (make_tiny_model(model, sizeof model) != 0) {
        print_message("sd-worker-engine mkmodel --preset tiny failed: skipped\n");
        skip();
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    sdw_frame f = {0};
    sdw_gen_request jp;
    sdw_gen_request_init(&jp);
    jp.prompt = "a cube";
    jp.negative_prompt = "";
    jp.steps = 2;
    jp.cfg_scale = 1.0;
    jp.seed = 5;
    jp.width = 64;
    jp.height = 64;
    int fd;
    sdw_frame_reader *r;

    /* ping, one job, then bytes that do not decode: exit 3 */
    pid_t pid = direct_ready(model, &fd, &r);
    sdw_frame_ping(&sb);
    sdw_frame_job(&sb, 11, &jp);
    send_bytes(fd, sb.data, sb.size);
    msgpack_sbuffer_clear(&sb);
    expect_frame(fd, r, SDW_FRAME_PONG, &f);
    expect_frame(fd, r, SDW_FRAME_STARTED, &f);
    assert_int_equal(f.job, 11);
    expect_frame(fd, r, SDW_FRAME_PROGRESS, &f);
    assert_int_equal(f.u.progress.step, 1);
    assert_int_equal(f.u.progress.total, 2);
    expect_frame(fd, r, SDW_FRAME_PROGRESS, &f);
    assert_int_equal(f.u.progress.step, 2);
    expect_frame(fd, r, SDW_FRAME_RESULT, &f);
    assert_int_equal(f.job, 11);
    assert_int_equal(f.u.result.seed, 5);
    assert_true(f.u.result.png_len > 8 && !memcmp(f.u.result.png, "\x89PNG", 4));
    assert_true(f.u.result.t_total > 0);
    sdw_frame_free(&f);
    send_bytes(fd, "\xc1", 1);
    assert_int_equal(wait_exit(pid, 10000), 3);
    close(fd);
    sdw_frame_reader_free(r);

    /* a worker->supervisor frame sent to the worker: exit 3 */
    pid = direct_ready(model, &fd, &r);
    sdw_frame_pong(&sb);
    send_bytes(fd, sb.data, sb.size);
    msgpack_sbuffer_clear(&sb);
    assert_int_equal(wait_exit(pid, 10000), 3);
    close(fd);
    sdw_frame_reader_free(r);

    /* idle SIGTERM: exit 0 at once */
    pid = direct_ready(model, &fd, &r);
    uint64_t t0 = now_ms();
    kill(pid, SIGTERM);
    assert_int_equal(wait_exit(pid, 5000), 0);
    assert_true(now_ms() - t0 < 2000);
    close(fd);
    sdw_frame_reader_free(r);

    /* idle SIGTERM taken by a thread other than the loop's (OpenBLAS starts threads before main with it
     * unblocked; the kernel may pick any of them for a kill()): still exit 0 at once */
    pid = direct_ready(model, &fd, &r);
    pid_t other = other_thread(pid);
    if (other > 0) {
        t0 = now_ms();
        assert_int_equal(syscall(SYS_tgkill, pid, other, SIGTERM), 0);
        assert_int_equal(wait_exit(pid, 5000), 0);
        assert_true(now_ms() - t0 < 2000);
    } else {
        print_message("the worker runs one thread: the other-thread SIGTERM case is skipped\n");
        kill(pid, SIGTERM);
        assert_int_equal(wait_exit(pid, 5000), 0);
    }
    close(fd);
    sdw_frame_reader_free(r);

    /* the supervisor goes away: exit 0 */
    pid = direct_ready(model, &fd, &r);
    close(fd);
    assert_int_equal(wait_exit(pid, 5000), 0);
    sdw_frame_reader_free(r);

    /* SIGTERM during a job: nothing more is sent, exit 0 at the step boundary */
    pid = direct_ready(model, &fd, &r);
    jp.steps = 150;
    sdw_frame_job(&sb, 12, &jp);
    send_bytes(fd, sb.data, sb.size);
    msgpack_sbuffer_clear(&sb);
    expect_frame(fd, r, SDW_FRAME_STARTED, &f);
    expect_frame(fd, r, SDW_FRAME_PROGRESS, &f);
    kill(pid, SIGTERM);
    assert_int_equal(wait_exit(pid, 10000), 0);
    sdw_frame_free(&f);
    while (direct_frame(fd, r, &f, 100)) {
        assert_int_equal(f.type, SDW_FRAME_PROGRESS); /* at most what was in flight */
        sdw_frame_free(&f);
    }
    close(fd);
    sdw_frame_reader_free(r);

    /* a second job while one runs: exit 3 */
    pid = direct_ready(model, &fd, &r);
    sdw_frame_job(&sb, 13, &jp);
    send_bytes(fd, sb.data, sb.size);
    msgpack_sbuffer_clear(&sb);
    expect_frame(fd, r, SDW_FRAME_STARTED, &f);
    sdw_frame_job(&sb, 14, &jp);
    send_bytes(fd, sb.data, sb.size);
    msgpack_sbuffer_clear(&sb);
    assert_int_equal(wait_exit(pid, 10000), 3);
    close(fd);
    sdw_frame_reader_free(r);

#ifndef SDW_CUDA
    /* --backend cuda in an engine without CUDA: the load fails with a message naming it, exit 2 */
    char msg[512];
    direct_fails(model, "--backend", "cuda", "model_load_failed", msg, sizeof msg);
    expect_contains(msg, "cuda");
#endif

    /* bad options: an error frame that says why, exit 2 */
    char why[512];
    direct_fails(model, "--threads", "many", "bad_arguments", why, sizeof why);
    assert_string_equal(why, "--threads 'many' is not a number in 0..1024");
    msgpack_sbuffer_destroy(&sb);
    sdw_frame_free(&f);
}

int main(void)
{
#ifdef SDW_POOL_TEST_CUDA_ONLY
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cuda_workers),
        cmocka_unit_test(test_start_refuses_bad_config),
        cmocka_unit_test(test_device_failed_restarts_the_worker),
    };
#else
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_job_completes),
        cmocka_unit_test(test_two_devices),
        cmocka_unit_test(test_crash_is_reported_and_respawned),
        cmocka_unit_test(test_backoff_doubles_and_caps),
        cmocka_unit_test(test_backoff_resets_after_a_stable_run),
        cmocka_unit_test(test_backoff_grows_when_spawn_fails),
        cmocka_unit_test(test_exit_2_retries_until_the_model_loads),
        cmocka_unit_test(test_idle_heartbeat_replaces_a_stopped_worker),
        cmocka_unit_test(test_job_not_started_is_handed_back),
        cmocka_unit_test(test_reload_retires_old_workers_after_their_job),
        cmocka_unit_test(test_job_timeout),
        cmocka_unit_test(test_job_timeout_is_per_frame),
        cmocka_unit_test(test_protocol_violations_end_the_worker),
        cmocka_unit_test(test_worker_errors_keep_it),
        cmocka_unit_test(test_cancel_at_step_boundary),
        cmocka_unit_test(test_shutdown_ends_running_jobs),
        cmocka_unit_test(test_shutdown_kills_stubborn_workers),
        cmocka_unit_test(test_start_refuses_bad_config),
        cmocka_unit_test(test_reaps_children_it_does_not_own),
        cmocka_unit_test(test_vram_reported),
        cmocka_unit_test(test_device_failed_restarts_the_worker),
#ifdef SDW_CUDA
        cmocka_unit_test(test_cuda_workers),
#endif
        cmocka_unit_test(test_real_worker),
        cmocka_unit_test(test_worker_program_contract),
    };
#endif
    return cmocka_run_group_tests(tests, NULL, NULL);
}
