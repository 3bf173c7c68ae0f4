"""Properties, for random calls (hypothesis): any loss of the registry, any shape (0-d and
empty included), float32 or float64, any memory layout, parameters and weights anywhere in
their documented domains, values from tiny to 1e4:

* the compiled backend agrees with the NumPy backend (to the contract's tolerances);
* ``NAME_grad``'s loss is bitwise ``NAME``'s;
* results do not depend on memory layout or on the thread count (bitwise);
* losses are >= 0 wherever the loss is documented non-negative (every loss but NLL, whose
  input is any log-probability), given non-negative weights;
* gradients have the documented sign.

CI stays bounded and reproducible: a fixed number of examples, no deadline, derandomized
(the examples depend only on the test), no example database.
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import fastloss  # noqa: E402
import fastloss.numpy_backend  # noqa: E402
from cases import index_shape  # noqa: E402
from fastloss._registry import BY_NAME, LOSSES, REDUCTIONS, OneOf  # noqa: E402
from helpers import (COMPILED_BACKENDS, assert_bitwise, assert_grad_close, assert_value_close,  # noqa: E402
                     loss_fn, rtol_for)
from losses import REFERENCES, referenced_names  # noqa: E402
import reference  # noqa: E402

PROPERTIES = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NAMES = referenced_names()
LIMIT = 1e4
# every backend: the NumPy backend, and the compiled one when built
modules = pytest.mark.parametrize("module", [fastloss.numpy_backend] + [m for _, m in COMPILED_BACKENDS],
                                  ids=["numpy"] + [n for n, _ in COMPILED_BACKENDS])


def param_strategy(p):
    """Where a parameter of the registry is drawn from: its whole documented domain. A set
    of values: each of them. An interval: its closed ends themselves, and floats across it;
    an unbounded side reaches 10 beyond the bound (from 1e-3 above an open or closed lower
    bound: draws not too close to it), [-5, 5] when neither side is bounded."""
    d = p.domain
    if isinstance(d, OneOf):
        return st.sampled_from(list(d.values))
    closed_low = d.low is not None and d.closed in ("both", "left")
    closed_high = d.high is not None and d.closed in ("both", "right")
    if d.low is not None and d.high is not None:
        inner = st.floats(float(d.low), float(d.high), exclude_min=not closed_low, exclude_max=not closed_high)
    elif d.low is not None:
        inner = st.floats(d.low + 1e-3, d.low + 10.0)
    elif d.high is not None:
        inner = st.floats(d.high - 10.0, d.high - 1e-3)
    else:
        inner = st.floats(-5.0, 5.0)
    ends = [st.just(float(v)) for v, closed in ((d.low, closed_low), (d.high, closed_high)) if closed]
    return st.one_of(*ends, inner) if ends else inner


# Every parameter of the registry, by name.
PARAMS = {p.name: param_strategy(p) for spec in LOSSES for p in spec.params}
# Where each loss is documented non-negative (given non-negative weights), as a condition on
# the target (None: it may be negative), and the documented sign of its gradient
# (_sign_violations): the records of tests/support/losses.py.
NON_NEGATIVE_IF = {name: REFERENCES[name].non_negative_if for name in NAMES}
GRADIENT_SIGN = {name: REFERENCES[name].gradient_sign for name in NAMES}


def test_strategies_cover_the_registry():
    assert {p.name for spec in LOSSES for p in spec.params} == set(PARAMS)
    assert set(NON_NEGATIVE_IF) == set(BY_NAME), set(BY_NAME) ^ set(NON_NEGATIVE_IF)
    assert set(GRADIENT_SIGN) == set(BY_NAME), set(BY_NAME) ^ set(GRADIENT_SIGN)
    for spec in LOSSES:
        for p in spec.params:  # every drawn value is valid
            assert p.valid(p.default)


def _floats(dtype, lo, hi):
    return st.floats(lo, hi, width=32 if dtype == np.float32 else 64, allow_nan=False, allow_infinity=False)


def _weight(draw, shape, dtype, form_choices):
    form = draw(st.sampled_from(form_choices))
    if form is None:
        return None
    wshape = {"full": shape, "last": shape[-1:], "scalar": ()}[form]
    return draw(hnp.arrays(dtype, wshape, elements=_floats(dtype, 0.0, 4.0)))


@st.composite
def loss_calls(draw, names=tuple(NAMES)):
    """(name, input, target, kwargs) of a valid call."""
    spec = BY_NAME[draw(st.sampled_from(names))]
    dtype = np.dtype(draw(st.sampled_from([np.float32, np.float64])))
    if spec.kind == "elementwise":
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    else:
        c = draw(st.integers(1, 5))
        ndim = draw(st.sampled_from([1, 2] if spec.max_input_dims else [1, 2, 3]))
        n, d = draw(st.integers(0, 4)), draw(st.integers(0, 3))
        shape = {1: (c,), 2: (n, c), 3: (n, c, d)}[ndim]
    unit = spec.input_domain == "unit"
    x = draw(hnp.arrays(dtype, shape, elements=_floats(dtype, 0.0, 1.0) if unit else _floats(dtype, -LIMIT, LIMIT)))
    kwargs = {p.name: draw(PARAMS[p.name]) for p in spec.params}
    if spec.kind == "elementwise":
        if spec.target_domain == "sign":
            elements = st.sampled_from([-1.0, 1.0])
        elif spec.target_domain in ("nonnegative", "positive"):  # counts, amounts (log link)
            low = 0.0 if spec.target_domain == "nonnegative" else float(np.finfo(dtype).tiny)
            elements = _floats(dtype, low, LIMIT)
            # raw predictions where exp(x) and y exp(-x) stay finite in float32 (their
            # overflow, an infinite loss, is the accuracy and extremes tests' matter)
            x = np.clip(x, -40, 40).astype(dtype)
        # [0, 1]: probabilities, labels; always for the soft-label losses (BCE with logits):
        # a target outside [0, 1] makes the loss a difference of terms much larger than it
        # (x = 0, y = 370: 370 log 2 - 369 log 2), which float32 cannot resolve in any order
        elif spec.target_domain == "unit" or REFERENCES[spec.name].targets_in_unit_interval or draw(st.booleans()):
            elements = _floats(dtype, 0.0, 1.0)
        else:
            elements = _floats(dtype, -LIMIT, LIMIT)
        t = draw(hnp.arrays(dtype, shape, elements=elements))
        forms = [None, "full", "scalar"] + (["last"] if shape else [])
        if spec.weight:
            kwargs["weight"] = _weight(draw, shape, dtype, forms)
        if spec.pos_weight:
            kwargs["pos_weight"] = _weight(draw, shape, dtype, forms)
    else:
        n_classes = shape[0 if len(shape) == 1 else 1]
        if spec.probability_target and draw(st.booleans()):
            t = draw(hnp.arrays(dtype, shape, elements=_floats(dtype, 0.0, 1.0)))
        else:
            choices = list(range(n_classes))
            if spec.ignore_index:
                kwargs["ignore_index"] = ignore = draw(st.sampled_from([-100, 0, 3]))
                choices.append(ignore)
            t = draw(hnp.arrays(np.int64, index_shape(shape), elements=st.sampled_from(choices)))
        if spec.weight:
            kwargs["weight"] = draw(st.one_of(st.none(), hnp.arrays(dtype, (n_classes,),
                                                                    elements=_floats(dtype, 0.0, 4.0))))
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return spec.name, x, t, kwargs


def _layouts(a, how):
    """The same values as ``a`` in another memory layout."""
    a = np.asarray(a)
    if a.ndim == 0 or how == "C":
        return a
    if how == "F":
        return np.asfortranarray(a)
    if how == "strided":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    flipped = np.flip(a).copy()  # "negative": negative strides on every axis
    return np.flip(flipped)


# --------------------------------------------------------------------------- properties


def over_calls(test):
    """A property of drawn calls and reductions, on every backend."""
    return modules(PROPERTIES(given(call=loss_calls(), reduction=st.sampled_from(REDUCTIONS))(test)))


def _fused(module, call, reduction, **extra):
    """``NAME_grad(...)`` of a drawn call: (loss, grad), inf and NaN allowed."""
    name, x, t, kw = call
    with np.errstate(all="ignore"):
        return loss_fn(module, name, grad=True)(x, t, reduction=reduction, **kw, **extra)


@pytest.mark.skipif(not COMPILED_BACKENDS, reason="one backend only")
@PROPERTIES
@given(call=loss_calls(), reduction=st.sampled_from(REDUCTIONS))
def test_backends_agree(call, reduction):
    name, x, t, kw = call
    rtol = rtol_for(x.dtype)
    with np.errstate(all="ignore"):
        loss, grad = loss_fn(fastloss, name, grad=True)(x, t, reduction=reduction, **kw)
        np_loss, np_grad = loss_fn(fastloss.numpy_backend, name, grad=True)(x, t, reduction=reduction, **kw)
        terms = loss_fn(fastloss.numpy_backend, name)(x, t, reduction="none", **kw)
    assert type(loss) is type(np_loss) and np.shape(loss) == np.shape(np_loss)
    if reduction == "none":
        assert_value_close(loss, np_loss, rtol)
    else:  # float64 sums in different orders: an absolute slack of the summed magnitudes
        scale = float(np.sum(np.abs(terms), dtype=np.float64)) / (max(np.size(terms), 1) if reduction == "mean" else 1)
        np.testing.assert_allclose(float(loss), float(np_loss), rtol=rtol, atol=rtol * scale, equal_nan=True)
    # a gradient component that is a difference of larger terms (softmax - q with label
    # smoothing 1: p W - w with p near 1/2) is compared with a slack relative to those terms
    # (their exact magnitudes, as test_accuracy measures ULP of terms), not to the tiny result
    expected = np.asarray(np_grad, np.float64)
    finite = np.abs(expected[np.isfinite(expected)])
    slack = max(float(finite.max(initial=0)), _term_scale(name, x, t, kw, reduction))
    np.testing.assert_allclose(np.asarray(grad, np.float64), expected, rtol=rtol, atol=rtol * slack,
                               equal_nan=True, err_msg="grad")


def _term_scale(name, x, t, kw, reduction):
    """The largest exact term a gradient component subtracts (reference.exact_terms), with
    the reduction's scale."""
    if not np.size(x):
        return 0.0
    with np.errstate(all="ignore"):
        terms = np.abs(reference.exact_terms(name, x, t, kw)[2].astype(np.float64))
        top = float(np.max(terms[np.isfinite(terms)], initial=0))
        if reduction == "mean":
            x64, t64, kw64 = reference._float64_args(x, t, kw)
            divisor = REFERENCES[name].formula(x64, t64, **kw64)[1]
            top = top / divisor if divisor else top
    return top


@over_calls
def test_fused_loss_is_the_plain_loss_bit_for_bit(module, call, reduction):
    name, x, t, kw = call
    loss, _ = _fused(module, call, reduction)
    with np.errstate(all="ignore"):
        assert_bitwise(loss, loss_fn(module, name)(x, t, reduction=reduction, **kw))


@PROPERTIES
@given(call=loss_calls(), how=st.sampled_from(["F", "strided", "negative"]),
       which=st.sampled_from(["input", "target", "all"]), reduction=st.sampled_from(REDUCTIONS))
@modules
def test_layout_does_not_matter(module, call, how, which, reduction):
    name, x, t, kw = call
    f = loss_fn(module, name, grad=True)
    xv = _layouts(x, how) if which != "target" else x
    tv = _layouts(t, how) if which != "input" else t
    kwv = {k: (_layouts(v, how) if isinstance(v, np.ndarray) and which == "all" else v) for k, v in kw.items()}
    with np.errstate(all="ignore"):
        e_loss, e_grad = f(x, t, reduction=reduction, **kw)
        loss, grad = f(xv, tv, reduction=reduction, **kwv)
    assert_bitwise(loss, e_loss)
    assert_bitwise(grad, e_grad)


def _enlarged(x, t, kw, copies):
    """The call repeated ``copies`` times along the first axis (weights of the input's
    shape too), so that the kernels split it over blocks and threads."""
    def rep(a):
        return np.concatenate([a] * copies, axis=0)

    kw = {k: (rep(v) if isinstance(v, np.ndarray) and v.shape == x.shape else v) for k, v in kw.items()}
    return rep(x), rep(t) if np.ndim(t) else t, kw


@pytest.mark.skipif(not COMPILED_BACKENDS, reason="the NumPy backend runs on one thread")
@PROPERTIES
@given(call=loss_calls(), reduction=st.sampled_from(REDUCTIONS))
def test_thread_count_does_not_matter(call, reduction):
    name, x, t, kw = call
    if x.ndim == 0 or x.size == 0 or (x.ndim == 1 and BY_NAME[name].kind == "classes"):
        return  # nothing to repeat along a batch axis
    x, t, kw = _enlarged(x, t, kw, -(-40_000 // x.size))  # >= 40_000 elements: ~10 blocks
    f = loss_fn(fastloss, name, grad=True)
    with np.errstate(all="ignore"):
        base_loss, base_grad = f(x, t, reduction=reduction, n_threads=1, **kw)
        for n in (2, 3, 7):
            loss, grad = f(x, t, reduction=reduction, n_threads=n, **kw)
            assert_bitwise(loss, base_loss, f"loss, {n} threads")
            assert_bitwise(grad, base_grad, f"grad, {n} threads")


@PROPERTIES
@given(call=loss_calls())
@modules
def test_losses_are_non_negative(module, call):
    name, x, t, kw = call
    condition = NON_NEGATIVE_IF[name]
    if condition is None or not condition(np.asarray(t)):
        return
    with np.errstate(all="ignore"):
        terms = loss_fn(module, name)(x, t, reduction="none", **kw)
        total = loss_fn(module, name)(x, t, reduction="sum", **kw)
        # A weight of 0 times an infinite term (tweedie_deviance at power 2 with a target of
        # 0) is NaN, as the weight multiplies the term: not a negative loss.
        zero_inf = np.zeros(np.shape(terms), bool)
        if "weight" in kw and BY_NAME[name].kind == "elementwise":
            bare = loss_fn(module, name)(x, t, reduction="none", **{k: v for k, v in kw.items() if k != "weight"})
            zero_inf = np.isinf(bare) & (np.broadcast_to(kw["weight"], np.shape(bare)) == 0)
    assert ((terms >= 0) | (np.isnan(terms) & zero_inf)).all(), terms[~(terms >= 0)][:5]
    assert total >= 0 or (np.isnan(total) and zero_inf.any())


def _sign_violations(name, x, t, kw, grad):
    """Gradient components of the wrong documented sign (a boolean mask, or None where
    the loss documents no sign for this call)."""
    rule = GRADIENT_SIGN[name]
    x64 = np.asarray(x, np.float64)
    if BY_NAME[name].kind == "elementwise":
        t64 = np.asarray(t, np.float64)
        if callable(rule):  # the loss's own rule (its record: poisson_nll_loss, kl_div)
            return rule(x64, t64, kw, np.asarray(grad, np.float64))
        if rule == "x - y":
            return grad * np.sign(x64 - t64) < 0  # grad has the sign of x - y (or is 0)
        if rule == "-y":
            return grad * t64 > 0  # -y where the hinge is active, 0 elsewhere
        if rule == "x - log y":  # the deviances: the sign of mu - y (y = 0: >= 0)
            with np.errstate(divide="ignore"):
                d = x64 - np.log(t64)
            return (grad * np.sign(d) < 0) & (np.abs(d) > 1e-12 * (1 + np.abs(x64)))
        assert rule == "hard targets", (name, rule)
        # BCE with logits: for a hard target, >= 0 at y = 0 (pushes x down), <= 0 at y = 1
        return ((t64 == 0) & (grad < 0)) | ((t64 == 1) & (grad > 0))
    assert rule in ("target class", "target class only"), (name, rule)
    if np.asarray(t).dtype.kind == "f" or kw.get("label_smoothing", 0) > 0:
        return None  # soft targets: the sign follows p - q, no fixed pattern
    ax = 0 if x.ndim == 1 else 1
    n_classes = x.shape[ax]
    hot = np.moveaxis(np.arange(n_classes).reshape((-1,) + (1,) * (x.ndim - 1 - ax)) ==
                      np.expand_dims(t, ax), 0, 0) if x.ndim > 1 else np.arange(n_classes) == t
    # indices: <= 0 at the target class, >= 0 elsewhere (NLL: 0 elsewhere)
    wrong = np.where(hot, grad > 0, grad < 0)
    return wrong | (~hot & (grad != 0)) if rule == "target class only" else wrong


@over_calls
def test_gradients_have_the_documented_sign(module, call, reduction):
    name, x, t, kw = call
    _, grad = _fused(module, call, reduction)
    wrong = _sign_violations(name, x, t, kw, grad)
    if wrong is not None:
        assert not wrong.any(), (grad[wrong][:5], np.asarray(x)[wrong][:5])
