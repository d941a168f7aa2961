/* fuzz_mask_png.c: libFuzzer target for the inpainting mask decoder of the HTTP surfaces' conventions
 * (worker/engine/mask_png.c): any bytes, in any mode, give 0/255 RGB pixels of the file's size or a clean
 * error, never a crash, a leak or a read past the end. The first byte picks the mode (bits 0-1) and the
 * inversion (bit 2); the rest is the PNG. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mask_png.h"
#include "png_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    sde_mask_mode mode = (sde_mask_mode)((data[0] & 3) % 3);
    int invert = (data[0] >> 2) & 1;
    size_t len = size - 1;
    uint8_t *png = malloc(len ? len : 1); /* its own allocation: ASan catches a read past the end */
    memcpy(png, data + 1, len);
    uint8_t *rgb;
    int w, h, a;
    size_t n;
    char err[200];
    err[0] = 0;
    if (sde_mask_png_decode(png, len, mode, invert, &rgb, &w, &h, &n, &a, err, sizeof err) == 0) {
        size_t npx = (size_t)w * h, count = 0;
        if (!rgb || w < 1 || h < 1 || npx > SDE_PNG_MAX_PIXELS || n > npx) abort();
        for (size_t i = 0; i < npx * 3; i++)
            if (rgb[i] != 0 && rgb[i] != 255) abort();
        for (size_t i = 0; i < npx; i++)
            count += rgb[3 * i] != 0;
        if (count != n) abort();
        free(rgb);
    } else if (rgb || !err[0]) {
        abort();
    }
    free(png);
    return 0;
}
