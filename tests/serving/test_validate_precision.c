/* test_validate_precision.c: POST /v1/jobs "precision": "fp32" or "bf16" (opt-in), the server's
 * model.precision when absent or null; another value is a 400 invalid_value and another type a 400
 * invalid_type, both naming "precision". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "validate.h"

static sdw_validate_limits lim = {
    .max_width = 1024, .max_height = 768, .max_steps = 150, .max_body_bytes = 8192, .max_batch = 4};

static int run(const char *body, sdw_gen_request *r, sdw_api_error *e)
{
    memset(e, 0, sizeof *e);
    return sdw_validate_job_request(body, strlen(body), &lim, r, e);
}

static void expect_ok(const char *body, int want)
{
    sdw_gen_request r;
    sdw_api_error e;
    if (run(body, &r, &e) != 0) fail_msg("%s: %d %s (%s)", body, e.status, e.message, e.field);
    assert_int_equal(r.precision, want);
    sdw_gen_request_free(&r);
}

static void expect_400(const char *body, const char *code, const char *in_message)
{
    sdw_gen_request r;
    sdw_api_error e;
    assert_int_equal(run(body, &r, &e), -1);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.code, code);
    assert_string_equal(e.field, "precision");
    if (!strstr(e.message, in_message)) fail_msg("message \"%s\" lacks \"%s\"", e.message, in_message);
    sdw_gen_request_free(&r);
}

static void test_values(void **state)
{
    (void)state;
    lim.precision = SDW_PRECISION_FP32;
    expect_ok("{\"prompt\":\"a cat\"}", SDW_PRECISION_FP32);
    expect_ok("{\"prompt\":\"a cat\",\"precision\":\"fp32\"}", SDW_PRECISION_FP32);
    expect_ok("{\"prompt\":\"a cat\",\"precision\":\"bf16\"}", SDW_PRECISION_BF16);
    expect_ok("{\"prompt\":\"a cat\",\"precision\":null}", SDW_PRECISION_FP32);
}

static void test_bad_value_and_type(void **state)
{
    (void)state;
    lim.precision = SDW_PRECISION_FP32;
    expect_400("{\"prompt\":\"a cat\",\"precision\":\"fp16\"}", "invalid_value", "'fp32' or 'bf16'");
    expect_400("{\"prompt\":\"a cat\",\"precision\":\"BF16\"}", "invalid_value", "precision is 'BF16'");
    expect_400("{\"prompt\":\"a cat\",\"precision\":\"\"}", "invalid_value", "'fp32' or 'bf16'");
    /* a NUL inside the string is not "bf16" */
    expect_400("{\"prompt\":\"a cat\",\"precision\":\"bf16\\u0000x\"}", "invalid_value", "'fp32' or 'bf16'");
    expect_400("{\"prompt\":\"a cat\",\"precision\":16}", "invalid_type",
               "precision must be a string, not an integer");
    expect_400("{\"prompt\":\"a cat\",\"precision\":true}", "invalid_type", "not a boolean");
    expect_400("{\"prompt\":\"a cat\",\"precision\":[\"bf16\"]}", "invalid_type", "not an array");
}

/* model.precision is the default of a job that gives none; a job's own value still wins */
static void test_default_from_config(void **state)
{
    (void)state;
    lim.precision = SDW_PRECISION_BF16;
    expect_ok("{\"prompt\":\"a cat\"}", SDW_PRECISION_BF16);
    expect_ok("{\"prompt\":\"a cat\",\"precision\":null}", SDW_PRECISION_BF16);
    expect_ok("{\"prompt\":\"a cat\",\"precision\":\"fp32\"}", SDW_PRECISION_FP32);
    expect_ok("{\"prompt\":\"a cat\",\"precision\":\"bf16\"}", SDW_PRECISION_BF16);
    lim.precision = SDW_PRECISION_FP32;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_bad_value_and_type),
        cmocka_unit_test(test_default_from_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
