/* sampler.c: sigma schedules and samplers in the k-diffusion formulation (x = x0 + sigma * eps), written
 * to agree with k-diffusion and stable-diffusion.cpp step for step so seeds reproduce across tools. */
#include "sampler.h"

#include "brownian.h"

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
    tab->family = SDE_FAMILY_SD1;
    return 0;
}

float sde_t_to_sigma(const sde_noise_table *tab, float t)
{
    if (!(t > 0.f)) t = 0.f;
    if (t > SDE_TIMESTEPS - 1) t = SDE_TIMESTEPS - 1;
    int lo = (int)floorf(t), hi = (int)ceilf(t);
    float w = t - (float)lo;
    float ls = (1.f - w) * tab->log_sigmas[lo] + w * tab->log_sigmas[hi];
    return expf(ls);
}

float sde_sigma_to_t(const sde_noise_table *tab, float sigma)
{
    if (!(sigma > 0.f)) return 0.f;
    float ls = logf(sigma);
    /* lo = last index whose log-sigma is <= ls (the table increases with t), kept inside [0, T-2]. */
    int lo = 0;
    for (int i = 0; i < SDE_TIMESTEPS; i++)
        if (ls - tab->log_sigmas[i] >= 0.f) lo++;
    lo = lo - 1;
    if (lo < 0) lo = 0;
    if (lo > SDE_TIMESTEPS - 2) lo = SDE_TIMESTEPS - 2;
    float l0 = tab->log_sigmas[lo], l1 = tab->log_sigmas[lo + 1];
    float w = (l0 - ls) / (l0 - l1);
    if (w < 0.f) w = 0.f;
    if (w > 1.f) w = 1.f;
    return (1.f - w) * (float)lo + w * (float)(lo + 1);
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

int sde_sampler_is_stochastic(sde_sampler kind)
{
    switch (kind) {
    case SDE_SAMPLER_EULER_A:
    case SDE_SAMPLER_LCM:
    case SDE_SAMPLER_DPMPP_2S_A:
    case SDE_SAMPLER_DPMPP_2M_SDE:
    case SDE_SAMPLER_DPMPP_2M_SDE_BT:
    case SDE_SAMPLER_EULER_A_CFG_PP:
    case SDE_SAMPLER_ER_SDE:
        return 1;
    default:
        return 0;
    }
}

size_t sde_sampler_work_floats(sde_sampler kind, size_t n)
{
    switch (kind) {
    case SDE_SAMPLER_EULER:
    case SDE_SAMPLER_DDIM:
    case SDE_SAMPLER_DDIM_TRAILING:
    case SDE_SAMPLER_TCD:
        return n; /* denoised */
    case SDE_SAMPLER_HEUN:
    case SDE_SAMPLER_DPMPP_2M_SDE:
    case SDE_SAMPLER_EULER_A_CFG_PP:
    case SDE_SAMPLER_RES_2S:
        return 3 * n;
    case SDE_SAMPLER_IPNDM:
    case SDE_SAMPLER_IPNDM_V:
    case SDE_SAMPLER_LMS:
    case SDE_SAMPLER_ER_SDE:
        return 4 * n; /* denoised/derivative + three earlier ones */
    case SDE_SAMPLER_DPMPP_2M_SDE_BT:
        return 4 * n + SDE_BROWNIAN_FLOATS(n); /* denoised, previous, noise, scratch + the tree */
    default:
        return 2 * n; /* denoised + noise / previous denoised / second evaluation */
    }
}

/* Eta of each sampler: stable-diffusion.cpp's defaults (1 for the ancestral and SDE ones, else 0). */
#define ETA_ANCESTRAL 1.f
/* The peer's gradient-estimation gamma and LMS settings (order 4, history shift 1, 1000-step quadrature). */
#define GE_GAMMA 2.f
#define LMS_MAX_ORDER 4
#define LMS_SHIFT 1
#define LMS_DIVISIONS 1000
#define ER_SDE_STAGES 3
#define ER_SDE_POINTS 200

/* x <- x + (x - denoised) / sigma * (sigma_to - sigma): one Euler step of the probability-flow ODE. */
static void euler_to(float *x, const float *den, size_t n, float sigma, float sigma_to)
{
    float dt = sigma_to - sigma;
    for (size_t i = 0; i < n; i++)
        x[i] += (x[i] - den[i]) / sigma * dt;
}

/* k-diffusion get_ancestral_step: split the move to sigma_to into a deterministic part down to *down and
 * fresh noise of standard deviation *up, so down^2 + up^2 = sigma_to^2. */
static void ancestral_step(float s, float sn, float eta, float *down, float *up)
{
    *up = 0.f;
    *down = sn;
    if (eta <= 0.f) return;
    float s2 = s * s, sn2 = sn * sn;
    if (s2 > 0.f) {
        float term = sn2 * (s2 - sn2) / s2;
        float u = eta * sqrtf(term > 0.f ? term : 0.f);
        *up = u < sn ? u : sn;
    }
    float d2 = sn2 - *up * *up;
    *down = d2 > 0.f ? sqrtf(d2) : 0.f;
}

/* Each image of a batch draws from its own generator, so it gets the noise a single run with its seed would.
 */
static void add_noise(const sde_sample_args *a, float *x, float *noise, float scale)
{
    const int nb = a->batch > 1 ? a->batch : 1;
    for (int b = 0; b < nb; b++)
        sde_philox_randn(&a->rng[b], noise + (size_t)b * a->n, a->n);
    const size_t n = a->n * (size_t)nb;
    for (size_t j = 0; j < n; j++)
        x[j] += noise[j] * scale;
}

/* phi_1(t) = (e^t - 1) / t and phi_2(t) = (phi_1(t) - 1) / t of the exponential integrators, with their
 * series near 0 where the quotients cancel. */
static float phi1(float t)
{
    return fabsf(t) < 1e-6f ? 1.f + t * 0.5f + t * t / 6.f : (expf(t) - 1.f) / t;
}

static float phi2(float t)
{
    return fabsf(t) < 1e-6f ? 0.5f + t / 6.f + t * t / 24.f : (phi1(t) - 1.f) / t;
}

/* LMS coefficient j of an order-`order` step m: the integral over [sigma_m, sigma_m+1] of the Lagrange basis
 * polynomial through the last `order` sigmas, by the midpoint rule in float as the peer does. */
static float lms_coeff(const float *sg, int order, int m, int j)
{
    const float a = sg[m], dx = (sg[m + 1] - a) / (float)LMS_DIVISIONS, sj = sg[m - j];
    const float b0 = a + 0.5f * dx;
    float sum = 0.f;
    for (int h = 0; h < LMS_DIVISIONS; h++) {
        const float b = (float)h * dx + b0;
        float prod = 1.f;
        for (int k = 0; k < order; k++) {
            if (k == j) continue;
            const float t = sg[m - k];
            prod *= (b - t) / (sj - t);
        }
        sum += prod;
    }
    return sum * dx;
}

/* TCD's timestep for a sigma: the nearest training step of SD's default scaled-linear schedule (the peer uses
 * that table, not the checkpoint's). */
static int tcd_timestep(const double *csig, float s)
{
    int lo = 0, hi = SDE_TIMESTEPS; /* first index with csig >= s */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (csig[mid] < (double)s)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0) return 0;
    if (lo == SDE_TIMESTEPS) return SDE_TIMESTEPS - 1;
    return fabs(csig[lo] - s) < fabs(csig[lo - 1] - s) ? lo : lo - 1;
}

/* Rotates a history of earlier derivatives held in ring[0..*count-1] (oldest first) with ring[*count] the
 * current one: afterwards the current one is the newest, and at most cap are kept. */
static void hist_push(float **ring, int *count, int cap)
{
    if (*count < cap) {
        (*count)++;
        return;
    }
    float *oldest = ring[0];
    for (int k = 0; k < cap; k++)
        ring[k] = ring[k + 1];
    ring[cap] = oldest;
}

int sde_sample(const sde_sample_args *a, float *x)
{
    if (!a || !x || !a->denoise || !a->sigmas || !a->work || a->steps < 1 || a->steps > SDE_MAX_STEPS ||
        !a->n)
        return -1;
    if (sde_sampler_is_stochastic(a->kind) && !a->rng) return -1;
    const sde_sampler kind = a->kind;
    /* the Brownian tree holds one image's path: batches of it run image by image (the engine's job) */
    if (a->batch > 1 && kind == SDE_SAMPLER_DPMPP_2M_SDE_BT) return -1;
    /* every update below is elementwise, so a batch is one long latent; only the noise is per image */
    const size_t n = a->n * (size_t)(a->batch > 1 ? a->batch : 1);
    const float *sg = a->sigmas;
    float *w1 = a->work + n, *w2 = a->work + 2 * n;
    /* multistep state */
    int have_old = 0, have_old_d = 0, hcount = 0;
    float h_last = 0.f, old_down = 0.f;
    float *ring[4] = {a->work, a->work + n, a->work + 2 * n, a->work + 3 * n};
    const int lms_order = a->steps < LMS_MAX_ORDER ? a->steps : LMS_MAX_ORDER;
    float lmsc[LMS_MAX_ORDER];
    double tcd_ac[SDE_TIMESTEPS], tcd_sig[SDE_TIMESTEPS];
    if (kind == SDE_SAMPLER_TCD) {
        const float b0 = sqrtf(0.00085f), b1 = sqrtf(0.012f);
        for (int t = 0; t < SDE_TIMESTEPS; t++) {
            double beta = pow(b0 + (b1 - b0) * ((float)t / (float)(SDE_TIMESTEPS - 1)), 2);
            tcd_ac[t] = (t ? tcd_ac[t - 1] : 1.0) * (1.0 - beta);
            tcd_sig[t] = sqrt((1.0 - tcd_ac[t]) / tcd_ac[t]);
        }
    }
    sde_brownian tree;
    if (kind == SDE_SAMPLER_DPMPP_2M_SDE_BT) {
        double lo = INFINITY, hi = 0.0;
        for (int i = 0; i <= a->steps; i++)
            if (sg[i] > 0.f) {
                lo = sg[i] < lo ? sg[i] : lo;
                hi = sg[i] > hi ? sg[i] : hi;
            }
        if (!(hi > lo)) return 0; /* the peer leaves x as it is when there is no interval to sample */
        /* the tree's seed: the bytes of two normals from the sampler's own stream */
        float two[2];
        uint64_t seed;
        sde_philox_randn(a->rng, two, 2);
        memcpy(&seed, two, sizeof seed);
        sde_brownian_init(&tree, lo, hi, seed, n, a->work + 4 * n);
    }
    float er_lambda[SDE_MAX_STEPS + 1];
    if (kind == SDE_SAMPLER_ER_SDE)
        for (int i = 0; i <= a->steps; i++)
            er_lambda[i] = sg[i] > 1e-6f ? sg[i] : 1e-6f;

    for (int i = 0; i < a->steps; i++) {
        float s = sg[i], sn = sg[i + 1];
        int multistep = kind == SDE_SAMPLER_IPNDM || kind == SDE_SAMPLER_IPNDM_V || kind == SDE_SAMPLER_LMS;
        float *den = multistep ? ring[hcount] : a->work;
        int cfgpp = kind == SDE_SAMPLER_EULER_CFG_PP || kind == SDE_SAMPLER_EULER_A_CFG_PP;
        if (a->denoise(a->ud, x, s, i, den, cfgpp ? w1 : NULL)) return 1;
        switch (kind) {
        case SDE_SAMPLER_EULER:
            euler_to(x, den, n, s, sn);
            break;
        case SDE_SAMPLER_DDIM:
            /* DDIM with eta 0 in sigma form: keep the predicted noise, move to the next noise level. */
            for (size_t j = 0; j < n; j++)
                x[j] = den[j] + sn * ((x[j] - den[j]) / s);
            break;
        case SDE_SAMPLER_EULER_A: {
            float up, down;
            ancestral_step(s, sn, ETA_ANCESTRAL, &down, &up);
            euler_to(x, den, n, s, down);
            if (sn > 0.f) add_noise(a, x, w1, up);
            break;
        }
        case SDE_SAMPLER_DDIM_TRAILING:
            /* the peer's ddim_trailing: Euler ancestral at eta 0, written as a blend */
            if (sn == 0.f) {
                memcpy(x, den, n * sizeof *x);
            } else {
                float ratio = sn / s, rest = (float)(1.0 - (double)ratio);
                for (size_t j = 0; j < n; j++)
                    x[j] = ratio * x[j] + rest * den[j];
            }
            break;
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
                    double hl = log((double)sg[i - 1]) - log((double)s);
                    float r = (float)(hl / h);
                    float a1 = 1.f + 1.f / (2.f * r), a0 = 1.f / (2.f * r);
                    for (size_t j = 0; j < n; j++)
                        x[j] = ratio * x[j] + coef * (a1 * den[j] - a0 * w1[j]);
                }
            }
            memcpy(w1, den, n * sizeof *w1);
            break;
        case SDE_SAMPLER_DPMPP_2M_V2:
            if (sn <= 0.f) {
                memcpy(x, den, n * sizeof *x);
            } else {
                float t = -logf(s), tn = -logf(sn), h = tn - t, ratio = sn / s;
                if (i == 0) {
                    float b = expf(-h) - 1.f;
                    for (size_t j = 0; j < n; j++)
                        x[j] = ratio * x[j] - b * den[j];
                } else {
                    /* v2: the step-size ratio taken >= 1 and the exponential at the mean of the two steps */
                    float hl = t - -logf(sg[i - 1]);
                    float hmin = hl < h ? hl : h, hmax = hl < h ? h : hl;
                    float r = hmax / hmin, b = expf(-(hmax + hmin) / 2.f) - 1.f;
                    float a1 = 1.f + 1.f / (2.f * r), a0 = 1.f / (2.f * r);
                    for (size_t j = 0; j < n; j++)
                        x[j] = ratio * x[j] - b * (a1 * den[j] - a0 * w1[j]);
                }
            }
            memcpy(w1, den, n * sizeof *w1);
            break;
        case SDE_SAMPLER_DPMPP_2M_SDE:
        case SDE_SAMPLER_DPMPP_2M_SDE_BT:
            if (sn == 0.f) {
                memcpy(x, den, n * sizeof *x);
            } else {
                float h = -logf(sn) - -logf(s), eh = ETA_ANCESTRAL * h;
                float ca = sn / s * expf(-eh), cb = -expm1f(-h - eh);
                for (size_t j = 0; j < n; j++)
                    x[j] = ca * x[j] + cb * den[j];
                if (have_old) {
                    float c = 0.5f * cb / (h_last / h);
                    for (size_t j = 0; j < n; j++)
                        x[j] += c * (den[j] - w1[j]);
                }
                float scale = sn * sqrtf(-expm1f(-2.f * eh));
                if (kind == SDE_SAMPLER_DPMPP_2M_SDE) {
                    add_noise(a, x, w2, scale);
                } else {
                    sde_brownian_noise(&tree, s, sn, w2, ring[3]);
                    for (size_t j = 0; j < n; j++)
                        x[j] += w2[j] * scale;
                }
                h_last = h;
            }
            memcpy(w1, den, n * sizeof *w1);
            have_old = 1;
            break;
        case SDE_SAMPLER_HEUN: {
            float dt = sn - s;
            if (sn == 0.f) {
                euler_to(x, den, n, s, sn);
                break;
            }
            /* w1 = d at sigma, w2 = the Euler predictor; then the trapezoidal corrector */
            for (size_t j = 0; j < n; j++) {
                w1[j] = (x[j] - den[j]) / s;
                w2[j] = x[j] + w1[j] * dt;
            }
            if (a->denoise(a->ud, w2, sn, i, den, NULL)) return 1;
            for (size_t j = 0; j < n; j++)
                x[j] += (w1[j] + (w2[j] - den[j]) / sn) / 2.f * dt;
            break;
        }
        case SDE_SAMPLER_DPM2: {
            if (sn == 0.f) {
                euler_to(x, den, n, s, sn);
                break;
            }
            /* Euler to the geometric midpoint, then the whole step with the derivative found there */
            float mid = expf(0.5f * (logf(s) + logf(sn)));
            for (size_t j = 0; j < n; j++)
                w1[j] = x[j] + (x[j] - den[j]) / s * (mid - s);
            if (a->denoise(a->ud, w1, mid, i, den, NULL)) return 1;
            for (size_t j = 0; j < n; j++)
                x[j] += (w1[j] - den[j]) / mid * (sn - s);
            break;
        }
        case SDE_SAMPLER_DPMPP_2S_A: {
            float up, down;
            ancestral_step(s, sn, ETA_ANCESTRAL, &down, &up);
            if (down == 0.f) {
                memcpy(x, den, n * sizeof *x);
            } else {
                float t = -logf(s), tn = -logf(down), h = tn - t;
                float smid = expf(-(t + 0.5f * h)), st = expf(-t);
                float c1 = smid / st, c2 = expf(-h * 0.5f) - 1.f;
                for (size_t j = 0; j < n; j++)
                    w1[j] = c1 * x[j] - c2 * den[j];
                if (a->denoise(a->ud, w1, smid, i, den, NULL)) return 1;
                float c3 = expf(-tn) / st, c4 = expf(-h) - 1.f;
                for (size_t j = 0; j < n; j++)
                    x[j] = c3 * x[j] - c4 * den[j];
            }
            if (sn > 0.f) add_noise(a, x, w1, up);
            break;
        }
        case SDE_SAMPLER_IPNDM:
        case SDE_SAMPLER_IPNDM_V: {
            /* pseudo improved Adams-Bashforth up to 4th order on the derivatives d = (x - D) / sigma */
            float *d = den;
            for (size_t j = 0; j < n; j++)
                d[j] = (x[j] - den[j]) / s;
            int order = i + 1 < 4 ? i + 1 : 4;
            float hn = sn - s;
            const float *p1 = hcount > 0 ? ring[hcount - 1] : NULL,
                        *p2 = hcount > 1 ? ring[hcount - 2] : NULL,
                        *p3 = hcount > 2 ? ring[hcount - 3] : NULL;
            if (order == 1) {
                for (size_t j = 0; j < n; j++)
                    x[j] += d[j] * hn;
            } else if (order == 2 && kind == SDE_SAMPLER_IPNDM_V) {
                float q = hn / (s - sg[i - 1]); /* variable step: the ratio of this step to the last */
                for (size_t j = 0; j < n; j++)
                    x[j] += ((2.f + q) * d[j] - q * p1[j]) / 2.f * hn;
            } else if (order == 2) {
                for (size_t j = 0; j < n; j++)
                    x[j] += (3.f * d[j] - p1[j]) / 2.f * hn;
            } else if (order == 3) {
                for (size_t j = 0; j < n; j++)
                    x[j] += (23.f * d[j] - 16.f * p1[j] + 5.f * p2[j]) / 12.f * hn;
            } else {
                for (size_t j = 0; j < n; j++)
                    x[j] += (55.f * d[j] - 59.f * p1[j] + 37.f * p2[j] - 9.f * p3[j]) / 24.f * hn;
            }
            hist_push(ring, &hcount, 3);
            break;
        }
        case SDE_SAMPLER_LMS: {
            float *d = den;
            for (size_t j = 0; j < n; j++)
                d[j] = (x[j] - den[j]) / s;
            int order = i + 1 < lms_order ? i + 1 : lms_order;
            for (int c = 0; c < order; c++)
                lmsc[c] = lms_coeff(sg, order, i, c);
            for (size_t j = 0; j < n; j++)
                x[j] += d[j] * lmsc[0];
            if (lms_order > 1) {
                /* the peer's "history shift" 1: the older terms are taken one slot newer than plain LMS */
                for (int c = 2; i > 0 && c <= order; c++) {
                    int k = hcount + 1 - c + LMS_SHIFT;
                    const float *hk = ring[k < hcount - 1 ? k : hcount - 1];
                    for (size_t j = 0; j < n; j++)
                        x[j] += hk[j] * lmsc[c - 1];
                }
                hist_push(ring, &hcount, lms_order - 1);
            }
            break;
        }
        case SDE_SAMPLER_TCD: {
            const float eta = 0.f; /* the peer's default gamma: deterministic */
            int prev_t = tcd_timestep(tcd_sig, sn);
            int ts = (int)floorf((1.f - eta) * (float)prev_t);
            float apt_prev = 1.f / (sn * sn + 1.f);
            float aps = (float)tcd_ac[ts], bps = 1.f - aps;
            float c0 = sqrtf(aps / apt_prev), c1 = sqrtf(bps / apt_prev);
            for (size_t j = 0; j < n; j++)
                x[j] = c0 * den[j] + c1 * ((x[j] - den[j]) / s);
            break;
        }
        case SDE_SAMPLER_EULER_CFG_PP:
            /* CFG++: step along the unconditional prediction's noise from the guided x0 */
            for (size_t j = 0; j < n; j++)
                x[j] = den[j] + (x[j] - w1[j]) / s * sn;
            break;
        case SDE_SAMPLER_EULER_A_CFG_PP: {
            float up, down;
            ancestral_step(s, sn, ETA_ANCESTRAL, &down, &up);
            for (size_t j = 0; j < n; j++)
                x[j] = den[j] + (x[j] - w1[j]) / s * down;
            if (sn > 0.f) add_noise(a, x, w2, up);
            break;
        }
        case SDE_SAMPLER_RES_MULTISTEP: {
            float down = sn; /* eta 0: no noise */
            if (down == 0.f || !have_old) {
                euler_to(x, den, n, s, down);
            } else {
                float t = -logf(s), told = -logf(old_down), tn = -logf(down), tp = -logf(sg[i - 1]);
                float h = tn - t, c2 = (tp - told) / h;
                float p1 = phi1(-h), p2 = phi2(-h);
                float b1 = p1 - p2 / c2, b2 = p2 / c2;
                if (!isfinite(b1)) b1 = 0.f;
                if (!isfinite(b2)) b2 = 0.f;
                float e = expf(-h);
                for (size_t j = 0; j < n; j++)
                    x[j] = e * x[j] + h * (b1 * den[j] + b2 * w1[j]);
            }
            memcpy(w1, den, n * sizeof *w1);
            old_down = down;
            have_old = 1;
            break;
        }
        case SDE_SAMPLER_RES_2S: {
            const float c2 = 0.5f;
            if (sn == 0.f) {
                memcpy(x, den, n * sizeof *x);
                break;
            }
            float t = -logf(s), h = -logf(sn) - t;
            float a21 = c2 * phi1(-h * c2), p1 = phi1(-h), p2 = phi2(-h);
            float b2 = p2 / c2, b1 = p1 - b2, smid = expf(-(t + h * c2));
            for (size_t j = 0; j < n; j++) {
                den[j] -= x[j]; /* eps1 */
                w1[j] = x[j] + den[j] * (h * a21);
            }
            if (a->denoise(a->ud, w1, smid, i, w2, NULL)) return 1;
            for (size_t j = 0; j < n; j++)
                x[j] = x[j] + h * (b1 * den[j] + b2 * (w2[j] - x[j]));
            break;
        }
        case SDE_SAMPLER_ER_SDE: {
            /* extended reverse-time SDE solver (Cui et al. 2023) with the peer's noise scaler and stage 3 */
            float *old = w1, *old_d = w2, *noise = ring[3];
            int stage = i + 1 < ER_SDE_STAGES ? i + 1 : ER_SDE_STAGES;
            if (sn == 0.f) {
                memcpy(x, den, n * sizeof *x);
            } else {
                float ls = er_lambda[i], lt = er_lambda[i + 1];
                float ss = ls * (expf(powf(ls, 0.3f)) + 10.f), st = lt * (expf(powf(lt, 0.3f)) + 10.f);
                float r = ss > 0.f ? st / ss : 0.f;
                for (size_t j = 0; j < n; j++)
                    x[j] = r * x[j] + (1.f - r) * den[j];
                if (stage >= 2 && have_old) {
                    float dt = lt - ls, stp = -dt / (float)ER_SDE_POINTS, si = 0.f, su = 0.f;
                    for (int q = 0; q < ER_SDE_POINTS; q++) {
                        float lp = lt + (float)q * stp;
                        float lc = lp > 0.f ? lp : 0.f;
                        float sp = lc * (expf(powf(lc, 0.3f)) + 10.f);
                        if (sp <= 0.f) continue;
                        si += 1.f / sp;
                        if (stage >= 3 && have_old_d) su += (lp - ls) / sp;
                    }
                    si *= stp;
                    float dd_den = ls - er_lambda[i - 1];
                    if (fabsf(dd_den) > 1e-12f) {
                        float cd = dt + si * st;
                        float du_den = stage >= 3 && have_old_d ? (ls - er_lambda[i - 2]) * 0.5f : 0.f;
                        int use_u = stage >= 3 && have_old_d && fabsf(du_den) > 1e-12f;
                        float cu = use_u ? 0.5f * dt * dt + su * stp * st : 0.f;
                        for (size_t j = 0; j < n; j++) {
                            float dd = (den[j] - old[j]) / dd_den;
                            x[j] += cd * dd;
                            if (use_u) x[j] += cu * ((dd - old_d[j]) / du_den);
                            old_d[j] = dd;
                        }
                        have_old_d = 1;
                    }
                }
                float nsq = lt * lt - ls * ls * r * r;
                if (nsq > 0.f) add_noise(a, x, noise, sqrtf(nsq));
            }
            memcpy(old, den, n * sizeof *old);
            have_old = 1;
            break;
        }
        case SDE_SAMPLER_EULER_GE:
            if (sn == 0.f) {
                memcpy(x, den, n * sizeof *x);
                break;
            }
            /* gradient estimation: extrapolate the derivative with the last one (gamma 2) */
            for (size_t j = 0; j < n; j++) {
                float d = (x[j] - den[j]) / s;
                x[j] += (have_old ? d * GE_GAMMA + w1[j] * (1.f - GE_GAMMA) : d) * (sn - s);
                w1[j] = d;
            }
            have_old = 1;
            break;
        case SDE_SAMPLER_LCM:
            memcpy(x, den, n * sizeof *x);
            if (sn > 0.f) add_noise(a, x, w1, sn);
            break;
        default:
            return -1;
        }
        if (a->on_step && a->on_step(a->ud, i, a->steps, x)) return 1;
    }
    return 0;
}
