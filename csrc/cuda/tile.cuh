// Device-side building blocks of the CUDA kernels: reading a warp's share of a packed 16x16 tile, turning
// trellis windows into weights (fast paths for the paper configurations, codes.h for everything else),
// and the chunked, coalesced tile loader shared by the gemv and dense-decode kernels.
//
// Layout recap (README "Weight layout of gemv"): tile (I, J) of an (m, n) weight is row I*(n/16)+J of
// `packed`, 16K int16 words = 8K 32-bit stream words, one cyclic (tail-biting) stream of 256K bits. Its
// element p = 8g + 2j + f is the mma.m16n8k16 A-fragment element (2j+f) of lane g, so lane g needs the 8
// consecutive elements 8g..8g+7, i.e. the stream bits [8gK, 8gK + (8/V - 1)KV + L), wrapping cyclically.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>

#include "../codes.h"

namespace qtip {
namespace cuda {

constexpr int kWarp = 32;
constexpr int kChunkTiles = 16;    // tiles per warp load: 16 tiles = 512K bytes = K uint4 per lane
constexpr int kMaxWarps = 8;       // warps per block of the tile kernels
constexpr int kHybTableBytes = 32768;  // 512 entries x 64 bytes (replicated, see HybFast)

// ------------------------------------------------------------------------------------ stream words

// A little-endian 32-bit load of int16 words (w0, w1) gives (w1 << 16) | w0; the MSB-first stream wants
// w0 first, i.e. (w0 << 16) | w1.
__device__ __forceinline__ uint32_t stream_word(uint32_t raw) { return __byte_perm(raw, 0u, 0x1032); }

// The bits of one lane, left-aligned: bit 0 of (hi:mid:lo) is stream bit 8*lane*K of the tile. 96 - 24 = 72
// valid bits, enough for the longest span (V=1, K=8, L=16: 7*8 + 16 = 72).
struct LaneBits {
  uint32_t hi, mid, lo;

  // The L-bit window at lane bit r (r + L <= 72), masked to L bits.
  __device__ __forceinline__ uint32_t window(int r, int L) const {
    const uint32_t mask = (1u << L) - 1u;
    if (r + L <= 32) return (hi >> (32 - r - L)) & mask;
    if (r + L <= 64) return __funnelshift_r(mid, hi, 64 - r - L) & mask;
    return __funnelshift_r(lo, mid, 96 - r - L) & mask;
  }
  // Same with L = 16 and without the mask: bits above 15 are garbage (for codes that read only the low
  // 16 bits of an expression that is a polynomial in s, like HYB's s*(s+1)).
  __device__ __forceinline__ uint32_t window16_raw(int r) const {
    if (r + 16 <= 32) return hi >> (16 - r);
    if (r + 16 <= 64) return __funnelshift_r(mid, hi, 48 - r);
    return __funnelshift_r(lo, mid, 80 - r);
  }
};

// Per-lane constants of the window read: which three stream words (cyclic) and the bit offset.
struct LaneWords {
  int w0, w1, w2, off;
  __device__ __forceinline__ void init(int lane, int K) {
    const int nw = 8 * K;  // 32-bit words per tile (>= 8, so one subtraction wraps)
    w0 = (lane * K) >> 2;
    w1 = w0 + 1 >= nw ? w0 + 1 - nw : w0 + 1;
    w2 = w0 + 2 >= nw ? w0 + 2 - nw : w0 + 2;
    off = ((lane * K) & 3) * 8;
  }
  // `tile` points at the tile's 8K stream words (already half-swapped) in shared memory.
  __device__ __forceinline__ LaneBits read(const uint32_t* tile) const {
    const uint32_t a = tile[w0], b = tile[w1], c = tile[w2];
    LaneBits lb;
    lb.hi = __funnelshift_l(b, a, off);  // off = 0 gives a
    lb.mid = __funnelshift_l(c, b, off);
    lb.lo = c << off;
    return lb;
  }
};

// ------------------------------------------------------------------------------------ fragments

// The 8 weights of one lane in A-fragment order, for the element type T of the product:
// half / bf16: 4 packed pairs (register j = elements 2j (low half), 2j+1); float: 8 floats.
template <typename T> struct Frag { uint32_t a[4]; };
template <> struct Frag<float> { float w[8]; };

template <typename T> __device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

template <typename T> __device__ __forceinline__ void set_pair(Frag<T>& f, int j, float lo, float hi) {
  f.a[j] = pack2<T>(lo, hi);
}
template <> __device__ __forceinline__ void set_pair<float>(Frag<float>& f, int j, float lo, float hi) {
  f.w[2 * j] = lo;
  f.w[2 * j + 1] = hi;
}

// A pair of fp16 values given as bits (low half = first element).
template <typename T> __device__ __forceinline__ void set_pair_h2bits(Frag<T>& f, int j, uint32_t bits) {
  const float2 v = __half22float2(*reinterpret_cast<const __half2*>(&bits));
  set_pair<T>(f, j, v.x, v.y);
}
template <> __device__ __forceinline__ void set_pair_h2bits<__half>(Frag<__half>& f, int j, uint32_t bits) {
  f.a[j] = bits;
}

// ------------------------------------------------------------------------------------ decoders
//
// Each decoder turns one lane's LaneBits into its Frag<T>. KT > 0 is a compile-time K (so every window
// offset is a constant and each window costs one shift); KT = 0 reads K at run time.

// Shared-memory table of HYB, replicated so that a warp's 32 lookups rarely collide in a bank: entry i
// occupies 64 bytes, holding 16 copies (4-byte half2/bf162 pairs) or 8 copies (8-byte float2 pairs);
// lane l reads copy l % 16 (l % 8). With Q = 9 the byte offset of entry i = bits 6..14 of h is then simply
// h & 0x7FC0, so an address costs one LOP3. 512 x 64 B = 32 KB.
template <typename T> struct HybPair { using type = uint32_t; static constexpr int copies = 16; };
template <> struct HybPair<float> { using type = float2; static constexpr int copies = 8; };

template <typename T>
__device__ __forceinline__ void fill_hyb_table(char* table, const float* tlut, int tid, int nthreads) {
  using P = typename HybPair<T>::type;
  constexpr int C = HybPair<T>::copies;
  P* t = reinterpret_cast<P*>(table);
  for (int k = tid; k < 512 * C; k += nthreads) {
    const int i = k / C;
    const float a = tlut[2 * i], b = tlut[2 * i + 1];
    if constexpr (sizeof(P) == 8) {
      t[k] = make_float2(a, b);
    } else {
      t[k] = pack2<T>(a, b);
    }
  }
}

// HYB with L = 16, Q = 9 (the shipped configuration), V = 2, table in shared memory.
template <typename T, int KT> struct DecHybFast {
  static constexpr int V = 2;
  static constexpr bool kTable = true;
  const char* table;
  uint32_t lanebits;
  __device__ __forceinline__ void init(const char* smem_table, int lane, const float*, int, int, int) {
    table = smem_table;
    lanebits = sizeof(typename HybPair<T>::type) == 8 ? (uint32_t)(lane & 7) * 8u : (uint32_t)(lane & 15) * 4u;
  }
  __device__ __forceinline__ Frag<T> operator()(const LaneBits& lb, int /*K*/, int /*L*/) const {
    Frag<T> f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t s = lb.window16_raw(j * 2 * KT);  // only the low 16 bits of h matter
      const uint32_t h = s * (s + 1u);
      const char* e = table + ((h & 0x7FC0u) | lanebits);
      if constexpr (std::is_same<T, float>::value) {
        float2 v = *reinterpret_cast<const float2*>(e);
        v.x = __uint_as_float(__float_as_uint(v.x) ^ ((h & 0x8000u) << 16));
        f.w[2 * j] = v.x;
        f.w[2 * j + 1] = v.y;
      } else {
        f.a[j] = *reinterpret_cast<const uint32_t*>(e) ^ (h & 0x8000u);  // sign of element 0 = bit 15
      }
    }
    return f;
  }
};

// 1MAD / 2MAD value of a masked state. Multiplying by the fp32 reciprocal instead of dividing (as codes.h
// does) can differ by one fp32 ulp; the products only promise fp32 rounding, the decode ops stay exact.
__device__ __forceinline__ float byte_sum_fast(uint32_t x) {
  constexpr float kInvStd = 1.0f / 147.800537109375f;
  return __fmul_rn((float)((int)__dp4a(x, 0x01010101u, 0u) - 510), kInvStd);
}

template <typename T, int KT, int MODE> struct DecComputedFast {  // 1mad (1), 2mad (2), 3inst (3); V = 1
  static constexpr int V = 1;
  static constexpr bool kTable = false;
  __device__ __forceinline__ void init(const char*, int, const float*, int, int, int) {}
  __device__ __forceinline__ uint32_t state(const LaneBits& lb, int e, int K, int L) const {
    return lb.window(e * (KT > 0 ? KT : K), KT > 0 ? 16 : L);
  }
  __device__ __forceinline__ Frag<T> operator()(const LaneBits& lb, int K, int L) const {
    Frag<T> f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t s0 = state(lb, 2 * j, K, L), s1 = state(lb, 2 * j + 1, K, L);
      if constexpr (MODE == 3) {
        const uint32_t w0 = ((89226354u * s0 + 64248484u) & 0x8FFF8FFFu) ^ 0x3B603B60u;
        const uint32_t w1 = ((89226354u * s1 + 64248484u) & 0x8FFF8FFFu) ^ 0x3B603B60u;
        // (lo0, lo1) + (hi0, hi1) in one half2 add: the reference's fp16 sum, rounded once.
        const uint32_t lo = __byte_perm(w0, w1, 0x5410), hi = __byte_perm(w0, w1, 0x7632);
        const __half2 sum = __hadd2(*reinterpret_cast<const __half2*>(&lo), *reinterpret_cast<const __half2*>(&hi));
        set_pair_h2bits<T>(f, j, *reinterpret_cast<const uint32_t*>(&sum));
      } else if constexpr (MODE == 1) {
        set_pair<T>(f, j, byte_sum_fast(34038481u * s0 + 76625530u), byte_sum_fast(34038481u * s1 + 76625530u));
      } else {
        uint32_t x0 = 264435761u * s0 + 1013904223u, x1 = 264435761u * s1 + 1013904223u;
        x0 += __umulhi(1664525u, x0);
        x1 += __umulhi(1664525u, x1);
        set_pair<T>(f, j, byte_sum_fast(x0), byte_sum_fast(x1));
      }
    }
    return f;
  }
};

// Any mode, any L, K, Q: codes.h's decode_state with the fp32 table in global memory (read through the
// read-only cache). Correct everywhere, fast nowhere: LUT tables of 2^16 entries do not fit shared memory.
template <typename T, int V_> struct DecGeneric {
  static constexpr int V = V_;
  static constexpr bool kTable = false;
  const float* tlut;
  Mode mode;
  int Q;
  __device__ __forceinline__ void init(const char*, int, const float* t, int mode_, int Q_, int) {
    tlut = t;
    mode = (Mode)mode_;
    Q = Q_;
  }
  __device__ __forceinline__ Frag<T> operator()(const LaneBits& lb, int K, int L) const {
    Frag<T> f;
    float v[8];
#pragma unroll
    for (int i = 0; i < 8 / V; ++i) decode_state(mode, lb.window(i * K * V, L), V, Q, tlut, v + i * V);
#pragma unroll
    for (int j = 0; j < 4; ++j) set_pair<T>(f, j, v[2 * j], v[2 * j + 1]);
    return f;
  }
};

// ------------------------------------------------------------------------------------ tile loader
//
// A warp walks chunks of 16 consecutive tiles of one tile row. A chunk is 512K contiguous bytes, loaded
// as K 16-byte streaming loads per lane (fully coalesced; the last chunk of a row may be partial), put in
// the warp's shared-memory stage with the int16 halves swapped into stream order, and then every tile of
// the chunk is decoded by the whole warp. The next chunk's loads are issued before the current chunk is
// decoded (register double buffer), so one chunk per warp is always in flight.
template <int KT> struct ChunkRegs { uint4 v[KT > 0 ? KT : 8]; };

template <int KT>
__device__ __forceinline__ void load_chunk(ChunkRegs<KT>& r, const uint4* src, int valid, int lane, int K) {
#pragma unroll
  for (int u = 0; u < (KT > 0 ? KT : 8); ++u) {
    const int idx = u * kWarp + lane;
    if ((KT > 0 || u < K) && idx < valid) r.v[u] = __ldcs(src + idx);
  }
}

template <int KT>
__device__ __forceinline__ void store_chunk(const ChunkRegs<KT>& r, uint4* stage, int valid, int lane, int K) {
#pragma unroll
  for (int u = 0; u < (KT > 0 ? KT : 8); ++u) {
    const int idx = u * kWarp + lane;
    if ((KT > 0 || u < K) && idx < valid) {
      uint4 w = r.v[u];
      w.x = stream_word(w.x);
      w.y = stream_word(w.y);
      w.z = stream_word(w.z);
      w.w = stream_word(w.w);
      stage[idx] = w;
    }
  }
}

// Calls on_tile(J, frag) for every tile J in [J0, J1) of tile row I handled by this warp: chunks
// c0 + warp, c0 + warp + nwarps, ... of that row, where chunk c covers tiles [16c, 16c + 16).
// `packed4`: the whole packed trellis as uint4; NT = n/16 tiles per row; stage: this warp's 512K bytes.
template <int KT, class Dec, typename T, class OnTile>
__device__ __forceinline__ void for_each_tile(const uint4* __restrict__ packed4, int64_t I, int NT, int c0, int c1,
                                              int warp, int nwarps, int lane, int K, int L, uint32_t* stage,
                                              const Dec& dec, OnTile&& on_tile) {
  LaneWords lw;
  lw.init(lane, K);
  const int tile_u4 = 2 * K;  // 32K bytes per tile
  ChunkRegs<KT> regs;
  int c = c0 + warp;
  auto chunk_src = [&](int cc) { return packed4 + (I * NT + (int64_t)cc * kChunkTiles) * tile_u4; };
  auto chunk_tiles = [&](int cc) { return min(kChunkTiles, NT - cc * kChunkTiles); };
  if (c < c1) load_chunk<KT>(regs, chunk_src(c), chunk_tiles(c) * tile_u4, lane, K);
  for (; c < c1; c += nwarps) {
    const int ntiles = chunk_tiles(c);
    __syncwarp();
    store_chunk<KT>(regs, reinterpret_cast<uint4*>(stage), ntiles * tile_u4, lane, K);
    __syncwarp();
    const int cn = c + nwarps;
    if (cn < c1) load_chunk<KT>(regs, chunk_src(cn), chunk_tiles(cn) * tile_u4, lane, K);
    for (int j = 0; j < ntiles; ++j) {
      const LaneBits lb = lw.read(stage + j * 8 * K);
      on_tile(c * kChunkTiles + j, dec(lb, K, L));
    }
  }
}

}  // namespace cuda
}  // namespace qtip
