// CUDA backend: one thread block per sample, inputs read in place from device
// memory (strides honoured), outputs copied back as B numbers per field.
#include <cuda_runtime.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "egal/interpolation.h"
#include "egal/scalar.h"
#include "egal/score.h"

namespace egal {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr float kNormEps = 1e-7f;
constexpr double kDiceEps = 1e-6;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
}

// Interpolation tables of one call, in one device allocation.
struct DeviceTables {
  const int32_t* row_lo;  // [H]
  const int32_t* row_hi;  // [H]
  const float* row_t;     // [H]
  const int32_t* col_lo;  // [W]
  const int32_t* col_hi;  // [W]
  const float* col_t;     // [W]
  const float* row_sum;   // [h]
  const float* col_sum;   // [w]
};

struct KernelArgs {
  const void* activations;  // [B, K, h, w]
  int64_t a_stride[4];
  const void* gradients;  // [B, K, h, w] or null
  int64_t g_stride[4];
  const void* weights;  // [B, K] or null
  int64_t w_stride[2];
  DType weights_dtype;
  const void* logits;  // [B, C]
  int64_t z_stride[2];
  DType logits_dtype;
  RoiKind roi_kind;
  const void* masks;  // [B, H, W]
  int64_t m_stride[3];
  DType masks_dtype;
  const float* boxes;  // [B, N, 4]
  int64_t b_stride[3];
  const float* roi_weights;  // [B, h, w]
  int64_t r_stride[3];
  const float* roi_area;  // [B]
  int64_t area_stride;
  int64_t K, h, w, C, H, W, N;
  float alpha;
  DeviceTables tables;
  float* cam_workspace;  // [B, h * w]
  // outputs, [B] each (cam: [B, h * w] or null)
  int64_t* pred;
  float* entropy;
  float* entropy_norm;
  float* misalignment;
  float* score;
  float* cam;
  int32_t* status;
};

__device__ __forceinline__ float load(const void* base, DType dtype, int64_t offset) {
  switch (dtype) {
    case DType::Float32: return static_cast<const float*>(base)[offset];
    case DType::Float16: return to_float(static_cast<const half_bits*>(base)[offset]);
    case DType::BFloat16: return to_float(static_cast<const bfloat16_bits*>(base)[offset]);
    case DType::UInt8:
    case DType::Bool: return static_cast<float>(static_cast<const uint8_t*>(base)[offset]);
  }
  return NAN;
}

template <class V>
__device__ __forceinline__ V warp_sum(V v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block; every thread gets the result.
__device__ double block_sum(double v, double* scratch) {
  v = warp_sum(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double total = 0.0;
  for (int i = 0; i < kWarps; ++i) total += scratch[i];
  return total;
}

__device__ float block_min(float v, float* scratch) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fminf(v, __shfl_down_sync(0xffffffffu, v, offset));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float m = scratch[0];
  for (int i = 1; i < kWarps; ++i) m = fminf(m, scratch[i]);
  return m;
}

__device__ float block_max(float v, float* scratch) { return -block_min(-v, scratch); }

template <class T>
__global__ void __launch_bounds__(kThreads) score_kernel(KernelArgs args) {
  extern __shared__ float shared[];
  float* channel_weights = shared;            // [K]
  float* partial = shared + args.K;           // [kThreads]
  int32_t* boxes = reinterpret_cast<int32_t*>(partial + kThreads);  // [N, 4] pixel ranges
  __shared__ double reduce_scratch[kWarps];
  __shared__ float reduce_scratch_f[kWarps];
  __shared__ int flags;
  __shared__ int valid_boxes;

  const int64_t b = blockIdx.x;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t K = args.K, h = args.h, w = args.w, hw = h * w;
  if (tid == 0) flags = 0;
  __syncthreads();

  // Step 2: channel weights, a warp per channel.
  if (args.gradients) {
    const T* g = static_cast<const T*>(args.gradients) + b * args.g_stride[0];
    for (int64_t k = warp; k < K; k += kWarps) {
      float acc = 0.0f;
      for (int64_t p = lane; p < hw; p += 32)
        acc += to_float(g[k * args.g_stride[1] + (p / w) * args.g_stride[2] + (p % w) * args.g_stride[3]]);
      acc = warp_sum(acc);
      if (lane == 0) channel_weights[k] = acc / static_cast<float>(hw);
    }
  } else {
    for (int64_t k = tid; k < K; k += kThreads)
      channel_weights[k] = load(args.weights, args.weights_dtype, b * args.w_stride[0] + k * args.w_stride[1]);
  }
  __syncthreads();
  for (int64_t k = tid; k < K; k += kThreads)
    if (!isfinite(channel_weights[k])) atomicOr(&flags, kStatusNonFinite);

  // Step 3: raw map; channel groups share the block when the map is small.
  const T* a = static_cast<const T*>(args.activations) + b * args.a_stride[0];
  float* cam = args.cam_workspace + b * hw;
  const int lanes = hw < kThreads ? static_cast<int>(hw) : kThreads;
  const int groups = kThreads / lanes;
  float local_lo = INFINITY, local_hi = -INFINITY;
  for (int64_t p0 = 0; p0 < hw; p0 += lanes) {
    const int64_t p = p0 + tid % lanes;
    const int group = tid / lanes;
    float acc = 0.0f;
    if (group < groups && p < hw) {
      const int64_t offset = (p / w) * args.a_stride[2] + (p % w) * args.a_stride[3];
      for (int64_t k = group; k < K; k += groups) acc += channel_weights[k] * to_float(a[k * args.a_stride[1] + offset]);
    }
    partial[tid] = acc;
    __syncthreads();
    if (tid < lanes && p < hw) {
      float v = 0.0f;
      for (int g = 0; g < groups; ++g) v += partial[g * lanes + tid];
      if (!isfinite(v)) atomicOr(&flags, kStatusNonFinite);
      v = fmaxf(v, 0.0f);
      cam[p] = v;
      local_lo = fminf(local_lo, v);
      local_hi = fmaxf(local_hi, v);
    }
    __syncthreads();
  }
  // Step 4: min-max normalisation, applied on the fly when the map is read.
  const float lo = block_min(local_lo, reduce_scratch_f);
  const float hi = block_max(local_hi, reduce_scratch_f);
  const float denominator = hi - lo + kNormEps;
  __syncthreads();  // cam[] written by other threads is read below
  auto normalised = [&](int64_t p) { return (cam[p] - lo) / denominator; };

  // Steps 5-6: SU from the operator's column sums; I and SM from the ROI.
  double upsampled_sum = 0.0, intersection = 0.0, roi_area = 0.0;
  for (int64_t p = tid; p < hw; p += kThreads)
    upsampled_sum += static_cast<double>(normalised(p)) * args.tables.row_sum[p / w] * args.tables.col_sum[p % w];

  auto upsampled = [&](int64_t y, int64_t x) {
    const float ty = args.tables.row_t[y], tx = args.tables.col_t[x];
    const int64_t r0 = args.tables.row_lo[y] * w, r1 = args.tables.row_hi[y] * w;
    const int64_t c0 = args.tables.col_lo[x], c1 = args.tables.col_hi[x];
    return (1.0f - ty) * ((1.0f - tx) * normalised(r0 + c0) + tx * normalised(r0 + c1)) +
           ty * ((1.0f - tx) * normalised(r1 + c0) + tx * normalised(r1 + c1));
  };

  if (args.roi_kind == RoiKind::Masks) {
    float inter = 0.0f, area = 0.0f;
    bool bad = false;
    const int64_t base = b * args.m_stride[0];
    for (int64_t y = warp; y < args.H; y += kWarps) {
      float row_inter = 0.0f, row_area = 0.0f;
      for (int64_t x = lane; x < args.W; x += 32) {
        const float m = load(args.masks, args.masks_dtype, base + y * args.m_stride[1] + x * args.m_stride[2]);
        if (m == 0.0f) continue;
        if (!(m >= 0.0f && m <= 1.0f)) bad = true;
        row_inter += upsampled(y, x) * m;
        row_area += m;
      }
      inter += row_inter;
      area += row_area;
    }
    if (bad) atomicOr(&flags, kStatusBadMask);
    intersection = inter;
    roi_area = area;
  } else if (args.roi_kind == RoiKind::Boxes) {
    if (tid == 0) {
      int count = 0;
      for (int64_t n = 0; n < args.N; ++n) {
        const float* box = args.boxes + b * args.b_stride[0] + n * args.b_stride[1];
        const float x0 = box[0], y0 = box[args.b_stride[2]], x1 = box[2 * args.b_stride[2]], y1 = box[3 * args.b_stride[2]];
        if (isnan(x0) || isnan(y0) || isnan(x1) || isnan(y1) || !(x1 > x0) || !(y1 > y0)) continue;
        // pixel x is inside when x + 0.5 lies in [x0, x1)
        const double xa = fmin(fmax(ceil(static_cast<double>(x0) - 0.5), 0.0), static_cast<double>(args.W));
        const double xb = fmin(fmax(ceil(static_cast<double>(x1) - 0.5), 0.0), static_cast<double>(args.W));
        const double ya = fmin(fmax(ceil(static_cast<double>(y0) - 0.5), 0.0), static_cast<double>(args.H));
        const double yb = fmin(fmax(ceil(static_cast<double>(y1) - 0.5), 0.0), static_cast<double>(args.H));
        if (xa >= xb || ya >= yb) continue;
        int32_t* r = boxes + 4 * count++;
        r[0] = static_cast<int32_t>(xa), r[1] = static_cast<int32_t>(xb);
        r[2] = static_cast<int32_t>(ya), r[3] = static_cast<int32_t>(yb);
      }
      valid_boxes = count;
    }
    __syncthreads();
    float inter = 0.0f, area = 0.0f;
    for (int64_t y = warp; y < args.H; y += kWarps) {
      for (int64_t x = lane; x < args.W; x += 32) {
        bool covered = false;
        for (int n = 0; n < valid_boxes && !covered; ++n) {
          const int32_t* r = boxes + 4 * n;
          covered = r[0] <= x && x < r[1] && r[2] <= y && y < r[3];
        }
        if (!covered) continue;
        inter += upsampled(y, x);
        area += 1.0f;
      }
    }
    intersection = inter;
    roi_area = area;
  } else {
    const float* r = args.roi_weights + b * args.r_stride[0];
    for (int64_t p = tid; p < hw; p += kThreads)
      intersection += static_cast<double>(normalised(p)) * r[(p / w) * args.r_stride[1] + (p % w) * args.r_stride[2]];
  }
  upsampled_sum = block_sum(upsampled_sum, reduce_scratch);
  intersection = block_sum(intersection, reduce_scratch);
  roi_area = args.roi_kind == RoiKind::Projected ? static_cast<double>(args.roi_area[b * args.area_stride])
                                                 : block_sum(roi_area, reduce_scratch);

  if (args.cam)
    for (int64_t p = tid; p < hw; p += kThreads)
      args.cam[b * hw + p] = (flags & kStatusNonFinite) ? NAN : normalised(p);

  if (tid != 0) return;
  // Steps 1 and 7, one thread: C is small next to the maps.
  bool logits_finite = true;
  double z_max = -INFINITY;
  int64_t arg = 0;
  for (int64_t c = 0; c < args.C; ++c) {
    const double z = load(args.logits, args.logits_dtype, b * args.z_stride[0] + c * args.z_stride[1]);
    if (!isfinite(z)) logits_finite = false;
    if (z > z_max) z_max = z, arg = c;
  }
  double entropy = NAN;
  if (logits_finite) {
    double total = 0.0, weighted = 0.0;
    for (int64_t c = 0; c < args.C; ++c) {
      const double s = load(args.logits, args.logits_dtype, b * args.z_stride[0] + c * args.z_stride[1]) - z_max;
      const double e = exp(s);
      total += e;
      weighted += e * s;
    }
    entropy = log(total) - weighted / total;
  }
  const bool finite = !(flags & kStatusNonFinite);
  const double entropy_norm = entropy / log(static_cast<double>(args.C));
  const bool empty_roi = roi_area == 0.0;
  double dice = empty_roi || !finite ? NAN : 1.0 - (2.0 * intersection + kDiceEps) / (upsampled_sum + roi_area + kDiceEps);
  double score = empty_roi && finite ? entropy_norm : args.alpha * entropy_norm + (1.0 - args.alpha) * dice;
  if (!finite || !logits_finite) score = NAN;
  args.pred[b] = logits_finite ? arg : -1;
  args.entropy[b] = static_cast<float>(entropy);
  args.entropy_norm[b] = static_cast<float>(entropy_norm);
  args.misalignment[b] = static_cast<float>(dice);
  args.score[b] = static_cast<float>(score);
  args.status[b] = flags | (logits_finite ? 0 : kStatusNonFinite);
}

template <class V>
size_t append(std::vector<unsigned char>& blob, const std::vector<V>& values) {
  const size_t offset = (blob.size() + 15) / 16 * 16;
  blob.resize(offset + values.size() * sizeof(V));
  std::memcpy(blob.data() + offset, values.data(), values.size() * sizeof(V));
  return offset;
}

void copy_strides(const TensorView& view, int64_t* dst, int rank) {
  for (int d = 0; d < rank; ++d) dst[d] = view.stride[d];
}

// Restores the caller's current device on every exit path.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

}  // namespace

void score_cuda(const ScoreInputs& in, const ScoreOutputs& out) {
  const TensorView& A = in.activations;
  const int64_t B = A.shape[0], K = A.shape[1], h = A.shape[2], w = A.shape[3], hw = h * w;
  if (B == 0) return;
  DeviceGuard guard(A.device_id);
  cudaStream_t stream = 0;  // legacy default stream: the one requested from the DLPack producers

  const AxisInterpolation rows(in.roi_height, h), cols(in.roi_width, w);
  std::vector<float> row_sum(rows.column_sum.begin(), rows.column_sum.end());
  std::vector<float> col_sum(cols.column_sum.begin(), cols.column_sum.end());
  std::vector<unsigned char> blob;
  const size_t o_row_lo = append(blob, rows.lo), o_row_hi = append(blob, rows.hi), o_row_t = append(blob, rows.t);
  const size_t o_col_lo = append(blob, cols.lo), o_col_hi = append(blob, cols.hi), o_col_t = append(blob, cols.t);
  const size_t o_row_sum = append(blob, row_sum), o_col_sum = append(blob, col_sum);

  // Device memory: tables, the map workspace and the outputs, in one block.
  const size_t tables_bytes = (blob.size() + 255) / 256 * 256;
  const size_t cam_bytes = static_cast<size_t>(B * hw) * sizeof(float);
  const size_t out_bytes = static_cast<size_t>(B) * (sizeof(int64_t) + 4 * sizeof(float) + sizeof(int32_t));
  const size_t cam_out_bytes = out.cam ? cam_bytes : 0;
  unsigned char* device = nullptr;
  check(cudaMallocAsync(reinterpret_cast<void**>(&device), tables_bytes + cam_bytes + out_bytes + cam_out_bytes, stream),
        "cudaMallocAsync");
  struct Free {
    unsigned char* p;
    cudaStream_t s;
    ~Free() { cudaFreeAsync(p, s); }
  } free_on_exit{device, stream};
  check(cudaMemcpyAsync(device, blob.data(), blob.size(), cudaMemcpyHostToDevice, stream), "copying tables");

  KernelArgs args{};
  args.tables = {reinterpret_cast<int32_t*>(device + o_row_lo), reinterpret_cast<int32_t*>(device + o_row_hi),
                 reinterpret_cast<float*>(device + o_row_t),    reinterpret_cast<int32_t*>(device + o_col_lo),
                 reinterpret_cast<int32_t*>(device + o_col_hi), reinterpret_cast<float*>(device + o_col_t),
                 reinterpret_cast<float*>(device + o_row_sum),  reinterpret_cast<float*>(device + o_col_sum)};
  args.cam_workspace = reinterpret_cast<float*>(device + tables_bytes);
  unsigned char* outputs = device + tables_bytes + cam_bytes;
  args.pred = reinterpret_cast<int64_t*>(outputs);
  args.entropy = reinterpret_cast<float*>(outputs + B * sizeof(int64_t));
  args.entropy_norm = args.entropy + B;
  args.misalignment = args.entropy + 2 * B;
  args.score = args.entropy + 3 * B;
  args.status = reinterpret_cast<int32_t*>(args.entropy + 4 * B);
  args.cam = out.cam ? reinterpret_cast<float*>(outputs + out_bytes) : nullptr;

  args.activations = A.data;
  copy_strides(A, args.a_stride, 4);
  if (in.gradients.present) {
    args.gradients = in.gradients.data;
    copy_strides(in.gradients, args.g_stride, 4);
  } else {
    args.weights = in.weights.data;
    args.weights_dtype = in.weights.dtype;
    copy_strides(in.weights, args.w_stride, 2);
  }
  args.logits = in.logits.data;
  args.logits_dtype = in.logits.dtype;
  copy_strides(in.logits, args.z_stride, 2);
  args.roi_kind = in.roi_kind;
  args.N = 0;
  if (in.roi_kind == RoiKind::Masks) {
    args.masks = in.masks.data;
    args.masks_dtype = in.masks.dtype;
    copy_strides(in.masks, args.m_stride, 3);
  } else if (in.roi_kind == RoiKind::Boxes) {
    args.boxes = static_cast<const float*>(in.boxes.data);
    copy_strides(in.boxes, args.b_stride, 3);
    args.N = in.boxes.shape[1];
  } else {
    args.roi_weights = static_cast<const float*>(in.roi_weights.data);
    copy_strides(in.roi_weights, args.r_stride, 3);
    args.roi_area = static_cast<const float*>(in.roi_area.data);
    args.area_stride = in.roi_area.stride[0];
  }
  args.K = K, args.h = h, args.w = w, args.C = in.logits.shape[1];
  args.H = in.roi_height, args.W = in.roi_width;
  args.alpha = in.alpha;

  const size_t shared_bytes = (K + kThreads) * sizeof(float) + args.N * 4 * sizeof(int32_t);
  auto launch = [&](auto kernel) {
    if (shared_bytes > 48 * 1024) {
      int device_limit = 0;
      check(cudaDeviceGetAttribute(&device_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, A.device_id), "attribute");
      if (shared_bytes > static_cast<size_t>(device_limit))
        throw std::invalid_argument("K = " + std::to_string(K) + " channels and N = " + std::to_string(args.N) +
                                    " boxes need " + std::to_string(shared_bytes) +
                                    " bytes of shared memory, more than this GPU offers");
      check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared_bytes)),
            "cudaFuncSetAttribute");
    }
    kernel<<<static_cast<unsigned>(B), kThreads, shared_bytes, stream>>>(args);
    check(cudaGetLastError(), "launching score_kernel");
  };
  switch (A.dtype) {
    case DType::Float32: launch(score_kernel<float>); break;
    case DType::Float16: launch(score_kernel<half_bits>); break;
    case DType::BFloat16: launch(score_kernel<bfloat16_bits>); break;
    default: throw std::invalid_argument("activations must be float32, float16 or bfloat16");
  }

  std::vector<unsigned char> host(out_bytes);
  check(cudaMemcpyAsync(host.data(), outputs, out_bytes, cudaMemcpyDeviceToHost, stream), "copying scores");
  if (out.cam) check(cudaMemcpyAsync(out.cam, args.cam, cam_out_bytes, cudaMemcpyDeviceToHost, stream), "copying maps");
  check(cudaStreamSynchronize(stream), "score_kernel");
  const unsigned char* p = host.data();
  std::memcpy(out.pred, p, B * sizeof(int64_t));
  p += B * sizeof(int64_t);
  for (float* dst : {out.entropy, out.entropy_norm, out.misalignment, out.score}) {
    std::memcpy(dst, p, B * sizeof(float));
    p += B * sizeof(float);
  }
  std::memcpy(out.status, p, B * sizeof(int32_t));
}

bool cuda_compiled() { return true; }

int cuda_device_count(std::string* why_not) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    if (why_not) *why_not = cudaGetErrorString(status);
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  if (count == 0 && why_not) *why_not = "no CUDA device is visible";
  return count;
}

}  // namespace egal
