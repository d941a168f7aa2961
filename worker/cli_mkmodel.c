/* cli_mkmodel.c: `sd-worker mkmodel --preset tiny [--seed N] --output PATH`, writes a tiny random-weight
 * model (SD 1.x architecture, seconds to generate with) for tests, demos and smoke checks. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "mkmodel.h"

static void mkmodel_usage(FILE *f)
{
    fprintf(f, "usage: sd-worker mkmodel --preset tiny [--seed N] --output PATH\n"
               "\n"
               "Writes a random-weight model with the Stable Diffusion 1.x architecture, shrunk (UNet 32 channels,\n"
               "64-wide text encoder with a byte-level tokenizer built in), as one .safetensors file. It makes\n"
               "noise-like 64x64 images in well under a second: for tests and demos, not for real images.\n"
               "\n"
               "  --preset tiny    the only preset\n"
               "  --seed N         weight seed (default 1); the same seed writes a byte-identical file\n"
               "  --output PATH    file to write (written to PATH.part, then renamed)\n"
               "  --help           this text\n"
               "\n"
               "Exit status: 0 written, 1 bad options or the file could not be written.\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

int sdw_cmd_mkmodel(int argc, char **argv)
{
    const char *preset = NULL, *output = NULL;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            mkmodel_usage(stdout);
            return 0;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--preset") || !strcmp(a, "--seed") || !strcmp(a, "--output")) {
            if (!v) {
                fprintf(stderr, "sd-worker mkmodel: %s needs a value\n", a);
                return 1;
            }
            i++;
            if (!strcmp(a, "--preset")) {
                preset = v;
            } else if (!strcmp(a, "--output")) {
                output = v;
            } else if (parse_u64(v, &seed)) {
                fprintf(stderr, "sd-worker mkmodel: --seed: \"%s\" is not a non-negative integer\n", v);
                return 1;
            }
        } else {
            fprintf(stderr, "sd-worker mkmodel: unknown option \"%s\" (see --help)\n", a);
            return 1;
        }
    }
    if (!preset) {
        fprintf(stderr, "sd-worker mkmodel: --preset is required (only \"tiny\" exists)\n");
        return 1;
    }
    if (strcmp(preset, "tiny")) {
        fprintf(stderr, "sd-worker mkmodel: --preset: unknown preset \"%s\" (only \"tiny\" exists)\n", preset);
        return 1;
    }
    if (!output || !*output) {
        fprintf(stderr, "sd-worker mkmodel: --output PATH is required\n");
        return 1;
    }
    char err[1024];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (sde_mkmodel_tiny(output, seed, err, sizeof err)) {
        fprintf(stderr, "sd-worker mkmodel: %s\n", err);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%s\n", output);
    fprintf(stderr, "wrote tiny model (seed %llu) in %.2f s\n", (unsigned long long)seed,
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
    return 0;
}
