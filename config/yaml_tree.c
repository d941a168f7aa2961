/* yaml_tree.c: libyaml events into the config's node tree, the file:line:col error collector, and the typed
 * reads of scalars and mappings (see yaml_tree.h); the schema itself is config.c's. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "yaml_tree.h"

/* ---- the node tree ---------------------------------------------------------------------------- */

void sdw_yt_free(sdw_yt_node *n)
{
    if (!n) return;
    for (int i = 0; i < n->n; i++)
        sdw_yt_free(n->kid[i]);
    free(n->kid);
    free(n->s);
    free(n);
}

static int node_add(sdw_yt_node *parent, sdw_yt_node *kid)
{
    if (parent->n == parent->cap) {
        int cap = parent->cap ? parent->cap * 2 : 8;
        sdw_yt_node **k = realloc(parent->kid, (size_t)cap * sizeof *k);
        if (!k) return -1;
        parent->kid = k;
        parent->cap = cap;
    }
    parent->kid[parent->n++] = kid;
    return 0;
}

/* ---- error collection --------------------------------------------------------------------------- */

void __attribute__((format(printf, 4, 5)))
sdw_yt_error(sdw_yt_ctx *c, int line, int col, const char *fmt, ...)
{
    c->nerr++;
    if (c->nkept == SDW_YT_MAX_ERRORS) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *one = NULL;
    int n = line > 0 ? asprintf(&one, "%s:%d:%d: %s", c->file, line, col, msg)
                     : asprintf(&one, "%s: %s", c->file, msg);
    if (n < 0) one = NULL; /* still counted; the caller's message says how many were not shown */
    c->errs[c->nkept++] = (sdw_yt_error_entry){line, col, one};
}

/* Writes the errors into err in file order, one per line. A line that doesn't fit whole is left out
 * (the first is cut rather than lost) and a last line says how many are not shown. */
void sdw_yt_errors_finish(sdw_yt_ctx *c, char *err, size_t errlen)
{
    /* Insertion sort: stable, so two errors at one position keep the order they were found in. */
    for (int i = 1; i < c->nkept; i++) {
        sdw_yt_error_entry t = c->errs[i];
        int j = i - 1;
        while (j >= 0 &&
               (c->errs[j].line > t.line || (c->errs[j].line == t.line && c->errs[j].col > t.col))) {
            c->errs[j + 1] = c->errs[j];
            j--;
        }
        c->errs[j + 1] = t;
    }
    size_t used = 0;
    int shown = 0;
    const size_t reserve = 48; /* room for the "(N more errors not shown)" line */
    if (err && errlen) err[0] = 0;
    for (int i = 0; i < c->nkept; i++) {
        const char *m = c->errs[i].msg;
        if (!m || !err || !errlen) continue;
        size_t need = strlen(m) + (used ? 1 : 0);
        if (used && used + need + reserve >= errlen) continue;
        snprintf(err + used, errlen - used, "%s%s", used ? "\n" : "", m);
        used += strlen(err + used);
        shown++;
    }
    int hidden = c->nerr - shown;
    if (hidden > 0 && shown > 0 && err) {
        char tail[64];
        snprintf(tail, sizeof tail, "\n(%d more error%s not shown)", hidden, hidden == 1 ? "" : "s");
        if (used + strlen(tail) < errlen) memcpy(err + used, tail, strlen(tail) + 1);
    }
    for (int i = 0; i < c->nkept; i++)
        free(c->errs[i].msg);
    c->nkept = 0;
}

/* ---- parsing: libyaml events -> node tree --------------------------------------------------------- */

/* Line/column of a byte offset, for libyaml reader errors (bad UTF-8), which carry only an offset. */
static void offset_pos(const sdw_yt_ctx *c, size_t off, int *line, int *col)
{
    *line = 1, *col = 1;
    for (size_t i = 0; i < off && i < c->textlen; i++) {
        if (c->text[i] == '\n')
            (*line)++, *col = 1;
        else if (((unsigned char)c->text[i] & 0xC0) != 0x80)
            (*col)++;
    }
}

static void syntax_error(sdw_yt_ctx *c, const yaml_parser_t *p)
{
    int line, col;
    if (p->error == YAML_READER_ERROR) {
        offset_pos(c, p->problem_offset, &line, &col);
        sdw_yt_error(c, line, col, "invalid input: %s", p->problem ? p->problem : "cannot read");
        return;
    }
    if (p->error == YAML_MEMORY_ERROR) {
        sdw_yt_error(c, 0, 0, "out of memory while parsing");
        return;
    }
    line = (int)p->problem_mark.line + 1, col = (int)p->problem_mark.column + 1;
    int cl = (int)p->context_mark.line + 1, cc = (int)p->context_mark.column + 1;
    if (p->context && (cl != line || cc != col))
        sdw_yt_error(c, line, col, "YAML syntax error: %s (%s at line %d, column %d)",
                     p->problem ? p->problem : "invalid YAML", p->context, cl, cc);
    else if (p->context)
        sdw_yt_error(c, line, col, "YAML syntax error: %s (%s)", p->problem ? p->problem : "invalid YAML",
                     p->context);
    else
        sdw_yt_error(c, line, col, "YAML syntax error: %s", p->problem ? p->problem : "invalid YAML");
}

static sdw_yt_node *node_new(sdw_yt_type t, const yaml_mark_t *m)
{
    sdw_yt_node *n = calloc(1, sizeof *n);
    if (n) {
        n->type = t;
        n->line = (int)m->line + 1;
        n->col = (int)m->column + 1;
    }
    return n;
}

/* Builds the tree of the single document in text. Returns 0 (*root NULL for an empty stream) or -1
 * after reporting. Aliases are refused: nothing in the schema needs them and they make bombs possible. */
int sdw_yt_parse(sdw_yt_ctx *c, sdw_yt_node **root)
{
    yaml_parser_t p;
    yaml_event_t ev;
    sdw_yt_node *stack[SDW_YT_MAX_DEPTH];
    int depth = 0, docs = 0, rc = -1, done = 0;
    *root = NULL;
    if (!yaml_parser_initialize(&p)) {
        sdw_yt_error(c, 0, 0, "out of memory");
        return -1;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)c->text, c->textlen);
    while (!done) {
        if (!yaml_parser_parse(&p, &ev)) {
            syntax_error(c, &p);
            goto out;
        }
        sdw_yt_node *nn = NULL;
        int bad = 0;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1) {
                sdw_yt_error(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                             "only one YAML document is allowed in a config file");
                bad = 1;
            }
            break;
        case YAML_ALIAS_EVENT:
            sdw_yt_error(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                         "YAML aliases (*%s) are not supported in the config",
                         (const char *)ev.data.alias.anchor);
            bad = 1;
            break;
        case YAML_SCALAR_EVENT:
            nn = node_new(SDW_YT_SCALAR, &ev.start_mark);
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
            if (depth == SDW_YT_MAX_DEPTH) {
                sdw_yt_error(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                             "nesting too deep");
                bad = 1;
                break;
            }
            nn = node_new(ev.type == YAML_MAPPING_START_EVENT ? SDW_YT_MAP : SDW_YT_SEQ, &ev.start_mark);
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
        if (bad) goto out;
        if (is_node) {
            if (!nn || (nn->type == SDW_YT_SCALAR && !nn->s)) {
                sdw_yt_free(nn);
                sdw_yt_error(c, 0, 0, "out of memory");
                goto out;
            }
            if (depth == 0) {
                *root = nn; /* the document's root: only one, as only one document is allowed */
            } else if (node_add(stack[depth - 1], nn) != 0) {
                sdw_yt_free(nn);
                sdw_yt_error(c, 0, 0, "out of memory");
                goto out;
            }
            if (nn->type != SDW_YT_SCALAR) stack[depth++] = nn;
        }
    }
    rc = 0;
out:
    if (rc != 0) {
        sdw_yt_free(*root);
        *root = NULL;
    }
    yaml_parser_delete(&p);
    return rc;
}

/* ---- typed access --------------------------------------------------------------------------------- */

/* YAML 1.1/1.2 core schema nulls; quoted scalars are always strings. */
int sdw_yt_is_null(const sdw_yt_node *v)
{
    if (!v) return 1;
    if (v->type != SDW_YT_SCALAR || v->quoted) return 0;
    return !v->s[0] || !strcmp(v->s, "~") || !strcmp(v->s, "null") || !strcmp(v->s, "Null") ||
           !strcmp(v->s, "NULL");
}

/* A scalar's text made safe for a one-line message: control characters as \xNN, cut at ~40 bytes. */
const char *sdw_yt_clean(const sdw_yt_node *v, char *buf, size_t len)
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
const char *sdw_yt_show(const sdw_yt_node *v, char *buf, size_t len)
{
    if (v->type == SDW_YT_MAP) return "a mapping";
    if (v->type == SDW_YT_SEQ) return "a list";
    char body[64];
    sdw_yt_clean(v, body, sizeof body);
    snprintf(buf, len, v->quoted ? "string \"%s\"" : "'%s'", body);
    return buf;
}

/* Integer in [lo, hi] from a plain decimal scalar. 0 ok, -1 reported. */
int sdw_yt_get_int(sdw_yt_ctx *c, const sdw_yt_node *v, const char *path, long long lo, long long hi,
                   long long *out)
{
    char sb[80];
    if (v->type != SDW_YT_SCALAR || v->quoted) {
        sdw_yt_error(c, SDW_YT_AT(v), "%s: expected an integer, got %s", path, sdw_yt_show(v, sb, sizeof sb));
        return -1;
    }
    const char *s = v->s;
    size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
    if (!s[i]) {
        sdw_yt_error(c, SDW_YT_AT(v), "%s: expected an integer, got %s", path, sdw_yt_show(v, sb, sizeof sb));
        return -1;
    }
    for (size_t j = i; s[j]; j++)
        if (s[j] < '0' || s[j] > '9') {
            sdw_yt_error(c, SDW_YT_AT(v), "%s: expected an integer, got %s", path,
                         sdw_yt_show(v, sb, sizeof sb));
            return -1;
        }
    errno = 0;
    long long x = strtoll(s, NULL, 10);
    if (errno == ERANGE || x < lo || x > hi) {
        sdw_yt_error(c, SDW_YT_AT(v), "%s: must be between %lld and %lld (got %s)", path, lo, hi, s);
        return -1;
    }
    *out = x;
    return 0;
}

int sdw_yt_get_int32(sdw_yt_ctx *c, const sdw_yt_node *v, const char *path, int lo, int hi, int *out)
{
    long long x;
    if (sdw_yt_get_int(c, v, path, lo, hi, &x) != 0) return -1;
    *out = (int)x;
    return 0;
}

int sdw_yt_get_bool(sdw_yt_ctx *c, const sdw_yt_node *v, const char *path, int *out)
{
    char sb[80];
    if (v->type == SDW_YT_SCALAR && !v->quoted) {
        if (!strcmp(v->s, "true") || !strcmp(v->s, "True") || !strcmp(v->s, "TRUE")) {
            *out = 1;
            return 0;
        }
        if (!strcmp(v->s, "false") || !strcmp(v->s, "False") || !strcmp(v->s, "FALSE")) {
            *out = 0;
            return 0;
        }
    }
    sdw_yt_error(c, SDW_YT_AT(v), "%s: expected true or false, got %s", path, sdw_yt_show(v, sb, sizeof sb));
    return -1;
}

/* Any scalar as text (a plain 8080 is fine where a string is wanted); NULs and maps/lists are not. */
int sdw_yt_get_str(sdw_yt_ctx *c, const sdw_yt_node *v, const char *path, const char **out)
{
    char sb[80];
    if (v->type != SDW_YT_SCALAR) {
        sdw_yt_error(c, SDW_YT_AT(v), "%s: expected a string, got %s", path, sdw_yt_show(v, sb, sizeof sb));
        return -1;
    }
    if (strlen(v->s) != v->slen) {
        sdw_yt_error(c, SDW_YT_AT(v), "%s: must not contain a NUL character", path);
        return -1;
    }
    *out = v->s;
    return 0;
}

/* One of choices (NULL-terminated); *out is its index. */
int sdw_yt_get_enum(sdw_yt_ctx *c, const sdw_yt_node *v, const char *path, const char *const *choices,
                    int *out)
{
    const char *s;
    if (sdw_yt_get_str(c, v, path, &s) != 0) return -1;
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
    sdw_yt_error(c, SDW_YT_AT(v), "%s: must be one of %s (got %s)", path, list,
                 sdw_yt_show(v, sb, sizeof sb));
    return -1;
}

int sdw_yt_set_str(sdw_yt_ctx *c, char **dst, const char *s)
{
    char *d = strdup(s);
    if (!d) {
        sdw_yt_error(c, 0, 0, "out of memory");
        return -1;
    }
    free(*dst);
    *dst = d;
    return 0;
}

/* A mapping's keys checked against the known list: unknown and duplicate keys are reported, and the
 * value node of each known key is returned in vals[] (key nodes in keys[]; absent: NULL). */
void sdw_yt_walk_map(sdw_yt_ctx *c, const sdw_yt_node *m, const char *where, const char *const *known,
                     const sdw_yt_node **keys, const sdw_yt_node **vals)
{
    int nk = 0;
    while (known[nk])
        nk++;
    for (int i = 0; i < nk; i++)
        keys[i] = vals[i] = NULL;
    for (int i = 0; i + 1 < m->n; i += 2) {
        const sdw_yt_node *k = m->kid[i], *v = m->kid[i + 1];
        char sb[80];
        if (k->type != SDW_YT_SCALAR) {
            sdw_yt_error(c, SDW_YT_AT(k), "%s%skeys must be plain names, got %s", where, *where ? ": " : "",
                         sdw_yt_show(k, sb, sizeof sb));
            continue;
        }
        int dup = 0;
        for (int j = 0; j < i && !dup; j += 2) {
            const sdw_yt_node *pk = m->kid[j];
            if (pk->type == SDW_YT_SCALAR && pk->slen == k->slen && !memcmp(pk->s, k->s, k->slen)) {
                sdw_yt_error(c, SDW_YT_AT(k), "duplicate key '%s'%s%s (first defined at line %d, column %d)",
                             sdw_yt_clean(k, sb, sizeof sb), *where ? " in " : "", where, pk->line, pk->col);
                dup = 1;
            }
        }
        if (dup) continue;
        int idx = -1;
        for (int j = 0; j < nk; j++)
            if (!strcmp(k->s, known[j])) idx = j;
        if (idx < 0) {
            char list[256] = "";
            for (int j = 0; j < nk; j++) {
                size_t o = strlen(list);
                snprintf(list + o, sizeof list - o, "%s%s", j ? ", " : "", known[j]);
            }
            sdw_yt_error(c, SDW_YT_AT(k), "unknown key '%s'%s%s; known keys: %s",
                         sdw_yt_clean(k, sb, sizeof sb), *where ? " in " : "", where, list);
            continue;
        }
        keys[idx] = k;
        vals[idx] = v;
    }
}

/* A section that must be a mapping; a null value counts as an empty one (all defaults). 1 = walk it. */
int sdw_yt_want_map(sdw_yt_ctx *c, const sdw_yt_node *v, const char *path)
{
    char sb[80];
    if (sdw_yt_is_null(v)) return 0;
    if (v->type != SDW_YT_MAP) {
        sdw_yt_error(c, SDW_YT_AT(v), "%s: expected a mapping, got %s", path, sdw_yt_show(v, sb, sizeof sb));
        return -1;
    }
    return 1;
}
