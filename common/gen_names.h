/* gen_names.h: the one table of sampler, noise-schedule and prediction names (canonical name, display name
 * for the PNG parameters chunk, aliases) and their enum values. Pure data: the engine includes it too. */
#ifndef SDW_GEN_NAMES_H
#define SDW_GEN_NAMES_H

#include <stddef.h>

/* The rows. X(ID, canonical name, display name, aliases: "a|b" or "") per entry, in enum order. The canonical
 * name is what the API, the CLI and the frames speak; the display name is AUTOMATIC1111's spelling where
 * A1111 has the sampler (the PNG parameters chunk and /sdapi use it), else the canonical one; the aliases
 * hold stable-diffusion.cpp's --sampling-method/--scheduler spellings and ComfyUI's. Parsing takes any of the
 * three, in any letter case. Adding a sampler or schedule is one row here (and its implementation in the
 * engine). */
#define SDW_SAMPLER_ROWS(X)                                                                                  \
    X(EULER, "euler", "Euler", "")                                                                           \
    X(EULER_A, "euler_a", "Euler a", "euler_ancestral")                                                      \
    X(DDIM, "ddim", "DDIM", "")                                                                              \
    X(DPMPP_2M, "dpmpp_2m", "DPM++ 2M", "dpm++2m")                                                           \
    X(LCM, "lcm", "LCM", "")                                                                                 \
    X(HEUN, "heun", "Heun", "")                                                                              \
    X(DPM2, "dpm2", "DPM2", "dpm_2")                                                                         \
    X(DPMPP_2S_A, "dpmpp_2s_a", "DPM++ 2S a", "dpm++2s_a|dpmpp_2s_ancestral")                                \
    X(DPMPP_2M_SDE, "dpmpp_2m_sde", "DPM++ 2M SDE", "dpm++2m_sde")                                           \
    X(DPMPP_2M_V2, "dpmpp_2m_v2", "dpmpp_2m_v2", "dpm++2mv2")                                                \
    X(IPNDM, "ipndm", "ipndm", "")                                                                           \
    X(IPNDM_V, "ipndm_v", "ipndm_v", "")                                                                     \
    X(LMS, "lms", "LMS", "")                                                                                 \
    X(DDIM_TRAILING, "ddim_trailing", "ddim_trailing", "")                                                   \
    X(TCD, "tcd", "tcd", "")                                                                                 \
    X(EULER_CFG_PP, "euler_cfg_pp", "euler_cfg_pp", "")                                                      \
    X(EULER_A_CFG_PP, "euler_a_cfg_pp", "euler_a_cfg_pp", "euler_ancestral_cfg_pp")                          \
    X(RES_MULTISTEP, "res_multistep", "res_multistep", "")                                                   \
    X(RES_2S, "res_2s", "res_2s", "")                                                                        \
    X(ER_SDE, "er_sde", "er_sde", "")                                                                        \
    X(EULER_GE, "euler_ge", "euler_ge", "gradient_estimation")                                               \
    X(DPMPP_2M_SDE_BT, "dpmpp_2m_sde_bt", "dpmpp_2m_sde_bt", "dpm++2m_sde_bt")

/* A1111 calls the plain linspace-of-timesteps schedule "Uniform"; ComfyUI and the peer call it "normal". */
#define SDW_SCHEDULE_ROWS(X)                                                                                 \
    X(DISCRETE, "discrete", "Uniform", "normal")                                                             \
    X(KARRAS, "karras", "Karras", "")                                                                        \
    X(EXPONENTIAL, "exponential", "Exponential", "")                                                         \
    X(AYS, "ays", "Align Your Steps", "align_your_steps")                                                    \
    X(GITS, "gits", "Align Your Steps GITS", "")                                                             \
    X(SGM_UNIFORM, "sgm_uniform", "SGM Uniform", "")                                                         \
    X(SIMPLE, "simple", "Simple", "")                                                                        \
    X(KL_OPTIMAL, "kl_optimal", "KL Optimal", "")                                                            \
    X(BETA, "beta", "Beta", "")                                                                              \
    X(SMOOTHSTEP, "smoothstep", "smoothstep", "")                                                            \
    X(LCM, "lcm", "lcm", "")

/* What the UNet predicts; AUTO asks the checkpoint. The aliases are diffusers' prediction_type values. */
#define SDW_PREDICTION_ROWS(X)                                                                               \
    X(AUTO, "auto", "auto", "")                                                                              \
    X(EPS, "eps", "eps", "epsilon")                                                                          \
    X(V, "v", "v", "v_prediction")

#define SDW_GEN_NAMES_ENUM_(prefix, id, name, display, aliases) prefix##id,
#define SDW_SAMPLER_ENUM_(id, n, d, a) SDW_GEN_NAMES_ENUM_(SDW_SAMPLER_, id, n, d, a)
#define SDW_SCHEDULE_ENUM_(id, n, d, a) SDW_GEN_NAMES_ENUM_(SDW_SCHEDULE_, id, n, d, a)
#define SDW_PREDICTION_ENUM_(id, n, d, a) SDW_GEN_NAMES_ENUM_(SDW_PREDICTION_, id, n, d, a)

typedef enum { SDW_SAMPLER_ROWS(SDW_SAMPLER_ENUM_) SDW_SAMPLER__COUNT } sdw_sampler;
typedef enum { SDW_SCHEDULE_ROWS(SDW_SCHEDULE_ENUM_) SDW_SCHEDULE__COUNT } sdw_schedule;
typedef enum { SDW_PREDICTION_ROWS(SDW_PREDICTION_ENUM_) SDW_PREDICTION__COUNT } sdw_prediction;

/** Which table a name function works on. */
typedef enum {
    SDW_NAMES_SAMPLER = 0,
    SDW_NAMES_SCHEDULE,
    SDW_NAMES_PREDICTION,
    SDW_NAMES__COUNT
} sdw_names_kind;

/** One row of a table. */
typedef struct {
    const char *name;    /* canonical: "euler_a" */
    const char *display; /* AUTOMATIC1111's spelling: "Euler a" */
    const char *aliases; /* other accepted spellings, '|'-separated, "" for none */
} sdw_name_row;

/** Rows in the kind's table (its enum's __COUNT); 0 for an unknown kind. */
int sdw_names_count(sdw_names_kind kind);
/** Row i of the kind's table (0..count-1, enum order, for listing), or NULL when out of range. */
const sdw_name_row *sdw_names_row(sdw_names_kind kind, int i);
/** The enum value whose canonical name, display name or alias is name (any letter case), or -1. */
int sdw_names_parse(sdw_names_kind kind, const char *name);
/** The canonical name of value v, or "?" when out of range. */
const char *sdw_names_name(sdw_names_kind kind, int v);
/** The display name of value v, or "?" when out of range. */
const char *sdw_names_display(sdw_names_kind kind, int v);
/** Writes the canonical names joined by sep, the last two by last_sep (NULL: sep), into buf ("auto, eps or
 * v"); returns buf (truncated to fit). For messages and help texts. */
char *sdw_names_list(sdw_names_kind kind, const char *sep, const char *last_sep, char *buf, size_t buflen);
/** "sampler", "schedule", "prediction": the noun for messages. */
const char *sdw_names_kind_name(sdw_names_kind kind);

/** sdw_names_parse() on the sampler table: an sdw_sampler or -1. */
static inline int sdw_sampler_parse(const char *name)
{
    return sdw_names_parse(SDW_NAMES_SAMPLER, name);
}
/** The sampler's canonical name, "?" when out of range. */
static inline const char *sdw_sampler_name(sdw_sampler s)
{
    return sdw_names_name(SDW_NAMES_SAMPLER, (int)s);
}
/** sdw_names_parse() on the schedule table: an sdw_schedule or -1. */
static inline int sdw_schedule_parse(const char *name)
{
    return sdw_names_parse(SDW_NAMES_SCHEDULE, name);
}
/** The schedule's canonical name, "?" when out of range. */
static inline const char *sdw_schedule_name(sdw_schedule s)
{
    return sdw_names_name(SDW_NAMES_SCHEDULE, (int)s);
}
/** sdw_names_parse() on the prediction table: an sdw_prediction or -1. */
static inline int sdw_prediction_parse(const char *name)
{
    return sdw_names_parse(SDW_NAMES_PREDICTION, name);
}
/** The prediction's canonical name, "?" when out of range. */
static inline const char *sdw_prediction_name(sdw_prediction p)
{
    return sdw_names_name(SDW_NAMES_PREDICTION, (int)p);
}

#endif
