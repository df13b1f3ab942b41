// CUDA kernels of the fastgp ops, registered for the CUDA dispatch key.
// Kernels: interpolate.cu (1 launch), penalty.cu (forward: partial sums +
// finalize, 2 launches; backward: 1 launch).
#include <torch/library.h>

#include "ops_cuda.h"

TORCH_LIBRARY_IMPL(fastgp, CUDA, m) {
  m.impl("interpolate", &fastgp::cuda::interpolate_cuda);
  m.impl("penalty_forward", &fastgp::cuda::penalty_forward_cuda);
  m.impl("penalty_backward", &fastgp::cuda::penalty_backward_cuda);
}
