// The rescue passes of the range rule (penalty_math.h): rows whose sum of
// squares overflowed or underflowed in the fast pass (rows of zeros among
// them, which are common enough to deserve the vector loops: loops.h), and rows
// whose backward coefficient left the range of the accumulation type (rare:
// plain scalar code, compiled once).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../penalty_math.h"
#include "../strided_rows.h"
#include "row_tasks.h"
#include "typed_loops.h"

namespace fastgp {
namespace cpu {

// A row's sum of squares of its elements scaled by 2^-exponent.
struct ScaledSquares {
  double sum = 0;
  int exponent = 0;
};

// Sum of squares of row `b` over every tensor of `grads`, in the fast pass's
// order (per chunk, run by run) but in double: of the values themselves for
// float accumulation (exact squares, no overflow or underflow possible), of
// the values scaled by 2^-e for double, e the exponent of the largest |x| (as
// BLAS nrm2 does; e >= -1000 keeps 2^-e a double, and squares of subnormal
// values scaled by 2^1000 are still far from underflowing). A row whose fast
// sum was 0 is first checked for being all zeros, which one quick pass tells.
template <typename scalar_t>
ScaledSquares rescue_row_squares(at::TensorList grads, const TaskGrid& grid, int64_t b, double fast_sum) {
  const auto& loops = loops_for<scalar_t>();
  // Calls fn(g, stride, len) for each run of row b, chunk by chunk; returns the
  // sum of fn's results, added per chunk, then over chunks.
  auto over_runs = [&](auto&& fn) {
    double total = 0;
    for (size_t k = 0; k < grid.layouts.size(); ++k) {
      const RowLayout<1>& layout = grid.layouts[k];
      const auto* g = data_of<scalar_t>(grads[k]);
      for (int64_t c = 0; c < grid.tasks[k].chunks_per_row; ++c) {
        double chunk = 0;
        layout.for_each_run(b, c * kChunk, std::min(layout.row_numel, (c + 1) * kChunk),
                            [&](const int64_t* off, int64_t len) { chunk += fn(g + off[0], layout.inner_stride(0), len); });
        total += chunk;
      }
    }
    return total;
  };
  auto sum_scaled = [&](double scale) {
    return over_runs([&](const auto* g, int64_t st, int64_t len) { return loops.sum_squares_wide(g, st, len, scale); });
  };
  auto largest_abs = [&] {
    double largest = 0;
    over_runs([&](const auto* g, int64_t st, int64_t len) {
      largest = std::max(largest, loops.largest_abs(g, st, len));
      return 0.0;
    });
    return largest;
  };
  ScaledSquares out;
  const bool is_double = std::is_same<scalar_t, double>::value;
  const double largest = is_double || fast_sum == 0 ? largest_abs() : 1.0;
  if (largest == 0 || std::isinf(largest)) {
    out.sum = largest;  // a row of zeros, or an inf: the norm is what it is
    return out;
  }
  if (is_double) out.exponent = std::max(std::ilogb(largest), -1000);
  out.sum = sum_scaled(std::ldexp(1.0, -out.exponent));
  return out;
}

// dL/dg of row `b` of one tensor: out = ldexp(m * g, k) in double (see
// backward_coef_scaled), for a row whose coefficient left acc_t's range.
template <typename scalar_t>
void rescue_row_backward(at::Tensor& out, const at::Tensor& grad, const RowLayout<2>& layout, int64_t b, double m,
                         int k) {
  scalar_t* o = out.data_ptr<scalar_t>();
  const scalar_t* g = grad.const_data_ptr<scalar_t>();
  const int64_t so = layout.inner_stride(0), sg = layout.inner_stride(1);
  layout.for_each_run(b, 0, layout.row_numel, [&](const int64_t* off, int64_t len) {
    for (int64_t i = 0; i < len; ++i) {
      const double x = static_cast<double>(static_cast<acc_type<scalar_t>>(g[off[1] + i * sg]));
      o[off[0] + i * so] = static_cast<scalar_t>(static_cast<acc_type<scalar_t>>(std::ldexp(m * x, k)));
    }
  });
}

}  // namespace cpu
}  // namespace fastgp
