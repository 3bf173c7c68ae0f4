// The C level of fastloss: argument checks, the "mean" divisor and the kernel call behind
// the fl_<loss>_grad_f32/_f64 functions (generated from the registry into kernels.pyx,
// declared in the generated kernels.pxd and fastloss_losses.h).
//
// Every check runs before any element is read past the sizes given or anything is written;
// a bad argument returns NaN with nothing written. Then the kernel runs exactly as the Python
// API runs it (same divisor and gradient scale), so results are bitwise those of the Python
// functions. n_threads: 0 is OpenMP's default, a count above MAX_THREADS is clamped to it
// (as the Python API clamps, both generated from the registry), a negative one is refused.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

#include "dispatch.hpp"
#include "reduction.hpp"

namespace fl {
namespace capi {

constexpr idx IDX_MAX = std::numeric_limits<idx>::max();
const double NaN = std::numeric_limits<double>::quiet_NaN();

// The thread count of a C-level call: 0 is OpenMP's default; above MAX_THREADS, clamped.
inline int c_level_threads(int n_threads) {
    if (n_threads == 0) return omp_default_threads();
    return n_threads < MAX_THREADS ? n_threads : MAX_THREADS;
}

inline bool bad_mode(int reduction, int n_threads) {
    return (reduction != MEAN && reduction != SUM) || n_threads < 0;
}

// Whether the byte ranges [a, a + a_bytes) and [b, b + b_bytes) share a byte.
inline bool overlap(const void* a, idx a_bytes, const void* b, idx b_bytes) {
    if (!a || !b || a_bytes <= 0 || b_bytes <= 0) return false;
    const uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return pa < pb + (uintptr_t)b_bytes && pb < pa + (uintptr_t)a_bytes;
}

// The weights (elementwise, or class weights: every loss is linear in them) and the "mean"
// divisor (their sum) times the same power of two when 1 / divisor would not be a normal
// number of T (weights summing to a subnormal number, or in float32 beyond its range): the
// gradient is g * (w * (1 / sum)), and the mean sum(w l) / sum(w) is unchanged (exact
// scaling). As the Python API does (fastloss/_api.py, _normal_weight_scale), so the C level
// gives its bits for these weights too. Other weights are used as they are.
template <typename T>
struct NormalWeights {
    const T* w;      // the weights the kernel runs with
    double divisor;  // and the divisor
    T* owned = nullptr;
    // applies: "mean" with a divisor that sums the weights (not a count)
    NormalWeights(bool applies, const T* w_, idx len, double d) : w(w_), divisor(d) {
        if (!applies || !w || d == 0 || !std::isfinite(d)) return;
        int e;
        std::frexp(std::fabs(d), &e);  // 2**(e - 1) <= |d| < 2**e
        const int minexp = std::numeric_limits<T>::min_exponent - 1, maxexp = std::numeric_limits<T>::max_exponent;
        if (minexp + 2 <= -e && 1 - e <= maxexp - 2) return;  // 1 / d comfortably normal
        owned = static_cast<T*>(scratch_alloc(sizeof(T) * (std::size_t)len));  // may throw bad_alloc
        for (idx i = 0; i < len; ++i) owned[i] = std::ldexp(w[i], -e);
        w = owned;
        divisor = std::ldexp(d, -e);
    }
    ~NormalWeights() { std::free(owned); }
    NormalWeights(const NormalWeights&) = delete;
    NormalWeights& operator=(const NormalWeights&) = delete;
};

// The Hessian policy of a C-level call: 0 is the exact Hessian, a finite positive value the
// constant policy; anything else is refused.
inline bool bad_hess_const(double c) { return !(c == 0 || (c > 0 && std::isfinite(c))); }

// The outputs besides the loss: the gradient may overwrite the input exactly (in place), so
// may the Hessian (not both); neither may overlap any other operand or each other.
inline bool bad_outputs(const void* x, idx x_bytes, const void* grad, const void* hess, idx out_bytes,
                        const void* const* others, const idx* other_bytes, int n_others) {
    if (hess && !grad) return true;  // the Hessian comes with the gradient
    for (const void* o : {grad, hess}) {
        if (!o) continue;
        for (int i = 0; i < n_others; ++i)
            if (overlap(o, out_bytes, others[i], other_bytes[i])) return true;
        if (o != x && overlap(o, out_bytes, x, x_bytes)) return true;
    }
    return overlap(grad, out_bytes, hess, out_bytes);
}

template <typename T>
double elementwise_call(int kernel, const T* x, const T* t, const T* w, idx w_len, const T* pw,
                        idx pw_len, T* grad, T* hess, double hess_const, T* losses, idx n,
                        const double* params, int reduction, int n_threads) {
    if (kernel < 0 || kernel >= kernel::COUNT || FACTS[kernel].kind != ELEMENTWISE) return NaN;
    const Facts& f = FACTS[kernel];
    if (!params_ok(kernel, params) || bad_hess_const(hess_const)) return NaN;
    n_threads = c_level_threads(n_threads);
    const idx size = sizeof(T);
    // ----- sizes and pointers: nothing is read past what they announce
    if (n < 0 || n > IDX_MAX / size || bad_mode(reduction, n_threads)) return NaN;
    if (n == 0) w = pw = nullptr;  // nothing to weigh (as the Python API)
    if (n > 0 && (!x || !t)) return NaN;
    if ((w && (w_len < 1 || n % w_len != 0)) || (pw && (pw_len < 1 || n % pw_len != 0))) return NaN;
    if ((!w && w_len != 0) || (!pw && pw_len != 0)) return NaN;  // a NULL buffer with a size
    if (f.operand_required && n > 0 && !pw) return NaN;           // (quantile) not optional
    const idx bytes = n * size, w_bytes = w ? w_len * size : 0, pw_bytes = pw ? pw_len * size : 0;
    {
        const void* others[] = {t, w, pw};
        const idx other_bytes[] = {bytes, w_bytes, pw_bytes};
        if (bad_outputs(x, bytes, grad, hess, bytes, others, other_bytes, 3)) return NaN;
    }
    if (losses && (overlap(losses, bytes, x, bytes) || overlap(losses, bytes, t, bytes) ||
                   overlap(losses, bytes, w, w_bytes) || overlap(losses, bytes, pw, pw_bytes) ||
                   overlap(losses, bytes, grad, bytes) || overlap(losses, bytes, hess, bytes)))
        return NaN;
    // ----- values
    if (f.input_unit && first_outside_unit(x, n, n_threads) >= 0) return NaN;
    if (f.target_unit && first_outside_unit(t, n, n_threads) >= 0) return NaN;
    if (f.target_sign && first_non_sign(t, n, n_threads) >= 0) return NaN;
    if (f.operand_required)  // the operand's values (a short array: a quantile per column)
        for (idx i = 0; pw && i < pw_len; ++i)
            if (!operand_ok(kernel, (double)pw[i])) return NaN;
    if (f.target_nonneg && first_negative(t, n, n_threads, false) >= 0) return NaN;
    if (f.target_pos && first_negative(t, n, n_threads, true) >= 0) return NaN;
    // ----- the Python API's call
    double divisor = (double)n;
    if (f.divisor == DIVIDE_BY_WEIGHT_SUM && w) divisor = float64_sum(w, w_len) * (double)(n / w_len);
    try {
        const NormalWeights<T> nw(reduction == MEAN && f.divisor != DIVIDE_BY_COUNT, w, w_len, divisor);
        w = nw.w;
        divisor = nw.divisor;
        ElementwiseArgs<T> a;
        a.x = x;
        a.y = t;
        a.w = w;
        a.pw = pw;
        a.w_period = w ? w_len : 0;
        a.pw_period = pw ? pw_len : 0;
        a.loss = losses;
        a.grad = grad;
        a.hess = hess;
        a.hess_const = hess_const;
        a.scale = (T)mean_scale(reduction, divisor);
        a.n = n;
        a.params = params;
        return reduced(elementwise(kernel, a, n_threads), divisor, reduction);
    } catch (const std::bad_alloc&) {  // scratch memory short: thrown before anything is written
        return NaN;
    }
}

// Class losses: input and gradient (N, C, K), class indices and losses (N, K); for
// CROSS_ENTROPY_PROBS, class probabilities `probs` shaped like the input instead of indices.
template <typename T>
double classes_call(int kernel, const T* x, const int64_t* t, const T* probs, const T* w, T* grad,
                    T* hess, double hess_const, T* losses, idx N, idx C, idx K, int64_t ignore_index,
                    const double* params, int reduction, int n_threads) {
    if (kernel < 0 || kernel >= kernel::COUNT || FACTS[kernel].kind != CLASSES) return NaN;
    const Facts& f = FACTS[kernel];
    if (!params_ok(kernel, params) || bad_hess_const(hess_const)) return NaN;
    n_threads = c_level_threads(n_threads);
    const idx size = sizeof(T);
    const bool by_probs = f.probabilities, has_ignore = f.ignore_index;
    if (N < 0 || C < 0 || K < 0 || bad_mode(reduction, n_threads)) return NaN;
    if (K > 0 && N > IDX_MAX / 8 / K) return NaN;
    if (C > 0 && K > 0 && N > IDX_MAX / size / C / K) return NaN;
    const idx rows = N * K, n_in = N * C * K;
    const idx in_bytes = n_in * size, row_bytes = rows * size, w_bytes = w ? C * size : 0;
    const void* target = by_probs ? (const void*)probs : (const void*)t;
    const idx t_bytes = by_probs ? in_bytes : rows * (idx)sizeof(int64_t);
    if ((n_in > 0 && !x) || (rows > 0 && !target)) return NaN;
    {
        const void* others[] = {target, w};
        const idx other_bytes[] = {t_bytes, w_bytes};
        if (bad_outputs(x, in_bytes, grad, hess, in_bytes, others, other_bytes, 2)) return NaN;
    }
    if (losses && (overlap(losses, row_bytes, x, in_bytes) || overlap(losses, row_bytes, target, t_bytes) ||
                   overlap(losses, row_bytes, w, w_bytes) || overlap(losses, row_bytes, grad, in_bytes) ||
                   overlap(losses, row_bytes, hess, in_bytes)))
        return NaN;
    // ----- values: class indices in [0, C) or ignore_index; the "mean" divisor
    double divisor = (double)rows;  // probabilities and multi-margin: the sample count
    if (!by_probs) {
        double target_weight = 0;
        if (class_target_stats(t, rows, C, has_ignore, ignore_index, w, &target_weight) >= 0) return NaN;
        if (f.divisor == DIVIDE_BY_TARGET_WEIGHT) divisor = target_weight;  // sum of w[target], kept samples
    }
    try {
        const NormalWeights<T> nw(reduction == MEAN && f.divisor != DIVIDE_BY_COUNT, w, C, divisor);
        w = nw.w;
        divisor = nw.divisor;
        ClassArgs<T> a;
        a.x = x;
        a.target = by_probs ? nullptr : t;
        a.probs = by_probs ? probs : nullptr;
        a.w = w;
        a.N = N;
        a.C = C;
        a.K = K;
        a.loss = losses;
        a.grad = grad;
        a.hess = hess;
        a.hess_const = hess_const;
        a.scale = (T)mean_scale(reduction, divisor);
        a.ignore_index = has_ignore ? ignore_index : 0;
        a.params = params;
        return reduced(classes(kernel, a, n_threads), divisor, reduction);
    } catch (const std::bad_alloc&) {  // scratch memory short: thrown before anything is written
        return NaN;
    }
}

}  // namespace capi
}  // namespace fl
