/* worker_loop.c: PLACEHOLDER until the serving-core owner lands the worker loop.
 * Replace this file entirely. */
#include <stdio.h>
#include "commands.h"

int sdw_cmd_worker(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "sd-worker worker: not built yet\n");
    return 2;
}
