// AVX2 kernel of the Viterbi recursion (see viterbi_avx2.h for the contract).
//
// The scalar kernel materialises each step's 2^L path costs and then takes the minimum over each group's
// 2^KV predecessors. Here the two are fused: the cost of state s at step t is computed and immediately folded
// into the running minimum of its group at step t+1, so a step reads only the state values and the 2^(L-KV)
// group minima and never writes the 2^L costs. Arithmetic and tie-breaking are those of the scalar kernel
// and of reference.py: cost = best[s >> KV] + (d0*d0 + d1*d1) as separate fp32 multiplies and adds (no FMA;
// the library is built with -ffp-contract=off), strict < while d rises (smallest d wins), and the final
// argmin takes the smallest state among equal costs.
#include "viterbi_avx2.h"

#include <algorithm>
#include <limits>

#include "dispatch.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

namespace qtip {

std::vector<float> viterbi_blocked_table(const float* v0, const float* v1, int L, int V) {
  const int64_t S = int64_t{1} << L;
  std::vector<float> out(S * V);
  for (int64_t q = 0; q < S; q += 8) {
    for (int i = 0; i < 8; ++i) {
      out[q * V + i] = v0[q + i];
      if (V == 2) out[q * V + 8 + i] = v1[q + i];
    }
  }
  return out;
}

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// best[s >> KV] for the 8 states s0..s0+7 (s0 a multiple of 8). With KV >= 3 they share one group.
template <bool kOneGroup>
inline __m256 group_base(const float* prev, int64_t s0, int KV, __m256i lane_group) {
  if (kOneGroup) return _mm256_broadcast_ss(prev + (s0 >> KV));
  return _mm256_permutevar8x32_ps(_mm256_loadu_ps(prev + (s0 >> KV)), lane_group);
}

// Path cost at step t of the 8 states from s0: base + squared distance to (a, b).
template <int V>
inline __m256 path_cost(const float* blocked, int64_t s0, __m256 base, __m256 a, __m256 b) {
  const float* blk = blocked + s0 * V;
  const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(blk), a);
  __m256 dd = _mm256_mul_ps(d0, d0);
  if (V == 2) {
    const __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(blk + 8), b);
    dd = _mm256_add_ps(dd, _mm256_mul_ps(d1, d1));
  }
  return _mm256_add_ps(base, dd);
}

// Step t fused with the predecessor minimum of step t+1: next[g] = min over d of cost_t(g + d*G). Four 8-lane
// blocks of groups at a time keep four independent min chains. The winning d is not tracked here (that would
// cost a compare and a blend per vector): backtracking recomputes the few costs it needs, bit for bit.
template <int V, bool kOneGroup>
void fused_step(const float* prev, const float* blocked, int L, int KV, const float* xt, float* next) {
  const int64_t G = int64_t{1} << (L - KV);
  const int fan = 1 << KV;
  const __m256 a = _mm256_set1_ps(xt[0]);
  const __m256 b = _mm256_set1_ps(V == 2 ? xt[1] : 0.0f);
  const __m256i lane_group = _mm256_srli_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), KV);
  for (int64_t g0 = 0; g0 < G; g0 += 32) {
    __m256 best[4];
    for (int k = 0; k < 4; ++k) {
      const int64_t s0 = g0 + 8 * k;
      best[k] = path_cost<V>(blocked, s0, group_base<kOneGroup>(prev, s0, KV, lane_group), a, b);
    }
    for (int d = 1; d < fan; ++d) {
      for (int k = 0; k < 4; ++k) {
        const int64_t s0 = g0 + 8 * k + d * G;
        const __m256 c = path_cost<V>(blocked, s0, group_base<kOneGroup>(prev, s0, KV, lane_group), a, b);
        best[k] = _mm256_min_ps(c, best[k]);  // c < best ? c : best: an equal later d never wins
      }
    }
    for (int k = 0; k < 4; ++k) _mm256_storeu_ps(next + g0 + 8 * k, best[k]);
  }
}

// Path cost of state s at a step, computed exactly as path_cost does for one lane.
template <int V>
inline float one_cost(const float* group_min, const float* blocked, int64_t s, int KV, const float* xt) {
  const float* blk = blocked + (s & ~int64_t{7}) * V + (s & 7);
  const float d0 = blk[0] - xt[0];
  float dd = d0 * d0;
  if (V == 2) {
    const float d1 = blk[8] - xt[1];
    dd = dd + d1 * d1;
  }
  return group_min[s >> KV] + dd;
}

// The last step's full path costs (for the final argmin).
template <int V, bool kOneGroup>
void last_costs(const float* prev, const float* blocked, int L, int KV, const float* xt, float* cost) {
  const int64_t S = int64_t{1} << L;
  const __m256 a = _mm256_set1_ps(xt[0]);
  const __m256 b = _mm256_set1_ps(V == 2 ? xt[1] : 0.0f);
  const __m256i lane_group = _mm256_srli_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), KV);
  for (int64_t s0 = 0; s0 < S; s0 += 8)
    _mm256_storeu_ps(cost + s0, path_cost<V>(blocked, s0, group_base<kOneGroup>(prev, s0, KV, lane_group), a, b));
}

// Smallest state of minimum cost; with overlap >= 0 only states whose low L-KV bits equal it.
int64_t final_state(const float* cost, int L, int KV, int64_t overlap) {
  const int64_t S = int64_t{1} << L, G = int64_t{1} << (L - KV);
  if (overlap >= 0) {
    int64_t last = overlap;  // candidates overlap + d*G rise with d, so strict < keeps the smallest
    for (int64_t s = overlap + G; s < S; s += G)
      if (cost[s] < cost[last]) last = s;
    return last;
  }
  __m256 m = _mm256_set1_ps(kInf);
  for (int64_t s = 0; s < S; s += 8) m = _mm256_min_ps(m, _mm256_loadu_ps(cost + s));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float lowest = lanes[0];
  for (int i = 1; i < 8; ++i) lowest = std::min(lowest, lanes[i]);
  for (int64_t s = 0; s < S; ++s)
    if (cost[s] == lowest) return s;
  return 0;
}

template <int V, bool kOneGroup>
void run(const float* x, int64_t steps, int L, int KV, const float* blocked, int64_t overlap,
         ViterbiAvx2Scratch& ws, uint32_t* path) {
  const int64_t S = int64_t{1} << L, G = int64_t{1} << (L - KV);
  // mins[t]: the group minima that step t adds its distances to (+8 floats: group_base may read a full
  // vector past the last group). mins[0] encodes the start constraint: 0, or +inf outside the overlap group.
  const int64_t stride = G + 8;
  ws.mins.resize(steps * stride);
  float* mins = ws.mins.data();
  std::fill(mins, mins + stride, overlap >= 0 ? kInf : 0.0f);
  if (overlap >= 0) mins[overlap] = 0.0f;
  ws.cost.resize(S);
  for (int64_t t = 0; t + 1 < steps; ++t) {
    float* next = mins + (t + 1) * stride;
    fused_step<V, kOneGroup>(mins + t * stride, blocked, L, KV, x + t * V, next);
    std::fill(next + G, next + stride, 0.0f);
  }
  last_costs<V, kOneGroup>(mins + (steps - 1) * stride, blocked, L, KV, x + (steps - 1) * V, ws.cost.data());
  path[steps - 1] = (uint32_t)final_state(ws.cost.data(), L, KV, overlap);
  const int fan = 1 << KV;
  for (int64_t t = steps - 1; t > 0; --t) {
    // The predecessor is the smallest d minimising step t-1's cost over the group's fan: the same values the
    // vector minimum compared, so the same winner.
    const int64_t g = path[t] >> KV;
    const float* m = mins + (t - 1) * stride;
    const float* xt = x + (t - 1) * V;
    int64_t best_s = g;
    float best_c = one_cost<V>(m, blocked, g, KV, xt);
    for (int d = 1; d < fan; ++d) {
      const float c = one_cost<V>(m, blocked, g + d * G, KV, xt);
      if (c < best_c) {
        best_c = c;
        best_s = g + d * G;
      }
    }
    path[t - 1] = (uint32_t)best_s;
  }
}

}  // namespace

void viterbi_path_avx2(const float* x, int64_t steps, int L, int KV, int V, const float* blocked, int64_t overlap,
                       ViterbiAvx2Scratch& ws, uint32_t* path) {
  if (V == 2) {
    if (KV >= 3) run<2, true>(x, steps, L, KV, blocked, overlap, ws, path);
    else run<2, false>(x, steps, L, KV, blocked, overlap, ws, path);
  } else {
    if (KV >= 3) run<1, true>(x, steps, L, KV, blocked, overlap, ws, path);
    else run<1, false>(x, steps, L, KV, blocked, overlap, ws, path);
  }
}

#pragma GCC pop_options

}  // namespace qtip

#else  // no AVX2 build: dispatch.h never selects this path

namespace qtip {
std::vector<float> viterbi_blocked_table(const float*, const float*, int, int) { return {}; }
void viterbi_path_avx2(const float*, int64_t, int, int, int, const float*, int64_t, ViterbiAvx2Scratch&,
                       uint32_t*) {}
}  // namespace qtip

#endif
