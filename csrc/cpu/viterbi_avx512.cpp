// AVX-512 kernel of the Viterbi recursion: viterbi_simd.h on 16-lane vectors (see viterbi_vector.h for the
// contract).
#include "viterbi_vector.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2")

namespace qtip {
namespace {

struct Avx512 {
  static constexpr int W = kAvx512Lanes;
  using F = __m512;
  using I = __m512i;
  static F set1(float v) { return _mm512_set1_ps(v); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static void stream(float* p, F v) { _mm512_stream_ps(p, v); }
  static void fence() { _mm_sfence(); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F min(F a, F b) { return _mm512_min_ps(a, b); }
  static F broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static I lane_groups(int KV) {
    return _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), KV);
  }
  static F permute(F v, I idx) { return _mm512_permutexvar_ps(idx, v); }
};

}  // namespace
}  // namespace qtip

#include "viterbi_simd.h"

namespace qtip {
void viterbi_paths_avx512(const float* const* x, int count, int64_t steps, int L, int KV, int V,
                          const float* blocked, const int64_t* overlap, ViterbiScratch* ws, uint32_t* const* path) {
  ViterbiSimd<Avx512>::path(x, count, steps, L, KV, V, blocked, overlap, ws, path);
}
}  // namespace qtip

#pragma GCC pop_options

#else  // no x86-64 build: dispatch.h never selects this path

namespace qtip {
void viterbi_paths_avx512(const float* const*, int, int64_t, int, int, int, const float*, const int64_t*,
                          ViterbiScratch*, uint32_t* const*) {}
}  // namespace qtip

#endif
