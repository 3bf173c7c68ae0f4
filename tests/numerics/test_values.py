"""Values and gradients of every loss x reduction x parameter combination x shape x dtype
x backend against the independent references (tests/support/reference.py).

* ``test_matches_reference``: PyTorch when installed, else the float64 formulas;
* ``test_matches_formulas``: the float64 formulas, always;
* finite differences check the formulas' gradients and fastloss's gradients in float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import reference
from cases import DTYPES, all_cases
from fastloss._registry import REDUCTIONS
from helpers import assert_grad_close, assert_value_close, check_result_types, loss_fn, loss_shape, rtol_for

CASES = all_cases()
# Finite differences (fourth order, relative step 1e-4) of a float64 formula are accurate
# to about 1e-10 of the largest gradient component here; 1e-8 leaves a wide margin while
# still catching any wrong term, factor or sign.
FD_RTOL = 1e-8

dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
reductions = pytest.mark.parametrize("reduction", REDUCTIONS)
cases = pytest.mark.parametrize("case", CASES, ids=str)


def _check(api, case, reduction, dtype, ref):
    x, t, kw = case.generate(dtype)
    loss, grad = loss_fn(api, case.loss, grad=True)(x, t, reduction=reduction, **kw)
    plain = loss_fn(api, case.loss)(x, t, reduction=reduction, **kw)
    ref_loss, ref_grad = ref(case.loss, x, t, kw, reduction)
    check_result_types(loss, grad, x, reduction, loss_shape(case.spec, case.shape))
    rtol = rtol_for(dtype)
    assert_value_close(loss, ref_loss, rtol)
    assert_value_close(plain, ref_loss, rtol)
    assert_grad_close(grad, ref_grad, rtol)


@dtypes
@reductions
@cases
def test_matches_reference(api, case, reduction, dtype):
    _check(api, case, reduction, dtype, reference.reference)


@dtypes
@reductions
@cases
def test_matches_formulas(api, case, reduction, dtype):
    _check(api, case, reduction, dtype, reference.formula_reference)


@reductions
@cases
def test_formula_gradients_match_finite_differences(case, reduction):
    x, t, kw = case.generate(np.float64)
    _, grad = reference.formula_reference(case.loss, x, t, kw, reduction)
    assert_grad_close(grad, reference.fd_grad(case.loss, x, t, kw, reduction), FD_RTOL)


@reductions
@cases
def test_gradients_match_finite_differences(api, case, reduction):
    x, t, kw = case.generate(np.float64)
    _, grad = loss_fn(api, case.loss, grad=True)(x, t, reduction=reduction, **kw)
    assert_grad_close(grad, reference.fd_grad(case.loss, x, t, kw, reduction), FD_RTOL)
