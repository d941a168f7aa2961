/* sd_batch_bench.c: a batch of N images in one sde_generate() call against N single calls with seeds
 * seed..seed+N-1, on one loaded model: wall and CPU seconds of the generations (the load not counted). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "sd_engine.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds of the whole process: on a shared machine wall time also counts other processes' turns. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *mode = "both";
    int n = 4, size = 256, steps = 4, threads = 2, mem_mb = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp(argv[i], "--n") && i + 1 < argc)
            n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc)
            size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch-mem-mb") && i + 1 < argc)
            mem_mb = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--mode") && i + 1 < argc)
            mode = argv[++i];
        else {
            fprintf(stderr,
                    "usage: sd_batch_bench --model PATH [--n N] [--size PX] [--steps N] [--threads N] "
                    "[--batch-mem-mb MB] [--mode batch|singles|both]\n");
            return 1;
        }
    }
    if (!model) {
        fprintf(stderr, "sd_batch_bench: --model is required\n");
        return 1;
    }
    char err[1024];
    sde_load_opts lo = {.model_path = model, .threads = threads};
    sde_engine *e;
    double t0 = now();
    if (sde_engine_load(&lo, &e, err, sizeof err)) {
        fprintf(stderr, "sd_batch_bench: %s\n", err);
        return 2;
    }
    printf("load %.2f s, RSS %.0f MB\n", now() - t0, peak_rss_mb());
    sde_gen_params p = {.prompt = "a photo of a cat",
                        .steps = steps,
                        .cfg_scale = 7.f,
                        .seed = 42,
                        .sampler = SDE_SAMPLER_EULER_A,
                        .schedule = SDE_SCHEDULE_DISCRETE,
                        .width = size,
                        .height = size,
                        .batch_mem_mb = mem_mb};
    sde_result r;
    if (!strcmp(mode, "batch") || !strcmp(mode, "both")) {
        p.n_images = n;
        double w = now(), c = cpu_now();
        if (sde_generate(e, &p, &r, err, sizeof err) != SDE_OK) {
            fprintf(stderr, "sd_batch_bench: %s\n", err);
            return 1;
        }
        printf("batch of %d at %dx%d, %d steps: wall %.2f s, cpu %.2f s (encode %.2f, sample %.2f, decode "
               "%.2f), "
               "peak RSS %.0f MB\n",
               n, size, size, steps, now() - w, cpu_now() - c, r.t_encode, r.t_sample, r.t_decode,
               peak_rss_mb());
        sde_result_free(&r);
    }
    if (!strcmp(mode, "singles") || !strcmp(mode, "both")) {
        p.n_images = 1;
        double w = now(), c = cpu_now(), ts = 0, td = 0;
        for (int i = 0; i < n; i++) {
            p.seed = 42 + (uint64_t)i;
            if (sde_generate(e, &p, &r, err, sizeof err) != SDE_OK) {
                fprintf(stderr, "sd_batch_bench: %s\n", err);
                return 1;
            }
            ts += r.t_sample;
            td += r.t_decode;
            sde_result_free(&r);
        }
        printf(
            "%d single jobs at %dx%d, %d steps: wall %.2f s, cpu %.2f s (sample %.2f, decode %.2f), peak RSS "
            "%.0f MB\n",
            n, size, size, steps, now() - w, cpu_now() - c, ts, td, peak_rss_mb());
    }
    sde_engine_free(e);
    return 0;
}
