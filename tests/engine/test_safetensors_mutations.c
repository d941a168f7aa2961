/* test_safetensors_mutations.c: deterministic in-process mutation fuzzing of the safetensors parser and
 * checkpoint loader. Thousands of header/offset/length mutations of a valid file: nothing may crash or
 * read out of bounds (the suite runs it under ASan too); a rejection must explain itself, an acceptance
 * must describe tensors that lie inside the data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "checkpoint.h"
#include "dtype_convert.h"
#include "safetensors.h"
#include "st_test_writer.h"

#define ITERATIONS 30000
#define FILE_EVERY 40 /* every Nth mutation also goes through a file and sde_ckpt_open */

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}

static size_t rndn(size_t n)
{
    return n ? (size_t)(rnd() % n) : 0;
}

/* The seed file: every dtype, a scalar, an empty tensor, metadata. */
static uint8_t *seed_image(size_t *len, size_t *hlen)
{
    static float f32[12];
    static uint16_t f16[6], bf16[3];
    static double f64[2] = {1.5, -2.25};
    static int64_t i64[2] = {1, 2};
    static int32_t i32[3] = {-1, 0, 1};
    static int16_t i16[2] = {5, 6};
    static uint8_t u8[3] = {1, 2, 3}, b[2] = {0, 1};
    static int8_t i8[1] = {-7};
    for (int i = 0; i < 12; i++)
        f32[i] = (float)i * 0.5f;
    for (int i = 0; i < 6; i++)
        f16[i] = (uint16_t)(0x3c00 + i);
    for (int i = 0; i < 3; i++)
        bf16[i] = (uint16_t)(0x3f80 + i);
    stw_tensor t[] = {
        {"model.diffusion_model.input_blocks.0.0.weight", "F32", 4, {3, 1, 2, 2}, f32, sizeof f32},
        {"first_stage_model.decoder.conv_in.bias", "F16", 2, {2, 3}, f16, sizeof f16},
        {"cond_stage_model.transformer.text_model.final_layer_norm.weight",
         "BF16",
         1,
         {3},
         bf16,
         sizeof bf16},
        {"alphas_cumprod", "F64", 1, {2}, f64, sizeof f64},
        {"position_ids", "I64", 2, {1, 2}, i64, sizeof i64},
        {"i32", "I32", 1, {3}, i32, sizeof i32},
        {"i16", "I16", 1, {2}, i16, sizeof i16},
        {"i8", "I8", 0, {0}, i8, sizeof i8},
        {"u8", "U8", 3, {1, 3, 1}, u8, sizeof u8},
        {"mask", "BOOL", 1, {2}, b, sizeof b},
        {"empty", "F32", 2, {0, 5}, NULL, 0},
    };
    uint8_t *img =
        stw_build(t, (int)(sizeof t / sizeof *t), "{\"format\":\"pt\",\"sdw.preset\":\"tiny\"}", -1, len);
    *hlen = 0;
    for (int i = 7; i >= 0; i--)
        *hlen = *hlen << 8 | img[i];
    return img;
}

/* A copy of an image with header text replaced by hdr (length field rewritten to match). */
static uint8_t *with_header(const uint8_t *img, size_t len, size_t hlen, const char *hdr, size_t hn,
                            size_t *outlen)
{
    size_t dl = len - 8 - hlen;
    *outlen = 8 + hn + dl;
    uint8_t *o = malloc(*outlen ? *outlen : 1);
    for (int i = 0; i < 8; i++)
        o[i] = (uint8_t)((uint64_t)hn >> (8 * i));
    memcpy(o + 8, hdr, hn);
    memcpy(o + 8 + hn, img + 8 + hlen, dl);
    return o;
}

static const char *const interesting[] = {
    "0",
    "1",
    "2",
    "3",
    "4",
    "7",
    "8",
    "12",
    "16",
    "48",
    "95",
    "96",
    "97",
    "255",
    "256",
    "-1",
    "-8",
    "65535",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "1.5",
    "1e3",
    "-0",
    "null",
    "true",
    "\"4\"",
    "[]",
    "{}",
    "[0,4]",
};
static const char *const dtypes_any[] = {"F32", "F16", "BF16", "F64",  "I64",     "I32",
                                         "I16", "I8",  "U8",   "BOOL", "F8_E4M3", "U16",
                                         "U32", "U64", "C64",  "",     "f32",     "F32 "};

/* Mutates the header text h (NUL-terminated, capacity cap) in place: numbers, dtypes, structure. */
static void mutate_header(char *h, size_t cap)
{
    size_t n = strlen(h);
    switch (rndn(8)) {
    case 0:
    case 1: { /* replace one number (shape dims and data_offsets live here) */
        size_t starts[512];
        int k = 0;
        for (size_t i = 0; i < n && k < 512; i++)
            if (h[i] >= '0' && h[i] <= '9' && i > 0 && (h[i - 1] == '[' || h[i - 1] == ',')) starts[k++] = i;
        if (!k) break;
        size_t s = starts[rndn((size_t)k)], e = s;
        while (e < n && h[e] >= '0' && h[e] <= '9')
            e++;
        char num[64];
        if (rndn(3))
            snprintf(num, sizeof num, "%s", interesting[rndn(sizeof interesting / sizeof *interesting)]);
        else
            snprintf(num, sizeof num, "%llu", (unsigned long long)(rnd() >> rndn(64)));
        size_t nl = strlen(num);
        if (n - (e - s) + nl + 1 > cap) break;
        memmove(h + s + nl, h + e, n - e + 1);
        memcpy(h + s, num, nl);
        break;
    }
    case 2: { /* swap a dtype */
        char *p = h;
        int k = 0;
        while ((p = strstr(p, "\"dtype\":\"")))
            p++, k++;
        if (!k) break;
        int pick = (int)rndn((size_t)k);
        p = h;
        for (int i = 0; i <= pick; i++)
            p = strstr(p, "\"dtype\":\"") + 1;
        char *v = p + 8, *end = strchr(v, '"');
        if (!end) break;
        const char *d = dtypes_any[rndn(sizeof dtypes_any / sizeof *dtypes_any)];
        size_t dl = strlen(d), old = (size_t)(end - v);
        if (n - old + dl + 1 > cap) break;
        memmove(v + dl, end, strlen(end) + 1);
        memcpy(v, d, dl);
        break;
    }
    case 3: { /* break structure: replace one structural char */
        static const char st[] = "{}[],:\"";
        size_t i = rndn(n);
        h[i] = st[rndn(sizeof st - 1)];
        break;
    }
    case 4: { /* random byte anywhere in the header (possibly invalid UTF-8 or NUL) */
        uint8_t v = (uint8_t)rnd();
        h[rndn(n)] = (char)(v ? v : 'x');
        break;
    }
    case 5: { /* add a dimension to a shape */
        char *p = strstr(h, "\"shape\":[");
        for (size_t skip = rndn(6); p && skip; skip--) {
            char *q = strstr(p + 1, "\"shape\":[");
            if (!q) break;
            p = q;
        }
        if (!p || n + 4 > cap) break;
        p += 9;
        memmove(p + 2, p, strlen(p) + 1);
        p[0] = (char)('0' + rndn(3));
        p[1] = ',';
        break;
    }
    case 6: { /* drop a range of up to 40 characters */
        char *a = h + 1 + rndn(n > 2 ? n - 2 : 1), *b = a + rndn(40);
        if (b > h + n - 1) b = h + n - 1;
        memmove(a, b, strlen(b) + 1);
        break;
    }
    default: { /* delete one character */
        size_t i = rndn(n);
        memmove(h + i, h + i + 1, n - i);
        break;
    }
    }
}

typedef struct {
    int accepted, rejected, ckpt_opened;
} stats;

/* Checks the result of one parse attempt on an exact-size heap copy (so ASan sees any overrun). */
static void check_parse(const uint8_t *img, size_t len, stats *st)
{
    uint8_t *buf = malloc(len ? len : 1);
    if (len) memcpy(buf, img, len);
    char err[512] = "";
    sde_st_file *f = (sde_st_file *)1;
    if (sde_st_parse("mut.safetensors", buf, len, &f, err, sizeof err)) {
        assert_null(f);
        if (strncmp(err, "mut.safetensors: ", 17) || strlen(err) < 20)
            fail_msg("rejection without a proper message: \"%s\"", err);
        st->rejected++;
        free(buf);
        return;
    }
    st->accepted++;
    assert_true(f->data >= buf + 10 && f->data + f->data_len == buf + len);
    unsigned x = 0;
    for (int i = 0; i < f->n; i++) {
        const sde_st_tensor *t = &f->t[i];
        assert_true(t->name && *t->name);
        assert_true(t->ndim >= 0 && t->ndim <= SDE_MAX_DIMS);
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            assert_true(t->shape[d] >= 0);
            assert_false(__builtin_mul_overflow(numel, (uint64_t)t->shape[d], &numel));
        }
        assert_int_equal(numel, t->numel);
        assert_int_equal((uint64_t)t->nbytes, numel * sde_st_dtype_size(t->dtype));
        assert_true(t->begin <= t->end && t->end <= f->data_len && t->end - t->begin == t->nbytes);
        assert_ptr_equal(t->data, f->data + t->begin);
        for (size_t k = 0; k < t->nbytes; k++) /* every byte it claims must be readable */
            x += t->data[k];
        for (int j = 0; j < i; j++)
            assert_string_not_equal(f->t[j].name, t->name);
    }
    for (int i = 0; i < f->n_meta; i++)
        assert_true(f->meta_keys[i] && f->meta_vals[i]);
    (void)x;
    sde_st_free(f);
    free(buf);
}

/* The same bytes through a file and the checkpoint API: every float tensor converts, the rest refuse. */
static void check_ckpt(const uint8_t *img, size_t len, stats *st)
{
    const char *path = stw_path(stw_tmpdir, "mut.safetensors");
    assert_int_equal(stw_write(path, img, len), 0);
    char err[512] = "";
    sde_ckpt *c = (sde_ckpt *)1;
    if (sde_ckpt_open(path, &c, err, sizeof err)) {
        assert_null(c);
        assert_true(strstr(err, "mut.safetensors") != NULL);
        return;
    }
    st->ckpt_opened++;
    for (int i = 0; i < sde_ckpt_count(c); i++) {
        const sde_tensor *t = sde_ckpt_at(c, i);
        const float *f = sde_ckpt_f32(c, t->name, t->ndim, t->shape, err, sizeof err);
        int is_float = t->dtype == SDE_DT_F32 || t->dtype == SDE_DT_F16 || t->dtype == SDE_DT_BF16 ||
                       t->dtype == SDE_DT_F64;
        if (!is_float) {
            assert_null(f);
            continue;
        }
        assert_non_null(f);
        size_t n = t->nbytes / sde_st_dtype_size(t->dtype);
        float *ref = malloc(n * 4 + 4);
        assert_int_equal(sde_cvt_to_f32(t->dtype, t->data, n, ref), 0);
        assert_memory_equal(f, ref, n * 4); /* bitwise: NaN payloads survive too */
        free(ref);
    }
    sde_ckpt_free(c);
}

static void test_mutations(void **state)
{
    (void)state;
    size_t len, hlen;
    uint8_t *seed = seed_image(&len, &hlen);
    stats st = {0};
    check_parse(seed, len, &st);
    assert_int_equal(st.accepted, 1);

    size_t cap = hlen + 256;
    char *h = malloc(cap);
    for (int it = 0; it < ITERATIONS; it++) {
        uint8_t *img = NULL;
        size_t ilen = 0;
        int kind = (int)rndn(10);
        if (kind < 6) { /* header text mutations, 1-3 at once, length field kept consistent */
            memcpy(h, seed + 8, hlen);
            h[hlen] = 0;
            for (int m = 1 + (int)rndn(3); m; m--)
                mutate_header(h, cap);
            size_t hn = strlen(h);
            img = with_header(seed, len, hlen, h, hn, &ilen);
        } else if (kind == 6) { /* raw byte flips anywhere, including the length field and the data */
            ilen = len;
            img = malloc(len);
            memcpy(img, seed, len);
            for (int m = 1 + (int)rndn(4); m; m--) {
                size_t pos = rndn(10) < 3 ? rndn(8) : rndn(len);
                img[pos] ^= (uint8_t)(1u << rndn(8));
            }
        } else if (kind == 7) { /* truncation or extension */
            ilen = rndn(2) ? rndn(len + 1) : len + rndn(64);
            img = calloc(1, ilen ? ilen : 1);
            memcpy(img, seed, ilen < len ? ilen : len);
        } else if (kind == 8) { /* the length field alone */
            ilen = len;
            img = malloc(len);
            memcpy(img, seed, len);
            uint64_t hl = rndn(2) ? rndn(len + 16) : rnd() >> rndn(64);
            for (int i = 0; i < 8; i++)
                img[i] = (uint8_t)(hl >> (8 * i));
        } else { /* benign: padding spaces after the header must always be accepted */
            memcpy(h, seed + 8, hlen);
            size_t pad = rndn(40);
            memset(h + hlen, ' ', pad);
            img = with_header(seed, len, hlen, h, hlen + pad, &ilen);
            stats before = st;
            check_parse(img, ilen, &st);
            assert_int_equal(st.accepted, before.accepted + 1);
            free(img);
            continue;
        }
        check_parse(img, ilen, &st);
        if (it % FILE_EVERY == 0) check_ckpt(img, ilen, &st);
        free(img);
    }
    print_message("%d mutations: %d accepted, %d rejected; %d opened as checkpoints\n", ITERATIONS + 1,
                  st.accepted, st.rejected, st.ckpt_opened);
    /* The mutator must reach both outcomes, or it is not testing anything. */
    assert_true(st.accepted > ITERATIONS / 20);
    assert_true(st.rejected > ITERATIONS / 2);
    assert_true(st.ckpt_opened > 10);
    free(h);
    free(seed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_mutations)};
    return cmocka_run_group_tests(tests, stw_tmpdir_setup, stw_tmpdir_teardown);
}
