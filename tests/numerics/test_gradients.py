"""Gradients: the gradient each ``NAME_grad`` returns is the derivative of the loss that
``NAME`` returns, and at every kink it takes the documented value.

* Away from the kinks: sixth-order central finite differences of fastloss's *own* float64
  loss (not of a reference formula: test_values checks fastloss's gradient against finite
  differences of the float64 formulas) for every loss, parameter combination, target form
  and reduction, on both backends. The test inputs (tests/support/cases.py) keep every residual and
  hinge argument at least 0.05 from a kink, wider than the stencil (3 steps of 1e-3).
* At the kinks (where the derivative does not exist), the values API.md and the registry
  document: L1 and smooth L1 at a zero residual, Huber at |r| = delta (and 0), smooth L1 at
  |r| = beta, the hinges at margin - y x = 0, multi-margin at a zero hinge argument, BCE at
  probabilities 0 and 1 (PyTorch's clamps). Checked in float32 and float64, and against
  PyTorch's autograd where PyTorch has the loss.
"""

from __future__ import annotations

import numpy as np
import pytest

import reference
from cases import DTYPES, one_case_per_param_set
from fastloss._registry import BY_NAME, LOSSES, REDUCTIONS
from helpers import assert_grad_close, loss_fn

CASES = one_case_per_param_set()
# Sixth-order differences with steps of 1e-3 (relative to max(1, |x|)): truncation error
# ~1e-18, rounding error ~2e-16 * |loss| / 1e-3 ~ 1e-12 of the largest gradient component
# here. 1e-9 leaves a margin of ~100 and still catches a wrong factor or term anywhere.
FD_ORDER, FD_STEP, FD_RTOL = 6, 1e-3, 1e-9


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradient_is_the_derivative_of_the_returned_loss(api, case, reduction):
    x, t, kw = case.generate(np.float64)
    _, grad = loss_fn(api, case.loss, grad=True)(x, t, reduction=reduction, **kw)
    plain = loss_fn(api, case.loss)
    summed = "sum" if reduction == "none" else reduction  # "none": the gradient of the sum

    def value(xp):
        return float(plain(xp, t, reduction=summed, **kw))

    fd = reference.fd_of(value, x, FD_STEP, FD_ORDER)
    assert_grad_close(grad, fd, FD_RTOL)


def test_cases_cover_every_loss_parameter_and_form():
    for spec in LOSSES:
        mine = [c for c in CASES if c.loss == spec.name]
        used = {k for c in mine for k, _ in c.params}
        assert {p.name for p in spec.params} <= used, spec.name
        assert ("weight" in used) == bool(spec.weight)
        assert ("pos_weight" in used) == spec.pos_weight


# --------------------------------------------------------------------------- kinks

BCE_EPS = reference.BCE_GRAD_EPSILON  # PyTorch's float EPSILON, as a float64


def _kinks():
    """(loss, params, x, target, documented per-element loss, documented gradient)."""
    out = [
        # L1 at r = 0: |r| = 0, gradient sign(0) = 0
        ("l1_loss", {}, [2.5, -1.0, 0.0], [2.5, -1.0, 0.0], [0, 0, 0], [0, 0, 0]),
        # smooth L1: at r = 0 gradient 0; at |r| = beta the linear piece, |r| - beta/2, sign(r)
        ("smooth_l1_loss", {"beta": 0.5}, [0.5, -0.5, 3.0], [0.0, 0.0, 3.0], [0.25, 0.25, 0], [1, -1, 0]),
        ("smooth_l1_loss", {"beta": 0.0}, [1.0, -2.0], [1.0, -2.0], [0, 0], [0, 0]),
        # Huber at |r| = delta: delta (|r| - delta/2) = delta**2 / 2, gradient clip(r) = +-delta
        ("huber_loss", {"delta": 0.375}, [0.375, -0.375, 1.0], [0.0, 0.0, 1.0], [0.0703125, 0.0703125, 0],
         [0.375, -0.375, 0]),
        ("huber_loss", {}, [3.0, 1.0], [2.0, 2.0], [0.5, 0.5], [1, -1]),
        # hinge at margin - y x = 0: loss 0, gradient 0 (the kink counts as the flat side)
        ("hinge_loss", {}, [1.0, -1.0, 0.5], [1.0, -1.0, -1.0], [0, 0, 1.5], [0, 0, 1]),
        ("hinge_loss", {"margin": 0.5}, [0.5, -0.5], [1.0, -1.0], [0, 0], [0, 0]),
        ("squared_hinge_loss", {"margin": 2.0}, [2.0, -2.0], [1.0, -1.0], [0, 0], [0, 0]),
        # BCE at probabilities 0 and 1: each log clamped at -100, gradient (x - y) / max(x (1 - x), EPSILON)
        ("binary_cross_entropy", {}, [0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0], [0, 100, 100, 0],
         [0, -1 / BCE_EPS, 1 / BCE_EPS, 0]),
    ]
    return out


# multi-margin with z_c = margin - x_y + x_c = 0 exactly for c = 1 (not counted: z > 0 only)
MULTI_MARGIN_KINK = ([[2.0, 1.0, 0.0]], [0], {"margin": 1.0}, [0.0], [[0.0, 0.0, 0.0]])
MULTI_MARGIN_ACTIVE = ([[2.0, 1.5, 0.0]], [0], {"margin": 1.0, "p": 2}, [0.25 / 3], [[-1 / 3, 1 / 3, 0.0]])


KINKS = _kinks()


def test_every_loss_with_a_kink_is_covered():
    """Every loss whose documented formula has a max, clip, |.| or clamp has kink values."""
    kinked = {spec.name for spec in LOSSES
              if any(s in spec.formula for s in ("max", "|", "clip", " if "))}
    assert kinked == {k[0] for k in KINKS} | {"multi_margin_loss"}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kink", KINKS, ids=lambda k: f"{k[0]}-{k[1]}")
def test_documented_values_at_the_kinks(api, kink, dtype):
    name, params, x, t, e_loss, e_grad = kink
    x, t = np.array(x, dtype), np.array(t, dtype)
    loss, grad = loss_fn(api, name, grad=True)(x, t, reduction="none", **params)
    np.testing.assert_array_equal(loss, np.array(e_loss, dtype))
    np.testing.assert_array_equal(grad, np.array(e_grad, np.float64).astype(dtype))
    if reference.HAVE_TORCH and name not in reference.NOT_IN_TORCH:
        t_loss, t_grad = reference.torch_reference(name, x, t, params, "none")
        np.testing.assert_allclose(t_loss, e_loss, rtol=1e-12)
        np.testing.assert_allclose(t_grad, e_grad, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kink", [MULTI_MARGIN_KINK, MULTI_MARGIN_ACTIVE], ids=["at-kink", "beside-kink"])
def test_multi_margin_zero_hinge_does_not_count(api, kink, dtype):
    x, t, params, e_loss, e_grad = kink
    x, t = np.array(x, dtype), np.array(t)
    loss, grad = api.multi_margin_loss_grad(x, t, reduction="none", **params)
    np.testing.assert_allclose(loss, e_loss, rtol=1e-7, atol=0)
    np.testing.assert_allclose(grad, e_grad, rtol=1e-7, atol=0)
    if reference.HAVE_TORCH:
        t_loss, t_grad = reference.torch_reference("multi_margin_loss", x, t, params, "none")
        np.testing.assert_allclose(t_grad, e_grad, rtol=1e-12, atol=0)


def test_registry_documents_the_kink_values():
    """The values above are the registry's (and so the docstrings'): spot-check the text."""
    assert "0 at x == y" in BY_NAME["l1_loss"].gradient
    assert "clip(r, -delta, delta)" in BY_NAME["huber_loss"].gradient
    assert "the kink included" in BY_NAME["hinge_loss"].gradient
    assert "z_c = margin - x[y] + x[c] > 0" in BY_NAME["multi_margin_loss"].gradient
    assert "max(x * (1 - x), 1e-12)" in BY_NAME["binary_cross_entropy"].gradient
    assert "max(log(x), -100)" in BY_NAME["binary_cross_entropy"].formula
