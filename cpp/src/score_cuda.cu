// The CUDA backend's scoring kernels: one thread block per sample, inputs read in place from device memory
// (strides honoured). The kernel runs the steps of docs/scoring.md as one device function each; the formulas
// themselves are score_math.h's, shared with the CPU backend. Masks and boxes reach it projected onto the map's
// grid (roi_projection_cuda.cu) unless the per-pixel pass reads them here. Steps 2-3 take a warp per channel
// here, or the channel tiles (channel_tiles_cuda.cuh) or blocks of cells (cell_blocks_cuda.cuh) that the
// launcher, score_launch_cuda.cu, chose from set_cuda_map_pass; launch_scoring runs the kernels in order.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cell_blocks_cuda.cuh"
#include "channel_tiles_cuda.cuh"
#include "cuda_common.h"
#include "roi_projection_cuda.h"
#include "scalar.h"
#include "score_cuda.cuh"
#include "score_math.h"

namespace egal {
namespace {

constexpr int kThreads = cuda::kTileThreads;
constexpr int kWarps = kThreads / 32;
using cuda::check;
using cuda::MapSource;
using cuda::ScoreArgs;

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
__device__ __forceinline__ void channel_weights_step(const ScoreArgs& args, int64_t b, const BlockShared& s) {
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
__device__ __forceinline__ void raw_map_step(const ScoreArgs& args, int64_t b, const BlockShared& s, float* cam,
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
__device__ __forceinline__ float upsampled(const ScoreArgs& args, const NormalisedMap& map, int64_t y, int64_t x) {
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
__device__ __forceinline__ double upsampled_sum_part(const ScoreArgs& args, const NormalisedMap& map) {
  double sum = 0.0;
  for (CellCursor c(args.w); c.p < args.h * args.w; c.next())
    sum += static_cast<double>(map(c.p)) * args.tables.row_sum[c.y] * args.tables.col_sum[c.x];
  return sum;
}

// Step 6 with masks: I and SM over the mask's nonzero pixels, a warp per row.
__device__ __forceinline__ void mask_sums_part(const ScoreArgs& args, int64_t b, const NormalisedMap& map,
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
__device__ __forceinline__ void box_sums_part(const ScoreArgs& args, int64_t b, const NormalisedMap& map,
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
__device__ __forceinline__ void projected_sums_part(const ScoreArgs& args, int64_t b, const NormalisedMap& map,
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
__device__ __forceinline__ DiceSums dice_sums_step(const ScoreArgs& args, int64_t b, const NormalisedMap& map,
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
__device__ __forceinline__ void write_cam_step(const ScoreArgs& args, int64_t b, const NormalisedMap& map, int flags) {
  if (!args.out.cam) return;
  const int64_t hw = args.h * args.w;
  for (int64_t p = threadIdx.x; p < hw; p += kThreads)
    args.out.cam[b * hw + p] = (flags & kStatusNonFinite) ? NAN : map(p);
}

// Steps 1 and 7, on one thread: C is small next to the maps.
__device__ __forceinline__ void finish_step(const ScoreArgs& args, int64_t b, const DiceSums& sums, int flags) {
  const math::Entropy e =
      math::softmax_entropy(args.logits, args.logits_dtype, b * args.z_stride[0], args.z_stride[1], args.C);
  math::store_sample(args.out, b,
                     math::finish_sample(e, args.C, args.alpha, !(flags & kStatusNonFinite), flags & kStatusBadMask,
                                         sums.intersection, sums.upsampled_sum, sums.roi_area));
}

// The channel-tile sums of one sample's channels [split * kSplitChannels, ...), one block each: a sample of
// more than kSplitChannels channels is shared out to several blocks, so that a small batch fills the GPU.
// Leaves the sums before the ReLU in split_sums [B * splits, h * w] and the flags in split_flags [B * splits].
template <class T>
__global__ void __launch_bounds__(kThreads) channel_split_kernel(ScoreArgs args) {
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
__global__ void __launch_bounds__(kThreads) score_kernel(ScoreArgs args) {
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

}  // namespace

void launch_scoring(const ScoreArgs& args, const cuda::CellBlockArgs& cell_args, MapSource source, int64_t B,
                    DType features, int device, cudaStream_t stream) {
  const int64_t K = args.K, hw = args.h * args.w;
  const bool gradients = args.gradients != nullptr;
  const size_t tile_bytes = source == MapSource::ChannelTiles || source == MapSource::SplitSums
                                ? (cuda::tile_shared_floats(args.tiles, hw, gradients) + kThreads) * sizeof(float)
                                : 0;
  const std::string what = "K = " + std::to_string(K) + " channels and N = " + std::to_string(args.N) + " boxes";
  auto launch_with = [&](auto kernel, int64_t blocks, size_t shared_bytes, const auto& kernel_args) {
    cuda::allow_shared_memory(kernel, shared_bytes, device, what);
    kernel<<<static_cast<unsigned>(blocks), kThreads, shared_bytes, stream>>>(kernel_args);
    check(cudaGetLastError(), "launching the scoring kernels");
  };
  auto launch = [&](auto kernel, int64_t blocks, size_t shared_bytes) {
    launch_with(kernel, blocks, shared_bytes, args);
  };
  auto launch_for = [&](auto feature) {
    using T = decltype(feature);
    switch (source) {
      case MapSource::CellBlocks:
        if (gradients)
          launch_with(cuda::channel_means_kernel<T>,
                      (B * K + cuda::kMeanChannelsPerBlock - 1) / cuda::kMeanChannelsPerBlock, 0, cell_args);
        launch_with(cuda::cell_map_kernel<T>, B * cuda::cell_blocks_of(hw), K * sizeof(float), cell_args);
        launch(score_kernel<float, true, MapSource::CellBlocks>, B, 0);
        break;
      case MapSource::SplitSums:
        launch(channel_split_kernel<T>, B * args.splits, tile_bytes);
        launch(score_kernel<float, true, MapSource::SplitSums>, B, (hw + kThreads) * sizeof(float));
        break;
      case MapSource::ChannelTiles: launch(score_kernel<T, true, MapSource::ChannelTiles>, B, tile_bytes); break;
      case MapSource::ChannelWarps: {
        const size_t shared_bytes = (K + kThreads) * sizeof(float) + args.N * 4 * sizeof(int32_t);
        if (args.roi_kind == RoiKind::Projected)
          launch(score_kernel<T, true, MapSource::ChannelWarps>, B, shared_bytes);
        else
          launch(score_kernel<T, false, MapSource::ChannelWarps>, B, shared_bytes);
        break;
      }
    }
  };
  switch (features) {
    case DType::Float32: launch_for(float{}); break;
    case DType::Float16: launch_for(half_bits{}); break;
    case DType::BFloat16: launch_for(bfloat16_bits{}); break;
    default: throw std::invalid_argument("activations must be float32, float16 or bfloat16");
  }
}

}  // namespace egal
