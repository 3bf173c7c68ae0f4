"""Parameter and weight extremes (SPEC11 item 5), for every loss that has the parameter or
weight, both dtypes, every reduction, NAME and NAME_grad, both backends:

* subnormal beta / delta / margin; margin at +-(float max);
* one infinite or NaN weight (and pos_weight): NaN/inf only where PyTorch autograd of the
  same formula has them; subnormal weights; float32 weights whose sum overflows float32;
* residuals and hinge / margin arguments above half the float max;
* float32 cross-entropy with label smoothing over C > 2**24 classes (float64 sums).

Oracles: the exact value (mpmath, tests/support/reference.py) rounded to the compute dtype - never
NaN or inf where it is finite - and PyTorch where it has the loss (a gradient PyTorch
returns finite must be finite), the float64 formulas without PyTorch.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

import reference
from adv_data_support import (BY_NAME, FLOATS, NUMPY_API, REDUCTIONS, WEIGHTED_NAMES, call,
                                          exact_results, reference_results)
from fastloss._registry import LOSSES, Interval, OneOf
from helpers import BACKENDS, COMPILED_BACKENDS, rtol_for
from losses import REFERENCES, referenced_losses

F64MAX = float(np.finfo(np.float64).max)
F32MAX = float(np.finfo(np.float32).max)
MAX = {np.float32: F32MAX, np.float64: F64MAX}
dtypes = pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)


def assert_near(actual, expected, dtype, rtol=None, grad=False, what=""):
    """``expected`` (float64) rounded to ``dtype``: NaN exactly where it is NaN, inf of the
    same sign exactly where it is inf (overflow of the exact value included), elsewhere
    within rtol (plus two subnormal steps; gradients: plus rtol * max |expected|)."""
    rtol = rtol_for(dtype) if rtol is None else rtol
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.asarray(np.asarray(expected, np.float64).astype(dtype), np.float64)
    a = np.asarray(actual, np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    bad_nan = np.isnan(a) != np.isnan(e)
    assert not bad_nan.any(), f"{what}: NaN at {np.argwhere(bad_nan).tolist()[:5]}: got {a[bad_nan][:5]}, want {e[bad_nan][:5]}"
    inf = np.isinf(e) | np.isinf(a)
    assert (a[inf] == e[inf]).all(), f"{what}: inf mismatch: got {a[inf][:6]}, want {e[inf][:6]}"
    fin = np.isfinite(e)
    scale = float(np.max(np.abs(e[fin]))) if grad and fin.any() else 0.0
    tol = rtol * np.abs(e[fin]) + rtol * scale + 2 * float(np.finfo(dtype).smallest_subnormal)
    err = np.abs(a[fin] - e[fin])
    assert (err <= tol).all(), f"{what}: got {a[fin][err > tol][:5]}, want {e[fin][err > tol][:5]}"


def check_all(api, name, x, t, kw, oracle, dtype, rtol=None, what="", reductions=REDUCTIONS):
    """NAME and NAME_grad against ``oracle(name, x, t, kw, reduction) -> (loss, grad)``."""
    for reduction in reductions:
        loss, grad = call(api, name, True, x, t, kw, reduction)
        plain = call(api, name, False, x, t, kw, reduction)
        e_loss, e_grad = oracle(name, x, t, kw, reduction)
        assert_near(plain, e_loss, dtype, rtol, what=f"{what} {name} loss ({reduction})")
        assert_near(loss, e_loss, dtype, rtol, what=f"{what} {name}_grad loss ({reduction})")
        assert_near(grad, e_grad, dtype, rtol, grad=True, what=f"{what} {name} grad ({reduction})")


def finite_where_torch_is(api, name, x, t, kw, dtype, what=""):
    """A gradient (and loss) PyTorch (float64 autograd on the same values) returns finite is
    finite here too (rounded to the dtype: where the torch value fits it)."""
    if not reference.HAVE_TORCH or name in reference.NOT_IN_TORCH:
        return
    for reduction in REDUCTIONS:
        loss, grad = call(api, name, True, x, t, kw, reduction)
        r_loss, r_grad = reference.torch_reference(name, x, t, kw, reduction)
        for mine, theirs, label in ((loss, r_loss, "loss"), (grad, r_grad, "grad")):
            with np.errstate(over="ignore"):
                fits = np.isfinite(np.asarray(theirs, np.float64).astype(dtype))
            mine = np.asarray(mine)
            assert np.isfinite(mine[fits]).all(), \
                f"{what} {name} {label} ({reduction}) not finite where PyTorch's is: {mine[fits][~np.isfinite(mine[fits])][:4]}"


def backends_agree(api, name, x, t, kw, dtype, what=""):
    """The compiled backend and the NumPy backend: same NaN / inf positions, close values."""
    if api is NUMPY_API or reference.HAVE_TORCH:  # with PyTorch, both are held to it
        return
    for reduction in REDUCTIONS:
        mine = call(api, name, True, x, t, kw, reduction)
        theirs = call(NUMPY_API, name, True, x, t, kw, reduction)
        assert_near(mine[0], np.asarray(theirs[0], np.float64), dtype, what=f"{what} loss vs numpy backend ({reduction})")
        assert_near(mine[1], np.asarray(theirs[1], np.float64), dtype, grad=True,
                    what=f"{what} grad vs numpy backend ({reduction})")


# --------------------------------------------------------------------------- subnormal parameters

SUBNORMAL_PARAMS = {
    np.float64: [5e-324, 1e-310, 2.2250738585072014e-308 / 2, 2.2250738585072014e-308],
    np.float32: [1e-40, 1.401298464324817e-45, 1e-46, 5e-324, 1e-38],
}


def _residual_inputs(dtype):
    tiny = float(np.finfo(dtype).smallest_subnormal)
    x = np.array([0.0, 1.0, tiny, -2.0, 3.0, -tiny, 0.5], dtype)
    t = np.array([0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.5], dtype)  # r == 0 at 0, 4 and 6
    return x, t


# The thresholds of the registry: parameters over [0, inf) or (0, inf) of the residual losses
# (beta, delta: gradient of the sign of x - y; not sigmoid_focal_loss's gamma, an exponent,
# nor poisson_nll_loss's eps)
THRESHOLDS = [(spec.name, p.name) for spec in referenced_losses() for p in spec.params
              if isinstance(p.domain, Interval) and p.domain.low == 0 and p.domain.high is None
              and REFERENCES[spec.name].gradient_sign == "x - y"]
# The losses with a margin parameter, and their other parameters' choices (p = 1, 2)
MARGIN_LOSSES = [spec.name for spec in LOSSES if any(p.name == "margin" for p in spec.params)]


def _choices(name, with_default=False):
    """Each (non-default) value of the loss's parameters that take one of a few values."""
    return [{p.name: v} for p in BY_NAME[name].params if isinstance(p.domain, OneOf)
            for v in p.domain.values if with_default or v != p.default]


@dtypes
@pytest.mark.parametrize("name,param", THRESHOLDS)
def test_subnormal_beta_and_delta(api, name, param, dtype):
    """A subnormal (or, in float32, below-float32) beta / delta: the beta -> 0 limit where
    r == 0 (loss 0, gradient 0, no NaN), the reference's values elsewhere (r / beta may be
    huge: never 0 * inf or 1 / beta overflowing)."""
    x, t = _residual_inputs(dtype)
    for value in SUBNORMAL_PARAMS[dtype]:
        kw = {param: value}
        loss, grad = call(api, name, True, x, t, kw, "none")
        assert not np.isnan(loss).any() and not np.isnan(grad).any(), f"{param}={value}: {loss}, {grad}"
        zero = x == t
        assert (loss[zero] == 0).all() and (grad[zero] == 0).all(), f"{param}={value}: r == 0 gives {loss[zero]}, {grad[zero]}"
        check_all(api, name, x, t, kw, reference_results, dtype, what=f"{param}={value!r}")
        check_all(api, name, x, t, kw, exact_results, dtype, what=f"{param}={value!r} (exact)")


@dtypes
@pytest.mark.parametrize("name", MARGIN_LOSSES)
def test_subnormal_margins(api, name, dtype):
    """margin +-subnormal (values of the compute dtype, so that every hinge argument is
    exact): exact values, and the reference's; never 0 * inf or an overflowing 1 / margin."""
    spec = BY_NAME[name]
    tiny = float(np.finfo(dtype).smallest_subnormal)
    if spec.kind == "elementwise":
        x = np.array([0.0, tiny, -tiny, 1.0, -0.5, 2 * tiny], dtype)
        t = np.array([1.0, 1.0, -1.0, -1.0, 1.0, -1.0], dtype)
    else:
        x = np.array([[0.0, tiny, -tiny], [0.5, 0.25, 1.0], [0.0, 0.0, 0.0]], dtype)
        t = np.array([0, 2, 2])
    margins = (tiny, -tiny, 3 * tiny, float(np.float32(1e-40)) if dtype == np.float32 else 1e-310)
    for margin in margins:
        for extra in [{}] + _choices(name):
            kw = {"margin": margin, **extra}
            check_all(api, name, x, t, kw, exact_results, dtype, what=f"margin={margin!r} {extra}")
            check_all(api, name, x, t, kw, reference_results, dtype, what=f"margin={margin!r} {extra}")


@dtypes
@pytest.mark.parametrize("sign", [1, -1], ids=["+max", "-max"])
@pytest.mark.parametrize("name", MARGIN_LOSSES)
def test_margin_at_the_float_max(api, name, sign, dtype):
    """margin = +-(float max) of the dtype (and of float64 for float32 input): exact values;
    inf only where the exact value overflows the dtype (h**2, 2 * h), never NaN."""
    spec = BY_NAME[name]
    m = MAX[dtype]
    for margin in {sign * m, sign * F64MAX}:
        if spec.kind == "elementwise":
            # one active element (y * x = 1), the others at the kink (y * x = margin: h = 0)
            x = np.array([1.0, m, -m, m, m], dtype)
            t = np.array([1.0, 1.0, -1.0, 1.0, 1.0], dtype)
            if sign < 0:
                x = -x
            weights = [None, np.array([0.25, 1.0, 1.0, 1.0, 1.0], dtype)]
            for w in weights:
                kw = {"margin": margin} | ({} if w is None else {"weight": w})
                check_all(api, name, x, t, kw, exact_results, dtype, what=f"margin={margin!r} weight={w}")
        else:
            # per row one active class (z = margin), the others inactive (x_c = -margin)
            x = np.array([[0.0, 0.0, -sign * m], [0.0, -sign * m, 0.0]], dtype)
            t = np.array([0, 2])
            for extra in _choices(name, with_default=True) or [{}]:
                kw = {"margin": margin, **extra}
                check_all(api, name, x, t, kw, exact_results, dtype, what=f"margin={margin!r} {extra}")
                finite_where_torch_is(api, name, x, t, kw, dtype, what=f"margin={margin!r} {extra}")


# --------------------------------------------------------------------------- huge arguments


def _huge_cases(name, dtype):
    """(x, t, kwargs, label): residuals / hinge arguments above half the float max, chosen
    so that no exact *sum* overflows (the losses of single terms may): each loss's record
    (tests/support/losses.py: half_max_cases)."""
    return REFERENCES[name].half_max_cases(dtype, MAX[dtype])


@dtypes
@pytest.mark.parametrize("name", [spec.name for spec in BY_NAME.values()])
def test_arguments_above_half_the_float_max(api, name, dtype):
    """Gradients finite wherever the exact value is (2r/n with r > max/2, 2h/(C N) for
    multi-margin p=2, 2 w h with w < 1/2): never inf from an intermediate 2r or h*h; finite
    wherever PyTorch's are."""
    for x, t, kw, label in _huge_cases(name, dtype):
        check_all(api, name, x, t, kw, exact_results, dtype, what=label)
        finite_where_torch_is(api, name, x, t, kw, dtype, what=label)


# --------------------------------------------------------------------------- weights


def _weight_call(name, dtype, special=None, which="weight", rng_seed=5):
    """A small valid call with a full elementwise (or class) weight, one entry ``special``."""
    spec = BY_NAME[name]
    rng = np.random.default_rng(rng_seed)
    if spec.kind == "elementwise":
        shape = (4, 6)
        if spec.input_domain == "unit":
            x = rng.uniform(0.1, 0.9, shape)
        else:
            x = rng.normal(0, 1.5, shape)
        if spec.target_domain == "sign":
            t = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
        elif REFERENCES[name].targets_in_unit_interval:
            t = rng.uniform(0, 1, shape)
        elif spec.target_domain in ("nonnegative", "positive"):  # counts, amounts
            t = rng.uniform(0.25, 3.0, shape)
        else:
            t = rng.normal(0, 1, shape)
        kw = {"weight": rng.uniform(0.5, 2.0, shape)} if spec.weight else {}
        if spec.pos_weight:
            kw["pos_weight"] = rng.uniform(0.5, 2.0, shape)
        if special is not None:
            kw[which][1, 2] = special
        kw = {k: v.astype(dtype) for k, v in kw.items()}
        return x.astype(dtype), t.astype(dtype), kw
    n_classes = 4
    x = rng.normal(0, 1.5, (6, n_classes))
    t = np.array([2, 0, 1, 2, 3, 0])
    kw = {"weight": rng.uniform(0.5, 2.0, n_classes)}
    if special is not None:
        kw["weight"][2] = special
    kw = {"weight": kw["weight"].astype(dtype)}
    return x.astype(dtype), t, kw


WEIGHT_VARIANTS = [pytest.param(n, "weight", id=f"{n}-weight") for n in WEIGHTED_NAMES] + [
    pytest.param(n, "pos_weight", id=f"{n}-pos_weight") for n in WEIGHTED_NAMES if BY_NAME[n].pos_weight]


@dtypes
@pytest.mark.parametrize("special", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("name,which", WEIGHT_VARIANTS)
def test_one_special_weight(api, name, which, special, dtype):
    """One infinite or NaN weight: NaN / inf exactly where PyTorch autograd of the same
    formula has them (the float64 formulas without PyTorch), the backends agreeing; for an
    infinite elementwise weight (and a class weight without smoothing) every other gradient
    entry is finite."""
    spec = BY_NAME[name]
    x, t, kw = _weight_call(name, dtype, special, which)
    extras = [{}]
    if spec.probability_target:
        extras.append({"label_smoothing": 0.1})
    for extra in extras:
        kwe = {**kw, **extra}
        if reference.HAVE_TORCH or name in reference.NOT_IN_TORCH:  # PyTorch's NaN placement
            check_all(api, name, x, t, kwe, reference_results, dtype, what=f"{which}={special} {extra}")
        backends_agree(api, name, x, t, kwe, dtype, what=f"{which}={special} {extra}")
        if math.isinf(special) and not extra:
            for reduction in REDUCTIONS:
                _, grad = call(api, name, True, x, t, kwe, reduction)
                others = np.ones(grad.shape, bool)
                if spec.kind == "elementwise":
                    others[1, 2] = False
                else:
                    others[t == 2] = False
                assert np.isfinite(grad[others]).all(), \
                    f"{which}={special} ({reduction}): non-finite gradient away from that element: {grad}"


# small enough that 1 / sum(weight) overflows the dtype (24 weights of 1 .. 4 units)
SUBNORMAL_WEIGHT = {np.float64: 1e-318, np.float32: 1e-41}


@dtypes
@pytest.mark.parametrize("name,which", WEIGHT_VARIANTS)
def test_subnormal_weights(api, name, which, dtype):
    """Every weight subnormal, their sum too: the exact (finite) values; "mean" never
    multiplies by an overflowing 1 / sum(weight). (rtol 1e-4 / 2e-3: products with
    subnormal weights keep few bits.)"""
    x, t, kw = _weight_call(name, dtype)
    rng = np.random.default_rng(9)
    kw[which] = (SUBNORMAL_WEIGHT[dtype] * rng.integers(1, 5, np.shape(kw[which]))).astype(dtype)
    check_all(api, name, x, t, kw, exact_results, dtype, rtol=1e-4 if dtype == np.float64 else 2e-3,
              what=f"subnormal {which}")


@pytest.mark.parametrize("name,which", WEIGHT_VARIANTS)
def test_float32_weights_whose_sum_overflows_float32(api, name, which):
    """float32 weights of 1e38 .. 3e38 (their sum overflows float32, each weighted term
    fits): finite exact results ("mean" divides by a float64 sum)."""
    spec = BY_NAME[name]
    dtype = np.float32
    x, t, kw = _weight_call(name, dtype)
    rng = np.random.default_rng(10)
    if spec.kind == "elementwise":
        # small terms: residuals, hinge arguments and BCE slopes <= 0.25 (w * term fits float32)
        shape = x.shape
        if spec.input_domain == "unit":
            x = np.full(shape, 0.5, dtype)
            t = rng.uniform(0.45, 0.55, shape).astype(dtype)
        elif spec.target_domain == "sign":
            margin = 1.0
            t = np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(dtype)
            x = (t * (margin - rng.uniform(-0.25, 0.25, shape))).astype(dtype)
        elif REFERENCES[name].soft_labels:  # logits: small terms around 0
            x = rng.uniform(-0.5, 0.5, shape).astype(dtype)
        elif spec.target_domain in ("nonnegative", "positive"):  # the deviances: mu near y
            x = (np.log(t.astype(np.float64)) + rng.uniform(-0.25, 0.25, shape)).astype(dtype)
        else:
            x = (t + rng.uniform(-0.25, 0.25, shape)).astype(dtype)
        kw[which] = rng.choice([1e38, 2e38, 3e38], shape).astype(dtype)
        if which == "pos_weight":
            kw["pos_weight"] = rng.choice([1.0, 2.0], shape).astype(dtype)
            kw["weight"] = rng.choice([1e38, 1.5e38], shape).astype(dtype)
    else:
        x = rng.uniform(-0.5, 0.5, x.shape).astype(dtype)  # -log p <= 2, hinge sums <= 3
        kw["weight"] = np.full(x.shape[1], 1e38, dtype)
        if any(p.name == "margin" for p in spec.params):  # hinge sums of margin 0.5
            kw["margin"] = 0.5
            x = np.zeros(x.shape, dtype)
    check_all(api, name, x, t, kw, exact_results, dtype, what=f"huge float32 {which}")


# --------------------------------------------------------------------------- many classes


N_CLASSES_BIG = 2**24 + 2**21
BIG_TARGET = 7


@functools.lru_cache(maxsize=2)
def _big_class_case(weighted):
    """x (1, C) float32, the class weight (or None) and the float64 reference (loss, grad)
    of label_smoothing=1 (computed once for both backends)."""
    c = N_CLASSES_BIG
    rng = np.random.default_rng(21)
    x = rng.standard_normal((1, c), dtype=np.float32)
    w = rng.uniform(0.5, 1.5, c).astype(np.float32) if weighted else None
    x64 = x[0].astype(np.float64)
    x64 -= x64.max()
    logp = x64 - np.log(np.sum(np.exp(x64)))
    w64 = np.ones(c) if w is None else w.astype(np.float64)
    wy = w64[BIG_TARGET]
    loss = np.dot(w64, -logp) / c / wy  # eps = 1: the smoothing term alone, "mean" over w[y]
    np.exp(logp, out=logp)  # p
    logp *= np.sum(w64)
    logp -= w64
    logp *= 1.0 / (c * wy)
    return x, w, loss, logp


# The NumPy backend counts the classes exactly (a Python int): only its weight sum is tested.
BIG_VARIANTS = [pytest.param(module, True, id=f"{label}-class-weight") for label, module in BACKENDS] + [
    pytest.param(module, False, id=f"{label}-unweighted") for label, module in COMPILED_BACKENDS]


@pytest.mark.parametrize("api,weighted", BIG_VARIANTS)
def test_float32_label_smoothing_over_more_than_2_24_classes(api, weighted):
    """float32 cross-entropy with label_smoothing=1 over 2**24 + 2**21 classes: the class
    count and the sum of class weights are float64 (a float32 running count stops at
    2**24): loss and gradient within float32 rtol of a float64 computation."""
    x, w, e_loss, e_grad = _big_class_case(weighted)
    kw = {"label_smoothing": 1.0} | ({"weight": w} if weighted else {})
    loss, grad = api.cross_entropy_grad(x, np.array([BIG_TARGET]), reduction="mean", **kw)
    assert_near(loss, e_loss, np.float32, what="loss")
    err = np.abs(grad[0].astype(np.float64) - e_grad)
    scale = np.max(np.abs(e_grad))
    assert err.max() <= 1e-5 * scale, f"gradient off by {err.max() / scale:.3g} of its largest entry"
