// Launching the fastgp kernels on a GPU: the device policy that the ops'
// host code (run_* in the .cuh files) is written against. The CPU emulation
// (csrc/simt/simt_emulation.h) is the other policy, with the same interface:
//   int64_t resident_blocks<KERNEL>() const     blocks of kThreads the device holds at once
//   void launch<KERNEL>(blocks, threads, args...) const
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <array>
#include <atomic>

#include "device_rows.cuh"

namespace fastgp {
namespace cuda {

constexpr int kMaxDevices = 64;

struct CudaDevice {
  // Asked of the runtime once per (kernel, device). (The runtime is asked
  // directly: ATen's device-properties header pulls in cuBLAS/cuSPARSE headers
  // that a bare toolkit may lack.)
  template <auto KERNEL>
  int64_t resident_blocks() const {
    static std::array<std::atomic<int64_t>, kMaxDevices> cache{};  // 0: not asked yet
    int device = 0;
    C10_CUDA_CHECK(cudaGetDevice(&device));
    if (device < kMaxDevices) {
      const int64_t known = cache[device].load(std::memory_order_relaxed);
      if (known > 0) return known;
    }
    int sms = 0, per_sm = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, KERNEL, kThreads, 0));
    const int64_t blocks = static_cast<int64_t>(std::max(sms, 1)) * std::max(per_sm, 1);
    if (device < kMaxDevices) cache[device].store(blocks, std::memory_order_relaxed);
    return blocks;
  }

  // On the current stream.
  template <auto KERNEL, class... Args>
  void launch(int64_t blocks, int threads, const Args&... args) const {
    KERNEL<<<static_cast<unsigned>(blocks), threads, 0, c10::cuda::getCurrentCUDAStream()>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace cuda
}  // namespace fastgp
