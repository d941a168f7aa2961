/* config.c: loads the YAML service configuration with libyaml's event parser into a small node tree,
 * then validates it against the schema, reporting every problem as "file:line:column: message". */
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
#include <yaml.h>

#include "config.h"
#include "log.h"

/* A config file is a few KiB; refusing big inputs keeps a wrong --config (a model!) from being slurped. */
#define CFG_MAX_BYTES (1 << 20)
/* Our schema nests four levels deep; anything far deeper is a mistake or an attack on the parser. */
#define CFG_MAX_DEPTH 32
/* Enough to see all typos of one edit; more would only repeat a cascade. */
#define CFG_MAX_ERRORS 20
/* CPU numbers we accept in a cpus: list (glibc's CPU_SETSIZE). */
#define CFG_MAX_CPU 1024

/* ---- the node tree ---------------------------------------------------------------------------- */

typedef enum { N_SCALAR, N_MAP, N_SEQ } ntype;

typedef struct node node;
struct node {
    ntype type;
    int line, col; /* 1-based, from libyaml's start mark */
    char *s;       /* N_SCALAR: the value (NUL-terminated; may hold NULs, see slen) */
    size_t slen;
    int quoted;    /* N_SCALAR: written quoted or as a block: a string, never a number/bool/null */
    node **kid;    /* N_MAP: key, value, key, value...; N_SEQ: the items */
    int n, cap;
};

static void node_free(node *n)
{
    if (!n)
        return;
    for (int i = 0; i < n->n; i++)
        node_free(n->kid[i]);
    free(n->kid);
    free(n->s);
    free(n);
}

static int node_add(node *parent, node *kid)
{
    if (parent->n == parent->cap) {
        int cap = parent->cap ? parent->cap * 2 : 8;
        node **k = realloc(parent->kid, (size_t)cap * sizeof *k);
        if (!k)
            return -1;
        parent->kid = k;
        parent->cap = cap;
    }
    parent->kid[parent->n++] = kid;
    return 0;
}

/* ---- error collection --------------------------------------------------------------------------- */

typedef struct {
    int line, col; /* 0 for errors about the whole file */
    char *msg;     /* "file:line:col: message", malloc'd */
} cfg_error;

typedef struct {
    const char *file;
    const char *text; /* the whole input, for positions of reader errors */
    size_t textlen;
    cfg_error errs[CFG_MAX_ERRORS];
    int nerr;  /* every error seen, also those past CFG_MAX_ERRORS */
    int nkept; /* entries of errs */
} ctx;

static void __attribute__((format(printf, 4, 5))) cerr(ctx *c, int line, int col, const char *fmt, ...)
{
    c->nerr++;
    if (c->nkept == CFG_MAX_ERRORS)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *one = NULL;
    int n = line > 0 ? asprintf(&one, "%s:%d:%d: %s", c->file, line, col, msg) : asprintf(&one, "%s: %s", c->file, msg);
    if (n < 0)
        one = NULL; /* still counted; the caller's message says how many were not shown */
    c->errs[c->nkept++] = (cfg_error){line, col, one};
}

/* Writes the errors into err in file order, one per line. A line that doesn't fit whole is left out
 * (the first is cut rather than lost) and a last line says how many are not shown. */
static void cerr_finish(ctx *c, char *err, size_t errlen)
{
    /* Insertion sort: stable, so two errors at one position keep the order they were found in. */
    for (int i = 1; i < c->nkept; i++) {
        cfg_error t = c->errs[i];
        int j = i - 1;
        while (j >= 0 && (c->errs[j].line > t.line || (c->errs[j].line == t.line && c->errs[j].col > t.col))) {
            c->errs[j + 1] = c->errs[j];
            j--;
        }
        c->errs[j + 1] = t;
    }
    size_t used = 0;
    int shown = 0;
    const size_t reserve = 48; /* room for the "(N more errors not shown)" line */
    if (err && errlen)
        err[0] = 0;
    for (int i = 0; i < c->nkept; i++) {
        const char *m = c->errs[i].msg;
        if (!m || !err || !errlen)
            continue;
        size_t need = strlen(m) + (used ? 1 : 0);
        if (used && used + need + reserve >= errlen)
            continue;
        snprintf(err + used, errlen - used, "%s%s", used ? "\n" : "", m);
        used += strlen(err + used);
        shown++;
    }
    int hidden = c->nerr - shown;
    if (hidden > 0 && shown > 0 && err) {
        char tail[64];
        snprintf(tail, sizeof tail, "\n(%d more error%s not shown)", hidden, hidden == 1 ? "" : "s");
        if (used + strlen(tail) < errlen)
            memcpy(err + used, tail, strlen(tail) + 1);
    }
    for (int i = 0; i < c->nkept; i++)
        free(c->errs[i].msg);
    c->nkept = 0;
}

#define AT(n) (n)->line, (n)->col

/* ---- parsing: libyaml events -> node tree --------------------------------------------------------- */

/* Line/column of a byte offset, for libyaml reader errors (bad UTF-8), which carry only an offset. */
static void offset_pos(const ctx *c, size_t off, int *line, int *col)
{
    *line = 1, *col = 1;
    for (size_t i = 0; i < off && i < c->textlen; i++) {
        if (c->text[i] == '\n')
            (*line)++, *col = 1;
        else if (((unsigned char)c->text[i] & 0xC0) != 0x80)
            (*col)++;
    }
}

static void syntax_error(ctx *c, const yaml_parser_t *p)
{
    int line, col;
    if (p->error == YAML_READER_ERROR) {
        offset_pos(c, p->problem_offset, &line, &col);
        cerr(c, line, col, "invalid input: %s", p->problem ? p->problem : "cannot read");
        return;
    }
    if (p->error == YAML_MEMORY_ERROR) {
        cerr(c, 0, 0, "out of memory while parsing");
        return;
    }
    line = (int)p->problem_mark.line + 1, col = (int)p->problem_mark.column + 1;
    int cl = (int)p->context_mark.line + 1, cc = (int)p->context_mark.column + 1;
    if (p->context && (cl != line || cc != col))
        cerr(c, line, col, "YAML syntax error: %s (%s at line %d, column %d)", p->problem ? p->problem : "invalid YAML",
             p->context, cl, cc);
    else if (p->context)
        cerr(c, line, col, "YAML syntax error: %s (%s)", p->problem ? p->problem : "invalid YAML", p->context);
    else
        cerr(c, line, col, "YAML syntax error: %s", p->problem ? p->problem : "invalid YAML");
}

static node *node_new(ntype t, const yaml_mark_t *m)
{
    node *n = calloc(1, sizeof *n);
    if (n) {
        n->type = t;
        n->line = (int)m->line + 1;
        n->col = (int)m->column + 1;
    }
    return n;
}

/* Builds the tree of the single document in text. Returns 0 (*root NULL for an empty stream) or -1
 * after reporting. Aliases are refused: nothing in the schema needs them and they make bombs possible. */
static int parse_tree(ctx *c, node **root)
{
    yaml_parser_t p;
    yaml_event_t ev;
    node *stack[CFG_MAX_DEPTH];
    int depth = 0, docs = 0, rc = -1, done = 0;
    *root = NULL;
    if (!yaml_parser_initialize(&p)) {
        cerr(c, 0, 0, "out of memory");
        return -1;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)c->text, c->textlen);
    while (!done) {
        if (!yaml_parser_parse(&p, &ev)) {
            syntax_error(c, &p);
            goto out;
        }
        node *nn = NULL;
        int bad = 0;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1) {
                cerr(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                     "only one YAML document is allowed in a config file");
                bad = 1;
            }
            break;
        case YAML_ALIAS_EVENT:
            cerr(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                 "YAML aliases (*%s) are not supported in the config", (const char *)ev.data.alias.anchor);
            bad = 1;
            break;
        case YAML_SCALAR_EVENT:
            nn = node_new(N_SCALAR, &ev.start_mark);
            if (nn) {
                nn->slen = ev.data.scalar.length;
                nn->s = malloc(nn->slen + 1);
                if (nn->s) {
                    memcpy(nn->s, ev.data.scalar.value, nn->slen);
                    nn->s[nn->slen] = 0;
                }
                nn->quoted = ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
            }
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            if (depth == CFG_MAX_DEPTH) {
                cerr(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1, "nesting too deep");
                bad = 1;
                break;
            }
            nn = node_new(ev.type == YAML_MAPPING_START_EVENT ? N_MAP : N_SEQ, &ev.start_mark);
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            depth--;
            break;
        default:
            break;
        }
        int is_node = ev.type == YAML_SCALAR_EVENT || ev.type == YAML_SEQUENCE_START_EVENT ||
                      ev.type == YAML_MAPPING_START_EVENT;
        yaml_event_delete(&ev);
        if (bad)
            goto out;
        if (is_node) {
            if (!nn || (nn->type == N_SCALAR && !nn->s)) {
                node_free(nn);
                cerr(c, 0, 0, "out of memory");
                goto out;
            }
            if (depth == 0) {
                *root = nn; /* the document's root: only one, as only one document is allowed */
            } else if (node_add(stack[depth - 1], nn) != 0) {
                node_free(nn);
                cerr(c, 0, 0, "out of memory");
                goto out;
            }
            if (nn->type != N_SCALAR)
                stack[depth++] = nn;
        }
    }
    rc = 0;
out:
    if (rc != 0) {
        node_free(*root);
        *root = NULL;
    }
    yaml_parser_delete(&p);
    return rc;
}

/* ---- typed access --------------------------------------------------------------------------------- */

/* YAML 1.1/1.2 core schema nulls; quoted scalars are always strings. */
static int is_null(const node *v)
{
    if (!v)
        return 1;
    if (v->type != N_SCALAR || v->quoted)
        return 0;
    return !v->s[0] || !strcmp(v->s, "~") || !strcmp(v->s, "null") || !strcmp(v->s, "Null") || !strcmp(v->s, "NULL");
}

/* A scalar's text made safe for a one-line message: control characters as \xNN, cut at ~40 bytes. */
static const char *clean(const node *v, char *buf, size_t len)
{
    size_t o = 0, i = 0;
    for (; i < v->slen && o + 8 < len && o < 40; i++) {
        unsigned char ch = (unsigned char)v->s[i];
        if (ch < 0x20 || ch == 0x7F)
            o += (size_t)snprintf(buf + o, len - o, "\\x%02x", ch);
        else
            buf[o++] = (char)ch;
    }
    snprintf(buf + o, len - o, "%s", i < v->slen ? "..." : "");
    return buf;
}

/* A short rendering of a value for messages: 'abc', string "32", a mapping, a list. */
static const char *show(const node *v, char *buf, size_t len)
{
    if (v->type == N_MAP)
        return "a mapping";
    if (v->type == N_SEQ)
        return "a list";
    char body[64];
    clean(v, body, sizeof body);
    snprintf(buf, len, v->quoted ? "string \"%s\"" : "'%s'", body);
    return buf;
}

/* Integer in [lo, hi] from a plain decimal scalar. 0 ok, -1 reported. */
static int get_int(ctx *c, const node *v, const char *path, long long lo, long long hi, long long *out)
{
    char sb[80];
    if (v->type != N_SCALAR || v->quoted) {
        cerr(c, AT(v), "%s: expected an integer, got %s", path, show(v, sb, sizeof sb));
        return -1;
    }
    const char *s = v->s;
    size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
    if (!s[i]) {
        cerr(c, AT(v), "%s: expected an integer, got %s", path, show(v, sb, sizeof sb));
        return -1;
    }
    for (size_t j = i; s[j]; j++)
        if (s[j] < '0' || s[j] > '9') {
            cerr(c, AT(v), "%s: expected an integer, got %s", path, show(v, sb, sizeof sb));
            return -1;
        }
    errno = 0;
    long long x = strtoll(s, NULL, 10);
    if (errno == ERANGE || x < lo || x > hi) {
        cerr(c, AT(v), "%s: must be between %lld and %lld (got %s)", path, lo, hi, s);
        return -1;
    }
    *out = x;
    return 0;
}

static int get_int32(ctx *c, const node *v, const char *path, int lo, int hi, int *out)
{
    long long x;
    if (get_int(c, v, path, lo, hi, &x) != 0)
        return -1;
    *out = (int)x;
    return 0;
}

static int get_bool(ctx *c, const node *v, const char *path, int *out)
{
    char sb[80];
    if (v->type == N_SCALAR && !v->quoted) {
        if (!strcmp(v->s, "true") || !strcmp(v->s, "True") || !strcmp(v->s, "TRUE")) {
            *out = 1;
            return 0;
        }
        if (!strcmp(v->s, "false") || !strcmp(v->s, "False") || !strcmp(v->s, "FALSE")) {
            *out = 0;
            return 0;
        }
    }
    cerr(c, AT(v), "%s: expected true or false, got %s", path, show(v, sb, sizeof sb));
    return -1;
}

/* Any scalar as text (a plain 8080 is fine where a string is wanted); NULs and maps/lists are not. */
static int get_str(ctx *c, const node *v, const char *path, const char **out)
{
    char sb[80];
    if (v->type != N_SCALAR) {
        cerr(c, AT(v), "%s: expected a string, got %s", path, show(v, sb, sizeof sb));
        return -1;
    }
    if (strlen(v->s) != v->slen) {
        cerr(c, AT(v), "%s: must not contain a NUL character", path);
        return -1;
    }
    *out = v->s;
    return 0;
}

/* One of choices (NULL-terminated); *out is its index. */
static int get_enum(ctx *c, const node *v, const char *path, const char *const *choices, int *out)
{
    const char *s;
    if (get_str(c, v, path, &s) != 0)
        return -1;
    char list[160] = "";
    for (int i = 0; choices[i]; i++) {
        if (!strcmp(s, choices[i])) {
            *out = i;
            return 0;
        }
        size_t o = strlen(list);
        snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "", choices[i]);
    }
    char sb[80];
    cerr(c, AT(v), "%s: must be one of %s (got %s)", path, list, show(v, sb, sizeof sb));
    return -1;
}

static int set_str(ctx *c, char **dst, const char *s)
{
    char *d = strdup(s);
    if (!d) {
        cerr(c, 0, 0, "out of memory");
        return -1;
    }
    free(*dst);
    *dst = d;
    return 0;
}

/* A mapping's keys checked against the known list: unknown and duplicate keys are reported, and the
 * value node of each known key is returned in vals[] (key nodes in keys[]; absent: NULL). */
static void walk_map(ctx *c, const node *m, const char *where, const char *const *known, const node **keys,
                     const node **vals)
{
    int nk = 0;
    while (known[nk])
        nk++;
    for (int i = 0; i < nk; i++)
        keys[i] = vals[i] = NULL;
    for (int i = 0; i + 1 < m->n; i += 2) {
        const node *k = m->kid[i], *v = m->kid[i + 1];
        char sb[80];
        if (k->type != N_SCALAR) {
            cerr(c, AT(k), "%s%skeys must be plain names, got %s", where, *where ? ": " : "", show(k, sb, sizeof sb));
            continue;
        }
        int dup = 0;
        for (int j = 0; j < i && !dup; j += 2) {
            const node *pk = m->kid[j];
            if (pk->type == N_SCALAR && pk->slen == k->slen && !memcmp(pk->s, k->s, k->slen)) {
                cerr(c, AT(k), "duplicate key '%s'%s%s (first defined at line %d, column %d)", clean(k, sb, sizeof sb),
                     *where ? " in " : "", where, pk->line, pk->col);
                dup = 1;
            }
        }
        if (dup)
            continue;
        int idx = -1;
        for (int j = 0; j < nk; j++)
            if (!strcmp(k->s, known[j]))
                idx = j;
        if (idx < 0) {
            char list[256] = "";
            for (int j = 0; j < nk; j++) {
                size_t o = strlen(list);
                snprintf(list + o, sizeof list - o, "%s%s", j ? ", " : "", known[j]);
            }
            cerr(c, AT(k), "unknown key '%s'%s%s; known keys: %s", clean(k, sb, sizeof sb), *where ? " in " : "",
                 where, list);
            continue;
        }
        keys[idx] = k;
        vals[idx] = v;
    }
}

/* A section that must be a mapping; a null value counts as an empty one (all defaults). 1 = walk it. */
static int want_map(ctx *c, const node *v, const char *path)
{
    char sb[80];
    if (is_null(v))
        return 0;
    if (v->type != N_MAP) {
        cerr(c, AT(v), "%s: expected a mapping, got %s", path, show(v, sb, sizeof sb));
        return -1;
    }
    return 1;
}

/* ---- value checks ---------------------------------------------------------------------------------- */

/* host:port with host an IPv4 address, a DNS name, or a bracketed IPv6 address. */
static int parse_listen(ctx *c, const node *v, sdw_config *cfg)
{
    const char *s;
    char sb[80];
    if (get_str(c, v, "listen", &s) != 0)
        return -1;
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
                ok = (*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') || (*h >= '0' && *h <= '9') || *h == '.' ||
                     *h == '-';
        }
    }
    if (!ok) {
        cerr(c, AT(v), "listen: expected host:port (e.g. 127.0.0.1:8080, 0.0.0.0:8080 or \"[::1]:8080\"), got %s",
             show(v, sb, sizeof sb));
        return -1;
    }
    const char *p = colon + 1;
    size_t np = strlen(p);
    int digits = np > 0 && np <= 5;
    for (size_t i = 0; i < np && digits; i++)
        digits = p[i] >= '0' && p[i] <= '9';
    long port = digits ? strtol(p, NULL, 10) : -1;
    if (port < 0 || port > 65535) {
        cerr(c, AT(v), "listen: port must be a number from 0 to 65535 (got '%s')", p);
        return -1;
    }
    if (set_str(c, &cfg->listen_host, host) != 0)
        return -1;
    cfg->listen_port = (int)port;
    return 0;
}

static int node_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 32)
        return 0;
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
    if (gethostname(h, sizeof h - 1) != 0 || !h[0])
        snprintf(h, sizeof h, "node");
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
        if (!bits[i])
            continue;
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
static int resolve_path(ctx *c, const node *v, const char *path, char **dst, const char *s)
{
    if (!s[0] || s[0] == '/')
        return set_str(c, dst, s);
    char cwd[PATH_MAX];
    const char *slash = strrchr(c->file, '/');
    size_t dirlen = slash ? (size_t)(slash - c->file) : 0;
    int abs_dir = c->file[0] == '/';
    if (!abs_dir && !getcwd(cwd, sizeof cwd)) {
        cerr(c, AT(v), "%s: cannot resolve relative path '%s': %s", path, s, strerror(errno));
        return -1;
    }
    size_t len = (abs_dir ? 0 : strlen(cwd) + 1) + dirlen + 1 + strlen(s) + 1;
    char *r = malloc(len);
    if (!r) {
        cerr(c, 0, 0, "out of memory");
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

static void sec_model(ctx *c, const node *v, sdw_config *cfg, int *bad)
{
    static const char *const known[] = {"path", "tokenizer", "prediction", NULL};
    static const char *const preds[] = {"auto", "eps", "v", NULL};
    const node *k[3], *val[3];
    int w = want_map(c, v, "model");
    if (w < 0) {
        *bad = 1;
        return;
    }
    if (w == 0)
        return;
    walk_map(c, v, "model", known, k, val);
    const char *s;
    if (!is_null(val[0]) && get_str(c, val[0], "model.path", &s) == 0) {
        if (!s[0]) {
            cerr(c, AT(val[0]), "model.path: must not be empty");
            *bad = 1;
        } else {
            resolve_path(c, val[0], "model.path", &cfg->model_path, s);
        }
    } else if (val[0] && !is_null(val[0])) {
        *bad = 1; /* reported; don't also call it missing */
    }
    if (!is_null(val[1]) && get_str(c, val[1], "model.tokenizer", &s) == 0)
        resolve_path(c, val[1], "model.tokenizer", &cfg->tokenizer_path, s);
    int idx;
    if (!is_null(val[2]) && get_enum(c, val[2], "model.prediction", preds, &idx) == 0)
        set_str(c, &cfg->prediction, preds[idx]);
}

/* Longest canonical cpus: list that still fits the device name "cpu:<cpus>". */
#define CPUS_NAME_MAX (sizeof(((sdw_device_config *)0)->name) - sizeof "cpu:")

/* One devices: entry into d; name is filled here and checked for uniqueness by the caller. */
static int parse_device(ctx *c, const node *v, int i, sdw_device_config *d)
{
    static const char *const known[] = {"kind", "cpus", "threads", "gpu", NULL};
    static const char *const kinds[] = {"cpu", "cuda", NULL};
    char where[32], path[48], sb[80];
    snprintf(where, sizeof where, "devices[%d]", i);
    memset(d, 0, sizeof *d);
    if (v->type != N_MAP) {
        cerr(c, AT(v), "%s: expected a mapping like { kind: cpu, cpus: \"0-1\" }, got %s", where, show(v, sb, sizeof sb));
        return -1;
    }
    const node *k[4], *val[4];
    int before = c->nerr;
    walk_map(c, v, where, known, k, val);
    if (is_null(val[0])) {
        cerr(c, AT(v), "%s: missing key 'kind' (cpu or cuda)", where);
        return -1;
    }
    int kind;
    snprintf(path, sizeof path, "%s.kind", where);
    if (get_enum(c, val[0], path, kinds, &kind) != 0)
        return -1;
    d->kind = kind ? SDW_DEV_CUDA : SDW_DEV_CPU;
    const char *s;
    if (d->kind == SDW_DEV_CPU) {
        if (val[3])
            cerr(c, AT(k[3]), "%s.gpu: only applies to kind cuda", where);
        snprintf(path, sizeof path, "%s.cpus", where);
        if (!is_null(val[1]) && get_str(c, val[1], path, &s) == 0) {
            const char *why;
            if (s[0] && parse_cpus(s, d->cpus, CPUS_NAME_MAX + 1, &why) != 0)
                cerr(c, AT(val[1]), "%s: invalid CPU list '%s': %s", path, s, why);
        }
        snprintf(path, sizeof path, "%s.threads", where);
        if (!is_null(val[2]))
            get_int32(c, val[2], path, 0, 1024, &d->threads);
        snprintf(d->name, sizeof d->name, "cpu:%.27s", d->cpus[0] ? d->cpus : "all"); /* parse_cpus kept it <= 27 */
    } else {
        if (val[1])
            cerr(c, AT(k[1]), "%s.cpus: only applies to kind cpu", where);
        if (val[2])
            cerr(c, AT(k[2]), "%s.threads: only applies to kind cpu", where);
        snprintf(path, sizeof path, "%s.gpu", where);
        if (!is_null(val[3]))
            get_int32(c, val[3], path, 0, 1023, &d->gpu);
        snprintf(d->name, sizeof d->name, "cuda:%d", d->gpu);
    }
    return c->nerr == before ? 0 : -1;
}

static void sec_devices(ctx *c, const node *v, sdw_config *cfg)
{
    char sb[80];
    if (is_null(v)) {
        cerr(c, AT(v), "devices: must list at least one device (e.g. - { kind: cpu })");
        return;
    }
    if (v->type != N_SEQ) {
        cerr(c, AT(v), "devices: expected a list of devices, got %s", show(v, sb, sizeof sb));
        return;
    }
    if (v->n == 0) {
        cerr(c, AT(v), "devices: must list at least one device (e.g. - { kind: cpu })");
        return;
    }
    sdw_device_config *d = calloc((size_t)v->n, sizeof *d);
    if (!d) {
        cerr(c, 0, 0, "out of memory");
        return;
    }
    for (int i = 0; i < v->n; i++) {
        if (parse_device(c, v->kid[i], i, &d[i]) != 0)
            continue;
        for (int j = 0; j < i; j++)
            if (d[j].name[0] && !strcmp(d[j].name, d[i].name)) {
                cerr(c, AT(v->kid[i]), "devices[%d]: same device as devices[%d] (%s); each device runs one worker", i, j,
                     d[i].name);
                break;
            }
    }
    free(cfg->devices);
    cfg->devices = d;
    cfg->n_devices = v->n;
}

static void sec_queue(ctx *c, const node *v, sdw_config *cfg)
{
    static const char *const known[] = {"capacity", "result_ttl_s", NULL};
    const node *k[2], *val[2];
    if (want_map(c, v, "queue") <= 0)
        return;
    walk_map(c, v, "queue", known, k, val);
    if (!is_null(val[0]))
        get_int32(c, val[0], "queue.capacity", 1, 100000, &cfg->queue_capacity);
    if (!is_null(val[1]))
        get_int32(c, val[1], "queue.result_ttl_s", 1, 604800, &cfg->result_ttl_s);
}

static void get_dim(ctx *c, const node *v, const char *path, int *out)
{
    long long x;
    if (get_int(c, v, path, INT_MIN, INT_MAX, &x) != 0)
        return;
    if (x < 64 || x > 2048 || x % 8) {
        cerr(c, AT(v), "%s: must be a multiple of 8 from 64 to 2048 (got %lld)", path, x);
        return;
    }
    *out = (int)x;
}

static void sec_limits(ctx *c, const node *v, sdw_config *cfg)
{
    static const char *const known[] = {"max_width",      "max_height",        "max_steps", "max_body_bytes",
                                        "request_timeout_s", "idle_timeout_s", NULL};
    const node *k[6], *val[6];
    if (want_map(c, v, "limits") <= 0)
        return;
    walk_map(c, v, "limits", known, k, val);
    if (!is_null(val[0]))
        get_dim(c, val[0], "limits.max_width", &cfg->max_width);
    if (!is_null(val[1]))
        get_dim(c, val[1], "limits.max_height", &cfg->max_height);
    if (!is_null(val[2]))
        get_int32(c, val[2], "limits.max_steps", 1, 150, &cfg->max_steps);
    long long x;
    if (!is_null(val[3]) && get_int(c, val[3], "limits.max_body_bytes", 1024, 1073741824, &x) == 0)
        cfg->max_body_bytes = (size_t)x;
    if (!is_null(val[4]))
        get_int32(c, val[4], "limits.request_timeout_s", 1, 86400, &cfg->request_timeout_s);
    if (!is_null(val[5]))
        get_int32(c, val[5], "limits.idle_timeout_s", 1, 86400, &cfg->idle_timeout_s);
}

static void sec_workers(ctx *c, const node *v, sdw_config *cfg)
{
    static const char *const known[] = {"restart_backoff_ms", "job_timeout_s", "retry_on_crash", "shutdown_grace_s",
                                        NULL};
    const node *k[4], *val[4];
    char sb[80];
    if (want_map(c, v, "workers") <= 0)
        return;
    walk_map(c, v, "workers", known, k, val);
    const node *b = val[0];
    if (!is_null(b)) {
        if (b->type != N_SEQ || b->n != 2) {
            cerr(c, AT(b), "workers.restart_backoff_ms: expected [min, max] in milliseconds, got %s",
                 b->type == N_SEQ ? (b->n == 1 ? "a list of 1 item" : "a list of the wrong length") : show(b, sb, sizeof sb));
        } else {
            int lo, hi;
            int e1 = get_int32(c, b->kid[0], "workers.restart_backoff_ms[0]", 1, 3600000, &lo);
            int e2 = get_int32(c, b->kid[1], "workers.restart_backoff_ms[1]", 1, 3600000, &hi);
            if (!e1 && !e2) {
                if (lo > hi)
                    cerr(c, AT(b), "workers.restart_backoff_ms: min %d is greater than max %d", lo, hi);
                else
                    cfg->restart_backoff_min_ms = lo, cfg->restart_backoff_max_ms = hi;
            }
        }
    }
    if (!is_null(val[1]))
        get_int32(c, val[1], "workers.job_timeout_s", 1, 86400, &cfg->job_timeout_s);
    if (!is_null(val[2]))
        get_bool(c, val[2], "workers.retry_on_crash", &cfg->retry_on_crash);
    if (!is_null(val[3]))
        get_int32(c, val[3], "workers.shutdown_grace_s", 0, 3600, &cfg->shutdown_grace_s);
}

/* An origin is "*" or scheme://host[:port] with nothing a header value could be broken with. */
static int origin_ok(const char *s)
{
    if (!strcmp(s, "*"))
        return 1;
    const char *rest;
    if (!strncmp(s, "http://", 7))
        rest = s + 7;
    else if (!strncmp(s, "https://", 8))
        rest = s + 8;
    else
        return 0;
    if (!*rest || strlen(s) > 255)
        return 0;
    for (const char *p = rest; *p; p++)
        if (*p <= ' ' || *p == 0x7F || *p == '/' || *p == ',' || *p == '"' || *p == '\\')
            return 0;
    return 1;
}

static void sec_cors(ctx *c, const node *v, sdw_config *cfg)
{
    static const char *const known[] = {"allow_origins", NULL};
    const node *k[1], *val[1];
    char sb[80];
    if (want_map(c, v, "cors") <= 0)
        return;
    walk_map(c, v, "cors", known, k, val);
    const node *l = val[0];
    if (is_null(l))
        return;
    if (l->type != N_SEQ) {
        cerr(c, AT(l), "cors.allow_origins: expected a list of origins like [\"https://app.example\"], got %s",
             show(l, sb, sizeof sb));
        return;
    }
    char **o = calloc((size_t)l->n + 1, sizeof *o);
    if (!o) {
        cerr(c, 0, 0, "out of memory");
        return;
    }
    int n = 0;
    for (int i = 0; i < l->n; i++) {
        char path[48];
        const char *s;
        snprintf(path, sizeof path, "cors.allow_origins[%d]", i);
        if (get_str(c, l->kid[i], path, &s) != 0)
            continue;
        if (!origin_ok(s)) {
            cerr(c, AT(l->kid[i]), "%s: expected \"*\" or an origin like https://host[:port] (no path), got %s", path,
                 show(l->kid[i], sb, sizeof sb));
            continue;
        }
        if (!(o[n] = strdup(s))) {
            cerr(c, 0, 0, "out of memory");
            break;
        }
        n++;
    }
    for (int i = 0; i < cfg->n_cors_origins; i++)
        free(cfg->cors_origins[i]);
    free(cfg->cors_origins);
    cfg->cors_origins = o;
    cfg->n_cors_origins = n;
}

static void sec_log(ctx *c, const node *v, sdw_config *cfg)
{
    static const char *const known[] = {"level", "format", NULL};
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    static const char *const formats[] = {"text", "json", NULL};
    const node *k[2], *val[2];
    int idx;
    if (want_map(c, v, "log") <= 0)
        return;
    walk_map(c, v, "log", known, k, val);
    if (!is_null(val[0]) && get_enum(c, val[0], "log.level", levels, &idx) == 0)
        cfg->log_level = sdw_log_level_parse(levels[idx]);
    if (!is_null(val[1]) && get_enum(c, val[1], "log.format", formats, &idx) == 0)
        cfg->log_json = idx == 1;
}

static void sec_metrics(ctx *c, const node *v, sdw_config *cfg)
{
    static const char *const known[] = {"enabled", NULL};
    const node *k[1], *val[1];
    if (want_map(c, v, "metrics") <= 0)
        return;
    walk_map(c, v, "metrics", known, k, val);
    if (!is_null(val[0]))
        get_bool(c, val[0], "metrics.enabled", &cfg->metrics);
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
    cfg->max_body_bytes = 1048576;
    cfg->request_timeout_s = 300;
    cfg->idle_timeout_s = 60;
    cfg->restart_backoff_min_ms = 250;
    cfg->restart_backoff_max_ms = 30000;
    cfg->job_timeout_s = 600;
    cfg->retry_on_crash = 0;
    cfg->shutdown_grace_s = 30;
    cfg->cors_origins = calloc(2, sizeof *cfg->cors_origins);
    if (cfg->cors_origins && (cfg->cors_origins[0] = strdup("*")))
        cfg->n_cors_origins = 1;
    cfg->log_level = SDW_LOG_INFO;
    cfg->log_json = 0;
    cfg->metrics = 1;
}

void sdw_config_free(sdw_config *cfg)
{
    if (!cfg)
        return;
    free(cfg->file);
    free(cfg->listen_host);
    free(cfg->node_id);
    free(cfg->model_path);
    free(cfg->tokenizer_path);
    free(cfg->prediction);
    free(cfg->devices);
    for (int i = 0; i < cfg->n_cors_origins; i++)
        free(cfg->cors_origins[i]);
    free(cfg->cors_origins);
    memset(cfg, 0, sizeof *cfg);
}

int sdw_config_load_string(const char *yaml, size_t len, const char *file, sdw_config *cfg, char *err, size_t errlen)
{
    ctx c = {.file = file ? file : "<config>", .text = yaml ? yaml : "", .textlen = yaml ? len : 0};
    if (err && errlen)
        err[0] = 0;
    sdw_config_defaults(cfg);
    if (!cfg->listen_host || !cfg->node_id || !cfg->tokenizer_path || !cfg->prediction || !cfg->devices ||
        !cfg->n_cors_origins || !(cfg->file = strdup(c.file))) {
        cerr(&c, 0, 0, "out of memory");
        goto fail;
    }
    if (c.textlen > CFG_MAX_BYTES) {
        cerr(&c, 0, 0, "config is too large (%zu bytes; at most %d)", c.textlen, CFG_MAX_BYTES);
        goto fail;
    }
    node *root;
    if (parse_tree(&c, &root) != 0)
        goto fail;
    static const node empty_doc = {.type = N_MAP, .line = 1, .col = 1};
    const node *top = root;
    char sb[80];
    if (is_null(root)) {
        top = &empty_doc;
    } else if (root->type != N_MAP) {
        cerr(&c, AT(root), "expected a mapping of settings (listen:, model:, devices: ...) at the top level, got %s",
             show(root, sb, sizeof sb));
        node_free(root);
        goto fail;
    }
    static const char *const known[] = {"listen", "node_id", "model", "devices", "queue", "limits",
                                        "workers", "cors", "log", "metrics", NULL};
    const node *k[10], *val[10];
    walk_map(&c, top, "", known, k, val);
    const char *s;
    if (!is_null(val[0]))
        parse_listen(&c, val[0], cfg);
    if (!is_null(val[1]) && get_str(&c, val[1], "node_id", &s) == 0) {
        if (!node_id_ok(s))
            cerr(&c, AT(val[1]), "node_id: must be 1 to 32 characters from A-Z a-z 0-9 _ - (got %s)",
                 show(val[1], sb, sizeof sb));
        else
            set_str(&c, &cfg->node_id, s);
    }
    int model_bad = 0;
    sec_model(&c, val[2], cfg, &model_bad);
    if (k[3])
        sec_devices(&c, val[3], cfg);
    sec_queue(&c, val[4], cfg);
    sec_limits(&c, val[5], cfg);
    sec_workers(&c, val[6], cfg);
    sec_cors(&c, val[7], cfg);
    sec_log(&c, val[8], cfg);
    sec_metrics(&c, val[9], cfg);
    if (!cfg->model_path && !model_bad) {
        const node *at = !is_null(val[2]) && val[2]->type == N_MAP ? val[2] : k[2] ? k[2] : top;
        cerr(&c, AT(at), "missing required key model.path (the checkpoint file, e.g. "
                         "/var/lib/sd-worker/models/model.safetensors)");
    }
    node_free(root);
    if (c.nerr)
        goto fail;
    return 0;
fail:
    cerr_finish(&c, err, errlen);
    sdw_config_free(cfg);
    return -1;
}

int sdw_config_load(const char *path, sdw_config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    if (!path) {
        if (err && errlen)
            snprintf(err, errlen, "no config file given");
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        if (err && errlen)
            snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_size > CFG_MAX_BYTES) {
        if (err && errlen)
            snprintf(err, errlen, "%s: config is too large (%lld bytes; at most %d)", path, (long long)st.st_size,
                     CFG_MAX_BYTES);
        close(fd);
        return -1;
    }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        if (err && errlen)
            snprintf(err, errlen, "%s: out of memory", path);
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
                if (err && errlen)
                    snprintf(err, errlen, "%s: out of memory", path);
                return -1;
            }
            buf = nb, cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            close(fd);
            if (err && errlen)
                snprintf(err, errlen, "%s: cannot read: %s", path, strerror(e));
            return -1;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    int rc = sdw_config_load_string(buf, len, path, cfg, err, errlen);
    free(buf);
    return rc;
}
