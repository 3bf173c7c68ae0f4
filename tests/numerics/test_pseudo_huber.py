"""pseudo_huber_loss beyond what the registry-driven suites check (docs/API.md; the record is
PSEUDO_HUBER in tests/support/losses.py):

* Stable at every finite residual: huge residuals, where (r / delta)**2 overflows (and r**2
  for any delta), give the finite loss ~ delta |r|, the gradient +-delta and a Hessian that
  underflows to 0 (no inf, NaN or inf / inf); tiny residuals, where sqrt(1 + z**2) - 1
  cancels to 0 in the textbook formula, give r**2 / 2 to the last bits (subnormal ones
  included); both held to the exact (mpmath) values.
* delta extremes: the smallest subnormal delta and float64's maximum (float32: beyond its
  range) are accepted and give the limits (delta |r| resp. r**2 / 2, gradient r), never NaN.
* The limits at r = +-inf (x or the target infinite): loss inf, gradient +-delta, Hessian 0;
  NaN gives NaN.
* The Hessian is XGBoost's reg:pseudohubererror's (huber_slope = delta) and the gradient's
  derivative (mpmath, 256 bits).
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

from cases import DTYPES

dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)


def _exact(r, delta):
    """(loss, gradient, Hessian) of the residual r (an exact float), mpmath at 256 bits."""
    with mpmath.workprec(256):
        r, d = mpmath.mpf(float(r)), mpmath.mpf(float(delta))
        s = mpmath.sqrt(1 + (r / d) ** 2)
        return r * r / (s + 1), r / s, 1 / s ** 3


def _ulps(got, exact, dtype):
    """|got - exact| in ULP of the exact value rounded to the dtype (subnormal spacing below)."""
    info = np.finfo(dtype)
    with np.errstate(over="ignore"):
        v = dtype.type(abs(float(exact)))
    if math.isinf(v):  # beyond the dtype's range
        return 0.0 if math.isinf(float(got)) else math.inf
    if v < info.tiny:
        spacing = float(info.smallest_subnormal)
    else:  # (the spacing at the maximum is the one below it: spacing(max) overflows)
        spacing = float(np.spacing(min(v, np.nextafter(info.max, dtype.type(0)))))
    with mpmath.workprec(256):
        return float(abs(mpmath.mpf(float(got)) - exact) / spacing)


def _all(api, x, t, **kw):
    loss, grad, hess = api.pseudo_huber_loss_grad_hess(x, t, reduction="none", **kw)
    return loss, grad, hess


@dtypes
@pytest.mark.parametrize("delta", [1.0, 0.375, 2.0 ** -20, 2.0 ** 20])
def test_huge_residuals_do_not_overflow(api, dtype, delta):
    dtype = np.dtype(dtype)
    big = float(np.finfo(dtype).max)
    r = np.array([big, big / 3, 1e30 if dtype == np.float32 else 1e300, 3e19, 1e10], dtype)
    r = np.concatenate([r, -r])
    loss, grad, hess = _all(api, r, np.zeros_like(r), delta=delta)
    assert np.isfinite(grad).all() and np.isfinite(hess).all()
    for i, ri in enumerate(r):
        el, eg, eh = _exact(ri, delta)
        with np.errstate(over="ignore"):
            representable = math.isfinite(float(dtype.type(float(el))))
        if representable:
            assert np.isfinite(loss[i]), (ri, loss[i])
            assert _ulps(loss[i], el, dtype) <= 3, (ri, loss[i], float(el))
        else:  # delta |r| beyond the dtype's range: inf, as the exact value rounds
            assert loss[i] == np.inf
        assert _ulps(grad[i], eg, dtype) <= 2, (ri, grad[i], float(eg))
        assert _ulps(hess[i], eh, dtype) <= 5, (ri, hess[i], float(eh))
        assert abs(grad[i]) <= dtype.type(delta)


@dtypes
@pytest.mark.parametrize("delta", [1.0, 0.375, 1e3])
def test_tiny_residuals_do_not_cancel(api, dtype, delta):
    """r**2 / 2 to the last bits where sqrt(1 + z**2) - 1 is 0 in the dtype."""
    dtype = np.dtype(dtype)
    info = np.finfo(dtype)
    r = np.array([1e-3, 1e-5, 1e-8, 3e-12, 1e-20, float(info.tiny) * 1e6, float(info.smallest_subnormal) * 7,
                  float(info.smallest_subnormal)], np.float64).astype(dtype)
    r = r[r > 0]
    loss, grad, hess = _all(api, r, np.zeros_like(r), delta=delta)
    textbook = dtype.type(delta) ** 2 * (np.sqrt(1 + (r / dtype.type(delta)) ** 2) - 1)
    assert (textbook[:4] == 0).any() or dtype == np.float64  # what the stable form avoids (float32)
    for i, ri in enumerate(r):
        el, eg, eh = _exact(ri, delta)
        assert _ulps(loss[i], el, dtype) <= 2, (ri, loss[i], float(el))
        assert _ulps(grad[i], eg, dtype) <= 2, (ri, grad[i], float(eg))
        assert _ulps(hess[i], eh, dtype) <= 5, (ri, hess[i], float(eh))


@dtypes
def test_delta_extremes_give_the_limits(api, dtype):
    dtype = np.dtype(dtype)
    x = np.array([0.0, 1.5, -2.0, 1e-3, 40.0, -1e20, np.inf, -np.inf], dtype)
    t = np.zeros_like(x)
    r64 = x.astype(np.float64)
    # the largest delta: r**2 / 2, gradient r, Hessian 1 (finite r)
    loss, grad, hess = _all(api, x, t, delta=1.7976931348623157e308)
    fin = np.isfinite(x)
    expected = r64[fin] ** 2 / 2  # (1e40 / 2 is inf in float32: the loss too)
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(loss[fin], expected.astype(dtype), rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_array_equal(grad[fin], x[fin])
    np.testing.assert_array_equal(hess[fin], 1)
    assert (loss[~fin] == np.inf).all() and not np.isnan(grad).any() and not np.isnan(hess).any()
    # the smallest delta: delta |r| (0 where it underflows), gradient +-delta (0 in float32),
    # Hessian 1 at r = 0 only
    loss, grad, hess = _all(api, x, t, delta=5e-324)
    assert not np.isnan(loss).any() and not np.isnan(grad).any() and not np.isnan(hess).any()
    assert loss[0] == 0 and grad[0] == 0 and hess[0] == 1
    assert (loss[1:] >= 0).all() and (np.abs(grad) <= 5e-324).all() and (hess[1:] == 0).all()
    if dtype == np.float64:
        np.testing.assert_allclose(loss[fin][1:], 5e-324 * np.abs(r64[fin][1:]), rtol=1e-15, atol=5e-324)
        assert loss[5] == pytest.approx(5e-324 * 1e20)  # a normal loss from a subnormal delta


@dtypes
@pytest.mark.parametrize("delta", [1.0, 0.25])
def test_infinite_and_nan_residuals(api, dtype, delta):
    x = np.array([np.inf, -np.inf, 3.0, 3.0, np.nan, 1.0, np.inf], dtype)
    t = np.array([0.0, 0.0, -np.inf, np.inf, 0.0, np.nan, np.inf], dtype)
    loss, grad, hess = _all(api, x, t, delta=delta)
    np.testing.assert_array_equal(loss[:4], np.inf)
    np.testing.assert_array_equal(grad[:4], np.array([delta, -delta, delta, -delta], dtype))
    np.testing.assert_array_equal(hess[:4], 0)
    assert np.isnan(loss[4:]).all() and np.isnan(grad[4:]).all() and np.isnan(hess[4:]).all()


@dtypes
@pytest.mark.parametrize("delta", [1.0, 0.3, 4.0])
def test_hessian_is_xgboosts_and_the_derivative(api, dtype, delta):
    """XGBoost's PseudoHuberRegression: hess = slope**2 / ((slope**2 + z**2) sqrt(1 + z**2 /
    slope**2)), grad = z / sqrt(1 + z**2 / slope**2); and the Hessian is d grad / dx."""
    rng = np.random.default_rng(5)
    x = rng.normal(0, 3 * delta, 200).astype(dtype)
    t = rng.normal(0, 1, 200).astype(dtype)
    _, grad, hess = _all(api, x, t, delta=delta)
    z = x.astype(np.float64) - t.astype(np.float64)
    scale = delta ** 2 + z ** 2
    sq = np.sqrt(1 + z ** 2 / delta ** 2)
    rtol = 4 * float(np.finfo(dtype).eps)
    np.testing.assert_allclose(grad, z / sq, rtol=rtol)
    np.testing.assert_allclose(hess, delta ** 2 / (scale * sq), rtol=rtol)
    with mpmath.workprec(256):
        d = mpmath.mpf(delta)
        for xi, ti, hi in list(zip(x, t, hess))[:20]:
            g = lambda v: (v - mpmath.mpf(float(ti))) / mpmath.sqrt(1 + ((v - mpmath.mpf(float(ti))) / d) ** 2)
            assert float(hi) == pytest.approx(float(mpmath.diff(g, mpmath.mpf(float(xi)))), rel=rtol)


@dtypes
def test_weight_and_mean_follow_huber_loss(api, dtype):
    """With weight, 'mean' divides by the element count (huber_loss's convention)."""
    rng = np.random.default_rng(6)
    x, t = rng.normal(size=(4, 5)).astype(dtype), rng.normal(size=(4, 5)).astype(dtype)
    w = rng.uniform(0.5, 2, 5).astype(dtype)
    per = api.pseudo_huber_loss(x, t, weight=w, reduction="none", delta=0.7)
    mean = api.pseudo_huber_loss(x, t, weight=w, reduction="mean", delta=0.7)
    assert mean == pytest.approx(float(np.sum(per, dtype=np.float64)) / x.size, rel=4 * float(np.finfo(dtype).eps))
