// The CUDA backend's kernels, run on the CPU through cuda_runtime.h's emulation, against the CPU backend: each
// case scored once with CPU views and once with "CUDA" views of the same memory, with every pass of the CUDA
// backend, and every sample's bad-mask bit as the case expects it. Prints a line a case and pass, then
// "N failure(s)"; exits 1 on any failure (tests/test_cuda_emulated.py).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "egal/score.h"
#include "interpolation.h"

namespace {

using egal::Device;
using egal::DType;

uint16_t float16_of(float f) {  // round to nearest even; normal range and zero (test values)
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u, mantissa = x & 0x7fffffu;
  const int exponent = static_cast<int>((x >> 23) & 0xff) - 127 + 15;
  if (exponent <= 0) return static_cast<uint16_t>(sign);
  uint32_t h = (static_cast<uint32_t>(exponent) << 10) | (mantissa >> 13);
  const uint32_t rest = mantissa & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) ++h;
  return static_cast<uint16_t>(sign | h);
}

uint16_t bfloat16_of(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

struct Array {
  std::vector<unsigned char> bytes;
  DType dtype;
};

Array stored_as(const std::vector<float>& values, DType dtype) {
  const size_t size = dtype == DType::Float32 ? 4 : dtype == DType::UInt8 || dtype == DType::Bool ? 1 : 2;
  Array out{std::vector<unsigned char>(values.size() * size + 64), dtype};
  for (size_t i = 0; i < values.size(); ++i) {
    unsigned char* at = &out.bytes[i * size];
    if (dtype == DType::Float32) std::memcpy(at, &values[i], 4);
    const uint16_t half = dtype == DType::Float16 ? float16_of(values[i]) : bfloat16_of(values[i]);
    if (size == 2) std::memcpy(at, &half, 2);
    if (size == 1) *at = values[i] != 0.0f;
  }
  return out;
}

egal::TensorView view_of(const Array& array, Device device, std::vector<int64_t> shape,
                         std::vector<int64_t> stride = {}) {
  egal::TensorView view;
  view.data = array.bytes.data();
  view.dtype = array.dtype, view.device = device, view.rank = static_cast<int>(shape.size()), view.present = true;
  int64_t step = 1;
  for (int d = view.rank - 1; d >= 0; --d) {
    view.shape[d] = shape[d];
    view.stride[d] = stride.empty() ? step : stride[d];
    step *= shape[d];
  }
  return view;
}

struct Case {
  int64_t B, K, h, w, C, H, W;
  DType features;
  std::string roi;  // masks "uint8", "bool", "float16", "float32", "soft" (float32 in [0, 1]); "boxes"; or
                    // "projected" (uint8 masks projected on the CPU first, egal::project_roi), or "inconsistent"
                    // (the same with sample 1's weights ten times their area: I > SM, a bad mask)
  bool gradients;  // else weights [B, K]
  bool channels_last = false;
  std::string poison = "";  // "nan-gradient" (sample 1), "inf-activation" (sample 0), "overflow" (sample 0's
                            // channel 1: finite gradients whose float32 sum overflows, a finite mean)
  std::string mask_layout = "";  // "transposed" (stored [B, W, H]), "offset" (one element past an aligned start)
  DType weights_dtype = DType::Float32;  // given weights' dtype
  std::string weights_layout = "";  // "transposed" (stored [K, B]), "gap" (every other element, one element in)
  bool gradients_channels_last = false;  // the gradients alone stored [B, h, w, K]
  // Masks whose I meets min(SU, SM), which no rounding may take for a bad mask: "ones", every mask value 1 (I =
  // SU); "plateau", given weights > 0 and activations 100 but 0 in cell (0, 0), so the map is 1 but there, and
  // masks only on the pixels that do not read that cell (I = SM). "" for a disc of random centre and radius.
  std::string fill = "";
};

Case filled(Case c, const char* fill) {
  c.fill = fill;
  return c;
}

struct Outputs {
  std::vector<int64_t> pred;
  std::vector<int32_t> status;
  std::vector<std::vector<float>> fields;  // entropy, entropy_norm, misalignment, score, cam
};

int failures = 0;

void check(const Case& c, const std::string& passes, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  const int64_t hw = c.h * c.w, n = c.B * c.K * hw;
  std::vector<float> a(n), g(n), weights(c.B * c.K), logits(c.B * c.C), masks(c.B * c.H * c.W), boxes(c.B * 3 * 4);
  for (float& v : a) v = std::fabs(normal(rng));
  for (float& v : g) v = normal(rng) * 0.1f + 0.02f;
  for (float& v : weights) v = normal(rng);
  for (float& v : logits) v = normal(rng) * 2.0f;
  if (c.poison == "nan-gradient") g[c.K * hw + 5] = NAN;
  if (c.poison == "inf-activation") a[3] = INFINITY;
  if (c.poison == "overflow")
    for (int64_t p = 0; p < hw; ++p) g[hw + p] = 3.0e38f, a[hw + p] = 0.0f;
  if (c.fill == "plateau") {
    for (int64_t i = 0; i < n; ++i) a[i] = i % hw == 0 ? 0.0f : 100.0f;
    for (float& v : weights) v = std::fabs(v);
  }
  const egal::AxisInterpolation rows(c.H, c.h), cols(c.W, c.w);
  for (int64_t b = 0; b < c.B; ++b) {
    const float cy = unit(rng) * c.H, cx = unit(rng) * c.W, r = 0.1f + 0.3f * unit(rng) * std::min(c.H, c.W);
    for (int64_t y = 0; y < c.H; ++y)
      for (int64_t x = 0; x < c.W; ++x) {
        const bool inside = c.fill == "ones"      ? true
                            : c.fill == "plateau" ? rows.lo[y] != 0 || cols.lo[x] != 0
                                                  : (y - cy) * (y - cy) + (x - cx) * (x - cx) <= r * r;
        masks[(b * c.H + y) * c.W + x] = c.roi == "soft" ? unit(rng) * inside : static_cast<float>(inside);
      }
    for (int k = 0; k < 3; ++k) {  // three boxes, the last NaN padding in odd samples
      float* box = &boxes[(b * 3 + k) * 4];
      box[0] = unit(rng) * c.W, box[1] = unit(rng) * c.H;
      box[2] = box[0] + unit(rng) * c.W / 2, box[3] = box[1] + unit(rng) * c.H / 2;
      if (k == 2 && b % 2) std::fill(box, box + 4, NAN);
    }
  }
  std::vector<int64_t> stride;
  if (c.channels_last) {  // stored [B, h, w, K]
    std::vector<float> a_last(n), g_last(n);
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t k = 0; k < c.K; ++k)
        for (int64_t p = 0; p < hw; ++p) {
          a_last[(b * hw + p) * c.K + k] = a[(b * c.K + k) * hw + p];
          g_last[(b * hw + p) * c.K + k] = g[(b * c.K + k) * hw + p];
        }
    a.swap(a_last), g.swap(g_last);
    stride = {hw * c.K, 1, c.w * c.K, c.K};
  }
  std::vector<int64_t> gradient_stride = stride;
  if (c.gradients_channels_last) {
    std::vector<float> g_last(n);
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t k = 0; k < c.K; ++k)
        for (int64_t p = 0; p < hw; ++p) g_last[(b * hw + p) * c.K + k] = g[(b * c.K + k) * hw + p];
    g.swap(g_last);
    gradient_stride = {hw * c.K, 1, c.w * c.K, c.K};
  }
  std::vector<int64_t> weights_stride;
  if (c.weights_layout == "transposed") {
    std::vector<float> stored(weights.size());
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t k = 0; k < c.K; ++k) stored[k * c.B + b] = weights[b * c.K + k];
    weights.swap(stored);
    weights_stride = {1, c.B};
  }
  if (c.weights_layout == "gap") {  // [B, 2K + 1] with a weight in every other element from the second
    std::vector<float> stored(c.B * (2 * c.K + 1), 12345.0f);
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t k = 0; k < c.K; ++k) stored[b * (2 * c.K + 1) + 2 * k + 1] = weights[b * c.K + k];
    weights.swap(stored);
    weights_stride = {2 * c.K + 1, 2};
  }
  const bool projected_roi = c.roi == "projected" || c.roi == "inconsistent";
  const DType mask_dtype = c.roi == "uint8" || projected_roi ? DType::UInt8
                           : c.roi == "bool"                 ? DType::Bool
                           : c.roi == "float16"              ? DType::Float16
                                                             : DType::Float32;
  std::vector<int64_t> mask_stride;
  if (c.mask_layout == "transposed") {
    std::vector<float> stored(masks.size());
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t y = 0; y < c.H; ++y)
        for (int64_t x = 0; x < c.W; ++x) stored[(b * c.W + x) * c.H + y] = masks[(b * c.H + y) * c.W + x];
    masks.swap(stored);
    mask_stride = {c.H * c.W, 1, c.H};
  }
  if (c.mask_layout == "offset") masks.insert(masks.begin(), 0.0f);
  const Array A = stored_as(a, c.features), G = stored_as(g, c.features), Wt = stored_as(weights, c.weights_dtype),
              Z = stored_as(logits, DType::Float32), M = stored_as(masks, mask_dtype),
              X = stored_as(boxes, DType::Float32);
  // A projected ROI [B, h, w] and its areas [B]; stored [B, w, h] with mask_layout "transposed".
  std::vector<float> projection(c.B * hw), projected(c.B * hw), area(c.B);
  std::vector<int32_t> projection_status(c.B);
  std::vector<int64_t> projection_stride;
  if (projected_roi) {
    egal::ScoreInputs roi;
    roi.masks = view_of(M, Device::CPU, {c.B, c.H, c.W}, mask_stride);
    roi.roi_height = c.H, roi.roi_width = c.W;
    egal::project_roi(roi, c.h, c.w, {projection.data(), area.data(), projection_status.data()});
    if (c.roi == "inconsistent")
      for (int64_t q = hw; q < 2 * hw; ++q) projection[q] *= 10.0f;
    projected = projection;
    if (c.mask_layout == "transposed") {
      for (int64_t b = 0; b < c.B; ++b)
        for (int64_t i = 0; i < c.h; ++i)
          for (int64_t j = 0; j < c.w; ++j) projected[(b * c.w + j) * c.h + i] = projection[(b * c.h + i) * c.w + j];
      projection_stride = {hw, 1, c.h};
    }
  }
  const Array P = stored_as(projected, DType::Float32), S = stored_as(area, DType::Float32);

  Outputs results[2];
  for (int side = 0; side < 2; ++side) {
    const Device device = side ? Device::CUDA : Device::CPU;
    egal::ScoreInputs in;
    in.activations = view_of(A, device, {c.B, c.K, c.h, c.w}, stride);
    if (c.gradients) {
      in.gradients = view_of(G, device, {c.B, c.K, c.h, c.w}, gradient_stride);
    } else {
      in.weights = view_of(Wt, device, {c.B, c.K}, weights_stride);
      if (c.weights_layout == "gap")
        in.weights.data = static_cast<const unsigned char*>(in.weights.data) + (Wt.bytes.size() - 64) / weights.size();
    }
    in.logits = view_of(Z, device, {c.B, c.C});
    in.roi_height = c.H, in.roi_width = c.W;
    if (c.roi == "boxes") {
      in.roi_kind = egal::RoiKind::Boxes;
      in.boxes = view_of(X, device, {c.B, 3, 4});
    } else if (projected_roi) {
      in.roi_kind = egal::RoiKind::Projected;
      in.roi_weights = view_of(P, device, {c.B, c.h, c.w}, projection_stride);
      in.roi_area = view_of(S, device, {c.B});
    } else {
      in.masks = view_of(M, device, {c.B, c.H, c.W}, mask_stride);
      if (c.mask_layout == "offset")
        in.masks.data = static_cast<const unsigned char*>(in.masks.data) + (M.bytes.size() - 64) / masks.size();
    }
    Outputs& r = results[side];
    r.pred.resize(c.B), r.status.resize(c.B);
    r.fields.assign(4, std::vector<float>(c.B));
    r.fields.emplace_back(c.B * hw);
    egal::score(in, {r.pred.data(), r.fields[0].data(), r.fields[1].data(), r.fields[2].data(), r.fields[3].data(),
                     r.fields[4].data(), r.status.data()});
  }

  static const char* names[] = {"entropy", "entropy_norm", "misalignment", "score", "cam"};
  const Outputs &cpu = results[0], &cuda = results[1];
  bool ok = cpu.pred == cuda.pred && cpu.status == cuda.status;
  if (!ok)
    std::printf("    predictions or status differ (sample 0 status: cpu %d, cuda %d)\n", cpu.status[0], cuda.status[0]);
  for (int64_t b = 0; b < c.B && ok; ++b)
    for (const Outputs* side : {&cpu, &cuda})
      if (ok && ((side->status[b] & egal::kStatusBadMask) != 0) != (c.roi == "inconsistent" && b == 1)) {
        std::printf("    sample %lld: status %d (%s)\n", static_cast<long long>(b), side->status[b],
                    side == &cpu ? "cpu" : "cuda");
        ok = false;
      }
  double largest = 0.0;
  for (size_t f = 0; f < cpu.fields.size(); ++f)
    for (size_t i = 0; i < cpu.fields[f].size(); ++i) {
      const float x = cpu.fields[f][i], y = cuda.fields[f][i];
      if (std::isnan(x) && std::isnan(y)) continue;
      const double difference = std::fabs(static_cast<double>(x) - y);
      largest = std::max(largest, std::isnan(difference) ? INFINITY : difference);
      if (!(difference <= 2e-5)) {  // the GPU tests' tolerance against the CPU backend
        if (ok) std::printf("    first difference: %s[%zu] cpu %.7g cuda %.7g\n", names[f], i, x, y);
        ok = false;
      }
    }
  const std::string inputs = c.gradients ? (c.gradients_channels_last ? "gradients channels last" : "gradients")
                                         : std::string(egal::dtype_name(c.weights_dtype)) + " weights" +
                                               (c.weights_layout.empty() ? "" : " " + c.weights_layout);
  std::printf(
      "%s %-36s B=%lld K=%lld %lldx%lld -> %lldx%lld %s features, %s%s%s%s%s, %s%s%s%s: largest difference "
      "%.2g\n",
      ok ? "ok  " : "FAIL", passes.c_str(), static_cast<long long>(c.B), static_cast<long long>(c.K),
      static_cast<long long>(c.h), static_cast<long long>(c.w), static_cast<long long>(c.H),
      static_cast<long long>(c.W), egal::dtype_name(c.features), c.roi.c_str(), c.mask_layout.empty() ? "" : " ",
      c.mask_layout.c_str(), c.fill.empty() ? "" : " ", c.fill.c_str(), inputs.c_str(),
      c.channels_last ? ", channels last" : "", c.poison.empty() ? "" : ", ", c.poison.c_str(), largest);
  failures += !ok;
}

}  // namespace

int main() {
  const std::vector<Case> cases = {
      {3, 64, 7, 7, 3, 224, 224, DType::Float32, "uint8", true},
      {3, 1024, 7, 7, 3, 224, 224, DType::Float32, "uint8", true},  // DenseNet-121 block 4
      {2, 1024, 7, 7, 3, 224, 224, DType::Float16, "uint8", false},
      {2, 70, 7, 7, 3, 224, 224, DType::Float16, "uint8", true},
      {2, 5, 1, 1, 2, 1, 1, DType::Float32, "uint8", true},
      {2, 1, 7, 7, 2, 30, 30, DType::Float32, "uint8", true},
      {5, 3, 2, 3, 2, 9, 9, DType::Float16, "uint8", true},  // 6 cells, 3 channels: one partial tile
      {3, 33, 7, 7, 3, 224, 224, DType::Float32, "uint8", true},  // odd K * h * w: samples 1, 2 unaligned
      {2, 37, 8, 8, 4, 64, 64, DType::Float32, "float32", true},
      {2, 100, 10, 10, 3, 80, 80, DType::Float32, "uint8", true},  // 16 channels a tile
      {3, 13, 14, 14, 3, 32, 48, DType::Float32, "soft", true},
      {2, 19, 15, 15, 3, 60, 60, DType::Float16, "float32", true},  // 8 channels a tile
      {2, 33, 15, 15, 3, 60, 60, DType::Float16, "uint8", false},
      {2, 9, 16, 16, 2, 16, 16, DType::Float32, "bool", false},
      {2, 16, 16, 16, 3, 64, 64, DType::BFloat16, "uint8", true},  // 256 cells, the most a tile takes
      {2, 64, 17, 17, 3, 68, 68, DType::Float32, "uint8", true},  // 289 cells
      {1, 8, 56, 56, 3, 112, 112, DType::Float32, "uint8", true},
      {2, 33, 7, 9, 3, 40, 600, DType::BFloat16, "float16", true},  // a ROI three projection tiles wide
      {3, 40, 7, 7, 3, 100, 90, DType::Float32, "boxes", true},
      {2, 21, 5, 3, 3, 50, 50, DType::Float32, "uint8", true, true},
      {2, 40, 7, 7, 3, 56, 56, DType::Float32, "uint8", true, true},
      {2, 40, 7, 7, 3, 56, 56, DType::Float32, "uint8", true, false, "nan-gradient"},
      {2, 40, 7, 7, 3, 56, 56, DType::Float32, "uint8", true, false, "inf-activation"},
      {2, 40, 7, 7, 3, 56, 56, DType::Float32, "uint8", true, false, "overflow"},
      {3, 16, 7, 7, 3, 225, 223, DType::Float32, "uint8", true},  // rows that are not four columns apart
      {2, 16, 7, 7, 3, 64, 600, DType::Float32, "float32", true},  // three tiles of 256 columns, the last part full
      {2, 16, 7, 7, 3, 64, 48, DType::Float32, "float16", true, false, "", "transposed"},
      {2, 16, 7, 7, 3, 64, 48, DType::Float32, "uint8", true, false, "", "offset"},
      {2, 16, 7, 7, 3, 64, 48, DType::Float32, "float32", true, false, "", "offset"},
      {2, 8, 20, 30, 3, 10, 6, DType::Float32, "float32", true},  // a ROI smaller than the map
      {3, 64, 7, 7, 3, 224, 224, DType::Float32, "projected", true},
      {2, 300, 6, 9, 3, 60, 90, DType::Float16, "projected", false, false, "", "transposed"},
      {3, 300, 7, 7, 3, 56, 56, DType::Float32, "uint8", true},  // channel splits: 256 + 44
      {2, 257, 5, 5, 3, 40, 40, DType::Float16, "uint8", false},  // 256 + 1, given weights
      {2, 600, 9, 9, 3, 36, 36, DType::BFloat16, "uint8", true},  // 256 + 256 + 88, 81 cells
      {2, 513, 7, 7, 3, 56, 56, DType::Float32, "uint8", true, false, "nan-gradient"},
      {2, 513, 7, 7, 3, 56, 56, DType::Float32, "uint8", true, false, "overflow"},
      // Maps of more than 256 cells: blocks of cells under "cell-blocks"
      {2, 1, 19, 19, 2, 38, 38, DType::Float32, "uint8", true},  // 361 cells, one channel
      {2, 3, 30, 30, 3, 60, 60, DType::Float16, "uint8", false},
      {1, 10, 33, 31, 3, 66, 62, DType::BFloat16, "soft", true},  // 1,023 cells: the last block part full
      {2, 12, 20, 20, 3, 40, 40, DType::Float32, "uint8", true, true},
      {3, 5, 23, 23, 3, 92, 92, DType::Float32, "boxes", true},
      {2, 6, 16, 17, 3, 48, 51, DType::Float32, "projected", true},
      {2, 9, 20, 20, 3, 40, 40, DType::Float32, "uint8", true, false, "nan-gradient"},
      {2, 9, 20, 20, 3, 40, 40, DType::Float32, "uint8", true, false, "inf-activation"},
      {2, 9, 20, 20, 3, 40, 40, DType::Float32, "uint8", true, false, "overflow"},
      {1, 4, 96, 96, 2, 96, 96, DType::Float32, "uint8", true},  // the map as large as the mask
      {1, 1, 1, 300, 2, 3, 600, DType::Float32, "uint8", true},  // rows wider than a block
      {1, 1, 300, 1, 2, 600, 3, DType::Float32, "uint8", true},  // one column
      {2, 5, 16, 32, 3, 48, 64, DType::Float32, "uint8", true},  // 512 cells: two whole blocks
      {2, 4, 24, 32, 3, 48, 64, DType::BFloat16, "uint8", false, false, "", "", DType::Float16},
      {2, 7, 20, 20, 3, 40, 40, DType::Float32, "uint8", false, false, "", "", DType::Float32, "transposed"},
      {3, 7, 20, 20, 3, 40, 40, DType::Float16, "uint8", false, false, "", "", DType::BFloat16, "gap"},
      {2, 40, 7, 7, 3, 56, 56, DType::Float32, "uint8", false, false, "", "", DType::Float16, "gap"},
      {2, 6, 18, 21, 3, 36, 42, DType::Float32, "uint8", true, false, "", "", DType::Float32, "", true},
      {2, 40, 7, 7, 3, 56, 56, DType::Float32, "uint8", true, false, "", "", DType::Float32, "", true},
      // ROIs whose I meets min(SU, SM): every pass keeps them good masks; and one whose I passes SM
      filled({3, 16, 7, 7, 3, 224, 224, DType::Float32, "uint8", true}, "ones"),
      filled({2, 8, 7, 7, 3, 512, 512, DType::Float16, "float32", true}, "ones"),
      filled({2, 8, 14, 14, 3, 224, 224, DType::Float32, "projected", true}, "ones"),
      filled({2, 8, 7, 7, 3, 224, 224, DType::BFloat16, "uint8", false}, "plateau"),
      filled({2, 8, 14, 14, 3, 512, 384, DType::Float32, "soft", false}, "plateau"),
      filled({2, 8, 7, 7, 3, 224, 224, DType::Float32, "projected", false}, "plateau"),
      filled({2, 4, 20, 20, 3, 80, 80, DType::Float16, "float16", false}, "plateau"),  // cell blocks
      {3, 64, 7, 7, 3, 224, 224, DType::Float32, "inconsistent", true},
      {2, 4, 20, 20, 3, 80, 80, DType::Float32, "inconsistent", true},
  };
  const std::pair<const char*, const char*> passes[] = {{"projection", "cell-blocks"},
                                                        {"projection", "channel-warps"},
                                                        {"per-pixel", "channel-warps"},
                                                        {"vector-projection", "channel-tiles"}};
  for (const auto& [roi_pass, map_pass] : passes) {
    egal::set_cuda_roi_pass(roi_pass);
    egal::set_cuda_map_pass(map_pass);
    std::mt19937 rng(7);  // the same inputs for every pass
    for (const Case& c : cases) check(c, std::string(roi_pass) + " + " + map_pass, rng);
  }
  std::printf("%d failure(s)\n", failures);
  return failures != 0;
}
