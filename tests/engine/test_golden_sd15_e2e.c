/* test_golden_sd15_e2e.c: the acceptance test: SD 1.5 (random full-size weights) through sde_generate()
 * must reproduce stable-diffusion.cpp's image and intermediate tensors, for euler and euler_a. */
#include "golden_util.h"

static int setup(void **state)
{
    (void)state;
    return ge_engine_setup("sd15");
}

/* Tolerances. The peer ran the f16 checkpoint with f16 matmul inputs (about 3 significant digits per
 * product, accumulated in f32); its README puts f16-vs-f32 differences at 0.004 for the conditioning and a
 * few parts in a thousand for UNet outputs. Relative to each tensor's own scale (max |value|) we allow:
 *   noise 1e-5 absolute (the same Philox generator, float rounding only),
 *   x_T 1e-5 of scale, conditioning 5e-3 absolute (O(1) LayerNorm outputs),
 *   UNet outputs and latents 1e-2 of scale: a few parts in a thousand measured, 3x margin, while a wrong
 *   timestep, scaling or guidance formula changes them by tens of percent;
 *   vae_out 2/255 absolute: the image max 3/255 and mean 0.5/255 (the acceptance target) after rounding. */
static const ge_tols SD15_TOLS = {.text_abs = 5e-3, .latent_rel = 1e-2, .img_max = 3, .img_mean = 0.5};

static void run(const char *sampler_dir, sde_sampler s)
{
    sde_gen_params p = gu_cat_params(s);
    p.negative_prompt = "";
    char dir[1200], label[64];
    gu_golden_dir(dir, sizeof dir, "sd15", sampler_dir);
    snprintf(label, sizeof label, "SD 1.5 %s", sampler_dir);
    ge_generate_check(ge_engine, &p, dir, label, &SD15_TOLS);
}

static void test_euler(void **state)
{
    (void)state;
    run("euler", SDE_SAMPLER_EULER);
}

static void test_euler_a(void **state)
{
    (void)state;
    run("euler_a", SDE_SAMPLER_EULER_A);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_euler),
        cmocka_unit_test(test_euler_a),
    };
    return cmocka_run_group_tests(tests, setup, ge_engine_teardown);
}
