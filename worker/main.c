/* main.c: sd-worker-engine, the executable that holds the engine: the worker process the supervisor
 * fork+execs, and the one-shot engine commands that `sd-worker generate|tokenize|mkmodel` exec. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

int main(int argc, char **argv)
{
    if (argc >= 2) {
        const char *cmd = argv[1];
        if (!strcmp(cmd, "generate"))
            return sdw_cmd_generate(argc - 1, argv + 1);
        if (!strcmp(cmd, "tokenize"))
            return sdw_cmd_tokenize(argc - 1, argv + 1);
        if (!strcmp(cmd, "mkmodel"))
            return sdw_cmd_mkmodel(argc - 1, argv + 1);
        if (!strcmp(cmd, "worker"))
            return sdw_cmd_worker(argc - 1, argv + 1);
    }
    fprintf(stderr, "usage: sd-worker-engine generate|tokenize|mkmodel|worker [OPTIONS]\n"
                    "(normally run through 'sd-worker COMMAND'; see sd-worker --help)\n");
    return 1;
}
