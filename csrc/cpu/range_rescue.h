// The rescue passes of the range rule (penalty_math.h): rows whose sum of
// squares overflowed or underflowed in the fast pass, and rows whose backward
// coefficient left the range of the accumulation type. Rare, so plain scalar
// code, compiled once (the same bits whatever the CPU capability).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../penalty_math.h"
#include "../strided_rows.h"
#include "row_tasks.h"

namespace fastgp {
namespace cpu {

// A row's sum of squares of its elements scaled by 2^-exponent.
struct ScaledSquares {
  double sum = 0;
  int exponent = 0;
};

// Adds squares as accurately as the fast pass does: 16 lanes (one per element
// index mod 16) over chunks of kChunk elements, chunk sums added in order.
class ChunkedSquares {
 public:
  void add(double square) {
    lane_[count_ % 16] += square;
    if (++count_ == kChunk) flush();
  }
  double total() {
    flush();
    return total_;
  }

 private:
  void flush() {
    for (int w = 8; w > 0; w /= 2)
      for (int j = 0; j < w; ++j) lane_[j] += lane_[j + w];
    total_ += lane_[0];
    std::fill(lane_, lane_ + 16, 0.0);
    count_ = 0;
  }
  double lane_[16] = {};
  int64_t count_ = 0;
  double total_ = 0;
};

// Sum of squares of row `b` over every tensor of `grads` (described by
// `layouts`): in double for float accumulation (exact squares, no overflow or
// underflow possible), scaled by the largest |x| for double (as BLAS nrm2 does).
template <typename scalar_t>
ScaledSquares rescue_row_squares(at::TensorList grads, const std::vector<RowLayout<1>>& layouts, int64_t b) {
  // Calls fn(x) for every element of row b, as a double.
  auto for_each_element = [&](auto&& fn) {
    for (size_t k = 0; k < layouts.size(); ++k) {
      const scalar_t* g = grads[k].const_data_ptr<scalar_t>();
      const int64_t st = layouts[k].inner_stride(0);
      layouts[k].for_each_run(b, 0, layouts[k].row_numel, [&](const int64_t* off, int64_t len) {
        for (int64_t i = 0; i < len; ++i) fn(static_cast<double>(static_cast<acc_type<scalar_t>>(g[off[0] + i * st])));
      });
    }
  };
  ScaledSquares out;
  ChunkedSquares squares;
  if (!std::is_same<scalar_t, double>::value) {
    for_each_element([&](double x) { squares.add(x * x); });
    out.sum = squares.total();
    return out;
  }
  double largest = 0;
  for_each_element([&](double x) { largest = std::max(largest, std::fabs(x)); });
  if (largest == 0 || std::isinf(largest)) {
    out.sum = largest;  // a row of zeros, or an inf: the norm is what it is
    return out;
  }
  out.exponent = std::ilogb(largest);
  for_each_element([&](double x) {
    const double y = std::ldexp(x, -out.exponent);  // exact unless negligible next to the largest
    squares.add(y * y);
  });
  out.sum = squares.total();
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
