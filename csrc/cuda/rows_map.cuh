// The elementwise kernels (interpolate, penalty backward) as one walk:
// out = f(w_b, in_1, ..., in_{NT-1}) element by element, with one value w_b
// per row (alpha_b, or the backward's coefficient). Tensor 0 of each operand
// is the output. Op supplies
//   using Row = ...;                                  w_b's type
//   Row row_value(int64_t b) const                    w_b
//   acc_t apply(const Row& w, const acc_t (&x)[NT - 1]) const
#pragma once

#include <vector>

#include "device_rows.cuh"

namespace fastgp {
namespace cuda {

template <typename scalar_t, bool GENERAL, int NT, int MAXOPS, class Op>
struct MapVisitor {
  using acc_t = acc_type<scalar_t>;
  static constexpr int VEC = vec_size<scalar_t>();
  static constexpr int U = plan::kUnroll > plan::kStepUnroll ? plan::kUnroll : plan::kStepUnroll;

  const plan::Launch<NT, MAXOPS>& l;
  const Op& op;
  const int lane;
  Pack<scalar_t, VEC> in[U][NT - 1];
  using Row = typename Op::Row;
  Row w_row;          // wide walk: the row's value
  Row w_step[U];      // narrow walk: each step's row value
  int64_t pack_elem;  // narrow walk: this lane's pack

  __device__ __forceinline__ MapVisitor(const plan::Launch<NT, MAXOPS>& l_, const Op& op_, int lane_)
      : l(l_), op(op_), lane(lane_) {}

  __device__ __forceinline__ void task_begin(const plan::TaskPos& p) {
    pack_elem = static_cast<int64_t>(lane % p.lanes) * VEC;
  }
  __device__ __forceinline__ void pack(int u, int k, int64_t b, int64_t e, int64_t end) {
#pragma unroll
    for (int t = 1; t < NT; ++t) load_pack<GENERAL>(in[u][t - 1], l.op[k], t, b, e, end);
  }
  __device__ __forceinline__ void store(int u, int k, int64_t b, int64_t e, int64_t end, const Row& w) {
    Pack<scalar_t, VEC> y;
#pragma unroll
    for (int v = 0; v < VEC; ++v) {
      acc_t x[NT - 1];
#pragma unroll
      for (int t = 0; t < NT - 1; ++t) x[t] = static_cast<acc_t>(in[u][t].v[v]);
      y.v[v] = static_cast<scalar_t>(op.apply(w, x));
    }
    store_pack<GENERAL>(y, l.op[k], 0, b, e, end);
  }

  // wide walk
  __device__ __forceinline__ void row_begin(int64_t b) { w_row = op.row_value(b); }
  __device__ __forceinline__ void operand_begin(int) {}
  __device__ __forceinline__ void block_end(int k, int64_t b, int64_t blk, int64_t lim) {
#pragma unroll
    for (int u = 0; u < plan::kUnroll; ++u) store(u, k, b, plan::wide_pack_start(blk, u, lane, VEC), lim, w_row);
  }
  __device__ __forceinline__ void operand_end(int, int64_t, int64_t) {}
  __device__ __forceinline__ void row_end(int64_t) {}

  // narrow walk
  __device__ __forceinline__ void rows_begin(const plan::RowSet& rs) {
#pragma unroll
    for (int u = 0; u < plan::kStepUnroll; ++u)
      if (rs.valid[u]) w_step[u] = op.row_value(rs.b[u]);
  }
  __device__ __forceinline__ void packs_end(int k, const plan::RowSet& rs) {
    const int64_t n = l.op[k].row_numel;
#pragma unroll
    for (int u = 0; u < plan::kStepUnroll; ++u) store(u, k, rs.b[u], pack_elem, rs.valid[u] ? n : 0, w_step[u]);
  }
  __device__ __forceinline__ void rows_end(const plan::RowSet&) {}
  __device__ __forceinline__ void task_end(const plan::TaskPos&) {}
};

// The body of an elementwise kernel: a grid-stride loop over the plan's tasks.
template <typename scalar_t, bool GENERAL, int NT, int MAXOPS, class Op>
__device__ __forceinline__ void map_rows(const plan::Launch<NT, MAXOPS>& l, const Op& op) {
  const int lane = threadIdx.x % kWarp;
  const int64_t ntasks = plan::task_count(l);
  for (int64_t task = first_warp_task(); task < ntasks; task += warp_task_stride()) {
    MapVisitor<scalar_t, GENERAL, NT, MAXOPS, Op> v(l, op, lane);
    plan::walk_task<vec_size<scalar_t>()>(l, task, lane, v);
  }
}

// Plans and launches an elementwise op over operands of one shape each
// (tensor 0 the output), one launch per MAXOPS operands, on `device` (a
// policy: cuda_device.h, or the CPU emulation). FAST and GENERAL are the op's
// kernel without and with the strided path (each a __global__ calling map_rows).
template <typename scalar_t, int NT, int MAXOPS, auto FAST, auto GENERAL, class Device, class Op>
void run_map_rows(const Device& device, const std::vector<plan::Operand<NT>>& ops, int64_t batch, const Op& op) {
  auto fit = [&](bool general) {
    return GridFit{general ? device.template resident_blocks<GENERAL>() : device.template resident_blocks<FAST>()};
  };
  const auto launches = plan::plan_elementwise<NT, MAXOPS>(
      ops, batch, vec_size<scalar_t>(), [&](bool general) { return fit(general).resident_warps(); });
  for (const auto& l : launches) {
    const int64_t ntasks = plan::task_count(l);
    if (ntasks == 0) continue;
    if (plan::needs_strided_kernel(l))
      device.template launch<GENERAL>(fit(true).blocks(ntasks), kThreads, l, op);
    else
      device.template launch<FAST>(fit(false).blocks(ntasks), kThreads, l, op);
  }
}

}  // namespace cuda
}  // namespace fastgp
