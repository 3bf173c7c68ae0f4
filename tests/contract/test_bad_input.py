"""Bad input never crashes or corrupts: every documented error of API.md (the table of
tests/support/cases.py, also run by test_errors for the type and message and by test_fused for a
separate float64 ``out``) is raised before anything is written, on every function and
dtype, even when ``out`` is the input itself; its message names the argument and what it
got. Also: mismatched dtypes between input, target and weight (documented: cast to the
compute dtype), absurd ``n_threads``, and arrays of more than 2**31 elements (64-bit index
arithmetic in the kernels and scanners), the latter when this machine has the memory.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cases import DTYPES, all_error_cases, error_base, representative_cases
from fastloss._registry import LOSSES, REDUCTIONS
from helpers import COMPILED_BACKENDS, assert_bitwise, compute_dtype, loss_fn, mem_available

ERRORS = all_error_cases()
SENTINEL = -7.25
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)


def _snapshot(*arrays):
    return [a.copy() for a in arrays if isinstance(a, np.ndarray)]


@dtypes
@pytest.mark.parametrize("error", ERRORS, ids=str)
def test_error_before_anything_is_written(api, error, dtype):
    """With out= a separate buffer and with out= the (broken) input itself: the documented
    exception, and not one byte changed in out, input, target or any weight."""
    x, t, kw = error_base(error.loss, dtype)
    bx, bt, bkw = error.build(x, t, kw)
    arrays = [bx, bt] + [v for v in bkw.values() if isinstance(v, np.ndarray)]
    before = _snapshot(*arrays)
    out = np.full(np.shape(x), SENTINEL, compute_dtype(x))
    in_place = isinstance(bx, np.ndarray) and bx.dtype == compute_dtype(bx) and bx.flags.writeable
    for target_out in [out] + ([bx] if in_place else []):
        with pytest.raises(error.exc) as info:
            loss_fn(api, error.loss, grad=True)(bx, bt, out=target_out, **bkw)
        assert (out == SENTINEL).all(), "out written by a refused call"
        for a, b in zip([a for a in arrays if isinstance(a, np.ndarray)], before):
            assert_bitwise(a, b, "an operand changed by a refused call")
    message = str(info.value)
    assert any(arg in message for arg in error.mentions), message
    said = "got" in message or "of shape" in message or any(m in message for m in error.mentions[1:])
    assert said, f"the message does not say what it got: {message!r}"


# --------------------------------------------------------------------------- mismatched dtypes

REPRESENTATIVE = [c for c in representative_cases()]


@pytest.mark.parametrize("mix", ["f32-input,f64-rest", "f64-input,f32-rest"])
@pytest.mark.parametrize("case", REPRESENTATIVE, ids=str)
def test_mismatched_dtypes_are_cast_to_the_compute_dtype(api, case, mix):
    """float32 input with float64 target and weights computes in float32 (target and
    weights cast to float32), float64 input with float32 ones in float64: bitwise the call
    with every float operand already in the compute dtype."""
    x_dtype, other = (np.float32, np.float64) if mix.startswith("f32") else (np.float64, np.float32)
    x, t, kw = case.generate(np.float64)
    x = x.astype(x_dtype)
    t = np.asarray(t)
    is_float = t.dtype.kind == "f"
    t_mixed = t.astype(other) if is_float else t
    kw_mixed = {k: (v.astype(other) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    t_same = t.astype(other).astype(x_dtype) if is_float else t  # the values the loss must see
    kw_same = {k: (v.astype(other).astype(x_dtype) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    f = loss_fn(api, case.loss, grad=True)
    for reduction in REDUCTIONS:
        loss, grad = f(x, t_mixed, reduction=reduction, **kw_mixed)
        e_loss, e_grad = f(x, t_same, reduction=reduction, **kw_same)
        assert_bitwise(loss, e_loss)
        assert_bitwise(grad, e_grad)
        assert grad.dtype == x_dtype


# --------------------------------------------------------------------------- n_threads

HUGE_THREADS = [1025, 2**31, 2**63, 10**30, np.int64(2**62), np.uint64(2**64 - 1), np.int32(7)]


@pytest.mark.parametrize("name", [spec.name for spec in LOSSES])
def test_absurd_thread_counts_are_clamped_not_errors(api, name):
    """Any positive integer is accepted (clamped to 1024 threads at most); the result is
    bitwise the one-thread result."""
    x, t, kw = error_base(name, np.float32)
    reps = 3000  # 60_000 elements: several blocks, threads really used
    x = np.concatenate([x] * reps)
    t = np.concatenate([t] * reps)
    kw = {k: (np.concatenate([v] * reps) if isinstance(v, np.ndarray) and v.shape[:1] == (4,) else v)
          for k, v in kw.items()}
    f = loss_fn(api, name, grad=True)
    base = f(x, t, n_threads=1, **kw)
    for n in HUGE_THREADS:
        loss, grad = f(x, t, n_threads=n, **kw)
        assert_bitwise(loss, base[0], f"loss with n_threads={n!r}")
        assert_bitwise(grad, base[1], f"grad with n_threads={n!r}")


@pytest.mark.parametrize("bad", [0, -1, -(2**70), np.int64(-3), np.int64(0)])
def test_non_positive_thread_counts_are_a_clear_error(api, bad):
    x, t, kw = error_base("mse_loss")
    with pytest.raises(ValueError, match=rf"n_threads must be a positive integer or None, got {int(bad)}"):
        api.mse_loss(x, t, n_threads=bad)


# --------------------------------------------------------------------------- > 2**31 elements

BIG_BYTES = 4 * (2**31 + 2**20)  # one float32 buffer a little over 2**31 elements


def _need_big_memory():
    if not COMPILED_BACKENDS:
        pytest.skip("the NumPy backend computes with input-sized temporaries: tested on the compiled backend")
    available = mem_available()
    if available < BIG_BYTES + 2 * 2**30:
        pytest.skip(f"needs {(BIG_BYTES + 2 * 2**30) / 2**30:.1f} GiB of available memory, "
                    f"MemAvailable is {available / 2**30:.1f} GiB")


@pytest.mark.bigmem
def test_more_than_2_31_elements():
    """One float32 buffer of 2**31 + 2**20 + 5 elements (8.6 GB), no copies:

    1. BCE(x, x) with x zero everywhere but 0.5 just below, at and above 2**31 and at the
       end: the sum is exactly 5 log 2 (every other term is 0): elements beyond 2**31 are
       read, once each. Then a value 1.25 at 2**31 + 3 and 1.5 at the end: the scanner
       reports 1.25, the first bad value, beyond 2**31.
    2. cross_entropy over the same memory as (N, 1000) logits, N * 1000 > 2**31, all zero,
       gradient in place (out=input): the mean is log(1000) and every one of the 2.1e9
       gradient values is checked (-(999/1000)/N at the target, (1/1000)/N elsewhere): a
       32-bit offset would leave or overwrite values somewhere."""
    _need_big_memory()
    import fastloss

    n = 2**31 + 2**20 + 5
    buf = np.zeros(n, np.float32)  # calloc: untouched pages cost no memory until written
    try:
        marks = [2**31 - 1, 2**31, 2**31 + 1, 2**31 + 2**19, n - 1]
        buf[marks] = 0.5
        total = fastloss.binary_cross_entropy(buf, buf, reduction="sum")
        assert abs(float(total) - 5 * math.log(2)) <= 4 * np.spacing(np.float32(5 * math.log(2))), total
        buf[2**31 + 3] = 1.25
        buf[n - 1] = 1.5
        with pytest.raises(ValueError, match=r"input \(probabilities\) must lie in \[0, 1\], got 1.25"):
            fastloss.binary_cross_entropy(buf, buf)
        buf[marks + [2**31 + 3]] = 0.0

        c = 1000
        rows = 2**31 // c + 7
        x = buf[: rows * c].reshape(rows, c)
        assert x.size > 2**31 and np.shares_memory(x, buf)
        t = np.arange(rows, dtype=np.int64) % c
        loss, grad = fastloss.cross_entropy_grad(x, t, out=x)
        assert grad is x
        assert abs(float(loss) - math.log(c)) <= np.spacing(np.float32(math.log(c))), loss
        hot, cold = grad[0, t[0]], grad[0, (t[0] + 1) % c]
        np.testing.assert_allclose([hot, cold], [-(1 - 1 / c) / rows, 1 / c / rows], rtol=1e-5)
        step = 100_000
        for start in range(0, rows, step):
            block = grad[start:start + step]
            tb = t[start:start + step]
            at_target = block[np.arange(len(block)), tb]
            assert (at_target == hot).all(), f"rows from {start}: wrong gradient at the target"
            assert np.count_nonzero(block == cold) == len(block) * (c - 1), f"rows from {start}"
    finally:
        del buf
