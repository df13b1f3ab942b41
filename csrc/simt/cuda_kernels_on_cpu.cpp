// The fastgp CUDA kernels and their host code (csrc/cuda/*.cuh), unchanged,
// run on CPU tensors through the SIMT emulation (simt_emulation.h), as ops of
// the test-only library that tests/test_cuda_emulation.py builds:
//
//   fastgp_simt::penalty_forward(grads, inv_scale, weight, center, power, one_sided, reduction, resident_warps)
//   fastgp_simt::penalty_backward(grad_out, grads, norms, inv_scale, weight, center, power, one_sided,
//                                 reduction, resident_warps)
//   fastgp_simt::interpolate(real, fake, alpha, resident_warps)
//   fastgp_simt::launches() -> int      kernel launches since the last call
//
// resident_warps stands for the device: the warps it holds at once of each
// kernel (it sets the plan's task sizes and the grid). Not part of fastgp's
// build: nothing here is compiled unless a test asks for it.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "simt_emulation.h"

#include "../cuda/interpolate.cuh"
#include "../cuda/penalty_backward.cuh"
#include "../cuda/penalty_forward.cuh"

namespace fastgp {
namespace simt {
namespace {

std::atomic<int64_t> launch_count{0};

// The device policy of the kernels' host code (see cuda/cuda_device.h).
struct EmulatedDevice {
  int64_t resident_warps;

  template <auto KERNEL>
  int64_t resident_blocks() const {
    return std::max<int64_t>(1, resident_warps / cuda::kWarpsPerBlock);
  }

  template <auto KERNEL, class... Args>
  void launch(int64_t blocks, int threads, const Args&... args) const {
    ++launch_count;
    run_grid(blocks, threads, [&] { KERNEL(args...); });
  }
};

void check_cpu(at::TensorList ts) {
  for (const auto& t : ts) TORCH_CHECK(t.device().is_cpu(), "fastgp_simt: CPU tensors only");
}

std::tuple<at::Tensor, at::Tensor> penalty_forward(at::TensorList grads, const std::optional<at::Tensor>& inv_scale,
                                                   double weight, double center, double power, bool one_sided,
                                                   int64_t reduction, int64_t resident_warps) {
  check_cpu(grads);
  return cuda::run_penalty_forward(EmulatedDevice{resident_warps}, grads, inv_scale, weight, center, power,
                                   one_sided, reduction);
}

std::vector<at::Tensor> penalty_backward(const at::Tensor& grad_out, at::TensorList grads, const at::Tensor& norms,
                                         const std::optional<at::Tensor>& inv_scale, double weight, double center,
                                         double power, bool one_sided, int64_t reduction, int64_t resident_warps) {
  check_cpu(grads);
  return cuda::run_penalty_backward(EmulatedDevice{resident_warps}, grad_out, grads, norms, inv_scale, weight,
                                    center, power, one_sided, reduction);
}

at::Tensor interpolate(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& alpha,
                       int64_t resident_warps) {
  check_cpu({real, fake});
  return cuda::run_interpolate(EmulatedDevice{resident_warps}, real, fake, alpha);
}

int64_t launches() { return launch_count.exchange(0); }

}  // namespace
}  // namespace simt
}  // namespace fastgp

TORCH_LIBRARY(fastgp_simt, m) {
  m.def("penalty_forward(Tensor[] grads, Tensor? inv_scale, float weight, float center, float power, "
        "bool one_sided, int reduction, int resident_warps) -> (Tensor, Tensor)",
        &fastgp::simt::penalty_forward);
  m.def("penalty_backward(Tensor grad_out, Tensor[] grads, Tensor norms, Tensor? inv_scale, float weight, "
        "float center, float power, bool one_sided, int reduction, int resident_warps) -> Tensor[]",
        &fastgp::simt::penalty_backward);
  m.def("interpolate(Tensor real, Tensor fake, Tensor alpha, int resident_warps) -> Tensor",
        &fastgp::simt::interpolate);
  m.def("launches() -> int", &fastgp::simt::launches);
}
