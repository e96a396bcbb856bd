// AVX2 kernel of the fused gemv (see gemv_layout.h for the order of operations, shared with the scalar kernel).
// Each tile is decoded once, 8 weights per vector, and applied to every batch row; batch 1 keeps its
// accumulators in registers across the whole tile row.
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include <vector>

#include "gemv_layout.h"
#include "kernels_avx2.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include "decode_avx2.h"

namespace qtip {
namespace {

// ---- V = 1: vector order -------------------------------------------------------------------------------------

template <Kind kKind>
void values_row_batch1(const Decode8& d, const uint16_t* row_tiles, int64_t tile_cols, int K, const float* xs,
                       uint8_t* bytes, float* y16) {
  __m256 acc[8];
  for (int k = 0; k < 8; ++k) acc[k] = _mm256_setzero_ps();
  const int64_t words = 16 * K;
  for (int64_t j = 0; j < tile_cols; ++j) {
    tile_bytes(row_tiles + j * words, K, bytes);
    const float* xj = xs + j * kTileXs;
    // Fully unrolled, so that the accumulators stay in registers.
#pragma GCC unroll 32
    for (int e = 0; e < kTileVectors; ++e)
      acc[e >> 2] = _mm256_fmadd_ps(decode8<kKind>(d, bytes, e), _mm256_loadu_ps(xj + 8 * (e & 3)), acc[e >> 2]);
  }
  alignas(32) float lanes[kTileAccs];
  for (int k = 0; k < 8; ++k) _mm256_store_ps(lanes + 8 * k, acc[k]);
  reduce_accumulators(lanes, y16);
}

template <Kind kKind>
void values_row_batched(const Decode8& d, const uint16_t* row_tiles, int64_t tile_cols, int K, const float* xs,
                        int64_t R, int64_t n, uint8_t* bytes, float* w, float* acc, float* y, int64_t m) {
  std::fill(acc, acc + R * kTileAccs, 0.0f);
  const int64_t words = 16 * K;
  const int64_t xs_row = (n / 16) * kTileXs;
  for (int64_t j = 0; j < tile_cols; ++j) {
    tile_bytes(row_tiles + j * words, K, bytes);
#pragma GCC unroll 32
    for (int e = 0; e < kTileVectors; ++e) _mm256_store_ps(w + 8 * e, decode8<kKind>(d, bytes, e));
    for (int64_t r = 0; r < R; ++r) {
      float* ar = acc + r * kTileAccs;
      const float* xj = xs + r * xs_row + j * kTileXs;
      __m256 a[8];
      for (int k = 0; k < 8; ++k) a[k] = _mm256_loadu_ps(ar + 8 * k);
#pragma GCC unroll 32
      for (int e = 0; e < kTileVectors; ++e)
        a[e >> 2] = _mm256_fmadd_ps(_mm256_load_ps(w + 8 * e), _mm256_loadu_ps(xj + 8 * (e & 3)), a[e >> 2]);
      for (int k = 0; k < 8; ++k) _mm256_storeu_ps(ar + 8 * k, a[k]);
    }
  }
  alignas(32) float y16[16];
  for (int64_t r = 0; r < R; ++r) {
    reduce_accumulators(acc + r * kTileAccs, y16);
    std::copy(y16, y16 + 16, y + r * m);
  }
}

// ---- V = 2: step order ---------------------------------------------------------------------------------------
// decode8 gives 4 steps as (element 0, element 1) pairs; two of them are split into an element-0 and an
// element-1 vector of 8 steps with one shuffle each, which leaves the steps in the lane order kPairLane.
// Vector k (0..15) of a tile thus holds steps 8k + kPairLane[l]; the x it needs depends on k's parity.

constexpr int kPairLane[8] = {0, 1, 4, 5, 2, 3, 6, 7};
constexpr int64_t kChunkTiles = 16;  // tiles decoded at a time for batches > 1 (16 KiB of weights)

// Vector k's element-0 and element-1 weights of the tile in `bytes`.
template <Kind kKind>
inline void decode_pair_vector(const Decode8& d, const uint8_t* bytes, int k, __m256& w0, __m256& w1) {
  const __m256 a = decode8<kKind>(d, bytes, 2 * k), b = decode8<kKind>(d, bytes, 2 * k + 1);
  w0 = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
  w1 = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
}

// Accumulator lanes (vector k, lane l) back in step order.
inline void pair_lanes_to_steps(const float* lanes, float* steps) {
  for (int k = 0; k < 16; ++k)
    for (int l = 0; l < 8; ++l) steps[8 * k + kPairLane[l]] = lanes[8 * k + l];
}

// Batch 1: the 16 accumulators do not all fit in registers, so the tile row is walked twice, for vectors
// 0..7 and then 8..15 (each state is still decoded once).
template <Kind kKind>
void pairs_row_batch1(const Decode8& d, const uint16_t* row_tiles, int64_t tile_cols, int K, const float* xs,
                      uint8_t* bytes, float* y16) {
  alignas(32) float lanes[kTileSteps];
  const int64_t words = 16 * K;
  for (int half = 0; half < 2; ++half) {
    __m256 acc[8];
    for (int k = 0; k < 8; ++k) acc[k] = _mm256_setzero_ps();
    for (int64_t j = 0; j < tile_cols; ++j) {
      tile_bytes(row_tiles + j * words, K, bytes);
      const float* xj = xs + j * kPairXs;
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        __m256 w0, w1;
        decode_pair_vector<kKind>(d, bytes, 8 * half + k, w0, w1);
        acc[k] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xj + 8 * (k & 1)), acc[k]);
        acc[k] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xj + 16 + 8 * (k & 1)), acc[k]);
      }
    }
    for (int k = 0; k < 8; ++k) _mm256_store_ps(lanes + 64 * half + 8 * k, acc[k]);
  }
  alignas(32) float steps[kTileSteps];
  pair_lanes_to_steps(lanes, steps);
  reduce_pair_accumulators(steps, y16);
}

// Batches: a chunk of tiles is decoded once into w (per tile, vector k's element-0 then element-1 weights), then
// each row runs over the chunk with half of its accumulators in registers at a time.
template <Kind kKind>
void pairs_row_batched(const Decode8& d, const uint16_t* row_tiles, int64_t tile_cols, int K, const float* xs,
                       int64_t R, int64_t n, uint8_t* bytes, float* w, float* acc, float* y, int64_t m) {
  std::fill(acc, acc + R * kTileSteps, 0.0f);
  const int64_t words = 16 * K, xs_row = (n / 16) * kPairXs;
  for (int64_t j0 = 0; j0 < tile_cols; j0 += kChunkTiles) {
    const int64_t count = std::min(kChunkTiles, tile_cols - j0);
    for (int64_t j = 0; j < count; ++j) {
      tile_bytes(row_tiles + (j0 + j) * words, K, bytes);
      for (int k = 0; k < 16; ++k) {
        __m256 w0, w1;
        decode_pair_vector<kKind>(d, bytes, k, w0, w1);
        _mm256_store_ps(w + j * 256 + 16 * k, w0), _mm256_store_ps(w + j * 256 + 16 * k + 8, w1);
      }
    }
    for (int64_t r = 0; r < R; ++r) {
      for (int half = 0; half < 2; ++half) {
        float* ar = acc + r * kTileSteps + 64 * half;
        __m256 a[8];
        for (int k = 0; k < 8; ++k) a[k] = _mm256_loadu_ps(ar + 8 * k);
        for (int64_t j = 0; j < count; ++j) {
          const float* xj = xs + r * xs_row + (j0 + j) * kPairXs;
          const __m256 x0[2] = {_mm256_loadu_ps(xj), _mm256_loadu_ps(xj + 8)};
          const __m256 x1[2] = {_mm256_loadu_ps(xj + 16), _mm256_loadu_ps(xj + 24)};
          const float* wj = w + j * 256 + 128 * half;
#pragma GCC unroll 8
          for (int k = 0; k < 8; ++k) {
            a[k] = _mm256_fmadd_ps(_mm256_load_ps(wj + 16 * k), x0[k & 1], a[k]);
            a[k] = _mm256_fmadd_ps(_mm256_load_ps(wj + 16 * k + 8), x1[k & 1], a[k]);
          }
        }
        for (int k = 0; k < 8; ++k) _mm256_storeu_ps(ar + 8 * k, a[k]);
      }
    }
  }
  alignas(32) float steps[kTileSteps];
  alignas(32) float y16[16];
  for (int64_t r = 0; r < R; ++r) {
    pair_lanes_to_steps(acc + r * kTileSteps, steps);
    reduce_pair_accumulators(steps, y16);
    std::copy(y16, y16 + 16, y + r * m);
  }
}

// ---- Both orders -----------------------------------------------------------------------------------------------

// x rearranged for the order, then each thread walks whole tile rows.
template <Kind kKind>
void gemv_tiles(const float* x, int64_t R, const uint16_t* packed, int64_t m, int64_t n, const Decode8& d, int K,
                float* y) {
  constexpr bool kPairs = kKind != Kind::VALUES;
  constexpr int64_t kXsPerCol = kPairs ? kPairXs : kTileXs, kAccs = kPairs ? kTileSteps : kTileAccs;
  const int64_t tile_cols = n / 16, words = 16 * K, xs_row = tile_cols * kXsPerCol;
  std::vector<float> xs(R * xs_row);
  if constexpr (kPairs) {
    int step_of_lane[16];
    for (int l = 0; l < 16; ++l) step_of_lane[l] = 8 * (l >> 3) + kPairLane[l & 7];
    for (int64_t r = 0; r < R; ++r) rearrange_pair_x(x + r * n, n, step_of_lane, xs.data() + r * xs_row);
  } else {
    for (int64_t r = 0; r < R; ++r) rearrange_x(x + r * n, n, xs.data() + r * xs_row);
  }
  at::parallel_for(0, m / 16, 1, [&](int64_t begin, int64_t end) {
    alignas(32) uint8_t bytes[2 * 16 * 8 + 8];
    alignas(32) float w[kChunkTiles * 256];
    std::vector<float> acc(R > 1 ? R * kAccs : 0);
    for (int64_t i = begin; i < end; ++i) {
      const uint16_t* row_tiles = packed + i * tile_cols * words;
      if constexpr (kPairs) {
        if (R == 1) {
          pairs_row_batch1<kKind>(d, row_tiles, tile_cols, K, xs.data(), bytes, y + 16 * i);
        } else {
          pairs_row_batched<kKind>(d, row_tiles, tile_cols, K, xs.data(), R, n, bytes, w, acc.data(), y + 16 * i, m);
        }
      } else if (R == 1) {
        values_row_batch1<kKind>(d, row_tiles, tile_cols, K, xs.data(), bytes, y + 16 * i);
      } else {
        values_row_batched<kKind>(d, row_tiles, tile_cols, K, xs.data(), R, n, bytes, w, acc.data(), y + 16 * i, m);
      }
    }
  });
}

}  // namespace

bool gemv_fused_avx2(const float* x, int64_t R, const uint16_t* packed, int64_t m, int64_t n, const Code& c,
                     const float* values, float* y) {
  if (!decode8_covers(c.L, c.bits_per_step())) return false;
  const Decode8 d(c, values);
  switch (kind_of(c)) {
    case Kind::HYB: gemv_tiles<Kind::HYB>(x, R, packed, m, n, d, c.K, y); break;
    case Kind::PAIRS: gemv_tiles<Kind::PAIRS>(x, R, packed, m, n, d, c.K, y); break;
    case Kind::VALUES: gemv_tiles<Kind::VALUES>(x, R, packed, m, n, d, c.K, y); break;
  }
  return true;
}

}  // namespace qtip
#pragma GCC pop_options

#else

namespace qtip {
bool gemv_fused_avx2(const float*, int64_t, const uint16_t*, int64_t, int64_t, const Code&, const float*, float*) {
  return false;
}
}  // namespace qtip

#endif
