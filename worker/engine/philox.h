/* philox.h: the CUDA-compatible Philox-4x32-10 + Box-Muller normal generator, so a seed gives the same
 * noise as torch.randn(device="cuda"), AUTOMATIC1111 and stable-diffusion.cpp's "cuda" RNG. */
#ifndef SDE_PHILOX_H
#define SDE_PHILOX_H

#include <stddef.h>
#include <stdint.h>

/** Generator state: a seed and the offset of the next tensor. */
typedef struct {
    uint64_t seed;
    uint32_t offset;
} sde_philox;

void sde_philox_init(sde_philox *r, uint64_t seed);
/** n normal values for element indices 0..n-1 at the current offset, then offset++ (one call per tensor). */
void sde_philox_randn(sde_philox *r, float *out, size_t n);
/** Stateless form: the values at (seed, offset). */
void sde_philox_randn_at(uint64_t seed, uint32_t offset, float *out, size_t n);

#endif
