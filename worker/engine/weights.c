/* weights.c: shared weight lookup for the model builders and file loaders (see weights.h); sde_fail
 * lives in fail.c so that the file parsers link without the checkpoint. */
#include <stdarg.h>
#include <stdio.h>

#include "weights.h"

const float *sde_wload(sde_wloader *L, int64_t d0, int64_t d1, int64_t d2, int64_t d3, const char *fmt, ...)
{
    if (L->failed) return NULL;
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    int64_t shape[4] = {d0, d1, d2, d3};
    int nd = d3 ? 4 : d2 ? 3 : d1 ? 2 : 1;
    const float *p = sde_ckpt_f32(L->c, name, nd, shape, L->err, L->errlen);
    if (!p) {
        L->failed = 1;
        return NULL;
    }
    int64_t n = 1;
    for (int i = 0; i < nd; i++)
        n *= shape[i];
    L->params += n;
    if (L->be && !(p = L->be->upload(L->be, p, (size_t)n))) {
        L->failed = 1;
        sde_fail(L->err, L->errlen, "%s: cannot upload %lld floats to the %s backend", name, (long long)n,
                 L->be->name);
    }
    return p;
}

const sde_weight *sde_wload_weight(sde_wloader *L, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                                   const char *fmt, ...)
{
    if (L->failed) return NULL;
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    int64_t shape[4] = {d0, d1, d2, d3};
    int nd = d3 ? 4 : d2 ? 3 : d1 ? 2 : 1;
    const sde_weight *w = sde_ckpt_weight(L->c, name, nd, shape, L->err, L->errlen);
    if (!w) {
        L->failed = 1;
        return NULL;
    }
    L->params += (int64_t)w->n;
    if (L->be && !(w = L->be->upload_weight(L->be, w))) {
        L->failed = 1;
        sde_fail(L->err, L->errlen, "%s: cannot upload its weight to the %s backend", name, L->be->name);
    }
    return w;
}

const sde_tensor *sde_wfind(const sde_ckpt *c, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return sde_ckpt_find(c, name);
}
