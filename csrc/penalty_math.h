// The penalty arithmetic shared by the CPU and CUDA kernels (one copy, so the
// CPU tests cover the formulas the GPU runs).
//
// Per sample i with gradient norm n_i (already unscaled):
//   phi(n)  = |n - center|^power            (two-sided)
//   phi(n)  = max(0, n - center)^power      (one-sided)
//   dL/dg_i = go_i * weight * red * inv_scale^2 * (phi'(n_i) / n_i) * g_i
// phi'(n)/n at n == 0 is taken as its limit when that limit is finite
// (center 0, power 2 gives 2; center 0, power > 2 gives 0) and 0 otherwise,
// so a zero gradient never produces NaN.
#pragma once

#include <cmath>
#include <type_traits>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FASTGP_HD __host__ __device__ __forceinline__
#else
#define FASTGP_HD inline
#endif

namespace fastgp {

// Accumulation type: float for half/bfloat16/float, double for double.
template <typename scalar_t>
using acc_type = typename std::conditional<std::is_same<scalar_t, double>::value, double, float>::type;

// Reduction codes shared with fastgp/ops.py.
enum Reduction : int { kNone = 0, kMean = 1, kSum = 2 };

// Signed distance from the center that enters phi; 0 on the inactive side of
// a one-sided penalty.
template <typename acc_t>
FASTGP_HD acc_t penalty_gap(acc_t n, acc_t center, bool one_sided) {
  acc_t d = n - center;
  return (one_sided && d < acc_t(0)) ? acc_t(0) : d;
}

template <typename acc_t>
FASTGP_HD acc_t penalty_value(acc_t n, acc_t center, acc_t power, bool one_sided) {
  const acc_t d = penalty_gap(n, center, one_sided);
  if (power == acc_t(2)) return d * d;
  if (power == acc_t(1)) return fabs(d);
  return pow(fabs(d), power);
}

// phi'(n) / n with the zero-norm rule above.
template <typename acc_t>
FASTGP_HD acc_t penalty_coef(acc_t n, acc_t center, acc_t power, bool one_sided) {
  if (n == acc_t(0)) {
    if (center != acc_t(0)) return acc_t(0);
    return power == acc_t(2) ? acc_t(2) : acc_t(0);
  }
  const acc_t d = penalty_gap(n, center, one_sided);
  if (d == acc_t(0)) return acc_t(0);
  acc_t dphi;
  if (power == acc_t(2)) {
    dphi = acc_t(2) * d;
  } else {
    const acc_t sign = d > acc_t(0) ? acc_t(1) : acc_t(-1);
    dphi = power == acc_t(1) ? sign : power * pow(fabs(d), power - acc_t(1)) * sign;
  }
  return dphi / n;
}

// n_i from the sum of squares of sample i's (scaled) gradient.
template <typename acc_t>
FASTGP_HD acc_t sample_norm(double sum_squares, double inv_scale) {
  return static_cast<acc_t>(sqrt(sum_squares) * inv_scale);
}

// dL/dg_i = backward_coef * g_i, with wss = weight * inv_scale^2 and red the
// reduction factor (the same product order on every device).
template <typename acc_t>
FASTGP_HD acc_t backward_coef(acc_t grad_out, acc_t wss, acc_t red, acc_t n, acc_t center, acc_t power,
                              bool one_sided) {
  return grad_out * wss * red * penalty_coef<acc_t>(n, center, power, one_sided);
}

// The factor the reduction applies to each per-sample term.
template <typename acc_t>
FASTGP_HD acc_t reduction_factor(int reduction, long long batch) {
  return reduction == kMean ? acc_t(1) / acc_t(batch) : acc_t(1);
}

}  // namespace fastgp
