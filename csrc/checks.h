// Argument validation shared by the CPU and CUDA kernels: every bad (L, K, V, mode, tlut) is rejected
// here with a message naming the offending value, before any kernel runs.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <string>

#include "codes.h"

namespace qtip {

// A validated code: the decode mode plus the trellis parameters and the table it reads.
struct Code {
  Mode mode;
  int L, K, V;
  int Q;              // log2 of the HYB table's rows (0 for other modes)
  at::Tensor table;   // contiguous fp32 (rows, V) table for LUT and HYB; undefined otherwise

  int64_t num_states() const { return int64_t{1} << L; }
  int bits_per_step() const { return K * V; }
  const float* table_ptr() const { return table.defined() ? table.data_ptr<float>() : nullptr; }
};

inline Mode parse_mode(const std::string& name) {
  if (name == "lut") return Mode::LUT;
  if (name == "1mad") return Mode::ONE_MAD;
  if (name == "2mad") return Mode::TWO_MAD;
  if (name == "3inst") return Mode::THREE_INST;
  if (name == "hyb") return Mode::HYB;
  TORCH_CHECK(false, "qtip: unknown decode mode '", name, "'; expected one of lut, 1mad, 2mad, 3inst, hyb");
}

inline int exact_log2(int64_t x) {
  if (x <= 0 || (x & (x - 1)) != 0) return -1;
  int k = 0;
  while ((int64_t{1} << k) < x) ++k;
  return k;
}

// Validates the trellis parameters and the table of `mode`, and moves the table to fp32 on `device`.
inline Code check_code(int64_t L, int64_t K, int64_t V, const std::string& mode_name,
                       const c10::optional<at::Tensor>& tlut, const at::Device& device) {
  const Mode mode = parse_mode(mode_name);
  TORCH_CHECK(L >= 2 && L <= 16, "qtip: L (state bits) must be in [2, 16], got L=", L);
  TORCH_CHECK(K >= 1 && K <= 8, "qtip: K (bits per weight) must be in [1, 8], got K=", K);
  TORCH_CHECK(V == 1 || V == 2, "qtip: V (weights per step) must be 1 or 2, got V=", V);
  TORCH_CHECK(K * V < L, "qtip: need K*V < L (each step must keep some state bits), got K=", K, ", V=", V,
              ", L=", L);
  Code code{mode, (int)L, (int)K, (int)V, 0, at::Tensor()};
  const bool needs_table = mode == Mode::LUT || mode == Mode::HYB;
  if (!needs_table) {
    TORCH_CHECK(V == 1, "qtip: mode '", mode_name, "' decodes one weight per state (V=1), got V=", V);
    TORCH_CHECK(!tlut.has_value(), "qtip: mode '", mode_name, "' is computed, it takes no tlut (pass None)");
    return code;
  }
  TORCH_CHECK(tlut.has_value(), "qtip: mode '", mode_name, "' needs a tlut tensor, got None");
  const at::Tensor& t = *tlut;
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "qtip: tlut must be a float tensor, got ", t.scalar_type());
  TORCH_CHECK(t.device() == device, "qtip: tlut is on ", t.device(), " but the input is on ", device);
  if (mode == Mode::LUT) {
    TORCH_CHECK(t.dim() == 2 && t.size(0) == (int64_t{1} << L) && t.size(1) == V,
                "qtip: mode 'lut' needs a tlut of shape (2^L, V) = (", int64_t{1} << L, ", ", V, "), got ",
                t.sizes());
  } else {
    TORCH_CHECK(V == 2, "qtip: mode 'hyb' decodes two weights per state (V=2), got V=", V);
    const int Q = t.dim() == 2 ? exact_log2(t.size(0)) : -1;
    TORCH_CHECK(t.dim() == 2 && t.size(1) == 2 && Q >= 1 && Q <= 15,
                "qtip: mode 'hyb' needs a tlut of shape (2^Q, 2) with 1 <= Q <= 15, got ", t.sizes());
    code.Q = Q;
  }
  code.table = t.to(at::kFloat).contiguous();
  return code;
}

// Bits in one packed sequence of T weights: cyclic T*K with tail-biting, else the first state's L bits
// plus K*V per further step.
inline int64_t stream_bits(int64_t T, const Code& c, bool tail_biting) {
  return tail_biting ? T * c.K : c.L + (int64_t)c.K * (T - c.V);
}

inline void check_sequence_length(int64_t T, const Code& c, bool tail_biting) {
  TORCH_CHECK(T >= c.V && T % c.V == 0, "qtip: sequence length T must be a positive multiple of V=", c.V,
              ", got T=", T);
  TORCH_CHECK(!tail_biting || T * c.K >= c.L, "qtip: a tail-biting stream needs T*K >= L, got T=", T,
              ", K=", c.K, ", L=", c.L);
}

// Resolves the sequence length T of packed (B, words) streams (T = -1: inferred as 16*words/K, tail-biting
// only) and checks that the word count fits T.
inline int64_t check_streams(const at::Tensor& packed, const Code& c, int64_t T, bool tail_biting) {
  const int64_t words = packed.size(1);
  if (T < 0) {
    TORCH_CHECK(tail_biting, "qtip: bitshift_decode without tail-biting needs an explicit T");
    TORCH_CHECK((words * 16) % c.K == 0 && ((words * 16) / c.K) % c.V == 0, "qtip: cannot infer T from ", words,
                " words at K=", c.K, ", V=", c.V, "; pass T explicitly");
    T = words * 16 / c.K;
  }
  check_sequence_length(T, c, tail_biting);
  const int64_t needed = (stream_bits(T, c, tail_biting) + 15) / 16;
  TORCH_CHECK(needed == words, "qtip: packed has ", words, " words per sequence but T=", T, " at K=", c.K, ", V=",
              c.V, ", L=", c.L, (tail_biting ? " (tail-biting)" : ""), " needs ", needed);
  return T;
}

// viterbi_quantize's input x (B, T): checked, as contiguous fp32.
inline at::Tensor check_viterbi_input(const at::Tensor& x, const Code& c, bool tail_biting) {
  TORCH_CHECK(x.dim() == 2, "qtip: viterbi_quantize needs x of shape (B, T), got ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "qtip: viterbi_quantize needs float x, got ", x.scalar_type());
  check_sequence_length(x.size(1), c, tail_biting);
  at::Tensor xf = x.to(at::kFloat).contiguous();
  // A host sync on CUDA, before any launch: the same error on every device.
  TORCH_CHECK(xf.size(0) == 0 || at::isfinite(xf).all().item<bool>(), "qtip: viterbi_quantize input has NaN or inf values");
  return xf;
}

// rht's optional signs (n,) on x's device, converted to `compute`; undefined when absent.
inline at::Tensor check_rht_signs(const c10::optional<at::Tensor>& signs, const at::Tensor& x, int64_t n,
                                  at::ScalarType compute) {
  if (!signs.has_value()) return at::Tensor();
  TORCH_CHECK(signs->dim() == 1 && signs->size(0) == n, "qtip: rht signs must have shape (", n, "), got ",
              signs->sizes());
  TORCH_CHECK(signs->device() == x.device(), "qtip: rht signs are on ", signs->device(), " but x is on ", x.device());
  TORCH_CHECK(at::isFloatingType(signs->scalar_type()), "qtip: rht signs must be float, got ", signs->scalar_type());
  return signs->to(compute).contiguous();
}

// 16x16 tiles: 256 weights, one tail-biting sequence, 16K words each.
constexpr int64_t kTile = 16;
constexpr int64_t kTileWeights = kTile * kTile;

inline void check_gemv_shapes(const at::Tensor& x, const at::Tensor& packed, int64_t m, int64_t n, const Code& c) {
  TORCH_CHECK(m > 0 && n > 0 && m % kTile == 0 && n % kTile == 0,
              "qtip: gemv needs m and n to be positive multiples of 16, got m=", m, ", n=", n);
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == n, "qtip: gemv input's last dim must be n=", n, ", got shape ",
              x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "qtip: gemv input must be float, got ", x.scalar_type());
  const int64_t tiles = (m / kTile) * (n / kTile);
  const int64_t words = kTileWeights * c.K / 16;
  TORCH_CHECK(packed.scalar_type() == at::kShort, "qtip: packed trellis must be int16, got ",
              packed.scalar_type());
  TORCH_CHECK(packed.dim() == 2 && packed.size(0) == tiles && packed.size(1) == words,
              "qtip: packed trellis for a ", m, "x", n, " weight at K=", c.K, " must have shape (", tiles, ", ",
              words, "), got ", packed.sizes());
  TORCH_CHECK(packed.device() == x.device(), "qtip: packed is on ", packed.device(), " but x is on ",
              x.device());
}

}  // namespace qtip
