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
//
// A thread owns one column (kColumns = 1, 256 threads: the pass of the "projection" setting) or four
// (kColumns = 4, 64 threads: "vector-projection", opt-in: faster with masks at large B, slower with boxes). Four
// columns read a float32 row in 16-byte loads and a uint8 row in 4-byte ones, and share each row's table loads and
// index arithmetic, which a GPU profile found to be most of the one-column pass's time (bench/README.md, issue 17).
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

constexpr int kTileColumns = 256;  // mask columns a block walks down at once
constexpr int kRowsInFlight = 8;   // mask rows loaded before any is summed: loads in flight per thread

template <int kColumns>
constexpr int threads_for = kTileColumns / kColumns;

struct ProjectionArgs {
  int64_t H, W, h, w;
  DeviceTables tables;
  float* weights;  // [B, h, w]
  float* area;     // [B]
};

// kColumns consecutive values of one type, loaded at once.
template <class T, int kColumns>
struct alignas(kColumns * sizeof(T)) Columns {
  T value[kColumns];
};

// One sample's mask values, of any stored type. `vectors`: rows start kColumns-aligned and hold consecutive
// columns, so a thread's kColumns values are one load.
template <class T>
struct MaskPixels {
  const T* plane;  // [H, W]
  int64_t row_stride, col_stride;
  bool vectors;

  // Columns [x, x + kColumns) of row y, 0 past the mask's last column (`valid` of them are inside).
  template <int kColumns>
  __device__ __forceinline__ void read(int64_t y, int64_t x, int valid, float (&m)[kColumns]) const {
    const T* row = plane + y * row_stride;
    if (kColumns > 1 && vectors && valid == kColumns) {
      const Columns<T, kColumns> held = *reinterpret_cast<const Columns<T, kColumns>*>(row + x);
#pragma unroll
      for (int c = 0; c < kColumns; ++c) m[c] = to_float(held.value[c]);
      return;
    }
#pragma unroll
    for (int c = 0; c < kColumns; ++c) m[c] = c < valid ? to_float(row[(x + c) * col_stride]) : 0.0f;
  }
};

// 1 inside the union of one sample's boxes, 0 elsewhere. A pixel tests the boxes until one covers it, so
// boxes cost more with their number (the CPU's prefix sums do not): fine for the few boxes of a finding.
struct BoxPixels {
  const int32_t* ranges;  // [count, 4] in shared memory: x_first, x_last, y_first, y_last
  int count;

  template <int kColumns>
  __device__ __forceinline__ void read(int64_t y, int64_t x, int valid, float (&m)[kColumns]) const {
#pragma unroll
    for (int c = 0; c < kColumns; ++c) m[c] = c < valid && cuda::in_box_ranges(ranges, count, y, x + c) ? 1.0f : 0.0f;
  }
};

// P[i, :] += R_x applied to the vertical sums of CAM row i over this tile's mask columns [x0, x_end); a thread
// holds those of its kColumns columns.
template <int kColumns>
__device__ void add_cam_row(const ProjectionArgs& args, float* projection, int64_t i, const float (&vertical)[kColumns],
                            float* share, int64_t x0, int64_t x_end) {
#pragma unroll
  for (int c = 0; c < kColumns; ++c) share[threadIdx.x * kColumns + c] = vertical[c];
  __syncthreads();
  const DeviceTables& tab = args.tables;
  for (int64_t j = threadIdx.x; j < args.w; j += threads_for<kColumns>) {
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

template <int kColumns, class Pixels>
__device__ void project_sample(const ProjectionArgs& args, int64_t b, const Pixels& pixels, float* share,
                               double* scratch) {
  constexpr int kThreads = threads_for<kColumns>;
  const int64_t H = args.H, W = args.W, h = args.h;
  float* projection = args.weights + b * h * args.w;  // [h, w]
  for (int64_t p = threadIdx.x; p < h * args.w; p += kThreads) projection[p] = 0.0f;  // add_cam_row syncs first
  double area = 0.0;
  bool bad = false;
  for (int64_t x0 = 0; x0 < W; x0 += kTileColumns) {
    const int64_t x = x0 + threadIdx.x * kColumns, x_end = x0 + kTileColumns < W ? x0 + kTileColumns : W;
    const int valid = static_cast<int>(W - x < 0 ? 0 : W - x < kColumns ? W - x : kColumns);
    float current[kColumns] = {}, next[kColumns] = {};  // these columns' vertical sums for CAM rows i and i + 1
    int64_t i = 0;
    for (int64_t y0 = 0; y0 < H; y0 += kRowsInFlight) {
      float m[kRowsInFlight][kColumns];
#pragma unroll
      for (int r = 0; r < kRowsInFlight; ++r) {
        if (y0 + r < H) {
          pixels.template read<kColumns>(y0 + r, x, valid, m[r]);
        } else {
#pragma unroll
          for (int c = 0; c < kColumns; ++c) m[r][c] = 0.0f;
        }
      }
#pragma unroll
      for (int r = 0; r < kRowsInFlight; ++r) {
        const int64_t y = y0 + r;
        if (y >= H) break;
        const int64_t lo = args.tables.row_lo[y];
        for (; i < lo; ++i) {  // CAM row i gets nothing from mask rows y and below
          add_cam_row<kColumns>(args, projection, i, current, share, x0, x_end);
#pragma unroll
          for (int c = 0; c < kColumns; ++c) current[c] = next[c], next[c] = 0.0f;
        }
        float row_area = 0.0f;
#pragma unroll
        for (int c = 0; c < kColumns; ++c) {
          bad |= !math::mask_value_ok(m[r][c]);
          row_area += m[r][c];
        }
        area += row_area;
        if (args.tables.row_hi[y] == lo) {  // both neighbours are row lo: all of it, as the CPU's bands do
#pragma unroll
          for (int c = 0; c < kColumns; ++c) current[c] += m[r][c];
        } else {
          const float t = args.tables.row_t[y];
#pragma unroll
          for (int c = 0; c < kColumns; ++c) {
            current[c] += (1.0f - t) * m[r][c];
            next[c] += t * m[r][c];
          }
        }
      }
    }
    for (; i < h; ++i) {
      add_cam_row<kColumns>(args, projection, i, current, share, x0, x_end);
#pragma unroll
      for (int c = 0; c < kColumns; ++c) current[c] = next[c], next[c] = 0.0f;
    }
  }
  bad = __syncthreads_or(bad);
  area = cuda::block_sum<kThreads / 32>(area, scratch);
  if (threadIdx.x == 0) args.area[b] = bad ? NAN : static_cast<float>(area);
}

template <class T, int kColumns>
__global__ void __launch_bounds__(threads_for<kColumns>)
    project_masks_kernel(ProjectionArgs args, const T* masks,  // [B, H, W]
                         int64_t sample_stride, int64_t row_stride, int64_t col_stride, bool vectors) {
  __shared__ float share[kTileColumns];
  __shared__ double scratch[threads_for<kColumns> / 32];
  const int64_t b = blockIdx.x;
  const MaskPixels<T> pixels{masks + b * sample_stride, row_stride, col_stride, vectors};
  project_sample<kColumns>(args, b, pixels, share, scratch);
}

template <int kColumns>
__global__ void __launch_bounds__(threads_for<kColumns>)
    project_boxes_kernel(ProjectionArgs args, const float* boxes,  // [B, N, 4]
                         int64_t sample_stride, int64_t box_stride, int64_t coordinate_stride, int64_t N) {
  extern __shared__ int32_t ranges[];  // [N, 4]
  __shared__ float share[kTileColumns];
  __shared__ double scratch[threads_for<kColumns> / 32];
  __shared__ int count;
  const int64_t b = blockIdx.x;
  if (threadIdx.x == 0)
    count = cuda::box_ranges(boxes + b * sample_stride, box_stride, coordinate_stride, N, args.H, args.W, ranges);
  __syncthreads();
  project_sample<kColumns>(args, b, BoxPixels{ranges, count}, share, scratch);
}

template <class T, int kColumns>
void launch_masks(const ProjectionArgs& args, const TensorView& masks, unsigned blocks, cudaStream_t stream) {
  // Every sample's rows start kColumns-aligned when the data does and the strides keep it so.
  const bool vectors = masks.stride[2] == 1 && masks.stride[1] % kColumns == 0 && masks.stride[0] % kColumns == 0 &&
                       reinterpret_cast<uintptr_t>(masks.data) % (kColumns * sizeof(T)) == 0;
  project_masks_kernel<T, kColumns><<<blocks, threads_for<kColumns>, 0, stream>>>(
      args, static_cast<const T*>(masks.data), masks.stride[0], masks.stride[1], masks.stride[2], vectors);
}

template <int kColumns>
void launch(const ScoreInputs& in, const ProjectionArgs& args, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(in.activations.shape[0]);
  if (in.roi_kind == RoiKind::Boxes) {
    const TensorView& boxes = in.boxes;
    const int64_t N = boxes.shape[1];
    const size_t shared_bytes = static_cast<size_t>(N) * 4 * sizeof(int32_t);
    cuda::allow_shared_memory(project_boxes_kernel<kColumns>, shared_bytes, in.activations.device_id,
                              std::to_string(N) + " boxes per sample");
    project_boxes_kernel<kColumns><<<blocks, threads_for<kColumns>, shared_bytes, stream>>>(
        args, static_cast<const float*>(boxes.data), boxes.stride[0], boxes.stride[1], boxes.stride[2], N);
    return;
  }
  switch (in.masks.dtype) {
    case DType::Float32: launch_masks<float, kColumns>(args, in.masks, blocks, stream); break;
    case DType::Float16: launch_masks<half_bits, kColumns>(args, in.masks, blocks, stream); break;
    case DType::UInt8:
    case DType::Bool: launch_masks<uint8_t, kColumns>(args, in.masks, blocks, stream); break;
    default: throw std::invalid_argument("masks must be bool, uint8, float16 or float32");
  }
}

}  // namespace

void launch_roi_projection(const ScoreInputs& in, int64_t h, int64_t w, const DeviceTables& tables, float* weights,
                           float* area, bool four_columns, cudaStream_t stream) {
  const ProjectionArgs args{in.roi_height, in.roi_width, h, w, tables, weights, area};
  if (four_columns)
    launch<4>(in, args, stream);
  else
    launch<1>(in, args, stream);
  cuda::check(cudaGetLastError(), "launching the ROI projection");
}

}  // namespace egal
