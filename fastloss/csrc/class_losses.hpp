// The per-sample math of the class losses (input (N, C, K), one class index or one row of
// class probabilities per sample): one struct per kernel (the registry's `functor`), which
// the class driver (drivers.hpp, classes_of) runs over rows, tiles and threads.
//
// A class functor is constructed once per call from the arguments (per-call constants) and
// provides
//   T sample<CONTIG>(a, offset, y, g, stream)  the loss of the sample at `offset` (its C
//       values at x[offset + c * K]) with class index y (read once and checked by the
//       driver; 0 for probability targets), writing its gradient row into g when g is set;
//       CONTIG: K == 1 (the loops vectorise), stream: streaming stores for the gradient row
//   static constexpr bool tiled   whether it has the two below:
//   bool tiles(a) and tile(a, at, ys, losses)   optionally, TILE samples at a time across
//       SIMD lanes when C <= TILE (bitwise the per-sample results); `at` (TileAt, drivers.hpp)
//       places them: TILE (N, C) rows, or TILE positions of one (N, C, K) sample
// Whether a kernel takes ignore_index or probabilities is the registry's (FACTS).
// Included once per instruction-set namespace (isa.inc).

// The softmax sums of one row of C logits (x[c * st]): its max m, s = sum_c exp(x_c - m) and
// s - 1 (float64), log(s); with `buffered` (C <= EXP_BUFFER) ebuf holds exp(x_c - m).
// Shared by cross_entropy (softmax_sample) and softmax_focal_loss (softmax_focal_sample):
// the same operations in the same order, whichever loss asks.
template <typename T>
struct SoftmaxSums {
    T m;
    bool buffered;
    double s, s_minus_1;
    T log_s;
};

template <typename T>
inline SoftmaxSums<T> softmax_sums(const T* x, idx st, idx C, T* ebuf) {
    const T m = lane_max<T>(C, [&](idx c) { return x[c * st]; });
    // exp(x_c - m) once per element: kept in a stack buffer for the gradient pass when the
    // row fits (rows longer than EXP_BUFFER recompute it there instead).
    const bool buffered = C <= EXP_BUFFER;
    if (buffered) {
#pragma omp simd
        for (idx c = 0; c < C; ++c) ebuf[c] = vm::exp_nonpos(x[c * st] - m);
    }
    // s = k + o: k classes hold the max (their exp is exactly 1), o sums the exp of the others
    // (the max classes add exp - 1 = 0, or NaN for an infinite max). s - 1 = o + (k - 1).
    // The row-tile path computes the same terms in the same order (same bits).
    auto excess = [&](idx c, T e) { return double(e) - (x[c * st] == m ? 1.0 : 0.0); };
    const double o = buffered ? lane_sum(C, [&](idx c) { return excess(c, ebuf[c]); })
                              : lane_sum(C, [&](idx c) { return excess(c, vm::exp_nonpos(x[c * st] - m)); });
    const double k = lane_sum(C, [&](idx c) { return x[c * st] == m ? 1.0 : 0.0; });
    const double s_minus_1 = o + (k - 1.0);
    return {m, buffered, o + k, s_minus_1, vm::log1p(T(s_minus_1))};
}

template <typename T, bool CONTIG>
inline T softmax_sample(const ClassArgs<T>& a, const T* x, const T* prob, int64_t y, T* g, T* h,
                        idx stride_if_strided, double wsum, bool stream) {
    const idx st = CONTIG ? 1 : stride_if_strided;
    const idx C = a.C;
    const T eps_c = T(a.params[0] / double(C)), keep = T(1.0 - a.params[0]);
    const bool smooth = a.params[0] > 0;
    T ebuf[EXP_BUFFER];
    const SoftmaxSums<T> sums = softmax_sums(x, st, C, ebuf);
    const T m = sums.m, log_s = sums.log_s;
    const bool buffered = sums.buffered;
    const double s = sums.s, s_minus_1 = sums.s_minus_1;
    const bool top = !prob && x[y * st] == m;  // read before the gradient is written (in place)
    auto nlogp = [&](idx c) { return (m - x[c * st]) + log_s; };  // -log softmax(x)_c
    auto q_of = [&](idx c) { return smooth ? keep * prob[c * st] + eps_c : prob[c * st]; };

    // The rest is written once for a weight accessor: class weights, or all ones (a
    // separate instantiation, so no loop tests for a null pointer and all vectorise).
    auto finish = [&](auto weight) -> T {
        T loss, coef_p;  // gradient_c = (p_c * coef_p - target_term(c)) * scale
        const T w_y = prob ? T(1) : weight(y);
        if (prob) {
            loss = T(lane_sum(C, [&](idx c) { return double(weight(c) * q_of(c) * nlogp(c)); }));
            coef_p = T(lane_sum(C, [&](idx c) { return double(weight(c) * q_of(c)); }));
        } else {
            loss = w_y * nlogp(y);
            coef_p = w_y;
            if (smooth) {
                T smooth_loss = T(lane_sum(C, [&](idx c) { return double(weight(c) * nlogp(c)); }));
                loss = keep * loss + eps_c * smooth_loss;
                coef_p = T(double(keep * w_y) + double(eps_c) * wsum);  // wsum: float64 (see classes)
            }
        }
        if (!g) return loss;
        const T inv_s = T(1.0 / s), scale = a.scale;
        // Element c reads x_c before writing g_c: safe in place (g == x).
        // With the Hessian (h): its diagonal k p_c (1 - p_c) with k = coef_p, in the same loop
        // (element c reads x_c before writing g_c and h_c: either may be in place). 1 - p_c
        // without cancellation: p_c >= 1/2 only where e_c = exp(x_c - m) is 1, and there
        // 1 - p_c = (s - 1) / s exactly from the float64 sums (s - e_c = s - 1).
        const T sm1_over_s = T(s_minus_1) * inv_s;
        auto hess_of = [&](T e) {
            const T p = e * inv_s;
            return p * (e == T(1) ? sm1_over_s : T(1) - p) * coef_p * scale;
        };
        auto write = [&](auto target_term) {
            if (h) {
                if (buffered) {
#pragma omp simd
                    for (idx c = 0; c < C; ++c) {
                        const T e = ebuf[c];
                        const T gv = (e * inv_s * coef_p - target_term(c)) * scale, hv = hess_of(e);
                        g[c * st] = gv;
                        h[c * st] = hv;
                    }
                } else {
#pragma omp simd
                    for (idx c = 0; c < C; ++c) {
                        const T e = vm::exp_nonpos(x[c * st] - m);
                        const T gv = (e * inv_s * coef_p - target_term(c)) * scale, hv = hess_of(e);
                        g[c * st] = gv;
                        h[c * st] = hv;
                    }
                }
            } else if (CONTIG && buffered && stream) {  // the row computed in place in ebuf, then streamed
#pragma omp simd
                for (idx c = 0; c < C; ++c) ebuf[c] = (ebuf[c] * inv_s * coef_p - target_term(c)) * scale;
                stream_row(g, ebuf, C);
            } else if (buffered) {
#pragma omp simd
                for (idx c = 0; c < C; ++c) g[c * st] = (ebuf[c] * inv_s * coef_p - target_term(c)) * scale;
            } else {
#pragma omp simd
                for (idx c = 0; c < C; ++c) g[c * st] = (vm::exp_nonpos(x[c * st] - m) * inv_s * coef_p - target_term(c)) * scale;
            }
        };
        if (prob)
            write([&](idx c) { return weight(c) * q_of(c); });
        else if (smooth)
            write([&](idx c) { return keep * (c == y ? w_y : T(0)) + eps_c * weight(c); });
        else {
            write([&](idx c) { return c == y ? w_y : T(0); });
            // p_y - 1 = -(s - 1) / s (a finite w_y: an infinite one gives w_y p_y - w_y =
            // inf - inf = NaN above, as PyTorch)
            if (top && std::isfinite(w_y)) g[y * st] = -(T(s_minus_1) * inv_s * w_y) * scale;
        }
        return loss;
    };
    const T* w = a.w;
    return w ? finish([w](idx c) { return w[c]; }) : finish([](idx) { return T(1); });
}

// Softmax focal loss (Lin et al.) of one sample, gamma > 0 (gamma = 0 is softmax_sample:
// SoftmaxFocal). Any real logits; class index y; gamma finite >= 0 (checked before).
// With p = softmax(x), q = p_y, u = 1 - q, L = log q <= 0, f(q) = -u^gamma L:
//   loss      w_y u^gamma (-L)
//   gradient  w_y G (onehot_y - p),  G = q f'(q) = u^gamma (gamma Q - 1),  Q = q L / u
//   Hessian   w_y ((onehot_y - p_c)^2 D - G p_c (1 - p_c)),  D = q (q f')' =
//             gamma q u^(gamma-1) K,  K = L + 2 - (gamma - 1) Q   (the diagonal)
// Stability:
// * u without cancellation: the other classes' share of the softmax sum, (s - e_y) / s with
//   s - e_y = s - 1 exactly from the float64 sums when y holds the max (q > 1/2 only there);
//   otherwise q <= 1/2 and s - e_y >= 1 (the max class adds 1) loses nothing.
// * -L = (m - x_y) + log(s), as cross_entropy (log1p(s - 1): tiny losses keep their
//   relative accuracy). No exp or power of a huge difference: e = exp(x - m) <= 1, and
//   u <= 1, so nothing overflows where the exact value is finite (1e30, the float maximum).
// * no negative power of u is formed (gamma < 1 at q -> 1: u^(gamma-1) -> inf against L ->
//   0): Q = q (L / u), with L / u = log1p(-u) / u -> -1 at u = 0 (taken exactly there), and
//   the Hessian's u^(gamma-1) p_c^2 as u^gamma p_c (e_c / (s - e_y)), e_c / (s - e_y) =
//   p_c / u in [0, 1] (0 where the other classes underflow: then p_c = 0).
// * q = 0 (x_y - m below exp's range, or -inf): q L and Q are 0 (their limit; q * -inf
//   would be NaN), so the gradient is cross_entropy's (u^gamma = 1) and NaN still propagates.
// * u^gamma underflowing to 0: the gradient and Hessian are 0 (no 0 * inf from gamma^2
//   terms of absurd gammas).
// The per-row scalars (q, u, L, u^gamma = pow(u, gamma), G, K) are float64 for both dtypes,
// rounded once into the per-element loops (which vectorise as softmax_sample's).
// Accuracy: pow's condition number is gamma, so u's float64 rounding costs gamma * 2^-53
// relative in u^gamma (negligible for the usual gamma <= 5; 1e-10 at gamma = 1e6, where
// exp(gamma log1p(-q)) would be the better form for q <= 1/2).
template <typename T, bool CONTIG>
inline T softmax_focal_sample(const ClassArgs<T>& a, const T* x, int64_t y, T* g, T* h, idx stride_if_strided) {
    const idx st = CONTIG ? 1 : stride_if_strided;
    const idx C = a.C;
    const double gamma = a.params[0];
    T ebuf[EXP_BUFFER];
    const SoftmaxSums<T> sums = softmax_sums(x, st, C, ebuf);
    const T m = sums.m, x_y = x[y * st];  // read before the gradient is written (in place)
    const bool top = x_y == m;
    const T e_y = sums.buffered ? ebuf[y] : vm::exp_nonpos(x_y - m);
    const double s = sums.s, w_y = a.w ? double(a.w[y]) : 1.0;
    const double others = top ? sums.s_minus_1 : s - double(e_y);  // sum of e_c over c != y
    const double u = others / s, q = double(e_y) / s;
    const double nl = (double(m) - double(x_y)) + std::log1p(sums.s_minus_1);  // -L
    const double ug = std::pow(u, gamma);
    const T loss = T(w_y * (ug * nl));
    if (!g) return loss;
    const double L = -nl, R = u > 0 ? L / u : -1.0;
    const double Q = q == 0 ? 0.0 : q * R, qL = q == 0 ? 0.0 : q * L;
    const double scale = double(a.scale), G = ug * (gamma * Q - 1.0);
    const T coef_p = T(-w_y * G * scale);  // g_c = p_c coef_p for c != y
    const T g_y = T(w_y * G * u * scale);
    const T inv_s = T(1.0 / s);
    auto e_of = [&](idx c) { return sums.buffered ? ebuf[c] : vm::exp_nonpos(x[c * st] - m); };
    if (h) {
        // q K = q L + 2 q - (gamma - 1) q Q; h_c = p_c (h_ratio e_c / (s - e_y) + coef_p (1 - p_c))
        // for c != y, 1 - p_c as softmax_sample's (s - 1) / s at a max class
        const double qK = qL + 2.0 * q - (gamma - 1.0) * q * Q;
        const T h_ratio = ug == 0 ? T(0) : T(w_y * ug * gamma * qK * scale);
        const T h_y = ug == 0 ? T(0) : T(w_y * ug * u * (gamma * qK - q * (gamma * Q - 1.0)) * scale);
        const T others_t = T(others), sm1_over_s = T(sums.s_minus_1) * inv_s;
#pragma omp simd
        for (idx c = 0; c < C; ++c) {
            const T e = e_of(c), p = e * inv_s;
            const T ratio = others_t > T(0) ? e / others_t : T(0);
            const T gv = p * coef_p, hv = p * (h_ratio * ratio + coef_p * (e == T(1) ? sm1_over_s : T(1) - p));
            g[c * st] = gv;
            h[c * st] = hv;
        }
        g[y * st] = g_y;
        h[y * st] = h_y;
        return loss;
    }
#pragma omp simd
    for (idx c = 0; c < C; ++c) g[c * st] = e_of(c) * inv_s * coef_p;
    g[y * st] = g_y;
    return loss;
}

// The Hessian row of a sample under a constant policy (ClassArgs::hess_const > 0): every
// entry c * w_y * scale.
template <typename T>
inline void constant_hess_row(const ClassArgs<T>& a, T w_y, T* h, idx stride) {
    const T v = T(a.hess_const) * (w_y * a.scale);
    for (idx c = 0; c < a.C; ++c) h[c * stride] = v;
}

// NLL of one sample: loss -w_y x_y; gradient -w_y at y, 0 elsewhere; the loss is linear in
// x: the exact Hessian is 0 (or the policy's constant row).
template <typename T>
inline T nll_sample(const ClassArgs<T>& a, const T* x, int64_t y, T* g, T* h, idx stride) {
    const T w_y = a.w ? a.w[y] : T(1);
    const T x_y = x[y * stride];  // read before g is written (in place)
    if (g) {
        for (idx c = 0; c < a.C; ++c) g[c * stride] = T(0);
        g[y * stride] = -w_y * a.scale;
    }
    if (h) {
        if (a.hess_const > 0)
            constant_hess_row(a, w_y, h, stride);
        else
            for (idx c = 0; c < a.C; ++c) h[c * stride] = T(0);
    }
    return -w_y * x_y;
}

// z = margin - x_y + x_c with one rounding where it matters: margin - x_y first loses the
// margin against huge scores, x_c - x_y first loses a tiny x_c against x_y. So d = x_c - x_y
// and its rounding error (TwoSum: exact without FMA contraction; 0 for a non-finite d, so
// inf and NaN propagate as before), then (d + margin) + error. Shared by the per-row and
// the tiled multi-margin paths (same bits).
template <typename T>
FL_OP T margin_argument(T margin, T x_y, T xc) {
    const T d = xc - x_y, d_back = d - xc;
    const T error = (xc - (d - d_back)) + (-x_y - d_back);
    return (d + margin) + (d - d == T(0) ? error : T(0));
}

// The loss of a sample from its float64 sum of hinge terms: w_y * sum / C; 0 when no term
// counts, whatever w_y (PyTorch adds w_y z_c term by term: an infinite or NaN weight of a
// sample with no active hinge gives 0); in float64 when the sum does not fit T (float32
// terms near the float maximum) but the loss does.
template <typename T>
inline T multi_margin_value(T w_y, double sum, idx C) {
    if (sum == 0.0) return T(0);
    const T s = T(sum);
    if (std::isinf(s) && std::isfinite(sum)) return T(double(w_y) * sum / double(C));
    return w_y * s / T(C);
}

// Multi-margin (PyTorch's multi_margin_loss) of one sample: z_c = margin - x_y + x_c (exact
// to one rounding, see margin_argument) for
// c != y; the terms with z_c > 0 count (NaN does not, as in PyTorch);
// loss = w_y / C sum z_c^p (summed in float64); gradient +w_y p z_c^(p-1) / C at c != y,
// their negated sum at y. Three branch-free passes over the row (in cache): the loss, the
// sum for g_y, then the gradient, which reads x_c before writing g_c (safe in place).
//
// Hessian (the diagonal): p = 1: 0; p = 2: 2 w_y / C at each active c != y (the factor of
// the gradient, without z_c), and at y the float64 sum of those (one per active term),
// rounded once; or the policy's constant row. Computed in the gradient's loops (element c
// reads x_c before g_c and h_c are written: either may be in place).
template <typename T>
inline T multi_margin_sample(const ClassArgs<T>& a, const T* x, int64_t y, T* g, T* h, idx stride) {
    const idx C = a.C;
    const bool squared = a.params[0] == 2;
    const T margin = T(a.params[1]), x_y = x[y * stride];
    const T w_y = a.w ? a.w[y] : T(1);
    // The classes c != y: up to LANES + 1 classes one float64 sum in class order (what
    // multi_margin_tile computes across rows); longer rows the two ranges [0, y) and (y, C)
    // in lanes, with no per-element mask.
    auto over_others = [&](auto f) {
        if (C <= LANES + 1) {
            double s = 0.0;
            for (idx c = 0; c < C; ++c)
                if (c != y) s += f(c);
            return s;
        }
        return lane_sum(y, f) + lane_sum(C - 1 - y, [&](idx i) { return f(y + 1 + i); });
    };
    auto hinge = [&](idx c) {  // z_c where it counts (z_c > 0), else 0
        const T z = margin_argument(margin, x_y, x[c * stride]);
        return z > T(0) ? z : T(0);
    };
    double sum = over_others([&](idx c) { T h = hinge(c); return double(squared ? h * h : h); });
    if (g) {
        // p = 2: the slope 2 z_c as z_c times the doubled factor (exact), so that a z_c near
        // the float maximum does not overflow where the scaled gradient is finite.
        const T factor = T(squared ? 2 : 1) * (w_y / T(C) * a.scale);
        auto grad_c = [&](idx c) {
            T h = hinge(c);
            T slope = squared ? h : T(1);
            return h > T(0) ? slope * factor : T(0);
        };
        const T g_y = T(over_others([&](idx c) { return double(grad_c(c)); }));
        if (h && !(a.hess_const > 0)) {
            auto hess_c = [&](idx c) { return squared && hinge(c) > T(0) ? factor : T(0); };
            const T h_y = T(over_others([&](idx c) { return double(hess_c(c)); }));
            for (idx c = 0; c < C; ++c) {
                if (c == y) continue;
                const T gv = grad_c(c), hv = hess_c(c);
                g[c * stride] = gv;
                h[c * stride] = hv;
            }
            g[y * stride] = -g_y;
            h[y * stride] = h_y;
        } else {
#pragma omp simd
            for (idx c = 0; c < y; ++c) g[c * stride] = grad_c(c);
#pragma omp simd
            for (idx c = y + 1; c < C; ++c) g[c * stride] = grad_c(c);
            g[y * stride] = -g_y;
            if (h) constant_hess_row(a, w_y, h, stride);  // after the gradient: h may be x
        }
    }
    return multi_margin_value(w_y, sum, C);
}

// Softmax cross-entropy (class indices, no smoothing) of TILE samples with C <= TILE
// (TILE consecutive (N, C) rows, or TILE positions of one (N, C, K) sample: `at`), computed
// across samples: sample r of the tile is SIMD lane r, so exp, log and the sums vectorise
// even for 10 classes. Every operation is the one softmax_sample does for a sample, in the
// same order (max, exp, the float64 sum over c in order, vm::log, the gradient expression),
// so a sample gives the same bits whichever path computes it. The samples are copied into a
// class-major buffer first (which also makes in-place, g == x, safe).
template <typename T>
inline void tile_load(const T* x, const TileAt& at, idx C, T (&xt)[TILE][TILE]) {
    if (at.cstep == 1) {  // (N, C) rows: each row's C values are contiguous
        for (int r = 0; r < TILE; ++r)
            for (idx c = 0; c < C; ++c) xt[c][r] = x[at.at(r, c)];
    } else {  // class-major: each class's TILE values are contiguous
        for (idx c = 0; c < C; ++c)
            for (int r = 0; r < TILE; ++r) xt[c][r] = x[at.at(r, c)];
    }
}

template <typename T>
inline void tile_store(T* out, const TileAt& at, idx C, const T (&xt)[TILE][TILE]) {
    if (at.cstep == 1) {
        for (int r = 0; r < TILE; ++r)
            for (idx c = 0; c < C; ++c) out[at.at(r, c)] = xt[c][r];
    } else {
        for (idx c = 0; c < C; ++c)
            for (int r = 0; r < TILE; ++r) out[at.at(r, c)] = xt[c][r];
    }
}

template <typename T>
inline void softmax_tile(const ClassArgs<T>& a, const TileAt& at, const int64_t* ys, T* losses) {
    constexpr int R = TILE;
    const idx C = a.C;
    T xt[TILE][R];  // xt[c][r] = class c of sample r, then exp(x - m)
    tile_load(a.x, at, C, xt);
    // Per-row values as T (the lanes of the vector loops must all be of T's width).
    T m[R], x_y[R], w_y[R], kept[R], y_t[R], top[R];
    double o[R], k[R];  // softmax_sample's o and k: s = o + k, s - 1 = o + (k - 1)
    for (int r = 0; r < R; ++r) {
        int64_t y = ys[r];  // read once and checked by the caller
        bool keep = y != a.ignore_index;
        int64_t yc = keep ? y : 0;
        kept[r] = keep ? T(1) : T(0);
        y_t[r] = T(yc);  // exact: yc < C <= TILE
        x_y[r] = xt[yc][r];
        w_y[r] = a.w ? a.w[yc] : T(1);
        m[r] = -std::numeric_limits<T>::infinity();
        o[r] = k[r] = 0.0;
    }
    for (idx c = 0; c < C; ++c) {
#pragma omp simd
        for (int r = 0; r < R; ++r) m[r] = std::max(m[r], xt[c][r]);
    }
    for (idx c = 0; c < C; ++c) {
#pragma omp simd
        for (int r = 0; r < R; ++r) {
            T e = vm::exp_nonpos(xt[c][r] - m[r]);
            double at_max = xt[c][r] == m[r] ? 1.0 : 0.0;
            xt[c][r] = e;
            o[r] += double(e) - at_max;
            k[r] += at_max;
        }
    }
    T sm1_t[R], inv_s[R];
    for (int r = 0; r < R; ++r) {
        sm1_t[r] = T(o[r] + (k[r] - 1.0));
        inv_s[r] = T(1.0 / (o[r] + k[r]));
        top[r] = x_y[r] == m[r] ? T(1) : T(0);
    }
#pragma omp simd
    for (int r = 0; r < R; ++r) {
        T log_s = vm::log1p(sm1_t[r]);
        T loss = w_y[r] * ((m[r] - x_y[r]) + log_s);
        losses[r] = kept[r] != T(0) ? loss : T(0);
    }
    if (!a.grad) return;
    const T scale = a.scale;
    if (a.hess) {
        // The Hessian's diagonal, as softmax_sample's hess_of (the same expression: bitwise),
        // from exp(x - m) before the gradient overwrites it (h may be the input: written last)
        T ht[TILE][R];
        for (idx c = 0; c < C; ++c) {
#pragma omp simd
            for (int r = 0; r < R; ++r) {
                const T e = xt[c][r], p = e * inv_s[r];
                const T hv = p * (e == T(1) ? sm1_t[r] * inv_s[r] : T(1) - p) * w_y[r] * scale;
                ht[c][r] = kept[r] != T(0) ? hv : T(0);
            }
        }
        tile_store(a.hess, at, C, ht);
    }
    for (idx c = 0; c < C; ++c) {
#pragma omp simd
        for (int r = 0; r < R; ++r) {
            T hot = T(c) == y_t[r] ? w_y[r] : T(0);
            T value = (xt[c][r] * inv_s[r] * w_y[r] - hot) * scale;
            T tail = -(sm1_t[r] * inv_s[r] * w_y[r]) * scale;  // p_y - 1 at a max target
            value = T(c) == y_t[r] && top[r] != T(0) && std::isfinite(w_y[r]) ? tail : value;
            xt[c][r] = kept[r] != T(0) ? value : T(0);
        }
    }
    tile_store(a.grad, at, C, xt);
}

// Multi-margin (p = 1 or 2) of TILE consecutive (N, C) rows with C <= TILE, across rows as
// softmax_tile does: row r of the tile is SIMD lane r. Bitwise what multi_margin_sample
// computes for each row: its float64 sums run over the classes c != y in class order; here
// class y adds +0.0, which leaves a sum of non-negative terms (starting at +0.0) unchanged.
// (One sum, not one per side of y: the float64 sums are most of this loop's work.) The
// per-class expressions are the same, in the same order. Rows are copied into a transposed
// buffer first (so in place, g == x, is safe).
template <typename T>
inline void multi_margin_tile(const ClassArgs<T>& a, const TileAt& at, const int64_t* ys, T* losses) {
    constexpr int R = TILE;
    const idx C = a.C;
    const bool squared = a.params[0] == 2;
    const T margin = T(a.params[1]), scale = a.scale;
    T xt[TILE][R];
    tile_load(a.x, at, C, xt);
    T x_y[R], w_y[R], factor[R], y_t[R];
    double s_sum[R], g_sum[R];
    for (int r = 0; r < R; ++r) {
        const int64_t y = ys[r];  // read once and checked by the caller
        y_t[r] = T(y);  // exact: y < C <= TILE
        x_y[r] = xt[y][r];
        w_y[r] = a.w ? a.w[y] : T(1);
        factor[r] = T(squared ? 2 : 1) * (w_y[r] / T(C) * scale);  // as multi_margin_sample
        s_sum[r] = g_sum[r] = 0.0;
    }
    for (idx c = 0; c < C; ++c) {
        const T ct = T(c);
#pragma omp simd
        for (int r = 0; r < R; ++r) {
            T z = margin_argument(margin, x_y[r], xt[c][r]);
            T h = z > T(0) ? z : T(0);
            double v = double(squared ? h * h : h);
            T slope = squared ? h : T(1);
            T gc = h > T(0) ? slope * factor[r] : T(0);
            const bool other = ct != y_t[r];
            s_sum[r] += other ? v : 0.0;
            g_sum[r] += other ? double(gc) : 0.0;
            xt[c][r] = gc;  // the gradient; row y's entry is set below
        }
    }
    for (int r = 0; r < R; ++r) {
        const int64_t y = ys[r];
        losses[r] = multi_margin_value(w_y[r], s_sum[r], C);
        xt[y][r] = -T(g_sum[r]);
    }
    if (!a.grad) return;
    tile_store(a.grad, at, C, xt);
}


// ---------------------------------------------------------------------------------------
// The class functors

template <typename T>
struct CrossEntropy {  // class indices
    double wsum;  // sum of the class weights, float64 in a fixed order (label smoothing only;
                  // the count C itself without weights: exact, where a float32 count stops at 2**24)
    explicit CrossEntropy(const ClassArgs<T>& a)
        : wsum(a.params[0] > 0 ? (a.w ? lane_sum(a.C, [&](idx c) { return double(a.w[c]); }) : double(a.C)) : 0.0) {}
    static constexpr bool tiled = true;
    static bool tiles(const ClassArgs<T>& a) { return a.C <= TILE && a.params[0] == 0; }
    static void tile(const ClassArgs<T>& a, const TileAt& at, const int64_t* ys, T* losses) { softmax_tile(a, at, ys, losses); }
    static constexpr bool streams = true;
    template <bool CONTIG>
    T sample(const ClassArgs<T>& a, idx offset, int64_t y, T* g, T* h, bool stream) const {
        return softmax_sample<T, CONTIG>(a, a.x + offset, nullptr, y, g, h, a.K, wsum, stream);
    }
};

template <typename T>
struct CrossEntropyProbs {  // class probabilities shaped like the input
    explicit CrossEntropyProbs(const ClassArgs<T>&) {}
    static constexpr bool tiled = false;
    static constexpr bool streams = true;
    template <bool CONTIG>
    T sample(const ClassArgs<T>& a, idx offset, int64_t, T* g, T* h, bool stream) const {
        return softmax_sample<T, CONTIG>(a, a.x + offset, a.probs + offset, 0, g, h, a.K, 0.0, stream);
    }
};

template <typename T>
struct Nll {
    explicit Nll(const ClassArgs<T>&) {}
    static constexpr bool tiled = false;
    static constexpr bool streams = false;
    template <bool CONTIG>
    T sample(const ClassArgs<T>& a, idx offset, int64_t y, T* g, T* h, bool) const {
        return nll_sample(a, a.x + offset, y, g, h, a.K);
    }
};

template <typename T>
struct MultiMargin {
    explicit MultiMargin(const ClassArgs<T>&) {}
    static constexpr bool tiled = true;
    static bool tiles(const ClassArgs<T>& a) { return a.C <= TILE && !a.hess; }  // no Hessian tile
    static void tile(const ClassArgs<T>& a, const TileAt& at, const int64_t* ys, T* losses) { multi_margin_tile(a, at, ys, losses); }
    static constexpr bool streams = false;
    template <bool CONTIG>
    T sample(const ClassArgs<T>& a, idx offset, int64_t y, T* g, T* h, bool) const {
        return multi_margin_sample(a, a.x + offset, y, g, h, a.K);
    }
};

template <typename T>
struct SoftmaxFocal {  // class indices; params[0] = gamma
    double wsum = 0.0;  // softmax_sample's label-smoothing sum: unused (no smoothing)
    explicit SoftmaxFocal(const ClassArgs<T>&) {}
    // gamma = 0 is cross_entropy without label smoothing (params[0] = 0 reads as eps = 0):
    // its very operations, row tiles included, so the bits are the same.
    static constexpr bool tiled = true;
    static bool tiles(const ClassArgs<T>& a) { return a.C <= TILE && a.params[0] == 0; }
    static void tile(const ClassArgs<T>& a, const TileAt& at, const int64_t* ys, T* losses) { softmax_tile(a, at, ys, losses); }
    static constexpr bool streams = true;  // (gamma = 0 only: the focal rows are stored as usual)
    template <bool CONTIG>
    T sample(const ClassArgs<T>& a, idx offset, int64_t y, T* g, T* h, bool stream) const {
        if (a.params[0] == 0)
            return softmax_sample<T, CONTIG>(a, a.x + offset, nullptr, y, g, h, a.K, wsum, stream);
        return softmax_focal_sample<T, CONTIG>(a, a.x + offset, y, g, h, a.K);
    }
};
