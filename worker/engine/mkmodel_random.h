/* mkmodel_random.h: full-size random-weight checkpoints (SD 1.5, SD 2.1 768-v, SDXL base) and a random SD 1.5
 * LoRA, byte-identical to the files of the mkrandsd specification, for golden tests against other programs.
 */
#ifndef SDE_MKMODEL_RANDOM_H
#define SDE_MKMODEL_RANDOM_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    SDE_RAND_SD15,         /* "sd15-random": SD 1.5 single file, 1143 tensors */
    SDE_RAND_SD21,         /* "sd21-random": SD 2.1 768-v single file, 1240 tensors */
    SDE_RAND_SDXL,         /* "sdxl-random": SDXL base 1.0 single file, 2515 tensors (6.9 GB in F16) */
    SDE_RAND_LORA_SD15,    /* "lora-sd15-random": kohya-format rank-4 LoRA for the SD 1.5 file, 792 tensors */
    SDE_RAND_SD15_INPAINT, /* "sd15-inpaint-random": the SD 1.5 file with a 9-channel conv_in (the
                            * sd-v1-5-inpainting layout); every other tensor equals sd15-random's */
    SDE_RAND_LORA_SDXL,    /* "lora-sdxl-random": kohya-format rank-4 LoRA for the SDXL file (lora_unet_ by
                            * LDM block, lora_te1_, lora_te2_), 2958 tensors */
    SDE_RAND_TAESD,        /* "taesd-random": TAESD in diffusers' AutoencoderTiny layout (encoder.layers.* and
                            * decoder.layers.*, as madebyollin/taesd's diffusion_pytorch_model.safetensors), 134
                            * tensors */
} sde_rand_preset;

/** The preset called name (see sde_rand_preset): 0, or -1 when there is none of that name. */
int sde_rand_preset_parse(const char *name, sde_rand_preset *out);

/** Calls fn once per tensor of preset p in file order, with its name, safetensors dtype ("F16", "F32",
 * "I64"; f32 selects F32 weights) and shape. Returns the tensor count, or -1 when out of memory. */
int sde_mkmodel_random_list(sde_rand_preset p, int f32,
                            void (*fn)(void *ud, const char *name, const char *dtype, int ndim,
                                       const int64_t *shape),
                            void *ud);

/** Writes preset p to path (as PATH.part, renamed when complete): weights drawn from seed, stored as F16
 * (f32 = 0) or F32. threads computes in parallel (0: one per online CPU); the file is streamed, so memory use
 * is a few MB per thread. *bytes (if not NULL) gets the file size. Returns 0, or -1 with err. */
int sde_mkmodel_random(const char *path, sde_rand_preset p, uint64_t seed, int f32, int threads,
                       uint64_t *bytes, char *err, size_t errlen);

#endif
