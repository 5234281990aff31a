// The CUDA backend's scoring pass (score_cuda.cu) as its launcher (score_launch_cuda.cu) sees it: the scoring
// kernels' arguments, where they take steps 2-3 from, and the call that launches them. Internal to the backends.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cell_blocks_cuda.cuh"
#include "channel_tiles_cuda.cuh"
#include "egal/score.h"
#include "roi_projection_cuda.h"

namespace egal {
namespace cuda {

// Everything the scoring kernels read: the inputs in device memory with their strides, the interpolation
// tables, the workspaces and the outputs.
struct ScoreArgs {
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

// How the scoring kernel gets steps 2-3: a warp per channel, then threads per map cell (ChannelWarps); channel
// tiles in this block (ChannelTiles); the sums that channel_split_kernel's blocks left (SplitSums); or the map
// that cell_map_kernel's blocks left in the workspace (CellBlocks).
enum class MapSource { ChannelWarps, ChannelTiles, SplitSums, CellBlocks };

}  // namespace cuda

// Scores the B samples of `args` on `stream`: the kernels that `source` takes steps 2-3 from (with cell blocks,
// channel_means_kernel and cell_map_kernel over `cell_args`; with split sums, channel_split_kernel), then
// score_kernel. `features`: the activations' dtype; `device`: the GPU, whose shared memory the kernels may opt
// in to.
void launch_scoring(const cuda::ScoreArgs& args, const cuda::CellBlockArgs& cell_args, cuda::MapSource source,
                    int64_t B, DType features, int device, cudaStream_t stream);

}  // namespace egal
