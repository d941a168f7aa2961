/* fuzz_edit_mask.c: libFuzzer target for the edit routes' mask conversion (supervisor/edit_mask.c): any
 * bytes, in either mode, give a grey PNG of the input's size or a clean error, never a crash, a leak or a
 * read past the end. The first byte picks the mode and inversion; the rest is the PNG. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edit_mask.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    sdw_edit_mask_mode mode = data[0] & 1 ? SDW_EDIT_MASK_A1111 : SDW_EDIT_MASK_OPENAI;
    int invert = (data[0] >> 1) & 1;
    size_t len = size - 1;
    uint8_t *png = malloc(len ? len : 1); /* its own allocation: ASan catches a read past the end */
    memcpy(png, data + 1, len);
    sdw_edit_mask m;
    char err[200];
    if (sdw_edit_mask_convert(png, len, mode, invert, &m, err, sizeof err) == 0) {
        if (!m.png || m.png_len < 8 || m.width < 1 || m.height < 1 ||
            (unsigned long long)m.width * m.height > SDW_EDIT_MASK_MAX_PIXELS ||
            m.n_repaint > (size_t)m.width * m.height)
            abort();
        free(m.png);
    } else if (m.png || !err[0]) {
        abort();
    }
    free(png);
    return 0;
}
