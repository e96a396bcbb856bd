// The row transform of rht, written once and compiled for each CPU level (rht.cpp: portable; rht_avx2.cpp,
// rht_avx512.cpp: the same loops under a target pragma, which the compiler vectorises 8 or 16 wide). Every output
// element goes through the same additions, subtractions and the one final multiply in the same order on every
// level (no FMA contraction: -ffp-contract=off), so all levels give bit-identical results. Everything here has
// internal linkage.
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>
#include <vector>

namespace qtip {
namespace {

// In-place unnormalised Walsh-Hadamard transform (Sylvester order) of a[0..m), m a power of two.
template <typename T>
void fwht(T* a, int64_t m) {
  for (int64_t h = 1; h < m; h <<= 1) {
    for (int64_t i = 0; i < m; i += 2 * h) {
      for (int64_t j = i; j < i + h; ++j) {
        const T u = a[j], v = a[j + h];
        a[j] = u + v;
        a[j + h] = u - v;
      }
    }
  }
}

// out[r] = factor * (x[r] * signs) @ (H_K kron S_{n/K}) (or its transpose) for each of `rows` rows of n; signs may
// be null. H: H_K row-major as +-1.
template <typename T>
void rht_rows_impl(const T* x, const T* signs, int64_t rows, int64_t n, int K, const int8_t* H, bool transpose,
                   T factor, T* out) {
  const int64_t m = n / K;
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(n);
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * n;
      T* yr = out + r * n;
      for (int64_t i = 0; i < n; ++i) buf[i] = signs ? xr[i] * signs[i] : xr[i];
      for (int a = 0; a < K; ++a) fwht(buf.data() + a * m, m);
      if (K == 1) {
        for (int64_t i = 0; i < n; ++i) yr[i] = buf[i] * factor;
        continue;
      }
      // y[c] = sum_a H[a][c] * buf[a] (x @ Had: H_K^T on the slow index) or H[c][a] (x @ Had^T).
      for (int c = 0; c < K; ++c) {
        T* yc = yr + c * m;
        for (int64_t d = 0; d < m; ++d) yc[d] = 0;
        for (int a = 0; a < K; ++a) {
          const int8_t h = transpose ? H[c * K + a] : H[a * K + c];
          const T* ba = buf.data() + a * m;
          if (h > 0) {
            for (int64_t d = 0; d < m; ++d) yc[d] += ba[d];
          } else {
            for (int64_t d = 0; d < m; ++d) yc[d] -= ba[d];
          }
        }
        for (int64_t d = 0; d < m; ++d) yc[d] *= factor;
      }
    }
  });
}

}  // namespace
}  // namespace qtip
