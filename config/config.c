/* config.c: PLACEHOLDER until the config owner lands the YAML loader. Replace this file entirely. */
#include <stdio.h>
#include <string.h>
#include "config.h"

void sdw_config_defaults(sdw_config *cfg) { memset(cfg, 0, sizeof *cfg); }
int sdw_config_load(const char *path, sdw_config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(err, errlen, "%s: config loader not built yet", path);
    return -1;
}
int sdw_config_load_string(const char *yaml, size_t len, const char *file, sdw_config *cfg, char *err, size_t errlen)
{
    (void)yaml;
    (void)len;
    return sdw_config_load(file, cfg, err, errlen);
}
void sdw_config_free(sdw_config *cfg) { (void)cfg; }
