/* log.h: one line per event to stderr, "ts=... level=... comp=... event=... key=value ..." or JSON.
 * journald takes it as is; the level is configurable. */
#ifndef SDW_LOG_H
#define SDW_LOG_H

enum { SDW_LOG_DEBUG = 0, SDW_LOG_INFO, SDW_LOG_WARN, SDW_LOG_ERROR };

/** Sets the threshold, the output form (0 key=value, 1 JSON) and the component name ("supervisor", "worker").
 */
void sdw_log_init(int level, int json, const char *component);
/** Parses "debug|info|warn|error"; -1 if unknown. */
int sdw_log_level_parse(const char *s);
/** Logs event with its fields described printf-style, one space-separated key=value per field:
 * sdw_log(SDW_LOG_INFO, "worker_spawn", "slot=%d device=%s reason=\"%s\"", 0, "cpu0", why).
 * The compiler checks the conversions. A value that is exactly one integer or floating conversion is a
 * number in JSON mode; any other value (%s, literal text, a mix) is a string. Values are quoted and
 * escaped as each form needs, so callers never quote; double quotes in fmt only group a value that
 * contains spaces. fmt may be "" for an event with no fields. */
void sdw_log(int level, const char *event, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/** Like sdw_log, but a debug or info line may wait in the process's batch (up to 4096 bytes, PIPE_BUF, of
 * whole lines) until sdw_log_flush, the next immediate line (which the batch precedes), a fork or exit;
 * warnings and errors are written at once. For per-request lines on an event loop, which flushes once per
 * iteration: one write(2) for many lines. The first thread to call it owns the batch; lines other threads
 * defer are written at once. */
void sdw_log_deferred(int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** Writes the deferred lines of the calling thread's batch now (nothing if it holds none). */
void sdw_log_flush(void);

#endif
