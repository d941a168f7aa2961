/* philox.c: CUDA-compatible Philox-4x32-10 counter RNG with a Box-Muller transform in float32, the noise of
 * torch.randn(device="cuda"); each element is a pure function of (seed, offset, index), so no state but the
 * offset. */
#include "philox.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
#define PHILOX_ROUNDS 10

/* One Philox-4x32 block: c is the counter in and the random words out. */
static void philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1)
{
    for (int r = 0; r < PHILOX_ROUNDS; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c[0];
        uint64_t p1 = (uint64_t)PHILOX_M1 * c[2];
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c[1] ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c[3] ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c[0] = n0;
        c[1] = n1;
        c[2] = n2;
        c[3] = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
}

void sde_philox_init(sde_philox *r, uint64_t seed)
{
    r->seed = seed;
    r->offset = 0;
}

void sde_philox_randn_at(uint64_t seed, uint32_t offset, float *out, size_t n)
{
    const uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    /* float32 throughout, as curand does it; the result matches the golden torch values to ~1e-6. */
    const float two32_inv = 2.3283064e-10f; /* 2^-32 */
    const float two_pi = 6.2831855f;
    for (size_t i = 0; i < n; i++) {
        /* The element index fills the third counter word; beyond 2^32 elements the values would repeat,
         * which no latent comes near. */
        uint32_t c[4] = {offset, 0, (uint32_t)i, 0};
        philox4x32_10(c, k0, k1);
        float u = (float)c[0] * two32_inv + two32_inv * 0.5f;
        float v = ((float)c[1] * two32_inv + two32_inv * 0.5f) * two_pi;
        out[i] = sqrtf(-2.0f * logf(u)) * sinf(v);
    }
}

void sde_philox_randn(sde_philox *r, float *out, size_t n)
{
    sde_philox_randn_at(r->seed, r->offset, out, n);
    r->offset++;
}
