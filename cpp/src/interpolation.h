// Bilinear upsampling (align_corners=False) along one axis, as docs/scoring.md
// step 5: host-side tables that both backends read. Internal to the backends.
#pragma once
#include <cstdint>
#include <vector>

namespace egal {

// For each output pixel y in [0, out): the two source indices and the weight
// of the second one: U[y] = (1 - t) * src[lo] + t * src[hi].
struct AxisInterpolation {
  int64_t out_size = 0;
  int64_t in_size = 0;
  std::vector<int32_t> lo;    // [out]
  std::vector<int32_t> hi;    // [out]
  std::vector<float> t;       // [out]
  std::vector<double> column_sum;  // [in], sum over y of the operator's column: R^T 1

  AxisInterpolation(int64_t out, int64_t in);

  // Prefix sums over output pixels of the operator's columns, [(out + 1) * in]:
  // rows [a, b) of the operator sum to prefix[b] - prefix[a]. Used by boxes.
  std::vector<double> prefix_sums() const;
};

}  // namespace egal
