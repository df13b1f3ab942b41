// fastgp::penalty_backward on a GPU (the kernel and its host code: penalty_backward.cuh).
#include "cuda_device.h"
#include "ops_cuda.h"
#include "penalty_backward.cuh"

namespace fastgp {
namespace cuda {

std::vector<at::Tensor> penalty_backward_cuda(const at::Tensor& grad_out, at::TensorList grads,
                                              const at::Tensor& norms, const std::optional<at::Tensor>& inv_scale,
                                              double weight, double center, double power, bool one_sided,
                                              int64_t reduction) {
  check_grads(grads, "fastgp::penalty_backward");
  const c10::cuda::CUDAGuard guard(grads[0].device());
  return run_penalty_backward(CudaDevice{}, grad_out, grads, norms, inv_scale, weight, center, power, one_sided,
                              reduction);
}

}  // namespace cuda
}  // namespace fastgp
