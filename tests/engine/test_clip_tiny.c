/* test_clip_tiny.c: the text encoder on small checkpoints (the mkmodel tiny preset in HF names, and a
 * hand-written OpenCLIP-named one) against a plain double-precision reference written here. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "checkpoint.h"
#include "clip.h"
#include "mkmodel.h"
#include "philox.h"
#include "tokenizer.h"

static char g_tmp[1024];

static const char *tmp_path(const char *name)
{
    static char p[1200];
    snprintf(p, sizeof p, "%s/%s", g_tmp, name);
    return p;
}

/* ---- reference transformer, double precision, straight from the definitions ---- */

typedef struct {
    sde_ckpt *c;
    int openclip, d, ff, heads, layers, quick;
} ref_model;

static const float *W(ref_model *r, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const sde_tensor *t = sde_ckpt_find(r->c, name);
    if (!t) fail_msg("reference: missing %s", name);
    char err[256];
    const float *p = sde_ckpt_f32(r->c, name, t->ndim, t->shape, err, sizeof err);
    if (!p) fail_msg("%s", err);
    return p;
}

static void ref_ln(const double *x, double *y, int d, const float *g, const float *b)
{
    double m = 0, v = 0;
    for (int i = 0; i < d; i++)
        m += x[i];
    m /= d;
    for (int i = 0; i < d; i++)
        v += (x[i] - m) * (x[i] - m);
    v /= d;
    for (int i = 0; i < d; i++)
        y[i] = (x[i] - m) / sqrt(v + 1e-5) * g[i] + b[i];
}

static void ref_lin(const double *x, const float *w, const float *b, int in, int out, double *y)
{
    for (int o = 0; o < out; o++) {
        double s = b ? b[o] : 0.0;
        for (int i = 0; i < in; i++)
            s += (double)w[(size_t)o * in + i] * x[i];
        y[o] = s;
    }
}

static void ref_encode(ref_model *r, const int32_t *tok, double *out)
{
    enum { T = 77 };
    const int d = r->d, ff = r->ff, hd = d / r->heads;
    double *x = calloc((size_t)T * d, 8), *h = calloc((size_t)T * d, 8), *q = calloc((size_t)T * d, 8),
           *k = calloc((size_t)T * d, 8), *v = calloc((size_t)T * d, 8), *a = calloc((size_t)T * d, 8),
           *m = calloc((size_t)ff, 8), *o = calloc((size_t)d, 8), *qkv = calloc(3 * (size_t)d, 8);
    const char *P = r->openclip ? "cond_stage_model.model." : "cond_stage_model.transformer.text_model.";
    const float *te =
        r->openclip ? W(r, "%stoken_embedding.weight", P) : W(r, "%sembeddings.token_embedding.weight", P);
    const float *pe =
        r->openclip ? W(r, "%spositional_embedding", P) : W(r, "%sembeddings.position_embedding.weight", P);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < d; i++)
            x[t * d + i] = (double)te[(size_t)tok[t] * d + i] + pe[t * d + i];
    for (int l = 0; l < r->layers; l++) {
        char L[200];
        if (r->openclip)
            snprintf(L, sizeof L, "%stransformer.resblocks.%d.", P, l);
        else
            snprintf(L, sizeof L, "%sencoder.layers.%d.", P, l);
        for (int t = 0; t < T; t++) {
            if (r->openclip) {
                ref_ln(x + t * d, h + t * d, d, W(r, "%sln_1.weight", L), W(r, "%sln_1.bias", L));
                ref_lin(h + t * d, W(r, "%sattn.in_proj_weight", L), W(r, "%sattn.in_proj_bias", L), d, 3 * d,
                        qkv);
                memcpy(q + t * d, qkv, (size_t)d * 8);
                memcpy(k + t * d, qkv + d, (size_t)d * 8);
                memcpy(v + t * d, qkv + 2 * d, (size_t)d * 8);
            } else {
                ref_ln(x + t * d, h + t * d, d, W(r, "%slayer_norm1.weight", L),
                       W(r, "%slayer_norm1.bias", L));
                ref_lin(h + t * d, W(r, "%sself_attn.q_proj.weight", L), W(r, "%sself_attn.q_proj.bias", L),
                        d, d, q + t * d);
                ref_lin(h + t * d, W(r, "%sself_attn.k_proj.weight", L), W(r, "%sself_attn.k_proj.bias", L),
                        d, d, k + t * d);
                ref_lin(h + t * d, W(r, "%sself_attn.v_proj.weight", L), W(r, "%sself_attn.v_proj.bias", L),
                        d, d, v + t * d);
            }
        }
        for (int hh = 0; hh < r->heads; hh++)
            for (int t = 0; t < T; t++) {
                double s[T], mx = -1e300, z = 0;
                for (int u = 0; u <= t; u++) { /* causal */
                    double dot = 0;
                    for (int i = 0; i < hd; i++)
                        dot += q[t * d + hh * hd + i] * k[u * d + hh * hd + i];
                    s[u] = dot / sqrt((double)hd);
                    mx = fmax(mx, s[u]);
                }
                for (int u = 0; u <= t; u++)
                    z += (s[u] = exp(s[u] - mx));
                for (int i = 0; i < hd; i++) {
                    double acc = 0;
                    for (int u = 0; u <= t; u++)
                        acc += s[u] / z * v[u * d + hh * hd + i];
                    a[t * d + hh * hd + i] = acc;
                }
            }
        for (int t = 0; t < T; t++) {
            if (r->openclip)
                ref_lin(a + t * d, W(r, "%sattn.out_proj.weight", L), W(r, "%sattn.out_proj.bias", L), d, d,
                        o);
            else
                ref_lin(a + t * d, W(r, "%sself_attn.out_proj.weight", L),
                        W(r, "%sself_attn.out_proj.bias", L), d, d, o);
            for (int i = 0; i < d; i++)
                x[t * d + i] += o[i];
            if (r->openclip) {
                ref_ln(x + t * d, h, d, W(r, "%sln_2.weight", L), W(r, "%sln_2.bias", L));
                ref_lin(h, W(r, "%smlp.c_fc.weight", L), W(r, "%smlp.c_fc.bias", L), d, ff, m);
            } else {
                ref_ln(x + t * d, h, d, W(r, "%slayer_norm2.weight", L), W(r, "%slayer_norm2.bias", L));
                ref_lin(h, W(r, "%smlp.fc1.weight", L), W(r, "%smlp.fc1.bias", L), d, ff, m);
            }
            for (int i = 0; i < ff; i++)
                m[i] =
                    r->quick ? m[i] / (1.0 + exp(-1.702 * m[i])) : 0.5 * m[i] * (1.0 + erf(m[i] / sqrt(2.0)));
            if (r->openclip)
                ref_lin(m, W(r, "%smlp.c_proj.weight", L), W(r, "%smlp.c_proj.bias", L), ff, d, o);
            else
                ref_lin(m, W(r, "%smlp.fc2.weight", L), W(r, "%smlp.fc2.bias", L), ff, d, o);
            for (int i = 0; i < d; i++)
                x[t * d + i] += o[i];
        }
    }
    for (int t = 0; t < T; t++) {
        if (r->openclip)
            ref_ln(x + t * d, out + t * d, d, W(r, "%sln_final.weight", P), W(r, "%sln_final.bias", P));
        else
            ref_ln(x + t * d, out + t * d, d, W(r, "%sfinal_layer_norm.weight", P),
                   W(r, "%sfinal_layer_norm.bias", P));
    }
    free(x);
    free(h);
    free(q);
    free(k);
    free(v);
    free(a);
    free(m);
    free(o);
    free(qkv);
}

static double max_diff(const float *a, const double *b, size_t n)
{
    double e = 0;
    for (size_t i = 0; i < n; i++)
        e = fmax(e, fabs((double)a[i] - b[i]));
    return e;
}

/* ---- tests ---- */

static void test_tiny_hf(void **state)
{
    (void)state;
    char err[512];
    const char *path = tmp_path("clip_tiny.safetensors");
    assert_int_equal(sde_mkmodel_tiny(path, 5, err, sizeof err), 0);
    sde_ckpt *c;
    if (sde_ckpt_open(path, &c, err, sizeof err)) fail_msg("%s", err);
    sde_clip *m;
    if (sde_clip_build(c, &m, err, sizeof err)) fail_msg("%s", err);
    const sde_clip_config *g = sde_clip_get_config(m);
    assert_int_equal(g->dim, 64);
    assert_int_equal(g->layers, 2);
    assert_int_equal(g->heads, 2);
    assert_int_equal(g->quick_gelu, 1);
    assert_int_equal(g->vocab, 514);
    assert_int_equal(g->openclip, 0);
    assert_int_equal(sde_clip_pad_id(m, 513), 513);
    assert_int_equal(sde_clip_dim(m), 64);

    const char *vj = sde_ckpt_meta(c, "sdw.tokenizer.vocab_json"),
               *mg = sde_ckpt_meta(c, "sdw.tokenizer.merges");
    assert_non_null(vj);
    assert_non_null(mg);
    sde_tokenizer *tok;
    if (sde_tok_load_mem(vj, strlen(vj), mg, strlen(mg), &tok, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(sde_tok_vocab_size(tok), 514);
    int32_t ids[77];
    sde_tok_context(tok, "a photo of a cat", sde_clip_pad_id(m, sde_tok_eos(tok)), ids);
    assert_int_equal(ids[0], sde_tok_bos(tok));

    float *out = malloc(77 * 64 * sizeof(float));
    double *ref = malloc(77 * 64 * sizeof(double));
    sde_clip_encode(m, ids, out);
    ref_model r = {.c = c, .d = 64, .ff = 256, .heads = 2, .layers = 2, .quick = 1};
    ref_encode(&r, ids, ref);
    double e = max_diff(out, ref, 77 * 64);
    print_message("tiny HF text encoder: max |diff| vs double reference %.3g\n", e);
    assert_true(e < 1e-4);
    /* LayerNorm output: unit scale, so the comparison above is not trivially small */
    double ss = 0;
    for (int i = 0; i < 64; i++)
        ss += (double)out[5 * 64 + i] * out[5 * 64 + i];
    assert_true(fabs(ss / 64 - 1.0) < 0.01);

    /* causal: a token only affects its own and later positions */
    float *out2 = malloc(77 * 64 * sizeof(float));
    int32_t ids2[77];
    memcpy(ids2, ids, sizeof ids);
    ids2[3] = ids2[3] == 300 ? 301 : 300;
    sde_clip_encode(m, ids2, out2);
    for (int i = 0; i < 3 * 64; i++)
        assert_true(fabsf(out[i] - out2[i]) < 1e-5f);
    double d3 = 0, d70 = 0;
    for (int i = 0; i < 64; i++) {
        d3 = fmax(d3, fabs(out[3 * 64 + i] - out2[3 * 64 + i]));
        d70 = fmax(d70, fabs(out[70 * 64 + i] - out2[70 * 64 + i]));
    }
    assert_true(d3 > 1e-3 && d70 > 1e-4);
    /* out-of-range ids do not crash and encode like the pad token */
    ids2[3] = 99999;
    sde_clip_encode(m, ids2, out2);
    ids2[3] = 513;
    float *out3 = malloc(77 * 64 * sizeof(float));
    sde_clip_encode(m, ids2, out3);
    assert_memory_equal(out2, out3, 77 * 64 * sizeof(float));
    /* deterministic */
    sde_clip_encode(m, ids, out2);
    assert_memory_equal(out, out2, 77 * 64 * sizeof(float));
    assert_true(sde_clip_params(m) > 64 * 514);

    free(out);
    free(out2);
    free(out3);
    free(ref);
    sde_tok_free(tok);
    sde_clip_free(m);
    sde_ckpt_free(c);
    remove(path);
}

/* ---- a hand-written safetensors file (F32, random values) ---- */

typedef struct {
    char name[256];
    int ndim;
    int64_t shape[2];
    float fill; /* NAN: random N(0, 1/sqrt(fan_in)) */
} st_entry;

static void write_st(const char *path, const st_entry *e, int n, const char *meta_json)
{
    char *h = malloc(1 << 16);
    size_t off = 0;
    int len = snprintf(h, 1 << 16, "{\"__metadata__\":{%s}", meta_json);
    for (int i = 0; i < n; i++) {
        int64_t ne = e[i].shape[0] * (e[i].ndim > 1 ? e[i].shape[1] : 1);
        if (e[i].ndim == 1)
            len += snprintf(h + len, (1 << 16) - len,
                            ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld],\"data_offsets\":[%zu,%zu]}",
                            e[i].name, (long long)e[i].shape[0], off, off + 4 * (size_t)ne);
        else
            len += snprintf(h + len, (1 << 16) - len,
                            ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],\"data_offsets\":[%zu,%zu]}",
                            e[i].name, (long long)e[i].shape[0], (long long)e[i].shape[1], off,
                            off + 4 * (size_t)ne);
        off += 4 * (size_t)ne;
    }
    len += snprintf(h + len, (1 << 16) - len, "}");
    while (len % 8)
        h[len++] = ' ';
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t hl = (uint64_t)len;
    fwrite(&hl, 8, 1, f);
    fwrite(h, 1, (size_t)len, f);
    sde_philox rng;
    sde_philox_init(&rng, 11);
    for (int i = 0; i < n; i++) {
        int64_t ne = e[i].shape[0] * (e[i].ndim > 1 ? e[i].shape[1] : 1);
        float *v = malloc((size_t)ne * sizeof *v);
        if (isnan(e[i].fill)) {
            sde_philox_randn(&rng, v, (size_t)ne);
            float sd = e[i].ndim > 1 ? 1.f / sqrtf((float)e[i].shape[1]) : 0.1f;
            for (int64_t j = 0; j < ne; j++)
                v[j] *= sd;
        } else {
            for (int64_t j = 0; j < ne; j++)
                v[j] = e[i].fill;
        }
        fwrite(v, sizeof *v, (size_t)ne, f);
        free(v);
    }
    fclose(f);
    free(h);
}

static int openclip_entries(st_entry *e, int d, int vocab, int blocks)
{
    int n = 0;
#define ADD(nd, a, b, fl, ...)                                                                               \
    do {                                                                                                     \
        snprintf(e[n].name, sizeof e[n].name, __VA_ARGS__);                                                  \
        e[n].ndim = nd;                                                                                      \
        e[n].shape[0] = a;                                                                                   \
        e[n].shape[1] = b;                                                                                   \
        e[n].fill = fl;                                                                                      \
        n++;                                                                                                 \
    } while (0)
    const char *P = "cond_stage_model.model.";
    ADD(2, vocab, d, NAN, "%stoken_embedding.weight", P);
    ADD(2, 77, d, NAN, "%spositional_embedding", P);
    for (int l = 0; l < blocks; l++) {
        char L[64];
        snprintf(L, sizeof L, "%stransformer.resblocks.%d.", P, l);
        ADD(1, d, 0, NAN, "%sln_1.weight", L);
        ADD(1, d, 0, NAN, "%sln_1.bias", L);
        ADD(2, 3 * d, d, NAN, "%sattn.in_proj_weight", L);
        ADD(1, 3 * d, 0, NAN, "%sattn.in_proj_bias", L);
        ADD(2, d, d, NAN, "%sattn.out_proj.weight", L);
        ADD(1, d, 0, NAN, "%sattn.out_proj.bias", L);
        ADD(1, d, 0, 1.f, "%sln_2.weight", L);
        ADD(1, d, 0, 0.f, "%sln_2.bias", L);
        ADD(2, 4 * d, d, NAN, "%smlp.c_fc.weight", L);
        ADD(1, 4 * d, 0, NAN, "%smlp.c_fc.bias", L);
        ADD(2, d, 4 * d, NAN, "%smlp.c_proj.weight", L);
        ADD(1, d, 0, NAN, "%smlp.c_proj.bias", L);
    }
    ADD(1, d, 0, 1.f, "%sln_final.weight", P);
    ADD(1, d, 0, 0.f, "%sln_final.bias", P);
    ADD(2, d, d, NAN, "%stext_projection", P);
#undef ADD
    return n;
}

static void test_openclip_penultimate(void **state)
{
    (void)state;
    char err[512];
    static st_entry e[64];
    int n = openclip_entries(e, 96, 600, 3);
    const char *path = tmp_path("clip_openclip.safetensors");
    write_st(path, e, n, "\"sdw.text.num_heads\":\"3\"");
    sde_ckpt *c;
    if (sde_ckpt_open(path, &c, err, sizeof err)) fail_msg("%s", err);
    sde_clip *m;
    if (sde_clip_build(c, &m, err, sizeof err)) fail_msg("%s", err);
    const sde_clip_config *g = sde_clip_get_config(m);
    assert_int_equal(g->openclip, 1);
    assert_int_equal(g->layers, 2); /* 3 resblocks, the last one skipped */
    assert_int_equal(g->heads, 3);
    assert_int_equal(g->quick_gelu, 0);
    assert_int_equal(g->pad_zero, 1);
    assert_int_equal(sde_clip_pad_id(m, 599), 0);
    int32_t ids[77] = {598, 10, 20, 30, 599};
    float *out = malloc(77 * 96 * sizeof(float));
    double *ref = malloc(77 * 96 * sizeof(double));
    sde_clip_encode(m, ids, out);
    ref_model r = {.c = c, .openclip = 1, .d = 96, .ff = 384, .heads = 3, .layers = 2, .quick = 0};
    ref_encode(&r, ids, ref);
    double d2 = max_diff(out, ref, 77 * 96);
    r.layers = 3; /* running the last block too must give something else */
    ref_encode(&r, ids, ref);
    double d3 = max_diff(out, ref, 77 * 96);
    print_message("OpenCLIP: max |diff| vs reference %.3g (vs all blocks: %.3g)\n", d2, d3);
    assert_true(d2 < 1e-4);
    assert_true(d3 > 1e-2);
    free(out);
    free(ref);
    sde_clip_free(m);
    sde_ckpt_free(c);
    remove(path);
}

static void test_errors_name_the_tensor(void **state)
{
    (void)state;
    char err[512];
    static st_entry e[64];
    const char *path = tmp_path("clip_bad.safetensors");
    sde_ckpt *c;
    sde_clip *m = NULL;

    /* a missing tensor in block 1 */
    int n = openclip_entries(e, 64, 100, 3);
    for (int i = 0; i < n; i++)
        if (strstr(e[i].name, "resblocks.1.mlp.c_proj.bias")) e[i] = e[--n];
    write_st(path, e, n, "");
    if (sde_ckpt_open(path, &c, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(sde_clip_build(c, &m, err, sizeof err), -1);
    assert_null(m);
    print_message("missing: %s\n", err);
    assert_non_null(strstr(err, "resblocks.1.mlp.c_proj.bias"));
    sde_ckpt_free(c);

    /* a wrongly shaped tensor */
    n = openclip_entries(e, 64, 100, 3);
    for (int i = 0; i < n; i++)
        if (strstr(e[i].name, "resblocks.0.attn.out_proj.weight")) e[i].shape[1] = 32;
    write_st(path, e, n, "");
    if (sde_ckpt_open(path, &c, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(sde_clip_build(c, &m, err, sizeof err), -1);
    print_message("shape: %s\n", err);
    assert_non_null(strstr(err, "resblocks.0.attn.out_proj.weight"));
    sde_ckpt_free(c);

    /* heads that do not divide the width; an unknown activation */
    n = openclip_entries(e, 64, 100, 3);
    write_st(path, e, n, "\"sdw.text.num_heads\":\"5\"");
    assert_int_equal(sde_ckpt_open(path, &c, err, sizeof err), 0);
    assert_int_equal(sde_clip_build(c, &m, err, sizeof err), -1);
    assert_non_null(strstr(err, "sdw.text.num_heads"));
    sde_ckpt_free(c);
    write_st(path, e, n, "\"sdw.text.act\":\"relu\"");
    assert_int_equal(sde_ckpt_open(path, &c, err, sizeof err), 0);
    assert_int_equal(sde_clip_build(c, &m, err, sizeof err), -1);
    assert_non_null(strstr(err, "sdw.text.act"));
    sde_ckpt_free(c);

    /* no text encoder at all */
    n = openclip_entries(e, 64, 100, 3);
    snprintf(e[0].name, sizeof e[0].name, "something.else");
    write_st(path, e, n, "");
    assert_int_equal(sde_ckpt_open(path, &c, err, sizeof err), 0);
    assert_int_equal(sde_clip_build(c, &m, err, sizeof err), -1);
    assert_non_null(strstr(err, "no text encoder"));
    sde_ckpt_free(c);
    remove(path);
}

int main(void)
{
    const char *t = getenv("SDW_TMPDIR");
    snprintf(g_tmp, sizeof g_tmp, "%s", t ? t : "/tmp");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_hf),
        cmocka_unit_test(test_openclip_penultimate),
        cmocka_unit_test(test_errors_name_the_tensor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
