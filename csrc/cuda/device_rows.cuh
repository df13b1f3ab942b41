// Device-side building blocks of the fastgp CUDA kernels: pack loads and
// stores on each tensor's own path (launch_plan.h chooses it), small tensors
// read in any float dtype, and the grid of a launch. No CUDA runtime here:
// the kernels also compile for the CPU emulation (simt_emulation.h), which
// runs them in the tests; launching on a GPU is cuda_device.h's.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>

#include "../checks.h"
#include "../launch_plan.h"
#include "../penalty_math.h"

namespace fastgp {
namespace cuda {

using plan::kWarp;
constexpr int kThreads = 256;  // threads per block of the streaming kernels
constexpr int kWarpsPerBlock = kThreads / kWarp;
constexpr int kMinBlocksPerSM = 2;  // launch bounds: up to 128 registers a thread

// Elements of scalar_t in one 128-bit access.
template <typename scalar_t>
constexpr int vec_size() {
  return 16 / static_cast<int>(sizeof(scalar_t));
}

template <typename scalar_t, int VEC>
struct alignas(16) Pack {
  scalar_t v[VEC];
};

// p.v[v] = element e + v of row b of tensor t of an operand (0 past `end`),
// accessed as plan::pack_access says. Kernels built without GENERAL never
// see a strided tensor (the host picks the instance).
template <bool GENERAL, typename scalar_t, int VEC, int NT>
__device__ __forceinline__ void load_pack(Pack<scalar_t, VEC>& p, const plan::Operand<NT>& o, int t, int64_t b,
                                          int64_t e, int64_t end) {
  const scalar_t* base = reinterpret_cast<const scalar_t*>(o.ptr[t]);
  const plan::Path access = plan::pack_access(o, t, e, end, VEC, GENERAL);
  if (access == plan::kVector) {
    // Moved as uint4 so that the load is a single 128-bit access.
    static_assert(sizeof(Pack<scalar_t, VEC>) == sizeof(uint4), "a pack is 128 bits");
    const uint4 bits = *reinterpret_cast<const uint4*>(base + b * o.row_stride[t] + e);
    memcpy(&p, &bits, sizeof(bits));
    return;
  }
#pragma unroll
  for (int v = 0; v < VEC; ++v) p.v[v] = scalar_t(0.0f);
  if (access == plan::kStrided) {
    if (e >= end) return;
    plan::StridedCursor<NT> c(o, t, b, e);
#pragma unroll
    for (int v = 0; v < VEC; ++v) {
      if (e + v >= end) break;
      if (v > 0) c.advance(o, t, b, e + v);
      p.v[v] = base[c.offset];
    }
    return;
  }
  const scalar_t* row = base + b * o.row_stride[t];
#pragma unroll
  for (int v = 0; v < VEC; ++v)
    if (e + v < end) p.v[v] = row[e + v];
}

// Stores p.v[v] to element e + v of row b of tensor t (nothing past `end`).
template <bool GENERAL, typename scalar_t, int VEC, int NT>
__device__ __forceinline__ void store_pack(const Pack<scalar_t, VEC>& p, const plan::Operand<NT>& o, int t,
                                           int64_t b, int64_t e, int64_t end) {
  scalar_t* base = reinterpret_cast<scalar_t*>(o.ptr[t]);
  const plan::Path access = plan::pack_access(o, t, e, end, VEC, GENERAL);
  if (access == plan::kVector) {
    uint4 bits;
    memcpy(&bits, &p, sizeof(bits));
    // The intrinsic keeps the store one 128-bit access (a plain assignment
    // gets split into 32-bit stores by the optimizer); .wb is the default policy.
    __stwb(reinterpret_cast<uint4*>(base + b * o.row_stride[t] + e), bits);
    return;
  }
  if (access == plan::kStrided) {
    if (e >= end) return;
    plan::StridedCursor<NT> c(o, t, b, e);
#pragma unroll
    for (int v = 0; v < VEC; ++v) {
      if (e + v >= end) break;
      if (v > 0) c.advance(o, t, b, e + v);
      base[c.offset] = p.v[v];
    }
    return;
  }
  scalar_t* row = base + b * o.row_stride[t];
#pragma unroll
  for (int v = 0; v < VEC; ++v)
    if (e + v < end) row[e + v] = p.v[v];
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
  // A one-element tensor broadcasts; so does an expanded one (stride 0).
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

// A launch sized to what the device holds at once of its kernel.
struct GridFit {
  int64_t resident_blocks;
  int64_t resident_warps() const { return resident_blocks * kWarpsPerBlock; }
  int64_t blocks(int64_t tasks) const { return plan::grid_blocks(tasks, kThreads, resident_blocks); }
};

// The first task and the step of a grid-stride loop over warp tasks.
__device__ __forceinline__ int64_t first_warp_task() {
  return static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
}
__device__ __forceinline__ int64_t warp_task_stride() { return static_cast<int64_t>(gridDim.x) * kWarpsPerBlock; }

}  // namespace cuda
}  // namespace fastgp
