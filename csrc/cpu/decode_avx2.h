// AVX2 decoding of 8 consecutive weights of a packed stream. Include only from *_avx2.cpp files, after
// `#pragma GCC target("avx2,fma,f16c")`; everything here has internal linkage.
//
// The stream is first copied into a big-endian byte buffer with 8 readable bytes past its end (holding the
// stream's head again when it is tail-biting). Weights 8e..8e+7 come from 8/V states starting at t0 = 8e/V;
// any 4 consecutive states lie within the 64 bits read at byte (K*V*t0) / 8 as long as K*V <= 13 and L <= 16,
// so each window is one variable shift of that 64-bit word. The decoded values are the exact table values
// (or, for HYB, the same table entry with the same sign flip), so they equal the scalar kernels' bit for bit.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "../codes.h"

namespace qtip {
namespace {

// Whether decode8 handles this code: windows of 4 states in one 64-bit read.
inline bool decode8_covers(int L, int KV) { return KV <= 13 && L <= 16; }


// Big-endian byte copy of `bits` stream bits from 16-bit words, plus 8 more bytes: the stream's head again
// (cyclically) when tail-biting, zeros otherwise. Requires bits % 8 == 0 when tail-biting.
inline void stream_bytes(const uint16_t* words, int64_t nwords, int64_t bits, bool tail_biting, uint8_t* out) {
  for (int64_t k = 0; k < nwords; ++k) {
    out[2 * k] = (uint8_t)(words[k] >> 8);
    out[2 * k + 1] = (uint8_t)(words[k] & 0xFF);
  }
  const int64_t nbytes = (bits + 7) / 8;
  for (int64_t i = 0; i < 8; ++i) out[nbytes + i] = tail_biting ? out[i] : 0;  // out[i] is set even if i >= nbytes
}

// stream_bytes for a whole tail-biting tile (16*K words = 32*K bytes): one byte
// shuffle per 16 words.
inline void tile_bytes(const uint16_t* words, int K, uint8_t* out) {
  const __m256i swap = _mm256_setr_epi8(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14, 1, 0, 3, 2, 5, 4, 7, 6,
                                        9, 8, 11, 10, 13, 12, 15, 14);
  for (int k = 0; k < K; ++k) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + 16 * k));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * k), _mm256_shuffle_epi8(v, swap));
  }
  std::memcpy(out + 32 * K, out, 8);
}

// What a code needs to decode 8 weights: for HYB the (2^Q, 2) table; for LUT with V=2 the (2^L, 2) table;
// for V=1 the value of every state (the LUT itself, or the StateTable of a computed code). Built once per call.
struct Decode8 {
  int L, KV, Q;
  const float* pairs;   // HYB / LUT V=2: row-major (rows, 2)
  const float* values;  // V=1: one value per state
  __m256i shift[8];     // right shifts of the 4 windows in a 64-bit read that starts `index` bits into a byte
  __m256i state_mask, row_mask;
  __m128i row_shift;

  Decode8(const Code& c, const float* v0)
      : L(c.L), KV(c.bits_per_step()), Q(c.Q), pairs(c.table_ptr()), values(v0) {
    for (int off = 0; off < 8; ++off) {
      const int64_t first = 64 - L - off;
      shift[off] = _mm256_setr_epi64x(first, first - KV, first - 2 * KV, first - 3 * KV);
    }
    state_mask = _mm256_set1_epi64x((int64_t{1} << L) - 1);
    row_mask = _mm256_set1_epi64x((int64_t{1} << Q) - 1);
    row_shift = _mm_cvtsi32_si128(15 - Q);
  }
};

// Which decode a code takes; a template argument so that the per-vector code has no branches.
enum class Kind { HYB, PAIRS, VALUES };

inline Kind kind_of(const Code& c) {
  if (c.V == 1) return Kind::VALUES;
  return c.mode == Mode::HYB ? Kind::HYB : Kind::PAIRS;
}

// The states of the 4 consecutive steps from t0, as 64-bit lanes.
inline __m256i windows4(const Decode8& d, const uint8_t* bytes, int64_t t0) {
  const int64_t bit = (int64_t)d.KV * t0;
  uint64_t chunk;
  std::memcpy(&chunk, bytes + (bit >> 3), 8);
  const __m256i v = _mm256_set1_epi64x((int64_t)__builtin_bswap64(chunk));
  return _mm256_and_si256(_mm256_srlv_epi64(v, d.shift[bit & 7]), d.state_mask);
}

// Weights 8e..8e+7 of the stream in `bytes`.
template <Kind kKind>
inline __m256 decode8(const Decode8& d, const uint8_t* bytes, int64_t e) {
  if (kKind == Kind::HYB) {
    const __m256i s = windows4(d, bytes, 4 * e);
    // h = s*(s+1) (its low 32 bits suffice: s < 2^16); row (h >> (15-Q)) & (2^Q-1); bit 15 of h flips
    // element 0, the low float of each (element 0, element 1) pair.
    const __m256i h = _mm256_mul_epu32(s, _mm256_add_epi64(s, _mm256_set1_epi64x(1)));
    const __m256i row = _mm256_and_si256(_mm256_srl_epi64(h, d.row_shift), d.row_mask);
    const __m256i flip = _mm256_slli_epi64(_mm256_and_si256(h, _mm256_set1_epi64x(0x8000)), 16);
    const __m256i pair = _mm256_i64gather_epi64(reinterpret_cast<const long long*>(d.pairs), row, 8);
    return _mm256_castsi256_ps(_mm256_xor_si256(pair, flip));
  } else if (kKind == Kind::PAIRS) {
    const __m256i s = windows4(d, bytes, 4 * e);
    return _mm256_castsi256_ps(_mm256_i64gather_epi64(reinterpret_cast<const long long*>(d.pairs), s, 8));
  } else {
    const __m128 lo = _mm256_i64gather_ps(d.values, windows4(d, bytes, 8 * e), 4);
    const __m128 hi = _mm256_i64gather_ps(d.values, windows4(d, bytes, 8 * e + 4), 4);
    return _mm256_set_m128(hi, lo);
  }
}

}  // namespace
}  // namespace qtip
