// float16 -> float32 for whole runs of values on the CPU. Internal to the backends.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cpu_isa.h"
#include "scalar.h"

#if EGAL_X86_DISPATCH
#include <immintrin.h>
#endif

namespace egal::cpu {

// Exact widening (subnormals, Inf and NaN included) without F16C: a baseline loop.
inline void halves_to_floats_portable(const half_bits* src, int64_t n, float* dst) {
  for (int64_t q = 0; q < n; ++q) dst[q] = to_float(src[q]);
}

#if EGAL_X86_DISPATCH
// F16C widens eight halves per instruction, exactly. Inlined into the
// EGAL_TARGET_AVX2 / EGAL_TARGET_AVX512 variants; baseline code calls it only
// after checking the CPU has F16C (cpu_has_f16c).
__attribute__((target("avx,f16c"))) inline void halves_to_floats_f16c(const half_bits* src, int64_t n, float* dst) {
  int64_t q = 0;
  for (; q + 8 <= n; q += 8)
    _mm256_storeu_ps(dst + q, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + q))));
  for (; q < n; ++q) dst[q] = to_float(src[q]);
}

// The sum of n halves, and cam += weight * halves, widened eight at a time inside the
// arithmetic (no widened copy): the same additions in the same order as sum_of and
// add_scaled (raw_map_cpu.cpp) on widened floats, so float16 planes give the numbers
// their float32 widening would. GCC 12 does not vectorise float16 -> float32
// conversions itself, hence the intrinsics.
EGAL_TARGET_AVX2 inline float sum_of_halves(const half_bits* x, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t q = 0;
  for (; q + 16 <= n; q += 16) {
    acc0 = _mm256_add_ps(acc0, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + q))));
    acc1 = _mm256_add_ps(acc1, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + q + 8))));
  }
  alignas(32) float part[16];
  _mm256_store_ps(part, acc0);
  _mm256_store_ps(part + 8, acc1);
  for (int64_t l = 0; q + l < n; ++l) part[l] += _cvtsh_ss(x[q + l].bits);
  for (int l = 0; l < 8; ++l) part[l] += part[l + 8];
  return ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
}

EGAL_TARGET_AVX2 inline void add_scaled_halves(float weight, const half_bits* x, int64_t n, float* cam) {
  const __m256 w = _mm256_set1_ps(weight);
  int64_t q = 0;
  for (; q + 8 <= n; q += 8) {
    const __m256 v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + q)));
    _mm256_storeu_ps(cam + q, _mm256_fmadd_ps(w, v, _mm256_loadu_ps(cam + q)));
  }
  for (; q < n; ++q) cam[q] = std::fma(weight, _cvtsh_ss(x[q].bits), cam[q]);
}

// A band of float16 mask rows (mask_projection_cpu.cpp, step 1): per column
// sum += m and, with kWeighted, weighted += t[y] m, widened eight at a time inside
// the arithmetic. Returns whether a value below 0 or above 1 was seen; a NaN is
// left to the sums, which it turns NaN (the smallest and largest values are kept
// with MINPS / MAXPS, which pass NaN over).
template <bool kWeighted>
EGAL_TARGET_AVX2 inline bool add_half_mask_rows(const half_bits* first, int64_t stride, int64_t rows, const float* t,
                                                int64_t n, float* __restrict sum, float* __restrict weighted) {
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  float lo_tail = 0.0f, hi_tail = 0.0f;
  for (int64_t y = 0; y < rows; ++y) {
    const half_bits* row = first + y * stride;
    const __m256 t_y = _mm256_set1_ps(t[y]);
    int64_t q = 0;
    for (; q + 8 <= n; q += 8) {
      const __m256 m = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + q)));
      _mm256_storeu_ps(sum + q, _mm256_add_ps(_mm256_loadu_ps(sum + q), m));
      if constexpr (kWeighted) _mm256_storeu_ps(weighted + q, _mm256_fmadd_ps(t_y, m, _mm256_loadu_ps(weighted + q)));
      lo = _mm256_min_ps(m, lo);
      hi = _mm256_max_ps(m, hi);
    }
    for (; q < n; ++q) {
      const float m = _cvtsh_ss(row[q].bits);
      sum[q] += m;
      if constexpr (kWeighted) weighted[q] = std::fma(t[y], m, weighted[q]);
      lo_tail = std::min(lo_tail, m);
      hi_tail = std::max(hi_tail, m);
    }
  }
  alignas(32) float lows[8], highs[8];
  _mm256_store_ps(lows, lo);
  _mm256_store_ps(highs, hi);
  bool outside = lo_tail < 0.0f || hi_tail > 1.0f;
  for (int l = 0; l < 8; ++l) outside = outside || lows[l] < 0.0f || highs[l] > 1.0f;
  return outside;
}

// F16C came with Ivy Bridge (2012) and Piledriver, before AVX2: some CPUs that run
// the baseline variant have it.
inline bool cpu_has_f16c() {
  static const bool has = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return has;
}
#endif

// float16 -> float32 in the caller's variant: kF16c says the caller is compiled
// with F16C (the AVX2 and AVX-512 variants).
template <bool kF16c>
EGAL_ALWAYS_INLINE void halves_to_floats(const half_bits* src, int64_t n, float* dst) {
#if EGAL_X86_DISPATCH
  if (kF16c || cpu_has_f16c()) return halves_to_floats_f16c(src, n, dst);
#endif
  halves_to_floats_portable(src, n, dst);
}

}  // namespace egal::cpu
