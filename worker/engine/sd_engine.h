/* sd_engine.h: the public API of the diffusion engine library (libsdengine).
 * Prompt in, PNG out. Knows nothing of processes, frames or HTTP. */
#ifndef SD_ENGINE_H
#define SD_ENGINE_H

#include <stddef.h>
#include <stdint.h>

/* the sampler/schedule/prediction rows (pure data, common/gen_names.h): the enums below are generated from
 * them */
#include "gen_names.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Return codes of sde_generate(). */
#define SDE_OK 0
#define SDE_ERR -1
#define SDE_CANCELLED 1

/** Most images one generation makes (sde_gen_params.n_images). */
#define SDE_MAX_IMAGES 16
/** Default budget for the UNet activations of a batch, in MiB (sde_gen_params.batch_mem_mb). */
#define SDE_BATCH_MEM_MB 2048

/** Prediction type of the UNet. AUTO: what the checkpoint says (a diffusers scheduler_config.json
 * "prediction_type", or metadata); else for SD 2.x what the weights show (predict.h), else eps for SD 1.x
 * and v for SD 2.x. */
#define SDE_PRED_ENUM_(id, n, d, a) SDE_PRED_##id = SDW_PREDICTION_##id,
typedef enum { SDW_PREDICTION_ROWS(SDE_PRED_ENUM_) } sde_prediction;

/** The samplers and schedules, one value per row of gen_names.h, same numbering as sdw_sampler and
 * sdw_schedule (so a request's value converts by a cast). */
#define SDE_SAMPLER_ENUM_(id, n, d, a) SDE_SAMPLER_##id = SDW_SAMPLER_##id,
typedef enum { SDW_SAMPLER_ROWS(SDE_SAMPLER_ENUM_) } sde_sampler;
#define SDE_SCHEDULE_ENUM_(id, n, d, a) SDE_SCHEDULE_##id = SDW_SCHEDULE_##id,
typedef enum { SDW_SCHEDULE_ROWS(SDE_SCHEDULE_ENUM_) } sde_schedule;

/** Receives one engine warning (a line of text, no newline). The engine never writes to stderr itself: the
 * worker logs these, the CLI prints them. */
typedef void (*sde_warn_fn)(void *ud, const char *msg);

/** Options for sde_engine_load(). Zeroed struct = defaults. */
typedef struct {
    const char *model_path;     /* single .safetensors file or diffusers folder */
    const char *tokenizer_path; /* optional override: bpe .txt(.gz), vocab.json, or a vocab.json+merges.txt
                                 * folder; without it the model's own, else CLIP's built into the engine */
    sde_prediction prediction;  /* SDE_PRED_AUTO by default */
    int threads;                /* BLAS threads; 0 = leave OpenBLAS's default */
    sde_warn_fn warn;           /* warnings while loading and generating; NULL drops them */
    void *warn_ud;              /* passed to warn */
    const char *backend; /* where the models run: "cpu" (NULL or "" = cpu), or "cuda" in a -DSDW_CUDA=ON
                          * build: the first visible GPU (CUDA_VISIBLE_DEVICES); docs/backends.md */
    int profile;         /* 1: time every op and model section, slower; sde_result.profile gets the table. The
                          * environment's SDW_PROFILE=1 turns it on too (docs/backends.md) */
    const char *taesd_path; /* optional TAESD (tiny autoencoder) .safetensors: previews decode with it,
                             * and jobs may ask for it as their decoder (sde_gen_params.decoder) */
    int warm; /* 1: while loading, fault in the UNet activations of a CFG job of warm_width x warm_height
               * (0 x 0: the model's native size) on another thread, kept for the first job that fits them
               * (CPU backend; docs/backends.md) */
    int warm_width, warm_height;
} sde_load_opts;

/** What was loaded, for logs, /ready and the PNG parameters chunk. */
typedef struct {
    char arch[16];        /* "sd1", "sd2", "sdxl", or "tiny" */
    char prediction[4];   /* "eps" or "v" */
    char model_hash[16];  /* A1111-style short hash (first 10 hex of sha256 of the file), "" for folders */
    char model_name[128]; /* basename of the model path, without extension */
    int context_dim;      /* text embedding width: 768, 1024, 2048 (SDXL), ... */
    int default_size;     /* native resolution: 512 (SD1), 768 (SD2 v), 1024 (SDXL), 64 (tiny) */
    int64_t n_params;     /* parameters loaded */
    char prediction_source[12]; /* where prediction came from: option, config, metadata, weights, default */
    int taesd;                  /* a TAESD decoder is loaded (sde_load_opts.taesd_path) */
    int inpaint; /* 1: a 9-channel inpainting UNet (conv_in takes latent, mask, masked-image latent) */
    int bf16; /* 1: SDE_PREC_BF16 jobs run in bf16 (the CPU backend on a CPU with AVX512-BF16; a GPU's do not)
               */
} sde_model_info;

/** What turns the final latent into the image: the checkpoint's VAE, or the TAESD given at load time (a
 * fraction of a second instead of seconds, for drafts; sde_generate fails when none is loaded). */
typedef enum { SDE_DECODER_VAE = 0, SDE_DECODER_TAESD = 1 } sde_decoder;
/** Arithmetic of a job's big GEMMs (convolutions, linear layers, attention): float32 throughout (the
 * default, the path matched against the peer), or bf16 inputs with float32 accumulation through
 * AVX512-BF16 where the CPU has it (elsewhere the job runs in float32; sde_result.precision says which). */
typedef enum { SDE_PREC_FP32 = 0, SDE_PREC_BF16 = 1 } sde_precision;

/** One LoRA for a job: the file NAME.safetensors in lora_dir, merged with weight (docs/workflows.md). */
typedef struct {
    const char *name;
    float weight;
} sde_lora_spec;

/** Parameters of one text-to-image generation. */
typedef struct {
    const char *prompt;
    const char *negative_prompt; /* NULL or "" = empty */
    int steps;                   /* 1..150 */
    float cfg_scale;             /* 1.0 disables the unconditional pass */
    uint64_t seed;
    sde_sampler sampler;
    sde_schedule schedule;
    int width, height; /* multiples of 8, 64..2048 */
    /** img2img / inpainting (docs/workflows.md): init image as 8-bit RGB (rows top to bottom, no padding),
     * NULL for text-to-image. An image of another size than width x height is resized to it (bilinear). */
    const uint8_t *init_rgb;
    int init_w, init_h;
    /** How much of the schedule reruns over the init image, (0, 1]; 0 means 1 (ignored without one). */
    float strength;
    /** Inpainting mask as 8-bit RGB (its luminance counts), mask_w x mask_h = init_w x init_h; white =
     * repaint, black = keep. NULL = repaint everything. */
    const uint8_t *mask;
    int mask_w, mask_h;
    /** Feathers the mask edge: box-blur radius in image pixels, 0..64 (0: hard 0/1 mask, as the peer). */
    int mask_blur;
    /** LoRA: the folder names resolve in (NULL: LoRAs are refused), and the list; <lora:NAME:W> tags in the
     * prompt are added to it and removed from the text. Applied for this job only. */
    const char *lora_dir;
    const sde_lora_spec *loras;
    int n_loras;
    /** Live previews: every preview_every steps (0 = none) the step's denoised latent, decoded by the TAESD
     * when one is loaded, else mapped to RGB by the linear approximation (<= 256 px long side, PNG), goes to
     * preview (png only valid during the call). */
    int preview_every;
    void (*preview)(void *ud, int step, int total, const uint8_t *png, size_t len, int w, int h);
    /** Called after every step; returning non-zero cancels. May be NULL. */
    int (*progress)(void *ud, int step, int total, double elapsed_s);
    /** Polled between steps (and between stages); non-zero cancels. May be NULL. */
    int (*should_cancel)(void *ud);
    void *ud;
    /** Text encoder layer to take the conditioning from, counted from the end as A1111 does: 1 = last,
     * 2 = penultimate... 0 = the model's default (SD 1.x 1, SD 2.x 2). */
    int clip_skip;
    /** SDXL micro-conditioning in pixels; 0 = the reference defaults: original and target size = the image
     * size, crop top-left (0, 0). Other models ignore them. */
    int orig_width, orig_height;
    int crop_left, crop_top;
    int target_width, target_height;
    /** The final image's decoder (SDE_DECODER_VAE by default). */
    sde_decoder decoder;
    /** Batch: images to make, 0 or 1 = one, up to SDE_MAX_IMAGES; image i has seed + i and is the image a
     * single job with that seed makes (img2img: all share the init latent encoded with seed, as the peer).
     * The UNet takes as many of them per call as fit batch_mem_mb MiB of activations (0: SDE_BATCH_MEM_MB),
     * at least one; previews show image 0, progress counts the steps of all of them. */
    int n_images;
    int batch_mem_mb;
    /** SDE_PREC_FP32 (default) or SDE_PREC_BF16 (opt-in; see sde_precision). */
    sde_precision precision;
} sde_gen_params;

/** Largest SDXL micro-conditioning number (original_size, crop, target_size) sde_params_validate() takes. */
#define SDE_MAX_SDXL_SIZE 16384

/** One image of a result. */
typedef struct {
    uint8_t *png;
    size_t png_len;
    uint64_t seed;
} sde_image;

/** Result of a generation; free with sde_result_free(). Times in seconds. */
typedef struct {
    uint8_t *png; /* image 0 (the same buffer as images[0].png) */
    size_t png_len;
    int width, height;
    uint64_t seed;     /* image 0's */
    sde_image *images; /* [n_images]: every image, in seed order */
    int n_images;
    double t_encode, t_sample, t_decode, t_total;
    double t_lora;           /* merging the job's LoRAs in (included in t_encode), 0 without */
    int n_loras;             /* LoRAs applied */
    double t_preview;        /* making live previews (included in t_sample) */
    char *profile;           /* with profiling on: where the time went, a table in text lines; else NULL */
    sde_precision precision; /* what the job ran in: bf16 only when asked for and the CPU has AVX512-BF16 */
} sde_result;

typedef struct sde_engine sde_engine;

/** Loads a checkpoint and its tokenizer. Returns 0, or -1 with a message naming the file/tensor in err. */
int sde_engine_load(const sde_load_opts *opts, sde_engine **out, char *err, size_t errlen);
/** VRAM of the engine's device: 0 with free and total bytes filled when it runs on a GPU, -1 otherwise. */
int sde_engine_vram(const sde_engine *e, size_t *free_bytes, size_t *total_bytes);
/** Non-zero once the engine's device has failed beyond recovery (a GPU fault; every job fails from then on),
 * with why in err. A job that ran out of GPU memory while reserving its buffers is not such a failure. */
int sde_engine_broken(const sde_engine *e, char *err, size_t errlen);

/** Releases everything the engine holds. NULL is fine. */
void sde_engine_free(sde_engine *e);
/** Fills info about the loaded model. */
void sde_engine_info(const sde_engine *e, sde_model_info *info);
/** Checks params against the engine's limits; 0 or -1 with err and *field set to the offending name. */
int sde_params_validate(const sde_gen_params *p, const char **field, char *err, size_t errlen);
/** Runs one generation. SDE_OK, SDE_CANCELLED, or SDE_ERR with err filled. */
int sde_generate(sde_engine *e, const sde_gen_params *p, sde_result *res, char *err, size_t errlen);
/** 1 when this CPU runs SDE_PREC_BF16 jobs in bf16 (AVX512-BF16 present), else 0 (they run in fp32). */
int sde_bf16_available(void);
/** Frees a result's buffers. */
void sde_result_free(sde_result *r);

/** Name <-> enum helpers over the gen_names.h table; parse functions return -1 for an unknown name. */
const char *sde_sampler_name(sde_sampler s);
int sde_sampler_parse(const char *name);
const char *sde_schedule_name(sde_schedule s);
int sde_schedule_parse(const char *name);

#ifdef __cplusplus
}
#endif
#endif
