/* test_multipart.c: the multipart/form-data reader: boundaries from Content-Type, parts with names,
 * file names and types (a quoted value cannot hide a second name), binary data with CR/LF inside, and every
 * malformed shape refused. Each input is
 * copied into a buffer of its exact size, so ASan sees any read past the body. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "multipart.h"

static int parse(const char *body, size_t len, const char *b, sdw_mp_part *parts, int max, int *n)
{
    char err[200];
    char *copy = malloc(len ? len : 1);
    memcpy(copy, body, len);
    int rc = sdw_multipart_parse(copy, len, b, parts, max, n, err, sizeof err);
    if (rc == 0) {
        /* point back into the caller's string so the checks can read after the copy is gone */
        for (int i = 0; i < *n; i++) {
            parts[i].name = body + (parts[i].name - copy);
            parts[i].data = body + (parts[i].data - copy);
            if (parts[i].filename) parts[i].filename = body + (parts[i].filename - copy);
            if (parts[i].content_type) parts[i].content_type = body + (parts[i].content_type - copy);
        }
    } else {
        assert_true(err[0] != '\0');
    }
    free(copy);
    return rc;
}

static void test_boundary(void **state)
{
    (void)state;
    char b[SDW_MP_BOUNDARY_MAX + 1], err[200];
    const char *ct = "multipart/form-data; boundary=----abc123";
    assert_int_equal(sdw_multipart_boundary(ct, strlen(ct), b, err, sizeof err), 0);
    assert_string_equal(b, "----abc123");
    ct = "Multipart/Form-Data; charset=utf-8; boundary=\"a b:c\"";
    assert_int_equal(sdw_multipart_boundary(ct, strlen(ct), b, err, sizeof err), 0);
    assert_string_equal(b, "a b:c");
    const char *bad[] = {"application/json",
                         "multipart/form-data",
                         "multipart/form-data; boundary=",
                         "multipart/form-data; boundary=\"abc",
                         "multipart/form-data; boundary=a{b",
                         "multipart/form-data; "
                         "boundary=01234567890123456789012345678901234567890123456789012345678901234567890"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(sdw_multipart_boundary(bad[i], strlen(bad[i]), b, err, sizeof err), -1);
    assert_int_equal(sdw_multipart_boundary(NULL, 0, b, err, sizeof err), -1);
    /* another media type that only starts with the name; a NUL inside the boundary */
    ct = "multipart/form-datax; boundary=abc";
    assert_int_equal(sdw_multipart_boundary(ct, strlen(ct), b, err, sizeof err), -1);
    static const char nul[] = "multipart/form-data; boundary=ab\0cd";
    assert_int_equal(sdw_multipart_boundary(nul, sizeof nul - 1, b, err, sizeof err), -1);
}

static void test_disposition_params(void **state)
{
    (void)state;
    /* a quoted filename holding "; name=" is one parameter, not a second name */
    static const char smuggle[] = "--B\r\nContent-Disposition: form-data; filename=\"x; name=evil\"; "
                                  "name=\"mask\"\r\n\r\nv\r\n--B--";
    sdw_mp_part p[4];
    int n;
    assert_int_equal(parse(smuggle, sizeof smuggle - 1, "B", p, 4, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(p[0].name_len, 4);
    assert_memory_equal(p[0].name, "mask", 4);
    assert_int_equal(p[0].filename_len, 12);
    assert_memory_equal(p[0].filename, "x; name=evil", 12);
    /* a name only inside a quoted value is no name */
    static const char hidden[] =
        "--B\r\nContent-Disposition: form-data; filename=\"a;name=x\"\r\n\r\nv\r\n--B--";
    assert_int_equal(parse(hidden, sizeof hidden - 1, "B", p, 4, &n), -1);
    /* escaped quotes stay inside the value; the first of two names counts */
    static const char esc[] =
        "--B\r\nContent-Disposition: form-data; name=\"a\\\"b\"; name=c\r\n\r\nv\r\n--B--";
    assert_int_equal(parse(esc, sizeof esc - 1, "B", p, 4, &n), 0);
    assert_int_equal(p[0].name_len, 4);
    assert_memory_equal(p[0].name, "a\\\"b", 4);
}

static void test_parts(void **state)
{
    (void)state;
    static const char body[] = "preamble\r\n--XX\r\n"
                               "Content-Disposition: form-data; name=\"prompt\"\r\n\r\n"
                               "a cat\r\n--XX\r\n"
                               "content-disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
                               "Content-Type: image/png\r\n\r\n"
                               "\x89PNG\r\n--X\r\n\0end\r\n--XX--\r\nepilogue";
    sdw_mp_part p[4];
    int n;
    assert_int_equal(parse(body, sizeof body - 1, "XX", p, 4, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(p[0].name_len, 6);
    assert_memory_equal(p[0].name, "prompt", 6);
    assert_int_equal(p[0].len, 5);
    assert_memory_equal(p[0].data, "a cat", 5);
    assert_null(p[0].filename);
    assert_memory_equal(p[1].filename, "a.png", 5);
    assert_memory_equal(p[1].content_type, "image/png", 9);
    assert_int_equal(p[1].len, 15);
    assert_memory_equal(p[1].data, "\x89PNG\r\n--X\r\n\0end", 15);
    assert_ptr_equal(sdw_multipart_find(p, n, "image"), &p[1]);
    assert_null(sdw_multipart_find(p, n, "mask"));
    /* the delimiter at the very start, and an empty part */
    static const char b2[] = "--B\r\nContent-Disposition: form-data; name=x\r\n\r\n\r\n--B--";
    assert_int_equal(parse(b2, sizeof b2 - 1, "B", p, 4, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(p[0].len, 0);
    assert_memory_equal(p[0].name, "x", 1);
}

static void test_malformed(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "no boundary here",
        "--B\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nnever closed",
        "--B\r\nContent-Disposition: form-data; name=\"x\"\r\n",
        "--B\r\nContent-Disposition: attachment; name=\"x\"\r\n\r\nv\r\n--B--",
        "--B\r\nContent-Type: text/plain\r\n\r\nv\r\n--B--",
        "--B\r\nContent-Disposition: form-data; name=\"x\r\n\r\nv\r\n--B--",
        "--B\r\nno colon\r\n\r\nv\r\n--B--",
        "--Bjunk\r\nContent-Disposition: form-data; name=x\r\n\r\nv\r\n--B--",
        "--B\r\nContent-Disposition: form-data; name=x\r\n\r\nv\r\n--B",
    };
    sdw_mp_part p[4];
    int n;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(parse(bad[i], strlen(bad[i]), "B", p, 4, &n), -1);
    /* more parts than room */
    static const char many[] = "--B\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n"
                               "--B\r\nContent-Disposition: form-data; name=b\r\n\r\n2\r\n--B--";
    assert_int_equal(parse(many, sizeof many - 1, "B", p, 1, &n), -1);
    assert_int_equal(parse(many, sizeof many - 1, "B", p, 2, &n), 0);
    /* every prefix of a good body is refused or parses, never reads past its end */
    for (size_t l = 0; l < sizeof many - 1; l++)
        parse(many, l, "B", p, 4, &n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_boundary),
        cmocka_unit_test(test_parts),
        cmocka_unit_test(test_disposition_params),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
