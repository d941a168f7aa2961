/* test_mkmodel_sdxl.c: mkmodel --preset sdxl-random writes the specification's SDXL file byte for byte (6.9
 * GB, minutes): label "manual", skipped unless SDW_MANUAL_TESTS=1, e.g. SDW_MANUAL_TESTS=1 ctest -L manual.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mkmodel_random.h"
#include "golden_util.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void test_sdxl_sha256(void **state)
{
    (void)state;
    const char *d = getenv("SDW_TMPDIR");
    char path[1024], err[512], hex[65];
    snprintf(path, sizeof path, "%s/randsdxl-s1-f16.safetensors", d && *d ? d : "/tmp");
    uint64_t size = 0;
    double t0 = now();
    if (sde_mkmodel_random(path, SDE_RAND_SDXL, 1, 0, 0, &size, err, sizeof err)) fail_msg("%s", err);
    double t1 = now();
    assert_int_equal(gu_file_sha256(path, hex), 0);
    print_message("wrote %llu bytes in %.1f s, sha256 %s in %.1f s\n", (unsigned long long)size, t1 - t0, hex,
                  now() - t1);
    unlink(path);
    assert_int_equal(size, 6938041256ULL);
    assert_string_equal(hex, "97162c0150279df2a0103fed517a34e138211aeb906e8478f22a9f84c084d272");
}

int main(void)
{
    const char *on = getenv("SDW_MANUAL_TESTS");
    if (!on || strcmp(on, "1")) {
        printf("skipped: writes a 6.9 GB file; run with SDW_MANUAL_TESTS=1 (ctest -L manual)\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_sdxl_sha256)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
