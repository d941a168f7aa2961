/* test_golden_sd15_ckpt.c: the full-size random SD 1.5 file (fixture randsd15, mkmodel --preset sd15-random):
 * its sha256 is the one the goldens were made from (tests/data/README.md), its A1111 short hash is that
 * sha256's first 10 digits, every tensor converts, and only the float32 copies stay resident. */
#include "golden_util.h"

#include <time.h>

#include "checkpoint.h"

static char path[1024];

static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, strlen(key))) sscanf(line + strlen(key), "%ld", &v);
    if (f) fclose(f);
    return v;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#define SD15_SHA256 "7971ce78460ab91e5ac620fcd6e273a867e191c2f0a4d0be3aa0e7db03f9fc77"

/* The generator wrote exactly the file the peer's goldens were computed from. */
static void test_sha256(void **state)
{
    (void)state;
    char hex[65];
    double t0 = now();
    if (gu_file_sha256(path, hex)) fail_msg("%s: cannot read", path);
    print_message("sha256 %s in %.2f s\n", hex, now() - t0);
    assert_string_equal(hex, SD15_SHA256);
}

static void test_short_hash(void **state)
{
    (void)state;
    char h[11], err[512];
    double t0 = now();
    if (sde_ckpt_short_hash(path, h, err, sizeof err)) fail_msg("%s", err);
    print_message("short hash %s in %.2f s\n", h, now() - t0);
    assert_memory_equal(h, SD15_SHA256, 10);
    assert_int_equal(h[10], 0);
}

static void test_load_all(void **state)
{
    (void)state;
    char err[512];
    sde_ckpt *c = NULL;
    double t0 = now();
    if (sde_ckpt_open(path, &c, err, sizeof err)) fail_msg("%s", err);
    double t1 = now();
    assert_int_equal(sde_ckpt_count(c), 1143);
    int unet = 0, vae = 0, text = 0, other = 0;
    int64_t params = 0;
    long anon0 = status_kb("RssAnon:");
    for (int i = 0; i < sde_ckpt_count(c); i++) {
        const sde_tensor *t = sde_ckpt_at(c, i);
        if (!strncmp(t->name, "model.diffusion_model.", 22))
            unet++;
        else if (!strncmp(t->name, "first_stage_model.", 18))
            vae++;
        else if (!strncmp(t->name, "cond_stage_model.transformer.text_model.", 40))
            text++;
        else
            other++;
        if (t->dtype == SDE_DT_I64) continue; /* position_ids */
        const float *f = sde_ckpt_f32(c, t->name, t->ndim, t->shape, err, sizeof err);
        if (!f) fail_msg("%s", err);
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++)
            n *= t->shape[d];
        params += n;
    }
    double t2 = now();
    assert_int_equal(unet, 686);
    assert_int_equal(vae, 248);
    assert_int_equal(text, 197);
    assert_int_equal(other, 12);
    assert_int_equal(params, 1066235307 + 12000); /* weights + the 12 schedule buffers of 1000 */
    size_t conv = sde_ckpt_converted_bytes(c);
    long anon = status_kb("RssAnon:"), file = status_kb("RssFile:");
    print_message(
        "open %.3f s, convert %lld params %.2f s, converted %.2f GB, RssAnon +%.2f GB, RssFile %.1f MB\n",
        t1 - t0, (long long)params, t2 - t1, (double)conv / 1e9, (double)(anon - anon0) / 1e6 * 1.024,
        (double)file / 1024);
    /* Every parameter is F16 except the F32 buffers (which may be used in place): the copies are ~4.26 GB. */
    assert_true(conv >= (size_t)1066235307 * 4 && conv <= (size_t)(1066235307 + 12000) * 4);
    /* Nothing beyond the copies stays resident: no second copy, and the mapped file pages were dropped. */
    assert_true((double)(anon - anon0) * 1024 < (double)conv * 1.02);
    assert_true(file < 64 * 1024);
    /* A second request is served from the copy. */
    const sde_tensor *t = sde_ckpt_find(c, "model.diffusion_model.out.2.weight");
    assert_non_null(t);
    const float *a = sde_ckpt_f32(c, t->name, t->ndim, t->shape, err, sizeof err);
    assert_ptr_equal(a, sde_ckpt_f32(c, t->name, 4, (int64_t[]){4, 320, 3, 3}, err, sizeof err));
    assert_int_equal(sde_ckpt_converted_bytes(c), conv);
    sde_ckpt_free(c);
}

int main(void)
{
    gu_fixture_path(path, sizeof path, "sd15");
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_sha256), cmocka_unit_test(test_short_hash),
                                       cmocka_unit_test(test_load_all)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
