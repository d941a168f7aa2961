/* test_golden_sd21_ckpt.c: the full-size random SD 2.1 file (fixture randsd21, mkmodel --preset sd21-random)
 * is byte for byte the file the peer's SD 2.1 goldens were computed from (sha256 in tests/data/README.md). */
#include "golden_util.h"

#include <time.h>

static char path[1024];

static void test_sha256(void **state)
{
    (void)state;
    char hex[65];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (gu_file_sha256(path, hex)) fail_msg("%s: cannot read", path);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    print_message("sha256 %s in %.2f s\n", hex,
                  (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
    assert_string_equal(hex, "504913d0e7f4927cf32a2792f7f2bfaf2d0f28f614d114c2e476a2542a876d08");
}

int main(void)
{
    gu_fixture_path(path, sizeof path, "sd21");
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_sha256)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
