// AVX-512 decoding of HYB tiles without gathers. Include only from *_avx512.cpp files, after
// `#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,fma,f16c")`; everything here has
// internal linkage.
//
// Gathers issue one load per element and are slow on current x86 cores, so the (2^Q, 2) HYB table is held in
// registers instead: each fp16 value is split into its low and high byte, giving four byte planes (element 0
// low/high, element 1 low/high) of up to 512 bytes, i.e. four 128-byte chunks per plane, and a lookup of 64
// indices is four merge-masked two-register byte permutes (vpermi2b), one per chunk. The values are exact
// (the table must be fp16-representable, see hyb_table_halves) and the sign flip is an XOR of the fp16 sign
// bit, so the decoded weights equal the scalar kernels' bit for bit.
//
// A tile (256 weights, 128 steps of 2 weights) is decoded in two groups of 64 steps; a group's 64 states are
// two vectors of 32 16-bit windows, each window assembled from the tile's bytes by two byte permutes and a
// funnel shift (vpshldvw). The tile's 32K bytes stay in at most two registers and every byte index is taken
// modulo the tile's length, which is the tail-biting wrap.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "../checks.h"

namespace qtip {
namespace {

// Tiles of K <= 4 (at most 128 bytes, two registers) and tables of at most 2^9 rows (four chunks).
inline bool hyb_avx512_covers(const Code& c) {
  return c.mode == Mode::HYB && c.V == 2 && c.K <= 4 && c.Q <= 9;
}

// The table as fp16 bits (rows * 2), or empty when some value is not exactly an fp16 (then the vector kernel
// cannot reproduce it and the caller takes another path).
inline std::vector<uint16_t> hyb_table_halves(const Code& c) {
  const int64_t n = (int64_t{1} << c.Q) * 2;
  const float* t = c.table_ptr();
  std::vector<uint16_t> halves(n);
  for (int64_t i = 0; i < n; ++i) {
    halves[i] = float_to_half_bits(t[i]);
    const float back = half_bits_to_float(halves[i]);
    if (std::memcmp(&back, &t[i], sizeof(float)) != 0) return {};
  }
  return halves;
}

struct HybAvx512 {
  __m512i plane[4][4][2];        // [plane][chunk][half]: 64 table bytes each (plane 0/1: element 0 low/high)
  __m512i first[4], second[4];   // per 32-state vector of a tile: byte indices of each window's two 16-bit words
  __m512i offset[4];             // and the window's bit offset inside the first word
  __m512i pack_low, pack_high;   // low / high bytes of two vectors of 16-bit indices, in unpack order
  __m128i state_shift, row_shift;
  __m512i row_mask;

  HybAvx512(const Code& c, const std::vector<uint16_t>& halves) {
    alignas(64) uint8_t bytes[4][512] = {};
    for (int64_t i = 0; i < (int64_t{1} << c.Q); ++i) {
      for (int e = 0; e < 2; ++e) {
        bytes[2 * e][i] = (uint8_t)(halves[2 * i + e] & 0xFF);
        bytes[2 * e + 1][i] = (uint8_t)(halves[2 * i + e] >> 8);
      }
    }
    for (int p = 0; p < 4; ++p)
      for (int k = 0; k < 4; ++k)
        for (int h = 0; h < 2; ++h) plane[p][k][h] = _mm512_load_si512(bytes[p] + 128 * k + 64 * h);
    // Window of step t: the 16 stream bits from bit KV*t, i.e. the top 16 bits of stream bytes b..b+3 (b = KV*t/8)
    // shifted left by KV*t mod 8. Stream byte s is memory byte s^1 (MSB-first 16-bit words, little-endian).
    const int KV = 2 * c.K, nbytes = 32 * c.K;
    auto memory_byte = [&](int s) { return (uint8_t)((s % nbytes) ^ 1); };
    for (int v = 0; v < 4; ++v) {
      alignas(64) uint8_t f[64], s[64];
      alignas(64) uint16_t o[32];
      for (int i = 0; i < 32; ++i) {
        const int bit = KV * (32 * v + i), b = bit >> 3;
        f[2 * i] = memory_byte(b + 1), f[2 * i + 1] = memory_byte(b);  // word = (byte b << 8) | byte b+1
        s[2 * i] = memory_byte(b + 3), s[2 * i + 1] = memory_byte(b + 2);
        o[i] = (uint16_t)(bit & 7);
      }
      first[v] = _mm512_load_si512(f), second[v] = _mm512_load_si512(s), offset[v] = _mm512_load_si512(o);
    }
    // Byte lane 16k+i takes 16-bit lane 8k+i of the first vector and byte lane 16k+8+i lane 8k+i of the second,
    // so that unpacking the looked-up low and high bytes (vpunpck{l,h}bw) gives the states back in order.
    alignas(64) uint8_t lo[64], hi[64];
    for (int k = 0; k < 4; ++k) {
      for (int i = 0; i < 8; ++i) {
        lo[16 * k + i] = (uint8_t)(16 * k + 2 * i), lo[16 * k + 8 + i] = (uint8_t)(64 + 16 * k + 2 * i);
        hi[16 * k + i] = (uint8_t)(lo[16 * k + i] + 1), hi[16 * k + 8 + i] = (uint8_t)(lo[16 * k + 8 + i] + 1);
      }
    }
    pack_low = _mm512_load_si512(lo), pack_high = _mm512_load_si512(hi);
    state_shift = _mm_cvtsi32_si128(16 - c.L);
    row_shift = _mm_cvtsi32_si128(15 - c.Q);
    row_mask = _mm512_set1_epi16((short)((1 << c.Q) - 1));
  }
};

// A tile's 32K bytes in two registers (only the first 32K bytes are ever indexed).
template <int K>
inline void load_tile(const uint16_t* words, __m512i& lo, __m512i& hi) {
  if (K == 1) {
    lo = hi = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(words)));
  } else {
    lo = _mm512_loadu_si512(words);
    if (K == 2) hi = lo;
    if (K == 3) hi = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + 32)));
    if (K == 4) hi = _mm512_loadu_si512(words + 32);
  }
}

// The states of steps 32v .. 32v+31 as 16-bit lanes.
inline __m512i hyb_states(const HybAvx512& d, __m512i lo, __m512i hi, int v) {
  const __m512i a = _mm512_permutex2var_epi8(lo, d.first[v], hi);
  const __m512i b = _mm512_permutex2var_epi8(lo, d.second[v], hi);
  return _mm512_srl_epi16(_mm512_shldv_epi16(a, b, d.offset[v]), d.state_shift);
}

// 64 bytes of one plane at the byte indices `idx` (low 7 bits used), chunk k where mask k is set.
inline __m512i hyb_lookup(const __m512i idx, const __m512i (&chunks)[4][2], const __mmask64 (&in)[4]) {
  __m512i r = idx;  // each lane is written once, by the permute of its chunk, and read as an index before that
  for (int k = 0; k < 4; ++k) r = _mm512_mask2_permutex2var_epi8(chunks[k][0], r, in[k], chunks[k][1]);
  return r;
}

// Steps 64g .. 64g+63 of the tile in (lo, hi): element 0 and element 1 of each step as fp32, e0[r] / e1[r]
// holding steps 64g + 16r + lane.
inline void hyb_decode_group(const HybAvx512& d, __m512i lo, __m512i hi, int g, __m512 (&e0)[4], __m512 (&e1)[4]) {
  const __m512i one = _mm512_set1_epi16(1);
  const __m512i sa = hyb_states(d, lo, hi, 2 * g), sb = hyb_states(d, lo, hi, 2 * g + 1);
  // h = s*(s+1): only its low 16 bits matter. Row (h >> (15-Q)) & (2^Q-1); bit 15 flips element 0.
  const __m512i ha = _mm512_mullo_epi16(sa, _mm512_add_epi16(sa, one));
  const __m512i hb = _mm512_mullo_epi16(sb, _mm512_add_epi16(sb, one));
  const __m512i ra = _mm512_and_si512(_mm512_srl_epi16(ha, d.row_shift), d.row_mask);
  const __m512i rb = _mm512_and_si512(_mm512_srl_epi16(hb, d.row_shift), d.row_mask);
  // Row bits 0-6 index a chunk's 128 bytes, bits 7-8 pick the chunk.
  const __m512i low = _mm512_permutex2var_epi8(ra, d.pack_low, rb);
  const __m512i high = _mm512_permutex2var_epi8(ra, d.pack_high, rb);
  const __mmask64 b7 = _mm512_movepi8_mask(low), b8 = _mm512_test_epi8_mask(high, _mm512_set1_epi8(1));
  const __mmask64 in[4] = {_knot_mask64(_kor_mask64(b7, b8)), _kandn_mask64(b8, b7), _kandn_mask64(b7, b8),
                           _kand_mask64(b7, b8)};
  const __m512i e0l = hyb_lookup(low, d.plane[0], in), e0h = hyb_lookup(low, d.plane[1], in);
  const __m512i e1l = hyb_lookup(low, d.plane[2], in), e1h = hyb_lookup(low, d.plane[3], in);
  const __m512i sign = _mm512_set1_epi16((short)0x8000);
  // 0x78: a ^ (b & c), the fp16 value of element 0 with bit 15 of h as its sign flip.
  const __m512i e0a = _mm512_ternarylogic_epi32(_mm512_unpacklo_epi8(e0l, e0h), ha, sign, 0x78);
  const __m512i e0b = _mm512_ternarylogic_epi32(_mm512_unpackhi_epi8(e0l, e0h), hb, sign, 0x78);
  const __m512i e1a = _mm512_unpacklo_epi8(e1l, e1h), e1b = _mm512_unpackhi_epi8(e1l, e1h);
  e0[0] = _mm512_cvtph_ps(_mm512_castsi512_si256(e0a)), e0[1] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(e0a, 1));
  e0[2] = _mm512_cvtph_ps(_mm512_castsi512_si256(e0b)), e0[3] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(e0b, 1));
  e1[0] = _mm512_cvtph_ps(_mm512_castsi512_si256(e1a)), e1[1] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(e1a, 1));
  e1[2] = _mm512_cvtph_ps(_mm512_castsi512_si256(e1b)), e1[3] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(e1b, 1));
}

}  // namespace
}  // namespace qtip
