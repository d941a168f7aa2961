/* test_golden_sd15_taesd.c: the random SD 1.5 checkpoint decoded by the random TAESD (mkmodel taesd-random,
 * seed 1, f32) must reproduce stable-diffusion.cpp's --taesd image (tests/data/golden/sd15-rand/taesd), and
 * the VAE decode of the same job must still be the VAE's. Prints both decode times. */
#include "golden_util.h"
#include "mkmodel_random.h"

static char taesd_path[1200];

static int setup(void **state)
{
    (void)state;
    char err[1024], model[1200], tok[1200];
    snprintf(taesd_path, sizeof taesd_path, "%s/tmp/randtaesd-s1-f32.safetensors", gu_build_dir());
    sde_rand_preset pr;
    if (sde_rand_preset_parse("taesd-random", &pr) ||
        sde_mkmodel_random(taesd_path, pr, 1, 1, 1, NULL, err, sizeof err))
        return gu_setup_failed(err);
    gu_fixture_path(model, sizeof model, "sd15");
    gu_vocab_path(tok, sizeof tok);
    sde_load_opts o = {
        .model_path = model, .tokenizer_path = tok, .taesd_path = taesd_path, .backend = golden_backend()};
    if (o.backend) printf("engine on backend \"%s\" (SDW_TEST_BACKEND)\n", o.backend);
    return sde_engine_load(&o, &ge_engine, err, sizeof err) ? gu_setup_failed(err) : 0;
}

static void test_taesd_golden(void **state)
{
    (void)state;
    char dir[1200], err[1024];
    gu_golden_dir(dir, sizeof dir, "sd15", "taesd");
    char sha[65];
    assert_int_equal(gu_file_sha256(taesd_path, sha), 0);
    /* the file the golden was made from (tests/data/golden/sd15-rand/taesd/README.md) */
    assert_string_equal(sha, "a67ad40c139d7195f8a15ccc89ea10ed14067950d70d2e57018ab99f4fcb39b0");
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER);
    p.negative_prompt = "";
    p.width = p.height = 128;
    p.decoder = SDE_DECODER_TAESD;
    sde_result res;
    if (sde_generate(ge_engine, &p, &res, err, sizeof err) != SDE_OK) fail_msg("sde_generate: %s", err);
    int maxd = 0;
    double meand = 0;
    assert_int_equal(ge_compare_png(dir, &res, &maxd, &meand, err, sizeof err), 0);
    printf(
        "SD 1.5 128x128 + TAESD: decode %.3f s, total %.2f s; vs peer max |delta| %d, mean %.4f (of 255)\n",
        res.t_decode, res.t_total, maxd, meand);
    assert_true(maxd <= 3);
    assert_true(meand <= 0.5);

    /* the VAE decode of the same job is far from the TAESD one (the golden tells the two apart) */
    p.decoder = SDE_DECODER_VAE;
    sde_result vae;
    if (sde_generate(ge_engine, &p, &vae, err, sizeof err) != SDE_OK) fail_msg("sde_generate: %s", err);
    int vmax = 0;
    double vmean = 0;
    assert_int_equal(ge_compare_png(dir, &vae, &vmax, &vmean, err, sizeof err), 0);
    printf("the same job through the VAE: decode %.3f s; vs the TAESD golden max %d, mean %.2f\n",
           vae.t_decode, vmax, vmean);
    assert_true(vmean > 5);
    sde_result_free(&res);
    sde_result_free(&vae);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_taesd_golden),
    };
    return cmocka_run_group_tests(tests, setup, ge_engine_teardown);
}
