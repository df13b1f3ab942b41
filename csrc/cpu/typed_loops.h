// The ATen side of loops.h: the variant this process runs, and the loops and
// raw data pointers of each ATen dtype.
#pragma once

#include <ATen/ATen.h>

#include <type_traits>

#include "../penalty_math.h"
#include "loops.h"

namespace fastgp {
namespace cpu {

// The variant picked for this CPU (fastgp_cpu.cpp), once per process.
const Loops& cpu_loops();

// The storage type of loops.h for each ATen dtype.
template <typename scalar_t>
struct StorageOf {
  using type = scalar_t;  // float, double
};
template <>
struct StorageOf<at::Half> {
  using type = HalfBits;
};
template <>
struct StorageOf<at::BFloat16> {
  using type = BFloat16Bits;
};
template <typename scalar_t>
using storage_t = typename StorageOf<scalar_t>::type;
static_assert(sizeof(at::Half) == sizeof(HalfBits) && sizeof(at::BFloat16) == sizeof(BFloat16Bits),
              "loops.h's float16/bfloat16 storage must match c10's");

template <typename scalar_t>
storage_t<scalar_t>* data_of(at::Tensor& t) {
  return reinterpret_cast<storage_t<scalar_t>*>(t.data_ptr<scalar_t>());
}
template <typename scalar_t>
const storage_t<scalar_t>* data_of(const at::Tensor& t) {
  return reinterpret_cast<const storage_t<scalar_t>*>(t.const_data_ptr<scalar_t>());
}

template <typename scalar_t>
const TypedLoops<storage_t<scalar_t>, acc_type<scalar_t>>& loops_for() {
  const Loops& loops = cpu_loops();
  if constexpr (std::is_same<scalar_t, at::Half>::value) {
    return loops.f16;
  } else if constexpr (std::is_same<scalar_t, at::BFloat16>::value) {
    return loops.bf16;
  } else if constexpr (std::is_same<scalar_t, float>::value) {
    return loops.f32;
  } else {
    return loops.f64;
  }
}

}  // namespace cpu
}  // namespace fastgp
