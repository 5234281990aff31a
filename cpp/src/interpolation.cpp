#include "interpolation.h"

#include <algorithm>
#include <cmath>

namespace egal {

AxisInterpolation::AxisInterpolation(int64_t out, int64_t in)
    : out_size(out), in_size(in), lo(out), hi(out), t(out), column_sum(in, 0.0) {
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  for (int64_t y = 0; y < out; ++y) {
    const double s = std::max((y + 0.5) * scale - 0.5, 0.0);
    const int64_t y0 = std::min(static_cast<int64_t>(std::floor(s)), in - 1);
    const int64_t y1 = std::min(y0 + 1, in - 1);
    const double frac = s - static_cast<double>(y0);
    lo[y] = static_cast<int32_t>(y0);
    hi[y] = static_cast<int32_t>(y1);
    t[y] = static_cast<float>(frac);
    column_sum[y0] += 1.0 - frac;
    column_sum[y1] += frac;
  }
}

std::vector<double> AxisInterpolation::prefix_sums() const {
  std::vector<double> prefix(static_cast<size_t>((out_size + 1) * in_size), 0.0);
  for (int64_t y = 0; y < out_size; ++y) {
    const double* previous = prefix.data() + y * in_size;
    double* current = prefix.data() + (y + 1) * in_size;
    std::copy(previous, previous + in_size, current);
    current[lo[y]] += 1.0 - t[y];
    current[hi[y]] += t[y];
  }
  return prefix;
}

}  // namespace egal
