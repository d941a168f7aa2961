/* sampler.c: sigma schedules and samplers in the k-diffusion formulation (x = x0 + sigma * eps), written
 * to agree with k-diffusion and stable-diffusion.cpp step for step so seeds reproduce across tools. */
#include "sampler.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int sde_noise_table_init(sde_noise_table *tab, const float *ac, char *err, size_t errlen)
{
    double prod = 1.0, s0 = sqrt(0.00085), s1 = sqrt(0.012);
    for (int i = 0; i < SDE_TIMESTEPS; i++) {
        double a;
        if (ac) {
            a = ac[i];
            if (!(a > 0.0 && a < 1.0)) {
                snprintf(err, errlen, "alphas_cumprod[%d] = %g is outside (0, 1)", i, a);
                return -1;
            }
        } else {
            double s = s0 + (s1 - s0) * i / (SDE_TIMESTEPS - 1);
            prod *= 1.0 - s * s;
            /* Round through float like the tensor a checkpoint stores, so both paths agree bit for bit. */
            a = (float)prod;
        }
        double sg = sqrt((1.0 - a) / a);
        tab->sigmas[i] = (float)sg;
        tab->log_sigmas[i] = (float)log(sg);
    }
    return 0;
}

float sde_t_to_sigma(const sde_noise_table *tab, float t)
{
    if (!(t > 0.f))
        t = 0.f;
    if (t > SDE_TIMESTEPS - 1)
        t = SDE_TIMESTEPS - 1;
    int lo = (int)floorf(t), hi = (int)ceilf(t);
    float w = t - (float)lo;
    float ls = (1.f - w) * tab->log_sigmas[lo] + w * tab->log_sigmas[hi];
    return expf(ls);
}

float sde_sigma_to_t(const sde_noise_table *tab, float sigma)
{
    if (!(sigma > 0.f))
        return 0.f;
    float ls = logf(sigma);
    /* lo = last index whose log-sigma is <= ls (the table increases with t), kept inside [0, T-2]. */
    int lo = 0;
    for (int i = 0; i < SDE_TIMESTEPS; i++)
        if (ls - tab->log_sigmas[i] >= 0.f)
            lo++;
    lo = lo - 1;
    if (lo < 0)
        lo = 0;
    if (lo > SDE_TIMESTEPS - 2)
        lo = SDE_TIMESTEPS - 2;
    float l0 = tab->log_sigmas[lo], l1 = tab->log_sigmas[lo + 1];
    float w = (l0 - ls) / (l0 - l1);
    if (w < 0.f)
        w = 0.f;
    if (w > 1.f)
        w = 1.f;
    return (1.f - w) * (float)lo + w * (float)(lo + 1);
}

int sde_sigmas_build(const sde_noise_table *tab, sde_schedule sched, int steps, float *out, char *err,
                     size_t errlen)
{
    if (steps < 1 || steps > SDE_MAX_STEPS) {
        snprintf(err, errlen, "steps must be 1..%d, got %d", SDE_MAX_STEPS, steps);
        return -1;
    }
    const int tmax = SDE_TIMESTEPS - 1;
    switch (sched) {
    case SDE_SCHEDULE_DISCRETE:
        if (steps == 1) {
            out[0] = sde_t_to_sigma(tab, (float)tmax);
        } else {
            /* timesteps linspace(999, 0, steps), in float as the peer computes them */
            float step = (float)tmax / (float)(steps - 1);
            for (int i = 0; i < steps; i++)
                out[i] = sde_t_to_sigma(tab, (float)tmax - step * (float)i);
        }
        break;
    case SDE_SCHEDULE_KARRAS: {
        const double rho = 7.0;
        double smin = tab->sigmas[0], smax = tab->sigmas[tmax];
        double lo = pow(smin, 1.0 / rho), hi = pow(smax, 1.0 / rho);
        for (int i = 0; i < steps; i++) {
            double ramp = steps == 1 ? 0.0 : (double)i / (double)(steps - 1);
            out[i] = (float)pow(hi + ramp * (lo - hi), rho);
        }
        break;
    }
    default:
        snprintf(err, errlen, "unknown schedule %d", (int)sched);
        return -1;
    }
    out[steps] = 0.f;
    return 0;
}

void sde_denoiser_scalings(int v_pred, float sigma, float *c_skip, float *c_out, float *c_in)
{
    float s2 = sigma * sigma;
    *c_in = 1.f / sqrtf(s2 + 1.f);
    if (v_pred) {
        *c_skip = 1.f / (s2 + 1.f);
        *c_out = -sigma / sqrtf(s2 + 1.f);
    } else {
        *c_skip = 1.f;
        *c_out = -sigma;
    }
}

void sde_cfg_combine(const float *cond, const float *uncond, float cfg, size_t n, float *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = uncond[i] + cfg * (cond[i] - uncond[i]);
}

size_t sde_sampler_work_floats(sde_sampler kind, size_t n)
{
    switch (kind) {
    case SDE_SAMPLER_EULER:
    case SDE_SAMPLER_DDIM:
        return n; /* denoised */
    case SDE_SAMPLER_EULER_A:
    case SDE_SAMPLER_LCM:
    case SDE_SAMPLER_DPMPP_2M:
        return 2 * n; /* denoised + noise / previous denoised */
    }
    return 2 * n;
}

/* x <- x + (x - denoised) / sigma * (sigma_to - sigma): one Euler step of the probability-flow ODE. */
static void euler_to(float *x, const float *den, size_t n, float sigma, float sigma_to)
{
    float dt = sigma_to - sigma;
    for (size_t i = 0; i < n; i++)
        x[i] += (x[i] - den[i]) / sigma * dt;
}

int sde_sample(const sde_sample_args *a, float *x)
{
    if (!a || !x || !a->denoise || !a->sigmas || !a->work || a->steps < 1 || a->steps > SDE_MAX_STEPS || !a->n)
        return -1;
    if ((a->kind == SDE_SAMPLER_EULER_A || a->kind == SDE_SAMPLER_LCM) && !a->rng)
        return -1;
    const size_t n = a->n;
    const float *sg = a->sigmas;
    float *den = a->work, *aux = a->work + n;
    for (int i = 0; i < a->steps; i++) {
        float s = sg[i], sn = sg[i + 1];
        if (a->denoise(a->ud, x, s, i, den))
            return 1;
        switch (a->kind) {
        case SDE_SAMPLER_EULER:
            euler_to(x, den, n, s, sn);
            break;
        case SDE_SAMPLER_DDIM:
            /* DDIM with eta 0 in sigma form: keep the predicted noise, move to the next noise level. */
            for (size_t j = 0; j < n; j++)
                x[j] = den[j] + sn * ((x[j] - den[j]) / s);
            break;
        case SDE_SAMPLER_EULER_A: {
            /* k-diffusion get_ancestral_step with eta 1 */
            float up = sn * sn * (s * s - sn * sn) / (s * s);
            up = up > 0.f ? sqrtf(up) : 0.f;
            if (up > sn)
                up = sn;
            float down = sn * sn - up * up;
            down = down > 0.f ? sqrtf(down) : 0.f;
            euler_to(x, den, n, s, down);
            if (sn > 0.f) {
                sde_philox_randn(a->rng, aux, n);
                for (size_t j = 0; j < n; j++)
                    x[j] += aux[j] * up;
            }
            break;
        }
        case SDE_SAMPLER_DPMPP_2M:
            if (sn <= 0.f) {
                memcpy(x, den, n * sizeof *x); /* the limit sigma_next -> 0 of the update below */
            } else {
                /* t = -log(sigma); h = t_next - t */
                double h = log((double)s) - log((double)sn);
                float ratio = sn / s, coef = (float)-expm1(-h);
                if (i == 0) {
                    for (size_t j = 0; j < n; j++)
                        x[j] = ratio * x[j] + coef * den[j];
                } else {
                    double h_last = log((double)sg[i - 1]) - log((double)s);
                    float r = (float)(h_last / h);
                    float a1 = 1.f + 1.f / (2.f * r), a0 = 1.f / (2.f * r);
                    for (size_t j = 0; j < n; j++)
                        x[j] = ratio * x[j] + coef * (a1 * den[j] - a0 * aux[j]);
                }
            }
            memcpy(aux, den, n * sizeof *aux);
            break;
        case SDE_SAMPLER_LCM:
            memcpy(x, den, n * sizeof *x);
            if (sn > 0.f) {
                sde_philox_randn(a->rng, aux, n);
                for (size_t j = 0; j < n; j++)
                    x[j] += sn * aux[j];
            }
            break;
        default:
            return -1;
        }
        if (a->on_step && a->on_step(a->ud, i, a->steps, x))
            return 1;
    }
    return 0;
}
