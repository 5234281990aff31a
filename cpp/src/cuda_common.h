// Helpers of the CUDA backend's kernels (score_cuda.cu, roi_projection_cuda.cu): error checks, block
// reductions, boxes as pixel ranges and the shared-memory opt-in. Internal to the backends.
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
