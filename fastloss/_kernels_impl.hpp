// The kernels proper; included once per instruction-set level by _kernels.hpp, each time
// inside its own namespace fl::FL_IMPL (no include guard on purpose).

namespace fl {
namespace FL_IMPL {

#include "_vecmath.hpp"

constexpr idx BLOCK = 4096;  // elements per block of the fixed summation order
constexpr int LANES = 16;    // float64 partial sums per block
// Below this many elements (class kernels: elements of the input) no parallel region is
// opened. Measured on the 2-core AMD EPYC (Zen 4), float32, median of 2001 calls, 1 vs 2
// threads: MSE 4096: 0.35/0.35 us (one block: serial anyway), 8192: 0.91/0.90,
// 16384: 2.05/1.35; BCE with logits 8192: 9.5/5.2 us, 16384: 18.7/9.7. Two blocks is where a
// second thread starts to pay; results do not depend on it (blocks are fixed).
constexpr idx SERIAL_BELOW = 2 * BLOCK;
// Softmax rows up to this many classes keep exp(x - max) on the stack between passes.
constexpr idx EXP_BUFFER = 2048;
// Softmax with at most this many classes runs TILE rows at a time (softmax_tile).
constexpr int TILE = 16;


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
    return pairwise_sum(a + 0, half) + pairwise_sum(a + half, n - half);
}

// The LANES partial sums combined in a fixed tree (hot: called once per run and per row).
inline double sum_lanes(const double* a) {
    static_assert(LANES == 16, "sum_lanes is written for 16 lanes");
    double b[8];
    for (int i = 0; i < 8; ++i) b[i] = a[i] + a[i + 8];
    return ((b[0] + b[4]) + (b[2] + b[6])) + ((b[1] + b[5]) + (b[3] + b[7]));
}

// Threads for work_items independent items: never more than items, and through the one
// clamp of every parallel region (fl::team_size: CPUs, and teams the OS can create).
inline int max_threads_for(idx work_items, int n_threads) {
    if (n_threads < 1) n_threads = 1;
    return team_size((int)std::min<idx>(n_threads, std::max<idx>(work_items, 1)));
}

// Run body(b) for b in [0, nblocks), storing nothing; parallel only for big work.
template <class Body>
inline void for_blocks(idx nblocks, bool parallel, int n_threads, Body body) {
#if FASTLOSS_OPENMP
    const int nt = parallel && n_threads > 1 && nblocks > 1 ? max_threads_for(nblocks, n_threads) : 1;
    if (nt > 1) {
#pragma omp parallel for schedule(static) num_threads(nt)
        for (idx b = 0; b < nblocks; ++b) body(b);
        return;
    }
#endif
    for (idx b = 0; b < nblocks; ++b) body(b);
}

// Sum of block_sum(b) over blocks, in the fixed pairwise order. More than 64 blocks need
// scratch memory for their partials: allocated (or std::bad_alloc thrown) before any block
// runs, so a failed allocation leaves every output unwritten.
template <class BlockSum>
inline double sum_blocks(idx nblocks, bool parallel, int n_threads, BlockSum block_sum) {
    if (nblocks <= 0) return 0.0;
    if (nblocks == 1) return block_sum(0);
    double stack_partials[64];
    double* partials = nblocks <= 64 ? stack_partials : (double*)scratch_alloc(sizeof(double) * nblocks);
    for_blocks(nblocks, parallel, n_threads, [&](idx b) { partials[b] = block_sum(b); });
    double total = pairwise_sum(partials, nblocks);
    if (partials != stack_partials) std::free(partials);
    return total;
}

// ---------------------------------------------------------------------------------------
// 1. Per-element math of the elementwise losses.
// Each functor computes, for input x, target y and pos_weight p (1 when absent), the loss l
// and its derivative g with respect to x. Domains are checked by the front layer.

// The per-element functions are always inlined: a run holds several vector loops over the
// same math (chunks with and without streaming stores), and past GCC's inlining budget a
// loop would call the function element by element (7x slower, unvectorised).
#ifndef FL_OP
#define FL_OP inline __attribute__((always_inline))
#endif

template <typename T>
inline T sign_or_zero(T r) {  // sign(r), 0 at 0 and at NaN (PyTorch's L1 gradient)
    return T(r > T(0)) - T(r < T(0));
}

// Losses whose per-element math is expensive (exp, log) set `static constexpr bool heavy`:
// their run tails go through the vector loop too (see run).
template <class Op, class = void>
struct heavy_op { static constexpr bool value = false; };
template <class Op>
struct heavy_op<Op, decltype(void(Op::heavy))> { static constexpr bool value = Op::heavy; };

// A functor whose gradient carries a constant factor (2 for the squares) sets
// `static constexpr int grad_factor` and leaves the factor out of g: the driver multiplies
// it in last (see weighted), so 2 r never overflows where 2 r w scale, the gradient, is
// finite (residuals above half the float maximum, weights near it).
// A functor whose zero gradient is a selected constant (the flat side of a hinge: PyTorch's
// clamp backward is a select) sets `static constexpr bool flat_zero`: there the gradient
// stays 0 whatever the weight (an infinite weight would make 0 * inf = NaN).
template <class Op, class = void>
struct flat_zero_of { static constexpr bool value = false; };
template <class Op>
struct flat_zero_of<Op, decltype(void(Op::flat_zero))> { static constexpr bool value = Op::flat_zero; };

template <class Op, class = void>
struct grad_factor_of { static constexpr int value = 1; };
template <class Op>
struct grad_factor_of<Op, decltype(void(Op::grad_factor))> { static constexpr int value = Op::grad_factor; };

// The gradient of an element: g (from the functor) times ws = w * scale (the weight meets
// the scale first, as in PyTorch's autograd of sum(w l) / sum(w): a huge weight with a small
// scale stays finite, an infinite weight makes only its own element NaN), times the
// functor's constant factor last (exact: it overflows only where the gradient does).
template <class Op, typename T>
FL_OP T weighted(T g, T ws) {
    T v = g * ws;
    if (flat_zero_of<Op>::value) v = g == T(0) ? T(0) : v;
    if (grad_factor_of<Op>::value != 1) v = v * T(grad_factor_of<Op>::value);
    return v;
}

template <typename T>
struct Mse {
    static constexpr int grad_factor = 2;  // gradient 2 r
    explicit Mse(const double*) {}
    FL_OP void operator()(T x, T y, T, T& l, T& g) const {
        T r = x - y;
        l = r * r;
        g = r;
    }
};

template <typename T>
struct L1 {
    explicit L1(const double*) {}
    FL_OP void operator()(T x, T y, T, T& l, T& g) const {
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
    FL_OP void operator()(T x, T y, T, T& l, T& g) const {
        T r = x - y, a = std::abs(r);
        T quadratic = T(0.5) * a * a, linear = delta * (a - half_delta);
        l = a < delta ? quadratic : linear;
        g = std::min(std::max(r, -delta), delta);  // clip(r); NaN passes through both
    }
};

template <typename T>
struct SmoothL1 {
    // Huber / beta; beta == 0 is L1 exactly (the quadratic piece is empty). Dividing by
    // beta is a multiplication by 1 / beta (a vector division costs 3x the whole loop);
    // both pieces are computed, then selected, so the loop vectorises (for beta == 0 the
    // products with inf are computed but never selected). NaN r gives a NaN gradient
    // through the slope, as PyTorch; with beta == 0 (L1) it gives 0.
    // (Selects test T values only: a bool mixed into a select made GCC build the lane mask
    // with scalar code, 3x slower.)
    // A subnormal beta: 1 / beta overflows (and 0 * inf would make the loss NaN at r == 0).
    // Then a and r are pre-scaled by up = 2**digits, exactly (a < beta in the quadratic
    // piece), and multiplied by 1 / (up * beta), finite: the same two roundings as for
    // every other beta (up == 1 there changes no bit).
    T beta, half_beta, up, inv_beta, is_l1;
    explicit SmoothL1(const double* p)
        : beta(T(p[0])), half_beta(T(0.5 * p[0])),
          up(std::isfinite(T(1) / T(p[0])) ? T(1) : T(std::ldexp(1.0, std::numeric_limits<T>::digits))),
          inv_beta(T(1) / (T(p[0]) * up)), is_l1(p[0] == 0 ? 1 : 0) {}
    FL_OP void operator()(T x, T y, T, T& l, T& g) const {
        T r = x - y, a = std::abs(r);
        T quadratic = T(0.5) * a * (a * up) * inv_beta, linear = a - half_beta;
        T slope = r * up * inv_beta, unit = sign_or_zero(r);
        T inner = is_l1 != T(0) ? unit : slope;  // NaN r: slope (NaN), or L1's 0
        l = a < beta ? quadratic : linear;
        g = a >= beta ? unit : inner;
    }
};

template <typename T>
struct Bce {
    // Domain x, y in [0, 1]. Each log is clamped at -100 (PyTorch), so x = 0 or 1 stays
    // finite; log1p(-x) keeps 1 - x accurate for small x. Gradient (x - y) / max(x(1-x), 1e-12).
    static constexpr bool heavy = true;
    explicit Bce(const double*) {}
    FL_OP void operator()(T x, T y, T, T& l, T& g) const {
        T log_x = vm::log_clamped_unit(x);
        T log_1mx = vm::log1m_clamped_unit(x);
        l = vm::mad(y - T(1), log_1mx, -(y * log_x));
        g = (x - y) / std::max((T(1) - x) * x, T(1e-12f));  // PyTorch's EPSILON is a float
    }
};

template <typename T>
struct BceLogits {
    // Any real x. loss = (1 - y) softplus(x) + p y softplus(-x) with
    // softplus(+-x) = max(+-x, 0) + log1p(exp(-|x|)): no overflow, and for y in [0, 1] both
    // terms are >= 0, so tiny losses keep full relative accuracy (x=-40, y=0: 4.2e-18).
    // grad = (1 - y) sigmoid(x) - p y sigmoid(-x), both sigmoids from e = exp(-|x|) <= 1.
    static constexpr bool heavy = true;
    explicit BceLogits(const double*) {}
    FL_OP void operator()(T x, T y, T p, T& l, T& g) const {
        T e = vm::exp_nonpos(-std::abs(x));
        T inv = T(1) / (T(1) + e);
        T log_term = vm::log1p_unit(e, inv);
        T py = p * y;
        T sp_pos = std::max(x, T(0)) + log_term;
        T sp_neg = std::max(-x, T(0)) + log_term;
        // A term whose coefficient is 0 is 0 even at x = +-inf (the exact limit; 0 * inf
        // would be NaN).
        T neg = T(1) - y, neg_term = neg * sp_pos, pos_term = py * sp_neg;
        l = (neg == T(0) ? T(0) : neg_term) + (py == T(0) ? T(0) : pos_term);
        T sig_small = e * inv;  // sigmoid(-|x|)
        bool pos = x >= T(0);
        T sig = pos ? inv : sig_small, sig_neg = pos ? sig_small : inv;
        g = neg * sig - py * sig_neg;
    }
};

template <typename T>
struct Hinge {
    // z = margin - y x; loss max(0, z) with NaN propagated; grad -y for z > 0, 0 at the
    // kink z == 0 and below, NaN for NaN z.
    static constexpr bool flat_zero = true;
    T margin;
    explicit Hinge(const double* p) : margin(T(p[0])) {}
    FL_OP void operator()(T x, T y, T, T& l, T& g) const {
        T z = margin - y * x;
        T neg_y = -y, flat = z <= T(0) ? T(0) : z;  // flat: 0 on the flat side, NaN if NaN
        l = z < T(0) ? T(0) : z;
        g = z > T(0) ? neg_y : flat;
    }
};

template <typename T>
struct SquaredHinge {
    static constexpr int grad_factor = 2;  // gradient -2 y h
    static constexpr bool flat_zero = true;
    T margin;
    explicit SquaredHinge(const double* p) : margin(T(p[0])) {}
    FL_OP void operator()(T x, T y, T, T& l, T& g) const {
        T z = margin - y * x;
        T h = z < T(0) ? T(0) : z;  // NaN propagates
        l = h * h;
        g = -y * h;
    }
};

// ---------------------------------------------------------------------------------------
// 2. The elementwise driver.


// Streaming (non-temporal) stores of a gradient much larger than the last-level cache: a
// normal store first reads its cache line (read-for-ownership), so a fused pass moved the
// gradient twice; a streaming store writes it once and does not evict the inputs. Only the
// store instructions differ, never the values. STREAM_FROM: the bytes a call touches (input,
// target, gradient) from which the gradient is streamed (the L3 of the dev machine is
// 32 MB; below, the caller's buffers stay in cache between calls and plain stores win).
constexpr idx STREAM_FROM_BYTES = idx(48) << 20;
constexpr int STREAM_ALIGN = 64;  // bytes; every level streams whole 64-byte lines

// Stores n values (n * sizeof(T) a multiple of 64) from src to dst (64-byte aligned) with
// streaming stores of this level's widest vector.
template <typename T>
inline void stream_chunk(T* dst, const T* src, int n) {
    char* d = reinterpret_cast<char*>(dst);
    const char* s = reinterpret_cast<const char*>(src);
    const int bytes = n * int(sizeof(T));
#if FL_LEVEL == 2
    for (int b = 0; b < bytes; b += 64) {
        if (sizeof(T) == 8) _mm512_stream_pd((double*)(d + b), _mm512_loadu_pd((const double*)(s + b)));
        else _mm512_stream_ps((float*)(d + b), _mm512_loadu_ps((const float*)(s + b)));
    }
#elif FL_LEVEL == 1
    for (int b = 0; b < bytes; b += 32) {
        if (sizeof(T) == 8) _mm256_stream_pd((double*)(d + b), _mm256_loadu_pd((const double*)(s + b)));
        else _mm256_stream_ps((float*)(d + b), _mm256_loadu_ps((const float*)(s + b)));
    }
#elif defined(__SSE2__)
    for (int b = 0; b < bytes; b += 16) {
        if (sizeof(T) == 8) _mm_stream_pd((double*)(d + b), _mm_loadu_pd((const double*)(s + b)));
        else _mm_stream_ps((float*)(d + b), _mm_loadu_ps((const float*)(s + b)));
    }
#else
    std::memcpy(d, s, bytes);
#endif
}

// dst[0..n) = src[0..n): plain stores up to dst's first 64-byte boundary and after its last,
// streaming stores in between (no fence: the caller fences once).
template <typename T>
inline void stream_row(T* dst, const T* src, idx n) {
    constexpr idx per_line = STREAM_ALIGN / idx(sizeof(T));
    idx head = 0;
    if (reinterpret_cast<uintptr_t>(dst) % sizeof(T) != 0) {
        head = n;  // not even element-aligned: plain stores only
    } else {
        const uintptr_t mis = reinterpret_cast<uintptr_t>(dst) % STREAM_ALIGN;
        head = std::min<idx>(n, mis ? idx((STREAM_ALIGN - mis) / sizeof(T)) : 0);
    }
    idx i = 0;
    for (; i < head; ++i) dst[i] = src[i];
    for (; i + per_line <= n; i += per_line) stream_chunk(dst + i, src + i, int(per_line));
    for (; i < n; ++i) dst[i] = src[i];
}

inline void stream_fence() {
#if defined(__SSE2__) || FL_LEVEL > 0
    _mm_sfence();
#endif
}

// One run of elements [0, len) of contiguous data; returns its lane-ordered sum (element k
// of the run in lane k % LANES, each lane in order).
// Chunks of UNROLL * LANES elements: the math of a chunk is one vector loop that writes the
// loss and gradient directly (element j reads x[i + j] before g[i + j] is written, so in
// place is safe), then the losses go to their fixed lanes. Two lane groups per chunk give
// the core independent work to overlap (the exp/log chains are latency-bound): BCE with
// logits 0.86 -> 0.82 ns per float32 element; writing g directly instead of through a local
// array spared GCC a split, shuffled store (0.05 ns).
// With `stream`, the gradient of the chunks goes out by streaming stores: the run first
// computes a head of h < 64 / sizeof(T) elements (so that the chunks' gradient is 64-byte
// aligned) and the chunks then add into the lanes rotated by h. Each lane still receives
// its elements in order, so the sums have the same bits with or without streaming.
constexpr int UNROLL = 2;

// Elements [i, end) (fewer than a chunk) into lanes (lane0 + k) % LANES, k = 0, 1, ...
template <class Op, typename T, bool W, bool PW, bool LOSS, bool GRAD>
__attribute__((noinline)) void run_rest(const Op& op, const T* x, const T* y, const T* w, const T* pw, T* lo, T* go,
                     T scale, idx i, idx end, double* acc) {
    constexpr int CHUNK = UNROLL * LANES;
    if (i < end && !heavy_op<Op>::value) {  // cheap math: one element at a time
        for (int j = 0; i < end; ++i, j = (j + 1) % LANES) {
            T l, g;
            op(x[i], y[i], PW ? pw[i] : T(1), l, g);
            if (W) l *= w[i];
            acc[j] += double(l);
            if (LOSS) lo[i] = l;
            if (GRAD) go[i] = weighted<Op>(g, W ? w[i] * scale : scale);
        }
    }
    if (i < end) {
        // An exp/log loss (Op::heavy): the elements are copied into a zero-padded chunk and
        // computed by the same vector loop, since a scalar exp or log costs about as much as
        // a vector one. Each element's math is the same whatever its position, and only the
        // rem real ones are stored and summed, in the same lanes and order.
        const idx rem = end - i;
        T xb[CHUNK], yb[CHUNK], wb[CHUNK], pwb[CHUNK], ls[CHUNK], gs[CHUNK];
        for (int j = 0; j < CHUNK; ++j) {
            xb[j] = j < rem ? x[i + j] : T(0);
            yb[j] = j < rem ? y[i + j] : T(0);
            if (W) wb[j] = j < rem ? w[i + j] : T(0);
            if (PW) pwb[j] = j < rem ? pw[i + j] : T(0);
        }
#pragma omp simd
        for (int j = 0; j < CHUNK; ++j) {
            T l, g;
            op(xb[j], yb[j], PW ? pwb[j] : T(1), l, g);
            if (W) l *= wb[j];
            ls[j] = l;
            gs[j] = weighted<Op>(g, W ? wb[j] * scale : scale);
        }
        for (idx j = 0; j < rem; ++j) {
            acc[j % LANES] += double(ls[j]);
            if (LOSS) lo[i + j] = ls[j];
            if (GRAD) go[i + j] = gs[j];
        }
    }
}

template <class Op, typename T, bool W, bool PW, bool LOSS, bool GRAD>
__attribute__((noinline)) double run(const Op& op, const T* x, const T* y, const T* w, const T* pw, T* lo, T* go,
                  T scale, idx len, bool stream) {
    double acc[LANES] = {0.0};
    constexpr int CHUNK = UNROLL * LANES;
    idx i = 0;
    int h = 0;  // head: elements before the first 64-byte boundary of go (streaming only)
    stream = GRAD && stream && len >= 4 * CHUNK && reinterpret_cast<uintptr_t>(go) % sizeof(T) == 0;
    if (stream) {
        const uintptr_t mis = reinterpret_cast<uintptr_t>(go) % STREAM_ALIGN;
        h = mis ? int((STREAM_ALIGN - mis) / sizeof(T)) : 0;
        run_rest<Op, T, W, PW, LOSS, GRAD>(op, x, y, w, pw, lo, go, scale, 0, h, acc);
        i = h;
    }
    double racc[LANES];  // racc[j] is lane (h + j) % LANES
    for (int j = 0; j < LANES; ++j) racc[j] = acc[(h + j) % LANES];
    if (stream) {
        for (; i + CHUNK <= len; i += CHUNK) {
            T ls[CHUNK], gs[CHUNK];
#pragma omp simd
            for (int j = 0; j < CHUNK; ++j) {
                T l, g;
                op(x[i + j], y[i + j], PW ? pw[i + j] : T(1), l, g);
                if (W) l *= w[i + j];
                ls[j] = l;
                gs[j] = weighted<Op>(g, W ? w[i + j] * scale : scale);
                if (LOSS) lo[i + j] = l;
            }
            for (int u = 0; u < UNROLL; ++u)
                for (int j = 0; j < LANES; ++j) racc[j] += double(ls[u * LANES + j]);
            stream_chunk(go + i, gs, CHUNK);
        }
        stream_fence();
    } else {
        for (; i + CHUNK <= len; i += CHUNK) {
            T ls[CHUNK];
#pragma omp simd
            for (int j = 0; j < CHUNK; ++j) {
                T l, g;
                op(x[i + j], y[i + j], PW ? pw[i + j] : T(1), l, g);
                if (W) l *= w[i + j];
                ls[j] = l;
                if (LOSS) lo[i + j] = l;
                if (GRAD) go[i + j] = weighted<Op>(g, W ? w[i + j] * scale : scale);
            }
            for (int u = 0; u < UNROLL; ++u)
                for (int j = 0; j < LANES; ++j) racc[j] += double(ls[u * LANES + j]);
        }
    }
    run_rest<Op, T, W, PW, LOSS, GRAD>(op, x, y, w, pw, lo, go, scale, i, len, racc);
    for (int j = 0; j < LANES; ++j) acc[(h + j) % LANES] = racc[j];
    return sum_lanes(acc);
}

// One block [begin, end): split into runs that cross no weight period boundary.
template <class Op, typename T, bool W, bool PW, bool LOSS, bool GRAD>
inline double block(const Op& op, const ElementwiseArgs<T>& a, idx begin, idx end, bool stream) {
    if (!W && !PW)
        return run<Op, T, W, PW, LOSS, GRAD>(op, a.x + begin, a.y + begin, nullptr, nullptr,
                                             a.loss + (LOSS ? begin : 0), a.grad + (GRAD ? begin : 0),
                                             a.scale, end - begin, stream);
    double total = 0.0;
    idx w_phase = W ? begin % a.w_period : 0, pw_phase = PW ? begin % a.pw_period : 0;
    for (idx i = begin; i < end;) {
        idx len = end - i;
        if (W) len = std::min(len, a.w_period - w_phase);
        if (PW) len = std::min(len, a.pw_period - pw_phase);
        total += run<Op, T, W, PW, LOSS, GRAD>(op, a.x + i, a.y + i, W ? a.w + w_phase : nullptr,
                                               PW ? a.pw + pw_phase : nullptr, a.loss + (LOSS ? i : 0),
                                               a.grad + (GRAD ? i : 0), a.scale, len, stream);
        i += len;
        if (W && (w_phase += len) == a.w_period) w_phase = 0;
        if (PW && (pw_phase += len) == a.pw_period) pw_phase = 0;
    }
    return total;
}

template <class Op, typename T, bool W, bool PW, bool LOSS, bool GRAD>
double drive(const Op& op, const ElementwiseArgs<T>& a, int n_threads) {
    idx nblocks = (a.n + BLOCK - 1) / BLOCK;
    const bool stream = GRAD && a.n * idx(sizeof(T)) * 3 >= STREAM_FROM_BYTES;
    return sum_blocks(nblocks, a.n >= SERIAL_BELOW, n_threads, [&](idx b) {
        return block<Op, T, W, PW, LOSS, GRAD>(op, a, b * BLOCK, std::min(a.n, (b + 1) * BLOCK), stream);
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


// Sum of f(i) for i in [0, n) into LANES float64 partial sums, element i in lane i % LANES,
// combined pairwise: a fixed order whatever the vector width (so every SIMD level and the
// fused and plain variants agree bit for bit).
template <class F>
inline double lane_sum(idx n, F f) {
    if (n <= LANES) {  // short rows (few classes): one lane, in order
        double s = 0.0;
        for (idx i = 0; i < n; ++i) s += f(i);
        return s;
    }
    double acc[LANES] = {0.0};
    idx i = 0;
    for (; i + LANES <= n; i += LANES) {
#pragma omp simd
        for (int j = 0; j < LANES; ++j) acc[j] += f(i + j);
    }
    for (int j = 0; i < n; ++i, ++j) acc[j] += f(i);
    return sum_lanes(acc);
}

// Max of f(i) for i in [0, n) in LANES lanes (vectorises; max is exact in any order). NaN
// never wins a comparison: a NaN row still ends NaN, through exp(x - m).
template <typename T, class F>
inline T lane_max(idx n, F f) {
    T lanes[LANES];
    for (int j = 0; j < LANES; ++j) lanes[j] = -std::numeric_limits<T>::infinity();
    idx i = 0;
    for (; i + LANES <= n; i += LANES) {
#pragma omp simd
        for (int j = 0; j < LANES; ++j) {
            T v = f(i + j);
            lanes[j] = v > lanes[j] ? v : lanes[j];
        }
    }
    for (int j = 0; i < n; ++i, ++j) lanes[j] = f(i) > lanes[j] ? f(i) : lanes[j];
    T m = lanes[0];
    for (int j = 1; j < LANES; ++j) m = lanes[j] > m ? lanes[j] : m;
    return m;
}

// Softmax cross-entropy of one sample; its C values are x[c * stride] (stride 1 for
// (N, C) input: CONTIG lets the loops vectorise). Log-sum-exp with the max m subtracted:
// -logp_c = (m - x_c) + log1p(s - 1), s = sum exp(x_c - m) in [1, C] summed in float64: no
// overflow, and no m + log(s) - x_c cancellation for huge logits. s - 1 is summed without
// the exact 1 of the max (below), so a target that dominates its row (a tiny
// loss: a confident right prediction) keeps full relative accuracy, where log(s) would round
// it to 0 (row [0, -40, -40]: 8.5e-18). NaN anywhere makes the sample NaN, as in PyTorch.
// Gradient with p = softmax(x):
//   indices:       (1 - eps) w_y (p - onehot_y) + eps/C (p W - w),  W = sum_c w_c
//                  (p_y - 1 = -(s - 1) / s when the target holds the max: no cancellation)
//   probabilities: p sum_c(w_c q_c) - w q,  q = (1 - eps) y + eps/C.
template <typename T, bool CONTIG>
inline T softmax_sample(const ClassArgs<T>& a, const T* x, const T* prob, int64_t y, T* g,
                        idx stride_if_strided, double wsum, bool stream) {
    const idx st = CONTIG ? 1 : stride_if_strided;
    const idx C = a.C;
    const T eps_c = T(a.p0 / double(C)), keep = T(1.0 - a.p0);
    const bool smooth = a.p0 > 0;
    const T m = lane_max<T>(C, [&](idx c) { return x[c * st]; });
    // exp(x_c - m) once per element: kept in a stack buffer for the gradient pass when the
    // row fits (rows longer than EXP_BUFFER recompute it there instead).
    T ebuf[EXP_BUFFER];
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
    const double s = o + k, s_minus_1 = o + (k - 1.0);
    const T log_s = vm::log1p(T(s_minus_1));
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
        auto write = [&](auto target_term) {
            if (CONTIG && buffered && stream) {  // the row computed in place in ebuf, then streamed
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

// NLL of one sample: loss -w_y x_y; gradient -w_y at y, 0 elsewhere.
template <typename T>
inline T nll_sample(const ClassArgs<T>& a, const T* x, int64_t y, T* g, idx stride) {
    const T w_y = a.w ? a.w[y] : T(1);
    const T x_y = x[y * stride];  // read before g is written (in place)
    if (g) {
        for (idx c = 0; c < a.C; ++c) g[c * stride] = T(0);
        g[y * stride] = -w_y * a.scale;
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
template <typename T>
inline T multi_margin_sample(const ClassArgs<T>& a, const T* x, int64_t y, T* g, idx stride) {
    const idx C = a.C;
    const bool squared = a.p0 == 2;
    const T margin = T(a.p1), x_y = x[y * stride];
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
#pragma omp simd
        for (idx c = 0; c < y; ++c) g[c * stride] = grad_c(c);
#pragma omp simd
        for (idx c = y + 1; c < C; ++c) g[c * stride] = grad_c(c);
        g[y * stride] = -g_y;
    }
    return multi_margin_value(w_y, sum, C);
}

// Softmax cross-entropy (class indices, no smoothing) of TILE consecutive (N, C) rows with
// C <= TILE, computed across rows: row r of the tile is SIMD lane r, so exp, log and the
// sums vectorise even for 10 classes. Every operation is the one softmax_sample does for a
// row, in the same order (max, exp, the float64 sum over c in order, vm::log, the gradient
// expression), so a row gives the same bits whichever path computes it. Rows are copied
// into a transposed buffer first (which also makes in-place, g == x, safe).
template <typename T>
inline void softmax_tile(const ClassArgs<T>& a, idx first_row, const int64_t* ys, T* losses) {
    constexpr int R = TILE;
    const idx C = a.C;
    const T* x = a.x + first_row * C;
    T xt[TILE][R];  // xt[c][r] = x[r][c], then exp(x - m)
    for (int r = 0; r < R; ++r)
        for (idx c = 0; c < C; ++c) xt[c][r] = x[r * C + c];
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
    T* g = a.grad + first_row * C;
    const T scale = a.scale;
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
    for (int r = 0; r < R; ++r)
        for (idx c = 0; c < C; ++c) g[r * C + c] = xt[c][r];
}

// Multi-margin (p = 1 or 2) of TILE consecutive (N, C) rows with C <= TILE, across rows as
// softmax_tile does: row r of the tile is SIMD lane r. Bitwise what multi_margin_sample
// computes for each row: its float64 sums run over the classes c != y in class order; here
// class y adds +0.0, which leaves a sum of non-negative terms (starting at +0.0) unchanged.
// (One sum, not one per side of y: the float64 sums are most of this loop's work.) The
// per-class expressions are the same, in the same order. Rows are copied into a transposed
// buffer first (so in place, g == x, is safe).
template <typename T>
inline void multi_margin_tile(const ClassArgs<T>& a, idx first_row, const int64_t* ys, T* losses) {
    constexpr int R = TILE;
    const idx C = a.C;
    const bool squared = a.p0 == 2;
    const T margin = T(a.p1), scale = a.scale;
    const T* x = a.x + first_row * C;
    T xt[TILE][R];
    for (int r = 0; r < R; ++r)
        for (idx c = 0; c < C; ++c) xt[c][r] = x[r * C + c];
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
    T* g = a.grad + first_row * C;
    for (int r = 0; r < R; ++r)
        for (idx c = 0; c < C; ++c) g[r * C + c] = xt[c][r];
}

template <typename T>
double classes(int which, const ClassArgs<T>& a, int n_threads) {
    const idx samples = a.N * a.K;
    if (samples == 0) return 0.0;  // O(1) whatever C is: nothing is read or written
    const idx per_block = std::max<idx>(1, BLOCK / std::max<idx>(a.C, 1));
    const idx nblocks = (samples + per_block - 1) / per_block;
    const bool contig = a.K == 1;
    // Sum of the class weights (label smoothing with class indices), float64 in a fixed
    // order (the count C itself without weights: exact, where a float32 count stops at 2**24).
    double wsum = 0.0;
    if (which == kernel::CROSS_ENTROPY && a.p0 > 0)
        wsum = a.w ? lane_sum(a.C, [&](idx c) { return double(a.w[c]); }) : double(a.C);
    // A class index is read once, into a local, and checked against [0, C) where it is used:
    // the front layer validated the indices, but another thread may change them since; such
    // a sample gets a NaN loss and a NaN gradient row, and nothing outside the arrays is read
    // or written whatever the caller does.
    auto in_range = [&](int64_t y) { return (uint64_t)y < (uint64_t)a.C; };
    const bool may_ignore = which != kernel::MULTI_MARGIN;
    // Few classes, class indices, no smoothing, (N, C) rows: TILE rows at a time across
    // SIMD lanes (bitwise the per-row results, see softmax_tile).
    const bool tiles = which == kernel::CROSS_ENTROPY && contig && a.C <= TILE && a.p0 == 0;
    const bool mm_tiles = which == kernel::MULTI_MARGIN && contig && a.C <= TILE;
    // Large softmax gradients (logits + gradient at least STREAM_FROM_BYTES, rows of at least
    // a few cache lines) are streamed row by row, as the elementwise gradients are.
    const bool stream = a.grad && contig && !tiles && a.C >= 64 &&
                        samples * a.C * idx(sizeof(T)) * 2 >= STREAM_FROM_BYTES;
    auto block_sum = [&](idx b) {
        double acc[LANES] = {0.0};
        idx end = std::min(samples, (b + 1) * per_block);
        int j = 0;
        auto add = [&](idx s, T loss) {
            if (a.loss) a.loss[s] = loss;
            acc[j] += double(loss);
            j = (j + 1) % LANES;
        };
        for (idx s = b * per_block; s < end;) {
            if ((tiles || mm_tiles) && s + TILE <= end) {
                int64_t ys[TILE];
                bool valid = true;
                for (int r = 0; r < TILE; ++r) {
                    ys[r] = read_once(a.target + s + r);
                    valid &= in_range(ys[r]) || (may_ignore && ys[r] == a.ignore_index);
                }
                if (valid) {  // else (a racing caller) the rows go one by one, below
                    T losses[TILE];
                    if (tiles)
                        softmax_tile(a, s, ys, losses);
                    else
                        multi_margin_tile(a, s, ys, losses);
                    for (int r = 0; r < TILE; ++r) add(s + r, losses[r]);
                    s += TILE;
                    continue;
                }
            }
            idx n = contig ? s : s / a.K, k = contig ? 0 : s % a.K;
            idx offset = n * a.C * a.K + k;
            const T* x = a.x + offset;
            T* g = a.grad ? a.grad + offset : nullptr;
            const int64_t y = a.target ? read_once(a.target + s) : 0;
            T loss;
            if (a.target && y == a.ignore_index && may_ignore) {
                loss = 0;  // ignored sample: no loss, zero gradient
                if (g)
                    for (idx c = 0; c < a.C; ++c) g[c * a.K] = T(0);
            } else if (a.target && !in_range(y)) {  // changed since validated (see in_range)
                loss = std::numeric_limits<T>::quiet_NaN();
                if (g)
                    for (idx c = 0; c < a.C; ++c) g[c * a.K] = loss;
            } else if (which == kernel::CROSS_ENTROPY || which == kernel::CROSS_ENTROPY_PROBS) {
                const T* prob = a.probs ? a.probs + offset : nullptr;
                loss = contig ? softmax_sample<T, true>(a, x, prob, y, g, 1, wsum, stream)
                              : softmax_sample<T, false>(a, x, prob, y, g, a.K, wsum, false);
            } else if (which == kernel::NLL) {
                loss = nll_sample(a, x, y, g, a.K);
            } else {
                loss = multi_margin_sample(a, x, y, g, a.K);
            }
            add(s, loss);
            ++s;
        }
        if (stream) stream_fence();
        return sum_lanes(acc);
    };
    return sum_blocks(nblocks, samples * a.C >= SERIAL_BELOW, n_threads, block_sum);
}

// ---------------------------------------------------------------------------------------
// 4. Scanners (read-only): the index of the first element where bad(a[i]) holds, or -1.
// Blocks are tested branch-free (vectorised), in parallel for big arrays; only the first
// flagged block is searched element by element.

template <typename T, class Bad>
idx first_where_serial(const T* a, idx n, Bad bad) {
    for (idx begin = 0; begin < n; begin += BLOCK) {
        const idx end = std::min(n, begin + BLOCK);
        int any = 0;
#pragma omp simd reduction(| : any)
        for (idx i = begin; i < end; ++i) any |= int(bad(a[i]));
        if (any)
            for (idx i = begin; i < end; ++i)
                if (bad(a[i])) return i;
    }
    return -1;
}

template <typename T, class Bad>
idx first_where(const T* a, idx n, int n_threads, Bad bad) {
#if FASTLOSS_OPENMP
    const int nt = n >= SERIAL_BELOW && n_threads > 1
                       ? std::min(max_threads_for((n + BLOCK - 1) / BLOCK, n_threads), 64) : 1;
    if (nt > 1) {
        // One contiguous chunk per thread, each scanned serially; the first chunk with a
        // hit holds the first index.
        const idx chunk = ((n + nt - 1) / nt + BLOCK - 1) / BLOCK * BLOCK;
        idx found[64];
#pragma omp parallel for schedule(static, 1) num_threads(nt)
        for (int t = 0; t < nt; ++t) {
            const idx lo = std::min(n, t * chunk), hi = std::min(n, lo + chunk);
            const idx i = first_where_serial(a + lo, hi - lo, bad);
            found[t] = i < 0 ? -1 : lo + i;
        }
        for (int t = 0; t < nt; ++t)
            if (found[t] >= 0) return found[t];
        return -1;
    }
#endif
    (void)n_threads;
    return first_where_serial(a, n, bad);
}

template <typename T>
idx first_outside_unit(const T* a, idx n, int n_threads) {
    return first_where(a, n, n_threads, [](T v) { return !(v >= T(0)) | !(v <= T(1)); });  // NaN is outside
}

template <typename T>
idx first_non_sign(const T* a, idx n, int n_threads) {
    return first_where(a, n, n_threads, [](T v) { return (v != T(1)) & (v != T(-1)); });
}

// First target outside [0, C) that is not ignore_index (-1 if none), and into *weight_sum
// the float64 sum of w[target] (the count when w is null) over the kept targets.
// Sum of a[0..n) in float64 (the "mean" divisor of a weight), compensated so that it is
// all but correctly rounded: a plain float64 sum of many weights can be off by more ulp
// than the gradient's bound allows. Neumaier's summation in LANES independent lanes (lane j
// takes elements j, j + LANES, ...), then the lanes combined the same way, in order: a
// fixed order, so the same bits on every run, thread count and SIMD level.
template <typename T>
double float64_sum(const T* a, idx n) {
    double s[LANES] = {0.0}, c[LANES] = {0.0};
    auto add = [](double& sum, double& comp, double v) {
        const double t = sum + v;
        comp += std::fabs(sum) >= std::fabs(v) ? (sum - t) + v : (v - t) + sum;
        sum = t;
    };
    idx i = 0;
    for (; i + LANES <= n; i += LANES) {
#pragma omp simd
        for (int j = 0; j < LANES; ++j) add(s[j], c[j], double(a[i + j]));
    }
    for (int j = 0; i < n; ++i, ++j) add(s[j], c[j], double(a[i]));
    double total = 0.0, comp = 0.0;
    for (int j = 0; j < LANES; ++j) {
        add(total, comp, s[j]);
        add(total, comp, c[j]);
    }
    // An infinite weight, or weights whose sum overflows: the plain sum is the answer (inf,
    // or NaN for +inf and -inf); the compensation would be inf - inf = NaN.
    if (!std::isfinite(total)) {
        double plain = 0.0;
        for (int j = 0; j < LANES; ++j) plain += s[j];
        return plain;
    }
    return total + comp;
}

template <typename T>
idx class_target_stats(const int64_t* t, idx n, idx C, bool has_ignore, int64_t ignore_index,
                       const T* w, double* weight_sum) {
    auto kept = [=](int64_t y) { return !has_ignore | (y != ignore_index); };
    idx bad = first_where(t, n, 1, [=](int64_t y) { return kept(y) & ((uint64_t)y >= (uint64_t)C); });
    if (bad >= 0) return bad;
    // The indices are read again here: each once, and checked again before w[y] is read
    // (another thread may have changed it since): such a sum is NaN, and so is the loss.
    *weight_sum = lane_sum(n, [&](idx i) {
        const int64_t y = read_once(t + i);
        const bool kept_y = kept(y), valid = (uint64_t)y < (uint64_t)C;
        const double w_y = w && valid ? double(w[y]) : 1.0;
        return kept_y ? (valid ? w_y : std::numeric_limits<double>::quiet_NaN()) : 0.0;
    });
    return -1;
}

}  // namespace FL_IMPL
}  // namespace fl
