/* reload.c: SIGHUP: read the configuration file again and apply what can change while serving; new workers
 * start with the new settings and the old ones retire once idle (sdw_pool_reload), so no job is lost. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "srv.h"

/* The configuration a reload installed (the first one belongs to main and is never freed here). */
static sdw_config *owned;

/* Settings bound at startup (the listener, h2o's limits, timers sized once, the job registry): a reload
 * keeps the running value, and says so, rather than half-applying them. */
static void keep_startup_settings(const sdw_config *old, sdw_config *cfg, char *names, size_t len)
{
    size_t o = 0;
#define KEEP_INT(field, name)                                                                                \
    if (cfg->field != old->field) {                                                                          \
        cfg->field = old->field;                                                                             \
        o += (size_t)snprintf(names + o, o < len ? len - o : 0, "%s%s", o ? "," : "", name);                 \
    }
#define KEEP_STR(field, name)                                                                                \
    if (strcmp(cfg->field ? cfg->field : "", old->field ? old->field : "")) {                                \
        free(cfg->field);                                                                                    \
        cfg->field = old->field ? strdup(old->field) : NULL;                                                 \
        o += (size_t)snprintf(names + o, o < len ? len - o : 0, "%s%s", o ? "," : "", name);                 \
    }
    names[0] = '\0';
    KEEP_STR(listen_host, "listen");
    KEEP_INT(listen_port, "listen");
    KEEP_STR(node_id, "node_id");
    KEEP_INT(max_body_bytes, "limits.max_body_bytes");
    KEEP_INT(request_timeout_s, "limits.request_timeout_s");
    KEEP_INT(idle_timeout_s, "limits.idle_timeout_s");
    KEEP_INT(queue_capacity, "queue.capacity");
    KEEP_INT(result_ttl_s, "queue.result_ttl_s");
    KEEP_INT(retry_on_crash, "workers.retry_on_crash");
    KEEP_INT(job_timeout_s, "workers.job_timeout_s");
    KEEP_INT(heartbeat_ms, "workers.heartbeat_s");
    KEEP_INT(shutdown_grace_s, "workers.shutdown_grace_s");
#undef KEEP_INT
#undef KEEP_STR
}

void sdw_srv_reload(sdw_srv *s)
{
    if (s->phase != SDW_SRV_RUNNING || !s->pool) {
        sdw_log(SDW_LOG_INFO, "reload_ignored", "reason=%s", "shutting down");
        return;
    }
    const sdw_config *old = s->cfg;
    const char *file = old->file ? old->file : "";
    sdw_config *cfg = calloc(1, sizeof *cfg);
    char err[512];
    if (!cfg) {
        sdw_log(SDW_LOG_ERROR, "reload_failed", "file=%s error=%s action=%s", file, "out of memory",
                "kept the running configuration");
        return;
    }
    if (sdw_config_load(file, cfg, err, sizeof err) != 0) {
        /* err is "file:line:col: message", the place to fix */
        sdw_log(SDW_LOG_ERROR, "reload_failed", "file=%s error=\"%s\" action=\"%s\"", file, err,
                "kept the running configuration");
        free(cfg);
        return;
    }
    char restart_only[256];
    keep_startup_settings(old, cfg, restart_only, sizeof restart_only);
    if (sdw_pool_reload(s->pool, cfg, err, sizeof err) != 0) {
        sdw_log(SDW_LOG_ERROR, "reload_failed", "file=%s error=\"%s\" action=\"%s\"", file, err,
                "kept the running configuration");
        sdw_config_free(cfg);
        free(cfg);
        return;
    }
    s->cfg = cfg;
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
    sdw_log_init(cfg->log_level, cfg->log_json, "supervisor");
    if (owned) {
        sdw_config_free(owned);
        free(owned);
    }
    owned = cfg;
    file = cfg->file ? cfg->file : ""; /* the old name went with the configuration freed above */
    sdw_log(SDW_LOG_INFO, "reload", "file=%s model=%s devices=%d needs_restart=%s", file, cfg->model_path,
            cfg->n_devices, restart_only[0] ? restart_only : "none");
    if (restart_only[0])
        sdw_log(SDW_LOG_WARN, "reload_needs_restart", "settings=%s action=\"%s\"", restart_only,
                "kept their running values; restart the service to change them");
}

void sdw_srv_reload_free(void)
{
    if (owned) {
        sdw_config_free(owned);
        free(owned);
        owned = NULL;
    }
}
