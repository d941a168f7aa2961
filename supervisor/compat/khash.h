/* khash.h: just enough of klib's khash for <h2o/http2_internal.h>, which Debian's libh2o-dev ships without
 * it. Only the stream table's type is spelled out (the layout klib gives it); its functions are declared,
 * never defined. */
#ifndef SDW_COMPAT_KHASH_H
#define SDW_COMPAT_KHASH_H

#include <stdint.h>

typedef uint32_t khint_t;
typedef khint_t khiter_t;

/* Declared, not defined: code that looks a stream up through them fails to link instead of misbehaving. */
#define KHASH_MAP_INIT_INT64(name, khval_t)                                                                  \
    typedef struct kh_##name##_s {                                                                           \
        khint_t n_buckets, size, n_occupied, upper_bound;                                                    \
        uint32_t *flags;                                                                                     \
        uint64_t *keys;                                                                                      \
        khval_t *vals;                                                                                       \
    } kh_##name##_t;                                                                                         \
    khint_t sdw_compat_kh_get_##name(const kh_##name##_t *h, uint64_t key);

#define khash_t(name) kh_##name##_t
#define kh_get(name, h, k) sdw_compat_kh_get_##name(h, k)
#define kh_end(h) ((h)->n_buckets)
#define kh_val(h, x) ((h)->vals[x])

#endif
