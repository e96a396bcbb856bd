// CUDA kernel of viterbi_quantize: the host side (checks, launch plan, scratch, dispatch). The kernel and
// its design notes are in viterbi.cuh. Results are bit-identical to the CPU kernel (csrc/cpu/viterbi.cpp).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../checks.h"
#include "viterbi.cuh"

namespace qtip {
namespace {

template <int V, bool kHyb, int R>
void launch(const vit::Plan& plan, const vit::Args& args, int grid, cudaStream_t stream) {
  vit::viterbi_kernel<V, kHyb, R><<<grid, plan.threads, plan.smem_bytes, stream>>>(plan, args);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

using Launcher = void (*)(const vit::Plan&, const vit::Args&, int, cudaStream_t);
using KernelPtr = void (*)(vit::Plan, vit::Args);

template <int V, bool kHyb>
void pick_r(int logR, Launcher* launcher, KernelPtr* kernel) {
  switch (logR) {
    case 0: *launcher = launch<V, kHyb, 1>; *kernel = vit::viterbi_kernel<V, kHyb, 1>; break;
    case 1: *launcher = launch<V, kHyb, 2>; *kernel = vit::viterbi_kernel<V, kHyb, 2>; break;
    case 2: *launcher = launch<V, kHyb, 4>; *kernel = vit::viterbi_kernel<V, kHyb, 4>; break;
    default: *launcher = launch<V, kHyb, 8>; *kernel = vit::viterbi_kernel<V, kHyb, 8>; break;
  }
}

std::tuple<at::Tensor, at::Tensor> viterbi_quantize_cuda(const at::Tensor& x, int64_t L, int64_t K, int64_t V,
                                                         const std::string& mode,
                                                         const c10::optional<at::Tensor>& tlut, bool tail_biting) {
  const c10::cuda::CUDAGuard guard(x.device());
  const Code code = check_code(L, K, V, mode, tlut, x.device());
  const at::Tensor xf = check_viterbi_input(x, code, tail_biting);  // the op's one host sync, before any launch
  const int64_t B = xf.size(0), T = xf.size(1);
  TORCH_CHECK(T / V < (int64_t{1} << 30), "qtip: viterbi_quantize sequence too long, T=", T);
  const int64_t bits = stream_bits(T, code, tail_biting);
  const int64_t nwords = (bits + 15) / 16;
  at::Tensor packed = at::empty({B, nwords}, x.options().dtype(at::kShort));
  at::Tensor recon = at::empty({B, T}, x.options().dtype(at::kFloat));
  if (B == 0) return {packed, recon};

  const int device = x.device().index();
  int max_smem_attr = 0, sm_count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&max_smem_attr, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  const int64_t max_smem = max_smem_attr;
  const bool hyb = code.mode == Mode::HYB;
  const vit::Plan plan = vit::make_plan(code.L, code.K, code.V, code.Q, hyb, T, tail_biting, max_smem);
  TORCH_CHECK(plan.smem_bytes <= max_smem, "qtip: viterbi_quantize needs ", plan.smem_bytes,
              " bytes of shared memory, the device allows ", max_smem);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();

  // The decoded value of every state (V, 2^L), unless HYB reads its small table from shared memory.
  at::Tensor table;
  if (!plan.hyb_shared) {
    table = at::empty({code.V, code.num_states()}, x.options().dtype(at::kFloat));
    const int threads = 256;
    const int blocks = (int)std::min<int64_t>((code.num_states() + threads - 1) / threads, 1024);
    vit::state_table_kernel<<<blocks, threads, 0, stream>>>((int)code.mode, code.L, code.V, code.Q,
                                                             code.table_ptr(), table.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  Launcher launcher = nullptr;
  KernelPtr kernel = nullptr;
  if (hyb && plan.hyb_shared) {
    pick_r<2, true>(plan.logR, &launcher, &kernel);
  } else if (code.V == 2) {
    pick_r<2, false>(plan.logR, &launcher, &kernel);
  } else {
    pick_r<1, false>(plan.logR, &launcher, &kernel);
  }

  // A persistent grid: as many CTAs as fit on the device at once, each walking the batch with its own
  // scratch slot (backpointers, path, and the B buffers when they do not fit in shared memory). The
  // scratch is capped to half the free memory, so any batch runs in one launch with no host sync.
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)plan.smem_bytes));
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, plan.threads, plan.smem_bytes));
  per_sm = std::max(per_sm, 1);
  int64_t grid = std::min<int64_t>(B, (int64_t)per_sm * sm_count);
  size_t free_bytes = 0, total_bytes = 0;
  C10_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const int64_t slot_bytes = plan.scratch_words * 4;
  const int64_t fit = std::max<int64_t>(1, (int64_t)(free_bytes / 2) / std::max<int64_t>(slot_bytes, 1));
  grid = std::max<int64_t>(1, std::min(grid, fit));
  at::Tensor scratch = at::empty({grid * plan.scratch_words}, x.options().dtype(at::kInt));

  vit::Args args;
  args.x = xf.data_ptr<float>();
  args.B = B;
  args.T = T;
  args.hyb_tlut = plan.hyb_shared ? code.table_ptr() : nullptr;
  args.table = plan.hyb_shared ? nullptr : table.data_ptr<float>();
  args.scratch = reinterpret_cast<uint32_t*>(scratch.data_ptr<int32_t>());
  args.packed = packed.data_ptr<int16_t>();
  args.recon = recon.data_ptr<float>();
  launcher(plan, args, (int)grid, stream);
  return {packed, recon};
}

}  // namespace

TORCH_LIBRARY_IMPL(qtip, CUDA, m) { m.impl("viterbi_quantize", &viterbi_quantize_cuda); }

}  // namespace qtip
