/* http_util.c: response helpers shared by the routes: status lines, JSON bodies and errors, header
 * access, and the CORS headers every response carries for an allowed Origin. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "srv.h"

static const char *reason_of(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    }
    return "Unknown";
}

void sdw_http_add_header(h2o_req_t *req, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    h2o_iovec_t v = h2o_strdup(&req->pool, value, vl);
    const h2o_token_t *tok = h2o_lookup_token(name, nl);
    if (tok) {
        h2o_add_header(&req->pool, &req->res.headers, tok, NULL, v.base, v.len);
    } else {
        h2o_iovec_t n = h2o_strdup(&req->pool, name, nl);
        h2o_add_header_by_str(&req->pool, &req->res.headers, n.base, n.len, 0, NULL, v.base, v.len);
    }
}

const char *sdw_http_header(h2o_req_t *req, const char *name, size_t *len)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, name, strlen(name), -1);
    if (i < 0) {
        *len = 0;
        return NULL;
    }
    *len = req->headers.entries[i].value.len;
    return req->headers.entries[i].value.base;
}

int sdw_http_origin_allowed(sdw_srv *s, h2o_req_t *req)
{
    size_t olen;
    const char *origin = sdw_http_header(req, "origin", &olen);
    if (!origin) return 1;
    for (int i = 0; i < s->cfg->n_cors_origins; i++) {
        const char *o = s->cfg->cors_origins[i];
        if (!strcmp(o, "*") || (strlen(o) == olen && !memcmp(o, origin, olen))) return 1;
    }
    return 0;
}

/* Access-Control-Allow-Origin for an allowed Origin: "*" when the config allows any, else the origin
 * itself (then Vary: Origin, so caches keep one answer per origin). */
static void add_cors(sdw_srv *s, h2o_req_t *req)
{
    size_t olen;
    const char *origin = sdw_http_header(req, "origin", &olen);
    if (!origin) return;
    for (int i = 0; i < s->cfg->n_cors_origins; i++) {
        const char *o = s->cfg->cors_origins[i];
        if (!strcmp(o, "*")) {
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL,
                           H2O_STRLIT("*"));
            break;
        }
        if (strlen(o) == olen && !memcmp(o, origin, olen)) {
            h2o_iovec_t v = h2o_strdup(&req->pool, origin, olen);
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL, v.base,
                           v.len);
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL, H2O_STRLIT("Origin"));
            break;
        }
    }
    sdw_http_add_header(req, "access-control-expose-headers", "Retry-After, Location");
}

void sdw_http_prepare(sdw_srv *s, h2o_req_t *req, int status, const char *content_type)
{
    req->res.status = status;
    req->res.reason = reason_of(status);
    add_cors(s, req);
    if (content_type)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
                       strlen(content_type));
}

void sdw_http_send(sdw_srv *s, h2o_req_t *req, int status, const char *content_type, const char *body,
                   size_t len)
{
    sdw_http_prepare(s, req, status, content_type);
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
}

void sdw_http_send_json(sdw_srv *s, h2o_req_t *req, int status, json_t *body)
{
    /* into the request's pool, plus the newline curl users expect; most answers fit the stack buffer in one
     * pass, larger ones are measured and dumped again straight into the pool */
    char small[1024];
    size_t n = body ? json_dumpb(body, small, sizeof small, SDW_JSON_DUMP_FLAGS) : 0;
    char *buf = n ? h2o_mem_alloc_pool(&req->pool, n + 1) : NULL;
    if (buf && n <= sizeof small)
        memcpy(buf, small, n);
    else if (!buf || json_dumpb(body, buf, n, SDW_JSON_DUMP_FLAGS) != n) {
        json_decref(body);
        static const char oom[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\",\"field\":null}}\n";
        sdw_http_send(s, req, 500, "application/json", oom, sizeof oom - 1);
        return;
    }
    json_decref(body);
    buf[n] = '\n';
    h2o_iovec_t iov = h2o_iovec_init(buf, n + 1);
    sdw_http_prepare(s, req, status, "application/json");
    req->res.content_length = iov.len;
    static h2o_generator_t gen = {NULL, NULL};
    h2o_start_response(req, &gen);
    if (h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD")))
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
    else
        h2o_send(req, &iov, 1, H2O_SEND_STATE_FINAL);
}

void sdw_http_send_error(sdw_srv *s, h2o_req_t *req, const sdw_api_error *e)
{
    sdw_http_send_json(s, req, e->status,
                       json_pack("{s:{s:o,s:o,s:o}}", "error", "code", sdw_json_str(e->code), "message",
                                 sdw_json_str(e->message), "field",
                                 sdw_json_str(e->field[0] ? e->field : NULL)));
}

void sdw_http_errorf(sdw_srv *s, h2o_req_t *req, int status, const char *code, const char *field,
                     const char *fmt, ...)
{
    sdw_api_error e;
    char msg[sizeof e.message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sdw_api_error_set(&e, status, code, field, "%s", msg);
    sdw_http_send_error(s, req, &e);
}
