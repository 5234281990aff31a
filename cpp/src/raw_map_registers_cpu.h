// Steps 2-3 on the CPU for maps of 8 to 71 values (7 x 7 at DenseNet-121's last
// block), contiguous float32 or float16 planes, AVX2: the map stays in registers
// across the K channels, where the general loop (raw_map_cpu.cpp) loads and
// stores it once per channel: for a 7 x 7 map, half of the instructions with
// float32 planes and two thirds with float16 (bench/README.md). With gradients,
// the weights of eight channels are summed together, one tree of shuffles for
// the eight instead of a horizontal sum each: 54 % fewer instructions again with
// float32 planes, 38 % with float16. The same operations in the same order as
// that loop, so the same numbers. Internal to the backends.
#pragma once
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <type_traits>

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

// The last n mod 8 values of a plane of n, moved to the lanes sum_of adds them
// to: loaded as the plane's last eight values (never past its end), value
// 8 (n / 8) + l from lane l + 8 - n mod 8 to lane l.
struct TailLanes {
  __m256i from;
  __m256 keep;  // all bits in the lanes that take a value

  EGAL_TARGET_AVX2 explicit TailLanes(int64_t n) {
    const int r = static_cast<int>(n % 8);
    alignas(32) int32_t from_lane[8], keep_lane[8];
    for (int l = 0; l < 8; ++l) from_lane[l] = l < r ? l + 8 - r : 0, keep_lane[l] = l < r ? -1 : 0;
    from = _mm256_load_si256(reinterpret_cast<const __m256i*>(from_lane));
    keep = _mm256_castsi256_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(keep_lane)));
  }
};

// The sums of eight gradient planes of n = 8 kVectors + n mod 8 values, `stride`
// apart, as sum_of adds them (channel_mean.h): vector j of a plane goes to the
// partial sums of chain j mod 2 (values q mod 16 < 8, or >= 8), the tail to the
// next chain's first lanes (blended: the load's other lanes hold values already
// added, and those lanes keep their sums); then p_l + p_{l + 8} and the pairwise
// tree, for the eight planes at once instead of one horizontal sum each.
template <int kVectors, class T>
EGAL_TARGET_AVX2 inline __m256 plane_sums_of_eight(const T* g, int64_t stride, int64_t n, const TailLanes& tail) {
  __m256 s[8];
  for (int c = 0; c < 8; ++c) {
    const T* x = g + c * stride;
    __m256 chain[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int j = 0; j < kVectors; ++j) chain[j % 2] = _mm256_add_ps(chain[j % 2], load_eight(x + 8 * j));
    if (n % 8 != 0) {
      __m256& last = chain[kVectors % 2];
      const __m256 values = _mm256_permutevar8x32_ps(load_eight(x + n - 8), tail.from);
      last = _mm256_blendv_ps(last, _mm256_add_ps(last, values), tail.keep);
    }
    s[c] = _mm256_add_ps(chain[0], chain[1]);  // p_l + p_{l + 8}
  }
  // Per plane ((p_0 + p_4) + (p_2 + p_6)) + ((p_1 + p_5) + (p_3 + p_7)):
  // u = [p_0 + p_4, p_1 + p_5, p_2 + p_6, p_3 + p_7] of planes 2i | 2i + 1,
  __m256 u[4];
  for (int i = 0; i < 4; ++i)
    u[i] = _mm256_add_ps(_mm256_permute2f128_ps(s[2 * i], s[2 * i + 1], 0x20),
                         _mm256_permute2f128_ps(s[2 * i], s[2 * i + 1], 0x31));
  // v = [u_0 + u_2, u_1 + u_3] of planes 0, 2 | 1, 3 (and 4, 6 | 5, 7),
  const __m256 v0 = _mm256_add_ps(_mm256_shuffle_ps(u[0], u[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm256_shuffle_ps(u[0], u[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m256 v1 = _mm256_add_ps(_mm256_shuffle_ps(u[2], u[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm256_shuffle_ps(u[2], u[3], _MM_SHUFFLE(3, 2, 3, 2)));
  // then v_0 + v_1: planes 0, 2, 4, 6 | 1, 3, 5, 7, put in order.
  return _mm256_permutevar8x32_ps(_mm256_hadd_ps(v0, v1), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Step 2's weights of eight channels from their gradient planes, as plane_mean
// computes each; returns false when one is not finite.
template <int kVectors, class T>
EGAL_TARGET_AVX2 inline bool plane_means_of_eight(const T* g, int64_t stride, int64_t n, const TailLanes& tail,
                                                  float* weights) {
  const __m256 means = _mm256_div_ps(plane_sums_of_eight<kVectors>(g, stride, n, tail), _mm256_set1_ps(n));
  _mm256_storeu_ps(weights, means);
  const __m256 magnitude = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), means);
  if (_mm256_movemask_ps(_mm256_cmp_ps(magnitude, _mm256_set1_ps(FLT_MAX), _CMP_LE_OQ)) == 0xff) return true;
  bool finite = true;
  for (int c = 0; c < 8; ++c) {  // float32 sums that overflowed take mean_of's float64 pass
    if constexpr (std::is_same_v<T, float>)
      if (!std::isfinite(weights[c])) weights[c] = plane_mean(g + c * stride, n);
    finite = finite && std::isfinite(weights[c]);
  }
  return finite;
}

// map += weight x for an activation plane x: its first 8 kVectors values in
// registers, the rest_size others in `rest`. (A function, not a lambda: a
// lambda's body is compiled for the baseline instruction set.)
template <int kVectors, class T>
EGAL_TARGET_AVX2 inline void add_plane(const T* x, float weight, int64_t rest_size, __m256 (&map)[kVectors],
                                       float (&rest)[8]) {
  const __m256 w = _mm256_set1_ps(weight);
  for (int v = 0; v < kVectors; ++v) map[v] = _mm256_fmadd_ps(w, load_eight(x + 8 * v), map[v]);
  for (int64_t r = 0; r < rest_size; ++r) rest[r] = std::fma(weight, load_one(x + 8 * kVectors + r), rest[r]);
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
  int64_t k = 0;
  if constexpr (kGradients) {
    const TailLanes tail(n);
    alignas(32) float weights[8];
    for (; k + 8 <= p.K; k += 8) {
      finite = plane_means_of_eight<kVectors>(p.g + k * p.g_stride, p.g_stride, n, tail, weights) && finite;
      for (int c = 0; c < 8; ++c) add_plane(p.a + (k + c) * p.a_stride, weights[c], rest_size, map, rest);
    }
  }
  for (; k < p.K; ++k) {
    const float weight = kGradients ? plane_mean(p.g + k * p.g_stride, n)
                                    : load_as_float(p.weights, p.weight_dtype, p.weight_offset + k * p.weight_stride);
    finite = finite && std::isfinite(weight);
    add_plane(p.a + k * p.a_stride, weight, rest_size, map, rest);
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
