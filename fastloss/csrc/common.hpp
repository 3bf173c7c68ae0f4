// What every translation unit of the compiled backend shares: the index type, the argument
// blocks of the kernels, the run-time services (scratch memory, threads, fork) defined once
// in runtime.cpp, and the kernel table generated from the registry.
//
// Translation units (setup.py compiles them in parallel):
//   isa_baseline.cpp, isa_avx2.cpp, isa_avx512.cpp  the kernels, once per instruction set
//                                                    (isa.inc: drivers.hpp + the loss math)
//   runtime.cpp                                      scratch memory, thread clamp, fork
//   kernels.pyx (Cython)                             the Python glue, the C level (capi.hpp)
//                                                    and the dispatch (dispatch.hpp)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

#ifndef FASTLOSS_OPENMP
#define FASTLOSS_OPENMP 0
#endif

#include "kernel_table.hpp"  // generated from fastloss/_registry.py (fastloss/_codegen.py)

namespace fl {

using idx = std::ptrdiff_t;

// ---------------------------------------------------------------------------------------
// A class index read exactly once. A plain load may legally be repeated by the compiler
// (it assumes no other thread writes the array), so the value checked and the value used
// could differ under a racing caller; an atomic load (relaxed: a plain move on x86 and ARM)
// cannot be repeated or split.
inline int64_t read_once(const int64_t* p) {
#if defined(__GNUC__) || defined(__clang__)
    return __atomic_load_n(p, __ATOMIC_RELAXED);
#else
    return *static_cast<const volatile int64_t*>(p);
#endif
}

// ---------------------------------------------------------------------------------------
// Run-time services, defined once in runtime.cpp (compiled for the baseline instruction set:
// nothing shared between the per-instruction-set units is compiled with their flags).

// Scratch memory: the kernels allocate in one place, which throws std::bad_alloc when memory
// is short, always before anything is written (the Python layer raises MemoryError with
// every output untouched; the C level returns NaN). fail_allocations(k) makes the next k
// calls fail, for the tests of that promise.
void* scratch_alloc(std::size_t bytes);
void fail_allocations(long k);

// Threads (see runtime.cpp): the one clamp every parallel call goes through, and the
// work-claiming pool that runs them.
int cpu_limit();            // the CPUs this process may run on (1 without OpenMP)
int team_size(int wanted);  // the threads a parallel call of `wanted` threads may use (>= 1)
int omp_default_threads();  // omp_get_max_threads(): OMP_NUM_THREADS, threadpoolctl (1 without OpenMP)

// run_units: unit(ctx, u) for every u in [0, nunits), each exactly once, by the calling thread
// and at most n_threads - 1 helper threads of the pool. The caller claims units too and
// returns as soon as every unit is done: it never waits for a helper that has not claimed a
// unit (a helper the OS has not scheduled simply gets none). unit must not throw. Serial when
// n_threads <= 1, nunits <= 1, in a forked child, without OpenMP, or while another thread
// holds the pool (concurrent callers: one runs in parallel, the others serially).
// Whichever thread runs a unit, it computes the same bits: callers give each unit fixed work.
using UnitFn = void (*)(void* ctx, idx unit);
constexpr idx MAX_UNITS = (idx(1) << 20) - 1;  // units of one call (callers group blocks)
void run_units(idx nunits, int n_threads, UnitFn unit, void* ctx);
// Test hooks of the pool: hold_helpers(true) keeps every helper from joining a job (as a
// helper the OS does not schedule); helper_units() counts the units helpers have run.
void hold_helpers(bool on);
long helper_units();

// Fork: a forked child runs every kernel on one thread (the pool's helpers are not copied).
int register_atfork();
bool in_forked_child();
inline int usable_threads(int n_threads) { return in_forked_child() ? 1 : n_threads; }

// ---------------------------------------------------------------------------------------
// Argument blocks of the kernels. params: the loss's scalar parameters in registry order
// (MAX_PARAMS of them at most, generated).

template <typename T>
struct ElementwiseArgs {
    const T* x;
    const T* y;
    const T* w;        // weight[i % w_period], or null
    const T* pw;       // pos_weight[i % pw_period], or null
    idx w_period;      // > 0 when w is given
    idx pw_period;     // > 0 when pw is given
    T* loss;      // per-element weighted loss ("none"), or null
    T* grad;      // gradient times scale, or null (may equal x: in place)
    T* hess;      // diagonal of the Hessian times scale, or null (only with grad)
    T scale;
    idx n;
    const double* params;
    double hess_const;  // > 0: every term's second derivative is this constant (a policy); 0: exact
    bool no_sum = false;  // with grad and hess and no per-element loss: skip the loss sum (returns 0)
};

template <typename T>
struct ClassArgs {
    const T* x;
    const int64_t* target;  // indices, or null
    const T* probs;         // class probabilities, or null
    const T* w;             // (C,) class weights, or null
    idx N, C, K;
    T* loss;  // (N, K) per-sample weighted loss ("none"), or null
    T* grad;  // (N, C, K) gradient times scale, or null (may equal x)
    T* hess;  // (N, C, K) diagonal of the Hessian times scale, or null (only with grad)
    T scale;
    int64_t ignore_index;
    const double* params;
    double hess_const;  // > 0: every entry's second derivative is this constant (a policy); 0: exact
};

// The entry points of one instruction-set level (defined in isa.inc, instantiated for float
// and double in each isa_*.cpp).
#define FL_DECLARE_LEVEL(LEVEL)                                                                    \
    namespace LEVEL {                                                                              \
    template <typename T> double elementwise(int kernel, const ElementwiseArgs<T>& a, int n_threads); \
    template <typename T> double classes(int kernel, const ClassArgs<T>& a, int n_threads);       \
    template <typename T> idx first_outside_unit(const T* a, idx n, int n_threads);              \
    template <typename T> idx first_non_sign(const T* a, idx n, int n_threads);                  \
    template <typename T> idx first_negative(const T* a, idx n, int n_threads, bool strict);     \
    template <typename T> double float64_sum(const T* a, idx n);                                 \
    template <typename T>                                                                          \
    idx class_target_stats(const int64_t* t, idx n, idx C, bool has_ignore, int64_t ignore_index, \
                           const T* w, double* weight_sum);                                      \
    }

FL_DECLARE_LEVEL(baseline)
FL_DECLARE_LEVEL(avx2)
FL_DECLARE_LEVEL(avx512)

}  // namespace fl

// The x86-64 levels beyond the baseline exist where GCC or Clang can target them.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(FASTLOSS_BASELINE_ONLY)
#define FL_MULTIVERSION 1
#else
#define FL_MULTIVERSION 0
#endif
