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
//
// Range (every backend keeps this rule; the reference does by computing in float64):
// - Norms. n_i is finite and accurate whenever the true norm is representable
//   in the accumulation type acc_t (float for float16/bfloat16/float32, double
//   for double); inf and NaN inputs propagate. The fast pass sums squares in
//   acc_t per partial (a chunk of a row) and adds the partials in double. A row
//   whose total S is +inf (a square or a partial overflowed) or below
//   rescue_below<acc_t>() (squares underflowed and may have lost precision;
//   rows of zeros too) is recomputed by a rescue pass; a NaN total is kept:
//     float acc_t:  the squares summed in double (a float's square is exact in
//                   double, and double's range holds every sum of them);
//     double acc_t: each element scaled by 2^-e, e = ilogb(max_j |x_j|) (as BLAS
//                   nrm2 does; exact), n = scaled_norm(sum_j (x_j 2^-e)^2, e, inv_scale).
//   Ordinary rows never take the rescue pass, so it costs nothing on them.
// - dL/dg. The coefficient c_i = backward_coef(...) is computed in acc_t. When
//   its exact value is finite but c_i is not a normal acc_t number (inf, NaN,
//   subnormal, 0 from an underflow; or not 0 where the exact value is:
//   0 * inf) (coef_needs_rescue), the row is computed as
//   dL/dg_ij = ldexp(m_i * g_ij, k_i) in double, with
//   c_i = m_i * 2^k_i from backward_coef_scaled (no intermediate overflows:
//   n_i near the top of the range, 1/n_i of a tiny or subnormal n_i).
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

// The normal range of an accumulation type (no <limits>: usable on the device
// without relaxed constexpr).
template <typename acc_t>
struct FloatRange;
template <>
struct FloatRange<float> {
  FASTGP_HD static constexpr float smallest_normal() { return 1.17549435082228751e-38f; }
  FASTGP_HD static constexpr float largest() { return 3.40282346638528860e38f; }
};
template <>
struct FloatRange<double> {
  FASTGP_HD static constexpr double smallest_normal() { return 2.2250738585072014e-308; }
  FASTGP_HD static constexpr double largest() { return 1.7976931348623157e308; }
};

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

// n_i from a rescued sum of squares of the row scaled by 2^-exponent.
template <typename acc_t>
FASTGP_HD acc_t scaled_norm(double sum_squares, int exponent, double inv_scale) {
  return static_cast<acc_t>(ldexp(sqrt(sum_squares) * inv_scale, exponent));
}

// Below this total sum of squares a row is rescued. A square that underflows
// is off by at most half the smallest subnormal, so a partial of up to 2^20
// squares is off by 2^-130 (float) or 2^-1055 (double): relative to these
// thresholds, 2^-30 and 2^-65, below one unit of acc_t.
template <typename acc_t>
FASTGP_HD constexpr double rescue_below() {
  return sizeof(acc_t) == sizeof(double) ? 0x1p-990 : 0x1p-100;
}

// Whether a row's total sum of squares (the partials added in double) must be
// recomputed by the rescue pass: overflowed, or so small that underflowed
// squares may count. NaN (a NaN in the data) is kept as it is.
template <typename acc_t>
FASTGP_HD bool norm_needs_rescue(double sum_squares) {
  return sum_squares > FloatRange<double>::largest() || sum_squares < rescue_below<acc_t>();
}

// dL/dg_i = backward_coef * g_i, with weight_inv_scale_sq = weight * inv_scale^2
// and red the reduction factor (the same product order on every device).
template <typename acc_t>
FASTGP_HD acc_t backward_coef(acc_t grad_out, acc_t weight_inv_scale_sq, acc_t red, acc_t n, acc_t center,
                              acc_t power, bool one_sided) {
  return grad_out * weight_inv_scale_sq * red * penalty_coef<acc_t>(n, center, power, one_sided);
}

// Whether backward_coef's value `coef` lost its range (see the rule above):
// the exact coefficient, prefactor (grad_out * weight * inv_scale^2 * red)
// times phi'(n)/n, is finite (inf and NaN inputs propagate as they are), but
// `coef` is not a normal number (or not 0 where the exact value is 0: 0 * inf).
template <typename acc_t>
FASTGP_HD bool coef_needs_rescue(acc_t coef, double prefactor, acc_t n, acc_t center, bool one_sided) {
  const bool exact_is_finite = fabs(prefactor) <= FloatRange<double>::largest() && n != acc_t(0) &&
                               fabs(n) <= FloatRange<acc_t>::largest();
  if (!exact_is_finite) return false;
  if (prefactor == 0 || penalty_gap(n, center, one_sided) == acc_t(0)) return coef != acc_t(0);
  return !(fabs(coef) >= FloatRange<acc_t>::smallest_normal() && fabs(coef) <= FloatRange<acc_t>::largest());
}

// The coefficient as m * 2^k (|m| in [0.5, 1)), computed in double with the
// exponents of n and of the gap kept apart, so nothing overflows or
// underflows before the product with g: dL/dg = ldexp(m * g, k).
FASTGP_HD void backward_coef_scaled(double prefactor, double n, double center, double power, bool one_sided,
                                    double& m, int& k) {
  const double gap = penalty_gap(n, center, one_sided);
  if (gap == 0 || prefactor == 0) {
    m = 0;
    k = 0;
    return;
  }
  int n_exp, gap_exp;
  const double n_mant = frexp(n, &n_exp);
  const double gap_mant = frexp(fabs(gap), &gap_exp);
  // phi'(n) / n = power * sign * |gap|^(power - 1) / n
  //            = power * sign * gap_mant^(power - 1) * 2^(gap_exp * (power - 1)) / n_mant * 2^-n_exp
  const double gap_pow_exp = gap_exp * (power - 1.0);
  const double whole = floor(gap_pow_exp);
  const double mant = prefactor * power * (gap < 0 ? -1.0 : 1.0) * pow(gap_mant, power - 1.0) *
                      exp2(gap_pow_exp - whole) / n_mant;
  int mant_exp;
  m = frexp(mant, &mant_exp);
  k = mant_exp + static_cast<int>(whole) - n_exp;
}

// The factor the reduction applies to each per-sample term.
template <typename acc_t>
FASTGP_HD acc_t reduction_factor(int reduction, long long batch) {
  return reduction == kMean ? acc_t(1) / acc_t(batch) : acc_t(1);
}

}  // namespace fastgp
