/* ops_mem.c: the engine's large buffers (activations, conv scratch, widened weights), mapped 2 MB-aligned
 * and marked for transparent huge pages, so a fresh buffer costs one fault per 2 MB instead of per 4 KB. */
#include "ops.h"

#include <stdint.h>
#include <stdlib.h>
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

void *sde_mem_alloc(size_t bytes)
{
    const size_t need = MEM_HDR + ((bytes + 63) & ~(size_t)63);
#if !defined(__SANITIZE_ADDRESS__) && defined(MADV_HUGEPAGE)
    /* ASan builds keep malloc, whose redzones catch overruns a private mapping would not */
    if (bytes >= MEM_HUGE_MIN) {
        const size_t len = (need + MEM_HUGE_ALIGN - 1) & ~(MEM_HUGE_ALIGN - 1);
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

void sde_mem_free(void *p)
{
    if (!p) return;
    const mem_hdr *h = (const mem_hdr *)((char *)p - MEM_HDR);
    if (h->len)
        munmap(h->base, h->len);
    else
        free(h->base);
}
