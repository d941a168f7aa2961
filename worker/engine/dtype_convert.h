/* dtype_convert.h: stored tensor element types (F16, BF16, F64, F32 at any alignment) to float32.
 * F16 uses the CPU's F16C conversion instructions when present, else an exact lookup table. */
#ifndef SDE_DTYPE_CONVERT_H
#define SDE_DTYPE_CONVERT_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"

/** One IEEE half (bits) as float, exact for normals, subnormals, infinities and NaN. */
float sde_cvt_half(uint16_t h);
/** dst[0..n) = src elements of type dt as float32. src may have any alignment. Returns 0, or -1 when dt
 * is not a floating-point type (integers and BOOL are not converted). */
int sde_cvt_to_f32(sde_dtype dt, const void *src, size_t n, float *dst);
/** Forces the portable F16 path (1) or allows F16C again (0); for tests. */
void sde_cvt_force_portable(int on);

#endif
