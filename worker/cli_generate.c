/* cli_generate.c: PLACEHOLDER until the owner lands the real command; keeps sd-worker-engine linking.
 * Replace this file entirely. */
#include <stdio.h>
#include "commands.h"

int sdw_cmd_generate(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "sd-worker generate: not built yet\n");
    return 1;
}
