"""Second order: every ``NAME_grad_hess`` (docs/API.md, "Second order").

* ``loss`` and ``grad`` are bitwise what ``NAME_grad`` returns, for every loss, parameter
  combination, target form, reduction and dtype, on both backends.
* ``hess`` is the diagonal of the Hessian of the returned loss: sixth-order central finite
  differences of fastloss's *own* float64 gradient (each class column perturbed on its own:
  the diagonal, not the row sums), and the float64 formula of the loss's record
  (``LossReference.hessian``), itself checked against finite differences of the record's
  gradient formula. float32 agrees with float64 on the same values.
* The Hessian policy (``hessian=``) of the losses whose second derivative is zero on whole
  regions: the default is the registry's, a constant ``c`` gives ``c * w * scale`` exactly,
  ``"exact"`` the true values, anything else a ValueError naming ``hessian``.
* ``out=(grad_out, hess_out)``: written in place and returned, any layout, either may be the
  input itself; a pair that overlaps, or a bad member, is refused before anything is written.
* Determinism: the same bits for every thread count.
"""

from __future__ import annotations

import numpy as np
import pytest

import reference
from cases import DTYPES, one_case_per_param_set
from fastloss._registry import BY_NAME, LOSSES, REDUCTIONS
from helpers import BACKENDS, assert_bitwise, assert_grad_close
from losses import REFERENCES, referenced_losses

CASES = one_case_per_param_set()
POLICY_LOSSES = [spec.name for spec in referenced_losses() if spec.hessian_policy is not None]
FD_ORDER, FD_STEP = 6, 1e-3
# Finite differences of the float64 gradient: truncation ~1e-15, rounding ~2e-16 * |grad| /
# 1e-3 ~ 1e-13 of the largest entry; 1e-8 leaves a wide margin and still catches a wrong
# factor or term anywhere.
FD_RTOL = 1e-8


def twins(api, name):
    return getattr(api, name + "_grad"), getattr(api, name + "_grad_hess")


def exact_kw(name, kw):
    """The call's keywords with the exact Hessian asked for where the loss has a policy."""
    return dict(kw, hessian="exact") if BY_NAME[name].hessian_policy is not None else dict(kw)


def class_columns(spec, x):
    """Index tuples selecting one class of every sample (the diagonal's independent parts):
    elementwise losses need one perturbation of the whole input."""
    if spec.kind == "elementwise":
        return [(Ellipsis,)]
    axis = 0 if x.ndim == 1 else 1
    return [tuple([slice(None)] * axis + [c]) for c in range(x.shape[axis])]


def fd_hessian(grad_of, x, cols):
    """Central differences of the gradient along each column set (every element of the set
    moved by its own step; the others fixed): the diagonal of the Hessian."""
    h = np.empty_like(x)
    steps = FD_STEP * np.maximum(1.0, np.abs(x))
    for col in cols:
        acc = np.zeros_like(x[col])
        for k, c in reference.STENCILS[FD_ORDER]:
            xp = x.copy()
            xp[col] = x[col] + k * steps[col]
            acc = acc + c * grad_of(xp)[col]
        h[col] = acc / steps[col]
    return h


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_loss_and_grad_are_bitwise_the_grad_twin(api, case, reduction, dtype):
    x, t, kw = case.generate(dtype)
    grad_fn, hess_fn = twins(api, case.loss)
    loss2, grad2 = grad_fn(x, t, reduction=reduction, **kw)
    loss3, grad3, hess = hess_fn(x, t, reduction=reduction, **kw)
    assert_bitwise(loss3, loss2, "loss")
    assert_bitwise(grad3, grad2, "grad")
    assert type(hess) is np.ndarray and hess.dtype == grad2.dtype and hess.shape == x.shape


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_hessian_is_the_derivative_of_the_gradient(api, case, reduction):
    x, t, kw = case.generate(np.float64)
    grad_fn, hess_fn = twins(api, case.loss)
    kw3 = exact_kw(case.loss, kw)
    _, grad, hess = hess_fn(x, t, reduction=reduction, **kw3)
    fd = fd_hessian(lambda xp: grad_fn(xp, t, reduction=reduction, **kw)[1], x, class_columns(case.spec, x))
    assert_fd_close(hess, fd, grad)


def assert_fd_close(hess, fd, grad, what="hess vs finite differences of the gradient"):
    """Within FD_RTOL of the larger of the Hessian's and the gradient's largest entry (the
    differences' rounding error is relative to the gradient: an exact zero Hessian, as L1's,
    is met by differences of about 1e-16 |grad|)."""
    scale = max(float(np.max(np.abs(fd), initial=0)), float(np.max(np.abs(grad), initial=0)))
    np.testing.assert_allclose(hess, fd, rtol=FD_RTOL, atol=FD_RTOL * scale, err_msg=what)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_hessian_matches_the_float64_formula(api, case, reduction):
    record = REFERENCES[case.loss]
    for dtype in DTYPES:
        x, t, kw = case.generate(dtype)
        _, _, hess = twins(api, case.loss)[1](x, t, reduction=reduction, **exact_kw(case.loss, kw))
        x64, t64, kw64 = reference._float64_args(x, t, kw)
        expected = record.hessian(x64, t64, **kw64)
        if reduction == "mean":
            expected = expected / record.formula(x64, t64, **kw64)[1]
        assert_grad_close(hess, expected, 1e-5 if dtype == np.float32 else 1e-10, f"hess {np.dtype(dtype)}")


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_hessian_formulas_are_derivatives_of_the_gradient_formulas(case):
    """The records' Hessians are held to finite differences of the records' gradients, so
    a wrong formula cannot hide behind a kernel that makes the same mistake."""
    record = REFERENCES[case.loss]
    x, t, kw = case.generate(np.float64)
    x64, t64, kw64 = reference._float64_args(x, t, kw)
    fd = fd_hessian(lambda xp: record.formula(xp, t64, **kw64)[2], x64, class_columns(case.spec, x64))
    assert_fd_close(record.hessian(x64, t64, **kw64), fd, record.formula(x64, t64, **kw64)[2], "record hessian")


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("name", [spec.name for spec in referenced_losses()])
def test_hessian_bits_do_not_depend_on_threads(api, name, n_threads):
    case = next(c for c in CASES if c.loss == name)
    base = case.generate(np.float32)
    x, t, kw = base
    reps = max(1, 40000 // max(x.size, 1))  # several blocks: the parallel path runs
    x = np.concatenate([x] * reps)
    t = np.concatenate([t] * reps) if np.ndim(t) else t
    kw = {k: v for k, v in kw.items() if not (isinstance(v, np.ndarray) and v.shape == base[0].shape)}
    hess_fn = twins(api, name)[1]
    one = hess_fn(x, t, reduction="sum", n_threads=1, **kw)
    many = hess_fn(x, t, reduction="sum", n_threads=n_threads, **kw)
    for a, b, what in zip(one, many, ("loss", "grad", "hess")):
        assert_bitwise(b, a, what)


# --------------------------------------------------------------------------- policies


@pytest.mark.parametrize("name", POLICY_LOSSES)
def test_policy_default_is_the_registry_default(api, name):
    import inspect

    fn = twins(api, name)[1]
    assert inspect.signature(fn).parameters["hessian"].default == BY_NAME[name].hessian_policy


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("constant", [1.0, 0.25, 3])
@pytest.mark.parametrize("name", POLICY_LOSSES)
def test_constant_policy_is_constant_times_weight_and_scale(api, name, constant, reduction):
    for case in [c for c in CASES if c.loss == name]:
        for dtype in DTYPES:
            x, t, kw = case.generate(dtype)
            loss, grad, hess = twins(api, name)[1](x, t, reduction=reduction, hessian=constant, **kw)
            loss2, grad2 = twins(api, name)[0](x, t, reduction=reduction, **kw)
            assert_bitwise(loss, loss2, "loss")
            assert_bitwise(grad, grad2, "grad")
            # c * (w * scale) per entry; the "mean" scale here comes from the record's float64
            # divisor (fastloss sums the weights compensated): a few ULP apart at most
            expected = _constant_expected(case.spec, x, t, kw, constant, reduction, dtype)
            np.testing.assert_allclose(hess, expected, rtol=4 * np.finfo(dtype).eps, atol=0)
            if reduction != "mean":  # no divisor: exactly c * w
                np.testing.assert_array_equal(hess, expected)


def _constant_expected(spec, x, t, kw, c, reduction, dtype):
    """c * (w * scale) with w the term's weight (class losses: weight[target] of the sample,
    0 for ignored samples), in the compute dtype's arithmetic."""
    record = REFERENCES[spec.name]
    x64, t64, kw64 = reference._float64_args(x, t, kw)
    divisor = record.formula(x64, t64, **kw64)[1]
    scale = dtype(1.0 / divisor) if reduction == "mean" else dtype(1.0)
    if spec.kind == "elementwise":
        w = np.broadcast_to(np.asarray(kw.get("weight", np.ones((), dtype)), dtype), x.shape)
        return dtype(c) * (w * scale)
    axis = 0 if x.ndim == 1 else 1
    n_classes = x.shape[axis]
    w = np.asarray(kw.get("weight", np.ones(n_classes, dtype)), dtype)
    ignore = kw.get("ignore_index", -100)
    tt = np.asarray(t)
    kept = tt != ignore if spec.ignore_index else np.ones(tt.shape, bool)
    wy = np.where(kept, w[np.where(kept, tt, 0)], 0).astype(dtype)
    row = dtype(c) * (wy * scale)
    return np.repeat(np.expand_dims(row, axis), n_classes, axis=axis)


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, float("nan"), float("inf"), "Exact", "constant", True, None,
                                 [1.0], 10 ** 400])
@pytest.mark.parametrize("name", POLICY_LOSSES)
def test_bad_policy_is_a_value_error_naming_hessian(api, name, bad):
    case = next(c for c in CASES if c.loss == name)
    x, t, kw = case.generate(np.float64)
    g, h = np.full_like(x, 7.0), np.full_like(x, 7.0)
    with pytest.raises(ValueError, match="hessian"):
        twins(api, name)[1](x, t, hessian=bad, out=(g, h), **kw)
    assert np.all(g == 7.0) and np.all(h == 7.0)


def test_losses_without_policy_take_no_hessian_keyword(api):
    for spec in referenced_losses():
        if spec.hessian_policy is None:
            case = next(c for c in CASES if c.loss == spec.name)
            x, t, kw = case.generate(np.float64)
            with pytest.raises(TypeError, match="hessian"):
                twins(api, spec.name)[1](x, t, hessian=1.0, **kw)


# --------------------------------------------------------------------------- out=


@pytest.mark.parametrize("layout", ["contiguous", "strided", "fortran", "grad_in_place", "hess_in_place"])
@pytest.mark.parametrize("name", [spec.name for spec in referenced_losses()])
def test_out_pair(api, name, layout):
    case = next(c for c in CASES if c.loss == name and len(c.shape) >= 2) if any(
        c.loss == name and len(c.shape) >= 2 for c in CASES) else next(c for c in CASES if c.loss == name)
    x, t, kw = case.generate(np.float64)
    fn = twins(api, name)[1]
    loss0, g0, h0 = fn(x.copy(), t, reduction="mean", **kw)
    xin = x.copy()
    if layout == "contiguous":
        g, h = np.empty_like(x), np.empty_like(x)
    elif layout == "strided":
        g = np.empty(x.shape + (2,))[..., 1]
        h = np.empty(x.shape + (3,))[..., 0]
    elif layout == "fortran":
        g, h = np.empty_like(x, order="F"), np.empty_like(x, order="F")
    elif layout == "grad_in_place":
        g, h = xin, np.empty_like(x)
    else:
        g, h = np.empty_like(x), xin
    loss, gr, he = fn(xin, t, reduction="mean", out=(g, h), **kw)
    assert gr is g and he is h
    assert_bitwise(loss, loss0, "loss")
    np.testing.assert_array_equal(g, g0)
    np.testing.assert_array_equal(h, h0)


@pytest.mark.parametrize("name", [spec.name for spec in referenced_losses()])
def test_bad_out_pair_is_refused_before_writing(api, name):
    case = next(c for c in CASES if c.loss == name)
    x, t, kw = case.generate(np.float64)
    fn = twins(api, name)[1]
    buf = np.full((2,) + x.shape, 7.0)
    shared = np.full(x.shape, 7.0)
    bad_pairs = [
        ((shared, shared), "overlap"),
        ((buf[0], np.empty(x.shape, np.float32)), "dtype"),
        ((buf[0], np.empty(x.shape + (1,))), "shape"),
        ((buf[0],), "pair"),
        (buf[0], "pair"),
        ([buf[0], buf[1]], "pair"),
    ]
    for out, what in bad_pairs:
        with pytest.raises(ValueError):
            fn(x, t, out=out, **kw)
        assert np.all(buf == 7.0) and np.all(shared == 7.0), what
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="hess_out"):
        fn(x, t, out=(buf[0], ro), **kw)
    assert np.all(buf == 7.0)


def test_every_loss_has_a_grad_hess_twin_on_every_backend():
    for _, module in BACKENDS:
        for spec in LOSSES:
            assert callable(getattr(module, spec.name + "_grad_hess")), spec.name


@pytest.mark.parametrize("name", [spec.name for spec in referenced_losses()])
def test_backends_agree(name):
    if len(BACKENDS) < 2:
        pytest.skip("the compiled backend is not built: nothing to compare")
    for case in [c for c in CASES if c.loss == name]:
        for dtype in DTYPES:
            x, t, kw = case.generate(dtype)
            kw = exact_kw(name, kw)
            results = [twins(module, name)[1](x, t, reduction="sum", **kw)[2] for _, module in BACKENDS]
            assert_grad_close(results[1], results[0], 1e-5 if dtype == np.float32 else 1e-12, str(case))
