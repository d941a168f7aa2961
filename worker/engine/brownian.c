/* brownian.c: W(t) by bisection from W(t_min) = 0 and W(t_max) ~ N(0, t_max - t_min): each midpoint is the
 * Brownian bridge mean plus noise from a generator seeded by its place in the tree, 24 levels deep, then
 * linear in between. The generators are C++'s std::default_random_engine and std::normal_distribution<float>
 * as libstdc++ implements them (minstd_rand0, Marsaglia's polar method), which the peer uses. */
#include "brownian.h"

#include <math.h>

#define TREE_DEPTH 24

/* splitmix64's finalizer over v + salt: the peer's seed mixing */
static uint64_t mix64(uint64_t v, uint64_t salt)
{
    uint64_t z = v + salt;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* minstd_rand0: x <- 16807 x mod (2^31 - 1), seeded with the low 32 bits of the seed (0 becomes 1) */
typedef struct {
    uint64_t x;
} minstd;

static void minstd_seed(minstd *g, uint64_t seed)
{
    uint64_t s = (uint32_t)seed % 2147483647u;
    g->x = s ? s : 1;
}

/* generate_canonical<float, 24>: one draw, (x - 1) / 2^31 in float (2147483646 rounds to 2^31) */
static float minstd_uniform(minstd *g)
{
    g->x = g->x * 16807u % 2147483647u;
    float r = (float)(g->x - 1) / 2147483648.f;
    return r >= 1.f ? nextafterf(1.f, 0.f) : r;
}

/* n standard normals from a fresh normal_distribution<float> on g: polar pairs, the y value first */
static void minstd_randn(minstd *g, float *out, size_t n)
{
    for (size_t i = 0; i < n; i += 2) {
        float x, y, r2;
        do {
            x = 2.f * minstd_uniform(g) - 1.f;
            y = 2.f * minstd_uniform(g) - 1.f;
            r2 = x * x + y * y;
        } while (r2 > 1.f || r2 == 0.f);
        float mult = sqrtf(-2.f * logf(r2) / r2);
        out[i] = y * mult;
        if (i + 1 < n) out[i + 1] = x * mult;
    }
}

void sde_brownian_init(sde_brownian *b, double t_min, double t_max, uint64_t seed, size_t n, float *mem)
{
    b->t_min = t_min;
    b->t_max = t_max;
    b->root_seed = mix64(seed, 0x9E3779B97F4A7C15ULL);
    b->n = n;
    b->w_max = mem;
    b->wa = mem + n;
    b->wc = mem + 2 * n;
    b->z = mem + 3 * n;
    minstd g;
    minstd_seed(&g, mix64(seed, 0xBF58476D1CE4E5B9ULL));
    minstd_randn(&g, b->w_max, n);
    float scale = sqrtf((float)(t_max - t_min));
    for (size_t i = 0; i < n; i++)
        b->w_max[i] *= scale;
}

static double clampd(const sde_brownian *b, double t)
{
    return t < b->t_min ? b->t_min : t > b->t_max ? b->t_max : t;
}

/* out = W(t), descending from the root */
static void brownian_at(sde_brownian *b, double t, float *out)
{
    const size_t n = b->n;
    float *wa = b->wa, *wc = b->wc, *z = b->z;
    for (size_t i = 0; i < n; i++) {
        wa[i] = 0.f;
        wc[i] = b->w_max[i];
    }
    double a = b->t_min, c = b->t_max;
    uint64_t seed = b->root_seed;
    for (int depth = TREE_DEPTH;; depth--) {
        if (depth <= 0 || c - a < 1e-9) {
            float al = c > a ? (float)((t - a) / (c - a)) : 0.5f;
            for (size_t i = 0; i < n; i++)
                out[i] = (1.f - al) * wa[i] + al * wc[i];
            return;
        }
        double m = 0.5 * (a + c);
        float sd = (float)sqrt((c - m) * (m - a) / (c - a));
        minstd g;
        minstd_seed(&g, seed);
        minstd_randn(&g, z, n);
        for (size_t i = 0; i < n; i++)
            z[i] = 0.5f * (wa[i] + wc[i]) + sd * z[i]; /* W(m) */
        if (t == m) {
            for (size_t i = 0; i < n; i++)
                out[i] = z[i];
            return;
        }
        float *wm = z;
        if (t < m) {
            c = m;
            b->z = wc; /* the old right end is free: it becomes the next midpoint's buffer */
            wc = wm;
            seed = mix64(seed, 1);
        } else {
            a = m;
            b->z = wa;
            wa = wm;
            seed = mix64(seed, 2);
        }
        z = b->z;
    }
}

void sde_brownian_noise(sde_brownian *b, double s0, double s1, float *out, float *tmp)
{
    double lo = clampd(b, s0 < s1 ? s0 : s1), hi = clampd(b, s0 < s1 ? s1 : s0);
    float *wa0 = b->wa, *wc0 = b->wc, *z0 = b->z;
    brownian_at(b, hi, out);
    b->wa = wa0, b->wc = wc0, b->z = z0;
    brownian_at(b, lo, tmp);
    b->wa = wa0, b->wc = wc0, b->z = z0;
    double span = fabs(s1 - s0);
    float inv = 1.f / sqrtf((float)(span > 1e-12 ? span : 1e-12));
    for (size_t i = 0; i < b->n; i++)
        out[i] = (out[i] - tmp[i]) * inv;
}
