// AVX2 kernel of bitshift_decode (see kernels_avx2.h).
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels_avx2.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include "decode_avx2.h"

namespace qtip {

bool bitshift_decode_avx2(const uint16_t* packed, int64_t B, int64_t nwords, int64_t T, bool tail_biting,
                          const Code& c, const float* values, float* out) {
  const int64_t bits = stream_bits(T, c, tail_biting);
  if (!decode8_covers(c.L, c.bits_per_step()) || T % 8 != 0 || (tail_biting && bits % 8 != 0)) return false;
  const Decode8 d(c, values);
  auto run = [&](auto kind) {
    constexpr Kind kKind = decltype(kind)::value;
    at::parallel_for(0, B, 16, [&](int64_t begin, int64_t end) {
      std::vector<uint8_t> bytes(2 * nwords + 16);
      for (int64_t b = begin; b < end; ++b) {
        stream_bytes(packed + b * nwords, nwords, bits, tail_biting, bytes.data());
        float* o = out + b * T;
        for (int64_t e = 0; e < T / 8; ++e) _mm256_storeu_ps(o + 8 * e, decode8<kKind>(d, bytes.data(), e));
      }
    });
  };
  switch (kind_of(c)) {
    case Kind::HYB: run(std::integral_constant<Kind, Kind::HYB>()); break;
    case Kind::PAIRS: run(std::integral_constant<Kind, Kind::PAIRS>()); break;
    case Kind::VALUES: run(std::integral_constant<Kind, Kind::VALUES>()); break;
  }
  return true;
}

}  // namespace qtip
#pragma GCC pop_options

#else

namespace qtip {
bool bitshift_decode_avx2(const uint16_t*, int64_t, int64_t, int64_t, bool, const Code&, const float*, float*) {
  return false;
}
}  // namespace qtip

#endif
