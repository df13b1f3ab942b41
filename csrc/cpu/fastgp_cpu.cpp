// CPU kernels of the fastgp ops: one pass over the data, parallel over
// fixed-size chunks of rows (so results do not depend on the thread count),
// float32 accumulation (float64 for double), any strides, no copies.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../checks.h"
#include "../penalty_math.h"
#include "../strided_rows.h"

namespace fastgp {
namespace cpu {
namespace {

// Elements per task: big enough to amortize scheduling, small enough to
// spread a short batch of long rows over all threads.
constexpr int64_t kChunk = 1 << 15;
// Work below this many elements runs on one thread.
constexpr int64_t kSerialElems = 1 << 16;

int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Runs fn(task_begin, task_end) over [0, ntasks): inline for small work (a
// thread-pool wake-up costs more than the whole kernel at tabular sizes),
// else in parallel with about kSerialElems elements per grain.
template <typename F>
void run_tasks(int64_t ntasks, int64_t total_elems, const F& fn) {
  if (total_elems <= kSerialElems || ntasks == 1) {
    fn(int64_t(0), ntasks);
    return;
  }
  const int64_t per_task = std::max<int64_t>(1, total_elems / ntasks);
  at::parallel_for(0, ntasks, std::max<int64_t>(1, kSerialElems / per_task), fn);
}

// Sum of squares of n elements spaced by stride; lanes keep the contiguous
// loop vectorizable without reassociating a single accumulator.
template <typename scalar_t, typename acc_t>
acc_t sum_squares(const scalar_t* p, int64_t stride, int64_t n) {
  constexpr int kLanes = 16;
  if (n < kLanes) {  // short rows (tabular data): no lane set-up
    acc_t acc = 0;
    for (int64_t i = 0; i < n; ++i) {
      const acc_t v = static_cast<acc_t>(p[i * stride]);
      acc += v * v;
    }
    return acc;
  }
  acc_t lane[kLanes] = {};
  int64_t i = 0;
  if (stride == 1) {
    for (; i + kLanes <= n; i += kLanes)
      for (int j = 0; j < kLanes; ++j) {
        const acc_t v = static_cast<acc_t>(p[i + j]);
        lane[j] += v * v;
      }
  }
  for (; i < n; ++i) {
    const acc_t v = static_cast<acc_t>(p[i * stride]);
    lane[i % kLanes] += v * v;
  }
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) lane[j] += lane[j + w];
  return lane[0];
}

// How the rows of one tensor are cut into tasks of about kChunk elements: a
// long row is split into chunks, short rows are grouped. Fixed by the shape
// alone, so the work (and the summation order) never depends on the threads.
struct RowTasks {
  int64_t batch = 0, row_numel = 0;
  int64_t chunks_per_row = 1;  // > 1 only for rows longer than kChunk
  int64_t rows_per_task = 1;   // > 1 only for rows shorter than kChunk / 2
  int64_t ntasks = 0;

  RowTasks(int64_t batch_, int64_t row_numel_) : batch(batch_), row_numel(row_numel_) {
    const int64_t n = std::max<int64_t>(row_numel, 1);
    chunks_per_row = div_up(n, kChunk);
    rows_per_task = chunks_per_row == 1 ? std::max<int64_t>(1, kChunk / n) : 1;
    ntasks = div_up(batch, rows_per_task) * chunks_per_row;
  }
  // Task t covers rows [row_begin, row_end) and elements [begin, end) of each;
  // chunk is the index of that element range within a row.
  void decode(int64_t t, int64_t& row_begin, int64_t& row_end, int64_t& chunk, int64_t& begin,
              int64_t& end) const {
    chunk = t % chunks_per_row;
    row_begin = (t / chunks_per_row) * rows_per_task;
    row_end = std::min(batch, row_begin + rows_per_task);
    begin = chunk * kChunk;
    end = std::min(row_numel, begin + kChunk);
  }
};

// The tasks of a list of tensors (the forward's gradients), one after the other.
struct TaskGrid {
  std::vector<RowLayout<1>> layouts;
  std::vector<RowTasks> tasks;
  std::vector<int64_t> first_task;     // per tensor, prefix sum of tasks
  std::vector<int64_t> first_partial;  // per tensor: partial sums of (row, chunk)
  int64_t batch = 0, ntasks = 0, npartials = 0, total_elems = 0;

  explicit TaskGrid(at::TensorList grads) : batch(grads[0].size(0)) {
    for (const at::Tensor& g : grads) {
      layouts.emplace_back(std::array<const at::Tensor*, 1>{&g});
      tasks.emplace_back(batch, layouts.back().row_numel);
      first_task.push_back(ntasks);
      first_partial.push_back(npartials);
      ntasks += tasks.back().ntasks;
      npartials += batch * tasks.back().chunks_per_row;
      total_elems += batch * layouts.back().row_numel;
    }
  }
  int64_t tensor_of(int64_t task) const {
    int64_t k = static_cast<int64_t>(first_task.size()) - 1;
    while (first_task[k] > task) --k;
    return k;
  }
  int64_t partial_index(int64_t k, int64_t row, int64_t chunk) const {
    return first_partial[k] + row * tasks[k].chunks_per_row + chunk;
  }
};

double read_inv_scale(const std::optional<at::Tensor>& inv_scale) {
  return inv_scale.has_value() ? inv_scale->item<double>() : 1.0;
}

at::Tensor interpolate_cpu(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& alpha) {
  check_interpolate(real, fake, alpha);
  at::Tensor out = at::empty_like(real);
  const int64_t batch = real.size(0);
  const at::Tensor a = alpha.to(acc_type_of(real.scalar_type())).contiguous();
  RowLayout<3> layout({&out, &real, &fake});
  const RowTasks rows(batch, layout.row_numel);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, real.scalar_type(), "fastgp_interpolate_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    scalar_t* o = out.data_ptr<scalar_t>();
    const scalar_t* r = real.const_data_ptr<scalar_t>();
    const scalar_t* f = fake.const_data_ptr<scalar_t>();
    const acc_t* ap = a.const_data_ptr<acc_t>();
    const int64_t so = layout.inner_stride(0), sr = layout.inner_stride(1), sf = layout.inner_stride(2);
    run_tasks(rows.ntasks, batch * layout.row_numel, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        int64_t b0, b1, c, begin, end;
        rows.decode(t, b0, b1, c, begin, end);
        for (int64_t b = b0; b < b1; ++b) {
        const acc_t w = ap[b], w1 = acc_t(1) - w;
        layout.for_each_run(b, begin, end, [&](const int64_t* off, int64_t len) {
          scalar_t* po = o + off[0];
          const scalar_t* pr = r + off[1];
          const scalar_t* pf = f + off[2];
          if (so == 1 && sr == 1 && sf == 1) {
            for (int64_t i = 0; i < len; ++i)
              po[i] = static_cast<scalar_t>(w * static_cast<acc_t>(pr[i]) + w1 * static_cast<acc_t>(pf[i]));
          } else {
            for (int64_t i = 0; i < len; ++i)
              po[i * so] = static_cast<scalar_t>(w * static_cast<acc_t>(pr[i * sr]) +
                                                 w1 * static_cast<acc_t>(pf[i * sf]));
          }
        });
        }
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> penalty_forward_cpu(at::TensorList grads,
                                                       const std::optional<at::Tensor>& inv_scale,
                                                       double weight, double center, double power,
                                                       bool one_sided, int64_t reduction) {
  const char* op = "fastgp::penalty_forward";
  check_grads(grads, op);
  check_inv_scale(inv_scale, grads[0], op);
  check_reduction(reduction, op);
  const TaskGrid grid(grads);
  const int64_t batch = grid.batch;
  const auto acc_dtype = acc_type_of(grads[0].scalar_type());
  at::Tensor norms = at::empty({batch}, grads[0].options().dtype(acc_dtype));
  at::Tensor out = reduction == kNone ? at::empty({batch}, norms.options()) : at::empty({}, norms.options());
  std::vector<double> partial(grid.npartials);
  const double s = read_inv_scale(inv_scale);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads[0].scalar_type(), "fastgp_penalty_forward_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    run_tasks(grid.ntasks, grid.total_elems, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t k = grid.tensor_of(t);
        const RowLayout<1>& layout = grid.layouts[k];
        const scalar_t* g = grads[k].const_data_ptr<scalar_t>();
        int64_t b0, b1, c, begin, end;
        grid.tasks[k].decode(t - grid.first_task[k], b0, b1, c, begin, end);
        if (layout.ndim == 1 && grid.tasks[k].chunks_per_row == 1) {  // dense whole rows: tight loop
          const int64_t rs = layout.row_stride[0], st = layout.inner_stride(0), len = layout.row_numel;
          double* dst = partial.data() + grid.partial_index(k, 0, 0);
          for (int64_t b = b0; b < b1; ++b) dst[b] = static_cast<double>(sum_squares<scalar_t, acc_t>(g + b * rs, st, len));
          continue;
        }
        for (int64_t b = b0; b < b1; ++b) {
          acc_t acc = 0;
          layout.for_each_run(b, begin, end, [&](const int64_t* off, int64_t len) {
            acc += sum_squares<scalar_t, acc_t>(g + off[0], layout.inner_stride(0), len);
          });
          partial[grid.partial_index(k, b, c)] = static_cast<double>(acc);
        }
      }
    });
    // Deterministic combine: per row, tensors then chunks in order.
    acc_t* np = norms.data_ptr<acc_t>();
    acc_t* op_ = out.data_ptr<acc_t>();
    const acc_t red = reduction_factor<acc_t>(static_cast<int>(reduction), batch);
    double total = 0;
    for (int64_t b = 0; b < batch; ++b) {
      double ss = 0;
      for (size_t k = 0; k < grid.layouts.size(); ++k)
        for (int64_t c = 0; c < grid.tasks[k].chunks_per_row; ++c) ss += partial[grid.partial_index(k, b, c)];
      const acc_t n = sample_norm<acc_t>(ss, s);
      np[b] = n;
      const acc_t v = penalty_value<acc_t>(n, acc_t(center), acc_t(power), one_sided);
      if (reduction == kNone)
        op_[b] = static_cast<acc_t>(weight) * v;
      else
        total += static_cast<double>(v);
    }
    if (reduction != kNone) op_[0] = static_cast<acc_t>(weight * static_cast<double>(red) * total);
  });
  return {out, norms};
}

std::vector<at::Tensor> penalty_backward_cpu(const at::Tensor& grad_out, at::TensorList grads,
                                             const at::Tensor& norms,
                                             const std::optional<at::Tensor>& inv_scale, double weight,
                                             double center, double power, bool one_sided,
                                             int64_t reduction) {
  check_backward_args(grad_out, grads, norms, inv_scale, reduction, "fastgp::penalty_backward");
  const int64_t batch = grads[0].size(0);
  const auto acc_dtype = acc_type_of(grads[0].scalar_type());
  const at::Tensor go = grad_out.to(acc_dtype).contiguous();
  const at::Tensor nm = norms.to(acc_dtype).contiguous();
  const double s = read_inv_scale(inv_scale);

  std::vector<at::Tensor> outs;
  outs.reserve(grads.size());
  for (const at::Tensor& g : grads) outs.push_back(at::empty_like(g));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads[0].scalar_type(), "fastgp_penalty_backward_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    // Per-sample coefficient (penalty_math.h): go_i * weight * red * s^2 * phi'(n_i)/n_i.
    const acc_t* gop = go.const_data_ptr<acc_t>();
    const acc_t* npp = nm.const_data_ptr<acc_t>();
    const acc_t red = reduction_factor<acc_t>(static_cast<int>(reduction), batch);
    const acc_t wss = static_cast<acc_t>(weight * s * s);
    std::vector<acc_t> coef(batch);
    for (int64_t b = 0; b < batch; ++b)
      coef[b] = backward_coef<acc_t>(go.numel() == 1 ? gop[0] : gop[b], wss, red, npp[b], acc_t(center),
                                     acc_t(power), one_sided);
    for (size_t k = 0; k < grads.size(); ++k) {
      RowLayout<2> layout({&outs[k], &grads[k]});
      const RowTasks rows(batch, layout.row_numel);
      scalar_t* o = outs[k].data_ptr<scalar_t>();
      const scalar_t* g = grads[k].const_data_ptr<scalar_t>();
      const int64_t so = layout.inner_stride(0), sg = layout.inner_stride(1);
      run_tasks(rows.ntasks, batch * layout.row_numel, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          int64_t b0, b1, c, begin, end;
          rows.decode(t, b0, b1, c, begin, end);
          if (layout.ndim == 1 && so == 1 && sg == 1 && rows.chunks_per_row == 1) {  // dense whole rows
            const int64_t ro = layout.row_stride[0], rg = layout.row_stride[1], len = layout.row_numel;
            for (int64_t b = b0; b < b1; ++b) {
              const acc_t cb = coef[b];
              scalar_t* po = o + b * ro;
              const scalar_t* pg = g + b * rg;
              for (int64_t i = 0; i < len; ++i) po[i] = static_cast<scalar_t>(cb * static_cast<acc_t>(pg[i]));
            }
            continue;
          }
          for (int64_t b = b0; b < b1; ++b) {
          const acc_t cb = coef[b];
          layout.for_each_run(b, begin, end, [&](const int64_t* off, int64_t len) {
            scalar_t* po = o + off[0];
            const scalar_t* pg = g + off[1];
            if (so == 1 && sg == 1) {
              for (int64_t i = 0; i < len; ++i) po[i] = static_cast<scalar_t>(cb * static_cast<acc_t>(pg[i]));
            } else {
              for (int64_t i = 0; i < len; ++i)
                po[i * so] = static_cast<scalar_t>(cb * static_cast<acc_t>(pg[i * sg]));
            }
          });
          }
        }
      });
    }
  });
  return outs;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgp, CPU, m) {
  m.impl("interpolate", &interpolate_cpu);
  m.impl("penalty_forward", &penalty_forward_cpu);
  m.impl("penalty_backward", &penalty_backward_cpu);
}

}  // namespace cpu
}  // namespace fastgp
