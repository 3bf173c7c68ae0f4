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
    static constexpr int constant_hessian = 2;  // the Hessian's value everywhere (drivers.hpp)
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

// BCE with logits, given e = exp(-|x|): the math of BceLogits, shared with SigmoidFocal
// (whose gamma = 0 is BCE with logits bit for bit). Also returns the pieces the focal loss
// reuses: inv = 1 / (1 + e), log_term = log1p(e), sigmoid(x) and sigmoid(-x).
template <typename T>
FL_OP void bce_logits_terms(T x, T y, T p, T e, T& l, T& g, T& h, T& inv, T& log_term, T& sig, T& sig_neg) {
    inv = T(1) / (T(1) + e);
    log_term = vm::log1p_unit(e, inv);
    T py = p * y;
    T sp_pos = std::max(x, T(0)) + log_term;
    T sp_neg = std::max(-x, T(0)) + log_term;
    // A term whose coefficient is 0 is 0 even at x = +-inf (the exact limit; 0 * inf
    // would be NaN).
    T neg = T(1) - y, neg_term = neg * sp_pos, pos_term = py * sp_neg;
    l = (neg == T(0) ? T(0) : neg_term) + (py == T(0) ? T(0) : pos_term);
    T sig_small = e * inv;  // sigmoid(-|x|)
    bool pos = x >= T(0);
    sig = pos ? inv : sig_small;
    sig_neg = pos ? sig_small : inv;
    g = neg * sig - py * sig_neg;
    // h = ((1 - y) + p y) sigmoid(x) sigmoid(-x) = (...) e / (1 + e)^2: no cancellation,
    // underflows to 0 (not NaN) for huge |x| (e = 0)
    h = (neg + py) * (sig_small * inv);
}

template <typename T>
struct BceLogits {
    // Any real x. loss = (1 - y) softplus(x) + p y softplus(-x) with
    // softplus(+-x) = max(+-x, 0) + log1p(exp(-|x|)): no overflow, and for y in [0, 1] both
    // terms are >= 0, so tiny losses keep full relative accuracy (x=-40, y=0: 4.2e-18).
    // grad = (1 - y) sigmoid(x) - p y sigmoid(-x), both sigmoids from e = exp(-|x|) <= 1.
    // (The math: bce_logits_terms.)
    static constexpr bool heavy = true;
    explicit BceLogits(const double*) {}
    FL_OP void operator()(T x, T y, T p, T& l, T& g, T& h) const {
        T e = vm::exp_nonpos(-std::abs(x));
        T inv, log_term, sig, sig_neg;
        bce_logits_terms(x, y, p, e, l, g, h, inv, log_term, sig, sig_neg);
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

template <typename T>
struct Pinball {
    // Pinball (quantile) loss; q = the operand p, in (0, 1) (checked before). r = y - x;
    // loss q r for r >= 0, (q - 1) r for r < 0 (max of the two, both >= 0): one product of
    // the rounded residual (q - 1 is exact for q >= 1/2, Sterbenz; one rounding below).
    // Gradient -q where r > 0, 1 - q where r < 0, 0 at the kink r == 0 and for NaN r (as
    // l1_loss's sign, PyTorch's); the second derivative is 0: the usual Hessian is the
    // policy's constant.
    explicit Pinball(const double*) {}
    FL_OP void operator()(T x, T y, T q, T& l, T& g, T& h) const {
        const T r = y - x;
        const T below = q - T(1), above = T(1) - q;
        l = r >= T(0) ? q * r : below * r;
        g = r > T(0) ? -q : (r < T(0) ? above : T(0));
        h = T(0);
    }
};

// ---------------------------------------------------------------------------------------
// Deviances on the log link: poisson_deviance, gamma_deviance, tweedie_deviance.
// Input x is the raw prediction, mu = e^x; target y. The loss is the unit deviance
// (sklearn.metrics.mean_poisson_deviance / mean_gamma_deviance / mean_tweedie_deviance on mu):
//   Poisson  d = 2 (y log(y / mu) - y + mu)         y >= 0 (y log y = 0 at y = 0)
//   Gamma    d = 2 (log(mu / y) + y / mu - 1)       y > 0
//   Tweedie  d = 2 (y^b / (a b) - y mu^a / a + mu^b / b),  b = 2 - p, a = 1 - p, 1 < p < 2,
//            y >= 0; p = 1 is Poisson, p = 2 Gamma (their code, chosen at construction: the
//            same bits as poisson_deviance and gamma_deviance).
// dd/dx = 2 (mu^b - y mu^a), d2d/dx2 = 2 (b mu^b - a y mu^a) (Poisson: b = 1, a = 0; Gamma:
// b = 0, a = -1). The boosting libraries' objectives are the derivatives of d / 2.
//
// Stability. Near the optimum mu = y the formula's terms (each about y^b / (b |a|)) cancel
// to a tiny d. With u = x - log y (y > 0), phi(z) = e^z - 1 - z >= 0 and S = y^b:
//   d / 2 = (S / b) phi(b u) + (S / -a) phi(a u),
// two non-negative terms: nothing cancels. phi(z) for z in [-1, 2] is vm::expm1mx_poly (no
// cancellation at tiny z), plus (e^z - 1) times the rounding error of z (u is carried as
// hi + lo: vm::log_parts, vm::two_sum); outside, S phi(z) is S e^z - S (1 + z) (z > 2, where
// S (1 + z) <= 0.41 S e^z) or S e^z + S (-1 - z) (z < -1: both >= 0), with S e^(b u) = mu^b
// and S e^(a u) = y mu^a, like S, exp of exactly summed exponents (vm::two_prod,
// vm::exp_sum_reduced) and scaled by 1 / b, b, ... in the same rounding (vm::scale_exp): about
// 1 ulp for every x, where exp((2-p) x) with (2-p) x rounded first is |x| ulp off, and no
// overflow or underflow on the way where the result is representable. log y is carried to
// about 2^-54 absolute, not to the relative accuracy a tiny u would need: near the optimum the
// loss is accurate to about an ulp of 2 y^b, the size of the cancelling terms.
// Gradient: mu^b - y mu^a (grad_factor 2), accurate to an ulp of the larger term (they cancel
// where mu ~ y); where mu^b overflows with b u in [-1, 2] (y^b near the float maximum):
// S (u + phi(b u) - phi(a u)), which does not (Poisson: y (u + phi(u)) for every u in
// [-1, 2]). Hessian: 2 (b mu^b - a y mu^a), both terms >= 0.
// float is computed in double (Deviance::*_f) and rounded once. Overflow: a result is inf only where its
// exact value overflows (d = 2 (...) >= 1.18 e^z S / b where S e^z / b is inf; x = +-inf
// included: z is capped at 4096, where e^z is inf anyway, so S (1 + z) never gives inf - inf).
// y = 0: d = 2 mu^b / b. y = +inf: d = +inf, gradient -inf (NaN where x = +inf: inf - inf).
// Tweedie at p = 2 with y = 0 (the limit of Gamma's d at y -> 0): d = +inf, gradient 2,
// Hessian 0.

struct Deviance {
    using D = double;
    using I = vm::Bits<D>::I;
    static constexpr D inf = std::numeric_limits<D>::infinity();
    static constexpr D max = std::numeric_limits<D>::max();
    // |x| beyond 2^64 gives mu^b, y mu^a, y / mu of 0 or inf for every b, |a| >= 2^-52 (the
    // smallest non-zero 2 - p, p - 1 of a double p): clamped there, two_prod stays exact.
    static constexpr D x_cap = 18446744073709551616.0;
    static constexpr D z_cap = 4096.0;  // S e^z is inf beyond: caps S (1 + z) finite

    static FL_OP D clamp_x(D x) { return x < -x_cap ? -x_cap : (x > x_cap ? x_cap : x); }  // NaN stays

    // y in (0, inf) as is, else 1 (y = 0 and y = inf are selected by the callers).
    static FL_OP D safe_target(D y) { return y > 0.0 && y < inf ? y : 1.0; }

    // u = x - (lh + ll) as hi + lo, hi = fl(u), lo its rounding error (0 where x is not finite).
    static FL_OP void sub_log(D x, D lh, D ll, D& hi, D& lo) {
        D r, e1, e2;
        vm::two_sum(x, -lh, r, e1);
        vm::two_sum(r, -ll, hi, e2);
        lo = std::abs(x) <= max ? e1 + e2 : 0.0;
    }

    // m S phi(z + zl) given m S e^z = e (an exact exp), m S = s = scale_exp(ps, ks) and
    // z + zl (zl a rounding error; phi(z + zl) = phi(z) + (e^z - 1) zl to first order).
    // phi_c: that phi(z + zl). s (1 + z) and s (-1 - z) are rounded once (scale_exp: no
    // subnormal s amplified by a large 1 + z).
    static FL_OP D scaled_phi(D z, D zl, D ps, I ks, D e, D& phi_c) {
        D phi = vm::expm1mx_poly(z);
        phi_c = vm::mad(z + phi, zl, phi);
        D mid = vm::scale_exp(ps, ks) * phi_c;
        D zc = z < z_cap ? z : z_cap;  // NaN stays NaN
        D above = e - vm::scale_exp(ps * ((1.0 + zc) + zl), ks);
        above = e == inf ? e : above;  // s (1 + z) > max only where e = s e^z is inf
        D below = e + vm::scale_exp(ps * ((-1.0 - z) - zl), ks);
        return z >= -1.0 && z <= 2.0 ? mid : (z > 2.0 ? above : below);
    }

    // Poisson: b = 1, a = 0, S = y.
    static FL_OP void poisson(D x, D y, D& l, D& g, D& h) {
        D ys = safe_target(y), lh, ll, u, ul, phi;
        vm::log_parts(ys, lh, ll);
        sub_log(x, lh, ll, u, ul);
        D mu = vm::exp(x);
        D half = scaled_phi(u, ul, ys, 0, mu, phi);  // S = y exactly
        D gm = u >= -1.0 && u <= 2.0 ? ys * (u + (phi + ul)) : mu - ys;  // y (e^u - 1)
        D nan = std::numeric_limits<D>::quiet_NaN();
        l = y == 0.0 ? 2.0 * mu : (y == inf ? (x < inf ? inf : nan) : 2.0 * half);
        g = y == 0.0 || y == inf ? mu - y : gm;
        h = 2.0 * mu;
    }

    // Gamma: b = 0, a = -1, S = 1, y mu^a = y / mu.
    static FL_OP void gamma(D x, D y, D& l, D& g, D& h) {
        D ys = safe_target(y), lh, ll, u, ul, s, e, phi;
        vm::log_parts(ys, lh, ll);
        sub_log(x, lh, ll, u, ul);
        vm::two_sum(lh, -clamp_x(x), s, e);
        D q = vm::exp_sum(s, e + ll);  // y / mu
        D half = scaled_phi(-u, -ul, 1.0, 0, q, phi);
        D nan = std::numeric_limits<D>::quiet_NaN();
        D x_nan = x == x ? 1.0 : nan;
        l = y == inf ? (x < inf ? inf : nan) : 2.0 * half;
        g = y == inf ? (x < inf ? -inf : nan) : 1.0 - q;
        h = y == inf ? (x < inf ? inf : nan) : 2.0 * q;
        l = y == 0.0 ? inf * x_nan : l;  // y = 0: tweedie_deviance at p = 2 only
        g = y == 0.0 ? x_nan : g;
        h = y == 0.0 ? 0.0 * x_nan : h;
    }

    // Tweedie for 1 < p < 2 (see the top of this block). The constants of the power.
    struct Power {
        D b, a, neg_a, inv_b, inv_neg_a;
        explicit Power(double p) : b(2.0 - p), a(1.0 - p), neg_a(p - 1.0), inv_b(1.0 / (2.0 - p)), inv_neg_a(1.0 / (p - 1.0)) {}
    };

    static FL_OP void tweedie(D x, D y, const Power& power, D& l, D& g, D& h) {
        const Power c = power;  // read once, unconditionally (see tweedie_f)
        D ys = safe_target(y), lh, ll, u, ul, pr, e, s, e2;
        vm::log_parts(ys, lh, ll);
        sub_log(x, lh, ll, u, ul);
        D xc = clamp_x(x);
        I k;
        vm::two_prod(c.b, lh, pr, e);  // S = y^b = e^(b log y)
        D p = vm::exp_sum_reduced(pr, vm::mad(c.b, ll, e), k);
        I ks = k;
        D ps1 = p * c.inv_b, ps2 = p * c.inv_neg_a, sc = vm::scale_exp(p, k), s2 = vm::scale_exp(ps2, k);
        vm::two_prod(c.b, xc, pr, e);  // mu^b = e^(b x)
        p = vm::exp_sum_reduced(pr, e, k);
        D mub = vm::scale_exp(p, k), mub1 = vm::scale_exp(p * c.inv_b, k), b_mub = vm::scale_exp(p * c.b, k);
        vm::two_prod(c.a, xc, pr, e);  // y mu^a = e^(a x + log y)
        vm::two_sum(pr, lh, s, e2);
        p = vm::exp_sum_reduced(s, (e + e2) + ll, k);
        D q = vm::scale_exp(p, k), q2 = vm::scale_exp(p * c.inv_neg_a, k), a_q = vm::scale_exp(p * c.neg_a, k);
        // b u and a u with their rounding errors (those taken for |u| <= 2^64 only: beyond,
        // and at u = +-inf, z is far outside [-1, 2] and needs none)
        D z1 = c.b * u, z2 = c.a * u, uc = clamp_x(u), unused, z1l, z2l, phi1, phi2;
        bool u_moderate = std::abs(u) <= x_cap;
        vm::two_prod(c.b, uc, unused, e);
        z1l = u_moderate ? vm::mad(c.b, ul, e) : 0.0;
        vm::two_prod(c.a, uc, unused, e);
        z2l = u_moderate ? vm::mad(c.a, ul, e) : 0.0;
        D t1 = scaled_phi(z1, z1l, ps1, ks, mub1, phi1), t2 = scaled_phi(z2, z2l, ps2, ks, q2, phi2);
        // S / -a overflows only for p near 1 and y near the float maximum; then phi(a u) is tiny
        t2 = s2 == inf && z2 >= -1.0 && z2 <= 2.0 ? (sc * phi2) * c.inv_neg_a : t2;
        D nan = std::numeric_limits<D>::quiet_NaN();
        l = y == 0.0 ? 2.0 * mub1 : (y == inf ? (x < inf ? inf : nan) : 2.0 * (t1 + t2));
        // mu^b - y mu^a = S (e^(b u) - e^(a u)) = S (u + phi(b u) - phi(a u)), taken where mu^b
        // overflows with b u in [-1, 2] (p near 1, y near the float maximum) and the
        // difference may not
        D gp = mub == inf && z1 >= -1.0 && z1 <= 2.0 ? sc * ((u + (phi1 - phi2)) + ul) : mub - q;
        g = y == 0.0 ? mub : (y == inf ? (x < inf ? -inf : nan) : gp);
        h = y == 0.0 ? 2.0 * b_mub : (y == inf ? (x < inf ? inf : nan) : 2.0 * (b_mub + a_q));
    }

    // float inputs: the same formulas in double, without the steps that carry extra
    // precision (log y and u = x - log y, exp of exact sums, single-rounding scalings):
    // double's 29 extra bits cover them (u's error, about 2^-53 (|u| + |log y|), stays far
    // below a float ulp of the loss or of 2 y^b), and no float-range result overflows or
    // underflows on the way in double. One rounding to float at the end.
    static FL_OP D scaled_phi_f(D z, D s, D e, D& phi) {
        phi = vm::expm1mx_poly(z);
        D zc = z < z_cap ? z : z_cap;
        D above = e - s * (1.0 + zc);
        above = e == inf ? e : above;
        D below = e + s * (-1.0 - z);
        return z >= -1.0 && z <= 2.0 ? s * phi : (z > 2.0 ? above : below);
    }

    static FL_OP void poisson_f(D x, D y, D& l, D& g, D& h) {
        D ys = safe_target(y), u = x - vm::log(ys), mu = vm::exp(x), phi;
        D half = scaled_phi_f(u, ys, mu, phi);
        D gm = u >= -1.0 && u <= 2.0 ? ys * (u + phi) : mu - ys;
        D nan = std::numeric_limits<D>::quiet_NaN();
        l = y == 0.0 ? 2.0 * mu : (y == inf ? (x < inf ? inf : nan) : 2.0 * half);
        g = y == 0.0 || y == inf ? mu - y : gm;
        h = 2.0 * mu;
    }

    static FL_OP void gamma_f(D x, D y, D& l, D& g, D& h) {
        D ys = safe_target(y), v = vm::log(ys) - x, q = vm::exp(v), phi;
        D half = scaled_phi_f(v, 1.0, q, phi);
        D nan = std::numeric_limits<D>::quiet_NaN();
        D x_nan = x == x ? 1.0 : nan;
        l = y == inf ? (x < inf ? inf : nan) : 2.0 * half;
        g = y == inf ? (x < inf ? -inf : nan) : 1.0 - q;
        h = y == inf ? (x < inf ? inf : nan) : 2.0 * q;
        l = y == 0.0 ? inf * x_nan : l;
        g = y == 0.0 ? x_nan : g;
        h = y == 0.0 ? 0.0 * x_nan : h;
    }

    static FL_OP void tweedie_f(D x, D y, const Power& c, D& l, D& g, D& h) {
        // the constants read once, unconditionally (read inside a select, GCC made masked
        // loads of them that kept the loop from vectorising)
        const D b = c.b, a = c.a, neg_a = c.neg_a, inv_b = c.inv_b, inv_neg_a = c.inv_neg_a;
        D ys = safe_target(y), ly = vm::log(ys), u = x - ly, phi1, phi2;
        D sc = vm::exp(b * ly), mub = vm::exp(b * x), q = vm::exp(vm::mad(a, x, ly));
        D mub1 = mub * inv_b, b_mub = b * mub;
        D t1 = scaled_phi_f(b * u, sc * inv_b, mub1, phi1);
        D t2 = scaled_phi_f(a * u, sc * inv_neg_a, q * inv_neg_a, phi2);
        D nan = std::numeric_limits<D>::quiet_NaN();
        D h_pos = 2.0 * (b_mub + neg_a * q);
        l = y == 0.0 ? 2.0 * mub1 : (y == inf ? (x < inf ? inf : nan) : 2.0 * (t1 + t2));
        g = y == 0.0 ? mub : (y == inf ? (x < inf ? -inf : nan) : mub - q);
        h = y == 0.0 ? 2.0 * b_mub : (y == inf ? (x < inf ? inf : nan) : h_pos);
    }
};

template <typename T>
struct PoissonDeviance {
    static constexpr bool heavy = true;
    static constexpr int grad_factor = 2;  // gradient 2 (mu - y)
    explicit PoissonDeviance(const double*) {}
    FL_OP void operator()(T x, T y, T, T& l, T& g, T& h) const {
        double l2, g2, h2;
        if (sizeof(T) == 4)
            Deviance::poisson_f(double(x), double(y), l2, g2, h2);
        else
            Deviance::poisson(double(x), double(y), l2, g2, h2);
        l = T(l2), g = T(g2), h = T(h2);
    }
};

template <typename T>
struct GammaDeviance {
    static constexpr bool heavy = true;
    static constexpr int grad_factor = 2;  // gradient 2 (1 - y / mu)
    explicit GammaDeviance(const double*) {}
    FL_OP void operator()(T x, T y, T, T& l, T& g, T& h) const {
        double l2, g2, h2;
        if (sizeof(T) == 4)
            Deviance::gamma_f(double(x), double(y), l2, g2, h2);
        else
            Deviance::gamma(double(x), double(y), l2, g2, h2);
        l = T(l2), g = T(g2), h = T(h2);
    }
};

template <typename T>
struct TweediePower {  // 1 < p < 2 (TweedieDeviance below picks it)
    static constexpr bool heavy = true;
    static constexpr int grad_factor = 2;  // gradient 2 (mu^b - y mu^a)
    Deviance::Power c;
    explicit TweediePower(const Deviance::Power& power) : c(power) {}
    FL_OP void operator()(T x, T y, T, T& l, T& g, T& h) const {
        double l2, g2, h2;
        if (sizeof(T) == 4)
            Deviance::tweedie_f(double(x), double(y), c, l2, g2, h2);
        else
            Deviance::tweedie(double(x), double(y), c, l2, g2, h2);
        l = T(l2), g = T(g2), h = T(h2);
    }
};

template <typename T>
struct TweedieDeviance {
    // power p in [1, 2] (checked before). p = 1 and p = 2 are Poisson's and Gamma's math: the
    // dispatch_flags overload below runs the loops of PoissonDeviance, GammaDeviance or
    // TweediePower, chosen once per call (a branch on p inside the element loop would keep
    // it from vectorising); operator() is the same choice per element.
    static constexpr bool heavy = true;
    static constexpr int grad_factor = 2;  // gradient 2 (mu^b - y mu^a)
    int mode;  // 0 Poisson, 1 Gamma, 2 1 < p < 2
    Deviance::Power c;
    explicit TweedieDeviance(const double* p) : mode(p[0] == 1.0 ? 0 : (p[0] == 2.0 ? 1 : 2)), c(p[0]) {}
    FL_OP void operator()(T x, T y, T, T& l, T& g, T& h) const {
        if (mode == 0)
            PoissonDeviance<T>{nullptr}(x, y, T(1), l, g, h);
        else if (mode == 1)
            GammaDeviance<T>{nullptr}(x, y, T(1), l, g, h);
        else
            TweediePower<T>{c}(x, y, T(1), l, g, h);
    }
};

// The elementwise driver's entry (drivers.hpp) for tweedie_deviance: more specialised than
// the generic one, so the kernel table's call lands here.
template <bool OPERAND, typename T>
double dispatch_flags(const TweedieDeviance<T>& op, const ElementwiseArgs<T>& a, int n_threads) {
    if (op.mode == 0) return dispatch_flags<OPERAND>(PoissonDeviance<T>(nullptr), a, n_threads);
    if (op.mode == 1) return dispatch_flags<OPERAND>(GammaDeviance<T>(nullptr), a, n_threads);
    return dispatch_flags<OPERAND>(TweediePower<T>(op.c), a, n_threads);
}

// log_cosh_loss's small-|r| pieces, polynomials in z = r^2 on z <= 0.64 resp. 0.3025 (the
// Chebyshev fits of docs/fit_log_cosh.py, evaluated by Estrin's scheme as vecmath.hpp's):
//   log cosh(a) = z / 2 + z^2 log_cosh_poly(z)   for a < 0.8,  error < 0.38 resp. 0.12 ulp
//   tanh(a) = a + a z tanh_poly(z)               for a < 0.55, error < 0.05 resp. 0.09 ulp
// (of the result, coefficients rounded; the series converge up to |a| = pi / 2, tanh's poles).
template <typename T>
FL_OP T log_cosh_poly(T z);

template <>
FL_OP float log_cosh_poly<float>(float z) {
    float z2 = z * z, z4 = z2 * z2;
    float b0 = vm::mad(z, 2.22220398e-2f, -8.33333317e-2f), b1 = vm::mad(z, 2.16363509e-3f, -6.74265077e-3f),
          b2 = vm::mad(z, 1.37232893e-4f, -6.63652915e-4f);
    return vm::mad(z4, b2, vm::mad(z2, b1, b0));
}

template <>
FL_OP double log_cosh_poly<double>(double z) {
    double z2 = z * z, z4 = z2 * z2, z8 = z4 * z4;
    double b0 = vm::mad(z, 2.2222222222206802e-2, -8.3333333333333299e-2);
    double b1 = vm::mad(z, 2.1869488197122612e-3, -6.7460317448784193e-3);
    double b2 = vm::mad(z, 2.5657589707119424e-4, -7.3860244379128232e-4);
    double b3 = vm::mad(z, 3.2675468657484581e-5, -9.0962633505700661e-5);
    double b4 = vm::mad(z, 3.9246751807751934e-6, -1.1685651773531035e-5);
    double b5 = vm::mad(z, 1.6272442965915467e-7, -1.0633081355543171e-6);
    double d0 = vm::mad(z2, b1, b0), d1 = vm::mad(z2, b3, b2), d2 = vm::mad(z2, b5, b4);
    return vm::mad(z8, d2, vm::mad(z4, d1, d0));
}

template <typename T>
FL_OP T tanh_poly(T z);

template <>
FL_OP float tanh_poly<float>(float z) {
    float z2 = z * z, z4 = z2 * z2;
    float b0 = vm::mad(z, 1.33331137e-1f, -3.3333332e-1f), b1 = vm::mad(z, 2.13093887e-2f, -5.39094288e-2f);
    return vm::mad(z4, -6.61022783e-3f, vm::mad(z2, b1, b0));
}

template <>
FL_OP double tanh_poly<double>(double z) {
    double z2 = z * z, z4 = z2 * z2, z8 = z4 * z4;
    double b0 = vm::mad(z, 1.3333333333332715e-1, -3.3333333333333333e-1);
    double b1 = vm::mad(z, 2.1869488493666942e-2, -5.3968253967434015e-2);
    double b2 = vm::mad(z, 3.5921103786890239e-3, -8.8632343978143548e-3);
    double b3 = vm::mad(z, 5.8893605200740578e-4, -1.455661830100716e-3);
    double b4 = vm::mad(z, 8.5113136855776715e-5, -2.3463474108872371e-4);
    double d0 = vm::mad(z2, b1, b0), d1 = vm::mad(z2, b3, b2), d2 = vm::mad(z2, -2.0602765376366342e-5, b4);
    return vm::mad(z8, d2, vm::mad(z4, d1, d0));
}

template <typename T>
struct LogCosh {
    // Any real r = x - y; loss log(cosh r), grad tanh(r), hess sech(r)^2 = 1 - tanh(r)^2.
    // No overflow at any residual (cosh itself overflows beyond |r| = 89 resp. 710), and an
    // infinite r (x - y overflowing) gives inf, +-1, 0. With a = |r| and u = exp(-2a) <= 1:
    //   loss: a < 0.8:  z/2 + z^2 P(z), z = a^2 (the series: no cancellation, tiny a gives a^2/2)
    //         a >= 0.8: (a - log 2) + log1p(u), log 2 split in ln2_hi + ln2_lo (a - ln2_hi is
    //                   exact near a = 1, and log1p(u) < (a - log 2) + log1p(u) there)
    //   grad: a < 0.55: a + a z Q(z);  a >= 0.55: 1 - 2u / (1 + u) (2u / (1 + u) <= 1/2)
    //   hess: a < 0.55: 1 - tanh^2 (tanh^2 <= 1/4);  a >= 0.55: 4u / (1 + u (2 + u)): its
    //         rounding of u weighs (1 - u) / (1 + u) < 1; it underflows gracefully to 0
    //         (a > 52 resp. 373), never 0 * inf or inf / inf.
    // The residual's rounding is corrected to first order: x - y = r + r_lo exactly (TwoSum),
    // |x - y| = a + da, loss + tanh da, grad + hess da, hess - 2 tanh hess da. The Hessian's
    // relative condition number is 2 a tanh(a): without it a residual of 40 would cost ~40 ulp.
    // Measured against mpmath (tests/numerics): loss 1.6, grad 1.35, hess 2.2 ulp.
    static constexpr bool heavy = true;
    explicit LogCosh(const double*) {}
    FL_OP void operator()(T x, T y, T, T& l, T& g, T& h) const {
        using B = vm::Bits<T>;
        T r = x - y, a = std::abs(r);
        T rb = r - x, r_lo = (x - (r - rb)) + (-y - rb);  // TwoSum; NaN when x - y overflows
        T da = r < T(0) ? -r_lo : r_lo;
        da = std::abs(da) < T(1) ? da : T(0);  // (|r_lo| <= ulp(r) / 2: only NaN is cut)
        T u = vm::exp_nonpos(-(a + a));
        T w = T(1) + u, inv = T(1) / w;
        T z = a * a;  // inf for huge a: the polynomial pieces are then not selected
        T l_small = vm::mad(z * z, log_cosh_poly(z), z * T(0.5));
        T l_large = (a - T(B::ln2_hi)) + (vm::log1p_unit(u, inv) - T(B::ln2_lo));
        T l0 = a < T(0.8) ? l_small : l_large;
        T th_small = vm::mad(a * z, tanh_poly(z), a);
        T th_large = T(1) - (u + u) * inv;
        bool small = a < T(0.55);
        T th = small ? th_small : th_large;
        T h_small = vm::mad(-th_small, th_small, T(1));
        T h_large = (T(4) * u) / vm::mad(u, T(2) + u, T(1));
        T h0 = small ? h_small : h_large;
        l = vm::mad(th, da, l0);
        T g0 = vm::mad(h0, da, th);
        g = r < T(0) ? -g0 : g0;  // NaN r: NaN
        h = vm::mad(T(-2) * th * h0, da, h0);
    }
};

template <typename T>
struct PseudoHuber {
    // Any real r = x - y, delta > 0 finite: loss delta^2 (sqrt(1 + z^2) - 1), z = r / delta,
    // grad r / sqrt(1 + z^2), hess (1 + z^2)^(-3/2). z itself is never formed (it overflows for
    // huge r or tiny delta): with a = |r|, m = min(a, delta) / max(a, delta) <= 1 (z or 1 / z,
    // one division) and k = sqrt(1 + m^2) in [1, sqrt 2] (no overflow, no underflow that
    // matters: 1 + m^2 >= 1),
    //   a <= delta (m = z, s = sqrt(1 + z^2) = k):
    //     loss a * (a / (k + 1))          (delta^2 (s - 1) = r^2 / (s + 1): no cancellation,
    //                                      tiny r gives r^2 / 2, underflowing gracefully)
    //     grad r / k,  hess 1 / (k (1 + m^2))
    //   a > delta (m = 1 / z, s = k / m):
    //     loss a * (delta / (k + m))      (the same r^2 / (s + 1), times m / m: all terms
    //                                      positive, finite wherever the loss is, ~ delta a)
    //     grad +-delta / k,  hess m^3 / (k (1 + m^2))  (1 / s^3 without s^3: underflows to 0,
    //                                      never inf / inf)
    // i.e. loss a * (min(a, delta) / (k + c)), c = 1 or m; |grad| = min(a, delta) / k.
    // No cancellation anywhere: every operation adds or multiplies positive numbers.
    // r = +-inf gives inf, +-delta, 0; NaN gives NaN.
    // The residual's rounding is corrected to first order (as LogCosh): x - y = r + r_lo
    // exactly (TwoSum), |x - y| = a + da: loss + |grad| da, |grad| + hess da, and hess times
    // (1 - 3 da a / (delta^2 + a^2)) = (1 - 3 (c' da / max(a, delta)) / (1 + m^2)), c' = m
    // (a <= delta) or 1: the Hessian's condition number in a is 3 a^2 / (delta^2 + a^2) <= 3.
    // Plain IEEE operations only (no vm::mad): the same bits at every SIMD level.
    // delta is T(delta): in float32 a delta below half its smallest subnormal is 0 (then the
    // exact loss, gradient and Hessian round to 0 wherever r != 0, and 1 is the Hessian at
    // r == 0: max(a, delta) = 0 is replaced by 1 in m's division, no 0 / 0), one beyond its
    // maximum is inf (the limit r^2 / 2, gradient r, Hessian 1). r = +-inf is selected last:
    // loss inf, gradient +-delta, Hessian 0 (no 0 * inf or inf / inf at delta = 0 or inf).
    // Measured against mpmath (tests/numerics): see the PSEUDO_HUBER record's ulp_bounds.
    T delta;
    explicit PseudoHuber(const double* p) : delta(T(p[0])) {}
    FL_OP void operator()(T x, T y, T, T& l, T& g, T& h) const {
        T r = x - y, a = std::abs(r);
        T rb = r - x, r_lo = (x - (r - rb)) + (-y - rb);  // TwoSum; NaN when x - y overflows
        T da = r < T(0) ? -r_lo : r_lo;
        da = std::abs(da) < std::numeric_limits<T>::infinity() ? da : T(0);  // inf or NaN r: none
        T lo = std::min(a, delta), hi = std::max(a, delta);  // NaN a: both NaN
        hi = hi > T(0) ? hi : T(1);  // a == delta == 0 (float32 delta underflowed): m = 0 (NaN stays: lo)
        T m = lo / hi, m2 = m * m, s2 = T(1) + m2;
        T k = std::sqrt(s2);
        T c = a <= delta ? T(1) : m;
        T l0 = a * (lo / (k + c));
        T g0 = lo / k;
        T h0 = (a <= delta ? T(1) : m2 * m) / (k * s2);
        T dh = (T(3) * (a <= delta ? m : T(1)) * da) / (hi * s2);  // tiny (<= 3 ulp): its rounding is moot
        T lc = l0 + g0 * da, gc = g0 + h0 * da, hc = h0 - h0 * dh;
        const T inf = std::numeric_limits<T>::infinity();
        l = a == inf ? a : lc;
        gc = a == inf ? delta : gc;
        g = r < T(0) ? -gc : gc;  // NaN r: NaN
        h = a == inf ? T(0) : hc;
    }
};

// a * b = hi + lo exactly (Dekker's product with Veltkamp's split, plain IEEE operations: the
// same bits at every SIMD level, FMA or not). b_hi + b_lo is b split by the caller (a constant
// split once); |a| must stay below max / 2^(digits/2 + 1) (callers select lo = 0 beyond).
template <typename T>
FL_OP T two_prod_lo(T a, T hi, T b_hi, T b_lo) {
    const T split = sizeof(T) == 4 ? T(4097) : T(134217729);  // 2^12 + 1, 2^27 + 1
    T c = a * split;
    T a_hi = c - (c - a), a_lo = a - a_hi;
    return ((a_hi * b_hi - hi) + a_lo * b_hi + a_hi * b_lo) + a_lo * b_lo;
}

template <typename T>
struct SigmoidFocal {
    // torchvision.ops.sigmoid_focal_loss: any real logit x, target y in [0, 1] (soft labels
    // allowed, not enforced), alpha <= 1 (negative: alpha_t = 1), gamma >= 0, finite.
    //   s = sigmoid(x), ce = (1 - y) softplus(x) + y softplus(-x)   (BCE with logits, p = 1)
    //   m = 1 - p_t = y s(-x) + (1 - y) s(x)    (no cancellation: two non-negative terms)
    //   loss = alpha_t ce m^gamma,  alpha_t = alpha y + (1 - alpha) (1 - y)
    // Derivatives (' = d/dx; s' = s s(-x)): ce' = s - y (BceLogits's gradient), ce'' =
    // s s(-x) (its Hessian), m' = (1 - 2y) s s(-x), m'' = m' (1 - 2s). With d = m' / m,
    // bounded (|d| <= 1: for y <= 1/2, m >= (1 - y) s, so |d| <= s(-x) (1 - 2y) / (1 - y)),
    //   loss'  = alpha_t m^gamma (ce' + gamma ce d)
    //   loss'' = alpha_t m^gamma (ce'' + 2 gamma ce' d + gamma ce d ((gamma - 1) d + 1 - 2s))
    // (m^(gamma-1) m' = m^gamma d, m^(gamma-2) m'^2 = m^gamma d^2, m^(gamma-1) m'' =
    // m^gamma d (1 - 2s)): no negative power of m, so m = 0 (a perfect prediction, or m
    // underflowing) is no 0 * inf. Hard labels take d exactly: y = 0: m = s(x), d = s(-x);
    // y = 1: m = s(-x), d = -s(x). ce d is 0 where d is 0 (x = +-inf: the exact limit,
    // ce ~ |x| against d ~ e^-|x|). 1 - 2s = s(-x) - s(x) = -+expm1(-|x|) / (1 + e^-|x|),
    // exact at small x (from the same range reduction as e = exp(-|x|)).
    // m^gamma = exp(gamma log m): for hard labels log m = -(A + log1p(e)) with A =
    // max(-+x, 0) exact, and gamma A is formed exactly (two_prod_lo): a logit of 40 costs no
    // 2^-18 relative as exp(rounded gamma log m) would (gamma times the rest of log m too).
    // Soft labels: log m = vm::log(m), |log m| <= -log(min(y, 1 - y)): m's rounding (and
    // log's) is scaled by gamma, the condition number of m^gamma (measured, gamma = 2: 3.6
    // resp. 5 ulp; gamma = 4.5: 8 resp. 13 ulp; hard labels: within BCE's bounds + 1).
    // gamma = 0 is BCE with logits (alpha < 0: alpha_t = 1) bit for bit: m^0 = 1 and the
    // gamma terms are selected away (0 * inf at m = 0, -0 + 0 would change bits); the BCE
    // part is BceLogits's operations with p = 1 (p y == y exactly).
    // alpha_t = 0 (alpha = 1 at y = 0, alpha = 0 at y = 1) gives 0 even at x = +-inf (a zero
    // coefficient, as BceLogits), NaN for NaN x.
    static constexpr bool heavy = true;
    // (flags are T values: the selects test T comparisons only, never && or || of bools,
    // which make GCC branch and leave the loop scalar, 15x slower)
    T alpha, one_m_alpha, weighted, gamma, gamma_m1, gamma_hi, gamma_lo, is_bce, bce_bits;
    // A gamma beyond float32's range is float32's maximum there (not inf: inf * 0 at m = 1).
    // Where m^gamma underflows to 0 the gradient and Hessian are 0 (their brackets, of size
    // gamma^2 at most, may overflow only for absurd gammas); the loss ce m^gamma is NaN there
    // only at x = +-inf with soft targets (inf * 0; from gamma ~ 250 in float32, 2000 in float64).
    static double gamma_of(const double* p) { return std::min(p[1], double(std::numeric_limits<T>::max())); }
    explicit SigmoidFocal(const double* p)
        : alpha(T(p[0])), one_m_alpha(T(1.0 - p[0])), weighted(p[0] >= 0 ? 1 : 0), gamma(T(gamma_of(p))),
          gamma_m1(T(gamma_of(p) - 1.0)), gamma_hi(split_hi(T(gamma_of(p)))),
          gamma_lo(T(gamma_of(p)) - split_hi(T(gamma_of(p)))),
          is_bce(p[1] == 0 ? 1 : 0), bce_bits(p[1] == 0 && p[0] < 0 ? 1 : 0) {}
    static T split_hi(T v) {
        const T split = sizeof(T) == 4 ? T(4097) : T(134217729);
        T c = v * split;  // gamma < max / split: parameters beyond 1e34 (float) are absurd but
        return std::isfinite(c) ? c - (c - v) : v;  // still get a finite split (lo = 0)
    }
    FL_OP void operator()(T x, T y, T p, T& l, T& g, T& h) const {
        const T big = sizeof(T) == 4 ? T(1e30) : T(1e300);  // |x| beyond: no split (lo = 0)
        const T scale_from = sizeof(T) == 4 ? T(64) : T(600);  // e = exp(-|x|) < 2^-92 resp. 2^-865
        T ax = std::abs(x);
        T e, e_up;
        T em1 = vm::expm1_exp_nonpos(-ax, e, e_up);
        // --- BCE with logits (BceLogits's math; p = 1: the focal loss has no pos_weight)
        T ce, ce1, ce2, inv, log_term, sig, sig_neg;
        bce_logits_terms(x, y, p, e, ce, ce1, ce2, inv, log_term, sig, sig_neg);
        bool pos = x >= T(0);
        // 1 - y rounds (y = 0.3 in float64); its error c_lo = (1 - neg) - y is exact for y in
        // [0, 1] (Sterbenz) and corrects, to first order, every quantity below that the
        // documented formula has with the exact 1 - y (BCE's own ce, ce' keep the rounding:
        // gamma = 0 with alpha < 0 is BCE bit for bit). 0 for hard labels.
        T neg = T(1) - y, c_lo = (T(1) - neg) - y;
        c_lo = std::abs(c_lo) < T(1) ? c_lo : T(0);  // targets outside [0, 1]: no correction
        T ce_c = vm::mad(c_lo, std::max(x, T(0)) + log_term, ce);
        ce_c = ce < std::numeric_limits<T>::infinity() ? ce_c : ce;  // inf (or NaN): no inf - inf
        ce_c = c_lo == T(0) ? ce : ce_c;
        ce_c = bce_bits != T(0) ? ce : ce_c;
        T ce1_c = bce_bits != T(0) ? ce1 : vm::mad(c_lo, sig, ce1);
        // The Hessian's terms are all multiples of sigmoid(-|x|) s(|x|), subnormal for large
        // |x| where ce ~ |x| multiplies them: they are formed scaled by 2^OFF there (from
        // e_up, normal) and the Hessian is scaled back in its last product (one rounding).
        bool scaled = ax > scale_from;
        T up = scaled ? vm::exp_nonpos_up<T>() : T(1), down = scaled ? vm::exp_nonpos_unscale<T>() : T(1);
        T small_s = (scaled ? e_up : e) * inv, large_s = inv * up;  // sigmoid(-+|x|) * up
        T sig_s = pos ? large_s : small_s, sig_neg_s = pos ? small_s : large_s;
        T ss_s = small_s * inv;  // s(x) s(-x) up
        // --- the modulating factor m = 1 - p_t, d = m' / m, m^gamma
        // m = v / (1 + e), v = y e + (1 - y) (x >= 0) or y + (1 - y) e (x < 0): one division
        // (y = 1/2 gives m = 1/2 exactly), and log m = log v - log1p(e) below
        T v = pos ? vm::mad(y, e, neg) : vm::mad(neg, e, y);
        v = vm::mad(c_lo, pos ? T(1) : e, v);
        T m = v / (T(1) + e);
        bool y0 = y == T(0), y1 = y == T(1);
        T d_s = y0 ? sig_neg_s : (y1 ? -sig_s : (T(1) - (y + y)) * ss_s / m);
        T d = d_s * down;
        T k_ln2_hi;  // log v = k ln2_hi + v_rest, k ln2_hi exact
        T v_rest = vm::log_parts(v, k_ln2_hi);
        T a_exact = y0 ? std::max(-x, T(0)) : (y1 ? std::max(x, T(0)) : -k_ln2_hi);
        T log_rest = y0 ? -log_term : (y1 ? -log_term : v_rest - log_term);
        T p1 = gamma * a_exact;
        T p2 = two_prod_lo(a_exact < big ? a_exact : T(0), p1, gamma_hi, gamma_lo);
        p2 = a_exact < big ? p2 : T(0);
        T q = gamma * log_rest;  // |log_rest| < 2^104 (m >= min(y, 1 - y) or log1p(e) <= log 2)
        T q2 = two_prod_lo(log_rest, q, gamma_hi, gamma_lo);
        T z = q - p1, zb = z - q;  // z + z_lo = q + q2 - p1 - p2 exactly (TwoSum)
        T z_lo = ((q - (z - zb)) + (-p1 - zb)) + (q2 - p2);
        z_lo = std::abs(z_lo) < T(1) ? z_lo : T(0);  // inf - inf at infinite x: no correction
        T mg_exp = vm::exp_nonpos(z);
        T mg = is_bce != T(0) ? T(1) : vm::mad(mg_exp, z_lo, mg_exp);
        // --- alpha_t
        T at = weighted != T(0) ? vm::mad(one_m_alpha, c_lo, alpha * y + one_m_alpha * neg) : T(1);
        T zero_or_nan = x == x ? T(0) : x;
        // --- loss, gradient, Hessian
        T cd = d == T(0) ? T(0) : ce_c * d;
        T t1 = is_bce != T(0) ? ce1_c : ce1_c + gamma * cd;
        T one_m_2s = pos ? em1 * inv : -(em1 * inv);
        T cd_s = d_s == T(0) ? T(0) : ce_c * d_s;
        T gd = gamma * (ce1_c * d_s);  // (gamma first would overflow for a huge gamma: inf * 0)
        T t2_s = ss_s + (gd + gd) + gamma * (cd_s * (gamma_m1 * d + one_m_2s));
        l = at == T(0) ? zero_or_nan : at * (ce_c * mg);
        g = at == T(0) ? zero_or_nan : at * (mg * t1);
        g = mg == T(0) ? T(0) : g;
        h = at == T(0) ? zero_or_nan : (bce_bits != T(0) ? ce2 : (at * (mg * (is_bce != T(0) ? ss_s : t2_s))) * down);
        h = mg == T(0) ? T(0) : h;
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
    // off by y d / s there). The gradient 1 - q (1 - c), q = y / s: see below (where
    // 1 - q cancels, y ~ x + eps, neither q's rounding nor the correction is lost).
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
            const T inv_c = c != T(0) ? vm::mad(-inv, c, inv) : inv;  // 1 / (x + eps)
            // Gradient 1 - y / (x + eps). Where y is within a factor 2 of s (q in [0.5, 2])
            // 1 - q cancels and q's rounding would dominate: there it is (x + eps - y) / (x +
            // eps) with s - y exact (Sterbenz) and d added (one rounding), a few ulp. Else
            // (1 - q) + q c, the correction only where 1 - q is finite (a count y = inf gives
            // 1 - q = -inf, which q c would turn into NaN where c > 0).
            const T far = c != T(0) && one_minus_q - one_minus_q == T(0) ? vm::mad(q, c, one_minus_q) : one_minus_q;
            g = q >= T(0.5) && q <= T(2) ? ((s - y) + d) * inv_c : far;
            h = (y * inv_c) * inv_c;
        }
        if constexpr (FULL) {
            const T ly = vm::log(y);
            const T stirling = vm::mad(y, ly, -y) + vm::mad(T(0.5), ly, T(0.91893853320467274178));
            const T sum = l + (y <= T(1) ? T(0) : stirling);
            // both NaN (x = -inf, y = inf): which payload an addition keeps depends on its
            // operand order, which the loss-only and fused loops may compile differently: one NaN
            l = sum == sum ? sum : std::numeric_limits<T>::quiet_NaN();
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
