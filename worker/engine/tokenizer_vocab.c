/* tokenizer_vocab.c: the tokenizer's vocabulary and merge ranks in hash tables, built from CLIP's merges text
 * or from a Hugging Face vocab.json + merges.txt, and the lookups the encoder and tools use. */
#include "tokenizer_internal.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unicode_text.h"

/* Ids in a vocab.json must be below this; it bounds memory for hostile files. */
#define TOK_MAX_ID (1 << 24)

/* A merges-file line "A B", as spans of the loaded text. */
typedef struct {
    const char *a, *b;
    uint32_t alen, blen;
} merge_line;

void sde_tok_err(char *err, size_t errlen, const char *fmt, const char *what, const char *detail)
{
    if (err && errlen) snprintf(err, errlen, fmt, what, detail);
}

/* ---- hash tables ----------------------------------------------------------------------------------------
 */

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
    if (!t->str_slots) return -1;
    for (uint32_t i = hash_bytes(s, n) & t->str_mask;; i = (i + 1) & t->str_mask) {
        int32_t e = t->str_slots[i];
        if (e < 0) return -1;
        const tok_str *ts = &t->strs[e];
        if (ts->len == n && !memcmp(t->pool + ts->off, s, n)) return ts->id;
    }
}

static int tok_str_rehash(sde_tokenizer *t, uint32_t nslots)
{
    int32_t *slots = malloc(nslots * sizeof *slots);
    if (!slots) return -1;
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
    if (n > UINT32_MAX / 2) return -1;
    if (!t->str_slots || (uint32_t)(t->n_strs + 1) * 2 > t->str_mask + 1) {
        if (tok_str_rehash(t, t->str_slots ? (t->str_mask + 1) * 2 : 1024)) return -1;
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
        if (!ns) return -1;
        t->strs = ns;
        t->cap_strs = cap;
    }
    if (t->pool_len + n > t->pool_cap) {
        size_t cap = t->pool_cap ? t->pool_cap : 65536;
        while (cap < t->pool_len + n)
            cap *= 2;
        if (cap > UINT32_MAX) return -1;
        char *np = realloc(t->pool, cap);
        if (!np) return -1;
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
    if (id >= 0) return id;
    if (t->next_synth == INT32_MAX || tok_str_put(t, s, n, t->next_synth)) return -1;
    return t->next_synth++;
}

static uint64_t merge_key(int32_t a, int32_t b)
{
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    return k ? k : ~0ULL;
}

const tok_merge *sde_tok_merge_find(const sde_tokenizer *t, int32_t a, int32_t b)
{
    if (!t->merges) return NULL;
    uint64_t k = merge_key(a, b);
    for (uint32_t i = hash_pair(k) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        if (t->merges[i].key == k) return &t->merges[i];
        if (!t->merges[i].key) return NULL;
    }
}

/* Sized once for n merges (load factor <= 1/2). A repeated pair keeps its last rank, as CLIP's dict does. */
static int tok_merge_alloc(sde_tokenizer *t, size_t n)
{
    uint32_t slots = 1024;
    while (slots < n * 2 + 1)
        slots *= 2;
    t->merges = calloc(slots, sizeof *t->merges);
    if (!t->merges) return -1;
    t->merge_mask = slots - 1;
    return 0;
}

static void tok_merge_put(sde_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t merged)
{
    uint64_t k = merge_key(a, b);
    uint32_t i = hash_pair(k) & t->merge_mask;
    while (t->merges[i].key && t->merges[i].key != k)
        i = (i + 1) & t->merge_mask;
    if (!t->merges[i].key) t->n_merges++;
    t->merges[i] = (tok_merge){k, rank, merged};
}

/* ---- building ---------------------------------------------------------------------------------------------
 */

/* GPT-2/CLIP sde_tok_byte_map: printable Latin-1 bytes stand for themselves, the other 68 bytes map to
 * U+0100.. in byte order. order[k] is the byte of vocabulary id k (the printable ones come first). */
void sde_tok_byte_map(uint32_t cp[256], uint8_t order[256])
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
int sde_tok_byte_token(uint32_t cp, int end_of_word, char out[8])
{
    int n = sde_uni_encode(cp, (uint8_t *)out);
    if (end_of_word) {
        memcpy(out + n, TOK_END_OF_WORD, 4);
        n += 4;
    }
    return n;
}

sde_tokenizer *sde_tok_new(void)
{
    sde_tokenizer *t = calloc(1, sizeof *t);
    if (t) t->bos = t->eos = t->unk = -1;
    return t;
}

void sde_tok_free(sde_tokenizer *t)
{
    if (!t) return;
    free(t->pool);
    free(t->strs);
    free(t->str_slots);
    free(t->merges);
    free(t);
}

/* Splits merges text into "A B" lines: the first line is skipped when it is the "#version" header, blank
 * lines are ignored, at most max lines are taken. *out is malloc'd (NULL when there are none). */
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
        if (le > p && le[-1] == '\r') le--;
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
            sde_tok_err(err, errlen, "tokenizer %s: merges line %s is not two symbols separated by one space",
                        what, detail);
            free(v);
            return -1;
        }
        if (*count == cap) {
            cap = cap ? cap * 2 : 4096;
            merge_line *nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                free(v);
                sde_tok_err(err, errlen, "tokenizer %s: %s", what, "out of memory");
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
    if (tok_merge_alloc(t, n)) return -1;
    char buf[512];
    for (size_t r = 0; r < n; r++) {
        char *joined = buf;
        size_t jl = (size_t)m[r].alen + m[r].blen;
        if (jl > sizeof buf && !(joined = malloc(jl))) return -1;
        memcpy(joined, m[r].a, m[r].alen);
        memcpy(joined + m[r].alen, m[r].b, m[r].blen);
        int32_t a = tok_str_symbol(t, m[r].a, m[r].alen);
        int32_t b = a < 0 ? -1 : tok_str_symbol(t, m[r].b, m[r].blen);
        int32_t j = b < 0 ? -1 : tok_str_symbol(t, joined, jl);
        if (joined != buf) free(joined);
        if (j < 0) return -1;
        tok_merge_put(t, a, b, (int32_t)r, j);
    }
    return 0;
}

/* Byte symbols for the word-splitting step; a vocabulary without some byte gets a non-token symbol. */
static int tok_set_byte_symbols(sde_tokenizer *t)
{
    uint32_t cp[256];
    uint8_t order[256];
    sde_tok_byte_map(cp, order);
    for (int b = 0; b < 256; b++) {
        char s[8];
        int n = sde_tok_byte_token(cp[b], 0, s);
        t->byte_sym[b] = tok_str_symbol(t, s, (size_t)n);
        n = sde_tok_byte_token(cp[b], 1, s);
        t->byte_end_sym[b] = tok_str_symbol(t, s, (size_t)n);
        if (t->byte_sym[b] < 0 || t->byte_end_sym[b] < 0) return -1;
    }
    return 0;
}

/* CLIP's construction from the merges file alone: 256 byte tokens, the same + "</w>", one token per merge,
 * then start and end of text. */
int sde_tok_build_clip(sde_tokenizer *t, const char *txt, size_t len, char *err, size_t errlen,
                       const char *what)
{
    merge_line *m;
    size_t n;
    if (parse_merges(txt, len, CLIP_MERGES, &m, &n, err, errlen, what)) return -1;
    if (n == 0) {
        /* a vocabulary of bytes only is what a vocab.json says, never an empty or header-only merges file */
        sde_tok_err(err, errlen, "tokenizer %s: %s", what, "no merges found; not a CLIP merges file");
        return -1;
    }
    uint32_t cp[256];
    uint8_t order[256];
    sde_tok_byte_map(cp, order);
    int rc = 0;
    for (int k = 0; k < 512 && !rc; k++) {
        char s[8];
        int sl = sde_tok_byte_token(cp[order[k % 256]], k >= 256, s);
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
        if (joined != buf) free(joined);
    }
    t->bos = (int32_t)(512 + n);
    t->eos = t->bos + 1;
    t->vocab_size = t->eos + 1;
    t->next_synth = t->vocab_size;
    if (!rc) rc = tok_str_put(t, TOK_BOS_TEXT, strlen(TOK_BOS_TEXT), t->bos);
    if (!rc) rc = tok_str_put(t, TOK_EOS_TEXT, strlen(TOK_EOS_TEXT), t->eos);
    if (!rc) rc = tok_add_merges(t, m, n);
    if (!rc) rc = tok_set_byte_symbols(t);
    free(m);
    if (rc) sde_tok_err(err, errlen, "tokenizer %s: %s", what, "out of memory");
    t->unk = t->eos;
    return rc;
}

/* A Hugging Face vocab.json (token -> id) with its merges.txt. */
int sde_tok_build_json(sde_tokenizer *t, const char *vjson, size_t vlen, const char *merges, size_t mlen,
                       char *err, size_t errlen, const char *what)
{
    json_error_t jerr;
    json_t *root = json_loadb(vjson, vlen, 0, &jerr);
    if (!root) {
        char detail[256];
        snprintf(detail, sizeof detail, "line %d: %s", jerr.line, jerr.text);
        sde_tok_err(err, errlen, "tokenizer %s: vocab.json is not valid JSON (%s)", what, detail);
        return -1;
    }
    if (!json_is_object(root) || json_object_size(root) == 0) {
        sde_tok_err(err, errlen, "tokenizer %s: %s", what,
                    "vocab.json is not a non-empty object of token -> id");
        json_decref(root);
        return -1;
    }
    const char *key;
    json_t *val;
    int32_t max_id = -1;
    json_object_foreach(root, key, val)
    {
        json_int_t id = json_is_integer(val) ? json_integer_value(val) : -1;
        if (id < 0 || id >= TOK_MAX_ID) {
            sde_tok_err(err, errlen, "tokenizer %s: vocab.json entry \"%.80s\" has no id in 0..2^24", what,
                        key);
            json_decref(root);
            return -1;
        }
        /* keys are NUL-free: jansson rejects \u0000 unless asked to allow it */
        if (tok_str_put(t, key, strlen(key), (int32_t)id)) {
            sde_tok_err(err, errlen, "tokenizer %s: %s", what, "out of memory");
            json_decref(root);
            return -1;
        }
        if (id > max_id) max_id = (int32_t)id;
    }
    json_decref(root);
    t->vocab_size = max_id + 1;
    t->next_synth = t->vocab_size;
    t->bos = tok_str_find(t, TOK_BOS_TEXT, strlen(TOK_BOS_TEXT));
    t->eos = tok_str_find(t, TOK_EOS_TEXT, strlen(TOK_EOS_TEXT));
    if (t->bos < 0 || t->eos < 0) {
        sde_tok_err(err, errlen, "tokenizer %s: vocab.json lacks %s", what,
                    t->bos < 0 ? TOK_BOS_TEXT : TOK_EOS_TEXT);
        return -1;
    }
    t->unk = t->eos; /* CLIPTokenizer's unk_token is <|endoftext|> */
    merge_line *m;
    size_t n;
    if (parse_merges(merges, mlen, SIZE_MAX, &m, &n, err, errlen, what)) return -1;
    int rc = tok_add_merges(t, m, n);
    free(m);
    if (!rc) rc = tok_set_byte_symbols(t);
    if (rc) sde_tok_err(err, errlen, "tokenizer %s: %s", what, "out of memory");
    return rc;
}

int sde_tok_load_mem(const char *vocab_json, size_t vocab_len, const char *merges, size_t merges_len,
                     sde_tokenizer **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!vocab_json || (!merges && merges_len)) {
        sde_tok_err(err, errlen, "tokenizer %s: %s", "(memory)", "no vocab.json text");
        return -1;
    }
    sde_tokenizer *t = sde_tok_new();
    if (!t) {
        sde_tok_err(err, errlen, "tokenizer %s: %s", "(memory)", "out of memory");
        return -1;
    }
    if (sde_tok_build_json(t, vocab_json, vocab_len, merges ? merges : "", merges_len, err, errlen,
                           "(memory)")) {
        sde_tok_free(t);
        return -1;
    }
    *out = t;
    return 0;
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
    if (!t || id < 0 || id >= t->vocab_size) return NULL;
    /* Linear: meant for tools and tests, not for the encode path. */
    for (int e = 0; e < t->n_strs; e++) {
        if (t->strs[e].id == id) {
            if (len) *len = t->strs[e].len;
            return t->pool + t->strs[e].off;
        }
    }
    return NULL;
}
