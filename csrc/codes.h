// Decode math of the bitshift trellis codes (SPEC §2): state -> V values.
//
// This header is the single source of truth for the codes. It is included by the CPU kernels and,
// unchanged, by the CUDA kernels, so both devices decode bit-identically. Everything here is plain
// integer and fp32 arithmetic (no intrinsics, no FMA-sensitive expressions) for that reason.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define QTIP_HD __host__ __device__ __forceinline__
#else
#define QTIP_HD inline
#endif

namespace qtip {

// Closed set of decode modes. The integer values are part of the file formats (do not renumber).
enum class Mode : int32_t { LUT = 0, ONE_MAD = 1, TWO_MAD = 2, THREE_INST = 3, HYB = 4 };

// fp16 bits -> fp32 (exact; handles subnormals, infinities and NaN).
QTIP_HD float half_bits_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0x1Fu) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: renormalise
    uint32_t e = 113u;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mant & 0x3FFu) << 13);
  }
  union { uint32_t u; float f; } v;
  v.u = bits;
  return v.f;
}

// fp32 -> fp16 bits, round to nearest even (what a half-precision add on a GPU rounds to).
QTIP_HD uint16_t float_to_half_bits(float f) {
  union { float f; uint32_t u; } v;
  v.f = f;
  const uint32_t x = v.u;
  const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) return (uint16_t)(sign | 0x7C00u | (abs > 0x7F800000u ? 0x200u : 0u));
  if (abs >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u);  // rounds to >= 65520: overflow
  if (abs < 0x38800000u) {  // below 2^-14: an fp16 subnormal (unit 2^-24) or zero
    // value = mant * 2^(e - 150) with the implicit bit, so value / 2^-24 = mant >> (126 - e).
    const uint32_t shift = 126u - (abs >> 23);
    if (shift > 24u) return sign;  // below a quarter unit
    const uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return (uint16_t)(sign | q);
  }
  // Normal range: rebias exponent, round the 13 dropped mantissa bits to nearest even.
  uint32_t h = ((abs >> 13) - (112u << 10));
  const uint32_t rem = abs & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is correct
  return (uint16_t)(sign | h);
}

// Sum of the four bytes of x, centred and normalised to unit variance (1MAD / 2MAD).
QTIP_HD float byte_sum_normalised(uint32_t x) {
  const int32_t s = (int32_t)(x & 0xFFu) + (int32_t)((x >> 8) & 0xFFu) + (int32_t)((x >> 16) & 0xFFu) +
                    (int32_t)(x >> 24);
  // 147.800537109375 is sqrt(21845) rounded to fp32: the std of a sum of four uniform bytes.
  return (float)(s - 510) / 147.800537109375f;
}

QTIP_HD float decode_1mad(uint32_t s) { return byte_sum_normalised(34038481u * s + 76625530u); }

QTIP_HD float decode_2mad(uint32_t s) {
  uint32_t x = 264435761u * s + 1013904223u;
  x = x + (uint32_t)(((uint64_t)1664525u * (uint64_t)x) >> 32);
  return byte_sum_normalised(x);
}

QTIP_HD float decode_3inst(uint32_t s) {
  uint32_t w = 89226354u * s + 64248484u;
  w = (w & 0x8FFF8FFFu) ^ 0x3B603B60u;
  // Two fp16 halves added in fp16: the fp32 sum of two such halves is exact, so rounding it once to
  // fp16 reproduces a half-precision add.
  const float sum = half_bits_to_float((uint16_t)(w & 0xFFFFu)) + half_bits_to_float((uint16_t)(w >> 16));
  return half_bits_to_float(float_to_half_bits(sum));
}

// HYB (the reference's quantlut_sym): index into a (2^Q, 2) table by bits [15-Q, 15) of s*(s+1);
// bit 15 flips the sign of element 0. Returns the row index and whether element 0 is negated.
QTIP_HD uint32_t hyb_index(uint32_t s, int Q, bool* negate_first) {
  const uint32_t h = s * (s + 1u);
  *negate_first = (h & 0x8000u) != 0;
  return (h >> (15 - Q)) & ((1u << Q) - 1u);
}

// Decode one state into out[0..V). `tlut` is a row-major (rows, V) fp32 table for LUT (rows = 2^L)
// and HYB (rows = 2^Q, V = 2); unused otherwise. Arguments are validated by the callers.
QTIP_HD void decode_state(Mode mode, uint32_t s, int V, int Q, const float* tlut, float* out) {
  switch (mode) {
    case Mode::LUT:
      for (int v = 0; v < V; ++v) out[v] = tlut[(uint64_t)s * V + v];
      break;
    case Mode::ONE_MAD:
      out[0] = decode_1mad(s);
      break;
    case Mode::TWO_MAD:
      out[0] = decode_2mad(s);
      break;
    case Mode::THREE_INST:
      out[0] = decode_3inst(s);
      break;
    case Mode::HYB: {
      bool neg;
      const uint32_t i = hyb_index(s, Q, &neg);
      out[0] = neg ? -tlut[2 * i] : tlut[2 * i];
      out[1] = tlut[2 * i + 1];
      break;
    }
  }
}

// The L-bit window starting at stream bit `bit` of an MSB-first stream stored in 16-bit words (stream
// bit 0 = bit 15 of word 0), read cyclically over `stream_bits` bits: with tail-biting the window of the
// last steps wraps to the start of the stream.
QTIP_HD uint32_t read_window(const uint16_t* words, int64_t bit, int L, int64_t stream_bits) {
  const uint32_t mask = (1u << L) - 1u;
  if (bit + L <= stream_bits) {  // common case: the window lies in at most 3 consecutive words
    const int64_t w = bit >> 4;
    const int off = (int)(bit & 15);
    const int64_t nwords = (stream_bits + 15) >> 4;
    uint64_t chunk = (uint64_t)words[w] << 32;
    if (w + 1 < nwords) chunk |= (uint64_t)words[w + 1] << 16;
    if (w + 2 < nwords) chunk |= (uint64_t)words[w + 2];
    return (uint32_t)(chunk >> (48 - off - L)) & mask;
  }
  uint32_t s = 0;
  for (int i = 0; i < L; ++i) {
    int64_t b = bit + i;
    if (b >= stream_bits) b -= stream_bits;
    s = (s << 1) | ((words[b >> 4] >> (15 - (b & 15))) & 1u);
  }
  return s;
}

// In-tile order of a 16x16 weight tile: element p of the tile's trellis sequence sits at
// (tile_row(p), tile_col(p)). With p = 8g + 2j + f (lane g < 32, pair j < 4, f < 2) this is the A-fragment
// of mma.m16n8k16 (lane g holds registers a0..a7), the reference kernel's order, so a warp decodes straight
// into tensor-core fragments and reference checkpoints repack without reordering weights.
QTIP_HD int tile_row(int p) { return ((p >> 5) & 7) + 8 * ((p >> 1) & 1); }
QTIP_HD int tile_col(int p) { return 2 * ((p >> 3) & 3) + 8 * ((p >> 2) & 1) + (p & 1); }

}  // namespace qtip
