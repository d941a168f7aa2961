/* test_framing.c: the raw-head check against request smuggling (supervisor/framing.c): which heads frame
 * their body ambiguously, line ends with and without CR, obs-fold, and that the body is never read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "srv.h"

static int check(const char *head, int http10, const char **field)
{
    char why[80] = "";
    const char *f = NULL;
    int rc = sdw_framing_check(head, strlen(head), http10, why, sizeof why, &f);
    if (rc) assert_true(why[0] != '\0');
    if (field) *field = f;
    return rc;
}

static void test_refused(void **state)
{
    (void)state;
    const char *f;
    assert_int_equal(
        check("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 0, &f), 1);
    assert_string_equal(f, "Transfer-Encoding");
    assert_int_equal(
        check("POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 3\r\n\r\n", 0, NULL), 1);
    assert_int_equal(check("POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 4\r\n\r\n", 0, &f), 1);
    assert_string_equal(f, "Content-Length");
    /* leading zeros are another value to a proxy that compares strings */
    assert_int_equal(check("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 03\r\n\r\n", 0, NULL), 1);
    assert_int_equal(
        check("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 0, NULL),
        1);
    assert_int_equal(check("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 1, NULL), 1);
    /* obs-fold continuing either header */
    assert_int_equal(check("POST / HTTP/1.1\r\nContent-Length: 3\r\n 4\r\n\r\n", 0, &f), 1);
    assert_string_equal(f, "Content-Length");
    assert_int_equal(check("POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\tchunked\r\n\r\n", 0, &f), 1);
    assert_string_equal(f, "Transfer-Encoding");
    /* bare LF line ends, which picohttpparser accepts too */
    assert_int_equal(check("POST / HTTP/1.1\nContent-Length: 3\nTransfer-Encoding: chunked\n\n", 0, NULL), 1);
}

static void test_accepted(void **state)
{
    (void)state;
    assert_int_equal(check("GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 0, NULL), 0);
    assert_int_equal(check("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 0, NULL), 0);
    /* the same value twice, optional whitespace around it */
    assert_int_equal(check("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length:3 \t\r\n\r\nabc", 0, NULL),
                     0);
    assert_int_equal(check("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 0, NULL), 0);
    assert_int_equal(check("POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc", 1, NULL), 0);
    /* names that only contain or start like the two */
    assert_int_equal(check("POST / HTTP/1.1\r\nContent-Length: 3\r\nX-Transfer-Encoding: chunked\r\n"
                           "Content-Length-X: 4\r\n\r\n",
                           0, NULL),
                     0);
    /* obs-fold of another header, also right after Content-Length's line was ended by another header */
    assert_int_equal(check("POST / HTTP/1.1\r\nContent-Length: 3\r\nX-A: 1\r\n 2\r\n\r\n", 0, NULL), 0);
    /* the body is not headers: a head ends at its blank line */
    assert_int_equal(
        check("POST / HTTP/1.1\r\nContent-Length: 50\r\n\r\nContent-Length: 4\r\nTransfer-Encoding: "
              "chunked\r\n\r\n",
              0, NULL),
        0);
    /* a truncated buffer is no verdict */
    assert_int_equal(check("POST / HTTP/1.1\r\nContent-Len", 0, NULL), 0);
    assert_int_equal(check("", 0, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_accepted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
