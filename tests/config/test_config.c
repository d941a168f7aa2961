/* test_config.c: the YAML config loader: a full config, the defaults, and one case per class of error,
 * each checking the exact "file:line:column: message" the user sees. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "log.h"

static char err[4096];

static int load(const char *yaml, sdw_config *cfg)
{
    memset(err, 0, sizeof err);
    return sdw_config_load_string(yaml, strlen(yaml), "t.yaml", cfg, err, sizeof err);
}

/* Loads yaml, which must fail with exactly want (the whole message, all lines). */
static void expect_error(const char *yaml, const char *want)
{
    sdw_config cfg;
    int rc = load(yaml, &cfg);
    if (rc == 0) sdw_config_free(&cfg);
    assert_int_equal(rc, -1);
    assert_string_equal(err, want);
    /* On failure nothing is left to free: every pointer is NULL. */
    assert_null(cfg.listen_host);
    assert_null(cfg.devices);
    assert_null(cfg.model_path);
    assert_null(cfg.cors_origins);
}

static void test_full_config(void **state)
{
    (void)state;
    const char *y = "listen: \"0.0.0.0:9090\"\n"
                    "node_id: \"node-a\"\n"
                    "model:\n"
                    "  path: /var/lib/sd-worker/models/model.safetensors\n"
                    "  tokenizer: /usr/share/clip/bpe_simple_vocab_16e6.txt.gz\n"
                    "  prediction: v\n"
                    "devices:\n"
                    "  - { kind: cpu, cpus: \"0-1\", threads: 2 }\n"
                    "  - { kind: cpu, cpus: \"5,3,2,4\" }\n"
                    "  - kind: cpu\n"
                    "  - { kind: cuda, gpu: 1 }\n"
                    "queue: { capacity: 7, result_ttl_s: 120 }\n"
                    "limits: { max_width: 768, max_height: 512, max_steps: 50, max_body_bytes: 65536,\n"
                    "          request_timeout_s: 30, idle_timeout_s: 5, max_connections: 100 }\n"
                    "server: { http2: true }\n"
                    "workers: { restart_backoff_ms: [100, 2000], job_timeout_s: 60, retry_on_crash: true,\n"
                    "           shutdown_grace_s: 0 }\n"
                    "cors: { allow_origins: [\"https://app.example\", \"http://localhost:3000\"] }\n"
                    "log: { level: debug, format: json }\n"
                    "metrics: { enabled: false }\n"
                    "server_names: [sd.example, \"[::1]\"]\n"
                    "auth: { api_keys_file: /etc/k, protect_metrics: false, max_queued_per_key: 0 }\n";
    sdw_config cfg;
    assert_int_equal(load(y, &cfg), 0);
    assert_string_equal(err, "");
    assert_string_equal(cfg.file, "t.yaml");
    assert_string_equal(cfg.listen_host, "0.0.0.0");
    assert_int_equal(cfg.listen_port, 9090);
    assert_string_equal(cfg.node_id, "node-a");
    assert_string_equal(cfg.model_path, "/var/lib/sd-worker/models/model.safetensors");
    assert_string_equal(cfg.tokenizer_path, "/usr/share/clip/bpe_simple_vocab_16e6.txt.gz");
    assert_string_equal(cfg.prediction, "v");
    assert_int_equal(cfg.n_devices, 4);
    assert_int_equal(cfg.devices[0].kind, SDW_DEV_CPU);
    assert_string_equal(cfg.devices[0].cpus, "0-1");
    assert_int_equal(cfg.devices[0].threads, 2);
    assert_string_equal(cfg.devices[0].name, "cpu:0-1");
    /* Lists are stored merged and sorted, so equal sets name the same device. */
    assert_string_equal(cfg.devices[1].cpus, "2-5");
    assert_string_equal(cfg.devices[1].name, "cpu:2-5");
    assert_int_equal(cfg.devices[1].threads, 0);
    assert_string_equal(cfg.devices[2].cpus, "");
    assert_string_equal(cfg.devices[2].name, "cpu:all");
    assert_int_equal(cfg.devices[3].kind, SDW_DEV_CUDA);
    assert_int_equal(cfg.devices[3].gpu, 1);
    assert_string_equal(cfg.devices[3].name, "cuda:1");
    assert_int_equal(cfg.queue_capacity, 7);
    assert_int_equal(cfg.result_ttl_s, 120);
    assert_int_equal(cfg.max_width, 768);
    assert_int_equal(cfg.max_height, 512);
    assert_int_equal(cfg.max_steps, 50);
    assert_int_equal(cfg.max_body_bytes, 65536);
    assert_int_equal(cfg.request_timeout_s, 30);
    assert_int_equal(cfg.idle_timeout_s, 5);
    assert_int_equal(cfg.max_connections, 100);
    assert_int_equal(cfg.http2, 1);
    assert_int_equal(cfg.restart_backoff_min_ms, 100);
    assert_int_equal(cfg.restart_backoff_max_ms, 2000);
    assert_int_equal(cfg.job_timeout_s, 60);
    assert_int_equal(cfg.retry_on_crash, 1);
    assert_int_equal(cfg.shutdown_grace_s, 0);
    assert_int_equal(cfg.n_cors_origins, 2);
    assert_string_equal(cfg.cors_origins[0], "https://app.example");
    assert_string_equal(cfg.cors_origins[1], "http://localhost:3000");
    assert_int_equal(cfg.log_level, SDW_LOG_DEBUG);
    assert_int_equal(cfg.log_json, 1);
    assert_int_equal(cfg.metrics, 0);
    assert_int_equal(cfg.n_server_names, 2);
    assert_string_equal(cfg.server_names[0], "sd.example");
    assert_string_equal(cfg.api_keys_file, "/etc/k");
    assert_int_equal(cfg.metrics_needs_key, 0);
    assert_int_equal(cfg.max_queued_per_key, 0);
    sdw_config_free(&cfg);
    assert_null(cfg.file);
    sdw_config_free(&cfg); /* freeing twice is harmless: free() zeroes the struct */
}

static void check_defaults(const sdw_config *cfg)
{
    assert_string_equal(cfg->listen_host, "127.0.0.1");
    assert_int_equal(cfg->listen_port, 8080);
    assert_non_null(cfg->node_id);
    size_t n = strlen(cfg->node_id);
    assert_true(n >= 1 && n <= 32);
    assert_int_equal(strspn(cfg->node_id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"),
                     n);
    assert_string_equal(cfg->tokenizer_path, "");
    assert_string_equal(cfg->prediction, "auto");
    assert_int_equal(cfg->n_devices, 1);
    assert_int_equal(cfg->devices[0].kind, SDW_DEV_CPU);
    assert_string_equal(cfg->devices[0].cpus, "");
    assert_int_equal(cfg->devices[0].threads, 0);
    assert_string_equal(cfg->devices[0].name, "cpu:all");
    assert_int_equal(cfg->queue_capacity, 32);
    assert_int_equal(cfg->result_ttl_s, 600);
    assert_int_equal(cfg->max_width, 1024);
    assert_int_equal(cfg->max_height, 1024);
    assert_int_equal(cfg->max_steps, 150);
    assert_int_equal(cfg->max_body_bytes, 16777216);
    assert_int_equal(cfg->request_timeout_s, 300);
    assert_int_equal(cfg->idle_timeout_s, 60);
    assert_int_equal(cfg->max_connections, 4096);
    assert_int_equal(cfg->preview_every_default, 5);
    assert_int_equal(cfg->preview_every_min, 1);
    assert_int_equal(cfg->http2, 0);
    assert_int_equal(cfg->restart_backoff_min_ms, 250);
    assert_int_equal(cfg->restart_backoff_max_ms, 30000);
    assert_int_equal(cfg->job_timeout_s, 600);
    assert_int_equal(cfg->retry_on_crash, 0);
    assert_int_equal(cfg->shutdown_grace_s, 30);
    assert_int_equal(cfg->n_cors_origins, 0); /* no origin unless configured */
    assert_int_equal(cfg->n_server_names, 0);
    assert_null(cfg->api_keys_file);
    assert_int_equal(cfg->metrics_needs_key, 1);
    assert_int_equal(cfg->max_queued_per_key, 8);
    assert_int_equal(cfg->log_level, SDW_LOG_INFO);
    assert_int_equal(cfg->log_json, 0);
    assert_int_equal(cfg->metrics, 1);
}

static void test_defaults(void **state)
{
    (void)state;
    sdw_config cfg;
    assert_int_equal(load("model: { path: /m.safetensors }\n", &cfg), 0);
    assert_string_equal(cfg.model_path, "/m.safetensors");
    check_defaults(&cfg);
    sdw_config_free(&cfg);

    /* Empty sections and null values mean "the defaults" too. */
    assert_int_equal(
        load("# comment\nmodel:\n  path: /m\n  tokenizer:\nqueue:\nlimits: {}\nworkers: ~\ncors:\n"
             "log: null\nmetrics:\n",
             &cfg),
        0);
    check_defaults(&cfg);
    sdw_config_free(&cfg);

    sdw_config_defaults(&cfg);
    check_defaults(&cfg);
    assert_null(cfg.model_path);
    sdw_config_free(&cfg);
}

static void test_default_node_id_from_hostname(void **state)
{
    (void)state;
    char host[256] = "";
    assert_int_equal(gethostname(host, sizeof host - 1), 0);
    sdw_config cfg;
    sdw_config_defaults(&cfg);
    /* Sanitized host name: disallowed characters (dots of an FQDN) become '-'. */
    if (strlen(host) <= 32) {
        for (char *p = host; *p; p++)
            if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", *p)) *p = '-';
        assert_string_equal(cfg.node_id, host);
    } else {
        assert_int_equal(strlen(cfg.node_id), 32);
        assert_int_equal(strncmp(cfg.node_id, host, 10), 0);
    }
    sdw_config_free(&cfg);
}

static void test_relative_paths(void **state)
{
    (void)state;
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    char want[8192];
    sdw_config cfg;
    const char *y = "model: { path: models/m.safetensors, tokenizer: ../vocab.txt.gz }\n";
    assert_int_equal(
        sdw_config_load_string(y, strlen(y), "/etc/sd-worker/sd-worker.yaml", &cfg, err, sizeof err), 0);
    assert_string_equal(cfg.model_path, "/etc/sd-worker/models/m.safetensors");
    assert_string_equal(cfg.tokenizer_path, "/etc/sd-worker/../vocab.txt.gz");
    sdw_config_free(&cfg);

    assert_int_equal(sdw_config_load_string(y, strlen(y), "conf/a.yaml", &cfg, err, sizeof err), 0);
    snprintf(want, sizeof want, "%s/conf/models/m.safetensors", cwd);
    assert_string_equal(cfg.model_path, want);
    sdw_config_free(&cfg);

    assert_int_equal(sdw_config_load_string(y, strlen(y), "a.yaml", &cfg, err, sizeof err), 0);
    snprintf(want, sizeof want, "%s/models/m.safetensors", cwd);
    assert_string_equal(cfg.model_path, want);
    sdw_config_free(&cfg);
}

static void test_listen_forms(void **state)
{
    (void)state;
    sdw_config cfg;
    assert_int_equal(load("listen: \"[::1]:8081\"\nmodel: {path: /m}\n", &cfg), 0);
    assert_string_equal(cfg.listen_host, "::1");
    assert_int_equal(cfg.listen_port, 8081);
    sdw_config_free(&cfg);
    assert_int_equal(load("listen: localhost:0\nmodel: {path: /m}\n", &cfg), 0);
    assert_string_equal(cfg.listen_host, "localhost");
    assert_int_equal(cfg.listen_port, 0);
    sdw_config_free(&cfg);
    assert_int_equal(load("listen: 127.0.0.1:65535\nmodel: {path: /m}\n", &cfg), 0);
    assert_int_equal(cfg.listen_port, 65535);
    sdw_config_free(&cfg);
}

static void test_load_file(void **state)
{
    (void)state;
    const char *dir = getenv("SDW_TMPDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/test_config_%d.yaml", dir && *dir ? dir : "/tmp", (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("model:\n  path: m.safetensors\nqueue: { capacity: 3 }\n", f);
    fclose(f);
    sdw_config cfg;
    assert_int_equal(sdw_config_load(path, &cfg, err, sizeof err), 0);
    assert_string_equal(cfg.file, path);
    assert_int_equal(cfg.queue_capacity, 3);
    char want[8192];
    snprintf(want, sizeof want, "%.*s/m.safetensors", (int)(strrchr(path, '/') - path), path);
    if (path[0] == '/') assert_string_equal(cfg.model_path, want);
    sdw_config_free(&cfg);

    f = fopen(path, "w");
    assert_non_null(f);
    fputs("model:\n  path: m.safetensors\nqueue: { capacity: 0 }\n", f);
    fclose(f);
    assert_int_equal(sdw_config_load(path, &cfg, err, sizeof err), -1);
    char msg[8192];
    snprintf(msg, sizeof msg, "%s:3:20: queue.capacity: must be between 1 and 100000 (got 0)", path);
    assert_string_equal(err, msg);
    unlink(path);

    assert_int_equal(sdw_config_load(path, &cfg, err, sizeof err), -1);
    snprintf(msg, sizeof msg, "%s: cannot open: No such file or directory", path);
    assert_string_equal(err, msg);
    assert_null(cfg.file);

    assert_int_equal(sdw_config_load("/", &cfg, err, sizeof err), -1);
    assert_string_equal(err, "/: not a regular file");
}

static void test_syntax_error(void **state)
{
    (void)state;
    expect_error(
        "model:\n  path: /m\n bad: 1\n",
        "t.yaml:3:2: YAML syntax error: did not find expected key (while parsing a block mapping at line 1, "
        "column 1)");
    expect_error("a: b\n c: d\n",
                 "t.yaml:2:3: YAML syntax error: mapping values are not allowed in this context");
    expect_error("listen: \"127.0.0.1:80\nmodel: {path: /m}\n",
                 "t.yaml:3:1: YAML syntax error: found unexpected end of stream (while scanning a quoted "
                 "scalar at line "
                 "1, column 9)");
    /* Invalid UTF-8: libyaml's reader gives an offset, reported as a position. */
    expect_error("model: {path: /m}\nnode_id: \"a\xff\"\n",
                 "t.yaml:2:12: invalid input: invalid leading UTF-8 octet");
}

static void test_unknown_keys(void **state)
{
    (void)state;
    expect_error("lisen: 127.0.0.1:80\nmodel: {path: /m}\n",
                 "t.yaml:1:1: unknown key 'lisen'; known keys: listen, node_id, model, devices, queue, "
                 "limits, workers, "
                 "cors, log, metrics, server, auth, server_names");
    expect_error("model: {path: /m}\nqueue:\n  capacty: 3\n",
                 "t.yaml:3:3: unknown key 'capacty' in queue; known keys: capacity, result_ttl_s");
    expect_error("model: {path: /m}\ndevices:\n  - { kind: cpu, cpu: 1 }\n",
                 "t.yaml:3:18: unknown key 'cpu' in devices[0]; known keys: kind, cpus, threads, gpu");
}

static void test_wrong_types(void **state)
{
    (void)state;
    expect_error("model: {path: /m}\nqueue: { capacity: \"32\" }\n",
                 "t.yaml:2:20: queue.capacity: expected an integer, got string \"32\"");
    expect_error("model: {path: /m}\nlimits: { max_steps: 2.5 }\n",
                 "t.yaml:2:22: limits.max_steps: expected an integer, got '2.5'");
    expect_error("model: {path: /m}\nworkers: { retry_on_crash: 1 }\n",
                 "t.yaml:2:28: workers.retry_on_crash: expected true or false, got '1'");
    expect_error("model: /m\n", "t.yaml:1:8: model: expected a mapping, got '/m'");
    expect_error("model: {path: [a, b]}\n", "t.yaml:1:15: model.path: expected a string, got a list");
    expect_error("model: {path: /m}\ndevices: { kind: cpu }\n",
                 "t.yaml:2:10: devices: expected a list of devices, got a mapping");
    expect_error("model: {path: /m}\ndevices: [cpu]\n",
                 "t.yaml:2:11: devices[0]: expected a mapping like { kind: cpu, cpus: \"0-1\" }, got 'cpu'");
    expect_error(
        "model: {path: /m}\ncors: { allow_origins: \"*\" }\n",
        "t.yaml:2:24: cors.allow_origins: expected a list of origins like [\"https://app.example\"], got "
        "string \"*\"");
    expect_error("- a\n- b\n", "t.yaml:1:1: expected a mapping of settings (listen:, model:, devices: ...) "
                               "at the top level, got a list");
    expect_error("model: {path: \"/m\\0x\"}\n", "t.yaml:1:15: model.path: must not contain a NUL character");
}

static void test_out_of_range(void **state)
{
    (void)state;
    expect_error("listen: 127.0.0.1:65536\nmodel: {path: /m}\n",
                 "t.yaml:1:9: listen: port must be a number from 0 to 65535 (got '65536')");
    expect_error("model: {path: /m}\nqueue: { capacity: 0 }\n",
                 "t.yaml:2:20: queue.capacity: must be between 1 and 100000 (got 0)");
    expect_error("model: {path: /m}\nlimits: { max_width: 1020 }\n",
                 "t.yaml:2:22: limits.max_width: must be a multiple of 8 from 64 to 2048 (got 1020)");
    expect_error("model: {path: /m}\nlimits: { max_height: 4096 }\n",
                 "t.yaml:2:23: limits.max_height: must be a multiple of 8 from 64 to 2048 (got 4096)");
    expect_error("model: {path: /m}\nlimits: { max_steps: 151 }\n",
                 "t.yaml:2:22: limits.max_steps: must be between 1 and 150 (got 151)");
    expect_error("model: {path: /m}\nlimits: { max_steps: 0 }\n",
                 "t.yaml:2:22: limits.max_steps: must be between 1 and 150 (got 0)");
    expect_error("model: {path: /m}\nworkers: { restart_backoff_ms: [5000, 250] }\n",
                 "t.yaml:2:32: workers.restart_backoff_ms: min 5000 is greater than max 250");
    expect_error(
        "model: {path: /m}\nworkers: { restart_backoff_ms: [5000] }\n",
        "t.yaml:2:32: workers.restart_backoff_ms: expected [min, max] in milliseconds, got a list of 1 item");
    expect_error("model: {path: /m}\ndevices:\n  - { kind: cpu, threads: -1 }\n",
                 "t.yaml:3:27: devices[0].threads: must be between 0 and 1024 (got -1)");
    expect_error(
        "model: {path: /m}\nlimits: { max_body_bytes: 99999999999999999999 }\n",
        "t.yaml:2:27: limits.max_body_bytes: must be between 1024 and 1073741824 (got 99999999999999999999)");
}

static void test_cpus_syntax(void **state)
{
    (void)state;
    expect_error("model: {path: /m}\ndevices:\n  - { kind: cpu, cpus: \"0-\" }\n",
                 "t.yaml:3:24: devices[0].cpus: invalid CPU list '0-': expected CPU numbers and ranges like "
                 "\"0-3,5\"");
    expect_error(
        "model: {path: /m}\ndevices:\n  - { kind: cpu, cpus: \"3-1\" }\n",
        "t.yaml:3:24: devices[0].cpus: invalid CPU list '3-1': a range's first CPU is greater than its last");
    expect_error("model: {path: /m}\ndevices:\n  - { kind: cpu, cpus: \"0,1,\" }\n",
                 "t.yaml:3:24: devices[0].cpus: invalid CPU list '0,1,': trailing comma");
    expect_error("model: {path: /m}\ndevices:\n  - { kind: cpu, cpus: \"4096\" }\n",
                 "t.yaml:3:24: devices[0].cpus: invalid CPU list '4096': CPU numbers must be below 1024");
    expect_error(
        "model: {path: /m}\ndevices:\n  - { kind: cpu, cpus: \"0,2,4,6,8,10,12,14,16,18,20,22\" }\n",
        "t.yaml:3:24: devices[0].cpus: invalid CPU list '0,2,4,6,8,10,12,14,16,18,20,22': too long for a "
        "device name; at most 27 characters once merged into ranges");
    /* A plain number is a valid one-CPU list. */
    sdw_config cfg;
    assert_int_equal(load("model: {path: /m}\ndevices:\n  - { kind: cpu, cpus: 3 }\n", &cfg), 0);
    assert_string_equal(cfg.devices[0].name, "cpu:3");
    sdw_config_free(&cfg);
}

static void test_duplicate_keys(void **state)
{
    (void)state;
    expect_error("model: {path: /m}\nqueue:\n  capacity: 1\n  capacity: 2\n",
                 "t.yaml:4:3: duplicate key 'capacity' in queue (first defined at line 3, column 3)");
    expect_error("model: {path: /m}\nmodel: {path: /n}\n",
                 "t.yaml:2:1: duplicate key 'model' (first defined at line 1, column 1)");
}

static void test_missing_model_path(void **state)
{
    (void)state;
    expect_error("listen: 127.0.0.1:8080\n",
                 "t.yaml:1:1: missing required key model.path (the checkpoint file, e.g. "
                 "/var/lib/sd-worker/models/model.safetensors)");
    expect_error("", "t.yaml:1:1: missing required key model.path (the checkpoint file, e.g. "
                     "/var/lib/sd-worker/models/model.safetensors)");
    expect_error("queue: {capacity: 2}\nmodel:\n  prediction: eps\n",
                 "t.yaml:3:3: missing required key model.path (the checkpoint file, e.g. "
                 "/var/lib/sd-worker/models/model.safetensors)");
    expect_error("model: { path: \"\" }\n", "t.yaml:1:16: model.path: must not be empty");
}

static void test_preview_decoder(void **state)
{
    (void)state;
    sdw_config cfg;
    char path[] = "/tmp/sdw-taesd-XXXXXX", yaml[256];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    snprintf(yaml, sizeof yaml, "model: { path: /m.safetensors, preview_decoder: %s }\n", path);
    assert_int_equal(load(yaml, &cfg), 0);
    assert_string_equal(cfg.preview_decoder, path);
    sdw_config_free(&cfg);
    unlink(path);
    assert_int_equal(load("model: { path: /m.safetensors }\n", &cfg), 0);
    assert_null(cfg.preview_decoder);
    sdw_config_free(&cfg);
    expect_error(
        "model: { path: /m.safetensors, preview_decoder: /nonexistent/taesd.safetensors }\n",
        "t.yaml:1:49: model.preview_decoder: /nonexistent/taesd.safetensors: No such file or directory");
    expect_error("model: { path: /m.safetensors, preview_decoder: /tmp }\n",
                 "t.yaml:1:49: model.preview_decoder: /tmp: not a regular file");
}

/* model.precision: fp32 (the default) or bf16, the arithmetic of jobs that give none; anything else is an
 * error at the value's line and column. */
static void test_precision(void **state)
{
    (void)state;
    sdw_config cfg;
    assert_int_equal(load("model: { path: /m.safetensors }\n", &cfg), 0);
    assert_int_equal(cfg.precision, 0);
    sdw_config_free(&cfg);
    assert_int_equal(load("model: { path: /m.safetensors, precision: bf16 }\n", &cfg), 0);
    assert_int_equal(cfg.precision, 1);
    sdw_config_free(&cfg);
    assert_int_equal(load("model:\n  path: /m.safetensors\n  precision: fp32\n", &cfg), 0);
    assert_int_equal(cfg.precision, 0);
    sdw_config_free(&cfg);
    assert_int_equal(load("model: { path: /m.safetensors, precision: ~ }\n", &cfg), 0);
    assert_int_equal(cfg.precision, 0);
    sdw_config_free(&cfg);
    expect_error("model: {path: /m, precision: fp16}\n",
                 "t.yaml:1:30: model.precision: must be one of fp32, bf16 (got 'fp16')");
    expect_error("model:\n  path: /m\n  precision: BF16\n",
                 "t.yaml:3:14: model.precision: must be one of fp32, bf16 (got 'BF16')");
    expect_error("model:\n  path: /m\n  precision: [bf16]\n",
                 "t.yaml:3:14: model.precision: expected a string, got a list");
}

static void test_devices(void **state)
{
    (void)state;
    expect_error("model: {path: /m}\ndevices: []\n",
                 "t.yaml:2:10: devices: must list at least one device (e.g. - { kind: cpu })");
    expect_error("model: {path: /m}\ndevices:\n",
                 "t.yaml:2:9: devices: must list at least one device (e.g. - { kind: cpu })");
    expect_error("model: {path: /m}\ndevices:\n  - { kind: tpu }\n",
                 "t.yaml:3:13: devices[0].kind: must be one of cpu, cuda (got 'tpu')");
    expect_error("model: {path: /m}\ndevices:\n  - { cpus: \"0\" }\n",
                 "t.yaml:3:5: devices[0]: missing key 'kind' (cpu or cuda)");
    expect_error("model: {path: /m}\ndevices:\n  - { kind: cpu, gpu: 0 }\n",
                 "t.yaml:3:18: devices[0].gpu: only applies to kind cuda");
    expect_error("model: {path: /m}\ndevices:\n  - { kind: cuda, gpu: 1024 }\n",
                 "t.yaml:3:24: devices[0].gpu: must be between 0 and 1023 (got 1024)");
    expect_error("model: {path: /m}\ndevices:\n  - { kind: cuda, cpus: \"0-x\" }\n",
                 "t.yaml:3:25: devices[0].cpus: invalid CPU list '0-x': expected CPU numbers and ranges like "
                 "\"0-3,5\"");
    expect_error(
        "model: {path: /m}\ndevices:\n  - { kind: cpu, cpus: \"0-1\" }\n  - { kind: cpu, cpus: \"1,0\" }\n",
        "t.yaml:4:5: devices[1]: same device as devices[0] (cpu:0-1); each device runs one worker");
}

/* cuda entries: cpus and threads apply to them too (pinning and host threads, both optional), and one GPU
 * may have several workers when the file asks for them: "cuda:0", then "cuda:0#2", ... */
static void test_cuda_devices(void **state)
{
    (void)state;
    sdw_config cfg;
    assert_int_equal(load("model: {path: /m}\n"
                          "devices:\n"
                          "  - { kind: cuda, gpu: 0 }\n"
                          "  - { kind: cuda, gpu: 1, threads: 4, cpus: \"3,2\" }\n"
                          "  - { kind: cuda, gpu: 0, threads: 1 }\n"
                          "  - { kind: cuda }\n"
                          "  - { kind: cpu, cpus: \"2-3\" }\n",
                          &cfg),
                     0);
    assert_string_equal(err, "");
    assert_int_equal(cfg.n_devices, 5);
    assert_int_equal(cfg.devices[0].kind, SDW_DEV_CUDA);
    assert_int_equal(cfg.devices[0].gpu, 0);
    assert_int_equal(cfg.devices[0].threads, 0); /* the pool's cuda default */
    assert_string_equal(cfg.devices[0].cpus, "");
    assert_string_equal(cfg.devices[0].name, "cuda:0");
    assert_int_equal(cfg.devices[1].gpu, 1);
    assert_int_equal(cfg.devices[1].threads, 4);
    assert_string_equal(cfg.devices[1].cpus, "2-3");
    assert_string_equal(cfg.devices[1].name, "cuda:1");
    assert_int_equal(cfg.devices[2].gpu, 0);
    assert_int_equal(cfg.devices[2].threads, 1);
    assert_string_equal(cfg.devices[2].name, "cuda:0#2");
    assert_int_equal(cfg.devices[3].gpu, 0); /* gpu defaults to 0 */
    assert_string_equal(cfg.devices[3].name, "cuda:0#3");
    assert_string_equal(cfg.devices[4].name,
                        "cpu:2-3"); /* the same CPUs as a cuda worker's: another device */
    sdw_config_free(&cfg);
}

static void test_listen_and_node_id(void **state)
{
    (void)state;
    expect_error(
        "listen: 8080\nmodel: {path: /m}\n",
        "t.yaml:1:9: listen: expected host:port (e.g. 127.0.0.1:8080, 0.0.0.0:8080 or \"[::1]:8080\"), got "
        "'8080'");
    expect_error(
        "listen: \"::1:8080\"\nmodel: {path: /m}\n",
        "t.yaml:1:9: listen: expected host:port (e.g. 127.0.0.1:8080, 0.0.0.0:8080 or \"[::1]:8080\"), got "
        "string \"::1:8080\"");
    expect_error(
        "listen: \"[::g]:8080\"\nmodel: {path: /m}\n",
        "t.yaml:1:9: listen: expected host:port (e.g. 127.0.0.1:8080, 0.0.0.0:8080 or \"[::1]:8080\"), got "
        "string \"[::g]:8080\"");
    expect_error("listen: \"127.0.0.1:http\"\nmodel: {path: /m}\n",
                 "t.yaml:1:9: listen: port must be a number from 0 to 65535 (got 'http')");
    expect_error("node_id: node.a\nmodel: {path: /m}\n",
                 "t.yaml:1:10: node_id: must be 1 to 32 characters from A-Z a-z 0-9 _ - (got 'node.a')");
    expect_error("node_id: abcdefghijklmnopqrstuvwxyz0123456\nmodel: {path: /m}\n",
                 "t.yaml:1:10: node_id: must be 1 to 32 characters from A-Z a-z 0-9 _ - (got "
                 "'abcdefghijklmnopqrstuvwxyz0123456')");
}

static void test_enums_and_origins(void **state)
{
    (void)state;
    expect_error("model: {path: /m, prediction: x0}\n",
                 "t.yaml:1:31: model.prediction: must be one of auto, eps, v (got 'x0')");
    expect_error("model: {path: /m}\nlog: { level: verbose }\n",
                 "t.yaml:2:15: log.level: must be one of debug, info, warn, error (got 'verbose')");
    expect_error("model: {path: /m}\nlog: { format: xml }\n",
                 "t.yaml:2:16: log.format: must be one of text, json (got 'xml')");
    expect_error(
        "model: {path: /m}\ncors: { allow_origins: [\"https://a.example/path\"] }\n",
        "t.yaml:2:25: cors.allow_origins[0]: expected \"*\" or an origin like https://host[:port] (no path), "
        "got string \"https://a.example/path\"");
    sdw_config cfg;
    assert_int_equal(load("model: {path: /m}\ncors: { allow_origins: [] }\n", &cfg), 0);
    assert_int_equal(cfg.n_cors_origins, 0);
    sdw_config_free(&cfg);
}

static void test_unsupported_yaml(void **state)
{
    (void)state;
    expect_error("model: &m {path: /m}\nother: *m\n",
                 "t.yaml:2:8: YAML aliases (*m) are not supported in the config");
    expect_error("model: {path: /m}\n---\nmodel: {path: /n}\n",
                 "t.yaml:2:1: only one YAML document is allowed in a config file");
    expect_error("? [a, b]\n: c\nmodel: {path: /m}\n", "t.yaml:1:3: keys must be plain names, got a list");
}

/* Several problems come back together, in file order, one per line. */
static void test_several_errors(void **state)
{
    (void)state;
    expect_error(
        "queue: { capacity: 0 }\nlisten: x\nlog: { level: loud }\n",
        "t.yaml:1:1: missing required key model.path (the checkpoint file, e.g. "
        "/var/lib/sd-worker/models/model.safetensors)\n"
        "t.yaml:1:20: queue.capacity: must be between 1 and 100000 (got 0)\n"
        "t.yaml:2:9: listen: expected host:port (e.g. 127.0.0.1:8080, 0.0.0.0:8080 or \"[::1]:8080\"), got "
        "'x'\n"
        "t.yaml:3:15: log.level: must be one of debug, info, warn, error (got 'loud')");
    /* A small buffer keeps whole lines and says how many it left out. */
    sdw_config cfg;
    char small[120];
    const char *y = "model: {path: /m}\nqueue: { capacity: 0 }\nlimits: { max_steps: 0 }\n";
    assert_int_equal(sdw_config_load_string(y, strlen(y), "t.yaml", &cfg, small, sizeof small), -1);
    assert_string_equal(small, "t.yaml:2:20: queue.capacity: must be between 1 and 100000 (got 0)\n"
                               "(1 more error not shown)");
    /* No buffer at all is allowed. */
    assert_int_equal(sdw_config_load_string(y, strlen(y), "t.yaml", &cfg, NULL, 0), -1);
    /* Many errors: capped, and none of them leak. */
    char big[8192] = "model: {path: /m}\n";
    for (int i = 0; i < 40; i++)
        snprintf(big + strlen(big), sizeof big - strlen(big), "k%d: 1\n", i);
    assert_int_equal(load(big, &cfg), -1);
    assert_non_null(strstr(err, "(20 more errors not shown)"));
}

static void test_bad_input_never_crashes(void **state)
{
    (void)state;
    /* Deep nesting, binary junk, and truncations of a good file: each gives an error or a config. */
    char deep[512] = "model: {path: /m}\nx: ";
    for (int i = 0; i < 100; i++)
        strcat(deep, "[");
    sdw_config cfg;
    assert_int_equal(load(deep, &cfg), -1);
    assert_non_null(strstr(err, "t.yaml:"));
    const char *good =
        "listen: \"127.0.0.1:8080\"\nmodel:\n  path: /m\ndevices:\n  - { kind: cpu, cpus: \"0-1\" }\n"
        "workers: { restart_backoff_ms: [250, 30000] }\ncors: { allow_origins: [\"*\"] }\n";
    size_t n = strlen(good);
    for (size_t cut = 0; cut <= n; cut++) {
        int rc = sdw_config_load_string(good, cut, "t.yaml", &cfg, err, sizeof err);
        if (rc == 0)
            sdw_config_free(&cfg);
        else
            assert_int_equal(strncmp(err, "t.yaml", 6), 0);
    }
    /* Every byte of the good file replaced by each YAML-significant character in turn. */
    static const char subst[] = {':', '[', ']', '{', '"', '\n', '-', ' ', '#', '&', '*', '\0', '\xff'};
    char mut[512];
    assert_true(n < sizeof mut);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < sizeof subst; j++) {
            memcpy(mut, good, n);
            mut[i] = subst[j];
            if (sdw_config_load_string(mut, n, "t.yaml", &cfg, err, sizeof err) == 0) {
                assert_non_null(cfg.model_path);
                sdw_config_free(&cfg);
            } else {
                assert_int_equal(strncmp(err, "t.yaml", 6), 0);
            }
        }
    }
    unsigned char junk[256];
    unsigned x = 12345;
    for (int round = 0; round < 200; round++) {
        for (size_t i = 0; i < sizeof junk; i++) {
            x = x * 1103515245u + 12345u;
            junk[i] = (unsigned char)(x >> 16);
        }
        if (sdw_config_load_string((const char *)junk, sizeof junk, "t.yaml", &cfg, err, sizeof err) == 0)
            sdw_config_free(&cfg);
    }
}

static void test_preview_limits(void **state)
{
    (void)state;
    sdw_config cfg;
    assert_int_equal(
        load("model: {path: /m}\nlimits: { preview_every_default: 0, preview_every_min: 4 }\n", &cfg), 0);
    assert_int_equal(cfg.preview_every_default, 0);
    assert_int_equal(cfg.preview_every_min, 4);
    sdw_config_free(&cfg);
    assert_int_equal(
        load("model: {path: /m}\nlimits: { preview_every_default: 8, preview_every_min: 8 }\n", &cfg), 0);
    sdw_config_free(&cfg);
    expect_error("model: {path: /m}\nlimits: { preview_every_min: 10 }\n",
                 "t.yaml:2:30: limits.preview_every_default: must be 0 or at least limits.preview_every_min "
                 "(10), got 5");
    expect_error("model: {path: /m}\nlimits: { preview_every_default: 151 }\n",
                 "t.yaml:2:34: limits.preview_every_default: must be between 0 and 150 (got 151)");
    expect_error("model: {path: /m}\nlimits: { preview_every_min: 0 }\n",
                 "t.yaml:2:30: limits.preview_every_min: must be between 1 and 150 (got 0)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_config),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_default_node_id_from_hostname),
        cmocka_unit_test(test_relative_paths),
        cmocka_unit_test(test_listen_forms),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_syntax_error),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_cpus_syntax),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_missing_model_path),
        cmocka_unit_test(test_preview_decoder),
        cmocka_unit_test(test_precision),
        cmocka_unit_test(test_devices),
        cmocka_unit_test(test_cuda_devices),
        cmocka_unit_test(test_listen_and_node_id),
        cmocka_unit_test(test_enums_and_origins),
        cmocka_unit_test(test_unsupported_yaml),
        cmocka_unit_test(test_several_errors),
        cmocka_unit_test(test_bad_input_never_crashes),
        cmocka_unit_test(test_preview_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
