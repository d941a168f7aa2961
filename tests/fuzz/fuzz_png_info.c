/* fuzz_png_info.c: libFuzzer target for the supervisor's PNG chunk walk (supervisor/png_info.c): any bytes
 * give a size within 1..16384 or a clean error, never a read past the end. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "png_info.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *png = malloc(size ? size : 1); /* its own allocation: ASan catches a read past the end */
    memcpy(png, data, size);
    int w, h, a;
    char err[200];
    err[0] = 0;
    if (sdw_png_info(png, size, &w, &h, &a, err, sizeof err) == 0) {
        if (w < 1 || h < 1 || w > 16384 || h > 16384 || (a != 0 && a != 1)) abort();
    } else if (!err[0]) {
        abort();
    }
    free(png);
    return 0;
}
