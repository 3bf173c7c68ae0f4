// What libfastloss adds to the kernels and the C level (_generated/c_level.cpp): the
// version queries of libfastloss.h and the fork handler the Python extension registers at
// import (runtime.cpp, OpenMP after fork), registered here when the library is loaded.
// Not part of the Python extension.
#include "libfastloss.h"

#include "dispatch.hpp"

namespace {
// Loading the library registers the fork handler (a forked child runs every kernel on one
// thread). It cannot fail short of memory; if it does, the library still works in processes
// that do not fork after a parallel call.
[[maybe_unused]] const int atfork_registered = fl::register_atfork();
}  // namespace

extern "C" {

FASTLOSS_API const char* fastloss_version(void) { return FASTLOSS_VERSION; }

FASTLOSS_API int fastloss_abi_version(void) { return FASTLOSS_ABI_VERSION; }

FASTLOSS_API const char* fastloss_simd_level(void) { return fl::simd_name(); }

FASTLOSS_API int fastloss_openmp(void) { return FASTLOSS_OPENMP ? 1 : 0; }

}  // extern "C"
