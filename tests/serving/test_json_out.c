/* test_json_out.c: the response JSON writer: structure and commas, escaping, invalid UTF-8, full uint64
 * range, numbers, base64 (checked against RFC 4648 vectors and re-parsed with jansson). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "json_out.h"

static void test_structure(void **state)
{
    (void)state;
    sdw_jw w;
    sdw_jw_init(&w);
    sdw_jw_obj_open(&w);
    sdw_jw_key(&w, "a");
    sdw_jw_int(&w, -5);
    sdw_jw_key(&w, "b");
    sdw_jw_arr_open(&w);
    sdw_jw_bool(&w, 1);
    sdw_jw_null(&w);
    sdw_jw_obj_open(&w);
    sdw_jw_obj_close(&w);
    sdw_jw_arr_open(&w);
    sdw_jw_arr_close(&w);
    sdw_jw_str(&w, "x");
    sdw_jw_arr_close(&w);
    sdw_jw_key(&w, "c");
    sdw_jw_str(&w, NULL);
    sdw_jw_obj_close(&w);
    assert_string_equal(w.buf, "{\"a\":-5,\"b\":[true,null,{},[],\"x\"],\"c\":null}");
    sdw_jw_free(&w);
}

static void test_strings(void **state)
{
    (void)state;
    sdw_jw w;
    sdw_jw_init(&w);
    sdw_jw_arr_open(&w);
    sdw_jw_str(&w, "q\"b\\n\nt\tc\x01 \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    sdw_jw_str(&w, "bad \xff \xc3 end \xed\xa0\x80");
    sdw_jw_arr_close(&w);
    assert_string_equal(w.buf, "[\"q\\\"b\\\\n\\nt\\tc\\u0001 \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\","
                               "\"bad \xef\xbf\xbd \xef\xbf\xbd end \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"]");
    json_error_t e;
    json_t *v = json_loadb(w.buf, w.len, 0, &e);
    assert_non_null(v);
    json_decref(v);
    sdw_jw_free(&w);
}

static void test_numbers(void **state)
{
    (void)state;
    sdw_jw w;
    sdw_jw_init(&w);
    sdw_jw_arr_open(&w);
    sdw_jw_u64(&w, UINT64_MAX);
    sdw_jw_u64(&w, 0);
    sdw_jw_num(&w, 7.5);
    sdw_jw_num(&w, 0.0);
    sdw_jw_num(&w, 0.1234567);
    sdw_jw_num(&w, 1.0 / 0.0);
    sdw_jw_int(&w, INT64_MIN);
    sdw_jw_arr_close(&w);
    assert_string_equal(w.buf, "[18446744073709551615,0,7.5,0.0,0.123457,null,-9223372036854775808]");
    sdw_jw_free(&w);
}

static void test_base64(void **state)
{
    (void)state;
    static const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *out[] = {"\"\"", "\"Zg==\"", "\"Zm8=\"", "\"Zm9v\"", "\"Zm9vYg==\"", "\"Zm9vYmE=\"", "\"Zm9vYmFy\""};
    for (int i = 0; i < 7; i++) {
        sdw_jw w;
        sdw_jw_init(&w);
        sdw_jw_base64(&w, in[i], strlen(in[i]));
        assert_string_equal(w.buf, out[i]);
        sdw_jw_free(&w);
    }
    /* binary bytes, in an object, through an rcbuf */
    unsigned char bin[256];
    for (int i = 0; i < 256; i++)
        bin[i] = (unsigned char)i;
    sdw_jw w;
    sdw_jw_init(&w);
    sdw_jw_raw(&w, "data: ", 6);
    sdw_jw_obj_open(&w);
    sdw_jw_key(&w, "image");
    sdw_jw_base64(&w, bin, sizeof bin);
    sdw_jw_key(&w, "n");
    sdw_jw_int(&w, 1);
    sdw_jw_obj_close(&w);
    sdw_rcbuf *b = sdw_jw_to_rcbuf(&w);
    assert_non_null(b);
    assert_int_equal(b->len, w.len);
    assert_memory_equal(b->data, "data: {\"image\":\"AAECAwQF", 24);
    assert_non_null(strstr(b->data, "+/w==\",\"n\":1}"));
    sdw_rcbuf_retain(b);
    sdw_rcbuf_release(b);
    sdw_rcbuf_release(b);
    sdw_jw_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_base64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
