// The mask pass of the CPU backend: P = R_y^T M R_x and SM = sum(M) for one
// sample, at a cost that depends on the mask's size and dtype only, never on what
// it holds (a scattered or soft mask costs what a blob does). Two separable steps:
//
//  1. Vertical: V = R_y^T M, h rows of W floats. Mask row y adds (1 - t_y) M[y]
//     onto CAM row lo_y and t_y M[y] onto row hi_y. Rows sharing (lo, hi) form a
//     band, which gives per column S = sum_y M[y] and T = sum_y t_y M[y]; row lo
//     gets S - T and row hi gets T. Every value goes through the same operations,
//     with the area and the [0, 1] check: no branch, no skipped runs, and the
//     compiler vectorises the loops (no intrinsics here, save float16's widening
//     in half_cpu.h; no omp simd reduction either: GCC sizes those for the
//     baseline's 16-byte vectors whatever the target). Masks are read row after
//     row, which the hardware prefetchers follow, with a band's sums in a few rows
//     of scratch that stay in L1: floats in float32, bytes as exact integers. On
//     an AMD EPYC (Zen 3) this made the pass 2.6 times faster for float32 masks
//     with AVX2 (one thread) and 1.7 to 1.8 times for bytes (egal.project_roi, two
//     threads) than column strips whose sums stayed in registers (bench/README.md).
//  2. Horizontal: P[i, j] = sum_x V[i, x] R_x[x, j], for blocks of 8 CAM columns
//     at a time.
//
// Both steps are compiled for baseline x86-64, AVX2 and AVX-512 (cpu_isa.h); the
// widest this CPU has runs. Check the vectorisation with GCC's
// -fopt-info-vec-optimized on this file: the row loops report 64-, 32- and
// 16-byte vectors.
#include <algorithm>
#include <cmath>

#include "cpu_isa.h"
#include "half_cpu.h"
#include "roi_projection_cpu.h"
#include "scalar.h"
#include "score_math.h"

namespace egal::cpu {

RowBands::RowBands(const AxisInterpolation& rows) : t(rows.t) {
  // t grows by the source step h / H per mask row, or stays 0 where the source
  // position is clamped at the map's first row (interpolation.cpp). A band takes
  // its slope from its second row and keeps rows that stay on that line to within
  // 1e-6 (the table holds t rounded to float32); any other row starts a new band.
  constexpr double kTolerance = 1e-6;
  const double step = static_cast<double>(rows.in_size) / static_cast<double>(rows.out_size);
  auto extends = [&](Band& band, int64_t y) {
    if (band.lo != rows.lo[y] || band.hi != rows.hi[y] || band.count == kMaxRows) return false;
    if (band.lo == band.hi) return true;  // the weights sum to 1 whatever t is
    if (band.count == 1) {
      for (const double slope : {step, 0.0})
        if (std::abs(band.t0 + slope - t[y]) <= kTolerance) return band.dt = slope, true;
      return false;
    }
    return std::abs(band.t0 + static_cast<double>(y - band.first) * band.dt - t[y]) <= kTolerance;
  };
  for (int64_t y = 0; y < rows.out_size; ++y) {
    if (!bands.empty() && extends(bands.back(), y))
      ++bands.back().count;
    else
      bands.push_back({y, 1, rows.lo[y], rows.hi[y], t[y], 0.0});
  }
}

ColumnBlocks::ColumnBlocks(const AxisInterpolation& cols) {
  const int64_t W = cols.out_size, w = cols.in_size;
  for (int64_t c0 = 0; c0 < w; c0 += kBlock) {
    const int64_t c1 = std::min(c0 + kBlock, w);
    int64_t begin = W, end = 0;  // the mask columns that read CAM columns [c0, c1)
    for (int64_t x = 0; x < W; ++x)
      if ((cols.lo[x] >= c0 && cols.lo[x] < c1) || (cols.hi[x] >= c0 && cols.hi[x] < c1))
        begin = std::min(begin, x), end = x + 1;
    end = std::max(end, begin);  // a map wider than the mask may leave a block unread
    first.push_back(begin < end ? begin : 0);
    count.push_back(end - begin);
    offset.push_back(static_cast<int64_t>(weight.size()) / kBlock);
    weight.resize(weight.size() + static_cast<size_t>((end - begin) * kBlock), 0.0f);
    float* block = weight.data() + offset.back() * kBlock;
    for (int64_t x = begin; x < end; ++x) {  // each mask column reads CAM columns lo and hi
      float* row = block + (x - begin) * kBlock;
      if (cols.lo[x] >= c0 && cols.lo[x] < c1) row[cols.lo[x] - c0] += 1.0f - cols.t[x];
      if (cols.hi[x] >= c0 && cols.hi[x] < c1) row[cols.hi[x] - c0] += cols.t[x];
    }
  }
}

namespace {

struct MaskSums {
  double area = 0.0;
  bool bad = false;
};

// Step 1 for byte masks, row after row like floats, in integers: with
// t_y = t0 + k dt for the band's k-th row, T = t0 S + dt K where K = sum_k k M[k].
// The band's rows are read in chunks of at most kChunkRows, into two rows of byte
// lanes in L1 scratch: per value one byte add for the chunk's column sum S_c, one
// for its running sum R_c (the sum over the chunk's rows of S_c so far), and an
// OR for the [0, 1] check. A valid (0/1) chunk of n rows keeps S_c <= n and
// R_c <= n (n + 1) / 2 <= 255. At the chunk's end, in 16-bit lanes, S += S_c and
// K += (o + n) S_c - R_c for a chunk that starts at the band's row o (the chunk's
// sum_j j M[o + j] is n S_c - R_c); a band of at most 64 rows keeps K <= 2,016.
// Values above 1 may wrap the lanes, but such a mask is refused anyway. K is an
// exact integer, so a band's T is what float arithmetic on every row would give
// only with rounding removed. Whole rows, four at a time, took fewer instructions
// and less time than column strips kept in registers (bench/README.md).
constexpr int64_t kChunkRows = 20;  // n (n + 1) / 2 <= 255, in steps of 4 rows

// R consecutive rows, `stride` bytes apart, onto the chunk's lanes S_c
// (`chunk_sum`) and R_c (`running`, kTwoRows only), their OR into `bits`. Taking
// several rows per pass over the scratch rows saves their loads and stores.
template <int R, bool kTwoRows>
EGAL_ALWAYS_INLINE void add_byte_rows(const uint8_t* __restrict rows, int64_t stride, int64_t W,
                                      uint8_t* __restrict chunk_sum, uint8_t* __restrict running, uint32_t* bits) {
  uint8_t any = 0;
  for (int64_t x = 0; x < W; ++x) {
    uint8_t sum = chunk_sum[x], ramp = 0, seen = 0;
    for (int r = 0; r < R; ++r) {
      const uint8_t value = rows[r * stride + x];
      sum += value;
      ramp += sum;
      seen |= value;
    }
    chunk_sum[x] = sum;
    if constexpr (kTwoRows) running[x] += ramp;
    any |= seen;
  }
  *bits |= any;
}

// A chunk of n rows that ends at the band's row `end`, onto the band's 16-bit
// column sums S (`sum`) and K (`ramp`, kTwoRows only).
template <bool kTwoRows>
EGAL_ALWAYS_INLINE void add_byte_chunk(const uint8_t* rows, int64_t stride, int64_t n, int64_t end, int64_t W,
                                       uint8_t* __restrict chunk_sum, uint8_t* __restrict running,
                                       uint16_t* __restrict sum, uint16_t* __restrict ramp, uint32_t* bits) {
  std::fill(chunk_sum, chunk_sum + W, uint8_t{0});
  if constexpr (kTwoRows) std::fill(running, running + W, uint8_t{0});
  int64_t y = 0;
  for (; y + 4 <= n; y += 4) add_byte_rows<4, kTwoRows>(rows + y * stride, stride, W, chunk_sum, running, bits);
  for (; y < n; ++y) add_byte_rows<1, kTwoRows>(rows + y * stride, stride, W, chunk_sum, running, bits);
  const auto rows_before = static_cast<uint16_t>(end);
  for (int64_t x = 0; x < W; ++x) {
    sum[x] += chunk_sum[x];
    if constexpr (kTwoRows) ramp[x] += static_cast<uint16_t>(rows_before * chunk_sum[x] - running[x]);
  }
}

// Step 1 for a byte mask with contiguous columns and rows `stride_y` bytes apart,
// into V's rows `row_stride` floats apart.
EGAL_ALWAYS_INLINE MaskSums vertical_step_bytes(const uint8_t* mask, int64_t stride_y, const RowBands& row_bands,
                                                int64_t W, float* vertical, int64_t row_stride,
                                                ProjectionScratch& scratch) {
  scratch.chunk_sums.resize(static_cast<size_t>(2 * W));
  scratch.band_sums.resize(static_cast<size_t>(2 * W));
  uint8_t* chunk_sum = scratch.chunk_sums.data();
  uint8_t* running = chunk_sum + W;
  uint16_t* sum = scratch.band_sums.data();
  uint16_t* ramp = sum + W;
  uint32_t bits = 0;
  uint64_t area = 0;
  for (const RowBands::Band& band : row_bands.bands) {
    const bool two_rows = band.lo != band.hi;
    std::fill(sum, sum + 2 * W, uint16_t{0});
    for (int64_t first = 0; first < band.count; first += kChunkRows) {
      const int64_t n = std::min(kChunkRows, band.count - first);
      const uint8_t* rows = mask + (band.first + first) * stride_y;
      if (two_rows)
        add_byte_chunk<true>(rows, stride_y, n, first + n, W, chunk_sum, running, sum, ramp, &bits);
      else
        add_byte_chunk<false>(rows, stride_y, n, first + n, W, chunk_sum, running, sum, ramp, &bits);
    }
    // S and T onto V's rows lo (S - T; S where lo == hi) and hi (T).
    const float t0 = static_cast<float>(band.t0), dt = static_cast<float>(band.dt);
    float* __restrict v_lo = vertical + band.lo * row_stride;
    float* __restrict v_hi = vertical + band.hi * row_stride;
    uint64_t band_area = 0;
    if (two_rows) {
      for (int64_t x = 0; x < W; ++x) {
        const float column_sum = static_cast<float>(sum[x]);
        const float weighted = t0 * column_sum + dt * static_cast<float>(ramp[x]);
        v_lo[x] += column_sum - weighted;
        v_hi[x] += weighted;
        band_area += sum[x];
      }
    } else {
      for (int64_t x = 0; x < W; ++x) {
        v_lo[x] += static_cast<float>(sum[x]);
        band_area += sum[x];
      }
    }
    area += band_area;
  }
  return {static_cast<double>(area), !math::mask_bits_ok(bits)};
}

// Step 1 for one float row: per column S += M[y] and T += t_y M[y] (kTwoRows;
// else S only) in the scratch rows `sum` and `weighted`, and the [0, 1] check
// ORed into `violations`. (Four rows at a time, as bytes go, took a third fewer
// instructions but 1.4 times as long on the AMD EPYC: bench/README.md.)
template <bool kTwoRows>
EGAL_ALWAYS_INLINE void add_row(const float* __restrict row, float t_y, int64_t W, float* __restrict sum,
                                float* __restrict weighted, uint32_t* violations) {
  uint32_t any = 0;
  for (int64_t x = 0; x < W; ++x) {
    sum[x] += row[x];
    if constexpr (kTwoRows) weighted[x] += t_y * row[x];
    any |= math::mask_value_ok(row[x]) ? 0u : 1u;
  }
  *violations |= any;
}

// Where step 1 reads a float mask's rows, as types with one method,
// add_band<kTwoRows>(band, t, W, sum, weighted, violations): every row of the band
// through add_row (or its float16 twin). Not lambdas: a lambda's body is compiled
// for the baseline instruction set even inside an EGAL_TARGET_AVX512 function.

// float32 rows with contiguous columns, read in place.
struct FloatRows {
  const float* mask;
  int64_t stride_y;

  template <bool kTwoRows>
  EGAL_ALWAYS_INLINE void add_band(const RowBands::Band& band, const float* t, int64_t W, float* sum, float* weighted,
                                   uint32_t* violations) const {
    for (int64_t y = 0; y < band.count; ++y)
      add_row<kTwoRows>(mask + (band.first + y) * stride_y, t[y], W, sum, weighted, violations);
  }
};

#if EGAL_X86_DISPATCH
// float16 rows with contiguous columns, widened eight at a time inside the
// arithmetic (half_cpu.h); only in variants compiled with F16C.
struct HalfRows {
  const half_bits* mask;
  int64_t stride_y;

  template <bool kTwoRows>
  EGAL_ALWAYS_INLINE void add_band(const RowBands::Band& band, const float* t, int64_t W, float* sum, float* weighted,
                                   uint32_t* violations) const {
    if (add_half_mask_rows<kTwoRows>(mask + band.first * stride_y, stride_y, band.count, t, W, sum, weighted))
      *violations |= 1u;
  }
};
#endif

// Any other rows (float16 in the baseline variant, strided columns of any dtype):
// each widened to float32 first, into one row of scratch.
struct WidenedRows {
  const TensorView& masks;
  int64_t offset;
  float* widened;  // [W]
  bool halves;     // contiguous float16

  template <bool kTwoRows>
  EGAL_ALWAYS_INLINE void add_band(const RowBands::Band& band, const float* t, int64_t W, float* sum, float* weighted,
                                   uint32_t* violations) const {
    const int64_t stride_y = masks.stride[1], stride_x = masks.stride[2];
    for (int64_t y = 0; y < band.count; ++y) {
      const int64_t row = offset + (band.first + y) * stride_y;
      if (halves)
        halves_to_floats<false>(static_cast<const half_bits*>(masks.data) + row, W, widened);
      else
        for (int64_t x = 0; x < W; ++x) widened[x] = load_as_float(masks.data, masks.dtype, row + x * stride_x);
      add_row<kTwoRows>(widened, t[y], W, sum, weighted, violations);
    }
  }
};

// A band's S and T onto V's rows lo (S - T; S where lo == hi) and hi (T); returns
// sum(S) in float64, over eight partial sums (one running sum is a chain of
// dependent adds that the compiler may not reorder into vectors).
EGAL_ALWAYS_INLINE double add_band_to_rows(const float* __restrict sum, const float* __restrict weighted, int64_t W,
                                           bool two_rows, float* __restrict v_lo, float* __restrict v_hi) {
  if (two_rows)
    for (int64_t x = 0; x < W; ++x) v_lo[x] += sum[x] - weighted[x], v_hi[x] += weighted[x];
  else
    for (int64_t x = 0; x < W; ++x) v_lo[x] += sum[x];
  double part[8] = {};
  int64_t x = 0;
  for (; x + 8 <= W; x += 8)
    for (int l = 0; l < 8; ++l) part[l] += sum[x + l];
  for (; x < W; ++x) part[x % 8] += sum[x];
  return ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
}

// Step 1 over every band of a float mask read through `rows` (FloatRows,
// HalfRows or WidenedRows), into V's rows `row_stride` floats apart. A NaN mask
// value turns the area NaN, which also reports the mask as bad: the float16 rows
// leave NaN to that.
template <class Rows>
EGAL_ALWAYS_INLINE MaskSums vertical_step_floats(const Rows& rows, const RowBands& row_bands, int64_t W,
                                                 float* vertical, int64_t row_stride, ProjectionScratch& scratch) {
  scratch.column_sums.resize(static_cast<size_t>(2 * W));
  float* sum = scratch.column_sums.data();
  float* weighted = sum + W;
  double area = 0.0;
  uint32_t violations = 0;
  for (const RowBands::Band& band : row_bands.bands) {
    const float* t = row_bands.t.data() + band.first;
    const bool two_rows = band.lo != band.hi;
    std::fill(sum, sum + 2 * W, 0.0f);
    if (two_rows)
      rows.template add_band<true>(band, t, W, sum, weighted, &violations);
    else
      rows.template add_band<false>(band, t, W, sum, weighted, &violations);
    area +=
        add_band_to_rows(sum, weighted, W, two_rows, vertical + band.lo * row_stride, vertical + band.hi * row_stride);
  }
  return {area, violations != 0 || std::isnan(area)};
}

// Step 2: P[i, j] = V[i] . R_x[:, j], a block of kBlock CAM columns at a time:
// one broadcast multiply-add of kBlock lanes per mask column the block reads,
// into kChains independent sums (one chain would wait on each add's latency).
EGAL_ALWAYS_INLINE void horizontal_step(const float* vertical, int64_t row_stride, const ProjectionPlan& plan,
                                        double* projection) {
  constexpr int kBlock = ColumnBlocks::kBlock, kChains = 4;
  const int64_t h = plan.rows.in_size, w = plan.cols.in_size;
  const ColumnBlocks& blocks = plan.col_blocks;
  for (int64_t i = 0; i < h; ++i) {
    for (size_t c = 0; c < blocks.first.size(); ++c) {
      const float* __restrict v = vertical + i * row_stride + blocks.first[c];
      const float* __restrict weight = blocks.weight.data() + blocks.offset[c] * kBlock;
      const int64_t n = blocks.count[c];
      float acc[kChains][kBlock] = {};
      int64_t x = 0;
      // The pragmas keep GCC on the lanes: left alone it vectorises over x, with a
      // shuffle per value.
      for (; x + kChains <= n; x += kChains)
        for (int chain = 0; chain < kChains; ++chain) {
#pragma omp simd
          for (int l = 0; l < kBlock; ++l) acc[chain][l] += v[x + chain] * weight[(x + chain) * kBlock + l];
        }
      for (; x < n; ++x) {
#pragma omp simd
        for (int l = 0; l < kBlock; ++l) acc[0][l] += v[x] * weight[x * kBlock + l];
      }
      const int64_t c0 = static_cast<int64_t>(c) * kBlock, lanes = std::min<int64_t>(kBlock, w - c0);
      for (int64_t l = 0; l < lanes; ++l)
        projection[i * w + c0 + l] = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
    }
  }
}

// The whole mask pass of sample b; kF16c: the caller is compiled with F16C.
template <bool kF16c>
EGAL_ALWAYS_INLINE MaskSums project_mask_with(const TensorView& masks, int64_t b, const ProjectionPlan& plan,
                                              ProjectionScratch& scratch, double* projection) {
  const int64_t W = plan.cols.out_size, h = plan.rows.in_size;
  const int64_t stride_y = masks.stride[1], stride_x = masks.stride[2];
  scratch.vertical.assign(static_cast<size_t>(h * W), 0.0f);
  float* vertical = scratch.vertical.data();
  const bool bytes = masks.dtype == DType::UInt8 || masks.dtype == DType::Bool;
  MaskSums sums;
  if (bytes && stride_x == 1) {
    const uint8_t* mask = static_cast<const uint8_t*>(masks.data) + b * masks.stride[0];
    sums = vertical_step_bytes(mask, stride_y, plan.row_bands, W, vertical, W, scratch);
  } else if (masks.dtype == DType::Float32 && stride_x == 1) {
    const FloatRows rows{static_cast<const float*>(masks.data) + b * masks.stride[0], stride_y};
    sums = vertical_step_floats(rows, plan.row_bands, W, vertical, W, scratch);
  } else {
    const bool halves = masks.dtype == DType::Float16 && stride_x == 1;
    bool done = false;
#if EGAL_X86_DISPATCH
    if constexpr (kF16c) {
      if (halves) {
        const HalfRows rows{static_cast<const half_bits*>(masks.data) + b * masks.stride[0], stride_y};
        sums = vertical_step_floats(rows, plan.row_bands, W, vertical, W, scratch);
        done = true;
      }
    }
#endif
    if (!done) {
      scratch.widened_row.resize(static_cast<size_t>(W));
      const WidenedRows rows{masks, b * masks.stride[0], scratch.widened_row.data(), halves};
      sums = vertical_step_floats(rows, plan.row_bands, W, vertical, W, scratch);
    }
  }
  horizontal_step(vertical, W, plan, projection);
  return sums;
}

MaskSums project_mask_baseline(const TensorView& masks, int64_t b, const ProjectionPlan& plan,
                               ProjectionScratch& scratch, double* projection) {
  return project_mask_with<false>(masks, b, plan, scratch, projection);
}

#if EGAL_X86_DISPATCH
EGAL_TARGET_AVX2 MaskSums project_mask_avx2(const TensorView& masks, int64_t b, const ProjectionPlan& plan,
                                            ProjectionScratch& scratch, double* projection) {
  return project_mask_with<true>(masks, b, plan, scratch, projection);
}

EGAL_TARGET_AVX512 MaskSums project_mask_avx512(const TensorView& masks, int64_t b, const ProjectionPlan& plan,
                                                ProjectionScratch& scratch, double* projection) {
  return project_mask_with<true>(masks, b, plan, scratch, projection);
}
#endif

}  // namespace

double project_mask(const TensorView& masks, int64_t b, const ProjectionPlan& plan, ProjectionScratch& scratch,
                    double* projection, bool* bad_mask) {
  MaskSums sums;
  switch (isa()) {
#if EGAL_X86_DISPATCH
    case Isa::Avx512: sums = project_mask_avx512(masks, b, plan, scratch, projection); break;
    case Isa::Avx2: sums = project_mask_avx2(masks, b, plan, scratch, projection); break;
#endif
    default: sums = project_mask_baseline(masks, b, plan, scratch, projection); break;
  }
  if (sums.bad) *bad_mask = true;
  return sums.area;
}

}  // namespace egal::cpu
