/* names.c: the engine's name <-> enum helpers for samplers and schedules, over the one table in
 * common/gen_names.h that the CLI, the HTTP API and the PNG parameters chunk share. */
#include "sd_engine.h"

const char *sde_sampler_name(sde_sampler s)
{
    return sdw_names_name(SDW_NAMES_SAMPLER, (int)s);
}

int sde_sampler_parse(const char *name)
{
    return sdw_names_parse(SDW_NAMES_SAMPLER, name);
}

const char *sde_schedule_name(sde_schedule s)
{
    return sdw_names_name(SDW_NAMES_SCHEDULE, (int)s);
}

int sde_schedule_parse(const char *name)
{
    return sdw_names_parse(SDW_NAMES_SCHEDULE, name);
}
