// Stand-in for <cuda_runtime.h> that runs the CUDA backend's kernels on the CPU, for tests/test_cuda_emulated.py:
// one block at a time in a shuffled order (a GPU promises none, so a kernel that needs one shows, and so may a
// block that writes over another's outputs), each CUDA thread an OS thread; __syncthreads is a barrier over the
// block, a warp shuffle a barrier over its warp. Device memory and dynamic shared memory start as all-ones bytes
// (NaN as floats), so a value read before it is written shows in the result. It checks the kernels' logic (index
// arithmetic, tiles, reductions, the order of barriers: a shuffle or barrier that not every thread reaches hangs
// here as it would on a GPU); the test builds the kernels with -fsanitize=alignment, which catches a vector load
// that is not aligned (x86 itself would not fault), and -fsanitize=thread on a build of one's own finds races
// between barriers. What it cannot show: static __shared__ variables start at zero here and keep their values
// from block to block, blocks never run side by side, and nothing of the hardware's speed, resources or memory
// model. Only what the kernels use is here; tests/test_cuda_emulated.py rewrites the two pieces of CUDA syntax
// C++ cannot take (launches and extern __shared__).
#pragma once
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

using std::isfinite;
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

namespace emu {
struct Block {
  explicit Block(unsigned threads, size_t shared_bytes)
      : all(threads), exchange((threads + 31) / 32 * 32), shared(shared_bytes, 0xFF) {
    for (unsigned w = 0; w < (threads + 31) / 32; ++w) warps.emplace_back(std::make_unique<std::barrier<>>(32));
  }
  std::barrier<> all;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<double> exchange;
  std::atomic<int> vote{0};
  std::vector<unsigned char> shared;
};
inline Block* block = nullptr;
inline std::atomic<long> launches{0};

template <class T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(block->shared.data());
}

template <class V>
V shuffle_from(V v, int source) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  double* slots = block->exchange.data() + warp * 32;
  std::memcpy(&slots[lane], &v, sizeof v);
  block->warps[warp]->arrive_and_wait();
  V r;
  std::memcpy(&r, &slots[source], sizeof r);
  block->warps[warp]->arrive_and_wait();
  return r;
}

template <class Kernel>
struct Launch {
  Kernel kernel;
  dim3 grid, threads;
  size_t shared_bytes;
  template <class... Args>
  void operator()(Args... args) const {
    if (threads.y != 1 || threads.z != 1 || grid.y != 1 || grid.z != 1 || threads.x % 32) std::abort();
    blockDim = threads, gridDim = grid;
    std::vector<unsigned> order(grid.x);
    std::iota(order.begin(), order.end(), 0u);
    std::shuffle(order.begin(), order.end(), std::mt19937(static_cast<unsigned>(++launches)));
    for (const unsigned b : order) {
      Block one(threads.x, shared_bytes);
      block = &one;
      std::vector<std::thread> pool;
      for (unsigned t = 0; t < threads.x; ++t)
        pool.emplace_back([&, t] {
          threadIdx.x = t, blockIdx.x = b;
          kernel(args...);
        });
      for (auto& th : pool) th.join();
      block = nullptr;
    }
  }
};
template <class Kernel>
Launch<Kernel> launch(Kernel kernel, dim3 grid, dim3 threads, size_t shared_bytes = 0, void* = nullptr) {
  return {kernel, grid, threads, shared_bytes};
}
}  // namespace emu

inline void __syncthreads() { emu::block->all.arrive_and_wait(); }
inline int __syncthreads_or(int predicate) {
  __syncthreads();
  if (threadIdx.x == 0) emu::block->vote = 0;
  __syncthreads();
  if (predicate) emu::block->vote = 1;
  __syncthreads();
  const int r = emu::block->vote;
  __syncthreads();
  return r;
}
template <class V>
V __shfl_down_sync(unsigned, V v, unsigned delta, int width = 32) {
  const int lane = threadIdx.x % 32;
  const int source = lane % width + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : lane;
  return emu::shuffle_from(v, source);
}
template <class V>
V __shfl_xor_sync(unsigned, V v, int mask, int width = 32) {
  const int lane = threadIdx.x % 32;
  const int source = (lane ^ mask) / width == lane / width ? lane ^ mask : lane;
  return emu::shuffle_from(v, source);
}
template <class V>
V __shfl_sync(unsigned, V v, int source_lane, int width = 32) {
  const int lane = threadIdx.x % 32;
  return emu::shuffle_from(v, lane / width * width + source_lane % width);
}
inline int __any_sync(unsigned, int predicate) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  double* slots = emu::block->exchange.data() + warp * 32;
  slots[lane] = predicate ? 1.0 : 0.0;
  emu::block->warps[warp]->arrive_and_wait();
  int any = 0;
  for (int i = 0; i < 32; ++i) any |= slots[i] != 0.0;
  emu::block->warps[warp]->arrive_and_wait();
  return any;
}
inline int atomicOr(int* p, int v) { return std::atomic_ref<int>(*p).fetch_or(v); }
inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
using cudaStream_t = void*;
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
struct cudaFuncAttributes {
  size_t sharedSizeBytes = 0;
};
inline const char* cudaGetErrorString(cudaError_t) { return "emulated error"; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) { return *d = 0, cudaSuccess; }
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* n) { return *n = 1, cudaSuccess; }
inline cudaError_t cudaMallocAsync(void** p, size_t n, cudaStream_t) {
  *p = std::malloc(n + 1);
  std::memset(*p, 0xFF, n);  // NaN as floats: a value read before it is written shows
  return cudaSuccess;
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return std::free(p), cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) {
  return std::memcpy(d, s, n), cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
template <class K>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, K) {
  return a->sharedSizeBytes = 2048, cudaSuccess;
}
template <class K>
cudaError_t cudaFuncSetAttribute(K, cudaFuncAttribute, int) {
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) { return *v = 227 * 1024, cudaSuccess; }
