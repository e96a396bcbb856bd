// CUDA kernels of gemv: y = x @ W^T with W (m x n) stored as packed 16x16 trellis tiles (README layout).
//
// Three regimes, picked by the number of rows R of x (the constants are first guesses, to be measured):
//  * R <= kFusedRows (64 for fp16/bf16 x, 16 for fp32 x): one fused kernel. A block owns one tile row (16
//    output rows) and a range of its tile columns; its warps stream 16-tile chunks with 16-byte loads,
//    decode every tile in registers straight into the A fragment of mma.m16n8k16 (the in-tile order is that
//    fragment), and multiply:
//      - fp16 / bf16 x: tensor cores, mma.sync with A = decoded weights rounded to x's type, B = x, fp32
//        accumulators (one n8 block per 8 rows of x).
//      - fp32 x: CUDA cores, one fp32 FMA per weight and row (weights decoded in fp32), so the result keeps
//        fp32 accuracy (rounding of the summation order only; the tests' fp32 tolerance is 1e-4). Rounding
//        x to bf16/fp16 for the tensor cores would cost ~1e-3 relative error, and QTIPLinear feeds gemv fp32.
//    The warps' partial sums are reduced in shared memory in a fixed order (no atomics). When the tile rows
//    are too few to fill the GPU (small m), the tile columns are split over blockIdx.y, each split writes fp32
//    partials and a second kernel adds them in a fixed order: deterministic.
//  * R above that: decode W once, in row stripes of at most kStripeBytes, into a scratch matrix of x's type and
//    call at::mm (cuBLAS). The decode cost is amortised over the rows.
//
// Everything is launched on the current stream, allocates through the caching allocator and never
// synchronises the host: CUDA-graph safe.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <torch/library.h>

#include <type_traits>

#include "../checks.h"
#include "tile.cuh"

namespace qtip {
namespace cuda {
namespace {

// Crossover from the fused kernel to decode + cuBLAS (rows of x). To be measured (bench/gpu_bench.py).
constexpr int64_t kFusedRowsHalf = 64;  // fp16 / bf16 x; also the largest tensor-core tile of the fused kernel
constexpr int64_t kFusedRowsFloat = 16;  // fp32 x (CUDA-core FMAs: cost grows with R)
// Largest scratch stripe of the decode-then-matmul path.
constexpr int64_t kStripeBytes = int64_t{256} << 20;

// ------------------------------------------------------------------------------------------ device helpers

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// D += A * B for one m16n8k16 tile: A 16x16 (row), B 16x8 (col), fp32 accumulators.
template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same<T, __half>::value) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
#else
  __trap();  // built for sm_80+ only (mma.sync bf16)
#endif
}

struct GemvArgs {
  const uint4* packed;  // (m/16 * n/16) tiles of 32K bytes
  const void* x;        // (R, n) of T
  void* y;              // (R, m) of T, when ksplit == 1
  float* partial;       // (ksplit, R, m) fp32, when ksplit > 1
  const float* tlut;    // fp32 table (LUT / HYB) or nullptr
  int64_t m;
  int n, NT, R, K, L, mode, Q;
  int nchunks, chunks_per_split, ksplit;
};

// Shared memory: [HYB table (32 KB) if the decoder has one][max(stages, reduction)]. The stages (512K bytes
// per warp) are dead once the tile loop ends, so the reduction buffer (16 x BMAX floats per warp) reuses them.
template <class Dec>
size_t gemv_smem_bytes(int nwarps, int K, int bmax) {
  const size_t stages = (size_t)nwarps * 512 * K;
  const size_t red = (size_t)nwarps * 16 * bmax * sizeof(float);
  return (Dec::kTable ? kHybTableBytes : 0) + std::max(stages, red);
}

// BMAX: most rows of x this instantiation handles (R <= BMAX, a run-time R is guarded); for fp16/bf16 a
// multiple of 8 (n8 blocks of the mma), for fp32 the number of FMA accumulators per lane and output row.
template <typename T, class Dec, int KT, int BMAX>
__global__ void __launch_bounds__(kMaxWarps * kWarp) gemv_kernel(const GemvArgs a) {
  extern __shared__ __align__(16) char smem[];
  constexpr bool kMma = !std::is_same<T, float>::value;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int K = KT > 0 ? KT : a.K;
  const int L = KT > 0 ? 16 : a.L;  // fast (KT > 0) instantiations are dispatched for L = 16 only
  char* table = smem;
  char* work = smem + (Dec::kTable ? kHybTableBytes : 0);
  if constexpr (Dec::kTable) {
    fill_hyb_table<T>(table, a.tlut, threadIdx.x, blockDim.x);
    __syncthreads();
  }
  Dec dec;
  dec.init(table, lane, a.tlut, a.mode, a.Q, 0);

  const int64_t I = blockIdx.x;
  const int split = blockIdx.y;
  const int c0 = split * a.chunks_per_split;
  const int c1 = min(a.nchunks, c0 + a.chunks_per_split);
  uint32_t* stage = reinterpret_cast<uint32_t*>(work) + warp * 128 * K;
  const int g = lane >> 2, t = lane & 3;  // fragment row group / thread in group
  const int R = a.R, n = a.n;
  const T* __restrict__ x = static_cast<const T*>(a.x);

  constexpr int NACC = kMma ? BMAX / 8 : BMAX;
  float acc[NACC][kMma ? 4 : 2];
#pragma unroll
  for (int i = 0; i < NACC; ++i)
#pragma unroll
    for (int k = 0; k < (kMma ? 4 : 2); ++k) acc[i][k] = 0.0f;

  for_each_tile<KT, Dec, T>(a.packed, I, a.NT, c0, c1, warp, nwarps, lane, K, L, stage, dec,
                            [&](int J, const Frag<T>& f) {
    const int64_t col = (int64_t)J * 16 + 2 * t;
    if constexpr (kMma) {
      // B fragment: rows k = 2t, 2t+1 (b0) and 2t+8, 2t+9 (b1) of column (x row) 8nb + g.
#pragma unroll
      for (int nb = 0; nb < BMAX / 8; ++nb) {
        if (nb * 8 < R) {
          const int b = nb * 8 + g;
          uint32_t b0 = 0, b1 = 0;
          if (b < R) {
            const T* p = x + (int64_t)b * n + col;
            b0 = __ldg(reinterpret_cast<const unsigned int*>(p));
            b1 = __ldg(reinterpret_cast<const unsigned int*>(p + 8));
          }
          mma16816<T>(acc[nb], f.a, b0, b1);
        }
      }
    } else {
      // Lane (g, t) holds W[g][2t..2t+1], W[g+8][2t..], W[g][2t+8..], W[g+8][2t+8..] (w0..w7 in pairs).
#pragma unroll
      for (int b = 0; b < BMAX; ++b) {
        if (b < R) {
          const float* p = reinterpret_cast<const float*>(x) + (int64_t)b * n + col;
          const float2 lo = __ldg(reinterpret_cast<const float2*>(p));
          const float2 hi = __ldg(reinterpret_cast<const float2*>(p + 8));
          float s0 = acc[b][0], s1 = acc[b][1];
          s0 = __fmaf_rn(f.w[0], lo.x, s0);
          s0 = __fmaf_rn(f.w[1], lo.y, s0);
          s0 = __fmaf_rn(f.w[4], hi.x, s0);
          s0 = __fmaf_rn(f.w[5], hi.y, s0);
          s1 = __fmaf_rn(f.w[2], lo.x, s1);
          s1 = __fmaf_rn(f.w[3], lo.y, s1);
          s1 = __fmaf_rn(f.w[6], hi.x, s1);
          s1 = __fmaf_rn(f.w[7], hi.y, s1);
          acc[b][0] = s0;
          acc[b][1] = s1;
        }
      }
    }
  });

  // Block reduction: red[warp][row][b], then a fixed-order sum over warps.
  __syncthreads();  // every warp is done with its stage, which red overlays
  float* red = reinterpret_cast<float*>(work);
  float* rw = red + warp * 16 * BMAX;
  if constexpr (kMma) {
#pragma unroll
    for (int nb = 0; nb < BMAX / 8; ++nb) {
      if (nb * 8 < R) {
        const int cb = nb * 8 + 2 * t;  // D fragment: rows g, g+8; columns 2t, 2t+1
        rw[g * BMAX + cb] = acc[nb][0];
        rw[g * BMAX + cb + 1] = acc[nb][1];
        rw[(g + 8) * BMAX + cb] = acc[nb][2];
        rw[(g + 8) * BMAX + cb + 1] = acc[nb][3];
      }
    }
  } else {
#pragma unroll
    for (int b = 0; b < BMAX; ++b) {
      if (b < R) {
        float s0 = acc[b][0], s1 = acc[b][1];  // partial over this lane's 4 columns; add the 4 lanes of g
        s0 += __shfl_xor_sync(0xffffffffu, s0, 1);
        s1 += __shfl_xor_sync(0xffffffffu, s1, 1);
        s0 += __shfl_xor_sync(0xffffffffu, s0, 2);
        s1 += __shfl_xor_sync(0xffffffffu, s1, 2);
        if (t == 0) {
          rw[g * BMAX + b] = s0;
          rw[(g + 8) * BMAX + b] = s1;
        }
      }
    }
  }
  __syncthreads();
  for (int o = threadIdx.x; o < 16 * R; o += blockDim.x) {
    const int row = o & 15, b = o >> 4;
    float s = 0.0f;
    for (int w = 0; w < nwarps; ++w) s += red[(w * 16 + row) * BMAX + b];
    const int64_t i = I * 16 + row;
    if (a.ksplit == 1) {
      static_cast<T*>(a.y)[(int64_t)b * a.m + i] = from_float<T>(s);
    } else {
      a.partial[((int64_t)split * R + b) * a.m + i] = s;
    }
  }
}

// Second pass of split-K: y = sum over splits, in split order.
template <typename T>
__global__ void split_reduce_kernel(const float* __restrict__ partial, int ksplit, int64_t RM, T* __restrict__ y) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < RM; i += (int64_t)gridDim.x * blockDim.x) {
    float s = 0.0f;
    for (int k = 0; k < ksplit; ++k) s += partial[k * RM + i];
    y[i] = from_float<T>(s);
  }
}

// Decode the tile rows [row_tile0, row_tile0 + gridDim.x) of W into a dense (rows, n) matrix of T.
struct DenseArgs {
  const uint4* packed;
  void* out;
  const float* tlut;
  int64_t row_tile0;
  int n, NT, K, L, mode, Q, nchunks;
};

template <typename T, class Dec, int KT>
__global__ void __launch_bounds__(kMaxWarps * kWarp) dense_kernel(const DenseArgs a) {
  extern __shared__ __align__(16) char smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int K = KT > 0 ? KT : a.K;
  const int L = KT > 0 ? 16 : a.L;
  char* table = smem;
  char* work = smem + (Dec::kTable ? kHybTableBytes : 0);
  if constexpr (Dec::kTable) {
    fill_hyb_table<T>(table, a.tlut, threadIdx.x, blockDim.x);
    __syncthreads();
  }
  Dec dec;
  dec.init(table, lane, a.tlut, a.mode, a.Q, 0);
  uint32_t* stage = reinterpret_cast<uint32_t*>(work) + warp * 128 * K;
  const int g = lane >> 2, t = lane & 3;
  const int64_t n = a.n;
  T* out = static_cast<T*>(a.out) + (int64_t)blockIdx.x * 16 * n;
  for_each_tile<KT, Dec, T>(a.packed, a.row_tile0 + blockIdx.x, a.NT, 0, a.nchunks, warp, nwarps, lane, K, L, stage,
                            dec, [&](int J, const Frag<T>& f) {
    T* p = out + g * n + (int64_t)J * 16 + 2 * t;  // pairs: (g, 2t) (g+8, 2t) (g, 2t+8) (g+8, 2t+8)
    if constexpr (std::is_same<T, float>::value) {
      *reinterpret_cast<float2*>(p) = make_float2(f.w[0], f.w[1]);
      *reinterpret_cast<float2*>(p + 8 * n) = make_float2(f.w[2], f.w[3]);
      *reinterpret_cast<float2*>(p + 8) = make_float2(f.w[4], f.w[5]);
      *reinterpret_cast<float2*>(p + 8 * n + 8) = make_float2(f.w[6], f.w[7]);
    } else {
      *reinterpret_cast<uint32_t*>(p) = f.a[0];
      *reinterpret_cast<uint32_t*>(p + 8 * n) = f.a[1];
      *reinterpret_cast<uint32_t*>(p + 8) = f.a[2];
      *reinterpret_cast<uint32_t*>(p + 8 * n + 8) = f.a[3];
    }
  });
}

// ------------------------------------------------------------------------------------------ dispatch

template <class D> struct Tag { using type = D; };
template <int V> using IntC = std::integral_constant<int, V>;

enum class DecKind { HybFast, OneMadFast, TwoMadFast, ThreeInstFast, GenericV1, GenericV2 };

// Fast paths: L = 16 and K in {2, 3, 4} (the paper's configurations; HYB also needs Q = 9). Everything else
// runs the generic decoder (codes.h, table in global memory, K and L at run time).
DecKind pick_decoder(const Code& c) {
  if (c.L == 16 && c.K >= 2 && c.K <= 4) {
    switch (c.mode) {
      case Mode::HYB:
        if (c.Q == 9) return DecKind::HybFast;
        break;
      case Mode::ONE_MAD: return DecKind::OneMadFast;
      case Mode::TWO_MAD: return DecKind::TwoMadFast;
      case Mode::THREE_INST: return DecKind::ThreeInstFast;
      default: break;
    }
  }
  return c.V == 1 ? DecKind::GenericV1 : DecKind::GenericV2;
}

template <class F> void with_fast_k(int K, F&& f) {
  switch (K) {
    case 2: f(IntC<2>{}); break;
    case 3: f(IntC<3>{}); break;
    case 4: f(IntC<4>{}); break;
    default: TORCH_CHECK(false, "qtip: internal error: no fast path for K=", K);
  }
}

// Calls f(Tag<Dec>, IntC<KT>) for the decoder of `c` and element type T.
template <typename T, class F> void with_decoder(const Code& c, F&& f) {
  switch (pick_decoder(c)) {
    case DecKind::HybFast:
      return with_fast_k(c.K, [&](auto kt) { f(Tag<DecHybFast<T, decltype(kt)::value>>{}, kt); });
    case DecKind::OneMadFast:
      return with_fast_k(c.K, [&](auto kt) { f(Tag<DecComputedFast<T, decltype(kt)::value, 1>>{}, kt); });
    case DecKind::TwoMadFast:
      return with_fast_k(c.K, [&](auto kt) { f(Tag<DecComputedFast<T, decltype(kt)::value, 2>>{}, kt); });
    case DecKind::ThreeInstFast:
      return with_fast_k(c.K, [&](auto kt) { f(Tag<DecComputedFast<T, decltype(kt)::value, 3>>{}, kt); });
    case DecKind::GenericV1: return f(Tag<DecGeneric<T, 1>>{}, IntC<0>{});
    case DecKind::GenericV2: return f(Tag<DecGeneric<T, 2>>{}, IntC<0>{});
  }
}

template <typename Kernel> void set_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// SM count of the current device (a cached attribute query: no sync, fine during graph capture).
int multiprocessors() {
  int dev = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return sms;
}

int ceil_div(int64_t a, int64_t b) { return (int)((a + b - 1) / b); }

template <typename T, int BMAX>
void launch_fused(const Code& c, GemvArgs a, int64_t row_tiles, int nwarps, cudaStream_t stream) {
  with_decoder<T>(c, [&](auto tag, auto kt) {
    using Dec = typename decltype(tag)::type;
    constexpr int KT = decltype(kt)::value;
    auto kernel = gemv_kernel<T, Dec, KT, BMAX>;
    const size_t smem = gemv_smem_bytes<Dec>(nwarps, a.K, BMAX);
    set_smem(kernel, smem);
    kernel<<<dim3((unsigned)row_tiles, (unsigned)a.ksplit), nwarps * kWarp, smem, stream>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

template <typename T>
void launch_dense(const Code& c, const uint4* packed, int64_t row_tile0, int64_t row_tiles, int n, void* out,
                  cudaStream_t stream) {
  DenseArgs a{packed, out, c.table_ptr(), row_tile0, n, n / 16, c.K, c.L, (int)c.mode, c.Q, ceil_div(n / 16, kChunkTiles)};
  const int nwarps = std::min(kMaxWarps, a.nchunks);
  with_decoder<T>(c, [&](auto tag, auto kt) {
    using Dec = typename decltype(tag)::type;
    constexpr int KT = decltype(kt)::value;
    auto kernel = dense_kernel<T, Dec, KT>;
    const size_t smem = (Dec::kTable ? kHybTableBytes : 0) + (size_t)nwarps * 512 * c.K;
    set_smem(kernel, smem);
    kernel<<<(unsigned)row_tiles, nwarps * kWarp, smem, stream>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

template <typename T>
void gemv_typed(const at::Tensor& x, const at::Tensor& packed, int64_t m, int64_t n, const Code& c, at::Tensor& y) {
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t R = x.size(0);
  const uint4* p4 = reinterpret_cast<const uint4*>(packed.data_ptr());
  constexpr bool kFloat = std::is_same<T, float>::value;
  const int64_t fused_rows = kFloat ? kFusedRowsFloat : kFusedRowsHalf;
  const int64_t row_tiles = m / 16;

  if (R > fused_rows) {  // decode (in stripes) + cuBLAS
    const int64_t elt = (int64_t)x.element_size();
    int64_t stripe = std::min<int64_t>(m, std::max<int64_t>(16, kStripeBytes / (n * elt) / 16 * 16));
    at::Tensor w = at::empty({stripe, n}, x.options());
    for (int64_t r0 = 0; r0 < m; r0 += stripe) {
      const int64_t rows = std::min(stripe, m - r0);
      launch_dense<T>(c, p4, r0 / 16, rows / 16, (int)n, w.data_ptr(), stream);
      if (rows == m) {
        at::mm_out(y, x, w.t());
      } else {
        y.narrow(1, r0, rows).copy_(at::mm(x, w.narrow(0, 0, rows).t()));
      }
    }
    return;
  }

  const int NT = (int)(n / 16);
  const int nchunks = ceil_div(NT, kChunkTiles);
  // Enough blocks to fill the GPU (~4 per SM); split the tile columns when the tile rows are too few.
  const int sms = multiprocessors();
  const int64_t target = 4 * (int64_t)sms;
  int ksplit = 1;
  if (row_tiles < target) ksplit = std::min<int64_t>(nchunks, (target + row_tiles - 1) / row_tiles);
  ksplit = std::min(ksplit, 65535);
  const int per = ceil_div(nchunks, ksplit);
  ksplit = ceil_div(nchunks, per);  // no empty splits
  const int nwarps = std::min(kMaxWarps, per);

  at::Tensor partial;
  if (ksplit > 1) partial = at::empty({ksplit, R, m}, x.options().dtype(at::kFloat));
  GemvArgs a{p4, x.data_ptr(), y.data_ptr(), ksplit > 1 ? partial.data_ptr<float>() : nullptr, c.table_ptr(),
             m, (int)n, NT, (int)R, c.K, c.L, (int)c.mode, c.Q, nchunks, per, ksplit};
  if constexpr (kFloat) {
    if (R <= 1) launch_fused<T, 1>(c, a, row_tiles, nwarps, stream);
    else launch_fused<T, (int)kFusedRowsFloat>(c, a, row_tiles, nwarps, stream);
  } else {
    if (R <= 8) launch_fused<T, 8>(c, a, row_tiles, nwarps, stream);
    else launch_fused<T, (int)kFusedRowsHalf>(c, a, row_tiles, nwarps, stream);
  }
  if (ksplit > 1) {
    const int64_t RM = R * m;
    const int threads = 256;
    const int blocks = (int)std::min<int64_t>((RM + threads - 1) / threads, 4096);
    split_reduce_kernel<T><<<blocks, threads, 0, stream>>>(partial.data_ptr<float>(), ksplit, RM,
                                                           static_cast<T*>(y.data_ptr()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// The kernels use 16-byte loads of packed and 4/8-byte loads of x: copy a tensor whose data is not 16-byte
// aligned (a view with an odd storage offset); the caching allocator's own blocks always are.
at::Tensor aligned16(const at::Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 ? t : t.clone();
}

at::Tensor gemv_cuda(const at::Tensor& x, const at::Tensor& packed, int64_t m, int64_t n, int64_t L, int64_t K,
                     int64_t V, const std::string& mode, const c10::optional<at::Tensor>& tlut) {
  TORCH_CHECK(x.is_cuda(), "qtip: gemv CUDA kernel got x on ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const Code code = check_code(L, K, V, mode, tlut, x.device());
  check_gemv_shapes(x, packed, m, n, code);
  const at::ScalarType st = x.scalar_type();
  const bool native = st == at::kFloat || st == at::kHalf || st == at::kBFloat16;
  at::Tensor x2 = (native ? x : x.to(at::kFloat)).reshape({-1, n}).contiguous();
  auto out_shape = x.sizes().vec();
  out_shape.back() = m;
  at::Tensor y = at::empty({x2.size(0), m}, x2.options());
  if (x2.size(0) > 0) {
    x2 = aligned16(x2);
    const at::Tensor p = aligned16(packed.contiguous());
    switch (x2.scalar_type()) {
      case at::kHalf: gemv_typed<__half>(x2, p, m, n, code, y); break;
      case at::kBFloat16: gemv_typed<__nv_bfloat16>(x2, p, m, n, code, y); break;
      default: gemv_typed<float>(x2, p, m, n, code, y); break;
    }
  }
  return y.reshape(out_shape).to(st);
}

}  // namespace

TORCH_LIBRARY_IMPL(qtip, CUDA, m) { m.impl("gemv", &gemv_cuda); }

}  // namespace cuda
}  // namespace qtip
