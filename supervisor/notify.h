/* notify.h: sd_notify without libsystemd: datagrams to $NOTIFY_SOCKET (path or abstract socket)
 * for READY=1, STATUS=, STOPPING=1 and WATCHDOG=1. Every call is a no-op when the variable is unset. */
#ifndef SDW_NOTIFY_H
#define SDW_NOTIFY_H

#include <stdint.h>

/** Sends msg ("READY=1\nSTATUS=..." ) to $NOTIFY_SOCKET; 0 sent, 1 not under a notify socket, -1 error. */
int sdw_notify(const char *msg);
/** printf-style form of sdw_notify(). */
int sdw_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/** Watchdog interval in microseconds from $WATCHDOG_USEC (checked against $WATCHDOG_PID), or 0 if disabled.
 */
uint64_t sdw_notify_watchdog_usec(void);

#endif
