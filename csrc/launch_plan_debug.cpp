// fastgp::_launch_plan_debug: the CUDA kernels' launch plan (launch_plan.h)
// run on the CPU, for tests. Internal: not part of the API, no autograd.
//
//   _launch_plan_debug(kernel, tensors, resident_warps, walk_tasks=None) -> (str, Tensor[])
//
// kernel is "forward" (tensors = grads), "backward" (grads) or "interpolate"
// (real, fake). The plan is made exactly as the CUDA host code makes it, for
// a device holding `resident_warps` warps of each kernel instance, and every
// task in walk_tasks (all when None; indices count across launches) is walked
// by each of the 32 lanes as the kernels walk it. On CPU tensors the
// walk moves data: the forward adds x^2 per row (in double), backward writes
// out = -grad, interpolate writes out = real - fake, each through the planned
// offsets and access paths (a 128-bit access reads the 16 bytes at its
// address). On meta tensors only addresses are checked, so a plan for
// billions of elements costs nothing.
//
// Returns a JSON summary (the plan, access counts, violations) and tensors:
//   forward:     [row sums of squares (float64, B), task table]
//   backward:    [out_0, ..., out_{K-1}, writes_0, ..., writes_{K-1}, task table]
//   interpolate: [out, writes, task table]
// writes_k counts the stores into each element of out_k's storage (int32).
// The task table has one row per task of every launch:
//   launch, task, first operand, end operand, b0, nrows, begin, end,
//   elements visited (tensor 0, walked tasks only, else -1), largest offset visited (tensor 0).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <cstring>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "launch_plan.h"

namespace fastgp {
namespace plan {
namespace {

constexpr int kMaxViolations = 20;

struct WalkStats {
  int64_t vector_accesses = 0;    // 128-bit accesses
  int64_t scalar_elements = 0;    // elements accessed one at a time at consecutive offsets
  int64_t strided_elements = 0;   // elements accessed at computed offsets
  std::vector<std::string> violations;
  int64_t violation_count = 0;

  void violation(const std::string& what) {
    ++violation_count;
    if (static_cast<int>(violations.size()) < kMaxViolations) violations.push_back(what);
  }
};

// Extent of a tensor's elements in its storage, relative to its data pointer.
struct Extent {
  int64_t lo = 0, hi = 0;  // offsets in [lo, hi]
  Extent() = default;
  explicit Extent(const at::Tensor& t) {
    for (int64_t d = 0; d < t.dim(); ++d) {
      const int64_t span = (t.size(d) - 1) * t.stride(d);
      (span < 0 ? lo : hi) += span;
    }
  }
};

template <typename scalar_t, int NT, int MAXOPS>
struct Emulator {
  static constexpr int VEC = 16 / static_cast<int>(sizeof(scalar_t));
  const Launch<NT, MAXOPS>& l;
  const std::vector<std::array<Extent, NT>>& extents;  // per operand of the launch
  const bool general, data;
  const int lane;
  double* row_sums;                  // forward: per row
  std::vector<int32_t*> writes;      // per operand: stores per element of tensor 0's storage
  WalkStats& st;
  int64_t* visited;                  // elements of tensor 0 visited in this task
  int64_t* largest;                  // largest offset of tensor 0 visited in this task

  void task_begin(const TaskPos&) {}
  void row_begin(int64_t) {}
  void operand_begin(int) {}
  void block_end(int, int64_t, int64_t, int64_t) {}
  void operand_end(int, int64_t, int64_t) {}
  void row_end(int64_t) {}
  void rows_begin(const RowSet&) {}
  void packs_end(int, const RowSet&) {}
  void rows_end(const RowSet&) {}
  void task_end(const TaskPos&) {}

  void pack(int, int k, int64_t b, int64_t e, int64_t end) {
    if (e >= end) return;
    const Operand<NT>& o = l.op[k];
    std::ostringstream where;
    if (b < 0 || b >= l.batch || e < 0 || end > o.row_numel) {
      where << "operand " << k << " row " << b << ": pack [" << e << ", " << end << ") outside the row of "
            << o.row_numel << " elements";
      st.violation(where.str());
      return;
    }
    const int n = static_cast<int>(std::min<int64_t>(VEC, end - e));
    int64_t off[NT][VEC];
    for (int t = 0; t < NT; ++t) {
      const Path access = pack_access(o, t, e, end, VEC, general);
      if (access == kVector) {
        ++st.vector_accesses;
        const int64_t first = b * o.row_stride[t] + e;
        const uintptr_t address = reinterpret_cast<uintptr_t>(o.ptr[t]) + first * sizeof(scalar_t);
        if (address % 16 != 0) {
          where << "operand " << k << " tensor " << t << " row " << b << " element " << e
                << ": 128-bit access at an address 16 bytes do not divide (" << address << ")";
          st.violation(where.str());
        }
        for (int v = 0; v < VEC; ++v) {
          off[t][v] = first + v;  // what a 128-bit access reads
          if (element_offset(o, t, b, e + v) != first + v) {
            where << "operand " << k << " tensor " << t << " row " << b << " element " << e + v
                  << ": 128-bit access over elements that are not consecutive in memory";
            st.violation(where.str());
          }
        }
      } else if (access == kStrided) {
        st.strided_elements += n;
        StridedCursor<NT> c(o, t, b, e);
        for (int v = 0; v < n; ++v) {
          if (v > 0) c.advance(o, t, b, e + v);
          off[t][v] = c.offset;
        }
      } else {
        st.scalar_elements += n;
        for (int v = 0; v < n; ++v) off[t][v] = b * o.row_stride[t] + e + v;
      }
      const Extent& x = extents[k][t];
      for (int v = 0; v < n; ++v)
        if (off[t][v] < x.lo || off[t][v] > x.hi) {
          where << "operand " << k << " tensor " << t << " row " << b << " element " << e + v << ": offset "
                << off[t][v] << " outside the tensor [" << x.lo << ", " << x.hi << "]";
          st.violation(where.str());
          return;
        }
    }
    *visited += n;
    for (int v = 0; v < n; ++v) *largest = std::max(*largest, off[0][v]);
    if (!data) return;
    auto at = [&](int t, int v) -> scalar_t& { return reinterpret_cast<scalar_t*>(o.ptr[t])[off[t][v]]; };
    for (int v = 0; v < n; ++v) {
      if constexpr (NT == 1) {  // forward
        const double x = static_cast<double>(at(0, v));
        row_sums[b] += x * x;
      } else if constexpr (NT == 2) {  // backward: out = -grad
        at(0, v) = static_cast<scalar_t>(-static_cast<double>(at(1, v)));
        ++writes[k][off[0][v]];
      } else {  // interpolate: out = real - fake
        at(0, v) = static_cast<scalar_t>(static_cast<double>(at(1, v)) - static_cast<double>(at(2, v)));
        ++writes[k][off[0][v]];
      }
    }
  }
};

std::string path_name(int p) { return p == kVector ? "vector" : p == kScalar ? "scalar" : "strided"; }

template <int NT, int MAXOPS>
void describe(std::ostringstream& js, const Launch<NT, MAXOPS>& l) {
  js << "{\"general\": " << (needs_strided_kernel(l) ? "true" : "false")
     << ", \"all_operands\": " << (l.all_operands ? "true" : "false") << ", \"tasks\": " << task_count(l)
     << ", \"operands\": [";
  for (int k = 0; k < l.noperands; ++k) {
    const Operand<NT>& o = l.op[k];
    js << (k ? ", " : "") << "{\"row_numel\": " << o.row_numel << ", \"ndim\": " << o.ndim << ", \"paths\": [";
    for (int t = 0; t < NT; ++t) js << (t ? ", " : "") << "\"" << path_name(o.path[t]) << "\"";
    js << "], \"lanes_per_row\": " << l.lanes_per_row[k] << ", \"rows_per_task\": " << l.rows_per_task[k]
       << ", \"chunks_per_row\": " << l.chunks_per_row[k] << ", \"chunk\": " << l.chunk[k] << "}";
  }
  js << "]}";
}

// Walks the selected tasks of every launch; fills the task table.
template <typename scalar_t, int NT, int MAXOPS>
void walk(const std::vector<Launch<NT, MAXOPS>>& launches, const std::vector<std::vector<std::array<Extent, NT>>>& ext,
          bool data, double* row_sums, const std::vector<int32_t*>& writes,
          const std::optional<std::vector<int64_t>>& walk_tasks,
          WalkStats& st, at::Tensor& table) {
  int64_t total = 0;
  for (const auto& l : launches) total += task_count(l);
  table = at::full({total, 10}, -1, at::kLong);
  auto tab = table.accessor<int64_t, 2>();
  std::vector<char> selected(static_cast<size_t>(total), walk_tasks.has_value() ? 0 : 1);
  for (int64_t t : walk_tasks.value_or(std::vector<int64_t>{})) {
    TORCH_CHECK(t >= 0 && t < total, "_launch_plan_debug: task ", t, " out of range [0, ", total, ")");
    selected[t] = 1;
  }
  int64_t global = 0;
  for (size_t li = 0; li < launches.size(); ++li) {
    const auto& l = launches[li];
    const bool general = needs_strided_kernel(l);
    std::vector<int32_t*> w;
    for (int k = 0; k < l.noperands; ++k)
      w.push_back(writes.empty() ? nullptr : writes[li * MAXOPS + k]);
    for (int64_t task = 0; task < task_count(l); ++task, ++global) {
      const TaskPos p = locate_task(l, task);
      const int64_t row[8] = {static_cast<int64_t>(li), task, p.k_lo, p.k_hi, p.b0, p.nrows, p.begin, p.end};
      for (int c = 0; c < 8; ++c) tab[global][c] = row[c];
      if (!selected[global]) continue;
      int64_t visited = 0, largest = -1;
      for (int lane = 0; lane < kWarp; ++lane) {
        Emulator<scalar_t, NT, MAXOPS> v{l, ext[li], general, data, lane, row_sums, w, st, &visited, &largest};
        walk_task<Emulator<scalar_t, NT, MAXOPS>::VEC>(l, task, lane, v);
      }
      tab[global][8] = visited;
      tab[global][9] = largest;
    }
  }
}

template <int NT, int MAXOPS>
std::vector<std::vector<std::array<Extent, NT>>> extents_of(const std::vector<Launch<NT, MAXOPS>>& launches,
                                                            const std::vector<std::array<const at::Tensor*, NT>>& ts) {
  std::vector<std::vector<std::array<Extent, NT>>> ext;
  size_t k = 0;
  for (const auto& l : launches) {
    ext.emplace_back();
    for (int j = 0; j < l.noperands; ++j, ++k) {
      std::array<Extent, NT> e;
      for (int t = 0; t < NT; ++t) e[t] = Extent(*ts[k][t]);
      ext.back().push_back(e);
    }
  }
  return ext;
}

std::tuple<std::string, std::vector<at::Tensor>> launch_plan_debug(c10::string_view kernel, at::TensorList tensors,
                                                                   int64_t resident_warps,
                                                                   at::OptionalIntArrayRef walk_tasks) {
  const std::string name(kernel);
  TORCH_CHECK(!tensors.empty(), "_launch_plan_debug: no tensors");
  TORCH_CHECK(resident_warps > 0, "_launch_plan_debug: resident_warps must be positive");
  const at::Tensor& t0 = tensors[0];
  TORCH_CHECK(t0.dim() >= 1 && t0.size(0) > 0, "_launch_plan_debug: tensors need a non-empty batch dim");
  for (const auto& t : tensors)
    TORCH_CHECK(t.device().is_cpu() || t.device().is_meta(), "_launch_plan_debug: CPU or meta tensors only");
  const bool data = !t0.is_meta();
  const int64_t batch = t0.size(0);
  auto warps = [&](bool) { return resident_warps; };
  std::optional<std::vector<int64_t>> selected;
  if (walk_tasks.has_value()) selected = std::vector<int64_t>(walk_tasks->begin(), walk_tasks->end());
  std::vector<at::Tensor> results;
  std::ostringstream js;
  WalkStats st;
  at::Tensor table;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t0.scalar_type(), "fastgp_launch_plan_debug", [&] {
    constexpr int vec = 16 / static_cast<int>(sizeof(scalar_t));
    if (name == "forward") {
      std::vector<at::Tensor> gs(tensors.begin(), tensors.end());
      const ForwardPlan fp = plan_forward(forward_operands(gs), batch, vec, warps);
      std::vector<std::array<const at::Tensor*, 1>> ts;
      for (const auto& g : gs) ts.push_back({&g});
      at::Tensor sums = at::zeros({batch}, at::kDouble);
      walk<scalar_t, 1, kMaxOperands>(fp.launches, extents_of<1, kMaxOperands>(fp.launches, ts), data, sums.data_ptr<double>(), {},
                     selected, st, table);
      results = {sums, table};
      js << "{\"kernel\": \"forward\", \"folded\": " << (fp.folded ? "true" : "false") << ", \"ncols\": " << fp.ncols
         << ", \"cols\": [";
      for (size_t i = 0; i < fp.cols.size(); ++i) js << (i ? ", " : "") << fp.cols[i];
      js << "], \"launches\": [";
      for (size_t i = 0; i < fp.launches.size(); ++i) {
        js << (i ? ", " : "");
        describe(js, fp.launches[i]);
      }
    } else if (name == "backward") {
      std::vector<at::Tensor> gs(tensors.begin(), tensors.end()), outs;
      const auto ops = backward_operands(gs, outs);
      const auto launches = plan_elementwise<2, kMaxOperands>(ops, batch, vec, warps);
      std::vector<at::Tensor> counts;
      std::vector<int32_t*> writes;
      std::vector<std::array<const at::Tensor*, 2>> ts;
      for (size_t k = 0; k < gs.size(); ++k) {
        if (data) {
          outs[k].fill_(std::numeric_limits<double>::quiet_NaN());
          counts.push_back(at::zeros({outs[k].numel() == 0 ? 0 : Extent(outs[k]).hi + 1}, at::kInt));
          writes.push_back(counts.back().data_ptr<int32_t>());
        }
        ts.push_back({&outs[k], &gs[k]});
      }
      walk<scalar_t, 2, kMaxOperands>(launches, extents_of<2, kMaxOperands>(launches, ts), data, nullptr, writes, selected, st, table);
      results = outs;
      results.insert(results.end(), counts.begin(), counts.end());
      results.push_back(table);
      js << "{\"kernel\": \"backward\", \"launches\": [";
      for (size_t i = 0; i < launches.size(); ++i) {
        js << (i ? ", " : "");
        describe(js, launches[i]);
      }
    } else if (name == "interpolate") {
      TORCH_CHECK(tensors.size() == 2, "_launch_plan_debug: interpolate takes (real, fake)");
      at::Tensor r = tensors[0], f = tensors[1];
      TORCH_CHECK(r.sizes() == f.sizes() && r.scalar_type() == f.scalar_type(),
                  "_launch_plan_debug: real and fake differ in shape or dtype");
      at::Tensor out = at::empty_like(r);
      const auto ops = interpolate_operands(out, r, f);
      const auto launches = plan_elementwise<3, 1>(ops, batch, vec, warps);
      at::Tensor count;
      std::vector<int32_t*> writes;
      if (data) {
        out.fill_(std::numeric_limits<double>::quiet_NaN());
        count = at::zeros({out.numel() == 0 ? 0 : Extent(out).hi + 1}, at::kInt);
        writes.push_back(count.data_ptr<int32_t>());
      }
      std::vector<std::array<const at::Tensor*, 3>> ts{{&out, &r, &f}};
      walk<scalar_t, 3, 1>(launches, extents_of<3, 1>(launches, ts), data, nullptr, writes, selected, st,
                     table);
      results = {out};
      if (data) results.push_back(count);
      results.push_back(table);
      js << "{\"kernel\": \"interpolate\", \"launches\": [";
      describe(js, launches[0]);
    } else {
      TORCH_CHECK(false, "_launch_plan_debug: kernel must be forward, backward or interpolate, got ", name);
    }
  });
  js << "], \"vector_accesses\": " << st.vector_accesses << ", \"scalar_elements\": " << st.scalar_elements
     << ", \"strided_elements\": " << st.strided_elements << ", \"violation_count\": " << st.violation_count
     << ", \"violations\": [";
  for (size_t i = 0; i < st.violations.size(); ++i) {
    js << (i ? ", " : "") << "\"";
    for (char c : st.violations[i]) js << (c == '"' || c == '\\' ? '\'' : c);
    js << "\"";
  }
  js << "]}";
  return {js.str(), results};
}

}  // namespace
}  // namespace plan
}  // namespace fastgp

TORCH_LIBRARY_FRAGMENT(fastgp, m) {
  m.def("_launch_plan_debug(str kernel, Tensor[] tensors, int resident_warps, int[]? walk_tasks=None) -> (str, Tensor[])",
        &fastgp::plan::launch_plan_debug);
}
