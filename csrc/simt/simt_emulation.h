// A CPU emulation of the CUDA execution model, just enough to run the fastgp
// kernels (csrc/cuda/*.cuh) unchanged in tests on machines without a GPU:
// every thread of a block is a std::thread; warp shuffles, warp votes and
// __syncthreads are barriers between them; blocks of a grid run one after
// another. Lanes that reach different warp operations (divergence) or a
// barrier that not every thread reaches make the launch fail with an error
// after a timeout, instead of hanging.
//
// Include after ATen, before the kernel headers; compile with a host C++
// compiler (never nvcc). For tests only: slow, and nothing of the GPU's
// timing or memory model is emulated, only what the kernels compute.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#error "the SIMT emulation is for host compilers"
#endif

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#define FASTGP_SIMT_EMULATION 1
#define __device__
#define __host__
#define __global__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static

struct uint4 {
  unsigned x, y, z, w;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

// The device math functions the kernels call, with their float overloads.
using std::exp2;
using std::fabs;
using std::floor;
using std::fma;
using std::fmax;
using std::frexp;
using std::ilogb;
using std::ldexp;
using std::pow;
using std::sqrt;

namespace fastgp {
namespace simt {

constexpr int kWarpSize = 32;

// A reusable barrier that gives up (and stays broken) when not every thread
// arrives within the timeout.
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}

  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (broken_) return;
    const uint64_t generation = generation_;
    if (++waiting_ == count_) {
      waiting_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    if (!cv_.wait_for(lock, std::chrono::seconds(60), [&] { return generation_ != generation || broken_; })) {
      broken_ = true;
      cv_.notify_all();
    }
  }

  bool broken() {
    std::lock_guard<std::mutex> lock(mutex_);
    return broken_;
  }

  void set_count(int count) { count_ = count; }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int count_;
  int waiting_ = 0;
  uint64_t generation_ = 0;
  bool broken_ = false;
};

struct Warp {
  Barrier barrier{kWarpSize};
  alignas(16) unsigned char slot[kWarpSize][16];
};

struct Block {
  explicit Block(int threads) : barrier(threads), warps((threads + kWarpSize - 1) / kWarpSize) {
    for (auto& w : warps) w = std::make_unique<Warp>();
  }
  Barrier barrier;
  std::vector<std::unique_ptr<Warp>> warps;
};

struct ThreadContext {
  dim3 thread, block;
  Block* block_state = nullptr;
};

inline thread_local ThreadContext context;
inline dim3 grid_dim, block_dim;  // of the running launch (launches run one at a time)

inline Warp& my_warp() { return *context.block_state->warps[context.thread.x / kWarpSize]; }
inline int my_lane() { return static_cast<int>(context.thread.x % kWarpSize); }

// Every lane posts its value, then reads lane src_of(lane)'s.
template <typename T, class Src>
T exchange(T v, Src src_of) {
  static_assert(sizeof(T) <= 16, "a shuffle moves at most 16 bytes here");
  Warp& w = my_warp();
  const int lane = my_lane();
  std::memcpy(w.slot[lane], &v, sizeof(T));
  w.barrier.wait();
  T out;
  std::memcpy(&out, w.slot[src_of(lane) % kWarpSize], sizeof(T));
  w.barrier.wait();  // nobody posts again before everybody has read
  return out;
}

// Runs body() as every thread of a grid of `blocks` blocks of `threads`
// threads; throws if a barrier broke (divergence, or a barrier some threads
// never reach).
template <class Body>
void run_grid(int64_t blocks, int threads, Body body) {
  grid_dim = dim3{static_cast<unsigned>(blocks), 1, 1};
  block_dim = dim3{static_cast<unsigned>(threads), 1, 1};
  for (int64_t b = 0; b < blocks; ++b) {
    Block block(threads);
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        context.thread = dim3{static_cast<unsigned>(t), 1, 1};
        context.block = dim3{static_cast<unsigned>(b), 1, 1};
        context.block_state = &block;
        body();
      });
    for (auto& th : pool) th.join();
    bool broken = block.barrier.broken();
    for (auto& w : block.warps) broken = broken || w->barrier.broken();
    if (broken)
      throw std::runtime_error("SIMT emulation: a barrier timed out in block " + std::to_string(b) +
                               " (lanes diverged at a warp operation, or threads skipped a __syncthreads)");
  }
}

}  // namespace simt
}  // namespace fastgp

#define threadIdx (::fastgp::simt::context.thread)
#define blockIdx (::fastgp::simt::context.block)
#define gridDim (::fastgp::simt::grid_dim)
#define blockDim (::fastgp::simt::block_dim)

template <typename T>
T __shfl_sync(unsigned, T v, int src) {
  return ::fastgp::simt::exchange(v, [src](int) { return src; });
}

template <typename T>
T __shfl_xor_sync(unsigned, T v, int lane_mask) {
  return ::fastgp::simt::exchange(v, [lane_mask](int lane) { return lane ^ lane_mask; });
}

inline int __any_sync(unsigned, int predicate) {
  using namespace ::fastgp::simt;
  Warp& w = my_warp();
  const int lane = my_lane();
  const int mine = predicate != 0;
  std::memcpy(w.slot[lane], &mine, sizeof(mine));
  w.barrier.wait();
  int any = 0;
  for (int l = 0; l < kWarpSize; ++l) {
    int v;
    std::memcpy(&v, w.slot[l], sizeof(v));
    any |= v;
  }
  w.barrier.wait();
  return any;
}

inline void __syncthreads() { ::fastgp::simt::context.block_state->barrier.wait(); }

inline void __stwb(uint4* p, uint4 v) { *p = v; }
