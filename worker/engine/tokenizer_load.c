/* tokenizer_load.c: where a tokenizer comes from: a merges file (.txt or .txt.gz), a vocab.json with its
 * merges.txt, a folder holding both, or the CLIP merges file linked into the engine (tokenizer_builtin.S). */
#include "tokenizer_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* Largest tokenizer file read (the original merges file is ~1.7 MB unpacked, vocab.json ~1 MB). */
#define TOK_MAX_FILE (64u << 20)

/** bpe_simple_vocab_16e6.txt.gz as shipped in data/clip/, linked in by tokenizer_builtin.S. */
extern const uint8_t sde_tok_builtin_gz[];
/** The byte after the end of sde_tok_builtin_gz. */
extern const uint8_t sde_tok_builtin_gz_end[];

/* Reads a whole file (through zlib, so gzip and plain both work); stops early, once max_lines lines are in,
 * when max_lines > 0. */
static int read_file(const char *path, size_t max_lines, char **buf, size_t *len, char *err, size_t errlen)
{
    *buf = NULL;
    *len = 0;
    struct stat st;
    if (stat(path, &st) != 0) {
        sde_tok_err(err, errlen, "tokenizer %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        sde_tok_err(err, errlen, "tokenizer %s: %s", path, "not a regular file");
        return -1;
    }
    gzFile f = gzopen(path, "rb");
    if (!f) {
        sde_tok_err(err, errlen, "tokenizer %s: %s", path, errno ? strerror(errno) : "cannot open");
        return -1;
    }
    size_t cap = 1 << 20, n = 0, lines = 0;
    char *b = malloc(cap + 1);
    int rc = b ? 0 : -1;
    const char *why = "out of memory";
    while (!rc) {
        if (n == cap) {
            if (cap >= TOK_MAX_FILE) {
                rc = -1;
                why = "larger than 64 MiB, not a tokenizer file";
                break;
            }
            char *nb = realloc(b, cap * 2 + 1);
            if (!nb) {
                rc = -1;
                break;
            }
            b = nb;
            cap *= 2;
        }
        unsigned want = (unsigned)(cap - n < (1u << 20) ? cap - n : (1u << 20));
        int got = gzread(f, b + n, want);
        if (got < 0) {
            int zerr;
            const char *zmsg = gzerror(f, &zerr);
            /* copy now: the message lives in the gzFile */
            sde_tok_err(err, errlen, "tokenizer %s: read failed: %s", path,
                        zerr == Z_ERRNO ? strerror(errno)
                        : zmsg          ? zmsg
                                        : "corrupt data");
            why = NULL;
            rc = -1;
            break;
        }
        if (got == 0) break;
        if (max_lines) {
            for (const char *p = b + n; (p = memchr(p, '\n', (size_t)(b + n + got - p))); p++)
                lines++;
        }
        n += (size_t)got;
        if (max_lines && lines > max_lines) break;
    }
    gzclose(f);
    if (rc) {
        if (why) sde_tok_err(err, errlen, "tokenizer %s: %s", path, why);
        free(b);
        return -1;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return 0;
}

static int has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

static int tok_load_json_files(const char *vocab_path, const char *merges_path, sde_tokenizer **out,
                               char *err, size_t errlen)
{
    char *v = NULL, *m = NULL;
    size_t vl, ml;
    if (read_file(vocab_path, 0, &v, &vl, err, errlen) || read_file(merges_path, 0, &m, &ml, err, errlen)) {
        free(v);
        return -1;
    }
    sde_tokenizer *t = sde_tok_new();
    int rc = t ? sde_tok_build_json(t, v, vl, m, ml, err, errlen, vocab_path) : -1;
    if (!t) sde_tok_err(err, errlen, "tokenizer %s: %s", vocab_path, "out of memory");
    free(v);
    free(m);
    if (rc) {
        sde_tok_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

/* The merges.txt beside a vocab.json path, into out (room for strlen(path) + 16). */
static void merges_beside(const char *path, char *out)
{
    strcpy(out, path);
    char *slash = strrchr(out, '/');
    strcpy(slash ? slash + 1 : out, "merges.txt");
}

/* A tokenizer from CLIP merges text (NUL-terminated at len). */
static int tok_from_merges(const char *txt, size_t len, const char *what, sde_tokenizer **out, char *err,
                           size_t errlen)
{
    sde_tokenizer *t = sde_tok_new();
    if (!t) {
        sde_tok_err(err, errlen, "tokenizer %s: %s", what, "out of memory");
        return -1;
    }
    if (sde_tok_build_clip(t, txt, len, err, errlen, what)) {
        sde_tok_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

int sde_tok_load(const char *path, sde_tokenizer **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!path || !*path) {
        sde_tok_err(err, errlen, "tokenizer %s: %s", "(none)", "no path given");
        return -1;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        sde_tok_err(err, errlen, "tokenizer %s: %s", path, strerror(errno));
        return -1;
    }
    size_t pl = strlen(path);
    char *vp = malloc(pl + 16), *mp = malloc(pl + 16);
    if (!vp || !mp) {
        free(vp);
        free(mp);
        sde_tok_err(err, errlen, "tokenizer %s: %s", path, "out of memory");
        return -1;
    }
    int rc;
    if (S_ISDIR(st.st_mode)) {
        const char *sep = path[pl - 1] == '/' ? "" : "/";
        sprintf(vp, "%s%svocab.json", path, sep);
        sprintf(mp, "%s%smerges.txt", path, sep);
        rc = tok_load_json_files(vp, mp, out, err, errlen);
    } else if (has_suffix(path, ".json")) {
        merges_beside(path, mp);
        rc = tok_load_json_files(path, mp, out, err, errlen);
    } else {
        char *txt;
        size_t len;
        rc = read_file(path, CLIP_MERGES + 1, &txt, &len, err, errlen);
        if (!rc && txt[strspn(txt, " \t\r\n")] == '{') {
            /* a vocab.json under another name: its merges.txt must still sit beside it */
            free(txt);
            merges_beside(path, mp);
            rc = tok_load_json_files(path, mp, out, err, errlen);
        } else if (!rc) {
            rc = tok_from_merges(txt, len, path, out, err, errlen);
            free(txt);
        }
    }
    free(vp);
    free(mp);
    return rc;
}

/* Unpacks the gzip image at gz into a NUL-terminated malloc'd buffer, stopping once more than max_lines lines
 * are in: CLIP reads only the first fifth of its merges file. */
static int gunzip_lines(const uint8_t *gz, size_t gzlen, size_t max_lines, char **buf, size_t *len)
{
    z_stream zs = {0};
    if (gzlen > UINT32_MAX || inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) return -1;
    zs.next_in = (Bytef *)gz;
    zs.avail_in = (uInt)gzlen;
    size_t cap = 1 << 20, n = 0, lines = 0;
    char *b = malloc(cap + 1);
    int zrc = b ? Z_OK : Z_MEM_ERROR;
    while (zrc == Z_OK && lines <= max_lines) {
        if (n == cap) {
            char *nb = cap < TOK_MAX_FILE ? realloc(b, cap * 2 + 1) : NULL;
            if (!nb) {
                zrc = Z_MEM_ERROR;
                break;
            }
            b = nb;
            cap *= 2;
        }
        zs.next_out = (Bytef *)b + n;
        zs.avail_out = (uInt)(cap - n);
        zrc = inflate(&zs, Z_NO_FLUSH);
        size_t got = cap - n - zs.avail_out;
        for (const char *p = b + n; (p = memchr(p, '\n', (size_t)(b + n + got - p))); p++)
            lines++;
        n += got;
    }
    inflateEnd(&zs);
    if (zrc != Z_OK && zrc != Z_STREAM_END) {
        free(b);
        return -1;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return 0;
}

int sde_tok_load_builtin(sde_tokenizer **out, char *err, size_t errlen)
{
    char *txt;
    size_t len;
    *out = NULL;
    if (gunzip_lines(sde_tok_builtin_gz, (size_t)(sde_tok_builtin_gz_end - sde_tok_builtin_gz),
                     CLIP_MERGES + 1, &txt, &len)) {
        sde_tok_err(err, errlen, "tokenizer %s: %s", "(built-in)", "cannot unpack (out of memory?)");
        return -1;
    }
    int rc = tok_from_merges(txt, len, "(built-in)", out, err, errlen);
    free(txt);
    return rc;
}
