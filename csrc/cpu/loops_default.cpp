// The hot loops for the x86-64 baseline (SSE2) and any other CPU: compiled
// with the build's flags only. See loops_impl.h for what these files may include.
#include "loops.h"

#define FASTGP_LOOPS_ISA isa_default
#include "loops_impl.h"

namespace fastgp {
namespace cpu {

const Loops& loops_default() {
  using namespace isa_default;
  static constexpr Loops loops{"default", typed_loops<HalfBits>(), typed_loops<BFloat16Bits>(), typed_loops<float>(),
                               typed_loops<double>()};
  return loops;
}

}  // namespace cpu
}  // namespace fastgp
