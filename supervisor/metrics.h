/* metrics.h: the supervisor's Prometheus metrics: counters, gauges and histograms kept in plain
 * structs and rendered in the text exposition format for GET /metrics. */
#ifndef SDW_METRICS_H
#define SDW_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct sdw_metrics sdw_metrics;

/** Per-worker figures the renderer asks for at scrape time. */
typedef struct {
    const char *device; /* label */
    const char *state;  /* "ready", "busy", ... */
    int restarts;
    uint64_t jobs_served;
    int has_vram; /* a GPU worker reported its device memory: the sdw_device_vram_* gauges get a series */
    uint64_t vram_free_bytes, vram_total_bytes;
} sdw_metrics_worker;

sdw_metrics *sdw_metrics_new(void);
void sdw_metrics_free(sdw_metrics *m);
void sdw_metrics_job_submitted(sdw_metrics *m);
void sdw_metrics_job_completed(sdw_metrics *m, double duration_s);
void sdw_metrics_job_failed(sdw_metrics *m, const char *code);
void sdw_metrics_job_cancelled(sdw_metrics *m);
void sdw_metrics_job_rejected(sdw_metrics *m, const char *reason); /* queue_full, invalid, ... */
void sdw_metrics_step(sdw_metrics *m, double step_s);
/** route is the pattern ("/v1/jobs/{id}/stream"), not the raw path. */
void sdw_metrics_http(sdw_metrics *m, const char *method, const char *route, int status);
/** Renders the exposition text into a malloc'd buffer (*len set); the caller frees it. */
char *sdw_metrics_render(const sdw_metrics *m, int queue_depth, int running, const sdw_metrics_worker *w,
                         int n_workers, double uptime_s, size_t *len);

#endif
