/* test_json_out.c: what json_out.c adds to jansson: invalid UTF-8 repaired to U+FFFD, numbers to 6 decimals,
 * base64 (RFC 4648 vectors), and dumping into rcbufs with SSE framing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "json_out.h"

/* The dump of v (reference taken) as a malloc'd string. */
static char *dump(json_t *v)
{
    assert_non_null(v);
    char *s = json_dumps(v, SDW_JSON_DUMP_FLAGS | JSON_ENCODE_ANY);
    json_decref(v);
    assert_non_null(s);
    return s;
}

static void expect_dump(json_t *v, const char *want)
{
    char *s = dump(v);
    assert_string_equal(s, want);
    free(s);
}

static void test_strings(void **state)
{
    (void)state;
    expect_dump(sdw_json_str("q\"b\\n\nt\tc\x01 \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
                "\"q\\\"b\\\\n\\nt\\tc\\u0001 \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
    expect_dump(sdw_json_str("bad \xff \xc3 end \xed\xa0\x80"),
                "\"bad \xef\xbf\xbd \xef\xbf\xbd end \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    expect_dump(sdw_json_str(NULL), "null");
    expect_dump(sdw_json_str(""), "\"\"");
}

static void test_numbers(void **state)
{
    (void)state;
    json_t *a = json_pack("[o,o,o,o,o,o,o,I]", sdw_json_num(7.5), sdw_json_num(0.0), sdw_json_num(0.1234567),
                          sdw_json_num(1.0 / 0.0), sdw_json_num(0.1), sdw_json_num(86400.1234567),
                          sdw_json_num(-2.25), (json_int_t)INT64_MAX);
    expect_dump(a, "[7.5,0.0,0.123457,null,0.1,86400.123457,-2.25,9223372036854775807]");
}

static void test_base64(void **state)
{
    (void)state;
    static const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *out[] = {"\"\"",         "\"Zg==\"",     "\"Zm8=\"",    "\"Zm9v\"",
                                "\"Zm9vYg==\"", "\"Zm9vYmE=\"", "\"Zm9vYmFy\""};
    for (int i = 0; i < 7; i++)
        expect_dump(sdw_json_base64(in[i], strlen(in[i])), out[i]);
    /* binary bytes, in an object, framed as an SSE event in an rcbuf */
    unsigned char bin[256];
    for (int i = 0; i < 256; i++)
        bin[i] = (unsigned char)i;
    sdw_rcbuf *b =
        sdw_json_to_rcbuf(json_pack("{s:o,s:i}", "image", sdw_json_base64(bin, sizeof bin), "n", 1),
                          "event: complete\ndata: ", "\n\n");
    assert_non_null(b);
    assert_int_equal(strlen(b->data), b->len);
    assert_memory_equal(b->data, "event: complete\ndata: {\"image\":\"AAECAwQF", 40);
    assert_non_null(strstr(b->data, "+/w==\",\"n\":1}\n\n"));
    assert_int_equal(b->data[b->len - 1], '\n');
    sdw_rcbuf_retain(b);
    sdw_rcbuf_release(b);
    sdw_rcbuf_release(b);
    /* no prefix or suffix; NULL in gives NULL out */
    b = sdw_json_to_rcbuf(json_pack("{s:s?}", "x", NULL), NULL, NULL);
    assert_non_null(b);
    assert_string_equal(b->data, "{\"x\":null}");
    sdw_rcbuf_release(b);
    assert_null(sdw_json_to_rcbuf(NULL, "a", "b"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_base64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
