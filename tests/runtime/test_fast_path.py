"""The compiled fast path (fastloss/kernels.pyx, "fast path") gives the general path's bits.

A public function first offers its call to the kernel's ``fast`` method, which takes the
common forms (exact float32/float64 ndarrays, C-contiguous, native byte order, scalar
parameters of exactly their Python type inside their domains; an elementwise weight, a
pos_weight or a quantile that is a float, a 0-d array, an array like the input or a vector
over its last axis; class weights of length C; the Hessian policy as an exact float or
"exact"; ``out`` arrays or pairs that overlap nothing) and
returns None for everything else, which the general front layer (fastloss/_api.py) then
checks and computes. Here every loss, twin (loss, ``_grad``, ``_grad_hess``), reduction,
dtype and weight form runs both ways: through the fast path (asserted to be taken) and
through the general path (forced by giving the reduction as ``np.str_``, which the fast path
leaves to the general one), with the same bits, with and without ``out``.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastloss
from cases import DTYPES, one_case_per_param_set
from fastloss._registry import BY_NAME, REDUCTIONS
from helpers import COMPILED_BACKENDS, assert_bitwise

pytestmark = pytest.mark.skipif(not COMPILED_BACKENDS, reason="the fast path exists only in the compiled backend")

# The plain case of every loss with a fast path: default parameters, no operand.
PLAIN = [c for c in one_case_per_param_set() if not c.params and c.form != "probabilities"
         and BY_NAME[c.loss].operand_domain is None]
TWINS = {0: "", 1: "_grad", 2: "_grad_hess"}


def weight_forms(spec, x):
    """None, and for elementwise losses with a weight: a float and an array like the input."""
    forms = {"no weight": None}
    if spec.kind == "elementwise" and spec.weight:
        rng = np.random.default_rng(5)
        forms["float weight"] = 0.5
        forms["array weight"] = rng.uniform(0.25, 2.0, x.shape).astype(x.dtype)
    return forms


def fast_method(spec):
    return fastloss.kernels.KERNELS[spec.kernel_name].fast


def fast_call(spec, x, t, weight, reduction, out, want, hessian="exact", params=None):
    """The kernel's fast method called as the generated function calls it."""
    third = weight if spec.kind == "elementwise" else (-100 if spec.ignore_index else None)
    return fast_method(spec)(x, t, third, reduction, None, out, want, hessian, params)


def outputs(result, want):
    return (result,) if want == 0 else tuple(result)


def assert_both_paths_agree(fn, x, t, kw, reduction, want, what):
    """fn (a public function) gives the same bits through the fast path and through the
    general path (forced by the reduction as np.str_), with and without ``out``."""
    fast = outputs(fn(x, t, reduction=reduction, **kw), want)
    general = outputs(fn(x, t, reduction=np.str_(reduction), **kw), want)
    for a, b, name in zip(fast, general, ("loss", "grad", "hess")):
        assert_bitwise(a, b, f"{what}: {name}")
    if want:
        # into out: the fast path writes the caller's arrays and returns them
        bufs = tuple(np.full(x.shape, np.nan, x.dtype) for _ in range(want))
        out = bufs if want == 2 else bufs[0]
        got = outputs(fn(x, t, reduction=reduction, out=out, **kw), want)
        for k, buf in enumerate(bufs):
            assert got[1 + k] is buf
            assert_bitwise(buf, general[1 + k], f"{what}: out[{k}]")
        assert_bitwise(got[0], general[0], f"{what}: loss with out")


def test_every_plain_case_is_here():
    assert {c.loss for c in PLAIN} == {s.name for s in BY_NAME.values() if s.operand_domain is None}


@pytest.mark.parametrize("want", [0, 1, 2])
@pytest.mark.parametrize("reduction", [r for r in REDUCTIONS if r in ("mean", "sum", "none")])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", PLAIN, ids=str)
def test_fast_path_gives_the_general_paths_bits(case, dtype, reduction, want):
    spec = case.spec
    x, t, _ = case.generate(dtype)
    if spec.kind == "classes" and x.ndim == 3:  # (N, C, K) -> (N K, C): the fast path's form
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]))
        t = np.ascontiguousarray(t.reshape(-1))
    fn = getattr(fastloss, spec.name + TWINS[want])
    for what, weight in weight_forms(spec, x).items():
        kw = {} if weight is None else {"weight": weight}
        declined = spec.kind == "classes" and (x.ndim != 2 or t.dtype != np.int64)
        taken = fast_call(spec, x, t, weight, reduction, None, want)
        assert (taken is None) == declined, f"{what}: the fast path {'took' if taken is not None else 'declined'} it"
        assert_both_paths_agree(fn, x, t, kw, reduction, want, what)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_fast_path_declines_what_the_general_path_must_check(dtype):
    """Forms the fast path leaves to the general path: a Hessian policy it does not know
    (the general path refuses a bad one before writing), an out pair that overlaps, an out
    overlapping the weight, a weight of another dtype or shape, a float weight beyond
    float32, a weighted "mean" whose divisor (the weights' sum) the general path rescales."""
    spec = BY_NAME["l1_loss"]
    rng = np.random.default_rng(2)
    x = rng.standard_normal(100).astype(dtype)
    t = rng.standard_normal(100).astype(dtype)
    g, h = np.empty_like(x), np.empty_like(x)
    w = rng.uniform(0.5, 1.5, 100).astype(dtype)
    other = np.float64 if dtype == np.float32 else np.float32
    assert fast_call(spec, x, t, None, "sum", (g, h), 2, 1.0) is not None
    assert fast_call(spec, x, t, None, "sum", (g, h), 2, "exact") is not None
    declined = [
        (None, "sum", (g, h), 2, -1.0), (None, "sum", (g, h), 2, float("inf")), (None, "sum", (g, h), 2, 1),
        (None, "sum", (g, h), 2, np.str_("exact")), (None, "sum", (g, h), 2, "Exact"),
        (None, "sum", (g, g), 2, 1.0), (None, "sum", (g, h[::-1]), 2, 1.0), (None, "sum", [g, h], 2, 1.0),
        (None, "sum", (g, h), 2, None), (None, "sum", (g,), 2, 1.0), (w, "sum", (w, h), 2, 1.0),
        (w, "sum", w, 1, "exact"), (w.astype(other), "sum", None, 1, "exact"), (w[:50], "sum", None, 1, "exact"),
        (w.reshape(10, 10), "sum", None, 1, "exact"), (1, "sum", None, 0, "exact"),
        (np.float64(0.5), "sum", None, 0, "exact"),
    ]
    if dtype == np.float32:
        declined.append((1e39, "sum", None, 0, "exact"))
    # the weights' sum, the divisor of l1_loss's weighted "mean", so small that 1 / sum
    # overflows: the general path scales weights and sum by a power of two first
    tiny = np.ldexp(np.ones(100, dtype), np.finfo(dtype).minexp - 10)
    declined += [(tiny, "mean", None, 1, "exact"), (float(tiny[0]), "mean", None, 0, "exact")]
    assert fast_call(spec, x, t, w, "mean", None, 1) is not None
    assert fast_call(spec, x, t, tiny, "sum", None, 1) is not None
    for weight, reduction, out, want, hessian in declined:
        assert fast_call(spec, x, t, weight, reduction, out, want, hessian) is None, (weight, reduction, out, hessian)
    # the general path then does what it does: refuses a bad policy before writing,
    g[:] = 7
    with pytest.raises(ValueError, match="hessian"):
        fastloss.l1_loss_grad_hess(x, t, reduction="sum", out=(g, h), hessian=-1.0)
    assert np.all(g == 7)
    # and computes an out that overlaps the weight through a copy, with the same bits
    expected = fastloss.l1_loss_grad(x, t, weight=w.copy(), reduction="sum")
    ww = w.copy()
    loss, grad = fastloss.l1_loss_grad(x, t, weight=ww, reduction="sum", out=ww)
    assert_bitwise(loss, expected[0])
    assert_bitwise(grad, expected[1])


def test_a_float_weight_is_the_one_element_array_of_the_general_path():
    """float32: the weight is rounded to float32 once, as np.asarray(w, np.float32)."""
    x = np.linspace(-3, 3, 1000, dtype=np.float32)
    t = np.zeros(1000, np.float32)
    w = 0.1  # not a float32 value
    fast = fastloss.mse_loss_grad_hess(x, t, weight=w, reduction="sum")
    general = fastloss.mse_loss_grad_hess(x, t, weight=np.asarray([w]), reduction="sum")
    for a, b in zip(fast, general):
        assert_bitwise(a, b)
    np.testing.assert_array_equal(fast[2], np.float32(2) * np.float32(w))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", [c for c in PLAIN if c.spec.kind == "elementwise"], ids=str)
def test_gradient_and_hessian_without_the_loss_are_the_grad_hess_bits(case, dtype):
    """``want=3`` (the boosting objectives' call, fastloss._boosting): the kernel computes the
    gradient and Hessian with no loss sum, so the loss's own math is compiled out; the
    gradient and Hessian keep the bits of NAME_grad_hess, for every elementwise loss, weight
    form, reduction and both sides of the block size (4096) and of the parallel threshold."""
    spec = case.spec
    policy = spec.hessian_policy if spec.hessian_policy is not None else "exact"
    for n in (1, 37, 4096 + 33, 50_000):
        x, t, _ = case.generate(dtype)
        x, t = np.resize(x, n), np.resize(t, n)
        for what, weight in weight_forms(spec, x).items():
            kw = {} if weight is None else {"weight": weight}
            for reduction in ("mean", "sum"):
                g, h = np.full_like(x, np.nan), np.full_like(x, np.nan)
                got = fast_call(spec, x, t, weight, reduction, (g, h), 3, policy)
                assert got is not None and got[0] is g and got[1] is h
                _, eg, eh = getattr(fastloss, spec.name + "_grad_hess")(x, t, reduction=reduction, **kw)
                assert_bitwise(g, eg, f"{what} n={n} {reduction}: grad")
                assert_bitwise(h, eh, f"{what} n={n} {reduction}: hess")
    x, t, _ = case.generate(dtype)
    assert fast_call(spec, x, t, None, "none", None, 3, policy) is None  # "none" is a loss per element


# Every parameter set of the records (scalar parameters given explicitly), on the losses the
# fast path serves (no operand; class losses with class indices).
WITH_PARAMS = [c for c in one_case_per_param_set() if c.params and c.form != "probabilities"
               and BY_NAME[c.loss].operand_domain is None
               and all(name in {p.name for p in BY_NAME[c.loss].params} for name, _ in c.params)]


def test_every_loss_with_parameters_has_a_case():
    assert {c.loss for c in WITH_PARAMS} == {s.name for s in BY_NAME.values()
                                            if s.params and s.operand_domain is None}


@pytest.mark.parametrize("want", [0, 1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", WITH_PARAMS, ids=str)
def test_explicit_parameters_take_the_fast_path_with_the_general_paths_bits(case, dtype, want):
    """A parameter passed explicitly (any value in its domain, of its exact Python type) is
    computed by the fast path, with the bits of the general path; the generated function
    passes them as a tuple (None when every one is its default object)."""
    spec = case.spec
    x, t, kw = case.generate(dtype)
    if spec.kind == "classes" and x.ndim > 2:  # (N, C, d...) -> (N d..., C): the fast path's form
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]))
        t = np.ascontiguousarray(t.reshape(-1), dtype=np.int64)
    params = tuple(kw.get(p.name, p.default) for p in spec.params)
    params = tuple(p.type(v) for p, v in zip(spec.params, params))  # exact Python types
    kw = {p.name: v for p, v in zip(spec.params, params)}
    fn = getattr(fastloss, spec.name + TWINS[want])
    for reduction in ("mean", "sum", "none"):
        assert fast_call(spec, x, t, None, reduction, None, want, params=params) is not None, (reduction, kw)
        fast = outputs(fn(x, t, reduction=reduction, **kw), want)
        general = outputs(fn(x, t, reduction=np.str_(reduction), **kw), want)
        for a, b, name in zip(fast, general, ("loss", "grad", "hess")):
            assert_bitwise(a, b, f"{kw} {reduction}: {name}")


def test_the_fast_path_declines_parameters_the_general_path_converts_or_refuses():
    """A NumPy scalar, an int for a float parameter, a float for an int one, a bool for a
    float one, a value outside the domain (NaN included), an int beyond 2**53, the wrong
    count: the general path converts the value or raises its error, so the fast path
    declines. The errors are the general path's, raised before anything is written."""
    x = np.linspace(-2, 2, 64)
    t = np.zeros(64)
    huber = BY_NAME["huber_loss"]
    margin = BY_NAME["multi_margin_loss"]
    for params in [(np.float64(0.5),), (1,), (True,), (-1.0,), (0.0,), (float("nan"),), (), (0.5, 0.5), [0.5]]:
        assert fast_call(huber, x, t, None, "sum", None, 1, params=params) is None, params
    assert fast_call(huber, x, t, None, "sum", None, 1, params=(0.5,)) is not None
    xc = np.linspace(-2, 2, 40).reshape(8, 5)
    tc = np.arange(8, dtype=np.int64) % 5
    for params in [(1.0, 1.0), (3, 1.0), (2**60, 1.0), (1, float("inf")), (np.int64(1), 1.0), (1, 1)]:
        assert fast_call(margin, xc, tc, None, "sum", None, 1, params=params) is None, params
    assert fast_call(margin, xc, tc, None, "sum", None, 1, params=(2, 0.5)) is not None
    g = np.full_like(x, 7.0)
    with pytest.raises(ValueError, match="delta"):
        fastloss.huber_loss_grad(x, t, delta=-1.0, out=g)
    with pytest.raises(TypeError, match="delta"):
        fastloss.huber_loss_grad(x, t, delta="1", out=g)
    assert np.all(g == 7.0)
    # converted by the general path, with the bits of the exact type through the fast path
    for a, b in zip(fastloss.huber_loss_grad(x, t, delta=np.float64(0.5)), fastloss.huber_loss_grad(x, t, delta=0.5)):
        assert_bitwise(a, b)


# Every parameter set with a weight, a pos_weight or a quantile (class indices for the class
# losses): the fast path takes each form it knows (a float, a 0-d array, an array like the
# input, a vector over its last axis, class weights of length C) with the general path's bits.
WEIGHED = [c for c in one_case_per_param_set() if c.form != "probabilities"
           and {"weight", "pos_weight", "quantile"} & set(dict(c.params))]


def test_every_weight_and_operand_has_a_case():
    assert {c.loss for c in WEIGHED} == {s.name for s in BY_NAME.values() if s.weight or s.operand}


def fast_kwargs_call(spec, x, t, kw, reduction, out, want):
    """The kernel's fast method called as the generated function calls it, from keywords."""
    params = tuple(kw.get(p.name, p.default) for p in spec.params)
    hessian = kw.get("hessian", spec.hessian_policy) if want == 2 and spec.hessian_policy is not None else "exact"
    if spec.kind == "classes":
        return fast_method(spec)(x, t, kw.get("ignore_index", -100) if spec.ignore_index else None, reduction,
                                 None, out, want, hessian, params, kw.get("weight"))
    return fast_method(spec)(x, t, kw.get("weight"), reduction, None, out, want, hessian, params,
                             kw.get(spec.operand) if spec.operand else None)


@pytest.mark.parametrize("want", [0, 1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", WEIGHED, ids=str)
def test_weights_and_operands_take_the_fast_path_with_the_general_paths_bits(case, dtype, want):
    spec = case.spec
    x, t, kw = case.generate(dtype)
    if spec.kind == "classes" and x.ndim > 2:  # (N, C, d...) -> (N d..., C): the fast path's form
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]))
        t = np.ascontiguousarray(t.reshape(-1), dtype=np.int64)
    for p in spec.params:  # scalar parameters of their exact Python types
        if p.name in kw:
            kw[p.name] = p.type(kw[p.name])
    variants = [kw]
    for name in ("weight", "pos_weight", "quantile"):  # a 0-d array and the Python float
        if isinstance(kw.get(name), np.ndarray) and kw[name].ndim == 0:
            variants.append({**kw, name: float(kw[name])})
    fn = getattr(fastloss, spec.name + TWINS[want])
    for kw in variants:
        forms = {k: getattr(v, "shape", v) for k, v in kw.items()}
        # declined: a weight that repeats along an inner axis (the general path materialises it)
        column = any(isinstance(v, np.ndarray) and v.ndim == 2 and v.shape[-1] == 1 and x.shape[-1] != 1
                     for v in kw.values())
        for reduction in ("mean", "sum", "none"):
            declined = column
            taken = fast_kwargs_call(spec, x, t, kw, reduction, None, want)
            assert (taken is None) == declined, f"{forms} {reduction}: {'took' if taken is not None else 'declined'}"
            assert_both_paths_agree(fn, x, t, kw, reduction, want, f"{forms} {reduction}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_fast_path_declines_operands_and_class_weights_the_general_path_must_check(dtype):
    """A pos_weight, quantile or class weight of another dtype, length or shape, a quantile
    outside (0, 1) (NaN too), an out overlapping the operand, a weighted "mean" whose divisor
    the general path rescales: declined, and the general path raises or computes as always."""
    rng = np.random.default_rng(3)
    other = np.float64 if dtype == np.float32 else np.float32
    x = rng.standard_normal((20, 5)).astype(dtype)
    y = (rng.random((20, 5)) < 0.5).astype(dtype)
    g = np.empty_like(x)
    bce = BY_NAME["binary_cross_entropy_with_logits"]
    pw = rng.uniform(0.5, 2, 5).astype(dtype)
    assert fast_kwargs_call(bce, x, y, {"pos_weight": pw}, "sum", g, 1) is not None
    for bad in (pw.astype(other), pw[:4], pw.reshape(5, 1), np.tile(pw, 2), pw[::-1], 2, np.float64(2.0)):
        assert fast_kwargs_call(bce, x, y, {"pos_weight": bad}, "sum", g, 1) is None, bad
    full = np.ascontiguousarray(np.broadcast_to(pw, x.shape))
    assert fast_kwargs_call(bce, x, y, {"pos_weight": full}, "sum", full, 1) is None  # out is the operand

    pinball = BY_NAME["pinball_loss"]
    q = np.array([0.1, 0.25, 0.5, 0.75, 0.9], dtype)
    assert fast_kwargs_call(pinball, x, y, {"quantile": q}, "sum", g, 1) is not None
    assert fast_kwargs_call(pinball, x, y, {"quantile": 0.3}, "sum", g, 1) is not None
    for bad in (0.0, 1.0, -0.0, float("nan"), 1.5, 1, np.float64(0.5), None,
                np.array([0.1, 0.2, 1.0, 0.5, 0.5], dtype), np.array([0.1, np.nan, 0.5, 0.5, 0.5], dtype),
                np.array([0.0, 0.2, 0.3, 0.5, 0.5], dtype)):
        assert fast_kwargs_call(pinball, x, y, {"quantile": bad}, "sum", g, 1) is None, bad
    g[...] = 7
    for bad in (1.0, np.array([0.1, np.nan, 0.5, 0.5, 0.5], dtype)):
        with pytest.raises(ValueError, match="quantile"):
            fastloss.pinball_loss_grad(x, y, quantile=bad, out=g)
    assert np.all(g == 7)

    ce = BY_NAME["cross_entropy"]
    tc = rng.integers(0, 5, 20)
    w = rng.uniform(0.5, 2, 5).astype(dtype)
    assert fast_kwargs_call(ce, x, tc, {"weight": w}, "mean", g, 1) is not None
    for bad in (w.astype(other), w[:4], w.reshape(1, 5), np.tile(w, 2)[::2], 0.5):
        assert fast_kwargs_call(ce, x, tc, {"weight": bad}, "mean", g, 1) is None, bad
    assert fast_kwargs_call(ce, x, tc, {"weight": w}, "mean", w, 1) is None
    # weights whose sum makes 1 / sum overflow (or, in float32, underflow): the general path
    # scales both by a power of two first (_normal_weight_scale)
    tiny = np.ldexp(np.ones(5, dtype), np.finfo(dtype).minexp - 10)  # subnormal powers of two
    assert fast_kwargs_call(ce, x, tc, {"weight": tiny}, "mean", g, 1) is None
    assert fast_kwargs_call(ce, x, tc, {"weight": tiny}, "sum", g, 1) is not None
    loss, grad = fastloss.cross_entropy_grad(x, tc, weight=tiny)
    expected = fastloss.cross_entropy_grad(x, tc, weight=np.ones(5, dtype))
    assert_bitwise(loss, expected[0])
    assert_bitwise(grad, expected[1])
