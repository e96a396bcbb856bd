// AVX-512 kernels of the fused gemv and of tile decoding for HYB codes (hyb_avx512.h decodes; the order of the
// multiply-adds is gemv_layout.h's step order, shared with the scalar and AVX2 kernels). Accumulator vector q of
// a tile row holds steps 16q .. 16q+15, so x needs one element-0 and one element-1 vector per tile column.
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "gemv_layout.h"
#include "kernels_avx512.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2")
#include "hyb_avx512.h"

namespace qtip {
namespace {

constexpr int64_t kChunkTiles = 16;  // tiles decoded at a time for batches > 1 (16 KiB of weights)

// Batch 1: the 8 accumulators stay in registers across the tile row.
template <int K>
void row_batch1(const HybAvx512& d, const uint16_t* row_tiles, int64_t tile_cols, const float* xs, float* y16) {
  __m512 acc[8];
  for (int q = 0; q < 8; ++q) acc[q] = _mm512_setzero_ps();
  for (int64_t j = 0; j < tile_cols; ++j) {
    __m512i lo, hi;
    load_tile<K>(row_tiles + j * 16 * K, lo, hi);
    const __m512 x0 = _mm512_loadu_ps(xs + j * kPairXs), x1 = _mm512_loadu_ps(xs + j * kPairXs + 16);
    for (int g = 0; g < 2; ++g) {
      __m512 e0[4], e1[4];
      hyb_decode_group(d, lo, hi, g, e0, e1);
      for (int r = 0; r < 4; ++r) {
        acc[4 * g + r] = _mm512_fmadd_ps(e0[r], x0, acc[4 * g + r]);
        acc[4 * g + r] = _mm512_fmadd_ps(e1[r], x1, acc[4 * g + r]);
      }
    }
  }
  alignas(64) float steps[kTileSteps];
  for (int q = 0; q < 8; ++q) _mm512_store_ps(steps + 16 * q, acc[q]);
  reduce_pair_accumulators(steps, y16);
}

// One tile's weights as 16 vectors: for g, r: element 0 then element 1 of steps 64g + 16r + lane.
template <int K>
inline void decode_tile_vectors(const HybAvx512& d, const uint16_t* words, float* w) {
  __m512i lo, hi;
  load_tile<K>(words, lo, hi);
  for (int g = 0; g < 2; ++g) {
    __m512 e0[4], e1[4];
    hyb_decode_group(d, lo, hi, g, e0, e1);
    for (int r = 0; r < 4; ++r) {
      _mm512_storeu_ps(w + 16 * (8 * g + 2 * r), e0[r]);
      _mm512_storeu_ps(w + 16 * (8 * g + 2 * r + 1), e1[r]);
    }
  }
}

// Batches: a chunk of tiles is decoded once, then each row runs over the chunk with its accumulators in
// registers (loaded from and stored to acc between chunks).
template <int K>
void row_batched(const HybAvx512& d, const uint16_t* row_tiles, int64_t tile_cols, const float* xs, int64_t R,
                 int64_t xs_row, float* w, float* acc, float* y, int64_t m) {
  std::fill(acc, acc + R * kTileSteps, 0.0f);
  for (int64_t j0 = 0; j0 < tile_cols; j0 += kChunkTiles) {
    const int64_t count = std::min(kChunkTiles, tile_cols - j0);
    for (int64_t j = 0; j < count; ++j)
      decode_tile_vectors<K>(d, row_tiles + (j0 + j) * 16 * K, w + j * kTileWeights);
    for (int64_t r = 0; r < R; ++r) {
      float* ar = acc + r * kTileSteps;
      __m512 a[8];
      for (int q = 0; q < 8; ++q) a[q] = _mm512_loadu_ps(ar + 16 * q);
      for (int64_t j = 0; j < count; ++j) {
        const float* xj = xs + r * xs_row + (j0 + j) * kPairXs;
        const __m512 x0 = _mm512_loadu_ps(xj), x1 = _mm512_loadu_ps(xj + 16);
        const float* wj = w + j * kTileWeights;
        for (int q = 0; q < 8; ++q) {
          a[q] = _mm512_fmadd_ps(_mm512_loadu_ps(wj + 32 * q), x0, a[q]);
          a[q] = _mm512_fmadd_ps(_mm512_loadu_ps(wj + 32 * q + 16), x1, a[q]);
        }
      }
      for (int q = 0; q < 8; ++q) _mm512_storeu_ps(ar + 16 * q, a[q]);
    }
  }
  alignas(64) float y16[16];
  for (int64_t r = 0; r < R; ++r) {
    reduce_pair_accumulators(acc + r * kTileSteps, y16);
    std::copy(y16, y16 + 16, y + r * m);
  }
}

template <int K>
void gemv_hyb(const HybAvx512& d, const float* x, int64_t R, const uint16_t* packed, int64_t m, int64_t n, float* y) {
  const int64_t tile_cols = n / 16, xs_row = tile_cols * kPairXs;
  int step_of_lane[16];
  for (int l = 0; l < 16; ++l) step_of_lane[l] = l;
  std::vector<float> xs(R * xs_row);
  for (int64_t r = 0; r < R; ++r) rearrange_pair_x(x + r * n, n, step_of_lane, xs.data() + r * xs_row);
  at::parallel_for(0, m / 16, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> w;
    std::vector<float> acc;
    if (R > 1) w.resize(kChunkTiles * kTileWeights), acc.resize(R * kTileSteps);
    for (int64_t i = begin; i < end; ++i) {
      const uint16_t* row_tiles = packed + i * tile_cols * 16 * K;
      if (R == 1) {
        row_batch1<K>(d, row_tiles, tile_cols, xs.data(), y + 16 * i);
      } else {
        row_batched<K>(d, row_tiles, tile_cols, xs.data(), R, xs_row, w.data(), acc.data(), y + 16 * i, m);
      }
    }
  });
}

template <int K>
void decode_tiles(const HybAvx512& d, const uint16_t* packed, int64_t tiles, float* out) {
  // Sequence order interleaves the two elements of each step.
  alignas(64) static const int first[16] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
  alignas(64) static const int second[16] = {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i i0 = _mm512_load_si512(first), i1 = _mm512_load_si512(second);
  at::parallel_for(0, tiles, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      __m512i lo, hi;
      load_tile<K>(packed + t * 16 * K, lo, hi);
      float* o = out + t * kTileWeights;
      for (int g = 0; g < 2; ++g) {
        __m512 e0[4], e1[4];
        hyb_decode_group(d, lo, hi, g, e0, e1);
        for (int r = 0; r < 4; ++r) {
          float* steps = o + 2 * (64 * g + 16 * r);
          _mm512_storeu_ps(steps, _mm512_permutex2var_ps(e0[r], i0, e1[r]));
          _mm512_storeu_ps(steps + 16, _mm512_permutex2var_ps(e0[r], i1, e1[r]));
        }
      }
    }
  });
}

// For a code the register kernel covers: fn(decoder, K as an integral_constant 1..4); false (fn not run) for any
// other code, or a table that is not exactly fp16.
template <typename Fn>
bool with_hyb_decoder(const Code& c, Fn&& fn) {
  if (!hyb_avx512_covers(c)) return false;
  const std::vector<uint16_t> halves = hyb_table_halves(c);
  if (halves.empty()) return false;
  const HybAvx512 d(c, halves);
  switch (c.K) {
    case 1: fn(d, std::integral_constant<int, 1>()); break;
    case 2: fn(d, std::integral_constant<int, 2>()); break;
    case 3: fn(d, std::integral_constant<int, 3>()); break;
    case 4: fn(d, std::integral_constant<int, 4>()); break;
  }
  return true;
}

}  // namespace

bool gemv_fused_avx512(const float* x, int64_t R, const uint16_t* packed, int64_t m, int64_t n, const Code& c,
                       float* y) {
  return with_hyb_decoder(c, [&](const HybAvx512& d, auto k) {
    gemv_hyb<decltype(k)::value>(d, x, R, packed, m, n, y);
  });
}

bool decode_tiles_avx512(const uint16_t* packed, int64_t tiles, const Code& c, float* out) {
  return with_hyb_decoder(c, [&](const HybAvx512& d, auto k) {
    decode_tiles<decltype(k)::value>(d, packed, tiles, out);
  });
}

}  // namespace qtip
#pragma GCC pop_options

#else

namespace qtip {
bool gemv_fused_avx512(const float*, int64_t, const uint16_t*, int64_t, int64_t, const Code&, float*) { return false; }
bool decode_tiles_avx512(const uint16_t*, int64_t, const Code&, float*) { return false; }
}  // namespace qtip

#endif
