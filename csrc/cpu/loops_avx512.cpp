// The hot loops for CPUs with AVX-512 F/BW/VL/DQ (ATen's AVX512 capability),
// in 512-bit vectors. AVX-512F has FMA instructions of its own: loops_impl.h
// keeps the compiler from contracting. See loops_avx2.cpp for
// why the instruction set is chosen here, and loops_impl.h for what these
// files may include.
#include "loops.h"

#if defined(__x86_64__) || defined(_M_X64)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,f16c,prefer-vector-width=512")
#endif

#define FASTGP_LOOPS_AVX2
#define FASTGP_LOOPS_ISA isa_avx512
#define FASTGP_LOOPS_NAME "avx512"
#define FASTGP_LOOPS_GETTER loops_avx512
#include "loops_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif  // x86-64
