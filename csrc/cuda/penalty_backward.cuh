// fastgp::penalty_backward, 1 launch (for up to plan::kMaxOperands
// gradients): dL/dg_b = go_b * weight * red * inv_scale^2 * phi'(n_b)/n_b * g_b,
// streamed by the elementwise walk (rows_map.cuh); a row whose coefficient
// leaves the accumulation type's range is computed in double (the rule in
// penalty_math.h). inv_scale, norms and grad_out are read on the device (no
// sync, graph-safe).
// The kernel and its host code, for a device policy (penalty_backward.cu:
// the GPU; the CPU emulation in the tests).
#pragma once

#include <ATen/Dispatch.h>

#include <vector>

#include "penalty_params.cuh"
#include "rows_map.cuh"

namespace fastgp {
namespace cuda {
namespace {

using plan::kMaxOperands;

// A row's coefficient: coef in acc_t, or, where it left acc_t's range (the
// rule in penalty_math.h), m * 2^k applied in double.
template <typename acc_t>
struct RowCoef {
  acc_t coef;
  double m;
  int k;
  bool rescued;
};

template <typename acc_t>
struct CoefOp {
  using Row = RowCoef<acc_t>;
  AnyFloat norms, grad_out, inv_scale;
  PenaltyParams p;
  int64_t batch;

  __device__ __forceinline__ Row row_value(int64_t b) const {
    const double s = load_any<double>(inv_scale, 0);
    const acc_t weight_inv_scale_sq = static_cast<acc_t>(p.weight * s * s);
    const acc_t red = reduction_factor<acc_t>(p.reduction, batch);
    const acc_t go = load_any<acc_t>(grad_out, b), n = load_any<acc_t>(norms, b);
    const acc_t coef = sample_coef<acc_t>(go, weight_inv_scale_sq, red, n, p);
    const double prefactor = static_cast<double>(go) * p.weight * s * s * static_cast<double>(red);
    if (coef_needs_rescue<acc_t>(coef, prefactor, n, acc_t(p.center), p.one_sided))
      return rescued_coef(prefactor, n, p.center, p.power, p.one_sided);
    return Row{coef, 0.0, 0, false};
  }
  __device__ __forceinline__ acc_t apply(const Row& w, const acc_t (&x)[1]) const {
    if (w.rescued) return rescued_value(w.m, w.k, x[0]);
    return w.coef * x[0];
  }

  // The rare rows, out of line (frexp, pow, exp2, double math), arguments by value.
  static __device__ __noinline__ Row rescued_coef(double prefactor, acc_t n, double center, double power,
                                                  bool one_sided) {
    Row r{0, 0.0, 0, true};
    backward_coef_scaled(prefactor, static_cast<double>(n), center, power, one_sided, r.m, r.k);
    return r;
  }
  static __device__ __noinline__ acc_t rescued_value(double m, int k, acc_t x) {
    return static_cast<acc_t>(ldexp(m * static_cast<double>(x), k));
  }
};

template <typename scalar_t, bool GENERAL>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSM)
    fastgp_penalty_backward_kernel(const plan::Launch<2, kMaxOperands> l, const CoefOp<acc_type<scalar_t>> op) {
  map_rows<scalar_t, GENERAL>(l, op);
}

template <class Device>
std::vector<at::Tensor> run_penalty_backward(const Device& device, const at::Tensor& grad_out, at::TensorList grads,
                                             const at::Tensor& norms, const std::optional<at::Tensor>& inv_scale,
                                             double weight, double center, double power, bool one_sided,
                                             int64_t reduction) {
  const char* op = "fastgp::penalty_backward";
  check_backward_args(grad_out, grads, norms, inv_scale, reduction, op);
  const int64_t batch = grads[0].size(0);
  const AnyFloat s = inv_scale.has_value() ? any_float(*inv_scale, op, "inv_scale") : AnyFloat{};
  const AnyFloat n = any_float(norms, op, "norms");
  const AnyFloat go = any_float(grad_out, op, "grad_out");

  std::vector<at::Tensor> gs(grads.begin(), grads.end()), outs;
  const std::vector<plan::Operand<2>> operands = plan::backward_operands(gs, outs);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads[0].scalar_type(), "fastgp_penalty_backward", [&] {
    using acc_t = acc_type<scalar_t>;
    const CoefOp<acc_t> coef{n, go, s, penalty_params(s, weight, center, power, one_sided, reduction), batch};
    run_map_rows<scalar_t, 2, kMaxOperands, fastgp_penalty_backward_kernel<scalar_t, false>,
                 fastgp_penalty_backward_kernel<scalar_t, true>>(device, operands, batch, coef);
  });
  return outs;
}

}  // namespace
}  // namespace cuda
}  // namespace fastgp
