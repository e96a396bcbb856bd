// AVX2 build of rht's row transform (rht_rows.h; see rht_kernels.h).
#include "rht_kernels.h"

#include <ATen/Parallel.h>

#include <cstdint>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include "rht_rows.h"

namespace qtip {
void rht_rows_avx2(const float* x, const float* signs, int64_t rows, int64_t n, int K, const int8_t* H,
                   bool transpose, float factor, float* out) {
  rht_rows_impl<float, 32>(x, signs, rows, n, K, H, transpose, factor, out);
}
void rht_rows_avx2(const double* x, const double* signs, int64_t rows, int64_t n, int K, const int8_t* H,
                   bool transpose, double factor, double* out) {
  rht_rows_impl<double, 32>(x, signs, rows, n, K, H, transpose, factor, out);
}
}  // namespace qtip
#pragma GCC pop_options

#else  // no x86-64 build: dispatch.h never selects this level

namespace qtip {
void rht_rows_avx2(const float*, const float*, int64_t, int64_t, int, const int8_t*, bool, float, float*) {}
void rht_rows_avx2(const double*, const double*, int64_t, int64_t, int, const int8_t*, bool, double, double*) {}
}  // namespace qtip

#endif
