/* test_sdxl_cond.c: the SDXL pieces that run small: size features, the adm vector's layout, the text
 * projection's orientation (OpenCLIP h @ P vs diffusers' Linear P^T), the f32 schedule and arch detection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "checkpoint.h"
#include "diffusers_names.h"
#include "sdxl_cond.h"
#include "st_test_writer.h"

/* e(t) against the formula in double: float rounding of t*f only */
static void test_size_embed(void **state)
{
    (void)state;
    float e[SDE_SDXL_EMB];
    sde_sdxl_size_embed(0.f, e);
    for (int i = 0; i < 128; i++) {
        assert_float_equal(e[i], 1.f, 0.f);
        assert_float_equal(e[128 + i], 0.f, 0.f);
    }
    const float ts[] = {64.f, 128.f, 1024.f};
    for (int k = 0; k < 3; k++) {
        sde_sdxl_size_embed(ts[k], e);
        for (int i = 0; i < 128; i++) {
            double a = ts[k] * exp(-log(10000.0) * i / 128.0);
            /* |t f| up to 1024: a float argument is good to ~1e-4 there */
            assert_float_equal(e[i], cos(a), 2e-4);
            assert_float_equal(e[128 + i], sin(a), 2e-4);
        }
    }
}

/* y = pooled | e(orig h) | e(orig w) | e(crop top) | e(crop left) | e(target h) | e(target w) */
static void test_adm_layout(void **state)
{
    (void)state;
    static float pooled[SDE_SDXL_POOLED], y[SDE_SDXL_ADM], e[SDE_SDXL_EMB];
    assert_int_equal(SDE_SDXL_ADM, 2816);
    for (int i = 0; i < SDE_SDXL_POOLED; i++)
        pooled[i] = (float)i * 0.5f - 3.f;
    sde_sdxl_sizes sz = {
        .orig_h = 768, .orig_w = 1024, .crop_top = 16, .crop_left = 32, .target_h = 128, .target_w = 192};
    sde_sdxl_adm(pooled, &sz, y);
    assert_memory_equal(y, pooled, sizeof pooled);
    const int v[6] = {768, 1024, 16, 32, 128, 192};
    for (int k = 0; k < 6; k++) {
        sde_sdxl_size_embed((float)v[k], e);
        assert_memory_equal(y + SDE_SDXL_POOLED + k * SDE_SDXL_EMB, e, sizeof e);
    }
}

/* h @ P with P [d][dp] equals the Linear form with the stored P^T [dp][d]; and a non-symmetric P tells the
 * two conventions apart (the random checkpoints' symmetric P cannot). */
static void test_projection_orientation(void **state)
{
    (void)state;
    enum { D = 3, DP = 2 };
    const float h[D] = {1.f, 2.f, -1.f};
    const float p[D * DP] = {1, 2, 3, 4, 5, 6};  /* P [3][2] */
    const float pt[DP * D] = {1, 3, 5, 2, 4, 6}; /* P^T [2][3] */
    float a[DP], b[DP], c[2 * 2];
    sde_sdxl_project(h, p, D, DP, 0, a);
    sde_sdxl_project(h, pt, D, DP, 1, b);
    assert_float_equal(a[0], 1 + 6 - 5, 0);
    assert_float_equal(a[1], 2 + 8 - 6, 0);
    assert_memory_equal(a, b, sizeof a);
    /* square and not symmetric: the two readings differ */
    const float q[4] = {1, 2, 0, 1}, h2[2] = {1, 1};
    sde_sdxl_project(h2, q, 2, 2, 0, c);
    sde_sdxl_project(h2, q, 2, 2, 1, c + 2);
    assert_float_equal(c[0], 1, 0);
    assert_float_equal(c[1], 3, 0);
    assert_float_equal(c[2], 3, 0);
    assert_float_equal(c[3], 1, 0);
}

/* float32 betas and product as the reference: monotone, first and last values of the scaled-linear schedule
 */
static void test_alphas_f32(void **state)
{
    (void)state;
    float ac[1000];
    sde_sdxl_alphas_f32(ac);
    assert_float_equal(ac[0], 1.f - 0.00085f, 1e-7);
    for (int i = 1; i < 1000; i++)
        assert_true(ac[i] < ac[i - 1]);
    assert_float_equal(ac[999], 0.0046601, 2e-6); /* the double product: 0.00466010 */
}

static int detect_file(const char *name, const stw_tensor *t, int n)
{
    const char *path = stw_path(stw_tmpdir, name);
    assert_int_equal(stw_write_tensors(path, t, n, NULL), 0);
    char err[512];
    sde_ckpt *c = NULL;
    assert_int_equal(sde_ckpt_open(path, &c, err, sizeof err), 0);
    int r = sde_sdxl_detect(c);
    sde_ckpt_free(c);
    return r;
}

/* SDXL by its tensors (label_emb and a bigG encoder in either layout), never by file name */
static void test_detect(void **state)
{
    (void)state;
    float w[4] = {0};
    stw_tensor xl[] = {
        {"model.diffusion_model.label_emb.0.0.weight", "F32", 2, {2, 2}, w, sizeof w},
        {"conditioner.embedders.1.model.token_embedding.weight", "F32", 2, {2, 2}, w, sizeof w},
    };
    assert_int_equal(detect_file("a.safetensors", xl, 2), 1);
    assert_int_equal(detect_file("sd_xl_base_1.0.safetensors", xl, 1), 0); /* no bigG: not SDXL */
    assert_int_equal(detect_file("b.safetensors", xl + 1, 1), 0);
    stw_tensor sd2[] = {
        {"model.diffusion_model.input_blocks.0.0.weight", "F32", 4, {1, 1, 2, 2}, w, sizeof w},
        {"cond_stage_model.model.token_embedding.weight", "F32", 2, {2, 2}, w, sizeof w},
    };
    assert_int_equal(detect_file("sdxl.safetensors", sd2, 2), 0);
    /* a diffusers folder's text_encoder_2 and UNet names map onto what detection looks for */
    char out[256];
    assert_int_equal(sde_dn_text2_to_ldm("text_model.embeddings.token_embedding.weight", out, sizeof out), 0);
    assert_string_equal(out,
                        "conditioner.embedders.1.transformer.text_model.embeddings.token_embedding.weight");
    assert_int_equal(sde_dn_text2_to_ldm("text_projection.weight", out, sizeof out), 0);
    assert_string_equal(out, "conditioner.embedders.1.transformer.text_projection.weight");
    assert_int_equal(sde_dn_text2_to_ldm("logit_scale", out, sizeof out), -1);
    stw_tensor dxl[] = {
        {"model.diffusion_model.label_emb.0.0.weight", "F32", 2, {2, 2}, w, sizeof w},
        {"conditioner.embedders.1.transformer.text_model.embeddings.token_embedding.weight",
         "F32",
         2,
         {2, 2},
         w,
         sizeof w},
    };
    assert_int_equal(detect_file("c.safetensors", dxl, 2), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_size_embed),
        cmocka_unit_test(test_adm_layout),
        cmocka_unit_test(test_projection_orientation),
        cmocka_unit_test(test_alphas_f32),
        cmocka_unit_test(test_detect),
    };
    return cmocka_run_group_tests(tests, stw_tmpdir_setup, stw_tmpdir_teardown);
}
