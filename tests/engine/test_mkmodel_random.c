/* test_mkmodel_random.c: the full-size random presets of mkmodel without writing gigabytes: tensor and
 * parameter counts of every preset, and the random LoRA written byte for byte (sha256) at any thread count.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mkmodel_random.h"
#include "golden_util.h"

static const char *tmpdir(void)
{
    const char *d = getenv("SDW_TMPDIR");
    return d && *d ? d : "/tmp";
}

typedef struct {
    int n;
    int64_t params;  /* F16/F32 weights, without the F32 schedule buffers and the I64 position_ids */
    int64_t buffers; /* elements of those */
    int f32, i64;    /* tensors of each dtype */
} counts;

static void count_tensor(void *ud, const char *name, const char *dtype, int ndim, const int64_t *shape)
{
    counts *c = ud;
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    c->n++;
    c->f32 += !strcmp(dtype, "F32");
    c->i64 += !strcmp(dtype, "I64");
    if (!strcmp(dtype, "I64") || (!strcmp(dtype, "F32") && !strchr(name, '.')))
        c->buffers += n; /* position_ids, or a schedule buffer (the only names without a dot) */
    else
        c->params += n;
}

static counts count_preset(sde_rand_preset p, int f32)
{
    counts c = {0};
    int n = sde_mkmodel_random_list(p, f32, count_tensor, &c);
    assert_int_equal(n, c.n);
    return c;
}

/* The sizes the specification gives for each file. */
static void test_counts(void **state)
{
    (void)state;
    counts c = count_preset(SDE_RAND_SD15, 0);
    assert_int_equal(c.n, 1143);
    assert_int_equal(c.params, 1066235307);
    assert_int_equal(c.buffers, 12 * 1000 + 77);
    assert_int_equal(c.f32, 12);
    assert_int_equal(c.i64, 1);
    c = count_preset(SDE_RAND_SD21, 0);
    assert_int_equal(c.n, 1240);
    assert_int_equal(c.params, 1303597228);
    assert_int_equal(c.buffers, 12 * 1000);
    assert_int_equal(c.i64, 0);
    c = count_preset(SDE_RAND_SDXL, 0);
    assert_int_equal(c.n, 2515);
    assert_int_equal(c.params, 3468837868LL);
    assert_int_equal(c.buffers, 77);
    assert_int_equal(c.f32, 0);
    c = count_preset(SDE_RAND_LORA_SD15, 0);
    assert_int_equal(c.n, 792);
    assert_int_equal(c.params, 2359560);
    c = count_preset(SDE_RAND_SD15_INPAINT, 0); /* conv_in [320, 9, 3, 3] instead of [320, 4, 3, 3] */
    assert_int_equal(c.n, 1143);
    assert_int_equal(c.params, 1066235307 + 320 * 5 * 9);
    c = count_preset(SDE_RAND_LORA_SDXL, 0); /* 722 UNet, 72 CLIP-L and 192 bigG modules */
    assert_int_equal(c.n, 3 * 986);
    c = count_preset(SDE_RAND_SD21, 1); /* f32: every weight F32 */
    assert_int_equal(c.f32, 1240);
}

/* Wider elements first, then by name: the order of the file and of --list. */
typedef struct {
    char prev[160];
    int prev_w, bad;
} order;

static void check_order(void *ud, const char *name, const char *dtype, int ndim, const int64_t *shape)
{
    (void)ndim, (void)shape;
    order *o = ud;
    int w = !strcmp(dtype, "I64") ? 8 : !strcmp(dtype, "F32") ? 4 : 2;
    if (o->prev[0] && (w > o->prev_w || (w == o->prev_w && strcmp(o->prev, name) >= 0))) o->bad++;
    snprintf(o->prev, sizeof o->prev, "%s", name);
    o->prev_w = w;
}

static void test_order(void **state)
{
    (void)state;
    for (int p = SDE_RAND_SD15; p <= SDE_RAND_LORA_SDXL; p++) {
        order o = {0};
        sde_mkmodel_random_list((sde_rand_preset)p, 0, check_order, &o);
        assert_int_equal(o.bad, 0);
    }
}

static void test_preset_names(void **state)
{
    (void)state;
    sde_rand_preset p;
    assert_int_equal(sde_rand_preset_parse("sd15-random", &p), 0);
    assert_int_equal(p, SDE_RAND_SD15);
    assert_int_equal(sde_rand_preset_parse("sd21-random", &p), 0);
    assert_int_equal(p, SDE_RAND_SD21);
    assert_int_equal(sde_rand_preset_parse("sdxl-random", &p), 0);
    assert_int_equal(p, SDE_RAND_SDXL);
    assert_int_equal(sde_rand_preset_parse("lora-sd15-random", &p), 0);
    assert_int_equal(p, SDE_RAND_LORA_SD15);
    assert_int_equal(sde_rand_preset_parse("sd15-inpaint-random", &p), 0);
    assert_int_equal(p, SDE_RAND_SD15_INPAINT);
    assert_int_equal(sde_rand_preset_parse("lora-sdxl-random", &p), 0);
    assert_int_equal(p, SDE_RAND_LORA_SDXL);
    assert_int_equal(sde_rand_preset_parse("tiny", &p), -1);
    assert_int_equal(sde_rand_preset_parse("sd15", &p), -1);
    assert_int_equal(sde_rand_preset_parse(NULL, &p), -1);
}

static void file_sha256(const char *path, char hex[65])
{
    assert_int_equal(gu_file_sha256(path, hex), 0);
}

/* The LoRA is byte for byte the specification's file (seed 1, F16; its sha256 is in tests/data/README.md),
 * whatever the thread count, and written via PATH.part. */
static void test_lora_sha256(void **state)
{
    (void)state;
    char path[1024], part[1100], hex[65], err[512];
    snprintf(path, sizeof path, "%s/test_mkmodel_lora_%d.safetensors", tmpdir(), (int)getpid());
    snprintf(part, sizeof part, "%s.part", path);
    for (int threads = 1; threads <= 3; threads += 2) {
        uint64_t size = 0;
        if (sde_mkmodel_random(path, SDE_RAND_LORA_SD15, 1, 0, threads, &size, err, sizeof err))
            fail_msg("%s", err);
        assert_int_equal(size, 4829128);
        assert_int_equal(access(part, F_OK), -1);
        file_sha256(path, hex);
        assert_string_equal(hex, "0176ac2519f5e427ed3721a0699d39335157b26d899653503baf2d823b1f7e8c");
        assert_int_equal(unlink(path), 0);
    }
}

/* Another seed gives another file. */
static void test_lora_seed(void **state)
{
    (void)state;
    char path[1024], hex[65], err[512];
    snprintf(path, sizeof path, "%s/test_mkmodel_lora2_%d.safetensors", tmpdir(), (int)getpid());
    if (sde_mkmodel_random(path, SDE_RAND_LORA_SD15, 2, 0, 0, NULL, err, sizeof err)) fail_msg("%s", err);
    file_sha256(path, hex);
    assert_string_not_equal(hex, "0176ac2519f5e427ed3721a0699d39335157b26d899653503baf2d823b1f7e8c");
    unlink(path);
}

static void test_unwritable(void **state)
{
    (void)state;
    char err[512] = "";
    assert_int_equal(sde_mkmodel_random("/nonexistent/dir/x.safetensors", SDE_RAND_LORA_SD15, 1, 0, 1, NULL,
                                        err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "/nonexistent/dir/x.safetensors.part"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts),       cmocka_unit_test(test_order),
        cmocka_unit_test(test_preset_names), cmocka_unit_test(test_lora_sha256),
        cmocka_unit_test(test_lora_seed),    cmocka_unit_test(test_unwritable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
