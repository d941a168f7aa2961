/* test_golden_sd15_workflows.c: more img2img, 4-channel inpainting and LoRA cases on the random SD 1.5
 * checkpoint (other strengths, samplers, seeds, non-square sizes, masks, LoRA weights, two LoRAs, tags mid-
 * prompt) against stable-diffusion.cpp (tests/data/golden/sd15-rand/workflows/cases.tsv and README.md). */
#include <sys/stat.h>

#include "golden_util.h"
#include "mkmodel_random.h"

static char lora_dir[1100];

/* The two LoRAs the cases name: randlora15 (lora-sd15-random seed 1) and randlora15b (seed 2). */
static int setup(void **state)
{
    (void)state;
    char err[512], path[1200];
    snprintf(lora_dir, sizeof lora_dir, "%s/tmp/lora-wf", gu_build_dir());
    mkdir(lora_dir, 0755);
    static const struct {
        const char *name;
        uint64_t seed;
    } loras[] = {{"randlora15", 1}, {"randlora15b", 2}};
    sde_rand_preset pr;
    if (sde_rand_preset_parse("lora-sd15-random", &pr)) return -1;
    for (size_t i = 0; i < sizeof loras / sizeof *loras; i++) {
        snprintf(path, sizeof path, "%s/%s.safetensors", lora_dir, loras[i].name);
        if (sde_mkmodel_random(path, pr, loras[i].seed, 0, 1, NULL, err, sizeof err)) {
            fprintf(stderr, "writing the LoRA: %s\n", err);
            return -1;
        }
    }
    return ge_engine_setup("sd15");
}

/* Reads dir/name as 8-bit RGB; fails the test when it cannot. */
static uint8_t *read_png(const char *dir, const char *name, int *w, int *h)
{
    char p[1400], err[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "rb");
    if (!f) fail_msg("%s: cannot open", p);
    static uint8_t buf[1 << 20];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    uint8_t *rgb = NULL;
    if (sde_png_decode(buf, len, &rgb, w, h, err, sizeof err)) fail_msg("%s: %s", p, err);
    return rgb;
}

static void test_cases(void **state)
{
    (void)state;
    char dir[1200], path[1400], err[1024];
    gu_golden_dir(dir, sizeof dir, "sd15", "workflows");
    snprintf(path, sizeof path, "%s/cases.tsv", dir);
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("%s: cannot open", path);
    char line[1024];
    int cases = 0, failed = 0;
    printf("%-34s %8s %8s %8s\n", "case", "max|d|", "mean|d|", "total s");
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        line[strcspn(line, "\r\n")] = '\0';
        /* name sampler steps width height seed cfg strength init mask prompt */
        char *col[11] = {0}, *save = NULL;
        int ncol = 0;
        for (char *t = strtok_r(line, "\t", &save); t && ncol < 11; t = strtok_r(NULL, "\t", &save))
            col[ncol++] = t;
        if (ncol != 11) continue;
        const char *only = getenv("SDW_GOLDEN_CASES"); /* debugging: a comma-separated subset of names */
        if (only && *only) {
            char key[80], list[1024];
            snprintf(key, sizeof key, ",%s,", col[0]);
            snprintf(list, sizeof list, ",%s,", only);
            if (!strstr(list, key)) continue;
        }
        int s = sde_sampler_parse(col[1]);
        if (s < 0) fail_msg("%s: unknown sampler %s", col[0], col[1]);
        sde_gen_params p = gu_cat_params((sde_sampler)s);
        p.negative_prompt = "";
        p.steps = atoi(col[2]);
        p.width = atoi(col[3]);
        p.height = atoi(col[4]);
        p.seed = strtoull(col[5], NULL, 10);
        p.cfg_scale = strtof(col[6], NULL);
        p.prompt = col[10];
        p.lora_dir = lora_dir;
        uint8_t *init = NULL, *mask = NULL;
        if (strcmp(col[8], "-")) {
            init = read_png(dir, col[8], &p.init_w, &p.init_h);
            p.init_rgb = init;
            p.strength = strtof(col[7], NULL);
        }
        if (strcmp(col[9], "-")) {
            mask = read_png(dir, col[9], &p.mask_w, &p.mask_h);
            p.mask = mask;
        }
        sde_result res;
        if (sde_generate(ge_engine, &p, &res, err, sizeof err) != SDE_OK)
            fail_msg("%s: sde_generate: %s", col[0], err);
        snprintf(path, sizeof path, "%s/%s.png", dir, col[0]);
        int maxd = 0;
        double meand = 0;
        if (ge_compare_png_file(path, &res, &maxd, &meand, err, sizeof err)) fail_msg("%s: %s", col[0], err);
        int ok = maxd <= 3 && meand <= 0.5;
        printf("%-34s %8d %8.4f %8.2f%s\n", col[0], maxd, meand, res.t_total, ok ? "" : "  FAIL");
        failed += !ok;
        cases++;
        sde_result_free(&res);
        free(init);
        free(mask);
    }
    fclose(f);
    printf("%d cases, %d outside max 3 / mean 0.5 of 255\n", cases, failed);
    assert_true(cases > 0);
    assert_int_equal(failed, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
    };
    return cmocka_run_group_tests(tests, setup, ge_engine_teardown);
}
