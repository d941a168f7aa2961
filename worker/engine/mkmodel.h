/* mkmodel.h: writes "tiny" random-weight checkpoints: the SD 1.x architecture (LDM single-file names)
 * shrunk so that a 64x64 image takes a fraction of a second, for tests, demos and the serving side. */
#ifndef SDE_MKMODEL_H
#define SDE_MKMODEL_H

#include <stddef.h>
#include <stdint.h>

/** Shape of the tiny preset (the numbers the tests and docs rely on). */
#define SDE_TINY_MODEL_CHANNELS                                                                              \
    32 /* UNet model_channels; channel_mult {1,2}, 1 res block, attention at both levels */
#define SDE_TINY_CONTEXT 64 /* text hidden width = UNet cross-attention context */
#define SDE_TINY_TEXT_LAYERS 2
#define SDE_TINY_TEXT_HEADS 2
#define SDE_TINY_VOCAB 514 /* the byte-level tokenizer: 256 bytes, 256 bytes+"</w>", start, end */
#define SDE_TINY_VAE_CH 32 /* VAE ch, ch_mult {1,1,2,2}, 1 res block, z 4 */

/** Writes the tiny preset to path as one F32 .safetensors (written to PATH.part, then renamed), weights
 * drawn from Philox(seed): the same seed gives a byte-identical file. Embeds the byte-level tokenizer and
 * the SD default alphas_cumprod. Returns 0, or -1 with err naming the path and the failure. */
int sde_mkmodel_tiny(const char *path, uint64_t seed, char *err, size_t errlen);
/** sde_mkmodel_tiny() with a 9-channel conv_in: a tiny inpainting model, for tests (no CLI preset). */
int sde_mkmodel_tiny_inpaint(const char *path, uint64_t seed, char *err, size_t errlen);

#endif
