// The drivers of the kernels: fixed-order summation, the elementwise driver (blocks, lanes,
// weights, streaming stores, threads), the class driver (rows, tiles) and the scanners.
// No loss math here (losses.hpp, class_losses.hpp); included once per instruction-set
// namespace (isa.inc).
//
// Determinism: every sum is split into blocks of a fixed number of elements (samples for
// the class kernels) by index; each block is summed into LANES float64 partial sums, lane j
// taking elements j, j + LANES, ... of the block, and the lanes and then the block partials
// are combined by a fixed pairwise tree. Threads only decide who computes which block, so
// results are bitwise identical for any thread count. Per-element math runs in the input's
// dtype with -ffp-contract=off, so a loss computed with or without its gradient has the same
// bits (NAME and NAME_grad agree exactly).

// The per-element functions are always inlined: a run holds several vector loops over the
// same math (chunks with and without streaming stores), and past GCC's inlining budget a
// loop would call the function element by element (7x slower, unvectorised).
#ifndef FL_OP
#define FL_OP inline __attribute__((always_inline))
#endif

constexpr idx BLOCK = 4096;  // elements per block of the fixed summation order
constexpr int LANES = 16;    // float64 partial sums per block
// Below this many elements (class kernels: elements of the input) no parallel call is
// opened. Measured on the 2-core AMD EPYC (Zen 4), float32, median of 2001 calls, 1 vs 2
// threads: MSE 4096: 0.35/0.35 us (one block: serial anyway), 8192: 0.91/0.90,
// 16384: 2.05/1.35; BCE with logits 8192: 9.5/5.2 us, 16384: 18.7/9.7. Two blocks is where a
// second thread starts to pay; results do not depend on it (blocks are fixed).
constexpr idx SERIAL_BELOW = 2 * BLOCK;
// Softmax rows up to this many classes keep exp(x - max) on the stack between passes.
constexpr idx EXP_BUFFER = 2048;
// Softmax with at most this many classes runs TILE rows at a time (softmax_tile).
constexpr int TILE = 16;

// Where the TILE samples of a tile lie: sample r's value of class c is at
// offset + r * rstep + c * cstep. (N, C) rows: rstep C, cstep 1; TILE consecutive positions
// k of one (N, C, K) sample n: offset n*C*K + k, rstep 1, cstep K (class-major, as LightGBM's
// multiclass scores and PyTorch's (N, C, H, W) segmentation logits).
struct TileAt {
    idx offset, rstep, cstep;
    idx at(int r, idx c) const { return offset + r * rstep + c * cstep; }
};


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
// clamp of every parallel call (fl::team_size: the CPUs this process may run on).
inline int max_threads_for(idx work_items, int n_threads) {
    if (n_threads < 1) n_threads = 1;
    return team_size((int)std::min<idx>(n_threads, std::max<idx>(work_items, 1)));
}

// Units of the pool (run_units): one block each, grouped only past MAX_UNITS blocks (4e12
// elements). The pool claims up to 8 units at once, single ones near the end.
template <class Body>
struct BlockUnits {
    Body* body;
    idx nblocks, per_unit;
    static void run(void* self, idx u) {
        const BlockUnits& s = *static_cast<const BlockUnits*>(self);
        const idx end = std::min(s.nblocks, (u + 1) * s.per_unit);
        for (idx b = u * s.per_unit; b < end; ++b) (*s.body)(b);
    }
};

// Run body(b) for b in [0, nblocks), storing nothing; parallel only for big work (the pool
// of runtime.cpp: the calling thread works too and never waits for an idle helper).
template <class Body>
inline void for_blocks(idx nblocks, bool parallel, int n_threads, Body body) {
    const int nt = parallel && n_threads > 1 && nblocks > 1 ? max_threads_for(nblocks, n_threads) : 1;
    if (nt > 1) {
        const idx per_unit = (nblocks + MAX_UNITS - 1) / MAX_UNITS;
        BlockUnits<Body> units{&body, nblocks, per_unit};
        run_units((nblocks + per_unit - 1) / per_unit, nt, &BlockUnits<Body>::run, &units);
        return;
    }
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


// ---------------------------------------------------------------------------------------
// The elementwise driver.


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

// What a run writes besides the loss sum: the per-element losses, the gradient and the
// Hessian's diagonal (each optional: compile-time flags LOSS, GRAD, HESS; SUM false: no loss
// sum either, for callers that want the gradient and Hessian alone, such as a boosting
// objective: the loss's own math is then dead code the compiler drops), and the Hessian
// policy (hc > 0: every term's second derivative is the constant hc).
template <typename T>
struct Outputs {
    T* lo;
    T* go;
    T* ho;
    T scale;
    T hc;
    bool hconst;
};

// The Hessian entry of an element: the second derivative h (or the policy's constant) times
// ws = w * scale, as the gradient; a selected zero (flat_zero) stays 0 whatever the weight.
// (hc and hconst are locals of the loops: read from Outputs, a struct the stores could alias
// as far as the compiler knows, they kept the loops from vectorising: 30x slower)
template <class Op, typename T>
FL_OP T weighted_hess(T h, T ws, T hc, T use_hc) {
    const T v = use_hc != T(0) ? hc : h;
    const T r = v * ws;
    return flat_zero_of<Op>::value ? (v == T(0) ? T(0) : r) : r;
}

// Elements [i, end) (fewer than a chunk) into lanes (lane0 + k) % LANES, k = 0, 1, ...
template <class Op, typename T, bool W, bool PW, bool LOSS, bool GRAD, bool HESS, bool SUM = true>
__attribute__((noinline)) void run_rest(const Op& op, const T* x, const T* y, const T* w, const T* pw,
                                        const Outputs<T>& o, idx i, idx end, double* acc) {
    constexpr int CHUNK = UNROLL * LANES;
    const T scale = o.scale, hc = o.hc, use_hc = o.hconst ? T(1) : T(0);
    if (i < end && !heavy_op<Op>::value) {  // cheap math: one element at a time
        for (int j = 0; i < end; ++i, j = (j + 1) % LANES) {
            T l, g, h;
            op(x[i], y[i], PW ? pw[i] : T(1), l, g, h);
            const T ws = W ? w[i] * scale : scale;
            if (W) l *= w[i];
            if (SUM) acc[j] += double(l);
            if (LOSS) o.lo[i] = l;
            if (GRAD) o.go[i] = weighted<Op>(g, ws);
            if (HESS) o.ho[i] = weighted_hess<Op>(h, ws, hc, use_hc);
        }
    }
    if (i < end) {
        // An exp/log loss (Op::heavy): the elements are copied into a zero-padded chunk and
        // computed by the same vector loop, since a scalar exp or log costs about as much as
        // a vector one. Each element's math is the same whatever its position, and only the
        // rem real ones are stored and summed, in the same lanes and order.
        const idx rem = end - i;
        T xb[CHUNK], yb[CHUNK], wb[CHUNK], pwb[CHUNK], ls[CHUNK], gs[CHUNK], hs[CHUNK];
        for (int j = 0; j < CHUNK; ++j) {
            xb[j] = j < rem ? x[i + j] : T(0);
            yb[j] = j < rem ? y[i + j] : T(0);
            if (W) wb[j] = j < rem ? w[i + j] : T(0);
            if (PW) pwb[j] = j < rem ? pw[i + j] : T(0);
        }
#pragma omp simd
        for (int j = 0; j < CHUNK; ++j) {
            T l, g, h;
            op(xb[j], yb[j], PW ? pwb[j] : T(1), l, g, h);
            const T ws = W ? wb[j] * scale : scale;
            if (W) l *= wb[j];
            ls[j] = l;
            gs[j] = weighted<Op>(g, ws);
            if (HESS) hs[j] = weighted_hess<Op>(h, ws, hc, use_hc);
        }
        for (idx j = 0; j < rem; ++j) {
            if (SUM) acc[j % LANES] += double(ls[j]);
            if (LOSS) o.lo[i + j] = ls[j];
            if (GRAD) o.go[i + j] = gs[j];
            if (HESS) o.ho[i + j] = hs[j];
        }
    }
}

// A functor whose second derivative is one constant everywhere (mse_loss: 2) says so with
// `static constexpr int constant_hessian`.
template <class Op, class = void>
struct constant_hessian_of { static constexpr bool value = false; static constexpr int h = 0; };
template <class Op>
struct constant_hessian_of<Op, decltype(void(Op::constant_hessian))> {
    static constexpr bool value = true;
    static constexpr int h = Op::constant_hessian;
};

// A chunk's local buffer, as the chunk loops of an exp/log loss (Op::heavy) must see it:
// through a pointer the compiler cannot follow. A chunk loop whose only stores go to local
// arrays (the loss alone; the streaming gradient) was taken apart by GCC 12 for
// sigmoid_focal_loss, whose body is large, and left scalar: 38-46 ns per float32 element
// against 4 with the gradient stored (measured, AVX-512, 1e6-1e7 elements). Stores through
// an opaque pointer keep it a vector loop. Cheap losses keep their registers.
template <class Op, typename T>
FL_OP T* chunk_buffer(T* buf) {
#if defined(__GNUC__)
    if (heavy_op<Op>::value) __asm__("" : "+r"(buf));
#endif
    return buf;
}

template <class Op, typename T, bool W, bool PW, bool LOSS, bool GRAD, bool HESS, bool SUM = true>
__attribute__((noinline)) void run(const Op& op, const T* x, const T* y, const T* w, const T* pw,
                                   const Outputs<T>& o, idx len, bool stream, double* lanes, idx lane0) {
    // lanes: the block's LANES partial sums; element j of this run goes to lane
    // (lane0 + j) % LANES (lane0: the run's offset in its block, mod LANES), so the block's
    // sums do not depend on where runs start (the weight periods), only on element indices.
    if (HESS && (constant_hessian_of<Op>::value || o.hconst)) {
        // A Hessian that is a constant before weighting (the loss's own, or a policy's): the
        // run without it, then the Hessian in a pass of its own over the run (a block at
        // most, cache-hot). The same values; one store stream per loop instead of two
        // interleaved ones, which measured 2x slower on this machine's caches (mse_loss
        // gradient + Hessian at 8192-1e5 elements: 0.72 against 0.38 ns per element).
        run<Op, T, W, PW, LOSS, GRAD, false, SUM>(op, x, y, w, pw, o, len, stream, lanes, lane0);
        T* const ho = o.ho;
        const T scale = o.scale, hc = o.hc, use_hc = o.hconst ? T(1) : T(0);
        const T hv = T(constant_hessian_of<Op>::h);
#pragma omp simd
        for (idx i = 0; i < len; ++i) ho[i] = weighted_hess<Op>(hv, W ? w[i] * scale : scale, hc, use_hc);
        return;
    }
    double acc[LANES];
    for (int j = 0; j < LANES; ++j) acc[j] = lanes[(lane0 + j) % LANES];
    constexpr int CHUNK = UNROLL * LANES;
    T* const lo = o.lo;
    T* const go = o.go;
    T* const ho = o.ho;
    const T scale = o.scale, hc = o.hc, use_hc = o.hconst ? T(1) : T(0);
    idx i = 0;
    int h = 0;  // head: elements before the first 64-byte boundary of go (streaming only)
    // (with a Hessian the two outputs' alignments differ: plain stores)
    stream = GRAD && !HESS && stream && len >= 4 * CHUNK && reinterpret_cast<uintptr_t>(go) % sizeof(T) == 0;
    if (stream) {
        const uintptr_t mis = reinterpret_cast<uintptr_t>(go) % STREAM_ALIGN;
        h = mis ? int((STREAM_ALIGN - mis) / sizeof(T)) : 0;
        run_rest<Op, T, W, PW, LOSS, GRAD, HESS, SUM>(op, x, y, w, pw, o, 0, h, acc);
        i = h;
    }
    double racc[LANES];  // racc[j] is lane (h + j) % LANES
    for (int j = 0; j < LANES; ++j) racc[j] = acc[(h + j) % LANES];
    if (stream) {
        for (; i + CHUNK <= len; i += CHUNK) {
            T ls_buf[CHUNK], gs_buf[CHUNK];
            T* const ls = chunk_buffer<Op>(ls_buf);
            T* const gs = chunk_buffer<Op>(gs_buf);
#pragma omp simd
            for (int j = 0; j < CHUNK; ++j) {
                T l, g, hh;
                op(x[i + j], y[i + j], PW ? pw[i + j] : T(1), l, g, hh);
                if (W) l *= w[i + j];
                ls[j] = l;
                gs[j] = weighted<Op>(g, W ? w[i + j] * scale : scale);
                if (LOSS) lo[i + j] = l;
            }
            if (SUM)
                for (int u = 0; u < UNROLL; ++u)
                    for (int j = 0; j < LANES; ++j) racc[j] += double(ls[u * LANES + j]);
            stream_chunk(go + i, gs, CHUNK);
        }
        stream_fence();
    } else {
        for (; i + CHUNK <= len; i += CHUNK) {
            T ls_buf[CHUNK];
            T* const ls = chunk_buffer<Op>(ls_buf);
#pragma omp simd
            for (int j = 0; j < CHUNK; ++j) {
                T l, g, hh;
                op(x[i + j], y[i + j], PW ? pw[i + j] : T(1), l, g, hh);
                const T ws = W ? w[i + j] * scale : scale;
                if (W) l *= w[i + j];
                ls[j] = l;
                if (LOSS) lo[i + j] = l;
                if (GRAD) go[i + j] = weighted<Op>(g, ws);
                if (HESS) ho[i + j] = weighted_hess<Op>(hh, ws, hc, use_hc);
            }
            if (SUM)
                for (int u = 0; u < UNROLL; ++u)
                    for (int j = 0; j < LANES; ++j) racc[j] += double(ls[u * LANES + j]);
        }
    }
    run_rest<Op, T, W, PW, LOSS, GRAD, HESS, SUM>(op, x, y, w, pw, o, i, len, racc);
    for (int j = 0; j < LANES; ++j) acc[(h + j) % LANES] = racc[j];
    for (int j = 0; j < LANES; ++j) lanes[(lane0 + j) % LANES] = acc[j];
}

// The outputs of a run starting at element i.
template <typename T>
inline Outputs<T> outputs_at(const ElementwiseArgs<T>& a, idx i) {
    return Outputs<T>{a.loss ? a.loss + i : nullptr, a.grad ? a.grad + i : nullptr,
                      a.hess ? a.hess + i : nullptr, a.scale, T(a.hess_const), a.hess_const > 0};
}

// One block [begin, end): split into runs that cross no weight period boundary, summed into
// one set of lanes (the same bits however the runs fall).
template <class Op, typename T, bool W, bool PW, bool LOSS, bool GRAD, bool HESS, bool SUM = true>
inline double block(const Op& op, const ElementwiseArgs<T>& a, idx begin, idx end, bool stream) {
    double lanes[LANES] = {0.0};
    if (!W && !PW) {
        run<Op, T, W, PW, LOSS, GRAD, HESS, SUM>(op, a.x + begin, a.y + begin, nullptr, nullptr, outputs_at(a, begin),
                                            end - begin, stream, lanes, 0);
        return sum_lanes(lanes);
    }
    idx w_phase = W ? begin % a.w_period : 0, pw_phase = PW ? begin % a.pw_period : 0;
    for (idx i = begin; i < end;) {
        idx len = end - i;
        if (W) len = std::min(len, a.w_period - w_phase);
        if (PW) len = std::min(len, a.pw_period - pw_phase);
        run<Op, T, W, PW, LOSS, GRAD, HESS, SUM>(op, a.x + i, a.y + i, W ? a.w + w_phase : nullptr,
                                            PW ? a.pw + pw_phase : nullptr, outputs_at(a, i), len, stream,
                                            lanes, (i - begin) % LANES);
        i += len;
        if (W && (w_phase += len) == a.w_period) w_phase = 0;
        if (PW && (pw_phase += len) == a.pw_period) pw_phase = 0;
    }
    return sum_lanes(lanes);
}

template <class Op, typename T, bool W, bool PW, bool LOSS, bool GRAD, bool HESS, bool SUM = true>
double drive(const Op& op, const ElementwiseArgs<T>& a, int n_threads) {
    idx nblocks = (a.n + BLOCK - 1) / BLOCK;
    const bool stream = GRAD && a.n * idx(sizeof(T)) * 3 >= STREAM_FROM_BYTES;
    return sum_blocks(nblocks, a.n >= SERIAL_BELOW, n_threads, [&](idx b) {
        return block<Op, T, W, PW, LOSS, GRAD, HESS, SUM>(op, a, b * BLOCK, std::min(a.n, (b + 1) * BLOCK), stream);
    });
}

// Pick the specialisation for which operands are present (each a compile-time flag, so
// the hot loop has no branches). A Hessian comes only with a gradient; the second operand
// (pos_weight, quantile) only for the kernels that take one (OPERAND, from the registry's
// FACTS): the others are not instantiated with it.
template <bool OPERAND, class Op, typename T>
double dispatch_flags(const Op& op, const ElementwiseArgs<T>& a, int n_threads) {
    const bool w = a.w != nullptr, pw = OPERAND && a.pw != nullptr, lo = a.loss != nullptr,
               g = a.grad != nullptr, hs = g && a.hess != nullptr;
    if (a.no_sum && !lo && hs) {  // gradient and Hessian alone (the loss sum is not wanted)
        if (!w && !pw) return drive<Op, T, false, false, false, true, true, false>(op, a, n_threads);
        if (w && !pw) return drive<Op, T, true, false, false, true, true, false>(op, a, n_threads);
    }
#define FL_CASE(W, PW, LO, G, H)                                                          \
    if (w == W && pw == PW && lo == LO && g == G && hs == H)                              \
        return drive<Op, T, W, PW && OPERAND, LO, G, H>(op, a, n_threads);
#define FL_CASES(W, PW)                                                                   \
    FL_CASE(W, PW, false, false, false) FL_CASE(W, PW, false, true, false)               \
    FL_CASE(W, PW, true, false, false)  FL_CASE(W, PW, true, true, false)                \
    FL_CASE(W, PW, false, true, true)   FL_CASE(W, PW, true, true, true)
    FL_CASES(false, false)
    FL_CASES(true, false)
    if (OPERAND) {
        FL_CASES(false, true)
        FL_CASES(true, true)
    }
#undef FL_CASES
#undef FL_CASE
    return std::numeric_limits<double>::quiet_NaN();
}

// ---------------------------------------------------------------------------------------
// Helpers of the class losses (class_losses.hpp) and the class driver (below).


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

// ---------------------------------------------------------------------------------------
// The class driver. The input is (N, C, K) C-contiguous: sample (n, k) has its C class
// values at x[n*C*K + c*K + k], stride K. Targets are (N, K) int64 indices (validated) or
// (N, C, K) probabilities. Row: the class functor (class_losses.hpp); IGNORES: samples whose
// index is ignore_index count for nothing; INDICES: targets are class indices (else
// probabilities). Both come from the registry (FACTS, generated).
template <class Row, bool IGNORES, bool INDICES, typename T>
double classes_of(const ClassArgs<T>& a, int n_threads) {
    const idx samples = a.N * a.K;
    if (samples == 0) return 0.0;  // O(1) whatever C is: nothing is read or written
    const idx per_block = std::max<idx>(1, BLOCK / std::max<idx>(a.C, 1));
    const idx nblocks = (samples + per_block - 1) / per_block;
    const bool contig = a.K == 1;
    const Row row(a);
    // A class index is read once, into a local, and checked against [0, C) where it is used:
    // the front layer validated the indices, but another thread may change them since; such
    // a sample gets a NaN loss and a NaN gradient row, and nothing outside the arrays is read
    // or written whatever the caller does.
    auto in_range = [&](int64_t y) { return (uint64_t)y < (uint64_t)a.C; };
    // Few classes: TILE samples at a time across SIMD lanes (bitwise the per-sample results,
    // see softmax_tile), for the functors that have tiles: TILE consecutive (N, C) rows, or
    // TILE consecutive positions k of one sample n of (N, C, K) input (TileAt).
    // (Row::tiled: the functor has tiles at all; Row::tiles(a): for this call. A Row without a
    // Hessian tile says no to a call with a Hessian.)
    bool tiles = false;
    if constexpr (Row::tiled) tiles = INDICES && Row::tiles(a);
    // Large softmax gradients (logits + gradient at least STREAM_FROM_BYTES, rows of at least
    // a few cache lines) are streamed row by row, as the elementwise gradients are.
    const bool stream = Row::streams && a.grad && !a.hess && contig && !tiles && a.C >= 64 &&
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
            if constexpr (Row::tiled) if (tiles && s + TILE <= end && (contig || s % a.K + TILE <= a.K)) {
                const TileAt at = contig ? TileAt{s * a.C, a.C, 1}
                                         : TileAt{(s / a.K) * a.C * a.K + s % a.K, 1, a.K};
                int64_t ys[TILE];
                bool valid = true;
                for (int r = 0; r < TILE; ++r) {
                    ys[r] = read_once(a.target + s + r);
                    valid &= in_range(ys[r]) || (IGNORES && ys[r] == a.ignore_index);
                }
                if (valid) {  // else (a racing caller) the rows go one by one, below
                    T losses[TILE];
                    Row::tile(a, at, ys, losses);
                    for (int r = 0; r < TILE; ++r) add(s + r, losses[r]);
                    s += TILE;
                    continue;
                }
            }
            idx n = contig ? s : s / a.K, k = contig ? 0 : s % a.K;
            idx offset = n * a.C * a.K + k;
            T* g = a.grad ? a.grad + offset : nullptr;
            T* h = g && a.hess ? a.hess + offset : nullptr;
            const int64_t y = INDICES ? read_once(a.target + s) : 0;
            T loss;
            if (INDICES && IGNORES && y == a.ignore_index) {
                loss = 0;  // ignored sample: no loss, zero gradient and Hessian
                if (g)
                    for (idx c = 0; c < a.C; ++c) g[c * a.K] = T(0);
                if (h)
                    for (idx c = 0; c < a.C; ++c) h[c * a.K] = T(0);
            } else if (INDICES && !in_range(y)) {  // changed since validated (see in_range)
                loss = std::numeric_limits<T>::quiet_NaN();
                if (g)
                    for (idx c = 0; c < a.C; ++c) g[c * a.K] = loss;
                if (h)
                    for (idx c = 0; c < a.C; ++c) h[c * a.K] = loss;
            } else {
                loss = contig ? row.template sample<true>(a, offset, y, g, h, stream)
                              : row.template sample<false>(a, offset, y, g, h, false);
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
// Scanners (read-only): the index of the first element where bad(a[i]) holds, or -1.
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
    // At most 64 chunks of whole blocks, scanned serially each (by the pool's threads); the
    // first chunk with a hit holds the first index.
    const idx nblocks = (n + BLOCK - 1) / BLOCK;
    const int nt = n >= SERIAL_BELOW && n_threads > 1 ? max_threads_for(nblocks, n_threads) : 1;
    if (nt > 1) {
        const idx nchunks = std::min<idx>(nblocks, 64);
        const idx chunk = (nblocks + nchunks - 1) / nchunks * BLOCK;
        idx found[64];
        for_blocks(nchunks, true, nt, [&](idx c) {
            const idx lo = std::min(n, c * chunk), hi = std::min(n, lo + chunk);
            const idx i = first_where_serial(a + lo, hi - lo, bad);
            found[c] = i < 0 ? -1 : lo + i;
        });
        for (idx c = 0; c < nchunks; ++c)
            if (found[c] >= 0) return found[c];
        return -1;
    }
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

// The first value below zero (strict: at or below zero); NaN counts too.
template <typename T>
idx first_negative(const T* a, idx n, int n_threads, bool strict) {
    if (strict) return first_where(a, n, n_threads, [](T v) { return !(v > T(0)); });
    return first_where(a, n, n_threads, [](T v) { return !(v >= T(0)); });
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

