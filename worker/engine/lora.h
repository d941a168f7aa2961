/* lora.h: LoRA (kohya/A1111, LoCon, diffusers/PEFT) merged into copies of the weights it touches for one
 * job and removed exactly afterwards (the handles point at the mmap'd checkpoint again). docs/workflows.md.
 */
#ifndef SDE_LORA_H
#define SDE_LORA_H

#include <stddef.h>

#include "checkpoint.h"
#include "sd_engine.h"

/** Most LoRAs one job may name (prompt tags and request list together). */
#define SDE_LORA_MAX 8

/** Removes every <lora:NAME:WEIGHT> (WEIGHT optional, default 1) from prompt into clean (cap bytes) and
 * appends {NAME, WEIGHT} to out[*n] (names point into names, cap bytes). Returns 0, or -1 with err (a bad
 * weight, too many, or no room). */
int sde_lora_parse_prompt(const char *prompt, char *clean, size_t cap, char *names, size_t names_cap,
                          sde_lora_spec *out, int *n, char *err, size_t errlen);

/** Checks a LoRA name: a plain file NAME.safetensors (or NAME itself when it ends so) directly in dir, no
 * '/', no "..". Fills path. Returns 0, or -1 with err. */
int sde_lora_resolve(const char *dir, const char *name, char *path, size_t pathlen, char *err, size_t errlen);

/** The weights one job changed, to put back. */
typedef struct sde_lora_undo sde_lora_undo;

/** Merges the LoRA file at path with weight into copies of the weights it touches, for one job
 * (sde_ckpt_edit_begin: f16/bf16 checkpoints keep their dtype; each sum is formed in float32 and rounded to
 * the stored type, as the peer does). *undo collects what changed (NULL at first). Keys that
 * match no weight are counted in *unused and the first named in warn (may be NULL, wlen bytes).
 * Returns 0, or -1 with err. */
int sde_lora_apply(sde_ckpt *c, const char *path, float weight, sde_lora_undo **undo, int *unused, char *warn,
                   size_t wlen, char *err, size_t errlen);

/** sde_lora_apply() without merging (nothing is converted or changed): counts in *matched the modules that
 * would change a weight of fitting shape, in *unused the keys that would not, the first named in warn. */
int sde_lora_match(sde_ckpt *c, const char *path, int *matched, int *unused, char *warn, size_t wlen,
                   char *err, size_t errlen);

/** Puts every changed weight back to the checkpoint's bytes and frees undo (NULL is fine). */
void sde_lora_restore(sde_ckpt *c, sde_lora_undo *undo);

#endif
