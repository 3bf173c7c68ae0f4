"""The one table of losses.

Every loss of fastloss is one ``Loss`` row below. Everything that restates it is generated
from this table: the public functions (signatures, docstrings), the checks of every layer
(parameter domains are data: ``Interval``, ``OneOf``), the compiled kernel table and
dispatch, the C-level functions with their ``.pxd`` and C header, the type stubs and the
docs tables (``_codegen.py`` at build time; the public functions at import). Adding a loss
of an existing kind is:

1. its row here (name, kind, parameters with their domains, divisor, formulas, notes, and
   ``functor``, the name of its C++ math);
2. that math: one functor in ``csrc/losses.hpp`` (elementwise) or ``csrc/class_losses.hpp``;
3. its NumPy kernel in ``_numpy_kernels.py`` (``@elementwise("name")`` or ``@kernel``);
4. its record in the tests (``tests/support/losses.py``: one ``LossReference``).

Forgetting 2 does not compile; forgetting 3 is an ImportError naming the loss; forgetting 4
fails the test that every loss has a reference. This module is pure Python and imports
nothing of fastloss: the build reads it (``setup.py`` runs ``_codegen.py``).

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
extra_reductions
    Reductions a loss takes beyond ``"mean"``, ``"sum"`` and ``"none"`` (``REDUCTIONS``),
    each a mean by another divisor (``EXTRA_REDUCTIONS``): ``"batchmean"`` (``kl_div``, as
    PyTorch) divides the sum by the size of the input's first axis (1 for a 0-d input). Every
    other loss refuses them like any unknown reduction. The compiled fast path leaves them to
    the general path; at the C level they are ``FASTLOSS_SUM`` scaled by the caller
    (``docs/API.md``, "C and Cython level").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable


# --------------------------------------------------------------------------- domains
# A parameter's valid values as data: the front layer tests them (``contains``), the
# generator writes the same test as a C expression for the C level (``c_test``), the error
# messages and the docs say them in words (``str``). One description, three readings.


@dataclass(frozen=True)
class Interval:
    """Real numbers between ``low`` and ``high`` (None: unbounded, infinity included unless
    ``finite``), each end open or closed. NaN is never inside."""

    low: float | None = None
    high: float | None = None
    closed: str = "both"  # "both", "left", "right" or "neither"
    finite: bool = False

    def contains(self, v) -> bool:
        if math.isnan(v) or (self.finite and not math.isfinite(v)):
            return False
        if self.low is not None and not (v >= self.low if self.closed in ("both", "left") else v > self.low):
            return False
        if self.high is not None and not (v <= self.high if self.closed in ("both", "right") else v < self.high):
            return False
        return True

    def c_test(self, v: str) -> str:
        tests = [f"std::isfinite({v})" if self.finite else f"!std::isnan({v})"]
        if self.low is not None:
            tests.append(f"{v} {'>=' if self.closed in ('both', 'left') else '>'} {float(self.low)!r}")
        if self.high is not None:
            tests.append(f"{v} {'<=' if self.closed in ('both', 'right') else '<'} {float(self.high)!r}")
        return "(" + " && ".join(tests) + ")"

    def mask(self, a):
        """``contains`` elementwise, for a NumPy array (comparisons only: no import here)."""
        inside = a == a  # not NaN
        if self.finite:
            inside = inside & (abs(a) < float("inf"))
        if self.low is not None:
            inside = inside & ((a >= self.low) if self.closed in ("both", "left") else (a > self.low))
        if self.high is not None:
            inside = inside & ((a <= self.high) if self.closed in ("both", "right") else (a < self.high))
        return inside

    def __str__(self) -> str:
        lo = None if self.low is None else ("[" if self.closed in ("both", "left") else "(")
        hi = None if self.high is None else ("]" if self.closed in ("both", "right") else ")")
        number = "a finite number" if self.finite else "a number"
        if lo and hi:
            return f"{number} in {lo}{_num(self.low)}, {_num(self.high)}{hi}"
        if lo:
            return f"{number} {'>=' if lo == '[' else '>'} {_num(self.low)}"
        if hi:
            return f"{number} {'<=' if hi == ']' else '<'} {_num(self.high)}"
        return "a finite real number" if self.finite else "a real number (not NaN)"


@dataclass(frozen=True)
class OneOf:
    """One of a few listed values."""

    values: tuple

    def contains(self, v) -> bool:
        return v in self.values

    def c_test(self, v: str) -> str:  # (a bool parameter reaches the C level as 0 or 1)
        return "(" + " || ".join(f"{v} == {int(x) if isinstance(x, bool) else x!r}" for x in self.values) + ")"

    def __str__(self) -> str:
        *head, last = [_num(x) for x in self.values]
        return f"{', '.join(head)} or {last}" if head else last


def _num(x) -> str:
    if isinstance(x, bool):
        return repr(x)
    return repr(int(x)) if float(x).is_integer() else repr(x)


@dataclass(frozen=True)
class Param:
    """A scalar parameter beyond ``reduction``, with its valid domain."""

    name: str
    default: object
    # float, int or bool: what the value is converted to (a bool parameter takes Python and
    # NumPy bools only, OneOf((False, True)); the kernels get it as 0.0 / 1.0, the C level as
    # an int 0 / 1)
    type: type
    domain: Interval | OneOf = Interval()
    doc: str = ""

    def valid(self, value) -> bool:
        return self.domain.contains(value)


@dataclass(frozen=True)
class Loss:
    name: str
    kind: str  # "elementwise" | "classes"
    summary: str
    formula: str  # per-element (per-sample) loss, for the docs
    gradient: str  # its derivative with respect to the input, for the docs
    functor: str  # the C++ math (fastloss/csrc/losses.hpp): a functor template of that name
    params: tuple[Param, ...] = ()
    weight: str | None = None  # "elementwise" | "class" | None
    pos_weight: bool = False  # binary_cross_entropy_with_logits only
    # pinball_loss: ``quantile``, a scalar or an array broadcast to the input (a vector over the
    # last axis), each value in QUANTILE; the kernels read it as their second operand
    quantile: bool = False
    mean_divisor: str = "count"
    extra_reductions: tuple[str, ...] = ()  # beyond REDUCTIONS: "batchmean" (EXTRA_REDUCTIONS)
    input_domain: str | None = None  # "unit": values must lie in [0, 1]
    target_domain: str | None = None  # "unit", "sign" (values in {-1, +1}), "nonnegative", "positive"
    ignore_index: bool = False  # takes ``ignore_index`` (class losses)
    probability_target: bool = False  # target may be class probabilities (cross_entropy)
    max_input_dims: int | None = None  # multi_margin_loss: (N, C) or (C,)
    notes: tuple[str, ...] = field(default=())
    # The diagonal of the Hessian (the third twin, NAME_grad_hess): the per-element second
    # derivative with respect to the input, for the docs.
    hessian: str = ""
    # None: the Hessian is always the exact one. Otherwise the second derivative is zero on
    # whole regions (L1, hinge, ...) and NAME_grad_hess takes ``hessian=`` with this default:
    # "exact", or a positive constant c that replaces the second derivative of every term
    # (then weighted and scaled as the exact one), as tree boosters need.
    hessian_policy: object = None

    @property
    def kernel_name(self) -> str:
        return self.name

    @property
    def operand(self) -> str | None:
        """The name of the second elementwise operand the kernel reads (``p`` of the
        functor): ``pos_weight``, ``quantile`` or None."""
        return "pos_weight" if self.pos_weight else ("quantile" if self.quantile else None)

    @property
    def operand_domain(self) -> Interval | None:
        """The valid values of the operand (None: any; pos_weight is not checked, as PyTorch).
        An operand with a domain is required (the C level refuses NULL)."""
        return QUANTILE if self.quantile else None

    def keywords(self) -> list[tuple[str, str, object]]:
        """The keyword-only parameters of the public functions before ``reduction``, in
        PyTorch's order, as (name, type annotation, default): the public functions (_api)
        and their type stubs (_codegen) are both written from this."""
        kw = []
        if self.weight:
            kw.append(("weight", "ArrayLike | None", None))
        if self.pos_weight:
            kw.append(("pos_weight", "ArrayLike | None", None))
        if self.quantile:
            kw.append(("quantile", "float | ArrayLike", 0.5))
        if self.ignore_index:
            kw.append(("ignore_index", "int", -100))
        kw += [(p.name, p.type.__name__, p.default) for p in self.params]
        return kw

    @property
    def reductions(self) -> tuple[str, ...]:
        """Every ``reduction`` the loss takes: REDUCTIONS, then its extra ones."""
        return REDUCTIONS + self.extra_reductions

    @property
    def functions(self) -> tuple[str, ...]:
        """The public functions of the loss: NAME and its twins (TWINS)."""
        return tuple(self.name + suffix for suffix in TWINS)

    def hessian_keyword(self) -> list[tuple[str, str, object]]:
        """The extra keyword of NAME_grad_hess: ``hessian`` where the loss has a policy."""
        if self.hessian_policy is None:
            return []
        return [("hessian", 'float | Literal["exact"]', self.hessian_policy)]


@dataclass(frozen=True)
class Kernel:
    """A kernel of the backends: one per loss, plus cross-entropy from class probabilities
    (its own kernel, behind the same public function)."""

    name: str
    loss: Loss
    functor: str
    probabilities: bool = False  # targets are class probabilities shaped like the input

    @property
    def params(self) -> tuple[Param, ...]:
        return self.loss.params

    @property
    def ignore_index(self) -> bool:  # class indices with ignore_index (not probabilities)
        return self.loss.ignore_index and not self.probabilities

    @property
    def mean_divisor(self) -> str:  # with probability targets: the number of samples
        return "count" if self.probabilities else self.loss.mean_divisor


# The public functions of a loss NAME: NAME (the loss), NAME_grad (loss, gradient) and
# NAME_grad_hess (loss, gradient, the Hessian's diagonal), in this order.
TWINS = ("", "_grad", "_grad_hess")

FINITE = Interval(finite=True)
QUANTILE = Interval(0, 1, "neither")
MARGIN = Param("margin", 1.0, float, FINITE, "the margin of the hinge")

LOSSES: tuple[Loss, ...] = (
    Loss(
        "mse_loss", "elementwise", "Mean squared error.",
        functor="Mse",
        formula="w * (x - y)**2", gradient="2 * w * (x - y)",
        hessian="2 * w",
        weight="elementwise", mean_divisor="weight_sum",
    ),
    Loss(
        "l1_loss", "elementwise", "Mean absolute error (L1).",
        functor="L1",
        formula="w * |x - y|", gradient="w * sign(x - y)  (0 at x == y, and at NaN, as PyTorch)",
        hessian="0 (the kink at x == y: 0 too)", hessian_policy=1.0,
        weight="elementwise", mean_divisor="weight_sum",
    ),
    Loss(
        "huber_loss", "elementwise", "Huber loss.",
        functor="Huber",
        formula="w * (0.5 * r**2 if |r| < delta else delta * (|r| - 0.5 * delta)),  r = x - y",
        gradient="w * clip(r, -delta, delta)",
        hessian="w where |r| < delta, else 0", hessian_policy="exact",
        params=(Param("delta", 1.0, float, Interval(0, None, "neither"),
                      "where the loss turns from quadratic to linear"),),
        weight="elementwise", mean_divisor="count",
        notes=("With weight, 'mean' divides by the number of elements (PyTorch), "
               "unlike mse_loss and l1_loss.",),
    ),
    Loss(
        "smooth_l1_loss", "elementwise", "Smooth L1 loss.",
        functor="SmoothL1",
        formula="0.5 * r**2 / beta if |r| < beta else |r| - 0.5 * beta,  r = x - y",
        gradient="r / beta if |r| < beta else sign(r)",
        hessian="1 / beta where |r| < beta, else 0", hessian_policy="exact",
        params=(Param("beta", 1.0, float, Interval(0, None, "left"),
                      "where the loss turns from quadratic to linear; 0 gives l1_loss"),),
    ),
    Loss(
        "binary_cross_entropy", "elementwise", "Binary cross-entropy from probabilities.",
        functor="Bce",
        formula="-w * (y * max(log(x), -100) + (1 - y) * max(log1p(-x), -100))",
        gradient="w * (x - y) / max(x * (1 - x), 1e-12)",
        hessian="w * ((x - y)**2 + y * (1 - y)) / max(x * (1 - x), 1e-12)**2  (the derivative of the gradient)",
        weight="elementwise", input_domain="unit", target_domain="unit",
    ),
    Loss(
        "binary_cross_entropy_with_logits", "elementwise",
        "Binary cross-entropy from logits (sigmoid and BCE fused, stable for any logit).",
        functor="BceLogits",
        formula="w * ((1 - y) * softplus(x) + p * y * softplus(-x)),  p = pos_weight",
        gradient="w * ((1 - y) * sigmoid(x) - p * y * sigmoid(-x))",
        hessian="w * ((1 - y) + p * y) * sigmoid(x) * sigmoid(-x)",
        weight="elementwise", pos_weight=True,
    ),
    Loss(
        "cross_entropy", "classes", "Softmax cross-entropy from logits.",
        functor="CrossEntropy",
        formula=("class indices: (1 - eps) * w[y] * (-logp[y]) + eps / C * sum_c w[c] * (-logp[c]); "
                 "probabilities: -sum_c w[c] * q[c] * logp[c],  q = (1 - eps) * y + eps / C"),
        gradient=("indices: (1 - eps) * w[y] * (p - onehot(y)) + eps / C * (p * sum(w) - w); "
                  "probabilities: p * sum_c(w[c] * q[c]) - w * q,  p = softmax(x)"),
        hessian=("the diagonal, exact: k * p * (1 - p) with k the coefficient of p in the gradient "
                 "(indices: (1 - eps) * w[y] + eps / C * sum(w); probabilities: sum_c w[c] * q[c]); "
                 "the off-diagonal entries -k * p[c] * p[c'] are not returned"),
        params=(Param("label_smoothing", 0.0, float, Interval(0, 1),
                      "eps, the share of the target spread evenly over the classes"),),
        weight="class", mean_divisor="target_weight", ignore_index=True,
        probability_target=True,
        notes=("With probability targets, 'mean' divides by the number of samples and "
               "ignore_index is not used.",),
    ),
    Loss(
        "nll_loss", "classes", "Negative log-likelihood from log-probabilities.",
        functor="Nll",
        formula="-w[y] * x[y]", gradient="-w[y] * onehot(y)",
        hessian="0 (the loss is linear in x)", hessian_policy=1.0,
        weight="class", mean_divisor="target_weight", ignore_index=True,
    ),
    Loss(
        "multi_margin_loss", "classes", "Multiclass hinge loss (Crammer-Singer style, as PyTorch).",
        functor="MultiMargin",
        formula="w[y] / C * sum_{c != y} max(0, margin - x[y] + x[c])**p",
        gradient="for c != y with z_c = margin - x[y] + x[c] > 0: +w[y] * p * z_c**(p-1) / C at c, minus the same at y",
        hessian=("p = 1: 0; p = 2: 2 * w[y] / C at each class c != y with z_c > 0, and their sum at y "
                 "(the diagonal)"), hessian_policy=1.0,
        params=(Param("p", 1, int, OneOf((1, 2)), "the power of the hinge"),
                MARGIN),
        weight="class", max_input_dims=2,
    ),
    Loss(
        "hinge_loss", "elementwise", "Binary hinge loss with labels in {-1, +1}.",
        functor="Hinge",
        formula="w * max(0, margin - y * x)",
        gradient="-w * y where margin - y * x > 0, 0 where it is <= 0 (the kink included), NaN where NaN",
        hessian="0 (the kink included)", hessian_policy=1.0,
        params=(MARGIN,), weight="elementwise", mean_divisor="weight_sum",
        target_domain="sign",
    ),
    Loss(
        "squared_hinge_loss", "elementwise", "Squared binary hinge loss with labels in {-1, +1}.",
        functor="SquaredHinge",
        formula="w * max(0, margin - y * x)**2", gradient="-2 * w * y * max(0, margin - y * x)",
        hessian="2 * w where margin - y * x > 0, else 0",
        params=(MARGIN,), weight="elementwise", mean_divisor="weight_sum",
        target_domain="sign",
    ),
    Loss(
        "pinball_loss", "elementwise", "Pinball (quantile) loss.",
        functor="Pinball",
        formula="w * max(q * r, (q - 1) * r),  r = y - x,  q = quantile",
        gradient="w * (1 - q) where x > y, -w * q where x < y, 0 at x == y (and where r is NaN, as l1_loss)",
        hessian="0 (the kink included)", hessian_policy=1.0,
        weight="elementwise", mean_divisor="weight_sum", quantile=True,
        notes=("quantile: one number in (0, 1), or an array broadcast to the input's shape (a vector "
               "of length Q over the last axis: one quantile per output column), in the compute dtype.",
               "With weight, 'mean' is the weighted average sum(w l) / sum(w) "
               "(sklearn.metrics.mean_pinball_loss with sample_weight).",
               "The Hessian is 0: NAME_grad_hess's hessian= defaults to 1.0 (w per element), as "
               "XGBoost's reg:quantileerror and LightGBM's quantile objective use."),
    ),
    # The deviances on the log link (issue 13): x is the raw prediction, mu = exp(x); the loss
    # is the unit deviance of sklearn.metrics.mean_*_deviance on mu. Stable form and accuracy:
    # the Deviance functor (csrc/losses.hpp).
    Loss(
        "poisson_deviance", "elementwise", "Poisson deviance of a prediction on the log link (mu = exp(x)).",
        functor="PoissonDeviance",
        formula="w * 2 * (y * log(y / mu) - y + mu),  mu = exp(x)  (y * log(y / mu) = 0 at y = 0)",
        gradient="w * 2 * (mu - y)",
        hessian="w * 2 * mu",
        weight="elementwise", mean_divisor="weight_sum", target_domain="nonnegative",
        notes=("sklearn.metrics.mean_poisson_deviance(y, exp(x), sample_weight=w) is this loss with "
               "'mean' (the weighted average: sum(w * d) / sum(w)).",
               "XGBoost's count:poisson and LightGBM's poisson objectives are the derivatives of d / 2: "
               "gradient mu - y, Hessian mu, exactly half of these (their Hessian is exp(x + max_delta_step), "
               "max_delta_step = 0.7 by default; this one is exact). Their losses differ from d / 2 by "
               "terms in y alone.",
               "Computed as 2 * y * (e**u - 1 - u), u = x - log(y): no cancellation near the optimum mu = y, "
               "where the loss is accurate to a few ulp of 2 * y."),
    ),
    Loss(
        "gamma_deviance", "elementwise", "Gamma deviance of a prediction on the log link (mu = exp(x)).",
        functor="GammaDeviance",
        formula="w * 2 * (log(mu / y) + y / mu - 1),  mu = exp(x)",
        gradient="w * 2 * (1 - y / mu)",
        hessian="w * 2 * y / mu",
        weight="elementwise", mean_divisor="weight_sum", target_domain="positive",
        notes=("sklearn.metrics.mean_gamma_deviance(y, exp(x), sample_weight=w) is this loss with "
               "'mean' (the weighted average: sum(w * d) / sum(w)).",
               "XGBoost's reg:gamma and LightGBM's gamma objectives are the derivatives of d / 2: "
               "gradient 1 - y / mu, Hessian y / mu, exactly half of these. Their losses differ from "
               "d / 2 by terms in y alone.",
               "Computed as 2 * (e**v - 1 - v), v = log(y) - x: no cancellation near the optimum mu = y, "
               "where the loss is accurate to a few ulp of 2."),
    ),
    Loss(
        "tweedie_deviance", "elementwise",
        "Tweedie deviance of a prediction on the log link (mu = exp(x)), power in [1, 2].",
        functor="TweedieDeviance",
        formula=("w * 2 * (y**(2-p) / ((1-p) * (2-p)) - y * mu**(1-p) / (1-p) + mu**(2-p) / (2-p)),  "
                 "mu = exp(x), p = power  (p = 1: poisson_deviance, p = 2: gamma_deviance)"),
        gradient="w * 2 * (mu**(2-p) - y * mu**(1-p))",
        hessian="w * 2 * ((2-p) * mu**(2-p) - (1-p) * y * mu**(1-p))",
        params=(Param("power", 1.5, float, Interval(1, 2),
                      "the Tweedie power p: 1 gives poisson_deviance, 2 gives gamma_deviance (the same bits)"),),
        weight="elementwise", mean_divisor="weight_sum", target_domain="nonnegative",
        notes=("sklearn.metrics.mean_tweedie_deviance(y, exp(x), sample_weight=w, power=p) is this loss "
               "with 'mean' (the weighted average: sum(w * d) / sum(w)).",
               "XGBoost's reg:tweedie and LightGBM's tweedie objectives (tweedie_variance_power = p, "
               "default 1.5 there too) are the derivatives of d / 2: gradient mu**(2-p) - y * mu**(1-p), "
               "Hessian (2-p) * mu**(2-p) - (1-p) * y * mu**(1-p), exactly half of these. Their losses "
               "differ from d / 2 by terms in y alone.",
               "At power = 2 a target of 0 (accepted for every power) gives an infinite loss, gradient 2 * w "
               "and Hessian 0 (the Gamma deviance's limit at y -> 0).",
               "Computed as 2 * y**(2-p) * (phi((2-p) u) / (2-p) + phi((1-p) u) / (p-1)), "
               "phi(z) = e**z - 1 - z, u = x - log(y): two non-negative terms, no cancellation near "
               "the optimum mu = y, where the loss is accurate to a few ulp of 2 * y**(2-p)."),
    ),
    Loss(
        "log_cosh_loss", "elementwise",
        "Log-cosh loss: quadratic near 0, linear far out, smooth everywhere (no overflow at any residual).",
        functor="LogCosh",
        formula="w * log(cosh(x - y))", gradient="w * tanh(x - y)",
        hessian="w * (1 - tanh(x - y)**2)  (sech(x - y)**2: underflows to 0 for large residuals)",
        weight="elementwise", mean_divisor="weight_sum",
        notes=("PyTorch has no log-cosh loss; this is its formula, with PyTorch's conventions for "
               "weight and 'mean' (as mse_loss).",
               "Stable for every residual r: log(cosh(r)) = |r| - log(2) + log1p(exp(-2|r|)) for "
               "large |r| (cosh itself would overflow), its series r**2/2 - r**4/12 + ... for small.",),
    ),
    Loss(
        "sigmoid_focal_loss", "elementwise",
        "Focal loss from logits (torchvision.ops.sigmoid_focal_loss), stable for any logit.",
        functor="SigmoidFocal",
        formula=("alpha_t * ce * (1 - p_t)**gamma,  ce = binary_cross_entropy_with_logits(x, y) per element, "
                 "p = sigmoid(x), p_t = p * y + (1 - p) * (1 - y), "
                 "alpha_t = alpha * y + (1 - alpha) * (1 - y) (1 when alpha < 0)"),
        gradient=("alpha_t * (1 - p_t)**gamma * ((p - y) + gamma * ce * d),  "
                  "d = (1 - 2 * y) * p * (1 - p) / (1 - p_t)"),
        hessian=("alpha_t * (1 - p_t)**gamma * (p * (1 - p) + 2 * gamma * (p - y) * d "
                 "+ gamma * ce * d * ((gamma - 1) * d + 1 - 2 * p))"),
        params=(Param("alpha", 0.25, float, Interval(None, 1, finite=True),
                      "the weight of the targets 1 (1 - alpha: of the targets 0); negative: no weighting"),
                Param("gamma", 2.0, float, Interval(0, None, finite=True),
                      "the focusing exponent; 0 gives binary_cross_entropy_with_logits"),),
        target_domain="unit",
        notes=("torchvision's formula and parameters, but reduction='mean' by default (torchvision's "
               "default is 'none'), as every fastloss loss; no weight (torchvision has none).",
               "Targets are probabilities in [0, 1] (soft labels allowed), checked (unlike "
               "binary_cross_entropy_with_logits): outside, 1 - p_t can be negative and its power "
               "undefined. alpha above 1 (a negative weight) is refused.",
               "gamma=0 with a negative alpha is binary_cross_entropy_with_logits bit for bit "
               "(loss, gradient and Hessian).",),
    ),
    Loss(
        "poisson_nll_loss", "elementwise", "Poisson negative log-likelihood (PyTorch's poisson_nll_loss).",
        functor="PoissonNll",
        formula=("exp(x) - y * x  (log_input=True: x is the log-rate), x - y * log(x + eps)  (log_input=False: "
                 "x is the rate); full=True adds y * log(y) - y + 0.5 * log(2 * pi * y) where y > 1 "
                 "(Stirling's approximation of log(y!); 0 where y <= 1)"),
        gradient="exp(x) - y  (log_input=True), 1 - y / (x + eps)  (log_input=False)",
        hessian="exp(x)  (log_input=True), y / (x + eps)**2  (log_input=False)",
        params=(Param("log_input", True, bool, OneOf((False, True)),
                      "the input is the log of the Poisson rate (else the rate itself)"),
                Param("full", False, bool, OneOf((False, True)),
                      "add the Stirling term, so the loss is the full negative log-likelihood"),
                Param("eps", 1e-8, float, Interval(0, None, "left", finite=True),
                      "added to the rate before its log when log_input=False (as PyTorch)")),
        notes=("Any real target is accepted and NaN, inf and negative values give PyTorch's results "
               "(log_input=False: a rate x + eps < 0 gives NaN).",
               "log_input=False: log(x + eps) and 1 / (x + eps) take the rounding error of the sum "
               "x + eps into account (accurate where it rounds, e.g. x near 1 with a large count).",),
    ),
    Loss(
        "kl_div", "elementwise", "Pointwise Kullback-Leibler divergence (PyTorch's kl_div).",
        functor="KlDiv",
        formula=("y * (log(y) - x), 0 where y == 0  (x: log-probabilities, y: probabilities); "
                 "log_target=True: exp(y) * (y - x), 0 where exp(y) == 0  (y: log-probabilities)"),
        gradient="-y  (log_target=True: -exp(y))",
        hessian="0 (the loss is linear in x)", hessian_policy=1.0,
        params=(Param("log_target", False, bool, OneOf((False, True)),
                      "the target holds log-probabilities (else probabilities)"),),
        extra_reductions=("batchmean",),
        notes=("reduction='batchmean' is the KL divergence of each sample (PyTorch's recommended "
               "reduction); 'mean', the default (as PyTorch, which warns about it; fastloss does not), "
               "divides by the element count.",
               "A term whose coefficient y (exp(y)) is 0 is 0 even where x is +-inf (PyTorch: "
               "0 * inf = NaN there); NaN in x still gives NaN. A negative target (log_target=False) "
               "gives NaN, as PyTorch.",),
    ),
    Loss(
        "softmax_focal_loss", "classes",
        "Multiclass focal loss from logits (softmax; Lin et al. 2017), stable for any logit.",
        functor="SoftmaxFocal",
        formula="-w[y] * (1 - q)**gamma * log(q),  q = p[y],  p = exp(x) / sum(exp(x))",
        gradient=("w[y] * G * (onehot(y) - p),  "
                  "G = gamma * q * (1 - q)**(gamma - 1) * log(q) - (1 - q)**gamma"),
        hessian=("the diagonal, exact: w[y] * ((onehot(y) - p)**2 * D - G * p * (1 - p)),  "
                 "D = gamma * q * (1 - q)**(gamma - 1) * (log(q) + 2 - (gamma - 1) * q * log(q) / (1 - q)); "
                 "the off-diagonal entries are not returned"),
        params=(Param("gamma", 2.0, float, Interval(0, None, finite=True),
                      "the focusing exponent; 0 gives cross_entropy (the same bits)"),),
        weight="class", mean_divisor="target_weight", ignore_index=True,
        notes=("Class indices only (no class probabilities, no label smoothing); weight, ignore_index "
               "and 'mean' as cross_entropy with class indices.",
               "gamma=0 is cross_entropy bit for bit (loss, gradient and Hessian).",
               "1 - q is formed without cancellation (the other classes' share of the softmax sum) and "
               "no negative power of 1 - q is formed: gamma < 1 at q -> 1 stays finite.",
               "(1 - q)**gamma is pow of 1 - q rounded to float64, whose condition number is gamma: its "
               "relative error grows as gamma * 2**-53 (about 1e-10 at gamma = 1e6; the ULP bounds are "
               "measured up to gamma = 4.5)."),
    ),
    Loss(
        "pseudo_huber_loss", "elementwise",
        "Pseudo-Huber loss: a smooth Huber loss, quadratic near 0 and linear (slope delta) far out.",
        functor="PseudoHuber",
        formula="w * delta**2 * (sqrt(1 + (r / delta)**2) - 1),  r = x - y",
        gradient="w * r / sqrt(1 + (r / delta)**2)",
        hessian="w * (1 + (r / delta)**2)**(-3/2)  (always positive; underflows to 0 for huge residuals)",
        params=(Param("delta", 1.0, float, Interval(0, None, "neither", finite=True),
                      "the residual scale where the loss turns from quadratic to linear"),),
        weight="elementwise", mean_divisor="count",
        notes=("PyTorch has no pseudo-Huber loss; this is its formula (XGBoost's reg:pseudohubererror "
               "with huber_slope = delta), with huber_loss's conventions: with weight, 'mean' divides by "
               "the number of elements.",
               "Stable for every residual r: computed from m = min(|r|, delta) / max(|r|, delta) <= 1, "
               "so (r / delta)**2 is never formed (no overflow for huge r or tiny delta), and "
               "sqrt(1 + z**2) - 1 as z**2 / (sqrt(1 + z**2) + 1) (no cancellation for small r); "
               "the Hessian underflows to 0, never inf / inf.",),
    ),
)

BY_NAME: dict[str, Loss] = {loss.name: loss for loss in LOSSES}

REDUCTIONS = ("mean", "sum", "none")

# The reductions a loss may take beyond REDUCTIONS (Loss.extra_reductions): each is a mean by
# its own divisor, described here (docs, docstrings, messages). "batchmean": PyTorch's
# kl_div (the sum divided by input.shape[0]; a 0-d input is not divided).
EXTRA_REDUCTIONS = {
    "batchmean": "the size of the input's first axis, input.shape[0] (1 for a 0-d input: the sum)",
}

# Kernels of the backends: one per loss, and cross-entropy from class probabilities (its own
# kernel behind the same public function). A kernel's id (C++ fl::kernel::Id, the C level)
# is its position here.
KERNELS: tuple[Kernel, ...] = tuple(Kernel(loss.name, loss, loss.functor) for loss in LOSSES) + (
    Kernel("cross_entropy_probs", BY_NAME["cross_entropy"], "CrossEntropyProbs", probabilities=True),
)
KERNEL_NAMES: tuple[str, ...] = tuple(k.name for k in KERNELS)

# The most scalar parameters a loss has (the kernels' parameter arrays are this long).
MAX_PARAMS = max(len(loss.params) for loss in LOSSES)

# n_threads above this are clamped (and then to the CPUs the process may run on); it also
# keeps the count a C int. More threads never help: work is split into blocks of 4096
# elements, at most one thread per block.
MAX_THREADS = 1024
