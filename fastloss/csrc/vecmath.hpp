// Branch-free exp, log and log1p for float and double, written so that a loop calling them
// vectorises (libm calls do not), and with IEEE arithmetic only, so a lane of a vector loop
// and the scalar tail give the same bits. No -ffast-math: NaN and inf behave as in libm.
//
// exp(x): x = n ln2 + r with n = round(x / ln2) and |r| <= ln2/2 (Cody-Waite: ln2 split in
//   a high part exact in n * ln2_hi and a low part), exp(r) = 1 + r + r^2 q(r) with q a
//   polynomial (see exp_poly), and the result scaled by 2^n in two steps 2^(n/2) 2^(n - n/2)
//   so subnormal results and the overflow to inf come out right. Error about 1 ulp.
// log(m) for m > 0: m = 2^k f with f in [sqrt(2)/2, sqrt(2)), log f = 2 atanh(s) with
//   s = (f - 1) / (f + 1), |s| <= 0.1716 (f - 1 is exact by Sterbenz), by its odd series
//   (see log_series); log m = k ln2_hi + (k ln2_lo + log f). Subnormal m is scaled up first.
//   About 1 ulp.
// log1p(u): m = 1 + u rounded, with its rounding error d = u - (m - 1) (exact for m < 2^53),
//   log1p(u) = log(m) + d / m. About 1-2 ulp for every u > -1.
//
// Polynomials: minimax-like fits (Chebyshev, docs/fit_polynomials.py prints the coefficients
// and their error), two terms shorter than the Taylor series of the same accuracy for exp
// and three for log in double; evaluated by Estrin's scheme (pairs, then powers), because
// Horner's chain of dependent steps left the vector loops latency-bound.
//
// Fused multiply-add: every a * b + c of this file is mad(a, b, c). On the AVX2 and AVX-512
// levels it is one FMA instruction (one rounding): 20-30% faster float64 exp/log losses than
// a multiply and an add, and a little more accurate. The baseline level (x86-64 without
// FMA) multiplies and adds: its exp/log-based results can differ from the FMA levels' in the
// last bits, within the same accuracy bounds (tests/numerics/test_accuracy.py checks every level).
// An explicit call, not compiler contraction (-ffp-contract=off stays): which operations fuse
// is then fixed by this file, the same in vector loops, scalar tails, NAME and NAME_grad.
// (No include guard: included once per instruction-set namespace by isa.inc.)

namespace vm {

// Forced inline: a vectorised loop calling these must see their bodies.
#define FL_VM_INLINE inline __attribute__((always_inline))

// a * b + c: fused on the levels that have FMA (see the top of this file).
#if FL_LEVEL > 0
FL_VM_INLINE double mad(double a, double b, double c) { return __builtin_fma(a, b, c); }
FL_VM_INLINE float mad(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
#else
FL_VM_INLINE double mad(double a, double b, double c) { return a * b + c; }
FL_VM_INLINE float mad(float a, float b, float c) { return a * b + c; }
#endif

template <typename T>
struct Bits;

template <>
struct Bits<float> {
    using U = uint32_t;
    using I = int32_t;
    static constexpr int mantissa = 23, bias = 127;
    static constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to int
    static constexpr float exp_lo = -104.0f, exp_hi = 89.0f;  // beyond: 0 resp. inf
    static constexpr float min_normal = 1.17549435e-38f, subnormal_scale = 16777216.0f;  // 2^24
    static constexpr int subnormal_shift = 24;
    static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
};

template <>
struct Bits<double> {
    using U = uint64_t;
    using I = int64_t;
    static constexpr int mantissa = 52, bias = 1023;
    static constexpr double round_magic = 6755399441055744.0;  // 1.5 * 2^52
    static constexpr double exp_lo = -746.0, exp_hi = 710.0;
    static constexpr double min_normal = 2.2250738585072014e-308, subnormal_scale = 18014398509481984.0;  // 2^54
    static constexpr int subnormal_shift = 54;
    static constexpr double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
};

template <typename T>
FL_VM_INLINE typename Bits<T>::U to_bits(T x) {
    typename Bits<T>::U u;
    std::memcpy(&u, &x, sizeof x);
    return u;
}

template <typename T>
FL_VM_INLINE T from_bits(typename Bits<T>::U u) {
    T x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}

// 2^n for n in the normal exponent range.
template <typename T>
FL_VM_INLINE T pow2(typename Bits<T>::I n) {
    using U = typename Bits<T>::U;
    return from_bits<T>(U(n + Bits<T>::bias) << Bits<T>::mantissa);
}

template <typename T>
FL_VM_INLINE T exp_poly(T r);

// exp(r) = 1 + (r + r^2 q(r)) for |r| <= ln2/2, q(r) ~ (exp(r) - 1 - r) / r^2 within
// 2^-52.9 (double, 10 terms) resp. 2^-23.9 (float, 5 terms): r^2 q(r) <= 0.067 makes that
// <= 0.1 ulp of the result.
template <>
FL_VM_INLINE float exp_poly<float>(float r) {
    float r2 = r * r, r4 = r2 * r2;
    float a0 = mad(r, 0.16666576266288757f, 0.5f), a1 = mad(r, 0.008363178931176662f, 0.041666556149721146f);
    float q = mad(r4, 0.0013926184037700295f, mad(r2, a1, a0));
    return 1.0f + mad(r2, q, r);
}

template <>
FL_VM_INLINE double exp_poly<double>(double r) {
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    double a0 = mad(r, 0.16666666666666669, 0.5000000000000001);
    double a1 = mad(r, 0.008333333333330062, 0.04166666666662413);
    double a2 = mad(r, 0.00019841269863053618, 0.0013888888917213717);
    double a3 = mad(r, 2.7557268459997064e-06, 2.4801521295954376e-05);
    double a4 = mad(r, 2.510038549551032e-08, 2.7620088445409746e-07);
    double q = mad(r8, a4, mad(r4, mad(r2, a3, a2), mad(r2, a1, a0)));
    return 1.0 + mad(r2, q, r);
}

template <typename T>
FL_VM_INLINE T exp(T x) {
    using B = Bits<T>;
    using I = typename B::I;
    T xc = x < B::exp_lo ? B::exp_lo : (x > B::exp_hi ? B::exp_hi : x);  // NaN stays NaN
    T shifted = mad(xc, T(1.44269504088896340736), B::round_magic);
    T n = shifted - B::round_magic;  // round(x / ln2), exactly
    I k = I(to_bits(shifted) - to_bits(B::round_magic));
    T r = mad(-n, T(B::ln2_lo), mad(-n, T(B::ln2_hi), xc));  // n ln2_hi is exact
    I k1 = k / 2;
    return exp_poly(r) * pow2<T>(k1) * pow2<T>(k - k1);  // NaN x: NaN through r
}

// exp(x) into e (the bits of exp(x)) and exp(x) * d, returned, from one argument reduction:
// the product is ((p 2^k2) d) 2^k1 with p = exp(r) in [0.7, 1.42], k1 = k / 2 (truncated) and
// k2 = k - k1 (so p 2^k2 <= 0.71 for k < 0, and for k >= 0 every intermediate is at most the
// result: no spurious overflow), so it does not lose the bits exp(x) loses where it is subnormal (KL
// divergence's exp(y) (y - x) for a log-target y < -87 in float32: exp(y) keeps a few bits,
// the product may be normal): one rounding of the product, one more only where the result
// is subnormal; about 1.5 ulp. e is exp(x) bit for bit (the same single rounding of p 2^k).
// Beyond [exp_lo, exp_hi] exp(x) is 0 or inf and the product is e * d, but d itself for a
// finite x where e * d is NaN: an infinite d below exp_lo (exp(x) > 0 there), d == 0 above.
template <typename T>
FL_VM_INLINE T exp_times(T x, T d, T& e) {
    using B = Bits<T>;
    using I = typename B::I;
    T xc = x < B::exp_lo ? B::exp_lo : (x > B::exp_hi ? B::exp_hi : x);  // NaN stays NaN
    T shifted = mad(xc, T(1.44269504088896340736), B::round_magic);
    T n = shifted - B::round_magic;
    I k = I(to_bits(shifted) - to_bits(B::round_magic));
    T r = mad(-n, T(B::ln2_lo), mad(-n, T(B::ln2_hi), xc));
    I k1 = k / 2;
    T p = exp_poly(r), s1 = pow2<T>(k1), s2 = pow2<T>(k - k1);
    e = p * s1 * s2;  // as exp(x)
    T product = ((p * s2) * d) * s1;
    // outside: e * d, but d itself where that is NaN for a finite x (0 * inf below exp_lo,
    // inf * 0 above exp_hi, whose exact products are inf and 0); selects on T values only
    T ed = e * d, finite_x = x - x == T(0) ? d : ed;
    T outside = ed != ed ? finite_x : ed;
    return xc == x ? product : outside;
}

// exp(x) for x <= 0 or NaN (BCE with logits: exp(-|x|); softmax: exp(x - max)): the same
// bits as exp(x), with one clamp and one scaling step: p 2^(k + OFF) is exact (a normal
// number for every k >= exp_lo / ln2), and the multiplication by 2^-OFF rounds once, as
// exp's two-step scaling does.
template <typename T>
FL_VM_INLINE T exp_nonpos(T x) {
    using B = Bits<T>;
    using I = typename B::I;
    constexpr int off = sizeof(T) == 4 ? 60 : 600;
    const T unscale = sizeof(T) == 4 ? T(8.67361737988403547206e-19) : T(2.40991986510288411774e-181);  // 2^-OFF
    T xc = x < B::exp_lo ? B::exp_lo : x;  // NaN stays NaN
    T shifted = mad(xc, T(1.44269504088896340736), B::round_magic);
    T n = shifted - B::round_magic;
    I k = I(to_bits(shifted) - to_bits(B::round_magic));
    T r = mad(-n, T(B::ln2_lo), mad(-n, T(B::ln2_hi), xc));  // n ln2_hi is exact
    return exp_poly(r) * pow2<T>(k + off) * unscale;
}

template <typename T>
FL_VM_INLINE T log_series(T s);  // 2 atanh(s) = log((1 + s) / (1 - s)) for |s| <= 0.1716

// 2 atanh(s) = 2s + 2s z p(z), z = s^2 <= 0.02944, p(z) ~ (atanh(s) / s - 1) / z within
// 2^-52.5 (double, 7 terms) resp. 2^-30.7 (float, 4 terms): z p(z) <= 0.01 makes that
// < 0.05 ulp of the result.
template <>
FL_VM_INLINE float log_series<float>(float s) {
    float z = s * s, z2 = z * z;
    float p = mad(z2, mad(z, 0.11665291339159012f, 0.14275407791137695f), mad(z, 0.2000006139278412f, 0.3333333432674408f));
    float s2 = 2.0f * s;
    return mad(s2 * z, p, s2);
}

template <>
FL_VM_INLINE double log_series<double>(double s) {
    double z = s * s, z2 = z * z, z4 = z2 * z2;
    double a0 = mad(z, 0.19999999999949722, 0.3333333333333335);
    double a1 = mad(z, 0.11111105565129939, 0.14285714313001635);
    double a2 = mad(z, 0.07665855309105386, 0.09091444727837474);
    double p = mad(z4, mad(z2, 0.07308292712444311, a2), mad(z2, a1, a0));
    double s2 = 2.0 * s;
    return mad(s2 * z, p, s2);
}

// log(m) + d for finite m > 0 (d a small correction already divided by m). SUB = false:
// the caller guarantees m is normal (no subnormal scaling step).
template <typename T, bool SUB = true>
FL_VM_INLINE T log_core(T m, T d) {
    using B = Bits<T>;
    using U = typename B::U;
    using I = typename B::I;
    bool sub = SUB && m < B::min_normal;
    T mm = sub ? m * B::subnormal_scale : m;
    U bits = to_bits(mm);
    I k = I(bits >> B::mantissa) - B::bias - (sub ? B::subnormal_shift : 0);
    const U mant_mask = (U(1) << B::mantissa) - 1;
    T f = from_bits<T>((bits & mant_mask) | (U(B::bias) << B::mantissa));  // [1, 2)
    bool big = f > T(1.41421356237309504880);
    T f_half = f * T(0.5);
    f = big ? f_half : f;
    k = big ? k + 1 : k;
    T s = (f - T(1)) / (f + T(1));
    T kf = T(int32_t(k));  // exact (|k| < 1100): int32 to T vectorises at every level, int64 to double needs AVX-512
    return mad(kf, T(B::ln2_hi), mad(kf, T(B::ln2_lo), log_series(s) + d));
}

template <typename T>
FL_VM_INLINE T log(T x) {
    T safe = x > T(0) && x < std::numeric_limits<T>::infinity() ? x : T(1);
    T result = log_core(safe, T(0));
    T special = x == T(0) ? -std::numeric_limits<T>::infinity()
                          : (x > T(0) ? x : std::numeric_limits<T>::quiet_NaN());  // inf, NaN
    special = x != x ? x : special;
    return safe == x ? result : special;
}

// log1p(u) for u in [0, 1] (NaN passes through), given inv = 1 / (1 + u) as the caller
// already has it (BCE with logits: u = exp(-|x|), inv for the sigmoid). m = 1 + u is in
// [1, 2], so m = 2^k f with k in {0, 1} needs no exponent extraction and no special cases.
template <typename T>
FL_VM_INLINE T log1p_unit(T u, T inv) {
    using B = Bits<T>;
    T m = T(1) + u;
    T d = (u - (m - T(1))) * inv;  // the rounding error of 1 + u, divided by m
    bool big = m > T(1.41421356237309504880);
    T f = big ? m * T(0.5) : m;
    T k = big ? T(1) : T(0);
    T s = (f - T(1)) / (f + T(1));
    return mad(k, T(B::ln2_hi), mad(k, T(B::ln2_lo), log_series(s) + d));
}

template <typename T>
FL_VM_INLINE T log1p(T u) {
    T m = T(1) + u;
    bool regular = m > T(0) && m < std::numeric_limits<T>::infinity();
    T safe_m = regular ? m : T(1);
    T d = regular ? (u - (m - T(1))) / safe_m : T(0);
    T result = log_core(safe_m, d);
    T special = m == T(0) ? -std::numeric_limits<T>::infinity()
                          : (m > T(0) ? m : std::numeric_limits<T>::quiet_NaN());
    special = u != u ? u : special;
    return regular ? result : special;
}

// log(m (1 + c)) = log(m) + c to first order, for any m and a tiny relative correction
// |c| <= 2^-p (the dropped c^2 / 2 is below 2^-2p): the log of an exact sum a + b given its
// rounded value m = fl(a + b) and c = d / m, d = a + b - m its rounding error (TwoSum), to
// about 1 ulp (as log) where a + b rounds (Poisson NLL's log(x + eps) near 1). m = 0, inf,
// NaN or negative: log(m) (-inf, inf, NaN), c ignored.
template <typename T>
FL_VM_INLINE T log_rel(T m, T c) {
    T safe = m > T(0) && m < std::numeric_limits<T>::infinity() ? m : T(1);
    T result = log_core(safe, c);
    T special = m == T(0) ? -std::numeric_limits<T>::infinity()
                          : (m > T(0) ? m : std::numeric_limits<T>::quiet_NaN());  // inf, NaN
    special = m != m ? m : special;
    return safe == m ? result : special;
}

// Binary cross-entropy's two logs, for x in [0, 1] (the front layer validates the domain),
// each clamped at -100 as PyTorch does: no NaN, inf or negative-argument cases to select.
// max(log(x), -100): in double every x below 2^-200 gives -100 (log(2^-200) = -138.6), so
// x is raised to 2^-200 and never needs the subnormal step; in float, 0 is raised to the
// smallest subnormal (log = -103.3).
template <typename T>
FL_VM_INLINE T log_clamped_unit(T x) {
    if (sizeof(T) == 8) {
        const T floor = T(6.22301527786114170714e-61);  // 2^-200
        return std::max(log_core<T, false>(x < floor ? floor : x, T(0)), T(-100));
    }
    const T floor = std::numeric_limits<T>::denorm_min();
    return std::max(log_core<T, true>(x < floor ? floor : x, T(0)), T(-100));
}

// max(log1p(-x), -100) for x in [0, 1]: m = 1 - x is 0 (x = 1: -100) or normal, and its
// rounding error e = -x - (m - 1) is exact, and zero for x >= 1/2 (1 - x is exact there).
// log1p(-x) = log(m) + e / m, and e / m only needs a few correct bits: 1 / m = 1 / (1 - x)
// is taken as 1 + x + x^2 + x^3 + x^4 (relative error x^5), which moves the result by at
// most x^4 / (1 - x) 2^-54 relative (< 0.07 ulp at x = 1/2), and spares a division: in
// float64 the divider is the bottleneck of this loop (4 divisions per element; each costs
// about 0.35 ns per element on the Zen 4).
template <typename T>
FL_VM_INLINE T log1m_clamped_unit(T x) {
    T m = T(1) - x;
    T mc = m == T(0) ? T(1) : m;
    T x2 = x * x, p1 = T(1) + x;
    T d = (-x - (mc - T(1))) * (p1 + x2 * (p1 + x2));
    T r = std::max(log_core<T, false>(mc, d), T(-100));
    return m == T(0) ? T(-100) : r;
}

// ---------------------------------------------------------------------------------------
// Deviance helpers (poisson_deviance, gamma_deviance, tweedie_deviance in losses.hpp):
// error-free transformations, log as an unevaluated sum, exp of an unevaluated sum, and
// e^z - 1 - z near 0. They let the deviances form mu^(2-p) = exp((2-p) x), y mu^(1-p) =
// exp((1-p) x + log y), y / mu = exp(log y - x) and u = x - log y with about 1 ulp, where a
// product (2-p) x or a difference log(y) - x rounded in T first would cost up to |x| ulp of
// the result (700 ulp at x = 700).

// s + e = a + b exactly, s = fl(a + b) (Knuth's TwoSum: any order of magnitude, no branch;
// finite a, b).
template <typename T>
FL_VM_INLINE void two_sum(T a, T b, T& s, T& e) {
    s = a + b;
    T bb = s - a;
    e = (a - (s - bb)) + (b - bb);
}

// p + e = a b exactly, p = fl(a b), for |a|, |b| < 2^(emax - 28) and |a b| far from the
// underflow. The FMA levels: one fused multiply-add; the baseline (no FMA): Dekker's product
// with Veltkamp's split (2^27 + 1 resp. 2^12 + 1); both exact, so the same p and e.
template <typename T>
FL_VM_INLINE void two_prod(T a, T b, T& p, T& e) {
    p = a * b;
#if FL_LEVEL > 0
    e = mad(a, b, -p);
#else
    const T split = sizeof(T) == 4 ? T(4097.0f) : T(134217729.0);
    T ca = split * a, a_hi = ca - (ca - a), a_lo = a - a_hi;
    T cb = split * b, b_hi = cb - (cb - b), b_lo = b - b_hi;
    e = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo;
#endif
}

// log(m) = hi + lo for finite m > 0, as log_core computes it but not summed: hi = k ln2_hi
// (exact: ln2_hi has 32 resp. 9 significant bits), lo = k ln2_lo + log f with
// f = m 2^-k in [sqrt(2)/2, sqrt(2)), |lo| <= 0.35 + |k| 2^-32. The pair carries log m with
// an absolute error of about 2^-54 (double; 2^-25 float: the error of log f, |log f| <= 0.35)
// whatever the size of log m, where log m rounded to T carries up to half an ulp of |log m|.
template <typename T>
FL_VM_INLINE void log_parts(T m, T& hi, T& lo) {
    using B = Bits<T>;
    using U = typename B::U;
    using I = typename B::I;
    bool sub = m < B::min_normal;
    T mm = sub ? m * B::subnormal_scale : m;
    U bits = to_bits(mm);
    I k = I(bits >> B::mantissa) - B::bias - (sub ? B::subnormal_shift : 0);
    const U mant_mask = (U(1) << B::mantissa) - 1;
    T f = from_bits<T>((bits & mant_mask) | (U(B::bias) << B::mantissa));  // [1, 2)
    bool big = f > T(1.41421356237309504880);
    T f_half = f * T(0.5);
    f = big ? f_half : f;
    k = big ? k + 1 : k;
    T s = (f - T(1)) / (f + T(1));
    T kf = T(int32_t(k));  // exact (|k| < 1100): int32 to T vectorises at every level, int64 to double needs AVX-512
    hi = kf * T(B::ln2_hi);
    lo = mad(kf, T(B::ln2_lo), log_series(s));
}

// e^(hi + lo) for an unevaluated sum hi + lo with |lo| <= 1 (lo may lie far below ulp(hi)),
// reduced as in exp above: n = round((hi + lo) / ln2), r = (hi - n ln2_hi - n ln2_lo) + lo,
// so lo enters the reduced argument unrounded by the size of hi; e^(hi + lo) = p 2^k with
// p = exp_poly(r). exp_sum_reduced returns p and k; scale_exp(m p, k) is m e^(hi + lo)
// rounded once (m p, then 2^(k/2) 2^(k - k/2), exact but for the last step), for a factor m
// with |log2 m| <= 60 (double) resp. 11 (float): the sum is clamped to [exp_lo - MARGIN,
// exp_hi + MARGIN] so that m e^(hi + lo) still reaches 0 and inf right (lo then dropped).
// NaN propagates (through r). exp_sum(hi, lo) = scale_exp(p, k): about 1 ulp.
template <typename T>
FL_VM_INLINE T exp_sum_reduced(T hi, T lo, typename Bits<T>::I& k) {
    using B = Bits<T>;
    using I = typename B::I;
    constexpr T margin = sizeof(T) == 4 ? T(8) : T(42);
    T s = hi + lo;
    T xc = s < B::exp_lo - margin ? B::exp_lo - margin : (s > B::exp_hi + margin ? B::exp_hi + margin : s);
    T h = xc == s ? hi : xc, l = xc == s ? lo : T(0);  // NaN: xc
    T shifted = mad(xc, T(1.44269504088896340736), B::round_magic);
    T n = shifted - B::round_magic;
    k = I(to_bits(shifted) - to_bits(B::round_magic));
    T r = mad(-n, T(B::ln2_lo), mad(-n, T(B::ln2_hi), h)) + l;
    return exp_poly(r);
}

template <typename T>
FL_VM_INLINE T scale_exp(T mp, typename Bits<T>::I k) {
    typename Bits<T>::I k1 = k / 2;
    return mp * pow2<T>(k1) * pow2<T>(k - k1);
}

template <typename T>
FL_VM_INLINE T exp_sum(T hi, T lo) {
    typename Bits<T>::I k;
    T p = exp_sum_reduced(hi, lo, k);
    return scale_exp(p, k);
}

// e^z - 1 - z for z in [-1, 2] (only there): z^2 / 2 + z^3 h(z) with h(z) =
// (e^z - 1 - z - z^2 / 2) / z^3 a polynomial fit on [-1, 2] (Chebyshev, docs/fit_polynomials.py)
// within 2^-52.7 (double, 15 terms) resp. 2^-24.1 (float, 8 terms) of h in [0.13, 0.27]; z^2
// exact (two_prod), so z^2 / 2 + (the rest) rounds once and z^3 h, at most 0.55 of the result,
// brings its own few roundings scaled down: about 1 ulp, 0 at z = 0, no cancellation for tiny
// z (the deviances near their optimum). Estrin's scheme.
template <typename T>
FL_VM_INLINE T expm1mx_poly(T z);

template <>
FL_VM_INLINE float expm1mx_poly<float>(float z) {
    float z2 = z * z, z4 = z2 * z2;
    float a0 = mad(z, 0.04166664928197861f, 0.1666666716337204f);
    float a1 = mad(z, 0.001388994394801557f, 0.008333228528499603f);
    float a2 = mad(z, 2.4585609935456887e-05f, 0.00019864410569425672f);
    float a3 = mad(z, 4.1131835359919933e-07f, 2.6479092412046157e-06f);
    float h = mad(z4, mad(z2, a3, a2), mad(z2, a1, a0));
    float zz, ze;
    two_prod(z, z, zz, ze);
    return mad(0.5f, zz, mad(zz * z, h, 0.5f * ze));
}

template <>
FL_VM_INLINE double expm1mx_poly<double>(double z) {
    double z2 = z * z, z4 = z2 * z2, z8 = z4 * z4;
    double a0 = mad(z, 0.04166666666666669, 0.16666666666666669);
    double a1 = mad(z, 0.001388888888888483, 0.008333333333333);
    double a2 = mad(z, 2.4801587302730796e-05, 0.0001984126984158759);
    double a3 = mad(z, 2.7557319383758214e-07, 2.755731910950915e-06);
    double a4 = mad(z, 2.087666266291875e-09, 2.5052126993383404e-08);
    double a5 = mad(z, 1.1482141697185745e-11, 1.6057780024800614e-10);
    double a6 = mad(z, 4.362081398048636e-14, 7.657870645960433e-13);
    double b0 = mad(z4, mad(z2, a3, a2), mad(z2, a1, a0));
    double b1 = mad(z4, mad(z2, 4.376224227947684e-15, a6), mad(z2, a5, a4));
    double h = mad(z8, b1, b0), zz, ze;
    two_prod(z, z, zz, ze);
    return mad(0.5, zz, mad(zz * z, h, 0.5 * ze));
}
// --------------------------------------------------------------------- end deviance helpers

// ---- expm1 with exp, for log_cosh_loss and sigmoid_focal_loss (separate from any other
// expm1 of this file: its own name, expm1_exp_nonpos).
// expm1(x) and exp(x) for x <= 0 or NaN from one range reduction x = n ln2 + r (as
// exp_nonpos): p = exp(r) - 1 = r + r^2 q(r) with exp_poly's q (no cancellation: the 1 is
// never added), exp(x) = (1 + p) 2^n -- bitwise exp_nonpos(x), the same operations -- and
// expm1(x) = 2^n p + (2^n - 1): 2^n p is exact and 2^n - 1 is exact for n >= -(digits + 2)
// (n is clamped there: below, 2^n (1 + p) < 2^-(digits + 1) rounds away and -1 is the
// correctly rounded result). One rounding in the sum; |2^n p| / |expm1(x)| <= 0.71 (n = -1,
// r = ln2 / 2), so p's own error (~0.5 ulp: one mad) weighs at most 0.71: about 1.2 ulp
// (measured: docs? no, tests/numerics through log_cosh_loss and sigmoid_focal_loss).
template <typename T>
FL_VM_INLINE T expm1_poly(T r);  // exp_poly(r) - 1 without the rounding of 1 + ...

template <>
FL_VM_INLINE float expm1_poly<float>(float r) {  // exp_poly<float>'s operations, minus the 1
    float r2 = r * r, r4 = r2 * r2;
    float a0 = mad(r, 0.16666576266288757f, 0.5f), a1 = mad(r, 0.008363178931176662f, 0.041666556149721146f);
    float q = mad(r4, 0.0013926184037700295f, mad(r2, a1, a0));
    return mad(r2, q, r);
}

template <>
FL_VM_INLINE double expm1_poly<double>(double r) {  // exp_poly<double>'s operations, minus the 1
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    double a0 = mad(r, 0.16666666666666669, 0.5000000000000001);
    double a1 = mad(r, 0.008333333333330062, 0.04166666666662413);
    double a2 = mad(r, 0.00019841269863053618, 0.0013888888917213717);
    double a3 = mad(r, 2.7557268459997064e-06, 2.4801521295954376e-05);
    double a4 = mad(r, 2.510038549551032e-08, 2.7620088445409746e-07);
    double q = mad(r8, a4, mad(r4, mad(r2, a3, a2), mad(r2, a1, a0)));
    return mad(r2, q, r);
}

// 2^OFF and 2^-OFF of exp_nonpos's scaling step (OFF = 60 resp. 600).
template <typename T>
FL_VM_INLINE T exp_nonpos_up() { return sizeof(T) == 4 ? T(1152921504606846976.0) : T(4.149515568880993e+180); }
template <typename T>
FL_VM_INLINE T exp_nonpos_unscale() {
    return sizeof(T) == 4 ? T(8.67361737988403547206e-19) : T(2.40991986510288411774e-181);
}

// Returns expm1(x), sets e = exp(x) (bitwise exp_nonpos(x): e = e_up * exp_nonpos_unscale())
// and e_up = exp(x) 2^OFF (normal for x >= exp_lo: not rounded to the subnormal grid where
// e is subnormal; 0 below exp_lo, as e); x <= 0 or NaN (-inf: -1, 0, 0).
template <typename T>
FL_VM_INLINE T expm1_exp_nonpos(T x, T& e, T& e_up) {
    using B = Bits<T>;
    using I = typename B::I;
    constexpr int off = sizeof(T) == 4 ? 60 : 600;
    constexpr I low = -(B::mantissa + 3);  // 2^n - 1 and 2^n p exact down to here
    T xc = x < B::exp_lo ? B::exp_lo : x;  // NaN stays NaN
    T shifted = mad(xc, T(1.44269504088896340736), B::round_magic);
    T n = shifted - B::round_magic;
    I k = I(to_bits(shifted) - to_bits(B::round_magic));
    T r = mad(-n, T(B::ln2_lo), mad(-n, T(B::ln2_hi), xc));  // n ln2_hi is exact
    T p = expm1_poly(r);
    T up = (T(1) + p) * pow2<T>(k + off);
    e = up * exp_nonpos_unscale<T>();
    e_up = x < B::exp_lo ? T(0) : up;  // below exp_lo: exp(x) 2^OFF < 2^-89 resp. 2^-476
    T scale = pow2<T>(k < low ? low : k);
    return scale * p + (scale - T(1));
}

// log(m) = k ln2_hi + rest for m > 0 (subnormal included; NaN: rest NaN), as log_core
// computes it but unsummed: k ln2_hi is exact and rest = k ln2_lo + log(f), |rest| <= 0.35 +
// |k| ln2_lo, keeps its own precision (about 2^-(digits+1) absolute where log(m) itself
// would round at ulp(log m), up to 4x coarser for m in [2^-3, 2^-1]): for exp(g log m).
template <typename T>
FL_VM_INLINE T log_parts(T m, T& k_ln2_hi) {
    using B = Bits<T>;
    using U = typename B::U;
    using I = typename B::I;
    // (selects on T comparisons only, no && or ||: those make GCC branch, and the loop scalar)
    T safe = m > T(0) ? m : T(1);
    safe = safe < std::numeric_limits<T>::infinity() ? safe : T(1);
    bool sub = safe < B::min_normal;
    T mm = sub ? safe * B::subnormal_scale : safe;
    U bits = to_bits(mm);
    I k = I(bits >> B::mantissa) - B::bias - (sub ? B::subnormal_shift : 0);
    const U mant_mask = (U(1) << B::mantissa) - 1;
    T f = from_bits<T>((bits & mant_mask) | (U(B::bias) << B::mantissa));  // [1, 2)
    bool big = f > T(1.41421356237309504880);
    T f_half = f * T(0.5);
    f = big ? f_half : f;
    k = big ? k + 1 : k;
    T s = (f - T(1)) / (f + T(1));
    T kf = T(int32_t(k));  // exact (|k| < 1100): int32 to T vectorises at every level, int64 to double needs AVX-512
    k_ln2_hi = kf * T(B::ln2_hi);
    T rest = mad(kf, T(B::ln2_lo), log_series(s));
    T special = m == T(0) ? -std::numeric_limits<T>::infinity()
                          : (m > T(0) ? m : std::numeric_limits<T>::quiet_NaN());  // 0: -inf, inf: inf
    special = m != m ? m : special;  // NaN: NaN
    return safe == m ? rest : special;
}

#undef FL_VM_INLINE
}  // namespace vm
