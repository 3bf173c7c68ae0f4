"""fastloss against its baselines, one pytest-benchmark group per loss, size and dtype.

Driven by the registry through ``fastloss.bench.cases`` (inputs and baselines), the same
tables ``python -m fastloss bench`` uses. In each group ("mse_loss n=1e5 float32"):

    fastloss        fused NAME_grad(x, t, out=buf), gradient buffer allocated once
    fastloss_loss   NAME(x, t): the loss alone
    numpy           the plain NumPy loss + gradient a user would write
    numpy_backend   fastloss.numpy_backend.NAME_grad(x, t, out=buf)
    torch           F.NAME forward + backward (x.grad = None each call)  } skipped when
    torch_adapter   fastloss.torch.NAME forward + backward (the same)     } not installed
    sklearn         sklearn._loss loss_gradient into preallocated buffers } not installed
    jax             jit(value_and_grad(f)) + block_until_ready          }

Everything runs on all usable cores. Not part of the default test run:

    pytest bench/ --benchmark-only                       # everything (long)
    pytest bench/ --benchmark-only -k "mse and 1e5"      # a subset
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from fastloss.bench import cases
from fastloss.bench import runners
from fastloss.bench.core import _fmt_count, kernel_bytes, usable_cores

SIZES = (1_000, 100_000, 10_000_000)
DTYPES = ("float32", "float64")
IMPLS = ("fastloss", "fastloss_loss", *runners.BASELINES)
VERIFY_MAX = 100_000  # baselines are checked against fastloss up to this many elements
THREADS = usable_cores()


@functools.cache
def competitors():
    loaded, skipped = runners.load_competitors(runners.BASELINES)
    runners.set_torch_threads(THREADS)
    table = {c.key: c for c in loaded}
    table["fastloss"] = runners.FASTLOSS
    table["fastloss_loss"] = runners.FASTLOSS_LOSS
    return table, skipped


_data: dict = {}


def data(variant, n, dtype):
    """The inputs of a case; only the last case is kept (the params run case by case)."""
    key = (variant.label, n, dtype)
    if key not in _data:
        _data.clear()
        index = [v.label for v in cases.variants()].index(variant.label)
        rng = np.random.default_rng([0, index, n])
        _data[key] = variant.make(rng, n, np.dtype(dtype).type)
    return _data[key]


def _params():
    for variant in cases.variants():
        for n in SIZES:
            for dtype in DTYPES:
                for impl in IMPLS:
                    name = variant.label.replace(" C=", "-C")
                    yield pytest.param(variant, n, dtype, impl, id=f"{name}-{_fmt_count(n)}-{dtype}-{impl}")


@pytest.mark.parametrize("variant, n, dtype, impl", list(_params()))
def test_loss(benchmark, variant, n, dtype, impl):
    table, skipped = competitors()
    if impl in skipped:
        pytest.skip(f"{impl}: {skipped[impl]}")
    x, t = data(variant, n, dtype)
    runner = table[impl].runner(variant, x, t, THREADS)
    if runner is None:
        pytest.skip(f"{impl} has no {variant.loss}")
    if impl not in ("fastloss", "fastloss_loss") and x.size <= VERIFY_MAX:
        reference = table["fastloss"].runner(variant, x, t, THREADS).result()
        assert runners.agrees(reference, runner.result(), x.dtype), f"{impl} differs from fastloss"
    benchmark.group = f"{variant.label} n={_fmt_count(x.size)} {dtype}"
    benchmark.extra_info.update(elements=int(x.size), bytes_fused=kernel_bytes(variant, x, t),
                                threads=THREADS, implementation=impl)
    benchmark(runner.call)


# --------------------------------------------------------------------------- the scripts

SCRIPTS = __import__("pathlib").Path(__file__).parent


def _run_script(name, *args, tmp_path):
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(SCRIPTS / name), *args, "--json", str(out)],
                          capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_torch_adapter_script_quick(tmp_path):
    """bench/torch_adapter.py --quick: every loss torch.nn.functional has, eager, agreeing
    with PyTorch (no '!'), and the training step."""
    pytest.importorskip("torch")
    stdout, result = _run_script("torch_adapter.py", "--quick", "--sizes", "1e3", tmp_path=tmp_path)
    import fastloss.torch as flt
    from fastloss._registry import LOSSES

    names = {spec.name for spec in LOSSES if flt.signature_of(spec)[1] == "torch.nn.functional"}
    assert {row["loss"] for row in result["loss_rows"]} == names
    assert all(all(row["agrees"].values()) for row in result["loss_rows"]), stdout
    assert " !" not in stdout
    assert [row["loss"] for row in result["training_rows"]] == ["cross_entropy", "mse_loss", "huber_loss"]
    assert all(row["agrees"] for row in result["training_rows"])
    assert "load at start: loadavg" in stdout and "load at end: loadavg" in stdout


def test_torch_adapter_script_compile(tmp_path):
    """bench/torch_adapter.py --compile: one loss compiled (the slow part: one compile each)."""
    pytest.importorskip("torch")
    stdout, result = _run_script("torch_adapter.py", "--quick", "--compile", "--sizes", "1e3", "--losses", "mse_loss",
                                 "--no-training", tmp_path=tmp_path)
    rows = result["loss_rows"]
    assert [(r["elements"], r["dtype"]) for r in rows] == [(1000, "float32"), (1000, "bfloat16")]
    assert all(set(r["median_s"]) == {"F", "c(F)", "flt", "c(flt)"} and all(r["agrees"].values()) for r in rows)
    assert all(r["cflt_graphs"] >= 1 and r["cF_graphs"] >= 1 for r in result["compile_rows"])


def test_torch_overhead_script_quick():
    """bench/torch_overhead.py --quick (in a subprocess: it sets the thread counts): the five
    calls timed, F the unit."""
    pytest.importorskip("torch")
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(SCRIPTS / "torch_overhead.py"), "--quick"],
                          capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| ") and "us" not in line]
    assert [r[0].strip() for r in rows] == ["F", "flt", "Function", "kernel", "floor"]
    assert rows[0][2].strip() == "1.00" and all(float(r[1]) > 0 for r in rows)


def test_small_calls_script_quick(tmp_path):
    """bench/small_calls.py --quick: every registry loss, each form its registry row has
    (explicit parameters, a weight, its operand, all together) timed beside the defaults and
    NumPy's one-call floor, and no other."""
    pytest.importorskip("fastloss.kernels")
    from fastloss._registry import BY_NAME

    stdout, result = _run_script("small_calls.py", "--quick", tmp_path=tmp_path)
    rows = {r["loss"].split(" C=")[0]: r for r in result["rows"]}
    assert set(rows) == set(BY_NAME)
    for name, r in rows.items():
        spec = BY_NAME[name]
        has = {"defaults": True, "params": bool(spec.params), "weight": bool(spec.weight),
               "operand": bool(spec.operand)}
        has["all"] = sum(has.values()) > 2
        for form, present in has.items():
            assert (r[form] is not None) == present, (name, form)
            assert r[form] is None or r[form] > 0
        assert r["numpy_floor"] > 0
    assert "np.subtract ns" in stdout
