// How the fused gemv walks a 16x16 tile, shared by the scalar and vector kernels so that all of them accumulate in
// the same order and give bit-identical results. There is one order per V.
//
// V = 1 ("vector order"). A tile's 256 weights, in sequence order p, are taken as 32 vectors of 8 (vector e holds
// p = 8e..8e+7). In the tile order of codes.h, element p = 8e + i sits at column 2(e&3) + 8(i>>2) + (i&1) and row
// (e>>2) + 8((i>>1)&1): the columns depend only on e&3 and the rows only on e>>2. So x is rearranged once per
// call into 4 vectors per tile column (xs), vector e is multiplied by xs[e&3] into accumulator e>>2 (8
// accumulators of 8 lanes per batch row), and after the last tile column each accumulator's lanes are summed
// into its two rows. Per lane: acc = fma(w, x, acc) over tile columns, then vectors 4k..4k+3 in turn.
//
// V = 2 ("step order"). Each of a tile's 128 steps t has its own accumulator per batch row: over the tile
// columns in turn, acc[t] = fma(w[2t], x[col(2t)], acc[t]) then acc[t] = fma(w[2t+1], x[col(2t+1)], acc[t]).
// Step t feeds row (t>>4) + 8(t&1), and after the last tile column each row sums its 8 steps in a fixed tree
// (reduce_pair_accumulators). Which vector lane holds which step is up to each kernel; the columns of step t
// depend only on t mod 16, so each kernel keeps 2 x 16 values of x per tile column.
#pragma once

#include <cmath>
#include <cstdint>

#include "../codes.h"

namespace qtip {

constexpr int kTileVectors = 32;    // vectors of 8 weights per tile
constexpr int kTileXs = 4 * 8;      // floats of rearranged x per tile column and batch row
constexpr int kTileAccs = 8 * 8;    // accumulator floats per batch row
constexpr int kTileSteps = 128;     // steps of a V = 2 tile: accumulators per batch row in step order
constexpr int kPairXs = 2 * 16;     // floats of rearranged x per tile column and batch row in step order

// xs[j * 32 + q * 8 + i] = x[16 j + column of element 8q + i], for one row x of length n.
inline void rearrange_x(const float* x, int64_t n, float* xs) {
  const int64_t tile_cols = n / 16;
  for (int64_t j = 0; j < tile_cols; ++j)
    for (int q = 0; q < 4; ++q)
      for (int i = 0; i < 8; ++i) xs[j * kTileXs + q * 8 + i] = x[16 * j + tile_col(8 * q + i)];
}

// The 16 outputs of one tile row from its 8 accumulators: lanes {0,1,4,5} of accumulator k are row k, lanes
// {2,3,6,7} row k+8, summed pairwise in this fixed order.
inline void reduce_accumulators(const float* acc, float* y16) {
  for (int k = 0; k < 8; ++k) {
    const float* a = acc + 8 * k;
    y16[k] = (a[0] + a[1]) + (a[4] + a[5]);
    y16[k + 8] = (a[2] + a[3]) + (a[6] + a[7]);
  }
}

// The scalar kernel's inner loop over one tile and one batch row, in the lane order of the AVX2 kernel
// (std::fma where it uses vfmadd: one rounding per multiply-add).
inline void accumulate_tile_scalar(const float* w, const float* xs, float* acc) {
  for (int e = 0; e < kTileVectors; ++e) {
    float* a = acc + 8 * (e >> 2);
    const float* xe = xs + 8 * (e & 3);
    const float* we = w + 8 * e;
    for (int i = 0; i < 8; ++i) a[i] = std::fma(we[i], xe[i], a[i]);
  }
}

// Step order: x of one row rearranged for a kernel whose lane l (of 16) holds steps congruent to
// step_of_lane[l] mod 16: xs[j * 32 + f * 16 + l] = x[16 j + column of element 2 * step_of_lane[l] + f].
inline void rearrange_pair_x(const float* x, int64_t n, const int* step_of_lane, float* xs) {
  for (int64_t j = 0; j < n / 16; ++j)
    for (int f = 0; f < 2; ++f)
      for (int l = 0; l < 16; ++l) xs[j * kPairXs + f * 16 + l] = x[16 * j + tile_col(2 * step_of_lane[l] + f)];
}

// Step order: the 16 outputs of one tile row from its 128 step accumulators. Row r < 8 sums steps 16r + 2b and
// row r + 8 steps 16r + 2b + 1 (b = 0..7), as ((b0 + b1) + (b2 + b3)) + ((b4 + b5) + (b6 + b7)).
inline void reduce_pair_accumulators(const float* acc, float* y16) {
  for (int r = 0; r < 8; ++r) {
    for (int f = 0; f < 2; ++f) {
      const float* a = acc + 16 * r + f;
      y16[r + 8 * f] = ((a[0] + a[2]) + (a[4] + a[6])) + ((a[8] + a[10]) + (a[12] + a[14]));
    }
  }
}

// Step order, scalar: one tile's sequence-order weights w against one row's x (its 16 values at this tile
// column) into that row's 128 accumulators.
inline void accumulate_pairs_scalar(const float* w, const float* x16, float* acc) {
  for (int t = 0; t < kTileSteps; ++t) {
    acc[t] = std::fma(w[2 * t], x16[tile_col(2 * t)], acc[t]);
    acc[t] = std::fma(w[2 * t + 1], x16[tile_col(2 * t + 1)], acc[t]);
  }
}

}  // namespace qtip
