/* cli_tokenize.c: `sd-worker tokenize [--tokenizer PATH] TEXT`, which prints TEXT's CLIP BPE ids as a JSON
 * array on one line (no start/end tokens, no padding, no truncation), for checking prompts and tokenizer
 * files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <getopt.h>

#include "commands.h"
#include "tokenizer.h"

static void tokenize_usage(FILE *f)
{
    fprintf(
        f,
        "usage: sd-worker tokenize [--tokenizer PATH] TEXT\n"
        "Prints the CLIP BPE token ids of TEXT as a JSON array on one line, without the start/end tokens,\n"
        "padding or the 75-token truncation the model applies.\n"
        "  --tokenizer PATH  bpe_simple_vocab_16e6.txt(.gz) (the CLIP merges file), a vocab.json with\n"
        "                    merges.txt beside it, or a folder holding vocab.json and merges.txt\n"
        "                    (a diffusers model's tokenizer/ folder). Default: CLIP's vocabulary, built in.\n"
        "  -h, --help        this text\n"
        "Exit status: 0 printed, 1 bad arguments or unreadable tokenizer.\n");
}

int sdw_cmd_tokenize(int argc, char **argv)
{
    const char *tok_path = NULL, *text = NULL;
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"tokenizer", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    optind = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            tokenize_usage(stdout);
            return 0;
        case 't':
            tok_path = optarg;
            break;
        case ':':
            fprintf(stderr, "sd-worker tokenize: --tokenizer needs a PATH\n");
            return 1;
        default:
            if (optopt > 0 && optopt < 256)
                fprintf(stderr, "sd-worker tokenize: unknown option -%c (see --help)\n", optopt);
            else
                fprintf(stderr, "sd-worker tokenize: unknown option %s (see --help)\n", argv[optind - 1]);
            return 1;
        }
    }
    /* getopt_long moved the operands to the end; a prompt that starts with '-' goes after "--" */
    if (argc - optind > 1) {
        fprintf(stderr, "sd-worker tokenize: one TEXT argument expected; quote the prompt\n");
        return 1;
    }
    if (optind < argc) text = argv[optind];
    if (tok_path && !*tok_path) {
        fprintf(stderr, "sd-worker tokenize: --tokenizer needs a PATH\n");
        return 1;
    }
    if (!text) {
        fprintf(stderr, "sd-worker tokenize: no TEXT given (see --help)\n");
        return 1;
    }
    char err[512];
    sde_tokenizer *t;
    if (tok_path ? sde_tok_load(tok_path, &t, err, sizeof err) : sde_tok_load_builtin(&t, err, sizeof err)) {
        fprintf(stderr, "sd-worker tokenize: %s\n", err);
        return 1;
    }
    int n = sde_tok_encode(t, text, NULL, 0);
    int32_t *ids = n > 0 ? malloc((size_t)n * sizeof *ids) : NULL;
    if (n < 0 || (n > 0 && (!ids || sde_tok_encode(t, text, ids, n) != n))) {
        fprintf(stderr, "sd-worker tokenize: out of memory encoding %zu bytes of text\n", strlen(text));
        free(ids);
        sde_tok_free(t);
        return 1;
    }
    putchar('[');
    for (int i = 0; i < n; i++)
        printf(i ? ",%d" : "%d", (int)ids[i]);
    putchar(']');
    putchar('\n');
    free(ids);
    sde_tok_free(t);
    return fflush(stdout) == 0 ? 0 : 1;
}
