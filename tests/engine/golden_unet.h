/* golden_unet.h: the UNet golden test of test_golden_sd15_unet.c and test_golden_sd21_unet.c, given their
 * gu_unet_case: config, cond+uncond as one batch of 2 against the peer at two steps, shape errors. */
#ifndef SDW_TEST_GOLDEN_UNET_H
#define SDW_TEST_GOLDEN_UNET_H

#include "golden_util.h"

#include "checkpoint.h"
#include "ops.h"
#include "unet.h"

/** What differs between the architectures' UNet golden tests (each test file justifies its tolerances). */
typedef struct {
    const char *arch;  /* "sd15" or "sd21": the checkpoint fixture and tests/data/golden/<arch>-rand/euler */
    int context_dim;   /* width of the text context: 768 or 1024 */
    int wrong_context; /* a context width whose attn2.to_k shapes the file does not have */
    double max_rel;    /* max |ours - peer| allowed, as a fraction of max |peer| */
    double mean_rel;   /* mean |ours - peer| allowed, as a fraction of max |peer| */
    int num_heads;     /* expected config: 8 heads (SD 1.x), or -1 when the head width is fixed */
    int head_dim;      /* expected head width: 64 (SD 2.x); 0: not checked */
    int linear_proj;   /* expected: 1 for SD 2.x's Linear proj_in/proj_out, 0 for 1x1 convolutions */
} gu_unet_case;

/* The group fixture: the checkpoint, the UNet reserved for batch 2 at 8x8 latents and 77 tokens. */
static const gu_unet_case *gu_uc;
static sde_ckpt *gu_ck;
static sde_unet *gu_un;
static char gu_gold[1200];

static int gu_unet_setup(void **state)
{
    (void)state;
    gu_golden_dir(gu_gold, sizeof gu_gold, gu_uc->arch, "euler");
    char model[1200], err[512];
    gu_fixture_path(model, sizeof model, gu_uc->arch);
    sde_unet_config cfg;
    if (sde_ckpt_open(model, &gu_ck, err, sizeof err) ||
        sde_unet_config_infer(gu_ck, &cfg, err, sizeof err) ||
        sde_unet_build(gu_ck, &cfg, &gu_un, err, sizeof err) ||
        sde_unet_reserve(gu_un, 2, 8, 8, 77, err, sizeof err))
        return gu_setup_failed(err);
    return 0;
}

static int gu_unet_teardown(void **state)
{
    (void)state;
    sde_unet_free(gu_un);
    sde_ckpt_free(gu_ck);
    return 0;
}

/* The inferred config: what SD 1.5 and 2.x share (4 levels of 320 x {1,2,4,4} channels with attention on the
 * first three, 2 res blocks, depth-1 transformers, 32 groups, ~805 GFLOP per 512x512 image: the known SD 1.5
 * figure, x2 for multiply-adds, which SD 2.1 keeps) and the case's heads, context and projections. */
static void test_config(void **state)
{
    (void)state;
    sde_unet_config cfg;
    char err[256];
    assert_int_equal(sde_unet_config_infer(gu_ck, &cfg, err, sizeof err), 0);
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
    assert_int_equal(cfg.num_heads, gu_uc->num_heads);
    if (gu_uc->head_dim) assert_int_equal(cfg.head_dim, gu_uc->head_dim);
    assert_int_equal(cfg.context_dim, gu_uc->context_dim);
    assert_int_equal(cfg.linear_proj, gu_uc->linear_proj);
    assert_int_equal(cfg.transformer_depth, 1);
    assert_int_equal(cfg.groups, 32);
    double macs = sde_unet_flops(gu_un, 64, 64, 77);
    assert_true(macs > 3.3e11 && macs < 4.5e11);
}

/** Fails the test unless got is within the case's tolerances of the peer's want. */
static void gu_unet_compare(const char *what, const float *got, const float *want, size_t n)
{
    gu_diff s = gu_diff_of(got, want, n);
    printf("%s: max|peer| %.4f  max|diff| %.3g (%.2e rel)  mean|diff| %.3g\n", what, s.scale, s.max_abs,
           s.max_abs / s.scale, s.mean_abs);
    if (!(s.max_abs <= gu_uc->max_rel * s.scale))
        fail_msg("%s: max |diff| %g exceeds %g * max |peer| %g", what, s.max_abs, gu_uc->max_rel, s.scale);
    if (!(s.mean_abs <= gu_uc->mean_rel * s.scale))
        fail_msg("%s: mean |diff| %g exceeds %g * max |peer| %g", what, s.mean_abs, gu_uc->mean_rel, s.scale);
}

/** The peer's step (1-based) at timestep t: its UNet input with cond and uncond context as one batch of 2. */
static void gu_unet_step(int step, float t)
{
    const size_t nl = 4 * 8 * 8, nc = (size_t)77 * gu_uc->context_dim;
    char name[64];
    snprintf(name, sizeof name, "step%02d_unet_in", step);
    float *xin = gu_load_f32(gu_gold, name, nl);
    float *cond = gu_load_f32(gu_gold, "cond_crossattn", nc),
          *unc = gu_load_f32(gu_gold, "uncond_crossattn", nc);
    snprintf(name, sizeof name, "step%02d_eps_cond", step);
    float *ec = gu_load_f32(gu_gold, name, nl);
    snprintf(name, sizeof name, "step%02d_eps_uncond", step);
    float *eu = gu_load_f32(gu_gold, name, nl);
    float x2[2 * 4 * 64], ts[2] = {t, t}, out[2 * 4 * 64];
    float *ctx = malloc(sizeof(float) * 2 * nc);
    assert_non_null(ctx);
    memcpy(x2, xin, sizeof(float) * nl);
    memcpy(x2 + nl, xin, sizeof(float) * nl);
    memcpy(ctx, cond, sizeof(float) * nc);
    memcpy(ctx + nc, unc, sizeof(float) * nc);
    sde_unet_forward(gu_un, x2, 2, 8, 8, ts, ctx, 77, out);
    snprintf(name, sizeof name, "step %d cond", step);
    gu_unet_compare(name, out, ec, nl);
    snprintf(name, sizeof name, "step %d uncond", step);
    gu_unet_compare(name, out + nl, eu, nl);
    /* batch of one gives the same answer as the batch of two (the batched GEMMs mix nothing) */
    float one[4 * 64];
    ts[0] = t;
    sde_unet_forward(gu_un, x2 + nl, 1, 8, 8, ts, ctx + nc, 77, one);
    for (size_t i = 0; i < nl; i++)
        assert_true(fabsf(one[i] - out[nl + i]) <= 1e-5f * (1.0f + fabsf(one[i])));
    free(xin), free(cond), free(unc), free(ec), free(eu), free(ctx);
}

static void test_step1_t999(void **state)
{
    (void)state;
    gu_unet_step(1, 999.0f);
}

static void test_step4_t0(void **state)
{
    (void)state;
    gu_unet_step(4, 0.0f);
}

static void test_unreserved_shape(void **state)
{
    (void)state;
    /* larger than reserved: NaN output rather than writing past the activations */
    float x[3 * 4 * 64] = {0}, ts[3] = {1, 1, 1}, out[3 * 4 * 64];
    float *ctx = calloc((size_t)3 * 77 * gu_uc->context_dim, sizeof(float));
    assert_non_null(ctx);
    sde_unet_forward(gu_un, x, 3, 8, 8, ts, ctx, 77, out);
    free(ctx);
    assert_true(isnan(out[0]) && isnan(out[3 * 4 * 64 - 1]));
    char err[256];
    sde_unet *tmp = NULL;
    sde_unet_config cfg;
    assert_int_equal(sde_unet_config_infer(gu_ck, &cfg, err, sizeof err), 0);
    cfg.context_dim = gu_uc->wrong_context; /* shapes no longer match the file: the error names the tensor */
    assert_int_equal(sde_unet_build(gu_ck, &cfg, &tmp, err, sizeof err), -1);
    assert_null(tmp);
    assert_non_null(strstr(err, "attn2.to_k.weight"));
    assert_int_equal(sde_unet_reserve(gu_un, 1, 8, 1025, 77, err, sizeof err),
                     -1); /* too wide (odd sizes are fine) */
    assert_non_null(strstr(err, "bad reservation"));
    assert_int_equal(sde_unet_reserve(gu_un, 2, 8, 8, 77, err, sizeof err), 0);
}

/** The whole test program for case c (its main()). */
static int gu_unet_main(const gu_unet_case *c)
{
    gu_uc = c;
    sde_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_step1_t999),
        cmocka_unit_test(test_step4_t0),
        cmocka_unit_test(test_unreserved_shape),
    };
    return cmocka_run_group_tests(tests, gu_unet_setup, gu_unet_teardown);
}

#endif
