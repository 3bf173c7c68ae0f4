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


# Where each loss's gradient may be non-zero (depends_on): every registry loss, by name.
GRADIENT_SUPPORT = {
    "mse_loss": "everywhere",
    "l1_loss": "everywhere",
    "huber_loss": "everywhere",
    "smooth_l1_loss": "everywhere",
    "binary_cross_entropy": "everywhere",
    "binary_cross_entropy_with_logits": "everywhere",
    "cross_entropy": "kept samples",
    "nll_loss": "kept targets",
    "multi_margin_loss": "everywhere",
    "hinge_loss": "active terms",
    "squared_hinge_loss": "active terms",
}


def depends_on(loss, x, t, kwargs):
    """Where the gradient is a weight times a derivative (bool, shaped like ``x``): for the
    hinges only at the active terms (margin - y x > 0, or NaN), not on the flat side nor at
    the kink, where it is a selected 0 (PyTorch's clamp backward is a select); for class
    indices not at the ignored samples, and for ``nll_loss`` only at each kept sample's
    target class; everywhere else. Outside, the gradient is 0 by structure, even when "mean"
    divides by a zero weight sum."""
    support = GRADIENT_SUPPORT[loss]
    if support == "active terms":
        z = kwargs.get("margin", 1.0) - np.asarray(t) * np.asarray(x)
        return ~(z <= 0)
    if support == "everywhere" or np.shape(t) == np.shape(x):  # or class probabilities
        return np.ones(np.shape(x), bool)
    z, tt, back, _ = _rows(np.asarray(x), t)
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
        per, divisor, grad = FORMULAS[loss](x64, t64, **kw)
        return _reduce(per, divisor, grad, reduction, depends_on(loss, x64, t64, kw))


def formula_value(loss, x64, t64, kw, reduction):
    with np.errstate(all="ignore"):
        per, divisor, _ = FORMULAS[loss](x64, t64, **kw)
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
# Each function returns, per term, (loss, grad, terms): grad is the derivative of the
# weighted loss with respect to the input, and ``terms`` the magnitude of the largest of
# the quantities the formula *subtracts* to form that gradient component (0 where it
# subtracts nothing). Where two terms of opposite sign nearly cancel (sigmoid(x) - y for a
# soft target y, softmax - target for class probabilities) the exact difference is not
# attainable from rounded terms by any implementation, so its error is measured in ULP of
# ``terms`` instead of ULP of the tiny result.

EXACT_PREC = 256


def _mpmath():
    import mpmath

    return mpmath


def _exact_sub(a, b):
    return _mpmath().fsub(a, b, exact=True)


def _exact_softplus(v):
    """log(1 + e^v) for any mpf v (the limits at +-inf)."""
    mp = _mpmath()
    if mp.isinf(v):
        return v if v > 0 else mp.mpf(0)
    if v > 0:  # v + log1p(e^-v): no huge exp for huge v
        return v + mp.log1p(mp.exp(-v))
    return mp.log1p(mp.exp(v))


def _exact_sigmoid(v):
    mp = _mpmath()
    if mp.isinf(v):
        return mp.mpf(1) if v > 0 else mp.mpf(0)
    return 1 / (1 + mp.exp(-v))


def _exact_times(a, b):
    """a * b with 0 * inf = 0 (the limit of a term whose coefficient is 0)."""
    return a * 0 if a == 0 else a * b


def _exact_elementwise_term(loss, x, y, w, pw, params):
    """(loss, grad, terms) of one element; x, y, w, pw, params are mpf."""
    mp = _mpmath()
    zero = mp.mpf(0)
    if loss in ("mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss"):
        r = _exact_sub(x, y)
        a, sign = abs(r), mp.sign(r)
        if loss == "mse_loss":
            return w * r * r, 2 * w * r, zero
        if loss == "l1_loss" or (loss == "smooth_l1_loss" and params["beta"] == 0):
            return w * a, w * sign, zero
        if loss == "huber_loss":
            d = params["delta"]
            value = a * a / 2 if a < d else d * (a - d / 2)
            return w * value, w * max(-d, min(r, d)), zero
        b = params["beta"]
        return (a * a / (2 * b), r / b, zero) if a < b else (a - b / 2, sign, zero)
    if loss == "binary_cross_entropy":
        log_x = max(mp.log(x), mp.mpf(-100)) if x > 0 else mp.mpf(-100)
        log_1mx = max(mp.log1p(-x), mp.mpf(-100)) if x < 1 else mp.mpf(-100)
        value = -w * (y * log_x + (1 - y) * log_1mx)
        return value, w * _exact_sub(x, y) / max(x * (1 - x), mp.mpf(BCE_GRAD_EPSILON)), zero
    if loss == "binary_cross_entropy_with_logits":
        neg, pos = 1 - y, pw * y
        value = w * (_exact_times(neg, _exact_softplus(x)) + _exact_times(pos, _exact_softplus(-x)))
        a, b = neg * _exact_sigmoid(x), pos * _exact_sigmoid(-x)
        return value, w * (a - b), (w * max(a, b) if a and b else zero)
    if loss in ("hinge_loss", "squared_hinge_loss"):
        z = _exact_sub(params["margin"], y * x)
        h = max(z, zero)
        if loss == "hinge_loss":
            return w * h, (-w * y if z > 0 else zero), zero
        return w * h * h, -2 * w * y * h, zero
    raise KeyError(loss)


def _neg_log_softmax(z):
    """-log softmax(z)_c for every c, exactly: (m - z_c) + log(sum_d e^(z_d - m)) for
    z_c < m (two positive terms), log1p(sum_{d != c} e^(z_d - z_c)) when z_c is the max
    (the tiny losses of confident predictions keep their relative accuracy)."""
    mp = _mpmath()
    m = max(z)
    e = [mp.exp(_exact_sub(v, m)) for v in z]
    log_s = mp.log(mp.fsum(e))
    out = []
    for c, v in enumerate(z):
        if v == m:
            out.append(mp.log1p(mp.fsum(e[d] for d in range(len(z)) if d != c)))
        else:
            out.append(_exact_sub(m, v) + log_s)
    return out, e


def _exact_class_row(loss, z, target, w, params):
    """(loss, grad list, terms list) of one sample of a class loss; z, w are lists of mpf,
    target an int class index (or a list of mpf probabilities for cross_entropy)."""
    mp = _mpmath()
    n_classes = len(z)
    zero = mp.mpf(0)
    zeros = [zero] * n_classes
    if loss == "nll_loss":
        if target == params.get("ignore_index", -100):
            return zero, zeros, zeros
        grad = list(zeros)
        grad[target] = -w[target]
        return -w[target] * z[target], grad, zeros
    if loss == "multi_margin_loss":
        p = int(params.get("p", 1))
        hinge = [_exact_sub(v, z[target]) + params.get("margin", 1.0) if c != target else zero
                 for c, v in enumerate(z)]
        hinge = [max(h, zero) for h in hinge]
        factor = w[target] / n_classes
        grad = [factor * (p * h ** (p - 1)) if h > 0 else zero for h in hinge]
        grad[target] = -mp.fsum(grad)
        return factor * mp.fsum(h ** p for h in hinge), grad, zeros
    if loss != "cross_entropy":
        raise KeyError(loss)
    eps = mp.mpf(params.get("label_smoothing", 0.0))
    nlogp, e = _neg_log_softmax(z)
    s = mp.fsum(e)
    p = [v / s for v in e]
    if isinstance(target, list):  # class probabilities
        q = [(1 - eps) * y + eps / n_classes for y in target]
        wq = [wc * qc for wc, qc in zip(w, q)]
        coef = mp.fsum(wq)
        value = mp.fsum(a * b for a, b in zip(wq, nlogp))
        grad = [pc * coef - t for pc, t in zip(p, wq)]
        return value, grad, [max(abs(pc * coef), abs(t)) for pc, t in zip(p, wq)]
    if target == params.get("ignore_index", -100):
        return zero, zeros, zeros
    w_y = w[target]
    # p_y - 1 = -(sum of the other classes' e) / s: no cancellation
    p_minus_hot = [pc if c != target else -mp.fsum(e[d] for d in range(n_classes) if d != target) / s
                   for c, pc in enumerate(p)]
    value = w_y * nlogp[target]
    grad = [w_y * v for v in p_minus_hot]
    if eps == 0:
        return value, grad, zeros
    total_w = mp.fsum(w)
    value = (1 - eps) * value + eps / n_classes * mp.fsum(wc * v for wc, v in zip(w, nlogp))
    grad = [(1 - eps) * g + eps / n_classes * (pc * total_w - wc) for g, pc, wc in zip(grad, p, w)]
    # what fastloss's gradient subtracts: the target part from the softmax part
    terms = [max(abs(((1 - eps) * w_y + eps / n_classes * total_w) * pc),
                 abs((1 - eps) * (w_y if c == target else 0) + eps / n_classes * wc))
             for c, (pc, wc) in enumerate(zip(p, w))]
    return value, grad, terms


def exact_terms(loss, x, t, kwargs):
    """Exact per-term losses, gradient and subtracted-term magnitudes for fastloss's
    arguments (``kwargs`` with weights as arrays, scalar parameters as numbers): three
    object arrays of mpf, shaped like the "none" result, the input and the input."""
    mp = _mpmath()
    with mp.workprec(EXACT_PREC):
        x64, t64, kw = _float64_args(x, t, kwargs)
        mpf = np.vectorize(lambda v: mp.mpf(float(v)), otypes=[object])
        params = {**_registry_defaults(loss), **{k: v for k, v in kw.items() if not isinstance(v, np.ndarray)}}
        params = {k: (v if k in ("p", "ignore_index") else mp.mpf(float(v))) for k, v in params.items()}
        if _is_elementwise(loss):
            shape = x64.shape
            w = mpf(_broadcast(kw.get("weight"), shape))
            pw = mpf(_broadcast(kw.get("pos_weight"), shape))
            xs, ys = mpf(x64), mpf(t64)
            out = [np.empty(shape, object) for _ in range(3)]
            for i in np.ndindex(shape):
                for arr, v in zip(out, _exact_elementwise_term(loss, xs[i], ys[i], w[i], pw[i], params)):
                    arr[i] = v
            return tuple(out)
        z, tt, back, lshape = _rows(x64, t64)
        weight = kw.get("weight")
        w = [mp.mpf(1)] * z.shape[1] if weight is None else [mp.mpf(float(v)) for v in weight]
        losses = np.empty(len(z), object)
        grad, terms = np.empty(z.shape, object), np.empty(z.shape, object)
        for r in range(len(z)):
            target = [mp.mpf(float(v)) for v in tt[r]] if tt.ndim == 2 else int(tt[r])
            losses[r], grad[r], terms[r] = _exact_class_row(loss, [mp.mpf(float(v)) for v in z[r]], target, w, params)
        return losses.reshape(lshape), back(grad), back(terms)


def _is_elementwise(loss):
    from fastloss._registry import BY_NAME

    return BY_NAME[loss].kind == "elementwise"


def _registry_defaults(loss):
    from fastloss._registry import BY_NAME

    spec = BY_NAME[loss]
    return {p.name: p.default for p in spec.params} | ({"ignore_index": -100} if spec.ignore_index else {})


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
