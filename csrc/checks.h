// Argument checks shared by every backend of the fastgp ops. Python validates
// user input first with friendlier messages; these keep direct op calls safe.
#pragma once

#include <ATen/ATen.h>

namespace fastgp {

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// float32 accumulation for half/bfloat16/float, float64 for double.
inline at::ScalarType acc_type_of(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_grads(at::TensorList grads, const char* op) {
  TORCH_CHECK(!grads.empty(), op, ": grads must hold at least one tensor");
  const at::Tensor& g0 = grads[0];
  TORCH_CHECK(g0.dim() >= 1, op, ": grads[0] must have a batch dimension, got a 0-d tensor");
  TORCH_CHECK(g0.size(0) > 0, op, ": the batch is empty (grads[0].size(0) == 0)");
  for (size_t k = 0; k < grads.size(); ++k) {
    const at::Tensor& g = grads[k];
    TORCH_CHECK(is_supported_float(g.scalar_type()), op, ": grads[", k,
                "] must be float16, bfloat16, float32 or float64, got ", g.scalar_type());
    TORCH_CHECK(g.scalar_type() == g0.scalar_type(), op, ": grads[", k, "] has dtype ",
                g.scalar_type(), " but grads[0] has ", g0.scalar_type());
    TORCH_CHECK(g.device() == g0.device(), op, ": grads[", k, "] is on ", g.device(),
                " but grads[0] is on ", g0.device());
    TORCH_CHECK(g.dim() >= 1 && g.size(0) == g0.size(0), op, ": grads[", k,
                "] must have batch size ", g0.size(0), " in dim 0, got shape ", g.sizes());
  }
}

inline void check_inv_scale(const std::optional<at::Tensor>& inv_scale, const at::Tensor& like,
                            const char* op) {
  if (!inv_scale.has_value()) return;
  const at::Tensor& s = *inv_scale;
  TORCH_CHECK(s.numel() == 1, op, ": inv_scale must hold one number, got shape ", s.sizes());
  TORCH_CHECK(at::isFloatingType(s.scalar_type()), op, ": inv_scale must be floating point, got ",
              s.scalar_type());
  TORCH_CHECK(s.device() == like.device(), op, ": inv_scale is on ", s.device(),
              " but the gradients are on ", like.device());
}

inline void check_reduction(int64_t reduction, const char* op) {
  TORCH_CHECK(reduction >= 0 && reduction <= 2, op,
              ": reduction code must be 0 (none), 1 (mean) or 2 (sum), got ", reduction);
}

// Everything penalty_backward needs beyond the gradients themselves.
inline void check_backward_args(const at::Tensor& grad_out, at::TensorList grads, const at::Tensor& norms,
                                const std::optional<at::Tensor>& inv_scale, int64_t reduction, const char* op) {
  check_grads(grads, op);
  check_inv_scale(inv_scale, grads[0], op);
  check_reduction(reduction, op);
  const int64_t batch = grads[0].size(0);
  TORCH_CHECK(norms.dim() == 1 && norms.size(0) == batch, op, ": norms must have shape (", batch, ",), got ",
              norms.sizes());
  TORCH_CHECK(grad_out.numel() == 1 || (grad_out.dim() == 1 && grad_out.size(0) == batch), op,
              ": grad_out must be a scalar or have shape (", batch, ",), got ", grad_out.sizes());
  TORCH_CHECK(norms.device() == grads[0].device() && grad_out.device() == grads[0].device(), op,
              ": grad_out and norms must be on the gradients' device ", grads[0].device(), ", got ",
              grad_out.device(), " and ", norms.device());
}

inline void check_interpolate(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& alpha) {
  TORCH_CHECK(real.sizes() == fake.sizes(), "fastgp::interpolate: real has shape ", real.sizes(),
              " but fake has shape ", fake.sizes());
  TORCH_CHECK(real.scalar_type() == fake.scalar_type(), "fastgp::interpolate: real is ",
              real.scalar_type(), " but fake is ", fake.scalar_type());
  TORCH_CHECK(is_supported_float(real.scalar_type()),
              "fastgp::interpolate: real/fake must be float16, bfloat16, float32 or float64, got ",
              real.scalar_type());
  TORCH_CHECK(real.device() == fake.device() && real.device() == alpha.device(),
              "fastgp::interpolate: real, fake and alpha must share a device, got ", real.device(),
              ", ", fake.device(), ", ", alpha.device());
  TORCH_CHECK(real.dim() >= 1 && real.size(0) > 0,
              "fastgp::interpolate: real must have a non-empty batch dimension, got shape ", real.sizes());
  TORCH_CHECK(alpha.dim() == 1 && alpha.size(0) == real.size(0),
              "fastgp::interpolate: alpha must have shape (", real.size(0), ",), got ", alpha.sizes());
  TORCH_CHECK(at::isFloatingType(alpha.scalar_type()),
              "fastgp::interpolate: alpha must be floating point, got ", alpha.scalar_type());
}

}  // namespace fastgp
