/* test_checkpoint.c: checkpoint loading: single files (lookup, float32 views, conversion, errors),
 * diffusers folders (name mapping checked against real diffusers spellings and the full SD 1.5 / 2.1
 * name lists of the mkmodel sd15-random / sd21-random presets) and the A1111 short hash (checked against
 * libcrypto's SHA256). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <openssl/sha.h>
#include <time.h>

#include "checkpoint.h"
#include "diffusers_names.h"
#include "dtype_convert.h"
#include "mkmodel_random.h"
#include "st_test_writer.h"

/* A scratch folder inside stw_tmpdir, so the group teardown removes it even after a failure. */
static char *subdir(const char *tag)
{
    char *p = malloc(strlen(stw_tmpdir) + strlen(tag) + 16);
    sprintf(p, "%s/%s-XXXXXX", stw_tmpdir, tag);
    if (!mkdtemp(p)) fail_msg("mkdtemp %s failed", p);
    return p;
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    return (uint16_t)(b >> 16);
}

/* ---------------------------------------------------------------- single file */

/* Weight handles: F16/BF16 stay in the mapping (nothing converted), F32 in place; a LoRA-style edit of a
 * handle-only F16/BF16 tensor gets a private copy in its own dtype (sums rounded to nearest even) and the
 * file's values come back exactly; an edit of a tensor whose float view is the mapping (F32) or a converted
 * copy (F16) is seen through that view and undone too. */
static void test_weight_handles_and_edits(void **state)
{
    (void)state;
    float w[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[8] = {0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x8000, 0x7c00, 0x4248};
    uint16_t h2[4] = {0x3c00, 0x4000, 0x4200, 0x4400}; /* 1 2 3 4 */
    uint16_t bf[3] = {f32_to_bf16(1.5f), f32_to_bf16(-0.25f), f32_to_bf16(1024.0f)};
    stw_tensor t[] = {
        {"a.f32", "F32", 2, {2, 3}, w, sizeof w},
        {"b.f16", "F16", 2, {4, 2}, h, sizeof h},
        {"c.bf16", "BF16", 1, {3}, bf, sizeof bf},
        {"d.f16", "F16", 2, {2, 2}, h2, sizeof h2},
    };
    const char *path = stw_path(stw_tmpdir, "handles.safetensors");
    assert_int_equal(stw_write_tensors(path, t, 4, NULL), 0);
    char err[512] = "";
    sde_ckpt *c = NULL;
    assert_int_equal(sde_ckpt_open(path, &c, err, sizeof err), 0);
    const sde_tensor *ta = sde_ckpt_find(c, "a.f32"), *tb = sde_ckpt_find(c, "b.f16"),
                     *tc = sde_ckpt_find(c, "c.bf16"), *td = sde_ckpt_find(c, "d.f16");

    const sde_weight *wa = sde_ckpt_weight(c, "a.f32", 2, (int64_t[]){2, 3}, err, sizeof err);
    const sde_weight *wb = sde_ckpt_weight(c, "b.f16", 2, (int64_t[]){4, 2}, err, sizeof err);
    const sde_weight *wc = sde_ckpt_weight(c, "c.bf16", 1, (int64_t[]){3}, err, sizeof err);
    assert_non_null(wa);
    assert_non_null(wb);
    assert_non_null(wc);
    assert_true(wa->type == SDE_W_F32 && wa->data == ta->data && wa->n == 6);
    assert_true(wb->type == SDE_W_F16 && wb->data == tb->data && wb->n == 8);
    assert_true(wc->type == SDE_W_BF16 && wc->data == tc->data && wc->n == 3);
    assert_int_equal(sde_ckpt_converted_bytes(c), 0);
    assert_ptr_equal(sde_ckpt_weight(c, "b.f16", 2, (int64_t[]){4, 2}, err, sizeof err), wb);
    assert_null(sde_ckpt_weight(c, "b.f16", 2, (int64_t[]){2, 4}, err, sizeof err));
    stw_assert_contains(err, "tensor \"b.f16\": shape [4, 2] does not match expected [2, 4]");

    /* handle only: a private copy as stored (F16) for the edit, the mapping untouched, the handle back
     * exactly after */
    assert_int_equal(sde_ckpt_edit_add(c, tb, 0, (const float[]){1.0f}, 1, err, sizeof err), -1);
    stw_assert_contains(err, "tensor \"b.f16\": not being edited");
    const sde_weight *e = sde_ckpt_edit_begin(c, tb, err, sizeof err);
    assert_non_null(e);
    assert_true(e->type == SDE_W_F16 && e->n == 8 && e->data != tb->data);
    assert_memory_equal(e->data, h, sizeof h);
    assert_true(wb->type == SDE_W_F16 && wb->data == e->data && wb->n == 8);
    assert_ptr_equal(sde_ckpt_edit_begin(c, tb, err, sizeof err), e);
    /* sums in float32 rounded to f16: 1+41 = 42; -2 - 2^-10 is a tie between -2 and -2-2^-9: even -2;
     * 0.5 + 2^-12 + 2^-20 is past the tie: 0.5 + 2^-11 */
    assert_int_equal(sde_ckpt_edit_add(c, tb, 0, (const float[]){41.0f, -0x1p-10f, 0x1p-12f + 0x1p-20f}, 3,
                                       err, sizeof err),
                     0);
    const uint16_t *eh = e->data;
    assert_int_equal(eh[0], 0x5140);
    assert_int_equal(eh[1], 0xc000);
    assert_int_equal(eh[2], 0x3801);
    assert_memory_equal(eh + 3, h + 3, 5 * 2);
    assert_int_equal(sde_ckpt_edit_add(c, tb, 7, (const float[]){1.0f, 1.0f}, 2, err, sizeof err), -1);
    stw_assert_contains(err, "tensor \"b.f16\": edit outside the tensor");
    assert_memory_equal(tb->data, h, sizeof h);
    assert_int_equal(sde_ckpt_converted_bytes(c), 0);
    sde_ckpt_edit_end(c, tb);
    assert_true(wb->type == SDE_W_F16 && wb->data == tb->data && wb->n == 8);
    assert_memory_equal(wb->data, h, sizeof h);
    sde_ckpt_edit_end(c, tb); /* not being edited: a no-op */
    assert_true(wb->type == SDE_W_F16 && wb->data == tb->data);

    /* F32 with its mapping handed out as a float view: edited in place (float32 sums), values put back */
    const float *va = sde_ckpt_f32(c, "a.f32", 2, (int64_t[]){2, 3}, err, sizeof err);
    assert_ptr_equal(va, ta->data);
    const sde_weight *ea = sde_ckpt_edit_begin(c, ta, err, sizeof err);
    assert_true(ea->data == va && ea->type == SDE_W_F32 && ea->n == 6);
    assert_int_equal(sde_ckpt_edit_add(c, ta, 2, (const float[]){-12.0f, 0x1p-20f}, 2, err, sizeof err), 0);
    assert_true(va[2] == -9.0f && ((const float *)wa->data)[2] == -9.0f && va[3] == 4.0f + 0x1p-20f);
    sde_ckpt_edit_end(c, ta);
    assert_memory_equal(va, w, sizeof w);
    assert_true(wa->data == ta->data && wa->type == SDE_W_F32);

    /* F16 with a converted float view and a handle: both read the edit (float32 values rounded to f16
     * ones), both get the file back */
    const float *vd = sde_ckpt_f32(c, "d.f16", 2, (int64_t[]){2, 2}, err, sizeof err);
    const sde_weight *wd = sde_ckpt_weight(c, "d.f16", 2, (int64_t[]){2, 2}, err, sizeof err);
    assert_true(wd->type == SDE_W_F16 && wd->data == td->data);
    const sde_weight *ed = sde_ckpt_edit_begin(c, td, err, sizeof err);
    assert_true(ed->data == vd && ed->type == SDE_W_F32);
    assert_int_equal(sde_ckpt_edit_add(c, td, 3, (const float[]){0.501f}, 1, err, sizeof err), 0);
    assert_true(vd[3] == 4.5f); /* 4.501 is 0.26 ulp of f16 above 4.5 */
    assert_true(wd->type == SDE_W_F32 && ((const float *)wd->data)[3] == 4.5f);
    sde_ckpt_edit_end(c, td);
    assert_true(vd[0] == 1.0f && vd[3] == 4.0f);
    assert_true(wd->type == SDE_W_F16 && wd->data == td->data);

    /* a handle first asked for during an edit reads the edit, then the file */
    const sde_weight *ec = sde_ckpt_edit_begin(c, tc, err, sizeof err);
    assert_non_null(ec);
    assert_true(ec->type == SDE_W_BF16 && ec->n == 3);
    sde_ckpt_edit_end(c, tc);
    ec = sde_ckpt_edit_begin(c, tc, err, sizeof err);
    assert_int_equal(sde_ckpt_edit_add(c, tc, 1, (const float[]){7.25f}, 1, err, sizeof err), 0);
    sde_ckpt_free(c);
    /* ending the checkpoint with an edit open frees it (ASan checks) */
    assert_int_equal(sde_ckpt_open(path, &c, err, sizeof err), 0);
    tc = sde_ckpt_find(c, "c.bf16");
    ec = sde_ckpt_edit_begin(c, tc, err, sizeof err);
    /* bf16 sums: 1.5 + 2^-8 is a tie (bf16 ulp 2^-7 there): even 1.5; -0.25+7.25 = 7; 1024 + 4 a tie
     * (ulp 8): even 1024 */
    assert_int_equal(sde_ckpt_edit_add(c, tc, 0, (const float[]){0x1p-8f, 7.25f, 4.0f}, 3, err, sizeof err),
                     0);
    const uint16_t *bh = ec->data;
    assert_true(bh[0] == f32_to_bf16(1.5f) && bh[1] == f32_to_bf16(7.0f) && bh[2] == f32_to_bf16(1024.0f));
    assert_int_equal(sde_ckpt_edit_add(c, tc, 0, (const float[]){0x1p-8f + 0x1p-16f}, 1, err, sizeof err), 0);
    assert_true(bh[0] == f32_to_bf16(1.5078125f));
    const sde_weight *wc2 = sde_ckpt_weight(c, "c.bf16", 1, (int64_t[]){3}, err, sizeof err);
    assert_true(wc2->type == SDE_W_BF16 && wc2->data == ec->data);
    sde_ckpt_edit_end(c, tc);
    assert_true(wc2->type == SDE_W_BF16 && wc2->data == tc->data && wc2->n == 3);
    assert_memory_equal(wc2->data, bf, sizeof bf);
    sde_ckpt_free(c);
}

static void test_single_file(void **state)
{
    (void)state;
    float w[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[8] = {0x3c00, 0xc000, 0x3800, 0x7bff,
                     0x0001, 0x8000, 0x7c00, 0x4248}; /* 1 -2 .5 65504 2^-24 -0 inf 3.140625 */
    uint16_t bf[3] = {f32_to_bf16(1.5f), f32_to_bf16(-0.25f), f32_to_bf16(1024.0f)};
    double dd[5] = {0.1, 0.2, 0.3, 1e-3, -7};
    int64_t ids[4] = {0, 1, 2, 3};
    stw_tensor t[] = {
        {"model.diffusion_model.input_blocks.0.0.weight", "F32", 4, {2, 3, 1, 1}, w, sizeof w},
        {"model.diffusion_model.time_embed.0.weight", "F16", 2, {4, 2}, h, sizeof h},
        {"first_stage_model.decoder.conv_in.bias", "BF16", 1, {3}, bf, sizeof bf},
        {"alphas_cumprod", "F64", 1, {5}, dd, sizeof dd},
        {"cond_stage_model.transformer.text_model.embeddings.position_ids",
         "I64",
         2,
         {1, 4},
         ids,
         sizeof ids},
    };
    const char *path = stw_path(stw_tmpdir, "single.safetensors");
    assert_int_equal(stw_write_tensors(path, t, 5, "{\"sdw.preset\":\"tiny\"}"), 0);

    char err[512] = "";
    sde_ckpt *c = NULL;
    assert_int_equal(sde_ckpt_open(path, &c, err, sizeof err), 0);
    assert_string_equal(sde_ckpt_path(c), path);
    assert_int_equal(sde_ckpt_count(c), 5);
    for (int i = 1; i < 5; i++)
        assert_true(strcmp(sde_ckpt_at(c, i - 1)->name, sde_ckpt_at(c, i)->name) < 0);
    assert_null(sde_ckpt_at(c, 5));
    assert_null(sde_ckpt_at(c, -1));
    assert_string_equal(sde_ckpt_meta(c, "sdw.preset"), "tiny");
    assert_null(sde_ckpt_meta(c, "nope"));
    assert_null(sde_ckpt_tokenizer_dir(c));
    assert_null(sde_ckpt_prediction_type(c));

    const sde_tensor *tw = sde_ckpt_find(c, "model.diffusion_model.input_blocks.0.0.weight");
    assert_non_null(tw);
    assert_string_equal(tw->file, path);
    assert_int_equal(tw->dtype, SDE_DT_F32);
    assert_int_equal(tw->ndim, 4);
    assert_int_equal(tw->nbytes, 24);
    assert_null(sde_ckpt_find(c, "model.diffusion_model.input_blocks.0.0"));

    /* Aligned F32: in place, no copy; trailing 1-dims ignored on the stored side and the asked side. */
    const float *p = sde_ckpt_f32(c, tw->name, 2, (int64_t[]){2, 3}, err, sizeof err);
    assert_ptr_equal(p, tw->data);
    assert_ptr_equal(sde_ckpt_f32(c, tw->name, 5, (int64_t[]){2, 3, 1, 1, 1}, err, sizeof err), tw->data);
    assert_int_equal(sde_ckpt_converted_bytes(c), 0);
    assert_null(sde_ckpt_f32(c, tw->name, 2, (int64_t[]){3, 2}, err, sizeof err));
    stw_assert_contains(err, path);
    stw_assert_contains(err, "tensor \"model.diffusion_model.input_blocks.0.0.weight\": shape [2, 3, 1, 1] "
                             "does not match expected [3, 2]");
    assert_null(sde_ckpt_f32(c, tw->name, 1, (int64_t[]){6}, err, sizeof err));
    assert_null(sde_ckpt_f32(c, tw->name, 3, (int64_t[]){1, 2, 3}, err, sizeof err)); /* leading 1s count */

    /* F16: converted once, exactly. */
    const float *f =
        sde_ckpt_f32(c, "model.diffusion_model.time_embed.0.weight", 2, (int64_t[]){4, 2}, err, sizeof err);
    assert_non_null(f);
    const float want[8] = {1, -2, 0.5f, 65504, 5.9604644775390625e-8f, -0.0f, INFINITY, 3.140625f};
    assert_memory_equal(f, want, sizeof want);
    assert_true(signbit(f[5]));
    assert_int_equal(sde_ckpt_converted_bytes(c), 32);
    assert_ptr_equal(
        sde_ckpt_f32(c, "model.diffusion_model.time_embed.0.weight", 2, (int64_t[]){4, 2}, err, sizeof err),
        f);
    assert_int_equal(sde_ckpt_converted_bytes(c), 32);
    assert_int_equal((uintptr_t)f % 16, 0);
    /* The raw F16 stays readable after its pages were dropped from the mapping. */
    assert_memory_equal(sde_ckpt_find(c, "model.diffusion_model.time_embed.0.weight")->data, h, sizeof h);

    const float *b =
        sde_ckpt_f32(c, "first_stage_model.decoder.conv_in.bias", 1, (int64_t[]){3}, err, sizeof err);
    assert_non_null(b);
    assert_true(b[0] == 1.5f && b[1] == -0.25f && b[2] == 1024.0f);
    const float *d = sde_ckpt_f32(c, "alphas_cumprod", 1, (int64_t[]){5}, err, sizeof err);
    assert_non_null(d);
    for (int i = 0; i < 5; i++)
        assert_true(d[i] == (float)dd[i]);
    assert_int_equal(sde_ckpt_converted_bytes(c), 32 + 12 + 20);

    assert_null(sde_ckpt_f32(c, "cond_stage_model.transformer.text_model.embeddings.position_ids", 2,
                             (int64_t[]){1, 4}, err, sizeof err));
    stw_assert_contains(err, "tensor \"cond_stage_model.transformer.text_model.embeddings.position_ids\": "
                             "dtype I64 is not a floating-point type");
    assert_null(sde_ckpt_f32(c, "model.diffusion_model.out.2.weight", 1, (int64_t[]){4}, err, sizeof err));
    stw_assert_contains(err, path);
    stw_assert_contains(err, "tensor \"model.diffusion_model.out.2.weight\": not found");
    assert_null(sde_ckpt_f32(c, tw->name, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}, err, sizeof err));
    sde_ckpt_free(c);
    sde_ckpt_free(NULL);
}

/* 8 + header length not a multiple of 4 puts F32 data off alignment: it must be copied, not cast. */
static void test_unaligned_f32(void **state)
{
    (void)state;
    float v[5] = {1.25f, -3, 7, 1e-20f, 42};
    stw_tensor t[] = {{"w", "F32", 1, {5}, v, sizeof v}};
    for (int mod = 1; mod < 4; mod++) {
        size_t len;
        uint8_t *img = stw_build(t, 1, NULL, mod, &len);
        const char *path = stw_path(stw_tmpdir, "unaligned.safetensors");
        assert_int_equal(stw_write(path, img, len), 0);
        free(img);
        char err[256];
        sde_ckpt *c;
        assert_int_equal(sde_ckpt_open(path, &c, err, sizeof err), 0);
        const sde_tensor *tt = sde_ckpt_find(c, "w");
        assert_int_not_equal((uintptr_t)tt->data % 4, 0);
        const float *p = sde_ckpt_f32(c, "w", 1, (int64_t[]){5}, err, sizeof err);
        assert_non_null(p);
        assert_ptr_not_equal(p, tt->data);
        assert_memory_equal(p, v, sizeof v);
        assert_int_equal(sde_ckpt_converted_bytes(c), sizeof v);
        sde_ckpt_free(c);
    }
}

/* Every half value: the F16C path, the table path and the scalar reference agree bit for bit. */
static void test_f16_all_values(void **state)
{
    (void)state;
    uint16_t *h = malloc(65536 * 2 + 2);
    float *a = malloc(65536 * 4), *b = malloc(65536 * 4);
    for (uint32_t i = 0; i < 65536; i++)
        h[i] = (uint16_t)i;
    sde_cvt_force_portable(0);
    assert_int_equal(sde_cvt_to_f32(SDE_DT_F16, h, 65536, a), 0);
    sde_cvt_force_portable(1);
    assert_int_equal(sde_cvt_to_f32(SDE_DT_F16, h, 65536, b), 0);
    sde_cvt_force_portable(0);
    for (uint32_t i = 0; i < 65536; i++) {
        float r = sde_cvt_half((uint16_t)i);
        if (isnan(r)) {
            assert_true(isnan(a[i]) && isnan(b[i]));
            continue;
        }
        assert_memory_equal(&a[i], &r, 4);
        assert_memory_equal(&b[i], &r, 4);
    }
    /* Independent reference for normals/subnormals: ldexp arithmetic. */
    for (uint32_t i = 0; i < 0x7c00; i += 7) {
        int e = (int)(i >> 10), m = (int)(i & 0x3ff);
        double ref = e ? ldexp(1.0 + m / 1024.0, e - 15) : ldexp(m / 1024.0, -14);
        assert_true(sde_cvt_half((uint16_t)i) == (float)ref);
        assert_true(sde_cvt_half((uint16_t)(i | 0x8000)) == (float)-ref);
    }
    /* Odd source address (F16 at an odd file offset). */
    uint8_t *odd = (uint8_t *)malloc(2 * 100 + 1);
    for (int i = 0; i < 100; i++)
        memcpy(odd + 1 + 2 * i, &h[0x3c00 + i], 2);
    assert_int_equal(sde_cvt_to_f32(SDE_DT_F16, odd + 1, 100, a), 0);
    for (int i = 0; i < 100; i++)
        assert_true(a[i] == sde_cvt_half((uint16_t)(0x3c00 + i)));
    assert_int_equal(sde_cvt_to_f32(SDE_DT_I32, odd, 1, a), -1);
    free(odd);
    free(h);
    free(a);
    free(b);
}

/* Expected f16/bf16 of the value halfway between consecutive bit patterns lo and lo+1 (positive): the one
 * with the even last bit. */
static uint16_t tie_even(uint16_t lo)
{
    return (lo & 1) ? (uint16_t)(lo + 1) : lo;
}

static float bits_f32(uint32_t b)
{
    float f;
    memcpy(&f, &b, 4);
    return f;
}

/* float32 -> f16 and bf16 (for LoRA merges into 16-bit copies): every 16-bit value is kept, and the values
 * halfway between neighbours, and one float32 ulp either side of those, round to nearest, ties to even,
 * on the F16C and the portable path alike; overflow gives infinity, NaN stays NaN. */
static void test_f32_to_16bit_rounding(void **state)
{
    (void)state;
    enum { N = 4 * 0x7c00 };
    float *x = malloc(N * sizeof(float));
    uint16_t *want = malloc(N * 2), *got = malloc(N * 2);
    /* f16: for each finite positive half v (bits b), v itself, the midpoint to the next one, and the
     * float32 values just below and above that midpoint; then all of it negated */
    size_t n = 0;
    for (uint32_t b = 0; b < 0x7c00; b++) {
        double v = sde_cvt_half((uint16_t)b),
               next = b + 1 < 0x7c00 ? sde_cvt_half((uint16_t)(b + 1)) : 65536.0;
        float mid = (float)((v + next) / 2); /* exact: 12 significant bits */
        assert_true((double)mid == (v + next) / 2);
        uint32_t mb;
        memcpy(&mb, &mid, 4);
        x[n] = (float)v, want[n++] = (uint16_t)b;
        x[n] = mid, want[n++] = tie_even((uint16_t)b);
        x[n] = bits_f32(mb - 1), want[n++] = (uint16_t)b;
        x[n] = bits_f32(mb + 1), want[n++] = (uint16_t)(b + 1); /* past 65504's midpoint: 0x7c00, infinity */
    }
    assert_int_equal(n, N);
    for (int neg = 0; neg < 2; neg++) {
        for (int portable = 0; portable < 2; portable++) {
            sde_cvt_force_portable(portable);
            assert_int_equal(sde_cvt_from_f32(SDE_DT_F16, x, N, got), 0);
            sde_cvt_force_portable(0);
            for (size_t i = 0; i < N; i++)
                if (got[i] != (want[i] | (neg ? 0x8000 : 0)))
                    fail_msg("f16 (portable %d) of %.10g: 0x%04x, want 0x%04x", portable, (double)x[i],
                             got[i], want[i] | (neg ? 0x8000 : 0));
        }
        for (size_t i = 0; i < N; i++)
            x[i] = -x[i];
    }
    /* infinity, huge, NaN; an odd destination address */
    const float sp[] = {INFINITY, -INFINITY, 1e30f, NAN, -NAN};
    uint8_t odd[2 * 5 + 1];
    for (int portable = 0; portable < 2; portable++) {
        sde_cvt_force_portable(portable);
        assert_int_equal(sde_cvt_from_f32(SDE_DT_F16, sp, 5, odd + 1), 0);
        sde_cvt_force_portable(0);
        float back[5];
        assert_int_equal(sde_cvt_to_f32(SDE_DT_F16, odd + 1, 5, back), 0);
        assert_true(back[0] == INFINITY && back[1] == -INFINITY && back[2] == INFINITY);
        assert_true(isnan(back[3]) && isnan(back[4]));
    }
    /* bf16: every finite positive pattern, its midpoint to the next and the float32 values either side */
    n = 0;
    for (uint32_t b = 0; b < 0x7f80 && n + 4 <= N; b += 3) {
        uint32_t mb = b << 16 | 0x8000;
        x[n] = bits_f32(b << 16), want[n++] = (uint16_t)b;
        x[n] = bits_f32(mb), want[n++] = tie_even((uint16_t)b);
        x[n] = bits_f32(mb - 1), want[n++] = (uint16_t)b;
        x[n] = bits_f32(mb + 1), want[n++] = (uint16_t)(b + 1);
    }
    assert_int_equal(sde_cvt_from_f32(SDE_DT_BF16, x, n, got), 0);
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) fail_msg("bf16 of %.10g: 0x%04x, want 0x%04x", (double)x[i], got[i], want[i]);
    float big = bits_f32(0x7f7fffffu), bn = NAN;
    assert_int_equal(sde_cvt_from_f32(SDE_DT_BF16, &big, 1, got), 0);
    assert_int_equal(got[0], 0x7f80); /* past the largest bf16's midpoint: infinity */
    assert_int_equal(sde_cvt_from_f32(SDE_DT_BF16, &bn, 1, got), 0);
    assert_true((got[0] & 0x7f80) == 0x7f80 && (got[0] & 0x7f));
    assert_int_equal(sde_cvt_from_f32(SDE_DT_I32, x, 1, got), -1);
    free(x);
    free(want);
    free(got);
}

/* Conversion must run at memory speed: 1 G parameters in seconds, so 8 M in well under a second. */
static void test_convert_speed(void **state)
{
    (void)state;
    const size_t n = (size_t)8 << 20;
    uint16_t *h = malloc(n * 2);
    for (size_t i = 0; i < n; i++)
        h[i] = (uint16_t)(0x3000 + (i * 2654435761u >> 20) % 0x1000);
    stw_tensor t[] = {{"big", "F16", 2, {2048, 4096}, h, n * 2}};
    const char *path = stw_path(stw_tmpdir, "big.safetensors");
    assert_int_equal(stw_write_tensors(path, t, 1, NULL), 0);
    char err[256];
    sde_ckpt *c;
    assert_int_equal(sde_ckpt_open(path, &c, err, sizeof err), 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const float *f = sde_ckpt_f32(c, "big", 2, (int64_t[]){2048, 4096}, err, sizeof err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_non_null(f);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    print_message("converted 8 M F16 values in %.3f s (%.0f M/s)\n", s, 8.0 / s);
    assert_true(s < 1.0);
    for (size_t i = 0; i < n; i += 4099)
        assert_true(f[i] == sde_cvt_half(h[i]));
    assert_int_equal(sde_ckpt_converted_bytes(c), n * 4);
    sde_ckpt_free(c);
    free(h);
    unlink(path);
}

static void test_name_prefix_variants(void **state)
{
    (void)state;
    float v[2] = {1, 2};
    stw_tensor t[] = {
        {"state_dict.model.diffusion_model.out.2.bias", "F32", 1, {2}, v, sizeof v},
        {"state_dict.first_stage_model.quant_conv.bias", "F32", 1, {2}, v, sizeof v},
    };
    const char *path = stw_path(stw_tmpdir, "sd.safetensors");
    assert_int_equal(stw_write_tensors(path, t, 2, NULL), 0);
    char err[512];
    sde_ckpt *c;
    assert_int_equal(sde_ckpt_open(path, &c, err, sizeof err), 0);
    assert_non_null(sde_ckpt_find(c, "model.diffusion_model.out.2.bias"));
    assert_non_null(sde_ckpt_find(c, "first_stage_model.quant_conv.bias"));
    sde_ckpt_free(c);

    /* A UNet-only extract without the leading "model.". */
    stw_tensor u[] = {{"diffusion_model.out.2.bias", "F32", 1, {2}, v, sizeof v}};
    assert_int_equal(stw_write_tensors(path, u, 1, NULL), 0);
    assert_int_equal(sde_ckpt_open(path, &c, err, sizeof err), 0);
    assert_non_null(sde_ckpt_find(c, "model.diffusion_model.out.2.bias"));
    sde_ckpt_free(c);

    /* Older transformers wrote CLIPTextModel without the text_model level. */
    stw_tensor oc[] = {
        {"cond_stage_model.transformer.embeddings.position_embedding.weight", "F32", 1, {2}, v, sizeof v},
        {"cond_stage_model.transformer.encoder.layers.0.mlp.fc1.bias", "F32", 1, {2}, v, sizeof v},
        {"cond_stage_model.transformer.final_layer_norm.weight", "F32", 1, {2}, v, sizeof v},
        {"cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc1.bias", "F32", 1, {2}, v, sizeof v},
    };
    assert_int_equal(stw_write_tensors(path, oc, 4, NULL), 0);
    assert_int_equal(sde_ckpt_open(path, &c, err, sizeof err), 0);
    assert_non_null(
        sde_ckpt_find(c, "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"));
    assert_non_null(
        sde_ckpt_find(c, "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.bias"));
    assert_non_null(
        sde_ckpt_find(c, "cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc1.bias"));
    assert_non_null(sde_ckpt_find(c, "cond_stage_model.transformer.text_model.final_layer_norm.weight"));
    assert_null(sde_ckpt_find(c, "cond_stage_model.transformer.final_layer_norm.weight"));
    sde_ckpt_free(c);

    /* Two stored names that normalise to one is an error, not a silent pick. */
    stw_tensor dup[] = {
        {"state_dict.alphas_cumprod", "F32", 1, {2}, v, sizeof v},
        {"alphas_cumprod", "F32", 1, {2}, v, sizeof v},
    };
    assert_int_equal(stw_write_tensors(path, dup, 2, NULL), 0);
    c = (sde_ckpt *)1;
    assert_int_equal(sde_ckpt_open(path, &c, err, sizeof err), -1);
    assert_null(c);
    stw_assert_contains(err, "tensor \"alphas_cumprod\" appears twice");
}

static void test_open_errors(void **state)
{
    (void)state;
    char err[512];
    sde_ckpt *c = NULL;
    assert_int_equal(sde_ckpt_open("", &c, err, sizeof err), -1);
    assert_int_equal(sde_ckpt_open(stw_path(stw_tmpdir, "missing.safetensors"), &c, err, sizeof err), -1);
    stw_assert_contains(err, "missing.safetensors: cannot open");
    const char *ck = stw_path(stw_tmpdir, "model.ckpt");
    assert_int_equal(stw_write(ck, "\x80\x02}q\0", 5), 0);
    assert_int_equal(sde_ckpt_open(ck, &c, err, sizeof err), -1);
    stw_assert_contains(err, "only safetensors is supported");
    stw_mkdirs(stw_tmpdir, "plain_dir/sub");
    assert_int_equal(sde_ckpt_open(stw_path(stw_tmpdir, "plain_dir"), &c, err, sizeof err), -1);
    stw_assert_contains(err, "plain_dir: is a directory but not a diffusers folder");
    assert_null(c);
}

/* ---------------------------------------------------------------- sha256 / short hash */

static void hex(const uint8_t d[32], char out[65])
{
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void test_short_hash(void **state)
{
    (void)state;
    char h[11], err[256];
    const char *p = stw_path(stw_tmpdir, "abc.safetensors");
    assert_int_equal(stw_write(p, "abc", 3), 0);
    assert_int_equal(sde_ckpt_short_hash(p, h, err, sizeof err), 0);
    assert_string_equal(h, "ba7816bf8f");
    /* A file spanning more than one 64 MB hashing chunk would be slow here; 3 MB checks chunk-free streaming.
     */
    size_t n = 3u << 20;
    uint8_t *b = malloc(n), d[32];
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(i ^ (i >> 9));
    assert_int_equal(stw_write(p, b, n), 0);
    SHA256(b, n, d);
    char full[65];
    hex(d, full);
    assert_int_equal(sde_ckpt_short_hash(p, h, err, sizeof err), 0);
    assert_int_equal(strlen(h), 10);
    assert_memory_equal(h, full, 10);
    free(b);
    assert_int_equal(stw_write(p, "", 0), 0);
    assert_int_equal(sde_ckpt_short_hash(p, h, err, sizeof err), 0);
    assert_string_equal(h, "e3b0c44298");
    assert_int_equal(sde_ckpt_short_hash(stw_tmpdir, h, err, sizeof err), 0);
    assert_string_equal(h, "");
    assert_int_equal(sde_ckpt_short_hash(stw_path(stw_tmpdir, "nope"), h, err, sizeof err), -1);
    stw_assert_contains(err, "nope");
    unlink(p);
}

/* ---------------------------------------------------------------- diffusers folders */

/* Real diffusers spellings (UNet2DConditionModel / AutoencoderKL / CLIPTextModel of SD 1.5) and the
 * LDM names convert_original_stable_diffusion_to_diffusers.py takes them from. The subset keeps the full
 * SD layout's structure: 4 levels, 2 resnets per down block, 3 per up block, no attention in up_blocks.0. */
static const struct {
    int comp; /* 0 unet, 1 vae, 2 text_encoder */
    const char *hf, *ldm;
    int ndim;
    int64_t shape[4], ldm_shape[4];
} folder_map[] = {
    {0, "conv_in.weight", "model.diffusion_model.input_blocks.0.0.weight", 4, {4, 4, 3, 3}, {4, 4, 3, 3}},
    {0, "conv_in.bias", "model.diffusion_model.input_blocks.0.0.bias", 1, {4}, {4}},
    {0, "time_embedding.linear_1.weight", "model.diffusion_model.time_embed.0.weight", 2, {8, 4}, {8, 4}},
    {0, "time_embedding.linear_2.bias", "model.diffusion_model.time_embed.2.bias", 1, {8}, {8}},
    /* first down block */
    {0,
     "down_blocks.0.resnets.0.norm1.weight",
     "model.diffusion_model.input_blocks.1.0.in_layers.0.weight",
     1,
     {4},
     {4}},
    {0,
     "down_blocks.0.resnets.0.conv1.weight",
     "model.diffusion_model.input_blocks.1.0.in_layers.2.weight",
     4,
     {4, 4, 3, 3},
     {4, 4, 3, 3}},
    {0,
     "down_blocks.0.resnets.0.time_emb_proj.weight",
     "model.diffusion_model.input_blocks.1.0.emb_layers.1.weight",
     2,
     {4, 8},
     {4, 8}},
    {0,
     "down_blocks.0.resnets.0.norm2.bias",
     "model.diffusion_model.input_blocks.1.0.out_layers.0.bias",
     1,
     {4},
     {4}},
    {0,
     "down_blocks.0.resnets.0.conv2.weight",
     "model.diffusion_model.input_blocks.1.0.out_layers.3.weight",
     4,
     {4, 4, 3, 3},
     {4, 4, 3, 3}},
    {0,
     "down_blocks.0.resnets.1.conv1.bias",
     "model.diffusion_model.input_blocks.2.0.in_layers.2.bias",
     1,
     {4},
     {4}},
    {0,
     "down_blocks.0.attentions.0.norm.weight",
     "model.diffusion_model.input_blocks.1.1.norm.weight",
     1,
     {4},
     {4}},
    {0,
     "down_blocks.0.attentions.0.proj_in.weight",
     "model.diffusion_model.input_blocks.1.1.proj_in.weight",
     4,
     {4, 4, 1, 1},
     {4, 4}},
    {0,
     "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
     "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
     2,
     {4, 4},
     {4, 4}},
    {0,
     "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0.bias",
     "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_out.0.bias",
     1,
     {4},
     {4}},
    {0,
     "down_blocks.0.attentions.1.transformer_blocks.0.ff.net.0.proj.weight",
     "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.ff.net.0.proj.weight",
     2,
     {16, 4},
     {16, 4}},
    {0,
     "down_blocks.0.attentions.1.transformer_blocks.0.norm3.bias",
     "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.norm3.bias",
     1,
     {4},
     {4}},
    {0,
     "down_blocks.0.downsamplers.0.conv.weight",
     "model.diffusion_model.input_blocks.3.0.op.weight",
     4,
     {4, 4, 3, 3},
     {4, 4, 3, 3}},
    {0,
     "down_blocks.1.resnets.0.conv_shortcut.weight",
     "model.diffusion_model.input_blocks.4.0.skip_connection.weight",
     4,
     {8, 4, 1, 1},
     {8, 4, 1, 1}},
    {0,
     "down_blocks.2.downsamplers.0.conv.bias",
     "model.diffusion_model.input_blocks.9.0.op.bias",
     1,
     {8},
     {8}},
    {0,
     "down_blocks.3.resnets.1.conv2.weight",
     "model.diffusion_model.input_blocks.11.0.out_layers.3.weight",
     4,
     {8, 8, 3, 3},
     {8, 8, 3, 3}},
    /* mid block */
    {0,
     "mid_block.resnets.0.norm1.weight",
     "model.diffusion_model.middle_block.0.in_layers.0.weight",
     1,
     {8},
     {8}},
    {0,
     "mid_block.attentions.0.proj_out.weight",
     "model.diffusion_model.middle_block.1.proj_out.weight",
     4,
     {8, 8, 1, 1},
     {8, 8, 1, 1}},
    {0,
     "mid_block.attentions.0.transformer_blocks.0.attn1.to_k.weight",
     "model.diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_k.weight",
     2,
     {8, 8},
     {8, 8}},
    {0,
     "mid_block.resnets.1.time_emb_proj.bias",
     "model.diffusion_model.middle_block.2.emb_layers.1.bias",
     1,
     {8},
     {8}},
    {0,
     "mid_block.resnets.1.conv2.bias",
     "model.diffusion_model.middle_block.2.out_layers.3.bias",
     1,
     {8},
     {8}},
    /* up blocks: up_blocks.0 has no attention, so its upsampler is output_blocks.2.1; later ones .2 */
    {0,
     "up_blocks.0.resnets.0.conv_shortcut.bias",
     "model.diffusion_model.output_blocks.0.0.skip_connection.bias",
     1,
     {8},
     {8}},
    {0,
     "up_blocks.0.resnets.2.conv1.weight",
     "model.diffusion_model.output_blocks.2.0.in_layers.2.weight",
     4,
     {8, 16, 3, 3},
     {8, 16, 3, 3}},
    {0,
     "up_blocks.0.upsamplers.0.conv.weight",
     "model.diffusion_model.output_blocks.2.1.conv.weight",
     4,
     {8, 8, 3, 3},
     {8, 8, 3, 3}},
    {0,
     "up_blocks.1.resnets.0.norm1.bias",
     "model.diffusion_model.output_blocks.3.0.in_layers.0.bias",
     1,
     {16},
     {16}},
    {0,
     "up_blocks.1.attentions.2.proj_out.bias",
     "model.diffusion_model.output_blocks.5.1.proj_out.bias",
     1,
     {8},
     {8}},
    {0,
     "up_blocks.1.upsamplers.0.conv.weight",
     "model.diffusion_model.output_blocks.5.2.conv.weight",
     4,
     {8, 8, 3, 3},
     {8, 8, 3, 3}},
    {0,
     "up_blocks.2.attentions.0.transformer_blocks.0.attn2.to_v.weight",
     "model.diffusion_model.output_blocks.6.1.transformer_blocks.0.attn2.to_v.weight",
     2,
     {8, 6},
     {8, 6}},
    {0,
     "up_blocks.2.upsamplers.0.conv.bias",
     "model.diffusion_model.output_blocks.8.2.conv.bias",
     1,
     {8},
     {8}},
    {0,
     "up_blocks.3.resnets.2.conv2.weight",
     "model.diffusion_model.output_blocks.11.0.out_layers.3.weight",
     4,
     {4, 4, 3, 3},
     {4, 4, 3, 3}},
    {0,
     "up_blocks.3.attentions.2.transformer_blocks.0.norm1.weight",
     "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.weight",
     1,
     {4},
     {4}},
    {0, "conv_norm_out.weight", "model.diffusion_model.out.0.weight", 1, {4}, {4}},
    {0, "conv_out.bias", "model.diffusion_model.out.2.bias", 1, {4}, {4}},
    /* VAE */
    {1, "encoder.conv_in.weight", "first_stage_model.encoder.conv_in.weight", 4, {4, 3, 3, 3}, {4, 3, 3, 3}},
    {1,
     "encoder.down_blocks.0.resnets.0.norm1.weight",
     "first_stage_model.encoder.down.0.block.0.norm1.weight",
     1,
     {4},
     {4}},
    {1,
     "encoder.down_blocks.0.downsamplers.0.conv.weight",
     "first_stage_model.encoder.down.0.downsample.conv.weight",
     4,
     {4, 4, 3, 3},
     {4, 4, 3, 3}},
    {1,
     "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
     "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight",
     4,
     {8, 4, 1, 1},
     {8, 4, 1, 1}},
    {1,
     "encoder.mid_block.attentions.0.to_q.weight",
     "first_stage_model.encoder.mid.attn_1.q.weight",
     2,
     {8, 8},
     {8, 8, 1, 1}},
    {1, "encoder.conv_norm_out.bias", "first_stage_model.encoder.norm_out.bias", 1, {8}, {8}},
    {1,
     "encoder.conv_out.weight",
     "first_stage_model.encoder.conv_out.weight",
     4,
     {8, 8, 3, 3},
     {8, 8, 3, 3}},
    {1, "quant_conv.weight", "first_stage_model.quant_conv.weight", 4, {8, 8, 1, 1}, {8, 8, 1, 1}},
    {1, "post_quant_conv.bias", "first_stage_model.post_quant_conv.bias", 1, {4}, {4}},
    {1, "decoder.conv_in.weight", "first_stage_model.decoder.conv_in.weight", 4, {8, 4, 3, 3}, {8, 4, 3, 3}},
    {1,
     "decoder.mid_block.resnets.0.conv1.weight",
     "first_stage_model.decoder.mid.block_1.conv1.weight",
     4,
     {8, 8, 3, 3},
     {8, 8, 3, 3}},
    {1,
     "decoder.mid_block.resnets.1.norm2.bias",
     "first_stage_model.decoder.mid.block_2.norm2.bias",
     1,
     {8},
     {8}},
    {1,
     "decoder.mid_block.attentions.0.group_norm.weight",
     "first_stage_model.decoder.mid.attn_1.norm.weight",
     1,
     {8},
     {8}},
    {1,
     "decoder.mid_block.attentions.0.to_k.weight",
     "first_stage_model.decoder.mid.attn_1.k.weight",
     2,
     {8, 8},
     {8, 8, 1, 1}},
    {1,
     "decoder.mid_block.attentions.0.to_v.bias",
     "first_stage_model.decoder.mid.attn_1.v.bias",
     1,
     {8},
     {8}},
    {1,
     "decoder.mid_block.attentions.0.to_out.0.weight",
     "first_stage_model.decoder.mid.attn_1.proj_out.weight",
     2,
     {8, 8},
     {8, 8, 1, 1}},
    {1,
     "decoder.up_blocks.0.resnets.0.conv1.weight",
     "first_stage_model.decoder.up.3.block.0.conv1.weight",
     4,
     {8, 8, 3, 3},
     {8, 8, 3, 3}},
    {1,
     "decoder.up_blocks.0.upsamplers.0.conv.weight",
     "first_stage_model.decoder.up.3.upsample.conv.weight",
     4,
     {8, 8, 3, 3},
     {8, 8, 3, 3}},
    {1,
     "decoder.up_blocks.2.resnets.0.conv_shortcut.weight",
     "first_stage_model.decoder.up.1.block.0.nin_shortcut.weight",
     4,
     {4, 8, 1, 1},
     {4, 8, 1, 1}},
    {1,
     "decoder.up_blocks.2.upsamplers.0.conv.bias",
     "first_stage_model.decoder.up.1.upsample.conv.bias",
     1,
     {4},
     {4}},
    {1,
     "decoder.up_blocks.3.resnets.2.norm1.weight",
     "first_stage_model.decoder.up.0.block.2.norm1.weight",
     1,
     {4},
     {4}},
    {1, "decoder.conv_norm_out.weight", "first_stage_model.decoder.norm_out.weight", 1, {4}, {4}},
    {1,
     "decoder.conv_out.weight",
     "first_stage_model.decoder.conv_out.weight",
     4,
     {3, 4, 3, 3},
     {3, 4, 3, 3}},
    /* text encoder (HF CLIPTextModel) */
    {2,
     "text_model.embeddings.token_embedding.weight",
     "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
     2,
     {10, 4},
     {10, 4}},
    {2,
     "text_model.encoder.layers.0.self_attn.q_proj.weight",
     "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
     2,
     {4, 4},
     {4, 4}},
    {2,
     "text_model.final_layer_norm.bias",
     "cond_stage_model.transformer.text_model.final_layer_norm.bias",
     1,
     {4},
     {4}},
};
#define N_FOLDER_MAP (int)(sizeof folder_map / sizeof *folder_map)

/* Values of entry i: i*1000 + k, so a wrong mapping reads another entry's numbers. */
static float *entry_values(int i, size_t *n)
{
    size_t m = 1;
    for (int d = 0; d < folder_map[i].ndim; d++)
        m *= (size_t)folder_map[i].shape[d];
    float *v = malloc(m * 4);
    for (size_t k = 0; k < m; k++)
        v[k] = (float)(i * 1000 + (int)k);
    *n = m;
    return v;
}

/* Writes the folder; the VAE as F16 in the .fp16 variant to cover both the variant and conversion. */
static void write_folder(const char *dir, int with_extras)
{
    static const char *const rel[3] = {"unet/diffusion_pytorch_model.safetensors",
                                       "vae/diffusion_pytorch_model.fp16.safetensors",
                                       "text_encoder/model.safetensors"};
    stw_mkdirs(dir, "unet");
    stw_mkdirs(dir, "vae");
    stw_mkdirs(dir, "text_encoder");
    for (int comp = 0; comp < 3; comp++) {
        stw_tensor t[N_FOLDER_MAP];
        void *bufs[N_FOLDER_MAP];
        int n = 0;
        for (int i = 0; i < N_FOLDER_MAP; i++) {
            if (folder_map[i].comp != comp) continue;
            size_t m;
            float *v = entry_values(i, &m);
            t[n] = (stw_tensor){folder_map[i].hf, "F32", folder_map[i].ndim, {0}, v, m * 4};
            memcpy(t[n].shape, folder_map[i].shape, sizeof folder_map[i].shape);
            if (comp == 1) { /* F16 halves near 1.0, distinct per entry */
                uint16_t *hv = malloc(m * 2);
                for (size_t k = 0; k < m; k++)
                    hv[k] = (uint16_t)(0x3c00 + (i % 64) * 16 + (int)(k % 16)); /* distinct per entry */
                free(v);
                t[n].dtype = "F16";
                t[n].data = hv;
                t[n].nbytes = m * 2;
            }
            bufs[n] = (void *)t[n].data;
            n++;
        }
        assert_int_equal(stw_write_tensors(stw_path(dir, rel[comp]), t, n,
                                           comp == 0 ? "{\"format\":\"pt\",\"who\":\"unet\"}" : NULL),
                         0);
        for (int k = 0; k < n; k++)
            free(bufs[k]);
    }
    assert_int_equal(
        stw_write(stw_path(dir, "model_index.json"), "{\"_class_name\":\"StableDiffusionPipeline\"}", 41), 0);
    if (with_extras) {
        stw_mkdirs(dir, "tokenizer");
        stw_mkdirs(dir, "scheduler");
        assert_int_equal(stw_write(stw_path(dir, "tokenizer/vocab.json"), "{}", 2), 0);
        assert_int_equal(stw_write(stw_path(dir, "tokenizer/merges.txt"), "#version: 0.2\n", 14), 0);
        const char *sc = "{\"_class_name\":\"PNDMScheduler\",\"prediction_type\":\"v_prediction\",\"num_"
                         "train_timesteps\":1000}";
        assert_int_equal(stw_write(stw_path(dir, "scheduler/scheduler_config.json"), sc, strlen(sc)), 0);
    }
}

static void test_diffusers_folder(void **state)
{
    (void)state;
    char *dir = subdir("diffusers");
    write_folder(dir, 1);
    char err[512] = "";
    sde_ckpt *c = NULL;
    if (sde_ckpt_open(dir, &c, err, sizeof err)) fail_msg("open: %s", err);
    int expect = 0;
    for (int i = 0; i < N_FOLDER_MAP; i++) {
        expect++;
        const sde_tensor *t = sde_ckpt_find(c, folder_map[i].ldm);
        if (!t) fail_msg("%s (from %s) not found", folder_map[i].ldm, folder_map[i].hf);
        size_t m;
        float *v = entry_values(i, &m);
        int ldm_ndim = 0;
        while (ldm_ndim < 4 && folder_map[i].ldm_shape[ldm_ndim])
            ldm_ndim++;
        const float *f =
            sde_ckpt_f32(c, folder_map[i].ldm, ldm_ndim, folder_map[i].ldm_shape, err, sizeof err);
        if (!f) fail_msg("%s: %s", folder_map[i].ldm, err);
        if (folder_map[i].comp == 1) {
            assert_int_equal(t->dtype, SDE_DT_F16);
            stw_assert_contains(t->file, "vae/diffusion_pytorch_model.fp16.safetensors");
            for (size_t k = 0; k < m; k++)
                assert_true(f[k] == sde_cvt_half((uint16_t)(0x3c00 + (i % 64) * 16 + (int)(k % 16))));
        } else {
            stw_assert_contains(t->file, folder_map[i].comp ? "text_encoder/model.safetensors"
                                                            : "unet/diffusion_pytorch_model.safetensors");
            assert_memory_equal(f, v, m * 4);
        }
        free(v);
    }
    assert_int_equal(sde_ckpt_count(c), expect);
    /* Linear [c][c] in diffusers read as the LDM 1x1 conv [c][c][1][1], and the other way round. */
    assert_non_null(sde_ckpt_f32(c, "first_stage_model.decoder.mid.attn_1.k.weight", 4,
                                 (int64_t[]){8, 8, 1, 1}, err, sizeof err));
    assert_non_null(sde_ckpt_f32(c, "model.diffusion_model.input_blocks.1.1.proj_in.weight", 2,
                                 (int64_t[]){4, 4}, err, sizeof err));
    assert_string_equal(sde_ckpt_meta(c, "who"), "unet");
    assert_string_equal(sde_ckpt_prediction_type(c), "v_prediction");
    assert_non_null(sde_ckpt_tokenizer_dir(c));
    assert_string_equal(sde_ckpt_tokenizer_dir(c), stw_path(dir, "tokenizer"));
    assert_string_equal(sde_ckpt_path(c), dir);
    char h[11];
    assert_int_equal(sde_ckpt_short_hash(dir, h, err, sizeof err), 0);
    assert_string_equal(h, "");
    sde_ckpt_free(c);

    /* Without tokenizer/ and scheduler/: both NULL, still loads. */
    stw_rmtree(stw_path(dir, "tokenizer"));
    stw_rmtree(stw_path(dir, "scheduler"));
    assert_int_equal(sde_ckpt_open(dir, &c, err, sizeof err), 0);
    assert_null(sde_ckpt_tokenizer_dir(c));
    assert_null(sde_ckpt_prediction_type(c));
    sde_ckpt_free(c);
    stw_rmtree(dir);
    free(dir);
}

static void test_diffusers_errors(void **state)
{
    (void)state;
    char err[512];
    sde_ckpt *c = NULL;
    char *dir = subdir("bad");
    write_folder(dir, 0);

    /* A broken scheduler config is reported, not ignored. */
    stw_mkdirs(dir, "scheduler");
    assert_int_equal(stw_write(stw_path(dir, "scheduler/scheduler_config.json"), "{\"prediction_type\":", 19),
                     0);
    assert_int_equal(sde_ckpt_open(dir, &c, err, sizeof err), -1);
    stw_assert_contains(err, "scheduler_config.json: not valid JSON");
    assert_int_equal(
        stw_write(stw_path(dir, "scheduler/scheduler_config.json"), "{\"prediction_type\":3}", 21), 0);
    assert_int_equal(sde_ckpt_open(dir, &c, err, sizeof err), -1);
    stw_assert_contains(err, "\"prediction_type\" is not a string");
    stw_rmtree(stw_path(dir, "scheduler"));

    /* Only the pickle text encoder. */
    assert_int_equal(rename(stw_path(dir, "text_encoder/model.safetensors"),
                            stw_path(dir, "text_encoder/pytorch_model.bin")),
                     0);
    assert_int_equal(sde_ckpt_open(dir, &c, err, sizeof err), -1);
    stw_assert_contains(err, "only safetensors is supported");
    assert_int_equal(rename(stw_path(dir, "text_encoder/pytorch_model.bin"),
                            stw_path(dir, "text_encoder/model.safetensors")),
                     0);
    assert_int_equal(sde_ckpt_open(dir, &c, err, sizeof err), 0);
    sde_ckpt_free(c);

    /* A missing component. */
    assert_int_equal(rename(stw_path(dir, "vae/diffusion_pytorch_model.fp16.safetensors"),
                            stw_path(dir, "vae/other.safetensors")),
                     0);
    assert_int_equal(sde_ckpt_open(dir, &c, err, sizeof err), -1);
    stw_assert_contains(err, "diffusers folder has no vae/diffusion_pytorch_model.safetensors");
    assert_int_equal(rename(stw_path(dir, "vae/other.safetensors"),
                            stw_path(dir, "vae/diffusion_pytorch_model.fp16.safetensors")),
                     0);

    /* A corrupt component names its file. */
    const char *te = stw_path(dir, "text_encoder/model.safetensors");
    assert_int_equal(stw_write(te, "\x10\0\0\0\0\0\0\0{\"a\":1}", 15), 0);
    assert_int_equal(sde_ckpt_open(dir, &c, err, sizeof err), -1);
    stw_assert_contains(err, "text_encoder/model.safetensors: header length 16 is invalid");

    /* A tensor name diffusers SD pipelines do not have (SDXL's add_embedding) is rejected by name. */
    float v[2] = {0};
    stw_tensor t[] = {{"text_model.final_layer_norm.bias", "F32", 1, {2}, v, 8},
                      {"text_projection.weight", "F32", 1, {2}, v, 8}};
    assert_int_equal(stw_write_tensors(te, t, 2, NULL), 0);
    assert_int_equal(sde_ckpt_open(dir, &c, err, sizeof err), -1);
    stw_assert_contains(
        err, "text_encoder/model.safetensors: tensor \"text_projection.weight\": unknown diffusers name");

    /* Both VAE attention spellings at once map to one LDM name: rejected as a duplicate. */
    assert_int_equal(stw_write_tensors(te, t, 1, NULL), 0);
    stw_tensor va[] = {{"decoder.mid_block.attentions.0.to_q.weight", "F32", 1, {2}, v, 8},
                       {"decoder.mid_block.attentions.0.query.weight", "F32", 1, {2}, v, 8},
                       {"decoder.up_blocks.0.resnets.0.conv1.bias", "F32", 1, {2}, v, 8}};
    assert_int_equal(
        stw_write_tensors(stw_path(dir, "vae/diffusion_pytorch_model.fp16.safetensors"), va, 3, NULL), 0);
    assert_int_equal(sde_ckpt_open(dir, &c, err, sizeof err), -1);
    stw_assert_contains(err, "first_stage_model.decoder.mid.attn_1.q.weight\" appears twice");
    assert_null(c);
    stw_rmtree(dir);
    free(dir);

    /* A folder with only model_index.json is diffusers-shaped but incomplete. */
    dir = subdir("empty");
    assert_int_equal(stw_write(stw_path(dir, "model_index.json"), "{}", 2), 0);
    assert_int_equal(sde_ckpt_open(dir, &c, err, sizeof err), -1);
    stw_assert_contains(err, "diffusers folder has no unet/diffusion_pytorch_model.safetensors");
    stw_rmtree(dir);
    free(dir);
}

static void test_name_mapping_units(void **state)
{
    (void)state;
    char out[256];
    /* Older diffusers VAE attention names. */
    static const char *const legacy[][2] = {
        {"encoder.mid_block.attentions.0.query.weight", "first_stage_model.encoder.mid.attn_1.q.weight"},
        {"encoder.mid_block.attentions.0.key.bias", "first_stage_model.encoder.mid.attn_1.k.bias"},
        {"decoder.mid_block.attentions.0.value.weight", "first_stage_model.decoder.mid.attn_1.v.weight"},
        {"decoder.mid_block.attentions.0.proj_attn.bias",
         "first_stage_model.decoder.mid.attn_1.proj_out.bias"},
    };
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(sde_dn_vae_to_ldm(4, legacy[i][0], out, sizeof out), 0);
        assert_string_equal(out, legacy[i][1]);
    }
    /* A shrunken UNet: 2 levels, 1 resnet per down block, attention at both levels (the tiny preset's shape).
     */
    const char *tiny[] = {
        "down_blocks.0.resnets.0.conv1.weight",     "down_blocks.0.attentions.0.norm.weight",
        "down_blocks.0.downsamplers.0.conv.weight", "down_blocks.1.resnets.0.conv1.weight",
        "down_blocks.1.attentions.0.norm.weight",   "up_blocks.0.resnets.1.conv1.weight",
        "up_blocks.0.attentions.1.norm.weight",     "up_blocks.0.upsamplers.0.conv.weight",
        "up_blocks.1.resnets.1.conv1.weight",       "up_blocks.1.attentions.1.norm.weight",
        "mid_block.attentions.0.norm.weight"};
    static const char *const tiny_ldm[] = {"input_blocks.1.0.in_layers.2.weight",
                                           "input_blocks.1.1.norm.weight",
                                           "input_blocks.2.0.op.weight",
                                           "input_blocks.3.0.in_layers.2.weight",
                                           "input_blocks.3.1.norm.weight",
                                           "output_blocks.1.0.in_layers.2.weight",
                                           "output_blocks.1.1.norm.weight",
                                           "output_blocks.1.2.conv.weight",
                                           "output_blocks.3.0.in_layers.2.weight",
                                           "output_blocks.3.1.norm.weight",
                                           "middle_block.1.norm.weight"};
    sde_dn_unet_layout L;
    char err[256];
    assert_int_equal(sde_dn_unet_layout_scan(tiny, 11, &L, err, sizeof err), 0);
    assert_int_equal(L.n_levels, 2);
    assert_int_equal(L.res_blocks, 1);
    assert_true(L.up_attn[0] && L.up_attn[1] && L.mid_attn);
    for (int i = 0; i < 11; i++) {
        char want[256];
        snprintf(want, sizeof want, "model.diffusion_model.%s", tiny_ldm[i]);
        assert_int_equal(sde_dn_unet_to_ldm(&L, tiny[i], out, sizeof out), 0);
        assert_string_equal(out, want);
    }
    /* Unknown or malformed names have no mapping. */
    static const char *const bad[] = {"down_blocks.01.resnets.0.conv1.weight",
                                      "down_blocks.0.resnets.1.conv1.weight",
                                      "down_blocks.2.resnets.0.conv1.weight",
                                      "down_blocks.1.downsamplers.0.conv.weight",
                                      "up_blocks.1.upsamplers.0.conv.weight",
                                      "down_blocks.0.resnets.0.conv9.weight",
                                      "down_blocks.0.resnets.0.conv1.weight.x",
                                      "down_blocks.0.attentions.0.bogus.weight",
                                      "conv_in.scale",
                                      "add_embedding.linear_3.weight",
                                      "mid_block.resnets.2.conv1.weight",
                                      "down_blocks.0.resnets.0.",
                                      "down_blocks.",
                                      "",
                                      "down_blocks.-1.resnets.0.conv1.weight"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (!sde_dn_unet_to_ldm(&L, bad[i], out, sizeof out))
            fail_msg("\"%s\" mapped to \"%s\"", bad[i], out);
    assert_int_equal(sde_dn_vae_to_ldm(4, "decoder.up_blocks.4.resnets.0.conv1.weight", out, sizeof out), -1);
    assert_int_equal(sde_dn_vae_to_ldm(4, "encoder.up_blocks.0.resnets.0.conv1.weight", out, sizeof out), -1);
    assert_int_equal(sde_dn_text_to_ldm("text_model.", out, sizeof out), -1);
    assert_int_equal(sde_dn_text_to_ldm("vision_model.x", out, sizeof out), -1);
    /* An output buffer too small is an error, not a truncated name. */
    assert_int_equal(sde_dn_text_to_ldm("text_model.final_layer_norm.weight", out, 20), -1);
    const char *huge[] = {"down_blocks.99.resnets.0.conv1.weight"};
    assert_int_equal(sde_dn_unet_layout_scan(huge, 1, &L, err, sizeof err), -1);
}

/* ---------------------------------------------------------------- full SD name lists */

/* LDM -> diffusers, written independently of the engine's parser: prefix tables in the style of
 * diffusers' convert_diffusers_to_original_stable_diffusion.py for the SD layout (4 levels, 2 resnets). */
typedef struct {
    char sd[64], hf[64];
    int res;
} pmap;
static pmap unet_pm[96], vae_pm[64];
static int n_unet_pm, n_vae_pm;

static void add_pm(pmap *tab, int *n, int res, const char *sd, const char *hf)
{
    snprintf(tab[*n].sd, sizeof tab[*n].sd, "%s", sd);
    snprintf(tab[*n].hf, sizeof tab[*n].hf, "%s", hf);
    tab[*n].res = res;
    (*n)++;
}

static void build_tables(void)
{
    char sd[64], hf[64];
    n_unet_pm = n_vae_pm = 0;
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 2; j++) {
            snprintf(sd, 64, "input_blocks.%d.0.", 3 * i + j + 1),
                snprintf(hf, 64, "down_blocks.%d.resnets.%d.", i, j);
            add_pm(unet_pm, &n_unet_pm, 1, sd, hf);
            if (i < 3) {
                snprintf(sd, 64, "input_blocks.%d.1.", 3 * i + j + 1),
                    snprintf(hf, 64, "down_blocks.%d.attentions.%d.", i, j);
                add_pm(unet_pm, &n_unet_pm, 0, sd, hf);
            }
        }
        for (int j = 0; j < 3; j++) {
            snprintf(sd, 64, "output_blocks.%d.0.", 3 * i + j),
                snprintf(hf, 64, "up_blocks.%d.resnets.%d.", i, j);
            add_pm(unet_pm, &n_unet_pm, 1, sd, hf);
            if (i > 0) {
                snprintf(sd, 64, "output_blocks.%d.1.", 3 * i + j),
                    snprintf(hf, 64, "up_blocks.%d.attentions.%d.", i, j);
                add_pm(unet_pm, &n_unet_pm, 0, sd, hf);
            }
        }
        if (i < 3) {
            snprintf(sd, 64, "input_blocks.%d.0.op.", 3 * (i + 1)),
                snprintf(hf, 64, "down_blocks.%d.downsamplers.0.conv.", i);
            add_pm(unet_pm, &n_unet_pm, 0, sd, hf);
            snprintf(sd, 64, "output_blocks.%d.%d.", 3 * i + 2, i == 0 ? 1 : 2),
                snprintf(hf, 64, "up_blocks.%d.upsamplers.0.", i);
            add_pm(unet_pm, &n_unet_pm, 0, sd, hf);
        }
    }
    add_pm(unet_pm, &n_unet_pm, 0, "middle_block.1.", "mid_block.attentions.0.");
    add_pm(unet_pm, &n_unet_pm, 1, "middle_block.0.", "mid_block.resnets.0.");
    add_pm(unet_pm, &n_unet_pm, 1, "middle_block.2.", "mid_block.resnets.1.");
    add_pm(unet_pm, &n_unet_pm, 0, "time_embed.0.", "time_embedding.linear_1.");
    add_pm(unet_pm, &n_unet_pm, 0, "time_embed.2.", "time_embedding.linear_2.");
    add_pm(unet_pm, &n_unet_pm, 0, "input_blocks.0.0.", "conv_in.");
    add_pm(unet_pm, &n_unet_pm, 0, "out.0.", "conv_norm_out.");
    add_pm(unet_pm, &n_unet_pm, 0, "out.2.", "conv_out.");

    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 2; j++) {
            snprintf(sd, 64, "encoder.down.%d.block.%d.", i, j),
                snprintf(hf, 64, "encoder.down_blocks.%d.resnets.%d.", i, j);
            add_pm(vae_pm, &n_vae_pm, 1, sd, hf);
        }
        if (i < 3) {
            snprintf(sd, 64, "encoder.down.%d.downsample.", i),
                snprintf(hf, 64, "encoder.down_blocks.%d.downsamplers.0.", i);
            add_pm(vae_pm, &n_vae_pm, 0, sd, hf);
            snprintf(sd, 64, "decoder.up.%d.upsample.", 3 - i),
                snprintf(hf, 64, "decoder.up_blocks.%d.upsamplers.0.", i);
            add_pm(vae_pm, &n_vae_pm, 0, sd, hf);
        }
        for (int j = 0; j < 3; j++) {
            snprintf(sd, 64, "decoder.up.%d.block.%d.", 3 - i, j),
                snprintf(hf, 64, "decoder.up_blocks.%d.resnets.%d.", i, j);
            add_pm(vae_pm, &n_vae_pm, 1, sd, hf);
        }
    }
    for (int s = 0; s < 2; s++) {
        const char *side = s ? "decoder" : "encoder";
        for (int i = 0; i < 2; i++) {
            snprintf(sd, 64, "%s.mid.block_%d.", side, i + 1),
                snprintf(hf, 64, "%s.mid_block.resnets.%d.", side, i);
            add_pm(vae_pm, &n_vae_pm, 1, sd, hf);
        }
        snprintf(sd, 64, "%s.mid.attn_1.", side), snprintf(hf, 64, "%s.mid_block.attentions.0.", side);
        add_pm(vae_pm, &n_vae_pm, 2, sd, hf);
        snprintf(sd, 64, "%s.norm_out.", side), snprintf(hf, 64, "%s.conv_norm_out.", side);
        add_pm(vae_pm, &n_vae_pm, 0, sd, hf);
    }
}

/* Replaces the first matching (from, to) prefix of s; returns 1 if one matched. */
static int subst(const char *s, const char *const (*tab)[2], int n, char *out, size_t outlen)
{
    for (int i = 0; i < n; i++)
        if (!strncmp(s, tab[i][0], strlen(tab[i][0]))) {
            snprintf(out, outlen, "%s%s", tab[i][1], s + strlen(tab[i][0]));
            return 1;
        }
    snprintf(out, outlen, "%s", s);
    return 0;
}

/* Returns the component (0 unet, 1 vae, 2 text) and the diffusers name, or -1 for names diffusers
 * keeps elsewhere (schedule buffers, OpenCLIP text). */
static int ldm_to_hf(const char *ldm, char *hf, size_t hflen)
{
    static const char *const unet_res[][2] = {
        {"in_layers.0.", "norm1."},          {"in_layers.2.", "conv1."},
        {"out_layers.0.", "norm2."},         {"out_layers.3.", "conv2."},
        {"emb_layers.1.", "time_emb_proj."}, {"skip_connection.", "conv_shortcut."}};
    static const char *const vae_res[][2] = {{"nin_shortcut.", "conv_shortcut."}};
    static const char *const vae_attn[][2] = {{"norm.", "group_norm."},
                                              {"q.", "to_q."},
                                              {"k.", "to_k."},
                                              {"v.", "to_v."},
                                              {"proj_out.", "to_out.0."}};
    const char *s;
    if (!strncmp(ldm, "model.diffusion_model.", 22)) {
        s = ldm + 22;
        for (int i = 0; i < n_unet_pm; i++)
            if (!strncmp(s, unet_pm[i].sd, strlen(unet_pm[i].sd))) {
                char tail[256];
                const char *rest = s + strlen(unet_pm[i].sd);
                if (unet_pm[i].res)
                    subst(rest, unet_res, 6, tail, sizeof tail);
                else
                    snprintf(tail, sizeof tail, "%s", rest);
                snprintf(hf, hflen, "%s%s", unet_pm[i].hf, tail);
                return 0;
            }
        fail_msg("test table has no diffusers name for %s", ldm);
    }
    if (!strncmp(ldm, "first_stage_model.", 18)) {
        s = ldm + 18;
        for (int i = 0; i < n_vae_pm; i++)
            if (!strncmp(s, vae_pm[i].sd, strlen(vae_pm[i].sd))) {
                char tail[256];
                const char *rest = s + strlen(vae_pm[i].sd);
                if (vae_pm[i].res == 1)
                    subst(rest, vae_res, 1, tail, sizeof tail);
                else if (vae_pm[i].res == 2)
                    subst(rest, vae_attn, 5, tail, sizeof tail);
                else
                    snprintf(tail, sizeof tail, "%s", rest);
                snprintf(hf, hflen, "%s%s", vae_pm[i].hf, tail);
                return 1;
            }
        snprintf(hf, hflen, "%s", s); /* conv_in, conv_out, quant_conv, post_quant_conv keep their names */
        return 1;
    }
    if (!strncmp(ldm, "cond_stage_model.transformer.", 29)) {
        snprintf(hf, hflen, "%s", ldm + 29);
        return 2;
    }
    return -1;
}

typedef struct {
    char **names;
    int n, cap;
} name_list;

static void collect_name(void *ud, const char *name, const char *dtype, int ndim, const int64_t *shape)
{
    (void)dtype, (void)ndim, (void)shape;
    name_list *l = ud;
    if (l->n == l->cap)
        l->names = realloc(l->names, (size_t)(l->cap = l->cap ? l->cap * 2 : 1024) * sizeof *l->names);
    l->names[l->n++] = strdup(name);
}

/* The tensor names of the full-size random checkpoint (mkmodel --preset sd15-random, or sd21-random for arch
 * "sd21"), which are those of the real files; returns malloc'd names, count in *n. */
static char **random_ckpt_names(const char *arch, int *n)
{
    name_list l = {0};
    sde_rand_preset p = arch && !strcmp(arch, "sd21") ? SDE_RAND_SD21 : SDE_RAND_SD15;
    *n = sde_mkmodel_random_list(p, 0, collect_name, &l);
    assert_int_equal(*n, l.n);
    return l.names;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every UNet/VAE/text name of real SD 1.5 and SD 2.1 files goes LDM -> diffusers (test table) ->
 * checkpoint folder -> LDM (engine) and comes back as itself with its own data: the mapping is a bijection.
 */
static void check_list(const char *arch, int expect_unet, int expect_vae, int expect_text)
{
    build_tables();
    int n;
    char **names = random_ckpt_names(arch, &n);
    stw_tensor *t[3];
    int nt[3] = {0, 0, 0};
    float *vals = malloc((size_t)n * sizeof *vals);
    char **hf = calloc((size_t)n, sizeof *hf);
    int *comp = malloc((size_t)n * sizeof *comp);
    for (int k = 0; k < 3; k++)
        t[k] = calloc((size_t)n, sizeof **t);
    for (int i = 0; i < n; i++) {
        char buf[512];
        comp[i] = ldm_to_hf(names[i], buf, sizeof buf);
        if (comp[i] < 0) continue;
        hf[i] = strdup(buf);
        vals[i] = (float)i;
        t[comp[i]][nt[comp[i]]++] = (stw_tensor){hf[i], "F32", 1, {1}, &vals[i], 4};
    }
    assert_int_equal(nt[0], expect_unet);
    assert_int_equal(nt[1], expect_vae);
    assert_int_equal(nt[2], expect_text);
    /* The diffusers names themselves are distinct. */
    for (int k = 0; k < 3; k++) {
        char **s = malloc((size_t)(nt[k] ? nt[k] : 1) * sizeof *s);
        for (int i = 0; i < nt[k]; i++)
            s[i] = (char *)t[k][i].name;
        qsort(s, (size_t)nt[k], sizeof *s, cmp_str);
        for (int i = 1; i < nt[k]; i++)
            assert_string_not_equal(s[i - 1], s[i]);
        free(s);
    }
    char *dir = subdir("full");
    stw_mkdirs(dir, "unet");
    stw_mkdirs(dir, "vae");
    stw_mkdirs(dir, "text_encoder");
    assert_int_equal(stw_write(stw_path(dir, "model_index.json"), "{}", 2), 0);
    assert_int_equal(
        stw_write_tensors(stw_path(dir, "unet/diffusion_pytorch_model.safetensors"), t[0], nt[0], NULL), 0);
    assert_int_equal(
        stw_write_tensors(stw_path(dir, "vae/diffusion_pytorch_model.safetensors"), t[1], nt[1], NULL), 0);
    assert_int_equal(stw_write_tensors(stw_path(dir, "text_encoder/model.safetensors"), t[2], nt[2], NULL),
                     0);
    char err[512] = "";
    sde_ckpt *c = NULL;
    if (sde_ckpt_open(dir, &c, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(sde_ckpt_count(c), nt[0] + nt[1] + nt[2]);
    for (int i = 0; i < n; i++) {
        if (comp[i] < 0) continue;
        const sde_tensor *x = sde_ckpt_find(c, names[i]);
        if (!x) fail_msg("%s (diffusers %s) did not map back", names[i], hf[i]);
        float v;
        memcpy(&v, x->data, 4);
        if (v != (float)i) fail_msg("%s (diffusers %s) holds the data of %s", names[i], hf[i], names[(int)v]);
    }
    sde_ckpt_free(c);
    stw_rmtree(dir);
    free(dir);
    for (int i = 0; i < n; i++) {
        free(names[i]);
        free(hf[i]);
    }
    for (int k = 0; k < 3; k++)
        free(t[k]);
    free(names);
    free(hf);
    free(comp);
    free(vals);
}

static void test_sd15_names_bijective(void **state)
{
    (void)state;
    check_list(NULL, 686, 248, 197); /* counts from tests/data/README.md */
}

static void test_sd21_names_bijective(void **state)
{
    (void)state;
    check_list("sd21", 686, 248, 0); /* OpenCLIP text names have no diffusers twin */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_file),
        cmocka_unit_test(test_weight_handles_and_edits),
        cmocka_unit_test(test_unaligned_f32),
        cmocka_unit_test(test_f16_all_values),
        cmocka_unit_test(test_f32_to_16bit_rounding),
        cmocka_unit_test(test_convert_speed),
        cmocka_unit_test(test_name_prefix_variants),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_short_hash),
        cmocka_unit_test(test_diffusers_folder),
        cmocka_unit_test(test_diffusers_errors),
        cmocka_unit_test(test_name_mapping_units),
        cmocka_unit_test(test_sd15_names_bijective),
        cmocka_unit_test(test_sd21_names_bijective),
    };
    return cmocka_run_group_tests(tests, stw_tmpdir_setup, stw_tmpdir_teardown);
}
