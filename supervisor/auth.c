/* auth.c: the API key table and its checks (see auth.h). Keys are stored only as SHA-256 hashes, so
 * the file leaks nothing usable; a presented key is hashed and compared with every entry. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "auth.h"

typedef struct {
    char name[SDW_AUTH_NAME_MAX + 1];
    unsigned char hash[32];
    int queued; /* unfinished jobs */
} key_entry;

typedef struct {
    sdw_job_sub sub;
    char name[SDW_AUTH_NAME_MAX + 1];
} tracker;

static key_entry *keys;
static int n_keys;
static char *keys_path;
static int max_per_key;

static int name_ok(const char *s, size_t n)
{
    if (n == 0 || n > SDW_AUTH_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-') return 0;
    return 1;
}

static int sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 0;
    return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32 ? 0 : -1;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static key_entry *find(const char *name)
{
    for (int i = 0; name && i < n_keys; i++)
        if (!strcmp(keys[i].name, name)) return &keys[i];
    return NULL;
}

/* Parses the whole file before anything changes, so a bad edit never half-replaces the table. */
static int load_file(const char *path, key_entry **out, int *nout, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    key_entry *v = NULL;
    int n = 0, cap = 0, lineno = 0, rc = 0;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        if (!*p || *p == '#') continue;
        char *name = p;
        while (*p && !isspace((unsigned char)*p))
            p++;
        size_t nl = (size_t)(p - name);
        while (*p == ' ' || *p == '\t')
            p++;
        char *hex = p;
        while (*p && !isspace((unsigned char)*p))
            p++;
        size_t hl = (size_t)(p - hex);
        while (isspace((unsigned char)*p))
            p++;
        if (!name_ok(name, nl) || hl != 64 || *p) {
            snprintf(err, errlen, "%s:%d: expected NAME SHA256HEX (as 'sd-worker hash-key NAME' prints it)",
                     path, lineno);
            rc = -1;
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            key_entry *nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) {
                snprintf(err, errlen, "%s: out of memory", path);
                rc = -1;
                break;
            }
            v = nv;
        }
        key_entry *e = &v[n];
        memset(e, 0, sizeof *e);
        memcpy(e->name, name, nl);
        int bad = 0;
        for (int i = 0; i < 32; i++) {
            int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
            bad |= hi < 0 || lo < 0;
            e->hash[i] = (unsigned char)(hi << 4 | lo);
        }
        for (int i = 0; i < n && !bad; i++)
            if (!strcmp(v[i].name, e->name)) {
                snprintf(err, errlen, "%s:%d: key name '%s' appears twice", path, lineno, e->name);
                rc = -1;
                break;
            }
        if (rc) break;
        if (bad) {
            snprintf(err, errlen, "%s:%d: the hash is not 64 hex digits", path, lineno);
            rc = -1;
            break;
        }
        n++;
    }
    if (!rc && ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        rc = -1;
    }
    fclose(f);
    if (rc) {
        free(v);
        return -1;
    }
    *out = v;
    *nout = n;
    return 0;
}

static int install(const char *path, char *err, size_t errlen)
{
    key_entry *v = NULL;
    int n = 0;
    if (load_file(path, &v, &n, err, errlen) != 0) return -1;
    for (int i = 0; i < n; i++) {
        key_entry *old = find(v[i].name);
        if (old) v[i].queued = old->queued;
    }
    free(keys);
    keys = v;
    n_keys = n;
    return 0;
}

int sdw_auth_init(const char *path, int max_queued, char *err, size_t errlen)
{
    max_per_key = max_queued;
    if (!path) {
        free(keys_path);
        keys_path = NULL;
        return 0;
    }
    char *p = strdup(path);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (install(path, err, errlen) != 0) {
        free(p);
        return -1;
    }
    free(keys_path);
    keys_path = p;
    return 0;
}

int sdw_auth_reload(char *err, size_t errlen)
{
    return keys_path ? install(keys_path, err, errlen) : 0;
}

int sdw_auth_enabled(void)
{
    return keys_path != NULL;
}

int sdw_auth_count(void)
{
    return n_keys;
}

const char *sdw_auth_check(const char *authz, size_t len)
{
    static const char scheme[] = "bearer ";
    if (!authz || len <= sizeof scheme - 1 || strncasecmp(authz, scheme, sizeof scheme - 1)) return NULL;
    const char *key = authz + sizeof scheme - 1;
    size_t kl = len - (sizeof scheme - 1);
    while (kl && *key == ' ')
        key++, kl--;
    while (kl && key[kl - 1] == ' ')
        kl--;
    unsigned char h[32];
    if (!kl || sha256(key, kl, h) != 0) return NULL;
    /* no early exit: the time taken says nothing about which entry, if any, matched */
    int found = -1;
    for (int i = 0; i < n_keys; i++) {
        int eq = CRYPTO_memcmp(h, keys[i].hash, sizeof h) == 0;
        found = eq ? i : found;
    }
    OPENSSL_cleanse(h, sizeof h);
    return found >= 0 ? keys[found].name : NULL;
}

int sdw_auth_hash_line(const char *name, const char *key, size_t keylen, char *line, size_t linelen,
                       char *err, size_t errlen)
{
    if (!name_ok(name, strlen(name))) {
        snprintf(err, errlen, "the key name must be 1 to %d characters from A-Z a-z 0-9 _ . -",
                 SDW_AUTH_NAME_MAX);
        return -1;
    }
    while (keylen && (key[keylen - 1] == '\n' || key[keylen - 1] == '\r'))
        keylen--;
    if (keylen < 16) {
        snprintf(err, errlen, "the key (read from standard input) must be at least 16 characters");
        return -1;
    }
    for (size_t i = 0; i < keylen; i++)
        if ((unsigned char)key[i] <= ' ' || key[i] == 0x7f) {
            snprintf(err, errlen, "the key must not contain spaces or control characters");
            return -1;
        }
    unsigned char h[32];
    if (sha256(key, keylen, h) != 0) {
        snprintf(err, errlen, "SHA-256 failed");
        return -1;
    }
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", h[i]);
    snprintf(line, linelen, "%s %s\n", name, hex);
    return 0;
}

int sdw_auth_may_queue(const char *name)
{
    key_entry *e = find(name);
    return !e || max_per_key <= 0 || e->queued < max_per_key;
}

static void on_tracked(void *ud, sdw_job *job, sdw_job_event ev)
{
    (void)job;
    tracker *t = ud;
    if (ev != SDW_JEV_END && ev != SDW_JEV_GONE) return;
    key_entry *e = find(t->name);
    if (e && e->queued > 0) e->queued--;
    sdw_job_unsubscribe(&t->sub);
    free(t);
}

int sdw_auth_track(const char *name, sdw_job *job)
{
    key_entry *e = find(name);
    if (!e || sdw_job_ended(job)) return 0;
    tracker *t = calloc(1, sizeof *t);
    if (!t) return -1;
    snprintf(t->name, sizeof t->name, "%s", name);
    t->sub.fn = on_tracked;
    t->sub.ud = t;
    sdw_job_subscribe(job, &t->sub);
    e->queued++;
    return 0;
}

int sdw_auth_queued(const char *name)
{
    key_entry *e = find(name);
    return e ? e->queued : 0;
}

void sdw_auth_free(void)
{
    free(keys);
    keys = NULL;
    n_keys = 0;
    free(keys_path);
    keys_path = NULL;
}
