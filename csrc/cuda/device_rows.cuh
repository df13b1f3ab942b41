// Device-side building blocks shared by the fastgp CUDA kernels.
//
// Work is cut into tasks (tensor k, row b, chunk c); one warp runs a task.
// Within a task lane l owns the elements begin + (i * 32 + l) * VEC + v
// (v < VEC), whatever the memory layout, so a row's sum of squares does not
// depend on alignment or on which load path ran: results are bitwise
// reproducible run to run. Rows are described with RowLayout (dims
// merged by strides), so contiguous and channels_last rows are one dense run
// and read with 128-bit loads when aligned; other strides take an
// index-computing path. No copies are made.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <array>
#include <cstdint>

#include "../checks.h"
#include "../strided_rows.h"
#include "../penalty_math.h"

namespace fastgp {
namespace cuda {

constexpr int kWarp = 32;
constexpr int kBlock = 256;           // threads per block of the streaming kernels
constexpr int kWarpsPerBlock = kBlock / kWarp;
constexpr int kMinBlocksPerSM = 2;    // launch bounds: up to 128 registers a thread
constexpr int kUnroll = 4;            // independent 128-bit loads in flight per lane
constexpr int kDevDims = 6;           // merged inner dims a kernel argument can describe
constexpr int kMaxTensors = 8;        // tensors per launch (more are split into launches)
constexpr int64_t kTargetTasks = 4096;  // enough warps to fill a large GPU

// How a tensor's rows are read: aligned dense rows with 128-bit accesses,
// dense rows with scalar accesses, or any strides with computed offsets.
enum Mode : int { kVec = 0, kDense = 1, kStrided = 2 };

// Packs per lane loaded before use: several 128-bit loads in flight on the
// vectorized path; one on the scalar fallbacks (register-hungry, and rare).
__host__ __device__ constexpr int unroll_for(int mode) { return mode == kVec ? kUnroll : 1; }

// Elements of scalar_t in one 128-bit access.
template <typename scalar_t>
constexpr int vec_size() {
  return 16 / static_cast<int>(sizeof(scalar_t));
}

template <typename scalar_t, int VEC>
struct alignas(16) Pack {
  scalar_t v[VEC];
};

// The rows of NT same-shaped tensors (a kernel argument, passed by value).
template <int NT>
struct Rows {
  char* ptr[NT];
  int64_t row_stride[NT];              // elements between rows (dim 0)
  int64_t strides[NT][kDevDims];       // merged inner dims, outermost first
  int64_t sizes[kDevDims];
  int64_t row_numel;
  int ndim;
  int mode;
};

// Fills `r` from tensors of one shape; false if their strides need more than
// kDevDims merged dims (the caller then makes dense copies: rare layouts only).
template <int NT>
bool make_rows(Rows<NT>& r, std::array<const at::Tensor*, NT> ts) {
  const RowLayout<NT> layout(ts);
  if (layout.ndim > kDevDims) return false;
  r.ndim = layout.ndim;
  r.row_numel = layout.row_numel;
  bool dense = layout.ndim == 1;
  bool aligned = true;
  for (int t = 0; t < NT; ++t) {
    const at::Tensor& x = *ts[t];
    r.ptr[t] = static_cast<char*>(const_cast<void*>(x.const_data_ptr()));
    r.row_stride[t] = layout.row_stride[t];
    for (int d = 0; d < kDevDims; ++d) r.strides[t][d] = d < layout.ndim ? layout.strides[t][d] : 0;
    dense = dense && layout.inner_stride(t) == 1;
    const int64_t es = static_cast<int64_t>(x.element_size());
    aligned = aligned && reinterpret_cast<uintptr_t>(r.ptr[t]) % 16 == 0 &&
              (x.size(0) == 1 || (layout.row_stride[t] * es) % 16 == 0);
  }
  for (int d = 0; d < kDevDims; ++d) r.sizes[d] = d < layout.ndim ? layout.sizes[d] : 1;
  r.mode = !dense ? kStrided : (aligned ? kVec : kDense);
  return true;
}

// Offset in elements of element j (iteration order) of row b of tensor t.
template <int MODE, int NT>
__device__ __forceinline__ int64_t elem_offset(const Rows<NT>& r, int t, int64_t b, int64_t j) {
  int64_t off = b * r.row_stride[t];
  if constexpr (MODE != kStrided) {
    return off + j;
  } else {
    for (int d = r.ndim - 1; d > 0; --d) {
      const int64_t q = j / r.sizes[d];
      off += (j - q * r.sizes[d]) * r.strides[t][d];
      j = q;
    }
    return off + j * r.strides[t][0];
  }
}

// p.v[v] = element e + v of row b of tensor t (0 past `end`). Packs stay
// packed in registers (4 x 32 bits) until used.
template <int MODE, typename scalar_t, int VEC, int NT>
__device__ __forceinline__ void load_pack(Pack<scalar_t, VEC>& p, const Rows<NT>& r, int t, int64_t b, int64_t e,
                                          int64_t end) {
  const scalar_t* base = reinterpret_cast<const scalar_t*>(r.ptr[t]);
  if (MODE == kVec && e + VEC <= end) {
    // Moved as uint4 so that loads and stores are single 128-bit accesses.
    static_assert(sizeof(Pack<scalar_t, VEC>) == sizeof(uint4), "a pack is 128 bits");
    const uint4 bits = *reinterpret_cast<const uint4*>(base + b * r.row_stride[t] + e);
    memcpy(&p, &bits, sizeof(bits));
    return;
  }
#pragma unroll
  for (int v = 0; v < VEC; ++v)
    p.v[v] = e + v < end ? base[elem_offset<MODE>(r, t, b, e + v)] : scalar_t(0.0f);
}

// Stores p.v[v] to element e + v of row b of tensor t (nothing past `end`).
template <int MODE, typename scalar_t, int VEC, int NT>
__device__ __forceinline__ void store_pack(const Pack<scalar_t, VEC>& p, const Rows<NT>& r, int t, int64_t b,
                                           int64_t e, int64_t end) {
  scalar_t* base = reinterpret_cast<scalar_t*>(r.ptr[t]);
  if (MODE == kVec && e + VEC <= end) {
    uint4 bits;
    memcpy(&bits, &p, sizeof(bits));
    // The intrinsic keeps the store one 128-bit access (a plain assignment
    // gets split into 32-bit stores by the optimizer); .wb is the default policy.
    __stwb(reinterpret_cast<uint4*>(base + b * r.row_stride[t] + e), bits);
    return;
  }
#pragma unroll
  for (int v = 0; v < VEC; ++v)
    if (e + v < end) base[elem_offset<MODE>(r, t, b, e + v)] = p.v[v];
}

// A small tensor read on the device in whatever float dtype it has (alpha,
// inv_scale, norms, grad_out): no conversion kernel, no host sync.
enum DtypeCode : int { kF32 = 0, kF64 = 1, kF16 = 2, kBF16 = 3 };

struct AnyFloat {
  const void* ptr = nullptr;  // nullptr: the value is 1 (an absent inv_scale)
  int64_t stride = 0;         // elements; 0 broadcasts element 0
  int code = kF32;
};

inline AnyFloat any_float(const at::Tensor& t, const char* op, const char* name) {
  const at::ScalarType s = t.scalar_type();
  TORCH_CHECK(is_supported_float(s), op, ": ", name, " must be float16, bfloat16, float32 or float64, got ", s);
  AnyFloat a;
  a.ptr = t.const_data_ptr();
  a.stride = t.numel() == 1 ? 0 : t.stride(0);
  a.code = s == at::kFloat ? kF32 : s == at::kDouble ? kF64 : s == at::kHalf ? kF16 : kBF16;
  return a;
}

template <typename T>
__device__ __forceinline__ T load_any(const AnyFloat& a, int64_t i) {
  if (a.ptr == nullptr) return T(1);
  const int64_t j = i * a.stride;
  switch (a.code) {
    case kF64: return static_cast<T>(static_cast<const double*>(a.ptr)[j]);
    case kF16: return static_cast<T>(static_cast<float>(static_cast<const at::Half*>(a.ptr)[j]));
    case kBF16: return static_cast<T>(static_cast<float>(static_cast<const at::BFloat16*>(a.ptr)[j]));
    default: return static_cast<T>(static_cast<const float*>(a.ptr)[j]);
  }
}

__host__ __device__ inline int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Elements per task: 32 lanes x VEC x (1..16) steps, as large as possible
// while there are still about kTargetTasks tasks. Depends only on the shapes
// and dtype (never on the GPU), so every card sums in the same order.
inline int64_t chunk_elems(int64_t total_elems, int vec) {
  int64_t steps = 16;
  while (steps > 1 && total_elems / (kWarp * vec * steps) < kTargetTasks) steps /= 2;
  return kWarp * vec * steps;
}

// Blocks for a grid-stride launch of KERNEL over `ntasks` warp tasks: no
// more than are resident at once (asked once per kernel), so every block runs
// from the start and no second wave leaves a tail. (The runtime is asked
// directly: ATen's device-properties header pulls in cuBLAS/cuSPARSE headers
// that a bare toolkit may lack.)
template <auto KERNEL>
unsigned grid_for(int64_t ntasks) {
  static const int64_t resident = [] {
    int device = 0, sms = 0, per_sm = 0;
    C10_CUDA_CHECK(cudaGetDevice(&device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, KERNEL, kBlock, 0));
    return static_cast<int64_t>(sms) * std::max(per_sm, 1);
  }();
  const int64_t want = div_up(std::max<int64_t>(ntasks, 1), kWarpsPerBlock);
  return static_cast<unsigned>(std::min(want, resident));
}

// The tensor a task belongs to, from prefix sums of task counts.
__device__ __forceinline__ int tensor_of(const int64_t* first_task, int64_t task) {
  int k = 0;
  while (task >= first_task[k + 1]) ++k;
  return k;
}

// Where a task works: tensor k, row b, chunk c of that row, elements [begin, end).
struct TaskPos {
  int k;
  int64_t b, c, begin, end;
};

template <typename RowsT>
__device__ __forceinline__ TaskPos locate_task(const int64_t* first_task, const int64_t* cpr, const RowsT* rows,
                                               int64_t chunk, int64_t task) {
  TaskPos t;
  t.k = tensor_of(first_task, task);
  const int64_t local = task - first_task[t.k];
  t.b = local / cpr[t.k];
  t.c = local - t.b * cpr[t.k];
  t.begin = t.c * chunk;
  const int64_t row_numel = rows[t.k].row_numel;
  t.end = t.begin + chunk < row_numel ? t.begin + chunk : row_numel;
  return t;
}

}  // namespace cuda
}  // namespace fastgp
