/* numfmt.c: decimal formatting without printf (see numfmt.h). */
#include <math.h>
#include <string.h>

#include "numfmt.h"

size_t sdw_fmt_u64(char *buf, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    buf[n] = '\0';
    return n;
}

size_t sdw_fmt_fixed(char *buf, double x, int decimals)
{
    static const uint64_t pow10[] = {1, 10, 100, 1000, 10000, 100000, 1000000};
    if (decimals < 0) decimals = 0;
    if (decimals > 6) decimals = 6;
    if (!(x >= 0) || !isfinite(x) || x > 1e12) x = 0;
    uint64_t scaled = (uint64_t)llround(x * (double)pow10[decimals]);
    size_t n = sdw_fmt_u64(buf, scaled / pow10[decimals]);
    if (decimals) {
        uint64_t frac = scaled % pow10[decimals];
        buf[n++] = '.';
        for (int d = decimals - 1; d >= 0; d--) {
            buf[n + (size_t)d] = (char)('0' + frac % 10);
            frac /= 10;
        }
        n += (size_t)decimals;
        buf[n] = '\0';
    }
    return n;
}
