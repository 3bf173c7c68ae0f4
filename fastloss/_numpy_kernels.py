"""The pure NumPy backend: the fallback, the readable reference, the benchmarks' baseline.

The public functions computed with it are ``fastloss.numpy_backend``'s (whatever backend
``fastloss`` itself uses). This module imports nothing of fastloss: the front layer
(``fastloss._api``) calls it, never the other way round.

Adding a loss: one kernel here, registered under the registry's name with ``@elementwise``
(per-element math; the weights, reductions and gradient scale are the driver's) and its
second derivative with ``@hessian``, or ``@kernel`` (a class loss: the whole call, Hessian
included). A registry kernel without one is an ImportError naming it
(``fastloss._api.make_public_api`` checks every backend).

The backend contract
--------------------
A backend module has ``NAME``, ``KERNELS`` (kernel name -> function), ``float64_sum`` and
three scanners used by the front layer (``fastloss._api``) before anything is computed:

``float64_sum(a)``                    the float64 sum of 1-D ``a`` (an elementwise weight's
                                      "mean" divisor)

``first_outside_unit(a, n_threads)``  the first value of ``a`` not in [0, 1] (NaN included), or None
``first_non_sign(a, n_threads)``      the first value of ``a`` that is not -1 or +1, or None
``first_negative(a, n_threads, strict)``  the first value of ``a`` below 0 (``strict``: at or
                                      below 0), NaN included, or None
``class_target_stats(t, C, ignore_index, w)``
                                ``(bad, target_weight)``: the first index of ``t`` outside
                                [0, C) that is not ``ignore_index`` (or None), and the sum of
                                ``w[t]`` (count when ``w`` is None) over non-ignored targets

Every kernel is called as ``kernel(x, t, w, pw, params, want_none, grad_scale, out, n_threads,
hessian=None)`` and returns ``(total, loss, grad)``, or ``(total, loss, grad, hess)`` when
``hessian`` is given. The front layer guarantees:

* elementwise kernels: ``x`` and ``t`` are 1-D C-contiguous arrays of the compute dtype
  (float32 or float64) and equal length n; ``w`` and ``pw`` (pos_weight) are None or 1-D
  C-contiguous arrays of that dtype whose length P divides n, element i being weighted by
  ``w[i % P]``; ``params`` holds the loss's scalar parameters in registry order.
* class kernels: ``x`` is ``(N, C, K)`` C-contiguous (K = product of the extra dims); ``t`` is
  ``(N, K)`` int64 class indices, already validated (or, for ``cross_entropy_probs``, class
  probabilities shaped like ``x``); ``w`` is None or ``(C,)``; ``params`` is
  ``(ignore_index, *registry params)`` for losses with ``ignore_index``.
* ``want_none``: return the weighted per-term losses as ``loss`` (total None); otherwise
  ``total`` is the float64 sum of those losses and ``loss`` None.
* ``grad_scale``: None for no gradient; else the gradient of the summed weighted loss,
  times ``grad_scale``, is written into ``out`` (C-contiguous, of ``x``'s shape, possibly
  ``x`` itself) or into a new array when ``out`` is None, and returned as ``grad``.
* ``n_threads`` >= 1 (this backend runs on one thread and ignores it).
* ``hessian``: None, or ``(hess_out, c)`` with a gradient asked for: the diagonal of the
  Hessian of the summed weighted loss, times ``grad_scale``, goes into ``hess_out`` (as
  ``out``; not overlapping it) or a new array; ``c > 0`` replaces every term's second
  derivative by ``c`` (the constant policy), ``c == 0`` is the exact Hessian.
"""

from __future__ import annotations

import math

import numpy as np

NAME = "numpy"

KERNELS: dict = {}  # kernel name (fastloss._registry.KERNEL_NAMES) -> kernel
HESSIANS: dict = {}  # elementwise kernel name -> its second derivative (@hessian)


def _quiet(kernel):
    """No NumPy floating-point warnings: inf and NaN are results here, as in PyTorch."""

    def quiet_kernel(*args):
        with np.errstate(all="ignore"):
            return kernel(*args)

    return quiet_kernel


def kernel(name):
    """Register a whole kernel (the backend contract's call) under the registry name ``name``."""

    def register(fn):
        if name in KERNELS:
            raise ValueError(f"two NumPy kernels for {name!r}")
        KERNELS[name] = _quiet(fn)
        return fn

    return register


def hessian(name):
    """Register ``fn(x, t, pw, *params) -> h``, the second derivative of the elementwise loss
    ``name`` per element (unweighted, whole: no factor left out)."""

    def register(fn):
        if name in HESSIANS:
            raise ValueError(f"two NumPy Hessians for {name!r}")
        HESSIANS[name] = fn
        return fn

    return register


def elementwise(name, grad_factor=1, flat_zero=False):
    """Register the per-element math ``fn(x, t, pw, *params, want_grad) -> (loss, grad)`` of
    the elementwise loss ``name``; the traits are those of its C++ functor (losses.hpp):
    ``grad_factor`` a constant factor left out of grad (multiplied in last), ``flat_zero`` a
    zero gradient that stays 0 whatever the weight."""

    def register(fn):
        kernel(name)(_elementwise_kernel(name, fn, grad_factor, flat_zero))
        return fn

    return register


# --------------------------------------------------------------------------- scanners


def _first(a, bad):
    idx = np.flatnonzero(bad)
    return a.reshape(-1)[idx[0]].item() if idx.size else None


def first_outside_unit(a, n_threads):
    return _first(a, ~((a >= 0) & (a <= 1)))


def first_non_sign(a, n_threads):
    return _first(a, (a != 1) & (a != -1))


def first_negative(a, n_threads, strict):
    return _first(a, ~(a > 0) if strict else ~(a >= 0))


def float64_sum(a):
    with np.errstate(all="ignore"):  # an infinite weight or an overflowing sum: inf
        return float(np.sum(a, dtype=np.float64))


def class_target_stats(t, n_classes, ignore_index, w):
    t = t.reshape(-1)
    kept = t if ignore_index is None else t[t != ignore_index]
    bad = _first(kept, (kept < 0) | (kept >= n_classes))
    if bad is not None:
        return bad, 0.0
    if w is None:
        return None, float(kept.size)
    return None, float(np.sum(w[kept], dtype=np.float64))


def _elementwise_kernel(name, math_fn, factor, flat_zero):
    def kernel(x, t, w, pw, params, want_none, grad_scale, out, n_threads, hessian=None):
        want_grad = grad_scale is not None
        # View the flat data as rows of the weights' period so the weights broadcast.
        period = math.lcm(*(a.size for a in (w, pw) if a is not None)) if (w is not None or pw is not None) else 1
        rows = (-1, period) if x.size else (0, 1)
        x2, t2 = x.reshape(rows), t.reshape(rows)
        w2 = None if w is None else np.tile(w, period // w.size)
        pw2 = None if pw is None else np.tile(pw, period // pw.size)
        loss, grad = math_fn(x2, t2, pw2, *params, want_grad)
        if w2 is not None:
            loss = loss * w2
        total = None if want_none else float(np.sum(loss, dtype=np.float64))
        hess = None
        if want_grad:
            # g * (w * scale): the weight meets the scale first (a huge weight with a small
            # scale stays finite; an infinite weight makes only its own element NaN).
            scale = x.dtype.type(grad_scale)
            ws = w2 * scale if w2 is not None else scale

            def weigh(v):
                if w2 is None:
                    return v * scale if scale != 1 else v
                weighted = v * ws
                return np.where(v == 0, v, weighted) if flat_zero else weighted

            grad = weigh(grad)
            if factor != 1:
                grad = grad * x.dtype.type(factor)
            if hessian is not None:  # computed before any output is written (out may be x)
                hess_out, constant = hessian
                if constant > 0:  # the policy: every term's second derivative is the constant
                    h = np.full(x2.shape, constant, x.dtype)
                else:
                    h = np.asarray(HESSIANS[name](x2, t2, pw2, *params), x.dtype)
                    h = np.broadcast_to(h, x2.shape)
                hess = np.asarray(weigh(h), x.dtype).reshape(-1)
            grad = _into(grad.reshape(-1), out)
            if hessian is not None:
                hess = _into(hess, hess_out)
        loss = loss.reshape(-1) if want_none else None
        return (total, loss, grad) if hessian is None else (total, loss, grad, hess)

    return kernel


def _into(values, out):
    """``values`` written into ``out`` (returned), or ``values`` when ``out`` is None."""
    if out is None:
        return values
    out[...] = values
    return out


# --------------------------------------------------------------------------- elementwise math
# Each function takes x, t (same shape, compute dtype), pos_weight (broadcastable, or None)
# and the loss's parameters, and returns (loss, grad) per element, grad None unless asked.
# A gradient with a constant factor (2 for the squares) leaves it out: grad_factor multiplies
# it in last (exactly), so 2 r cannot overflow where the scaled gradient is finite.


def _sign(r):
    """sign(r) with sign(NaN) = 0, as PyTorch's L1 gradient."""
    return (r > 0).astype(r.dtype) - (r < 0).astype(r.dtype)


@elementwise("mse_loss", grad_factor=2)
def mse(x, t, pw, want_grad):
    r = x - t
    return r * r, (r if want_grad else None)  # gradient 2 r: grad_factor


@hessian("mse_loss")
def mse_hess(x, t, pw):
    return x.dtype.type(2)


@elementwise("l1_loss")
def l1(x, t, pw, want_grad):
    r = x - t
    return np.abs(r), (_sign(r) if want_grad else None)


@hessian("l1_loss")
def l1_hess(x, t, pw):
    return x.dtype.type(0)  # exact: 0 (the kink too); the usual policy is a constant


@elementwise("huber_loss")
def huber(x, t, pw, delta, want_grad):
    # Quadratic inside |r| < delta, linear (slope delta) outside; continuous at delta.
    r = x - t
    a = np.abs(r)
    loss = np.where(a < delta, 0.5 * a * a, delta * (a - 0.5 * delta))
    return loss, (np.clip(r, -delta, delta) if want_grad else None)


@hessian("huber_loss")
def huber_hess(x, t, pw, delta):
    a = np.abs(x - t)
    return np.where(a < delta, 1, np.where(a >= delta, 0, a)).astype(x.dtype)  # NaN stays NaN


@elementwise("smooth_l1_loss")
def smooth_l1(x, t, pw, beta, want_grad):
    # Huber divided by beta; beta == 0 is exactly l1 (the quadratic piece is empty).
    r = x - t
    a = np.abs(r)
    if beta == 0:
        return a, (_sign(r) if want_grad else None)
    loss = np.where(a < beta, 0.5 * a * a / beta, a - 0.5 * beta)
    # NaN r: NaN gradient through r / beta, as PyTorch.
    return loss, (np.where(a >= beta, _sign(r), r / beta) if want_grad else None)


@hessian("smooth_l1_loss")
def smooth_l1_hess(x, t, pw, beta):
    a = np.abs(x - t)
    inside = x.dtype.type(1) / x.dtype.type(beta) if beta else x.dtype.type(0)
    return np.where(a < beta, inside, np.where(a >= beta, 0, a)).astype(x.dtype)


@elementwise("binary_cross_entropy")
def bce(x, t, pw, want_grad):
    # Domain x in [0, 1] (checked in front). PyTorch's clamp of each log at -100 keeps
    # x = 0 or 1 finite; log1p(-x) keeps 1 - x accurate for small x.
    with np.errstate(divide="ignore"):
        log_x = np.maximum(np.log(x), -100)
        log_1mx = np.maximum(np.log1p(-x), -100)
    loss = (t - 1) * log_1mx - t * log_x
    if not want_grad:
        return loss, None
    return loss, (x - t) / np.maximum((1 - x) * x, x.dtype.type(np.float32(1e-12)))  # PyTorch's float EPSILON


@hessian("binary_cross_entropy")
def bce_hess(x, t, pw):
    # y / x^2 + (1 - y) / (1 - x)^2 over PyTorch's clamped denominator: two non-negative
    # terms ((x - y)^2 + y (1 - y)) / d^2, divided twice by d (d^2 underflows in float32).
    d = np.maximum((1 - x) * x, x.dtype.type(np.float32(1e-12)))
    r = x - t
    return (r * r + t * (1 - t)) / d / d


@elementwise("binary_cross_entropy_with_logits")
def bce_logits(x, t, pw, want_grad):
    # float32 is computed in float64 and rounded once: NumPy's float32 exp and log1p, with
    # the roundings between them, were 3.2 ULP off on its AVX-512 loops (2.0 on AVX2).
    if x.dtype == np.float32:
        f64 = [None if a is None else a.astype(np.float64) for a in (x, t, pw)]
        loss, grad = _bce_logits(*f64, want_grad)
        return loss.astype(np.float32), None if grad is None else grad.astype(np.float32)
    return _bce_logits(x, t, pw, want_grad)


def _bce_logits(x, t, pw, want_grad):
    # loss = (1 - y) * softplus(x) + p * y * softplus(-x) for any real x, no overflow:
    # softplus(+-x) = max(+-x, 0) + log1p(exp(-|x|)), and both terms are >= 0 for y in
    # [0, 1], so tiny losses (x = -40, y = 0: 4.2e-18) keep their relative accuracy.
    # grad = (1 - y) * sigmoid(x) - p * y * sigmoid(-x), the sigmoids from exp(-|x|).
    e = np.exp(-np.abs(x))
    log_term = np.log1p(e)
    py = t if pw is None else pw * t
    # A term whose coefficient is 0 is 0 even at x = +-inf (the exact limit, where
    # 0 * inf would give NaN).
    neg, pos = 1 - t, py
    loss = (np.where(neg == 0, 0, neg * (np.maximum(x, 0) + log_term))
            + np.where(pos == 0, 0, pos * (np.maximum(-x, 0) + log_term)))
    if not want_grad:
        return loss, None
    inv = 1 / (1 + e)
    positive = x >= 0
    sig = np.where(positive, inv, e * inv)
    sig_neg = np.where(positive, e * inv, inv)
    return loss, (1 - t) * sig - py * sig_neg


@hessian("binary_cross_entropy_with_logits")
def bce_logits_hess(x, t, pw):
    # ((1 - y) + p y) sigmoid(x) sigmoid(-x) = (...) e / (1 + e)^2, e = exp(-|x|): no
    # cancellation, 0 (not NaN) for huge |x|. float32 in float64, rounded once (as the loss).
    dtype = x.dtype
    x, t = x.astype(np.float64), t.astype(np.float64)
    py = t if pw is None else pw.astype(np.float64) * t
    e = np.exp(-np.abs(x))
    inv = 1 / (1 + e)
    return (((1 - t) + py) * (e * inv * inv)).astype(dtype)


@elementwise("hinge_loss", flat_zero=True)
def hinge(x, t, pw, margin, want_grad):
    # z = margin - y * x; loss max(0, z) (NaN propagates); grad -y where z > 0, 0 at the
    # kink z == 0, NaN where z is NaN.
    z = margin - t * x
    return np.maximum(z, 0), (-t * np.heaviside(z, 0) if want_grad else None)


@hessian("hinge_loss")
def hinge_hess(x, t, pw, margin):
    z = margin - t * x
    return np.where(np.isnan(z), z, 0).astype(x.dtype)  # exact: 0 (the kink too), NaN for NaN


@elementwise("squared_hinge_loss", grad_factor=2, flat_zero=True)
def squared_hinge(x, t, pw, margin, want_grad):
    h = np.maximum(margin - t * x, 0)
    return h * h, (-t * h if want_grad else None)  # gradient -2 y h: grad_factor


@hessian("squared_hinge_loss")
def squared_hinge_hess(x, t, pw, margin):
    z = margin - t * x
    return np.where(z > 0, 2 * (t * t), np.where(z <= 0, 0, z)).astype(x.dtype)


@elementwise("pinball_loss")
def pinball(x, t, q, want_grad):
    # q: the quantile (the operand, broadcast); r = y - x; q r for r >= 0, (q - 1) r below
    r = t - x
    loss = np.where(r >= 0, q * r, (q - 1) * r)
    if not want_grad:
        return loss, None
    # 0 at the kink r == 0 and for NaN r (as l1_loss's sign)
    return loss, np.where(r > 0, -q, np.where(r < 0, 1 - q, 0)).astype(x.dtype)


@hessian("pinball_loss")
def pinball_hess(x, t, q):
    return x.dtype.type(0)


# --------------------------------------------------------------------------- deviances
# poisson_deviance, gamma_deviance, tweedie_deviance on the log link: x the raw prediction,
# mu = e^x, y the target. The unit deviances and their stable form are stated at the
# Deviance functor of fastloss/csrc/losses.hpp; this is the same algorithm in NumPy: with
# u = x - log y, S = y^b (b = 2 - p, a = 1 - p), d / 2 = (S / b) phi(b u) + (S / -a) phi(a u),
# phi(z) = e^z - 1 - z, two non-negative terms; phi by the polynomial of vm::expm1mx_poly on
# [-1, 2], S e^z - S (1 + z) above, S e^z + S (-1 - z) below, where S e^(b u) = mu^b and
# S e^(a u) = y mu^a are exp of exactly summed exponents (TwoSum, Dekker's product, log y
# as k ln2 + log f) scaled by np.ldexp (one rounding). float32 is computed in float64 and
# rounded once (as the compiled kernels).

_LN2_HI = 6.93147180369123816490e-01  # 32 significant bits: k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_X_CAP = 2.0 ** 64  # |x| beyond: mu^b, y mu^a, y / mu are 0 or inf for every power
_Z_CAP = 4096.0
# h(z) = (e^z - 1 - z - z^2 / 2) / z^3 on [-1, 2], lowest degree first (vecmath.hpp)
_EXPM1MX_H = (0.16666666666666669, 0.04166666666666669, 0.008333333333333, 0.001388888888888483,
              0.0001984126984158759, 2.4801587302730796e-05, 2.755731910950915e-06,
              2.7557319383758214e-07, 2.5052126993383404e-08, 2.087666266291875e-09,
              1.6057780024800614e-10, 1.1482141697185745e-11, 7.657870645960433e-13,
              4.362081398048636e-14, 4.376224227947684e-15)


def _two_sum(a, b):
    """s + e == a + b exactly, s = fl(a + b)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _split(a):
    c = 134217729.0 * a  # 2^27 + 1 (Veltkamp)
    hi = c - (c - a)
    return hi, a - hi


def _two_prod(a, b):
    """p + e == a * b exactly, p = fl(a b) (Dekker; |a|, |b| < 2^995)."""
    p = a * b
    (ah, al), (bh, bl) = _split(a), _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _log_parts(y):
    """log y = hi + lo for finite y > 0: hi = k ln2_hi exact, lo = k ln2_lo + log f."""
    f, k = np.frexp(y)  # y = f 2^k, f in [0.5, 1)
    low = f < np.sqrt(0.5)
    f, k = np.where(low, 2 * f, f), np.where(low, k - 1, k).astype(np.float64)
    return k * _LN2_HI, k * _LN2_LO + np.log(f)


def _exp_reduced(hi, lo):
    """e^(hi + lo) = p 2^k (vm::exp_sum_reduced): ``np.ldexp(m * p, k)`` is m e^(hi + lo)
    rounded once after exp, for a factor |log2 m| <= 60."""
    s = hi + lo
    clamped = np.clip(s, -800.0, 800.0)  # NaN stays NaN
    inside = clamped == s
    h, l = np.where(inside, hi, clamped), np.where(inside, lo, 0.0)
    n = np.rint(clamped / np.log(2.0))
    p = np.exp(((h - n * _LN2_HI) - n * _LN2_LO) + l)
    return p, np.where(np.isfinite(n), n, 0).astype(np.int64)


def _expm1mx(z):
    """e^z - 1 - z for z in [-1, 2]: z^2 / 2 + z^3 h(z) (vecmath.hpp's expm1mx_poly)."""
    h = np.zeros_like(z)
    for c in reversed(_EXPM1MX_H):
        h = h * z + c
    zz, ze = _two_prod(z, z)
    return 0.5 * zz + ((zz * z) * h + 0.5 * ze)


def _scaled_phi(z, zl, s, s_times, e):
    """m S phi(z + zl) from m S = s, v -> m S v rounded once (s_times), m S e^z = e."""
    phi = _expm1mx(z)
    phi_c = (z + phi) * zl + phi
    zc = np.minimum(z, _Z_CAP)
    above = np.where(e == np.inf, e, e - s_times((1.0 + zc) + zl))
    below = e + s_times((-1.0 - z) - zl)
    return np.where((z >= -1) & (z <= 2), s * phi_c, np.where(z > 2, above, below)), phi_c


def _sub_log(x, lh, ll):
    """x - (lh + ll) as hi + lo (lo 0 where x is not finite)."""
    r, e1 = _two_sum(x, -lh)
    hi, e2 = _two_sum(r, -ll)
    return hi, np.where(np.isfinite(x), e1 + e2, 0.0)


def _deviance(x, y, power):
    """(d, dd/dx / 2, d2d/dx2) of the unit deviance, in float64 (see the section's top)."""
    dtype = x.dtype
    x, y = x.astype(np.float64), y.astype(np.float64)
    inf, nan = np.inf, np.nan
    ys = np.where((y > 0) & (y < inf), y, 1.0)
    lh, ll = _log_parts(ys)
    u, ul = _sub_log(x, lh, ll)
    xc = np.clip(x, -_X_CAP, _X_CAP)
    finite_x = np.where(x < inf, 1.0, nan)  # NaN where x is +inf (or NaN)
    if power == 1.0:  # Poisson: S = y
        mu = np.exp(x)
        half, phi = _scaled_phi(u, ul, ys, lambda v: ys * v, mu)
        mid = (u >= -1) & (u <= 2)
        g = np.where(mid, ys * (u + (phi + ul)), mu - ys)
        l = np.where(y == 0, 2 * mu, np.where(y == inf, inf * finite_x, 2 * half))
        g = np.where((y == 0) | (y == inf), mu - y, g)
        h = 2 * mu
    elif power == 2.0:  # Gamma: S = 1, y mu^a = y / mu
        s, e = _two_sum(lh, -xc)
        p, k = _exp_reduced(s, e + ll)
        q = np.ldexp(p, k)
        half, _ = _scaled_phi(-u, -ul, 1.0, lambda v: v, q)
        x_nan = np.where(np.isnan(x), nan, 1.0)
        l = np.where(y == inf, inf * finite_x, 2 * half)
        g = np.where(y == inf, -inf * finite_x, 1 - q)
        h = np.where(y == inf, inf * finite_x, 2 * q)
        l = np.where(y == 0, inf * x_nan, l)  # tweedie_deviance at p = 2 only
        g = np.where(y == 0, x_nan, g)
        h = np.where(y == 0, 0.0 * x_nan, h)
    else:
        b, a = 2.0 - power, 1.0 - power
        inv_b, inv_na = 1.0 / b, 1.0 / -a
        pr, e = _two_prod(b, lh)  # S = y^b
        p, ks = _exp_reduced(pr, b * ll + e)
        ps1, ps2 = p * inv_b, p * inv_na
        sc, s1, s2 = np.ldexp(p, ks), np.ldexp(ps1, ks), np.ldexp(ps2, ks)
        pr, e = _two_prod(b, xc)  # mu^b
        p, k = _exp_reduced(pr, e)
        mub, mub1, b_mub = np.ldexp(p, k), np.ldexp(p * inv_b, k), np.ldexp(p * b, k)
        pr, e = _two_prod(a, xc)  # y mu^a
        s, e2 = _two_sum(pr, lh)
        p, k = _exp_reduced(s, (e + e2) + ll)
        q, q2, a_q = np.ldexp(p, k), np.ldexp(p * inv_na, k), np.ldexp(p * -a, k)
        # b u and a u with their rounding errors (for |u| <= 2^64: beyond, z is far outside
        # [-1, 2] and needs none)
        moderate = np.abs(u) <= _X_CAP
        uc = np.clip(u, -_X_CAP, _X_CAP)
        z1, z2 = b * u, a * u
        z1l = np.where(moderate, b * ul + _two_prod(b, uc)[1], 0.0)
        z2l = np.where(moderate, a * ul + _two_prod(a, uc)[1], 0.0)
        t1, phi1 = _scaled_phi(z1, z1l, s1, lambda v: np.ldexp(ps1 * v, ks), mub1)
        t2, phi2 = _scaled_phi(z2, z2l, s2, lambda v: np.ldexp(ps2 * v, ks), q2)
        # S / -a overflows only for p near 1 and y near the float maximum; phi(a u) is tiny then
        t2 = np.where((s2 == inf) & (z2 >= -1) & (z2 <= 2), (sc * phi2) * inv_na, t2)
        l = np.where(y == 0, 2 * mub1, np.where(y == inf, inf * finite_x, 2 * (t1 + t2)))
        # mu^b - y mu^a = S (u + phi(b u) - phi(a u)) where mu^b overflows with b u in [-1, 2]
        mid = (mub == inf) & (z1 >= -1) & (z1 <= 2)
        g = np.where(mid, sc * ((u + (phi1 - phi2)) + ul), mub - q)
        g = np.where(y == 0, mub, np.where(y == inf, -inf * finite_x, g))
        h = np.where(y == 0, 2 * b_mub, np.where(y == inf, inf * finite_x, 2 * (b_mub + a_q)))
    return l.astype(dtype), g.astype(dtype), h.astype(dtype)


@elementwise("poisson_deviance", grad_factor=2)
def poisson_deviance(x, t, pw, want_grad):
    loss, half_grad, _ = _deviance(x, t, 1.0)
    return loss, (half_grad if want_grad else None)  # gradient 2 (mu - y): grad_factor


@hessian("poisson_deviance")
def poisson_deviance_hess(x, t, pw):
    return _deviance(x, t, 1.0)[2]


@elementwise("gamma_deviance", grad_factor=2)
def gamma_deviance(x, t, pw, want_grad):
    loss, half_grad, _ = _deviance(x, t, 2.0)
    return loss, (half_grad if want_grad else None)  # gradient 2 (1 - y / mu)


@hessian("gamma_deviance")
def gamma_deviance_hess(x, t, pw):
    return _deviance(x, t, 2.0)[2]


@elementwise("tweedie_deviance", grad_factor=2)
def tweedie_deviance(x, t, pw, power, want_grad):
    loss, half_grad, _ = _deviance(x, t, power)  # p = 1, 2: the Poisson and Gamma math
    return loss, (half_grad if want_grad else None)  # gradient 2 (mu^b - y mu^a)


@hessian("tweedie_deviance")
def tweedie_deviance_hess(x, t, pw, power):
    return _deviance(x, t, power)[2]


def _in_float64(fn):
    """Compute float32 in float64 and round once (as BCE with logits: NumPy's float32 exp and
    log differ per SIMD level; float64 gives the same bits on every one)."""

    def wrapped(x, t, pw, *params):
        if x.dtype != np.float32:
            return fn(x, t, pw, *params)
        out = fn(x.astype(np.float64), t.astype(np.float64), None if pw is None else pw.astype(np.float64),
                 *params)
        if isinstance(out, tuple):
            return tuple(None if v is None else np.asarray(v).astype(np.float32) for v in out)
        return np.asarray(out).astype(np.float32)

    return wrapped


def _log_cosh_terms(x, t):
    """(log cosh r, tanh r, sech(r)**2) of r = x - t, and the residual's rounding error da
    (|x - t| = |r| + da exactly, TwoSum; 0 where x - t overflows). No overflow at any r:
    log cosh r = |r| - log 2 + log1p(exp(-2|r|)) for |r| >= 1; below, log1p(s**2 / (2 (1 + s)))
    with s = expm1(-|r|) (cosh r - 1 = (1 - e^-|r|)**2 / (2 e^-|r|): no cancellation)."""
    r = x - t
    rb = r - x
    r_lo = (x - (r - rb)) + (-t - rb)
    da = np.where(np.isfinite(r_lo), np.where(r < 0, -r_lo, r_lo), 0)
    a = np.abs(r)
    u = np.exp(-2 * a)
    s = np.expm1(-a)
    small = np.log1p(s * s / (2 * (1 + s)))
    large = (a - math.log(2)) + np.log1p(u)
    th = np.tanh(a)
    # sech**2 = 1 - tanh**2 (tanh**2 <= 1/4 below 0.55), else 4u / (1 + u)**2 (underflows to 0)
    hess = np.where(a < 0.55, 1 - th * th, 4 * u / (1 + u * (2 + u)))
    return np.where(a < 1, small, large), th, hess, da


@elementwise("log_cosh_loss")
@_in_float64
def log_cosh(x, t, pw, want_grad):
    # The residual's rounding is corrected to first order (float64; float32 computes r
    # exactly in float64): loss + tanh da, grad + sech**2 da.
    loss, th, hess, da = _log_cosh_terms(x, t)
    loss = loss + th * da
    if not want_grad:
        return loss, None
    g = th + hess * da
    return loss, np.where(x - t < 0, -g, g)  # NaN r: NaN


@hessian("log_cosh_loss")
@_in_float64
def log_cosh_hess(x, t, pw):
    _, th, hess, da = _log_cosh_terms(x, t)
    return hess - 2 * th * hess * da  # sech**2 of |x - t| = |r| + da


def _pseudo_huber_terms(x, t, delta):
    """(loss, |grad|, hess) of r = x - t with the residual's rounding corrected to first order
    (TwoSum: |x - t| = |r| + da, 0 where x - t overflows). z = r / delta is never formed:
    m = min(|r|, delta) / max(|r|, delta) <= 1, k = sqrt(1 + m**2); the loss
    delta**2 (sqrt(1 + z**2) - 1) = r**2 / (sqrt(1 + z**2) + 1) is |r| * (min / (k + c)) with
    c = 1 (|r| <= delta) or m, the gradient min / k, the Hessian (1 or m**3) / (k (1 + m**2))
    (the compiled functor PseudoHuber states the derivation)."""
    r = x - t
    rb = r - x
    r_lo = (x - (r - rb)) + (-t - rb)
    da = np.where(np.isfinite(r_lo), np.where(r < 0, -r_lo, r_lo), 0)
    a = np.abs(r)
    inside = a <= delta
    lo, hi = np.minimum(a, delta), np.maximum(a, delta)  # NaN a: NaN
    m = lo / hi
    s2 = 1 + m * m
    k = np.sqrt(s2)
    loss = a * (lo / (k + np.where(inside, 1, m)))
    g = lo / k
    h = np.where(inside, 1, m * m * m) / (k * s2)
    dh = 3 * np.where(inside, m, 1) * da / (hi * s2)  # hess at a + da: condition 3 a**2 / (delta**2 + a**2)
    return loss + g * da, g + h * da, h - h * dh


@elementwise("pseudo_huber_loss")
@_in_float64
def pseudo_huber(x, t, pw, delta, want_grad):
    loss, g, _ = _pseudo_huber_terms(x, t, delta)
    if not want_grad:
        return loss, None
    return loss, np.where(x - t < 0, -g, g)  # NaN r: NaN


@hessian("pseudo_huber_loss")
@_in_float64
def pseudo_huber_hess(x, t, pw, delta):
    return _pseudo_huber_terms(x, t, delta)[2]


def _focal_terms(x, t, alpha, gamma, want_hess):
    """torchvision's sigmoid focal loss in float64 (the compiled functor SigmoidFocal states the
    derivation): ce = BCE with logits, m = 1 - p_t, M = m**gamma, alpha_t, and the gradient
    and Hessian with d = m' / m. gamma = 0 is BCE with logits' own operations."""
    ce, ce1 = _bce_logits(x, t, None, True)
    at = alpha * t + (1 - alpha) * (1 - t) if alpha >= 0 else np.ones_like(x)
    zero_or_nan = np.where(np.isnan(x), x, 0)
    if gamma == 0:
        h = bce_logits_hess(x, t, None) if want_hess else None
        return at, ce, ce1, h, zero_or_nan
    a = np.abs(x)
    pos = x >= 0
    # e = exp(-|x|), and e_up = e 2**600 from exp(-|x|/2)**2: not rounded to the subnormal
    # grid where the Hessian's terms (all multiples of e, times ce ~ |x|) are below 2**-1022
    half = np.exp(-a / 2)
    e = np.exp(-a)
    e_up = np.ldexp(half, 300) ** 2
    inv = 1 / (1 + e)
    sig = np.where(pos, inv, e * inv)
    sig_neg = np.where(pos, e * inv, inv)
    m = t * sig_neg + (1 - t) * sig
    mg = np.power(m, gamma)
    d = np.where(t == 0, sig_neg, np.where(t == 1, -sig, (1 - 2 * t) * (sig * sig_neg) / m))
    cd = np.where(d == 0, 0, ce * d)
    g = mg * (ce1 + gamma * cd)
    h = None
    if want_hess:
        small_up, large_up = e_up * inv, np.ldexp(inv, 600)
        sig_up, sig_neg_up = np.where(pos, large_up, small_up), np.where(pos, small_up, large_up)
        ss_up = small_up * inv
        d_up = np.where(t == 0, sig_neg_up, np.where(t == 1, -sig_up, (1 - 2 * t) * ss_up / m))
        cd_up = np.where(d_up == 0, 0, ce * d_up)
        em1 = np.expm1(-a)
        one_m_2s = np.where(pos, em1 * inv, -em1 * inv)  # sigmoid(-x) - sigmoid(x), exactly
        t2 = ss_up + 2 * gamma * ce1 * d_up + gamma * cd_up * ((gamma - 1) * d + one_m_2s)
        h = np.ldexp(at * (mg * t2), -600)
    return at, ce * mg, g, h, zero_or_nan


@elementwise("sigmoid_focal_loss")
@_in_float64
def sigmoid_focal(x, t, pw, alpha, gamma, want_grad):
    # alpha_t = 0 (alpha = 1 at y = 0, alpha = 0 at y = 1): a zero coefficient gives 0 even at
    # x = +-inf (NaN for NaN x), as BCE with logits.
    at, loss, g, _, zero_or_nan = _focal_terms(x, t, alpha, gamma, False)
    loss = np.where(at == 0, zero_or_nan, at * loss)
    return loss, (np.where(at == 0, zero_or_nan, at * g) if want_grad else None)


@hessian("sigmoid_focal_loss")
@_in_float64
def sigmoid_focal_hess(x, t, pw, alpha, gamma):
    at, _, _, h, zero_or_nan = _focal_terms(x, t, alpha, gamma, True)
    return np.where(at == 0, zero_or_nan, at * h if gamma == 0 else h)
_HALF_LOG_2PI = 0.91893853320467274178  # log(2 pi) / 2


def _rate_plus_eps(x, eps):
    """(log(x + eps), 1 / (x + eps), c) with the rounding error d of s = x + eps (TwoSum),
    c = d / s: log(s) + c and (1 / s)(1 - c), as the compiled kernel (PyTorch rounds s). x
    is float64 here (float32 is computed in float64): eps is the double itself."""
    s = x + eps
    b = s - x
    d = (x - (s - b)) + (eps - b)
    inv = 1 / s
    c = np.where((s != 0) & np.isfinite(s) & (d != 0), d * inv, 0)  # (s < 0: the gradient is finite)
    return np.log(s) + np.where(s > 0, c, 0), np.where(c != 0, inv - inv * c, inv), c, s, d


@elementwise("poisson_nll_loss")
@_in_float64
def poisson_nll(x, t, pw, log_input, full, eps, want_grad=False):
    # PyTorch's formulas and NaN / inf (see the compiled PoissonNll): log_input: exp(x) - y x,
    # gradient exp(x) - y; else x - y log(x + eps), gradient 1 - y / (x + eps), the sum x + eps
    # with its rounding error. full: + y log y - y + log(2 pi y) / 2 where y > 1.
    if log_input:
        e = np.exp(x)
        loss, grad = e - t * x, e - t
    else:
        # the gradient 1 - y (1 / s)(1 - c) as (1 - q) + q c, q = y / s (as the compiled kernel)
        # where t is within a factor 2 of s: (s - t + d) / (x + eps), s - t exact (Sterbenz)
        log_s, inv_c, c, s, d = _rate_plus_eps(x, eps)
        q = t / s
        far = np.where((c != 0) & np.isfinite(q), (1 - q) + q * c, 1 - q)
        loss, grad = x - t * log_s, np.where((q >= 0.5) & (q <= 2), ((s - t) + d) * inv_c, far)
    if full:
        ly = np.log(t)
        loss = loss + np.where(t <= 1, 0, (t * ly - t) + (0.5 * ly + _HALF_LOG_2PI))
    return loss, (grad if want_grad else None)


@hessian("poisson_nll_loss")
@_in_float64
def poisson_nll_hess(x, t, pw, log_input, full, eps):
    if log_input:
        return np.exp(x)
    inv = _rate_plus_eps(x, eps)[1]
    return (t * inv) * inv


@elementwise("kl_div")
@_in_float64
def kl_div(x, t, pw, log_target, want_grad=False):
    # y (log y - x) (log_target: exp(y) (y - x)); a term whose coefficient is 0 (y == 0, or
    # y == -inf with log_target) is 0 even at x = +-inf, NaN for NaN x (see the compiled
    # KlDiv); gradient -y (-exp(y)).
    if log_target:
        coef, d = np.exp(t), t - x
        # exp(y) (y - x) as exp(y / 2) (exp(y / 2) (y - x)) where exp(y) alone would be
        # subnormal or overflow and the term need not; exp(y) > 0 times an infinite
        # difference is that infinity (the compiled kernel: vm::exp_times)
        half = np.exp(t / 2)
        term = np.where(np.abs(t) > 700, half * (half * d), coef * d)
        term = np.where(np.isfinite(t) & np.isinf(d), d, term)
        term = np.where(np.isfinite(t) & (d == 0), d, term)  # exactly 0 (exp(y) may overflow)
        zero = t == -np.inf
    else:
        coef = t
        term = t * (np.log(t) - x)
        zero = t == 0
    loss = np.where(zero, np.where(np.isnan(x), x, 0), term)
    return loss, (-coef if want_grad else None)


@hessian("kl_div")
def kl_div_hess(x, t, pw, log_target):
    return x.dtype.type(0)  # linear in x (the usual Hessian is the policy's constant)


# --------------------------------------------------------------------------- class math
# x is (N, C, K); t is (N, K) int64 (or (N, C, K) probabilities); w is (C,) or None.


def _log_softmax(x):
    """(log p, p, s - 1 over s, at_max) of softmax along axis 1.

    log-sum-exp with the row max m subtracted: exp never overflows; logp = (x - m) - log(s)
    keeps full precision even for huge logits (no m + log(s) - x cancellation). s - 1 is
    summed in float64 without the exact 1 of the max (the k max classes add exp - 1 = 0):
    log(s) = log1p(s - 1) keeps the relative accuracy of tiny losses (a dominant target), and
    p_y - 1 = -(s - 1) / s at a max target has no cancellation."""
    m, shifted, e, at_max, s, s_minus_1 = _softmax_sums(x)
    logp = shifted - np.log1p(s_minus_1.astype(x.dtype))
    return logp, (e / s).astype(x.dtype), (s_minus_1 / s).astype(x.dtype), at_max


def _softmax_sums(x):
    """(m, x - m, e = exp(x - m), at_max, s, s - 1) along axis 1 (kept), s and s - 1 in float64
    (see _log_softmax)."""
    m = np.max(x, axis=1, keepdims=True)
    shifted = x - m
    e = np.exp(shifted)
    at_max = x == m
    o = np.sum(e.astype(np.float64) - at_max, axis=1, keepdims=True)
    k = np.sum(at_max, axis=1, keepdims=True)
    return m, shifted, e, at_max, o + k, o + (k - 1)


def _gather(a, t):
    """a[n, t[n, k], k] for every n, k (t clipped to valid classes; ignored rows masked later)."""
    return np.take_along_axis(a, np.clip(t, 0, a.shape[1] - 1)[:, None, :], axis=1)[:, 0, :]


def _onehot(t, n_classes, dtype):
    return (np.arange(n_classes)[None, :, None] == t[:, None, :]).astype(dtype)


def _class_weight(w, n_classes, dtype):
    return np.ones(n_classes, dtype) if w is None else w


def _finish(loss, grad, want_none, grad_scale, out, dtype, keep=None, hessian=None, hess=None,
            hess_keep=None, hess_scaled=False):
    """Sum the loss and scale the gradient; ``keep`` masks ignored samples (N, K), or single
    gradient entries (N, C, K), whose gradient is 0 even when the scale is not finite (an
    all-ignored batch, or zero class weights: PyTorch's zero gradient). With ``hessian`` (the
    backend contract's pair), ``hess`` (unscaled) is scaled and masked the same way (by
    ``hess_keep`` when given, else ``keep``) and returned fourth."""
    total = None if want_none else float(np.sum(loss, dtype=np.float64))

    def scaled(v, mask, into, done=False):
        if grad_scale != 1.0 and not done:
            v = v * dtype.type(grad_scale)
        if mask is not None:
            v = np.where(mask[:, None, :] if mask.ndim == 2 else mask, v, dtype.type(0))
        return _into(np.asarray(v, dtype), into)

    if grad is not None:
        grad = scaled(grad, keep, out)
    loss = loss if want_none else None
    if hessian is None:
        return total, loss, grad
    return total, loss, grad, scaled(hess, keep if hess_keep is None else hess_keep, hessian[0], hess_scaled)


def _constant_hessian(hessian, w_y, n_classes, dtype, grad_scale):
    """The constant policy's rows, c * (w_y * scale) at every class of a sample, or None."""
    if hessian is None or not hessian[1] > 0:
        return None
    return np.repeat((dtype.type(hessian[1]) * (w_y * dtype.type(grad_scale)))[:, None, :], n_classes, axis=1)


def _softmax_hessian(p, tail, at_max, coef):
    """The diagonal k p (1 - p) of softmax cross-entropy's Hessian, k = coef (N, 1, K): 1 - p
    without cancellation where p >= 1/2 (only at a max class: (s - 1) / s from the sums)."""
    one_minus = np.where(at_max, tail, 1 - p)
    return p * one_minus * coef


@kernel("cross_entropy")
def cross_entropy(x, t, w, pw, params, want_none, grad_scale, out, n_threads, hessian=None):
    ignore_index, eps = params
    dtype = x.dtype
    n_classes = x.shape[1]
    wc = _class_weight(w, n_classes, dtype)
    keep = t != ignore_index
    logp, p, tail, at_max = _log_softmax(x)
    w_y = np.where(keep, wc[np.clip(t, 0, n_classes - 1)], 0).astype(dtype)
    loss = w_y * -_gather(logp, t)
    if eps > 0:
        # Label smoothing (PyTorch): (1 - eps) * nll + eps / C * sum_c w_c * (-logp_c).
        smooth = np.sum(-logp * wc[None, :, None], axis=1, dtype=np.float64).astype(dtype)
        loss = (1 - eps) * loss + (eps / n_classes) * np.where(keep, smooth, 0)
    loss = np.where(keep, loss, 0).astype(dtype)
    grad = None
    if grad_scale is not None:
        hot = _onehot(t, n_classes, dtype)
        # w_y p - w_y onehot, as the compiled kernel (an infinite w_y gives inf - inf = NaN
        # at the target, as PyTorch); p_y - 1 = -(s - 1) / s where the target holds the max
        wy = w_y[:, None, :]
        grad = np.where(hot > 0, wy * p - wy, wy * p)
        if eps == 0:
            grad = np.where((hot > 0) & at_max & np.isfinite(wy), -tail * wy, grad)
        if eps > 0:  # the class weights summed in float64 (float32 counts stop at 2**24)
            wsum = dtype.type(np.sum(wc, dtype=np.float64))
            grad = (1 - eps) * grad + (eps / n_classes) * (p * wsum - wc[None, :, None])
    hess = None
    if hessian is not None:  # k = the coefficient of p in the gradient (as the compiled kernel)
        coef = wy if eps == 0 else dtype.type(np.float64(dtype.type(1 - eps) * wy)
                                              + np.float64(dtype.type(eps / n_classes))
                                              * np.sum(wc, dtype=np.float64))
        hess = _softmax_hessian(p, tail, at_max, np.asarray(coef, dtype))
    return _finish(loss, grad, want_none, grad_scale, out, dtype, keep, hessian, hess)


@kernel("cross_entropy_probs")
def cross_entropy_probs(x, t, w, pw, params, want_none, grad_scale, out, n_threads, hessian=None):
    (eps,) = params
    dtype = x.dtype
    n_classes = x.shape[1]
    q = (1 - eps) * t + eps / n_classes if eps > 0 else t
    wq = q if w is None else q * w[None, :, None]
    logp, p, tail, at_max = _log_softmax(x)
    loss = -np.sum(logp * wq, axis=1, dtype=np.float64).astype(dtype)
    grad = hess = None
    if grad_scale is not None:
        coef = np.sum(wq, axis=1, keepdims=True, dtype=np.float64).astype(dtype)
        grad = p * coef - wq
        if hessian is not None:
            hess = _softmax_hessian(p, tail, at_max, coef)
    return _finish(loss, grad, want_none, grad_scale, out, dtype, None, hessian, hess)


@kernel("nll_loss")
def nll(x, t, w, pw, params, want_none, grad_scale, out, n_threads, hessian=None):
    (ignore_index,) = params
    dtype = x.dtype
    n_classes = x.shape[1]
    wc = _class_weight(w, n_classes, dtype)
    keep = t != ignore_index
    w_y = np.where(keep, wc[np.clip(t, 0, n_classes - 1)], 0).astype(dtype)
    loss = np.where(keep, -w_y * _gather(x, t), 0).astype(dtype)
    grad = None
    row_keep = keep
    if grad_scale is not None:
        hot = _onehot(t, n_classes, dtype)
        grad = -w_y[:, None, :] * hot
        # only the target entries carry the scale: with a zero weight sum ("mean" divides by
        # 0) they are NaN and the others stay 0, as in PyTorch and the compiled kernel
        keep = keep[:, None, :] & (hot > 0)
    # the loss is linear in x: the exact Hessian is 0 (not scaled), or the policy's rows
    hess = _constant_hessian(hessian, w_y, n_classes, dtype, grad_scale)
    if hessian is not None and hess is None:
        hess, row_keep = np.zeros(x.shape, dtype), np.zeros(x.shape, bool)
    return _finish(loss, grad, want_none, grad_scale, out, dtype, keep, hessian, hess, row_keep, True)


@kernel("multi_margin_loss")
def multi_margin(x, t, w, pw, params, want_none, grad_scale, out, n_threads, hessian=None):
    # z_c = margin - x_y + x_c for c != y; terms with z_c > 0 count (NaN counts as not > 0,
    # as in PyTorch); loss = w_y / C * sum_c z_c**p. z_c with one rounding where it matters:
    # d = x_c - x_y and its rounding error (TwoSum, 0 when d is not finite), then
    # (d + margin) + error (see the compiled kernel).
    p, margin = params
    dtype = x.dtype
    n_classes = x.shape[1]
    wc = _class_weight(w, n_classes, dtype)
    w_y = wc[t]
    not_target = 1 - _onehot(t, n_classes, dtype)
    x_y = _gather(x, t)[:, None, :]
    d = x - x_y
    d_back = d - x
    error = np.where(np.isfinite(d), (x - (d - d_back)) + (-x_y - d_back), 0).astype(dtype)
    z = (d + dtype.type(margin)) + error
    active = (z > 0) & (not_target > 0)
    h = np.where(active, z, 0).astype(dtype)
    # w_y * sum / C, 0 where no term counts (whatever w_y, as PyTorch adds term by term);
    # in float64 where the float32 sum overflows but the loss fits
    term_sum = np.sum(h if p == 1 else h * h, axis=1, dtype=np.float64)
    s = term_sum.astype(dtype)
    loss = np.where(np.isinf(s) & np.isfinite(term_sum), w_y * term_sum / n_classes, w_y * s / n_classes)
    loss = np.where(term_sum == 0, 0, loss).astype(dtype)
    grad = None
    if grad_scale is not None:
        # The factor p w_y / C (the doubling exact) times 1 or z (2 z would overflow near the
        # float max); the target's entry is minus the float64 sum of the 1s or zs times the
        # factor and the scale, in float64, rounded once.
        slopes = active.astype(dtype) if p == 1 else h
        factor = dtype.type(p) * (w_y[:, None, :] / n_classes).astype(dtype)
        g = np.where(active, slopes * factor, 0)  # an inactive term is 0 whatever the weight
        g_y = -(np.sum(g, axis=1, keepdims=True, dtype=np.float64) * grad_scale)
        grad = np.where(not_target > 0, g * dtype.type(grad_scale), g_y.astype(dtype)).astype(dtype)
    hess = None
    if hessian is not None:
        hess = _constant_hessian(hessian, w_y, n_classes, dtype, grad_scale)
        if hess is None:
            # p = 2: the factor 2 w_y / C * scale at each active term, their float64 sum at
            # y (the compiled kernel's order); p = 1: 0
            factor = dtype.type(2) * (w_y[:, None, :] / n_classes * dtype.type(grad_scale)).astype(dtype)
            h = np.where(active & (p == 2), factor, 0).astype(dtype)
            h_y = np.sum(h, axis=1, keepdims=True, dtype=np.float64).astype(dtype)
            hess = np.where(not_target > 0, h, h_y).astype(dtype)
    return _finish(loss, grad, want_none, 1.0, out, dtype, None, hessian, hess)


@kernel("softmax_focal_loss")
def softmax_focal(x, t, w, pw, params, want_none, grad_scale, out, n_threads, hessian=None):
    # -w_y (1 - q)**gamma log q, q = softmax(x)_y: the compiled kernel's math (SoftmaxFocal,
    # class_losses.hpp, where the stable forms are explained), the per-row scalars in
    # float64: u = 1 - q as the other classes' share of the softmax sum, no negative power
    # of u, q log q = 0 at q = 0. gamma = 0 is cross_entropy's operations (the same bits).
    ignore_index, gamma = params
    if gamma == 0:
        return cross_entropy(x, t, w, pw, (ignore_index, 0.0), want_none, grad_scale, out, n_threads, hessian)
    dtype = x.dtype
    n_classes = x.shape[1]
    wc = _class_weight(w, n_classes, dtype)
    keep = t != ignore_index
    m, _, e, _, s, s_minus_1 = _softmax_sums(x)
    row = lambda a: a[:, None, :]  # noqa: E731  (N, K) -> (N, 1, K)
    x_y, e_y = row(_gather(x, t)), row(_gather(e, t))
    w_y = row(np.where(keep, wc[np.clip(t, 0, n_classes - 1)], 0).astype(np.float64))
    others = np.where(x_y == m, s_minus_1, s - e_y.astype(np.float64))  # sum of e_c over c != y
    u, q = others / s, e_y / s
    nl = (m.astype(np.float64) - x_y.astype(np.float64)) + np.log1p(s_minus_1)  # -log q
    ug = u ** gamma
    loss = np.where(keep, (w_y * (ug * nl))[:, 0, :].astype(dtype), 0).astype(dtype)
    grad = hess = None
    if grad_scale is not None:
        big_l = -nl
        q_r = np.where(q == 0, 0.0, q * np.where(u > 0, big_l / u, -1.0))  # q log(q) / (1 - q)
        q_l = np.where(q == 0, 0.0, q * big_l)
        g_coef = ug * (gamma * q_r - 1.0)
        coef_p = (-w_y * g_coef * grad_scale).astype(dtype)
        hot = _onehot(t, n_classes, dtype) > 0
        inv_s = (1.0 / s).astype(dtype)
        p = e * inv_s
        grad = np.where(hot, (w_y * g_coef * u * grad_scale).astype(dtype), p * coef_p)
        if hessian is not None:
            q_k = q_l + 2.0 * q - (gamma - 1.0) * q * q_r
            h_ratio = np.where(ug == 0, 0.0, w_y * ug * gamma * q_k * grad_scale).astype(dtype)
            h_y = np.where(ug == 0, 0.0, w_y * ug * u * (gamma * q_k - q * (gamma * q_r - 1.0)) * grad_scale)
            others_t = others.astype(dtype)
            ratio = np.where(others_t > 0, e / others_t, 0)
            one_minus = np.where(e == 1, s_minus_1.astype(dtype) * inv_s, 1 - p)
            hess = np.where(hot, h_y.astype(dtype), p * (h_ratio * ratio + coef_p * one_minus))
    return _finish(loss, grad, want_none, 1.0, out, dtype, keep, hessian, hess, None, True)
