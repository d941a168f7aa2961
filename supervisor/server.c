/* server.c: PLACEHOLDER until the HTTP owner lands the server. Replace this file entirely. */
#include <stdio.h>
#include "server.h"

int sdw_server_run(const sdw_config *cfg, const char *engine_path)
{
    (void)cfg;
    (void)engine_path;
    fprintf(stderr, "sd-worker serve: not built yet\n");
    return 1;
}
