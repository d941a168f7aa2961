/* test_jobs.c: the job registry and queue without sockets: capacity (queued jobs only), FIFO dispatch,
 * queue positions, retry-once after a worker crash, cancel, TTL expiry, tombstones, ids, shutdown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "jobs.h"

/* A fake pool: slots that are idle or hold a job, and a log of what the registry asked. */
typedef struct {
    int n_slots;
    uint64_t slot_job[4]; /* 0 = idle */
    int refuse_submit;
    uint64_t submitted[64];
    int n_submitted;
    uint64_t cancelled[64];
    int n_cancelled;
    int events[8]; /* counts per sdw_job_event via on_event */
} fake_pool;

static int fp_idle(void *ud)
{
    fake_pool *p = ud;
    for (int i = 0; i < p->n_slots; i++)
        if (!p->slot_job[i]) return i;
    return -1;
}

static int fp_submit(void *ud, int slot, sdw_job *job)
{
    fake_pool *p = ud;
    if (p->refuse_submit) return -1;
    assert_true(slot >= 0 && slot < p->n_slots);
    assert_true(p->slot_job[slot] == 0);
    p->slot_job[slot] = job->num;
    p->submitted[p->n_submitted++] = job->num;
    return 0;
}

static void fp_cancel(void *ud, sdw_job *job)
{
    fake_pool *p = ud;
    p->cancelled[p->n_cancelled++] = job->num;
}

static void fp_event(void *ud, sdw_job *job, sdw_job_event ev)
{
    (void)job;
    fake_pool *p = ud;
    p->events[ev]++;
}

static const sdw_jobs_ops OPS = {fp_idle, fp_submit, fp_cancel, fp_event};

static sdw_jobs *make(fake_pool *p, int slots, int capacity, int retry, double ttl, int tombs)
{
    memset(p, 0, sizeof *p);
    p->n_slots = slots;
    sdw_jobs_config c = {.node_id = "node-a",
                         .capacity = capacity,
                         .ttl_s = ttl,
                         .retry_on_crash = retry,
                         .tombstones = tombs};
    sdw_jobs *J = sdw_jobs_new(&c, &OPS, p);
    assert_non_null(J);
    return J;
}

static sdw_job *submit(sdw_jobs *J, const char *prompt, double now)
{
    sdw_gen_request r;
    sdw_gen_request_init(&r);
    r.prompt = strdup(prompt);
    r.negative_prompt = strdup("");
    r.steps = 4;
    r.width = r.height = 64;
    sdw_job *job = NULL;
    sdw_api_error e;
    int rc = sdw_jobs_submit(J, &r, now, &job, &e);
    sdw_gen_request_free(&r);
    return rc == 0 ? job : NULL;
}

/* The fake worker in slot finishes its job with outcome end/code; the slot becomes idle first (as the
 * pool reports READY along with job_done). */
static void finish(sdw_jobs *J, fake_pool *p, int slot, sdw_job_end end, const char *code, double now)
{
    uint64_t num = p->slot_job[slot];
    assert_true(num != 0);
    p->slot_job[slot] = 0;
    static const uint8_t png[] = {0x89, 'P', 'N', 'G', 1, 2, 3};
    sdw_job_outcome o = {.end = end,
                         .png = end == SDW_JOB_COMPLETE ? png : NULL,
                         .png_len = sizeof png,
                         .width = 64,
                         .height = 64,
                         .t_total = 1.5,
                         .code = code,
                         .message = code ? "boom" : NULL};
    sdw_jobs_done(J, num, &o, now);
}

static void test_fifo_and_capacity(void **state)
{
    (void)state;
    fake_pool p;
    sdw_jobs *J = make(&p, 1, 2, 0, 60, 16);
    sdw_job *a = submit(J, "a", 1), *b = submit(J, "b", 2), *c = submit(J, "c", 3);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    /* a runs at once; b and c wait; capacity 2 counts only waiting jobs */
    assert_int_equal(a->status, SDW_JST_RUNNING);
    assert_int_equal(a->position, 0);
    assert_int_equal(b->position, 1);
    assert_int_equal(c->position, 2);
    assert_int_equal(sdw_jobs_queued(J), 2);
    assert_int_equal(sdw_jobs_running(J), 1);

    sdw_gen_request r;
    sdw_gen_request_init(&r);
    r.prompt = strdup("d");
    sdw_job *d = NULL;
    sdw_api_error e;
    assert_int_equal(sdw_jobs_submit(J, &r, 4, &d, &e), -1);
    assert_int_equal(e.status, 429);
    assert_string_equal(e.code, "queue_full");
    assert_non_null(r.prompt); /* a refused request keeps its strings */
    sdw_gen_request_free(&r);
    assert_true(sdw_jobs_retry_after(J) >= 1);

    finish(J, &p, 0, SDW_JOB_COMPLETE, NULL, 10);
    assert_int_equal(a->status, SDW_JST_COMPLETE);
    assert_int_equal(a->png_len, 7);
    assert_int_equal(b->status, SDW_JST_RUNNING); /* oldest first */
    assert_int_equal(c->position, 1);
    finish(J, &p, 0, SDW_JOB_COMPLETE, NULL, 20);
    assert_int_equal(c->status, SDW_JST_RUNNING);
    finish(J, &p, 0, SDW_JOB_COMPLETE, NULL, 30);
    assert_int_equal(p.n_submitted, 3);
    assert_true(p.submitted[0] == a->num && p.submitted[1] == b->num && p.submitted[2] == c->num);
    assert_int_equal(p.events[SDW_JEV_END], 3);
    /* a ran 9 s, b 10 s, c 10 s: the estimate follows */
    assert_in_range(sdw_jobs_retry_after(J), 9, 11);
    sdw_jobs_free(J);
}

static void test_parallel_slots(void **state)
{
    (void)state;
    fake_pool p;
    sdw_jobs *J = make(&p, 2, 4, 0, 60, 16);
    sdw_job *a = submit(J, "a", 1), *b = submit(J, "b", 1), *c = submit(J, "c", 1);
    assert_int_equal(a->status, SDW_JST_RUNNING);
    assert_int_equal(b->status, SDW_JST_RUNNING);
    assert_int_equal(a->slot, 0);
    assert_int_equal(b->slot, 1);
    assert_int_equal(c->status, SDW_JST_QUEUED);
    finish(J, &p, 1, SDW_JOB_COMPLETE, NULL, 5);
    assert_int_equal(c->slot, 1);
    sdw_jobs_free(J);
}

typedef struct {
    int positions[16];
    int n_queued_events;
    int started, progress, end, gone;
    int unsubscribe_on_end;
    sdw_job_sub sub;
} listener;

static void on_job(void *ud, sdw_job *job, sdw_job_event ev)
{
    listener *l = ud;
    switch (ev) {
    case SDW_JEV_QUEUED:
        l->positions[l->n_queued_events++] = job->position;
        break;
    case SDW_JEV_STARTED:
        l->started++;
        break;
    case SDW_JEV_PROGRESS:
        l->progress++;
        break;
    case SDW_JEV_END:
        l->end++;
        if (l->unsubscribe_on_end) sdw_job_unsubscribe(&l->sub);
        break;
    case SDW_JEV_GONE:
        l->gone++;
        break;
    }
}

static void test_positions_and_events(void **state)
{
    (void)state;
    fake_pool p;
    sdw_jobs *J = make(&p, 1, 8, 0, 60, 16);
    sdw_job *a = submit(J, "a", 0);
    submit(J, "b", 0);
    sdw_job *c = submit(J, "c", 0);
    listener l = {0}, la = {0};
    l.sub.fn = on_job;
    l.sub.ud = &l;
    sdw_job_subscribe(c, &l.sub);
    la.sub.fn = on_job;
    la.sub.ud = &la;
    la.unsubscribe_on_end = 1;
    sdw_job_subscribe(a, &la.sub);

    sdw_jobs_started(J, a->num, 0, 1);
    sdw_jobs_progress(J, a->num, 1, 4, 0.5, 1.5);
    sdw_jobs_progress(J, a->num, 2, 4, 1.25, 2);
    assert_int_equal(la.started, 1);
    assert_int_equal(la.progress, 2);
    assert_int_equal(a->step, 2);
    assert_true(a->last_step_s == 0.75);
    finish(J, &p, 0, SDW_JOB_COMPLETE, NULL, 3);
    assert_int_equal(la.end, 1);
    assert_null(la.sub.job); /* it unsubscribed itself inside the callback */
    /* c moved from 2 to 1 when b started */
    assert_int_equal(l.n_queued_events, 1);
    assert_int_equal(l.positions[0], 1);
    /* progress for a job that is not running is ignored */
    sdw_jobs_progress(J, a->num, 3, 4, 2, 4);
    assert_int_equal(la.progress, 2);
    sdw_jobs_free(J);
    assert_int_equal(l.gone, 1);
    assert_int_equal(la.gone, 0);
}

static void test_retry_once(void **state)
{
    (void)state;
    fake_pool p;
    sdw_jobs *J = make(&p, 1, 8, 1, 60, 16);
    sdw_job *a = submit(J, "a", 0), *b = submit(J, "b", 0);
    finish(J, &p, 0, SDW_JOB_ERROR, "worker_crashed", 1);
    /* requeued at the head, ahead of b, and dispatched again to the (respawned) worker */
    assert_int_equal(a->status, SDW_JST_RUNNING);
    assert_int_equal(a->retried, 1);
    assert_int_equal(b->status, SDW_JST_QUEUED);
    assert_int_equal(b->position, 1);
    finish(J, &p, 0, SDW_JOB_ERROR, "worker_timeout", 2);
    assert_int_equal(a->status, SDW_JST_ERROR);
    assert_string_equal(a->err_code, "worker_timeout");
    assert_int_equal(b->status, SDW_JST_RUNNING);
    /* engine errors are never retried */
    finish(J, &p, 0, SDW_JOB_ERROR, "engine_error", 3);
    assert_int_equal(b->status, SDW_JST_ERROR);
    assert_string_equal(b->err_code, "engine_error");
    assert_string_equal(b->err_message, "boom");
    sdw_jobs_free(J);

    /* with retry off a crash ends the job */
    J = make(&p, 1, 8, 0, 60, 16);
    a = submit(J, "a", 0);
    finish(J, &p, 0, SDW_JOB_ERROR, "worker_crashed", 1);
    assert_int_equal(a->status, SDW_JST_ERROR);
    assert_string_equal(a->err_code, "worker_crashed");
    sdw_jobs_free(J);

    /* retry waits in the queue when no worker is ready (the worker is restarting) */
    J = make(&p, 1, 8, 1, 60, 16);
    a = submit(J, "a", 0);
    uint64_t num = p.slot_job[0];
    sdw_job_outcome crash = {.end = SDW_JOB_ERROR, .code = "worker_crashed", .message = "signal 9"};
    sdw_jobs_done(J, num, &crash, 1); /* slot still marked busy: the worker is down */
    assert_int_equal(a->status, SDW_JST_QUEUED);
    assert_int_equal(a->position, 1);
    p.slot_job[0] = 0; /* worker back: READY */
    sdw_jobs_dispatch(J, 2);
    assert_int_equal(a->status, SDW_JST_RUNNING);
    sdw_jobs_free(J);
}

/* A job handed back because its worker died before starting it runs again, ahead of the queue, even with
 * retry_on_crash off and without using up its crash retry; the fourth hand-back fails it. */
static void test_requeue_not_started(void **state)
{
    (void)state;
    fake_pool p;
    sdw_jobs *J = make(&p, 1, 8, 0, 60, 16);
    sdw_job *a = submit(J, "a", 0), *b = submit(J, "b", 0);
    for (int i = 0; i < 3; i++) {
        finish(J, &p, 0, SDW_JOB_REQUEUE, "worker_crashed", 1 + i);
        assert_int_equal(a->status, SDW_JST_RUNNING);
        assert_int_equal(a->requeued, i + 1);
        assert_int_equal(a->retried, 0);
        assert_int_equal(b->position, 1);
    }
    finish(J, &p, 0, SDW_JOB_REQUEUE, "worker_crashed", 5);
    assert_int_equal(a->status, SDW_JST_ERROR);
    assert_string_equal(a->err_code, "worker_crashed");
    assert_int_equal(b->status, SDW_JST_RUNNING);
    finish(J, &p, 0, SDW_JOB_COMPLETE, NULL, 6);
    assert_int_equal(b->status, SDW_JST_COMPLETE);
    sdw_jobs_free(J);
}

static void test_cancel(void **state)
{
    (void)state;
    fake_pool p;
    sdw_jobs *J = make(&p, 1, 8, 1, 60, 16);
    sdw_job *a = submit(J, "a", 0), *b = submit(J, "b", 0), *c = submit(J, "c", 0);
    assert_int_equal(sdw_jobs_cancel(J, b, 1), 0);
    assert_int_equal(b->status, SDW_JST_CANCELLED);
    assert_int_equal(c->position, 1);
    assert_int_equal(sdw_jobs_queued(J), 1);
    assert_int_equal(sdw_jobs_cancel(J, b, 2), -1);

    assert_int_equal(sdw_jobs_cancel(J, a, 2), 1);
    assert_int_equal(sdw_jobs_cancel(J, a, 2), 1); /* asked once only */
    assert_int_equal(p.n_cancelled, 1);
    assert_true(p.cancelled[0] == a->num);
    assert_int_equal(a->status, SDW_JST_RUNNING);
    finish(J, &p, 0, SDW_JOB_CANCELLED, NULL, 3);
    assert_int_equal(a->status, SDW_JST_CANCELLED);
    assert_int_equal(c->status, SDW_JST_RUNNING);

    /* a crash after a cancel request is the cancel, not a retry */
    assert_int_equal(sdw_jobs_cancel(J, c, 4), 1);
    finish(J, &p, 0, SDW_JOB_ERROR, "worker_crashed", 5);
    assert_int_equal(c->status, SDW_JST_CANCELLED);
    assert_int_equal(c->retried, 0);
    sdw_jobs_free(J);
}

static void test_ttl_and_tombstones(void **state)
{
    (void)state;
    fake_pool p;
    sdw_jobs *J = make(&p, 1, 8, 0, 5, 2);
    sdw_job *a = submit(J, "a", 0);
    char ida[80];
    strcpy(ida, a->id);
    listener l = {0};
    l.sub.fn = on_job;
    l.sub.ud = &l;
    sdw_job_subscribe(a, &l.sub);
    finish(J, &p, 0, SDW_JOB_COMPLETE, NULL, 10);
    sdw_job *found;
    assert_int_equal(sdw_jobs_expire(J, 14.9), 0);
    assert_int_equal(sdw_jobs_find(J, ida, strlen(ida), &found), SDW_JOBS_FOUND);
    assert_ptr_equal(found, a);
    assert_int_equal(sdw_jobs_expire(J, 15), 1);
    assert_int_equal(l.gone, 1);
    assert_null(l.sub.job);
    assert_int_equal(sdw_jobs_find(J, ida, strlen(ida), &found), SDW_JOBS_GONE);
    assert_null(found);
    assert_int_equal(sdw_jobs_count(J), 0);

    /* the tombstone set is bounded: two more expiries push the first id out */
    char idb[80];
    for (int i = 0; i < 2; i++) {
        sdw_job *j = submit(J, "x", 20 + i);
        if (i == 0) strcpy(idb, j->id);
        finish(J, &p, 0, SDW_JOB_CANCELLED, NULL, 20 + i);
    }
    /* running jobs never expire; queued neither */
    sdw_job *run = submit(J, "r", 30);
    sdw_job *wait = submit(J, "w", 30);
    assert_int_equal(sdw_jobs_expire(J, 1000), 2);
    assert_int_equal(sdw_jobs_find(J, ida, strlen(ida), &found), SDW_JOBS_UNKNOWN);
    assert_int_equal(sdw_jobs_find(J, idb, strlen(idb), &found), SDW_JOBS_GONE);
    assert_int_equal(run->status, SDW_JST_RUNNING);
    assert_int_equal(wait->status, SDW_JST_QUEUED);
    assert_int_equal(sdw_jobs_count(J), 2);
    sdw_jobs_free(J);
}

static void test_ids(void **state)
{
    (void)state;
    fake_pool p;
    sdw_jobs *J = make(&p, 0, 8, 0, 60, 16);
    sdw_job *a = submit(J, "a", 0), *b = submit(J, "b", 0);
    assert_int_equal(strlen(a->id), strlen("node-a-") + 16);
    assert_memory_equal(a->id, "node-a-", 7);
    for (int i = 7; i < 23; i++)
        assert_non_null(strchr("0123456789abcdef", a->id[i]));
    assert_string_not_equal(a->id, b->id);
    sdw_job *f;
    assert_int_equal(sdw_jobs_find(J, a->id, strlen(a->id), &f), SDW_JOBS_FOUND);
    assert_ptr_equal(f, a);
    assert_ptr_equal(sdw_jobs_get(J, b->num), b);
    char bad[80];
    strcpy(bad, a->id);
    bad[0] = 'm'; /* another node's prefix */
    assert_int_equal(sdw_jobs_find(J, bad, strlen(bad), &f), SDW_JOBS_UNKNOWN);
    strcpy(bad, a->id);
    for (int i = 7; i < 23; i++)
        if (bad[i] >= 'a') bad[i] = (char)(bad[i] - 'a' + 'A');
    if (strcmp(bad, a->id)) assert_int_equal(sdw_jobs_find(J, bad, strlen(bad), &f), SDW_JOBS_UNKNOWN);
    assert_int_equal(sdw_jobs_find(J, "node-a-zz", 9, &f), SDW_JOBS_UNKNOWN);
    assert_int_equal(sdw_jobs_find(J, a->id, strlen(a->id) - 1, &f), SDW_JOBS_UNKNOWN);
    /* random seeds differ and are kept */
    assert_true(a->req.seed != b->req.seed);
    sdw_jobs_free(J);
}

static void test_pool_refuses(void **state)
{
    (void)state;
    fake_pool p;
    sdw_jobs *J = make(&p, 1, 8, 0, 60, 16);
    p.refuse_submit = 1;
    sdw_job *a = submit(J, "a", 0), *b = submit(J, "b", 0);
    assert_int_equal(a->status, SDW_JST_QUEUED);
    assert_int_equal(a->position, 1);
    assert_int_equal(b->position, 2);
    assert_int_equal(sdw_jobs_running(J), 0);
    p.refuse_submit = 0;
    sdw_jobs_dispatch(J, 1);
    assert_int_equal(a->status, SDW_JST_RUNNING);
    assert_int_equal(b->position, 1);
    sdw_jobs_free(J);
}

static void test_shutdown(void **state)
{
    (void)state;
    fake_pool p;
    sdw_jobs *J = make(&p, 1, 8, 1, 60, 16);
    sdw_job *a = submit(J, "a", 0), *b = submit(J, "b", 0);
    sdw_jobs_pause(J, 1);
    sdw_gen_request r;
    sdw_gen_request_init(&r);
    r.prompt = strdup("c");
    sdw_job *c;
    sdw_api_error e;
    assert_int_equal(sdw_jobs_submit(J, &r, 1, &c, &e), -1);
    assert_int_equal(e.status, 503);
    assert_string_equal(e.code, "shutting_down");
    sdw_gen_request_free(&r);
    /* drain: queued jobs end now, the running one may finish; a crash is not retried while draining */
    assert_int_equal(sdw_jobs_end_all(J, 0, "shutting_down", "bye", 2), 1);
    assert_int_equal(b->status, SDW_JST_ERROR);
    assert_string_equal(b->err_code, "shutting_down");
    assert_int_equal(a->status, SDW_JST_RUNNING);
    finish(J, &p, 0, SDW_JOB_ERROR, "worker_crashed", 3);
    assert_int_equal(a->status, SDW_JST_ERROR);
    assert_int_equal(p.n_submitted, 1);

    /* grace over: running jobs end too and the worker is told to stop; its late answer is ignored */
    sdw_jobs_pause(J, 0);
    sdw_job *d = submit(J, "d", 4);
    sdw_jobs_pause(J, 1);
    assert_int_equal(sdw_jobs_end_all(J, 1, "shutting_down", "bye", 5), 1);
    assert_int_equal(d->status, SDW_JST_ERROR);
    assert_int_equal(p.n_cancelled, 1);
    finish(J, &p, 0, SDW_JOB_CANCELLED, NULL, 6);
    assert_int_equal(d->status, SDW_JST_ERROR);
    assert_int_equal(sdw_jobs_running(J), 0);
    sdw_jobs_free(J);
}

static void test_done_without_image(void **state)
{
    (void)state;
    fake_pool p;
    sdw_jobs *J = make(&p, 1, 8, 0, 60, 16);
    sdw_job *a = submit(J, "a", 0);
    sdw_job_outcome o = {.end = SDW_JOB_COMPLETE};
    p.slot_job[0] = 0;
    sdw_jobs_done(J, a->num, &o, 1);
    assert_int_equal(a->status, SDW_JST_ERROR);
    assert_string_equal(a->err_code, "engine_error");
    /* unknown job numbers are ignored */
    sdw_jobs_done(J, 12345, &o, 2);
    sdw_jobs_started(J, 12345, 0, 2);
    sdw_jobs_free(J);
}

/* A batch: the registry keeps each image as it arrives (job_image, then job_done with the last), in order;
 * a count other than the job's n, or an error after some images, ends the job without images. */
static void test_batch_images(void **state)
{
    (void)state;
    fake_pool p;
    sdw_jobs *J = make(&p, 1, 8, 1, 60, 16);
    sdw_gen_request r;
    sdw_gen_request_init(&r);
    r.prompt = strdup("batch");
    r.n = 3;
    r.seed = 40;
    r.has_seed = 1;
    sdw_job *job = NULL;
    sdw_api_error e;
    assert_int_equal(sdw_jobs_submit(J, &r, 1, &job, &e), 0);
    sdw_gen_request_free(&r);
    static const uint8_t png[3][6] = {
        {0x89, 'P', 'N', 'G', 0, 0}, {0x89, 'P', 'N', 'G', 1, 1}, {0x89, 'P', 'N', 'G', 2, 2}};
    sdw_job_outcome o = {.end = SDW_JOB_COMPLETE, .png_len = 6, .width = 64, .height = 64, .count = 3};
    for (int i = 0; i < 2; i++) {
        o.index = i;
        o.png = png[i];
        o.seed = 40 + (uint64_t)i;
        sdw_jobs_image(J, job->num, &o, 2);
        assert_int_equal(job->status, SDW_JST_RUNNING);
        assert_int_equal(job->n_images, i + 1);
    }
    o.index = 2;
    o.png = png[2];
    o.seed = 42;
    p.slot_job[0] = 0;
    sdw_jobs_done(J, job->num, &o, 3);
    assert_int_equal(job->status, SDW_JST_COMPLETE);
    assert_int_equal(job->n_images, 3);
    assert_true(job->images_bytes == 18);
    for (int i = 0; i < 3; i++) {
        assert_memory_equal(job->images[i].png, png[i], 6);
        assert_true(job->images[i].seed == 40u + (unsigned)i);
    }
    assert_ptr_equal(job->png, job->images[0].png);

    /* a worker that says count 2 for a job of 3 */
    sdw_gen_request_init(&r);
    r.prompt = strdup("short");
    r.n = 3;
    assert_int_equal(sdw_jobs_submit(J, &r, 4, &job, &e), 0);
    sdw_gen_request_free(&r);
    o.index = 0;
    o.count = 2;
    sdw_jobs_image(J, job->num, &o, 5);
    assert_int_equal(job->status, SDW_JST_ERROR);
    assert_string_equal(job->err_code, "engine_error");
    assert_null(job->images);
    p.slot_job[0] = 0;

    /* an error after two of three images keeps none */
    sdw_gen_request_init(&r);
    r.prompt = strdup("partial");
    r.n = 3;
    assert_int_equal(sdw_jobs_submit(J, &r, 6, &job, &e), 0);
    sdw_gen_request_free(&r);
    o.count = 3;
    for (int i = 0; i < 2; i++) {
        o.index = i;
        sdw_jobs_image(J, job->num, &o, 7);
    }
    assert_int_equal(job->n_images, 2);
    finish(J, &p, 0, SDW_JOB_ERROR, "engine_error", 8);
    assert_int_equal(job->status, SDW_JST_ERROR);
    assert_null(job->images);
    assert_int_equal(job->n_images, 0);
    assert_null(job->png);

    /* a crash after one image: the retry starts the batch over */
    sdw_gen_request_init(&r);
    r.prompt = strdup("crash");
    r.n = 2;
    assert_int_equal(sdw_jobs_submit(J, &r, 9, &job, &e), 0);
    sdw_gen_request_free(&r);
    o.count = 2;
    o.index = 0;
    sdw_jobs_image(J, job->num, &o, 10);
    assert_int_equal(job->n_images, 1);
    finish(J, &p, 0, SDW_JOB_ERROR, "worker_crashed", 11);
    assert_int_equal(job->status, SDW_JST_RUNNING); /* requeued and dispatched again */
    assert_int_equal(job->n_images, 0);
    sdw_jobs_free(J);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_images),
        cmocka_unit_test(test_fifo_and_capacity),
        cmocka_unit_test(test_parallel_slots),
        cmocka_unit_test(test_positions_and_events),
        cmocka_unit_test(test_retry_once),
        cmocka_unit_test(test_requeue_not_started),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_ttl_and_tombstones),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_pool_refuses),
        cmocka_unit_test(test_shutdown),
        cmocka_unit_test(test_done_without_image),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
