// Step 2's channel weight, the mean of a gradient plane, for the CPU kernels (and
// bench/ab_channel_mean.cpp, which times it against the float32 sum alone).
// Internal to the backends.
#pragma once
#include <cmath>
#include <cstdint>

#include "cpu_isa.h"

namespace egal::cpu {

// The sum of n floats in the order every path of step 2 keeps, so that they give
// the same numbers (half_cpu.h, raw_map_registers_cpu.h): value q is added to
// partial sum q mod 16, in increasing q (two AVX2 registers, two independent
// chains of adds: the compiler keeps a single running sum scalar, as it may not
// reassociate it), then p_l + p_{l + 8}, then
// ((p_0 + p_4) + (p_2 + p_6)) + ((p_1 + p_5) + (p_3 + p_7)).
EGAL_ALWAYS_INLINE float sum_of(const float* __restrict x, int64_t n) {
  float part[16] = {};
  int64_t q = 0;
  for (; q + 16 <= n; q += 16)
    for (int l = 0; l < 16; ++l) part[l] += x[q + l];
  for (int64_t l = 0; q + l < n; ++l) part[l] += x[q + l];
  for (int l = 0; l < 8; ++l) part[l] += part[l + 8];
  return ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
}

// The mean of n floats; the sum in float64 where the float32 sum overflowed:
// finite gradients have a finite mean (step 2), and the float32 sum is the
// fast path.
EGAL_ALWAYS_INLINE float mean_of(const float* __restrict x, int64_t n) {
  const float mean = sum_of(x, n) / static_cast<float>(n);
  if (std::isfinite(mean)) return mean;
  double sum = 0.0;
  for (int64_t q = 0; q < n; ++q) sum += x[q];
  return static_cast<float>(sum / static_cast<double>(n));
}

}  // namespace egal::cpu
