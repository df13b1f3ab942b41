// Autograd for the fastgp ops, in C++ so a call costs no Python: at small,
// launch-bound shapes a Python autograd wrapper would cost more than the
// kernels. Registered for every device (the Autograd key); the device kernels
// are reached below autograd. The derivative of penalty_backward (only needed
// to differentiate the penalty twice) is registered from Python in ops.py.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace fastgp {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using InterpolateSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&);
using ForwardSig = std::tuple<at::Tensor, at::Tensor>(at::TensorList, const std::optional<at::Tensor>&, double,
                                                      double, double, bool, int64_t);
using BackwardSig = std::vector<at::Tensor>(const at::Tensor&, at::TensorList, const at::Tensor&,
                                            const std::optional<at::Tensor>&, double, double, double, bool,
                                            int64_t);

template <typename Sig>
c10::TypedOperatorHandle<Sig> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

at::Tensor batch_view(const at::Tensor& alpha, const at::Tensor& like) {
  std::vector<int64_t> shape(like.dim(), 1);
  shape[0] = alpha.size(0);
  return alpha.view(shape);
}

class InterpolateFn : public torch::autograd::Function<InterpolateFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& real, const at::Tensor& fake,
                            const at::Tensor& alpha) {
    static auto op = op_handle<InterpolateSig>("fastgp::interpolate");
    at::AutoDispatchBelowADInplaceOrView guard;
    const bool need_alpha = alpha.requires_grad();
    ctx->save_for_backward({alpha, need_alpha ? real : at::Tensor(), need_alpha ? fake : at::Tensor()});
    return op.call(real, fake, alpha);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& alpha = saved[0];
    const at::Tensor& go = grad_outputs[0];
    if (!go.defined()) return {at::Tensor(), at::Tensor(), at::Tensor()};
    const at::Tensor a = batch_view(alpha, go);
    at::Tensor d_real, d_fake, d_alpha;
    if (ctx->needs_input_grad(0)) d_real = (go * a).to(go.scalar_type());
    if (ctx->needs_input_grad(1)) d_fake = (go * (1 - a)).to(go.scalar_type());
    if (ctx->needs_input_grad(2)) {
      // per-sample sum of go * (real - fake); flatten, not reshape(B, -1), so rows of no elements work
      const at::Tensor prod = go * (saved[1] - saved[2]);
      d_alpha = (prod.dim() == 1 ? prod : prod.flatten(1).sum(1)).to(alpha.scalar_type());
    }
    return {d_real, d_fake, d_alpha};
  }
};

class PenaltyForwardFn : public torch::autograd::Function<PenaltyForwardFn> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList grads, const std::optional<at::Tensor>& inv_scale,
                               double weight, double center, double power, bool one_sided, int64_t reduction) {
    static auto op = op_handle<ForwardSig>("fastgp::penalty_forward");
    at::Tensor out, norms;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(out, norms) = op.call(grads, inv_scale, weight, center, power, one_sided, reduction);
    }
    ctx->mark_non_differentiable({norms});
    variable_list to_save(grads.begin(), grads.end());
    to_save.push_back(norms);
    to_save.push_back(inv_scale.has_value() ? *inv_scale : at::Tensor());
    ctx->save_for_backward(to_save);
    ctx->saved_data["weight"] = weight;
    ctx->saved_data["center"] = center;
    ctx->saved_data["power"] = power;
    ctx->saved_data["one_sided"] = one_sided;
    ctx->saved_data["reduction"] = reduction;
    return {out, norms};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    static auto op = op_handle<BackwardSig>("fastgp::penalty_backward");
    auto saved = ctx->get_saved_variables();
    const size_t k = saved.size() - 2;
    const at::Tensor& norms = saved[k];
    std::optional<at::Tensor> inv_scale;
    if (saved[k + 1].defined()) inv_scale = saved[k + 1];
    saved.resize(k);
    variable_list result(k + 6);  // one per grads tensor, inv_scale, then five numbers
    const at::Tensor& go = grad_outputs[0];
    if (!go.defined()) return result;
    const double weight = ctx->saved_data["weight"].toDouble();
    const double center = ctx->saved_data["center"].toDouble();
    const double power = ctx->saved_data["power"].toDouble();
    const bool one_sided = ctx->saved_data["one_sided"].toBool();
    const int64_t reduction = ctx->saved_data["reduction"].toInt();
    std::vector<at::Tensor> d_grads;
    if (at::GradMode::is_enabled()) {  // create_graph: record the backward so it can be differentiated
      d_grads = op.call(go, saved, norms, inv_scale, weight, center, power, one_sided, reduction);
    } else {
      at::AutoDispatchBelowADInplaceOrView guard;
      d_grads = op.call(go, saved, norms, inv_scale, weight, center, power, one_sided, reduction);
    }
    for (size_t i = 0; i < k; ++i) result[i] = d_grads[i];
    return result;
  }
};

at::Tensor interpolate_autograd(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& alpha) {
  return InterpolateFn::apply(real, fake, alpha);
}

std::tuple<at::Tensor, at::Tensor> penalty_forward_autograd(at::TensorList grads,
                                                            const std::optional<at::Tensor>& inv_scale,
                                                            double weight, double center, double power,
                                                            bool one_sided, int64_t reduction) {
  auto outs = PenaltyForwardFn::apply(grads, inv_scale, weight, center, power, one_sided, reduction);
  return {outs[0], outs[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgp, Autograd, m) {
  m.impl("interpolate", &interpolate_autograd);
  m.impl("penalty_forward", &penalty_forward_autograd);
}

}  // namespace fastgp
