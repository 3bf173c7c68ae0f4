"""Accuracy to the last bits: every loss and gradient against its exact value (mpmath, see
``reference.exact_terms``) on adversarial inputs, with a bound in ULP per loss and dtype.

The inputs are chosen to break naive formulas: logits up to +-1e4, +-1e30 and the largest
finite value, tiny losses (BCE at x = -40, softmax rows whose target dominates), probabilities
at 0 and 1, huge, subnormal and exactly cancelling residuals, values near overflow, and every
kink of every loss. The exact value is that of the documented formula on the exact binary
values of the float inputs and parameters (parameters are chosen representable in float32).

How the error is measured: per element (``reduction="none"``) and per gradient component,
``|fastloss - exact| / ulp(exact)`` with ``ulp`` the spacing of the dtype at the exact value
(the subnormal spacing below the normal range). A result whose exact value rounds beyond the
dtype's largest finite value must be inf of the right sign. Where the formula itself
subtracts two nearly equal terms (sigmoid(x) - y for soft targets y, softmax - q for class
probabilities and label smoothing) no rounded implementation can be accurate relative to the
tiny difference; there the error is in ULP of the larger subtracted term (``terms`` of
``reference.exact_terms``). Likewise a loss whose formula's own terms cancel where no
implementation in the working precision keeps its relative accuracy (the deviances near their
optimum mu = y, where d is far below its terms, of size 2 y^(2-p)) is measured in ULP of
max(|loss|, those terms) (the record's ``exact_loss_terms``). Reductions: the sum and mean against the exact sum of the exact
terms, within a relative bound that follows from the per-term bound and float64 summation.

BOUNDS below holds the bound per backend, SIMD level, loss and dtype, from each loss's record
(tests/support/losses.py, with its inputs): the worst error measured on these inputs, rounded
up to the next half ULP (test_bounds_are_tight keeps them that tight). The results depend
on the machine: the compiled kernels on fastloss's SIMD level (``fastloss.kernels.simd_level()``;
FASTLOSS_SIMD caps it), the NumPy backend on the level NumPy's own float32 exp/log loops
dispatch to (NPY_DISABLE_CPU_FEATURES lowers it), so each test takes the bounds of the levels
of the machine it runs on.

Known limits (intermediate overflow, left out of the inputs, each noted where it applies):
a residual x - y beyond the dtype's maximum (x = max, y = -max) is inf even where a Huber
loss with delta < 1/2 of it would be finite; w * r**2 is inf when r**2 overflows even if
w < 1 would bring it back; with label smoothing or class probabilities, -log p summed over
classes overflows for logits at the dtype's maximum (PyTorch alike: inf or 0 * inf = NaN).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

import reference
from fastloss._registry import BY_NAME, LOSSES
from helpers import loss_fn
from loss_inputs import F32, F64
from losses import REFERENCES, referenced_losses

mpmath = pytest.importorskip("mpmath")

DTYPES = (F32, F64)


# --------------------------------------------------------------------------- ULP


def _ulp(value, dtype):
    """The spacing of ``dtype`` at the mpf ``value`` (the subnormal spacing below the normal range)."""
    info = np.finfo(dtype)
    digits = info.nmant + 1
    if value == 0:
        return mpmath.ldexp(1, info.minexp - digits + 1)
    _, exponent = mpmath.frexp(value)  # value = m * 2**exponent, 0.5 <= |m| < 1
    return mpmath.ldexp(1, max(exponent - 1, info.minexp) - digits + 1)


def _overflows(value, dtype):
    info = np.finfo(dtype)
    limit = mpmath.mpf(float(info.max)) + _ulp(mpmath.mpf(float(info.max)), dtype) / 2
    return abs(value) >= limit


def ulp_errors(computed, exact, dtype, terms=None):
    """Per-element error of ``computed`` (array of ``dtype``) in ULP of ``exact`` (object
    array of mpf), or of ``max(|exact|, terms)`` when ``terms`` is given."""
    computed = np.asarray(computed)
    out = np.empty(computed.shape)
    with mpmath.workprec(reference.EXACT_PREC):
        for i in np.ndindex(computed.shape):
            c, e = float(computed[i]), exact[i]
            if _overflows(e, dtype):
                out[i] = 0.0 if c == (math.inf if e > 0 else -math.inf) else math.inf
                continue
            if not math.isfinite(c):
                out[i] = math.inf
                continue
            scale = abs(e) if terms is None else max(abs(e), terms[i])
            out[i] = float(abs(mpmath.mpf(c) - e) / _ulp(scale, dtype))
    return out


def test_ulp_measure():
    """The measure itself: 1 ULP is 1 ULP at 1, below 1, at the subnormals and at max."""
    for dtype in DTYPES:
        info = np.finfo(dtype)
        for v in (1.0, 0.75, 3.0, float(info.tiny), float(info.smallest_subnormal) * 3, float(info.max) / 2):
            v = dtype.type(v)
            up = np.nextafter(v, dtype.type(np.inf))
            exact = np.array([mpmath.mpf(float(v))], object)
            assert ulp_errors(np.array([up]), exact, dtype)[0] == 1.0, (dtype, v)
            assert ulp_errors(np.array([v]), exact, dtype)[0] == 0.0
        big = np.array([mpmath.mpf(float(info.max)) * 2], object)
        assert ulp_errors(np.array([np.inf], dtype), big, dtype)[0] == 0
        assert ulp_errors(np.array([info.max], dtype), big, dtype)[0] == math.inf
        assert ulp_errors(np.array([-np.inf], dtype), big, dtype)[0] == math.inf


# --------------------------------------------------------------------------- inputs
# Each loss's accuracy variants, (id, builder(dtype) -> (x, t, kwargs)), are in its record
# (tests/support/losses.py: accuracy_variants), built from tests/support/loss_inputs.py.


def variants():
    return [(spec.name, vid, build) for spec in referenced_losses()
            for vid, build in REFERENCES[spec.name].accuracy_variants]


VARIANTS = {(name, vid): build for name, vid, build in variants()}


@functools.lru_cache(maxsize=None)
def accuracy_case(name, vid, dtype_name):
    """(x, t, kwargs, exact loss terms, exact grad, subtracted terms): computed once."""
    dtype = np.dtype(dtype_name)
    x, t, kw = VARIANTS[(name, vid)](dtype)
    loss, grad, terms = reference.exact_terms(name, x, t, kw)
    return x, t, kw, loss, grad, terms


@functools.lru_cache(maxsize=None)
def loss_terms_case(name, vid, dtype_name):
    """The magnitudes the loss formula cancels per term (``exact_loss_terms`` of the
    record: the deviances near their optimum), or None."""
    x, t, kw, *_ = accuracy_case(name, vid, dtype_name)
    return reference.exact_loss_terms(name, x, t, kw)


def measure(api, name, vid, dtype):
    """Worst ULP errors (loss, grad) of one variant, and where."""
    x, t, kw, e_loss, e_grad, terms = accuracy_case(name, vid, np.dtype(dtype).name)
    with np.errstate(all="ignore"):
        loss, grad = loss_fn(api, name, grad=True)(x, t, reduction="none", **kw)
    loss_err = ulp_errors(loss, e_loss, dtype, loss_terms_case(name, vid, np.dtype(dtype).name))
    grad_err = ulp_errors(grad, e_grad, dtype, terms)
    return loss_err, grad_err, (x, t, loss, grad)


# --------------------------------------------------------------------------- bounds

SIMD_LEVELS = ("avx512", "avx2", "baseline")


def compiled_simd_level():
    """The level the compiled kernels run at here: x86-64-v4 (AVX-512), v3 (AVX2 + FMA) or
    the x86-64 baseline (SSE2), as ``fastloss.kernels.simd_level()`` reports it."""
    from fastloss import kernels

    name = kernels.simd_level()
    for prefix, level in (("AVX-512", "avx512"), ("AVX2", "avx2"), ("baseline", "baseline")):
        if name.startswith(prefix):
            return level
    raise AssertionError(f"unknown SIMD level {name!r}")


def numpy_simd_level():
    """The level NumPy's own SIMD loops (float32 exp, log, log1p: the NumPy backend's
    results) dispatch to here: x86-64-v4 (AVX-512), v3 (AVX2 + FMA3) or NumPy's baseline.
    Different levels are different implementations, so different last bits."""
    from numpy._core._multiarray_umath import __cpu_features__ as features

    if "X86_V4" in features:  # NumPy >= 2.4 names the x86-64 levels
        v4, v3 = features["X86_V4"], features["X86_V3"]
    else:
        v4 = features.get("AVX512_SKX", False)
        v3 = features.get("AVX2", False) and features.get("FMA3", False)
    return "avx512" if v4 else "avx2" if v3 else "baseline"


# ULP bounds per backend, SIMD level, loss and dtype: (loss, gradient), from each loss's record
# (tests/support/losses.py: ulp_bounds for the compiled kernels, numpy_ulp_bounds where the
# NumPy backend's differ; a bound may be one per SIMD level). Each is the worst error
# measured on the inputs above at that level, rounded up to the next half ULP (measured on an
# AVX-512 machine at all three levels: FASTLOSS_SIMD=avx2 / baseline for the kernels,
# NPY_DISABLE_CPU_FEATURES="X86_V4 ..." / "X86_V3 X86_V4 ..." for NumPy 2.4).
# Notes:
# * the NumPy backend computes exp, log and log1p with NumPy's own SIMD loops in float32
#   (one implementation per level) and glibc's libm in float64; its BCE-with-logits in
#   float32 rounds log1p(exp(-|x|)) twice (worst with NumPy's AVX-512 exp/log).
# * the compiled kernels meet the same bounds on every level (the baseline level, without
#   FMA, differs only in last bits below the bounds, e.g. float64 BCE 1.94 ULP vs 1.57).


def _at_level(bound, level):
    return bound[level] if isinstance(bound, dict) else bound


def _table(backend, level):
    """{loss: {dtype: (loss bound, gradient bound)}} of a backend at a SIMD level."""
    out = {}
    for spec in referenced_losses():
        record = REFERENCES[spec.name]
        differences = record.numpy_ulp_bounds if backend == "numpy" else {}
        out[spec.name] = {np.dtype(dtype): _at_level(differences.get(dtype, bound), level)
                          for dtype, bound in record.ulp_bounds.items()}
    return out


# BOUNDS[backend][level][loss][dtype] = (loss bound, gradient bound) in ULP
BOUNDS = {backend: {level: _table(backend, level) for level in SIMD_LEVELS} for backend in ("cython", "numpy")}

dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
variant_params = pytest.mark.parametrize("name,vid", list(VARIANTS), ids=[f"{n}-{v}" for n, v in VARIANTS])


def _backend_name(api):
    return api.NAME if hasattr(api, "NAME") else api.get_backend()


def _level(api):
    """The SIMD level ``api``'s results depend on, on this machine."""
    return numpy_simd_level() if _backend_name(api) == "numpy" else compiled_simd_level()


def bounds_for(api):
    """The bounds of ``api``'s backend at the SIMD level it runs at on this machine."""
    return BOUNDS[_backend_name(api)][_level(api)]


def test_every_loss_and_parameter_has_variants_and_bounds():
    """Driven by the registry: a loss (or a parameter, weight or target form) added without
    an accuracy variant and bound fails here."""
    for by_level in BOUNDS.values():
        assert set(by_level) == set(SIMD_LEVELS)
        for table in by_level.values():
            assert set(table) == set(BY_NAME)
            assert all(set(by_dtype) == set(DTYPES) for by_dtype in table.values())
    for spec in LOSSES:
        ids = [vid for name, vid in VARIANTS if name == spec.name]
        assert ids, spec.name
        text = " ".join(ids)
        for p in spec.params:
            assert p.name in text, (spec.name, p.name)
        assert ("weight" in text) == bool(spec.weight), spec.name
        assert ("pos_weight" in text) == spec.pos_weight
        assert ("ignore_index" in text) == spec.ignore_index
        assert ("probabilities" in text) == spec.probability_target


@dtypes
@variant_params
def test_loss_and_gradient_within_ulp_bound(api, name, vid, dtype):
    """Within the bound of the SIMD level this machine runs ``api`` at."""
    loss_bound, grad_bound = bounds_for(api)[name][dtype]
    loss_err, grad_err, (x, t, loss, grad) = measure(api, name, vid, dtype)
    worst = np.unravel_index(np.argmax(loss_err), loss_err.shape)
    assert loss_err.max() <= loss_bound, (
        f"loss off by {loss_err.max():.3g} ULP > {loss_bound} at {worst}: {loss[worst]!r}")
    worst = np.unravel_index(np.argmax(grad_err), grad_err.shape)
    assert grad_err.max() <= grad_bound, (
        f"gradient off by {grad_err.max():.3g} ULP > {grad_bound} at {worst}: {grad[worst]!r}")


def test_bounds_are_tight(api):
    """A bound more than half an ULP above the worst error measured on its inputs is stale.
    Machine-dependent: checks the bounds of the SIMD level ``api`` runs at here (run it under
    FASTLOSS_SIMD and NPY_DISABLE_CPU_FEATURES caps to check the other levels)."""
    level = _level(api)
    worst = {}
    for name, vid in VARIANTS:
        for dtype in DTYPES:
            loss_err, grad_err, _ = measure(api, name, vid, dtype)
            w = worst.setdefault((name, dtype), [0.0, 0.0])
            w[0], w[1] = max(w[0], loss_err.max()), max(w[1], grad_err.max())
    for (name, dtype), (loss_worst, grad_worst) in worst.items():
        loss_bound, grad_bound = bounds_for(api)[name][dtype]
        assert loss_bound - loss_worst < 0.5, (level, name, dtype.name, "loss", loss_worst)
        assert grad_bound - grad_worst < 0.5, (level, name, dtype.name, "grad", grad_worst)


# --------------------------------------------------------------------------- reductions


def _exact_sum(values, loss_terms=None):
    """The exact sum, and the sum of the magnitudes each term's error is relative to (|term|,
    or the larger term it subtracts: ``loss_terms``)."""
    with mpmath.workprec(reference.EXACT_PREC):
        flat = values.reshape(-1)
        scales = flat if loss_terms is None else [max(abs(v), s) for v, s in zip(flat, loss_terms.reshape(-1))]
        return mpmath.fsum(flat), mpmath.fsum(abs(v) for v in scales)


def _representable_terms(x, t, kw, e_loss, e_grad, terms, dtype, loss_terms=None):
    """The elements (rows of class losses) whose exact terms the reduction test keeps (and
    their ``loss_terms``, last)."""
    limit = np.finfo(dtype).max / (4 * e_loss.size) if dtype == F64 else None
    with mpmath.workprec(reference.EXACT_PREC):
        bad = np.vectorize(lambda v: bool(_overflows(v, dtype) or (limit is not None and abs(v) > limit)),
                           otypes=[bool])(e_loss)
    if not bad.any():
        return x, t, kw, e_loss, e_grad, terms, loss_terms
    if e_loss.shape == x.shape:  # elementwise: weights are full-shaped here
        keep = ~bad
        kw = {k: (v[keep] if isinstance(v, np.ndarray) and v.shape == x.shape else v) for k, v in kw.items()}
        return (x[keep], t[keep], kw, e_loss[keep], e_grad[keep], terms[keep],
                None if loss_terms is None else loss_terms[keep])
    keep = ~bad.reshape(len(x), -1).any(axis=1)  # class losses: whole rows (first axis)
    return x[keep], t[keep], kw, e_loss[keep], e_grad[keep], terms[keep], loss_terms


@dtypes
@variant_params
def test_sum_and_mean_within_relative_bound(api, name, vid, dtype):
    """"sum" and "mean" against the exact sum of the exact terms. Each term is within
    B ULP (BOUNDS), i.e. B * 2**(1-p) relative; the float64 sum adds at most n * 2**-53
    of the sum of |terms|, and the result is rounded once to the dtype (half an ULP). A
    total (or mean) whose exact value overflows the dtype must be inf; a float32 mean whose
    sum overflows float32 must not (the sum runs in float64). The mean's gradient is the
    "sum" gradient times 1/divisor rounded to the dtype: two more roundings, each at most
    one ULP of the result.

    Left out of the reduced call: terms whose exact value overflows the dtype (checked per
    term above), and, in float64, terms above max / (4 n): float64 input whose terms are
    near the float64 maximum can overflow the float64 accumulator on the way to a
    representable total (a known limit: there is no wider type; only float32 has headroom)."""
    loss_bound, grad_bound = bounds_for(api)[name][dtype]
    x, t, kw, e_loss, e_grad, terms = accuracy_case(name, vid, dtype.name)
    x, t, kw, e_loss, e_grad, terms, loss_terms = _representable_terms(
        x, t, kw, e_loss, e_grad, terms, dtype, loss_terms_case(name, vid, dtype.name))
    info = np.finfo(dtype)
    total, magnitude = _exact_sum(e_loss, loss_terms)  # each term within B ULP of max(|term|, what it cancels)
    x64, t64, kw64 = reference._float64_args(x, t, kw)
    with np.errstate(all="ignore"):  # the formula's terms may overflow; its divisor does not
        divisor = REFERENCES[name].formula(x64, t64, **kw64)[1]
    f = loss_fn(api, name, grad=True)
    with np.errstate(all="ignore"):
        got_sum = f(x, t, reduction="sum", **kw)[0]
        got_mean, grad_mean = f(x, t, reduction="mean", **kw)
    slack = (loss_bound * 2.0 ** -info.nmant + e_loss.size * 2.0 ** -53) * magnitude
    with mpmath.workprec(reference.EXACT_PREC):
        for what, got, exact, scale in (("sum", got_sum, total, 1), ("mean", got_mean, total / divisor, divisor)):
            if _overflows(exact, dtype):
                assert got == (np.inf if exact > 0 else -np.inf), (what, float(got), float(exact))
                continue
            err = abs(mpmath.mpf(float(got)) - exact)
            assert err <= slack / scale + _ulp(exact, dtype) / 2, (what, float(got), float(exact))
        grad_err = ulp_errors(grad_mean, e_grad / divisor, dtype, terms / divisor)
    assert grad_err.max() <= grad_bound + 2, grad_err.max()


# --------------------------------------------------------------------------- vs PyTorch

# Inputs where PyTorch (2.13, CPU) loses precision, from the records (torch_loses): the
# tails of BCE with logits (its loss is a difference of two numbers near |x|; its float32
# gradient 1 - sigmoid cancels), the tiny losses of confident softmax rows (log(s) with
# s = 1 + tiny), multi-margin hinges against huge scores (margin - x_y rounds the margin away).
TORCH_LOSES = {(spec.name, np.dtype(dtype)): xt for spec in referenced_losses()
               for dtype, xt in REFERENCES[spec.name].torch_loses.items()}
TORCH_LOSS_ULPS = 1000  # what "PyTorch loses precision" means here: worse than this


def _torch_none(name, x, t):
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    out = reference.torch_function(name)(xt, torch.tensor(t), reduction="none")
    out.sum().backward()
    return out.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("name,dtype", list(TORCH_LOSES), ids=[f"{n}-{d.name}" for n, d in TORCH_LOSES])
def test_accurate_where_pytorch_is_not(api, name, dtype):
    """fastloss within its bound on every element; PyTorch (in the same dtype) off by more
    than TORCH_LOSS_ULPS on some element, loss and gradient. The PyTorch part is skipped
    without torch; the fastloss part always runs."""
    x, t = TORCH_LOSES[(name, dtype)]
    e_loss, e_grad, terms = reference.exact_terms(name, x, t, {})
    loss_terms = reference.exact_loss_terms(name, x, t, {})
    loss, grad = loss_fn(api, name, grad=True)(x, t, reduction="none")
    loss_bound, grad_bound = bounds_for(api)[name][dtype]
    assert ulp_errors(loss, e_loss, dtype, loss_terms).max() <= loss_bound
    assert ulp_errors(grad, e_grad, dtype, terms).max() <= grad_bound
    assert (loss > 0).all(), "every one of these losses is positive, however small"
    if not reference.HAVE_TORCH:
        pytest.skip("the PyTorch comparison needs torch")
    t_loss, t_grad = _torch_none(name, x, t)
    assert ulp_errors(t_loss, e_loss, dtype, loss_terms).max() > TORCH_LOSS_ULPS
    assert ulp_errors(t_grad, e_grad, dtype, terms).max() > TORCH_LOSS_ULPS
