/* validate.h: checks a POST /v1/jobs request (content type, size, JSON body) and turns it into
 * typed job parameters, or into the API error (HTTP status, code, message, field) to answer with. */
#ifndef SDW_VALIDATE_H
#define SDW_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#include "gen_request.h"

/** Largest SDXL micro-conditioning number (original_size, crops_coords_top_left, target_size), pixels; the
 * engine's SDE_MAX_SDXL_SIZE. */
#define SDW_SDXL_COND_MAX 16384

/** Longest prompt or negative prompt accepted, in bytes of UTF-8. */
#define SDW_PROMPT_MAX_BYTES 4096

/** An error answer of the HTTP API: {"error":{"code","message","field"}} with status. */
typedef struct {
    int status; /* HTTP status: 400, 413, 415, ... */
    char
        code[32]; /* machine-readable: "invalid_json", "unknown_field", "invalid_type", "out_of_range", ... */
    char message[512]; /* for humans: what is wrong and what is accepted (the sampler list is ~300 bytes) */
    char field[32];    /* the request field concerned, "" when the error is not about one field */
} sdw_api_error;

/** The limits a request is checked against (from the service config). */
typedef struct {
    int max_width, max_height; /* multiples of 8, >= 64 */
    int max_steps;             /* >= 1 */
    size_t max_body_bytes;     /* larger bodies answer 413 */
    const char *lora_dir;      /* model.lora_dir, NULL = LoRAs are refused */
    int preview_every_default; /* preview_every of a job that does not give it (0 = no previews) */
    int preview_every_min;     /* smallest preview_every accepted besides 0 (>= 1) */
    /* model.preview_decoder, NULL = the job decoder "taesd" is refused */
    const char *preview_decoder;
    int default_size; /* width and height of a job that gives none (the served model's native size); 0 leaves
                       * them 0, for the supervisor to fill in when the job is dispatched */
    int max_batch;    /* limits.max_batch: most images per job (n), >= 1 */
    int precision;    /* model.precision: the SDW_PRECISION_* of a job that gives none (0 = fp32) */
} sdw_validate_limits;

/** Fills e (status, code, message, field) and returns -1, for callers building their own errors. */
int sdw_api_error_set(sdw_api_error *e, int status, const char *code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/** Accepts "application/json" with an optional charset=utf-8 (any case, other parameters ignored).
 * ct may be NULL (header absent). 0, or -1 with e set to 415. */
int sdw_validate_content_type(const char *ct, size_t len, sdw_api_error *e);

/** Parses and checks the JSON body of POST /v1/jobs into a request with the API's defaults (20 steps,
 * guidance 7.5, lim->default_size square, euler, discrete; has_seed 0 without a seed). 0 with *out filled
 * (free with sdw_gen_request_free), or -1 with e set (413 body too large, 400 otherwise) and *out empty but
 * initialised (freeing it is harmless). */
int sdw_validate_job_request(const char *body, size_t len, const sdw_validate_limits *lim,
                             sdw_gen_request *out, sdw_api_error *e);

#endif
