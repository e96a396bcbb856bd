// CUDA kernels of decode_states (state -> values) and bitshift_decode (packed streams -> values).
//
// Both call codes.h (decode_state, read_window) unchanged, so they are bit-identical to the CPU kernels.
// They are simple element-per-thread kernels: the hot paths (gemv, and its decode-then-matmul stage) have
// their own tile decoders in gemv.cu.
//
// One difference from the CPU: a state outside [0, 2^L) decodes to NaN instead of raising, because checking
// it would need a device-to-host copy (a sync, and no CUDA graphs).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <torch/library.h>

#include "../checks.h"

namespace qtip {
namespace cuda {
namespace {

constexpr int kThreads = 256;

int grid_for(int64_t n) { return (int)std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 65535)); }

__global__ void decode_states_kernel(const int64_t* __restrict__ states, int64_t count, Mode mode, int L, int V, int Q,
                                     const float* __restrict__ tlut, float* __restrict__ out) {
  const int64_t limit = int64_t{1} << L;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t s = states[i];
    if (s < 0 || s >= limit) {
      for (int v = 0; v < V; ++v) out[i * V + v] = __int_as_float(0x7fc00000);  // NaN
    } else {
      decode_state(mode, (uint32_t)s, V, Q, tlut, out + i * V);
    }
  }
}

// One thread per (sequence, step): the window of step t starts at stream bit t*K*V.
__global__ void bitshift_decode_kernel(const uint16_t* __restrict__ packed, int64_t B, int64_t words, int64_t steps,
                                       int64_t bits, Mode mode, int L, int KV, int V, int Q,
                                       const float* __restrict__ tlut, float* __restrict__ out) {
  const int64_t total = B * steps;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = i / steps, t = i - b * steps;
    const uint32_t s = read_window(packed + b * words, t * KV, L, bits);
    decode_state(mode, s, V, Q, tlut, out + i * V);  // out is (B, steps * V) row-major
  }
}

at::Tensor decode_states_cuda(const at::Tensor& states, const std::string& mode, int64_t L, int64_t V,
                              const c10::optional<at::Tensor>& tlut) {
  TORCH_CHECK(at::isIntegralType(states.scalar_type(), /*includeBool=*/false),
              "qtip: decode_states needs integer states, got ", states.scalar_type());
  const c10::cuda::CUDAGuard guard(states.device());
  // K does not enter the decode; K=1 only satisfies the K*V < L check (as on the CPU).
  const Code code = check_code(L, 1, V, mode, tlut, states.device());
  const at::Tensor s = states.to(at::kLong).contiguous();
  auto sizes = states.sizes().vec();
  sizes.push_back(V);
  at::Tensor out = at::empty(sizes, states.options().dtype(at::kFloat));
  const int64_t n = s.numel();
  if (n == 0) return out;
  decode_states_kernel<<<grid_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      s.data_ptr<int64_t>(), n, code.mode, code.L, code.V, code.Q, code.table_ptr(), out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor bitshift_decode_cuda(const at::Tensor& packed, int64_t L, int64_t K, int64_t V, const std::string& mode,
                                const c10::optional<at::Tensor>& tlut, int64_t T, bool tail_biting) {
  TORCH_CHECK(packed.scalar_type() == at::kShort, "qtip: packed must be int16, got ", packed.scalar_type());
  TORCH_CHECK(packed.dim() == 2, "qtip: packed must be 2-D (B, words), got shape ", packed.sizes());
  const c10::cuda::CUDAGuard guard(packed.device());
  const Code code = check_code(L, K, V, mode, tlut, packed.device());
  const int64_t words = packed.size(1);
  T = check_streams(packed, code, T, tail_biting);
  const int64_t bits = stream_bits(T, code, tail_biting);
  const at::Tensor p = packed.contiguous();
  const int64_t B = p.size(0);
  at::Tensor out = at::empty({B, T}, packed.options().dtype(at::kFloat));
  if (B == 0) return out;
  const int64_t steps = T / V;
  bitshift_decode_kernel<<<grid_for(B * steps), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      reinterpret_cast<const uint16_t*>(p.data_ptr<int16_t>()), B, words, steps, bits, code.mode, code.L,
      code.bits_per_step(), code.V, code.Q, code.table_ptr(), out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(qtip, CUDA, m) {
  m.impl("decode_states", &decode_states_cuda);
  m.impl("bitshift_decode", &bitshift_decode_cuda);
}

}  // namespace cuda
}  // namespace qtip
