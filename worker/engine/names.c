/* names.c: the sampler and schedule names the CLI, the HTTP API and the PNG parameters chunk use,
 * mapped to and from the engine's enums. */
#include <stddef.h>
#include <strings.h>

#include "sd_engine.h"

/* ==== issue 14 (h-samp): names table, to move into common/'s table at merge ====
 * One row per enum value, in enum order: {canonical, stable-diffusion.cpp --sampling-method / --scheduler,
 * AUTOMATIC1111 display name (NULL: A1111 has none), other accepted spellings (ComfyUI's, NULL-ended)}.
 * Parsing accepts any of them, case-insensitively. */
typedef struct {
    const char *canonical, *peer, *a1111;
    const char *aliases[4];
} name_row;

static const name_row sampler_rows[] = {
    [SDE_SAMPLER_EULER] = {"euler", "euler", "Euler", {NULL}},
    [SDE_SAMPLER_EULER_A] = {"euler_a", "euler_a", "Euler a", {"euler_ancestral", NULL}},
    [SDE_SAMPLER_DDIM] = {"ddim", NULL, "DDIM", {NULL}},
    [SDE_SAMPLER_DPMPP_2M] = {"dpmpp_2m", "dpm++2m", "DPM++ 2M", {NULL}},
    [SDE_SAMPLER_LCM] = {"lcm", "lcm", "LCM", {NULL}},
    [SDE_SAMPLER_HEUN] = {"heun", "heun", "Heun", {NULL}},
    [SDE_SAMPLER_DPM2] = {"dpm2", "dpm2", "DPM2", {"dpm_2", NULL}},
    [SDE_SAMPLER_DPMPP_2S_A] = {"dpmpp_2s_a", "dpm++2s_a", "DPM++ 2S a", {"dpmpp_2s_ancestral", NULL}},
    [SDE_SAMPLER_DPMPP_2M_SDE] = {"dpmpp_2m_sde", "dpm++2m_sde", "DPM++ 2M SDE", {NULL}},
    [SDE_SAMPLER_DPMPP_2M_V2] = {"dpmpp_2m_v2", "dpm++2mv2", NULL, {NULL}},
    [SDE_SAMPLER_IPNDM] = {"ipndm", "ipndm", NULL, {NULL}},
    [SDE_SAMPLER_IPNDM_V] = {"ipndm_v", "ipndm_v", NULL, {NULL}},
    [SDE_SAMPLER_LMS] = {"lms", "lms", "LMS", {NULL}},
    [SDE_SAMPLER_DDIM_TRAILING] = {"ddim_trailing", "ddim_trailing", NULL, {NULL}},
    [SDE_SAMPLER_TCD] = {"tcd", "tcd", NULL, {NULL}},
    [SDE_SAMPLER_EULER_CFG_PP] = {"euler_cfg_pp", "euler_cfg_pp", NULL, {NULL}},
    [SDE_SAMPLER_EULER_A_CFG_PP] = {"euler_a_cfg_pp",
                                    "euler_a_cfg_pp",
                                    NULL,
                                    {"euler_ancestral_cfg_pp", NULL}},
    [SDE_SAMPLER_RES_MULTISTEP] = {"res_multistep", "res_multistep", NULL, {NULL}},
    [SDE_SAMPLER_RES_2S] = {"res_2s", "res_2s", NULL, {NULL}},
    [SDE_SAMPLER_ER_SDE] = {"er_sde", "er_sde", NULL, {NULL}},
    [SDE_SAMPLER_EULER_GE] = {"euler_ge", "euler_ge", NULL, {"gradient_estimation", NULL}},
    [SDE_SAMPLER_DPMPP_2M_SDE_BT] = {"dpmpp_2m_sde_bt", "dpm++2m_sde_bt", NULL, {NULL}},
};

/* A1111 calls the plain linspace-of-timesteps schedule "Uniform"; ComfyUI and the peer call it "normal". */
static const name_row schedule_rows[] = {
    [SDE_SCHEDULE_DISCRETE] = {"discrete", "discrete", "Uniform", {"normal", NULL}},
    [SDE_SCHEDULE_KARRAS] = {"karras", "karras", "Karras", {NULL}},
    [SDE_SCHEDULE_EXPONENTIAL] = {"exponential", "exponential", "Exponential", {NULL}},
    [SDE_SCHEDULE_AYS] = {"ays", "ays", "Align Your Steps", {"align_your_steps", NULL}},
    [SDE_SCHEDULE_GITS] = {"gits", "gits", "Align Your Steps GITS", {NULL}},
    [SDE_SCHEDULE_SGM_UNIFORM] = {"sgm_uniform", "sgm_uniform", "SGM Uniform", {NULL}},
    [SDE_SCHEDULE_SIMPLE] = {"simple", "simple", "Simple", {NULL}},
    [SDE_SCHEDULE_KL_OPTIMAL] = {"kl_optimal", "kl_optimal", "KL Optimal", {NULL}},
    [SDE_SCHEDULE_BETA] = {"beta", "beta", "Beta", {NULL}},
    [SDE_SCHEDULE_SMOOTHSTEP] = {"smoothstep", "smoothstep", NULL, {NULL}},
    [SDE_SCHEDULE_LCM] = {"lcm", "lcm", NULL, {NULL}},
};

static int rows_parse(const name_row *rows, unsigned count, const char *name)
{
    for (unsigned i = 0; name && i < count; i++) {
        const name_row *r = &rows[i];
        if (!strcasecmp(name, r->canonical) || (r->peer && !strcasecmp(name, r->peer)) ||
            (r->a1111 && !strcasecmp(name, r->a1111)))
            return (int)i;
        for (int k = 0; k < 4 && r->aliases[k]; k++)
            if (!strcasecmp(name, r->aliases[k])) return (int)i;
    }
    return -1;
}

#define NROWS(a) (unsigned)(sizeof a / sizeof *a)

const char *sde_sampler_a1111_name(sde_sampler s)
{
    return (unsigned)s < NROWS(sampler_rows) ? sampler_rows[s].a1111 : NULL;
}

const char *sde_schedule_a1111_name(sde_schedule s)
{
    return (unsigned)s < NROWS(schedule_rows) ? schedule_rows[s].a1111 : NULL;
}
/* ==== end of issue 14 block ==== */

const char *sde_sampler_name(sde_sampler s)
{
    return (unsigned)s < NROWS(sampler_rows) ? sampler_rows[s].canonical : "?";
}

int sde_sampler_parse(const char *name)
{
    return rows_parse(sampler_rows, NROWS(sampler_rows), name);
}

const char *sde_schedule_name(sde_schedule s)
{
    return (unsigned)s < NROWS(schedule_rows) ? schedule_rows[s].canonical : "?";
}

int sde_schedule_parse(const char *name)
{
    return rows_parse(schedule_rows, NROWS(schedule_rows), name);
}
