/* test_golden_sd15_bf16.c: the opt-in bf16 path (precision bf16) on SD 1.5 with random full-size weights:
 * its images against stable-diffusion.cpp's goldens and against our float32 images, with the quality
 * figures (max and mean |delta|, PSNR) docs/api.md and bench/README.md quote. Skipped without AVX512-BF16. */
#include "golden_bf16.h"

static int setup(void **state)
{
    (void)state;
    return ge_engine_setup("sd15");
}

static void test_goldens(void **state)
{
    (void)state;
    if (!sde_bf16_available()) skip();
    char dir[1200], png[1400];
    const struct {
        const char *name;
        sde_sampler s;
    } e2e[] = {{"euler", SDE_SAMPLER_EULER}, {"euler_a", SDE_SAMPLER_EULER_A}};
    for (size_t i = 0; i < sizeof e2e / sizeof e2e[0]; i++) {
        sde_gen_params p = gu_cat_params(e2e[i].s);
        p.negative_prompt = "";
        gu_golden_dir(dir, sizeof dir, "sd15", e2e[i].name);
        snprintf(png, sizeof png, "%s/image.png", dir);
        check(e2e[i].name, p, png, 24, 30.0);
    }
    /* the samplers folder's dpm++2m case: negative prompt, cfg 5, 6 steps */
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_DPMPP_2M);
    p.negative_prompt = "blurry, low quality";
    p.cfg_scale = 5.f;
    p.steps = 6;
    gu_golden_dir(dir, sizeof dir, "sd15", "samplers");
    snprintf(png, sizeof png, "%s/dpmpp_2m.png", dir);
    check("samplers/dpmpp_2m", p, png, 24, 30.0);
}

/* A larger image, where every UNet level runs at a real size (no peer image at this size: fp32 is the
 * reference, itself within 1/255 of the peer on the goldens). */
static void test_256(void **state)
{
    (void)state;
    if (!sde_bf16_available()) skip();
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER);
    p.width = p.height = 256;
    check("euler 256x256", p, NULL, 255, 30.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_goldens),
        cmocka_unit_test(test_256),
    };
    return cmocka_run_group_tests(tests, setup, ge_engine_teardown);
}
