"""Byte order (SPEC11 item 1): input, target, weight, pos_weight and class indices of any byte
order give bitwise the results of native copies, on the fast and the general path of
every loss and its ``_grad`` twin, on both backends; a '>f4' input computes in float32; a
non-native ``out`` of the compute dtype's kind and size is accepted, filled with the right
values and returned; big-endian uint64 labels >= 2**63 are a ValueError naming the index.
"""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest

from adv_data_support import (BY_NAME, CLASS_NAMES, FLOATS, NAMES, PATHS, REDUCTIONS, all_results,
                                          assert_all_bitwise, call, valid_call)
from helpers import assert_bitwise

SWAP = "<" if sys.byteorder == "big" else ">"  # the non-native order of this machine
NATIVE = "<" if sys.byteorder == "little" else ">"


def as_order(a, order):
    """The values of ``a`` in an array of the same dtype, byte order ``order`` ('<' or '>')."""
    a = np.asarray(a)
    return a.astype(a.dtype.newbyteorder(order))


def native(a):
    a = np.asarray(a)
    return a.astype(a.dtype.newbyteorder("="))


def _operands(name, path):
    spec = BY_NAME[name]
    ops = ["input", "target"]
    if path == "general":
        ops += [k for k in ("weight", "pos_weight") if getattr(spec, k)]
    return ops + ["all"]


VARIANTS = [pytest.param(name, path, which, id=f"{name}-{path}-{which}")
            for name in NAMES for path in PATHS for which in _operands(name, path)]


def _swapped(x, t, kw, which, order):
    def conv(a):
        return as_order(a, order)

    if which in ("input", "all"):
        x = conv(x)
    if which in ("target", "all"):
        t = conv(t)
    kw = {k: (conv(v) if isinstance(v, np.ndarray) and which in (k, "all") else v) for k, v in kw.items()}
    return x, t, kw


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name,path,which", VARIANTS)
def test_byte_order_gives_native_bits(api, name, path, which, dtype):
    """Every operand (and all at once) in non-native and in explicit native order: bitwise
    the native call, for NAME and NAME_grad and every reduction. A '>f4' input stays float32."""
    x, t, kw = valid_call(name, path, dtype)
    expected = all_results(api, name, x, t, kw)
    for order in (SWAP, NATIVE):
        xs, ts, kws = _swapped(x, t, kw, which, order)
        actual = all_results(api, name, xs, ts, kws)
        assert_all_bitwise(actual, expected, f"{which} in {order!r} order")
        if which in ("input", "all"):  # the compute dtype follows the values, not the byte order
            assert actual["mean", "loss"].dtype == np.dtype(dtype)
            assert actual["none", "grad"].dtype == np.dtype(dtype)


CLASS_INDEX_DTYPES = ["i8", "i4", "i2", "u8", "u4", "u2", "i1", "u1"]


@pytest.mark.parametrize("code", CLASS_INDEX_DTYPES)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", CLASS_NAMES)
def test_class_indices_of_any_byte_order(api, name, path, code):
    """Class indices '>i8', '>i4', '>u8', ... and explicit '<' (with ignored entries where
    they fit): bitwise the native int64 call."""
    x, t, kw = valid_call(name, path, np.float64, form="indices+ignored" if BY_NAME[name].ignore_index else None)
    dtype = np.dtype(code)
    if dtype.kind == "u":  # unsigned: no -100 entries
        t = np.where(t < 0, 0, t)
    expected = all_results(api, name, x, t, kw)
    for order in (SWAP, NATIVE):
        ts = np.asarray(t).astype(np.dtype(order + code))
        actual = all_results(api, name, x, ts, kw)
        assert_all_bitwise(actual, expected, f"target dtype {ts.dtype.str}")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", [n for n in CLASS_NAMES if BY_NAME[n].ignore_index])
def test_ignore_index_stored_big_endian_is_ignored(api, name, path):
    """'>i8' targets holding ignore_index (-100 and a custom value) ignore those samples."""
    x, t, kw = valid_call(name, path, np.float64, form="indices+ignored")
    for ignore in (-100, 3):
        tt = np.where(t < 0, ignore, t)
        kw2 = {**kw, "ignore_index": ignore}
        expected = all_results(api, name, x, tt, kw2)
        actual = all_results(api, name, x, as_order(tt, SWAP), kw2)
        assert_all_bitwise(actual, expected, f"ignore_index={ignore} in '>i8' targets")


@pytest.mark.parametrize("order", [SWAP, NATIVE], ids=["non-native", "explicit-native"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", CLASS_NAMES)
def test_big_uint64_labels_are_refused(api, name, path, order):
    """A uint64 label >= 2**63 in either byte order (2**64 - 100 would wrap to -100, the
    default ignore_index) is a ValueError naming the target and the index; NAME and
    NAME_grad; out untouched."""
    x, t, kw = valid_call(name, path, np.float64, form="indices")
    for value in (2**64 - 100, 2**63, 2**63 + 5, 2**64 - 1):
        tu = np.asarray(t).astype(order + "u8")
        tu.reshape(-1)[tu.size // 2] = value
        out = np.full(x.shape, -7.25)
        for grad in (False, True):
            extra = {"out": out} if grad else {}
            with pytest.raises(ValueError) as info:
                call(api, name, grad, x, tu, kw, "mean", **extra)
            message = str(info.value)
            assert "target" in message and str(value) in message, message
        assert (out == -7.25).all()


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
def test_big_endian_float32_computes_in_float32(api, dtype):
    """The issue's repro: mse_loss(arange(10, '>f8'), zeros(10)) is 28.5, and '>f4' gives
    float32 results."""
    x = np.arange(10, dtype=np.dtype(dtype).newbyteorder(SWAP))
    loss = api.mse_loss(x, np.zeros(10, dtype))
    assert loss == 28.5
    assert type(loss) is np.dtype(dtype).type
    loss, grad = api.mse_loss_grad(x, np.zeros(10, x.dtype), reduction="sum")
    assert type(loss) is np.dtype(dtype).type and loss == 285.0
    assert grad.dtype == np.dtype(dtype) and grad.tolist() == [2.0 * i for i in range(10)]


# --------------------------------------------------------------------------- out

OUT_VARIANTS = [pytest.param(name, path, id=f"{name}-{path}") for name in NAMES for path in PATHS]


@pytest.mark.parametrize("in_place", [False, True], ids=["separate", "in-place"])
@pytest.mark.parametrize("name,path", OUT_VARIANTS)
def test_non_native_out_is_accepted_and_readable(api, name, path, in_place):
    """``out`` in non-native order ('>f4' for float32 compute): accepted, holds the gradient
    as NumPy reads it, and is what the call returns. In place: the input itself is '>f8'."""
    for dtype, reduction in itertools.product(FLOATS, REDUCTIONS):
        x, t, kw = valid_call(name, path, dtype)
        e_loss, e_grad = call(api, name, True, x, t, kw, reduction)
        xs = as_order(x, SWAP)
        out = xs if in_place else np.full(x.shape, -7.25, np.dtype(dtype).newbyteorder(SWAP))
        loss, grad = call(api, name, True, xs, t, kw, reduction, out=out)
        assert grad is out
        assert_bitwise(loss, e_loss, f"loss ({reduction})")
        assert_bitwise(native(out), e_grad, f"grad in non-native out ({reduction})")


@pytest.mark.parametrize("name", NAMES)
def test_out_of_another_size_is_refused_in_any_order(api, name):
    """A '>f8' out for float32 compute and a '>f4' out for float64 compute: ValueError naming
    out, nothing written."""
    for dtype, other in ((np.float32, np.float64), (np.float64, np.float32)):
        x, t, kw = valid_call(name, "fast", dtype)
        for order in (SWAP, NATIVE):
            out = np.full(x.shape, -7.25, np.dtype(other).newbyteorder(order))
            with pytest.raises(ValueError, match="out"):
                call(api, name, True, x, t, kw, "mean", out=out)
            assert (out == -7.25).all()


# --------------------------------------------------------------------------- value checks


def _scanned_cases():
    """(loss, operand, bad value) whose check reads values."""
    out = []
    for name in NAMES:
        spec = BY_NAME[name]
        if spec.input_domain == "unit":
            out += [(name, "input", v) for v in (1.5, -0.25, 2.0)]
        if spec.target_domain == "unit":
            out += [(name, "target", v) for v in (1.5, -0.25)]
        if spec.target_domain == "sign":
            out += [(name, "target", v) for v in (0.5, 2.0, 0.0)]
        if spec.kind == "classes":
            out += [(name, "target", v) for v in (5, 7, -1)]
    return [pytest.param(*c, id=f"{c[0]}-{c[1]}={c[2]}") for c in out]


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name,which,bad", _scanned_cases())
def test_non_native_values_are_checked(api, name, which, bad, dtype):
    """A bad value (probability outside [0, 1], label not +-1, class index out of range) in
    a non-native array is found wherever it is (first element, inside a vector, past a block
    of 4096, last element): ValueError naming the operand and the value. For the
    probabilities every other value is 0.5, whose swapped bytes read as a tiny positive
    number, as do those of 1.5, -0.25 and 2.0: a scanner reading the raw bytes sees a valid
    array."""
    spec = BY_NAME[name]
    shape = (9000,) if spec.kind == "elementwise" else (9000, 5)
    x, t, kw = valid_call(name, "fast", dtype, shape=shape, form="indices" if spec.kind == "classes" else None)
    if spec.input_domain == "unit":
        x, t = np.full(shape, 0.5, dtype), np.full(shape, 0.5, dtype)
    for position in (0, 5, 4096, -1):
        a = np.array(x if which == "input" else t)
        a.reshape(-1)[position] = bad
        a = as_order(a, SWAP)
        args = (a, t) if which == "input" else (x, a)
        for grad in (False, True):
            with pytest.raises(ValueError) as info:
                call(api, name, grad, *args, kw, "mean")
            message = str(info.value)
            assert which in message and (repr(float(bad)) in message or str(bad) in message), message
