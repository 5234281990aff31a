// Steps 2-3 alone on one thread, built from a checkout's own sources (no Python, no OpenMP):
// egal::cpu::raw_map over B = 256 samples of K = 1024 planes of h x h (7 by default: DenseNet-121's last
// block), gradients given, float32 or float16; prints the fastest and the median pass and a checksum. To
// compare two versions, build this file against each checkout's cpp/ and run the binaries in turns, or
// count instructions a pass with perf (bench/README.md, "Byte masks row after row"):
// clang-format off
//   S=cpp/src; g++ -O3 -std=c++17 -Icpp/include -I$S bench/raw_map_one_thread.cpp $S/raw_map_cpu.cpp $S/cpu_isa.cpp -o /tmp/raw_map
//   /tmp/raw_map avx2 float16 [passes] [h]     # instruction set: baseline, avx2; dtype: float32, float16
//   perf stat -e instructions /tmp/raw_map avx2 float16 12   # less the same with 2 passes, divided by 10
// clang-format on
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu_isa.h"
#include "raw_map_cpu.h"
#include "scalar.h"

namespace {

// float32 -> float16, round to nearest even; values below the smallest normal half become zero (rare for the
// N(0, 1) data here, and the same in every build compared).
egal::half_bits to_half(float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  const uint32_t sign = (bits >> 16) & 0x8000u, mantissa = bits & 0x7fffffu;
  const int exponent = static_cast<int>((bits >> 23) & 0xffu) - 127 + 15;
  if (exponent <= 0) return {static_cast<uint16_t>(sign)};
  uint32_t rounded = mantissa >> 13;
  const uint32_t dropped = mantissa & 0x1fffu;
  if (dropped > 0x1000u || (dropped == 0x1000u && (rounded & 1u))) ++rounded;
  return {static_cast<uint16_t>(sign | ((static_cast<uint32_t>(exponent) << 10) + rounded))};
}

}  // namespace

int main(int argc, char** argv) {
  const std::string isa = argc > 1 ? argv[1] : "avx2", dtype = argc > 2 ? argv[2] : "float16";
  const int passes = argc > 3 ? std::stoi(argv[3]) : 25;
  const int64_t h = argc > 4 ? std::stoi(argv[4]) : 7, w = h;
  const int64_t B = 256, K = 1024, n = B * K * h * w;
  egal::cpu::set_isa(isa);
  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  std::vector<float> activations(static_cast<size_t>(n)), gradients(static_cast<size_t>(n));
  for (float& value : activations) value = std::abs(normal(rng));
  for (float& value : gradients) value = normal(rng);
  std::vector<egal::half_bits> activation_halves, gradient_halves;
  egal::ScoreInputs in;
  for (egal::TensorView* view : {&in.activations, &in.gradients}) {
    view->present = true;
    view->rank = 4;
    view->shape[0] = B, view->shape[1] = K, view->shape[2] = h, view->shape[3] = w;
    view->stride[0] = K * h * w, view->stride[1] = h * w, view->stride[2] = w, view->stride[3] = 1;
  }
  if (dtype == "float16") {
    for (float value : activations) activation_halves.push_back(to_half(value));
    for (float value : gradients) gradient_halves.push_back(to_half(value));
    in.activations.dtype = in.gradients.dtype = egal::DType::Float16;
    in.activations.data = activation_halves.data();
    in.gradients.data = gradient_halves.data();
  } else {
    in.activations.data = activations.data();
    in.gradients.data = gradients.data();
  }
  std::vector<float> cam(static_cast<size_t>(h * w)), plane(static_cast<size_t>(h * w));
  std::vector<double> times;
  double checksum = 0.0;
  for (int pass = 0; pass < passes; ++pass) {
    const auto start = std::chrono::steady_clock::now();
    checksum = 0.0;
    for (int64_t b = 0; b < B; ++b) {
      egal::cpu::raw_map(in, b, cam.data(), plane.data());
      for (float value : cam) checksum += value;
    }
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  std::printf("%s %s: fastest %.2f ms, median %.2f ms (checksum %.9g)\n", isa.c_str(), dtype.c_str(), times[0],
              times[times.size() / 2], checksum);
}
