// Projection of one sample's ROI onto the Grad-CAM grid: P = R_y^T M R_x
// (docs/scoring.md, "How the fused scorers compute it"). Masks are projected in
// mask_projection_cpu.cpp, boxes in roi_projection_cpu.cpp, which also holds project_roi_cpu (the batch).
#pragma once
#include <cstdint>
#include <vector>

#include "egal/score.h"
#include "interpolation.h"

namespace egal::cpu {

// The horizontal operator R_x in blocks of kBlock CAM columns: block c covers CAM
// columns [c kBlock, (c + 1) kBlock) and the mask columns x in
// [first[c], first[c] + count[c]) that any of them reads, with
// weight[(offset[c] + x - first[c]) kBlock + l] = R_x[x, c kBlock + l] (0 past w).
// A mask row's share of a block is then one multiply-add of kBlock lanes per x:
// one AVX2 register, which a 7 x 7 map's block all but fills (with 16 lanes, 9
// of them multiplied zeros).
struct ColumnBlocks {
  static constexpr int kBlock = 8;
  std::vector<int64_t> first, count, offset;  // [blocks]; offset in rows of kBlock weights
  std::vector<float> weight;

  ColumnBlocks() = default;
  explicit ColumnBlocks(const AxisInterpolation& cols);
};

// The mask rows in bands of consecutive rows that interpolate onto the same two
// CAM rows (lo, hi), at most kMaxRows each: mask row y adds (1 - t[y]) M[y] onto
// CAM row lo and t[y] M[y] onto row hi, or all of M[y] where lo == hi (rows
// clamped to the map's last row, or h == 1). Within a band t is linear,
// t[first + k] = t0 + k dt, so that integer masks can sum k M[first + k] instead
// of multiplying every value by its weight.
struct RowBands {
  static constexpr int64_t kMaxRows = 64;  // bounds the float32 and uint16 partial sums of a band
  struct Band {
    int64_t first, count, lo, hi;
    double t0, dt;
  };
  std::vector<Band> bands;
  std::vector<float> t;  // [H]

  RowBands() = default;
  explicit RowBands(const AxisInterpolation& rows);
};

// Tables shared by every sample of a call, for ROIs of the given kind.
struct ProjectionPlan {
  AxisInterpolation rows;          // H -> h
  AxisInterpolation cols;          // W -> w
  RowBands row_bands;              // masks only
  ColumnBlocks col_blocks;         // masks only
  std::vector<double> row_prefix;  // [(H + 1) * h], boxes only
  std::vector<double> col_prefix;  // [(W + 1) * w], boxes only

  ProjectionPlan(int64_t H, int64_t W, int64_t h, int64_t w, RoiKind kind);
};

// Scratch reused across the samples one thread handles.
struct ProjectionScratch {
  std::vector<float> vertical;      // [h * W], masks: R_y^T M
  std::vector<float> widened_row;   // [W], masks: one row widened to float32
  std::vector<float> column_sums;   // [2 * W], masks read as float rows: a band's S and T
  std::vector<uint8_t> chunk_sums;  // [2 * W], byte masks: a chunk's S_c and R_c
  std::vector<uint16_t> band_sums;  // [2 * W], byte masks: a band's S and K
  std::vector<double> cell_row;     // [w], boxes
  std::vector<int64_t> xs, ys;      // box edges
  std::vector<int64_t> box_ranges;  // [N * 4] pixel ranges of the valid boxes
  std::vector<int64_t> box_cells;   // [N * 4] the same as indices into xs and ys
  std::vector<int32_t> cover;       // [xs - 1] how many boxes cover each cell of the current row of cells
};

// Writes projection [h * w] and returns sum(M); sets *bad_mask when a mask value
// is outside [0, 1] (the projection is then meaningless and the caller raises).
// Reads every mask value once, at a cost that does not depend on the values.
double project_mask(const TensorView& masks, int64_t b, const ProjectionPlan& plan, ProjectionScratch& scratch,
                    double* projection, bool* bad_mask);
double project_boxes(const TensorView& boxes, int64_t b, const ProjectionPlan& plan, ProjectionScratch& scratch,
                     double* projection);

}  // namespace egal::cpu
