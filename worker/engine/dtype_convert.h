/* dtype_convert.h: stored tensor element types (F16, BF16, F64, F32 at any alignment) to float32 and
 * back (F16, BF16). F16 uses the CPU's F16C conversion instructions when present, else exact C. */
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
/** dst[0..n) = src[0..n) as elements of type dt (F32, F16 or BF16), each rounded to nearest, ties to even
 * (overflow gives infinity, NaN stays NaN). dst may have any alignment. Returns 0, or -1 for other types. */
int sde_cvt_from_f32(sde_dtype dt, const float *src, size_t n, void *dst);
/** Forces the portable F16 paths (1) or allows F16C again (0); for tests. */
void sde_cvt_force_portable(int on);

#endif
