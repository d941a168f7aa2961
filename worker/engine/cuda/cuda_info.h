/* cuda_info.h: a CUDA device query (free and total VRAM), built only with -DSDW_CUDA=ON. UNTESTED: it
 * has been compiled and linked against CUDA 13, never run on a GPU. It is the first piece of part B. */
#ifndef SDE_CUDA_INFO_H
#define SDE_CUDA_INFO_H

#include <stddef.h>

/** Free and total memory in bytes of CUDA device `device`. Returns 0, or -1 with err filled (no driver,
 * no such device, ...). */
int sde_cuda_vram(int device, size_t *free_bytes, size_t *total_bytes, char *err, size_t errlen);

#endif
