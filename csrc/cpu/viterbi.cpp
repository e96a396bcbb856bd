// CPU kernel of viterbi_quantize: minimum-squared-error path through the bitshift trellis, with the
// two-pass tail-biting of SPEC §1 (paper Alg. 4). Path costs are fp32.
//
// Tie-breaking rule (shared with the reference and the CUDA kernel): among equal predecessor costs the
// smallest predecessor index d wins; among equal final costs the smallest state wins.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "../checks.h"
#include "dispatch.h"
#include "table.h"
#include "viterbi_vector.h"

namespace qtip {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Constraint on the first and last state, for the second tail-biting pass: the first state's top L-KV
// bits and the last state's low L-KV bits must both equal `overlap`. overlap < 0 means unconstrained.
struct Ends {
  int64_t overlap = -1;
};

// Per-thread scratch, reused across the sequences a thread handles.
struct Workspace {
  std::vector<float> cost, next, best;
  std::vector<uint16_t> back;  // back[t * groups + g]: the winning predecessor index d at step t
};

// Runs the Viterbi recursion on one sequence x[0..T) and writes the best state of each step.
void viterbi_path(const float* x, int64_t steps, const Code& c, const StateTable& table, Ends ends,
                  Workspace& ws, uint32_t* path) {
  const int KV = c.bits_per_step(), V = c.V;
  const int64_t S = c.num_states();
  const int64_t groups = S >> KV;            // states sharing s >> KV share their predecessors
  const int64_t fan = int64_t{1} << KV;      // predecessors per state: (s >> KV) + d * groups, d < fan
  ws.cost.resize(S);
  ws.next.resize(S);
  ws.best.resize(groups);
  ws.back.resize(steps * groups);
  float* cost = ws.cost.data();
  float* next = ws.next.data();
  float* best = ws.best.data();
  const float* v0 = table.values[0].data();
  const float* v1 = V == 2 ? table.values[1].data() : nullptr;

  auto add_distance = [&](const float* xt, float* dst, auto base_of) {
    if (V == 1) {
      const float a = xt[0];
      for (int64_t s = 0; s < S; ++s) {
        const float d0 = v0[s] - a;
        dst[s] = base_of(s) + d0 * d0;
      }
    } else {
      const float a = xt[0], b = xt[1];
      for (int64_t s = 0; s < S; ++s) {
        const float d0 = v0[s] - a, d1 = v1[s] - b;
        dst[s] = base_of(s) + (d0 * d0 + d1 * d1);
      }
    }
  };

  add_distance(x, cost, [](int64_t) { return 0.0f; });
  if (ends.overlap >= 0) {
    for (int64_t s = 0; s < S; ++s)
      if ((s >> KV) != ends.overlap) cost[s] = kInf;
  }
  for (int64_t t = 1; t < steps; ++t) {
    uint16_t* back = ws.back.data() + t * groups;
    std::copy(cost, cost + groups, best);
    std::fill(back, back + groups, uint16_t{0});
    for (int64_t d = 1; d < fan; ++d) {
      const float* cd = cost + d * groups;
      for (int64_t g = 0; g < groups; ++g) {
        if (cd[g] < best[g]) {
          best[g] = cd[g];
          back[g] = (uint16_t)d;
        }
      }
    }
    add_distance(x + t * V, next, [&](int64_t s) { return best[s >> KV]; });
    std::swap(cost, next);
  }
  const int64_t low_mask = groups - 1;
  int64_t last = -1;
  float last_cost = kInf;
  for (int64_t s = 0; s < S; ++s) {
    if (ends.overlap >= 0 && (s & low_mask) != ends.overlap) continue;
    if (last < 0 || cost[s] < last_cost) {
      last = s;
      last_cost = cost[s];
    }
  }
  path[steps - 1] = (uint32_t)last;
  for (int64_t t = steps - 1; t > 0; --t) {
    const int64_t g = path[t] >> KV;
    path[t - 1] = (uint32_t)(g + ws.back[t * groups + g] * groups);
  }
}

// Writes the stream: the first state's L bits, then the low K*V bits of each later state, MSB first,
// truncated to `bits` (with tail-biting the dropped tail equals the stream's head).
void pack_path(const uint32_t* path, int64_t steps, const Code& c, int64_t bits, uint16_t* words, int64_t nwords) {
  std::fill(words, words + nwords, uint16_t{0});
  int64_t pos = 0;
  auto put = [&](uint32_t value, int width) {
    for (int i = width - 1; i >= 0 && pos < bits; --i, ++pos) {
      if ((value >> i) & 1u) words[pos >> 4] |= (uint16_t)(1u << (15 - (pos & 15)));
    }
  };
  put(path[0], c.L);
  for (int64_t t = 1; t < steps; ++t) put(path[t] & ((1u << c.bits_per_step()) - 1u), c.bits_per_step());
}

std::tuple<at::Tensor, at::Tensor> viterbi_quantize_cpu(const at::Tensor& x, int64_t L, int64_t K, int64_t V,
                                                        const std::string& mode,
                                                        const c10::optional<at::Tensor>& tlut, bool tail_biting) {
  const Code code = check_code(L, K, V, mode, tlut, x.device());
  const at::Tensor xf = check_viterbi_input(x, code, tail_biting);
  const int64_t B = xf.size(0), T = xf.size(1);
  const int64_t bits = stream_bits(T, code, tail_biting);
  const int64_t nwords = (bits + 15) / 16;
  at::Tensor packed = at::empty({B, nwords}, x.options().dtype(at::kShort));
  at::Tensor recon = at::empty({B, T}, x.options().dtype(at::kFloat));
  if (B == 0) return {packed, recon};

  const StateTable table(code);
  // The vector kernels read the state values in their own blocked layout; they give the same paths bit for bit.
  const CpuLevel level = cpu_level();
  const int KV = code.bits_per_step();
  const int lanes = level >= CpuLevel::AVX512 && viterbi_vector_covers(code.L, KV, kAvx512Lanes) ? kAvx512Lanes
                    : level >= CpuLevel::AVX2 && viterbi_vector_covers(code.L, KV, kAvx2Lanes)  ? kAvx2Lanes
                                                                                                 : 0;
  const std::vector<float> blocked =
      lanes ? viterbi_blocked_table(table.values[0].data(), V == 2 ? table.values[1].data() : nullptr, code.L,
                                    code.V, lanes)
            : std::vector<float>();
  const int64_t steps = T / V;
  const int64_t shift_steps = steps / 2;  // the tail-biting pre-pass rolls x by half the sequence
  const float* xp = xf.data_ptr<float>();
  uint16_t* pp = reinterpret_cast<uint16_t*>(packed.data_ptr<int16_t>());
  float* rp = recon.data_ptr<float>();
  // The vector kernels solve sequences in pairs (one sweep over the state table serves both).
  const int group = lanes ? kViterbiSequences : 1;
  at::parallel_for(0, (B + group - 1) / group, 1, [&](int64_t begin, int64_t end) {
    Workspace ws;
    ViterbiScratch ws_vector[kViterbiSequences];
    std::vector<uint32_t> paths(kViterbiSequences * steps);
    uint32_t* const out[kViterbiSequences] = {paths.data(), paths.data() + steps};
    std::vector<float> rolled(kViterbiSequences * T);
    auto best_paths = [&](const float* const* seqs, int count, const int64_t* overlap) {
      if (lanes == kAvx512Lanes) {
        viterbi_paths_avx512(seqs, count, steps, code.L, KV, code.V, blocked.data(), overlap, ws_vector, out);
      } else if (lanes == kAvx2Lanes) {
        viterbi_paths_avx2(seqs, count, steps, code.L, KV, code.V, blocked.data(), overlap, ws_vector, out);
      } else {
        for (int i = 0; i < count; ++i) viterbi_path(seqs[i], steps, code, table, Ends{overlap[i]}, ws, out[i]);
      }
    };
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t first = chunk * group;
      const int count = (int)std::min<int64_t>(group, B - first);
      const float* seqs[kViterbiSequences];
      int64_t overlap[kViterbiSequences] = {-1, -1};
      for (int i = 0; i < count; ++i) seqs[i] = xp + (first + i) * T;
      if (tail_biting) {
        // rolled[i] = x[(i - shift) mod T]: original position 0 lands on step shift_steps.
        const int64_t shift = shift_steps * V;
        const float* rolled_seqs[kViterbiSequences];
        for (int i = 0; i < count; ++i) {
          float* r = rolled.data() + i * T;
          for (int64_t j = 0; j < T; ++j) r[j] = seqs[i][(j - shift + T) % T];
          rolled_seqs[i] = r;
        }
        const int64_t free_ends[kViterbiSequences] = {-1, -1};
        best_paths(rolled_seqs, count, free_ends);
        for (int i = 0; i < count; ++i) overlap[i] = out[i][shift_steps] >> KV;
      }
      best_paths(seqs, count, overlap);
      for (int i = 0; i < count; ++i) {
        const int64_t b = first + i;
        pack_path(out[i], steps, code, bits, pp + b * nwords, nwords);
        for (int64_t t = 0; t < steps; ++t)
          for (int v = 0; v < V; ++v) rp[b * T + t * V + v] = table.values[v][out[i][t]];
      }
    }
  });
  return {packed, recon};
}

}  // namespace

std::vector<float> viterbi_blocked_table(const float* v0, const float* v1, int L, int V, int lanes) {
  const int64_t S = int64_t{1} << L;
  std::vector<float> out(S * V);
  for (int64_t q = 0; q < S; q += lanes) {
    for (int i = 0; i < lanes; ++i) {
      out[q * V + i] = v0[q + i];
      if (V == 2) out[q * V + lanes + i] = v1[q + i];
    }
  }
  return out;
}

TORCH_LIBRARY_IMPL(qtip, CPU, m) { m.impl("viterbi_quantize", &viterbi_quantize_cpu); }

}  // namespace qtip
