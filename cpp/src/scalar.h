// Loads of every input dtype as float32, usable from C++ and CUDA device code.
#pragma once
#include <cstdint>
#include <cstring>

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

}  // namespace egal
