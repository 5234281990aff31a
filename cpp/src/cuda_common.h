// Helpers of the CUDA backend's kernels (score_cuda.cu, roi_projection_cuda.cu, the channel tiles and cell blocks):
// error checks, block reductions, map planes' layout and a warp's channel mean, boxes as pixel ranges and the
// shared-memory opt-in. Internal to the backends.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "score_math.h"

namespace egal::cuda {

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
}

template <class V>
__device__ __forceinline__ V warp_sum(V v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over a block of kWarps warps; every thread gets the result. scratch: [kWarps] in shared memory.
template <int kWarps, class V>
__device__ V block_sum(V v, V* scratch) {
  v = warp_sum(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  V total = 0;
  for (int i = 0; i < kWarps; ++i) total += scratch[i];
  return total;
}

// Minimum over a block of kWarps warps; every thread gets the result. scratch: [kWarps] in shared memory.
template <int kWarps>
__device__ float block_min(float v, float* scratch) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fminf(v, __shfl_down_sync(0xffffffffu, v, offset));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float m = scratch[0];
  for (int i = 1; i < kWarps; ++i) m = fminf(m, scratch[i]);
  return m;
}

// Whether a [B, K, h, w] tensor's (h, w) planes are stored row after row: then cell p is at offset p, and the
// 64-bit division below (tens of instructions per element) is not needed.
__device__ __forceinline__ bool plane_is_contiguous(const int64_t* stride, int64_t w) {
  return stride[3] == 1 && stride[2] == w;
}

// Offset of map cell p = y * w + x within its channel's plane.
__device__ __forceinline__ int64_t plane_offset(int64_t p, int64_t w, const int64_t* stride, bool contiguous) {
  return contiguous ? p : (p / w) * stride[2] + (p % w) * stride[3];
}

// Step 2 for one channel: the mean of its h * w gradients (`stride`: the tensor's), summed by the calling warp
// and returned to every lane. Finite gradients whose float32 sum overflows are summed again in float64, by the
// whole warp, as channel_mean.h does on the CPU.
template <class T>
__device__ __forceinline__ float warp_channel_mean(const T* channel, int64_t hw, int64_t w, const int64_t* stride,
                                                   bool contiguous) {
  const int lane = threadIdx.x % 32;
  float acc = 0.0f;
  // Unrolled so that a large map's channel (50,176 cells at 224 x 224) has its loads in flight.
#pragma unroll 8
  for (int64_t p = lane; p < hw; p += 32) acc += to_float(channel[plane_offset(p, w, stride, contiguous)]);
  float mean = __shfl_sync(0xffffffffu, warp_sum(acc), 0) / static_cast<float>(hw);
  if (!isfinite(mean)) {
    double wide = 0.0;
    for (int64_t p = lane; p < hw; p += 32) wide += to_float(channel[plane_offset(p, w, stride, contiguous)]);
    mean = static_cast<float>(__shfl_sync(0xffffffffu, warp_sum(wide), 0) / static_cast<double>(hw));
  }
  return mean;
}

// One sample's boxes [N, 4] (`box_stride` and `coordinate_stride` apart) as the pixel ranges of those that
// hold a pixel (math::box_pixels), written to ranges [count, 4] (x_first, x_last, y_first, y_last); returns count.
__device__ inline int box_ranges(const float* boxes, int64_t box_stride, int64_t coordinate_stride, int64_t N,
                                 int64_t H, int64_t W, int32_t* ranges) {
  int count = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float* box = boxes + n * box_stride;
    math::PixelBox pixels;
    if (!math::box_pixels(box[0], box[coordinate_stride], box[2 * coordinate_stride], box[3 * coordinate_stride], H, W,
                          &pixels))
      continue;
    int32_t* r = ranges + 4 * count++;
    r[0] = static_cast<int32_t>(pixels.x_first), r[1] = static_cast<int32_t>(pixels.x_last);
    r[2] = static_cast<int32_t>(pixels.y_first), r[3] = static_cast<int32_t>(pixels.y_last);
  }
  return count;
}

// Whether pixel (y, x) lies in any of `count` box ranges; stops at the first that covers it.
__device__ __forceinline__ bool in_box_ranges(const int32_t* ranges, int count, int64_t y, int64_t x) {
  for (int n = 0; n < count; ++n) {
    const int32_t* r = ranges + 4 * n;
    if (r[0] <= x && x < r[1] && r[2] <= y && y < r[3]) return true;
  }
  return false;
}

// Lets `kernel` use `bytes` of dynamic shared memory. Every GPU gives a block 48 KB, its static shared memory
// included; more only after opting in, and never more than this device offers (`what` names the inputs that
// need it in the error).
template <class Kernel>
void allow_shared_memory(Kernel kernel, size_t bytes, int device, const std::string& what) {
  cudaFuncAttributes attributes{};
  check(cudaFuncGetAttributes(&attributes, kernel), "cudaFuncGetAttributes");
  const size_t total = bytes + attributes.sharedSizeBytes;
  if (total <= 48 * 1024) return;
  int device_limit = 0;
  check(cudaDeviceGetAttribute(&device_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "attribute");
  if (total > static_cast<size_t>(device_limit))
    throw std::invalid_argument(what + " need " + std::to_string(total) +
                                " bytes of shared memory, more than this GPU offers");
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
        "cudaFuncSetAttribute");
}

}  // namespace egal::cuda
