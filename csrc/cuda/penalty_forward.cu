// fastgp::penalty_forward on a GPU (the kernels and their host code: penalty_forward.cuh).
#include "cuda_device.h"
#include "ops_cuda.h"
#include "penalty_forward.cuh"

namespace fastgp {
namespace cuda {

std::tuple<at::Tensor, at::Tensor> penalty_forward_cuda(at::TensorList grads,
                                                        const std::optional<at::Tensor>& inv_scale, double weight,
                                                        double center, double power, bool one_sided,
                                                        int64_t reduction) {
  check_grads(grads, "fastgp::penalty_forward");
  const c10::cuda::CUDAGuard guard(grads[0].device());
  return run_penalty_forward(CudaDevice{}, grads, inv_scale, weight, center, power, one_sided, reduction);
}

}  // namespace cuda
}  // namespace fastgp
