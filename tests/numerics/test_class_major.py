"""Class losses on (N, C, d) input give the bits of the same samples as (N d, C) rows.

The compiled kernels compute up to 16 consecutive positions of one sample n of an (N, C, d)
input at a time across SIMD lanes (``TileAt`` in csrc/drivers.hpp), as they compute 16
consecutive (N, C) rows; positions that do not fill a tile go one by one. Either way every
sample must give the bits it gives as a row: losses, gradient and Hessian, every reduction
(the "sum" and "mean" add the samples in the same order), with class weights, ignored
targets, label smoothing and the adversarial rows, for d below, at and around the tile
width, and with the gradient written in place over the input. This is the layout of
LightGBM's multiclass scores ((K, n) class-major: N = 1) and of PyTorch's (N, C, H, W)
segmentation logits. (The NumPy backend makes no such promise: its sums follow NumPy's
reductions over each layout; this tests the compiled kernels and skips without them.)
"""

from __future__ import annotations

import numpy as np
import pytest

import fastloss
from cases import DTYPES
from helpers import assert_bitwise
from loss_inputs import class_rows
from fastloss._registry import LOSSES

SPATIAL = [s for s in LOSSES if s.kind == "classes" and s.max_input_dims is None]
pytestmark = pytest.mark.skipif(fastloss.get_backend() != "cython", reason="the compiled backend is not in use")
TWINS = ("", "_grad", "_grad_hess")


def _params(spec):
    """Parameter sets of the loss: the defaults, and each float parameter at a non-zero
    value that switches the tiles off (label smoothing) or onto another path (focal gamma)."""
    sets = [{}]
    for p in spec.params:
        if p.type is float and p.domain.contains(0.25):
            sets.append({p.name: 0.25})
    return sets


def _inputs(dtype, n, c, d, seed):
    """(N, C, d) logits whose first rows are the adversarial rows (their C = 4 values padded
    with random logits), and (N, d) class indices."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3, (n, d, c))
    adv = class_rows(dtype).astype(np.float64)
    flat = x.reshape(-1, c)
    k = min(len(adv), len(flat))
    flat[:k, :min(4, c)] = adv[:k, :min(4, c)]
    t = rng.integers(0, c, (n, d))
    return np.ascontiguousarray(np.moveaxis(x, -1, 1).astype(dtype)), t


def _as_rows(x, t):
    c = x.shape[1]
    return np.ascontiguousarray(np.moveaxis(x, 1, -1).reshape(-1, c)), np.ascontiguousarray(t.reshape(-1))


def _back(rows_result, shape):
    """A per-row result (N d, C) back to (N, C, d)."""
    n, c, d = shape
    return np.ascontiguousarray(np.moveaxis(rows_result.reshape(n, d, c), -1, 1))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("c", [4, 16, 17])
@pytest.mark.parametrize("d", [1, 15, 16, 17, 40])
@pytest.mark.parametrize("spec", SPATIAL, ids=lambda s: s.name)
def test_class_major_gives_the_rows_bits(spec, d, c, dtype):
    n = 3
    x, t = _inputs(dtype, n, c, d, seed=d * 100 + c)
    weight = np.linspace(0.5, 2.0, c).astype(dtype)
    ignored = t.copy()
    ignored.reshape(-1)[::5] = -100
    variants = [("plain", t, {})]
    if spec.weight == "class":
        variants.append(("class weight", t, {"weight": weight}))
    if spec.ignore_index:
        variants.append(("ignored targets", ignored, {"ignore_index": -100}))
    for params in _params(spec):
        for what, target, kw in variants:
            kw = {**kw, **params}
            xr, tr = _as_rows(x, target)
            for twin in TWINS:
                fn = getattr(fastloss, spec.name + twin, None)
                if fn is None:
                    continue
                for reduction in ("none", "sum", "mean"):
                    label = f"{what} {params} {spec.name}{twin} {reduction}"
                    got = fn(x, target, reduction=reduction, **kw)
                    want = fn(xr, tr, reduction=reduction, **kw)
                    got, want = (got, want) if twin else ((got,), (want,))
                    loss, rows_loss = got[0], want[0]
                    if reduction == "none":
                        rows_loss = np.ascontiguousarray(rows_loss.reshape(n, d))
                    assert_bitwise(loss, rows_loss, f"{label}: loss")
                    for name, a, b in zip(("grad", "hess"), got[1:], want[1:]):
                        assert_bitwise(a, _back(b, x.shape), f"{label}: {name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("spec", SPATIAL, ids=lambda s: s.name)
def test_class_major_in_place(spec, dtype):
    """The gradient (and the Hessian) written over the input: each tile reads its samples
    before writing them, and no tile reads what another wrote."""
    x, t = _inputs(dtype, 2, 5, 37, seed=7)
    loss, grad, hess = getattr(fastloss, spec.name + "_grad_hess")(x, t, reduction="sum")
    for which in (0, 1):
        buf = x.copy()
        other = np.empty_like(x)
        out = (buf, other) if which == 0 else (other, buf)
        got = getattr(fastloss, spec.name + "_grad_hess")(buf, t, reduction="sum", out=out)
        assert_bitwise(got[0], loss, "loss")
        assert_bitwise(out[0], grad, "grad in place" if which == 0 else "grad")
        assert_bitwise(out[1], hess, "hess in place" if which == 1 else "hess")
