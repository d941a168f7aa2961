/* test_engine_tiny.c: the whole public engine API on a freshly written tiny model: load, info, every
 * sampler and schedule, determinism, cancellation, progress, validation, the PNG and its parameters. */
#include <time.h>

#include "golden_util.h"
#include "mkmodel.h"
#include "ops.h"
#include "png_text_reader.h"

static char g_model[1200];
static sde_engine *g_e;

static int setup(void **state)
{
    (void)state;
    return gu_tiny_engine("engine_tiny.safetensors", sde_mkmodel_tiny, g_model, sizeof g_model, &g_e);
}

static int teardown(void **state)
{
    (void)state;
    gu_tiny_engine_free(g_e, g_model);
    return 0;
}

static sde_gen_params base_params(void)
{
    return gu_cat_params(SDE_SAMPLER_EULER_A);
}

static void gen_ok(const sde_gen_params *p, sde_result *r)
{
    char err[1024];
    int rc = sde_generate(g_e, p, r, err, sizeof err);
    if (rc != SDE_OK) fail_msg("sde_generate: %d %s", rc, err);
    assert_non_null(r->png);
    assert_true(r->png_len > 100);
}

/* decodes and returns the pixel standard deviation (0 for a flat image) */
static double png_check(const sde_result *r, int w, int h)
{
    uint8_t *rgb = NULL;
    int pw = 0, ph = 0;
    char err[512];
    if (sde_png_decode(r->png, r->png_len, &rgb, &pw, &ph, err, sizeof err)) fail_msg("decode: %s", err);
    assert_int_equal(pw, w);
    assert_int_equal(ph, h);
    double m = 0, v = 0;
    size_t n = (size_t)w * h * 3;
    for (size_t i = 0; i < n; i++)
        m += rgb[i];
    m /= (double)n;
    for (size_t i = 0; i < n; i++)
        v += (rgb[i] - m) * (rgb[i] - m);
    free(rgb);
    return sqrt(v / (double)n);
}

static void test_info(void **state)
{
    (void)state;
    sde_model_info in;
    sde_engine_info(g_e, &in);
    assert_string_equal(in.arch, "tiny");
    assert_string_equal(in.prediction, "eps");
    assert_string_equal(in.model_name, "engine_tiny");
    assert_int_equal(strlen(in.model_hash), 10);
    assert_int_equal(in.context_dim, 64);
    assert_int_equal(in.default_size, 64);
    assert_true(in.n_params > 1000000 && in.n_params < 10000000);
}

static void test_generate_png(void **state)
{
    (void)state;
    sde_gen_params p = base_params();
    sde_result r;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    gen_ok(&p, &r);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double wall = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
    print_message("tiny 64x64, 4 steps, cfg 7: %.3f s (encode %.3f, sample %.3f, decode %.3f)\n", wall,
                  r.t_encode, r.t_sample, r.t_decode);
    /* "well under a second" on an idle core; the bound leaves room for a loaded CI machine */
    assert_true(wall < 3.0);
    assert_int_equal(r.width, 64);
    assert_int_equal(r.height, 64);
    assert_true(r.seed == 42);
    assert_true(r.t_total >= r.t_sample && r.t_sample > 0 && r.t_decode > 0 && r.t_encode > 0);
    double sd = png_check(&r, 64, 64);
    print_message("pixel std %.1f\n", sd);
    assert_true(sd > 5.0); /* not flat */

    char *txt = NULL;
    assert_int_equal(tpng_text_get(r.png, r.png_len, "parameters", &txt), 0);
    sde_model_info in;
    sde_engine_info(g_e, &in);
    char want[512];
    snprintf(want, sizeof want,
             "a photo of a cat\nSteps: 4, Sampler: Euler a, Schedule type: Uniform, CFG scale: 7, Seed: 42, "
             "Size: 64x64, Model hash: %s, Model: engine_tiny, Version: sd-worker %s",
             in.model_hash, SDW_VERSION);
    assert_string_equal(txt, want);
    free(txt);
    sde_result_free(&r);
    assert_null(r.png);

    /* a negative prompt shows up on its own line, karras as Karras */
    p.negative_prompt = "blurry";
    p.schedule = SDE_SCHEDULE_KARRAS;
    p.sampler = SDE_SAMPLER_DPMPP_2M;
    p.cfg_scale = 7.5f;
    gen_ok(&p, &r);
    assert_int_equal(tpng_text_get(r.png, r.png_len, "parameters", &txt), 0);
    assert_non_null(strstr(txt, "a photo of a cat\nNegative prompt: blurry\nSteps: 4, Sampler: DPM++ 2M, "
                                "Schedule type: Karras, CFG scale: 7.5, Seed: 42,"));
    free(txt);
    sde_result_free(&r);
}

static void test_deterministic(void **state)
{
    (void)state;
    sde_gen_params p = base_params();
    sde_result a, b, c;
    gen_ok(&p, &a);
    gen_ok(&p, &b);
    assert_int_equal(a.png_len, b.png_len);
    assert_memory_equal(a.png, b.png, a.png_len);
    p.seed = 43;
    gen_ok(&p, &c);
    assert_false(a.png_len == c.png_len && !memcmp(a.png, c.png, a.png_len));
    /* a different prompt changes the image too */
    sde_result d;
    p.seed = 42;
    p.prompt = "a painting of a dog";
    gen_ok(&p, &d);
    assert_false(a.png_len == d.png_len && !memcmp(a.png, d.png, a.png_len));
    sde_result_free(&a);
    sde_result_free(&b);
    sde_result_free(&c);
    sde_result_free(&d);
}

static void test_all_samplers_and_sizes(void **state)
{
    (void)state;
    /* every sampler on discrete and karras, every schedule with euler */
    for (int s = SDE_SAMPLER_EULER; s <= SDE_SAMPLER_DPMPP_2M_SDE_BT; s++)
        for (int k = 0; k <= SDE_SCHEDULE_LCM; k++) {
            if (k >= 2 && s != SDE_SAMPLER_EULER) continue;
            sde_gen_params p = base_params();
            p.sampler = (sde_sampler)s;
            p.schedule = (sde_schedule)k;
            p.steps = 3;
            sde_result r;
            gen_ok(&p, &r);
            double sd = png_check(&r, 64, 64);
            assert_true(sd > 1.0);
            sde_result_free(&r);
        }
    /* non-square, cfg 1 (one UNet pass per step), one step */
    sde_gen_params p = base_params();
    p.width = 96;
    p.height = 64;
    p.cfg_scale = 1.f;
    p.steps = 1;
    sde_result r;
    gen_ok(&p, &r);
    png_check(&r, 96, 64);
    sde_result_free(&r);
}

typedef struct {
    int progress_calls, last_step, last_total, cancel_after, cancel_polls;
    int stop_via_progress;
} watch;

static int w_progress(void *ud, int step, int total, double el)
{
    watch *w = ud;
    assert_true(el >= 0);
    w->progress_calls++;
    assert_int_equal(step, w->last_step + 1);
    w->last_step = step;
    w->last_total = total;
    return w->stop_via_progress && w->progress_calls >= w->cancel_after;
}

static int w_cancel(void *ud)
{
    watch *w = ud;
    w->cancel_polls++;
    return !w->stop_via_progress && w->cancel_after >= 0 && w->progress_calls >= w->cancel_after;
}

static void test_progress_and_cancel(void **state)
{
    (void)state;
    char err[256];
    sde_gen_params p = base_params();
    p.steps = 6;
    p.progress = w_progress;
    p.should_cancel = w_cancel;
    watch w = {.cancel_after = -1};
    p.ud = &w;
    sde_result r;
    gen_ok(&p, &r);
    sde_result_free(&r);
    assert_int_equal(w.progress_calls, 6);
    assert_int_equal(w.last_total, 6);
    assert_true(w.cancel_polls >= 6);

    /* should_cancel after 2 steps: stops before the third */
    w = (watch){.cancel_after = 2};
    assert_int_equal(sde_generate(g_e, &p, &r, err, sizeof err), SDE_CANCELLED);
    assert_null(r.png);
    assert_int_equal(w.progress_calls, 2);
    /* before anything: no step runs */
    w = (watch){.cancel_after = 0};
    assert_int_equal(sde_generate(g_e, &p, &r, err, sizeof err), SDE_CANCELLED);
    assert_int_equal(w.progress_calls, 0);
    /* after the last step, i.e. before the VAE decode */
    w = (watch){.cancel_after = 6};
    assert_int_equal(sde_generate(g_e, &p, &r, err, sizeof err), SDE_CANCELLED);
    assert_int_equal(w.progress_calls, 6);
    assert_null(r.png);
    /* progress returning non-zero cancels too */
    w = (watch){.cancel_after = 3, .stop_via_progress = 1};
    assert_int_equal(sde_generate(g_e, &p, &r, err, sizeof err), SDE_CANCELLED);
    assert_int_equal(w.progress_calls, 3);
    /* and the engine still works afterwards */
    w = (watch){.cancel_after = -1};
    gen_ok(&p, &r);
    sde_result_free(&r);
}

static void expect_invalid(sde_gen_params p, const char *field)
{
    const char *f = NULL;
    char err[256];
    err[0] = 0;
    assert_int_equal(sde_params_validate(&p, &f, err, sizeof err), -1);
    assert_non_null(f);
    assert_string_equal(f, field);
    assert_true(strlen(err) > 0);
    sde_result r;
    assert_int_equal(sde_generate(g_e, &p, &r, err, sizeof err), SDE_ERR);
    assert_null(r.png);
}

static void test_validation(void **state)
{
    (void)state;
    sde_gen_params p = base_params();
    const char *f = "x";
    char err[256];
    assert_int_equal(sde_params_validate(&p, &f, err, sizeof err), 0);
    assert_null(f);

    p = base_params();
    p.prompt = NULL;
    expect_invalid(p, "prompt");
    p = base_params();
    p.steps = 0;
    expect_invalid(p, "steps");
    p = base_params();
    p.steps = 151;
    expect_invalid(p, "steps");
    p = base_params();
    p.steps = -5;
    expect_invalid(p, "steps");
    p = base_params();
    p.cfg_scale = NAN;
    expect_invalid(p, "cfg_scale");
    p = base_params();
    p.cfg_scale = INFINITY;
    expect_invalid(p, "cfg_scale");
    p = base_params();
    p.cfg_scale = -0.5f;
    expect_invalid(p, "cfg_scale");
    p = base_params();
    p.cfg_scale = 30.5f;
    expect_invalid(p, "cfg_scale");
    p = base_params();
    p.width = 63;
    expect_invalid(p, "width");
    p = base_params();
    p.width = 68;
    expect_invalid(p, "width");
    p = base_params();
    p.width = 2056;
    expect_invalid(p, "width");
    p = base_params();
    p.width = 0;
    expect_invalid(p, "width");
    p = base_params();
    p.height = 56;
    expect_invalid(p, "height");
    p = base_params();
    p.height = 100;
    expect_invalid(p, "height");
    p = base_params();
    p.sampler = (sde_sampler)99;
    expect_invalid(p, "sampler");
    p = base_params();
    p.sampler = (sde_sampler)-1;
    expect_invalid(p, "sampler");
    p = base_params();
    p.schedule = (sde_schedule)99;
    expect_invalid(p, "schedule");
    char *big = malloc(70000);
    memset(big, 'a', 69999);
    big[69999] = 0;
    p = base_params();
    p.prompt = big;
    expect_invalid(p, "prompt");
    p = base_params();
    p.negative_prompt = big;
    expect_invalid(p, "negative_prompt");
    free(big);
    /* the limits themselves are accepted */
    p = base_params();
    p.steps = 150;
    p.cfg_scale = 0.f;
    p.width = 2048;
    p.height = 64;
    assert_int_equal(sde_params_validate(&p, &f, err, sizeof err), 0);
    /* an empty prompt is fine */
    p = base_params();
    p.prompt = "";
    p.steps = 1;
    sde_result r;
    gen_ok(&p, &r);
    sde_result_free(&r);
}

static void test_load_errors(void **state)
{
    (void)state;
    char err[1024];
    sde_engine *e = (sde_engine *)1;
    sde_load_opts o = {.model_path = "/nonexistent/model.safetensors"};
    assert_int_equal(sde_engine_load(&o, &e, err, sizeof err), -1);
    assert_null(e);
    assert_non_null(strstr(err, "/nonexistent/model.safetensors"));
    o.model_path = NULL;
    assert_int_equal(sde_engine_load(&o, &e, err, sizeof err), -1);
    o.model_path = g_model;
    o.tokenizer_path = "/nonexistent/vocab.json";
    assert_int_equal(sde_engine_load(&o, &e, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/vocab.json"));
    /* only the backends this build has can be chosen; "cpu" is the default ("cuda" is built in only with
     * -DSDW_CUDA=ON, where loading on it depends on the machine having a GPU: test_backend_cuda covers it) */
    o.tokenizer_path = NULL;
    o.backend = "nosuch";
    assert_int_equal(sde_engine_load(&o, &e, err, sizeof err), -1);
    assert_null(e);
    assert_non_null(strstr(err, "backend \"nosuch\""));
#ifndef SDW_CUDA
    o.backend = "cuda";
    assert_int_equal(sde_engine_load(&o, &e, err, sizeof err), -1);
    assert_null(e);
    assert_non_null(strstr(err, "backend \"cuda\""));
#endif
    o.backend = "cpu";
    /* a prediction override is honoured */
    o.prediction = SDE_PRED_V;
    assert_int_equal(sde_engine_load(&o, &e, err, sizeof err), 0);
    sde_model_info in;
    sde_engine_info(e, &in);
    assert_string_equal(in.prediction, "v");
    sde_engine_free(e);
}

/* sde_load_opts.warm: the load faults in the activations of the first job at the size given and keeps
 * them mapped (ops_mem.c) until that job takes them; its image is the same bytes as without. */
static void test_warm(void **state)
{
    (void)state;
    sde_gen_params p = base_params();
    p.width = p.height = 512; /* the tiny UNet's activations at 512x512 are mapped (over 2 MB) */
    sde_result a, b;
    gen_ok(&p, &a);
    sde_engine_free(g_e); /* unmaps what the engine kept (sde_mem_trim) */
    assert_int_equal(sde_mem_cached(), 0);
    char err[1024];
    sde_load_opts o = {.model_path = g_model, .warm = 1, .warm_width = 512, .warm_height = 512};
    assert_int_equal(sde_engine_load(&o, &g_e, err, sizeof err), 0);
    /* builds with private mappings keep them (ASan keeps malloc, and nothing is cached) */
    void *probe = sde_mem_alloc((size_t)4 << 20);
    const size_t warm = sde_mem_cached();
    sde_mem_free(probe);
    const int mapped = sde_mem_cached() > warm;
    if (mapped) assert_true(warm >= ((size_t)2 << 20));
    gen_ok(&p, &b);
    assert_int_equal(a.png_len, b.png_len);
    assert_memory_equal(a.png, b.png, a.png_len);
    sde_result_free(&a);
    sde_result_free(&b);
    /* a warm load that fails midway (a tokenizer that is not there) leaves nothing running or mapped */
    sde_engine *e = (sde_engine *)1;
    o.tokenizer_path = "/nonexistent/vocab.json";
    assert_int_equal(sde_engine_load(&o, &e, err, sizeof err), -1);
    assert_null(e);
    assert_non_null(strstr(err, "/nonexistent/vocab.json"));
}

typedef struct {
    int n;
    char names[64][24];
} trace_log;

static void on_trace(void *ud, const char *name, const float *d, size_t n)
{
    trace_log *t = ud;
    assert_true(n > 0);
    for (size_t i = 0; i < n; i++)
        assert_true(isfinite(d[i]));
    if (t->n < 64) snprintf(t->names[t->n++], sizeof t->names[0], "%s", name);
}

static void test_trace(void **state)
{
    (void)state;
    trace_log t = {0};
    sde_engine_set_trace(g_e, on_trace, &t);
    sde_gen_params p = base_params();
    p.steps = 2;
    sde_result r;
    gen_ok(&p, &r);
    sde_result_free(&r);
    sde_engine_set_trace(g_e, NULL, NULL);
    const char *want[] = {"cond_crossattn", "uncond_crossattn", "noise", "x_T",
                          "step01_x",       "step02_denoised",  "x0",    "vae_in",
                          "vae_out"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        int found = 0;
        for (int k = 0; k < t.n; k++)
            found |= !strcmp(t.names[k], want[i]);
        if (!found) fail_msg("trace %s missing", want[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_info),
        cmocka_unit_test(test_generate_png),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_all_samplers_and_sizes),
        cmocka_unit_test(test_progress_and_cancel),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_warm),
        cmocka_unit_test(test_trace),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
