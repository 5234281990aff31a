// CUDA backend: one thread block per sample, inputs read in place from device
// memory (strides honoured), outputs copied back as B numbers per field. The
// kernel runs the steps of docs/scoring.md as one device function each; the
// formulas themselves are score_math.h's, shared with the CPU backend. Masks and
// boxes are first projected onto the map's grid by roi_projection_cuda.cu, a column
// or four a thread (unless set_cuda_roi_pass chose the per-pixel pass), and scored
// as a projected ROI.
// Steps 2-3 of small contiguous maps take channel tiles when set_cuda_map_pass
// asked for them (channel_tiles_cuda.cuh), and those of large maps blocks of
// cells when it asked for "cell-blocks" (cell_blocks_cuda.cuh).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
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
#include "scalar.h"
#include "score_math.h"

namespace egal {
namespace {

constexpr int kThreads = cuda::kTileThreads;
constexpr int kWarps = kThreads / 32;
using cuda::check;

struct KernelArgs {
  const void* activations;  // [B, K, h, w]
  int64_t a_stride[4];
  const void* gradients;  // [B, K, h, w] or null
  int64_t g_stride[4];
  const void* weights;  // [B, K] or null
  int64_t w_stride[2];
  DType weights_dtype;
  const void* logits;  // [B, C]
  int64_t z_stride[2];
  DType logits_dtype;
  RoiKind roi_kind;
  const void* masks;  // [B, H, W]
  int64_t m_stride[3];
  DType masks_dtype;
  const float* boxes;  // [B, N, 4]
  int64_t b_stride[3];
  const float* roi_weights;  // [B, h, w]
  int64_t r_stride[3];
  const float* roi_area;  // [B]
  int64_t area_stride;
  int64_t K, h, w, C, H, W, N;
  cuda::TileLayout tiles;  // channel tiles' layout, when steps 2-3 take them
  int64_t splits;          // blocks a sample's channels are shared out to (channel_split_kernel)
  float* split_sums;       // [B * splits, h * w]
  int* split_flags;        // [B * splits]
  const float* block_range;  // [B * cuda::cell_blocks_of(h * w), 2], with cell blocks
  const int* block_flags;    // [B * cuda::cell_blocks_of(h * w)]
  float alpha;
  DeviceTables tables;
  float* cam_workspace;  // [B, h * w]
  ScoreOutputs out;  // device buffers, [B] each (cam: [B, h * w] or null)
};

// The shared memory of one block (one sample).
struct BlockShared {
  float* channel_weights;  // [K], or [tiles.channels] with channel tiles
  float* partial;          // [kThreads]
  int32_t* boxes;          // [N, 4] pixel ranges of the valid boxes
  cuda::TileShared tiles;  // with channel tiles: their values and the raw map
  double* reduce;          // [kWarps]
  float* reduce_f;         // [kWarps]
  int* flags;              // status bits found so far (non-finite maps, bad mask)
  int* valid_boxes;
};

__device__ __forceinline__ double block_sum(double v, double* scratch) { return cuda::block_sum<kWarps>(v, scratch); }

__device__ __forceinline__ float block_min(float v, float* scratch) { return cuda::block_min<kWarps>(v, scratch); }
__device__ __forceinline__ float block_max(float v, float* scratch) { return -cuda::block_min<kWarps>(-v, scratch); }
using cuda::plane_is_contiguous;
using cuda::plane_offset;

// Step 2: channel weights into shared memory, a warp per channel when they are
// gradient means; a non-finite weight flags the sample.
template <class T>
__device__ __forceinline__ void channel_weights_step(const KernelArgs& args, int64_t b, const BlockShared& s) {
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t K = args.K, w = args.w, hw = args.h * args.w;
  if (args.gradients) {
    const T* g = static_cast<const T*>(args.gradients) + b * args.g_stride[0];
    const bool contiguous = plane_is_contiguous(args.g_stride, w);
    // Unrolled so that a warp has two channels' loads in flight (four spill 20 bytes of registers: ptxas -v).
#pragma unroll 2
    for (int64_t k = warp; k < K; k += kWarps) {
      const float mean = cuda::warp_channel_mean(g + k * args.g_stride[1], hw, w, args.g_stride, contiguous);
      if (lane == 0) s.channel_weights[k] = mean;
    }
  } else {
    for (int64_t k = tid; k < K; k += kThreads)
      s.channel_weights[k] =
          load_as_float(args.weights, args.weights_dtype, b * args.w_stride[0] + k * args.w_stride[1]);
  }
  __syncthreads();
  for (int64_t k = tid; k < K; k += kThreads)
    if (!isfinite(s.channel_weights[k])) atomicOr(s.flags, kStatusNonFinite);
}

// Step 3: the raw map max(0, sum_k w_k A_k) into `cam`; channel groups share the
// block when the map is small. Returns this thread's minimum and maximum of it.
template <class T>
__device__ __forceinline__ void raw_map_step(const KernelArgs& args, int64_t b, const BlockShared& s, float* cam,
                                             float* local_lo, float* local_hi) {
  const int tid = threadIdx.x;
  const int64_t K = args.K, w = args.w, hw = args.h * args.w;
  const T* a = static_cast<const T*>(args.activations) + b * args.a_stride[0];
  const int lanes = hw < kThreads ? static_cast<int>(hw) : kThreads;
  const int groups = kThreads / lanes;
  float lo = INFINITY, hi = -INFINITY;
  for (int64_t p0 = 0; p0 < hw; p0 += lanes) {
    const int64_t p = p0 + tid % lanes;
    const int group = tid / lanes;
    float acc = 0.0f;
    if (group < groups && p < hw) {
      const T* cell = a + plane_offset(p, w, args.a_stride, plane_is_contiguous(args.a_stride, w));
      // Unrolled for the loads in flight; the sum keeps its order, so the result does not change.
#pragma unroll 8
      for (int64_t k = group; k < K; k += groups) acc += s.channel_weights[k] * to_float(cell[k * args.a_stride[1]]);
    }
    s.partial[tid] = acc;
    __syncthreads();
    if (tid < lanes && p < hw) {
      float v = 0.0f;
      for (int g = 0; g < groups; ++g) v += s.partial[g * lanes + tid];
      if (!isfinite(v)) atomicOr(s.flags, kStatusNonFinite);
      v = math::relu(v);
      cam[p] = v;
      lo = fminf(lo, v);
      hi = fmaxf(hi, v);
    }
    __syncthreads();
  }
  *local_lo = lo;
  *local_hi = hi;
}

// The normalised low-resolution map, evaluated where it is read (step 4).
struct NormalisedMap {
  const float* cam;  // [h * w], after the ReLU
  float lo, denominator;

  __device__ __forceinline__ float operator()(int64_t p) const { return math::normalise(cam[p], lo, denominator); }
};

// Step 4: the map's minimum and maximum over the block.
__device__ __forceinline__ NormalisedMap normalise_step(const float* cam, float local_lo, float local_hi,
                                                        const BlockShared& s) {
  const float lo = block_min(local_lo, s.reduce_f);
  const float hi = block_max(local_hi, s.reduce_f);
  __syncthreads();  // cam[] written by other threads is read after this
  return {cam, lo, math::normalisation_denominator(lo, hi)};
}

// Step 5: U(y, x), from the interpolation tables.
__device__ __forceinline__ float upsampled(const KernelArgs& args, const NormalisedMap& map, int64_t y, int64_t x) {
  const int64_t r0 = args.tables.row_lo[y] * args.w, r1 = args.tables.row_hi[y] * args.w;
  const int64_t c0 = args.tables.col_lo[x], c1 = args.tables.col_hi[x];
  return math::bilinear(map(r0 + c0), map(r0 + c1), map(r1 + c0), map(r1 + c1), args.tables.row_t[y],
                        args.tables.col_t[x]);
}

// The Dice sums I, SU and SM; this thread's share until block-summed.
struct DiceSums {
  double intersection = 0.0, upsampled_sum = 0.0, roi_area = 0.0;
};

// This thread's cells p = y * w + x of the map (threadIdx.x, then every kThreads-th), stepping the row and
// column rather than dividing (a 64-bit division is tens of instructions, and a 224 x 224 map has 196 cells a
// thread).
struct CellCursor {
  int64_t p, y, x;
  int64_t w, step_y, step_x;

  __device__ __forceinline__ explicit CellCursor(int64_t width)
      : p(threadIdx.x),
        y(threadIdx.x / width),
        x(threadIdx.x % width),
        w(width),
        step_y(kThreads / width),
        step_x(kThreads % width) {}

  __device__ __forceinline__ void next() {
    p += kThreads, y += step_y, x += step_x;
    if (x >= w) x -= w, ++y;
  }
};

// SU = sum of U from the operator's column sums, without upsampling.
__device__ __forceinline__ double upsampled_sum_part(const KernelArgs& args, const NormalisedMap& map) {
  double sum = 0.0;
  for (CellCursor c(args.w); c.p < args.h * args.w; c.next())
    sum += static_cast<double>(map(c.p)) * args.tables.row_sum[c.y] * args.tables.col_sum[c.x];
  return sum;
}

// Step 6 with masks: I and SM over the mask's nonzero pixels, a warp per row.
__device__ __forceinline__ void mask_sums_part(const KernelArgs& args, int64_t b, const NormalisedMap& map,
                                               const BlockShared& s, DiceSums* sums) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float inter = 0.0f, area = 0.0f;
  bool bad = false;
  const int64_t base = b * args.m_stride[0];
  for (int64_t y = warp; y < args.H; y += kWarps) {
    float row_inter = 0.0f, row_area = 0.0f;
    for (int64_t x = lane; x < args.W; x += 32) {
      const float m = load_as_float(args.masks, args.masks_dtype, base + y * args.m_stride[1] + x * args.m_stride[2]);
      if (m == 0.0f) continue;
      if (!math::mask_value_ok(m)) bad = true;
      row_inter += upsampled(args, map, y, x) * m;
      row_area += m;
    }
    inter += row_inter;
    area += row_area;
  }
  if (bad) atomicOr(s.flags, kStatusBadMask);
  sums->intersection = inter;
  sums->roi_area = area;
}

// Step 6 with boxes: one thread turns the boxes into pixel ranges, then I and SM
// over the pixels inside their union.
__device__ __forceinline__ void box_sums_part(const KernelArgs& args, int64_t b, const NormalisedMap& map,
                                              const BlockShared& s, DiceSums* sums) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (threadIdx.x == 0)
    *s.valid_boxes = cuda::box_ranges(args.boxes + b * args.b_stride[0], args.b_stride[1], args.b_stride[2], args.N,
                                      args.H, args.W, s.boxes);
  __syncthreads();
  float inter = 0.0f, area = 0.0f;
  for (int64_t y = warp; y < args.H; y += kWarps) {
    for (int64_t x = lane; x < args.W; x += 32) {
      if (!cuda::in_box_ranges(s.boxes, *s.valid_boxes, y, x)) continue;
      inter += upsampled(args, map, y, x);
      area += 1.0f;
    }
  }
  sums->intersection = inter;
  sums->roi_area = area;
}

// Step 6 with a projected ROI: I = <normalised map, R_y^T M R_x> on the h x w grid.
__device__ __forceinline__ void projected_sums_part(const KernelArgs& args, int64_t b, const NormalisedMap& map,
                                                    const BlockShared& s, DiceSums* sums) {
  const float* r = args.roi_weights + b * args.r_stride[0];
  bool bad = threadIdx.x == 0 && !math::projection_value_ok(args.roi_area[b * args.area_stride]);
  for (CellCursor c(args.w); c.p < args.h * args.w; c.next()) {
    const float v = r[c.y * args.r_stride[1] + c.x * args.r_stride[2]];
    bad = bad || !math::projection_value_ok(v);
    sums->intersection += static_cast<double>(map(c.p)) * v;
  }
  if (bad) atomicOr(s.flags, kStatusBadMask);
}

// Steps 5-6: the Dice sums of the sample, the same in every thread. A kernel for projected ROIs alone leaves
// out the per-pixel passes, and the registers they need (48 against 80 a thread: more blocks fit an SM).
template <bool kProjectedRoi>
__device__ __forceinline__ DiceSums dice_sums_step(const KernelArgs& args, int64_t b, const NormalisedMap& map,
                                                   const BlockShared& s) {
  DiceSums sums;
  sums.upsampled_sum = upsampled_sum_part(args, map);
  if (kProjectedRoi)
    projected_sums_part(args, b, map, s, &sums);
  else if (args.roi_kind == RoiKind::Masks)
    mask_sums_part(args, b, map, s, &sums);
  else
    box_sums_part(args, b, map, s, &sums);
  sums.upsampled_sum = block_sum(sums.upsampled_sum, s.reduce);
  sums.intersection = block_sum(sums.intersection, s.reduce);
  sums.roi_area = args.roi_kind == RoiKind::Projected ? static_cast<double>(args.roi_area[b * args.area_stride])
                                                      : block_sum(sums.roi_area, s.reduce);
  return sums;
}

// The normalised map for visualisation, NaN where the sample's maps are not finite.
__device__ __forceinline__ void write_cam_step(const KernelArgs& args, int64_t b, const NormalisedMap& map, int flags) {
  if (!args.out.cam) return;
  const int64_t hw = args.h * args.w;
  for (int64_t p = threadIdx.x; p < hw; p += kThreads)
    args.out.cam[b * hw + p] = (flags & kStatusNonFinite) ? NAN : map(p);
}

// Steps 1 and 7, on one thread: C is small next to the maps.
__device__ __forceinline__ void finish_step(const KernelArgs& args, int64_t b, const DiceSums& sums, int flags) {
  const math::Entropy e =
      math::softmax_entropy(args.logits, args.logits_dtype, b * args.z_stride[0], args.z_stride[1], args.C);
  math::store_sample(args.out, b,
                     math::finish_sample(e, args.C, args.alpha, !(flags & kStatusNonFinite), flags & kStatusBadMask,
                                         sums.intersection, sums.upsampled_sum, sums.roi_area));
}

// How the scoring kernel gets steps 2-3: a warp per channel, then threads per map cell (ChannelWarps); channel
// tiles in this block (ChannelTiles); the sums that channel_split_kernel's blocks left (SplitSums); or the map
// that cell_map_kernel's blocks left in the workspace (CellBlocks).
enum class MapSource { ChannelWarps, ChannelTiles, SplitSums, CellBlocks };

// The channel-tile sums of one sample's channels [split * kSplitChannels, ...), one block each: a sample of
// more than kSplitChannels channels is shared out to several blocks, so that a small batch fills the GPU.
// Leaves the sums before the ReLU in split_sums [B * splits, h * w] and the flags in split_flags [B * splits].
template <class T>
__global__ void __launch_bounds__(kThreads) channel_split_kernel(KernelArgs args) {
  extern __shared__ float shared[];  // cuda::TileShared's parts, then partial sums [kThreads]
  __shared__ int flags;
  const int cells = static_cast<int>(args.h * args.w);
  const int64_t b = blockIdx.x / args.splits, first = (blockIdx.x % args.splits) * cuda::kSplitChannels;
  const int64_t channels = args.K - first < cuda::kSplitChannels ? args.K - first : cuda::kSplitChannels;
  if (threadIdx.x == 0) flags = 0;
  __syncthreads();
  const T* gradients =
      args.gradients ? static_cast<const T*>(args.gradients) + b * args.g_stride[0] + first * cells : nullptr;
  const cuda::GivenWeights given{args.weights, args.weights_dtype, b * args.w_stride[0] + first * args.w_stride[1],
                                 args.w_stride[1]};
  const cuda::TileShared tiles = cuda::tile_shared(shared, args.tiles, cells);
  float* partial = shared + cuda::tile_shared_floats(args.tiles, cells, gradients != nullptr);
  const float sum =
      cuda::channel_tile_sums(static_cast<const T*>(args.activations) + b * args.a_stride[0] + first * cells, gradients,
                              given, channels, cells, args.tiles, tiles, partial, &flags);
  if (static_cast<int>(threadIdx.x) < cells) args.split_sums[blockIdx.x * cells + threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.x == 0) args.split_flags[blockIdx.x] = flags;
}

// One block per sample. kMap: where steps 2-3 come from (all but channel warps take projected ROIs only).
template <class T, bool kProjectedRoi, MapSource kMap>
__global__ void __launch_bounds__(kThreads) score_kernel(KernelArgs args) {
  extern __shared__ float shared[];
  __shared__ double reduce_scratch[kWarps];
  __shared__ float reduce_scratch_f[kWarps];
  __shared__ int flags;
  __shared__ int valid_boxes;
  BlockShared s{};
  s.reduce = reduce_scratch, s.reduce_f = reduce_scratch_f, s.flags = &flags, s.valid_boxes = &valid_boxes;
  const int cells = static_cast<int>(args.h * args.w);
  if constexpr (kMap == MapSource::ChannelTiles) {  // cuda::TileShared's parts, then partial sums [kThreads]
    s.tiles = cuda::tile_shared(shared, args.tiles, cells);
    s.channel_weights = s.tiles.weights;
    s.partial = shared + cuda::tile_shared_floats(args.tiles, cells, args.gradients != nullptr);
  } else if constexpr (kMap == MapSource::SplitSums) {  // the raw map [h * w]
    s.tiles.map = shared;
  } else {  // channel weights [K], partial sums [kThreads], box ranges [N, 4]
    s.channel_weights = shared;
    s.partial = shared + args.K;
    s.boxes = reinterpret_cast<int32_t*>(shared + args.K + kThreads);
  }

  const int64_t b = blockIdx.x;
  if (threadIdx.x == 0) flags = 0;
  __syncthreads();

  float* cam;
  float local_lo, local_hi;
  if constexpr (kMap == MapSource::ChannelTiles) {
    cam = s.tiles.map;
    const T* gradients = args.gradients ? static_cast<const T*>(args.gradients) + b * args.g_stride[0] : nullptr;
    const cuda::GivenWeights given{args.weights, args.weights_dtype, b * args.w_stride[0], args.w_stride[1]};
    const float sum = cuda::channel_tile_sums(static_cast<const T*>(args.activations) + b * args.a_stride[0], gradients,
                                              given, args.K, cells, args.tiles, s.tiles, s.partial, s.flags);
    cuda::raw_map_cell(sum, cells, cam, s.flags, &local_lo, &local_hi);
  } else if constexpr (kMap == MapSource::SplitSums) {
    cam = s.tiles.map;
    float sum = 0.0f;
    if (static_cast<int>(threadIdx.x) < cells)
      for (int64_t split = 0; split < args.splits; ++split)
        sum += args.split_sums[(b * args.splits + split) * cells + threadIdx.x];
    for (int64_t split = threadIdx.x; split < args.splits; split += kThreads)
      atomicOr(s.flags, args.split_flags[b * args.splits + split]);
    cuda::raw_map_cell(sum, cells, cam, s.flags, &local_lo, &local_hi);
  } else if constexpr (kMap == MapSource::CellBlocks) {
    cam = args.cam_workspace + b * args.h * args.w;
    const int64_t blocks = cuda::cell_blocks_of(cells);
    local_lo = INFINITY, local_hi = -INFINITY;
    for (int64_t part = threadIdx.x; part < blocks; part += kThreads) {
      local_lo = fminf(local_lo, args.block_range[2 * (b * blocks + part)]);
      local_hi = fmaxf(local_hi, args.block_range[2 * (b * blocks + part) + 1]);
      atomicOr(s.flags, args.block_flags[b * blocks + part]);
    }
  } else {
    channel_weights_step<T>(args, b, s);
    cam = args.cam_workspace + b * args.h * args.w;
    raw_map_step<T>(args, b, s, cam, &local_lo, &local_hi);
  }
  const NormalisedMap map = normalise_step(cam, local_lo, local_hi, s);
  const DiceSums sums = dice_sums_step<kProjectedRoi>(args, b, map, s);
  write_cam_step(args, b, map, flags);
  if (threadIdx.x == 0) finish_step(args, b, sums, flags);
}

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

  KernelArgs args{};
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
  const size_t tile_bytes =
      tiles ? (cuda::tile_shared_floats(args.tiles, hw, in.gradients.present) + kThreads) * sizeof(float) : 0;

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

  const std::string what = "K = " + std::to_string(K) + " channels and N = " + std::to_string(args.N) + " boxes";
  auto launch_with = [&](auto kernel, int64_t blocks, size_t shared_bytes, const auto& kernel_args) {
    cuda::allow_shared_memory(kernel, shared_bytes, A.device_id, what);
    kernel<<<static_cast<unsigned>(blocks), kThreads, shared_bytes, stream>>>(kernel_args);
    check(cudaGetLastError(), "launching the scoring kernels");
  };
  auto launch = [&](auto kernel, int64_t blocks, size_t shared_bytes) {
    launch_with(kernel, blocks, shared_bytes, args);
  };
  auto launch_for = [&](auto feature) {
    using T = decltype(feature);
    if (cell_blocks) {
      if (in.gradients.present)
        launch_with(cuda::channel_means_kernel<T>,
                    (B * K + cuda::kMeanChannelsPerBlock - 1) / cuda::kMeanChannelsPerBlock, 0, cell_args);
      launch_with(cuda::cell_map_kernel<T>, cell_block_count, K * sizeof(float), cell_args);
      launch(score_kernel<float, true, MapSource::CellBlocks>, B, 0);
    } else if (args.splits > 1) {
      launch(channel_split_kernel<T>, B * args.splits, tile_bytes);
      launch(score_kernel<float, true, MapSource::SplitSums>, B, (hw + kThreads) * sizeof(float));
    } else if (tiles) {
      launch(score_kernel<T, true, MapSource::ChannelTiles>, B, tile_bytes);
    } else {
      const size_t shared_bytes = (K + kThreads) * sizeof(float) + args.N * 4 * sizeof(int32_t);
      if (projected)
        launch(score_kernel<T, true, MapSource::ChannelWarps>, B, shared_bytes);
      else
        launch(score_kernel<T, false, MapSource::ChannelWarps>, B, shared_bytes);
    }
  };
  switch (A.dtype) {
    case DType::Float32: launch_for(float{}); break;
    case DType::Float16: launch_for(half_bits{}); break;
    case DType::BFloat16: launch_for(bfloat16_bits{}); break;
    default: throw std::invalid_argument("activations must be float32, float16 or bfloat16");
  }

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
