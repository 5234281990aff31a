// Steps 2-3 on the CPU for maps of 8 to 71 values (7 x 7 at DenseNet-121's last
// block), contiguous float32 or float16 planes, AVX2: the map stays in registers
// across the K channels, where the general loop (raw_map_cpu.cpp) loads and
// stores it once per channel: for a 7 x 7 map, half of the instructions with
// float32 planes and two thirds with float16 (bench/README.md). The same
// operations in the same order as that loop, so the same numbers. Internal to the
// backends.
#pragma once
#include <cmath>
#include <cstdint>

#include "channel_mean.h"
#include "cpu_isa.h"
#include "half_cpu.h"
#include "scalar.h"

#if EGAL_X86_DISPATCH
#include <immintrin.h>

namespace egal::cpu {

// One sample's planes: K activation planes of n contiguous values, a_stride
// apart; w_k the mean of gradient plane k (g, planes g_stride apart) or, without
// g, the given weight k (element weight_offset + k weight_stride of weights).
template <class T>
struct SmallMapPlanes {
  const T* a;
  int64_t a_stride;
  const T* g;
  int64_t g_stride;
  const void* weights;
  DType weight_dtype;
  int64_t weight_offset, weight_stride;
  int64_t K, n;
};

// Eight values from x, and one, as float32.
EGAL_TARGET_AVX2 inline __m256 load_eight(const float* x) { return _mm256_loadu_ps(x); }
EGAL_TARGET_AVX2 inline __m256 load_eight(const half_bits* x) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
}
EGAL_TARGET_AVX2 inline float load_one(const float* x) { return *x; }
EGAL_TARGET_AVX2 inline float load_one(const half_bits* x) { return _cvtsh_ss(x->bits); }

// Step 2's weight from a gradient plane, as raw_map_cpu.cpp computes it.
EGAL_TARGET_AVX2 inline float plane_mean(const float* g, int64_t n) { return mean_of(g, n); }
EGAL_TARGET_AVX2 inline float plane_mean(const half_bits* g, int64_t n) {
  return sum_of_halves(g, n) / static_cast<float>(n);
}

// cam = sum_k w_k A_k for 8 kVectors <= n < 8 (kVectors + 1): the first
// 8 kVectors values in registers, the rest in a small array. Returns false when a
// weight is not finite.
template <int kVectors, bool kGradients, class T>
EGAL_TARGET_AVX2 inline bool raw_map_in_registers(const SmallMapPlanes<T>& p, float* cam) {
  constexpr int64_t kHeld = 8 * kVectors;
  const int64_t n = p.n, rest_size = n - kHeld;
  __m256 map[kVectors];
  for (int v = 0; v < kVectors; ++v) map[v] = _mm256_setzero_ps();
  float rest[8] = {};
  bool finite = true;
  for (int64_t k = 0; k < p.K; ++k) {
    const float weight = kGradients ? plane_mean(p.g + k * p.g_stride, n)
                                    : load_as_float(p.weights, p.weight_dtype, p.weight_offset + k * p.weight_stride);
    finite = finite && std::isfinite(weight);
    const T* x = p.a + k * p.a_stride;
    const __m256 w = _mm256_set1_ps(weight);
    for (int v = 0; v < kVectors; ++v) map[v] = _mm256_fmadd_ps(w, load_eight(x + 8 * v), map[v]);
    for (int64_t r = 0; r < rest_size; ++r) rest[r] = std::fma(weight, load_one(x + kHeld + r), rest[r]);
  }
  for (int v = 0; v < kVectors; ++v) _mm256_storeu_ps(cam + 8 * v, map[v]);
  for (int64_t r = 0; r < rest_size; ++r) cam[kHeld + r] = rest[r];
  return finite;
}

template <bool kGradients, class T>
EGAL_TARGET_AVX2 inline bool raw_map_small_with(const SmallMapPlanes<T>& p, float* cam) {
  switch (p.n / 8) {
    case 1: return raw_map_in_registers<1, kGradients>(p, cam);
    case 2: return raw_map_in_registers<2, kGradients>(p, cam);
    case 3: return raw_map_in_registers<3, kGradients>(p, cam);
    case 4: return raw_map_in_registers<4, kGradients>(p, cam);
    case 5: return raw_map_in_registers<5, kGradients>(p, cam);
    case 6: return raw_map_in_registers<6, kGradients>(p, cam);
    case 7: return raw_map_in_registers<7, kGradients>(p, cam);
    default: return raw_map_in_registers<8, kGradients>(p, cam);
  }
}

// Whether raw_map_small takes maps of n values.
constexpr bool small_map(int64_t n) { return n >= 8 && n < 72; }

// Steps 2-3 for a map that small_map takes.
template <class T>
EGAL_TARGET_AVX2 inline bool raw_map_small(const SmallMapPlanes<T>& p, float* cam) {
  return p.g ? raw_map_small_with<true>(p, cam) : raw_map_small_with<false>(p, cam);
}

}  // namespace egal::cpu
#endif
