// CUDA kernel of rht: the host side (checks, the sign-bit tables of H_K, chunking, dispatch). The kernel and
// its design notes are in rht.cuh. fp32, fp16 and bf16 run the fused kernel (computing in fp32); fp64, and
// rows longer than 2^18 elements, go through a composite of ATen ops (a log2(n)-stage butterfly), exact in
// the input's precision but several passes over memory.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>
#include <map>
#include <mutex>
#include <tuple>

#include "../checks.h"
#include "../hadamard.h"
#include "rht.cuh"

namespace qtip {
namespace {

constexpr int64_t kChunkSmall = 16384;  // floats per shared-memory chunk: 66 KiB, three CTAs per SM
constexpr int64_t kChunkLarge = 32768;  // for rows that would otherwise need more than 8 chunks
constexpr int64_t kShortRow = 4096;     // rows shorter than this are batched per CTA

// Row c holds the sign bits of the weights that output c applies to the K slow blocks:
// bit a of row c = [M[c][a] < 0], M[c][a] = H[c][a] (x @ Had^T) or H[a][c] (x @ Had).
at::Tensor sign_bits(int K, bool transpose, const at::Device& device) {
  static std::mutex mutex;
  static std::map<std::tuple<int, int, bool>, at::Tensor> cache;
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_tuple((int)device.index(), K, transpose);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  const std::vector<int8_t>& H = hadamard_matrix(K);
  const int words = (K + 31) / 32;
  at::Tensor bits = at::zeros({K, words}, at::TensorOptions().dtype(at::kInt));
  int32_t* b = bits.data_ptr<int32_t>();
  for (int c = 0; c < K; ++c)
    for (int a = 0; a < K; ++a) {
      const int8_t h = transpose ? H[c * K + a] : H[a * K + c];
      if (h < 0) b[c * words + a / 32] |= (int32_t)(1u << (a % 32));
    }
  at::Tensor on_device = bits.to(device);  // once per (device, K, orientation)
  cache.emplace(key, on_device);
  return on_device;
}

// Composite fallback: the same transform with ATen ops, in x's dtype (fp32 or fp64).
at::Tensor rht_composite(const at::Tensor& x, const at::Tensor& signs, int K, bool transpose, double factor) {
  const int64_t n = x.size(-1), rows = x.numel() / n, m = n / K;
  at::Tensor buf = signs.defined() ? x * signs : x.clone();
  buf = buf.reshape({rows, K, m});
  for (int64_t h = 1; h < m; h <<= 1) {
    at::Tensor v = buf.view({rows, K, m / (2 * h), 2, h});
    at::Tensor a = v.select(3, 0), b = v.select(3, 1);
    buf = at::stack({a + b, a - b}, 3).view({rows, K, m});
  }
  if (K > 1) {
    const std::vector<int8_t>& H = hadamard_matrix(K);
    at::Tensor hk = at::empty({K, K}, at::TensorOptions().dtype(at::kDouble));
    double* hp = hk.data_ptr<double>();
    for (int c = 0; c < K; ++c)
      for (int a = 0; a < K; ++a) hp[c * K + a] = transpose ? H[c * K + a] : H[a * K + c];
    buf = at::matmul(hk.to(buf.options()), buf);  // y[c] = sum_a M[c][a] buf[a]
  }
  return (buf * factor).reshape(x.sizes());
}

template <typename T, int H>
void launch(const rhtk::Params& p, const at::Tensor& x, const float* signs, const uint32_t* hbits, at::Tensor& y,
            float* scratch, int grid, int64_t smem, cudaStream_t stream) {
  auto kernel = rhtk::rht_kernel<T, H>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  kernel<<<grid, rhtk::kThreads, smem, stream>>>(p, reinterpret_cast<const T*>(x.data_ptr()), signs, hbits,
                                                  reinterpret_cast<T*>(y.data_ptr()), scratch);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
void launch_h(int H, const rhtk::Params& p, const at::Tensor& x, const float* signs, const uint32_t* hbits,
              at::Tensor& y, float* scratch, int grid, int64_t smem, cudaStream_t stream) {
  switch (H) {
    case 1: launch<T, 1>(p, x, signs, hbits, y, scratch, grid, smem, stream); break;
    case 2: launch<T, 2>(p, x, signs, hbits, y, scratch, grid, smem, stream); break;
    case 4: launch<T, 4>(p, x, signs, hbits, y, scratch, grid, smem, stream); break;
    default: launch<T, 8>(p, x, signs, hbits, y, scratch, grid, smem, stream); break;
  }
}

at::Tensor rht_cuda(const at::Tensor& x, const c10::optional<at::Tensor>& signs, bool transpose, double scale) {
  TORCH_CHECK(x.dim() >= 1, "qtip: rht needs at least one dimension, got a scalar");
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kDouble,
              "qtip: rht supports float32, float16, bfloat16 and float64, got ", dtype);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.size(-1);
  const int K = hadamard_k(n);  // validates n before any work
  const double factor = scale / std::sqrt((double)n);
  const auto compute = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor sc = check_rht_signs(signs, x, n, compute);
  const int64_t rows = n == 0 ? 0 : x.numel() / n;
  const int64_t m = n / K;

  // Chunking: the fewest H-way splits (H <= 8, H | m) whose chunk fits in shared memory.
  int device = x.device().index();
  int max_smem = 0, sm_count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  int H = 0;
  for (int64_t limit : {kChunkSmall, kChunkLarge}) {
    for (int h = 1; h <= 8 && H == 0; h *= 2)
      if (h <= m && n / h <= limit && (n / h + n / h / 32 + 1) * 4 <= max_smem) H = h;
    if (H) break;
  }
  if (dtype == at::kDouble || H == 0) {
    if (rows == 0) return at::empty_like(x, at::MemoryFormat::Contiguous);
    return rht_composite(x.to(compute).contiguous(), sc, K, transpose, factor).to(dtype);
  }
  const at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty_like(xc);
  if (rows == 0) return y;

  rhtk::Params p{};
  p.rows = rows;
  p.n = n;
  p.K = K;
  p.m = m;
  p.mh = m / H;
  p.lmh = 0;
  while ((int64_t{1} << p.lmh) < p.mh) ++p.lmh;
  p.ns = n / H;
  p.rows_per_cta = (H == 1 && n < kShortRow) ? (int)std::min<int64_t>(rows, kShortRow / n) : 1;
  p.hwords = (K + 31) / 32;
  p.factor = (float)factor;
  p.scratch_floats = (H - 1) * p.ns;
  const int64_t total = p.rows_per_cta * p.ns;
  const int64_t smem = (total + total / 32 + 1) * 4;

  at::Tensor hbits;
  if (K > 1) hbits = sign_bits(K, transpose, x.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  const int64_t iters = (rows + p.rows_per_cta - 1) / p.rows_per_cta;
  const int per_sm = std::max<int>(1, (int)(std::min<int64_t>(max_smem, 227 * 1024) / std::max<int64_t>(smem, 1)));
  const int grid = (int)std::min<int64_t>(iters, (int64_t)sm_count * std::min(per_sm, 8));
  at::Tensor scratch;
  if (H > 1) scratch = at::empty({grid * p.scratch_floats}, x.options().dtype(at::kFloat));
  const float* sp = sc.defined() ? sc.data_ptr<float>() : nullptr;
  const uint32_t* hp = K > 1 ? reinterpret_cast<const uint32_t*>(hbits.data_ptr<int32_t>()) : nullptr;
  float* scr = H > 1 ? scratch.data_ptr<float>() : nullptr;
  if (dtype == at::kFloat) {
    launch_h<float>(H, p, xc, sp, hp, y, scr, grid, smem, stream);
  } else if (dtype == at::kHalf) {
    launch_h<__half>(H, p, xc, sp, hp, y, scr, grid, smem, stream);
  } else {
    launch_h<__nv_bfloat16>(H, p, xc, sp, hp, y, scr, grid, smem, stream);
  }
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(qtip, CUDA, m) { m.impl("rht", &rht_cuda); }

}  // namespace qtip
