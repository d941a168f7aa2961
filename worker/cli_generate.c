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

#include <getopt.h>

#include "commands.h"
#include "gen_engine.h"
#include "gen_images.h"
#include "sd_engine.h"

static volatile sig_atomic_t g_interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

static void generate_usage(FILE *f)
{
    char samplers[512], schedules[256], predictions[64];
    sdw_names_list(SDW_NAMES_SAMPLER, " | ", NULL, samplers, sizeof samplers);
    sdw_names_list(SDW_NAMES_SCHEDULE, " | ", NULL, schedules, sizeof schedules);
    sdw_names_list(SDW_NAMES_PREDICTION, " | ", NULL, predictions, sizeof predictions);
    fprintf(
        f,
        "usage: sd-worker generate --model PATH --prompt TEXT --output OUT.png [options]\n"
        "\n"
        "Generates one image from a text prompt and writes it as PNG (with the settings in an\n"
        "AUTOMATIC1111-style \"parameters\" text chunk).\n"
        "\n"
        "  --model PATH            .safetensors checkpoint (SD 1.x, SD 2.x, SDXL, tiny) or a diffusers "
        "folder\n"
        "  --tokenizer PATH        CLIP tokenizer: bpe_simple_vocab_16e6.txt(.gz), a vocab.json, or a "
        "folder\n"
        "                          with vocab.json + merges.txt (default: the model's own, else CLIP's "
        "built in)\n"
        "  --prompt TEXT           what to draw (required)\n"
        "  --negative-prompt TEXT  what to steer away from (default: empty)\n"
        "  --steps N               sampling steps, 1..150 (default 20)\n"
        "  --cfg X                 classifier-free guidance scale, 0..30 (default 7.5; 1 = no guidance,\n"
        "                          half the work)\n"
        "  --seed N                noise seed, 0..2^64-1 (default: a random one, printed)\n"
        "  --sampler NAME          %s\n"
        "                          (also stable-diffusion.cpp's and A1111's spellings; default %s)\n"
        "  --schedule NAME         %s (default %s)\n"
        "  --clip-skip N           text encoder layer counted from the end, A1111's \"Clip skip\": 1 = "
        "last,\n"
        "                          2 = penultimate (default 0: the model's, 1 for SD 1.x, 2 for SD 2.x)\n"
        "  --width N, --height N   image size, multiples of 8 in 64..2048 (default: the model's native\n"
        "                          size: 512 for SD 1.x, 768 for SD 2.x v models, 1024 for SDXL, 64 for\n"
        "                          tiny models)\n"
        "  --threads N             BLAS threads (default: OpenBLAS's choice)\n"
        "  --prediction P          %s: what the UNet predicts (default auto: the model's\n"
        "                          config or metadata, else eps for SD 1.x, v for SD 2.x)\n"
        "  --output OUT.png        file to write (required; written to OUT.png.part, then renamed)\n"
        "  --init-image PATH       img2img: start from this PNG (resized to --width x --height when its\n"
        "                          size differs; without --width/--height the model's native size)\n"
        "  --strength S            how much of the schedule reruns over the init image, (0, 1] (default "
        "0.75)\n"
        "  --mask PATH             inpainting: PNG the size of the init image, white = repaint, black = "
        "keep\n"
        "  --mask-blur N           feather the mask edge by N pixels, 0..64 (default 0: hard edge)\n"
        "  --lora-dir DIR          where <lora:NAME:WEIGHT> tags in the prompt find NAME.safetensors\n"
        "  --preview-every K       write a live preview (<= 256 px) every K steps: TAESD-decoded with\n"
        "                          --taesd, else the linear latent->RGB approximation\n"
        "  --preview-dir DIR       where previews go, as preview-STEP.png (default: the current folder)\n"
        "  --original-size WxH     SDXL micro-conditioning, as the job API's original_size (default: the\n"
        "                          image size)\n"
        "  --crop-top-left T,L     SDXL crops_coords_top_left, top first (default 0,0)\n"
        "  --target-size WxH       SDXL target_size (default: the image size); other models ignore all\n"
        "                          three\n"
        "  --profile               print where the time went (per op kind, model and UNet/VAE level) to\n"
        "                          stderr; slower (also SDW_PROFILE=1)\n"
        "  --taesd PATH            TAESD tiny autoencoder .safetensors (madebyollin's taesd for SD\n"
        "                          1.x/2.x, taesdxl for SDXL): previews decode with it\n"
        "  --decoder vae|taesd     the image's decoder: the model's VAE (default) or the TAESD of\n"
        "                          --taesd, about ten times faster, softer: for drafts\n"
        "  --precision fp32|bf16   the arithmetic: fp32 (default, matched to the reference) or bf16 GEMMs\n"
        "                          with fp32 accumulation, faster, opt-in; where the CPU lacks AVX512-BF16\n"
        "                          a bf16 run is done in fp32 (with a warning)\n"
        "  --n N                   a batch of N images, 1..%d (default 1), seeds SEED, SEED+1, ...: the\n"
        "                          first goes to OUT.png, image i to OUT-i.png (OUT-1.png, OUT-2.png, ...)\n"
        "  --help                  this text\n"
        "\n"
        "Progress goes to stderr; on success the output path is printed on stdout and the timings on "
        "stderr.\n"
        "Exit status: 0 written, 1 bad options or generation failed, 2 the model or tokenizer failed to\n"
        "load, 130 interrupted (SIGINT/SIGTERM cancel between steps).\n",
        samplers, sdw_sampler_name(SDW_SAMPLER_EULER), schedules, sdw_schedule_name(SDW_SCHEDULE_DISCRETE),
        predictions, SDE_MAX_IMAGES);
}

static int parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || errno || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

/* "A<sep>B" (1024x768, 16,32): two integers lo..SDE_MAX_SDXL_SIZE. */
static int parse_pair(const char *s, char sep, int lo, int *a, int *b)
{
    char first[24];
    const char *at = strchr(s, sep);
    if (!at || (size_t)(at - s) >= sizeof first) return -1;
    memcpy(first, s, (size_t)(at - s));
    first[at - s] = '\0';
    return parse_int(first, lo, SDE_MAX_SDXL_SIZE, a) || parse_int(at + 1, lo, SDE_MAX_SDXL_SIZE, b) ? -1 : 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!*s || *s == '-') return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

/* The whole file at path into a malloc'd *buf (at most 64 MiB: an image input, not a model). */
static int read_whole(const char *path, uint8_t **buf, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    uint8_t *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap || cap >= ((size_t)64 << 20)) break;
        uint8_t *nb = realloc(b, cap * 2);
        if (!nb) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    int bad = !b || ferror(f) || n == cap;
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "%s: %s", path,
                 !b         ? "out of memory"
                 : n == cap ? "larger than 64 MiB"
                            : "read error");
        free(b);
        return -1;
    }
    *buf = b;
    *len = n;
    return 0;
}

static uint64_t random_seed(void)
{
    uint64_t s;
    if (getrandom(&s, sizeof s, 0) == (ssize_t)sizeof s) return s;
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

static int g_preview_every;
static const char *g_preview_dir = ".";

static int write_file(const char *path, const uint8_t *data, size_t len, char *err, size_t errlen);

/* Each live preview as DIR/preview-STEP.png; a failed write is reported and sampling goes on. */
static void cli_preview(void *ud, int step, int total, const uint8_t *png, size_t len, int w, int h)
{
    (void)ud, (void)total;
    char path[4200], err[512];
    snprintf(path, sizeof path, "%s/preview-%03d.png", g_preview_dir, step);
    if (write_file(path, png, len, err, sizeof err))
        fprintf(stderr, "sd-worker generate: --preview-dir: %s\n", err);
    else
        fprintf(stderr, "preview %s (%dx%d)\n", path, w, h);
}

static int cli_cancel(void *ud)
{
    (void)ud;
    return g_interrupted;
}

/* The option a params field came from, for error messages. */
static const char *option_of(const char *field)
{
    static const char *const map[][2] = {{"prompt", "--prompt"},
                                         {"negative_prompt", "--negative-prompt"},
                                         {"steps", "--steps"},
                                         {"cfg_scale", "--cfg"},
                                         {"width", "--width"},
                                         {"height", "--height"},
                                         {"sampler", "--sampler"},
                                         {"schedule", "--schedule"},
                                         {"init_image", "--init-image"},
                                         {"strength", "--strength"},
                                         {"mask", "--mask"},
                                         {"mask_blur", "--mask-blur"},
                                         {"loras", "--lora-dir"},
                                         {"decoder", "--decoder"},
                                         {"precision", "--precision"},
                                         {"original_size", "--original-size"},
                                         {"crops_coords_top_left", "--crop-top-left"},
                                         {"target_size", "--target-size"},
                                         {"n_images", "--n"}};
    for (size_t i = 0; field && i < sizeof map / sizeof *map; i++)
        if (!strcmp(field, map[i][0])) return map[i][1];
    return field ? field : "?";
}

/* Where image i of a batch goes: OUT.png for the first, OUT-i.png (the suffix before the extension of the
 * file name, else at the end) for the others. */
static void batch_output_path(const char *output, int i, char *buf, size_t len)
{
    if (i == 0) {
        snprintf(buf, len, "%s", output);
        return;
    }
    const char *slash = strrchr(output, '/'), *dot = strrchr(output, '.');
    if (!dot || (slash && dot < slash) || dot == (slash ? slash + 1 : output)) dot = output + strlen(output);
    snprintf(buf, len, "%.*s-%d%s", (int)(dot - output), output, i, dot);
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
        if (w < 0 && errno == EINTR) continue;
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

/* The engine's warnings, on the terminal as before (the engine itself never writes to stderr). */
static void engine_warning(void *ud, const char *msg)
{
    (void)ud;
    fprintf(stderr, "sd-engine: %s\n", msg);
}

/* The options, in --help order; the enum values are getopt_long's return values. */
enum {
    O_MODEL = 256,
    O_TOKENIZER,
    O_PROMPT,
    O_NEGATIVE,
    O_STEPS,
    O_CFG,
    O_SEED,
    O_SAMPLER,
    O_SCHEDULE,
    O_WIDTH,
    O_HEIGHT,
    O_THREADS,
    O_PREDICTION,
    O_CLIP_SKIP,
    O_OUTPUT,
    O_INIT_IMAGE,
    O_STRENGTH,
    O_MASK,
    O_MASK_BLUR,
    O_LORA_DIR,
    O_PREVIEW_EVERY,
    O_PREVIEW_DIR,
    O_PROFILE,
    O_TAESD,
    O_DECODER,
    O_PRECISION,
    O_ORIGINAL_SIZE,
    O_CROP_TOP_LEFT,
    O_TARGET_SIZE,
    O_N
};

static const struct option generate_opts[] = {
    {"help", no_argument, NULL, 'h'},
    {"model", required_argument, NULL, O_MODEL},
    {"tokenizer", required_argument, NULL, O_TOKENIZER},
    {"prompt", required_argument, NULL, O_PROMPT},
    {"negative-prompt", required_argument, NULL, O_NEGATIVE},
    {"steps", required_argument, NULL, O_STEPS},
    {"cfg", required_argument, NULL, O_CFG},
    {"seed", required_argument, NULL, O_SEED},
    {"sampler", required_argument, NULL, O_SAMPLER},
    {"schedule", required_argument, NULL, O_SCHEDULE},
    {"width", required_argument, NULL, O_WIDTH},
    {"height", required_argument, NULL, O_HEIGHT},
    {"threads", required_argument, NULL, O_THREADS},
    {"prediction", required_argument, NULL, O_PREDICTION},
    {"clip-skip", required_argument, NULL, O_CLIP_SKIP},
    {"output", required_argument, NULL, O_OUTPUT},
    {"init-image", required_argument, NULL, O_INIT_IMAGE},
    {"strength", required_argument, NULL, O_STRENGTH},
    {"mask", required_argument, NULL, O_MASK},
    {"mask-blur", required_argument, NULL, O_MASK_BLUR},
    {"lora-dir", required_argument, NULL, O_LORA_DIR},
    {"preview-every", required_argument, NULL, O_PREVIEW_EVERY},
    {"preview-dir", required_argument, NULL, O_PREVIEW_DIR},
    {"profile", no_argument, NULL, O_PROFILE},
    {"taesd", required_argument, NULL, O_TAESD},
    {"decoder", required_argument, NULL, O_DECODER},
    {"precision", required_argument, NULL, O_PRECISION},
    {"original-size", required_argument, NULL, O_ORIGINAL_SIZE},
    {"crop-top-left", required_argument, NULL, O_CROP_TOP_LEFT},
    {"target-size", required_argument, NULL, O_TARGET_SIZE},
    {"n", required_argument, NULL, O_N},
    {NULL, 0, NULL, 0},
};

/* What an invalid value of option c should have been, for the message. */
static const char *value_hint(int c, char *buf, size_t len)
{
    switch (c) {
    case O_THREADS:
        return " (an integer 1..1024)";
    case O_N:
        snprintf(buf, len, " (an integer 1..%d)", SDE_MAX_IMAGES);
        return buf;
    case O_PREDICTION: {
        char list[64];
        snprintf(buf, len, " (%s)", sdw_names_list(SDW_NAMES_PREDICTION, ", ", " or ", list, sizeof list));
        return buf;
    }
    case O_SEED:
        return " (an integer 0..18446744073709551615)";
    case O_CFG:
    case O_STRENGTH:
        return " (a number)";
    case O_ORIGINAL_SIZE:
    case O_TARGET_SIZE:
        snprintf(buf, len, " (WIDTHxHEIGHT, each 1..%d)", SDE_MAX_SDXL_SIZE);
        return buf;
    case O_CROP_TOP_LEFT:
        snprintf(buf, len, " (TOP,LEFT, each 0..%d)", SDE_MAX_SDXL_SIZE);
        return buf;
    default:
        return " (an integer)";
    }
}

/* Reads argv into the request, the load options and the output path. 0, 1 (exit 1: message printed), or -1
 * (--help printed: exit 0). */
static int parse_generate_args(int argc, char **argv, sdw_gen_request *r, sde_load_opts *lo,
                               const char **output, int *have_w, int *have_h)
{
    opterr = 0;
    optind = 0;
    int c, idx;
    while ((c = getopt_long(argc, argv, ":h", generate_opts, &idx)) != -1) {
        const char *v = optarg;
        int bad = 0, x;
        switch (c) {
        case 'h':
            generate_usage(stdout);
            return -1;
        case ':':
            fprintf(stderr, "sd-worker generate: %s needs a value\n", argv[optind - 1]);
            return 1;
        case '?':
            if (optopt > 0 && optopt < 256)
                fprintf(stderr, "sd-worker generate: unknown option \"-%c\" (see --help)\n", optopt);
            else
                fprintf(stderr, "sd-worker generate: unknown option \"%s\" (see --help)\n", argv[optind - 1]);
            return 1;
        case O_MODEL:
            lo->model_path = v;
            break;
        case O_TOKENIZER:
            lo->tokenizer_path = v;
            break;
        case O_PROMPT:
        case O_NEGATIVE:
            if (sdw_gen_request_set_str(c == O_PROMPT ? &r->prompt : &r->negative_prompt, v)) {
                fprintf(stderr, "sd-worker generate: out of memory\n");
                return 1;
            }
            break;
        case O_STEPS:
            bad = parse_int(v, -1000000, 1000000, &r->steps);
            break;
        case O_CFG: {
            char *end;
            errno = 0;
            double cfg = strtod(v, &end);
            bad = !*v || *end || errno || !isfinite(cfg);
            r->cfg_scale = cfg;
            break;
        }
        case O_SEED:
            bad = parse_u64(v, &r->seed);
            r->has_seed = 1;
            break;
        case O_SAMPLER:
        case O_SCHEDULE: {
            sdw_names_kind kind = c == O_SAMPLER ? SDW_NAMES_SAMPLER : SDW_NAMES_SCHEDULE;
            if ((x = sdw_names_parse(kind, v)) < 0) {
                char list[512];
                fprintf(stderr, "sd-worker generate: --%s: unknown %s \"%s\" (%s)\n", generate_opts[idx].name,
                        sdw_names_kind_name(kind), v, sdw_names_list(kind, ", ", NULL, list, sizeof list));
                return 1;
            }
            if (c == O_SAMPLER)
                r->sampler = (sdw_sampler)x;
            else
                r->schedule = (sdw_schedule)x;
            break;
        }
        case O_CLIP_SKIP:
            bad = parse_int(v, 0, 64, &r->clip_skip);
            break;
        case O_WIDTH:
            bad = parse_int(v, -1000000, 1000000, &r->width);
            *have_w = 1;
            break;
        case O_HEIGHT:
            bad = parse_int(v, -1000000, 1000000, &r->height);
            *have_h = 1;
            break;
        case O_THREADS:
            bad = parse_int(v, 1, 1024, &lo->threads);
            break;
        case O_PROFILE:
            lo->profile = 1;
            break;
        case O_PREDICTION:
            bad = (x = sdw_prediction_parse(v)) < 0;
            lo->prediction = bad ? SDE_PRED_AUTO : (sde_prediction)x;
            break;
        case O_OUTPUT:
            *output = v;
            break;
        case O_INIT_IMAGE:
        case O_MASK: {
            uint8_t **buf = c == O_INIT_IMAGE ? &r->init_image : &r->mask;
            size_t *len = c == O_INIT_IMAGE ? &r->init_image_len : &r->mask_len;
            char err[512];
            free(*buf);
            *buf = NULL;
            if (read_whole(v, buf, len, err, sizeof err)) {
                fprintf(stderr, "sd-worker generate: --%s: %s\n", generate_opts[idx].name, err);
                return 1;
            }
            break;
        }
        case O_STRENGTH: {
            char *end;
            errno = 0;
            double st = strtod(v, &end);
            bad = !*v || *end || errno || !isfinite(st);
            r->strength = st;
            break;
        }
        case O_MASK_BLUR:
            bad = parse_int(v, -1000000, 1000000, &r->mask_blur);
            break;
        case O_PREVIEW_EVERY:
            bad = parse_int(v, 0, 150, &g_preview_every);
            break;
        case O_PREVIEW_DIR:
            g_preview_dir = v;
            break;
        case O_TAESD:
            lo->taesd_path = v;
            break;
        case O_DECODER:
            if (!strcmp(v, "vae") || !strcmp(v, "taesd")) {
                r->decoder = !strcmp(v, "taesd") ? SDW_DECODER_TAESD : SDW_DECODER_VAE;
            } else {
                fprintf(stderr, "sd-worker generate: --decoder: unknown decoder \"%s\" (vae or taesd)\n", v);
                return 1;
            }
            break;
        case O_PRECISION:
            if ((r->precision = sdw_precision_parse(v)) < 0) {
                fprintf(stderr, "sd-worker generate: --precision: unknown precision \"%s\" (fp32 or bf16)\n",
                        v);
                return 1;
            }
            break;
        case O_ORIGINAL_SIZE:
            bad = parse_pair(v, 'x', 1, &r->orig_width, &r->orig_height);
            break;
        case O_CROP_TOP_LEFT:
            bad = parse_pair(v, ',', 0, &r->crop_top, &r->crop_left);
            break;
        case O_TARGET_SIZE:
            bad = parse_pair(v, 'x', 1, &r->target_width, &r->target_height);
            break;
        case O_N:
            bad = parse_int(v, 1, SDE_MAX_IMAGES, &r->n);
            break;
        case O_LORA_DIR:
            if (sdw_gen_request_set_str(&r->lora_dir, v)) {
                fprintf(stderr, "sd-worker generate: out of memory\n");
                return 1;
            }
            break;
        }
        if (bad) {
            char hint[80];
            fprintf(stderr, "sd-worker generate: --%s: invalid value \"%s\"%s\n", generate_opts[idx].name, v,
                    value_hint(c, hint, sizeof hint));
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sd-worker generate: unexpected argument \"%s\" (see --help)\n", argv[optind]);
        return 1;
    }
    if (!lo->model_path || !*lo->model_path) {
        fprintf(stderr, "sd-worker generate: --model PATH is required\n");
        return 1;
    }
    if (!r->prompt) {
        fprintf(stderr, "sd-worker generate: --prompt TEXT is required\n");
        return 1;
    }
    if (!*output || !**output) {
        fprintf(stderr, "sd-worker generate: --output OUT.png is required\n");
        return 1;
    }
    if (r->decoder == SDW_DECODER_TAESD && (!lo->taesd_path || !*lo->taesd_path)) {
        fprintf(stderr, "sd-worker generate: --decoder taesd needs --taesd PATH (the TAESD .safetensors)\n");
        return 1;
    }
    return 0;
}

static int generate_run(sdw_gen_request *req, sde_load_opts *lo, const char *output, int have_w, int have_h,
                        const sde_gen_params *probe);

/* The command with the request it fills, which the caller frees whichever way this returns. */
static int generate(int argc, char **argv, sdw_gen_request *req)
{
    sde_load_opts lo = {.warn = engine_warning};
    const char *output = NULL;
    int have_w = 0, have_h = 0;
    int prc = parse_generate_args(argc, argv, req, &lo, &output, &have_w, &have_h);
    if (prc) return prc < 0 ? 0 : 1;
    /* check everything but the size before the (slow) load; the size may still come from the model */
    const char *field = NULL;
    char err[8192];
    sde_gen_params probe;
    sdw_gen_to_engine(req, &probe);
    probe.width = have_w ? req->width : 512;
    probe.height = have_h ? req->height : 512;
    if (req->mask && !req->init_image) {
        fprintf(stderr, "sd-worker generate: --mask: needs --init-image\n");
        return 1;
    }
    sdw_gen_images img;
    if (sdw_gen_images_decode(req, &probe, &img, &field, err, sizeof err)) {
        fprintf(stderr, "sd-worker generate: %s: %s\n", option_of(field), err);
        return 1;
    }
    if (sde_params_validate(&probe, &field, err, sizeof err)) {
        fprintf(stderr, "sd-worker generate: %s: %s\n", option_of(field), err);
        sdw_gen_images_free(&img);
        return 1;
    }
    int rc = generate_run(req, &lo, output, have_w, have_h, &probe);
    sdw_gen_images_free(&img);
    return rc;
}

/* The load, the generation and the output file, once the options checked out; probe holds the decoded
 * init image and mask. */
static int generate_run(sdw_gen_request *req, sde_load_opts *lo, const char *output, int have_w, int have_h,
                        const sde_gen_params *probe)
{
    char err[8192];
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
    if (!req->has_seed) {
        req->seed = random_seed();
        req->has_seed = 1;
        fprintf(stderr, "seed %llu\n", (unsigned long long)req->seed);
    }

    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    sde_engine *e;
    struct timespec l0, l1;
    /* the job's memory faulted in on a second core while the model loads (the size may be the model's) */
    lo->warm = 1;
    lo->warm_width = have_w ? req->width : 0;
    lo->warm_height = have_h ? req->height : 0;
    clock_gettime(CLOCK_MONOTONIC, &l0);
    if (sde_engine_load(lo, &e, err, sizeof err)) {
        fprintf(stderr, "sd-worker generate: %s\n", err);
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &l1);
    sde_model_info info;
    sde_engine_info(e, &info);
    if (!have_w) req->width = info.default_size;
    if (!have_h) req->height = info.default_size;
    fprintf(stderr, "model %s (%s, %s prediction, %.0fM parameters%s%s), loaded in %.2f s\n", info.model_name,
            info.arch, info.prediction, (double)info.n_params / 1e6, info.model_hash[0] ? ", hash " : "",
            info.model_hash, (double)(l1.tv_sec - l0.tv_sec) + (double)(l1.tv_nsec - l0.tv_nsec) * 1e-9);
    sde_gen_params p;
    sdw_gen_to_engine(req, &p);
    p.init_rgb = probe->init_rgb;
    p.init_w = probe->init_w;
    p.init_h = probe->init_h;
    p.strength = probe->strength;
    p.mask = probe->mask;
    p.mask_w = probe->mask_w;
    p.mask_h = probe->mask_h;
    p.mask_blur = probe->mask_blur;
    p.lora_dir = probe->lora_dir;
    p.progress = cli_progress;
    p.preview_every = g_preview_every;
    p.preview = g_preview_every ? cli_preview : NULL;
    p.should_cancel = cli_cancel;
    sde_result r;
    int rc = sde_generate(e, &p, &r, err, sizeof err);
    sde_engine_free(e);
    if (rc == SDE_OK && p.precision == SDE_PREC_BF16 && r.precision != SDE_PREC_BF16)
        fprintf(stderr,
                "sd-worker generate: warning: --precision bf16: this CPU lacks AVX512-BF16; the image "
                "was made in fp32\n");
    if (rc == SDE_CANCELLED) {
        fprintf(stderr, "sd-worker generate: interrupted\n");
        return 130;
    }
    if (rc != SDE_OK) {
        /* the only params check left to fail here is the size taken from the model */
        fprintf(stderr, "sd-worker generate: %s\n", err);
        return 1;
    }
    for (int i = 0; i < r.n_images; i++) {
        char path[4200];
        batch_output_path(output, i, path, sizeof path);
        if (write_file(path, r.images[i].png, r.images[i].png_len, err, sizeof err)) {
            fprintf(stderr, "sd-worker generate: --output: %s\n", err);
            sde_result_free(&r);
            return 1;
        }
        printf("%s\n", path);
    }
    if (r.profile) fputs(r.profile, stderr);
    fprintf(stderr, "%dx%d seed %llu%s: encode %.3f s, sample %.3f s, decode %.3f s, total %.3f s\n", r.width,
            r.height, (unsigned long long)r.seed, r.n_images > 1 ? " (and the next ones)" : "", r.t_encode,
            r.t_sample, r.t_decode, r.t_total);
    if (r.n_loras) fprintf(stderr, "LoRA: %d merged in %.3f s (included in encode)\n", r.n_loras, r.t_lora);
    if (g_preview_every) fprintf(stderr, "previews: %.4f s in all (included in sample)\n", r.t_preview);
    sde_result_free(&r);
    return 0;
}

int sdw_cmd_generate(int argc, char **argv)
{
    sdw_gen_request req;
    sdw_gen_request_init(&req);
    int rc = generate(argc, argv, &req);
    sdw_gen_request_free(&req);
    return rc;
}
