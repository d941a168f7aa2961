/* fuzz_safetensors.c: libFuzzer target for the safetensors parser (clang only, not in the default build).
 * tests/fuzz/run.sh builds and runs it with the others. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dtype_convert.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    sde_st_file *f = NULL;
    if (sde_st_parse("fuzz", data, size, &f, err, sizeof err)) {
        /* A rejection always explains itself. */
        if (strncmp(err, "fuzz: ", 6)) abort();
        return 0;
    }
    /* An acceptance describes tensors inside the input: read every claimed byte and convert floats. */
    for (int i = 0; i < f->n; i++) {
        const sde_st_tensor *t = &f->t[i];
        if (t->data < f->data || t->data + t->nbytes > f->data + f->data_len || t->ndim > SDE_MAX_DIMS)
            abort();
        size_t es = sde_st_dtype_size(t->dtype), n = es ? t->nbytes / es : 0;
        if (n * es != t->nbytes || n != t->numel) abort();
        float *out = malloc(n * sizeof(float) + 1);
        if (!out) abort();
        sde_cvt_to_f32(t->dtype, t->data, n, out);
        free(out);
    }
    sde_st_free(f);
    return 0;
}
