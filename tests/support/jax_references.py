"""JAX references of every registry loss, for tests/jax: optax where optax has the loss,
jax.numpy written from the loss's formula (PyTorch's conventions: weights, ignore_index,
label smoothing, the "mean" divisor of the registry) otherwise. Each reference is a plain
differentiable JAX function, so ``jax.grad`` of it is the reference gradient.

``REFERENCES[name](x, t, reduction, **kwargs)``: ``x`` and ``t`` JAX arrays (class indices
as integers), ``kwargs`` fastloss's keyword arguments (weights as arrays, scalar
parameters as numbers). Imported only where JAX is (tests/jax)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import xlogy

from fastloss._registry import BY_NAME

# --------------------------------------------------------------------------- reductions


def _elementwise(name, per, x, weight, reduction):
    """Reduce the per-element losses ``per`` (weight already applied): "mean" divides by the
    registry's divisor (the sum of the weight broadcast to the input for "weight_sum", the
    element count for "count"), "batchmean" by x.shape[0] (1 for a 0-d input)."""
    if reduction == "none":
        return per
    total = jnp.sum(per)
    if reduction == "sum":
        return total
    if reduction == "batchmean":
        return total / (x.shape[0] if x.ndim else 1)
    if BY_NAME[name].mean_divisor == "weight_sum" and weight is not None:
        return total / jnp.sum(jnp.broadcast_to(weight, x.shape))
    return total / per.size


def _w(weight, x):
    return 1.0 if weight is None else jnp.broadcast_to(weight, x.shape)


def _rows(x, t):
    """Class axis last, samples flattened: x (C,) -> (1, C), (N, C, d...) -> (N * d..., C);
    t likewise (indices -> (S,), probabilities -> (S, C)); and the shape of the per-sample
    losses ("none")."""
    if x.ndim == 1:
        return x[None, :], (t[None, :] if t.shape == x.shape else t.reshape(1)), ()
    xm = jnp.moveaxis(x, 1, -1)
    shape = xm.shape[:-1]
    tm = jnp.moveaxis(t, 1, -1).reshape(-1, x.shape[1]) if t.shape == x.shape else t.reshape(-1)
    return xm.reshape(-1, x.shape[1]), tm, shape


def _classes(per, divisor, shape, reduction):
    if reduction == "none":
        return per.reshape(shape)
    total = jnp.sum(per)
    return total if reduction == "sum" else total / divisor


def _kept(t, ignore_index):
    keep = t != ignore_index
    return keep, jnp.where(keep, t, 0)


# --------------------------------------------------------------------------- elementwise


def mse_loss(x, t, reduction, weight=None):
    return _elementwise("mse_loss", _w(weight, x) * optax.squared_error(x, t), x, weight, reduction)


def l1_loss(x, t, reduction, weight=None):
    return _elementwise("l1_loss", _w(weight, x) * jnp.abs(x - t), x, weight, reduction)


def huber_loss(x, t, reduction, weight=None, delta=1.0):
    return _elementwise("huber_loss", _w(weight, x) * optax.huber_loss(x, t, delta=delta), x, weight, reduction)


def smooth_l1_loss(x, t, reduction, beta=1.0):
    # huber(r, beta) / beta: 0.5 r**2 / beta for |r| < beta, |r| - 0.5 beta beyond; beta = 0: |r|
    per = jnp.abs(x - t) if beta == 0 else optax.huber_loss(x, t, delta=beta) / beta
    return _elementwise("smooth_l1_loss", per, x, None, reduction)


def binary_cross_entropy(x, t, reduction, weight=None):
    # -(y max(log x, -100) + (1 - y) max(log(1 - x), -100)), PyTorch's clamp
    per = -(t * jnp.maximum(jnp.log(x), -100.0) + (1 - t) * jnp.maximum(jnp.log1p(-x), -100.0))
    return _elementwise("binary_cross_entropy", _w(weight, x) * per, x, weight, reduction)


def binary_cross_entropy_with_logits(x, t, reduction, weight=None, pos_weight=None):
    if pos_weight is None:
        per = optax.sigmoid_binary_cross_entropy(x, t)  # (1 - y) softplus(x) + y softplus(-x)
    else:  # (1 - y) softplus(x) + p y softplus(-x)
        per = (1 - t) * jax.nn.softplus(x) + jnp.broadcast_to(pos_weight, x.shape) * t * jax.nn.softplus(-x)
    return _elementwise("binary_cross_entropy_with_logits", _w(weight, x) * per, x, weight, reduction)


def hinge_loss(x, t, reduction, weight=None, margin=1.0):
    # max(0, margin - y x); optax's hinge_loss is the margin-1 case
    per = optax.hinge_loss(x, t) if margin == 1.0 else jnp.maximum(0.0, margin - t * x)
    return _elementwise("hinge_loss", _w(weight, x) * per, x, weight, reduction)


def squared_hinge_loss(x, t, reduction, weight=None, margin=1.0):
    per = jnp.maximum(0.0, margin - t * x) ** 2
    return _elementwise("squared_hinge_loss", _w(weight, x) * per, x, weight, reduction)


def pinball_loss(x, t, reduction, weight=None, quantile=0.5):
    r, q = t - x, jnp.broadcast_to(jnp.asarray(quantile, x.dtype), x.shape)
    per = jnp.maximum(q * r, (q - 1) * r)
    return _elementwise("pinball_loss", _w(weight, x) * per, x, weight, reduction)


def _poisson_deviance(x, t):
    # 2 (y log(y / mu) - y + mu), mu = exp(x); y log y = 0 at y = 0
    return 2 * (xlogy(t, t) - t * x - t + jnp.exp(x))


def _gamma_deviance(x, t):
    # 2 (log(mu / y) + y / mu - 1)
    return 2 * (x - jnp.log(t) + t * jnp.exp(-x) - 1)


def poisson_deviance(x, t, reduction, weight=None):
    return _elementwise("poisson_deviance", _w(weight, x) * _poisson_deviance(x, t), x, weight, reduction)


def gamma_deviance(x, t, reduction, weight=None):
    return _elementwise("gamma_deviance", _w(weight, x) * _gamma_deviance(x, t), x, weight, reduction)


def tweedie_deviance(x, t, reduction, weight=None, power=1.5):
    p = power
    if p == 1.0:
        per = _poisson_deviance(x, t)
    elif p == 2.0:
        per = _gamma_deviance(x, t)
    else:  # 2 (y**(2-p) / ((1-p)(2-p)) - y mu**(1-p) / (1-p) + mu**(2-p) / (2-p))
        per = 2 * (t ** (2 - p) / ((1 - p) * (2 - p)) - t * jnp.exp((1 - p) * x) / (1 - p)
                   + jnp.exp((2 - p) * x) / (2 - p))
    return _elementwise("tweedie_deviance", _w(weight, x) * per, x, weight, reduction)


def log_cosh_loss(x, t, reduction, weight=None):
    return _elementwise("log_cosh_loss", _w(weight, x) * optax.log_cosh(x, t), x, weight, reduction)


def pseudo_huber_loss(x, t, reduction, weight=None, delta=1.0):
    per = delta ** 2 * (jnp.sqrt(1 + ((x - t) / delta) ** 2) - 1)
    return _elementwise("pseudo_huber_loss", _w(weight, x) * per, x, weight, reduction)


def sigmoid_focal_loss(x, t, reduction, alpha=0.25, gamma=2.0):
    # optax: alpha_t ce (1 - p_t)**gamma, alpha None = no weighting (fastloss: alpha < 0)
    per = optax.sigmoid_focal_loss(x, t, alpha=None if alpha < 0 else alpha, gamma=gamma)
    return _elementwise("sigmoid_focal_loss", per, x, None, reduction)


def poisson_nll_loss(x, t, reduction, log_input=True, full=False, eps=1e-8):
    per = jnp.exp(x) - t * x if log_input else x - t * jnp.log(x + eps)
    if full:  # Stirling: y log y - y + 0.5 log(2 pi y) where y > 1
        safe = jnp.where(t > 1, t, 2.0)
        per = per + jnp.where(t > 1, safe * jnp.log(safe) - safe + 0.5 * jnp.log(2 * math.pi * safe), 0.0)
    return _elementwise("poisson_nll_loss", per, x, None, reduction)


def kl_div(x, t, reduction, log_target=False):
    # y (log y - x), 0 where y == 0; log_target: exp(y) (y - x)
    per = jnp.exp(t) * (t - x) if log_target else xlogy(t, t) - t * x
    return _elementwise("kl_div", per, x, None, reduction)


# --------------------------------------------------------------------------- classes


def cross_entropy(x, t, reduction, weight=None, ignore_index=-100, label_smoothing=0.0):
    z, tt, shape = _rows(x, t)
    n_classes = z.shape[1]
    w = jnp.ones(n_classes, z.dtype) if weight is None else weight
    logp = jax.nn.log_softmax(z, axis=1)
    eps = label_smoothing
    if tt.ndim == 2:  # class probabilities: -sum_c w[c] q[c] logp[c], q = (1 - eps) y + eps / C
        q = (1 - eps) * tt + eps / n_classes
        per = optax.softmax_cross_entropy(z, q) if weight is None else -jnp.sum(w * q * logp, axis=1)
        return _classes(per, per.shape[0], shape, reduction)
    keep, safe = _kept(tt, ignore_index)
    # (1 - eps) w[y] (-logp[y]) + eps / C sum_c w[c] (-logp[c]); optax's integer-label loss is -logp[y]
    nll = optax.softmax_cross_entropy_with_integer_labels(z, safe)
    per = (1 - eps) * w[safe] * nll + eps / n_classes * -jnp.sum(w * logp, axis=1)
    per = jnp.where(keep, per, 0.0)
    return _classes(per, jnp.sum(jnp.where(keep, w[safe], 0.0)), shape, reduction)


def nll_loss(x, t, reduction, weight=None, ignore_index=-100):
    z, tt, shape = _rows(x, t)
    w = jnp.ones(z.shape[1], z.dtype) if weight is None else weight
    keep, safe = _kept(tt, ignore_index)
    per = jnp.where(keep, -w[safe] * jnp.take_along_axis(z, safe[:, None], axis=1)[:, 0], 0.0)
    return _classes(per, jnp.sum(jnp.where(keep, w[safe], 0.0)), shape, reduction)


def multi_margin_loss(x, t, reduction, p=1, margin=1.0, weight=None):
    z, tt, shape = _rows(x, t)
    n_classes = z.shape[1]
    w = jnp.ones(n_classes, z.dtype) if weight is None else weight
    # w[y] / C sum_{c != y} max(0, margin - x[y] + x[c])**p
    zy = jnp.take_along_axis(z, tt[:, None], axis=1)
    hinge = jnp.maximum(0.0, margin - zy + z) ** p
    other = jnp.arange(n_classes)[None, :] != tt[:, None]
    per = w[tt] * jnp.sum(jnp.where(other, hinge, 0.0), axis=1) / n_classes
    return _classes(per, per.shape[0], shape, reduction)


def softmax_focal_loss(x, t, reduction, weight=None, ignore_index=-100, gamma=2.0):
    z, tt, shape = _rows(x, t)
    w = jnp.ones(z.shape[1], z.dtype) if weight is None else weight
    keep, safe = _kept(tt, ignore_index)
    # -w[y] (1 - q)**gamma log q, q = softmax(x)[y]
    logq = -optax.softmax_cross_entropy_with_integer_labels(z, safe)
    per = jnp.where(keep, -w[safe] * (-jnp.expm1(logq)) ** gamma * logq, 0.0)
    return _classes(per, jnp.sum(jnp.where(keep, w[safe], 0.0)), shape, reduction)


REFERENCES = {name: fn for name, fn in globals().items() if name in BY_NAME}

# the losses whose reference calls optax (the others are jax.numpy from the formula)
OPTAX = {"mse_loss", "huber_loss", "smooth_l1_loss", "binary_cross_entropy_with_logits", "hinge_loss",
         "log_cosh_loss", "sigmoid_focal_loss", "cross_entropy", "softmax_focal_loss"}
