/* sse.c: text/event-stream responses for a job, on h2o's streaming generator: events queue per reader
 * while a send is in flight, progress/queued updates coalesce, a keepalive comment fills silences, and
 * the terminal event ends the response. A reader that goes away changes nothing for the job. */
#include <stdlib.h>
#include <string.h>

#include "srv.h"

typedef enum { EV_OTHER = 0, EV_QUEUED, EV_PROGRESS, EV_PREVIEW, EV_KEEPALIVE } ev_kind;

/* Progress events with a preview waiting for a slow reader: the oldest is dropped beyond this, so a stalled
 * reader holds at most this many images (~270 kB of base64 each) and still sees the picture form. */
#define MAX_PENDING_PREVIEWS 4

typedef struct {
    sdw_rcbuf *buf;
    ev_kind kind;
} sse_item;

typedef struct {
    h2o_generator_t gen; /* first: h2o hands it back to proceed/stop */
    sdw_srv *srv;
    h2o_req_t *req; /* NULL once h2o stopped the response */
    sdw_job_sub sub;
    h2o_timeout_entry_t keepalive;
    sse_item *pending; /* waiting for the send in flight */
    int n_pending, cap_pending;
    sdw_rcbuf **inflight; /* passed to h2o_send; valid until proceed (or the request's end) */
    h2o_iovec_t *vecs;
    int n_inflight, cap_inflight;
    int sending;    /* waiting for proceed */
    int terminal;   /* the terminal event is queued: the next send is the final one */
    int final_sent; /* the response is over on our side */
} sse_reader;

static void release_items(sse_reader *r)
{
    for (int i = 0; i < r->n_pending; i++)
        sdw_rcbuf_release(r->pending[i].buf);
    r->n_pending = 0;
    for (int i = 0; i < r->n_inflight; i++)
        sdw_rcbuf_release(r->inflight[i]);
    r->n_inflight = 0;
}

/* Runs when the request's pool is cleared, i.e. after the last byte was written or the client left. */
static void reader_dispose(void *p)
{
    sse_reader *r = p;
    sdw_job_unsubscribe(&r->sub);
    if (h2o_timeout_is_linked(&r->keepalive)) h2o_timeout_unlink(&r->keepalive);
    release_items(r);
    free(r->pending);
    free(r->inflight);
    free(r->vecs);
    sdw_srv *s = r->srv;
    s->n_readers--;
    sdw_srv_stream_closed(s);
}

static void arm_keepalive(sse_reader *r)
{
    if (h2o_timeout_is_linked(&r->keepalive)) h2o_timeout_unlink(&r->keepalive);
    if (!r->final_sent && r->req) h2o_timeout_link(r->srv->loop, &r->srv->keepalive_timeout, &r->keepalive);
}

/* Queues buf (takes the reference). A queued/progress update replaces an unsent one of its kind, so a
 * slow reader gets the latest state instead of a backlog. */
static void enqueue(sse_reader *r, sdw_rcbuf *buf, ev_kind kind)
{
    if (!buf) return;
    if (r->final_sent || r->terminal) {
        sdw_rcbuf_release(buf);
        return;
    }
    /* a progress with a preview replaces a plain progress, never the other way round */
    ev_kind last = r->n_pending > 0 ? r->pending[r->n_pending - 1].kind : EV_OTHER;
    if ((kind == EV_QUEUED || kind == EV_PROGRESS || kind == EV_KEEPALIVE)
            ? last == kind
            : kind == EV_PREVIEW && last == EV_PROGRESS) {
        sdw_rcbuf_release(r->pending[r->n_pending - 1].buf);
        r->pending[r->n_pending - 1] = (sse_item){buf, kind};
        return;
    }
    if (kind == EV_PREVIEW) {
        int n = 0, oldest = -1;
        for (int i = r->n_pending - 1; i >= 0; i--)
            if (r->pending[i].kind == EV_PREVIEW) {
                n++;
                oldest = i;
            }
        if (n >= MAX_PENDING_PREVIEWS) {
            sdw_rcbuf_release(r->pending[oldest].buf);
            memmove(&r->pending[oldest], &r->pending[oldest + 1],
                    (size_t)(r->n_pending - oldest - 1) * sizeof *r->pending);
            r->n_pending--;
        }
    }
    if (r->n_pending == r->cap_pending) {
        int cap = r->cap_pending ? r->cap_pending * 2 : 8;
        sse_item *n = realloc(r->pending, (size_t)cap * sizeof *n);
        if (!n) {
            sdw_rcbuf_release(buf);
            return;
        }
        r->pending = n;
        r->cap_pending = cap;
    }
    r->pending[r->n_pending++] = (sse_item){buf, kind};
}

static void flush(sse_reader *r)
{
    if (!r->req || r->sending || r->final_sent || (r->n_pending == 0 && !r->terminal)) return;
    if (r->cap_inflight < r->n_pending) {
        int cap = r->n_pending < 8 ? 8 : r->n_pending;
        sdw_rcbuf **ib = realloc(r->inflight, (size_t)cap * sizeof *ib);
        if (ib) r->inflight = ib;
        h2o_iovec_t *v = realloc(r->vecs, (size_t)cap * sizeof *v);
        if (v) r->vecs = v;
        if (!ib || !v) return; /* try again at the next event */
        r->cap_inflight = cap;
    }
    for (int i = 0; i < r->n_pending; i++) {
        r->inflight[i] = r->pending[i].buf;
        r->vecs[i] = h2o_iovec_init(r->pending[i].buf->data, r->pending[i].buf->len);
    }
    r->n_inflight = r->n_pending;
    r->n_pending = 0;
    r->sending = 1;
    h2o_send_state_t st = H2O_SEND_STATE_IN_PROGRESS;
    if (r->terminal) {
        st = H2O_SEND_STATE_FINAL;
        r->final_sent = 1;
        sdw_job_unsubscribe(&r->sub);
    }
    arm_keepalive(r);
    /* the buffers stay referenced until proceed, or for the final send until the request is disposed */
    h2o_send(r->req, r->vecs, (size_t)r->n_inflight, st);
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    sse_reader *r = (sse_reader *)gen;
    for (int i = 0; i < r->n_inflight; i++)
        sdw_rcbuf_release(r->inflight[i]);
    r->n_inflight = 0;
    r->sending = 0;
    flush(r);
}

static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    sse_reader *r = (sse_reader *)gen;
    r->req = NULL;
    sdw_job_unsubscribe(&r->sub);
    if (h2o_timeout_is_linked(&r->keepalive)) h2o_timeout_unlink(&r->keepalive);
}

static void on_keepalive(h2o_timeout_entry_t *entry)
{
    sse_reader *r = H2O_STRUCT_FROM_MEMBER(sse_reader, keepalive, entry);
    if (!r->sending && r->n_pending == 0) enqueue(r, sdw_rcbuf_retain(r->srv->keepalive_ev), EV_KEEPALIVE);
    flush(r);
    arm_keepalive(r);
}

static void queue_terminal(sse_reader *r, sdw_job *job)
{
    sdw_rcbuf *t = sdw_job_sse_terminal(job);
    if (!t) {
        static const char oom[] =
            "event: error\ndata: {\"code\":\"internal\",\"message\":\"out of memory\"}\n\n";
        t = sdw_rcbuf_from(oom, sizeof oom - 1);
    }
    enqueue(r, t, EV_OTHER);
    r->terminal = 1;
    sdw_job_unsubscribe(&r->sub);
}

static void on_job_event(void *ud, sdw_job *job, sdw_job_event ev)
{
    sse_reader *r = ud;
    switch (ev) {
    case SDW_JEV_QUEUED:
        enqueue(r, sdw_job_sse_event(r->srv, job, ev), EV_QUEUED);
        break;
    case SDW_JEV_STARTED:
        enqueue(r, sdw_job_sse_event(r->srv, job, ev), EV_OTHER);
        break;
    case SDW_JEV_PROGRESS:
        enqueue(r, sdw_job_sse_event(r->srv, job, ev),
                sdw_job_has_step_preview(job) ? EV_PREVIEW : EV_PROGRESS);
        break;
    case SDW_JEV_END:
        queue_terminal(r, job);
        break;
    case SDW_JEV_GONE:
        /* freed before it ended (only when the service stops abruptly): end the stream honestly */
        if (!r->terminal && !r->final_sent) {
            static const char gone[] =
                "event: error\ndata: {\"code\":\"shutting_down\",\"message\":\"the service stopped\"}\n\n";
            enqueue(r, sdw_rcbuf_from(gone, sizeof gone - 1), EV_OTHER);
            r->terminal = 1;
        }
        sdw_job_unsubscribe(&r->sub);
        break;
    }
    flush(r);
}

void sdw_sse_start(sdw_srv *s, h2o_req_t *req, sdw_job *job, sdw_rcbuf *first)
{
    sse_reader *r = h2o_mem_alloc_shared(&req->pool, sizeof *r, reader_dispose);
    memset(r, 0, sizeof *r);
    r->gen.proceed = on_proceed;
    r->gen.stop = on_stop;
    r->srv = s;
    r->req = req;
    r->sub.fn = on_job_event;
    r->sub.ud = r;
    r->keepalive.cb = on_keepalive;
    s->n_readers++;

    sdw_http_prepare(s, req, 200, "text/event-stream");
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    sdw_http_add_header(req, "x-accel-buffering",
                        "no"); /* tell nginx-style proxies not to buffer the stream */
    h2o_start_response(req, &r->gen);

    enqueue(r, first, EV_OTHER);
    /* a late reader first learns where the job stands */
    switch (job->status) {
    case SDW_JST_QUEUED:
        if (!first) enqueue(r, sdw_job_sse_event(s, job, SDW_JEV_QUEUED), EV_QUEUED);
        break;
    case SDW_JST_RUNNING:
        if (job->t_started > 0) {
            enqueue(r, sdw_job_sse_event(s, job, SDW_JEV_STARTED), EV_OTHER);
            if (job->step > 0)
                enqueue(r, sdw_job_sse_event(s, job, SDW_JEV_PROGRESS),
                        sdw_job_has_step_preview(job) ? EV_PREVIEW : EV_PROGRESS);
        } else if (!first) {
            enqueue(r, sdw_job_sse_event(s, job, SDW_JEV_QUEUED), EV_QUEUED);
        }
        break;
    default:
        queue_terminal(r, job);
        break;
    }
    if (!r->terminal) sdw_job_subscribe(job, &r->sub);
    flush(r);
    /* nothing to say yet (no first event): headers go out now so the client sees the stream open */
    if (!r->sending && !r->final_sent) {
        r->sending = 1;
        h2o_send(req, NULL, 0, H2O_SEND_STATE_IN_PROGRESS);
    }
    arm_keepalive(r);
}
