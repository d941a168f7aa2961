/* ops_mem.c: the engine's large buffers (activations, conv scratch, widened weights), mapped 2 MB-aligned
 * and marked for transparent huge pages, and kept mapped when freed for the next buffer that fits. */
#include "ops.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Below this, malloc's pools serve better than a mapping of their own. */
#define MEM_HUGE_MIN ((size_t)2 << 20)
#define MEM_HUGE_ALIGN ((size_t)2 << 20)
/* A header before the pointer handed out: the mapping's start and length (0: from aligned_alloc). It is 64
 * bytes so the pointer stays 64-byte aligned. */
#define MEM_HDR 64

typedef struct {
    void *base;
    size_t len;
} mem_hdr;

/* Freed mappings, kept for the next allocation: the smallest that holds it, cut to size, the rest kept. A
 * page a process touches for the first time costs a fault and a zeroing, and under a hypervisor that takes
 * back the guest's free pages (virtio-balloon free page reporting) far more: 386 MB of UNet activations
 * took 0.9-2.5 s to fault in cold on a Firecracker guest, 17-20 ms warm, and freed pages went cold within
 * 10 s. The engine frees the UNet's activations before the VAE decode and the VAE's buffers after it, so
 * without the cache every job of a worker faulted its ~1 GB of working memory in again, cold once the
 * worker had sat idle. The VAE's buffers are cut from the UNet's cached activations, whose pieces join
 * again when freed, so a job's two phases share their pages as they did through the kernel before. Kept:
 * at most MEM_CACHE_MAX bytes (beyond it a freed mapping is unmapped). Reused memory is not zeroed:
 * sde_mem_alloc never promised zeroes (SDW_MEM_POISON=1 fills reused buffers with NaN bytes, so a test run
 * can show that nothing reads memory it did not write). */
#define MEM_CACHE_SLOTS 32
#define MEM_CUT_MIN ((size_t)32 << 20)
#define MEM_CACHE_MAX ((size_t)3 << 30)
static struct {
    char *base;
    size_t len;
} mem_cache[MEM_CACHE_SLOTS];
static int mem_ncache;
static size_t mem_cached;
static pthread_mutex_t mem_mu = PTHREAD_MUTEX_INITIALIZER;

/* Private mappings: not in ASan builds, which keep malloc, whose redzones catch overruns a mapping would
 * not. */
#if !defined(__SANITIZE_ADDRESS__) && defined(MADV_HUGEPAGE)
#define MEM_MAPPED 1
#endif

#ifdef MEM_MAPPED
/* A cached mapping for len bytes (a multiple of MEM_HUGE_ALIGN): the smallest that holds it, cut to len, the
 * rest staying cached (2 MB-aligned, so huge pages survive the cut); NULL when none holds it. *got = len.
 * Below MEM_CUT_MIN only a mapping of at most twice len is taken: the text encoder's and the GEMM's small
 * buffers, asked for before the first job reserves its activations, must not cut the activations the load
 * faulted in for that job. */
static char *cache_take(size_t len, size_t *got)
{
    pthread_mutex_lock(&mem_mu);
    int best = -1;
    for (int i = 0; i < mem_ncache; i++)
        if (mem_cache[i].len >= len && (len >= MEM_CUT_MIN || mem_cache[i].len / 2 <= len) &&
            (best < 0 || mem_cache[i].len < mem_cache[best].len))
            best = i;
    char *m = NULL;
    if (best >= 0) {
        m = mem_cache[best].base;
        if (mem_cache[best].len > len) { /* the tail stays, in the same slot */
            mem_cache[best].base += len;
            mem_cache[best].len -= len;
        } else {
            mem_cache[best] = mem_cache[--mem_ncache];
        }
        mem_cached -= len;
        *got = len;
    }
    pthread_mutex_unlock(&mem_mu);
    if (m) {
        static int poison = -1;
        if (poison < 0) {
            const char *e = getenv("SDW_MEM_POISON");
            poison = e && !strcmp(e, "1");
        }
        if (poison) memset(m, 0xff, *got);
    }
    return m;
}
#endif

/* Keeps a freed mapping for reuse, joined to the cached ones it touches (the pieces cache_take cut from
 * one mapping come back together: the UNet's activations, lent piecewise to the VAE's buffers, are whole
 * again for the next job). 1 when it took the mapping (kept, or unmapped here with its neighbours when the
 * table is full), 0 over MEM_CACHE_MAX (the caller unmaps it). */
static int cache_put(char *base, size_t len)
{
    pthread_mutex_lock(&mem_mu);
    int ok = mem_cached + len <= MEM_CACHE_MAX;
    if (ok) {
        mem_cached += len;
        for (int i = 0; i < mem_ncache;) { /* absorb every cached neighbour, then file the whole */
            if (mem_cache[i].base + mem_cache[i].len == base || base + len == mem_cache[i].base) {
                if (mem_cache[i].base < base) base = mem_cache[i].base;
                len += mem_cache[i].len;
                mem_cache[i] = mem_cache[--mem_ncache];
                i = 0;
            } else {
                i++;
            }
        }
        if (mem_ncache < MEM_CACHE_SLOTS) {
            mem_cache[mem_ncache].base = base;
            mem_cache[mem_ncache++].len = len;
        } else { /* no slot: the whole (neighbours included, out of the table now) is unmapped here */
            mem_cached -= len;
            munmap(base, len);
        }
    }
    pthread_mutex_unlock(&mem_mu);
    return ok;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

void sde_mem_prefault(size_t bytes)
{
    char *p = sde_mem_alloc(bytes);
    if (!p) return;
    const mem_hdr *h = (const mem_hdr *)(p - MEM_HDR);
    if (h->len && madvise(h->base, h->len, MADV_POPULATE_WRITE)) {
        /* an older kernel: a write per page (the header's page is written already) */
        for (size_t o = 4096; o < h->len; o += 4096)
            ((volatile char *)h->base)[o] = 0;
    }
    sde_mem_free(p);
}

void sde_mem_trim(void)
{
    pthread_mutex_lock(&mem_mu);
    for (int i = 0; i < mem_ncache; i++)
        munmap(mem_cache[i].base, mem_cache[i].len);
    mem_ncache = 0;
    mem_cached = 0;
    pthread_mutex_unlock(&mem_mu);
}

size_t sde_mem_cached(void)
{
    pthread_mutex_lock(&mem_mu);
    const size_t n = mem_cached;
    pthread_mutex_unlock(&mem_mu);
    return n;
}

void *sde_mem_alloc(size_t bytes)
{
    const size_t need = MEM_HDR + ((bytes + 63) & ~(size_t)63);
#ifdef MEM_MAPPED
    if (bytes >= MEM_HUGE_MIN) {
        const size_t len = (need + MEM_HUGE_ALIGN - 1) & ~(MEM_HUGE_ALIGN - 1);
        size_t got;
        char *c = cache_take(len, &got);
        if (c) {
            mem_hdr *h = (mem_hdr *)c;
            h->base = c;
            h->len = got;
            return c + MEM_HDR;
        }
        char *m =
            mmap(NULL, len + MEM_HUGE_ALIGN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) return NULL;
        /* huge pages need a 2 MB-aligned range: trim the slack on both sides */
        char *a = (char *)(((uintptr_t)m + MEM_HUGE_ALIGN - 1) & ~(uintptr_t)(MEM_HUGE_ALIGN - 1));
        if (a > m) munmap(m, (size_t)(a - m));
        munmap(a + len, (size_t)(m + MEM_HUGE_ALIGN - a)); /* never empty: a - m < MEM_HUGE_ALIGN */
        (void)madvise(a, len, MADV_HUGEPAGE); /* advice only: THP may be off, and then 4 KB pages serve */
        mem_hdr *h = (mem_hdr *)a;
        h->base = a;
        h->len = len;
        return a + MEM_HDR;
    }
#endif
    char *p = aligned_alloc(64, need);
    if (!p) return NULL;
    mem_hdr *h = (mem_hdr *)p;
    h->base = p;
    h->len = 0;
    return p + MEM_HDR;
}

static void mem_release(void *p, int keep)
{
    if (!p) return;
    const mem_hdr *h = (const mem_hdr *)((char *)p - MEM_HDR);
    if (h->len) {
        if (!keep || !cache_put(h->base, h->len)) munmap(h->base, h->len);
    } else
        free(h->base);
}

void sde_mem_free(void *p)
{
    mem_release(p, 1);
}

void sde_mem_drop(void *p)
{
    mem_release(p, 0);
}
