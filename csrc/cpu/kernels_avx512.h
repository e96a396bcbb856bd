// Entry points of the AVX-512 kernels (gemv_avx512.cpp). Call them only when dispatch.h's
// cpu_level() is AVX512; each returns false, having done nothing, for a code it does not cover (see
// hyb_avx512.h: HYB with K <= 4, Q <= 9 and an fp16-exact table), and the caller then runs another kernel.
#pragma once

#include <cstdint>

#include "../checks.h"

namespace qtip {

// y (R, m) = x W^T for the packed tiles of W and the R rows of x (R, n), in the order of gemv_layout.h.
bool gemv_fused_avx512(const float* x, int64_t R, const uint16_t* packed, int64_t m, int64_t n, const Code& c,
                       float* y);

// `tiles` packed 16x16 tiles (tail-biting streams of 256 weights, 16K words each) -> out (tiles, 256) in
// sequence order.
bool decode_tiles_avx512(const uint16_t* packed, int64_t tiles, const Code& c, float* out);

}  // namespace qtip
