/* test_backend_cuda.c: the CUDA backend against the CPU backend, op by op (docs/backends.md): every op of
 * backend.h's vtable on deterministic random inputs, run on both backends and compared. GEMM-based ops
 * (linear, conv, attention) may run on TF32 tensor cores: |gpu - cpu| <= 2e-2 * max|cpu| + 1e-4 over each
 * output. Element-wise and norm ops: |gpu - cpu| <= 1e-4 * |cpu| + 1e-5 * max|cpu|. Pure data movement
 * (copy, resize_nearest) must be exact. Every case prints one line: its shape, then per output max |d|,
 * max |d| / max|cpu|, the largest relative error (|cpu| floored at 1e-3 max|cpu|), the worst element and
 * PASS or FAIL, so that a GPU run's log alone tells what went wrong; a case's line is printed (and
 * flushed) before its op runs, so a crash leaves it last. A test fails after all its cases ran.
 * Every test is skipped when sde_backend_get("cuda") is NULL (a build without -DSDW_CUDA=ON, or no device)
 * or the backend cannot allocate 1 MB. Built only with -DSDW_CUDA=ON, label gpu (ctest -L gpu). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "dtype_convert.h"

static sde_backend *G; /* the CUDA backend under test; NULL: every test is skipped */
static sde_backend *C; /* the CPU backend, the reference */

/* ---------------------------------------------------------------- random inputs */

static unsigned seed = 12345;

/* uniform in [-1, 1) from an LCG: the same inputs on every machine */
static float frand(void)
{
    seed = seed * 1664525u + 1013904223u;
    return (float)(seed >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
}

/* n floats uniform in [offset - scale, offset + scale), malloc'd */
static float *host_rand(size_t n, float scale, float offset)
{
    float *h = malloc((n ? n : 1) * sizeof *h);
    assert_non_null(h);
    for (size_t i = 0; i < n; i++)
        h[i] = frand() * scale + offset;
    return h;
}

/* Host memory handed to upload() and upload_weight() must stay valid while a backend may read it (for a
 * model, its life): it is kept here and freed when the whole run is over. */
static void **g_keep;
static size_t g_nkeep, g_keepcap;

static void *keep(size_t bytes)
{
    if (g_nkeep == g_keepcap) {
        size_t cap = g_keepcap ? 2 * g_keepcap : 256;
        void **k = realloc(g_keep, cap * sizeof *k);
        assert_non_null(k);
        g_keep = k;
        g_keepcap = cap;
    }
    void *p = calloc(1, bytes ? bytes : 1);
    assert_non_null(p);
    g_keep[g_nkeep++] = p;
    return p;
}

/* ---------------------------------------------------------------- tensors on both backends */

/* The same n floats on the CPU (c) and on the GPU (g). */
typedef struct {
    sde_ten c, g;
    size_t n;
} dual;

static sde_ten alloc_bytes(sde_backend *be, size_t bytes)
{
    char err[256] = "";
    if (bytes < 64) bytes = 64;
    sde_ten t = {be->alloc(be, bytes, err, sizeof err), 0};
    if (!t.buf) fail_msg("%s: alloc(%zu bytes) failed: %s", be->name, bytes, err);
    return t;
}

static dual dual_new(size_t n)
{
    dual d = {alloc_bytes(C, n * sizeof(float)), alloc_bytes(G, n * sizeof(float)), n};
    return d;
}

static void dual_write(dual d, const float *host)
{
    C->write(C, d.c, host, d.n);
    G->write(G, d.g, host, d.n);
}

/* n random floats (see host_rand) written to both */
static dual dual_rand(size_t n, float scale, float offset)
{
    float *h = host_rand(n, scale, offset);
    dual d = dual_new(n);
    dual_write(d, h);
    free(h);
    return d;
}

/* d advanced by off floats (its n shrinks by as much) */
static dual dual_at(dual d, size_t off)
{
    d.c = sde_ten_at(d.c, off);
    d.g = sde_ten_at(d.g, off);
    d.n -= off;
    return d;
}

static void dual_free(dual d)
{
    if (d.c.buf) C->free(C, d.c.buf);
    if (d.g.buf) G->free(G, d.g.buf);
}

/* A weight matrix's handles on both backends (from one host handle kept for the run). */
typedef struct {
    const sde_weight *c, *g;
} dweight;

static const char *wname(sde_wtype t)
{
    return t == SDE_W_F32 ? "f32" : t == SDE_W_F16 ? "f16" : "bf16";
}

/* n random values in [-scale, scale) stored as t (F16/BF16: rounded to nearest even, as a checkpoint holds
 * them; both backends read the same bits), uploaded with upload_weight to both backends */
static dweight weight_new(size_t n, sde_wtype t, float scale)
{
    float *f = host_rand(n, scale, 0);
    sde_weight *h = keep(sizeof *h);
    void *data = keep(n * (t == SDE_W_F32 ? 4 : 2));
    if (t == SDE_W_F32)
        memcpy(data, f, n * sizeof(float));
    else
        assert_int_equal(sde_cvt_from_f32(t == SDE_W_F16 ? SDE_DT_F16 : SDE_DT_BF16, f, n, data), 0);
    free(f);
    h->data = data;
    h->type = t;
    h->n = n;
    dweight w = {C->upload_weight(C, h), G->upload_weight(G, h)};
    if (!w.c || !w.g)
        fail_msg("upload_weight of %zu %s values failed (cpu %p, cuda %p)", n, wname(t), (const void *)w.c,
                 (const void *)w.g);
    return w;
}

/* A small float32 tensor's handles (bias, norm weights, positional table) on both backends. */
typedef struct {
    const float *c, *g;
} dvec;

static dvec vec_new(size_t n, float scale, float offset)
{
    float *h = keep(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        h[i] = frand() * scale + offset;
    dvec v = {C->upload(C, h, n), G->upload(G, h, n)};
    if (!v.c || !v.g)
        fail_msg("upload of %zu floats failed (cpu %p, cuda %p)", n, (const void *)v.c, (const void *)v.g);
    return v;
}

/* ---------------------------------------------------------------- cases and comparisons */

static int g_cases, g_fails, g_bad;

/* Starts a case: prints its description (no newline yet) and flushes, so that a crash or a hang in its op
 * leaves it as the log's last line. */
static void case_begin(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void case_begin(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
    g_bad = 0;
    g_cases++;
}

/* Marks the current case failed with a reason. */
static void case_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void case_fail(const char *fmt, ...)
{
    va_list ap;
    printf(" | FAIL: ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    g_bad = 1;
}

/* Ends the current case's line; a backend that reports itself failed (backend.h's failed()) fails it. */
static void case_end(void)
{
    const char *why = G->failed ? G->failed(G) : NULL;
    if (why) case_fail("the backend reports a failure: %s", why);
    printf("%s\n", g_bad ? "  => FAIL" : "");
    fflush(stdout);
    g_fails += g_bad;
}

enum {
    TOL_GEMM, /* |d| <= 2e-2 * max|cpu| + 1e-4: TF32 tensor-core products */
    TOL_ELEM, /* |d| <= 1e-4 * |cpu| + 1e-5 * max|cpu|: float32 element-wise and norm ops */
    TOL_EXACT /* |d| == 0: data movement */
};

/* Compares gpu with cpu (n floats) under tolerance kind and appends the figures to the case's line. */
static void compare(const char *what, const float *cpu, const float *gpu, size_t n, int kind)
{
    double scale = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(cpu[i]) && fabs(cpu[i]) > scale) scale = fabs(cpu[i]);
    const double rtol = kind == TOL_ELEM ? 1e-4 : 0.0;
    const double atol = kind == TOL_GEMM ? 2e-2 * scale + 1e-4 : kind == TOL_ELEM ? 1e-5 * scale : 0.0;
    const double floor_ = 1e-3 * scale;
    double max_abs = 0, max_rel = 0, worst_r = -1;
    size_t worst = 0, out = 0, nonfinite = 0;
    for (size_t i = 0; i < n; i++) {
        double r;
        if (!isfinite(gpu[i]) || !isfinite(cpu[i])) {
            nonfinite++;
            out++;
            r = INFINITY;
        } else {
            const double d = fabs((double)gpu[i] - (double)cpu[i]);
            const double tol = atol + rtol * fabs(cpu[i]);
            const double den = fmax(fabs(cpu[i]), floor_);
            if (d > max_abs) max_abs = d;
            const double rel = den > 0 ? d / den : (d > 0 ? INFINITY : 0);
            if (rel > max_rel) max_rel = rel;
            if (d > tol) out++;
            r = tol > 0 ? d / tol : (d > 0 ? INFINITY : 0);
        }
        if (r > worst_r) {
            worst_r = r;
            worst = i;
        }
    }
    const char *tol_s = kind == TOL_GEMM   ? "tol 2e-2*max+1e-4"
                        : kind == TOL_ELEM ? "tol 1e-4*|cpu|+1e-5*max"
                                           : "exact";
    printf(" | %s: max|d| %.3e max|d|/max|cpu| %.3e max rel %.3e (max|cpu| %.4g, %s)", what, max_abs,
           scale > 0 ? max_abs / scale : max_abs, max_rel, scale, tol_s);
    if (n) printf(" worst [%zu] cpu %.8g gpu %.8g", worst, cpu[worst], gpu[worst]);
    if (nonfinite) printf(", %zu non-finite", nonfinite);
    if (out) {
        printf(", %zu of %zu out of tolerance FAIL", out, n);
        g_bad = 1;
    } else {
        printf(" PASS");
    }
}

/* Reads d from both backends and compares it. */
static void dual_check(const char *what, dual d, int kind)
{
    float *a = malloc((d.n ? d.n : 1) * sizeof *a), *b = malloc((d.n ? d.n : 1) * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    C->read(C, a, d.c, d.n);
    for (size_t i = 0; i < d.n; i++) /* a read that writes nothing must not pass */
        b[i] = NAN;
    G->read(G, b, d.g, d.n);
    compare(what, a, b, d.n, kind);
    free(a);
    free(b);
}

#define START()                                                                                              \
    do {                                                                                                     \
        if (!G) skip();                                                                                      \
        g_cases = g_fails = 0;                                                                               \
    } while (0)

static void done(const char *test)
{
    printf("%s: %d cases, %d FAILED\n", test, g_cases, g_fails);
    if (g_fails) fail_msg("%s: %d of %d cases FAILED (lines ending in FAIL above)", test, g_fails, g_cases);
}

/* ---------------------------------------------------------------- setup */

static int setup(void **state)
{
    (void)state;
    setvbuf(stdout, NULL, _IOLBF, 0);
    C = sde_backend_cpu();
    sde_backend *be = sde_backend_get("cuda");
    if (!be) {
        printf(
            "SKIP: sde_backend_get(\"cuda\") is NULL (a build without -DSDW_CUDA=ON, or no usable device)\n");
        return 0;
    }
    char err[256] = "";
    sde_buf *b = be->alloc(be, (size_t)1 << 20, err, sizeof err);
    if (!b) {
        printf("SKIP: the %s backend cannot allocate 1 MB (no GPU?): %s\n", be->name, err);
        return 0;
    }
    be->free(be, b);
    G = be;
    printf("backend \"%s\" against \"%s\"", G->name, C->name);
    size_t fr = 0, tot = 0;
    if (G->vram && G->vram(G, &fr, &tot) == 0)
        printf("; VRAM free %.0f of %.0f MiB", fr / 1048576.0, tot / 1048576.0);
    printf("\n");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < g_nkeep; i++)
        free(g_keep[i]);
    free(g_keep);
    g_keep = NULL;
    g_nkeep = g_keepcap = 0;
    return 0;
}

/* ---------------------------------------------------------------- host I/O */

/* write at offsets (one not 16-byte aligned), the host buffer overwritten right after write() returns, read
 * back exactly; sync; free(NULL); the backend's name */
static void test_io(void **state)
{
    (void)state;
    START();
    case_begin("[io] name, write at offsets 16 and 3 floats, host overwritten after write, read back, sync");
    if (strcmp(G->name, "cuda")) case_fail("name \"%s\", not \"cuda\"", G->name);
    enum { N = 1000, M = 10 };
    sde_ten t = alloc_bytes(G, (N + 64) * sizeof(float));
    float *h = host_rand(N, 1, 0), *want = malloc(N * sizeof *want), *got = malloc(N * sizeof *got);
    float small[M], want_small[M], got_small[M];
    assert_non_null(want);
    assert_non_null(got);
    memcpy(want, h, N * sizeof *h);
    for (int i = 0; i < M; i++) {
        want_small[i] = small[i] = (float)i + 0.5f;
        got_small[i] = NAN;
    }
    for (int i = 0; i < N; i++)
        got[i] = NAN;
    G->write(G, sde_ten_at(t, 16), h, N);
    memset(h, 0, N * sizeof *h); /* the caller may reuse its buffer as soon as write returns */
    G->write(G, sde_ten_at(t, 3), small, M);
    memset(small, 0, sizeof small);
    G->sync(G);
    G->read(G, got, sde_ten_at(t, 16), N);
    G->read(G, got_small, sde_ten_at(t, 3), M);
    compare("at 16", want, got, N, TOL_EXACT);
    compare("at 3", want_small, got_small, M, TOL_EXACT);
    G->free(G, NULL);
    G->free(G, t.buf);
    case_end();
    free(h);
    free(want);
    free(got);
    done("io");
}

/* ---------------------------------------------------------------- linear */

static const char *lin_flags(int f)
{
    static const char *names[8] = {"0",   "X_CM",     "Y_CM",     "X_CM|Y_CM",
                                   "ACC", "X_CM|ACC", "Y_CM|ACC", "X_CM|Y_CM|ACC"};
    return names[f & 7];
}

/* one shape and weight type: all 8 flag combinations, with and without bias; x and y at offsets xo, yo
 * floats into their buffers (the prefix must stay as it was) */
static void linear_shape(int n, int in, int out, sde_wtype t, size_t xo, size_t yo, int flags_from,
                         int flags_to)
{
    dual xb = dual_rand((size_t)n * in + xo, 1, 0), x = dual_at(xb, xo);
    float *y0 = host_rand((size_t)n * out + yo, 1, 0);
    dual yb = dual_new((size_t)n * out + yo), y = dual_at(yb, yo);
    dweight w = weight_new((size_t)out * in, t, 1.0f / sqrtf((float)in));
    dvec b = vec_new((size_t)out, 1, 0);
    for (int flags = flags_from; flags <= flags_to; flags++)
        for (int hb = 0; hb < 2; hb++) {
            dual_write(yb, y0); /* y starts random: ACC adds into it, the others must overwrite it */
            case_begin("[linear] n=%d in=%d out=%d w=%s flags=%s bias=%d x at +%zu y at +%zu", n, in, out,
                       wname(t), lin_flags(flags), hb, xo, yo);
            C->linear(C, x.c, n, in, w.c, hb ? b.c : NULL, out, y.c, flags);
            G->linear(G, x.g, n, in, w.g, hb ? b.g : NULL, out, y.g, flags);
            dual_check("y", yb, TOL_GEMM);
            case_end();
        }
    free(y0);
    dual_free(xb);
    dual_free(yb);
}

static void test_linear(void **state)
{
    (void)state;
    START();
    const sde_wtype types[] = {SDE_W_F32, SDE_W_F16, SDE_W_BF16};
    for (int i = 0; i < 3; i++)
        linear_shape(37, 70, 45, types[i], 0, 0, 0, 7);
    linear_shape(4096, 320, 320, SDE_W_F32, 0, 0, 0, 7);
    linear_shape(4096, 320, 320, SDE_W_F16, 0, 0, 0, 7);
    /* CLIP's fc1 (77 x 768 -> 3072) and the UNet's cross-attention k/v (2 x 77 x 768 -> 320) in f16 */
    linear_shape(77, 768, 3072, SDE_W_F16, 0, 0, 0, 0);
    linear_shape(154, 768, 320, SDE_W_F16, 0, 0, 0, 0);
    /* tensors inside larger buffers at 64-byte offsets, as the UNet's arena places them */
    linear_shape(37, 70, 45, SDE_W_F16, 16, 32, 0, 7);
    done("linear");
}

/* ---------------------------------------------------------------- conv */

typedef struct {
    const char *name;
    int batch, cin, h, w, cout, k, stride, pt, pb, pl, pr;
    int bchw; /* 1: images cin*h*w apart ([B][C][HW]); 0: [C][B][HW] (channel planes batch*h*w apart) */
    int affine, silu, up, bias, bias_b, acc, inplace;
    sde_wtype wt;
    size_t budget; /* conv_scratch budget in bytes; 0: 64 MB */
} conv_case;

#define P1 .pt = 1, .pb = 1, .pl = 1, .pr = 1
static const conv_case conv_cases[] = {
    {"3x3 pad 1", 2, 40, 20, 20, 24, 3, 1, P1, .bias = 1, .wt = SDE_W_F32},
    {"3x3 pad 1", 2, 40, 20, 20, 24, 3, 1, P1, .bias = 1, .wt = SDE_W_F16},
    {"3x3 pad 1, plain [C][HW]", 1, 24, 13, 17, 40, 3, 1, P1, .bias = 1, .wt = SDE_W_F16},
    {"3x3 pad 1, plain [C][HW], no bias", 1, 24, 13, 17, 40, 3, 1, P1, .wt = SDE_W_F32},
    {"3x3 stride 2 pad (t0,b1,l0,r1) (VAE downsample)", 1, 32, 17, 17, 32, 3, 2, 0, 1, 0, 1, .bias = 1,
     .wt = SDE_W_F16},
    {"3x3 stride 2 pad (t0,b1,l0,r1), even size", 1, 16, 16, 16, 24, 3, 2, 0, 1, 0, 1, .bias = 1,
     .wt = SDE_W_F32},
    {"3x3 stride 2 pad (t0,b1,l0,r1), batch 2", 2, 16, 16, 14, 8, 3, 2, 0, 1, 0, 1, .bias = 1,
     .wt = SDE_W_F16},
    {"3x3 stride 2 pad 1 (UNet downsample)", 2, 24, 15, 16, 16, 3, 2, P1, .bias = 1, .wt = SDE_W_F16},
    {"1x1", 2, 40, 9, 11, 56, 1, 1, .bias = 1, .wt = SDE_W_F16},
    {"1x1, plain [C][HW], no bias", 1, 64, 8, 8, 16, 1, 1, .wt = SDE_W_F32},
    {"3x3 in_scale/in_shift", 2, 32, 12, 12, 24, 3, 1, P1, .affine = 1, .bias = 1, .wt = SDE_W_F16},
    {"3x3 in_scale/in_shift + SiLU, bias + bias_b", 2, 32, 12, 12, 24, 3, 1, P1, .affine = 1, .silu = 1,
     .bias = 1, .bias_b = 1, .wt = SDE_W_F16},
    {"3x3 in_scale/in_shift + SiLU, plain", 1, 32, 12, 12, 24, 3, 1, P1, .affine = 1, .silu = 1, .bias = 1,
     .wt = SDE_W_F32},
    {"1x1 in_scale/in_shift + SiLU", 2, 40, 10, 10, 24, 1, 1, .affine = 1, .silu = 1, .bias = 1,
     .wt = SDE_W_F32},
    {"3x3 upsample (VAE upsample)", 1, 24, 7, 9, 24, 3, 1, P1, .up = 1, .bias = 1, .wt = SDE_W_F16},
    {"3x3 upsample", 2, 16, 6, 5, 8, 3, 1, P1, .up = 1, .bias = 1, .wt = SDE_W_F32},
    {"3x3 upsample + in_scale/in_shift + SiLU", 2, 16, 6, 6, 16, 3, 1, P1, .affine = 1, .silu = 1, .up = 1,
     .bias = 1, .wt = SDE_W_F16},
    {"3x3 bias_b only", 2, 16, 10, 10, 16, 3, 1, P1, .bias_b = 1, .wt = SDE_W_F32},
    {"3x3 accumulate, bias + bias_b", 2, 24, 11, 11, 24, 3, 1, P1, .bias = 1, .bias_b = 1, .acc = 1,
     .wt = SDE_W_F16},
    {"3x3 accumulate + in_scale/in_shift + SiLU (VAE ResBlock conv2)", 1, 32, 9, 9, 32, 3, 1, P1, .affine = 1,
     .silu = 1, .bias = 1, .acc = 1, .wt = SDE_W_F16},
    {"1x1 accumulate", 1, 32, 7, 7, 16, 1, 1, .bias = 1, .acc = 1, .wt = SDE_W_F32},
    {"1x1 in place (y == x, cout < cin)", 2, 48, 10, 10, 32, 1, 1, .bias = 1, .inplace = 1, .wt = SDE_W_F16},
    {"1x1 in place (y == x), plain (VAE shortcut)", 1, 64, 12, 12, 40, 1, 1, .bias = 1, .inplace = 1,
     .wt = SDE_W_F32},
    {"1x1 in place (y == x, cout == cin)", 1, 32, 8, 8, 32, 1, 1, .bias = 1, .inplace = 1, .wt = SDE_W_F16},
    {"3x3 pad 1, [B][C][HW] layout", 2, 16, 10, 12, 24, 3, 1, P1, .bchw = 1, .bias = 1, .wt = SDE_W_F32},
    {"3x3 pad 1, budget 1 byte (TAESD)", 1, 16, 20, 20, 16, 3, 1, P1, .bias = 1, .wt = SDE_W_F32,
     .budget = 1},
    {"3x3 pad 1, bf16 weights", 2, 24, 10, 10, 16, 3, 1, P1, .bias = 1, .wt = SDE_W_BF16},
    {"1x1, bf16 weights", 1, 24, 10, 10, 16, 1, 1, .wt = SDE_W_BF16},
    {"UNet conv_in 4 -> 320", 2, 4, 32, 32, 320, 3, 1, P1, .bias = 1, .wt = SDE_W_F16},
    {"UNet ResBlock conv1 320 -> 320, in_scale/in_shift + SiLU, bias + bias_b", 2, 320, 32, 32, 320, 3, 1, P1,
     .affine = 1, .silu = 1, .bias = 1, .bias_b = 1, .wt = SDE_W_F16},
    {"UNet conv_out 320 -> 4, in_scale/in_shift + SiLU", 2, 320, 32, 32, 4, 3, 1, P1, .affine = 1, .silu = 1,
     .bias = 1, .wt = SDE_W_F16},
    {"VAE upsample 128 ch 32x32 -> 64x64", 1, 128, 32, 32, 128, 3, 1, P1, .up = 1, .bias = 1,
     .wt = SDE_W_F16},
};
#undef P1

static void conv_run(const conv_case *cc)
{
    const int B = cc->batch;
    const size_t hw = (size_t)cc->h * cc->w;
    sde_be_conv d = {.batch = B,
                     .cin = cc->cin,
                     .h = cc->h,
                     .w = cc->w,
                     .in_silu = cc->silu,
                     .upsample = cc->up,
                     .cout = cc->cout,
                     .k = cc->k,
                     .stride = cc->stride,
                     .pad_t = cc->pt,
                     .pad_b = cc->pb,
                     .pad_l = cc->pl,
                     .pad_r = cc->pr,
                     .accumulate = cc->acc};
    const int oh = sde_be_conv_out_h(&d), ow = sde_be_conv_out_w(&d);
    const size_t ohw = (size_t)oh * ow;
    d.x_cstride = cc->bchw ? hw : (size_t)B * hw;
    d.x_bstride = cc->bchw ? (size_t)cc->cin * hw : hw;
    d.y_cstride = cc->bchw ? ohw : (size_t)B * ohw;
    d.y_bstride = cc->bchw ? (size_t)cc->cout * ohw : ohw;
    const size_t nx = (size_t)cc->cin * B * hw, ny = (size_t)cc->cout * B * ohw;
    dual x = dual_rand(nx, 1, 0);
    /* y starts random: accumulate adds into it, otherwise it must be overwritten. In place, y is x's first
     * cout channel planes (the same strides; [C][B][HW], so they are its first ny floats). */
    dual y = cc->inplace ? x : dual_rand(ny, 1, 0);
    dual sc = {{0}, {0}, 0}, sh = sc, bb = sc;
    if (cc->affine) {
        sc = dual_rand((size_t)B * cc->cin, 0.5f, 1.0f);
        sh = dual_rand((size_t)B * cc->cin, 0.5f, 0.0f);
    }
    if (cc->bias_b) bb = dual_rand((size_t)B * cc->cout, 1, 0);
    dweight w = weight_new((size_t)cc->cout * cc->cin * cc->k * cc->k, cc->wt,
                           1.0f / sqrtf((float)(cc->cin * cc->k * cc->k)));
    dvec b = {NULL, NULL};
    if (cc->bias) b = vec_new((size_t)cc->cout, 1, 0);
    sde_be_conv dc = d, dg = d;
    dc.x = x.c, dc.y = y.c, dc.in_scale = sc.c, dc.in_shift = sh.c, dc.bias_b = bb.c, dc.wt = w.c,
    dc.bias = b.c;
    dg.x = x.g, dg.y = y.g, dg.in_scale = sc.g, dg.in_shift = sh.g, dg.bias_b = bb.g, dg.wt = w.g,
    dg.bias = b.g;
    const size_t budget = cc->budget ? cc->budget : (size_t)64 << 20;
    const size_t bc = C->conv_scratch(C, &dc, budget), bg = G->conv_scratch(G, &dg, budget);
    sde_ten sc_c = alloc_bytes(C, bc), sc_g = alloc_bytes(G, bg);
    case_begin(
        "[conv] %s: batch=%d cin=%d %dx%d -> cout=%d %dx%d k=%d stride=%d pad(t%d,b%d,l%d,r%d) %s w=%s "
        "in_scale=%d silu=%d upsample=%d bias=%d bias_b=%d accumulate=%d in_place=%d budget=%zu; scratch "
        "cpu %zu gpu %zu bytes",
        cc->name, B, cc->cin, cc->h, cc->w, cc->cout, oh, ow, cc->k, cc->stride, cc->pt, cc->pb, cc->pl,
        cc->pr,
        cc->bchw ? "[B][C][HW]"
        : B > 1  ? "[C][B][HW]"
                 : "[C][HW]",
        wname(cc->wt), cc->affine, cc->silu, cc->up, cc->bias, cc->bias_b, cc->acc, cc->inplace, budget, bc,
        bg);
    C->conv(C, &dc, sc_c, bc);
    G->conv(G, &dg, sc_g, bg);
    dual yv = y;
    yv.n = ny;
    dual_check("y", yv, TOL_GEMM);
    case_end();
    C->free(C, sc_c.buf);
    G->free(G, sc_g.buf);
    dual_free(x);
    if (!cc->inplace) dual_free(y);
    dual_free(sc);
    dual_free(sh);
    dual_free(bb);
}

static void test_conv(void **state)
{
    (void)state;
    START();
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
        conv_run(&conv_cases[i]);
    done("conv");
}

/* ---------------------------------------------------------------- attention */

typedef struct {
    const char *name;
    int nq, nk, heads, hd, causal;
    int packed; /* q, k, v: slices of one [n][3C] buffer (row stride 3C, C = heads*hd), as CLIP's qkv */
    size_t off; /* q and out start this many floats into their buffers */
} att_case;

static const att_case att_cases[] = {
    {"self", 300, 300, 8, 40, 0, 0, 0},
    {"self, q/k/v slices of one [n][3C] buffer", 300, 300, 8, 40, 0, 1, 0},
    {"causal, q/k/v slices of one [n][3C] buffer (CLIP ViT-L)", 77, 77, 12, 64, 1, 1, 0},
    {"causal, separate q/k/v (OpenCLIP ViT-H heads)", 77, 77, 16, 64, 1, 0, 0},
    {"cross (SD 1.5)", 256, 77, 8, 40, 0, 0, 0},
    {"cross, head dim 64 (SD 2.x, SDXL), q/out at +16", 256, 77, 5, 64, 0, 0, 16},
    {"self, head dim 80", 256, 256, 8, 80, 0, 0, 0},
    {"self, head dim 160, q/out at +16", 64, 64, 8, 160, 0, 0, 16},
    {"self, 1 head of 512 (VAE mid block)", 256, 256, 1, 512, 0, 0, 0},
    {"self, 1024 tokens, q/out at +16", 1024, 1024, 5, 64, 0, 0, 16},
};

static void att_run(const att_case *a)
{
    const int Cw = a->heads * a->hd;
    const size_t qn = (size_t)a->nq * Cw, kn = (size_t)a->nk * Cw;
    dual qb, kb, vb, qkv = {{0}, {0}, 0};
    int qs = Cw, ks = Cw, vs = Cw;
    /* q and k in [-2, 2): scores of about unit spread, so the softmax is neither flat nor one-hot */
    if (a->packed) {
        qkv = dual_rand(3 * qn, 2, 0);
        qb = qkv, kb = dual_at(qkv, (size_t)Cw), vb = dual_at(qkv, 2 * (size_t)Cw);
        qs = ks = vs = 3 * Cw;
    } else {
        qb = dual_at(dual_rand(qn + a->off, 2, 0), a->off);
        kb = dual_rand(kn, 2, 0);
        vb = dual_rand(kn, 1, 0);
    }
    dual ob = dual_rand(qn + a->off, 1, 0), o = dual_at(ob, a->off);
    const size_t bc = C->attention_scratch(C, a->nq, a->nk, a->hd),
                 bg = G->attention_scratch(G, a->nq, a->nk, a->hd);
    sde_ten sc_c = alloc_bytes(C, bc), sc_g = alloc_bytes(G, bg);
    case_begin("[attention] %s: nq=%d nk=%d heads=%d hd=%d causal=%d strides q %d k %d v %d out %d, q/out at "
               "+%zu; scratch cpu %zu gpu %zu bytes",
               a->name, a->nq, a->nk, a->heads, a->hd, a->causal, qs, ks, vs, Cw, a->off, bc, bg);
    C->attention(C, qb.c, qs, kb.c, ks, vb.c, vs, a->nq, a->nk, a->heads, a->hd, a->causal, o.c, Cw, sc_c);
    G->attention(G, qb.g, qs, kb.g, ks, vb.g, vs, a->nq, a->nk, a->heads, a->hd, a->causal, o.g, Cw, sc_g);
    dual_check("out", ob, TOL_GEMM);
    case_end();
    C->free(C, sc_c.buf);
    G->free(G, sc_g.buf);
    if (a->packed) {
        dual_free(qkv);
    } else {
        dual_free(qb); /* frees its buffers (the offset does not matter) */
        dual_free(kb);
        dual_free(vb);
    }
    dual_free(ob);
}

static void test_attention(void **state)
{
    (void)state;
    START();
    for (size_t i = 0; i < sizeof att_cases / sizeof att_cases[0]; i++)
        att_run(&att_cases[i]);
    done("attention");
}

/* ---------------------------------------------------------------- GroupNorm */

/* gn_coeffs on both; then gn_apply (silu off and on) on both from the CPU's coefficients, so each op is
 * checked on its own */
static void gn_case(int batch, int c, size_t hw, int groups, float eps)
{
    const size_t n = (size_t)c * batch * hw, nc = (size_t)batch * c;
    dual x = dual_rand(n, 2, 0.5f);
    dvec g = vec_new((size_t)c, 0.5f, 1.0f), b = vec_new((size_t)c, 0.5f, 0);
    dual sc = dual_new(nc), sh = dual_new(nc);
    case_begin("[gn_coeffs] batch=%d c=%d hw=%zu groups=%d eps=%g ([c][batch][hw])", batch, c, hw, groups,
               (double)eps);
    C->gn_coeffs(C, x.c, c, batch, hw, groups, g.c, b.c, eps, sc.c, sh.c);
    G->gn_coeffs(G, x.g, c, batch, hw, groups, g.g, b.g, eps, sc.g, sh.g);
    dual_check("scale", sc, TOL_ELEM);
    dual_check("shift", sh, TOL_ELEM);
    case_end();
    float *hs = malloc(nc * sizeof *hs), *hh = malloc(nc * sizeof *hh);
    assert_non_null(hs);
    assert_non_null(hh);
    C->read(C, hs, sc.c, nc);
    C->read(C, hh, sh.c, nc);
    G->write(G, sc.g, hs, nc);
    G->write(G, sh.g, hh, nc);
    dual y = dual_rand(n, 1, 0);
    for (int silu = 0; silu < 2; silu++) {
        case_begin("[gn_apply] batch=%d c=%d hw=%zu silu=%d (the CPU's coefficients on both)", batch, c, hw,
                   silu);
        C->gn_apply(C, x.c, c, batch, hw, sc.c, sh.c, silu, y.c);
        G->gn_apply(G, x.g, c, batch, hw, sc.g, sh.g, silu, y.g);
        dual_check("y", y, TOL_ELEM);
        case_end();
    }
    free(hs);
    free(hh);
    dual_free(x);
    dual_free(sc);
    dual_free(sh);
    dual_free(y);
}

static void test_groupnorm(void **state)
{
    (void)state;
    START();
    gn_case(2, 64, 100, 32, 1e-5f);
    gn_case(1, 128, 1000, 32, 1e-6f); /* the VAE's eps */
    gn_case(2, 320, 1024, 32, 1e-5f); /* a UNet block at 32x32 */
    gn_case(2, 1280, 64, 32, 1e-5f);  /* the UNet's deepest level (8x8) */
    done("groupnorm");
}

/* ---------------------------------------------------------------- LayerNorm */

static void ln_case(int n, int dim, int with_gb, int inplace)
{
    const size_t len = (size_t)n * dim;
    dual x = dual_rand(len, 2, 0.3f);
    dual y = inplace ? x : dual_rand(len, 1, 0);
    dvec g = {NULL, NULL}, b = {NULL, NULL};
    if (with_gb) {
        g = vec_new((size_t)dim, 0.5f, 1.0f);
        b = vec_new((size_t)dim, 0.5f, 0);
    }
    case_begin("[layernorm] n=%d dim=%d g/b=%s %s eps=1e-5", n, dim, with_gb ? "yes" : "NULL",
               inplace ? "in place (y == x)" : "out of place");
    C->layernorm(C, x.c, n, dim, g.c, b.c, 1e-5f, y.c);
    G->layernorm(G, x.g, n, dim, g.g, b.g, 1e-5f, y.g);
    dual_check("y", y, TOL_ELEM);
    case_end();
    dual_free(x);
    if (!inplace) dual_free(y);
}

static void test_layernorm(void **state)
{
    (void)state;
    START();
    for (int gb = 1; gb >= 0; gb--)
        for (int inplace = 0; inplace < 2; inplace++)
            ln_case(77, 768, gb, inplace);
    ln_case(300, 320, 1, 0);
    ln_case(1, 1280, 1, 0); /* the pooled row of OpenCLIP bigG */
    ln_case(33, 1000, 0, 1);
    done("layernorm");
}

/* ---------------------------------------------------------------- element-wise */

static void test_geglu(void **state)
{
    (void)state;
    START();
    const int shapes[][2] = {{50, 96}, {300, 1280}, {7, 33}};
    for (int s = 0; s < 3; s++) {
        const int n = shapes[s][0], inner = shapes[s][1];
        dual x = dual_rand((size_t)n * 2 * inner, 3, 0), y = dual_rand((size_t)n * inner, 1, 0);
        case_begin("[geglu] n=%d inner=%d", n, inner);
        C->geglu(C, x.c, n, inner, y.c);
        G->geglu(G, x.g, n, inner, y.g);
        dual_check("y", y, TOL_ELEM);
        case_end();
        dual_free(x);
        dual_free(y);
    }
    done("geglu");
}

static void test_act(void **state)
{
    (void)state;
    START();
    static const char *names[] = {"SILU", "GELU (erf)", "QUICK_GELU", "RELU"};
    const int kinds[] = {SDE_ACT_SILU, SDE_ACT_GELU, SDE_ACT_QUICK_GELU, SDE_ACT_RELU};
    const size_t n = 10007;
    for (int i = 0; i < 4; i++) {
        /* values in [-6, 6): the tails too; the op runs from +16 so the first 16 floats must stay */
        dual x = dual_rand(n, 6, 0);
        case_begin("[act] %s over %zu floats at +16", names[i], n - 16);
        C->act(C, dual_at(x, 16).c, n - 16, kinds[i]);
        G->act(G, dual_at(x, 16).g, n - 16, kinds[i]);
        dual_check("x", x, TOL_ELEM);
        case_end();
        dual_free(x);
    }
    done("act");
}

static void test_add_copy(void **state)
{
    (void)state;
    START();
    const size_t n = 100003;
    dual y = dual_rand(n, 1, 0), x = dual_rand(n, 1, 0);
    case_begin("[add] %zu floats", n);
    C->add(C, y.c, x.c, n);
    G->add(G, y.g, x.g, n);
    dual_check("y", y, TOL_ELEM);
    case_end();
    case_begin("[add] %zu floats, y at +16, x at +32", n - 64);
    C->add(C, dual_at(y, 16).c, dual_at(x, 32).c, n - 64);
    G->add(G, dual_at(y, 16).g, dual_at(x, 32).g, n - 64);
    dual_check("y", y, TOL_ELEM);
    case_end();
    case_begin("[copy] %zu floats, dst at +16 of another buffer", n - 16);
    C->copy(C, dual_at(y, 16).c, x.c, n - 16);
    G->copy(G, dual_at(y, 16).g, x.g, n - 16);
    dual_check("dst buffer", y, TOL_EXACT);
    case_end();
    case_begin("[copy] %zu floats within one buffer, +0 -> +%zu (no overlap)", n / 2, n - n / 2);
    C->copy(C, dual_at(x, n - n / 2).c, x.c, n / 2);
    G->copy(G, dual_at(x, n - n / 2).g, x.g, n / 2);
    dual_check("buffer", x, TOL_EXACT);
    case_end();
    dual_free(x);
    dual_free(y);
    done("add/copy");
}

static void embed_case(sde_wtype t, int vocab, int dim, int n)
{
    dweight tab = weight_new((size_t)vocab * dim, t, 1);
    dvec pos = vec_new((size_t)n * dim, 1, 0);
    int32_t *ids = malloc((size_t)n * sizeof *ids), *ids_g = malloc((size_t)n * sizeof *ids_g);
    assert_non_null(ids);
    assert_non_null(ids_g);
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)(((long)i * 7919 + 13) % vocab);
    ids[0] = 0;
    ids[n - 1] = vocab - 1;
    memcpy(ids_g, ids, (size_t)n * sizeof *ids);
    dual y = dual_rand((size_t)n * dim, 1, 0);
    case_begin("[embed] table %s [%d][%d], %d ids (first 0, last %d; host ids overwritten after the call)",
               wname(t), vocab, dim, n, vocab - 1);
    C->embed(C, tab.c, ids, n, dim, pos.c, y.c);
    G->embed(G, tab.g, ids_g, n, dim, pos.g, y.g);
    memset(ids_g, 0, (size_t)n * sizeof *ids_g); /* ids are host memory the caller owns again */
    dual_check("y", y, TOL_ELEM);
    case_end();
    free(ids);
    free(ids_g);
    dual_free(y);
}

static void test_embed(void **state)
{
    (void)state;
    START();
    embed_case(SDE_W_F16, 1000, 768, 77);
    embed_case(SDE_W_F32, 100, 72, 9);
    embed_case(SDE_W_BF16, 100, 72, 9);
    done("embed");
}

static void test_resize_nearest(void **state)
{
    (void)state;
    START();
    const int shapes[][5] = {
        {3, 5, 7, 10, 13}, {3, 5, 7, 10, 14}, {4, 4, 4, 7, 7}, {320, 8, 8, 16, 16}, {2, 9, 9, 17, 17}};
    for (int s = 0; s < 5; s++) {
        const int *p = shapes[s];
        dual x = dual_rand((size_t)p[0] * p[1] * p[2], 1, 0), y = dual_rand((size_t)p[0] * p[3] * p[4], 1, 0);
        case_begin("[resize_nearest] %d planes %dx%d -> %dx%d", p[0], p[1], p[2], p[3], p[4]);
        C->resize_nearest(C, x.c, p[0], p[1], p[2], p[3], p[4], y.c);
        G->resize_nearest(G, x.g, p[0], p[1], p[2], p[3], p[4], y.g);
        dual_check("y", y, TOL_EXACT);
        case_end();
        dual_free(x);
        dual_free(y);
    }
    done("resize_nearest");
}

/* ---------------------------------------------------------------- sizing placeholders */

/* conv_scratch given SDE_BUF_SIZING tensors (x, y, in_scale/in_shift, bias_b) must not touch them and must
 * give at least what the same descriptor with real buffers gives (docs/backends.md: only presence and
 * identity, such as y == x, may matter; the line says whether the two are equal) */
static void test_sizing_placeholders(void **state)
{
    (void)state;
    START();
    const int cins[] = {16, 320}, hs[] = {8, 32}, couts[] = {8, 320}, batches[] = {1, 2};
    const size_t budgets[] = {1, (size_t)64 << 20};
    for (int s = 0; s < 2; s++) {
        const int cin = cins[s], h = hs[s], cout = couts[s], B = batches[s];
        const size_t hw = (size_t)h * h, nx = (size_t)cin * B * hw;
        sde_ten a = alloc_bytes(G, 2 * nx * sizeof(float) + 4096 * sizeof(float)), yb = sde_ten_at(a, nx),
                aff = sde_ten_at(a, 2 * nx);
        for (int k = 1; k <= 3; k += 2) {
            dweight w = weight_new((size_t)cout * cin * k * k, SDE_W_F16, 0.1f);
            for (int inplace = 0; inplace < (k == 1 && cout <= cin ? 2 : 1); inplace++)
                for (int affine = 0; affine < 2; affine++)
                    for (int bi = 0; bi < 2; bi++) {
                        sde_be_conv real = {.x = a,
                                            .batch = B,
                                            .cin = cin,
                                            .h = h,
                                            .w = h,
                                            .x_cstride = (size_t)B * hw,
                                            .x_bstride = hw,
                                            .in_silu = affine,
                                            .wt = w.g,
                                            .cout = cout,
                                            .k = k,
                                            .stride = 1,
                                            .pad_t = k / 2,
                                            .pad_b = k / 2,
                                            .pad_l = k / 2,
                                            .pad_r = k / 2,
                                            .y = inplace ? a : yb,
                                            .y_cstride = (size_t)B * hw,
                                            .y_bstride = hw};
                        if (affine) {
                            real.in_scale = aff;
                            real.in_shift = sde_ten_at(aff, 1024);
                            real.bias_b = sde_ten_at(aff, 2048);
                        }
                        sde_be_conv size = real;
                        const sde_ten sa = {SDE_BUF_SIZING, 0}, sb = {SDE_BUF_SIZING, nx};
                        size.x = sa;
                        size.y = inplace ? sa : sb;
                        if (affine) {
                            size.in_scale = (sde_ten){SDE_BUF_SIZING, 2 * nx};
                            size.in_shift = (sde_ten){SDE_BUF_SIZING, 2 * nx + 1024};
                            size.bias_b = (sde_ten){SDE_BUF_SIZING, 2 * nx + 2048};
                        }
                        case_begin("[conv_scratch] batch=%d cin=%d %dx%d -> cout=%d k=%d in_place=%d "
                                   "in_scale+bias_b=%d budget=%zu: placeholders",
                                   B, cin, h, h, cout, k, inplace, affine, budgets[bi]);
                        const size_t sz = G->conv_scratch(G, &size, budgets[bi]);
                        const size_t rz = G->conv_scratch(G, &real, budgets[bi]);
                        printf(" %zu bytes, real buffers %zu bytes%s", sz, rz, sz == rz ? " (equal)" : "");
                        if (sz < rz) case_fail("the sizing pass gives less than the real one");
                        if (!g_bad) printf(" PASS");
                        case_end();
                    }
        }
        G->free(G, a.buf);
    }
    done("sizing placeholders");
}

/* ---------------------------------------------------------------- out of memory */

/* an impossible allocation returns NULL with a message and leaves the backend working: a 1 MB buffer, then
 * linear (cuBLAS) and add (a kernel) still match the CPU */
static void test_oom(void **state)
{
    (void)state;
    START();
    char err[256] = "";
    sde_buf *huge = G->alloc(G, (size_t)1 << 50, err, sizeof err);
    case_begin("[alloc] 1 PiB: %s, err \"%s\"", huge ? "non-NULL" : "NULL", err);
    if (huge) {
        case_fail("an allocation of 1 PiB succeeded");
        G->free(G, huge);
    }
    if (!err[0]) case_fail("err left empty");
    if (!g_bad) printf(" PASS");
    case_end();
    case_begin("[alloc] 1 MB after it");
    char err2[256] = "";
    sde_buf *mb = G->alloc(G, (size_t)1 << 20, err2, sizeof err2);
    if (!mb)
        case_fail("%s", err2);
    else
        printf(" PASS");
    G->free(G, mb);
    case_end();
    linear_shape(37, 70, 45, SDE_W_F16, 0, 0, 0, 0);
    const size_t n = 4099;
    dual y = dual_rand(n, 1, 0), x = dual_rand(n, 1, 0);
    case_begin("[add] %zu floats after the failed allocation", n);
    C->add(C, y.c, x.c, n);
    G->add(G, y.g, x.g, n);
    dual_check("y", y, TOL_ELEM);
    case_end();
    dual_free(x);
    dual_free(y);
    done("out of memory");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_io),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_conv),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_groupnorm),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_geglu),
        cmocka_unit_test(test_act),
        cmocka_unit_test(test_add_copy),
        cmocka_unit_test(test_embed),
        cmocka_unit_test(test_resize_nearest),
        cmocka_unit_test(test_sizing_placeholders),
        cmocka_unit_test(test_oom),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
