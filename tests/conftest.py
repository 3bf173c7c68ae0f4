"""Fixtures shared by the whole suite.

``api`` runs a test on every available backend: ``fastloss.numpy_backend`` always (id
"numpy") and the top-level ``fastloss`` module when its backend is the compiled one (id
"cython"). The whole suite (about 30,000 tests) takes about 7 minutes on a 2-core machine
(measured: README, "Quick start"); there is no slow marker.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest

# The tests are grouped by what they test: contract/ (the public API's promises), numerics/,
# runtime/, c_level/ and cli/. The shared helpers (losses: the one per-loss record of every
# registry loss, with its building blocks loss_inputs and loss_maths; cases, reference, helpers,
# adv_data_support, adv_runtime_support) are plain modules in support/; pyproject runs pytest with
# --import-mode=importlib, which puts no test directory on sys.path, so it is added here. So is
# c_level/: c_level/test_adv_c_level.py imports the C-call helpers of c_level/test_c_level.py.
TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS / "support"), str(TESTS / "c_level")]

# FASTLOSS_TESTS_WITHOUT_TORCH=1 runs the suite as on a machine without PyTorch (the
# references then fall back to the float64 formulas); contract/test_cases.py uses it.
if os.environ.get("FASTLOSS_TESTS_WITHOUT_TORCH") == "1":
    sys.modules["torch"] = None

# The only place the missing-compiled-backend RuntimeWarning is silenced: the first import.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    import fastloss

from helpers import BACKENDS  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "bigmem: needs about 10 GiB of memory (skipped when short); deselect with -m 'not bigmem'")


def pytest_report_header(config):
    import reference

    names = ", ".join(name for name, _ in BACKENDS)
    return [f"fastloss backends under test: {names}; reference: {reference.NAME}"]


@pytest.fixture(params=[module for _, module in BACKENDS], ids=[name for name, _ in BACKENDS])
def api(request):
    """A module with the 22 public loss functions, one per available backend."""
    return request.param


@pytest.fixture
def restore_threads():
    """Put the default thread count back (follow OpenMP) after the test."""
    yield
    fastloss.set_num_threads(None)
