/* metrics.c: the supervisor's Prometheus counters, gauges and histograms in fixed tables (no allocation
 * per event; label sets capped so a misbehaving client cannot grow them), rendered as text format 0.0.4. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "metrics.h"

/* Longest label value kept; longer ones are cut (on a UTF-8 boundary). Routes are patterns, codes are
 * short identifiers: anything longer is not a value we want as a series name anyway. */
#define LABEL_MAX 96
/* Distinct series per labelled family; the last slot of each table is the "other" overflow series. */
#define CODES_MAX 32
#define HTTP_MAX 256

typedef struct {
    char a[LABEL_MAX], b[LABEL_MAX], c[8]; /* label values: code | reason | method, route, status */
    uint64_t n;
} series;

typedef struct {
    series *s;
    int n, max;
} family;

/* Bucket upper bounds. Steps: a 512x512 SD 1.5 step is ~0.1 s on a GPU and 10-30 s on a small CPU. */
static const double step_le[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120};
/* Jobs: seconds (GPU, few steps) to an hour (CPU, many steps, big images). */
static const double job_le[] = {0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600};
#define N_STEP_LE (int)(sizeof step_le / sizeof step_le[0])
#define N_JOB_LE (int)(sizeof job_le / sizeof job_le[0])
_Static_assert(N_STEP_LE < 16 && N_JOB_LE < 16, "histogram.bucket needs one slot per bound plus +Inf");

typedef struct {
    const double *le;
    int nle;
    uint64_t bucket[16]; /* per bucket, not cumulative; bucket[nle] is the +Inf bucket */
    double sum;
    uint64_t count;
} histogram;

/* All updates come from the supervisor's event-loop thread, so plain integers are enough. */
struct sdw_metrics {
    uint64_t submitted, completed, cancelled;
    family failed, rejected, http;
    histogram step, job;
};

sdw_metrics *sdw_metrics_new(void)
{
    sdw_metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->failed.s = calloc(CODES_MAX, sizeof(series));
    m->rejected.s = calloc(CODES_MAX, sizeof(series));
    m->http.s = calloc(HTTP_MAX, sizeof(series));
    if (!m->failed.s || !m->rejected.s || !m->http.s) {
        sdw_metrics_free(m);
        return NULL;
    }
    m->failed.max = m->rejected.max = CODES_MAX;
    m->http.max = HTTP_MAX;
    m->step.le = step_le, m->step.nle = N_STEP_LE;
    m->job.le = job_le, m->job.nle = N_JOB_LE;
    return m;
}

void sdw_metrics_free(sdw_metrics *m)
{
    if (!m) return;
    free(m->failed.s);
    free(m->rejected.s);
    free(m->http.s);
    free(m);
}

/* Copies a label value, cut to fit on a UTF-8 boundary, with invalid bytes and controls made '?'
 * (the exposition format requires UTF-8; escaping of \ " and newline happens at render time). */
static void label_copy(char *dst, size_t cap, const char *src)
{
    if (!src || !*src) src = "unknown";
    const unsigned char *p = (const unsigned char *)src;
    size_t o = 0;
    while (*p && o + 1 < cap) {
        size_t need = *p < 0x80             ? 1
                      : (*p & 0xE0) == 0xC0 ? 2
                      : (*p & 0xF0) == 0xE0 ? 3
                      : (*p & 0xF8) == 0xF0 ? 4
                                            : 0;
        int ok = need > 0 && !(need == 2 && *p < 0xC2) && !(need == 4 && *p > 0xF4);
        for (size_t i = 1; ok && i < need; i++)
            ok = (p[i] & 0xC0) == 0x80;
        if (!ok || *p < 0x20 || *p == 0x7F) {
            dst[o++] = '?';
            p++;
            continue;
        }
        if (o + need >= cap) break;
        memcpy(dst + o, p, need);
        o += need;
        p += need;
    }
    dst[o] = 0;
}

/* Finds or adds the series with these label values; once the table is full, new label sets all
 * count in one "other" series so memory and scrape size stay bounded. */
static series *family_get(family *f, const char *a, const char *b, const char *c)
{
    char ka[LABEL_MAX], kb[LABEL_MAX], kc[8];
    label_copy(ka, sizeof ka, a);
    label_copy(kb, sizeof kb, b ? b : "");
    label_copy(kc, sizeof kc, c ? c : "");
    for (int i = 0; i < f->n; i++) {
        series *s = &f->s[i];
        if (!strcmp(s->a, ka) && !strcmp(s->b, kb) && !strcmp(s->c, kc)) return s;
    }
    if (f->n < f->max - 1) {
        series *s = &f->s[f->n++];
        memcpy(s->a, ka, sizeof ka);
        memcpy(s->b, kb, sizeof kb);
        memcpy(s->c, kc, sizeof kc);
        return s;
    }
    series *o = &f->s[f->max - 1];
    if (f->n < f->max) {
        f->n = f->max;
        snprintf(o->a, sizeof o->a, "other");
        snprintf(o->b, sizeof o->b, "%s", b ? "other" : "");
        snprintf(o->c, sizeof o->c, "%s", c ? "other" : "");
    }
    return o;
}

static void observe(histogram *h, double v)
{
    if (isnan(v) || isinf(v)) return; /* one bad clock reading must not poison _sum forever */
    if (v < 0) v = 0;
    int i = 0;
    while (i < h->nle && v > h->le[i])
        i++;
    h->bucket[i]++;
    h->sum += v;
    h->count++;
}

void sdw_metrics_job_submitted(sdw_metrics *m)
{
    if (m) m->submitted++;
}

void sdw_metrics_job_completed(sdw_metrics *m, double duration_s)
{
    if (!m) return;
    m->completed++;
    observe(&m->job, duration_s);
}

void sdw_metrics_job_failed(sdw_metrics *m, const char *code)
{
    if (m) family_get(&m->failed, code, NULL, NULL)->n++;
}

void sdw_metrics_job_cancelled(sdw_metrics *m)
{
    if (m) m->cancelled++;
}

void sdw_metrics_job_rejected(sdw_metrics *m, const char *reason)
{
    if (m) family_get(&m->rejected, reason, NULL, NULL)->n++;
}

void sdw_metrics_step(sdw_metrics *m, double step_s)
{
    if (m) observe(&m->step, step_s);
}

void sdw_metrics_http(sdw_metrics *m, const char *method, const char *route, int status)
{
    if (!m) return;
    /* Only the standard methods become label values: a client can send any token as a method. */
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", NULL};
    const char *meth = "other";
    for (int i = 0; method && methods[i]; i++)
        if (!strcasecmp(method, methods[i])) meth = methods[i];
    char st[8];
    if (status >= 100 && status <= 599)
        snprintf(st, sizeof st, "%d", status);
    else
        snprintf(st, sizeof st, "other");
    family_get(&m->http, meth, route ? route : "unknown", st)->n++;
}

/* ---- rendering -------------------------------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} sbuf;

static void __attribute__((format(printf, 2, 3))) sb_printf(sbuf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *nb = realloc(b->buf, cap);
        if (!nb) {
            b->oom = 1;
            return;
        }
        b->buf = nb;
        b->cap = cap;
    }
}

/* A label value in quotes, escaped as the text format requires: backslash, double quote, newline. */
static void sb_label(sbuf *b, const char *name, const char *v, int first)
{
    char esc[2 * LABEL_MAX + 1];
    size_t o = 0;
    for (const char *p = v; *p && o + 2 < sizeof esc; p++) {
        if (*p == '\\' || *p == '"')
            esc[o++] = '\\', esc[o++] = *p;
        else if (*p == '\n')
            esc[o++] = '\\', esc[o++] = 'n';
        else
            esc[o++] = *p;
    }
    esc[o] = 0;
    sb_printf(b, "%s%s=\"%s\"", first ? "" : ",", name, esc);
}

static void sb_head(sbuf *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sb_counter(sbuf *b, const char *name, const char *help, uint64_t v)
{
    sb_head(b, name, "counter", help);
    sb_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

static void sb_family(sbuf *b, const char *name, const char *help, const family *f, const char *la,
                      const char *lb, const char *lc)
{
    sb_head(b, name, "counter", help);
    for (int i = 0; i < f->n; i++) {
        const series *s = &f->s[i];
        sb_printf(b, "%s{", name);
        sb_label(b, la, s->a, 1);
        if (lb) sb_label(b, lb, s->b, 0);
        if (lc) sb_label(b, lc, s->c, 0);
        sb_printf(b, "} %llu\n", (unsigned long long)s->n);
    }
}

static void sb_histogram(sbuf *b, const char *name, const char *help, const histogram *h)
{
    sb_head(b, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i < h->nle; i++) {
        cum += h->bucket[i];
        sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->le[i], (unsigned long long)cum);
    }
    cum += h->bucket[h->nle];
    sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    sb_printf(b, "%s_sum %.17g\n", name, h->sum);
    sb_printf(b, "%s_count %llu\n", name, (unsigned long long)h->count);
}

/* One VRAM gauge family: a series per worker that reported its GPU's memory; total 0 free, 1 total. */
static void sb_vram(sbuf *b, const char *name, const char *help, const sdw_metrics_worker *w, int n,
                    int total)
{
    sb_head(b, name, "gauge", help);
    for (int i = 0; i < n; i++) {
        if (!w[i].has_vram) continue;
        char dev[LABEL_MAX];
        label_copy(dev, sizeof dev, w[i].device);
        sb_printf(b, "%s{", name);
        sb_label(b, "device", dev, 1);
        sb_printf(b, "} %llu\n", (unsigned long long)(total ? w[i].vram_total_bytes : w[i].vram_free_bytes));
    }
}

char *sdw_metrics_render(const sdw_metrics *m, int queue_depth, int running, const sdw_metrics_worker *w,
                         int n_workers, double uptime_s, size_t *len)
{
    static const char *const states[] = {"loading", "ready", "busy", "restarting", "failed", "stopped"};
    enum { N_STATES = sizeof states / sizeof states[0] };
    sbuf b = {malloc(8192), 0, 8192, 0};
    if (len) *len = 0;
    if (!b.buf || !m) {
        free(b.buf);
        return NULL;
    }
    sb_counter(&b, "sdw_jobs_submitted_total", "Jobs accepted into the queue.", m->submitted);
    sb_counter(&b, "sdw_jobs_completed_total", "Jobs that finished with an image.", m->completed);
    sb_family(&b, "sdw_jobs_failed_total", "Jobs that ended in an error, by error code.", &m->failed, "code",
              NULL, NULL);
    sb_counter(&b, "sdw_jobs_cancelled_total", "Jobs that ended cancelled.", m->cancelled);
    sb_family(&b, "sdw_jobs_rejected_total", "Job submissions refused, by reason (queue_full, invalid, ...).",
              &m->rejected, "reason", NULL, NULL);

    sb_head(&b, "sdw_queue_depth", "gauge", "Jobs waiting for a worker.");
    sb_printf(&b, "sdw_queue_depth %d\n", queue_depth);
    sb_head(&b, "sdw_jobs_running", "gauge", "Jobs running on a worker now.");
    sb_printf(&b, "sdw_jobs_running %d\n", running);

    sb_head(&b, "sdw_worker_state", "gauge",
            "Worker state: 1 for the state each device's worker is in now, 0 for the others.");
    for (int i = 0; w && i < n_workers; i++) {
        char dev[LABEL_MAX], cur[LABEL_MAX];
        label_copy(dev, sizeof dev, w[i].device);
        label_copy(cur, sizeof cur, w[i].state);
        int known = 0;
        for (int s = 0; s < N_STATES; s++) {
            int on = !strcmp(cur, states[s]);
            known |= on;
            sb_printf(&b, "sdw_worker_state{");
            sb_label(&b, "device", dev, 1);
            sb_label(&b, "state", states[s], 0);
            sb_printf(&b, "} %d\n", on);
        }
        if (!known) { /* a state this table doesn't list yet still shows, rather than all zeros */
            sb_printf(&b, "sdw_worker_state{");
            sb_label(&b, "device", dev, 1);
            sb_label(&b, "state", cur, 0);
            sb_printf(&b, "} 1\n");
        }
    }
    sb_head(&b, "sdw_worker_restarts_total", "counter", "Times each device's worker process was restarted.");
    for (int i = 0; w && i < n_workers; i++) {
        char dev[LABEL_MAX];
        label_copy(dev, sizeof dev, w[i].device);
        sb_printf(&b, "sdw_worker_restarts_total{");
        sb_label(&b, "device", dev, 1);
        sb_printf(&b, "} %d\n", w[i].restarts < 0 ? 0 : w[i].restarts);
    }
    sb_head(&b, "sdw_worker_jobs_served_total", "counter", "Jobs each device's worker has run to an end.");
    for (int i = 0; w && i < n_workers; i++) {
        char dev[LABEL_MAX];
        label_copy(dev, sizeof dev, w[i].device);
        sb_printf(&b, "sdw_worker_jobs_served_total{");
        sb_label(&b, "device", dev, 1);
        sb_printf(&b, "} %llu\n", (unsigned long long)w[i].jobs_served);
    }

    /* GPU memory, one series per device whose worker reported it (CPU workers have none; a worker that is
     * loading or restarting has not reported yet). Two workers on one GPU each show the device-wide figure.
     */
    int any_vram = 0;
    for (int i = 0; w && i < n_workers; i++)
        any_vram |= w[i].has_vram;
    if (any_vram) {
        sb_vram(&b, "sdw_device_vram_free_bytes",
                "Free memory of each GPU device, as its worker last reported it.", w, n_workers, 0);
        sb_vram(&b, "sdw_device_vram_total_bytes",
                "Total memory of each GPU device, as its worker reported it.", w, n_workers, 1);
    }

    sb_histogram(&b, "sdw_step_seconds", "Time per sampling step (one UNet evaluation incl. guidance).",
                 &m->step);
    sb_histogram(&b, "sdw_job_duration_seconds", "Time from a job's start on a worker to its image.",
                 &m->job);
    sb_family(&b, "sdw_http_requests_total", "HTTP requests by method, route pattern and status.", &m->http,
              "method", "route", "status");

    sb_head(&b, "sdw_uptime_seconds", "gauge", "Seconds since the supervisor started.");
    sb_printf(&b, "sdw_uptime_seconds %.3f\n", isfinite(uptime_s) ? uptime_s : 0.0);
    sb_head(&b, "sdw_build_info", "gauge", "Always 1; the version label says which build is running.");
    sb_printf(&b, "sdw_build_info{");
    sb_label(&b, "version", SDW_VERSION, 1);
    sb_printf(&b, "} 1\n");

    if (b.oom) {
        free(b.buf);
        return NULL;
    }
    if (len) *len = b.len;
    return b.buf;
}
