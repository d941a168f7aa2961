/* fuzz_png.c: libFuzzer target for the PNG reader (worker/engine/png_io.c, used for img2img input): any
 * bytes give an RGB image within SDE_PNG_MAX_* or an error; a small decoded image must re-encode and
 * decode to the same pixels. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "png_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    char err[256];
    if (sde_png_decode(data, size, &rgb, &w, &h, err, sizeof err) != 0) {
        if (rgb || !err[0]) abort();
        return 0;
    }
    if (!rgb || w < 1 || h < 1 || w > SDE_PNG_MAX_DIM || h > SDE_PNG_MAX_DIM ||
        (uint64_t)w * (uint64_t)h > SDE_PNG_MAX_PIXELS)
        abort();
    if ((uint64_t)w * (uint64_t)h <= 4096) {
        uint8_t *png = NULL, *back = NULL;
        size_t len = 0;
        int w2 = 0, h2 = 0;
        if (sde_png_encode(rgb, w, h, NULL, &png, &len, err, sizeof err) != 0 ||
            sde_png_decode(png, len, &back, &w2, &h2, err, sizeof err) != 0 || w2 != w || h2 != h ||
            memcmp(rgb, back, (size_t)w * (size_t)h * 3))
            abort();
        free(png);
        free(back);
    }
    free(rgb);
    return 0;
}
