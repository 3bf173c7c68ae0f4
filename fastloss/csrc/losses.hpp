// The per-element math of the elementwise losses: one functor per loss (the registry row's
// `functor`, fastloss/_registry.py). Nothing else: the drivers (drivers.hpp) run a functor
// over blocks, lanes, weights and threads; the dispatch is generated from the registry.
//
// A functor is a template on the float type T, constructed from the loss's parameters
// (`const double* p`, registry order, checked before), and called per element as
// op(x, y, p, l, g, h): for input x, target y and the second operand p (pos_weight, or
// pinball's quantile; 1 when absent) it sets the loss l, its derivative g and its second
// derivative h with respect to x, in T, branch-free (selects) so loops vectorise. h is
// computed always and dropped by the compiler where no Hessian is stored (pure arithmetic);
// it never changes l or g (each is its own expression, -ffp-contract=off).
// Optional traits (read by drivers.hpp):
//   static constexpr bool heavy = true;      exp/log math: tails go through the vector loop
//   static constexpr int grad_factor = k;    g leaves out a constant factor k, multiplied in
//                                            last (2 r cannot overflow where 2 r w s is finite)
//   static constexpr bool flat_zero = true;  a zero g (or h) is a selected constant (a hinge's
//                                            flat side): it stays 0 whatever the weight
// A loss whose parameters select different math (Poisson NLL's log_input, KL's log_target)
// has a chooser as its registry functor: `static constexpr bool options = true` and
// with_options(p, f), calling f with the functor of those options as template arguments, so
// each variant's loops vectorise without a branch (isa.inc, run_functor).
// h is the whole second derivative (no factor left out); the driver weighs it as g.
// Numerics: each functor states its domain, formula and stability trick. Included once per
// instruction-set namespace (isa.inc), like vecmath.hpp whose vm:: functions it uses.


template <typename T>
inline T sign_or_zero(T r) {  // sign(r), 0 at 0 and at NaN (PyTorch's L1 gradient)
    return T(r > T(0)) - T(r < T(0));
}

template <typename T>
struct Mse {
    static constexpr int grad_factor = 2;  // gradient 2 r
    explicit Mse(const double*) {}
    FL_OP void operator()(T x, T y, T, T& l, T& g, T& h) const {
        T r = x - y;
        l = r * r;
        g = r;
        h = T(2);
    }
};

template <typename T>
struct L1 {
    explicit L1(const double*) {}
    FL_OP void operator()(T x, T y, T, T& l, T& g, T& h) const {
        T r = x - y;
        l = std::abs(r);
        g = sign_or_zero(r);
        h = T(0);  // exact: 0 (the kink too); the usual policy is a constant (Outputs::hc)
    }
};

template <typename T>
struct Huber {
    // Quadratic for |r| < delta, linear with slope delta outside; delta > 0.
    T delta, half_delta;
    explicit Huber(const double* p) : delta(T(p[0])), half_delta(T(0.5 * p[0])) {}
    FL_OP void operator()(T x, T y, T, T& l, T& g, T& h) const {
        T r = x - y, a = std::abs(r);
        T quadratic = T(0.5) * a * a, linear = delta * (a - half_delta);
        l = a < delta ? quadratic : linear;
        g = std::min(std::max(r, -delta), delta);  // clip(r); NaN passes through both
        h = a < delta ? T(1) : (a >= delta ? T(0) : a);  // 1 inside, 0 outside (the kink), NaN for NaN
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
    FL_OP void operator()(T x, T y, T, T& l, T& g, T& h) const {
        T r = x - y, a = std::abs(r);
        T quadratic = T(0.5) * a * (a * up) * inv_beta, linear = a - half_beta;
        // second derivative 1 / beta inside (up * inv_beta: finite for a subnormal beta only
        // as far as 1 / beta is), 0 outside and at the kink, NaN for NaN r
        h = a < beta ? up * inv_beta : (a >= beta ? T(0) : a);
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
    FL_OP void operator()(T x, T y, T, T& l, T& g, T& h) const {
        T log_x = vm::log_clamped_unit(x);
        T log_1mx = vm::log1m_clamped_unit(x);
        l = vm::mad(y - T(1), log_1mx, -(y * log_x));
        const T d = std::max((T(1) - x) * x, T(1e-12f));  // PyTorch's EPSILON is a float
        g = (x - y) / d;
        // The derivative of that gradient, y / x^2 + (1 - y) / (1 - x)^2 over the same
        // clamped denominator: ((x - y)^2 + y (1 - y)) / d^2, two non-negative terms for y in
        // [0, 1] (no cancellation); divided twice by d (d^2 underflows in float32).
        const T r = x - y;
        h = (r * r + y * (T(1) - y)) / d / d;
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
    FL_OP void operator()(T x, T y, T p, T& l, T& g, T& h) const {
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
        // h = ((1 - y) + p y) sigmoid(x) sigmoid(-x) = (...) e / (1 + e)^2: no cancellation,
        // underflows to 0 (not NaN) for huge |x| (e = 0)
        h = (neg + py) * (sig_small * inv);
    }
};

template <typename T>
struct Hinge {
    // z = margin - y x; loss max(0, z) with NaN propagated; grad -y for z > 0, 0 at the
    // kink z == 0 and below, NaN for NaN z.
    static constexpr bool flat_zero = true;
    T margin;
    explicit Hinge(const double* p) : margin(T(p[0])) {}
    FL_OP void operator()(T x, T y, T, T& l, T& g, T& h) const {
        T z = margin - y * x;
        T neg_y = -y, flat = z <= T(0) ? T(0) : z;  // flat: 0 on the flat side, NaN if NaN
        l = z < T(0) ? T(0) : z;
        g = z > T(0) ? neg_y : flat;
        h = z > T(0) ? T(0) : flat;  // exact: 0 (the kink too), NaN for NaN z
    }
};

template <typename T>
struct SquaredHinge {
    static constexpr int grad_factor = 2;  // gradient -2 y h
    static constexpr bool flat_zero = true;
    T margin;
    explicit SquaredHinge(const double* p) : margin(T(p[0])) {}
    FL_OP void operator()(T x, T y, T, T& l, T& g, T& hess) const {
        T z = margin - y * x;
        T h = z < T(0) ? T(0) : z;  // NaN propagates
        l = h * h;
        g = -y * h;
        hess = z > T(0) ? T(2) * (y * y) : (z <= T(0) ? T(0) : z);  // 2 y^2 = 2 on the active side
    }
};

template <typename T, bool LOG_INPUT, bool FULL>
struct PoissonNllOf {
    // PyTorch's poisson_nll_loss; any real x and y (no domain: PyTorch's NaN and inf).
    // LOG_INPUT: x is the log-rate. loss exp(x) - y x with y x fused into the subtraction
    // (vm::mad: one rounding on the FMA levels; the terms may cancel, as in any rounded
    // formula), gradient exp(x) - y, second derivative exp(x). exp(+inf) - y inf is NaN and
    // 0 * inf too, as in PyTorch.
    // Else x is the rate: loss x - y log(x + eps), gradient 1 - y / (x + eps), second
    // derivative y / (x + eps)^2. s = x + eps is rounded with its error d (TwoSum, exact; eps
    // as eps_hi + eps_lo, both in T: the double eps, not its float rounding), and
    // log(x + eps) = log(s) + c, c = d / s (vm::log_rel), 1 / (x + eps) = (1 / s)(1 - c):
    // accurate where x + eps rounds (a rate near 1 with a large count: PyTorch's log(s) is
    // off by y d / s there). The gradient 1 - q (1 - c), q = y / s, as (1 - q) + q c: where
    // 1 - q cancels (y ~ x + eps) the correction is not lost in the rounding of q (1 - c).
    // s = 0 gives -inf, s < 0 NaN (PyTorch; the gradient stays finite). y / (x + eps)^2 as
    // (y / s) / s: no overflow of s^2 where the result is finite.
    // FULL: + y log y - y + 0.5 log(2 pi y) where y > 1 (0 where y <= 1, NaN for NaN y, as
    // PyTorch's masked_fill), from one log: (y log y - y, fused) + (0.5 log y + log(2 pi) / 2).
    static constexpr bool heavy = true;
    T eps, eps_lo;
    explicit PoissonNllOf(const double* p) : eps(T(p[2])), eps_lo(T(p[2] - double(T(p[2])))) {}
    FL_OP void operator()(T x, T y, T, T& l, T& g, T& h) const {
        if constexpr (LOG_INPUT) {
            const T e = vm::exp(x);
            l = vm::mad(-y, x, e);
            g = e - y;
            h = e;
        } else {
            const T s = x + eps, b = s - x;
            const T d = ((x - (s - b)) + (eps - b)) + eps_lo;  // s + d ~ x + eps (finite s)
            const T inv = T(1) / s;
            // c = d / s where s is finite and not 0 (s < 0: the loss is NaN, the gradient is
            // not); 0 where inv may be inf (s subnormal: d == 0)
            const bool regular = s != T(0) && s - s == T(0) && d != T(0);
            const T c = regular ? d * inv : T(0);
            l = vm::mad(-y, vm::log_rel(s, c), x);
            const T q = y * inv, one_minus_q = T(1) - q;
            g = c != T(0) ? vm::mad(q, c, one_minus_q) : one_minus_q;  // (c == 0: q may be inf)
            const T inv_c = c != T(0) ? vm::mad(-inv, c, inv) : inv;  // 1 / (x + eps)
            h = (y * inv_c) * inv_c;
        }
        if constexpr (FULL) {
            const T ly = vm::log(y);
            const T stirling = vm::mad(y, ly, -y) + vm::mad(T(0.5), ly, T(0.91893853320467274178));
            l = l + (y <= T(1) ? T(0) : stirling);
        }
    }
};

template <typename T>
struct PoissonNll {  // the registry's functor: log_input and full select the math (isa.inc)
    static constexpr bool options = true;
    template <class F>
    static double with_options(const double* p, F f) {
        if (p[0] != 0)
            return p[1] != 0 ? f(PoissonNllOf<T, true, true>(p)) : f(PoissonNllOf<T, true, false>(p));
        return p[1] != 0 ? f(PoissonNllOf<T, false, true>(p)) : f(PoissonNllOf<T, false, false>(p));
    }
};

template <typename T, bool LOG_TARGET>
struct KlDivOf {
    // PyTorch's kl_div; x: log-probabilities, y: probabilities (LOG_TARGET: log-probabilities),
    // any real values. loss y (log y - x): one product of the difference (PyTorch's
    // xlogy(y, y) - y x has the same terms; where log y and x cancel, the error is that of
    // log y, relative to the terms). LOG_TARGET: exp(y) (y - x), the product formed before
    // exp(y)'s scaling (vm::exp_times: exact to about 1.5 ulp even where exp(y) alone is
    // subnormal, y < -87 in float32, and the term is not). A term whose coefficient is 0
    // (y == 0, or y == -inf with LOG_TARGET) is exactly 0, also at x = +-inf (PyTorch:
    // 0 * inf = NaN), and NaN for NaN x. y < 0 (not LOG_TARGET): log y and the loss are NaN,
    // as PyTorch.
    // Gradient -y (-exp(y)), whatever x (PyTorch's autograd too); second derivative 0 (the
    // usual Hessian is the policy's constant).
    static constexpr bool heavy = true;
    explicit KlDivOf(const double*) {}
    FL_OP void operator()(T x, T y, T, T& l, T& g, T& h) const {
        T coef, term, zero_at;
        if constexpr (LOG_TARGET) {
            term = vm::exp_times(y, y - x, coef);
            zero_at = -std::numeric_limits<T>::infinity();  // exp(-inf) == 0
        } else {
            coef = y;
            term = y * (vm::log(y) - x);
            zero_at = T(0);
        }
        const T zero = x != x ? x : T(0);
        l = y == zero_at ? zero : term;
        g = -coef;
        h = T(0);
    }
};

template <typename T>
struct KlDiv {  // the registry's functor: log_target selects the math (isa.inc)
    static constexpr bool options = true;
    template <class F>
    static double with_options(const double* p, F f) {
        return p[0] != 0 ? f(KlDivOf<T, true>(p)) : f(KlDivOf<T, false>(p));
    }
};
