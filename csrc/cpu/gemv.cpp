// CPU kernel of gemv: y = x @ W^T with W (m x n) stored as packed 16x16 tiles, row-major over the
// (m/16, n/16) tile grid, each tile one tail-biting trellis sequence in the in-tile order of codes.h.
//
// Up to kFusedRows rows of x, each tile is decoded once into registers/L1 and applied to every row, so
// nothing proportional to m*n is allocated. Larger batches decode a stripe of rows into a scratch
// buffer and hand it to the dense GEMM, where the decode cost is amortised over the batch.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../checks.h"
#include "table.h"
#include "tile.h"

namespace qtip {
namespace {

constexpr int64_t kFusedRows = 32;
constexpr int64_t kStripeRows = 256;  // rows of W decoded per GEMM call on the large-batch path

void gemv_fused(const float* x, int64_t R, const uint16_t* packed, int64_t m, int64_t n, const Code& c,
                const StateTable& table, float* y) {
  const int64_t tile_cols = n / kTile;
  const int64_t words = kTileWeights * c.K / 16;
  at::parallel_for(0, m / kTile, 1, [&](int64_t begin, int64_t end) {
    float tile[kTileWeights];
    std::vector<float> acc(R * kTile);
    for (int64_t i = begin; i < end; ++i) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = 0; j < tile_cols; ++j) {
        decode_tile(packed + (i * tile_cols + j) * words, c, table, tile);
        for (int64_t b = 0; b < R; ++b) {
          const float* xb = x + b * n + j * kTile;
          float* ab = acc.data() + b * kTile;
          for (int r = 0; r < kTile; ++r) {
            const float* wr = tile + r * kTile;
            float sum = 0.0f;
            for (int k = 0; k < kTile; ++k) sum += wr[k] * xb[k];
            ab[r] += sum;
          }
        }
      }
      for (int64_t b = 0; b < R; ++b)
        std::copy(acc.data() + b * kTile, acc.data() + (b + 1) * kTile, y + b * m + i * kTile);
    }
  });
}

void gemv_decode_then_gemm(const at::Tensor& x, const uint16_t* packed, int64_t m, int64_t n, const Code& c,
                           const StateTable& table, at::Tensor& y) {
  const int64_t tile_cols = n / kTile;
  const int64_t words = kTileWeights * c.K / 16;
  at::Tensor stripe = at::empty({kStripeRows, n}, x.options());
  float* sp = stripe.data_ptr<float>();
  for (int64_t row0 = 0; row0 < m; row0 += kStripeRows) {
    const int64_t rows = std::min(kStripeRows, m - row0);
    const int64_t tiles = (rows / kTile) * tile_cols;
    at::parallel_for(0, tiles, 16, [&](int64_t begin, int64_t end) {
      float tile[kTileWeights];
      for (int64_t t = begin; t < end; ++t) {
        const int64_t i = row0 / kTile + t / tile_cols, j = t % tile_cols;
        decode_tile(packed + (i * tile_cols + j) * words, c, table, tile);
        for (int r = 0; r < kTile; ++r)
          std::copy(tile + r * kTile, tile + (r + 1) * kTile, sp + ((i * kTile - row0) + r) * n + j * kTile);
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
    const StateTable table(code);
    if (R <= kFusedRows) {
      gemv_fused(xf.data_ptr<float>(), R, pp, m, n, code, table, y.data_ptr<float>());
    } else {
      gemv_decode_then_gemm(xf, pp, m, n, code, table, y);
    }
  }
  return y.reshape(out_shape).to(x.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(qtip, CPU, m) { m.impl("gemv", &gemv_cpu); }

}  // namespace qtip
