"""The independent references the tests hold fastloss to.

(a) PyTorch, when importable: ``torch.nn.functional.<name>`` (the hinges, which PyTorch
    lacks, written in torch from their formula); the gradient is torch's autograd of the
    returned loss (of its sum for ``reduction="none"``). It runs in float64 on the very
    values fastloss sees (float32 inputs, weights and targets widened exactly): PyTorch's
    own float32 arithmetic loses up to ~1e-5 relative in places (BCE-with-logits computes
    a loss of 0.018 at x = -4 as the difference of two numbers near 4), and the contract
    holds fastloss to PyTorch's *accurate* result, never to its rounding errors.
(b) float64 formulas written here directly in NumPy from the mathematics (never calling
    fastloss), with analytic gradients, and central finite differences of those formulas
    (``fd_grad``) to check the gradients away from the kinks.

``reference()`` uses (a) when torch is installed and (b) otherwise. The tests also run (b)
against fastloss always, and check (b)'s analytic gradients by finite differences, so both
references are exercised whether or not torch is installed.

Every function takes fastloss's arguments: ``(loss name, input, target, kwargs, reduction)``
with weights already materialised as arrays.
"""

from __future__ import annotations

import math

import numpy as np

try:  # the reference when installed
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - exercised on machines without torch
    torch = None

HAVE_TORCH = torch is not None
NAME = "torch" if HAVE_TORCH else "formulas"

# The losses torch.nn.functional lacks: their torch reference is written here from the
# formula, so the PyTorch conventions (NaN and inf handling) do not apply to them.
NOT_IN_TORCH = frozenset({"hinge_loss", "squared_hinge_loss"})

# PyTorch's binary_cross_entropy gradient divides by max(x * (1 - x), EPSILON) with
# EPSILON a C++ *float* 1e-12 (aten/src/ATen/native/Loss.cpp), i.e. 9.999999960041972e-13
# once widened to double.
BCE_GRAD_EPSILON = float(np.float32(1e-12))


# =========================================================================== (a) torch

def _torch_elementwise_weight(weight, x):
    return None if weight is None else weight.expand(x.shape)


def _torch_hinge(square):
    def loss(x, t, *, margin=1.0, weight=None, reduction):
        z = torch.clamp(margin - t * x, min=0)
        per = z * z if square else z
        if weight is not None:
            w = weight.expand(x.shape)
            per = per * w
            divisor = w.sum()
        else:
            divisor = per.numel()
        if reduction == "none":
            return per
        if reduction == "sum":
            return per.sum()
        return per.sum() / divisor

    return loss


if HAVE_TORCH:
    TORCH = {
        "mse_loss": lambda x, t, weight=None, **kw: F.mse_loss(
            x, t, weight=_torch_elementwise_weight(weight, x), **kw),
        "l1_loss": lambda x, t, weight=None, **kw: F.l1_loss(
            x, t, weight=_torch_elementwise_weight(weight, x), **kw),
        "huber_loss": lambda x, t, weight=None, **kw: F.huber_loss(
            x, t, weight=_torch_elementwise_weight(weight, x), **kw),
        "smooth_l1_loss": F.smooth_l1_loss,
        "binary_cross_entropy": lambda x, t, weight=None, **kw: F.binary_cross_entropy(
            x, t, weight=_torch_elementwise_weight(weight, x), **kw),
        "binary_cross_entropy_with_logits": F.binary_cross_entropy_with_logits,
        "cross_entropy": F.cross_entropy,
        "nll_loss": F.nll_loss,
        "multi_margin_loss": F.multi_margin_loss,
        "hinge_loss": _torch_hinge(square=False),
        "squared_hinge_loss": _torch_hinge(square=True),
    }
else:  # pragma: no cover
    TORCH = {}


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
    out = TORCH[loss](xt, tt, reduction=reduction, **kw)
    (out.sum() if reduction == "none" else out).backward()
    grad = xt.grad.numpy() if xt.grad is not None else np.zeros(xt.shape, dtype)
    value = out.detach().numpy()
    return (value if reduction == "none" else value[()]), grad


# =========================================================================== (b) formulas
# Each formula takes float64 arrays and returns (per-term losses, mean divisor, gradient of
# the sum of the per-term losses with respect to x). The mean divisors follow PyTorch's
# documentation of each loss (torch.nn.*Loss), written out here.

def _broadcast(weight, shape):
    if weight is None:
        return np.ones(shape)
    return np.broadcast_to(np.asarray(weight, np.float64), shape)


def _sign_torch(r):
    """sign with sign(NaN) = 0: PyTorch's L1 gradient."""
    return np.where(r > 0, 1.0, np.where(r < 0, -1.0, 0.0))


def f_mse(x, t, weight=None):
    w = _broadcast(weight, x.shape)
    r = x - t
    return w * r * r, w.sum(), 2.0 * w * r


def f_l1(x, t, weight=None):
    w = _broadcast(weight, x.shape)
    r = x - t
    return w * np.abs(r), w.sum(), w * _sign_torch(r)


def f_huber(x, t, delta=1.0, weight=None):
    w = _broadcast(weight, x.shape)
    r = x - t
    quadratic = np.abs(r) < delta
    per = np.where(quadratic, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
    # PyTorch: the mean of the weighted losses divides by the element count.
    return w * per, float(x.size), w * np.clip(r, -delta, delta)


def f_smooth_l1(x, t, beta=1.0):
    r = x - t
    if beta == 0:  # PyTorch: beta == 0 is l1_loss
        return np.abs(r), float(x.size), _sign_torch(r)
    quadratic = np.abs(r) < beta
    per = np.where(quadratic, 0.5 * r * r / beta, np.abs(r) - 0.5 * beta)
    return per, float(x.size), np.clip(r / beta, -1.0, 1.0)


def f_bce(x, t, weight=None):
    w = _broadcast(weight, x.shape)
    log_x = np.maximum(np.log(x), -100.0)
    log_1mx = np.maximum(np.log1p(-x), -100.0)  # log(1 - x), accurate for tiny x
    per = -w * (t * log_x + (1.0 - t) * log_1mx)
    # d/dx of -(t log x + (1-t) log(1-x)) is (x - t) / (x (1 - x)); PyTorch bounds the
    # denominator below by its EPSILON (equal to the derivative away from x = 0, 1).
    grad = w * (x - t) / np.maximum(x * (1.0 - x), BCE_GRAD_EPSILON)
    return per, float(x.size), grad


def _softplus(x):
    """log(1 + e^x), exact for every real x including +-inf."""
    return np.logaddexp(0.0, x)


def _times(a, b):
    """a * b with 0 * inf = 0: the limit of the loss as x -> +-inf for a fixed target."""
    return np.where(a == 0, 0.0, a * b)


def _expit(x):
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


def f_bce_logits(x, t, weight=None, pos_weight=None):
    w = _broadcast(weight, x.shape)
    pw = _broadcast(pos_weight, x.shape)
    per = _times(1.0 - t, _softplus(x)) + _times(pw * t, _softplus(-x))
    grad = (1.0 - t) * _expit(x) - pw * t * _expit(-x)
    return w * per, float(x.size), w * grad


def f_hinge(x, t, margin=1.0, weight=None):
    w = _broadcast(weight, x.shape)
    z = margin - t * x
    return w * np.maximum(z, 0.0), w.sum(), np.where(z > 0, -w * t, np.where(np.isnan(z), np.nan, 0.0))


def f_squared_hinge(x, t, margin=1.0, weight=None):
    w = _broadcast(weight, x.shape)
    h = np.maximum(margin - t * x, 0.0)
    return w * h * h, w.sum(), -2.0 * w * t * h


def _rows(x, t):
    """Class losses on rows: x -> (M, C) with the class axis last, t -> (M,)."""
    ax = 0 if x.ndim == 1 else 1
    xm = np.moveaxis(x, ax, -1)
    back = lambda g: np.moveaxis(g.reshape(xm.shape), -1, ax)  # noqa: E731
    tm = np.asarray(t)
    if tm.shape == x.shape:  # class probabilities
        tm = np.moveaxis(tm, ax, -1).reshape(-1, x.shape[ax])
    else:
        tm = tm.reshape(-1)
    return xm.reshape(-1, x.shape[ax]), tm, back, xm.shape[:-1]


def _log_softmax_rows(z):
    """log softmax of each row: (z - max) - log(sum(exp(z - max))), the stable textbook
    form (an infinite logit makes z - max NaN and so the whole row NaN, as in PyTorch)."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def f_cross_entropy(x, t, weight=None, ignore_index=-100, label_smoothing=0.0):
    z, tt, back, lshape = _rows(x, t)
    n_classes = z.shape[1]
    w = np.ones(n_classes) if weight is None else np.asarray(weight, np.float64)
    eps = label_smoothing
    logp = _log_softmax_rows(z)
    p = np.exp(logp)
    if tt.ndim == 2:  # class probabilities; "mean" divides by the number of samples
        q = (1.0 - eps) * tt + eps / n_classes
        per = -(w * q * logp).sum(axis=1)
        grad = p * (w * q).sum(axis=1, keepdims=True) - w * q
        return per.reshape(lshape), float(per.size), back(grad)
    kept = tt != ignore_index
    y = np.where(kept, tt, 0)
    rows = np.arange(len(tt))
    wy = np.where(kept, w[y], 0.0)
    nll = -wy * logp[rows, y]
    onehot = np.zeros_like(z)
    onehot[rows, y] = 1.0
    per = nll
    grad = wy[:, None] * (p - onehot)
    if eps > 0:  # the smoothing term exists only for eps > 0 (no 0 * inf at eps = 0)
        smooth = np.where(kept, -(w * logp).sum(axis=1), 0.0)
        per = (1.0 - eps) * nll + eps / n_classes * smooth
        grad = (1.0 - eps) * grad + eps / n_classes * (p * w.sum() - w)
    grad = np.where(kept[:, None], grad, 0.0)
    return per.reshape(lshape), float(wy.sum()), back(grad)


def f_nll(x, t, weight=None, ignore_index=-100):
    z, tt, back, lshape = _rows(x, t)
    w = np.ones(z.shape[1]) if weight is None else np.asarray(weight, np.float64)
    kept = tt != ignore_index
    y = np.where(kept, tt, 0)
    rows = np.arange(len(tt))
    wy = np.where(kept, w[y], 0.0)
    per = np.where(kept, -wy * z[rows, y], 0.0)
    grad = np.zeros_like(z)
    grad[rows, y] = -wy
    return per.reshape(lshape), float(wy.sum()), back(grad)


def f_multi_margin(x, t, p=1, margin=1.0, weight=None):
    z, tt, back, lshape = _rows(x, t)
    n_classes = z.shape[1]
    w = np.ones(n_classes) if weight is None else np.asarray(weight, np.float64)
    rows = np.arange(len(tt))
    wy = w[tt]
    hinge = margin - z[rows, tt][:, None] + z
    active = hinge > 0  # NaN is not active (PyTorch)
    active[rows, tt] = False
    h = np.where(active, hinge, 0.0)
    per = wy * (h ** p).sum(axis=1) / n_classes
    dh = np.where(active, (1.0 if p == 1 else 2.0 * h) * wy[:, None] / n_classes, 0.0)
    grad = dh.copy()
    grad[rows, tt] = -dh.sum(axis=1)
    return per.reshape(lshape), float(len(tt)), back(grad)


FORMULAS = {
    "mse_loss": f_mse,
    "l1_loss": f_l1,
    "huber_loss": f_huber,
    "smooth_l1_loss": f_smooth_l1,
    "binary_cross_entropy": f_bce,
    "binary_cross_entropy_with_logits": f_bce_logits,
    "cross_entropy": f_cross_entropy,
    "nll_loss": f_nll,
    "multi_margin_loss": f_multi_margin,
    "hinge_loss": f_hinge,
    "squared_hinge_loss": f_squared_hinge,
}


def _float64_args(x, t, kwargs):
    x64 = np.array(x, dtype=np.float64)
    t = np.asarray(t)
    t64 = np.array(t, dtype=np.float64 if t.dtype.kind in "fb" else np.int64)
    kw = {k: (np.array(v, dtype=np.float64) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
    return x64, t64, kw


def _reduce(per, divisor, grad, reduction):
    if reduction == "none":
        return per, grad
    total = math.fsum(per.reshape(-1)) if np.isfinite(per).all() else float(np.sum(per))
    if reduction == "sum":
        return total, grad
    value = total / divisor if divisor else (math.nan if total == 0 or math.isnan(total) else math.copysign(math.inf, total))
    return value, grad / divisor if divisor else grad * math.nan


def formula_reference(loss, x, t, kwargs, reduction):
    """float64 ``(loss, grad)`` from the formulas above."""
    x64, t64, kw = _float64_args(x, t, kwargs)
    with np.errstate(all="ignore"):
        per, divisor, grad = FORMULAS[loss](x64, t64, **kw)
        return _reduce(per, divisor, grad, reduction)


def formula_value(loss, x64, t64, kw, reduction):
    with np.errstate(all="ignore"):
        per, divisor, _ = FORMULAS[loss](x64, t64, **kw)
    if reduction == "mean":
        return math.fsum(per.reshape(-1)) / divisor
    return math.fsum(per.reshape(-1))


def fd_grad(loss, x, t, kwargs, reduction, rel_step=1e-4):
    """Central finite differences (fourth order) of the formula loss (its sum for "none")
    with respect to every element of ``x``, in float64. Valid away from the kinks."""
    x64, t64, kw = _float64_args(x, t, kwargs)
    red = "sum" if reduction == "none" else reduction
    grad = np.empty_like(x64)
    for idx in np.ndindex(x64.shape):
        x0 = x64[idx]
        h = rel_step * max(1.0, abs(x0))
        values = []
        for k in (-2, -1, 1, 2):
            xp = x64.copy()
            xp[idx] = x0 + k * h
            values.append(formula_value(loss, xp, t64, kw, red))
        fm2, fm1, fp1, fp2 = values
        grad[idx] = (fm2 - 8.0 * fm1 + 8.0 * fp1 - fp2) / (12.0 * h)
    return grad


# =========================================================================== the choice

def reference(loss, x, t, kwargs, reduction):
    """``(loss, grad)``: PyTorch when installed, else the float64 formulas."""
    if HAVE_TORCH:
        return torch_reference(loss, x, t, kwargs, reduction)
    return formula_reference(loss, x, t, kwargs, reduction)  # pragma: no cover


# =========================================================================== exact values

def exact_bce_logits(x, y, pos_weight=1.0, dps=60):
    """(loss, grad) of binary_cross_entropy_with_logits for one element, with mpmath at
    ``dps`` digits; infinite x gives the limit for the fixed target y."""
    import mpmath

    with mpmath.workdps(dps):
        x, y, p = mpmath.mpf(float(x)), mpmath.mpf(float(y)), mpmath.mpf(float(pos_weight))

        def softplus(v):
            if mpmath.isinf(v):
                return v if v > 0 else mpmath.mpf(0)
            return mpmath.log1p(mpmath.exp(v))

        def times(a, b):
            return mpmath.mpf(0) if a == 0 else a * b

        def sigmoid(v):
            if mpmath.isinf(v):
                return mpmath.mpf(1) if v > 0 else mpmath.mpf(0)
            return 1 / (1 + mpmath.exp(-v))

        loss = times(1 - y, softplus(x)) + times(p * y, softplus(-x))
        grad = (1 - y) * sigmoid(x) - p * y * sigmoid(-x)
        return float(loss), float(grad)


def exact_cross_entropy_row(row, target, dps=60):
    """(loss, grad) of cross_entropy for one row of logits and a class index, with mpmath."""
    import mpmath

    with mpmath.workdps(dps):
        z = [mpmath.mpf(float(v)) for v in row]
        m = max(z)
        s = mpmath.fsum(mpmath.exp(v - m) for v in z)
        # (m - z_y) + log(s), never m + log(s) - z_y: at 1e300 the latter needs 300 digits
        loss = (m - z[target]) + mpmath.log(s)
        grad = [mpmath.exp(v - m) / s - (1 if c == target else 0) for c, v in enumerate(z)]
        return float(loss), np.array([float(g) for g in grad])
