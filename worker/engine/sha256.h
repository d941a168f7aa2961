/* sha256.h: SHA-256 (FIPS 180-4), streaming, for the AUTOMATIC1111-style model hash.
 * Uses the x86 SHA extensions when the CPU has them, else portable C. */
#ifndef SDE_SHA256_H
#define SDE_SHA256_H

#include <stddef.h>
#include <stdint.h>

/** Streaming state; zero-initialise via sde_sha256_init(). */
typedef struct {
    uint32_t h[8];
    uint64_t total;  /* bytes fed so far */
    uint8_t buf[64]; /* pending partial block */
    size_t nbuf;
} sde_sha256_ctx;

/** Starts a new hash. */
void sde_sha256_init(sde_sha256_ctx *s);
/** Feeds len bytes. */
void sde_sha256_update(sde_sha256_ctx *s, const void *data, size_t len);
/** Finishes and writes the 32-byte digest. */
void sde_sha256_final(sde_sha256_ctx *s, uint8_t out[32]);
/** One-shot digest of a buffer. */
void sde_sha256(const void *data, size_t len, uint8_t out[32]);
/** Forces the portable implementation (1) or allows the hardware one again (0); for tests. */
void sde_sha256_force_portable(int on);

#endif
