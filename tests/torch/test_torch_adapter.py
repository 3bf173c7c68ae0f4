"""fastloss.torch, the PyTorch adapter (docs/API.md, "PyTorch adapter"; README, "PyTorch").

Every loss of the registry, every parameter combination and reduction of its test records
(tests/support/losses.py, cases.py), float32 and float64, against torch.nn.functional (or
the record's torch formula where PyTorch lacks the loss) in values and gradients; the
plumbing (zero copies, non-contiguous tensors, half precision, target gradients, errors,
double backward), gradcheck, torch.compile, and a real training loop. About 30 s on the
2-core development machine (torch.compile with the aot_eager backend: Inductor's C++
compilation alone takes 30 s there).
"""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", exc_type=ImportError)  # (also a torch that fails to import)

import torch.nn.functional as F  # noqa: E402

import fastloss  # noqa: E402
import fastloss.torch as flt  # noqa: E402
import reference  # noqa: E402
from cases import DTYPES, cases_of, one_case_per_param_set, representative_cases  # noqa: E402
from fastloss._registry import BY_NAME, LOSSES, Param  # noqa: E402
from helpers import assert_bitwise, assert_grad_close, assert_value_close, loss_shape, rtol_for  # noqa: E402

dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
NAMES = [spec.name for spec in LOSSES]


@pytest.fixture(autouse=True)
def seeded():
    """torch.randn in the tests below: the same numbers every run."""
    torch.manual_seed(0)


# --------------------------------------------------------------------------- helpers


def tensors(x, t, kw, dtype=None):
    """The case's arrays as (fresh, contiguous) tensors; scalar parameters unchanged."""
    def conv(a):
        a = np.array(a)
        return torch.from_numpy(a if dtype is None or a.dtype.kind != "f" else a.astype(dtype))

    return conv(x), conv(t), {k: conv(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}


def call(name, x, t, kw, reduction):
    return getattr(flt, name)(x, t, reduction=reduction, **kw)


def torch_reference(name, x, t, kw, reduction, grad_output):
    """The PyTorch reference's loss and input gradient, in float64 on the same values."""
    xt = torch.tensor(np.array(x, np.float64), requires_grad=True)
    t = np.asarray(t)
    tt = torch.tensor(np.array(t, np.float64 if t.dtype.kind == "f" else np.int64))
    kw64 = {k: torch.tensor(np.array(v, np.float64)) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    out = reference.torch_function(name)(xt, tt, reduction=reduction, **kw64)
    out.backward(torch.as_tensor(np.array(grad_output, np.float64)))
    return out.detach().numpy(), (xt.grad.numpy() if xt.grad is not None else np.zeros(xt.shape))


def grad_output_for(case, reduction, dtype, seed=1):
    if reduction != "none":
        return np.array(1.0, dtype) if seed == 0 else np.array(0.75, dtype)
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 1.5, loss_shape(case.spec, case.shape)).astype(dtype)


def check_case(case, reduction, dtype):
    x, t, kw = case.generate(dtype)
    xt, tt, kwt = tensors(x, t, kw)
    xt.requires_grad_(True)
    gout = grad_output_for(case, reduction, dtype)
    out = call(case.loss, xt, tt, kwt, reduction)
    out.backward(torch.from_numpy(gout))
    ref_loss, ref_grad = torch_reference(case.loss, x, t, kw, reduction, gout)
    assert out.dtype == xt.dtype and tuple(out.shape) == tuple(np.shape(ref_loss))
    assert xt.grad.dtype == xt.dtype and xt.grad.shape == xt.shape
    rtol = rtol_for(dtype)
    assert_value_close(out.detach().numpy(), ref_loss, rtol)
    assert_grad_close(xt.grad.numpy(), ref_grad, rtol)
    # and bitwise fastloss's own fused result (the adapter adds nothing to the math)
    loss, grad = getattr(fastloss, case.loss + "_grad")(x, t, reduction=reduction, **kw)
    assert_bitwise(np.asarray(out.detach().numpy()), np.asarray(loss), "loss")
    if reduction == "none" and case.spec.kind == "classes" and grad.ndim > 1:
        gout = np.expand_dims(gout, 1)
    assert_bitwise(xt.grad.numpy(), np.asarray(grad * gout, dtype), "grad")


# --------------------------------------------------------------------------- the functions


def test_every_registry_loss_has_an_adapter_and_is_tested():
    """A new registry row gets its adapter and operator at import, and the value tests
    below cover it (through its record in tests/support/losses.py), or this fails."""
    assert flt.__all__ == NAMES
    for name in NAMES:
        fn = getattr(flt, name)
        assert callable(fn) and fn.__name__ == name
        assert getattr(torch.ops.fastloss, name).default is not None
    assert {case.loss for case, _ in RICH} == set(NAMES)
    assert {(case.loss, r) for case, r in RICH} == {(s.name, r) for s in LOSSES for r in s.reductions}
    assert {case.loss for case in GRADCHECK} == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_signature_is_torch_functional_or_numpy(name):
    spec, fn = BY_NAME[name], getattr(flt, name)
    sig = inspect.signature(fn)
    torch_fn = getattr(F, name, None)
    if torch_fn is not None:
        expected = [p for p in inspect.signature(torch_fn).parameters.values()
                    if p.name not in ("size_average", "reduce")]
        assert fn.signature_origin == "torch.nn.functional"
        assert [(p.name, p.kind, p.default) for p in sig.parameters.values()] == \
               [(p.name, p.kind, p.default) for p in expected]
    else:
        numpy_sig = inspect.signature(getattr(fastloss, name))
        expected = [p for p in numpy_sig.parameters.values() if p.name != "n_threads"]
        assert fn.signature_origin == "numpy"
        assert [(p.name, p.kind, p.default) for p in sig.parameters.values()] == \
               [(p.name, p.kind, p.default) for p in expected]
    assert [p.name for p in sig.parameters.values()][:2] == ["input", "target"]
    assert set(sig.parameters) - {"input", "target", "reduction"} == {k for k, _, _ in spec.keywords()}


def test_a_signature_that_disagrees_with_the_registry_is_an_error():
    import dataclasses

    spec = dataclasses.replace(BY_NAME["mse_loss"], params=(Param("alpha", 0.5, float),))
    with pytest.raises(ImportError, match="does not match the registry"):
        flt.torch_signature(spec)
    spec = dataclasses.replace(BY_NAME["huber_loss"], params=(Param("delta", 2.0, float),))
    with pytest.raises(ImportError, match="huber_loss"):
        flt.torch_signature(spec)


def test_positional_arguments_follow_torch():
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0])
    w = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    pairs = [(flt.cross_entropy(x, y, w, 1, "sum", 0.1), F.cross_entropy(x, y, w, None, 1, None, "sum", 0.1)),
             (flt.multi_margin_loss(x, y, 2, 0.5, w, "sum"), F.multi_margin_loss(x, y, 2, 0.5, w, None, None, "sum")),
             (flt.huber_loss(x, x + 1, "sum", 0.5), F.huber_loss(x, x + 1, "sum", 0.5)),
             (flt.poisson_nll_loss(x.abs() + 0.5, 3 * x.abs(), False, True, 1e-3, "sum"),
              F.poisson_nll_loss(x.abs() + 0.5, 3 * x.abs(), False, True, None, 1e-3, None, "sum"))]
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    with pytest.raises(TypeError):  # the NumPy-API losses take their parameters by keyword
        flt.hinge_loss(x, torch.ones(5, 3), None, 2.0)


# --------------------------------------------------------------------------- values and gradients
# Every parameter combination and target form of the records on their richest shape, every
# reduction, float32 and float64; then every shape (0-d, 1-D, (C,), (N, C, d1, d2) ...) of
# the plain cases. "none" backpropagates a random grad_output, the others 0.75.

RICH = [(case, r) for case in one_case_per_param_set() for r in case.spec.reductions]
PLAIN_SHAPES = [(case, r) for spec in LOSSES for case in cases_of(spec.name) if not case.params
                for r in ("mean", "none")]


@dtypes
@pytest.mark.parametrize("case,reduction", RICH, ids=lambda v: str(v))
def test_matches_torch(case, reduction, dtype):
    check_case(case, reduction, dtype)


@pytest.mark.parametrize("case,reduction", PLAIN_SHAPES, ids=lambda v: str(v))
def test_matches_torch_every_shape(case, reduction):
    check_case(case, reduction, np.float32)


@pytest.mark.parametrize("case", representative_cases(), ids=str)
def test_non_contiguous_tensors_give_the_same_results(case):
    """A transposed (non-contiguous) input, target and weight: the same bits as contiguous."""
    x, t, kw = case.generate(np.float64)
    assert x.ndim >= 2 and x.shape[0] > 1 and x.shape[-1] > 1  # the richest shapes

    def run(transform):
        xt, tt, kwt = tensors(x, t, kw)
        xt = transform(xt).requires_grad_(True)
        view = xt.transpose(0, -1)  # the loss sees x again, through a non-contiguous view
        assert not view.is_contiguous()
        tt = transform(tt).transpose(0, -1) if tt.ndim > 1 else tt
        kwt = {k: (transform(v).transpose(0, -1) if isinstance(v, torch.Tensor) and v.ndim > 1 else v)
               for k, v in kwt.items()}
        out = call(case.loss, view, tt, kwt, "none")
        out.backward(torch.ones_like(out))
        return out.detach().numpy(), xt.grad.transpose(0, -1).contiguous().numpy()

    def transposed_copy(a):  # a contiguous copy laid out transposed: its transpose is x again
        return a.transpose(0, -1).contiguous()

    # reference: plain contiguous tensors
    xt, tt, kwt = tensors(x, t, kw)
    xt.requires_grad_(True)
    out = call(case.loss, xt, tt, kwt, "none")
    out.backward(torch.ones_like(out))
    got_loss, got_grad = run(transposed_copy)
    assert_bitwise(got_loss, out.detach().numpy())
    assert_bitwise(got_grad, xt.grad.numpy())


def test_non_contiguous_input_is_copied_once_and_gives_the_same_bits():
    x = torch.randn(7, 5, dtype=torch.float64)
    t = torch.randn(5, 7, dtype=torch.float64).T
    xs = x.T.contiguous().T.requires_grad_(True)  # strided view of a (5, 7) buffer
    assert not xs.is_contiguous()
    out = flt.mse_loss(xs, t, reduction="sum")
    out.backward()
    xc = x.clone().requires_grad_(True)
    ref = flt.mse_loss(xc, t.contiguous(), reduction="sum")
    ref.backward()
    assert out.item() == ref.item()
    assert torch.equal(xs.grad, xc.grad)


EDGES = {  # name, (input, target) made at test time (seeded), reduction
    "empty-mean": ("cross_entropy", lambda: (torch.randn(0, 3), torch.zeros(0, dtype=torch.int64)), "mean"),
    "empty-sum": ("cross_entropy", lambda: (torch.randn(0, 3), torch.zeros(0, dtype=torch.int64)), "sum"),
    "all-ignored": ("cross_entropy", lambda: (torch.randn(4, 3), torch.full((4,), -100)), "mean"),
    "nll-ignored-none": ("nll_loss", lambda: (torch.randn(2, 3, 4), torch.tensor([[0, 1, -100, 2], [2, -100, 1, 0]])),
                         "none"),
    "mse-empty": ("mse_loss", lambda: (torch.randn(0, 2), torch.randn(0, 2)), "mean"),
    "kl-batchmean": ("kl_div", lambda: (torch.randn(4, 3).log_softmax(1), torch.rand(4, 3)), "batchmean"),
}


@pytest.mark.parametrize("name,make,reduction", EDGES.values(), ids=EDGES.keys())
def test_edges_follow_torch(name, make, reduction):
    x, t = make()
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    a = getattr(flt, name)(xa, t, reduction=reduction)
    b = getattr(F, name)(xb, t, reduction=reduction)
    a.sum().backward()
    b.sum().backward()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=0, equal_nan=True)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-6, atol=1e-7, equal_nan=True)


@pytest.mark.parametrize("xd,td", [(torch.float32, torch.float64), (torch.float64, torch.float32),
                                   (torch.bfloat16, torch.float32), (torch.float16, torch.float64)], ids=str)
def test_mixed_dtypes_promote_as_torch(xd, td):
    """Elementwise losses compute in the promoted dtype of input and target, as PyTorch
    (half precision: at least float32); the gradient comes back in each tensor's dtype."""
    x = torch.randn(5, 4, dtype=torch.float64).to(xd).requires_grad_(True)
    t = torch.randn(5, 4, dtype=torch.float64).to(td).requires_grad_(True)
    out = flt.mse_loss(x, t)
    out.backward()
    expected = torch.promote_types(torch.promote_types(xd, td), torch.float32)
    assert out.dtype == expected and x.grad.dtype == xd and t.grad.dtype == td
    xr, tr = x.detach().double().requires_grad_(True), t.detach().double().requires_grad_(True)
    ref = F.mse_loss(xr, tr)
    ref.backward()
    rtol = 1e-5 if expected == torch.float32 else 1e-12
    torch.testing.assert_close(out.double(), ref, rtol=rtol, atol=0)
    for grad, ref_grad, dtype in ((x.grad, xr.grad, xd), (t.grad, tr.grad, td)):  # rounded once to dtype
        tol = max(rtol, torch.finfo(dtype).eps)
        torch.testing.assert_close(grad.double(), ref_grad, rtol=tol, atol=tol * ref_grad.abs().max().item())


def test_the_operator_without_its_gradient_refuses_backward():
    x = torch.randn(3, 2, requires_grad=True)
    loss, _ = torch.ops.fastloss.mse_loss(x, torch.zeros(3, 2), None, "mean", False)
    with pytest.raises(RuntimeError, match="want_grad=False"):
        loss.backward()


# --------------------------------------------------------------------------- zero copies


class Watch:
    """Replaces fastloss.NAME(_grad) in flt.FUNCTIONS, recording the arrays they receive."""

    def __init__(self, monkeypatch, name):
        self.seen = []
        loss_fn, grad_fn = flt.FUNCTIONS[name]

        def record(fn):
            def wrapped(x, t, **kw):
                result = fn(x, t, **kw)
                self.seen.append((x, t, kw, result))
                return result
            return wrapped

        monkeypatch.setitem(flt.FUNCTIONS, name, (record(loss_fn), record(grad_fn)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_contiguous_tensors_reach_fastloss_without_a_copy(monkeypatch, dtype):
    watch = Watch(monkeypatch, "cross_entropy")
    x = torch.randn(8, 5, dtype=dtype, requires_grad=True)
    y = torch.randint(0, 5, (8,))
    w = torch.rand(5, dtype=dtype)
    out = flt.cross_entropy(x, y, weight=w)
    (xa, ta, kw, (loss, grad)), = watch.seen
    assert xa.ctypes.data == x.data_ptr() and xa.dtype == np.dtype(str(dtype).split(".")[1])
    assert ta.ctypes.data == y.data_ptr() and ta.dtype == np.int64  # int64 class indices too
    assert kw["weight"].ctypes.data == w.data_ptr()
    # the saved gradient is fastloss's array itself, and backward scales it (no recomputation)
    out.backward(torch.tensor(2.0, dtype=dtype))
    assert len(watch.seen) == 1
    assert torch.equal(x.grad, torch.from_numpy(grad) * 2)
    op_loss, op_grad = torch.ops.fastloss.cross_entropy(x.detach(), y, w, -100, 0.0, "mean", True)
    assert op_grad.data_ptr() == watch.seen[-1][3][1].ctypes.data


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_elementwise_float_target_and_weight_are_not_copied(monkeypatch, dtype):
    watch = Watch(monkeypatch, "huber_loss")
    x = torch.randn(6, 5, dtype=dtype, requires_grad=True)
    t = torch.randn(6, 5, dtype=dtype)
    w = torch.rand(6, 5, dtype=dtype)
    flt.huber_loss(x, t, "none", 0.5, w).sum().backward()
    (xa, ta, kw, _), = watch.seen
    assert (xa.ctypes.data, ta.ctypes.data, kw["weight"].ctypes.data) == (x.data_ptr(), t.data_ptr(), w.data_ptr())
    # a non-contiguous input and a bfloat16 one are copied (once, before the call)
    flt.huber_loss(x.detach().T.contiguous().T, t, delta=0.5)
    flt.huber_loss(x.detach().to(torch.bfloat16), t, delta=0.5)
    assert watch.seen[1][0].ctypes.data != x.data_ptr() and watch.seen[1][0].flags.c_contiguous
    # bfloat16 computes in float32, promoted with the target's dtype (float64 then)
    assert watch.seen[2][0].dtype == (np.float32 if dtype == torch.float32 else np.float64)


def test_no_grad_calls_the_plain_loss(monkeypatch):
    watch = Watch(monkeypatch, "mse_loss")
    x = torch.randn(4, 3, requires_grad=True)
    with torch.no_grad():
        out = flt.mse_loss(x, torch.zeros(4, 3))
    assert not out.requires_grad
    assert not isinstance(watch.seen[0][3], tuple)  # fastloss.mse_loss, not mse_loss_grad
    out = flt.mse_loss(x.detach(), torch.zeros(4, 3))
    assert not isinstance(watch.seen[1][3], tuple) and not out.requires_grad


def test_backward_does_not_call_fastloss_again(monkeypatch):
    watch = Watch(monkeypatch, "binary_cross_entropy_with_logits")
    x = torch.randn(6, 4, requires_grad=True)
    out = flt.binary_cross_entropy_with_logits(x, torch.rand(6, 4), reduction="none")
    out.backward(torch.rand(6, 4))
    assert len(watch.seen) == 1


# --------------------------------------------------------------------------- half precision


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", [c for c in representative_cases() if len(dict(c.params)) <= 1], ids=str)
def test_half_precision_computes_in_float32(case, half):
    x, t, kw = case.generate(np.float32)
    xt, tt, kwt = tensors(x, t, kw)
    xh = xt.to(half)
    xh.requires_grad_(True)
    th = tt.to(half) if tt.dtype.is_floating_point else tt
    kwh = {k: v.to(half) if isinstance(v, torch.Tensor) else v for k, v in kwt.items()}
    out = call(case.loss, xh, th, kwh, "mean")
    out.backward()
    assert out.dtype == torch.float32 and xh.grad.dtype == half
    # the same as float32 on the upcast values (the half values are exact in float32)
    x32 = xh.detach().float().requires_grad_(True)
    ref = call(case.loss, x32, th.float() if th.dtype.is_floating_point else th,
               {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in kwh.items()}, "mean")
    ref.backward()
    assert out.item() == ref.item()
    assert torch.equal(xh.grad, x32.grad.to(half))


def test_half_precision_large_sum_stays_finite():
    """65536 rows of float16 cross-entropy: PyTorch's own float16 sum overflows to inf."""
    x = torch.randn(65536, 10).to(torch.float16)
    y = torch.randint(0, 10, (65536,))
    out = flt.cross_entropy(x, y, reduction="sum")
    assert out.dtype == torch.float32 and torch.isfinite(out)
    ref = F.cross_entropy(x.double(), y, reduction="sum")
    assert abs(out.item() - ref.item()) <= 1e-5 * ref.item()


# --------------------------------------------------------------------------- target gradients


TARGET_CASES = [c for c in representative_cases() if c.spec.kind == "elementwise"]


@pytest.mark.parametrize("case", TARGET_CASES, ids=str)
def test_target_gradient_or_a_clear_error(case):
    x, t, kw = case.generate(np.float64)
    xt, tt, kwt = tensors(x, t, kw)
    xt.requires_grad_(True)
    tt.requires_grad_(True)
    if not flt.residual_sign(case.spec):
        with pytest.raises(NotImplementedError, match=f"{case.loss}.*target requires grad"):
            call(case.loss, xt, tt, kwt, "mean")
        # a detached target is fine
        call(case.loss, xt, tt.detach(), kwt, "mean").backward()
        return
    gout = torch.rand(x.shape, dtype=torch.float64) + 0.5
    call(case.loss, xt, tt, kwt, "none").backward(gout)
    # PyTorch's autograd of the reference, with respect to both
    xr, tr = xt.detach().clone().requires_grad_(True), tt.detach().clone().requires_grad_(True)
    reference.torch_function(case.loss)(xr, tr, reduction="none", **kwt).backward(gout)
    assert_grad_close(tt.grad.numpy(), tr.grad.numpy(), 1e-10)
    assert_grad_close(xt.grad.numpy(), xr.grad.numpy(), 1e-10)
    # and the target alone
    tt.grad = None
    call(case.loss, xt.detach(), tt, kwt, "sum").backward()
    assert_grad_close(tt.grad.numpy(), tr.grad.numpy() / gout.numpy(), 1e-10)


def test_residual_losses_are_the_ones_of_x_minus_y():
    assert {s.name for s in LOSSES if flt.residual_sign(s)} >= {"mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss"}
    for s in LOSSES:
        if flt.residual_sign(s):
            assert "x - y" in s.formula or "y - x" in s.formula


@pytest.mark.parametrize("arg", ["weight", "pos_weight"])
def test_weights_requiring_grad_are_refused(arg):
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.rand(4, 3, requires_grad=True)
    with pytest.raises(NotImplementedError, match=arg):
        flt.binary_cross_entropy_with_logits(x, torch.rand(4, 3), **{arg: w})


# --------------------------------------------------------------------------- gradcheck, double backward


GRADCHECK = [c for c in representative_cases() if not dict(c.params)]


@pytest.mark.parametrize("case", GRADCHECK, ids=str)
def test_gradcheck_float64(case):
    x, t, kw = case.generate(np.float64)
    xt, tt, kwt = tensors(x, t, kw)
    xt.requires_grad_(True)
    inputs = (xt, tt.requires_grad_(True)) if flt.residual_sign(case.spec) else (xt,)
    for reduction in ("mean", "none"):
        def fn(a, b=tt):
            return call(case.loss, a, b, kwt, reduction)
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("name", ["mse_loss", "cross_entropy", "kl_div"])
def test_double_backward_is_a_clear_error(name):
    case = next(c for c in GRADCHECK if c.loss == name)
    x, t, kw = case.generate(np.float64)
    xt, tt, kwt = tensors(x, t, kw)
    xt.requires_grad_(True)
    (g,) = torch.autograd.grad(call(name, xt, tt, kwt, "mean"), xt, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        g.sum().backward()
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        torch.autograd.gradgradcheck(lambda a: call(name, a, tt, kwt, "mean"), (xt,))


# --------------------------------------------------------------------------- errors


def test_errors_name_the_argument():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="input is on device meta"):
        flt.mse_loss(x.to("meta"), x)
    with pytest.raises(ValueError, match="target is on device meta"):
        flt.mse_loss(x, x.to("meta"))
    with pytest.raises(ValueError, match="weight is on device meta"):
        flt.mse_loss(x, x, weight=x.to("meta"))
    with pytest.raises(TypeError, match="input must be a floating-point tensor.*int64"):
        flt.mse_loss(torch.ones(4, 3, dtype=torch.int64), x)
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        flt.mse_loss(np.ones((4, 3)), x)
    with pytest.raises(ValueError, match=r"input and target must have the same shape.*\(4, 3\).*\(3, 4\)"):
        flt.mse_loss(x, x.T)
    with pytest.raises(ValueError, match="target of class indices must have shape"):
        flt.cross_entropy(x, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="target must hold integer class indices"):
        flt.nll_loss(x, torch.zeros(4))
    with pytest.raises(ValueError, match="reduction must be one of"):
        flt.mse_loss(x, x, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        flt.cross_entropy(x, torch.tensor([0, 1, 2, 0]), label_smoothing=2.0)


# --------------------------------------------------------------------------- torch.compile


def test_torch_compile_keeps_one_graph():
    """fullgraph=True fails on any graph break; aot_eager traces the operators' fake
    implementations and autograd formulas as Inductor would, without its C++ build."""
    y = torch.randint(0, 5, (8,))
    w = torch.rand(5)

    def step(a, b):
        return (flt.cross_entropy(a * 2, b, w, label_smoothing=0.1)
                + flt.binary_cross_entropy_with_logits(a, torch.sigmoid(a.detach()), reduction="none").sum()
                + flt.pinball_loss(a, a.detach() + 1, quantile=0.3))

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    x = torch.randn(8, 5, requires_grad=True)
    out = compiled(x, y)
    out.backward()
    got = x.grad.clone()
    x.grad = None
    ref = step(x, y)
    ref.backward()
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(got, x.grad, rtol=0, atol=0)


def test_operators_pass_torch_library_opcheck():
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (6,))
    torch.library.opcheck(torch.ops.fastloss.cross_entropy.default, (x, y, None, -100, 0.0, "none", True),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    t = torch.randn(6, 4, dtype=torch.float64)
    torch.library.opcheck(torch.ops.fastloss.huber_loss.default, (x, t, None, 1.0, "mean", True),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


# --------------------------------------------------------------------------- training


def test_training_loop_follows_torch_functional():
    """A 64-32-10 MLP on scikit-learn's digits, 60 SGD steps (momentum 0.9) on mini-batches
    of 128, from the same initialisation with flt.cross_entropy and F.cross_entropy, float32.
    The two losses agree to float32 rounding at each step (both take log-sum-exp in float32,
    summed in a different order); the differences are then carried through 60 updates, which
    neither damp nor amplify them much at this step size: rtol 1e-5 on every step's loss
    (measured: 2.2e-7, two float32 ulp) and 1e-5 absolute on the final weights (measured:
    3e-7, weights of order 0.1-1)."""
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    X = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    Y = torch.tensor(digits.target, dtype=torch.int64)

    def train(loss_fn):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        gen = torch.Generator().manual_seed(1)
        curve = []
        for _ in range(60):
            idx = torch.randint(0, len(X), (128,), generator=gen)
            opt.zero_grad()
            loss = loss_fn(model(X[idx]), Y[idx], label_smoothing=0.05)
            loss.backward()
            opt.step()
            curve.append(loss.item())
        return np.array(curve), [p.detach().clone() for p in model.parameters()]

    ours, our_params = train(flt.cross_entropy)
    theirs, their_params = train(F.cross_entropy)
    assert ours[-1] < 0.5 * ours[0]  # it does learn
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=0)
    for a, b in zip(our_params, their_params):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- docs


def test_docs_hold_the_reference_table():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert flt.reference_table() in (root / "docs" / "API.md").read_text(), (
        "docs/API.md, 'PyTorch adapter': paste fastloss.torch.reference_table()")
    readme = (root / "README.md").read_text()
    assert "## PyTorch" in readme and "fastloss.torch as flt" in readme


# --------------------------------------------------------------------------- eager path and operator


@pytest.fixture
def operator_path(monkeypatch):
    """Every call through torch.ops.fastloss.NAME, as under torch.compile."""
    monkeypatch.setattr(flt, "_eager", lambda: False)


def run_both(case, reduction, dtype, monkeypatch, grad_output):
    """The case through the eager autograd.Function and through the custom operator:
    (loss, input gradient, target gradient or None) of each."""
    x, t, kw = case.generate(dtype)
    results = []
    for eager in (True, False):
        if not eager:
            monkeypatch.setattr(flt, "_eager", lambda: False)
        xt, tt, kwt = tensors(x, t, kw)
        xt.requires_grad_(True)
        if flt.residual_sign(case.spec):
            tt.requires_grad_(True)
        out = call(case.loss, xt, tt, kwt, reduction)
        assert (type(out.grad_fn).__name__ == f"{case.loss}_backwardBackward") == eager, type(out.grad_fn)
        out.backward(grad_output(out))
        with torch.no_grad():
            plain = call(case.loss, xt, tt, kwt, reduction)
        assert not plain.requires_grad
        results.append((out.detach(), plain, xt.grad, tt.grad))
    monkeypatch.undo()
    return results


@pytest.mark.parametrize("case,reduction", RICH, ids=lambda v: str(v))
def test_eager_path_and_operator_give_the_same_bits(case, reduction, monkeypatch):
    """The eager path (a torch.autograd.Function, no dispatcher) and the custom operator (what
    torch.compile traces) give the same loss and gradients, bit for bit, with grad_output 1
    (the saved gradient is returned as it is), 0.75 and random per element."""
    for gout in (lambda o: torch.ones_like(o), lambda o: torch.full_like(o, 0.75),
                 lambda o: torch.rand(o.shape, generator=torch.Generator().manual_seed(3), dtype=o.dtype) + 0.5):
        eager, op = run_both(case, reduction, np.float64, monkeypatch, gout)
        for a, b in zip(eager, op):
            assert (a is None) == (b is None)
            if a is not None:
                assert a.dtype == b.dtype and a.shape == b.shape
                assert_bitwise(a.numpy(), b.numpy())


def test_grad_accumulates_over_backward_calls():
    """loss.backward() hands autograd the saved gradient itself (grad_output 1): .grad is
    right when it accumulates over calls, with retain_graph, and after the graph is freed."""
    x = torch.randn(50, 7, requires_grad=True)
    y = torch.randint(0, 7, (50,))
    xr = x.detach().clone().requires_grad_(True)
    for _ in range(2):
        flt.cross_entropy(x, y).backward()
        F.cross_entropy(xr, y).backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-6, atol=1e-7)
    loss = flt.cross_entropy(x, y)
    saved = loss.grad_fn.saved_tensors[0].clone()
    loss.backward(retain_graph=True)
    assert torch.equal(loss.grad_fn.saved_tensors[0], saved)  # not added into
    before = x.grad.clone()
    loss.backward()
    torch.testing.assert_close(x.grad, before + saved, rtol=0, atol=0)
    # a gradient handed out by torch.autograd.grad and changed in place: a clear error later
    loss = flt.mse_loss(x, torch.zeros(50, 7))
    (g,) = torch.autograd.grad(loss, x, retain_graph=True)
    g.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_compiled_calls_take_the_operator(monkeypatch):
    """Eagerly the adapter does not call the custom operator (the dispatcher's cost), unless
    a torch function or dispatch mode or a torch.func transform is active, or torch.compile
    traces it (test_torch_compile_keeps_one_graph)."""
    seen = []
    monkeypatch.setattr(flt, "_eager", lambda real=flt._eager: seen.append(real()) or seen[-1])
    x = torch.randn(6, 4, requires_grad=True)
    y = torch.randint(0, 4, (6,))
    flt.cross_entropy(x, y)
    assert seen == [True]
    class PassThrough(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    with PassThrough():
        assert type(flt.cross_entropy(x, y).grad_fn).__name__ != "cross_entropy_backwardBackward"
    assert seen == [True, False]


def test_scalar_parameters_reach_fastloss_as_passed_and_take_its_fast_path(monkeypatch):
    """Scalar parameters go to fastloss as passed (torch's signature defaults included, -0.0
    with its sign); fastloss's compiled fast path takes them, defaults or not."""
    watch = Watch(monkeypatch, "cross_entropy")
    x = torch.randn(8, 5, requires_grad=True)
    y = torch.randint(0, 5, (8,))
    flt.cross_entropy(x, y)
    flt.cross_entropy(x, y, ignore_index=-100, label_smoothing=0.0)
    flt.cross_entropy(x, y, label_smoothing=-0.0)
    flt.cross_entropy(x, y, ignore_index=3, label_smoothing=0.1)
    seen = [{k: v for k, v in kw.items() if k != "reduction"} for _, _, kw, _ in watch.seen]
    assert seen == [{"ignore_index": -100, "label_smoothing": 0.0}, {"ignore_index": -100, "label_smoothing": 0.0},
                    {"ignore_index": -100, "label_smoothing": -0.0}, {"ignore_index": 3, "label_smoothing": 0.1}]
    assert math.copysign(1.0, watch.seen[2][2]["label_smoothing"]) == -1.0
    kernel = fastloss.kernels.KERNELS[BY_NAME["cross_entropy"].kernel_name]
    for kw in seen:
        assert kernel.fast(x.detach().numpy(), y.numpy(), kw["ignore_index"], "mean", None, None, 1, "exact",
                           (kw["label_smoothing"],)) is not None, kw
