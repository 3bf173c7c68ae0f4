"""The one table of losses.

Every loss of fastloss is one ``Loss`` row below. The public functions (and their
signatures and docstrings), the input checks of the front layer, the tests and the
benchmarks are all generated from this table, so adding a loss is: one row here, one
kernel per backend (``numpy_backend.KERNELS`` and ``kernels.pyx``), and, for the tests,
one reference in ``tests/reference.py``.

Vocabulary
----------
kind
    ``"elementwise"``: input and target have the same (any) shape; the loss of element i
    depends only on element i.  ``"classes"``: input is ``(N, C, d1, ...)`` or ``(C,)``
    with the class axis at position 1 (or 0 when unbatched); target holds one class index
    per sample (or, for ``cross_entropy``, may hold class probabilities shaped like input).
weight
    ``"elementwise"``: an array broadcast to the input's shape.  ``"class"``: a vector of
    length C, one weight per class.  ``None``: the loss takes no weight.
mean_divisor
    What ``reduction="mean"`` divides the summed loss by, following PyTorch 2.13:
    ``"count"``: the number of loss terms (elements, or samples for class losses),
    ``"weight_sum"``: the sum of the elementwise weight broadcast to the input's shape
    (the number of elements when no weight is given),
    ``"target_weight"``: the sum of ``weight[target]`` over the samples whose target is not
    ``ignore_index`` (their count when no weight is given).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Param:
    """A scalar parameter beyond ``reduction``, with its valid domain."""

    name: str
    default: object
    type: type  # float or int: what the value is converted to
    valid: Callable[[float], bool] = lambda v: True
    domain: str = "any real number"  # said in the ValueError when ``valid`` fails
    doc: str = ""


@dataclass(frozen=True)
class Loss:
    name: str
    kind: str  # "elementwise" | "classes"
    summary: str
    formula: str  # per-element (per-sample) loss, for the docs
    gradient: str  # its derivative with respect to the input, for the docs
    params: tuple[Param, ...] = ()
    weight: str | None = None  # "elementwise" | "class" | None
    pos_weight: bool = False  # binary_cross_entropy_with_logits only
    mean_divisor: str = "count"
    input_domain: str | None = None  # "unit": values must lie in [0, 1]
    target_domain: str | None = None  # "unit" or "sign" (values in {-1, +1})
    ignore_index: bool = False  # takes ``ignore_index`` (class losses)
    probability_target: bool = False  # target may be class probabilities (cross_entropy)
    max_input_dims: int | None = None  # multi_margin_loss: (N, C) or (C,)
    kernel: str = ""  # the backend kernel name; defaults to ``name``
    notes: tuple[str, ...] = field(default=())

    @property
    def kernel_name(self) -> str:
        return self.kernel or self.name


def _finite(v):
    return math.isfinite(v)


MARGIN = Param("margin", 1.0, float, _finite, "a finite real number",
               "the margin of the hinge")

LOSSES: tuple[Loss, ...] = (
    Loss(
        "mse_loss", "elementwise", "Mean squared error.",
        formula="w * (x - y)**2", gradient="2 * w * (x - y)",
        weight="elementwise", mean_divisor="weight_sum",
    ),
    Loss(
        "l1_loss", "elementwise", "Mean absolute error (L1).",
        formula="w * |x - y|", gradient="w * sign(x - y)  (0 at x == y, and at NaN, as PyTorch)",
        weight="elementwise", mean_divisor="weight_sum",
    ),
    Loss(
        "huber_loss", "elementwise", "Huber loss.",
        formula="w * (0.5 * r**2 if |r| < delta else delta * (|r| - 0.5 * delta)),  r = x - y",
        gradient="w * clip(r, -delta, delta)",
        params=(Param("delta", 1.0, float, lambda v: v > 0, "a number > 0",
                      "where the loss turns from quadratic to linear"),),
        weight="elementwise", mean_divisor="count",
        notes=("With weight, 'mean' divides by the number of elements (PyTorch), "
               "unlike mse_loss and l1_loss.",),
    ),
    Loss(
        "smooth_l1_loss", "elementwise", "Smooth L1 loss.",
        formula="0.5 * r**2 / beta if |r| < beta else |r| - 0.5 * beta,  r = x - y",
        gradient="r / beta if |r| < beta else sign(r)",
        params=(Param("beta", 1.0, float, lambda v: v >= 0, "a number >= 0",
                      "where the loss turns from quadratic to linear; 0 gives l1_loss"),),
    ),
    Loss(
        "binary_cross_entropy", "elementwise", "Binary cross-entropy from probabilities.",
        formula="-w * (y * max(log(x), -100) + (1 - y) * max(log1p(-x), -100))",
        gradient="w * (x - y) / max(x * (1 - x), 1e-12)",
        weight="elementwise", input_domain="unit", target_domain="unit",
    ),
    Loss(
        "binary_cross_entropy_with_logits", "elementwise",
        "Binary cross-entropy from logits (sigmoid and BCE fused, stable for any logit).",
        formula="w * ((1 - y) * softplus(x) + p * y * softplus(-x)),  p = pos_weight",
        gradient="w * ((1 - y) * sigmoid(x) - p * y * sigmoid(-x))",
        weight="elementwise", pos_weight=True,
    ),
    Loss(
        "cross_entropy", "classes", "Softmax cross-entropy from logits.",
        formula=("class indices: (1 - eps) * w[y] * (-logp[y]) + eps / C * sum_c w[c] * (-logp[c]); "
                 "probabilities: -sum_c w[c] * q[c] * logp[c],  q = (1 - eps) * y + eps / C"),
        gradient=("indices: (1 - eps) * w[y] * (p - onehot(y)) + eps / C * (p * sum(w) - w); "
                  "probabilities: p * sum_c(w[c] * q[c]) - w * q,  p = softmax(x)"),
        params=(Param("label_smoothing", 0.0, float, lambda v: 0.0 <= v <= 1.0,
                      "a number in [0, 1]", "eps, the share of the target spread evenly over the classes"),),
        weight="class", mean_divisor="target_weight", ignore_index=True,
        probability_target=True,
        notes=("With probability targets, 'mean' divides by the number of samples and "
               "ignore_index is not used.",),
    ),
    Loss(
        "nll_loss", "classes", "Negative log-likelihood from log-probabilities.",
        formula="-w[y] * x[y]", gradient="-w[y] * onehot(y)",
        weight="class", mean_divisor="target_weight", ignore_index=True,
    ),
    Loss(
        "multi_margin_loss", "classes", "Multiclass hinge loss (Crammer-Singer style, as PyTorch).",
        formula="w[y] / C * sum_{c != y} max(0, margin - x[y] + x[c])**p",
        gradient="for c != y with z_c = margin - x[y] + x[c] > 0: +w[y] * p * z_c**(p-1) / C at c, minus the same at y",
        params=(Param("p", 1, int, lambda v: v in (1, 2), "1 or 2", "the power of the hinge"),
                MARGIN),
        weight="class", max_input_dims=2,
    ),
    Loss(
        "hinge_loss", "elementwise", "Binary hinge loss with labels in {-1, +1}.",
        formula="w * max(0, margin - y * x)",
        gradient="-w * y where margin - y * x > 0, 0 where it is <= 0 (the kink included), NaN where NaN",
        params=(MARGIN,), weight="elementwise", mean_divisor="weight_sum",
        target_domain="sign",
    ),
    Loss(
        "squared_hinge_loss", "elementwise", "Squared binary hinge loss with labels in {-1, +1}.",
        formula="w * max(0, margin - y * x)**2", gradient="-2 * w * y * max(0, margin - y * x)",
        params=(MARGIN,), weight="elementwise", mean_divisor="weight_sum",
        target_domain="sign",
    ),
)

BY_NAME: dict[str, Loss] = {loss.name: loss for loss in LOSSES}

REDUCTIONS = ("mean", "sum", "none")

# Kernels of the backends: one per elementwise loss, and for the class losses one per
# target form (cross-entropy from class probabilities is its own kernel).
KERNEL_NAMES: tuple[str, ...] = tuple(loss.kernel_name for loss in LOSSES) + ("cross_entropy_probs",)
