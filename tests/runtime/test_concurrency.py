"""Concurrency: fastloss inside multi-threaded and multi-process programs.

* Many Python threads calling every function at once (the kernels release the GIL and may
  each open OpenMP regions) give results bitwise equal to the same calls made serially.
* The compiled kernels really release the GIL: another Python thread runs while a kernel
  computes.
* A process forked after the parent ran multi-threaded OpenMP kernels can still call
  fastloss (GNU libgomp would hang in the child's first parallel region: forked children
  run the kernels serially, see fastloss/csrc/runtime.cpp). Each fork scenario runs in a fresh
  interpreter under a timeout, so a hang fails the test instead of hanging the suite.
"""

from __future__ import annotations

import gc
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import fastloss
from cases import Case, one_case_per_param_set
from fastloss._registry import LOSSES
from helpers import COMPILED_BACKENDS, assert_bitwise, loss_fn

# --------------------------------------------------------------------------- threads


def _calls(api):
    """(function, args, kwargs) for every function: small and large (above the size where
    kernels go parallel), 1 and 2 OpenMP threads, with out= (a buffer of the call's own)."""
    calls = []
    for i, case in enumerate(one_case_per_param_set()):
        x, t, kw = case.generate(np.float32 if i % 2 else np.float64, seed=i)
        calls.append((loss_fn(api, case.loss), (x, t), {**kw, "reduction": "sum"}))
        calls.append((loss_fn(api, case.loss, grad=True), (x, t), {**kw, "reduction": "none"}))
    for spec in LOSSES:
        shape = (50_000,) if spec.kind == "elementwise" else (2_000, 25)
        form = "indices" if spec.kind == "classes" else "values"
        x, t, kw = Case(spec.name, shape, form, ()).generate(np.float32)
        for n_threads in (1, 2):
            calls.append((loss_fn(api, spec.name, grad=True), (x, t), {**kw, "n_threads": n_threads}))
            out = np.empty_like(x)
            calls.append((loss_fn(api, spec.name, grad=True), (x, t), {**kw, "n_threads": n_threads, "out": out}))
    return calls


def _copy_result(result):
    if isinstance(result, tuple):
        return tuple(np.array(r, copy=True) if isinstance(r, np.ndarray) else r for r in result)
    return np.array(result, copy=True) if isinstance(result, np.ndarray) else result


def _assert_same(result, expected, what):
    if isinstance(expected, tuple):
        for r, e in zip(result, expected):
            assert_bitwise(r, e, what)
    else:
        assert_bitwise(result, expected, what)


def test_many_threads_give_the_serial_bits(api):
    calls = _calls(api)
    serial = [_copy_result(f(*a, **kw)) for f, a, kw in calls]
    jobs = list(range(len(calls))) * 4
    random.Random(0).shuffle(jobs)

    def run(i):
        f, a, kw = calls[i]
        # each job gets its own out buffer: two threads must not share one
        kw = {**kw, "out": np.empty_like(kw["out"])} if "out" in kw else kw
        return i, _copy_result(f(*a, **kw))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, jobs))
    for i, result in results:
        _assert_same(result, serial[i], f"call {i} from a thread pool")


# --------------------------------------------------------------------------- the GIL


def _runs_during(call, repeats=3):
    """How many iterations another Python thread completes in the middle half of each of
    ``repeats`` runs of ``call`` (0 when ``call`` holds the GIL throughout)."""
    stamps, windows = [], []
    done = threading.Event()

    def worker():
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            end = time.perf_counter()
            windows.append((start + (end - start) / 4, end - (end - start) / 4))
        done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    while not done.is_set():
        stamps.append(time.perf_counter())
    thread.join()
    stamps = np.array(stamps)
    return sum(int(np.count_nonzero((stamps > a) & (stamps < b))) for a, b in windows)


@pytest.mark.skipif(not COMPILED_BACKENDS, reason="the GIL is released by the compiled kernels")
@pytest.mark.parametrize("name", [spec.name for spec in LOSSES])
def test_kernels_release_the_gil(name):
    spec = next(s for s in LOSSES if s.name == name)
    shape = (4_000_000,) if spec.kind == "elementwise" else (200_000, 20)
    form = "indices" if spec.kind == "classes" else "values"
    x, t, kw = Case(name, shape, form, ()).generate(np.float32)
    out = np.empty_like(x)
    f = loss_fn(fastloss, name, grad=True)
    # up to 3 attempts: on a loaded machine the other thread may get no CPU for a while,
    # but a kernel holding the GIL never lets it run at all
    for _ in range(3):
        if _runs_during(lambda: f(x, t, out=out, n_threads=1, **kw)) > 10:
            return
    pytest.fail(f"{name}: no other Python thread ran while the kernel computed")


def test_gil_probe_tells_held_from_released():
    """The probe of the test above: 0 for a C call that holds the GIL throughout (sorting
    floats never returns to the interpreter), many for one that releases it (sleep). The
    collector is off for the first: a collection inside sorted() may run finalizers, that
    is Python code, where the interpreter hands the GIL over (seen in the full suite)."""
    data = np.random.default_rng(0).random(1_000_000).tolist()
    gc.disable()
    try:
        assert _runs_during(lambda: sorted(data)) <= 10
    finally:
        gc.enable()
    assert _runs_during(lambda: time.sleep(0.05)) > 10


# --------------------------------------------------------------------------- fork

_PRELUDE = """
import os, sys, warnings
warnings.simplefilter("ignore", RuntimeWarning)
import numpy as np
import fastloss
rng = np.random.default_rng(0)
N = 2_000_000
x = rng.standard_normal(N).astype(np.float32)
t = rng.standard_normal(N).astype(np.float32)
logits = rng.standard_normal((N // 20, 20)).astype(np.float32)
labels = rng.integers(0, 20, N // 20)
probs = rng.uniform(0.01, 0.99, N).astype(np.float32)

def work(n_threads):
    return [fastloss.mse_loss_grad(x, t, n_threads=n_threads),
            fastloss.cross_entropy_grad(logits, labels, n_threads=n_threads),
            fastloss.binary_cross_entropy_grad(probs, probs[::-1].copy(), n_threads=n_threads)]

def digest(results):
    return [(float(loss), grad.tobytes()) for loss, grad in results]

parent = digest(work(2))  # the parent runs OpenMP parallel regions first
"""

_OS_FORK = """
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    from fastloss import kernels as _kernels
    ok = _kernels.in_forked_child() if hasattr(_kernels, "in_forked_child") else True
    ok = ok and digest(work(2)) == parent and digest(work(None)) == parent
    os.write(w, b"ok" if ok else b"bad")
    os._exit(0)
os.close(w)
answer = os.read(r, 16)
_, status = os.waitpid(pid, 0)
assert answer == b"ok" and status == 0, (answer, status)
from fastloss import kernels as _kernels
assert not _kernels.in_forked_child()
assert digest(work(2)) == parent  # and the parent still runs in parallel
print("FORK-OK")
"""

_POOL = """
import multiprocessing as mp

def child(n_threads):
    return digest(work(n_threads)) == parent

with mp.get_context("fork").Pool(2) as pool:
    assert pool.map(child, [2, None, 1, 2]) == [True] * 4
assert digest(work(2)) == parent
print("FORK-OK")
"""

FORK_TIMEOUT = 120  # seconds; the whole scenario takes about 2 s


def _package_root():
    return str(Path(fastloss.__file__).resolve().parent.parent)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
@pytest.mark.skipif(not COMPILED_BACKENDS, reason="OpenMP after fork concerns the compiled kernels")
@pytest.mark.parametrize("scenario", ["os.fork", "multiprocessing-fork-pool"])
def test_forked_child_can_call_fastloss(scenario):
    code = _PRELUDE + (_OS_FORK if scenario == "os.fork" else _POOL)
    env = {**os.environ, "PYTHONPATH": _package_root() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("OMP_NUM_THREADS", None)
    # its own session: on a hang, the scenario and its forked children are killed together
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=_package_root(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=FORK_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{scenario}: the forked child hung for {FORK_TIMEOUT} s (OpenMP after fork)")
    assert proc.returncode == 0, stderr[-3000:]
    assert "FORK-OK" in stdout
