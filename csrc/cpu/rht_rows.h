// The row transform of rht, written once and compiled for each CPU level (rht.cpp: portable; rht_avx2.cpp,
// rht_avx512.cpp: the same loops under a target pragma, which the compiler vectorises 8 or 16 wide). Every output
// element goes through the same additions, subtractions and the one final multiply in the same order on every
// level (no FMA contraction: -ffp-contract=off), so all levels give bit-identical results. Everything here has
// internal linkage.
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace qtip {
namespace {

// In-place unnormalised Walsh-Hadamard transform (Sylvester order) of a[0..m), m a power of two. Radix-4: each
// pass does the radix-2 stages h and 2h together on quadruples (j, j+h, j+2h, j+3h), with the very same
// additions as two radix-2 passes (so the same result) but half the passes over the data; a last radix-2 pass
// when log2(m) is odd.
template <typename T>
void fwht(T* a, int64_t m) {
  int64_t h = 1;
  for (; 4 * h <= m; h *= 4) {
    for (int64_t i = 0; i < m; i += 4 * h) {
      for (int64_t j = i; j < i + h; ++j) {
        const T s0 = a[j] + a[j + h], d0 = a[j] - a[j + h];
        const T s1 = a[j + 2 * h] + a[j + 3 * h], d1 = a[j + 2 * h] - a[j + 3 * h];
        a[j] = s0 + s1;
        a[j + h] = d0 + d1;
        a[j + 2 * h] = s0 - s1;
        a[j + 3 * h] = d0 - d1;
      }
    }
  }
  if (2 * h <= m) {
    for (int64_t j = 0; j < h; ++j) {
      const T u = a[j], v = a[j + h];
      a[j] = u + v;
      a[j + h] = u - v;
    }
  }
}

constexpr int kOutputs = 4;  // outputs (rows of H_K) of the H_K stage computed together

// kLanes values of T with elementwise + and * by a scalar: one register of the level the file is built for
// (GCC/Clang vector extension; each lane does exactly the scalar operations, in the same order).
template <typename T, int kLanes>
struct Lanes {
#if defined(__GNUC__) || defined(__clang__)
  typedef T Vec __attribute__((vector_size(kLanes * sizeof(T))));
  Vec v;
  static Lanes load(const T* p) {
    Lanes r;
    std::memcpy(&r.v, p, sizeof(Vec));
    return r;
  }
  void store(T* p) const { std::memcpy(p, &v, sizeof(Vec)); }
  Lanes operator+(const Lanes& o) const { return {v + o.v}; }
  Lanes operator*(T s) const { return {v * s}; }
#else
  T v[kLanes];
  static Lanes load(const T* p) {
    Lanes r;
    std::memcpy(r.v, p, sizeof(r.v));
    return r;
  }
  void store(T* p) const { std::memcpy(p, v, sizeof(v)); }
  Lanes operator+(const Lanes& o) const {
    Lanes r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = v[i] + o.v[i];
    return r;
  }
  Lanes operator*(T s) const {
    Lanes r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = v[i] * s;
    return r;
  }
#endif
};

// kBytes: the vector register width of the level the including file is built for.
template <typename T, int kBytes>
void rht_rows_impl(const T* x, const T* signs, int64_t rows, int64_t n, int K, const int8_t* H, bool transpose,
                   T factor, T* out) {
  constexpr int kLanes = kBytes / (int)sizeof(T);
  const int64_t m = n / K;
  // h[c][a]: the sign output c takes of input a, H_K^T for x @ Had and H_K for x @ Had^T.
  std::vector<T> h(K * K);
  for (int c = 0; c < K; ++c)
    for (int a = 0; a < K; ++a) h[c * K + a] = (T)(transpose ? H[c * K + a] : H[a * K + c]);
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
      // y[c] = factor * sum_a h[c][a] * buf[a], a = 0..K-1 in turn from 0: the sign is a multiply by +-1 (exact)
      // rather than a branch (a Hadamard matrix's signs are as good as random to a branch predictor), and
      // kOutputs outputs of kLanes values at a time stay in registers as independent chains.
      int64_t d0 = 0;
      for (; d0 + kLanes <= m; d0 += kLanes) {
        for (int c0 = 0; c0 < K; c0 += kOutputs) {  // every K > 1 is a multiple of 4
          Lanes<T, kLanes> acc[kOutputs] = {};
          for (int a = 0; a < K; ++a) {
            const auto b = Lanes<T, kLanes>::load(buf.data() + a * m + d0);
            for (int i = 0; i < kOutputs; ++i) acc[i] = acc[i] + b * h[(c0 + i) * K + a];
          }
          for (int i = 0; i < kOutputs; ++i) (acc[i] * factor).store(yr + (c0 + i) * m + d0);
        }
      }
      for (; d0 < m; ++d0) {  // m < kLanes
        for (int c = 0; c < K; ++c) {
          T acc = 0;
          for (int a = 0; a < K; ++a) acc += buf[a * m + d0] * h[c * K + a];
          yr[c * m + d0] = acc * factor;
        }
      }
    }
  });
}

}  // namespace
}  // namespace qtip
