"""Array subclasses and array-likes as operands: np.matrix, np.memmap (read-only and
big-endian ones too), user subclasses of ndarray (including hostile ones whose ufuncs and
methods raise), objects with ``__array__`` or ``__array_interface__``, buffer-protocol
objects, lists, tuples, 0-d arrays and NumPy scalars compute as the plain ndarray of their
values; masked arrays are a TypeError naming the operand and saying the mask is not
honoured (SPEC11 item 7), for input, target, weight, pos_weight and out.
"""

from __future__ import annotations

import array
import itertools
import re

import numpy as np
import pytest

from adv_data_support import (BY_NAME, CLASS_NAMES, ELEMENTWISE_NAMES, NAMES, PATHS, REDUCTIONS,
                                          all_results, call, operands, valid_call)
from helpers import assert_bitwise

pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")


class Sub(np.ndarray):
    """A plain user subclass."""

    def __array_finalize__(self, obj):
        self.info = getattr(obj, "info", "sub")


class Hostile(np.ndarray):
    """A subclass whose ufuncs, arithmetic, reshape and copies raise: fastloss must read
    the memory, never call the subclass's methods."""

    def __array_ufunc__(self, *args, **kwargs):
        raise RuntimeError("Hostile: ufunc called")

    def __array_function__(self, *args, **kwargs):
        raise RuntimeError("Hostile: array function called")

    def reshape(self, *args, **kwargs):
        raise RuntimeError("Hostile: reshape called")

    def astype(self, *args, **kwargs):
        raise RuntimeError("Hostile: astype called")

    def __getitem__(self, item):
        raise RuntimeError("Hostile: indexing")

    def __len__(self):
        raise RuntimeError("Hostile: len")

    def __iter__(self):
        raise RuntimeError("Hostile: iteration")


class WithArray:
    """An object exposing its data through __array__ only."""

    def __init__(self, a):
        self._a = np.asarray(a)

    def __array__(self, dtype=None, copy=None):
        return self._a if dtype is None else self._a.astype(dtype)


class WithInterface:
    """An object exposing its data through __array_interface__ only."""

    def __init__(self, a):
        self._a = np.ascontiguousarray(a)
        self.__array_interface__ = self._a.__array_interface__


class WithStrides:
    """__array_interface__ describing a strided, big-endian view of a buffer."""

    def __init__(self, a):
        a = np.asarray(a)
        big = np.zeros(a.shape + (2,), a.dtype.newbyteorder(">"))
        big[..., 0] = a
        self._big = big
        view = big[..., 0]
        self.__array_interface__ = view.__array_interface__


def as_matrix(a):
    return np.asmatrix(a)


def as_sub(a):
    return np.array(a).view(Sub)


def as_hostile(a):
    return np.array(a).view(Hostile)


def as_memmap(tmp_path, mode="r+", order="="):
    counter = iter(range(10**6))

    def make(a):
        a = np.asarray(a)
        dtype = a.dtype.newbyteorder(order)
        path = tmp_path / f"m{next(counter)}.bin"
        m = np.memmap(path, dtype=dtype, mode="w+", shape=a.shape if a.size else (1,))
        m[...] = a
        m.flush()
        if mode == "r":
            m = np.memmap(path, dtype=dtype, mode="r", shape=a.shape)
        return m

    return make


def as_list(a):
    return np.asarray(a).tolist()


def as_tuple(a):
    def tup(v):
        return tuple(tup(e) for e in v) if isinstance(v, list) else v

    return tup(np.asarray(a).tolist())


def as_buffer(a):
    a = np.ascontiguousarray(a)
    return memoryview(a) if a.ndim else a


def as_array_module(a):
    a = np.ascontiguousarray(a)
    if a.ndim != 1 or a.dtype.kind not in "fi":
        return a
    return array.array({"f": "f" if a.dtype == np.float32 else "d", "i": "q"}[a.dtype.kind], a.tolist())


CONVERTERS = {
    "matrix": as_matrix,
    "user-subclass": as_sub,
    "hostile-subclass": as_hostile,
    "__array__": WithArray,
    "__array_interface__": WithInterface,
    "strided-big-endian-interface": WithStrides,
    "list": as_list,
    "tuple": as_tuple,
    "memoryview": as_buffer,
}


def _applicable(kind, a):
    return kind != "matrix" or np.ndim(a) == 2


@pytest.mark.parametrize("kind", list(CONVERTERS) + ["memmap", "memmap-read-only", "memmap-big-endian"])
@pytest.mark.parametrize("name", NAMES)
def test_array_likes_compute_as_plain_arrays(api, name, kind, tmp_path):
    """Each operand (then all at once) as the array-like, on the fast and the general path:
    bitwise the plain ndarray call; results are plain ndarrays / NumPy scalars, never the
    subclass."""
    for path in PATHS:
        _check_array_like(api, name, path, kind, tmp_path)


def _check_array_like(api, name, path, kind, tmp_path):
    if kind.startswith("memmap"):
        convert = as_memmap(tmp_path / path, mode="r" if kind == "memmap-read-only" else "r+",
                            order=">" if kind == "memmap-big-endian" else "=")
        (tmp_path / path).mkdir()
    else:
        convert = CONVERTERS[kind]
    spec = BY_NAME[name]
    shape = (6, 7) if spec.kind == "elementwise" else (9, 5) if kind == "matrix" else None
    x, t, kw = valid_call(name, path, np.float64, shape=shape)
    expected = all_results(api, name, x, t, kw)
    ops = operands(name, path)
    tried = 0
    for which in ops + ["all"]:
        chosen = ops if which == "all" else [which]
        args = {"input": x, "target": t, **kw}
        if not all(_applicable(kind, args[w]) for w in chosen):
            continue
        if kind == "matrix" and spec.kind == "classes" and "target" in chosen:
            continue  # 1-D class indices cannot be a matrix (tested below)
        conv = {w: convert(args[w]) for w in chosen}
        xs = conv.get("input", x)
        ts = conv.get("target", t)
        kws = {k: conv.get(k, v) for k, v in kw.items()}
        got = all_results(api, name, xs, ts, kws)
        for key in expected:
            assert_bitwise(got[key], expected[key], f"{kind} as {which}: {key}")
        tried += 1
    assert tried


@pytest.mark.parametrize("kind", ["matrix", "user-subclass", "memmap"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", NAMES)
def test_out_may_be_a_subclass(api, name, path, kind, tmp_path):
    """``out`` an np.matrix, a user subclass or a memmap: written in place and returned as
    is, holding the plain call's gradient."""
    spec = BY_NAME[name]
    x, t, kw = valid_call(name, path, np.float64)
    if kind == "matrix" and x.ndim != 2:
        x, t, kw = valid_call(name, path, np.float64, shape=(6, 7) if spec.kind == "elementwise" else (9, 5))
    for reduction in REDUCTIONS:
        e_loss, e_grad = call(api, name, True, x, t, kw, reduction)
        if kind == "memmap":
            out = as_memmap(tmp_path)(np.full(x.shape, -7.25))
        else:
            out = {"matrix": as_matrix, "user-subclass": as_sub}[kind](
                np.full(x.shape, -7.25))
        loss, grad = call(api, name, True, x, t, kw, reduction, out=out)
        assert grad is out
        assert_bitwise(loss, e_loss, f"loss ({reduction})")
        assert_bitwise(np.asarray(out).view(np.ndarray).copy(), e_grad, f"grad in out ({reduction})")


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_matrix_of_class_indices_is_a_shape_error(api, name):
    """A (1, N) np.matrix of indices for an (N, C) input: ValueError naming target (no
    silent reshaping of the labels)."""
    x, t, kw = valid_call(name, "fast", np.float64, form="indices")
    with pytest.raises(ValueError, match="target"):
        call(api, name, True, x, np.asmatrix(t), kw, "mean")


# --------------------------------------------------------------------------- masked arrays


def _masked(a, mask_kind):
    a = np.asarray(a)
    if mask_kind == "some":
        mask = np.zeros(a.shape, bool)
        mask.reshape(-1)[::3] = True
        return np.ma.masked_array(a, mask=mask)
    if mask_kind == "none-masked":
        return np.ma.masked_array(a, mask=np.zeros(a.shape, bool))
    return np.ma.masked_array(a)  # nomask


def _masked_variants():
    out = []
    for name in NAMES:
        spec = BY_NAME[name]
        ops = ["input", "target", "out"]
        if spec.weight:
            ops.append("weight")
        if spec.pos_weight:
            ops.append("pos_weight")
        out += [pytest.param(name, op, id=f"{name}-{op}") for op in ops]
    return out


@pytest.mark.parametrize("name,which", _masked_variants())
def test_masked_arrays_are_refused(api, name, which):
    """A masked array (some entries masked, none masked, or nomask) as any operand:
    TypeError naming the operand and saying the mask is not honoured; nothing written.
    Class indices and float32 too."""
    for dtype, mask_kind in itertools.product((np.float64, np.float32), ("some", "none-masked", "nomask")):
        x, t, kw = valid_call(name, "general", dtype)
        out = np.full(x.shape, -7.25, dtype)
        args = {"input": x, "target": t, **kw}
        if which == "out":
            out = _masked(out, mask_kind)
        else:
            args[which] = _masked(args[which], mask_kind)
        xs, ts = args.pop("input"), args.pop("target")
        for grad in (False, True):
            if which == "out" and not grad:
                continue
            with pytest.raises(TypeError) as info:
                call(api, name, grad, xs, ts, args, "mean", **({"out": out} if grad else {}))
            message = str(info.value)
            arg_ok = (re.search(r"(?<![A-Za-z_])weight(?![A-Za-z_])", message) is not None
                      if which == "weight" else which in message)
            assert arg_ok and "mask" in message.lower(), message
        assert (np.asarray(out) == -7.25).all(), "out written by a refused call"


# --------------------------------------------------------------------------- 0-d and scalars


@pytest.mark.parametrize("name", ELEMENTWISE_NAMES)
def test_zero_d_scalars_and_python_numbers(api, name):
    """0-d arrays, NumPy scalars and Python numbers as input, target and weight of an
    elementwise loss: bitwise the (1,)-shaped call reshaped to ()."""
    spec = BY_NAME[name]
    for dtype in (np.float64, np.float32):
        x = dtype(0.75 if spec.input_domain == "unit" else -0.5)
        t = dtype(1.0 if spec.target_domain == "sign" else 0.25)
        kw = {"weight": dtype(1.5)} if spec.weight else {}
        if spec.pos_weight:
            kw["pos_weight"] = dtype(2.0)
        one = {r: call(api, name, True, np.array([x]), np.array([t]),
                       {k: np.array([v]) for k, v in kw.items()}, r) for r in REDUCTIONS}
        forms = [(np.array(x), np.array(t), {k: np.array(v) for k, v in kw.items()}), (x, t, kw)]
        if dtype == np.float64:
            forms.append((float(x), float(t), {k: float(v) for k, v in kw.items()}))
        for xi, ti, kwi in forms:
            for r in REDUCTIONS:
                loss, grad = call(api, name, True, xi, ti, kwi, r)
                e_loss, e_grad = one[r]
                assert_bitwise(loss, e_loss.reshape(()) if r == "none" else e_loss, f"loss ({r}) of {type(xi)}")
                assert_bitwise(grad, e_grad.reshape(()), f"grad ({r}) of {type(xi)}")


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_scalar_class_index_forms(api, name):
    """An unbatched (C,) input with its index as a 0-d array, a NumPy integer of any width,
    or a Python int: bitwise the same; np.uint64(2**63 + 1) is a ValueError naming target."""
    x = np.array([0.5, -1.0, 2.0, 0.25, 1.5])
    for dtype in (np.float64, np.float32):
        xd = x.astype(dtype)
        expected = {r: call(api, name, True, xd, np.array(2, np.int64), {}, r) for r in REDUCTIONS}
        for ti in (2, np.int8(2), np.uint8(2), np.int32(2), np.uint64(2), np.array(2, np.uint16),
                   np.array(2, ">i8")):
            for r in REDUCTIONS:
                loss, grad = call(api, name, True, xd, ti, {}, r)
                assert_bitwise(loss, expected[r][0], f"{type(ti)} {r}")
                assert_bitwise(grad, expected[r][1], f"{type(ti)} {r}")
    for bad in (np.uint64(2**63 + 1), np.uint64(2**64 - 100)):
        with pytest.raises(ValueError) as info:
            call(api, name, True, x, bad, {}, "mean")
        assert "target" in str(info.value) and str(int(bad)) in str(info.value), str(info.value)


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_lists_of_class_indices_and_logits(api, name):
    """Logits and indices as nested lists and tuples: bitwise the ndarray call."""
    x, t, kw = valid_call(name, "fast", np.float64, form="indices")
    expected = all_results(api, name, x, t, kw)
    for xs, ts in ((x.tolist(), t.tolist()), (as_tuple(x), tuple(t.tolist())), (x, t.tolist())):
        got = all_results(api, name, xs, ts, kw)
        for key in expected:
            assert_bitwise(got[key], expected[key], f"{type(xs).__name__} {key}")


def test_buffer_protocol_float32_stays_float32(api):
    """array.array('f') and a memoryview of float32 compute in float32; array.array('d') in
    float64; each bitwise its ndarray."""
    rng = np.random.default_rng(3)
    for dtype, code in ((np.float32, "f"), (np.float64, "d")):
        x = rng.normal(size=50).astype(dtype)
        t = rng.normal(size=50).astype(dtype)
        expected = api.huber_loss_grad(x, t, reduction="sum")
        for xs in (array.array(code, x.tolist()), memoryview(x)):
            loss, grad = api.huber_loss_grad(xs, t, reduction="sum")
            assert_bitwise(loss, expected[0], f"{type(xs).__name__} loss")
            assert_bitwise(grad, expected[1], f"{type(xs).__name__} grad")


def test_out_must_be_an_ndarray(api):
    """A list, a memoryview or an __array__ object as ``out``: ValueError naming out (it
    could not be written in place)."""
    x, t, kw = valid_call("mse_loss", "fast", np.float64)
    for out in (np.zeros(x.shape).tolist(), memoryview(np.zeros(x.shape)), WithArray(np.zeros(x.shape))):
        with pytest.raises(ValueError, match="out"):
            api.mse_loss_grad(x, t, out=out)
