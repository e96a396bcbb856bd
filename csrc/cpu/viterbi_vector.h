// The vector Viterbi recursions (viterbi_avx2.cpp, viterbi_avx512.cpp: one template, viterbi_simd.h), called by
// viterbi.cpp when dispatch.h allows their level.
#pragma once

#include <cstdint>
#include <vector>

namespace qtip {

constexpr int kAvx2Lanes = 8, kAvx512Lanes = 16;

// Scratch reused across the sequences one thread handles.
struct ViterbiScratch {
  std::vector<float> mins, cost, hot;
};

// A kernel of `lanes` lanes sweeps blocks of `lanes` predecessor groups, so it needs 2^(L-KV) >= lanes groups.
inline bool viterbi_vector_covers(int L, int KV, int lanes) { return (int64_t{1} << (L - KV)) >= lanes; }

// The state values for a kernel of `lanes` lanes: in blocks of `lanes` states, their first values then (V=2)
// their second values, so that one step reads one contiguous stream instead of two.
std::vector<float> viterbi_blocked_table(const float* v0, const float* v1, int L, int V, int lanes);

// The kernels solve up to this many sequences in one sweep over the state table.
constexpr int kViterbiSequences = 2;

// For each of `count` (1..kViterbiSequences) sequences, the same contract and bit-identical result as the
// scalar viterbi_path in viterbi.cpp: the best state of each of `steps` steps of x[i] (steps * V values) in
// path[i]; overlap[i] >= 0 constrains the first state's top L-KV bits and the last state's low L-KV bits
// (second tail-biting pass). ws: one scratch per sequence. `blocked` is viterbi_blocked_table for the kernel's
// lanes. Only call at the kernel's level (dispatch.h) and when it covers (L, KV).
void viterbi_paths_avx2(const float* const* x, int count, int64_t steps, int L, int KV, int V, const float* blocked,
                        const int64_t* overlap, ViterbiScratch* ws, uint32_t* const* path);
void viterbi_paths_avx512(const float* const* x, int count, int64_t steps, int L, int KV, int V,
                          const float* blocked, const int64_t* overlap, ViterbiScratch* ws, uint32_t* const* path);

}  // namespace qtip
