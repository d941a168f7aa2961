/* tokenizer_encode.c: text to CLIP ids: Unicode clean-up (NFC, whitespace, lower case), the CLIP
 * pre-tokenizer regex done by hand, then byte-level BPE with a heap of candidate merges. */
#include "tokenizer_internal.h"

#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "unicode_text.h"

/* One possible merge: the pair starting at symbol pos, as it was when queued. */
typedef struct {
    int32_t rank, pos, left, right, merged;
} bpe_cand;

/* Scratch for one encode call, sized for the longest piece (in bytes): symbols as a linked list plus a heap
 * of candidate merges, so a word of n bytes costs O(n log n) instead of the reference loop's O(n^2). */
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
        if (!cand_less(&c, &w->heap[parent])) break;
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
        if (c >= n) break;
        if (c + 1 < n && cand_less(&w->heap[c + 1], &w->heap[c])) c++;
        if (!cand_less(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

/* Queues the pair that starts at pos, if it is a merge. */
static void bpe_queue(const sde_tokenizer *t, bpe_work *w, int32_t pos)
{
    int32_t q = w->next[pos];
    if (q < 0) return;
    const tok_merge *m = sde_tok_merge_find(t, w->sym[pos], w->sym[q]);
    if (m) heap_push(w, (bpe_cand){m->rank, pos, w->sym[pos], w->sym[q], m->merged});
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
            if (w->next[q] >= 0) w->prev[w->next[q]] = p;
            count--;
            if (w->prev[p] >= 0) w->pending[npend++] = w->prev[p];
            w->pending[npend++] = p;
        }
        for (int i = 0; i < npend; i++)
            if (w->sym[w->pending[i]] >= 0) bpe_queue(t, w, w->pending[i]);
    }
    return count;
}

static int matches_ascii(const uint32_t *cp, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    if (l > n) return 0;
    for (size_t i = 0; i < l; i++)
        if (cp[i] != (uint8_t)lit[i]) return 0;
    return 1;
}

/* Length of the CLIP contraction ('s 't 're 've 'm 'll 'd) at cp, or 0. */
static size_t contraction_len(const uint32_t *cp, size_t n)
{
    if (n < 2 || cp[0] != '\'') return 0;
    uint32_t c = cp[1];
    if (c == 's' || c == 't' || c == 'm' || c == 'd') return 2;
    if (n >= 3 && ((c == 'r' && cp[2] == 'e') || (c == 'v' && cp[2] == 'e') || (c == 'l' && cp[2] == 'l')))
        return 3;
    return 0;
}

/* Python's str.strip() also drops U+001C..U+001F, which are not \s and so stay inside the text. */
static int is_strip_space(uint32_t cp)
{
    return cp == ' ' || (cp >= 0x1C && cp <= 0x1F);
}

/* Hugging Face CLIPTokenizer's normaliser: NFC, \s runs to one space, strip, then lower-casing (Greek capital
 * sigma becomes final sigma at the end of a word, as Python's str.lower does). *out is malloc'd; returns its
 * length, or -1 when out of memory. */
static ptrdiff_t normalise(const char *text, size_t len, uint32_t **out)
{
    uint32_t *tmp;
    size_t nd, n = 0;
    *out = NULL;
    if (sde_uni_decode_nfc(text, len, &tmp, &nd)) return -1;
    int pending_space = 0;
    for (size_t i = 0; i < nd; i++) {
        if (sde_uni_class(tmp[i]) == SDE_UNI_SPACE) {
            pending_space = 1;
            continue;
        }
        if (pending_space && n > 0) tmp[n++] = ' ';
        pending_space = 0;
        tmp[n++] = tmp[i];
    }
    size_t start = 0;
    while (start < n && is_strip_space(tmp[start]))
        start++;
    while (n > start && is_strip_space(tmp[n - 1]))
        n--;
    /* lower-casing turns at most one code point into two */
    uint32_t *lo = malloc((2 * (n - start) + 1) * sizeof *lo);
    if (!lo) {
        free(tmp);
        return -1;
    }
    const uint32_t *src = tmp + start;
    n -= start;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t lc[2];
        if (src[i] == 0x3A3 && sde_uni_final_sigma(src, n, i)) {
            lo[m++] = 0x3C2;
            continue;
        }
        int k = sde_uni_lower(src[i], lc);
        for (int j = 0; j < k; j++)
            lo[m++] = lc[j];
    }
    free(tmp);
    *out = lo;
    return (ptrdiff_t)m;
}

typedef struct {
    int32_t *ids;
    int max, count;
} tok_sink;

static void sink_put(tok_sink *s, int32_t id)
{
    if (s->count < s->max) s->ids[s->count] = id;
    if (s->count < INT_MAX) s->count++;
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
    if (!t || !text || max < 0 || (max > 0 && !ids)) return -1;
    size_t len = strlen(text);
    if (len > (size_t)INT_MAX / 8) return -1;
    uint32_t *cp;
    ptrdiff_t nn = normalise(text, len, &cp);
    if (nn < 0) return -1;
    size_t n = (size_t)nn;
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
    if (n < 0) n = 0;
    if (n > SDE_TOK_CONTEXT - 2) n = SDE_TOK_CONTEXT - 2;
    int k = 0;
    out[k++] = t ? t->bos : pad_id;
    for (int i = 0; i < n; i++)
        out[k++] = ids[i];
    out[k++] = t ? t->eos : pad_id;
    while (k < SDE_TOK_CONTEXT)
        out[k++] = pad_id;
}
