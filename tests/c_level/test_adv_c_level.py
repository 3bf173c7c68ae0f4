"""Adversarial runtime suite: the C level's refusals, beyond tests/c_level/test_c_level.py.

Every exported kernel (through the function pointers Cython exports, as test_c_level.py
calls them) must return NaN and write nothing (neither ``grad`` nor ``losses``, nor the
input) for: NULL buffers with non-zero sizes (weight / pos_weight NULL with a length), sizes
whose bytes overflow (n, N * C * K, N * K * 8), negative K / weight_len / pos_weight_len,
weight_len or pos_weight_len not dividing n or larger than n, every pair of overlapping
buffers (losses with grad, the input, the target, the weight, pos_weight; grad with the
weight, pos_weight, the target of probabilities), reductions other than 0 and 1, negative
n_threads (INT_MIN included), parameters outside their domains at their extremes (p =
INT_MIN / INT_MAX, margins and smoothing at +-inf and NaN, subnormal negatives), and class
indices at the int64 extremes that are not ignore_index. And the accepted extremes: an empty
batch with C = 2**40 returns at once (subprocess, 20 s), K = 0, ignore_index at the int64
extremes (n_threads = INT_MAX: runtime/test_adv_threads.py). Refusal batteries run in a
forked child each: a kernel that writes instead of refusing cannot corrupt the test process.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import time
import traceback

import numpy as np
import pytest

import fastloss
from adv_runtime_support import C_LEVEL_PATH, assert_ok, run_python

if fastloss.get_backend() != "cython" or not hasattr(os, "fork"):
    pytest.skip("the C level belongs to the compiled kernels (and the refusals run in forked children)",
                allow_module_level=True)

from test_c_level import (MEAN, SUM, _valid_operands, c_kernel, call_c,  # noqa: E402
                          loss_shape)

from fastloss._registry import BY_NAME, LOSSES  # noqa: E402

DTYPES = (np.float32, np.float64)
IDX_MAX = 2**63 - 1
INT_MAX, INT_MIN = 2**31 - 1, -(2**31)
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
NAMES = [s.name for s in LOSSES]


def isolated(fn):
    """Run the test body in a forked child (a kernel that reads or writes out of bounds
    instead of refusing must fail this test, not crash or corrupt the test process); the
    child's assertion or crash is reported here. Kernels run serially in a forked child."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(r)
            code, msg = 0, "OK"
            try:
                fn(*args, **kwargs)
            except BaseException:
                code, msg = 1, traceback.format_exc()
            os.write(w, msg.encode()[-30000:])
            os._exit(code)
        os.close(w)
        deadline = time.monotonic() + 60
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                os.close(r)
                pytest.fail("the C-level calls hung for 60 s")
            time.sleep(0.005)
        with os.fdopen(r, "rb") as f:
            msg = f.read().decode(errors="replace")
        if os.WIFSIGNALED(status):
            pytest.fail(f"the C-level calls crashed the process: signal {signal.Signals(os.WTERMSIG(status)).name}")
        if os.waitstatus_to_exitcode(status) != 0:
            pytest.fail(msg, pytrace=False)

    return wrapper


def _operands(loss, dtype):
    """Valid small operands of test_c_level (elementwise (6, 7), classes (9, 5))."""
    x, t = _valid_operands(loss, dtype)
    return np.ascontiguousarray(x), np.ascontiguousarray(t)


def _refusal_error(loss, x, t, kwargs, override, what):
    """Call with sentinels in grad, losses and a copy of the input: None when the kernel
    returned NaN and wrote nothing, else what went wrong."""
    spec = BY_NAME[loss]
    x = x.copy()
    x_before = x.tobytes()
    g = np.full_like(x, 7.0)
    lo = np.full(loss_shape(spec, x), 7.0, x.dtype)
    got = call_c(loss, x, t, kwargs, MEAN, grad=g, losses=lo, override=dict(override))
    label = f"{loss} {x.dtype}: {what}"
    if not math.isnan(got):
        return f"{label}: returned {got}"
    if not (g == 7).all() or not (lo == 7).all():
        return f"{label}: returned NaN but wrote an output"
    if x.tobytes() != x_before:
        return f"{label}: returned NaN but wrote the input"
    return None


def _refused(loss, x, t, kwargs, override, what):
    error = _refusal_error(loss, x, t, kwargs, override, what)
    assert error is None, error


# --------------------------------------------------------------------------- sizes and NULLs


def _size_overrides(spec, x, t, itemsize):
    n_name = "n" if spec.kind == "elementwise" else "N"
    out = [
        (f"{n_name} = IDX_MAX", {n_name: IDX_MAX}),
        (f"{n_name} = IDX_MAX / itemsize + 1 (bytes overflow)", {n_name: IDX_MAX // itemsize + 1}),
        (f"{n_name} = -2**63", {n_name: -(2**63)}),
        ("reduction = -1", {"reduction": -1}),
        ("reduction = 3", {"reduction": 3}),
        ("reduction = INT_MAX", {"reduction": INT_MAX}),
        ("reduction = INT_MIN", {"reduction": INT_MIN}),
        ("n_threads = INT_MIN", {"n_threads": INT_MIN}),
    ]
    if spec.kind == "elementwise":
        k = next(k for k in range(2, x.size) if x.size % k)  # a length not dividing n
        if spec.weight:
            w = np.ones(x.size, x.dtype)
            out += [
                ("weight NULL with weight_len 3", {"weight": None, "weight_len": 3}),
                ("weight_len -1", {"weight": w.ctypes.data, "weight_len": -1}),
                ("weight_len n + 1", {"weight": w.ctypes.data, "weight_len": x.size + 1}),
                ("weight_len 2n", {"weight": w.ctypes.data, "weight_len": 2 * x.size}),
                (f"weight_len {k} (not dividing {x.size})", {"weight": w.ctypes.data, "weight_len": k}),
                ("weight_len IDX_MAX", {"weight": w.ctypes.data, "weight_len": IDX_MAX}),
            ]
            out.append(("_keep", w))
        if spec.pos_weight:
            pw = np.ones(x.size, x.dtype)
            out += [
                ("pos_weight NULL with pos_weight_len 5", {"pos_weight": None, "pos_weight_len": 5}),
                ("pos_weight_len -5", {"pos_weight": pw.ctypes.data, "pos_weight_len": -5}),
                ("pos_weight_len 0", {"pos_weight": pw.ctypes.data, "pos_weight_len": 0}),
                (f"pos_weight_len {k} (not dividing {x.size})", {"pos_weight": pw.ctypes.data, "pos_weight_len": k}),
                ("pos_weight_len n + 1", {"pos_weight": pw.ctypes.data, "pos_weight_len": x.size + 1}),
            ]
            out.append(("_keep", pw))
    else:
        out += [
            ("C = IDX_MAX", {"C": IDX_MAX}),
            ("N * C overflows", {"N": 2**32, "C": 2**32}),
            ("N * C * itemsize overflows", {"N": 2**31, "C": 2**30}),
            ("C = -2**63", {"C": -(2**63)}),
        ]
        if spec.max_input_dims is None:
            out += [
                ("K = -1", {"K": -1}),
                ("K = IDX_MAX", {"K": IDX_MAX}),
                ("N * K * 8 overflows", {"N": 2**31, "K": 2**31}),
                ("N * C * K overflows", {"N": 2**21, "C": 2**21, "K": 2**21}),
            ]
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("loss", NAMES)
@isolated
def test_bad_sizes_nulls_modes_return_nan_and_write_nothing(loss, dtype):
    spec = BY_NAME[loss]
    x, t = _operands(loss, dtype)
    keep, errors = [], []
    for what, override in _size_overrides(spec, x, t, np.dtype(dtype).itemsize):
        if what == "_keep":
            keep.append(override)
            continue
        errors.append(_refusal_error(loss, x, t, {}, override, what))
    errors = [e for e in errors if e]
    assert not errors, "\n".join(errors)


def _overlap_overrides(spec, x, t):
    """(what, kwargs, override, grad?, losses?) with one output overlapping another buffer.

    The overlapping output is placed inside a sentinel-filled buffer the test checks."""
    cases = []
    isz = x.itemsize
    # an arena: the overlapping output lives in it; everything in it must stay 7
    arena = np.full(x.size * 4 + 64, 7.0, x.dtype)
    base = arena.ctypes.data
    cases.append(("losses == grad", {"losses": base, "grad": base}, arena))
    cases.append(("losses overlapping grad's end", {"grad": base, "losses": base + (x.size - 1) * isz}, arena))
    cases.append(("losses overlapping the input", {"losses": x.ctypes.data + isz}, None))
    cases.append(("losses == the input", {"losses": x.ctypes.data}, None))
    cases.append(("losses overlapping the target", {"losses": t.ctypes.data}, None))
    cases.append(("grad == the target", {"grad": t.ctypes.data}, None))
    cases.append(("grad overlapping the input's end", {"grad": x.ctypes.data + (x.size - 1) * isz}, None))
    cases.append(("grad starting before the input", {"grad": x.ctypes.data - 3 * isz}, None))
    if spec.weight:
        # the weight inside the arena, the outputs overlapping it
        if spec.kind == "elementwise":
            wo = {"weight": base + 8 * isz, "weight_len": x.size}
        else:
            wo = {"weight": base + 8 * isz}
        cases.append(("grad overlapping the weight", {**wo, "grad": base}, arena))
        cases.append(("losses overlapping the weight", {**wo, "losses": base + 9 * isz}, arena))
    if spec.pos_weight:
        po = {"pos_weight": base + 8 * isz, "pos_weight_len": x.size}
        cases.append(("grad overlapping pos_weight", {**po, "grad": base}, arena))
        cases.append(("losses overlapping pos_weight", {**po, "losses": base + 10 * isz}, arena))
    return cases, arena


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("loss", NAMES)
@isolated
def test_overlapping_outputs_return_nan_and_write_nothing(loss, dtype):
    spec = BY_NAME[loss]
    x, t = _operands(loss, dtype)
    t_before = t.tobytes()
    cases, arena = _overlap_overrides(spec, x, t)
    for what, override, _ in cases:
        xc = x.copy()
        # the override may point into x: rebase those pointers onto the copy
        ov = {k: (v - x.ctypes.data + xc.ctypes.data if isinstance(v, int) and k in ("grad", "losses")
                  and x.ctypes.data - 64 <= v < x.ctypes.data + x.nbytes else v) for k, v in override.items()}
        arena[:] = 7.0
        x_before = xc.tobytes()
        g = None if "grad" in ov else np.full_like(xc, 7.0)
        lo = None if "losses" in ov else np.full(loss_shape(spec, xc), 7.0, xc.dtype)
        got = call_c(loss, xc, t, {}, MEAN, grad=g, losses=lo, override=ov)
        assert math.isnan(got), f"{what}: returned {got}"
        assert (arena == 7).all(), f"{what}: the arena (an output) was written"
        assert xc.tobytes() == x_before, f"{what}: the input was written"
        assert t.tobytes() == t_before, f"{what}: the target was written"
        if g is not None:
            assert (g == 7).all(), f"{what}: grad written"
        if lo is not None:
            assert (lo == 7).all(), f"{what}: losses written"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@isolated
def test_probability_targets_refusals(dtype):
    """fl_cross_entropy_probs_grad_*: grad or losses overlapping the probabilities, NULL
    probabilities or input are refused; nothing written."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 5)).astype(dtype)
    p = rng.random((6, 5)).astype(dtype)
    p /= p.sum(axis=1, keepdims=True)
    f = c_kernel("cross_entropy", dtype, probabilities=True)
    ok = f(x.ctypes.data, p.ctypes.data, None, None, None, 6, 5, 1, 0.0, MEAN, 0)
    assert not math.isnan(ok)
    g = np.full_like(x, 7.0)
    lo = np.full(6, 7.0, dtype)
    for what, args in [
        ("grad == probabilities", (x.ctypes.data, p.ctypes.data, None, p.ctypes.data, None)),
        ("losses inside probabilities", (x.ctypes.data, p.ctypes.data, None, g.ctypes.data, p.ctypes.data + 4)),
        ("NULL probabilities", (x.ctypes.data, None, None, g.ctypes.data, lo.ctypes.data)),
        ("NULL input", (None, p.ctypes.data, None, g.ctypes.data, lo.ctypes.data)),
    ]:
        p_before = p.tobytes()
        got = f(*args, 6, 5, 1, 0.0, MEAN, 0)
        assert math.isnan(got), f"{what}: {got}"
        assert (g == 7).all() and (lo == 7).all() and p.tobytes() == p_before, f"{what}: written"


# --------------------------------------------------------------------------- parameters

EXTREME_PARAMS = {
    float: [-math.inf, math.inf, math.nan, -5e-324, 5e-324, -0.0, 1.7976931348623157e308,
            np.nextafter(1.0, 2.0), np.nextafter(0.0, -1.0)],
    int: [INT_MIN, INT_MAX, -2, 0, 3, 1, 2],
    bool: [INT_MIN, INT_MAX, -1, 0, 1, 2],  # a C int: 0 and 1 only
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("loss", [s.name for s in LOSSES if s.params])
@isolated
def test_parameter_extremes_follow_the_registry_and_write_nothing_when_refused(loss, dtype):
    spec = BY_NAME[loss]
    x, t = _operands(loss, dtype)
    for p in spec.params:
        for value in EXTREME_PARAMS[p.type]:
            if p.valid(value):
                g = np.full_like(x, 7.0)
                got = call_c(loss, x, t, {}, SUM, grad=g, override={p.name: value})
                assert not math.isnan(got), f"{p.name} = {value!r} is valid, yet refused (NaN)"
                if not (p.name == "margin" and not math.isfinite(value)):
                    assert not (g == 7).all(), f"{p.name} = {value!r} is valid, yet nothing was written"
                continue
            _refused(loss, x, t, {}, {p.name: value}, f"{p.name} = {value!r}")


# --------------------------------------------------------------------------- class indices


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("loss", [s.name for s in LOSSES if s.kind == "classes"])
@isolated
def test_class_indices_at_the_int64_extremes(loss, dtype):
    """Indices at int64 min / max / -1 / C (not ignore_index): refused; ignore_index at
    the int64 extremes: those samples ignored, the others the Python API's values."""
    spec = BY_NAME[loss]
    rng = np.random.default_rng(8)
    x = rng.normal(size=(300, 6)).astype(dtype)
    for bad in (I64_MIN, I64_MAX, -1, 6, 2**62):
        for pos in (0, 150, 299):
            t = rng.integers(0, 6, 300)
            t[pos] = bad
            _refused(loss, x, t, {}, {}, f"target[{pos}] = {bad}")
    if not spec.ignore_index:
        return
    for ignore in (I64_MIN, I64_MAX):
        t = rng.integers(0, 6, 300)
        t[::4] = ignore
        expected_loss, expected_grad = getattr(fastloss, loss + "_grad")(x, t, ignore_index=ignore)
        g = np.full_like(x, 7.0)
        got = call_c(loss, x, t, {"ignore_index": ignore}, MEAN, grad=g)
        assert x.dtype.type(got) == expected_loss and g.tobytes() == expected_grad.tobytes(), f"ignore_index={ignore}"


@isolated
def test_k_zero_is_an_empty_batch():
    """(N, C, 0): no samples: "sum" 0, "mean" NaN, nothing read or written (NULL buffers)."""
    x, t = np.empty((5, 3, 0)), np.empty((5, 0), np.int64)
    null = {"input": None, "target": None}  # every buffer NULL, default parameters
    for loss in [s.name for s in LOSSES if s.kind == "classes" and s.max_input_dims is None]:
        assert call_c(loss, x, t, {}, SUM, override=null) == 0.0
        assert math.isnan(call_c(loss, x, t, {}, MEAN, override=null))


_HUGE_C_C_LEVEL = f"""
import sys, time
sys.path[:0] = {C_LEVEL_PATH!r}
import numpy as np
from test_c_level import c_kernel, MEAN, SUM
for dtype in (np.float32, np.float64):
    for C in (10**9, 2**40):
        for red in (MEAN, SUM):
            start = time.perf_counter()
            calls = [
                ("cross_entropy", c_kernel("cross_entropy", dtype)(None, None, None, None, None, 0, C, 1, -100, 0.0, red, 0)),
                ("cross_entropy smoothing", c_kernel("cross_entropy", dtype)(None, None, None, None, None, 0, C, 1, -100, 0.1, red, 0)),
                ("cross_entropy probs", c_kernel("cross_entropy", dtype, probabilities=True)(None, None, None, None, None, 0, C, 1, 0.1, red, 0)),
                ("nll_loss", c_kernel("nll_loss", dtype)(None, None, None, None, None, 0, C, 1, -100, red, 0)),
                ("multi_margin_loss", c_kernel("multi_margin_loss", dtype)(None, None, None, None, None, 0, C, 1, 1.0, red, 0)),
                ("cross_entropy K=0", c_kernel("cross_entropy", dtype)(None, None, None, None, None, 3, C, 0, -100, 0.1, red, 0)),
            ]
            took = time.perf_counter() - start
            for what, got in calls:
                assert (np.isnan(got) if red == MEAN else got == 0.0), (what, C, red, got)
            assert took < 1.0, f"C = {{C}}: {{took:.1f}} s for an empty batch"
            print("OK", np.dtype(dtype).name, C, red, flush=True)
print("C-HUGE-OK")
"""


def test_empty_batch_with_a_huge_class_count_at_the_c_level(tmp_path):
    """SPEC11 item 2 at the C level: N = 0 (or K = 0) with C = 10**9 and 2**40 returns at
    once (NaN for MEAN, 0 for SUM), with NULL buffers (nothing to read)."""
    assert_ok(run_python(_HUGE_C_C_LEVEL, timeout=20, cwd=tmp_path), "C-HUGE-OK")
