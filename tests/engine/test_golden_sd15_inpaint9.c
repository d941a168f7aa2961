/* test_golden_sd15_inpaint9.c: a 9-channel inpainting checkpoint (mkmodel sd15-inpaint-random, seed 1) must
 * reproduce stable-diffusion.cpp's images with a mask, without one, and without an init image (README.md in
 * tests/data/golden/sd15-rand/inpaint9). */
#include "golden_util.h"

static int setup(void **state)
{
    (void)state;
    return ge_engine_setup("sd15inpaint");
}

/* Reads dir/name as 8-bit RGB; fails the test when it cannot. */
static uint8_t *read_png(const char *dir, const char *name, int *w, int *h)
{
    char p[1400], err[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "rb");
    if (!f) fail_msg("%s: cannot open", p);
    static uint8_t buf[1 << 20];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    uint8_t *rgb = NULL;
    if (sde_png_decode(buf, len, &rgb, w, h, err, sizeof err)) fail_msg("%s: %s", p, err);
    return rgb;
}

/* Generates p and compares with dir/peer within the acceptance target (max 3, mean 0.5 of 255). */
static void check(const sde_gen_params *p, const char *dir, const char *peer)
{
    sde_result res;
    char err[1024], path[1400];
    int rc = sde_generate(ge_engine, p, &res, err, sizeof err);
    if (rc != SDE_OK) fail_msg("sde_generate: %s", err);
    int maxd = 0;
    double meand;
    snprintf(path, sizeof path, "%s/%s", dir, peer);
    if (ge_compare_png_file(path, &res, &maxd, &meand, err, sizeof err)) fail_msg("%s", err);
    printf("9-channel %s: total %.2f s; image vs peer: max |delta| %d, mean |delta| %.4f (of 255)\n", peer,
           res.t_total, maxd, meand);
    assert_true(maxd <= 3);
    assert_true(meand <= 0.5);
    sde_result_free(&res);
}

/* The engine tells an inpainting checkpoint by its conv_in (9 input channels), not by the file name. */
static void test_detected(void **state)
{
    (void)state;
    sde_model_info in;
    sde_engine_info(ge_engine, &in);
    assert_int_equal(in.inpaint, 1);
    assert_string_equal(in.arch, "sd1");
}

static void test_inpaint(void **state)
{
    (void)state;
    char dir[1200];
    gu_golden_dir(dir, sizeof dir, "sd15", "inpaint9");
    int w, h, mw, mh;
    uint8_t *init = read_png(dir, "init.png", &w, &h);
    uint8_t *mask = read_png(dir, "mask.png", &mw, &mh);
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER);
    p.negative_prompt = "";
    p.steps = 6;
    p.init_rgb = init;
    p.init_w = w;
    p.init_h = h;
    p.strength = 1.f;
    p.mask = mask;
    p.mask_w = mw;
    p.mask_h = mh;
    check(&p, dir, "inpaint.png");
    free(mask);
    free(init);
}

/* No mask: an all-repaint mask, so the masked image is uniform grey (and still VAE-encoded). */
static void test_img2img(void **state)
{
    (void)state;
    char dir[1200];
    gu_golden_dir(dir, sizeof dir, "sd15", "inpaint9");
    int w, h;
    uint8_t *init = read_png(dir, "init.png", &w, &h);
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER);
    p.negative_prompt = "";
    p.steps = 8;
    p.init_rgb = init;
    p.init_w = w;
    p.init_h = h;
    p.strength = 0.6f;
    check(&p, dir, "img2img.png");
    free(init);
}

/* No init image: mask channel 1, masked-image latent 0. */
static void test_txt2img(void **state)
{
    (void)state;
    char dir[1200];
    gu_golden_dir(dir, sizeof dir, "sd15", "inpaint9");
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER_A);
    p.negative_prompt = "";
    p.seed = 7;
    p.cfg_scale = 5.f;
    check(&p, dir, "txt2img.png");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detected),
        cmocka_unit_test(test_inpaint),
        cmocka_unit_test(test_img2img),
        cmocka_unit_test(test_txt2img),
    };
    return cmocka_run_group_tests(tests, setup, ge_engine_teardown);
}
