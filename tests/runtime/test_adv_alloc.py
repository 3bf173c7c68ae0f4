"""Adversarial runtime suite: allocation failure (SPEC11 item 8).

* ``fastloss.kernels._fail_allocations(k)`` (test hook) makes the next k scratch
  allocations of the compiled kernels fail. Calls of more than 262144 elements (more than
  64 blocks) allocate; a failed allocation is a MemoryError from the Python API with ``out``
  (and, in place, the input) untouched, never a NaN loss with an unwritten gradient; the
  next call works and gives the usual bits. At the C level the kernel returns NaN and writes
  nothing. A weight tiled to longer runs falls back to its short period when its copy cannot
  be allocated: same bits, no error.
* Under an address-space cap (RLIMIT_AS, in a subprocess) the arrays fastloss allocates
  itself (gradient, per-element losses, compute-dtype copies) fail with MemoryError, not a
  crash, with ``out`` untouched; both backends.
"""

from __future__ import annotations


import numpy as np
import pytest

import fastloss
from adv_runtime_support import assert_ok, run_python
from cases import Case
from fastloss._registry import BY_NAME, LOSSES
from helpers import assert_bitwise, loss_fn

compiled_only = pytest.mark.skipif(fastloss.get_backend() != "cython",
                                   reason="the allocation hook belongs to the compiled kernels")

DTYPES = (np.float32, np.float64)


def _hook():
    from fastloss import kernels

    hook = getattr(kernels, "_fail_allocations", None)
    assert hook is not None, "fastloss.kernels._fail_allocations(k), the test hook of SPEC11 item 8, is missing"
    return hook


@pytest.fixture
def disarm():
    """Disarm the hook after the test, whatever happened."""
    yield
    from fastloss import kernels

    if hasattr(kernels, "_fail_allocations"):
        kernels._fail_allocations(0)


def _big_calls(name, dtype):
    """(what, input, target, kwargs, weighted) of more than 262144 elements (more than 64
    blocks of the summation order) for every layout and target form of the loss."""
    spec = BY_NAME[name]
    out = []
    if spec.kind == "elementwise":
        shape = (300, 1001)
        out.append(("plain",) + Case(name, shape, "values", ()).generate(dtype) + (False,))
        if spec.weight:
            out.append(("full weight",) + Case(name, shape, "values", (("weight", "full"),)).generate(dtype) + (False,))
            out.append(("last-axis weight",) + Case(name, shape, "values", (("weight", "last"),)).generate(dtype)
                       + (True,))
        if spec.pos_weight:
            out.append(("pos_weight",) + Case(name, shape, "values", (("pos_weight", "scalar"),)).generate(dtype)
                       + (True,))
        return out
    rng = np.random.default_rng(3)
    shapes = [(30_000, 10), (300, 1000)] + ([(3_000, 10, 10)] if spec.max_input_dims is None else [])
    if dtype == np.float64:
        shapes = shapes[:1]
    for shape in shapes:
        x = rng.normal(0, 1.5, shape).astype(dtype)
        t = rng.integers(0, shape[1], (shape[0],) + shape[2:])
        w = rng.uniform(0.5, 2.0, shape[1]).astype(dtype)
        out.append((f"{shape}", x, t, {}, False))
        out.append((f"{shape} class weight", x, t, {"weight": w}, False))
        if spec.probability_target:
            p = rng.random(shape)
            out.append((f"{shape} probabilities", x, (p / p.sum(axis=1, keepdims=True)).astype(dtype), {}, False))
            out.append((f"{shape} label_smoothing", x, t, {"label_smoothing": 0.1}, False))
    return out


def _names():
    return [s.name for s in LOSSES]


# (reduction, where the gradient goes): each big call is tried in each of these
MODES = (("mean", "out"), ("sum", "in place"), ("none", "new"), ("mean", "loss only"))


@compiled_only
@pytest.mark.parametrize("name", _names())
def test_failed_scratch_allocation_is_memory_error_with_out_untouched(name, disarm):
    hook = _hook()
    f, fg = loss_fn(fastloss, name), loss_fn(fastloss, name, grad=True)
    calls = [c + (np.float32,) for c in _big_calls(name, np.float32)]
    calls += [c + (np.float64,) for c in _big_calls(name, np.float64)[:2]]
    for what, x, t, kw, tiled, dtype in calls:
        expected = {}
        for reduction, mode in MODES:
            label = f"{name} {np.dtype(dtype).name} {what} {reduction} ({mode})"
            if reduction not in expected:
                expected[reduction] = fg(x, t, reduction=reduction, **kw)
            expected_loss, expected_grad = expected[reduction]
            sentinel = np.full_like(x, 7.0)
            buf = x.copy() if mode == "in place" else sentinel
            before = buf.tobytes()
            # a weight tiled to longer runs may take (and survive) the first failure: fail them all
            hook(1000 if tiled else 1)
            with pytest.raises(MemoryError):
                if mode == "loss only":
                    f(x, t, reduction=reduction, **kw)
                elif mode == "new":
                    fg(x, t, reduction=reduction, **kw)
                else:
                    fg(buf if mode == "in place" else x, t, reduction=reduction, out=buf, **kw)
            assert buf.tobytes() == before, f"{label}: out written before the MemoryError"
            if tiled:
                hook(0)
            # the next call works (the one failure was consumed) and gives the usual bits
            out = np.full_like(x, np.nan)
            loss, grad = fg(x, t, reduction=reduction, out=out, **kw)
            assert_bitwise(loss, expected_loss, f"{label}: loss of the next call")
            assert_bitwise(grad, expected_grad, f"{label}: gradient of the next call")


@compiled_only
@pytest.mark.parametrize("name", [s.name for s in LOSSES if s.weight == "elementwise" or s.pos_weight])
def test_failed_weight_tiling_falls_back_to_the_same_bits(name, disarm):
    """Below 262145 elements the only allocation is the copy of a short-period weight;
    when it fails the kernel keeps the short period: no error, bitwise the same results."""
    hook = _hook()
    spec = BY_NAME[name]
    p = (("weight", "scalar"),) if spec.weight else ()
    if spec.pos_weight:
        p += (("pos_weight", "last"),)
    for dtype in DTYPES:
        x, t, kw = Case(name, (200, 1000), "values", p).generate(dtype)
        fg = loss_fn(fastloss, name, grad=True)
        for reduction in ("mean", "none"):
            expected = fg(x, t, reduction=reduction, **kw)
            hook(1000)
            got = fg(x, t, reduction=reduction, **kw)
            hook(0)
            assert_bitwise(got[0], expected[0], f"{name} {reduction} loss with the tiling copy failed")
            assert_bitwise(got[1], expected[1], f"{name} {reduction} gradient with the tiling copy failed")


@compiled_only
@pytest.mark.parametrize("name", ["mse_loss", "binary_cross_entropy_with_logits", "cross_entropy", "nll_loss",
                                  "multi_margin_loss"])
def test_failed_allocation_at_the_c_level_returns_nan_and_writes_nothing(name, disarm):
    from test_c_level import MEAN, SUM, call_c, loss_shape

    hook = _hook()
    spec = BY_NAME[name]
    rng = np.random.default_rng(0)
    if spec.kind == "elementwise":
        x, t, kw = Case(name, (300_001,), "values", ()).generate(np.float64)
    else:
        x = rng.normal(size=(30_000, 10))
        t = rng.integers(0, 10, 30_000)
        kw = {}
    for reduction in (MEAN, SUM):
        expected_grad = np.empty_like(x)
        expected = call_c(name, x, t, kw, reduction, grad=expected_grad)
        assert not np.isnan(expected)
        grad = np.full_like(x, 7.0)
        losses = np.full(loss_shape(spec, x), 7.0)
        hook(1)
        got = call_c(name, x, t, kw, reduction, grad=grad, losses=losses)
        assert np.isnan(got), f"{name}: a failed allocation returned {got}"
        assert (grad == 7).all() and (losses == 7).all(), f"{name}: written despite the failed allocation"
        got = call_c(name, x, t, kw, reduction, grad=grad)
        assert got == expected and grad.tobytes() == expected_grad.tobytes(), "the next call differs"


# --------------------------------------------------------------------------- RLIMIT_AS

_RLIMIT_SCRIPT = """
import resource, sys, warnings
warnings.simplefilter("ignore")
import numpy as np
import fastloss as fl

def vm_size():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))

n = 4_000_000  # 32 MB of float64
rng = np.random.default_rng(0)
x = rng.standard_normal(n)
t = rng.standard_normal(n)
xi = np.arange(n, dtype=np.int32)              # computes in float64: a 32 MB copy
logits = x.reshape(-1, 8)
labels = rng.integers(0, 8, n // 8)
zeros = np.zeros(n)
labels0 = np.zeros(n, np.int64)                 # one class: a 32 MB "none" result
strided = np.full(2 * n, 7.0)                   # a non-contiguous out: written through a temporary
expected = fl.mse_loss(x, t, n_threads=1)
expected_ce = fl.cross_entropy(logits, labels, n_threads=1)
calls = [
    ("mse_loss_grad", lambda: fl.mse_loss_grad(x, t, n_threads=1)),
    ("mse_loss none", lambda: fl.mse_loss(x, t, reduction="none", n_threads=1)),
    ("mse_loss_grad int input", lambda: fl.mse_loss_grad(xi, t, n_threads=1)),
    ("mse_loss_grad strided out", lambda: fl.mse_loss_grad(x, t, out=strided[::2], n_threads=1)),
    ("cross_entropy_grad", lambda: fl.cross_entropy_grad(logits, labels, n_threads=1)),
    ("cross_entropy_grad strided out", lambda: fl.cross_entropy_grad(logits, labels, out=strided[::2].reshape(-1, 8),
                                                                     n_threads=1)),
    ("nll_loss none", lambda: fl.nll_loss(x.reshape(-1, 1), labels0, reduction="none", n_threads=1)),
    ("bce_with_logits_grad", lambda: fl.binary_cross_entropy_with_logits_grad(x, zeros, n_threads=1)),
]
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (vm_size() + (16 << 20), hard))
raised = []
try:
    for what, call in calls:
        print("CALL", what, flush=True)
        try:
            call()
        except MemoryError:
            raised.append(what)
finally:
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
assert (strided == 7.0).all(), "out written before the MemoryError"
assert fl.mse_loss(x, t, n_threads=1) == expected and fl.cross_entropy(logits, labels, n_threads=1) == expected_ce
missing = [what for what, _ in calls if what not in raised]
print("RAISED", raised)
assert not missing, f"no MemoryError for {missing} (each needs more than the 16 MB left)"
print("RLIMIT-OK")
"""


def test_allocation_failure_under_an_address_space_cap_is_memory_error(tmp_path):
    """np.empty (and the compute-dtype copies) failing under RLIMIT_AS: MemoryError from
    every function that needs a buffer the size of the input, ``out`` untouched, and the
    process then goes on (both backends; one thread, so that no thread creation is involved)."""
    assert_ok(run_python(_RLIMIT_SCRIPT, timeout=60, cwd=tmp_path), "RLIMIT-OK")
