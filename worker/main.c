/* main.c: sd-worker-engine, the executable that holds the engine: the worker process the supervisor
 * fork+execs, and the one-shot engine commands that `sd-worker generate|tokenize|mkmodel` exec. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

/* The commands, by the name argv[1] gives. */
static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} commands[] = {
    {"generate", sdw_cmd_generate},
    {"tokenize", sdw_cmd_tokenize},
    {"mkmodel", sdw_cmd_mkmodel},
    {"worker", sdw_cmd_worker},
};

int main(int argc, char **argv)
{
    for (size_t i = 0; argc >= 2 && i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "usage: sd-worker-engine generate|tokenize|mkmodel|worker [OPTIONS]\n"
                    "(normally run through 'sd-worker COMMAND'; see sd-worker --help)\n");
    return 1;
}
