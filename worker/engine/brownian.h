/* brownian.h: the seeded Brownian tree of stable-diffusion.cpp's dpm++2m_sde_bt: Brownian motion W(sigma)
 * whose increments over any interval are the same whatever steps the schedule takes. */
#ifndef SDE_BROWNIAN_H
#define SDE_BROWNIAN_H

#include <stddef.h>
#include <stdint.h>

/** A tree over [t_min, t_max] for a latent of n elements; all memory is the caller's. */
typedef struct {
    double t_min, t_max;
    uint64_t root_seed;
    size_t n;
    float *w_max;       /* W(t_max) */
    float *wa, *wc, *z; /* scratch of one descent */
} sde_brownian;

/** Floats of memory sde_brownian_init() takes for n elements. */
#define SDE_BROWNIAN_FLOATS(n) (4 * (n))

/** Sets the tree up from seed (the peer's: 8 bytes of two Philox normals) in mem[SDE_BROWNIAN_FLOATS(n)]. */
void sde_brownian_init(sde_brownian *b, double t_min, double t_max, uint64_t seed, size_t n, float *mem);
/** out[n] = (W(max(s0, s1)) - W(min(s0, s1))) / sqrt(|s1 - s0|): unit-variance noise for that interval.
 * tmp is n floats of scratch. */
void sde_brownian_noise(sde_brownian *b, double s0, double s1, float *out, float *tmp);

#endif
