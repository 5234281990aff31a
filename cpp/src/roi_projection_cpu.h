// Projection of one sample's ROI onto the Grad-CAM grid: P = R_y^T M R_x.
#pragma once
#include <cstdint>
#include <vector>

#include "interpolation.h"
#include "egal/score.h"

namespace egal::cpu {

// Tables shared by every sample of a call.
struct ProjectionPlan {
  AxisInterpolation rows;  // H -> h
  AxisInterpolation cols;  // W -> w
  std::vector<double> row_prefix;  // [(H + 1) * h], boxes only
  std::vector<double> col_prefix;  // [(W + 1) * w], boxes only

  ProjectionPlan(int64_t H, int64_t W, int64_t h, int64_t w, bool for_boxes);
};

// Scratch reused across the samples one thread handles.
struct ProjectionScratch {
  std::vector<float> row;        // [w]
  std::vector<double> cell_row;  // [w]
  std::vector<int64_t> xs, ys;   // box edges
  std::vector<int64_t> box_ranges;  // [N * 4] pixel ranges of the valid boxes
};

// Writes projection [h * w] and returns sum(M); sets *bad_mask when a mask value
// is outside [0, 1] (the projection is then meaningless and the caller raises).
double project_mask(const TensorView& masks, int64_t b, const ProjectionPlan& plan, ProjectionScratch& scratch,
                    double* projection, bool* bad_mask);
double project_boxes(const TensorView& boxes, int64_t b, const ProjectionPlan& plan, ProjectionScratch& scratch,
                     double* projection);

}  // namespace egal::cpu
