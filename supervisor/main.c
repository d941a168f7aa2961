/* main.c: the sd-worker command line. serve and check-config run here (the supervisor side); the
 * engine commands (generate, tokenize, mkmodel) are exec'd from sd-worker-engine, so this binary
 * never loads OpenBLAS or a model. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"
#include "log.h"
#include "pool.h"
#include "server.h"

static void usage(FILE *f)
{
    fprintf(
        f, "usage: sd-worker COMMAND [OPTIONS]\n"
           "\n"
           "Stable Diffusion image-generation service.\n"
           "\n"
           "commands:\n"
           "  serve --config FILE         run the HTTP service (supervisor + one worker per device)\n"
           "  check-config --config FILE  validate a configuration file and exit\n"
           "  hash-key NAME               read an API key on stdin, print its keys-file line\n"
           "  generate ...                one-shot text-to-image to a PNG file\n"
           "  tokenize ...                print CLIP BPE token ids as JSON\n"
           "  mkmodel ...                 write a random-weight model (tiny, sd15/sd21/sdxl-random, a LoRA)\n"
           "  version                     print the version\n"
           "\n"
           "'sd-worker COMMAND --help' documents each command's options.\n");
}

static void config_usage(const char *cmd)
{
    printf("usage: sd-worker %s --config FILE\n\n", cmd);
    if (!strcmp(cmd, "serve"))
        printf("Starts the supervisor: the HTTP API on the configured listen address and one worker\n"
               "process per devices: entry. SIGTERM/SIGINT drain and stop it; a second signal forces it.\n");
    else
        printf("Reads and validates FILE; prints file:line:column: message for each problem found\n"
               "and exits 1, or prints 'ok' and exits 0.\n");
    printf("\noptions:\n  --config FILE   the YAML configuration (see /etc/sd-worker/sd-worker.yaml)\n");
}

static int config_arg(int argc, char **argv, const char *cmd, const char **path)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"config", required_argument, NULL, 'c'},
        {NULL, 0, NULL, 0},
    };
    *path = NULL;
    opterr = 0;
    optind = 0;
    int c;
    /* argv[1] is the command: getopt_long starts at argv[1] of what it is given */
    while ((c = getopt_long(argc - 1, argv + 1, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            config_usage(cmd);
            exit(0);
        case 'c':
            *path = optarg;
            break;
        default: /* unknown, or --config without its FILE */
            fprintf(stderr, "sd-worker %s: unknown argument '%s' (try --help)\n", cmd, argv[optind]);
            return -1;
        }
    }
    if (optind < argc - 1) {
        fprintf(stderr, "sd-worker %s: unknown argument '%s' (try --help)\n", cmd, argv[optind + 1]);
        return -1;
    }
    if (!*path) {
        fprintf(stderr, "sd-worker %s: --config FILE is required\n", cmd);
        return -1;
    }
    return 0;
}

static int exec_engine(int argc, char **argv)
{
    char path[4096], err[512];
    if (sdw_engine_path(path, sizeof path, err, sizeof err) != 0) {
        fprintf(stderr, "sd-worker: %s\n", err);
        return 1;
    }
    argv[0] = path;
    execv(path, argv);
    fprintf(stderr, "sd-worker: cannot run %s: ", path);
    perror(NULL);
    (void)argc;
    return 1;
}

/* The key comes on stdin so it never shows in ps or a shell history. */
static int hash_key(int argc, char **argv)
{
    if (argc != 3 || !strcmp(argv[2], "--help") || !strcmp(argv[2], "-h")) {
        fprintf(argc == 3 ? stdout : stderr,
                "usage: sd-worker hash-key NAME < keyfile\n\nReads one API key from standard input and "
                "prints the "
                "line for auth.api_keys_file:\nNAME and the key's SHA-256. Clients send the key as "
                "Authorization: Bearer KEY.\n");
        return argc == 3 ? 0 : 1;
    }
    char key[4096];
    size_t n = fread(key, 1, sizeof key - 1, stdin);
    char line[SDW_AUTH_NAME_MAX + 80], err[256];
    int rc = sdw_auth_hash_line(argv[2], key, n, line, sizeof line, err, sizeof err);
    memset(key, 0, sizeof key);
    if (rc != 0) {
        fprintf(stderr, "sd-worker hash-key: %s\n", err);
        return 1;
    }
    fputs(line, stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 1 : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("sd-worker %s\n", SDW_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "hash-key")) return hash_key(argc, argv);
    if (!strcmp(cmd, "generate") || !strcmp(cmd, "tokenize") || !strcmp(cmd, "mkmodel"))
        return exec_engine(argc, argv);
    if (!strcmp(cmd, "serve") || !strcmp(cmd, "check-config")) {
        const char *path;
        if (config_arg(argc, argv, cmd, &path) != 0) return 1;
        sdw_config cfg;
        char err[4096];
        if (sdw_config_load(path, &cfg, err, sizeof err) != 0) {
            fprintf(stderr, "%s\n", err);
            return !strcmp(cmd, "serve") ? 2 : 1;
        }
        if (!strcmp(cmd, "check-config")) {
            /* what serve would refuse for this build: kind cuda without a GPU backend */
            int unsupported = 0;
            for (int i = 0; i < cfg.n_devices; i++) {
                char derr[256];
                if (sdw_pool_device_supported(&cfg.devices[i], derr, sizeof derr) == 0) continue;
                fprintf(stderr, "%s: devices[%d]: %s\n", path, i, derr);
                unsupported = 1;
            }
            if (unsupported) {
                sdw_config_free(&cfg);
                return 1;
            }
            int any = 0;
            for (int i = 0; i < cfg.n_cors_origins; i++)
                any |= !strcmp(cfg.cors_origins[i], "*");
            if (any && !cfg.api_keys_file)
                fprintf(
                    stderr,
                    "%s: warning: cors.allow_origins has \"*\" and auth.api_keys_file is not set: any web "
                    "page a user visits can use this service\n",
                    path);
            if (cfg.api_keys_file) {
                char kerr[512];
                if (sdw_auth_init(cfg.api_keys_file, 0, kerr, sizeof kerr) != 0) {
                    fprintf(stderr, "%s\n", kerr);
                    sdw_config_free(&cfg);
                    return 1;
                }
                sdw_auth_free();
            }
            printf("%s: ok\n", path);
            sdw_config_free(&cfg);
            return 0;
        }
        char engine[4096];
        if (sdw_engine_path(engine, sizeof engine, err, sizeof err) != 0) {
            fprintf(stderr, "sd-worker serve: %s\n", err);
            sdw_config_free(&cfg);
            return 2;
        }
        sdw_log_init(cfg.log_level, cfg.log_json, "supervisor");
        int rc = sdw_server_run(&cfg, engine);
        sdw_config_free(&cfg);
        return rc;
    }
    fprintf(stderr, "sd-worker: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 1;
}
