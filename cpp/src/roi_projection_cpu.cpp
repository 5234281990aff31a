#include "roi_projection_cpu.h"

#include <algorithm>
#include <vector>

#include "backends.h"
#include "parallel_errors.h"
#include "score_math.h"

namespace egal::cpu {

ProjectionPlan::ProjectionPlan(int64_t H, int64_t W, int64_t h, int64_t w, RoiKind kind) : rows(H, h), cols(W, w) {
  if (kind == RoiKind::Masks) {
    row_bands = RowBands(rows);
    col_blocks = ColumnBlocks(cols);
  } else if (kind == RoiKind::Boxes) {
    row_prefix = rows.prefix_sums();
    col_prefix = cols.prefix_sums();
  }
}

// The union of boxes is cut along all box edges into cells; each covered cell is
// a rectangle whose projection is outer(row sums, column sums) from prefix sums.
// No H x W mask is built, and overlapping boxes count once. Which cells are covered
// is kept row by row of cells, each box added where its top edge is and removed at
// its bottom edge: O(N^2) cell updates for N boxes (testing every box against every
// cell was O(N^3): a minute for 2,000 boxes).
double project_boxes(const TensorView& boxes, int64_t b, const ProjectionPlan& plan, ProjectionScratch& scratch,
                     double* projection) {
  const int64_t H = plan.rows.out_size, W = plan.cols.out_size;
  const int64_t h = plan.rows.in_size, w = plan.cols.in_size;
  std::fill(projection, projection + h * w, 0.0);
  const float* base = static_cast<const float*>(boxes.data) + b * boxes.stride[0];
  const int64_t N = boxes.shape[1];

  auto& ranges = scratch.box_ranges;  // x_first, x_last, y_first, y_last per valid box
  ranges.clear();
  scratch.xs.clear();
  scratch.ys.clear();
  for (int64_t n = 0; n < N; ++n) {
    const float* box = base + n * boxes.stride[1];
    math::PixelBox r;
    if (!math::box_pixels(box[0], box[boxes.stride[2]], box[2 * boxes.stride[2]], box[3 * boxes.stride[2]], H, W, &r))
      continue;
    ranges.insert(ranges.end(), {r.x_first, r.x_last, r.y_first, r.y_last});
    scratch.xs.insert(scratch.xs.end(), {r.x_first, r.x_last});
    scratch.ys.insert(scratch.ys.end(), {r.y_first, r.y_last});
  }
  if (ranges.empty()) return 0.0;
  for (auto* edges : {&scratch.xs, &scratch.ys}) {
    std::sort(edges->begin(), edges->end());
    edges->erase(std::unique(edges->begin(), edges->end()), edges->end());
  }

  const int64_t valid = static_cast<int64_t>(ranges.size() / 4);
  auto index_of = [](const std::vector<int64_t>& edges, int64_t x) {
    return static_cast<int64_t>(std::lower_bound(edges.begin(), edges.end(), x) - edges.begin());
  };
  auto& cells = scratch.box_cells;  // x_first, x_last, y_first, y_last of each box as edge indices
  cells.resize(ranges.size());
  for (size_t k = 0; k < ranges.size(); k += 4) {
    cells[k] = index_of(scratch.xs, ranges[k]);
    cells[k + 1] = index_of(scratch.xs, ranges[k + 1]);
    cells[k + 2] = index_of(scratch.ys, ranges[k + 2]);
    cells[k + 3] = index_of(scratch.ys, ranges[k + 3]);
  }
  auto& cover = scratch.cover;
  cover.assign(scratch.xs.size() - 1, 0);
  scratch.cell_row.resize(static_cast<size_t>(w));
  double* x_weights = scratch.cell_row.data();
  double area = 0.0;
  for (size_t gy = 0; gy + 1 < scratch.ys.size(); ++gy) {
    const int64_t ya = scratch.ys[gy], yb = scratch.ys[gy + 1];
    for (int64_t k = 0; k < valid; ++k) {  // boxes whose top edge is this row's enter, whose bottom edge is leave
      const int64_t* c = cells.data() + 4 * k;
      const int step = c[2] == static_cast<int64_t>(gy) ? 1 : c[3] == static_cast<int64_t>(gy) ? -1 : 0;
      if (step != 0)
        for (int64_t x = c[0]; x < c[1]; ++x) cover[x] += step;
    }
    std::fill(x_weights, x_weights + w, 0.0);
    int64_t covered_width = 0;
    for (size_t gx = 0; gx + 1 < scratch.xs.size();) {
      auto covered = [&](size_t cell) { return cover[cell] > 0; };
      if (!covered(gx)) {
        ++gx;
        continue;
      }
      size_t run_end = gx + 1;  // merge a run of covered cells into one rectangle
      while (run_end + 1 < scratch.xs.size() && covered(run_end)) ++run_end;
      const int64_t xa = scratch.xs[gx], xb = scratch.xs[run_end];
      const double* p_hi = plan.col_prefix.data() + xb * w;
      const double* p_lo = plan.col_prefix.data() + xa * w;
      for (int64_t j = 0; j < w; ++j) x_weights[j] += p_hi[j] - p_lo[j];
      covered_width += xb - xa;
      gx = run_end;
    }
    if (covered_width == 0) continue;
    area += static_cast<double>(covered_width) * static_cast<double>(yb - ya);
    const double* q_hi = plan.row_prefix.data() + yb * h;
    const double* q_lo = plan.row_prefix.data() + ya * h;
    for (int64_t i = 0; i < h; ++i) {
      const double y_weight = q_hi[i] - q_lo[i];
      if (y_weight == 0.0) continue;
      double* out = projection + i * w;
      for (int64_t j = 0; j < w; ++j) out[j] += y_weight * x_weights[j];
    }
  }
  return area;
}

}  // namespace egal::cpu

namespace egal {

// egal::project_roi on the CPU: each sample's ROI (masks [B, H, W] or boxes [B, N, 4]) onto the h x w grid,
// OpenMP across samples.
void project_roi_cpu(const ScoreInputs& in, int64_t h, int64_t w, const ProjectionOutputs& out) {
  const bool boxes = in.roi_kind == RoiKind::Boxes;
  const TensorView& roi = boxes ? in.boxes : in.masks;
  const int64_t B = roi.shape[0];
  const cpu::ProjectionPlan plan(in.roi_height, in.roi_width, h, w, in.roi_kind);
  ParallelErrors errors;
#pragma omp parallel
  {
    cpu::ProjectionScratch scratch;
    std::vector<double> projection;
    errors.run([&] { projection.resize(static_cast<size_t>(h * w)); });
#pragma omp for schedule(dynamic, 4)
    for (int64_t b = 0; b < B; ++b) {
      errors.run([&] {
        bool bad_mask = false;
        const double area = boxes ? cpu::project_boxes(roi, b, plan, scratch, projection.data())
                                  : cpu::project_mask(roi, b, plan, scratch, projection.data(), &bad_mask);
        std::transform(projection.begin(), projection.end(), out.weights + b * h * w,
                       [](double v) { return static_cast<float>(v); });
        out.area[b] = static_cast<float>(area);
        out.status[b] = bad_mask ? kStatusBadMask : kStatusOk;
      });
    }
  }
  errors.rethrow();
}

}  // namespace egal
