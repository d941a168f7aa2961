/* golden_util.h: what the engine tests against stable-diffusion.cpp's golden tensors share: the fixture and
 * golden paths, reading the peer's .f32 dumps, diff statistics, and the end-to-end run-trace-compare check.
 */
#ifndef SDW_TEST_GOLDEN_UTIL_H
#define SDW_TEST_GOLDEN_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_trace.h"
#include "png_io.h"
#include "sd_engine.h"
#include <openssl/evp.h>

/* ---------------------------------------------------------------- paths */

/** The in-tree test data (tests/data): $SDW_TESTDATA_DIR (set by ctest), else tests/data as seen from the
 * repo root. */
static inline const char *gu_testdata_dir(void)
{
    const char *s = getenv("SDW_TESTDATA_DIR");
    return s && *s ? s : "tests/data";
}

/** The source tree: $SDW_SOURCE_DIR (set by ctest), else the current directory. */
static inline const char *gu_source_dir(void)
{
    const char *s = getenv("SDW_SOURCE_DIR");
    return s && *s ? s : ".";
}

/** The build tree holding tmp/ and its fixtures: $SDW_BUILD_DIR (set by ctest), else build. */
static inline const char *gu_build_dir(void)
{
    const char *b = getenv("SDW_BUILD_DIR");
    return b ? b : "build";
}

/** buf = the full-size random checkpoint that the randsd15 / randsd21 fixture writes, for arch "sd15" or
 * "sd21": BUILD/tmp/rand<arch>-s1-f16.safetensors. */
static inline void gu_fixture_path(char *buf, size_t len, const char *arch)
{
    snprintf(buf, len, "%s/tmp/rand%s-s1-f16.safetensors", gu_build_dir(), arch);
}

/** buf = the peer's dumps for arch and sampler: tests/data/golden/<arch>-rand/<sampler>. */
static inline void gu_golden_dir(char *buf, size_t len, const char *arch, const char *sampler)
{
    snprintf(buf, len, "%s/golden/%s-rand/%s", gu_testdata_dir(), arch, sampler);
}

/** buf = the real CLIP BPE vocabulary, committed as data/clip in the source tree. */
static inline void gu_vocab_path(char *buf, size_t len)
{
    snprintf(buf, len, "%s/data/clip/bpe_simple_vocab_16e6.txt.gz", gu_source_dir());
}

/** hex = the sha256 of the whole file at path, as 64 lowercase hex digits. Returns 0, or -1 when it cannot
 * be read. */
static inline int gu_file_sha256(const char *path, char hex[65])
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    enum { BUF = 1 << 22 };
    uint8_t *buf = malloc(BUF), d[32];
    EVP_MD_CTX *s = EVP_MD_CTX_new();
    int bad = !buf || !s || !EVP_DigestInit_ex(s, EVP_sha256(), NULL);
    size_t n;
    while (!bad && (n = fread(buf, 1, BUF, f)) > 0)
        bad = !EVP_DigestUpdate(s, buf, n);
    bad |= ferror(f) || !s || !EVP_DigestFinal_ex(s, d, NULL);
    fclose(f);
    free(buf);
    EVP_MD_CTX_free(s);
    if (bad) return -1;
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return 0;
}

/* ---------------------------------------------------------------- tensors */

/** dir/name.f32 as n floats (malloc'd), or NULL when it is missing or does not hold exactly n floats. */
static inline float *gu_read_f32(const char *dir, const char *name, size_t n)
{
    char p[1400];
    snprintf(p, sizeof p, "%s/%s.f32", dir, name);
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    float *v = malloc(n * sizeof *v);
    size_t got = v ? fread(v, sizeof *v, n, f) : 0;
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != n || extra) {
        free(v);
        return NULL;
    }
    return v;
}

/** gu_read_f32() for a tensor the test cannot do without: fails the test when it cannot be read. */
static inline float *gu_load_f32(const char *dir, const char *name, size_t n)
{
    float *v = gu_read_f32(dir, name, n);
    if (!v) fail_msg("%s/%s.f32: missing, or not %zu floats", dir, name, n);
    return v;
}

/** How far our tensor is from the peer's: max and mean |ours - peer| (a NaN counts as infinitely far), and
 * the peer tensor's scale: max |peer| (tolerances are relative to it) and mean |peer|. */
typedef struct {
    double max_abs, mean_abs;
    double scale, mean_mag;
} gu_diff;

/** The gu_diff of got against the peer's want, n floats each. */
static inline gu_diff gu_diff_of(const float *got, const float *want, size_t n)
{
    gu_diff s = {0};
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (isnan(d)) d = INFINITY;
        s.max_abs = d > s.max_abs ? d : s.max_abs;
        s.mean_abs += d;
        s.scale = fmax(s.scale, fabs(want[i]));
        s.mean_mag += fabs(want[i]);
    }
    s.mean_abs /= (double)n;
    s.mean_mag /= (double)n;
    return s;
}

/* ---------------------------------------------------------------- setup */

/** For a group setup that could not load its model: prints err and returns -1 (cmocka then fails the group).
 */
static inline int gu_setup_failed(const char *err)
{
    fprintf(stderr, "%s\n", err);
    return -1;
}

/* ---------------------------------------------------------------- engine */

/** The backend the golden tests load their engine on: $SDW_TEST_BACKEND when set and not empty (e.g.
 * SDW_TEST_BACKEND=cuda ctest -L slow), else NULL (the default, the CPU). Tests on tiny models keep the CPU.
 * When it is set, stdout becomes line-buffered, so that the figures printed so far survive a crash of the
 * backend (a GPU fault) under ctest. */
static inline const char *golden_backend(void)
{
    const char *b = getenv("SDW_TEST_BACKEND");
    if (!b || !*b) return NULL;
    fflush(stdout);
    setvbuf(stdout, NULL, _IOLBF, 0);
    return b;
}

/** sde_engine_load() on backend (NULL: the CPU) for a group setup: 0, or -1 after printing the error.
 * tokenizer may be NULL (the model's own or the built-in one). */
static inline int gu_engine_load_on(const char *model, const char *tokenizer, const char *backend,
                                    sde_engine **e)
{
    char err[1024];
    sde_load_opts o = {.model_path = model, .tokenizer_path = tokenizer, .backend = backend};
    if (backend) printf("engine on backend \"%s\" (SDW_TEST_BACKEND)\n", backend);
    return sde_engine_load(&o, e, err, sizeof err) ? gu_setup_failed(err) : 0;
}

/** gu_engine_load_on() on the CPU. */
static inline int gu_engine_load(const char *model, const char *tokenizer, sde_engine **e)
{
    return gu_engine_load_on(model, tokenizer, NULL, e);
}

/** Writes a tiny model with mk (sde_mkmodel_tiny or sde_mkmodel_tiny_inpaint, seed 1) to $SDW_TMPDIR/NAME
 * (default /tmp; path gets the file name) and loads it: 0, or -1 with the message on stderr. */
static inline int gu_tiny_engine(const char *name, int (*mk)(const char *, uint64_t, char *, size_t),
                                 char *path, size_t cap, sde_engine **e)
{
    const char *t = getenv("SDW_TMPDIR");
    char err[1024];
    snprintf(path, cap, "%s/%s", t ? t : "/tmp", name);
    if (mk(path, 1, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    return gu_engine_load(path, NULL, e);
}

/** Frees a gu_tiny_engine() engine and removes its file. */
static inline void gu_tiny_engine_free(sde_engine *e, const char *path)
{
    sde_engine_free(e);
    remove(path);
}

/* The end-to-end tests' engine: the arch's random checkpoint fixture with the real CLIP vocabulary. */
static __attribute__((unused)) sde_engine *ge_engine;

/** Group setup body of an end-to-end test: loads ge_engine for arch ("sd15", "sd21") on golden_backend(). */
static inline int ge_engine_setup(const char *arch)
{
    char model[1200], tok[1200];
    gu_fixture_path(model, sizeof model, arch);
    gu_vocab_path(tok, sizeof tok);
    return gu_engine_load_on(model, tok, golden_backend(), &ge_engine);
}

static inline int ge_engine_teardown(void **state)
{
    (void)state;
    sde_engine_free(ge_engine);
    ge_engine = NULL;
    return 0;
}

/** The peer's golden generation settings, also the tiny model's defaults: "a photo of a cat", 4 steps,
 * cfg 7, seed 42, discrete schedule, 64x64, sampler s, no negative prompt. */
static inline sde_gen_params gu_cat_params(sde_sampler s)
{
    sde_gen_params p = {.prompt = "a photo of a cat",
                        .steps = 4,
                        .cfg_scale = 7.f,
                        .seed = 42,
                        .sampler = s,
                        .schedule = SDE_SCHEDULE_DISCRETE,
                        .width = 64,
                        .height = 64};
    return p;
}

/* ---------------------------------------------------------------- end-to-end runs */

#define GE_MAX_TENSORS 64

/** One traced tensor and its distance from the peer's dump of the same name. */
typedef struct {
    char name[32];
    gu_diff s;
    int compared; /* 0: the peer did not dump it, or its size differs */
} ge_diff;

typedef struct {
    char dir[1200]; /* golden folder, e.g. tests/data/golden/sd15-rand/euler */
    ge_diff d[GE_MAX_TENSORS];
    int n;
} ge_run;

static inline void ge_trace(void *ud, const char *name, const float *data, size_t n)
{
    ge_run *r = ud;
    if (r->n >= GE_MAX_TENSORS) return;
    ge_diff *d = &r->d[r->n++];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    float *g = gu_read_f32(r->dir, name, n);
    if (!g) return; /* reported as not compared */
    d->s = gu_diff_of(data, g, n);
    d->compared = 1;
    free(g);
}

static inline const ge_diff *ge_find(const ge_run *r, const char *name)
{
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->d[i].name, name)) return &r->d[i];
    return NULL;
}

static inline void ge_print(const ge_run *r)
{
    for (int i = 0; i < r->n; i++) {
        const ge_diff *d = &r->d[i];
        if (d->compared)
            printf("  %-20s max|d| %-10.4g mean|d| %-10.4g max|d|/scale %-10.4g (scale %.4g)\n", d->name,
                   d->s.max_abs, d->s.mean_abs, d->s.max_abs / (d->s.scale > 0 ? d->s.scale : 1), d->s.scale);
        else
            printf("  %-20s (no peer tensor)\n", d->name);
    }
}

/** Pixel differences between our PNG and the peer's PNG at path p: fills max and mean |delta| of 8-bit
 * values. Returns 0, or -1 with a message when either image cannot be read or the sizes differ. */
static inline int ge_compare_png_file(const char *p, const sde_result *res, int *max_d, double *mean_d,
                                      char *err, size_t errlen)
{
    FILE *f = fopen(p, "rb");
    if (!f) {
        snprintf(err, errlen, "%.900s: cannot open", p);
        return -1;
    }
    static uint8_t buf[1 << 22];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    uint8_t *a = NULL, *b = NULL;
    int aw, ah, bw, bh;
    if (sde_png_decode(buf, len, &a, &aw, &ah, err, errlen)) return -1;
    if (sde_png_decode(res->png, res->png_len, &b, &bw, &bh, err, errlen)) {
        free(a);
        return -1;
    }
    if (aw != bw || ah != bh) {
        snprintf(err, errlen, "size %dx%d vs peer %dx%d", bw, bh, aw, ah);
        free(a);
        free(b);
        return -1;
    }
    size_t n = (size_t)aw * ah * 3;
    long sum = 0;
    *max_d = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        sum += d;
        if (d > *max_d) *max_d = d;
    }
    *mean_d = (double)sum / (double)n;
    free(a);
    free(b);
    return 0;
}

/** ge_compare_png_file() with dir/image.png. */
static inline int ge_compare_png(const char *dir, const sde_result *res, int *max_d, double *mean_d,
                                 char *err, size_t errlen)
{
    char p[1400];
    snprintf(p, sizeof p, "%s/image.png", dir);
    return ge_compare_png_file(p, res, max_d, mean_d, err, errlen);
}

/** The tolerances an end-to-end test chooses (each test says why); the rest are fixed in ge_generate_check:
 * noise 1e-5 absolute, x_T 1e-5 of its scale, vae_out 2/255 absolute. */
typedef struct {
    double text_abs;   /* cond/uncond_crossattn: max |diff| below this, absolute */
    double latent_rel; /* every stepNN_* tensor, x0 and vae_in: max |diff| at most this times its scale */
    int img_max;       /* PNG against the peer's image.png: max |delta| of 8-bit values */
    double img_mean;   /* and mean |delta| */
} ge_tols;

/** Generates p on e with every intermediate tensor traced against the peer's dumps in golden_dir, prints
 * the comparison under label, and fails the test unless every required tensor was compared and all are
 * within tol (p->steps must be 4: 6 tensors a step are expected). */
static inline void ge_generate_check(sde_engine *e, const sde_gen_params *p, const char *golden_dir,
                                     const char *label, const ge_tols *tol)
{
    ge_run r = {0};
    snprintf(r.dir, sizeof r.dir, "%s", golden_dir);
    sde_engine_set_trace(e, ge_trace, &r);
    sde_result res;
    char err[1024];
    int rc = sde_generate(e, p, &res, err, sizeof err);
    sde_engine_set_trace(e, NULL, NULL);
    if (rc != SDE_OK) fail_msg("sde_generate: %s", err);
    printf("%s: sample %.2f s, decode %.2f s, total %.2f s\n", label, res.t_sample, res.t_decode,
           res.t_total);
    ge_print(&r);
    int maxd;
    double meand;
    if (ge_compare_png(r.dir, &res, &maxd, &meand, err, sizeof err)) fail_msg("%s", err);
    printf("  image vs peer: max |delta| %d, mean |delta| %.4f (of 255)\n", maxd, meand);

    const char *must[] = {"cond_crossattn", "uncond_crossattn", "noise", "x_T", "x0", "vae_in", "vae_out"};
    for (size_t i = 0; i < sizeof must / sizeof *must; i++) {
        const ge_diff *d = ge_find(&r, must[i]);
        if (!d || !d->compared) fail_msg("%s not compared", must[i]);
    }
    assert_true(ge_find(&r, "noise")->s.max_abs < 1e-5);
    assert_true(ge_find(&r, "x_T")->s.max_abs < 1e-5 * ge_find(&r, "x_T")->s.scale);
    assert_true(ge_find(&r, "cond_crossattn")->s.max_abs < tol->text_abs);
    assert_true(ge_find(&r, "uncond_crossattn")->s.max_abs < tol->text_abs);
    int steps_checked = 0;
    for (int i = 0; i < r.n; i++) {
        const ge_diff *d = &r.d[i];
        if (!d->compared || strncmp(d->name, "step", 4)) continue;
        steps_checked++;
        if (!(d->s.max_abs <= tol->latent_rel * d->s.scale))
            fail_msg("%s: max |diff| %g exceeds %g of its scale %g", d->name, d->s.max_abs, tol->latent_rel,
                     d->s.scale);
    }
    assert_int_equal(steps_checked, 4 * 6);
    assert_true(ge_find(&r, "x0")->s.max_abs <= tol->latent_rel * ge_find(&r, "x0")->s.scale);
    assert_true(ge_find(&r, "vae_in")->s.max_abs <= tol->latent_rel * ge_find(&r, "vae_in")->s.scale);
    assert_true(ge_find(&r, "vae_out")->s.max_abs <= 2.0 / 255);
    assert_true(maxd <= tol->img_max);
    assert_true(meand <= tol->img_mean);
    sde_result_free(&res);
}

#endif
