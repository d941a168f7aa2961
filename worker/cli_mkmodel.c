/* cli_mkmodel.c: `sd-worker mkmodel --preset NAME [--seed N] [--dtype f16|f32] --output PATH`: writes a tiny
 * random-weight model for tests and demos, or a full-size random SD 1.5 / 2.1 / SDXL checkpoint or LoRA. */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "mkmodel.h"
#include "mkmodel_random.h"

static void mkmodel_usage(FILE *f)
{
    fprintf(
        f,
        "usage: sd-worker mkmodel --preset NAME [--seed N] [--dtype f16|f32] [--threads N] --output PATH\n"
        "       sd-worker mkmodel --preset NAME [--dtype f16|f32] --list\n"
        "\n"
        "Writes a random-weight model as one .safetensors file (to PATH.part, then renamed). The same\n"
        "preset, seed and dtype always give a byte-identical file.\n"
        "\n"
        "  --preset tiny              the Stable Diffusion 1.x architecture shrunk (UNet 32 channels,\n"
        "                             64-wide text encoder with a byte-level tokenizer built in), F32:\n"
        "                             noise-like 64x64 images in well under a second, for tests and demos\n"
        "  --preset sd15-random       full-size SD 1.5 single file (1143 tensors, 2.1 GB in f16)\n"
        "  --preset sd21-random       full-size SD 2.1 768-v single file (1240 tensors, 2.6 GB in f16;\n"
        "                             v-prediction, which the file does not record)\n"
        "  --preset sdxl-random       full-size SDXL base 1.0 single file (2515 tensors, 6.9 GB in f16)\n"
        "  --preset lora-sd15-random  a rank-4 kohya-format LoRA for the SD 1.5 file (792 tensors, 4.8 MB)\n"
        "  --preset taesd-random      TAESD, the tiny autoencoder, in diffusers' AutoencoderTiny layout as\n"
        "                             --taesd / model.preview_decoder read it (134 tensors, 9.8 MB in f32)\n"
        "  --preset lora-sdxl-random  a rank-4 kohya-format LoRA for the SDXL file (lora_unet_ LDM blocks,\n"
        "                             lora_te1_, lora_te2_; 2958 tensors, 29 MB)\n"
        "  --preset sd15-inpaint-random  sd15-random with a 9-channel conv_in, the sd-v1-5-inpainting\n"
        "                             layout (1143 tensors, 2.1 GB in f16; the other tensors are equal)\n"
        "  --seed N                   weight seed (default 1)\n"
        "  --dtype f16|f32            weight type of the random presets (default f16; tiny is always f32)\n"
        "  --threads N                compute on N threads (default: one per CPU); the file is the same\n"
        "  --output PATH              file to write\n"
        "  --list                     print \"name dtype [shape]\" for each tensor instead of writing\n"
        "  --help                     this text\n"
        "\n"
        "The full-size presets are random: their images are noise. They have the real tensor names and\n"
        "shapes, for tests against other implementations (tests/data/README.md) and for benchmarks.\n"
        "\n"
        "Exit status: 0 written, 1 bad options or the file could not be written.\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

static void print_tensor(void *ud, const char *name, const char *dtype, int ndim, const int64_t *shape)
{
    (void)ud;
    printf("%s %s [", name, dtype);
    for (int d = 0; d < ndim; d++)
        printf(d ? ", %lld" : "%lld", (long long)shape[d]);
    printf("]\n");
}

static double mono_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int sdw_cmd_mkmodel(int argc, char **argv)
{
    static const struct option opts[] = {
        {"preset", required_argument, NULL, 'p'}, {"seed", required_argument, NULL, 's'},
        {"dtype", required_argument, NULL, 'd'},  {"threads", required_argument, NULL, 't'},
        {"output", required_argument, NULL, 'o'}, {"list", no_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *preset = NULL, *output = NULL, *dtype = NULL;
    uint64_t seed = 1, threads = 0;
    int list = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            preset = optarg;
            break;
        case 'o':
            output = optarg;
            break;
        case 'd':
            dtype = optarg;
            break;
        case 'l':
            list = 1;
            break;
        case 'h':
            mkmodel_usage(stdout);
            return 0;
        case 's':
            if (parse_u64(optarg, &seed)) {
                fprintf(stderr, "sd-worker mkmodel: --seed: \"%s\" is not a non-negative integer\n", optarg);
                return 1;
            }
            break;
        case 't':
            if (parse_u64(optarg, &threads) || threads < 1 || threads > 64) {
                fprintf(stderr, "sd-worker mkmodel: --threads: \"%s\" is not a number from 1 to 64\n",
                        optarg);
                return 1;
            }
            break;
        case ':':
            fprintf(stderr, "sd-worker mkmodel: %s needs a value\n", argv[optind - 1]);
            return 1;
        default:
            fprintf(stderr, "sd-worker mkmodel: unknown option \"%s\" (see --help)\n", argv[optind - 1]);
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sd-worker mkmodel: unexpected argument \"%s\" (see --help)\n", argv[optind]);
        return 1;
    }
    if (!preset) {
        fprintf(stderr, "sd-worker mkmodel: --preset is required (see --help)\n");
        return 1;
    }
    int tiny = !strcmp(preset, "tiny");
    sde_rand_preset rp = SDE_RAND_SD15;
    if (!tiny && sde_rand_preset_parse(preset, &rp)) {
        fprintf(stderr,
                "sd-worker mkmodel: --preset: unknown preset \"%s\" (tiny, sd15-random, sd21-random, "
                "sdxl-random, "
                "lora-sd15-random, sd15-inpaint-random, lora-sdxl-random, taesd-random)\n",
                preset);
        return 1;
    }
    if (dtype && strcmp(dtype, "f16") && strcmp(dtype, "f32")) {
        fprintf(stderr, "sd-worker mkmodel: --dtype: \"%s\" is not f16 or f32\n", dtype);
        return 1;
    }
    if (tiny && dtype && strcmp(dtype, "f32")) {
        fprintf(stderr, "sd-worker mkmodel: the tiny preset is always f32\n");
        return 1;
    }
    if (tiny && list) {
        fprintf(stderr, "sd-worker mkmodel: --list is for the random presets\n");
        return 1;
    }
    int f32 = dtype && !strcmp(dtype, "f32");
    if (list) return sde_mkmodel_random_list(rp, f32, print_tensor, NULL) < 0 ? 1 : 0;
    if (!output || !*output) {
        fprintf(stderr, "sd-worker mkmodel: --output PATH is required\n");
        return 1;
    }
    char err[1024];
    uint64_t size = 0;
    double t0 = mono_s();
    int rc = tiny ? sde_mkmodel_tiny(output, seed, err, sizeof err)
                  : sde_mkmodel_random(output, rp, seed, f32, (int)threads, &size, err, sizeof err);
    if (rc) {
        fprintf(stderr, "sd-worker mkmodel: %s\n", err);
        return 1;
    }
    printf("%s\n", output);
    if (tiny)
        fprintf(stderr, "wrote tiny model (seed %llu) in %.2f s\n", (unsigned long long)seed, mono_s() - t0);
    else
        fprintf(stderr, "wrote %s (seed %llu, %s, %llu bytes) in %.2f s\n", preset, (unsigned long long)seed,
                f32 ? "f32" : "f16", (unsigned long long)size, mono_s() - t0);
    return 0;
}
