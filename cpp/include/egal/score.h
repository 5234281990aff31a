// The fused EG-AL scorer: C++ API, free of Python. The score is defined in docs/scoring.md.
#pragma once
#include <cstdint>
#include <string>

#include "egal/tensor_view.h"

namespace egal {

enum class RoiKind : uint8_t { Masks, Boxes, Projected };

struct ScoreInputs {
  TensorView activations;  // [B, K, h, w] float32 / float16 / bfloat16
  TensorView gradients;    // [B, K, h, w] same dtype as activations; or absent
  TensorView weights;      // [B, K] float32 / float16 / bfloat16; or absent
  TensorView logits;       // [B, C] float32 / float16
  RoiKind roi_kind = RoiKind::Masks;
  TensorView masks;        // [B, H, W] bool / uint8 (0/1) / float16 / float32 in [0, 1]
  TensorView boxes;        // [B, N, 4] float32 (x0, y0, x1, y1), NaN rows are padding
  TensorView roi_weights;  // [B, h, w] float32, R_y^T M R_x
  TensorView roi_area;     // [B] float32, sum of M
  int64_t roi_height = 0;  // H
  int64_t roi_width = 0;   // W
  float alpha = 0.5f;
};

// Per-sample status bits, so one bad sample never disturbs the others.
enum StatusBits : int32_t {
  kStatusOk = 0,
  kStatusNonFinite = 1,  // NaN/Inf in this sample's activations, weights or logits
  kStatusBadMask = 2,    // a mask value outside [0, 1], or a ROI whose Dice sums no such mask gives
};

// Masks in [0, 1] and a normalised map in [0, 1] keep the Dice sums at 0 <= I <= min(SU, SM), so that D is in
// [0, 1]; a sample whose I passes min(SU, SM) by more than kDiceSumsTolerance (SU + SM) gets kStatusBadMask (a
// projected ROI whose weights are no projection of such masks: not consistent with its area). Rounding alone
// passes it by far less: the sums are taken in float64, but of float32 values (a projected ROI's weights and
// area, the interpolation tables on the GPU) and of float32 partial sums (the projections, over a band of
// mask rows and a run of mask columns; the CUDA per-pixel pass, over H W / 256 pixels a thread). Over masks
// of every dtype, soft masks, boxes and projections, with every mask at 1 (I = SU) or inside a map at 1 (I =
// SM), maps of 1 x 1 to 96 x 96 on ROIs of up to 2048 x 2048 and every pass, I passed min(SU, SM) by at most
// 1.3e-7 (SU + SM) with the projections and 1.0e-6 with the per-pixel pass (boxes, 2048 x 2048). The
// tolerance leaves two orders of magnitude above that, and lets an accepted sample's D fall below 0 by 2e-4
// at most.
constexpr double kDiceSumsTolerance = 1e-4;

// Host buffers of B elements each (cam: B * h * w, or null).
struct ScoreOutputs {
  int64_t* pred = nullptr;
  float* entropy = nullptr;
  float* entropy_norm = nullptr;
  float* misalignment = nullptr;
  float* score = nullptr;
  float* cam = nullptr;
  int32_t* status = nullptr;
};

// Host buffers: weights [B, h, w], area [B], status [B].
struct ProjectionOutputs {
  float* weights = nullptr;
  float* area = nullptr;
  int32_t* status = nullptr;
};

// Dispatch on the device of the inputs. Inputs are assumed validated by the
// caller (shapes agree, dtypes supported, one device); device errors throw.
void score(const ScoreInputs& in, const ScoreOutputs& out);
void project_roi(const ScoreInputs& in, int64_t cam_height, int64_t cam_width, const ProjectionOutputs& out);

bool cuda_compiled();
// Number of usable CUDA devices; 0 with a reason when none.
int cuda_device_count(std::string* why_not);
int cpu_threads();
// The vector instruction set of the CPU kernels: "baseline" (x86-64 SSE2, or the
// build's target elsewhere), "avx2" or "avx512"; the best this CPU supports unless
// set_cpu_isa chose a narrower one (tests and benchmarks; throws std::invalid_argument
// for an unknown name or one the CPU lacks).
const char* cpu_isa();
const char* best_cpu_isa();
void set_cpu_isa(const std::string& name);

// How the CUDA backend reads masks and boxes: "projection" (the default) projects each ROI onto the Grad-CAM
// grid in a pass of its own, at a cost set by the ROI's size alone, then scores against the projection;
// "per-pixel" upsamples the map at each ROI pixel inside the scoring kernel (the backend before 2026-11-27,
// kept so that tests and benchmarks compare the two); "vector-projection" is the projection with four mask
// columns a thread and vector loads (opt-in: on an H200 faster with masks at large B, slower with boxes). Throws
// std::invalid_argument for another name.
const char* cuda_roi_pass();
void set_cuda_roi_pass(const std::string& name);
const char* default_cuda_roi_pass();

// How the CUDA backend computes the channel weights and the raw map (steps 2-3): "cell-blocks" (the default)
// streams a map of at most 256 cells whose [K, h, w] block per sample is contiguous through shared memory in
// tiles of channels, with 16-byte loads, and shares a larger map out to blocks of 256 cells, after a warp a
// channel for the gradient means; "channel-warps" gives a sample one block, each channel a warp, then each map
// cell a group of threads; "channel-tiles" takes the small maps' tiles alone (larger maps take channel warps).
// Tiles and cell blocks take the projection ROI passes only (masks and boxes under "per-pixel", and small maps
// not contiguous per sample, take channel warps). Throws std::invalid_argument for another name.
const char* cuda_map_pass();
void set_cuda_map_pass(const std::string& name);
const char* default_cuda_map_pass();

}  // namespace egal
