// CUDA kernel of rht: y = scale * (x * signs) @ Had_n (or @ Had_n^T), Had_n = (H_K kron S_m) / sqrt(n),
// m = n / K, S the natural-order Walsh-Hadamard matrix, H_K on the slow index (SPEC §4). Plain C++ apart
// from the fp16/bf16 conversions, so a host emulation runs the same code. The host side is rht.cu.
//
// Design: one fused kernel, one read and one write of each row in global memory.
// * A CTA owns a row (or several short rows) at a time, in a persistent loop. The row lives in shared memory
//   as fp32, padded by one word per 32 (index p + p/32) against bank conflicts of strided rounds.
// * The Walsh-Hadamard transform runs in rounds of up to 4 butterfly stages: a thread loads 16 elements
//   that differ in the round's 4 index bits, does the stages in registers, stores them back. The stage order
//   and the butterflies are those of the CPU kernel, and H_K is applied as the same ordered sum of +-z with
//   the same final scaling, so for rows that fit (see below) results are bit-identical to the CPU kernel.
// * H_K (K > 1): y[c][d] = sum_a sign(a, c) z[a][d], each thread doing 4 outputs c for one d, reading the
//   signs as bits (warp-uniform, cached loads) from a small device table built once per (device, K).
// * Rows longer than the shared-memory chunk (16K or 32K floats) are split H ways (H in {2, 4, 8}) by the top
//   bits of the fast index: S_m = S_H kron S_{m/H}, so an H-point butterfly at load time turns the row into
//   H independent transforms of size n/H; chunk 0 goes to shared memory, the others to a per-CTA fp32
//   scratch (L2-resident) read back in turn. Still one pass over global memory for x and y; the summation
//   order differs from the CPU's (top stages first), so these agree to rounding, not bit for bit.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

#ifndef QTIP_DYNAMIC_SMEM
#define QTIP_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace qtip {
namespace rhtk {

constexpr int kThreads = 256;
constexpr int kRoundBits = 4;   // butterfly stages per shared-memory round
constexpr int kOutBlock = 4;    // H_K outputs per thread (every K of SPEC §4 is a multiple of 4)

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ void from_float(float v, float* out) { *out = v; }
#if defined(__CUDACC__)
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void from_float(float v, __half* out) { *out = __float2half_rn(v); }
__device__ __forceinline__ void from_float(float v, __nv_bfloat16* out) { *out = __float2bfloat16_rn(v); }
#endif

__device__ __forceinline__ int64_t pad(int64_t p) { return p + (p >> 5); }

struct Params {
  int64_t rows;
  int64_t n;               // row length
  int K;                   // H_K size (1: pure Walsh-Hadamard)
  int64_t m;               // n / K
  int64_t mh;              // m / H: fast length of one chunk
  int lmh;                 // log2(mh)
  int64_t ns;              // n / H: elements of one chunk
  int rows_per_cta;        // short rows processed together (H == 1 only)
  int hwords;              // 32-bit words per row of the sign-bit table
  float factor;            // scale / sqrt(n)
  int64_t scratch_floats;  // per CTA, (H - 1) * ns
};

// Chunk-local Walsh-Hadamard transform of every block of mh elements in buf[0, total) (padded indexing).
__device__ __forceinline__ void fwht_shared(float* buf, int64_t total, int lmh) {
  const int tid = threadIdx.x, NT = blockDim.x;
  for (int b = 0; b < lmh; b += kRoundBits) {
    const int rb = lmh - b < kRoundBits ? lmh - b : kRoundBits;
    const int E = 1 << rb;
    const int64_t groups = total >> rb;
    const int64_t low_mask = (int64_t{1} << b) - 1;
    for (int64_t gi = tid; gi < groups; gi += NT) {
      const int64_t base = ((gi >> b) << (b + rb)) | (gi & low_mask);
      float v[1 << kRoundBits];
#pragma unroll
      for (int i = 0; i < (1 << kRoundBits); ++i)
        if (i < E) v[i] = buf[pad(base + ((int64_t)i << b))];
#pragma unroll
      for (int s = 0; s < kRoundBits; ++s) {
        if (s < rb) {
#pragma unroll
          for (int i = 0; i < (1 << kRoundBits); ++i) {
            if ((i & (1 << s)) == 0 && (i | (1 << s)) < E) {
              const float u = v[i], w = v[i | (1 << s)];
              v[i] = u + w;
              v[i | (1 << s)] = u - w;
            }
          }
        }
      }
#pragma unroll
      for (int i = 0; i < (1 << kRoundBits); ++i)
        if (i < E) buf[pad(base + ((int64_t)i << b))] = v[i];
    }
    __syncthreads();
  }
}

// Writes chunk e of `rows_here` rows (starting at row0) from shared memory: H_K mixing and scaling.
template <typename T>
__device__ __forceinline__ void store_chunk(const Params& p, const float* buf, const uint32_t* __restrict__ hbits,
                                            T* __restrict__ y, int64_t row0, int rows_here, int64_t e) {
  const int tid = threadIdx.x, NT = blockDim.x;
  if (p.K == 1) {
    for (int r = 0; r < rows_here; ++r) {
      T* yr = y + (row0 + r) * p.n + e * p.mh;
      for (int64_t d = tid; d < p.mh; d += NT) from_float(buf[pad(r * p.ns + d)] * p.factor, yr + d);
    }
    return;
  }
  const int cblocks = p.K / kOutBlock;
  const int64_t items = (int64_t)rows_here * cblocks * p.mh;
  for (int64_t it = tid; it < items; it += NT) {
    const int64_t d = it % p.mh;
    const int64_t rc = it / p.mh;
    const int c0 = (int)(rc % cblocks) * kOutBlock;
    const int r = (int)(rc / cblocks);
    const int64_t rbase = r * p.ns;
    float acc[kOutBlock];
#pragma unroll
    for (int j = 0; j < kOutBlock; ++j) acc[j] = 0.0f;
    for (int a0 = 0; a0 < p.K; a0 += 32) {
      uint32_t bits[kOutBlock];
#pragma unroll
      for (int j = 0; j < kOutBlock; ++j) bits[j] = __ldg(hbits + (c0 + j) * p.hwords + (a0 >> 5));
      const int a_end = p.K - a0 < 32 ? p.K - a0 : 32;
      for (int ai = 0; ai < a_end; ++ai) {
        const float z = buf[pad(rbase + (int64_t)(a0 + ai) * p.mh + d)];
#pragma unroll
        for (int j = 0; j < kOutBlock; ++j) acc[j] = ((bits[j] >> ai) & 1u) ? acc[j] - z : acc[j] + z;
      }
    }
    T* yr = y + (row0 + r) * p.n + e * p.mh + d;
#pragma unroll
    for (int j = 0; j < kOutBlock; ++j) from_float(acc[j] * p.factor, yr + (int64_t)(c0 + j) * p.m);
  }
}

template <typename T, int H>
__global__ void __launch_bounds__(kThreads) rht_kernel(const Params p, const T* __restrict__ x,
                                                       const float* __restrict__ signs,
                                                       const uint32_t* __restrict__ hbits, T* __restrict__ y,
                                                       float* __restrict__ scratch) {
  QTIP_DYNAMIC_SMEM(smem);
  float* buf = reinterpret_cast<float*>(smem);
  const int tid = threadIdx.x, NT = blockDim.x;
  float* my_scratch = scratch == nullptr ? nullptr : scratch + blockIdx.x * p.scratch_floats;
  for (int64_t row0 = (int64_t)blockIdx.x * p.rows_per_cta; row0 < p.rows;
       row0 += (int64_t)gridDim.x * p.rows_per_cta) {
    const int rows_here = (int)(p.rows - row0 < p.rows_per_cta ? p.rows - row0 : p.rows_per_cta);
    if (H == 1) {
      for (int r = 0; r < rows_here; ++r) {
        const T* xr = x + (row0 + r) * p.n;
        for (int64_t q = tid; q < p.n; q += NT) {
          const float v = to_float(xr[q]);
          buf[pad(r * p.n + q)] = signs ? v * signs[q] : v;
        }
      }
    } else {
      // H-point butterfly over the top bits of the fast index: chunk e gets sum_f S_H[f][e] x[a, f, d].
      const T* xr = x + row0 * p.n;
      for (int64_t q = tid; q < p.ns; q += NT) {
        const int64_t a = q >> p.lmh, d = q & (p.mh - 1);
        const int64_t src = a * p.m + d;
        float v[H];
#pragma unroll
        for (int f = 0; f < H; ++f) {
          const int64_t i = src + f * p.mh;
          const float xv = to_float(xr[i]);
          v[f] = signs ? xv * signs[i] : xv;
        }
#pragma unroll
        for (int s = 1; s < H; s <<= 1) {
#pragma unroll
          for (int i = 0; i < H; ++i) {
            if ((i & s) == 0) {
              const float u = v[i], w = v[i | s];
              v[i] = u + w;
              v[i | s] = u - w;
            }
          }
        }
        buf[pad(q)] = v[0];
#pragma unroll
        for (int e = 1; e < H; ++e) my_scratch[(e - 1) * p.ns + q] = v[e];
      }
    }
    __syncthreads();
    for (int e = 0; e < H; ++e) {
      if (e > 0) {
        for (int64_t q = tid; q < p.ns; q += NT) buf[pad(q)] = my_scratch[(e - 1) * p.ns + q];
        __syncthreads();
      }
      fwht_shared(buf, (int64_t)rows_here * p.ns, p.lmh);
      store_chunk<T>(p, buf, hbits, y, row0, rows_here, e);
      __syncthreads();  // the buffer is reloaded next
    }
  }
}

}  // namespace rhtk
}  // namespace qtip
