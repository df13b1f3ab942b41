// CPU kernels of the fastgp ops: one pass over the data, parallel over
// fixed-size chunks of rows (so results do not depend on the thread count),
// float32 accumulation (float64 for double), any strides, no copies. The hot
// loops run in the CPU's widest vector units (loops.h); rows at the ends of
// the floating-point range take a rescue pass (range_rescue.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "../checks.h"
#include "../penalty_math.h"
#include "../strided_rows.h"
#include "loops.h"
#include "range_rescue.h"
#include "row_tasks.h"
#include "typed_loops.h"

namespace fastgp {
namespace cpu {
namespace {

// The variant ATen itself runs (its get_cpu_capability honours the
// ATEN_CPU_CAPABILITY environment variable), but never one this CPU lacks:
// ATen takes ATEN_CPU_CAPABILITY=avx512 at its word, we check the CPU too.
// (at::native::get_cpu_capability is not exported by libtorch; the string
// form in ATen/Version.h is.) How the variants are compiled: loops_impl.h.
const Loops& select_loops() {
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
  const std::string aten = at::get_cpu_capability();  // "AVX512", "AVX2", or the baseline's name
  __builtin_cpu_init();
  const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  const bool has_avx512 = has_avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (aten == "AVX512" && has_avx512) return loops_avx512();
  if ((aten == "AVX512" || aten == "AVX2") && has_avx2) return loops_avx2();
#endif
  return loops_default();
}

std::string cpu_capability() { return cpu_loops().capability; }

constexpr int64_t kNoRowStride[3] = {0, 0, 0};  // for loop calls on a single run

// Outputs at least this large are written past the caches (loops.h: stream):
// far beyond any core's L2, a good part of a shared L3, so a consumer would
// find little of them cached anyway, and skipping the read-for-ownership of
// every output line saves a quarter to a third of the memory traffic.
constexpr int64_t kStreamBytes = int64_t(4) << 20;

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
  const bool stream = out.nbytes() >= kStreamBytes;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, real.scalar_type(), "fastgp_interpolate_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const auto& loops = loops_for<scalar_t>();
    auto* o = data_of<scalar_t>(out);
    const auto* r = data_of<scalar_t>(real);
    const auto* f = data_of<scalar_t>(fake);
    const acc_t* w = a.const_data_ptr<acc_t>();
    const int64_t* rs = layout.row_stride;
    const int64_t inner[3] = {layout.inner_stride(0), layout.inner_stride(1), layout.inner_stride(2)};
    run_tasks(rows.ntasks, batch * layout.row_numel, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        int64_t b0, b1, c, begin, end;
        rows.decode(t, b0, b1, c, begin, end);
        if (layout.ndim == 1 && rows.chunks_per_row == 1) {  // dense whole rows: one call
          loops.interpolate(o + b0 * rs[0], r + b0 * rs[1], f + b0 * rs[2], rs, inner, layout.row_numel, b1 - b0,
                            w + b0, stream);
          continue;
        }
        for (int64_t b = b0; b < b1; ++b)
          layout.for_each_run(b, begin, end, [&](const int64_t* off, int64_t len) {
            loops.interpolate(o + off[0], r + off[1], f + off[2], kNoRowStride, inner, len, 1, w + b, stream);
          });
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
    const auto& loops = loops_for<scalar_t>();
    run_tasks(grid.ntasks, grid.total_elems, [&](int64_t t0, int64_t t1) {
      constexpr int64_t kRowsPerCall = 256;
      acc_t sums[kRowsPerCall];
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t k = grid.tensor_of(t);
        const RowLayout<1>& layout = grid.layouts[k];
        const auto* g = data_of<scalar_t>(grads[k]);
        const int64_t* inner = layout.strides[0] + layout.ndim - 1;
        int64_t b0, b1, c, begin, end;
        grid.tasks[k].decode(t - grid.first_task[k], b0, b1, c, begin, end);
        if (layout.ndim == 1 && grid.tasks[k].chunks_per_row == 1) {  // dense whole rows: a call per 256
          double* dst = partial.data() + grid.partial_index(k, 0, 0);
          for (int64_t r0 = b0; r0 < b1; r0 += kRowsPerCall) {
            const int64_t n = std::min(kRowsPerCall, b1 - r0);
            loops.sum_squares(g + r0 * layout.row_stride[0], layout.row_stride, inner, layout.row_numel, n, sums);
            for (int64_t i = 0; i < n; ++i) dst[r0 + i] = static_cast<double>(sums[i]);
          }
          continue;
        }
        for (int64_t b = b0; b < b1; ++b) {
          acc_t acc = 0;
          layout.for_each_run(b, begin, end, [&](const int64_t* off, int64_t len) {
            acc_t run;
            loops.sum_squares(g + off[0], kNoRowStride, inner, len, 1, &run);
            acc += run;
          });
          partial[grid.partial_index(k, b, c)] = static_cast<double>(acc);
        }
      }
    });
    // Deterministic combine: per row, tensors then chunks in order; rows out
    // of the fast pass's range are recomputed (penalty_math.h, "Range").
    acc_t* np = norms.data_ptr<acc_t>();
    std::vector<std::pair<int64_t, double>> rescue;  // (row, its fast sum)
    for (int64_t b = 0; b < batch; ++b) {
      double ss = 0;
      for (size_t k = 0; k < grid.layouts.size(); ++k)
        for (int64_t c = 0; c < grid.tasks[k].chunks_per_row; ++c) ss += partial[grid.partial_index(k, b, c)];
      if (norm_needs_rescue<acc_t>(ss))
        rescue.emplace_back(b, ss);
      else
        np[b] = sample_norm<acc_t>(ss, s);
    }
    if (!rescue.empty()) at::parallel_for(0, static_cast<int64_t>(rescue.size()), 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const ScaledSquares r = rescue_row_squares<scalar_t>(grads, grid, rescue[i].first, rescue[i].second);
        np[rescue[i].first] = scaled_norm<acc_t>(r.sum, r.exponent, s);
      }
    });
    acc_t* op_ = out.data_ptr<acc_t>();
    const acc_t red = reduction_factor<acc_t>(static_cast<int>(reduction), batch);
    double total = 0;
    for (int64_t b = 0; b < batch; ++b) {
      const acc_t v = penalty_value<acc_t>(np[b], acc_t(center), acc_t(power), one_sided);
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
    const auto& loops = loops_for<scalar_t>();
    // Per-sample coefficient (penalty_math.h): go_i * weight * red * s^2 * phi'(n_i)/n_i;
    // rows where it left acc_t's range are recomputed after the fast pass.
    const acc_t* gop = go.const_data_ptr<acc_t>();
    const acc_t* npp = nm.const_data_ptr<acc_t>();
    const acc_t red = reduction_factor<acc_t>(static_cast<int>(reduction), batch);
    const acc_t weight_inv_scale_sq = static_cast<acc_t>(weight * s * s);
    std::vector<acc_t> coef(batch);
    struct Rescued {
      int64_t row;
      double m;
      int k;
    };
    std::vector<Rescued> rescue;
    for (int64_t b = 0; b < batch; ++b) {
      const acc_t go_b = go.numel() == 1 ? gop[0] : gop[b];
      coef[b] = backward_coef<acc_t>(go_b, weight_inv_scale_sq, red, npp[b], acc_t(center), acc_t(power), one_sided);
      const double prefactor = static_cast<double>(go_b) * weight * s * s * static_cast<double>(red);
      if (coef_needs_rescue<acc_t>(coef[b], prefactor, npp[b], acc_t(center), one_sided)) {
        Rescued r{b, 0, 0};
        backward_coef_scaled(prefactor, npp[b], center, power, one_sided, r.m, r.k);
        rescue.push_back(r);
      }
    }
    for (size_t k = 0; k < grads.size(); ++k) {
      RowLayout<2> layout({&outs[k], &grads[k]});
      const RowTasks rows(batch, layout.row_numel);
      auto* o = data_of<scalar_t>(outs[k]);
      const auto* g = data_of<scalar_t>(grads[k]);
      const int64_t* rs = layout.row_stride;
      const int64_t inner[2] = {layout.inner_stride(0), layout.inner_stride(1)};
      const bool stream = outs[k].nbytes() >= kStreamBytes;
      run_tasks(rows.ntasks, batch * layout.row_numel, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          int64_t b0, b1, c, begin, end;
          rows.decode(t, b0, b1, c, begin, end);
          if (layout.ndim == 1 && rows.chunks_per_row == 1) {  // dense whole rows: one call
            loops.scale(o + b0 * rs[0], g + b0 * rs[1], rs, inner, layout.row_numel, b1 - b0, coef.data() + b0,
                        stream);
            continue;
          }
          for (int64_t b = b0; b < b1; ++b)
            layout.for_each_run(b, begin, end, [&](const int64_t* off, int64_t len) {
              loops.scale(o + off[0], g + off[1], kNoRowStride, inner, len, 1, coef.data() + b, stream);
            });
        }
      });
      if (!rescue.empty()) at::parallel_for(0, static_cast<int64_t>(rescue.size()), 1, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i)
          rescue_row_backward<scalar_t>(outs[k], grads[k], layout, rescue[i].row, rescue[i].m, rescue[i].k);
      });
    }
  });
  return outs;
}

}  // namespace

const Loops& cpu_loops() {
  static const Loops& loops = select_loops();
  return loops;
}

TORCH_LIBRARY_FRAGMENT(fastgp, m) {
  // Which compiled variant of the CPU kernels runs here: "default", "avx2" or "avx512".
  m.def("cpu_capability() -> str", &cpu_capability);
}

TORCH_LIBRARY_IMPL(fastgp, CPU, m) {
  m.impl("interpolate", &interpolate_cpu);
  m.impl("penalty_forward", &penalty_forward_cpu);
  m.impl("penalty_backward", &penalty_backward_cpu);
}

}  // namespace cpu
}  // namespace fastgp
