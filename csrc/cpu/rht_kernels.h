// rht's row transform (rht_rows.h) as compiled for the AVX2 and AVX-512 levels; rht.cpp holds the portable
// build and picks one by dispatch.h's level. All give bit-identical results.
#pragma once

#include <cstdint>

namespace qtip {

void rht_rows_avx2(const float* x, const float* signs, int64_t rows, int64_t n, int K, const int8_t* H,
                   bool transpose, float factor, float* out);
void rht_rows_avx2(const double* x, const double* signs, int64_t rows, int64_t n, int K, const int8_t* H,
                   bool transpose, double factor, double* out);
void rht_rows_avx512(const float* x, const float* signs, int64_t rows, int64_t n, int K, const int8_t* H,
                     bool transpose, float factor, float* out);
void rht_rows_avx512(const double* x, const double* signs, int64_t rows, int64_t n, int K, const int8_t* H,
                     bool transpose, double factor, double* out);

}  // namespace qtip
