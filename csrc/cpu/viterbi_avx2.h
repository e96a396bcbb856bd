// AVX2 Viterbi recursion (viterbi_avx2.cpp), called by viterbi.cpp when dispatch.h picks the AVX2 path.
#pragma once

#include <cstdint>
#include <vector>

namespace qtip {

// Scratch reused across the sequences one thread handles.
struct ViterbiAvx2Scratch {
  std::vector<float> mins, cost;
};

// The vector kernel handles 2^(L-KV) >= 32 predecessor groups (four 8-lane blocks per group sweep).
inline bool viterbi_avx2_covers(int L, int KV) { return L - KV >= 5; }

// The state values for the vector kernel: in blocks of 8 states, the 8 first values then (V=2) the 8
// second values, so that one step reads one contiguous stream instead of two.
std::vector<float> viterbi_blocked_table(const float* v0, const float* v1, int L, int V);

// Same contract and bit-identical result as the scalar viterbi_path in viterbi.cpp: the best state of each
// of `steps` steps of x (steps * V values); overlap >= 0 constrains the first state's top L-KV bits and the
// last state's low L-KV bits (second tail-biting pass). Only call when cpu_has_avx2() and covers().
void viterbi_path_avx2(const float* x, int64_t steps, int L, int KV, int V, const float* blocked, int64_t overlap,
                       ViterbiAvx2Scratch& ws, uint32_t* path);

}  // namespace qtip
