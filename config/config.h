/* config.h: the service configuration, read from one YAML file (libyaml) and validated;
 * errors come back as "file:line:column: message". Imports neither the supervisor nor the engine. */
#ifndef SDW_CONFIG_H
#define SDW_CONFIG_H

#include <stddef.h>

typedef enum { SDW_DEV_CPU = 0, SDW_DEV_CUDA } sdw_device_kind;

/** One devices: entry; one worker process each. */
typedef struct {
    sdw_device_kind kind;
    char cpus[64]; /* CPU list for sched_setaffinity, e.g. "0-1" or "0,2"; "" = no pinning (either kind) */
    int threads;   /* OPENBLAS_NUM_THREADS; 0 = the pool's default: cpu, the CPUs in cpus (all CPUs we may
                      use when unpinned); cuda, 2 (fewer when cpus lists fewer) */
    int gpu;       /* CUDA device index for kind cuda (the worker's CUDA_VISIBLE_DEVICES) */
    char name[32]; /* "cpu:0-1", "cuda:0", "cuda:0#2" (a GPU's second worker): how /ready and logs call it */
} sdw_device_config;

typedef struct {
    char *file; /* path the config was read from */

    char *listen_host; /* "127.0.0.1" */
    int listen_port;   /* 8080; 0 picks a free port */
    char *node_id;     /* prefix of job ids, for routing in a fleet; default: the sanitized hostname */

    char *model_path;     /* required */
    char *tokenizer_path; /* optional, "" = the model's own */
    char *prediction;     /* "auto" | "eps" | "v" */
    char *lora_dir;       /* optional, NULL = LoRAs refused: the folder job LoRA names resolve in */
    /* optional, NULL = none: a TAESD .safetensors for previews and the job decoder "taesd" */
    char *preview_decoder;
    int precision; /* model.precision of jobs that give none: 0 fp32 (default), 1 bf16 (SDW_PRECISION_*) */

    sdw_device_config *devices; /* at least one */
    int n_devices;

    int queue_capacity; /* 32 */
    int result_ttl_s;   /* 600 */

    int max_width, max_height, max_steps; /* 1024, 1024, 150 */
    size_t max_body_bytes;                /* 1048576 */
    int request_timeout_s;                /* 300 */
    int idle_timeout_s;                   /* 60: keep-alive connections with no request */
    int max_connections;                  /* 4096, lowered at start to what RLIMIT_NOFILE leaves */
    int max_batch;                        /* 4: most images one job may ask for (n), 1..16 */
    int http2;                            /* server.http2: h2c (prior knowledge, Upgrade); 0 */
    int preview_every_default;            /* live preview every K steps for jobs that do not say; 5 */
    int preview_every_min;                /* the smallest K a job may ask for (previews cost); 1 */

    int restart_backoff_min_ms, restart_backoff_max_ms; /* 250, 30000 */
    int job_timeout_s;                                  /* 600 */
    int retry_on_crash;                                 /* 0 */
    int shutdown_grace_s;                               /* 30 */
    int heartbeat_ms;        /* workers.heartbeat_s * 1000 (5000): ping idle workers; 0 = off */
    int health_fail_after_s; /* 0: /health 503 once every worker has been failed this long; 0 = never */

    char **cors_origins; /* []: no origin may use the API from a browser page of another site */
    int n_cors_origins;
    char **server_names; /* Host names a loopback listener answers besides loopback names (DNS rebinding) */
    int n_server_names;

    char *api_keys_file;    /* auth.api_keys_file; NULL = no keys, every route open */
    int metrics_needs_key;  /* auth.protect_metrics: /metrics asks for a key too (default true) */
    int max_queued_per_key; /* auth.max_queued_per_key: unfinished jobs one key may have; 0 = no limit */

    int log_level; /* SDW_LOG_* from common/log.h */
    int log_json;  /* log: { format: json } */
    int metrics;   /* metrics: { enabled: true } -> GET /metrics */
} sdw_config;

/** Fills every default (model_path stays NULL). */
void sdw_config_defaults(sdw_config *cfg);
/** Reads and validates path. 0, or -1 with "path:line:col: message" in err (cfg then holds nothing to free).
 */
int sdw_config_load(const char *path, sdw_config *cfg, char *err, size_t errlen);
/** Same from a string (file is the name used in messages). */
int sdw_config_load_string(const char *yaml, size_t len, const char *file, sdw_config *cfg, char *err,
                           size_t errlen);
void sdw_config_free(sdw_config *cfg);

#endif
