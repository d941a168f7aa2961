/* safetensors.h: strict parser for the safetensors format (8-byte header length, JSON header, data
 * block), from an mmap'd file or a caller's buffer. Every check is bounds-checked; nothing is trusted. */
#ifndef SDE_SAFETENSORS_H
#define SDE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"

/** Largest JSON header accepted (the format's own reference reader uses the same 100 MB cap). */
#define SDE_ST_MAX_HEADER (100u * 1000u * 1000u)

/** One tensor as described by the header. data points into the file's data block. */
typedef struct {
    char *name; /* as stored in the header (owned) */
    sde_dtype dtype;
    int ndim; /* 0..SDE_MAX_DIMS; 0 = scalar */
    int64_t shape[SDE_MAX_DIMS];
    uint64_t numel;      /* product of shape (1 for a scalar) */
    uint64_t begin, end; /* data_offsets, relative to the data block */
    const uint8_t *data; /* data block + begin */
    size_t nbytes;       /* end - begin == numel * dtype size */
} sde_st_tensor;

/** A parsed file: tensors in header order, __metadata__ pairs, the data block. */
typedef struct {
    char *label; /* path (or caller's label) used in every error message */
    int n;       /* number of tensors */
    sde_st_tensor *t;
    int n_meta;
    char **meta_keys, **meta_vals;
    const uint8_t *data; /* start of the data block */
    size_t data_len;
    void *map; /* the whole file when opened from a path, else NULL */
    size_t map_len;
} sde_st_file;

/** Bytes per element of a dtype, 0 for an invalid value. */
size_t sde_st_dtype_size(sde_dtype dt);
/** "F16", "BF16", ... ("?" for an invalid value). */
const char *sde_st_dtype_name(sde_dtype dt);
/** Opens and mmaps path read-only (MAP_PRIVATE) and parses it. Rejects pickle checkpoints (.ckpt/.pt/.bin,
 * zip or pickle magic) with "only safetensors is supported". Returns 0, or -1 with err "PATH: ...". */
int sde_st_open(const char *path, sde_st_file **out, char *err, size_t errlen);
/** Parses a safetensors image held by the caller (buf must outlive the result; it is not copied).
 * label names the source in error messages. Returns 0, or -1 with err "LABEL: ...". */
int sde_st_parse(const char *label, const void *buf, size_t len, sde_st_file **out, char *err, size_t errlen);
/** Unmaps (when opened from a path) and frees everything. NULL is fine. */
void sde_st_free(sde_st_file *f);
/** A __metadata__ value, or NULL. */
const char *sde_st_meta(const sde_st_file *f, const char *key);

#endif
