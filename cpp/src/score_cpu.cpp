// CPU backend: one pass per sample, OpenMP across samples.
#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "backends.h"
#include "parallel_errors.h"
#include "raw_map_cpu.h"
#include "roi_projection_cpu.h"
#include "score_math.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace egal {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

struct SampleScratch {
  std::vector<float> cam;              // [h * w]
  std::vector<float> plane;            // [h * w], a converted input plane
  std::vector<double> projection;      // [h * w]
  cpu::ProjectionScratch roi;
};

void score_one(const ScoreInputs& in, const cpu::ProjectionPlan& plan, int64_t b, SampleScratch& s,
               const ScoreOutputs& out) {
  const TensorView& A = in.activations;
  const int64_t h = A.shape[2], w = A.shape[3], hw = h * w;

  // Steps 2-3: channel weights and the raw map, in one pass over the channels.
  float* cam = s.cam.data();
  bool finite = cpu::raw_map(in, b, cam, s.plane.data());

  // Step 4: ReLU, then min-max normalisation at low resolution.
  float lo = INFINITY, hi = -INFINITY;
  for (int64_t q = 0; q < hw; ++q) {
    if (!std::isfinite(cam[q])) finite = false;
    const float c = math::relu(cam[q]);
    cam[q] = c;
    lo = std::min(lo, c);
    hi = std::max(hi, c);
  }
  const float denominator = math::normalisation_denominator(lo, hi);
  for (int64_t q = 0; q < hw; ++q) cam[q] = math::normalise(cam[q], lo, denominator);

  // Steps 5-6: Dice sums against the ROI projected onto the h x w grid.
  double* projection = s.projection.data();
  double roi_area = 0.0;
  bool bad_mask = false;
  if (in.roi_kind == RoiKind::Masks) {
    roi_area = cpu::project_mask(in.masks, b, plan, s.roi, projection, &bad_mask);
  } else if (in.roi_kind == RoiKind::Boxes) {
    roi_area = cpu::project_boxes(in.boxes, b, plan, s.roi, projection);
  } else {
    const TensorView& P = in.roi_weights;
    const float* p_base = static_cast<const float*>(P.data) + b * P.stride[0];
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j) {
        const float v = p_base[i * P.stride[1] + j * P.stride[2]];
        bad_mask = bad_mask || !math::projection_value_ok(v);
        projection[i * w + j] = v;
      }
    const float area = static_cast<const float*>(in.roi_area.data)[b * in.roi_area.stride[0]];
    bad_mask = bad_mask || !math::projection_value_ok(area);
    roi_area = area;
  }
  double intersection = 0.0, upsampled_sum = 0.0;
  const double* cy = plan.rows.column_sum.data();
  const double* cx = plan.cols.column_sum.data();
  for (int64_t i = 0; i < h; ++i) {
    double row_dot_cx = 0.0;
    for (int64_t j = 0; j < w; ++j) {
      const double c = cam[i * w + j];
      intersection += c * projection[i * w + j];
      row_dot_cx += c * cx[j];
    }
    upsampled_sum += cy[i] * row_dot_cx;
  }

  // Steps 1 and 7.
  const math::Entropy e = math::softmax_entropy(in.logits.data, in.logits.dtype, b * in.logits.stride[0],
                                                in.logits.stride[1], in.logits.shape[1]);
  math::store_sample(
      out, b,
      math::finish_sample(e, in.logits.shape[1], in.alpha, finite, bad_mask, intersection, upsampled_sum, roi_area));
  if (out.cam) {
    float* dst = out.cam + b * hw;
    for (int64_t q = 0; q < hw; ++q) dst[q] = finite ? cam[q] : kNaN;
  }
}

void score_all(const ScoreInputs& in, const ScoreOutputs& out) {
  const TensorView& A = in.activations;
  const int64_t B = A.shape[0], h = A.shape[2], w = A.shape[3];
  const cpu::ProjectionPlan plan(in.roi_height, in.roi_width, h, w, in.roi_kind);
  ParallelErrors errors;
#pragma omp parallel
  {
    SampleScratch scratch;
    errors.run([&] {
      scratch.cam.resize(static_cast<size_t>(h * w));
      scratch.plane.resize(static_cast<size_t>(h * w));
      scratch.projection.resize(static_cast<size_t>(h * w));
    });
#pragma omp for schedule(dynamic, 4)
    for (int64_t b = 0; b < B; ++b) errors.run([&] { score_one(in, plan, b, scratch, out); });
  }
  errors.rethrow();
}

}  // namespace

void score_cpu(const ScoreInputs& in, const ScoreOutputs& out) {
  const DType dtype = in.activations.dtype;
  if (dtype != DType::Float32 && dtype != DType::Float16 && dtype != DType::BFloat16)
    throw std::invalid_argument("activations must be float32, float16 or bfloat16");
  score_all(in, out);
}

int cpu_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace egal
