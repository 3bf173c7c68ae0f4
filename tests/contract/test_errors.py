"""Every documented error: the exception type, and a message naming the argument (and,
where API.md says so, what it got)."""

from __future__ import annotations

import numpy as np
import pytest

import fastloss
from cases import DTYPES, all_error_cases, error_base
from fastloss._registry import LOSSES
from helpers import loss_fn

ERRORS = all_error_cases()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("grad", [False, True], ids=["loss", "grad"])
@pytest.mark.parametrize("error", ERRORS, ids=str)
def test_documented_error(api, error, grad, dtype):
    x, t, kw = error_base(error.loss, dtype)
    # the unbroken call is valid
    loss_fn(api, error.loss, grad)(x, t, **kw)
    bx, bt, bkw = error.build(x, t, kw)
    with pytest.raises(Exception) as info:
        loss_fn(api, error.loss, grad)(bx, bt, **bkw)
    assert type(info.value) is error.exc, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    for part in error.mentions:
        assert part in message, f"{part!r} not in {message!r}"


# The setting a refused value must leave in place: 1 thread, which get_num_threads() reports
# on any machine (a larger count is clamped to the usable CPUs, and on a 2-CPU machine 2 or 3
# would not tell the setting from the default).
KEPT_THREADS = 1


@pytest.mark.parametrize("bad", [0, -1])
def test_set_num_threads_refuses_non_positive(bad, restore_threads):
    fastloss.set_num_threads(KEPT_THREADS)
    with pytest.raises(ValueError, match="n_threads"):
        fastloss.set_num_threads(bad)
    assert fastloss.get_num_threads() == KEPT_THREADS


@pytest.mark.parametrize("bad", [1.5, "2", True, 2.0])
def test_set_num_threads_refuses_non_integers(bad, restore_threads):
    fastloss.set_num_threads(KEPT_THREADS)
    with pytest.raises(TypeError, match="n_threads"):
        fastloss.set_num_threads(bad)
    assert fastloss.get_num_threads() == KEPT_THREADS


@pytest.mark.parametrize("name", [spec.name for spec in LOSSES])
def test_positional_parameters_are_refused(api, name):
    """Everything after target is keyword-only."""
    x, t, kw = error_base(name)
    with pytest.raises(TypeError):
        loss_fn(api, name)(x, t, "mean")
