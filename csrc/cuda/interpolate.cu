// fastgp::interpolate on CUDA: out = alpha_b * real + (1 - alpha_b) * fake,
// one streaming pass (reads 2, writes 1 element per element), one launch.
#include <ATen/Dispatch.h>

#include "device_rows.cuh"
#include "ops_cuda.h"

namespace fastgp {
namespace cuda {
namespace {

// Tensors of the launch: 0 = out, 1 = real, 2 = fake.
template <int MODE, typename scalar_t, typename acc_t>
__device__ __forceinline__ void interpolate_task(const Rows<3>& r, int64_t b, int64_t begin, int64_t end, acc_t w,
                                                 int lane) {
  constexpr int VEC = vec_size<scalar_t>();
  constexpr int U = unroll_for(MODE);
  const acc_t w1 = acc_t(1) - w;
  for (int64_t base = begin + lane * VEC; base < end; base += kWarp * VEC * U) {
    Pack<scalar_t, VEC> xr[U], xf[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      load_pack<MODE>(xr[u], r, 1, b, base + u * kWarp * VEC, end);
      load_pack<MODE>(xf[u], r, 2, b, base + u * kWarp * VEC, end);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      Pack<scalar_t, VEC> y;
#pragma unroll
      for (int v = 0; v < VEC; ++v)
        y.v[v] = static_cast<scalar_t>(w * static_cast<acc_t>(xr[u].v[v]) + w1 * static_cast<acc_t>(xf[u].v[v]));
      store_pack<MODE>(y, r, 0, b, base + u * kWarp * VEC, end);
    }
  }
}

// STRIDED: the index-computing instance, launched only for layouts that need
// it, so the common kernel stays small.
template <typename scalar_t, bool STRIDED>
__global__ void __launch_bounds__(kBlock, kMinBlocksPerSM)
    fastgp_interpolate_kernel(const Rows<3> r, const AnyFloat alpha, const int64_t chunk, const int64_t cpr,
                              const int64_t ntasks) {
  using acc_t = acc_type<scalar_t>;
  const int lane = threadIdx.x % kWarp;
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  for (int64_t task = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; task < ntasks;
       task += nwarps) {
    const int64_t b = task / cpr;
    const int64_t begin = (task - b * cpr) * chunk;
    const int64_t end = begin + chunk < r.row_numel ? begin + chunk : r.row_numel;
    const acc_t w = load_any<acc_t>(alpha, b);
    if constexpr (STRIDED) {
      interpolate_task<kStrided, scalar_t>(r, b, begin, end, w, lane);
    } else {
      if (r.mode == kVec)
        interpolate_task<kVec, scalar_t>(r, b, begin, end, w, lane);
      else
        interpolate_task<kDense, scalar_t>(r, b, begin, end, w, lane);
    }
  }
}

}  // namespace

at::Tensor interpolate_cuda(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& alpha) {
  const char* op = "fastgp::interpolate";
  check_interpolate(real, fake, alpha);
  const c10::cuda::CUDAGuard guard(real.device());
  // empty_like keeps a dense input's layout (contiguous, channels_last...)
  // and gives a dense one otherwise; fake kernels in ops.py do the same.
  at::Tensor out = at::empty_like(real);
  if (out.numel() == 0) return out;
  const AnyFloat a = any_float(alpha, op, "alpha");
  at::Tensor r = real, f = fake;
  Rows<3> rows;
  if (!make_rows<3>(rows, {&out, &r, &f})) {
    // More than kDevDims unmergeable dims: read dense copies in out's layout.
    r = at::empty_like(out).copy_(real);
    f = at::empty_like(out).copy_(fake);
    TORCH_INTERNAL_ASSERT(make_rows<3>(rows, {&out, &r, &f}));
  }
  const int64_t batch = real.size(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, real.scalar_type(), "fastgp_interpolate_cuda", [&] {
    const int64_t chunk = chunk_elems(out.numel(), vec_size<scalar_t>());
    const int64_t cpr = div_up(std::max<int64_t>(rows.row_numel, 1), chunk);
    const int64_t ntasks = batch * cpr;
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    constexpr auto slow = fastgp_interpolate_kernel<scalar_t, true>;
    constexpr auto fast = fastgp_interpolate_kernel<scalar_t, false>;
    if (rows.mode == kStrided)
      slow<<<grid_for<slow>(ntasks), kBlock, 0, stream>>>(rows, a, chunk, cpr, ntasks);
    else
      fast<<<grid_for<fast>(ntasks), kBlock, 0, stream>>>(rows, a, chunk, cpr, ntasks);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace cuda
}  // namespace fastgp
