// Build and run: g++ -O3 -std=c++17 bench/ab_channel_mean.cpp -o /tmp/ab && /tmp/ab (bench/README.md, "Step 2 in float64")
// A/B in one run: step 2's per-channel mean, float32 sum / n (before) against mean_of (after: the float64
// pass only where the float32 mean is not finite), on DenseNet-121's last block (K = 1024, 7 x 7), B = 256.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>
__attribute__((always_inline)) inline float sum_of(const float* __restrict x, int64_t n) {
  float part[16] = {};
  int64_t q = 0;
  for (; q + 16 <= n; q += 16)
    for (int l = 0; l < 16; ++l) part[l] += x[q + l];
  float tail = 0.0f;
  for (; q < n; ++q) tail += x[q];
  for (int l = 0; l < 8; ++l) part[l] += part[l + 8];
  return (((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]))) + tail;
}
__attribute__((always_inline)) inline float mean_of(const float* __restrict x, int64_t n) {
  const float mean = sum_of(x, n) / static_cast<float>(n);
  if (std::isfinite(mean)) return mean;
  double sum = 0.0;
  for (int64_t q = 0; q < n; ++q) sum += x[q];
  return static_cast<float>(sum / static_cast<double>(n));
}
__attribute__((target("avx2,fma"), noinline)) float before(const float* g, const float* a, int64_t B, int64_t K, int64_t hw, float* cam) {
  float s = 0; bool finite = true;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t q = 0; q < hw; ++q) cam[q] = 0;
    for (int64_t k = 0; k < K; ++k) {
      const float w = sum_of(g + (b * K + k) * hw, hw) / static_cast<float>(hw);
      finite = finite && std::isfinite(w);
      const float* x = a + (b * K + k) * hw;
      for (int64_t q = 0; q < hw; ++q) cam[q] += w * x[q];
    }
    s += cam[0];
  }
  return finite ? s : -s;
}
__attribute__((target("avx2,fma"), noinline)) float after(const float* g, const float* a, int64_t B, int64_t K, int64_t hw, float* cam) {
  float s = 0; bool finite = true;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t q = 0; q < hw; ++q) cam[q] = 0;
    for (int64_t k = 0; k < K; ++k) {
      const float w = mean_of(g + (b * K + k) * hw, hw);
      finite = finite && std::isfinite(w);
      const float* x = a + (b * K + k) * hw;
      for (int64_t q = 0; q < hw; ++q) cam[q] += w * x[q];
    }
    s += cam[0];
  }
  return finite ? s : -s;
}
int main() {
  const int64_t B = 256, K = 1024, hw = 49;
  std::vector<float> g(B * K * hw), a(B * K * hw), cam(hw);
  std::mt19937 rng(0); std::normal_distribution<float> d;
  for (auto& v : g) v = d(rng);
  for (auto& v : a) v = d(rng);
  double best[2] = {1e9, 1e9}; float sink = 0;
  for (int round = 0; round < 15; ++round)
    for (int which = 0; which < 2; ++which) {
      auto t0 = std::chrono::steady_clock::now();
      sink += which ? after(g.data(), a.data(), B, K, hw, cam.data()) : before(g.data(), a.data(), B, K, hw, cam.data());
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (ms < best[which]) best[which] = ms;
    }
  std::printf("B=256 K=1024 7x7 float32, one thread, best of 15: before %.2f ms, after %.2f ms, after/before %.3f (%g)\n",
              best[0], best[1], best[1] / best[0], sink);
}
