/* frame.h: the supervisor <-> worker wire protocol: one msgpack map per frame over a stream socket,
 * encoders that append to a msgpack_sbuffer and a bounded streaming reader. See docs/protocol.md. */
#ifndef SDW_FRAME_H
#define SDW_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <msgpack.h>

#include "gen_request.h"

/** The protocol version every frame carries in "v"; a frame with another version is rejected. */
#define SDW_FRAME_VERSION 1
/** Most images one job's `result` frames carry (the `count` field). */
#define SDW_FRAME_MAX_IMAGES 64
/** Largest encoded `result` frame (the PNG travels inside it) and `job` frame (init image and mask). */
#define SDW_FRAME_MAX_RESULT ((size_t)64 << 20)
/** Largest encoded frame of any other type. */
#define SDW_FRAME_MAX_SMALL ((size_t)1 << 20)

typedef enum {
    /* worker -> supervisor */
    SDW_FRAME_HELLO = 0, /* pid, device, state ("loading") */
    SDW_FRAME_READY,     /* model info once loaded */
    SDW_FRAME_STARTED,   /* job */
    SDW_FRAME_PROGRESS,  /* job, step, total, elapsed */
    SDW_FRAME_RESULT,    /* job, png (bin), width, height, seed, timings */
    SDW_FRAME_ERROR,     /* job or nil, code, message */
    SDW_FRAME_CANCELLED, /* job */
    SDW_FRAME_PONG,      /* answer to ping */
    /* supervisor -> worker */
    SDW_FRAME_JOB,      /* job + generation parameters */
    SDW_FRAME_CANCEL,   /* job */
    SDW_FRAME_PING,     /* liveness probe */
    SDW_FRAME_SHUTDOWN, /* exit now */
    SDW_FRAME__COUNT
} sdw_frame_type;

/** Free and total bytes of a GPU worker's device memory (cudaMemGetInfo, device-wide); has 0 = not known
 * (a CPU worker). Optional on ready and on the frames that end a job: result, error with a job, cancelled. */
typedef struct {
    int has;
    uint64_t free_bytes, total_bytes;
} sdw_frame_vram;

/** One frame. Which members mean something depends on type (see the comments); decoded strings are
 * NUL-terminated and, like png, owned by the frame until sdw_frame_free(). To encode, fill the members the
 * type uses (NULL strings are sent as ""). A decoded job frame's u.job is a request the frame owns: move it
 * out (struct copy, then zero u.job) or let sdw_frame_free() release it. */
typedef struct {
    sdw_frame_type type;
    uint64_t job;        /* started, progress, result, error (when has_job), cancelled, job, cancel */
    int has_job;         /* error: 0 when the error belongs to no job (msgpack nil on the wire) */
    sdw_frame_vram vram; /* ready, result, error, cancelled: "vram_free_bytes", "vram_total_bytes" */
    union {
        struct {
            int64_t pid;
            const char *device; /* "cpu:0-1" */
            const char *state;  /* "loading" */
        } hello;
        struct {
            const char *arch;       /* "sd1", "sd2", "sdxl", "tiny" */
            const char *prediction; /* "eps" | "v" */
            const char *model_hash; /* short sha256, "" if unknown */
            const char *model_name;
            double load_s;   /* seconds the load took */
            int native_size; /* the model's native image side in pixels (512, 768, 1024...); 0 = not sent */
            int bf16; /* 1: the worker's CPU runs bf16 jobs in bf16 (AVX512-BF16); 0 = no or not sent */
        } ready;
        struct {
            int step, total;
            double elapsed;         /* seconds since the job started */
            const uint8_t *preview; /* optional live preview (PNG bytes), NULL/0 = none this step */
            size_t preview_len;
        } progress;
        struct {
            const uint8_t *png;
            size_t png_len;
            int width, height;
            uint64_t seed;
            double t_encode, t_sample, t_decode, t_total; /* seconds; the "timings" map on the wire */
            int index, count; /* image index of a batch of count images (one frame each, in order) */
            int precision;    /* SDW_PRECISION_* the job ran in ("fp32" | "bf16"); fp32 when not sent */
        } result;
        struct {
            const char *code;    /* "model_load_failed", "invalid_request", "engine_error", ... */
            const char *message; /* for people */
        } error;
        /* job: every field of the request's field table (gen_request.c); a decoded frame owns it */
        sdw_gen_request job;
    } u;
    void *_mem;    /* decoded frames: the one block holding every string and the png */
    int _owns_job; /* decoded job frames: u.job is freed with the frame */
} sdw_frame;

/** "hello", "ready", ...; "?" for an unknown value. */
const char *sdw_frame_type_name(sdw_frame_type t);
/** Largest encoded size a frame of type t may have on the wire. */
size_t sdw_frame_max_size(sdw_frame_type t);

/** Appends f as one msgpack map to sb. 0, or -1 (sb unchanged) when out of memory, the type is unknown or the
 * encoded frame would exceed sdw_frame_max_size(f->type). */
int sdw_frame_encode(msgpack_sbuffer *sb, const sdw_frame *f);

/* Typed conveniences around sdw_frame_encode(); same return values. */

/** hello: the first frame a worker sends. */
int sdw_frame_hello(msgpack_sbuffer *sb, int64_t pid, const char *device, const char *state);
/** ready: the model is loaded; the worker takes jobs from now on. native_size: the model's native image
 * side in pixels (what a job without a size gets), 0 = unknown (the key is then left out); bf16: 1 when the
 * worker runs bf16 jobs in bf16 (sde_bf16_available()). */
int sdw_frame_ready(msgpack_sbuffer *sb, const char *arch, const char *prediction, const char *model_hash,
                    const char *model_name, double load_s, int native_size, int bf16);
/** ready with the GPU's memory (vram NULL or vram->has 0: none, as sdw_frame_ready()). */
int sdw_frame_ready_vram(msgpack_sbuffer *sb, const char *arch, const char *prediction,
                         const char *model_hash, const char *model_name, double load_s, int native_size,
                         int bf16, const sdw_frame_vram *vram);
/** started: the worker accepted job. */
int sdw_frame_started(msgpack_sbuffer *sb, uint64_t job);
/** progress: step of total finished, elapsed seconds into the job. */
int sdw_frame_progress(msgpack_sbuffer *sb, uint64_t job, int step, int total, double elapsed);
/** progress with a live preview image (PNG bytes, any decoder's); png NULL or len 0 = none, as
 * sdw_frame_progress(). -1 too when the preview would make the frame exceed its limit. */
int sdw_frame_progress_preview(msgpack_sbuffer *sb, uint64_t job, int step, int total, double elapsed,
                               const uint8_t *png, size_t len);
/** result: the job's PNG and what the engine measured. */
int sdw_frame_result(msgpack_sbuffer *sb, uint64_t job, const uint8_t *png, size_t png_len, int width,
                     int height, uint64_t seed, double t_encode, double t_sample, double t_decode,
                     double t_total);
/** result of image index (0-based) of a batch of count images, 1..SDW_FRAME_MAX_IMAGES: one frame per
 * image, in index order; the last one completes the job. precision: the SDW_PRECISION_* the job ran in (-1
 * for a value outside them). sdw_frame_result() sends fp32. */
int sdw_frame_result_at(msgpack_sbuffer *sb, uint64_t job, int index, int count, const uint8_t *png,
                        size_t png_len, int width, int height, uint64_t seed, double t_encode,
                        double t_sample, double t_decode, double t_total, int precision);
/** sdw_frame_result_at() with the GPU's memory after the job (vram NULL or vram->has 0: none); a worker
 * sends it on the job's last image. */
int sdw_frame_result_vram(msgpack_sbuffer *sb, uint64_t job, int index, int count, const uint8_t *png,
                          size_t png_len, int width, int height, uint64_t seed, double t_encode,
                          double t_sample, double t_decode, double t_total, int precision,
                          const sdw_frame_vram *vram);
/** error: has_job 0 for an error outside any job (e.g. model_load_failed). */
int sdw_frame_error(msgpack_sbuffer *sb, int has_job, uint64_t job, const char *code, const char *message);
/** error with the GPU's memory after the job (vram NULL or vram->has 0: none). */
int sdw_frame_error_vram(msgpack_sbuffer *sb, int has_job, uint64_t job, const char *code,
                         const char *message, const sdw_frame_vram *vram);
/** cancelled: the job stopped at a step boundary on request. */
int sdw_frame_cancelled(msgpack_sbuffer *sb, uint64_t job);
/** cancelled with the GPU's memory after the job (vram NULL or vram->has 0: none). */
int sdw_frame_cancelled_vram(msgpack_sbuffer *sb, uint64_t job, const sdw_frame_vram *vram);
/** pong: the answer to ping. */
int sdw_frame_pong(msgpack_sbuffer *sb);
/** job: run the generation req (encoded through the request's field table; -1 also for a sampler or
 * schedule value outside its table). */
int sdw_frame_job(msgpack_sbuffer *sb, uint64_t job, const sdw_gen_request *req);
/** cancel: stop job at the next step boundary. */
int sdw_frame_cancel(msgpack_sbuffer *sb, uint64_t job);
/** ping: ask for a pong. */
int sdw_frame_ping(msgpack_sbuffer *sb);
/** shutdown: exit now without finishing the job. */
int sdw_frame_shutdown(msgpack_sbuffer *sb);

/** Releases what a decoded frame owns and zeroes it; a zeroed or encoder-filled frame is fine too. */
void sdw_frame_free(sdw_frame *f);

/** A streaming decoder for one direction of one connection. It never buffers more than its max_frame limit
 * (plus what complete frames still waiting for sdw_frame_reader_next() take), so a peer cannot make it grow.
 * Use:
 *     while (len > 0) {
 *         size_t n = sdw_frame_reader_feed(r, data, len);
 *         data += n, len -= n;
 *         while ((rc = sdw_frame_reader_next(r, &f, err, sizeof err)) == 1) { use(&f); sdw_frame_free(&f); }
 *         if (rc < 0) { the peer violated the protocol: drop the connection }
 *     }
 * A feed that takes 0 bytes is always followed by a next() that returns 1 or -1, so the loop ends. */
typedef struct sdw_frame_reader sdw_frame_reader;

/** A reader that accepts frames up to max_frame bytes (SDW_FRAME_MAX_RESULT on the supervisor side,
 * also on the worker side since job frames carry PNG inputs); NULL when out of memory. */
sdw_frame_reader *sdw_frame_reader_new(size_t max_frame);
void sdw_frame_reader_free(sdw_frame_reader *r);
/** Takes up to len bytes of the stream; returns how many it took (fewer when the buffer is at its limit:
 * drain complete frames with sdw_frame_reader_next() and feed the rest again). */
size_t sdw_frame_reader_feed(sdw_frame_reader *r, const void *data, size_t len);
/** 1 with the next frame in *f (free it with sdw_frame_free()), 0 when more bytes are needed, -1 with err on
 * a protocol violation: malformed msgpack, not a map, wrong version, unknown type, a missing or mistyped
 * field, an oversized frame. After -1 the reader is dead: every later call returns -1 with the same message.
 */
int sdw_frame_reader_next(sdw_frame_reader *r, sdw_frame *f, char *err, size_t errlen);
/** Bytes taken by feed and not yet returned as frames. */
size_t sdw_frame_reader_pending(const sdw_frame_reader *r);

#endif
