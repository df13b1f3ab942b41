// What the penalty kernels share: the penalty's parameters as the kernels
// get them, and phi and phi'(n)/n with their pow kept out of line (one copy
// per kernel instead of one per unrolled call; power 2, the common case,
// stays inline and needs no pow).
#pragma once

#include "device_rows.cuh"

namespace fastgp {
namespace cuda {

struct PenaltyParams {
  AnyFloat inv_scale;
  double weight, center, power;
  int reduction;
  bool one_sided;
};

inline PenaltyParams penalty_params(const AnyFloat& inv_scale, double weight, double center, double power,
                                    bool one_sided, int64_t reduction) {
  return PenaltyParams{inv_scale, weight, center, power, static_cast<int>(reduction), one_sided};
}

template <typename acc_t>
__device__ __noinline__ acc_t penalty_value_any_power(acc_t n, acc_t center, acc_t power, bool one_sided) {
  return penalty_value<acc_t>(n, center, power, one_sided);
}

// phi(n_b) of a sample.
template <typename acc_t>
__device__ __forceinline__ acc_t sample_penalty(acc_t n, const PenaltyParams& p) {
  const acc_t center = static_cast<acc_t>(p.center), power = static_cast<acc_t>(p.power);
  return power == acc_t(2) ? penalty_value<acc_t>(n, center, acc_t(2), p.one_sided)
                           : penalty_value_any_power<acc_t>(n, center, power, p.one_sided);
}

template <typename acc_t>
__device__ __noinline__ acc_t backward_coef_any_power(acc_t grad_out, acc_t weight_inv_scale_sq, acc_t red, acc_t n,
                                                      acc_t center, acc_t power, bool one_sided) {
  return backward_coef<acc_t>(grad_out, weight_inv_scale_sq, red, n, center, power, one_sided);
}

// backward_coef of a sample (penalty_math.h).
template <typename acc_t>
__device__ __forceinline__ acc_t sample_coef(acc_t grad_out, acc_t weight_inv_scale_sq, acc_t red, acc_t n,
                                             const PenaltyParams& p) {
  const acc_t center = static_cast<acc_t>(p.center), power = static_cast<acc_t>(p.power);
  return power == acc_t(2) ? backward_coef<acc_t>(grad_out, weight_inv_scale_sq, red, n, center, acc_t(2), p.one_sided)
                           : backward_coef_any_power<acc_t>(grad_out, weight_inv_scale_sq, red, n, center, power,
                                                            p.one_sided);
}

}  // namespace cuda
}  // namespace fastgp
