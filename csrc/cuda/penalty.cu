// fastgp::penalty_forward and fastgp::penalty_backward on CUDA.
//
// Forward, 2 launches: (1) every warp sums the squares of one chunk of one
// row and writes it to its own slot of a partials buffer (rows are split
// over many warps, so a small batch of long rows still fills the GPU);
// (2) one block adds each row's partials in a fixed tree order, takes the
// norm, the per-sample penalty and the mean/sum, again in a fixed order.
// No atomics anywhere: results are bitwise reproducible.
// Backward, 1 launch: each warp computes its row's coefficient
// go_b * weight * red * inv_scale^2 * phi'(n_b)/n_b and streams g -> coef * g.
// inv_scale, norms and grad_out are read on the device (no sync, graph-safe).
#include <ATen/Dispatch.h>

#include <vector>

#include "device_rows.cuh"
#include "ops_cuda.h"

namespace fastgp {
namespace cuda {
namespace {

constexpr int kFinalizeThreads = 512;

// ------------------------------------------------------------------ forward
struct FwdArgs {
  Rows<1> rows[kMaxTensors];
  int64_t first_task[kMaxTensors + 1];  // prefix sums of batch * cpr
  int64_t cpr[kMaxTensors];             // chunks per row of each tensor
  int64_t part_off[kMaxTensors];        // column of its first chunk in a row of partials
  int64_t chunk;                        // elements per task
  int64_t parts_per_row;                // columns of the partials buffer
  int ntensors;
};

template <int MODE, typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t sum_squares_task(const Rows<1>& r, int64_t b, int64_t begin, int64_t end, int lane) {
  constexpr int VEC = vec_size<scalar_t>();
  constexpr int U = unroll_for(MODE);
  acc_t acc = 0;
  for (int64_t base = begin + lane * VEC; base < end; base += kWarp * VEC * U) {
    Pack<scalar_t, VEC> x[U];
#pragma unroll
    for (int u = 0; u < U; ++u) load_pack<MODE>(x[u], r, 0, b, base + u * kWarp * VEC, end);
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int v = 0; v < VEC; ++v) {
        const acc_t e = static_cast<acc_t>(x[u].v[v]);
        acc += e * e;
      }
  }
  return acc;
}

template <typename scalar_t, bool STRIDED>
__global__ void __launch_bounds__(kBlock, kMinBlocksPerSM)
    fastgp_penalty_partials_kernel(const FwdArgs args, acc_type<scalar_t>* __restrict__ partials) {
  using acc_t = acc_type<scalar_t>;
  const int lane = threadIdx.x % kWarp;
  const int64_t ntasks = args.first_task[args.ntensors];
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  for (int64_t task = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; task < ntasks;
       task += nwarps) {
    const TaskPos t = locate_task(args.first_task, args.cpr, args.rows, args.chunk, task);
    const int k = t.k;
    const int64_t b = t.b, c = t.c, begin = t.begin, end = t.end;
    const Rows<1>& r = args.rows[k];
    acc_t acc;
    // The strided instance serves launches holding an index-computing layout;
    // its other tensors take the scalar path (same element order, same sums).
    if constexpr (STRIDED) {
      if (r.mode == kStrided)
        acc = sum_squares_task<kStrided, scalar_t, acc_t>(r, b, begin, end, lane);
      else
        acc = sum_squares_task<kDense, scalar_t, acc_t>(r, b, begin, end, lane);
    } else {
      if (r.mode == kVec)
        acc = sum_squares_task<kVec, scalar_t, acc_t>(r, b, begin, end, lane);
      else
        acc = sum_squares_task<kDense, scalar_t, acc_t>(r, b, begin, end, lane);
    }
    // Butterfly: every lane ends with the same sum, in the same order.
#pragma unroll
    for (int o = kWarp / 2; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) partials[b * args.parts_per_row + args.part_off[k] + c] = acc;
  }
}

// Sum over the T = 2^t_log2 threads of a group (consecutive thread ids),
// returned in the group's first thread. Every thread of the block must call
// it (it synchronizes the block when groups span several warps).
__device__ __forceinline__ double group_sum(double v, int t_log2, double* smem) {
  const int T = 1 << t_log2;
  if (T <= kWarp) {
    for (int o = T / 2; o > 0; o /= 2) v += __shfl_down_sync(0xffffffffu, v, o, T);
    return v;
  }
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_down_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  const int wpg = T / kWarp;  // warps per group
  v = 0;
  if (warp % wpg == 0) {
    v = lane < wpg ? smem[warp + lane] : 0.0;
    for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  __syncthreads();
  return v;
}

template <typename acc_t>
__global__ void __launch_bounds__(kFinalizeThreads)
    fastgp_penalty_finalize_kernel(const acc_t* __restrict__ partials, const int64_t parts_per_row,
                                   const int64_t batch, const int t_log2, const AnyFloat inv_scale,
                                   const double weight, const double center, const double power, const bool one_sided,
                                   const int reduction, acc_t* __restrict__ norms, acc_t* __restrict__ out) {
  __shared__ double smem[kFinalizeThreads / kWarp];
  const int T = 1 << t_log2;
  const int groups = kFinalizeThreads / T;
  const int g = threadIdx.x / T, li = threadIdx.x % T;
  const double s = load_any<double>(inv_scale, 0);
  double total = 0;  // this group's rows, in row order (kept by its first thread)
  // Uniform trip count: group_sum may synchronize the block.
  const int64_t rounds = div_up(batch, groups);
  for (int64_t round = 0; round < rounds; ++round) {
    const int64_t b = round * groups + g;
    double ss = 0;
    if (b < batch)
      for (int64_t j = li; j < parts_per_row; j += T) ss += static_cast<double>(partials[b * parts_per_row + j]);
    ss = group_sum(ss, t_log2, smem);
    if (li == 0 && b < batch) {
      const acc_t n = sample_norm<acc_t>(ss, s);
      norms[b] = n;
      const acc_t v = penalty_value<acc_t>(n, acc_t(center), acc_t(power), one_sided);
      if (reduction == kNone)
        out[b] = static_cast<acc_t>(weight) * v;
      else
        total += static_cast<double>(v);
    }
  }
  if (reduction == kNone) return;
  // Fixed tree over the groups' totals (threads other than a group's first hold 0).
  total = li == 0 ? total : 0.0;
  for (int o = kWarp / 2; o > 0; o /= 2) total += __shfl_down_sync(0xffffffffu, total, o);
  if (threadIdx.x % kWarp == 0) smem[threadIdx.x / kWarp] = total;
  __syncthreads();
  if (threadIdx.x < kWarp) {
    total = threadIdx.x < kFinalizeThreads / kWarp ? smem[threadIdx.x] : 0.0;
    for (int o = kWarp / 2; o > 0; o /= 2) total += __shfl_down_sync(0xffffffffu, total, o);
    if (threadIdx.x == 0) {
      const acc_t red = reduction_factor<acc_t>(reduction, batch);
      out[0] = static_cast<acc_t>(weight * static_cast<double>(red) * total);
    }
  }
}

// ----------------------------------------------------------------- backward
struct BwdArgs {
  Rows<2> rows[kMaxTensors];  // tensor 0 = output, 1 = gradient
  int64_t first_task[kMaxTensors + 1];
  int64_t cpr[kMaxTensors];
  int64_t chunk;
  int ntensors;
};

struct CoefArgs {
  AnyFloat norms, grad_out, inv_scale;
  double weight, center, power;
  int64_t batch;
  int reduction;
  bool one_sided;
};

template <int MODE, typename scalar_t, typename acc_t>
__device__ __forceinline__ void scale_task(const Rows<2>& r, int64_t b, int64_t begin, int64_t end, acc_t coef,
                                           int lane) {
  constexpr int VEC = vec_size<scalar_t>();
  constexpr int U = unroll_for(MODE);
  for (int64_t base = begin + lane * VEC; base < end; base += kWarp * VEC * U) {
    Pack<scalar_t, VEC> x[U];
#pragma unroll
    for (int u = 0; u < U; ++u) load_pack<MODE>(x[u], r, 1, b, base + u * kWarp * VEC, end);
#pragma unroll
    for (int u = 0; u < U; ++u) {
#pragma unroll
      for (int v = 0; v < VEC; ++v) x[u].v[v] = static_cast<scalar_t>(coef * static_cast<acc_t>(x[u].v[v]));
      store_pack<MODE>(x[u], r, 0, b, base + u * kWarp * VEC, end);
    }
  }
}

template <typename scalar_t, bool STRIDED>
__global__ void __launch_bounds__(kBlock, kMinBlocksPerSM)
    fastgp_penalty_backward_kernel(const BwdArgs args, const CoefArgs c) {
  using acc_t = acc_type<scalar_t>;
  const int lane = threadIdx.x % kWarp;
  const int64_t ntasks = args.first_task[args.ntensors];
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const double s = load_any<double>(c.inv_scale, 0);
  const acc_t wss = static_cast<acc_t>(c.weight * s * s);
  const acc_t red = reduction_factor<acc_t>(c.reduction, c.batch);
  for (int64_t task = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; task < ntasks;
       task += nwarps) {
    const TaskPos t = locate_task(args.first_task, args.cpr, args.rows, args.chunk, task);
    const int64_t b = t.b, begin = t.begin, end = t.end;
    const Rows<2>& r = args.rows[t.k];
    const acc_t coef = backward_coef<acc_t>(load_any<acc_t>(c.grad_out, b), wss, red, load_any<acc_t>(c.norms, b),
                                            acc_t(c.center), acc_t(c.power), c.one_sided);
    // The strided instance serves launches holding an index-computing layout;
    // its other tensors take the scalar path (same element order, same sums).
    if constexpr (STRIDED) {
      if (r.mode == kStrided)
        scale_task<kStrided, scalar_t>(r, b, begin, end, coef, lane);
      else
        scale_task<kDense, scalar_t>(r, b, begin, end, coef, lane);
    } else {
      if (r.mode == kVec)
        scale_task<kVec, scalar_t>(r, b, begin, end, coef, lane);
      else
        scale_task<kDense, scalar_t>(r, b, begin, end, coef, lane);
    }
  }
}

int log2_ceil(int64_t x) {
  int l = 0;
  while ((int64_t{1} << l) < x) ++l;
  return l;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> penalty_forward_cuda(at::TensorList grads,
                                                        const std::optional<at::Tensor>& inv_scale, double weight,
                                                        double center, double power, bool one_sided,
                                                        int64_t reduction) {
  const char* op = "fastgp::penalty_forward";
  check_grads(grads, op);
  check_inv_scale(inv_scale, grads[0], op);
  check_reduction(reduction, op);
  const c10::cuda::CUDAGuard guard(grads[0].device());
  const int64_t batch = grads[0].size(0);
  const auto acc_opts = grads[0].options().dtype(acc_type_of(grads[0].scalar_type()));
  at::Tensor norms = at::empty({batch}, acc_opts);
  at::Tensor out = reduction == kNone ? at::empty({batch}, acc_opts) : at::empty({}, acc_opts);
  const AnyFloat s = inv_scale.has_value() ? any_float(*inv_scale, op, "inv_scale") : AnyFloat{};

  const int64_t ntensors = static_cast<int64_t>(grads.size());
  std::vector<at::Tensor> gs(grads.begin(), grads.end());
  std::vector<Rows<1>> rows(ntensors);
  int64_t total = 0;
  for (int64_t k = 0; k < ntensors; ++k) {
    if (!make_rows<1>(rows[k], {&gs[k]})) {  // more than kDevDims unmergeable dims: rare
      gs[k] = gs[k].contiguous();
      TORCH_INTERNAL_ASSERT(make_rows<1>(rows[k], {&gs[k]}));
    }
    total += batch * rows[k].row_numel;
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads[0].scalar_type(), "fastgp_penalty_forward_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    const int64_t chunk = chunk_elems(total, vec_size<scalar_t>());
    std::vector<int64_t> cpr(ntensors), part_off(ntensors);
    int64_t parts_per_row = 0;
    for (int64_t k = 0; k < ntensors; ++k) {
      cpr[k] = div_up(std::max<int64_t>(rows[k].row_numel, 1), chunk);
      part_off[k] = parts_per_row;
      parts_per_row += cpr[k];
    }
    at::Tensor partials = at::empty({batch * parts_per_row}, acc_opts);
    // One launch per kMaxTensors gradients (a critic has one to a few inputs).
    for (int64_t k0 = 0; k0 < ntensors; k0 += kMaxTensors) {
      FwdArgs args{};
      args.ntensors = static_cast<int>(std::min<int64_t>(ntensors - k0, kMaxTensors));
      args.chunk = chunk;
      args.parts_per_row = parts_per_row;
      bool strided = false;
      for (int j = 0; j < args.ntensors; ++j) {
        args.rows[j] = rows[k0 + j];
        args.cpr[j] = cpr[k0 + j];
        args.part_off[j] = part_off[k0 + j];
        args.first_task[j + 1] = args.first_task[j] + batch * cpr[k0 + j];
        strided = strided || rows[k0 + j].mode == kStrided;
      }
      const int64_t ntasks = args.first_task[args.ntensors];
      constexpr auto slow = fastgp_penalty_partials_kernel<scalar_t, true>;
      constexpr auto fast = fastgp_penalty_partials_kernel<scalar_t, false>;
      if (strided)
        slow<<<grid_for<slow>(ntasks), kBlock, 0, stream>>>(args, partials.mutable_data_ptr<acc_t>());
      else
        fast<<<grid_for<fast>(ntasks), kBlock, 0, stream>>>(args, partials.mutable_data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    // Threads per row in the finalize: all rows at once when the batch allows
    // (one round), never more threads than a row has partials.
    const int groups_log2 = std::min(log2_ceil(batch), log2_ceil(kFinalizeThreads));
    const int t_log2 = std::min(log2_ceil(parts_per_row), log2_ceil(kFinalizeThreads) - groups_log2);
    fastgp_penalty_finalize_kernel<acc_t><<<1, kFinalizeThreads, 0, stream>>>(
        partials.const_data_ptr<acc_t>(), parts_per_row, batch, t_log2, s, weight, center, power, one_sided,
        static_cast<int>(reduction), norms.mutable_data_ptr<acc_t>(), out.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, norms};
}

std::vector<at::Tensor> penalty_backward_cuda(const at::Tensor& grad_out, at::TensorList grads,
                                              const at::Tensor& norms, const std::optional<at::Tensor>& inv_scale,
                                              double weight, double center, double power, bool one_sided,
                                              int64_t reduction) {
  const char* op = "fastgp::penalty_backward";
  check_backward_args(grad_out, grads, norms, inv_scale, reduction, op);
  const int64_t batch = grads[0].size(0);
  const c10::cuda::CUDAGuard guard(grads[0].device());
  CoefArgs c;
  c.norms = any_float(norms, op, "norms");
  c.grad_out = any_float(grad_out, op, "grad_out");
  c.inv_scale = inv_scale.has_value() ? any_float(*inv_scale, op, "inv_scale") : AnyFloat{};
  c.weight = weight;
  c.center = center;
  c.power = power;
  c.batch = batch;
  c.reduction = static_cast<int>(reduction);
  c.one_sided = one_sided;

  const int64_t ntensors = static_cast<int64_t>(grads.size());
  std::vector<at::Tensor> outs;
  outs.reserve(ntensors);
  std::vector<at::Tensor> gs(grads.begin(), grads.end());
  std::vector<Rows<2>> rows(ntensors);
  int64_t total = 0;
  for (int64_t k = 0; k < ntensors; ++k) {
    outs.push_back(at::empty_like(gs[k]));  // the fake kernel's layout
    if (!make_rows<2>(rows[k], {&outs[k], &gs[k]})) {  // rare: read a dense copy in the output's layout
      gs[k] = at::empty_like(outs[k]).copy_(gs[k]);
      TORCH_INTERNAL_ASSERT(make_rows<2>(rows[k], {&outs[k], &gs[k]}));
    }
    total += outs[k].numel();
  }
  if (total == 0) return outs;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads[0].scalar_type(), "fastgp_penalty_backward_cuda", [&] {
    const int64_t chunk = chunk_elems(total, vec_size<scalar_t>());
    for (int64_t k0 = 0; k0 < ntensors; k0 += kMaxTensors) {
      BwdArgs args{};
      args.ntensors = static_cast<int>(std::min<int64_t>(ntensors - k0, kMaxTensors));
      args.chunk = chunk;
      bool strided = false;
      for (int j = 0; j < args.ntensors; ++j) {
        args.rows[j] = rows[k0 + j];
        args.cpr[j] = div_up(std::max<int64_t>(rows[k0 + j].row_numel, 1), chunk);
        args.first_task[j + 1] = args.first_task[j] + batch * args.cpr[j];
        strided = strided || rows[k0 + j].mode == kStrided;
      }
      const int64_t ntasks = args.first_task[args.ntensors];
      constexpr auto slow = fastgp_penalty_backward_kernel<scalar_t, true>;
      constexpr auto fast = fastgp_penalty_backward_kernel<scalar_t, false>;
      if (strided)
        slow<<<grid_for<slow>(ntasks), kBlock, 0, stream>>>(args, c);
      else
        fast<<<grid_for<fast>(ntasks), kBlock, 0, stream>>>(args, c);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return outs;
}

}  // namespace cuda
}  // namespace fastgp
