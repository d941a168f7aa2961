/* cuda_info.c: the CUDA device query of cuda_info.h on the runtime API (UNTESTED on a GPU; built only
 * with -DSDW_CUDA=ON). */
#include "cuda_info.h"

#include <cuda_runtime_api.h>
#include <stdio.h>

int sde_cuda_vram(int device, size_t *free_bytes, size_t *total_bytes, char *err, size_t errlen)
{
    cudaError_t rc = cudaSetDevice(device);
    if (rc == cudaSuccess) rc = cudaMemGetInfo(free_bytes, total_bytes);
    if (rc != cudaSuccess) {
        snprintf(err, errlen, "CUDA device %d: %s", device, cudaGetErrorString(rc));
        return -1;
    }
    return 0;
}
