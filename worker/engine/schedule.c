/* schedule.c: the sigma schedules (discrete, karras, exponential, ays, gits, sgm_uniform, simple, kl_optimal,
 * beta, smoothstep, lcm), each computed as stable-diffusion.cpp does so a seed gives the same trajectory. */
#include <math.h>
#include <stdio.h>

#include "sampler.h"

/* Align Your Steps (NVIDIA, research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html): the published
 * 10-step noise levels, stretched to other step counts by log-linear interpolation. */
static const float ays_sd15[11] = {14.6146412293f, 6.4745760956f, 3.8636745985f, 2.6946151520f,
                                   1.8841921177f,  1.3943805092f, 0.9642583904f, 0.6523686016f,
                                   0.3977456272f,  0.1515232662f, 0.0291671582f};
static const float ays_sdxl[11] = {14.6146412293f, 6.3184485287f, 3.7681790315f, 2.1811480769f,
                                   1.3405244945f,  0.8620721141f, 0.5550693289f, 0.3798540708f,
                                   0.2332364134f,  0.1114188177f, 0.0291671582f};

/* GITS (Chen et al. 2024, github.com/zju-pi/diff-sampler gits-main): the searched SD 1.5 noise levels for
 * coefficient 1.20 (the one stable-diffusion.cpp and ComfyUI use by default), row k for k+2 steps. */
#define GITS_ROWS 19
static const float gits_120[GITS_ROWS][21] = {
    {14.61464119f, 0.803307f, 0.02916753f},
    {14.61464119f, 1.56271636f, 0.52423614f, 0.02916753f},
    {14.61464119f, 2.36326075f, 0.92192322f, 0.36617002f, 0.02916753f},
    {14.61464119f, 2.84484982f, 1.24153244f, 0.59516323f, 0.25053367f, 0.02916753f},
    {14.61464119f, 5.85520077f, 2.05039096f, 0.95350921f, 0.45573691f, 0.17026083f, 0.02916753f},
    {14.61464119f, 5.85520077f, 2.45070267f, 1.24153244f, 0.64427125f, 0.29807833f, 0.09824532f, 0.02916753f},
    {14.61464119f, 5.85520077f, 2.45070267f, 1.36964464f, 0.803307f, 0.45573691f, 0.25053367f, 0.09824532f,
     0.02916753f},
    {14.61464119f, 5.85520077f, 2.84484982f, 1.61558151f, 0.95350921f, 0.59516323f, 0.36617002f, 0.19894916f,
     0.09824532f, 0.02916753f},
    {14.61464119f, 5.85520077f, 2.84484982f, 1.67050016f, 1.08895338f, 0.74807048f, 0.50118381f, 0.32104823f,
     0.19894916f, 0.09824532f, 0.02916753f},
    {14.61464119f, 5.85520077f, 2.95596409f, 1.84880662f, 1.24153244f, 0.83188516f, 0.59516323f, 0.41087446f,
     0.27464288f, 0.17026083f, 0.09824532f, 0.02916753f},
    {14.61464119f, 5.85520077f, 3.07277966f, 1.98035145f, 1.36964464f, 0.95350921f, 0.69515091f, 0.50118381f,
     0.36617002f, 0.25053367f, 0.17026083f, 0.09824532f, 0.02916753f},
    {14.61464119f, 6.77309084f, 3.46139455f, 2.36326075f, 1.56271636f, 1.08895338f, 0.803307f, 0.59516323f,
     0.45573691f, 0.34370604f, 0.25053367f, 0.17026083f, 0.09824532f, 0.02916753f},
    {14.61464119f, 6.77309084f, 3.46139455f, 2.45070267f, 1.61558151f, 1.162866f, 0.86115354f, 0.64427125f,
     0.50118381f, 0.38853383f, 0.29807833f, 0.22545385f, 0.17026083f, 0.09824532f, 0.02916753f},
    {14.61464119f, 7.49001646f, 4.65472794f, 3.07277966f, 2.12350607f, 1.51179266f, 1.08895338f, 0.83188516f,
     0.64427125f, 0.50118381f, 0.38853383f, 0.29807833f, 0.22545385f, 0.17026083f, 0.09824532f, 0.02916753f},
    {14.61464119f, 7.49001646f, 4.65472794f, 3.07277966f, 2.12350607f, 1.51179266f, 1.08895338f, 0.83188516f,
     0.64427125f, 0.50118381f, 0.41087446f, 0.32104823f, 0.25053367f, 0.19894916f, 0.13792117f, 0.09824532f,
     0.02916753f},
    {14.61464119f, 7.49001646f, 4.65472794f, 3.07277966f, 2.12350607f, 1.51179266f, 1.08895338f, 0.83188516f,
     0.64427125f, 0.50118381f, 0.41087446f, 0.34370604f, 0.27464288f, 0.22545385f, 0.17026083f, 0.13792117f,
     0.09824532f, 0.02916753f},
    {14.61464119f, 7.49001646f, 4.65472794f, 3.07277966f, 2.19988537f, 1.61558151f, 1.20157266f, 0.92192322f,
     0.72133851f, 0.57119018f, 0.45573691f, 0.36617002f, 0.29807833f, 0.25053367f, 0.19894916f, 0.17026083f,
     0.13792117f, 0.09824532f, 0.02916753f},
    {14.61464119f, 7.49001646f, 4.65472794f, 3.07277966f, 2.19988537f, 1.61558151f, 1.24153244f,
     0.95350921f,  0.74807048f, 0.59516323f, 0.4783645f,  0.38853383f, 0.32104823f, 0.27464288f,
     0.22545385f,  0.19894916f, 0.17026083f, 0.13792117f, 0.09824532f, 0.02916753f},
    {14.61464119f, 7.49001646f, 4.65472794f, 3.07277966f, 2.19988537f, 1.61558151f, 1.24153244f,
     0.95350921f,  0.74807048f, 0.59516323f, 0.50118381f, 0.41087446f, 0.34370604f, 0.29807833f,
     0.25053367f,  0.22545385f, 0.19894916f, 0.17026083f, 0.13792117f, 0.09824532f, 0.02916753f},
};

/* n floats from 0 to 1 by repeated addition of 1/(n-1), in float: the rounding of the interpolation nodes is
 * part of what the peer's tables come out as. */
static void ramp01(float *v, int n)
{
    float inc = 1.f / (float)(n - 1);
    v[0] = 0.f;
    for (int i = 1; i < n; i++)
        v[i] = v[i - 1] + inc;
}

/* Resamples the decreasing levels in[len] to out[new_len] by interpolating log-sigma linearly over [0, 1]. */
static void log_linear_resample(const float *in, int len, float *out, int new_len)
{
    float xs[32], ys[32], nx[SDE_MAX_STEPS + 1];
    ramp01(xs, len);
    for (int i = 0; i < len; i++)
        ys[i] = logf(in[len - 1 - i]); /* ascending */
    ramp01(nx, new_len);
    if (nx[0] < xs[0]) nx[0] = xs[0];
    if (nx[new_len - 1] > xs[len - 1]) nx[new_len - 1] = xs[len - 1];
    int j = 0;
    for (int i = 0; i < new_len; i++) {
        while (j < len - 2 && (xs[j] > nx[i] || nx[i] > xs[j + 1]))
            j++;
        double w = (double)(nx[i] - xs[j]) / (double)(xs[j + 1] - xs[j]);
        double y = (double)ys[j] * (1.0 - w) + (double)ys[j + 1] * w;
        out[new_len - 1 - i] = (float)exp(y);
    }
}

/* ---- beta schedule: timesteps at the quantiles of Beta(0.6, 0.6), as ComfyUI's "beta" scheduler ---- */

#define BETA_A 0.6
#define BETA_B 0.6

static double log_beta_fn(double a, double b)
{
    return lgamma(a) + lgamma(b) - lgamma(a + b);
}

static double keep_off_zero(double v)
{
    return fabs(v) < 1e-30 ? 1e-30 : v;
}

/* Regularized incomplete beta I_x(a, b) by its continued fraction (modified Lentz), accurate where
 * x < (a+1)/(a+b+2); beta_cdf() uses the symmetry for the rest. */
static double inc_beta_cf(double x, double a, double b)
{
    double c = 1.0, d = 1.0 / keep_off_zero(1.0 - (a + b) * x / (a + 1.0)), f = d;
    for (int m = 1; m <= 200; m++) {
        double m2 = 2.0 * m;
        double num = m * (b - m) * x / ((a - 1.0 + m2) * (a + m2));
        d = 1.0 / keep_off_zero(1.0 + num * d);
        c = keep_off_zero(1.0 + num / c);
        f *= d * c;
        num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1.0 + m2));
        d = 1.0 / keep_off_zero(1.0 + num * d);
        c = keep_off_zero(1.0 + num / c);
        double step = d * c;
        f *= step;
        if (fabs(step - 1.0) < 3.0e-7) break;
    }
    return exp(a * log(x) + b * log(1.0 - x) - log_beta_fn(a, b)) / a * f;
}

static double beta_cdf(double x, double a, double b)
{
    if (x <= 0.0) return 0.0;
    if (x >= 1.0) return 1.0;
    return x < (a + 1.0) / (a + b + 2.0) ? inc_beta_cf(x, a, b) : 1.0 - inc_beta_cf(1.0 - x, b, a);
}

/* Quantile by Newton's method from the median guess, kept inside (0, 1). */
static double beta_quantile(double u, double a, double b)
{
    double x = 0.5;
    for (int it = 0; it < 30; it++) {
        double f = beta_cdf(x, a, b) - u;
        if (fabs(f) < 1e-10) break;
        x -= f / exp((a - 1.0) * log(x) + (b - 1.0) * log(1.0 - x) - log_beta_fn(a, b));
        if (x <= 0.0) x = 1e-10;
        if (x >= 1.0) x = 1.0 - 1e-10;
    }
    return x;
}

int sde_sigmas_make(const sde_noise_table *tab, sde_schedule sched, int steps, float *out, char *err,
                    size_t errlen)
{
    if (steps < 1 || steps > SDE_MAX_STEPS) {
        snprintf(err, errlen, "steps must be 1..%d, got %d", SDE_MAX_STEPS, steps);
        return -1;
    }
    const int tmax = SDE_TIMESTEPS - 1;
    const float smin = tab->sigmas[0], smax = tab->sigmas[tmax];
    int n = steps;
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
        double lo = pow(smin, 1.0 / rho), hi = pow(smax, 1.0 / rho);
        for (int i = 0; i < steps; i++) {
            double ramp = steps == 1 ? 0.0 : (double)i / (double)(steps - 1);
            out[i] = (float)pow(hi + ramp * (lo - hi), rho);
        }
        break;
    }
    case SDE_SCHEDULE_EXPONENTIAL: {
        /* evenly spaced in log-sigma; with one step the peer divides by zero, so just start at sigma_max */
        float lmin = logf(smin), lmax = logf(smax);
        float step = steps == 1 ? 0.f : (lmax - lmin) / (float)(steps - 1);
        for (int i = 0; i < steps; i++)
            out[i] = expf(lmax - step * (float)i);
        break;
    }
    case SDE_SCHEDULE_AYS: {
        const float *lv = tab->family == SDE_FAMILY_SDXL ? ays_sdxl : ays_sd15;
        if (steps + 1 == 11)
            for (int i = 0; i < 11; i++)
                out[i] = lv[i];
        else
            log_linear_resample(lv, 11, out, steps + 1);
        break;
    }
    case SDE_SCHEDULE_GITS:
        if (steps < 2) {
            snprintf(err, errlen, "the gits schedule needs at least 2 steps");
            return -1;
        }
        if (steps - 2 < GITS_ROWS)
            for (int i = 0; i <= steps; i++)
                out[i] = gits_120[steps - 2][i];
        else
            log_linear_resample(gits_120[GITS_ROWS - 1], GITS_ROWS + 2, out, steps + 1);
        break;
    case SDE_SCHEDULE_SGM_UNIFORM: {
        /* steps+1 timesteps from 999 to 0, the last (t = 0) replaced by sigma 0 */
        float t = (float)tmax, inc = (0.f - (float)tmax) / (float)steps;
        for (int i = 0; i < steps; i++) {
            out[i] = sde_t_to_sigma(tab, t);
            t += inc;
        }
        break;
    }
    case SDE_SCHEDULE_SIMPLE: {
        float f = (float)SDE_TIMESTEPS / (float)steps;
        for (int i = 0; i < steps; i++) {
            int t = tmax - (int)((float)i * f);
            out[i] = sde_t_to_sigma(tab, (float)(t < 0 ? 0 : t));
        }
        break;
    }
    case SDE_SCHEDULE_KL_OPTIMAL: {
        if (steps == 1) {
            out[0] = smax;
            break;
        }
        float amin = atanf(smin > 1e-6f ? smin : 1e-6f), amax = atanf(smax);
        for (int i = 0; i < steps; i++) {
            float t = (float)i / (float)(steps - 1);
            out[i] = tanf(t * amin + (1.f - t) * amax);
        }
        break;
    }
    case SDE_SCHEDULE_BETA: {
        if (steps == 1) {
            out[0] = sde_t_to_sigma(tab, (float)tmax);
            break;
        }
        /* timesteps that round to the same integer are taken once, so the run may have fewer steps */
        int last = -1;
        n = 0;
        for (int i = 0; i < steps; i++) {
            double u = 1.0 - (double)i / (double)steps;
            int t = (int)lround(beta_quantile(u, BETA_A, BETA_B) * tmax);
            if (t != last) out[n++] = sde_t_to_sigma(tab, (float)t);
            last = t;
        }
        break;
    }
    case SDE_SCHEDULE_SMOOTHSTEP:
        if (steps == 1) {
            out[0] = sde_t_to_sigma(tab, (float)tmax);
            break;
        }
        for (int i = 0; i < steps; i++) {
            float u = 1.f - (float)i / (float)steps;
            out[i] = sde_t_to_sigma(tab, roundf(u * u * (3.f - 2.f * u) * (float)tmax));
        }
        break;
    case SDE_SCHEDULE_LCM:
        /* the 50 timesteps LCM was distilled on (999, 979, ...), every (50/steps)-th of them */
        for (int i = 0; i < steps; i++) {
            int idx = i * 50 / steps;
            out[i] = sde_t_to_sigma(tab, (float)((50 - idx) * (SDE_TIMESTEPS / 50) - 1));
        }
        break;
    default:
        snprintf(err, errlen, "unknown schedule %d", (int)sched);
        return -1;
    }
    out[n] = 0.f;
    return n;
}

int sde_sigmas_build(const sde_noise_table *tab, sde_schedule sched, int steps, float *out, char *err,
                     size_t errlen)
{
    int n = sde_sigmas_make(tab, sched, steps, out, err, errlen);
    if (n >= 0 && n != steps) {
        snprintf(err, errlen, "the schedule has %d distinct steps of the %d asked for", n, steps);
        return -1;
    }
    return n < 0 ? -1 : 0;
}
