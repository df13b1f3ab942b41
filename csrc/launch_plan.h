// The launch plan of the fastgp CUDA kernels, in host-callable code: how the
// rows of a launch's tensors are cut into warp tasks, how each lane of a warp
// walks its elements, and which load path each tensor takes. The CUDA kernels
// (cuda/) run these walks with visitors that load, sum and store;
// launch_plan_debug.cpp runs the same walks on the CPU with a visitor that
// checks them (the internal op fastgp::_launch_plan_debug), so the plan is
// tested without a GPU.
//
// Vocabulary:
//  * operand: NT tensors of one shape walked in one element order (interpolate:
//    out, real, fake; backward: out, grad; forward: one grad). Element j of row
//    b is the same element of every tensor of the operand.
//  * pack: VEC = 16 bytes / element size consecutive elements of a row, read
//    with one 128-bit access when the tensor's rows are dense and aligned.
//  * wide walk: a whole warp per row, in blocks of kWarp * kUnroll packs
//    (lane l takes packs u * 32 + l of each block, u < kUnroll).
//  * narrow walk: rows of at most kMaxNarrowPacks packs, G lanes per row
//    (one pack per lane), 32 / G rows per warp step, kStepUnroll steps loaded
//    together.
//  * task: the work of one warp: rows [b0, b0 + nrows) of one operand (or of
//    every operand, see Launch::all_operands), or one chunk of one row.
// How many tasks there are depends on the device (its resident warps); what
// each row's and each block's sums are does not (see cuda/pairwise_sum.cuh).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "penalty_math.h"  // FASTGP_HD
#include "strided_rows.h"

// Unrolled on the device; the host compiler has no such pragma.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define FASTGP_UNROLL _Pragma("unroll")
#else
#define FASTGP_UNROLL
#endif

namespace fastgp {
namespace plan {

constexpr int kWarp = 32;
constexpr int kUnroll = 4;            // packs per lane per block of the wide walk (128-bit loads in flight)
constexpr int kStepUnroll = 4;        // rows per lane loaded together on the narrow walk
constexpr int kMaxNarrowPacks = 16;   // longest row (in packs) walked narrow
constexpr int kDevDims = 6;           // merged inner dims an operand can describe
constexpr int kMaxOperands = 8;       // operands per launch (more take more launches)
constexpr int64_t kTasksPerWarp = 4;  // tasks per resident warp worth making before rows get longer tasks
constexpr int64_t kMaxRowsPerTask = int64_t{1} << 20;

// How one tensor of an operand is read or written.
enum Path : int {
  kVector = 0,   // rows dense in walk order and 16-byte aligned: 128-bit accesses
  kScalar = 1,   // rows dense in walk order, not aligned: one access per element, consecutive addresses
  kStrided = 2,  // any other strides: offsets computed from the merged dims
};

template <int NT>
struct Operand {
  char* ptr[NT];
  int64_t row_stride[NT];          // elements between rows (dim 0)
  int64_t strides[NT][kDevDims];   // merged inner dims, outermost first
  int64_t sizes[kDevDims];
  int64_t row_numel;
  int ndim;
  int path[NT];
};

// Everything a kernel needs to find and walk its tasks (a kernel argument).
template <int NT, int MAXOPS>
struct Launch {
  Operand<NT> op[MAXOPS];
  int64_t first_task[MAXOPS + 1];  // operand k owns tasks [first_task[k], first_task[k + 1])
  int64_t rows_per_task[MAXOPS];   // a power of two; 1 when rows are split into chunks
  int64_t chunks_per_row[MAXOPS];  // 1: whole rows; 0: rows of no elements (no tasks)
  int64_t chunk[MAXOPS];           // elements per chunk of a split row (a multiple of the block)
  int lanes_per_row[MAXOPS];       // 32: wide walk; 1..16: narrow walk
  int64_t batch;
  int noperands;
  bool all_operands;  // every task covers all operands of its rows (the forward's folded mode): operand 0's task fields apply
};

// Elements in a block of the wide walk.
FASTGP_HD constexpr int64_t block_elems(int vec) { return int64_t{kWarp} * vec * kUnroll; }

FASTGP_HD int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

FASTGP_HD int64_t pow2_ceil(int64_t x) {
  int64_t p = 1;
  while (p < x) p *= 2;
  return p;
}

// 32 lanes (wide walk) for rows longer than kMaxNarrowPacks packs, else the
// fewest lanes (a power of two) that give each pack its own lane.
inline int lanes_for_row(int64_t row_numel, int vec) {
  const int64_t packs = div_up(row_numel, vec);
  return packs > kMaxNarrowPacks ? kWarp : static_cast<int>(pow2_ceil(std::max<int64_t>(packs, 1)));
}

// ------------------------------------------------------------ operands
// Fills one operand from tensors of one shape; false when their strides need
// more than kDevDims merged dims (the caller then copies: rare layouts only).
// Addresses come from const_data_ptr(), which for meta tensors is
// storage_offset * element_size: a plan can be made for sizes alone.
template <int NT>
bool make_operand(Operand<NT>& o, std::array<const at::Tensor*, NT> ts) {
  const RowLayout<NT> layout(ts);
  if (layout.ndim > kDevDims) return false;
  o.ndim = layout.ndim;
  o.row_numel = layout.row_numel;
  for (int d = 0; d < kDevDims; ++d) o.sizes[d] = d < layout.ndim ? layout.sizes[d] : 1;
  const int64_t batch = ts[0]->size(0);
  for (int t = 0; t < NT; ++t) {
    const at::Tensor& x = *ts[t];
    o.ptr[t] = static_cast<char*>(const_cast<void*>(x.const_data_ptr()));
    o.row_stride[t] = layout.row_stride[t];
    for (int d = 0; d < kDevDims; ++d) o.strides[t][d] = d < layout.ndim ? layout.strides[t][d] : 0;
    // Dense in walk order: element j of row b sits at b * row_stride + j.
    bool dense = true;
    int64_t expected = 1;
    for (int d = layout.ndim - 1; d >= 0; --d) {
      if (layout.sizes[d] != 1 && layout.strides[t][d] != expected) dense = false;
      expected *= layout.sizes[d];
    }
    const int64_t es = static_cast<int64_t>(x.element_size());
    const bool aligned = reinterpret_cast<uintptr_t>(o.ptr[t]) % 16 == 0 &&
                         (batch == 1 || (layout.row_stride[t] * es) % 16 == 0);
    o.path[t] = !dense ? kStrided : (aligned ? kVector : kScalar);
  }
  return true;
}

// The operands of each op, as the kernels and the CPU emulation build them.
// A tensor whose strides need more than kDevDims merged dims is replaced by a
// dense copy (rare layouts only).
inline std::vector<Operand<1>> forward_operands(std::vector<at::Tensor>& grads) {
  std::vector<Operand<1>> ops(grads.size());
  for (size_t k = 0; k < grads.size(); ++k) {
    if (!make_operand<1>(ops[k], {&grads[k]})) {
      grads[k] = grads[k].contiguous();
      TORCH_INTERNAL_ASSERT(make_operand<1>(ops[k], {&grads[k]}));
    }
  }
  return ops;
}

// (out_k, grad_k) with out_k = empty_like(grad_k), the fake kernel's layout.
inline std::vector<Operand<2>> backward_operands(std::vector<at::Tensor>& grads, std::vector<at::Tensor>& outs) {
  std::vector<Operand<2>> ops(grads.size());
  outs.clear();
  for (size_t k = 0; k < grads.size(); ++k) {
    outs.push_back(at::empty_like(grads[k]));
    if (!make_operand<2>(ops[k], {&outs[k], &grads[k]})) {  // read a dense copy in the output's layout
      grads[k] = at::empty_like(outs[k]).copy_(grads[k]);
      TORCH_INTERNAL_ASSERT(make_operand<2>(ops[k], {&outs[k], &grads[k]}));
    }
  }
  return ops;
}

// (out, real, fake) with out = empty_like(real).
inline std::vector<Operand<3>> interpolate_operands(const at::Tensor& out, at::Tensor& real, at::Tensor& fake) {
  std::vector<Operand<3>> ops(1);
  if (!make_operand<3>(ops[0], {&out, &real, &fake})) {  // read dense copies in out's layout
    real = at::empty_like(out).copy_(real);
    fake = at::empty_like(out).copy_(fake);
    TORCH_INTERNAL_ASSERT(make_operand<3>(ops[0], {&out, &real, &fake}));
  }
  return ops;
}

// Whether a launch needs the kernel instance that computes strided offsets.
template <int NT, int MAXOPS>
bool needs_strided_kernel(const Launch<NT, MAXOPS>& l) {
  for (int k = 0; k < l.noperands; ++k)
    for (int t = 0; t < NT; ++t)
      if (l.op[k].path[t] == kStrided) return true;
  return false;
}

// ---------------------------------------------------------------- tasks
// Rows per task for rows walked whole: the fewest that keep the walk's loads
// in flight, doubled while there are still kTasksPerWarp tasks per resident warp.
inline int64_t rows_per_task(int64_t batch, int lanes, int64_t resident_warps) {
  int64_t rows = lanes < kWarp ? (kWarp / lanes) * kStepUnroll : 1;
  while (rows < kMaxRowsPerTask && div_up(batch, 2 * rows) >= kTasksPerWarp * resident_warps) rows *= 2;
  return rows;
}

// Rows are split into chunks when they span several blocks and whole rows
// would leave more than half of the resident warps idle.
inline bool split_rows(int64_t batch, int64_t longest_row, int vec, int64_t resident_warps) {
  return longest_row > block_elems(vec) && 2 * batch < resident_warps;
}

// Elements per chunk: block * 2^m, the largest m that still gives about two
// tasks per resident warp (chunks of 2^m blocks keep every row's sum the
// same pairwise tree, however the rows are cut).
inline int64_t chunk_elems(int64_t batch, const int64_t* row_numel, int n, int vec, int64_t resident_warps) {
  int64_t longest = 0;
  for (int k = 0; k < n; ++k) longest = std::max(longest, row_numel[k]);
  int64_t chunk = block_elems(vec);
  while (chunk < longest) {
    int64_t tasks = 0;
    for (int k = 0; k < n; ++k) tasks += batch * div_up(row_numel[k], 2 * chunk);
    if (tasks < 2 * resident_warps) break;
    chunk *= 2;
  }
  return chunk;
}

// Tasks per operand (elementwise ops, and the forward's unfolded mode).
template <int NT, int MAXOPS>
void plan_per_operand(Launch<NT, MAXOPS>& l, int vec, int64_t resident_warps) {
  l.all_operands = false;
  int64_t numel[MAXOPS];
  int64_t longest = 0;
  for (int k = 0; k < l.noperands; ++k) {
    numel[k] = l.op[k].row_numel;
    longest = std::max(longest, numel[k]);
  }
  const bool split = split_rows(l.batch, longest, vec, resident_warps);
  const int64_t chunk = split ? chunk_elems(l.batch, numel, l.noperands, vec, resident_warps) : 0;
  l.first_task[0] = 0;
  for (int k = 0; k < l.noperands; ++k) {
    const int lanes = lanes_for_row(numel[k], vec);
    l.lanes_per_row[k] = lanes;
    if (numel[k] == 0) {  // rows of no elements: no tasks, no columns of partial sums
      l.rows_per_task[k] = 1;
      l.chunk[k] = 1;
      l.chunks_per_row[k] = 0;
      l.first_task[k + 1] = l.first_task[k];
      continue;
    }
    if (split && numel[k] > block_elems(vec)) {
      l.rows_per_task[k] = 1;
      l.chunk[k] = chunk;
      l.chunks_per_row[k] = div_up(numel[k], chunk);
    } else {
      l.rows_per_task[k] = rows_per_task(l.batch, lanes, resident_warps);
      l.chunk[k] = std::max<int64_t>(numel[k], 1);
      l.chunks_per_row[k] = 1;
    }
    const int64_t tasks = l.chunks_per_row[k] > 1 ? l.batch * l.chunks_per_row[k]
                                                  : div_up(l.batch, l.rows_per_task[k]);
    l.first_task[k + 1] = l.first_task[k] + tasks;
  }
}

// Every task covers whole rows of all operands (the forward folds the
// finalize into its tasks). False, with nothing changed, when rows should be
// split instead (then use plan_per_operand).
template <int NT, int MAXOPS>
bool plan_all_operands(Launch<NT, MAXOPS>& l, int vec, int64_t resident_warps) {
  int64_t longest = 0;
  for (int k = 0; k < l.noperands; ++k) longest = std::max(longest, l.op[k].row_numel);
  if (split_rows(l.batch, longest, vec, resident_warps)) return false;
  l.all_operands = true;
  const int lanes = lanes_for_row(longest, vec);
  const int64_t rows = rows_per_task(l.batch, lanes, resident_warps);
  for (int k = 0; k < l.noperands; ++k) {
    l.lanes_per_row[k] = lanes;
    l.rows_per_task[k] = rows;
    l.chunks_per_row[k] = 1;
    l.chunk[k] = std::max<int64_t>(l.op[k].row_numel, 1);
  }
  l.first_task[0] = 0;
  for (int k = 1; k <= l.noperands; ++k) l.first_task[k] = div_up(l.batch, rows);
  return true;
}

template <int NT, int MAXOPS>
FASTGP_HD int64_t task_count(const Launch<NT, MAXOPS>& l) {
  return l.first_task[l.noperands];
}

// Operands in launches of up to MAXOPS, in order, tasks not planned yet.
template <int NT, int MAXOPS>
std::vector<Launch<NT, MAXOPS>> group_operands(const std::vector<Operand<NT>>& ops, int64_t batch) {
  std::vector<Launch<NT, MAXOPS>> launches;
  for (size_t k0 = 0; k0 < ops.size(); k0 += MAXOPS) {
    Launch<NT, MAXOPS> l{};
    l.batch = batch;
    l.noperands = static_cast<int>(std::min<size_t>(ops.size() - k0, MAXOPS));
    for (int j = 0; j < l.noperands; ++j) l.op[j] = ops[k0 + j];
    launches.push_back(l);
  }
  return launches;
}

// The launches of an elementwise op. resident_warps(general) is what the
// device holds of the kernel instance a launch will use.
template <int NT, int MAXOPS, class ResidentWarps>
std::vector<Launch<NT, MAXOPS>> plan_elementwise(const std::vector<Operand<NT>>& ops, int64_t batch, int vec,
                                                 ResidentWarps resident_warps) {
  std::vector<Launch<NT, MAXOPS>> launches = group_operands<NT, MAXOPS>(ops, batch);
  for (auto& l : launches) plan_per_operand(l, vec, resident_warps(needs_strided_kernel(l)));
  return launches;
}

// The forward's launches: folded (one launch, whole rows, the finalize only
// adds the tasks' penalties) when one launch holds every gradient and the
// rows fill the device; else split: every launch writes partial sums of
// squares, operand k into columns [first_col[k], first_col[k] + cols[k]) of
// a [batch, ncols] buffer, for the finalize.
struct ForwardPlan {
  std::vector<Launch<1, kMaxOperands>> launches;
  bool folded = false;
  std::vector<int64_t> first_col, cols;
  int64_t ncols = 0;
};

template <class ResidentWarps>
ForwardPlan plan_forward(const std::vector<Operand<1>>& ops, int64_t batch, int vec, ResidentWarps resident_warps) {
  ForwardPlan f;
  f.launches = group_operands<1, kMaxOperands>(ops, batch);
  if (f.launches.size() == 1) {
    auto& l = f.launches[0];
    f.folded = plan_all_operands(l, vec, resident_warps(needs_strided_kernel(l)));
    if (f.folded) return f;
  }
  for (auto& l : f.launches) {
    plan_per_operand(l, vec, resident_warps(needs_strided_kernel(l)));
    for (int j = 0; j < l.noperands; ++j) {
      f.first_col.push_back(f.ncols);
      f.cols.push_back(l.chunks_per_row[j]);
      f.ncols += l.chunks_per_row[j];
    }
  }
  return f;
}

// Blocks of `threads` threads for a grid-stride launch: no more than the
// device holds at once, so none waits for a second wave.
inline int64_t grid_blocks(int64_t tasks, int threads, int64_t resident_blocks) {
  const int64_t want = div_up(std::max<int64_t>(tasks, 1), threads / kWarp);
  return std::max<int64_t>(1, std::min(want, resident_blocks));
}

// ----------------------------------------------------------- addressing
// Offset (elements) of element j (walk order) of row b of tensor t.
template <int NT>
FASTGP_HD int64_t element_offset(const Operand<NT>& o, int t, int64_t b, int64_t j) {
  int64_t off = b * o.row_stride[t];
  for (int d = o.ndim - 1; d > 0; --d) {
    const int64_t q = j / o.sizes[d];
    off += (j - q * o.sizes[d]) * o.strides[t][d];
    j = q;
  }
  return off + j * o.strides[t][0];
}

// How the pack of elements [e, min(e + vec, end)) of tensor t is accessed:
// one 128-bit access (a whole pack on the vector path), computed offsets (the
// strided path, in kernels built for it), or one access per element at
// consecutive offsets (the rest: a dense row's unaligned tensor, a row's tail).
template <int NT>
FASTGP_HD Path pack_access(const Operand<NT>& o, int t, int64_t e, int64_t end, int vec, bool general) {
  if (o.path[t] == kVector && e + vec <= end) return kVector;
  return general && o.path[t] == kStrided ? kStrided : kScalar;
}

// Offsets of consecutive elements of a row on the strided path: one
// division chain for the first, then steps along the innermost merged dim.
template <int NT>
struct StridedCursor {
  int64_t offset;  // of the current element
  int64_t pos;     // its index in the innermost merged dim

  FASTGP_HD StridedCursor(const Operand<NT>& o, int t, int64_t b, int64_t j)
      : offset(element_offset(o, t, b, j)), pos(j % o.sizes[o.ndim - 1]) {}

  // Moves to element j (the one after the current).
  FASTGP_HD void advance(const Operand<NT>& o, int t, int64_t b, int64_t j) {
    if (++pos == o.sizes[o.ndim - 1]) {
      pos = 0;
      offset = element_offset(o, t, b, j);
    } else {
      offset += o.strides[t][o.ndim - 1];
    }
  }
};

// ----------------------------------------------------------------- walks
// Where a task works.
struct TaskPos {
  int k_lo, k_hi;       // operands
  int lanes;            // lanes per row (32: wide walk)
  int64_t b0, nrows;    // rows [b0, b0 + nrows), nrows already clipped to the batch
  int64_t chunk_index;  // chunk of a split row (0 for whole rows)
  int64_t begin, end;   // elements of a split row; whole rows: 0 and -1
};

template <int NT, int MAXOPS>
FASTGP_HD TaskPos locate_task(const Launch<NT, MAXOPS>& l, int64_t task) {
  TaskPos p;
  int k = 0;
  if (l.all_operands) {
    p.k_lo = 0;
    p.k_hi = l.noperands;
  } else {
    while (task >= l.first_task[k + 1]) ++k;
    task -= l.first_task[k];
    p.k_lo = k;
    p.k_hi = k + 1;
  }
  p.lanes = l.lanes_per_row[k];
  const int64_t cpr = l.chunks_per_row[k];
  if (cpr == 1) {
    p.b0 = task * l.rows_per_task[k];
    p.nrows = l.batch - p.b0 < l.rows_per_task[k] ? l.batch - p.b0 : l.rows_per_task[k];
    p.chunk_index = 0;
    p.begin = 0;
    p.end = -1;
  } else {
    p.b0 = task / cpr;
    p.nrows = 1;
    p.chunk_index = task - p.b0 * cpr;
    p.begin = p.chunk_index * l.chunk[k];
    const int64_t n = l.op[k].row_numel;
    p.end = p.begin + l.chunk[k] < n ? p.begin + l.chunk[k] : n;
  }
  return p;
}

// Rows a lane holds during one round of the narrow walk.
struct RowSet {
  int64_t b[kStepUnroll];
  bool valid[kStepUnroll];
  int64_t step0;  // first step of the round (steps count from the task's first row)
  int nsteps;     // steps of the round that exist in the task (<= kStepUnroll)
};

// Element of a pack: wide walk, pack u of a block starting at blk.
FASTGP_HD int64_t wide_pack_start(int64_t blk, int u, int lane, int vec) {
  return blk + (static_cast<int64_t>(u) * kWarp + lane) * vec;
}

// Walks task `task` as lane `lane` sees it, calling the visitor:
//   wide:   task_begin, per row: row_begin, per operand: operand_begin,
//           per block: pack(u) for u < kUnroll then block_end, operand_end; row_end; task_end
//   narrow: task_begin, per round: rows_begin, per operand: pack(u) for
//           u < kStepUnroll then packs_end; rows_end; task_end
// Control flow is the same for every lane of the warp (visitors may use
// warp shuffles); lanes differ only in the elements they get.
template <int VEC, int NT, int MAXOPS, class Visitor>
FASTGP_HD void walk_task(const Launch<NT, MAXOPS>& l, int64_t task, int lane, Visitor& v) {
  const TaskPos p = locate_task(l, task);
  v.task_begin(p);
  if (p.lanes == kWarp) {
    constexpr int64_t kBlock = block_elems(VEC);
    for (int64_t r = 0; r < p.nrows; ++r) {
      const int64_t b = p.b0 + r;
      v.row_begin(b);
      for (int k = p.k_lo; k < p.k_hi; ++k) {
        const int64_t lo = p.end < 0 ? 0 : p.begin;
        const int64_t hi = p.end < 0 ? l.op[k].row_numel : p.end;
        v.operand_begin(k);
        for (int64_t blk = lo; blk < hi; blk += kBlock) {
          const int64_t lim = blk + kBlock < hi ? blk + kBlock : hi;
FASTGP_UNROLL
          for (int u = 0; u < kUnroll; ++u) v.pack(u, k, b, wide_pack_start(blk, u, lane, VEC), lim);
          v.block_end(k, b, blk, lim);
        }
        v.operand_end(k, b, p.chunk_index);
      }
      v.row_end(b);
    }
  } else {
    const int rows_per_step = kWarp / p.lanes;
    const int group = lane / p.lanes;
    const int64_t e = static_cast<int64_t>(lane % p.lanes) * VEC;
    const int64_t nsteps = div_up(p.nrows, rows_per_step);
    for (int64_t s0 = 0; s0 < nsteps; s0 += kStepUnroll) {
      RowSet rs;
      rs.step0 = s0;
      rs.nsteps = nsteps - s0 < kStepUnroll ? static_cast<int>(nsteps - s0) : kStepUnroll;
FASTGP_UNROLL
      for (int u = 0; u < kStepUnroll; ++u) {
        const int64_t i = (s0 + u) * rows_per_step + group;  // row within the task
        rs.b[u] = p.b0 + i;
        rs.valid[u] = i < p.nrows;
      }
      v.rows_begin(rs);
      for (int k = p.k_lo; k < p.k_hi; ++k) {
        const int64_t n = l.op[k].row_numel;
FASTGP_UNROLL
        for (int u = 0; u < kStepUnroll; ++u) v.pack(u, k, rs.b[u], e, rs.valid[u] ? n : 0);
        v.packs_end(k, rs);
      }
      v.rows_end(rs);
    }
  }
  v.task_end(p);
}

}  // namespace plan
}  // namespace fastgp
