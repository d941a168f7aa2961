/* api.h: what the client-facing surfaces beside /v1/jobs share: the request gate (Host, API
 * key), one submit path with the per-key limit, responses held until a job ends, and their dispatchers. */
#ifndef SDW_API_H
#define SDW_API_H

#include "multipart.h"
#include "srv.h"

/** Which error body a surface answers with. */
typedef enum { SDW_SHAPE_NATIVE = 0, SDW_SHAPE_OPENAI, SDW_SHAPE_A1111 } sdw_err_shape;

/** The shape a path's errors take (/v1/images, /v1/models: OpenAI; /sdapi: A1111; else ours). */
sdw_err_shape sdw_api_shape(const char *path, size_t len);
/** The metrics label of a path outside /v1/jobs: one of a fixed set ("/v1/images/generations",
 * "/v1/models/{id}", "/sdapi/v1/txt2img", "/", ...), else "other", so clients cannot grow the label set. */
const char *sdw_api_route_pattern(const char *path, size_t len);
/** Sends e in the given shape: OpenAI {"error":{"message","type","param","code"}}, A1111 {"error","detail",
 * "body","errors"}, else ours. */
void sdw_api_send_error(sdw_srv *s, h2o_req_t *req, sdw_err_shape shape, const sdw_api_error *e);

/** Checks what every request must pass before routing: the Host of a loopback listener (else 421) and
 * the API key where keys are configured and the path needs one (else 401). 0 to go on, -1 when answered.
 * Request framing (Content-Length beside Transfer-Encoding) cannot be judged here: h2o 2.2.5 consumes
 * both headers while parsing and passes neither to handlers (see docs/api.md). */
int sdw_api_gate(sdw_srv *s, h2o_req_t *req, int needs_key);
/** The name of the key the request was let in with, or NULL (no keys configured, or an exempt path). */
const char *sdw_api_key_name(h2o_req_t *req);

/** The request body as a JSON object (within limits.max_body_bytes), or NULL with e set (413, or 400
 * invalid_json). The caller owns the object. */
json_t *sdw_api_read_object(sdw_srv *s, h2o_req_t *req, sdw_api_error *e);
/** Submits jr (moved into the job on success) for the request's key: the shutdown, worker and per-key
 * checks, the registry, metrics and the queued log line. 0 with *out, or -1 with e (Retry-After already
 * added for 429). */
int sdw_api_submit(sdw_srv *s, h2o_req_t *req, sdw_gen_request *jr, sdw_job **out, sdw_api_error *e);

/** Builds the answer for an ended job: a JSON body (status set) for a held JSON response, or one SSE
 * event's text for a held stream. ud is what the hold was given. */
typedef json_t *(*sdw_hold_json_fn)(sdw_srv *s, h2o_req_t *req, sdw_job *job, void *ud, int *status);
typedef sdw_rcbuf *(*sdw_hold_sse_fn)(sdw_srv *s, h2o_req_t *req, sdw_job *job, void *ud);

/** Answers req once job ends with fn's JSON. If h2o drops the request first (it notices a closed HTTP/1
 * connection only when writing), the job is cancelled. */
void sdw_hold_json(sdw_srv *s, h2o_req_t *req, sdw_job *job, sdw_hold_json_fn fn, void *ud);
/** Opens an event stream now (keepalive comments meanwhile) and ends it with fn's event once job ends; a
 * reader found gone at a keepalive cancels the job. */
void sdw_hold_sse(sdw_srv *s, h2o_req_t *req, sdw_job *job, sdw_hold_sse_fn fn, void *ud);
/** sdw_hold_sse(), and after each progress of the job partial_fn may give an event to send before the end
 * (NULL: nothing now). While a send is in flight it is asked once more when that send is done, so it should
 * build from the job's latest state (a slow reader gets the newest preview, not a backlog). */
void sdw_hold_sse_partials(sdw_srv *s, h2o_req_t *req, sdw_job *job, sdw_hold_sse_fn fn,
                           sdw_hold_sse_fn partial_fn, void *ud);

/** The model name the workers serve (the checkpoint's file name without its extension). */
const char *sdw_api_model_name(sdw_srv *s);
/** The request's own base URL ("http://host:port"), for absolute links in answers. */
h2o_iovec_t sdw_api_base_url(h2o_req_t *req);

/** The most parts an OpenAI multipart form may have. */
#define SDW_OPENAI_FORM_PARTS 32
/** Reads the request body as multipart/form-data into parts (at most SDW_OPENAI_FORM_PARTS): 0 with *n, or
 * -1 with e (413 over limits.max_body_bytes, 415 without Content-Type, 400 invalid_multipart otherwise). */
int sdw_openai_form_read(sdw_srv *s, h2o_req_t *req, sdw_mp_part *parts, int *n, sdw_api_error *e);
/** Answers POST /v1/images/edits (api_openai_edits.c): img2img, or inpainting with a mask. */
void sdw_openai_edit(sdw_srv *s, h2o_req_t *req);
/** The options of one OpenAI images answer (response_format, quality), zeroed in req's pool: what
 * sdw_openai_translate fills and the done functions read. */
void *sdw_openai_opts_new(h2o_req_t *req);
/** Turns the fields of an OpenAI images request (in) into POST /v1/jobs fields (out), as
 * /v1/images/generations does: model, n, size, response_format, quality, stream and the extensions. 0, or
 * -1 with e naming the field (400 unknown_parameter for a field it does not know). */
int sdw_openai_translate(sdw_srv *s, json_t *in, json_t *out, void *opts, int *stream, sdw_api_error *e);
/** The OpenAI images answer (a sdw_hold_json_fn) and its stream event (a sdw_hold_sse_fn); ud is the opts. */
json_t *sdw_openai_images_done(sdw_srv *s, h2o_req_t *req, sdw_job *job, void *ud, int *status);
sdw_rcbuf *sdw_openai_images_stream_done(sdw_srv *s, h2o_req_t *req, sdw_job *job, void *ud);

/** Handles the OpenAI routes (/v1/images/..., /v1/models...); 1 if path was one of them. */
int sdw_openai_dispatch(sdw_srv *s, h2o_req_t *req);
/** What /sdapi/v1/img2img's translation leaves for the check after validation. */
typedef struct {
    int resize_mode; /* A1111's: 0 just resize (the engine's), 1 crop, 2 fill, 3 latent upscale */
    int mask;        /* a mask was given */
    int invert;      /* inpainting_mask_invert */
} sdw_a1111_i2i;
/** Adds the img2img fields of an A1111 request (in) to the /v1/jobs fields (out): init_images[0] as
 * init_image, mask, denoising_strength, mask_blur (4
 * by default with a mask), inpainting_mask_invert, resize_mode (into st); sets in's images to null for the
 * echo unless include_init_images. 0, or -1 with e naming the A1111 field. (api_a1111_img2img.c) */
int sdw_a1111_img2img_translate(json_t *in, json_t *out, sdw_a1111_i2i *st, sdw_api_error *e);
/** After validation: sets r's mask conventions (A1111's, inverted or not; the worker applies them) and
 * refuses a resize_mode other than 0 when the init image needs resizing. 0, or -1 with e. */
int sdw_a1111_img2img_check(sdw_gen_request *r, const sdw_a1111_i2i *st, sdw_api_error *e);

/** Handles the AUTOMATIC1111 routes (/sdapi/v1/...); 1 if path was one of them. */
int sdw_a1111_dispatch(sdw_srv *s, h2o_req_t *req);
/** Serves the built-in page (GET / and /index.html); 1 if path was it. */
int sdw_webui_dispatch(sdw_srv *s, h2o_req_t *req);

#endif
