// CPU kernel of rht: y = scale * (x * signs) @ Had_n (or @ Had_n^T), Had_n = (H_K kron S_{n/K}) / sqrt(n)
// with S the natural-order Walsh-Hadamard matrix and H_K on the slow index (SPEC §4).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../checks.h"
#include "../hadamard.h"
#include "dispatch.h"
#include "rht_kernels.h"
#include "rht_rows.h"

namespace qtip {
namespace {

template <typename T>
void rht_rows(const at::Tensor& x, const at::Tensor& signs, bool transpose, double scale, at::Tensor& out) {
  const int64_t n = x.size(-1);
  const int64_t rows = n == 0 ? 0 : x.numel() / n;
  const int K = hadamard_k(n);
  const int8_t* H = hadamard_matrix(K).data();
  const T factor = (T)(scale / std::sqrt((double)n));
  const T* xp = x.data_ptr<T>();
  const T* sp = signs.defined() ? signs.data_ptr<T>() : nullptr;
  T* op = out.data_ptr<T>();
  const CpuLevel level = cpu_level();
  if (level >= CpuLevel::AVX512) {
    rht_rows_avx512(xp, sp, rows, n, K, H, transpose, factor, op);
  } else if (level >= CpuLevel::AVX2) {
    rht_rows_avx2(xp, sp, rows, n, K, H, transpose, factor, op);
  } else {
    rht_rows_impl<T, 16>(xp, sp, rows, n, K, H, transpose, factor, op);
  }
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
