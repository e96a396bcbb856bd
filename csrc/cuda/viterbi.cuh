// CUDA Viterbi for viterbi_quantize: the kernel and its launch plan (plain C++, no torch, so that a host
// emulation can run the very same code). The host wrapper is viterbi.cu.
//
// Semantics are those of csrc/cpu/viterbi.cpp, bit for bit: fp32 path costs computed as
// base + (d0*d0 + d1*d1) with separate roundings (explicit __f*_rn intrinsics: no FMA contraction whatever
// the flags), ties to the smallest predecessor index d, then to the smallest final state; tail-biting as
// SPEC §1 (roll by half the steps, unconstrained pass, overlap = top L-KV bits of the state at the rolled
// step, constrained second pass).
//
// Design.
// * One CTA solves one sequence at a time (a persistent grid walks the batch). The CTA never stores the
//   2^L state costs: the cost of state s at step t is B_t[s >> KV] + dist_t(s), where B_t[g] is the best
//   cost into group g (states sharing s >> KV share their predecessors). Only B (2^(L-KV) floats, double
//   buffered in shared memory) lives across steps; dist is recomputed, so the recursion is exact and small
//   (16 KiB per buffer at L=16, K=2, V=2).
// * A step: new group g takes the min over d < 2^KV of B_old[(g + d*G) >> KV] + dist(g + d*G). A thread
//   owns a block of R consecutive groups (one B_old load serves all R) and a share 1/P of the d range;
//   the P lanes of a group (adjacent lanes of one warp) reduce by shuffles with the (cost, d) order.
// * Backpointers are KV bits per group: after the reduction, lane p of a group contributes bit j*P + p of
//   d to the j-th __ballot_sync, so a warp stores ceil(KV/P) words per owned group slot, exactly
//   32*ceil(KV/P) bits for 32/P groups (KV bits per group when P divides KV; 4 bits at L=16, K=2, V=2).
//   They go to a per-CTA global scratch (L2-resident); thread 0 backtracks through it.
// * Decoded values: HYB reads its 2^Q x 2 table from shared memory, replicated per half-warp lane (16
//   copies) so 64-bit loads are conflict-free; the other modes (and HYB with a table too large) read a
//   (V, 2^L) state table precomputed once per call by codes.h's decode_state, identical to the CPU table.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../codes.h"

#ifndef QTIP_DYNAMIC_SMEM
#define QTIP_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace qtip {
namespace vit {

constexpr int kMaxThreads = 512;
constexpr uint32_t kFullMask = 0xFFFFFFFFu;
constexpr int kHybCopiesLog = 4;                  // 16 copies of the HYB table: one per half-warp lane
constexpr int64_t kHybTableBudget = 64 * 1024;    // bytes of shared memory for the replicated HYB table

struct Plan {
  // code and sequence
  int L, KV, V, Q;
  int steps;              // T / V
  int shift_steps;        // steps / 2 (tail-biting pre-pass roll)
  bool tail_biting;
  int64_t bits, nwords;   // packed stream bits and int16 words per sequence
  // work split
  int logG, logR, logP;   // groups 2^logG, R groups per thread slot, P lanes per group
  int threads;            // CTA size
  int slots, slots_padded, chunks, J;
  bool hyb_shared;        // HYB table in shared memory (else the state table in global memory)
  int copies_log;         // log2 of the HYB table copies
  bool shared_B;          // B buffers in shared memory (else in the per-CTA global scratch)
  int64_t smem_bytes;
  int64_t bp_words;       // backpointer words per CTA
  int64_t scratch_words;  // per CTA: backpointers + path + (global B buffers)
};

inline int ilog2(int64_t v) {
  int k = 0;
  while ((int64_t{1} << (k + 1)) <= v) ++k;
  return k;
}

// The work split for (L, K*V, T). `max_smem` is the per-block shared memory limit (opt-in).
inline Plan make_plan(int L, int K, int V, int Q, bool hyb, int64_t T, bool tail_biting, int64_t max_smem) {
  Plan p{};
  p.L = L;
  p.KV = K * V;
  p.V = V;
  p.Q = Q;
  p.steps = (int)(T / V);
  p.shift_steps = p.steps / 2;
  p.tail_biting = tail_biting;
  p.bits = tail_biting ? T * K : L + (int64_t)K * (T - V);
  p.nwords = (p.bits + 15) / 16;
  p.logG = L - p.KV;
  const int logF = p.KV;
  p.logR = std::min(3, std::min(logF, p.logG));
  // About 64 candidate evaluations per thread per step at small L, 128 at L=16 (512 threads).
  int log_threads = std::max(5, std::min(9, L - 6));
  int logP = log_threads + p.logR - p.logG;
  logP = std::max(0, std::min(logP, std::min(logF, 5)));
  p.logP = logP;
  p.slots = 1 << (p.logG - p.logR + logP);
  p.slots_padded = std::max(32, p.slots);
  log_threads = std::min(log_threads, ilog2(p.slots_padded));
  p.threads = 1 << log_threads;
  p.chunks = p.slots_padded / 32;
  const int P = 1 << logP;
  p.J = (p.KV + P - 1) / P;

  const int64_t red_bytes = 32 * 8 + 16;
  int64_t tab_bytes = 0;
  p.hyb_shared = false;
  p.copies_log = 0;
  if (hyb && (int64_t{8} << Q) <= kHybTableBudget) {
    p.hyb_shared = true;
    p.copies_log = kHybCopiesLog;
    while ((int64_t{8} << (Q + p.copies_log)) > kHybTableBudget) --p.copies_log;
    tab_bytes = int64_t{8} << (Q + p.copies_log);
  }
  const int64_t b_bytes = int64_t{2} * 4 * (int64_t{1} << p.logG);
  p.shared_B = tab_bytes + b_bytes + red_bytes <= max_smem;
  p.smem_bytes = tab_bytes + (p.shared_B ? b_bytes : 0) + red_bytes;
  const int64_t transitions = p.steps > 1 ? p.steps - 1 : 0;
  p.bp_words = transitions * p.chunks * (int64_t{1} << p.logR) * p.J;
  p.scratch_words = p.bp_words + p.steps + (p.shared_B ? 0 : b_bytes / 4);
  return p;
}

struct Args {
  const float* x;          // (B, T) fp32, contiguous
  int64_t B;
  int64_t T;
  const float* hyb_tlut;   // (2^Q, 2) fp32 (hyb_shared)
  const float* table;      // (V, 2^L) fp32 state values (!hyb_shared)
  uint32_t* scratch;       // gridDim.x * plan.scratch_words
  int16_t* packed;         // (B, nwords)
  float* recon;            // (B, T)
};

struct RedSlot {
  float cost;
  uint32_t state;
};

// Lexicographic (cost, key) order: a strictly better cost, or an equal cost with a smaller key.
__device__ __forceinline__ bool better(float c, uint32_t k, float bc, uint32_t bk) {
  return c < bc || (c == bc && k < bk);
}

template <int V>
__device__ __forceinline__ float distance(float base, float v0, float v1, float a, float b) {
  const float d0 = __fsub_rn(v0, a);
  if (V == 1) return __fadd_rn(base, __fmul_rn(d0, d0));
  const float d1 = __fsub_rn(v1, b);
  return __fadd_rn(base, __fadd_rn(__fmul_rn(d0, d0), __fmul_rn(d1, d1)));
}

// Decoded values of state s: HYB through the replicated shared table, else the global state table.
template <int V, bool kHyb>
struct Values {
  const float2* tab;   // kHyb: (2^Q << copies_log) entries, entry (i << copies_log) | copy
  const float* table;  // !kHyb: (V, 2^L)
  int Q, copies_log;
  uint32_t copy, S;

  __device__ __forceinline__ void get(uint32_t s, float& v0, float& v1) const {
    if (kHyb) {
      bool neg;
      const uint32_t i = hyb_index(s, Q, &neg);
      const float2 e = tab[(i << copies_log) | copy];
      v0 = neg ? -e.x : e.x;
      v1 = e.y;
    } else {
      v0 = __ldg(table + s);
      v1 = V == 2 ? __ldg(table + S + s) : 0.0f;
    }
  }
};

// Predecessor of state s at step t (t >= 1) from the backpointers of transition t-1.
template <int R>
__device__ __forceinline__ uint32_t predecessor(const uint32_t* bp, const Plan& p, int t, uint32_t s) {
  const uint32_t g = s >> p.KV;
  const uint32_t r = g & (R - 1);
  const uint32_t u = (g >> p.logR) << p.logP;
  const uint32_t li = u & 31u;
  const uint32_t P = 1u << p.logP;
  const uint32_t maskP = P >= 32 ? kFullMask : (1u << P) - 1u;
  const uint32_t* w = bp + (((int64_t)(t - 1) * p.chunks + (u >> 5)) * R + r) * p.J;
  uint32_t d = 0;
  for (int j = 0; j < p.J; ++j) d |= ((w[j] >> li) & maskP) << (j * P);
  d &= (1u << p.KV) - 1u;
  return g | (d << p.logG);
}

// One Viterbi pass over x (rolled by `roll` steps: step t reads x step (t + roll) mod steps). Groups
// other than `overlap` start at +inf and cannot end the path when overlap >= 0. Returns the final state
// (valid in thread 0).
template <int V, bool kHyb, int R>
__device__ uint32_t viterbi_pass(const Plan& p, const Values<V, kHyb>& val, const float* __restrict__ x,
                                 int roll, int32_t overlap, float* B0, float* B1, uint32_t* bp, RedSlot* red) {
  const int tid = threadIdx.x, NT = blockDim.x, lane = tid & 31;
  const uint32_t G = 1u << p.logG, F = 1u << p.KV, P = 1u << p.logP;
  const float kInf = __int_as_float(0x7F800000);
  for (uint32_t g = tid; g < G; g += NT) B0[g] = (overlap < 0 || (int32_t)g == overlap) ? 0.0f : kInf;
  __syncthreads();
  float* cur = B0;
  float* nxt = B1;
  float fbest = kInf;
  uint32_t fstate = kFullMask;
  for (int t = 0; t < p.steps; ++t) {
    int tx = t + roll;
    if (tx >= p.steps) tx -= p.steps;
    const float a = __ldg(x + (int64_t)tx * V);
    const float b = V == 2 ? __ldg(x + (int64_t)tx * V + 1) : 0.0f;
    const bool last = t == p.steps - 1;
    for (int u0 = 0; u0 < p.slots_padded; u0 += NT) {  // uniform across the CTA
      const uint32_t u = u0 + tid;
      const bool active = (int)u < p.slots;
      const uint32_t part = u & (P - 1);
      const uint32_t g0 = (u >> p.logP) << p.logR;
      float best[R];
      uint32_t bd[R];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        best[r] = kInf;
        bd[r] = part;  // an all-inf group keeps its lane's first d; the reduction then keeps d = 0
      }
      if (active) {
        for (uint32_t d = part; d < F; d += P) {
          const uint32_t sbase = g0 | (d << p.logG);
          const float base = cur[sbase >> p.KV];  // the same for the R groups of the block
#pragma unroll
          for (int r = 0; r < R; ++r) {
            float v0, v1;
            val.get(sbase + r, v0, v1);
            const float c = distance<V>(base, v0, v1, a, b);
            if (c < best[r]) {  // strict: the smallest d of this lane's share wins ties
              best[r] = c;
              bd[r] = d;
            }
          }
        }
      }
      for (uint32_t off = 1; off < P; off <<= 1) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const float oc = __shfl_xor_sync(kFullMask, best[r], off);
          const uint32_t od = __shfl_xor_sync(kFullMask, bd[r], off);
          if (better(oc, od, best[r], bd[r])) {
            best[r] = oc;
            bd[r] = od;
          }
        }
      }
      if (!last) {
        if (active && part == 0) {
#pragma unroll
          for (int r = 0; r < R; ++r) nxt[g0 + r] = best[r];
        }
        uint32_t* w = bp + ((int64_t)t * p.chunks + (u >> 5)) * R * p.J;
#pragma unroll
        for (int r = 0; r < R; ++r) {
          for (int j = 0; j < p.J; ++j) {
            const uint32_t shift = j * P + part;
            const uint32_t bit = (active && shift < 32u) ? (bd[r] >> shift) & 1u : 0u;
            const uint32_t word = __ballot_sync(kFullMask, bit);
            if (lane == 0) w[r * p.J + j] = word;
          }
        }
      } else if (active && part == 0) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const uint32_t g = g0 + r;
          if (overlap >= 0 && (int32_t)g != overlap) continue;
          const uint32_t s = g | (bd[r] << p.logG);
          if (better(best[r], s, fbest, fstate)) {
            fbest = best[r];
            fstate = s;
          }
        }
      }
    }
    if (!last) {
      __syncthreads();
      float* tmp = cur;
      cur = nxt;
      nxt = tmp;
    }
  }
  // Final argmin over the CTA: smallest cost, then smallest state.
  for (int off = 16; off > 0; off >>= 1) {
    const float oc = __shfl_xor_sync(kFullMask, fbest, off);
    const uint32_t os = __shfl_xor_sync(kFullMask, fstate, off);
    if (better(oc, os, fbest, fstate)) {
      fbest = oc;
      fstate = os;
    }
  }
  if (lane == 0) red[tid >> 5] = RedSlot{fbest, fstate};
  __syncthreads();
  uint32_t end = 0;
  if (tid == 0) {
    RedSlot b = red[0];
    for (int w = 1; w < NT / 32; ++w)
      if (better(red[w].cost, red[w].state, b.cost, b.state)) b = red[w];
    end = b.state;
  }
  return end;
}

template <int V, bool kHyb, int R>
__global__ void __launch_bounds__(kMaxThreads) viterbi_kernel(const Plan p, const Args args) {
  QTIP_DYNAMIC_SMEM(smem);
  const int tid = threadIdx.x, NT = blockDim.x;
  int64_t off = 0;
  float2* tab = reinterpret_cast<float2*>(smem);
  if (kHyb) {
    const int entries = 1 << (p.Q + p.copies_log);
    for (int i = tid; i < entries; i += NT) {
      const int row = i >> p.copies_log;
      tab[i] = make_float2(args.hyb_tlut[2 * row], args.hyb_tlut[2 * row + 1]);
    }
    off += int64_t{8} << (p.Q + p.copies_log);
  }
  const uint32_t G = 1u << p.logG;
  uint32_t* scratch = args.scratch + (int64_t)blockIdx.x * p.scratch_words;
  uint32_t* bp = scratch;
  int32_t* path = reinterpret_cast<int32_t*>(scratch + p.bp_words);
  float* B0;
  if (p.shared_B) {
    B0 = reinterpret_cast<float*>(smem + off);
    off += int64_t{8} * G;
  } else {
    B0 = reinterpret_cast<float*>(scratch + p.bp_words + p.steps);
  }
  float* B1 = B0 + G;
  RedSlot* red = reinterpret_cast<RedSlot*>(smem + off);
  int32_t* shared_overlap = reinterpret_cast<int32_t*>(red + 32);

  Values<V, kHyb> val;
  val.tab = tab;
  val.table = args.table;
  val.Q = p.Q;
  val.copies_log = p.copies_log;
  val.copy = (uint32_t)tid & ((1u << p.copies_log) - 1u);
  val.S = 1u << p.L;
  __syncthreads();

  for (int64_t seq = blockIdx.x; seq < args.B; seq += gridDim.x) {
    const float* x = args.x + seq * args.T;
    int32_t overlap = -1;
    if (p.tail_biting) {
      // rolled[i] = x[(i - shift) mod T]: rolled step t is original step (t - shift_steps) mod steps.
      const uint32_t end = viterbi_pass<V, kHyb, R>(p, val, x, p.steps - p.shift_steps, -1, B0, B1, bp, red);
      if (tid == 0) {
        uint32_t s = end;
        for (int t = p.steps - 1; t > p.shift_steps; --t) s = predecessor<R>(bp, p, t, s);
        *shared_overlap = (int32_t)(s >> p.KV);
      }
      __syncthreads();
      overlap = *shared_overlap;
    }
    const uint32_t end = viterbi_pass<V, kHyb, R>(p, val, x, 0, overlap, B0, B1, bp, red);
    if (tid == 0) {
      uint32_t s = end;
      path[p.steps - 1] = (int32_t)s;
      for (int t = p.steps - 1; t > 0; --t) {
        s = predecessor<R>(bp, p, t, s);
        path[t - 1] = (int32_t)s;
      }
    }
    __syncthreads();
    // The stream: the first state's L bits, then the low KV bits of each later state, MSB first.
    int16_t* out = args.packed + seq * p.nwords;
    for (int64_t w = tid; w < p.nwords; w += NT) {
      uint32_t word = 0;
      for (int i = 0; i < 16; ++i) {
        const int64_t pos = w * 16 + i;
        if (pos >= p.bits) break;
        uint32_t bit;
        if (pos < p.L) {
          bit = ((uint32_t)path[0] >> (p.L - 1 - pos)) & 1u;
        } else {
          const int64_t q = pos - p.L;
          const int64_t t = 1 + q / p.KV;
          const int i_in = (int)(q - (t - 1) * p.KV);
          bit = ((uint32_t)path[t] >> (p.KV - 1 - i_in)) & 1u;
        }
        word |= bit << (15 - i);
      }
      out[w] = (int16_t)(uint16_t)word;
    }
    float* rec = args.recon + seq * args.T;
    for (int64_t i = tid; i < args.T; i += NT) {
      const int64_t t = i / V;
      float v[2];
      val.get((uint32_t)path[t], v[0], v[1]);
      rec[i] = v[i - t * V];
    }
    __syncthreads();  // path and the B buffers are reused by the next sequence
  }
}

// The (V, 2^L) table of decoded state values, by codes.h (identical to the CPU StateTable).
__global__ void state_table_kernel(int mode, int L, int V, int Q, const float* tlut, float* out) {
  const uint32_t S = 1u << L;
  for (uint32_t s = blockIdx.x * blockDim.x + threadIdx.x; s < S; s += gridDim.x * blockDim.x) {
    float v[2];
    decode_state((Mode)mode, s, V, Q, tlut, v);
    out[s] = v[0];
    if (V == 2) out[S + s] = v[1];
  }
}

}  // namespace vit
}  // namespace qtip
