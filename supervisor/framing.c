/* framing.c: refusing HTTP/1 requests whose body length is ambiguous (RFC 9112 §6.3): Content-Length with
 * Transfer-Encoding, two different Content-Lengths, ... get 400 and the connection closes (request
 * smuggling). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <h2o.h>

#include "log.h"
#include "srv.h"

/* libh2o 2.2.5 settles these cases silently (chunked wins over Content-Length, the first of two
 * Content-Lengths wins) and hands neither header to handlers. Its HTTP/1 connection parses each request
 * in place at the start of the socket's input buffer and consumes it only after the response, so the
 * raw head is still there when a handler runs: it is read again here, as picohttpparser split it. */

typedef struct {
    h2o_handler_t super;
    sdw_srv *srv;
} framing_handler;

typedef struct {
    const char *cl; /* the first Content-Length value, trimmed */
    size_t cl_len;
    int n_cl, n_te;
    int last; /* 1: the previous header line was Content-Length, 2: Transfer-Encoding, 0: another */
} framing_state;

static int name_is(const char *p, size_t n, const char *lc, size_t lc_len)
{
    return n == lc_len && strncasecmp(p, lc, n) == 0;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static int fail(char *why, size_t whylen, const char **field, const char *f, const char *msg)
{
    if (field) *field = f;
    if (why && whylen) snprintf(why, whylen, "%s", msg);
    return 1;
}

/* One header line (without its line end); returns 1 when it alone makes the framing ambiguous. */
static int check_line(framing_state *st, const char *p, size_t n, char *why, size_t whylen,
                      const char **field)
{
    if (n && is_ows(p[0])) {
        /* obs-fold continues the previous field: h2o kept the value without it, another hop may not */
        if (st->last == 1)
            return fail(why, whylen, field, "Content-Length",
                        "a Content-Length value continued on the next line");
        if (st->last == 2)
            return fail(why, whylen, field, "Transfer-Encoding",
                        "a Transfer-Encoding value continued on the next line");
        return 0;
    }
    const char *colon = memchr(p, ':', n);
    if (!colon) {
        st->last = 0;
        return 0;
    }
    /* picohttpparser refuses whitespace before the colon itself, so the name ends at the colon */
    size_t name = (size_t)(colon - p);
    int kind = name_is(p, name, H2O_STRLIT("content-length"))      ? 1
               : name_is(p, name, H2O_STRLIT("transfer-encoding")) ? 2
                                                                   : 0;
    st->last = kind;
    if (!kind) return 0;
    const char *f = kind == 1 ? "Content-Length" : "Transfer-Encoding";
    const char *v = colon + 1, *end = p + n;
    while (v < end && is_ows(*v))
        v++;
    while (end > v && is_ows(end[-1]))
        end--;
    if (kind == 2) {
        st->n_te++;
        return 0;
    }
    if (st->n_cl++ == 0) {
        st->cl = v;
        st->cl_len = (size_t)(end - v);
    } else if ((size_t)(end - v) != st->cl_len || memcmp(v, st->cl, st->cl_len) != 0) {
        return fail(why, whylen, field, f, "two different Content-Length values");
    }
    return 0;
}

int sdw_framing_check(const char *head, size_t len, int http10, char *why, size_t whylen, const char **field)
{
    framing_state st = {0};
    const char *p = head, *end = head + len;
    /* the request line; picohttpparser ends lines at LF, with or without CR */
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) return 0;
    for (p = nl + 1; p < end; p = nl + 1) {
        nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) break;
        size_t n = (size_t)(nl - p);
        if (n && p[n - 1] == '\r') n--;
        if (n == 0) break; /* the end of the head */
        if (check_line(&st, p, n, why, whylen, field)) return 1;
    }
    if (st.n_te && st.n_cl)
        return fail(why, whylen, field, "Transfer-Encoding", "both Content-Length and Transfer-Encoding");
    /* h2o understands exactly one "chunked" and takes the last line; a proxy would join them */
    if (st.n_te > 1) return fail(why, whylen, field, "Transfer-Encoding", "more than one Transfer-Encoding");
    if (st.n_te && http10)
        return fail(why, whylen, field, "Transfer-Encoding", "Transfer-Encoding in HTTP/1.0");
    return 0;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    /* h2o sets entity only for a request that had Content-Length or Transfer-Encoding: requests
     * without a body (GET /health) pay two comparisons; HTTP/2 frames its bodies itself */
    if (req->entity.base == NULL || req->version >= 0x200) return -1;
    h2o_socket_t *sock =
        req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
    if (!sock || !sock->input) return -1;
    size_t len = sock->input->size < H2O_MAX_REQLEN ? sock->input->size : H2O_MAX_REQLEN;
    char why[80];
    const char *field = NULL;
    if (!sdw_framing_check(sock->input->bytes, len, req->version < 0x101, why, sizeof why, &field)) return -1;
    sdw_srv *s = ((framing_handler *)self)->srv;
    sdw_log(SDW_LOG_WARN, "ambiguous_framing", "reason=\"%s\"", why);
    /* Connection: close, and h2o closes the connection after this answer instead of parsing what follows */
    req->http1_is_persistent = 0;
    sdw_http_errorf(s, req, 400, "ambiguous_framing", field,
                    "%s: the body length is ambiguous (RFC 9112 6.3)", why);
    return 0;
}

void sdw_framing_register(sdw_srv *s, h2o_pathconf_t *pathconf)
{
    framing_handler *h = (framing_handler *)h2o_create_handler(pathconf, sizeof *h);
    h->super.on_req = on_req;
    h->srv = s;
}
