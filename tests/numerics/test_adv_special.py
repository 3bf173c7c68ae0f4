"""NaN and +-inf at every position of a vectorised, blocked kernel: the first element,
inside and at the end of the first SIMD vectors (7, 15), either side of a 4096-element
block boundary (4095, 4096), and the last element of the tail (n - 1), in the input, the
target, the weight, the pos_weight (and for class losses at the same flat positions of a
tall (N, 16) input and inside a row of 4200 classes).

Per element ("none") and gradient, NaN exactly where the reference has NaN, inf of the
same sign where it has inf, close elsewhere; "sum" and "mean" NaN / inf as the reference's.
The reference is PyTorch (float64 autograd on the same values; the float64 formulas
without it; the hinges always their formulas); BCE with logits is held to its exact
(mpmath) limits where an operand is infinite, as in test_edge. The NumPy backend gives
the same NaN and inf positions. Where a value is outside the loss's domain (BCE
probabilities, hinge labels) the special value is a ValueError naming the operand and
the value, wherever it is.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import reference
from adv_data_support import (BY_NAME, FLOATS, NAMES, NUMPY_API, REDUCTIONS, call, reference_results,
                                          valid_call)
from helpers import assert_grad_close, assert_value_close, rtol_for

SPECIALS = [math.nan, math.inf, -math.inf]
N_ELEMENTWISE = 8209  # two blocks of 4096 and a tail of 17


def positions(n):
    return sorted({p for p in (0, 7, 15, 4095, 4096) if p < n} | {n - 1})


def _operands(name):
    spec = BY_NAME[name]
    if spec.kind == "elementwise":
        ops = ["input", "target"]
        if spec.weight:
            ops.append("weight")
        if spec.pos_weight:
            ops.append("pos_weight")
    else:
        ops = ["input"]
        if spec.probability_target:
            ops.append("probabilities")
        ops.append("class-weight")
    return ops


VARIANTS = [pytest.param(name, op, id=f"{name}-{op}") for name in NAMES for op in _operands(name)]


def _refused_value(spec, op):
    """Whether a NaN / inf in this operand is outside the loss's documented domain."""
    return (op == "input" and spec.input_domain == "unit") or (op == "target" and spec.target_domain is not None)


def _base(name, op, dtype, shape):
    spec = BY_NAME[name]
    # no ignored samples here: PyTorch's gradient of an ignored row of NaN logits is NaN
    # (test_nan_logits_in_ignored_rows_follow_pytorch)
    form = "probabilities" if op == "probabilities" else ("indices" if spec.ignore_index else None)
    path = "general" if op in ("weight", "pos_weight", "class-weight") else "fast"
    x, t, kw = valid_call(name, path, dtype, form=form, shape=shape)
    if op == "weight":
        kw["weight"] = np.broadcast_to(kw["weight"], x.shape).astype(dtype)  # one weight per element
    if op == "pos_weight":
        kw["pos_weight"] = np.broadcast_to(kw["pos_weight"], x.shape).astype(dtype)
    for k in list(kw):  # only the operand under test among the array keywords
        if isinstance(kw[k], np.ndarray) and k != {"class-weight": "weight"}.get(op, op):
            del kw[k]
    return x, t, kw


def _shapes(spec, op="input"):
    """Tall inputs put the positions on rows (tiles of 16 rows), wide ones inside a row."""
    if spec.kind == "elementwise":
        return [(N_ELEMENTWISE,)]
    if op == "class-weight":  # many rows target the special classes; positions up to 4199
        return [(300, 16), (2, 4200)]
    if op == "probabilities" or spec.max_input_dims:
        return [(300, 16)]
    return [(300, 16), (2, 4200)]


def _target_array(op, x, t, kw):
    if op == "input":
        return x
    if op in ("target", "probabilities"):
        return t
    return kw["weight" if op == "class-weight" else op]


WEIGHT_OPS = ("weight", "pos_weight", "class-weight")


def _compare(api, name, x, t, kw, dtype, what, reductions=REDUCTIONS, use_reference=True):
    """Against the reference (unless ``use_reference`` is false: the float64 formulas do not
    reproduce PyTorch's NaN placement for special weights) and, without PyTorch, against
    the NumPy backend."""
    rtol = rtol_for(dtype)
    for reduction in reductions:
        loss, grad = call(api, name, True, x, t, kw, reduction)
        plain = call(api, name, False, x, t, kw, reduction) if len(reductions) > 1 else loss
        if use_reference:
            ref_loss, ref_grad = reference_results(name, x, t, kw, reduction)
            assert_value_close(plain, ref_loss, rtol, what=f"{what}: loss of {name} ({reduction})")
            assert_value_close(loss, ref_loss, rtol, what=f"{what}: loss of {name}_grad ({reduction})")
            assert_grad_close(grad, ref_grad, rtol, what=f"{what}: grad ({reduction})")
        if api is not NUMPY_API and not reference.HAVE_TORCH:  # with PyTorch both are held to it
            n_loss, n_grad = call(NUMPY_API, name, True, x, t, kw, reduction)
            for mine, theirs, label in ((loss, n_loss, "loss"), (grad, n_grad, "grad")):
                mine, theirs = np.asarray(mine), np.asarray(theirs)
                assert (np.isnan(mine) == np.isnan(theirs)).all(), f"{what}: NaN {label} differs from the numpy backend ({reduction})"
                inf = np.isinf(mine) | np.isinf(theirs)
                assert (mine[inf] == theirs[inf]).all(), f"{what}: inf {label} differs from the numpy backend ({reduction})"


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name,op", VARIANTS)
def test_special_values_at_every_position(api, name, op, dtype):
    """A lone NaN at each position ("none"), then NaN, inf and -inf at every position at
    once, in the three rotations (every reduction)."""
    spec = BY_NAME[name]
    for shape in _shapes(spec, op):
        x, t, kw = _base(name, op, dtype, shape)
        n = _target_array(op, x, t, kw).size
        where_all = positions(n)
        placements = [({p: math.nan}, ("none",)) for p in where_all]
        placements += [({p: SPECIALS[(i + k) % 3] for i, p in enumerate(where_all)}, REDUCTIONS) for k in range(3)]
        for placed, reductions in placements:
            xs, ts = np.array(x), np.array(t)
            kws = {k: (np.array(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
            a = _target_array(op, xs, ts, kws).reshape(-1)
            for p, special in placed.items():
                a[p] = special
            what = f"{op} {placed} (shape {shape})"
            special = next(iter(placed.values()))
            if _refused_value(spec, op):
                for grad in (False, True):
                    with pytest.raises(ValueError) as info:
                        call(api, name, grad, xs, ts, kws, "mean")
                    message = str(info.value)
                    assert op in message and any(repr(v) in message for v in placed.values()), \
                        f"{what}: {message}"
                continue
            _compare(api, name, xs, ts, kws, dtype, what, reductions,
                     use_reference=reference.HAVE_TORCH or op not in WEIGHT_OPS or name in reference.NOT_IN_TORCH)
            if op in WEIGHT_OPS:
                _untouched_terms_unchanged(api, name, op, x, t, kw, xs, ts, kws, placed, what)


def _untouched_terms_unchanged(api, name, op, x, t, kw, xs, ts, kws, placed, what):
    """Special weights change nothing of the terms they do not weigh: per term ("none")
    and in the gradient of the sum, the elements (rows of class losses, whose target class
    has a finite weight) that no special weight touches are bitwise those of the call
    with the original weights."""
    key = "weight" if op == "class-weight" else op
    spec = BY_NAME[name]
    for reduction in ("none", "sum"):
        loss, grad = call(api, name, True, xs, ts, kws, reduction)
        b_loss, b_grad = call(api, name, True, x, t, kw, reduction)
        if spec.kind == "elementwise":
            touched = np.zeros(np.shape(xs), bool).reshape(-1)
            touched[list(placed)] = True
            touched = touched.reshape(np.shape(xs))
            gmask = lmask = ~touched
        else:
            lmask = ~np.isin(np.asarray(ts), list(placed))
            gmask = np.broadcast_to(lmask[:, None], np.shape(xs))
        if reduction == "none":
            assert np.array_equal(loss[lmask], b_loss[lmask], equal_nan=True), \
                f"{what}: per-term losses away from the special {key} changed"
        assert np.array_equal(grad[gmask], b_grad[gmask], equal_nan=True), \
            f"{what}: gradient away from the special {key} changed ({reduction})"


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", [n for n in NAMES if BY_NAME[n].kind == "classes"])
def test_special_rows(api, name, dtype):
    """Rows of a class loss made entirely of NaN, +inf, -inf, or mixing +inf and -inf (tall
    and wide inputs, row 0, a middle row and the last row): as the reference."""
    for shape in ((40, 16), (3, 300)):
        x, t, kw = _base(name, "input", dtype, shape)  # no ignored rows (see below)
        for fill in ([math.nan], [math.inf], [-math.inf], [math.inf, -math.inf], [-math.inf, 0.0]):
            xs = np.array(x)
            for row in (0, shape[0] // 2, shape[0] - 1):
                xs[row] = np.resize(np.array(fill, dtype), shape[1])
            _compare(api, name, xs, t, kw, dtype, f"rows filled with {fill} (shape {shape})")


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", [n for n in NAMES if BY_NAME[n].ignore_index])
def test_nan_logits_in_ignored_rows_are_ignored(api, name, dtype):
    """NaN / inf logits in a sample whose target is ignore_index change nothing: that sample
    has loss 0 and a zero gradient row, and every result is bitwise the call with finite
    logits there (README: an ignored sample has no loss and a zero gradient). A documented
    difference: PyTorch's cross_entropy leaks NaN into an ignored row through log-softmax's
    backward."""
    from helpers import assert_bitwise

    x, t, kw = valid_call(name, "fast", dtype, form="indices+ignored", shape=(40, 5))
    ignored = np.flatnonzero(t == -100)
    assert ignored.size
    for fill in (math.nan, math.inf, -math.inf):
        xs = np.array(x)
        xs[ignored[0]] = fill
        xs[ignored[-1], 1] = fill
        for extra in ({}, {"label_smoothing": 0.1}) if BY_NAME[name].probability_target else ({},):
            kwe = {**kw, **extra}
            for reduction in ("none", "sum", "mean"):
                base_loss, base_grad = call(api, name, True, x, t, kwe, reduction)
                loss, grad = call(api, name, True, xs, t, kwe, reduction)
                what = f"ignored rows with {fill} {extra} ({reduction})"
                assert_bitwise(loss, base_loss, f"loss, {what}")
                assert_bitwise(grad, base_grad, f"grad, {what}")
                assert not grad[ignored].any(), what
