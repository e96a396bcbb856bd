// AVX2 kernel of the fused gemv (see gemv_layout.h for the order of operations, shared with the scalar kernel).
// Each tile is decoded once, 8 weights per vector, and applied to every batch row; batch 1 keeps its 8
// accumulators in registers across the whole tile row.
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include <vector>

#include "gemv_layout.h"
#include "kernels_avx2.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include "decode_avx2.h"

namespace qtip {
namespace {

template <Kind kKind>
void tile_row_batch1(const Decode8& d, const uint16_t* row_tiles, int64_t tile_cols, int K, const float* xs,
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
void tile_row_batched(const Decode8& d, const uint16_t* row_tiles, int64_t tile_cols, int K, const float* xs,
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

}  // namespace

bool gemv_fused_avx2(const float* xs, int64_t R, const uint16_t* packed, int64_t m, int64_t n, const Code& c,
                     const float* values, float* y) {
  if (!decode8_covers(c.L, c.bits_per_step())) return false;
  const Decode8 d(c, values);
  const int64_t tile_cols = n / 16;
  const int64_t words = 16 * c.K;
  auto run = [&](auto kind) {
    constexpr Kind kKind = decltype(kind)::value;
    at::parallel_for(0, m / 16, 1, [&](int64_t begin, int64_t end) {
      alignas(32) uint8_t bytes[2 * 16 * 8 + 8];
      alignas(32) float w[256];
      std::vector<float> acc(R > 1 ? R * kTileAccs : 0);
      for (int64_t i = begin; i < end; ++i) {
        const uint16_t* row_tiles = packed + i * tile_cols * words;
        if (R == 1) {
          tile_row_batch1<kKind>(d, row_tiles, tile_cols, c.K, xs, bytes, y + 16 * i);
        } else {
          tile_row_batched<kKind>(d, row_tiles, tile_cols, c.K, xs, R, n, bytes, w, acc.data(), y + 16 * i, m);
        }
      }
    });
  };
  switch (kind_of(c)) {
    case Kind::HYB: run(std::integral_constant<Kind, Kind::HYB>()); break;
    case Kind::PAIRS: run(std::integral_constant<Kind, Kind::PAIRS>()); break;
    case Kind::VALUES: run(std::integral_constant<Kind, Kind::VALUES>()); break;
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
