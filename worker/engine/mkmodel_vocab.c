/* mkmodel_vocab.c: the byte-level tokenizer a generated (mkmodel) model carries in its metadata, written as
 * vocab.json and merges.txt text; it has the CLIP byte tokens and special tokens but no merges. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

int sde_tok_bytelevel_files(char **vocab_json, size_t *vocab_len, char **merges, size_t *merges_len)
{
    static const char merges_txt[] = "#version: 0.2\n";
    *vocab_json = *merges = NULL;
    uint32_t cp[256];
    uint8_t order[256];
    sde_tok_byte_map(cp, order);
    json_t *v = json_object();
    int rc = v ? 0 : -1;
    /* ids in CLIP's order: the 256 byte tokens, the same with "</w>", then start and end of text */
    for (int k = 0; k < 512 && !rc; k++) {
        char s[8];
        int sl = sde_tok_byte_token(cp[order[k % 256]], k >= 256, s);
        s[sl] = '\0';
        rc = json_object_set_new(v, s, json_integer(k));
    }
    if (!rc) rc = json_object_set_new(v, TOK_BOS_TEXT, json_integer(512));
    if (!rc) rc = json_object_set_new(v, TOK_EOS_TEXT, json_integer(513));
    char *text = rc ? NULL : json_dumps(v, JSON_COMPACT);
    char *m = malloc(sizeof merges_txt);
    json_decref(v);
    if (!text || !m) {
        free(text);
        free(m);
        return -1;
    }
    memcpy(m, merges_txt, sizeof merges_txt);
    *vocab_json = text;
    *vocab_len = strlen(text);
    *merges = m;
    *merges_len = sizeof merges_txt - 1;
    return 0;
}
