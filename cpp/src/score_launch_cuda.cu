// The CUDA backend's entry point, score_cuda: the interpolation tables, the map workspace and the outputs in
// device memory, the kernels' arguments from the inputs, which passes run, and the outputs copied back as B
// numbers per field. Masks and boxes are first projected onto the map's grid by roi_projection_cuda.cu, a column
// or four a thread (unless set_cuda_roi_pass chose the per-pixel pass), and scored as a projected ROI. Steps 2-3
// of small contiguous maps take channel tiles when set_cuda_map_pass asked for them (channel_tiles_cuda.cuh), and
// those of large maps blocks of cells when it asked for "cell-blocks" (cell_blocks_cuda.cuh); score_cuda.cu's
// kernels do the rest.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "backends.h"
#include "cell_blocks_cuda.cuh"
#include "channel_tiles_cuda.cuh"
#include "cuda_common.h"
#include "interpolation.h"
#include "roi_projection_cuda.h"
#include "score_cuda.cuh"

namespace egal {
namespace {

using cuda::check;

template <class V>
size_t append(std::vector<unsigned char>& blob, const std::vector<V>& values) {
  const size_t offset = (blob.size() + 15) / 16 * 16;
  blob.resize(offset + values.size() * sizeof(V));
  std::memcpy(blob.data() + offset, values.data(), values.size() * sizeof(V));
  return offset;
}

void copy_strides(const TensorView& view, int64_t* dst, int rank) {
  for (int d = 0; d < rank; ++d) dst[d] = view.stride[d];
}

// Restores the caller's current device on every exit path.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

}  // namespace

void score_cuda(const ScoreInputs& in, const ScoreOutputs& out) {
  const TensorView& A = in.activations;
  const int64_t B = A.shape[0], K = A.shape[1], h = A.shape[2], w = A.shape[3], hw = h * w;
  if (B == 0) return;
  // The interpolation tables and box ranges index mask rows and columns in 32 bits.
  if (in.roi_height > INT32_MAX || in.roi_width > INT32_MAX)
    throw std::invalid_argument("the CUDA backend takes ROIs of at most 2^31 - 1 rows and columns");
  DeviceGuard guard(A.device_id);
  cudaStream_t stream = 0;  // legacy default stream: the one requested from the DLPack producers

  const AxisInterpolation rows(in.roi_height, h), cols(in.roi_width, w);
  std::vector<float> row_sum(rows.column_sum.begin(), rows.column_sum.end());
  std::vector<float> col_sum(cols.column_sum.begin(), cols.column_sum.end());
  std::vector<int32_t> col_first(w, static_cast<int32_t>(in.roi_width)), col_end(w, 0);
  for (int64_t x = 0; x < in.roi_width; ++x)
    for (const int32_t j : {cols.lo[x], cols.hi[x]}) {
      col_first[j] = std::min(col_first[j], static_cast<int32_t>(x));
      col_end[j] = std::max(col_end[j], static_cast<int32_t>(x + 1));
    }
  std::vector<unsigned char> blob;
  const size_t o_row_lo = append(blob, rows.lo), o_row_hi = append(blob, rows.hi), o_row_t = append(blob, rows.t);
  const size_t o_col_lo = append(blob, cols.lo), o_col_hi = append(blob, cols.hi), o_col_t = append(blob, cols.t);
  const size_t o_row_sum = append(blob, row_sum), o_col_sum = append(blob, col_sum);
  const size_t o_col_first = append(blob, col_first), o_col_end = append(blob, col_end);
  const bool project = in.roi_kind != RoiKind::Projected && chosen_cuda_roi_pass() != CudaRoiPass::PerPixel;

  // Device memory: tables, the map workspace and the outputs, in one block. Each part starts on a 256-byte
  // boundary: the int64 predictions after B * h * w floats would otherwise be misaligned when that count is odd.
  const auto aligned = [](size_t bytes) { return (bytes + 255) / 256 * 256; };
  const size_t tables_bytes = aligned(blob.size());
  const size_t cam_bytes = static_cast<size_t>(B * hw) * sizeof(float);
  const size_t out_bytes = static_cast<size_t>(B) * (sizeof(int64_t) + 4 * sizeof(float) + sizeof(int32_t));
  const size_t cam_out_bytes = out.cam ? cam_bytes : 0;
  const size_t projection_bytes = project ? aligned(cam_bytes) + static_cast<size_t>(B) * sizeof(float) : 0;
  unsigned char* device = nullptr;
  check(cudaMallocAsync(
            reinterpret_cast<void**>(&device),
            tables_bytes + aligned(cam_bytes) + aligned(out_bytes) + aligned(cam_out_bytes) + projection_bytes, stream),
        "cudaMallocAsync");
  struct Free {
    unsigned char* p;
    cudaStream_t s;
    ~Free() {
      if (p) cudaFreeAsync(p, s);
    }
  };
  const Free free_on_exit{device, stream};
  check(cudaMemcpyAsync(device, blob.data(), blob.size(), cudaMemcpyHostToDevice, stream), "copying tables");

  cuda::ScoreArgs args{};
  args.tables = {reinterpret_cast<int32_t*>(device + o_row_lo),    reinterpret_cast<int32_t*>(device + o_row_hi),
                 reinterpret_cast<float*>(device + o_row_t),       reinterpret_cast<int32_t*>(device + o_col_lo),
                 reinterpret_cast<int32_t*>(device + o_col_hi),    reinterpret_cast<float*>(device + o_col_t),
                 reinterpret_cast<float*>(device + o_row_sum),     reinterpret_cast<float*>(device + o_col_sum),
                 reinterpret_cast<int32_t*>(device + o_col_first), reinterpret_cast<int32_t*>(device + o_col_end)};
  args.cam_workspace = reinterpret_cast<float*>(device + tables_bytes);
  unsigned char* outputs = device + tables_bytes + aligned(cam_bytes);
  args.out.pred = reinterpret_cast<int64_t*>(outputs);
  args.out.entropy = reinterpret_cast<float*>(outputs + B * sizeof(int64_t));
  args.out.entropy_norm = args.out.entropy + B;
  args.out.misalignment = args.out.entropy + 2 * B;
  args.out.score = args.out.entropy + 3 * B;
  args.out.status = reinterpret_cast<int32_t*>(args.out.entropy + 4 * B);
  args.out.cam = out.cam ? reinterpret_cast<float*>(outputs + aligned(out_bytes)) : nullptr;

  args.activations = A.data;
  copy_strides(A, args.a_stride, 4);
  if (in.gradients.present) {
    args.gradients = in.gradients.data;
    copy_strides(in.gradients, args.g_stride, 4);
  } else {
    args.weights = in.weights.data;
    args.weights_dtype = in.weights.dtype;
    copy_strides(in.weights, args.w_stride, 2);
  }
  args.logits = in.logits.data;
  args.logits_dtype = in.logits.dtype;
  copy_strides(in.logits, args.z_stride, 2);
  args.roi_kind = in.roi_kind;
  args.N = 0;
  if (in.roi_kind == RoiKind::Masks) {
    args.masks = in.masks.data;
    args.masks_dtype = in.masks.dtype;
    copy_strides(in.masks, args.m_stride, 3);
  } else if (in.roi_kind == RoiKind::Boxes) {
    args.boxes = static_cast<const float*>(in.boxes.data);
    copy_strides(in.boxes, args.b_stride, 3);
    args.N = in.boxes.shape[1];
  } else {
    args.roi_weights = static_cast<const float*>(in.roi_weights.data);
    copy_strides(in.roi_weights, args.r_stride, 3);
    args.roi_area = static_cast<const float*>(in.roi_area.data);
    args.area_stride = in.roi_area.stride[0];
  }
  args.K = K, args.h = h, args.w = w, args.C = in.logits.shape[1];
  args.H = in.roi_height, args.W = in.roi_width;
  args.alpha = in.alpha;
  if (project) {  // masks or boxes -> [B, h, w] weights and [B] areas, then scored as a projected ROI
    float* weights = reinterpret_cast<float*>(outputs + aligned(out_bytes) + aligned(cam_out_bytes));
    float* area = weights + aligned(cam_bytes) / sizeof(float);
    launch_roi_projection(in, h, w, args.tables, weights, area, chosen_cuda_roi_pass() == CudaRoiPass::VectorProjection,
                          stream);
    args.roi_kind = RoiKind::Projected;
    args.roi_weights = weights;
    args.r_stride[0] = hw, args.r_stride[1] = w, args.r_stride[2] = 1;
    args.roi_area = area;
    args.area_stride = 1;
    args.N = 0;
  }

  const bool projected = args.roi_kind == RoiKind::Projected;
  const bool cell_blocks_pass = chosen_cuda_map_pass() == CudaMapPass::CellBlocks;
  const bool tiles = projected && (cell_blocks_pass || chosen_cuda_map_pass() == CudaMapPass::ChannelTiles) &&
                     hw <= cuda::kMaxTileMap && cuda::block_is_contiguous(A) &&
                     (!in.gradients.present || cuda::block_is_contiguous(in.gradients));
  const bool cell_blocks = projected && cell_blocks_pass && hw > cuda::kMaxTileMap;
  args.splits = tiles ? (K + cuda::kSplitChannels - 1) / cuda::kSplitChannels : 1;
  if (tiles) args.tiles = cuda::tile_layout(static_cast<int>(hw));

  // With channel splits: their sums [B * splits, h * w] and flags [B * splits], in a block of their own.
  unsigned char* split_device = nullptr;
  if (args.splits > 1) {
    const size_t sums_bytes = aligned(static_cast<size_t>(B * args.splits * hw) * sizeof(float));
    check(cudaMallocAsync(reinterpret_cast<void**>(&split_device),
                          sums_bytes + static_cast<size_t>(B * args.splits) * sizeof(int), stream),
          "cudaMallocAsync");
    args.split_sums = reinterpret_cast<float*>(split_device);
    args.split_flags = reinterpret_cast<int*>(split_device + sums_bytes);
  }
  const Free free_splits_on_exit{split_device, stream};

  // With cell blocks: the gradient means [B, K], each block's range [B * blocks, 2] and flags [B * blocks], in a
  // block of their own; the map goes to the workspace above.
  cuda::CellBlockArgs cell_args{};
  unsigned char* cell_device = nullptr;
  const int64_t cell_block_count = B * cuda::cell_blocks_of(hw);
  if (cell_blocks) {
    const size_t means_bytes = in.gradients.present ? aligned(static_cast<size_t>(B * K) * sizeof(float)) : 0;
    const size_t range_bytes = aligned(static_cast<size_t>(cell_block_count) * 2 * sizeof(float));
    check(cudaMallocAsync(reinterpret_cast<void**>(&cell_device),
                          means_bytes + range_bytes + static_cast<size_t>(cell_block_count) * sizeof(int), stream),
          "cudaMallocAsync");
    cell_args.activations = args.activations;
    std::copy(args.a_stride, args.a_stride + 4, cell_args.a_stride);
    cell_args.gradients = args.gradients;
    std::copy(args.g_stride, args.g_stride + 4, cell_args.g_stride);
    cell_args.weights = args.weights;
    std::copy(args.w_stride, args.w_stride + 2, cell_args.w_stride);
    cell_args.weights_dtype = args.weights_dtype;
    cell_args.B = B, cell_args.K = K, cell_args.h = h, cell_args.w = w;
    cell_args.gradient_means = in.gradients.present ? reinterpret_cast<float*>(cell_device) : nullptr;
    cell_args.map = args.cam_workspace;
    cell_args.block_range = reinterpret_cast<float*>(cell_device + means_bytes);
    cell_args.block_flags = reinterpret_cast<int*>(cell_device + means_bytes + range_bytes);
    args.block_range = cell_args.block_range;
    args.block_flags = cell_args.block_flags;
  }
  const Free free_cells_on_exit{cell_device, stream};

  const cuda::MapSource source = cell_blocks       ? cuda::MapSource::CellBlocks
                                 : args.splits > 1 ? cuda::MapSource::SplitSums
                                 : tiles           ? cuda::MapSource::ChannelTiles
                                                   : cuda::MapSource::ChannelWarps;
  launch_scoring(args, cell_args, source, B, A.dtype, A.device_id, stream);

  std::vector<unsigned char> host(out_bytes);
  check(cudaMemcpyAsync(host.data(), outputs, out_bytes, cudaMemcpyDeviceToHost, stream), "copying scores");
  if (out.cam)
    check(cudaMemcpyAsync(out.cam, args.out.cam, cam_out_bytes, cudaMemcpyDeviceToHost, stream), "copying maps");
  check(cudaStreamSynchronize(stream), "score_kernel");
  const unsigned char* p = host.data();
  std::memcpy(out.pred, p, B * sizeof(int64_t));
  p += B * sizeof(int64_t);
  for (float* dst : {out.entropy, out.entropy_norm, out.misalignment, out.score}) {
    std::memcpy(dst, p, B * sizeof(float));
    p += B * sizeof(float);
  }
  std::memcpy(out.status, p, B * sizeof(int32_t));
}

bool cuda_compiled() { return true; }

int cuda_device_count(std::string* why_not) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    if (why_not) *why_not = cudaGetErrorString(status);
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  if (count == 0 && why_not) *why_not = "no CUDA device is visible";
  return count;
}

}  // namespace egal
