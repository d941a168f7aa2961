/* test_safetensors.c: the strict safetensors parser: a valid file round-trips, and every kind of bad
 * header, offset, shape, dtype or file type is rejected with a message naming the file and the tensor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "safetensors.h"
#include "st_test_writer.h"

static void test_valid_file(void **state)
{
    (void)state;
    float a[6] = {1, 2, 3, 4, 5, -6};
    uint16_t b[4] = {0x3c00, 0x4000, 0xc000, 0x0001};
    uint16_t c[1] = {0x3f80};
    int64_t d[2] = {7, -8};
    double f[2] = {0.5, 1e300};
    stw_tensor t[] = {
        {"model.diffusion_model.out.2.weight", "F32", 2, {2, 3}, a, sizeof a},
        {"b", "F16", 1, {4}, b, sizeof b},
        {"scalar", "BF16", 0, {0}, c, sizeof c},
        {"ids", "I64", 2, {1, 2}, d, sizeof d},
        {"empty", "U8", 2, {3, 0}, NULL, 0},
        {"dbl", "F64", 2, {2, 1}, f, sizeof f},
    };
    const char *path = stw_path(stw_tmpdir, "valid.safetensors");
    assert_int_equal(stw_write_tensors(path, t, 6, "{\"format\":\"pt\",\"note\":\"h\\u00e9llo\"}"), 0);

    char err[512] = "";
    sde_st_file *sf = NULL;
    assert_int_equal(sde_st_open(path, &sf, err, sizeof err), 0);
    assert_non_null(sf);
    assert_int_equal(sf->n, 6);
    static const sde_dtype dts[] = {SDE_DT_F32, SDE_DT_F16, SDE_DT_BF16, SDE_DT_I64, SDE_DT_U8, SDE_DT_F64};
    static const uint64_t numel[] = {6, 4, 1, 2, 0, 2};
    for (int i = 0; i < 6; i++) {
        assert_string_equal(sf->t[i].name, t[i].name);
        assert_int_equal(sf->t[i].dtype, dts[i]);
        assert_int_equal(sf->t[i].ndim, t[i].ndim);
        for (int k = 0; k < t[i].ndim; k++)
            assert_int_equal(sf->t[i].shape[k], t[i].shape[k]);
        assert_int_equal(sf->t[i].numel, numel[i]);
        assert_int_equal(sf->t[i].nbytes, t[i].nbytes);
        if (t[i].nbytes) assert_memory_equal(sf->t[i].data, t[i].data, t[i].nbytes);
        assert_true(sf->t[i].data >= sf->data && sf->t[i].data + sf->t[i].nbytes <= sf->data + sf->data_len);
    }
    assert_int_equal(sf->data_len, sizeof a + sizeof b + sizeof c + sizeof d + sizeof f);
    assert_string_equal(sde_st_meta(sf, "format"), "pt");
    assert_string_equal(sde_st_meta(sf, "note"), "h\xc3\xa9llo");
    assert_null(sde_st_meta(sf, "missing"));
    assert_int_equal(sde_st_dtype_size(SDE_DT_BF16), 2);
    assert_string_equal(sde_st_dtype_name(SDE_DT_BOOL), "BOOL");
    sde_st_free(sf);
}

/* A file of 24 MB (past the size where it is mapped 2 MB-aligned and its cache may be dropped and read
 * again): every byte reads back, in a first open and in a second one while the first is still open. */
static void test_large_file(void **state)
{
    (void)state;
    const size_t n = (size_t)6 << 20; /* floats */
    float *a = malloc(n * sizeof *a);
    assert_non_null(a);
    for (size_t i = 0; i < n; i++)
        a[i] = (float)(i % 1000003) - 0.5f;
    stw_tensor t[] = {{"big", "F32", 2, {3 << 20, 2}, a, n * sizeof *a}};
    const char *path = stw_path(stw_tmpdir, "large.safetensors");
    assert_int_equal(stw_write_tensors(path, t, 1, NULL), 0);
    char err[512] = "";
    sde_st_file *f1 = NULL, *f2 = NULL;
    assert_int_equal(sde_st_open(path, &f1, err, sizeof err), 0);
    assert_int_equal((uintptr_t)f1->map & (((uintptr_t)2 << 20) - 1), 0);
    assert_int_equal(f1->t[0].nbytes, n * sizeof *a);
    assert_memory_equal(f1->t[0].data, a, n * sizeof *a);
    assert_int_equal(sde_st_open(path, &f2, err, sizeof err), 0);
    assert_memory_equal(f2->t[0].data, a, n * sizeof *a);
    assert_memory_equal(f1->t[0].data, a, n * sizeof *a);
    sde_st_free(f2);
    sde_st_free(f1);
    free(a);
}

/* Header padded with spaces (allowed by the format) and a header-only file with no tensors. */
static void test_padding_and_empty(void **state)
{
    (void)state;
    float v = 1;
    size_t len;
    uint8_t *img =
        stw_build_raw("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}     ", &v, 4, &len);
    sde_st_file *sf = NULL;
    char err[256];
    assert_int_equal(sde_st_parse("pad", img, len, &sf, err, sizeof err), 0);
    assert_int_equal(sf->n, 1);
    sde_st_free(sf);
    free(img);

    img = stw_build_raw("{}", NULL, 0, &len);
    assert_int_equal(sde_st_parse("empty", img, len, &sf, err, sizeof err), 0);
    assert_int_equal(sf->n, 0);
    assert_int_equal(sf->data_len, 0);
    sde_st_free(sf);
    free(img);
}

static void expect_reject(const uint8_t *img, size_t len, const char *want1, const char *want2)
{
    char err[512] = "";
    sde_st_file *sf = (sde_st_file *)1;
    int rc = sde_st_parse("bad.safetensors", img, len, &sf, err, sizeof err);
    if (rc == 0) fail_msg("accepted, expected an error with \"%s\"", want1 ? want1 : "(any)");
    assert_null(sf);
    stw_assert_contains(err, "bad.safetensors: ");
    if (want1) stw_assert_contains(err, want1);
    if (want2) stw_assert_contains(err, want2);
}

static void test_header_length(void **state)
{
    (void)state;
    float v[4] = {0};
    size_t len;
    uint8_t *img =
        stw_build_raw("{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", v, 16, &len);
    uint64_t bad[] = {0, 1, len - 8 + 1, (uint64_t)SDE_ST_MAX_HEADER + 1, UINT64_MAX, 1ull << 63};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        uint8_t *m = malloc(len);
        memcpy(m, img, len);
        for (int i = 0; i < 8; i++)
            m[i] = (uint8_t)(bad[k] >> (8 * i));
        expect_reject(m, len, "header length", NULL);
        free(m);
    }
    /* Truncation anywhere: inside the length, inside the header, inside the data. */
    for (size_t cut = 0; cut < len; cut++)
        expect_reject(img, cut, NULL, NULL);
    expect_reject(img, 5, "too small", NULL);
    free(img);
}

static void test_bad_json(void **state)
{
    (void)state;
    static const struct {
        const char *hdr;
        const char *want;
    } cases[] = {
        {"{\"a\":", "not valid JSON"},
        {"[1, 2]", "does not start with '{'"},
        {"  {}", "does not start with '{'"},
        {"{} x", "not valid JSON"},
        {"{\"a\xff\":1}", "not valid JSON"},
        {"{\"n\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,0]}}",
         "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t len;
        uint8_t *img = stw_build_raw(cases[i].hdr, NULL, 0, &len);
        expect_reject(img, len, cases[i].want, NULL);
        free(img);
    }
}

static void test_tensor_errors(void **state)
{
    (void)state;
    static const struct {
        const char *entry; /* the value of tensor "model.diffusion_model.out.2.weight" */
        const char *want;
    } cases[] = {
        {"{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}", "unsupported dtype \"F8_E4M3\""},
        {"{\"dtype\":\"U32\",\"shape\":[4],\"data_offsets\":[0,16]}", "unsupported dtype"},
        {"{\"dtype\":7,\"shape\":[4],\"data_offsets\":[0,16]}", "dtype"},
        {"{\"shape\":[4],\"data_offsets\":[0,16]}", "dtype"},
        {"{\"dtype\":\"F32\",\"data_offsets\":[0,16]}", "shape"},
        {"{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}", "shape"},
        {"{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,4],\"data_offsets\":[0,16]}", "9 dims"},
        {"{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}", "shape[0]"},
        {"{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,16]}", "shape[0]"},
        {"{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,16]}", "overflows"},
        {"{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,16]}", "overflows"},
        {"{\"dtype\":\"F32\",\"shape\":[4]}", "data_offsets"},
        {"{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0]}", "data_offsets"},
        {"{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16,32]}", "data_offsets"},
        {"{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[-16,0]}", "data_offsets"},
        {"{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[\"0\",16]}", "data_offsets"},
        {"{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,0]}", "begin > end"},
        {"{\"dtype\":\"F32\",\"shape\":[16],\"data_offsets\":[0,64]}",
         "data_offsets [0, 64] exceed data size 16"},
        {"{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[4,20]}", "exceed data size 16"},
        {"{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}", "hold 16 bytes but F32 shape needs 12"},
        {"{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,16]}", "needs 8"},
        {"[1,2]", "not a JSON object"},
    };
    uint8_t data[16] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char hdr[512];
        snprintf(hdr, sizeof hdr, "{\"model.diffusion_model.out.2.weight\":%s}", cases[i].entry);
        size_t len;
        uint8_t *img = stw_build_raw(hdr, data, sizeof data, &len);
        expect_reject(img, len, "tensor \"model.diffusion_model.out.2.weight\": ", cases[i].want);
        free(img);
    }
}

static void test_names_and_metadata(void **state)
{
    (void)state;
    static const struct {
        const char *hdr;
        const char *want;
    } cases[] = {
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"a\":{\"dtype\":\"U8\",\"shape\":["
         "1],\"data_offsets\":[1,2]}}",
         "duplicate"},
        {"{\"\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", "empty name"},
        {"{\"__metadata__\":{\"k\":1}}", "__metadata__ \"k\" is not a string"},
        {"{\"__metadata__\":[\"k\"]}", "__metadata__ is not a JSON object"},
        {"{\"__metadata__\":{},\"__metadata__\":{}}", "duplicate"},
    };
    uint8_t data[2] = {1, 2};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t len;
        uint8_t *img = stw_build_raw(cases[i].hdr, data, sizeof data, &len);
        expect_reject(img, len, cases[i].want, NULL);
        free(img);
    }
}

static void test_wrong_files(void **state)
{
    (void)state;
    char err[512];
    sde_st_file *sf = NULL;
    /* By name: a pickle checkpoint. */
    const char *ckpt = stw_path(stw_tmpdir, "v1-5-pruned.ckpt");
    assert_int_equal(stw_write(ckpt, "PK\3\4whatever", 12), 0);
    assert_int_equal(sde_st_open(ckpt, &sf, err, sizeof err), -1);
    stw_assert_contains(err, ckpt);
    stw_assert_contains(err, "only safetensors is supported");
    /* By content: a zip or a raw pickle stream, whatever the name. */
    const char *zip = stw_path(stw_tmpdir, "zip.safetensors");
    uint8_t zipb[64] = {'P', 'K', 3, 4};
    assert_int_equal(stw_write(zip, zipb, sizeof zipb), 0);
    assert_int_equal(sde_st_open(zip, &sf, err, sizeof err), -1);
    stw_assert_contains(err, "only safetensors is supported");
    const char *pkl = stw_path(stw_tmpdir, "pickle.safetensors");
    uint8_t pklb[64] = {0x80, 0x02, '}', 'q', 0};
    assert_int_equal(stw_write(pkl, pklb, sizeof pklb), 0);
    assert_int_equal(sde_st_open(pkl, &sf, err, sizeof err), -1);
    stw_assert_contains(err, "only safetensors is supported");
    /* A directory, a missing file, an empty file, a text file. */
    assert_int_equal(sde_st_open(stw_tmpdir, &sf, err, sizeof err), -1);
    stw_assert_contains(err, "is a directory");
    assert_int_equal(sde_st_open(stw_path(stw_tmpdir, "nope.safetensors"), &sf, err, sizeof err), -1);
    stw_assert_contains(err, "cannot open");
    const char *empty = stw_path(stw_tmpdir, "empty.safetensors");
    assert_int_equal(stw_write(empty, "", 0), 0);
    assert_int_equal(sde_st_open(empty, &sf, err, sizeof err), -1);
    stw_assert_contains(err, "too small");
    const char *txt = stw_path(stw_tmpdir, "readme.safetensors");
    assert_int_equal(stw_write(txt, "hello, this is not a model\n", 27), 0);
    assert_int_equal(sde_st_open(txt, &sf, err, sizeof err), -1);
    stw_assert_contains(err, txt);
    stw_assert_contains(err, "header length");
    assert_null(sf);
}

/* A file cut short on disk (the usual interrupted download). */
static void test_truncated_file(void **state)
{
    (void)state;
    float a[64];
    for (int i = 0; i < 64; i++)
        a[i] = (float)i;
    stw_tensor t[] = {{"first_stage_model.decoder.conv_in.weight", "F32", 1, {64}, a, sizeof a}};
    size_t len;
    uint8_t *img = stw_build(t, 1, NULL, -1, &len);
    const char *path = stw_path(stw_tmpdir, "cut.safetensors");
    assert_int_equal(stw_write(path, img, len - 10), 0);
    char err[512];
    sde_st_file *sf = NULL;
    assert_int_equal(sde_st_open(path, &sf, err, sizeof err), -1);
    stw_assert_contains(err, path);
    stw_assert_contains(
        err,
        "tensor \"first_stage_model.decoder.conv_in.weight\": data_offsets [0, 256] exceed data size 246");
    free(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_file),    cmocka_unit_test(test_padding_and_empty),
        cmocka_unit_test(test_header_length), cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_tensor_errors), cmocka_unit_test(test_names_and_metadata),
        cmocka_unit_test(test_wrong_files),   cmocka_unit_test(test_truncated_file),
        cmocka_unit_test(test_large_file),
    };
    return cmocka_run_group_tests(tests, stw_tmpdir_setup, stw_tmpdir_teardown);
}
