// Choice of the Hadamard factor K for a dimension n, and the +-1 matrices H_K, shared by all devices.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <mutex>
#include <vector>

#include "hadamard_data.h"

namespace qtip {

// The K of Had_n = H_K kron S_{n/K}: the first K in the reference's search order that divides n, which
// must leave a power of two; or K = 1 when n is itself a power of two.
inline int hadamard_k(int64_t n) {
  auto is_pow2 = [](int64_t v) { return v > 0 && (v & (v - 1)) == 0; };
  for (const HadamardK& h : kHadamardK) {
    if (n > 0 && n % h.K == 0) {
      TORCH_CHECK(is_pow2(n / h.K), "qtip: rht dimension n=", n, " is divisible by ", h.K,
                  " but n/", h.K, "=", n / h.K, " is not a power of two; supported sizes are 2^a or 2^a*K, K in "
                  "{12, 20, 28, 36, 52, 60, 108, 116, 124, 140, 156, 172}");
      return h.K;
    }
  }
  TORCH_CHECK(is_pow2(n), "qtip: rht dimension n=", n, " is not supported: it must be 2^a or 2^a*K with K in "
              "{12, 20, 28, 36, 52, 60, 108, 116, 124, 140, 156, 172}");
  return 1;
}

// H_K as row-major int8 +-1 (H_1 = [1]); built once per K.
inline const std::vector<int8_t>& hadamard_matrix(int K) {
  static std::mutex mutex;
  static std::map<int, std::vector<int8_t>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(K);
  if (it != cache.end()) return it->second;
  std::vector<int8_t> H(K * K, 1);
  for (const HadamardK& h : kHadamardK) {
    if (h.K != K) continue;
    for (int i = 0; i < K * K; ++i) H[i] = h.rows[i] == '+' ? 1 : -1;
  }
  return cache.emplace(K, std::move(H)).first->second;
}

}  // namespace qtip
