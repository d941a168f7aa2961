/* h2_limit.c: a bound on the streams of one HTTP/2 connection, libh2o 2.2.5 having none against
 * "rapid reset" (CVE-2023-44487): past the bound the connection gets GOAWAY and new streams are ignored. */
#include <h2o.h>
#include <h2o/http2.h>
#include <h2o/http2_internal.h>

#include "log.h"
#include "srv.h"

/* Streams one connection may open (nginx's keepalive_requests is 1000 too): a client resetting
 * every stream it opens still makes the handler run each time, so only a bound per connection
 * stops it; an honest client opens a new connection after the GOAWAY. */
#define SDW_H2_MAX_STREAMS 1000

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    if (req->version < 0x200) return -1;
    /* libh2o 2.2 speaks HTTP/2 only through h2o_http2_conn_t */
    h2o_http2_conn_t *conn = (h2o_http2_conn_t *)req->conn;
    /* client stream ids are odd and only grow: the highest opened one counts every stream so far */
    uint32_t opened = conn->pull_stream_ids.max_open / 2 + 1;
    if (opened >= SDW_H2_MAX_STREAMS && conn->state == H2O_HTTP2_CONN_STATE_OPEN) {
        sdw_log(SDW_LOG_WARN, "http2_goaway", "streams=%u reason=%s", (unsigned)opened,
                "max streams per connection");
        /* what h2o's own enqueue_goaway does: HALF_CLOSED makes it ignore further HEADERS, and the
         * connection closes once its streams are done or it idles out */
        h2o_http2_encode_goaway_frame(&conn->_write.buf, conn->pull_stream_ids.max_open,
                                      H2O_HTTP2_ERROR_ENHANCE_YOUR_CALM,
                                      h2o_iovec_init(H2O_STRLIT("too many streams on one connection")));
        h2o_http2_conn_request_write(conn);
        conn->state = H2O_HTTP2_CONN_STATE_HALF_CLOSED;
    }
    return -1; /* this request itself is served as usual */
}

void sdw_h2_limit_register(h2o_pathconf_t *pathconf)
{
    h2o_handler_t *h = h2o_create_handler(pathconf, sizeof *h);
    h->on_req = on_req;
}
