/* tokenizer.c: CLIP byte-level BPE (OpenAI's SimpleTokenizer / Hugging Face CLIPTokenizer without ftfy):
 * vocab and merge ranks in hash tables, text normalised, split by the CLIP regex (done by hand), then BPE. */
#include "tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "unicode_text.h"

/* CLIP keeps the first 49152-256-2 merges of bpe_simple_vocab_16e6.txt, making a 49408-token vocabulary. */
#define CLIP_MERGES (49152 - 256 - 2)
#define TOK_BOS_TEXT "<|startoftext|>"
#define TOK_EOS_TEXT "<|endoftext|>"
#define TOK_END_OF_WORD "</w>"
/* Ids in a vocab.json must be below this; it bounds memory for hostile files. */
#define TOK_MAX_ID (1 << 24)
/* Largest tokenizer file read (the original merges file is ~1.7 MB unpacked, vocab.json ~1 MB). */
#define TOK_MAX_FILE (64u << 20)

typedef struct {
    uint32_t off; /* into pool */
    uint32_t len;
    int32_t id;
} tok_str;

typedef struct {
    uint64_t key;  /* left id << 32 | right id; 0 marks an empty slot (pair (0,0) is stored with key ~0) */
    int32_t rank;  /* lower merges first */
    int32_t merged; /* symbol id of the joined pair */
} tok_merge;

struct sde_tokenizer {
    char *pool;             /* every interned string, back to back, not NUL-terminated */
    size_t pool_len, pool_cap;
    tok_str *strs;          /* interned strings */
    int n_strs, cap_strs;
    int32_t *str_slots;     /* open addressing over strs indices, -1 empty; size str_mask+1 */
    uint32_t str_mask;
    tok_merge *merges;      /* open addressing by pair key; size merge_mask+1 */
    uint32_t merge_mask;
    int n_merges;
    int32_t byte_sym[256];     /* symbol id of byte b as a word's inner character */
    int32_t byte_end_sym[256]; /* symbol id of byte b + "</w>", a word's last character */
    int32_t bos, eos, unk;
    /* Ids below vocab_size are tokens. Strings that only occur as merge intermediates (absent from a
     * vocab.json) get symbol ids from vocab_size up; they come out as unk, as in Hugging Face's tokenizer. */
    int32_t vocab_size;
    int32_t next_synth;
};

/* A merges-file line "A B", as spans of the loaded text. */
typedef struct {
    const char *a, *b;
    uint32_t alen, blen;
} merge_line;

static void tok_err(char *err, size_t errlen, const char *fmt, const char *what, const char *detail)
{
    if (err && errlen)
        snprintf(err, errlen, fmt, what, detail);
}

/* ---- hash tables ---------------------------------------------------------------------------------------- */

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h ^ (h >> 15);
}

static uint32_t hash_pair(uint64_t k)
{
    k ^= k >> 33; /* murmur3 finaliser: pair keys are small dense integers */
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return (uint32_t)k;
}

static int tok_str_find(const sde_tokenizer *t, const char *s, size_t n)
{
    if (!t->str_slots)
        return -1;
    for (uint32_t i = hash_bytes(s, n) & t->str_mask;; i = (i + 1) & t->str_mask) {
        int32_t e = t->str_slots[i];
        if (e < 0)
            return -1;
        const tok_str *ts = &t->strs[e];
        if (ts->len == n && !memcmp(t->pool + ts->off, s, n))
            return ts->id;
    }
}

static int tok_str_rehash(sde_tokenizer *t, uint32_t nslots)
{
    int32_t *slots = malloc(nslots * sizeof *slots);
    if (!slots)
        return -1;
    memset(slots, 0xff, nslots * sizeof *slots);
    for (int e = 0; e < t->n_strs; e++) {
        uint32_t i = hash_bytes(t->pool + t->strs[e].off, t->strs[e].len) & (nslots - 1);
        while (slots[i] >= 0)
            i = (i + 1) & (nslots - 1);
        slots[i] = e;
    }
    free(t->str_slots);
    t->str_slots = slots;
    t->str_mask = nslots - 1;
    return 0;
}

/* Maps string s to id; a string already present gets the new id (later entries win, as in CLIP's dict). */
static int tok_str_put(sde_tokenizer *t, const char *s, size_t n, int32_t id)
{
    if (n > UINT32_MAX / 2)
        return -1;
    if (!t->str_slots || (uint32_t)(t->n_strs + 1) * 2 > t->str_mask + 1) {
        if (tok_str_rehash(t, t->str_slots ? (t->str_mask + 1) * 2 : 1024))
            return -1;
    }
    uint32_t i = hash_bytes(s, n) & t->str_mask;
    for (; t->str_slots[i] >= 0; i = (i + 1) & t->str_mask) {
        tok_str *ts = &t->strs[t->str_slots[i]];
        if (ts->len == n && !memcmp(t->pool + ts->off, s, n)) {
            ts->id = id;
            return 0;
        }
    }
    if (t->n_strs == t->cap_strs) {
        int cap = t->cap_strs ? t->cap_strs * 2 : 1024;
        tok_str *ns = realloc(t->strs, (size_t)cap * sizeof *ns);
        if (!ns)
            return -1;
        t->strs = ns;
        t->cap_strs = cap;
    }
    if (t->pool_len + n > t->pool_cap) {
        size_t cap = t->pool_cap ? t->pool_cap : 65536;
        while (cap < t->pool_len + n)
            cap *= 2;
        if (cap > UINT32_MAX)
            return -1;
        char *np = realloc(t->pool, cap);
        if (!np)
            return -1;
        t->pool = np;
        t->pool_cap = cap;
    }
    memcpy(t->pool + t->pool_len, s, n);
    t->strs[t->n_strs] = (tok_str){(uint32_t)t->pool_len, (uint32_t)n, id};
    t->pool_len += n;
    t->str_slots[i] = t->n_strs++;
    return 0;
}

/* The id of s, interning it with a fresh non-token symbol id when it is not in the vocabulary. */
static int32_t tok_str_symbol(sde_tokenizer *t, const char *s, size_t n)
{
    int id = tok_str_find(t, s, n);
    if (id >= 0)
        return id;
    if (t->next_synth == INT32_MAX || tok_str_put(t, s, n, t->next_synth))
        return -1;
    return t->next_synth++;
}

static uint64_t merge_key(int32_t a, int32_t b)
{
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    return k ? k : ~0ULL;
}

static const tok_merge *tok_merge_find(const sde_tokenizer *t, int32_t a, int32_t b)
{
    if (!t->merges)
        return NULL;
    uint64_t k = merge_key(a, b);
    for (uint32_t i = hash_pair(k) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        if (t->merges[i].key == k)
            return &t->merges[i];
        if (!t->merges[i].key)
            return NULL;
    }
}

/* Sized once for n merges (load factor <= 1/2). A repeated pair keeps its last rank, as CLIP's dict does. */
static int tok_merge_alloc(sde_tokenizer *t, size_t n)
{
    uint32_t slots = 1024;
    while (slots < n * 2 + 1)
        slots *= 2;
    t->merges = calloc(slots, sizeof *t->merges);
    if (!t->merges)
        return -1;
    t->merge_mask = slots - 1;
    return 0;
}

static void tok_merge_put(sde_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t merged)
{
    uint64_t k = merge_key(a, b);
    uint32_t i = hash_pair(k) & t->merge_mask;
    while (t->merges[i].key && t->merges[i].key != k)
        i = (i + 1) & t->merge_mask;
    if (!t->merges[i].key)
        t->n_merges++;
    t->merges[i] = (tok_merge){k, rank, merged};
}

/* ---- building --------------------------------------------------------------------------------------------- */

/* GPT-2/CLIP bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes map to
 * U+0100.. in byte order. order[k] is the byte of vocabulary id k (the printable ones come first). */
static void bytes_to_unicode(uint32_t cp[256], uint8_t order[256])
{
    int k = 0, extra = 0;
    for (int b = 0; b < 256; b++) {
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) {
            cp[b] = (uint32_t)b;
            order[k++] = (uint8_t)b;
        }
    }
    for (int b = 0; b < 256; b++) {
        if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))) {
            cp[b] = 256u + (uint32_t)extra++;
            order[k++] = (uint8_t)b;
        }
    }
}

/* The vocabulary string of byte b, with "</w>" appended when end_of_word; returns its length (<= 6). */
static int byte_token(uint32_t cp, int end_of_word, char out[8])
{
    int n = sde_uni_encode(cp, (uint8_t *)out);
    if (end_of_word) {
        memcpy(out + n, TOK_END_OF_WORD, 4);
        n += 4;
    }
    return n;
}

static sde_tokenizer *tok_new(void)
{
    sde_tokenizer *t = calloc(1, sizeof *t);
    if (t)
        t->bos = t->eos = t->unk = -1;
    return t;
}

void sde_tok_free(sde_tokenizer *t)
{
    if (!t)
        return;
    free(t->pool);
    free(t->strs);
    free(t->str_slots);
    free(t->merges);
    free(t);
}

/* Splits merges text into "A B" lines: the first line is skipped when it is the "#version" header, blank lines
 * are ignored, at most max lines are taken. *out is malloc'd (NULL when there are none). */
static int parse_merges(const char *txt, size_t len, size_t max, merge_line **out, size_t *count, char *err,
                        size_t errlen, const char *what)
{
    *out = NULL;
    *count = 0;
    size_t cap = 0, lineno = 0;
    merge_line *v = NULL;
    const char *p = txt, *end = txt + len;
    while (p < end && *count < max) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *next = nl ? nl + 1 : end;
        lineno++;
        if (le > p && le[-1] == '\r')
            le--;
        if (lineno == 1 && memmem(p, (size_t)(le - p), "#version", 8)) {
            p = next;
            continue;
        }
        if (le == p) {
            p = next;
            continue;
        }
        const char *sp = memchr(p, ' ', (size_t)(le - p));
        if (!sp || sp == p || sp + 1 == le || memchr(sp + 1, ' ', (size_t)(le - sp - 1)) ||
            memchr(p, '\0', (size_t)(le - p))) {
            char detail[64];
            snprintf(detail, sizeof detail, "%zu", lineno);
            tok_err(err, errlen, "tokenizer %s: merges line %s is not two symbols separated by one space", what,
                    detail);
            free(v);
            return -1;
        }
        if (*count == cap) {
            cap = cap ? cap * 2 : 4096;
            merge_line *nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                free(v);
                tok_err(err, errlen, "tokenizer %s: %s", what, "out of memory");
                return -1;
            }
            v = nv;
        }
        v[(*count)++] = (merge_line){p, sp + 1, (uint32_t)(sp - p), (uint32_t)(le - sp - 1)};
        p = next;
    }
    *out = v;
    return 0;
}

/* Ranks the merges by line order; parts and results that are not tokens get non-token symbol ids. */
static int tok_add_merges(sde_tokenizer *t, const merge_line *m, size_t n)
{
    if (tok_merge_alloc(t, n))
        return -1;
    char buf[512];
    for (size_t r = 0; r < n; r++) {
        char *joined = buf;
        size_t jl = (size_t)m[r].alen + m[r].blen;
        if (jl > sizeof buf && !(joined = malloc(jl)))
            return -1;
        memcpy(joined, m[r].a, m[r].alen);
        memcpy(joined + m[r].alen, m[r].b, m[r].blen);
        int32_t a = tok_str_symbol(t, m[r].a, m[r].alen);
        int32_t b = a < 0 ? -1 : tok_str_symbol(t, m[r].b, m[r].blen);
        int32_t j = b < 0 ? -1 : tok_str_symbol(t, joined, jl);
        if (joined != buf)
            free(joined);
        if (j < 0)
            return -1;
        tok_merge_put(t, a, b, (int32_t)r, j);
    }
    return 0;
}

/* Byte symbols for the word-splitting step; a vocabulary without some byte gets a non-token symbol. */
static int tok_set_byte_symbols(sde_tokenizer *t)
{
    uint32_t cp[256];
    uint8_t order[256];
    bytes_to_unicode(cp, order);
    for (int b = 0; b < 256; b++) {
        char s[8];
        int n = byte_token(cp[b], 0, s);
        t->byte_sym[b] = tok_str_symbol(t, s, (size_t)n);
        n = byte_token(cp[b], 1, s);
        t->byte_end_sym[b] = tok_str_symbol(t, s, (size_t)n);
        if (t->byte_sym[b] < 0 || t->byte_end_sym[b] < 0)
            return -1;
    }
    return 0;
}

/* CLIP's construction from the merges file alone: 256 byte tokens, the same + "</w>", one token per merge,
 * then start and end of text. */
static int tok_build_clip(sde_tokenizer *t, const char *txt, size_t len, char *err, size_t errlen, const char *what)
{
    merge_line *m;
    size_t n;
    if (parse_merges(txt, len, CLIP_MERGES, &m, &n, err, errlen, what))
        return -1;
    if (n == 0) {
        /* a vocabulary of bytes only is what a vocab.json says, never an empty or header-only merges file */
        tok_err(err, errlen, "tokenizer %s: %s", what, "no merges found; not a CLIP merges file");
        return -1;
    }
    uint32_t cp[256];
    uint8_t order[256];
    bytes_to_unicode(cp, order);
    int rc = 0;
    for (int k = 0; k < 512 && !rc; k++) {
        char s[8];
        int sl = byte_token(cp[order[k % 256]], k >= 256, s);
        rc = tok_str_put(t, s, (size_t)sl, k);
    }
    char buf[512];
    for (size_t r = 0; r < n && !rc; r++) {
        size_t jl = (size_t)m[r].alen + m[r].blen;
        char *joined = jl > sizeof buf ? malloc(jl) : buf;
        if (!joined) {
            rc = -1;
            break;
        }
        memcpy(joined, m[r].a, m[r].alen);
        memcpy(joined + m[r].alen, m[r].b, m[r].blen);
        rc = tok_str_put(t, joined, jl, (int32_t)(512 + r));
        if (joined != buf)
            free(joined);
    }
    t->bos = (int32_t)(512 + n);
    t->eos = t->bos + 1;
    t->vocab_size = t->eos + 1;
    t->next_synth = t->vocab_size;
    if (!rc)
        rc = tok_str_put(t, TOK_BOS_TEXT, strlen(TOK_BOS_TEXT), t->bos);
    if (!rc)
        rc = tok_str_put(t, TOK_EOS_TEXT, strlen(TOK_EOS_TEXT), t->eos);
    if (!rc)
        rc = tok_add_merges(t, m, n);
    if (!rc)
        rc = tok_set_byte_symbols(t);
    free(m);
    if (rc)
        tok_err(err, errlen, "tokenizer %s: %s", what, "out of memory");
    t->unk = t->eos;
    return rc;
}

/* A Hugging Face vocab.json (token -> id) with its merges.txt. */
static int tok_build_json(sde_tokenizer *t, const char *vjson, size_t vlen, const char *merges, size_t mlen,
                          char *err, size_t errlen, const char *what)
{
    json_error_t jerr;
    json_t *root = json_loadb(vjson, vlen, 0, &jerr);
    if (!root) {
        char detail[256];
        snprintf(detail, sizeof detail, "line %d: %s", jerr.line, jerr.text);
        tok_err(err, errlen, "tokenizer %s: vocab.json is not valid JSON (%s)", what, detail);
        return -1;
    }
    if (!json_is_object(root) || json_object_size(root) == 0) {
        tok_err(err, errlen, "tokenizer %s: %s", what, "vocab.json is not a non-empty object of token -> id");
        json_decref(root);
        return -1;
    }
    const char *key;
    json_t *val;
    int32_t max_id = -1;
    json_object_foreach(root, key, val) {
        json_int_t id = json_is_integer(val) ? json_integer_value(val) : -1;
        if (id < 0 || id >= TOK_MAX_ID) {
            tok_err(err, errlen, "tokenizer %s: vocab.json entry \"%.80s\" has no id in 0..2^24", what, key);
            json_decref(root);
            return -1;
        }
        /* keys are NUL-free: jansson rejects \u0000 unless asked to allow it */
        if (tok_str_put(t, key, strlen(key), (int32_t)id)) {
            tok_err(err, errlen, "tokenizer %s: %s", what, "out of memory");
            json_decref(root);
            return -1;
        }
        if (id > max_id)
            max_id = (int32_t)id;
    }
    json_decref(root);
    t->vocab_size = max_id + 1;
    t->next_synth = t->vocab_size;
    t->bos = tok_str_find(t, TOK_BOS_TEXT, strlen(TOK_BOS_TEXT));
    t->eos = tok_str_find(t, TOK_EOS_TEXT, strlen(TOK_EOS_TEXT));
    if (t->bos < 0 || t->eos < 0) {
        tok_err(err, errlen, "tokenizer %s: vocab.json lacks %s", what,
                t->bos < 0 ? TOK_BOS_TEXT : TOK_EOS_TEXT);
        return -1;
    }
    t->unk = t->eos; /* CLIPTokenizer's unk_token is <|endoftext|> */
    merge_line *m;
    size_t n;
    if (parse_merges(merges, mlen, SIZE_MAX, &m, &n, err, errlen, what))
        return -1;
    int rc = tok_add_merges(t, m, n);
    free(m);
    if (!rc)
        rc = tok_set_byte_symbols(t);
    if (rc)
        tok_err(err, errlen, "tokenizer %s: %s", what, "out of memory");
    return rc;
}

int sde_tok_load_mem(const char *vocab_json, size_t vocab_len, const char *merges, size_t merges_len,
                     sde_tokenizer **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!vocab_json || (!merges && merges_len)) {
        tok_err(err, errlen, "tokenizer %s: %s", "(memory)", "no vocab.json text");
        return -1;
    }
    sde_tokenizer *t = tok_new();
    if (!t) {
        tok_err(err, errlen, "tokenizer %s: %s", "(memory)", "out of memory");
        return -1;
    }
    if (tok_build_json(t, vocab_json, vocab_len, merges ? merges : "", merges_len, err, errlen, "(memory)")) {
        sde_tok_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

/* ---- files ------------------------------------------------------------------------------------------------ */

/* Reads a whole file (through zlib, so gzip and plain both work); stops early, once max_lines lines are in,
 * when max_lines > 0. */
static int read_file(const char *path, size_t max_lines, char **buf, size_t *len, char *err, size_t errlen)
{
    *buf = NULL;
    *len = 0;
    struct stat st;
    if (stat(path, &st) != 0) {
        tok_err(err, errlen, "tokenizer %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        tok_err(err, errlen, "tokenizer %s: %s", path, "not a regular file");
        return -1;
    }
    gzFile f = gzopen(path, "rb");
    if (!f) {
        tok_err(err, errlen, "tokenizer %s: %s", path, errno ? strerror(errno) : "cannot open");
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
            tok_err(err, errlen, "tokenizer %s: read failed: %s", path,
                    zerr == Z_ERRNO ? strerror(errno) : zmsg ? zmsg : "corrupt data");
            why = NULL;
            rc = -1;
            break;
        }
        if (got == 0)
            break;
        if (max_lines) {
            for (const char *p = b + n; (p = memchr(p, '\n', (size_t)(b + n + got - p))); p++)
                lines++;
        }
        n += (size_t)got;
        if (max_lines && lines > max_lines)
            break;
    }
    gzclose(f);
    if (rc) {
        if (why)
            tok_err(err, errlen, "tokenizer %s: %s", path, why);
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

static int tok_load_json_files(const char *vocab_path, const char *merges_path, sde_tokenizer **out, char *err,
                               size_t errlen)
{
    char *v = NULL, *m = NULL;
    size_t vl, ml;
    if (read_file(vocab_path, 0, &v, &vl, err, errlen) || read_file(merges_path, 0, &m, &ml, err, errlen)) {
        free(v);
        return -1;
    }
    sde_tokenizer *t = tok_new();
    int rc = t ? tok_build_json(t, v, vl, m, ml, err, errlen, vocab_path) : -1;
    if (!t)
        tok_err(err, errlen, "tokenizer %s: %s", vocab_path, "out of memory");
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

int sde_tok_load(const char *path, sde_tokenizer **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!path || !*path) {
        tok_err(err, errlen, "tokenizer %s: %s", "(none)", "no path given");
        return -1;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        tok_err(err, errlen, "tokenizer %s: %s", path, strerror(errno));
        return -1;
    }
    size_t pl = strlen(path);
    char *vp = malloc(pl + 16), *mp = malloc(pl + 16);
    if (!vp || !mp) {
        free(vp);
        free(mp);
        tok_err(err, errlen, "tokenizer %s: %s", path, "out of memory");
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
            sde_tokenizer *t = tok_new();
            rc = t ? tok_build_clip(t, txt, len, err, errlen, path) : -1;
            if (!t)
                tok_err(err, errlen, "tokenizer %s: %s", path, "out of memory");
            free(txt);
            if (rc)
                sde_tok_free(t);
            else
                *out = t;
        }
    }
    free(vp);
    free(mp);
    return rc;
}

/* ---- encoding --------------------------------------------------------------------------------------------- */

/* One possible merge: the pair starting at symbol pos, as it was when queued. */
typedef struct {
    int32_t rank, pos, left, right, merged;
} bpe_cand;

/* Scratch for one encode call, sized for the longest piece (in bytes): symbols as a linked list plus a heap of
 * candidate merges, so a word of n bytes costs O(n log n) instead of the reference loop's O(n^2). */
typedef struct {
    int32_t *sym, *prev, *next; /* symbol ids (-2 once merged into the left neighbour) and list links */
    bpe_cand *heap;             /* min-heap by (rank, pos) */
    int32_t *pending;           /* positions whose right-hand pair changed during the current rank */
    int nheap;
} bpe_work;

static int cand_less(const bpe_cand *a, const bpe_cand *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(bpe_work *w, bpe_cand c)
{
    int i = w->nheap++;
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!cand_less(&c, &w->heap[parent]))
            break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = c;
}

static bpe_cand heap_pop(bpe_work *w)
{
    bpe_cand top = w->heap[0], last = w->heap[--w->nheap];
    int i = 0, n = w->nheap;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && cand_less(&w->heap[c + 1], &w->heap[c]))
            c++;
        if (!cand_less(&w->heap[c], &last))
            break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0)
        w->heap[i] = last;
    return top;
}

/* Queues the pair that starts at pos, if it is a merge. */
static void bpe_queue(const sde_tokenizer *t, bpe_work *w, int32_t pos)
{
    int32_t q = w->next[pos];
    if (q < 0)
        return;
    const tok_merge *m = tok_merge_find(t, w->sym[pos], w->sym[q]);
    if (m)
        heap_push(w, (bpe_cand){m->rank, pos, w->sym[pos], w->sym[q], m->merged});
}

/* BPE of one word's n symbols (w->sym[0..n)): repeatedly take the lowest-ranked pair present and merge every
 * occurrence of it left to right, as CLIP's bpe() does. All queued candidates of one rank are applied before
 * the pairs they create are queued, which keeps that order even for merge lists whose ranks are not
 * topologically sorted. Leaves the result as the list from index 0; returns the symbol count. */
static int tok_bpe(const sde_tokenizer *t, bpe_work *w, int n)
{
    for (int i = 0; i < n; i++) {
        w->prev[i] = i - 1;
        w->next[i] = i + 1 < n ? i + 1 : -1;
    }
    w->nheap = 0;
    for (int i = 0; i + 1 < n; i++)
        bpe_queue(t, w, i);
    int count = n;
    while (w->nheap > 0) {
        int32_t rank = w->heap[0].rank;
        int npend = 0;
        while (w->nheap > 0 && w->heap[0].rank == rank) {
            bpe_cand c = heap_pop(w);
            int32_t p = c.pos, q = w->next[p];
            if (w->sym[p] != c.left || q < 0 || w->sym[q] != c.right)
                continue; /* stale: one side was merged since this pair was queued */
            w->sym[p] = c.merged;
            w->sym[q] = -2;
            w->next[p] = w->next[q];
            if (w->next[q] >= 0)
                w->prev[w->next[q]] = p;
            count--;
            if (w->prev[p] >= 0)
                w->pending[npend++] = w->prev[p];
            w->pending[npend++] = p;
        }
        for (int i = 0; i < npend; i++)
            if (w->sym[w->pending[i]] >= 0)
                bpe_queue(t, w, w->pending[i]);
    }
    return count;
}

static int matches_ascii(const uint32_t *cp, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    if (l > n)
        return 0;
    for (size_t i = 0; i < l; i++)
        if (cp[i] != (uint8_t)lit[i])
            return 0;
    return 1;
}

/* Length of the CLIP contraction ('s 't 're 've 'm 'll 'd) at cp, or 0. */
static size_t contraction_len(const uint32_t *cp, size_t n)
{
    if (n < 2 || cp[0] != '\'')
        return 0;
    uint32_t c = cp[1];
    if (c == 's' || c == 't' || c == 'm' || c == 'd')
        return 2;
    if (n >= 3 && ((c == 'r' && cp[2] == 'e') || (c == 'v' && cp[2] == 'e') || (c == 'l' && cp[2] == 'l')))
        return 3;
    return 0;
}

/* CLIP's whitespace_clean(text).lower(): \s runs to one space, then str.strip(), which also drops U+001C..U+001F
 * (not \s, so they stay inside the text), then lower-casing (Greek capital sigma becomes final sigma at the end
 * of a word, as Python's str.lower does). Writes at most 2 code points per input one; returns the count. */
static int is_strip_space(uint32_t cp)
{
    return cp == ' ' || (cp >= 0x1C && cp <= 0x1F);
}

static size_t normalise(const char *text, size_t len, uint32_t *tmp, uint32_t *out)
{
    size_t n = 0;
    int pending_space = 0;
    for (size_t i = 0; i < len;) {
        int l;
        uint32_t cp = sde_uni_decode((const uint8_t *)text + i, len - i, &l);
        i += (size_t)l;
        if (sde_uni_class(cp) == SDE_UNI_SPACE) {
            pending_space = 1;
            continue;
        }
        if (pending_space && n > 0)
            tmp[n++] = ' ';
        pending_space = 0;
        tmp[n++] = cp;
    }
    size_t start = 0;
    while (start < n && is_strip_space(tmp[start]))
        start++;
    while (n > start && is_strip_space(tmp[n - 1]))
        n--;
    tmp += start;
    n -= start;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t lc[2];
        if (tmp[i] == 0x3A3 && sde_uni_final_sigma(tmp, n, i)) {
            out[m++] = 0x3C2;
            continue;
        }
        int k = sde_uni_lower(tmp[i], lc);
        for (int j = 0; j < k; j++)
            out[m++] = lc[j];
    }
    return m;
}

typedef struct {
    int32_t *ids;
    int max, count;
} tok_sink;

static void sink_put(tok_sink *s, int32_t id)
{
    if (s->count < s->max)
        s->ids[s->count] = id;
    if (s->count < INT_MAX)
        s->count++;
}

/* Byte-level BPE of one pre-tokenized piece. */
static void tok_piece(const sde_tokenizer *t, const uint32_t *cp, size_t n, uint8_t *bytes, bpe_work *w,
                      tok_sink *sink)
{
    int nb = 0;
    for (size_t i = 0; i < n; i++)
        nb += sde_uni_encode(cp[i], bytes + nb);
    for (int i = 0; i < nb; i++)
        w->sym[i] = i + 1 < nb ? t->byte_sym[bytes[i]] : t->byte_end_sym[bytes[i]];
    tok_bpe(t, w, nb);
    for (int32_t i = nb > 0 ? 0 : -1; i >= 0; i = w->next[i])
        sink_put(sink, w->sym[i] < t->vocab_size ? w->sym[i] : t->unk);
}

int sde_tok_encode(const sde_tokenizer *t, const char *text, int32_t *ids, int max)
{
    if (!t || !text || max < 0 || (max > 0 && !ids))
        return -1;
    size_t len = strlen(text);
    if (len > (size_t)INT_MAX / 8)
        return -1;
    /* tmp: decoded text; cp: normalised (lower-casing may turn one code point into two) */
    uint32_t *tmp = malloc((len + 1) * sizeof *tmp), *cp = malloc(2 * (len + 1) * sizeof *cp);
    if (!tmp || !cp) {
        free(tmp);
        free(cp);
        return -1;
    }
    size_t n = normalise(text, len, tmp, cp);
    free(tmp);
    size_t nb = 1;
    for (size_t i = 0; i < n; i++) {
        uint8_t u8[4];
        nb += (size_t)sde_uni_encode(cp[i], u8);
    }
    bpe_work w = {0};
    uint8_t *bytes = malloc(nb);
    w.sym = malloc(nb * sizeof *w.sym);
    w.prev = malloc(nb * sizeof *w.prev);
    w.next = malloc(nb * sizeof *w.next);
    w.pending = malloc(2 * nb * sizeof *w.pending);
    w.heap = malloc(3 * nb * sizeof *w.heap);
    int rc = -1;
    if (nb <= (size_t)INT_MAX / 3 && bytes && w.sym && w.prev && w.next && w.pending && w.heap) {
        tok_sink sink = {ids, max, 0};
        /* The CLIP regex, alternatives in its order, at each position that is not whitespace:
         * <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+ */
        for (size_t i = 0; i < n;) {
            int c = sde_uni_class(cp[i]);
            size_t k;
            if (c == SDE_UNI_SPACE) {
                i++;
                continue;
            }
            if (matches_ascii(cp + i, n - i, TOK_BOS_TEXT)) {
                sink_put(&sink, t->bos);
                i += strlen(TOK_BOS_TEXT);
                continue;
            }
            if (matches_ascii(cp + i, n - i, TOK_EOS_TEXT)) {
                sink_put(&sink, t->eos);
                i += strlen(TOK_EOS_TEXT);
                continue;
            }
            if ((k = contraction_len(cp + i, n - i)) == 0) {
                k = 1;
                if (c == SDE_UNI_LETTER || c == SDE_UNI_OTHER)
                    while (i + k < n && sde_uni_class(cp[i + k]) == c)
                        k++;
            }
            tok_piece(t, cp + i, k, bytes, &w, &sink);
            i += k;
        }
        rc = sink.count;
    }
    free(cp);
    free(bytes);
    free(w.sym);
    free(w.prev);
    free(w.next);
    free(w.pending);
    free(w.heap);
    return rc;
}

void sde_tok_context(const sde_tokenizer *t, const char *text, int32_t pad_id, int32_t out[SDE_TOK_CONTEXT])
{
    int32_t ids[SDE_TOK_CONTEXT - 2];
    int n = sde_tok_encode(t, text, ids, SDE_TOK_CONTEXT - 2);
    if (n < 0)
        n = 0;
    if (n > SDE_TOK_CONTEXT - 2)
        n = SDE_TOK_CONTEXT - 2;
    int k = 0;
    out[k++] = t ? t->bos : pad_id;
    for (int i = 0; i < n; i++)
        out[k++] = ids[i];
    out[k++] = t ? t->eos : pad_id;
    while (k < SDE_TOK_CONTEXT)
        out[k++] = pad_id;
}

int32_t sde_tok_bos(const sde_tokenizer *t)
{
    return t->bos;
}

int32_t sde_tok_eos(const sde_tokenizer *t)
{
    return t->eos;
}

int sde_tok_vocab_size(const sde_tokenizer *t)
{
    return t->vocab_size;
}

const char *sde_tok_token(const sde_tokenizer *t, int32_t id, size_t *len)
{
    if (!t || id < 0 || id >= t->vocab_size)
        return NULL;
    /* Linear: meant for tools and tests, not for the encode path. */
    for (int e = 0; e < t->n_strs; e++) {
        if (t->strs[e].id == id) {
            if (len)
                *len = t->strs[e].len;
            return t->pool + t->strs[e].off;
        }
    }
    return NULL;
}

/* ---- the byte-level tokenizer of generated models ---------------------------------------------------------- */

static void json_put_token(char *out, size_t *n, const char *s, size_t len)
{
    out[(*n)++] = '"';
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"' || s[i] == '\\')
            out[(*n)++] = '\\';
        out[(*n)++] = s[i];
    }
    out[(*n)++] = '"';
}

int sde_tok_bytelevel_files(char **vocab_json, size_t *vocab_len, char **merges, size_t *merges_len)
{
    static const char merges_txt[] = "#version: 0.2\n";
    *vocab_json = *merges = NULL;
    /* 512 tokens of at most 6 bytes plus escapes, quotes, ids and separators */
    size_t cap = 512 * 24 + 128, n = 0;
    char *v = malloc(cap), *m = malloc(sizeof merges_txt);
    if (!v || !m) {
        free(v);
        free(m);
        return -1;
    }
    uint32_t cp[256];
    uint8_t order[256];
    bytes_to_unicode(cp, order);
    v[n++] = '{';
    for (int k = 0; k < 512; k++) {
        char s[8];
        int sl = byte_token(cp[order[k % 256]], k >= 256, s);
        json_put_token(v, &n, s, (size_t)sl);
        n += (size_t)sprintf(v + n, ":%d,", k);
    }
    n += (size_t)sprintf(v + n, "\"%s\":512,\"%s\":513}", TOK_BOS_TEXT, TOK_EOS_TEXT);
    memcpy(m, merges_txt, sizeof merges_txt);
    *vocab_json = v;
    *vocab_len = n;
    *merges = m;
    *merges_len = sizeof merges_txt - 1;
    return 0;
}
