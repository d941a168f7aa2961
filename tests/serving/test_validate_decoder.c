/* test_validate_decoder.c: POST /v1/jobs "decoder": "vae" (the default) or "taesd", the latter only on a
 * server with model.preview_decoder; anything else is a 400 naming "decoder". */
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
    .max_width = 1024, .max_height = 768, .max_steps = 150, .max_body_bytes = 8192};

static int run(const char *body, sdw_gen_request *r, sdw_api_error *e)
{
    memset(e, 0, sizeof *e);
    return sdw_validate_job_request(body, strlen(body), &lim, r, e);
}

static void expect_400(const char *body, const char *field, const char *in_message)
{
    sdw_gen_request r;
    sdw_api_error e;
    assert_int_equal(run(body, &r, &e), -1);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.field, field);
    assert_non_null(strstr(e.message, in_message));
    sdw_gen_request_free(&r);
}

static void test_decoder(void **state)
{
    (void)state;
    sdw_gen_request r;
    sdw_api_error e;
    lim.preview_decoder = NULL;
    assert_int_equal(run("{\"prompt\":\"a cat\"}", &r, &e), 0);
    assert_int_equal(r.decoder, SDW_DECODER_VAE);
    sdw_gen_request_free(&r);
    assert_int_equal(run("{\"prompt\":\"a cat\",\"decoder\":\"vae\"}", &r, &e), 0);
    assert_int_equal(r.decoder, SDW_DECODER_VAE);
    sdw_gen_request_free(&r);
    assert_int_equal(run("{\"prompt\":\"a cat\",\"decoder\":null}", &r, &e), 0);
    assert_int_equal(r.decoder, SDW_DECODER_VAE);
    sdw_gen_request_free(&r);
    /* no TAESD on this server: refused up front, not failed in the worker */
    expect_400("{\"prompt\":\"a cat\",\"decoder\":\"taesd\"}", "decoder", "model.preview_decoder");

    lim.preview_decoder = "/models/taesd.safetensors";
    assert_int_equal(run("{\"prompt\":\"a cat\",\"decoder\":\"taesd\"}", &r, &e), 0);
    assert_int_equal(r.decoder, SDW_DECODER_TAESD);
    sdw_gen_request_free(&r);
    expect_400("{\"prompt\":\"a cat\",\"decoder\":\"TAESD\"}", "decoder", "'vae' or 'taesd'");
    expect_400("{\"prompt\":\"a cat\",\"decoder\":\"\"}", "decoder", "'vae' or 'taesd'");
    expect_400("{\"prompt\":\"a cat\",\"decoder\":1}", "decoder", "a string");
    lim.preview_decoder = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decoder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
