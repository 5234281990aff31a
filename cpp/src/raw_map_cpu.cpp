// Steps 2-3 on the CPU: for each channel k the weight w_k (the mean of gradient
// plane k, or the given weight), then cam += w_k A_k, one plane at a time. Planes
// that are not contiguous float32 are first widened into an L1-sized buffer
// (float16 with F16C where the CPU has it). The loops are compiled for baseline
// x86-64 and AVX2 (cpu_isa.h): a plane is small (7 x 7 at DenseNet-121's last
// block), so the work per channel is a few vectors and their width decides the
// speed; with AVX2, maps of 8 to 71 values stay in registers across the channels
// (raw_map_registers_cpu.h).
#include "raw_map_cpu.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "channel_mean.h"
#include "cpu_isa.h"
#include "half_cpu.h"
#include "raw_map_registers_cpu.h"
#include "scalar.h"

namespace egal::cpu {
namespace {

// cam += weight x; kFma: one rounding per value (the AVX2 variant, whose float16
// and register-held paths fuse too), spelled out so that the paths agree bit for
// bit whether or not the compiler contracts a multiply and an add (it does not at
// -O0 or with -ffp-contract=off).
template <bool kFma>
EGAL_ALWAYS_INLINE void add_scaled(float weight, const float* __restrict x, int64_t n, float* __restrict cam) {
  for (int64_t q = 0; q < n; ++q) {
    if constexpr (kFma)
      cam[q] = std::fma(weight, x[q], cam[q]);
    else
      cam[q] += weight * x[q];
  }
}

// An [h, w] plane as contiguous float32: in place for contiguous float32,
// otherwise widened (or gathered) into `buffer`. kF16c: widen float16 with F16C.
template <bool kF16c, class T>
EGAL_ALWAYS_INLINE const float* plane_as_floats(const T* data, int64_t h, int64_t w, int64_t stride_i, int64_t stride_j,
                                                float* __restrict buffer) {
  const int64_t n = h * w;
  if (stride_j == 1 && (stride_i == w || h == 1)) {
    if constexpr (std::is_same_v<T, float>) {
      return data;
    } else if constexpr (std::is_same_v<T, half_bits>) {
      halves_to_floats<kF16c>(data, n, buffer);
      return buffer;
    } else {
      for (int64_t q = 0; q < n; ++q) buffer[q] = to_float(data[q]);
      return buffer;
    }
  }
  for (int64_t i = 0; i < h; ++i)
    for (int64_t j = 0; j < w; ++j) buffer[i * w + j] = to_float(data[i * stride_i + j * stride_j]);
  return buffer;
}

template <bool kF16c, class T>
EGAL_ALWAYS_INLINE bool raw_map_with(const ScoreInputs& in, int64_t b, float* cam, float* plane) {
  const TensorView& A = in.activations;
  const TensorView& G = in.gradients;
  const TensorView& W = in.weights;
  const int64_t K = A.shape[1], h = A.shape[2], w = A.shape[3], hw = h * w;
  const T* a = static_cast<const T*>(A.data) + b * A.stride[0];
  const T* g = G.present ? static_cast<const T*>(G.data) + b * G.stride[0] : nullptr;
  std::fill(cam, cam + hw, 0.0f);
  bool finite = true;
#if EGAL_X86_DISPATCH
  const auto contiguous = [&](const TensorView& v) { return v.stride[3] == 1 && (v.stride[2] == w || h == 1); };
  // Small contiguous float32 or float16 maps with AVX2: the map in registers.
  if constexpr (kF16c && !std::is_same_v<T, bfloat16_bits>) {
    if (small_map(hw) && contiguous(A) && (!g || contiguous(G))) {
      // Without gradients the weights are W's row b; with them W is absent.
      const SmallMapPlanes<T> planes{a,
                                     A.stride[1],
                                     g,
                                     g ? G.stride[1] : 0,
                                     g ? nullptr : W.data,
                                     W.dtype,
                                     g ? 0 : b * W.stride[0],
                                     g ? 0 : W.stride[1],
                                     K,
                                     hw};
      return raw_map_small(planes, cam);
    }
  }
  // Contiguous float16 planes with F16C: widened inside the arithmetic, no copy.
  if constexpr (kF16c && std::is_same_v<T, half_bits>) {
    if (contiguous(A) && (!g || contiguous(G))) {
      for (int64_t k = 0; k < K; ++k) {
        const float weight = g ? sum_of_halves(g + k * G.stride[1], hw) / static_cast<float>(hw)
                               : load_as_float(W.data, W.dtype, b * W.stride[0] + k * W.stride[1]);
        finite = finite && std::isfinite(weight);
        add_scaled_halves(weight, a + k * A.stride[1], hw, cam);
      }
      return finite;
    }
  }
#endif
  for (int64_t k = 0; k < K; ++k) {
    float weight;
    if (g) {
      const float* g_plane = plane_as_floats<kF16c>(g + k * G.stride[1], h, w, G.stride[2], G.stride[3], plane);
      weight = mean_of(g_plane, hw);
    } else {
      weight = load_as_float(W.data, W.dtype, b * W.stride[0] + k * W.stride[1]);
    }
    finite = finite && std::isfinite(weight);
    add_scaled<kF16c>(weight, plane_as_floats<kF16c>(a + k * A.stride[1], h, w, A.stride[2], A.stride[3], plane), hw,
                      cam);
  }
  return finite;
}

template <bool kF16c>
EGAL_ALWAYS_INLINE bool raw_map_any(const ScoreInputs& in, int64_t b, float* cam, float* plane) {
  switch (in.activations.dtype) {
    case DType::Float16: return raw_map_with<kF16c, half_bits>(in, b, cam, plane);
    case DType::BFloat16: return raw_map_with<kF16c, bfloat16_bits>(in, b, cam, plane);
    default: return raw_map_with<kF16c, float>(in, b, cam, plane);  // float32: checked by the caller
  }
}

bool raw_map_baseline(const ScoreInputs& in, int64_t b, float* cam, float* plane) {
  return raw_map_any<false>(in, b, cam, plane);
}

#if EGAL_X86_DISPATCH
EGAL_TARGET_AVX2 bool raw_map_avx2(const ScoreInputs& in, int64_t b, float* cam, float* plane) {
  return raw_map_any<true>(in, b, cam, plane);
}
#endif

}  // namespace

bool raw_map(const ScoreInputs& in, int64_t b, float* cam, float* plane) {
  switch (isa()) {
#if EGAL_X86_DISPATCH
    // AVX-512 CPUs run the AVX2 code too: a plane of 7 x 7 fills three 512-bit
    // vectors and a tail, and on a Xeon (Cascade Lake) the AVX-512 build of this
    // loop measured 1.9x slower than the AVX2 one (31 against 16.6 us a sample of
    // 1024 channels, in L2, one thread).
    case Isa::Avx512:
    case Isa::Avx2: return raw_map_avx2(in, b, cam, plane);
#endif
    default: return raw_map_baseline(in, b, cam, plane);
  }
}

}  // namespace egal::cpu
