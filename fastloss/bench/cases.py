"""What the benchmark runs: every loss of the registry, with its inputs and baselines.

The tables below are keyed by the registry name (``fastloss._registry.LOSSES``). None of
them needs an entry for every loss: a registry loss without one is still benchmarked.

* ``CASES``    how to make benchmark inputs: one or more variants per loss (cross-entropy
               with 10 and with 1000 classes). Without an entry, ``derived_variant`` makes
               them from the registry row: elementwise losses N(0, 1) input and |N(0, 1)|
               target (non-negative: counts and probabilities too), with the row's domains
               honoured (input "unit": uniform in (0.01, 0.99);
               target "unit": labels 0/1, "sign": labels -1/+1, "positive": exp(N(0, 1)),
               "nonnegative": the same with a quarter 0); class losses logits
               (N, 10) ~ N(0, 4) with int64 class indices.
* ``NUMPY``    the plain NumPy code a user would write for loss + gradient: readable,
               numerically stable, ``reduction="mean"`` and default parameters. Without an
               entry there is no plain-NumPy column for the loss; fastloss's own NumPy
               backend (``fastloss.numpy_backend``, every registry loss) is the baseline
               always present.
* ``TORCH``    the loss in ``torch.nn.functional`` (hinge losses written in torch ops);
               the bench times its forward + ``.backward()``. Without an entry:
               ``torch.nn.functional.<name>`` when PyTorch has it (the names and semantics of
               fastloss follow it), else no PyTorch column for the loss.
* ``SKLEARN``  the ``sklearn._loss`` class computing the same loss, or None.
* ``JAX``      the loss in ``jax.numpy``; the bench times ``jax.jit(jax.value_and_grad(f))``.

A competitor without the loss (no entry, or None: scikit-learn has no hinge) is not timed
for it: '-' in the table, and a note under the loss's header says which and why.
``missing_entries`` lists what each table lacks; ``stale_entries`` the entries that name no
registry loss (an error: ``variants`` refuses them).

All losses run with their default parameters, no weight, ``reduction="mean"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .._registry import LOSSES


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Variant:
    """One benchmark input family of a loss."""

    loss: str  # registry name
    make: Callable  # (rng, n_elements, dtype) -> (input, target)
    describe: str  # what the inputs are, for the table header
    classes: int | None = None  # C for class losses (input (N, C), int64 targets (N,))

    @property
    def label(self) -> str:
        return self.loss if self.classes is None else f"{self.loss} C={self.classes}"

    def rows(self, n: int) -> int:
        """Samples N for a requested element count (class losses: N * C elements, N >= 1)."""
        return n if self.classes is None else max(1, n // self.classes)

    def elements(self, n: int) -> int:
        return self.rows(n) * (self.classes or 1)


def _normal(rng, n, dtype, scale=1.0):
    x = rng.standard_normal(n, dtype=dtype)
    if scale != 1.0:
        x *= scale
    return x


def _make_regression(rng, n, dtype):
    return _normal(rng, n, dtype), _normal(rng, n, dtype)


def _labels01(rng, n, dtype):
    return (rng.random(n, dtype=dtype) < 0.5).astype(dtype)


def _unit(rng, n, dtype):
    p = rng.random(n, dtype=dtype)  # probabilities in (0.01, 0.99): no clamp is hit
    p *= 0.98
    p += 0.01
    return p


def _sign_labels(rng, n, dtype):
    y = rng.integers(0, 2, n, dtype=np.int8).astype(dtype)
    y *= 2
    y -= 1  # labels -1 / +1
    return y


def _make_bce(rng, n, dtype):
    return _unit(rng, n, dtype), _labels01(rng, n, dtype)


def _make_bce_logits(rng, n, dtype):
    return _normal(rng, n, dtype, 3.0), _labels01(rng, n, dtype)


def _make_sign(rng, n, dtype):
    y = _sign_labels(rng, n, dtype)
    return _normal(rng, n, dtype), y


def _make_counts(rng, n, dtype):
    """Poisson regression: log-rate predictions ~ N(0, 1), counts drawn at those rates."""
    x = _normal(rng, n, dtype)
    return x, rng.poisson(np.exp(x.astype(np.float64))).astype(dtype)


def _make_amounts(rng, n, dtype):
    """Gamma regression: log-mean predictions ~ N(0, 1), amounts Gamma(shape 2) of that mean."""
    x = _normal(rng, n, dtype)
    return x, rng.gamma(2.0, np.exp(x.astype(np.float64)) / 2.0).astype(dtype)


def _make_claims(rng, n, dtype):
    """Tweedie regression: log-mean predictions ~ N(0, 1), compound Poisson-Gamma targets
    (a Poisson(1) number of Gamma(2) amounts: about 37% exact zeros)."""
    x = _normal(rng, n, dtype)
    k = rng.poisson(1.0, n)
    return x, rng.gamma(2.0 * k, np.exp(x.astype(np.float64)) / 2.0).astype(dtype)  # shape 0: 0


def _make_poisson(rng, n, dtype):
    x = _normal(rng, n, dtype, 0.5)  # log-rates
    return x, rng.poisson(np.exp(x)).astype(dtype)  # counts


def _make_kl(rng, n, dtype):
    x = rng.exponential(2.3, n).astype(dtype)
    x *= -1  # log-probabilities <= 0
    return x, rng.random(n, dtype=dtype)  # probabilities


def _make_classes(classes, log_softmax=False):
    def make(rng, n, dtype):
        rows = max(1, n // classes)
        x = _normal(rng, rows * classes, dtype, 2.0).reshape(rows, classes)
        if log_softmax:  # nll_loss takes log-probabilities
            x -= x.max(axis=1, keepdims=True)
            x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
        return x, rng.integers(0, classes, rows, dtype=np.int64)

    return make


def _lognormal(rng, n, dtype):
    y = _normal(rng, n, dtype)
    np.exp(y, out=y)
    return y


def _abs_normal(rng, n, dtype):
    # a target without a registry domain: non-negative, so counts (poisson_nll_loss) and
    # probabilities (kl_div) are valid too
    return np.abs(_normal(rng, n, dtype))


def _zero_inflated(rng, n, dtype):
    y = _lognormal(rng, n, dtype)
    y[rng.random(n) < 0.25] = 0
    return y


# Inputs and targets from the registry row's domains: (make(rng, n, dtype), description)
_DERIVED_INPUTS = {None: (_normal, "~ N(0, 1)"), "unit": (_unit, "in (0.01, 0.99)")}
_DERIVED_TARGETS = {None: (_abs_normal, "~ |N(0, 1)|"), "unit": (_labels01, "labels 0/1"),
                    "sign": (_sign_labels, "labels -1/+1"),
                    "nonnegative": (_zero_inflated, "exp(N(0, 1)), a quarter 0"),
                    "positive": (_lognormal, "exp(N(0, 1))")}
DERIVED_CLASSES = 10


def derived_variant(loss) -> Variant:
    """Benchmark inputs made from the registry row alone (a loss without a CASES entry)."""
    if loss.kind == "classes":
        c = DERIVED_CLASSES
        return Variant(loss.name, _make_classes(c),
                       f"logits (N, {c}) ~ N(0, 4), int64 class indices; inputs from the registry row", c)
    make_x, about_x = _DERIVED_INPUTS[loss.input_domain]
    make_t, about_t = _DERIVED_TARGETS[loss.target_domain]

    def make(rng, n, dtype):
        return make_x(rng, n, dtype), make_t(rng, n, dtype)

    return Variant(loss.name, make, f"input {about_x}, target {about_t}; inputs from the registry row")


_REGRESSION = "input, target ~ N(0, 1)"
CASES: dict[str, tuple[Variant, ...]] = {
    "mse_loss": (Variant("mse_loss", _make_regression, _REGRESSION),),
    "l1_loss": (Variant("l1_loss", _make_regression, _REGRESSION),),
    "huber_loss": (Variant("huber_loss", _make_regression, _REGRESSION + ", delta=1"),),
    "smooth_l1_loss": (Variant("smooth_l1_loss", _make_regression, _REGRESSION + ", beta=1"),),
    "binary_cross_entropy": (
        Variant("binary_cross_entropy", _make_bce, "probabilities in (0.01, 0.99), labels 0/1"),
    ),
    "binary_cross_entropy_with_logits": (
        Variant("binary_cross_entropy_with_logits", _make_bce_logits, "logits ~ N(0, 9), labels 0/1"),
    ),
    "cross_entropy": tuple(
        Variant("cross_entropy", _make_classes(c), f"logits (N, {c}) ~ N(0, 4), int64 class indices", c)
        for c in (10, 1000)
    ),
    "nll_loss": (
        Variant("nll_loss", _make_classes(10, log_softmax=True),
                "log_softmax of N(0, 4) logits (N, 10), int64 class indices", 10),
    ),
    "multi_margin_loss": (
        Variant("multi_margin_loss", _make_classes(10), "scores (N, 10) ~ N(0, 4), int64 class indices, p=1, margin=1", 10),
    ),
    "hinge_loss": (Variant("hinge_loss", _make_sign, "scores ~ N(0, 1), labels -1/+1, margin=1"),),
    "squared_hinge_loss": (
        Variant("squared_hinge_loss", _make_sign, "scores ~ N(0, 1), labels -1/+1, margin=1"),
    ),
    "log_cosh_loss": (Variant("log_cosh_loss", _make_regression, _REGRESSION),),
    "pseudo_huber_loss": (Variant("pseudo_huber_loss", _make_regression, _REGRESSION + ", delta=1"),),
    "sigmoid_focal_loss": (
        Variant("sigmoid_focal_loss", _make_bce_logits, "logits ~ N(0, 9), labels 0/1, alpha=0.25, gamma=2"),
    ),
    "pinball_loss": (Variant("pinball_loss", _make_regression, _REGRESSION + ", quantile=0.5"),),
    "poisson_deviance": (
        Variant("poisson_deviance", _make_counts, "log-rates ~ N(0, 1), Poisson counts at those rates"),
    ),
    "gamma_deviance": (
        Variant("gamma_deviance", _make_amounts, "log-means ~ N(0, 1), Gamma(2) amounts of those means"),
    ),
    "tweedie_deviance": (
        Variant("tweedie_deviance", _make_claims,
                "log-means ~ N(0, 1), compound Poisson(1)-Gamma(2) targets (37% zeros), power=1.5"),
    ),
    "poisson_nll_loss": (
        Variant("poisson_nll_loss", _make_poisson, "log-rates ~ N(0, 0.25), counts ~ Poisson(exp(x)), log_input=True"),
    ),
    "kl_div": (
        Variant("kl_div", _make_kl, "log-probabilities -Exp(mean 2.3), probabilities U(0, 1), log_target=False"),
    ),
    "softmax_focal_loss": (
        Variant("softmax_focal_loss", _make_classes(10), "logits (N, 10) ~ N(0, 4), int64 class indices, gamma=2", 10),
    ),
}


# --------------------------------------------------------------------------- plain NumPy
# What a user writes for the mean loss and its gradient, numerically stable. Each takes
# (input, target) and returns (loss, grad); Python scalars keep float32 arrays float32.


def np_mse(x, y):
    r = x - y
    loss = np.mean(r * r)
    grad = r * (2.0 / r.size)
    return loss, grad


def np_l1(x, y):
    r = x - y
    loss = np.mean(np.abs(r))
    grad = np.sign(r) * (1.0 / r.size)
    return loss, grad


def np_huber(x, y, delta=1.0):
    r = x - y
    a = np.abs(r)
    quadratic = a < delta
    loss = np.mean(np.where(quadratic, 0.5 * r * r, delta * (a - 0.5 * delta)))
    grad = np.clip(r, -delta, delta) * (1.0 / r.size)
    return loss, grad


def np_smooth_l1(x, y, beta=1.0):
    r = x - y
    a = np.abs(r)
    quadratic = a < beta
    loss = np.mean(np.where(quadratic, 0.5 * r * r / beta, a - 0.5 * beta))
    grad = np.where(quadratic, r / beta, np.sign(r)) * (1.0 / r.size)
    return loss, grad


def np_bce(x, y):
    log_p = np.maximum(np.log(x), -100)  # PyTorch clamps each log at -100
    log_q = np.maximum(np.log1p(-x), -100)
    loss = -np.mean(y * log_p + (1 - y) * log_q)
    grad = (x - y) / np.maximum(x * (1 - x), 1e-12) * (1.0 / x.size)
    return loss, grad


def np_bce_logits(x, y):
    softplus = np.logaddexp(0, x)  # log(1 + exp(x)), no overflow for any x
    loss = np.mean(softplus - x * y)
    sigmoid = np.exp(x - softplus)  # exponent <= 0: no overflow either
    grad = (sigmoid - y) * (1.0 / x.size)
    return loss, grad


def np_cross_entropy(x, t):
    n = x.shape[0]
    rows = np.arange(n)
    z = x - x.max(axis=1, keepdims=True)  # subtract the row max: exp cannot overflow
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -np.mean(log_p[rows, t])
    grad = np.exp(log_p)  # softmax
    grad[rows, t] -= 1
    grad *= 1.0 / n
    return loss, grad


def np_nll(x, t):
    n = x.shape[0]
    rows = np.arange(n)
    loss = -np.mean(x[rows, t])
    grad = np.zeros_like(x)
    grad[rows, t] = -1.0 / n
    return loss, grad


def np_multi_margin(x, t, margin=1.0):
    n, c = x.shape
    rows = np.arange(n)
    z = margin - x[rows, t][:, None] + x  # hinge argument of every class
    z[rows, t] = 0  # the target class is not a hinge term
    loss = np.maximum(z, 0).sum() / (n * c)
    grad = (z > 0).astype(x.dtype) * (1.0 / (n * c))
    grad[rows, t] = -grad.sum(axis=1)
    return loss, grad


def np_hinge(x, y, margin=1.0):
    z = margin - y * x
    loss = np.mean(np.maximum(z, 0))
    grad = np.where(z > 0, -y, 0) * (1.0 / x.size)
    return loss, grad


def np_squared_hinge(x, y, margin=1.0):
    h = np.maximum(margin - y * x, 0)
    loss = np.mean(h * h)
    grad = (-2.0 / x.size) * y * h
    return loss, grad


def np_log_cosh(x, y):
    r = x - y
    a = np.abs(r)
    # log(cosh(r)) = |r| - log 2 + log1p(exp(-2|r|)): no overflow (np.cosh overflows beyond 89 / 710)
    loss = np.mean(a - np.log(2.0).astype(x.dtype) + np.log1p(np.exp(-2 * a)))
    grad = np.tanh(r) * (1.0 / r.size)
    return loss, grad


def np_pseudo_huber(x, y, delta=1.0):
    r = x - y
    s = np.sqrt(1 + (r / delta) ** 2)
    loss = np.mean(delta * delta * (s - 1))
    grad = (r / s) * (1.0 / r.size)
    return loss, grad


def np_sigmoid_focal(x, y, alpha=0.25, gamma=2.0):
    # torchvision's formula, vectorised: p = sigmoid(x), ce = BCE with logits, p_t, alpha_t
    softplus = np.logaddexp(0, x)
    p = np.exp(x - softplus)  # sigmoid(x), no overflow
    ce = softplus - x * y
    p_t = p * y + (1 - p) * (1 - y)
    m = 1 - p_t
    alpha_t = alpha * y + (1 - alpha) * (1 - y)
    loss = np.mean(alpha_t * ce * m ** gamma)
    # d/dx: alpha_t (m^gamma (p - y) + gamma m^(gamma-1) m' ce), m' = (1 - 2y) p (1 - p)
    dm = (1 - 2 * y) * p * (1 - p)
    grad = alpha_t * (m ** gamma * (p - y) + gamma * m ** (gamma - 1) * dm * ce) * (1.0 / x.size)
    return loss, grad


def np_softmax_focal(x, t, gamma=2.0):
    # -(1 - q)^gamma log q, q = softmax(x)[y], vectorised (1 - q as 1 - exp(log q), as a user would);
    # d/dx_j = G (onehot - p)_j, G = gamma q (1 - q)^(gamma-1) log q - (1 - q)^gamma
    n = x.shape[0]
    rows = np.arange(n)
    z = x - x.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    log_q = log_p[rows, t]
    q = np.exp(log_q)
    u = 1 - q
    loss = -np.mean(u ** gamma * log_q)
    g_coef = gamma * q * u ** (gamma - 1) * log_q - u ** gamma
    grad = -np.exp(log_p)
    grad[rows, t] += 1
    grad *= (g_coef * (1.0 / n))[:, None]
    return loss, grad


def np_pinball(x, y, q=0.5):
    r = y - x
    loss = np.mean(np.maximum(q * r, (q - 1) * r))
    grad = np.where(r > 0, -q, np.where(r < 0, 1 - q, 0)).astype(x.dtype) * (1.0 / r.size)
    return loss, grad


def np_poisson_deviance(x, y):
    mu = np.exp(x)
    y_log_y = y * np.log(np.where(y > 0, y, 1))  # y log y = 0 at y = 0
    loss = 2 * np.mean(y_log_y - y * x - y + mu)
    grad = (mu - y) * (2.0 / x.size)
    return loss, grad


def np_gamma_deviance(x, y):
    ratio = y * np.exp(-x)  # y / mu
    loss = 2 * np.mean(x - np.log(y) + ratio - 1)
    grad = (1 - ratio) * (2.0 / x.size)
    return loss, grad


def np_tweedie_deviance(x, y, power=1.5):
    a, b = 1 - power, 2 - power
    mu_a, mu_b = np.exp(a * x), np.exp(b * x)
    loss = 2 * np.mean(y ** b / (a * b) - y * mu_a / a + mu_b / b)
    grad = (mu_b - y * mu_a) * (2.0 / x.size)
    return loss, grad


def np_poisson_nll(x, y):
    e = np.exp(x)
    loss = np.mean(e - y * x)
    grad = (e - y) * (1.0 / x.size)
    return loss, grad


def np_kl_div(x, y):
    ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1)), 0)  # xlogy(y, y): 0 at y = 0
    loss = np.mean(ylogy - y * x)
    grad = y * (-1.0 / x.size)
    return loss, grad


NUMPY: dict[str, Callable] = {
    "mse_loss": np_mse,
    "l1_loss": np_l1,
    "huber_loss": np_huber,
    "smooth_l1_loss": np_smooth_l1,
    "binary_cross_entropy": np_bce,
    "binary_cross_entropy_with_logits": np_bce_logits,
    "cross_entropy": np_cross_entropy,
    "nll_loss": np_nll,
    "multi_margin_loss": np_multi_margin,
    "hinge_loss": np_hinge,
    "squared_hinge_loss": np_squared_hinge,
    "log_cosh_loss": np_log_cosh,
    "sigmoid_focal_loss": np_sigmoid_focal,
    "pinball_loss": np_pinball,
    "poisson_deviance": np_poisson_deviance,
    "gamma_deviance": np_gamma_deviance,
    "tweedie_deviance": np_tweedie_deviance,
    "poisson_nll_loss": np_poisson_nll,
    "kl_div": np_kl_div,
    "softmax_focal_loss": np_softmax_focal,
    "pseudo_huber_loss": np_pseudo_huber,
}


# --------------------------------------------------------------------------- PyTorch
# (F, input, target) -> the mean loss tensor; F is torch.nn.functional.


def _torch_deviance(power):
    """PyTorch has no deviance losses: written in torch ops from their formulas, as a user would."""

    def loss(F, x, y):
        import torch

        if power == 1:
            return 2 * (torch.xlogy(y, y) - y * x - y + x.exp()).mean()
        if power == 2:
            return 2 * (x - y.log() + y * (-x).exp() - 1).mean()
        a, b = 1 - power, 2 - power
        return 2 * (y ** b / (a * b) - y * (a * x).exp() / a + (b * x).exp() / b).mean()

    return loss


TORCH: dict[str, Callable] = {
    "mse_loss": lambda F, x, y: F.mse_loss(x, y),
    "l1_loss": lambda F, x, y: F.l1_loss(x, y),
    "huber_loss": lambda F, x, y: F.huber_loss(x, y),
    "smooth_l1_loss": lambda F, x, y: F.smooth_l1_loss(x, y),
    "binary_cross_entropy": lambda F, x, y: F.binary_cross_entropy(x, y),
    "binary_cross_entropy_with_logits": lambda F, x, y: F.binary_cross_entropy_with_logits(x, y),
    "cross_entropy": lambda F, x, t: F.cross_entropy(x, t),
    "nll_loss": lambda F, x, t: F.nll_loss(x, t),
    "multi_margin_loss": lambda F, x, t: F.multi_margin_loss(x, t),
    # PyTorch has no binary hinge loss: written in torch ops, as a user would.
    "hinge_loss": lambda F, x, y: F.relu(1 - y * x).mean(),
    "squared_hinge_loss": lambda F, x, y: F.relu(1 - y * x).square().mean(),
    # PyTorch has no log-cosh loss: the stable form in torch ops
    "log_cosh_loss": lambda F, x, y: ((x - y).abs() + F.softplus(-2 * (x - y).abs()) - 0.6931471805599453).mean(),
    # torchvision.ops.sigmoid_focal_loss's formula in torch ops (torchvision is not required)
    "sigmoid_focal_loss": lambda F, x, y: _torch_focal(F, x, y),
    "pinball_loss": lambda F, x, y: (lambda r: (0.5 * F.relu(r) + 0.5 * F.relu(-r)).mean())(y - x),
    # No deviance in torch.nn.functional (poisson_nll_loss leaves out the terms in y alone).
    "poisson_deviance": _torch_deviance(1),
    "gamma_deviance": _torch_deviance(2),
    "tweedie_deviance": _torch_deviance(1.5),
    "poisson_nll_loss": lambda F, x, y: F.poisson_nll_loss(x, y),
    # "mean" as the sum over the element count: F.kl_div(reduction="mean") warns at every call
    "kl_div": lambda F, x, y: F.kl_div(x, y, reduction="sum") / x.numel(),
    # PyTorch has no softmax focal loss: its formula in torch ops, as a user would
    "softmax_focal_loss": lambda F, x, t: _torch_softmax_focal(F, x, t),
    # PyTorch has no pseudo-Huber loss: its formula in torch ops (delta = 1), as a user would
    "pseudo_huber_loss": lambda F, x, y: ((1 + (x - y) ** 2).sqrt() - 1).mean(),
}


def _torch_softmax_focal(F, x, t, gamma=2.0):
    log_q = F.log_softmax(x, dim=1).gather(1, t[:, None])[:, 0]
    return (-(1 - log_q.exp()) ** gamma * log_q).mean()


def _torch_focal(F, x, y, alpha=0.25, gamma=2.0):
    p = x.sigmoid()
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    return ((alpha * y + (1 - alpha) * (1 - y)) * ce * (1 - p_t) ** gamma).mean()


# --------------------------------------------------------------------------- scikit-learn


@dataclass(frozen=True)
class SklearnLoss:
    """A ``sklearn._loss.loss`` class computing the same loss.

    sklearn returns per-sample losses and unscaled per-sample gradients: the fastloss mean
    loss is ``factor * mean(loss_out)`` and its gradient ``factor * gradient_out / N``."""

    cls: str
    kwargs: dict
    factor: float  # 2 for the *half* squared error


SKLEARN: dict[str, SklearnLoss | None] = {
    "mse_loss": SklearnLoss("HalfSquaredError", {}, 2.0),
    "l1_loss": SklearnLoss("AbsoluteError", {}, 1.0),
    "huber_loss": SklearnLoss("HuberLoss", {"delta": 1.0}, 1.0),
    "smooth_l1_loss": None,
    "binary_cross_entropy": None,
    "binary_cross_entropy_with_logits": SklearnLoss("HalfBinomialLoss", {}, 1.0),
    "cross_entropy": SklearnLoss("HalfMultinomialLoss", {}, 1.0),  # n_classes added per case
    "nll_loss": None,
    "multi_margin_loss": None,
    "hinge_loss": None,
    "squared_hinge_loss": None,
    "log_cosh_loss": None,
    "sigmoid_focal_loss": None,
    "pinball_loss": SklearnLoss("PinballLoss", {"quantile": 0.5}, 1.0),
    # sklearn's Half{Poisson,Gamma,Tweedie}Loss leave out the terms in y alone (their values
    # are not the deviance): no entry
    "poisson_deviance": None,
    "gamma_deviance": None,
    "tweedie_deviance": None,
    "poisson_nll_loss": SklearnLoss("HalfPoissonLoss", {}, 1.0),  # exp(raw) - y raw: log_input, not full
    "kl_div": None,
    "softmax_focal_loss": None,
    "pseudo_huber_loss": None,  # sklearn._loss has HuberLoss only
}


# --------------------------------------------------------------------------- JAX
# (jnp, jax.nn, input, target) -> the mean loss; the bench jits its value_and_grad.


def _jax_huber(jnp, r, delta=1.0):
    a = jnp.abs(r)
    return jnp.mean(jnp.where(a < delta, 0.5 * r * r, delta * (a - 0.5 * delta)))


def _jax_bce(jnp, x, y):
    log_p = jnp.maximum(jnp.log(x), -100)
    log_q = jnp.maximum(jnp.log1p(-x), -100)
    return -jnp.mean(y * log_p + (1 - y) * log_q)


def _jax_multi_margin(jnp, nn, x, t):
    n, c = x.shape
    x_y = jnp.take_along_axis(x, t[:, None], axis=1)
    z = 1.0 - x_y + x
    not_target = jnp.arange(c)[None, :] != t[:, None]
    return jnp.sum(jnp.where(not_target, nn.relu(z), 0)) / (n * c)


JAX: dict[str, Callable] = {
    "mse_loss": lambda jnp, nn, x, y: jnp.mean((x - y) ** 2),
    "l1_loss": lambda jnp, nn, x, y: jnp.mean(jnp.abs(x - y)),
    "huber_loss": lambda jnp, nn, x, y: _jax_huber(jnp, x - y),
    "smooth_l1_loss": lambda jnp, nn, x, y: _jax_huber(jnp, x - y),  # beta = delta = 1
    "binary_cross_entropy": lambda jnp, nn, x, y: _jax_bce(jnp, x, y),
    "binary_cross_entropy_with_logits": lambda jnp, nn, x, y: jnp.mean(nn.softplus(x) - x * y),
    "cross_entropy": lambda jnp, nn, x, t: -jnp.mean(
        jnp.take_along_axis(nn.log_softmax(x, axis=1), t[:, None], axis=1)),
    "nll_loss": lambda jnp, nn, x, t: -jnp.mean(jnp.take_along_axis(x, t[:, None], axis=1)),
    "multi_margin_loss": _jax_multi_margin,
    "hinge_loss": lambda jnp, nn, x, y: jnp.mean(nn.relu(1 - y * x)),
    "squared_hinge_loss": lambda jnp, nn, x, y: jnp.mean(nn.relu(1 - y * x) ** 2),
    "log_cosh_loss": lambda jnp, nn, x, y: jnp.mean(jnp.logaddexp(x - y, y - x) - jnp.log(2.0)),
    "sigmoid_focal_loss": lambda jnp, nn, x, y: _jax_focal(jnp, nn, x, y),
    "pinball_loss": lambda jnp, nn, x, y: jnp.mean(jnp.maximum(0.5 * (y - x), -0.5 * (y - x))),
    "poisson_deviance": lambda jnp, nn, x, y: 2 * jnp.mean(
        y * jnp.log(jnp.where(y > 0, y, 1)) - y * x - y + jnp.exp(x)),
    "gamma_deviance": lambda jnp, nn, x, y: 2 * jnp.mean(x - jnp.log(y) + y * jnp.exp(-x) - 1),
    "tweedie_deviance": lambda jnp, nn, x, y: 2 * jnp.mean(  # power 1.5: a = -0.5, b = 0.5
        y ** 0.5 / -0.25 - y * jnp.exp(-0.5 * x) / -0.5 + jnp.exp(0.5 * x) / 0.5),
    "poisson_nll_loss": lambda jnp, nn, x, y: jnp.mean(jnp.exp(x) - y * x),
    "kl_div": lambda jnp, nn, x, y: jnp.mean(jnp.where(y > 0, y * jnp.log(jnp.where(y > 0, y, 1.0)), 0.0) - y * x),
    "softmax_focal_loss": lambda jnp, nn, x, t: _jax_softmax_focal(jnp, nn, x, t),
    "pseudo_huber_loss": lambda jnp, nn, x, y: jnp.mean(jnp.sqrt(1 + (x - y) ** 2) - 1),  # delta = 1
}


def _jax_softmax_focal(jnp, nn, x, t, gamma=2.0):
    log_q = jnp.take_along_axis(nn.log_softmax(x, axis=1), t[:, None], axis=1)[:, 0]
    return -jnp.mean((1 - jnp.exp(log_q)) ** gamma * log_q)


def _jax_focal(jnp, nn, x, y, alpha=0.25, gamma=2.0):
    p = nn.sigmoid(x)
    ce = nn.softplus(x) - x * y
    p_t = p * y + (1 - p) * (1 - y)
    return jnp.mean((alpha * y + (1 - alpha) * (1 - y)) * ce * (1 - p_t) ** gamma)


TABLES = {"CASES": CASES, "NUMPY": NUMPY, "TORCH": TORCH, "SKLEARN": SKLEARN, "JAX": JAX}


def variants_of(loss) -> tuple[Variant, ...]:
    """The benchmark variants of a registry loss: its CASES entry, or derived from its row."""
    return CASES.get(loss.name) or (derived_variant(loss),)


def numpy_function(name: str) -> Callable | None:
    """The plain NumPy (loss, grad) of the loss, or None when there is none."""
    return NUMPY.get(name)


def torch_function(name: str, F) -> Callable | None:
    """(F, input, target) -> the mean loss tensor: the TORCH entry, else
    ``torch.nn.functional.<name>`` when PyTorch has it, else None (no such loss)."""
    if name in TORCH:
        return TORCH[name]
    if callable(getattr(F, name, None)):
        return lambda F, x, t: getattr(F, name)(x, t)
    return None


def missing_entries() -> dict[str, list[str]]:
    """For each table, the registry losses it has no entry for: benchmarked all the same,
    with derived inputs (CASES) or without that competitor (the others; TORCH falls back to
    torch.nn.functional)."""
    return {name: [loss.name for loss in LOSSES if loss.name not in table]
            for name, table in TABLES.items()}


def stale_entries() -> dict[str, list[str]]:
    """For each table, the entries that name no registry loss."""
    names = {loss.name for loss in LOSSES}
    return {name: sorted(set(table) - names) for name, table in TABLES.items()}


def check_tables() -> None:
    """Raise if a table has an entry for a loss the registry does not have (a typo or a
    renamed loss: the entry would silently never run)."""
    stale = {k: v for k, v in stale_entries().items() if v}
    if stale:
        detail = "; ".join(f"{k}: {', '.join(v)}" for k, v in stale.items())
        raise RuntimeError(f"fastloss.bench.cases has entries for losses the registry does not have ({detail})")


def variants(names=None) -> list[Variant]:
    """The benchmark variants of the registry losses (all, or those named), registry order."""
    check_tables()
    return [v for loss in LOSSES if names is None or loss.name in names for v in variants_of(loss)]
