/* tokenizer.h: CLIP byte-level BPE tokenizer (the one SD 1.x/2.x use), from the original merges file
 * (.txt or .txt.gz, or the copy built into the engine), a diffusers vocab.json + merges.txt, or memory. */
#ifndef SDE_TOKENIZER_H
#define SDE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#define SDE_TOK_CONTEXT 77

typedef struct sde_tokenizer sde_tokenizer;

/** path: a bpe_simple_vocab_16e6.txt(.gz) merges file, a vocab.json (merges.txt beside it), or a folder with
 * vocab.json + merges.txt. */
int sde_tok_load(const char *path, sde_tokenizer **out, char *err, size_t errlen);
/** CLIP's own tokenizer from the merges file linked into the engine (data/clip/bpe_simple_vocab_16e6.txt.gz).
 */
int sde_tok_load_builtin(sde_tokenizer **out, char *err, size_t errlen);
/** From memory: vocab.json text and merges.txt text (merges may be "" or just the "#version" line). */
int sde_tok_load_mem(const char *vocab_json, size_t vocab_len, const char *merges, size_t merges_len,
                     sde_tokenizer **out, char *err, size_t errlen);
/** Frees t (NULL is fine). */
void sde_tok_free(sde_tokenizer *t);
/** BPE ids of text, no start/end tokens, no truncation. Writes at most max ids; returns the total count
 * (which may exceed max), or -1 on error. */
int sde_tok_encode(const sde_tokenizer *t, const char *text, int32_t *ids, int max);
/** The 77-token context: start, ids truncated to 75, end, then pad_id to the end. */
void sde_tok_context(const sde_tokenizer *t, const char *text, int32_t pad_id, int32_t out[SDE_TOK_CONTEXT]);
/** Id of <|startoftext|>. */
int32_t sde_tok_bos(const sde_tokenizer *t);
/** Id of <|endoftext|> (also what tokens missing from a vocab.json come out as). */
int32_t sde_tok_eos(const sde_tokenizer *t);
/** Largest token id + 1 (49408 for CLIP). */
int sde_tok_vocab_size(const sde_tokenizer *t);
/** The vocabulary string of id (byte-level form, e.g. "cat</w>"), not NUL-terminated, its length in *len;
 * NULL for an id with no token. A linear search, for tools and tests. */
const char *sde_tok_token(const sde_tokenizer *t, int32_t id, size_t *len);
/** A tokenizer with no merges: 256 byte tokens, 256 byte+"</w>" tokens, then start and end (514 ids).
 * Writes vocab.json and merges.txt text (malloc'd) for embedding in a generated model. Defined in
 * mkmodel_vocab.c, the one user being mkmodel. */
int sde_tok_bytelevel_files(char **vocab_json, size_t *vocab_len, char **merges, size_t *merges_len);

#endif
