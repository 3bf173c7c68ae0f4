"""Assertions and call helpers shared by the test modules."""

from __future__ import annotations

import functools
import os
import types

import numpy as np

import fastloss  # first imported (warning silenced) by conftest.py
import fastloss.numpy_backend
from cases import index_shape

# Every available backend, as (id, module with the 22 functions): NumPy always, and the
# top-level module when it runs on the compiled backend.
BACKENDS = [("numpy", fastloss.numpy_backend)]
if fastloss.get_backend() == "cython":
    BACKENDS.append(("cython", fastloss))
COMPILED_BACKENDS = [(name, module) for name, module in BACKENDS if name != "numpy"]


@functools.lru_cache(maxsize=None)
def compiled_api():
    """The 22 public functions on the compiled backend, whatever backend ``fastloss`` itself
    runs on: the C level and the compiled examples are the compiled backend's kernels, and
    they are held to its Python API bit for bit even under FASTLOSS_BACKEND=numpy (where the
    extension is still built). Callers skip first when ``fastloss.kernels`` is missing."""
    if fastloss.get_backend() == "cython":
        return fastloss
    from fastloss import _cython_backend
    from fastloss._api import make_public_api

    return types.SimpleNamespace(**make_public_api(_cython_backend))

RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}


def usable_cpus() -> int:
    """The CPUs this process may run on: fastloss never uses more threads than this, and
    get_num_threads() reports a requested count clamped to it (machine-dependent)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def clamped_threads(n: int) -> int:
    """What get_num_threads() reports after set_num_threads(n) (or OMP_NUM_THREADS=n) here."""
    return max(1, min(int(n), usable_cpus()))


def rtol_for(dtype) -> float:
    return RTOL[np.dtype(dtype)]


def is_half(dtype) -> bool:
    """float16 (either byte order) or ml_dtypes' bfloat16."""
    dtype = np.dtype(dtype)
    return (dtype.kind == "f" and dtype.itemsize == 2) or (dtype.kind == "V" and dtype.name == "bfloat16")


def compute_dtype(x) -> np.dtype:
    """fastloss's compute dtype for an input: float32, float16 and bfloat16 compute in
    float32, all else in float64."""
    dtype = np.asarray(x).dtype
    return np.dtype(np.float32) if dtype == np.float32 or is_half(dtype) else np.dtype(np.float64)


def grad_dtype(x) -> np.dtype:
    """The dtype of the gradient (and Hessian) fastloss returns for an input: the input's own
    for float16 and bfloat16 (native byte order), else the compute dtype."""
    dtype = np.asarray(x).dtype
    return dtype.newbyteorder("=") if is_half(dtype) else compute_dtype(x)


def loss_fn(api, name, grad=False):
    return getattr(api, name + "_grad" if grad else name)


def assert_bitwise(actual, expected, what="result"):
    """Same type, dtype, shape and bytes (NaN payloads included)."""
    assert type(actual) is type(expected), f"{what}: type {type(actual)} != {type(expected)}"
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.dtype == e.dtype, f"{what}: dtype {a.dtype} != {e.dtype}"
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    if a.tobytes() != e.tobytes():
        bits = f"u{a.itemsize}"
        diff = np.flatnonzero(np.ascontiguousarray(a).reshape(-1).view(bits)
                              != np.ascontiguousarray(e).reshape(-1).view(bits))
        raise AssertionError(
            f"{what}: not bitwise identical at {diff.size} of {a.size} positions, first at flat index "
            f"{diff[0]}: {a.reshape(-1)[diff[0]]!r} != {e.reshape(-1)[diff[0]]!r}"
        )


def assert_value_close(actual, expected, rtol, what="loss"):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               rtol=rtol, atol=0, equal_nan=True, err_msg=what)


def assert_grad_close(actual, expected, rtol, what="grad"):
    """rtol, plus an atol of rtol * max|expected|: components such as softmax - onehot
    cancel, so their error is relative to the largest component, not to themselves."""
    expected = np.asarray(expected, np.float64)
    finite = expected[np.isfinite(expected)]
    scale = float(np.max(np.abs(finite))) if finite.size else 0.0
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol,
                               atol=rtol * scale, equal_nan=True, err_msg=what)


def check_result_types(loss, grad, x, reduction, loss_shape):
    """Scalar results are NumPy scalars of the compute dtype, "none" gives an ndarray of
    the loss terms' shape, the gradient an ndarray shaped like the input."""
    dtype = compute_dtype(x)
    if reduction == "none":
        assert type(loss) is np.ndarray, type(loss)
        assert loss.shape == loss_shape
    else:
        assert type(loss) is dtype.type, f"{type(loss)} is not {dtype.type}"
    assert np.asarray(loss).dtype == dtype
    if grad is not None:
        assert type(grad) is np.ndarray
        assert grad.dtype == grad_dtype(x)
        assert grad.shape == np.shape(x)


def loss_shape(spec, input_shape):
    """The shape of the per-term losses ("none") for an input shape."""
    return tuple(input_shape) if spec.kind == "elementwise" else index_shape(tuple(input_shape))


def mem_available() -> int:
    """MemAvailable of /proc/meminfo in bytes (0 where it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return 0
