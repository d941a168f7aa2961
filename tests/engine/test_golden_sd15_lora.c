/* test_golden_sd15_lora.c: a kohya LoRA (mkmodel lora-sd15-random, seed 1) merged per job on the random
 * SD 1.5 checkpoint must reproduce stable-diffusion.cpp's image (tests/data/golden/sd15-rand/lora/README.md),
 * and a job without it afterwards must give the bit-identical image of a job before it. */
#include <sys/stat.h>

#include "golden_util.h"
#include "lora.h"
#include "mkmodel_random.h"

static char lora_dir[1100];

static int setup(void **state)
{
    (void)state;
    char err[512], path[1200];
    snprintf(lora_dir, sizeof lora_dir, "%s/tmp/lora-test", gu_build_dir());
    mkdir(lora_dir, 0755);
    snprintf(path, sizeof path, "%s/randlora15.safetensors", lora_dir);
    sde_rand_preset pr;
    if (sde_rand_preset_parse("lora-sd15-random", &pr) ||
        sde_mkmodel_random(path, pr, 1, 0, 1, NULL, err, sizeof err)) {
        fprintf(stderr, "writing the LoRA: %s\n", err);
        return -1;
    }
    return ge_engine_setup("sd15");
}

/* The pixels of two results are the same (the PNGs' text chunks carry the prompt, which may differ). */
static int same_pixels(const sde_result *a, const sde_result *b)
{
    uint8_t *pa = NULL, *pb = NULL;
    int aw, ah, bw, bh;
    char err[256];
    assert_int_equal(sde_png_decode(a->png, a->png_len, &pa, &aw, &ah, err, sizeof err), 0);
    assert_int_equal(sde_png_decode(b->png, b->png_len, &pb, &bw, &bh, err, sizeof err), 0);
    int same = aw == bw && ah == bh && !memcmp(pa, pb, (size_t)aw * ah * 3);
    if (!same && aw == bw && ah == bh) { /* how far apart, for the log */
        int maxd = 0;
        long sum = 0;
        for (size_t i = 0; i < (size_t)aw * ah * 3; i++) {
            int d = abs((int)pa[i] - (int)pb[i]);
            sum += d;
            maxd = d > maxd ? d : maxd;
        }
        printf("  pixels differ: max |delta| %d, mean |delta| %.4f (of 255)\n", maxd,
               (double)sum / ((double)aw * ah * 3));
    }
    free(pa);
    free(pb);
    return same;
}

static sde_result gen(const sde_gen_params *p)
{
    sde_result res;
    char err[1024];
    if (sde_generate(ge_engine, p, &res, err, sizeof err) != SDE_OK) fail_msg("sde_generate: %s", err);
    return res;
}

static void test_lora_golden_and_removal(void **state)
{
    (void)state;
    char dir[1200], err[1024];
    gu_golden_dir(dir, sizeof dir, "sd15", "lora");
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER);
    p.negative_prompt = "";
    p.lora_dir = lora_dir;
    sde_result before = gen(&p);

    p.prompt = "a photo of a cat <lora:randlora15:0.8>";
    sde_result with = gen(&p);
    int maxd = 0;
    double meand = 0;
    assert_int_equal(ge_compare_png(dir, &with, &maxd, &meand, err, sizeof err), 0);
    printf("SD 1.5 + LoRA 0.8: apply %.3f s (%d LoRA), total %.2f s; vs peer max |delta| %d, mean %.4f (of "
           "255)\n",
           with.t_lora, with.n_loras, with.t_total, maxd, meand);
    assert_int_equal(with.n_loras, 1);
    assert_true(maxd <= 3);
    assert_true(meand <= 0.5);

    /* the same LoRA through the list instead of the tag: the same image */
    sde_lora_spec l = {"randlora15", 0.8f};
    p.prompt = "a photo of a cat ";
    p.loras = &l;
    p.n_loras = 1;
    sde_result listed = gen(&p);
    assert_true(same_pixels(&listed, &with));
    printf("LoRA through the list: apply %.3f s\n", listed.t_lora);

    /* removed exactly: the next job without LoRA is bit-identical to the one before */
    p.prompt = "a photo of a cat";
    p.loras = NULL;
    p.n_loras = 0;
    sde_result after = gen(&p);
    assert_true(same_pixels(&after, &before)); /* first: it prints how far apart they are */
    assert_true(after.png_len == before.png_len && !memcmp(after.png, before.png, before.png_len));
    sde_result_free(&before);
    sde_result_free(&with);
    sde_result_free(&listed);
    sde_result_free(&after);
}

static void test_lora_names(void **state)
{
    (void)state;
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER);
    const char *field;
    char err[512];
    p.lora_dir = lora_dir;
    const char *bad[] = {"../randlora15", "x/randlora15", "absent", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sde_lora_spec l = {bad[i], 1.f};
        p.loras = &l;
        p.n_loras = 1;
        assert_int_equal(sde_params_validate(&p, &field, err, sizeof err), -1);
        assert_string_equal(field, "loras");
    }
    p.n_loras = 0;
    p.prompt = "a cat <lora:absent:1>";
    assert_int_equal(sde_params_validate(&p, &field, err, sizeof err), -1);
    assert_string_equal(field, "prompt");
    p.prompt = "a cat <lora:randlora15:abc>";
    assert_int_equal(sde_params_validate(&p, &field, err, sizeof err), -1);
    p.prompt = "a cat <lora:randlora15>";
    assert_int_equal(sde_params_validate(&p, &field, err, sizeof err), 0);
    p.lora_dir = NULL;
    assert_int_equal(sde_params_validate(&p, &field, err, sizeof err), -1);

    char clean[64], names[64];
    sde_lora_spec out[SDE_LORA_MAX];
    int n = 0;
    assert_int_equal(sde_lora_parse_prompt("a <lora:x:0.5>b<lora:y> c", clean, sizeof clean, names,
                                           sizeof names, out, &n, err, sizeof err),
                     0);
    assert_string_equal(clean, "a b c");
    assert_int_equal(n, 2);
    assert_string_equal(out[0].name, "x");
    assert_true(out[0].weight == 0.5f);
    assert_string_equal(out[1].name, "y");
    assert_true(out[1].weight == 1.f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lora_names),
        cmocka_unit_test(test_lora_golden_and_removal),
    };
    return cmocka_run_group_tests(tests, setup, ge_engine_teardown);
}
