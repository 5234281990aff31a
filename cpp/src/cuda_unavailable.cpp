// Built instead of the CUDA backend (score_launch_cuda.cu and its kernels) when the extension is compiled without
// CUDA.
#include <stdexcept>
#include <string>

#include "backends.h"

namespace egal {

void score_cuda(const ScoreInputs&, const ScoreOutputs&) {
  throw std::runtime_error("this egal build has no CUDA backend (rebuild with nvcc available and EGAL_CUDA=ON)");
}

bool cuda_compiled() { return false; }

int cuda_device_count(std::string* why_not) {
  if (why_not) *why_not = "egal was built without CUDA";
  return 0;
}

}  // namespace egal
