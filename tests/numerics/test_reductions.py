"""Reductions: sums and means accumulate in float64 whatever the dtype (API.md).

* A float32 mean of 1e8 terms is within 1e-7 relative of the exact mean of the same
  float32 terms (it is in fact their exact sum, correctly rounded to float32, give or take
  the float64 summation's 1e-12).
* A float32 sum or mean whose true value fits in float32 never overflows on the way:
  partial sums far beyond the float32 maximum (terms of 3e38 of both signs, or a sum of
  1e4 terms near 3e38 whose mean is near 3e38) stay finite and exact.

The exact sum of float32 values is computed exactly, not approximated: each value is
``M * 2**(e - 24)`` with an integer mantissa ``M < 2**24``; the mantissas are summed per
exponent in float64, which is exact while the bucket sums stay below 2**53 (1e8 values of
at most 2**24 each: 1.7e15 < 9e15), and the buckets are combined in Python integers.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from fastloss._registry import LOSSES
from helpers import loss_fn, mem_available
from losses import REFERENCES, referenced_losses

F32 = np.float32
BIG_N = 100_000_000


def exact_float32_sum(values, chunk=10_000_000) -> Fraction:
    """The exact sum of a float32 array, as a Fraction."""
    values = np.asarray(values, F32).reshape(-1)
    assert np.isfinite(values).all()
    lo = np.finfo(F32).minexp - 24  # frexp exponents of subnormals go below minexp
    hi = np.finfo(F32).maxexp + 1
    buckets = np.zeros(hi - lo + 1, np.float64)
    for start in range(0, values.size, chunk):
        m, e = np.frexp(values[start:start + chunk])
        buckets += np.bincount(e - lo, weights=np.ldexp(m.astype(np.float64), 24), minlength=buckets.size)
    assert (np.abs(buckets) < 2.0**53).all(), "bucket sums must stay exact"
    total = sum(int(b) << k for k, b in enumerate(buckets.tolist()) if b)
    return Fraction(total) * Fraction(2) ** (lo - 24)


def test_exact_float32_sum():
    rng = np.random.default_rng(0)
    v = rng.standard_normal(10_001).astype(F32) * np.float32(2.0) ** rng.integers(-140, 120, 10_001).astype(F32)
    assert exact_float32_sum(v) == sum(Fraction(float(a)) for a in v)
    assert exact_float32_sum(np.array([3e38, 3e38, -3e38], F32)) == Fraction(float(np.float32(3e38)))


@pytest.mark.parametrize("name", ["mse_loss", "binary_cross_entropy_with_logits"])
def test_float32_mean_of_1e8_terms(api, name):
    """The float32 mean of 1e8 terms against the exact mean of the very float32 terms
    fastloss computes ("none"): within 1e-7 relative, and correctly rounded from a sum
    accurate to 1e-12. A float32 running sum is off by about 1e-3 here."""
    if api.__name__ != "fastloss":
        pytest.skip("the NumPy backend sums 1e8 terms with NumPy's pairwise float64 sum: tested at 3e6 in test_edge")
    if mem_available() < 3 * 2**30:
        pytest.skip("needs 3 GiB of available memory (1e8 float32 input, target and terms)")
    rng = np.random.default_rng(42)
    x = rng.standard_normal(BIG_N, dtype=F32)
    t = (rng.random(BIG_N, dtype=F32) if name != "mse_loss" else rng.standard_normal(BIG_N, dtype=F32))
    f = loss_fn(api, name)
    mean = f(x, t, reduction="mean")
    terms = f(x, t, reduction="none")
    del x, t
    exact = exact_float32_sum(terms) / BIG_N
    del terms
    assert type(mean) is np.float32
    relative = abs(Fraction(float(mean)) - exact) / exact
    assert relative <= Fraction(1, 10**7), float(relative)
    # stronger: the float32 rounding of a float64 sum (error <= 1e-12 relative) of the terms
    nearest = np.float32(float(exact))
    assert mean in (nearest, np.nextafter(nearest, np.float32(np.inf)), np.nextafter(nearest, np.float32(0))), (
        mean, nearest)
    assert abs(float(mean) - float(exact)) <= float(np.spacing(nearest)) / 2 + float(exact) * 1e-12


# --------------------------------------------------------------------------- no overflow on the way

N_HUGE = 20_000  # several blocks of the fixed summation order, and enough for two threads


def _huge_terms(name, n):
    """(input, target, kwargs): float32 input whose every loss term is about 2e38 to 3.4e38,
    so that the sum (about 6e42) overflows float32 while the mean fits (each loss's record
    in tests/support/losses.py: huge_terms)."""
    rng = np.random.default_rng(7)
    big = rng.uniform(2.0e38, 3.0e38, n).astype(F32)
    return REFERENCES[name].huge_terms(big, n)


HUGE_TERM_LOSSES = [spec.name for spec in referenced_losses() if spec.input_domain != "unit"]


def test_every_loss_with_unbounded_terms_is_covered():
    """Every loss has huge terms but those whose input is a probability: BCE from
    probabilities, whose terms are bounded (each log is clamped at -100): its sums cannot
    approach the float32 maximum."""
    assert set(HUGE_TERM_LOSSES) == {spec.name for spec in LOSSES if spec.input_domain != "unit"}
    assert all(callable(REFERENCES[name].huge_terms) for name in HUGE_TERM_LOSSES)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("name", HUGE_TERM_LOSSES)
def test_float32_mean_does_not_overflow_when_the_sum_does(api, name, n_threads):
    x, t, kw = _huge_terms(name, N_HUGE)
    f = loss_fn(api, name)
    terms = f(x, t, reduction="none", n_threads=n_threads, **kw)
    assert np.isfinite(terms).all() and terms.min() > 1e38, (terms.min(), terms.max())
    exact = exact_float32_sum(terms)
    assert exact > np.finfo(F32).max  # the true sum does not fit in float32 ...
    with np.errstate(over="ignore"):  # NumPy warns when the float64 total becomes a float32 inf
        assert f(x, t, reduction="sum", n_threads=n_threads, **kw) == np.inf
    mean, grad = loss_fn(api, name, grad=True)(x, t, reduction="mean", n_threads=n_threads, **kw)
    exact_mean = exact / terms.size  # ... its mean does, and comes out right
    assert np.isfinite(mean)
    assert abs(Fraction(float(mean)) - exact_mean) <= Fraction(float(np.spacing(np.float32(float(exact_mean)))))
    assert np.isfinite(grad).all()


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("order", ["positives-first", "interleaved", "negatives-first"])
def test_float32_sum_that_fits_never_overflows_on_the_way(api, order, n_threads):
    """NLL terms -x_y of +-3e38: partial sums reach 3e42 in the worst order, the total is
    3e38 (it fits). A float32 accumulator overflows to inf (or inf - inf = NaN)."""
    k = N_HUGE // 2
    v = np.float32(3e38)
    terms = {"positives-first": np.r_[np.full(k + 1, v), np.full(k, -v)],
             "negatives-first": np.r_[np.full(k, -v), np.full(k + 1, v)],
             "interleaved": np.r_[np.tile([v, -v], k), [v]]}[order].astype(F32)
    x = np.stack([-terms, np.zeros_like(terms)], axis=1)  # nll term = -x_y = terms
    t = np.zeros(len(terms), np.int64)
    total = api.nll_loss(x, t, reduction="sum", n_threads=n_threads)
    mean = api.nll_loss(x, t, reduction="mean", n_threads=n_threads)
    assert total == v
    assert float(mean) == float(np.float32(float(v) / len(terms)))
    if order == "positives-first":  # what a float32 accumulator does with these terms
        with np.errstate(over="ignore"):
            assert not np.isfinite(np.cumsum(terms, dtype=F32)[-1])
    assert math.isfinite(total)
