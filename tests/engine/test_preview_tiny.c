/* test_preview_tiny.c: live previews on the tiny model: one every preview_every steps, PNGs of at most
 * 256 px, getting closer (PSNR) to the final image as sampling goes on; their cost is printed. */
#include <math.h>

#include "golden_util.h"
#include "mkmodel.h"

static char g_model[1200];
static sde_engine *g_e;

static int setup(void **state)
{
    (void)state;
    return gu_tiny_engine("preview_tiny.safetensors", sde_mkmodel_tiny, g_model, sizeof g_model, &g_e);
}

static int teardown(void **state)
{
    (void)state;
    gu_tiny_engine_free(g_e, g_model);
    return 0;
}

#define MAXP 8
typedef struct {
    int n, steps[MAXP], w[MAXP], h[MAXP];
    uint8_t *rgb[MAXP];
} previews;

static void on_preview(void *ud, int step, int total, const uint8_t *png, size_t len, int w, int h)
{
    previews *p = ud;
    (void)total;
    char err[256];
    int dw, dh;
    if (p->n >= MAXP) return;
    assert_int_equal(sde_png_decode(png, len, &p->rgb[p->n], &dw, &dh, err, sizeof err), 0);
    assert_int_equal(dw, w);
    assert_int_equal(dh, h);
    p->steps[p->n] = step;
    p->w[p->n] = w;
    p->h[p->n] = h;
    p->n++;
}

/* PSNR of a (aw x ah) against b (bw x bh), both box-averaged to 8x8 first. */
static double psnr8(const uint8_t *a, int aw, int ah, const uint8_t *b, int bw, int bh)
{
    double se = 0;
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++)
            for (int c = 0; c < 3; c++) {
                double sa = 0, sb = 0;
                int na = 0, nb = 0;
                for (int yy = y * ah / 8; yy < (y + 1) * ah / 8; yy++)
                    for (int xx = x * aw / 8; xx < (x + 1) * aw / 8; xx++, na++)
                        sa += a[((size_t)yy * aw + xx) * 3 + c];
                for (int yy = y * bh / 8; yy < (y + 1) * bh / 8; yy++)
                    for (int xx = x * bw / 8; xx < (x + 1) * bw / 8; xx++, nb++)
                        sb += b[((size_t)yy * bw + xx) * 3 + c];
                double d = sa / na - sb / nb;
                se += d * d;
            }
    double mse = se / (8 * 8 * 3);
    return mse > 0 ? 10 * log10(255.0 * 255.0 / mse) : 99;
}

static void test_previews(void **state)
{
    (void)state;
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER);
    p.steps = 20;
    sde_result plain, with;
    char err[512];
    assert_int_equal(sde_generate(g_e, &p, &plain, err, sizeof err), SDE_OK);
    previews pv = {0};
    p.preview_every = 5;
    p.preview = on_preview;
    p.ud = &pv;
    assert_int_equal(sde_generate(g_e, &p, &with, err, sizeof err), SDE_OK);
    /* previews do not change the image */
    assert_true(plain.png_len == with.png_len && !memcmp(plain.png, with.png, with.png_len));
    assert_int_equal(pv.n, 4);
    uint8_t *fin;
    int fw, fh;
    assert_int_equal(sde_png_decode(with.png, with.png_len, &fin, &fw, &fh, err, sizeof err), 0);
    double first = 0, last = 0;
    for (int i = 0; i < pv.n; i++) {
        assert_int_equal(pv.steps[i], 5 * (i + 1));
        assert_true(pv.w[i] <= 256 && pv.h[i] <= 256 && (pv.w[i] == 256 || pv.h[i] == 256));
        double q = psnr8(pv.rgb[i], pv.w[i], pv.h[i], fin, fw, fh);
        printf("preview at step %d: %dx%d, PSNR vs the final image (8x8) %.2f dB\n", pv.steps[i], pv.w[i],
               pv.h[i], q);
        if (i == 0) first = q;
        last = q;
        free(pv.rgb[i]);
    }
    printf("preview overhead: %.4f s for %d previews (sampling %.3f s with, %.3f s without)\n",
           with.t_preview, pv.n, with.t_sample, plain.t_sample);
    /* the tiny model's VAE is random, so the linear map says little about colours; what must hold is that
     * the previews settle as the latent does: the last one is at least as close as the first */
    assert_true(last >= first);
    free(fin);
    sde_result_free(&plain);
    sde_result_free(&with);

    const char *field;
    p.preview_every = -1;
    assert_int_equal(sde_params_validate(&p, &field, err, sizeof err), -1);
    assert_string_equal(field, "preview_every");
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_previews)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
