/* test_golden_sd15_img2img.c: img2img and inpainting (4-channel model + mask) on the random SD 1.5 checkpoint
 * must reproduce stable-diffusion.cpp's images (tests/data/golden/sd15-rand/{img2img,inpaint}/README.md). */
#include "golden_util.h"

static int setup(void **state)
{
    (void)state;
    return ge_engine_setup("sd15");
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

/* Generates p and compares with dir/image.png within the acceptance target (max 3, mean 0.5 of 255). */
static void check(const sde_gen_params *p, const char *dir, const char *label)
{
    sde_result res;
    char err[1024];
    int rc = sde_generate(ge_engine, p, &res, err, sizeof err);
    if (rc != SDE_OK) fail_msg("sde_generate: %s", err);
    int maxd = 0;
    double meand;
    if (ge_compare_png(dir, &res, &maxd, &meand, err, sizeof err)) fail_msg("%s", err);
    printf("%s: total %.2f s; image vs peer: max |delta| %d, mean |delta| %.4f (of 255)\n", label,
           res.t_total, maxd, meand);
    assert_true(maxd <= 3);
    assert_true(meand <= 0.5);
    sde_result_free(&res);
}

static void test_img2img(void **state)
{
    (void)state;
    char dir[1200];
    gu_golden_dir(dir, sizeof dir, "sd15", "img2img");
    int w, h;
    uint8_t *init = read_png(dir, "init.png", &w, &h);
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER);
    p.negative_prompt = "";
    p.steps = 8;
    p.init_rgb = init;
    p.init_w = w;
    p.init_h = h;
    p.strength = 0.6f;
    check(&p, dir, "SD 1.5 img2img");
    free(init);
}

static void test_inpaint(void **state)
{
    (void)state;
    char dir[1200];
    gu_golden_dir(dir, sizeof dir, "sd15", "inpaint");
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
    check(&p, dir, "SD 1.5 inpaint");
    free(mask);
    free(init);
}

/* The size policy: an init image of another size is resized to the requested one, so a 2x upscaled
 * init.png gives nearly the img2img golden (bilinear of a nearest 2x doubling is close to the original). */
static void test_img2img_resized(void **state)
{
    (void)state;
    char dir[1200];
    gu_golden_dir(dir, sizeof dir, "sd15", "img2img");
    int w, h;
    uint8_t *init = read_png(dir, "init.png", &w, &h);
    uint8_t *big = malloc((size_t)w * h * 12);
    for (int y = 0; y < 2 * h; y++)
        for (int x = 0; x < 2 * w; x++)
            memcpy(big + ((size_t)y * 2 * w + x) * 3, init + ((size_t)(y / 2) * w + x / 2) * 3, 3);
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER);
    p.negative_prompt = "";
    p.steps = 8;
    p.init_rgb = big;
    p.init_w = 2 * w;
    p.init_h = 2 * h;
    p.strength = 0.6f;
    sde_result res;
    char err[1024];
    assert_int_equal(sde_generate(ge_engine, &p, &res, err, sizeof err), SDE_OK);
    assert_int_equal(res.width, 64);
    assert_int_equal(res.height, 64);
    int maxd = 0;
    double meand;
    assert_int_equal(ge_compare_png(dir, &res, &maxd, &meand, err, sizeof err), 0);
    printf("img2img from a 128x128 init: vs peer (64x64 init) max %d mean %.3f\n", maxd, meand);
    assert_true(meand <= 3.0);
    sde_result_free(&res);
    free(big);
    free(init);
}

static void test_validation(void **state)
{
    (void)state;
    uint8_t px[3 * 64 * 64] = {0};
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER);
    const char *field;
    char err[256];
    p.init_rgb = px;
    p.init_w = p.init_h = 64;
    p.strength = 0.f;
    assert_int_equal(sde_params_validate(&p, &field, err, sizeof err), -1);
    assert_string_equal(field, "strength");
    p.strength = 1.5f;
    assert_int_equal(sde_params_validate(&p, &field, err, sizeof err), -1);
    assert_string_equal(field, "strength");
    p.strength = 0.5f;
    assert_int_equal(sde_params_validate(&p, &field, err, sizeof err), 0);
    p.mask = px;
    p.mask_w = 32;
    p.mask_h = 64;
    assert_int_equal(sde_params_validate(&p, &field, err, sizeof err), -1);
    assert_string_equal(field, "mask");
    p.mask_w = 64;
    p.mask_blur = 65;
    assert_int_equal(sde_params_validate(&p, &field, err, sizeof err), -1);
    assert_string_equal(field, "mask_blur");
    p.init_rgb = NULL;
    p.mask_blur = 0;
    assert_int_equal(sde_params_validate(&p, &field, err, sizeof err), -1);
    assert_string_equal(field, "mask");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_img2img),
        cmocka_unit_test(test_inpaint),
        cmocka_unit_test(test_img2img_resized),
    };
    return cmocka_run_group_tests(tests, setup, ge_engine_teardown);
}
