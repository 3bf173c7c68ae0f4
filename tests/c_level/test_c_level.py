"""The C level (kernels.pxd / fastloss.h, and the C library libfastloss.h): every
fl_<loss>_grad[_hess]_f32/f64 kernel gives the Python API's results bit for bit, and refuses
bad arguments by returning NaN with nothing written. Each test that calls kernels runs on the
three places a program gets them from (the ``c_source`` fixture): the function pointers the
extension exports (``fastloss.kernels.__pyx_capi__``, what ``cimport`` and
``fastloss_import()`` fetch), the C library installed with the package
(``fastloss.get_library()``), and the C library built and installed with CMake
(tests/support/libfastloss_builds.py); compiled C and C++ programs: test_libfastloss.py.

The C signature of each kernel is derived from the registry here exactly as kernels.pyx
writes it (elementwise: input, target, [weight, weight_len], [pos_weight, pos_weight_len],
grad, losses, n, params..., reduction, n_threads; classes: input, target, weight, grad,
losses, N, C, [K], [ignore_index], params..., reduction, n_threads), so a loss added to the
registry without its C kernel fails here. The compiled examples (tests/c_level/test_examples.py)
check the same signatures through the C compiler and fastloss.h.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest

from cases import DTYPES, one_case_per_param_set
from fastloss._registry import BY_NAME, LOSSES
from helpers import assert_bitwise, compiled_api
from libfastloss_builds import cmake_install, library_dir, wheel_library

kernels = pytest.importorskip("fastloss.kernels", reason="the compiled kernels are not built")
# "The Python API" below: the compiled backend's (fastloss itself, or built explicitly when
# FASTLOSS_BACKEND=numpy makes fastloss run on NumPy while the kernels are still built).
API = compiled_api()

MEAN, SUM = 0, 1
P, N_, INT, DBL, I64 = ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int, ctypes.c_double, ctypes.c_int64

_capsule_name = ctypes.pythonapi.PyCapsule_GetName
_capsule_name.restype, _capsule_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype, _capsule_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]


def c_kernel_name(loss: str, dtype, probabilities: bool = False, hess: bool = False) -> str:
    base = "cross_entropy_probs" if probabilities else loss
    return f"fl_{base}_grad{'_hess' if hess else ''}_{'f32' if np.dtype(dtype) == np.float32 else 'f64'}"


def c_signature(spec, probabilities: bool = False, hess: bool = False):
    """The argument types of the loss's C kernel, from the registry (``hess``: its
    ``_grad_hess`` twin: the Hessian's buffer after ``grad``, and ``hessian`` before
    ``reduction`` where the loss has a policy)."""
    scalars = [INT if p.type in (int, bool) else DBL for p in spec.params]  # a bool: int 0 or 1
    if hess and spec.hessian_policy is not None:
        scalars.append(DBL)
    outs = [P, P, P] if hess else [P, P]
    if spec.kind == "elementwise":
        return ([P, P] + ([P, N_] if spec.weight else []) + ([P, N_] if spec.operand else [])
                + outs + [N_] + scalars + [INT, INT])
    sizes = [N_, N_] + ([] if spec.max_input_dims == 2 else [N_])
    ignore = [I64] if spec.ignore_index and not probabilities else []
    return [P, P, P] + outs + sizes + ignore + scalars + [INT, INT]


# Where c_kernel takes the functions from: None, the extension's capsules; else a loaded
# libfastloss (set by the c_source fixture for the test it runs).
_SOURCE = {"library": None}
_LOADED = {}


def load_library(source: str):
    """libfastloss of ``source`` ("wheel" or "cmake"), loaded once."""
    if source not in _LOADED:
        path = wheel_library() if source == "wheel" else library_dir(cmake_install()) / "libfastloss.so"
        _LOADED[source] = ctypes.CDLL(str(path))
    return _LOADED[source]


@pytest.fixture(params=["extension", "wheel", "cmake"])
def c_source(request):
    """The C functions of a test: the extension's, or libfastloss's (the wheel's, CMake's)."""
    _SOURCE["library"] = None if request.param == "extension" else load_library(request.param)
    yield request.param
    _SOURCE["library"] = None


def c_kernel(loss: str, dtype, probabilities: bool = False, hess: bool = False):
    name = c_kernel_name(loss, dtype, probabilities, hess)
    if _SOURCE["library"] is None:
        capsule = kernels.__pyx_capi__[name]
        address = _capsule_pointer(capsule, _capsule_name(capsule))
    else:
        address = ctypes.cast(getattr(_SOURCE["library"], name), ctypes.c_void_p).value
    return ctypes.CFUNCTYPE(DBL, *c_signature(BY_NAME[loss], probabilities, hess))(address)


def ptr(a):
    return None if a is None else a.ctypes.data


def test_every_loss_and_dtype_is_exported():
    names = {c_kernel_name(s.name, d, hess=h) for s in LOSSES for d in DTYPES for h in (False, True)}
    names |= {c_kernel_name("cross_entropy", d, probabilities=True, hess=h) for d in DTYPES for h in (False, True)}
    assert set(kernels.__pyx_capi__) == names


# --------------------------------------------------------------------------- calls


def weight_block(w, shape):
    """The C level's (weight, weight_len): the weight's repeating block, or the full weight."""
    w = np.asarray(w)
    flat = np.ascontiguousarray(w).reshape(-1)
    n = math.prod(shape)
    if w.shape == tuple(shape[len(shape) - w.ndim:]) and (flat.size == 0 or n % flat.size == 0):
        return flat, flat.size  # full, last-axis or scalar weight: it repeats as it is
    full = np.ascontiguousarray(np.broadcast_to(w, shape)).reshape(-1)  # e.g. (N, 1)
    return full, full.size


def c_call(loss, x, t, kwargs, reduction, grad=None, losses=None, n_threads=0, hess=False):
    """(C function name, {argument: value}) of the loss's C kernel called on the same operands
    as the Python API call ``loss(x, t, **kwargs)``: buffers as arrays (or None for NULL),
    in the C signature's order. ``hess``: the ``_grad_hess`` kernel; False, or the Hessian's
    buffer (None for NULL)."""
    with_hess = hess is not False
    spec = BY_NAME[loss]
    probabilities = spec.probability_target and np.asarray(t).dtype.kind == "f"
    args = {"input": x, "target": t}
    if spec.kind == "elementwise":
        for name, taken in (("weight", spec.weight), (spec.operand, spec.operand)):
            if taken:
                w = kwargs.get(name)
                if w is None and spec.operand_domain is not None and name == spec.operand:
                    w = 0.5  # the Python API's default quantile: a one-value block
                if w is not None and np.ndim(w) == 0 and name == spec.operand:
                    w = np.asarray(w, x.dtype)
                block, size = (None, 0) if w is None else weight_block(w, x.shape)
                args[name], args[f"{name}_len"] = block, size
        args.update(grad=grad)
        if with_hess:
            args["hess"] = hess
        args.update(losses=losses, n=x.size)
    else:
        shape = x.shape if x.ndim > 1 else (1,) + x.shape
        w = kwargs.get("weight")
        args.update(weight=None if w is None else np.ascontiguousarray(w), grad=grad)
        if with_hess:
            args["hess"] = hess
        args.update(losses=losses, N=shape[0], C=shape[1])
        if spec.max_input_dims != 2:
            args["K"] = math.prod(shape[2:])
        if spec.ignore_index and not probabilities:
            args["ignore_index"] = kwargs.get("ignore_index", -100)
    for p in spec.params:
        args[p.name] = kwargs.get(p.name, p.default)
    if with_hess and spec.hessian_policy is not None:  # 0: exact, as the Python "exact"
        policy = kwargs.get("hessian", spec.hessian_policy)
        args["hessian"] = 0.0 if policy == "exact" else float(policy)
    args.update(reduction=reduction, n_threads=n_threads)
    return c_kernel_name(loss, x.dtype, probabilities, with_hess), args


def call_c(loss, x, t, kwargs, reduction, grad=None, losses=None, n_threads=0, override=(), hess=False):
    """Call the loss's C kernel as ``c_call`` says; ``override`` replaces C arguments by
    name (for the error tests)."""
    spec = BY_NAME[loss]
    probabilities = spec.probability_target and np.asarray(t).dtype.kind == "f"
    _, args = c_call(loss, x, t, kwargs, reduction, grad, losses, n_threads, hess)
    args.update(dict(override))
    values = [ptr(v) if isinstance(v, np.ndarray) else v for v in args.values()]
    return c_kernel(loss, x.dtype, probabilities, hess is not False)(*values)


def loss_shape(spec, x):
    if spec.kind == "elementwise":
        return x.shape
    return () if x.ndim == 1 else (x.shape[0],) + x.shape[2:]


CASES = one_case_per_param_set()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_c_kernel_equals_python_api(case, dtype, c_source):
    x, t, kwargs = case.generate(dtype)
    x = np.ascontiguousarray(x)
    t = np.ascontiguousarray(t)
    spec = case.spec
    fn = getattr(API, case.loss + "_grad")
    for reduction, code in (("mean", MEAN), ("sum", SUM)):
        expected_loss, expected_grad = fn(x, t, reduction=reduction, **kwargs)
        grad = np.full_like(x, np.nan)
        got = call_c(case.loss, x, t, kwargs, code, grad=grad)
        assert_bitwise(x.dtype.type(got), expected_loss, f"{reduction} loss")
        assert_bitwise(grad, expected_grad, f"{reduction} gradient")
        # loss only: no gradient buffer, the same loss
        assert_bitwise(x.dtype.type(call_c(case.loss, x, t, kwargs, code)), expected_loss, "loss only")
    # per-element losses: Python's reduction="none" (its gradient is the sum's)
    expected_none, expected_grad = fn(x, t, reduction="none", **kwargs)
    losses = np.full(loss_shape(spec, x), np.nan, x.dtype)
    grad = np.full_like(x, np.nan)
    call_c(case.loss, x, t, kwargs, SUM, grad=grad, losses=losses)
    assert_bitwise(losses, expected_none, "per-element losses")
    assert_bitwise(grad, expected_grad, "none gradient")


@pytest.mark.parametrize("n_threads", [1, 2, 3, 5000])
@pytest.mark.parametrize("loss", ["mse_loss", "binary_cross_entropy_with_logits", "cross_entropy"])
def test_c_kernel_threads_and_in_place(loss, n_threads, c_source):
    rng = np.random.default_rng(7)
    if loss == "cross_entropy":
        x = rng.normal(size=(30_000, 10)).astype(np.float32)
        t = rng.integers(0, 10, 30_000)
    else:
        x = rng.normal(size=300_000).astype(np.float32)
        t = (rng.random(300_000) < 0.5).astype(np.float32)
    expected_loss, expected_grad = getattr(API, loss + "_grad")(x, t)
    got = call_c(loss, x, t, {}, MEAN, grad=x, n_threads=n_threads)  # in place
    assert_bitwise(np.float32(got), expected_loss)
    assert_bitwise(x, expected_grad)


# --------------------------------------------------------------------------- bad arguments


def _bad_param_value(p):
    return 3 if p.type in (int, bool) else math.nan


def _error_overrides(spec, x, t):
    """(what, C argument overrides) that each must make the kernel refuse the call."""
    n_name = "n" if spec.kind == "elementwise" else "N"
    out = [
        ("negative size", {n_name: -1}),
        ("NULL input", {"input": None}),
        ("NULL target", {"target": None}),
        ("unknown reduction", {"reduction": 2}),
        ("negative n_threads", {"n_threads": -1}),
        ("grad overlapping the target", {"grad": t.ctypes.data}),
        ("grad overlapping the input, shifted", {"grad": x.ctypes.data + x.itemsize}),
        ("huge size", {n_name: 2**62}),
    ]
    out += [(f"{p.name} outside its domain", {p.name: _bad_param_value(p)}) for p in spec.params]
    if spec.kind == "elementwise" and spec.weight:
        out.append(("weight_len not dividing n", {"weight": x.ctypes.data, "weight_len": x.size - 1}))
        out.append(("weight_len 0", {"weight": x.ctypes.data, "weight_len": 0}))
    if spec.kind == "classes":
        out.append(("negative C", {"C": -1}))
    return out


def _bad_values(loss, x, t):
    """Operands whose values the loss refuses (None when it refuses none)."""
    spec = BY_NAME[loss]
    x, t = x.copy(), t.copy()
    if spec.input_domain == "unit":
        x.flat[-1] = 1.5
    elif spec.target_domain == "sign":
        t.flat[-1] = 0.5
    elif spec.kind == "classes":
        t.flat[-1] = x.shape[1]
    else:
        return None
    return x, t


def _valid_operands(loss, dtype):
    case = next(c for c in CASES if c.loss == loss and not c.params and c.form in ("values", "indices"))
    x, t, _ = case.generate(dtype)
    if x.ndim > 2:
        x, t = x.reshape(x.shape[0], x.shape[1], -1)[:, :, 0].copy(), t.reshape(t.shape[0], -1)[:, 0].copy()
    return np.ascontiguousarray(x), np.ascontiguousarray(t)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("loss", [s.name for s in LOSSES])
def test_bad_arguments_return_nan_and_write_nothing(loss, dtype, c_source):
    spec = BY_NAME[loss]
    x, t = _valid_operands(loss, dtype)
    bad = [(what, x, t, o) for what, o in _error_overrides(spec, x, t)]
    values = _bad_values(loss, x, t)
    if values is not None:
        bad.append(("values outside the loss's domain", *values, {}))
    for what, xi, ti, override in bad:
        grad = np.full_like(xi, 7.0)
        losses = np.full(loss_shape(spec, xi), 7.0, xi.dtype)
        got = call_c(loss, xi, ti, {}, MEAN, grad=grad if "grad" not in override else None,
                     losses=losses, override=override)
        assert math.isnan(got), f"{what}: returned {got}"
        assert (grad == 7).all() and (losses == 7).all(), f"{what}: an output was written"
    # and the valid call does write (the sentinels above could be seen)
    grad = np.full_like(x, 7.0)
    assert not math.isnan(call_c(loss, x, t, {}, MEAN, grad=grad)) and not (grad == 7).all()


PARAM_CANDIDATES = {float: [-math.inf, -1.0, -0.0, 0.0, 5e-324, 0.5, 1.0, 1.5, 2.0, 1e300, math.inf, math.nan],
                    int: [-1, 0, 1, 2, 3], bool: [-1, 0, 1, 2, 3]}


@pytest.mark.parametrize("loss", [s.name for s in LOSSES if s.params])
def test_parameter_domains_are_the_registry_ones(loss, c_source):
    """The C level restates each parameter's domain for nogil code (kernels.pyx: params_ok):
    it must refuse exactly the values the registry's rule refuses."""
    spec = BY_NAME[loss]
    x, t = _valid_operands(loss, np.float64)
    for p in spec.params:
        for value in PARAM_CANDIDATES[p.type]:
            got = call_c(loss, x, t, {}, SUM, override={p.name: value})
            assert math.isnan(got) == (not p.valid(value)), f"{p.name} = {value}: C level returned {got}"


def test_empty_inputs_follow_the_python_api(c_source):
    x = np.zeros(0, np.float64)
    assert math.isnan(call_c("mse_loss", x, x.copy(), {}, MEAN))  # mean of nothing
    assert call_c("mse_loss", x, x.copy(), {}, SUM) == 0.0
    # an empty size needs no buffer
    f = c_kernel("mse_loss", np.float64)
    assert f(None, None, None, 0, None, None, 0, SUM, 0) == 0.0


def test_class_weight_and_ignore_index(c_source):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 4, 3))
    t = rng.integers(0, 4, (50, 3))
    t[::7] = 9
    w = rng.uniform(0.5, 2, 4)
    kwargs = {"weight": w, "ignore_index": 9, "label_smoothing": 0.2}
    expected_loss, expected_grad = API.cross_entropy_grad(x, t, **kwargs)
    grad = np.empty_like(x)
    assert_bitwise(np.float64(call_c("cross_entropy", x, t, kwargs, MEAN, grad=grad)), expected_loss)
    assert_bitwise(grad, expected_grad)


def test_c_kernel_in_a_forked_child(tmp_path):
    """A child forked after the parent ran a parallel kernel calls the C level without
    hanging (libgomp cannot, so forked children run serially) and gets the same bits."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "fork_c_level.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path[:0] = {[str(Path(__file__).parent), str(Path(__file__).parent.parent / 'support')]!r}\n"
        "import numpy as np\n"
        "from test_c_level import call_c, MEAN\n"
        "x = np.random.default_rng(0).normal(size=2_000_000).astype(np.float32)\n"
        "t = np.zeros_like(x)\n"
        "parent = call_c('mse_loss', x, t, {}, MEAN, n_threads=2)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0 if call_c('mse_loss', x, t, {}, MEAN, n_threads=2) == parent else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n"
    )
    result = subprocess.run([sys.executable, str(script)], timeout=120, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("weight_value", [1e-45, 1e-40, 3e38], ids=["subnormal", "tiny", "huge"])
@pytest.mark.parametrize("loss", ["mse_loss", "hinge_loss", "cross_entropy", "nll_loss"])
def test_extreme_weight_sums_give_the_python_bits(loss, weight_value, c_source):
    """Weights whose sum makes 1 / sum not a normal float32 (subnormal sums; sums beyond the
    float32 range) are rescaled by a power of two at the C level as in the Python API, so the
    C level still gives the Python API's bits (it gave inf gradients before)."""
    spec = BY_NAME[loss]
    rng = np.random.default_rng(5)
    if spec.kind == "elementwise":
        x = rng.standard_normal(16).astype(np.float32)
        t = (np.sign(rng.standard_normal(16)) if spec.target_domain == "sign" else rng.standard_normal(16)).astype(np.float32)
        w = np.full(16, weight_value, np.float32)
    else:
        x = rng.standard_normal((8, 5)).astype(np.float32)
        t = rng.integers(0, 5, 8)
        w = np.full(5, weight_value, np.float32)
    py_loss, py_grad = getattr(API, loss + "_grad")(x, t, weight=w)
    grad = np.empty_like(x)
    c_loss = call_c(loss, x, t, {"weight": w}, MEAN, grad=grad)
    assert np.float32(c_loss).tobytes() == py_loss.tobytes(), (c_loss, py_loss)
    assert_bitwise(grad, py_grad)
    assert np.isfinite(grad).all()


# --------------------------------------------------------------------------- second order


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_c_grad_hess_kernel_equals_python_api(case, dtype, c_source):
    x, t, kwargs = case.generate(dtype)
    x, t = np.ascontiguousarray(x), np.ascontiguousarray(t)
    fn = getattr(API, case.loss + "_grad_hess")
    policies = [{}]
    if case.spec.hessian_policy is not None:
        policies += [{"hessian": "exact"}, {"hessian": 0.5}]
    for policy in policies:
        kw = dict(kwargs, **policy)
        for reduction, code in (("mean", MEAN), ("sum", SUM)):
            expected_loss, expected_grad, expected_hess = fn(x, t, reduction=reduction, **kw)
            grad, hess = np.full_like(x, np.nan), np.full_like(x, np.nan)
            got = call_c(case.loss, x, t, kw, code, grad=grad, hess=hess)
            assert_bitwise(x.dtype.type(got), expected_loss, f"{reduction} loss {policy}")
            assert_bitwise(grad, expected_grad, f"{reduction} gradient {policy}")
            assert_bitwise(hess, expected_hess, f"{reduction} hessian {policy}")


@pytest.mark.parametrize("name", [s.name for s in LOSSES])
def test_c_grad_hess_refusals_write_nothing(name, c_source):
    case = next(c for c in CASES if c.loss == name)
    x, t, kwargs = case.generate(np.float64)
    x, t = np.ascontiguousarray(x), np.ascontiguousarray(t)
    spec = BY_NAME[name]
    both = np.full((2,) + x.shape, 7.0)
    grad, hess = both[0], both[1]
    refusals = [
        ("a Hessian without a gradient", dict(grad=None, hess=hess)),
        ("grad and hess the same buffer", dict(grad=grad, hess=grad)),
        ("hess over the target", dict(grad=grad, hess=t if t.dtype == x.dtype else x[..., :0])),
    ]
    if spec.hessian_policy is not None:
        for bad in (-1.0, math.nan, math.inf):
            refusals.append((f"hessian={bad}", dict(grad=grad, hess=hess, override=(("hessian", bad),))))
    for what, kw in refusals:
        if kw.get("hess") is not None and kw["hess"].size == 0:
            continue  # integer targets: the overlap is tested through the gradient's own checks
        before = (x.copy(), np.array(t, copy=True))
        got = call_c(name, x, t, kwargs, MEAN, grad=kw.get("grad"), hess=kw.get("hess"),
                     override=kw.get("override", ()))
        assert math.isnan(got), what
        assert np.all(both == 7.0), what
        np.testing.assert_array_equal(x, before[0])
        np.testing.assert_array_equal(t, before[1])
    # in place: the Hessian may overwrite the input
    expected = getattr(API, name + "_grad_hess")(x, t, **kwargs)
    xin = x.copy()
    got = call_c(name, xin, t, kwargs, MEAN, grad=grad, hess=xin)
    assert_bitwise(x.dtype.type(got), expected[0], "loss, hess in place")
    assert_bitwise(xin, expected[2], "hess in place")
