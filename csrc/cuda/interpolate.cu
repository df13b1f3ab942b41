// fastgp::interpolate on a GPU (the kernel and its host code: interpolate.cuh).
#include "cuda_device.h"
#include "interpolate.cuh"
#include "ops_cuda.h"

namespace fastgp {
namespace cuda {

at::Tensor interpolate_cuda(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& alpha) {
  const c10::cuda::CUDAGuard guard(real.device());
  return run_interpolate(CudaDevice{}, real, fake, alpha);
}

}  // namespace cuda
}  // namespace fastgp
