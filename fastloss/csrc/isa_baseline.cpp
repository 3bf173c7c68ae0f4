// The kernels for baseline x86-64 (SSE2, any 64-bit x86 CPU) or, elsewhere, the compiler's
// default target: always built, the fallback of the run-time dispatch (dispatch.hpp).
#include "common.hpp"
#if defined(__x86_64__) || defined(__SSE2__)
#include <immintrin.h>  // streaming stores (drivers.hpp: stream_chunk)
#endif

#define FL_IMPL baseline
#define FL_LEVEL 0
#include "isa.inc"
