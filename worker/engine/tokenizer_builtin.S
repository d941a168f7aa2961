/* tokenizer_builtin.S: CLIP's merges file (data/clip/bpe_simple_vocab_16e6.txt.gz, path in SDE_CLIP_VOCAB_GZ)
 * linked into the engine as is, so a checkpoint without its own tokenizer still loads with no file around. */
        .section .rodata
        .global sde_tok_builtin_gz
        .global sde_tok_builtin_gz_end
        .type sde_tok_builtin_gz, %object
        .balign 16
sde_tok_builtin_gz:
        .incbin SDE_CLIP_VOCAB_GZ
sde_tok_builtin_gz_end:
        .size sde_tok_builtin_gz, sde_tok_builtin_gz_end - sde_tok_builtin_gz
        .section .note.GNU-stack, "", %progbits
