/* test_gemm_bf16.c: sde_gemm() on the bf16 path against a double-precision reference on the same inputs
 * rounded to bf16, over every transpose, odd and edge sizes, accumulation, and thread counts; and the same
 * cases on the float32 path (the AVX-512 kernel where the CPU has it, else OpenBLAS) against the inputs
 * as they are. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dtype_convert.h"
#include "ops.h"

static unsigned seed = 777;
static int g_bf16 = 1; /* the path check_case() runs: bf16 (1) or float32 (0) */

static float frand(void)
{
    seed = seed * 1664525u + 1013904223u;
    return (float)(seed >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
}

/* bf16 round to nearest even, as the kernels do, written independently of them */
static double to_bf16(float f)
{
    if (!g_bf16) return f;
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t lsb = (u >> 16) & 1u;
    u = (u + 0x7fffu + lsb) & 0xffff0000u;
    float r;
    memcpy(&r, &u, sizeof r);
    return r;
}

/* C (+)= op(A) op(B) with everything in double, from bf16-rounded inputs */
static void ref(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                int acc, double *C, const float *C0, int ldc)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = acc ? C0[(size_t)i * ldc + j] : 0.0;
            for (int k = 0; k < K; k++) {
                double a = to_bf16(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]);
                double b = to_bf16(tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
                s += a * b;
            }
            C[(size_t)i * ldc + j] = s;
        }
}

/* typed: 0, or one operand stored as 16-bit weights are (1: A in F16, 2: B in F16, 3: A in BF16, 4: B in
 * BF16), the reference multiplying the floats those bits stand for. */
static void check_case(int ta, int tb, int M, int N, int K, int acc, int typed)
{
    const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 7;
    const size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
    float *A = malloc(na * sizeof *A), *B = malloc(nb * sizeof *B), *C = malloc(nc * sizeof *C),
          *C0 = malloc(nc * sizeof *C0);
    double *R = malloc(nc * sizeof *R);
    assert_true(A && B && C && C0 && R);
    for (size_t i = 0; i < na; i++)
        A[i] = frand();
    for (size_t i = 0; i < nb; i++)
        B[i] = frand();
    for (size_t i = 0; i < nc; i++)
        C[i] = C0[i] = frand();
    /* a typed operand: its 16-bit values, and the floats they stand for (what the reference multiplies) */
    const int on_a = typed == 1 || typed == 3;
    const sde_dtype dt = typed >= 3 ? SDE_DT_BF16 : SDE_DT_F16;
    float *X = on_a ? A : B;
    const size_t nx = on_a ? na : nb;
    uint16_t *X16 = typed ? malloc(nx * sizeof *X16) : NULL;
    if (typed) {
        assert_true(X16 && !sde_cvt_from_f32(dt, X, nx, X16) && !sde_cvt_to_f32(dt, X16, nx, X));
    }
    ref(ta, tb, M, N, K, A, lda, B, ldb, acc, R, C0, ldc);
    sde_set_bf16(g_bf16);
    if (typed) {
        const int t16 = dt == SDE_DT_BF16 ? SDE_GEMM_BF16 : SDE_GEMM_F16;
        sde_gemm_t(ta, tb, M, N, K, on_a ? (const void *)X16 : A, on_a ? t16 : SDE_GEMM_F32, lda,
                   on_a ? B : (const void *)X16, on_a ? SDE_GEMM_F32 : t16, ldb, acc ? 1.0f : 0.0f, C, ldc);
    } else {
        sde_gemm(ta, tb, M, N, K, A, lda, B, ldb, acc ? 1.0f : 0.0f, C, ldc);
    }
    sde_set_bf16(0);
    free(X16);
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double want = R[(size_t)i * ldc + j], got = C[(size_t)i * ldc + j];
            /* only float32 accumulation error is left: K products of magnitude <= 1 */
            if (fabs(got - want) > 1e-5 * (K + 1)) {
                print_error(
                    "bf16 %d ta %d tb %d M %d N %d K %d acc %d typed %d: C[%d][%d] = %.9g, want %.9g\n",
                    g_bf16, ta, tb, M, N, K, acc, typed, i, j, got, want);
                fail();
            }
        }
        for (int j = N; j < ldc; j++) /* the padding between rows is never written */
            assert_true(C[(size_t)i * ldc + j] == C0[(size_t)i * ldc + j]);
    }
    free(A);
    free(B);
    free(C);
    free(C0);
    free(R);
}

static void test_shapes(void **state)
{
    (void)state;
    if (!sde_cpu_has_bf16()) skip();
    /* 70 x 2100: more than one 256-column block per work item, so A is converted whole first */
    static const int shapes[][3] = {{1, 1, 1},      {8, 32, 2},    {9, 33, 3},
                                    {7, 17, 255},   {13, 64, 257}, {64, 100, 513},
                                    {130, 300, 40}, {3, 520, 77},  {70, 2100, 40}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int acc = 0; acc < 2; acc++)
                    check_case(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], acc, 0);
}

/* Weights read as stored (F16 or BF16, either operand, either transpose; the linear layers' transposed
 * F16 B is the packing's transposed path). */
static void test_typed_operands(void **state)
{
    (void)state;
    if (!sde_cpu_has_bf16()) skip();
    static const int shapes[][3] = {{1, 1, 1},     {9, 33, 3},   {7, 17, 255},
                                    {13, 64, 257}, {40, 70, 33}, {3, 520, 77}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int typed = 1; typed <= 4; typed++)
                    check_case(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], typed & 1, typed);
}

/* The float32 path over the same shapes and typed operands (1 and 3 rows: the small-M path). */
static void test_f32_path(void **state)
{
    (void)state;
    static const int shapes[][3] = {{1, 1, 1},     {8, 32, 2},     {9, 33, 3},     {7, 17, 255},
                                    {13, 64, 257}, {64, 100, 513}, {130, 300, 40}, {3, 520, 77},
                                    {70, 65, 129}, {200, 40, 128}, {20, 40, 1100}, {70, 2100, 40}};
    g_bf16 = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int typed = 0; typed <= 4; typed++)
                    check_case(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], typed & 1, typed);
    /* a work item's C over 1 MB with K over one 512 block: C finished a block at a time over all of K */
    check_case(0, 1, 600, 2100, 530, 0, 0);
    g_bf16 = 1;
    if (sde_cpu_has_bf16()) check_case(0, 1, 600, 2100, 530, 1, 0);
    /* one and two threads: the same bits */
    enum { M = 200, N = 300, K = 320 };
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N),
          *c1 = malloc(sizeof(float) * M * N), *c2 = malloc(sizeof(float) * M * N);
    assert_true(A && B && c1 && c2);
    for (int i = 0; i < M * K; i++)
        A[i] = frand();
    for (int i = 0; i < K * N; i++)
        B[i] = frand();
    sde_set_threads(1);
    sde_gemm(0, 1, M, N, K, A, K, B, K, 0.0f, c1, N);
    sde_set_threads(2);
    sde_gemm(0, 1, M, N, K, A, K, B, K, 0.0f, c2, N);
    assert_memory_equal(c1, c2, sizeof(float) * M * N);
    free(A), free(B), free(c1), free(c2);
}

/* sde_gemm_tb: a bias per row or per column, with beta 0 and 1, on the bf16 path (added as C is stored)
 * and on the float32 path (added into C first), against the plain product plus the bias. */
static void test_bias(void **state)
{
    (void)state;
    /* K over one 256 block: the bias goes with the first only; 2 rows: the small-M float32 path */
    enum { M = 37, N = 70, K = 300 };
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N),
          *br = malloc(sizeof(float) * M), *bc = malloc(sizeof(float) * N),
          *C0 = malloc(sizeof(float) * M * N), *P = malloc(sizeof(float) * M * N),
          *C = malloc(sizeof(float) * M * N);
    assert_true(A && B && br && bc && C0 && P && C);
    for (int i = 0; i < M * K; i++)
        A[i] = frand();
    for (int i = 0; i < K * N; i++)
        B[i] = frand();
    for (int i = 0; i < M; i++)
        br[i] = 4.0f * frand();
    for (int i = 0; i < N; i++)
        bc[i] = 4.0f * frand();
    for (int i = 0; i < M * N; i++)
        C0[i] = frand();
    for (int bf = 0; bf < 2; bf++)
        for (int rows = M; rows > 0; rows = rows == M ? 2 : 0) {
            if (bf && !sde_cpu_has_bf16()) continue;
            sde_set_bf16(bf);
            sde_gemm(0, 0, rows, N, K, A, K, B, N, 0.0f, P, N); /* the product alone, on the same path */
            for (int beta = 0; beta < 2; beta++)
                for (int which = 0; which < 2; which++) {
                    memcpy(C, C0, sizeof(float) * M * N);
                    sde_gemm_tb(0, 0, rows, N, K, A, SDE_GEMM_F32, K, B, SDE_GEMM_F32, N, which ? NULL : br,
                                which ? bc : NULL, (float)beta, C, N);
                    for (int i = 0; i < rows; i++)
                        for (int j = 0; j < N; j++) {
                            float want =
                                P[i * N + j] + (which ? bc[j] : br[i]) + (beta ? C0[i * N + j] : 0.0f);
                            if (fabsf(C[i * N + j] - want) > 1e-4f) {
                                print_error("rows %d bf16 %d beta %d %s bias: C[%d][%d] = %.7g, want %.7g\n",
                                            rows, bf, beta, which ? "column" : "row", i, j, C[i * N + j],
                                            want);
                                fail();
                            }
                        }
                }
        }
    sde_set_bf16(0);
    free(A), free(B), free(br), free(bc), free(C0), free(P), free(C);
}

/* The same product on one and on two threads is the same bits, and bf16 is not float32. */
static void test_threads_and_switch(void **state)
{
    (void)state;
    if (!sde_cpu_has_bf16()) skip();
    enum { M = 200, N = 300, K = 320 };
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N);
    float *c1 = malloc(sizeof(float) * M * N), *c2 = malloc(sizeof(float) * M * N),
          *c3 = malloc(sizeof(float) * M * N);
    assert_true(A && B && c1 && c2 && c3);
    for (int i = 0; i < M * K; i++)
        A[i] = frand();
    for (int i = 0; i < K * N; i++)
        B[i] = frand();
    sde_set_bf16(1);
    assert_int_equal(sde_get_bf16(), 1);
    sde_set_threads(1);
    sde_gemm(0, 0, M, N, K, A, K, B, N, 0.0f, c1, N);
    sde_set_threads(2);
    sde_gemm(0, 0, M, N, K, A, K, B, N, 0.0f, c2, N);
    sde_set_bf16(0);
    assert_int_equal(sde_get_bf16(), 0);
    sde_gemm(0, 0, M, N, K, A, K, B, N, 0.0f, c3, N);
    assert_memory_equal(c1, c2, sizeof(float) * M * N);
    assert_true(memcmp(c1, c3, sizeof(float) * M * N) != 0);
    free(A);
    free(B);
    free(c1);
    free(c2);
    free(c3);
}

/* Fused attention on the bf16 path (long sequences, head sizes of SD 1.x/2.x/XL, a key count that is not
 * a multiple of 16 or of the chunk) against a double reference: within what bf16 inputs and bf16
 * probabilities allow, and not equal to the float32 result (the path was taken). */
static void check_attention(int nq, int nk, int heads, int hd)
{
    const int C = heads * hd;
    float *q = malloc(sizeof(float) * nq * C), *k = malloc(sizeof(float) * nk * C),
          *v = malloc(sizeof(float) * nk * C), *o = malloc(sizeof(float) * nq * C),
          *o32 = malloc(sizeof(float) * nq * C), *sc = malloc(sde_attention_scratch(nq, nk, hd));
    double *p = malloc(sizeof(double) * nk);
    assert_true(q && k && v && o && o32 && sc && p);
    for (int i = 0; i < nq * C; i++)
        q[i] = 2.0f * frand();
    for (int i = 0; i < nk * C; i++) {
        k[i] = 2.0f * frand();
        v[i] = frand();
    }
    sde_set_bf16(1);
    sde_attention(q, C, k, C, v, C, nq, nk, heads, hd, 0, o, C, sc);
    sde_set_bf16(0);
    sde_attention(q, C, k, C, v, C, nq, nk, heads, hd, 0, o32, C, sc);
    const double scale = 1.0 / sqrt((double)hd);
    double maxerr = 0.0;
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < nq; i += 37) {
            double m = -1e300, sum = 0.0;
            for (int j = 0; j < nk; j++) {
                double s = 0.0;
                for (int d = 0; d < hd; d++)
                    s += to_bf16(q[(size_t)i * C + h * hd + d] * (float)scale) *
                         to_bf16(k[(size_t)j * C + h * hd + d]);
                p[j] = s;
                m = s > m ? s : m;
            }
            for (int j = 0; j < nk; j++)
                sum += (p[j] = exp(p[j] - m));
            for (int d = 0; d < hd; d++) {
                double want = 0.0;
                for (int j = 0; j < nk; j++)
                    want += p[j] / sum * v[(size_t)j * C + h * hd + d];
                double err = fabs(o[(size_t)i * C + h * hd + d] - want);
                maxerr = err > maxerr ? err : maxerr;
            }
        }
    /* probabilities and V in bf16: relative 2^-8 on terms of a convex combination of values <= 1 */
    if (maxerr > 8e-3) {
        print_error("attention nq %d nk %d hd %d: max error %g\n", nq, nk, hd, maxerr);
        fail();
    }
    assert_true(memcmp(o, o32, sizeof(float) * nq * C) != 0);
    free(q);
    free(k);
    free(v);
    free(o);
    free(o32);
    free(sc);
    free(p);
}

static void test_attention(void **state)
{
    (void)state;
    if (!sde_cpu_has_bf16()) skip();
    check_attention(300, 301, 2, 40);
    check_attention(256, 600, 2, 64);
    check_attention(130, 517, 1, 160);
    check_attention(257, 290, 3, 80);
}

/* sde_gemm_batch: each product the same bits as its own sde_gemm() call, float32 and bf16, for shapes of
 * one and of several column blocks (bf16 converts A a block at a time, or whole first). */
static void test_batch(void **state)
{
    (void)state;
    static const int shapes[][3] = {{37, 70, 300}, {64, 300, 33}, {9, 33, 520}, {5, 17, 3}};
    enum { COUNT = 5 };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2], lda = K + 3, ldb = N + 1, ldc = N + 2;
        const size_t as = (size_t)M * lda + 5, bs = (size_t)K * ldb + 7, cs = (size_t)M * ldc + 9;
        float *A = malloc(sizeof(float) * as * COUNT), *B = malloc(sizeof(float) * bs * COUNT),
              *c1 = calloc(cs * COUNT, sizeof(float)), *c2 = calloc(cs * COUNT, sizeof(float));
        assert_true(A && B && c1 && c2);
        for (size_t i = 0; i < as * COUNT; i++)
            A[i] = frand();
        for (size_t i = 0; i < bs * COUNT; i++)
            B[i] = frand();
        for (int bf = 0; bf < 2; bf++) {
            if (bf && !sde_cpu_has_bf16()) continue;
            sde_set_bf16(bf);
            for (int i = 0; i < COUNT; i++)
                sde_gemm(0, 0, M, N, K, A + i * as, lda, B + i * bs, ldb, 0.0f, c1 + i * cs, ldc);
            sde_gemm_batch(COUNT, M, N, K, A, as, lda, B, bs, ldb, c2, cs, ldc);
            for (int i = 0; i < COUNT; i++)
                for (int r = 0; r < M; r++)
                    assert_memory_equal(c1 + i * cs + (size_t)r * ldc, c2 + i * cs + (size_t)r * ldc,
                                        sizeof(float) * N);
        }
        sde_set_bf16(0);
        free(A), free(B), free(c1), free(c2);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_typed_operands),
        cmocka_unit_test(test_bias),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_threads_and_switch),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_f32_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
