// The hot loops for the x86-64 baseline (SSE2) and any other CPU: compiled
// with the build's flags only. See loops_impl.h for what these files may include.
#include "loops.h"

#define FASTGP_LOOPS_ISA isa_default
#define FASTGP_LOOPS_NAME "default"
#define FASTGP_LOOPS_GETTER loops_default
#include "loops_impl.h"

