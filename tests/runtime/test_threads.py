"""Threads: get/set_num_threads, the OpenMP default, and bitwise determinism across
thread counts (and runs) for every loss and dtype at sizes where threads are used."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastloss
from cases import DTYPES, large_cases
from fastloss._registry import REDUCTIONS
from helpers import assert_bitwise, clamped_threads, loss_fn, usable_cpus

THREAD_COUNTS = (1, 2, 3, 8, 5000, 2**40)  # more threads than blocks, and huge (clamped)
LARGE = large_cases()


def test_large_cases_are_large():
    for case in LARGE:
        assert int(np.prod(case.shape)) >= 200_000, case.id
    rows = [c for c in LARGE if c.spec.kind == "classes"]
    assert rows and all(c.shape[0] >= 100 for c in rows)
    assert any(c.shape[0] >= 5000 for c in rows)


def test_set_and_get_round_trip(restore_threads):
    default = fastloss.get_num_threads()
    assert isinstance(default, int) and default >= 1
    for n in (1, 3, 8, np.int64(2), 5000):  # reported clamped to the usable CPUs (machine-dependent)
        fastloss.set_num_threads(n)
        assert fastloss.get_num_threads() == clamped_threads(n), (n, usable_cpus())
        assert type(fastloss.get_num_threads()) is int
    fastloss.set_num_threads(None)
    assert fastloss.get_num_threads() == default


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", LARGE, ids=str)
def test_bitwise_identical_for_every_thread_count(api, case, dtype, restore_threads):
    x, t, kw = case.generate(dtype)
    f = loss_fn(api, case.loss, grad=True)
    for reduction in REDUCTIONS:
        base_loss, base_grad = f(x, t, reduction=reduction, n_threads=1, **kw)
        for n in THREAD_COUNTS[1:]:
            loss, grad = f(x, t, reduction=reduction, n_threads=n, **kw)
            assert_bitwise(loss, base_loss, f"loss, {n} threads vs 1 ({reduction})")
            assert_bitwise(grad, base_grad, f"grad, {n} threads vs 1 ({reduction})")
        # the default thread count (set_num_threads) and a second run: the same bits
        fastloss.set_num_threads(THREAD_COUNTS[-1])
        loss, grad = f(x, t, reduction=reduction, **kw)
        assert_bitwise(loss, base_loss, f"loss with set_num_threads ({reduction})")
        assert_bitwise(grad, base_grad, f"grad with set_num_threads ({reduction})")
        fastloss.set_num_threads(None)
        plain = loss_fn(api, case.loss)(x, t, reduction=reduction, n_threads=3, **kw)
        assert_bitwise(plain, base_loss, f"loss of NAME with 3 threads ({reduction})")


def _run(code, **env):
    full_env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "FASTLOSS_BACKEND")}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("omp", ["1", "3", "5"])
def test_default_follows_omp_num_threads(omp):
    proc = _run("""
        import warnings
        warnings.simplefilter("ignore", RuntimeWarning)
        import fastloss
        print(fastloss.get_num_threads())
        fastloss.set_num_threads(2)
        print(fastloss.get_num_threads())
        fastloss.set_num_threads(None)
        print(fastloss.get_num_threads())
    """, OMP_NUM_THREADS=omp)
    assert proc.returncode == 0, proc.stderr
    default = str(clamped_threads(int(omp)))  # at most the usable CPUs (machine-dependent)
    assert proc.stdout.split() == [default, str(clamped_threads(2)), default], usable_cpus()


def test_default_follows_threadpoolctl_limits():
    """threadpoolctl limits apply to the default when fastloss runs OpenMP code (a limit of
    1, which differs from the default on any machine with 2 or more usable CPUs)."""
    proc = _run("""
        import warnings
        warnings.simplefilter("ignore", RuntimeWarning)
        import fastloss
        from threadpoolctl import threadpool_limits
        try:
            from fastloss import kernels as _kernels
            openmp = _kernels.openmp_enabled()
        except ImportError:
            openmp = False
        print(openmp, fastloss.get_num_threads())
        with threadpool_limits(limits=1, user_api="openmp"):
            print(openmp, fastloss.get_num_threads())
        print(openmp, fastloss.get_num_threads())
    """, OMP_NUM_THREADS="4")
    assert proc.returncode == 0, proc.stderr
    lines = [line.split() for line in proc.stdout.splitlines()]
    openmp = lines[0][0] == "True"
    counts = [int(line[1]) for line in lines]
    default = clamped_threads(4)  # OMP_NUM_THREADS=4, at most the usable CPUs (machine-dependent)
    assert counts[0] == default and counts[2] == default, (counts, usable_cpus())
    assert counts[1] == (1 if openmp else default), (counts, usable_cpus())
