"""Memory layouts and aliasing, for every operand of every loss on both paths:

* zero strides (np.broadcast_to views, every axis or one), negative strides, Fortran order,
  non-aligned data (views into a bytes buffer at offset 1, native and big-endian),
  read-only arrays: bitwise the result on C-contiguous copies;
* aliasing: ``out`` is the input (in place, contiguous or not), ``out`` is or overlaps the
  target, the weight, the pos_weight, the class indices or the class weight, ``out`` is a
  view of the input shifted by one element, input and target are the same array: loss and
  gradient equal (bitwise) those of the same call on separate copies;
* a non-aligned or non-contiguous ``out``: filled and returned.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastloss._registry

from adv_data_support import (BY_NAME, CLASS_NAMES, ELEMENTWISE_NAMES, FLOATS, NAMES, PATHS,
                                          REDUCTIONS, all_results, call, operands, valid_call)
from helpers import assert_bitwise, compiled_api


def unaligned(a, order="=", writable=True):
    """A copy of ``a`` at offset 1 of a bytes buffer (not aligned), in byte order ``order``."""
    a = np.asarray(a)
    dtype = a.dtype.newbyteorder(order)
    raw = bytearray(a.nbytes + 1) if writable else None
    data = np.ascontiguousarray(a, dtype=dtype).tobytes()
    if writable:
        raw[1:] = data
        v = np.frombuffer(raw, dtype=dtype, count=a.size, offset=1).reshape(a.shape)
    else:
        v = np.frombuffer(b"\0" + data, dtype=dtype, count=a.size, offset=1).reshape(a.shape)
    if a.dtype.itemsize > 1:
        assert not v.flags.aligned
    return v


def zero_strided(a):
    """A broadcast view (zero strides) with the values of ``a`` made row-constant first:
    returns (view, its contiguous copy)."""
    a = np.asarray(a)
    if a.ndim == 0:
        return a, a
    first = a[:1]
    return np.broadcast_to(first, a.shape), np.ascontiguousarray(np.broadcast_to(first, a.shape))


def fully_zero_strided(a):
    a = np.asarray(a)
    one = a.reshape(-1)[:1].reshape(())
    return np.broadcast_to(one, a.shape), np.full(a.shape, one)


def negative(a):
    a = np.asarray(a)
    return np.flip(np.flip(a).copy()) if a.ndim else a


def fortran(a):
    return np.asfortranarray(a)


def read_only(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


LAYOUTS = {
    "negative-strides": negative,
    "fortran": fortran,
    "read-only": read_only,
    "unaligned": unaligned,
    "unaligned-read-only": lambda a: unaligned(a, writable=False),
    "unaligned-big-endian": lambda a: unaligned(a, ">"),
    "strided": lambda a: np.repeat(np.asarray(a)[..., None], 3, axis=-1)[..., 1] if np.ndim(a) else a,
}


def _split(args):
    args = dict(args)
    return args.pop("input"), args.pop("target"), args


def _forms(name):
    spec = BY_NAME[name]
    if spec.probability_target:
        return ["indices+ignored", "probabilities"]
    return [None]


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", NAMES)
def test_layouts_are_bitwise_contiguous_copies(api, name, layout):
    """Each operand alone, then all, in the layout: bitwise the contiguous call, both
    dtypes, both paths, NAME and NAME_grad, every reduction."""
    convert = LAYOUTS[layout]
    for dtype in FLOATS:
        for path in PATHS:
            for form in _forms(name):
                x, t, kw = valid_call(name, path, dtype, form=form)
                expected = all_results(api, name, x, t, kw)
                args = {"input": x, "target": t, **kw}
                ops = operands(name, path)
                for chosen in [[o] for o in ops] + [ops]:
                    conv = {k: (convert(v) if k in chosen else v) for k, v in args.items()}
                    got = all_results(api, name, *_split(conv))
                    for key in expected:
                        assert_bitwise(got[key], expected[key], f"{dtype.__name__} {path} {form} {chosen}: {key}")


@pytest.mark.parametrize("kind", ["rows", "everything"])
@pytest.mark.parametrize("name", NAMES)
def test_zero_strides(api, name, kind):
    """np.broadcast_to views (zero strides) as input, target, weight, pos_weight and class
    indices, alone and together: bitwise the call on their contiguous copies."""
    make = zero_strided if kind == "rows" else fully_zero_strided
    for dtype in FLOATS:
        for path in PATHS:
            for form in _forms(name):
                x, t, kw = valid_call(name, path, dtype, form=form)
                args = {"input": x, "target": t, **kw}
                ops = operands(name, path)
                if BY_NAME[name].kind == "classes" and form != "probabilities" and kind == "everything":
                    args["target"] = np.where(np.asarray(t) < 0, 0, t)  # one class for all
                for chosen in [[o] for o in ops] + [ops]:
                    views, copies = dict(args), dict(args)
                    for k in chosen:
                        views[k], copies[k] = make(args[k])
                        assert 0 in views[k].strides or views[k].size <= 1
                    expected = all_results(api, name, *_split(copies))
                    got = all_results(api, name, *_split(views))
                    for key in expected:
                        assert_bitwise(got[key], expected[key], f"{dtype.__name__} {path} {form} {chosen}: {key}")


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_class_weight_and_indices_in_odd_layouts(api, name):
    """Class weight (C,) as a zero-stride view, reversed, unaligned, big-endian unaligned;
    class indices unaligned int64, reversed, int32 strided: bitwise the contiguous call."""
    for dtype in FLOATS:
        x, t, kw = valid_call(name, "general", dtype, shape=(9, 5), form="indices")
        expected = all_results(api, name, x, t, kw)
        w = kw["weight"]
        for wv in (negative(w), unaligned(w), unaligned(w, ">"), unaligned(w, writable=False)):
            got = all_results(api, name, x, t, {**kw, "weight": wv})
            for key in expected:
                assert_bitwise(got[key], expected[key], f"weight {wv.strides} {wv.dtype}: {key}")
        wz = np.broadcast_to(w[:1], w.shape)
        exp_z = all_results(api, name, x, t, {**kw, "weight": np.ascontiguousarray(wz)})
        got = all_results(api, name, x, t, {**kw, "weight": wz})
        for key in exp_z:
            assert_bitwise(got[key], exp_z[key], f"zero-stride weight: {key}")
        for tv in (negative(t), unaligned(t), unaligned(t, ">"), LAYOUTS["strided"](t.astype(np.int32))):
            got = all_results(api, name, x, tv, kw)
            for key in expected:
                assert_bitwise(got[key], expected[key], f"indices {tv.strides} {tv.dtype}: {key}")


# --------------------------------------------------------------------------- out layouts


@pytest.mark.parametrize("name", NAMES)
def test_out_in_odd_layouts(api, name):
    """``out`` unaligned, Fortran, negative-strided or strided: filled with the gradient
    (bitwise) and returned."""
    for dtype in FLOATS:
        for path in PATHS:
            x, t, kw = valid_call(name, path, dtype)
            for reduction in REDUCTIONS:
                e_loss, e_grad = call(api, name, True, x, t, kw, reduction)
                for make in (unaligned, fortran, negative, LAYOUTS["strided"]):
                    out = make(np.full(x.shape, -7.25, dtype))
                    loss, grad = call(api, name, True, x, t, kw, reduction, out=out)
                    assert grad is out
                    assert_bitwise(loss, e_loss, f"loss {make.__name__}")
                    assert_bitwise(np.ascontiguousarray(out), e_grad, f"grad {make.__name__} ({reduction})")


@pytest.mark.parametrize("name", NAMES)
def test_read_only_out_is_refused(api, name):
    x, t, kw = valid_call(name, "fast", np.float64)
    out = read_only(np.zeros(x.shape))
    with pytest.raises(ValueError, match="out"):
        call(api, name, True, x, t, kw, "mean", out=out)
    out = np.broadcast_to(np.zeros(x.shape[-1:]), x.shape)  # zero strides: read-only view
    with pytest.raises(ValueError, match="out"):
        call(api, name, True, x, t, kw, "mean", out=out)


# --------------------------------------------------------------------------- aliasing


def _expected_on_copies(api, name, x, t, kw, reduction):
    return call(api, name, True, np.array(x), np.array(t),
                {k: (np.array(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}, reduction)


def _check_alias(api, name, x, t, kw, out, reduction, what):
    """Run with ``out`` aliasing something; compare with the call on copies made before."""
    e_loss, e_grad = _expected_on_copies(api, name, x, t, kw, reduction)
    loss, grad = call(api, name, True, x, t, kw, reduction, out=out)
    assert grad is out, what
    assert_bitwise(loss, e_loss, f"{what}: loss ({reduction})")
    assert_bitwise(np.ascontiguousarray(out), e_grad, f"{what}: grad ({reduction})")


@pytest.mark.parametrize("layout", ["contiguous", "fortran", "strided", "negative", "unaligned"])
@pytest.mark.parametrize("name", NAMES)
def test_in_place(api, name, layout):
    """out is the input itself (in any layout): the gradient overwrites the input, loss and
    gradient equal the call on a copy."""
    make = {"contiguous": np.array, "fortran": fortran, "strided": LAYOUTS["strided"], "negative": negative,
            "unaligned": unaligned}[layout]
    for dtype in FLOATS:
        for path in PATHS:
            for form in _forms(name):
                for reduction in REDUCTIONS:
                    x, t, kw = valid_call(name, path, dtype, form=form)
                    x = make(x)
                    _check_alias(api, name, x, t, kw, x, reduction, f"in place {layout} {path} {form}")


def _alias_variants():
    out = []
    for name in NAMES:
        spec = BY_NAME[name]
        if spec.kind == "elementwise":
            out += [(name, "out-is-target"), (name, "out-overlaps-target"), (name, "target-is-input"),
                    (name, "all-three-same")]
            if spec.weight:
                out += [(name, "out-is-weight")]
            if spec.pos_weight:
                out += [(name, "out-is-pos_weight")]
        else:
            out += [(name, "out-holds-indices"), (name, "out-holds-class-weight")]
            if spec.probability_target:
                out += [(name, "out-is-probabilities"), (name, "probabilities-are-input")]
        out += [(name, "out-shifted-forward"), (name, "out-shifted-back")]
    return [pytest.param(*v, id=f"{v[0]}-{v[1]}") for v in out]


@pytest.mark.parametrize("name,alias", _alias_variants())
def test_aliasing(api, name, alias):
    """``out`` overlapping the target, a weight, the class indices or the input shifted by
    one element; input and target the same array: results equal the call on separate
    copies (made before the call)."""
    spec = BY_NAME[name]
    for dtype in FLOATS:
        for reduction in REDUCTIONS:
            form = "probabilities" if "probabilities" in alias else None
            path = "general" if "weight" in alias else "fast"
            x, t, kw = valid_call(name, path, dtype, form=form)
            n = x.size
            if alias == "out-is-target" or alias == "out-is-probabilities":
                _check_alias(api, name, x, t, kw, t, reduction, alias)
            elif alias == "out-overlaps-target":
                buf = np.empty(n + 1, dtype)
                tv = buf[1:].reshape(x.shape)
                tv[...] = t
                out = buf[:-1].reshape(x.shape)
                _check_alias(api, name, x, tv, kw, out, reduction, alias)
            elif alias in ("target-is-input", "probabilities-are-input"):
                same = np.array(t if spec.input_domain == "unit" or spec.target_domain or form else x)
                _check_alias(api, name, same, same, kw, np.empty_like(same), reduction, alias)
            elif alias == "all-three-same":
                same = np.array(t if spec.input_domain == "unit" or spec.target_domain else x)
                _check_alias(api, name, same, same, kw, same, reduction, alias)
            elif alias in ("out-is-weight", "out-is-pos_weight"):
                key = alias.split("-is-")[1]
                x, t, kw = valid_call(name, "general", dtype)
                w = np.broadcast_to(kw[key], x.shape).astype(dtype)  # full-shape copy
                kw = {**kw, key: w}
                _check_alias(api, name, x, t, kw, w, reduction, alias)
            elif alias == "out-holds-indices":
                x, t, kw = valid_call(name, "fast", dtype, shape=(9, 5), form="indices")
                out = np.zeros(x.shape, dtype)
                tv = out.reshape(-1).view(np.uint8)[: t.size * 8].view(np.int64)
                tv[...] = t
                _check_alias(api, name, x, tv, kw, out, reduction, alias)
            elif alias == "out-holds-class-weight":
                x, t, kw = valid_call(name, "general", dtype, shape=(9, 5), form="indices")
                out = np.zeros(x.shape, dtype)
                wv = out.reshape(-1)[3:3 + x.shape[1]]
                wv[...] = kw["weight"]
                _check_alias(api, name, x, t, {**kw, "weight": wv}, out, reduction, alias)
            elif alias in ("out-shifted-forward", "out-shifted-back"):
                buf = np.empty(n + 1, dtype)
                if alias == "out-shifted-forward":
                    xv, out = buf[:-1].reshape(x.shape), buf[1:].reshape(x.shape)
                else:
                    xv, out = buf[1:].reshape(x.shape), buf[:-1].reshape(x.shape)
                xv[...] = x
                _check_alias(api, name, xv, t, kw, out, reduction, alias)
            else:  # pragma: no cover
                raise AssertionError(alias)


@pytest.mark.parametrize("name", ELEMENTWISE_NAMES)
def test_large_in_place_and_shifted_out(api, name):
    """The same aliasing on 10_007 elements (several SIMD blocks and a tail; threads)."""
    for dtype in FLOATS:
        x, t, kw = valid_call(name, "fast", dtype, shape=(10_007,))
        for reduction in ("mean", "none"):
            xi = np.array(x)
            _check_alias(api, name, xi, t, kw, xi, reduction, "in place")
            buf = np.empty(x.size + 1, dtype)
            xv, out = buf[1:], buf[:-1]
            xv[...] = x
            _check_alias(api, name, xv, t, kw, out, reduction, "out shifted back by one")
            buf = np.empty(x.size + 1, dtype)
            tv, out = buf[1:], buf[:-1]
            tv[...] = t
            _check_alias(api, name, x, tv, kw, out, reduction, "out overlapping the target")


# A weight (or pos_weight, quantile) that repeats with a short period reaches the kernel as
# its repeating block, repeated to whole periods of at least 4096 values (csrc/dispatch.hpp,
# TiledWeight); the drivers split each block of the fixed summation order into runs at the
# period boundaries. The sums follow the element
# index, not the runs: any broadcast form of the same per-element values gives the bits of
# the full-size array (the compiled kernels; the NumPy backend sums its own way).
PERIODIC = ([(spec.name, "weight") for spec in fastloss._registry.LOSSES
             if spec.kind == "elementwise" and spec.weight == "elementwise"]
            + [(spec.name, spec.operand) for spec in fastloss._registry.LOSSES if spec.operand])


@pytest.mark.parametrize("name,operand", PERIODIC, ids=lambda v: str(v))
@pytest.mark.parametrize("columns", [1, 3, 7, 255, 256, 257, 4096, 5000])
def test_weight_period_does_not_change_the_bits(name, operand, columns):
    pytest.importorskip("fastloss.kernels")
    api = compiled_api()
    rng = np.random.default_rng(columns)
    rows = max(2, 40_000 // columns)
    spec = fastloss._registry.BY_NAME[name]
    from losses import REFERENCES

    x, t = REFERENCES[name].cases.make(rng, (rows, columns), {}, "values")
    for dtype in FLOATS:
        xd, td = np.asarray(x, dtype), np.asarray(t, dtype)
        low, high = (0.05, 0.95) if operand == "quantile" else (0.5, 2.0)
        per_column = rng.uniform(low, high, columns).astype(dtype)
        full = np.ascontiguousarray(np.broadcast_to(per_column, xd.shape))
        fg = getattr(api, name + "_grad_hess")
        kw = {"hessian": 1.0} if spec.hessian_policy is not None and spec.hessian_policy != "exact" else {}
        # ("mean" divides by the weight's sum, rounded as computed from the array given: the
        # full array's sum and the block's sum times its repeats may differ in the last bit)
        reductions = ("sum", "none") if operand == "weight" else ("mean", "sum", "none")
        for reduction in reductions:
            expected = fg(xd, td, **{operand: full}, reduction=reduction, **kw)
            forms = [per_column, per_column.reshape(1, columns)]
            if columns == 1:
                forms.append(float(per_column[0]))
            for weight in forms:
                got = fg(xd, td, **{operand: weight}, reduction=reduction, **kw)
                for e, g, what in zip(expected, got, ("loss", "grad", "hess")):
                    assert_bitwise(g, e, f"{name} {operand} {np.dtype(dtype).name} {reduction} {what}, "
                                         f"period {columns}")
