// The backends behind egal::score and egal::project_roi (dispatch.cpp picks one).
// Internal: callers use the entry points of include/egal/score.h, which check the
// inputs first.
#pragma once
#include <cstdint>

#include "egal/score.h"

namespace egal {

void score_cpu(const ScoreInputs& in, const ScoreOutputs& out);
void project_roi_cpu(const ScoreInputs& in, int64_t cam_height, int64_t cam_width, const ProjectionOutputs& out);
// Built from score_launch_cuda.cu, or from cuda_unavailable.cpp (which throws) without CUDA.
void score_cuda(const ScoreInputs& in, const ScoreOutputs& out);

// The CUDA passes set_cuda_roi_pass / set_cuda_map_pass chose, for the launcher to branch on (their names, in
// this order, are dispatch.cpp's; the first is the default).
enum class CudaRoiPass { Projection, PerPixel, VectorProjection };
enum class CudaMapPass { CellBlocks, ChannelWarps, ChannelTiles };
CudaRoiPass chosen_cuda_roi_pass();
CudaMapPass chosen_cuda_map_pass();

}  // namespace egal
