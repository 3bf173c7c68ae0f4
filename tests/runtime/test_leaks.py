"""No leaks: thousands of calls of every function (valid ones with and without ``out=``,
every reduction, both dtypes, large inputs that take the kernels' heap-allocated paths, and
calls that raise) leave memory and reference counts where they were.

Three instruments, each shown (by the self-tests at the end) to catch a deliberate leak:
* tracemalloc: the number of live blocks of Python's allocator (tracemalloc domain 0). A
  leaked array always leaks its Python object, so a per-call leak of one small array adds
  one block per call. (Bytes, and NumPy's own domain, are not used: NumPy keeps freed small
  data buffers in a bounded per-size cache that fills slowly and in bursts, and CPython
  keeps some strings of formatted error messages: ~15 KiB over the first 1e5 calls.)
* glibc's mallinfo2 (bytes malloc'ed and in use): C and C++ allocations tracemalloc does
  not see, such as the kernels' block partial sums: 8 bytes per call are caught;
* sys.getrefcount of every array passed in (a leaked reference keeps an array alive).

Each instrument reads consecutive windows of >= 1000 calls of one function after a warm-up,
until one window stays under its threshold, and reports a leak when WINDOWS windows in a
row all exceed it: a per-call leak grows by the same amount in every window, a cache that
fills once grows less and less (measured, NumPy backend, multi_margin_loss_grad: 464, 201,
126, 75, 50, 32, ... blocks per window; CPython/NumPy keep a few of the 53-byte objects of
``ndarray.item()`` and of formatted dtype names). A leak-free function passes in one to
three windows; malloc's growth is 0 bytes from the first.
"""

from __future__ import annotations

import ctypes
import gc
import sys
import tracemalloc

import numpy as np
import pytest

from cases import Case, error_base
from fastloss._registry import LOSSES
from helpers import COMPILED_BACKENDS, loss_fn

BLOCKS = 100  # live Python blocks more, per window of >= 1000 calls: 1 leaked object per call is 1000
THRESHOLD = 4096  # malloc'ed bytes more, per window of >= 1000 calls: 8 leaked bytes per call is 8000
WINDOWS = 8
FUNCTIONS = [(spec.name, grad) for spec in LOSSES for grad in (False, True)]


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _malloc_probe():
    try:
        libc = ctypes.CDLL(None)
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):  # pragma: no cover - not glibc >= 2.33
        return None
    mallinfo2.restype = _MallInfo2

    def in_use():
        info = mallinfo2()
        return info.uordblks + info.hblkhd

    return in_use


MALLOC_IN_USE = _malloc_probe()


def _calls(api, name, grad, large):
    """Zero-argument callables: valid calls and calls that raise (caught), and the arrays
    they are given."""
    spec = next(s for s in LOSSES if s.name == name)
    f = loss_fn(api, name, grad)
    calls, arrays = [], []
    for dtype in (np.float32, np.float64):
        x, t, kw = error_base(name, dtype)
        arrays += [x, t] + [v for v in kw.values() if isinstance(v, np.ndarray)]
        for reduction in ("mean", "sum", "none"):
            calls.append(lambda x=x, t=t, kw=kw, r=reduction: f(x, t, reduction=r, **kw))
        calls.append(lambda x=x, t=t: f(x, t))  # the fast path: no weight, default parameters
        if grad:
            out = np.empty_like(x)
            arrays.append(out)
            calls.append(lambda x=x, t=t, kw=kw, out=out: f(x, t, out=out, **kw))
            bad_out = np.empty(x.shape[::-1], x.dtype)
            arrays.append(bad_out)
            calls.append(_raising(ValueError, lambda x=x, t=t, out=bad_out: f(x, t, out=out)))
        bad_t = np.resize(t, (2, 3))
        arrays.append(bad_t)
        calls.append(_raising(ValueError, lambda x=x, t=bad_t: f(x, t)))
        calls.append(_raising(ValueError, lambda x=x, t=t: f(x, t, reduction="avg")))
        calls.append(_raising(ValueError, lambda x=x, t=t: f(x, t, n_threads=0)))
        if spec.kind == "classes":
            bad_index = np.array(t, copy=True)
            bad_index[0] = 99
            arrays.append(bad_index)
            calls.append(_raising(ValueError, lambda x=x, t=bad_index: f(x, t)))
    if large:  # > 64 blocks: the kernels' partial sums live on the heap
        shape = (300_000,) if spec.kind == "elementwise" else (30_000, 10)
        x, t, kw = Case(name, shape, "indices" if spec.kind == "classes" else "values", ()).generate(np.float32)
        arrays += [x, t]
        calls.append(lambda: f(x, t, n_threads=1))
        if grad:  # and with OpenMP threads (few such calls: on a loaded machine they can stall)
            out = np.empty_like(x)
            arrays.append(out)
            calls.append(lambda: f(x, t, out=out, n_threads=2))
    return calls, arrays


def _raising(exc, call):
    def run():
        try:
            call()
        except exc:
            return
        raise AssertionError("expected an error")

    return run


def _run(calls, iterations):
    for _ in range(iterations):
        for call in calls:
            call()


def _python_blocks():
    """Live blocks of Python's allocator traced since tracemalloc started."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, 0)])
    return len(snapshot.traces)


def _least_growth(calls, iterations, read, threshold):
    """The least growth of ``read()`` over consecutive windows of ``iterations`` rounds of
    ``calls``: windows are read until one grows less than ``threshold``, at most WINDOWS."""
    least = None
    for _ in range(WINDOWS):
        gc.collect()
        before = read()
        _run(calls, iterations)
        gc.collect()
        growth = read() - before
        least = growth if least is None else min(least, growth)
        if growth < threshold:
            break
    return least


def measure(calls, arrays, iterations):
    """(least growth in traced Python blocks, least malloc growth in bytes or None, refcount
    changes) over the
    windows of ``iterations`` rounds of ``calls``, after a warm-up round of the same."""
    _run(calls, 20)
    # what exists now (the whole test session) is left out of the collections below, which
    # then only look at what the calls create: fast in a big process
    gc.collect()
    gc.freeze()
    try:
        tracemalloc.start()
        try:
            traced = _least_growth(calls, iterations, _python_blocks, BLOCKS)
        finally:
            tracemalloc.stop()
        refs = [sys.getrefcount(a) for a in arrays]
        malloced = _least_growth(calls, iterations, MALLOC_IN_USE, THRESHOLD) if MALLOC_IN_USE else None
        after = [sys.getrefcount(a) for a in arrays]  # counted exactly as before
    finally:
        gc.unfreeze()
    changed = [(i, r, q) for i, (r, q) in enumerate(zip(refs, after)) if r != q]
    return traced, malloced, changed


@pytest.mark.parametrize("name,grad", FUNCTIONS, ids=[n + ("_grad" if g else "") for n, g in FUNCTIONS])
def test_no_leak(api, name, grad):
    compiled = api.__name__ == "fastloss" and COMPILED_BACKENDS
    calls, arrays = _calls(api, name, grad, large=bool(compiled))
    iterations = -(-1000 // len(calls))  # >= 1000 calls of the function per window
    traced, malloced, changed = measure(calls, arrays, iterations)
    n = iterations * len(calls)
    assert traced < BLOCKS, f"tracemalloc: {traced} Python blocks more in each of {WINDOWS} windows of {n} calls"
    if malloced is not None:
        assert malloced < THRESHOLD, f"malloc: {malloced} bytes more in each of {WINDOWS} windows of {n} calls"
    assert not changed, f"reference counts changed (array index, before, after): {changed}"


# --------------------------------------------------------------------------- the instruments


def test_instruments_catch_a_python_leak_of_one_small_array_per_call():
    kept = []
    x = np.zeros(4)
    traced, _, _ = measure([lambda: kept.append(np.zeros(1))], [x], 1000)
    assert traced >= 10 * BLOCKS
    kept.clear()


def test_instruments_catch_a_leaked_reference():
    kept = []
    x, y = np.zeros(4), np.zeros(4)
    _, _, changed = measure([lambda: kept.append(x)], [x, y], 10)
    assert [i for i, _, _ in changed] == [0]
    kept.clear()


@pytest.mark.skipif(MALLOC_IN_USE is None, reason="needs glibc's mallinfo2")
def test_instruments_catch_a_c_leak_of_8_bytes_per_call():
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    leaked = []
    _, malloced, _ = measure([lambda: leaked.append(libc.malloc(8))], [], 1000)
    assert malloced >= 1000 * 8 > THRESHOLD  # tracemalloc cannot see it; mallinfo2 does
    libc.free.argtypes = [ctypes.c_void_p]
    for p in leaked:
        libc.free(p)


@pytest.mark.skipif(not COMPILED_BACKENDS, reason="the fast path exists only in the compiled backend")
@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "binary_cross_entropy_with_logits", "cross_entropy"])
def test_no_leak_on_the_fast_path_of_grad_hess_and_weights(name):
    """The compiled fast path's own allocations (the Hessian buffer, a float weight's array,
    the result tuples) and its declines (a bad policy, an overlapping out pair) leak nothing."""
    import fastloss

    spec = next(s for s in LOSSES if s.name == name)
    f = getattr(fastloss, name + "_grad_hess")
    x, t, _ = Case(name, (64,) if spec.kind == "elementwise" else (64, 5),
                   "indices" if spec.kind == "classes" else "values", ()).generate(np.float32)
    g, h = np.empty_like(x), np.empty_like(x)
    arrays = [x, t, g, h]
    pol = {"hessian": 1.0} if spec.hessian_policy is not None else {}
    calls = [lambda: f(x, t), lambda: f(x, t, reduction="none", out=(g, h)),
             lambda: f(x, t, reduction="sum", out=(g, h), **pol)]
    if spec.kind == "elementwise" and spec.weight:
        w = np.full_like(x, 0.5)
        arrays.append(w)
        calls += [lambda: f(x, t, weight=0.5, reduction="sum", out=(g, h)), lambda: f(x, t, weight=w, reduction="none")]
    if pol:
        calls.append(_raising(ValueError, lambda: f(x, t, out=(g, h), hessian=-1.0)))
    calls.append(_raising(ValueError, lambda: f(x, t, out=(g, g))))
    traced, malloced, changed = measure(calls, arrays, -(-1000 // len(calls)))
    assert traced < BLOCKS, f"tracemalloc: {traced} Python blocks more per window"
    if malloced is not None:
        assert malloced < THRESHOLD, f"malloc: {malloced} bytes more per window"
    assert not changed, f"reference counts changed: {changed}"
