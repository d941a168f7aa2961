/* test_golden_sdxl_e2e.c: SDXL (random full-size weights, 6.9 GB) through sde_generate() must reproduce
 * stable-diffusion.cpp's images in tests/data/golden/sdxl-rand/. Label manual: SDW_MANUAL_TESTS=1. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "golden_util.h"
#include "mkmodel_random.h"

static sde_engine *xl;

/* $SDW_SDXL_MODEL, else BUILD/tmp/randsdxl-s1-f16.safetensors (sd-worker-engine mkmodel --preset
 * sdxl-random --seed 1 --dtype f16); absent: the whole test is skipped (77). */
static int setup(void **state)
{
    (void)state;
    char model[1200], tok[1200];
    const char *env = getenv("SDW_SDXL_MODEL");
    if (env && *env)
        snprintf(model, sizeof model, "%s", env);
    else
        gu_fixture_path(model, sizeof model, "sdxl");
    gu_vocab_path(tok, sizeof tok);
    return gu_engine_load_on(model, tok, golden_backend(), &xl);
}

static int teardown(void **state)
{
    (void)state;
    sde_engine_free(xl);
    xl = NULL;
    return 0;
}

/* The acceptance target of the golden README: max |delta| <= 3 and mean <= 0.5 of 255. */
static void check(const char *cse, const sde_gen_params *p)
{
    char dir[1200], err[1024];
    gu_golden_dir(dir, sizeof dir, "sdxl", cse);
    sde_result r;
    assert_int_equal(sde_generate(xl, p, &r, err, sizeof err), SDE_OK);
    int maxd = 255;
    double mean = 255;
    if (ge_compare_png(dir, &r, &maxd, &mean, err, sizeof err)) fail_msg("%s: %s", cse, err);
    printf("SDXL %s: max |delta| %d, mean %.4f (of 255), %.1f s\n", cse, maxd, mean, r.t_total);
    sde_result_free(&r);
    assert_true(maxd <= 3);
    assert_true(mean <= 0.5);
}

static sde_gen_params cat128(sde_sampler s)
{
    sde_gen_params p = gu_cat_params(s);
    p.negative_prompt = "";
    p.width = p.height = 128;
    return p;
}

static void test_euler(void **state)
{
    (void)state;
    sde_model_info in;
    sde_engine_info(xl, &in);
    assert_string_equal(in.arch, "sdxl");
    assert_int_equal(in.default_size, 1024);
    assert_int_equal(in.context_dim, 2048);
    sde_gen_params p = cat128(SDE_SAMPLER_EULER);
    check("euler", &p);
}

/* a non-empty negative prompt is encoded like the prompt (context and pooled text both real) */
static void test_negative(void **state)
{
    (void)state;
    sde_gen_params p = cat128(SDE_SAMPLER_EULER);
    p.negative_prompt = "blurry, low quality";
    check("negative", &p);
}

/* 192 wide, 128 high: y's size features are height first */
static void test_wide(void **state)
{
    (void)state;
    sde_gen_params p = cat128(SDE_SAMPLER_EULER);
    p.width = 192;
    check("wide", &p);
}

/* another prompt, seed, sampler (ancestral noise from the same Philox stream) and guidance */
static void test_euler_a(void **state)
{
    (void)state;
    sde_gen_params p = cat128(SDE_SAMPLER_EULER_A);
    p.prompt = "a red bicycle leaning on a wall";
    p.seed = 7;
    p.cfg_scale = 5.f;
    check("euler_a", &p);
}

/* cases added after the first four (tests/data/golden/sdxl-rand/README.md): */

/* 128 wide, 192 high, with a negative prompt, dpm++2m on the karras schedule, 3 steps, another seed */
static void test_dpmpp2m_karras_tall(void **state)
{
    (void)state;
    sde_gen_params p = cat128(SDE_SAMPLER_DPMPP_2M);
    p.prompt = "a lighthouse on a cliff at sunset";
    p.negative_prompt = "fog, people, text";
    p.seed = 1234;
    p.schedule = SDE_SCHEDULE_KARRAS;
    p.cfg_scale = 6.f;
    p.height = 192;
    p.steps = 3;
    check("dpmpp2m_karras_tall", &p);
}

/* the turbo recipe against the peer: guidance 1 (the conditional pass only), euler_a, one step */
static void test_turbo_cfg1(void **state)
{
    (void)state;
    sde_gen_params p = cat128(SDE_SAMPLER_EULER_A);
    p.prompt = "a bowl of ramen, studio light";
    p.seed = 2026;
    p.cfg_scale = 1.f;
    p.steps = 1;
    check("turbo_cfg1", &p);
}

/* SDXL-Turbo settings: guidance 0 and 1 both run the conditional pass only, so they give the same pixels */
static void test_turbo_cond_only(void **state)
{
    (void)state;
    sde_gen_params p = cat128(SDE_SAMPLER_EULER_A);
    p.width = p.height = 64;
    p.steps = 1;
    uint8_t *px[2] = {NULL, NULL};
    char err[1024];
    for (int k = 0; k < 2; k++) {
        p.cfg_scale = (float)k;
        sde_result r;
        assert_int_equal(sde_generate(xl, &p, &r, err, sizeof err), SDE_OK);
        int w, h;
        assert_int_equal(sde_png_decode(r.png, r.png_len, &px[k], &w, &h, err, sizeof err), 0);
        assert_int_equal(w, 64);
        sde_result_free(&r);
    }
    assert_memory_equal(px[0], px[1], 64 * 64 * 3);
    free(px[0]);
    free(px[1]);
}

/* SDXL LoRA (mkmodel lora-sdxl-random, seed 1: lora_unet_ by LDM block, lora_te1_, lora_te2_) at 0.8 through
 * a prompt tag, against the peer's --lora-model-dir run (tests/data/golden/sdxl-rand/lora/README.md); then a
 * job without it must give the checkpoint's own image again (test_euler's golden). */
static void test_lora(void **state)
{
    (void)state;
    char dir[1100], path[1200], err[1024];
    snprintf(dir, sizeof dir, "%s/tmp/lora-sdxl-test", gu_build_dir());
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/xlstyle.safetensors", dir);
    sde_rand_preset pr;
    struct stat st;
    if (stat(path, &st) && (sde_rand_preset_parse("lora-sdxl-random", &pr) ||
                            sde_mkmodel_random(path, pr, 1, 0, 1, NULL, err, sizeof err)))
        fail_msg("lora-sdxl-random: %s", err);
    sde_gen_params p = cat128(SDE_SAMPLER_EULER);
    p.prompt = "a photo of a cat<lora:xlstyle:0.8>";
    p.steps = 2;
    p.lora_dir = dir;
    check("lora", &p);
    p = cat128(SDE_SAMPLER_EULER);
    check("euler", &p);
}

int main(void)
{
    /* 14 GB of float32 weights and minutes of CPU: by hand only, like test_mkmodel_sdxl */
    const char *on = getenv("SDW_MANUAL_TESTS"), *env = getenv("SDW_SDXL_MODEL");
    char model[1200];
    gu_fixture_path(model, sizeof model, "sdxl");
    struct stat st;
    if (!on || strcmp(on, "1")) {
        printf("skipped: needs ~15 GB; run with SDW_MANUAL_TESTS=1 (ctest -L manual)\n");
        return 77;
    }
    if (!(env && *env) && stat(model, &st)) {
        printf("skipped: no SDXL checkpoint (set SDW_SDXL_MODEL or write %s)\n", model);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_euler),
        cmocka_unit_test(test_negative),
        cmocka_unit_test(test_wide),
        cmocka_unit_test(test_euler_a),
        cmocka_unit_test(test_turbo_cond_only),
        cmocka_unit_test(test_dpmpp2m_karras_tall),
        cmocka_unit_test(test_turbo_cfg1),
        cmocka_unit_test(test_lora),
    };
    /* SDW_TEST_FILTER=turbo_cfg1,dpmpp2m runs only the cases whose names contain one of the words (each
     * case is a minute or more, and the load is 14 GB) */
    const char *filter = getenv("SDW_TEST_FILTER");
    struct CMUnitTest run[sizeof tests / sizeof *tests];
    size_t n = 0;
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
        int keep = !filter || !*filter;
        char words[256];
        snprintf(words, sizeof words, "%s", filter ? filter : "");
        for (char *save = NULL, *w = strtok_r(words, ",", &save); w && !keep; w = strtok_r(NULL, ",", &save))
            keep = strstr(tests[i].name, w) != NULL;
        if (keep) run[n++] = tests[i];
    }
    return _cmocka_run_group_tests("test_golden_sdxl_e2e", run, n, setup, teardown);
}
