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
//     baseline's 16-byte vectors whatever the target). Bytes are read in column
//     strips as wide as the vector registers allow, each strip's integer sums
//     kept in registers across the band's rows. Floats are read row after row,
//     which the hardware prefetchers follow, with S and T in two rows of scratch
//     that stay in L1: on an AMD EPYC (Zen 3) this made the float pass 2.6 times
//     faster with AVX2 than in strips, 1.5 times with SSE2 (bench/README.md).
//  2. Horizontal: P[i, j] = sum_x V[i, x] R_x[x, j], for blocks of 16 CAM columns
//     at a time.
//
// Both steps are compiled for baseline x86-64, AVX2 and AVX-512 (cpu_isa.h); the
// widest this CPU has runs. Check the vectorisation with GCC's
// -fopt-info-vec-optimized on this file: the strip and row loops report 64-, 32-
// and 16-byte vectors.
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

// The running totals of a sample's byte mask, across strips and bands: the area,
// exact, and the range check.
struct ByteTotals {
  uint64_t area = 0;
  uint32_t bits = 0;

  template <int N>
  EGAL_ALWAYS_INLINE void add(const uint16_t (&column_sums)[N], const uint8_t (&check)[N]) {
    uint32_t total = 0, any = 0;
    for (int k = 0; k < N; ++k) total += column_sums[k], any |= check[k];
    area += total;
    bits |= any;
  }
  MaskSums finish() const { return {static_cast<double>(area), !math::mask_bits_ok(bits)}; }
};

// Which of a strip's N columns to add: 0 for the first `skip`, 1 (all bits) for
// the others, as arrays to multiply or mask by. (A select on k < skip in the loop
// leaves GCC with control flow it does not vectorise.)
template <int N>
struct Keep {
  static constexpr struct Table {
    float scale[2 * N];
    uint16_t bits[2 * N];
    constexpr Table() : scale(), bits() {
      for (int k = N; k < 2 * N; ++k) scale[k] = 1.0f, bits[k] = 0xffff;
    }
  } kTable{};
  const float* scale;
  const uint16_t* bits;
  explicit Keep(int skip) : scale(kTable.scale + N - skip), bits(kTable.bits + N - skip) {}
};

// Step 1 for N columns of one band: its mask rows, `stride` elements apart from
// `band`, onto N columns of V rows lo and hi. Per column the band gives
// S = sum_y M[y] and T = sum_y t_y M[y]; row lo gets S - T = sum_y (1 - t_y) M[y]
// and row hi gets T. With lo == hi (kTwoRows false) the weights sum to 1 and row lo
// gets S. N is a compile-time constant, so the per-column lanes below stay in
// vector registers for the whole band. The first `skip` columns are read but not
// added (they overlap the previous strip; checking them twice is harmless): they
// are masked out, so that the epilogue vectorises too.
//
// Bytes stay integers: with t_y = t0 + k dt for the band's k-th row,
// T = t0 S + dt sum_k k M[k], and sum_k k M[k] = n S - R, where R adds up the
// running column sum over the band's n rows. Per value: two 16-bit adds and an
// OR, no conversion, no multiply. A valid (0/1) band has S <= 64 and R <= 2,080;
// values above 1 may overflow R, but such a mask is refused anyway.
template <int N, bool kTwoRows>
EGAL_ALWAYS_INLINE void add_strip(const uint8_t* __restrict band, int64_t stride, const RowBands::Band& rows, int skip,
                                  float* __restrict v_lo, float* __restrict v_hi, ByteTotals& totals) {
  uint16_t sum[N] = {}, running[N] = {};
  uint8_t check[N] = {};
  for (int64_t y = 0; y < rows.count; ++y) {
    const uint8_t* __restrict row = band + y * stride;
    for (int k = 0; k < N; ++k) {
      sum[k] += row[k];
      if constexpr (kTwoRows) running[k] += sum[k];
      check[k] |= row[k];
    }
  }
  const float n = static_cast<float>(rows.count), t0 = static_cast<float>(rows.t0), dt = static_cast<float>(rows.dt);
  const Keep<N> keep(skip);
  uint16_t kept[N];
  for (int k = 0; k < N; ++k) {
    kept[k] = sum[k] & keep.bits[k];
    const float column_sum = static_cast<float>(kept[k]);
    if constexpr (kTwoRows) {
      const float ramp = (n * column_sum - static_cast<float>(running[k])) * keep.scale[k];
      const float weighted = t0 * column_sum + dt * ramp;
      v_lo[k] += column_sum - weighted;
      v_hi[k] += weighted;
    } else {
      v_lo[k] += column_sum;
    }
  }
  totals.add(kept, check);
}

// Strip width for bytes, in columns: two registers' worth, so that a strip's
// lanes fill at most 12 vector registers (uint16 sums and ramps in four
// registers each, the OR in two) and leave the rest for loads.
template <int kVectorBytes>
constexpr int64_t byte_strip_columns() {
  return 2 * kVectorBytes;
}

// Step 1 for columns [0, W) of one band, W >= N, in strips of N columns; a
// remainder is one more strip ending at W, overlapping the one before. (No lambdas
// on this path: a lambda is compiled for the baseline instruction set even inside
// an EGAL_TARGET_AVX512 function.)
template <int N, bool kTwoRows>
EGAL_ALWAYS_INLINE void add_strips(const uint8_t* band, int64_t stride, const RowBands::Band& rows, int64_t W,
                                   float* v_lo, float* v_hi, ByteTotals& totals) {
  int64_t x = 0;
  for (; x + N <= W; x += N)
    add_strip<N, kTwoRows>(band + x, stride, rows, 0, v_lo + x, kTwoRows ? v_hi + x : nullptr, totals);
  if (x < W) {
    const int64_t last = W - N;
    add_strip<N, kTwoRows>(band + last, stride, rows, static_cast<int>(x - last), v_lo + last,
                           kTwoRows ? v_hi + last : nullptr, totals);
  }
}

// Step 1 for a byte mask whose rows are `stride_y` bytes apart, W >= its strip
// width, into V's rows `row_stride` floats apart.
template <int kVectorBytes>
EGAL_ALWAYS_INLINE MaskSums vertical_step_bytes(const uint8_t* mask, int64_t stride_y, const RowBands& row_bands,
                                                int64_t W, float* vertical, int64_t row_stride) {
  constexpr int N = static_cast<int>(byte_strip_columns<kVectorBytes>());
  ByteTotals totals;
  for (const RowBands::Band& band : row_bands.bands) {
    const uint8_t* first = mask + band.first * stride_y;
    float* v_lo = vertical + band.lo * row_stride;
    if (band.lo != band.hi)
      add_strips<N, true>(first, stride_y, band, W, v_lo, vertical + band.hi * row_stride, totals);
    else
      add_strips<N, false>(first, stride_y, band, W, v_lo, nullptr, totals);
  }
  return totals.finish();
}

// Step 1 for one float row: per column S += M[y] and T += t_y M[y] (kTwoRows;
// else S only) in the scratch rows `sum` and `weighted`, and the [0, 1] check
// ORed into `violations`.
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

// Any other rows (float16 in the baseline variant, strided columns of any dtype,
// byte rows narrower than a strip): each widened to float32 first, into one row
// of scratch.
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

// The whole mask pass of sample b, for vector registers of kVectorBytes; kF16c:
// the caller is compiled with F16C.
template <int kVectorBytes, bool kF16c>
EGAL_ALWAYS_INLINE MaskSums project_mask_with(const TensorView& masks, int64_t b, const ProjectionPlan& plan,
                                              ProjectionScratch& scratch, double* projection) {
  const int64_t W = plan.cols.out_size, h = plan.rows.in_size;
  const int64_t stride_y = masks.stride[1], stride_x = masks.stride[2];
  scratch.vertical.assign(static_cast<size_t>(h * W), 0.0f);
  float* vertical = scratch.vertical.data();
  const bool bytes = masks.dtype == DType::UInt8 || masks.dtype == DType::Bool;
  MaskSums sums;
  if (bytes && stride_x == 1 && W >= byte_strip_columns<kVectorBytes>()) {
    const uint8_t* mask = static_cast<const uint8_t*>(masks.data) + b * masks.stride[0];
    sums = vertical_step_bytes<kVectorBytes>(mask, stride_y, plan.row_bands, W, vertical, W);
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
  return project_mask_with<16, false>(masks, b, plan, scratch, projection);
}

#if EGAL_X86_DISPATCH
EGAL_TARGET_AVX2 MaskSums project_mask_avx2(const TensorView& masks, int64_t b, const ProjectionPlan& plan,
                                            ProjectionScratch& scratch, double* projection) {
  return project_mask_with<32, true>(masks, b, plan, scratch, projection);
}

EGAL_TARGET_AVX512 MaskSums project_mask_avx512(const TensorView& masks, int64_t b, const ProjectionPlan& plan,
                                                ProjectionScratch& scratch, double* projection) {
  return project_mask_with<64, true>(masks, b, plan, scratch, projection);
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
