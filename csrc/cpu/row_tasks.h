// How the CPU kernels cut their work into tasks: fixed by the shapes alone
// (never by the thread count), so results do not depend on the threads.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../strided_rows.h"

namespace fastgp {
namespace cpu {

// Elements per task: big enough to amortize scheduling, small enough to
// spread a short batch of long rows over all threads.
constexpr int64_t kChunk = 1 << 15;
// Work below this many elements runs on one thread.
constexpr int64_t kSerialElems = 1 << 16;

inline int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Runs fn(task_begin, task_end) over [0, ntasks): inline for small work (a
// thread-pool wake-up costs more than the whole kernel at tabular sizes),
// else in parallel with about kSerialElems elements per grain.
template <typename F>
void run_tasks(int64_t ntasks, int64_t total_elems, const F& fn) {
  if (total_elems <= kSerialElems || ntasks == 1) {
    fn(int64_t(0), ntasks);
    return;
  }
  const int64_t per_task = std::max<int64_t>(1, total_elems / ntasks);
  at::parallel_for(0, ntasks, std::max<int64_t>(1, kSerialElems / per_task), fn);
}

// How the rows of one tensor are cut into tasks of about kChunk elements: a
// long row is split into chunks, short rows are grouped. Fixed by the shape
// alone, so the work (and the summation order) never depends on the threads.
struct RowTasks {
  int64_t batch = 0, row_numel = 0;
  int64_t chunks_per_row = 1;  // > 1 only for rows longer than kChunk
  int64_t rows_per_task = 1;   // > 1 only for rows shorter than kChunk / 2
  int64_t ntasks = 0;

  RowTasks(int64_t batch_, int64_t row_numel_) : batch(batch_), row_numel(row_numel_) {
    const int64_t n = std::max<int64_t>(row_numel, 1);
    chunks_per_row = div_up(n, kChunk);
    rows_per_task = chunks_per_row == 1 ? std::max<int64_t>(1, kChunk / n) : 1;
    ntasks = div_up(batch, rows_per_task) * chunks_per_row;
  }
  // Task t covers rows [row_begin, row_end) and elements [begin, end) of each;
  // chunk is the index of that element range within a row.
  void decode(int64_t t, int64_t& row_begin, int64_t& row_end, int64_t& chunk, int64_t& begin,
              int64_t& end) const {
    chunk = t % chunks_per_row;
    row_begin = (t / chunks_per_row) * rows_per_task;
    row_end = std::min(batch, row_begin + rows_per_task);
    begin = chunk * kChunk;
    end = std::min(row_numel, begin + kChunk);
  }
};

// The tasks of a list of tensors (the forward's gradients), one after the other.
struct TaskGrid {
  std::vector<RowLayout<1>> layouts;
  std::vector<RowTasks> tasks;
  std::vector<int64_t> first_task;     // per tensor, prefix sum of tasks
  std::vector<int64_t> first_partial;  // per tensor: partial sums of (row, chunk)
  int64_t batch = 0, ntasks = 0, npartials = 0, total_elems = 0;

  explicit TaskGrid(at::TensorList grads) : batch(grads[0].size(0)) {
    for (const at::Tensor& g : grads) {
      layouts.emplace_back(std::array<const at::Tensor*, 1>{&g});
      tasks.emplace_back(batch, layouts.back().row_numel);
      first_task.push_back(ntasks);
      first_partial.push_back(npartials);
      ntasks += tasks.back().ntasks;
      npartials += batch * tasks.back().chunks_per_row;
      total_elems += batch * layouts.back().row_numel;
    }
  }
  int64_t tensor_of(int64_t task) const {
    int64_t k = static_cast<int64_t>(first_task.size()) - 1;
    while (first_task[k] > task) --k;
    return k;
  }
  int64_t partial_index(int64_t k, int64_t row, int64_t chunk) const {
    return first_partial[k] + row * tasks[k].chunks_per_row + chunk;
  }
};

}  // namespace cpu
}  // namespace fastgp
