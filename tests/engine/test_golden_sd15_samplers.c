/* test_golden_sd15_samplers.c: every sampler and schedule of issue 14 (and clip skip 2) on SD 1.5 with random
 * full-size weights must give stable-diffusion.cpp's image: tests/data/golden/sd15-rand/samplers. */
#include "golden_util.h"

/* Image tolerance against the peer's PNG, of 8-bit values: the end-to-end acceptance target (see
 * test_golden_sd15_e2e.c: f16 matmul inputs in the peer vs f32 here). */
#define IMG_MAX 3
#define IMG_MEAN 0.5

static int setup(void **state)
{
    (void)state;
    return ge_engine_setup("sd15");
}

/* The golden folder beside this source: <tests>/data/golden/sd15-rand/samplers. */
static void golden_dir(char *buf, size_t len)
{
    const char *f = __FILE__, *end = strstr(f, "/engine/test_golden_sd15_samplers.c");
    int n = end ? (int)(end - f) : (int)strlen("tests");
    snprintf(buf, len, "%.*s/data/golden/sd15-rand/samplers", n, end ? f : "tests");
}

static uint8_t *read_png(const char *path, int *w, int *h, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errlen, "%.900s: cannot open", path);
        return NULL;
    }
    static uint8_t buf[1 << 20];
    size_t len = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    uint8_t *px = NULL;
    return sde_png_decode(buf, len, &px, w, h, err, errlen) ? NULL : px;
}

static void test_cases(void **state)
{
    (void)state;
    char dir[1200], path[1400], err[1024];
    golden_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/cases.tsv", dir);
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("%s: cannot open", path);
    char line[512];
    int cases = 0, failed = 0;
    printf("%-26s %-15s %-12s %5s %7s %8s %8s\n", "case", "sampler", "schedule", "steps", "size", "max|d|",
           "mean|d|");
    while (fgets(line, sizeof line, f)) {
        char name[64], samp[32], sched[32];
        int steps, w, h, skip;
        if (line[0] == '#' ||
            sscanf(line, "%63s %31s %31s %d %d %d %d", name, samp, sched, &steps, &w, &h, &skip) != 7)
            continue;
        /* optional tab-separated columns 8..11: seed, cfg, prompt, negative prompt (else the defaults of
         * the header line: seed 42, cfg 5, "a photo of a cat", "blurry, low quality") */
        line[strcspn(line, "\r\n")] = '\0';
        char *col[11] = {0}, *save = NULL;
        int ncol = 0;
        for (char *t = strtok_r(line, "\t", &save); t && ncol < 11; t = strtok_r(NULL, "\t", &save))
            col[ncol++] = t;
        const char *only = getenv("SDW_GOLDEN_CASES"); /* debugging: a comma-separated subset of names */
        if (only && *only) {
            char key[80];
            snprintf(key, sizeof key, ",%s,", name);
            char list[1024];
            snprintf(list, sizeof list, ",%s,", only);
            if (!strstr(list, key)) continue;
        }
        int s = sde_sampler_parse(samp), k = sde_schedule_parse(sched);
        if (s < 0 || k < 0) fail_msg("%s: unknown sampler %s or schedule %s", name, samp, sched);
        sde_gen_params p = gu_cat_params((sde_sampler)s);
        p.negative_prompt = ncol > 10 ? col[10] : "blurry, low quality";
        p.cfg_scale = ncol > 8 ? strtof(col[8], NULL) : 5.f;
        if (ncol > 7) p.seed = strtoull(col[7], NULL, 10);
        if (ncol > 9) p.prompt = col[9];
        p.schedule = (sde_schedule)k;
        p.steps = steps;
        p.width = w;
        p.height = h;
        p.clip_skip = skip;
        sde_result res;
        if (sde_generate(ge_engine, &p, &res, err, sizeof err) != SDE_OK)
            fail_msg("%s: sde_generate: %s", name, err);
        snprintf(path, sizeof path, "%s/%s.png", dir, name);
        int pw, ph, ow, oh;
        uint8_t *peer = read_png(path, &pw, &ph, err, sizeof err);
        uint8_t *ours = NULL;
        if (peer && sde_png_decode(res.png, res.png_len, &ours, &ow, &oh, err, sizeof err)) ours = NULL;
        if (!peer || !ours) fail_msg("%s: %s", name, err);
        assert_int_equal(pw, ow);
        assert_int_equal(ph, oh);
        int maxd = 0;
        long sum = 0;
        for (size_t i = 0; i < (size_t)pw * ph * 3; i++) {
            int d = abs((int)peer[i] - (int)ours[i]);
            sum += d;
            maxd = d > maxd ? d : maxd;
        }
        double mean = (double)sum / ((double)pw * ph * 3);
        int ok = maxd <= IMG_MAX && mean <= IMG_MEAN;
        printf("%-26s %-15s %-12s %5d %3dx%-3d %8d %8.4f%s\n", name, samp, sched, steps, w, h, maxd, mean,
               ok ? "" : "  FAIL");
        failed += !ok;
        cases++;
        free(peer);
        free(ours);
        sde_result_free(&res);
    }
    fclose(f);
    assert_true(cases > 0);
    if (failed)
        fail_msg("%d of %d cases differ from the peer by more than max %d / mean %.1f", failed, cases,
                 IMG_MAX, IMG_MEAN);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* one line per case as it finishes, also under ctest */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
    };
    return cmocka_run_group_tests(tests, setup, ge_engine_teardown);
}
