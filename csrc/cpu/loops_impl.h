// The hot loops (loops.h), included once by each per-capability translation
// unit after it has chosen its instruction set (#pragma GCC target), its
// namespace FASTGP_LOOPS_ISA, and its name and getter (loops.h).
//
// Why these translation units include nothing but <cstdint> (and, for the AVX
// variants, <immintrin.h>, whose intrinsics are always inlined): an inline
// function or template that one of them instantiates from a shared header
// (ATen, c10, the standard library) is emitted as a weak symbol compiled with
// AVX instructions, and the linker keeps one copy of it for the whole library:
// if it keeps that one, the baseline path runs AVX code and dies with SIGILL on
// a CPU without AVX. So everything here is our own, in an anonymous namespace
// (internal linkage, one copy per variant): raw pointers, float16/bfloat16
// conversions written out, compiler builtins instead of <cmath>/<bit>. The only
// external symbol of a variant is its loops_<capability>() getter.
//
// The float16/bfloat16 conversions are branch-free (so the loops vectorize)
// and round to nearest even like c10's: the FP16 library's fp16_ieee_to_fp32_value
// / fp16_ieee_from_fp32_value (what c10::Half uses on a baseline CPU; NaN
// becomes 0x7E00 with its sign), and c10::BFloat16's round_to_nearest_even
// (NaN becomes 0x7FC0); the AVX variants convert 8 at a time (below), with
// the same values. So every variant gives the same bits, except that a
// NaN may come out with another sign or payload (x86 passes on one operand's
// NaN, and which operand comes first is the compiler's choice).
#if !defined(FASTGP_LOOPS_ISA) || !defined(FASTGP_LOOPS_NAME) || !defined(FASTGP_LOOPS_GETTER)
#error "define FASTGP_LOOPS_ISA (namespace), FASTGP_LOOPS_NAME and FASTGP_LOOPS_GETTER before including loops_impl.h"
#endif

// No fused multiply-adds formed by the compiler (GCC's default for C++ is
// -ffp-contract=fast, and AVX-512F brings FMA instructions): said here rather
// than in the build's flags, so every way of building the library keeps it.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

// The AVX variants (FASTGP_LOOPS_AVX2) convert float16/bfloat16 8 at a time
// with AVX2 and F16C (the same values as the written-out conversions: exact
// one way, round to nearest even the other), and can write past the caches.
#ifdef FASTGP_LOOPS_AVX2
#include <immintrin.h>
#endif

namespace fastgp {
namespace cpu {
namespace FASTGP_LOOPS_ISA {
namespace {

inline float float_of_bits(uint32_t w) { return __builtin_bit_cast(float, w); }
inline uint32_t bits_of_float(float f) { return __builtin_bit_cast(uint32_t, f); }
// cond ? a : b with masks: a ?: over floating-point values is control flow the
// vectorizer will not if-convert under -ftrapping-math (GCC's default).
inline uint32_t select(bool cond, uint32_t a, uint32_t b) {
  const uint32_t mask = 0u - uint32_t(cond);
  return (a & mask) | (b & ~mask);
}

inline float half_to_float(uint16_t h) {
  const uint32_t w = uint32_t(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  // Normal (and inf/NaN): shift the exponent and mantissa into place and rebias
  // with an exact multiplication; subnormal: build 0.5 + m * 2^-24 and subtract 0.5.
  const float normalized = float_of_bits((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = float_of_bits((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t magnitude = select(two_w < (1u << 27), bits_of_float(denormalized), bits_of_float(normalized));
  return float_of_bits(sign | magnitude);
}

inline uint16_t float_to_half(float f) {
  // Scaling up then down rounds the mantissa at binary16's precision, with
  // overflow to inf; adding the bias puts the rounded bits where binary16 wants them.
  float base = (__builtin_fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t w = bits_of_float(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  bias = select(bias < 0x71000000u, 0x71000000u, bias);
  base = float_of_bits((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = bits_of_float(base);
  const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  return uint16_t((sign >> 16) | select(shl1_w > 0xFF000000u, 0x7E00u, nonsign));
}

inline float bfloat16_to_float(uint16_t b) { return float_of_bits(uint32_t(b) << 16); }

inline uint16_t float_to_bfloat16(float f) {
  const uint32_t u = bits_of_float(f);
  return uint16_t(select(f != f, 0x7FC0u, (u + ((u >> 16) & 1u) + 0x7FFFu) >> 16));
}

// load: storage -> accumulation type; put: back into storage, rounding to nearest even.
inline float load(float v) { return v; }
inline double load(double v) { return v; }
inline float load(HalfBits v) { return half_to_float(v.bits); }
inline float load(BFloat16Bits v) { return bfloat16_to_float(v.bits); }
inline void put(float& out, float v) { out = v; }
inline void put(double& out, double v) { out = v; }
inline void put(HalfBits& out, float v) { out.bits = float_to_half(v); }
inline void put(BFloat16Bits& out, float v) { out.bits = float_to_bfloat16(v); }

template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};
template <typename T>
using acc_of = typename AccOf<T>::type;

constexpr int kLanes = 16;

template <typename A, typename B>
constexpr bool kSame = false;
template <typename A>
constexpr bool kSame<A, A> = true;

#ifdef FASTGP_LOOPS_AVX2
// 8 float16/bfloat16 values <-> 8 floats in a register, the same values as
// load/put: float16 by F16C, bfloat16 by the same integer steps as
// float_to_bfloat16 (round to nearest even, NaN to 0x7FC0).
inline __m256 load8(const HalfBits* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline void put8(HalfBits* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}
inline __m256 load8(const BFloat16Bits* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
inline __m256i bfloat16_bits(__m256 v) {  // 8 x 32 bits, each < 2^16
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i bits = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
  return _mm256_blendv_epi8(bits, _mm256_set1_epi32(0x7FC0), _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
}
// 16 x 32 bits -> 16 x 16 bits: pack within 128-bit lanes, then put the quarters in order.
inline __m256i pack16(__m256i a, __m256i b) { return _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8); }
inline void put8(BFloat16Bits* p, __m256 v) {
  const __m256i bits = bfloat16_bits(v);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(pack16(bits, bits)));
}
// 16 values at once (bfloat16: one pack for two registers).
inline void put16(HalfBits* p, __m256 a, __m256 b) {
  put8(p, a);
  put8(p + 8, b);
}
inline void put16(BFloat16Bits* p, __m256 a, __m256 b) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), pack16(bfloat16_bits(a), bfloat16_bits(b)));
}

// The contiguous parts of the loops below for float16/bfloat16: the same lanes
// and the same operations, 8 to a register. Each returns how many elements it took.
template <typename T>
int64_t sum_squares8(const T* p, int64_t n, float* lane) {
  __m256 lo = _mm256_loadu_ps(lane), hi = _mm256_loadu_ps(lane + 8);
  int64_t i = 0;
  for (; n - i >= kLanes; i += kLanes) {
    const __m256 a = load8(p + i), b = load8(p + i + 8);
    lo = _mm256_add_ps(lo, _mm256_mul_ps(a, a));
    hi = _mm256_add_ps(hi, _mm256_mul_ps(b, b));
  }
  _mm256_storeu_ps(lane, lo);
  _mm256_storeu_ps(lane + 8, hi);
  return i;
}

template <typename T>
int64_t interpolate8(T* out, const T* real, const T* fake, int64_t n, float wr, float wf) {
  const __m256 vr = _mm256_set1_ps(wr), vf = _mm256_set1_ps(wf);
  auto at = [&](int64_t i) { return _mm256_add_ps(_mm256_mul_ps(vr, load8(real + i)), _mm256_mul_ps(vf, load8(fake + i))); };
  int64_t i = 0;
  for (; n - i >= 16; i += 16) put16(out + i, at(i), at(i + 8));
  for (; n - i >= 8; i += 8) put8(out + i, at(i));
  return i;
}

template <typename T>
int64_t scale8(T* out, const T* g, int64_t n, float c) {
  const __m256 vc = _mm256_set1_ps(c);
  auto at = [&](int64_t i) { return _mm256_mul_ps(vc, load8(g + i)); };
  int64_t i = 0;
  for (; n - i >= 16; i += 16) put16(out + i, at(i), at(i + 8));
  for (; n - i >= 8; i += 8) put8(out + i, at(i));
  return i;
}

template <typename T>
constexpr bool kSixteenBit = kSame<T, HalfBits> || kSame<T, BFloat16Bits>;
#endif

template <typename T>
acc_of<T> run_sum_squares(const T* __restrict p, int64_t stride, int64_t n) {
  using A = acc_of<T>;
  if (n < kLanes) {  // short rows (tabular data): no lane set-up
    A acc = 0;
    for (int64_t i = 0; i < n; ++i) {
      const A v = load(p[i * stride]);
      acc += v * v;
    }
    return acc;
  }
  A lane[kLanes] = {};
  int64_t i = 0;
  if (stride == 1) {
#ifdef FASTGP_LOOPS_AVX2
    if constexpr (kSixteenBit<T>) i = sum_squares8(p, n, lane);
#endif
    for (; i + kLanes <= n; i += kLanes)
      for (int j = 0; j < kLanes; ++j) {
        const A v = load(p[i + j]);
        lane[j] += v * v;
      }
  }
  for (; i < n; ++i) {
    const A v = load(p[i * stride]);
    lane[i % kLanes] += v * v;
  }
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) lane[j] += lane[j + w];
  return lane[0];
}

template <typename T>
void sum_squares(const T* g, const int64_t* row_stride, const int64_t* stride, int64_t len, int64_t rows,
                 acc_of<T>* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = run_sum_squares(g + r * row_stride[0], stride[0], len);
}

template <typename T>
double sum_squares_wide(const T* __restrict p, int64_t stride, int64_t n, double scale) {
  double lane[kLanes] = {};
  int64_t i = 0;
  if (stride == 1) {
    for (; i + kLanes <= n; i += kLanes)
      for (int j = 0; j < kLanes; ++j) {
        const double v = static_cast<double>(load(p[i + j])) * scale;
        lane[j] += v * v;
      }
  }
  for (; i < n; ++i) {
    const double v = static_cast<double>(load(p[i * stride])) * scale;
    lane[i % kLanes] += v * v;
  }
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) lane[j] += lane[j + w];
  return lane[0];
}

// The bits of |x| order as its values (NaN aside, which never gets here), and
// an integer maximum vectorizes where a floating-point one (with its NaN rules) does not.
template <typename A>
struct MagnitudeBits;
template <>
struct MagnitudeBits<float> {
  using type = int32_t;
  static type of(float x) { return static_cast<int32_t>(__builtin_bit_cast(uint32_t, x) & 0x7FFFFFFFu); }
  static float value(type b) { return __builtin_bit_cast(float, static_cast<uint32_t>(b)); }
};
template <>
struct MagnitudeBits<double> {
  using type = int64_t;
  static type of(double x) { return static_cast<int64_t>(__builtin_bit_cast(uint64_t, x) & 0x7FFFFFFFFFFFFFFFull); }
  static double value(type b) { return __builtin_bit_cast(double, static_cast<uint64_t>(b)); }
};

template <typename T>
double largest_abs(const T* __restrict p, int64_t stride, int64_t n) {
  using Bits = MagnitudeBits<acc_of<T>>;
  typename Bits::type largest = 0;
  for (int64_t i = 0; i < n; ++i) {
    const typename Bits::type a = Bits::of(load(p[i * stride]));
    largest = a > largest ? a : largest;
  }
  return static_cast<double>(Bits::value(largest));
}

// out[i] = wr * real[i] + wf * fake[i] over a contiguous run.
template <typename T>
void interpolate_run(T* __restrict out, const T* __restrict real, const T* __restrict fake, int64_t n,
                     acc_of<T> wr, acc_of<T> wf) {
  int64_t i = 0;
#ifdef FASTGP_LOOPS_AVX2
  if constexpr (kSixteenBit<T>) i = interpolate8(out, real, fake, n, wr, wf);
#endif
  for (; i < n; ++i) put(out[i], wr * load(real[i]) + wf * load(fake[i]));
}

// out[i] = c * g[i] over a contiguous run.
template <typename T>
void scale_run(T* __restrict out, const T* __restrict g, int64_t n, acc_of<T> c) {
  int64_t i = 0;
#ifdef FASTGP_LOOPS_AVX2
  if constexpr (kSixteenBit<T>) i = scale8(out, g, n, c);
#endif
  for (; i < n; ++i) put(out[i], c * load(g[i]));
}

// Writes a contiguous run of n outputs with non-temporal stores, which skip
// reading each output line into the cache before writing it (a quarter of the
// memory traffic of an interpolation, a third of a backward). run(dst, i, m)
// computes outputs [i, i + m) into dst: the same arithmetic either way, into
// an L1-resident block that is then streamed out.
#ifdef FASTGP_LOOPS_AVX2
template <typename T, typename Run>
void write_streaming(T* out, int64_t n, const Run& run) {
  constexpr int64_t kBytes = 512, kBlock = kBytes / sizeof(T);
  int64_t head = static_cast<int64_t>(((32 - (reinterpret_cast<uintptr_t>(out) & 31)) & 31) / sizeof(T));
  head = head < n ? head : n;
  run(out, 0, head);
  int64_t i = head;
  alignas(32) T block[kBlock];
  for (; i + kBlock <= n; i += kBlock) {
    run(block, i, kBlock);
    for (int64_t j = 0; j < kBytes / 32; ++j)
      _mm256_stream_si256(reinterpret_cast<__m256i*>(out + i) + j, _mm256_load_si256(reinterpret_cast<const __m256i*>(block) + j));
  }
  run(out + i, i, n - i);
}
#endif

template <typename T>
void interpolate(T* out, const T* real, const T* fake, const int64_t* row_stride, const int64_t* stride,
                 int64_t len, int64_t rows, const acc_of<T>* w, bool stream) {
  using A = acc_of<T>;
  const int64_t so = stride[0], sr = stride[1], sf = stride[2];
  for (int64_t r = 0; r < rows; ++r) {
    const A wr = w[r], wf = A(1) - wr;
    T* po = out + r * row_stride[0];
    const T* pr = real + r * row_stride[1];
    const T* pf = fake + r * row_stride[2];
    if (so == 1 && sr == 1 && sf == 1) {
#ifdef FASTGP_LOOPS_AVX2
      if (stream) {
        write_streaming(po, len, [&](T* dst, int64_t i, int64_t m) { interpolate_run(dst, pr + i, pf + i, m, wr, wf); });
        continue;
      }
#endif
      interpolate_run(po, pr, pf, len, wr, wf);
    } else {
      for (int64_t i = 0; i < len; ++i) put(po[i * so], wr * load(pr[i * sr]) + wf * load(pf[i * sf]));
    }
  }
#ifdef FASTGP_LOOPS_AVX2
  if (stream) _mm_sfence();  // non-temporal stores are weakly ordered: done before anyone reads
#endif
  (void)stream;
}

template <typename T>
void scale(T* out, const T* g, const int64_t* row_stride, const int64_t* stride, int64_t len, int64_t rows,
           const acc_of<T>* coef, bool stream) {
  const int64_t so = stride[0], sg = stride[1];
  for (int64_t r = 0; r < rows; ++r) {
    const acc_of<T> c = coef[r];
    T* po = out + r * row_stride[0];
    const T* pg = g + r * row_stride[1];
    if (so == 1 && sg == 1) {
#ifdef FASTGP_LOOPS_AVX2
      if (stream) {
        write_streaming(po, len, [&](T* dst, int64_t i, int64_t m) { scale_run(dst, pg + i, m, c); });
        continue;
      }
#endif
      scale_run(po, pg, len, c);
    } else {
      for (int64_t i = 0; i < len; ++i) put(po[i * so], c * load(pg[i * sg]));
    }
  }
#ifdef FASTGP_LOOPS_AVX2
  if (stream) _mm_sfence();
#endif
  (void)stream;
}

template <typename T>
constexpr TypedLoops<T, acc_of<T>> typed_loops() {
  return {&sum_squares<T>, &sum_squares_wide<T>, &largest_abs<T>, &interpolate<T>, &scale<T>};
}

}  // namespace
}  // namespace FASTGP_LOOPS_ISA
}  // namespace cpu
}  // namespace fastgp

namespace fastgp {
namespace cpu {

const Loops& FASTGP_LOOPS_GETTER() {
  using namespace FASTGP_LOOPS_ISA;
  static constexpr Loops loops{FASTGP_LOOPS_NAME, typed_loops<HalfBits>(), typed_loops<BFloat16Bits>(),
                               typed_loops<float>(), typed_loops<double>()};
  return loops;
}

}  // namespace cpu
}  // namespace fastgp
