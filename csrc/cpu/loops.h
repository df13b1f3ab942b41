// The hot loops of the CPU kernels, compiled once per CPU capability
// (loops_default.cpp: the x86-64 baseline, SSE2; loops_avx2.cpp; loops_avx512.cpp)
// and picked at run time (fastgp_cpu.cpp: cpu_loops()), as ATen does.
//
// Every variant gives the same bits (NaN for NaN): each loop has one summation
// order whatever the vector width (a sum of squares goes element i into lane
// i % 16, lanes combined pairwise), no FMA contraction, and float16/bfloat16
// conversions that round to nearest even (loops_impl.h). tests/test_cpu_isa.py
// checks it.
//
// This header is shared by the ATen side and the per-capability translation
// units, so it holds types only: no inline functions (see loops_impl.h for why).
#pragma once

#include <cstdint>

namespace fastgp {
namespace cpu {

// Element storage of float16 and bfloat16, the layout of c10::Half and c10::BFloat16.
struct HalfBits {
  uint16_t bits;
};
struct BFloat16Bits {
  uint16_t bits;
};

// Loops over `rows` runs of `len` elements; run r of tensor t starts at
// row_stride[t] * r and steps by stride[t]. A kernel calls them once per
// batch of dense rows, or once per run of a strided row (rows == 1).
template <typename T, typename Acc>
struct TypedLoops {
  // out[r] = sum of squares of run r, in 16 lanes (element i into lane i % 16,
  // lanes then combined pairwise): one order for every vector width.
  void (*sum_squares)(const T* g, const int64_t* row_stride, const int64_t* stride, int64_t len, int64_t rows,
                      Acc* out);
  // For the rescue pass (range_rescue.h), on one run: the sum of squares of
  // x * scale in double (16 lanes as above), and the largest |x|.
  double (*sum_squares_wide)(const T* g, int64_t stride, int64_t n, double scale);
  double (*largest_abs)(const T* g, int64_t stride, int64_t n);
  // out = w[r] * real + (1 - w[r]) * fake, in Acc (tensors: out, real, fake).
  // stream: write contiguous outputs past the caches (for outputs much larger
  // than them; a hint, which the baseline variant ignores).
  void (*interpolate)(T* out, const T* real, const T* fake, const int64_t* row_stride, const int64_t* stride,
                      int64_t len, int64_t rows, const Acc* w, bool stream);
  // out = coef[r] * g, in Acc (tensors: out, g); stream as above.
  void (*scale)(T* out, const T* g, const int64_t* row_stride, const int64_t* stride, int64_t len, int64_t rows,
                const Acc* coef, bool stream);
};

struct Loops {
  const char* capability;  // "default", "avx2" or "avx512"
  TypedLoops<HalfBits, float> f16;
  TypedLoops<BFloat16Bits, float> bf16;
  TypedLoops<float, float> f32;
  TypedLoops<double, double> f64;
};

// One per compiled variant; the AVX ones are compiled on x86-64 only.
const Loops& loops_default();
const Loops& loops_avx2();
const Loops& loops_avx512();

}  // namespace cpu
}  // namespace fastgp
