/* server.h: the supervisor's service: h2o listener and routes, job registry, worker pool, signals
 * (signalfd on the evloop), sd_notify and graceful shutdown. */
#ifndef SDW_SERVER_H
#define SDW_SERVER_H

#include "config.h"

/** Runs the service until SIGTERM/SIGINT and the drain complete. engine_path is the sd-worker-engine
 * executable workers are exec'd from. Returns the process exit code (0 after a clean shutdown). */
int sdw_server_run(const sdw_config *cfg, const char *engine_path);

/** Finds sd-worker-engine: $SDW_ENGINE, else beside /proc/self/exe, else SDW_LIBEXECDIR. 0 or -1 with err. */
int sdw_engine_path(char *out, size_t outlen, char *err, size_t errlen);

#endif
