// One entry point per operation; the inputs' device picks the backend.
#include <atomic>
#include <cstddef>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "backends.h"

namespace egal {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "float32";
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
    case DType::UInt8: return "uint8";
    case DType::Bool: return "bool";
  }
  return "unknown";
}

namespace {

// The CUDA passes: an index into each list, the default first, in the order of backends.h's enums.
constexpr const char* kCudaRoiPasses[] = {"projection", "per-pixel", "vector-projection"};
constexpr const char* kCudaMapPasses[] = {"cell-blocks", "channel-warps", "channel-tiles"};
static_assert(std::size(kCudaRoiPasses) == static_cast<size_t>(CudaRoiPass::VectorProjection) + 1);
static_assert(std::size(kCudaMapPasses) == static_cast<size_t>(CudaMapPass::ChannelTiles) + 1);
std::atomic<int> cuda_roi_pass_index{0};
std::atomic<int> cuda_map_pass_index{0};

// Sets `index` to the position of `name` in `passes`; an error that lists them otherwise.
template <size_t kCount>
void choose_pass(const char* const (&passes)[kCount], const std::string& name, const char* what,
                 std::atomic<int>* index) {
  std::string known;
  for (size_t i = 0; i < kCount; ++i) {
    if (name == passes[i]) return void(*index = static_cast<int>(i));
    known += std::string(i == 0 ? "" : i + 1 == kCount ? " or " : ", ") + "\"" + passes[i] + "\"";
  }
  throw std::invalid_argument(std::string("the CUDA ") + what + " pass is " + known + ", not \"" + name + "\"");
}

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

// The Python layer checks everything with friendlier messages first; this is the
// last line that keeps a direct caller of the C++ API from reading out of bounds.
void check_consistent(const ScoreInputs& in) {
  const TensorView& A = in.activations;
  require(A.present && A.rank == 4, "activations must be [B, K, h, w]");
  const int64_t B = A.shape[0], K = A.shape[1], h = A.shape[2], w = A.shape[3];
  require(K >= 1 && h >= 1 && w >= 1, "activations must have K, h, w >= 1");
  require(A.dtype == DType::Float32 || A.dtype == DType::Float16 || A.dtype == DType::BFloat16,
          "activations must be float32, float16 or bfloat16");
  require(in.gradients.present != in.weights.present, "give exactly one of gradients / weights");
  if (in.gradients.present) {
    for (int d = 0; d < 4; ++d) require(in.gradients.shape[d] == A.shape[d], "gradients must match activations' shape");
    require(in.gradients.dtype == A.dtype, "gradients must match activations' dtype");
  } else {
    require(in.weights.rank == 2 && in.weights.shape[0] == B && in.weights.shape[1] == K, "weights must be [B, K]");
    require(in.weights.dtype != DType::UInt8 && in.weights.dtype != DType::Bool, "weights must be floating point");
  }
  require(in.logits.present && in.logits.rank == 2 && in.logits.shape[0] == B && in.logits.shape[1] >= 2,
          "logits must be [B, C] with C >= 2");
  require(in.logits.dtype == DType::Float32 || in.logits.dtype == DType::Float16, "logits must be float32 or float16");
  require(in.roi_height >= 1 && in.roi_width >= 1, "roi size must be positive");
  std::vector<const TensorView*> on_device = {&in.activations, &in.gradients, &in.weights, &in.logits};
  switch (in.roi_kind) {
    case RoiKind::Masks:
      require(in.masks.present && in.masks.rank == 3 && in.masks.shape[0] == B && in.masks.shape[1] == in.roi_height &&
                  in.masks.shape[2] == in.roi_width,
              "masks must be [B, H, W]");
      require(in.masks.dtype == DType::UInt8 || in.masks.dtype == DType::Bool || in.masks.dtype == DType::Float32 ||
                  in.masks.dtype == DType::Float16,
              "masks must be bool, uint8, float16 or float32");
      on_device.push_back(&in.masks);
      break;
    case RoiKind::Boxes:
      require(in.boxes.present && in.boxes.rank == 3 && in.boxes.shape[0] == B && in.boxes.shape[2] == 4,
              "boxes must be [B, N, 4]");
      require(in.boxes.dtype == DType::Float32, "boxes must be float32");
      on_device.push_back(&in.boxes);
      break;
    case RoiKind::Projected:
      require(in.roi_weights.present && in.roi_weights.rank == 3 && in.roi_weights.shape[0] == B &&
                  in.roi_weights.shape[1] == h && in.roi_weights.shape[2] == w,
              "projected roi weights must be [B, h, w]");
      require(in.roi_area.present && in.roi_area.rank == 1 && in.roi_area.shape[0] == B, "roi area must be [B]");
      require(in.roi_weights.dtype == DType::Float32 && in.roi_area.dtype == DType::Float32,
              "projected roi must be float32");
      on_device.push_back(&in.roi_weights);
      on_device.push_back(&in.roi_area);
      break;
  }
  for (const TensorView* view : on_device)
    if (view->present)
      require(view->device == A.device && view->device_id == A.device_id, "all inputs must be on one device");
}

}  // namespace

void score(const ScoreInputs& in, const ScoreOutputs& out) {
  check_consistent(in);
  if (in.activations.device == Device::CUDA) {
    std::string why;
    if (cuda_device_count(&why) == 0)
      throw std::runtime_error("inputs are on a CUDA device but CUDA is unusable: " + why);
    score_cuda(in, out);
  } else {
    score_cpu(in, out);
  }
}

const char* cuda_roi_pass() { return kCudaRoiPasses[cuda_roi_pass_index]; }
void set_cuda_roi_pass(const std::string& name) { choose_pass(kCudaRoiPasses, name, "ROI", &cuda_roi_pass_index); }
const char* default_cuda_roi_pass() { return kCudaRoiPasses[0]; }
CudaRoiPass chosen_cuda_roi_pass() { return static_cast<CudaRoiPass>(cuda_roi_pass_index.load()); }

const char* cuda_map_pass() { return kCudaMapPasses[cuda_map_pass_index]; }
void set_cuda_map_pass(const std::string& name) { choose_pass(kCudaMapPasses, name, "map", &cuda_map_pass_index); }
const char* default_cuda_map_pass() { return kCudaMapPasses[0]; }
CudaMapPass chosen_cuda_map_pass() { return static_cast<CudaMapPass>(cuda_map_pass_index.load()); }

void project_roi(const ScoreInputs& in, int64_t cam_height, int64_t cam_width, const ProjectionOutputs& out) {
  const TensorView& roi = in.roi_kind == RoiKind::Boxes ? in.boxes : in.masks;
  require(roi.present && roi.rank == 3, "masks must be [B, H, W] and boxes [B, N, 4]");
  if (in.roi_kind == RoiKind::Masks)
    require(roi.shape[1] == in.roi_height && roi.shape[2] == in.roi_width, "masks must be [B, H, W]");
  else
    require(roi.shape[2] == 4 && roi.dtype == DType::Float32, "boxes must be float32 [B, N, 4]");
  require(cam_height >= 1 && cam_width >= 1 && in.roi_height >= 1 && in.roi_width >= 1, "sizes must be positive");
  if (roi.device != Device::CPU)
    throw std::invalid_argument("project_roi runs on the CPU: pass masks or boxes in host memory");
  project_roi_cpu(in, cam_height, cam_width, out);
}

}  // namespace egal
