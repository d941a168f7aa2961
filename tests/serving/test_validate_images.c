/* test_validate_images.c: POST /v1/jobs image inputs: base64 PNG init_image and mask, strength, mask_blur,
 * each bad value a 400 naming its field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "validate.h"

static const sdw_validate_limits LIM = {
    .max_width = 1024, .max_height = 768, .max_steps = 150, .max_body_bytes = 8192};

/* Base64 of the first 33 bytes of a PNG (signature + IHDR) of w x h: all the supervisor reads. */
static void png_b64(int w, int h, char *out)
{
    uint8_t b[33] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
    b[16] = (uint8_t)(w >> 24), b[17] = (uint8_t)(w >> 16), b[18] = (uint8_t)(w >> 8), b[19] = (uint8_t)w;
    b[20] = (uint8_t)(h >> 24), b[21] = (uint8_t)(h >> 16), b[22] = (uint8_t)(h >> 8), b[23] = (uint8_t)h;
    b[24] = 8, b[25] = 2;
    static const char *t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < 33; i += 3) {
        uint32_t v = (uint32_t)b[i] << 16 | (uint32_t)b[i + 1] << 8 | b[i + 2];
        for (int k = 3; k >= 0; k--)
            out[o++] = t[(v >> (6 * k)) & 63];
    }
    out[o] = 0;
}

static int run(const char *body, sdw_gen_request *r, sdw_api_error *e)
{
    memset(e, 0, sizeof *e);
    return sdw_validate_job_request(body, strlen(body), &LIM, r, e);
}

static void expect_400(const char *body, const char *field)
{
    sdw_gen_request r;
    sdw_api_error e;
    assert_int_equal(run(body, &r, &e), -1);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.field, field);
    sdw_gen_request_free(&r);
}

static void test_accepts(void **state)
{
    (void)state;
    char a[64], body[512];
    png_b64(64, 48, a);
    snprintf(body, sizeof body,
             "{\"prompt\":\"p\",\"init_image\":\"data:image/png;base64,%s\",\"mask\":\"%s\",\"strength\":0.5,"
             "\"mask_blur\":4}",
             a, a);
    sdw_gen_request r;
    sdw_api_error e;
    assert_int_equal(run(body, &r, &e), 0);
    assert_int_equal(r.init_image_len, 33);
    assert_int_equal(r.mask_len, 33);
    assert_true(r.strength == 0.5);
    assert_int_equal(r.mask_blur, 4);
    assert_int_equal(r.init_image[1], 'P');
    sdw_gen_request_free(&r);
    /* without images the defaults: no init image, strength 0.75 */
    assert_int_equal(run("{\"prompt\":\"p\"}", &r, &e), 0);
    assert_null(r.init_image);
    assert_true(r.strength == 0.75);
    sdw_gen_request_free(&r);
}

static void test_errors(void **state)
{
    (void)state;
    char a[64], m[64], body[512];
    png_b64(64, 48, a);
    png_b64(64, 64, m);
    snprintf(body, sizeof body, "{\"prompt\":\"p\",\"init_image\":\"%s\",\"mask\":\"%s\"}", a, m);
    expect_400(body, "mask"); /* another size */
    snprintf(body, sizeof body, "{\"prompt\":\"p\",\"mask\":\"%s\"}", m);
    expect_400(body, "mask"); /* no init image */
    expect_400("{\"prompt\":\"p\",\"init_image\":\"!!!!\"}", "init_image");
    expect_400("{\"prompt\":\"p\",\"init_image\":\"aGVsbG8gd29ybGQsIG5vdCBhIHBuZw==\"}", "init_image");
    expect_400("{\"prompt\":\"p\",\"init_image\":42}", "init_image");
    snprintf(body, sizeof body, "{\"prompt\":\"p\",\"init_image\":\"%s\",\"strength\":0}", a);
    expect_400(body, "strength");
    snprintf(body, sizeof body, "{\"prompt\":\"p\",\"init_image\":\"%s\",\"strength\":1.01}", a);
    expect_400(body, "strength");
    snprintf(body, sizeof body, "{\"prompt\":\"p\",\"init_image\":\"%s\",\"strength\":\"x\"}", a);
    expect_400(body, "strength");
    expect_400("{\"prompt\":\"p\",\"mask_blur\":65}", "mask_blur");
    expect_400("{\"prompt\":\"p\",\"mask_blur\":1.5}", "mask_blur");
    png_b64(0, 64, m);
    snprintf(body, sizeof body, "{\"prompt\":\"p\",\"init_image\":\"%s\"}", m);
    expect_400(body, "init_image");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
