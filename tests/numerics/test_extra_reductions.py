"""Reductions beyond "mean", "sum" and "none" (the registry's ``extra_reductions``): today
kl_div's ``"batchmean"``, PyTorch's KL divergence per sample: the summed loss divided by
``input.shape[0]`` (a 0-d input is not divided), its gradient and Hessian scaled by the same
divisor.

* Against PyTorch (``F.kl_div(..., reduction="batchmean")``, float64 autograd on the same
  values; the float64 formula without torch), every shape, both dtypes, both backends.
* Exactly the "sum" results scaled: the loss is the float64 total divided by the batch size,
  rounded once; the gradient and Hessian are the "sum" ones times (T)(1 / B), bit for bit.
* Edges: 0-d (the sum), an empty batch (0, C): NaN, an empty row (N, 0): 0.
* The compiled fast path leaves it to the general path (same bits as a ``np.str_``), every
  thread count gives the same bits, ``out=`` works.
* Every other loss refuses it, with the same ValueError listing its own choices.
* The C level: FASTLOSS_SUM scaled by the caller (docs/API.md, kernels.pxd) gives the
  Python API's bits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import reference
from cases import DTYPES, cases_of
from fastloss._registry import BY_NAME, EXTRA_REDUCTIONS, LOSSES, REDUCTIONS
from helpers import assert_bitwise, assert_grad_close, assert_value_close, check_result_types, rtol_for
from losses import REFERENCES

EXTRA = [(spec.name, r) for spec in LOSSES for r in spec.extra_reductions]
WITHOUT = [spec.name for spec in LOSSES if "batchmean" not in spec.reductions]
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)

SHAPES = [(6, 7), (5,), (), (3, 4, 2), (1, 9)]


def _batch(shape) -> float:
    return float(shape[0]) if shape else 1.0


def _call(name, shape, dtype, seed=0, **params):
    """(input, target) of the loss's cases (its record's inputs) for ``shape`` and ``params``."""
    x, t = REFERENCES[name].cases.make(np.random.default_rng(seed), shape, params, "values")
    return np.asarray(x, dtype), np.asarray(t, dtype)


def test_the_registry_declares_batchmean_for_kl_div_only():
    assert EXTRA == [("kl_div", "batchmean")]
    assert set(EXTRA_REDUCTIONS) == {r for _, r in EXTRA}
    for spec in LOSSES:
        assert spec.reductions[:3] == REDUCTIONS


@dtypes
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batchmean_matches_the_reference(api, shape, log_target, dtype):
    x, t = _call("kl_div", shape, dtype, log_target=log_target)
    kw = {"log_target": log_target}
    loss, grad = api.kl_div_grad(x, t, reduction="batchmean", **kw)
    plain = api.kl_div(x, t, reduction="batchmean", **kw)
    check_result_types(loss, grad, x, "batchmean", ())
    assert_bitwise(plain, loss)
    if reference.HAVE_TORCH:
        ref_loss, ref_grad = reference.torch_reference("kl_div", x, t, kw, "batchmean")
    else:  # pragma: no cover - without torch: the formula, its sum over the batch size
        per, _, g = REFERENCES["kl_div"].formula(x.astype(np.float64), t.astype(np.float64), **kw)
        ref_loss, ref_grad = math.fsum(per.reshape(-1)) / _batch(shape), g / _batch(shape)
    assert_value_close(loss, ref_loss, rtol_for(dtype))
    assert_grad_close(grad, ref_grad, rtol_for(dtype))


@dtypes
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batchmean_is_the_sum_scaled_by_the_batch_size(api, shape, dtype):
    """The loss: the float64 total over B, rounded once ("mean" is the same total over the
    element count); the gradient and Hessian: the "sum" ones times (T)(1 / B), bit for bit."""
    x, t = _call("kl_div", shape, dtype)
    b, n = _batch(shape), max(x.size, 1)
    scale = dtype(1.0 / b)
    for policy in ("exact", 1.0, 0.375):
        loss, grad, hess = api.kl_div_grad_hess(x, t, reduction="batchmean", hessian=policy)
        _, g_sum, h_sum = api.kl_div_grad_hess(x, t, reduction="sum", hessian=policy)
        assert_bitwise(grad, np.asarray(g_sum * scale), "grad")
        assert_bitwise(hess, np.asarray(h_sum * scale), "hess")
        mean = api.kl_div(x, t, reduction="mean")
        if dtype == np.float64:  # the float64 total is the "sum" result itself
            assert_bitwise(loss, np.float64(float(api.kl_div(x, t, reduction="sum")) / b), "loss")
        else:  # the same total over another divisor: B / n times the mean, to float32 rounding
            np.testing.assert_allclose(float(loss), float(mean) * n / b, rtol=2e-7)
    if not shape:
        assert_bitwise(api.kl_div(x, t, reduction="batchmean"), api.kl_div(x, t, reduction="sum"), "0-d")


@dtypes
def test_batchmean_of_empty_batches(api, dtype):
    """(0, C): 0 / 0 is NaN (PyTorch); (N, 0): 0 / N = 0; the gradient is empty."""
    for shape, expected in (((0, 3), math.nan), ((0,), math.nan), ((3, 0), 0.0), ((2, 0, 4), 0.0)):
        x, t = np.zeros(shape, dtype), np.zeros(shape, dtype)
        loss, grad, hess = api.kl_div_grad_hess(x, t, reduction="batchmean")
        check_result_types(loss, grad, x, "batchmean", ())
        assert grad.size == 0 and hess.size == 0
        if math.isnan(expected):
            assert math.isnan(loss), shape
        else:
            assert loss == 0 and not math.copysign(1.0, loss) < 0, shape
        if reference.HAVE_TORCH:
            import torch
            import torch.nn.functional as F

            ref = float(F.kl_div(torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64),
                                 reduction="batchmean"))
            assert (math.isnan(ref) and math.isnan(loss)) or ref == loss, (shape, ref, loss)


def test_batchmean_takes_the_general_path_with_the_same_bits():
    """The compiled fast path knows "mean", "sum" and "none" only: "batchmean" (exact str or
    np.str_) goes through the general path; the results are the same either way."""
    import fastloss

    x, t = _call("kl_div", (64, 10), np.float32)
    assert_bitwise(fastloss.kl_div(x, t, reduction="batchmean"), fastloss.kl_div(x, t, reduction=np.str_("batchmean")))
    for a, b in zip(fastloss.kl_div_grad(x, t, reduction="batchmean"),
                    fastloss.kl_div_grad(x, t, reduction=np.str_("batchmean"))):
        assert_bitwise(a, b)
    if fastloss.get_backend() == "cython":
        fast = fastloss.kernels.KERNELS["kl_div"].fast
        assert fast(x, t, None, "batchmean", None, None, 0, None) is None
        assert fast(x, t, None, "sum", None, None, 0, None) is not None


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_batchmean_bits_do_not_depend_on_threads(api, n_threads):
    x, t = _call("kl_div", (5000, 12), np.float32)
    one = api.kl_div_grad_hess(x, t, reduction="batchmean", n_threads=1)
    many = api.kl_div_grad_hess(x, t, reduction="batchmean", n_threads=n_threads)
    for a, b, what in zip(one, many, ("loss", "grad", "hess")):
        assert_bitwise(b, a, what)


def test_batchmean_with_out(api):
    x, t = _call("kl_div", (6, 7), np.float64)
    loss, grad = api.kl_div_grad(x, t, reduction="batchmean")
    out = np.empty((7, 6)).T  # any layout
    loss2, grad2 = api.kl_div_grad(x, t, reduction="batchmean", out=out)
    assert grad2 is out
    assert_bitwise(loss2, loss)
    np.testing.assert_array_equal(out, grad)
    g, h = np.empty_like(x), np.empty_like(x)
    loss3, *_ = api.kl_div_grad_hess(x.copy(), t, reduction="batchmean", out=(g, h))
    assert_bitwise(loss3, loss)
    np.testing.assert_array_equal(g, grad)


@pytest.mark.parametrize("name", WITHOUT)
def test_other_losses_refuse_batchmean_listing_their_choices(api, name):
    """Every loss without it refuses "batchmean" as any unknown reduction (fast and general
    paths, the three functions, nothing written)."""
    spec = BY_NAME[name]
    case = cases_of(name)[0]
    x, t, kw = case.generate(np.float64)
    message = "reduction must be one of 'mean', 'sum', 'none', got 'batchmean'"
    for reduction in ("batchmean", np.str_("batchmean")):
        for fn in spec.functions:
            out = np.full_like(x, 7.0)
            extra = {} if fn == name else {"out": out if fn == name + "_grad" else (out, np.full_like(x, 7.0))}
            with pytest.raises(ValueError) as info:
                getattr(api, fn)(x, t, reduction=reduction, **kw, **extra)
            assert str(info.value) == message.replace("'batchmean'", repr(reduction)), str(info.value)
            assert (out == 7.0).all()


def test_kl_div_lists_batchmean_among_its_choices(api):
    x, t = _call("kl_div", (3, 4), np.float64)
    with pytest.raises(ValueError, match=r"^reduction must be one of 'mean', 'sum', 'none', 'batchmean', got 'avg'$"):
        api.kl_div(x, t, reduction="avg")


def test_the_docstring_and_stub_say_batchmean(api):
    import fastloss
    from pathlib import Path

    for fn in BY_NAME["kl_div"].functions:
        doc = getattr(api, fn).__doc__
        assert "reduction='batchmean'" in doc and "input.shape[0]" in doc, fn
    for name in WITHOUT:
        assert "batchmean" not in getattr(api, name).__doc__
    stub = (Path(fastloss.__file__).parent / "__init__.pyi").read_text()
    assert 'def kl_div(input: ArrayLike, target: ArrayLike, *, log_target: bool = False, reduction: Literal["mean", "sum", ' \
           '"batchmean"] = "mean"' in stub
    assert 'def mse_loss(input: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = None, reduction: ' \
           'Literal["mean", "sum"] = "mean"' in stub


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_c_level_batchmean_recipe_gives_the_python_bits(dtype):
    """kernels.pxd / fastloss.h: FASTLOSS_SUM, the loss divided by B, grad and hess times
    (T)(1.0 / B): bit for bit the Python API's "batchmean"."""
    pytest.importorskip("fastloss.kernels", reason="the compiled kernels are not built")
    from helpers import compiled_api
    from test_c_level import SUM, call_c

    api = compiled_api()
    for shape in ((6, 7), (5,), (3, 4, 2)):
        x, t = _call("kl_div", shape, dtype)
        x, t = np.ascontiguousarray(x), np.ascontiguousarray(t)
        b = _batch(shape)
        for log_target in (False, True):
            tt = np.log(np.maximum(t, dtype(1e-3))).astype(dtype) if log_target else t
            kw = {"log_target": log_target, "hessian": 0.5}
            loss, grad, hess = api.kl_div_grad_hess(x, tt, reduction="batchmean", **kw)
            g, h = np.full_like(x, np.nan), np.full_like(x, np.nan)
            total = call_c("kl_div", x, tt, kw, SUM, grad=g, hess=h)
            assert_bitwise(dtype(total / b), loss, "loss")
            assert_bitwise(g * dtype(1.0 / b), grad, "grad")
            assert_bitwise(h * dtype(1.0 / b), hess, "hess")
