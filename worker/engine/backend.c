/* backend.c: the backends this build has, by name: the shared CPU one, and with -DSDW_CUDA=ON the CUDA one
 * (a shared instance for lookups and tests, a new one per engine from sde_backend_open). */
#include <stddef.h>
#include <string.h>

#include "backend.h"
#include "weights.h"

#ifdef SDW_CUDA
#include <pthread.h>

#include "backend_cuda.h"

static sde_backend *cuda_shared;
static pthread_once_t cuda_once = PTHREAD_ONCE_INIT;

static void cuda_open_shared(void)
{
    char err[256];
    cuda_shared = sde_backend_cuda_open(err, sizeof err);
}
#endif

sde_backend *sde_backend_get(const char *name)
{
    if (!name || !*name || !strcmp(name, "cpu")) return sde_backend_cpu();
#ifdef SDW_CUDA
    if (!strcmp(name, "cuda")) {
        (void)pthread_once(&cuda_once, cuda_open_shared);
        return cuda_shared;
    }
#endif
    return NULL;
}

sde_backend *sde_backend_open(const char *name, char *err, size_t errlen)
{
    if (!name || !*name || !strcmp(name, "cpu")) return sde_backend_cpu();
#ifdef SDW_CUDA
    if (!strcmp(name, "cuda")) return sde_backend_cuda_open(err, errlen);
    sde_fail(err, errlen, "backend \"%s\" is not built in (this build has: cpu, cuda)", name);
#else
    sde_fail(err, errlen, "backend \"%s\" is not built in (this build has: cpu; cuda needs -DSDW_CUDA=ON)",
             name);
#endif
    return NULL;
}

void sde_backend_close(sde_backend *be)
{
    if (be && be->destroy) be->destroy(be);
}
