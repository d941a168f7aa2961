/* weights.h: what the model builders (UNet, VAE, text encoders) and the file loaders share: resolving
 * float32 weights of an expected shape by printf-style name, keeping only the first error. */
#ifndef SDE_WEIGHTS_H
#define SDE_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "checkpoint.h"

/** A builder's view of a checkpoint: after the first missing or mismatched tensor every lookup returns
 * NULL and err keeps that first message, so a builder can resolve all weights and check once. */
typedef struct {
    sde_ckpt *c;
    char *err;
    size_t errlen;
    int failed;      /* set by the first failed lookup */
    int64_t params;  /* parameters resolved so far */
    sde_backend *be; /* when set, each weight is uploaded to it and its handle returned */
} sde_wloader;

/** Float32 weight NAME (printf-style) of exactly shape d0[,d1[,d2[,d3]]] (trailing zero dims end the
 * shape) as a weight handle of L->be (the mapped float32 data when be is NULL or the CPU), or NULL after
 * recording the first error in L. */
const float *sde_wload(sde_wloader *L, int64_t d0, int64_t d1, int64_t d2, int64_t d3, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/** Weight matrix NAME (printf-style) of exactly shape d0[,d1[,d2[,d3]]] as a typed weight handle of L->be
 * (the checkpoint's own handle when be is NULL or the CPU: F16/BF16 stay in the mapped file), or NULL after
 * recording the first error in L. For the large matrices that linear, conv and embed take. */
const sde_weight *sde_wload_weight(sde_wloader *L, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/** The tensor named by a printf-style NAME, or NULL (for probing what a checkpoint holds). */
const sde_tensor *sde_wfind(const sde_ckpt *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Formats a message into err (when given) and returns -1, for `return sde_fail(err, errlen, ...)`. */
int sde_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
