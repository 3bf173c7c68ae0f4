"""The fused ``NAME_grad`` functions: the loss is bitwise ``NAME``'s, and ``out=``."""

from __future__ import annotations

import numpy as np
import pytest

import tracemalloc

from cases import DTYPES, all_error_cases, error_base, large_cases, one_case_per_param_set
from fastloss._registry import LOSSES, REDUCTIONS
from helpers import COMPILED_BACKENDS, assert_bitwise, loss_fn

CASES = one_case_per_param_set()
SENTINEL = -7.25

dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
reductions = pytest.mark.parametrize("reduction", REDUCTIONS)
cases = pytest.mark.parametrize("case", CASES, ids=str)


def _call(api, case, dtype, reduction, **extra):
    x, t, kw = case.generate(dtype)
    return x, t, kw, loss_fn(api, case.loss, grad=True)(x, t, reduction=reduction, **kw, **extra)


@dtypes
@reductions
@cases
def test_grad_twin_loss_is_bitwise_the_loss(api, case, reduction, dtype):
    x, t, kw, (loss, grad) = _call(api, case, dtype, reduction)
    plain = loss_fn(api, case.loss)(x, t, reduction=reduction, **kw)
    assert_bitwise(loss, plain, "NAME_grad loss vs NAME")
    # and every run gives the same bits
    loss2, grad2 = loss_fn(api, case.loss, grad=True)(x, t, reduction=reduction, **kw)
    assert_bitwise(loss2, loss)
    assert_bitwise(grad2, grad)


@dtypes
@reductions
@cases
def test_out_is_filled_and_returned(api, case, reduction, dtype):
    x, t, kw, (loss, grad) = _call(api, case, dtype, reduction)
    out = np.full(x.shape, SENTINEL, dtype)
    loss_out, grad_out = loss_fn(api, case.loss, grad=True)(x, t, reduction=reduction, out=out, **kw)
    assert grad_out is out
    assert_bitwise(out, grad, "grad written into out")
    assert_bitwise(loss_out, loss)


@dtypes
@reductions
@cases
def test_out_may_be_the_input(api, case, reduction, dtype):
    x, t, kw, (loss, grad) = _call(api, case, dtype, reduction)
    inplace = x.copy()
    loss_in, grad_in = loss_fn(api, case.loss, grad=True)(inplace, t, reduction=reduction, out=inplace, **kw)
    assert grad_in is inplace
    assert_bitwise(inplace, grad, "gradient written over the input")
    assert_bitwise(loss_in, loss)


ELEMENTWISE_WITH_FULL_WEIGHT = [c for c in CASES if c.spec.kind == "elementwise" and c.shape
                                and dict(c.params).get("weight") == "full"]


@dtypes
@pytest.mark.parametrize("case", ELEMENTWISE_WITH_FULL_WEIGHT, ids=str)
@pytest.mark.parametrize("alias", ["target", "weight"])
def test_out_may_alias_another_operand(api, case, alias, dtype):
    """out sharing memory with the target or the weight: the result is still the gradient
    of the loss of the original values."""
    x, t, kw, (loss, grad) = _call(api, case, dtype, "mean")
    t2, kw2 = t.copy(), {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    out = t2 if alias == "target" else kw2["weight"]
    loss_a, grad_a = loss_fn(api, case.loss, grad=True)(x, t2, reduction="mean", out=out, **kw2)
    assert grad_a is out
    assert_bitwise(grad_a, grad)
    assert_bitwise(loss_a, loss)


@dtypes
@pytest.mark.parametrize("case", [c for c in CASES if c.spec.kind == "elementwise" and c.shape], ids=str)
def test_out_overlapping_the_input_shifted(api, case, dtype):
    """out and input are overlapping, shifted views of one buffer."""
    x, t, kw, (loss, grad) = _call(api, case, dtype, "sum")
    buf = np.empty(x.size + 1, dtype)
    buf[:-1] = x.reshape(-1)
    x_view, out_view = buf[:-1].reshape(x.shape), buf[1:].reshape(x.shape)
    loss_o, grad_o = loss_fn(api, case.loss, grad=True)(x_view, t, reduction="sum", out=out_view, **kw)
    assert grad_o is out_view
    assert_bitwise(grad_o, grad)
    assert_bitwise(loss_o, loss)


def _bad_outs(shape, dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    bad = {
        "shape-extra-axis": np.full(shape + (1,), SENTINEL, dtype),
        "shape-longer": np.full(shape[:-1] + (shape[-1] + 1,), SENTINEL, dtype),
        "shape-flat": np.full((int(np.prod(shape)),), SENTINEL, dtype),
        "shape-transposed": np.full(shape[::-1], SENTINEL, dtype),
        "shape-0d": np.full((), SENTINEL, dtype),
        "dtype-other-float": np.full(shape, SENTINEL, other),
        "dtype-int64": np.full(shape, -7, np.int64),
        # a half out is only for a half input (tests/contract/test_half_precision.py)
        "dtype-float16": np.full(shape, SENTINEL, np.float16),
        "dtype-complex": np.full(shape, SENTINEL, np.complex128),
        "read-only": np.full(shape, SENTINEL, dtype),
        "list": np.full(shape, SENTINEL, dtype).tolist(),
        "numpy-scalar": np.dtype(dtype).type(SENTINEL),
        "tuple": tuple(np.full(shape, SENTINEL, dtype).reshape(-1)),
    }
    bad["read-only"].flags.writeable = False
    return bad


BAD_OUT_KINDS = list(_bad_outs((4, 5), np.float32))


@dtypes
@pytest.mark.parametrize("kind", BAD_OUT_KINDS)
@pytest.mark.parametrize("name", [spec.name for spec in LOSSES])
def test_bad_out_is_refused_and_left_untouched(api, name, kind, dtype):
    x, t, kw = error_base(name, dtype)
    out = _bad_outs(x.shape, dtype)[kind]
    before = np.array(out, copy=True) if isinstance(out, np.ndarray) else None
    with pytest.raises(ValueError, match=r"\bout\b"):
        loss_fn(api, name, grad=True)(x, t, out=out, **kw)
    if before is not None:
        assert_bitwise(out, before, "out after a refused call")


@pytest.mark.parametrize("error", all_error_cases(), ids=str)
def test_out_left_untouched_on_any_error(api, error):
    x, t, kw = error_base(error.loss, np.float64)
    out = np.full(x.shape, SENTINEL)
    bx, bt, bkw = error.build(x, t, kw)
    with pytest.raises(error.exc):
        loss_fn(api, error.loss, grad=True)(bx, bt, out=out, **bkw)
    assert (out == SENTINEL).all()


# --------------------------------------------------------------------------- allocations
# "No temporary the size of the input is allocated; with out= nothing the size of the
# input is allocated at all." The NumPy backend computes with whole-array temporaries by
# nature, so this is a contract of the compiled backend: the test exists where one is built.


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


if COMPILED_BACKENDS:

    @dtypes
    @pytest.mark.parametrize("reduction", ["mean", "sum"])
    @pytest.mark.parametrize("case", large_cases(), ids=str)
    @pytest.mark.parametrize("compiled", [m for _, m in COMPILED_BACKENDS], ids=[n for n, _ in COMPILED_BACKENDS])
    def test_fused_call_allocates_no_input_sized_temporary(compiled, case, reduction, dtype):
        x, t, kw = case.generate(dtype)
        f = loss_fn(compiled, case.loss, grad=True)
        out = np.empty_like(x)
        f(x, t, reduction=reduction, out=out, **kw)  # warm up (lazy imports, caches)
        with_out = _peak_bytes(lambda: f(x, t, reduction=reduction, out=out, **kw))
        assert with_out < x.nbytes // 4, f"{with_out} bytes allocated with out= for a {x.nbytes}-byte input"
        without_out = _peak_bytes(lambda: f(x, t, reduction=reduction, **kw))
        assert without_out < x.nbytes + x.nbytes // 4, (
            f"{without_out} bytes allocated for a {x.nbytes}-byte input (the gradient needs {x.nbytes})")
