/* test_sdxl_cond.c: the SDXL pieces that run small: size features, the adm vector's layout, the text
 * projection's orientation (OpenCLIP h @ P vs diffusers' Linear P^T), the f32 schedule and arch detection. */
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

/* ---- the same tiny two-encoder model in the sgm layout and in diffusers' (canonical names) ---- */

enum { LD = 64, GD = SDE_SDXL_POOLED, FF = 64, VOC = 16, NPOS = 77, NL = 2 };

static float frand(uint32_t *st)
{
    *st = *st * 1664525u + 1013904223u;
    return ((float)(*st >> 8) / 16777216.f - 0.5f) * 0.1f;
}

static float *fill(size_t n, uint32_t *st, float base)
{
    float *p = malloc(n * sizeof *p);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = base + frand(st);
    return p;
}

typedef struct {
    stw_tensor t[128];
    char names[128][160];
    float *own[128];
    int n;
} tiny_set;

static void add_t(tiny_set *s, const char *name, const float *data, int64_t d0, int64_t d1)
{
    stw_tensor *t = &s->t[s->n];
    snprintf(s->names[s->n], sizeof s->names[0], "%s", name);
    t->name = s->names[s->n];
    t->dtype = "F32";
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->data = data;
    t->nbytes = (size_t)(d0 * (d1 ? d1 : 1)) * sizeof(float);
    s->n++;
}

/* one HF CLIPTextModel layer set under pfx (ViT-L here; bigG in the diffusers layout with oc != NULL:
 * q/k/v are the rows of the OpenCLIP in_proj) */
typedef struct {
    float *tok, *pos, *ln1g, *ln1b, *inw, *inb, *ow, *ob, *ln2g, *ln2b, *f1w, *f1b, *f2w, *f2b, *lnfg, *lnfb;
} enc_w;

static void enc_make(enc_w *w, int d, uint32_t *st)
{
    w->tok = fill((size_t)VOC * d, st, 0);
    w->pos = fill((size_t)NPOS * d, st, 0);
    w->ln1g = fill((size_t)NL * d, st, 1);
    w->ln1b = fill((size_t)NL * d, st, 0);
    w->inw = fill((size_t)NL * 3 * d * d, st, 0);
    w->inb = fill((size_t)NL * 3 * d, st, 0);
    w->ow = fill((size_t)NL * d * d, st, 0);
    w->ob = fill((size_t)NL * d, st, 0);
    w->ln2g = fill((size_t)NL * d, st, 1);
    w->ln2b = fill((size_t)NL * d, st, 0);
    w->f1w = fill((size_t)NL * FF * d, st, 0);
    w->f1b = fill((size_t)NL * FF, st, 0);
    w->f2w = fill((size_t)NL * d * FF, st, 0);
    w->f2b = fill((size_t)NL * d, st, 0);
    w->lnfg = fill((size_t)d, st, 1);
    w->lnfb = fill((size_t)d, st, 0);
}

static void enc_free(enc_w *w)
{
    float **p = (float **)w;
    for (size_t i = 0; i < sizeof *w / sizeof(float *); i++)
        free(p[i]);
}

static void add_hf(tiny_set *s, const char *pfx, const enc_w *w, int64_t d)
{
    char n[160];
#define NM(...) (snprintf(n, sizeof n, __VA_ARGS__), n)
    add_t(s, NM("%sembeddings.token_embedding.weight", pfx), w->tok, VOC, d);
    add_t(s, NM("%sembeddings.position_embedding.weight", pfx), w->pos, NPOS, d);
    static const char *const qkv[] = {"q", "k", "v"};
    for (int l = 0; l < NL; l++) {
        add_t(s, NM("%sencoder.layers.%d.layer_norm1.weight", pfx, l), w->ln1g + l * d, d, 0);
        add_t(s, NM("%sencoder.layers.%d.layer_norm1.bias", pfx, l), w->ln1b + l * d, d, 0);
        for (int k = 0; k < 3; k++) {
            add_t(s, NM("%sencoder.layers.%d.self_attn.%s_proj.weight", pfx, l, qkv[k]),
                  w->inw + (l * 3 + k) * d * d, d, d);
            add_t(s, NM("%sencoder.layers.%d.self_attn.%s_proj.bias", pfx, l, qkv[k]),
                  w->inb + (l * 3 + k) * d, d, 0);
        }
        add_t(s, NM("%sencoder.layers.%d.self_attn.out_proj.weight", pfx, l), w->ow + l * d * d, d, d);
        add_t(s, NM("%sencoder.layers.%d.self_attn.out_proj.bias", pfx, l), w->ob + l * d, d, 0);
        add_t(s, NM("%sencoder.layers.%d.layer_norm2.weight", pfx, l), w->ln2g + l * d, d, 0);
        add_t(s, NM("%sencoder.layers.%d.layer_norm2.bias", pfx, l), w->ln2b + l * d, d, 0);
        add_t(s, NM("%sencoder.layers.%d.mlp.fc1.weight", pfx, l), w->f1w + l * FF * d, FF, d);
        add_t(s, NM("%sencoder.layers.%d.mlp.fc1.bias", pfx, l), w->f1b + l * FF, FF, 0);
        add_t(s, NM("%sencoder.layers.%d.mlp.fc2.weight", pfx, l), w->f2w + l * d * FF, d, FF);
        add_t(s, NM("%sencoder.layers.%d.mlp.fc2.bias", pfx, l), w->f2b + l * d, d, 0);
    }
    add_t(s, NM("%sfinal_layer_norm.weight", pfx), w->lnfg, d, 0);
    add_t(s, NM("%sfinal_layer_norm.bias", pfx), w->lnfb, d, 0);
}

static void add_oc(tiny_set *s, const char *pfx, const enc_w *w, int64_t d)
{
    char n[160];
    add_t(s, NM("%stoken_embedding.weight", pfx), w->tok, VOC, d);
    add_t(s, NM("%spositional_embedding", pfx), w->pos, NPOS, d);
    for (int l = 0; l < NL; l++) {
        add_t(s, NM("%stransformer.resblocks.%d.ln_1.weight", pfx, l), w->ln1g + l * d, d, 0);
        add_t(s, NM("%stransformer.resblocks.%d.ln_1.bias", pfx, l), w->ln1b + l * d, d, 0);
        add_t(s, NM("%stransformer.resblocks.%d.attn.in_proj_weight", pfx, l), w->inw + l * 3 * d * d, 3 * d,
              d);
        add_t(s, NM("%stransformer.resblocks.%d.attn.in_proj_bias", pfx, l), w->inb + l * 3 * d, 3 * d, 0);
        add_t(s, NM("%stransformer.resblocks.%d.attn.out_proj.weight", pfx, l), w->ow + l * d * d, d, d);
        add_t(s, NM("%stransformer.resblocks.%d.attn.out_proj.bias", pfx, l), w->ob + l * d, d, 0);
        add_t(s, NM("%stransformer.resblocks.%d.ln_2.weight", pfx, l), w->ln2g + l * d, d, 0);
        add_t(s, NM("%stransformer.resblocks.%d.ln_2.bias", pfx, l), w->ln2b + l * d, d, 0);
        add_t(s, NM("%stransformer.resblocks.%d.mlp.c_fc.weight", pfx, l), w->f1w + l * FF * d, FF, d);
        add_t(s, NM("%stransformer.resblocks.%d.mlp.c_fc.bias", pfx, l), w->f1b + l * FF, FF, 0);
        add_t(s, NM("%stransformer.resblocks.%d.mlp.c_proj.weight", pfx, l), w->f2w + l * d * FF, d, FF);
        add_t(s, NM("%stransformer.resblocks.%d.mlp.c_proj.bias", pfx, l), w->f2b + l * d, d, 0);
    }
    add_t(s, NM("%sln_final.weight", pfx), w->lnfg, d, 0);
    add_t(s, NM("%sln_final.bias", pfx), w->lnfb, d, 0);
#undef NM
}

static void encode_file(const char *path, const int32_t *ids, float *ctx, float *y)
{
    char err[512];
    sde_ckpt *c = NULL;
    sde_sdxl_cond *x = NULL;
    assert_int_equal(sde_ckpt_open(path, &c, err, sizeof err), 0);
    if (sde_sdxl_cond_build(c, &x, err, sizeof err)) fail_msg("%s", err);
    sde_sdxl_sizes sz = {128, 192, 0, 0, 128, 192};
    sde_sdxl_encode(x, ids, VOC - 1, 0, &sz, ctx, y);
    sde_sdxl_cond_free(x);
    sde_ckpt_free(c);
}

/* An sgm single file (OpenCLIP bigG, h @ P) and the same weights as a diffusers folder names them (HF bigG
 * with q/k/v split, text_projection.weight = P^T) give the same context and y; P is not symmetric. */
static void test_sgm_equals_diffusers(void **state)
{
    (void)state;
    uint32_t st = 12345;
    enc_w l, g;
    enc_make(&l, LD, &st);
    enc_make(&g, GD, &st);
    float *p = fill((size_t)GD * GD, &st, 0), *pt = malloc(sizeof(float) * GD * GD);
    assert_non_null(pt);
    for (int i = 0; i < GD; i++)
        for (int j = 0; j < GD; j++)
            pt[(size_t)j * GD + i] = p[(size_t)i * GD + j];
    float lab[4] = {0};
    static tiny_set a, b;
    a.n = b.n = 0;
    add_t(&a, "model.diffusion_model.label_emb.0.0.weight", lab, 2, 2);
    add_hf(&a, "conditioner.embedders.0.transformer.text_model.", &l, LD);
    add_oc(&a, "conditioner.embedders.1.model.", &g, GD);
    add_t(&a, "conditioner.embedders.1.model.text_projection", p, GD, GD);
    add_t(&b, "model.diffusion_model.label_emb.0.0.weight", lab, 2, 2);
    add_hf(&b, "cond_stage_model.transformer.text_model.", &l, LD);
    add_hf(&b, "conditioner.embedders.1.transformer.text_model.", &g, GD);
    add_t(&b, "conditioner.embedders.1.transformer.text_projection.weight", pt, GD, GD);
    const char *pa = stw_path(stw_tmpdir, "sgm.safetensors");
    assert_int_equal(stw_write_tensors(pa, a.t, a.n, NULL), 0);
    char pb[1024];
    snprintf(pb, sizeof pb, "%s", stw_path(stw_tmpdir, "diffusers-names.safetensors"));
    assert_int_equal(stw_write_tensors(pb, b.t, b.n, NULL), 0);

    int32_t ids[SDE_TOK_CONTEXT];
    for (int t = 0; t < SDE_TOK_CONTEXT; t++)
        ids[t] = VOC - 1;
    ids[0] = VOC - 2;
    ids[1] = 3;
    ids[2] = 5;
    ids[3] = 7;
    const size_t nc = (size_t)SDE_TOK_CONTEXT * (LD + GD);
    float *ca = malloc(nc * sizeof(float)), *cb = malloc(nc * sizeof(float));
    static float ya[SDE_SDXL_ADM], yb[SDE_SDXL_ADM];
    assert_non_null(ca);
    assert_non_null(cb);
    encode_file(pa, ids, ca, ya);
    encode_file(pb, ids, cb, yb);
    double md = 0, mp = 0;
    for (size_t i = 0; i < nc; i++)
        md = fmax(md, fabs((double)ca[i] - cb[i]));
    for (int i = 0; i < SDE_SDXL_ADM; i++)
        mp = fmax(mp, fabs((double)ya[i] - yb[i]));
    /* P is random, not symmetric: reading it the other way round in either file would break the match */
    printf("sgm vs diffusers: context max |d| %.3g, y max |d| %.3g\n", md, mp);
    assert_true(md < 1e-4);
    assert_true(mp < 1e-4);
    assert_true(fabs((double)ya[0] - ya[1]) > 0); /* sanity: y is not constant */
    free(ca);
    free(cb);
    free(p);
    free(pt);
    enc_free(&l);
    enc_free(&g);
}

/* SDXL's diffusers UNet names (3 levels, level 0 without attention, 10-deep transformers, add_embedding) */
static void test_diffusers_unet_names(void **state)
{
    (void)state;
    static const char *const hf[] = {
        "conv_in.weight",
        "add_embedding.linear_1.weight",
        "add_embedding.linear_2.bias",
        "down_blocks.0.resnets.1.conv1.weight",
        "down_blocks.0.downsamplers.0.conv.weight",
        "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight",
        "down_blocks.2.attentions.1.transformer_blocks.9.attn1.to_q.weight",
        "mid_block.attentions.0.transformer_blocks.9.norm3.weight",
        "mid_block.resnets.1.conv2.bias",
        "up_blocks.0.attentions.2.transformer_blocks.9.ff.net.2.bias",
        "up_blocks.0.upsamplers.0.conv.weight",
        "up_blocks.1.attentions.2.proj_out.weight",
        "up_blocks.1.upsamplers.0.conv.weight",
        "up_blocks.2.resnets.2.conv_shortcut.weight",
    };
    static const char *const ldm[] = {
        "input_blocks.0.0.weight",
        "label_emb.0.0.weight",
        "label_emb.0.2.bias",
        "input_blocks.2.0.in_layers.2.weight",
        "input_blocks.3.0.op.weight",
        "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight",
        "input_blocks.8.1.transformer_blocks.9.attn1.to_q.weight",
        "middle_block.1.transformer_blocks.9.norm3.weight",
        "middle_block.2.out_layers.3.bias",
        "output_blocks.2.1.transformer_blocks.9.ff.net.2.bias",
        "output_blocks.2.2.conv.weight",
        "output_blocks.5.1.proj_out.weight",
        "output_blocks.5.2.conv.weight",
        "output_blocks.8.0.skip_connection.weight",
    };
    const int n = (int)(sizeof hf / sizeof *hf);
    sde_dn_unet_layout L;
    char err[256], out[256], want[256];
    assert_int_equal(sde_dn_unet_layout_scan(hf, n, &L, err, sizeof err), 0);
    assert_int_equal(L.n_levels, 3);
    for (int i = 0; i < n; i++) {
        snprintf(want, sizeof want, "model.diffusion_model.%s", ldm[i]);
        if (sde_dn_unet_to_ldm(&L, hf[i], out, sizeof out)) fail_msg("%s: no mapping", hf[i]);
        assert_string_equal(out, want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_size_embed),
        cmocka_unit_test(test_adm_layout),
        cmocka_unit_test(test_projection_orientation),
        cmocka_unit_test(test_alphas_f32),
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_sgm_equals_diffusers),
        cmocka_unit_test(test_diffusers_unet_names),
    };
    return cmocka_run_group_tests(tests, stw_tmpdir_setup, stw_tmpdir_teardown);
}
