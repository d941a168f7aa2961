/* ops_widen.c: F16/BF16 weights widened to float32 right before an op uses them, into per-thread scratch
 * reused by every later op (the weights themselves stay in the mapped checkpoint). */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "dtype_convert.h"
#include "ops.h"
#include "ops_internal.h"

/* Widening is memory-bound: chunks of 256K values on the op pool's threads. */
#define WIDEN_CHUNK ((size_t)1 << 18)

typedef struct {
    float *p;
    size_t n;
} widen_buf;

typedef struct {
    const uint16_t *src;
    sde_dtype dt;
    size_t n;
    float *out;
} widen_job;

static pthread_key_t widen_key;
static pthread_once_t widen_once = PTHREAD_ONCE_INIT;

static void widen_buf_free(void *v)
{
    widen_buf *b = v;
    if (b) sde_mem_drop(b->p);
    free(b);
}

static void widen_key_make(void)
{
    pthread_key_create(&widen_key, widen_buf_free);
}

static void widen_item(void *ctx, int item, int thread)
{
    (void)thread;
    const widen_job *j = ctx;
    const size_t o = (size_t)item * WIDEN_CHUNK, n = j->n - o < WIDEN_CHUNK ? j->n - o : WIDEN_CHUNK;
    sde_cvt_to_f32(j->dt, j->src + o, n, j->out + o);
}

const float *sde_widen(const uint16_t *src, int bf16, size_t n)
{
    pthread_once(&widen_once, widen_key_make);
    widen_buf *b = pthread_getspecific(widen_key);
    if (!b) {
        if (!(b = calloc(1, sizeof *b))) return NULL;
        pthread_setspecific(widen_key, b);
    }
    if (b->n < n) {
        sde_mem_drop(b->p); /* outgrown */
        b->n = 0;
        if (!(b->p = sde_mem_alloc(n * sizeof(float)))) return NULL;
        b->n = n;
    }
    widen_job j = {src, bf16 ? SDE_DT_BF16 : SDE_DT_F16, n, b->p};
    sde_par_for((int)((n + WIDEN_CHUNK - 1) / WIDEN_CHUNK), widen_item, &j);
    return b->p;
}
