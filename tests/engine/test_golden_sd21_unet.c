/* test_golden_sd21_unet.c: the SD 2.1 UNet (Linear proj_in/out, 64-wide heads, 1024-wide context, v-pred
 * outputs) on the random checkpoint against stable-diffusion.cpp (shared/golden/sd21-rand/euler). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "ops.h"
#include "unet.h"

/* Tolerance: the peer runs ggml in f16-ish precision (f16 weights, f16 im2col, f32 accumulation), we in
 * fp32 from the same f16 weights. Observed max |ours - peer| / max |peer|: step 1 cond 4.9e-4, uncond
 * 8.0e-4; step 4 cond 6.7e-4, uncond 7.3e-4; mean |diff| / max |peer| 1.3e-4 to 2.1e-4. As for SD 1.5 we
 * allow 3e-3 on the max and 6e-4 on the mean; 8 heads instead of 64-wide ones, or a transposed Linear
 * proj_in, move the output by 1e-1 or more of its range. */
#define REL_TOL 3e-3
#define MEAN_TOL 6e-4

static sde_ckpt *ck;
static sde_unet *un;
static char gold_dir[1024];

static float *load_f32(const char *name, size_t n)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.f32", gold_dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    float *p = malloc(n * sizeof *p);
    assert_non_null(p);
    size_t got = fread(p, sizeof *p, n, f);
    fclose(f);
    if (got != n)
        fail_msg("%s: %zu of %zu floats", path, got, n);
    return p;
}

static int setup(void **state)
{
    (void)state;
    const char *shared = getenv("SDW_SHARED_DIR"), *build = getenv("SDW_BUILD_DIR");
    snprintf(gold_dir, sizeof gold_dir, "%s/golden/sd21-rand/euler", shared ? shared : "../shared");
    char model[1024], err[512];
    snprintf(model, sizeof model, "%s/tmp/randsd21-s1-f16.safetensors", build ? build : ".");
    if (sde_ckpt_open(model, &ck, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    sde_unet_config cfg;
    if (sde_unet_config_infer(ck, &cfg, err, sizeof err) || sde_unet_build(ck, &cfg, &un, err, sizeof err) ||
        sde_unet_reserve(un, 2, 8, 8, 77, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sde_unet_free(un);
    sde_ckpt_free(ck);
    return 0;
}

static void test_config(void **state)
{
    (void)state;
    sde_unet_config cfg;
    char err[256];
    assert_int_equal(sde_unet_config_infer(ck, &cfg, err, sizeof err), 0);
    assert_int_equal(cfg.in_channels, 4);
    assert_int_equal(cfg.out_channels, 4);
    assert_int_equal(cfg.model_channels, 320);
    assert_int_equal(cfg.n_levels, 4);
    const int mult[4] = {1, 2, 4, 4}, attn[4] = {1, 1, 1, 0};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(cfg.channel_mult[i], mult[i]);
        assert_int_equal(cfg.attn_levels[i], attn[i]);
    }
    assert_int_equal(cfg.num_res_blocks, 2);
    assert_int_equal(cfg.num_heads, -1);
    assert_int_equal(cfg.head_dim, 64);
    assert_int_equal(cfg.context_dim, 1024);
    assert_int_equal(cfg.linear_proj, 1);
    assert_int_equal(cfg.transformer_depth, 1);
    assert_int_equal(cfg.groups, 32);
    double macs = sde_unet_flops(un, 64, 64, 77);
    assert_true(macs > 3.3e11 && macs < 4.5e11);
}

static void compare(const char *what, const float *got, const float *want, size_t n)
{
    double mx = 0, md = 0, sd = 0;
    for (size_t i = 0; i < n; i++) {
        mx = fabs(want[i]) > mx ? fabs(want[i]) : mx;
        double d = fabs((double)got[i] - want[i]);
        if (isnan(d))
            d = INFINITY;
        md = d > md ? d : md;
        sd += d;
    }
    printf("%s: max|peer| %.4f  max|diff| %.3g (%.2e rel)  mean|diff| %.3g\n", what, mx, md, md / mx, sd / n);
    if (!(md <= REL_TOL * mx))
        fail_msg("%s: max |diff| %g exceeds %g * max |peer| %g", what, md, REL_TOL, mx);
    if (!(sd / n <= MEAN_TOL * mx))
        fail_msg("%s: mean |diff| %g exceeds %g * max |peer| %g", what, sd / n, MEAN_TOL, mx);
}

static void run_step(int step, float t)
{
    const size_t nl = 4 * 8 * 8, nc = 77 * 1024;
    char name[64];
    snprintf(name, sizeof name, "step%02d_unet_in", step);
    float *xin = load_f32(name, nl);
    float *cond = load_f32("cond_crossattn", nc), *unc = load_f32("uncond_crossattn", nc);
    snprintf(name, sizeof name, "step%02d_eps_cond", step);
    float *ec = load_f32(name, nl);
    snprintf(name, sizeof name, "step%02d_eps_uncond", step);
    float *eu = load_f32(name, nl);
    float x2[2 * 4 * 64], ctx[2 * 77 * 1024], ts[2] = {t, t}, out[2 * 4 * 64];
    memcpy(x2, xin, sizeof(float) * nl);
    memcpy(x2 + nl, xin, sizeof(float) * nl);
    memcpy(ctx, cond, sizeof(float) * nc);
    memcpy(ctx + nc, unc, sizeof(float) * nc);
    sde_unet_forward(un, x2, 2, 8, 8, ts, ctx, 77, out);
    snprintf(name, sizeof name, "step %d cond", step);
    compare(name, out, ec, nl);
    snprintf(name, sizeof name, "step %d uncond", step);
    compare(name, out + nl, eu, nl);
    /* batch of one gives the same answer as the batch of two (the batched GEMMs mix nothing) */
    float one[4 * 64];
    ts[0] = t;
    sde_unet_forward(un, x2 + nl, 1, 8, 8, ts, ctx + nc, 77, one);
    for (size_t i = 0; i < nl; i++)
        assert_true(fabsf(one[i] - out[nl + i]) <= 1e-5f * (1.0f + fabsf(one[i])));
    free(xin), free(cond), free(unc), free(ec), free(eu);
}

static void test_step1_t999(void **state)
{
    (void)state;
    run_step(1, 999.0f);
}

static void test_step4_t0(void **state)
{
    (void)state;
    run_step(4, 0.0f);
}

static void test_unreserved_shape(void **state)
{
    (void)state;
    /* larger than reserved: NaN output rather than writing past the activations */
    float x[3 * 4 * 64] = {0}, ts[3] = {1, 1, 1}, ctx[3 * 77 * 1024], out[3 * 4 * 64];
    memset(ctx, 0, sizeof ctx);
    sde_unet_forward(un, x, 3, 8, 8, ts, ctx, 77, out);
    assert_true(isnan(out[0]) && isnan(out[3 * 4 * 64 - 1]));
    char err[256];
    sde_unet *tmp = NULL;
    sde_unet_config cfg;
    assert_int_equal(sde_unet_config_infer(ck, &cfg, err, sizeof err), 0);
    cfg.context_dim = 768; /* shapes no longer match the file: the error names the tensor */
    assert_int_equal(sde_unet_build(ck, &cfg, &tmp, err, sizeof err), -1);
    assert_null(tmp);
    assert_non_null(strstr(err, "attn2.to_k.weight"));
    assert_int_equal(sde_unet_reserve(un, 1, 7, 8, 77, err, sizeof err), -1); /* not a multiple of 8 */
    assert_non_null(strstr(err, "multiple"));
    assert_int_equal(sde_unet_reserve(un, 2, 8, 8, 77, err, sizeof err), 0);
}

int main(void)
{
    sde_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_step1_t999),
        cmocka_unit_test(test_step4_t0),
        cmocka_unit_test(test_unreserved_shape),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
