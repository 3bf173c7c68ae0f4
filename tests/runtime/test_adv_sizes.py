"""Adversarial runtime suite: sizes at the limits.

* Empty batches for every loss and every shape holding a 0 (leading, inner, trailing axes,
  the class axis, the extra dimensions), with and without weights, ``out`` and every
  reduction: NaN for "mean", +0 for "sum", empty arrays for "none" and the gradient.
* ``np.empty((0, C))`` with C = 10**9 and 2**40 for the class losses returns at once
  (SPEC11 item 2): run in a subprocess under a 20 s timeout and an address-space cap (a
  backend that allocates O(C) gets a MemoryError instead of eating the machine's memory).
* One sample with a huge class count (C > 2**17), targets at 0 and C - 1.
* Sizes around the kernels' block boundaries (4096-element blocks, the 8192-element
  serial/parallel and GIL thresholds, the 64-block stack buffer at 262144 elements, the
  16-row softmax tile, the 2048-class exp buffer), against the float64 formulas, for every
  thread count bitwise, loss and gradient twins bitwise.
* Class indices at 0 and C - 1, ignore_index at the int64 extremes and inside [0, C),
  targets at the int64 / uint64 extremes (ValueError naming the value), ignore_index
  outside int64 (ValueError naming ignore_index, SPEC11 item 6).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastloss
from adv_runtime_support import run_python
import reference
from cases import CLASS_WEIGHT, Case, make_weight
from fastloss._registry import BY_NAME, LOSSES, REDUCTIONS
from helpers import BACKENDS, assert_bitwise, assert_grad_close, assert_value_close, loss_fn, rtol_for
from losses import REFERENCES

DTYPES = (np.float32, np.float64)
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
ELEMENTWISE = [s.name for s in LOSSES if s.kind == "elementwise"]
CLASSES = [s.name for s in LOSSES if s.kind == "classes"]
I64 = np.iinfo(np.int64)



# --------------------------------------------------------------------------- empty batches


def _empty_shapes(spec):
    if spec.kind == "elementwise":
        return [(0,), (0, 3), (3, 0), (2, 0, 4), (0, 0), (4, 3, 0), (1, 1, 0, 1)]
    if spec.max_input_dims == 2:
        return [(0, 5), (0, 0), (0, 1)]
    return [(0, 5), (0, 0), (0, 5, 3), (4, 5, 0), (0, 0, 2), (4, 0, 0), (2, 3, 0, 5), (0, 1, 1, 1)]


def _empty_weights(spec, shape, dtype):
    """Every weight form that broadcasts to ``shape`` (None: no weight)."""
    out = [{}]
    if spec.weight == "class":
        out.append({"weight": np.ones(shape[1] if len(shape) > 1 else shape[0], dtype)})
    elif spec.weight:
        out += [{"weight": np.ones(shape, dtype)}, {"weight": np.ones((), dtype)}]
        if shape:
            out.append({"weight": np.ones(shape[-1:], dtype)})
            out.append({"weight": np.ones(shape[:-1] + (1,), dtype)})
    if spec.pos_weight and shape:
        out += [{"pos_weight": np.ones(shape[-1:], dtype)}, {"pos_weight": np.ones(shape, dtype)}]
    return out


@dtypes
@pytest.mark.parametrize("name", [s.name for s in LOSSES])
def test_empty_batch_every_shape_with_a_zero(api, name, dtype):
    """Every loss, every shape holding a 0 (any axis), every weight form, with and without
    ``out``, every reduction: NaN / +0 / empty, an empty gradient of the input's shape."""
    spec = BY_NAME[name]
    for shape in _empty_shapes(spec):
        x = np.zeros(shape, dtype)
        if spec.kind == "elementwise":
            targets = [np.zeros(shape, dtype) + (1 if spec.target_domain == "sign" else 0)]
            lshape = shape
        else:
            lshape = (shape[0],) + shape[2:]
            targets = [np.zeros(lshape, np.int64)]
            if spec.probability_target:
                targets.append(np.zeros(shape, dtype))
        for t in targets:
            for kw in _empty_weights(spec, shape, dtype):
                for reduction in REDUCTIONS:
                    what = f"{name} shape={shape} target={t.dtype} {sorted(kw)} {reduction}"
                    loss = loss_fn(api, name)(x, t, reduction=reduction, **kw)
                    out = np.empty(shape, dtype)
                    for buf in (None, out):
                        lg, grad = loss_fn(api, name, grad=True)(x, t, reduction=reduction, out=buf, **kw)
                        assert_bitwise(lg, loss, what)
                        assert type(grad) is np.ndarray and grad.shape == shape and grad.dtype == dtype, what
                        if buf is not None:
                            assert grad is buf, f"{what}: out= not returned"
                    if reduction == "none":
                        assert type(loss) is np.ndarray and loss.shape == lshape and loss.dtype == dtype, what
                    else:
                        assert type(loss) is np.dtype(dtype).type, f"{what}: {type(loss)}"
                        if reduction == "mean":
                            assert math.isnan(loss), f"{what}: {loss}"
                        else:
                            assert loss == 0 and math.copysign(1.0, loss) > 0, f"{what}: {loss!r}"


@pytest.mark.parametrize("name", CLASSES)
def test_rows_but_no_classes_is_a_value_error(api, name):
    """(N, 0) with N > 0: every class index is outside [0, 0): a ValueError naming the
    target (never a read of class 0 of an empty row)."""
    x = np.zeros((3, 0))
    with pytest.raises(ValueError, match="target"):
        loss_fn(api, name, grad=True)(x, np.zeros(3, np.int64))
    if BY_NAME[name].ignore_index:  # every sample ignored: an all-ignored batch
        loss, grad = loss_fn(api, name, grad=True)(x, np.full(3, -100), reduction="sum")
        assert loss == 0 and grad.shape == (3, 0)
        assert math.isnan(loss_fn(api, name)(x, np.full(3, -100)))


_HUGE_C_SCRIPT = """
import os, resource, sys, time, warnings
warnings.simplefilter("ignore")
import numpy as np
import fastloss, fastloss.numpy_backend
api = fastloss if {backend!r} == "cython" else fastloss.numpy_backend
# an address-space cap: a backend doing O(C) work allocates O(C) memory and gets a
# MemoryError here instead of swapping the machine to death
with open("/proc/self/status") as f:
    vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (2 << 30), resource.getrlimit(resource.RLIMIT_AS)[1]))
slow = []
for C in (10**9, 2**40):
    for dtype in (np.float32, np.float64):
        for shape in ((0, C), (0, C, 3), (2, C, 0)):
            x = np.empty(shape, dtype)
            lshape = (shape[0],) + shape[2:]
            t = np.empty(lshape, np.int64)
            calls = [("cross_entropy", t, {{}}), ("cross_entropy", t, {{"label_smoothing": 0.1}}),
                     ("cross_entropy", t, {{"ignore_index": 5}}), ("nll_loss", t, {{}}),
                     ("cross_entropy", np.empty(shape, dtype), {{}}),
                     ("cross_entropy", np.empty(shape, dtype), {{"label_smoothing": 0.2}})]
            if len(shape) == 2:
                calls += [("multi_margin_loss", t, {{}}), ("multi_margin_loss", t, {{"p": 2, "margin": 0.5}})]
            for name, target, kw in calls:
                for red in ("mean", "sum", "none"):
                    what = f"{{name}} shape={{shape}} {{np.dtype(dtype).name}} target={{target.dtype}} {{kw}} {{red}}"
                    print("CALL", what, flush=True)
                    start = time.perf_counter()
                    loss = getattr(api, name)(x, target, reduction=red, **kw)
                    loss2, grad = getattr(api, name + "_grad")(x, target, reduction=red, **kw)
                    out = np.empty(shape, dtype)
                    loss3, grad3 = getattr(api, name + "_grad")(x, target, reduction=red, out=out, **kw)
                    took = time.perf_counter() - start
                    if took > 1.0:
                        slow.append((what, took))
                    assert grad.shape == shape and grad3 is out, what
                    if red == "none":
                        assert loss.shape == lshape and loss2.shape == lshape, what
                    elif red == "mean":
                        assert np.isnan(loss) and np.isnan(loss2) and np.isnan(loss3), what
                    else:
                        assert loss == 0 and loss2 == 0 and loss3 == 0, what
assert not slow, f"calls on an empty batch took over 1 s: {{slow[:5]}}"
print("HUGE-C-OK")
"""


@pytest.mark.parametrize("backend", [name for name, _ in BACKENDS])
def test_empty_batch_with_a_huge_class_count_returns_at_once(backend, tmp_path):
    """SPEC11 item 2: cross_entropy / nll_loss / multi_margin_loss (and _grad, with out=)
    on np.empty((0, C)) (and (0, C, d), (N, C, 0)) with C = 10**9 and 2**40 return at once:
    every call under 1 s, the whole scenario under 20 s, no O(C) allocation."""
    result = run_python(_HUGE_C_SCRIPT.format(backend=backend), timeout=20, cwd=tmp_path)
    assert result.returncode == 0 and "HUGE-C-OK" in result.stdout, (
        f"exit {result.returncode}; last calls:\n{result.stdout[-1500:]}\n{result.stderr[-3000:]}")


# --------------------------------------------------------------------------- one huge row

HUGE_C = 2**17 + 7


@dtypes
@pytest.mark.parametrize("name", CLASSES)
def test_one_sample_with_a_huge_class_count(api, name, dtype):
    """N = 1 (and the unbatched (C,)) with C > 2**17, targets 0 and C - 1, with and without
    class weights (and label smoothing): the float64 formulas' loss and gradient."""
    rng = np.random.default_rng(11)
    x1 = rng.normal(0.0, 2.0, HUGE_C).astype(dtype)
    w = rng.uniform(0.5, 2.0, HUGE_C).astype(dtype)
    variants = [{}, {"weight": w}]
    params = {p.name for p in BY_NAME[name].params}
    if "label_smoothing" in params:
        variants.append({"weight": w, "label_smoothing": 0.3})
    if "p" in params:  # multi-margin's squared hinge
        variants.append({"p": 2, "margin": 0.25})
    for x, tshape in ((x1.reshape(1, -1), (1,)), (x1, ())):
        for y in (0, HUGE_C - 1):
            t = np.full(tshape, y, np.int64)
            for kw in variants:
                for reduction in ("mean", "sum"):
                    loss, grad = loss_fn(api, name, grad=True)(x, t, reduction=reduction, **kw)
                    ref_loss, ref_grad = reference.formula_reference(name, x, t, kw, reduction)
                    what = f"{name} x{x.shape} y={y} {sorted(kw)} {reduction}"
                    assert_value_close(loss, ref_loss, 10 * rtol_for(dtype), what)
                    assert_grad_close(grad, ref_grad, 10 * rtol_for(dtype), what)


# --------------------------------------------------------------------------- block boundaries

ELEMENTWISE_SIZES = (4095, 4096, 4097, 8191, 8192, 262143, 262144, 262145)


def _check_twins_and_threads(api, name, x, t, kw, dtype, what):
    """Loss and _grad twins bitwise; 1, 2 and 1024 threads bitwise; out= and in-place
    bitwise; "none" consistent with "sum"; "mean" the float64 formulas' value."""
    f, fg = loss_fn(api, name), loss_fn(api, name, grad=True)
    base_loss, base_grad = fg(x, t, reduction="sum", n_threads=1, **kw)
    for n_threads in (2, 1024):
        loss, grad = fg(x, t, reduction="sum", n_threads=n_threads, **kw)
        assert_bitwise(loss, base_loss, f"{what}: sum with n_threads={n_threads}")
        assert_bitwise(grad, base_grad, f"{what}: gradient with n_threads={n_threads}")
    assert_bitwise(f(x, t, reduction="sum", n_threads=2, **kw), base_loss, f"{what}: loss alone")
    out = np.full_like(x, np.nan)
    loss, grad = fg(x, t, reduction="sum", out=out, **kw)
    assert grad is out
    assert_bitwise(grad, base_grad, f"{what}: out=")
    inplace = x.copy()
    loss, grad = fg(inplace, t, reduction="sum", out=inplace, **kw)
    assert_bitwise(loss, base_loss, f"{what}: in place loss")
    assert_bitwise(grad, base_grad, f"{what}: in place gradient")
    none = f(x, t, reduction="none", **kw)
    np.testing.assert_allclose(np.sum(none, dtype=np.float64), float(base_loss),
                               rtol=1e-6 if dtype == np.float32 else 1e-12, err_msg=f"{what}: none vs sum")
    mean_loss, mean_grad = fg(x, t, reduction="mean", **kw)
    ref_loss, ref_grad = _formula_mean(name, x, t, kw)
    assert_value_close(mean_loss, ref_loss, 4 * rtol_for(dtype), f"{what}: mean loss")
    assert_grad_close(mean_grad, ref_grad, 4 * rtol_for(dtype), f"{what}: mean gradient")


def _formula_mean(name, x, t, kw):
    """The float64 formulas' "mean" loss and gradient (a plain float64 sum: cheaper than
    reference.formula_reference's exact sum, and far more accurate than the tolerance)."""
    x64, t64, kw64 = reference._float64_args(x, t, kw)
    with np.errstate(all="ignore"):
        per, divisor, grad = REFERENCES[name].formula(x64, t64, **kw64)
    return float(np.sum(per)) / divisor, grad / divisor


compiled_only = pytest.mark.skipif(fastloss.get_backend() != "cython",
                                   reason="block boundaries are the compiled kernels' (the NumPy backend has none)")


@compiled_only
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_sizes_around_block_boundaries(name):
    spec = BY_NAME[name]
    params = [()]
    if spec.weight:  # a scalar weight is tiled to 4096-element runs by the kernels
        params.append((("weight", "scalar"),))
    if spec.pos_weight:
        params.append((("pos_weight", "scalar"), ("weight", "full")))
    for i, n in enumerate(ELEMENTWISE_SIZES):
        dtype = DTYPES[i % 2] if n % 4096 else DTYPES[(i // 2) % 2]  # both dtypes at each boundary
        for p in {params[0], params[i % len(params)]}:  # plain, and the weighted forms in turn
            x, t, kw = Case(name, (n,), "values", p).generate(dtype, seed=n)
            _check_twins_and_threads(fastloss, name, x, t, kw, dtype, f"{name} n={n} {dict(p)}")


# (N, C[, d]) around the class kernels' thresholds: N * C * K around 8192 (GIL / parallel),
# 64 blocks of max(1, 4096 // C) samples, the 16-row tile (C <= 16), the 2048-class exp
# buffer, the 64-class streaming floor.
CLASS_SHAPES = [(820, 10), (26177, 10), (17, 16), (15361, 17), (257, 1000), (65, 4097), (3, 2049),
                (7, 5, 4095), (1, 8193)]


def _class_data(shape, form, params, dtype, seed):
    """Scores (N, C[, d]) and class indices (every third ignored for "indices+ignored") or
    class probabilities; class weights when asked. (cases.py draws multi-margin scores
    away from every kink, which cannot succeed for rows of hundreds of classes.)"""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.5, shape).astype(dtype)
    n_classes = shape[1]
    if form == "probabilities":
        e = np.exp(rng.normal(0.0, 1.0, shape))
        t = (e / e.sum(axis=1, keepdims=True)).astype(dtype)
    else:
        t = rng.integers(0, n_classes, (shape[0],) + shape[2:])
        if form == "indices+ignored":
            t.reshape(-1)[1::3] = -100
    kw = dict(params)
    if kw.get("weight") == CLASS_WEIGHT:
        kw["weight"] = rng.uniform(0.25, 2.0, n_classes).astype(dtype)
    return x, t, kw


@compiled_only
@pytest.mark.parametrize("name", CLASSES)
def test_class_shapes_around_block_boundaries(name):
    spec = BY_NAME[name]
    shapes = [s for s in CLASS_SHAPES if spec.max_input_dims is None or len(s) <= spec.max_input_dims]
    variants = [((), "indices"), ((("weight", CLASS_WEIGHT),), "indices+ignored" if spec.ignore_index else "indices")]
    if spec.probability_target:
        variants += [((("label_smoothing", 0.1),), "indices+ignored"), ((), "probabilities")]
    for i, shape in enumerate(shapes):
        dtype = DTYPES[i % 2]
        for p, form in {variants[0], variants[1 + i % (len(variants) - 1)]}:  # plain, the others in turn
            x, t, kw = _class_data(shape, form, dict(p), dtype, seed=sum(shape))
            _check_twins_and_threads(fastloss, name, x, t, kw, dtype, f"{name} {shape} {form} {dict(p)}")


# --------------------------------------------------------------------------- class indices


@dtypes
@pytest.mark.parametrize("name", CLASSES)
def test_class_indices_at_the_ends_of_the_range(api, name, dtype):
    """Every target 0, every target C - 1 (the first and last class of every row), on the
    fast path (int64 (N, C), no weight) and the general path (int32 target, weight)."""
    rng = np.random.default_rng(5)
    for shape in ((40, 7), (3000, 7), (40, 300), (5, 7, 3)):
        if BY_NAME[name].max_input_dims and len(shape) > 2:
            continue
        x = rng.normal(0, 2, shape).astype(dtype)
        C = shape[1]
        for y in (0, C - 1):
            for t, kw in ((np.full((shape[0],) + shape[2:], y, np.int64), {}),
                          (np.full((shape[0],) + shape[2:], y, np.int32),
                           {"weight": make_weight(rng, CLASS_WEIGHT, shape, dtype)})):
                for reduction in ("mean", "sum"):
                    loss, grad = loss_fn(api, name, grad=True)(x, t, reduction=reduction, **kw)
                    ref_loss, ref_grad = reference.formula_reference(name, x, t, kw, reduction)
                    what = f"{name} {shape} y={y} {t.dtype} {sorted(kw)} {reduction}"
                    assert_value_close(loss, ref_loss, 4 * rtol_for(dtype), what)
                    assert_grad_close(grad, ref_grad, 4 * rtol_for(dtype), what)


@dtypes
@pytest.mark.parametrize("ignore", [int(I64.min), int(I64.max), 0, 6, -1])
@pytest.mark.parametrize("name", [s.name for s in LOSSES if s.ignore_index])
def test_ignore_index_at_the_int64_extremes_and_inside_the_classes(api, name, ignore, dtype):
    """ignore_index = int64 min / max (targets holding it are ignored, not out of range),
    or a valid class (0, C - 1): ignored samples have loss 0 and a zero gradient row, the
    others the formulas' values; "mean" divides by the kept samples."""
    rng = np.random.default_rng(abs(ignore) % 1000)
    for shape in ((64, 7), (4000, 7), (9, 7, 3)):
        x = rng.normal(0, 1.5, shape).astype(dtype)
        t = rng.integers(0, 7, (shape[0],) + shape[2:])
        t[t == ignore] = 3  # kept samples never hold the ignored value
        t.reshape(-1)[::3] = ignore
        for kw in ({}, {"weight": make_weight(rng, CLASS_WEIGHT, shape, dtype)}):
            kw = {**kw, "ignore_index": ignore}
            for reduction in ("mean", "sum", "none"):
                loss, grad = loss_fn(api, name, grad=True)(x, t, reduction=reduction, **kw)
                ref_loss, ref_grad = reference.formula_reference(name, x, t, kw, reduction)
                what = f"{name} {shape} ignore_index={ignore} {sorted(kw)} {reduction}"
                assert_value_close(loss, ref_loss, 4 * rtol_for(dtype), what)
                assert_grad_close(grad, ref_grad, 4 * rtol_for(dtype), what)
                ignored = (t == ignore)
                if reduction == "none":
                    assert (loss[ignored] == 0).all(), what
                g = np.moveaxis(grad, 1, -1)[ignored]
                assert (g == 0).all(), f"{what}: ignored samples have a non-zero gradient"


@pytest.mark.parametrize("name", CLASSES)
def test_targets_at_the_integer_extremes_are_value_errors(api, name):
    """Class indices at the int64 / uint64 / small-int extremes (not ignore_index): a
    ValueError naming the target and the value, nothing written, for every layout."""
    x = np.random.default_rng(0).normal(size=(5000, 7))
    bad_values = [(np.int64, int(I64.max)), (np.int64, int(I64.min)), (np.int64, -101), (np.int64, 7),
                  (np.uint64, 2**64 - 1), (np.uint64, 2**63), (np.uint64, 2**63 - 1), (np.int8, -128),
                  (np.uint8, 255), (np.int32, -(2**31)), (np.uint32, 2**32 - 1)]
    for dtype, value in bad_values:
        for position in (0, 4999, 2500):
            t = np.zeros(5000, dtype)
            t[position] = value
            out = np.full_like(x, 7.0)
            with pytest.raises(ValueError) as info:
                loss_fn(api, name, grad=True)(x, t, out=out)
            message = str(info.value)
            assert "target" in message and str(value) in message, f"{dtype.__name__} {value}: {message}"
            assert (out == 7.0).all(), f"{dtype.__name__} {value}: out was written before the error"


@pytest.mark.parametrize("bad", [2**63, -(2**63) - 1, 2**70, -(2**100), np.uint64(2**63), np.uint64(2**64 - 1)],
                         ids=lambda v: f"{type(v).__name__}({v})")
@pytest.mark.parametrize("name", [s.name for s in LOSSES if s.ignore_index])
def test_ignore_index_outside_int64_is_a_value_error(api, name, bad):
    """SPEC11 item 6: an integer ignore_index outside int64 is a ValueError naming
    ignore_index (never OverflowError), on the fast path (no weight) and the general one."""
    x = np.zeros((4, 3))
    t = np.zeros(4, np.int64)
    for kw in ({}, {"weight": np.ones(3)}):
        with pytest.raises(ValueError, match="ignore_index"):
            loss_fn(api, name, grad=True)(x, t, ignore_index=bad, **kw)
