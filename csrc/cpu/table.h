// The decoded value of every state, as a structure of arrays: values[v][s]. The CPU kernels decode
// through this table (2^L entries) instead of re-running the code per weight.
#pragma once

#include <ATen/Parallel.h>

#include <vector>

#include "../checks.h"

namespace qtip {

struct StateTable {
  int V;
  std::vector<float> values[2];

  explicit StateTable(const Code& c) : V(c.V) {
    const int64_t n = c.num_states();
    for (int v = 0; v < V; ++v) values[v].resize(n);
    const float* tlut = c.table_ptr();
    at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
      float out[2];
      for (int64_t s = begin; s < end; ++s) {
        decode_state(c.mode, (uint32_t)s, c.V, c.Q, tlut, out);
        for (int v = 0; v < V; ++v) values[v][s] = out[v];
      }
    });
  }
};

}  // namespace qtip
