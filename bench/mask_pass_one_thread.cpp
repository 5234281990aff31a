// The CPU mask pass alone on one thread, built from a checkout's own sources (no Python, no OpenMP):
// egal::cpu::project_mask over 256 masks of 224 x 224 onto a 7 x 7 grid, 25 times (or as many as the third
// argument says); prints the fastest and the median pass. To compare two versions of the pass, build this file against
// each checkout's cpp/ and run the two binaries in turns (bench/README.md, "A third CPU model"):
// clang-format off
//   S=cpp/src; g++ -O3 -std=c++17 -fopenmp-simd -Icpp/include -I$S bench/mask_pass_one_thread.cpp $S/mask_projection_cpu.cpp $S/roi_projection_cpu.cpp $S/interpolation.cpp $S/cpu_isa.cpp -o /tmp/pass
//   /tmp/pass avx2 soft     # instruction set: baseline, avx2, avx512; masks: soft, soft16, blob, scattered
// clang-format on
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_isa.h"
#include "roi_projection_cpu.h"
#include "scalar.h"

namespace {

// float32 -> float16, round to nearest even (normal values only: the masks here are in [0, 1]).
egal::half_bits to_half(float value) {
  if (value < 6.1035156e-05f) return {static_cast<uint16_t>(std::lround(value / 5.9604645e-08f))};  // subnormal
  int exponent = 0;
  const float mantissa = std::frexp(value, &exponent);  // value = mantissa 2^exponent, mantissa in [0.5, 1)
  const auto bits =
      static_cast<uint32_t>(std::nearbyint(mantissa * 2048.0f)) + static_cast<uint32_t>(exponent + 14) * 1024u - 1024u;
  return {static_cast<uint16_t>(bits)};
}

}  // namespace

int main(int argc, char** argv) {
  const std::string isa = argc > 1 ? argv[1] : "avx2", kind = argc > 2 ? argv[2] : "soft";
  const int passes = argc > 3 ? std::stoi(argv[3]) : 25;
  const int64_t B = 256, H = 224, W = 224, n = B * H * W;
  egal::cpu::set_isa(isa);
  std::mt19937 rng(0);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> floats(static_cast<size_t>(n));
  std::vector<egal::half_bits> halves;
  std::vector<uint8_t> bytes;
  egal::TensorView masks;
  masks.present = true;
  masks.rank = 3;
  masks.shape[0] = B, masks.shape[1] = H, masks.shape[2] = W;
  masks.stride[0] = H * W, masks.stride[1] = W, masks.stride[2] = 1;
  for (float& value : floats) value = uniform(rng);
  if (kind == "soft") {
    masks.dtype = egal::DType::Float32, masks.data = floats.data();
  } else if (kind == "soft16") {
    for (float value : floats) halves.push_back(to_half(value));
    masks.dtype = egal::DType::Float16, masks.data = halves.data();
  } else if (kind == "blob" || kind == "scattered") {  // a disc of about 10 % of the image, or 10 % scattered pixels
    const bool blob = kind == "blob";
    for (int64_t q = 0; q < n; ++q) {
      const int64_t y = q / W % H, x = q % W;
      const bool in_disc = (y - 112) * (y - 112) + (x - 112) * (x - 112) < 40 * 40;
      bytes.push_back(blob ? in_disc : floats[q] < 0.1f);
    }
    masks.dtype = egal::DType::UInt8, masks.data = bytes.data();
  } else {
    throw std::invalid_argument("masks: soft, soft16, blob or scattered");
  }
  const egal::cpu::ProjectionPlan plan(H, W, 7, 7, egal::RoiKind::Masks);
  egal::cpu::ProjectionScratch scratch;
  std::vector<double> projection(static_cast<size_t>(49 * B));
  std::vector<double> ms;
  double area = 0.0;
  for (int run = 0; run < passes; ++run) {
    const auto start = std::chrono::steady_clock::now();
    for (int64_t b = 0; b < B; ++b) {
      bool bad = false;
      area += egal::cpu::project_mask(masks, b, plan, scratch, projection.data() + 49 * b, &bad);
      if (bad) throw std::runtime_error("a mask was reported bad");
    }
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  double weights = 0.0;
  for (double p : projection) weights += p;
  if (ms.empty()) return 0;  // zero passes: the set-up alone, e.g. to subtract from perf stat's counts
  std::printf("%s %s: fastest %.2f ms, median %.2f ms (area %.6g, sum of weights %.9g)\n", isa.c_str(), kind.c_str(),
              ms.front(), ms[ms.size() / 2], area / passes, weights);
}
