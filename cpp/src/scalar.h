// Loads of every input dtype as float32, usable from C++ and CUDA device code.
// Internal to the backends (not part of the C++ API in include/egal/).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "egal/tensor_view.h"

#if defined(__CUDACC__)
#define EGAL_HD __host__ __device__ __forceinline__
#else
#define EGAL_HD inline
#endif

namespace egal {

// Storage tags: the kernels are templated on these, never on framework types.
struct half_bits {
  uint16_t bits;
};
struct bfloat16_bits {
  uint16_t bits;
};

EGAL_HD float bits_to_float(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

EGAL_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
#endif
}

EGAL_HD float to_float(float x) { return x; }
EGAL_HD float to_float(uint8_t x) { return static_cast<float>(x); }
EGAL_HD float to_float(bool x) { return x ? 1.0f : 0.0f; }
EGAL_HD float to_float(bfloat16_bits x) { return bits_to_float(static_cast<uint32_t>(x.bits) << 16); }

// IEEE half -> float without F16C: move exponent and mantissa into place, then
// rescale by 2^112 (exact, and it handles subnormal halves); Inf/NaN are patched.
EGAL_HD float to_float(half_bits x) {
  const uint32_t sign = static_cast<uint32_t>(x.bits & 0x8000u) << 16;
  const uint32_t magnitude = x.bits & 0x7fffu;
  uint32_t bits = float_to_bits(bits_to_float(magnitude << 13) * 5.192296858534828e+33f);
  if (magnitude >= 0x7c00u) bits = 0x7f800000u | (magnitude << 13);
  return bits_to_float(bits | sign);
}

// One element of an array whose dtype is known only at run time, as float32
// (channel weights, logits and masks: a few loads per sample, or per pixel on the GPU).
EGAL_HD float load_as_float(const void* base, DType dtype, int64_t offset) {
  switch (dtype) {
    case DType::Float32: return static_cast<const float*>(base)[offset];
    case DType::Float16: return to_float(static_cast<const half_bits*>(base)[offset]);
    case DType::BFloat16: return to_float(static_cast<const bfloat16_bits*>(base)[offset]);
    case DType::UInt8:
    case DType::Bool: return static_cast<float>(static_cast<const uint8_t*>(base)[offset]);
  }
  return NAN;
}

}  // namespace egal
