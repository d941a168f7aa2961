/* tokenizer_internal.h: the tokenizer's tables, shared by its loading half (tokenizer_vocab.c,
 * tokenizer_load.c) and its encoding half (tokenizer_encode.c); nothing outside the tokenizer includes it. */
#ifndef SDE_TOKENIZER_INTERNAL_H
#define SDE_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* CLIP keeps the first 49152-256-2 merges of bpe_simple_vocab_16e6.txt, making a 49408-token vocabulary. */
#define CLIP_MERGES (49152 - 256 - 2)
#define TOK_BOS_TEXT "<|startoftext|>"
#define TOK_EOS_TEXT "<|endoftext|>"
#define TOK_END_OF_WORD "</w>"

typedef struct {
    uint32_t off; /* into pool */
    uint32_t len;
    int32_t id;
} tok_str;

typedef struct {
    uint64_t key;   /* left id << 32 | right id; 0 marks an empty slot (pair (0,0) is stored with key ~0) */
    int32_t rank;   /* lower merges first */
    int32_t merged; /* symbol id of the joined pair */
} tok_merge;

struct sde_tokenizer {
    char *pool; /* every interned string, back to back, not NUL-terminated */
    size_t pool_len, pool_cap;
    tok_str *strs; /* interned strings */
    int n_strs, cap_strs;
    int32_t *str_slots; /* open addressing over strs indices, -1 empty; size str_mask+1 */
    uint32_t str_mask;
    tok_merge *merges; /* open addressing by pair key; size merge_mask+1 */
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

/** snprintf(err, errlen, fmt, what, detail) when err is given: fmt has two %s, the source and the detail. */
void sde_tok_err(char *err, size_t errlen, const char *fmt, const char *what, const char *detail);
/** An empty tokenizer (NULL when out of memory), for one of the builders below. */
sde_tokenizer *sde_tok_new(void);
/** Fills t the way CLIP does from its merges file text alone (256 byte tokens, the same + "</w>", one token
 * per merge, start, end). what names the source in messages. Returns 0 or -1 with err filled. */
int sde_tok_build_clip(sde_tokenizer *t, const char *txt, size_t len, char *err, size_t errlen,
                       const char *what);
/** Fills t from a Hugging Face vocab.json text (token -> id) and its merges.txt text. Returns 0 or -1. */
int sde_tok_build_json(sde_tokenizer *t, const char *vjson, size_t vlen, const char *merges, size_t mlen,
                       char *err, size_t errlen, const char *what);
/** The merge of symbols a and b, or NULL when they do not merge. */
const tok_merge *sde_tok_merge_find(const sde_tokenizer *t, int32_t a, int32_t b);
/** GPT-2/CLIP bytes_to_unicode: cp[b] is the code point standing for byte b, order[k] the byte of id k. */
void sde_tok_byte_map(uint32_t cp[256], uint8_t order[256]);
/** The vocabulary string of a byte's code point cp, with "</w>" when end_of_word; returns its length (<= 7).
 */
int sde_tok_byte_token(uint32_t cp, int end_of_word, char out[8]);

#endif
