/* sdw_cuda_info.c: prints each CUDA device's free and total VRAM (sde_cuda_vram). UNTESTED on a GPU; a
 * manual check for part B, built only with -DSDW_CUDA=ON and never installed. */
#include <cuda_runtime_api.h>
#include <stdio.h>

#include "cuda_info.h"

int main(void)
{
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc != cudaSuccess) {
        fprintf(stderr, "no CUDA devices: %s\n", cudaGetErrorString(rc));
        return 1;
    }
    for (int d = 0; d < n; d++) {
        size_t fr, tot;
        char err[256];
        if (sde_cuda_vram(d, &fr, &tot, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        printf("device %d: %.0f MiB free of %.0f MiB\n", d, fr / 1048576.0, tot / 1048576.0);
    }
    return 0;
}
