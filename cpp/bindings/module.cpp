// Thin pybind11 layer: DLPack capsules in, numpy arrays out. No logic lives here
// beyond translating Python objects to egal::TensorView and back.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "egal/dlpack.h"
#include "egal/score.h"

namespace py = pybind11;
using egal::DType;
using egal::TensorView;

namespace {

constexpr const char* kCapsuleName = "dltensor";

DLManagedTensor* managed_tensor(const py::capsule& capsule, const std::string& name) {
  if (std::string(capsule.name() ? capsule.name() : "") != kCapsuleName)
    throw py::value_error(name + ": expected an unconsumed DLPack capsule named 'dltensor'");
  return capsule.get_pointer<DLManagedTensor>();
}

std::optional<DType> dtype_of(const DLDataType& t) {
  if (t.lanes != 1) return std::nullopt;
  if (t.code == kDLFloat && t.bits == 32) return DType::Float32;
  if (t.code == kDLFloat && t.bits == 16) return DType::Float16;
  if (t.code == kDLBfloat && t.bits == 16) return DType::BFloat16;
  if (t.code == kDLUInt && t.bits == 8) return DType::UInt8;
  if (t.code == kDLBool && t.bits == 8) return DType::Bool;
  return std::nullopt;
}

std::string dtype_string(const DLDataType& t) {
  if (auto d = dtype_of(t)) return egal::dtype_name(*d);
  const char* kinds[] = {"int", "uint", "float", "opaque", "bfloat", "complex", "bool"};
  std::string kind = t.code < 7 ? kinds[t.code] : "code" + std::to_string(t.code);
  return kind + std::to_string(t.bits) + (t.lanes != 1 ? "x" + std::to_string(t.lanes) : "");
}

std::string device_string(const DLDevice& d) {
  switch (d.device_type) {
    case kDLCPU: return "cpu";
    case kDLCUDA: return "cuda";
    case kDLCUDAHost: return "cuda_host";
    case kDLCUDAManaged: return "cuda_managed";
    case kDLROCM: return "rocm";
    case kDLMetal: return "mps";
    default: return "device" + std::to_string(static_cast<int>(d.device_type));
  }
}

// A producer's tensor as the kernels may read it: no negative extent, and data
// behind any element (DLPack allows a null pointer for an empty tensor only).
const DLTensor& checked_tensor(const py::capsule& capsule, const std::string& name) {
  const DLTensor& t = managed_tensor(capsule, name)->dl_tensor;
  if (t.ndim < 0 || (t.ndim > 0 && !t.shape)) throw py::value_error(name + ": the DLPack tensor has no shape");
  bool empty = false;
  for (int d = 0; d < t.ndim; ++d) {
    if (t.shape[d] < 0) throw py::value_error(name + ": the DLPack tensor has a negative extent");
    empty = empty || t.shape[d] == 0;
  }
  if (!t.data && !empty) throw py::value_error(name + ": the DLPack tensor has elements but no data (a null pointer)");
  return t;
}

// (shape, dtype name, device name, device id): what the Python checks need.
py::tuple describe(const py::capsule& capsule, const std::string& name) {
  const DLTensor& t = checked_tensor(capsule, name);
  py::tuple shape(t.ndim);
  for (int d = 0; d < t.ndim; ++d) shape[d] = t.shape[d];
  return py::make_tuple(shape, dtype_string(t.dtype), device_string(t.device), t.device.device_id);
}

TensorView view_of(const py::object& maybe_capsule, const std::string& name, int rank) {
  TensorView view;
  if (maybe_capsule.is_none()) return view;
  const DLTensor& t = checked_tensor(maybe_capsule.cast<py::capsule>(), name);
  auto dtype = dtype_of(t.dtype);
  if (!dtype) throw py::type_error(name + ": unsupported dtype " + dtype_string(t.dtype));
  if (t.ndim != rank) throw py::value_error(name + ": expected rank " + std::to_string(rank));
  if (t.device.device_type == kDLCPU) {
    view.device = egal::Device::CPU;
  } else if (t.device.device_type == kDLCUDA) {
    view.device = egal::Device::CUDA;
  } else {
    throw py::value_error(name + ": unsupported device " + device_string(t.device));
  }
  view.device_id = t.device.device_id;
  view.dtype = *dtype;
  view.rank = rank;
  view.data = static_cast<const char*>(t.data) + t.byte_offset;
  int64_t compact = 1;
  for (int d = rank - 1; d >= 0; --d) {
    view.shape[d] = t.shape[d];
    view.stride[d] = t.strides ? t.strides[d] : compact;
    compact *= t.shape[d];
  }
  view.present = true;
  return view;
}

template <class T>
py::array_t<T> empty(std::vector<py::ssize_t> shape) {
  return py::array_t<T>(shape);
}

// A misspelt kind must not fall through to another layout of the same bytes.
egal::RoiKind roi_kind_of(const std::string& name) {
  if (name == "masks") return egal::RoiKind::Masks;
  if (name == "boxes") return egal::RoiKind::Boxes;
  if (name == "projected") return egal::RoiKind::Projected;
  throw py::value_error("roi_kind must be 'masks', 'boxes' or 'projected', got '" + name + "'");
}

py::dict score(py::object activations, py::object gradients, py::object weights, py::object logits,
               const std::string& roi_kind, py::object masks, py::object boxes, py::object roi_weights,
               py::object roi_area, int64_t roi_height, int64_t roi_width, float alpha, bool return_cam) {
  egal::ScoreInputs in;
  in.activations = view_of(activations, "activations", 4);
  in.gradients = view_of(gradients, "gradients", 4);
  in.weights = view_of(weights, "weights", 2);
  in.logits = view_of(logits, "logits", 2);
  in.roi_kind = roi_kind_of(roi_kind);
  in.masks = view_of(masks, "masks", 3);
  in.boxes = view_of(boxes, "boxes", 3);
  in.roi_weights = view_of(roi_weights, "roi.weights", 3);
  in.roi_area = view_of(roi_area, "roi.area", 1);
  in.roi_height = roi_height;
  in.roi_width = roi_width;
  in.alpha = alpha;

  const py::ssize_t B = in.activations.shape[0];
  auto pred = empty<int64_t>({B});
  auto entropy = empty<float>({B}), entropy_norm = empty<float>({B});
  auto misalignment = empty<float>({B}), score = empty<float>({B});
  auto status = empty<int32_t>({B});
  py::object cam = py::none();
  egal::ScoreOutputs out{pred.mutable_data(),         entropy.mutable_data(), entropy_norm.mutable_data(),
                         misalignment.mutable_data(), score.mutable_data(),   nullptr,
                         status.mutable_data()};
  if (return_cam) {
    auto cam_array = empty<float>({B, in.activations.shape[2], in.activations.shape[3]});
    out.cam = cam_array.mutable_data();
    cam = cam_array;
  }
  {
    py::gil_scoped_release release;
    egal::score(in, out);
  }
  py::dict result;
  result["pred"] = pred;
  result["entropy"] = entropy;
  result["entropy_norm"] = entropy_norm;
  result["misalignment"] = misalignment;
  result["score"] = score;
  result["cam"] = cam;
  result["status"] = status;
  return result;
}

py::tuple project(py::object masks, py::object boxes, int64_t roi_height, int64_t roi_width, int64_t cam_height,
                  int64_t cam_width) {
  egal::ScoreInputs in;
  in.roi_kind = masks.is_none() ? egal::RoiKind::Boxes : egal::RoiKind::Masks;
  in.masks = view_of(masks, "masks", 3);
  in.boxes = view_of(boxes, "boxes", 3);
  in.roi_height = roi_height;
  in.roi_width = roi_width;
  const py::ssize_t B = (masks.is_none() ? in.boxes : in.masks).shape[0];
  auto weights = empty<float>({B, static_cast<py::ssize_t>(cam_height), static_cast<py::ssize_t>(cam_width)});
  auto area = empty<float>({B});
  auto status = empty<int32_t>({B});
  egal::ProjectionOutputs out{weights.mutable_data(), area.mutable_data(), status.mutable_data()};
  {
    py::gil_scoped_release release;
    egal::project_roi(in, cam_height, cam_width, out);
  }
  return py::make_tuple(weights, area, status);
}

// A non-owning capsule over memory some other object owns (an onnxruntime
// OrtValue, say); `owner` stays referenced until the consumer releases it.
struct BorrowedTensor {
  DLManagedTensor managed{};
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
  PyObject* owner = nullptr;
};

py::capsule borrow(py::object owner, uintptr_t data, std::vector<int64_t> shape,
                   std::optional<std::vector<int64_t>> strides, int code, int bits, int device_type, int device_id) {
  if (strides && strides->size() != shape.size()) throw py::value_error("borrow: strides must match shape");
  auto* borrowed = new BorrowedTensor;
  borrowed->shape = std::move(shape);
  if (strides) borrowed->strides = std::move(*strides);
  borrowed->owner = owner.inc_ref().ptr();
  DLTensor& t = borrowed->managed.dl_tensor;
  t.data = reinterpret_cast<void*>(data);
  t.device = {static_cast<DLDeviceType>(device_type), device_id};
  t.ndim = static_cast<int32_t>(borrowed->shape.size());
  t.dtype = {static_cast<uint8_t>(code), static_cast<uint8_t>(bits), 1};
  t.shape = borrowed->shape.data();
  t.strides = borrowed->strides.empty() ? nullptr : borrowed->strides.data();
  t.byte_offset = 0;
  borrowed->managed.manager_ctx = borrowed;
  borrowed->managed.deleter = [](DLManagedTensor* self) {
    auto* b = static_cast<BorrowedTensor*>(self->manager_ctx);
    {
      py::gil_scoped_acquire gil;
      Py_XDECREF(b->owner);
    }
    delete b;
  };
  // A consumer that takes ownership renames the capsule and calls the deleter
  // itself; otherwise the capsule's destructor does.
  return py::capsule(&borrowed->managed, kCapsuleName, [](PyObject* capsule) {
    if (PyCapsule_IsValid(capsule, kCapsuleName)) {
      auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, kCapsuleName));
      managed->deleter(managed);
    }
  });
}

py::dict backends() {
  std::string why;
  const int devices = egal::cuda_device_count(&why);
  py::dict cuda;
  cuda["compiled"] = egal::cuda_compiled();
  cuda["devices"] = devices;
  cuda["available"] = devices > 0;
  cuda["reason"] = devices > 0 ? py::none() : py::object(py::str(why));
  cuda["roi_pass"] = egal::cuda_roi_pass();
  cuda["map_pass"] = egal::cuda_map_pass();
  cuda["default_roi_pass"] = egal::default_cuda_roi_pass();
  cuda["default_map_pass"] = egal::default_cuda_map_pass();
  py::dict cpu;
  cpu["compiled"] = true;
  cpu["available"] = true;
  cpu["threads"] = egal::cpu_threads();
  cpu["isa"] = egal::cpu_isa();
  py::dict result;
  result["cpu"] = cpu;
  result["cuda"] = cuda;
  return result;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "egal's compiled scorer (CPU and, when built, CUDA). Use the egal package, not this module.";
  m.def("describe", &describe, py::arg("capsule"), py::arg("name"));
  m.def("score", &score, py::arg("activations"), py::arg("gradients"), py::arg("weights"), py::arg("logits"),
        py::arg("roi_kind"), py::arg("masks"), py::arg("boxes"), py::arg("roi_weights"), py::arg("roi_area"),
        py::arg("roi_height"), py::arg("roi_width"), py::arg("alpha"), py::arg("return_cam"));
  m.def("project", &project, py::arg("masks"), py::arg("boxes"), py::arg("roi_height"), py::arg("roi_width"),
        py::arg("cam_height"), py::arg("cam_width"));
  m.def("borrow", &borrow, py::arg("owner"), py::arg("data"), py::arg("shape"), py::arg("strides"), py::arg("code"),
        py::arg("bits"), py::arg("device_type"), py::arg("device_id"));
  m.def("backends", &backends);
  // The per-sample status bits, so that Python reads them from the one place they are defined.
  m.attr("STATUS_NON_FINITE") = static_cast<int>(egal::kStatusNonFinite);
  m.attr("STATUS_BAD_MASK") = static_cast<int>(egal::kStatusBadMask);
  m.attr("DICE_SUMS_TOLERANCE") = egal::kDiceSumsTolerance;  // what sets STATUS_BAD_MASK for a projected ROI
  // For tests and benchmarks: the CPU kernels' instruction set ("baseline", "avx2",
  // "avx512"), and a narrower one than the CPU's best on request.
  m.def("cpu_isa", [] { return std::string(egal::cpu_isa()); });
  m.def("best_cpu_isa", [] { return std::string(egal::best_cpu_isa()); });
  m.def("set_cpu_isa", &egal::set_cpu_isa, py::arg("name"));  // std::invalid_argument -> ValueError
  // The CUDA backend's ROI pass ("projection", the default, or "per-pixel"), for the same purpose.
  m.def("cuda_roi_pass", [] { return std::string(egal::cuda_roi_pass()); });
  m.def("set_cuda_roi_pass", &egal::set_cuda_roi_pass, py::arg("name"));
  // Its map pass ("cell-blocks", the default, "channel-warps" or "channel-tiles"), likewise.
  m.def("cuda_map_pass", [] { return std::string(egal::cuda_map_pass()); });
  m.def("set_cuda_map_pass", &egal::set_cuda_map_pass, py::arg("name"));
}
