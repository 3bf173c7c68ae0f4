"""Every dtype NumPy has (np.typecodes["All"], with units and sizes where a code needs one,
structured and variable-width string dtypes too), for every operand of every loss:

* real ones (bool, every int and uint, float16, float32, float64, longdouble) compute:
  a float32 input stays float32, a float16 input computes in float32 (its gradient rounded
  back to float16: tests/contract/test_half_precision.py, with ml_dtypes' bfloat16), every
  other input computes in float64, and the result is bitwise that of the same call with the
  operand cast to the compute dtype (class indices: to int64);
* all others (complex, object, bytes, str, void, structured, datetime64, timedelta64,
  StringDType) are a TypeError naming the operand, for input, target, weight, pos_weight
  and class indices; float (and bool) class indices are a TypeError too; an ``out`` of any
  dtype but the compute dtype is a ValueError naming ``out``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from adv_data_support import BY_NAME, NAMES, PATHS, REDUCTIONS, all_results, call, valid_call
from helpers import assert_bitwise, compute_dtype, grad_dtype
from losses import REFERENCES


def _all_dtypes():
    out = {}
    for code in np.typecodes["All"]:
        dtype = {"S": np.dtype("S8"), "U": np.dtype("U8"), "V": np.dtype("V8"),
                 "M": np.dtype("M8[s]"), "m": np.dtype("m8[ns]")}.get(code, None) or np.dtype(code)
        out[f"{code}:{dtype.str}"] = dtype
    out["structured"] = np.dtype([("a", "<f8")])
    out["M8[ns]"] = np.dtype("M8[ns]")
    if hasattr(np, "dtypes") and hasattr(np.dtypes, "StringDType"):
        out["StringDType"] = np.dtypes.StringDType()
    return out


ALL_DTYPES = _all_dtypes()
# one label per distinct dtype for the (slower) value tests: 'l', 'q', 'n', 'p' are all int64
DISTINCT_REAL = {}
for _label, _dtype in ALL_DTYPES.items():
    if _dtype.kind in "biuf" and _dtype not in DISTINCT_REAL.values():
        DISTINCT_REAL[_label] = _dtype
REAL = {k: d for k, d in ALL_DTYPES.items() if d.kind in "biuf"}
NON_REAL = {k: d for k, d in ALL_DTYPES.items() if d.kind not in "biuf"}
INTEGER = {k: d for k, d in REAL.items() if d.kind in "iu"}


def test_the_dtype_lists_cover_numpy():
    """Every type code NumPy lists is tested (a new NumPy dtype fails here first)."""
    kinds = {d.kind for d in ALL_DTYPES.values()}
    assert set("biufcSUVOMm") <= kinds, kinds
    assert len(REAL) >= 19 and len(NON_REAL) >= 9
    assert np.dtype(np.longdouble) in REAL.values() and np.dtype(np.float16) in REAL.values()


# --------------------------------------------------------------------------- valid values


def _quarters(rng, shape, low, high):
    return np.asarray(rng.integers(int(low * 4), int(high * 4) + 1, shape)) / 4.0


def real_values(dtype, role, name, shape, rng):
    """Valid values of ``dtype`` for ``role`` of loss ``name`` (exactly representable in it)."""
    spec = BY_NAME[name]
    if role == "input":
        low, high = (0, 1) if spec.input_domain == "unit" else (-3, 3)
    elif role == "target":
        if spec.target_domain == "sign":
            signs = np.where(rng.random(shape) < 0.5, -1, 1)
            if dtype.kind in "bu":
                signs[...] = 1
            return np.asarray(signs).astype(dtype)
        low, high = (0, 1) if REFERENCES[name].targets_in_unit_interval else (-3, 3)
        if spec.target_domain in ("nonnegative", "positive"):
            low, high = (0.25 if spec.target_domain == "positive" else 0, 3)
    elif role == "pos_weight":
        low, high = 1, 3
    else:  # weight
        low, high = 0, 3
    positive = role == "pos_weight" or (role == "target" and spec.target_domain == "positive")
    if dtype.kind == "b":
        return np.asarray(rng.random(shape) < 0.5) if not positive else np.ones(shape, bool)
    if dtype.kind in "iu":
        low = max(low, 0) if dtype.kind == "u" else low
        low = 1 if positive else low
        return np.asarray(rng.integers(low, high + 1, shape)).astype(dtype)
    return _quarters(rng, shape, low, high).astype(dtype)


def _collect(failures, label, fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - every failure is reported, per dtype
        failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:300]}")


def _roles(name):
    spec = BY_NAME[name]
    roles = ["input", "target"] if spec.kind == "elementwise" else ["input", "indices"]
    if spec.probability_target:
        roles.append("probabilities")
    if spec.weight:
        roles.append("weight")
    if spec.pos_weight:
        roles.append("pos_weight")
    return roles


ROLE_VARIANTS = [pytest.param(name, role, id=f"{name}-{role}") for name in NAMES for role in _roles(name)]
ARG = {"input": "input", "target": "target", "indices": "target", "probabilities": "target",
       "weight": "weight", "pos_weight": "pos_weight"}


def _base(name, role, dtype, path):
    form = "probabilities" if role == "probabilities" else None
    if role in ("weight", "pos_weight"):
        path = "general"
    return valid_call(name, path, dtype, form=form)


def _with(name, role, x, t, kw, value):
    if role == "input":
        return value, t, kw
    if role in ("target", "indices", "probabilities"):
        return x, value, kw
    return x, t, {**kw, role: value}


@pytest.mark.parametrize("name,role", ROLE_VARIANTS)
def test_every_real_dtype_computes_as_its_cast(api, name, role):
    """Each real dtype of the operand: bitwise the call with the operand cast to the compute
    dtype (indices: int64); the compute dtype is float32 for a float32 or float16 input (a
    float16 input's gradient: the float32 one rounded to float16), else float64."""
    failures = []
    rng = np.random.default_rng(11)
    for label, dtype in DISTINCT_REAL.items():
        if role == "indices" and dtype.kind not in "iu":
            continue
        if role == "probabilities" and dtype.kind != "f":
            continue
        for x_dtype in (np.float64,) if role == "input" else (np.float64, np.float32):
            for path in PATHS:
                def check():
                    x, t, kw = _base(name, role, x_dtype, path)
                    if role == "indices":
                        value = np.asarray(t)
                        if dtype.kind == "u" or np.iinfo(dtype).min > -100:
                            value = np.where(value < 0, 0, value)
                        value = value.astype(dtype)
                        cast = value.astype(np.int64)
                    elif role == "probabilities":
                        value = _quarters(rng, x.shape, 0, 1).astype(dtype)
                        cast = value.astype(x_dtype)
                    else:
                        shape = np.shape(x) if role in ("input", "target") else np.shape(kw[role])
                        value = real_values(dtype, "target" if role == "target" else role, name, shape, rng)
                        compute = compute_dtype(np.empty(0, dtype)) if role == "input" else x_dtype
                        cast = value.astype(compute)
                    got = all_results(api, name, *_with(name, role, x, t, kw, value))
                    want = all_results(api, name, *_with(name, role, x, t, kw, cast))
                    grad_as = grad_dtype(np.empty(0, dtype)) if role == "input" else np.dtype(x_dtype)
                    for key in want:
                        with np.errstate(over="ignore"):  # a float32 gradient beyond float16's range: inf
                            expected = want[key].astype(grad_as) if key[1] == "grad" else want[key]
                        assert_bitwise(got[key], expected, f"{key}")
                    if role == "input":
                        expected_dtype = np.dtype(np.float32 if dtype in (np.float32, np.float16) else np.float64)
                        assert got["mean", "loss"].dtype == expected_dtype
                        assert got["none", "grad"].dtype == (np.float16 if dtype == np.float16 else expected_dtype)
                _collect(failures, f"{ARG[role]} {label} (input {np.dtype(x_dtype).name}, {path} path)", check)
    assert not failures, "\n".join(failures)


def non_real_array(dtype, shape, rng):
    """An array of ``dtype`` and ``shape`` holding small values (or zeros)."""
    if dtype.kind == "O":
        return np.asarray(rng.integers(0, 2, shape)).astype(np.float64).astype(object)
    if dtype.kind in "SUT":
        return np.asarray(rng.integers(0, 2, shape)).astype(str).astype(dtype)
    if dtype.kind == "c":
        return np.asarray(rng.integers(0, 2, shape)).astype(dtype)
    if dtype.kind in "Mm":
        return np.asarray(rng.integers(0, 2, shape)).astype(dtype)
    return np.zeros(shape, dtype)


def _message_names(message, arg):
    if arg == "weight":
        return re.search(r"(?<![A-Za-z_])weight(?![A-Za-z_])", message) is not None
    return arg in message


@pytest.mark.parametrize("name,role", ROLE_VARIANTS)
def test_every_other_dtype_is_a_type_error_naming_the_operand(api, name, role):
    """complex, object, bytes, str, void, structured, datetime64, timedelta64, StringDType
    (and, for class indices, every float dtype and bool): TypeError naming the operand,
    for NAME and NAME_grad, with nothing written to ``out``."""
    failures = []
    rng = np.random.default_rng(12)
    refused = dict(NON_REAL)
    if role == "indices":
        refused.update({k: d for k, d in REAL.items() if d.kind in "bf"})
    for label, dtype in refused.items():
        for path in PATHS:
            def check():
                x, t, kw = _base(name, role, np.float64, path)
                if role == "input":
                    shape = x.shape
                elif role in ("target", "indices", "probabilities"):
                    shape = np.shape(t) if role != "probabilities" else x.shape
                else:
                    shape = np.shape(kw[role])
                value = non_real_array(dtype, shape, rng)
                args = _with(name, role, x, t, kw, value)
                out = np.full(x.shape, -7.25)
                for grad in (False, True):
                    with pytest.raises(TypeError) as info:
                        call(api, name, grad, *args, "mean", **({"out": out} if grad else {}))
                    message = str(info.value)
                    assert _message_names(message, ARG[role]) and "got" in message, message
                assert (out == -7.25).all(), "out written by a refused call"
            _collect(failures, f"{ARG[role]} {label} ({path} path)", check)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", NAMES)
def test_out_of_any_other_dtype_is_a_value_error(api, name):
    """``out`` of any dtype other than the compute dtype (in either byte order, see the
    byte-order tests): ValueError naming ``out``, out unchanged."""
    failures = []
    for x_dtype in (np.float64, np.float32):
        x, t, kw = valid_call(name, "fast", x_dtype)
        for label, dtype in ALL_DTYPES.items():
            if dtype.kind == "f" and dtype.itemsize == np.dtype(x_dtype).itemsize:
                continue  # the compute dtype itself
            def check():
                out = non_real_array(dtype, x.shape, np.random.default_rng(0)) if dtype.kind not in "biuf" \
                    else np.zeros(x.shape, dtype)
                before = out.copy()
                with pytest.raises(ValueError) as info:
                    call(api, name, True, x, t, kw, "mean", out=out)
                assert "out" in str(info.value), str(info.value)
                assert out.tobytes() == before.tobytes() if dtype.kind != "O" else (out == before).all()
            _collect(failures, f"out {label} for input {np.dtype(x_dtype).name}", check)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", NAMES)
def test_scalars_of_every_real_type_as_input(api, name):
    """A NumPy scalar of each real type (0-d input for elementwise losses, a row of them for
    class losses via a list): computes as its cast; np.float32 stays float32, np.float16
    computes in float32 (its gradient rounded to float16)."""
    spec = BY_NAME[name]
    failures = []
    for label, dtype in REAL.items():
        def check():
            value = dtype.type(1 if dtype.kind in "biu" else 0.75)
            if spec.kind == "elementwise":
                t = np.float64(1.0 if spec.target_domain else 0.25)
                got = [call(api, name, True, value, t, {}, r) for r in REDUCTIONS]
                want = [call(api, name, True, np.asarray(value, compute_dtype(value)), t, {}, r) for r in REDUCTIONS]
            else:
                row = [value, dtype.type(0), value]
                got = [call(api, name, True, row, 1, {}, r) for r in REDUCTIONS]
                want = [call(api, name, True, np.asarray(row).astype(compute_dtype(np.asarray(row))),
                             1, {}, r) for r in REDUCTIONS]
            for (gl, gg), (wl, wg), r in zip(got, want, REDUCTIONS):
                assert_bitwise(gl, wl, f"loss ({r})")
                assert_bitwise(gg, wg.astype(grad_dtype(value)), f"grad ({r})")
        _collect(failures, label, check)
    assert not failures, "\n".join(failures)
