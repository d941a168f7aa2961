/* sampler.h: noise schedules (sigma tables, schedule.c) and the k-diffusion style samplers (sampler.c) that
 * drive a denoiser from pure noise to a clean latent. */
#ifndef SDE_SAMPLER_H
#define SDE_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "philox.h"
#include "sd_engine.h"

/** Number of discrete training timesteps of the DDPM schedule. */
#define SDE_TIMESTEPS 1000
/** Most sampling steps one generation may ask for. */
#define SDE_MAX_STEPS 150

/** Model families whose schedules differ (Align Your Steps has a table per family). */
typedef enum { SDE_FAMILY_SD1 = 0, SDE_FAMILY_SDXL } sde_family;

/** The training noise levels of a DDPM model, indexed by timestep t. */
typedef struct {
    float sigmas[SDE_TIMESTEPS];     /* sqrt((1 - ac[t]) / ac[t]), increasing with t */
    float log_sigmas[SDE_TIMESTEPS]; /* log of sigmas, what timestep <-> sigma interpolation works in */
    sde_family family;               /* SD1 after init; the loader sets SDXL for SDXL models */
} sde_noise_table;

/** Fills the table from alphas_cumprod[SDE_TIMESTEPS] (e.g. the checkpoint's tensor), or, when ac is
 * NULL, from SD's default "scaled linear" betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2.
 * Returns 0, or -1 with err filled when ac holds a value outside (0, 1). */
int sde_noise_table_init(sde_noise_table *tab, const float *ac, char *err, size_t errlen);
/** sigma at a fractional timestep t in [0, 999], by linear interpolation of log-sigma. */
float sde_t_to_sigma(const sde_noise_table *tab, float t);
/** Fractional timestep of a sigma by linear interpolation of log-sigma (clamped to [0, 999]). */
float sde_sigma_to_t(const sde_noise_table *tab, float sigma);
/** Writes the schedule's sigmas (decreasing, the last one 0) into out[steps+1]. Returns the number of steps
 * it makes, steps or fewer (beta takes a timestep that two steps round to only once), or -1 with err when
 * steps is outside 1..SDE_MAX_STEPS (gits: 2..) or the schedule is unknown. */
int sde_sigmas_make(const sde_noise_table *tab, sde_schedule sched, int steps, float *out, char *err,
                    size_t errlen);
/** sde_sigmas_make() for callers that need exactly steps+1 values: 0, or -1 with err (also when the
 * schedule would make fewer steps). */
int sde_sigmas_build(const sde_noise_table *tab, sde_schedule sched, int steps, float *out, char *err,
                     size_t errlen);

/** Denoiser preconditioning for noise level sigma (sigma_data = 1): denoised = c_skip*x + c_out*F(c_in*x).
 * eps models: c_skip 1, c_out -sigma; v models: c_skip 1/(s^2+1), c_out -s/sqrt(s^2+1). */
void sde_denoiser_scalings(int v_pred, float sigma, float *c_skip, float *c_out, float *c_in);
/** out[i] = uncond[i] + cfg * (cond[i] - uncond[i]), classifier-free guidance. out may alias either input. */
void sde_cfg_combine(const float *cond, const float *uncond, float cfg, size_t n, float *out);

/** The model as a sampler sees it: denoised[n] = D(x[n], sigma); step is 0-based (samplers that evaluate
 * twice a step pass the same step twice). uncond is NULL, or (CFG++ samplers) where to put the denoised of
 * the unconditional prediction alone (the conditional one when there is no unconditional pass).
 * Returns 0, or non-zero to stop sampling (cancelled or failed). */
typedef int (*sde_denoise_fn)(void *ud, const float *x, float sigma, int step, float *denoised,
                              float *uncond);
/** Called after step (0-based) has updated x; non-zero stops sampling. */
typedef int (*sde_step_fn)(void *ud, int step, int total, const float *x);

/** One sampling run. All memory is the caller's: nothing is allocated while sampling. */
typedef struct {
    sde_sampler kind;
    size_t n;            /* latent elements */
    const float *sigmas; /* steps+1 values from sde_sigmas_make() */
    int steps;           /* 1..SDE_MAX_STEPS */
    sde_philox *rng;     /* noise of the stochastic samplers (one randn call per noisy step); else unused */
    float *work;         /* sde_sampler_work_floats(kind, n * batch) floats */
    sde_denoise_fn denoise;
    sde_step_fn on_step; /* may be NULL */
    void *ud;            /* passed to denoise and on_step */
    /** Images sampled together (0 or 1: one): x, denoise's buffers and work are [batch][n], and rng points
     * to batch generators, image b's noise drawn from rng[b]. dpm++2m_sde_bt takes one image only. */
    int batch;
} sde_sample_args;

/** 1 when the sampler draws noise while sampling (it then needs rng). */
int sde_sampler_is_stochastic(sde_sampler kind);
/** Floats of scratch sde_sample() needs for a latent of n elements. */
size_t sde_sampler_work_floats(sde_sampler kind, size_t n);
/** Runs the sampler on x[n] in place (x starts as noise * sigmas[0]). Returns 0 when every step ran,
 * 1 when denoise or on_step asked to stop, -1 for bad arguments. */
int sde_sample(const sde_sample_args *a, float *x);

#endif
