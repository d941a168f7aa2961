/* ops_gemm_bf16.c: the opt-in bf16 path: a GEMM with bf16 inputs and float32 accumulation on AVX512-BF16
 * (vdpbf16ps), chosen at run time by CPU features, and the switch the ops read to take it. */
#include "ops.h"
#include "ops_internal.h"

static int bf16_on;

int sde_cpu_has_bf16(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

void sde_set_bf16(int on)
{
    bf16_on = on && sde_cpu_has_bf16();
}

int sde_get_bf16(void)
{
    return bf16_on;
}
