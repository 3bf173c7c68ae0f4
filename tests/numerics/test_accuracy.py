"""Accuracy to the last bits: every loss and gradient against its exact value (mpmath, see
``reference.exact_terms``) on adversarial inputs, with a bound in ULP per loss and dtype.

The inputs are chosen to break naive formulas: logits up to +-1e4, +-1e30 and the largest
finite value, tiny losses (BCE at x = -40, softmax rows whose target dominates), probabilities
at 0 and 1, huge, subnormal and exactly cancelling residuals, values near overflow, and every
kink of every loss. The exact value is that of the documented formula on the exact binary
values of the float inputs and parameters (parameters are chosen representable in float32).

How the error is measured: per element (``reduction="none"``) and per gradient component,
``|fastloss - exact| / ulp(exact)`` with ``ulp`` the spacing of the dtype at the exact value
(the subnormal spacing below the normal range). A result whose exact value rounds beyond the
dtype's largest finite value must be inf of the right sign. Where the formula itself
subtracts two nearly equal terms (sigmoid(x) - y for soft targets y, softmax - q for class
probabilities and label smoothing) no rounded implementation can be accurate relative to the
tiny difference; there the error is in ULP of the larger subtracted term (``terms`` of
``reference.exact_terms``). Reductions: the sum and mean against the exact sum of the exact
terms, within a relative bound that follows from the per-term bound and float64 summation.

BOUNDS below holds the bound per backend, SIMD level, loss and dtype: the worst error measured
on these inputs, rounded up to the next half ULP (test_bounds_are_tight keeps them that tight).
The results depend on the machine: the compiled kernels on fastloss's SIMD level
(``fastloss.kernels.simd_level()``; FASTLOSS_SIMD caps it), the NumPy backend on the level
NumPy's own float32 exp/log loops dispatch to (NPY_DISABLE_CPU_FEATURES lowers it), so each
test takes the bounds of the levels of the machine it runs on.

Known limits (intermediate overflow, left out of the inputs, each noted where it applies):
a residual x - y beyond the dtype's maximum (x = max, y = -max) is inf even where a Huber
loss with delta < 1/2 of it would be finite; w * r**2 is inf when r**2 overflows even if
w < 1 would bring it back; with label smoothing or class probabilities, -log p summed over
classes overflows for logits at the dtype's maximum (PyTorch alike: inf or 0 * inf = NaN).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

import reference
from fastloss._registry import BY_NAME, LOSSES
from helpers import loss_fn
from losses import REFERENCES

mpmath = pytest.importorskip("mpmath")

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
DTYPES = (F32, F64)


# --------------------------------------------------------------------------- ULP


def _ulp(value, dtype):
    """The spacing of ``dtype`` at the mpf ``value`` (the subnormal spacing below the normal range)."""
    info = np.finfo(dtype)
    digits = info.nmant + 1
    if value == 0:
        return mpmath.ldexp(1, info.minexp - digits + 1)
    _, exponent = mpmath.frexp(value)  # value = m * 2**exponent, 0.5 <= |m| < 1
    return mpmath.ldexp(1, max(exponent - 1, info.minexp) - digits + 1)


def _overflows(value, dtype):
    info = np.finfo(dtype)
    limit = mpmath.mpf(float(info.max)) + _ulp(mpmath.mpf(float(info.max)), dtype) / 2
    return abs(value) >= limit


def ulp_errors(computed, exact, dtype, terms=None):
    """Per-element error of ``computed`` (array of ``dtype``) in ULP of ``exact`` (object
    array of mpf), or of ``max(|exact|, terms)`` when ``terms`` is given."""
    computed = np.asarray(computed)
    out = np.empty(computed.shape)
    with mpmath.workprec(reference.EXACT_PREC):
        for i in np.ndindex(computed.shape):
            c, e = float(computed[i]), exact[i]
            if _overflows(e, dtype):
                out[i] = 0.0 if c == (math.inf if e > 0 else -math.inf) else math.inf
                continue
            if not math.isfinite(c):
                out[i] = math.inf
                continue
            scale = abs(e) if terms is None else max(abs(e), terms[i])
            out[i] = float(abs(mpmath.mpf(c) - e) / _ulp(scale, dtype))
    return out


def test_ulp_measure():
    """The measure itself: 1 ULP is 1 ULP at 1, below 1, at the subnormals and at max."""
    for dtype in DTYPES:
        info = np.finfo(dtype)
        for v in (1.0, 0.75, 3.0, float(info.tiny), float(info.smallest_subnormal) * 3, float(info.max) / 2):
            v = dtype.type(v)
            up = np.nextafter(v, dtype.type(np.inf))
            exact = np.array([mpmath.mpf(float(v))], object)
            assert ulp_errors(np.array([up]), exact, dtype)[0] == 1.0, (dtype, v)
            assert ulp_errors(np.array([v]), exact, dtype)[0] == 0.0
        big = np.array([mpmath.mpf(float(info.max)) * 2], object)
        assert ulp_errors(np.array([np.inf], dtype), big, dtype)[0] == 0
        assert ulp_errors(np.array([info.max], dtype), big, dtype)[0] == math.inf
        assert ulp_errors(np.array([-np.inf], dtype), big, dtype)[0] == math.inf


# --------------------------------------------------------------------------- inputs


def _f(dtype, *values):
    return np.array(values, dtype)


def _big(dtype):
    """Values near overflow for the dtype: the largest finite, half of it, and the largest
    residual whose square is finite (and the next one, whose square overflows)."""
    info = np.finfo(dtype)
    root = np.sqrt(info.max.astype(np.float64))
    return info.max, info.max / 2, dtype.type(root * 0.999), dtype.type(root * 1.001)


def _residual_pairs(dtype, kinks=()):
    """(x, y) for the residual losses: random, near-equal, huge, near-overflow, subnormal,
    signed zeros, mixed magnitudes, and residuals at and one ULP around every kink."""
    rng = np.random.default_rng(1)
    info = np.finfo(dtype)
    sub, tiny = info.smallest_subnormal, info.tiny
    xs, ys = list(rng.normal(0, 3, 48)), list(rng.normal(0, 3, 48))
    for v in (1.0, 1e-3, 1e3, 7.5e5, float(tiny) * 4):
        v = dtype.type(v)
        for k in (1, 2, 7):  # y a few ULP from x: exact, cancelling residuals
            xs.append(v)
            ys.append(v + k * np.spacing(v))
    maxv, half, root_lo, root_hi = _big(dtype)
    for x, y in ((maxv, 0), (-maxv, 0), (half, -half), (maxv, -maxv), (root_lo, 0), (root_hi, 0),
                 (-root_lo, 0), (root_lo / 2, -root_lo / 2), (1e30 if dtype == F32 else 1e300, 1e-30),
                 (1e10, -1e10), (sub, 0), (0, sub), (3 * sub, -2 * sub), (tiny, tiny / 2), (sub, -sub),
                 (tiny * 1e5, 0), (0.0, 0.0), (-0.0, 0.0), (1e-20, 0), (5.0, -0.0)):
        xs.append(x)
        ys.append(y)
    for k in kinks:  # r = k exactly, and one ULP either side, on both signs
        k = dtype.type(k)
        for r in (k, np.nextafter(k, dtype.type(0)), np.nextafter(k, dtype.type(np.inf))):
            for sign in (1, -1):
                xs.append(sign * r)
                ys.append(0.0)
                xs.append(dtype.type(2.5) + sign * r)  # the same residual, with rounding of x - y
                ys.append(2.5)
    return np.array(xs, dtype), np.array(ys, dtype)


def _weights(x, dtype, seed=2):
    rng = np.random.default_rng(seed)
    return np.asarray(rng.uniform(0.25, 2.0, x.shape), dtype)


def _finite_residual(x, y, dtype):
    """The pairs whose residual x - y is finite in the dtype (at x = max, y = -max it is not,
    in any implementation that forms x - y in the dtype; the Huber loss of that residual
    with delta < 1/2 is finite, so such pairs are left out of its inputs)."""
    with np.errstate(over="ignore"):
        keep = np.isfinite(x - y)
    return x[keep], y[keep]


def _moderate(x, y, limit):
    """The pairs whose values stay below ``limit`` (weighted cases: w * r**2 must not
    overflow only in the product r**2, see the module notes)."""
    keep = (np.abs(x.astype(np.float64)) < limit) & (np.abs(y.astype(np.float64)) < limit)
    return x[keep], y[keep]


BCE_X = {
    F32: (0.0, 1.0, 1e-45, 1.2e-38, 1e-30, 1e-12, 1e-8, 1e-3, 0.25, 0.5, 0.75, 0.999,
          1 - 2.0**-24, 1 - 2.0**-23, 0.3, 0.7),
    F64: (0.0, 1.0, 5e-324, 2.3e-308, 1e-200, 1e-44, 1e-30, 1e-12, 1e-8, 0.25, 0.5, 0.999,
          1 - 2.0**-53, 1 - 2.0**-52, 0.3, 0.7),
}
BCE_Y = (0.0, 1.0, 0.5, 0.3, 0.999, 1e-8)

LOGITS = {
    F32: (0.0, 1e-30, 1e-8, 0.5, 1.0, 2.5, 5.0, 10.0, 17.0, 20.0, 40.0, 80.0, 87.5, 88.5, 100.0,
          1e4, 1e30, 3.4e38),
    F64: (0.0, 1e-300, 1e-8, 0.5, 1.0, 2.5, 5.0, 10.0, 17.0, 37.0, 40.0, 100.0, 700.0, 709.5, 745.0,
          1e4, 1e30, 1e300, 1.79e308),
}
LOGIT_TARGETS = (0.0, 1.0, 0.5, 0.3, 0.875)


def _grid(xs, ys, dtype):
    x, y = np.meshgrid(np.array(xs, np.float64), np.array(ys, np.float64), indexing="ij")
    return x.reshape(-1).astype(dtype), y.reshape(-1).astype(dtype)


def _signed(values):
    return tuple(values) + tuple(-v for v in values if v)


def _hinge_pairs(dtype, margin):
    """Scores around the kink (margin - y*x = 0 exactly and one ULP away), huge and tiny."""
    m = dtype.type(margin)
    base = [m, np.nextafter(m, dtype.type(-np.inf)), np.nextafter(m, dtype.type(np.inf)), 0.0, 0.3,
            -2.0, 7.0, 1e-30, 1e4, 1e30, float(np.finfo(dtype).max), float(np.finfo(dtype).smallest_subnormal)]
    xs = _signed(base) + tuple(np.random.default_rng(3).normal(0, 2, 24))
    return _grid(xs, (-1.0, 1.0), dtype)


def _class_rows(dtype):
    """(rows, C): logit rows that break softmax cross-entropy: dominant targets (tiny
    losses), huge logits, ties, near-ties, overflow of the exact loss, and random rows."""
    info = np.finfo(dtype)
    big = 1e30 if dtype == F32 else 1e300
    rows = [
        [0.0, -40.0, -40.0, -40.0], [0.0, -10.0, -12.0, -9.0], [20.0, 0.0, 0.0, 0.0], [0.0, -100.0, -3.0, -5.0],
        [1e4, 0.0, -1e4, 5.0], [1e4, 1e4 - 1, 1e4 - 2, -1e4], [-1e4, 1e4, 0.0, 0.0],
        [big, -big, 0.0, 1.0], [big, big, -big, 0.0], [-big, -big, -big, 0.0],
        [5.0, 5.0, 5.0, 5.0], [0.0, -1e-7, 1e-7, 0.0], [float(info.max), 0.0, -1.0, 1.0],
        [float(info.max), -float(info.max), 0.0, 0.0], [88.0, 89.0, -89.0, 0.0], [709.0, 710.0, -710.0, 0.0],
        [1e-30, -1e-30, 0.0, 2e-30],
    ]
    rng = np.random.default_rng(4)
    rows += (rng.normal(0, 3, (8, 4))).tolist()
    return np.array(rows, np.float64).astype(dtype)


def _class_inputs(dtype, overflow_rows=True):
    """(input, target) with every row paired with every target class. ``overflow_rows=False``
    leaves out the rows holding the dtype's largest finite logit: with label smoothing or
    class probabilities the loss sums -log p_c over classes, and there a logit spread near
    the largest finite value overflows on the way to a finite exact result (or gives
    0 * inf = NaN for a zero target probability, as in PyTorch): a known limit."""
    rows = _class_rows(dtype)
    if not overflow_rows:
        rows = rows[~(np.abs(rows) == np.finfo(dtype).max).any(axis=1)]
    n, c = rows.shape
    return np.repeat(rows, c, axis=0), np.tile(np.arange(c), n)


def _margin_rows(dtype, margin):
    """Scores whose hinge arguments margin - x_y + x_c are 0 exactly, one ULP from 0, tiny
    against huge scores (margin - x_y first loses the margin), tiny against the margin
    (x_c - x_y first loses x_c), huge, random."""
    m = float(margin)
    big = 1e4 if dtype == F32 else 1e12
    rows = [
        [0.0, -m, 1.0, -5.0], [big + 0.5, big + 0.5 - m, big, big - 7.25], [big, big + 0.375 - m, big - m, -big],
        [1e30, 1e30, -1e30, 0.0], [1e-30, 0.0, -1e-30, 2e-30], [3.0, 3.0, 3.0, 3.0],
        [m, 1e-9, -1e-30, 1e-20],  # target at the margin, tiny others: x_c - x_y first loses x_c
        [float(np.finfo(dtype).max) / 4, 0.0, -1.0, 1.0],
    ]
    rng = np.random.default_rng(5)
    rows += rng.normal(0, 2, (8, 4)).tolist()
    rows = np.array(rows, np.float64).astype(dtype)
    # one ULP around the kink: x_c = x_y - margin (+- 1 ULP)
    kink = rows[:2].copy()
    kink[:, 2] = [np.nextafter(kink[0, 1], dtype.type(np.inf)), np.nextafter(kink[1, 1], dtype.type(-np.inf))]
    rows = np.concatenate([rows, kink])
    n, c = rows.shape
    return np.repeat(rows, c, axis=0), np.tile(np.arange(c), n)


def _probability_targets(x, dtype):
    """Class probabilities per row: one-hot, soft, uniform and with exact zeros."""
    n, c = x.shape
    rng = np.random.default_rng(6)
    q = rng.dirichlet(np.ones(c), n)
    q[::4] = np.eye(c)[np.arange(0, n, 4) % c]
    q[1::4] = 1.0 / c
    q[2::4, 0] = 0.0
    return np.asarray(q / q.sum(axis=1, keepdims=True), dtype)


# Each entry: (id, builder(dtype) -> (x, t, kwargs)). Parameters are representable in
# float32, so the exact formula and fastloss see the same numbers.
def _elementwise_variants(loss):
    spec = BY_NAME[loss]
    out = []
    if loss in ("mse_loss", "l1_loss"):
        out.append(("plain", lambda d: (*_residual_pairs(d), {})))
        out.append(("weight", lambda d: _with_weight(_moderate(*_residual_pairs(d), 1e15 if d == F32 else 1e150), d)))
    elif loss == "huber_loss":
        for delta in (1.0, 0.375, 1e-3):
            out.append((f"delta={delta}",
                        lambda d, delta=delta: (*_finite_residual(*_residual_pairs(d, (delta,)), d), {"delta": delta})))
        out.append(("weight", lambda d: _with_weight(_moderate(*_residual_pairs(d, (1.0,)), 1e15 if d == F32 else 1e150), d)))
    elif loss == "smooth_l1_loss":
        for beta in (1.0, 0.375, 2.0, 0.0):
            out.append((f"beta={beta}", lambda d, beta=beta: (*_residual_pairs(d, (beta,) if beta else ()), {"beta": beta})))
    elif loss == "binary_cross_entropy":
        out.append(("plain", lambda d: (*_grid(BCE_X[d], BCE_Y, d), {})))
        out.append(("weight", lambda d: _with_weight(_grid(BCE_X[d], BCE_Y, d), d)))
    elif loss == "binary_cross_entropy_with_logits":
        out.append(("plain", lambda d: (*_grid(_signed(LOGITS[d]), LOGIT_TARGETS, d), {})))
        for pw in (3.0, 0.25):
            out.append((f"pos_weight={pw}", lambda d, pw=pw: _with_pos_weight(_grid(_signed(LOGITS[d]), LOGIT_TARGETS, d), d, pw)))
        out.append(("weight", lambda d: _with_weight(_grid(_signed(LOGITS[d][:14]), LOGIT_TARGETS, d), d)))
    elif spec.target_domain == "sign":
        for margin in (1.0, 0.5, -0.5, 0.0):
            out.append((f"margin={margin}", lambda d, m=margin: (*_hinge_pairs(d, m), {"margin": m})))
        out.append(("weight", lambda d: _with_weight(_moderate(*_hinge_pairs(d, 1.0), 1e15 if d == F32 else 1e150), d)))
    return out


def _with_weight(xy, dtype):
    x, y = xy
    return x, y, {"weight": _weights(x, dtype)}


def _with_pos_weight(xy, dtype, pw):
    x, y = xy
    return x, y, {"pos_weight": np.full(x.shape, pw, dtype)}


def _class_weight(dtype, c=4):
    return np.array([0.5, 2.0, 1.25, 0.75][:c], dtype)


def _class_variants(loss):
    out = []
    base = _class_inputs
    summed = functools.partial(_class_inputs, overflow_rows=False)  # sums -log p over classes
    if loss == "cross_entropy":
        out.append(("plain", lambda d: (*base(d), {})))
        out.append(("weight", lambda d: (*base(d), {"weight": _class_weight(d)})))
        out.append(("label_smoothing", lambda d: (*summed(d), {"label_smoothing": 0.25})))
        out.append(("label_smoothing+weight", lambda d: (*summed(d), {"label_smoothing": 0.125, "weight": _class_weight(d)})))
        out.append(("ignore_index", lambda d: _ignored(base(d), 2)))
        out.append(("probabilities", lambda d: _probabilities(summed(d)[0], d, {})))
        out.append(("probabilities+weight+smoothing",
                    lambda d: _probabilities(summed(d)[0], d, {"weight": _class_weight(d), "label_smoothing": 0.25})))
        out.append(("(N,C,d)", lambda d: _spatial(base(d))))
    elif loss == "nll_loss":
        out.append(("plain", lambda d: (*base(d), {})))
        out.append(("weight", lambda d: (*base(d), {"weight": _class_weight(d)})))
        out.append(("ignore_index", lambda d: _ignored(base(d), 1)))
    elif loss == "multi_margin_loss":
        for p, margin in ((1, 1.0), (2, 1.0), (1, 0.5), (2, 2.0)):
            out.append((f"p={p},margin={margin}",
                        lambda d, p=p, m=margin: (*_margin_rows(d, m), {"p": p, "margin": m})))
        out.append(("weight", lambda d: (*_margin_rows(d, 1.0), {"weight": _class_weight(d)})))
    return out


def _ignored(xt, ignore):
    x, t = xt
    t = t.copy()
    t[::3] = ignore
    return x, t, {"ignore_index": ignore}


def _probabilities(x, dtype, kw):
    return x, _probability_targets(x, dtype), kw


def _spatial(xt):
    """(N, C, 2): the class axis strided in memory (the kernels' non-contiguous row path)."""
    x, t = xt
    half = len(x) // 2
    xs = np.stack([x[:half], x[half:2 * half]], axis=-1)
    ts = np.stack([t[:half], t[half:2 * half]], axis=-1)
    return xs, ts, {}


def variants():
    out = []
    for spec in LOSSES:
        found = _elementwise_variants(spec.name) if spec.kind == "elementwise" else _class_variants(spec.name)
        out += [(spec.name, vid, build) for vid, build in found]
    return out


VARIANTS = {(name, vid): build for name, vid, build in variants()}


@functools.lru_cache(maxsize=None)
def accuracy_case(name, vid, dtype_name):
    """(x, t, kwargs, exact loss terms, exact grad, subtracted terms): computed once."""
    dtype = np.dtype(dtype_name)
    x, t, kw = VARIANTS[(name, vid)](dtype)
    loss, grad, terms = reference.exact_terms(name, x, t, kw)
    return x, t, kw, loss, grad, terms


def measure(api, name, vid, dtype):
    """Worst ULP errors (loss, grad) of one variant, and where."""
    x, t, kw, e_loss, e_grad, terms = accuracy_case(name, vid, np.dtype(dtype).name)
    with np.errstate(all="ignore"):
        loss, grad = loss_fn(api, name, grad=True)(x, t, reduction="none", **kw)
    loss_err = ulp_errors(loss, e_loss, dtype)
    grad_err = ulp_errors(grad, e_grad, dtype, terms)
    return loss_err, grad_err, (x, t, loss, grad)


# --------------------------------------------------------------------------- bounds

SIMD_LEVELS = ("avx512", "avx2", "baseline")


def compiled_simd_level():
    """The level the compiled kernels run at here: x86-64-v4 (AVX-512), v3 (AVX2 + FMA) or
    the x86-64 baseline (SSE2), as ``fastloss.kernels.simd_level()`` reports it."""
    from fastloss import kernels

    name = kernels.simd_level()
    for prefix, level in (("AVX-512", "avx512"), ("AVX2", "avx2"), ("baseline", "baseline")):
        if name.startswith(prefix):
            return level
    raise AssertionError(f"unknown SIMD level {name!r}")


def numpy_simd_level():
    """The level NumPy's own SIMD loops (float32 exp, log, log1p: the NumPy backend's
    results) dispatch to here: x86-64-v4 (AVX-512), v3 (AVX2 + FMA3) or NumPy's baseline.
    Different levels are different implementations, so different last bits."""
    from numpy._core._multiarray_umath import __cpu_features__ as features

    if "X86_V4" in features:  # NumPy >= 2.4 names the x86-64 levels
        v4, v3 = features["X86_V4"], features["X86_V3"]
    else:
        v4 = features.get("AVX512_SKX", False)
        v3 = features.get("AVX2", False) and features.get("FMA3", False)
    return "avx512" if v4 else "avx2" if v3 else "baseline"


# ULP bounds per backend, SIMD level, loss and dtype: (loss, gradient). Each is the worst
# error measured on the inputs above at that level, rounded up to the next half ULP
# (measured on an AVX-512 machine at all three levels: FASTLOSS_SIMD=avx2 / baseline for
# the kernels, NPY_DISABLE_CPU_FEATURES="X86_V4 ..." / "X86_V3 X86_V4 ..." for NumPy 2.4).
# Notes:
# * l1_loss's gradient is w * sign(r): exact (0 ULP).
# * cross_entropy's gradient p_c = exp(x_c - m) / s inherits the rounding of the logit
#   difference x_c - m in the dtype: |x_c - m| * 2**-p relative, i.e. about |x_c - m| / 2
#   ULP (the conditioning of exp; PyTorch computes the same difference). The random rows
#   here have |x_c - m| up to ~16, hence the 7 / 9.5 ULP; the adversarial rows have exact
#   differences.
# * the NumPy backend computes exp, log and log1p with NumPy's own SIMD loops in float32
#   (one implementation per level) and glibc's libm in float64; its BCE-with-logits in
#   float32 rounds log1p(exp(-|x|)) twice (worst with NumPy's AVX-512 exp/log).
# * the compiled kernels meet the same bounds on every level (the baseline level, without
#   FMA, differs only in last bits below the bounds, e.g. float64 BCE 1.94 ULP vs 1.57).
COMPILED_BOUNDS = {
    "mse_loss": {F32: (2.0, 1.0), F64: (2.0, 1.0)},
    "l1_loss": {F32: (1.0, 0.0), F64: (1.0, 0.0)},
    "huber_loss": {F32: (2.0, 0.5), F64: (1.5, 1.0)},
    "smooth_l1_loss": {F32: (1.5, 1.0), F64: (1.5, 1.0)},
    "binary_cross_entropy": {F32: (1.5, 1.0), F64: (2.0, 2.0)},
    "binary_cross_entropy_with_logits": {F32: (2.0, 1.5), F64: (2.0, 2.0)},
    "cross_entropy": {F32: (3.0, 7.0), F64: (2.5, 9.5)},
    "nll_loss": {F32: (0.5, 0.0), F64: (0.5, 0.0)},
    "multi_margin_loss": {F32: (1.5, 1.5), F64: (2.0, 1.0)},
    "hinge_loss": {F32: (1.5, 0.0), F64: (1.5, 0.0)},
    "squared_hinge_loss": {F32: (2.5, 1.5), F64: (2.0, 1.5)},
}
# The compiled kernels, per level, where they differ from COMPILED_BOUNDS (nowhere today).
COMPILED_LEVEL_DIFFERENCES = {level: {} for level in SIMD_LEVELS}
# The NumPy backend, where its bounds differ from the compiled ones: on every level, and per
# NumPy's SIMD level (its float32 exp/log/log1p).
# (BCE with logits in float32 is computed in float64 and rounded once: the same on every level.)
NUMPY_DIFFERENCES = {
    ("smooth_l1_loss", F64): (1.5, 0.5),
    ("binary_cross_entropy_with_logits", F32): (1.5, 1.5),
    ("cross_entropy", F64): (2.5, 8.5),
}
NUMPY_LEVEL_DIFFERENCES = {
    "avx512": {("cross_entropy", F32): (2.0, 5.0)},
    "avx2": {("cross_entropy", F32): (2.0, 5.0)},
    "baseline": {("cross_entropy", F32): (2.0, 7.0)},
}


def _table(*differences):
    return {name: {dtype: next((d[(name, dtype)] for d in differences if (name, dtype) in d), bound)
                   for dtype, bound in by_dtype.items()}
            for name, by_dtype in COMPILED_BOUNDS.items()}


# BOUNDS[backend][level][loss][dtype] = (loss bound, gradient bound) in ULP
BOUNDS = {
    "cython": {level: _table(COMPILED_LEVEL_DIFFERENCES[level]) for level in SIMD_LEVELS},
    "numpy": {level: _table(NUMPY_LEVEL_DIFFERENCES[level], NUMPY_DIFFERENCES) for level in SIMD_LEVELS},
}

dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
variant_params = pytest.mark.parametrize("name,vid", list(VARIANTS), ids=[f"{n}-{v}" for n, v in VARIANTS])


def _backend_name(api):
    return api.NAME if hasattr(api, "NAME") else api.get_backend()


def _level(api):
    """The SIMD level ``api``'s results depend on, on this machine."""
    return numpy_simd_level() if _backend_name(api) == "numpy" else compiled_simd_level()


def bounds_for(api):
    """The bounds of ``api``'s backend at the SIMD level it runs at on this machine."""
    return BOUNDS[_backend_name(api)][_level(api)]


def test_every_loss_and_parameter_has_variants_and_bounds():
    """Driven by the registry: a loss (or a parameter, weight or target form) added without
    an accuracy variant and bound fails here."""
    for by_level in BOUNDS.values():
        assert set(by_level) == set(SIMD_LEVELS)
        for table in by_level.values():
            assert set(table) == set(BY_NAME)
            assert all(set(by_dtype) == set(DTYPES) for by_dtype in table.values())
    for spec in LOSSES:
        ids = [vid for name, vid in VARIANTS if name == spec.name]
        assert ids, spec.name
        text = " ".join(ids)
        for p in spec.params:
            assert p.name in text, (spec.name, p.name)
        assert ("weight" in text) == bool(spec.weight), spec.name
        assert ("pos_weight" in text) == spec.pos_weight
        assert ("ignore_index" in text) == spec.ignore_index
        assert ("probabilities" in text) == spec.probability_target


@dtypes
@variant_params
def test_loss_and_gradient_within_ulp_bound(api, name, vid, dtype):
    """Within the bound of the SIMD level this machine runs ``api`` at."""
    loss_bound, grad_bound = bounds_for(api)[name][dtype]
    loss_err, grad_err, (x, t, loss, grad) = measure(api, name, vid, dtype)
    worst = np.unravel_index(np.argmax(loss_err), loss_err.shape)
    assert loss_err.max() <= loss_bound, (
        f"loss off by {loss_err.max():.3g} ULP > {loss_bound} at {worst}: {loss[worst]!r}")
    worst = np.unravel_index(np.argmax(grad_err), grad_err.shape)
    assert grad_err.max() <= grad_bound, (
        f"gradient off by {grad_err.max():.3g} ULP > {grad_bound} at {worst}: {grad[worst]!r}")


def test_bounds_are_tight(api):
    """A bound more than half an ULP above the worst error measured on its inputs is stale.
    Machine-dependent: checks the bounds of the SIMD level ``api`` runs at here (run it under
    FASTLOSS_SIMD and NPY_DISABLE_CPU_FEATURES caps to check the other levels)."""
    level = _level(api)
    worst = {}
    for name, vid in VARIANTS:
        for dtype in DTYPES:
            loss_err, grad_err, _ = measure(api, name, vid, dtype)
            w = worst.setdefault((name, dtype), [0.0, 0.0])
            w[0], w[1] = max(w[0], loss_err.max()), max(w[1], grad_err.max())
    for (name, dtype), (loss_worst, grad_worst) in worst.items():
        loss_bound, grad_bound = bounds_for(api)[name][dtype]
        assert loss_bound - loss_worst < 0.5, (level, name, dtype.name, "loss", loss_worst)
        assert grad_bound - grad_worst < 0.5, (level, name, dtype.name, "grad", grad_worst)


# --------------------------------------------------------------------------- reductions


def _exact_sum(values):
    with mpmath.workprec(reference.EXACT_PREC):
        return mpmath.fsum(values.reshape(-1)), mpmath.fsum(abs(v) for v in values.reshape(-1))


def _representable_terms(x, t, kw, e_loss, e_grad, terms, dtype):
    """The elements (rows of class losses) whose exact terms the reduction test keeps."""
    limit = np.finfo(dtype).max / (4 * e_loss.size) if dtype == F64 else None
    with mpmath.workprec(reference.EXACT_PREC):
        bad = np.vectorize(lambda v: bool(_overflows(v, dtype) or (limit is not None and abs(v) > limit)),
                           otypes=[bool])(e_loss)
    if not bad.any():
        return x, t, kw, e_loss, e_grad, terms
    if e_loss.shape == x.shape:  # elementwise: weights are full-shaped here
        keep = ~bad
        kw = {k: (v[keep] if isinstance(v, np.ndarray) and v.shape == x.shape else v) for k, v in kw.items()}
        return x[keep], t[keep], kw, e_loss[keep], e_grad[keep], terms[keep]
    keep = ~bad.reshape(len(x), -1).any(axis=1)  # class losses: whole rows (first axis)
    return x[keep], t[keep], kw, e_loss[keep], e_grad[keep], terms[keep]


@dtypes
@variant_params
def test_sum_and_mean_within_relative_bound(api, name, vid, dtype):
    """"sum" and "mean" against the exact sum of the exact terms. Each term is within
    B ULP (BOUNDS), i.e. B * 2**(1-p) relative; the float64 sum adds at most n * 2**-53
    of the sum of |terms|, and the result is rounded once to the dtype (half an ULP). A
    total (or mean) whose exact value overflows the dtype must be inf; a float32 mean whose
    sum overflows float32 must not (the sum runs in float64). The mean's gradient is the
    "sum" gradient times 1/divisor rounded to the dtype: two more roundings, each at most
    one ULP of the result.

    Left out of the reduced call: terms whose exact value overflows the dtype (checked per
    term above), and, in float64, terms above max / (4 n): float64 input whose terms are
    near the float64 maximum can overflow the float64 accumulator on the way to a
    representable total (a known limit: there is no wider type; only float32 has headroom)."""
    loss_bound, grad_bound = bounds_for(api)[name][dtype]
    x, t, kw, e_loss, e_grad, terms = accuracy_case(name, vid, dtype.name)
    x, t, kw, e_loss, e_grad, terms = _representable_terms(x, t, kw, e_loss, e_grad, terms, dtype)
    info = np.finfo(dtype)
    total, magnitude = _exact_sum(e_loss)
    x64, t64, kw64 = reference._float64_args(x, t, kw)
    with np.errstate(all="ignore"):  # the formula's terms may overflow; its divisor does not
        divisor = REFERENCES[name].formula(x64, t64, **kw64)[1]
    f = loss_fn(api, name, grad=True)
    with np.errstate(all="ignore"):
        got_sum = f(x, t, reduction="sum", **kw)[0]
        got_mean, grad_mean = f(x, t, reduction="mean", **kw)
    slack = (loss_bound * 2.0 ** -info.nmant + e_loss.size * 2.0 ** -53) * magnitude
    with mpmath.workprec(reference.EXACT_PREC):
        for what, got, exact, scale in (("sum", got_sum, total, 1), ("mean", got_mean, total / divisor, divisor)):
            if _overflows(exact, dtype):
                assert got == (np.inf if exact > 0 else -np.inf), (what, float(got), float(exact))
                continue
            err = abs(mpmath.mpf(float(got)) - exact)
            assert err <= slack / scale + _ulp(exact, dtype) / 2, (what, float(got), float(exact))
        grad_err = ulp_errors(grad_mean, e_grad / divisor, dtype, terms / divisor)
    assert grad_err.max() <= grad_bound + 2, grad_err.max()


# --------------------------------------------------------------------------- vs PyTorch

# Inputs where PyTorch (2.13, CPU) loses precision: the tails of BCE with logits (its loss
# is a difference of two numbers near |x|; its float32 gradient 1 - sigmoid cancels), the
# tiny losses of confident softmax rows (log(s) with s = 1 + tiny), multi-margin hinges
# against huge scores (margin - x_y rounds the margin away).
TORCH_LOSES = {
    ("binary_cross_entropy_with_logits", F32): (_f(F32, -40, -20, -17, 17, 20, 40, -88),
                                                _f(F32, 0, 0, 0, 1, 1, 1, 0)),
    ("binary_cross_entropy_with_logits", F64): (_f(F64, -40, -20, -100, 17, 20, 40, 700),
                                                _f(F64, 0, 0, 0, 1, 1, 1, 1)),
    ("cross_entropy", F32): (_f(F32, [0, -40, -40, -40], [20, 0, 0, 0], [0, -10, -12, -9]), np.zeros(3, np.int64)),
    ("cross_entropy", F64): (_f(F64, [0, -40, -40, -40], [20, 0, 0, 0], [40, 0, 0.5, 0]), np.zeros(3, np.int64)),
    ("multi_margin_loss", F32): (_f(F32, [1e30, 1e30, -1e30, 0.0], [1e4 + 0.5, 1e4 - 0.5, 1e4, 0]), np.zeros(2, np.int64)),
    ("multi_margin_loss", F64): (_f(F64, [1e30, 1e30, -1e30, 0.0], [1e17, 1e17, 3.0, 0]), np.zeros(2, np.int64)),
}
TORCH_LOSS_ULPS = 1000  # what "PyTorch loses precision" means here: worse than this


def _torch_none(name, x, t):
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    out = reference.torch_function(name)(xt, torch.tensor(t), reduction="none")
    out.sum().backward()
    return out.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("name,dtype", list(TORCH_LOSES), ids=[f"{n}-{d.name}" for n, d in TORCH_LOSES])
def test_accurate_where_pytorch_is_not(api, name, dtype):
    """fastloss within its bound on every element; PyTorch (in the same dtype) off by more
    than TORCH_LOSS_ULPS on some element, loss and gradient. The PyTorch part is skipped
    without torch; the fastloss part always runs."""
    x, t = TORCH_LOSES[(name, dtype)]
    e_loss, e_grad, terms = reference.exact_terms(name, x, t, {})
    loss, grad = loss_fn(api, name, grad=True)(x, t, reduction="none")
    loss_bound, grad_bound = bounds_for(api)[name][dtype]
    assert ulp_errors(loss, e_loss, dtype).max() <= loss_bound
    assert ulp_errors(grad, e_grad, dtype, terms).max() <= grad_bound
    assert (loss > 0).all(), "every one of these losses is positive, however small"
    if not reference.HAVE_TORCH:
        pytest.skip("the PyTorch comparison needs torch")
    t_loss, t_grad = _torch_none(name, x, t)
    assert ulp_errors(t_loss, e_loss, dtype).max() > TORCH_LOSS_ULPS
    assert ulp_errors(t_grad, e_grad, dtype, terms).max() > TORCH_LOSS_ULPS
