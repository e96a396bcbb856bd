// The vectorised Viterbi recursion, written once over a SIMD type so that the AVX2 (8 lanes) and AVX-512 (16
// lanes) kernels are the same code (see viterbi_vector.h for the contract). Include only from a *_avx2.cpp or
// *_avx512.cpp file, after its target pragma and the definition of its Simd type; everything here has internal
// linkage. A Simd type provides W (lanes), F (float vector), I (int vector) and set1, load, store, stream
// (non-temporal store to a W*4-byte aligned address), fence, add, sub, mul, min (min(a, b) = a < b ? a : b),
// broadcast, lane_groups(KV) (lane >> KV) and permute(v, idx).
//
// The scalar kernel materialises each step's 2^L path costs and then takes the minimum over each group's
// 2^KV predecessors. Here the two are fused: the cost of state s at step t is computed and immediately folded
// into the running minimum of its group at step t+1, so a step reads only the state values and the 2^(L-KV)
// group minima and never writes the 2^L costs. Arithmetic and tie-breaking are those of the scalar kernel
// and of reference.py: cost = best[s >> KV] + (d0*d0 + d1*d1) as separate fp32 multiplies and adds (no FMA;
// the library is built with -ffp-contract=off), strict < while d rises (smallest d wins), and the final
// argmin takes the smallest state among equal costs.
//
// The winning d is not tracked in the sweep (that would cost a compare and a blend per vector): backtracking
// recomputes the few costs it needs, bit for bit, from every step's group minima. Those are double-buffered
// for the sweep, which reads the previous step's all the time, and copied with non-temporal stores into the
// history that backtracking reads: at L=16, K=2 the history is 2 MiB per pass, and written through the caches
// it evicted the state table (512 KiB, read in full at every step) from L2, so that two threads waited on L3.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "viterbi_vector.h"

namespace qtip {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

template <typename Simd>
struct ViterbiSimd {
  using F = typename Simd::F;
  using I = typename Simd::I;
  static constexpr int W = Simd::W;

  // best[s >> KV] for the W states s0..s0+W-1 (s0 a multiple of W). With 2^KV >= W they share one group.
  template <bool kOneGroup>
  static F group_base(const float* prev, int64_t s0, int KV, I lane_group) {
    if (kOneGroup) return Simd::broadcast(prev + (s0 >> KV));
    return Simd::permute(Simd::load(prev + (s0 >> KV)), lane_group);
  }

  // Path cost of W states with values (v0, v1) at a step: base + squared distance to (a, b).
  template <int V>
  static F cost(F v0, F v1, F base, F a, F b) {
    const F d0 = Simd::sub(v0, a);
    F dd = Simd::mul(d0, d0);
    if (V == 2) {
      const F d1 = Simd::sub(v1, b);
      dd = Simd::add(dd, Simd::mul(d1, d1));
    }
    return Simd::add(base, dd);
  }

  // The same for the W states from s0 of the blocked table.
  template <int V>
  static F path_cost(const float* blocked, int64_t s0, F base, F a, F b) {
    const float* blk = blocked + s0 * V;
    return cost<V>(Simd::load(blk), V == 2 ? Simd::load(blk + W) : Simd::set1(0.0f), base, a, b);
  }

  // Step t of P sequences at once, each fused with its predecessor minimum of step t+1: next[p][g] = min over d
  // of cost_t(g + d*G) for sequence p. Each block of state values is loaded once for the P sequences (the
  // sweep is bound by reading the state table, 512 KiB at L=16), and kChains W-lane blocks of groups at a time
  // keep that many independent min chains per sequence (four, or fewer when there are fewer groups).
  template <int V, bool kOneGroup, int P, int kChains>
  static void fused_step(const float* const* prev, const float* blocked, int L, int KV, const float* const* xt,
                         float* const* next) {
    const int64_t G = int64_t{1} << (L - KV);
    const int fan = 1 << KV;
    F a[P], b[P];
    for (int p = 0; p < P; ++p) a[p] = Simd::set1(xt[p][0]), b[p] = Simd::set1(V == 2 ? xt[p][1] : 0.0f);
    const I lane_group = Simd::lane_groups(KV);
    for (int64_t g0 = 0; g0 < G; g0 += kChains * W) {
      F best[P][kChains];
      for (int d = 0; d < fan; ++d) {
        for (int k = 0; k < kChains; ++k) {
          const int64_t s0 = g0 + W * k + d * G;
          const float* blk = blocked + s0 * V;
          const F v0 = Simd::load(blk), v1 = V == 2 ? Simd::load(blk + W) : v0;
          for (int p = 0; p < P; ++p) {
            const F c = cost<V>(v0, v1, group_base<kOneGroup>(prev[p], s0, KV, lane_group), a[p], b[p]);
            best[p][k] = d == 0 ? c : Simd::min(c, best[p][k]);  // c < best ? c : best: an equal later d never wins
          }
        }
      }
      for (int p = 0; p < P; ++p)
        for (int k = 0; k < kChains; ++k) Simd::store(next[p] + g0 + W * k, best[p][k]);
    }
  }

  // Path cost of state s at a step, computed exactly as path_cost does for one lane.
  template <int V>
  static float one_cost(const float* group_min, const float* blocked, int64_t s, int KV, const float* xt) {
    const float* blk = blocked + (s & ~int64_t{W - 1}) * V + (s & (W - 1));
    const float d0 = blk[0] - xt[0];
    float dd = d0 * d0;
    if (V == 2) {
      const float d1 = blk[W] - xt[1];
      dd = dd + d1 * d1;
    }
    return group_min[s >> KV] + dd;
  }

  // The last step's full path costs (for the final argmin).
  template <int V, bool kOneGroup>
  static void last_costs(const float* prev, const float* blocked, int L, int KV, const float* xt, float* cost) {
    const int64_t S = int64_t{1} << L;
    const F a = Simd::set1(xt[0]);
    const F b = Simd::set1(V == 2 ? xt[1] : 0.0f);
    const I lane_group = Simd::lane_groups(KV);
    for (int64_t s0 = 0; s0 < S; s0 += W)
      Simd::store(cost + s0, path_cost<V>(blocked, s0, group_base<kOneGroup>(prev, s0, KV, lane_group), a, b));
  }

  // Smallest state of minimum cost; with overlap >= 0 only states whose low L-KV bits equal it.
  static int64_t final_state(const float* cost, int L, int KV, int64_t overlap) {
    const int64_t S = int64_t{1} << L, G = int64_t{1} << (L - KV);
    if (overlap >= 0) {
      int64_t last = overlap;  // candidates overlap + d*G rise with d, so strict < keeps the smallest
      for (int64_t s = overlap + G; s < S; s += G)
        if (cost[s] < cost[last]) last = s;
      return last;
    }
    F m = Simd::set1(kInf);
    for (int64_t s = 0; s < S; s += W) m = Simd::min(m, Simd::load(cost + s));
    alignas(64) float lanes[W];
    Simd::store(lanes, m);
    float lowest = lanes[0];
    for (int i = 1; i < W; ++i) lowest = std::min(lowest, lanes[i]);
    for (int64_t s = 0; s < S; ++s)
      if (cost[s] == lowest) return s;
    return 0;
  }

  template <int V, bool kOneGroup, int P>
  static void run(const float* const* x, int64_t steps, int L, int KV, const float* blocked, const int64_t* overlap,
                  ViterbiScratch* ws, uint32_t* const* path) {
    const int64_t G = int64_t{1} << (L - KV);
    // Rows of G group minima (+W floats: group_base may read a full vector past the last group), each row
    // aligned for non-temporal stores. hot[p][t&1]: the rows the sweep reads and writes; history[p][t]: the
    // group minima that step t adds its distances to. Row 0 encodes the start constraint: 0, or +inf outside
    // the overlap group.
    const int64_t stride = (G + W + 15) / 16 * 16;
    float* hot[P][2];
    float* history[P];
    for (int p = 0; p < P; ++p) {
      ws[p].hot.resize(2 * stride);
      ws[p].mins.resize(steps * stride + 16);
      hot[p][0] = ws[p].hot.data(), hot[p][1] = ws[p].hot.data() + stride;
      history[p] = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(ws[p].mins.data()) + 63) & ~uintptr_t{63});
      std::fill(hot[p][0], hot[p][0] + stride, overlap[p] >= 0 ? kInf : 0.0f);
      if (overlap[p] >= 0) hot[p][0][overlap[p]] = 0.0f;
      std::copy(hot[p][0], hot[p][0] + stride, history[p]);
    }
    for (int64_t t = 0; t + 1 < steps; ++t) {
      const float* prev[P];
      const float* xt[P];
      float* next[P];
      for (int p = 0; p < P; ++p) prev[p] = hot[p][t & 1], next[p] = hot[p][(t + 1) & 1], xt[p] = x[p] + t * V;
      if (G >= 4 * W) {
        fused_step<V, kOneGroup, P, 4>(prev, blocked, L, KV, xt, next);
      } else if (G >= 2 * W) {
        fused_step<V, kOneGroup, P, 2>(prev, blocked, L, KV, xt, next);
      } else {
        fused_step<V, kOneGroup, P, 1>(prev, blocked, L, KV, xt, next);
      }
      for (int p = 0; p < P; ++p) {
        std::fill(next[p] + G, next[p] + stride, 0.0f);
        float* row = history[p] + (t + 1) * stride;
        for (int64_t i = 0; i < G; i += W) Simd::stream(row + i, Simd::load(next[p] + i));
      }
    }
    Simd::fence();  // orders the streamed history before the reads below (same thread: for form's sake)
    for (int p = 0; p < P; ++p) {
      backtrack<V, kOneGroup>(x[p], steps, L, KV, blocked, overlap[p], hot[p][(steps - 1) & 1], history[p], stride,
                              ws[p], path[p]);
    }
  }

  // The best last state, then each step's best predecessor: the smallest d minimising step t-1's cost over the
  // group's fan, from the same values the vector minimum compared, so the same winner.
  template <int V, bool kOneGroup>
  static void backtrack(const float* x, int64_t steps, int L, int KV, const float* blocked, int64_t overlap,
                        const float* last_mins, const float* history, int64_t stride, ViterbiScratch& ws,
                        uint32_t* path) {
    const int64_t S = int64_t{1} << L, G = int64_t{1} << (L - KV);
    ws.cost.resize(S);
    last_costs<V, kOneGroup>(last_mins, blocked, L, KV, x + (steps - 1) * V, ws.cost.data());
    path[steps - 1] = (uint32_t)final_state(ws.cost.data(), L, KV, overlap);
    const int fan = 1 << KV;
    for (int64_t t = steps - 1; t > 0; --t) {
      const int64_t g = path[t] >> KV;
      const float* m = history + (t - 1) * stride;
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

  // P = 1 or 2 sequences at once (see fused_step).
  template <int P>
  static void paths(const float* const* x, int64_t steps, int L, int KV, int V, const float* blocked,
                    const int64_t* overlap, ViterbiScratch* ws, uint32_t* const* out) {
    const bool one_group = (1 << KV) >= W;
    if (V == 2) {
      if (one_group) run<2, true, P>(x, steps, L, KV, blocked, overlap, ws, out);
      else run<2, false, P>(x, steps, L, KV, blocked, overlap, ws, out);
    } else {
      if (one_group) run<1, true, P>(x, steps, L, KV, blocked, overlap, ws, out);
      else run<1, false, P>(x, steps, L, KV, blocked, overlap, ws, out);
    }
  }

  static void path(const float* const* x, int count, int64_t steps, int L, int KV, int V, const float* blocked,
                   const int64_t* overlap, ViterbiScratch* ws, uint32_t* const* out) {
    if (count == 2) {
      paths<2>(x, steps, L, KV, V, blocked, overlap, ws, out);
    } else {
      paths<1>(x, steps, L, KV, V, blocked, overlap, ws, out);
    }
  }
};

}  // namespace
}  // namespace qtip
