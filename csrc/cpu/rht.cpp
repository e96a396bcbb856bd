// CPU kernel of rht: y = scale * (x * signs) @ Had_n (or @ Had_n^T), Had_n = (H_K kron S_{n/K}) / sqrt(n)
// with S the natural-order Walsh-Hadamard matrix and H_K on the slow index (SPEC §4).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../checks.h"
#include "../hadamard.h"

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

template <typename T>
void rht_rows(const at::Tensor& x, const at::Tensor& signs, bool transpose, double scale, at::Tensor& out) {
  const int64_t n = x.size(-1);
  const int64_t rows = n == 0 ? 0 : x.numel() / n;
  const int K = hadamard_k(n);
  const int64_t m = n / K;
  const std::vector<int8_t>& H = hadamard_matrix(K);
  const T factor = (T)(scale / std::sqrt((double)n));
  const T* xp = x.data_ptr<T>();
  const T* sp = signs.defined() ? signs.data_ptr<T>() : nullptr;
  T* op = out.data_ptr<T>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(n);
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = xp + r * n;
      T* yr = op + r * n;
      for (int64_t i = 0; i < n; ++i) buf[i] = sp ? xr[i] * sp[i] : xr[i];
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

at::Tensor rht_cpu(const at::Tensor& x, const c10::optional<at::Tensor>& signs, bool transpose, double scale) {
  TORCH_CHECK(x.dim() >= 1, "qtip: rht needs at least one dimension, got a scalar");
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kDouble,
              "qtip: rht supports float32, float16, bfloat16 and float64, got ", dtype);
  const int64_t n = x.size(-1);
  hadamard_k(n);  // validates n before any work
  // Half types are transformed in fp32 and rounded once at the end.
  const auto compute = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor xc = x.to(compute).contiguous();
  const at::Tensor sc = check_rht_signs(signs, x, n, compute);
  at::Tensor out = at::empty_like(xc);
  if (compute == at::kDouble) {
    rht_rows<double>(xc, sc, transpose, scale, out);
  } else {
    rht_rows<float>(xc, sc, transpose, scale, out);
  }
  return out.to(dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(qtip, CPU, m) { m.impl("rht", &rht_cpu); }

}  // namespace qtip
