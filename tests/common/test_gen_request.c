/* test_gen_request.c: the generation request (defaults, deep copy, free of a partial request), its job-frame
 * round trip driven by the field table, and the sampler/schedule/prediction names table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "frame.h"
#include "gen_names.h"
#include "gen_request.h"

/* Gives every field of the table a value different from its default (and from the other fields), so a
 * field the codec forgot shows up in the comparison. */
static void fill_every_field(sdw_gen_request *r)
{
    int n;
    const sdw_gen_field *fl = sdw_gen_request_fields(&n);
    for (int i = 0; i < n; i++) {
        char *m = (char *)r + fl[i].off;
        switch (fl[i].kind) {
        case SDW_GF_STR: {
            char buf[64];
            snprintf(buf, sizeof buf, "%s: \"value\" ünï %d", fl[i].key, i);
            assert_int_equal(sdw_gen_request_set_str((char **)m, buf), 0);
            break;
        }
        case SDW_GF_INT:
            *(int *)m = 1000 + 8 * i;
            break;
        case SDW_GF_U64:
            *(uint64_t *)m = UINT64_MAX - (uint64_t)i;
            break;
        case SDW_GF_DOUBLE:
            *(double *)m = 0.25 + i;
            break;
        case SDW_GF_BOOL:
            *(int *)m = 1;
            break;
        case SDW_GF_NAME:
            *(int *)m = sdw_names_count(fl[i].names) - 1; /* the last row: never the default */
            break;
        case SDW_GF_BYTES: {
            uint8_t *b = malloc(5);
            memcpy(b, "\0\1\2\3\4", 5);
            *(uint8_t **)m = b;
            *(size_t *)((char *)r + fl[i].len_off) = 5;
            break;
        }
        }
    }
}

/* Field-by-field equality over the table. */
static void assert_requests_equal(const sdw_gen_request *a, const sdw_gen_request *b)
{
    int n;
    const sdw_gen_field *fl = sdw_gen_request_fields(&n);
    for (int i = 0; i < n; i++) {
        const char *x = (const char *)a + fl[i].off, *y = (const char *)b + fl[i].off;
        switch (fl[i].kind) {
        case SDW_GF_STR:
            assert_string_equal(*(char *const *)x, *(char *const *)y);
            break;
        case SDW_GF_INT:
        case SDW_GF_BOOL:
        case SDW_GF_NAME:
            assert_int_equal(*(const int *)x, *(const int *)y);
            break;
        case SDW_GF_U64:
            assert_true(*(const uint64_t *)x == *(const uint64_t *)y);
            break;
        case SDW_GF_DOUBLE:
            assert_true(*(const double *)x == *(const double *)y);
            break;
        case SDW_GF_BYTES: {
            size_t la = *(const size_t *)((const char *)a + fl[i].len_off);
            size_t lb = *(const size_t *)((const char *)b + fl[i].len_off);
            assert_int_equal(la, lb);
            assert_memory_equal(*(void *const *)x, *(void *const *)y, la);
            break;
        }
        }
    }
}

static int decode_one(const msgpack_sbuffer *sb, sdw_frame *f, char *err, size_t errlen)
{
    sdw_frame_reader *r = sdw_frame_reader_new(SDW_FRAME_MAX_SMALL);
    assert_non_null(r);
    assert_int_equal(sdw_frame_reader_feed(r, sb->data, sb->size), sb->size);
    int rc = sdw_frame_reader_next(r, f, err, errlen);
    sdw_frame_reader_free(r);
    return rc;
}

static void test_defaults(void **state)
{
    (void)state;
    sdw_gen_request r;
    sdw_gen_request_init(&r);
    assert_null(r.prompt);
    assert_int_equal(r.steps, 20);
    assert_true(r.cfg_scale == 7.5);
    assert_int_equal(r.sampler, SDW_SAMPLER_EULER);
    assert_int_equal(r.schedule, SDW_SCHEDULE_DISCRETE);
    assert_int_equal(r.has_seed, 0);
    sdw_gen_request_free(&r);
    sdw_gen_request_free(&r); /* twice is fine */
}

static void test_frame_round_trip_every_field(void **state)
{
    (void)state;
    sdw_gen_request a;
    sdw_gen_request_init(&a);
    fill_every_field(&a);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(sdw_frame_job(&sb, 77, &a), 0);
    sdw_frame f;
    char err[256] = "";
    if (decode_one(&sb, &f, err, sizeof err) != 1) fail_msg("%s", err);
    assert_int_equal(f.type, SDW_FRAME_JOB);
    assert_int_equal(f.job, 77);
    assert_requests_equal(&a, &f.u.job);
    assert_int_equal(f.u.job.has_seed, 1);
    /* the request can be moved out of the frame and outlive it */
    sdw_gen_request moved = f.u.job;
    sdw_gen_request_init(&f.u.job);
    sdw_frame_free(&f);
    assert_requests_equal(&a, &moved);
    sdw_gen_request_free(&moved);
    sdw_gen_request_free(&a);
    msgpack_sbuffer_destroy(&sb);
}

static void test_copy_and_partial_free(void **state)
{
    (void)state;
    sdw_gen_request a, b;
    sdw_gen_request_init(&a);
    fill_every_field(&a);
    assert_int_equal(sdw_gen_request_copy(&b, &a), 0);
    assert_requests_equal(&a, &b);
    assert_ptr_not_equal(a.prompt, b.prompt);
    sdw_gen_request_free(&a);
    assert_null(a.prompt);
    assert_int_equal(a.steps, 20); /* freed means re-initialised */
    sdw_gen_request_free(&b);

    /* partially filled: one string set, the other NULL */
    sdw_gen_request p;
    sdw_gen_request_init(&p);
    assert_int_equal(sdw_gen_request_set_str(&p.prompt, "only the prompt"), 0);
    assert_int_equal(sdw_gen_request_copy(&b, &p), 0);
    assert_null(b.negative_prompt);
    assert_string_equal(b.prompt, "only the prompt");
    sdw_gen_request_free(&b);
    sdw_gen_request_free(&p);

    /* a zeroed request frees too */
    sdw_gen_request z;
    memset(&z, 0, sizeof z);
    sdw_gen_request_free(&z);
}

static void test_frame_refuses_bad_names(void **state)
{
    (void)state;
    sdw_gen_request a;
    sdw_gen_request_init(&a);
    a.prompt = "x";
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    /* a value outside the table does not encode */
    a.sampler = (sdw_sampler)SDW_SAMPLER__COUNT;
    assert_int_equal(sdw_frame_job(&sb, 1, &a), -1);
    assert_int_equal(sb.size, 0);
    a.sampler = SDW_SAMPLER_EULER;
    a.schedule = (sdw_schedule)-1;
    assert_int_equal(sdw_frame_job(&sb, 1, &a), -1);
    a.schedule = SDW_SCHEDULE_DISCRETE;
    assert_int_equal(sdw_frame_job(&sb, 1, &a), 0);

    /* an unknown name on the wire is a protocol violation naming the field */
    const char *p = memmem(sb.data, sb.size, "euler", 5);
    assert_non_null(p);
    ((char *)p)[0] = 'X';
    sdw_frame f;
    char err[256] = "";
    assert_int_equal(decode_one(&sb, &f, err, sizeof err), -1);
    assert_non_null(strstr(err, "sampler"));
    assert_non_null(strstr(err, "Xuler"));
    msgpack_sbuffer_destroy(&sb);
}

static void test_frame_missing_field(void **state)
{
    (void)state;
    sdw_gen_request a;
    sdw_gen_request_init(&a);
    a.prompt = "x";
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(sdw_frame_job(&sb, 1, &a), 0);
    /* rename "steps" to "stepz": a required field goes missing after strings were already decoded */
    char *p = memmem(sb.data, sb.size, "steps", 5);
    assert_non_null(p);
    p[4] = 'z';
    sdw_frame f;
    char err[256] = "";
    assert_int_equal(decode_one(&sb, &f, err, sizeof err), -1);
    assert_non_null(strstr(err, "'steps' is missing"));
    assert_null(f.u.job.prompt); /* nothing left to free */
    msgpack_sbuffer_destroy(&sb);
}

/* precision rides the job frame: bf16 arrives as bf16; a frame without the key (an older supervisor) means
 * fp32; the names parse and print exactly. */
static void test_frame_precision(void **state)
{
    (void)state;
    sdw_gen_request a;
    sdw_gen_request_init(&a);
    assert_int_equal(a.precision, SDW_PRECISION_FP32);
    a.prompt = "x";
    a.precision = SDW_PRECISION_BF16;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(sdw_frame_job(&sb, 9, &a), 0);
    sdw_frame f;
    char err[256] = "";
    if (decode_one(&sb, &f, err, sizeof err) != 1) fail_msg("%s", err);
    assert_int_equal(f.u.job.precision, SDW_PRECISION_BF16);
    sdw_frame_free(&f);

    /* rename the key: the decoder no longer finds it and keeps the default */
    char *p = memmem(sb.data, sb.size, "precision", 9);
    assert_non_null(p);
    p[0] = 'X';
    if (decode_one(&sb, &f, err, sizeof err) != 1) fail_msg("%s", err);
    assert_int_equal(f.u.job.precision, SDW_PRECISION_FP32);
    sdw_frame_free(&f);
    msgpack_sbuffer_destroy(&sb);

    assert_int_equal(sdw_precision_parse("fp32"), SDW_PRECISION_FP32);
    assert_int_equal(sdw_precision_parse("bf16"), SDW_PRECISION_BF16);
    assert_int_equal(sdw_precision_parse("BF16"), -1);
    assert_int_equal(sdw_precision_parse("fp16"), -1);
    assert_int_equal(sdw_precision_parse(""), -1);
    assert_int_equal(sdw_precision_parse(NULL), -1);
    assert_string_equal(sdw_precision_name(SDW_PRECISION_FP32), "fp32");
    assert_string_equal(sdw_precision_name(SDW_PRECISION_BF16), "bf16");
    assert_null(sdw_precision_name(2));
    assert_null(sdw_precision_name(-1));
}

static void test_names_table(void **state)
{
    (void)state;
    for (int k = 0; k < SDW_NAMES__COUNT; k++) {
        assert_true(sdw_names_count((sdw_names_kind)k) > 0);
        for (int i = 0; i < sdw_names_count((sdw_names_kind)k); i++) {
            const sdw_name_row *row = sdw_names_row((sdw_names_kind)k, i);
            assert_non_null(row);
            assert_int_equal(sdw_names_parse((sdw_names_kind)k, row->name), i);
            assert_string_equal(sdw_names_name((sdw_names_kind)k, i), row->name);
            assert_string_equal(sdw_names_display((sdw_names_kind)k, i), row->display);
            /* every alias parses to its row */
            char buf[128];
            snprintf(buf, sizeof buf, "%s", row->aliases);
            for (char *save, *a = strtok_r(buf, "|", &save); a; a = strtok_r(NULL, "|", &save))
                assert_int_equal(sdw_names_parse((sdw_names_kind)k, a), i);
        }
        assert_null(sdw_names_row((sdw_names_kind)k, -1));
        assert_null(sdw_names_row((sdw_names_kind)k, sdw_names_count((sdw_names_kind)k)));
        assert_string_equal(sdw_names_name((sdw_names_kind)k, 999), "?");
        assert_int_equal(sdw_names_parse((sdw_names_kind)k, ""), -1);
        assert_int_equal(sdw_names_parse((sdw_names_kind)k, NULL), -1);
    }
    /* the first names the API accepted keep their values; A1111's display names, the peer's spellings and
     * other letter cases resolve too */
    const char *samplers[] = {"euler", "euler_a", "ddim", "dpmpp_2m", "lcm"};
    for (int i = 0; i < 5; i++)
        assert_int_equal(sdw_sampler_parse(samplers[i]), i);
    assert_int_equal(sdw_sampler_parse("Euler a"), SDW_SAMPLER_EULER_A);
    assert_int_equal(sdw_sampler_parse("EULER"), SDW_SAMPLER_EULER);
    assert_int_equal(sdw_sampler_parse("dpm++2s_a"), SDW_SAMPLER_DPMPP_2S_A);
    assert_int_equal(sdw_sampler_parse("DPM++ 2M SDE"), SDW_SAMPLER_DPMPP_2M_SDE);
    assert_int_equal(sdw_sampler_parse("unipc"), -1);
    assert_int_equal(sdw_schedule_parse("normal"), SDW_SCHEDULE_DISCRETE);
    assert_int_equal(sdw_schedule_parse("karras"), SDW_SCHEDULE_KARRAS);
    assert_int_equal(sdw_schedule_parse("cosine"), -1);
    assert_string_equal(sdw_names_display(SDW_NAMES_SAMPLER, SDW_SAMPLER_EULER_A), "Euler a");
    assert_string_equal(sdw_names_display(SDW_NAMES_SAMPLER, SDW_SAMPLER_DPMPP_2M), "DPM++ 2M");
    assert_string_equal(sdw_names_display(SDW_NAMES_SCHEDULE, SDW_SCHEDULE_DISCRETE), "Uniform");
    assert_string_equal(sdw_names_display(SDW_NAMES_SCHEDULE, SDW_SCHEDULE_KARRAS), "Karras");
    /* aliases: diffusers' prediction_type spellings */
    assert_int_equal(sdw_prediction_parse("epsilon"), SDW_PREDICTION_EPS);
    assert_int_equal(sdw_prediction_parse("v_prediction"), SDW_PREDICTION_V);
    assert_string_equal(sdw_prediction_name(SDW_PREDICTION_V), "v");

    char list[512];
    assert_string_equal(
        sdw_names_list(SDW_NAMES_SAMPLER, ", ", NULL, list, sizeof list),
        "euler, euler_a, ddim, dpmpp_2m, lcm, heun, dpm2, dpmpp_2s_a, dpmpp_2m_sde, dpmpp_2m_v2, "
        "ipndm, ipndm_v, lms, ddim_trailing, tcd, euler_cfg_pp, euler_a_cfg_pp, res_multistep, "
        "res_2s, er_sde, euler_ge, dpmpp_2m_sde_bt");
    assert_string_equal(sdw_names_list(SDW_NAMES_PREDICTION, ", ", " or ", list, sizeof list),
                        "auto, eps or v");
    assert_string_equal(sdw_names_list(SDW_NAMES_SCHEDULE, " | ", NULL, list, 8), "discret"); /* truncated */
    assert_string_equal(sdw_names_kind_name(SDW_NAMES_SCHEDULE), "schedule");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_frame_round_trip_every_field),
        cmocka_unit_test(test_copy_and_partial_free),
        cmocka_unit_test(test_frame_refuses_bad_names),
        cmocka_unit_test(test_frame_missing_field),
        cmocka_unit_test(test_frame_precision),
        cmocka_unit_test(test_names_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
