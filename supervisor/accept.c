/* accept.c: accepting connections within the descriptor budget: RLIMIT_NOFILE raised to its hard limit,
 * limits.max_connections capped below it, and the listener paused (not spun) when descriptors run out. */
#include <errno.h>
#include <stdint.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "log.h"
#include "srv.h"

/* Descriptors kept out of the connections' reach: stdio, the event loop, the signalfd, the listener,
 * h2o's own, and per worker its socketpair end plus the new pair a respawn needs for a moment, with
 * room to spare, so that a crashed worker can always be restarted and the log always written. */
#define SDW_FD_RESERVE_BASE 24
#define SDW_FD_RESERVE_PER_WORKER 8
/* After EMFILE/ENFILE the listener sleeps this long, like nginx's accept pause: accepting again at
 * once would only fail again, in a loop that starves every other connection and timer. */
#define SDW_ACCEPT_PAUSE_MS 100

static void on_accept(h2o_socket_t *listener, const char *err);

int sdw_accept_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) rl.rlim_cur = was;
    }
    return rl.rlim_cur > INT32_MAX ? INT32_MAX : (int)rl.rlim_cur;
}

void sdw_accept_init(sdw_srv *s, int nofile)
{
    int reserve = SDW_FD_RESERVE_BASE + SDW_FD_RESERVE_PER_WORKER * s->cfg->n_devices;
    if (nofile < 0) nofile = INT32_MAX;
    int room = nofile > reserve ? nofile - reserve : 1;
    s->max_conns = s->cfg->max_connections < room ? s->cfg->max_connections : room;
    if (s->max_conns < s->cfg->max_connections)
        sdw_log(SDW_LOG_WARN, "max_connections_lowered", "configured=%d effective=%d nofile=%d reserve=%d",
                s->cfg->max_connections, s->max_conns, nofile, reserve);
    else
        sdw_log(SDW_LOG_DEBUG, "fd_limits", "nofile=%d max_connections=%d reserve=%d", nofile, s->max_conns,
                reserve);
}

static void listen_on(sdw_srv *s)
{
    if (s->listener && !s->accept_paused && !h2o_socket_is_reading(s->listener))
        h2o_socket_read_start(s->listener, on_accept);
}

static void listen_off(sdw_srv *s)
{
    if (s->listener && h2o_socket_is_reading(s->listener)) h2o_socket_read_stop(s->listener);
}

static void on_pause_over(h2o_timeout_entry_t *e)
{
    sdw_srv *s = H2O_STRUCT_FROM_MEMBER(sdw_srv, accept_pause_entry, e);
    s->accept_paused = 0;
    if (s->n_conns < s->max_conns) listen_on(s);
}

static void on_conn_closed(void *data)
{
    sdw_srv *s = data;
    s->n_conns--;
    if (s->n_conns < s->max_conns) listen_on(s);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    sdw_srv *s = listener->data;
    if (err) return;
    for (int i = 0; i < 64 && s->n_conns < s->max_conns; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (!sock) {
            /* h2o_evloop_socket_accept returns NULL with accept4's errno */
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* once per streak: a pause every 100 ms would otherwise log ten lines a second */
                if (!s->pause_logged)
                    sdw_log(SDW_LOG_WARN, "accept_paused", "errno=%s conns=%d pause_ms=%d", strerror(errno),
                            s->n_conns, SDW_ACCEPT_PAUSE_MS);
                s->pause_logged = 1;
                s->accept_paused = 1;
                listen_off(s);
                h2o_timeout_link(s->loop, &s->accept_pause_timeout, &s->accept_pause_entry);
            }
            return;
        }
        s->n_conns++;
        s->pause_logged = 0;
        sock->on_close.cb = on_conn_closed;
        sock->on_close.data = s;
        int one = 1;
        setsockopt(h2o_socket_get_fd(sock), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        h2o_accept(&s->accept_ctx, sock);
    }
    if (s->n_conns >= s->max_conns) {
        /* the backlog holds the rest until a connection closes */
        if (!s->at_max_logged) sdw_log(SDW_LOG_WARN, "max_connections_reached", "conns=%d", s->n_conns);
        s->at_max_logged = 1;
        listen_off(s);
    } else {
        s->at_max_logged = 0;
    }
}

void sdw_accept_start(sdw_srv *s)
{
    h2o_timeout_init(s->loop, &s->accept_pause_timeout, SDW_ACCEPT_PAUSE_MS);
    s->accept_pause_entry.cb = on_pause_over;
    listen_on(s);
}

void sdw_accept_close(sdw_srv *s)
{
    if (h2o_timeout_is_linked(&s->accept_pause_entry)) h2o_timeout_unlink(&s->accept_pause_entry);
    if (!s->listener) return;
    listen_off(s);
    h2o_socket_close(s->listener);
    s->listener = NULL;
}
