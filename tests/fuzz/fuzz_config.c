/* fuzz_config.c: libFuzzer target for the YAML configuration (config/config.c, config/yaml_tree.c): any
 * document gives a config or "file:line:col: message" errors; never a crash, a leak or a config left to free.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sdw_config cfg;
    char err[4096];
    err[0] = '\0';
    if (sdw_config_load_string((const char *)data, size, "fuzz.yaml", &cfg, err, sizeof err) == 0) {
        if (!cfg.model_path || cfg.n_devices < 1 || cfg.max_connections < 1)
            abort(); /* required and defaulted settings are always there */
        sdw_config_free(&cfg);
    } else if (strncmp(err, "fuzz.yaml", 9)) {
        abort(); /* every error names the file */
    }
    return 0;
}
