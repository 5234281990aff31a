// A non-owning, framework-free view of one input array: what the kernels read.
#pragma once
#include <cstdint>
#include <string>

namespace egal {

enum class DType : uint8_t { Float32, Float16, BFloat16, UInt8, Bool };
enum class Device : uint8_t { CPU, CUDA };

constexpr int kMaxRank = 4;

struct TensorView {
  const void* data = nullptr;
  DType dtype = DType::Float32;
  Device device = Device::CPU;
  int device_id = 0;
  int rank = 0;
  int64_t shape[kMaxRank] = {0, 0, 0, 0};
  int64_t stride[kMaxRank] = {0, 0, 0, 0};  // in elements, any sign
  bool present = false;

  int64_t size(int d) const { return shape[d]; }
};

const char* dtype_name(DType dtype);

}  // namespace egal
