/* png_info.c: a PNG's chunk walk (see png_info.h): bounded by the buffer, allocation-free, and cheap enough
 * for the event loop at any size, since nothing is inflated. */
#include "png_info.h"

#include <stdio.h>
#include <string.h>

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int fail(char *err, size_t errlen, const char *msg)
{
    snprintf(err, errlen, "%s", msg);
    return -1;
}

int sdw_png_info(const uint8_t *png, size_t len, int *w, int *h, int *has_alpha, char *err, size_t errlen)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    *w = *h = *has_alpha = 0;
    if (!png || len < 8 || memcmp(png, sig, 8)) return fail(err, errlen, "not a PNG (bad signature)");
    size_t pos = 8;
    int idat = 0, ct = 0;
    for (int n = 0;; n++) {
        if (len - pos < 12) return fail(err, errlen, "not a readable PNG: the file is cut off");
        uint32_t cl = be32(png + pos);
        const uint8_t *type = png + pos + 4;
        if (cl > 0x7fffffffu || cl > len - pos - 12)
            return fail(err, errlen, "not a readable PNG: a chunk runs past the end (cut off?)");
        if (n == 0) {
            if (memcmp(type, "IHDR", 4) || cl != 13)
                return fail(err, errlen, "not a readable PNG: IHDR is not the first chunk");
            uint32_t pw = be32(png + pos + 8), ph = be32(png + pos + 12);
            if (pw < 1 || ph < 1 || pw > 16384 || ph > 16384)
                return fail(err, errlen, "not a readable PNG: its sides must be 1..16384");
            *w = (int)pw;
            *h = (int)ph;
            ct = png[pos + 8 + 9];
        } else if (!memcmp(type, "IHDR", 4)) {
            return fail(err, errlen, "not a readable PNG: a second IHDR");
        }
        idat |= !memcmp(type, "IDAT", 4);
        if (!memcmp(type, "tRNS", 4)) *has_alpha = 1;
        pos += 12 + (size_t)cl;
        if (!memcmp(type, "IEND", 4)) break;
    }
    if (!idat) return fail(err, errlen, "not a readable PNG: it has no image data");
    if (ct & 4) *has_alpha = 1; /* colour types 4 (grey + alpha) and 6 (RGBA) */
    return 0;
}
