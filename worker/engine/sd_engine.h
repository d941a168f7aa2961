/* sd_engine.h: the public API of the diffusion engine library (libsdengine).
 * Prompt in, PNG out. Knows nothing of processes, frames or HTTP. */
#ifndef SD_ENGINE_H
#define SD_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Return codes of sde_generate(). */
#define SDE_OK 0
#define SDE_ERR -1
#define SDE_CANCELLED 1

/** Prediction type of the UNet. AUTO: what the checkpoint says (a diffusers scheduler_config.json
 * "prediction_type", or metadata); else for SD 2.x what the weights show (predict.h), else eps for SD 1.x
 * and v for SD 2.x. */
typedef enum { SDE_PRED_AUTO = 0, SDE_PRED_EPS, SDE_PRED_V } sde_prediction;

typedef enum {
    SDE_SAMPLER_EULER = 0,
    SDE_SAMPLER_EULER_A,
    SDE_SAMPLER_DDIM,
    SDE_SAMPLER_DPMPP_2M,
    SDE_SAMPLER_LCM,
    /* issue 14: the k-diffusion samplers of stable-diffusion.cpp */
    SDE_SAMPLER_HEUN,
    SDE_SAMPLER_DPM2,
    SDE_SAMPLER_DPMPP_2S_A,
    SDE_SAMPLER_DPMPP_2M_SDE,
    SDE_SAMPLER_DPMPP_2M_V2,
    SDE_SAMPLER_IPNDM,
    SDE_SAMPLER_IPNDM_V,
    SDE_SAMPLER_LMS,
    SDE_SAMPLER_DDIM_TRAILING,
    SDE_SAMPLER_TCD,
    SDE_SAMPLER_EULER_CFG_PP,
    SDE_SAMPLER_EULER_A_CFG_PP,
    SDE_SAMPLER_RES_MULTISTEP,
    SDE_SAMPLER_RES_2S,
    SDE_SAMPLER_ER_SDE,
    SDE_SAMPLER_EULER_GE,
    SDE_SAMPLER_DPMPP_2M_SDE_BT,
} sde_sampler;
typedef enum {
    SDE_SCHEDULE_DISCRETE = 0,
    SDE_SCHEDULE_KARRAS,
    /* issue 14 */
    SDE_SCHEDULE_EXPONENTIAL,
    SDE_SCHEDULE_AYS,
    SDE_SCHEDULE_GITS,
    SDE_SCHEDULE_SGM_UNIFORM,
    SDE_SCHEDULE_SIMPLE,
    SDE_SCHEDULE_KL_OPTIMAL,
    SDE_SCHEDULE_BETA,
    SDE_SCHEDULE_SMOOTHSTEP,
    SDE_SCHEDULE_LCM,
} sde_schedule;

/** Options for sde_engine_load(). Zeroed struct = defaults. */
typedef struct {
    const char *model_path;     /* single .safetensors file or diffusers folder */
    const char *tokenizer_path; /* optional: bpe .txt(.gz), vocab.json, or a folder with vocab.json+merges.txt */
    sde_prediction prediction;  /* SDE_PRED_AUTO by default */
    int threads;                /* BLAS threads; 0 = leave OpenBLAS's default */
} sde_load_opts;

/** What was loaded, for logs, /ready and the PNG parameters chunk. */
typedef struct {
    char arch[16];         /* "sd1", "sd2", or "tiny" */
    char prediction[4];    /* "eps" or "v" */
    char model_hash[16];   /* A1111-style short hash (first 10 hex of sha256 of the file), "" for folders */
    char model_name[128];  /* basename of the model path, without extension */
    int context_dim;       /* text embedding width: 768, 1024, ... */
    int default_size;      /* native resolution: 512 (SD1), 768 (SD2 v), 64 (tiny) */
    int64_t n_params;      /* parameters loaded */
    char prediction_source[12]; /* where prediction came from: option, config, metadata, weights, default */
} sde_model_info;

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
    /** Called after every step; returning non-zero cancels. May be NULL. */
    int (*progress)(void *ud, int step, int total, double elapsed_s);
    /** Polled between steps (and between stages); non-zero cancels. May be NULL. */
    int (*should_cancel)(void *ud);
    void *ud;
    /** Text encoder layer to take the conditioning from, counted from the end as A1111 does: 1 = last,
     * 2 = penultimate... 0 = the model's default (SD 1.x 1, SD 2.x 2). */
    int clip_skip;
} sde_gen_params;

/** Result of a generation; free with sde_result_free(). Times in seconds. */
typedef struct {
    uint8_t *png;
    size_t png_len;
    int width, height;
    uint64_t seed;
    double t_encode, t_sample, t_decode, t_total;
} sde_result;

typedef struct sde_engine sde_engine;

/** Loads a checkpoint and its tokenizer. Returns 0, or -1 with a message naming the file/tensor in err. */
int sde_engine_load(const sde_load_opts *opts, sde_engine **out, char *err, size_t errlen);
/** Releases everything the engine holds. NULL is fine. */
void sde_engine_free(sde_engine *e);
/** Fills info about the loaded model. */
void sde_engine_info(const sde_engine *e, sde_model_info *info);
/** Checks params against the engine's limits; 0 or -1 with err and *field set to the offending name. */
int sde_params_validate(const sde_gen_params *p, const char **field, char *err, size_t errlen);
/** Runs one generation. SDE_OK, SDE_CANCELLED, or SDE_ERR with err filled. */
int sde_generate(sde_engine *e, const sde_gen_params *p, sde_result *res, char *err, size_t errlen);
/** Frees a result's buffers. */
void sde_result_free(sde_result *r);

/** Name <-> enum helpers; parse functions return -1 for an unknown name. */
const char *sde_sampler_name(sde_sampler s);
int sde_sampler_parse(const char *name);
const char *sde_schedule_name(sde_schedule s);
int sde_schedule_parse(const char *name);
/** AUTOMATIC1111's display name ("Euler a", "DPM++ 2M SDE"; schedules "Karras", "Uniform"...), or NULL
 * when A1111 has no such sampler or schedule. */
const char *sde_sampler_a1111_name(sde_sampler s);
const char *sde_schedule_a1111_name(sde_schedule s);

#ifdef __cplusplus
}
#endif
#endif
