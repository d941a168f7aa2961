/* fail.c: sde_fail, the error formatter of the engine's fallible helpers (declared in weights.h), alone so
 * that a parser such as safetensors.c links without the checkpoint code (the fuzzers do). */
#include <stdarg.h>
#include <stdio.h>

#include "weights.h"

int sde_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}
