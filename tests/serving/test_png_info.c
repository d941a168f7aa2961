/* test_png_info.c: the supervisor's PNG chunk walk (supervisor/png_info.c): size and alpha from the chunks
 * alone, and every cut, overlong chunk, missing IHDR/IDAT/IEND refused, without reading past the buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "png_info.h"

static size_t put_chunk(uint8_t *p, const char *type, const uint8_t *data, uint32_t n)
{
    p[0] = (uint8_t)(n >> 24), p[1] = (uint8_t)(n >> 16), p[2] = (uint8_t)(n >> 8), p[3] = (uint8_t)n;
    memcpy(p + 4, type, 4);
    if (n) memcpy(p + 8, data, n);
    memset(p + 8 + n, 0, 4); /* the CRC is not the walk's business */
    return 12 + n;
}

/* A PNG skeleton: IHDR (w, h, colour type), optional tRNS, one IDAT of junk, IEND. */
static size_t make(uint8_t *buf, uint32_t w, uint32_t h, int ct, int trns)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t ihdr[13] = {0};
    ihdr[0] = (uint8_t)(w >> 24), ihdr[1] = (uint8_t)(w >> 16), ihdr[2] = (uint8_t)(w >> 8),
    ihdr[3] = (uint8_t)w;
    ihdr[4] = (uint8_t)(h >> 24), ihdr[5] = (uint8_t)(h >> 16), ihdr[6] = (uint8_t)(h >> 8),
    ihdr[7] = (uint8_t)h;
    ihdr[8] = 8, ihdr[9] = (uint8_t)ct;
    memcpy(buf, sig, 8);
    size_t n = 8 + put_chunk(buf + 8, "IHDR", ihdr, 13);
    if (trns) n += put_chunk(buf + n, "tRNS", (const uint8_t *)"\0", 1);
    n += put_chunk(buf + n, "IDAT", (const uint8_t *)"junk", 4);
    return n + put_chunk(buf + n, "IEND", NULL, 0);
}

static int info(const uint8_t *buf, size_t len, int *w, int *h, int *a)
{
    char err[200] = "";
    uint8_t *copy = malloc(len ? len : 1); /* its own allocation: ASan sees a read past the end */
    memcpy(copy, buf, len);
    int rc = sdw_png_info(copy, len, w, h, a, err, sizeof err);
    free(copy);
    if (rc) assert_true(err[0] != '\0');
    return rc;
}

static void test_size_and_alpha(void **state)
{
    (void)state;
    uint8_t b[256];
    int w, h, a;
    struct {
        int ct, trns, alpha;
    } cases[] = {{2, 0, 0}, {6, 0, 1}, {4, 0, 1}, {0, 0, 0}, {3, 1, 1}, {2, 1, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t n = make(b, 640, 480, cases[i].ct, cases[i].trns);
        assert_int_equal(info(b, n, &w, &h, &a), 0);
        assert_int_equal(w, 640);
        assert_int_equal(h, 480);
        assert_int_equal(a, cases[i].alpha);
    }
}

static void test_refused(void **state)
{
    (void)state;
    uint8_t b[256];
    int w, h, a;
    size_t n = make(b, 64, 64, 6, 0);
    for (size_t cut = 0; cut < n; cut++)
        assert_int_equal(info(b, cut, &w, &h, &a), -1);
    uint8_t bad[256];
    memcpy(bad, b, n);
    bad[33] = 0x80; /* the IDAT length's top byte: past the end */
    assert_int_equal(info(bad, n, &w, &h, &a), -1);
    memcpy(bad, b, n);
    memcpy(bad + 12, "IHDX", 4);
    assert_int_equal(info(bad, n, &w, &h, &a), -1);
    memcpy(bad, b, n);
    memcpy(bad + 37, "IDAX", 4); /* no image data */
    assert_int_equal(info(bad, n, &w, &h, &a), -1);
    assert_int_equal(info((const uint8_t *)"GIF89a", 6, &w, &h, &a), -1);
    n = make(b, 0, 64, 2, 0);
    assert_int_equal(info(b, n, &w, &h, &a), -1);
    n = make(b, 16385, 64, 2, 0);
    assert_int_equal(info(b, n, &w, &h, &a), -1);
    n = make(b, 16384, 16384, 2, 0);
    assert_int_equal(info(b, n, &w, &h, &a), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_size_and_alpha),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
