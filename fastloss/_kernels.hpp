// fastloss compiled kernels: every loss and its gradient in one fused pass.
//
// Layout of this file
//   1. the per-element math of each elementwise loss (one functor per loss),
//   2. the elementwise driver: fixed blocks, fixed lanes, OpenMP over blocks,
//   3. the class kernels (softmax cross-entropy, NLL, multi-margin),
//   4. the scanners the front layer uses to validate values before anything is written.
//
// Determinism: every sum is split into blocks of a fixed number of elements (samples for
// the class kernels) by index; each block is summed into LANES float64 partial sums, lane j
// taking elements j, j + LANES, ... of the block, and the lanes and then the block partials
// are combined by a fixed pairwise tree. Threads only decide who computes which block, so
// results are bitwise identical for any thread count. Per-element math runs in the input's
// dtype with -ffp-contract=off, so a loss computed with or without its gradient has the same
// bits (NAME and NAME_grad agree exactly).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

#if defined(__x86_64__) || defined(__SSE2__)
#include <immintrin.h>  // streaming stores (_kernels_impl.hpp: stream_chunk)
#endif

#include <atomic>
#include <new>

#if FASTLOSS_OPENMP
#include <omp.h>
#endif
#if FASTLOSS_OPENMP && !defined(_WIN32)
#include <pthread.h>
#endif

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
// Scratch memory. The kernels allocate in one place: scratch_alloc, which throws
// std::bad_alloc when memory is short, always before anything is written (the Python layer
// turns it into MemoryError with every output untouched; the C level returns NaN).
// fail_allocations(k) makes the next k calls fail, for the tests of that promise.
inline std::atomic<long> pending_alloc_failures{0};
inline void fail_allocations(long k) { pending_alloc_failures.store(k); }
inline void* scratch_alloc(std::size_t bytes) {
    if (pending_alloc_failures.load(std::memory_order_relaxed) > 0 &&
        pending_alloc_failures.fetch_sub(1) > 0)
        throw std::bad_alloc();
    void* p = std::malloc(bytes);
    if (!p) throw std::bad_alloc();
    return p;
}

// ---------------------------------------------------------------------------------------
// Threads: the one clamp every parallel region goes through (team_size).
//  * Never more threads than CPUs this process may run on (omp_get_num_procs: the affinity
//    mask at start-up): more threads cannot do more work, and OMP_NUM_THREADS=3000 or
//    n_threads=1024 would otherwise start that many.
//  * Never a team the OS has not shown it can create. GNU libgomp ends the process
//    (exit(1)) when pthread_create fails inside a parallel region (an address-space or
//    process limit), so before the first region of a larger team on a calling thread
//    (libgomp keeps one pool of threads per calling thread) the same number of plain threads
//    are created and joined first; if the OS refuses, the team is what it allowed. Results do
//    not depend on the team size (fixed blocks), only the speed does.
inline int cpu_limit() {
#if FASTLOSS_OPENMP
    static const int procs = std::max(1, omp_get_num_procs());
    return procs;
#else
    return 1;
#endif
}

#if FASTLOSS_OPENMP && !defined(_WIN32)
extern "C" inline void* fl_probe_thread(void*) { return nullptr; }

// How many threads (the caller included, so at least 1) the OS lets this thread start now.
inline int creatable_team(int wanted) {
    pthread_attr_t attr;
    bool attr_ok = pthread_attr_init(&attr) == 0;
    // libgomp's helper threads get OMP_STACKSIZE (or GOMP_STACKSIZE) when it is set: probe
    // with the same size. (Its units: a number with an optional B/K/M/G suffix, K default.)
    const char* env = std::getenv("OMP_STACKSIZE");
    if (!env) env = std::getenv("GOMP_STACKSIZE");
    if (attr_ok && env) {
        char* end = nullptr;
        unsigned long long v = std::strtoull(env, &end, 10);
        unsigned long long unit = 1024;
        if (end && *end) {
            const char u = *end | 0x20;
            unit = u == 'b' ? 1 : u == 'k' ? 1024 : u == 'm' ? (1ull << 20) : u == 'g' ? (1ull << 30) : 1024;
        }
        if (v > 0 && v < (1ull << 40)) pthread_attr_setstacksize(&attr, (std::size_t)(v * unit));
    }
    pthread_t threads[64];
    int started = 0;
    const int probe = std::min(wanted - 1, 64);
    while (started < probe &&
           pthread_create(&threads[started], attr_ok ? &attr : nullptr, fl_probe_thread, nullptr) == 0)
        ++started;
    for (int i = 0; i < started; ++i) pthread_join(threads[i], nullptr);
    if (attr_ok) pthread_attr_destroy(&attr);
    return started + 1;
}
#endif

// The team a parallel region of `wanted` threads gets (>= 1).
inline int team_size(int wanted) {
    int n = std::min(std::max(wanted, 1), cpu_limit());
#if FASTLOSS_OPENMP && !defined(_WIN32)
    static thread_local int proven = 1;  // the largest team this thread has started
    if (n > proven) proven = std::max(proven, creatable_team(n));
    n = std::min(n, proven);
#endif
    return n;
}

namespace kernel {
enum Id {
    MSE, L1, HUBER, SMOOTH_L1, BCE, BCE_LOGITS, HINGE, SQUARED_HINGE,  // elementwise
    CROSS_ENTROPY, CROSS_ENTROPY_PROBS, NLL, MULTI_MARGIN,             // classes
};
}  // namespace kernel

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
    T scale;
    idx n;
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
    T scale;
    int64_t ignore_index;
    double p0, p1;  // label_smoothing; or p and margin (multi-margin)
};

}  // namespace fl

// The kernels, compiled three times: for baseline x86-64 (any 64-bit x86 CPU), for
// x86-64-v3 (AVX2) and for x86-64-v4 (AVX-512); the best the CPU runs is picked at run time.
// -ffp-contract=off (setup.py) keeps the compiler from fusing operations on its own; exp and
// log fuse their multiply-adds explicitly (vm::mad in _vecmath.hpp) on the AVX2 and AVX-512
// levels, which therefore give the same bits. The baseline level has no FMA: its exp/log
// results can differ from theirs in the last bits (within the same accuracy bounds).
#define FL_IMPL baseline
#define FL_LEVEL 0
#include "_kernels_impl.hpp"
#undef FL_LEVEL
#undef FL_IMPL

#if defined(__x86_64__) && defined(__GNUC__) && !defined(FASTLOSS_BASELINE_ONLY)
#define FL_MULTIVERSION 1
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
#define FL_IMPL avx2
#define FL_LEVEL 1
#include "_kernels_impl.hpp"
#undef FL_LEVEL
#undef FL_IMPL
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
#define FL_IMPL avx512
#define FL_LEVEL 2
#include "_kernels_impl.hpp"
#undef FL_LEVEL
#undef FL_IMPL
#pragma GCC pop_options
#else
#define FL_MULTIVERSION 0
#endif

namespace fl {

// 0: baseline, 1: AVX2 (x86-64-v3), 2: AVX-512 (x86-64-v4). FASTLOSS_SIMD=baseline|avx2
// in the environment caps it (for benchmarks and tests of the other levels).
inline int detect_simd_level() {
    int level = 0;
#if FL_MULTIVERSION
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v3")) level = 1;
    if (__builtin_cpu_supports("x86-64-v4")) level = 2;
#endif
    const char* cap = std::getenv("FASTLOSS_SIMD");
    if (cap && std::strcmp(cap, "baseline") == 0) level = 0;
    if (cap && std::strcmp(cap, "avx2") == 0 && level > 1) level = 1;
    return level;
}

inline int simd_level() {
    static const int level = detect_simd_level();
    return level;
}

inline const char* simd_name() {
    static const char* names[] = {"baseline (x86-64 SSE2)", "AVX2 (x86-64-v3)", "AVX-512 (x86-64-v4)"};
#if FL_MULTIVERSION
    return names[simd_level()];
#else
    return "baseline";
#endif
}

// OpenMP after fork. GNU libgomp cannot start a parallel region in a child forked after
// the parent ran one: the child waits forever for the parent's thread pool, which fork did
// not copy. So, as PyTorch does, a forked child runs every kernel on one thread: a
// pthread_atfork child handler (registered when fastloss.kernels is imported) sets
// forked_child, and the entry points below cap their thread count with usable_threads.
// Results are unchanged: they do not depend on the thread count.
#if FASTLOSS_OPENMP && !defined(_WIN32)
inline volatile int forked_child = 0;
extern "C" inline void on_fork_child(void) { forked_child = 1; }
inline int register_atfork() { return pthread_atfork(nullptr, nullptr, on_fork_child); }
#else
inline volatile int forked_child = 0;
inline int register_atfork() { return 0; }
#endif

inline int usable_threads(int n_threads) { return forked_child ? 1 : n_threads; }

#if FL_MULTIVERSION
#define FL_DISPATCH(call) \
    switch (simd_level()) { \
        case 2: return avx512::call; \
        case 1: return avx2::call; \
        default: return baseline::call; \
    }
#else
#define FL_DISPATCH(call) return baseline::call;
#endif

// A weight of short period (a scalar, one per column) would make the kernel's runs between
// period boundaries short; it is repeated to a run of at least MIN_WEIGHT_RUN elements (at
// most n) first. Per-element weights are unchanged, so results are too. Out of memory, the
// short period is kept: same results, shorter runs.
constexpr idx MIN_WEIGHT_RUN = 4096;

template <typename T>
struct TiledWeight {
    const T* w;
    idx period;
    T* owned = nullptr;
    TiledWeight(const T* w_, idx p, idx n) : w(w_), period(p) {
        if (!w || p <= 0) return;
        const idx reps = std::min((MIN_WEIGHT_RUN + p - 1) / p, n / p);
        if (reps <= 1) return;
        owned = (T*)std::malloc(sizeof(T) * reps * p);
        if (!owned) return;
        for (idx r = 0; r < reps; ++r) std::memcpy(owned + r * p, w, sizeof(T) * p);
        w = owned;
        period = reps * p;
    }
    ~TiledWeight() { std::free(owned); }
    TiledWeight(const TiledWeight&) = delete;
    TiledWeight& operator=(const TiledWeight&) = delete;
};

template <typename T>
double elementwise(int which, const ElementwiseArgs<T>& args, const double* params, int n_threads) {
    TiledWeight<T> w(args.w, args.w_period, args.n), pw(args.pw, args.pw_period, args.n);
    ElementwiseArgs<T> a = args;
    a.w = w.w;
    a.w_period = w.period;
    a.pw = pw.w;
    a.pw_period = pw.period;
    FL_DISPATCH(elementwise<T>(which, a, params, usable_threads(n_threads)))
}

template <typename T>
double classes(int which, const ClassArgs<T>& a, int n_threads) {
    FL_DISPATCH(classes<T>(which, a, usable_threads(n_threads)))
}

template <typename T>
idx first_outside_unit(const T* a, idx n, int n_threads) {
    FL_DISPATCH(first_outside_unit<T>(a, n, usable_threads(n_threads)))
}

template <typename T>
idx first_non_sign(const T* a, idx n, int n_threads) {
    FL_DISPATCH(first_non_sign<T>(a, n, usable_threads(n_threads)))
}

template <typename T>
double float64_sum(const T* a, idx n) {
    FL_DISPATCH(float64_sum<T>(a, n))
}

template <typename T>
idx class_target_stats(const int64_t* t, idx n, idx C, bool has_ignore, int64_t ignore_index,
                       const T* w, double* weight_sum) {
    FL_DISPATCH(class_target_stats<T>(t, n, C, has_ignore, ignore_index, w, weight_sum))
}

}  // namespace fl
