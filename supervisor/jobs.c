/* jobs.c: job registry, FIFO queue, dispatch, retry-once after a worker crash, TTL expiry and the
 * bounded tombstone set of expired ids (see jobs.h). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "jobs.h"

struct sdw_jobs {
    sdw_jobs_config cfg;
    char node_id[40];
    sdw_jobs_ops ops;
    void *ud;

    sdw_job **buckets; /* hash by num, chained */
    size_t n_buckets;
    int n_jobs;

    sdw_job *q_head, *q_tail; /* queued, oldest first */
    int n_queued;
    int n_running;
    sdw_job *e_head, *e_tail; /* ended, in end order (constant TTL keeps it sorted by expiry) */

    uint64_t *tomb; /* ring of expired nums */
    int tomb_cap, tomb_len, tomb_next;

    int paused;
    int dispatching, dispatch_again; /* dispatch may be re-entered from a pool callback */
    double avg_duration_s;           /* running average of completed job durations; 0 = none yet */
};

static uint64_t random_u64(void)
{
    uint64_t x = 0;
    size_t got = 0;
    while (got < sizeof x) {
        ssize_t n = getrandom((char *)&x + got, sizeof x - got, 0);
        if (n > 0)
            got += (size_t)n;
        else if (errno != EINTR)
            break;
    }
    if (got < sizeof x) {
        /* getrandom is never unavailable on the kernels we run on; keep ids unique anyway */
        static uint64_t fallback = 0x9E3779B97F4A7C15ull;
        fallback = fallback * 6364136223846793005ull + 1442695040888963407ull;
        x ^= fallback;
    }
    return x;
}

const char *sdw_job_status_name(sdw_job_status st)
{
    switch (st) {
    case SDW_JST_QUEUED:
        return "queued";
    case SDW_JST_RUNNING:
        return "running";
    case SDW_JST_COMPLETE:
        return "complete";
    case SDW_JST_ERROR:
        return "error";
    case SDW_JST_CANCELLED:
        return "cancelled";
    }
    return "?";
}

int sdw_job_ended(const sdw_job *job)
{
    return job->status == SDW_JST_COMPLETE || job->status == SDW_JST_ERROR ||
           job->status == SDW_JST_CANCELLED;
}

/* ---- hash ---- */

static size_t bucket_of(const sdw_jobs *J, uint64_t num)
{
    uint64_t h = num * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (J->n_buckets - 1);
}

static int hash_grow(sdw_jobs *J)
{
    size_t nb = J->n_buckets * 2;
    sdw_job **b = calloc(nb, sizeof *b);
    if (!b) return -1;
    sdw_job **old = J->buckets;
    size_t on = J->n_buckets;
    J->buckets = b;
    J->n_buckets = nb;
    for (size_t i = 0; i < on; i++)
        for (sdw_job *j = old[i], *next; j; j = next) {
            next = j->h_next;
            size_t k = bucket_of(J, j->num);
            j->h_next = b[k];
            b[k] = j;
        }
    free(old);
    return 0;
}

sdw_job *sdw_jobs_get(sdw_jobs *J, uint64_t num)
{
    for (sdw_job *j = J->buckets[bucket_of(J, num)]; j; j = j->h_next)
        if (j->num == num) return j;
    return NULL;
}

static void hash_remove(sdw_jobs *J, sdw_job *job)
{
    for (sdw_job **p = &J->buckets[bucket_of(J, job->num)]; *p; p = &(*p)->h_next)
        if (*p == job) {
            *p = job->h_next;
            J->n_jobs--;
            return;
        }
}

static int tomb_has(const sdw_jobs *J, uint64_t num)
{
    for (int i = 0; i < J->tomb_len; i++)
        if (J->tomb[i] == num) return 1;
    return 0;
}

static void tomb_add(sdw_jobs *J, uint64_t num)
{
    if (J->tomb_cap <= 0) return;
    J->tomb[J->tomb_next] = num;
    J->tomb_next = (J->tomb_next + 1) % J->tomb_cap;
    if (J->tomb_len < J->tomb_cap) J->tomb_len++;
}

/* ---- lists: a job is on at most one of the queue and the ended list ---- */

static void list_push_tail(sdw_job **head, sdw_job **tail, sdw_job *j)
{
    j->l_next = NULL;
    j->l_prev = *tail;
    if (*tail)
        (*tail)->l_next = j;
    else
        *head = j;
    *tail = j;
}

static void list_push_head(sdw_job **head, sdw_job **tail, sdw_job *j)
{
    j->l_prev = NULL;
    j->l_next = *head;
    if (*head)
        (*head)->l_prev = j;
    else
        *tail = j;
    *head = j;
}

static void list_remove(sdw_job **head, sdw_job **tail, sdw_job *j)
{
    if (j->l_prev)
        j->l_prev->l_next = j->l_next;
    else
        *head = j->l_next;
    if (j->l_next)
        j->l_next->l_prev = j->l_prev;
    else
        *tail = j->l_prev;
    j->l_prev = j->l_next = NULL;
}

/* ---- events ---- */

void sdw_job_subscribe(sdw_job *job, sdw_job_sub *sub)
{
    sub->job = job;
    sub->prev = NULL;
    sub->next = job->subs;
    if (job->subs) job->subs->prev = sub;
    job->subs = sub;
}

void sdw_job_unsubscribe(sdw_job_sub *sub)
{
    sdw_job *job = sub->job;
    if (!job) return;
    if (sub->prev)
        sub->prev->next = sub->next;
    else
        job->subs = sub->next;
    if (sub->next) sub->next->prev = sub->prev;
    sub->prev = sub->next = NULL;
    sub->job = NULL;
}

static void emit(sdw_jobs *J, sdw_job *job, sdw_job_event ev)
{
    if (J->ops.on_event) J->ops.on_event(J->ud, job, ev);
    /* a subscriber may unsubscribe itself while it is called; never another one */
    for (sdw_job_sub *s = job->subs, *next; s; s = next) {
        next = s->next;
        s->fn(s->ud, job, ev);
    }
    if (ev == SDW_JEV_GONE)
        while (job->subs)
            sdw_job_unsubscribe(job->subs);
}

/* Renumbers the queue; every job whose place changed hears QUEUED. */
static void renumber(sdw_jobs *J)
{
    int pos = 1;
    for (sdw_job *j = J->q_head, *next; j; j = next, pos++) {
        next = j->l_next;
        if (j->position != pos) {
            j->position = pos;
            emit(J, j, SDW_JEV_QUEUED);
        }
    }
}

/* ---- lifecycle ---- */

sdw_jobs *sdw_jobs_new(const sdw_jobs_config *cfg, const sdw_jobs_ops *ops, void *ud)
{
    sdw_jobs *J = calloc(1, sizeof *J);
    if (!J) return NULL;
    J->cfg = *cfg;
    snprintf(J->node_id, sizeof J->node_id, "%s", cfg->node_id ? cfg->node_id : "");
    J->cfg.node_id = J->node_id;
    J->ops = *ops;
    J->ud = ud;
    J->n_buckets = 64;
    J->buckets = calloc(J->n_buckets, sizeof *J->buckets);
    J->tomb_cap = cfg->tombstones > 0 ? cfg->tombstones : 0;
    J->tomb = J->tomb_cap ? calloc((size_t)J->tomb_cap, sizeof *J->tomb) : NULL;
    if (!J->buckets || (J->tomb_cap && !J->tomb)) {
        free(J->buckets);
        free(J->tomb);
        free(J);
        return NULL;
    }
    return J;
}

static void drop_preview(sdw_job *job)
{
    free(job->preview);
    job->preview = NULL;
    job->preview_len = 0;
    job->preview_step = 0;
}

/* The images kept so far go (png is images[0]'s). */
static void job_drop_images(sdw_job *job)
{
    for (int i = 0; job->images && i < job->n_images; i++)
        free(job->images[i].png);
    free(job->images);
    job->images = NULL;
    job->n_images = 0;
    job->images_bytes = 0;
    job->png = NULL;
    job->png_len = 0;
}

static void job_free(sdw_job *job)
{
    job_drop_images(job);
    sdw_gen_request_free(&job->req);
    drop_preview(job);
    sdw_rcbuf_release(job->terminal_sse);
    free(job);
}

void sdw_jobs_free(sdw_jobs *J)
{
    if (!J) return;
    for (size_t i = 0; i < J->n_buckets; i++)
        for (sdw_job *j = J->buckets[i], *next; j; j = next) {
            next = j->h_next;
            emit(J, j, SDW_JEV_GONE);
            job_free(j);
        }
    free(J->buckets);
    free(J->tomb);
    free(J);
}

int sdw_jobs_submit(sdw_jobs *J, sdw_gen_request *req, double now, sdw_job **out, sdw_api_error *e)
{
    if (J->paused)
        return sdw_api_error_set(e, 503, "shutting_down", NULL,
                                 "the service is shutting down and takes no new jobs");
    if (J->n_queued >= J->cfg.capacity)
        return sdw_api_error_set(e, 429, "queue_full", NULL,
                                 "the queue is full (%d jobs waiting); retry later", J->n_queued);
    if ((size_t)J->n_jobs >= J->n_buckets && hash_grow(J) != 0)
        return sdw_api_error_set(e, 500, "internal", NULL, "out of memory");
    sdw_job *job = calloc(1, sizeof *job);
    if (!job) return sdw_api_error_set(e, 500, "internal", NULL, "out of memory");
    do
        job->num = random_u64();
    while (job->num == 0 || sdw_jobs_get(J, job->num) || tomb_has(J, job->num));
    if (J->node_id[0])
        snprintf(job->id, sizeof job->id, "%s-%016" PRIx64, J->node_id, job->num);
    else
        snprintf(job->id, sizeof job->id, "%016" PRIx64, job->num);

    job->req = *req;
    sdw_gen_request_init(req);
    if (!job->req.has_seed) {
        job->req.seed = random_u64() >> 32; /* 32 bits, as A1111 draws them: exact in any JSON reader */
        job->req.has_seed = 1;
    }
    job->status = SDW_JST_QUEUED;
    job->slot = -1;
    job->total = job->req.steps;
    job->t_created = now;

    size_t k = bucket_of(J, job->num);
    job->h_next = J->buckets[k];
    J->buckets[k] = job;
    J->n_jobs++;
    list_push_tail(&J->q_head, &J->q_tail, job);
    J->n_queued++;
    job->position = J->n_queued;
    emit(J, job, SDW_JEV_QUEUED);
    *out = job;
    sdw_jobs_dispatch(J, now);
    return 0;
}

static int parse_hex16(const char *s, uint64_t *out)
{
    uint64_t x = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        x = x << 4 | (uint64_t)d;
    }
    *out = x;
    return 0;
}

sdw_jobs_lookup sdw_jobs_find(sdw_jobs *J, const char *id, size_t len, sdw_job **out)
{
    size_t nl = strlen(J->node_id);
    size_t want = nl ? nl + 1 + 16 : 16;
    uint64_t num;
    *out = NULL;
    if (len != want || (nl && (memcmp(id, J->node_id, nl) || id[nl] != '-')) ||
        parse_hex16(id + len - 16, &num))
        return SDW_JOBS_UNKNOWN;
    sdw_job *j = sdw_jobs_get(J, num);
    if (j) {
        *out = j;
        return SDW_JOBS_FOUND;
    }
    return tomb_has(J, num) ? SDW_JOBS_GONE : SDW_JOBS_UNKNOWN;
}

/* Moves job to its terminal state; it must be off the queue already. */
static void end_job(sdw_jobs *J, sdw_job *job, sdw_job_status st, const char *code, const char *message,
                    double now)
{
    if (job->status == SDW_JST_RUNNING) J->n_running--;
    drop_preview(job); /* the final image says more; a running job's preview is at most ~200 kB */
    if (st != SDW_JST_COMPLETE) job_drop_images(job); /* part of a batch is no result */
    job->status = st;
    job->slot = -1;
    job->position = 0;
    job->t_ended = now;
    if (st == SDW_JST_ERROR) {
        snprintf(job->err_code, sizeof job->err_code, "%s", code ? code : "error");
        snprintf(job->err_message, sizeof job->err_message, "%s", message ? message : "");
    }
    if (st == SDW_JST_COMPLETE) {
        double d = now - (job->t_dispatched > 0 ? job->t_dispatched : job->t_created);
        J->avg_duration_s = J->avg_duration_s > 0 ? 0.7 * J->avg_duration_s + 0.3 * d : d;
    }
    list_push_tail(&J->e_head, &J->e_tail, job);
    emit(J, job, SDW_JEV_END);
}

void sdw_jobs_dispatch(sdw_jobs *J, double now)
{
    if (J->dispatching) {
        J->dispatch_again = 1;
        return;
    }
    J->dispatching = 1;
    int moved = 0;
    do {
        J->dispatch_again = 0;
        while (!J->paused && J->q_head) {
            int slot = J->ops.idle_slot(J->ud);
            if (slot < 0) break;
            sdw_job *job = J->q_head;
            list_remove(&J->q_head, &J->q_tail, job);
            J->n_queued--;
            job->status = SDW_JST_RUNNING;
            job->slot = slot;
            job->t_dispatched = now;
            J->n_running++;
            if (J->ops.submit(J->ud, slot, job) != 0) {
                /* the pool refused (e.g. the worker died between idle_slot and submit): keep the job first
                 * in line and wait for the next READY instead of spinning on the same slot */
                if (job->status == SDW_JST_RUNNING) {
                    J->n_running--;
                    job->status = SDW_JST_QUEUED;
                    job->slot = -1;
                    job->t_dispatched = 0;
                    list_push_head(&J->q_head, &J->q_tail, job);
                    J->n_queued++;
                }
                break;
            }
            job->position = 0;
            moved = 1;
        }
    } while (J->dispatch_again && !J->paused && J->q_head && J->ops.idle_slot(J->ud) >= 0);
    J->dispatching = 0;
    if (moved) renumber(J);
}

int sdw_jobs_cancel(sdw_jobs *J, sdw_job *job, double now)
{
    if (job->status == SDW_JST_QUEUED) {
        list_remove(&J->q_head, &J->q_tail, job);
        J->n_queued--;
        end_job(J, job, SDW_JST_CANCELLED, NULL, NULL, now);
        renumber(J);
        return 0;
    }
    if (job->status == SDW_JST_RUNNING) {
        if (!job->cancel_requested) {
            job->cancel_requested = 1;
            J->ops.cancel(J->ud, job);
        }
        return 1;
    }
    return -1;
}

void sdw_jobs_started(sdw_jobs *J, uint64_t num, int slot, double now)
{
    sdw_job *job = sdw_jobs_get(J, num);
    if (!job || job->status != SDW_JST_RUNNING) return;
    job->slot = slot;
    job->t_started = now;
    job->step = 0;
    job->last_elapsed = 0;
    emit(J, job, SDW_JEV_STARTED);
}

void sdw_jobs_progress(sdw_jobs *J, uint64_t num, int step, int total, double elapsed_s, double now)
{
    (void)now;
    sdw_job *job = sdw_jobs_get(J, num);
    if (!job || job->status != SDW_JST_RUNNING) return;
    job->last_step_s = elapsed_s - job->last_elapsed;
    if (job->last_step_s < 0) job->last_step_s = 0;
    job->last_elapsed = elapsed_s;
    job->step = step;
    job->total = total;
    emit(J, job, SDW_JEV_PROGRESS);
}

void sdw_jobs_preview(sdw_jobs *J, uint64_t num, int step, const uint8_t *png, size_t len)
{
    sdw_job *job = sdw_jobs_get(J, num);
    if (!job || job->status != SDW_JST_RUNNING || !len) return;
    uint8_t *b = malloc(len);
    drop_preview(job);
    if (!b) return;
    memcpy(b, png, len);
    job->preview = b;
    job->preview_len = len;
    job->preview_step = step;
}

/* The worker, not the job, went wrong: retry_on_crash may run the job once more. device_failed: the worker's
 * GPU failed beyond recovery (a sticky CUDA error) and the worker restarts. */
static int crash_code(const char *code)
{
    return code && (!strcmp(code, "worker_crashed") || !strcmp(code, "worker_timeout") ||
                    !strcmp(code, "device_failed"));
}

/* A running job goes back to the head of the queue, as if never dispatched. */
static void requeue_head(sdw_jobs *J, sdw_job *job)
{
    job->status = SDW_JST_QUEUED;
    job->slot = -1;
    job->step = 0;
    drop_preview(job);
    job_drop_images(job); /* the rerun makes them again */
    job->t_dispatched = job->t_started = 0;
    J->n_running--;
    list_push_head(&J->q_head, &J->q_tail, job);
    J->n_queued++;
    job->position = 0; /* renumber announces the new place */
    renumber(J);
}

/* Keeps image o->index of the job's batch; 0, or -1 when the job ended as an error instead. */
static int job_keep_image(sdw_jobs *J, sdw_job *job, const sdw_job_outcome *o, double now)
{
    const int n = job->req.n > 1 ? job->req.n : 1;
    const int count = o->count > 0 ? o->count : 1, index = o->index;
    char msg[160];
    if (!o->png || !o->png_len) {
        end_job(J, job, SDW_JST_ERROR, "engine_error", "the worker reported success without an image", now);
        return -1;
    }
    if (count != n || index != job->n_images) {
        snprintf(msg, sizeof msg, "the worker sent image %d of %d for a job of %d image(s)", index, count, n);
        end_job(J, job, SDW_JST_ERROR, "engine_error", msg, now);
        return -1;
    }
    if (!job->images) job->images = calloc((size_t)n, sizeof *job->images);
    uint8_t *copy = job->images ? malloc(o->png_len) : NULL;
    if (!copy) {
        end_job(J, job, SDW_JST_ERROR, "internal", "out of memory keeping the image", now);
        return -1;
    }
    memcpy(copy, o->png, o->png_len);
    job->images[index] = (sdw_job_image){copy, o->png_len, o->seed};
    job->n_images++;
    job->images_bytes += o->png_len;
    if (index == 0) {
        job->png = copy;
        job->png_len = o->png_len;
    }
    return 0;
}

void sdw_jobs_image(sdw_jobs *J, uint64_t num, const sdw_job_outcome *o, double now)
{
    sdw_job *job = sdw_jobs_get(J, num);
    if (!job || job->status != SDW_JST_RUNNING) return;
    if (job_keep_image(J, job, o, now)) sdw_jobs_dispatch(J, now);
}

void sdw_jobs_done(sdw_jobs *J, uint64_t num, const sdw_job_outcome *o, double now)
{
    sdw_job *job = sdw_jobs_get(J, num);
    if (!job || job->status != SDW_JST_RUNNING) return;
    job->w_encode = o->t_encode;
    job->w_sample = o->t_sample;
    job->w_decode = o->t_decode;
    job->w_total = o->t_total;
    switch (o->end) {
    case SDW_JOB_COMPLETE:
        if (job_keep_image(J, job, o, now)) break;
        if (job->n_images != (job->req.n > 1 ? job->req.n : 1)) {
            end_job(J, job, SDW_JST_ERROR, "engine_error", "the worker ended the batch early", now);
            break;
        }
        job->out_width = o->width;
        job->out_precision = o->precision;
        job->out_height = o->height;
        job->step = job->total;
        end_job(J, job, SDW_JST_COMPLETE, NULL, NULL, now);
        break;
    case SDW_JOB_CANCELLED:
        end_job(J, job, SDW_JST_CANCELLED, NULL, NULL, now);
        break;
    case SDW_JOB_REQUEUE:
        /* the worker went away before the job began; a job that keeps doing that (three times) fails */
        if (!job->cancel_requested && !J->paused && job->requeued < 3) {
            job->requeued++;
            requeue_head(J, job);
            break;
        }
        /* fall through */
    case SDW_JOB_ERROR:
    default:
        if (job->cancel_requested) {
            /* the client asked it to stop; whatever killed the worker, it did stop */
            end_job(J, job, SDW_JST_CANCELLED, NULL, NULL, now);
        } else if (crash_code(o->code) && J->cfg.retry_on_crash && !job->retried && !J->paused) {
            job->retried = 1;
            requeue_head(J, job);
        } else {
            end_job(J, job, SDW_JST_ERROR, o->code ? o->code : "engine_error", o->message, now);
        }
        break;
    }
    sdw_jobs_dispatch(J, now);
}

int sdw_jobs_expire(sdw_jobs *J, double now)
{
    int n = 0;
    while (J->e_head && J->e_head->t_ended + J->cfg.ttl_s <= now) {
        sdw_job *job = J->e_head;
        list_remove(&J->e_head, &J->e_tail, job);
        hash_remove(J, job);
        tomb_add(J, job->num);
        emit(J, job, SDW_JEV_GONE);
        job_free(job);
        n++;
    }
    return n;
}

void sdw_jobs_pause(sdw_jobs *J, int paused)
{
    J->paused = paused;
}

int sdw_jobs_end_all(sdw_jobs *J, int include_running, const char *code, const char *message, double now)
{
    int n = 0;
    while (J->q_head) {
        sdw_job *job = J->q_head;
        list_remove(&J->q_head, &J->q_tail, job);
        J->n_queued--;
        end_job(J, job, SDW_JST_ERROR, code, message, now);
        n++;
    }
    if (include_running) {
        for (size_t i = 0; i < J->n_buckets; i++)
            for (sdw_job *j = J->buckets[i]; j; j = j->h_next)
                if (j->status == SDW_JST_RUNNING) {
                    /* end first: a pool that answers the cancel at once then finds the job over */
                    end_job(J, j, SDW_JST_ERROR, code, message, now);
                    J->ops.cancel(J->ud, j);
                    n++;
                }
    }
    return n;
}

int sdw_jobs_queued(const sdw_jobs *J)
{
    return J->n_queued;
}

int sdw_jobs_running(const sdw_jobs *J)
{
    return J->n_running;
}

int sdw_jobs_count(const sdw_jobs *J)
{
    return J->n_jobs;
}

int sdw_jobs_retry_after(const sdw_jobs *J)
{
    double avg = J->avg_duration_s > 0 ? J->avg_duration_s : 10.0;
    double s = ceil(avg / (J->n_running > 0 ? J->n_running : 1));
    return s < 1 ? 1 : s > 3600 ? 3600 : (int)s;
}
