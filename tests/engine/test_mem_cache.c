/* test_mem_cache.c: sde_mem_free() keeps a freed mapping for the next sde_mem_alloc() it holds (cut to size,
 * the rest kept; under 32 MB only from one at most twice the size), freed pieces join again, sde_mem_drop()
 * and sde_mem_trim() unmap, small buffers never enter the cache, and SDW_MEM_POISON=1 fills a reused
 * buffer with NaN bytes. */
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
    const size_t a_len = sde_mem_cached();
    assert_true(a_len >= 8 * MB);
    /* half the size or more: the head of the cached mapping, the tail stays cached */
    char *b = sde_mem_alloc(5 * MB);
    assert_ptr_equal(a, b);
    assert_true(sde_mem_cached() > 0 && sde_mem_cached() < a_len);
    b[5 * MB - 1] = 2; /* the whole size asked is usable */
    /* freed, the head joins its tail again: the whole mapping comes back for its full size */
    sde_mem_free(b);
    assert_int_equal(sde_mem_cached(), a_len);
    char *a2 = sde_mem_alloc(8 * MB);
    assert_ptr_equal(a2, a);
    assert_int_equal(sde_mem_cached(), 0);
    sde_mem_free(a2);
    /* a small request (under 32 MB) does not cut a mapping over twice its size: a new mapping */
    char *c = sde_mem_alloc(3 * MB);
    assert_ptr_not_equal(c, a);
    assert_int_equal(sde_mem_cached(), a_len);
    sde_mem_free(c);
    /* a big one cuts the smallest mapping that holds it, however much bigger */
    char *big = sde_mem_alloc(100 * MB);
    assert_non_null(big);
    sde_mem_free(big);
    const size_t all = sde_mem_cached();
    char *part = sde_mem_alloc(40 * MB);
    assert_ptr_equal(part, big);
    char *rest = sde_mem_alloc(40 * MB);   /* the next piece of the same mapping */
    assert_ptr_equal(rest, big + 42 * MB); /* 40 MB and the 64-byte header, in whole 2 MB pages */
    sde_mem_free(part);
    sde_mem_free(rest);
    assert_int_equal(sde_mem_cached(), all); /* joined again */
    assert_ptr_equal(sde_mem_alloc(100 * MB), big);
    sde_mem_free(big);
    /* too big for anything cached: a new mapping */
    char *d = sde_mem_alloc(200 * MB);
    assert_non_null(d);
    assert_int_equal(sde_mem_cached(), all);
    memset(d, 3, 200 * MB);
    sde_mem_drop(d); /* dropped: not cached */
    assert_int_equal(sde_mem_cached(), all);
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
