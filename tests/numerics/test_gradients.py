"""Gradients: the gradient each ``NAME_grad`` returns is the derivative of the loss that
``NAME`` returns, and at every kink it takes the documented value.

* Away from the kinks: sixth-order central finite differences of fastloss's *own* float64
  loss (not of a reference formula: test_values checks fastloss's gradient against finite
  differences of the float64 formulas) for every loss, parameter combination, target form
  and reduction, on both backends. The test inputs (tests/support/cases.py) keep every residual and
  hinge argument at least 0.05 from a kink, wider than the stencil (3 steps of 1e-3).
* At the kinks (where the derivative does not exist), the values API.md and the registry
  document (each loss's record in tests/support/losses.py): L1 and smooth L1 at a zero
  residual, Huber at |r| = delta (and 0), smooth L1 at |r| = beta, the hinges at
  margin - y x = 0, multi-margin at a zero hinge argument, BCE at probabilities 0 and 1
  (PyTorch's clamps). Checked in float32 and float64, and against PyTorch's autograd where
  PyTorch has the loss.
"""

from __future__ import annotations

import numpy as np
import pytest

import reference
from cases import DTYPES, one_case_per_param_set
from fastloss._registry import BY_NAME, LOSSES, REDUCTIONS
from helpers import assert_grad_close, loss_fn
from losses import REFERENCES, has_kink, referenced_losses

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

# The documented values at the kinks: each loss's record (tests/support/losses.py: kinks).
KINKS = [(spec.name, k.params, k.x, k.target, k.loss, k.grad)
         for spec in referenced_losses() if spec.kind == "elementwise" for k in REFERENCES[spec.name].kinks]
CLASS_KINKS = [pytest.param(spec.name, k, id=k.id)
               for spec in referenced_losses() if spec.kind == "classes" for k in REFERENCES[spec.name].kinks]


def test_every_loss_with_a_kink_is_covered():
    """Every loss whose documented formula has a max, clip, |.| or clamp has kink values."""
    kinked = {spec.name for spec in LOSSES if has_kink(spec)}
    assert kinked == {k[0] for k in KINKS} | {p.values[0] for p in CLASS_KINKS}


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
@pytest.mark.parametrize("name,kink", CLASS_KINKS)
def test_multi_margin_zero_hinge_does_not_count(api, name, kink, dtype):
    """The kinks of the class losses (today multi-margin's: a zero hinge argument does not
    count, z > 0 only), to float32 rounding; PyTorch's gradient where it has the loss."""
    x, t, params = np.array(kink.x, dtype), np.array(kink.target), kink.params
    loss, grad = loss_fn(api, name, grad=True)(x, t, reduction="none", **params)
    np.testing.assert_allclose(loss, kink.loss, rtol=1e-7, atol=0)
    np.testing.assert_allclose(grad, kink.grad, rtol=1e-7, atol=0)
    if reference.HAVE_TORCH and name not in reference.NOT_IN_TORCH:
        t_loss, t_grad = reference.torch_reference(name, x, t, params, "none")
        np.testing.assert_allclose(t_grad, kink.grad, rtol=1e-12, atol=0)


def test_registry_documents_the_kink_values():
    """The values above are the registry's (and so the docstrings'): spot-check the text."""
    assert "0 at x == y" in BY_NAME["l1_loss"].gradient
    assert "clip(r, -delta, delta)" in BY_NAME["huber_loss"].gradient
    assert "the kink included" in BY_NAME["hinge_loss"].gradient
    assert "z_c = margin - x[y] + x[c] > 0" in BY_NAME["multi_margin_loss"].gradient
    assert "max(x * (1 - x), 1e-12)" in BY_NAME["binary_cross_entropy"].gradient
    assert "max(log(x), -100)" in BY_NAME["binary_cross_entropy"].formula
