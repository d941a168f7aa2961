/* access_log.c: one log line per HTTP request (method, path, status, bytes, ms, peer), deferred into the
 * logger's batch and written once per loop iteration, and the metrics' request counter; an h2o logger. */
#include <stdio.h>
#include <string.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/time.h>

#include "api.h"
#include "log.h"
#include "numfmt.h"
#include "srv.h"

typedef struct {
    h2o_logger_t super;
    sdw_srv *srv;
} access_logger;

/* The batch of access lines is written when the loop iteration that logged them is over: an entry on the
 * context's zero timeout runs after the iteration's socket events, and makes the next poll not wait. Under
 * load one write(2) carries many lines; when idle each line still goes out at once. Warnings and every
 * other line logged meanwhile write the batch first, and so does exit. */
static h2o_timeout_entry_t flush_entry;

static void on_flush(h2o_timeout_entry_t *e)
{
    (void)e;
    sdw_log_flush();
}

static void flush_soon(sdw_srv *s)
{
    if (!h2o_timeout_is_linked(&flush_entry)) {
        flush_entry.cb = on_flush;
        h2o_timeout_link(s->loop, &s->ctx.zero_timeout, &flush_entry);
    }
}

/* The peer's numeric address; IPv4 by hand, as h2o's helper formats it with sprintf (it showed in profiles).
 */
static void peer_name(h2o_req_t *req, char *peer, size_t cap)
{
    peer[0] = '\0';
    struct sockaddr_storage sa;
    socklen_t sl;
    if (!req->conn || !req->conn->callbacks->get_peername ||
        (sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&sa)) == 0)
        return;
    if (sa.ss_family == AF_INET && cap >= 16) {
        const unsigned char *b = (const unsigned char *)&((struct sockaddr_in *)&sa)->sin_addr;
        size_t o = 0;
        for (int i = 0; i < 4; i++) {
            if (i) peer[o++] = '.';
            o += sdw_fmt_u64(peer + o, b[i]);
        }
        return;
    }
    char host[NI_MAXHOST];
    size_t hl = h2o_socket_getnumerichost((struct sockaddr *)&sa, sl, host);
    if (hl != SIZE_MAX && hl < cap) {
        memcpy(peer, host, hl);
        peer[hl] = '\0';
    }
}

/* Methods outside this set are counted as "other", so clients cannot grow the metric's label set. */
static const char *method_label(h2o_iovec_t m)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "DELETE", "OPTIONS", "PUT", "PATCH"};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (h2o_memis(m.base, m.len, known[i], strlen(known[i]))) return known[i];
    return "other";
}

static void log_access(h2o_logger_t *self, h2o_req_t *req)
{
    sdw_srv *s = ((access_logger *)self)->srv;
    const char *id;
    size_t idlen;
    sdw_route r = req->path_normalized.base
                      ? sdw_route_match(req->path_normalized.base, req->path_normalized.len, &id, &idlen)
                      : SDW_ROUTE_NONE;
    const char *method = method_label(req->method.base ? req->method : req->input.method);
    int status = req->res.status;
    const char *pattern = r != SDW_ROUTE_NONE || !req->path_normalized.base
                              ? sdw_route_pattern(r)
                              : sdw_api_route_pattern(req->path_normalized.base, req->path_normalized.len);
    sdw_metrics_http(s->metrics, method, pattern, status);
    if (s->cfg->log_level > SDW_LOG_INFO) return; /* the line would be dropped: skip building it */

    struct timeval now;
    gettimeofday(&now, NULL);
    double ms = 0;
    if (req->timestamps.request_begin_at.tv_sec)
        ms = (double)(now.tv_sec - req->timestamps.request_begin_at.tv_sec) * 1e3 +
             (double)(now.tv_usec - req->timestamps.request_begin_at.tv_usec) / 1e3;

    char path[256], st[24], bytes[24], msb[32], peer[64] = "";
    size_t pl = req->input.path.len < sizeof path - 1 ? req->input.path.len : sizeof path - 1;
    if (req->input.path.base)
        memcpy(path, req->input.path.base, pl);
    else
        pl = 0;
    path[pl] = '\0';
    sdw_fmt_u64(st, (uint64_t)(status > 0 ? status : 0));
    sdw_fmt_u64(bytes, req->bytes_sent);
    sdw_fmt_fixed(msb, ms, 1);
    peer_name(req, peer, sizeof peer);
    const char *key = sdw_api_key_name(req); /* the key's name only: the key itself is never logged */
    sdw_log_deferred(SDW_LOG_INFO, "http", "method=%s path=%s status=%s bytes=%s ms=%s peer=%s key=%s",
                     method, path, st, bytes, msb, peer, key ? key : "-");
    flush_soon(s);
}

void sdw_access_log_register(sdw_srv *s, h2o_pathconf_t *pathconf)
{
    access_logger *l = (access_logger *)h2o_create_logger(pathconf, sizeof *l);
    l->super.log_access = log_access;
    l->srv = s;
}
