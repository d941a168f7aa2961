/* sd_bench.c: times the engine's models on a real-shaped checkpoint: UNet seconds per 512x512 step with
 * CFG (one batch of 2), VAE decode at 512x512, text encoding, achieved GFLOP/s and peak RSS, beside the peer;
 * --profile adds where each part's time went (backend_profile.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "backend_profile.h"
#include "checkpoint.h"
#include "clip.h"
#include "ops.h"
#include "unet.h"
#include "vae.h"

/* stable-diffusion.cpp on this machine class (2 vCPUs), SD 1.5 at 512x512: the figures we compete with. */
#define PEER_STEP_S 29.0
#define PEER_DECODE_S 62.0
#define PEER_RSS_GB 3.7

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds of the whole process (all threads): on a shared, oversubscribed machine this is what the
 * work itself cost, while wall time also counts the time other processes held the CPUs. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double peak_rss_gb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1048576.0; /* KiB on Linux */
}

/* Deterministic standard-normal-ish values (sum of uniforms): inputs only need realistic magnitudes. */
static void fill_noise(float *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (int k = 0; k < 4; k++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            s += (double)(seed >> 11) / 9007199254740992.0;
        }
        p[i] = (float)((s - 2.0) * 1.7320508);
    }
}

/* The profile of what ran since the last reset, whose wall time was total_s; nothing without --profile. */
static void print_profile(sde_backend *prof, const char *what, double total_s)
{
    char *t = sde_prof_report(prof, total_s);
    if (!t) return;
    printf("-- profile of the %s --\n%s--\n", what, t);
    free(t);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: sd_bench --model PATH [--steps N] [--size PX] [--threads N] [--skip-unet] "
            "[--skip-vae] [--skip-text] [--profile] [--precision fp32|bf16] [--warmup N]\n"
            "  --warmup N: N UNet steps first, neither timed nor profiled (the first step of a process\n"
            "  pays its fresh memory's page faults)\n");
}

int main(int argc, char **argv)
{
    const char *model = NULL;
    int steps = 1, size = 512, threads = 0, skip_unet = 0, skip_vae = 0, skip_text = 0, profile = 0, bf16 = 0,
        warmup = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc)
            warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc)
            size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--skip-unet"))
            skip_unet = 1;
        else if (!strcmp(argv[i], "--skip-vae"))
            skip_vae = 1;
        else if (!strcmp(argv[i], "--skip-text"))
            skip_text = 1;
        else if (!strcmp(argv[i], "--profile"))
            profile = 1;
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc && !strcmp(argv[i + 1], "bf16"))
            bf16 = 1, i++;
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc && !strcmp(argv[i + 1], "fp32"))
            i++;
        else {
            usage();
            return 2;
        }
    }
    const char *env_prof = getenv("SDW_PROFILE"); /* as the engine reads it */
    if (env_prof && !strcmp(env_prof, "1")) profile = 1;
    if (!model || steps < 1 || warmup < 0 || size < 64 || size > 2048 || size % 8) {
        usage();
        return 2;
    }
    sde_set_threads(threads);
    if (bf16 && !sde_cpu_has_bf16()) {
        fprintf(stderr, "sd_bench: --precision bf16: this CPU has no AVX512-BF16\n");
        return 1;
    }
    sde_set_bf16(bf16);
    printf("precision: %s\n", bf16 ? "bf16" : "fp32");
    char err[512];
    double t0 = now(), c0 = cpu_now();
    sde_ckpt *ck;
    if (sde_ckpt_open(model, &ck, err, sizeof err)) {
        fprintf(stderr, "sd_bench: %s\n", err);
        return 1;
    }
    sde_unet_config ucfg;
    sde_unet *unet = NULL;
    sde_vae *vae = NULL;
    sde_clip *clip = NULL;
    if (sde_unet_config_infer(ck, &ucfg, err, sizeof err) ||
        sde_unet_build(ck, &ucfg, &unet, err, sizeof err) || sde_vae_build(ck, &vae, err, sizeof err) ||
        sde_clip_build(ck, &clip, err, sizeof err)) {
        fprintf(stderr, "sd_bench: %s\n", err);
        return 1;
    }
    /* profiling: the models switch to a wrapper around the backend they were built on */
    sde_backend *prof = profile ? sde_prof_wrap(sde_backend_cpu()) : NULL;
    if (profile && !prof) {
        fprintf(stderr, "sd_bench: out of memory\n");
        return 1;
    }
    if (prof) {
        sde_unet_use_backend(unet, prof);
        sde_vae_use_backend(vae, prof);
        sde_clip_use_backend(clip, prof);
    }
    const int lh = size / 8, lw = size / 8, nctx = 77, ctxd = ucfg.context_dim;
    if (sde_unet_reserve(unet, 2, lh, lw, nctx, err, sizeof err)) {
        fprintf(stderr, "sd_bench: %s\n", err);
        return 1;
    }
    char tdesc[16] = "default";
    if (threads > 0) snprintf(tdesc, sizeof tdesc, "%d", threads);
    printf("model %s: loaded in %.1f s, %.1f cpu s (%.2f GB converted to f32), BLAS threads %s\n", model,
           now() - t0, cpu_now() - c0, sde_ckpt_converted_bytes(ck) / 1e9, tdesc);
    printf("%-28s %10s %10s %8s\n", "", "ours", "peer", "speedup");

    /* text encoder: one 77-token context (start, a few words, end padding) */
    double t_text = -1;
    if (!skip_text) {
        int32_t tok[77];
        tok[0] = 49406;
        for (int i = 1; i < 77; i++)
            tok[i] = i < 8 ? 320 + 17 * i : 49407;
        float *cond = malloc(sizeof(float) * 77 * sde_clip_dim(clip));
        sde_prof_reset(prof);
        double a = now();
        sde_prof_section(prof, "clip", -1);
        sde_clip_encode(clip, tok, cond);
        sde_prof_section(prof, NULL, 0);
        t_text = now() - a;
        free(cond);
        printf("%-28s %9.2fs %10s\n", "text encode (77 tokens)", t_text, "-");
        print_profile(prof, "text encode", t_text);
    }

    double step_s = -1, step_cpu = -1, gflops = 0;
    if (!skip_unet) {
        size_t nl = (size_t)2 * 4 * lh * lw;
        float *x = malloc(sizeof(float) * nl), *out = malloc(sizeof(float) * nl);
        float *ctx = malloc(sizeof(float) * 2 * nctx * ctxd), ts[2] = {999, 999};
        fill_noise(x, nl, 1);
        fill_noise(ctx, (size_t)2 * nctx * ctxd, 2);
        double total = 0, total_cpu = 0;
        for (int s = 0; s < warmup; s++) {
            double a = now();
            sde_unet_forward(unet, x, 2, lh, lw, ts, ctx, nctx, out);
            printf("  warm-up step %d: %.2f s wall\n", s + 1, now() - a);
        }
        sde_prof_reset(prof);
        for (int s = 0; s < steps; s++) {
            double a = now(), ac = cpu_now();
            sde_unet_forward(unet, x, 2, lh, lw, ts, ctx, nctx, out);
            double dt = now() - a, dc = cpu_now() - ac;
            total += dt;
            total_cpu += dc;
            printf("  unet step %d: %.2f s wall, %.2f s cpu\n", s + 1, dt, dc);
            ts[0] = ts[1] = 999.0f - 250.0f * (s + 1);
        }
        print_profile(prof, "UNet steps", total);
        step_s = total / steps;
        gflops = 2.0 * 2.0 * sde_unet_flops(unet, lh, lw, nctx) / step_s / 1e9;
        printf("%-28s %9.2fs %9.1fs %7.2fx\n", "UNet step (CFG, batch 2)", step_s, PEER_STEP_S,
               PEER_STEP_S / step_s);
        printf("%-28s %10.1f %10s\n", "UNet GFLOP/s", gflops, "-");
        step_cpu = total_cpu / steps;
        printf("%-28s %9.2fs %9.1fs %7.2fx\n", "UNet step, cpu seconds", step_cpu, PEER_STEP_S,
               PEER_STEP_S / step_cpu);
        printf("%-28s %10.1f %10s\n", "UNet GFLOP per cpu-second", gflops * step_s / step_cpu, "-");
        free(x), free(out), free(ctx);
    }
    /* the sampler is done before the decode: give its activations back as the engine would */
    sde_unet_reserve(unet, 0, 0, 0, 0, err, sizeof err);

    double dec_s = -1, dec_cpu = -1;
    if (!skip_vae) {
        float *z = malloc(sizeof(float) * 4 * lh * lw), *rgb = malloc(sizeof(float) * 3 * size * size);
        fill_noise(z, (size_t)4 * lh * lw, 3);
        sde_prof_reset(prof);
        double a = now(), ac = cpu_now();
        if (sde_vae_decode(vae, z, lh, lw, rgb, NULL, NULL, err, sizeof err)) {
            fprintf(stderr, "sd_bench: %s\n", err);
            return 1;
        }
        dec_s = now() - a;
        dec_cpu = cpu_now() - ac;
        print_profile(prof, "VAE decode", dec_s);
        printf("%-28s %9.2fs %9.1fs %7.2fx\n", "VAE decode", dec_s, PEER_DECODE_S, PEER_DECODE_S / dec_s);
        printf("%-28s %9.2fs %9.1fs %7.2fx\n", "VAE decode, cpu seconds", dec_cpu, PEER_DECODE_S,
               PEER_DECODE_S / dec_cpu);
        free(z), free(rgb);
    }
    double rss = peak_rss_gb();
    printf("%-28s %9.2fG %9.1fG %7.2fx\n", "peak RSS", rss, PEER_RSS_GB, PEER_RSS_GB / rss);
    printf("summary: size %d unet_step_s %.2f unet_step_cpu_s %.2f vae_decode_s %.2f vae_decode_cpu_s %.2f "
           "text_s %.3f gflops %.1f peak_rss_gb %.2f\n",
           size, step_s, step_cpu, dec_s, dec_cpu, t_text, gflops, rss);
    sde_clip_free(clip);
    sde_vae_free(vae);
    sde_unet_free(unet);
    sde_prof_free(prof); /* after the models, which free their buffers through it */
    sde_ckpt_free(ck);
    return 0;
}
