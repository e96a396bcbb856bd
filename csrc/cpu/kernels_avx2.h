// Entry points of the AVX2 gemv and bitshift_decode kernels (gemv_avx2.cpp, decode_avx2.cpp). Call them only
// when dispatch.h's cpu_level() is at least AVX2; each returns false, having done nothing, for a code it does not
// cover, and the caller then runs its scalar kernel.
#pragma once

#include <cstdint>

#include "../checks.h"

namespace qtip {

// out (B, T) in sequence order from B packed streams of nwords words. `values`: the value of every state
// when V = 1 (the LUT, or a StateTable's for computed codes); unused for V = 2.
bool bitshift_decode_avx2(const uint16_t* packed, int64_t B, int64_t nwords, int64_t T, bool tail_biting,
                          const Code& c, const float* values, float* out);

// y (R, m) = x W^T for the packed tiles of W and the R rows of x (R, n), in the order of gemv_layout.h.
bool gemv_fused_avx2(const float* x, int64_t R, const uint16_t* packed, int64_t m, int64_t n, const Code& c,
                     const float* values, float* y);

}  // namespace qtip
