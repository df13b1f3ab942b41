// fastgp::interpolate: out = alpha_b * real + (1 - alpha_b) * fake, one
// streaming pass (reads 2, writes 1 element per element), one launch. out is
// empty_like(real); each of out, real and fake takes its own load path, so a
// fake in another dense layout (channels_last next to a contiguous real)
// costs computed offsets for fake alone. The kernel and its host code, for a
// device policy (interpolate.cu: the GPU; the CPU emulation in the tests).
#pragma once

#include <ATen/Dispatch.h>

#include <vector>

#include "rows_map.cuh"

namespace fastgp {
namespace cuda {
namespace {

template <typename acc_t>
struct InterpolateOp {
  using Row = acc_t;
  AnyFloat alpha;
  __device__ __forceinline__ acc_t row_value(int64_t b) const { return load_any<acc_t>(alpha, b); }
  __device__ __forceinline__ acc_t apply(acc_t w, const acc_t (&x)[2]) const {
    return w * x[0] + (acc_t(1) - w) * x[1];
  }
};

template <typename scalar_t, bool GENERAL>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSM)
    fastgp_interpolate_kernel(const plan::Launch<3, 1> l, const InterpolateOp<acc_type<scalar_t>> op) {
  map_rows<scalar_t, GENERAL>(l, op);
}

template <class Device>
at::Tensor run_interpolate(const Device& device, const at::Tensor& real, const at::Tensor& fake,
                           const at::Tensor& alpha) {
  const char* op = "fastgp::interpolate";
  check_interpolate(real, fake, alpha);
  // empty_like keeps a dense input's layout (contiguous, channels_last...)
  // and gives a dense one otherwise; the fake kernels in ops.py do the same.
  at::Tensor out = at::empty_like(real);
  if (out.numel() == 0) return out;
  const AnyFloat a = any_float(alpha, op, "alpha");
  at::Tensor r = real, f = fake;
  const std::vector<plan::Operand<3>> ops = plan::interpolate_operands(out, r, f);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, real.scalar_type(), "fastgp_interpolate", [&] {
    run_map_rows<scalar_t, 3, 1, fastgp_interpolate_kernel<scalar_t, false>, fastgp_interpolate_kernel<scalar_t, true>>(
        device, ops, real.size(0), InterpolateOp<acc_type<scalar_t>>{a});
  });
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace fastgp
