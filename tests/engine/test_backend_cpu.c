/* test_backend_cpu.c: the CPU backend of backend.h: buffers and host I/O, every linear layout against a
 * naive reference, sizing placeholders, embed, resize and activations against ops.h, backend lookup ("cuda"
 * only in a -DSDW_CUDA=ON build). */
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
#include "ops.h"

static unsigned seed = 12345;

static float frand(void)
{
    seed = seed * 1664525u + 1013904223u;
    return (float)(seed >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
}

static sde_ten upload_rand(sde_backend *be, float *host, size_t n)
{
    for (size_t i = 0; i < n; i++)
        host[i] = frand();
    char err[128];
    sde_ten t = {be->alloc(be, n * sizeof(float), err, sizeof err), 0};
    assert_non_null(t.buf);
    be->write(be, t, host, n);
    return t;
}

static void test_lookup(void **state)
{
    (void)state;
    assert_ptr_equal(sde_backend_get(NULL), sde_backend_cpu());
    assert_ptr_equal(sde_backend_get(""), sde_backend_cpu());
    assert_ptr_equal(sde_backend_get("cpu"), sde_backend_cpu());
#ifdef SDW_CUDA
    /* a -DSDW_CUDA=ON build has "cuda"; the lookup gives NULL only where it cannot start (no device) */
    sde_backend *cu = sde_backend_get("cuda");
    if (cu)
        assert_string_equal(cu->name, "cuda");
    else
        printf("sde_backend_get(\"cuda\"): NULL (no usable device here)\n");
#else
    assert_null(sde_backend_get("cuda"));
#endif
    assert_null(sde_backend_get("nosuch"));
    assert_string_equal(sde_backend_cpu()->name, "cpu");
}

/* Every flag combination: X_CM reads x as [in][n], Y_CM writes y as [out][n], ACC adds into y. */
static void test_linear_layouts(void **state)
{
    (void)state;
    sde_backend *be = sde_backend_cpu();
    enum { N = 13, IN = 24, OUT = 17 };
    float xh[N * IN], wh[OUT * IN], bh[OUT], y0[N * OUT], got[N * OUT];
    for (int i = 0; i < OUT * IN; i++)
        wh[i] = frand();
    for (int i = 0; i < OUT; i++)
        bh[i] = frand();
    sde_ten x = upload_rand(be, xh, N * IN), y = upload_rand(be, y0, N * OUT);
    const sde_weight w = {wh, SDE_W_F32, OUT * IN, 0};
    for (int flags = 0; flags < 8; flags++)
        for (int with_b = 0; with_b < 2; with_b++) {
            be->write(be, y, y0, N * OUT);
            be->linear(be, x, N, IN, &w, with_b ? bh : NULL, OUT, y, flags);
            be->read(be, got, y, N * OUT);
            for (int r = 0; r < N; r++)
                for (int o = 0; o < OUT; o++) {
                    double s = with_b ? bh[o] : 0.0;
                    for (int i = 0; i < IN; i++)
                        s += (double)wh[o * IN + i] * xh[(flags & SDE_LIN_X_CM) ? i * N + r : r * IN + i];
                    int yi = (flags & SDE_LIN_Y_CM) ? o * N + r : r * OUT + o;
                    if (flags & SDE_LIN_ACC) s += y0[yi];
                    assert_true(fabs(got[yi] - s) < 1e-4);
                }
        }
    be->free(be, x.buf);
    be->free(be, y.buf);
}

/* wh[0..n) as F16 (kind 1) or BF16 (kind 2) bits in q, and wh rounded to those values. */
static void narrow(float *wh, uint16_t *q, size_t n, int kind)
{
    for (size_t i = 0; i < n; i++) {
        if (kind == 1) {
            _Float16 v = (_Float16)wh[i];
            memcpy(&q[i], &v, 2);
            wh[i] = (float)v;
        } else {
            uint32_t b;
            memcpy(&b, &wh[i], 4);
            q[i] = (uint16_t)(b >> 16);
            b = (uint32_t)q[i] << 16;
            memcpy(&wh[i], &b, 4);
        }
    }
}

/* F16 and BF16 weights, widened by the backend per op, give bit-for-bit what the same values as float32
 * give: linear in every layout, 1x1 / im2col / Winograd convolutions, and embed. */
static void test_narrow_weights_exact(void **state)
{
    (void)state;
    sde_backend *be = sde_backend_cpu();
    char err[128];
    enum {
        N = 70,
        IN = 40,
        OUT = 33,
        H = 32,
        W = 32,
        CIN = 72,
        COUT = 24
    }; /* 3x3: Winograd (CIN > its widening chunk) */
    static float xh[N * IN], wh[OUT * IN], bh[OUT], a[N * OUT], b[N * OUT];
    static float ch[2 * CIN * H * W], kw[COUT * CIN * 9], ya[2 * COUT * H * W], yb[2 * COUT * H * W];
    static uint16_t q[COUT * CIN * 9];
    sde_ten x = upload_rand(be, xh, N * IN), y = {be->alloc(be, sizeof a, err, sizeof err), 0};
    sde_ten cx = upload_rand(be, ch, 2 * CIN * H * W), cy = {be->alloc(be, sizeof ya, err, sizeof err), 0};
    sde_ten scr = {be->alloc(be, (size_t)64 << 20, err, sizeof err), 0};
    for (int i = 0; i < OUT; i++)
        bh[i] = frand();
    for (int kind = 1; kind <= 2; kind++) {
        for (int i = 0; i < OUT * IN; i++)
            wh[i] = frand();
        narrow(wh, q, OUT * IN, kind);
        const sde_weight w32 = {wh, SDE_W_F32, OUT * IN, 0},
                         w16 = {q, kind == 1 ? SDE_W_F16 : SDE_W_BF16, OUT * IN, 0};
        for (int flags = 0; flags < 8; flags++) {
            memset(a, 0, sizeof a);
            be->write(be, y, a, N * OUT);
            be->linear(be, x, N, IN, &w32, bh, OUT, y, flags);
            be->read(be, a, y, N * OUT);
            memset(b, 0, sizeof b);
            be->write(be, y, b, N * OUT);
            be->linear(be, x, N, IN, &w16, bh, OUT, y, flags);
            be->read(be, b, y, N * OUT);
            assert_memory_equal(a, b, sizeof a);
        }
        /* embed: rows 3, 0, 32 of the [OUT][IN] table */
        const int32_t ids[3] = {3, 0, 32};
        be->embed(be, &w32, ids, 3, IN, xh, y);
        be->read(be, a, y, 3 * IN);
        be->embed(be, &w16, ids, 3, IN, xh, y);
        be->read(be, b, y, 3 * IN);
        assert_memory_equal(a, b, 3 * IN * sizeof(float));
        for (int k = 1; k <= 3; k += 2)
            for (int stride = 1; stride <= 2; stride++) {
                for (int i = 0; i < COUT * CIN * k * k; i++)
                    kw[i] = frand() * 0.2f;
                narrow(kw, q, (size_t)COUT * CIN * k * k, kind);
                const sde_weight k32 = {kw, SDE_W_F32, (size_t)COUT * CIN * k * k, 0},
                                 k16 = {q, kind == 1 ? SDE_W_F16 : SDE_W_BF16, k32.n, 0};
                sde_be_conv d = {.x = cx,
                                 .batch = 2,
                                 .cin = CIN,
                                 .h = H,
                                 .w = W,
                                 .x_cstride = 2 * H * W,
                                 .x_bstride = H * W,
                                 .bias = bh,
                                 .cout = COUT,
                                 .k = k,
                                 .stride = k == 1 ? 1 : stride,
                                 .pad_t = k / 2,
                                 .pad_b = k / 2,
                                 .pad_l = k / 2,
                                 .pad_r = k / 2,
                                 .y = cy};
                const int oh = sde_be_conv_out_h(&d), ow = sde_be_conv_out_w(&d);
                d.y_cstride = (size_t)2 * oh * ow;
                d.y_bstride = (size_t)oh * ow;
                const size_t bytes = be->conv_scratch(be, &d, (size_t)64 << 20);
                assert_true(bytes <= (size_t)64 << 20);
                d.wt = &k32;
                be->conv(be, &d, scr, bytes);
                be->read(be, ya, cy, (size_t)2 * COUT * oh * ow);
                d.wt = &k16;
                be->conv(be, &d, scr, bytes);
                be->read(be, yb, cy, (size_t)2 * COUT * oh * ow);
                assert_memory_equal(ya, yb, (size_t)2 * COUT * oh * ow * sizeof(float));
            }
    }
    be->free(be, x.buf);
    be->free(be, y.buf);
    be->free(be, cx.buf);
    be->free(be, cy.buf);
    be->free(be, scr.buf);
}

/* A sizing pass sees what a real one sees: presence of the input transform and in-place 1x1 convs. */
static void test_sizing_placeholders(void **state)
{
    (void)state;
    sde_backend *be = sde_backend_cpu();
    char err[128];
    sde_ten a = {be->alloc(be, 4096 * sizeof(float), err, sizeof err), 0}, b = sde_ten_at(a, 2048);
    const sde_ten sa = {SDE_BUF_SIZING, 0}, sb = {SDE_BUF_SIZING, 1};
    for (int inplace = 0; inplace < 2; inplace++)
        for (int k = 1; k <= 3; k += 2) {
            sde_be_conv real = {.x = a,
                                .batch = 1,
                                .cin = 16,
                                .h = 8,
                                .w = 8,
                                .x_cstride = 64,
                                .x_bstride = 1024,
                                .cout = 8,
                                .k = k,
                                .stride = 1,
                                .pad_t = k / 2,
                                .pad_b = k / 2,
                                .pad_l = k / 2,
                                .pad_r = k / 2,
                                .y = inplace ? a : b,
                                .y_cstride = 64,
                                .y_bstride = 512};
            sde_be_conv size = real;
            size.x = sa;
            size.y = inplace ? sa : sb;
            assert_int_equal(be->conv_scratch(be, &size, 1 << 20), be->conv_scratch(be, &real, 1 << 20));
            real.in_scale = real.in_shift = b;
            size.in_scale = size.in_shift = sb;
            assert_int_equal(be->conv_scratch(be, &size, 1 << 20), be->conv_scratch(be, &real, 1 << 20));
        }
    be->free(be, a.buf);
}

static void test_embed_resize_act(void **state)
{
    (void)state;
    sde_backend *be = sde_backend_cpu();
    char err[128];
    float table[5 * 4], pos[3 * 4], got[3 * 4];
    for (int i = 0; i < 20; i++)
        table[i] = frand();
    for (int i = 0; i < 12; i++)
        pos[i] = frand();
    const int32_t ids[3] = {4, 0, 2};
    sde_ten y = {be->alloc(be, sizeof got, err, sizeof err), 0};
    const sde_weight tw = {table, SDE_W_F32, 20, 0};
    be->embed(be, &tw, ids, 3, 4, pos, y);
    be->read(be, got, y, 12);
    for (int t = 0; t < 3; t++)
        for (int i = 0; i < 4; i++)
            assert_true(got[t * 4 + i] == table[ids[t] * 4 + i] + pos[t * 4 + i]);
    /* nearest resize 2x3 -> 3x5 (an odd target, as the UNet meets) */
    float x[6] = {1, 2, 3, 4, 5, 6}, r[15];
    sde_ten xt = {be->alloc(be, sizeof x, err, sizeof err), 0},
            rt = {be->alloc(be, sizeof r, err, sizeof err), 0};
    be->write(be, xt, x, 6);
    be->resize_nearest(be, xt, 1, 2, 3, 3, 5, rt);
    be->read(be, r, rt, 15);
    for (int oy = 0; oy < 3; oy++)
        for (int ox = 0; ox < 5; ox++)
            assert_true(r[oy * 5 + ox] == x[(oy * 2 / 3) * 3 + ox * 3 / 5]);
    /* activations are ops.h's, bit for bit */
    float a[12], ref[12];
    for (int kind = SDE_ACT_SILU; kind <= SDE_ACT_QUICK_GELU; kind++) {
        for (int i = 0; i < 12; i++)
            ref[i] = a[i] = 3 * frand();
        be->write(be, y, a, 12);
        be->act(be, y, 12, kind);
        be->read(be, a, y, 12);
        if (kind == SDE_ACT_SILU)
            sde_silu(ref, 12);
        else if (kind == SDE_ACT_GELU)
            sde_gelu(ref, 12);
        else
            sde_quick_gelu(ref, 12);
        assert_memory_equal(a, ref, sizeof a);
    }
    be->free(be, y.buf);
    be->free(be, xt.buf);
    be->free(be, rt.buf);
    be->free(be, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_linear_layouts),
        cmocka_unit_test(test_narrow_weights_exact),
        cmocka_unit_test(test_sizing_placeholders),
        cmocka_unit_test(test_embed_resize_act),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
