/* config.c: the configuration schema: sections, keys, types, ranges and defaults, checked over the node tree
 * of yaml_tree.c, which collects every problem as "file:line:column: message". */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "gen_request.h"
#include "log.h"
#include "yaml_tree.h"

/* A config file is a few KiB; refusing big inputs keeps a wrong --config (a model!) from being slurped. */
#define CFG_MAX_BYTES (1 << 20)
/* CPU numbers we accept in a cpus: list (glibc's CPU_SETSIZE). */
#define CFG_MAX_CPU 1024

/* ---- value checks ---------------------------------------------------------------------------------- */

/* host:port with host an IPv4 address, a DNS name, or a bracketed IPv6 address. */
static int parse_listen(sdw_yt_ctx *c, const sdw_yt_node *v, sdw_config *cfg)
{
    const char *s;
    char sb[80];
    if (sdw_yt_get_str(c, v, "listen", &s) != 0) return -1;
    const char *colon = strrchr(s, ':');
    char host[256];
    int ok = colon && colon > s && colon[1];
    if (ok && s[0] == '[') {
        ok = colon[-1] == ']' && (size_t)(colon - s - 2) < sizeof host && colon - s > 2;
        if (ok) {
            memcpy(host, s + 1, (size_t)(colon - s - 2));
            host[colon - s - 2] = 0;
            unsigned char a6[16];
            ok = inet_pton(AF_INET6, host, a6) == 1;
        }
    } else if (ok) {
        ok = (size_t)(colon - s) < sizeof host && (size_t)(colon - s) <= 253;
        if (ok) {
            memcpy(host, s, (size_t)(colon - s));
            host[colon - s] = 0;
            for (const char *h = host; *h && ok; h++)
                ok = (*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') || (*h >= '0' && *h <= '9') ||
                     *h == '.' || *h == '-';
        }
    }
    if (!ok) {
        sdw_yt_error(
            c, SDW_YT_AT(v),
            "listen: expected host:port (e.g. 127.0.0.1:8080, 0.0.0.0:8080 or \"[::1]:8080\"), got %s",
            sdw_yt_show(v, sb, sizeof sb));
        return -1;
    }
    const char *p = colon + 1;
    size_t np = strlen(p);
    int digits = np > 0 && np <= 5;
    for (size_t i = 0; i < np && digits; i++)
        digits = p[i] >= '0' && p[i] <= '9';
    long port = digits ? strtol(p, NULL, 10) : -1;
    if (port < 0 || port > 65535) {
        sdw_yt_error(c, SDW_YT_AT(v), "listen: port must be a number from 0 to 65535 (got '%s')", p);
        return -1;
    }
    if (sdw_yt_set_str(c, &cfg->listen_host, host) != 0) return -1;
    cfg->listen_port = (int)port;
    return 0;
}

static int node_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 32) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

/* The default node id: the host name with every other character turned into '-'; a long one keeps its
 * first 23 characters plus a hash of the whole, so two long FQDNs in one fleet still differ. */
static void default_node_id(char out[33])
{
    char h[256] = "";
    if (gethostname(h, sizeof h - 1) != 0 || !h[0]) snprintf(h, sizeof h, "node");
    h[sizeof h - 1] = 0;
    size_t n = strlen(h);
    for (size_t i = 0; i < n; i++)
        if (!((h[i] >= 'a' && h[i] <= 'z') || (h[i] >= 'A' && h[i] <= 'Z') || (h[i] >= '0' && h[i] <= '9') ||
              h[i] == '_' || h[i] == '-'))
            h[i] = '-';
    if (n <= 32) {
        memcpy(out, h, n + 1);
        return;
    }
    uint32_t fnv = 2166136261u;
    for (size_t i = 0; i < n; i++)
        fnv = (fnv ^ (unsigned char)h[i]) * 16777619u;
    snprintf(out, 33, "%.23s-%08x", h, fnv);
}

/* Parses a cpus: list ("0-3,5") into a canonical, sorted, merged form ("0-3,5"); -1 with a reason. */
static int parse_cpus(const char *s, char *out, size_t outlen, const char **why)
{
    unsigned char bits[CFG_MAX_CPU];
    memset(bits, 0, sizeof bits);
    const char *p = s;
    int any = 0;
    while (*p) {
        char *end;
        if (*p < '0' || *p > '9') {
            *why = "expected CPU numbers and ranges like \"0-3,5\"";
            return -1;
        }
        long a = strtol(p, &end, 10), b = a;
        p = end;
        if (*p == '-') {
            p++;
            if (*p < '0' || *p > '9') {
                *why = "expected CPU numbers and ranges like \"0-3,5\"";
                return -1;
            }
            b = strtol(p, &end, 10);
            p = end;
        }
        if (a >= CFG_MAX_CPU || b >= CFG_MAX_CPU) {
            *why = "CPU numbers must be below 1024";
            return -1;
        }
        if (a > b) {
            *why = "a range's first CPU is greater than its last";
            return -1;
        }
        for (long i = a; i <= b; i++)
            bits[i] = 1;
        any = 1;
        if (*p == ',') {
            p++;
            if (!*p) {
                *why = "trailing comma";
                return -1;
            }
        } else if (*p) {
            *why = "expected CPU numbers and ranges like \"0-3,5\"";
            return -1;
        }
    }
    if (!any) {
        *why = "empty CPU list";
        return -1;
    }
    size_t o = 0;
    for (int i = 0; i < CFG_MAX_CPU; i++) {
        if (!bits[i]) continue;
        int j = i;
        while (j + 1 < CFG_MAX_CPU && bits[j + 1])
            j++;
        int w = j == i ? snprintf(out + o, outlen > o ? outlen - o : 0, "%s%d", o ? "," : "", i)
                       : snprintf(out + o, outlen > o ? outlen - o : 0, "%s%d-%d", o ? "," : "", i, j);
        if (w < 0 || o + (size_t)w >= outlen) {
            *why = "too long for a device name; at most 27 characters once merged into ranges";
            return -1;
        }
        o += (size_t)w;
        i = j;
    }
    return 0;
}

/* Relative paths in the config are relative to the config file's directory, made absolute so the
 * service may change directory. */
static int resolve_path(sdw_yt_ctx *c, const sdw_yt_node *v, const char *path, char **dst, const char *s)
{
    if (!s[0] || s[0] == '/') return sdw_yt_set_str(c, dst, s);
    char cwd[PATH_MAX];
    const char *slash = strrchr(c->file, '/');
    size_t dirlen = slash ? (size_t)(slash - c->file) : 0;
    int abs_dir = c->file[0] == '/';
    if (!abs_dir && !getcwd(cwd, sizeof cwd)) {
        sdw_yt_error(c, SDW_YT_AT(v), "%s: cannot resolve relative path '%s': %s", path, s, strerror(errno));
        return -1;
    }
    size_t len = (abs_dir ? 0 : strlen(cwd) + 1) + dirlen + 1 + strlen(s) + 1;
    char *r = malloc(len);
    if (!r) {
        sdw_yt_error(c, 0, 0, "out of memory");
        return -1;
    }
    if (abs_dir)
        snprintf(r, len, "%.*s/%s", (int)dirlen, c->file, s);
    else if (dirlen)
        snprintf(r, len, "%s/%.*s/%s", cwd, (int)dirlen, c->file, s);
    else
        snprintf(r, len, "%s/%s", cwd, s);
    free(*dst);
    *dst = r;
    return 0;
}

/* ---- sections -------------------------------------------------------------------------------------- */

static void sec_model(sdw_yt_ctx *c, const sdw_yt_node *v, sdw_config *cfg, int *bad)
{
    static const char *const known[] = {"path",      "tokenizer", "prediction", "lora_dir", "preview_decoder",
                                        "precision", NULL};
    static const char *const preds[] = {"auto", "eps", "v", NULL};
    /* in SDW_PRECISION_* order */
    static const char *const precs[] = {"fp32", "bf16", NULL};
    const sdw_yt_node *k[6], *val[6];
    int w = sdw_yt_want_map(c, v, "model");
    if (w < 0) {
        *bad = 1;
        return;
    }
    if (w == 0) return;
    sdw_yt_walk_map(c, v, "model", known, k, val);
    const char *s;
    if (!sdw_yt_is_null(val[0]) && sdw_yt_get_str(c, val[0], "model.path", &s) == 0) {
        if (!s[0]) {
            sdw_yt_error(c, SDW_YT_AT(val[0]), "model.path: must not be empty");
            *bad = 1;
        } else {
            resolve_path(c, val[0], "model.path", &cfg->model_path, s);
        }
    } else if (val[0] && !sdw_yt_is_null(val[0])) {
        *bad = 1; /* reported; don't also call it missing */
    }
    if (!sdw_yt_is_null(val[1]) && sdw_yt_get_str(c, val[1], "model.tokenizer", &s) == 0)
        resolve_path(c, val[1], "model.tokenizer", &cfg->tokenizer_path, s);
    int idx;
    if (!sdw_yt_is_null(val[2]) && sdw_yt_get_enum(c, val[2], "model.prediction", preds, &idx) == 0)
        sdw_yt_set_str(c, &cfg->prediction, preds[idx]);
    if (!sdw_yt_is_null(val[3]) && sdw_yt_get_str(c, val[3], "model.lora_dir", &s) == 0)
        resolve_path(c, val[3], "model.lora_dir", &cfg->lora_dir, s);
    if (!sdw_yt_is_null(val[4]) && sdw_yt_get_str(c, val[4], "model.preview_decoder", &s) == 0 && s[0] &&
        resolve_path(c, val[4], "model.preview_decoder", &cfg->preview_decoder, s) == 0) {
        /* a missing file is found here, not by every worker failing to start */
        struct stat st;
        const char *why = stat(cfg->preview_decoder, &st) != 0 ? strerror(errno)
                          : !S_ISREG(st.st_mode)               ? "not a regular file"
                                                               : NULL;
        if (why) {
            sdw_yt_error(c, SDW_YT_AT(val[4]), "model.preview_decoder: %s: %s", cfg->preview_decoder, why);
            *bad = 1;
        }
    }
    if (!sdw_yt_is_null(val[5]) && sdw_yt_get_enum(c, val[5], "model.precision", precs, &idx) == 0)
        cfg->precision = idx;
}

_Static_assert(SDW_PRECISION_FP32 == 0 && SDW_PRECISION_BF16 == 1,
               "model.precision's list follows the values");

/* Longest canonical cpus: list that still fits the device name "cpu:<cpus>". */
#define CPUS_NAME_MAX (sizeof(((sdw_device_config *)0)->name) - sizeof "cpu:")

/* One devices: entry into d; name is filled here and checked for uniqueness by the caller. */
static int parse_device(sdw_yt_ctx *c, const sdw_yt_node *v, int i, sdw_device_config *d)
{
    static const char *const known[] = {"kind", "cpus", "threads", "gpu", NULL};
    static const char *const kinds[] = {"cpu", "cuda", NULL};
    char where[32], path[48], sb[80];
    snprintf(where, sizeof where, "devices[%d]", i);
    memset(d, 0, sizeof *d);
    if (v->type != SDW_YT_MAP) {
        sdw_yt_error(c, SDW_YT_AT(v), "%s: expected a mapping like { kind: cpu, cpus: \"0-1\" }, got %s",
                     where, sdw_yt_show(v, sb, sizeof sb));
        return -1;
    }
    const sdw_yt_node *k[4], *val[4];
    int before = c->nerr;
    sdw_yt_walk_map(c, v, where, known, k, val);
    if (sdw_yt_is_null(val[0])) {
        sdw_yt_error(c, SDW_YT_AT(v), "%s: missing key 'kind' (cpu or cuda)", where);
        return -1;
    }
    int kind;
    snprintf(path, sizeof path, "%s.kind", where);
    if (sdw_yt_get_enum(c, val[0], path, kinds, &kind) != 0) return -1;
    d->kind = kind ? SDW_DEV_CUDA : SDW_DEV_CPU;
    const char *s;
    if (d->kind == SDW_DEV_CPU && val[3])
        sdw_yt_error(c, SDW_YT_AT(k[3]), "%s.gpu: only applies to kind cuda", where);
    /* cpus and threads apply to both kinds: a cuda worker's host side may be pinned too */
    snprintf(path, sizeof path, "%s.cpus", where);
    if (!sdw_yt_is_null(val[1]) && sdw_yt_get_str(c, val[1], path, &s) == 0) {
        const char *why;
        if (s[0] && parse_cpus(s, d->cpus, CPUS_NAME_MAX + 1, &why) != 0)
            sdw_yt_error(c, SDW_YT_AT(val[1]), "%s: invalid CPU list '%s': %s", path, s, why);
    }
    snprintf(path, sizeof path, "%s.threads", where);
    if (!sdw_yt_is_null(val[2])) sdw_yt_get_int32(c, val[2], path, 0, 1024, &d->threads);
    if (d->kind == SDW_DEV_CPU) {
        snprintf(d->name, sizeof d->name, "cpu:%.27s",
                 d->cpus[0] ? d->cpus : "all"); /* parse_cpus kept it <= 27 */
    } else {
        snprintf(path, sizeof path, "%s.gpu", where);
        if (!sdw_yt_is_null(val[3])) sdw_yt_get_int32(c, val[3], path, 0, 1023, &d->gpu);
        snprintf(d->name, sizeof d->name, "cuda:%d", d->gpu); /* sec_devices numbers a GPU's second worker */
    }
    return c->nerr == before ? 0 : -1;
}

static void sec_devices(sdw_yt_ctx *c, const sdw_yt_node *v, sdw_config *cfg)
{
    char sb[80];
    if (sdw_yt_is_null(v)) {
        sdw_yt_error(c, SDW_YT_AT(v), "devices: must list at least one device (e.g. - { kind: cpu })");
        return;
    }
    if (v->type != SDW_YT_SEQ) {
        sdw_yt_error(c, SDW_YT_AT(v), "devices: expected a list of devices, got %s",
                     sdw_yt_show(v, sb, sizeof sb));
        return;
    }
    if (v->n == 0) {
        sdw_yt_error(c, SDW_YT_AT(v), "devices: must list at least one device (e.g. - { kind: cpu })");
        return;
    }
    sdw_device_config *d = calloc((size_t)v->n, sizeof *d);
    if (!d) {
        sdw_yt_error(c, 0, 0, "out of memory");
        return;
    }
    for (int i = 0; i < v->n; i++) {
        if (parse_device(c, v->kid[i], i, &d[i]) != 0) continue;
        if (d[i].kind == SDW_DEV_CUDA) {
            /* several workers on one GPU, when asked for: "cuda:0", then "cuda:0#2", "cuda:0#3" */
            int nth = 1;
            for (int j = 0; j < i; j++)
                nth += d[j].name[0] && d[j].kind == SDW_DEV_CUDA && d[j].gpu == d[i].gpu;
            if (nth > 1) snprintf(d[i].name, sizeof d[i].name, "cuda:%d#%d", d[i].gpu, nth);
            continue;
        }
        for (int j = 0; j < i; j++)
            if (d[j].name[0] && !strcmp(d[j].name, d[i].name)) {
                sdw_yt_error(c, SDW_YT_AT(v->kid[i]),
                             "devices[%d]: same device as devices[%d] (%s); each device runs one worker", i,
                             j, d[i].name);
                break;
            }
    }
    free(cfg->devices);
    cfg->devices = d;
    cfg->n_devices = v->n;
}

static void sec_queue(sdw_yt_ctx *c, const sdw_yt_node *v, sdw_config *cfg)
{
    static const char *const known[] = {"capacity", "result_ttl_s", NULL};
    const sdw_yt_node *k[2], *val[2];
    if (sdw_yt_want_map(c, v, "queue") <= 0) return;
    sdw_yt_walk_map(c, v, "queue", known, k, val);
    if (!sdw_yt_is_null(val[0]))
        sdw_yt_get_int32(c, val[0], "queue.capacity", 1, 100000, &cfg->queue_capacity);
    if (!sdw_yt_is_null(val[1]))
        sdw_yt_get_int32(c, val[1], "queue.result_ttl_s", 1, 604800, &cfg->result_ttl_s);
}

static void get_dim(sdw_yt_ctx *c, const sdw_yt_node *v, const char *path, int *out)
{
    long long x;
    if (sdw_yt_get_int(c, v, path, INT_MIN, INT_MAX, &x) != 0) return;
    if (x < 64 || x > 2048 || x % 8) {
        sdw_yt_error(c, SDW_YT_AT(v), "%s: must be a multiple of 8 from 64 to 2048 (got %lld)", path, x);
        return;
    }
    *out = (int)x;
}

static void sec_limits(sdw_yt_ctx *c, const sdw_yt_node *v, sdw_config *cfg)
{
    static const char *const known[] = {"max_width",
                                        "max_height",
                                        "max_steps",
                                        "max_body_bytes",
                                        "request_timeout_s",
                                        "idle_timeout_s",
                                        "max_connections",
                                        "preview_every_default",
                                        "preview_every_min",
                                        "max_batch",
                                        NULL};
    const sdw_yt_node *k[10], *val[10];
    if (sdw_yt_want_map(c, v, "limits") <= 0) return;
    sdw_yt_walk_map(c, v, "limits", known, k, val);
    if (!sdw_yt_is_null(val[0])) get_dim(c, val[0], "limits.max_width", &cfg->max_width);
    if (!sdw_yt_is_null(val[1])) get_dim(c, val[1], "limits.max_height", &cfg->max_height);
    if (!sdw_yt_is_null(val[2])) sdw_yt_get_int32(c, val[2], "limits.max_steps", 1, 150, &cfg->max_steps);
    long long x;
    if (!sdw_yt_is_null(val[3]) &&
        sdw_yt_get_int(c, val[3], "limits.max_body_bytes", 1024, 1073741824, &x) == 0)
        cfg->max_body_bytes = (size_t)x;
    if (!sdw_yt_is_null(val[4]))
        sdw_yt_get_int32(c, val[4], "limits.request_timeout_s", 1, 86400, &cfg->request_timeout_s);
    if (!sdw_yt_is_null(val[5]))
        sdw_yt_get_int32(c, val[5], "limits.idle_timeout_s", 1, 86400, &cfg->idle_timeout_s);
    if (!sdw_yt_is_null(val[6]))
        sdw_yt_get_int32(c, val[6], "limits.max_connections", 1, 1048576, &cfg->max_connections);
    if (!sdw_yt_is_null(val[7]))
        sdw_yt_get_int32(c, val[7], "limits.preview_every_default", 0, 150, &cfg->preview_every_default);
    if (!sdw_yt_is_null(val[8]))
        sdw_yt_get_int32(c, val[8], "limits.preview_every_min", 1, 150, &cfg->preview_every_min);
    if (cfg->preview_every_default && cfg->preview_every_default < cfg->preview_every_min) {
        const sdw_yt_node *at = !sdw_yt_is_null(val[7]) ? val[7] : val[8];
        sdw_yt_error(
            c, SDW_YT_AT(at),
            "limits.preview_every_default: must be 0 or at least limits.preview_every_min (%d), got %d",
            cfg->preview_every_min, cfg->preview_every_default);
    }
    /* 16: the engine's ceiling (SDE_MAX_IMAGES) */
    if (!sdw_yt_is_null(val[9])) sdw_yt_get_int32(c, val[9], "limits.max_batch", 1, 16, &cfg->max_batch);
}

static void sec_server(sdw_yt_ctx *c, const sdw_yt_node *v, sdw_config *cfg)
{
    static const char *const known[] = {"http2", NULL};
    const sdw_yt_node *k[1], *val[1];
    if (sdw_yt_want_map(c, v, "server") <= 0) return;
    sdw_yt_walk_map(c, v, "server", known, k, val);
    if (!sdw_yt_is_null(val[0])) sdw_yt_get_bool(c, val[0], "server.http2", &cfg->http2);
}

static void sec_workers(sdw_yt_ctx *c, const sdw_yt_node *v, sdw_config *cfg)
{
    static const char *const known[] = {"restart_backoff_ms",
                                        "job_timeout_s",
                                        "retry_on_crash",
                                        "shutdown_grace_s",
                                        "heartbeat_s",
                                        "health_fail_after_s",
                                        NULL};
    const sdw_yt_node *k[6], *val[6];
    char sb[80];
    if (sdw_yt_want_map(c, v, "workers") <= 0) return;
    sdw_yt_walk_map(c, v, "workers", known, k, val);
    const sdw_yt_node *b = val[0];
    if (!sdw_yt_is_null(b)) {
        if (b->type != SDW_YT_SEQ || b->n != 2) {
            sdw_yt_error(
                c, SDW_YT_AT(b), "workers.restart_backoff_ms: expected [min, max] in milliseconds, got %s",
                b->type == SDW_YT_SEQ ? (b->n == 1 ? "a list of 1 item" : "a list of the wrong length")
                                      : sdw_yt_show(b, sb, sizeof sb));
        } else {
            int lo, hi;
            int e1 = sdw_yt_get_int32(c, b->kid[0], "workers.restart_backoff_ms[0]", 1, 3600000, &lo);
            int e2 = sdw_yt_get_int32(c, b->kid[1], "workers.restart_backoff_ms[1]", 1, 3600000, &hi);
            if (!e1 && !e2) {
                if (lo > hi)
                    sdw_yt_error(c, SDW_YT_AT(b), "workers.restart_backoff_ms: min %d is greater than max %d",
                                 lo, hi);
                else
                    cfg->restart_backoff_min_ms = lo, cfg->restart_backoff_max_ms = hi;
            }
        }
    }
    if (!sdw_yt_is_null(val[1]))
        sdw_yt_get_int32(c, val[1], "workers.job_timeout_s", 1, 86400, &cfg->job_timeout_s);
    if (!sdw_yt_is_null(val[2])) sdw_yt_get_bool(c, val[2], "workers.retry_on_crash", &cfg->retry_on_crash);
    if (!sdw_yt_is_null(val[3]))
        sdw_yt_get_int32(c, val[3], "workers.shutdown_grace_s", 0, 3600, &cfg->shutdown_grace_s);
    int hb;
    if (!sdw_yt_is_null(val[4]) && sdw_yt_get_int32(c, val[4], "workers.heartbeat_s", 0, 3600, &hb) == 0)
        cfg->heartbeat_ms = hb * 1000;
    if (!sdw_yt_is_null(val[5]))
        sdw_yt_get_int32(c, val[5], "workers.health_fail_after_s", 0, 604800, &cfg->health_fail_after_s);
}

/* An origin is "*" or scheme://host[:port] with nothing a header value could be broken with. */
static int origin_ok(const char *s)
{
    if (!strcmp(s, "*")) return 1;
    const char *rest;
    if (!strncmp(s, "http://", 7))
        rest = s + 7;
    else if (!strncmp(s, "https://", 8))
        rest = s + 8;
    else
        return 0;
    if (!*rest || strlen(s) > 255) return 0;
    for (const char *p = rest; *p; p++)
        if (*p <= ' ' || *p == 0x7F || *p == '/' || *p == ',' || *p == '"' || *p == '\\') return 0;
    return 1;
}

/* A list of strings where each must pass ok(): *arr and *n_arr replaced by the valid ones; errors name key[i]
 * and say what was expected (what_list for the list, what_item for an element). */
static void read_str_list(sdw_yt_ctx *c, const sdw_yt_node *l, const char *key, int (*ok)(const char *),
                          const char *what_list, const char *what_item, char ***arr, int *n_arr)
{
    char sb[80];
    if (sdw_yt_is_null(l)) return;
    if (l->type != SDW_YT_SEQ) {
        sdw_yt_error(c, SDW_YT_AT(l), "%s: expected %s, got %s", key, what_list,
                     sdw_yt_show(l, sb, sizeof sb));
        return;
    }
    char **o = calloc((size_t)l->n + 1, sizeof *o);
    if (!o) {
        sdw_yt_error(c, 0, 0, "out of memory");
        return;
    }
    int n = 0;
    for (int i = 0; i < l->n; i++) {
        char path[64];
        const char *s;
        snprintf(path, sizeof path, "%s[%d]", key, i);
        if (sdw_yt_get_str(c, l->kid[i], path, &s) != 0) continue;
        if (!ok(s)) {
            sdw_yt_error(c, SDW_YT_AT(l->kid[i]), "%s: expected %s, got %s", path, what_item,
                         sdw_yt_show(l->kid[i], sb, sizeof sb));
            continue;
        }
        if (!(o[n] = strdup(s))) {
            sdw_yt_error(c, 0, 0, "out of memory");
            break;
        }
        n++;
    }
    for (int i = 0; i < *n_arr; i++)
        free((*arr)[i]);
    free(*arr);
    *arr = o;
    *n_arr = n;
}

static void sec_cors(sdw_yt_ctx *c, const sdw_yt_node *v, sdw_config *cfg)
{
    static const char *const known[] = {"allow_origins", NULL};
    const sdw_yt_node *k[1], *val[1];
    if (sdw_yt_want_map(c, v, "cors") <= 0) return;
    sdw_yt_walk_map(c, v, "cors", known, k, val);
    read_str_list(
        c, val[0], "cors.allow_origins", origin_ok, "a list of origins like [\"https://app.example\"]",
        "\"*\" or an origin like https://host[:port] (no path)", &cfg->cors_origins, &cfg->n_cors_origins);
}

static void sec_log(sdw_yt_ctx *c, const sdw_yt_node *v, sdw_config *cfg)
{
    static const char *const known[] = {"level", "format", NULL};
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    static const char *const formats[] = {"text", "json", NULL};
    const sdw_yt_node *k[2], *val[2];
    int idx;
    if (sdw_yt_want_map(c, v, "log") <= 0) return;
    sdw_yt_walk_map(c, v, "log", known, k, val);
    if (!sdw_yt_is_null(val[0]) && sdw_yt_get_enum(c, val[0], "log.level", levels, &idx) == 0)
        cfg->log_level = sdw_log_level_parse(levels[idx]);
    if (!sdw_yt_is_null(val[1]) && sdw_yt_get_enum(c, val[1], "log.format", formats, &idx) == 0)
        cfg->log_json = idx == 1;
}

static void sec_metrics(sdw_yt_ctx *c, const sdw_yt_node *v, sdw_config *cfg)
{
    static const char *const known[] = {"enabled", NULL};
    const sdw_yt_node *k[1], *val[1];
    if (sdw_yt_want_map(c, v, "metrics") <= 0) return;
    sdw_yt_walk_map(c, v, "metrics", known, k, val);
    if (!sdw_yt_is_null(val[0])) sdw_yt_get_bool(c, val[0], "metrics.enabled", &cfg->metrics);
}

static void sec_auth(sdw_yt_ctx *c, const sdw_yt_node *v, sdw_config *cfg)
{
    static const char *const known[] = {"api_keys_file", "protect_metrics", "max_queued_per_key", NULL};
    const sdw_yt_node *k[3], *val[3];
    const char *s;
    if (sdw_yt_want_map(c, v, "auth") <= 0) return;
    sdw_yt_walk_map(c, v, "auth", known, k, val);
    if (!sdw_yt_is_null(val[0]) && sdw_yt_get_str(c, val[0], "auth.api_keys_file", &s) == 0 && *s)
        sdw_yt_set_str(c, &cfg->api_keys_file, s);
    if (!sdw_yt_is_null(val[1])) sdw_yt_get_bool(c, val[1], "auth.protect_metrics", &cfg->metrics_needs_key);
    if (!sdw_yt_is_null(val[2]))
        sdw_yt_get_int32(c, val[2], "auth.max_queued_per_key", 0, 100000, &cfg->max_queued_per_key);
}

/* Host names only: they are compared with the Host header, which never carries a path or spaces. */
static int server_name_ok(const char *s)
{
    int ok = *s && strlen(s) <= 253;
    for (const char *p = s; *p && ok; p++)
        ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
             *p == '-' || *p == ':' || *p == '[' || *p == ']';
    return ok;
}

static void sec_server_names(sdw_yt_ctx *c, const sdw_yt_node *l, sdw_config *cfg)
{
    read_str_list(c, l, "server_names", server_name_ok, "a list of host names like [\"sd.example\"]",
                  "a host name like sd.example", &cfg->server_names, &cfg->n_server_names);
}

/* ---- public API ---------------------------------------------------------------------------------------- */

void sdw_config_defaults(sdw_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    char id[33];
    default_node_id(id);
    cfg->listen_host = strdup("127.0.0.1");
    cfg->listen_port = 8080;
    cfg->node_id = strdup(id);
    cfg->tokenizer_path = strdup("");
    cfg->prediction = strdup("auto");
    /* No devices: key means one unpinned CPU worker; an explicit empty list is an error instead. */
    cfg->devices = calloc(1, sizeof *cfg->devices);
    if (cfg->devices) {
        cfg->n_devices = 1;
        cfg->devices[0].kind = SDW_DEV_CPU;
        snprintf(cfg->devices[0].name, sizeof cfg->devices[0].name, "cpu:all");
    }
    cfg->queue_capacity = 32;
    cfg->result_ttl_s = 600;
    cfg->max_width = 1024;
    cfg->max_height = 1024;
    cfg->max_steps = 150;
    cfg->max_batch = 4;
    cfg->max_body_bytes = 16777216; /* room for a base64 init image and mask */
    cfg->request_timeout_s = 300;
    cfg->idle_timeout_s = 60;
    cfg->max_connections = 4096;
    cfg->preview_every_default = 5;
    cfg->preview_every_min = 1;
    cfg->restart_backoff_min_ms = 250;
    cfg->restart_backoff_max_ms = 30000;
    cfg->job_timeout_s = 600;
    cfg->retry_on_crash = 0;
    cfg->shutdown_grace_s = 30;
    cfg->heartbeat_ms = 5000;
    cfg->health_fail_after_s = 0;
    cfg->cors_origins = calloc(1, sizeof *cfg->cors_origins);
    cfg->server_names = calloc(1, sizeof *cfg->server_names);
    cfg->metrics_needs_key = 1;
    cfg->max_queued_per_key = 8;
    cfg->log_level = SDW_LOG_INFO;
    cfg->log_json = 0;
    cfg->metrics = 1;
}

void sdw_config_free(sdw_config *cfg)
{
    if (!cfg) return;
    free(cfg->file);
    free(cfg->listen_host);
    free(cfg->node_id);
    free(cfg->model_path);
    free(cfg->tokenizer_path);
    free(cfg->prediction);
    free(cfg->lora_dir);
    free(cfg->preview_decoder);
    free(cfg->devices);
    for (int i = 0; i < cfg->n_cors_origins; i++)
        free(cfg->cors_origins[i]);
    free(cfg->cors_origins);
    for (int i = 0; i < cfg->n_server_names; i++)
        free(cfg->server_names[i]);
    free(cfg->server_names);
    free(cfg->api_keys_file);
    memset(cfg, 0, sizeof *cfg);
}

int sdw_config_load_string(const char *yaml, size_t len, const char *file, sdw_config *cfg, char *err,
                           size_t errlen)
{
    sdw_yt_ctx c = {.file = file ? file : "<config>", .text = yaml ? yaml : "", .textlen = yaml ? len : 0};
    if (err && errlen) err[0] = 0;
    sdw_config_defaults(cfg);
    if (!cfg->listen_host || !cfg->node_id || !cfg->tokenizer_path || !cfg->prediction || !cfg->devices ||
        !cfg->cors_origins || !cfg->server_names || !(cfg->file = strdup(c.file))) {
        sdw_yt_error(&c, 0, 0, "out of memory");
        goto fail;
    }
    if (c.textlen > CFG_MAX_BYTES) {
        sdw_yt_error(&c, 0, 0, "config is too large (%zu bytes; at most %d)", c.textlen, CFG_MAX_BYTES);
        goto fail;
    }
    sdw_yt_node *root;
    if (sdw_yt_parse(&c, &root) != 0) goto fail;
    static const sdw_yt_node empty_doc = {.type = SDW_YT_MAP, .line = 1, .col = 1};
    const sdw_yt_node *top = root;
    char sb[80];
    if (sdw_yt_is_null(root)) {
        top = &empty_doc;
    } else if (root->type != SDW_YT_MAP) {
        sdw_yt_error(
            &c, SDW_YT_AT(root),
            "expected a mapping of settings (listen:, model:, devices: ...) at the top level, got %s",
            sdw_yt_show(root, sb, sizeof sb));
        sdw_yt_free(root);
        goto fail;
    }
    static const char *const known[] = {"listen", "node_id", "model",        "devices", "queue",
                                        "limits", "workers", "cors",         "log",     "metrics",
                                        "server", "auth",    "server_names", NULL};
    const sdw_yt_node *k[13], *val[13];
    sdw_yt_walk_map(&c, top, "", known, k, val);
    const char *s;
    if (!sdw_yt_is_null(val[0])) parse_listen(&c, val[0], cfg);
    if (!sdw_yt_is_null(val[1]) && sdw_yt_get_str(&c, val[1], "node_id", &s) == 0) {
        if (!node_id_ok(s))
            sdw_yt_error(&c, SDW_YT_AT(val[1]),
                         "node_id: must be 1 to 32 characters from A-Z a-z 0-9 _ - (got %s)",
                         sdw_yt_show(val[1], sb, sizeof sb));
        else
            sdw_yt_set_str(&c, &cfg->node_id, s);
    }
    int model_bad = 0;
    sec_model(&c, val[2], cfg, &model_bad);
    if (k[3]) sec_devices(&c, val[3], cfg);
    sec_queue(&c, val[4], cfg);
    sec_limits(&c, val[5], cfg);
    sec_workers(&c, val[6], cfg);
    sec_cors(&c, val[7], cfg);
    sec_log(&c, val[8], cfg);
    sec_metrics(&c, val[9], cfg);
    sec_server(&c, val[10], cfg);
    sec_auth(&c, val[11], cfg);
    sec_server_names(&c, val[12], cfg);
    if (!cfg->model_path && !model_bad) {
        const sdw_yt_node *at = !sdw_yt_is_null(val[2]) && val[2]->type == SDW_YT_MAP ? val[2]
                                : k[2]                                                ? k[2]
                                                                                      : top;
        sdw_yt_error(&c, SDW_YT_AT(at),
                     "missing required key model.path (the checkpoint file, e.g. "
                     "/var/lib/sd-worker/models/model.safetensors)");
    }
    sdw_yt_free(root);
    if (c.nerr) goto fail;
    return 0;
fail:
    sdw_yt_errors_finish(&c, err, errlen);
    sdw_config_free(cfg);
    return -1;
}

int sdw_config_load(const char *path, sdw_config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    if (!path) {
        if (err && errlen) snprintf(err, errlen, "no config file given");
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (err && errlen) snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        if (err && errlen) snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_size > CFG_MAX_BYTES) {
        if (err && errlen)
            snprintf(err, errlen, "%s: config is too large (%lld bytes; at most %d)", path,
                     (long long)st.st_size, CFG_MAX_BYTES);
        close(fd);
        return -1;
    }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        if (err && errlen) snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    for (;;) {
        if (len == cap) {
            /* The file grew while we read it (or st_size lied, as in /proc): read on up to the cap. */
            if (cap > CFG_MAX_BYTES) {
                free(buf);
                close(fd);
                if (err && errlen)
                    snprintf(err, errlen, "%s: config is too large (at most %d bytes)", path, CFG_MAX_BYTES);
                return -1;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                close(fd);
                if (err && errlen) snprintf(err, errlen, "%s: out of memory", path);
                return -1;
            }
            buf = nb, cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            close(fd);
            if (err && errlen) snprintf(err, errlen, "%s: cannot read: %s", path, strerror(e));
            return -1;
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    close(fd);
    int rc = sdw_config_load_string(buf, len, path, cfg, err, errlen);
    free(buf);
    return rc;
}
