"""Half precision in the NumPy API: float16 (either byte order) and ml_dtypes' bfloat16 input.

The rule (docs/API.md, "Dtypes"): a half-precision input computes in float32 on its upcast
values (a float32 copy), with float64 sums as every dtype; the loss is float32 (a scalar, or
the "none" array); the gradient and the Hessian are the float32 results rounded to the
input's dtype, or written to ``out`` when given, which may be of the input's half dtype
(rounded) or float32 (the float32 results themselves). Other operands of half dtypes are cast
to the compute dtype as any dtype.

The proof is bitwise: for every loss of the registry, every twin (NAME, NAME_grad,
NAME_grad_hess), reduction, both code paths' calls and both backends, the half-precision call
gives the bits of the same call on ``x.astype(np.float32)``, its gradient and Hessian those
bits cast with ``.astype(half)``. Half-precision results therefore inherit, on the upcast
values, the float32 accuracy bounds that tests/numerics/test_accuracy.py holds to mpmath
(then one rounding of the gradient to the half dtype), and no NaN or inf appears where the
float32 computation has none (the sums are float64: see the motivating cases below).

float16 tests run everywhere; the bfloat16 parts skip without ml_dtypes (the ``test`` extra).
"""

from __future__ import annotations

import numpy as np
import pytest

from adv_data_support import NAMES, PATHS, valid_call
from cases import CASES, all_error_cases, error_base
from fastloss._registry import BY_NAME
from helpers import assert_bitwise

HALVES = ["float16", ">f2", "bfloat16"]


def half_dtype(label):
    """The dtype of a label of HALVES (bfloat16: skips without ml_dtypes)."""
    if label == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(label)


def native(dtype):
    return dtype.newbyteorder("=") if dtype.kind == "f" else dtype


def twins(api, name):
    spec = BY_NAME[name]
    return [getattr(api, f) for f in spec.functions]


def _call(fn, x, t, kw, reduction, **extra):
    with np.errstate(all="ignore"):
        return fn(x, t, reduction=reduction, **kw, **extra)


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def _calls(name):
    """(path, form, (x, t, kw)) of valid float32 calls: both code paths' calls, every target
    form of the loss's test record."""
    out = []
    for form in CASES[name].forms:
        for path in PATHS:
            out.append((path, form, valid_call(name, path, np.float32, form=form)))
    return out


def _expected(api, name, grad, x32, t, kw, reduction, half):
    """The float32 call's results, the gradient and Hessian cast to the half dtype."""
    result = _as_tuple(_call(twins(api, name)[grad], x32, t, kw, reduction))
    return (result[0],) + tuple(r.astype(half) for r in result[1:])


@pytest.mark.parametrize("label", HALVES)
@pytest.mark.parametrize("name", NAMES)
def test_half_input_computes_as_its_float32_upcast(api, name, label):
    """Every twin, reduction and call (both code paths' calls, every target form): the bits
    of the call on the float32 upcast; the loss float32, the gradient and Hessian in the
    input's dtype (native byte order)."""
    dtype = half_dtype(label)
    for path, form, (x, t, kw) in _calls(name):
        x16 = x.astype(dtype)
        x32 = x16.astype(np.float32)
        for reduction in BY_NAME[name].reductions:
            for grad in (0, 1, 2):
                what = f"{path} call, {form}, {reduction}, twin {grad}"
                got = _as_tuple(_call(twins(api, name)[grad], x16, t, kw, reduction))
                want = _expected(api, name, grad, x32, t, kw, reduction, native(dtype))
                assert len(got) == len(want), what
                for g, w, part in zip(got, want, ("loss", "grad", "hess")):
                    assert_bitwise(g, w, f"{what}: {part}")
                assert np.asarray(got[0]).dtype == np.float32, what
                for g in got[1:]:
                    assert g.dtype == native(dtype), what


@pytest.mark.parametrize("label", HALVES)
@pytest.mark.parametrize("name", NAMES)
def test_half_operands_are_cast_to_the_compute_dtype(api, name, label):
    """A half input with half target, probabilities and weights (elementwise and class
    weights, pos_weight): the call on the float32 casts of all of them; with a float64
    input, half operands are cast to float64 as any dtype."""
    dtype = half_dtype(label)
    spec = BY_NAME[name]
    for path, form, (x, t, kw) in _calls(name):
        cast_t = spec.kind == "elementwise" or form == "probabilities"
        t16 = t.astype(dtype) if cast_t else t
        kw16 = {k: (v.astype(dtype) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
        for compute, x_in in ((np.float32, x.astype(dtype)), (np.float64, x.astype(np.float64))):
            x_c = x_in.astype(compute)
            t_c = t16.astype(compute) if cast_t else t
            kw_c = {k: (v.astype(compute) if isinstance(v, np.ndarray) else v) for k, v in kw16.items()}
            for reduction in ("mean", "none"):
                for grad in (0, 2):
                    what = f"{path} call, {form}, input {np.dtype(compute).name if compute is np.float64 else label}"
                    got = _as_tuple(_call(twins(api, name)[grad], x_in, t16, kw16, reduction))
                    want = _as_tuple(_call(twins(api, name)[grad], x_c, t_c, kw_c, reduction))
                    if x_in.dtype != compute:
                        want = (want[0],) + tuple(r.astype(native(dtype)) for r in want[1:])
                    for g, w in zip(got, want):
                        assert_bitwise(g, w, f"{what}, {reduction}, twin {grad}")


@pytest.mark.parametrize("label", HALVES)
@pytest.mark.parametrize("name", NAMES)
def test_out_of_the_half_dtype_or_float32(api, name, label):
    """``out`` of the input's half dtype (either byte order for float16, any layout, the
    input itself) receives the rounded gradient; a float32 ``out`` the float32 gradient
    itself. Either way the twin returns ``out``."""
    dtype = half_dtype(label)
    outs = [dtype, native(dtype), np.dtype(np.float32), np.dtype(">f4")]
    (x, t, kw), = [c for p, f, c in _calls(name)[:1]]
    x16 = x.astype(dtype)
    x32 = x16.astype(np.float32)
    for reduction in BY_NAME[name].reductions:
        for out_dtype in outs:
            for layout in ("contiguous", "fortran", "strided"):
                def make():
                    if layout == "fortran":
                        return np.asfortranarray(np.full(x.shape, 7, out_dtype))
                    if layout == "strided":
                        return np.full(x.shape[:-1] + (2 * x.shape[-1],), 7, out_dtype)[..., ::2]
                    return np.full(x.shape, 7, out_dtype)
                what = f"out {out_dtype} ({layout}), {reduction}"
                want = _call(twins(api, name)[2], x32, t, kw, reduction)
                o = make()
                loss, g = _call(twins(api, name)[1], x16, t, kw, reduction, out=o)
                assert g is o, what
                assert_bitwise(loss, want[0], what)
                assert_bitwise(np.asarray(g, native(out_dtype)), want[1].astype(native(out_dtype)), what)
                o, h = make(), make()
                result = _call(twins(api, name)[2], x16, t, kw, reduction, out=(o, h))
                assert result[1] is o and result[2] is h, what
                assert_bitwise(np.asarray(h, native(out_dtype)), want[2].astype(native(out_dtype)), what)
        # in place: out is the half input itself
        xi = x16.copy()
        loss, g = _call(twins(api, name)[1], xi, t, kw, reduction, out=xi)
        assert g is xi
        assert_bitwise(np.asarray(g, native(dtype)),
                       _call(twins(api, name)[1], x32, t, kw, reduction)[1].astype(native(dtype)), "in place")


@pytest.mark.parametrize("label", HALVES)
def test_out_of_another_dtype_is_refused_before_anything_is_written(api, label):
    """float64, and the other half dtype, are no ``out`` of a half input: ValueError naming
    ``out``, what it got and what it accepts; nothing written (``out`` nor the input)."""
    dtype = half_dtype(label)
    x, t, kw = valid_call("mse_loss", "fast", np.float32)
    x16 = x.astype(dtype)
    refused = [np.dtype(np.float64), np.dtype(np.int16)]
    if label == "bfloat16":
        refused.append(np.dtype(np.float16))
    else:
        try:
            import ml_dtypes
            refused.append(np.dtype(ml_dtypes.bfloat16))
        except ImportError:
            pass
    for out_dtype in refused:
        o = np.full(x.shape, 7, out_dtype)
        before, x_before = o.tobytes(), x16.tobytes()
        with pytest.raises(ValueError) as info:
            _call(api.mse_loss_grad, x16, t, kw, "mean", out=o)
        message = str(info.value)
        assert "out" in message and str(out_dtype) in message and "float32" in message, message
        assert o.tobytes() == before and x16.tobytes() == x_before
    # a float32 input takes no half out
    o = np.full(x.shape, 7, dtype)
    with pytest.raises(ValueError, match="out"):
        api.mse_loss_grad(x, t, out=o)


def test_the_fast_path_declines_half_input():
    """The compiled fast path takes float32 and float64 only: a half input (or a half out of
    a float32 input) is declined (None) to the general path, never read as other bits."""
    fastloss = pytest.importorskip("fastloss")
    if fastloss.get_backend() != "cython":
        pytest.skip("no compiled backend")
    from fastloss import kernels
    dtypes = [np.dtype(np.float16), np.dtype(">f2")]
    try:
        import ml_dtypes
        dtypes.append(np.dtype(ml_dtypes.bfloat16))
    except ImportError:
        pass
    for dtype in dtypes:
        x = np.linspace(-2, 2, 12).astype(dtype).reshape(3, 4)
        for name in ("mse_loss", "cross_entropy"):
            fast = kernels.KERNELS[BY_NAME[name].kernel_name].fast
            if BY_NAME[name].kind == "elementwise":
                t = np.zeros_like(x)
                args = (x, t, None)
            else:
                t = np.zeros(3, np.int64)
                args = (x, t, -100)
            for want in (0, 1, 2):
                assert fast(*args, "mean", None, None, want, "exact") is None, (dtype, name, want)
            x32 = x.astype(np.float32)
            t32 = t.astype(np.float32) if t.dtype != np.int64 else t
            assert fast(x32, t32, args[2], "mean", None, np.zeros(x.shape, dtype), 1, "exact") is None


# --------------------------------------------------------------------------- the cases


def test_float16_cross_entropy_whose_float16_sum_overflows():
    """float16 cross entropy over 65536 rows, whose loss sum is beyond float16's range
    (65504): the finite float32 results ("sum" and "mean"), bitwise those of the float32
    upcast, not the inf / NaN of a float16 accumulator."""
    import fastloss as fl
    import fastloss.numpy_backend as nb
    rng = np.random.default_rng(14)
    n, c = 65536, 8
    x = (rng.standard_normal((n, c)) * 4).astype(np.float16)
    t = rng.integers(0, c, n)
    x32 = x.astype(np.float32)
    for api in {fl, nb}:
        total = api.cross_entropy(x, t, reduction="sum")
        mean = api.cross_entropy(x, t)
        assert np.isfinite(total) and total > np.finfo(np.float16).max, total
        assert total.dtype == np.float32 and mean.dtype == np.float32
        assert_bitwise(total, api.cross_entropy(x32, t, reduction="sum"))
        assert_bitwise(mean, api.cross_entropy(x32, t))
        with np.errstate(over="ignore"):  # what a float16 accumulator gives
            assert np.isinf(np.sum(api.cross_entropy(x, t, reduction="none").astype(np.float16), dtype=np.float16))
        loss, grad = api.cross_entropy_grad(x, t, reduction="sum")
        assert grad.dtype == np.float16 and np.isfinite(grad).all()
        assert_bitwise(loss, total)


def test_bfloat16_sum_of_a_million_terms_is_exact():
    """mse of 10**6 ones against zeros, bfloat16: "sum" is exactly 10**6 (float64 sums), where
    a bfloat16 accumulator (ml_dtypes' own sum) stops at 256."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    import fastloss as fl
    import fastloss.numpy_backend as nb
    bf16 = ml_dtypes.bfloat16
    x = np.ones(10**6, bf16)
    t = np.zeros(10**6, bf16)
    assert float(np.sum((x - t) ** 2)) == 256.0  # the accumulator the rule avoids
    for api in {fl, nb}:
        total = api.mse_loss(x, t, reduction="sum")
        assert total.dtype == np.float32 and total == 10**6
        assert api.mse_loss(x, t) == 1.0
        loss, grad, hess = api.mse_loss_grad_hess(x, t, reduction="sum")
        assert loss == 10**6 and grad.dtype == np.dtype(bf16) and (grad == 2).all() and (hess == 2).all()


def test_a_gradient_beyond_the_half_range_rounds_to_inf_without_a_warning(api):
    """The float32 gradient of BCE at input 1e-6 (about -1e6) is beyond float16's range: it
    rounds to -inf in a float16 gradient (returned or ``out``), silently, as the contract
    says, and stays finite in a float32 ``out``."""
    import warnings
    x = np.array([1e-6, 0.5], np.float16)
    t = np.array([1.0, 0.0], np.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, grad = api.binary_cross_entropy_grad(x, t, reduction="sum")
        _, into = api.binary_cross_entropy_grad(x, t, reduction="sum", out=np.zeros(2, np.float16))
    _, wide = api.binary_cross_entropy_grad(x, t, reduction="sum", out=np.zeros(2, np.float32))
    assert grad[0] == -np.inf and into[0] == -np.inf and grad[1] == into[1] == 2
    assert np.isfinite(wide).all() and wide[0] < -np.finfo(np.float16).max


@pytest.mark.parametrize("error", all_error_cases(), ids=str)
def test_errors_of_a_half_call_are_raised_before_anything_is_written(api, error):
    """Every documented error (tests/support/cases.py), with a float16 input and ``out`` of
    float16, or the input itself: the same exception, nothing written to ``out``, the input or
    any operand."""
    x, t, kw = error_base(error.loss, np.float32)
    bx, bt, bkw = error.build(x.astype(np.float16), t, kw)
    arrays = [a for a in [bx, bt, *bkw.values()] if isinstance(a, np.ndarray)]
    before = [a.copy() for a in arrays]
    outs = [np.full(np.shape(x), -7.25, np.float16)]
    if isinstance(bx, np.ndarray) and bx.dtype == np.float16 and bx.flags.writeable and bx.shape == np.shape(x):
        outs.append(bx)
    for out in outs:
        with pytest.raises(error.exc):
            with np.errstate(all="ignore"):
                twins(api, error.loss)[1](bx, bt, out=out, **bkw)  # (bkw may hold a bad reduction)
        assert (outs[0] == -7.25).all(), "out written by a refused call"
        for a, b in zip(arrays, before):
            assert_bitwise(a, b, "an operand changed by a refused call")
