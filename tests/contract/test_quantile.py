"""pinball_loss's ``quantile``: a number or an array broadcast to the input (a vector over the
last axis gives one quantile per column), each value in (0, 1); anything else is refused
before anything is written, with the argument named."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import assert_bitwise


def _xy(dtype=np.float64, shape=(6, 3)):
    rng = np.random.default_rng(5)
    return rng.normal(size=shape).astype(dtype), rng.normal(size=shape).astype(dtype)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.5, 1.5, math.nan, math.inf, [0.5, 1.0, 0.2], [0.1, math.nan, 0.3]])
def test_quantile_outside_the_open_unit_interval_is_a_value_error(api, bad):
    x, y = _xy()
    g, h = np.full_like(x, 7.0), np.full_like(x, 7.0)
    with pytest.raises(ValueError, match=r"quantile must be a number in \(0, 1\)"):
        api.pinball_loss_grad_hess(x, y, quantile=bad, out=(g, h))
    assert np.all(g == 7.0) and np.all(h == 7.0)


@pytest.mark.parametrize("bad", [None, "0.5", True, np.array([True, False, True]), 0.5 + 0j, [object()]])
def test_quantile_of_the_wrong_type_is_a_type_error(api, bad):
    x, y = _xy()
    with pytest.raises(TypeError, match="quantile"):
        api.pinball_loss(x, y, quantile=bad)


def test_quantile_that_does_not_broadcast_is_a_value_error(api):
    x, y = _xy()
    with pytest.raises(ValueError, match=r"quantile of shape \(4,\)"):
        api.pinball_loss(x, y, quantile=[0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_vector_of_quantiles_is_one_quantile_per_column(api, dtype):
    x, y = _xy(dtype)
    q = np.array([0.1, 0.5, 0.9])
    together = api.pinball_loss_grad_hess(x, y, quantile=q, reduction="none", hessian="exact")
    for j in range(3):
        alone = api.pinball_loss_grad_hess(np.ascontiguousarray(x[:, j]), np.ascontiguousarray(y[:, j]),
                                           quantile=q[j], reduction="none", hessian="exact")
        for a, b in zip(together, alone):
            assert_bitwise(np.ascontiguousarray(a[:, j]), b)


def test_quantile_one_half_is_half_l1(api):
    x, y = _xy()
    loss, grad = api.pinball_loss_grad(x, y)
    l1, g1 = api.l1_loss_grad(x, y)
    assert loss == l1 / 2  # 0.5 r and -0.5 r are exact halves
    np.testing.assert_array_equal(grad, g1 / 2)
