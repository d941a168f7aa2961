/* test_profile_tiny.c: SDW_PROFILE on the tiny model: the table has time in conv, linear and attention, in
 * every model and in the UNet's down, middle and up levels, and the products' shapes with their rates; the
 * image is byte for byte the one made with profiling off; the environment switch works; off, no table. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "golden_util.h"
#include "mkmodel.h"

static char g_model[1200];

static int setup(void **state)
{
    (void)state;
    const char *t = getenv("SDW_TMPDIR");
    char err[1024];
    /* the "off" engine must not be switched on from outside */
    unsetenv("SDW_PROFILE");
    snprintf(g_model, sizeof g_model, "%s/profile_tiny.safetensors", t ? t : "/tmp");
    if (sde_mkmodel_tiny(g_model, 1, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    remove(g_model);
    return 0;
}

static sde_engine *load(int profile)
{
    char err[1024];
    sde_load_opts o = {.model_path = g_model, .profile = profile};
    sde_engine *e = NULL;
    if (sde_engine_load(&o, &e, err, sizeof err)) fail_msg("load: %s", err);
    return e;
}

static void generate(sde_engine *e, const sde_gen_params *p, sde_result *r)
{
    char err[1024];
    if (sde_generate(e, p, r, err, sizeof err) != SDE_OK) fail_msg("generate: %s", err);
}

/* The milliseconds of the table row whose first column is name (the third column; the op table's second
 * is a call count, the others' entries), or -1 when there is no such row. */
static double row_ms(const char *table, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = table; p && *p;) {
        if (!strncmp(p, name, n) && p[n] == ' ') {
            long count;
            double ms;
            if (sscanf(p + n, "%ld %lf", &count, &ms) == 2 && count > 0) return ms;
            return -1;
        }
        const char *nl = strchr(p, '\n');
        p = nl ? nl + 1 : NULL;
    }
    return -1;
}

/* The op table's ms and GFLOP/s columns of kind (0 rate when it has none). */
static void op_row(const char *table, const char *kind, double *ms, double *rate)
{
    char key[32];
    snprintf(key, sizeof key, "\n%s ", kind);
    const char *p = strstr(table, key);
    if (!p) fail_msg("no op row %s in\n%s", kind, table);
    long calls;
    double per;
    *rate = 0;
    if (sscanf(p + strlen(key), "%ld %lf %*f%% %lf %lf", &calls, ms, &per, rate) < 3)
        fail_msg("op row %s unreadable", kind);
}

/* The shapes table: every row's calls, ms and rate read from its end (the shape has spaces); a linear
 * row's rate times its time must be its 2 n in out FLOP per call; the rows of a kind add up to no more than
 * the kind's time; conv, linear and attention each have a row. */
static void check_shapes(const char *t)
{
    const char *p = strstr(t, "\nproduct ");
    if (!p) fail_msg("no shapes table in\n%s", t);
    p = strchr(p + 1, '\n') + 1;
    static const char *const kinds[] = {"conv", "linear", "attention"};
    double sum[3] = {0}, seen[3] = {0};
    for (; *p && strncmp(p, "(", 1); p = strchr(p, '\n') + 1) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        char line[160];
        snprintf(line, sizeof line, "%.*s", (int)(nl - p), p);
        char *f[64];
        int nf = 0;
        for (char *tok = strtok(line, " "); tok && nf < 64; tok = strtok(NULL, " "))
            f[nf++] = tok;
        assert_true(nf >= 6);
        const long calls = atol(f[nf - 4]);
        const double ms = atof(f[nf - 3]), rate = atof(f[nf - 1]);
        if (calls < 1 || !(ms > 0) || !(rate > 0)) fail_msg("shape row: %.*s", (int)(nl - p), p);
        int k = 0;
        while (k < 3 && strcmp(f[0], kinds[k]))
            k++;
        assert_true(k < 3);
        sum[k] += ms, seen[k] = 1;
        int n, in, out;
        if (k == 1 && ms > 0.2 && sscanf(f[1], "n%d", &n) == 1 && sscanf(f[2], "%d", &in) == 1 &&
            sscanf(f[4], "%d", &out) == 1) {
            const double gflop = 2.0 * n * in * out * calls * 1e-9, got = rate * ms * 1e-3;
            if (fabs(got - gflop) > 0.1 * gflop)
                fail_msg("linear %d x %d -> %d: %g GFLOP at its rate, %g by its shape", n, in, out, got,
                         gflop);
        }
    }
    for (int k = 0; k < 3; k++) {
        double ms, rate;
        op_row(t, kinds[k], &ms, &rate);
        if (!seen[k] || sum[k] > ms * 1.001 + 0.01 || !(rate > 0))
            fail_msg("%s: shapes %g ms of %g, rate %g", kinds[k], sum[k], ms, rate);
    }
}

static void test_profile_same_image(void **state)
{
    (void)state;
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER);
    sde_engine *off = load(0), *on = load(1);
    sde_result a, b;
    generate(off, &p, &a);
    generate(on, &p, &b);
    assert_null(a.profile);
    assert_non_null(b.profile);
    print_message("%s", b.profile);
    assert_int_equal(a.png_len, b.png_len);
    assert_memory_equal(a.png, b.png, a.png_len);

    const char *t = b.profile;
    static const char *const timed[] = {"conv",     "linear",      "attention",    "clip",       "unet",
                                        "vae",      "unet.in",     "unet.down.0",  "unet.mid",   "unet.up.0",
                                        "unet.out", "vae.dec.mid", "vae.dec.up.0", "vae.dec.out"};
    for (size_t i = 0; i < sizeof timed / sizeof *timed; i++) {
        double ms = row_ms(t, timed[i]);
        if (!(ms > 0)) fail_msg("row %s: %g ms in\n%s", timed[i], ms, t);
    }
    /* the parts do not add up to more than the whole */
    double total = 0, all_ops = 0;
    assert_int_equal(sscanf(t, "profile: %lf ms wall", &total), 1);
    const char *ops = strstr(t, "(all ops)");
    assert_non_null(ops);
    assert_int_equal(sscanf(ops + strlen("(all ops)"), "%lf", &all_ops), 1);
    assert_true(all_ops > 0 && all_ops <= total * 1.001);
    assert_true(row_ms(t, "clip") + row_ms(t, "unet") + row_ms(t, "vae") <= total * 1.001);
    check_shapes(t);
    /* one UNet forward per step (CFG runs the two halves as one batch) */
    const char *unet = strstr(t, "\nunet ");
    long forwards = 0;
    assert_non_null(unet);
    assert_int_equal(sscanf(unet + 6, "%ld", &forwards), 1);
    assert_int_equal(forwards, p.steps);
    sde_result_free(&a);
    sde_result_free(&b);
    assert_null(b.profile);

    /* each generation's table counts that generation only */
    generate(on, &p, &b);
    unet = strstr(b.profile, "\nunet ");
    assert_non_null(unet);
    assert_int_equal(sscanf(unet + 6, "%ld", &forwards), 1);
    assert_int_equal(forwards, p.steps);
    assert_int_equal(sscanf(b.profile, "profile: %lf ms wall", &total), 1);
    assert_true(row_ms(b.profile, "unet") <= total * 1.001);
    sde_result_free(&b);

    /* img2img runs the VAE encoder too */
    uint8_t init[64 * 64 * 3];
    for (size_t i = 0; i < sizeof init; i++)
        init[i] = (uint8_t)(i * 7);
    p.init_rgb = init;
    p.init_w = p.init_h = 64;
    p.strength = 0.5f;
    generate(on, &p, &b);
    assert_true(row_ms(b.profile, "vae.enc.mid") > 0 && row_ms(b.profile, "vae.enc.down.0") > 0);
    sde_result_free(&b);
    sde_engine_free(on);
    sde_engine_free(off);
}

static void test_profile_env(void **state)
{
    (void)state;
    sde_gen_params p = gu_cat_params(SDE_SAMPLER_EULER);
    p.steps = 1;
    setenv("SDW_PROFILE", "1", 1);
    sde_engine *e = load(0);
    unsetenv("SDW_PROFILE");
    sde_result r;
    generate(e, &p, &r);
    assert_non_null(r.profile);
    assert_true(row_ms(r.profile, "conv") > 0);
    sde_result_free(&r);
    sde_engine_free(e);
    /* anything but "1" leaves it off */
    setenv("SDW_PROFILE", "0", 1);
    e = load(0);
    unsetenv("SDW_PROFILE");
    generate(e, &p, &r);
    assert_null(r.profile);
    sde_result_free(&r);
    sde_engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_profile_same_image),
        cmocka_unit_test(test_profile_env),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
