"""The reductions have one meaning on every path. The compiled fast path and the C level use
csrc/reduction.hpp; the Python general path (both backends) its twin in fastloss/_api.py.
Here the two give the same bits on every edge of the divisor and the total."""

from __future__ import annotations

import itertools
import math
import struct

import pytest

from fastloss import _api

kernels = pytest.importorskip("fastloss.kernels", reason="the C++ twin is in the compiled module")

EDGES = [0.0, -0.0, 1.0, -1.0, 3.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1e308, -1e308,
         math.inf, -math.inf, math.nan, 0.1, 7.5]
CODES = {"mean": 0, "sum": 1, "none": 2}


def bits(v: float) -> bytes:
    return struct.pack("<d", v) if not math.isnan(v) else b"nan"


@pytest.mark.parametrize("reduction", CODES)
def test_mean_scale_same_bits(reduction):
    for divisor in EDGES:
        assert bits(_api._mean_scale(reduction, divisor)) == bits(kernels.mean_scale(CODES[reduction], divisor)), divisor


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reduced_same_bits(reduction):
    for total, divisor in itertools.product(EDGES, EDGES):
        py = _api._reduced(total, divisor, reduction)
        cc = kernels.reduced(total, divisor, CODES[reduction])
        assert bits(py) == bits(cc), (total, divisor)
