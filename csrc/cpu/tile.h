// Decoding one packed 16x16 weight tile (a tail-biting sequence of 256 weights) into row-major floats.
#pragma once

#include "../checks.h"
#include "table.h"

namespace qtip {

inline void decode_tile(const uint16_t* words, const Code& c, const StateTable& table, float* tile) {
  const int64_t bits = kTileWeights * c.K;
  const int V = c.V, KV = c.bits_per_step();
  for (int t = 0; t < kTileWeights / V; ++t) {
    const uint32_t s = read_window(words, (int64_t)t * KV, c.L, bits);
    for (int v = 0; v < V; ++v) {
      const int p = t * V + v;
      tile[tile_row(p) * kTile + tile_col(p)] = table.values[v][s];
    }
  }
}

}  // namespace qtip
