"""The independent references the tests hold fastloss to, run from the per-loss records of
``losses.py`` (which gives each loss's formula, exact term and PyTorch adaptation).

(a) PyTorch, when importable: ``torch.nn.functional.<name>`` (a loss PyTorch lacks, such as
    the hinges, written in torch from its formula: ``LossReference.torch_formula``); the
    gradient is torch's autograd of the returned loss (of its sum for ``reduction="none"``).
    It runs in float64 on the very values fastloss sees (float32 inputs, weights and targets
    widened exactly): PyTorch's own float32 arithmetic loses up to ~1e-5 relative in places
    (BCE-with-logits computes a loss of 0.018 at x = -4 as the difference of two numbers
    near 4), and the contract holds fastloss to PyTorch's *accurate* result, never to its
    rounding errors.
(b) float64 formulas written in NumPy from the mathematics (``LossReference.formula``, never
    calling fastloss), with analytic gradients, and central finite differences of those
    formulas (``fd_grad``) to check the gradients away from the kinks.

``reference()`` uses (a) when torch is installed and (b) otherwise. The tests also run (b)
against fastloss always, and check (b)'s analytic gradients by finite differences, so both
references are exercised whether or not torch is installed.

Every function takes fastloss's arguments: ``(loss name, input, target, kwargs, reduction)``
with weights already materialised as arrays.
"""

from __future__ import annotations

import math

import numpy as np

from loss_maths import BCE_GRAD_EPSILON, EXACT_PREC, HAVE_TORCH, F, broadcast, mpmath_module, rows, torch  # noqa: F401
from losses import REFERENCES

NAME = "torch" if HAVE_TORCH else "formulas"

# The losses torch.nn.functional lacks: their torch reference is written in torch from the
# formula (losses.py), so the PyTorch conventions (NaN and inf handling) do not apply to them.
NOT_IN_TORCH = frozenset(name for name, record in REFERENCES.items() if not record.in_torch)


# =========================================================================== (a) torch


def torch_function(loss):
    """The PyTorch reference of ``loss``: (x, t, *, reduction, **kwargs) -> tensor."""
    record = REFERENCES[loss]
    if record.torch_formula is not None:
        return record.torch_formula
    f = getattr(F, loss)
    if record.torch_expand_weight:
        return lambda x, t, weight=None, **kw: f(x, t, weight=None if weight is None else weight.expand(x.shape), **kw)
    return f


def torch_reference(loss, x, t, kwargs, reduction):
    """PyTorch's ``(loss, grad)``, computed in float64 from the given values."""
    dtype = np.float64
    xt = torch.tensor(np.array(x, dtype=dtype), requires_grad=True)
    t = np.asarray(t)
    tt = torch.tensor(np.array(t, dtype=dtype if t.dtype.kind == "f" else np.int64))
    kw = {}
    for key, value in kwargs.items():
        if isinstance(value, np.ndarray):
            kw[key] = torch.tensor(np.array(value, dtype=dtype))
        else:
            kw[key] = value
    out = torch_function(loss)(xt, tt, reduction=reduction, **kw)
    (out.sum() if reduction == "none" else out).backward()
    grad = xt.grad.numpy() if xt.grad is not None else np.zeros(xt.shape, dtype)
    value = out.detach().numpy()
    return (value if reduction == "none" else value[()]), grad


# =========================================================================== (b) formulas
# Each formula (LossReference.formula) takes float64 arrays and returns (per-term losses,
# mean divisor, gradient of the sum of the per-term losses with respect to x). The mean
# divisors follow PyTorch's documentation of each loss (torch.nn.*Loss).

def _float64_args(x, t, kwargs):
    x64 = np.array(x, dtype=np.float64)
    t = np.asarray(t)
    t64 = np.array(t, dtype=np.float64 if t.dtype.kind in "fb" else np.int64)
    kw = {k: (np.array(v, dtype=np.float64) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
    return x64, t64, kw


def depends_on(loss, x, t, kwargs):
    """Where the gradient is a weight times a derivative (bool, shaped like ``x``): for the
    hinges only at the active terms (margin - y x > 0, or NaN), not on the flat side nor at
    the kink, where it is a selected 0 (PyTorch's clamp backward is a select); for class
    indices not at the ignored samples, and for ``nll_loss`` only at each kept sample's
    target class; everywhere else. Outside, the gradient is 0 by structure, even when "mean"
    divides by a zero weight sum."""
    support = REFERENCES[loss].gradient_support
    if support == "active terms":
        z = kwargs.get("margin", 1.0) - np.asarray(t) * np.asarray(x)
        return ~(z <= 0)
    if support == "everywhere" or np.shape(t) == np.shape(x):  # or class probabilities
        return np.ones(np.shape(x), bool)
    z, tt, back, _ = rows(np.asarray(x), t)
    kept = tt != kwargs.get("ignore_index", -100)
    if support == "kept samples":
        return back(np.repeat(kept[:, None], z.shape[1], axis=1))
    assert support == "kept targets", (loss, support)
    mask = np.zeros(z.shape, bool)
    mask[np.arange(len(tt))[kept], tt[kept]] = True
    return back(mask)


def _reduce(per, divisor, grad, reduction, support=None):
    """Reduce the per-term losses; the "mean" gradient is the "sum" gradient / divisor. A zero
    divisor (every weight 0) makes it grad / 0 (NaN for a zero component) where the loss
    depends on the input (``support``, as PyTorch's autograd and NLL backward), 0 elsewhere."""
    if reduction == "none":
        return per, grad if support is None else np.where(support, grad, 0.0)
    total = math.fsum(per.reshape(-1)) if np.isfinite(per).all() else float(np.sum(per))
    if reduction == "sum":
        return total, grad if support is None else np.where(support, grad, 0.0)
    with np.errstate(all="ignore"):
        divided = grad / np.float64(divisor)
    if divisor:
        value = total / divisor
    else:
        value = math.nan if total == 0 or math.isnan(total) else math.copysign(math.inf, total)
    # Outside the support the gradient is 0 by structure, whatever the divisor (0, or NaN or
    # inf from a non-finite weight): PyTorch's select (clamp backward, NLL's gather).
    return value, divided if support is None else np.where(support, divided, 0.0)


def formula_reference(loss, x, t, kwargs, reduction):
    """float64 ``(loss, grad)`` from the formulas above."""
    x64, t64, kw = _float64_args(x, t, kwargs)
    with np.errstate(all="ignore"):
        per, divisor, grad = REFERENCES[loss].formula(x64, t64, **kw)
        return _reduce(per, divisor, grad, reduction, depends_on(loss, x64, t64, kw))


def formula_value(loss, x64, t64, kw, reduction):
    with np.errstate(all="ignore"):
        per, divisor, _ = REFERENCES[loss].formula(x64, t64, **kw)
    if reduction == "mean":
        return math.fsum(per.reshape(-1)) / divisor
    return math.fsum(per.reshape(-1))


# Central difference stencils: offsets k and weights c_k with f'(x) ~ sum c_k f(x + k h) / h.
STENCILS = {
    4: ((-2, 1 / 12), (-1, -8 / 12), (1, 8 / 12), (2, -1 / 12)),
    6: ((-3, -1 / 60), (-2, 9 / 60), (-1, -45 / 60), (1, 45 / 60), (2, -9 / 60), (3, 1 / 60)),
}


def fd_of(value, x, rel_step=1e-4, order=4):
    """Central finite differences of order ``order`` of ``value(x)`` (a float) with respect
    to every element of the float64 array ``x``; steps ``rel_step * max(1, |x_i|)``."""
    grad = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        x0 = x[idx]
        h = rel_step * max(1.0, abs(x0))
        values = []
        for k, _ in STENCILS[order]:
            xp = x.copy()
            xp[idx] = x0 + k * h
            values.append(value(xp))
        grad[idx] = math.fsum(c * v for (_, c), v in zip(STENCILS[order], values)) / h
    return grad


def fd_grad(loss, x, t, kwargs, reduction, rel_step=1e-4, order=4):
    """Central finite differences of the formula loss (its sum for "none") with respect to
    every element of ``x``, in float64. Valid away from the kinks."""
    x64, t64, kw = _float64_args(x, t, kwargs)
    red = "sum" if reduction == "none" else reduction
    return fd_of(lambda xp: formula_value(loss, xp, t64, kw, red), x64, rel_step, order)


# =========================================================================== the choice

def reference(loss, x, t, kwargs, reduction):
    """``(loss, grad)``: PyTorch when installed, else the float64 formulas."""
    if HAVE_TORCH:
        return torch_reference(loss, x, t, kwargs, reduction)
    return formula_reference(loss, x, t, kwargs, reduction)  # pragma: no cover


# =========================================================================== exact values
# The exact value of every loss formula on the exact (binary) values of its float inputs,
# with mpmath: differences of inputs exactly (no rounding at all), everything else at
# EXACT_PREC bits, written so that no step cancels (the log-sum-exp of the target class is
# log1p of the other classes' sum when the target holds the max). Results are mpf; the
# tests round them or measure fastloss's error in ULP against them (test_accuracy.py).
#
# Each loss's exact term (LossReference.exact) returns, per term, (loss, grad, terms): grad
# is the derivative of the weighted loss with respect to the input, and ``terms`` the
# magnitude of the largest of
# the quantities the formula *subtracts* to form that gradient component (0 where it
# subtracts nothing). Where two terms of opposite sign nearly cancel (sigmoid(x) - y for a
# soft target y, softmax - target for class probabilities) the exact difference is not
# attainable from rounded terms by any implementation, so its error is measured in ULP of
# ``terms`` instead of ULP of the tiny result.

def exact_terms(loss, x, t, kwargs):
    """Exact per-term losses, gradient and subtracted-term magnitudes for fastloss's
    arguments (``kwargs`` with weights as arrays, scalar parameters as numbers): three
    object arrays of mpf, shaped like the "none" result, the input and the input."""
    mp = mpmath_module()
    with mp.workprec(EXACT_PREC):
        x64, t64, kw = _float64_args(x, t, kwargs)
        mpf = np.vectorize(lambda v: mp.mpf(float(v)), otypes=[object])
        params = {**_registry_defaults(loss), **{k: v for k, v in kw.items() if not isinstance(v, np.ndarray)}}
        integers = _integer_params(loss)
        params = {k: (v if k in integers else mp.mpf(float(v))) for k, v in params.items()}
        exact = REFERENCES[loss].exact
        if _is_elementwise(loss):
            shape = x64.shape
            w = mpf(broadcast(kw.get("weight"), shape))
            operand = _operand(loss)  # pos_weight, or pinball's quantile (a number or an array)
            pw = mpf(broadcast(kw.get(operand, _registry_defaults(loss).get(operand)), shape))
            xs, ys = mpf(x64), mpf(t64)
            out = [np.empty(shape, object) for _ in range(3)]
            for i in np.ndindex(shape):
                for arr, v in zip(out, exact(xs[i], ys[i], w[i], pw[i], params)):
                    arr[i] = v
            return tuple(out)
        z, tt, back, lshape = rows(x64, t64)
        weight = kw.get("weight")
        w = [mp.mpf(1)] * z.shape[1] if weight is None else [mp.mpf(float(v)) for v in weight]
        losses = np.empty(len(z), object)
        grad, terms = np.empty(z.shape, object), np.empty(z.shape, object)
        for r in range(len(z)):
            target = [mp.mpf(float(v)) for v in tt[r]] if tt.ndim == 2 else int(tt[r])
            losses[r], grad[r], terms[r] = exact([mp.mpf(float(v)) for v in z[r]], target, w, params)
        return losses.reshape(lshape), back(grad), back(terms)


def _operand(loss):
    from fastloss._registry import BY_NAME

    return BY_NAME[loss].operand or "pos_weight"


def exact_loss_terms(loss, x, t, kwargs):
    """The record's ``exact_loss_terms`` per element (an object array of mpf shaped like the
    "none" result), or None for a loss held to ULP of its own value."""
    fn = REFERENCES[loss].exact_loss_terms
    if fn is None:
        return None
    mp = mpmath_module()
    with mp.workprec(EXACT_PREC):
        x64, t64, kw = _float64_args(x, t, kwargs)
        params = {**_registry_defaults(loss), **{k: v for k, v in kw.items() if not isinstance(v, np.ndarray)}}
        w = broadcast(kw.get("weight"), x64.shape)
        pw = broadcast(kw.get("pos_weight"), x64.shape)
        out = np.empty(x64.shape, object)
        for i in np.ndindex(x64.shape):
            out[i] = fn(mp.mpf(float(x64[i])), mp.mpf(float(t64[i])), mp.mpf(float(w[i])), mp.mpf(float(pw[i])),
                        params)
        return out


def _is_elementwise(loss):
    from fastloss._registry import BY_NAME

    return BY_NAME[loss].kind == "elementwise"


def _integer_params(loss):
    """The scalar parameters that stay integers (or bools) in the exact terms (ignore_index,
    and the parameters of type int or bool, such as multi_margin_loss's p, kl_div's
    log_target)."""
    from fastloss._registry import BY_NAME

    return {p.name for p in BY_NAME[loss].params if p.type in (int, bool)} | {"ignore_index"}


def _registry_defaults(loss):
    from fastloss._registry import BY_NAME

    spec = BY_NAME[loss]
    return ({p.name: p.default for p in spec.params} | ({"ignore_index": -100} if spec.ignore_index else {})
            | ({"quantile": 0.5} if spec.quantile else {}))


def exact_bce_logits(x, y, pos_weight=1.0):
    """(loss, grad) of binary_cross_entropy_with_logits for one element, exact (as floats);
    infinite x gives the limit for the fixed target y."""
    kw = {"pos_weight": np.array([pos_weight])}
    value, grad, _ = exact_terms("binary_cross_entropy_with_logits", np.array([x]), np.array([y]), kw)
    return float(value[0]), float(grad[0])


def exact_cross_entropy_row(row, target):
    """(loss, grad) of cross_entropy for one row of logits and a class index, exact (as floats)."""
    value, grad, _ = exact_terms("cross_entropy", np.array(row, np.float64), np.array(target), {})
    return float(value[()]), np.array([float(g) for g in grad])
