"""The compiled kernels take different code paths for the same math: the fast path or the
general front layer, a tile of 16 softmax rows or one row at a time, and an instruction-set
level chosen at run time. Each pair must give the same bits."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastloss
from helpers import COMPILED_BACKENDS
from losses import REFERENCES

pytestmark = pytest.mark.skipif(not COMPILED_BACKENDS, reason="these paths exist only in the compiled backend")

DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_classes", [3, 10, 16])
def test_softmax_tile_and_single_rows_agree_bitwise(dtype, n_classes):
    # 35 rows: two tiles of 16 and 3 rows alone. Shifting the batch by one row moves every
    # row between the two paths, so equal results prove the paths give the same bits.
    rng = np.random.default_rng(n_classes)
    x = (rng.standard_normal((35, n_classes)) * 4).astype(dtype)
    y = rng.integers(0, n_classes, size=35)
    y[[3, 20]] = -100
    weight = rng.uniform(0.5, 2.0, n_classes).astype(dtype)
    for kwargs in ({}, {"weight": weight}):
        loss, grad = fastloss.cross_entropy_grad(x, y, reduction="none", **kwargs)
        loss_1, grad_1 = fastloss.cross_entropy_grad(x[1:], y[1:], reduction="none", **kwargs)
        np.testing.assert_array_equal(loss[1:], loss_1)
        np.testing.assert_array_equal(grad[1:], grad_1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_path_and_general_path_agree_bitwise(dtype):
    # The same call through the fast path (default parameter objects) and the general path
    # (an equal delta that is another object is not the default, so the front layer runs).
    rng = np.random.default_rng(7)
    x = rng.standard_normal(50_000).astype(dtype)
    t = rng.standard_normal(50_000).astype(dtype)
    fast = fastloss.huber_loss_grad(x, t)
    general = fastloss.huber_loss_grad(x, t, delta=float("1.0000"))  # equal value, other object
    assert fast[0] == general[0]
    np.testing.assert_array_equal(fast[1], general[1])


_SIMD_SCRIPT = """
import json, sys
import numpy as np
import fastloss
from fastloss import kernels as _kernels
from fastloss._registry import LOSSES
rng = np.random.default_rng(3)
out = {"level": _kernels.simd_level()}
for dtype in (np.float32, np.float64):
    x = (rng.standard_normal((300, 10)) * 3).astype(dtype)
    y = rng.integers(0, 10, 300)
    p = rng.uniform(0.01, 0.99, (300, 10)).astype(dtype)
    s = np.sign(rng.standard_normal((300, 10))).astype(dtype)
    results = {  # code paths beyond the default parameters
        "cross_entropy smoothed": fastloss.cross_entropy_grad(x, y, label_smoothing=0.1),
        "multi_margin_loss p=2": fastloss.multi_margin_loss_grad(x, y, p=2),
    }
    for spec in LOSSES:  # every loss, on values of its domains: scores, probabilities, labels
        if spec.kind == "classes":
            args = (x, y)
        elif spec.input_domain == "unit":
            args = (p, s if spec.target_domain == "sign" else p[::-1].copy())
        else:
            args = (x, s if spec.target_domain == "sign" else p)
        results[spec.name] = getattr(fastloss, spec.name + "_grad")(*args)
    out[np.dtype(dtype).name] = {k: [float(r[0]).hex(), r[1].tobytes().hex()] for k, r in results.items()}
print(json.dumps(out))
"""


def _exp_log(result: str) -> bool:
    """A result of _SIMD_SCRIPT that goes through exp or log (fastloss/csrc/vecmath.hpp): its
    loss's record says so (tests/support/losses.py: exp_log)."""
    return REFERENCES[result.split()[0]].exp_log


def _run_with_simd(level: str | None) -> dict:
    env = dict(os.environ)
    env.pop("FASTLOSS_SIMD", None)
    if level:
        env["FASTLOSS_SIMD"] = level
    done = subprocess.run([sys.executable, "-c", _SIMD_SCRIPT], env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)


def test_simd_levels_give_the_same_bits():
    """AVX2 and AVX-512 give the same bits for everything (both fuse the multiply-adds of
    exp and log). The baseline level (no FMA) gives the same bits wherever no exp or log is
    involved; its exp/log results are held to the accuracy bounds by the next test."""
    best = _run_with_simd(None)
    for level in ("baseline", "avx2"):
        capped = _run_with_simd(level)
        assert capped["level"] != best["level"] or level == "avx2"
        for dtype in ("float32", "float64"):
            for name, result in best[dtype].items():
                if level == "baseline" and _exp_log(name) and best["level"] != capped["level"]:
                    continue
                assert capped[dtype][name] == result, f"{level} differs from {best['level']}: {name} ({dtype})"


def test_baseline_level_within_the_accuracy_bounds():
    """The baseline level computes exp and log without fused multiply-adds, so its bits can
    differ from the AVX2/AVX-512 levels': it must meet the same ULP bounds. Runs the accuracy
    tests of the compiled backend in a process capped to the baseline level."""
    env = dict(os.environ, FASTLOSS_SIMD="baseline")
    tests = os.path.join(os.path.dirname(os.path.dirname(__file__)), "numerics", "test_accuracy.py")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", tests,
                           "-k", "cython and (ulp_bound or relative_bound or tight)"],
                          env=env, capture_output=True, text=True, timeout=600)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in summary and "skipped" not in summary and "deselected" in summary, summary


# Gradients of calls that move >= 48 MB go out through streaming (non-temporal) stores,
# which need a 16/32/64-byte aligned destination: each run computes a short head first.
STREAMED_ELEMENTS = 5_000_000  # float32: 60 MB moved by x, t and the gradient
STREAMED_ROWS = 8_000  # of 1000 classes: float32 64 MB moved by the logits and the gradient


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["mse_loss", "binary_cross_entropy_with_logits", "cross_entropy"])
def test_streamed_gradients_equal_small_calls_bitwise(loss, dtype):
    """A gradient large enough to be streamed, written into `out` at every alignment in
    elements (offsets 0..8 into a bigger buffer), equals the same gradient computed in
    small (cached, not streamed) pieces, and its loss equals the loss-only call."""
    rng = np.random.default_rng(11)
    fn = getattr(fastloss, loss + "_grad")
    if loss == "cross_entropy":
        rows, n_classes = STREAMED_ROWS, 1000
        x = rng.normal(size=(rows, n_classes)).astype(dtype)
        t = rng.integers(0, n_classes, rows)
        pieces = [slice(i, i + 500) for i in range(0, rows, 500)]
    else:
        x = rng.normal(size=STREAMED_ELEMENTS).astype(dtype)
        t = (rng.random(STREAMED_ELEMENTS) < 0.5).astype(dtype)
        pieces = [slice(i, i + 500_000) for i in range(0, STREAMED_ELEMENTS, 500_000)]
    expected = np.empty_like(x)
    for piece in pieces:  # "sum" gradients are per-element: the pieces' bits are the whole's
        fn(x[piece], t[piece], reduction="sum", out=expected[piece])
    loss_only = getattr(fastloss, loss)(x, t, reduction="sum")
    buffer = np.empty(x.size + 8, dtype)
    for offset in (0, 1, 3, 8):
        out = buffer[offset:offset + x.size].reshape(x.shape)
        got_loss, got = fn(x, t, reduction="sum", out=out)
        assert got is out
        assert got_loss.tobytes() == loss_only.tobytes(), offset
        np.testing.assert_array_equal(got, expected, err_msg=f"offset {offset}")
