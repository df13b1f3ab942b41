// fastgp::penalty_forward, at most 2 launches for up to
// plan::kMaxOperands gradients:
//  * folded (rows fit the device's warps whole): every task sums whole rows
//    of all gradients, takes the norms and per-sample penalties itself, and,
//    for a mean or sum, a pairwise sum of its rows' penalties; a one-block
//    finalize adds the tasks' sums. Reduction "none": one launch.
//  * split (few long rows): tasks sum chunks of rows into a partials buffer;
//    the finalize block adds each row's chunks, takes norms and penalties,
//    and reduces them.
// Every sum is a pairwise tree fixed by the shapes (pairwise_sum.cuh), so the
// bits do not depend on the mode, the task sizes or the GPU. No atomics; the
// inv_scale is read on the device (no sync, graph-safe).
// The kernels and their host code, for a device policy (penalty_forward.cu:
// the GPU; the CPU emulation in the tests).
#pragma once

#include <ATen/Dispatch.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "pairwise_sum.cuh"
#include "penalty_params.cuh"

namespace fastgp {
namespace cuda {
namespace {

using plan::kMaxOperands;
using FwdLaunch = plan::Launch<1, kMaxOperands>;

constexpr int kFinalizeThreads = 1024;
constexpr int kFinalizeOperands = 64;  // operands per finalize pass (more take more passes)
constexpr int kColumnLevels = 16;      // a finalize thread sums up to 2^16 chunk columns of a row
constexpr int kSequenceLevels = 48;

template <typename acc_t>
__device__ __forceinline__ acc_t row_norm(const SqSum& s, double inv_scale) {
  return scaled_norm<acc_t>(s.ssq, s.e, inv_scale);
}

template <typename acc_t>
struct FwdArgs {
  PenaltyParams p;
  SqSum* partials;                   // split mode: [batch, ncols]
  int64_t ncols;
  int64_t first_col[kMaxOperands];   // column of each operand's first chunk
  double* task_values;               // folded mode with a reduction: one pairwise sum per task
  acc_t* norms;
  acc_t* out;
};

// ------------------------------------------------------------------ forward
template <typename scalar_t, bool GENERAL>
struct SumVisitor {
  using acc_t = acc_type<scalar_t>;
  static constexpr bool SCALED = std::is_same<scalar_t, double>::value;
  using Add = SqAdd<SCALED>;
  static constexpr int VEC = vec_size<scalar_t>();
  static constexpr int U = plan::kUnroll > plan::kStepUnroll ? plan::kUnroll : plan::kStepUnroll;

  const FwdLaunch& l;
  const FwdArgs<acc_t>& a;
  const int lane;
  const int64_t task;
  const double inv_scale;
  const bool fold;
  Pack<scalar_t, VEC> x[U];
  WarpTree<SqSum, Add> blocks;        // wide walk: the operand's blocks so far
  WarpTree<double, Plus<double>> values; // folded: the task's penalties so far
  SqSum row_sum;                      // wide walk: the row's operands so far
  SqSum step_sum[plan::kStepUnroll];  // narrow walk: each step's row
  int lanes;
  int64_t pack_elem;

  __device__ __forceinline__ SumVisitor(const FwdLaunch& l_, const FwdArgs<acc_t>& a_, int lane_, int64_t task_,
                                        double inv_scale_)
      : l(l_), a(a_), lane(lane_), task(task_), inv_scale(inv_scale_), fold(l_.all_operands) {}

  // The sum of squares of this lane's packs [u0, u0 + N), as a pairwise tree
  // over aligned groups of `width` lanes (every lane gets its group's sum).
  template <int N>
  __device__ __forceinline__ SqSum group_sum(int u0, int width) const {
    acc_t s = 0;
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
      for (int v = 0; v < VEC; ++v) {
        const acc_t e = static_cast<acc_t>(x[u0 + i].v[v]);
        s = fma(e, e, s);
      }
    s = lanes_tree<acc_t, Plus<acc_t>>(s, 1, width);
    // NaN (a NaN in the data) fails both tests and goes through the rescue unchanged.
    const bool fast = s >= static_cast<acc_t>(rescue_below<acc_t>()) &&
                      s <= (SCALED ? static_cast<acc_t>(kDoubleSafeMax) : FloatRange<acc_t>::largest());
    const SqSum quick{static_cast<double>(s), 0, 0};
    if (!__any_sync(kFullMask, !fast)) return quick;
    const SqSum careful = rescue<N>(u0, width);
    return fast ? quick : careful;
  }

  // The same sum, accurate when the fast one overflowed or underflowed:
  // float data in double; double data scaled by 2^-ilogb(max |x|).
  template <int N>
  __device__ __forceinline__ SqSum rescue(int u0, int width) const {
    double m = 0;
    if (SCALED) {
#pragma unroll
      for (int i = 0; i < N; ++i)
#pragma unroll
        for (int v = 0; v < VEC; ++v) m = fmax(m, fabs(static_cast<double>(x[u0 + i].v[v])));
      for (int o = 1; o < width; o *= 2) m = fmax(m, shfl_xor(m, o));
    }
    const int e = (SCALED && m > 0 && m <= FloatRange<double>::largest()) ? ilogb(m) : 0;
    double s = 0;
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
      for (int v = 0; v < VEC; ++v) {
        const double y = ldexp(static_cast<double>(x[u0 + i].v[v]), -e);
        s = fma(y, y, s);
      }
    s = lanes_tree<double, Plus<double>>(s, 1, width);
    return SqSum{s, e, 0};
  }

  // A finished row: its norm and penalty stored by `writer`; its penalty returned.
  __device__ __forceinline__ double finish_row(int64_t b, const SqSum& s, bool writer) const {
    const acc_t n = row_norm<acc_t>(s, inv_scale);
    const acc_t v = sample_penalty<acc_t>(n, a.p);
    if (writer) {
      a.norms[b] = n;
      if (a.p.reduction == kNone) a.out[b] = static_cast<acc_t>(a.p.weight) * v;
    }
    return static_cast<double>(v);
  }

  __device__ __forceinline__ void task_begin(const plan::TaskPos& p) {
    values.reset();
    lanes = p.lanes;
    pack_elem = static_cast<int64_t>(lane % p.lanes) * VEC;
  }
  __device__ __forceinline__ void pack(int u, int k, int64_t b, int64_t e, int64_t end) {
    load_pack<GENERAL>(x[u], l.op[k], 0, b, e, end);
  }

  // wide walk
  __device__ __forceinline__ void row_begin(int64_t) { row_sum = sq_zero(); }
  __device__ __forceinline__ void operand_begin(int) { blocks.reset(); }
  __device__ __forceinline__ void block_end(int, int64_t, int64_t, int64_t) {
    blocks.push(group_sum<plan::kUnroll>(0, kWarp), lane);
  }
  __device__ __forceinline__ void operand_end(int k, int64_t b, int64_t chunk) {
    const SqSum s = blocks.total();
    if (fold)
      row_sum = Add()(row_sum, s);
    else if (lane == 0)
      a.partials[b * a.ncols + a.first_col[k] + chunk] = s;
  }
  __device__ __forceinline__ void row_end(int64_t b) {
    if (!fold) return;
    const double v = finish_row(b, row_sum, lane == 0);
    if (a.p.reduction != kNone) values.push(v, lane);
  }

  // narrow walk
  __device__ __forceinline__ void rows_begin(const plan::RowSet&) {
#pragma unroll
    for (int u = 0; u < plan::kStepUnroll; ++u) step_sum[u] = sq_zero();
  }
  __device__ __forceinline__ void packs_end(int k, const plan::RowSet& rs) {
#pragma unroll
    for (int u = 0; u < plan::kStepUnroll; ++u) {
      const SqSum s = group_sum<1>(u, lanes);
      if (fold)
        step_sum[u] = Add()(step_sum[u], s);
      else if (lane % lanes == 0 && rs.valid[u])
        a.partials[rs.b[u] * a.ncols + a.first_col[k]] = s;
    }
  }
  __device__ __forceinline__ void rows_end(const plan::RowSet& rs) {
    if (!fold) return;
#pragma unroll
    for (int u = 0; u < plan::kStepUnroll; ++u) {
      const double v = finish_row(rs.b[u], step_sum[u], rs.valid[u] && lane % lanes == 0);
      if (a.p.reduction == kNone) continue;
      // The step's rows (one per group of lanes) as a pairwise tree.
      const double step = lanes_tree<double, Plus<double>>(rs.valid[u] ? v : 0.0, lanes, kWarp);
      if (u < rs.nsteps) values.push(step, lane);
    }
  }
  __device__ __forceinline__ void task_end(const plan::TaskPos&) {
    if (!fold || a.p.reduction == kNone) return;
    const double total = values.total();
    if (lane == 0) a.task_values[task] = total;
  }
};

template <typename scalar_t, bool GENERAL>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSM)
    fastgp_penalty_partials_kernel(const FwdLaunch l, const FwdArgs<acc_type<scalar_t>> a) {
  const int lane = threadIdx.x % kWarp;
  const int64_t ntasks = plan::task_count(l);
  const double inv_scale = load_any<double>(a.p.inv_scale, 0);
  for (int64_t task = first_warp_task(); task < ntasks; task += warp_task_stride()) {
    SumVisitor<scalar_t, GENERAL> v(l, a, lane, task, inv_scale);
    plan::walk_task<vec_size<scalar_t>()>(l, task, lane, v);
  }
}

// ----------------------------------------------------------------- finalize
template <typename acc_t>
struct FinalizeArgs {
  PenaltyParams p;
  // split mode: partial sums [batch, ncols]; operand k owns columns
  // [first_col[k], first_col[k] + cols[k]) of each row.
  const SqSum* partials;
  int64_t ncols;
  int64_t first_col[kFinalizeOperands];
  int64_t cols[kFinalizeOperands];
  int noperands;
  int threads_per_row_log2;
  const SqSum* row_in;  // the rows' sums over earlier operands (passes after the first), or null
  SqSum* row_out;       // where a pass that is not the last leaves them, or null
  // folded mode: the tasks' pairwise sums of penalties
  const double* task_values;
  int64_t nvalues;
  int64_t batch;
  acc_t* norms;
  acc_t* out;
};

// Pairwise tree over aligned groups of T consecutive threads (T a power of
// two <= the block); the sum lands in each group's first thread. Every thread
// of the block calls it (it synchronizes when groups span warps).
template <typename T, class Add>
__device__ __forceinline__ T threads_tree(T v, int group, T* smem) {
  v = lanes_tree<T, Add>(v, 1, group < kWarp ? group : kWarp);
  if (group <= kWarp) return v;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  const int warps = group / kWarp;
  v = Add::zero();
  if (warp % warps == 0) {
    v = lane < warps ? smem[warp + lane] : Add::zero();
    v = lanes_tree<T, Add>(v, 1, warps);
  }
  __syncthreads();
  return v;
}

template <typename acc_t>
__device__ __forceinline__ void store_reduced(const FinalizeArgs<acc_t>& a, double total) {
  const acc_t red = reduction_factor<acc_t>(a.p.reduction, a.batch);
  a.out[0] = static_cast<acc_t>(a.p.weight * static_cast<double>(red) * total);
}

template <typename acc_t, bool SCALED>
__global__ void __launch_bounds__(kFinalizeThreads)
    fastgp_penalty_finalize_kernel(const FinalizeArgs<acc_t> a) {
  using Add = SqAdd<SCALED>;
  __shared__ SqSum sq_smem[kFinalizeThreads / kWarp];
  __shared__ double d_smem[kFinalizeThreads];
  const int tid = threadIdx.x;

  if (a.task_values != nullptr) {  // folded mode: add the tasks' sums
    const int64_t per = plan::pow2_ceil(plan::div_up(a.nvalues, kFinalizeThreads));
    SeqTree<double, Plus<double>, kSequenceLevels> t;
    for (int64_t i = tid * per; i < (tid + 1) * per && i < a.nvalues; ++i) t.push(a.task_values[i]);
    const double total = threads_tree<double, Plus<double>>(t.total(), kFinalizeThreads, d_smem);
    if (tid == 0) store_reduced(a, total);
    return;
  }

  const int T = 1 << a.threads_per_row_log2;
  const int rows_per_round = kFinalizeThreads / T;
  const int g = tid / T, li = tid % T;
  const bool last_pass = a.row_out == nullptr;
  const double inv_scale = load_any<double>(a.p.inv_scale, 0);
  SeqTree<double, Plus<double>, kSequenceLevels> rounds;  // kept by thread 0
  const int64_t nrounds = plan::div_up(a.batch, rows_per_round);
  for (int64_t round = 0; round < nrounds; ++round) {  // the same trip count in every thread
    const int64_t b = round * rows_per_round + g;
    const bool valid = b < a.batch;
    SqSum row = (valid && a.row_in != nullptr) ? a.row_in[b] : sq_zero();
    for (int k = 0; k < a.noperands; ++k) {
      const int64_t n = a.cols[k];
      if (n == 0) continue;
      const int64_t per = n > T ? plan::pow2_ceil(n) / T : 1;
      SeqTree<SqSum, Add, kColumnLevels> t;
      if (valid)
        for (int64_t c = li * per; c < (li + 1) * per && c < n; ++c)
          t.push(a.partials[b * a.ncols + a.first_col[k] + c]);
      const SqSum s = threads_tree<SqSum, Add>(t.total(), T, sq_smem);
      row = Add()(row, s);
    }
    double v = 0;
    if (li == 0 && valid) {
      if (!last_pass) {
        a.row_out[b] = row;
      } else {
        const acc_t n = row_norm<acc_t>(row, inv_scale);
        a.norms[b] = n;
        const acc_t pv = sample_penalty<acc_t>(n, a.p);
        if (a.p.reduction == kNone)
          a.out[b] = static_cast<acc_t>(a.p.weight) * pv;
        else
          v = static_cast<double>(pv);
      }
    }
    if (!last_pass || a.p.reduction == kNone) continue;
    // This round's rows (in the groups' first threads) as one pairwise tree.
    if (li == 0) d_smem[g] = v;
    __syncthreads();
    v = tid < rows_per_round ? d_smem[tid] : 0.0;
    __syncthreads();
    v = threads_tree<double, Plus<double>>(v, kFinalizeThreads, d_smem);
    if (tid == 0) rounds.push(v);
  }
  if (last_pass && a.p.reduction != kNone && tid == 0) store_reduced(a, rounds.total());
}

template <class Device>
std::tuple<at::Tensor, at::Tensor> run_penalty_forward(const Device& device, at::TensorList grads,
                                                       const std::optional<at::Tensor>& inv_scale, double weight,
                                                       double center, double power, bool one_sided,
                                                       int64_t reduction) {
  const char* op = "fastgp::penalty_forward";
  check_grads(grads, op);
  check_inv_scale(inv_scale, grads[0], op);
  check_reduction(reduction, op);
  const int64_t batch = grads[0].size(0);
  const auto acc_opts = grads[0].options().dtype(acc_type_of(grads[0].scalar_type()));
  at::Tensor norms = at::empty({batch}, acc_opts);
  at::Tensor out = reduction == kNone ? at::empty({batch}, acc_opts) : at::empty({}, acc_opts);
  const AnyFloat s = inv_scale.has_value() ? any_float(*inv_scale, op, "inv_scale") : AnyFloat{};

  const int64_t ntensors = static_cast<int64_t>(grads.size());
  std::vector<at::Tensor> gs(grads.begin(), grads.end());
  const std::vector<plan::Operand<1>> operands = plan::forward_operands(gs);
  const auto double_opts = grads[0].options().dtype(at::kDouble);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads[0].scalar_type(), "fastgp_penalty_forward", [&] {
    using acc_t = acc_type<scalar_t>;
    constexpr bool kScaled = std::is_same<scalar_t, double>::value;
    constexpr auto fast = fastgp_penalty_partials_kernel<scalar_t, false>;
    constexpr auto slow = fastgp_penalty_partials_kernel<scalar_t, true>;
    constexpr auto finalize = fastgp_penalty_finalize_kernel<acc_t, kScaled>;
    auto fit = [&](bool general) {
      return GridFit{general ? device.template resident_blocks<slow>() : device.template resident_blocks<fast>()};
    };
    const plan::ForwardPlan fp = plan::plan_forward(operands, batch, vec_size<scalar_t>(),
                                                    [&](bool general) { return fit(general).resident_warps(); });
    const PenaltyParams params = penalty_params(s, weight, center, power, one_sided, reduction);
    FwdArgs<acc_t> args{};
    args.p = params;
    args.norms = norms.mutable_data_ptr<acc_t>();
    args.out = out.mutable_data_ptr<acc_t>();
    FinalizeArgs<acc_t> f{};
    f.p = params;
    f.batch = batch;
    f.norms = args.norms;
    f.out = args.out;
    auto launch = [&](const FwdLaunch& l) {
      const int64_t ntasks = plan::task_count(l);
      if (ntasks == 0) return;
      if (plan::needs_strided_kernel(l))
        device.template launch<slow>(fit(true).blocks(ntasks), kThreads, l, args);
      else
        device.template launch<fast>(fit(false).blocks(ntasks), kThreads, l, args);
    };
    auto launch_finalize = [&] { device.template launch<finalize>(1, kFinalizeThreads, f); };

    if (fp.folded) {  // one launch does everything but adding the tasks' penalties
      const FwdLaunch& l = fp.launches[0];
      at::Tensor task_values;
      if (reduction != kNone) {
        task_values = at::empty({plan::task_count(l)}, double_opts);
        args.task_values = task_values.mutable_data_ptr<double>();
      }
      launch(l);
      if (reduction != kNone) {
        f.task_values = task_values.const_data_ptr<double>();
        f.nvalues = task_values.numel();
        launch_finalize();
      }
      return;
    }

    // Split: partial sums per (row, operand, chunk), then the finalize.
    int64_t max_cols = 1;
    for (int64_t c : fp.cols) max_cols = std::max(max_cols, c);
    TORCH_CHECK(plan::pow2_ceil(max_cols) / kFinalizeThreads <= (int64_t{1} << kColumnLevels), op,
                ": a row is split into too many chunks (", max_cols, ")");
    // SqSum is 16 bytes: two doubles per partial.
    at::Tensor partials = at::empty({std::max<int64_t>(batch * fp.ncols, 1) * 2}, double_opts);
    args.partials = reinterpret_cast<SqSum*>(partials.mutable_data_ptr<double>());
    args.ncols = fp.ncols;
    for (size_t i = 0; i < fp.launches.size(); ++i) {
      for (int j = 0; j < fp.launches[i].noperands; ++j) args.first_col[j] = fp.first_col[i * kMaxOperands + j];
      launch(fp.launches[i]);
    }
    f.partials = args.partials;
    f.ncols = fp.ncols;
    int t_log2 = 0;
    while ((int64_t{1} << t_log2) < std::min<int64_t>(max_cols, kFinalizeThreads)) ++t_log2;
    f.threads_per_row_log2 = t_log2;
    // More than kFinalizeOperands gradients: passes that carry each row's sum on.
    const int64_t npasses = plan::div_up(ntensors, kFinalizeOperands);
    at::Tensor carried[2];
    if (npasses > 1)
      for (auto& c : carried) c = at::empty({batch * 2}, double_opts);
    for (int64_t pass = 0; pass < npasses; ++pass) {
      const int64_t k0 = pass * kFinalizeOperands;
      f.noperands = static_cast<int>(std::min<int64_t>(ntensors - k0, kFinalizeOperands));
      for (int j = 0; j < f.noperands; ++j) {
        f.first_col[j] = fp.first_col[k0 + j];
        f.cols[j] = fp.cols[k0 + j];
      }
      f.row_in = pass == 0 ? nullptr : reinterpret_cast<const SqSum*>(carried[(pass + 1) % 2].const_data_ptr<double>());
      f.row_out = pass + 1 == npasses ? nullptr : reinterpret_cast<SqSum*>(carried[pass % 2].mutable_data_ptr<double>());
      launch_finalize();
    }
  });
  return {out, norms};
}

}  // namespace
}  // namespace cuda
}  // namespace fastgp
