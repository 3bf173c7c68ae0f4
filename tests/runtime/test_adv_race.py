"""Adversarial runtime suite: inputs mutated by another thread during a call (SPEC11 item 3).

Class indices are validated, then read by the kernel without the GIL: another Python
thread (NumPy slice assignments, which run while the kernel computes) flips blocks of them
to huge, negative and just-out-of-range values and back. In a subprocess (a crash or an
out-of-bounds write must fail the test, not kill the suite), for cross_entropy, nll_loss and
multi_margin_loss, every layout ((N, C) with C <= 16: the tiled paths; (N, 40); (N, C, d)),
with and without class weights and label smoothing, gradient into a new array, into ``out``,
in place, and the loss alone:

* the process exits 0 (no crash);
* a call either raises the validation's ValueError naming the target, or returns; every
  sample's loss and gradient row is then either bitwise that of the unmutated call or NaN
  (the sample whose index the kernel found out of range), the NaN loss and the NaN
  gradient row together; "mean" / "sum" are the unmutated value or NaN;
* nothing is written outside ``out`` (guard zones around it) and the input is untouched.

Elementwise inputs, targets and weights mutated during calls (NaN, inf, values outside
[0, 1] after the BCE scan, labels other than +-1 after the hinge scan) must not crash.
The C level is raced the same way (ctypes releases the GIL during the call).
"""

from __future__ import annotations

import pytest

import fastloss
from adv_runtime_support import C_LEVEL_PATH, assert_ok, run_python
from fastloss._registry import BY_NAME, LOSSES
from helpers import BACKENDS

BACKEND_NAMES = [name for name, _ in BACKENDS]




_CLASS_RACE = """
import os, sys, threading, time, warnings
warnings.simplefilter("ignore")
import numpy as np
import fastloss, fastloss.numpy_backend
api = fastloss if {backend!r} == "cython" else fastloss.numpy_backend
name = {name!r}
sys.setswitchinterval(2e-5)  # hand the GIL over often: the mutator also runs between NumPy steps
BUDGET = {budget}  # seconds per scenario
I64 = np.iinfo(np.int64)
rng = np.random.default_rng(0)
f, fg = getattr(api, name), getattr(api, name + "_grad")

def scenarios():
    layouts = [(20_000, 10), (5_000, 40)]
    if {spatial}:  # the loss takes (N, C, d) inputs
        layouts.append((2_500, 5, 8))
    modes = ["out", "new", "in place", "loss only"]
    i = 0
    for shape in layouts:
        for weighted in (False, True):
            i += 1
            # two of the four modes per layout and weighting, each mode twice per layout
            for mode in (modes[i % 4], modes[(i + 2) % 4]):
                yield shape, weighted, {{}}, mode, ("none", "mean", "sum")[(i + len(mode)) % 3]
            if {smoothing}:  # the loss takes label_smoothing
                yield shape, weighted, {{"label_smoothing": 0.1}}, modes[(i + 1) % 4], ("none", "sum")[i % 2]

def guarded(shape, dtype):
    # out inside a bigger buffer: guard zones of 4096 elements on both sides
    n = int(np.prod(shape))
    buf = np.full(n + 8192, 12345.0, dtype)
    return buf, buf[4096:4096 + n].reshape(shape)

stats = []
for shape, weighted, extra, mode, reduction in scenarios():
    dtype = np.float32 if len(stats) % 2 == 0 else np.float64
    C = shape[1]
    x = rng.normal(0, 2, shape).astype(dtype)
    good = rng.integers(0, C, (shape[0],) + shape[2:])
    kw = dict(extra)
    if weighted:
        kw["weight"] = rng.uniform(0.5, 2, C).astype(dtype)
    label = f"{{name}} {{shape}} {{np.dtype(dtype).name}} weight={{weighted}} {{extra}} {{mode}} {{reduction}}"
    print("SCENARIO", label, flush=True)
    ref_none = f(x, good.copy(), reduction="none", **kw)
    ref_total, ref_grad = fg(x, good.copy(), reduction=reduction, **kw)
    x_bytes = x.tobytes()
    t = good.copy()
    flat_t, flat_good = t.reshape(-1), good.reshape(-1)
    S = flat_t.size
    bad_values = [2**62, -(2**62), -1, C, C + 1000, 2**31, int(I64.max), int(I64.min)]
    starts = [0, 16, S // 3, S // 2 + 5, S - 16]
    stop = threading.Event()

    def mutate():
        i = 0
        while not stop.is_set():
            a = starts[i % len(starts)]
            flat_t[a:a + 16] = bad_values[i % len(bad_values)]
            flat_t[a:a + 16] = flat_good[a:a + 16]
            i += 1

    th = threading.Thread(target=mutate)
    th.start()
    calls = refused = nan_rows = 0
    deadline = time.perf_counter() + BUDGET
    try:
        while time.perf_counter() < deadline:
            buf = out = None
            if mode == "out":
                buf, out = guarded(shape, dtype)
            elif mode == "in place":
                out = x.copy()
            try:
                if mode == "loss only":
                    loss, grad = f(x, t, reduction=reduction, **kw), None
                elif mode == "in place":
                    loss, grad = fg(out, t, reduction=reduction, out=out, **kw)
                else:
                    loss, grad = fg(x, t, reduction=reduction, out=out, **kw)
            except ValueError as exc:
                assert "target" in str(exc), f"{{label}}: {{exc}}"
                refused += 1
                continue
            calls += 1
            assert x.tobytes() == x_bytes, f"{{label}}: the input was written"
            if buf is not None:
                n = out.size
                assert (buf[:4096] == 12345.0).all() and (buf[4096 + n:] == 12345.0).all(), (
                    f"{{label}}: written outside out")
                assert grad is out
            if reduction == "none":
                loss = np.asarray(loss).reshape(-1)
                ok = (loss == ref_none.reshape(-1)) | np.isnan(loss)
                assert ok.all(), f"{{label}}: sample loss neither the unmutated one nor NaN: {{loss[~ok][:4]}}"
                nan_samples = np.isnan(loss)
            else:
                assert loss == ref_total or np.isnan(loss), f"{{label}}: {{reduction}} = {{loss}}, expected {{ref_total}} or NaN"
                nan_samples = None
            if grad is not None:
                g = np.moveaxis(grad, 1, -1).reshape(-1, C)
                r = np.moveaxis(ref_grad, 1, -1).reshape(-1, C)
                same = (g == r).all(axis=1)
                nan_row = np.isnan(g).all(axis=1)
                bad = ~(same | nan_row)
                if reduction == "mean" and np.isnan(loss):
                    # a changed index seen by the divisor's pass: the scale is NaN, and a row is
                    # NaN where its gradient depends on it (nll_loss: only at the target), 0 elsewhere
                    nan_scaled = ((np.isnan(g) == (r != 0)) & ((g == 0) | np.isnan(g))).all(axis=1)
                    bad &= ~nan_scaled
                assert not bad.any(), (f"{{label}}: gradient rows neither the unmutated ones nor all NaN at "
                                       f"samples {{np.flatnonzero(bad)[:5]}}: {{g[bad][:2]}}")
                if nan_samples is not None:
                    assert (nan_samples == nan_row).all(), f"{{label}}: NaN losses and NaN gradient rows disagree"
                nan_rows += int(nan_row.sum())
    finally:
        stop.set()
        th.join()
    assert calls > 0 or refused > 0
    stats.append((label, calls, refused, nan_rows))
    print("DONE", label, "calls", calls, "refused", refused, "nan rows", nan_rows, flush=True)
print("RACE-OK", len(stats), "scenarios;", sum(s[1] for s in stats), "calls;", sum(s[3] for s in stats), "NaN rows")
"""


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("name", [spec.name for spec in LOSSES if spec.kind == "classes"])
def test_class_indices_flipped_during_calls(name, backend):
    budget = 0.05 if backend == "cython" else 0.06
    spec = BY_NAME[name]
    script = _CLASS_RACE.format(backend=backend, name=name, budget=budget, spatial=spec.max_input_dims is None,
                                smoothing=any(p.name == "label_smoothing" for p in spec.params))
    result = run_python(script, timeout=90)
    assert_ok(result, "RACE-OK")


_ELEMENTWISE_RACE = """
import threading, time, warnings
warnings.simplefilter("ignore")
import numpy as np
import fastloss, fastloss.numpy_backend
api = fastloss if {backend!r} == "cython" else fastloss.numpy_backend
rng = np.random.default_rng(1)
N = 300_000
specials = np.array([np.nan, np.inf, -np.inf, 2.0, -1.0, 0.5, 1e38, 0.0], np.float32)
from fastloss._registry import LOSSES
for i, spec in enumerate([s for s in LOSSES if s.kind == "elementwise"]):  # every elementwise loss
    name = spec.name
    for dtype in ((np.float32, np.float64)[i % 2],):
        x = rng.uniform(0.05, 0.95, N).astype(dtype)
        t = (np.where(rng.random(N) < 0.5, -1.0, 1.0) if spec.target_domain == "sign"
             else rng.uniform(0, 1, N)).astype(dtype)
        kw = {{}}
        if spec.weight:
            kw["weight"] = rng.uniform(0.5, 2, N).astype(dtype)
        if spec.pos_weight:
            kw["pos_weight"] = rng.uniform(0.5, 2, N).astype(dtype)
        arrays = [x, t] + list(kw.values())
        originals = [a.copy() for a in arrays]
        stop = threading.Event()

        def mutate():
            i = 0
            while not stop.is_set():
                a = arrays[i % len(arrays)]
                s = (i * 7919) % (N - 64)
                a[s:s + 64] = specials[i % len(specials)]
                a[s:s + 64] = originals[i % len(arrays)][s:s + 64]
                i += 1

        th = threading.Thread(target=mutate)
        th.start()
        calls = refused = 0
        deadline = time.perf_counter() + {budget}
        try:
            while time.perf_counter() < deadline:
                buf = np.full(N + 8192, 12345.0, dtype)
                out = buf[4096:4096 + N]
                for reduction in ("mean", "none"):
                    try:
                        loss, grad = getattr(api, name + "_grad")(x, t, reduction=reduction, out=out, **kw)
                    except ValueError as exc:
                        assert "input" in str(exc) or "target" in str(exc), exc
                        refused += 1
                        continue
                    calls += 1
                    assert grad is out and np.shape(loss) == ((N,) if reduction == "none" else ())
                    assert (buf[:4096] == 12345.0).all() and (buf[4096 + N:] == 12345.0).all(), "written outside out"
        finally:
            stop.set()
            th.join()
        print("DONE", name, np.dtype(dtype).name, "calls", calls, "refused", refused, flush=True)
print("ELEMENTWISE-RACE-OK")
"""


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_elementwise_operands_mutated_during_calls(backend):
    """Inputs, targets, weights and pos_weights overwritten with NaN, inf, out-of-domain
    values and back while calls run: no crash, nothing written outside ``out``, a result or
    the validation's ValueError."""
    budget = 0.05 if backend == "cython" else 0.08
    assert_ok(run_python(_ELEMENTWISE_RACE.format(backend=backend, budget=budget), timeout=90), "ELEMENTWISE-RACE-OK")


_C_LEVEL_RACE = f"""
import sys, threading, time, warnings
warnings.simplefilter("ignore")
sys.path[:0] = {C_LEVEL_PATH!r}
import numpy as np
from test_c_level import call_c, MEAN, SUM
rng = np.random.default_rng(2)
I64 = np.iinfo(np.int64)
for name, shape in (("cross_entropy", (20_000, 10)), ("cross_entropy", (4_000, 50)), ("nll_loss", (20_000, 10)),
                    ("multi_margin_loss", (20_000, 10)), ("cross_entropy", (2_000, 5, 8))):
    for weighted in (False, True):
        C = shape[1]
        x = rng.normal(0, 2, shape)
        good = rng.integers(0, C, (shape[0],) + shape[2:])
        kw = {{"weight": rng.uniform(0.5, 2, C)}} if weighted else {{}}
        ref_grad = np.empty_like(x)
        ref_losses = np.empty(good.shape)
        ref = call_c(name, x, good, kw, SUM, grad=ref_grad, losses=ref_losses)
        t = good.copy()
        flat_t, flat_good = t.reshape(-1), good.reshape(-1)
        S = flat_t.size
        stop = threading.Event()

        def mutate():
            i = 0
            bad = [2**62, -(2**62), -1, C, int(I64.max), int(I64.min)]
            while not stop.is_set():
                a = (0, S // 2, S - 16)[i % 3]
                flat_t[a:a + 16] = bad[i % len(bad)]
                flat_t[a:a + 16] = flat_good[a:a + 16]
                i += 1

        th = threading.Thread(target=mutate)
        th.start()
        calls = 0
        deadline = time.perf_counter() + 0.1
        try:
            while time.perf_counter() < deadline:
                buf = np.full(x.size + 8192, 12345.0)
                grad = buf[4096:4096 + x.size].reshape(x.shape)
                losses = np.full(good.shape, 777.0)
                got = call_c(name, x, t, kw, SUM, grad=grad, losses=losses)
                calls += 1
                assert (buf[:4096] == 12345.0).all() and (buf[4096 + x.size:] == 12345.0).all(), "written outside grad"
                if np.isnan(got) and (losses == 777.0).all():
                    assert (grad == 12345.0).all(), "refused, yet the gradient was written"
                    continue  # the validation saw a bad index: refused, nothing written
                assert got == ref or np.isnan(got), f"{{name}}: {{got}} != {{ref}}"
                l = losses.reshape(-1)
                assert ((l == ref_losses.reshape(-1)) | np.isnan(l)).all(), f"{{name}}: a sample loss is garbage"
                g = np.moveaxis(grad, 1, -1).reshape(-1, C)
                r = np.moveaxis(ref_grad, 1, -1).reshape(-1, C)
                assert ((g == r).all(axis=1) | np.isnan(g).all(axis=1)).all(), f"{{name}}: a gradient row is garbage"
        finally:
            stop.set()
            th.join()
        print("DONE", name, shape, weighted, calls, flush=True)
print("C-RACE-OK")
"""


@pytest.mark.skipif(fastloss.get_backend() != "cython", reason="the C level belongs to the compiled kernels")
def test_class_indices_flipped_during_c_level_calls():
    """The exported C kernels (called through ctypes, which releases the GIL) while another
    thread flips class indices: no crash, no write outside the buffers; a refusal (NaN,
    nothing written) or the unmutated values with NaN samples."""
    assert_ok(run_python(_C_LEVEL_RACE, timeout=90), "C-RACE-OK")
