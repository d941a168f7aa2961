/* test_philox.c: the Philox-4x32-10 normal generator against the golden torch.randn(device="cuda") samples in
 * tests/data/golden/philox_randn_cases.json, and the per-tensor offset stepping of sde_philox_randn. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "philox.h"

#define TOL 1e-5

static json_t *load_cases(void)
{
    const char *dir = getenv("SDW_TESTDATA_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/golden/philox_randn_cases.json", dir && *dir ? dir : "tests/data");
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) print_message("no golden file %s (%s)\n", path, jerr.text);
    return root;
}

static void test_golden_cases(void **state)
{
    (void)state;
    json_t *root = load_cases();
    if (!root) fail_msg("the golden cases are part of the tree (tests/data): they must load");
    assert_true(json_is_array(root));
    assert_true(json_array_size(root) > 0);
    size_t ci;
    json_t *c;
    int checked = 0;
    json_array_foreach(root, ci, c)
    {
        json_t *jseed = json_object_get(c, "seed"), *joff = json_object_get(c, "offset");
        json_t *jn = json_object_get(c, "n"), *jv = json_object_get(c, "values");
        assert_true(json_is_integer(jseed) && json_is_integer(joff) && json_is_integer(jn) &&
                    json_is_array(jv));
        uint64_t seed = (uint64_t)json_integer_value(jseed);
        uint32_t off = (uint32_t)json_integer_value(joff);
        size_t n = (size_t)json_integer_value(jn);
        assert_int_equal(json_array_size(jv), n);
        float *out = malloc(n * sizeof *out);
        assert_non_null(out);
        sde_philox_randn_at(seed, off, out, n);
        double worst = 0;
        for (size_t i = 0; i < n; i++) {
            double want = json_real_value(json_array_get(jv, i));
            double d = fabs(want - out[i]);
            if (d > worst) worst = d;
            if (d > TOL)
                fail_msg("seed %llu offset %u element %zu: got %.9g want %.9g", (unsigned long long)seed, off,
                         i, out[i], want);
        }
        print_message("seed %llu offset %u n %zu: max |diff| %.3g\n", (unsigned long long)seed, off, n,
                      worst);
        free(out);
        checked++;
    }
    assert_true(checked >= 6);
    json_decref(root);
}

/* The stateful form steps the offset once per call, so tensor k of a job is randn_at(seed, k). */
static void test_offset_steps(void **state)
{
    (void)state;
    sde_philox r;
    sde_philox_init(&r, 42);
    assert_int_equal(r.offset, 0);
    float a[64], b[64], ref[64];
    sde_philox_randn(&r, a, 64);
    assert_int_equal(r.offset, 1);
    sde_philox_randn(&r, b, 64);
    assert_int_equal(r.offset, 2);
    sde_philox_randn_at(42, 0, ref, 64);
    assert_memory_equal(a, ref, sizeof a);
    sde_philox_randn_at(42, 1, ref, 64);
    assert_memory_equal(b, ref, sizeof b);
    int same = 0;
    for (int i = 0; i < 64; i++)
        same += a[i] == b[i];
    assert_true(same < 2);
}

/* Element i depends only on (seed, offset, i): a shorter request is a prefix of a longer one. */
static void test_prefix_and_moments(void **state)
{
    (void)state;
    enum { N = 200000 };
    float *big = malloc(N * sizeof *big), small[100];
    assert_non_null(big);
    sde_philox_randn_at(7, 3, big, N);
    sde_philox_randn_at(7, 3, small, 100);
    assert_memory_equal(big, small, sizeof small);
    double s = 0, s2 = 0;
    for (int i = 0; i < N; i++) {
        assert_true(isfinite(big[i]));
        s += big[i];
        s2 += (double)big[i] * big[i];
    }
    double mean = s / N, var = s2 / N - mean * mean;
    assert_true(fabs(mean) < 0.01);
    assert_true(fabs(var - 1.0) < 0.02);
    /* A different seed in the high word alone must change the stream. */
    sde_philox_randn_at(7 + (1ull << 32), 3, small, 100);
    assert_memory_not_equal(big, small, sizeof small);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_cases),
        cmocka_unit_test(test_offset_steps),
        cmocka_unit_test(test_prefix_and_moments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
