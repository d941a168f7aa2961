/* names.c: the sampler and schedule names the CLI, the HTTP API and the PNG parameters chunk use,
 * mapped to and from the engine's enums. */
#include <string.h>

#include "sd_engine.h"

static const char *const sampler_names[] = {"euler", "euler_a", "ddim", "dpmpp_2m", "lcm"};
static const char *const schedule_names[] = {"discrete", "karras"};

const char *sde_sampler_name(sde_sampler s)
{
    return (unsigned)s < sizeof sampler_names / sizeof *sampler_names ? sampler_names[s] : "?";
}

int sde_sampler_parse(const char *name)
{
    for (unsigned i = 0; name && i < sizeof sampler_names / sizeof *sampler_names; i++)
        if (!strcmp(name, sampler_names[i]))
            return (int)i;
    return -1;
}

const char *sde_schedule_name(sde_schedule s)
{
    return (unsigned)s < sizeof schedule_names / sizeof *schedule_names ? schedule_names[s] : "?";
}

int sde_schedule_parse(const char *name)
{
    for (unsigned i = 0; name && i < sizeof schedule_names / sizeof *schedule_names; i++)
        if (!strcmp(name, schedule_names[i]))
            return (int)i;
    return -1;
}
