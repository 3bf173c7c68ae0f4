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
#include <limits>

#if FASTLOSS_OPENMP
#include <omp.h>
#endif

namespace fl {

using idx = std::ptrdiff_t;

constexpr idx BLOCK = 4096;  // elements per block of the fixed summation order
constexpr int LANES = 16;    // float64 partial sums per block
// Below this many elements (class kernels: elements of the input) no parallel region is
// opened: an OpenMP region costs ~0.3-0.5 us even on one thread (see bench/ and DESIGN.md).
constexpr idx SERIAL_BELOW = 1 << 15;

namespace kernel {
enum Id {
    MSE, L1, HUBER, SMOOTH_L1, BCE, BCE_LOGITS, HINGE, SQUARED_HINGE,  // elementwise
    CROSS_ENTROPY, CROSS_ENTROPY_PROBS, NLL, MULTI_MARGIN,             // classes
};
}  // namespace kernel

// ---------------------------------------------------------------------------------------
// Fixed-order summation helpers

// Pairwise sum of a[0..n) in a fixed tree: O(log n) error growth, independent of threads.
inline double pairwise_sum(const double* a, idx n) {
    if (n <= 8) {
        double s = 0.0;
        for (idx i = 0; i < n; ++i) s += a[i];
        return s;
    }
    idx half = n / 2;
    return pairwise_sum(a, half) + pairwise_sum(a + half, n - half);
}

inline int max_threads_for(idx work_items, int n_threads) {
    if (n_threads < 1) n_threads = 1;
    return (int)std::min<idx>(n_threads, std::max<idx>(work_items, 1));
}

// Run body(b) for b in [0, nblocks), storing nothing; parallel only for big work.
template <class Body>
inline void for_blocks(idx nblocks, bool parallel, int n_threads, Body body) {
#if FASTLOSS_OPENMP
    if (parallel && n_threads > 1 && nblocks > 1) {
        int nt = max_threads_for(nblocks, n_threads);
#pragma omp parallel for schedule(static) num_threads(nt)
        for (idx b = 0; b < nblocks; ++b) body(b);
        return;
    }
#endif
    for (idx b = 0; b < nblocks; ++b) body(b);
}

// Sum of block_sum(b) over blocks, in the fixed pairwise order.
template <class BlockSum>
inline double sum_blocks(idx nblocks, bool parallel, int n_threads, BlockSum block_sum) {
    if (nblocks <= 0) return 0.0;
    if (nblocks == 1) return block_sum(0);
    double stack_partials[64];
    double* partials = nblocks <= 64 ? stack_partials : (double*)std::malloc(sizeof(double) * nblocks);
    if (!partials) return std::numeric_limits<double>::quiet_NaN();
    for_blocks(nblocks, parallel, n_threads, [&](idx b) { partials[b] = block_sum(b); });
    double total = pairwise_sum(partials, nblocks);
    if (partials != stack_partials) std::free(partials);
    return total;
}

// ---------------------------------------------------------------------------------------
// 1. Per-element math of the elementwise losses.
// Each functor computes, for input x, target y and pos_weight p (1 when absent), the loss l
// and its derivative g with respect to x. Domains are checked by the front layer.

template <typename T>
inline T sign_or_zero(T r) {  // sign(r), 0 at 0 and at NaN (PyTorch's L1 gradient)
    return T(r > T(0)) - T(r < T(0));
}

template <typename T>
struct Mse {
    explicit Mse(const double*) {}
    void operator()(T x, T y, T, T& l, T& g) const {
        T r = x - y;
        l = r * r;
        g = T(2) * r;
    }
};

template <typename T>
struct L1 {
    explicit L1(const double*) {}
    void operator()(T x, T y, T, T& l, T& g) const {
        T r = x - y;
        l = std::abs(r);
        g = sign_or_zero(r);
    }
};

template <typename T>
struct Huber {
    // Quadratic for |r| < delta, linear with slope delta outside; delta > 0.
    T delta, half_delta;
    explicit Huber(const double* p) : delta(T(p[0])), half_delta(T(0.5 * p[0])) {}
    void operator()(T x, T y, T, T& l, T& g) const {
        T r = x - y, a = std::abs(r);
        l = a < delta ? T(0.5) * a * a : delta * (a - half_delta);
        g = r < -delta ? -delta : (r > delta ? delta : r);  // clip(r), NaN passes through
    }
};

template <typename T>
struct SmoothL1 {
    // Huber / beta; beta == 0 is L1 exactly (the quadratic piece is empty, no 0/0).
    T beta, half_beta;
    explicit SmoothL1(const double* p) : beta(T(p[0])), half_beta(T(0.5 * p[0])) {}
    void operator()(T x, T y, T, T& l, T& g) const {
        T r = x - y, a = std::abs(r);
        bool quad = a < beta;
        l = quad ? T(0.5) * a * a / beta : a - half_beta;
        g = quad ? r / beta : sign_or_zero(r);
    }
};

template <typename T>
struct Bce {
    // Domain x, y in [0, 1]. Each log is clamped at -100 (PyTorch), so x = 0 or 1 stays
    // finite; log1p(-x) keeps 1 - x accurate for small x. Gradient (x - y) / max(x(1-x), 1e-12).
    explicit Bce(const double*) {}
    void operator()(T x, T y, T, T& l, T& g) const {
        T log_x = std::max(std::log(x), T(-100));
        T log_1mx = std::max(std::log1p(-x), T(-100));
        l = (y - T(1)) * log_1mx - y * log_x;
        g = (x - y) / std::max((T(1) - x) * x, T(1e-12));
    }
};

template <typename T>
struct BceLogits {
    // Any real x. loss = (1 - y) softplus(x) + p y softplus(-x) with
    // softplus(+-x) = max(+-x, 0) + log1p(exp(-|x|)): no overflow, and for y in [0, 1] both
    // terms are >= 0, so tiny losses keep full relative accuracy (x=-40, y=0: 4.2e-18).
    // grad = (1 - y) sigmoid(x) - p y sigmoid(-x), both sigmoids from e = exp(-|x|) <= 1.
    explicit BceLogits(const double*) {}
    void operator()(T x, T y, T p, T& l, T& g) const {
        T e = std::exp(-std::abs(x));
        T log_term = std::log1p(e);
        T py = p * y;
        T sp_pos = std::max(x, T(0)) + log_term;
        T sp_neg = std::max(-x, T(0)) + log_term;
        l = (T(1) - y) * sp_pos + py * sp_neg;
        T inv = T(1) / (T(1) + e);
        T sig_small = e * inv;  // sigmoid(-|x|)
        bool pos = x >= T(0);
        T sig = pos ? inv : sig_small, sig_neg = pos ? sig_small : inv;
        g = (T(1) - y) * sig - py * sig_neg;
    }
};

template <typename T>
struct Hinge {
    // z = margin - y x; loss max(0, z) with NaN propagated; grad -y for z > 0, 0 at the
    // kink z == 0 and below, NaN for NaN z.
    T margin;
    explicit Hinge(const double* p) : margin(T(p[0])) {}
    void operator()(T x, T y, T, T& l, T& g) const {
        T z = margin - y * x;
        l = z < T(0) ? T(0) : z;
        g = z > T(0) ? -y : (z <= T(0) ? T(0) : z);
    }
};

template <typename T>
struct SquaredHinge {
    T margin;
    explicit SquaredHinge(const double* p) : margin(T(p[0])) {}
    void operator()(T x, T y, T, T& l, T& g) const {
        T z = margin - y * x;
        T h = z < T(0) ? T(0) : z;  // NaN propagates
        l = h * h;
        g = T(-2) * y * h;
    }
};

// ---------------------------------------------------------------------------------------
// 2. The elementwise driver.

template <typename T>
struct ElementwiseArgs {
    const T* x;
    const T* y;
    const T* w;   // weight[i % period], or null
    const T* pw;  // pos_weight[i % period], or null
    idx period;   // > 0 when w or pw is given
    T* loss;      // per-element weighted loss ("none"), or null
    T* grad;      // gradient times scale, or null (may equal x: in place)
    T scale;
    idx n;
};

// One run of elements [0, len) of contiguous data; returns its lane-ordered sum.
// Inputs are read into local arrays before anything is written, so in-place (grad == x)
// is safe and the compiler need not fear aliasing.
template <class Op, typename T, bool W, bool PW, bool LOSS, bool GRAD>
inline double run(const Op& op, const T* x, const T* y, const T* w, const T* pw, T* lo, T* go,
                  T scale, idx len) {
    double acc[LANES] = {0.0};
    idx i = 0;
    for (; i + LANES <= len; i += LANES) {
        T xs[LANES], ys[LANES], ls[LANES], gs[LANES];
        for (int j = 0; j < LANES; ++j) {
            xs[j] = x[i + j];
            ys[j] = y[i + j];
        }
        for (int j = 0; j < LANES; ++j) {
            op(xs[j], ys[j], PW ? pw[i + j] : T(1), ls[j], gs[j]);
            if (W) {
                ls[j] *= w[i + j];
                gs[j] *= w[i + j];
            }
            acc[j] += double(ls[j]);
        }
        if (LOSS)
            for (int j = 0; j < LANES; ++j) lo[i + j] = ls[j];
        if (GRAD)
            for (int j = 0; j < LANES; ++j) go[i + j] = gs[j] * scale;
    }
    for (int j = 0; i < len; ++i, ++j) {
        T l, g;
        op(x[i], y[i], PW ? pw[i] : T(1), l, g);
        if (W) {
            l *= w[i];
            g *= w[i];
        }
        acc[j] += double(l);
        if (LOSS) lo[i] = l;
        if (GRAD) go[i] = g * scale;
    }
    return pairwise_sum(acc, LANES);
}

// One block [begin, end): split into runs that do not cross a weight period boundary.
template <class Op, typename T, bool W, bool PW, bool LOSS, bool GRAD>
inline double block(const Op& op, const ElementwiseArgs<T>& a, idx begin, idx end) {
    if (!W && !PW)
        return run<Op, T, W, PW, LOSS, GRAD>(op, a.x + begin, a.y + begin, nullptr, nullptr,
                                             a.loss + (LOSS ? begin : 0), a.grad + (GRAD ? begin : 0),
                                             a.scale, end - begin);
    double total = 0.0;
    idx phase = begin % a.period;
    for (idx i = begin; i < end;) {
        idx len = std::min(end - i, a.period - phase);
        total += run<Op, T, W, PW, LOSS, GRAD>(op, a.x + i, a.y + i, W ? a.w + phase : nullptr,
                                               PW ? a.pw + phase : nullptr, a.loss + (LOSS ? i : 0),
                                               a.grad + (GRAD ? i : 0), a.scale, len);
        i += len;
        phase = 0;
    }
    return total;
}

template <class Op, typename T, bool W, bool PW, bool LOSS, bool GRAD>
double drive(const Op& op, const ElementwiseArgs<T>& a, int n_threads) {
    idx nblocks = (a.n + BLOCK - 1) / BLOCK;
    return sum_blocks(nblocks, a.n >= SERIAL_BELOW, n_threads, [&](idx b) {
        return block<Op, T, W, PW, LOSS, GRAD>(op, a, b * BLOCK, std::min(a.n, (b + 1) * BLOCK));
    });
}

// Pick the specialisation for which operands are present (each a compile-time flag, so
// the hot loop has no branches).
template <class Op, typename T>
double dispatch_flags(const Op& op, const ElementwiseArgs<T>& a, int n_threads) {
    const bool w = a.w != nullptr, pw = a.pw != nullptr, lo = a.loss != nullptr, g = a.grad != nullptr;
#define FL_CASE(W, PW, LO, G) \
    if (w == W && pw == PW && lo == LO && g == G) return drive<Op, T, W, PW, LO, G>(op, a, n_threads);
    FL_CASE(false, false, false, false) FL_CASE(false, false, false, true)
    FL_CASE(false, false, true, false)  FL_CASE(false, false, true, true)
    FL_CASE(true, false, false, false)  FL_CASE(true, false, false, true)
    FL_CASE(true, false, true, false)   FL_CASE(true, false, true, true)
    FL_CASE(false, true, false, false)  FL_CASE(false, true, false, true)
    FL_CASE(false, true, true, false)   FL_CASE(false, true, true, true)
    FL_CASE(true, true, false, false)   FL_CASE(true, true, false, true)
    FL_CASE(true, true, true, false)    FL_CASE(true, true, true, true)
#undef FL_CASE
    return std::numeric_limits<double>::quiet_NaN();
}

// Entry point of every elementwise loss: returns the float64 sum of the weighted losses.
template <typename T>
double elementwise(int which, const ElementwiseArgs<T>& a, const double* params, int n_threads) {
    switch (which) {
        case kernel::MSE: return dispatch_flags(Mse<T>(params), a, n_threads);
        case kernel::L1: return dispatch_flags(L1<T>(params), a, n_threads);
        case kernel::HUBER: return dispatch_flags(Huber<T>(params), a, n_threads);
        case kernel::SMOOTH_L1: return dispatch_flags(SmoothL1<T>(params), a, n_threads);
        case kernel::BCE: return dispatch_flags(Bce<T>(params), a, n_threads);
        case kernel::BCE_LOGITS: return dispatch_flags(BceLogits<T>(params), a, n_threads);
        case kernel::HINGE: return dispatch_flags(Hinge<T>(params), a, n_threads);
        case kernel::SQUARED_HINGE: return dispatch_flags(SquaredHinge<T>(params), a, n_threads);
        default: return std::numeric_limits<double>::quiet_NaN();
    }
}

// ---------------------------------------------------------------------------------------
// 3. Class kernels. The input is (N, C, K) C-contiguous: sample (n, k) has its C class
// values at x[n*C*K + c*K + k], stride K. Targets are (N, K) int64 indices (validated) or
// (N, C, K) probabilities.

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

// Softmax cross-entropy of one sample. Log-sum-exp with the max m subtracted:
// -logp_c = (m - x_c) + log(s), s = sum exp(x_c - m) in [1, C]: no overflow, and no
// m + log(s) - x_c cancellation for huge logits. NaN anywhere makes the sample NaN, as in
// PyTorch. Gradient: p = softmax(x); indices: (1-eps) w_y (p - onehot_y) + eps/C (p W - w);
// probabilities: p * sum_c w_c q_c - w q with q = (1-eps) y + eps/C.
template <typename T>
inline T softmax_sample(const ClassArgs<T>& a, const T* x, const T* prob, int64_t y, T* g,
                        idx stride, T wsum) {
    const idx C = a.C;
    const T eps = T(a.p0);
    const bool smooth = a.p0 > 0;
    T m = -std::numeric_limits<T>::infinity();
    for (idx c = 0; c < C; ++c) m = x[c * stride] > m ? x[c * stride] : m;
    // NaN never wins the comparison above, but reaches the result through s.
    T s = 0;
    for (idx c = 0; c < C; ++c) s += std::exp(x[c * stride] - m);
    const T log_s = std::log(s);
    T loss;
    T coef_p = 0;  // gradient = p_c * coef_p - target_term_c
    if (prob) {
        loss = 0;
        T wq_sum = 0;
        for (idx c = 0; c < C; ++c) {
            T q = smooth ? (T(1) - eps) * prob[c * stride] + eps / T(C) : prob[c * stride];
            T wq = a.w ? a.w[c] * q : q;
            loss += wq * ((m - x[c * stride]) + log_s);
            wq_sum += wq;
        }
        coef_p = wq_sum;
    } else {
        const T w_y = a.w ? a.w[y] : T(1);
        loss = w_y * ((m - x[y * stride]) + log_s);
        coef_p = w_y;
        if (smooth) {
            T smooth_loss = 0;
            for (idx c = 0; c < C; ++c) smooth_loss += (a.w ? a.w[c] : T(1)) * ((m - x[c * stride]) + log_s);
            loss = (T(1) - eps) * loss + (eps / T(C)) * smooth_loss;
            coef_p = (T(1) - eps) * w_y + (eps / T(C)) * wsum;
        }
    }
    if (g) {
        const T inv_s = T(1) / s;
        // Read x_c before writing g_c: safe in place (g == x).
        for (idx c = 0; c < C; ++c) {
            T p = std::exp(x[c * stride] - m) * inv_s;
            T target_term;
            if (prob) {
                T q = smooth ? (T(1) - eps) * prob[c * stride] + eps / T(C) : prob[c * stride];
                target_term = a.w ? a.w[c] * q : q;
            } else {
                T w_c = a.w ? a.w[c] : T(1);
                T hot = c == y ? (a.w ? a.w[y] : T(1)) : T(0);
                target_term = smooth ? (T(1) - eps) * hot + (eps / T(C)) * w_c : hot;
            }
            g[c * stride] = (p * coef_p - target_term) * a.scale;
        }
    }
    return loss;
}

// NLL of one sample: loss -w_y x_y; gradient -w_y at y, 0 elsewhere.
template <typename T>
inline T nll_sample(const ClassArgs<T>& a, const T* x, int64_t y, T* g, idx stride) {
    const T w_y = a.w ? a.w[y] : T(1);
    if (g) {
        for (idx c = 0; c < a.C; ++c) g[c * stride] = T(0);
        g[y * stride] = -w_y * a.scale;
    }
    return -w_y * x[y * stride];
}

// Multi-margin (PyTorch's multi_margin_loss) of one sample: z_c = margin - x_y + x_c for
// c != y; the terms with z_c > 0 count (NaN does not, as in PyTorch);
// loss = w_y / C sum z_c^p; gradient +w_y p z_c^(p-1) / C at c, their negated sum at y.
template <typename T>
inline T multi_margin_sample(const ClassArgs<T>& a, const T* x, int64_t y, T* g, idx stride) {
    const idx C = a.C;
    const bool squared = a.p0 == 2;
    const T margin = T(a.p1), x_y = x[y * stride];
    const T w_y = a.w ? a.w[y] : T(1);
    const T factor = w_y / T(C);
    T sum = 0, g_y = 0;
    for (idx c = 0; c < C; ++c) {
        T z = margin - x_y + x[c * stride];
        bool active = c != y && z > T(0);
        T h = active ? z : T(0);
        sum += squared ? h * h : h;
        if (g) {
            T gc = active ? (squared ? T(2) * h : T(1)) * factor * a.scale : T(0);
            g_y += gc;
            if (c != y) g[c * stride] = gc;
        }
    }
    if (g) g[y * stride] = -g_y;
    return w_y * sum / T(C);
}

template <typename T>
double classes(int which, const ClassArgs<T>& a, int n_threads) {
    const idx samples = a.N * a.K;
    const idx per_block = std::max<idx>(1, BLOCK / std::max<idx>(a.C, 1));
    const idx nblocks = (samples + per_block - 1) / per_block;
    T wsum = 0;  // sum of the class weights (label smoothing), in a fixed order
    for (idx c = 0; c < a.C; ++c) wsum += a.w ? a.w[c] : T(1);
    auto block_sum = [&](idx b) {
        double acc[LANES] = {0.0};
        idx end = std::min(samples, (b + 1) * per_block);
        for (idx s = b * per_block, j = 0; s < end; ++s, j = (j + 1) % LANES) {
            idx n = s / a.K, k = s % a.K;
            idx offset = n * a.C * a.K + k;
            const T* x = a.x + offset;
            T* g = a.grad ? a.grad + offset : nullptr;
            int64_t y = a.target ? a.target[s] : 0;
            T loss;
            if (a.target && y == a.ignore_index && which != kernel::MULTI_MARGIN) {
                loss = 0;  // ignored sample: no loss, zero gradient
                if (g)
                    for (idx c = 0; c < a.C; ++c) g[c * a.K] = T(0);
            } else if (which == kernel::CROSS_ENTROPY || which == kernel::CROSS_ENTROPY_PROBS) {
                loss = softmax_sample(a, x, a.probs ? a.probs + offset : nullptr, y, g, a.K, wsum);
            } else if (which == kernel::NLL) {
                loss = nll_sample(a, x, y, g, a.K);
            } else {
                loss = multi_margin_sample(a, x, y, g, a.K);
            }
            if (a.loss) a.loss[s] = loss;
            acc[j] += double(loss);
        }
        return pairwise_sum(acc, LANES);
    };
    return sum_blocks(nblocks, samples * a.C >= SERIAL_BELOW, n_threads, block_sum);
}

// ---------------------------------------------------------------------------------------
// 4. Scanners (serial, read-only). Each returns the index of the first offending element,
// or -1.

template <typename T>
idx first_outside_unit(const T* a, idx n) {
    for (idx i = 0; i < n; ++i)
        if (!(a[i] >= T(0) && a[i] <= T(1))) return i;  // NaN is outside
    return -1;
}

template <typename T>
idx first_non_sign(const T* a, idx n) {
    for (idx i = 0; i < n; ++i)
        if (a[i] != T(1) && a[i] != T(-1)) return i;
    return -1;
}

// First target outside [0, C) that is not ignore_index (-1 if none), and into *weight_sum
// the float64 sum of w[target] (the count when w is null) over the kept targets.
template <typename T>
idx class_target_stats(const int64_t* t, idx n, idx C, bool has_ignore, int64_t ignore_index,
                       const T* w, double* weight_sum) {
    double acc[LANES] = {0.0};
    for (idx i = 0; i < n; ++i) {
        int64_t y = t[i];
        if (has_ignore && y == ignore_index) continue;
        if (y < 0 || y >= C) return i;
        acc[i % LANES] += w ? double(w[y]) : 1.0;
    }
    *weight_sum = pairwise_sum(acc, LANES);
    return -1;
}

}  // namespace fl
