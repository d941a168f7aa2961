/* test_batch_tiny.c: batches (n_images) on a freshly written tiny model: image i of a batch is the image a
 * single job with seed + i makes, batched or image by image, for plain, ancestral and Brownian samplers. */
#include "golden_util.h"
#include "mkmodel.h"
#include "png_text_reader.h"

static char g_model[1200];
static sde_engine *g_e;

static int setup(void **state)
{
    (void)state;
    return gu_tiny_engine("batch_tiny.safetensors", sde_mkmodel_tiny, g_model, sizeof g_model, &g_e);
}

static int teardown(void **state)
{
    (void)state;
    gu_tiny_engine_free(g_e, g_model);
    return 0;
}

static void gen_ok(const sde_gen_params *p, sde_result *r)
{
    char err[1024];
    int rc = sde_generate(g_e, p, r, err, sizeof err);
    if (rc != SDE_OK) fail_msg("sde_generate: %d %s", rc, err);
    int n = p->n_images > 1 ? p->n_images : 1;
    assert_int_equal(r->n_images, n);
    assert_non_null(r->images);
    assert_ptr_equal(r->png, r->images[0].png);
    assert_true(r->png_len == r->images[0].png_len);
}

/* The largest per-channel difference of two PNGs of the same size. */
static int png_maxdiff(const uint8_t *a, size_t la, const uint8_t *b, size_t lb)
{
    uint8_t *pa = NULL, *pb = NULL;
    int wa, ha, wb, hb;
    char err[256];
    if (sde_png_decode(a, la, &pa, &wa, &ha, err, sizeof err) ||
        sde_png_decode(b, lb, &pb, &wb, &hb, err, sizeof err))
        fail_msg("decode: %s", err);
    assert_int_equal(wa, wb);
    assert_int_equal(ha, hb);
    int m = 0;
    for (size_t i = 0; i < (size_t)wa * ha * 3; i++) {
        int d = abs((int)pa[i] - (int)pb[i]);
        m = d > m ? d : m;
    }
    free(pa);
    free(pb);
    return m;
}

/* n images in one job against n single jobs with seeds seed..seed+n-1: within 1/255 each, and distinct. */
static void check_batch_vs_singles(sde_gen_params p, int n)
{
    sde_result batch;
    p.n_images = n;
    gen_ok(&p, &batch);
    for (int i = 0; i < n; i++) {
        sde_gen_params one = p;
        one.n_images = 0;
        one.seed = p.seed + (uint64_t)i;
        sde_result r;
        gen_ok(&one, &r);
        assert_true(batch.images[i].seed == one.seed);
        int d = png_maxdiff(batch.images[i].png, batch.images[i].png_len, r.png, r.png_len);
        print_message("%s mem %d MiB: image %d vs single seed %llu: max |delta| %d\n",
                      sde_sampler_name(p.sampler), p.batch_mem_mb, i, (unsigned long long)one.seed, d);
        assert_true(d <= 1);
        /* its own seed in the parameters text */
        char *txt = NULL, want[64];
        assert_int_equal(tpng_text_get(batch.images[i].png, batch.images[i].png_len, "parameters", &txt), 0);
        snprintf(want, sizeof want, "Seed: %llu,", (unsigned long long)one.seed);
        assert_non_null(strstr(txt, want));
        free(txt);
        sde_result_free(&r);
        if (i)
            assert_true(png_maxdiff(batch.images[i].png, batch.images[i].png_len, batch.images[0].png,
                                    batch.images[0].png_len) > 1);
    }
    sde_result_free(&batch);
    assert_null(batch.png);
    assert_null(batch.images);
    assert_int_equal(batch.n_images, 0);
}

static void test_batch_matches_singles(void **state)
{
    (void)state;
    /* euler_a draws noise every step; dpm++2m_sde_bt's Brownian tree runs image by image */
    const sde_sampler s[] = {SDE_SAMPLER_EULER, SDE_SAMPLER_EULER_A, SDE_SAMPLER_DPMPP_2M_SDE_BT,
                             SDE_SAMPLER_DPMPP_2S_A};
    for (size_t i = 0; i < sizeof s / sizeof *s; i++)
        check_batch_vs_singles(gu_cat_params(s[i]), 3);
    /* without CFG (one UNet pass an image), and with a budget of 1 MiB: groups of one image */
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER_A);
    p.cfg_scale = 1.f;
    check_batch_vs_singles(p, 2);
    p = gu_cat_params(SDE_SAMPLER_EULER_A);
    p.batch_mem_mb = 1;
    check_batch_vs_singles(p, 3);
}

typedef struct {
    int calls, last_step, last_total, previews;
} counts;

static int on_progress(void *ud, int step, int total, double t)
{
    (void)t;
    counts *c = ud;
    c->calls++;
    assert_int_equal(step, c->last_step + 1);
    c->last_step = step;
    c->last_total = total;
    return 0;
}

static void on_preview(void *ud, int step, int total, const uint8_t *png, size_t len, int w, int h)
{
    (void)step, (void)total, (void)png, (void)len, (void)w, (void)h;
    ((counts *)ud)->previews++;
}

static void test_progress_and_previews(void **state)
{
    (void)state;
    /* groups of one image: progress runs over all of them, previews come from image 0's steps only */
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER);
    counts c = {0};
    p.n_images = 3;
    p.batch_mem_mb = 1;
    p.progress = on_progress;
    p.preview = on_preview;
    p.preview_every = 1;
    p.ud = &c;
    sde_result r;
    gen_ok(&p, &r);
    assert_int_equal(c.calls, 12);
    assert_int_equal(c.last_total, 12);
    assert_int_equal(c.previews, 4);
    sde_result_free(&r);
    /* one group: one run of 4 steps */
    memset(&c, 0, sizeof c);
    p.batch_mem_mb = 0;
    gen_ok(&p, &r);
    assert_int_equal(c.calls, 4);
    assert_int_equal(c.last_total, 4);
    assert_int_equal(c.previews, 4);
    sde_result_free(&r);
}

static void test_img2img_batch(void **state)
{
    (void)state;
    enum { W = 64, H = 64 };
    static uint8_t init[W * H * 3], mask[W * H * 3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *q = init + 3 * (y * W + x);
            q[0] = (uint8_t)(x * 4), q[1] = (uint8_t)(y * 4), q[2] = (uint8_t)((x ^ y) * 4);
            memset(mask + 3 * (y * W + x), x < W / 2 ? 255 : 0, 3);
        }
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER_A);
    p.init_rgb = init, p.init_w = W, p.init_h = H, p.strength = 0.75f;
    p.mask = mask, p.mask_w = W, p.mask_h = H;
    p.n_images = 2;
    sde_result b, one;
    gen_ok(&p, &b);
    p.n_images = 1;
    gen_ok(&p, &one);
    /* image 0 is the single job's; image 1 shares its init latent (the peer's way) but not its noise */
    int d0 = png_maxdiff(b.images[0].png, b.images[0].png_len, one.png, one.png_len);
    int d1 = png_maxdiff(b.images[1].png, b.images[1].png_len, one.png, one.png_len);
    print_message("inpainting batch of 2: image 0 vs single max |delta| %d, image 1 vs it %d\n", d0, d1);
    assert_true(d0 <= 1);
    assert_true(d1 > 1);
    assert_true(b.images[1].seed == 43);
    sde_result_free(&b);
    sde_result_free(&one);
}

static void test_validation(void **state)
{
    (void)state;
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER);
    const char *field = NULL;
    char err[256];
    p.n_images = SDE_MAX_IMAGES + 1;
    assert_int_equal(sde_params_validate(&p, &field, err, sizeof err), -1);
    assert_string_equal(field, "n_images");
    p.n_images = -1;
    assert_int_equal(sde_params_validate(&p, &field, err, sizeof err), -1);
    assert_string_equal(field, "n_images");
    p.n_images = SDE_MAX_IMAGES;
    assert_int_equal(sde_params_validate(&p, &field, err, sizeof err), 0);
    p.batch_mem_mb = -5;
    assert_int_equal(sde_params_validate(&p, &field, err, sizeof err), -1);
    assert_string_equal(field, "batch_mem_mb");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_matches_singles),
        cmocka_unit_test(test_progress_and_previews),
        cmocka_unit_test(test_img2img_batch),
        cmocka_unit_test(test_validation),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
