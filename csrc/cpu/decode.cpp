// CPU kernels: decode_states (state -> values) and bitshift_decode (packed stream -> values).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <memory>

#include "../checks.h"
#include "dispatch.h"
#include "kernels_avx2.h"
#include "kernels_avx512.h"
#include "table.h"

namespace qtip {
namespace {

at::Tensor decode_states_cpu(const at::Tensor& states, const std::string& mode, int64_t L, int64_t V,
                             const c10::optional<at::Tensor>& tlut) {
  TORCH_CHECK(at::isIntegralType(states.scalar_type(), /*includeBool=*/false),
              "qtip: decode_states needs integer states, got ", states.scalar_type());
  // K does not enter the decode; K=1 only satisfies the K*V < L check.
  const Code code = check_code(L, 1, V, mode, tlut, states.device());
  const at::Tensor s = states.to(at::kLong).contiguous();
  auto sizes = states.sizes().vec();
  sizes.push_back(V);
  at::Tensor out = at::empty(sizes, states.options().dtype(at::kFloat));
  const int64_t* sp = s.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  const int64_t n = s.numel();
  const int64_t limit = code.num_states();
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(sp[i] >= 0 && sp[i] < limit, "qtip: decode_states: state ", sp[i], " at flat index ", i,
                " is outside [0, 2^L) for L=", L);
  }
  const float* table = code.table_ptr();
  at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) decode_state(code.mode, (uint32_t)sp[i], code.V, code.Q, table, op + i * V);
  });
  return out;
}

at::Tensor bitshift_decode_cpu(const at::Tensor& packed, int64_t L, int64_t K, int64_t V, const std::string& mode,
                               const c10::optional<at::Tensor>& tlut, int64_t T, bool tail_biting) {
  TORCH_CHECK(packed.scalar_type() == at::kShort, "qtip: packed must be int16, got ", packed.scalar_type());
  TORCH_CHECK(packed.dim() == 2, "qtip: packed must be 2-D (B, words), got shape ", packed.sizes());
  const Code code = check_code(L, K, V, mode, tlut, packed.device());
  const int64_t words = packed.size(1);
  T = check_streams(packed, code, T, tail_biting);
  const int64_t bits = stream_bits(T, code, tail_biting);
  const at::Tensor p = packed.contiguous();
  const int64_t B = p.size(0);
  at::Tensor out = at::empty({B, T}, packed.options().dtype(at::kFloat));
  if (B == 0) return out;
  const uint16_t* pp = reinterpret_cast<const uint16_t*>(p.data_ptr<int16_t>());
  float* op = out.data_ptr<float>();
  const CpuLevel level = cpu_level();
  if (level >= CpuLevel::AVX512 && T == kTileWeights && tail_biting && decode_tiles_avx512(pp, B, code, op))
    return out;
  if (level >= CpuLevel::AVX2) {
    // V=2 codes decode from their (rows, 2) table; V=1 codes from the value of every state.
    const bool own_table = code.V == 1 && code.mode != Mode::LUT;
    std::unique_ptr<StateTable> values = own_table ? std::make_unique<StateTable>(code) : nullptr;
    const float* v0 = own_table ? values->values[0].data() : code.table_ptr();
    if (bitshift_decode_avx2(pp, B, words, T, tail_biting, code, v0, op)) return out;
  }
  const StateTable table(code);
  const int64_t steps = T / V;
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const uint16_t* w = pp + b * words;
      float* o = op + b * T;
      for (int64_t t = 0; t < steps; ++t) {
        const uint32_t s = read_window(w, t * code.bits_per_step(), code.L, bits);
        for (int v = 0; v < V; ++v) o[t * V + v] = table.values[v][s];
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(qtip, CPU, m) {
  m.impl("decode_states", &decode_states_cpu);
  m.impl("bitshift_decode", &bitshift_decode_cpu);
}

}  // namespace qtip
