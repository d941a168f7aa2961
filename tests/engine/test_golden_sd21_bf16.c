/* test_golden_sd21_bf16.c: the opt-in bf16 path on SD 2.1 768-v with random full-size weights (OpenCLIP
 * text, v prediction, head size 64): its image against stable-diffusion.cpp's golden and against our
 * float32 image, with the quality figures. Skipped without AVX512-BF16. */
#include "golden_bf16.h"

static int setup(void **state)
{
    (void)state;
    return ge_engine_setup("sd21");
}

static void test_golden(void **state)
{
    (void)state;
    if (!sde_bf16_available()) skip();
    char dir[1200], png[1400];
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER);
    p.negative_prompt = "";
    gu_golden_dir(dir, sizeof dir, "sd21", "euler");
    snprintf(png, sizeof png, "%s/image.png", dir);
    check("sd21 euler", p, png, 24, 30.0);
}

/* A larger image (no peer image at this size: fp32 is the reference). */
static void test_256(void **state)
{
    (void)state;
    if (!sde_bf16_available()) skip();
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER);
    p.negative_prompt = "";
    p.width = p.height = 256;
    check("sd21 euler 256x256", p, NULL, 255, 30.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_256),
    };
    return cmocka_run_group_tests(tests, setup, ge_engine_teardown);
}
