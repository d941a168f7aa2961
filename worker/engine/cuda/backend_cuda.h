/* backend_cuda.h: the CUDA backend of backend.h (backend_cuda.cu), built only with -DSDW_CUDA=ON; the engine
 * reaches it through sde_backend_open("cuda"). docs/backends.md has what it does and how it was measured. */
#ifndef SDE_BACKEND_CUDA_H
#define SDE_BACKEND_CUDA_H

#include <stddef.h>

#include "backend.h"

/** A new CUDA backend on the first visible device (CUDA_VISIBLE_DEVICES picks it), with its own stream and
 * cuBLAS handle; release it with its destroy(). NULL with err filled when there is no device. */
sde_backend *sde_backend_cuda_open(char *err, size_t errlen);

#endif
