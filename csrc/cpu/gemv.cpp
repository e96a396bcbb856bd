// CPU kernel of gemv: y = x @ W^T with W (m x n) stored as packed 16x16 tiles, row-major over the
// (m/16, n/16) tile grid, each tile one tail-biting trellis sequence in the in-tile order of codes.h.
//
// Up to kFusedRows rows of x, each tile is decoded once and applied to every row (gemv_layout.h fixes the
// order of the multiply-adds, the same in the scalar, AVX2 and AVX-512 kernels), so nothing proportional to m*n is
// allocated. Larger batches decode a stripe of W's rows into a scratch buffer of about 1 MiB and hand it to
// the dense GEMM, where the decode cost is amortised over the batch.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <memory>
#include <vector>

#include "../checks.h"
#include "dispatch.h"
#include "gemv_layout.h"
#include "kernels_avx2.h"
#include "kernels_avx512.h"
#include "table.h"

namespace qtip {
namespace {

constexpr int64_t kFusedRows = 64;
constexpr int64_t kStripeBytes = int64_t{1} << 20;

// The value of every state for V=1 codes (the LUT itself, or the computed code's table); the V=2 kernels
// read the (rows, 2) table directly. Built only when some kernel needs it.
struct Values {
  std::unique_ptr<StateTable> table;
  const float* v0 = nullptr;
  Values(const Code& c, bool scalar) {
    if (!scalar && c.mode == Mode::LUT && c.V == 1) {
      v0 = c.table_ptr();
    } else if (scalar || c.V == 1) {
      table = std::make_unique<StateTable>(c);
      v0 = table->values[0].data();
    }
  }
};

// Sequence-order weights of `count` tiles from `first` (scalar path).
void decode_tiles_scalar(const uint16_t* packed, int64_t first, int64_t count, const Code& c,
                         const StateTable& table, float* out) {
  const int64_t words = kTileWeights * c.K / 16, bits = kTileWeights * c.K;
  at::parallel_for(0, count, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const uint16_t* w = packed + (first + t) * words;
      float* o = out + t * kTileWeights;
      for (int64_t s = 0; s < kTileWeights / c.V; ++s) {
        const uint32_t state = read_window(w, s * c.bits_per_step(), c.L, bits);
        for (int v = 0; v < c.V; ++v) o[s * c.V + v] = table.values[v][state];
      }
    }
  });
}

void gemv_fused_scalar(const float* x, int64_t R, const uint16_t* packed, int64_t m, int64_t n, const Code& c,
                       const StateTable& table, float* y) {
  const int64_t tile_cols = n / kTile;
  const bool pairs = c.V == 2;
  const int64_t accs = pairs ? kTileSteps : kTileAccs;
  // The vector order reads x rearranged; the step order reads it through tile_col directly.
  const int64_t xs_row = tile_cols * kTileXs;
  std::vector<float> xs(pairs ? 0 : R * xs_row);
  for (int64_t r = 0; r < R && !pairs; ++r) rearrange_x(x + r * n, n, xs.data() + r * xs_row);
  at::parallel_for(0, m / kTile, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> w(kTileWeights), acc(R * accs);
    float y16[16];
    for (int64_t i = begin; i < end; ++i) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = 0; j < tile_cols; ++j) {
        decode_tiles_scalar(packed, i * tile_cols + j, 1, c, table, w.data());
        for (int64_t r = 0; r < R; ++r) {
          if (pairs) {
            accumulate_pairs_scalar(w.data(), x + r * n + j * kTile, acc.data() + r * accs);
          } else {
            accumulate_tile_scalar(w.data(), xs.data() + r * xs_row + j * kTileXs, acc.data() + r * accs);
          }
        }
      }
      for (int64_t r = 0; r < R; ++r) {
        if (pairs) {
          reduce_pair_accumulators(acc.data() + r * accs, y16);
        } else {
          reduce_accumulators(acc.data() + r * accs, y16);
        }
        std::copy(y16, y16 + 16, y + r * m + i * kTile);
      }
    }
  });
}

// Large batches: decode stripes of W's rows (tile rows), then one dense GEMM per stripe.
void gemv_decode_then_gemm(const at::Tensor& x, const uint16_t* packed, int64_t m, int64_t n, const Code& c,
                           const Values& values, CpuLevel level, at::Tensor& y) {
  const int64_t tile_cols = n / kTile;
  const int64_t words = kTileWeights * c.K / 16;
  const int64_t stripe_rows = std::max<int64_t>(kTile, std::min<int64_t>(256, kStripeBytes / (4 * n)) / kTile * kTile);
  at::Tensor stripe = at::empty({stripe_rows, n}, x.options());
  std::vector<float> seq(stripe_rows / kTile * tile_cols * kTileWeights);
  float* sp = stripe.data_ptr<float>();
  for (int64_t row0 = 0; row0 < m; row0 += stripe_rows) {
    const int64_t rows = std::min(stripe_rows, m - row0);
    const int64_t first = row0 / kTile * tile_cols, tiles = rows / kTile * tile_cols;
    const uint16_t* p = packed + first * words;
    if (!(level >= CpuLevel::AVX512 && decode_tiles_avx512(p, tiles, c, seq.data())) &&
        !(level >= CpuLevel::AVX2 &&
          bitshift_decode_avx2(p, tiles, words, kTileWeights, true, c, values.v0, seq.data())))
      decode_tiles_scalar(packed, first, tiles, c, *values.table, seq.data());
    at::parallel_for(0, tiles, 16, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        float* dst = sp + (t / tile_cols) * kTile * n + (t % tile_cols) * kTile;
        const float* src = seq.data() + t * kTileWeights;
        for (int p = 0; p < kTileWeights; ++p) dst[tile_row(p) * n + tile_col(p)] = src[p];
      }
    });
    y.narrow(1, row0, rows).copy_(at::mm(x, stripe.narrow(0, 0, rows).t()));
  }
}

at::Tensor gemv_cpu(const at::Tensor& x, const at::Tensor& packed, int64_t m, int64_t n, int64_t L, int64_t K,
                    int64_t V, const std::string& mode, const c10::optional<at::Tensor>& tlut) {
  const Code code = check_code(L, K, V, mode, tlut, x.device());
  check_gemv_shapes(x, packed, m, n, code);
  const at::Tensor xf = x.to(at::kFloat).reshape({-1, n}).contiguous();
  const int64_t R = xf.size(0);
  at::Tensor y = at::empty({R, m}, xf.options());
  auto out_shape = x.sizes().vec();
  out_shape.back() = m;
  if (R > 0) {
    const at::Tensor p = packed.contiguous();
    const uint16_t* pp = reinterpret_cast<const uint16_t*>(p.data_ptr<int16_t>());
    const CpuLevel level = cpu_level();
    // The AVX2 kernels fall back to scalar for codes they do not cover, and those need the full table.
    const Values values(code, level < CpuLevel::AVX2 || code.bits_per_step() > 13);
    if (R <= kFusedRows) {
      const float* xp = xf.data_ptr<float>();
      float* yp = y.data_ptr<float>();
      if (!(level >= CpuLevel::AVX512 && gemv_fused_avx512(xp, R, pp, m, n, code, yp)) &&
          !(level >= CpuLevel::AVX2 && gemv_fused_avx2(xp, R, pp, m, n, code, values.v0, yp)))
        gemv_fused_scalar(xp, R, pp, m, n, code, *values.table, yp);
    } else {
      gemv_decode_then_gemm(xf, pp, m, n, code, values, level, y);
    }
  }
  return y.reshape(out_shape).to(x.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(qtip, CPU, m) { m.impl("gemv", &gemv_cpu); }

}  // namespace qtip
