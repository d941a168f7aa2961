/* webui.c: GET / serves the built-in page (web/index.html, linked in by webui_blob.S). It holds no
 * data, so it needs no key: the page asks for one and sends it with each API call. */
#include <stdint.h>
#include <string.h>

#include "api.h"

extern const char sdw_webui_index[];
extern const uint64_t sdw_webui_index_len;

int sdw_webui_dispatch(sdw_srv *s, h2o_req_t *req)
{
    h2o_iovec_t p = req->path_normalized;
    if (!h2o_memis(p.base, p.len, H2O_STRLIT("/")) && !h2o_memis(p.base, p.len, H2O_STRLIT("/index.html")))
        return 0;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) &&
        !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("GET, HEAD"));
        sdw_http_errorf(s, req, 405, "method_not_allowed", NULL, "allowed: GET, HEAD");
        return 1;
    }
    /* the page runs its own script only: no framing by other sites, no remote code */
    sdw_http_add_header(req, "content-security-policy",
                        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                        "img-src 'self' blob: data:; connect-src 'self'; frame-ancestors 'none'");
    sdw_http_add_header(req, "x-content-type-options", "nosniff");
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    sdw_http_prepare(s, req, 200, "text/html; charset=utf-8");
    req->res.content_length = (size_t)sdw_webui_index_len;
    static h2o_generator_t gen = {NULL, NULL};
    h2o_start_response(req, &gen);
    h2o_iovec_t body = h2o_iovec_init(sdw_webui_index, (size_t)sdw_webui_index_len);
    if (h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD")))
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
    else
        h2o_send(req, &body, 1, H2O_SEND_STATE_FINAL);
    return 1;
}
