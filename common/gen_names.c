/* gen_names.c: the sampler, schedule and prediction tables generated from the rows in gen_names.h, and the
 * lookups over them. No allocation, no dependencies. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "gen_names.h"

#define ROW_(id, name, display, aliases) {name, display, aliases},

static const sdw_name_row samplers[] = {SDW_SAMPLER_ROWS(ROW_)};
static const sdw_name_row schedules[] = {SDW_SCHEDULE_ROWS(ROW_)};
static const sdw_name_row predictions[] = {SDW_PREDICTION_ROWS(ROW_)};

_Static_assert(sizeof samplers / sizeof *samplers == SDW_SAMPLER__COUNT, "sampler rows");
_Static_assert(sizeof schedules / sizeof *schedules == SDW_SCHEDULE__COUNT, "schedule rows");
_Static_assert(sizeof predictions / sizeof *predictions == SDW_PREDICTION__COUNT, "prediction rows");

static const struct {
    const sdw_name_row *rows;
    int n;
    const char *noun;
} tables[SDW_NAMES__COUNT] = {
    {samplers, SDW_SAMPLER__COUNT, "sampler"},
    {schedules, SDW_SCHEDULE__COUNT, "schedule"},
    {predictions, SDW_PREDICTION__COUNT, "prediction"},
};

int sdw_names_count(sdw_names_kind kind)
{
    return (unsigned)kind < SDW_NAMES__COUNT ? tables[kind].n : 0;
}

const sdw_name_row *sdw_names_row(sdw_names_kind kind, int i)
{
    return i >= 0 && i < sdw_names_count(kind) ? &tables[kind].rows[i] : NULL;
}

/* 1 if name is one of the '|'-separated entries of list. */
static int in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncasecmp(p, name, n)) return 1;
        if (!bar) break;
        p = bar + 1;
    }
    return 0;
}

int sdw_names_parse(sdw_names_kind kind, const char *name)
{
    int n = sdw_names_count(kind);
    if (!name || !*name) return -1;
    for (int i = 0; i < n; i++)
        if (!strcmp(name, tables[kind].rows[i].name)) return i;
    for (int i = 0; i < n; i++) {
        const sdw_name_row *r = &tables[kind].rows[i];
        if (!strcasecmp(name, r->name) || !strcasecmp(name, r->display) || in_list(r->aliases, name))
            return i;
    }
    return -1;
}

const char *sdw_names_name(sdw_names_kind kind, int v)
{
    const sdw_name_row *r = sdw_names_row(kind, v);
    return r ? r->name : "?";
}

const char *sdw_names_display(sdw_names_kind kind, int v)
{
    const sdw_name_row *r = sdw_names_row(kind, v);
    return r ? r->display : "?";
}

char *sdw_names_list(sdw_names_kind kind, const char *sep, const char *last_sep, char *buf, size_t buflen)
{
    size_t off = 0;
    int n = sdw_names_count(kind);
    if (!buflen) return buf;
    buf[0] = '\0';
    for (int i = 0; i < n && off < buflen; i++) {
        const char *s = i == 0 ? "" : i == n - 1 && last_sep ? last_sep : sep;
        int w = snprintf(buf + off, buflen - off, "%s%s", s, tables[kind].rows[i].name);
        if (w < 0) break;
        off += (size_t)w;
    }
    return buf;
}

const char *sdw_names_kind_name(sdw_names_kind kind)
{
    return (unsigned)kind < SDW_NAMES__COUNT ? tables[kind].noun : "?";
}
