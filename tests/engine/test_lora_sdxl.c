/* test_lora_sdxl.c: LoRA name mapping on a tiny SDXL-shaped checkpoint: kohya lora_te1_ (CLIP-L), lora_te2_
 * (OpenCLIP bigG, q/k/v as row blocks of the fused in_proj), lora_unet_ with LDM and diffusers block names,
 * PEFT unet./text_encoder_2. keys; merged = W + w*alpha/rank*up@down, the rest untouched, removal exact;
 * F16/BF16 checkpoints keep the dtype in their merged copies (the float32 merge rounded to it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "dtype_convert.h"
#include "lora.h"
#include "mkmodel_random.h"
#include "st_test_writer.h"

#define MAXT 64
#define UNET "model.diffusion_model."
#define TE1 "conditioner.embedders.0.transformer.text_model.encoder.layers."
#define TE2 "conditioner.embedders.1.model.transformer.resblocks."

typedef struct {
    stw_tensor t[MAXT];
    float *data[MAXT];
    int n;
    uint32_t st;
} tset;

static float frand(uint32_t *st)
{
    *st = *st * 1664525u + 1013904223u;
    return (float)((*st >> 8) & 0xffff) / 65536.f - 0.5f;
}

/* Adds an F32 tensor of the given shape with random values (or all `fill` when fill != 0). */
static void add(tset *s, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                float fill)
{
    int64_t sh[4] = {d0, d1, d2, d3}, n = 1;
    stw_tensor *t = &s->t[s->n];
    t->name = strdup(name);
    t->dtype = "F32";
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = sh[i];
        n *= sh[i];
    }
    float *v = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        v[i] = fill != 0.f ? fill : frand(&s->st);
    t->data = v;
    t->nbytes = (size_t)n * sizeof(float);
    s->data[s->n++] = v;
}

static void tset_free(tset *s)
{
    for (int i = 0; i < s->n; i++) {
        free((void *)s->t[i].name);
        free(s->data[i]);
    }
}

/* The smallest checkpoint the UNet config inference takes as SDXL-shaped: 3 levels of 2 res blocks, linear
 * proj_in, depth 2 at level 1, label_emb; plus a few layers of both text encoders. */
static void make_ckpt(tset *s)
{
    add(s, UNET "input_blocks.0.0.weight", 4, 4, 4, 3, 3, 0);
    add(s, UNET "out.2.weight", 4, 4, 4, 3, 3, 0);
    for (int i = 1; i <= 8; i++) {
        if (i == 3 || i == 6) continue;
        char n[128];
        int c = i < 3 ? 4 : i < 6 ? 8 : 16;
        snprintf(n, sizeof n, UNET "input_blocks.%d.0.in_layers.2.weight", i);
        add(s, n, 4, c, c, 3, 3, 0);
        snprintf(n, sizeof n, UNET "input_blocks.%d.0.out_layers.3.weight", i);
        add(s, n, 4, c, c, 3, 3, 0);
    }
    add(s, UNET "input_blocks.3.0.op.weight", 4, 4, 4, 3, 3, 0);
    add(s, UNET "input_blocks.6.0.op.weight", 4, 8, 8, 3, 3, 0);
    add(s, UNET "input_blocks.4.1.proj_in.weight", 2, 8, 8, 0, 0, 0);
    add(s, UNET "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight", 2, 8, 8, 0, 0, 0);
    add(s, UNET "input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight", 2, 8, 8, 0, 0, 0);
    add(s, UNET "middle_block.1.transformer_blocks.0.attn1.to_q.weight", 2, 16, 16, 0, 0, 0);
    add(s, UNET "middle_block.1.transformer_blocks.0.attn2.to_k.weight", 2, 16, 12, 0, 0, 0);
    add(s, UNET "label_emb.0.0.weight", 2, 4, 6, 0, 0, 0);
    add(s, TE1 "0.self_attn.q_proj.weight", 2, 8, 8, 0, 0, 0);
    add(s, TE1 "0.mlp.fc2.weight", 2, 8, 16, 0, 0, 0);
    for (int l = 0; l < 2; l++) {
        char n[128];
        snprintf(n, sizeof n, TE2 "%d.attn.in_proj_weight", l);
        add(s, n, 2, 30, 10, 0, 0, 0);
        snprintf(n, sizeof n, TE2 "%d.attn.out_proj.weight", l);
        add(s, n, 2, 10, 10, 0, 0, 0);
        snprintf(n, sizeof n, TE2 "%d.mlp.c_fc.weight", l);
        add(s, n, 2, 40, 10, 0, 0, 0);
    }
}

/* One LoRA module: the checkpoint tensor it must change, the rows it must change, and its shapes. */
typedef struct {
    const char *key;    /* module prefix in the LoRA file */
    int peft;           /* lora_A / lora_B (no alpha: alpha = rank) instead of lora_down / lora_up / alpha */
    const char *target; /* checkpoint tensor */
    int64_t row0, out, in;
    int conv; /* 1x1-conv shaped down/up */
} mod;

static const mod MODS[] = {
    {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 0, TE1 "0.self_attn.q_proj.weight", 0, 8, 8, 0},
    {"lora_te1_text_model_encoder_layers_0_mlp_fc2", 0, TE1 "0.mlp.fc2.weight", 0, 8, 16, 0},
    {"lora_te2_text_model_encoder_layers_1_self_attn_k_proj", 0, TE2 "1.attn.in_proj_weight", 10, 10, 10, 0},
    {"lora_te2_text_model_encoder_layers_0_self_attn_out_proj", 0, TE2 "0.attn.out_proj.weight", 0, 10, 10,
     0},
    {"lora_te2_text_model_encoder_layers_1_mlp_fc1", 0, TE2 "1.mlp.c_fc.weight", 0, 40, 10, 0},
    {"text_encoder_2.text_model.encoder.layers.0.self_attn.v_proj", 1, TE2 "0.attn.in_proj_weight", 20, 10,
     10, 0},
    {"lora_unet_input_blocks_4_1_proj_in", 0, UNET "input_blocks.4.1.proj_in.weight", 0, 8, 8, 0},
    {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", 0,
     UNET "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight", 0, 8, 8, 0},
    {"lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k", 0,
     UNET "middle_block.1.transformer_blocks.0.attn2.to_k.weight", 0, 16, 12, 0},
    {"unet.down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q", 1,
     UNET "input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight", 0, 8, 8, 0},
    {"base_model.model.unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q", 1,
     UNET "middle_block.1.transformer_blocks.0.attn1.to_q.weight", 0, 16, 16, 0},
};
#define NMOD ((int)(sizeof MODS / sizeof *MODS))
#define RANK 2

static void make_lora(tset *s)
{
    char n[256];
    for (int m = 0; m < NMOD; m++) {
        const mod *d = &MODS[m];
        snprintf(n, sizeof n, "%s.%s.weight", d->key, d->peft ? "lora_A" : "lora_down");
        add(s, n, 2, RANK, d->in, 0, 0, 0);
        snprintf(n, sizeof n, "%s.%s.weight", d->key, d->peft ? "lora_B" : "lora_up");
        add(s, n, 2, d->out, RANK, 0, 0, 0);
        if (!d->peft) {
            snprintf(n, sizeof n, "%s.alpha", d->key);
            add(s, n, 0, 0, 0, 0, 0, 3.f); /* alpha 3, rank 2: scale 1.5 */
        }
    }
    /* a module of a layer the model does not have, and a key of no known kind: reported, not fatal */
    add(s, "lora_te2_text_model_encoder_layers_7_self_attn_q_proj.lora_down.weight", 2, RANK, 10, 0, 0, 0);
    add(s, "lora_te2_text_model_encoder_layers_7_self_attn_q_proj.lora_up.weight", 2, 10, RANK, 0, 0, 0);
    add(s, "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.hada_w1_a", 2, RANK, 10, 0, 0, 0);
}

static const float *find_data(const tset *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->t[i].name, name)) return s->data[i];
    fail_msg("no tensor %s", name);
    return NULL;
}

static const stw_tensor *find_t(const tset *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->t[i].name, name)) return &s->t[i];
    return NULL;
}

/* Every module's rows of view (the float32 merge) = W + w*alpha/rank*up@down within 1e-5; marks the
 * tensors touched in changed (when given) and returns the largest |error|. */
static double check_merge(const tset *ck, const tset *lo, const mod *mods, int nmod, const float *const *view,
                          float w, int *changed)
{
    double worst = 0;
    for (int m = 0; m < nmod; m++) {
        const mod *d = &mods[m];
        char n[256];
        snprintf(n, sizeof n, "%s.%s.weight", d->key, d->peft ? "lora_A" : "lora_down");
        const float *dn = find_data(lo, n);
        snprintf(n, sizeof n, "%s.%s.weight", d->key, d->peft ? "lora_B" : "lora_up");
        const float *up = find_data(lo, n);
        double scale = w * (d->peft ? 1.0 : 3.0 / RANK);
        int ti = -1;
        for (int i = 0; i < ck->n; i++)
            if (!strcmp(ck->t[i].name, d->target)) ti = i;
        assert_true(ti >= 0);
        if (changed) changed[ti] = 1;
        for (int64_t o = 0; o < d->out; o++)
            for (int64_t i = 0; i < d->in; i++) {
                double delta = 0;
                for (int r = 0; r < RANK; r++)
                    delta += (double)up[o * RANK + r] * dn[r * d->in + i];
                size_t k = (size_t)((d->row0 + o) * d->in + i);
                double want = ck->data[ti][k] + scale * delta;
                double e = fabs(view[ti][k] - want);
                worst = e > worst ? e : worst;
                if (e > 1e-5) fail_msg("%s: %s[%zu] = %g, want %g", d->key, d->target, k, view[ti][k], want);
            }
    }
    return worst;
}

static void test_sdxl_lora_merge_and_restore(void **state)
{
    (void)state;
    char *dir = stw_mkdtemp("lora-sdxl");
    assert_non_null(dir);
    char cpath[600], lpath[600], err[512], warn[512] = "";
    snprintf(cpath, sizeof cpath, "%s/tiny-sdxl.safetensors", dir);
    snprintf(lpath, sizeof lpath, "%s/lora.safetensors", dir);
    tset ck = {.st = 1}, lo = {.st = 7};
    make_ckpt(&ck);
    make_lora(&lo);
    assert_int_equal(stw_write_tensors(cpath, ck.t, ck.n, NULL), 0);
    assert_int_equal(stw_write_tensors(lpath, lo.t, lo.n, NULL), 0);

    sde_ckpt *c;
    if (sde_ckpt_open(cpath, &c, err, sizeof err)) fail_msg("%s", err);
    /* every float32 view the merge may touch, taken before it (f32 data is used in place) */
    const float *view[MAXT];
    for (int i = 0; i < ck.n; i++) {
        view[i] = sde_ckpt_f32(c, ck.t[i].name, ck.t[i].ndim, ck.t[i].shape, err, sizeof err);
        if (!view[i]) fail_msg("%s", err);
    }
    sde_lora_undo *undo = NULL;
    int unused = 0;
    const float w = 0.7f;
    if (sde_lora_apply(c, lpath, w, &undo, &unused, warn, sizeof warn, err, sizeof err)) fail_msg("%s", err);
    printf("unused %d, warning: %s\n", unused, warn);
    assert_int_equal(unused, 3); /* the layer-7 module's two tensors and the unknown key */
    assert_true(warn[0] != 0);

    /* expected: each target's block of rows += w * alpha/rank * up @ down, every other value as written */
    int changed[MAXT] = {0};
    double worst = check_merge(&ck, &lo, MODS, NMOD, view, w, changed);
    printf("merged weights: max |error| %.3g against W + w*alpha/rank*up@down\n", worst);
    /* rows outside the blocks the modules own stay: in_proj layer 1 has only k (rows 10..19) changed */
    const stw_tensor *ip1 = find_t(&ck, TE2 "1.attn.in_proj_weight");
    for (int i = 0; i < ck.n; i++)
        if (&ck.t[i] == ip1) {
            assert_memory_equal(view[i], ck.data[i], 10 * 10 * sizeof(float));
            assert_memory_equal(view[i] + 200, ck.data[i] + 200, 10 * 10 * sizeof(float));
        }
    for (int i = 0; i < ck.n; i++)
        if (!changed[i]) assert_memory_equal(view[i], ck.data[i], ck.t[i].nbytes);

    sde_lora_restore(c, undo);
    for (int i = 0; i < ck.n; i++) {
        const float *v = sde_ckpt_f32(c, ck.t[i].name, ck.t[i].ndim, ck.t[i].shape, err, sizeof err);
        assert_non_null(v);
        assert_memory_equal(v, ck.data[i], ck.t[i].nbytes);
    }
    sde_ckpt_free(c);
    tset_free(&ck);
    tset_free(&lo);
    unlink(cpath);
    unlink(lpath);
    rmdir(dir);
    free(dir);
}

/* Modules the 16-bit test adds: a tensor merged in several row blocks (96000 values, more than lora.c's
 * scratch of 65536) and one whose single row is longer than the scratch. */
static const mod MODS_BIG[] = {
    {"lora_te1_text_model_encoder_layers_0_mlp_fc1", 0, TE1 "0.mlp.fc1.weight", 0, 600, 160, 0},
    {"lora_te1_text_model_encoder_layers_0_self_attn_k_proj", 0, TE1 "0.self_attn.k_proj.weight", 0, 3, 70000,
     0},
};
#define NMOD_BIG ((int)(sizeof MODS_BIG / sizeof *MODS_BIG))

/* A 16-bit (dt) checkpoint read through weight handles, as the models read it: the merge gives each touched
 * weight a private copy in dt whose values are exactly the float32 merge (of the same weights in an F32
 * file) rounded to nearest even; nothing is converted to float32; untouched weights stay in the mapping;
 * the restore points every handle at the file's bytes again. */
static void lora_16bit_copy(sde_dtype dt, const char *dtname, sde_wtype wt)
{
    char *dir = stw_mkdtemp("lora-16bit");
    assert_non_null(dir);
    char p32[600], p16[600], lpath[600], err[512], warn[512] = "";
    snprintf(p32, sizeof p32, "%s/tiny-f32.safetensors", dir);
    snprintf(p16, sizeof p16, "%s/tiny-%s.safetensors", dir, dtname);
    snprintf(lpath, sizeof lpath, "%s/lora.safetensors", dir);
    tset ck = {.st = 1}, lo = {.st = 7};
    make_ckpt(&ck);
    make_lora(&lo);
    add(&ck, TE1 "0.mlp.fc1.weight", 2, 600, 160, 0, 0, 0);
    add(&ck, TE1 "0.self_attn.k_proj.weight", 2, 3, 70000, 0, 0, 0);
    char n[256];
    for (int m = 0; m < NMOD_BIG; m++) {
        const mod *d = &MODS_BIG[m];
        snprintf(n, sizeof n, "%s.lora_down.weight", d->key);
        add(&lo, n, 2, RANK, d->in, 0, 0, 0);
        snprintf(n, sizeof n, "%s.lora_up.weight", d->key);
        add(&lo, n, 2, d->out, RANK, 0, 0, 0);
        snprintf(n, sizeof n, "%s.alpha", d->key);
        add(&lo, n, 0, 0, 0, 0, 0, 3.f);
    }
    /* the same weights in both files: values dt holds, as F32 and as dt */
    stw_tensor t16[MAXT];
    uint16_t *b16[MAXT];
    for (int i = 0; i < ck.n; i++) {
        size_t cnt = ck.t[i].nbytes / sizeof(float);
        b16[i] = malloc(cnt * 2);
        assert_int_equal(sde_cvt_from_f32(dt, ck.data[i], cnt, b16[i]), 0);
        assert_int_equal(sde_cvt_to_f32(dt, b16[i], cnt, ck.data[i]), 0);
        t16[i] = ck.t[i];
        t16[i].dtype = dtname;
        t16[i].data = b16[i];
        t16[i].nbytes = cnt * 2;
    }
    assert_int_equal(stw_write_tensors(p32, ck.t, ck.n, NULL), 0);
    assert_int_equal(stw_write_tensors(p16, t16, ck.n, NULL), 0);
    assert_int_equal(stw_write_tensors(lpath, lo.t, lo.n, NULL), 0);
    const float w = 0.7f;

    /* reference: the float32 merge of the F32 file (its float views are edited: float32 sums) */
    sde_ckpt *c32, *c16;
    if (sde_ckpt_open(p32, &c32, err, sizeof err)) fail_msg("%s", err);
    const float *view[MAXT];
    for (int i = 0; i < ck.n; i++)
        if (!(view[i] = sde_ckpt_f32(c32, ck.t[i].name, ck.t[i].ndim, ck.t[i].shape, err, sizeof err)))
            fail_msg("%s", err);
    sde_lora_undo *u32 = NULL, *u16 = NULL;
    int unused = 0;
    if (sde_lora_apply(c32, lpath, w, &u32, &unused, warn, sizeof warn, err, sizeof err)) fail_msg("%s", err);
    check_merge(&ck, &lo, MODS, NMOD, view, w, NULL);
    check_merge(&ck, &lo, MODS_BIG, NMOD_BIG, view, w, NULL);

    /* the 16-bit file through weight handles */
    if (sde_ckpt_open(p16, &c16, err, sizeof err)) fail_msg("%s", err);
    const sde_weight *h[MAXT];
    const void *mapped[MAXT];
    for (int i = 0; i < ck.n; i++) {
        if (!(h[i] = sde_ckpt_weight(c16, ck.t[i].name, ck.t[i].ndim, ck.t[i].shape, err, sizeof err)))
            fail_msg("%s", err);
        assert_true(h[i]->type == wt);
        mapped[i] = h[i]->data;
    }
    unused = 0;
    if (sde_lora_apply(c16, lpath, w, &u16, &unused, warn, sizeof warn, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(unused, 3);
    assert_int_equal(sde_ckpt_converted_bytes(c16), 0);
    int changed = 0, moved = 0;
    for (int i = 0; i < ck.n; i++) {
        size_t cnt = ck.t[i].nbytes / sizeof(float);
        uint16_t *want = malloc(cnt * 2);
        assert_int_equal(sde_cvt_from_f32(dt, view[i], cnt, want), 0);
        if (memcmp(h[i]->data, want, cnt * 2))
            fail_msg("%s: the %s copy is not the float32 merge rounded", ck.t[i].name, dtname);
        if (memcmp(view[i], ck.data[i], ck.t[i].nbytes)) { /* a target: a private copy of its own dtype */
            changed++;
            assert_true(h[i]->type == wt && h[i]->data != mapped[i] && h[i]->n == cnt);
            moved += memcmp(h[i]->data, b16[i], cnt * 2) != 0;
        } else {
            assert_true(h[i]->type == wt && h[i]->data == mapped[i]);
        }
        free(want);
    }
    printf("%s: %d weights merged into %s copies, %d of them changed after rounding\n", dtname, changed,
           dtname, moved);
    assert_int_equal(changed, 13); /* 11 distinct targets of MODS, 2 of MODS_BIG */
    assert_int_equal(moved, changed);

    sde_lora_restore(c16, u16);
    for (int i = 0; i < ck.n; i++) {
        assert_true(h[i]->type == wt && h[i]->data == mapped[i]);
        assert_memory_equal(h[i]->data, b16[i], t16[i].nbytes);
    }
    sde_lora_restore(c32, u32);
    sde_ckpt_free(c16);
    sde_ckpt_free(c32);
    for (int i = 0; i < ck.n; i++)
        free(b16[i]);
    tset_free(&ck);
    tset_free(&lo);
    unlink(p32);
    unlink(p16);
    unlink(lpath);
    rmdir(dir);
    free(dir);
}

static void test_f16_lora_copy_stays_f16(void **state)
{
    (void)state;
    lora_16bit_copy(SDE_DT_F16, "F16", SDE_W_F16);
}

static void test_bf16_lora_copy_stays_bf16(void **state)
{
    (void)state;
    lora_16bit_copy(SDE_DT_BF16, "BF16", SDE_W_BF16);
}

/* A header-only copy of a random preset: the real names, dtypes and shapes, data a sparse hole of zeros. */
typedef struct {
    stw_buf h;
    uint64_t off;
} sparse_hdr;

static void sparse_add(void *ud, const char *name, const char *dtype, int ndim, const int64_t *shape)
{
    sparse_hdr *s = ud;
    char b[512];
    uint64_t n = !strcmp(dtype, "I64") ? 8 : !strcmp(dtype, "F32") ? 4 : 2;
    int k = snprintf(b, sizeof b, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", s->off || s->h.n > 1 ? "," : "",
                     name, dtype);
    for (int d = 0; d < ndim; d++) {
        k += snprintf(b + k, sizeof b - (size_t)k, d ? ",%lld" : "%lld", (long long)shape[d]);
        n *= (uint64_t)shape[d];
    }
    snprintf(b + k, sizeof b - (size_t)k, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)s->off,
             (unsigned long long)(s->off + n));
    stw_puts(&s->h, b);
    s->off += n;
}

static void write_sparse(const char *path, sde_rand_preset p)
{
    sparse_hdr s = {0};
    stw_puts(&s.h, "{");
    assert_true(sde_mkmodel_random_list(p, 0, sparse_add, &s) > 0);
    stw_puts(&s.h, "}");
    while (s.h.n % 8)
        stw_puts(&s.h, " ");
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)((uint64_t)s.h.n >> (8 * i));
    assert_int_equal(fwrite(len, 1, 8, f), 8);
    assert_int_equal(fwrite(s.h.s, 1, s.h.n, f), s.h.n);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(truncate(path, (off_t)(8 + s.h.n + s.off)), 0);
    free(s.h.s);
}

/* Every module of the random SDXL LoRA (kohya's SDXL names) and of the SD 1.5 one finds a weight of fitting
 * shape in the real checkpoint layouts, which the random presets reproduce name for name. */
static void test_random_presets_match(void **state)
{
    (void)state;
    static const struct {
        sde_rand_preset ck, lora;
        int modules;
    } cases[] = {{SDE_RAND_SDXL, SDE_RAND_LORA_SDXL, 986}, {SDE_RAND_SD15, SDE_RAND_LORA_SD15, 264}};
    char *dir = stw_mkdtemp("lora-match");
    assert_non_null(dir);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char cpath[600], lpath[600], err[512], warn[512] = "";
        snprintf(cpath, sizeof cpath, "%s/ckpt.safetensors", dir);
        snprintf(lpath, sizeof lpath, "%s/lora.safetensors", dir);
        write_sparse(cpath, cases[i].ck);
        if (sde_mkmodel_random(lpath, cases[i].lora, 1, 0, 1, NULL, err, sizeof err)) fail_msg("%s", err);
        sde_ckpt *c;
        if (sde_ckpt_open(cpath, &c, err, sizeof err)) fail_msg("%s", err);
        int matched = 0, unused = 0;
        if (sde_lora_match(c, lpath, &matched, &unused, warn, sizeof warn, err, sizeof err))
            fail_msg("%s", err);
        printf("preset %d: %d modules match, %d keys unused %s\n", (int)cases[i].lora, matched, unused, warn);
        assert_int_equal(matched, cases[i].modules);
        assert_int_equal(unused, 0);
        sde_ckpt_free(c);
        unlink(cpath);
        unlink(lpath);
    }
    rmdir(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sdxl_lora_merge_and_restore),
        cmocka_unit_test(test_f16_lora_copy_stays_f16),
        cmocka_unit_test(test_bf16_lora_copy_stays_bf16),
        cmocka_unit_test(test_random_presets_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
