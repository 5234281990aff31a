// The CUDA backend's ROI pass (roi_projection_cuda.cu), called by score_launch_cuda.cu. Internal to the backends.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "egal/score.h"

namespace egal {

// The interpolation tables of one call (interpolation.h) in device memory: mask rows H -> CAM rows h and
// mask columns W -> CAM columns w.
struct DeviceTables {
  const int32_t* row_lo;     // [H]
  const int32_t* row_hi;     // [H]
  const float* row_t;        // [H]
  const int32_t* col_lo;     // [W]
  const int32_t* col_hi;     // [W]
  const float* col_t;        // [W]
  const float* row_sum;      // [h]
  const float* col_sum;      // [w]
  const int32_t* col_first;  // [w] the mask columns [col_first, col_end) that CAM column j takes a share of
  const int32_t* col_end;    // [w]
};

// Projects in's masks or boxes onto the h x w Grad-CAM grid on `stream`: weights [B, h, w] = R_y^T M R_x and
// area [B] = sum M, both in device memory, as egal.project_roi computes them on the CPU. A sample whose mask
// holds a value outside [0, 1] gets area NaN, which the scoring kernel reports as a bad mask. four_columns: a
// thread owns four mask columns instead of one (the "vector-projection" pass).
void launch_roi_projection(const ScoreInputs& in, int64_t h, int64_t w, const DeviceTables& tables, float* weights,
                           float* area, bool four_columns, cudaStream_t stream);

}  // namespace egal
