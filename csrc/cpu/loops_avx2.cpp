// The hot loops for CPUs with AVX2 (ATen's AVX2 capability; FMA is left out,
// the loops must not contract). The instruction set is chosen here rather than
// by a compiler flag, which setuptools cannot give one file; see loops_impl.h
// for what these files may include.
#include "loops.h"

#if defined(__x86_64__) || defined(_M_X64)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx2,f16c")
#endif

#define FASTGP_LOOPS_AVX2
#define FASTGP_LOOPS_ISA isa_avx2
#define FASTGP_LOOPS_NAME "avx2"
#define FASTGP_LOOPS_GETTER loops_avx2
#include "loops_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif  // x86-64
