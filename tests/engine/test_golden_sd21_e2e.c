/* test_golden_sd21_e2e.c: SD 2.1 768-v (random full-size weights: OpenCLIP penultimate text, v prediction)
 * through sde_generate(), compared with stable-diffusion.cpp's image and intermediates for euler. */
#include "golden_util.h"

static int setup(void **state)
{
    (void)state;
    /* prediction left on auto: nothing in the file says v, and the engine's SD 2.x default must pick it */
    return ge_engine_setup("sd21");
}

/* Tolerances as in test_golden_sd15_e2e.c, which SD 2.1 meets too despite the peer's caveat (its README):
 * it computes GELU (OpenCLIP MLP and UNet GEGLU) with ggml's tanh approximation from an f16 table while
 * OpenCLIP defines the exact erf form, which we use; f16-vs-f32 alone moves its conditioning by up to 0.004
 * and its UNet outputs by up to 0.005. Measured: conditioning max 0.0027, step tensors at most 0.35% of
 * their scale, image max |delta| 1 and mean 0.15 of 255. */
static const ge_tols SD21_TOLS = {.text_abs = 5e-3, .latent_rel = 1e-2, .img_max = 3, .img_mean = 0.5};

static void test_euler_v(void **state)
{
    (void)state;
    sde_model_info in;
    sde_engine_info(ge_engine, &in);
    assert_string_equal(in.arch, "sd2");
    assert_string_equal(in.prediction, "v");
    assert_int_equal(in.context_dim, 1024);
    assert_int_equal(in.default_size, 768);

    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER);
    p.negative_prompt = "";
    char dir[1200];
    gu_golden_dir(dir, sizeof dir, "sd21", "euler");
    ge_generate_check(ge_engine, &p, dir, "SD 2.1 euler (v)", &SD21_TOLS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_euler_v),
    };
    return cmocka_run_group_tests(tests, setup, ge_engine_teardown);
}
