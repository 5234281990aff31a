// The mask pass of the CPU backend: P = R_y^T M R_x and SM = sum(M) for one
// sample, at a cost that depends on the mask's size and dtype only, never on what
// it holds (a scattered or soft mask costs what a blob does). Two separable steps:
//
//  1. Vertical: V = R_y^T M, h rows of W floats. Mask row y adds (1 - t_y) M[y]
//     onto CAM row lo_y and t_y M[y] onto row hi_y. Rows sharing (lo, hi) form a
//     band; a band is read in column strips as wide as the vector registers
//     allow, each strip's sums kept in registers across the band's rows, along
//     with the area and the [0, 1] check. Every value goes through the same
//     operations: no branch, no skipped runs, and the compiler vectorises the
//     strip loop (no intrinsics; no omp simd reduction either: GCC sizes those
//     for the baseline's 16-byte vectors whatever the target).
//  2. Horizontal: P[i, j] = sum_x V[i, x] R_x[x, j], for blocks of 16 CAM columns
//     at a time.
//
// Both steps are compiled for baseline x86-64, AVX2 and AVX-512 (cpu_isa.h); the
// widest this CPU has runs. Check the vectorisation with GCC's
// -fopt-info-vec-optimized on this file: the strip loops report 64-, 32- and
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

// The running totals of a sample, across strips and bands: the area, exact for
// bytes, and the range check.
template <class T>
struct SampleTotals;

template <>
struct SampleTotals<uint8_t> {
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

template <>
struct SampleTotals<float> {
  double area = 0.0;
  uint32_t violations = 0;

  // Eight float64 partial sums: a single running sum would be a chain of
  // dependent adds, which the compiler may not reorder into vectors.
  template <int N>
  EGAL_ALWAYS_INLINE void add(const float (&column_sums)[N], const uint32_t (&check)[N]) {
    constexpr int kParts = N < 8 ? N : 8;
    double part[kParts] = {};
    uint32_t any = 0;
    for (int k0 = 0; k0 < N; k0 += kParts)
      for (int l = 0; l < kParts; ++l) part[l] += column_sums[k0 + l], any |= check[k0 + l];
    for (int l = 0; l < kParts; ++l) area += part[l];
    violations |= any;
  }
  MaskSums finish() const { return {area, violations != 0}; }
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
EGAL_ALWAYS_INLINE void add_strip(const uint8_t* __restrict band, int64_t stride, const RowBands::Band& rows,
                                  const float*, int skip, float* __restrict v_lo, float* __restrict v_hi,
                                  SampleTotals<uint8_t>& totals) {
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

// Floats: one multiply-add by t_y per value, the sum and the range check.
template <int N, bool kTwoRows>
EGAL_ALWAYS_INLINE void add_strip(const float* __restrict band, int64_t stride, const RowBands::Band& rows,
                                  const float* t, int skip, float* __restrict v_lo, float* __restrict v_hi,
                                  SampleTotals<float>& totals) {
  float weighted[N] = {}, sum[N] = {};
  uint32_t check[N] = {};
  for (int64_t y = 0; y < rows.count; ++y) {
    const float* __restrict row = band + y * stride;
    const float t_y = t[y];
    for (int k = 0; k < N; ++k) {
      if constexpr (kTwoRows) weighted[k] += t_y * row[k];
      sum[k] += row[k];
      check[k] |= math::mask_value_ok(row[k]) ? 0u : 1u;
    }
  }
  const Keep<N> keep(skip);
  float kept[N];
  for (int k = 0; k < N; ++k) {
    kept[k] = sum[k] * keep.scale[k];
    if constexpr (kTwoRows) {
      const float column_weighted = weighted[k] * keep.scale[k];
      v_lo[k] += kept[k] - column_weighted;
      v_hi[k] += column_weighted;
    } else {
      v_lo[k] += kept[k];
    }
  }
  totals.add(kept, check);
}

// Strip width, in columns, so that a strip's lanes fill at most 12 vector
// registers and leave the rest for loads and conversions: bytes take two
// registers' worth (uint16 sums and ramps in four registers each, the OR in two),
// floats 32 (T, the sums and the check: 6 AVX-512 or 12 AVX2 registers), 16 with SSE.
template <int kVectorBytes, class T>
constexpr int64_t strip_columns() {
  return sizeof(T) == 1 ? 2 * kVectorBytes : std::min(kVectorBytes, 32);
}

// Step 1 for columns [0, W) of one band, W >= N, in strips of N columns; a
// remainder is one more strip ending at W, overlapping the one before. (No lambdas
// on this path: a lambda is compiled for the baseline instruction set even inside
// an EGAL_TARGET_AVX512 function.)
template <int N, bool kTwoRows, class T>
EGAL_ALWAYS_INLINE void add_strips(const T* band, int64_t stride, const RowBands::Band& rows, int64_t W, const float* t,
                                   float* v_lo, float* v_hi, SampleTotals<T>& totals) {
  int64_t x = 0;
  for (; x + N <= W; x += N)
    add_strip<N, kTwoRows>(band + x, stride, rows, t, 0, v_lo + x, kTwoRows ? v_hi + x : nullptr, totals);
  if (x < W) {
    const int64_t last = W - N;
    add_strip<N, kTwoRows>(band + last, stride, rows, t, static_cast<int>(x - last), v_lo + last,
                           kTwoRows ? v_hi + last : nullptr, totals);
  }
}

// Step 1 over every band, into V's rows `row_stride` floats apart; `band_at(band)`
// returns the band's first row and sets the stride between its rows (in elements of
// T). Rows hold W >= strip_columns values.
template <int kVectorBytes, class T, class BandAt>
EGAL_ALWAYS_INLINE MaskSums vertical_step(BandAt band_at, const RowBands& row_bands, int64_t W, float* vertical,
                                          int64_t row_stride) {
  constexpr int N = static_cast<int>(strip_columns<kVectorBytes, T>());
  SampleTotals<T> totals;
  for (const RowBands::Band& band : row_bands.bands) {
    int64_t stride = 0;
    const T* first = band_at(band, &stride);
    const float* t = row_bands.t.data() + band.first;
    float* v_lo = vertical + band.lo * row_stride;
    if (band.lo != band.hi)
      add_strips<N, true>(first, stride, band, W, t, v_lo, vertical + band.hi * row_stride, totals);
    else
      add_strips<N, false>(first, stride, band, W, t, v_lo, nullptr, totals);
  }
  return totals.finish();
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
  constexpr int64_t kFloatStrip = strip_columns<kVectorBytes, float>();
  const int64_t W = plan.cols.out_size, h = plan.rows.in_size;
  const int64_t stride_y = masks.stride[1], stride_x = masks.stride[2];
  // Rows narrower than a float strip are widened with zeros to one strip, and V's
  // rows are as wide.
  const int64_t padded = std::max(W, kFloatStrip);
  const int64_t row_stride = padded;
  scratch.vertical.assign(static_cast<size_t>(h * row_stride), 0.0f);
  float* vertical = scratch.vertical.data();
  const bool bytes = masks.dtype == DType::UInt8 || masks.dtype == DType::Bool;
  MaskSums sums;
  if (bytes && stride_x == 1 && W >= strip_columns<kVectorBytes, uint8_t>()) {
    const uint8_t* base = static_cast<const uint8_t*>(masks.data) + b * masks.stride[0];
    auto band_at = [&](const RowBands::Band& band, int64_t* stride) {
      *stride = stride_y;
      return base + band.first * stride_y;
    };
    sums = vertical_step<kVectorBytes, uint8_t>(band_at, plan.row_bands, W, vertical, row_stride);
  } else if (masks.dtype == DType::Float32 && stride_x == 1 && W >= kFloatStrip) {
    const float* base = static_cast<const float*>(masks.data) + b * masks.stride[0];
    auto band_at = [&](const RowBands::Band& band, int64_t* stride) {
      *stride = stride_y;
      return base + band.first * stride_y;
    };
    sums = vertical_step<kVectorBytes, float>(band_at, plan.row_bands, W, vertical, row_stride);
  } else {  // float16, strided columns or narrow rows: each band widened to float32 rows first
    scratch.band.resize(static_cast<size_t>(RowBands::kMaxRows * padded));
    float* widened = scratch.band.data();
    const int64_t offset = b * masks.stride[0];
    auto band_at = [&](const RowBands::Band& band, int64_t* stride) {
      for (int64_t r = 0; r < band.count; ++r) {
        const int64_t row = offset + (band.first + r) * stride_y;
        float* out = widened + r * padded;
        if (masks.dtype == DType::Float16 && stride_x == 1)
          halves_to_floats<kF16c>(static_cast<const half_bits*>(masks.data) + row, W, out);
        else
          for (int64_t x = 0; x < W; ++x) out[x] = load_as_float(masks.data, masks.dtype, row + x * stride_x);
        std::fill(out + W, out + padded, 0.0f);
      }
      *stride = padded;
      return static_cast<const float*>(widened);
    };
    sums = vertical_step<kVectorBytes, float>(band_at, plan.row_bands, padded, vertical, row_stride);
  }
  horizontal_step(vertical, row_stride, plan, projection);
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
