/* test_metrics.c: the Prometheus exposition text: counters, labelled families (escaping, caps),
 * histograms, worker gauges, GPU memory gauges; and `promtool check metrics` on a rendering (GPU gauges
 * included) when promtool is installed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "metrics.h"

/* Asserts text holds line as a whole line. */
static void has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)); p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n') return;
    fail_msg("missing line: %s", line);
}

static int count_prefix(const char *text, const char *prefix)
{
    int c = 0;
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncmp(p, prefix, n)) c++;
    return c;
}

/* a CPU worker, a GPU worker that reported its memory and a second worker on the same GPU */
static const sdw_metrics_worker workers[] = {
    {.device = "cpu:0-1", .state = "busy", .restarts = 2, .jobs_served = 17},
    {.device = "cuda:0",
     .state = "ready",
     .jobs_served = 3,
     .has_vram = 1,
     .vram_free_bytes = 12345678901ULL,
     .vram_total_bytes = 150754820096ULL},
    {.device = "cuda:0#2",
     .state = "busy",
     .jobs_served = 1,
     .has_vram = 1,
     .vram_free_bytes = 12000000000ULL,
     .vram_total_bytes = 150754820096ULL},
};
#define N_WORKERS (int)(sizeof workers / sizeof workers[0])

static char *render(sdw_metrics *m, size_t *len)
{
    char *t = sdw_metrics_render(m, 4, 1, workers, N_WORKERS, 12.5, len);
    assert_non_null(t);
    assert_int_equal(strlen(t), *len);
    return t;
}

static void test_counters_and_gauges(void **state)
{
    (void)state;
    sdw_metrics *m = sdw_metrics_new();
    assert_non_null(m);
    size_t len;
    char *t = render(m, &len);
    has_line(t, "# TYPE sdw_jobs_submitted_total counter");
    has_line(t, "sdw_jobs_submitted_total 0");
    free(t);

    for (int i = 0; i < 5; i++)
        sdw_metrics_job_submitted(m);
    sdw_metrics_job_completed(m, 3.0);
    sdw_metrics_job_completed(m, 4.0);
    sdw_metrics_job_cancelled(m);
    sdw_metrics_job_failed(m, "worker_crashed");
    sdw_metrics_job_failed(m, "worker_crashed");
    sdw_metrics_job_failed(m, "engine_error");
    sdw_metrics_job_rejected(m, "queue_full");
    t = render(m, &len);
    has_line(t, "# HELP sdw_jobs_submitted_total Jobs accepted into the queue.");
    has_line(t, "sdw_jobs_submitted_total 5");
    has_line(t, "sdw_jobs_completed_total 2");
    has_line(t, "sdw_jobs_cancelled_total 1");
    has_line(t, "# TYPE sdw_jobs_failed_total counter");
    has_line(t, "sdw_jobs_failed_total{code=\"worker_crashed\"} 2");
    has_line(t, "sdw_jobs_failed_total{code=\"engine_error\"} 1");
    has_line(t, "sdw_jobs_rejected_total{reason=\"queue_full\"} 1");
    has_line(t, "# TYPE sdw_queue_depth gauge");
    has_line(t, "sdw_queue_depth 4");
    has_line(t, "sdw_jobs_running 1");
    has_line(t, "sdw_uptime_seconds 12.500");
    has_line(t, "sdw_build_info{version=\"" SDW_VERSION "\"} 1");
    assert_int_equal(t[len - 1], '\n');
    free(t);
    sdw_metrics_free(m);
}

static void test_histograms(void **state)
{
    (void)state;
    sdw_metrics *m = sdw_metrics_new();
    sdw_metrics_step(m, 0.03);
    sdw_metrics_step(m, 0.05); /* le is inclusive: 0.05 counts in the 0.05 bucket */
    sdw_metrics_step(m, 12.0);
    sdw_metrics_step(m, 500.0);
    sdw_metrics_step(m, -1.0);      /* clock went backwards: counted as 0 */
    sdw_metrics_step(m, 0.0 / 0.0); /* NaN: ignored */
    sdw_metrics_job_completed(m, 45.0);
    size_t len;
    char *t = render(m, &len);
    has_line(t, "# TYPE sdw_step_seconds histogram");
    has_line(t, "sdw_step_seconds_bucket{le=\"0.01\"} 1");
    has_line(t, "sdw_step_seconds_bucket{le=\"0.025\"} 1");
    has_line(t, "sdw_step_seconds_bucket{le=\"0.05\"} 3");
    has_line(t, "sdw_step_seconds_bucket{le=\"10\"} 3");
    has_line(t, "sdw_step_seconds_bucket{le=\"20\"} 4");
    has_line(t, "sdw_step_seconds_bucket{le=\"120\"} 4");
    has_line(t, "sdw_step_seconds_bucket{le=\"+Inf\"} 5");
    has_line(t, "sdw_step_seconds_sum 512.08000000000004");
    has_line(t, "sdw_step_seconds_count 5");
    has_line(t, "sdw_job_duration_seconds_bucket{le=\"30\"} 0");
    has_line(t, "sdw_job_duration_seconds_bucket{le=\"60\"} 1");
    has_line(t, "sdw_job_duration_seconds_bucket{le=\"3600\"} 1");
    has_line(t, "sdw_job_duration_seconds_bucket{le=\"+Inf\"} 1");
    has_line(t, "sdw_job_duration_seconds_sum 45");
    has_line(t, "sdw_job_duration_seconds_count 1");
    /* Buckets are cumulative: never decreasing down the list. */
    unsigned long long prev = 0, v;
    for (const char *p = t; (p = strstr(p, "sdw_step_seconds_bucket{")); p++) {
        assert_int_equal(sscanf(strchr(p, '}') + 1, "%llu", &v), 1);
        assert_true(v >= prev);
        prev = v;
    }
    free(t);
    sdw_metrics_free(m);
}

static void test_workers(void **state)
{
    (void)state;
    sdw_metrics *m = sdw_metrics_new();
    size_t len;
    char *t = render(m, &len);
    has_line(t, "sdw_worker_state{device=\"cpu:0-1\",state=\"busy\"} 1");
    has_line(t, "sdw_worker_state{device=\"cpu:0-1\",state=\"ready\"} 0");
    has_line(t, "sdw_worker_state{device=\"cpu:0-1\",state=\"loading\"} 0");
    has_line(t, "sdw_worker_state{device=\"cuda:0\",state=\"ready\"} 1");
    has_line(t, "sdw_worker_state{device=\"cuda:0\",state=\"failed\"} 0");
    assert_int_equal(count_prefix(t, "sdw_worker_state{"), 18); /* six states per device */
    has_line(t, "sdw_worker_restarts_total{device=\"cpu:0-1\"} 2");
    has_line(t, "sdw_worker_restarts_total{device=\"cuda:0\"} 0");
    has_line(t, "sdw_worker_jobs_served_total{device=\"cpu:0-1\"} 17");
    has_line(t, "sdw_worker_jobs_served_total{device=\"cuda:0\"} 3");
    free(t);

    /* A state the table doesn't know still shows up as the current one. */
    sdw_metrics_worker odd = {.device = "cpu:all", .state = "draining"};
    t = sdw_metrics_render(m, 0, 0, &odd, 1, 0, &len);
    has_line(t, "sdw_worker_state{device=\"cpu:all\",state=\"draining\"} 1");
    assert_int_equal(count_prefix(t, "sdw_worker_state{"), 7);
    free(t);
    /* No workers at all is fine. */
    t = sdw_metrics_render(m, 0, 0, NULL, 0, 0, &len);
    assert_non_null(t);
    assert_int_equal(count_prefix(t, "sdw_worker_state{"), 0);
    free(t);
    sdw_metrics_free(m);
}

/* GPU memory: a gauge series per device whose worker reported it, none for CPU workers, and no family at all
 * when no worker reports (a CPU-only service's /metrics is as before). */
static void test_vram_gauges(void **state)
{
    (void)state;
    sdw_metrics *m = sdw_metrics_new();
    size_t len;
    char *t = render(m, &len);
    has_line(
        t,
        "# HELP sdw_device_vram_free_bytes Free memory of each GPU device, as its worker last reported it.");
    has_line(t, "# TYPE sdw_device_vram_free_bytes gauge");
    has_line(t, "# TYPE sdw_device_vram_total_bytes gauge");
    has_line(t, "sdw_device_vram_free_bytes{device=\"cuda:0\"} 12345678901");
    has_line(t, "sdw_device_vram_total_bytes{device=\"cuda:0\"} 150754820096");
    has_line(t, "sdw_device_vram_free_bytes{device=\"cuda:0#2\"} 12000000000");
    has_line(t, "sdw_device_vram_total_bytes{device=\"cuda:0#2\"} 150754820096");
    assert_int_equal(count_prefix(t, "sdw_device_vram_free_bytes{"), 2);
    assert_int_equal(count_prefix(t, "sdw_device_vram_total_bytes{"), 2);
    assert_null(strstr(t, "sdw_device_vram_free_bytes{device=\"cpu"));
    free(t);

    t = sdw_metrics_render(m, 0, 0, workers, 1, 0, &len); /* the CPU worker alone */
    assert_non_null(t);
    assert_null(strstr(t, "sdw_device_vram"));
    free(t);
    sdw_metrics_free(m);
}

static void test_http_and_escaping(void **state)
{
    (void)state;
    sdw_metrics *m = sdw_metrics_new();
    sdw_metrics_http(m, "GET", "/v1/jobs/{id}", 200);
    sdw_metrics_http(m, "GET", "/v1/jobs/{id}", 200);
    sdw_metrics_http(m, "post", "/v1/jobs", 202);
    sdw_metrics_http(m, "BREW", "/coffee", 418);
    sdw_metrics_http(m, "GET", "/x", 1000);
    sdw_metrics_http(m, NULL, NULL, 404);
    sdw_metrics_job_failed(m, "we\"ird\\code\nx");
    sdw_metrics_job_failed(m, "bad\xff\x01utf8");
    sdw_metrics_job_rejected(m, NULL);
    size_t len;
    char *t = render(m, &len);
    has_line(t, "sdw_http_requests_total{method=\"GET\",route=\"/v1/jobs/{id}\",status=\"200\"} 2");
    has_line(t, "sdw_http_requests_total{method=\"POST\",route=\"/v1/jobs\",status=\"202\"} 1");
    has_line(t, "sdw_http_requests_total{method=\"other\",route=\"/coffee\",status=\"418\"} 1");
    has_line(t, "sdw_http_requests_total{method=\"GET\",route=\"/x\",status=\"other\"} 1");
    has_line(t, "sdw_http_requests_total{method=\"other\",route=\"unknown\",status=\"404\"} 1");
    has_line(t, "sdw_jobs_failed_total{code=\"we\\\"ird\\\\code?x\"} 1");
    has_line(t, "sdw_jobs_failed_total{code=\"bad??utf8\"} 1");
    has_line(t, "sdw_jobs_rejected_total{reason=\"unknown\"} 1");
    free(t);
    sdw_metrics_free(m);
}

/* Label sets are capped: a flood of distinct values ends up in one "other" series. */
static void test_series_cap(void **state)
{
    (void)state;
    sdw_metrics *m = sdw_metrics_new();
    char route[64], code[64];
    for (int i = 0; i < 1000; i++) {
        snprintf(route, sizeof route, "/r%d", i);
        sdw_metrics_http(m, "GET", route, 200);
        snprintf(code, sizeof code, "c%d", i);
        sdw_metrics_job_failed(m, code);
    }
    char longv[400];
    memset(longv, 'z', sizeof longv - 1);
    longv[sizeof longv - 1] = 0;
    sdw_metrics_job_rejected(m, longv);
    size_t len;
    char *t = render(m, &len);
    int http = count_prefix(t, "sdw_http_requests_total{");
    int failed = count_prefix(t, "sdw_jobs_failed_total{");
    assert_int_equal(http, 256);
    assert_int_equal(failed, 32);
    has_line(t, "sdw_http_requests_total{method=\"other\",route=\"other\",status=\"other\"} 745");
    has_line(t, "sdw_jobs_failed_total{code=\"other\"} 969");
    has_line(t, "sdw_http_requests_total{method=\"GET\",route=\"/r0\",status=\"200\"} 1");
    /* Long values are cut to a bounded length. */
    const char *r = strstr(t, "sdw_jobs_rejected_total{reason=\"");
    assert_non_null(r);
    assert_true(strchr(r, '\n') - r < 140);
    free(t);
    sdw_metrics_free(m);
}

/* Runs `promtool check metrics` on a full rendering, if promtool is installed. */
static void test_promtool(void **state)
{
    (void)state;
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        print_message("promtool not installed (apt-get install prometheus): skipping the promtool check\n");
        skip();
    }
    sdw_metrics *m = sdw_metrics_new();
    sdw_metrics_job_submitted(m);
    sdw_metrics_job_completed(m, 2.0);
    sdw_metrics_job_failed(m, "worker_crashed");
    sdw_metrics_job_failed(m, "q\"uo\\te\nnl");
    sdw_metrics_job_rejected(m, "queue_full");
    sdw_metrics_step(m, 0.2);
    sdw_metrics_http(m, "GET", "/metrics", 200);
    sdw_metrics_http(m, "POST", "/v1/jobs", 429);
    size_t len;
    char *t = render(m, &len);
    const char *dir = getenv("SDW_TMPDIR");
    char path[4096], out[4200], cmd[9000];
    snprintf(path, sizeof path, "%s/test_metrics_%d.prom", dir && *dir ? dir : "/tmp", (int)getpid());
    snprintf(out, sizeof out, "%s.out", path);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(t, 1, len, f), len);
    fclose(f);
    snprintf(cmd, sizeof cmd, "promtool check metrics < '%s' > '%s' 2>&1", path, out);
    int rc = system(cmd);
    char msg[4096] = "";
    f = fopen(out, "r");
    if (f) {
        size_t n = fread(msg, 1, sizeof msg - 1, f);
        msg[n] = 0;
        fclose(f);
    }
    unlink(path);
    unlink(out);
    if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0 || msg[0])
        fail_msg("promtool check metrics (rc %d): %s\n--- input ---\n%s", rc, msg, t);
    free(t);
    sdw_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counters_and_gauges),
        cmocka_unit_test(test_histograms),
        cmocka_unit_test(test_workers),
        cmocka_unit_test(test_vram_gauges),
        cmocka_unit_test(test_http_and_escaping),
        cmocka_unit_test(test_series_cap),
        cmocka_unit_test(test_promtool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
