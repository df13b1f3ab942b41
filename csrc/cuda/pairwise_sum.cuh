// Sums whose value does not depend on how the work was cut into tasks, so
// that the number of tasks can follow the device while every GPU model gives
// the same bits.
//
// Every sum the penalty kernels form is an adjacent pairwise tree: the sum of
// a sequence s_0, s_1, ... is ((s_0 + s_1) + (s_2 + s_3)) + ..., the sequence
// padded with zeros to a power of two. A piece of the sequence that starts at
// a multiple of 2^m and spans 2^m leaves is a subtree, whoever sums it: a warp
// running a chunk of 2^m blocks, or the finalize combining the chunks' sums,
// give the same bits as one warp running the whole row. The leaves:
//  * a block of the wide walk: lane l sums its kUnroll packs in order (fma),
//    then the 32 lane sums form a pairwise tree (xor shuffles 1, 2, 4, ...);
//  * a row of the narrow walk (G lanes): the same over G lanes.
// A row's sum over several tensors adds the tensors' sums in order; the
// batch's sum of penalty values is a pairwise tree over rows.
//
// Sums of squares are SqSum: ssq * 4^e in double, under the range rule of
// penalty_math.h, applied per leaf: float32 accumulation (float16/bfloat16/
// float32 data) sums a leaf in float and keeps e = 0; a leaf whose float sum
// is not finite or is below rescue_below<float>() (overflow, or underflow
// that may cost precision) is summed again in double from the registers that
// hold it. Double accumulation (float64 data) rescales a leaf outside
// [rescue_below<double>(), kDoubleSafeMax] by 2^-ilogb(max |x|), and trees
// renormalize sums that grow past kDoubleSafeMax. So a norm is finite and
// accurate whenever the true norm is representable in the accumulation
// dtype, and ordinary data never leave the fast path.
#pragma once

#include <cmath>
#include <cstdint>

#include "../penalty_math.h"

namespace fastgp {
namespace cuda {

constexpr double kDoubleSafeMax = 0x1p900;  // sums of many such stay far from overflowing
constexpr int kRenormExp = 300;              // a renormalized sum is divided by 4^300

// ssq * 4^e.
struct SqSum {
  double ssq;
  int e;
  int pad;  // keeps the layout of partials explicit (16 bytes)
};

FASTGP_HD SqSum sq_zero() { return SqSum{0.0, 0, 0}; }

// a + b; commutative, and a + 0 == a exactly, as the trees need. SCALED is
// false for float32 accumulation, where e is always 0.
template <bool SCALED>
FASTGP_HD SqSum sq_add(const SqSum& a, const SqSum& b) {
  if (!SCALED) return SqSum{a.ssq + b.ssq, 0, 0};
  if (a.ssq == 0.0) return b;
  if (b.ssq == 0.0) return a;
  SqSum r;
  if (a.e == b.e) {
    r.ssq = a.ssq + b.ssq;
    r.e = a.e;
  } else {
    r.e = a.e > b.e ? a.e : b.e;
    r.ssq = ldexp(a.ssq, 2 * (a.e - r.e)) + ldexp(b.ssq, 2 * (b.e - r.e));
  }
  r.pad = 0;
  if (r.ssq > kDoubleSafeMax && r.ssq <= FloatRange<double>::largest()) {
    r.ssq = ldexp(r.ssq, -2 * kRenormExp);
    r.e += kRenormExp;
  }
  return r;
}

template <bool SCALED>
struct SqAdd {
  FASTGP_HD SqSum operator()(const SqSum& a, const SqSum& b) const { return sq_add<SCALED>(a, b); }
  FASTGP_HD static SqSum zero() { return sq_zero(); }
};

template <typename T>
struct Plus {
  FASTGP_HD T operator()(T a, T b) const { return a + b; }
  FASTGP_HD static T zero() { return T(0); }
};

// A pairwise tree over a sequence pushed one leaf at a time, kept by one
// thread (a binary counter of completed subtrees).
template <typename T, class Add, int LEVELS>
struct SeqTree {
  T level[LEVELS];
  int64_t count = 0;

  FASTGP_HD void push(T v) {
    int64_t i = count++;
    int l = 0;
    for (; i & 1; i >>= 1, ++l) v = Add()(level[l], v);
    level[l] = v;
  }

  FASTGP_HD T total() const {
    T carry = Add::zero();
    int64_t i = count;
    for (int l = 0; i; ++l, i >>= 1)
      if (i & 1) carry = Add()(level[l], carry);
    return carry;
  }
};

#if defined(__CUDACC__) || defined(FASTGP_SIMT_EMULATION)
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ double shfl(double v, int src) { return __shfl_sync(kFullMask, v, src); }
__device__ __forceinline__ float shfl(float v, int src) { return __shfl_sync(kFullMask, v, src); }
__device__ __forceinline__ SqSum shfl(const SqSum& v, int src) {
  return SqSum{__shfl_sync(kFullMask, v.ssq, src), __shfl_sync(kFullMask, v.e, src), 0};
}
__device__ __forceinline__ double shfl_xor(double v, int o) { return __shfl_xor_sync(kFullMask, v, o); }
__device__ __forceinline__ float shfl_xor(float v, int o) { return __shfl_xor_sync(kFullMask, v, o); }
__device__ __forceinline__ SqSum shfl_xor(const SqSum& v, int o) {
  return SqSum{__shfl_xor_sync(kFullMask, v.ssq, o), __shfl_xor_sync(kFullMask, v.e, o), 0};
}

// Pairwise tree over aligned groups of `width` lanes (xor offsets from..width/2);
// every lane of a group ends with its group's sum.
template <typename T, class Add>
__device__ __forceinline__ T lanes_tree(T v, int from, int width) {
  for (int o = from; o < width; o *= 2) v = Add()(v, shfl_xor(v, o));
  return v;
}

// A pairwise tree over a sequence that every lane of a warp pushes alike
// (warp-uniform leaves); level l of the binary counter is kept by lane l, so
// the counter costs one register pair per lane (up to 2^32 leaves).
template <typename T, class Add>
struct WarpTree {
  T mine;
  int64_t count;

  __device__ __forceinline__ void reset() {
    mine = Add::zero();
    count = 0;
  }

  __device__ __forceinline__ void push(T v, int lane) {
    int64_t i = count++;
    int l = 0;
    for (; i & 1; i >>= 1, ++l) v = Add()(shfl(mine, l), v);
    if (lane == l) mine = v;
  }

  __device__ __forceinline__ T total() const {
    T carry = Add::zero();
    int64_t i = count;
    for (int l = 0; i; ++l, i >>= 1)
      if (i & 1) carry = Add()(shfl(mine, l), carry);
    return carry;
  }
};
#endif

}  // namespace cuda
}  // namespace fastgp
