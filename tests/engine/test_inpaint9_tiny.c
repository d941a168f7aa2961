/* test_inpaint9_tiny.c: a tiny 9-channel inpainting model: detected from conv_in, the extra UNet input
 * (latent mask, masked-image latent) laid out as the peer's for a mask, no mask and no init image, and
 * deterministic. The pixel match with the peer is test_golden_sd15_inpaint9's. */
#include "golden_util.h"
#include "mkmodel.h"

static char g_model[1200];
static sde_engine *g_e;

static int setup(void **state)
{
    (void)state;
    return gu_tiny_engine("inpaint9_tiny.safetensors", sde_mkmodel_tiny_inpaint, g_model, sizeof g_model,
                          &g_e);
}

static int teardown(void **state)
{
    (void)state;
    gu_tiny_engine_free(g_e, g_model);
    return 0;
}

/* The traced concat of the latest generation. */
typedef struct {
    float v[5 * 8 * 8];
    int seen;
} tap;

static void on_trace(void *ud, const char *name, const float *d, size_t n)
{
    tap *t = ud;
    if (strcmp(name, "concat")) return;
    assert_int_equal(n, 5 * 8 * 8);
    memcpy(t->v, d, sizeof t->v);
    t->seen++;
}

static sde_result gen(const sde_gen_params *p, tap *t)
{
    sde_result r;
    char err[1024];
    memset(t, 0, sizeof *t);
    sde_engine_set_trace(g_e, on_trace, t);
    if (sde_generate(g_e, p, &r, err, sizeof err) != SDE_OK) fail_msg("sde_generate: %s", err);
    sde_engine_set_trace(g_e, NULL, NULL);
    return r;
}

static void test_detected(void **state)
{
    (void)state;
    sde_model_info in;
    sde_engine_info(g_e, &in);
    assert_int_equal(in.inpaint, 1);
}

static void test_inputs(void **state)
{
    (void)state;
    static uint8_t init[64 * 64 * 3], mask[64 * 64 * 3];
    for (int y = 0; y < 64; y++)
        for (int x = 0; x < 64; x++) {
            uint8_t *p = init + (y * 64 + x) * 3;
            p[0] = (uint8_t)(4 * x), p[1] = (uint8_t)(4 * y), p[2] = 128;
            /* repaint a rectangle that covers part of latent cells 2 and 5 in x, 3 in y */
            memset(mask + (y * 64 + x) * 3, x >= 20 && x < 41 && y >= 24 && y < 30 ? 255 : 0, 3);
        }
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER);
    tap t;

    /* text-to-image: mask 1, masked-image latent 0 */
    sde_result a = gen(&p, &t);
    assert_int_equal(t.seen, 1);
    for (int i = 0; i < 64; i++)
        assert_float_equal(t.v[i], 1.f, 0.f);
    for (int i = 64; i < 5 * 64; i++)
        assert_float_equal(t.v[i], 0.f, 0.f);

    /* a mask: latent cell 1 when any of its pixels is, the rest 0; the masked image encodes to something */
    p.init_rgb = init;
    p.init_w = p.init_h = 64;
    p.strength = 1.f;
    p.mask = mask;
    p.mask_w = p.mask_h = 64;
    sde_result b = gen(&p, &t);
    assert_int_equal(t.seen, 1);
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++)
            assert_float_equal(t.v[y * 8 + x], y == 3 && x >= 2 && x <= 5 ? 1.f : 0.f, 0.f);
    float masked[4 * 64];
    memcpy(masked, t.v + 64, sizeof masked);
    double mag = 0;
    for (int i = 0; i < 4 * 64; i++)
        mag += fabs(masked[i]);
    assert_true(mag > 0);

    /* the same request again: the same bytes */
    sde_result b2 = gen(&p, &t);
    assert_int_equal(b.png_len, b2.png_len);
    assert_memory_equal(b.png, b2.png, b.png_len);

    /* no mask: all repaint, so the masked image is uniform grey: another latent than with the mask */
    p.mask = NULL;
    sde_result c = gen(&p, &t);
    for (int i = 0; i < 64; i++)
        assert_float_equal(t.v[i], 1.f, 0.f);
    double diff = 0;
    for (int i = 0; i < 4 * 64; i++)
        diff += fabs(t.v[64 + i] - masked[i]);
    assert_true(diff > 0);
    sde_result_free(&a);
    sde_result_free(&b);
    sde_result_free(&b2);
    sde_result_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detected),
        cmocka_unit_test(test_inputs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
