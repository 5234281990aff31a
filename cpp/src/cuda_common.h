// Helpers of the CUDA backend's kernels (score_cuda.cu, roi_projection_cuda.cu): error checks, block
// reductions and the shared-memory opt-in. Internal to the backends.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <stdexcept>
#include <string>

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
