/* golden_bf16.h: the bf16 golden tests' comparison (test_golden_sd15_bf16.c, test_golden_sd21_bf16.c): a
 * job run in fp32 and in bf16, the two images against each other and against the peer's. */
#ifndef SDW_GOLDEN_BF16_H
#define SDW_GOLDEN_BF16_H

#include "golden_util.h"

typedef struct {
    int max_d;
    double mean_d, psnr;
} img_diff;

static inline img_diff diff_px(const uint8_t *a, const uint8_t *b, size_t n)
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

static inline uint8_t *decode(const uint8_t *png, size_t len, int *w, int *h)
{
    uint8_t *px = NULL;
    char err[256];
    if (sde_png_decode(png, len, &px, w, h, err, sizeof err)) fail_msg("%s", err);
    return px;
}

static inline uint8_t *read_png(const char *path, int *w, int *h)
{
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s: cannot open", path);
    static uint8_t buf[1 << 22];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return decode(buf, len, w, h);
}

/* Runs p in fp32 and in bf16; prints bf16 against fp32 and, with a peer image, both against the peer;
 * checks the bf16 run reports bf16, differs from fp32, and stays within the bounds given. Skipped when the
 * engine runs on another backend than the CPU (SDW_TEST_BACKEND). */
static inline void check(const char *label, sde_gen_params p, const char *peer_png, int max_vs_peer,
                         double psnr_min)
{
    const char *be = golden_backend();
    if (be && strcmp(be, "cpu")) {
        printf("%s: skipped: the bf16 path is the CPU's (SDW_TEST_BACKEND=%s)\n", label, be);
        skip();
    }
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

#endif
