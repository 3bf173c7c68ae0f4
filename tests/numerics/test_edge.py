"""Edge cases: empty batches, all-ignored batches, 0-d and unbatched inputs, NaN and inf,
extreme values against mpmath, float64 accumulation of float32 sums, result types."""

from __future__ import annotations

import math

import numpy as np
import pytest

import reference
from cases import CASES, CLASS_WEIGHT, DTYPES, Case, cases_of, make_weight, representative_cases
from fastloss._registry import BY_NAME, LOSSES, REDUCTIONS
from helpers import (assert_bitwise, assert_grad_close, assert_value_close, check_result_types, loss_fn,
                     loss_shape, rtol_for)
from losses import REFERENCES, referenced_losses, referenced_names

dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
reductions = pytest.mark.parametrize("reduction", REDUCTIONS)
NAMES = [spec.name for spec in LOSSES]
ELEMENTWISE_NAMES = [spec.name for spec in LOSSES if spec.kind == "elementwise"]


# --------------------------------------------------------------------------- empty


def _empty_variants():
    """(loss, input shape, target kind, kwargs-maker) for every empty-batch form."""
    out = []
    for spec in LOSSES:
        if spec.kind == "elementwise":
            shapes = [(0,), (0, 3), (3, 0)]
            weights = [None]
            if spec.weight:
                weights += ["full", "scalar", "last"]
            for shape in shapes:
                for w in weights:
                    params = {} if w is None else {"weight": w}
                    if spec.pos_weight:
                        out.append(pytest.param(spec.name, shape, "values", {**params, "pos_weight": "last"},
                                                id=f"{spec.name}-{shape}-pos_weight" + (f"-weight={w}" if w else "")))
                    out.append(pytest.param(spec.name, shape, "values", params,
                                            id=f"{spec.name}-{shape}" + (f"-weight={w}" if w else "")))
        else:
            shapes = [(0, 4)] + ([(0, 4, 2), (2, 4, 0)] if spec.max_input_dims is None else [])
            forms = ["indices"] + (["probabilities"] if spec.probability_target else [])
            for shape in shapes:
                for form in forms:
                    for params in ({}, {"weight": CLASS_WEIGHT}) if spec.weight else ({},):
                        out.append(pytest.param(spec.name, shape, form, params,
                                                id=f"{spec.name}-{shape}-{form}-{sorted(params)}"))
    return out


def _empty_call(name, shape, form, params, dtype):
    spec = BY_NAME[name]
    rng = np.random.default_rng(0)
    x = np.zeros(shape, dtype)
    if spec.kind == "elementwise":
        t = np.zeros(shape, dtype)
    elif form == "probabilities":
        t = np.zeros(shape, dtype)
    else:
        t = np.zeros(loss_shape(spec, shape), np.int64)
    kw = {k: make_weight(rng, v, shape, dtype, positive=True) for k, v in params.items()}
    return x, t, kw


@dtypes
@reductions
@pytest.mark.parametrize("name,shape,form,params", _empty_variants())
def test_empty_batch(api, name, shape, form, params, reduction, dtype):
    """NaN for "mean", 0 for "sum", an empty array for "none"; an empty gradient."""
    x, t, kw = _empty_call(name, shape, form, params, dtype)
    loss, grad = loss_fn(api, name, grad=True)(x, t, reduction=reduction, **kw)
    plain = loss_fn(api, name)(x, t, reduction=reduction, **kw)
    check_result_types(loss, grad, x, reduction, loss_shape(BY_NAME[name], shape))
    assert_bitwise(plain, loss)
    assert grad.size == 0
    if reduction == "mean":
        assert math.isnan(loss)
    elif reduction == "sum":
        assert loss == 0 and not math.copysign(1.0, loss) < 0
    else:
        assert loss.size == 0


# --------------------------------------------------------------------------- all ignored


def _all_ignored_variants():
    out = []
    for spec in LOSSES:
        if not spec.ignore_index:
            continue
        for shape in [(5, 4), (4,), (2, 4, 3)]:
            for ignore in (None, -100, 2, -1):
                for params in [{}, {"weight": CLASS_WEIGHT}] + [{p.name: 0.2} for p in spec.params]:
                    out.append(pytest.param(spec.name, shape, ignore, params,
                                            id=f"{spec.name}-{shape}-ignore={ignore}-{sorted(params.items())}"))
    return out


@dtypes
@reductions
@pytest.mark.parametrize("name,shape,ignore,params", _all_ignored_variants())
def test_all_ignored_batch(api, name, shape, ignore, params, reduction, dtype):
    """Every target is ignore_index: "mean" is NaN (0/0, as PyTorch), "sum" is 0, "none" is
    all zeros, and the gradient is zero (as PyTorch's) for every reduction."""
    spec = BY_NAME[name]
    rng = np.random.default_rng(1)
    x = np.asarray(rng.normal(size=shape), dtype)
    t = np.full(loss_shape(spec, shape), -100 if ignore is None else ignore, np.int64)
    kw = {"weight": make_weight(rng, CLASS_WEIGHT, shape, dtype)} if "weight" in params else dict(params)
    if ignore is not None:
        kw["ignore_index"] = ignore
    loss, grad = loss_fn(api, name, grad=True)(x, t, reduction=reduction, **kw)
    check_result_types(loss, grad, x, reduction, loss_shape(spec, shape))
    if reduction == "mean":
        assert math.isnan(loss)
    elif reduction == "sum":
        assert loss == 0
    else:
        assert (loss == 0).all()
    assert (grad == 0).all(), f"gradient of an all-ignored batch: {grad.reshape(-1)[:6]}"
    for ref in _references():  # and the float64 formulas agree, and PyTorch when installed
        ref_loss, ref_grad = ref(name, x, t, kw, reduction)
        assert_value_close(loss, ref_loss, rtol_for(dtype))
        assert_grad_close(grad, ref_grad, rtol_for(dtype))


def _references():
    """The references an edge case is held to: the float64 formulas on every machine (they
    are the reference where torch is missing), and PyTorch too where it is installed."""
    return [reference.formula_reference] + ([reference.torch_reference] if reference.HAVE_TORCH else [])


@dtypes
@reductions
@pytest.mark.parametrize("case", [c for c in representative_cases() if "weight" in dict(c.params)], ids=str)
def test_all_zero_weights(api, case, reduction, dtype):
    """Every weight 0: "mean" divides by a zero weight sum where PyTorch does (NaN, and a
    NaN gradient exactly where PyTorch's autograd has one: where a weight multiplies the
    derivative, ``reference.depends_on``), "sum" and "none" are 0. The hinges, which PyTorch
    lacks, follow their formula written in torch: NaN at the active terms, 0 on the flat side."""
    x, t, kw = case.generate(dtype)
    kw = {**kw, "weight": np.zeros_like(kw["weight"])}
    with np.errstate(all="ignore"):
        loss, grad = loss_fn(api, case.loss, grad=True)(x, t, reduction=reduction, **kw)
    if case.loss in reference.NOT_IN_TORCH:
        # "mean" divides by the zero weight sum (or the zero sum of the targets' class weights),
        # or by the element count (pseudo_huber_loss, as huber_loss): then the gradient is 0
        # as for "sum"
        zero_divisor = reduction == "mean" and BY_NAME[case.loss].mean_divisor != "count"
        assert (np.isnan(grad) == reference.depends_on(case.loss, x, t, kw)).all() if zero_divisor \
            else (grad == 0).all()
    for ref in _references():  # the formulas always (the reference without torch), PyTorch if installed
        with np.errstate(all="ignore"):
            ref_loss, ref_grad = ref(case.loss, x, t, kw, reduction)
        assert_value_close(loss, ref_loss, rtol_for(dtype))
        np.testing.assert_array_equal(np.isnan(grad), np.isnan(ref_grad), err_msg=ref.__name__)
        assert_grad_close(grad, ref_grad, rtol_for(dtype))


# --------------------------------------------------------------------------- 0-d, unbatched


@dtypes
@reductions
@pytest.mark.parametrize("name", ELEMENTWISE_NAMES)
def test_zero_dimensional_elementwise_inputs(api, name, reduction, dtype):
    """0-d arrays, NumPy scalars (and Python floats for float64) are a one-element loss."""
    case = Case(name, (), "values", ())
    x, t, kw = case.generate(dtype)
    f = loss_fn(api, name, grad=True)
    one_loss, one_grad = f(x.reshape(1), t.reshape(1), reduction=reduction, **kw)
    forms = [(x, t), (x[()], t[()])] + ([(float(x), float(t))] if dtype == np.float64 else [])
    for xi, ti in forms:
        loss, grad = f(xi, ti, reduction=reduction, **kw)
        check_result_types(loss, grad, x, reduction, ())
        if reduction == "none":
            assert_bitwise(loss, one_loss.reshape(()))
        else:
            assert_bitwise(loss, one_loss)
        assert_bitwise(grad, one_grad.reshape(()))


@dtypes
@reductions
@pytest.mark.parametrize("case", [c for n in referenced_names("classes") for c in cases_of(n) if len(c.shape) == 1],
                         ids=str)
def test_unbatched_class_input_is_a_batch_of_one(api, case, reduction, dtype):
    x, t, kw = case.generate(dtype)
    f = loss_fn(api, case.loss, grad=True)
    loss, grad = f(x, t, reduction=reduction, **kw)
    b_loss, b_grad = f(x[None], np.asarray(t)[None], reduction=reduction, **kw)
    check_result_types(loss, grad, x, reduction, ())
    assert_bitwise(loss, b_loss.reshape(()) if reduction == "none" else b_loss)
    assert_bitwise(grad, b_grad[0])


# --------------------------------------------------------------------------- NaN and inf

SPECIALS = [math.nan, math.inf, -math.inf, 0.0, 1.5, -2.0, 40.0, -40.0]
UNIT_INPUTS = [0.0, 1.0, 0.5, 1e-30, 1 - 2.0**-53, 1e-200, 5e-324, 0.25]
TARGETS = {None: [math.nan, math.inf, -math.inf, 0.0, 1.0, 0.3, -2.0],
           "unit": [0.0, 1.0, 0.5], "sign": [-1.0, 1.0],
           "nonnegative": [0.0, 1.0, 0.3, 2.5, math.inf], "positive": [1.0, 0.3, 2.5, math.inf]}
ROW_OTHERS = [0.0, math.inf, -math.inf, math.nan]

# Where PyTorch loses precision or gives NaN for a finite limit, fastloss is held to the
# exact (mpmath) value instead: where its record says so (tests/support/losses.py:
# held_to_exact), e.g. BCE with logits everywhere (its limits at +-inf included),
# cross-entropy on rows of finite or -inf logits (PyTorch's float64 log-softmax rounds the
# loss of a row like [40, 0, 0.5] to 0: it is 1.1e-17).


def _exact(name, x, t, params):
    """(loss, grad) of one element or row, exact, where the record holds the loss to its
    exact value; None where the reference's NaN and inf semantics apply instead."""
    held = REFERENCES[name].held_to_exact
    if held is None or not held(x, t):
        return None
    if BY_NAME[name].kind == "elementwise":
        value, grad, _ = reference.exact_terms(name, np.array([x]), np.array([t]), params)
        # rounded to the compute dtype: a float32 loss whose exact value is below float32's
        # range (sigmoid_focal_loss at x = 40, y = 1: 1.9e-53) is 0 there
        dtype = np.asarray(x).dtype
        with np.errstate(all="ignore"):
            return float(dtype.type(float(value[0]))), float(dtype.type(float(grad[0])))
    loss, grad, _ = reference.exact_terms(name, x, t, params)
    # rounded to the compute dtype, as above (softmax_focal_loss at the float32 row
    # [40, 0, 0.5], target 0: 5.4e-77)
    dtype = x.dtype
    with np.errstate(all="ignore"):
        return float(dtype.type(float(loss[()]))), grad.astype(np.float64).astype(dtype).astype(np.float64)


def _scalar_param_sets(name):
    """The parameter sets of the cases table without array parameters (weights)."""
    entry = CASES[name]
    seen = []
    for params in entry.params:
        # (an array form by name, such as pinball's quantile "last", is an array parameter too)
        scalars = {k: v for k, v in params.items() if k not in ("weight", "pos_weight") and not isinstance(v, str)}
        if scalars not in seen:
            seen.append(scalars)
    return seen


def _special_variants():
    out = []
    for spec in referenced_losses():
        for params in _scalar_param_sets(spec.name):
            forms = ["indices", "probabilities"] if spec.probability_target else [None]
            for form in forms:
                out.append(pytest.param(spec.name, params, form,
                                        id=f"{spec.name}-{form}-{sorted(params.items())}"))
    return out


def _special_grid(name, dtype, form):
    """Inputs full of NaN, inf and extremes, valid for the loss's domains."""
    spec = BY_NAME[name]
    if spec.kind == "elementwise":
        xs = UNIT_INPUTS if spec.input_domain == "unit" else SPECIALS
        x, t = np.meshgrid(np.array(xs), np.array(TARGETS[spec.target_domain]), indexing="ij")
        yield x.reshape(-1).astype(dtype), t.reshape(-1).astype(dtype)
        return
    rows = np.array([[a, b, 0.5] for a in SPECIALS for b in ROW_OTHERS], dtype)
    if form == "probabilities":
        probs = np.tile(np.array([0.2, 0.3, 0.5], dtype), (len(rows), 1))
        yield rows, probs
        return
    for c in range(3):
        yield rows, np.full(len(rows), c, np.int64)


@dtypes
@pytest.mark.parametrize("name,params,form", _special_variants())
def test_nan_and_inf_propagate_like_the_reference(api, name, params, form, dtype):
    """Per element ("none") and gradient, NaN-equal to PyTorch (to the float64 formulas
    without torch; the hinges, which PyTorch lacks, always to the formulas); losses in
    held to their exact value by their record (``_exact``) are held to their exact (mpmath)
    value and limits instead."""
    ref = reference.formula_reference if name in reference.NOT_IN_TORCH else reference.reference
    rtol = rtol_for(dtype)
    for x, t in _special_grid(name, dtype, form):
        with np.errstate(all="ignore"):
            loss, grad = loss_fn(api, name, grad=True)(x, t, reduction="none", **params)
        ref_loss, ref_grad = ref(name, x, t, params, "none")
        for i in np.ndindex(loss.shape) if REFERENCES[name].held_to_exact is not None else ():
            exact = _exact(name, x[i], t[i], params)
            if exact is not None:
                ref_loss[i], ref_grad[i] = exact
        for i in np.ndindex(loss.shape):
            # per element: the gradient rows of class losses are compared row by row
            assert_value_close(loss[i], ref_loss[i], rtol, what=f"loss at x={x[i]!r}, target={t[i]!r}")
            assert_grad_close(grad[i], ref_grad[i], rtol, what=f"grad at x={x[i]!r}, target={t[i]!r}")


@dtypes
@pytest.mark.parametrize("name", [spec.name for spec in LOSSES if spec.target_domain == "sign"])
def test_nan_scores_give_nan_hinge(api, name, dtype):
    x = np.array([math.nan, 0.5, math.nan], dtype)
    t = np.array([1.0, -1.0, -1.0], dtype)
    with np.errstate(all="ignore"):
        loss, grad = loss_fn(api, name, grad=True)(x, t, reduction="none")
        total = loss_fn(api, name)(x, t, reduction="sum")
    assert np.isnan(loss[[0, 2]]).all() and np.isfinite(loss[1])
    assert np.isnan(grad[[0, 2]]).all() and np.isfinite(grad[1])
    assert math.isnan(total)


# --------------------------------------------------------------------------- accuracy


BCE_LOGITS_EXTREMES = {
    np.float32: [-80.0, -40.0, -17.5, 17.5, 40.0, 80.0],
    np.float64: [-700.0, -100.0, -40.0, -37.0, 37.0, 40.0, 100.0, 700.0],
}


@dtypes
@pytest.mark.parametrize("pos_weight", [None, 3.0])
def test_bce_with_logits_tiny_losses_keep_relative_accuracy(api, pos_weight, dtype):
    """At x = -40, y = 0 the loss is 4.248e-18 (PyTorch returns 0): fastloss keeps full
    relative accuracy in the loss and the gradient, checked against mpmath."""
    xs = np.array(BCE_LOGITS_EXTREMES[dtype], dtype)
    for y in (0.0, 1.0):
        t = np.full(xs.shape, y, dtype)
        kw = {} if pos_weight is None else {"pos_weight": np.full(xs.shape, pos_weight, dtype)}
        loss, grad = api.binary_cross_entropy_with_logits_grad(xs, t, reduction="none", **kw)
        for i, xi in enumerate(xs.tolist()):
            e_loss, e_grad = reference.exact_bce_logits(xi, y, 1.0 if pos_weight is None else pos_weight)
            assert_value_close(loss[i], e_loss, rtol_for(dtype), what=f"loss at x={xi}, y={y}")
            assert_value_close(grad[i], e_grad, rtol_for(dtype), what=f"grad at x={xi}, y={y}")
        total = api.binary_cross_entropy_with_logits(xs, t, reduction="sum", **kw)
        exact_total = math.fsum(reference.exact_bce_logits(xi, y, pos_weight or 1.0)[0] for xi in xs.tolist())
        assert_value_close(total, exact_total, rtol_for(dtype))
    assert api.binary_cross_entropy_with_logits(np.array([-40.0], dtype), np.array([0.0], dtype)) > 0


HUGE_ROWS = {
    np.float32: [[1e30, 0.0, -1e30], [1e30, 1e30, 1e30], [-1e30, -1e30, 0.0], [1000.0, 1001.0, 999.0],
                 [3e38, -3e38, 0.0], [88.0, 89.0, -89.0]],
    np.float64: [[1e300, 0.0, -1e300], [1e300, 1e300, 1e300], [-1e300, -1e300, 0.0], [1000.0, 1001.0, 999.0],
                 [1.7e308, 1.7e308, 0.0], [709.0, 710.0, -710.0]],
}


@dtypes
def test_cross_entropy_huge_logits_against_mpmath(api, dtype):
    """Huge logits never overflow: the loss and gradient are exact (mpmath) to rtol."""
    rows = np.array(HUGE_ROWS[dtype], dtype)
    for target in range(3):
        t = np.full(len(rows), target, np.int64)
        loss, grad = api.cross_entropy_grad(rows, t, reduction="none")
        for i, row in enumerate(rows):
            e_loss, e_grad = reference.exact_cross_entropy_row(row, target)
            if abs(e_loss) > np.finfo(dtype).max:  # the exact value overflows the dtype
                assert loss[i] == np.inf
                continue
            assert_value_close(loss[i], e_loss, rtol_for(dtype), what=f"row {row}, target {target}")
            assert_grad_close(grad[i], e_grad, rtol_for(dtype), what=f"row {row}, target {target}")


FLOAT32_SUM_SIZE = 3_000_017


@pytest.mark.parametrize("name", NAMES)
def test_float32_sums_accumulate_in_float64(api, name):
    """A sum of 3e6 float32 terms is within one float32 ulp of the exact sum of the
    per-term losses (a float32 running sum is off by thousands of ulps at this size)."""
    spec = BY_NAME[name]
    entry = CASES[name]
    if spec.kind == "elementwise":
        shape = (FLOAT32_SUM_SIZE,)
    else:
        shape = (FLOAT32_SUM_SIZE // 10, 10)
    case = Case(name, shape, entry.forms[0], ())
    x, t, kw = case.generate(np.float32)
    per = loss_fn(api, name)(x, t, reduction="none", **kw)
    exact = math.fsum(per.astype(np.float64).tolist())
    total = loss_fn(api, name)(x, t, reduction="sum", **kw)
    mean = loss_fn(api, name)(x, t, reduction="mean", **kw)
    assert type(total) is np.float32
    assert abs(float(total) - exact) <= np.spacing(np.float32(exact)), (total, exact)
    n_terms = per.size
    assert abs(float(mean) - exact / n_terms) <= np.spacing(np.float32(exact / n_terms)), (mean, exact / n_terms)


# --------------------------------------------------------------------------- result types


def _bfloat16(x):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    return np.asarray(x, ml_dtypes.bfloat16)


# kind: (conversion, loss dtype, gradient dtype or None for the loss's)
INPUT_KINDS = {
    "float32": (lambda x: np.asarray(x, np.float32), np.float32, None),
    "float64": (lambda x: np.asarray(x, np.float64), np.float64, None),
    "float16": (lambda x: np.asarray(x, np.float16), np.float32, np.float16),
    "float16-swapped": (lambda x: np.asarray(x, ">f2"), np.float32, np.float16),
    "bfloat16": (_bfloat16, np.float32, "bfloat16"),
    "int64": (lambda x: np.rint(x).astype(np.int64), np.float64, None),
    "bool": (lambda x: np.asarray(x) > 0.5, np.float64, None),
    "list": (lambda x: np.asarray(x).tolist(), np.float64, None),
}


@reductions
@pytest.mark.parametrize("kind", list(INPUT_KINDS))
@pytest.mark.parametrize("case", representative_cases(), ids=str)
def test_result_types(api, case, kind, reduction):
    """Scalars are NumPy scalars of the compute dtype (np.float32 for float32, float16 and
    bfloat16 input, else np.float64); "none" is an ndarray of that dtype, the gradient one of
    that dtype too, but for float16 and bfloat16 input: of the input's dtype (native order)."""
    convert, expected, grad_expected = INPUT_KINDS[kind]
    x, t, kw = case.generate(np.float64)
    xk = convert(x)
    if case.spec.input_domain == "unit" and kind == "int64":
        xk = np.clip(xk, 0, 1)
    loss, grad = loss_fn(api, case.loss, grad=True)(xk, t, reduction=reduction, **kw)
    plain = loss_fn(api, case.loss)(xk, t, reduction=reduction, **kw)
    for value in (loss, plain):
        if reduction == "none":
            assert type(value) is np.ndarray and value.dtype == expected
            assert value.shape == loss_shape(case.spec, case.shape)
        else:
            assert type(value) is expected
    if grad_expected == "bfloat16":
        grad_expected = np.asarray(xk).dtype
    grad_expected = np.dtype(grad_expected or expected)
    assert type(grad) is np.ndarray and grad.dtype == grad_expected and grad.shape == case.shape
