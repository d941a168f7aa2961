/* validate.h: checks a POST /v1/jobs request (content type, size, JSON body) and turns it into
 * typed job parameters, or into the API error (HTTP status, code, message, field) to answer with. */
#ifndef SDW_VALIDATE_H
#define SDW_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

/** Longest prompt or negative prompt accepted, in bytes of UTF-8. */
#define SDW_PROMPT_MAX_BYTES 4096

/** An error answer of the HTTP API: {"error":{"code","message","field"}} with status. */
typedef struct {
    int status;        /* HTTP status: 400, 413, 415, ... */
    char code[32];     /* machine-readable: "invalid_json", "unknown_field", "invalid_type", "out_of_range", ... */
    char message[320]; /* for humans: what is wrong and what is accepted */
    char field[32];    /* the request field concerned, "" when the error is not about one field */
} sdw_api_error;

/** The limits a request is checked against (from the service config). */
typedef struct {
    int max_width, max_height; /* multiples of 8, >= 64 */
    int max_steps;             /* >= 1 */
    size_t max_body_bytes;     /* larger bodies answer 413 */
} sdw_validate_limits;

/** A validated job request; strings are owned (sdw_job_request_free). */
typedef struct {
    char *prompt;          /* non-empty, <= SDW_PROMPT_MAX_BYTES */
    char *negative_prompt; /* "" when not given */
    int steps;             /* 1..max_steps, default 20 */
    double guidance_scale; /* 0..30, default 7.5 */
    uint64_t seed;         /* meaningful when has_seed */
    int has_seed;          /* 0: the caller draws a random seed */
    int width, height;     /* multiples of 8 in 64..max, default 512 */
    char sampler[16];      /* euler|euler_a|ddim|dpmpp_2m|lcm, default euler */
    char schedule[16];     /* discrete|karras, default discrete */
} sdw_job_request;

/** Fills e (status, code, message, field) and returns -1, for callers building their own errors. */
int sdw_api_error_set(sdw_api_error *e, int status, const char *code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/** Accepts "application/json" with an optional charset=utf-8 (any case, other parameters ignored).
 * ct may be NULL (header absent). 0, or -1 with e set to 415. */
int sdw_validate_content_type(const char *ct, size_t len, sdw_api_error *e);

/** Parses and checks the JSON body of POST /v1/jobs. 0 with *out filled (free with sdw_job_request_free),
 * or -1 with e set (413 body too large, 400 otherwise) and *out holding nothing to free. */
int sdw_validate_job_request(const char *body, size_t len, const sdw_validate_limits *lim, sdw_job_request *out,
                             sdw_api_error *e);

/** Frees the strings of r (safe on a zeroed or already freed request). */
void sdw_job_request_free(sdw_job_request *r);

/** 1 if name is a sampler the engine knows, else 0. */
int sdw_validate_sampler_known(const char *name);
/** 1 if name is a noise schedule the engine knows, else 0. */
int sdw_validate_schedule_known(const char *name);

#endif
