/* test_frame.c: the frame codec: round trips of every type, split and merged feeds, size limits, protocol
 * violations, and a seeded mutation loop that must never crash nor decode a frame that does not re-encode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "frame.h"

static const uint8_t png_bytes[] = {0x89, 'P', 'N', 'G',  '\r', '\n', 0x1a, '\n',
                                    0,    0,   0,   0x0d, 'I',  'H',  'D',  'R'};

/* One encoded instance of every frame type, in type order. */
static void encode_all(msgpack_sbuffer *sb, size_t *offsets)
{
    sdw_gen_request jp;
    sdw_gen_request_init(&jp);
    jp.prompt = "a red fox, \"quoted\" ünïcode";
    jp.negative_prompt = "";
    jp.steps = 20;
    jp.cfg_scale = 7.5;
    jp.seed = UINT64_MAX - 5;
    jp.width = 512;
    jp.height = 768;
    jp.sampler = SDW_SAMPLER_EULER_A;
    jp.schedule = SDW_SCHEDULE_KARRAS;
    jp.orig_width = 2048;
    jp.orig_height = 1536;
    jp.crop_top = 16;
    jp.crop_left = 32;
    jp.target_width = 1024;
    jp.target_height = 768;
    int i = 0;
#define ADD(call)                                                                                            \
    do {                                                                                                     \
        offsets[i++] = sb->size;                                                                             \
        assert_int_equal(call, 0);                                                                           \
    } while (0)
    ADD(sdw_frame_hello(sb, 4242, "cpu:0-1", "loading"));
    ADD(sdw_frame_ready(sb, "sd1", "eps", "0123456789", "randsd15", 12.25, 512, 1));
    ADD(sdw_frame_started(sb, 7));
    ADD(sdw_frame_progress(sb, 7, 3, 20, 1.5));
    ADD(sdw_frame_result(sb, 7, png_bytes, sizeof png_bytes, 512, 768, 99, 0.25, 10.5, 1.75, 12.5));
    ADD(sdw_frame_error(sb, 1, 7, "engine_error", "out of memory in unet"));
    ADD(sdw_frame_cancelled(sb, 7));
    ADD(sdw_frame_pong(sb));
    ADD(sdw_frame_job(sb, (uint64_t)1 << 40, &jp));
    ADD(sdw_frame_cancel(sb, (uint64_t)1 << 40));
    ADD(sdw_frame_ping(sb));
    ADD(sdw_frame_shutdown(sb));
#undef ADD
    assert_int_equal(i, SDW_FRAME__COUNT);
    offsets[i] = sb->size;
}

static void check_decoded(const sdw_frame *f, int type)
{
    assert_int_equal(f->type, type);
    switch (type) {
    case SDW_FRAME_HELLO:
        assert_int_equal(f->u.hello.pid, 4242);
        assert_string_equal(f->u.hello.device, "cpu:0-1");
        assert_string_equal(f->u.hello.state, "loading");
        break;
    case SDW_FRAME_READY:
        assert_string_equal(f->u.ready.arch, "sd1");
        assert_string_equal(f->u.ready.prediction, "eps");
        assert_string_equal(f->u.ready.model_hash, "0123456789");
        assert_string_equal(f->u.ready.model_name, "randsd15");
        assert_true(f->u.ready.load_s == 12.25);
        assert_int_equal(f->u.ready.native_size, 512);
        assert_int_equal(f->u.ready.bf16, 1);
        break;
    case SDW_FRAME_STARTED:
    case SDW_FRAME_CANCELLED:
        assert_int_equal(f->job, 7);
        break;
    case SDW_FRAME_PROGRESS:
        assert_int_equal(f->job, 7);
        assert_int_equal(f->u.progress.step, 3);
        assert_int_equal(f->u.progress.total, 20);
        assert_true(f->u.progress.elapsed == 1.5);
        break;
    case SDW_FRAME_RESULT:
        assert_int_equal(f->job, 7);
        assert_int_equal(f->u.result.png_len, sizeof png_bytes);
        assert_memory_equal(f->u.result.png, png_bytes, sizeof png_bytes);
        assert_int_equal(f->u.result.width, 512);
        assert_int_equal(f->u.result.height, 768);
        assert_int_equal(f->u.result.seed, 99);
        assert_true(f->u.result.t_encode == 0.25 && f->u.result.t_sample == 10.5);
        assert_true(f->u.result.t_decode == 1.75 && f->u.result.t_total == 12.5);
        assert_int_equal(f->u.result.precision, SDW_PRECISION_FP32);
        break;
    case SDW_FRAME_ERROR:
        assert_true(f->has_job);
        assert_int_equal(f->job, 7);
        assert_string_equal(f->u.error.code, "engine_error");
        assert_string_equal(f->u.error.message, "out of memory in unet");
        break;
    case SDW_FRAME_JOB:
        assert_true(f->job == (uint64_t)1 << 40);
        assert_string_equal(f->u.job.prompt, "a red fox, \"quoted\" ünïcode");
        assert_string_equal(f->u.job.negative_prompt, "");
        assert_int_equal(f->u.job.steps, 20);
        assert_true(f->u.job.cfg_scale == 7.5);
        assert_true(f->u.job.seed == UINT64_MAX - 5);
        assert_int_equal(f->u.job.width, 512);
        assert_int_equal(f->u.job.height, 768);
        assert_int_equal(f->u.job.sampler, SDW_SAMPLER_EULER_A);
        assert_int_equal(f->u.job.schedule, SDW_SCHEDULE_KARRAS);
        assert_int_equal(f->u.job.orig_width, 2048);
        assert_int_equal(f->u.job.orig_height, 1536);
        assert_int_equal(f->u.job.crop_top, 16);
        assert_int_equal(f->u.job.crop_left, 32);
        assert_int_equal(f->u.job.target_width, 1024);
        assert_int_equal(f->u.job.target_height, 768);
        break;
    case SDW_FRAME_CANCEL:
        assert_true(f->job == (uint64_t)1 << 40);
        break;
    default:
        break;
    }
}

static void test_round_trip_every_type(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    size_t off[SDW_FRAME__COUNT + 1];
    encode_all(&sb, off);
    for (int t = 0; t < SDW_FRAME__COUNT; t++) {
        sdw_frame_reader *r = sdw_frame_reader_new(SDW_FRAME_MAX_RESULT);
        assert_non_null(r);
        size_t len = off[t + 1] - off[t];
        assert_int_equal(sdw_frame_reader_feed(r, sb.data + off[t], len), len);
        sdw_frame f;
        char err[256] = "";
        int rc = sdw_frame_reader_next(r, &f, err, sizeof err);
        if (rc != 1) fail_msg("%s: rc %d: %s", sdw_frame_type_name((sdw_frame_type)t), rc, err);
        check_decoded(&f, t);
        /* re-encoding the decoded frame gives the same bytes */
        msgpack_sbuffer again;
        msgpack_sbuffer_init(&again);
        assert_int_equal(sdw_frame_encode(&again, &f), 0);
        assert_int_equal(again.size, len);
        assert_memory_equal(again.data, sb.data + off[t], len);
        msgpack_sbuffer_destroy(&again);
        sdw_frame_free(&f);
        assert_null(f._mem);
        assert_int_equal(sdw_frame_reader_next(r, &f, err, sizeof err), 0);
        assert_int_equal(sdw_frame_reader_pending(r), 0);
        sdw_frame_reader_free(r);
    }
    assert_string_equal(sdw_frame_type_name(SDW_FRAME_HELLO), "hello");
    assert_string_equal(sdw_frame_type_name(SDW_FRAME_RESULT), "result");
    assert_string_equal(sdw_frame_type_name(SDW_FRAME_SHUTDOWN), "shutdown");
    assert_string_equal(sdw_frame_type_name(SDW_FRAME__COUNT), "?");
    msgpack_sbuffer_destroy(&sb);
}

static void test_error_without_job_and_null_strings(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(sdw_frame_error(&sb, 0, 0, "model_load_failed", "x.safetensors: no such file"), 0);
    assert_int_equal(sdw_frame_hello(&sb, 1, NULL, NULL), 0);
    sdw_frame_reader *r = sdw_frame_reader_new(SDW_FRAME_MAX_SMALL);
    assert_int_equal(sdw_frame_reader_feed(r, sb.data, sb.size), sb.size);
    sdw_frame f;
    char err[256];
    assert_int_equal(sdw_frame_reader_next(r, &f, err, sizeof err), 1);
    assert_int_equal(f.type, SDW_FRAME_ERROR);
    assert_false(f.has_job);
    assert_string_equal(f.u.error.code, "model_load_failed");
    assert_string_equal(f.u.error.message, "x.safetensors: no such file");
    sdw_frame_free(&f);
    assert_int_equal(sdw_frame_reader_next(r, &f, err, sizeof err), 1);
    assert_string_equal(f.u.hello.device, "");
    assert_string_equal(f.u.hello.state, "");
    sdw_frame_free(&f);
    sdw_frame_reader_free(r);
    msgpack_sbuffer_destroy(&sb);
}

/* native_size came after version 1: a ready without it (0 = unknown, the key left out, as an older worker
 * sends it) decodes with 0, and one with it carries the number. */
static void test_ready_native_size_optional(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(sdw_frame_ready(&sb, "sd2", "v", "", "m", 1.0, 0, 0), 0);
    size_t first = sb.size;
    assert_null(memmem(sb.data, first, "native_size", 11));
    assert_int_equal(sdw_frame_ready(&sb, "sdxl", "eps", "", "m", 1.0, 1024, 0), 0);
    sdw_frame_reader *r = sdw_frame_reader_new(SDW_FRAME_MAX_SMALL);
    assert_int_equal(sdw_frame_reader_feed(r, sb.data, sb.size), sb.size);
    sdw_frame f;
    char err[256];
    assert_int_equal(sdw_frame_reader_next(r, &f, err, sizeof err), 1);
    assert_int_equal(f.u.ready.native_size, 0);
    assert_string_equal(f.u.ready.arch, "sd2");
    sdw_frame_free(&f);
    assert_int_equal(sdw_frame_reader_next(r, &f, err, sizeof err), 1);
    assert_int_equal(f.u.ready.native_size, 1024);
    assert_string_equal(f.u.ready.arch, "sdxl");
    sdw_frame_free(&f);
    sdw_frame_reader_free(r);
    msgpack_sbuffer_destroy(&sb);
}

/* Every frame fed one byte at a time: nothing comes out until its last byte, then exactly that frame. */
static void test_split_feeds(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    size_t off[SDW_FRAME__COUNT + 1];
    encode_all(&sb, off);
    sdw_frame_reader *r = sdw_frame_reader_new(SDW_FRAME_MAX_RESULT);
    int t = 0;
    for (size_t i = 0; i < sb.size; i++) {
        assert_int_equal(sdw_frame_reader_feed(r, sb.data + i, 1), 1);
        sdw_frame f;
        char err[256];
        int rc = sdw_frame_reader_next(r, &f, err, sizeof err);
        if (i + 1 == off[t + 1]) {
            assert_int_equal(rc, 1);
            check_decoded(&f, t);
            sdw_frame_free(&f);
            t++;
        } else {
            assert_int_equal(rc, 0);
        }
    }
    assert_int_equal(t, SDW_FRAME__COUNT);
    sdw_frame_reader_free(r);
    msgpack_sbuffer_destroy(&sb);
}

static void test_many_frames_in_one_feed(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    size_t off[SDW_FRAME__COUNT + 1];
    encode_all(&sb, off);
    encode_all(&sb, off); /* twice over */
    sdw_frame_reader *r = sdw_frame_reader_new(SDW_FRAME_MAX_RESULT);
    assert_int_equal(sdw_frame_reader_feed(r, sb.data, sb.size), sb.size);
    sdw_frame f;
    char err[256];
    for (int n = 0; n < 2 * SDW_FRAME__COUNT; n++) {
        assert_int_equal(sdw_frame_reader_next(r, &f, err, sizeof err), 1);
        check_decoded(&f, n % SDW_FRAME__COUNT);
        sdw_frame_free(&f);
    }
    assert_int_equal(sdw_frame_reader_next(r, &f, err, sizeof err), 0);
    sdw_frame_reader_free(r);
    msgpack_sbuffer_destroy(&sb);
}

/* The reader takes no more than its limit; a frame that cannot fit fails instead of being buffered. */
static void test_reader_bounds_its_buffer(void **state)
{
    (void)state;
    const size_t limit = 4096;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    for (int i = 0; i < 400; i++) /* ~6 KB of small frames */
        assert_int_equal(sdw_frame_progress(&sb, (uint64_t)i, i, 400, i * 0.5), 0);
    sdw_frame_reader *r = sdw_frame_reader_new(limit);
    size_t fed = 0;
    int frames = 0, zero_feeds = 0;
    while (fed < sb.size) {
        size_t n = sdw_frame_reader_feed(r, sb.data + fed, sb.size - fed);
        assert_true(sdw_frame_reader_pending(r) <= limit);
        zero_feeds += n == 0;
        fed += n;
        sdw_frame f;
        char err[256];
        int rc;
        while ((rc = sdw_frame_reader_next(r, &f, err, sizeof err)) == 1) {
            assert_int_equal(f.u.progress.step, frames);
            frames++;
            sdw_frame_free(&f);
        }
        assert_int_equal(rc, 0);
    }
    assert_int_equal(frames, 400);
    assert_int_equal(zero_feeds, 0);
    sdw_frame_reader_free(r);

    /* a 5000-byte string cannot fit under 4096: the header alone decides */
    msgpack_sbuffer_clear(&sb);
    char *big = malloc(5001);
    memset(big, 'a', 5000);
    big[5000] = '\0';
    assert_int_equal(sdw_frame_error(&sb, 0, 0, "engine_error", big), 0);
    r = sdw_frame_reader_new(limit);
    size_t n = sdw_frame_reader_feed(r, sb.data, sb.size);
    assert_int_equal(n, limit);
    sdw_frame f;
    char err[256];
    assert_int_equal(sdw_frame_reader_next(r, &f, err, sizeof err), -1);
    assert_non_null(strstr(err, "exceeds"));
    assert_int_equal(sdw_frame_reader_feed(r, sb.data + n, sb.size - n), 0);
    sdw_frame_reader_free(r);
    free(big);
    msgpack_sbuffer_destroy(&sb);
}

static int decode_bytes(size_t limit, const void *data, size_t len, sdw_frame *f, char *err, size_t errlen)
{
    sdw_frame_reader *r = sdw_frame_reader_new(limit);
    assert_non_null(r);
    size_t fed = sdw_frame_reader_feed(r, data, len);
    int rc = sdw_frame_reader_next(r, f, err, errlen);
    if (rc == 0 && fed < len) rc = -2; /* the caller's bytes did not fit */
    sdw_frame_reader_free(r);
    return rc;
}

static void expect_error(size_t limit, const void *data, size_t len, const char *needle)
{
    sdw_frame f;
    char err[256] = "";
    int rc = decode_bytes(limit, data, len, &f, err, sizeof err);
    if (rc != -1 || !strstr(err, needle))
        fail_msg("expected an error with \"%s\", got rc=%d err=\"%s\"", needle, rc, err);
    assert_null(f._mem);
}

static void test_oversized(void **state)
{
    (void)state;
    /* a bin32 header declaring 100 MB is refused from its 6 header bytes (after t and v) */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, "result", 6);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_str_with_body(&pk, "job", 3);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_str_with_body(&pk, "png", 3);
    msgpack_pack_bin(&pk, 100u << 20);
    expect_error(SDW_FRAME_MAX_RESULT, sb.data, sb.size, "exceeds the 67108864-byte limit");

    /* a result with a 2 MB png is fine for the supervisor, oversized for a worker-side reader */
    msgpack_sbuffer_clear(&sb);
    size_t big = 2u << 20;
    uint8_t *png = calloc(1, big);
    assert_int_equal(sdw_frame_result(&sb, 1, png, big, 64, 64, 1, 0, 0, 0, 0), 0);
    sdw_frame f;
    char err[256];
    assert_int_equal(decode_bytes(SDW_FRAME_MAX_RESULT, sb.data, sb.size, &f, err, sizeof err), 1);
    assert_int_equal(f.u.result.png_len, big);
    sdw_frame_free(&f);
    expect_error(SDW_FRAME_MAX_SMALL, sb.data, sb.size, "exceeds");

    /* every type but result is held to SDW_FRAME_MAX_SMALL even by a reader that allows more */
    msgpack_sbuffer_clear(&sb);
    char *msg = malloc(big + 1);
    memset(msg, 'x', big);
    msg[big] = '\0';
    assert_int_equal(sdw_frame_error(&sb, 1, 3, "engine_error", msg), -1); /* the encoder refuses too */
    assert_int_equal(sb.size, 0);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, "error", 5);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_str_with_body(&pk, "job", 3);
    msgpack_pack_nil(&pk);
    msgpack_pack_str_with_body(&pk, "code", 4);
    msgpack_pack_str_with_body(&pk, "x", 1);
    msgpack_pack_str_with_body(&pk, "message", 7);
    msgpack_pack_str_with_body(&pk, msg, big);
    expect_error(SDW_FRAME_MAX_RESULT, sb.data, sb.size, "error frame of");
    free(msg);

    /* the encoder keeps results under their limit and leaves the buffer as it was */
    msgpack_sbuffer_clear(&sb);
    assert_int_equal(sdw_frame_ping(&sb), 0);
    size_t before = sb.size;
    uint8_t *huge = malloc(SDW_FRAME_MAX_RESULT);
    assert_int_equal(sdw_frame_result(&sb, 1, huge, SDW_FRAME_MAX_RESULT, 64, 64, 1, 0, 0, 0, 0), -1);
    assert_int_equal(sb.size, before);
    free(huge);
    free(png);
    msgpack_sbuffer_destroy(&sb);
}

/* Builds a map frame from alternating key / kind / value triples: kinds 's' string, 'u' uint, 'i' int,
 * 'd' double, 'n' nil, 'b' bool. */
static void build(msgpack_sbuffer *sb, int npairs, ...)
{
    msgpack_sbuffer_clear(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (size_t)npairs);
    va_list ap;
    va_start(ap, npairs);
    for (int i = 0; i < npairs; i++) {
        const char *k = va_arg(ap, const char *);
        int kind = va_arg(ap, int);
        msgpack_pack_str_with_body(&pk, k, strlen(k));
        switch (kind) {
        case 's': {
            const char *v = va_arg(ap, const char *);
            msgpack_pack_str_with_body(&pk, v, strlen(v));
            break;
        }
        case 'u':
            msgpack_pack_uint64(&pk, va_arg(ap, uint64_t));
            break;
        case 'i':
            msgpack_pack_int64(&pk, va_arg(ap, int64_t));
            break;
        case 'd':
            msgpack_pack_double(&pk, va_arg(ap, double));
            break;
        case 'n':
            msgpack_pack_nil(&pk);
            break;
        case 'b':
            msgpack_pack_true(&pk);
            break;
        default:
            fail();
        }
    }
    va_end(ap);
}

#define U(x) (uint64_t)(x)
#define I(x) (int64_t)(x)

static void test_wrong_version(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    build(&sb, 2, "t", 's', "ping", "v", 'u', U(2));
    expect_error(SDW_FRAME_MAX_SMALL, sb.data, sb.size, "protocol version 2");
    build(&sb, 1, "t", 's', "ping");
    expect_error(SDW_FRAME_MAX_SMALL, sb.data, sb.size, "no protocol version");
    build(&sb, 2, "t", 's', "ping", "v", 's', "1");
    expect_error(SDW_FRAME_MAX_SMALL, sb.data, sb.size, "'v' must be an unsigned integer");
    build(&sb, 2, "t", 's', "ping", "v", 'i', I(-1));
    expect_error(SDW_FRAME_MAX_SMALL, sb.data, sb.size, "'v' must be an unsigned integer");
    /* unknown extra keys are ignored: new optional fields do not need a new version */
    build(&sb, 3, "t", 's', "ping", "v", 'u', U(1), "future", 's', "field");
    sdw_frame f;
    char err[256];
    assert_int_equal(decode_bytes(SDW_FRAME_MAX_SMALL, sb.data, sb.size, &f, err, sizeof err), 1);
    assert_int_equal(f.type, SDW_FRAME_PING);
    sdw_frame_free(&f);
    msgpack_sbuffer_destroy(&sb);
}

/* A result frame with index and count as given (count < 0: neither key) and precision (NULL: no key, "#": the
 * integer 1), for the decoder's checks. */
static void build_result(msgpack_sbuffer *sb, int64_t index, int64_t count, const char *precision)
{
    msgpack_sbuffer_clear(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (count < 0 ? 8 : 10) + (precision ? 1 : 0));
#define KEY(k) msgpack_pack_str_with_body(&pk, k, strlen(k))
    KEY("t");
    msgpack_pack_str_with_body(&pk, "result", 6);
    KEY("v");
    msgpack_pack_uint64(&pk, 1);
    KEY("job");
    msgpack_pack_uint64(&pk, 5);
    KEY("png");
    msgpack_pack_bin_with_body(&pk, png_bytes, sizeof png_bytes);
    KEY("width");
    msgpack_pack_int64(&pk, 64);
    KEY("height");
    msgpack_pack_int64(&pk, 64);
    KEY("seed");
    msgpack_pack_uint64(&pk, 9);
    KEY("timings");
    msgpack_pack_map(&pk, 4);
    const char *t[] = {"encode", "sample", "decode", "total"};
    for (int i = 0; i < 4; i++) {
        KEY(t[i]);
        msgpack_pack_double(&pk, 0.5);
    }
    if (count >= 0) {
        KEY("index");
        msgpack_pack_int64(&pk, index);
        KEY("count");
        msgpack_pack_int64(&pk, count);
    }
    if (precision) {
        KEY("precision");
        if (!strcmp(precision, "#"))
            msgpack_pack_int64(&pk, 1);
        else
            KEY(precision);
    }
#undef KEY
}

/* precision came after version 1: the result frame says what the job ran in ("fp32" | "bf16"); one without
 * the key (an older worker) means fp32; another name or type is a protocol violation; the encoder refuses a
 * value outside SDW_PRECISION_*. The ready frame's bf16 flag round-trips and is 0 when absent. */
static void test_result_precision_and_ready_bf16(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    sdw_frame f;
    char err[256];
    for (int prec = SDW_PRECISION_FP32; prec <= SDW_PRECISION_BF16; prec++) {
        msgpack_sbuffer_clear(&sb);
        assert_int_equal(
            sdw_frame_result_at(&sb, 5, 0, 1, png_bytes, sizeof png_bytes, 64, 64, 11, 0, 0, 0, 0, prec), 0);
        assert_non_null(memmem(sb.data, sb.size, prec ? "bf16" : "fp32", 4));
        assert_int_equal(decode_bytes(SDW_FRAME_MAX_RESULT, sb.data, sb.size, &f, err, sizeof err), 1);
        assert_int_equal(f.u.result.precision, prec);
        sdw_frame_free(&f);
    }
    msgpack_sbuffer_clear(&sb);
    assert_int_equal(sdw_frame_result_at(&sb, 5, 0, 1, png_bytes, sizeof png_bytes, 64, 64, 1, 0, 0, 0, 0, 2),
                     -1);
    assert_int_equal(
        sdw_frame_result_at(&sb, 5, 0, 1, png_bytes, sizeof png_bytes, 64, 64, 1, 0, 0, 0, 0, -1), -1);
    assert_int_equal(sb.size, 0);

    build_result(&sb, 0, -1, NULL);
    assert_int_equal(decode_bytes(SDW_FRAME_MAX_RESULT, sb.data, sb.size, &f, err, sizeof err), 1);
    assert_int_equal(f.u.result.precision, SDW_PRECISION_FP32);
    sdw_frame_free(&f);
    build_result(&sb, 0, -1, "bf16");
    assert_int_equal(decode_bytes(SDW_FRAME_MAX_RESULT, sb.data, sb.size, &f, err, sizeof err), 1);
    assert_int_equal(f.u.result.precision, SDW_PRECISION_BF16);
    sdw_frame_free(&f);
    build_result(&sb, 0, -1, "fp16");
    expect_error(SDW_FRAME_MAX_RESULT, sb.data, sb.size, "field 'precision' is 'fp16', not fp32 or bf16");
    build_result(&sb, 0, -1, "");
    expect_error(SDW_FRAME_MAX_RESULT, sb.data, sb.size, "field 'precision' is '', not fp32 or bf16");
    build_result(&sb, 0, -1, "#");
    expect_error(SDW_FRAME_MAX_RESULT, sb.data, sb.size, "field 'precision' must be a string, not integer");

    msgpack_sbuffer_clear(&sb);
    assert_int_equal(sdw_frame_ready(&sb, "sd1", "eps", "", "m", 1.0, 512, 1), 0);
    assert_int_equal(decode_bytes(SDW_FRAME_MAX_SMALL, sb.data, sb.size, &f, err, sizeof err), 1);
    assert_int_equal(f.u.ready.bf16, 1);
    sdw_frame_free(&f);
    msgpack_sbuffer_clear(&sb);
    assert_int_equal(sdw_frame_ready(&sb, "sd1", "eps", "", "m", 1.0, 512, 0), 0);
    assert_int_equal(decode_bytes(SDW_FRAME_MAX_SMALL, sb.data, sb.size, &f, err, sizeof err), 1);
    assert_int_equal(f.u.ready.bf16, 0);
    sdw_frame_free(&f);
    /* an older worker's ready: rename the key, the flag reads 0 */
    msgpack_sbuffer_clear(&sb);
    assert_int_equal(sdw_frame_ready(&sb, "sd1", "eps", "", "m", 1.0, 512, 1), 0);
    char *k = memmem(sb.data, sb.size, "bf16", 4);
    assert_non_null(k);
    k[0] = 'X';
    assert_int_equal(decode_bytes(SDW_FRAME_MAX_SMALL, sb.data, sb.size, &f, err, sizeof err), 1);
    assert_int_equal(f.u.ready.bf16, 0);
    sdw_frame_free(&f);
    msgpack_sbuffer_destroy(&sb);
}

/* The optional VRAM pair: on ready and on the frames that end a job, both keys or neither, unsigned integers
 * (64-bit: a GPU has more than 4 GiB); absent = not known (a CPU worker); other frame types ignore it. */
static void test_vram_optional(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    sdw_frame f;
    char err[256];
    const sdw_frame_vram v = {.has = 1, .free_bytes = 123456789012ULL, .total_bytes = 150754820096ULL};
    for (int t = 0; t < 5; t++) {
        msgpack_sbuffer_clear(&sb);
        int rc = t == 0   ? sdw_frame_ready_vram(&sb, "sdxl", "eps", "", "m", 2.0, 1024, 0, &v)
                 : t == 1 ? sdw_frame_result_vram(&sb, 9, 1, 2, png_bytes, sizeof png_bytes, 64, 64, 3, 0, 0,
                                                  0, 0, SDW_PRECISION_FP32, &v)
                 : t == 2 ? sdw_frame_error_vram(&sb, 1, 9, "engine_error", "out of memory", &v)
                 : t == 3 ? sdw_frame_error_vram(&sb, 0, 0, "device_failed", "sticky", &v)
                          : sdw_frame_cancelled_vram(&sb, 9, &v);
        assert_int_equal(rc, 0);
        assert_int_equal(decode_bytes(SDW_FRAME_MAX_RESULT, sb.data, sb.size, &f, err, sizeof err), 1);
        assert_int_equal(f.vram.has, 1);
        assert_true(f.vram.free_bytes == 123456789012ULL);
        assert_true(f.vram.total_bytes == 150754820096ULL);
        if (t != 0 && t != 3) assert_int_equal(f.job, 9);
        sdw_frame_free(&f);
    }
    /* none given: no keys on the wire, none decoded (the plain encoders are the same frames) */
    const sdw_frame_vram none = {0};
    msgpack_sbuffer_clear(&sb);
    assert_int_equal(sdw_frame_ready_vram(&sb, "sd1", "eps", "", "m", 1.0, 512, 0, &none), 0);
    assert_int_equal(sdw_frame_cancelled_vram(&sb, 9, NULL), 0);
    assert_int_equal(sdw_frame_error(&sb, 1, 9, "engine_error", "x"), 0);
    assert_null(memmem(sb.data, sb.size, "vram", 4));
    assert_int_equal(decode_bytes(SDW_FRAME_MAX_SMALL, sb.data, sb.size, &f, err, sizeof err), 1);
    assert_int_equal(f.vram.has, 0);
    sdw_frame_free(&f);
    /* a type that does not take it leaves it out */
    sdw_frame p = {.type = SDW_FRAME_PROGRESS, .job = 9, .vram = v};
    p.u.progress.step = p.u.progress.total = 1;
    msgpack_sbuffer_clear(&sb);
    assert_int_equal(sdw_frame_encode(&sb, &p), 0);
    assert_null(memmem(sb.data, sb.size, "vram", 4));

    const size_t L = SDW_FRAME_MAX_SMALL;
    build(&sb, 4, "t", 's', "cancelled", "v", 'u', U(1), "job", 'u', U(9), "vram_free_bytes", 'u', U(5));
    expect_error(L, sb.data, sb.size,
                 "cancelled frame: field 'vram_free_bytes' comes without 'vram_total_bytes'");
    build(&sb, 4, "t", 's', "cancelled", "v", 'u', U(1), "job", 'u', U(9), "vram_total_bytes", 'u', U(5));
    expect_error(L, sb.data, sb.size, "field 'vram_total_bytes' comes without 'vram_free_bytes'");
    build(&sb, 5, "t", 's', "cancelled", "v", 'u', U(1), "job", 'u', U(9), "vram_free_bytes", 'u', U(5),
          "vram_total_bytes", 's', "8");
    expect_error(L, sb.data, sb.size, "field 'vram_total_bytes' must be an unsigned integer, not string");
    build(&sb, 5, "t", 's', "cancelled", "v", 'u', U(1), "job", 'u', U(9), "vram_free_bytes", 'i', I(-1),
          "vram_total_bytes", 'u', U(8));
    expect_error(L, sb.data, sb.size, "field 'vram_free_bytes' must be an unsigned integer, not integer");
    /* other types ignore the keys, as any key they do not know */
    build(&sb, 4, "t", 's', "pong", "v", 'u', U(1), "vram_free_bytes", 's', "x", "vram_total_bytes", 'u',
          U(1));
    assert_int_equal(decode_bytes(L, sb.data, sb.size, &f, err, sizeof err), 1);
    assert_int_equal(f.type, SDW_FRAME_PONG);
    assert_int_equal(f.vram.has, 0);
    sdw_frame_free(&f);
    msgpack_sbuffer_destroy(&sb);
}

/* A batch's result frames: index and count round-trip; the encoder and the decoder refuse an index outside
 * 0..count-1 and a count outside 1..SDW_FRAME_MAX_IMAGES; without the keys a frame is image 0 of 1. */
static void test_result_index_count(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    sdw_frame f;
    char err[256];
    assert_int_equal(sdw_frame_result_at(&sb, 5, 2, 3, png_bytes, sizeof png_bytes, 64, 64, 11, 0, 0, 0, 0,
                                         SDW_PRECISION_BF16),
                     0);
    assert_int_equal(decode_bytes(SDW_FRAME_MAX_RESULT, sb.data, sb.size, &f, err, sizeof err), 1);
    assert_int_equal(f.u.result.index, 2);
    assert_int_equal(f.u.result.count, 3);
    assert_true(f.u.result.seed == 11);
    sdw_frame_free(&f);
    msgpack_sbuffer_clear(&sb);
    assert_int_equal(sdw_frame_result_at(&sb, 5, 3, 3, png_bytes, sizeof png_bytes, 64, 64, 1, 0, 0, 0, 0, 0),
                     -1);
    assert_int_equal(sdw_frame_result_at(&sb, 5, 0, 0, png_bytes, sizeof png_bytes, 64, 64, 1, 0, 0, 0, 0, 0),
                     -1);
    assert_int_equal(sdw_frame_result_at(&sb, 5, 0, SDW_FRAME_MAX_IMAGES + 1, png_bytes, sizeof png_bytes, 64,
                                         64, 1, 0, 0, 0, 0, 0),
                     -1);
    assert_int_equal(sb.size, 0);

    build_result(&sb, 0, -1, NULL);
    assert_int_equal(decode_bytes(SDW_FRAME_MAX_RESULT, sb.data, sb.size, &f, err, sizeof err), 1);
    assert_int_equal(f.u.result.index, 0);
    assert_int_equal(f.u.result.count, 1);
    sdw_frame_free(&f);
    build_result(&sb, 3, 3, NULL);
    expect_error(SDW_FRAME_MAX_RESULT, sb.data, sb.size, "field 'index' is 3, outside 0..2");
    build_result(&sb, -1, 3, NULL);
    expect_error(SDW_FRAME_MAX_RESULT, sb.data, sb.size, "field 'index' is -1");
    build_result(&sb, 0, 0, NULL);
    expect_error(SDW_FRAME_MAX_RESULT, sb.data, sb.size, "field 'count' is 0, outside 1..64");
    build_result(&sb, 0, 65, NULL);
    expect_error(SDW_FRAME_MAX_RESULT, sb.data, sb.size, "field 'count' is 65");
    msgpack_sbuffer_destroy(&sb);
}

static void test_wrong_types(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    const size_t L = SDW_FRAME_MAX_SMALL;
    build(&sb, 2, "t", 'u', U(3), "v", 'u', U(1));
    expect_error(L, sb.data, sb.size, "'t' must be a string");
    build(&sb, 1, "v", 'u', U(1));
    expect_error(L, sb.data, sb.size, "no type");
    build(&sb, 2, "t", 's', "explode", "v", 'u', U(1));
    expect_error(L, sb.data, sb.size, "unknown frame type 'explode'");
    build(&sb, 3, "t", 's', "started", "v", 'u', U(1), "job", 's', "7");
    expect_error(L, sb.data, sb.size, "started frame: field 'job' must be an unsigned integer, not string");
    build(&sb, 3, "t", 's', "started", "v", 'u', U(1), "job", 'i', I(-7));
    expect_error(L, sb.data, sb.size, "field 'job' must be an unsigned integer, not integer");
    build(&sb, 2, "t", 's', "cancel", "v", 'u', U(1));
    expect_error(L, sb.data, sb.size, "cancel frame: field 'job' is missing");
    build(&sb, 6, "t", 's', "progress", "v", 'u', U(1), "job", 'u', U(1), "step", 'd', 1.0, "total", 'i',
          I(3), "elapsed", 'd', 0.5);
    expect_error(L, sb.data, sb.size, "field 'step' must be an integer, not float");
    build(&sb, 6, "t", 's', "progress", "v", 'u', U(1), "job", 'u', U(1), "step", 'i', I(1), "total", 'i',
          I(3), "elapsed", 'i', I(1));
    expect_error(L, sb.data, sb.size, "field 'elapsed' must be a float, not integer");
    build(&sb, 6, "t", 's', "progress", "v", 'u', U(1), "job", 'u', U(1), "step", 'i', I(1), "total", 'u',
          U(1) << 40, "elapsed", 'd', 0.5);
    expect_error(L, sb.data, sb.size, "field 'total' is 1099511627776, outside");
    build(&sb, 5, "t", 's', "error", "v", 'u', U(1), "job", 's', "x", "code", 's', "a", "message", 's', "b");
    expect_error(L, sb.data, sb.size, "field 'job' must be an unsigned integer or nil, not string");
    build(&sb, 5, "t", 's', "error", "v", 'u', U(1), "job", 'n', "code", 'b', "message", 's', "b");
    expect_error(L, sb.data, sb.size, "field 'code' must be a string, not boolean");
    build(&sb, 5, "t", 's', "hello", "v", 'u', U(1), "pid", 'i', I(0), "device", 's', "cpu", "state", 's',
          "loading");
    expect_error(L, sb.data, sb.size, "field 'pid' is 0");
    build(&sb, 3, "t", 's', "ping", "v", 'u', U(1), "t", 's', "pong");
    expect_error(L, sb.data, sb.size, "key 't' appears twice");

    /* png must be bin, timings a map of floats */
    msgpack_packer pk;
    msgpack_sbuffer_clear(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 8);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, "result", 6);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_str_with_body(&pk, "job", 3);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_str_with_body(&pk, "png", 3);
    msgpack_pack_str_with_body(&pk, "PNG", 3);
    msgpack_pack_str_with_body(&pk, "width", 5);
    msgpack_pack_int(&pk, 8);
    msgpack_pack_str_with_body(&pk, "height", 6);
    msgpack_pack_int(&pk, 8);
    msgpack_pack_str_with_body(&pk, "seed", 4);
    msgpack_pack_int(&pk, 8);
    msgpack_pack_str_with_body(&pk, "timings", 7);
    msgpack_pack_map(&pk, 0);
    expect_error(L, sb.data, sb.size, "field 'png' must be binary, not string");
    msgpack_sbuffer_clear(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 8);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, "result", 6);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_str_with_body(&pk, "job", 3);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_str_with_body(&pk, "png", 3);
    msgpack_pack_bin_with_body(&pk, "PNG", 3);
    msgpack_pack_str_with_body(&pk, "width", 5);
    msgpack_pack_int(&pk, 8);
    msgpack_pack_str_with_body(&pk, "height", 6);
    msgpack_pack_int(&pk, 8);
    msgpack_pack_str_with_body(&pk, "seed", 4);
    msgpack_pack_int(&pk, 8);
    msgpack_pack_str_with_body(&pk, "timings", 7);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "encode", 6);
    msgpack_pack_double(&pk, 1);
    msgpack_pack_str_with_body(&pk, "sample", 6);
    msgpack_pack_double(&pk, 1);
    msgpack_pack_str_with_body(&pk, "decode", 6);
    msgpack_pack_double(&pk, 1);
    expect_error(L, sb.data, sb.size, "field 'timings.total' is missing");

    /* a NUL inside a string would silently cut it short in C */
    build(&sb, 5, "t", 's', "hello", "v", 'u', U(1), "pid", 'i', I(5), "device", 's', "cpuX", "state", 's',
          "loading");
    char *x = memchr(sb.data, 'X', sb.size);
    *x = '\0';
    expect_error(L, sb.data, sb.size, "field 'device' contains a NUL byte");
    msgpack_sbuffer_destroy(&sb);
}

static void test_garbage(void **state)
{
    (void)state;
    const size_t L = SDW_FRAME_MAX_SMALL;
    expect_error(L, "\x93\x01\x02\x03", 4, "not a msgpack map");
    expect_error(L, "hello", 5, "not a msgpack map");
    expect_error(L, "\x81\xc1", 2, "reserved msgpack byte 0xc1");
    expect_error(L, "\x81\xd4\x01\x00", 4, "ext type 0xd4");
    expect_error(L, "\x81\xc7\x01\x05\x00", 5, "ext type 0xc7");
    /* a map32 declaring four billion pairs must not make msgpack allocate for them */
    expect_error(L, "\xdf\xff\xff\xff\xff", 5, "map of 4294967295 elements");
    expect_error(L, "\x81\xa1k\xdd\x10\x00\x00\x00", 8, "array of 268435456 elements");
    /* nesting */
    char deep[64];
    for (int i = 0; i < 20; i++) {
        deep[2 * i] = (char)0x81;
        deep[2 * i + 1] = (char)0xa0; /* key "" */
    }
    deep[40] = 0x01;
    expect_error(L, deep, 41, "nesting deeper");
    /* too many objects in one frame: a map of 100 arrays of 100 */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 100);
    for (int i = 0; i < 100; i++) {
        msgpack_pack_int(&pk, i);
        msgpack_pack_array(&pk, 100);
        for (int j = 0; j < 100; j++)
            msgpack_pack_nil(&pk);
    }
    expect_error(L, sb.data, sb.size, "more than 4096 msgpack objects");
    /* a non-string key */
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_int(&pk, 1);
    expect_error(L, sb.data, sb.size, "a map key is a integer");
    msgpack_sbuffer_destroy(&sb);

    /* the reader stays dead after an error, and keeps the message */
    sdw_frame_reader *r = sdw_frame_reader_new(L);
    sdw_frame f;
    char err[256], err2[256];
    assert_int_equal(sdw_frame_reader_feed(r, "\xc1", 1), 1);
    assert_int_equal(sdw_frame_reader_next(r, &f, err, sizeof err), -1);
    msgpack_sbuffer_init(&sb);
    sdw_frame_ping(&sb);
    assert_int_equal(sdw_frame_reader_feed(r, sb.data, sb.size), 0);
    assert_int_equal(sdw_frame_reader_next(r, &f, err2, sizeof err2), -1);
    assert_string_equal(err, err2);
    msgpack_sbuffer_destroy(&sb);
    sdw_frame_reader_free(r);
}

/* ---- the seeded mutation loop ---- */

static uint64_t rng_state;
static uint64_t rnd(void)
{
    /* xorshift64*: deterministic across platforms, so a failing seed reproduces */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}
static size_t rndn(size_t n)
{
    return n ? (size_t)(rnd() % n) : 0;
}

static void mutate(uint8_t *buf, size_t *len, size_t cap)
{
    int ops = 1 + (int)rndn(4);
    for (int k = 0; k<ops && * len> 0; k++) {
        size_t at = rndn(*len);
        switch (rndn(7)) {
        case 0:
            buf[at] ^= (uint8_t)(1u << rndn(8));
            break; /* bit flip */
        case 1:
            buf[at] = (uint8_t)rnd();
            break; /* byte replace */
        case 2: {  /* interesting values: type bytes that change lengths */
            static const uint8_t v[] = {0xc0, 0xc1, 0xc4, 0xc6, 0xca, 0xcb, 0xcf, 0xd3, 0xd9, 0xdb,
                                        0xdc, 0xdd, 0xde, 0xdf, 0x80, 0x8f, 0x90, 0xa0, 0xbf, 0xff};
            buf[at] = v[rndn(sizeof v)];
            break;
        }
        case 3:
            *len = at;
            break; /* truncate */
        case 4:    /* insert */
            if (*len < cap) {
                memmove(buf + at + 1, buf + at, *len - at);
                buf[at] = (uint8_t)rnd();
                (*len)++;
            }
            break;
        case 5: /* delete */
            memmove(buf + at, buf + at + 1, *len - at - 1);
            (*len)--;
            break;
        default: { /* duplicate a slice */
            size_t n = 1 + rndn(16);
            if (at + n <= *len && *len + n <= cap) {
                memmove(buf + at + n, buf + at, *len - at);
                (*len) += n;
            }
            break;
        }
        }
    }
}

static void test_mutations(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    size_t off[SDW_FRAME__COUNT + 1];
    encode_all(&sb, off);
    enum { CAP = 4096, ITER = 30000 };
    uint8_t *buf = malloc(CAP);
    int decoded = 0, errors = 0, incomplete = 0;
    rng_state = 0x5d1f2e3c4b5a6978ULL;
    for (int it = 0; it < ITER; it++) {
        /* one to three consecutive frames from the corpus, then mutations */
        int first = (int)rndn(SDW_FRAME__COUNT);
        int count = 1 + (int)rndn(3);
        if (first + count > SDW_FRAME__COUNT) count = SDW_FRAME__COUNT - first;
        size_t len = off[first + count] - off[first];
        memcpy(buf, sb.data + off[first], len);
        mutate(buf, &len, CAP);
        /* a small limit makes size-limit paths common too */
        size_t limit = rndn(4) == 0 ? 64 : SDW_FRAME_MAX_SMALL;
        sdw_frame_reader *r = sdw_frame_reader_new(limit);
        size_t fed = 0;
        int rc = 0;
        while (rc >= 0) {
            size_t chunk = 1 + rndn(len - fed + 1);
            if (chunk > len - fed) chunk = len - fed;
            size_t n = sdw_frame_reader_feed(r, buf + fed, chunk);
            fed += n;
            sdw_frame f;
            char err[256];
            while ((rc = sdw_frame_reader_next(r, &f, err, sizeof err)) == 1) {
                decoded++;
                /* anything the decoder accepts encodes again and decodes to the same bytes */
                msgpack_sbuffer re;
                msgpack_sbuffer_init(&re);
                assert_int_equal(sdw_frame_encode(&re, &f), 0);
                sdw_frame g;
                char err2[256];
                assert_int_equal(decode_bytes(SDW_FRAME_MAX_RESULT, re.data, re.size, &g, err2, sizeof err2),
                                 1);
                msgpack_sbuffer re2;
                msgpack_sbuffer_init(&re2);
                assert_int_equal(sdw_frame_encode(&re2, &g), 0);
                assert_int_equal(re.size, re2.size);
                assert_memory_equal(re.data, re2.data, re.size);
                msgpack_sbuffer_destroy(&re);
                msgpack_sbuffer_destroy(&re2);
                sdw_frame_free(&g);
                sdw_frame_free(&f);
            }
            if (rc < 0) {
                assert_true(strlen(err) > 0);
                errors++;
            } else if (fed == len) {
                if (sdw_frame_reader_pending(r) > 0) incomplete++;
                break;
            } else if (n == 0) {
                fail_msg("iteration %d: the reader took nothing and returned no frame", it);
            }
        }
        sdw_frame_reader_free(r);
    }
    print_message("mutation loop: %d iterations, %d frames decoded, %d errors, %d left incomplete\n", ITER,
                  decoded, errors, incomplete);
    /* the loop only means something if every outcome happens a fair number of times */
    assert_true(decoded > ITER / 10);
    assert_true(errors > ITER / 10);
    assert_true(incomplete > ITER / 100);
    free(buf);
    msgpack_sbuffer_destroy(&sb);
}

/* A live preview rides its step's progress frame as an optional bin; the job frame carries preview_every. */
static void test_progress_preview(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char err[256] = "";
    sdw_frame f;
    assert_int_equal(sdw_frame_progress_preview(&sb, 9, 5, 20, 2.5, png_bytes, sizeof png_bytes), 0);
    assert_int_equal(decode_bytes(SDW_FRAME_MAX_SMALL, sb.data, sb.size, &f, err, sizeof err), 1);
    assert_int_equal(f.type, SDW_FRAME_PROGRESS);
    assert_int_equal(f.u.progress.step, 5);
    assert_int_equal(f.u.progress.preview_len, sizeof png_bytes);
    assert_memory_equal(f.u.progress.preview, png_bytes, sizeof png_bytes);
    msgpack_sbuffer again;
    msgpack_sbuffer_init(&again);
    assert_int_equal(sdw_frame_encode(&again, &f), 0);
    assert_int_equal(again.size, sb.size);
    assert_memory_equal(again.data, sb.data, sb.size);
    msgpack_sbuffer_destroy(&again);
    sdw_frame_free(&f);

    /* without one: no key at all, and a NULL preview on decoding */
    msgpack_sbuffer_clear(&sb);
    assert_int_equal(sdw_frame_progress_preview(&sb, 9, 6, 20, 3.0, NULL, 5), 0);
    assert_int_equal(decode_bytes(SDW_FRAME_MAX_SMALL, sb.data, sb.size, &f, err, sizeof err), 1);
    assert_null(f.u.progress.preview);
    assert_int_equal(f.u.progress.preview_len, 0);
    sdw_frame_free(&f);

    /* a preview that would push the frame past its 1 MiB limit is refused, and sb is left as it was */
    msgpack_sbuffer_clear(&sb);
    uint8_t *big = calloc(1, SDW_FRAME_MAX_SMALL);
    assert_non_null(big);
    assert_int_equal(sdw_frame_progress_preview(&sb, 9, 7, 20, 3.5, big, SDW_FRAME_MAX_SMALL), -1);
    assert_int_equal(sb.size, 0);
    free(big);

    /* a preview must be bin */
    build(&sb, 7, "t", 's', "progress", "v", 'u', U(1), "job", 'u', U(1), "step", 'i', I(1), "total", 'i',
          I(3), "elapsed", 'd', 0.5, "preview", 's', "not bytes");
    expect_error(SDW_FRAME_MAX_SMALL, sb.data, sb.size, "field 'preview' must be binary, not string");

    sdw_gen_request jp;
    sdw_gen_request_init(&jp);
    jp.prompt = "p";
    jp.preview_every = 7;
    msgpack_sbuffer_clear(&sb);
    assert_int_equal(sdw_frame_job(&sb, 3, &jp), 0);
    assert_int_equal(decode_bytes(SDW_FRAME_MAX_RESULT, sb.data, sb.size, &f, err, sizeof err), 1);
    assert_int_equal(f.u.job.preview_every, 7);
    sdw_frame_free(&f);
    msgpack_sbuffer_destroy(&sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_type),
        cmocka_unit_test(test_error_without_job_and_null_strings),
        cmocka_unit_test(test_ready_native_size_optional),
        cmocka_unit_test(test_split_feeds),
        cmocka_unit_test(test_many_frames_in_one_feed),
        cmocka_unit_test(test_reader_bounds_its_buffer),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_wrong_version),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_result_index_count),
        cmocka_unit_test(test_result_precision_and_ready_bf16),
        cmocka_unit_test(test_vram_optional),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_progress_preview),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
