/* test_validate.c: POST /v1/jobs request validation: every error class with its HTTP status, code and
 * field, the defaults, the full seed range and the media-type rules. */
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

static int run(const char *body, sdw_gen_request *r, sdw_api_error *e)
{
    memset(e, 0, sizeof *e);
    return sdw_validate_job_request(body, strlen(body), &LIM, r, e);
}

static void test_defaults(void **state)
{
    (void)state;
    sdw_gen_request r;
    sdw_api_error e;
    assert_int_equal(run("{\"prompt\":\"a red fox\"}", &r, &e), 0);
    assert_string_equal(r.prompt, "a red fox");
    assert_string_equal(r.negative_prompt, "");
    assert_int_equal(r.steps, 20);
    assert_true(r.cfg_scale == 7.5);
    assert_int_equal(r.has_seed, 0);
    /* no served model known (default_size 0): the size stays 0 for the supervisor to fill in at dispatch */
    assert_int_equal(r.width, 0);
    assert_int_equal(r.height, 0);
    assert_int_equal(r.sampler, SDW_SAMPLER_EULER);
    assert_int_equal(r.schedule, SDW_SCHEDULE_DISCRETE);
    sdw_gen_request_free(&r);
    sdw_gen_request_free(&r); /* idempotent */
}

/* The default size is the served model's native size: SDXL's 1024 square, and a side given alone keeps the
 * other side at the default. */
static void test_default_size_follows_model(void **state)
{
    (void)state;
    sdw_validate_limits xl = LIM;
    xl.max_height = 1024;
    xl.default_size = 1024;
    sdw_gen_request r;
    sdw_api_error e;
    const char *b = "{\"prompt\":\"a red fox\"}";
    assert_int_equal(sdw_validate_job_request(b, strlen(b), &xl, &r, &e), 0);
    assert_int_equal(r.width, 1024);
    assert_int_equal(r.height, 1024);
    sdw_gen_request_free(&r);
    b = "{\"prompt\":\"a red fox\",\"height\":512}";
    assert_int_equal(sdw_validate_job_request(b, strlen(b), &xl, &r, &e), 0);
    assert_int_equal(r.width, 1024);
    assert_int_equal(r.height, 512);
    sdw_gen_request_free(&r);
    xl.default_size = 768;
    b = "{\"prompt\":\"a red fox\",\"width\":null}";
    assert_int_equal(sdw_validate_job_request(b, strlen(b), &xl, &r, &e), 0);
    assert_int_equal(r.width, 768);
    assert_int_equal(r.height, 768);
    sdw_gen_request_free(&r);
}

static void test_all_fields(void **state)
{
    (void)state;
    sdw_gen_request r;
    sdw_api_error e;
    assert_int_equal(
        run("{\"prompt\":\"p\",\"negative_prompt\":\"blurry\",\"steps\":150,\"guidance_scale\":0,"
            "\"seed\":42,\"width\":1024,\"height\":64,\"sampler\":\"dpmpp_2m\",\"schedule\":\"karras\"}",
            &r, &e),
        0);
    assert_string_equal(r.negative_prompt, "blurry");
    assert_int_equal(r.steps, 150);
    assert_true(r.cfg_scale == 0.0);
    assert_int_equal(r.has_seed, 1);
    assert_true(r.seed == 42);
    assert_int_equal(r.width, 1024);
    assert_int_equal(r.height, 64);
    assert_int_equal(r.sampler, SDW_SAMPLER_DPMPP_2M);
    assert_int_equal(r.schedule, SDW_SCHEDULE_KARRAS);
    sdw_gen_request_free(&r);

    /* null means "use the default" for optional fields; a real number is fine for guidance_scale */
    assert_int_equal(run("{\"prompt\":\"p\",\"seed\":null,\"steps\":null,\"guidance_scale\":12.25}", &r, &e),
                     0);
    assert_int_equal(r.has_seed, 0);
    assert_int_equal(r.steps, 20);
    assert_true(r.cfg_scale == 12.25);
    sdw_gen_request_free(&r);
}

static void test_seed_range(void **state)
{
    (void)state;
    sdw_gen_request r;
    sdw_api_error e;
    /* 0..2^63-1, what jansson's integers hold; a longer literal is not JSON this parser reads */
    assert_int_equal(run("{\"prompt\":\"p\",\"seed\":18446744073709551615}", &r, &e), -1);
    assert_string_equal(e.code, "invalid_json");
    assert_non_null(strstr(e.message, "too big integer"));
    assert_int_equal(run("{\"prompt\":\"p\",\"seed\":9223372036854775808}", &r, &e), -1);
    assert_string_equal(e.code, "invalid_json");
    assert_int_equal(run("{\"prompt\":\"p\",\"seed\":9223372036854775807}", &r, &e), 0);
    assert_true(r.seed == 9223372036854775807ull);
    sdw_gen_request_free(&r);
    assert_int_equal(run("{\"prompt\":\"p\",\"seed\":0}", &r, &e), 0);
    assert_true(r.seed == 0 && r.has_seed);
    sdw_gen_request_free(&r);
    /* a big integer elsewhere in the document does not disturb the prompt */
    assert_int_equal(run("{\"prompt\":\"99999999999999999999\",\"seed\":1}", &r, &e), 0);
    assert_string_equal(r.prompt, "99999999999999999999");
    sdw_gen_request_free(&r);
}

typedef struct {
    const char *body;
    int status;
    const char *code;
    const char *field; /* "" = none */
} err_case;

static const err_case ERRS[] = {
    /* malformed */
    {"", 400, "invalid_json", ""},
    {"{", 400, "invalid_json", ""},
    {"{\"prompt\":\"a\",}", 400, "invalid_json", ""},
    {"{\"prompt\":\"a\"} trailing", 400, "invalid_json", ""},
    {"[\"prompt\"]", 400, "invalid_json", ""},
    {"\"just a string\"", 400, "invalid_json", ""},
    {"{\"prompt\":\"a\",\"prompt\":\"b\"}", 400, "invalid_json", ""},
    {"{\"prompt\":\"a\",\"steps\":0123}", 400, "invalid_json", ""},
    {"{\"prompt\":\"a\",\"guidance_scale\":1e999}", 400, "invalid_json", ""},
    /* unknown field */
    {"{\"prompt\":\"a\",\"cfg_scale\":7}", 400, "unknown_field", ""},
    {"{\"Prompt\":\"a\"}", 400, "unknown_field", ""},
    /* missing / mistyped */
    {"{}", 400, "missing_field", "prompt"},
    {"{\"prompt\":null}", 400, "missing_field", "prompt"},
    {"{\"prompt\":42}", 400, "invalid_type", "prompt"},
    {"{\"prompt\":99999999999999999999}", 400, "invalid_json", ""},
    {"{\"prompt\":[\"a\"]}", 400, "invalid_type", "prompt"},
    {"{\"prompt\":\"a\",\"negative_prompt\":false}", 400, "invalid_type", "negative_prompt"},
    {"{\"prompt\":\"a\",\"steps\":\"20\"}", 400, "invalid_type", "steps"},
    {"{\"prompt\":\"a\",\"steps\":20.5}", 400, "invalid_type", "steps"},
    {"{\"prompt\":\"a\",\"steps\":20.0}", 400, "invalid_type", "steps"},
    {"{\"prompt\":\"a\",\"guidance_scale\":\"7\"}", 400, "invalid_type", "guidance_scale"},
    {"{\"prompt\":\"a\",\"seed\":1.5}", 400, "invalid_type", "seed"},
    {"{\"prompt\":\"a\",\"seed\":\"42\"}", 400, "invalid_type", "seed"},
    {"{\"prompt\":\"a\",\"width\":true}", 400, "invalid_type", "width"},
    {"{\"prompt\":\"a\",\"height\":{}}", 400, "invalid_type", "height"},
    {"{\"prompt\":\"a\",\"sampler\":1}", 400, "invalid_type", "sampler"},
    {"{\"prompt\":\"a\",\"schedule\":[]}", 400, "invalid_type", "schedule"},
    /* out of range */
    {"{\"prompt\":\"\"}", 400, "out_of_range", "prompt"},
    {"{\"prompt\":\"  \\n\\t \"}", 400, "out_of_range", "prompt"},
    {"{\"prompt\":\"a\",\"steps\":0}", 400, "out_of_range", "steps"},
    {"{\"prompt\":\"a\",\"steps\":151}", 400, "out_of_range", "steps"},
    {"{\"prompt\":\"a\",\"steps\":-3}", 400, "out_of_range", "steps"},
    {"{\"prompt\":\"a\",\"steps\":99999999999999999999}", 400, "invalid_json", ""},
    {"{\"prompt\":\"a\",\"guidance_scale\":-0.5}", 400, "out_of_range", "guidance_scale"},
    {"{\"prompt\":\"a\",\"guidance_scale\":30.01}", 400, "out_of_range", "guidance_scale"},
    {"{\"prompt\":\"a\",\"seed\":-1}", 400, "out_of_range", "seed"},
    {"{\"prompt\":\"a\",\"seed\":-9223372036854775808}", 400, "out_of_range", "seed"},
    /* integers beyond int64 are refused by the parser, whatever the field */
    {"{\"prompt\":\"a\",\"seed\":9223372036854775808}", 400, "invalid_json", ""},
    {"{\"prompt\":\"a\",\"seed\":18446744073709551616}", 400, "invalid_json", ""},
    {"{\"prompt\":\"a\",\"seed\":-9223372036854775809}", 400, "invalid_json", ""},
    {"{\"prompt\":\"a\",\"width\":56}", 400, "out_of_range", "width"},
    {"{\"prompt\":\"a\",\"width\":1032}", 400, "out_of_range", "width"},
    {"{\"prompt\":\"a\",\"width\":513}", 400, "out_of_range", "width"},
    {"{\"prompt\":\"a\",\"height\":776}", 400, "out_of_range", "height"},
    {"{\"prompt\":\"a\",\"height\":0}", 400, "out_of_range", "height"},
    /* unknown names and bad characters */
    {"{\"prompt\":\"a\",\"sampler\":\"unipc\"}", 400, "invalid_value", "sampler"},
    {"{\"prompt\":\"a\",\"schedule\":\"linear\"}", 400, "invalid_value", "schedule"},
    {"{\"prompt\":\"a\\u0000b\"}", 400, "invalid_value", "prompt"},
    {"{\"prompt\":\"\\u0000int0000000000000000:5\"}", 400, "invalid_value", "prompt"},
    /* SDXL micro-conditioning: two integers each, sizes >= 1, crop >= 0, at most 16384 */
    {"{\"prompt\":\"a\",\"original_size\":1024}", 400, "invalid_type", "original_size"},
    {"{\"prompt\":\"a\",\"original_size\":[1024]}", 400, "invalid_type", "original_size"},
    {"{\"prompt\":\"a\",\"original_size\":[1024,768,1]}", 400, "invalid_type", "original_size"},
    {"{\"prompt\":\"a\",\"original_size\":[1024.5,768]}", 400, "invalid_type", "original_size"},
    {"{\"prompt\":\"a\",\"original_size\":{\"width\":1024,\"height\":768}}", 400, "invalid_type",
     "original_size"},
    {"{\"prompt\":\"a\",\"original_size\":[0,768]}", 400, "out_of_range", "original_size"},
    {"{\"prompt\":\"a\",\"original_size\":[1024,16385]}", 400, "out_of_range", "original_size"},
    {"{\"prompt\":\"a\",\"crops_coords_top_left\":[-1,0]}", 400, "out_of_range", "crops_coords_top_left"},
    {"{\"prompt\":\"a\",\"crops_coords_top_left\":\"0,0\"}", 400, "invalid_type", "crops_coords_top_left"},
    {"{\"prompt\":\"a\",\"target_size\":[64,\"64\"]}", 400, "invalid_type", "target_size"},
    {"{\"prompt\":\"a\",\"target_size\":[99999999999,64]}", 400, "out_of_range", "target_size"},
    {"{\"prompt\":\"a\",\"crop_coords_top_left\":[0,0]}", 400, "unknown_field", ""},
};

static void test_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof ERRS / sizeof *ERRS; i++) {
        const err_case *c = &ERRS[i];
        sdw_gen_request r;
        sdw_api_error e;
        int rc = run(c->body, &r, &e);
        if (rc != -1 || e.status != c->status || strcmp(e.code, c->code) || strcmp(e.field, c->field))
            fail_msg("case %zu %s: rc %d status %d code '%s' field '%s' message '%s'; want %d %s '%s'", i,
                     c->body, rc, e.status, e.code, e.field, e.message, c->status, c->code, c->field);
        assert_true(e.message[0] != '\0');
        assert_null(r.prompt);
    }
}

/* The SDXL micro-conditioning fields land in the request in the engine's terms: sizes [width, height],
 * the crop [top, left]; absent or null leaves 0 (the reference defaults). */
static void test_sdxl_micro_conditioning(void **state)
{
    (void)state;
    sdw_gen_request r;
    sdw_api_error e;
    assert_int_equal(run("{\"prompt\":\"a\",\"original_size\":[1024,768],\"crops_coords_top_left\":[16,"
                         "32],\"target_size\":[640,512]}",
                         &r, &e),
                     0);
    assert_int_equal(r.orig_width, 1024);
    assert_int_equal(r.orig_height, 768);
    assert_int_equal(r.crop_top, 16);
    assert_int_equal(r.crop_left, 32);
    assert_int_equal(r.target_width, 640);
    assert_int_equal(r.target_height, 512);
    sdw_gen_request_free(&r);
    assert_int_equal(run("{\"prompt\":\"a\",\"original_size\":null,\"crops_coords_top_left\":[0,0],"
                         "\"target_size\":[16384,1]}",
                         &r, &e),
                     0);
    assert_int_equal(r.orig_width, 0);
    assert_int_equal(r.orig_height, 0);
    assert_int_equal(r.crop_top, 0);
    assert_int_equal(r.crop_left, 0);
    assert_int_equal(r.target_width, 16384);
    assert_int_equal(r.target_height, 1);
    sdw_gen_request_free(&r);
    /* the message names the field and the expected shape */
    assert_int_equal(run("{\"prompt\":\"a\",\"crops_coords_top_left\":[1]}", &r, &e), -1);
    assert_non_null(strstr(e.message, "[top, left]"));
    assert_int_equal(run("{\"prompt\":\"a\",\"original_size\":[1,2,3]}", &r, &e), -1);
    assert_non_null(strstr(e.message, "[width, height]"));
}

static void test_messages(void **state)
{
    (void)state;
    sdw_gen_request r;
    sdw_api_error e;
    assert_int_equal(run("{\"prompt\":\"a\",\"cfg_scale\":7}", &r, &e), -1);
    assert_non_null(strstr(e.message, "cfg_scale"));
    assert_int_equal(run("{\"prompt\":\"a\",\"sampler\":\"unipc\"}", &r, &e), -1);
    assert_non_null(strstr(e.message, "unipc"));
    assert_non_null(strstr(e.message, "dpmpp_2m"));
    assert_int_equal(run("{\"prompt\":\"a\",\n\"steps\":}", &r, &e), -1);
    assert_non_null(strstr(e.message, "line 2"));
    assert_int_equal(run("{\"prompt\":\"a\",\"width\":513}", &r, &e), -1);
    assert_non_null(strstr(e.message, "multiple of 8"));
}

static void test_prompt_length(void **state)
{
    (void)state;
    char *body = malloc(SDW_PROMPT_MAX_BYTES + 64);
    sdw_gen_request r;
    sdw_api_error e;
    sdw_validate_limits big = LIM;
    big.max_body_bytes = 1 << 20;
    int n = sprintf(body, "{\"prompt\":\"");
    memset(body + n, 'x', SDW_PROMPT_MAX_BYTES);
    strcpy(body + n + SDW_PROMPT_MAX_BYTES, "\"}");
    assert_int_equal(sdw_validate_job_request(body, strlen(body), &big, &r, &e), 0);
    assert_int_equal(strlen(r.prompt), SDW_PROMPT_MAX_BYTES);
    sdw_gen_request_free(&r);
    memset(body + n, 'x', SDW_PROMPT_MAX_BYTES + 1);
    strcpy(body + n + SDW_PROMPT_MAX_BYTES + 1, "\"}");
    assert_int_equal(sdw_validate_job_request(body, strlen(body), &big, &r, &e), -1);
    assert_string_equal(e.code, "out_of_range");
    assert_string_equal(e.field, "prompt");
    free(body);
}

static void test_body_too_large(void **state)
{
    (void)state;
    size_t len = LIM.max_body_bytes + 1;
    char *body = malloc(len);
    memset(body, ' ', len);
    body[0] = '{';
    body[len - 1] = '}';
    sdw_gen_request r;
    sdw_api_error e;
    assert_int_equal(sdw_validate_job_request(body, len, &LIM, &r, &e), -1);
    assert_int_equal(e.status, 413);
    assert_string_equal(e.code, "body_too_large");
    assert_string_equal(e.field, "");
    free(body);
}

static void test_default_exceeds_limit(void **state)
{
    (void)state;
    sdw_validate_limits small = LIM;
    small.max_width = 256;
    small.default_size = 512;
    sdw_gen_request r;
    sdw_api_error e;
    const char *b = "{\"prompt\":\"a\"}";
    assert_int_equal(sdw_validate_job_request(b, strlen(b), &small, &r, &e), -1);
    assert_string_equal(e.field, "width");
    b = "{\"prompt\":\"a\",\"width\":256}";
    assert_int_equal(sdw_validate_job_request(b, strlen(b), &small, &r, &e), 0);
    sdw_gen_request_free(&r);
}

static void test_content_type(void **state)
{
    (void)state;
    sdw_api_error e;
    static const char *ok[] = {"application/json", "Application/JSON", "application/json; charset=utf-8",
                               "application/json;charset=\"UTF-8\"", " application/json ; foo=bar"};
    static const char *bad[] = {"text/plain",
                                "application/jsonx",
                                "application/x-www-form-urlencoded",
                                "application/json; charset=latin1",
                                "multipart/form-data; boundary=x",
                                ""};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        if (sdw_validate_content_type(ok[i], strlen(ok[i]), &e) != 0)
            fail_msg("'%s' refused: %s", ok[i], e.message);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&e, 0, sizeof e);
        if (sdw_validate_content_type(bad[i], strlen(bad[i]), &e) != -1) fail_msg("'%s' accepted", bad[i]);
        assert_int_equal(e.status, 415);
        assert_string_equal(e.code, "unsupported_media_type");
    }
    assert_int_equal(sdw_validate_content_type(NULL, 0, &e), -1);
    assert_int_equal(e.status, 415);
}

static void test_names(void **state)
{
    (void)state;
    const char *s[] = {"euler", "euler_a", "ddim", "dpmpp_2m", "lcm"};
    for (int i = 0; i < 5; i++)
        assert_true(sdw_sampler_parse(s[i]) >= 0);
    assert_true(sdw_sampler_parse("unipc") < 0); /* stable-diffusion.cpp has none to match */
    assert_true(sdw_sampler_parse(NULL) < 0);
    assert_true(sdw_schedule_parse("discrete") >= 0);
    assert_true(sdw_schedule_parse("karras") >= 0);
    assert_true(sdw_schedule_parse("polyexponential") < 0);
}

/* Seeded mutations of valid bodies (byte flips, insertions of JSON-significant characters, truncation,
 * long digit runs): every result is either a request or a well-formed error, and nothing leaks (ASan). */
static void test_mutations(void **state)
{
    (void)state;
    static const char *seeds[] = {
        "{\"prompt\":\"a red fox\",\"steps\":20,\"seed\":9223372036854775807,\"width\":512}",
        "{\"prompt\":\"x\",\"negative_prompt\":\"y\",\"guidance_scale\":7.5,\"sampler\":\"lcm\",\"schedule\":"
        "\"karras\"}",
        "{\"prompt\":\"\\u00e9\\n\\\"q\\\"\",\"seed\":-9223372036854775809,\"height\":64}",
    };
    static const char inserts[] = "{}[]\",:\\-+.eE0123456789 \x00\xff\xc3";
    uint64_t rng = 0x5DEECE66Dull;
    char buf[512];
    int ok = 0, err = 0;
    for (int it = 0; it < 30000; it++) {
        const char *src = seeds[it % 3];
        size_t len = strlen(src);
        memcpy(buf, src, len);
        int muts = 1 + (int)((rng >> 33) % 4);
        for (int m = 0; m < muts; m++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = (size_t)((rng >> 33) % (len ? len : 1));
            unsigned op = (unsigned)(rng >> 60) % 4;
            char c = inserts[(rng >> 40) % (sizeof inserts - 1)];
            if (op == 0 && len) {
                buf[pos] = c;
            } else if (op == 1 && len + 1 < sizeof buf) {
                memmove(buf + pos + 1, buf + pos, len - pos);
                buf[pos] = c;
                len++;
            } else if (op == 2) {
                len = pos;
            } else if (len + 24 < sizeof buf) {
                memmove(buf + pos + 23, buf + pos, len - pos);
                memset(buf + pos, '9', 23);
                len += 23;
            }
        }
        sdw_gen_request r;
        sdw_api_error e;
        memset(&e, 0, sizeof e);
        if (sdw_validate_job_request(buf, len, &LIM, &r, &e) == 0) {
            assert_non_null(r.prompt);
            assert_true(r.steps >= 1 && r.steps <= LIM.max_steps);
            /* 0: left to the model (LIM has no default_size) */
            assert_true(r.width == 0 || (r.width % 8 == 0 && r.width >= 64 && r.width <= LIM.max_width));
            sdw_gen_request_free(&r);
            ok++;
        } else {
            assert_true(e.status == 400 || e.status == 413);
            assert_true(e.code[0] && e.message[0]);
            assert_null(r.prompt);
            err++;
        }
    }
    assert_true(ok > 0 && err > 0);
}

/* preview_every: the configured default when absent, 0 or the configured minimum..150 otherwise. */
static void test_preview_every(void **state)
{
    (void)state;
    sdw_validate_limits lim = LIM;
    lim.preview_every_default = 5;
    lim.preview_every_min = 2;
    sdw_gen_request r;
    sdw_api_error e;
    static const struct {
        const char *body;
        int ok, want;
    } cases[] = {
        {"{\"prompt\":\"p\"}", 1, 5},
        {"{\"prompt\":\"p\",\"preview_every\":null}", 1, 5},
        {"{\"prompt\":\"p\",\"preview_every\":0}", 1, 0},
        {"{\"prompt\":\"p\",\"preview_every\":2}", 1, 2},
        {"{\"prompt\":\"p\",\"preview_every\":150}", 1, 150},
        {"{\"prompt\":\"p\",\"preview_every\":1}", 0, 0},
        {"{\"prompt\":\"p\",\"preview_every\":151}", 0, 0},
        {"{\"prompt\":\"p\",\"preview_every\":-1}", 0, 0},
        {"{\"prompt\":\"p\",\"preview_every\":\"5\"}", 0, 0},
        {"{\"prompt\":\"p\",\"preview_every\":2.5}", 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        memset(&e, 0, sizeof e);
        int rc = sdw_validate_job_request(cases[i].body, strlen(cases[i].body), &lim, &r, &e);
        if (cases[i].ok) {
            assert_int_equal(rc, 0);
            assert_int_equal(r.preview_every, cases[i].want);
        } else {
            assert_int_equal(rc, -1);
            assert_int_equal(e.status, 400);
            assert_string_equal(e.field, "preview_every");
        }
        sdw_gen_request_free(&r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_default_size_follows_model),
        cmocka_unit_test(test_sdxl_micro_conditioning),
        cmocka_unit_test(test_all_fields),
        cmocka_unit_test(test_seed_range),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_prompt_length),
        cmocka_unit_test(test_body_too_large),
        cmocka_unit_test(test_default_exceeds_limit),
        cmocka_unit_test(test_content_type),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_preview_every),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
