/* test_taesd.c: the TAESD decoder against a plain-loop reference of taesd.py's Decoder on the random
 * taesd-random file, both file layouts giving the same image, clear errors for wrong files, the preview
 * shrink, and the engine's decoder choice and TAESD previews on the tiny model. */
#include <math.h>

#include "checkpoint.h"
#include "golden_util.h"
#include "mkmodel.h"
#include "mkmodel_random.h"
#include "preview.h"
#include "st_test_writer.h"
#include "taesd.h"

static char *g_dir;
static char g_taesd[1200];

static int setup(void **state)
{
    (void)state;
    char err[512];
    g_dir = stw_mkdtemp("taesd");
    snprintf(g_taesd, sizeof g_taesd, "%s/taesd.safetensors", g_dir);
    sde_rand_preset p;
    if (sde_rand_preset_parse("taesd-random", &p) ||
        sde_mkmodel_random(g_taesd, p, 1, 1, 1, NULL, err, sizeof err))
        return gu_setup_failed(err);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    stw_rmtree(g_dir);
    free(g_dir);
    return 0;
}

/* ---------------------------------------------------------------- the reference */

static const float *ref_w(sde_ckpt *c, const char *name)
{
    const sde_tensor *t = sde_ckpt_find(c, name);
    assert_non_null(t);
    char err[256];
    const float *w = sde_ckpt_f32(c, name, t->ndim, t->shape, err, sizeof err);
    assert_non_null(w);
    return w;
}

/* y[co][h][w] = conv3x3(x, pad 1) + b, straight loops */
static void ref_conv(const float *x, int ci, int h, int w, const float *wt, const float *b, int co, float *y)
{
    for (int o = 0; o < co; o++)
        for (int yy = 0; yy < h; yy++)
            for (int xx = 0; xx < w; xx++) {
                double s = b ? b[o] : 0;
                for (int i = 0; i < ci; i++)
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++) {
                            int sy = yy + ky - 1, sx = xx + kx - 1;
                            if (sy < 0 || sy >= h || sx < 0 || sx >= w) continue;
                            s += (double)wt[((o * ci + i) * 3 + ky) * 3 + kx] *
                                 x[((size_t)i * h + sy) * w + sx];
                        }
                y[((size_t)o * h + yy) * w + xx] = (float)s;
            }
}

static void ref_relu(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] > 0 ? x[i] : 0;
}

/* taesd.py's Decoder, layer by layer from diffusers' indices */
static void ref_decode(sde_ckpt *c, const float *z, int h, int w, float *out)
{
    const int C = 64, maxn = C * 64 * h * w;
    float *x = calloc(maxn, sizeof(float)), *t1 = calloc(maxn, sizeof(float)),
          *t2 = calloc(maxn, sizeof(float));
    float *zc = malloc(sizeof(float) * 4 * h * w);
    char n1[64], n2[64];
    for (int i = 0; i < 4 * h * w; i++)
        zc[i] = tanhf(z[i] / 3.f) * 3.f;
    ref_conv(zc, 4, h, w, ref_w(c, "decoder.layers.0.weight"), ref_w(c, "decoder.layers.0.bias"), C, x);
    ref_relu(x, (size_t)C * h * w);
    for (int l = 2; l <= 17; l++) {
        size_t n = (size_t)C * h * w;
        if (l == 5 || l == 10 || l == 15) { /* nearest 2x */
            for (int ch = 0; ch < C; ch++)
                for (int yy = 0; yy < 2 * h; yy++)
                    for (int xx = 0; xx < 2 * w; xx++)
                        t1[((size_t)ch * 2 * h + yy) * 2 * w + xx] =
                            x[((size_t)ch * h + yy / 2) * w + xx / 2];
            h *= 2, w *= 2;
            continue;
        }
        if (l == 6 || l == 11 || l == 16) {
            snprintf(n1, sizeof n1, "decoder.layers.%d.weight", l);
            ref_conv(t1, C, h, w, ref_w(c, n1), NULL, C, x);
            continue;
        }
        const float *in = x;
        float *tmp[2] = {t1, t2};
        for (int k = 0; k < 3; k++) {
            snprintf(n1, sizeof n1, "decoder.layers.%d.conv.%d.weight", l, 2 * k);
            snprintf(n2, sizeof n2, "decoder.layers.%d.conv.%d.bias", l, 2 * k);
            float *o = k < 2 ? tmp[k] : t1; /* conv.4 reads t2 and may write t1 */
            ref_conv(in, C, h, w, ref_w(c, n1), ref_w(c, n2), C, o);
            if (k < 2) ref_relu(o, n);
            in = o;
        }
        for (size_t i = 0; i < n; i++)
            x[i] = x[i] + t1[i] > 0 ? x[i] + t1[i] : 0;
    }
    ref_conv(x, C, h, w, ref_w(c, "decoder.layers.18.weight"), ref_w(c, "decoder.layers.18.bias"), 3, out);
    free(x), free(t1), free(t2), free(zc);
}

/* a latent with some structure, larger than the clamp in places */
static void make_latent(float *z, int h, int w)
{
    for (int c = 0; c < 4; c++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                z[(c * h + y) * w + x] = 2.5f * sinf(0.9f * x + 1.3f * y + 0.7f * c) + 0.3f * c - 0.5f;
}

static void test_decode_matches_reference(void **state)
{
    (void)state;
    const int h = 3, w = 5;
    char err[512];
    sde_taesd *t;
    assert_int_equal(sde_taesd_load(g_taesd, &t, err, sizeof err), 0);
    assert_int_equal(sde_taesd_latent_channels(t), 4);
    assert_int_equal(sde_taesd_params(t), 1222531);
    float z[4 * 3 * 5], *got = malloc(sizeof(float) * 3 * 64 * h * w),
                        *want = malloc(sizeof(float) * 3 * 64 * h * w);
    make_latent(z, h, w);
    assert_int_equal(sde_taesd_decode(t, z, h, w, got, NULL, NULL, err, sizeof err), 0);
    sde_ckpt *c;
    assert_int_equal(sde_ckpt_open(g_taesd, &c, err, sizeof err), 0);
    ref_decode(c, z, h, w, want);
    gu_diff d = gu_diff_of(got, want, (size_t)3 * 64 * h * w);
    printf("TAESD vs reference loops: max |d| %.3g, mean %.3g, scale %.3g\n", d.max_abs, d.mean_abs, d.scale);
    assert_true(d.scale > 0.05); /* the random decoder's image is not flat */
    assert_true(d.max_abs < 1e-4);

    /* the same weights in the taesd repository's decoder-only layout ("N.*", one index higher) */
    stw_tensor *ts = calloc((size_t)sde_ckpt_count(c), sizeof *ts);
    char(*names)[64] = calloc((size_t)sde_ckpt_count(c), 64);
    int n = 0;
    for (int i = 0; i < sde_ckpt_count(c); i++) {
        const sde_tensor *s = sde_ckpt_at(c, i);
        int idx;
        char rest[48];
        if (sscanf(s->name, "decoder.layers.%d.%47s", &idx, rest) != 2) continue;
        snprintf(names[n], 64, "%d.%s", idx + 1, rest);
        ts[n] = (stw_tensor){
            .name = names[n], .dtype = "F32", .ndim = s->ndim, .data = s->data, .nbytes = s->nbytes};
        memcpy(ts[n].shape, s->shape, sizeof ts[n].shape);
        n++;
    }
    assert_int_equal(n, 67);
    char alt[1300];
    snprintf(alt, sizeof alt, "%s/taesd_decoder.safetensors", g_dir);
    assert_int_equal(stw_write_tensors(alt, ts, n, NULL), 0);
    sde_taesd *t2;
    assert_int_equal(sde_taesd_load(alt, &t2, err, sizeof err), 0);
    float *got2 = malloc(sizeof(float) * 3 * 64 * h * w);
    assert_int_equal(sde_taesd_decode(t2, z, h, w, got2, NULL, NULL, err, sizeof err), 0);
    assert_memory_equal(got, got2, sizeof(float) * 3 * 64 * h * w);

    /* one tensor short: the error names it */
    stw_tensor *miss = NULL;
    for (int i = 0; i < n; i++)
        if (!strcmp(ts[i].name, "9.conv.2.weight")) miss = &ts[i];
    assert_non_null(miss);
    *miss = ts[n - 1];
    assert_int_equal(stw_write_tensors(alt, ts, n - 1, NULL), 0);
    sde_taesd *t3 = NULL;
    assert_int_equal(sde_taesd_load(alt, &t3, err, sizeof err), -1);
    assert_null(t3);
    assert_non_null(strstr(err, "9.conv.2.weight"));
    sde_taesd_free(t);
    sde_taesd_free(t2);
    sde_ckpt_free(c);
    free(ts), free(names), free(got), free(got2), free(want);
}

static void test_not_a_taesd(void **state)
{
    (void)state;
    char err[512], path[1300];
    float v[4] = {0};
    stw_tensor t = {.name = "first_stage_model.decoder.conv_in.weight",
                    .dtype = "F32",
                    .ndim = 1,
                    .shape = {4},
                    .data = v,
                    .nbytes = sizeof v};
    snprintf(path, sizeof path, "%s/other.safetensors", g_dir);
    assert_int_equal(stw_write_tensors(path, &t, 1, NULL), 0);
    sde_taesd *td = NULL;
    assert_int_equal(sde_taesd_load(path, &td, err, sizeof err), -1);
    assert_null(td);
    assert_non_null(strstr(err, "not a TAESD decoder"));
    assert_int_equal(sde_taesd_load("/nonexistent/taesd.safetensors", &td, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/taesd.safetensors"));
}

static void test_preview_shrink(void **state)
{
    (void)state;
    const int H = 512, W = 384;
    float *rgb = malloc(sizeof(float) * 3 * H * W);
    /* left half black, right half white in red; green a constant 0.5; blue out of range (clamped to 1) */
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            rgb[(size_t)y * W + x] = x < W / 2 ? 0.f : 1.f;
            rgb[(size_t)H * W + (size_t)y * W + x] = 0.5f;
            rgb[(size_t)2 * H * W + (size_t)y * W + x] = 7.f;
        }
    uint8_t *png = NULL, *px = NULL;
    size_t len;
    int w, h, dw, dh;
    char err[256];
    assert_int_equal(sde_preview_png_rgb(rgb, H, W, &png, &len, &w, &h, err, sizeof err), 0);
    assert_int_equal(w, 192);
    assert_int_equal(h, 256);
    assert_int_equal(sde_png_decode(png, len, &px, &dw, &dh, err, sizeof err), 0);
    assert_int_equal(dw, 192);
    assert_int_equal(px[0], 0);
    assert_int_equal(px[(size_t)(191) * 3], 255);
    assert_int_equal(px[1], 128);
    assert_int_equal(px[2], 255);
    free(png), free(px), free(rgb);
}

/* ---------------------------------------------------------------- through the engine (tiny model) */

typedef struct {
    int n, w, h;
} pcount;

static void on_preview(void *ud, int step, int total, const uint8_t *png, size_t len, int w, int h)
{
    (void)step, (void)total, (void)png;
    pcount *c = ud;
    assert_true(len > 0);
    c->n++;
    c->w = w;
    c->h = h;
}

static void test_engine_decoder(void **state)
{
    (void)state;
    char model[1300], err[1024];
    snprintf(model, sizeof model, "%s/tiny.safetensors", g_dir);
    assert_int_equal(sde_mkmodel_tiny(model, 1, err, sizeof err), 0);
    sde_engine *plain, *with;
    assert_int_equal(gu_engine_load(model, NULL, &plain), 0);
    sde_load_opts o = {.model_path = model, .taesd_path = g_taesd};
    assert_int_equal(sde_engine_load(&o, &with, err, sizeof err), 0);
    sde_model_info info;
    sde_engine_info(with, &info);
    assert_int_equal(info.taesd, 1);
    sde_engine_info(plain, &info);
    assert_int_equal(info.taesd, 0);

    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER);
    const char *field;
    p.decoder = (sde_decoder)7;
    assert_int_equal(sde_params_validate(&p, &field, err, sizeof err), -1);
    assert_string_equal(field, "decoder");
    p.decoder = SDE_DECODER_TAESD;
    sde_result r, rv, rt;
    assert_int_equal(sde_generate(plain, &p, &r, err, sizeof err), SDE_ERR);
    assert_non_null(strstr(err, "no TAESD"));

    /* the VAE image does not change with a TAESD loaded; the TAESD image is another one, of the same size */
    p.decoder = SDE_DECODER_VAE;
    assert_int_equal(sde_generate(plain, &p, &r, err, sizeof err), SDE_OK);
    assert_int_equal(sde_generate(with, &p, &rv, err, sizeof err), SDE_OK);
    assert_true(r.png_len == rv.png_len && !memcmp(r.png, rv.png, r.png_len));
    p.decoder = SDE_DECODER_TAESD;
    pcount pc = {0};
    p.preview_every = 2;
    p.preview = on_preview;
    p.ud = &pc;
    assert_int_equal(sde_generate(with, &p, &rt, err, sizeof err), SDE_OK);
    assert_int_equal(pc.n, 2);
    assert_int_equal(pc.w, 64); /* TAESD previews are the decoded size up to 256 px, not upscaled */
    assert_int_equal(pc.h, 64);
    uint8_t *a = NULL, *b = NULL;
    int aw, ah, bw, bh;
    assert_int_equal(sde_png_decode(rv.png, rv.png_len, &a, &aw, &ah, err, sizeof err), 0);
    assert_int_equal(sde_png_decode(rt.png, rt.png_len, &b, &bw, &bh, err, sizeof err), 0);
    assert_int_equal(aw, bw);
    assert_int_equal(ah, bh);
    assert_true(memcmp(a, b, (size_t)aw * ah * 3) != 0);
    printf("tiny 64x64: VAE decode %.4f s, TAESD decode %.4f s, %d TAESD previews %.4f s\n", rv.t_decode,
           rt.t_decode, pc.n, rt.t_preview);
    free(a), free(b);
    sde_result_free(&r), sde_result_free(&rv), sde_result_free(&rt);

    /* a TAESD that does not exist fails the load, naming the file */
    o.taesd_path = "/nonexistent/taesd.safetensors";
    sde_engine *bad = NULL;
    assert_int_equal(sde_engine_load(&o, &bad, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/taesd.safetensors"));
    sde_engine_free(plain);
    sde_engine_free(with);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_matches_reference),
        cmocka_unit_test(test_not_a_taesd),
        cmocka_unit_test(test_preview_shrink),
        cmocka_unit_test(test_engine_decoder),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
