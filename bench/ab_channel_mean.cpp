// A/B in one run: step 2's per-channel mean as the float32 sum divided by n (before 2026-11-27) and as
// egal::cpu::mean_of (after: a float64 pass only where the float32 mean is not finite), each followed by
// step 3's cam += w_k A_k, on DenseNet-121's last block (K = 1024, 7 x 7), B = 256, float32, AVX2, one thread.
// Both use the kernel's own code (cpp/src/channel_mean.h). Results: bench/README.md, "Step 2 in float64".
//   g++ -O3 -std=c++17 -Icpp/src bench/ab_channel_mean.cpp -o /tmp/ab && /tmp/ab
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "channel_mean.h"

using egal::cpu::mean_of;
using egal::cpu::sum_of;

template <bool kFallback>
EGAL_TARGET_AVX2 __attribute__((noinline)) float raw_maps(const float* g, const float* a, int64_t B, int64_t K,
                                                          int64_t hw, float* cam) {
  float checksum = 0;
  bool finite = true;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t q = 0; q < hw; ++q) cam[q] = 0;
    for (int64_t k = 0; k < K; ++k) {
      const float* plane = g + (b * K + k) * hw;
      const float w = kFallback ? mean_of(plane, hw) : sum_of(plane, hw) / static_cast<float>(hw);
      finite = finite && std::isfinite(w);
      const float* x = a + (b * K + k) * hw;
      for (int64_t q = 0; q < hw; ++q) cam[q] += w * x[q];
    }
    checksum += cam[0];
  }
  return finite ? checksum : -checksum;
}

int main() {
  const int64_t B = 256, K = 1024, hw = 49;
  std::vector<float> g(B * K * hw), a(B * K * hw), cam(hw);
  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  for (auto& v : g) v = normal(rng);
  for (auto& v : a) v = normal(rng);
  double best[2] = {1e9, 1e9};
  float sink = 0;
  for (int round = 0; round < 15; ++round)
    for (int which = 0; which < 2; ++which) {
      const auto start = std::chrono::steady_clock::now();
      sink += which ? raw_maps<true>(g.data(), a.data(), B, K, hw, cam.data())
                    : raw_maps<false>(g.data(), a.data(), B, K, hw, cam.data());
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      if (ms < best[which]) best[which] = ms;
    }
  std::printf(
      "B=256 K=1024 7x7 float32, AVX2, one thread, best of 15: before %.2f ms, after %.2f ms, "
      "after/before %.3f (checksum %g)\n",
      best[0], best[1], best[1] / best[0], sink);
}
