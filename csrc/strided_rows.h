// Host-side row layout shared by the CPU and CUDA kernels: walks the rows
// (dim 0 = sample) of a few same-shaped tensors with arbitrary
// strides, handing out runs along the innermost (after reordering) dimension.
// Dims are ordered by the first tensor's strides and merged where every tensor
// allows it, so contiguous and channels_last tensors become one flat run per
// row and no copy is ever made.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <numeric>

namespace fastgp {

constexpr int kMaxDims = 25;

template <int NT>
struct RowLayout {
  int ndim = 1;                       // inner dims after merging (>= 1)
  int64_t sizes[kMaxDims];
  int64_t strides[NT][kMaxDims];
  int64_t row_stride[NT];             // stride of dim 0
  int64_t row_numel = 1;

  explicit RowLayout(std::array<const at::Tensor*, NT> ts) {
    const at::Tensor& t0 = *ts[0];
    TORCH_CHECK(t0.dim() <= kMaxDims, "fastgp: tensors of more than ", kMaxDims,
                " dims are not supported, got ", t0.dim());
    for (int t = 0; t < NT; ++t) row_stride[t] = ts[t]->stride(0);
    // Non-batch dims of size > 1, outermost first by the first tensor's stride.
    std::vector<int> dims;
    for (int d = 1; d < t0.dim(); ++d)
      if (t0.size(d) != 1) dims.push_back(d);
    std::stable_sort(dims.begin(), dims.end(), [&](int a, int b) {
      return std::abs(t0.stride(a)) > std::abs(t0.stride(b));
    });
    ndim = 0;
    for (int d : dims) {
      const int64_t size = t0.size(d);
      row_numel *= size;
      bool merge = ndim > 0;
      for (int t = 0; t < NT && merge; ++t)
        merge = strides[t][ndim - 1] == ts[t]->stride(d) * size;
      if (merge) {
        sizes[ndim - 1] *= size;
        for (int t = 0; t < NT; ++t) strides[t][ndim - 1] = ts[t]->stride(d);
      } else {
        sizes[ndim] = size;
        for (int t = 0; t < NT; ++t) strides[t][ndim] = ts[t]->stride(d);
        ++ndim;
      }
    }
    if (ndim == 0) {  // one element per row
      ndim = 1;
      sizes[0] = 1;
      for (int t = 0; t < NT; ++t) strides[t][0] = 1;
    }
  }

  int64_t inner_stride(int t) const { return strides[t][ndim - 1]; }

  // Calls fn(offsets, len) for consecutive runs covering elements
  // [begin, end) of row `row` (in iteration order); offsets are element
  // offsets from each tensor's data pointer, runs step by inner_stride(t).
  template <typename F>
  void for_each_run(int64_t row, int64_t begin, int64_t end, F&& fn) const {
    if (begin >= end) return;  // also rows of no elements (a size-0 dim: no division by it)
    if (ndim == 1) {  // a dense row (contiguous, channels_last, tabular): one run, no index arithmetic
      int64_t run[NT];
      for (int t = 0; t < NT; ++t) run[t] = row * row_stride[t] + begin * strides[t][0];
      fn(run, end - begin);
      return;
    }
    const int last = ndim - 1;
    const int64_t inner = sizes[last];
    int64_t idx[kMaxDims];
    int64_t off[NT];
    int64_t outer = begin / inner;
    int64_t pos = begin % inner;
    for (int t = 0; t < NT; ++t) off[t] = row * row_stride[t];
    for (int d = last - 1; d >= 0; --d) {
      idx[d] = outer % sizes[d];
      outer /= sizes[d];
      for (int t = 0; t < NT; ++t) off[t] += idx[d] * strides[t][d];
    }
    int64_t remaining = end - begin;
    while (remaining > 0) {
      const int64_t len = std::min(inner - pos, remaining);
      int64_t run[NT];
      for (int t = 0; t < NT; ++t) run[t] = off[t] + pos * strides[t][last];
      fn(run, len);
      remaining -= len;
      pos = 0;
      for (int d = last - 1; d >= 0 && remaining > 0; --d) {
        ++idx[d];
        for (int t = 0; t < NT; ++t) off[t] += strides[t][d];
        if (idx[d] < sizes[d]) break;
        idx[d] = 0;
        for (int t = 0; t < NT; ++t) off[t] -= sizes[d] * strides[t][d];
      }
    }
  }
};

}  // namespace fastgp
