/* test_golden_sd15_batch.c: a batch of 2 (euler_a, so per-step noise) on the random SD 1.5 checkpoint must
 * reproduce stable-diffusion.cpp's -b 2 images, seeds 42 and 43 (tests/data/golden/sd15-rand/batch/). */
#include "golden_util.h"

static int setup(void **state)
{
    (void)state;
    return ge_engine_setup("sd15");
}

/* max and mean |delta| of png against the peer's file dir/name; fails the test when either is unreadable */
static void compare(const char *dir, const char *name, const sde_image *im, int *max_d, double *mean_d)
{
    char p[1400], err[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "rb");
    if (!f) fail_msg("%s: cannot open", p);
    static uint8_t buf[1 << 20];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    uint8_t *a = NULL, *b = NULL;
    int aw, ah, bw, bh;
    if (sde_png_decode(buf, len, &a, &aw, &ah, err, sizeof err) ||
        sde_png_decode(im->png, im->png_len, &b, &bw, &bh, err, sizeof err))
        fail_msg("%s: %s", p, err);
    assert_int_equal(aw, bw);
    assert_int_equal(ah, bh);
    size_t n = (size_t)aw * ah * 3;
    long sum = 0;
    *max_d = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        sum += d;
        *max_d = d > *max_d ? d : *max_d;
    }
    *mean_d = (double)sum / (double)n;
    free(a);
    free(b);
}

static void test_batch_golden(void **state)
{
    (void)state;
    char dir[1200];
    gu_golden_dir(dir, sizeof dir, "sd15", "batch");
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER_A);
    p.width = p.height = 128;
    p.n_images = 2;
    sde_result res;
    char err[1024];
    if (sde_generate(ge_engine, &p, &res, err, sizeof err) != SDE_OK) fail_msg("sde_generate: %s", err);
    assert_int_equal(res.n_images, 2);
    for (int i = 0; i < 2; i++) {
        char name[32];
        int maxd;
        double meand;
        snprintf(name, sizeof name, "image_%d.png", i);
        compare(dir, name, &res.images[i], &maxd, &meand);
        printf("SD 1.5 batch of 2, image %d (seed %llu) vs peer: max |delta| %d, mean %.4f (of 255); total "
               "%.2f s\n",
               i, (unsigned long long)res.images[i].seed, maxd, meand, res.t_total);
        assert_true(res.images[i].seed == 42u + (unsigned)i);
        assert_true(maxd <= 3);
        assert_true(meand <= 0.5);
    }
    sde_result_free(&res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_batch_golden)};
    return cmocka_run_group_tests(tests, setup, ge_engine_teardown);
}
