// Steps 2-3 of the CUDA scoring kernel for small maps (at most 256 cells) whose [K, h, w] block per sample is
// contiguous: the channel weights w_k (gradient means, or given) and the raw map max(0, sum_k w_k A_k).
//
// Why: a warp per channel reduces 49 values of a 7 x 7 map in two loads a lane and five shuffles before its
// next channel, and the block then walks the activations again; on an H100 that kernel waited on loads three
// quarters of the time at a third of the card's bandwidth (bench/README.md, issue 17). Here the block streams
// its sample through shared memory in tiles of whole channels, in 16-byte loads that are coalesced whatever the
// map's size, and issues the next tile's loads before it works on the one it holds. A sample that does not start
// 16-byte aligned (float32 with an odd K * h * w, 16-bit values with K not a multiple of 8, a view with a storage
// offset) is read value by value as each tile is stored, without loads ahead: correct, slower.
//
// A sample of more than kSplitChannels channels is shared out to several blocks, one per kSplitChannels, so that
// a small batch still fills the GPU (one block per sample left three quarters of an H100's block slots empty at
// B = 256); a second kernel adds their sums in order and finishes the sample.
//
// Sums: a channel's values are summed by kTileThreads / channels threads, each over every so many cells, then
// by shuffles; the map by groups of threads over channels, then the groups in order, then the blocks in order.
// Every order is fixed by K and the map's size alone, so a result does not change from run to run or with the
// batch's size (it differs from the other pass and the CPU in the last bits, within the tests' tolerance).
#pragma once
#include <cstdint>

#include "cuda_common.h"
#include "egal/tensor_view.h"
#include "scalar.h"
#include "score_math.h"

namespace egal::cuda {

constexpr int kTileThreads = 256;  // the scoring kernel's block
constexpr int kTileValues = 2048;  // values of one tensor in a tile: channels * h * w at most
constexpr int kMaxTileMap = kTileValues / 8;  // tiles hold 8 channels at least
// Channels a block sums at most: a sample of more is shared out to several blocks, whose sums a second kernel
// adds in order. A multiple of every tile's channels, and a constant: how a sample is split depends on its K
// alone, never on the batch's size.
constexpr int64_t kSplitChannels = 256;

// Channels a tile holds, and the distance between two channels' first values in shared memory.
struct TileLayout {
  int channels = 0, stride = 0;
};

// kTileThreads / channels threads sum a channel (8, 16 or 32), reading its consecutive values; the stride puts
// the channels that one warp reads at once on different shared-memory banks.
inline TileLayout tile_layout(int cells) {
  TileLayout layout;
  layout.channels = cells <= 64 ? 32 : cells <= 128 ? 16 : 8;
  const int per_channel = kTileThreads / layout.channels;
  layout.stride = per_channel == 32 ? cells : cells + ((per_channel - cells % 32) % 32 + 32) % 32;
  return layout;
}

// Whether a [B, K, h, w] view stores each sample's K x h x w values one after another (dimensions of size 1 may
// have any stride).
inline bool block_is_contiguous(const TensorView& view) {
  int64_t expected = 1;
  for (int d = 3; d >= 1; --d) {
    if (view.shape[d] != 1 && view.stride[d] != expected) return false;
    expected *= view.shape[d];
  }
  return true;
}

// A block's shared memory for the tiles, in floats: activations [channels, stride], weights [channels], the raw
// map [cells], then gradients [channels, stride] when the weights are gradient means.
struct TileShared {
  float* activations;
  float* weights;
  float* map;
  float* gradients;
};

__host__ __device__ inline int64_t tile_shared_floats(const TileLayout& layout, int64_t cells, bool gradients) {
  const int64_t values = static_cast<int64_t>(layout.channels) * layout.stride;
  return (gradients ? 2 : 1) * values + layout.channels + cells;
}

__device__ inline TileShared tile_shared(float* shared, const TileLayout& layout, int64_t cells) {
  const int64_t values = static_cast<int64_t>(layout.channels) * layout.stride;
  float* weights = shared + values;
  return {shared, weights, weights + layout.channels, weights + layout.channels + cells};
}

// Channel weights given as [B, K] of a run-time dtype: this sample's row.
struct GivenWeights {
  const void* data;  // null when the weights are gradient means
  DType dtype;
  int64_t offset, stride;
};

struct alignas(16) Vector16 {
  uint32_t word[4];
};

// Values [first, first + count) of one sample's tensor, into a tile: the 16-byte vectors a thread loads ahead
// into registers, and the values no whole vector holds read on storing (a tensor's last few; all of them when the
// sample does not start 16-byte aligned).
template <class T>
struct TileLoads {
  static constexpr int kPerVector = 16 / sizeof(T);
  static constexpr int kVectors = kTileValues / kPerVector / kTileThreads;  // a thread's: 2 float32, 1 half
  Vector16 held[kVectors];

  __device__ __forceinline__ void load(const T* sample, int64_t first, int count, bool vectorised) {
    if (!vectorised) return;
    const Vector16* vectors = reinterpret_cast<const Vector16*>(sample + first);
#pragma unroll
    for (int r = 0; r < kVectors; ++r) {
      const int i = threadIdx.x + r * kTileThreads;
      if (i < count / kPerVector) held[r] = vectors[i];
    }
  }

  // Into tile [channels, layout.stride]: value e of the range is cell e % cells of the range's channel e / cells.
  __device__ __forceinline__ void store(const T* sample, int64_t first, int count, bool vectorised, int cells,
                                        int stride, float* tile) const {
    const int vectors = vectorised ? count / kPerVector : 0;
#pragma unroll
    for (int r = 0; r < kVectors; ++r) {
      const int i = threadIdx.x + r * kTileThreads;
      if (i >= vectors) continue;
      int channel = i * kPerVector / cells, cell = i * kPerVector - channel * cells;
      const T* values = reinterpret_cast<const T*>(&held[r]);
#pragma unroll
      for (int j = 0; j < kPerVector; ++j) {
        tile[channel * stride + cell] = to_float(values[j]);
        if (++cell == cells) cell = 0, ++channel;
      }
    }
    for (int e = vectors * kPerVector + static_cast<int>(threadIdx.x); e < count; e += kTileThreads) {
      const int channel = e / cells;
      tile[channel * stride + e - channel * cells] = to_float(sample[first + e]);
    }
  }
};

// A tile's channel weights into weights[0, here): gradient means (a warp-wide float64 retry where finite values'
// float32 sum overflowed, as channel_mean.h does on the CPU), or the given weights. Flags a non-finite weight.
__device__ __forceinline__ void tile_weights(const float* gradients, const GivenWeights& given, int64_t k0, int here,
                                             int cells, const TileLayout& layout, float* weights, int* flags) {
  const int tid = threadIdx.x;
  if (!gradients) {
    for (int c = tid; c < here; c += kTileThreads) {
      const float w = load_as_float(given.data, given.dtype, given.offset + (k0 + c) * given.stride);
      weights[c] = w;
      if (!isfinite(w)) atomicOr(flags, kStatusNonFinite);
    }
    return;
  }
  const int per_channel = kTileThreads / layout.channels;
  const int c = tid / per_channel, part = tid % per_channel;
  const bool mine = c < here;
  const float* values = gradients + c * layout.stride;
  float sum = 0.0f;
  if (mine)
    for (int p = part; p < cells; p += per_channel) sum += values[p];
  for (int offset = per_channel / 2; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  float mean = sum / static_cast<float>(cells);
  if (__any_sync(0xffffffffu, mine && !isfinite(mean))) {  // every lane: the shuffles need the whole warp
    double wide = 0.0;
    if (mine)
      for (int p = part; p < cells; p += per_channel) wide += values[p];
    for (int offset = per_channel / 2; offset > 0; offset >>= 1) wide += __shfl_xor_sync(0xffffffffu, wide, offset);
    if (!isfinite(mean)) mean = static_cast<float>(wide / static_cast<double>(cells));
  }
  if (mine && part == 0) {
    weights[c] = mean;
    if (!isfinite(mean)) atomicOr(flags, kStatusNonFinite);
  }
}

// Steps 2-3 up to the ReLU for one sample's channels [0, K): sum_k w_k A_k at map cell threadIdx.x (0 in the
// threads past the map's cells). activations, gradients: those channels' [K, cells] values (gradients null when
// the weights are given). partial: [kTileThreads] floats of shared memory. Flags a non-finite weight.
template <class T>
__device__ __forceinline__ float channel_tile_sums(const T* activations, const T* gradients, const GivenWeights& given,
                                                   int64_t K, int cells, const TileLayout& layout,
                                                   const TileShared& tiles, float* partial, int* flags) {
  const int tid = threadIdx.x;
  // A tile starts 16-byte aligned when the first channel does: it starts a multiple of 8 channels later.
  const bool vectorised = reinterpret_cast<uintptr_t>(activations) % 16 == 0 &&
                          (!gradients || reinterpret_cast<uintptr_t>(gradients) % 16 == 0);
  const int64_t tile_count = (K + layout.channels - 1) / layout.channels;
  const auto values_in = [&](int64_t tile) {
    const int64_t left = K - tile * layout.channels;
    return static_cast<int>((left < layout.channels ? left : layout.channels) * cells);
  };
  TileLoads<T> gradient_loads, activation_loads;
  if (gradients) gradient_loads.load(gradients, 0, values_in(0), vectorised);
  activation_loads.load(activations, 0, values_in(0), vectorised);

  // Map cell `cell` is summed by `groups` threads, each over every groups-th channel of a tile.
  const int groups = kTileThreads / cells, group = tid / cells, cell = tid - group * cells;
  float acc = 0.0f;
  for (int64_t t = 0; t < tile_count; ++t) {
    const int64_t first = t * layout.channels * cells;
    const int count = values_in(t), here = count / cells;
    if (gradients) gradient_loads.store(gradients, first, count, vectorised, cells, layout.stride, tiles.gradients);
    activation_loads.store(activations, first, count, vectorised, cells, layout.stride, tiles.activations);
    __syncthreads();
    if (t + 1 < tile_count) {  // in flight while this tile is summed
      const int64_t next = first + static_cast<int64_t>(layout.channels) * cells;
      if (gradients) gradient_loads.load(gradients, next, values_in(t + 1), vectorised);
      activation_loads.load(activations, next, values_in(t + 1), vectorised);
    }
    tile_weights(gradients ? tiles.gradients : nullptr, given, t * layout.channels, here, cells, layout, tiles.weights,
                 flags);
    __syncthreads();
    if (group < groups)
      for (int c = group; c < here; c += groups) acc += tiles.weights[c] * tiles.activations[c * layout.stride + cell];
    __syncthreads();  // the next tile overwrites these
  }
  partial[tid] = group < groups ? acc : 0.0f;
  __syncthreads();
  float v = 0.0f;
  if (tid < cells)
    for (int g = 0; g < groups; ++g) v += partial[g * cells + tid];
  return v;
}

// Step 3's ReLU on a cell's sum (threads past the map's cells hold none): into map [cells], flagging a non-finite
// sum; this thread's minimum and maximum of the map.
__device__ __forceinline__ void raw_map_cell(float sum, int cells, float* map, int* flags, float* local_lo,
                                             float* local_hi) {
  float lo = INFINITY, hi = -INFINITY;
  if (static_cast<int>(threadIdx.x) < cells) {
    if (!isfinite(sum)) atomicOr(flags, kStatusNonFinite);
    const float v = math::relu(sum);
    map[threadIdx.x] = v;
    lo = hi = v;
  }
  *local_lo = lo;
  *local_hi = hi;
}

}  // namespace egal::cuda
