// CPU backend: one pass per sample, OpenMP across samples.
#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "backends.h"
#include "roi_projection_cpu.h"
#include "scalar.h"
#include "score_math.h"

#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif
#include <type_traits>

namespace egal {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

struct SampleScratch {
  std::vector<float> cam;              // [h * w]
  std::vector<float> plane;            // [h * w], a converted input plane
  std::vector<double> projection;      // [h * w]
  cpu::ProjectionScratch roi;
};

// A [h, w] plane of a strided 4-d view.
template <class T>
struct Plane {
  const T* data;
  int64_t h, w, stride_i, stride_j;
  bool contiguous() const { return stride_j == 1 && stride_i == w; }
};

#if defined(__x86_64__) || defined(_M_X64)
// F16C converts eight halves per instruction, exactly (subnormals, Inf, NaN);
// picked at run time so that the build still runs on CPUs without it.
__attribute__((target("avx,f16c"))) void halves_to_floats_f16c(const half_bits* src, int64_t n, float* dst) {
  int64_t q = 0;
  for (; q + 8 <= n; q += 8)
    _mm256_storeu_ps(dst + q, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + q))));
  for (; q < n; ++q) dst[q] = to_float(src[q]);
}

bool cpu_has_f16c() {
  static const bool has = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return has;
}
#endif

// The plane as contiguous float32: in place for contiguous float32 input,
// otherwise converted (or gathered) into `buffer`, which holds h * w floats.
template <class T>
const float* plane_as_floats(const Plane<T>& plane, float* buffer) {
  const int64_t n = plane.h * plane.w;
  if (plane.contiguous()) {
    if constexpr (std::is_same_v<T, float>) {
      return plane.data;
    } else {
#if defined(__x86_64__) || defined(_M_X64)
      if constexpr (std::is_same_v<T, half_bits>) {
        if (cpu_has_f16c()) {
          halves_to_floats_f16c(plane.data, n, buffer);
          return buffer;
        }
      }
#endif
      for (int64_t q = 0; q < n; ++q) buffer[q] = to_float(plane.data[q]);
      return buffer;
    }
  }
  for (int64_t i = 0; i < plane.h; ++i)
    for (int64_t j = 0; j < plane.w; ++j)
      buffer[i * plane.w + j] = to_float(plane.data[i * plane.stride_i + j * plane.stride_j]);
  return buffer;
}

float mean_of(const float* values, int64_t n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t q = 0; q < n; ++q) acc += values[q];
  return acc / static_cast<float>(n);
}

void add_scaled(float weight, const float* values, int64_t n, float* cam) {
#pragma omp simd
  for (int64_t q = 0; q < n; ++q) cam[q] += weight * values[q];
}

template <class T>
void score_one(const ScoreInputs& in, const cpu::ProjectionPlan& plan, int64_t b, SampleScratch& s,
               const ScoreOutputs& out) {
  const TensorView& A = in.activations;
  const int64_t K = A.shape[1], h = A.shape[2], w = A.shape[3], hw = h * w;
  const T* a_base = static_cast<const T*>(A.data) + b * A.stride[0];

  // Steps 2-3: channel weights and the raw map, in one pass over the channels.
  float* cam = s.cam.data();
  std::fill(cam, cam + hw, 0.0f);
  bool finite = true;
  for (int64_t k = 0; k < K; ++k) {
    float weight;
    if (in.gradients.present) {
      const TensorView& G = in.gradients;
      const T* g_plane = static_cast<const T*>(G.data) + b * G.stride[0] + k * G.stride[1];
      weight = mean_of(plane_as_floats(Plane<T>{g_plane, h, w, G.stride[2], G.stride[3]}, s.plane.data()), hw);
    } else {
      const TensorView& W = in.weights;
      weight = load_as_float(W.data, W.dtype, b * W.stride[0] + k * W.stride[1]);
    }
    if (!std::isfinite(weight)) finite = false;
    add_scaled(weight, plane_as_floats(Plane<T>{a_base + k * A.stride[1], h, w, A.stride[2], A.stride[3]}, s.plane.data()),
               hw, cam);
  }

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
      for (int64_t j = 0; j < w; ++j) projection[i * w + j] = p_base[i * P.stride[1] + j * P.stride[2]];
    roi_area = static_cast<const float*>(in.roi_area.data)[b * in.roi_area.stride[0]];
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
  math::store_sample(out, b,
                     math::finish_sample(e, in.logits.shape[1], in.alpha, finite, bad_mask, intersection,
                                         upsampled_sum, roi_area));
  if (out.cam) {
    float* dst = out.cam + b * hw;
    for (int64_t q = 0; q < hw; ++q) dst[q] = finite ? cam[q] : kNaN;
  }
}

template <class T>
void score_all(const ScoreInputs& in, const ScoreOutputs& out) {
  const TensorView& A = in.activations;
  const int64_t B = A.shape[0], h = A.shape[2], w = A.shape[3];
  const cpu::ProjectionPlan plan(in.roi_height, in.roi_width, h, w, in.roi_kind == RoiKind::Boxes);
#pragma omp parallel
  {
    SampleScratch scratch;
    scratch.cam.resize(static_cast<size_t>(h * w));
    scratch.plane.resize(static_cast<size_t>(h * w));
    scratch.projection.resize(static_cast<size_t>(h * w));
#pragma omp for schedule(dynamic, 4)
    for (int64_t b = 0; b < B; ++b) score_one<T>(in, plan, b, scratch, out);
  }
}

}  // namespace

void score_cpu(const ScoreInputs& in, const ScoreOutputs& out) {
  switch (in.activations.dtype) {
    case DType::Float32: return score_all<float>(in, out);
    case DType::Float16: return score_all<half_bits>(in, out);
    case DType::BFloat16: return score_all<bfloat16_bits>(in, out);
    default: throw std::invalid_argument("activations must be float32, float16 or bfloat16");
  }
}

void project_roi_cpu(const ScoreInputs& in, int64_t h, int64_t w, const ProjectionOutputs& out) {
  const bool boxes = in.roi_kind == RoiKind::Boxes;
  const TensorView& roi = boxes ? in.boxes : in.masks;
  const int64_t B = roi.shape[0];
  const cpu::ProjectionPlan plan(in.roi_height, in.roi_width, h, w, boxes);
#pragma omp parallel
  {
    cpu::ProjectionScratch scratch;
    std::vector<double> projection(static_cast<size_t>(h * w));
#pragma omp for schedule(dynamic, 4)
    for (int64_t b = 0; b < B; ++b) {
      bool bad_mask = false;
      const double area = boxes ? cpu::project_boxes(roi, b, plan, scratch, projection.data())
                                : cpu::project_mask(roi, b, plan, scratch, projection.data(), &bad_mask);
      std::transform(projection.begin(), projection.end(), out.weights + b * h * w,
                     [](double v) { return static_cast<float>(v); });
      out.area[b] = static_cast<float>(area);
      out.status[b] = bad_mask ? kStatusBadMask : kStatusOk;
    }
  }
}

int cpu_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace egal
