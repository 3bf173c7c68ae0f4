"""softmax_focal_loss beyond what the registry-driven suites check (docs/API.md; the
record is SOFTMAX_FOCAL in tests/support/losses.py):

* gamma = 0 is cross_entropy bit for bit: loss, gradient and Hessian, every dtype, reduction,
  weight, ignore_index and layout (row tiles, rows longer than the exp buffer, (N, C, d),
  unbatched), on both backends, the adversarial rows included.
* The gradient and the Hessian's diagonal are the exact derivatives: the closed forms of the
  record (mpmath, 256 bits) are checked against mpmath's numerical derivatives of the exact
  loss, then fastloss's float64 results against them.
* The stable forms: gamma < 1 where q = p[y] -> 1 (1 - q tiny or 0: no inf * 0), q -> 0 (log q
  huge or -inf: q log q = 0), logits of 1e30 and the float maximum (finite where the exact
  value is).
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from cases import DTYPES
from helpers import assert_bitwise
from loss_inputs import class_rows
from losses import _exact_focal_row

dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
TWINS = ("", "_grad", "_grad_hess")


def _layouts(dtype):
    """(id, x, target) of every class layout the kernels treat apart."""
    rng = np.random.default_rng(11)
    adv = class_rows(dtype)  # (rows, 4): dominant targets, huge logits, ties, overflow, random
    n = len(adv)
    out = [
        ("tiles C=4", adv, rng.integers(0, 4, n)),
        ("tiles C=3, 37 rows", rng.normal(0, 3, (37, 3)), rng.integers(0, 3, 37)),
        ("rows C=40", rng.normal(0, 3, (9, 40)), rng.integers(0, 40, 9)),
        ("rows C=2500 (beyond the exp buffer)", rng.normal(0, 3, (3, 2500)), rng.integers(0, 2500, 3)),
        ("(N, C, d)", rng.normal(0, 3, (5, 4, 3)), rng.integers(0, 4, (5, 3))),
        ("unbatched (C,)", rng.normal(0, 3, 6), np.int64(2)),
    ]
    return [(i, np.asarray(x, dtype), np.asarray(t, np.int64)) for i, x, t in out]


def _ignored(t, ignore):
    t = np.array(t, copy=True)
    if t.ndim:
        t.reshape(-1)[::3] = ignore
    return t


@dtypes
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", ["plain", "weight", "ignore_index", "ignore_index=1+weight"])
def test_softmax_focal_gamma0_is_cross_entropy_bitwise(api, dtype, reduction, options):
    for lid, x, t in _layouts(dtype):
        c = x.shape[0 if x.ndim == 1 else 1]
        kw = {}
        if "weight" in options:
            kw["weight"] = np.linspace(0.25, 2.0, c).astype(dtype)
        if options == "ignore_index":
            t = _ignored(t, -100)
        elif options.startswith("ignore_index=1"):
            t, kw["ignore_index"] = _ignored(t, 1), 1
        for twin in TWINS:
            with np.errstate(all="ignore"):
                focal = getattr(api, "softmax_focal_loss" + twin)(x, t, gamma=0.0, reduction=reduction, **kw)
                ce = getattr(api, "cross_entropy" + twin)(x, t, reduction=reduction, **kw)
            focal = focal if isinstance(focal, tuple) else (focal,)
            ce = ce if isinstance(ce, tuple) else (ce,)
            for what, a, e in zip(("loss", "grad", "hess"), focal, ce):
                assert_bitwise(a, e, f"{lid}, {what}{twin and ' of ' + twin}")


# Rows of logits (target 0 unless given): random, a dominant target (1 - q = 3e-17 and
# 4e-44: below float64's epsilon), a target far below the max (q = 1e-20), near-ties.
DERIVATIVE_ROWS = [
    ([0.3, -1.2, 2.0, 0.7], 2), ([0.3, -1.2, 2.0, 0.7], 1), ([1.5, 1.5, -0.5], 0),
    ([0.0, -40.0, -40.0, -40.0], 0), ([0.0, -100.0, -101.0], 0), ([0.0, 46.0, 1.0], 0),
    ([5.0, 5.0 - 1e-9, -3.0], 0), ([2.0, 7.0, -1.0, 0.5, 3.0], 3),
]
GAMMAS = (0.25, 0.5, 1.0, 2.0, 3.7)


def _exact(row, target, gamma):
    with mpmath.workprec(256):
        z = [mpmath.mpf(float(v)) for v in row]
        return _exact_focal_row(z, target, {"gamma": gamma}), z


@pytest.mark.parametrize("gamma", GAMMAS)
def test_softmax_focal_exact_derivatives_are_mpmath_derivatives(gamma):
    """The record's closed forms (gradient, Hessian diagonal) against mpmath's numerical
    first and second derivatives of the exact loss, logit by logit."""
    for row, target in DERIVATIVE_ROWS[:3] + DERIVATIVE_ROWS[5:]:
        (value, grad, hess), z = _exact(row, target, gamma)
        with mpmath.workprec(256):
            for j in range(len(z)):
                def f(v, j=j):
                    zz = list(z)
                    zz[j] = v
                    return _exact_focal_row(zz, target, {"gamma": gamma})[0]
                d1, d2 = mpmath.diff(f, z[j]), mpmath.diff(f, z[j], 2)
                assert abs(d1 - grad[j]) <= mpmath.mpf(2) ** -150 * max(abs(d1), 1), (row, target, j, d1, grad[j])
                assert abs(d2 - hess[j]) <= mpmath.mpf(2) ** -150 * max(abs(d2), 1), (row, target, j, d2, hess[j])


@pytest.mark.parametrize("gamma", GAMMAS)
def test_softmax_focal_float64_derivatives_match_mpmath(api, gamma):
    """float64 loss, gradient and Hessian diagonal against the exact values, element by
    element, to a relative 1e-13 (the confident rows included: their tiny values too)."""
    for row, target in DERIVATIVE_ROWS:
        x = np.array([row])
        loss, grad, hess = api.softmax_focal_loss_grad_hess(x, np.array([target]), gamma=gamma, reduction="sum")
        (value, e_grad, e_hess), _ = _exact(row, target, gamma)
        for what, got, exact in (("loss", [loss], [value]), ("grad", grad[0], e_grad), ("hess", hess[0], e_hess)):
            for j, (g, e) in enumerate(zip(got, exact)):
                e = float(e)
                assert abs(g - e) <= 1e-13 * abs(e), (what, row, target, gamma, j, g, e)


@dtypes
@pytest.mark.parametrize("gamma", [0.25, 0.5, 0.999])
def test_softmax_focal_gamma_below_one_where_q_is_one(api, dtype, gamma):
    """1 - q tiny or exactly 0 (the other classes' exp underflow): (1 - q)**(gamma - 1) is
    never formed, so no inf * 0: finite values, 0 where 1 - q is 0, the exact ones else."""
    big = 200.0 if dtype == np.float32 else 1e4
    x = np.array([[0.0, -big, -big], [0.0, -30.0, -31.0], [0.0, -17.0, -16.0], [1e30, 0.0, -1e30]], dtype)
    t = np.zeros(4, np.int64)
    loss, grad, hess = api.softmax_focal_loss_grad_hess(x, t, gamma=gamma, reduction="none")
    assert np.isfinite(loss).all() and np.isfinite(grad).all() and np.isfinite(hess).all()
    assert loss[0] == 0 and loss[3] == 0 and not grad[0].any() and not hess[0].any()
    for i in (1, 2):
        (value, e_grad, e_hess), _ = _exact(x[i].astype(np.float64), 0, gamma)
        tol = 64 * np.finfo(dtype).eps
        for got, exact in ((loss[i:i + 1], [value]), (grad[i], e_grad), (hess[i], e_hess)):
            exact = np.array([float(v) for v in exact])
            np.testing.assert_allclose(got, exact, rtol=tol, atol=0)


@dtypes
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_softmax_focal_huge_logits(api, dtype, gamma):
    """Logits of 1e30 and the float maximum: finite results wherever the exact value is
    finite, and the exact value there (q = 0: the loss is w_y (m - x_y), the gradient
    cross_entropy's; q = 1: 0)."""
    m = float(np.finfo(dtype).max)
    x = np.array([[1e30, -1e30, 0.0], [1e30, -1e30, 0.0], [m, 0.0, -1.0], [m, 0.0, -1.0], [m, -m / 4, 0.0]], dtype)
    t = np.array([1, 0, 1, 0, 2])
    loss, grad, hess = api.softmax_focal_loss_grad_hess(x, t, gamma=gamma, reduction="none")
    assert np.isfinite(loss).all() and np.isfinite(grad).all() and np.isfinite(hess).all()
    for i in range(len(x)):
        (value, e_grad, e_hess), _ = _exact(x[i].astype(np.float64), int(t[i]), gamma)
        for got, exact in ((loss[i:i + 1], [value]), (grad[i], e_grad), (hess[i], e_hess)):
            exact = np.array([float(v) for v in exact])
            np.testing.assert_allclose(got, exact, rtol=4 * np.finfo(dtype).eps, atol=0)
