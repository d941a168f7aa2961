/* test_sdxl_tiny.c: the SDXL path end to end on a tiny SDXL-shaped model (the tiny preset's UNet and VAE
 * with label_emb and a 1280-wide second encoder): micro-conditioning into y, cfg <= 1 as one UNet pass. */
#include "golden_util.h"
#include "mkmodel.h"
#include "png_text_reader.h"
#include "safetensors.h"
#include "sdxl_cond.h"
#include "st_test_writer.h"

enum { GD = SDE_SDXL_POOLED, GFF = 64, GLAYERS = 2, NPOS = 77, TEMB = 4 * SDE_TINY_MODEL_CHANNELS };

static char g_model[1200], g_tiny[1200];
static sde_engine *g_e;

static uint32_t g_rng = 2026;
static float *rnd(size_t n, float base, float scale)
{
    float *p = malloc(n * sizeof *p);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        g_rng = g_rng * 1664525u + 1013904223u;
        p[i] = base + ((float)(g_rng >> 8) / 16777216.f - 0.5f) * scale;
    }
    return p;
}

typedef struct {
    stw_tensor t[1024];
    char names[1024][200];
    float *own[1024];
    int n, n_own;
} tset;

static void add(tset *s, const char *name, const void *data, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    assert_true(s->n < 1024);
    stw_tensor *t = &s->t[s->n];
    snprintf(s->names[s->n], sizeof s->names[0], "%s", name);
    t->name = s->names[s->n];
    t->dtype = "F32";
    int64_t d[4] = {d0, d1, d2, d3};
    t->ndim = 0;
    size_t n = 1;
    while (t->ndim < 4 && d[t->ndim] > 0) {
        t->shape[t->ndim] = d[t->ndim];
        n *= (size_t)d[t->ndim++];
    }
    t->data = data;
    t->nbytes = n * sizeof(float);
    s->n++;
}

static const float *own(tset *s, float *p)
{
    s->own[s->n_own++] = p;
    return p;
}

/* a JSON string with control characters escaped (the tokenizer's merges hold newlines) */
static void put_json(stw_buf *b, const char *s)
{
    stw_puts(b, "\"");
    for (; *s; s++) {
        char esc[8];
        if (*s == '"' || *s == '\\') {
            stw_puts(b, "\\");
            stw_put(b, s, 1);
        } else if ((unsigned char)*s < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", (unsigned)(unsigned char)*s);
            stw_puts(b, esc);
        } else {
            stw_put(b, s, 1);
        }
    }
    stw_puts(b, "\"");
}

/* The tiny SD 1.x file turned into SDXL's single-file layout: CLIP-L under conditioner.embedders.0, an
 * OpenCLIP bigG (1280 wide, 2 blocks, 64-wide MLP) under conditioner.embedders.1 with text_projection, the
 * UNet's cross-attention keys and values widened to the 64 + 1280 context, and label_emb (2816 -> temb). */
static int write_tiny_xl(const char *tiny, const char *out, const char *extra_meta, char *err, size_t errlen)
{
    sde_st_file *f = NULL;
    if (sde_st_open(tiny, &f, err, errlen)) return -1;
    static tset s;
    memset(&s, 0, sizeof s);
    const int ctx = SDE_TINY_CONTEXT + GD;
    char nm[200];
    for (int i = 0; i < f->n; i++) {
        const sde_st_tensor *t = &f->t[i];
        const char *name = t->name;
        const char *pfx = "cond_stage_model.transformer.text_model.";
        int64_t d[4] = {0};
        for (int k = 0; k < t->ndim; k++)
            d[k] = t->shape[k];
        if (!strncmp(name, pfx, strlen(pfx))) {
            snprintf(nm, sizeof nm, "conditioner.embedders.0.transformer.text_model.%s", name + strlen(pfx));
            name = nm;
        } else if (strstr(name, "attn2.to_k.weight") || strstr(name, "attn2.to_v.weight")) {
            add(&s, name, own(&s, rnd((size_t)d[0] * ctx, 0, 0.1f)), d[0], ctx, 0, 0);
            continue;
        }
        assert_int_equal(t->dtype, SDE_DT_F32);
        add(&s, name, t->data, d[0], d[1], d[2], d[3]);
    }
    const int vocab = SDE_TINY_VOCAB;
#define G "conditioner.embedders.1.model."
    add(&s, G "token_embedding.weight", own(&s, rnd((size_t)vocab * GD, 0, 0.1f)), vocab, GD, 0, 0);
    add(&s, G "positional_embedding", own(&s, rnd((size_t)NPOS * GD, 0, 0.1f)), NPOS, GD, 0, 0);
    for (int l = 0; l < GLAYERS; l++) {
#define B(x) (snprintf(nm, sizeof nm, G "transformer.resblocks.%d.%s", l, x), nm)
        add(&s, B("ln_1.weight"), own(&s, rnd(GD, 1, 0.1f)), GD, 0, 0, 0);
        add(&s, B("ln_1.bias"), own(&s, rnd(GD, 0, 0.1f)), GD, 0, 0, 0);
        add(&s, B("attn.in_proj_weight"), own(&s, rnd((size_t)3 * GD * GD, 0, 0.05f)), 3 * GD, GD, 0, 0);
        add(&s, B("attn.in_proj_bias"), own(&s, rnd(3 * GD, 0, 0.1f)), 3 * GD, 0, 0, 0);
        add(&s, B("attn.out_proj.weight"), own(&s, rnd((size_t)GD * GD, 0, 0.05f)), GD, GD, 0, 0);
        add(&s, B("attn.out_proj.bias"), own(&s, rnd(GD, 0, 0.1f)), GD, 0, 0, 0);
        add(&s, B("ln_2.weight"), own(&s, rnd(GD, 1, 0.1f)), GD, 0, 0, 0);
        add(&s, B("ln_2.bias"), own(&s, rnd(GD, 0, 0.1f)), GD, 0, 0, 0);
        add(&s, B("mlp.c_fc.weight"), own(&s, rnd((size_t)GFF * GD, 0, 0.1f)), GFF, GD, 0, 0);
        add(&s, B("mlp.c_fc.bias"), own(&s, rnd(GFF, 0, 0.1f)), GFF, 0, 0, 0);
        add(&s, B("mlp.c_proj.weight"), own(&s, rnd((size_t)GD * GFF, 0, 0.1f)), GD, GFF, 0, 0);
        add(&s, B("mlp.c_proj.bias"), own(&s, rnd(GD, 0, 0.1f)), GD, 0, 0, 0);
#undef B
    }
    add(&s, G "ln_final.weight", own(&s, rnd(GD, 1, 0.1f)), GD, 0, 0, 0);
    add(&s, G "ln_final.bias", own(&s, rnd(GD, 0, 0.1f)), GD, 0, 0, 0);
    add(&s, G "text_projection", own(&s, rnd((size_t)GD * GD, 0, 0.05f)), GD, GD, 0, 0);
#undef G
#define U "model.diffusion_model.label_emb.0."
    /* strong enough that the size features move the image, not only y */
    add(&s, U "0.weight", own(&s, rnd((size_t)TEMB * SDE_SDXL_ADM, 0, 0.5f)), TEMB, SDE_SDXL_ADM, 0, 0);
    add(&s, U "0.bias", own(&s, rnd(TEMB, 0, 0.1f)), TEMB, 0, 0, 0);
    add(&s, U "2.weight", own(&s, rnd((size_t)TEMB * TEMB, 0, 0.5f)), TEMB, TEMB, 0, 0);
    add(&s, U "2.bias", own(&s, rnd(TEMB, 0, 0.1f)), TEMB, 0, 0, 0);
#undef U
    /* the tiny file's metadata (tokenizer, head sizes), as a JSON object */
    stw_buf m = {0};
    stw_puts(&m, "{");
    for (int i = 0; i < f->n_meta; i++) {
        if (!strcmp(f->meta_keys[i], "sdw.preset")) continue;
        if (m.n > 1) stw_puts(&m, ",");
        put_json(&m, f->meta_keys[i]);
        stw_puts(&m, ":");
        put_json(&m, f->meta_vals[i]);
    }
    if (extra_meta) {
        stw_puts(&m, ",");
        stw_puts(&m, extra_meta);
    }
    stw_puts(&m, "}");
    int rc = stw_write_tensors(out, s.t, s.n, m.s);
    free(m.s);
    for (int i = 0; i < s.n_own; i++)
        free(s.own[i]);
    sde_st_free(f);
    if (rc) snprintf(err, errlen, "cannot write %.200s", out);
    return rc;
}

static int setup(void **state)
{
    (void)state;
    const char *t = getenv("SDW_TMPDIR");
    char err[1024];
    snprintf(g_tiny, sizeof g_tiny, "%s/sdxl_tiny_base.safetensors", t ? t : "/tmp");
    snprintf(g_model, sizeof g_model, "%s/sdxl_tiny.safetensors", t ? t : "/tmp");
    if (sde_mkmodel_tiny(g_tiny, 1, err, sizeof err) ||
        write_tiny_xl(g_tiny, g_model, NULL, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    return gu_engine_load(g_model, NULL, &g_e);
}

static int teardown(void **state)
{
    (void)state;
    sde_engine_free(g_e);
    remove(g_model);
    remove(g_tiny);
    return 0;
}

/* what a generation traced: names in order and a copy of the SDXL vectors */
typedef struct {
    char names[64][32];
    int n;
    float cond_y[SDE_SDXL_ADM], uncond_y[SDE_SDXL_ADM];
    int unet_calls; /* eps_cond per step: one UNet forward each (its batch is 1 or 2) */
    int uncond_evals;
} trace_log;

static void on_trace(void *ud, const char *name, const float *d, size_t n)
{
    trace_log *t = ud;
    if (t->n < 64) snprintf(t->names[t->n++], sizeof t->names[0], "%s", name);
    if (!strcmp(name, "cond_vector")) {
        assert_int_equal(n, SDE_SDXL_ADM);
        memcpy(t->cond_y, d, sizeof t->cond_y);
    } else if (!strcmp(name, "uncond_vector")) {
        assert_int_equal(n, SDE_SDXL_ADM);
        memcpy(t->uncond_y, d, sizeof t->uncond_y);
    }
    if (strstr(name, "_eps_cond")) t->unet_calls++;
    if (strstr(name, "_eps_uncond") || !strcmp(name, "uncond_crossattn")) t->uncond_evals++;
}

static sde_gen_params xl_params(void)
{
    sde_gen_params p = {.prompt = "a photo of a cat",
                        .steps = 2,
                        .cfg_scale = 5.f,
                        .seed = 42,
                        .sampler = SDE_SAMPLER_EULER,
                        .schedule = SDE_SCHEDULE_DISCRETE,
                        .width = 64,
                        .height = 96};
    return p;
}

static void run(const sde_gen_params *p, trace_log *t, sde_result *r)
{
    char err[1024];
    memset(t, 0, sizeof *t);
    sde_engine_set_trace(g_e, on_trace, t);
    int rc = sde_generate(g_e, p, r, err, sizeof err);
    sde_engine_set_trace(g_e, NULL, NULL);
    if (rc != SDE_OK) fail_msg("sde_generate: %d %s", rc, err);
}

/* y's 256-wide block k is e(v) = [cos(v f_0..127) | sin(v f_0..127)], f_i = exp(-ln(10000) i / 128)
 * (sgm's Timestep embedder), computed here in double from the formula, not from the engine's function */
static void assert_feature(const float *y, int k, double v)
{
    const float *e = y + SDE_SDXL_POOLED + k * SDE_SDXL_EMB;
    for (int i = 0; i < 128; i++) {
        double a = v * exp(-log(10000.0) * i / 128.0);
        if (fabs(e[i] - cos(a)) > 2e-3 || fabs(e[128 + i] - sin(a)) > 2e-3)
            fail_msg("y block %d (value %g) index %d: %g %g, want %g %g", k, v, i, (double)e[i],
                     (double)e[128 + i], cos(a), sin(a));
    }
}

static void test_loads_as_sdxl(void **state)
{
    (void)state;
    sde_model_info info;
    sde_engine_info(g_e, &info);
    assert_string_equal(info.arch, "sdxl");
    assert_int_equal(info.context_dim, SDE_TINY_CONTEXT + GD);
    assert_int_equal(info.default_size, 1024);
}

/* Defaults: y = pooled | e(H) e(W) | e(0) e(0) | e(H) e(W) of the image; original_size, the crop and
 * target_size replace their blocks (height first inside y), the pooled text stays, the image changes. */
static void test_micro_conditioning(void **state)
{
    (void)state;
    static trace_log a, b;
    sde_result ra, rb;
    sde_gen_params p = xl_params();
    run(&p, &a, &ra);
    const double def[6] = {96, 64, 0, 0, 96, 64};
    for (int k = 0; k < 6; k++)
        assert_feature(a.cond_y, k, def[k]);
    /* with guidance the negative's y carries the same sizes */
    for (int k = 0; k < 6; k++)
        assert_feature(a.uncond_y, k, def[k]);

    p.orig_width = 1024;
    p.orig_height = 768;
    p.crop_top = 16;
    p.crop_left = 32;
    p.target_width = 640;
    p.target_height = 512;
    run(&p, &b, &rb);
    const double set[6] = {768, 1024, 16, 32, 512, 640};
    for (int k = 0; k < 6; k++) {
        assert_feature(b.cond_y, k, set[k]);
        assert_feature(b.uncond_y, k, set[k]);
    }
    assert_memory_equal(a.cond_y, b.cond_y, sizeof(float) * SDE_SDXL_POOLED);
    assert_true(ra.png_len != rb.png_len || memcmp(ra.png, rb.png, ra.png_len) != 0);
    sde_result_free(&ra);
    sde_result_free(&rb);

    /* only original_size set: the other blocks keep the image size */
    p = xl_params();
    p.orig_width = 2048;
    run(&p, &b, &rb);
    const double one[6] = {96, 2048, 0, 0, 96, 64};
    for (int k = 0; k < 6; k++)
        assert_feature(b.cond_y, k, one[k]);
    sde_result_free(&rb);
}

/* Guidance <= 1 (the turbo recipe): the conditional pass only, one UNet evaluation per step and no
 * unconditional context; guidance > 1 evaluates both. cfg 0 and cfg 1 give the same image (both are the
 * conditional prediction alone). */
static void test_turbo_cfg_single_pass(void **state)
{
    (void)state;
    static trace_log t;
    sde_result r0, r1, r5;
    sde_gen_params p = xl_params();
    p.sampler = SDE_SAMPLER_EULER_A;
    p.steps = 1;
    p.cfg_scale = 0.f;
    run(&p, &t, &r0);
    assert_int_equal(t.unet_calls, 1);
    assert_int_equal(t.uncond_evals, 0);
    p.cfg_scale = 1.f;
    run(&p, &t, &r1);
    assert_int_equal(t.unet_calls, 1);
    assert_int_equal(t.uncond_evals, 0);
    /* the pixels are equal (the parameters chunks differ by "CFG scale") */
    uint8_t *p0 = NULL, *p1 = NULL;
    int w0, h0, w1, h1;
    char err[256];
    assert_int_equal(sde_png_decode(r0.png, r0.png_len, &p0, &w0, &h0, err, sizeof err), 0);
    assert_int_equal(sde_png_decode(r1.png, r1.png_len, &p1, &w1, &h1, err, sizeof err), 0);
    assert_int_equal(w0 * h0, w1 * h1);
    assert_memory_equal(p0, p1, (size_t)w0 * h0 * 3);
    free(p0);
    free(p1);
    p.cfg_scale = 1.5f;
    run(&p, &t, &r5);
    assert_int_equal(t.unet_calls, 1);
    assert_true(t.uncond_evals >= 2); /* its context, its vector... and each step's prediction */
    sde_result_free(&r0);
    sde_result_free(&r1);
    sde_result_free(&r5);
}

/* SDXL-Turbo has SDXL's tensors but was trained at 512: its modelspec.resolution metadata sets the native
 * size; a malformed or non-square one leaves SDXL's 1024. */
static void test_modelspec_resolution(void **state)
{
    (void)state;
    static const struct {
        const char *meta;
        int want;
    } cases[] = {{"\"modelspec.resolution\":\"512x512\"", 512},
                 {"\"modelspec.resolution\":\"512x768\"", 1024},
                 {"\"modelspec.resolution\":\"512x512px\"", 1024}};
    char path[1300], err[1024];
    snprintf(path, sizeof path, "%s.turbo.safetensors", g_model);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (write_tiny_xl(g_tiny, path, cases[i].meta, err, sizeof err)) fail_msg("%s", err);
        sde_engine *e = NULL;
        assert_int_equal(gu_engine_load(path, NULL, &e), 0);
        sde_model_info info;
        sde_engine_info(e, &info);
        assert_string_equal(info.arch, "sdxl");
        assert_int_equal(info.default_size, cases[i].want);
        sde_engine_free(e);
    }
    remove(path);
}

/* The parameters chunk names the model as A1111 does: "Model hash: <10 hex>, Model: <file name>". */
static void test_parameters_chunk(void **state)
{
    (void)state;
    static trace_log t;
    sde_result r;
    sde_gen_params p = xl_params();
    p.steps = 1;
    p.cfg_scale = 1.f;
    run(&p, &t, &r);
    char *params = NULL;
    assert_int_equal(tpng_text_get(r.png, r.png_len, "parameters", &params), 0);
    sde_model_info info;
    sde_engine_info(g_e, &info);
    char want[200];
    snprintf(want, sizeof want, "Model hash: %s, Model: sdxl_tiny", info.model_hash);
    assert_int_equal(strlen(info.model_hash), 10);
    if (!strstr(params, want)) fail_msg("parameters %s lack '%s'", params, want);
    assert_non_null(strstr(params, "Size: 64x96"));
    free(params);
    sde_result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loads_as_sdxl),         cmocka_unit_test(test_micro_conditioning),
        cmocka_unit_test(test_turbo_cfg_single_pass), cmocka_unit_test(test_parameters_chunk),
        cmocka_unit_test(test_modelspec_resolution),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
