// The run-time dispatch: the best instruction-set level this CPU runs (at most the one
// FASTLOSS_SIMD names), and the entry points of the compiled backend that forward to it.
// Included by the Cython glue (kernels.pyx) and the C level (capi.hpp), one translation unit.
//
// The kernels are compiled three times (isa_*.cpp): for baseline x86-64 (any 64-bit x86
// CPU), for x86-64-v3 (AVX2) and for x86-64-v4 (AVX-512). -ffp-contract=off (setup.py) keeps
// the compiler from fusing operations on its own; exp and log fuse their multiply-adds
// explicitly (vm::mad in vecmath.hpp) on the AVX2 and AVX-512 levels, which therefore give
// the same bits. The baseline level has no FMA: its exp/log results can differ from theirs
// in the last bits (within the same accuracy bounds).
#pragma once

#include <atomic>

#include "common.hpp"

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

inline int detected_simd_level() {
    static const int level = detect_simd_level();
    return level;
}

// A lower level chosen at run time (-1: none), for the benchmark alone, which times every
// level side by side in one process (kernels._set_simd_cap, `bench --simd`). Not for
// results: the baseline level's exp/log can differ from the others' in the last bits.
inline std::atomic<int>& simd_cap() {
    static std::atomic<int> cap{-1};
    return cap;
}

inline void set_simd_cap(int level) { simd_cap().store(level < 0 ? -1 : level, std::memory_order_relaxed); }

inline int simd_level() {
    const int level = detected_simd_level(), cap = simd_cap().load(std::memory_order_relaxed);
    return cap >= 0 && cap < level ? cap : level;
}

inline const char* simd_name() {
    static const char* names[] = {"baseline (x86-64 SSE2)", "AVX2 (x86-64-v3)", "AVX-512 (x86-64-v4)"};
#if FL_MULTIVERSION
    return names[simd_level()];
#else
    (void)names;
    return "baseline";
#endif
}

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
// most n) first. Per-element weights are unchanged, and the drivers sum by element index
// whatever the runs (drivers.hpp, block), so results are too. Out of memory, the short
// period is kept: same results, shorter runs.
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
        // one period, then doubled (whole periods throughout): a few copies, where one
        // memcpy per period cost 2 us for a scalar weight (p = 1) at 1000 elements
        const idx m = reps * p;
        std::memcpy(owned, w, sizeof(T) * p);
        for (idx filled = p; filled < m; filled += std::min(filled, m - filled))
            std::memcpy(owned + filled, owned, sizeof(T) * std::min(filled, m - filled));
        w = owned;
        period = reps * p;
    }
    ~TiledWeight() { std::free(owned); }
    TiledWeight(const TiledWeight&) = delete;
    TiledWeight& operator=(const TiledWeight&) = delete;
};

template <typename T>
double elementwise(int kernel, const ElementwiseArgs<T>& args, int n_threads) {
    if (args.no_sum && args.w && args.w_period == 1 && !args.loss && args.grad && args.hess) {
        // A constant weight without the loss (a boosting objective's w / 2): the weighted
        // loops would use ws = w * scale for the gradient and the Hessian, rounded in T; the
        // unweighted loops with that product as their scale give the very same bits without
        // reading a tiled weight.
        ElementwiseArgs<T> a = args;
        a.scale = T(args.w[0] * args.scale);
        a.w = nullptr;
        a.w_period = 0;
        return elementwise(kernel, a, n_threads);
    }
    TiledWeight<T> w(args.w, args.w_period, args.n), pw(args.pw, args.pw_period, args.n);
    ElementwiseArgs<T> a = args;
    a.w = w.w;
    a.w_period = w.period;
    a.pw = pw.w;
    a.pw_period = pw.period;
    FL_DISPATCH(elementwise<T>(kernel, a, usable_threads(n_threads)))
}

template <typename T>
double classes(int kernel, const ClassArgs<T>& a, int n_threads) {
    FL_DISPATCH(classes<T>(kernel, a, usable_threads(n_threads)))
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
idx first_negative(const T* a, idx n, int n_threads, bool strict) {
    FL_DISPATCH(first_negative<T>(a, n, usable_threads(n_threads), strict))
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
