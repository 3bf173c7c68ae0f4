// The C level of fastloss: argument checks, the "mean" divisor and the kernel call behind
// the fl_<loss>_grad_f32/_f64 functions of kernels.pyx (declared in kernels.pxd, exported
// to C through fastloss.h).
//
// Every check runs before any element is read past the sizes given or anything is written;
// a bad argument returns NaN with nothing written. Then the kernel runs exactly as the Python
// API runs it (same divisor and gradient scale), so results are bitwise those of the Python
// functions. n_threads arrives resolved (kernels.pyx: 0 is OpenMP's default, clamped as the
// Python API clamps); a negative one is refused here.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

#include "_kernels.hpp"

namespace fl {
namespace capi {

enum Reduction { MEAN = 0, SUM = 1 };  // FASTLOSS_MEAN, FASTLOSS_SUM

constexpr idx IDX_MAX = std::numeric_limits<idx>::max();
const double NaN = std::numeric_limits<double>::quiet_NaN();

// What the registry says of an elementwise loss (filled from it by kernels.pyx).
struct ElementwiseFacts {
    bool weight_sum_divisor;  // "mean" divides by the weight's sum over the input (else the count)
    bool input_unit;          // input values must lie in [0, 1]
    bool target_unit;         // target values must lie in [0, 1]
    bool target_sign;         // target values must be -1 or +1
};

// The gradient's scale: 1 / divisor for "mean" (inf for an empty divisor, as the Python API).
inline double mean_scale(int reduction, double divisor) {
    if (reduction != MEAN) return 1.0;
    return divisor != 0 ? 1.0 / divisor : std::numeric_limits<double>::infinity();
}

// The reduced loss: the sum, or total / divisor with IEEE semantics (an empty mean, 0/0, is NaN).
inline double reduced(double total, double divisor, int reduction) {
    if (reduction != MEAN) return total;
    if (divisor != 0) return total / divisor;
    return (total == 0 || total != total) ? NaN : std::copysign(std::numeric_limits<double>::infinity(), total);
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

template <typename T>
double elementwise_call(int kernel, const ElementwiseFacts& f, const T* x, const T* t, const T* w,
                        idx w_len, const T* pw, idx pw_len, T* grad, T* losses, idx n, double p0,
                        double p1, int reduction, int n_threads) {
    const idx size = sizeof(T);
    // ----- sizes and pointers: nothing is read past what they announce
    if (n < 0 || n > IDX_MAX / size || bad_mode(reduction, n_threads)) return NaN;
    if (n == 0) w = pw = nullptr;  // nothing to weigh (as the Python API)
    if (n > 0 && (!x || !t)) return NaN;
    if ((w && (w_len < 1 || n % w_len != 0)) || (pw && (pw_len < 1 || n % pw_len != 0))) return NaN;
    if ((!w && w_len != 0) || (!pw && pw_len != 0)) return NaN;  // a NULL buffer with a size
    const idx bytes = n * size, w_bytes = w ? w_len * size : 0, pw_bytes = pw ? pw_len * size : 0;
    // The gradient may overwrite the input exactly (in place); no other output may overlap.
    if (grad && (overlap(grad, bytes, t, bytes) || overlap(grad, bytes, w, w_bytes) ||
                 overlap(grad, bytes, pw, pw_bytes) || (grad != x && overlap(grad, bytes, x, bytes))))
        return NaN;
    if (losses && (overlap(losses, bytes, x, bytes) || overlap(losses, bytes, t, bytes) ||
                   overlap(losses, bytes, w, w_bytes) || overlap(losses, bytes, pw, pw_bytes) ||
                   overlap(losses, bytes, grad, bytes)))
        return NaN;
    // ----- values
    if (f.input_unit && first_outside_unit(x, n, n_threads) >= 0) return NaN;
    if (f.target_unit && first_outside_unit(t, n, n_threads) >= 0) return NaN;
    if (f.target_sign && first_non_sign(t, n, n_threads) >= 0) return NaN;
    // ----- the Python API's call
    double divisor = (double)n;
    if (f.weight_sum_divisor && w) divisor = float64_sum(w, w_len) * (double)(n / w_len);
    ElementwiseArgs<T> a;
    a.x = x;
    a.y = t;
    a.w = w;
    a.pw = pw;
    a.w_period = w ? w_len : 0;
    a.pw_period = pw ? pw_len : 0;
    a.loss = losses;
    a.grad = grad;
    a.scale = (T)mean_scale(reduction, divisor);
    a.n = n;
    const double params[2] = {p0, p1};
    try {
        return reduced(elementwise(kernel, a, params, n_threads), divisor, reduction);
    } catch (const std::bad_alloc&) {  // scratch memory short: thrown before anything is written
        return NaN;
    }
}

// Class losses: input and gradient (N, C, K), class indices and losses (N, K); for
// CROSS_ENTROPY_PROBS, class probabilities `probs` shaped like the input instead of indices.
template <typename T>
double classes_call(int kernel, const T* x, const int64_t* t, const T* probs, const T* w, T* grad,
                    T* losses, idx N, idx C, idx K, bool has_ignore, int64_t ignore_index, double p0,
                    double p1, int reduction, int n_threads) {
    const idx size = sizeof(T);
    const bool by_probs = kernel == kernel::CROSS_ENTROPY_PROBS;
    if (N < 0 || C < 0 || K < 0 || bad_mode(reduction, n_threads)) return NaN;
    if (K > 0 && N > IDX_MAX / 8 / K) return NaN;
    if (C > 0 && K > 0 && N > IDX_MAX / size / C / K) return NaN;
    const idx rows = N * K, n_in = N * C * K;
    const idx in_bytes = n_in * size, row_bytes = rows * size, w_bytes = w ? C * size : 0;
    const void* target = by_probs ? (const void*)probs : (const void*)t;
    const idx t_bytes = by_probs ? in_bytes : rows * (idx)sizeof(int64_t);
    if ((n_in > 0 && !x) || (rows > 0 && !target)) return NaN;
    if (grad && (overlap(grad, in_bytes, target, t_bytes) || overlap(grad, in_bytes, w, w_bytes) ||
                 (grad != x && overlap(grad, in_bytes, x, in_bytes))))
        return NaN;
    if (losses && (overlap(losses, row_bytes, x, in_bytes) || overlap(losses, row_bytes, target, t_bytes) ||
                   overlap(losses, row_bytes, w, w_bytes) || overlap(losses, row_bytes, grad, in_bytes)))
        return NaN;
    // ----- values: class indices in [0, C) or ignore_index; the "mean" divisor
    double divisor = (double)rows;  // probabilities and multi-margin: the sample count
    if (!by_probs) {
        double target_weight = 0;
        if (class_target_stats(t, rows, C, has_ignore, ignore_index, w, &target_weight) >= 0) return NaN;
        if (kernel != kernel::MULTI_MARGIN) divisor = target_weight;  // sum of w[target], kept samples
    }
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
    a.scale = (T)mean_scale(reduction, divisor);
    a.ignore_index = has_ignore ? ignore_index : 0;
    a.p0 = p0;
    a.p1 = p1;
    try {
        return reduced(classes(kernel, a, n_threads), divisor, reduction);
    } catch (const std::bad_alloc&) {  // scratch memory short: thrown before anything is written
        return NaN;
    }
}

}  // namespace capi
}  // namespace fl
