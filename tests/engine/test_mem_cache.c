/* test_mem_cache.c: sde_mem_free() keeps a freed mapping for the next sde_mem_alloc() that fits it (at most
 * twice the size asked), sde_mem_drop() and sde_mem_trim() unmap, small buffers never enter the cache, and
 * SDW_MEM_POISON=1 fills a reused buffer with NaN bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

#define MB ((size_t)1 << 20)

/* Builds without private mappings (ASan keeps malloc's redzones) have nothing to cache. */
static int mapped_build(void)
{
    sde_mem_trim();
    void *p = sde_mem_alloc(4 * MB);
    assert_non_null(p);
    sde_mem_free(p);
    const int on = sde_mem_cached() > 0;
    sde_mem_trim();
    return on;
}

static void test_reuse_fits(void **state)
{
    (void)state;
    if (!mapped_build()) skip();
    char *a = sde_mem_alloc(8 * MB);
    assert_non_null(a);
    memset(a, 1, 8 * MB);
    sde_mem_free(a);
    assert_true(sde_mem_cached() >= 8 * MB);
    /* twice the size or less: the same mapping comes back, its pages already there */
    char *b = sde_mem_alloc(5 * MB);
    assert_ptr_equal(a, b);
    assert_int_equal(sde_mem_cached(), 0);
    b[5 * MB - 1] = 2; /* the whole size asked is usable */
    sde_mem_free(b);
    /* more than twice the size asked: a new mapping, and the cached one goes back to the kernel first (a
     * miss unmaps the largest cached mappings until the size asked is given back) */
    char *c = sde_mem_alloc(3 * MB);
    assert_ptr_not_equal(c, a);
    assert_int_equal(sde_mem_cached(), 0);
    sde_mem_free(c);
    const size_t c_len = sde_mem_cached();
    assert_true(c_len >= 3 * MB);
    /* too small for the size asked: a new mapping; the smaller one is unmapped */
    char *d = sde_mem_alloc(16 * MB);
    assert_ptr_not_equal(d, c);
    assert_int_equal(sde_mem_cached(), 0);
    memset(d, 3, 16 * MB);
    sde_mem_drop(d); /* dropped: not cached */
    assert_int_equal(sde_mem_cached(), 0);
    /* a miss gives back only as much as it asks for, largest first: with 4, 4 and 12 MB buffers cached,
     * 15 MB unmaps the 12 MB one and one 4 MB one and leaves the other */
    char *e0 = sde_mem_alloc(4 * MB), *e1 = sde_mem_alloc(4 * MB), *e2 = sde_mem_alloc(12 * MB);
    sde_mem_free(e0);
    const size_t small = sde_mem_cached();
    sde_mem_free(e1);
    sde_mem_free(e2);
    char *f = sde_mem_alloc(15 * MB);
    assert_non_null(f);
    assert_int_equal(sde_mem_cached(), small);
    sde_mem_free(f);
    sde_mem_trim();
    assert_int_equal(sde_mem_cached(), 0);
}

static void test_small_not_cached(void **state)
{
    (void)state;
    if (!mapped_build()) skip();
    void *p = sde_mem_alloc(64 * 1024);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 64, 0);
    sde_mem_free(p);
    assert_int_equal(sde_mem_cached(), 0);
    sde_mem_free(NULL);
    sde_mem_drop(NULL);
}

static void test_poison(void **state)
{
    (void)state;
    if (!mapped_build()) skip();
    float *a = sde_mem_alloc(4 * MB);
    assert_non_null(a);
    for (size_t i = 0; i < 4 * MB / sizeof(float); i++)
        a[i] = 0.0f;
    sde_mem_free(a);
    float *b = sde_mem_alloc(4 * MB);
    assert_ptr_equal(a, b);
    /* setenv before the first reuse of the process: SDW_MEM_POISON is read once */
    assert_true(isnan(b[0]) && isnan(b[4 * MB / sizeof(float) - 1]));
    sde_mem_free(b);
    sde_mem_trim();
}

int main(void)
{
    setenv("SDW_MEM_POISON", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reuse_fits),
        cmocka_unit_test(test_small_not_cached),
        cmocka_unit_test(test_poison),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
