/* gen_request.h: one text-to-image request as plain data, shared by the API validation, the job registry,
 * the pool, the job frame, the worker and the CLI; a field table drives its copy, free and wire encoding. */
#ifndef SDW_GEN_REQUEST_H
#define SDW_GEN_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "gen_names.h"

/** One generation. Strings (and, later, byte buffers and lists) are owned by the request: set them with
 * sdw_gen_request_set_str() or malloc'd memory, release them with sdw_gen_request_free(). A new member that
 * travels in the job frame also gets a row in the field table (gen_request.c). */
typedef struct {
    char *prompt;          /* required, non-empty */
    char *negative_prompt; /* NULL or "" = none */
    int steps;             /* sampling steps, default 20 */
    double cfg_scale;      /* classifier-free guidance ("guidance_scale" in the HTTP API), default 7.5 */
    uint64_t seed;         /* meaningful when has_seed */
    int has_seed; /* 0: whoever runs the request draws one (not on the wire: the supervisor always has) */
    int width, height;     /* pixels, multiples of 8; 0 = the model's native size (CLI), default 0 */
    sdw_sampler sampler;   /* default euler */
    sdw_schedule schedule; /* default discrete */
    int clip_skip;         /* A1111's "Clip skip" (1 = last layer); 0 = the model's default */
    uint8_t *init_image;   /* img2img / inpainting: PNG bytes, NULL = text-to-image */
    size_t init_image_len;
    double strength; /* (0, 1], with init_image; default 0.75 */
    uint8_t *mask;   /* inpainting: PNG bytes, same size as init_image, white = repaint; NULL = none */
    size_t mask_len;
    int mask_blur;   /* mask feather, pixels 0..64, default 0 */
    int mask_mode;   /* how mask says "repaint": SDW_MASK_MODE_*, default luminance (white) */
    int mask_invert; /* repaint what mask_mode keeps and keep what it repaints (A1111's mask invert) */
    char *loras;     /* LoRA list "NAME:WEIGHT\n..." (names plain files in lora_dir), NULL = none */
    char *lora_dir;  /* where LoRA names resolve: set by the supervisor (config) or the CLI, never a client */
    int preview_every; /* live preview every K steps in the progress frame, 0 = none (default) */
    int decoder;       /* SDW_DECODER_*: what decodes the final image, default the VAE */
    /* SDXL micro-conditioning in pixels (other models ignore it); 0 = the reference default: original and
     * target size = the image size, crop top-left 0,0 */
    int orig_width, orig_height;     /* "original_size" */
    int crop_top, crop_left;         /* "crops_coords_top_left" */
    int target_width, target_height; /* "target_size" */
    int n;                           /* images in the job (a batch), seeds seed, seed+1, ...; default 1 */
    int precision;                   /* SDW_PRECISION_*: the arithmetic asked for, default fp32 */
} sdw_gen_request;

/** mask_mode values: the conventions of the HTTP surfaces, applied by the worker (which decodes pixels). */
#define SDW_MASK_MODE_LUMA 0        /* white = repaint (luminance): /v1/jobs and the CLI */
#define SDW_MASK_MODE_ALPHA0 1      /* OpenAI's mask: alpha 0 = repaint (luminance without alpha) */
#define SDW_MASK_MODE_IMAGE_ALPHA 2 /* OpenAI's image as its mask: alpha 0; none clear = no mask */
#define SDW_MASK_MODE_A1111 3       /* A1111: an RGBA mask's alpha > 128, else luminance */

/** Values of sdw_gen_request.decoder ("decoder": "vae" | "taesd" in the API): the checkpoint's VAE, or the
 * TAESD tiny autoencoder the worker loaded (model.preview_decoder) for fast drafts. */
enum { SDW_DECODER_VAE = 0, SDW_DECODER_TAESD = 1 };

/** Values of sdw_gen_request.precision ("precision": "fp32" | "bf16" in the API, model.precision in the
 * config): float32 throughout (the default, matched to the peer), or the opt-in bf16 GEMMs where the CPU has
 * AVX512-BF16 (elsewhere the job runs in fp32 and its result says so). */
enum { SDW_PRECISION_FP32 = 0, SDW_PRECISION_BF16 = 1 };

/** "fp32" or "bf16" for an SDW_PRECISION_* value, NULL for any other. */
const char *sdw_precision_name(int precision);
/** SDW_PRECISION_* for "fp32" or "bf16" (exact spelling), -1 for anything else (NULL too). */
int sdw_precision_parse(const char *name);

/** How a field is stored and sent. */
typedef enum {
    SDW_GF_STR = 0, /* char *, owned; on the wire a string ("" for NULL) */
    SDW_GF_INT,     /* int */
    SDW_GF_U64,     /* uint64_t */
    SDW_GF_DOUBLE,  /* double */
    SDW_GF_BOOL,    /* int 0/1; msgpack boolean */
    SDW_GF_NAME,    /* an enum of a gen_names table; on the wire its canonical name */
    SDW_GF_BYTES    /* uint8_t *, owned, with a size_t length at len_off; msgpack bin */
} sdw_gen_field_kind;

/** One row of the field table. */
typedef struct {
    const char *key;         /* the job frame's key */
    sdw_gen_field_kind kind; /* storage and wire type */
    size_t off;              /* offsetof the member in sdw_gen_request */
    size_t len_off;          /* BYTES: offsetof the size_t length */
    sdw_names_kind names;    /* NAME: which table */
    int required;            /* decoding: 1 = a frame without it is refused; 0 = the init default stays */
} sdw_gen_field;

/** The field table: every member that travels in a job frame, in wire order; *n gets the row count. */
const sdw_gen_field *sdw_gen_request_fields(int *n);

/** Sets the defaults (steps 20, cfg 7.5, euler, discrete, size 0, no seed) and no strings. */
void sdw_gen_request_init(sdw_gen_request *r);
/** Frees what r owns (safe on a zeroed, partially filled or already freed request) and re-inits it. */
void sdw_gen_request_free(sdw_gen_request *r);
/** Deep copy of src into dst (dst's old contents are not freed). 0, or -1 out of memory with dst empty. */
int sdw_gen_request_copy(sdw_gen_request *dst, const sdw_gen_request *src);
/** Replaces the owned string *dst with a copy of s (NULL gives NULL). 0, or -1 out of memory (*dst kept). */
int sdw_gen_request_set_str(char **dst, const char *s);

#endif
