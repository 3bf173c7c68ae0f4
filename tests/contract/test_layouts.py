"""Memory layouts and input types: any strides, any order, read-only arrays, lists and
every real dtype give results bitwise identical to contiguous float copies."""

from __future__ import annotations

import numpy as np
import pytest

from cases import CASES, DTYPES, representative_cases
from fastloss._registry import REDUCTIONS
from helpers import assert_bitwise, compute_dtype, loss_fn
from losses import REFERENCES

REPRESENTATIVE = representative_cases()

dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
cases = pytest.mark.parametrize("case", REPRESENTATIVE, ids=str)


# --------------------------------------------------------------------------- layouts


def _strided(a):
    """A view with the same values whose last axis has stride 2 elements (other axes follow)."""
    a = np.asarray(a)
    if a.ndim == 0:
        return a
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    view = big[..., ::2]
    view[...] = a
    return view


def _negative(a):
    """A view with the same values and negative strides on every axis."""
    a = np.asarray(a)
    return np.flip(np.flip(a).copy()) if a.ndim else a


def _read_only(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def _zero_stride(a):
    """Every row the same: a broadcast (zero-stride, read-only) view of the first row."""
    a = np.asarray(a)
    return np.broadcast_to(a[:1], a.shape) if a.ndim >= 2 else a


LAYOUTS = {
    "fortran": np.asfortranarray,
    "strided": _strided,
    "negative-strides": _negative,
    "read-only": _read_only,
    "zero-stride": _zero_stride,
}


def _arrays(kw):
    return [k for k, v in kw.items() if isinstance(v, np.ndarray)]


def _expected(api, case, x, t, kw, reduction, dtype=None):
    """The result on C-contiguous copies (of the compute dtype for floats)."""
    cd = compute_dtype(x) if dtype is None else np.dtype(dtype)
    xc = np.ascontiguousarray(x, dtype=cd)
    t = np.asarray(t)
    tc = np.ascontiguousarray(t, dtype=cd if t.dtype.kind in "fb" or case.spec.kind == "elementwise" else np.int64)
    kwc = {k: (np.ascontiguousarray(v, dtype=cd) if k in _arrays(kw) else v) for k, v in kw.items()}
    return loss_fn(api, case.loss, grad=True)(xc, tc, reduction=reduction, **kwc)


@dtypes
@pytest.mark.parametrize("which", ["input", "target", "weights", "all"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@cases
def test_layouts_give_bitwise_identical_results(api, case, layout, which, dtype):
    x, t, kw = case.generate(dtype)
    if layout == "zero-stride":  # make every row equal first: the views then hold the same values
        x, t = _zero_stride(x).copy(), _zero_stride(t).copy()
        kw = {k: (_zero_stride(v).copy() if k in _arrays(kw) else v) for k, v in kw.items()}
    f = LAYOUTS[layout]
    xv = f(x) if which in ("input", "all") else x
    tv = f(t) if which in ("target", "all") else t
    kwv = {k: (f(v) if which in ("weights", "all") and k in _arrays(kw) else v) for k, v in kw.items()}
    for reduction in REDUCTIONS:
        loss, grad = loss_fn(api, case.loss, grad=True)(xv, tv, reduction=reduction, **kwv)
        e_loss, e_grad = _expected(api, case, x, t, kw, reduction)
        assert_bitwise(loss, e_loss, f"loss ({reduction})")
        assert_bitwise(grad, e_grad, f"grad ({reduction})")
        plain = loss_fn(api, case.loss)(xv, tv, reduction=reduction, **kwv)
        assert_bitwise(plain, e_loss, f"loss of NAME ({reduction})")


# --------------------------------------------------------------------------- types


def _to_kind(case, a, kind, role):
    """The values of ``a`` as an array of another kind, valid for the loss."""
    entry = CASES[case.loss]
    if kind == "list":
        return np.asarray(a).tolist()
    if kind == "float16":
        return np.asarray(a, np.float16)
    if kind == "bfloat16":
        return np.asarray(a, pytest.importorskip("ml_dtypes").bfloat16)
    if kind == "bool":
        return entry.to_bool(np.asarray(a)) if role == "input" else np.asarray(a) > 0.5
    if kind.startswith("int"):
        return np.asarray(entry.to_int(np.asarray(a)) if role == "input" else np.rint(a), dtype=kind)
    raise AssertionError(kind)


INPUT_KINDS = ["list", "bool", "int8", "int32", "int64"]
HALF_KINDS = ["float16", "bfloat16"]


@pytest.mark.parametrize("kind", INPUT_KINDS)
@pytest.mark.parametrize("case", [c for c in REPRESENTATIVE if c.spec.kind == "elementwise" or
                                  c.form != "probabilities"], ids=str)
def test_other_input_types_compute_in_float64(api, case, kind):
    """int and bool inputs and lists (of float32 values too) compute in float64, as their
    float64 copy does."""
    for dtype in DTYPES:
        x, t, kw = case.generate(dtype)
        xk = _to_kind(case, x, kind, "input")
        for reduction in REDUCTIONS:
            loss, grad = loss_fn(api, case.loss, grad=True)(xk, t, reduction=reduction, **kw)
            e_loss, e_grad = _expected(api, case, np.asarray(xk), t, kw, reduction, np.float64)
            assert_bitwise(loss, e_loss)
            assert_bitwise(grad, e_grad)


@pytest.mark.parametrize("kind", HALF_KINDS)
@pytest.mark.parametrize("case", REPRESENTATIVE, ids=str)
def test_half_input_types_compute_in_float32(api, case, kind):
    """float16 and bfloat16 inputs compute in float32, as their float32 copy does; the
    gradient is that copy's rounded to the input's dtype (tests/contract/test_half_precision.py
    has every loss, twin and ``out``)."""
    for dtype in DTYPES:
        x, t, kw = case.generate(dtype)
        xk = _to_kind(case, x, kind, "input")
        for reduction in REDUCTIONS:
            loss, grad = loss_fn(api, case.loss, grad=True)(xk, t, reduction=reduction, **kw)
            e_loss, e_grad = _expected(api, case, xk, t, kw, reduction, np.float32)
            assert_bitwise(loss, e_loss)
            assert_bitwise(grad, e_grad.astype(xk.dtype))


def elementwise_target_kinds(name):
    """The target kinds an elementwise loss is tested with, from its target values: labels
    +-1 (integers; not bool, whose False is 0), probabilities in [0, 1] (enforced, or the
    soft labels of its record: bool; not int32, which rounds them), positive values (no
    integers or bool, which make 0s of them), or any real (all)."""
    record = REFERENCES[name]
    if record.spec.target_domain == "sign":
        return ["list", "int8", "int64", "float16"]
    if record.targets_in_unit_interval:
        return ["list", "float16", "bool"]
    if record.spec.target_domain == "positive":  # rounding or a False would give a 0
        return ["list", "float16"]
    return ["list", "float16", "int32", "bool"]


CLASS_TARGET_DTYPES = ["int8", "int16", "int32", "uint8", "uint16", "uint32", "uint64", "list"]


def _target_variants():
    out = []
    for c in REPRESENTATIVE:
        if c.spec.kind == "elementwise":
            kinds = elementwise_target_kinds(c.loss)
        elif c.form == "probabilities":
            kinds = ["list", "float16"]
        else:  # the integer dtypes that hold every target value (ignore_index included)
            t = np.asarray(c.generate(np.float64)[1])
            kinds = [k for k in CLASS_TARGET_DTYPES
                     if k == "list" or np.iinfo(k).min <= t.min() and t.max() <= np.iinfo(k).max]
        out += [pytest.param(c, k, id=f"{c.id}-{k}") for k in kinds]
    return out


@dtypes
@pytest.mark.parametrize("case,kind", _target_variants())
def test_other_target_types(api, case, kind, dtype):
    """Targets of any real dtype (class indices of any integer dtype) and lists."""
    x, t, kw = case.generate(dtype)
    if case.spec.kind == "classes" and case.form != "probabilities" and kind != "list":
        tk = np.asarray(t).astype(kind)
    else:
        tk = _to_kind(case, t, kind, "target")
    t_values = np.asarray(tk)
    if case.spec.kind == "classes" and case.form != "probabilities":
        t_values = t_values.astype(np.int64)
    for reduction in REDUCTIONS:
        loss, grad = loss_fn(api, case.loss, grad=True)(x, tk, reduction=reduction, **kw)
        e_loss, e_grad = _expected(api, case, x, t_values, kw, reduction)
        assert_bitwise(loss, e_loss)
        assert_bitwise(grad, e_grad)


@dtypes
@pytest.mark.parametrize("kind", ["list", "int64", "bool", "float16", "other-float"])
@pytest.mark.parametrize("case", [c for c in REPRESENTATIVE if _arrays(c.generate(np.float64)[2])], ids=str)
def test_other_weight_types(api, case, kind, dtype):
    x, t, kw = case.generate(dtype)
    arrays = _arrays(kw)
    other = np.float64 if dtype == np.float32 else np.float32
    conv = {
        "list": lambda w: np.asarray(w).tolist(),
        "int64": lambda w: np.rint(4 * np.asarray(w)).astype(np.int64),
        "bool": lambda w: np.asarray(w) > 1,
        "float16": lambda w: np.asarray(w, np.float16),
        "other-float": lambda w: np.asarray(w, other),
    }[kind]
    kwk = {k: (conv(v) if k in arrays else v) for k, v in kw.items()}
    # the weights the loss must see: the converted values in the compute dtype
    kwe = {k: (np.asarray(np.asarray(v, np.float64) if kind != "other-float" else v, dtype) if k in arrays else v)
           for k, v in kwk.items()}
    for reduction in REDUCTIONS:
        loss, grad = loss_fn(api, case.loss, grad=True)(x, t, reduction=reduction, **kwk)
        e_loss, e_grad = _expected(api, case, x, t, kwe, reduction)
        assert_bitwise(loss, e_loss)
        assert_bitwise(grad, e_grad)


# --------------------------------------------------------------------------- out


def _out_views(shape, dtype):
    """(base buffer, view of ``shape`` into it) for non-contiguous outs."""
    views = {}
    base = np.full(shape[:-1] + (2 * shape[-1],), -7.25, dtype)
    views["strided"] = (base, base[..., ::2])
    base = np.full(shape, -7.25, dtype, order="F")
    views["fortran"] = (base, base)
    base = np.full(shape, -7.25, dtype)
    views["negative-strides"] = (base, base[(slice(None, None, -1),) * len(shape)])
    return views


@dtypes
@pytest.mark.parametrize("view", ["strided", "fortran", "negative-strides"])
@pytest.mark.parametrize("case", [c for c in REPRESENTATIVE if c.shape], ids=str)
def test_non_contiguous_out(api, case, view, dtype):
    x, t, kw = case.generate(dtype)
    for reduction in REDUCTIONS:
        e_loss, e_grad = loss_fn(api, case.loss, grad=True)(x, t, reduction=reduction, **kw)
        base, out = _out_views(x.shape, dtype)[view]
        loss, grad = loss_fn(api, case.loss, grad=True)(x, t, reduction=reduction, out=out, **kw)
        assert grad is out
        assert_bitwise(np.ascontiguousarray(out), e_grad)
        assert_bitwise(loss, e_loss)
        if view == "strided":
            assert (base[..., 1::2] == -7.25).all(), "out wrote outside its view"


@dtypes
@pytest.mark.parametrize("case", [c for c in REPRESENTATIVE if c.shape], ids=str)
def test_in_place_on_a_strided_input(api, case, dtype):
    x, t, kw = case.generate(dtype)
    e_loss, e_grad = loss_fn(api, case.loss, grad=True)(x, t, reduction="mean", **kw)
    xv = _strided(x)
    base = xv.base
    loss, grad = loss_fn(api, case.loss, grad=True)(xv, t, reduction="mean", out=xv, **kw)
    assert grad is xv
    assert_bitwise(np.ascontiguousarray(xv), e_grad)
    assert_bitwise(loss, e_loss)
    assert (base[..., 1::2] == 0).all()
