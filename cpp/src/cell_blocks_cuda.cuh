// Steps 2-3 of the CUDA scoring kernel for large maps (more than kMaxTileMap cells), shared out to many blocks a
// sample: the channel weights w_k (gradient means) and the raw map max(0, sum_k w_k A_k) with its minimum and
// maximum per block of cells.
//
// Why: with one block a sample, a 224 x 224 map at B = 256 gave an H100 256 blocks of 256 threads, each walking
// 50,176 cells K times over; the kernel took 5.3x its read floor and 2.4x the PyTorch reference's time
// (bench/README.md, issue 17). Here the gradient means take a warp a channel (B * K warps, 8 a block), and the map
// a thread a cell (B * ceil(h * w / 256) blocks), so the loads in flight grow with the map. The scoring kernel then
// reads the map back and finishes each sample (steps 4-7) in a block of its own.
//
// Sums: a channel's gradients as in the one-block pass (cuda::warp_channel_mean); a cell's channels in order of k;
// the map's minimum and maximum are exact whatever the order. Nothing depends on the batch's size, so a sample's
// result does not change with it.
#pragma once
#include <cstdint>

#include "channel_tiles_cuda.cuh"
#include "cuda_common.h"
#include "scalar.h"
#include "score_math.h"

namespace egal::cuda {

constexpr int kMeanChannelsPerBlock = kTileThreads / 32;  // a warp a channel
constexpr int kCellsPerBlock = kTileThreads;              // a thread a cell

// Blocks of cells a sample's map is shared out to.
__host__ __device__ inline int64_t cell_blocks_of(int64_t cells) {
  return (cells + kCellsPerBlock - 1) / kCellsPerBlock;
}

struct CellBlockArgs {
  const void* activations;  // [B, K, h, w]
  int64_t a_stride[4];
  const void* gradients;  // [B, K, h, w], or null when the weights are given
  int64_t g_stride[4];
  const void* weights;  // [B, K] given weights, or null
  int64_t w_stride[2];
  DType weights_dtype;
  int64_t B, K, h, w;
  float* gradient_means;  // [B, K], written by channel_means_kernel when the weights are gradient means
  float* map;             // [B, h * w]: the raw map after the ReLU
  float* block_range;     // [B * cell_blocks, 2]: the minimum and maximum of each block's cells
  int* block_flags;       // [B * cell_blocks]: status bits (a non-finite sum)
};

// Step 2 with gradients: the mean of channel (b, k) = blockIdx.x * kMeanChannelsPerBlock + warp into
// gradient_means, one warp a channel.
template <class T>
__global__ void __launch_bounds__(kTileThreads) channel_means_kernel(CellBlockArgs args) {
  const int64_t channel = static_cast<int64_t>(blockIdx.x) * kMeanChannelsPerBlock + threadIdx.x / 32;
  if (channel >= args.B * args.K) return;  // the warp as a whole: it calls no barrier of the block
  const int64_t b = channel / args.K, k = channel % args.K;
  const T* plane = static_cast<const T*>(args.gradients) + b * args.g_stride[0] + k * args.g_stride[1];
  const float mean =
      warp_channel_mean(plane, args.h * args.w, args.w, args.g_stride, plane_is_contiguous(args.g_stride, args.w));
  if (threadIdx.x % 32 == 0) args.gradient_means[channel] = mean;
}

// Step 3 for cells [part * kCellsPerBlock, ...) of sample b, where blockIdx.x = b * cell_blocks + part: a thread
// a cell, summing its K channels in order. Writes the cells after the ReLU into map, and the block's minimum,
// maximum and status bits (a non-finite sum) into block_range and block_flags.
template <class T>
__global__ void __launch_bounds__(kTileThreads) cell_map_kernel(CellBlockArgs args) {
  extern __shared__ float weights[];  // [K]
  __shared__ float scratch[kTileThreads / 32];
  __shared__ int flags;
  const int64_t cells = args.h * args.w, blocks = cell_blocks_of(cells);
  const int64_t b = blockIdx.x / blocks, p = (blockIdx.x % blocks) * kCellsPerBlock + threadIdx.x;
  if (threadIdx.x == 0) flags = 0;
  __syncthreads();
  for (int64_t k = threadIdx.x; k < args.K; k += kTileThreads) {
    const float wk = args.gradients
                         ? args.gradient_means[b * args.K + k]
                         : load_as_float(args.weights, args.weights_dtype, b * args.w_stride[0] + k * args.w_stride[1]);
    weights[k] = wk;  // a non-finite weight makes every cell's sum non-finite, which flags the sample below
  }
  __syncthreads();
  float lo = INFINITY, hi = -INFINITY;
  if (p < cells) {
    const T* cell = static_cast<const T*>(args.activations) + b * args.a_stride[0] +
                    plane_offset(p, args.w, args.a_stride, plane_is_contiguous(args.a_stride, args.w));
    float acc = 0.0f;
    // Unrolled for the loads in flight; the sum keeps its order.
#pragma unroll 8
    for (int64_t k = 0; k < args.K; ++k) acc += weights[k] * to_float(cell[k * args.a_stride[1]]);
    if (!isfinite(acc)) atomicOr(&flags, kStatusNonFinite);
    lo = hi = math::relu(acc);
    args.map[b * cells + p] = lo;
  }
  lo = block_min<kTileThreads / 32>(lo, scratch);
  hi = -block_min<kTileThreads / 32>(-hi, scratch);
  if (threadIdx.x == 0) {
    args.block_range[2 * blockIdx.x] = lo;
    args.block_range[2 * blockIdx.x + 1] = hi;
    args.block_flags[blockIdx.x] = flags;
  }
}

}  // namespace egal::cuda
