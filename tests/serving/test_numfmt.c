/* test_numfmt.c: the printf-free number formatting of the request hot path, checked against snprintf
 * over edge values and a sweep. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "numfmt.h"

static void test_u64(void **state)
{
    (void)state;
    static const uint64_t v[] = {0, 1, 9, 10, 99, 100, 12345, 4294967295u, 4294967296u, UINT64_MAX};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        char a[24], b[24];
        size_t n = sdw_fmt_u64(a, v[i]);
        snprintf(b, sizeof b, "%llu", (unsigned long long)v[i]);
        assert_string_equal(a, b);
        assert_int_equal(n, strlen(b));
    }
}

static void test_fixed(void **state)
{
    (void)state;
    char a[32];
    assert_int_equal(sdw_fmt_fixed(a, 0, 3), 5);
    assert_string_equal(a, "0.000");
    sdw_fmt_fixed(a, 12.3456, 1);
    assert_string_equal(a, "12.3");
    sdw_fmt_fixed(a, 0.05, 1);
    assert_string_equal(a, "0.1");
    sdw_fmt_fixed(a, 9.9996, 3);
    assert_string_equal(a, "10.000");
    sdw_fmt_fixed(a, 7, 0);
    assert_string_equal(a, "7");
    sdw_fmt_fixed(a, -1, 2);
    assert_string_equal(a, "0.00");
    sdw_fmt_fixed(a, 1.0 / 0.0, 1);
    assert_string_equal(a, "0.0");
    sdw_fmt_fixed(a, 3.25, 9); /* decimals are capped at 6 */
    assert_string_equal(a, "3.250000");
    /* a sweep against printf at values that are exact in binary (no rounding-mode differences) */
    for (int i = 0; i < 100000; i += 7) {
        double x = i / 1024.0;
        char b[32];
        snprintf(b, sizeof b, "%.3f", x);
        sdw_fmt_fixed(a, x, 3);
        if (strcmp(a, b) && (x * 1000 - (long)(x * 1000)) != 0.5) fail_msg("%.10f: %s vs %s", x, a, b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_u64), cmocka_unit_test(test_fixed)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
