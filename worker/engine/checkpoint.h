/* checkpoint.h: a model's tensors by canonical (single-file LDM) name, from a safetensors file or a
 * diffusers folder (whose names are mapped to LDM names), mmap'd, converted to float32 on request. */
#ifndef SDE_CHECKPOINT_H
#define SDE_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

typedef enum {
    SDE_DT_F32 = 0,
    SDE_DT_F16,
    SDE_DT_BF16,
    SDE_DT_F64,
    SDE_DT_I64,
    SDE_DT_I32,
    SDE_DT_I16,
    SDE_DT_I8,
    SDE_DT_U8,
    SDE_DT_BOOL
} sde_dtype;

#define SDE_MAX_DIMS 8

/** One tensor as stored. data points into the mmap'd file. */
typedef struct {
    const char *name; /* canonical LDM name */
    const char *file; /* file it lives in */
    sde_dtype dtype;
    int ndim;
    int64_t shape[SDE_MAX_DIMS];
    const void *data;
    size_t nbytes;
} sde_tensor;

typedef struct sde_ckpt sde_ckpt;

/** Opens a .safetensors file or a diffusers folder (unet/, vae/, text_encoder/, tokenizer/). */
int sde_ckpt_open(const char *path, sde_ckpt **out, char *err, size_t errlen);
/** Ends any edits, unmaps everything and frees converted copies. */
void sde_ckpt_free(sde_ckpt *c);
/** A tensor by canonical name, or NULL. */
const sde_tensor *sde_ckpt_find(const sde_ckpt *c, const char *name);
/** Number of tensors and the i-th one (stable order), for enumeration by prefix. */
int sde_ckpt_count(const sde_ckpt *c);
const sde_tensor *sde_ckpt_at(const sde_ckpt *c, int i);
/** Float32 view of a tensor whose shape must be exactly shape[0..ndim) (trailing 1-dims are ignored on
 * either side, so a Linear [o][i] matches a 1x1 conv [o][i][1][1]). F32 data aligned in the file is
 * returned in place; F16/BF16/F64 are converted once into memory owned by the checkpoint.
 * Returns NULL with err "FILE: tensor NAME: ..." when missing or mismatched. */
const float *sde_ckpt_f32(sde_ckpt *c, const char *name, int ndim, const int64_t *shape, char *err,
                          size_t errlen);
/** The weight handle of a tensor whose shape must be exactly shape[0..ndim) (as sde_ckpt_f32), owned by the
 * checkpoint at one address for its life. Returns NULL with err "FILE: tensor NAME: ..." when missing or
 * mismatched. */
const sde_weight *sde_ckpt_weight(sde_ckpt *c, const char *name, int ndim, const int64_t *shape, char *err,
                                  size_t errlen);
/** Starts one job's LoRA edit of tensor t (one of c's, any float dtype) and returns the values being edited
 * (n elements of type at data; change them only through sde_ckpt_edit_add): every view of t handed out
 * before or during the edit (its weight handle, its float32 view) reads them until sde_ckpt_edit_end(). A
 * tensor only read through its weight handle gets a private copy, F16/BF16 as stored (else float32); one
 * with a float32 view is edited in float32 where the view sees it. The mapped file is never written.
 * Calling it again before the end returns the same values. NULL with err when out of memory or not a
 * float type. */
const sde_weight *sde_ckpt_edit_begin(sde_ckpt *c, const sde_tensor *t, char *err, size_t errlen);
/** Adds delta[0..n) to elements [off, off+n) of t's edited values: each sum is formed in float32 and rounded
 * to nearest, ties to even, to the file's type (F16/BF16; F32 and F64 files keep the float32 sum), as the
 * peer adds into its weights. Returns 0, or -1 with err when t is not being edited or the range is outside
 * it. */
int sde_ckpt_edit_add(sde_ckpt *c, const sde_tensor *t, size_t off, const float *delta, size_t n, char *err,
                      size_t errlen);
/** Ends an edit: every view of t reads the file's values again, exactly (the weight handle points at the
 * mapped data again), and the copy is freed. A no-op when t is not being edited. */
void sde_ckpt_edit_end(sde_ckpt *c, const sde_tensor *t);
/** A __metadata__ string from the (main) file, or NULL. */
const char *sde_ckpt_meta(const sde_ckpt *c, const char *key);
/** Folder holding vocab.json + merges.txt when the checkpoint is a diffusers folder with one, else NULL. */
const char *sde_ckpt_tokenizer_dir(const sde_ckpt *c);
/** "scheduler/scheduler_config.json" prediction_type for diffusers folders ("epsilon", "v_prediction"), else
 * NULL. */
const char *sde_ckpt_prediction_type(const sde_ckpt *c);
/** Path it was opened from. */
const char *sde_ckpt_path(const sde_ckpt *c);
/** Bytes of float32 copies made so far (for memory reports). */
size_t sde_ckpt_converted_bytes(const sde_ckpt *c);
/** AUTOMATIC1111's "Model hash": the first 10 hex digits of the sha256 of the whole file at path (which
 * need not be open), NUL-terminated in out. A directory (diffusers folder) gives "" and returns 0.
 * Returns -1 with err "PATH: ..." when the file cannot be read. */
int sde_ckpt_short_hash(const char *path, char out[11], char *err, size_t errlen);

#endif
