// The kernels for x86-64-v3 (AVX2, FMA), chosen at run time on CPUs that have it
// (dispatch.hpp). Empty where the compiler cannot target it (FL_MULTIVERSION, common.hpp).
// The target pragma comes after every standard header (they stay compiled for the baseline).
#include "common.hpp"
#if FL_MULTIVERSION
#include <immintrin.h>
#pragma GCC target("arch=x86-64-v3")
#define FL_IMPL avx2
#define FL_LEVEL 1
#include "isa.inc"
#endif
