/* notify.c: the sd_notify protocol without libsystemd: one datagram per message to the AF_UNIX socket
 * named by $NOTIFY_SOCKET (a path, or '@' for the abstract namespace), and $WATCHDOG_USEC parsing. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"

int sdw_notify(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !path[0]) return 1;
    if (!msg) return -1;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t n = strlen(path);
    /* systemd also allows vsock: addresses; a VM-to-host notify is not a case this service has. */
    if ((path[0] != '/' && path[0] != '@') || n >= sizeof sa.sun_path) {
        errno = EINVAL;
        return -1;
    }
    memcpy(sa.sun_path, path, n);
    if (path[0] == '@')
        sa.sun_path[0] = 0; /* abstract namespace: the name is the bytes after the NUL, not NUL-terminated */
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '/' ? 1 : 0));
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    size_t len = strlen(msg);
    ssize_t w;
    do
        w = sendto(fd, msg, len, MSG_NOSIGNAL, (const struct sockaddr *)&sa, salen);
    while (w < 0 && errno == EINTR);
    int saved = errno;
    close(fd);
    if (w < 0 || (size_t)w != len) {
        errno = w < 0 ? saved : EMSGSIZE;
        return -1;
    }
    return 0;
}

int sdw_notifyf(const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    if ((size_t)n < sizeof small) return sdw_notify(small);
    /* Rare: a long STATUS= text. */
    char *big = malloc((size_t)n + 1);
    if (!big) return -1;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = sdw_notify(big);
    free(big);
    return rc;
}

/* A whole-string unsigned decimal; 0 on any junk so a malformed variable disables the watchdog. */
static uint64_t parse_u64(const char *s)
{
    if (!s || !*s) return 0;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return 0;
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) return 0;
        v = v * 10 + d;
    }
    return v;
}

uint64_t sdw_notify_watchdog_usec(void)
{
    uint64_t usec = parse_u64(getenv("WATCHDOG_USEC"));
    if (!usec) return 0;
    /* The variables may be inherited by a child the watchdog isn't for; systemd sets WATCHDOG_PID to say
     * whom. */
    const char *pid = getenv("WATCHDOG_PID");
    if (pid && (uint64_t)getpid() != parse_u64(pid)) return 0;
    return usec;
}
