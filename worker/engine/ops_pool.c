/* ops_pool.c: the fork-join thread pool of the engine's own loops (attention heads, Winograd transforms)
 * and the thread setting shared with OpenBLAS. */
#include "ops.h"
#include "ops_internal.h"

#include <cblas.h>
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------------------- */
/* A tiny fork-join pool for our own loops (attention heads, Winograd transforms): OpenBLAS threads only
 * its GEMMs. At most SDE_PAR_MAX threads including the caller; per-thread scratch is sized for that many,
 * so scratch sizes never depend on the thread setting. Work items are claimed from a shared counter; each
 * item's result is computed exactly as in a serial run, so results do not depend on the thread count. */

static struct {
    pthread_mutex_t mu, call_mu;
    pthread_cond_t work, done;
    int nthreads; /* 0 until configured */
    int nhelpers; /* helper threads started */
    unsigned long gen;
    par_fn fn;
    void *ctx;
    int n, next, busy;
} pool = {PTHREAD_MUTEX_INITIALIZER,
          PTHREAD_MUTEX_INITIALIZER,
          PTHREAD_COND_INITIALIZER,
          PTHREAD_COND_INITIALIZER,
          0,
          0,
          0,
          NULL,
          NULL,
          0,
          0,
          0};

/* A helper joins a job only while items are left, and the caller waits only for helpers that joined: a
 * helper the scheduler does not run in time (a busy machine) costs nothing, the caller does its share. */
static void *pool_helper(void *arg)
{
    const int tid = (int)(intptr_t)arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (pool.gen == seen)
            pthread_cond_wait(&pool.work, &pool.mu);
        seen = pool.gen;
        if (tid >= pool.nthreads || pool.next >= pool.n) continue;
        pool.busy++;
        while (pool.next < pool.n) {
            int i = pool.next++;
            par_fn fn = pool.fn;
            void *ctx = pool.ctx;
            pthread_mutex_unlock(&pool.mu);
            fn(ctx, i, tid);
            pthread_mutex_lock(&pool.mu);
        }
        if (--pool.busy == 0) pthread_cond_signal(&pool.done);
    }
    return NULL;
}

static int blas_split;
static int pool_configure(int n);

int sde_par_blas_split(void)
{
    if (!pool.nthreads) { /* default: the CPUs there are */
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        pool_configure(cpus > 0 ? (int)cpus : 1);
    }
    return blas_split;
}

/* Threads to use for n (<= SDE_PAR_MAX); starts helpers the first time. Returns 1 if none can be had. */
static int pool_configure(int n)
{
    /* Up to SDE_PAR_MAX threads this pool also spreads the GEMMs (ops_gemm.c) over single-threaded OpenBLAS
     * calls, so no BLAS thread spins beside our loops; with more, OpenBLAS threads its GEMMs itself. */
    blas_split = n <= SDE_PAR_MAX;
    openblas_set_num_threads(blas_split ? 1 : n);
    if (n > SDE_PAR_MAX) n = SDE_PAR_MAX;
    if (n < 1) n = 1;
    pthread_mutex_lock(&pool.mu);
    while (pool.nhelpers < n - 1) {
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, 256 * 1024);
        int rc = pthread_create(&t, &at, pool_helper, (void *)(intptr_t)(pool.nhelpers + 1));
        pthread_attr_destroy(&at);
        if (rc) break;
        pool.nhelpers++;
    }
    pool.nthreads = pool.nhelpers + 1 < n ? pool.nhelpers + 1 : n;
    pthread_mutex_unlock(&pool.mu);
    return pool.nthreads;
}

/* Runs fn(ctx, i, thread) for i in [0, n). Serial when one thread is configured, for a single item, or
 * when another call is already running (nested or concurrent use). */
void sde_par_for(int n, par_fn fn, void *ctx)
{
    if (!pool.nthreads) sde_par_blas_split(); /* configures the default: the CPUs there are, capped */
    if (pool.nthreads < 2 || n < 2 || pthread_mutex_trylock(&pool.call_mu)) {
        for (int i = 0; i < n; i++)
            fn(ctx, i, 0);
        return;
    }
    pthread_mutex_lock(&pool.mu);
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n = n;
    pool.next = 0;
    pool.gen++;
    pthread_cond_broadcast(&pool.work);
    while (pool.next < n) {
        int i = pool.next++;
        pthread_mutex_unlock(&pool.mu);
        fn(ctx, i, 0);
        pthread_mutex_lock(&pool.mu);
    }
    while (pool.busy > 0)
        pthread_cond_wait(&pool.done, &pool.mu);
    pthread_mutex_unlock(&pool.mu);
    pthread_mutex_unlock(&pool.call_mu);
}

void sde_set_threads(int n)
{
    if (n > 0) pool_configure(n);
}
