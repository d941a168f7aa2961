/* test_golden_sd15_bf16.c: the opt-in bf16 path (precision bf16) on SD 1.5 with random full-size weights:
 * its images against stable-diffusion.cpp's goldens and against our float32 images, with the quality
 * figures (max and mean |delta|, PSNR) docs/performance.md quotes. Skipped without AVX512-BF16. */
#include "golden_util.h"

static int setup(void **state)
{
    (void)state;
    return ge_engine_setup("sd15");
}

typedef struct {
    int max_d;
    double mean_d, psnr;
} img_diff;

static img_diff diff_px(const uint8_t *a, const uint8_t *b, size_t n)
{
    img_diff d = {0, 0.0, 0.0};
    double sum = 0.0, sq = 0.0;
    for (size_t i = 0; i < n; i++) {
        int x = abs((int)a[i] - (int)b[i]);
        sum += x;
        sq += (double)x * x;
        if (x > d.max_d) d.max_d = x;
    }
    d.mean_d = sum / (double)n;
    d.psnr = sq > 0 ? 10.0 * log10(255.0 * 255.0 / (sq / (double)n)) : 99.0;
    return d;
}

static uint8_t *decode(const uint8_t *png, size_t len, int *w, int *h)
{
    uint8_t *px = NULL;
    char err[256];
    if (sde_png_decode(png, len, &px, w, h, err, sizeof err)) fail_msg("%s", err);
    return px;
}

static uint8_t *read_png(const char *path, int *w, int *h)
{
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s: cannot open", path);
    static uint8_t buf[1 << 22];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return decode(buf, len, w, h);
}

/* Runs p in fp32 and in bf16; prints bf16 against fp32 and, with a peer image, both against the peer;
 * checks the bf16 run reports bf16, differs from fp32, and stays within the bounds given. */
static void check(const char *label, sde_gen_params p, const char *peer_png, int max_vs_peer, double psnr_min)
{
    sde_result r32, r16;
    char err[1024];
    p.precision = SDE_PREC_FP32;
    if (sde_generate(ge_engine, &p, &r32, err, sizeof err) != SDE_OK) fail_msg("fp32: %s", err);
    p.precision = SDE_PREC_BF16;
    if (sde_generate(ge_engine, &p, &r16, err, sizeof err) != SDE_OK) fail_msg("bf16: %s", err);
    assert_int_equal(r32.precision, SDE_PREC_FP32);
    assert_int_equal(r16.precision, SDE_PREC_BF16);
    int w, h, w2, h2;
    uint8_t *a = decode(r32.png, r32.png_len, &w, &h), *b = decode(r16.png, r16.png_len, &w2, &h2);
    assert_int_equal(w, w2);
    assert_int_equal(h, h2);
    const size_t n = (size_t)w * h * 3;
    img_diff bf = diff_px(a, b, n);
    printf("%-28s bf16 vs fp32: max %3d mean %.3f PSNR %.1f dB; sample fp32 %.2f s, bf16 %.2f s\n", label,
           bf.max_d, bf.mean_d, bf.psnr, r32.t_sample, r16.t_sample);
    assert_true(memcmp(a, b, n) != 0); /* the bf16 kernels ran */
    assert_true(bf.psnr >= psnr_min);
    if (peer_png) {
        int pw, ph;
        uint8_t *c = read_png(peer_png, &pw, &ph);
        assert_int_equal(pw, w);
        assert_int_equal(ph, h);
        img_diff d32 = diff_px(a, c, n), d16 = diff_px(b, c, n);
        printf("%-28s vs peer: fp32 max %d mean %.3f PSNR %.1f dB; bf16 max %d mean %.3f PSNR %.1f dB\n", "",
               d32.max_d, d32.mean_d, d32.psnr, d16.max_d, d16.mean_d, d16.psnr);
        assert_true(d16.max_d <= max_vs_peer);
        assert_true(d16.psnr >= psnr_min);
        free(c);
    }
    free(a);
    free(b);
    sde_result_free(&r32);
    sde_result_free(&r16);
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
