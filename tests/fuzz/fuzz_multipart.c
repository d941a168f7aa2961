/* fuzz_multipart.c: libFuzzer target for the multipart/form-data reader (supervisor/multipart.c): any
 * Content-Type line and body must give parts inside the body or a clean error, never a crash or a read
 * past the end. The input is "CONTENT-TYPE\n" then the body.
 *
 * Not part of the default build (needs clang's libFuzzer). From the repository root:
 *   mkdir -p build-fuzz/corpus-multipart && clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *       -Isupervisor tests/fuzz/fuzz_multipart.c supervisor/multipart.c -o build-fuzz/fuzz_multipart
 *   build-fuzz/fuzz_multipart -max_total_time=300 -max_len=4096 build-fuzz/corpus-multipart */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "multipart.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *nl = memchr(data, '\n', size);
    if (!nl) return 0;
    size_t ctlen = (size_t)(nl - (const char *)data);
    char boundary[SDW_MP_BOUNDARY_MAX + 1], err[200];
    if (sdw_multipart_boundary((const char *)data, ctlen, boundary, err, sizeof err) != 0) return 0;
    size_t blen = size - ctlen - 1;
    char *body = malloc(blen ? blen : 1); /* its own allocation: ASan catches a read past the end */
    memcpy(body, nl + 1, blen);
    sdw_mp_part parts[8];
    int n = 0;
    int rc = sdw_multipart_parse(body, blen, boundary, parts, 8, &n, err, sizeof err);
    if (n < 0 || n > 8) abort();
    for (int i = 0; rc == 0 && i < n; i++) {
        const sdw_mp_part *p = &parts[i];
        if (p->data < body || p->data + p->len > body + blen || !p->name || p->name < body ||
            p->name + p->name_len > body + blen)
            abort();
    }
    free(body);
    return 0;
}
