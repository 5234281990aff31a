// The ROI pass of the CUDA backend: each sample's mask (or boxes) projected onto the Grad-CAM grid,
// P = R_y^T M R_x and SM = sum M (docs/scoring.md, "How the fused scorers compute it"), which score_cuda.cu
// then scores as it scores a ProjectedROI. A mask's cost is set by its size and dtype, never by what it
// holds: every pixel is read once and goes through the same arithmetic. (The per-pixel pass that it
// replaces as the default upsampled the map at each nonzero mask pixel inside the scoring kernel.)
//
// One block per sample. Its threads own mask columns and walk the rows from top to bottom. Mask row y feeds
// CAM rows lo_y and hi_y (lo_y or lo_y + 1), and lo_y never decreases with y, so a thread keeps two running
// sums, for CAM rows i and i + 1; once the rows have moved past i, row i's vertical sums are complete and the
// block reduces them horizontally (R_x: CAM column j reads a contiguous range of mask columns) into P[i, :].
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda_common.h"
#include "roi_projection_cuda.h"
#include "scalar.h"
#include "score_math.h"

namespace egal {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRowsInFlight = 8;  // mask rows loaded before any is summed: loads in flight per thread

struct ProjectionArgs {
  int64_t H, W, h, w;
  DeviceTables tables;
  float* weights;  // [B, h, w]
  float* area;     // [B]
};

// One sample's mask values, of any stored type.
template <class T>
struct MaskPixels {
  const T* plane;  // [H, W]
  int64_t row_stride, col_stride;

  __device__ __forceinline__ float operator()(int64_t y, int64_t x) const {
    return to_float(plane[y * row_stride + x * col_stride]);
  }
};

// 1 inside the union of one sample's boxes, 0 elsewhere. A pixel tests the boxes until one covers it, so
// boxes cost more with their number (the CPU's prefix sums do not): fine for the few boxes of a finding.
struct BoxPixels {
  const int32_t* ranges;  // [count, 4] in shared memory: x_first, x_last, y_first, y_last
  int count;

  __device__ __forceinline__ float operator()(int64_t y, int64_t x) const {
    return cuda::in_box_ranges(ranges, count, y, x) ? 1.0f : 0.0f;
  }
};

// P[i, :] += R_x applied to the vertical sums of CAM row i over this tile's mask columns [x0, x_end).
__device__ void add_cam_row(const ProjectionArgs& args, float* projection, int64_t i, float vertical, float* share,
                            int64_t x0, int64_t x_end) {
  share[threadIdx.x] = vertical;
  __syncthreads();
  const DeviceTables& tab = args.tables;
  for (int64_t j = threadIdx.x; j < args.w; j += kThreads) {
    const int64_t first = tab.col_first[j] > x0 ? tab.col_first[j] : x0;
    const int64_t end = tab.col_end[j] < x_end ? tab.col_end[j] : x_end;
    float sum = 0.0f;
    for (int64_t x = first; x < end; ++x) {
      const float t = tab.col_t[x];
      const float weight = (tab.col_lo[x] == j ? 1.0f - t : 0.0f) + (tab.col_hi[x] == j ? t : 0.0f);
      sum += weight * share[x - x0];
    }
    projection[i * args.w + j] += sum;
  }
  __syncthreads();
}

template <class Pixels>
__device__ void project_sample(const ProjectionArgs& args, int64_t b, const Pixels& pixel, float* share,
                               double* scratch) {
  const int64_t H = args.H, W = args.W, h = args.h;
  float* projection = args.weights + b * h * args.w;  // [h, w]
  for (int64_t p = threadIdx.x; p < h * args.w; p += kThreads) projection[p] = 0.0f;  // add_cam_row syncs first
  double area = 0.0;
  bool bad = false;
  for (int64_t x0 = 0; x0 < W; x0 += kThreads) {  // a tile of mask columns, one a thread
    const int64_t x = x0 + threadIdx.x, x_end = x0 + kThreads < W ? x0 + kThreads : W;
    const bool mine = x < W;
    float current = 0.0f, next = 0.0f;  // this column's vertical sums for CAM rows i and i + 1
    int64_t i = 0;
    for (int64_t y0 = 0; y0 < H; y0 += kRowsInFlight) {
      float m[kRowsInFlight];
#pragma unroll
      for (int r = 0; r < kRowsInFlight; ++r) m[r] = mine && y0 + r < H ? pixel(y0 + r, x) : 0.0f;
#pragma unroll
      for (int r = 0; r < kRowsInFlight; ++r) {
        const int64_t y = y0 + r;
        if (y >= H) break;
        const int64_t lo = args.tables.row_lo[y];
        for (; i < lo; ++i) {  // CAM row i gets nothing from mask rows y and below
          add_cam_row(args, projection, i, current, share, x0, x_end);
          current = next, next = 0.0f;
        }
        bad |= !math::mask_value_ok(m[r]);
        area += m[r];
        if (args.tables.row_hi[y] == lo) {  // both neighbours are row lo: all of it, as the CPU's bands do
          current += m[r];
        } else {
          const float t = args.tables.row_t[y];
          current += (1.0f - t) * m[r];
          next += t * m[r];
        }
      }
    }
    for (; i < h; ++i) {
      add_cam_row(args, projection, i, current, share, x0, x_end);
      current = next, next = 0.0f;
    }
  }
  bad = __syncthreads_or(bad);
  area = cuda::block_sum<kWarps>(area, scratch);
  if (threadIdx.x == 0) args.area[b] = bad ? NAN : static_cast<float>(area);
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    project_masks_kernel(ProjectionArgs args, const T* masks, int64_t sample_stride, int64_t row_stride,
                         int64_t col_stride) {
  __shared__ float share[kThreads];
  __shared__ double scratch[kWarps];
  const int64_t b = blockIdx.x;
  project_sample(args, b, MaskPixels<T>{masks + b * sample_stride, row_stride, col_stride}, share, scratch);
}

__global__ void __launch_bounds__(kThreads)
    project_boxes_kernel(ProjectionArgs args, const float* boxes, int64_t sample_stride, int64_t box_stride,
                         int64_t coordinate_stride, int64_t N) {
  extern __shared__ int32_t ranges[];  // [N, 4]
  __shared__ float share[kThreads];
  __shared__ double scratch[kWarps];
  __shared__ int count;
  const int64_t b = blockIdx.x;
  if (threadIdx.x == 0)
    count = cuda::box_ranges(boxes + b * sample_stride, box_stride, coordinate_stride, N, args.H, args.W, ranges);
  __syncthreads();
  project_sample(args, b, BoxPixels{ranges, count}, share, scratch);
}

template <class T>
void launch_masks(const ProjectionArgs& args, const TensorView& masks, unsigned blocks, cudaStream_t stream) {
  project_masks_kernel<T><<<blocks, kThreads, 0, stream>>>(args, static_cast<const T*>(masks.data), masks.stride[0],
                                                           masks.stride[1], masks.stride[2]);
}

}  // namespace

void launch_roi_projection(const ScoreInputs& in, int64_t h, int64_t w, const DeviceTables& tables, float* weights,
                           float* area, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(in.activations.shape[0]);
  const ProjectionArgs args{in.roi_height, in.roi_width, h, w, tables, weights, area};
  if (in.roi_kind == RoiKind::Boxes) {
    const TensorView& boxes = in.boxes;
    const int64_t N = boxes.shape[1];
    const size_t shared_bytes = static_cast<size_t>(N) * 4 * sizeof(int32_t);
    cuda::allow_shared_memory(project_boxes_kernel, shared_bytes, in.activations.device_id,
                              std::to_string(N) + " boxes per sample");
    project_boxes_kernel<<<blocks, kThreads, shared_bytes, stream>>>(
        args, static_cast<const float*>(boxes.data), boxes.stride[0], boxes.stride[1], boxes.stride[2], N);
  } else {
    switch (in.masks.dtype) {
      case DType::Float32: launch_masks<float>(args, in.masks, blocks, stream); break;
      case DType::Float16: launch_masks<half_bits>(args, in.masks, blocks, stream); break;
      case DType::UInt8:
      case DType::Bool: launch_masks<uint8_t>(args, in.masks, blocks, stream); break;
      default: throw std::invalid_argument("masks must be bool, uint8, float16 or float32");
    }
  }
  cuda::check(cudaGetLastError(), "launching the ROI projection");
}

}  // namespace egal
