// The per-sample arithmetic of docs/scoring.md, written once: host/device
// functions that the CPU backend (score_cpu.cpp, mask_projection_cpu.cpp,
// roi_projection_cpu.cpp) and the CUDA backend (score_cuda.cu) both call. What
// differs between the backends is only how they traverse and reduce the maps;
// every formula and constant is here (but the tolerance of a status bit, which
// egal/score.h states beside the bits).
// Internal to the backends (not part of the C++ API in include/egal/).
#pragma once
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "egal/score.h"
#include "scalar.h"

namespace egal::math {

constexpr float kNormEps = 1e-7f;  // step 4: min-max normalisation
constexpr double kDiceEps = 1e-6;  // step 6: soft Dice

// ---- Steps 3-4: ReLU, then min-max normalisation of the h x w map ----------

// max(0, v), written as std::max(v, 0.0f) evaluates it (a NaN stays NaN).
EGAL_HD float relu(float v) { return v < 0.0f ? 0.0f : v; }

// max - min + eps, from the map's minimum and maximum after the ReLU.
EGAL_HD float normalisation_denominator(float lo, float hi) { return hi - lo + kNormEps; }

EGAL_HD float normalise(float v, float lo, float denominator) { return (v - lo) / denominator; }

// ---- Step 5: bilinear upsampling (align_corners=False) ----------------------
// The per-axis tables (source rows lo/hi and weight t) are AxisInterpolation's
// (interpolation.h); this is the 2-d combination of the four neighbours.
EGAL_HD float bilinear(float c00, float c01, float c10, float c11, float ty, float tx) {
  return (1.0f - ty) * ((1.0f - tx) * c00 + tx * c01) + ty * ((1.0f - tx) * c10 + tx * c11);
}

// ---- The ROI -----------------------------------------------------------------

// Masks hold values in [0, 1]; anything else (NaN included) is a bad mask. A
// bitwise and, not &&: no branch, so that a vectorised loop can apply it to every value.
EGAL_HD bool mask_value_ok(float m) { return static_cast<int>(m >= 0.0f) & static_cast<int>(m <= 1.0f); }

// A projected ROI (R_y^T M R_x and sum M, egal.project_roi) of a mask in [0, 1]
// holds finite values >= 0 (above 1 where a cell gathers many pixels); anything
// else (NaN included) comes from a bad mask and is reported as one.
EGAL_HD bool projection_value_ok(float v) { return static_cast<int>(v >= 0.0f) & static_cast<int>(v <= FLT_MAX); }

// The same rule for integer masks, applied to the bitwise OR of a run of values:
// every value is 0 or 1 exactly when no bit above the lowest is set in the OR.
EGAL_HD bool mask_bits_ok(uint32_t or_of_values) { return (or_of_values & ~1u) == 0; }

// A box's pixels: columns [x_first, x_last) and rows [y_first, y_last) of the grid.
struct PixelBox {
  int64_t x_first, x_last, y_first, y_last;
};

// The first pixel p in [0, size] whose centre p + 0.5 is >= edge: ceil(edge - 0.5),
// clipped to the grid (an infinite edge clips too).
EGAL_HD int64_t first_pixel_from(float edge, int64_t size) {
  const double p = std::ceil(static_cast<double>(edge) - 0.5);
  return static_cast<int64_t>(p < 0.0 ? 0.0 : p > static_cast<double>(size) ? static_cast<double>(size) : p);
}

// Box (x0, y0, x1, y1) on an H x W grid: pixel (y, x) is inside when its centre
// (x + 0.5, y + 0.5) lies in [x0, x1) x [y0, y1). False for a padding row (a NaN,
// x1 <= x0 or y1 <= y0) and for a box that holds no pixel centre of the grid.
EGAL_HD bool box_pixels(float x0, float y0, float x1, float y1, int64_t H, int64_t W, PixelBox* box) {
  if (std::isnan(x0) || std::isnan(y0) || std::isnan(x1) || std::isnan(y1) || !(x1 > x0) || !(y1 > y0)) return false;
  *box = {first_pixel_from(x0, W), first_pixel_from(x1, W), first_pixel_from(y0, H), first_pixel_from(y1, H)};
  return box->x_first < box->x_last && box->y_first < box->y_last;
}

// ---- Step 1: softmax entropy ------------------------------------------------

struct Entropy {
  int64_t pred = -1;  // argmax, lowest index on ties; -1 for NaN or +inf logits, or all of them -inf
  double entropy = NAN;
  bool finite = false;
};

// Stable softmax entropy in float64 of the logits row at `row` (C of them,
// `stride` apart): log p = z - logsumexp(z), 0 log 0 = 0. A logit of -inf is a
// class of probability 0 (a masked class), as the definition gives it.
EGAL_HD Entropy softmax_entropy(const void* logits, DType dtype, int64_t row, int64_t stride, int64_t C) {
  double z_max = -INFINITY;
  int64_t arg = 0;
  for (int64_t c = 0; c < C; ++c) {
    const double z = load_as_float(logits, dtype, row + c * stride);
    if (std::isnan(z) || z == INFINITY) return {};
    if (z > z_max) z_max = z, arg = c;
  }
  if (z_max == -INFINITY) return {};  // no class has any probability
  double total = 0.0, weighted = 0.0;
  for (int64_t c = 0; c < C; ++c) {
    const double shifted = load_as_float(logits, dtype, row + c * stride) - z_max;
    const double e = std::exp(shifted);
    if (e == 0.0) continue;  // 0 log 0 = 0 (and -inf * 0 would be NaN)
    total += e;
    weighted += e * shifted;
  }
  // H = -sum p (s - log total) = log total - sum(e s) / total, with s = z - z_max.
  Entropy result;
  result.pred = arg;
  result.entropy = std::log(total) - weighted / total;
  result.finite = true;
  return result;
}

// ---- Steps 6-7, the empty-ROI policy and the status bits ---------------------

// D = 1 - (2 I + eps) / (SU + SM + eps).
EGAL_HD double soft_dice(double intersection, double upsampled_sum, double roi_area) {
  return 1.0 - (2.0 * intersection + kDiceEps) / (upsampled_sum + roi_area + kDiceEps);
}

// Whether the Dice sums keep 0 <= I <= min(SU, SM) up to rounding (kDiceSumsTolerance, egal/score.h), as
// every mask in [0, 1] does: the one check that catches a projected ROI whose weights are not consistent with
// its area wherever that would put D outside [0, 1]. NaN sums fail it too.
EGAL_HD bool dice_sums_consistent(double intersection, double upsampled_sum, double roi_area) {
  const double bound =
      (upsampled_sum < roi_area ? upsampled_sum : roi_area) + kDiceSumsTolerance * (upsampled_sum + roi_area);
  return intersection >= 0.0 && intersection <= bound;
}

EGAL_HD int32_t status_bits(bool maps_finite, bool logits_finite, bool bad_mask) {
  return (maps_finite && logits_finite ? kStatusOk : kStatusNonFinite) | (bad_mask ? kStatusBadMask : kStatusOk);
}

// What one sample reports: the fields of ScoreOutputs but the map.
struct SampleScore {
  int64_t pred;
  float entropy, entropy_norm, misalignment, score;
  int32_t status;
};

// maps_finite: no NaN/Inf in the sample's channel weights or raw map. The Dice
// sums I (intersection), SU (upsampled_sum) and SM (roi_area) are the backend's;
// sums that are not consistent (dice_sums_consistent) report a bad mask, unless
// the maps are not finite (then the sums say nothing about the ROI).
// An empty ROI (SM == 0) gives D = NaN and S = H_norm; non-finite inputs give
// S = NaN (and D = NaN for non-finite maps).
EGAL_HD SampleScore finish_sample(const Entropy& e, int64_t C, float alpha, bool maps_finite, bool bad_mask,
                                  double intersection, double upsampled_sum, double roi_area) {
  const bool empty_roi = roi_area == 0.0;
  const double dice = empty_roi || !maps_finite ? NAN : soft_dice(intersection, upsampled_sum, roi_area);
  const double entropy_norm = e.entropy / std::log(static_cast<double>(C));
  double score = empty_roi && maps_finite ? entropy_norm : alpha * entropy_norm + (1.0 - alpha) * dice;
  if (!maps_finite || !e.finite) score = NAN;
  SampleScore s;
  s.pred = e.pred;
  s.entropy = static_cast<float>(e.entropy);
  s.entropy_norm = static_cast<float>(entropy_norm);
  s.misalignment = static_cast<float>(dice);
  s.score = static_cast<float>(score);
  const bool inconsistent_sums = maps_finite && !dice_sums_consistent(intersection, upsampled_sum, roi_area);
  s.status = status_bits(maps_finite, e.finite, bad_mask || inconsistent_sums);
  return s;
}

// Writes sample b's numbers into the output arrays (host or device memory).
EGAL_HD void store_sample(const ScoreOutputs& out, int64_t b, const SampleScore& s) {
  out.pred[b] = s.pred;
  out.entropy[b] = s.entropy;
  out.entropy_norm[b] = s.entropy_norm;
  out.misalignment[b] = s.misalignment;
  out.score[b] = s.score;
  out.status[b] = s.status;
}

}  // namespace egal::math
