// Host entry points of the fastgp CUDA kernels (registered in fastgp_cuda.cu).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

namespace fastgp {
namespace cuda {

at::Tensor interpolate_cuda(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& alpha);

std::tuple<at::Tensor, at::Tensor> penalty_forward_cuda(at::TensorList grads,
                                                        const std::optional<at::Tensor>& inv_scale, double weight,
                                                        double center, double power, bool one_sided,
                                                        int64_t reduction);

std::vector<at::Tensor> penalty_backward_cuda(const at::Tensor& grad_out, at::TensorList grads,
                                              const at::Tensor& norms, const std::optional<at::Tensor>& inv_scale,
                                              double weight, double center, double power, bool one_sided,
                                              int64_t reduction);

}  // namespace cuda
}  // namespace fastgp
