/* gpu_bench.c: end-to-end text-to-image times of the engine on a backend (the GPU's: load, per step, decode,
 * total, lowest free VRAM), and how far its image is from the CPU engine's for the same job. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "png_io.h"
#include "sd_engine.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    sde_engine *e;
    size_t min_free;
} watch;

/* the lowest free VRAM seen after any step: the job's working set on top of the weights */
static int on_progress(void *ud, int step, int total, double el)
{
    (void)step, (void)total, (void)el;
    watch *w = ud;
    size_t fr, tot;
    if (sde_engine_vram(w->e, &fr, &tot) == 0 && fr < w->min_free) w->min_free = fr;
    return 0;
}

static int save(const char *dir, const char *name, const sde_result *r)
{
    if (!dir) return 0;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(r->png, 1, r->png_len, f) != r->png_len) {
        fprintf(stderr, "gpu_bench: cannot write %s\n", path);
        if (f) fclose(f);
        return -1;
    }
    return fclose(f);
}

/* max and mean |a - b| over the pixels of two PNGs of one size, and the PSNR */
static int compare(const sde_result *a, const sde_result *b)
{
    uint8_t *pa = NULL, *pb = NULL;
    int wa, ha, wb, hb;
    char err[256];
    if (sde_png_decode(a->png, a->png_len, &pa, &wa, &ha, err, sizeof err) ||
        sde_png_decode(b->png, b->png_len, &pb, &wb, &hb, err, sizeof err) || wa != wb || ha != hb) {
        fprintf(stderr, "gpu_bench: cannot compare the images (%s)\n", err);
        free(pa);
        free(pb);
        return -1;
    }
    const size_t n = (size_t)3 * wa * ha;
    int mx = 0;
    double sum = 0, sq = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)pa[i] - (int)pb[i]);
        mx = d > mx ? d : mx;
        sum += d;
        sq += (double)d * d;
    }
    const double mse = sq / n;
    printf("against the CPU engine: max |delta| %d/255, mean %.3f/255, PSNR %.1f dB\n", mx, sum / n,
           mse > 0 ? 10.0 * log10(255.0 * 255.0 / mse) : 99.0);
    free(pa);
    free(pb);
    return 0;
}

static int load(const char *model, const char *backend, sde_engine **e, double *secs)
{
    sde_load_opts o = {.model_path = model, .backend = backend, .threads = 0};
    char err[512];
    const double t0 = now();
    if (sde_engine_load(&o, e, err, sizeof err)) {
        fprintf(stderr, "gpu_bench: %s\n", err);
        return -1;
    }
    *secs = now() - t0;
    return 0;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *backend = "cuda", *out = NULL, *tag = "gpu";
    int size = 512, steps = 20, runs = 3, cpu = 0, pause = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--model") && v)
            model = argv[++i];
        else if (!strcmp(a, "--backend") && v)
            backend = argv[++i];
        else if (!strcmp(a, "--size") && v)
            size = atoi(argv[++i]);
        else if (!strcmp(a, "--steps") && v)
            steps = atoi(argv[++i]);
        else if (!strcmp(a, "--runs") && v)
            runs = atoi(argv[++i]);
        else if (!strcmp(a, "--pause") && v)
            pause = atoi(argv[++i]);
        else if (!strcmp(a, "--out") && v)
            out = argv[++i];
        else if (!strcmp(a, "--tag") && v)
            tag = argv[++i];
        else if (!strcmp(a, "--cpu-compare"))
            cpu = 1;
        else {
            fprintf(stderr,
                    "usage: gpu_bench --model FILE [--backend cuda] [--size 512] [--steps 20] [--runs 3] "
                    "[--out DIR] [--tag NAME] [--cpu-compare] [--pause S]\n"
                    "  --pause S: S seconds idle before each run after the first, as a worker waits between "
                    "jobs\n");
            return 2;
        }
    }
    if (!model || size < 64 || steps < 1 || runs < 1 || pause < 0) {
        fprintf(stderr, "gpu_bench: --model is required; size >= 64, steps and runs >= 1\n");
        return 2;
    }
    sde_engine *e;
    double tl;
    if (load(model, backend, &e, &tl)) return 1;
    size_t fr0 = 0, tot = 0;
    const int has_vram = sde_engine_vram(e, &fr0, &tot) == 0;
    printf("backend %s: load %.2f s", backend, tl);
    if (has_vram) printf(", VRAM after load %.0f MiB used of %.0f", (tot - fr0) / 1048576.0, tot / 1048576.0);
    printf("\n");
    watch w = {e, (size_t)-1};
    sde_gen_params p = {.prompt = "a photo of a cat",
                        .negative_prompt = "",
                        .steps = steps,
                        .cfg_scale = 7.0f,
                        .seed = 42,
                        .sampler = SDE_SAMPLER_EULER,
                        .schedule = SDE_SCHEDULE_DISCRETE,
                        .width = size,
                        .height = size,
                        .progress = on_progress,
                        .ud = &w};
    sde_result r, best = {0};
    char err[512];
    double tbest = 1e30;
    for (int i = 0; i <= runs; i++) { /* run 0 warms up: first-use allocations, cuBLAS's kernel choice */
        memset(&r, 0, sizeof r);
        if (i && pause) sleep((unsigned)pause);
        const double t0 = now();
        if (sde_generate(e, &p, &r, err, sizeof err) != SDE_OK) {
            fprintf(stderr, "gpu_bench: %s\n", err);
            return 1;
        }
        const double t = now() - t0;
        printf("%s %dx%d %d steps, run %d%s: total %.3f s (encode %.3f, sample %.3f = %.1f ms/step, decode "
               "%.3f)\n",
               tag, size, size, steps, i, i == 0 ? " (warm-up)" : "", t, r.t_encode, r.t_sample,
               1e3 * r.t_sample / steps, r.t_decode);
        if (r.profile && i == runs)
            printf("%s", r.profile); /* SDW_PROFILE=1: where the last run's time went */
        if (i > 0 && t < tbest) {
            tbest = t;
            sde_result_free(&best);
            best = r;
        } else {
            sde_result_free(&r);
        }
    }
    printf("%s best of %d: %.3f s end to end\n", tag, runs, tbest);
    if (has_vram && w.min_free != (size_t)-1)
        printf("%s VRAM: weights %.0f MiB, peak during sampling %.0f MiB (device total %.0f MiB)\n", tag,
               (tot - fr0) / 1048576.0, (tot - w.min_free) / 1048576.0, tot / 1048576.0);
    char name[256];
    snprintf(name, sizeof name, "%s_%d.png", tag, size);
    int rc = save(out, name, &best);
    sde_engine_free(e);
    if (cpu) {
        sde_engine *c;
        double tc;
        if (load(model, "cpu", &c, &tc)) return 1;
        p.progress = NULL;
        const double t0 = now();
        if (sde_generate(c, &p, &r, err, sizeof err) != SDE_OK) {
            fprintf(stderr, "gpu_bench: cpu: %s\n", err);
            return 1;
        }
        printf("cpu %dx%d %d steps: total %.2f s\n", size, size, steps, now() - t0);
        snprintf(name, sizeof name, "cpu_%d.png", size);
        rc |= save(out, name, &r);
        rc |= compare(&best, &r);
        sde_result_free(&r);
        sde_engine_free(c);
    }
    sde_result_free(&best);
    return rc ? 1 : 0;
}
