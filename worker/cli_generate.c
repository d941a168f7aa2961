/* cli_generate.c: `sd-worker generate`, one text-to-image generation from the command line: options in,
 * PNG file out, progress on stderr. The same engine calls the worker process makes, without the frames. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "sd_engine.h"

static volatile sig_atomic_t g_interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

static void generate_usage(FILE *f)
{
    fprintf(f,
            "usage: sd-worker generate --model PATH --prompt TEXT --output OUT.png [options]\n"
            "\n"
            "Generates one image from a text prompt and writes it as PNG (with the settings in an\n"
            "AUTOMATIC1111-style \"parameters\" text chunk).\n"
            "\n"
            "  --model PATH            .safetensors checkpoint (SD 1.x, SD 2.x, tiny) or a diffusers folder\n"
            "  --tokenizer PATH        CLIP tokenizer: bpe_simple_vocab_16e6.txt(.gz), a vocab.json, or a folder\n"
            "                          with vocab.json + merges.txt (default: the model's own, if it has one)\n"
            "  --prompt TEXT           what to draw (required)\n"
            "  --negative-prompt TEXT  what to steer away from (default: empty)\n"
            "  --steps N               sampling steps, 1..150 (default 20)\n"
            "  --cfg X                 classifier-free guidance scale, 0..30 (default 7.5; 1 = no guidance,\n"
            "                          half the work)\n"
            "  --seed N                noise seed, 0..2^64-1 (default: a random one, printed)\n"
            "  --sampler NAME          euler | euler_a | ddim | dpmpp_2m | lcm | heun | dpm2 | dpmpp_2s_a |\n"
            "                          dpmpp_2m_sde | dpmpp_2m_v2 | ipndm | ipndm_v | lms | ddim_trailing | tcd |\n"
            "                          euler_cfg_pp | euler_a_cfg_pp | res_multistep | res_2s | er_sde | euler_ge\n"
            "                          (also stable-diffusion.cpp's and A1111's names; default euler)\n"
            "  --schedule NAME         discrete (normal) | karras | exponential | ays | gits | sgm_uniform |\n"
            "                          simple | kl_optimal | beta | smoothstep | lcm (default discrete)\n"
            "  --clip-skip N           text encoder layer counted from the end, A1111's \"Clip skip\": 1 = last,\n"
            "                          2 = penultimate (default 0: the model's, 1 for SD 1.x, 2 for SD 2.x)\n"
            "  --width N, --height N   image size, multiples of 8 in 64..2048 (default: the model's native\n"
            "                          size: 512 for SD 1.x, 768 for SD 2.x v models, 64 for tiny models)\n"
            "  --threads N             BLAS threads (default: OpenBLAS's choice)\n"
            "  --prediction P          auto | eps | v: what the UNet predicts (default auto: the model's\n"
            "                          config or metadata, else eps for SD 1.x, v for SD 2.x)\n"
            "  --output OUT.png        file to write (required; written to OUT.png.part, then renamed)\n"
            "  --help                  this text\n"
            "\n"
            "Progress goes to stderr; on success the output path is printed on stdout and the timings on stderr.\n"
            "Exit status: 0 written, 1 bad options or generation failed, 2 the model or tokenizer failed to\n"
            "load, 130 interrupted (SIGINT/SIGTERM cancel between steps).\n");
}

static int parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || errno || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!*s || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static uint64_t random_seed(void)
{
    uint64_t s;
    if (getrandom(&s, sizeof s, 0) == (ssize_t)sizeof s)
        return s;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
}

static int cli_progress(void *ud, int step, int total, double elapsed)
{
    (void)ud;
    fprintf(stderr, "step %d/%d  %.2f s\n", step, total, elapsed);
    return g_interrupted;
}

static int cli_cancel(void *ud)
{
    (void)ud;
    return g_interrupted;
}

/* The option a params field came from, for error messages. */
static const char *option_of(const char *field)
{
    static const char *const map[][2] = {{"prompt", "--prompt"}, {"negative_prompt", "--negative-prompt"},
                                         {"steps", "--steps"},   {"cfg_scale", "--cfg"},
                                         {"width", "--width"},   {"height", "--height"},
                                         {"sampler", "--sampler"}, {"schedule", "--schedule"}};
    for (size_t i = 0; field && i < sizeof map / sizeof *map; i++)
        if (!strcmp(field, map[i][0]))
            return map[i][1];
    return field ? field : "?";
}

static int write_file(const char *path, const uint8_t *data, size_t len, char *err, size_t errlen)
{
    char part[4096];
    if (snprintf(part, sizeof part, "%s.part", path) >= (int)sizeof part) {
        snprintf(err, errlen, "%s: path too long", path);
        return -1;
    }
    int fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", part, strerror(errno));
        return -1;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(err, errlen, "%s: write: %s", part, strerror(errno));
            close(fd);
            unlink(part);
            return -1;
        }
        off += (size_t)w;
    }
    if (close(fd) != 0 || rename(part, path) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        unlink(part);
        return -1;
    }
    return 0;
}

int sdw_cmd_generate(int argc, char **argv)
{
    sde_load_opts lo = {0};
    sde_gen_params p = {.steps = 20, .cfg_scale = 7.5f, .sampler = SDE_SAMPLER_EULER,
                        .schedule = SDE_SCHEDULE_DISCRETE};
    const char *output = NULL;
    int have_seed = 0, have_w = 0, have_h = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            generate_usage(stdout);
            return 0;
        }
        static const char *const with_value[] = {"--model", "--tokenizer", "--prompt", "--negative-prompt",
                                                 "--steps", "--cfg", "--seed", "--sampler", "--schedule", "--width",
                                                 "--height", "--threads", "--prediction", "--output", "--clip-skip"};
        int known = 0;
        for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++)
            known |= !strcmp(a, with_value[k]);
        if (!known) {
            fprintf(stderr, "sd-worker generate: unknown option \"%s\" (see --help)\n", a);
            return 1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "sd-worker generate: %s needs a value\n", a);
            return 1;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "--model")) {
            lo.model_path = v;
        } else if (!strcmp(a, "--tokenizer")) {
            lo.tokenizer_path = v;
        } else if (!strcmp(a, "--prompt")) {
            p.prompt = v;
        } else if (!strcmp(a, "--negative-prompt")) {
            p.negative_prompt = v;
        } else if (!strcmp(a, "--steps")) {
            bad = parse_int(v, -1000000, 1000000, &p.steps);
        } else if (!strcmp(a, "--cfg")) {
            char *end;
            errno = 0;
            double c = strtod(v, &end);
            bad = !*v || *end || errno || !isfinite(c);
            p.cfg_scale = (float)c;
        } else if (!strcmp(a, "--seed")) {
            bad = parse_u64(v, &p.seed);
            have_seed = 1;
        } else if (!strcmp(a, "--sampler")) {
            int s = sde_sampler_parse(v);
            if (s < 0) {
                fprintf(stderr, "sd-worker generate: --sampler: unknown sampler \"%s\" (see --help)\n", v);
                return 1;
            }
            p.sampler = (sde_sampler)s;
        } else if (!strcmp(a, "--schedule")) {
            int s = sde_schedule_parse(v);
            if (s < 0) {
                fprintf(stderr, "sd-worker generate: --schedule: unknown schedule \"%s\" (see --help)\n", v);
                return 1;
            }
            p.schedule = (sde_schedule)s;
        } else if (!strcmp(a, "--width")) {
            bad = parse_int(v, -1000000, 1000000, &p.width);
            have_w = 1;
        } else if (!strcmp(a, "--height")) {
            bad = parse_int(v, -1000000, 1000000, &p.height);
            have_h = 1;
        } else if (!strcmp(a, "--clip-skip")) {
            bad = parse_int(v, 0, 64, &p.clip_skip);
        } else if (!strcmp(a, "--threads")) {
            bad = parse_int(v, 1, 1024, &lo.threads);
        } else if (!strcmp(a, "--prediction")) {
            if (!strcmp(v, "auto"))
                lo.prediction = SDE_PRED_AUTO;
            else if (!strcmp(v, "eps"))
                lo.prediction = SDE_PRED_EPS;
            else if (!strcmp(v, "v"))
                lo.prediction = SDE_PRED_V;
            else
                bad = 1;
        } else if (!strcmp(a, "--output")) {
            output = v;
        }
        if (bad) {
            fprintf(stderr, "sd-worker generate: %s: invalid value \"%s\"%s\n", a, v,
                    !strcmp(a, "--threads")      ? " (an integer 1..1024)"
                    : !strcmp(a, "--prediction") ? " (auto, eps or v)"
                    : !strcmp(a, "--seed")       ? " (an integer 0..18446744073709551615)"
                    : !strcmp(a, "--cfg")        ? " (a number)"
                                                 : " (an integer)");
            return 1;
        }
    }
    if (!lo.model_path || !*lo.model_path) {
        fprintf(stderr, "sd-worker generate: --model PATH is required\n");
        return 1;
    }
    if (!p.prompt) {
        fprintf(stderr, "sd-worker generate: --prompt TEXT is required\n");
        return 1;
    }
    if (!output || !*output) {
        fprintf(stderr, "sd-worker generate: --output OUT.png is required\n");
        return 1;
    }
    /* check everything but the size before the (slow) load; the size may still come from the model */
    const char *field = NULL;
    char err[8192];
    sde_gen_params probe = p;
    probe.width = have_w ? p.width : 512;
    probe.height = have_h ? p.height : 512;
    if (sde_params_validate(&probe, &field, err, sizeof err)) {
        fprintf(stderr, "sd-worker generate: %s: %s\n", option_of(field), err);
        return 1;
    }
    /* fail on an unwritable output before spending the load and the sampling on it */
    char part[4200];
    snprintf(part, sizeof part, "%s.part", output);
    int pfd = open(part, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (pfd < 0 && errno != EEXIST) {
        fprintf(stderr, "sd-worker generate: --output: %s: %s\n", part, strerror(errno));
        return 1;
    }
    if (pfd >= 0) {
        close(pfd);
        unlink(part);
    }
    if (!have_seed) {
        p.seed = random_seed();
        fprintf(stderr, "seed %llu\n", (unsigned long long)p.seed);
    }

    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    sde_engine *e;
    if (sde_engine_load(&lo, &e, err, sizeof err)) {
        fprintf(stderr, "sd-worker generate: %s\n", err);
        return 2;
    }
    sde_model_info info;
    sde_engine_info(e, &info);
    if (!have_w)
        p.width = info.default_size;
    if (!have_h)
        p.height = info.default_size;
    fprintf(stderr, "model %s (%s, %s prediction from %s, %.0fM parameters%s%s)\n", info.model_name, info.arch,
            info.prediction, info.prediction_source, (double)info.n_params / 1e6, info.model_hash[0] ? ", hash " : "", info.model_hash);
    p.progress = cli_progress;
    p.should_cancel = cli_cancel;
    sde_result r;
    int rc = sde_generate(e, &p, &r, err, sizeof err);
    sde_engine_free(e);
    if (rc == SDE_CANCELLED) {
        fprintf(stderr, "sd-worker generate: interrupted\n");
        return 130;
    }
    if (rc != SDE_OK) {
        /* the only params check left to fail here is the size taken from the model */
        fprintf(stderr, "sd-worker generate: %s\n", err);
        return 1;
    }
    if (write_file(output, r.png, r.png_len, err, sizeof err)) {
        fprintf(stderr, "sd-worker generate: --output: %s\n", err);
        sde_result_free(&r);
        return 1;
    }
    printf("%s\n", output);
    fprintf(stderr, "%dx%d seed %llu: encode %.3f s, sample %.3f s, decode %.3f s, total %.3f s\n", r.width, r.height,
            (unsigned long long)r.seed, r.t_encode, r.t_sample, r.t_decode, r.t_total);
    sde_result_free(&r);
    return 0;
}
