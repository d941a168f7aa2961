/* test_sampler.c: sigma schedules against the peer's numbers, and every sampler on analytic denoisers
 * (point mass, Gaussian data) plus a replay of the peer's own denoised latents. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "philox.h"
#include "sampler.h"

static const float golden_sigmas[5] = {14.6146431f, 2.91830707f, 0.932357967f, 0.0291675366f, 0.f};
static const float golden_t[4] = {999.f, 666.f, 333.f, 0.f};

static void test_discrete_matches_peer(void **state)
{
    (void)state;
    sde_noise_table tab;
    char err[256];
    assert_int_equal(sde_noise_table_init(&tab, NULL, err, sizeof err), 0);
    float s[5];
    assert_int_equal(sde_sigmas_build(&tab, SDE_SCHEDULE_DISCRETE, 4, s, err, sizeof err), 0);
    for (int i = 0; i < 5; i++)
        assert_true(fabsf(s[i] - golden_sigmas[i]) <= 2e-6f * golden_sigmas[i] + 1e-9f);
    for (int i = 0; i < 4; i++)
        assert_true(fabsf(sde_sigma_to_t(&tab, golden_sigmas[i]) - golden_t[i]) < 1e-2f);
    /* one step: sigma_max then 0 */
    assert_int_equal(sde_sigmas_build(&tab, SDE_SCHEDULE_DISCRETE, 1, s, err, sizeof err), 0);
    assert_true(fabsf(s[0] - golden_sigmas[0]) < 1e-4f && s[1] == 0.f);
    /* the interpolation is between training sigmas and round-trips */
    for (float t = 0.f; t <= 999.f; t += 37.25f) {
        float sg = sde_t_to_sigma(&tab, t);
        assert_true(fabsf(sde_sigma_to_t(&tab, sg) - t) < 2e-2f);
    }
    assert_true(fabsf(sde_t_to_sigma(&tab, 500.f) - tab.sigmas[500]) < 1e-6f);
}

static void test_table_from_tensor(void **state)
{
    (void)state;
    /* the same alphas_cumprod as a checkpoint tensor gives the same table as the built-in default */
    float ac[SDE_TIMESTEPS];
    double prod = 1.0, s0 = sqrt(0.00085), s1 = sqrt(0.012);
    for (int i = 0; i < SDE_TIMESTEPS; i++) {
        double b = s0 + (s1 - s0) * i / 999.0;
        prod *= 1.0 - b * b;
        ac[i] = (float)prod;
    }
    sde_noise_table a, b;
    char err[256];
    assert_int_equal(sde_noise_table_init(&a, ac, err, sizeof err), 0);
    assert_int_equal(sde_noise_table_init(&b, NULL, err, sizeof err), 0);
    assert_memory_equal(a.sigmas, b.sigmas, sizeof a.sigmas);
    ac[17] = 1.5f;
    assert_int_equal(sde_noise_table_init(&a, ac, err, sizeof err), -1);
    assert_non_null(strstr(err, "alphas_cumprod[17]"));
    ac[17] = NAN;
    assert_int_equal(sde_noise_table_init(&a, ac, err, sizeof err), -1);
}

static void test_karras(void **state)
{
    (void)state;
    sde_noise_table tab;
    char err[256];
    sde_noise_table_init(&tab, NULL, err, sizeof err);
    float s[21];
    assert_int_equal(sde_sigmas_build(&tab, SDE_SCHEDULE_KARRAS, 20, s, err, sizeof err), 0);
    assert_true(fabsf(s[0] - tab.sigmas[999]) < 1e-5f * s[0]);
    assert_true(fabsf(s[19] - tab.sigmas[0]) < 1e-5f * s[19]);
    assert_true(s[20] == 0.f);
    for (int i = 0; i < 20; i++)
        assert_true(s[i] > s[i + 1]);
    /* rho = 7: sigma_i^(1/7) is linear in i */
    double lo = pow(tab.sigmas[0], 1.0 / 7), hi = pow(tab.sigmas[999], 1.0 / 7);
    for (int i = 0; i < 20; i++) {
        double want = pow(hi + (lo - hi) * i / 19.0, 7.0);
        assert_true(fabs(s[i] - want) < 1e-5 * want);
    }
    /* the SD 1.x values everyone quotes */
    assert_true(fabsf(s[0] - 14.6146f) < 1e-3f && fabsf(s[19] - 0.0292f) < 1e-4f);
}

static void test_bad_steps(void **state)
{
    (void)state;
    sde_noise_table tab;
    char err[256];
    sde_noise_table_init(&tab, NULL, err, sizeof err);
    float s[SDE_MAX_STEPS + 2];
    assert_int_equal(sde_sigmas_build(&tab, SDE_SCHEDULE_DISCRETE, 0, s, err, sizeof err), -1);
    assert_non_null(strstr(err, "steps"));
    assert_int_equal(sde_sigmas_build(&tab, SDE_SCHEDULE_KARRAS, SDE_MAX_STEPS + 1, s, err, sizeof err), -1);
    assert_int_equal(sde_sigmas_build(&tab, (sde_schedule)99, 4, s, err, sizeof err), -1);
    assert_int_equal(sde_sigmas_build(&tab, SDE_SCHEDULE_KARRAS, SDE_MAX_STEPS, s, err, sizeof err), 0);
    float x = 1.f, w[2];
    sde_sample_args a = {.kind = SDE_SAMPLER_EULER_A, .n = 1, .sigmas = s, .steps = 4, .work = w};
    assert_int_equal(sde_sample(&a, &x), -1); /* no denoiser, no rng */
}

static void test_scalings_and_cfg(void **state)
{
    (void)state;
    float cs, co, ci;
    /* eps: notes.txt of sd15-rand; v: notes.txt of sd21-rand */
    sde_denoiser_scalings(0, 2.91830707f, &cs, &co, &ci);
    assert_true(cs == 1.f && fabsf(co + 2.91830707f) < 1e-7f && fabsf(ci - 0.324161172f) < 1e-7f);
    sde_denoiser_scalings(1, 2.91830707f, &cs, &co, &ci);
    assert_true(fabsf(cs - 0.105080478f) < 1e-7f && fabsf(co + 0.946001887f) < 1e-7f);
    sde_denoiser_scalings(1, 0.0291675366f, &cs, &co, &ci);
    assert_true(fabsf(cs - 0.999149919f) < 1e-7f && fabsf(co + 0.0291551352f) < 1e-7f);
    float c[3] = {1.f, 2.f, -3.f}, u[3] = {0.5f, 2.f, 1.f}, o[3];
    sde_cfg_combine(c, u, 7.f, 3, o);
    assert_true(o[0] == 4.f && o[1] == 2.f && o[2] == -27.f);
    sde_cfg_combine(c, u, 1.f, 3, o);
    assert_memory_equal(o, c, sizeof c);
    sde_cfg_combine(c, u, 0.f, 3, o);
    assert_memory_equal(o, u, sizeof u);
}

/* ---- analytic denoisers ---- */

typedef struct {
    int kind; /* 0: point mass at center[], 1: N(0, sd^2) data */
    float sd;
    const float *center;
    int calls;
    int stop_at; /* stop when asked for this step (-1 never) */
    int n;       /* elements */
    float sig_seen[SDE_MAX_STEPS];
} toy;

static int toy_denoise(void *ud, const float *x, float sigma, int step, float *den, float *uncond)
{
    toy *t = ud;
    t->calls++;
    t->sig_seen[step] = sigma;
    if (step == t->stop_at) return 1;
    for (int i = 0; i < t->n; i++)
        den[i] = t->kind == 0 ? t->center[i] : x[i] * t->sd * t->sd / (t->sd * t->sd + sigma * sigma);
    if (uncond) /* no guidance: the unconditional prediction is the prediction */
        memcpy(uncond, den, (size_t)t->n * sizeof *den);
    return 0;
}

static float run(sde_sampler kind, sde_schedule sch, int steps, toy *t, float *x, const float *x_start, int n,
                 uint64_t seed)
{
    sde_noise_table tab;
    char err[256];
    float sg[SDE_MAX_STEPS + 1];
    static float work[4 * 16384];
    sde_noise_table_init(&tab, NULL, err, sizeof err);
    assert_int_equal(sde_sigmas_build(&tab, sch, steps, sg, err, sizeof err), 0);
    assert_true(sde_sampler_work_floats(kind, (size_t)n) <= 4 * 16384);
    t->n = n;
    memcpy(x, x_start, (size_t)n * sizeof *x);
    sde_philox rng;
    sde_philox_init(&rng, seed);
    sde_sample_args a = {.kind = kind,
                         .n = (size_t)n,
                         .sigmas = sg,
                         .steps = steps,
                         .rng = &rng,
                         .work = work,
                         .denoise = toy_denoise,
                         .ud = t};
    assert_int_equal(sde_sample(&a, x), t->stop_at >= 0 ? 1 : 0);
    return sg[0];
}

static void test_point_mass_all_samplers(void **state)
{
    (void)state;
    float center[64], xs[64], x[64];
    for (int i = 0; i < 64; i++) {
        center[i] = sinf((float)i);
        xs[i] = 14.6f * cosf(3.f * (float)i);
    }
    /* whatever the sampler, a denoiser that always says "center" must end exactly at center; except the
     * multistep ones (a fixed combination of earlier derivatives) and TCD (its last step keeps a little of
     * the predicted noise), which only come close */
    for (int k = SDE_SAMPLER_EULER; k <= SDE_SAMPLER_DPMPP_2M_SDE_BT; k++) {
        int twice = k == SDE_SAMPLER_HEUN || k == SDE_SAMPLER_DPM2 || k == SDE_SAMPLER_DPMPP_2S_A ||
                    k == SDE_SAMPLER_RES_2S;
        int exact = k != SDE_SAMPLER_IPNDM && k != SDE_SAMPLER_IPNDM_V && k != SDE_SAMPLER_LMS &&
                    k != SDE_SAMPLER_TCD;
        for (int sch = 0; sch < 2; sch++) {
            toy t = {.kind = 0, .center = center, .stop_at = -1};
            run((sde_sampler)k, (sde_schedule)sch, 7, &t, x, xs, 64, 1);
            assert_int_equal(t.calls, twice ? 13 : 7); /* the last step (to sigma 0) evaluates once */
            for (int i = 0; i < 64; i++)
                if (!(fabsf(x[i] - center[i]) < (exact ? 1e-5f : 0.2f)))
                    fail_msg("%s/%d: x[%d] = %g, center %g", sde_sampler_name((sde_sampler)k), sch, i, x[i],
                             center[i]);
        }
    }
    /* Euler on a point mass: x_k - c shrinks exactly by sigma_{k+1}/sigma_k; stop after 2 steps */
    toy t = {.kind = 0, .center = center, .stop_at = 2};
    float s0 = run(SDE_SAMPLER_EULER, SDE_SCHEDULE_DISCRETE, 4, &t, x, xs, 64, 1);
    for (int i = 0; i < 64; i++)
        assert_true(fabsf(x[i] - center[i] - (xs[i] - center[i]) * golden_sigmas[2] / s0) < 1e-4f);
    assert_int_equal(t.calls, 3);
}

/* exact probability-flow ODE solution for N(0, sd^2) data from sigma s0 to 0: x * sd / sqrt(sd^2 + s0^2) */
static double gauss_err(sde_sampler k, int steps)
{
    float xs[64], x[64];
    for (int i = 0; i < 64; i++)
        xs[i] = 14.6f * cosf(3.f * (float)i + 0.5f);
    toy t = {.kind = 1, .sd = 0.5f, .stop_at = -1};
    float s0 = run(k, SDE_SCHEDULE_KARRAS, steps, &t, x, xs, 64, 1);
    /* every sampler's last step (sigma_min -> 0) returns the denoised value, so the reference is the exact
     * flow to sigma_min followed by that same final step */
    double smin = t.sig_seen[steps - 1], sm2 = smin * smin;
    double e = 0.0, f = sqrt(0.25 + sm2) / sqrt(0.25 + (double)s0 * s0) * 0.25 / (0.25 + sm2);
    for (int i = 0; i < 64; i++)
        e = fmax(e, fabs(x[i] - xs[i] * f));
    return e;
}

static void test_gaussian_convergence(void **state)
{
    (void)state;
    double e10 = gauss_err(SDE_SAMPLER_EULER, 10), e40 = gauss_err(SDE_SAMPLER_EULER, 40),
           e150 = gauss_err(SDE_SAMPLER_EULER, 150);
    double d10 = gauss_err(SDE_SAMPLER_DPMPP_2M, 10), d40 = gauss_err(SDE_SAMPLER_DPMPP_2M, 40);
    double dd = gauss_err(SDE_SAMPLER_DDIM, 40);
    print_message("euler %g %g %g dpm2m %g %g ddim %g\n", e10, e40, e150, d10, d40, dd);
    /* Euler is first order: 4x the steps, roughly a quarter of the error; it converges */
    assert_true(e40 < e10 / 3.0 && e150 < e40 / 3.0 && e150 < 1e-2);
    /* DPM++ 2M is second order and far better than Euler at equal steps */
    assert_true(d40 < d10 / 8.0 && d40 < e40 / 10.0 && d10 < e10);
    /* DDIM (eta 0) in sigma form is the same update as Euler */
    assert_true(fabs(dd - e40) < 1e-5);
}

static void test_ancestral_distribution(void **state)
{
    (void)state;
    /* euler_a and lcm on N(0, 0.5^2) data: every step is linear in x plus fresh independent noise, so the
     * spread of the result follows the variance recursion v' = a^2 v + b^2 of each step exactly; over many
     * elements the measured std must match it (sampling error ~0.6% at N = 16384). */
    enum { N = 16384 };
    static float xs[N], x[N];
    for (int k = 0; k < 2; k++) {
        sde_sampler kind = k ? SDE_SAMPLER_LCM : SDE_SAMPLER_EULER_A;
        sde_philox_randn_at(7, 0, xs, N);
        for (int i = 0; i < N; i++)
            xs[i] *= 14.6146f;
        toy t = {.kind = 1, .sd = 0.5f, .stop_at = -1};
        run(kind, SDE_SCHEDULE_KARRAS, k ? 4 : 30, &t, x, xs, N, 99);
        double m = 0, v = 0, c = 0, sx = 0;
        for (int i = 0; i < N; i++) {
            m += x[i];
            v += (double)x[i] * x[i];
            c += (double)x[i] * xs[i];
            sx += (double)xs[i] * xs[i];
        }
        m /= N;
        double sd = sqrt(v / N - m * m), corr = c / sqrt(v * sx);
        int steps = k ? 4 : 30;
        double pv = (double)t.sig_seen[0] * t.sig_seen[0];
        for (int i = 0; i < steps; i++) {
            double a = t.sig_seen[i], b = i + 1 < steps ? t.sig_seen[i + 1] : 0.0, kk = 0.25 / (0.25 + a * a);
            if (k) {
                pv = pv * kk * kk + b * b;
            } else {
                double up = fmin(b, sqrt(b * b * (a * a - b * b) / (a * a))), dn = sqrt(b * b - up * up);
                double g = 1.0 + (1.0 - kk) * (dn - a) / a;
                pv = pv * g * g + up * up;
            }
        }
        print_message("%s mean %g sd %g (predicted %g) corr %g\n", sde_sampler_name(kind), m, sd, sqrt(pv),
                      corr);
        assert_true(fabs(m) < 0.02);
        assert_true(fabs(sd - sqrt(pv)) < 0.02 * sqrt(pv));
        /* the fresh noise decorrelates the result from the start noise */
        assert_true(fabs(corr) < 0.5);
        /* same seed, same samples; another seed, other samples */
        static float y[N];
        t.calls = 0;
        run(kind, SDE_SCHEDULE_KARRAS, k ? 4 : 30, &t, y, xs, N, 99);
        assert_memory_equal(x, y, sizeof x);
        run(kind, SDE_SCHEDULE_KARRAS, k ? 4 : 30, &t, y, xs, N, 100);
        assert_memory_not_equal(x, y, sizeof x);
    }
}

static void test_higher_order_samplers(void **state)
{
    (void)state;
    /* on N(0, 0.5^2) data the deterministic higher-order samplers must beat Euler clearly at 20 steps */
    double e = gauss_err(SDE_SAMPLER_EULER, 20);
    const sde_sampler ks[] = {SDE_SAMPLER_HEUN,          SDE_SAMPLER_DPM2,    SDE_SAMPLER_DPMPP_2M_V2,
                              SDE_SAMPLER_IPNDM,         SDE_SAMPLER_IPNDM_V, SDE_SAMPLER_LMS,
                              SDE_SAMPLER_RES_MULTISTEP, SDE_SAMPLER_RES_2S};
    for (size_t i = 0; i < sizeof ks / sizeof *ks; i++) {
        double d = gauss_err(ks[i], 20);
        print_message("%s %g (euler %g)\n", sde_sampler_name(ks[i]), d, e);
        /* dpmpp_2m_v2 takes its exponential at the mean of two step sizes, and the peer's LMS uses a shifted
         * history: better than Euler, not by 3x */
        assert_true(d < (ks[i] == SDE_SAMPLER_DPMPP_2M_V2 || ks[i] == SDE_SAMPLER_LMS ? e / 1.4 : e / 3.0));
    }
    /* ddim_trailing is Euler written as a blend; euler_cfg_pp without guidance is Euler too */
    assert_true(fabs(gauss_err(SDE_SAMPLER_DDIM_TRAILING, 20) - e) < 1e-5);
    assert_true(fabs(gauss_err(SDE_SAMPLER_EULER_CFG_PP, 20) - e) < 1e-5);
}

static void test_schedules(void **state)
{
    (void)state;
    sde_noise_table tab;
    char err[256];
    float s[SDE_MAX_STEPS + 1];
    assert_int_equal(sde_noise_table_init(&tab, NULL, err, sizeof err), 0);
    const float smax = tab.sigmas[SDE_TIMESTEPS - 1], smin = tab.sigmas[0];
    for (int k = SDE_SCHEDULE_DISCRETE; k <= SDE_SCHEDULE_LCM; k++) {
        const int counts[] = {2, 3, 6, 10, 20, 21, 40, SDE_MAX_STEPS};
        for (size_t c = 0; c < sizeof counts / sizeof *counts; c++) {
            if (k == SDE_SCHEDULE_LCM && counts[c] > 50) continue; /* LCM has 50 timesteps to give */
            int n = sde_sigmas_make(&tab, (sde_schedule)k, counts[c], s, err, sizeof err);
            if (n < 1 || n > counts[c])
                fail_msg("%s, %d steps: %d (%s)", sde_schedule_name((sde_schedule)k), counts[c], n, err);
            if (k != SDE_SCHEDULE_BETA) assert_int_equal(n, counts[c]);
            /* decreasing to 0, starting near sigma_max; smoothstep, like the peer's, repeats a timestep
             * where its curve is flat and many steps round to the same one */
            assert_true(s[n] == 0.f && s[0] <= smax * 1.001f && s[0] > smax * 0.99f);
            for (int i = 0; i < n; i++)
                if (!(s[i] > s[i + 1] || (k == SDE_SCHEDULE_SMOOTHSTEP && s[i] == s[i + 1])))
                    fail_msg("%s, %d steps: sigma[%d] %g <= sigma[%d] %g", sde_schedule_name((sde_schedule)k),
                             counts[c], i, s[i], i + 1, s[i + 1]);
        }
    }
    /* exponential and kl_optimal end at sigma_min; ays at 10 steps is NVIDIA's table itself */
    assert_int_equal(sde_sigmas_make(&tab, SDE_SCHEDULE_EXPONENTIAL, 8, s, err, sizeof err), 8);
    assert_true(fabsf(s[7] - smin) < 1e-5f * smin * 10);
    assert_int_equal(sde_sigmas_make(&tab, SDE_SCHEDULE_KL_OPTIMAL, 8, s, err, sizeof err), 8);
    assert_true(fabsf(s[7] - smin) < 1e-5f);
    assert_int_equal(sde_sigmas_make(&tab, SDE_SCHEDULE_AYS, 10, s, err, sizeof err), 10);
    assert_true(s[1] == 6.4745760956f && s[9] == 0.1515232662f && s[10] == 0.f);
    tab.family = SDE_FAMILY_SDXL;
    assert_int_equal(sde_sigmas_make(&tab, SDE_SCHEDULE_AYS, 10, s, err, sizeof err), 10);
    assert_true(s[1] == 6.3184485287f);
    tab.family = SDE_FAMILY_SD1;
    /* ays in between: log-linear, so 20 steps hit every table level at even indices */
    assert_int_equal(sde_sigmas_make(&tab, SDE_SCHEDULE_AYS, 20, s, err, sizeof err), 20);
    assert_true(fabsf(s[2] - 6.4745760956f) < 1e-4f &&
                fabsf(s[3] - sqrtf(6.4745760956f * 3.8636745985f)) < 1e-3f);
    /* gits needs two steps; lcm takes the distillation timesteps 999, 759, 499, 259 for 4 steps */
    assert_int_equal(sde_sigmas_make(&tab, SDE_SCHEDULE_GITS, 1, s, err, sizeof err), -1);
    assert_int_equal(sde_sigmas_make(&tab, SDE_SCHEDULE_LCM, 4, s, err, sizeof err), 4);
    assert_true(s[1] == sde_t_to_sigma(&tab, 759.f) && s[3] == sde_t_to_sigma(&tab, 259.f));
    /* simple: every (1000/steps)-th training sigma from the top */
    assert_int_equal(sde_sigmas_make(&tab, SDE_SCHEDULE_SIMPLE, 4, s, err, sizeof err), 4);
    assert_true(s[1] == tab.sigmas[749] && s[3] == tab.sigmas[249]);
}

static void test_names(void **state)
{
    (void)state;
    /* ours, the peer's and A1111's spellings all name the same sampler */
    assert_int_equal(sde_sampler_parse("dpmpp_2s_a"), SDE_SAMPLER_DPMPP_2S_A);
    assert_int_equal(sde_sampler_parse("dpm++2s_a"), SDE_SAMPLER_DPMPP_2S_A);
    assert_int_equal(sde_sampler_parse("DPM++ 2S a"), SDE_SAMPLER_DPMPP_2S_A);
    assert_int_equal(sde_sampler_parse("Euler a"), SDE_SAMPLER_EULER_A);
    assert_int_equal(sde_sampler_parse("DPM++ 2M SDE"), SDE_SAMPLER_DPMPP_2M_SDE);
    assert_int_equal(sde_sampler_parse("dpm++2mv2"), SDE_SAMPLER_DPMPP_2M_V2);
    assert_int_equal(sde_sampler_parse("unipc"), -1);
    assert_int_equal(sde_schedule_parse("normal"), SDE_SCHEDULE_DISCRETE);
    assert_int_equal(sde_schedule_parse("Karras"), SDE_SCHEDULE_KARRAS);
    assert_int_equal(sde_schedule_parse("Align Your Steps"), SDE_SCHEDULE_AYS);
    for (int k = SDE_SAMPLER_EULER; k <= SDE_SAMPLER_DPMPP_2M_SDE_BT; k++)
        assert_int_equal(sde_sampler_parse(sde_sampler_name((sde_sampler)k)), k);
    for (int k = SDE_SCHEDULE_DISCRETE; k <= SDE_SCHEDULE_LCM; k++)
        assert_int_equal(sde_schedule_parse(sde_schedule_name((sde_schedule)k)), k);
    /* the display name is A1111's where it has one, else the canonical name */
    assert_string_equal(sdw_names_display(SDW_NAMES_SAMPLER, SDE_SAMPLER_HEUN), "Heun");
    assert_string_equal(sdw_names_display(SDW_NAMES_SAMPLER, SDE_SAMPLER_IPNDM), "ipndm");
    assert_string_equal(sdw_names_display(SDW_NAMES_SCHEDULE, SDE_SCHEDULE_EXPONENTIAL), "Exponential");
}

/* ---- replaying the peer's denoised latents: the sampler arithmetic of the golden run ---- */

static float *read_f32(const char *dir, const char *name, size_t n)
{
    const char *td = getenv("SDW_TESTDATA_DIR");
    char p[1024];
    snprintf(p, sizeof p, "%s/golden/%s/%s.f32", td && *td ? td : "tests/data", dir, name);
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    float *v = malloc(n * sizeof *v);
    size_t got = v ? fread(v, sizeof *v, n, f) : 0;
    fclose(f);
    if (got != n) {
        free(v);
        return NULL;
    }
    return v;
}

typedef struct {
    const char *dir;
    int step_checked;
    double max_err;
} replay;

static int replay_denoise(void *ud, const float *x, float sigma, int step, float *den, float *uncond)
{
    (void)uncond;
    replay *r = ud;
    char nm[32];
    (void)sigma;
    snprintf(nm, sizeof nm, "step%02d_x", step + 1);
    float *gx = read_f32(r->dir, nm, 256);
    snprintf(nm, sizeof nm, "step%02d_denoised", step + 1);
    float *gd = read_f32(r->dir, nm, 256);
    assert_non_null(gx);
    assert_non_null(gd);
    for (int i = 0; i < 256; i++)
        r->max_err = fmax(r->max_err, fabs(x[i] - gx[i]) / (1.0 + fabs(gx[i])));
    memcpy(den, gd, 256 * sizeof *den);
    r->step_checked = step + 1;
    free(gx);
    free(gd);
    return 0;
}

static void replay_one(const char *dir, sde_sampler kind)
{
    sde_noise_table tab;
    char err[256];
    float sg[5], x[256], work[512];
    sde_noise_table_init(&tab, NULL, err, sizeof err);
    sde_sigmas_build(&tab, SDE_SCHEDULE_DISCRETE, 4, sg, err, sizeof err);
    sde_philox rng;
    sde_philox_init(&rng, 42);
    sde_philox_randn(&rng, x, 256); /* the starting noise takes offset 0 */
    float *noise = read_f32(dir, "noise", 256), *x0 = read_f32(dir, "x0", 256);
    if (!noise || !x0) {
        free(noise);
        free(x0);
        fail_msg("golden %s: noise/x0 missing from tests/data", dir);
    }
    for (int i = 0; i < 256; i++) {
        assert_true(fabsf(x[i] - noise[i]) < 1e-5f);
        x[i] *= sg[0];
    }
    replay r = {.dir = dir};
    sde_sample_args a = {.kind = kind,
                         .n = 256,
                         .sigmas = sg,
                         .steps = 4,
                         .rng = &rng,
                         .work = work,
                         .denoise = replay_denoise,
                         .ud = &r};
    assert_int_equal(sde_sample(&a, x), 0);
    assert_int_equal(r.step_checked, 4);
    /* every step's latent follows from the peer's previous latent and denoised to float rounding */
    assert_true(r.max_err < 1e-4);
    for (int i = 0; i < 256; i++)
        assert_true(fabsf(x[i] - x0[i]) < 1e-4f * (1.f + fabsf(x0[i])));
    free(noise);
    free(x0);
}

static void test_replay_euler(void **state)
{
    (void)state;
    replay_one("sd15-rand/euler", SDE_SAMPLER_EULER);
}

static void test_replay_euler_a(void **state)
{
    (void)state;
    replay_one("sd15-rand/euler_a", SDE_SAMPLER_EULER_A);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_discrete_matches_peer),
        cmocka_unit_test(test_table_from_tensor),
        cmocka_unit_test(test_karras),
        cmocka_unit_test(test_bad_steps),
        cmocka_unit_test(test_scalings_and_cfg),
        cmocka_unit_test(test_point_mass_all_samplers),
        cmocka_unit_test(test_gaussian_convergence),
        cmocka_unit_test(test_ancestral_distribution),
        cmocka_unit_test(test_higher_order_samplers),
        cmocka_unit_test(test_schedules),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_replay_euler),
        cmocka_unit_test(test_replay_euler_a),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
