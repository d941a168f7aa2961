/* test_validate_loras.c: POST /v1/jobs LoRAs: the "loras" list and <lora:NAME:W> prompt tags resolve to plain
 * files in model.lora_dir; anything else is a 400 naming "loras" or "prompt". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "validate.h"

static char dir[64];
static sdw_validate_limits lim = {
    .max_width = 1024, .max_height = 768, .max_steps = 150, .max_body_bytes = 8192};

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/sdw-lora-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    char p[128];
    snprintf(p, sizeof p, "%s/style.safetensors", dir);
    FILE *f = fopen(p, "w");
    if (!f) return -1;
    fclose(f);
    snprintf(p, sizeof p, "%s/sub.safetensors", dir);
    mkdir(p, 0755);
    lim.lora_dir = dir;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char p[128];
    snprintf(p, sizeof p, "%s/style.safetensors", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/sub.safetensors", dir);
    rmdir(p);
    rmdir(dir);
    return 0;
}

static int run(const char *body, sdw_gen_request *r, sdw_api_error *e)
{
    memset(e, 0, sizeof *e);
    return sdw_validate_job_request(body, strlen(body), &lim, r, e);
}

static void expect_400(const char *body, const char *field)
{
    sdw_gen_request r;
    sdw_api_error e;
    assert_int_equal(run(body, &r, &e), -1);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.field, field);
    sdw_gen_request_free(&r);
}

static void test_accepts(void **state)
{
    (void)state;
    sdw_gen_request r;
    sdw_api_error e;
    assert_int_equal(
        run("{\"prompt\":\"a <lora:style:0.5> cat\",\"loras\":[{\"name\":\"style\",\"weight\":0.25},"
            "{\"name\":\"style.safetensors\"}]}",
            &r, &e),
        0);
    assert_string_equal(r.loras, "style:0.25\nstyle.safetensors:1\n");
    assert_string_equal(r.lora_dir, dir);
    sdw_gen_request_free(&r);
    assert_int_equal(run("{\"prompt\":\"a cat\"}", &r, &e), 0);
    assert_null(r.loras);
    assert_null(r.lora_dir);
    sdw_gen_request_free(&r);
}

static void test_errors(void **state)
{
    (void)state;
    expect_400("{\"prompt\":\"p\",\"loras\":[{\"name\":\"absent\"}]}", "loras");
    expect_400("{\"prompt\":\"p\",\"loras\":[{\"name\":\"../style\"}]}", "loras");
    expect_400("{\"prompt\":\"p\",\"loras\":[{\"name\":\"x/style\"}]}", "loras");
    expect_400("{\"prompt\":\"p\",\"loras\":[{\"name\":\"sub\"}]}", "loras");
    expect_400("{\"prompt\":\"p\",\"loras\":[{\"name\":\"\"}]}", "loras");
    expect_400("{\"prompt\":\"p\",\"loras\":[{\"name\":\"style\",\"weight\":\"x\"}]}", "loras");
    expect_400("{\"prompt\":\"p\",\"loras\":[{\"name\":\"style\",\"extra\":1}]}", "loras");
    expect_400("{\"prompt\":\"p\",\"loras\":\"style\"}", "loras");
    expect_400("{\"prompt\":\"p <lora:absent:1>\"}", "prompt");
    expect_400("{\"prompt\":\"p <lora:../../etc/passwd:1>\"}", "prompt");
    lim.lora_dir = NULL;
    expect_400("{\"prompt\":\"p\",\"loras\":[{\"name\":\"style\"}]}", "loras");
    lim.lora_dir = dir;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
